//! WebAssembly plugins on a live broker: retention policies swapped through the CLI and
//! through Kafka's IncrementalAlterConfigs really delete segments, without a restart; hostile
//! components are refused or contained with a clear error while the broker keeps serving.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_tests::{Broker, RawClient};
use tempfile::TempDir;

use crate::{create_topic, producer, runtime};

const SET: i8 = 0;

/// A broker that evaluates retention every 200 ms.
fn plugin_broker() -> Result<(TempDir, Broker)> {
    let dir = tempfile::tempdir()?;
    // Results over 4 MiB are refused (the huge-output codec returns 8 MiB). Calls may run 2 s,
    // so on a loaded machine only the infinite loop ever reaches the deadline.
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"))
        .env("SLUICE_PLUGINS__RETENTION_CHECK_INTERVAL_MS", "200")
        .env("SLUICE_PLUGINS__MAX_OUTPUT_BYTES", "4194304")
        .env("SLUICE_PLUGINS__CALL_TIMEOUT_MS", "2000");
    broker.start()?;
    Ok((dir, broker))
}

/// Runs `sluice plugin ...` against the broker; returns stdout, or the error output.
fn cli(broker: &Broker, args: &[&str]) -> Result<String, String> {
    let rpc = broker.rpc_addr().expect("broker started").to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("plugin")
        .args(["--rpc-addr", &rpc])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).to_string())
    }
}

fn segment_count(data_dir: &Path, topic: &str) -> Result<usize> {
    let dir = data_dir.join("partitions").join(format!("{topic}-0"));
    Ok(std::fs::read_dir(dir)?.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "log")).count())
}

fn earliest(bootstrap: &str, topic: &str) -> Result<i64> {
    let consumer: BaseConsumer = sluice_tests::consumer_config(bootstrap).create()?;
    Ok(consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?.0)
}

