//! Cluster state made on one node takes effect on every node: topic configs, plugins, consumer
//! group offsets (which survive their coordinator's death), and what `sluice cluster status`
//! reports.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::cluster::TestCluster;
use sluice_tests::plugins::ECHO_CODEC_COMPONENT;
use sluice_tests::{RawClient, client_config};

use crate::{PARTITIONS, PATIENCE, TOPIC, cluster_with_topic, serial};

/// Runs `sluice <args>` against node `i`'s admin API.
pub(crate) fn cli(cluster: &TestCluster, i: usize, args: &[&str]) -> Result<String> {
    let rpc = cluster.node(i).rpc_addr().context("node started")?.to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).args(["--rpc-addr", &rpc]).output()?;
    ensure!(output.status.success(), "sluice {args:?} on node {i}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Retries `check` until it passes or `PATIENCE` runs out (changes apply asynchronously).
pub(crate) fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e.context(format!("{what}: still not true after {PATIENCE:?}"))),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn topic_config(bootstrap: &str, key: &str) -> Result<Option<String>> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let described = futures::executor::block_on(admin.describe_configs([&ResourceSpecifier::Topic(TOPIC)], &AdminOptions::new()))?;
    let resource = described.into_iter().next().context("one resource")?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(resource.get(key).and_then(|entry| entry.value.clone()))
}

#[test]
fn configs_and_plugins_changed_on_one_node_apply_on_every_node() -> Result<()> {
    let _one = serial();
    let cluster = cluster_with_topic()?;

    // A topic config altered through node 1 is reported by every node.
    let admin: AdminClient<DefaultClientContext> = client_config(&cluster.node(1).bootstrap()).create()?;
    let alter = AlterConfig::new(ResourceSpecifier::Topic(TOPIC)).set("retention.ms", "123456");
    let altered = futures::executor::block_on(admin.alter_configs([&alter], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))?;
    ensure!(altered.iter().all(|r| r.is_ok()), "alter configs: {altered:?}");
    for i in 0..3 {
        eventually(&format!("retention.ms on node {i}"), || {
            let value = topic_config(&cluster.node(i).bootstrap(), "retention.ms")?;
            ensure!(value.as_deref() == Some("123456"), "node {i} reports {value:?}");
            Ok(())
        })?;
    }

    // A plugin loaded through node 2 is compiled and listed on every node, and a default
    // binding made through node 0 is in effect on node 2.
    let loaded = cli(&cluster, 2, &["plugin", "load", ECHO_CODEC_COMPONENT, "--name", "echo", "--version", "1"])?;
    ensure!(loaded.contains("loaded codec plugin echo@1"), "{loaded}");
    for i in 0..3 {
        eventually(&format!("plugin list on node {i}"), || {
            let list = cli(&cluster, i, &["plugin", "list"])?;
            ensure!(list.lines().any(|l| l.contains("echo") && l.contains("loaded")), "node {i} lists:\n{list}");
            Ok(())
        })?;
    }
    cli(&cluster, 0, &["plugin", "bind", "--kind", "codec", "echo@1"])?;
    eventually("the default codec on node 2", || {
        let binding = cli(&cluster, 2, &["plugin", "describe", "--kind", "codec"])?;
        ensure!(binding.contains("echo@1"), "node 2 describes: {binding}");
        Ok(())
    })?;

    // Every node's status names the three brokers and agrees on each partition's leader.
    let mut leaders = Vec::new();
    for i in 0..3 {
        let status = cli(&cluster, i, &["cluster", "status"])?;
        ensure!(status.starts_with(&format!("node {}", i + 1)), "{status}");
        ensure!(status.lines().filter(|l| l.starts_with("broker ")).count() == 3, "node {i} status:\n{status}");
        let rows: Vec<(String, String)> = status
            .lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.len() >= 8 && cols[1] == TOPIC).then(|| (cols[2].to_string(), cols[3].to_string()))
            })
            .collect();
        ensure!(rows.len() == PARTITIONS as usize, "node {i} shows {} rows for {TOPIC}:\n{status}", rows.len());
        leaders.push(rows);
    }
    eprintln!("leaders by partition, as each node reports them: {leaders:?}");
    ensure!(leaders.windows(2).all(|w| w[0] == w[1]), "nodes disagree on leaders: {leaders:?}");
    Ok(())
}

fn group_consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    let mut config: ClientConfig = client_config(bootstrap);
    config.set("group.id", group).set("enable.auto.commit", "false");
    Ok(config.create()?)
}

