//! Shared harness for Sluice's integration tests: real `sluice` processes on free loopback ports
//! with their own temp data dirs, real Kafka clients (librdkafka through `rdkafka`), and a raw
//! protocol client for asserting exact error codes.
//!
//! Every process a test starts is killed when its handle drops, so a failing test leaves none
//! behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use rdkafka::ClientConfig;

/// Paths of the plugin components built for the tests (see `build.rs`).
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/gen.rs"));
}

/// A fault-injecting TCP proxy to put between cluster nodes.
pub mod proxy;

/// A 3-node cluster of real processes with a fault proxy on every directed link.
pub mod cluster;

/// Exact Kafka requests for the raw client.
pub mod raw;

/// Certificates for TLS tests.
pub mod certs;

/// The segment files (`*.log`) of the partition log in `dir`, oldest first.
pub fn log_segments(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".log")).collect();
    names.sort();
    Ok(names)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A `sluice serve` process.
pub struct Broker {
    binary: PathBuf,
    data_dir: PathBuf,
    kafka_port: u16,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    child: Option<Child>,
    metrics_addr: Option<SocketAddr>,
    rpc_addr: Option<SocketAddr>,
    /// Port for `--rpc-addr`; 0 picks a free one at every start.
    rpc_port: u16,
    paused: bool,
}

impl Broker {
    /// Describes a broker on `data_dir` with a fresh Kafka port; call [`Broker::start`].
    pub fn new(binary: impl Into<PathBuf>, data_dir: &Path) -> Broker {
        Broker {
            binary: binary.into(),
            data_dir: data_dir.to_path_buf(),
            kafka_port: free_port(),
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            child: None,
            metrics_addr: None,
            rpc_addr: None,
            rpc_port: 0,
            paused: false,
        }
    }

    /// Binds `--rpc-addr` to this fixed port (every start) instead of a free one, so that peers
    /// can be told where it is before it starts.
    pub fn rpc_port(mut self, port: u16) -> Broker {
        self.rpc_port = port;
        self
    }

    /// `--node-id`.
    pub fn node_id(self, id: i32) -> Broker {
        self.arg("--node-id").arg(&id.to_string())
    }

    /// `--peers`: `id@host:port,...`, this node included.
    pub fn peers(self, peers: &str) -> Broker {
        self.arg("--peers").arg(peers)
    }

    /// Adds a command-line argument for every start.
    pub fn arg(mut self, arg: &str) -> Broker {
        self.extra_args.push(arg.to_string());
        self
    }

