//! A fault-injecting TCP proxy for cluster tests.
//!
//! Raft nodes talk gRPC (HTTP/2) to each other on 127.0.0.1. A test that wants to see how the
//! cluster behaves under a bad network puts one [`FaultProxy`] on every directed node pair and
//! points the sender at [`FaultProxy::addr`] instead of the receiver. The proxy then injects,
//! on live connections, the faults a real network produces as seen through a TCP socket:
//! partitions, latency, retransmission stalls (what packet loss looks like from above TCP),
//! resets and peers that are slow to close.
//!
//! Every knob is an atomic or a watch channel, so changing it applies to connections that are
//! already open. Dropping the proxy stops its listener and closes every connection it holds; no
//! task outlives it for longer than it takes to notice.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, sleep_until};

/// Largest chunk read from one side at a time; each chunk gets its own fault decisions.
const CHUNK_BYTES: usize = 16 * 1024;

/// Chunks in flight per direction. Bounded so that a slow (delayed) direction pushes back on
/// the sender through TCP flow control instead of buffering without limit; large enough that
/// latency does not throttle throughput for the traffic volumes tests produce.
const QUEUE_CHUNKS: usize = 1024;

/// How long a "lost" chunk is held back by default: a typical minimum TCP retransmission
/// timeout (Linux uses 200 ms).
pub const DEFAULT_RETRANSMIT_DELAY: Duration = Duration::from_millis(200);

/// A TCP proxy on 127.0.0.1 that forwards every connection to one target and injects faults.
///
/// Faults and their semantics:
/// - **Partition** ([`FaultProxy::set_partitioned`]): existing connections are closed and new
///   ones are accepted and closed at once, so a gRPC client fails fast and keeps reconnecting.
/// - **Latency** ([`FaultProxy::set_latency`]): every chunk arrives `d` after it was read, in
///   order; chunks in flight overlap their delays, so throughput is not affected.
/// - **Loss** ([`FaultProxy::set_loss`]): a chunk is held back an extra retransmission delay
///   with probability `p`, and chunks behind it wait (head-of-line blocking, like TCP).
/// - **Reset** ([`FaultProxy::set_reset_probability`]): per chunk, the connection is reset.
/// - **Slow close** ([`FaultProxy::set_slow_close`]): a close reaches the other side late.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Never sent on: dropping it (with the proxy) is what tells every task to stop.
    _shutdown: watch::Sender<()>,
}

impl FaultProxy {
    /// Binds 127.0.0.1:0 and starts forwarding accepted connections to `target`.
    ///
    /// Must be called inside a tokio runtime; the proxy's tasks run on it.
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let (shutdown, shutdown_rx) = watch::channel(());
        let conn = Conn { shared: shared.clone(), target, shutdown: shutdown_rx, epoch: 0 };
        tokio::spawn(accept_loop(listener, conn));
        Ok(FaultProxy { addr, shared, _shutdown: shutdown })
    }

    /// The address to give the client instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Partitions (or heals) the link.
    ///
    /// Turning it on closes every proxied connection at once, on both sides (subject to
    /// [`FaultProxy::set_slow_close`]). While it is on, new connections are accepted and
    /// closed immediately rather than held open: a gRPC client then sees its connection end
    /// before the HTTP/2 handshake completes and fails the call at once, instead of hanging
    /// until a deadline or keepalive notices a black hole. Turning it off lets new connections
    /// through again; the ones it closed stay closed.
    pub fn set_partitioned(&self, on: bool) {
        self.shared.partition.send_modify(|p| {
            if on && !p.on {
                p.epoch += 1;
            }
            p.on = on;
        });
    }

    /// Delays every chunk by `d` from when it was read, per direction, order preserved.
    pub fn set_latency(&self, d: Duration) {
        store_duration(&self.shared.latency, d);
    }

    /// With probability `p` per chunk, holds the chunk back an extra retransmission delay
    /// (see [`FaultProxy::set_retransmit_delay`]); later chunks wait behind it, as on TCP.
    pub fn set_loss(&self, p: f64) {
        store_probability(&self.shared.loss, p);
    }

    /// The extra delay of a "lost" chunk; defaults to [`DEFAULT_RETRANSMIT_DELAY`].
    pub fn set_retransmit_delay(&self, d: Duration) {
        store_duration(&self.shared.retransmit, d);
    }

    /// With probability `p` per chunk, resets the connection (RST to both sides) instead of
    /// forwarding the chunk.
    pub fn set_reset_probability(&self, p: f64) {
        store_probability(&self.shared.reset, p);
    }

    /// Delays the propagation of a close by `d`.
    ///
    /// When one side closes (or errors), the bytes already read from it are still delivered
    /// and the other side is shut down `d` after that. When a partition closes a connection
    /// and `d` is non-zero, nothing more is read from either side, the bytes already read are
    /// delivered, and both sides are closed `d` later; with `d` zero the partition closes
    /// both sides at once and drops what was queued.
    pub fn set_slow_close(&self, d: Duration) {
        store_duration(&self.shared.slow_close, d);
    }

    /// Bytes delivered to either side so far (both directions together).
    pub fn bytes_forwarded(&self) -> u64 {
        self.shared.bytes_forwarded.load(Ordering::Relaxed)
    }

    /// Connections accepted so far, including ones closed at once by a partition.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

