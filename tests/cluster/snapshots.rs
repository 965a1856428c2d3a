//! Snapshots of the metadata group on a real cluster: after a snapshot every node compacts its
//! metadata log; a node that was down meanwhile, or lost its data dir, catches up through the
//! leader's snapshot (streamed from the leader, or read from a shared store); every node
//! restarts from its compacted log to the same state.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use sluice_tests::client_config;
use sluice_tests::cluster::TestCluster;

use crate::control::{cli, eventually};
use crate::{PATIENCE, create_topic, serial};

const TOPIC: &str = "configured";

/// One metadata entry: the topic's retention.ms set to `value`, through any live node, sent
/// again until a node has applied it (rdkafka's AlterConfigs reports every resource as altered,
/// even one the broker refused, e.g. while a restarted node knows no leader yet).
fn alter(cluster: &TestCluster, value: u64) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(&cluster.live_bootstrap()).create()?;
    let value = value.to_string();
    let change = AlterConfig::new(ResourceSpecifier::Topic(TOPIC)).set("retention.ms", &value);
    let applied = || cluster.live().any(|i| applied_topics(cluster, i).ok().as_ref().and_then(retention_of).as_deref() == Some(value.as_str()));
    eventually("altering a config", || {
        futures::executor::block_on(admin.alter_configs([&change], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))?;
        for _ in 0..100 {
            if applied() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("retention.ms {value} not applied yet")
    })
}

/// The topics node `i` has applied, as its `metadata.json` records them.
fn applied_topics(cluster: &TestCluster, i: usize) -> Result<serde_json::Value> {
    let path = cluster.node(i).data_dir().join("metadata.json");
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).with_context(|| path.display().to_string())?)?;
    Ok(file["topics"].clone())
}

fn retention_of(topics: &serde_json::Value) -> Option<String> {
    topics.as_array()?.iter().find(|t| t["name"] == TOPIC)?["configs"]["retention.ms"].as_str().map(str::to_string)
}

/// The metadata log's segment files on node `i`, oldest first.
fn metadata_segments(cluster: &TestCluster, i: usize) -> Result<Vec<String>> {
    let dir = cluster.node(i).data_dir().join("metadata");
    let mut names: Vec<String> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".log")).collect();
    names.sort();
    Ok(names)
}

