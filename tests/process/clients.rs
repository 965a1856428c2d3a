//! Stock clients against one broker: every wire codec, idempotence, acks=0, admin operations and
//! topic configs, ListOffsets, a fetch from the middle of a batch, and kcat.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Result, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::{by_partition, consume, create_topic, produce, producer, runtime, start_broker};

#[test]
fn every_wire_codec_round_trips() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime();
    rt.block_on(create_topic(&bootstrap, "codecs", 3, &[]))?;
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let mut expected = BTreeSet::new();
    for codec in codecs {
        let mut config = producer(&bootstrap);
        config.set("compression.type", codec).set("linger.ms", "20");
        let values: Vec<String> = (0..200).map(|i| format!("{codec}-{i:04}-{}", "x".repeat(i % 50))).collect();
        let acks = rt.block_on(produce(&config, "codecs", &values))?;
        ensure!(acks.len() == values.len());
        expected.extend(values);
    }
    let records = consume(&bootstrap, "codecs", 3, expected.len(), Duration::from_secs(60))?;
    by_partition(&records)?;
    let got: Vec<String> = records.iter().map(|r| String::from_utf8(r.value.clone()).unwrap()).collect();
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    ensure!(got.len() == expected.len(), "read {} records, produced {}", got.len(), expected.len());
    ensure!(unique == expected, "the values read differ from the values produced");
    Ok(())
}

#[test]
fn idempotent_producer_writes_each_record_once_in_order() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime();
    rt.block_on(create_topic(&bootstrap, "idem", 2, &[]))?;
    let mut config = producer(&bootstrap);
    config.set("enable.idempotence", "true").set("linger.ms", "1").set("batch.num.messages", "50");
    let values: Vec<String> = (0..3000).map(|i| format!("{i:06}")).collect();
    let acks = rt.block_on(produce(&config, "idem", &values))?;
    let records = consume(&bootstrap, "idem", 2, values.len(), Duration::from_secs(60))?;
    ensure!(records.len() == values.len(), "read {} of {}", records.len(), values.len());
    // Within a partition, the idempotent producer's order is the send order.
    for (partition, got) in by_partition(&records)? {
        let mut sorted = got.clone();
        sorted.sort();
        ensure!(got == sorted, "partition {partition} is out of send order");
    }
    // Each acknowledged offset holds exactly the value it acknowledged.
    let at: HashMap<(i32, i64), String> =
        records.iter().map(|r| ((r.partition, r.offset), String::from_utf8(r.value.clone()).unwrap())).collect();
    for (value, partition, offset) in acks {
        ensure!(at.get(&(partition, offset)) == Some(&value), "ack for {value} at {partition}/{offset} does not match");
    }
    Ok(())
}

#[test]
fn acks_zero_records_are_stored() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime();
    rt.block_on(create_topic(&bootstrap, "fire-and-forget", 1, &[]))?;
    let mut config = producer(&bootstrap);
    config.set("acks", "0");
    let values: Vec<String> = (0..500).map(|i| format!("a0-{i}")).collect();
    rt.block_on(produce(&config, "fire-and-forget", &values))?;
    let records = consume(&bootstrap, "fire-and-forget", 1, values.len(), Duration::from_secs(60))?;
    let got: Vec<String> = records.iter().map(|r| String::from_utf8(r.value.clone()).unwrap()).collect();
    ensure!(got == values, "acks=0 records: read {} of {}", got.len(), values.len());
    // acks=0 produces get no response, but the broker still counts what it stored.
    let produced = broker.metric("sluice_produce_bytes_total{node=\"1\"}")?.unwrap_or(0.0);
    ensure!(produced > 500.0 * 4.0, "produce bytes metric: {produced}");
    ensure!(broker.metric("sluice_kafka_requests_total{api=\"Produce\",node=\"1\"}")?.is_some_and(|n| n >= 1.0));
    Ok(())
}

