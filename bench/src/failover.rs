//! Failover benchmark: starts a three-node cluster, keeps an idempotent acks=all producer
//! writing to a one-partition topic, and repeatedly kills the partition's leader with SIGKILL.
//! For each kill it reports the time from the kill to the next acknowledged write, then
//! restarts the node and lets it catch up. Prints every time and the p50/p99.
//!
//!   sluice-failover --binary target/release/sluice --work /tmp/failover --kills 12

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Debug, Parser)]
struct Args {
    /// The `sluice` binary.
    #[arg(long, default_value = "target/release/sluice")]
    binary: PathBuf,
    /// Directory for the nodes' data and logs (`nN.log`; `RUST_LOG` sets their level).
    #[arg(long)]
    work: PathBuf,
    /// Leader kills to measure.
    #[arg(long, default_value_t = 12)]
    kills: usize,
    /// Steady-state time between kills.
    #[arg(long, default_value_t = 3000)]
    settle_ms: u64,
    /// librdkafka `debug` contexts for the producer (e.g. `eos,msg,broker`), logged to stderr.
    #[arg(long)]
    client_debug: Option<String>,
}

const TOPIC: &str = "failover";

struct Node {
    id: u64,
    kafka_port: u16,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, binary: &PathBuf) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(binary)
            .args(&self.args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// The node id leading partition 0, as a live node reports it.
fn leader(bootstrap: &str) -> Option<u64> {
    let consumer: BaseConsumer = config(bootstrap).create().ok()?;
    let metadata = consumer.fetch_metadata(Some(TOPIC), Duration::from_secs(2)).ok()?;
    let leader = metadata.topics().first()?.partitions().first()?.leader();
    u64::try_from(leader).ok().filter(|l| *l > 0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work)?;
    let rpc: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
    let peers: Vec<String> = rpc.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect();
    let mut nodes = Vec::new();
    for (i, rpc_port) in rpc.iter().enumerate() {
        let kafka_port = free_port()?;
        let args_for = vec![
            "serve".to_string(),
            "--node-id".into(),
            (i + 1).to_string(),
            "--data-dir".into(),
            args.work.join(format!("n{}", i + 1)).display().to_string(),
            "--kafka-addr".into(),
            format!("127.0.0.1:{kafka_port}"),
            "--rpc-addr".into(),
            format!("127.0.0.1:{rpc_port}"),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
            "--peers".into(),
            peers.join(","),
        ];
        let log = args.work.join(format!("n{}.log", i + 1));
        let mut node = Node { id: i as u64 + 1, kafka_port, args: args_for, log, child: None };
        node.start(&args.binary)?;
        nodes.push(node);
    }
    let bootstrap = nodes.iter().map(|n| format!("127.0.0.1:{}", n.kafka_port)).collect::<Vec<_>>().join(",");
    create_topic(&bootstrap).await?;

    let acked = Arc::new(AtomicU64::new(0));
    let last_ack_ns = Arc::new(AtomicU64::new(0));
    let origin = Instant::now();
    let mut producer_config = config(&bootstrap);
    if let Some(debug) = &args.client_debug {
        producer_config.set("debug", debug).set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    let producer: FutureProducer<ClientLog> = producer_config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "60000")
        .set("retry.backoff.ms", "20")
        .set("retry.backoff.max.ms", "100")
        // The node that becomes leader may be the one killed a moment ago: librdkafka's default
        // reconnect backoff (up to 10 s) would measure the client, not the cluster.
        .set("reconnect.backoff.max.ms", "1000")
        .create_with_context(ClientLog { origin })?;
    let writer = {
        let (acked, last_ack_ns) = (Arc::clone(&acked), Arc::clone(&last_ack_ns));
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                let key = i.to_string();
                // One at a time: the next ack after a kill is the first write the new leader took.
                if producer.send(FutureRecord::to(TOPIC).key(&key).payload(&key), Duration::from_secs(60)).await.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                    last_ack_ns.store(origin.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                i += 1;
            }
        })
    };

    let mut times = Vec::new();
    for k in 0..args.kills {
        tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
        let Some(leader_id) = leader(&bootstrap) else { bail!("no leader for {TOPIC} before kill {k}") };
        let node = nodes.iter_mut().find(|n| n.id == leader_id).context("leader is not one of ours")?;
        node.kill9();
        let killed_at = origin.elapsed().as_nanos() as u64;
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
        let deadline = Instant::now() + Duration::from_secs(60);
        while last_ack_ns.load(Ordering::Relaxed) <= killed_at {
            if Instant::now() > deadline {
                bail!("no acknowledged write within 60 s of kill {k}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = Duration::from_nanos(last_ack_ns.load(Ordering::Relaxed) - killed_at);
        println!(
            "kill {k}: node {leader_id} killed at {:.3} s (unix ms {wall}); next acknowledged write after {:.0} ms",
            Duration::from_nanos(killed_at).as_secs_f64(),
            took.as_secs_f64() * 1000.0
        );
        times.push(took);
        node.start(&args.binary)?;
    }
    writer.abort();
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "failover kills={} p50_ms={:.0} p99_ms={:.0} max_ms={:.0} acked_total={}",
        times.len(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        times.last().map_or(0.0, |t| t.as_secs_f64() * 1000.0),
        acked.load(Ordering::Relaxed)
    );
    drop(nodes);
    Ok(())
}

/// Prints librdkafka's own log lines (with `--client-debug`) with the time since start.
struct ClientLog {
    origin: Instant,
}

impl rdkafka::ClientContext for ClientLog {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!("{:>9.3} {fac} {log_message}", self.origin.elapsed().as_secs_f64());
    }
}

impl rdkafka::producer::ProducerContext for ClientLog {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

async fn create_topic(bootstrap: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap).create()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(3));
        let outcome = admin.create_topics([&topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))).await;
        match outcome.as_ref().map(|r| r.first().cloned()) {
            Ok(Some(Ok(_))) => break,
            Ok(Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)))) => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(500)).await,
            _ => bail!("could not create {TOPIC}: {outcome:?}"),
        }
    }
    while leader(bootstrap).is_none() {
        if Instant::now() > deadline {
            bail!("{TOPIC} has no leader");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
