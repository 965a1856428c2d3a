//! The ready loop: one task per node drives every Raft group on it.
//!
//! Each round it takes everything waiting (peer messages, proposals, ticks), then handles each
//! group's `Ready`:
//! - a leader's messages go out at once, before its own fsync (Raft thesis 10.2.1), so the
//!   followers' disks and the leader's work in parallel;
//! - new entries and the hard state are written to the page cache, and the ready is advanced
//!   with `advance_append_async`;
//! - committed entries are applied (the high watermark moves; metadata changes reach the
//!   cluster state).
//!
//! Persistence is group commit: each round of the loop starts one background fsync for every
//! replica written since its last one (all together, at most one in flight per replica); each
//! reports back (`on_persist_ready`), and only then are the messages that must follow
//! persistence (votes, append responses) sent. While fsyncs run the loop keeps going, so the
//! disk and the network overlap.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::prelude::{Entry, Message, MessageType};
use raft::{RawNode, StateRole, Storage};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::metadata::{self, Command, Envelope, Outcome};
use super::transport::Transport;
use super::{Event, GroupStatus, Leadership, METADATA_GROUP, Replication};
use crate::clock::now_ms;
use crate::cluster::{self, Cluster};
use crate::config::RaftConfig;
use crate::partition::Partition;
use crate::groups::Coordinator;
use crate::metrics::Metrics;
use crate::plugins::Plugins;
use crate::groups::offsets::OFFSETS_TOPIC;
use crate::partition::replica::{Proposal, ReplicaStorage, decode_entry};

/// Events handled per round at most, so readies are produced regularly under load.
const MAX_EVENTS_PER_ROUND: usize = 4096;
/// Proposals per group whose commit latency is measured at once; beyond it some go unmeasured.
const MAX_TIMED_PROPOSALS: usize = 65536;

/// A ready whose persistence is pending.
struct Pending {
    number: u64,
    /// Sent once the ready is on disk.
    messages: Vec<Message>,
    /// Whether it wrote anything that needs an fsync.
    needs_sync: bool,
    /// Whether the hard state's term or vote changed (its file must be fsynced too).
    sync_state: bool,
}

struct Group {
    id: u64,
    /// `topic-partition`, the metrics label.
    label: String,
    /// Leader: (index, when proposed) of proposals not yet committed, oldest first.
    proposed: VecDeque<(u64, Instant)>,
    node: RawNode<ReplicaStorage>,
    partition: Arc<Partition>,
    /// Readies not yet persisted, oldest first.
    pending: VecDeque<Pending>,
    /// Highest ready number handed to an fsync.
    queued: u64,
    /// An fsync of this replica is running.
    syncing: bool,
    /// Once elected: the index of our first entry; applying it makes us a serving leader.
    leader_start: Option<u64>,
    /// The term we were last elected in.
    elected_term: u64,
    leadership: Leadership,
}

/// Runs the loop until `stop`.
pub struct Driver {
    me: u64,
    config: RaftConfig,
    cluster: Arc<Cluster>,
    replication: Arc<Replication>,
    transport: Transport,
    groups: HashMap<u64, Group>,
    events_tx: mpsc::Sender<Event>,
    /// Peers whose stream broke and that have not been heard from since.
    down_peers: HashSet<u64>,
    logger: slog::Logger,
    /// Fed the offsets topic's committed entries.
    coordinator: Arc<Coordinator>,
    metrics: Arc<Metrics>,
    plugins: Arc<Plugins>,
}