/// The state every task of one proxy shares: the live settings and the counters.
struct Shared {
    latency: AtomicU64,
    retransmit: AtomicU64,
    slow_close: AtomicU64,
    /// `f64` bits.
    loss: AtomicU64,
    /// `f64` bits.
    reset: AtomicU64,
    /// xorshift64* state; never zero.
    rng: AtomicU64,
    bytes_forwarded: AtomicU64,
    connections: AtomicU64,
    partition: watch::Sender<Partition>,
}

/// Whether the link is partitioned, and how many partitions have started: a connection
/// closes when the epoch moves past the one it was accepted in, so a partition switched on and
/// off again before a task looked still closes it.
#[derive(Clone, Copy, Default)]
struct Partition {
    on: bool,
    epoch: u64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            latency: AtomicU64::new(0),
            retransmit: AtomicU64::new(nanos(DEFAULT_RETRANSMIT_DELAY)),
            slow_close: AtomicU64::new(0),
            loss: AtomicU64::new(0f64.to_bits()),
            reset: AtomicU64::new(0f64.to_bits()),
            rng: AtomicU64::new(seed()),
            bytes_forwarded: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            partition: watch::Sender::new(Partition::default()),
        }
    }

    fn latency(&self) -> Duration {
        load_duration(&self.latency)
    }

    fn slow_close(&self) -> Duration {
        load_duration(&self.slow_close)
    }

    /// The extra delay one chunk suffers from loss: a retransmission delay or nothing.
    fn loss_delay(&self) -> Duration {
        if self.roll(&self.loss) { load_duration(&self.retransmit) } else { Duration::ZERO }
    }

    /// True with the probability stored (as `f64` bits) in `probability`.
    fn roll(&self, probability: &AtomicU64) -> bool {
        let p = f64::from_bits(probability.load(Ordering::Relaxed));
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        let unit = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }

    /// xorshift64*: plenty for choosing faults, and no dependency.
    fn next_random(&self) -> u64 {
        let step = |mut x: u64| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x
        };
        // The closure always returns Some, so both arms carry the previous state.
        let previous = match self.rng.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x))) {
            Ok(x) | Err(x) => x,
        };
        step(previous).wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A non-zero seed from the clock, so different runs exercise different fault sequences.
fn seed() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (now.as_nanos() as u64 ^ 0x9E37_79B9_7F4A_7C15) | 1
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn store_duration(slot: &AtomicU64, d: Duration) {
    slot.store(nanos(d), Ordering::Relaxed);
}

fn load_duration(slot: &AtomicU64) -> Duration {
    Duration::from_nanos(slot.load(Ordering::Relaxed))
}

