//! What the direct Kafka client (`sample::kafka_wire`) needs from a cluster's
//! librdkafka-style properties, and the properties it cannot honour (so the sampler
//! falls back to librdkafka, and `check` refuses `sampler = "direct"` for them).
//!
//! Pure: properties in, a [`WireConfig`] or the reason out. Reads no files (the CA and
//! client certificate are read when the client is created).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// SASL mechanisms the direct client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl").field("mechanism", &self.mechanism).field("username", &self.username).finish_non_exhaustive()
    }
}

/// TLS settings (rustls).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    /// PEM CA bundle; the webpki roots when `None`.
    pub ca_location: Option<PathBuf>,
    /// Client certificate and unencrypted key (PEM) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// `ssl.endpoint.identification.algorithm=none`: the certificate chain is still
    /// verified, the host name is not.
    pub skip_hostname: bool,
}

/// Everything the direct client needs to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireConfig {
    pub bootstrap: Vec<String>,
    pub client_id: String,
    pub tls: Option<Tls>,
    pub sasl: Option<Sasl>,
}

/// Why the direct client cannot serve a cluster's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("security.protocol {0:?} is not supported by the direct client")]
    Protocol(String),
    #[error("SASL mechanism {0:?} is not supported by the direct client (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 are)")]
    Mechanism(String),
    #[error("property {0:?} is not honoured by the direct client")]
    Property(String),
    #[error("{0} is required for SASL")]
    Missing(&'static str),
    #[error("bootstrap server {0:?} is not host:port")]
    Bootstrap(String),
}

/// Properties the direct client reads.
const READ: [&str; 10] = [
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
    "client.id",
];

/// librdkafka tuning that has no meaning for the direct client (it has its own
/// timeouts and reconnects per sample), safe to ignore.
const IGNORED: [&str; 14] = [
    "socket.timeout.ms",
    "socket.keepalive.enable",
    "socket.connection.setup.timeout.ms",
    "socket.nagle.disable",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "log.connection.close",
    "log_level",
    "debug",
    "statistics.interval.ms",
    "topic.metadata.refresh.interval.ms",
    "metadata.max.age.ms",
    "api.version.request",
    "broker.address.family",
];

/// Properties read only by the time-lag probe's consumer (it stays on librdkafka).
const PROBE_ONLY: [&str; 2] = ["isolation.level", "fetch.max.bytes"];

