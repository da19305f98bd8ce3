//! Kafka client properties that may hold secrets: which ones are secret, where their
//! values come from, how librdkafka validates them without a client, and how their
//! values are kept out of every message.
//!
//! # Secret sources
//! A property's value can come from a file or an environment variable instead of the
//! config, by suffixing its name (Kubernetes mounts secrets as files):
//!
//! ```toml
//! properties = { "sasl.password_file" = "/var/run/secrets/kafka/password" }
//! properties = { "sasl.password_env" = "KAFKA_PASSWORD" }
//! ```
//!
//! The file is read when the configuration is loaded (`check`, `run`, `lag`), at most
//! [`MAX_SECRET_FILE`] bytes, with trailing newlines (`\n`, `\r\n`) trimmed; an empty value
//! is an error. Errors name the key and the file or variable, never the value.
//!
//! # Redaction
//! A property is *sensitive* when its name contains `password`, `secret`, `token`,
//! `jaas`, `key` or `credential` ([`is_sensitive`]); the value of a sensitive key, and of
//! any key librdkafka does not know, is never printed: [`redact`] for printouts,
//! [`scrub`] for text that may quote one (librdkafka's own error strings and log lines).
//!
//! Deliberately not here: the sampler's own defaults (see `sample::kafka::client_config`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;

/// What a hidden value is shown as.
pub const REDACTED: &str = "<redacted>";
/// Largest secret file read (a password, a token, a PEM key).
pub const MAX_SECRET_FILE: u64 = 64 * 1024;
/// Name suffix: the value is read from the file this names.
pub const FILE_SUFFIX: &str = "_file";
/// Name suffix: the value is read from the environment variable this names.
pub const ENV_SUFFIX: &str = "_env";

const SENSITIVE_WORDS: [&str; 6] = ["password", "secret", "token", "jaas", "key", "credential"];

/// Whether a property's value is secret (by its name). Pure.
pub fn is_sensitive(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SENSITIVE_WORDS.iter().any(|w| k.contains(w))
}

/// Where a property's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "file {}", p.display()),
            SecretSource::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// `sasl.password_file` → (`sasl.password`, file source); `None` for a plain key. Pure.
pub fn reference(key: &str, value: &str) -> Option<(String, SecretSource)> {
    if let Some(base) = key.strip_suffix(FILE_SUFFIX) {
        return Some((base.to_string(), SecretSource::File(PathBuf::from(value))));
    }
    key.strip_suffix(ENV_SUFFIX).map(|base| (base.to_string(), SecretSource::Env(value.to_string())))
}

/// Reads a secret from its source. The error never contains the value.
pub fn read(source: &SecretSource) -> Result<String, String> {
    let raw = match source {
        SecretSource::File(path) => read_file(path)?,
        SecretSource::Env(var) => match std::env::var(var) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => return Err(format!("environment variable {var} is not set")),
            Err(std::env::VarError::NotUnicode(_)) => return Err(format!("environment variable {var} is not valid UTF-8")),
        },
    };
    let value = trim_newlines(&raw);
    if value.is_empty() {
        return Err(format!("{source} is empty"));
    }
    Ok(value.to_string())
}

fn read_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let fail = |e: std::io::Error| format!("cannot read secret file {}: {}", path.display(), e.kind());
    let f = std::fs::File::open(path).map_err(fail)?;
    let mut buf = Vec::new();
    f.take(MAX_SECRET_FILE + 1).read_to_end(&mut buf).map_err(fail)?;
    if buf.len() as u64 > MAX_SECRET_FILE {
        return Err(format!("secret file {} is larger than {MAX_SECRET_FILE} bytes", path.display()));
    }
    String::from_utf8(buf).map_err(|_| format!("secret file {} is not valid UTF-8", path.display()))
}

/// Re-reads every secret source. `Ok(Some(properties))` when a value changed (the new
/// properties), `Ok(None)` when none did; the error names the source, never a value.
pub fn reread(properties: &BTreeMap<String, String>, sources: &BTreeMap<String, SecretSource>) -> Result<Option<BTreeMap<String, String>>, String> {
    let mut out = properties.clone();
    let mut changed = false;
    for (name, source) in sources {
        let value = read(source)?;
        librdkafka_accepts(name, &value).map_err(|m| format!("{name} from {source}: {m}"))?;
        if properties.get(name) != Some(&value) {
            changed = true;
            out.insert(name.clone(), value);
        }
    }
    Ok(changed.then_some(out))
}

/// Drops trailing `\n` / `\r\n` (what `echo` and editors add). Pure.
pub fn trim_newlines(s: &str) -> &str {
    s.trim_end_matches(['\n', '\r'])
}

