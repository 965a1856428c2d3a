//! A continuous idempotent acks=all producer that records every outcome.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::future::join_all;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sluice_tests::producer_config;

/// Concurrent sends per partition per round.
const ROUND: usize = 16;

/// An acknowledged record.
#[derive(Debug, Clone)]
pub struct Ack {
    pub value: String,
    pub partition: i32,
    pub offset: i64,
    /// When the send was issued (not when it was acknowledged).
    pub sent: Instant,
}

/// Everything the producer learned.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    pub acked: Vec<Ack>,
    /// Failed or timed out: indeterminate, may or may not be in the log.
    pub failed: Vec<String>,
    /// Failure reasons and how often each happened.
    pub errors: BTreeMap<String, usize>,
    /// A fatal producer error, if librdkafka raised one.
    pub fatal: Option<String>,
}

/// Producing in the background until [`Workload::stop`].
pub struct Workload {
    tag: String,
    spot_checks: std::sync::atomic::AtomicU64,
    outcomes: Arc<Mutex<Outcomes>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Workload {
    /// Starts one loop per partition, each sending rounds of [`ROUND`] unique values
    /// (`{tag}-p{partition}-{round}-{i}`) to its partition and waiting for all of them.
    pub fn start(bootstrap: &str, topic: &str, partitions: i32, tag: &str) -> Workload {
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (bootstrap, topic, tag) = (bootstrap.to_string(), topic.to_string(), tag.to_string());
        let thread = {
            let (outcomes, stop) = (Arc::clone(&outcomes), Arc::clone(&stop));
            let tag = tag.clone();
            std::thread::spawn(move || -> Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async {
                    let mut config = producer_config(&bootstrap);
                    // librdkafka's own trace, for investigating a failure: e.g. broker,topic,msg.
                    if let Ok(debug) = std::env::var("SLUICE_TEST_RDKAFKA_DEBUG") {
                        config.set("debug", &debug).set_log_level(RDKafkaLogLevel::Debug);
                    }
                    let producer: FutureProducer<Trace> = config
                        .set("enable.idempotence", "true")
                        .set("message.timeout.ms", "20000")
                        .set("linger.ms", "5")
                        // A leader that is stopped (SIGSTOP) keeps accepting connections and
                        // never answers. librdkafka learns the new leader from the periodic
                        // metadata refresh (every second here, not every 5 minutes), but an
                        // idempotent producer first waits for its requests in flight to the old
                        // one to end: time them out after 5 s (socket.timeout.ms, 60 s by
                        // default, else bounded by message.timeout.ms) and retry them there.
                        .set("request.timeout.ms", "5000")
                        .set("socket.timeout.ms", "5000")
                        .set("topic.metadata.refresh.interval.ms", "1000")
                        .set("socket.connection.setup.timeout.ms", "5000")
                        // Connect to every node, not just the one librdkafka bootstrapped from: a
                        // client whose only connection is to a node cut off from the majority
                        // asks it alone for metadata, is told the partitions have no leader, and
                        // never learns the new leaders while the partition lasts.
                        .set("enable.sparse.connections", "false")
                        .create_with_context(Trace { on: std::env::var_os("SLUICE_TEST_RDKAFKA_DEBUG").is_some() })?;
                    let loops = (0..partitions).map(|p| produce_partition(&producer, &topic, p, &tag, &outcomes, &stop));
                    join_all(loops).await;
                    if let Some((code, reason)) = producer.client().fatal_error() {
                        outcomes.lock().unwrap().fatal = Some(format!("{code:?}: {reason}"));
                    }
                    // Every send has resolved already; nothing is left to flush.
                    let _ = producer.flush(Duration::from_secs(5));
                    Ok(())
                })
            })
        };
        Workload { tag, spot_checks: Default::default(), outcomes, stop, thread: Some(thread) }
    }

    /// Acks so far of sends issued at or after `since`, on `partition` (or any).
    pub fn acked_since(&self, since: Instant, partition: Option<i32>) -> usize {
        let outcomes = self.outcomes.lock().unwrap();
        outcomes.acked.iter().filter(|a| a.sent >= since && partition.is_none_or(|p| a.partition == p)).count()
    }

    /// Sends `n` values to `partition` with a new producer bootstrapped to `bootstrap` (one
    /// that has no connection stuck on a failed node), recording the outcomes with the rest;
    /// returns how long until all were acknowledged, or an error if any failed.
    pub fn spot_check(&self, bootstrap: &str, topic: &str, partition: i32, n: usize) -> Result<Duration> {
        let started = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let producer: FutureProducer = producer_config(bootstrap).set("enable.idempotence", "true").set("message.timeout.ms", "20000").create()?;
        let check = self.spot_checks.fetch_add(1, Ordering::SeqCst);
        let values: Vec<String> = (0..n).map(|i| format!("{}-spot{check}-p{partition}-{i:03}", self.tag)).collect();
        let results = rt.block_on(join_all(values.iter().map(|v| {
            producer.send(FutureRecord::<str, str>::to(topic).partition(partition).key(v.as_str()).payload(v.as_str()), Duration::from_secs(5))
        })));
        let mut o = self.outcomes.lock().unwrap();
        let mut failures = Vec::new();
        for (value, result) in values.into_iter().zip(results) {
            match result {
                Ok(d) => o.acked.push(Ack { value, partition: d.partition, offset: d.offset, sent: started }),
                Err((e, _)) => {
                    failures.push(e.to_string());
                    o.failed.push(value);
                }
            }
        }
        if !failures.is_empty() {
            bail!("{} of {n} spot-check writes to partition {partition} failed: {:?}", failures.len(), failures.first());
        }
        Ok(started.elapsed())
    }

    /// Acks so far.
    pub fn acked(&self) -> usize {
        self.outcomes.lock().unwrap().acked.len()
    }

    /// Waits until `n` sends issued at or after `since` (to `partition`, or any) were
    /// acknowledged; returns how long that took from `since`.
    pub fn wait_acked_since(&self, since: Instant, partition: Option<i32>, n: usize, limit: Duration) -> Result<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.acked_since(since, partition);
            if got >= n {
                return Ok(since.elapsed());
            }
            if Instant::now() >= deadline {
                let o = self.outcomes.lock().unwrap();
                bail!(
                    "only {got}/{n} acks (partition {partition:?}) for sends since the mark after {limit:?}; \
                     totals: {} acked, {} failed, errors {:?}",
                    o.acked.len(),
                    o.failed.len(),
                    o.errors
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops sending, waits for every send in flight to resolve, and returns the outcomes.
    pub fn stop(mut self) -> Result<Outcomes> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("stopped once");
        match thread.join() {
            Ok(r) => r?,
            Err(_) => bail!("the producer thread panicked"),
        }
        Ok(self.outcomes.lock().unwrap().clone())
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn produce_partition(producer: &FutureProducer<Trace>, topic: &str, partition: i32, tag: &str, outcomes: &Mutex<Outcomes>, stop: &AtomicBool) {
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let sent = Instant::now();
        let values: Vec<String> = (0..ROUND).map(|i| format!("{tag}-p{partition}-{round:06}-{i:02}")).collect();
        let results = join_all(values.iter().map(|v| {
            producer.send(FutureRecord::<str, str>::to(topic).partition(partition).key(v.as_str()).payload(v.as_str()), Duration::from_secs(5))
        }))
        .await;
        let mut failures = 0;
        {
            let mut o = outcomes.lock().unwrap();
            for (value, result) in values.into_iter().zip(results) {
                match result {
                    Ok(d) => o.acked.push(Ack { value, partition: d.partition, offset: d.offset, sent }),
                    Err((e, _)) => {
                        failures += 1;
                        *o.errors.entry(e.to_string()).or_default() += 1;
                        o.failed.push(value);
                    }
                }
            }
        }
        if failures == ROUND {
            // Everything failed at once (e.g. a fatal producer error): do not spin.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        round += 1;
    }
}

/// Prints librdkafka's log and errors to stderr when SLUICE_TEST_RDKAFKA_DEBUG is set.
pub struct Trace {
    on: bool,
}

impl ClientContext for Trace {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if self.on {
            eprintln!("{} rdkafka {level:?} {fac}: {log_message}", now());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.on {
            eprintln!("{} rdkafka error {error}: {reason}", now());
        }
    }
}

fn now() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{:02}:{:02}:{:02}.{:03}", t.as_secs() / 3600 % 24, t.as_secs() / 60 % 60, t.as_secs() % 60, t.subsec_millis())
}