/// Stores `p` clamped to [0, 1]; NaN counts as 0 so a bad argument injects nothing.
fn store_probability(slot: &AtomicU64, p: f64) {
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    slot.store(p.to_bits(), Ordering::Relaxed);
}

/// When a chunk read at `now` is delivered: after the latency and any loss delay, but never
/// before the chunk ahead of it (`previous`). Chunks read close together get delivery times
/// close together, so their delays overlap instead of adding up.
fn deliver_at(now: Instant, previous: Instant, latency: Duration, loss: Duration) -> Instant {
    (now + latency + loss).max(previous)
}

/// Accepts connections until the proxy is dropped, spawning one task per connection.
async fn accept_loop(listener: TcpListener, template: Conn) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = template.shut_down() => return,
        };
        match accepted {
            Ok((client, _)) => admit(client, &template),
            Err(e) => {
                // Usually transient (e.g. out of file descriptors); back off instead of spinning.
                eprintln!("fault-proxy -> {}: accept failed: {e}", template.target);
                sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Counts a new connection and either closes it (partitioned) or starts proxying it.
fn admit(client: TcpStream, template: &Conn) {
    template.shared.connections.fetch_add(1, Ordering::Relaxed);
    let partition = *template.shared.partition.borrow();
    if partition.on {
        return; // Dropping `client` closes it: the fast failure `set_partitioned` promises.
    }
    let conn = Conn { epoch: partition.epoch, ..template.clone() };
    tokio::spawn(async move { conn.serve(client).await });
}

/// One proxied connection's view of the proxy.
#[derive(Clone)]
struct Conn {
    shared: Arc<Shared>,
    target: SocketAddr,
    shutdown: watch::Receiver<()>,
    /// The partition epoch the connection was accepted in.
    epoch: u64,
}

/// How one direction's reading ended, deciding what happens to the connection after the
/// queued bytes are delivered.
enum Ending {
    /// The sender closed its write half: pass the half-close on, keep the other direction.
    Eof,
    /// The sender failed, the receiver is gone, or a slow-closing partition hit: close all.
    Broken,
}

/// Why a connection is torn down at once, without delivering what is queued.
enum Abort {
    /// Drop both sockets (FIN).
    Close,
    /// Reset both sockets (RST).
    Reset,
}

/// A chunk of bytes in flight and when it is due at the other side.
struct Chunk {
    at: Instant,
    bytes: Vec<u8>,
}

impl Conn {
    /// Resolves once the proxy is dropped.
    async fn shut_down(&self) {
        // `changed` errs when the sender is dropped, which is the only thing that happens to it.
        let _ = self.shutdown.clone().changed().await;
    }

    /// Resolves once a partition has started since this connection was accepted.
    async fn partitioned(&self) {
        let epoch = self.epoch;
        let mut partition = self.shared.partition.subscribe();
        if partition.wait_for(|p| p.on || p.epoch != epoch).await.is_err() {
            // Unreachable while we hold `shared`; never resolving beats a spurious close.
            std::future::pending::<()>().await;
        }
    }

    /// Dials the target and proxies until both directions end or the connection is aborted.
    async fn serve(self, client: TcpStream) {
        if let Some(server) = self.dial().await {
            self.pipe(client, server).await;
        }
    }

    /// Connects to the target, giving up if a partition or shutdown comes first.
    async fn dial(&self) -> Option<TcpStream> {
        let connected = tokio::select! {
            connected = TcpStream::connect(self.target) => connected,
            () = self.partitioned() => return None,
            () = self.shut_down() => return None,
        };
        connected.map_err(|e| eprintln!("fault-proxy -> {}: connect failed: {e}", self.target)).ok()
    }

    /// Runs both directions; on an abort or shutdown drops (or resets) both sockets.
    async fn pipe(&self, mut client: TcpStream, mut server: TcpStream) {
        // Nagle would add its own delays on top of the injected ones.
        for stream in [&client, &server] {
            if let Err(e) = stream.set_nodelay(true) {
                eprintln!("fault-proxy -> {}: set_nodelay failed: {e}", self.target);
            }
        }
        let outcome = {
            let (mut client_rd, mut client_wr) = client.split();
            let (mut server_rd, mut server_wr) = server.split();
            let both = async {
                tokio::try_join!(
                    self.direction(&mut client_rd, &mut server_wr),
                    self.direction(&mut server_rd, &mut client_wr),
                )
            };
            tokio::select! {
                outcome = both => outcome.map(|_| ()),
                () = self.shut_down() => Err(Abort::Close),
            }
        };
        if let Err(Abort::Reset) = outcome {
            self.reset(&client);
            self.reset(&server);
        }
    }

    /// Makes dropping `stream` send RST rather than FIN.
    fn reset(&self, stream: &TcpStream) {
        if let Err(e) = stream.set_zero_linger() {
            eprintln!("fault-proxy -> {}: set_zero_linger failed, closing instead: {e}", self.target);
        }
    }

    /// Forwards `from` to `to` through a delay queue, then propagates the close (slowly).
    async fn direction(&self, from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>) -> Result<(), Abort> {
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        let (ending, ()) = tokio::try_join!(self.read_side(from, tx), self.deliver(rx, to))?;
        sleep(self.shared.slow_close()).await;
        match ending {
            Ending::Eof => {
                // The receiver may be gone already; the other direction will notice.
                let _ = to.shutdown().await;
                Ok(())
            }
            Ending::Broken => Err(Abort::Close),
        }
    }

    /// Reads chunks into the queue until the sender closes, the receiver is gone, a partition
    /// starts, or a reset is rolled.
    async fn read_side(&self, from: &mut ReadHalf<'_>, tx: mpsc::Sender<Chunk>) -> Result<Ending, Abort> {
        tokio::select! {
            ending = self.read_chunks(from, &tx) => ending,
            () = self.partitioned() => self.partition_ending(),
            () = tx.closed() => Ok(Ending::Broken),
        }
    }

    /// A partition closes at once unless slow close asks for queued bytes to drain first.
    fn partition_ending(&self) -> Result<Ending, Abort> {
        if self.shared.slow_close().is_zero() { Err(Abort::Close) } else { Ok(Ending::Broken) }
    }

    async fn read_chunks(&self, from: &mut ReadHalf<'_>, tx: &mpsc::Sender<Chunk>) -> Result<Ending, Abort> {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut previous = Instant::now();
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) => return Ok(Ending::Eof),
                Ok(n) => n,
                Err(e) => {
                    eprintln!("fault-proxy -> {}: read failed, closing: {e}", self.target);
                    return Ok(Ending::Broken);
                }
            };
            if self.shared.roll(&self.shared.reset) {
                return Err(Abort::Reset);
            }
            previous = deliver_at(Instant::now(), previous, self.shared.latency(), self.shared.loss_delay());
            let chunk = Chunk { at: previous, bytes: buf[..n].to_vec() };
            if tx.send(chunk).await.is_err() {
                return Ok(Ending::Broken);
            }
        }
    }

    /// Writes each queued chunk when it is due. A failed write ends delivery; dropping the
    /// queue tells the reader, which then closes the connection. Never errs: the `Result` only
    /// lets a reset abort this future through `try_join!`.
    async fn deliver(&self, mut rx: mpsc::Receiver<Chunk>, to: &mut WriteHalf<'_>) -> Result<(), Abort> {
        while let Some(chunk) = rx.recv().await {
            sleep_until(chunk.at).await;
            if let Err(e) = to.write_all(&chunk.bytes).await {
                eprintln!("fault-proxy -> {}: write failed, closing: {e}", self.target);
                return Ok(());
            }
            self.shared.bytes_forwarded.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::UnboundedReceiver;
    use tokio::time::timeout;

    /// Only guards against a broken proxy hanging the test; never a timing assertion.
    const HANG_GUARD: Duration = Duration::from_secs(10);

    /// An echo server on 127.0.0.1:0 that reports each connection's end on the returned
    /// channel (after echoing everything and shutting down its write half).
    async fn echo_server() -> (SocketAddr, UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo server");
        let addr = listener.local_addr().expect("echo server addr");
        let (ended_tx, ended) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let ended_tx = ended_tx.clone();
                tokio::spawn(async move {
                    let (mut rd, mut wr) = stream.split();
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                    let _ = wr.shutdown().await;
                    let _ = ended_tx.send(());
                });
            }
        });
        (addr, ended)
    }

    async fn proxy_to_echo() -> (FaultProxy, UnboundedReceiver<()>) {
        let (echo, ended) = echo_server().await;
        let proxy = FaultProxy::start(echo).await.expect("start proxy");
        (proxy, ended)
    }

    async fn connect(proxy: &FaultProxy) -> TcpStream {
        TcpStream::connect(proxy.addr()).await.expect("connect to proxy")
    }

    /// Writes `msg` and reads the echo back, returning how long the round trip took.
    async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Duration {
        let start = Instant::now();
        stream.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        timeout(HANG_GUARD, stream.read_exact(&mut back)).await.expect("echo in time").expect("read echo");
        assert_eq!(back, msg);
        start.elapsed()
    }

    /// Asserts the peer closed `stream` (EOF or reset) without sending anything more.
    async fn assert_closed(stream: &mut TcpStream) {
        let mut buf = [0u8; 64];
        match timeout(HANG_GUARD, stream.read(&mut buf)).await.expect("close in time") {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("expected a closed connection, got {n} bytes"),
        }
    }

    async fn assert_server_side_ended(ended: &mut UnboundedReceiver<()>) {
        timeout(HANG_GUARD, ended.recv()).await.expect("server side closed in time").expect("echo server alive");
    }

    #[tokio::test]
    async fn forwards_both_ways_and_counts() {
        let (proxy, _ended) = proxy_to_echo().await;
        let mut stream = connect(&proxy).await;
        round_trip(&mut stream, b"hello").await;
        round_trip(&mut stream, b"again").await;
        assert_eq!(proxy.connections(), 1);
        // Exact: the proxy counts in the same poll as its write, before the echo can be read
        // on this single-threaded test runtime.
        assert_eq!(proxy.bytes_forwarded(), 20);
    }

    #[tokio::test]
    async fn half_close_is_forwarded() {
        let (proxy, mut ended) = proxy_to_echo().await;
        let mut stream = connect(&proxy).await;
        stream.write_all(b"bye").await.expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut back = Vec::new();
        timeout(HANG_GUARD, stream.read_to_end(&mut back)).await.expect("eof in time").expect("read");
        assert_eq!(back, b"bye");
        assert_server_side_ended(&mut ended).await;
    }

    #[tokio::test]
    async fn latency_delays_each_direction() {
        let (proxy, _ended) = proxy_to_echo().await;
        let mut stream = connect(&proxy).await;
        round_trip(&mut stream, b"warm").await;
        proxy.set_latency(Duration::from_millis(150));
        // One delay each way.
        assert!(round_trip(&mut stream, b"slow").await >= Duration::from_millis(300));
    }

    #[test]
    fn pipelined_chunks_overlap_their_delays() {
        let t0 = Instant::now();
        let latency = Duration::from_millis(100);
        let first = deliver_at(t0, t0, latency, Duration::ZERO);
        let second = deliver_at(t0 + Duration::from_millis(1), first, latency, Duration::ZERO);
        assert_eq!(first, t0 + latency);
        assert_eq!(second, t0 + Duration::from_millis(101), "the second chunk must not wait a second latency");
    }

    #[test]
    fn a_lost_chunk_holds_back_the_ones_behind_it() {
        let t0 = Instant::now();
        let latency = Duration::from_millis(10);
        let lost = deliver_at(t0, t0, latency, DEFAULT_RETRANSMIT_DELAY);
        let next = deliver_at(t0 + Duration::from_millis(1), lost, latency, Duration::ZERO);
        assert_eq!(next, lost, "order is preserved");
    }

    #[tokio::test]
    async fn loss_adds_the_retransmit_delay() {
        let (proxy, _ended) = proxy_to_echo().await;
        let mut stream = connect(&proxy).await;
        proxy.set_loss(1.0);
        assert!(round_trip(&mut stream, b"lost").await >= 2 * DEFAULT_RETRANSMIT_DELAY);
        proxy.set_retransmit_delay(Duration::from_millis(300));
        assert!(round_trip(&mut stream, b"lost again").await >= Duration::from_millis(600));
    }

    #[tokio::test]
    async fn bulk_transfer_stays_intact_under_latency_and_loss() {
        let (proxy, _ended) = proxy_to_echo().await;
        proxy.set_latency(Duration::from_millis(5));
        proxy.set_loss(0.3);
        proxy.set_retransmit_delay(Duration::from_millis(5));
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut stream = connect(&proxy).await;
        let (mut rd, mut wr) = stream.split();
        let write = async {
            wr.write_all(&data).await.expect("write");
            wr.shutdown().await.expect("shutdown");
        };
        let mut back = Vec::new();
        let read = timeout(HANG_GUARD, rd.read_to_end(&mut back));
        let ((), read) = tokio::join!(write, read);
        read.expect("echo in time").expect("read");
        assert!(back == data, "the echo differs from what was sent");
        assert_eq!(proxy.bytes_forwarded(), 2 * data.len() as u64);
    }

    #[tokio::test]
    async fn partition_closes_existing_and_new_connections() {
        let (proxy, mut ended) = proxy_to_echo().await;
        let mut before = connect(&proxy).await;
        round_trip(&mut before, b"ok").await;

        proxy.set_partitioned(true);
        assert_closed(&mut before).await;
        assert_server_side_ended(&mut ended).await;

        let mut during = connect(&proxy).await;
        let _ = during.write_all(b"anyone?").await; // may already fail: the proxy closed it
        assert_closed(&mut during).await;
        assert_eq!(proxy.connections(), 2);

        proxy.set_partitioned(false);
        let mut after = connect(&proxy).await;
        round_trip(&mut after, b"healed").await;
    }

    #[tokio::test]
    async fn partition_with_slow_close_closes_late() {
        let (proxy, _ended) = proxy_to_echo().await;
        let mut stream = connect(&proxy).await;
        round_trip(&mut stream, b"ok").await;
        proxy.set_slow_close(Duration::from_millis(300));
        let start = Instant::now();
        proxy.set_partitioned(true);
        assert_closed(&mut stream).await;
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn slow_close_delays_the_shutdown_of_the_other_side() {
        let (proxy, _ended) = proxy_to_echo().await;
        proxy.set_slow_close(Duration::from_millis(250));
        let mut stream = connect(&proxy).await;
        let start = Instant::now();
        stream.write_all(b"abc").await.expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut back = Vec::new();
        timeout(HANG_GUARD, stream.read_to_end(&mut back)).await.expect("eof in time").expect("read");
        assert_eq!(back, b"abc", "queued bytes are still delivered");
        // Our close reaches the server 250 ms late, and its close reaches us 250 ms after that.
        assert!(start.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn reset_closes_both_sides() {
        let (proxy, mut ended) = proxy_to_echo().await;
        let mut stream = connect(&proxy).await;
        round_trip(&mut stream, b"ok").await;
        proxy.set_reset_probability(1.0);
        stream.write_all(b"boom").await.expect("write");
        assert_closed(&mut stream).await;
        assert_server_side_ended(&mut ended).await;
    }

    #[tokio::test]
    async fn drop_stops_the_listener_and_closes_connections() {
        let (proxy, mut ended) = proxy_to_echo().await;
        let addr = proxy.addr();
        let mut stream = connect(&proxy).await;
        round_trip(&mut stream, b"ok").await;
        drop(proxy);
        assert_closed(&mut stream).await;
        assert_server_side_ended(&mut ended).await;
        // The listener closes once the accept task notices; poll until connecting is refused.
        let refused = timeout(HANG_GUARD, async {
            while TcpStream::connect(addr).await.is_ok() {
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(refused.is_ok(), "the listener is still accepting after the proxy was dropped");
    }
}