    /// Adds an environment variable (e.g. `SLUICE_LOG__SEGMENT_BYTES`) for every start.
    pub fn env(mut self, key: &str, value: &str) -> Broker {
        self.extra_env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the process and waits until it reports its listener.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("broker already running");
        }
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--kafka-addr")
            .arg(format!("127.0.0.1:{}", self.kafka_port))
            .arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .arg("--rpc-addr")
            .arg(format!("127.0.0.1:{}", self.rpc_port))
            .args(&self.extra_args)
            .env("RUST_LOG", std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The broker reads every SLUICE_* variable as configuration and refuses unknown ones:
        // keep the harness's own (SLUICE_TEST_LOG...) from it.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SLUICE_TEST_") {
                command.env_remove(k);
            }
        }
        for (k, v) in &self.extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().with_context(|| format!("spawning {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = ready_tx.send(line);
            }
            // Keep draining so the broker never blocks on a full pipe.
            for _ in lines {}
        });
        self.child = Some(child);
        self.paused = false;
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("kafka listening on") => {
                self.metrics_addr = line.rsplit("metrics on ").next().and_then(|a| a.trim().parse().ok());
                self.rpc_addr = line.split("admin on ").nth(1).and_then(|a| a.split(',').next()).and_then(|a| a.trim().parse().ok());
                Ok(())
            }
            Ok(line) => bail!("unexpected first line from sluice: {line}"),
            Err(_) => {
                let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                bail!("sluice did not report ready (exit status: {status:?})")
            }
        }
    }

    /// `host:port` of the Kafka listener.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    /// The Kafka listener's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.kafka_port))
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The admin API address (`--rpc-addr` as bound), once started.
    pub fn rpc_addr(&self) -> Option<SocketAddr> {
        self.rpc_addr
    }

    /// The text of the broker's Prometheus endpoint.
    pub fn metrics(&self) -> Result<String> {
        let addr = self.metrics_addr.context("broker not started")?;
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: sluice\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        if !response.starts_with("HTTP/1.1 200") {
            bail!("metrics endpoint answered: {}", response.lines().next().unwrap_or(""));
        }
        Ok(response)
    }

    /// The value of one metric line (`name{labels}`, as exposed), if present.
    pub fn metric(&self, series: &str) -> Result<Option<f64>> {
        Ok(self.metrics()?.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is stopped by [`Broker::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// SIGSTOP: the process freezes mid-flight; the kernel still accepts connections and
    /// buffers bytes for it.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&mut self) -> Result<()> {
        self.signal(libc::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        let Some(child) = self.child.as_ref() else { bail!("broker not running") };
        // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
        if unsafe { libc::kill(child.id() as libc::pid_t, signal) } != 0 {
            bail!("kill({}, {signal}): {}", child.id(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGKILL: no flush, no checkpoint, nothing. (Also ends a paused process.)
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> Result<bool> {
        let Some(mut child) = self.child.take() else { return Ok(true) };
        // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            // A stopped process only sees the SIGTERM once it runs again.
            if self.paused {
                libc::kill(child.id() as libc::pid_t, libc::SIGCONT);
            }
        }
        self.paused = false;
        Ok(child.wait()?.success())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// librdkafka settings every test client shares.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "3");
    config
}

/// A producer config: acks=all, bounded delivery timeout.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = client_config(bootstrap);
    config.set("acks", "all").set("message.timeout.ms", "30000").set("linger.ms", "5");
    config
}

/// A consumer config for manual assignment (no consumer group).
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = client_config(bootstrap);
    config
        .set("group.id", "sluice-tests")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100");
    config
}

/// A blocking Kafka client that sends one request at a time and returns the decoded response,
/// for checking exact error codes and for feeding the broker bytes no real client would send.
pub struct RawClient {
    stream: TcpStream,
    correlation_id: i32,
}

impl RawClient {
    /// Connects to a broker.
    pub fn connect(addr: SocketAddr) -> Result<RawClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(RawClient { stream, correlation_id: 0 })
    }

    /// Sends `request` at `version` and decodes the response.
    pub fn send<R: Request>(&mut self, version: i16, request: &R) -> Result<R::Response> {
        self.send_only(version, request)?;
        self.receive::<R>(version, self.correlation_id)
    }

    /// Reads the next response, which must be the one to the request of type `R` sent at
    /// `version` with `correlation_id` (see [`RawClient::last_correlation_id`]).
    pub fn receive<R: Request>(&mut self, version: i16, correlation_id: i32) -> Result<R::Response> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("unknown api key"))?;
        let mut response = self.read_frame()?;
        let response_header = ResponseHeader::decode(&mut response, api.response_header_version(version))?;
        if response_header.correlation_id != correlation_id {
            bail!("correlation id {} != {}", response_header.correlation_id, correlation_id);
        }
        let decoded = R::Response::decode(&mut response, version)?;
        if response.has_remaining() {
            bail!("{} trailing bytes in the response", response.remaining());
        }
        Ok(decoded)
    }

    /// Sends `request` at `version` without reading a response (an acks=0 produce gets none).
    pub fn send_only<R: Request>(&mut self, version: i16, request: &R) -> Result<ApiKey> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("unknown api key"))?;
        self.correlation_id += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = self.correlation_id;
        header.client_id = Some(StrBytes::from_static_str("sluice-raw-test"));
        let mut body = BytesMut::new();
        header.encode(&mut body, api.request_header_version(version))?;
        request.encode(&mut body, version)?;
        self.write_frame(&body)?;
        Ok(api)
    }

    /// The correlation id of the request sent last.
    pub fn last_correlation_id(&self) -> i32 {
        self.correlation_id
    }

    /// Writes a size-prefixed frame.
    pub fn write_frame(&mut self, body: &[u8]) -> Result<()> {
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.put_slice(body);
        self.write_raw(&frame)
    }

    /// Writes bytes as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Reads one size-prefixed frame.
    pub fn read_frame(&mut self) -> Result<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = i32::from_be_bytes(size);
        if !(0..=256 << 20).contains(&size) {
            bail!("response size {size} is implausible");
        }
        let mut body = vec![0u8; size as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    /// Everything the broker sends until it closes the connection (EOF or reset); an error if it
    /// keeps it open past the read timeout.
    pub fn read_until_closed(&mut self) -> Result<Vec<u8>> {
        let mut got = Vec::new();
        match self.stream.read_to_end(&mut got) {
            Ok(_) => Ok(got),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => bail!("still open after the read timeout"),
            Err(_) => Ok(got),
        }
    }

    /// Authenticates with SASL PLAIN (SaslHandshake v1, SaslAuthenticate v2); the error code of
    /// the failed step, if one failed.
    pub fn authenticate_plain(&mut self, user: &str, password: &str) -> Result<i16> {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let mut handshake = SaslHandshakeRequest::default();
        handshake.mechanism = StrBytes::from_static_str("PLAIN");
        let answer = self.send(1, &handshake)?;
        if answer.error_code != 0 {
            return Ok(answer.error_code);
        }
        let mut authenticate = SaslAuthenticateRequest::default();
        authenticate.auth_bytes = Bytes::from(format!("\0{user}\0{password}"));
        Ok(self.send(2, &authenticate)?.error_code)
    }

    /// Whether the broker closed this connection (EOF or reset) within the read timeout.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}
