//! Snapshots on a live node: the bound snapshot trigger decides when the metadata group is
//! snapshotted, and swapping it takes effect without a restart; a trigger that loops is
//! stopped at its deadline, quarantined, and the built-in thresholds apply instead.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use sluice_tests::{Broker, raw};

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

/// A topic config as the broker describes it.
fn topic_config(broker: &Broker, topic: &str, key: &str) -> Result<Option<String>> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = sluice_tests::client_config(&broker.bootstrap()).create()?;
    let described = runtime().block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new()))?;
    let resource = described.into_iter().next().ok_or_else(|| anyhow::anyhow!("no resource"))?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(resource.get(key).and_then(|entry| entry.value.clone()))
}

/// The id `metadata.json` records for `topic`.
fn topic_id(broker: &Broker, topic: &str) -> Result<Option<String>> {
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(broker.data_dir().join("metadata.json"))?)?;
    Ok(file["topics"].as_array().and_then(|ts| ts.iter().find(|t| t["name"] == topic)).and_then(|t| t["id"].as_str().map(str::to_string)))
}

#[test]
fn a_new_cluster_is_restored_from_the_newest_readable_snapshot_of_a_lost_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let url = format!("file://{}", store.display());
    let mut lost = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("lost")).env("SLUICE_SNAPSHOT__STORE", &url);
    lost.start()?;
    // A custom codec compresses the snapshots: the new cluster must load it from the store
    // before it can read them.
    sluice(&lost, &["plugin", "load", sluice_tests::plugins::ECHO_CODEC_COMPONENT, "--name", "echo", "--version", "1"])?;
    sluice(&lost, &["plugin", "bind", "--kind", "codec", "echo@1"])?;
    sluice(&lost, &["plugin", "bind", "--kind", "trigger", "entries-or-age", "--param", "entries=7"])?;
    let configs = [("retention.ms", "123456"), ("sluice.retention.policy", "keep-last-segments"), ("sluice.plugin.param.segments", "2")];
    runtime().block_on(create_topic(&lost.bootstrap(), "orders", 3, &configs))?;
    let older = sluice(&lost, &["snapshot", "create"])?;
    ensure!(older.contains("echo"), "{older}");
    runtime().block_on(create_topic(&lost.bootstrap(), "later", 1, &[]))?;
    sluice(&lost, &["snapshot", "create"])?;
    let orders_id = topic_id(&lost, "orders")?;
    lost.kill9();

    // The newest snapshot is damaged: a flipped byte in its chunk. The restore says nothing
    // of it to the client but uses the older one.
    let newest = std::fs::read_dir(store.join("snapshots/0"))?.filter_map(|e| e.ok()).map(|e| e.path()).max().expect("two snapshots");
    let chunk = std::fs::read_dir(&newest)?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.to_string_lossy().ends_with("-000000")).expect("a first chunk");
    let mut bytes = std::fs::read(&chunk)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&chunk, bytes)?;

    let mut fresh = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("fresh"));
    fresh.start()?;
    let restored = sluice(&fresh, &["cluster", "restore", "--store", &url])?;
    ensure!(restored.contains("1 topics"), "the older snapshot holds one topic: {restored}");
    ensure!(topic_id(&fresh, "orders")? == orders_id, "the topic keeps its id");
    ensure!(topic_id(&fresh, "later")?.is_none(), "the damaged snapshot was not used");
    for (key, value) in configs {
        ensure!(topic_config(&fresh, "orders", key)?.as_deref() == Some(value), "{key} not restored");
    }
    let plugins = sluice(&fresh, &["plugin", "list"])?;
    ensure!(plugins.lines().any(|l| l.contains("echo")), "{plugins}");
    ensure!(sluice(&fresh, &["plugin", "describe", "--kind", "codec"])?.contains("echo"));
    ensure!(sluice(&fresh, &["plugin", "describe", "--kind", "trigger"])?.contains("entries=7"));
    // The restored topic serves: it starts empty, with all its partitions.
    let acks = runtime().block_on(crate::produce(&crate::producer(&fresh.bootstrap()), "orders", &["after the restore".to_string()]))?;
    ensure!(acks.len() == 1);
    let consumer: rdkafka::consumer::BaseConsumer = sluice_tests::consumer_config(&fresh.bootstrap()).create()?;
    let metadata = rdkafka::consumer::Consumer::fetch_metadata(&consumer, Some("orders"), Duration::from_secs(10))?;
    ensure!(metadata.topics()[0].partitions().len() == 3);

    // A cluster that has topics of its own is not overwritten.
    let again = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["cluster", "restore", "--store", &url, "--rpc-addr", &fresh.rpc_addr().expect("started").to_string()])
        .output()?;
    ensure!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("new, empty cluster"), "{again:?}");
    Ok(())
}

