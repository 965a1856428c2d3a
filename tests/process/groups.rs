//! Consumer groups with stock clients: librdkafka consumers and kcat's balanced consumer share
//! a topic, a member killed with SIGKILL loses its partitions after its session times out,
//! committed offsets survive a broker `kill -9`, and the coordinator enforces generations.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::Decodable;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message};
use sluice_tests::raw::{commit, commit_request, fetch_committed, fetch_committed_request, group_id, text};
use sluice_tests::{Broker, RawClient};
use tempfile::TempDir;

use crate::{create_topic, produce, producer, runtime};

const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const MEMBER_ID_REQUIRED: i16 = 79;
const NON_EMPTY_GROUP: i16 = 68;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const GROUP_ID_NOT_FOUND: i16 = 69;

/// A broker whose groups accept short sessions and settle quickly.
fn group_broker() -> Result<(TempDir, Broker)> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"))
        .env("SLUICE_GROUPS__MIN_SESSION_TIMEOUT_MS", "1000")
        .env("SLUICE_GROUPS__INITIAL_REBALANCE_DELAY_MS", "300");
    broker.start()?;
    Ok((dir, broker))
}

fn group_consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    let mut config: ClientConfig = sluice_tests::client_config(bootstrap);
    config
        .set("group.id", group)
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "300")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100");
    Ok(config.create()?)
}

/// kcat's balanced consumer in its own process, so it can die by SIGKILL.
struct KcatMember {
    child: Child,
    seen: Arc<Mutex<Vec<String>>>,
}

