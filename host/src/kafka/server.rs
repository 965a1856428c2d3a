//! The accept loop: one task per connection, bounded by `max-connections` and
//! `max-connections-per-ip`, stopped by the shutdown signal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

use super::KafkaContext;
use super::connection;

/// Serves Kafka clients on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, ctx: Arc<KafkaContext>, mut shutdown: watch::Receiver<bool>) {
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
        ctx.metrics.connections.inc();
        tokio::spawn(async move {
            connection::run(stream, peer, Arc::clone(&ctx)).await;
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