/// The segment files of partition 0 of the offsets topic, oldest first.
fn offsets_segments(broker: &Broker) -> Result<Vec<String>> {
    sluice_tests::log_segments(&broker.data_dir().join("partitions").join("__consumer_offsets-0"))
}

#[test]
fn the_offsets_log_is_compacted_below_its_snapshots_and_a_restart_keeps_every_commit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"))
        .env("SLUICE_GROUPS__OFFSETS_TOPIC_PARTITIONS", "1")
        .env("SLUICE_GROUPS__OFFSETS_SEGMENT_BYTES", "1024")
        .env("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "100")
        .env("SLUICE_SNAPSHOT__KEEP_ENTRIES", "0");
    broker.start()?;
    runtime().block_on(create_topic(&broker.bootstrap(), "raw", 1, &[]))?;
    sluice(&broker, &["plugin", "bind", "--kind", "trigger", "entries-or-age", "--param", "entries=10"])?;
    let mut client = sluice_tests::RawClient::connect(broker.addr())?;
    // One group commits once, early: after compaction only the snapshot holds its offset.
    ensure!(raw::commit(&mut client, "early", "", -1, 7)? == 0);
    for offset in 0..80 {
        ensure!(raw::commit(&mut client, "busy", "", -1, offset)? == 0);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while offsets_segments(&broker)?.first().is_none_or(|f| f.starts_with("00000000000000000000")) {
        ensure!(Instant::now() < deadline, "the offsets log was never compacted: {:?}", offsets_segments(&broker)?);
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(metric(&broker, "sluice_snapshots_taken_total{kind=\"offsets\",node=\"1\"}")? >= 1.0);
    let listed = sluice(&broker, &["snapshot", "list"])?;
    ensure!(listed.lines().any(|l| l.contains("__consumer_offsets-0")), "{listed}");

    // The restart loads the snapshot kept beside the compacted log, then replays the log.
    broker.kill9();
    broker.start()?;
    let mut client = sluice_tests::RawClient::connect(broker.addr())?;
    ensure!(raw::fetch_committed(&mut client, "early")?.0 == 7, "the early group's commit was lost");
    ensure!(raw::fetch_committed(&mut client, "busy")?.0 == 79, "the busy group's last commit was lost");
    ensure!(offsets_segments(&broker)?.first().is_some_and(|f| !f.starts_with("00000000000000000000")));
    Ok(())
}

/// An S3-compatible server (`moto_server`, from PyPI's `moto[server]`) on a free loopback port,
/// stopped when dropped.
#[cfg(feature = "s3")]
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

#[cfg(feature = "s3")]
impl S3Server {
    fn start() -> Result<S3Server> {
        use std::io::{Read, Write};
        let port = sluice_tests::free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting moto_server (pip install 'moto[server]'): {e}"))?;
        let server = S3Server { child, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut connected = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => break stream,
                Err(e) => ensure!(Instant::now() < deadline, "moto_server never listened: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // Every cluster's store lives in one bucket, under its own prefix.
        write!(connected, "PUT /sluice HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        connected.read_to_string(&mut answer)?;
        ensure!(answer.starts_with("HTTP/1.1 200"), "creating the bucket: {answer}");
        Ok(server)
    }

    /// A broker whose snapshot store is `s3://sluice/<prefix>` on this server.
    fn broker(&self, data_dir: &std::path::Path, prefix: &str) -> Broker {
        Broker::new(env!("CARGO_BIN_EXE_sluice"), data_dir)
            .env("SLUICE_SNAPSHOT__STORE", &format!("s3://sluice/{prefix}"))
            .env("SLUICE_SNAPSHOT__S3_ENDPOINT", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "sluice")
            .env("AWS_SECRET_ACCESS_KEY", "sluice")
            .env("AWS_REGION", "us-east-1")
    }
}

#[cfg(feature = "s3")]
impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "s3")]
#[test]
fn snapshots_round_trip_through_an_s3_compatible_server_and_restore_a_lost_cluster() -> Result<()> {
    let s3 = S3Server::start()?;
    let dir = tempfile::tempdir()?;
    let mut lost = s3.broker(&dir.path().join("lost"), "lost");
    lost.start()?;
    let configs = [("retention.ms", "654321")];
    runtime().block_on(create_topic(&lost.bootstrap(), "orders", 2, &configs))?;
    let created = sluice(&lost, &["snapshot", "create"])?;
    let listed = sluice(&lost, &["snapshot", "list", "--group", "0"])?;
    let newest = listed.lines().last().unwrap_or_default().to_string();
    ensure!(created.lines().last().is_some_and(|l| l == newest), "created {created}, listed {listed}");
    let orders_id = topic_id(&lost, "orders")?;
    ensure!(!lost.data_dir().join("object-store").exists(), "the snapshot went to a local store");
    lost.kill9();

    // A new node (its own store in S3 too, under another prefix), brought back from the lost one's.
    let mut fresh = s3.broker(&dir.path().join("fresh"), "fresh");
    fresh.start()?;
    let restored = sluice(&fresh, &["cluster", "restore", "--store", "s3://sluice/lost"])?;
    ensure!(restored.contains("1 topics"), "{restored}");
    ensure!(topic_id(&fresh, "orders")? == orders_id, "the topic keeps its id");
    ensure!(topic_config(&fresh, "orders", "retention.ms")?.as_deref() == Some("654321"));
    let acks = runtime().block_on(crate::produce(&crate::producer(&fresh.bootstrap()), "orders", &["after the restore".to_string()]))?;
    ensure!(acks.len() == 1);
    Ok(())
}

/// Produces `n` records of about 100 bytes to `partition` of `topic`, acks=all.
fn produce_to(broker: &Broker, topic: &str, partition: i32, n: usize) -> Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = crate::producer(&broker.bootstrap()).create()?;
    let value = "v".repeat(100);
    runtime().block_on(async {
        for _ in 0..n {
            producer.send(FutureRecord::<(), _>::to(topic).partition(partition).payload(&value), Duration::from_secs(30)).await.map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    })
}

/// The low and high watermarks of `partition` of `topic`.
fn watermarks(broker: &Broker, topic: &str, partition: i32) -> Result<(i64, i64)> {
    let consumer: rdkafka::consumer::BaseConsumer = sluice_tests::consumer_config(&broker.bootstrap()).create()?;
    Ok(rdkafka::consumer::Consumer::fetch_watermarks(&consumer, topic, partition, Duration::from_secs(10))?)
}

/// Group `readers`' committed offsets of `topic` partitions 0 and 1, through a consumer.
fn readers_committed(broker: &Broker, topic: &str) -> Result<Vec<rdkafka::Offset>> {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = sluice_tests::consumer_config(&broker.bootstrap()).set("group.id", "readers").create()?;
    let mut wanted = rdkafka::TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    wanted.add_partition(topic, 1);
    let committed = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
    Ok(committed.elements().iter().map(|e| e.offset()).collect())
}

#[test]
fn a_restored_cluster_resumes_at_the_lost_ones_offsets_with_its_committed_offsets() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let url = format!("file://{}", store.display());
    let mut lost = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("lost"))
        .env("SLUICE_SNAPSHOT__STORE", &url)
        .env("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "100")
        .env("SLUICE_PLUGINS__RETENTION_CHECK_INTERVAL_MS", "100")
        // One offsets partition here, the default eight in the new cluster.
        .env("SLUICE_GROUPS__OFFSETS_TOPIC_PARTITIONS", "1");
    lost.start()?;
    runtime().block_on(create_topic(&lost.bootstrap(), "orders", 2, &[("segment.bytes", "1024")]))?;
    produce_to(&lost, "orders", 0, 100)?;
    produce_to(&lost, "orders", 1, 10)?;
    // A group read part of partition 0 and all of partition 1.
    let consumer: rdkafka::consumer::BaseConsumer = sluice_tests::consumer_config(&lost.bootstrap()).set("group.id", "readers").create()?;
    use rdkafka::consumer::Consumer;
    let mut positions = rdkafka::TopicPartitionList::new();
    positions.add_partition_offset("orders", 0, rdkafka::Offset::Offset(40))?;
    positions.add_partition_offset("orders", 1, rdkafka::Offset::Offset(10))?;
    consumer.commit(&positions, rdkafka::consumer::CommitMode::Sync)?;
    // Retention drops the start of partition 0: its leader writes a descriptor (high watermark
    // 100); the offsets and the metadata are snapshotted by hand.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = sluice_tests::client_config(&lost.bootstrap()).create()?;
    let change = rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic("orders")).set("retention.bytes", "2048");
    runtime().block_on(admin.alter_configs([&change], &rdkafka::admin::AdminOptions::new()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sluice(&lost, &["snapshot", "list"])?.lines().any(|l| l.contains("orders-0")) {
        ensure!(Instant::now() < deadline, "no descriptor of orders-0 was written");
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(watermarks(&lost, "orders", 0)?.0 > 0, "retention deleted nothing");
    sluice(&lost, &["snapshot", "create", "--topic", "__consumer_offsets", "--partition", "0"])?;
    sluice(&lost, &["snapshot", "create"])?;
    lost.kill9();

    let mut fresh = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("fresh"));
    fresh.start()?;
    let restored = sluice(&fresh, &["cluster", "restore", "--store", &url])?;
    ensure!(restored.contains("2 committed offsets of 1 consumer groups"), "{restored}");
    // Partition 0 resumes at its descriptor's high watermark, partition 1 at its committed
    // offset: no offset a consumer saw is handed out again.
    ensure!(watermarks(&fresh, "orders", 0)? == (100, 100), "orders-0: {:?}", watermarks(&fresh, "orders", 0)?);
    ensure!(watermarks(&fresh, "orders", 1)? == (10, 10), "orders-1: {:?}", watermarks(&fresh, "orders", 1)?);
    let committed = readers_committed(&fresh, "orders")?;
    ensure!(committed == [rdkafka::Offset::Offset(40), rdkafka::Offset::Offset(10)], "committed {committed:?}");
    produce_to(&fresh, "orders", 0, 1)?;
    ensure!(watermarks(&fresh, "orders", 0)? == (100, 101));
    Ok(())
}

/// Produces one record to partition 0 of `topic` (one Raft entry: acks=all, one at a time).
fn one_entry(broker: &Broker, topic: &str) -> Result<()> {
    produce_to(broker, topic, 0, 1)
}

#[test]
fn a_topics_bound_trigger_decides_when_its_partition_is_snapshotted_and_swaps_live() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"))
        .env("SLUICE_SNAPSHOT__CHECK_INTERVAL_MS", "100")
        .env("SLUICE_PLUGINS__CALL_TIMEOUT_MS", "500");
    broker.start()?;
    runtime().block_on(create_topic(&broker.bootstrap(), "bound", 1, &[]))?;
    let taken = "sluice_snapshots_taken_total{kind=\"partition\",node=\"1\"}";
    let settle = || std::thread::sleep(Duration::from_millis(400));
    let taken_now = |b: &Broker| metric(b, taken);
    // Bound to the topic only: the cluster default (10,000 entries) never fires here.
    sluice(&broker, &["plugin", "bind", "--kind", "trigger", "--topic", "bound", "entries-or-age", "--param", "entries=5"])?;
    // A snapshot by hand to count from.
    let created = sluice(&broker, &["snapshot", "create", "--topic", "bound", "--partition", "0"])?;
    ensure!(created.contains("partition") && created.contains("bound-0"), "{created}");
    let wait_for = |count: f64| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while taken_now(&broker)? < count {
            ensure!(Instant::now() < deadline, "{} partition snapshots, {count} expected", taken_now(&broker)?);
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    settle();
    let start = taken_now(&broker)?;
    for round in 1..=3 {
        for _ in 0..4 {
            one_entry(&broker, "bound")?;
        }
        settle();
        ensure!(taken_now(&broker)? == start + f64::from(round - 1), "snapshotted before 5 entries (round {round})");
        one_entry(&broker, "bound")?;
        wait_for(start + f64::from(round))?;
    }
    let listed = sluice(&broker, &["snapshot", "list"])?;
    ensure!(listed.lines().any(|l| l.contains("partition") && l.contains("bound-0")), "{listed}");

    // Rebound, through Kafka's IncrementalAlterConfigs as a stock admin client does it, to
    // log-bytes with a threshold the log never reaches: no snapshot, however many entries.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = sluice_tests::client_config(&broker.bootstrap()).create()?;
    let rebind = |plugin: &str, param: &str| -> Result<()> {
        let change = rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic("bound")).set("sluice.snapshot.trigger", plugin).set("sluice.plugin.param.bytes", param);
        runtime().block_on(admin.alter_configs([&change], &rdkafka::admin::AdminOptions::new()))?;
        ensure!(topic_config(&broker, "bound", "sluice.snapshot.trigger")?.as_deref() == Some(plugin), "the binding did not change");
        Ok(())
    };
    rebind("log-bytes", "1000000000000")?;
    let before = taken_now(&broker)?;
    for _ in 0..12 {
        one_entry(&broker, "bound")?;
    }
    settle();
    ensure!(taken_now(&broker)? == before, "log-bytes (unreached) snapshotted anyway");
    rebind("log-bytes", "1")?;
    wait_for(before + 1.0)?;

    // A trigger that loops: its asks time out, it is quarantined, and the built-in thresholds
    // (10,000 entries or an hour) apply: no more snapshots of the topic.
    sluice(&broker, &["plugin", "load", sluice_tests::plugins::LOOPING_TRIGGER_COMPONENT, "--kind", "trigger", "--version", "1"])?;
    sluice(&broker, &["plugin", "bind", "--kind", "trigger", "--topic", "bound", "looping-trigger"])?;
    let quarantined = |b: &Broker| sluice(b, &["plugin", "list"]).map(|l| l.lines().any(|l| l.contains("looping-trigger") && l.contains("quarantined")));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !quarantined(&broker)? {
        ensure!(Instant::now() < deadline, "the looping trigger was never quarantined");
        one_entry(&broker, "bound")?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = taken_now(&broker)?;
    for _ in 0..6 {
        one_entry(&broker, "bound")?;
    }
    settle();
    ensure!(taken_now(&broker)? == before, "the fallback thresholds snapshotted early");
    ensure!(broker.is_running());
    Ok(())
}

/// RestoreOffsets takes only what a cluster restore sends: bytes that are not an offsets record
/// batch, and commits of another group than the one named, are refused as invalid, nothing is
/// committed, and the node goes on serving.
#[test]
fn restore_offsets_refuses_malformed_input_and_commits_nothing() -> Result<()> {
    use kafka_protocol::messages::OffsetFetchRequest;
    use sluice::admin::proto::RestoreOffsetsRequest;
    use sluice::admin::proto::admin_client::AdminClient;
    use sluice::offsets::{CommittedOffset, OffsetKey, encode_snapshot};

    let (_dir, mut broker) = crate::start_broker()?;
    runtime().block_on(create_topic(&broker.bootstrap(), "restored", 1, &[]))?;
    let rpc = broker.rpc_addr().ok_or_else(|| anyhow::anyhow!("no rpc address"))?;
    let commit = |group: &str| {
        let key = OffsetKey { group: group.into(), topic: "restored".into(), partition: 0 };
        (key, Some(CommittedOffset { offset: 42, leader_epoch: -1, metadata: String::new(), commit_timestamp: 0, expire_timestamp: None }))
    };
    let cases = [
        (b"\x00\x00\x00\x00\x00\x00\x00\x07not a batch".to_vec(), "garbage"),
        (encode_snapshot(&[commit("other")]).map_err(anyhow::Error::msg)?, "another group's commits"),
        (encode_snapshot(&[commit("mine")]).map_err(anyhow::Error::msg)?[..40].to_vec(), "a truncated batch"),
    ];
    runtime().block_on(async {
        let mut client = AdminClient::connect(format!("http://{rpc}")).await?;
        for (commits, what) in cases {
            let refused = client.restore_offsets(RestoreOffsetsRequest { group: "mine".into(), commits }).await;
            ensure!(refused.as_ref().is_err_and(|s| s.code() == tonic::Code::InvalidArgument), "{what}: {refused:?}");
        }
        anyhow::Ok(())
    })?;
    let mut client = sluice_tests::RawClient::connect(broker.addr())?;
    let mut fetch = OffsetFetchRequest::default();
    fetch.group_id = kafka_protocol::messages::GroupId(kafka_protocol::protocol::StrBytes::from_static_str("mine"));
    fetch.topics = None;
    let fetched = client.send(7, &fetch)?;
    ensure!(fetched.topics.iter().all(|t| t.partitions.iter().all(|p| p.committed_offset == -1)), "something was committed: {fetched:?}");
    ensure!(broker.is_running());
    Ok(())
}