impl KcatMember {
    fn start(bootstrap: &str, group: &str, topic: &str) -> Result<KcatMember> {
        let mut child = Command::new("kcat")
            .args(["-b", bootstrap, "-G", group, "-q", "-u", "-f", "%s\\n"])
            .args(["-X", "broker.address.family=v4", "-X", "session.timeout.ms=3000", "-X", "heartbeat.interval.ms=300"])
            .args(["-X", "auto.offset.reset=earliest", "-X", "auto.commit.interval.ms=200"])
            .arg(topic)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Ok(KcatMember { child, seen })
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KcatMember {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls the consumers round-robin, committing after each record, until `done` says so.
fn poll_until(consumers: &[&BaseConsumer], seen: &mut Vec<String>, limit: Duration, mut done: impl FnMut(&[String]) -> bool) -> Result<()> {
    let started = Instant::now();
    while !done(seen) {
        if started.elapsed() > limit {
            bail!("gave up after {limit:?} with {} records", seen.len());
        }
        for c in consumers {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(30)) {
                seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
                c.commit_message(&m, CommitMode::Sync)?;
            }
        }
    }
    Ok(())
}

/// The group's members and the partitions each owns, as DescribeGroups reports them.
fn assignments(bootstrap: &str, group: &str) -> Result<(String, Vec<Vec<i32>>)> {
    let probe: BaseConsumer = sluice_tests::client_config(bootstrap).create()?;
    let list = probe.fetch_group_list(Some(group), Duration::from_secs(10))?;
    let info = list.groups().first().ok_or_else(|| anyhow::anyhow!("group {group} not listed"))?;
    let mut owned = Vec::new();
    for member in info.members() {
        let mut bytes = Bytes::copy_from_slice(member.assignment().unwrap_or_default());
        let mut partitions = Vec::new();
        if bytes.len() >= 2 {
            let version = i16::from_be_bytes([bytes[0], bytes[1]]);
            let _ = bytes::Buf::get_i16(&mut bytes);
            let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version)?;
            for t in assignment.assigned_partitions {
                partitions.extend(t.partitions);
            }
        }
        owned.push(partitions);
    }
    Ok((info.state().to_string(), owned))
}

/// Waits until the group is Stable with `members` members that own every partition exactly once.
fn wait_for_balanced(bootstrap: &str, group: &str, consumers: &[&BaseConsumer], members: usize, partitions: i32) -> Result<()> {
    let started = Instant::now();
    loop {
        for c in consumers {
            // Keeps the in-process members' heartbeats and rebalance callbacks flowing.
            let _ = c.poll(Duration::from_millis(20));
        }
        if let Ok((state, owned)) = assignments(bootstrap, group) {
            let all: Vec<i32> = owned.iter().flatten().copied().collect();
            let unique: BTreeSet<i32> = all.iter().copied().collect();
            if state == "Stable" && owned.len() == members && all.len() == partitions as usize && unique.len() == partitions as usize {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("group never balanced: {state}, {owned:?}");
            }
        }
    }
}

#[test]
fn three_members_share_six_partitions_and_survive_a_killed_member() -> Result<()> {
    let (_dir, broker) = group_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime();
    rt.block_on(create_topic(&bootstrap, "work", 6, &[]))?;
    let first: Vec<String> = (0..600).map(|i| format!("w-{i:04}")).collect();
    rt.block_on(produce(&producer(&bootstrap), "work", &first))?;

    let a = group_consumer(&bootstrap, "workers")?;
    let b = group_consumer(&bootstrap, "workers")?;
    a.subscribe(&["work"])?;
    b.subscribe(&["work"])?;
    let mut kcat = KcatMember::start(&bootstrap, "workers", "work")?;
    wait_for_balanced(&bootstrap, "workers", &[&a, &b], 3, 6)?;

    let mut seen = Vec::new();
    poll_until(&[&a, &b], &mut seen, Duration::from_secs(60), |seen| {
        let by_kcat = kcat.seen.lock().unwrap().clone();
        let all: BTreeSet<&String> = seen.iter().chain(by_kcat.iter()).collect();
        first.iter().all(|v| all.contains(v))
    })?;
    ensure!(!kcat.seen.lock().unwrap().is_empty(), "kcat's member got no partition");

    // SIGKILL: no LeaveGroup. Its partitions move once its session times out.
    kcat.kill9();
    let killed_at = Instant::now();
    wait_for_balanced(&bootstrap, "workers", &[&a, &b], 2, 6)?;
    eprintln!("rebalanced onto 2 members {:?} after the kill", killed_at.elapsed());

    let second: Vec<String> = (0..600).map(|i| format!("x-{i:04}")).collect();
    rt.block_on(produce(&producer(&bootstrap), "work", &second))?;
    let mut after = Vec::new();
    poll_until(&[&a, &b], &mut after, Duration::from_secs(60), |seen| {
        let all: BTreeSet<&String> = seen.iter().collect();
        second.iter().all(|v| all.contains(v))
    })?;
    // Nothing skipped: every record of the first round was consumed by someone, before or after.
    let everyone: BTreeSet<String> = seen.iter().chain(after.iter()).chain(kcat.seen.lock().unwrap().iter()).cloned().collect();
    ensure!(first.iter().chain(second.iter()).all(|v| everyone.contains(v)), "a record was never consumed");
    Ok(())
}

#[test]
fn committed_offsets_survive_a_broker_kill_9() -> Result<()> {
    let (_dir, mut broker) = group_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime();
    rt.block_on(create_topic(&bootstrap, "resume", 2, &[]))?;
    let first: Vec<String> = (0..100).map(|i| format!("r-{i:03}")).collect();
    rt.block_on(produce(&producer(&bootstrap), "resume", &first))?;
    {
        let c = group_consumer(&bootstrap, "resumers")?;
        c.subscribe(&["resume"])?;
        let mut seen = Vec::new();
        poll_until(&[&c], &mut seen, Duration::from_secs(60), |s| s.len() >= first.len())?;
        ensure!(seen.len() == first.len(), "read {} records", seen.len());
        // Dropping the consumer leaves the group cleanly.
    }
    broker.kill9();
    broker.start()?;

    let second: Vec<String> = (0..100).map(|i| format!("s-{i:03}")).collect();
    rt.block_on(produce(&producer(&bootstrap), "resume", &second))?;
    let c = group_consumer(&bootstrap, "resumers")?;
    c.subscribe(&["resume"])?;
    let mut seen = Vec::new();
    poll_until(&[&c], &mut seen, Duration::from_secs(60), |s| s.len() >= second.len())?;
    // Keep polling a little: a consumer that restarted from 0 would now deliver old records.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(1500) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
        }
    }
    let got: BTreeSet<String> = seen.iter().cloned().collect();
    let expected: BTreeSet<String> = second.iter().cloned().collect();
    ensure!(got == expected && seen.len() == second.len(), "after the restart the group read {} records, {} of them old", seen.len(), seen.iter().filter(|v| v.starts_with("r-")).count());
    Ok(())
}