/// The node (index) coordinating `group`, as the first live node that answers names it.
fn coordinator(cluster: &TestCluster, group: &str) -> Result<usize> {
    for i in cluster.live().collect::<Vec<_>>() {
        let mut client = match RawClient::connect(cluster.node(i).addr()) {
            Ok(c) => c,
            Err(_) => continue,
        };
        let mut request = FindCoordinatorRequest::default();
        request.key = StrBytes::from_string(group.to_string());
        if let Ok(response) = client.send(3, &request)
            && response.error_code == 0
            && response.node_id.0 > 0
        {
            return Ok(response.node_id.0 as usize - 1);
        }
    }
    bail!("no node named a coordinator for {group}")
}

#[test]
fn committed_offsets_survive_their_coordinators_death() -> Result<()> {
    let _one = serial();
    let mut cluster = cluster_with_topic()?;
    let group = "survivors";
    // Kafka accepts commits past the log end, so an empty topic will do.
    let mut committed = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        committed.add_partition_offset(TOPIC, p, Offset::Offset(i64::from(p) * 7))?;
    }
    eventually("a commit through the cluster", || {
        let consumer = group_consumer(&cluster.bootstrap(), group)?;
        consumer.commit(&committed, CommitMode::Sync)?;
        Ok(())
    })?;
    let victim = eventually("a coordinator", || coordinator(&cluster, group))?;
    eprintln!("killing node {victim}, the coordinator of {group}");
    cluster.kill9(victim);
    let read = eventually("the committed offsets from the new coordinator", || {
        let consumer = group_consumer(&cluster.live_bootstrap(), group)?;
        let mut wanted = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            wanted.add_partition(TOPIC, p);
        }
        let got = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
        for p in 0..PARTITIONS {
            let offset = got.find_partition(TOPIC, p).map(|e| e.offset());
            ensure!(offset == Some(Offset::Offset(i64::from(p) * 7)), "partition {p}: {offset:?}");
        }
        Ok(got)
    })?;
    let new_coordinator = coordinator(&cluster, group)?;
    ensure!(new_coordinator != victim, "the dead node {victim} is still named coordinator");
    eprintln!("node {new_coordinator} coordinates {group} now and returned {read:?}");
    Ok(())
}

/// OffsetFetch (v1: errors per partition; v8: per group) sent straight to node `i`.
fn fetch_offsets_from(cluster: &TestCluster, i: usize, group: &str) -> Result<(i16, Vec<(i32, i64, i16)>)> {
    use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics};
    use kafka_protocol::messages::{GroupId, OffsetFetchRequest, TopicName};
    let mut client = RawClient::connect(cluster.node(i).addr())?;
    let mut v1 = OffsetFetchRequest::default();
    v1.group_id = GroupId(StrBytes::from_string(group.to_string()));
    let mut topic = OffsetFetchRequestTopic::default();
    topic.name = TopicName(StrBytes::from_static_str(TOPIC));
    topic.partition_indexes = (0..PARTITIONS).collect();
    v1.topics = Some(vec![topic]);
    let old = client.send(1, &v1)?;
    let partitions: Vec<(i32, i64, i16)> =
        old.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.committed_offset, p.error_code))).collect();
    let mut v8 = OffsetFetchRequest::default();
    let mut g = OffsetFetchRequestGroup::default();
    g.group_id = GroupId(StrBytes::from_string(group.to_string()));
    let mut topics = OffsetFetchRequestTopics::default();
    topics.name = TopicName(StrBytes::from_static_str(TOPIC));
    topics.partition_indexes = (0..PARTITIONS).collect();
    g.topics = Some(vec![topics]);
    v8.groups = vec![g];
    let new = client.send(8, &v8)?;
    let group_error = new.groups.first().context("one group in the answer")?.error_code;
    Ok((group_error, partitions))
}

#[test]
fn offset_fetch_from_a_non_coordinator_answers_not_coordinator() -> Result<()> {
    const NOT_COORDINATOR: i16 = 16;
    let _one = serial();
    let cluster = cluster_with_topic()?;
    let group = "fetchers";
    let coordinating = commit_offsets(&cluster, group, 40)?;
    // Only the coordinator answers with offsets; a node that may lag behind it refuses.
    for i in 0..cluster.len() {
        let (group_error, partitions) = fetch_offsets_from(&cluster, i, group)?;
        if i == coordinating {
            ensure!(group_error == 0, "the coordinator answered v8 with error {group_error}");
            let expected: Vec<(i32, i64, i16)> = (0..PARTITIONS).map(|p| (p, i64::from(p) + 40, 0)).collect();
            ensure!(partitions == expected, "the coordinator answered v1 with {partitions:?}");
        } else {
            ensure!(group_error == NOT_COORDINATOR, "node {i} (not the coordinator) answered v8 with error {group_error}");
            ensure!(
                !partitions.is_empty() && partitions.iter().all(|&(_, offset, error)| error == NOT_COORDINATOR && offset == -1),
                "node {i} (not the coordinator) answered v1 with {partitions:?}"
            );
        }
        let (listed, described, left, deleted) = group_requests_to(&cluster, i, group, i != coordinating)?;
        ensure!(listed == (i == coordinating), "node {i} lists {group}: {listed} (coordinator: node {coordinating})");
        if i != coordinating {
            // Only the coordinator knows the group: the others would answer from nothing.
            ensure!(
                (described, left, deleted) == (NOT_COORDINATOR, NOT_COORDINATOR, NOT_COORDINATOR),
                "node {i} (not the coordinator) answered DescribeGroups {described}, LeaveGroup {left}, DeleteGroups {deleted}"
            );
        } else {
            ensure!(described == 0, "the coordinator answered DescribeGroups with {described}");
        }
    }
    Ok(())
}

