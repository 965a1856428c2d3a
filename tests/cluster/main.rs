//! Cluster fault tests: three real `sluice serve` processes replicating every partition, a
//! fault proxy on every directed Raft link, and an idempotent acks=all producer writing all the
//! time. Each scenario injects one fault (kill -9, SIGSTOP, isolation, loss, latency, a full
//! outage), heals it, then reads every partition back and checks that no acknowledged record
//! was lost or moved, nothing was duplicated, offsets only grow, and nothing was invented.
//!
//! Each test runs three processes on a small machine, so the tests take turns (see
//! [`serial`]).

mod control;
mod faults;
mod peers;
mod security;
mod snapshots;
mod soak;
mod workload;

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use sluice_tests::cluster::TestCluster;
use sluice_tests::{client_config, consumer_config};

use workload::{Outcomes, Workload};

pub const TOPIC: &str = "events";
pub const PARTITIONS: i32 = 3;

/// Generous: only guards against a hang, never a performance threshold.
pub const PATIENCE: Duration = Duration::from_secs(60);

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Holds the lock that lets one cluster test run at a time in this binary.
pub fn serial() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh 3-node cluster with [`TOPIC`] (3 partitions, RF 3) created and every partition led.
pub fn cluster_with_topic() -> Result<TestCluster> {
    let started = Instant::now();
    let mut cluster = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, &[])?;
    let ready = create_topic(&cluster, TOPIC, PARTITIONS)
        .and_then(|()| (0..PARTITIONS).try_for_each(|p| cluster.wait_for_leader(TOPIC, p, None, PATIENCE).map(|_| ())));
    if let Err(e) = ready {
        let exited = cluster.unexpected_exits();
        return Err(if exited.is_empty() { e } else { e.context(format!("nodes {exited:?} exited although the test did not stop them")) });
    }
    eprintln!("cluster up with {TOPIC} led on every partition after {:?}", started.elapsed());
    Ok(cluster)
}

