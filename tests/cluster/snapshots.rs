//! Snapshots of the metadata group on a real cluster: after a snapshot every node compacts its
//! metadata log; a node that was down meanwhile, or lost its data dir, catches up through the
//! leader's snapshot (streamed from the leader, or read from a shared store); every node
//! restarts from its compacted log to the same state. Data partitions: a follower that was down
//! while retention deleted what it lacked catches up through the leader's descriptor.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kafka_protocol::messages::InitProducerIdRequest;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use sluice_tests::cluster::TestCluster;
use sluice_tests::{RawClient, client_config, raw};

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
    sluice_tests::log_segments(&cluster.node(i).data_dir().join("metadata"))
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

/// The cluster's codec is swapped between snapshots (lz4, then gzip, then zstd) on a 3-node
/// cluster started with `env`; after each, node 3's data dir is wiped and it restores from that
/// codec's snapshot.
fn a_wiped_node_restores_from_each_codecs_snapshot(env: &[(&str, &str)]) -> Result<()> {
    let mut env = env.to_vec();
    env.extend([("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "200"), ("SLUICE_SNAPSHOT__METADATA_SEGMENT_BYTES", "2048"), ("SLUICE_SNAPSHOT__KEEP_ENTRIES", "0")]);
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

#[test]
fn a_wiped_node_restores_from_lz4_then_gzip_then_zstd_snapshots_streamed_from_the_leader() -> Result<()> {
    let _one = serial();
    a_wiped_node_restores_from_each_codecs_snapshot(&[])
}

#[test]
fn a_wiped_node_restores_from_lz4_then_gzip_then_zstd_snapshots_in_a_shared_store() -> Result<()> {
    let _one = serial();
    let shared = tempfile::tempdir()?;
    let url = format!("file://{}", shared.path().display());
    a_wiped_node_restores_from_each_codecs_snapshot(&[("SLUICE_SNAPSHOT__STORE", &url), ("SLUICE_SNAPSHOT__SHARED", "true")])
}

/// Node `i`'s counter `sluice_<name>` of snapshots of `kind` (0 when not exported yet).
fn snapshot_metric(cluster: &TestCluster, i: usize, name: &str, kind: &str) -> Result<f64> {
    Ok(cluster.node(i).metric(&format!("sluice_{name}{{kind=\"{kind}\",node=\"{}\"}}", i + 1))?.unwrap_or(0.0))
}

/// The low and high watermarks of partition 0 of `topic`, as node `i` (its leader) answers.
fn watermarks(cluster: &TestCluster, i: usize, topic: &str) -> Result<(i64, i64)> {
    let consumer: rdkafka::consumer::BaseConsumer = sluice_tests::consumer_config(&cluster.node(i).bootstrap()).create()?;
    Ok(rdkafka::consumer::Consumer::fetch_watermarks(&consumer, topic, 0, Duration::from_secs(10))?)
}

/// On a 3-node cluster started with `env` (plus short snapshot and retention periods): a node
/// kept down while retention deletes what it lacks catches up through the leader's snapshot of
/// the partition, and once it leads, an idempotent retry of a batch retention deleted is still
/// answered with its first offset. With `damage`, every chunk in the leader's store is damaged
/// first: the follower refuses what it fetches, and the leader takes a new snapshot.
fn a_follower_behind_retention_catches_up(env: &[(&str, &str)], damage: bool) -> Result<()> {
    let mut env = env.to_vec();
    env.extend([("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "200"), ("SLUICE_PLUGINS__RETENTION_CHECK_INTERVAL_MS", "200"), ("SLUICE_RAFT__SNAPSHOT_INSTALL_TIMEOUT_MS", "3000")]);
    let mut cluster = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, &env)?;
    let topic = "retained";
    let admin: AdminClient<DefaultClientContext> = client_config(&cluster.bootstrap()).create()?;
    let new_topic = rdkafka::admin::NewTopic::new(topic, 1, rdkafka::admin::TopicReplication::Fixed(3)).set("segment.bytes", "4096").set("retention.bytes", "16384");
    eventually("creating the topic", || {
        let created = futures::executor::block_on(admin.create_topics([&new_topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))?;
        ensure!(created.iter().all(|r| r.is_ok() || matches!(r, Err((_, rdkafka::error::RDKafkaErrorCode::TopicAlreadyExists)))), "{created:?}");
        Ok(())
    })?;
    let leader = cluster.wait_for_leader(topic, 0, None, PATIENCE)?;
    let behind = (leader + 1) % 3;

    // An idempotent producer's first batch, acknowledged by every node.
    let mut client = RawClient::connect(cluster.node(leader).addr())?;
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = None;
    init.transaction_timeout_ms = 60_000;
    let pid = eventually("a producer id", || {
        let answer = client.send(4, &init)?;
        ensure!(answer.error_code == 0 && answer.producer_id.0 >= 0, "InitProducerId answered error {} and id {}", answer.error_code, answer.producer_id.0);
        Ok(answer.producer_id.0)
    })?;
    let first = raw::batch(pid, 0, 0, &["first"]);
    let (code, first_offset) = raw::produce_raw(&mut client, topic, first.clone())?;
    ensure!(code == 0, "producing the first batch: error {code}");
    // One node stops; retention deletes far past what it holds.
    cluster.kill9(behind);
    let filler = "x".repeat(900);
    for _ in 0..120 {
        let (code, _) = raw::produce_raw(&mut client, topic, raw::batch(-1, -1, -1, &[filler.as_str()]))?;
        ensure!(code == 0, "producing filler: error {code}");
    }
    let (low, high) = eventually("retention deleted the start of the log", || {
        let (low, high) = watermarks(&cluster, leader, topic)?;
        ensure!(low > 50, "the log still starts at {low}");
        Ok((low, high))
    })?;
    eprintln!("the leader's log now holds offsets {low}..{high}");
    if damage {
        // Once retention and the snapshots it calls for have settled, a flipped byte in every
        // chunk of the leader's store.
        let listed = || cli(&cluster, leader, &["snapshot", "list"]);
        let mut last = listed()?;
        eventually("the leader's snapshots settled", || {
            std::thread::sleep(Duration::from_millis(600));
            let now = listed()?;
            let settled = now == last && now.contains(&format!("{topic}-0"));
            last = now;
            ensure!(settled, "still changing");
            Ok(())
        })?;
        let mut damaged = 0;
        let mut dirs = vec![cluster.node(leader).data_dir().join("object-store").join("snapshots")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("chunk-")) {
                    let mut bytes = std::fs::read(&path)?;
                    let middle = bytes.len() / 2;
                    bytes[middle] ^= 0x01;
                    std::fs::write(&path, bytes)?;
                    damaged += 1;
                }
            }
        }
        ensure!(damaged > 0, "no chunk in the leader's store");
    }

    // Back, it can only catch up through a snapshot of the partition.
    cluster.restart(behind)?;
    eventually("the node that was down installed a snapshot of the partition", || {
        ensure!(snapshot_metric(&cluster, behind, "snapshot_installs_total", "partition")? >= 1.0, "no install counted");
        Ok(())
    })?;
    if damage {
        let text = cluster.node(behind).metrics()?;
        let refused = text.lines().any(|l| l.starts_with("sluice_snapshots_failed_total{") && l.contains("kind=\"partition\"") && l.contains("reason=\"install\"") && !l.ends_with(" 0"));
        ensure!(refused, "the damaged snapshot was not refused first:\n{text}");
    }
    ensure!(snapshot_metric(&cluster, leader, "snapshots_taken_total", "partition")? >= 1.0, "the leader counted no partition snapshot");
    // It restarts from the installed snapshot, then leads.
    cluster.kill9(behind);
    cluster.restart(behind)?;
    hand_leadership(&cluster, topic, behind)?;
    let (new_low, new_high) = watermarks(&cluster, behind, topic)?;
    ensure!(new_high == high && new_low >= low, "the new leader holds {new_low}..{new_high}, the old one held {low}..{high}");

    // A retry of the first batch, whose records retention deleted long ago, is still recognised.
    let mut client = RawClient::connect(cluster.node(behind).addr())?;
    let retried = raw::produce_raw(&mut client, topic, first)?;
    ensure!(retried == (0, first_offset), "the retried first batch was answered {retried:?}, not (0, {first_offset}): stored twice");
    let next = raw::produce_raw(&mut client, topic, raw::batch(pid, 0, 1, &["second"]))?;
    ensure!(next == (0, high), "the producer's next batch was answered {next:?}, not (0, {high})");
    Ok(())
}

#[test]
fn a_follower_behind_retention_catches_up_through_a_snapshot_streamed_from_the_leader() -> Result<()> {
    let _one = serial();
    a_follower_behind_retention_catches_up(&[], false)
}

#[test]
fn a_follower_refuses_a_damaged_snapshot_and_catches_up_through_the_new_one_the_leader_takes() -> Result<()> {
    let _one = serial();
    a_follower_behind_retention_catches_up(&[], true)
}

#[test]
fn a_follower_behind_retention_catches_up_through_a_snapshot_read_from_a_shared_store() -> Result<()> {
    let _one = serial();
    let shared = tempfile::tempdir()?;
    let url = format!("file://{}", shared.path().display());
    a_follower_behind_retention_catches_up(&[("SLUICE_SNAPSHOT__STORE", &url), ("SLUICE_SNAPSHOT__SHARED", "true")], false)
}

/// The segment files of `__consumer_offsets-0` on node `i`, oldest first.
fn offsets_segments(cluster: &TestCluster, i: usize) -> Result<Vec<String>> {
    sluice_tests::log_segments(&cluster.node(i).data_dir().join("partitions").join("__consumer_offsets-0"))
}

/// Hands leadership of partition 0 of `topic` to node `i` (asking whichever node leads now).
fn hand_leadership(cluster: &TestCluster, topic: &str, i: usize) -> Result<()> {
    let to = (i + 1).to_string();
    eventually(&format!("leadership of {topic}/0 handed to node {to}"), || {
        let current = cluster.wait_for_leader(topic, 0, None, PATIENCE)?;
        if current != i {
            cli(cluster, current, &["cluster", "transfer-leader", "--topic", topic, "--to", &to])?;
        }
        ensure!(cluster.wait_for_leader(topic, 0, None, Duration::from_secs(5))? == i, "not leading yet");
        Ok(())
    })
}

#[test]
fn a_wiped_node_restores_committed_offsets_from_a_snapshot_and_serves_them_as_coordinator() -> Result<()> {
    let _one = serial();
    let env = [
        ("SLUICE_GROUPS__OFFSETS_TOPIC_PARTITIONS", "1"),
        ("SLUICE_GROUPS__OFFSETS_SEGMENT_BYTES", "1024"),
        ("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "200"),
        ("SLUICE_SNAPSHOT__KEEP_ENTRIES", "0"),
    ];
    let mut cluster = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, &env)?;
    create_topic(&cluster, "raw", 1)?;
    cli(&cluster, 0, &["plugin", "bind", "--kind", "trigger", "entries-or-age", "--param", "entries=10"])?;
    let offsets = "__consumer_offsets";
    let coordinator = cluster.wait_for_leader(offsets, 0, None, PATIENCE)?;
    let mut client = RawClient::connect(cluster.node(coordinator).addr())?;
    ensure!(raw::commit(&mut client, "early", "", -1, 7)? == 0);
    for offset in 0..80 {
        ensure!(raw::commit(&mut client, "busy", "", -1, offset)? == 0);
    }
    eventually("the offsets log compacted everywhere", || {
        let segments: Vec<Vec<String>> = (0..3).map(|i| offsets_segments(&cluster, i)).collect::<Result<_>>()?;
        ensure!(segments.iter().all(|s| s.first().is_some_and(|f| !f.starts_with("00000000000000000000"))), "not compacted everywhere: {segments:?}");
        Ok(())
    })?;

    let wiped = (coordinator + 1) % 3;
    cluster.kill9(wiped);
    std::fs::remove_dir_all(cluster.node(wiped).data_dir())?;
    cluster.restart(wiped)?;
    eventually("the wiped node installed the offsets snapshot", || {
        ensure!(snapshot_metric(&cluster, wiped, "snapshot_installs_total", "offsets")? >= 1.0, "no install counted");
        Ok(())
    })?;
    // It restarts from what it installed, then coordinates the groups.
    cluster.kill9(wiped);
    cluster.restart(wiped)?;
    hand_leadership(&cluster, offsets, wiped)?;
    let mut client = RawClient::connect(cluster.node(wiped).addr())?;
    let committed = eventually("the groups' offsets from the new coordinator", || {
        let committed = (raw::fetch_committed(&mut client, "early")?.0, raw::fetch_committed(&mut client, "busy")?.0);
        ensure!(committed.0 >= 0, "no offset yet");
        Ok(committed)
    })?;
    ensure!(committed == (7, 79), "the new coordinator has offsets {committed:?}, not (7, 79)");
    Ok(())
}

/// The low and high watermarks of every partition of `topic`, from the live nodes.
fn all_watermarks(cluster: &TestCluster, topic: &str, partitions: i32) -> Result<Vec<(i64, i64)>> {
    let consumer: rdkafka::consumer::BaseConsumer = sluice_tests::consumer_config(&cluster.live_bootstrap()).create()?;
    (0..partitions).map(|p| Ok(rdkafka::consumer::Consumer::fetch_watermarks(&consumer, topic, p, Duration::from_secs(10))?)).collect()
}

/// Group `group`'s committed offsets of `topic` partitions `0..partitions` (-1: none).
fn committed(cluster: &TestCluster, group: &str, topic: &str, partitions: i32) -> Result<Vec<i64>> {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = sluice_tests::consumer_config(&cluster.live_bootstrap()).set("group.id", group).create()?;
    let mut wanted = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        wanted.add_partition(topic, p);
    }
    let found = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
    Ok(found.elements().iter().map(|e| e.offset().to_raw().unwrap_or(-1)).collect())
}

#[test]
fn a_lost_cluster_comes_back_in_a_new_one_at_its_offsets_with_its_groups_positions() -> Result<()> {
    use rdkafka::Message;
    use rdkafka::consumer::Consumer;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let _one = serial();
    let (topic, partitions, groups) = ("orders", 3, 6);
    let shared = tempfile::tempdir()?;
    let url = format!("file://{}", shared.path().display());
    let env = [("SLUICE_SNAPSHOT__STORE", url.as_str()), ("SLUICE_SNAPSHOT__SHARED", "true"), ("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "200"), ("SLUICE_PLUGINS__RETENTION_CHECK_INTERVAL_MS", "200")];
    let (lost_marks, lost_positions) = {
        let lost = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, &env)?;
        create_topic(&lost, topic, partitions)?;
        let alter: AdminClient<DefaultClientContext> = client_config(&lost.bootstrap()).create()?;
        let small = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("segment.bytes", "1024");
        futures::executor::block_on(alter.alter_configs([&small], &AdminOptions::new()))?;
        let producer: FutureProducer = sluice_tests::producer_config(&lost.bootstrap()).create()?;
        let value = "v".repeat(100);
        for p in 0..partitions {
            for _ in 0..(40 + 10 * p) {
                futures::executor::block_on(producer.send(FutureRecord::<(), _>::to(topic).partition(p).payload(&value), Duration::from_secs(30))).map_err(|(e, _)| e)?;
            }
        }
        // Groups spread over the offsets partitions (and so over coordinators on every node).
        for g in 0..groups {
            let consumer: rdkafka::consumer::BaseConsumer = sluice_tests::consumer_config(&lost.bootstrap()).set("group.id", format!("group-{g}")).create()?;
            let mut positions = rdkafka::TopicPartitionList::new();
            for p in 0..partitions {
                positions.add_partition_offset(topic, p, rdkafka::Offset::Offset(i64::from(g) + i64::from(p)))?;
            }
            eventually("committing", || Ok(consumer.commit(&positions, rdkafka::consumer::CommitMode::Sync)?))?;
        }
        // Retention drops each partition's first segments: their leaders write descriptors.
        let retention = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("retention.bytes", "2048");
        futures::executor::block_on(alter.alter_configs([&retention], &AdminOptions::new()))?;
        eventually("a descriptor of every partition", || {
            let listed = cli(&lost, 0, &["snapshot", "list"])?;
            ensure!((0..partitions).all(|p| listed.contains(&format!("{topic}-{p} "))), "{listed}");
            Ok(())
        })?;
        for p in 0..8 {
            let leader = lost.wait_for_leader("__consumer_offsets", p, None, PATIENCE)?;
            cli(&lost, leader, &["snapshot", "create", "--topic", "__consumer_offsets", "--partition", &p.to_string()])?;
        }
        cli(&lost, 0, &["snapshot", "create"])?;
        let positions: Vec<Vec<i64>> = (0..groups).map(|g| committed(&lost, &format!("group-{g}"), topic, partitions)).collect::<Result<_>>()?;
        (all_watermarks(&lost, topic, partitions)?, positions)
    };
    ensure!(lost_marks.iter().all(|&(low, _)| low > 0), "retention deleted nothing: {lost_marks:?}");

    let fresh = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, &[])?;
    let restored = cli(&fresh, 0, &["cluster", "restore", "--store", &url])?;
    ensure!(restored.contains(&format!("{} committed offsets of {groups} consumer groups", groups * partitions)), "{restored}");
    for p in 0..partitions {
        fresh.wait_for_leader(topic, p, None, PATIENCE)?;
    }
    let marks = all_watermarks(&fresh, topic, partitions)?;
    let resumed: Vec<(i64, i64)> = lost_marks.iter().map(|&(_, high)| (high, high)).collect();
    ensure!(marks == resumed, "the new cluster's partitions hold {marks:?}, not {resumed:?}");
    for (g, lost_positions) in lost_positions.iter().enumerate() {
        let found = committed(&fresh, &format!("group-{g}"), topic, partitions)?;
        ensure!(&found == lost_positions, "group-{g} has {found:?}, the lost cluster had {lost_positions:?}");
    }
    // It serves: a new record gets the next offset, and a group member resumes at its position.
    let producer: FutureProducer = sluice_tests::producer_config(&fresh.bootstrap()).create()?;
    let delivered = futures::executor::block_on(producer.send(FutureRecord::<(), _>::to(topic).partition(0).payload("after"), Duration::from_secs(30))).map_err(|(e, _)| e)?;
    ensure!((delivered.partition, delivered.offset) == (0, lost_marks[0].1), "the first new record got {delivered:?}");
    let reader: rdkafka::consumer::BaseConsumer = sluice_tests::consumer_config(&fresh.bootstrap()).set("group.id", "group-0").set("auto.offset.reset", "earliest").create()?;
    reader.subscribe(&[topic])?;
    let got = eventually("a group member reads the new record", || {
        match reader.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => Ok((m.partition(), m.offset())),
            other => anyhow::bail!("{:?}", other.map(|r| r.map(|m| m.offset()))),
        }
    })?;
    ensure!(got == (0, lost_marks[0].1), "the member read {got:?} first");
    Ok(())
}

#[test]
fn a_topics_bound_trigger_decides_its_partitions_snapshots_on_a_cluster_and_swaps_live() -> Result<()> {
    let _one = serial();
    let env = [("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "100"), ("SLUICE_PLUGINS__CALL_TIMEOUT_MS", "500")];
    let cluster = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, &env)?;
    let topic = "bound";
    create_topic(&cluster, topic, 1)?;
    let leader = cluster.wait_for_leader(topic, 0, None, PATIENCE)?;
    let taken = || snapshot_metric(&cluster, leader, "snapshots_taken_total", "partition");
    let mut client = RawClient::connect(cluster.node(leader).addr())?;
    let mut entries = |n: usize| -> Result<()> {
        for _ in 0..n {
            let (code, _) = raw::produce_raw(&mut client, topic, raw::batch(-1, -1, -1, &["entry"]))?;
            ensure!(code == 0, "producing: error {code}");
        }
        Ok(())
    };
    let settle = || std::thread::sleep(Duration::from_millis(400));
    let wait_for = |count: f64| eventually(&format!("{count} partition snapshots on the leader"), || {
        ensure!(taken()? >= count, "{} so far", taken()?);
        Ok(())
    });
    // A binding made through any node, once the leader has applied it.
    let bound_on_leader = |shows: &str| {
        eventually(&format!("the leader's binding shows {shows}"), || {
            ensure!(cli(&cluster, leader, &["plugin", "describe", "--kind", "trigger", "--topic", topic])?.contains(shows));
            Ok(())
        })
    };
    // Bound to the topic; counted from a snapshot by hand on the leader.
    cli(&cluster, 0, &["plugin", "bind", "--kind", "trigger", "--topic", topic, "entries-or-age", "--param", "entries=5"])?;
    bound_on_leader("entries=5")?;
    cli(&cluster, leader, &["snapshot", "create", "--topic", topic, "--partition", "0"])?;
    let start = taken()?;
    for round in 1..=3 {
        entries(4)?;
        settle();
        ensure!(taken()? == start + f64::from(round - 1), "snapshotted before 5 entries (round {round})");
        entries(1)?;
        wait_for(start + f64::from(round))?;
    }
    // Rebound through IncrementalAlterConfigs to log-bytes out of reach: no snapshot.
    let admin: AdminClient<DefaultClientContext> = client_config(&cluster.bootstrap()).create()?;
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("sluice.snapshot.trigger", "log-bytes").set("sluice.plugin.param.bytes", "1000000000000");
    futures::executor::block_on(admin.alter_configs([&change], &AdminOptions::new()))?;
    bound_on_leader("log-bytes")?;
    let before = taken()?;
    entries(12)?;
    settle();
    ensure!(taken()? == before, "log-bytes (unreached) snapshotted anyway");
    // The looping trigger: quarantined on the leader, and the fallback thresholds apply.
    cli(&cluster, 0, &["plugin", "load", sluice_tests::plugins::LOOPING_TRIGGER_COMPONENT, "--kind", "trigger", "--version", "1"])?;
    cli(&cluster, 0, &["plugin", "bind", "--kind", "trigger", "--topic", topic, "looping-trigger"])?;
    eventually("the looping trigger quarantined on the leader", || {
        entries(1)?;
        let listed = cli(&cluster, leader, &["plugin", "list"])?;
        ensure!(listed.lines().any(|l| l.contains("looping-trigger") && l.contains("quarantined")), "{listed}");
        Ok(())
    })?;
    let before = taken()?;
    entries(6)?;
    settle();
    ensure!(taken()? == before, "the fallback thresholds snapshotted early");
    Ok(())
}