impl WireConfig {
    /// Validates the properties for the direct client. Pure.
    pub fn from_properties(bootstrap: &str, properties: &BTreeMap<String, String>) -> Result<Self, Unsupported> {
        // An unsupported SASL mechanism is the reason to name: its own properties
        // (OAUTHBEARER's, GSSAPI's) would otherwise be reported as unknown ones.
        let sasl_protocol = properties.get("security.protocol").is_some_and(|p| p.trim().to_ascii_lowercase().starts_with("sasl_"));
        if let Some(m) = properties.get("sasl.mechanism").or_else(|| properties.get("sasl.mechanisms")).filter(|_| sasl_protocol) {
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&m.trim().to_ascii_uppercase().as_str()) {
                return Err(Unsupported::Mechanism(m.trim().to_string()));
            }
        }
        for k in properties.keys() {
            if !READ.contains(&k.as_str()) && !IGNORED.contains(&k.as_str()) && !PROBE_ONLY.contains(&k.as_str()) {
                return Err(Unsupported::Property(k.clone()));
            }
        }
        let bootstrap: Vec<String> = bootstrap.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        for b in &bootstrap {
            let ok = b.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(Unsupported::Bootstrap(b.clone()));
            }
        }
        let get = |k: &str| properties.get(k).map(|v| v.trim().to_string());
        let protocol = get("security.protocol").unwrap_or_else(|| "plaintext".into()).to_ascii_lowercase();
        let (tls, sasl) = match protocol.as_str() {
            "plaintext" => (false, false),
            "ssl" => (true, false),
            "sasl_plaintext" => (false, true),
            "sasl_ssl" => (true, true),
            other => return Err(Unsupported::Protocol(other.to_string())),
        };
        let tls = tls.then(|| {
            let cert = get("ssl.certificate.location").map(PathBuf::from);
            let key = get("ssl.key.location").map(PathBuf::from);
            Tls {
                ca_location: get("ssl.ca.location").map(PathBuf::from),
                client_cert: cert.zip(key),
                skip_hostname: get("ssl.endpoint.identification.algorithm").is_some_and(|v| v.eq_ignore_ascii_case("none")),
            }
        });
        if let Some(t) = &tls {
            if t.client_cert.is_none() && (properties.contains_key("ssl.certificate.location") || properties.contains_key("ssl.key.location")) {
                return Err(Unsupported::Property("ssl.certificate.location without ssl.key.location (or the reverse)".into()));
            }
        }
        let sasl = if sasl {
            let m = get("sasl.mechanism").or_else(|| get("sasl.mechanisms")).unwrap_or_else(|| "GSSAPI".into());
            let mechanism = match m.to_ascii_uppercase().as_str() {
                "PLAIN" => Mechanism::Plain,
                "SCRAM-SHA-256" => Mechanism::ScramSha256,
                "SCRAM-SHA-512" => Mechanism::ScramSha512,
                _ => return Err(Unsupported::Mechanism(m)),
            };
            let username = properties.get("sasl.username").cloned().ok_or(Unsupported::Missing("sasl.username"))?;
            let password = properties.get("sasl.password").cloned().ok_or(Unsupported::Missing("sasl.password"))?;
            Some(Sasl { mechanism, username, password })
        } else {
            None
        };
        Ok(WireConfig { bootstrap, client_id: get("client.id").unwrap_or_else(|| "streamguard".into()), tls, sasl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn an_unsupported_mechanism_is_named_before_its_own_properties() {
        let p = props(&[("security.protocol", "SASL_SSL"), ("sasl.mechanism", "OAUTHBEARER"), ("enable.sasl.oauthbearer.unsecure.jwt", "true")]);
        assert_eq!(WireConfig::from_properties("h:1", &p), Err(Unsupported::Mechanism("OAUTHBEARER".into())));
        // Without SASL the mechanism is not used (librdkafka ignores it too).
        let p = props(&[("sasl.mechanism", "GSSAPI")]);
        assert!(WireConfig::from_properties("h:1", &p).is_ok());
    }

    #[test]
    fn plaintext_scram_and_tls_are_served_and_the_password_stays_out_of_debug() {
        let c = WireConfig::from_properties("127.0.0.1:9092, b:9093", &BTreeMap::new()).unwrap();
        assert_eq!(c.bootstrap, ["127.0.0.1:9092", "b:9093"]);
        assert!(c.tls.is_none() && c.sasl.is_none());
        let p = props(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "hunter2"),
            ("ssl.ca.location", "/ca.pem"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ]);
        let c = WireConfig::from_properties("h:1", &p).unwrap();
        let sasl = c.sasl.clone().unwrap();
        assert_eq!(sasl.mechanism, Mechanism::ScramSha512);
        let tls = c.tls.clone().unwrap();
        assert_eq!(tls.ca_location, Some(PathBuf::from("/ca.pem")));
        assert!(tls.skip_hostname);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn gssapi_oauthbearer_and_unknown_properties_are_refused_with_the_reason() {
        let gss = props(&[("security.protocol", "sasl_plaintext"), ("sasl.mechanism", "GSSAPI")]);
        assert_eq!(WireConfig::from_properties("h:1", &gss), Err(Unsupported::Mechanism("GSSAPI".into())));
        let oauth = props(&[("security.protocol", "sasl_ssl"), ("sasl.mechanisms", "OAUTHBEARER")]);
        assert!(matches!(WireConfig::from_properties("h:1", &oauth), Err(Unsupported::Mechanism(_))));
        let no_mech = props(&[("security.protocol", "sasl_plaintext")]);
        assert!(matches!(WireConfig::from_properties("h:1", &no_mech), Err(Unsupported::Mechanism(_))), "librdkafka's default is GSSAPI");
        let odd = props(&[("ssl.keystore.location", "/k.p12")]);
        assert_eq!(WireConfig::from_properties("h:1", &odd), Err(Unsupported::Property("ssl.keystore.location".into())));
        let nopw = props(&[("security.protocol", "sasl_plaintext"), ("sasl.mechanism", "PLAIN"), ("sasl.username", "u")]);
        assert_eq!(WireConfig::from_properties("h:1", &nopw), Err(Unsupported::Missing("sasl.password")));
        assert!(matches!(WireConfig::from_properties("nohost", &BTreeMap::new()), Err(Unsupported::Bootstrap(_))));
        let ignored = props(&[("reconnect.backoff.max.ms", "5000"), ("isolation.level", "read_uncommitted")]);
        assert!(WireConfig::from_properties("h:1", &ignored).is_ok());
    }
}
