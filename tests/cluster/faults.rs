//! One fault per test, each on a fresh cluster, while the producer writes all the time.

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use sluice_tests::RawClient;
use sluice_tests::cluster::TestCluster;

use crate::workload::Workload;
use crate::{PARTITIONS, PATIENCE, TOPIC, cluster_with_topic, serial, start_workload, verify, wait_all_partitions_acked};

/// How long each fault lasts while the producer keeps writing, beyond what recovery needs.
const FAULT_TIME: Duration = Duration::from_secs(6);
/// How long the producer keeps writing after the fault is healed.
const AFTER_TIME: Duration = Duration::from_secs(4);

/// Runs one scenario: a fresh cluster, the producer, `fault` (which returns values it sent
/// itself and that must never reach the log), a heal, then the read-back verdict.
fn scenario(label: &str, fault: impl FnOnce(&mut TestCluster, &Workload) -> Result<Vec<String>>) -> Result<()> {
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = cluster_with_topic()?;
    let checked = (|| {
        let workload = start_workload(&cluster, label)?;
        eprintln!("[{label}] producing: {} acks before the fault", workload.acked());
        let rejected = fault(&mut cluster, &workload)?;
        cluster.heal_all();
        for p in 0..PARTITIONS {
            cluster.wait_for_leader(TOPIC, p, None, PATIENCE).with_context(|| format!("[{label}] a leader after healing"))?;
        }
        // Every node names the same leaders again, so whichever one the reader asks first
        // sends it to the right place.
        cluster.wait_for_agreement(TOPIC, PARTITIONS, PATIENCE).with_context(|| format!("[{label}] nodes agreeing after healing"))?;
        let outcomes = workload.stop()?;
        let (_, records) = verify(label, &cluster, &outcomes, &rejected)?;
        Ok::<_, anyhow::Error>((rejected, records))
    })();
    // A node that died without the test stopping it is a failure in itself (a crash), and
    // explains whatever else went wrong.
    let checked = checked.map_err(|e| {
        let leaders = cluster.leaders_by_node(TOPIC, PARTITIONS);
        e.context(format!("[{label}] leaders of {TOPIC} as each live node reports them: {leaders}"))
    });
    let exited = cluster.unexpected_exits();
    let (rejected, records) = match checked {
        Err(e) if !exited.is_empty() => return Err(e.context(format!("[{label}] nodes {exited:?} exited although the test did not stop them"))),
        checked => checked?,
    };
    ensure!(exited.is_empty(), "[{label}] nodes {exited:?} exited although the test did not stop them");
    for value in &rejected {
        let found: Vec<_> = records.iter().filter(|r| r.value == *value).map(|r| (r.partition, r.offset)).collect();
        ensure!(found.is_empty(), "[{label}] {value} was refused but is in the log at {found:?}");
    }
    eprintln!("[{label}] passed in {:?}", started.elapsed());
    Ok(())
}

/// A node that leads none of the partitions if there is one, else one that does not lead
/// partition 0.
fn a_follower(cluster: &TestCluster) -> Result<usize> {
    let mut leaders = Vec::new();
    for p in 0..PARTITIONS {
        leaders.push(cluster.wait_for_leader(TOPIC, p, None, PATIENCE)?);
    }
    let pick = (0..cluster.len()).find(|i| !leaders.contains(i)).or_else(|| (0..cluster.len()).find(|&i| i != leaders[0]));
    pick.context("no follower")
}

/// Polls node `i`'s own Metadata until it stops naming itself leader of `partition`; returns
/// how long that took from `since`.
fn wait_until_not_claiming(cluster: &TestCluster, i: usize, partition: i32, since: Instant, limit: Duration) -> Result<Duration> {
    let deadline = Instant::now() + limit;
    loop {
        match cluster.leader_reported_by(i, TOPIC, partition) {
            Ok(leader) if leader != Some(i) => return Ok(since.elapsed()),
            Ok(_) => {}
            Err(e) => eprintln!("metadata from node {i}: {e}"),
        }
        if Instant::now() >= deadline {
            bail!("node {i} still claims leadership of {TOPIC}/{partition} after {limit:?}");
        }
        sleep(Duration::from_millis(20));
    }
}