impl Driver {
    /// Builds the driver for the metadata replica and every partition of `cluster`.
    pub fn new(
        config: RaftConfig,
        cluster: Arc<Cluster>,
        replication: Arc<Replication>,
        transport: Transport,
        metadata_log: Arc<Partition>,
        events_tx: mpsc::Sender<Event>,
        coordinator: Arc<Coordinator>,
        metrics: Arc<Metrics>,
        plugins: Arc<Plugins>,
    ) -> Result<Driver, raft::Error> {
        let mut driver = Driver {
            me: replication.me(),
            config,
            cluster: Arc::clone(&cluster),
            replication,
            transport,
            groups: HashMap::new(),
            events_tx,
            down_peers: HashSet::new(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            coordinator,
            metrics,
            plugins,
        };
        driver.add_group(METADATA_GROUP, metadata_log, Some(cluster.applied_index()))?;
        for topic in cluster.topics() {
            for p in &topic.partitions {
                driver.add_group(cluster::group_of(topic.id, p.index()), Arc::clone(p), None)?;
            }
        }
        Ok(driver)
    }

    fn add_group(&mut self, id: u64, partition: Arc<Partition>, applied: Option<u64>) -> Result<(), raft::Error> {
        let storage = ReplicaStorage(Arc::clone(&partition));
        let state = storage.initial_state()?;
        // Data groups have applied everything committed (the high watermark is derived from
        // the log); the metadata group resumes after what metadata.json has.
        let applied = applied.unwrap_or(state.hard_state.commit);
        if applied > state.hard_state.commit {
            let mut hs = state.hard_state.clone();
            hs.commit = applied;
            partition.save_hard_state(&hs).map_err(|e| raft::Error::Store(raft::StorageError::Other(Box::new(std::io::Error::other(e.to_string())))))?;
        }
        let config = raft::Config {
            id: self.me,
            election_tick: self.config.election_ticks,
            heartbeat_tick: self.config.heartbeat_ticks,
            applied,
            max_size_per_msg: self.config.max_append_bytes,
            max_inflight_msgs: self.config.max_inflight_appends,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let node = RawNode::new(&config, storage, &self.logger)?;
        let label = format!("{}-{}", partition.topic(), partition.index());
        let label = if id == METADATA_GROUP { partition.topic().to_string() } else { label };
        self.groups.insert(id, Group { id, label, proposed: VecDeque::new(), node, partition, pending: VecDeque::new(), queued: 0, syncing: false, leader_start: None, elected_term: 0, leadership: Leadership::default() });
        Ok(())
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>, mut proposals: mpsc::Receiver<Proposal>, mut stop: watch::Receiver<bool>) {
        let mut batch = ProposalBatch::new(self.config.max_append_bytes as usize);
        let mut ticks = tokio::time::interval(Duration::from_millis(self.config.tick_ms));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                _ = ticks.tick() => {
                    for g in self.groups.values_mut() {
                        g.node.tick();
                        maybe_serve(g);
                        publish_leadership(g, self.config.heartbeat_ticks, &self.down_peers, &self.replication);
                    }
                }
                Some(e) = events.recv() => self.handle(e),
                Some(p) = proposals.recv() => batch.push(p),
            }
            for _ in 0..MAX_EVENTS_PER_ROUND {
                match events.try_recv() {
                    Ok(e) => self.handle(e),
                    Err(_) => break,
                }
            }
            for _ in 0..MAX_EVENTS_PER_ROUND {
                match proposals.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            for p in batch.drain() {
                self.propose(p);
            }
            let ids: Vec<u64> = self.groups.keys().copied().collect();
            for id in ids {
                self.handle_ready(id);
            }
            self.start_persist_round();
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Messages(batch) => {
                if let Some((_, first)) = batch.first() {
                    self.down_peers.remove(&first.from);
                }
                for (group, msg) in batch {
                    if let Some(g) = self.groups.get_mut(&group) {
                        self.metrics.raft.received.with_label_values(&[g.label.as_str(), message_type(&msg)]).inc();
                        let _ = g.node.step(msg);
                    }
                }
            }
            Event::Unreachable { peer } => {
                self.down_peers.insert(peer);
                for g in self.groups.values_mut() {
                    g.node.report_unreachable(peer);
                    publish_leadership(g, self.config.heartbeat_ticks, &self.down_peers, &self.replication);
                }
            }
            Event::ProposeMeta { request, data } => {
                let proposed = self.groups.get_mut(&METADATA_GROUP).map(|g| g.node.propose(Vec::new(), data));
                if !matches!(proposed, Some(Ok(()))) {
                    self.replication.complete(request, Err(cluster::Error::NotApplied("no metadata leader is known yet".into())));
                }
            }
            Event::Persisted(Ok((group, number, point))) => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.syncing = false;
                    g.partition.persisted(&point);
                    finish_persisted(g, number, &self.transport, &self.metrics);
                }
            }
            Event::Persisted(Err(cause)) => {
                // Raft cannot go on without its disk: what is not durable must not be
                // acknowledged, so the node stops rather than serve from a broken log.
                error!(%cause, "fsync failed; stopping the node");
                std::process::exit(70);
            }
            Event::TransferLeader { group, to } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.node.transfer_leader(to);
                }
            }
            Event::Status(reply) => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn propose(&mut self, p: Proposal) {
        let Some(g) = self.groups.get_mut(&p.group) else { return };
        // A proposal built under an ended leadership would leave a gap in the offsets.
        if g.partition.lease() != p.lease || g.node.raft.state != StateRole::Leader {
            return;
        }
        if g.node.propose(Vec::new(), p.data).is_err() {
            g.partition.step_down();
            return;
        }
        if g.proposed.len() < MAX_TIMED_PROPOSALS {
            g.proposed.push_back((g.node.raft.raft_log.last_index(), Instant::now()));
        }
    }

    fn handle_ready(&mut self, id: u64) {
        let Some(g) = self.groups.get_mut(&id) else { return };
        if !g.node.has_ready() {
            return;
        }
        let mut rd = g.node.ready();
        if rd.ss().is_some() || rd.hs().is_some() {
            let term = g.node.raft.term;
            if g.node.raft.state == StateRole::Leader {
                if g.elected_term != term {
                    g.elected_term = term;
                    self.metrics.raft.elections.with_label_values(&[g.label.as_str()]).inc();
                    g.leader_start = Some(g.node.raft.raft_log.last_index());
                    info!(group = id, term, "elected leader");
                }
            } else {
                g.leader_start = None;
                g.proposed.clear();
                g.partition.step_down();
            }
            publish_leadership(g, self.config.heartbeat_ticks, &self.down_peers, &self.replication);
        }
        for msg in rd.take_messages() {
            send(&self.transport, g.id, &g.label, msg, &mut g.node, &self.metrics);
        }
        if !rd.snapshot().is_empty() {
            warn!(group = id, "snapshots are not supported yet; ignored");
        }
        let entries = rd.take_entries();
        let mut needs_sync = false;
        if !entries.is_empty() {
            needs_sync = true;
            self.metrics.raft.entries.with_label_values(&[g.label.as_str()]).inc_by(entries.len() as u64);
            if let Err(e) = g.partition.write_entries(&entries, now_ms()) {
                error!(group = id, cause = %e, "writing raft entries failed; stopping the node");
                std::process::exit(70);
            }
        }
        let mut sync_state = false;
        if let Some(hs) = rd.hs() {
            if let Err(e) = g.partition.save_hard_state(hs) {
                error!(group = id, cause = %e, "writing the raft hard state failed; stopping the node");
                std::process::exit(70);
            }
            sync_state = rd.must_sync();
            needs_sync |= sync_state;
        }
        let committed = rd.take_committed_entries();
        let persisted_messages = rd.take_persisted_messages();
        let number = rd.number();
        g.node.advance_append_async(rd);
        g.pending.push_back(Pending { number, messages: persisted_messages, needs_sync, sync_state });
        if !needs_sync && g.pending.len() == 1 {
            // Nothing to wait for: this ready is as durable as its predecessors.
            finish_persisted(g, number, &self.transport, &self.metrics);
        }
        let raft = &g.node.raft;
        self.metrics.raft.term.with_label_values(&[g.label.as_str()]).set(raft.term as i64);
        self.metrics.raft.commit.with_label_values(&[g.label.as_str()]).set(raft.raft_log.committed as i64);
        if let Some(last) = committed.last().map(|e| e.index) {
            self.apply(id, committed);
            if let Some(g) = self.groups.get_mut(&id) {
                g.node.advance_apply_to(last);
                maybe_serve(g);
            }
        }
        self.update_caught_up(id);
    }

    fn apply(&mut self, id: u64, committed: Vec<Entry>) {
        let Some(last) = committed.last().map(|e| e.index) else { return };
        if id == METADATA_GROUP {
            for entry in &committed {
                self.apply_metadata(entry);
            }
        }
        let Some(g) = self.groups.get_mut(&id) else { return };
        self.metrics.raft.applied.with_label_values(&[g.label.as_str()]).set(last as i64);
        while g.proposed.front().is_some_and(|(index, _)| *index <= last) {
            if let Some((_, at)) = g.proposed.pop_front() {
                self.metrics.raft.commit_seconds.with_label_values(&[g.label.as_str()]).observe(at.elapsed().as_secs_f64());
            }
        }
        if g.partition.topic() == OFFSETS_TOPIC {
            for entry in &committed {
                if let Some((base, count, _, batches)) = decode_entry(&entry.data)
                    && count > 0
                {
                    self.coordinator.apply_committed(base, batches);
                }
            }
        }
        g.partition.commit_to(last);
    }

    fn apply_metadata(&mut self, entry: &Entry) {
        if entry.data.is_empty() || entry.index <= self.cluster.applied_index() {
            return;
        }
        let envelope = match Envelope::decode(&entry.data) {
            Ok(e) => e,
            Err(cause) => {
                error!(index = entry.index, %cause, "skipping an undecodable metadata entry");
                return;
            }
        };
        // Applying may compile a plugin: tell the runtime this worker blocks for a while.
        let outcome = tokio::task::block_in_place(|| metadata::apply(&self.cluster, &self.plugins, &envelope.command));
        match &outcome {
            Ok(Outcome::Partitions(topic_id, range)) => {
                if let Some(topic) = self.cluster.topic_by_id(*topic_id) {
                    for i in range.clone() {
                        if let Some(p) = topic.partitions.get(i as usize) {
                            let group = cluster::group_of(*topic_id, i);
                            if let Err(e) = self.add_group(group, Arc::clone(p), None) {
                                error!(group, cause = %e, "could not start a partition's raft group");
                            }
                        }
                    }
                }
            }
            Ok(Outcome::Deleted(topic_id, count)) => {
                for i in 0..*count {
                    let group = cluster::group_of(*topic_id, i);
                    self.groups.remove(&group);
                    self.replication.set_leadership(group, Leadership::default());
                }
            }
            Ok(_) => {}
            Err(e) if !matches!(envelope.command, Command::CreateTopic { .. } | Command::DeleteTopic { .. }) => {
                warn!(index = entry.index, cause = %e, "metadata change refused");
            }
            Err(_) => {}
        }
        if let Err(e) = self.cluster.set_applied_index(entry.index) {
            error!(cause = %e, "recording the applied metadata index failed; stopping the node");
            std::process::exit(70);
        }
        if envelope.origin == self.me {
            self.replication.complete(envelope.request, outcome);
        }
    }

    /// Starts an fsync for every replica with unsynced writes and none running: each replica
    /// has at most one in flight (readies persist in order), and all of a round's start
    /// together, so the disk sees them side by side and no partition waits for another's.
    fn start_persist_round(&mut self) {
        for (&id, g) in self.groups.iter_mut() {
            if g.syncing {
                continue;
            }
            let Some(last) = g.pending.iter().rev().find(|p| p.needs_sync && p.number > g.queued) else { continue };
            let number = last.number;
            let sync_state = g.pending.iter().any(|p| p.number > g.queued && p.sync_state);
            let target = match g.partition.sync_target() {
                Ok(target) => target,
                Err(e) => {
                    warn!(group = id, cause = %e, "replica closed while persisting");
                    continue;
                }
            };
            g.queued = number;
            g.syncing = true;
            let events = self.events_tx.clone();
            let partition = Arc::clone(&g.partition);
            tokio::task::spawn_blocking(move || {
                let synced = target.log.sync_data().and_then(|()| if sync_state { target.state.sync_data() } else { Ok(()) });
                let outcome = match synced {
                    Ok(()) => {
                        partition.checkpoint_if_due(&target.point);
                        Ok((id, number, target.point))
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = events.blocking_send(Event::Persisted(outcome));
            });
        }
    }

    /// Leader's count of followers whose log matches its last index (the ISR Metadata shows).
    fn update_caught_up(&mut self, id: u64) {
        let Some(g) = self.groups.get_mut(&id) else { return };
        if g.node.raft.state != StateRole::Leader {
            return;
        }
        let last = g.node.raft.raft_log.last_index();
        for (peer, pr) in g.node.raft.prs().iter() {
            if *peer != self.me {
                self.metrics.raft.follower_lag.with_label_values(&[g.label.as_str(), &peer.to_string()]).set(last.saturating_sub(pr.matched) as i64);
            }
        }
        let caught_up = g
            .node
            .raft
            .prs()
            .iter()
            .filter(|(peer, pr)| **peer != self.me && pr.matched + 1 >= last)
            .fold(0u64, |mask, (peer, _)| mask | (1u64 << (peer % 64)));
        if caught_up != g.leadership.caught_up {
            g.leadership.caught_up = caught_up;
            self.replication.set_leadership(id, g.leadership);
        }
    }

    fn status(&self) -> Vec<GroupStatus> {
        let mut out: Vec<GroupStatus> = self
            .groups
            .iter()
            .map(|(&id, g)| {
                let raft = &g.node.raft;
                let last = raft.raft_log.last_index();
                let lag = if raft.state == StateRole::Leader {
                    let mut lag: Vec<(u64, u64)> = raft.prs().iter().filter(|(p, _)| **p != self.me).map(|(p, pr)| (*p, last.saturating_sub(pr.matched))).collect();
                    lag.sort();
                    lag
                } else {
                    Vec::new()
                };
                GroupStatus {
                    group: id,
                    name: g.partition.topic().to_string(),
                    partition: g.partition.index(),
                    leader: raft.leader_id,
                    term: raft.term,
                    commit: raft.raft_log.committed,
                    applied: raft.raft_log.applied,
                    last_index: last,
                    lag,
                }
            })
            .collect();
        out.sort_by(|a, b| (a.name.as_str(), a.partition).cmp(&(b.name.as_str(), b.partition)));
        out
    }
}

/// Merges a round's proposals: consecutive ones of a group under one leadership become one Raft
/// entry (their batches are already numbered contiguously), up to a size limit.
struct ProposalBatch {
    limit: usize,
    merged: Vec<Proposal>,
}

impl ProposalBatch {
    fn new(limit: usize) -> ProposalBatch {
        ProposalBatch { limit, merged: Vec::new() }
    }

    fn push(&mut self, p: Proposal) {
        let into = self.merged.iter_mut().rev().find(|m| m.group == p.group);
        if let Some(m) = into
            && m.lease == p.lease
            && m.data.len() + p.data.len() <= self.limit
            && let (Some((base, count, max_ts, _)), Some((next_base, next_count, next_ts, batches))) = (decode_entry(&m.data), decode_entry(&p.data))
            && base + i64::from(count) == next_base
            && let Some(total) = count.checked_add(next_count)
        {
            // Rewrite the prefix in place (see `encode_entry`) and append the batches.
            m.data[8..12].copy_from_slice(&total.to_be_bytes());
            m.data[12..20].copy_from_slice(&max_ts.max(next_ts).to_be_bytes());
            m.data.extend_from_slice(batches);
            return;
        }
        self.merged.push(p);
    }

    fn drain(&mut self) -> std::vec::Drain<'_, Proposal> {
        self.merged.drain(..)
    }
}

