//! One client connection. A reader task turns the socket into requests; this task runs them and
//! writes their responses in request order.
//!
//! As in Kafka, a request starts only once every earlier request of the connection has been
//! answered, so a client sees the effects of what it sent before (an OffsetFetch pipelined
//! after an OffsetCommit reads the commit, a Fetch after an acknowledged Produce sees it). The
//! one exception keeps pipelined produces fast: consecutive Produce requests run together, up
//! to `max-in-flight-per-connection`, so they share an fsync; each appends, in arrival order,
//! before the next is started, and only their waits for durability overlap.
//!
//! Limits: a connection with nothing in flight that sends no request for
//! `connections-max-idle-ms` is closed, and so is one that does not take a response for as
//! long; a frame must arrive whole within `request-read-timeout-ms` once its size is read; a
//! frame that does not parse closes this connection only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::Either;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tracing::{debug, instrument, warn};

use super::frame::{self, FrameError, Request};
use super::{KafkaContext, api, sasl};

/// Serves one connection, plain or TLS, given its two halves.
#[instrument(skip(read_half, write_half, ctx), fields(peer = %peer))]
pub async fn run<R, W>(read_half: R, write_half: W, peer: SocketAddr, ctx: Arc<KafkaContext>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let config = &ctx.cluster.config().kafka;
    let max_in_flight = config.max_in_flight_per_connection;
    let sasl_required = !config.sasl.mechanisms.is_empty();
    let mut session = sasl::Session::new();
    // Until the client has authenticated, its frames are held to the smaller SASL limit.
    let limit = Arc::new(AtomicU32::new(if sasl_required { config.sasl.max_receive_bytes } else { config.max_request_bytes }));
    let reader_limit = Arc::clone(&limit);
    let idle = Duration::from_millis(config.connections_max_idle_ms);
    let read_timeout = Duration::from_millis(config.request_read_timeout_ms);
    // The reader stays at most one request ahead of the one waiting to start.
    let (requests_tx, mut requests) = mpsc::channel(1);
    let metrics = Arc::clone(&ctx.metrics);
    let reader = tokio::spawn(async move {
        let mut read_half = BufReader::new(read_half);
        loop {
            let parsed = match frame::read_frame(&mut read_half, reader_limit.load(Ordering::Relaxed), read_timeout).await {
                Ok(Some(bytes)) => frame::parse_request(bytes).map(|r| Request { peer: Some(peer), ..r }),
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
                    if matches!(e, FrameError::ReadTimeout { .. }) {
                        metrics.connections_limited.with_label_values(&["request_read_timeout"]).inc();
                    } else {
                        metrics.frame_errors.inc();
                    }
                    log_frame_error(&e);
                    return;
                }
            }
        }
    });
    let mut writer = BufWriter::new(write_half);
    // Each result carries whether its request was a Produce.
    // A SASL answer is ready at once (Left); a handler's is a future (Right).
    let mut in_flight = FuturesOrdered::new();
    let mut produces_in_flight = 0;
    let mut waiting: Option<Request> = None;
    let mut reading = true;
    let mut closing = false;
    let mut last_active = Instant::now();
    loop {
        if let Some(mut request) = waiting.take_if(|r| may_start(r.api_key, in_flight.len(), produces_in_flight, max_in_flight)) {
            if sasl_required && session.principal().is_none() && !sasl::allowed_before_auth(request.api_key) {
                ctx.metrics.authentications.with_label_values(&["unauthenticated_request"]).inc();
                warn!(api = ?request.api_key, "request before SASL authentication; closing the connection");
                break;
            }
            if matches!(request.api_key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
                // Nothing else is in flight (see `may_start`), so the session changes between
                // requests, never under one.
                let answered = session.handle(&ctx, &request).await.map(|answer| {
                    closing |= answer.close;
                    if session.principal().is_some() {
                        limit.store(config.max_request_bytes, Ordering::Relaxed);
                    }
                    Some(super::frame::Response::from(answer.response))
                });
                in_flight.push_back(Either::Left(std::future::ready((false, answered))));
                continue;
            }
            request.principal = session.principal().cloned();
            let is_produce = request.api_key == ApiKey::Produce;
            produces_in_flight += usize::from(is_produce);
            let ctx = Arc::clone(&ctx);
            in_flight.push_back(Either::Right(async move {
                let api = request.api_key;
                let started = Instant::now();
                let result = api::handle(&ctx, request).await;
                ctx.metrics.observe_request(api, started.elapsed());
                (is_produce, result)
            }));
        }
        let idle_until = tokio::time::Instant::from_std(last_active + idle);
        tokio::select! {
            // Requests already running start (and produces append) before the next is read.
            biased;
            Some((was_produce, result)) = in_flight.next() => {
                produces_in_flight -= usize::from(was_produce);
                match result {
                    Ok(Some(response)) => {
                        // Flushed at once: a later request (a long-poll fetch, a join) may take
                        // seconds, and this answer must not wait behind it.
                        let written = tokio::time::timeout(idle, async {
                            for chunk in response.chunks() {
                                writer.write_all(chunk).await?;
                            }
                            writer.flush().await
                        })
                        .await;
                        match written {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                debug!(cause = %e, "write failed");
                                break;
                            }
                            Err(_) => {
                                ctx.metrics.connections_limited.with_label_values(&["response_write_timeout"]).inc();
                                debug!(?idle, "the client took no response for the idle timeout; closing");
                                break;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        ctx.metrics.frame_errors.inc();
                        log_frame_error(&e);
                        break;
                    }
                }
                last_active = Instant::now();
                if closing && in_flight.is_empty() {
                    break;
                }
            }
            request = requests.recv(), if reading && !closing && waiting.is_none() => {
                match request {
                    Some(request) => waiting = Some(request),
                    None => reading = false,
                }
                last_active = Instant::now();
            }
            () = tokio::time::sleep_until(idle_until), if reading && waiting.is_none() && in_flight.is_empty() => {
                ctx.metrics.connections_limited.with_label_values(&["idle"]).inc();
                debug!(?idle, "idle connection closed");
                break;
            }
            else => break,
        }
    }
    let _ = writer.flush().await;
    reader.abort();
}

/// Whether a request may start with `running` requests in flight, `produces` of them Produce:
/// alone, or as one more Produce after only Produces.
fn may_start(api: ApiKey, running: usize, produces: usize, max_in_flight: usize) -> bool {
    running == 0 || (api == ApiKey::Produce && produces == running && running < max_in_flight)
}

fn log_frame_error(error: &FrameError) {
    match error {
        FrameError::Io(e) => debug!(cause = %e, "connection closed"),
        other => warn!(cause = %other, "closing connection after a bad request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_produces_run_together_and_only_after_produces() {
        assert!(may_start(ApiKey::Fetch, 0, 0, 16));
        assert!(may_start(ApiKey::Produce, 3, 3, 16));
        assert!(!may_start(ApiKey::Produce, 16, 16, 16), "the in-flight limit");
        assert!(!may_start(ApiKey::Produce, 2, 1, 16), "behind a non-produce");
        assert!(!may_start(ApiKey::OffsetFetch, 1, 0, 16));
        assert!(!may_start(ApiKey::Fetch, 1, 1, 16), "behind a produce");
    }
}
