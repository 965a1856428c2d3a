//! `sluice-group-bench`: consumer-group coordinator measurements against any Kafka-compatible
//! broker.
//!
//! - Commit throughput: one group member commits offsets synchronously (each commit waits for
//!   its acknowledgement) and asynchronously (pipelined), reporting commits per second.
//! - Failover: a member running as a separate `kcat -G` process is killed with SIGKILL (no
//!   LeaveGroup); the time until the surviving member is handed every partition is measured,
//!   and should be about the session timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

#[derive(Debug, Parser)]
#[command(name = "sluice-group-bench", about = "Commit throughput and member-death failover of a group coordinator")]
struct Args {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Commits per throughput run.
    #[arg(long, default_value_t = 5000)]
    commits: usize,
    /// Member deaths to measure.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// session.timeout.ms of the members (the broker must allow it).
    #[arg(long, default_value_t = 6000)]
    session_timeout_ms: u64,
}

/// Records when the member last received a full assignment.
#[derive(Clone, Default)]
struct RebalanceClock {
    assigned: Arc<Mutex<Vec<(Instant, usize)>>>,
}

impl ClientContext for RebalanceClock {}

impl ConsumerContext for RebalanceClock {
    fn post_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.assigned.lock().expect("clock lock").push((Instant::now(), tpl.count()));
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let topic = format!("group-bench-{}", std::process::id());
    create_topic(&args, &topic)?;
    commit_throughput(&args, &topic)?;
    failover(&args, &topic)?;
    Ok(())
}

fn create_topic(args: &Args, topic: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let admin: AdminClient<DefaultClientContext> = base(&args.bootstrap).create()?;
        let results = admin.create_topics([&NewTopic::new(topic, args.partitions, TopicReplication::Fixed(1))], &AdminOptions::new()).await?;
        for r in results {
            r.map_err(|(name, code)| anyhow::anyhow!("creating {name}: {code:?}"))?;
        }
        Ok(())
    })
}

fn base(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("broker.address.family", "v4");
    c
}

fn member_config(args: &Args, group: &str) -> ClientConfig {
    let mut c = base(&args.bootstrap);
    c.set("group.id", group)
        .set("session.timeout.ms", args.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (args.session_timeout_ms / 10).to_string())
        .set("enable.auto.commit", "false");
    c
}

fn commit_throughput(args: &Args, topic: &str) -> Result<()> {
    let consumer: BaseConsumer = member_config(args, &format!("commits-{}", std::process::id())).create()?;
    consumer.subscribe(&[topic])?;
    let started = Instant::now();
    while consumer.assignment()?.count() < args.partitions as usize {
        let _ = consumer.poll(Duration::from_millis(50));
        if started.elapsed() > Duration::from_secs(60) {
            bail!("never got an assignment");
        }
    }
    for mode in [CommitMode::Sync, CommitMode::Async] {
        let started = Instant::now();
        for i in 0..args.commits {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, (i % args.partitions as usize) as i32, Offset::Offset(i as i64))?;
            consumer.commit(&tpl, mode)?;
            if matches!(mode, CommitMode::Async) {
                let _ = consumer.poll(Duration::ZERO);
            }
        }
        if matches!(mode, CommitMode::Async) {
            // The last async commit is acknowledged once a sync commit after it is.
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, 0, Offset::Offset(args.commits as i64))?;
            consumer.commit(&tpl, CommitMode::Sync)?;
        }
        let secs = started.elapsed().as_secs_f64();
        println!("commits mode={mode:?} commits={} seconds={secs:.3} commits_per_sec={:.0}", args.commits, args.commits as f64 / secs);
    }
    Ok(())
}

fn failover(args: &Args, topic: &str) -> Result<()> {
    let group = format!("failover-{}", std::process::id());
    let clock = RebalanceClock::default();
    let survivor: BaseConsumer<RebalanceClock> = member_config(args, &group).create_with_context(clock.clone())?;
    survivor.subscribe(&[topic])?;
    let mut samples = Vec::new();
    for round in 0..args.kills {
        let mut victim = std::process::Command::new("kcat")
            .args(["-b", &args.bootstrap, "-G", &group, "-q", "-X", "broker.address.family=v4"])
            .args(["-X", &format!("session.timeout.ms={}", args.session_timeout_ms)])
            .arg(topic)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting kcat (apt-get install kcat)")?;
        // Wait until the partitions are split between the two members.
        wait_for(&survivor, &clock, |n| n > 0 && n < args.partitions as usize, Duration::from_secs(60))?;
        let killed = Instant::now();
        victim.kill()?;
        victim.wait()?;
        let assigned_at = wait_for(&survivor, &clock, |n| n == args.partitions as usize, Duration::from_secs(120))?;
        let took = assigned_at.duration_since(killed);
        println!("failover round={round} seconds={:.3}", took.as_secs_f64());
        samples.push(took.as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    if let Some(median) = samples.get(samples.len() / 2) {
        println!("failover median_seconds={median:.3} session_timeout_seconds={:.3}", args.session_timeout_ms as f64 / 1000.0);
    }
    Ok(())
}

/// Polls until the survivor's latest assignment satisfies `ok`; returns when it was received.
fn wait_for(consumer: &BaseConsumer<RebalanceClock>, clock: &RebalanceClock, ok: impl Fn(usize) -> bool, limit: Duration) -> Result<Instant> {
    let started = Instant::now();
    loop {
        let _ = consumer.poll(Duration::from_millis(10));
        if let Some(&(at, n)) = clock.assigned.lock().expect("clock lock").last()
            && ok(n)
            && at >= started
        {
            return Ok(at);
        }
        if started.elapsed() > limit {
            bail!("no matching assignment within {limit:?}");
        }
    }
}