#[test]
fn admin_creates_describes_alters_and_deletes_topics() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime();
    rt.block_on(async {
        let admin: AdminClient<DefaultClientContext> = sluice_tests::client_config(&bootstrap).create()?;
        let opts = AdminOptions::new();
        let topic = NewTopic::new("cfg", 2, TopicReplication::Fixed(1)).set("retention.ms", "123456").set("cleanup.policy", "compact");
        let created = admin.create_topics([&topic], &opts).await?;
        ensure!(created[0].is_ok(), "create: {:?}", created[0]);

        let again = admin.create_topics([&topic], &opts).await?;
        ensure!(matches!(&again[0], Err((_, RDKafkaErrorCode::TopicAlreadyExists))), "{:?}", again[0]);
        let bad_config = NewTopic::new("bad-config", 1, TopicReplication::Fixed(1)).set("retention.ms", "soon");
        let refused = admin.create_topics([&bad_config], &opts).await?;
        ensure!(matches!(&refused[0], Err((_, RDKafkaErrorCode::InvalidConfig))), "{:?}", refused[0]);
        let replicated = NewTopic::new("rf3", 1, TopicReplication::Fixed(3));
        let refused = admin.create_topics([&replicated], &opts).await?;
        ensure!(matches!(&refused[0], Err((_, RDKafkaErrorCode::InvalidReplicationFactor))), "{:?}", refused[0]);
        let bad_name = NewTopic::new("no/slashes", 1, TopicReplication::Fixed(1));
        let refused = admin.create_topics([&bad_name], &opts).await?;
        ensure!(matches!(&refused[0], Err((_, RDKafkaErrorCode::InvalidTopic))), "{:?}", refused[0]);

        let described = admin.describe_configs([&ResourceSpecifier::Topic("cfg")], &opts).await?;
        let resource = described[0].as_ref().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let retention = resource.get("retention.ms").expect("retention.ms reported");
        ensure!(retention.value.as_deref() == Some("123456"));
        ensure!(retention.source == ConfigSource::DynamicTopic);
        let segment = resource.get("segment.bytes").expect("segment.bytes reported");
        ensure!(segment.source == ConfigSource::Default);
        ensure!(resource.get("cleanup.policy").and_then(|e| e.value.as_deref()) == Some("compact"));

        // librdkafka's AlterConfigs replaces every override of the resource.
        let alter = AlterConfig::new(ResourceSpecifier::Topic("cfg")).set("retention.bytes", "1048576");
        let altered = admin.alter_configs([&alter], &opts).await?;
        ensure!(altered[0].is_ok(), "alter: {:?}", altered[0]);
        let described = admin.describe_configs([&ResourceSpecifier::Topic("cfg")], &opts).await?;
        let resource = described[0].as_ref().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ensure!(resource.get("retention.bytes").and_then(|e| e.value.as_deref()) == Some("1048576"));
        ensure!(resource.get("retention.ms").is_some_and(|e| e.source == ConfigSource::Default));

        let grown = admin.create_partitions([&NewPartitions::new("cfg", 5)], &opts).await?;
        ensure!(grown[0].is_ok(), "create partitions: {:?}", grown[0]);
        let shrink = admin.create_partitions([&NewPartitions::new("cfg", 3)], &opts).await?;
        ensure!(matches!(&shrink[0], Err((_, RDKafkaErrorCode::InvalidPartitions))), "{:?}", shrink[0]);
        let metadata = admin.inner().fetch_metadata(Some("cfg"), Duration::from_secs(10))?;
        ensure!(metadata.topics()[0].partitions().len() == 5);

        let deleted = admin.delete_topics(&["cfg"], &opts).await?;
        ensure!(deleted[0].is_ok(), "delete: {:?}", deleted[0]);
        let missing = admin.delete_topics(&["cfg"], &opts).await?;
        ensure!(matches!(&missing[0], Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))), "{:?}", missing[0]);
        let metadata = admin.inner().fetch_metadata(Some("cfg"), Duration::from_secs(10))?;
        ensure!(metadata.topics()[0].error().is_some(), "deleted topic still in metadata");
        Ok(())
    })
}

#[test]
fn list_offsets_by_time_and_watermarks() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime();
    rt.block_on(create_topic(&bootstrap, "times", 1, &[]))?;
    let base = 1_700_000_000_000i64;
    rt.block_on(async {
        let producer: FutureProducer = producer(&bootstrap).set("linger.ms", "0").create()?;
        for i in 0..20i64 {
            // One record per batch, sent one at a time, so each batch has its own timestamp.
            let value = format!("t{i}");
            producer
                .send(FutureRecord::to("times").key("k").payload(&value).timestamp(base + i * 1000), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let consumer: BaseConsumer = sluice_tests::consumer_config(&bootstrap).create()?;
    let (low, high) = consumer.fetch_watermarks("times", 0, Duration::from_secs(10))?;
    ensure!((low, high) == (0, 20), "watermarks {low}..{high}");
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition_offset("times", 0, Offset::Offset(base + 7000))?;
    let found = consumer.offsets_for_times(wanted, Duration::from_secs(10))?;
    ensure!(found.find_partition("times", 0).map(|p| p.offset()) == Some(Offset::Offset(7)));
    let mut later = TopicPartitionList::new();
    later.add_partition_offset("times", 0, Offset::Offset(base + 999_000))?;
    let found = consumer.offsets_for_times(later, Duration::from_secs(10))?;
    ensure!(found.find_partition("times", 0).map(|p| p.offset()) == Some(Offset::End), "{found:?}");
    Ok(())
}

#[test]
fn fetch_from_the_middle_of_a_batch() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime();
    rt.block_on(create_topic(&bootstrap, "middle", 1, &[]))?;
    let mut config = producer(&bootstrap);
    // All ten records wait in one batch.
    config.set("linger.ms", "200");
    let values: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    rt.block_on(produce(&config, "middle", &values))?;
    let consumer: BaseConsumer = sluice_tests::consumer_config(&bootstrap).create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("middle", 0, Offset::Offset(6))?;
    consumer.assign(&assignment)?;
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 4 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            use rdkafka::Message;
            got.push((m.offset(), String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string()));
        }
    }
    let expected: Vec<(i64, String)> = (6..10).map(|i| (i, format!("m{i}"))).collect();
    ensure!(got == expected, "{got:?}");
    Ok(())
}