#[test]
fn deleting_a_topic_drops_its_committed_offsets_on_every_coordinator() -> Result<()> {
    use kafka_protocol::messages::{DeleteTopicsRequest, TopicName};
    let _one = serial();
    let cluster = cluster_with_topic()?;
    let group = "forgetful";
    let coordinating = commit_offsets(&cluster, group, 7)?;
    // The deletion goes through a node that does not coordinate the group.
    let other = (coordinating + 1) % cluster.len();
    let mut delete = DeleteTopicsRequest::default();
    delete.topic_names = vec![TopicName(StrBytes::from_static_str(TOPIC))];
    delete.timeout_ms = 10_000;
    let deleted = RawClient::connect(cluster.node(other).addr())?.send(4, &delete)?;
    ensure!(deleted.responses.iter().all(|r| r.error_code == 0), "{deleted:?}");
    // A topic re-created under the name must not resume at the old offsets.
    eventually("the coordinator dropped the offsets", || {
        let coordinating = coordinator(&cluster, group)?;
        let (group_error, partitions) = fetch_offsets_from(&cluster, coordinating, group)?;
        ensure!(group_error == 0, "OffsetFetch v8 error {group_error}");
        ensure!(partitions.iter().all(|&(_, offset, _)| offset == -1), "node {coordinating} still has {partitions:?}");
        Ok(())
    })?;
    Ok(())
}

/// Commits offset `base + p` for every partition `p` of the test topic in `group`, through the
/// cluster; returns the node that coordinates the group.
fn commit_offsets(cluster: &TestCluster, group: &str, base: i64) -> Result<usize> {
    let mut committed = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        committed.add_partition_offset(TOPIC, p, Offset::Offset(i64::from(p) + base))?;
    }
    eventually("a commit through the cluster", || {
        let consumer = group_consumer(&cluster.bootstrap(), group)?;
        consumer.commit(&committed, CommitMode::Sync)?;
        Ok(())
    })?;
    eventually("a coordinator", || coordinator(cluster, group))
}

/// ListGroups (whether `group` is listed), DescribeGroups, and, when `change`, LeaveGroup and
/// DeleteGroups for `group`, sent straight to node `i`: their error codes.
fn group_requests_to(cluster: &TestCluster, i: usize, group: &str, change: bool) -> Result<(bool, i16, i16, i16)> {
    use kafka_protocol::messages::{DeleteGroupsRequest, DescribeGroupsRequest, GroupId, LeaveGroupRequest, ListGroupsRequest};
    let mut client = RawClient::connect(cluster.node(i).addr())?;
    let id = GroupId(StrBytes::from_string(group.to_string()));
    let listed = client.send(4, &ListGroupsRequest::default())?.groups.iter().any(|g| g.group_id == id);
    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![id.clone()];
    let described = client.send(5, &describe)?.groups.first().context("one group described")?.error_code;
    if !change {
        return Ok((listed, described, 0, 0));
    }
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = id.clone();
    leave.member_id = StrBytes::from_static_str("nobody");
    let left = client.send(1, &leave)?.error_code;
    let mut delete = DeleteGroupsRequest::default();
    delete.groups_names = vec![id];
    let deleted = client.send(2, &delete)?.results.first().context("one group deleted")?.error_code;
    Ok((listed, described, left, deleted))
}

