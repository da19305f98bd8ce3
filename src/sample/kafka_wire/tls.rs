//! TLS for the direct client: a rustls client configuration (ring provider, the same
//! rustls that reqwest already builds) from the cluster's `ssl.*` properties.
//!
//! The certificate chain is always verified: against `ssl.ca.location` when set, else
//! the webpki roots. `ssl.endpoint.identification.algorithm=none` skips only the host
//! name check, as it does in librdkafka.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::kafka_wire::Tls;
use super::WireError;

/// Builds the rustls client configuration. Reads the CA and client certificate files.
pub fn client_config(tls: &Tls) -> Result<Arc<rustls::ClientConfig>, WireError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &tls.ca_location {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| WireError::Tls(format!("ssl.ca.location {}: {e}", path.display())))?;
            for c in certs {
                let c = c.map_err(|e| WireError::Tls(format!("ssl.ca.location {}: {e}", path.display())))?;
                roots.add(c).map_err(|e| WireError::Tls(format!("ssl.ca.location {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(WireError::Tls(format!("ssl.ca.location {}: no certificate", path.display())));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| WireError::Tls(e.to_string()))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| WireError::Tls(e.to_string()))?;
    let builder = if tls.skip_hostname {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
    } else {
        builder.with_webpki_verifier(verifier)
    };
    let config = match &tls.client_cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| WireError::Tls(format!("ssl.certificate.location {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| WireError::Tls(format!("ssl.key.location {}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| WireError::Tls(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The server name to verify for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, WireError> {
    ServerName::try_from(host.to_string()).map_err(|e| WireError::Tls(format!("server name {host:?}: {e}")))
}

/// Verifies the chain like webpki, but accepts a certificate for another name.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_a_tls_error_naming_the_file() {
        let tls = Tls { ca_location: Some("/nonexistent/ca.pem".into()), ..Tls::default() };
        let e = client_config(&tls).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = client_config(&Tls { ca_location: Some(empty), ..Tls::default() }).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        assert!(client_config(&Tls::default()).is_ok(), "webpki roots by default");
        assert!(server_name("127.0.0.1").is_ok() && server_name("broker.example").is_ok());
    }
}