/// A consumer-protocol JoinGroup for `group` with the session timeout given.
fn join_request(group: &str, session_timeout_ms: i32) -> JoinGroupRequest {
    let mut join = JoinGroupRequest::default();
    join.group_id = group_id(group);
    join.session_timeout_ms = session_timeout_ms;
    join.rebalance_timeout_ms = 10_000;
    join.protocol_type = text("consumer");
    let mut protocol = JoinGroupRequestProtocol::default();
    protocol.name = text("range");
    protocol.metadata = Bytes::from_static(b"\x00\x00");
    join.protocols = vec![protocol];
    join
}

#[test]
fn generations_fence_commits_and_only_empty_groups_are_deleted() -> Result<()> {
    let (_dir, broker) = group_broker()?;
    runtime().block_on(create_topic(&broker.bootstrap(), "raw", 1, &[]))?;
    let mut client = RawClient::connect(broker.addr())?;

    let mut find = FindCoordinatorRequest::default();
    find.key = text("g1");
    let coordinator = client.send(3, &find)?;
    ensure!(coordinator.error_code == 0 && coordinator.port == i32::from(broker.addr().port()));

    let mut join = join_request("g1", 10_000);
    let first = client.send(5, &join)?;
    ensure!(first.error_code == MEMBER_ID_REQUIRED, "join without an id: {}", first.error_code);
    join.member_id = first.member_id.clone();
    let joined = client.send(5, &join)?;
    ensure!(joined.error_code == 0 && joined.generation_id == 1 && joined.leader == joined.member_id && joined.members.len() == 1);
    let member = joined.member_id.to_string();

    let mut heartbeat = HeartbeatRequest::default();
    heartbeat.group_id = group_id("g1");
    heartbeat.generation_id = 1;
    heartbeat.member_id = text(&member);
    // Joined, waiting for assignments: heartbeats are fine.
    ensure!(client.send(3, &heartbeat)?.error_code == 0);
    // As Kafka: the protocol and the members' metadata and assignments are described only once
    // the group is stable.
    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![group_id("g1")];
    let rebalancing = client.send(5, &describe)?;
    let g = &rebalancing.groups[0];
    ensure!(g.group_state.as_str() == "CompletingRebalance", "state {}", g.group_state.as_str());
    ensure!(g.protocol_data.is_empty(), "protocol {} described while rebalancing", g.protocol_data.as_str());
    ensure!(g.members.len() == 1 && g.members.iter().all(|m| m.member_metadata.is_empty() && m.member_assignment.is_empty()), "member details described while rebalancing");

    let mut sync = SyncGroupRequest::default();
    sync.group_id = group_id("g1");
    sync.generation_id = 1;
    sync.member_id = text(&member);
    let mut assignment = SyncGroupRequestAssignment::default();
    assignment.member_id = text(&member);
    assignment.assignment = Bytes::from_static(b"mine");
    sync.assignments = vec![assignment];
    // SyncGroup v5 names the protocol; one the group did not choose is refused.
    let mut wrong = sync.clone();
    wrong.protocol_type = Some(text("consumer"));
    wrong.protocol_name = Some(text("roundrobin"));
    ensure!(client.send(5, &wrong)?.error_code == INCONSISTENT_GROUP_PROTOCOL, "a sync naming another protocol was accepted");
    let synced = client.send(4, &sync)?;
    ensure!(synced.error_code == 0 && synced.assignment == Bytes::from_static(b"mine"));
    ensure!(client.send(3, &heartbeat)?.error_code == 0);

    ensure!(commit(&mut client, "g1", &member, 0, 5)? == ILLEGAL_GENERATION, "a stale generation committed");
    ensure!(commit(&mut client, "g1", "stranger", 1, 5)? == UNKNOWN_MEMBER_ID);
    ensure!(commit(&mut client, "g1", "", -1, 5)? == UNKNOWN_MEMBER_ID, "a simple commit into an active group");
    ensure!(commit(&mut client, "g1", &member, 1, 42)? == 0);
    ensure!(fetch_committed(&mut client, "g1")? == (42, Some("note".into())));

    let listed = client.send(4, &ListGroupsRequest::default())?;
    ensure!(listed.groups.iter().any(|g| g.group_id.as_str() == "g1" && g.group_state.as_str() == "Stable"));
    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![group_id("g1")];
    let described = client.send(5, &describe)?;
    ensure!(described.groups[0].members.len() == 1 && described.groups[0].protocol_data.as_str() == "range");

    let mut delete = DeleteGroupsRequest::default();
    delete.groups_names = vec![group_id("g1")];
    ensure!(client.send(2, &delete)?.results[0].error_code == NON_EMPTY_GROUP);

    let mut leave = LeaveGroupRequest::default();
    leave.group_id = group_id("g1");
    let mut identity = kafka_protocol::messages::leave_group_request::MemberIdentity::default();
    identity.member_id = text(&member);
    leave.members = vec![identity];
    let left = client.send(4, &leave)?;
    ensure!(left.error_code == 0 && left.members[0].error_code == 0);
    // Offsets stay after the last member leaves; the empty group can now be deleted.
    ensure!(fetch_committed(&mut client, "g1")?.0 == 42);
    ensure!(client.send(2, &delete)?.results[0].error_code == 0);
    ensure!(fetch_committed(&mut client, "g1")?.0 == -1);
    ensure!(client.send(2, &delete)?.results[0].error_code == GROUP_ID_NOT_FOUND);
    Ok(())
}

