//! Process-level tests: the real `sluice` binary on a free loopback port with its own temp data
//! dir, driven by real Kafka clients (librdkafka, kcat) and by a raw protocol client where an
//! exact error code or a malformed frame is the point.

mod clients;
mod crash;
mod groups;
mod plugins;
mod protocol;
mod python;
mod security;
mod snapshots;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_tests::{Broker, consumer_config, producer_config};
use tempfile::TempDir;

/// A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files in `dir`
/// (made with the openssl command-line tool).
pub fn self_signed_certificate(dir: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("broker.pem"), dir.join("broker.key"));
    let output = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl (scripts/test installs it)")?;
    if !output.status.success() {
        bail!("openssl failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok((cert, key))
}

/// A broker serving Kafka clients over TLS only, with the certificate made in `dir`.
pub fn start_tls_broker(dir: &std::path::Path) -> Result<(Broker, std::path::PathBuf)> {
    let (cert, key) = self_signed_certificate(dir)?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.join("data"))
        .env("SLUICE_KAFKA__TLS__CERT_FILE", &cert.display().to_string())
        .env("SLUICE_KAFKA__TLS__KEY_FILE", &key.display().to_string())
        .env("SLUICE_KAFKA__AUTO_CREATE_TOPICS", "true");
    broker.start()?;
    Ok((broker, cert))
}

/// A broker on a fresh temp dir, started.
pub fn start_broker() -> Result<(TempDir, Broker)> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"));
    broker.start()?;
    Ok((dir, broker))
}

/// Creates a topic through the Kafka admin API and checks it succeeded.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = sluice_tests::client_config(bootstrap).create()?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = admin.create_topics([&topic], &AdminOptions::new()).await?;
    for r in results {
        r.map_err(|(name, code)| anyhow::anyhow!("creating {name}: {code:?}"))?;
    }
    Ok(())
}

/// One record as a consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Produces `values` (keyed by their index) and returns (value, partition, offset) per ack.
pub async fn produce(config: &ClientConfig, topic: &str, values: &[String]) -> Result<Vec<(String, i32, i64)>> {
    let producer: FutureProducer = config.create()?;
    let sends = values.iter().enumerate().map(|(i, v)| {
        let key = format!("k{i}");
        let producer = &producer;
        async move {
            let delivery = producer
                .send(FutureRecord::to(topic).key(&key).payload(v), Duration::from_secs(30))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("delivery of {v} failed: {e}"))?;
            Ok::<_, anyhow::Error>((v.clone(), delivery.partition, delivery.offset))
        }
    });
    futures::future::try_join_all(sends).await
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived (then
/// a short quiet period, to catch extras) or `limit` passes.
pub fn consume(bootstrap: &str, topic: &str, partitions: i32, expected: usize, limit: Duration) -> Result<Vec<Consumed>> {
    let consumer: BaseConsumer = consumer_config(bootstrap).create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut out = Vec::new();
    let mut quiet_until: Option<Instant> = None;
    while started.elapsed() < limit {
        if out.len() >= expected {
            let until = *quiet_until.get_or_insert_with(|| Instant::now() + Duration::from_millis(500));
            if Instant::now() >= until {
                break;
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Consumed {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
            }),
            Some(Err(e)) => {
                // Transient errors (a broker restarting, a corrupt batch being refused) are
                // retried by librdkafka; only count what arrives.
                eprintln!("consumer error: {e}");
            }
            None => {}
        }
    }
    Ok(out)
}

/// Checks per-partition offsets strictly increase and returns the values grouped by partition.
pub fn by_partition(records: &[Consumed]) -> Result<HashMap<i32, Vec<String>>> {
    let mut last: HashMap<i32, i64> = HashMap::new();
    let mut grouped: HashMap<i32, Vec<String>> = HashMap::new();
    for r in records {
        if let Some(prev) = last.insert(r.partition, r.offset)
            && r.offset <= prev
        {
            bail!("partition {}: offset {} after {}", r.partition, r.offset, prev);
        }
        grouped.entry(r.partition).or_default().push(String::from_utf8(r.value.clone()).context("utf8 value")?);
    }
    Ok(grouped)
}

/// A multi-threaded runtime for tests that mix async clients with blocking consumers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Producer settings for the tests.
pub fn producer(bootstrap: &str) -> ClientConfig {
    producer_config(bootstrap)
}
