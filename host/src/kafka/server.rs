//! The accept loop: one task per connection, bounded by `max-connections`, stopped by the
//! shutdown signal.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

use super::KafkaContext;
use super::connection;

/// Serves Kafka clients on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, ctx: Arc<KafkaContext>, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(ctx.cluster.config().kafka.max_connections));
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
            warn!(%peer, "connection limit reached; closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        ctx.metrics.connections.inc();
        tokio::spawn(async move {
            connection::run(stream, peer, Arc::clone(&ctx)).await;
            ctx.metrics.connections.dec();
            drop(permit);
        });
    }
    info!("kafka listener stopped");
}