/// A leader serves writes once everything up to its first entry of the term is applied, so its
/// log end and producer state are exact; and again, from its log end, after a refused proposal
/// (a leadership transfer in progress) made it stop.
fn maybe_serve(g: &mut Group) {
    let raft = &g.node.raft;
    if raft.state != StateRole::Leader || g.partition.lease() != 0 {
        return;
    }
    let ready_at = g.leader_start.unwrap_or_else(|| raft.raft_log.last_index());
    if raft.raft_log.applied >= ready_at {
        g.leader_start = None;
        g.partition.become_leader(raft.term);
        info!(group = g.id, term = raft.term, "serving as leader");
    }
}

/// Publishes who leads the group, for Metadata and FindCoordinator. A follower whose leader's
/// stream broke, or that has not heard from it for two heartbeats, reports no leader: clients
/// then keep refreshing metadata until the election is over instead of waiting on a dead node.
fn publish_leadership(g: &mut Group, heartbeat_ticks: usize, down_peers: &HashSet<u64>, replication: &Replication) {
    let raft = &g.node.raft;
    let silent = raft.state != StateRole::Leader && (raft.election_elapsed > 2 * heartbeat_ticks || down_peers.contains(&raft.leader_id));
    let leader = if silent { 0 } else { raft.leader_id };
    let view = Leadership { leader, term: raft.term, caught_up: g.leadership.caught_up };
    if view != g.leadership {
        g.leadership = view;
        replication.set_leadership(g.id, view);
    }
}

