//! TLS on the Kafka listener: the rustls server configuration built from the PEM files named in
//! `kafka.tls`, and the handshake each accepted connection goes through before its first frame.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::KafkaTls;

/// Why TLS could not be set up; the node does not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {cause}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong.
        cause: String,
    },
    /// rustls refused the certificate and key together.
    #[error("certificate and key: {0}")]
    Config(#[from] rustls::Error),
}

/// The acceptor for `tls`, or `None` when TLS is off.
pub fn acceptor(tls: &KafkaTls) -> Result<Option<TlsAcceptor>, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else { return Ok(None) };
    let pem_error = |path: &Path, cause: String| TlsError::Pem { path: path.display().to_string(), cause };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(cert_file, "no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| pem_error(key_file, e.to_string()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_files_is_plain_text_and_unusable_files_are_errors() {
        assert!(acceptor(&KafkaTls::default()).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let missing = dir.path().join("missing.pem");
        for (cert, key) in [(&garbage, &garbage), (&missing, &garbage)] {
            let tls = KafkaTls { cert_file: Some(cert.clone()), key_file: Some(key.clone()) };
            assert!(matches!(acceptor(&tls), Err(TlsError::Pem { .. })), "{cert:?} {key:?}");
        }
    }
}
