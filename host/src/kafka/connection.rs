//! One client connection. A reader task turns the socket into requests; this task runs up to
//! `max-in-flight-per-connection` of them at once (so pipelined produces share an fsync) and
//! writes their responses strictly in request order, as Kafka requires. A frame that does not
//! parse closes this connection only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, instrument, warn};

use super::frame::{self, FrameError};
use super::{KafkaContext, api};

#[instrument(skip(stream, ctx), fields(peer = %peer))]
pub async fn run(stream: TcpStream, peer: SocketAddr, ctx: Arc<KafkaContext>) {
    let (read_half, write_half) = stream.into_split();
    let max_in_flight = ctx.cluster.config().kafka.max_in_flight_per_connection;
    let limit = ctx.cluster.config().kafka.max_request_bytes;
    let (requests_tx, mut requests) = mpsc::channel(max_in_flight);
    let metrics = Arc::clone(&ctx.metrics);
    let reader = tokio::spawn(async move {
        let mut read_half = BufReader::new(read_half);
        loop {
            let parsed = match frame::read_frame(&mut read_half, limit).await {
                Ok(Some(bytes)) => frame::parse_request(bytes).map(|r| frame::Request { peer: Some(peer), ..r }),
                Ok(None) => return,
                Err(e) => Err(e),
            };
            match parsed {
                Ok(request) => {
                    if requests_tx.send(request).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    metrics.frame_errors.inc();
                    log_frame_error(&e);
                    return;
                }
            }
        }
    });
    let mut writer = BufWriter::new(write_half);
    let mut in_flight = FuturesOrdered::new();
    let mut reading = true;
    loop {
        tokio::select! {
            request = requests.recv(), if reading && in_flight.len() < max_in_flight => {
                let Some(request) = request else {
                    reading = false;
                    continue;
                };
                let ctx = Arc::clone(&ctx);
                in_flight.push_back(async move {
                    let api = request.api_key;
                    let started = Instant::now();
                    let result = api::handle(&ctx, request).await;
                    ctx.metrics.observe_request(api, started.elapsed());
                    result
                });
            }
            Some(result) = in_flight.next() => {
                match result {
                    Ok(Some(response)) => {
                        // Flushed at once: a later request (a long-poll fetch, a join) may take
                        // seconds, and this answer must not wait behind it.
                        if let Err(e) = async { writer.write_all(&response).await?; writer.flush().await }.await {
                            debug!(cause = %e, "write failed");
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        ctx.metrics.frame_errors.inc();
                        log_frame_error(&e);
                        break;
                    }
                }
            }
            else => break,
        }
    }
    let _ = writer.flush().await;
    reader.abort();
}

fn log_frame_error(error: &FrameError) {
    match error {
        FrameError::Io(e) => debug!(cause = %e, "connection closed"),
        other => warn!(cause = %other, "closing connection after a bad request"),
    }
}