/// Segment files (`*.log`) of `topic`'s partition 0 in node `i`'s data dir, by base offset.
fn segment_files(cluster: &TestCluster, i: usize, topic: &str) -> Result<Vec<String>> {
    let dir = cluster.node(i).data_dir().join("partitions").join(format!("{topic}-0"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    Ok(names)
}

#[test]
fn retention_decided_by_the_leader_deletes_the_same_prefix_on_every_replica() -> Result<()> {
    use rdkafka::admin::{NewTopic, TopicReplication};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let _one = serial();
    let cluster = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, &[("SLUICE_PLUGINS__RETENTION_CHECK_INTERVAL_MS", "300")])?;
    let topic = "retained";
    let admin: AdminClient<DefaultClientContext> = client_config(&cluster.bootstrap()).create()?;
    // Replication factor -1, as `kafka-topics --create` without the flag and the Java admin
    // client send it: the cluster's default, every node.
    let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("segment.bytes", "1024").set("retention.bytes", "3072");
    eventually("creating the topic", || {
        let created = futures::executor::block_on(admin.create_topics([&new_topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))?;
        ensure!(created.iter().all(|r| r.is_ok() || matches!(r, Err((_, rdkafka::error::RDKafkaErrorCode::TopicAlreadyExists)))), "{created:?}");
        Ok(())
    })?;
    cluster.wait_for_leader(topic, 0, None, PATIENCE)?;
    let producer: FutureProducer = sluice_tests::producer_config(&cluster.bootstrap()).set("linger.ms", "0").create()?;
    let value = "v".repeat(200);
    for i in 0..100 {
        let key = i.to_string();
        let delivery = producer.send_result(FutureRecord::to(topic).partition(0).key(&key).payload(&value)).map_err(|(e, _)| anyhow::anyhow!("record {i}: {e}"))?;
        futures::executor::block_on(delivery)?.map_err(|(e, _)| anyhow::anyhow!("record {i}: {e}"))?;
    }
    // The leader's policy drops whole segments below its decision, and so does every follower,
    // through the same Raft entry: the nodes end up holding the very same segments.
    let agreed = eventually("the same segments on every node", || {
        let files: Vec<Vec<String>> = (0..3).map(|i| segment_files(&cluster, i, topic)).collect::<Result<_>>()?;
        ensure!(files.windows(2).all(|w| w[0] == w[1]), "nodes hold different segments: {files:?}");
        ensure!(files[0].first().is_some_and(|f| !f.starts_with("00000000000000000000")), "nothing deleted yet: {files:?}");
        Ok(files[0].clone())
    })?;
    eprintln!("every node keeps {agreed:?}");
    Ok(())
}

/// The metric names a Grafana dashboard's queries use.
fn dashboard_metrics(dashboard: &serde_json::Value, into: &mut std::collections::BTreeSet<String>) {
    match dashboard {
        serde_json::Value::Object(fields) => {
            for (key, value) in fields {
                match (key.as_str(), value) {
                    ("expr" | "query", serde_json::Value::String(expr)) => {
                        let mut rest = expr.as_str();
                        while let Some(at) = rest.find("sluice_") {
                            let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                            rest = &rest[at + name.len()..];
                            into.insert(name);
                        }
                    }
                    _ => dashboard_metrics(value, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| dashboard_metrics(item, into)),
        _ => {}
    }
}

/// Every metric the shipped Grafana dashboard (deploy/grafana/sluice.json) queries is exported
/// by a running cluster with a plugin loaded, some writes and a consumer group's commit.
#[test]
fn every_metric_the_dashboard_queries_is_exported() -> Result<()> {
    let _one = serial();
    let cluster = cluster_with_topic()?;
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/sluice.json"))?)?;
    let mut wanted = std::collections::BTreeSet::new();
    dashboard_metrics(&dashboard, &mut wanted);
    ensure!(wanted.len() >= 15, "the dashboard queries only {wanted:?}");

    cli(&cluster, 0, &["plugin", "load", ECHO_CODEC_COMPONENT, "--name", "echo", "--version", "1"])?;
    let workload = crate::start_workload(&cluster, "dashboard")?;
    let mut committed = TopicPartitionList::new();
    committed.add_partition_offset(TOPIC, 0, Offset::Offset(1))?;
    eventually("a commit through the cluster", || {
        group_consumer(&cluster.bootstrap(), "dashboard")?.commit(&committed, CommitMode::Sync)?;
        Ok(())
    })?;
    let missing = eventually("every dashboard metric exported", || {
        let mut exported = std::collections::BTreeSet::new();
        for i in cluster.live().collect::<Vec<_>>() {
            for line in cluster.node(i).metrics()?.lines().filter(|l| !l.starts_with('#')) {
                exported.insert(line.split(['{', ' ']).next().unwrap_or("").to_string());
            }
        }
        let missing: Vec<&String> = wanted.iter().filter(|m| !exported.contains(*m)).collect();
        if missing.is_empty() { Ok(()) } else { bail!("not exported: {missing:?}") }
    });
    drop(workload);
    missing
}