/// Creates `topic` with replication factor 3 through the admin API, retrying while the
/// cluster is still electing its metadata leader.
pub fn create_topic(cluster: &TestCluster, topic: &str, partitions: i32) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    let admin: AdminClient<DefaultClientContext> = client_config(&cluster.bootstrap()).create()?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(3));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    loop {
        let outcome = match futures::executor::block_on(admin.create_topics([&new_topic], &options)) {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => return Ok(()),
                Some(Err((_, code))) => format!("{code:?}"),
                None => "no result".to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("creating {topic}: {outcome}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One record as read back.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
}

/// Reads every partition of `topic` from the beginning up to the high watermark it has once
/// the producer stopped, from the live nodes.
pub fn read_all(cluster: &TestCluster, topic: &str, partitions: i32) -> Result<(Vec<Read>, Vec<i64>)> {
    let deadline = Instant::now() + PATIENCE;
    let mut high = Vec::new();
    for p in 0..partitions {
        loop {
            // A new client each time: librdkafka keeps a partition it was told has no leader
            // as unknown until its next periodic metadata refresh.
            let consumer: BaseConsumer = consumer_config(&cluster.live_bootstrap()).create()?;
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                Ok((_, h)) => {
                    high.push(h);
                    break;
                }
                Err(e) if Instant::now() < deadline => eprintln!("watermarks of {topic}/{p}: {e}, retrying"),
                Err(e) => return Err(e).context(format!("watermarks of {topic}/{p}")),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let consumer: BaseConsumer = consumer_config(&cluster.live_bootstrap()).create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut out = Vec::new();
    let mut next = vec![0i64; partitions as usize];
    let reached = |next: &[i64]| next.iter().zip(&high).all(|(n, h)| n >= h);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !reached(&next) {
        if Instant::now() >= deadline {
            bail!("read up to {next:?} of high watermarks {high:?} before giving up");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next[m.partition() as usize] = m.offset() + 1;
                let value = String::from_utf8(m.payload().unwrap_or_default().to_vec()).context("utf8 value")?;
                out.push(Read { partition: m.partition(), offset: m.offset(), value });
            }
            Some(Err(e)) => eprintln!("consumer error (retried): {e}"),
            None => {}
        }
    }
    // Anything past the watermarks would be written after the producer stopped: catch it too.
    let quiet = Instant::now() + Duration::from_secs(1);
    while Instant::now() < quiet {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let value = String::from_utf8(m.payload().unwrap_or_default().to_vec()).context("utf8 value")?;
            out.push(Read { partition: m.partition(), offset: m.offset(), value });
        }
    }
    Ok((out, high))
}

/// What reading everything back found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub acked: usize,
    pub failed: usize,
    pub read: usize,
    /// Acknowledged values not in the log at all.
    pub lost: usize,
    /// Acknowledged values found, but not at the partition and offset acknowledged.
    pub moved: usize,
    pub duplicates: usize,
    /// Values read that the test never sent.
    pub foreign: usize,
    /// Failed (indeterminate) values that made it to the log anyway.
    pub failed_but_written: usize,
    /// Offsets that did not increase within a partition.
    pub out_of_order: usize,
    /// Offsets skipped (informational: no-op entries take no offsets, so expect 0).
    pub gaps: usize,
}

/// Reads everything back and checks it against what the producer learned; `also_sent` are
/// values sent outside the workload whose outcome is indeterminate. Prints the counts and
/// fails on any lost, moved, duplicated, reordered or invented record.
pub fn verify(label: &str, cluster: &TestCluster, outcomes: &Outcomes, also_sent: &[String]) -> Result<(Verdict, Vec<Read>)> {
    let (records, high) = read_all(cluster, TOPIC, PARTITIONS)?;
    let mut v = Verdict { acked: outcomes.acked.len(), failed: outcomes.failed.len(), read: records.len(), ..Verdict::default() };
    let mut last: HashMap<i32, i64> = HashMap::new();
    let mut found: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for r in &records {
        if let Some(prev) = last.insert(r.partition, r.offset) {
            if r.offset <= prev {
                v.out_of_order += 1;
                eprintln!("[{label}] partition {}: offset {} after {}", r.partition, r.offset, prev);
            } else {
                v.gaps += (r.offset - prev - 1) as usize;
            }
        }
        found.entry(r.value.as_str()).or_default().push((r.partition, r.offset));
    }
    for (value, places) in &found {
        if places.len() > 1 {
            v.duplicates += places.len() - 1;
            if v.duplicates <= 10 {
                eprintln!("[{label}] duplicate {value} at {places:?}");
            }
        }
    }
    for a in &outcomes.acked {
        match found.get(a.value.as_str()) {
            None => {
                v.lost += 1;
                if v.lost <= 10 {
                    eprintln!("[{label}] LOST acknowledged {} (partition {}, offset {})", a.value, a.partition, a.offset);
                }
            }
            Some(places) if !places.contains(&(a.partition, a.offset)) => {
                v.moved += 1;
                if v.moved <= 10 {
                    eprintln!("[{label}] acknowledged {} at {}/{} but found at {places:?}", a.value, a.partition, a.offset);
                }
            }
            Some(_) => {}
        }
    }
    let acked: HashSet<&str> = outcomes.acked.iter().map(|a| a.value.as_str()).collect();
    let failed: HashSet<&str> = outcomes.failed.iter().chain(also_sent).map(String::as_str).collect();
    for value in found.keys() {
        if failed.contains(value) {
            v.failed_but_written += 1;
        } else if !acked.contains(value) {
            v.foreign += 1;
            if v.foreign <= 10 {
                eprintln!("[{label}] read {value}, which the test never sent");
            }
        }
    }
    eprintln!(
        "[{label}] acked={} failed={} read={} | lost={} moved={} duplicates={} foreign={} out_of_order={} \
         failed_but_written={} gaps={} | high watermarks {high:?} | errors {:?} fatal {:?}",
        v.acked, v.failed, v.read, v.lost, v.moved, v.duplicates, v.foreign, v.out_of_order, v.failed_but_written, v.gaps,
        outcomes.errors, outcomes.fatal
    );
    ensure!(v.acked > 0, "[{label}] nothing was acknowledged");
    ensure!(v.lost == 0, "[{label}] {} acknowledged records lost", v.lost);
    ensure!(v.moved == 0, "[{label}] {} acknowledged records not at their acknowledged offset", v.moved);
    ensure!(v.duplicates == 0, "[{label}] {} duplicates", v.duplicates);
    ensure!(v.out_of_order == 0, "[{label}] {} offsets out of order", v.out_of_order);
    ensure!(v.foreign == 0, "[{label}] {} records the test never sent", v.foreign);
    Ok((v, records))
}

/// Starts the producer and waits until it is writing to every partition.
pub fn start_workload(cluster: &TestCluster, tag: &str) -> Result<Workload> {
    let workload = Workload::start(&cluster.bootstrap(), TOPIC, PARTITIONS, tag);
    let since = Instant::now() - Duration::from_secs(3600);
    for p in 0..PARTITIONS {
        workload.wait_acked_since(since, Some(p), 100, PATIENCE)?;
    }
    Ok(workload)
}

/// Waits until writes sent from `since` on were acknowledged on every partition.
pub fn wait_all_partitions_acked(workload: &Workload, since: Instant, what: &str) -> Result<()> {
    for p in 0..PARTITIONS {
        let took = workload.wait_acked_since(since, Some(p), 100, PATIENCE).with_context(|| format!("{what}: partition {p}"))?;
        eprintln!("{what}: partition {p} had 100 acks of new writes after {took:?}");
    }
    Ok(())
}
