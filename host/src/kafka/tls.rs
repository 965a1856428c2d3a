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
    let (certs, key) = chain_and_key(cert_file, &read_pem(cert_file)?, key_file, &read_pem(key_file)?)?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Why the PEM file at `path` is unusable.
pub(crate) fn pem_error(path: &Path, cause: impl ToString) -> TlsError {
    TlsError::Pem { path: path.display().to_string(), cause: cause.to_string() }
}

/// The bytes of the PEM file at `path`.
pub(crate) fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| pem_error(path, e))
}

/// A certificate chain (at least one certificate) and its private key, from the PEM bytes of
/// `cert_file` and `key_file`.
pub(crate) fn chain_and_key(cert_file: &Path, cert_pem: &[u8], key_file: &Path, key_pem: &[u8]) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| pem_error(cert_file, e))?;
    if certs.is_empty() {
        return Err(pem_error(cert_file, "no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem_error(key_file, e))?;
    Ok((certs, key))
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