#[test]
fn the_metadata_log_is_compacted_after_snapshots_and_every_node_restarts_to_the_same_state() -> Result<()> {
    let _one = serial();
    let env = [("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "200"), ("SLUICE_SNAPSHOT__METADATA_SEGMENT_BYTES", "2048"), ("SLUICE_SNAPSHOT__KEEP_ENTRIES", "0")];
    let mut cluster = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, &env)?;
    create_topic(&cluster, TOPIC, 1)?;
    cli(&cluster, 0, &["plugin", "bind", "--kind", "trigger", "entries-or-age", "--param", "entries=10"])?;

    // Node 3 is down while the others change metadata, snapshot it and compact their logs past
    // what node 3 holds: it catches up through the leader's snapshot.
    cluster.kill9(2);
    for v in 0..40 {
        alter(&cluster, 1_000_000 + v)?;
    }
    eventually("snapshots on the live nodes", || {
        for i in 0..2 {
            let listed = cli(&cluster, i, &["snapshot", "list", "--group", "0"])?;
            ensure!(listed.lines().count() > 1, "node {i} has no snapshot:\n{listed}");
        }
        Ok(())
    })?;
    eventually("the live nodes compacted their logs", || {
        for i in 0..2 {
            let segments = metadata_segments(&cluster, i)?;
            ensure!(segments.first().is_some_and(|f| !f.starts_with("00000000000000000000")), "node {i} not compacted: {segments:?}");
        }
        Ok(())
    })?;
    cluster.restart(2)?;
    eventually("node 3 caught up through a snapshot", || {
        let retention = retention_of(&applied_topics(&cluster, 2)?);
        ensure!(retention.as_deref() == Some("1000039"), "node 3 has retention.ms {retention:?}");
        ensure!(cluster.node(2).metric("sluice_snapshot_installs_total{kind=\"metadata\",node=\"3\"}")?.unwrap_or(0.0) >= 1.0, "no install counted");
        Ok(())
    })?;

    // With every voter back, snapshots compact the log on every node.
    for v in 40..80 {
        alter(&cluster, 1_000_000 + v)?;
    }
    let compacted = eventually("the metadata log compacted everywhere", || {
        let segments: Vec<Vec<String>> = (0..3).map(|i| metadata_segments(&cluster, i)).collect::<Result<_>>()?;
        ensure!(segments.iter().all(|s| s.first().is_some_and(|f| !f.starts_with("00000000000000000000"))), "not compacted everywhere: {segments:?}");
        Ok(segments)
    })?;
    eprintln!("metadata segments per node after compaction: {compacted:?}");

    // Every node restarts from its compacted log (and its applied state) to the same state.
    for i in 0..3 {
        cluster.kill9(i);
    }
    for i in 0..3 {
        cluster.restart(i)?;
    }
    cluster.wait_for_leader(TOPIC, 0, None, PATIENCE)?;
    alter(&cluster, 2_000_000)?;
    eventually("the same state on every node", || {
        let states: Vec<serde_json::Value> = (0..3).map(|i| applied_topics(&cluster, i)).collect::<Result<_>>()?;
        ensure!(states.windows(2).all(|w| w[0] == w[1]), "nodes differ: {states:?}");
        ensure!(retention_of(&states[0]).as_deref() == Some("2000000"), "{:?}", retention_of(&states[0]));
        Ok(())
    })?;
    Ok(())
}

/// Snapshots and compaction on a 3-node cluster started with `env`, then node 3's data dir is
/// wiped: it must come back through the leader's snapshot, custom codec and all.
fn a_wiped_node_rejoins_through_a_snapshot(env: &[(&str, &str)]) -> Result<()> {
    let mut cluster = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, env)?;
    create_topic(&cluster, TOPIC, 1)?;
    // The snapshots are compressed by a plugin the wiped node will not have.
    cli(&cluster, 0, &["plugin", "load", sluice_tests::plugins::ECHO_CODEC_COMPONENT, "--name", "echo", "--version", "1"])?;
    cli(&cluster, 0, &["plugin", "bind", "--kind", "codec", "echo@1"])?;
    cli(&cluster, 0, &["plugin", "bind", "--kind", "trigger", "entries-or-age", "--param", "entries=10"])?;
    for v in 0..40 {
        alter(&cluster, 3_000_000 + v)?;
    }
    eventually("the metadata log compacted everywhere", || {
        let segments: Vec<Vec<String>> = (0..3).map(|i| metadata_segments(&cluster, i)).collect::<Result<_>>()?;
        ensure!(segments.iter().all(|s| s.first().is_some_and(|f| !f.starts_with("00000000000000000000"))), "not compacted everywhere: {segments:?}");
        Ok(())
    })?;

    cluster.kill9(2);
    std::fs::remove_dir_all(cluster.node(2).data_dir())?;
    cluster.restart(2)?;
    let installs = "sluice_snapshot_installs_total{kind=\"metadata\",node=\"3\"}";
    eventually("the wiped node installed a snapshot and caught up", || {
        let retention = retention_of(&applied_topics(&cluster, 2)?);
        ensure!(retention.as_deref() == Some("3000039"), "node 3 has retention.ms {retention:?}");
        ensure!(cluster.node(2).metric(installs)?.unwrap_or(0.0) >= 1.0, "no install counted");
        let plugins = cli(&cluster, 2, &["plugin", "list"])?;
        ensure!(plugins.lines().any(|l| l.contains("echo")), "{plugins}");
        Ok(())
    })?;
    // It goes on following the log, and states agree.
    alter(&cluster, 4_000_000)?;
    eventually("the same state on every node", || {
        let states: Vec<serde_json::Value> = (0..3).map(|i| applied_topics(&cluster, i)).collect::<Result<_>>()?;
        ensure!(states.windows(2).all(|w| w[0] == w[1]), "nodes differ: {states:?}");
        ensure!(retention_of(&states[2]).as_deref() == Some("4000000"));
        Ok(())
    })?;
    // And it restarts from its installed snapshot.
    cluster.kill9(2);
    cluster.restart(2)?;
    alter(&cluster, 4_000_001)?;
    let followed = eventually("node 3 follows after a restart", || {
        let retention = retention_of(&applied_topics(&cluster, 2)?);
        ensure!(retention.as_deref() == Some("4000001"), "node 3 has retention.ms {retention:?}");
        Ok(())
    });
    if followed.is_err() {
        for i in 0..3 {
            eprintln!("node {} status:\n{}", i + 1, cli(&cluster, i, &["cluster", "status"]).unwrap_or_else(|e| e.to_string()));
            let file = std::fs::read_to_string(cluster.node(i).data_dir().join("metadata.json")).unwrap_or_default();
            let applied = file.lines().find(|l| l.contains("applied_index")).unwrap_or_default().to_string();
            eprintln!("node {} retention.ms {:?}, {applied}", i + 1, applied_topics(&cluster, i).ok().as_ref().and_then(retention_of));
        }
    }
    followed
}