#[test]
fn kcat_produces_and_consumes() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime();
    rt.block_on(create_topic(&bootstrap, "kcat", 1, &[]))?;
    let lines: Vec<String> = (0..100).map(|i| format!("line-{i}")).collect();
    let mut producer = Command::new("kcat")
        .args(["-P", "-b", &bootstrap, "-t", "kcat", "-z", "snappy", "-X", "broker.address.family=v4"])
        .stdin(Stdio::piped())
        .spawn()?;
    producer.stdin.take().expect("piped stdin").write_all((lines.join("\n") + "\n").as_bytes())?;
    ensure!(producer.wait()?.success(), "kcat -P failed");
    let output = Command::new("kcat")
        .args(["-C", "-b", &bootstrap, "-t", "kcat", "-o", "beginning", "-e", "-q", "-X", "broker.address.family=v4"])
        .output()?;
    ensure!(output.status.success(), "kcat -C failed: {}", String::from_utf8_lossy(&output.stderr));
    let got: Vec<String> = String::from_utf8(output.stdout)?.lines().map(str::to_string).collect();
    ensure!(got == lines, "kcat read {} lines: {:?}", got.len(), got.iter().take(3).collect::<Vec<_>>());
    // And librdkafka reads what kcat wrote.
    let records = consume(&bootstrap, "kcat", 1, lines.len(), Duration::from_secs(30))?;
    ensure!(records.len() == lines.len());
    Ok(())
}

/// kcat over TLS (Kafka's `SSL` security protocol), verifying the broker's certificate; a
/// plain-text client on the TLS port gets nothing and costs only its connection.
#[test]
fn kcat_over_tls_and_a_plain_client_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut broker, ca) = crate::start_tls_broker(dir.path())?;
    let bootstrap = broker.bootstrap();
    let ca = ca.display().to_string();
    let tls = ["-X", "security.protocol=ssl", "-X", "broker.address.family=v4"];
    // cargo points LD_LIBRARY_PATH at the build's own librdkafka, which has no OpenSSL: kcat
    // must load the system's.
    let kcat = || {
        let mut command = Command::new("kcat");
        command.env_remove("LD_LIBRARY_PATH");
        command
    };
    let lines: Vec<String> = (0..50).map(|i| format!("secret-{i}")).collect();
    let mut producer = kcat()
        .args(["-P", "-b", &bootstrap, "-t", "sealed"])
        .args(tls)
        .args(["-X", &format!("ssl.ca.location={ca}")])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    producer.stdin.take().expect("piped stdin").write_all((lines.join("\n") + "\n").as_bytes())?;
    let produced = producer.wait_with_output()?;
    ensure!(produced.status.success(), "kcat -P over TLS failed: {}", String::from_utf8_lossy(&produced.stderr));
    let output = kcat()
        .args(["-C", "-b", &bootstrap, "-t", "sealed", "-o", "beginning", "-e", "-q"])
        .args(tls)
        .args(["-X", &format!("ssl.ca.location={ca}")])
        .output()?;
    ensure!(output.status.success(), "kcat -C over TLS failed: {}", String::from_utf8_lossy(&output.stderr));
    let got: Vec<String> = String::from_utf8(output.stdout)?.lines().map(str::to_string).collect();
    ensure!(got == lines, "kcat read {} lines over TLS", got.len());

    let mut plain = sluice_tests::RawClient::connect(broker.addr())?;
    let _ = plain.send_only(3, &kafka_protocol::messages::ApiVersionsRequest::default());
    // At most a TLS alert record (content type 21), never a Kafka response, then the close.
    let answer = plain.read_until_closed()?;
    ensure!(answer.first().is_none_or(|&b| b == 21), "a plain-text client on the TLS port got {answer:?}");
    ensure!(broker.is_running(), "the broker died");
    Ok(())
}
