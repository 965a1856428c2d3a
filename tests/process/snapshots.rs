//! Snapshots on a live node: the bound snapshot trigger decides when the metadata group is
//! snapshotted, and swapping it takes effect without a restart; a trigger that loops is
//! stopped at its deadline, quarantined, and the built-in thresholds apply instead.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use sluice_tests::Broker;

use crate::{create_topic, runtime};

/// Runs `sluice <args>` against the broker's admin API; stdout, or the error output.
fn sluice(broker: &Broker, args: &[&str]) -> Result<String> {
    let rpc = broker.rpc_addr().expect("broker started").to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice")).args(&args[..1]).args(["--rpc-addr", &rpc]).args(&args[1..]).output()?;
    ensure!(output.status.success(), "sluice {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

/// Indexes of the metadata group's snapshots, oldest first.
fn snapshot_indexes(broker: &Broker) -> Result<Vec<u64>> {
    let table = sluice(broker, &["snapshot", "list", "--group", "0"])?;
    Ok(table.lines().skip(1).filter_map(|l| l.split_whitespace().nth(3)?.parse().ok()).collect())
}

/// One metadata entry (a new topic), then time for the trigger to be asked a few times.
fn metadata_change(broker: &Broker, topic: &str) -> Result<()> {
    runtime().block_on(create_topic(&broker.bootstrap(), topic, 1, &[]))?;
    std::thread::sleep(Duration::from_millis(400));
    Ok(())
}

fn metric(broker: &Broker, series: &str) -> Result<f64> {
    Ok(broker.metric(series)?.unwrap_or(0.0))
}

#[test]
fn snapshot_triggers_swap_on_a_live_node_and_a_looping_one_is_contained() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"))
        .env("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "100")
        .env("SLUICE_SNAPSHOT__RETAIN", "100")
        .env("SLUICE_PLUGINS__CALL_TIMEOUT_MS", "500");
    broker.start()?;
    let taken = "sluice_snapshots_taken_total{kind=\"metadata\",node=\"1\"}";

    // entries-or-age every 4 entries: the bind is one entry, each topic another.
    sluice(&broker, &["plugin", "bind", "--kind", "trigger", "entries-or-age", "--param", "entries=4"])?;
    for i in 0..12 {
        metadata_change(&broker, &format!("a{i}"))?;
    }
    let first = snapshot_indexes(&broker)?;
    ensure!(first.len() >= 3, "snapshots every 4 entries: {first:?}");
    ensure!(first.windows(2).all(|w| w[1] - w[0] == 4), "not 4 entries apart: {first:?}");
    let taken_first = metric(&broker, taken)?;
    ensure!(taken_first == first.len() as f64, "metric {taken_first} for {first:?}");

    // log-bytes with a threshold the log never reaches: no snapshot, however many entries.
    sluice(&broker, &["plugin", "bind", "--kind", "trigger", "log-bytes", "--param", "bytes=1000000000000"])?;
    for i in 0..6 {
        metadata_change(&broker, &format!("b{i}"))?;
    }
    ensure!(snapshot_indexes(&broker)? == first, "log-bytes (unreached) snapshotted anyway");
    // Rebound with a reached threshold: every new entry is snapshotted at the next ask.
    sluice(&broker, &["plugin", "bind", "--kind", "trigger", "log-bytes", "--param", "bytes=1"])?;
    std::thread::sleep(Duration::from_millis(400));
    for i in 0..3 {
        metadata_change(&broker, &format!("c{i}"))?;
    }
    let second = snapshot_indexes(&broker)?;
    let new: Vec<u64> = second[first.len()..].to_vec();
    ensure!(new.len() == 4 && new.windows(2).all(|w| w[1] - w[0] == 1), "log-bytes=1 snapshots each entry: {new:?}");
    ensure!(metric(&broker, taken)? == second.len() as f64);

    // A trigger that loops: each ask times out, the plugin is quarantined, and the built-in
    // thresholds (10,000 entries or an hour) apply: no more snapshots.
    let loaded = sluice(&broker, &["plugin", "load", sluice_tests::plugins::LOOPING_TRIGGER_COMPONENT, "--kind", "trigger", "--version", "1"])?;
    ensure!(loaded.contains("looping-trigger"), "{loaded}");
    sluice(&broker, &["plugin", "bind", "--kind", "trigger", "looping-trigger"])?;
    let started = Instant::now();
    let quarantined = |b: &Broker| sluice(b, &["plugin", "list"]).map(|l| l.lines().any(|l| l.contains("looping-trigger") && l.contains("quarantined")));
    let mut n = 0;
    while !quarantined(&broker)? {
        ensure!(started.elapsed() < Duration::from_secs(60), "the looping trigger was never quarantined");
        metadata_change(&broker, &format!("d{n}"))?;
        n += 1;
    }
    let text = broker.metrics()?;
    let timeouts = text.lines().find(|l| l.starts_with("sluice_plugin_failures_total{") && l.contains("looping-trigger") && l.contains("reason=\"timeout\""));
    let timeouts: f64 = timeouts.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0);
    ensure!(timeouts >= 5.0, "timeouts counted: {timeouts}\n{text}");
    let before = snapshot_indexes(&broker)?;
    for i in 0..3 {
        metadata_change(&broker, &format!("e{i}"))?;
    }
    ensure!(snapshot_indexes(&broker)? == before, "the fallback thresholds snapshotted early");
    ensure!(metric(&broker, taken)? == before.len() as f64);

    // The node serves on, and an operator can still snapshot by hand.
    let created = sluice(&broker, &["snapshot", "create"])?;
    ensure!(created.contains("metadata") && created.contains("lz4"), "{created}");
    ensure!(snapshot_indexes(&broker)?.len() == before.len() + 1);
    ensure!(broker.is_running());
    Ok(())
}
