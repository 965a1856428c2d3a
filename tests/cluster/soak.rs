//! Soak: a 3-node cluster for `SLUICE_TEST_SOAK_SECS` (120 by default; `bench/soak.sh` runs 30
//! minutes) under a continuous idempotent acks=all producer, a consumer group whose members
//! come and go, snapshot-trigger and codec rebinds, and a kill -9 of node 2 or 3 every few
//! seconds (each restarted after a pause). It fails on any lost, moved or duplicated
//! acknowledged record, on a consumer group that stops reading while records are written, and
//! on node 1 (never killed) growing its memory or open files beyond a bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_tests::consumer_config;

use crate::control::cli;
use crate::{TOPIC, cluster_with_topic, serial, start_workload, verify};

/// Node 1's resident memory may grow to this multiple of what it was after the warm-up (plus
/// [`RSS_SLACK_BYTES`]): caches fill, a leak does not stop.
const RSS_GROWTH: u64 = 2;
const RSS_SLACK_BYTES: u64 = 256 << 20;
/// Open files node 1 may gain over the run (segments roll, connections come and go).
const FILES_SLACK: usize = 128;
/// The longest the consumer group may go without reading a record while the producer is
/// acknowledged: rebalances and a killed coordinator take seconds, not this.
const STUCK: Duration = Duration::from_secs(45);

/// Resident memory and open files of a process, from /proc.
fn resources(pid: u32) -> Result<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    let files = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((kib * 1024, files))
}

/// One member of the consumer group, polling until told to leave; counts what it reads.
fn member(bootstrap: String, read: Arc<AtomicU64>, leave: Arc<AtomicBool>) -> JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = consumer_config(&bootstrap)
            .set("group.id", "soakers")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "true")
            .set("auto.commit.interval.ms", "500")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()?;
        consumer.subscribe(&[TOPIC])?;
        while !leave.load(Ordering::SeqCst) {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                read.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    })
}

#[test]
fn soak_under_kills_rebalances_and_rebinds() -> Result<()> {
    let _serial = serial();
    let secs: u64 = std::env::var("SLUICE_TEST_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    let mut cluster = cluster_with_topic()?;
    let workload = start_workload(&cluster, "soak")?;
    let read = Arc::new(AtomicU64::new(0));
    let mut members: Vec<(Arc<AtomicBool>, JoinHandle<Result<()>>)> = Vec::new();
    for _ in 0..2 {
        let leave = Arc::new(AtomicBool::new(false));
        members.push((Arc::clone(&leave), member(cluster.bootstrap(), Arc::clone(&read), leave)));
    }
    sleep(Duration::from_secs(10));
    let pid = cluster.node(0).pid().ok_or_else(|| anyhow::anyhow!("node 1 is not running"))?;
    let (rss_start, files_start) = resources(pid)?;
    let started = Instant::now();
    let (mut round, mut kills, mut rebinds, mut rebalances) = (0u64, 0, 0, 0);
    let (mut last_read, mut last_progress) = (read.load(Ordering::SeqCst), Instant::now());
    while started.elapsed() < Duration::from_secs(secs) {
        round += 1;
        // A kill -9 of node 2 or 3, restarted after a pause.
        let victim = 1 + (round % 2) as usize;
        cluster.kill9(victim);
        kills += 1;
        sleep(Duration::from_secs(2));
        cluster.restart(victim)?;
        // A rebind of the cluster's snapshot trigger and codec, through node 1.
        let (trigger, codec) = if round % 2 == 0 { (["entries-or-age", "entries=500"], "lz4") } else { (["log-bytes", "bytes=1048576"], "zstd") };
        if cli(&cluster, 0, &["plugin", "bind", "--kind", "trigger", trigger[0], "--param", trigger[1]]).is_ok() && cli(&cluster, 0, &["plugin", "bind", "--kind", "codec", codec]).is_ok() {
            rebinds += 1;
        }
        // Every third round a member leaves and a new one joins: the group rebalances.
        if round % 3 == 0 {
            let (leave, handle) = members.remove(0);
            leave.store(true, Ordering::SeqCst);
            handle.join().map_err(|_| anyhow::anyhow!("a group member panicked"))??;
            let leave = Arc::new(AtomicBool::new(false));
            members.push((Arc::clone(&leave), member(cluster.bootstrap(), Arc::clone(&read), leave)));
            rebalances += 1;
        }
        sleep(Duration::from_secs(3));
        let now_read = read.load(Ordering::SeqCst);
        if now_read > last_read {
            (last_read, last_progress) = (now_read, Instant::now());
        }
        ensure!(last_progress.elapsed() < STUCK, "the consumer group read nothing for {:?} (round {round}, {now_read} records read)", last_progress.elapsed());
        ensure!(cluster.is_live(0), "node 1 exited");
        // A sample every 10 rounds (about a minute) shows whether memory levels off.
        if round % 10 == 0 {
            let (rss, files) = resources(pid)?;
            eprintln!("[soak] {} s: node 1 rss {} MiB, open files {files}", started.elapsed().as_secs(), rss >> 20);
        }
    }
    let (rss_end, files_end) = resources(pid)?;
    for (leave, handle) in members {
        leave.store(true, Ordering::SeqCst);
        handle.join().map_err(|_| anyhow::anyhow!("a group member panicked"))??;
    }
    let outcomes = workload.stop()?;
    let (verdict, _) = verify("soak", &cluster, &outcomes, &[])?;
    eprintln!(
        "[soak] {secs} s: {kills} kills, {rebinds} rebinds, {rebalances} rebalances, {} records acknowledged, {} read by the group; node 1 rss {} -> {} MiB, open files {files_start} -> {files_end}",
        verdict.acked,
        read.load(Ordering::SeqCst),
        rss_start >> 20,
        rss_end >> 20
    );
    ensure!(rss_end <= rss_start * RSS_GROWTH + RSS_SLACK_BYTES, "node 1's memory grew from {} to {} MiB", rss_start >> 20, rss_end >> 20);
    ensure!(files_end <= files_start + FILES_SLACK, "node 1's open files grew from {files_start} to {files_end}");
    ensure!(cluster.unexpected_exits().is_empty(), "nodes exited unexpectedly");
    Ok(())
}
