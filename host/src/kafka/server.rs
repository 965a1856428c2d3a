//! The accept loop: one task per connection, bounded by `max-connections` and
//! `max-connections-per-ip`, stopped by the shutdown signal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::KafkaContext;
use super::connection;

/// Serves Kafka clients on `listener` until `shutdown` turns true; over TLS when `tls` is set.
pub async fn serve(listener: TcpListener, ctx: Arc<KafkaContext>, tls: Option<TlsAcceptor>, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(ctx.cluster.config().kafka.max_connections));
    let per_ip = Arc::new(PerIp { limit: ctx.cluster.config().kafka.max_connections_per_ip, open: Mutex::new(HashMap::new()) });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(cause = %e, "accept failed");
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            ctx.metrics.connections_limited.with_label_values(&["max_connections"]).inc();
            warn!(%peer, "connection limit reached; closing new connection");
            continue;
        };
        let Some(ip_slot) = PerIp::acquire(&per_ip, peer.ip()) else {
            ctx.metrics.connections_limited.with_label_values(&["max_connections_per_ip"]).inc();
            debug!(%peer, "connection limit of this address reached; closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        let tls = tls.clone();
        ctx.metrics.connections.inc();
        tokio::spawn(async move {
            match tls {
                None => {
                    let (reader, writer) = stream.into_split();
                    connection::run(reader, writer, peer, Arc::clone(&ctx)).await;
                }
                Some(tls) => {
                    // The handshake has as long as a request's frame to complete.
                    let timeout = Duration::from_millis(ctx.cluster.config().kafka.request_read_timeout_ms);
                    match tokio::time::timeout(timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let (reader, writer) = tokio::io::split(stream);
                            connection::run(reader, writer, peer, Arc::clone(&ctx)).await;
                        }
                        Ok(Err(e)) => {
                            ctx.metrics.frame_errors.inc();
                            debug!(%peer, cause = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            ctx.metrics.connections_limited.with_label_values(&["request_read_timeout"]).inc();
                            debug!(%peer, "TLS handshake timed out");
                        }
                    }
                }
            }
            ctx.metrics.connections.dec();
            drop((permit, ip_slot));
        });
    }
    info!("kafka listener stopped");
}

/// Open connections per client address.
struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address until dropped.
struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn acquire(per_ip: &Arc<PerIp>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= per_ip.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot { per_ip: Arc::clone(per_ip), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