#[test]
fn a_wiped_node_rejoins_through_a_snapshot_streamed_from_the_leader() -> Result<()> {
    let _one = serial();
    a_wiped_node_rejoins_through_a_snapshot(&[("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "200"), ("SLUICE_SNAPSHOT__METADATA_SEGMENT_BYTES", "2048"), ("SLUICE_SNAPSHOT__KEEP_ENTRIES", "0")])
}

#[test]
fn a_wiped_node_rejoins_through_a_snapshot_read_from_a_shared_store() -> Result<()> {
    let _one = serial();
    let shared = tempfile::tempdir()?;
    let url = format!("file://{}", shared.path().display());
    a_wiped_node_rejoins_through_a_snapshot(&[
        ("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "200"),
        ("SLUICE_SNAPSHOT__METADATA_SEGMENT_BYTES", "2048"),
        ("SLUICE_SNAPSHOT__KEEP_ENTRIES", "0"),
        ("SLUICE_SNAPSHOT__STORE", &url),
        ("SLUICE_SNAPSHOT__SHARED", "true"),
    ])
}

#[test]
fn a_wiped_node_restores_from_lz4_then_gzip_then_zstd_snapshots() -> Result<()> {
    let _one = serial();
    let env = [("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "200"), ("SLUICE_SNAPSHOT__METADATA_SEGMENT_BYTES", "2048"), ("SLUICE_SNAPSHOT__KEEP_ENTRIES", "0")];
    let mut cluster = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, &env)?;
    create_topic(&cluster, TOPIC, 1)?;
    cli(&cluster, 0, &["plugin", "bind", "--kind", "trigger", "entries-or-age", "--param", "entries=10"])?;
    let installs = "sluice_snapshot_installs_total{kind=\"metadata\",node=\"3\"}";
    let mut value = 5_000_000;
    for codec in ["lz4", "gzip", "zstd"] {
        cli(&cluster, 0, &["plugin", "bind", "--kind", "codec", codec])?;
        for _ in 0..25 {
            value += 1;
            alter(&cluster, value)?;
        }
        // The newest snapshot on the live nodes is this codec's, and their logs are compacted.
        eventually(&format!("a {codec} snapshot everywhere"), || {
            for i in 0..3 {
                let newest = cli(&cluster, i, &["snapshot", "list", "--group", "0"])?.lines().last().unwrap_or_default().to_string();
                ensure!(newest.split_whitespace().nth(5) == Some(codec), "node {i}'s newest snapshot: {newest}");
            }
            Ok(())
        })?;
        cluster.kill9(2);
        std::fs::remove_dir_all(cluster.node(2).data_dir())?;
        cluster.restart(2)?;
        let expected = value.to_string();
        eventually(&format!("node 3 restored from the {codec} snapshot"), || {
            let retention = retention_of(&applied_topics(&cluster, 2)?);
            ensure!(retention.as_deref() == Some(expected.as_str()), "node 3 has retention.ms {retention:?}");
            // A fresh process: its counter counts this install alone.
            ensure!(cluster.node(2).metric(installs)?.unwrap_or(0.0) >= 1.0, "no install counted");
            Ok(())
        })?;
    }
    Ok(())
}