/// Waits until node `i` names a leader of `partition` that is not itself: it rejoined as a
/// follower.
fn wait_rejoined_as_follower(cluster: &TestCluster, i: usize, partition: i32) -> Result<Duration> {
    let since = Instant::now();
    let deadline = since + PATIENCE;
    loop {
        if let Ok(Some(leader)) = cluster.leader_reported_by(i, TOPIC, partition)
            && leader != i
        {
            return Ok(since.elapsed());
        }
        if Instant::now() >= deadline {
            bail!("node {i} names no other leader of {TOPIC}/{partition} after {PATIENCE:?}");
        }
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_partition_leader_then_restart_it() -> Result<()> {
    scenario("kill-leader", |cluster, workload| {
        let old = cluster.wait_for_leader(TOPIC, 0, None, PATIENCE)?;
        let fault = Instant::now();
        cluster.kill9(old);
        let new = cluster.wait_for_leader(TOPIC, 0, Some(old), PATIENCE)?;
        eprintln!("[kill-leader] killed node {old}; node {new} leads partition 0 after {:?}", fault.elapsed());
        let took = workload.wait_acked_since(fault, Some(0), 100, PATIENCE)?;
        eprintln!("[kill-leader] partition 0 acknowledged 100 new writes {took:?} after the kill");
        sleep(FAULT_TIME);
        let back = Instant::now();
        cluster.restart(old)?;
        wait_all_partitions_acked(workload, back, "[kill-leader] after restart")?;
        eprintln!("[kill-leader] restarted node {old} follows on partition 0 after {:?}", wait_rejoined_as_follower(cluster, old, 0)?);
        sleep(AFTER_TIME);
        Ok(Vec::new())
    })
}

#[test]
fn kill_9_follower_then_restart_it() -> Result<()> {
    scenario("kill-follower", |cluster, workload| {
        let victim = a_follower(cluster)?;
        let fault = Instant::now();
        cluster.kill9(victim);
        eprintln!("[kill-follower] killed node {victim}");
        for p in 0..PARTITIONS {
            cluster.wait_for_leader(TOPIC, p, Some(victim), PATIENCE)?;
        }
        wait_all_partitions_acked(workload, fault, "[kill-follower] with a node down")?;
        sleep(FAULT_TIME);
        let back = Instant::now();
        cluster.restart(victim)?;
        wait_all_partitions_acked(workload, back, "[kill-follower] after restart")?;
        sleep(AFTER_TIME);
        Ok(Vec::new())
    })
}

#[test]
fn isolated_leader_is_replaced_and_steps_down() -> Result<()> {
    scenario("isolate-leader", |cluster, workload| {
        let old = cluster.wait_for_leader(TOPIC, 0, None, PATIENCE)?;
        let fault = Instant::now();
        cluster.isolate(old, true);
        let new = cluster.wait_for_leader(TOPIC, 0, Some(old), PATIENCE)?;
        eprintln!("[isolate-leader] isolated node {old}; node {new} leads partition 0 after {:?}", fault.elapsed());
        let took = workload.wait_acked_since(fault, Some(0), 100, PATIENCE)?;
        eprintln!("[isolate-leader] partition 0 acknowledged 100 new writes {took:?} after the partition");
        // check_quorum: a leader cut off from its majority stops claiming leadership.
        let stepped_down = wait_until_not_claiming(cluster, old, 0, fault, PATIENCE)?;
        eprintln!("[isolate-leader] isolated node {old} stopped claiming partition 0 {stepped_down:?} after the partition");
        sleep(FAULT_TIME);
        let healed = Instant::now();
        cluster.isolate(old, false);
        wait_all_partitions_acked(workload, healed, "[isolate-leader] after healing")?;
        eprintln!("[isolate-leader] node {old} follows on partition 0 {:?} after healing", wait_rejoined_as_follower(cluster, old, 0)?);
        sleep(AFTER_TIME);
        Ok(Vec::new())
    })
}

#[test]
fn packet_loss_on_every_link() -> Result<()> {
    scenario("loss-20%", |cluster, workload| {
        let fault = Instant::now();
        cluster.set_loss_all(0.2);
        wait_all_partitions_acked(workload, fault, "[loss-20%] under loss")?;
        sleep(FAULT_TIME);
        eprintln!("[loss-20%] {} acks of writes sent under loss", workload.acked_since(fault, None));
        let healed = Instant::now();
        cluster.heal_all();
        wait_all_partitions_acked(workload, healed, "[loss-20%] after healing")?;
        sleep(AFTER_TIME);
        Ok(Vec::new())
    })
}

#[test]
fn latency_on_every_link() -> Result<()> {
    scenario("latency-100ms", |cluster, workload| {
        let fault = Instant::now();
        cluster.set_latency_all(Duration::from_millis(100));
        wait_all_partitions_acked(workload, fault, "[latency-100ms] under latency")?;
        sleep(FAULT_TIME);
        eprintln!("[latency-100ms] {} acks of writes sent under latency", workload.acked_since(fault, None));
        let healed = Instant::now();
        cluster.heal_all();
        wait_all_partitions_acked(workload, healed, "[latency-100ms] after healing")?;
        sleep(AFTER_TIME);
        Ok(Vec::new())
    })
}

#[test]
fn full_outage_kill_9_all_then_restart_all() -> Result<()> {
    scenario("full-outage", |cluster, workload| {
        for i in 0..cluster.len() {
            cluster.kill9(i);
        }
        eprintln!("[full-outage] killed every node");
        sleep(Duration::from_secs(2));
        let back = Instant::now();
        for i in 0..cluster.len() {
            cluster.restart(i)?;
        }
        for p in 0..PARTITIONS {
            let leader = cluster.wait_for_leader(TOPIC, p, None, PATIENCE)?;
            eprintln!("[full-outage] partition {p} led by node {leader} {:?} after the restarts began", back.elapsed());
        }
        wait_all_partitions_acked(workload, back, "[full-outage] after restarting all")?;
        sleep(FAULT_TIME);
        Ok(Vec::new())
    })
}

#[test]
fn paused_leader_is_replaced_and_refuses_a_stale_produce() -> Result<()> {
    scenario("sigstop-leader", |cluster, workload| {
        let old = cluster.wait_for_leader(TOPIC, 0, None, PATIENCE)?;
        let fault = Instant::now();
        cluster.pause(old)?;
        let new = cluster.wait_for_leader(TOPIC, 0, Some(old), PATIENCE)?;
        eprintln!("[sigstop-leader] paused node {old}; node {new} leads partition 0 after {:?}", fault.elapsed());
        // The cluster takes writes at once: a new client, on the live nodes, gets them acked.
        let deadline = Instant::now() + PATIENCE;
        loop {
            match workload.spot_check(&cluster.live_bootstrap(), TOPIC, 0, 20) {
                Ok(took) => {
                    eprintln!("[sigstop-leader] a new client had 20 writes to partition 0 acknowledged {took:?} after starting, {:?} after the pause", fault.elapsed());
                    break;
                }
                Err(e) if Instant::now() < deadline => eprintln!("[sigstop-leader] spot check: {e}"),
                Err(e) => return Err(e),
            }
        }
        // The long-lived client only notices once its requests to the stopped node time out
        // (its requests there never fail) and its messages stuck there expire.
        let took = workload.wait_acked_since(fault, Some(0), 100, 2 * PATIENCE)?;
        eprintln!("[sigstop-leader] the running producer had 100 new writes to partition 0 acknowledged {took:?} after the pause");
        sleep(FAULT_TIME);

        // A produce for partition 0 waiting in the paused old leader's socket: the kernel
        // accepts the connection and buffers the request while the process is stopped.
        let probe = "sigstop-leader-stale-probe".to_string();
        let mut client = RawClient::connect(cluster.node(old).addr())?;
        let request = produce_request(TOPIC, 0, &probe);
        let answer = std::thread::spawn(move || -> Result<(i16, i64, Instant)> {
            let response: ProduceResponse = client.send(9, &request)?;
            let p = &response.responses[0].partition_responses[0];
            Ok((p.error_code, p.base_offset, Instant::now()))
        });
        sleep(Duration::from_millis(500));
        ensure!(!answer.is_finished(), "the paused node answered a produce");
        let resumed = Instant::now();
        cluster.resume(old)?;
        let (code, base_offset, answered) = answer.join().map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
        eprintln!(
            "[sigstop-leader] stale produce to the resumed old leader answered {:?} after SIGCONT: error code {code}, base offset {base_offset}",
            answered - resumed
        );
        ensure!(code != 0, "the old leader acknowledged a produce after being replaced (base offset {base_offset})");
        let stopped = wait_until_not_claiming(cluster, old, 0, resumed, PATIENCE)?;
        eprintln!("[sigstop-leader] old leader node {old} stopped claiming partition 0 {stopped:?} after SIGCONT");
        eprintln!("[sigstop-leader] node {old} follows on partition 0 {:?} later", wait_rejoined_as_follower(cluster, old, 0)?);
        let back = Instant::now();
        wait_all_partitions_acked(workload, back, "[sigstop-leader] after SIGCONT")?;
        sleep(AFTER_TIME);
        Ok(vec![probe])
    })
}

/// A Produce (v9, acks=-1) of one record, encoded by the protocol crate.
fn produce_request(topic: &str, partition: i32, value: &str) -> ProduceRequest {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from(value.to_string())),
        headers: IndexMap::new(),
    };
    let mut records = BytesMut::new();
    RecordBatchEncoder::encode(&mut records, &[record], &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode batch");
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(records.freeze());
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![t];
    request
}

/// A leader killed with SIGKILL drops its streams to the followers at once, and they replace it
/// without waiting out an election timeout. With a 10 s timeout (elections after 10 to 20 s of
/// silence), a new leader within 8 s of the kill can only come from that.
#[test]
fn a_killed_leader_is_replaced_before_an_election_timeout() -> Result<()> {
    let _serial = serial();
    let mut cluster = TestCluster::start(env!("CARGO_BIN_EXE_sluice"), 3, &[("SLUICE_RAFT__ELECTION_TICKS", "100")])?;
    crate::create_topic(&cluster, "prompt", 1)?;
    let old = cluster.wait_for_leader("prompt", 0, None, PATIENCE)?;
    // Let every follower hear from the leader, so none is already close to its timeout.
    sleep(Duration::from_secs(1));
    let fault = Instant::now();
    cluster.kill9(old);
    let new = cluster.wait_for_leader("prompt", 0, Some(old), Duration::from_secs(8)).context("no new leader before the election timeout")?;
    eprintln!("[prompt] killed node {old}; node {new} leads after {:?}", fault.elapsed());
    Ok(())
}
