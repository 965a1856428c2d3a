//! `sluice-load`: a Kafka load generator built on librdkafka. It produces fixed-size records
//! at full speed or at a fixed rate, reports throughput and produce latency percentiles, then
//! consumes the topic back and counts the records of this run, which must equal the records
//! acknowledged. It speaks plain Kafka, so it measures any Kafka-compatible broker the same way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[derive(Debug, Parser)]
#[command(name = "sluice-load", about = "Produce, measure, consume back, count")]
struct Args {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic to use; created when missing.
    #[arg(long, default_value = "load")]
    topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Replication factor of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    replication: i32,
    /// Records to produce.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "1")]
    acks: String,
    /// Records per second; 0 produces as fast as the broker acknowledges.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// librdkafka linger.ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// librdkafka compression.type: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Most records waiting for an acknowledgement at once.
    #[arg(long, default_value_t = 50_000)]
    in_flight: usize,
    /// Skip reading the records back.
    #[arg(long)]
    no_consume: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure_topic(&args).await?;
    let run_tag = format!("{:016x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64);
    let produced = produce(&args, &run_tag).await?;
    let secs = produced.elapsed.as_secs_f64();
    let mut latencies = produced.latencies_us.clone();
    latencies.sort_unstable();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0);
    let bytes = produced.acked as f64 * args.size as f64;
    println!(
        "produce acks={} records={} acked={} failed={} seconds={:.3} records_per_sec={:.0} mb_per_sec={:.2} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        args.acks,
        args.records,
        produced.acked,
        produced.failed,
        secs,
        produced.acked as f64 / secs,
        bytes / secs / 1e6,
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    if !args.no_consume {
        let args_topic = args.topic.clone();
        let bootstrap = args.bootstrap.clone();
        let partitions = produced.partitions.clone();
        let acked = produced.acked;
        let tag = run_tag.clone();
        let (read, secs) = tokio::task::spawn_blocking(move || consume(&bootstrap, &args_topic, &partitions, &tag, acked)).await??;
        println!(
            "consume records_read={} expected={} seconds={:.3} mb_per_sec={:.2} match={}",
            read,
            acked,
            secs,
            read as f64 * args.size as f64 / secs / 1e6,
            read == acked
        );
        if read != acked {
            bail!("read back {read} records of this run, {acked} were acknowledged");
        }
    }
    Ok(())
}

async fn ensure_topic(args: &Args) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(&args.bootstrap).create()?;
    let topic = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(args.replication));
    let results = admin.create_topics([&topic], &AdminOptions::new()).await?;
    for r in results {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("creating {name}: {code:?}"),
        }
    }
    Ok(())
}

fn base_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("broker.address.family", "v4");
    c
}

struct Produced {
    acked: usize,
    failed: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    /// Partition -> first offset this run wrote there.
    partitions: HashMap<i32, i64>,
}

async fn produce(args: &Args, run_tag: &str) -> Result<Produced> {
    let mut config = base_config(&args.bootstrap);
    config
        .set("acks", &args.acks)
        .set("linger.ms", args.linger_ms.to_string())
        .set("compression.type", &args.compression)
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "60000");
    let producer: FutureProducer = config.create().context("creating the producer")?;
    // The value is the run tag, then padding: the consumer counts records by the tag.
    let mut value = run_tag.as_bytes().to_vec();
    value.resize(args.size.max(run_tag.len()), b'x');
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut out = Produced { acked: 0, failed: 0, elapsed: Duration::ZERO, latencies_us: Vec::with_capacity(args.records), partitions: HashMap::new() };
    let record = |result: Result<(i32, i64), ()>, sent_at: Instant, out: &mut Produced| match result {
        Ok((partition, offset)) => {
            out.acked += 1;
            out.latencies_us.push(sent_at.elapsed().as_micros() as u64);
            let first = out.partitions.entry(partition).or_insert(offset);
            *first = (*first).min(offset);
        }
        Err(()) => out.failed += 1,
    };
    for i in 0..args.records {
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate as f64);
            let now = Instant::now();
            if due > now {
                // Collect acknowledgements while waiting for the next send slot.
                let sleep = tokio::time::sleep(due - now);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        Some((r, at)) = pending.next(), if !pending.is_empty() => record(r, at, &mut out),
                    }
                }
            }
        }
        while pending.len() >= args.in_flight {
            if let Some((r, at)) = pending.next().await {
                record(r, at, &mut out);
            }
        }
        let key = (i as u64).to_be_bytes();
        let sent_at = Instant::now();
        let delivery = producer.send_result(FutureRecord::to(&args.topic).key(&key[..]).payload(&value[..]));
        match delivery {
            Ok(future) => pending.push(async move {
                let r = match future.await {
                    Ok(Ok(d)) => Ok((d.partition, d.offset)),
                    _ => Err(()),
                };
                (r, sent_at)
            }),
            Err(_) => out.failed += 1,
        }
    }
    while let Some((r, at)) = pending.next().await {
        record(r, at, &mut out);
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

fn consume(bootstrap: &str, topic: &str, partitions: &HashMap<i32, i64>, run_tag: &str, expected: usize) -> Result<(usize, f64)> {
    let mut config = base_config(bootstrap);
    config.set("group.id", "sluice-load").set("enable.auto.commit", "false").set("fetch.max.bytes", "52428800");
    let consumer: BaseConsumer = config.create()?;
    let mut assignment = TopicPartitionList::new();
    for (&p, &first) in partitions {
        assignment.add_partition_offset(topic, p, Offset::Offset(first))?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut read = 0usize;
    let mut last_progress = Instant::now();
    while read < expected && last_progress.elapsed() < Duration::from_secs(10) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.payload().is_some_and(|p| p.starts_with(run_tag.as_bytes())) => {
                read += 1;
                last_progress = Instant::now();
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            Some(Ok(_)) | None => {}
        }
    }
    Ok((read, started.elapsed().as_secs_f64()))
}