/// Waits until the partition has exactly `segments` segment files.
fn wait_for_segments(broker: &Broker, topic: &str, segments: usize) -> Result<()> {
    let started = Instant::now();
    loop {
        let n = segment_count(broker.data_dir(), topic)?;
        if n == segments {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{topic} still has {n} segments, expected {segments}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alter(client: &mut RawClient, topic: &str, configs: &[(&str, &str)]) -> Result<(i16, String)> {
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_string(topic.to_string());
    resource.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = AlterableConfig::default();
            c.name = StrBytes::from_string(k.to_string());
            c.config_operation = SET;
            c.value = Some(StrBytes::from_string(v.to_string()));
            c
        })
        .collect();
    let mut request = IncrementalAlterConfigsRequest::default();
    request.resources = vec![resource];
    let response = client.send(1, &request)?;
    let r = &response.responses[0];
    Ok((r.error_code, r.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default()))
}

fn fill(bootstrap: &str, topic: &str, records: usize) -> Result<()> {
    runtime().block_on(async {
        let producer: FutureProducer = producer(bootstrap).set("linger.ms", "0").create()?;
        for i in 0..records {
            let value = format!("{i:04}-{}", "r".repeat(200));
            producer.send(FutureRecord::to(topic).key("k").payload(&value), Duration::from_secs(10)).await.map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    })
}

#[test]
fn retention_policy_swaps_on_a_live_topic() -> Result<()> {
    let (_dir, broker) = plugin_broker()?;
    let bootstrap = broker.bootstrap();
    // Small segments, and a time-and-size policy that keeps everything.
    let configs = [("segment.bytes", "1024"), ("retention.ms", "-1"), ("retention.bytes", "-1")];
    runtime().block_on(create_topic(&bootstrap, "swap", 1, &configs))?;
    fill(&bootstrap, "swap", 40)?;
    let before = segment_count(broker.data_dir(), "swap")?;
    ensure!(before >= 8, "expected many segments, found {before}");
    std::thread::sleep(Duration::from_millis(600));
    ensure!(segment_count(broker.data_dir(), "swap")? == before && earliest(&bootstrap, "swap")? == 0, "time-and-size with no limits deleted data");

    // Through the CLI: keep the newest three segments.
    let bound = cli(&broker, &["bind", "--kind", "retention", "--topic", "swap", "keep-last-segments", "--param", "segments=3"]).map_err(anyhow::Error::msg)?;
    ensure!(bound.contains("keep-last-segments"), "bind said: {bound}");
    wait_for_segments(&broker, "swap", 3)?;
    let start = earliest(&bootstrap, "swap")?;
    ensure!(start > 0, "ListOffsets earliest did not move");

    // Through Kafka's IncrementalAlterConfigs: keep only two.
    let mut client = RawClient::connect(broker.addr())?;
    ensure!(alter(&mut client, "swap", &[("sluice.plugin.param.segments", "2")])?.0 == 0);
    wait_for_segments(&broker, "swap", 2)?;
    ensure!(earliest(&bootstrap, "swap")? > start);

    // Back to time-and-size, now with a size limit: only the active segment stays.
    ensure!(alter(&mut client, "swap", &[("sluice.retention.policy", "time-and-size"), ("retention.bytes", "1")])?.0 == 0);
    wait_for_segments(&broker, "swap", 1)?;

    // A binding to a plugin that is not loaded, or with parameters it refuses, changes nothing.
    let (code, message) = alter(&mut client, "swap", &[("sluice.retention.policy", "no-such-policy")])?;
    ensure!(code == 40 && message.contains("no-such-policy"), "{code}: {message}");
    let refused = cli(&broker, &["bind", "--kind", "retention", "--topic", "swap", "keep-last-segments", "--param", "segments=zero"]);
    ensure!(refused.is_err(), "a bad parameter was accepted: {refused:?}");
    let described = cli(&broker, &["describe", "--kind", "retention", "--topic", "swap"]).map_err(anyhow::Error::msg)?;
    ensure!(described.contains("time-and-size"), "{described}");
    Ok(())
}

#[test]
fn hostile_plugins_are_refused_or_contained() -> Result<()> {
    let (_dir, mut broker) = plugin_broker()?;
    let bootstrap = broker.bootstrap();
    use sluice_tests::plugins::*;
    let load = |file: &str, extra: &[&str]| {
        let mut args = vec!["load", file];
        args.extend_from_slice(extra);
        cli(&broker, &args)
    };
    for (what, file, kind, expected) in [
        ("a memory bomb", MEMORY_BOMB_CODEC_COMPONENT, "codec", "trapped"),
        ("a huge output", HUGE_OUTPUT_CODEC_COMPONENT, "codec", "more than allowed"),
        ("the wrong world", ECHO_CODEC_COMPONENT, "retention", "does not export the retention-plugin world"),
        ("a filesystem import", FILESYSTEM_CODEC_COMPONENT, "codec", "imports wasi:filesystem"),
    ] {
        let outcome = load(file, &["--kind", kind]);
        let Err(message) = outcome else { bail!("{what} was loaded: {outcome:?}") };
        ensure!(message.contains(expected), "{what}: unclear error {message:?}");
        eprintln!("{what}: refused: {}", message.trim());
    }
    let refused = load("/no/such/file.wasm", &[]);
    ensure!(refused.is_err());
    let junk = broker.data_dir().join("junk.wasm");
    std::fs::write(&junk, b"\0asm but not really a component")?;
    let refused = load(junk.to_str().expect("utf-8 path"), &[]);
    ensure!(refused.as_ref().is_err_and(|m| m.contains("not a valid component")), "{refused:?}");

    // A policy that loads but traps on every real partition: it deletes nothing, is
    // quarantined after repeated failures, and the broker goes on serving.
    let loaded = load(TRAPPING_RETENTION_COMPONENT, &["--name", "trapper", "--version", "1"]).map_err(anyhow::Error::msg)?;
    ensure!(loaded.contains("trapper@1"), "{loaded}");
    runtime().block_on(create_topic(&bootstrap, "victim", 1, &[("segment.bytes", "1024"), ("sluice.retention.policy", "trapper")]))?;
    fill(&bootstrap, "victim", 20)?;
    let segments = segment_count(broker.data_dir(), "victim")?;
    let started = Instant::now();
    while !cli(&broker, &["list"]).map_err(anyhow::Error::msg)?.lines().any(|l| l.contains("trapper") && l.contains("quarantined")) {
        ensure!(started.elapsed() < Duration::from_secs(30), "the trapping policy was never quarantined");
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(segment_count(broker.data_dir(), "victim")? == segments && earliest(&bootstrap, "victim")? == 0, "a failing policy deleted data");
    let failures = |plugin: &str, reason: &str| -> Result<f64> {
        let text = broker.metrics()?;
        let line = text.lines().find(|l| {
            l.starts_with("sluice_plugin_failures_total{") && l.contains(&format!("plugin=\"{plugin}\"")) && l.contains(&format!("reason=\"{reason}\""))
        });
        Ok(line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0))
    };
    let traps = failures("trapper", "trap")?;
    ensure!(traps >= 5.0, "traps counted: {traps}");

    let acks = runtime().block_on(crate::produce(&producer(&bootstrap), "victim", &["still serving".to_string()]))?;
    ensure!(acks.len() == 1);
    ensure!(broker.is_running());
    Ok(())
}