/// Sends a message; a full queue counts as an unreachable peer.
fn send(transport: &Transport, group: u64, label: &str, msg: Message, node: &mut RawNode<ReplicaStorage>, metrics: &Metrics) {
    let to = msg.to;
    metrics.raft.sent.with_label_values(&[label, message_type(&msg)]).inc();
    if !transport.send(group, msg) {
        node.report_unreachable(to);
    }
}

/// The metrics label of a message's type.
fn message_type(msg: &Message) -> &'static str {
    match msg.get_msg_type() {
        MessageType::MsgAppend => "append",
        MessageType::MsgAppendResponse => "append_response",
        MessageType::MsgHeartbeat => "heartbeat",
        MessageType::MsgHeartbeatResponse => "heartbeat_response",
        MessageType::MsgRequestVote => "vote",
        MessageType::MsgRequestVoteResponse => "vote_response",
        MessageType::MsgRequestPreVote => "pre_vote",
        MessageType::MsgRequestPreVoteResponse => "pre_vote_response",
        MessageType::MsgPropose => "propose",
        MessageType::MsgTimeoutNow => "timeout_now",
        _ => "other",
    }
}

/// Marks readies up to `number` persisted, plus any following ones that needed no fsync, and
/// sends the messages that were waiting for that.
fn finish_persisted(g: &mut Group, number: u64, transport: &Transport, metrics: &Metrics) {
    let mut upto = 0;
    let mut messages = Vec::new();
    while let Some(front) = g.pending.front() {
        if front.number > number && front.needs_sync {
            break;
        }
        let Some(p) = g.pending.pop_front() else { break };
        upto = p.number;
        messages.extend(p.messages);
    }
    if upto == 0 {
        return;
    }
    g.node.on_persist_ready(upto);
    for msg in messages {
        send(transport, g.id, &g.label, msg, &mut g.node, metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::replica::encode_entry;

    fn proposal(group: u64, lease: u64, base: i64, count: u32, payload: &[u8]) -> Proposal {
        Proposal { group, lease, data: encode_entry(base, count, base * 10, payload) }
    }

    #[test]
    fn contiguous_proposals_of_one_leadership_merge_into_one_entry() {
        let mut batch = ProposalBatch::new(1 << 20);
        batch.push(proposal(1, 9, 0, 2, b"ab"));
        batch.push(proposal(2, 9, 100, 1, b"x"));
        batch.push(proposal(1, 9, 2, 3, b"cde"));
        // Another leadership, a gap, and a full entry each start a new one.
        batch.push(proposal(1, 10, 5, 1, b"f"));
        batch.push(proposal(2, 9, 102, 1, b"y"));
        let merged: Vec<Proposal> = batch.drain().collect();
        assert_eq!(merged.len(), 4);
        assert_eq!(decode_entry(&merged[0].data), Some((0, 5, 20, &b"abcde"[..])));
        assert_eq!(decode_entry(&merged[1].data), Some((100, 1, 1000, &b"x"[..])));
        assert_eq!(merged[2].lease, 10);
        assert_eq!(decode_entry(&merged[3].data), Some((102, 1, 1020, &b"y"[..])));
        let mut small = ProposalBatch::new(30);
        small.push(proposal(1, 1, 0, 1, b"0123456789"));
        small.push(proposal(1, 1, 1, 1, b"0123456789"));
        assert_eq!(small.drain().count(), 2);
        assert_eq!(batch.drain().count(), 0);
    }
}