/// Asks librdkafka whether it accepts `key = value`, without creating a client (no
/// connection, no thread). The message never contains the value of a sensitive or
/// unknown key.
pub fn librdkafka_accepts(key: &str, value: &str) -> Result<(), String> {
    let mut cfg = ClientConfig::new();
    cfg.set(key, value);
    match cfg.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) => {
            Err("unknown librdkafka property (its value is not shown); see librdkafka's CONFIGURATION.md".to_string())
        }
        Err(KafkaError::ClientConfig(_, desc, ..)) => {
            let desc = if is_sensitive(key) { scrub_value(&desc, value) } else { desc };
            Err(format!("rejected by librdkafka: {desc}"))
        }
        Err(e) => Err(format!("rejected by librdkafka: {}", scrub_value(&e.to_string(), value))),
    }
}

/// The value as it may be printed: sensitive values hidden. Pure.
pub fn redact<'a>(key: &str, value: &'a str) -> &'a str {
    if is_sensitive(key) {
        REDACTED
    } else {
        value
    }
}

/// Every property with sensitive values hidden, for printouts. Pure.
pub fn redacted(properties: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    properties.iter().map(|(k, v)| (k.as_str(), redact(k, v))).collect()
}

/// `text` with every sensitive value among `properties` replaced by [`REDACTED`]. For
/// text that may quote a value: librdkafka's error strings and log lines. Pure.
pub fn scrub<'a>(text: &str, properties: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = text.to_string();
    for (k, v) in properties {
        if is_sensitive(k) {
            out = scrub_value(&out, v);
        }
    }
    out
}

fn scrub_value(text: &str, value: &str) -> String {
    if value.is_empty() {
        text.to_string()
    } else {
        text.replace(value, REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_secret_words_are_sensitive_whatever_their_case() {
        for k in ["sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret", "sasl.jaas.config", "ssl.key.pem", "SASL.PASSWORD", "my_token", "credential"] {
            assert!(is_sensitive(k), "{k}");
        }
        for k in ["security.protocol", "sasl.mechanism", "sasl.username", "socket.timeout.ms"] {
            assert!(!is_sensitive(k), "{k}");
        }
    }

    #[test]
    fn suffixed_keys_name_a_file_or_a_variable() {
        assert_eq!(reference("sasl.password_file", "/s/p"), Some(("sasl.password".into(), SecretSource::File("/s/p".into()))));
        assert_eq!(reference("sasl.password_env", "PW"), Some(("sasl.password".into(), SecretSource::Env("PW".into()))));
        assert_eq!(reference("sasl.password", "x"), None);
    }

    #[test]
    fn a_secret_file_loses_its_trailing_newline_and_errors_never_show_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\r\n").unwrap();
        assert_eq!(read(&SecretSource::File(p.clone())).unwrap(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(read(&SecretSource::File(p.clone())).unwrap_err().contains("is empty"));
        std::fs::write(&p, vec![b'a'; MAX_SECRET_FILE as usize + 1]).unwrap();
        assert!(read(&SecretSource::File(p.clone())).unwrap_err().contains("larger than"));
        let e = read(&SecretSource::File(dir.path().join("missing"))).unwrap_err();
        assert!(e.contains("cannot read secret file") && e.contains("missing"), "{e}");
        let e = read(&SecretSource::Env("STREAMGUARD_TEST_NO_SUCH_VARIABLE".into())).unwrap_err();
        assert_eq!(e, "environment variable STREAMGUARD_TEST_NO_SUCH_VARIABLE is not set");
    }

    #[test]
    fn librdkafka_rejects_unknown_and_invalid_properties_without_quoting_secrets() {
        assert!(librdkafka_accepts("sasl.password", "x").is_ok());
        assert!(librdkafka_accepts("security.protocol", "SASL_SSL").is_ok());
        let e = librdkafka_accepts("sasl.pasword", "hunter2").unwrap_err();
        assert!(e.starts_with("unknown librdkafka property") && !e.contains("hunter2"), "{e}");
        let e = librdkafka_accepts("security.protocol", "pigeon").unwrap_err();
        assert!(e.contains("pigeon"), "a plain value may be shown: {e}");
        let e = librdkafka_accepts("ssl.key.password_typo.ms", "hunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_rotated_secret_file_is_noticed_and_an_unchanged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "one\n").unwrap();
        let sources = BTreeMap::from([("sasl.password".to_string(), SecretSource::File(p.clone()))]);
        let props = BTreeMap::from([("sasl.password".to_string(), "one".to_string())]);
        assert_eq!(reread(&props, &sources), Ok(None));
        std::fs::write(&p, "two\n").unwrap();
        assert_eq!(reread(&props, &sources).unwrap().unwrap()["sasl.password"], "two");
        std::fs::remove_file(&p).unwrap();
        assert!(reread(&props, &sources).unwrap_err().contains("cannot read secret file"));
    }

    #[test]
    fn scrub_and_redact_hide_sensitive_values_only() {
        let props = BTreeMap::from([("sasl.password".to_string(), "pw1".to_string()), ("sasl.username".to_string(), "bob".to_string())]);
        let text = scrub("user bob failed with pw1", props.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(text, format!("user bob failed with {REDACTED}"));
        assert_eq!(redacted(&props)["sasl.password"], REDACTED);
        assert_eq!(redacted(&props)["sasl.username"], "bob");
    }
}