#[test]
fn refused_joins_leave_no_groups_behind() -> Result<()> {
    const INVALID_SESSION_TIMEOUT: i16 = 26;
    let (_dir, broker) = group_broker()?;
    let mut client = RawClient::connect(broker.addr())?;
    for i in 0..20 {
        let refused = client.send(5, &join_request(&format!("refused-{i}"), 1))?;
        ensure!(refused.error_code == INVALID_SESSION_TIMEOUT, "join {i}: {}", refused.error_code);
    }
    let listed = client.send(4, &ListGroupsRequest::default())?;
    let left: Vec<&str> = listed.groups.iter().map(|g| g.group_id.as_str()).filter(|g| g.starts_with("refused-")).collect();
    ensure!(left.is_empty(), "refused joins left groups behind: {left:?}");
    Ok(())
}

#[test]
fn a_commit_too_large_for_the_offsets_topic_is_refused_for_good() -> Result<()> {
    const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"))
        .env("SLUICE_KAFKA__MAX_REQUEST_BYTES", "65536")
        .env("SLUICE_LOG__MAX_MESSAGE_BYTES", "60000");
    broker.start()?;
    runtime().block_on(create_topic(&broker.bootstrap(), "wide", 21, &[]))?;
    let mut client = RawClient::connect(broker.addr())?;
    // The request fits the 64 KiB limit, but its records repeat the long group id in every key,
    // so the offsets entry would not.
    let group = "g".repeat(200);
    let partitions = (0..21)
        .map(|i| {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = i;
            p.committed_offset = 1;
            p.committed_metadata = Some(text(&"m".repeat(2900)));
            p
        })
        .collect();
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(text("wide"));
    t.partitions = partitions;
    let mut request = OffsetCommitRequest::default();
    request.group_id = group_id(&group);
    request.generation_id_or_member_epoch = -1;
    request.topics = vec![t];
    let response = client.send(8, &request)?;
    let codes: BTreeSet<i16> = response.topics[0].partitions.iter().map(|p| p.error_code).collect();
    // A retriable error here would have the client retry the same commit forever.
    ensure!(codes == BTreeSet::from([INVALID_COMMIT_OFFSET_SIZE]), "answered {codes:?}");
    Ok(())
}

