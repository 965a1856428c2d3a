//! Mutual TLS on the rpc port (Raft transport and admin API). Every node and admin client holds
//! a certificate from the cluster's CA; the server refuses a connection whose certificate the CA
//! did not sign before any request is read. A node is named by its certificate: a DNS subject
//! name `node-<id>`. Only a certificate naming a node of the cluster may send Raft messages,
//! and only as that node; nodes check the same name on the peers they connect to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tracing::{debug, warn};

use crate::config::RpcTlsFiles;
use crate::kafka::TlsError;
use crate::kafka::tls::{chain_and_key, pem_error, read_pem};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshake is done, waiting for the gRPC server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// The name a node's certificate carries.
pub fn node_name(id: u64) -> String {
    format!("node-{id}")
}

/// This process's TLS material for the rpc port.
pub struct RpcTls {
    ca_pem: Vec<u8>,
    identity: Identity,
    server: Arc<rustls::ServerConfig>,
}

impl RpcTls {
    /// Loads the CA, certificate and key named in `files`; `None` when none is set.
    pub fn load(files: &RpcTlsFiles) -> Result<Option<Arc<RpcTls>>, TlsError> {
        let (Some(ca_file), Some(cert_file), Some(key_file)) = (&files.ca_file, &files.cert_file, &files.key_file) else {
            return Ok(None);
        };
        let ca_pem = read_pem(ca_file)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca_pem) {
            roots.add(cert.map_err(|e| pem_error(ca_file, e))?).map_err(|e| pem_error(ca_file, e))?;
        }
        if roots.is_empty() {
            return Err(pem_error(ca_file, "no CA certificate"));
        }
        let (cert_pem, key_pem) = (read_pem(cert_file)?, read_pem(key_file)?);
        let (certs, key) = chain_and_key(cert_file, &cert_pem, key_file, &key_pem)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider)).build().map_err(|e| pem_error(ca_file, e))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Arc::new(RpcTls { ca_pem, identity: Identity::from_pem(cert_pem, key_pem), server: Arc::new(server) })))
    }
}

/// The endpoint for a node's rpc port: plain when `tls` is `None`, else mutual TLS checking
/// that the server is node `node` (or, without one, that its certificate names `addr`).
pub fn endpoint(tls: Option<&RpcTls>, addr: SocketAddr, node: Option<u64>) -> Result<Endpoint, tonic::transport::Error> {
    let Some(tls) = tls else { return Endpoint::from_shared(format!("http://{addr}")) };
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem)).identity(tls.identity.clone());
    if let Some(node) = node {
        config = config.domain_name(node_name(node));
    }
    Endpoint::from_shared(format!("https://{addr}"))?.tls_config(config)
}

/// The node of `known` that a client's certificate chain names, if any.
pub fn node_of(certs: &[CertificateDer<'_>], known: impl IntoIterator<Item = u64>) -> Option<u64> {
    let cert = webpki::EndEntityCert::try_from(certs.first()?).ok()?;
    known.into_iter().find(|id| ServerName::try_from(node_name(*id)).is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok()))
}

/// Accepts connections on `listener` and hands those that complete a mutual TLS handshake to
/// the returned receiver; each refused handshake is counted in `refused`.
pub fn incoming(listener: TcpListener, tls: &RpcTls, refused: IntCounter, mut stop: watch::Receiver<bool>) -> mpsc::Receiver<Result<TlsStream<TcpStream>, std::io::Error>> {
    let acceptor = TlsAcceptor::from(Arc::clone(&tls.server));
    let (accepted, incoming) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = listener.accept() => next,
                _ = stop.wait_for(|s| *s) => return,
            };
            let (stream, peer) = match next {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors, say: do not spin while it lasts.
                    warn!(cause = %e, "rpc accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, accepted, refused) = (acceptor.clone(), accepted.clone(), refused.clone());
            // Handshakes run side by side: a slow or silent client holds only its own.
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = accepted.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        refused.inc();
                        warn!(%peer, cause = %e, "rpc connection refused: TLS handshake failed");
                    }
                    Err(_) => {
                        refused.inc();
                        debug!(%peer, "rpc connection refused: TLS handshake timed out");
                    }
                }
            });
        }
    });
    incoming
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_files_is_plain_and_unusable_files_are_errors() {
        assert!(RpcTls::load(&RpcTlsFiles::default()).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let missing = dir.path().join("missing.pem");
        for file in [&garbage, &missing] {
            let files = RpcTlsFiles { ca_file: Some(file.clone()), cert_file: Some(file.clone()), key_file: Some(file.clone()) };
            assert!(matches!(RpcTls::load(&files), Err(TlsError::Pem { .. })), "{file:?}");
        }
    }

    #[test]
    fn a_certificate_names_no_node_when_garbage_or_absent() {
        assert_eq!(node_of(&[], [1, 2, 3]), None);
        assert_eq!(node_of(&[CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01])], [1]), None);
        assert_eq!(node_name(7), "node-7");
    }
}