/// Kafka runs one request of a connection at a time: an OffsetFetch sent right behind an
/// OffsetCommit, before its response, reads the commit.
#[test]
fn a_pipelined_offset_fetch_reads_the_commit_sent_before_it() -> Result<()> {
    let (_dir, broker) = group_broker()?;
    runtime().block_on(create_topic(&broker.bootstrap(), "raw", 1, &[]))?;
    let mut client = RawClient::connect(broker.addr())?;
    for offset in 1..=20 {
        client.send_only(8, &commit_request("pipelined", "", -1, offset))?;
        let committed = client.last_correlation_id();
        client.send_only(7, &fetch_committed_request("pipelined"))?;
        let fetched = client.last_correlation_id();
        let commit = client.receive::<OffsetCommitRequest>(8, committed)?;
        ensure!(commit.topics[0].partitions[0].error_code == 0, "commit {offset} failed");
        let fetch = client.receive::<OffsetFetchRequest>(7, fetched)?;
        let read = fetch.topics[0].partitions[0].committed_offset;
        ensure!(read == offset, "the fetch pipelined after committing {offset} read {read}");
    }
    Ok(())
}

/// A commit whose client hangs up before the answer still reaches the coordinator's cache once
/// it is durable: the cache is fed by the offsets log itself.
#[test]
fn a_commit_whose_client_hangs_up_still_reaches_the_cache() -> Result<()> {
    let (_dir, broker) = group_broker()?;
    runtime().block_on(create_topic(&broker.bootstrap(), "raw", 1, &[]))?;
    let mut reader = RawClient::connect(broker.addr())?;
    for offset in 1..=10 {
        let mut client = RawClient::connect(broker.addr())?;
        client.send_only(8, &commit_request("hung-up", "", -1, offset))?;
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(10);
        while fetch_committed(&mut reader, "hung-up")?.0 != offset {
            ensure!(Instant::now() < deadline, "commit {offset} never showed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// As Kafka: offsets of a group without members expire `offsets-retention-ms` after the later
/// of their commit and the group becoming empty, as tombstones a restart does not undo; members
/// keep their group's offsets; a commit naming its own retention keeps that; a group left with
/// neither members nor offsets is forgotten.
#[test]
fn committed_offsets_expire_once_their_group_is_empty() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(env!("CARGO_BIN_EXE_sluice"), &dir.path().join("data"))
        .env("SLUICE_GROUPS__MIN_SESSION_TIMEOUT_MS", "1000")
        .env("SLUICE_GROUPS__INITIAL_REBALANCE_DELAY_MS", "0")
        .env("SLUICE_GROUPS__OFFSETS_RETENTION_MS", "2000")
        .env("SLUICE_GROUPS__OFFSETS_RETENTION_CHECK_INTERVAL_MS", "200");
    broker.start()?;
    runtime().block_on(create_topic(&broker.bootstrap(), "raw", 1, &[]))?;
    let mut client = RawClient::connect(broker.addr())?;
    ensure!(commit(&mut client, "simple", "", -1, 5)? == 0);
    let mut own_retention = commit_request("kept", "", -1, 6);
    own_retention.retention_time_ms = 600_000;
    ensure!(client.send(2, &own_retention)?.topics[0].partitions[0].error_code == 0);

    let mut join = join_request("live", 3000);
    join.member_id = client.send(5, &join)?.member_id;
    let joined = client.send(5, &join)?;
    ensure!(joined.error_code == 0);
    let member = joined.member_id.to_string();
    let mut sync = SyncGroupRequest::default();
    sync.group_id = group_id("live");
    sync.generation_id = joined.generation_id;
    sync.member_id = text(&member);
    ensure!(client.send(4, &sync)?.error_code == 0);
    ensure!(commit(&mut client, "live", &member, joined.generation_id, 7)? == 0);
    let mut heartbeat = HeartbeatRequest::default();
    heartbeat.group_id = group_id("live");
    heartbeat.generation_id = joined.generation_id;
    heartbeat.member_id = text(&member);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        ensure!(client.send(3, &heartbeat)?.error_code == 0);
        std::thread::sleep(Duration::from_millis(300));
    }
    ensure!(fetch_committed(&mut client, "simple")?.0 == -1, "a group without members kept its offsets past their retention");
    ensure!(fetch_committed(&mut client, "kept")?.0 == 6, "a commit's own retention was not honoured");
    ensure!(fetch_committed(&mut client, "live")?.0 == 7, "a group with a member lost its offsets");

    let mut leave = LeaveGroupRequest::default();
    leave.group_id = group_id("live");
    let mut identity = kafka_protocol::messages::leave_group_request::MemberIdentity::default();
    identity.member_id = text(&member);
    leave.members = vec![identity];
    ensure!(client.send(4, &leave)?.error_code == 0);
    std::thread::sleep(Duration::from_millis(1000));
    ensure!(fetch_committed(&mut client, "live")?.0 == 7, "expired before the retention counted from the group becoming empty");
    let deadline = Instant::now() + Duration::from_secs(15);
    while fetch_committed(&mut client, "live")?.0 != -1 {
        ensure!(Instant::now() < deadline, "an emptied group's offsets never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let listed = client.send(4, &ListGroupsRequest::default())?;
    let ids: Vec<&str> = listed.groups.iter().map(|g| g.group_id.as_str()).collect();
    ensure!(ids == ["kept"], "groups listed: {ids:?}");

    drop(client);
    ensure!(broker.terminate()?, "broker did not stop cleanly");
    broker.start()?;
    let mut client = RawClient::connect(broker.addr())?;
    ensure!(fetch_committed(&mut client, "simple")?.0 == -1 && fetch_committed(&mut client, "live")?.0 == -1, "expired offsets came back after a restart");
    ensure!(fetch_committed(&mut client, "kept")?.0 == 6);
    Ok(())
}

/// Consumer lag per group and partition (high watermark minus committed offset) is a metric,
/// as operators expect from Burrow or Redpanda.
#[test]
fn consumer_lag_is_exported_per_group_and_partition() -> Result<()> {
    let (_dir, broker) = group_broker()?;
    let bootstrap = broker.bootstrap();
    runtime().block_on(create_topic(&bootstrap, "raw", 1, &[]))?;
    let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    runtime().block_on(produce(&producer(&bootstrap), "raw", &values))?;
    let mut client = RawClient::connect(broker.addr())?;
    let lag = |broker: &Broker| -> Result<Option<f64>> {
        Ok(broker.metrics()?.lines().filter(|l| l.starts_with("sluice_consumer_group_lag{") && l.contains("group=\"lagging\"") && l.contains("topic=\"raw\"")).find_map(|l| l.rsplit(' ').next()?.parse().ok()))
    };
    for (committed, expected) in [(4, 6.0), (10, 0.0)] {
        ensure!(commit(&mut client, "lagging", "", -1, committed)? == 0);
        let deadline = Instant::now() + Duration::from_secs(15);
        while lag(&broker)? != Some(expected) {
            ensure!(Instant::now() < deadline, "lag after committing {committed}: {:?}, not {expected}", lag(&broker)?);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}
