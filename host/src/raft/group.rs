//! One Raft group on this node: its raft-rs `RawNode` over the replica's log, and the steps the
//! ready loop takes for it. The loop ([`super::driver`]) owns many of these and adds what is
//! node-wide (the transport, the metadata and offsets state machines, metrics publication);
//! everything that decides when a write is durable, committed or acknowledged lives here, so
//! the same code runs under the real loop and under the simulation tests.
//!
//! Persistence is asynchronous: a ready's entries and hard state go to the page cache, the
//! ready is advanced with `advance_append_async`, and the messages that must follow persistence
//! (votes, append responses) wait in [`Group::pending`] until an fsync covers them
//! ([`Group::sync_job`], then [`Group::persisted`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::prelude::{Entry, Message, MessageType};
use raft::{RawNode, StateRole, Storage};
use tracing::{error, info};

use super::entry::decode_log_start;
use super::storage::ReplicaStorage;
use super::validate::{self, Refusal};
use super::{Leadership, METADATA_GROUP};
use crate::clock::now_ms;
use crate::config::RaftConfig;
use crate::log::RecoveryPoint;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::partition::replica::{Proposal, REBUILD_BYTES_PER_ROUND, SyncTarget};

/// The context of a follower's rejection that says its log lost entries it had acknowledged.
const LOST_ENTRIES: &[u8] = b"sluice:lost-entries";

/// Proposals per group whose commit latency is measured at once; beyond it some go unmeasured.
const MAX_TIMED_PROPOSALS: usize = 65536;

/// Where a group's messages go: the transport, or a simulated network.
pub trait Outbox {
    /// Queues a message of `group`; `false` if it cannot be delivered (the peer is then
    /// reported unreachable to Raft).
    fn send(&self, group: u64, msg: Message) -> bool;
}

/// Why a group cannot go on: its disk failed. The node must stop rather than serve from a log
/// whose state it no longer knows.
#[derive(Debug, thiserror::Error)]
#[error("group {group}: {cause}")]
pub struct Fatal {
    /// The group.
    pub group: u64,
    /// What failed.
    pub cause: String,
}

/// A ready whose persistence is pending.
struct Pending {
    number: u64,
    /// Sent once the ready is on disk.
    messages: Vec<Message>,
    /// Whether it wrote anything that needs an fsync.
    needs_sync: bool,
    /// Whether the hard state's term or vote changed (its file must be fsynced too).
    sync_state: bool,
    /// The index of a snapshot it installed: applied once raft-rs knows it persisted.
    snapshot: Option<u64>,
}

/// What a ready produced for the loop to finish.
pub struct Readied {
    /// Committed entries to apply, in order; the loop applies them and then calls
    /// [`Group::applied`].
    pub committed: Vec<Entry>,
    /// The role or term changed: leadership must be published again.
    pub role_changed: bool,
}

/// An fsync to run off the loop for one group.
pub struct SyncJob {
    /// The group.
    pub group: u64,
    /// The newest ready it covers.
    pub number: u64,
    /// Whether the hard state file needs it too.
    pub sync_state: bool,
    /// What to sync.
    pub target: SyncTarget,
    partition: Arc<Partition>,
    /// Where the fsync's duration is recorded, if anywhere.
    pub timer: Option<prometheus::Histogram>,
}

impl SyncJob {
    /// Blocking: fsyncs the log (and the hard state when needed), then writes the recovery
    /// checkpoint if one was due. Returns (group, ready number, the synced point).
    pub fn run(self) -> Result<(u64, u64, RecoveryPoint), String> {
        let target = &self.target;
        let started = std::time::Instant::now();
        target.log.sync_data().and_then(|()| if self.sync_state { target.state.sync_data() } else { Ok(()) }).map_err(|e| e.to_string())?;
        if let Some(timer) = &self.timer {
            timer.observe(started.elapsed().as_secs_f64());
        }
        if let Some(producers) = &target.checkpoint {
            self.partition.write_checkpoint(&target.point, producers);
        }
        Ok((self.group, self.number, self.target.point))
    }
}

/// One Raft group of this node.
pub struct Group {
    /// The group id.
    pub id: u64,
    /// `topic-partition`, the metrics label.
    pub label: String,
    /// raft-rs.
    pub node: RawNode<ReplicaStorage>,
    /// The replica whose log is the group's log.
    pub partition: Arc<Partition>,
    /// Who leads, as last published.
    pub leadership: Leadership,
    /// Leader: (index, when proposed) of proposals not yet committed, oldest first.
    proposed: VecDeque<(u64, Instant)>,
    /// Readies not yet persisted, oldest first.
    pending: VecDeque<Pending>,
    /// Highest ready number handed to an fsync.
    queued: u64,
    /// An fsync of this replica is running.
    syncing: bool,
    /// Once elected: the index of our first entry; applying it makes us a serving leader.
    leader_start: Option<u64>,
    /// The leader's stream ended: ticks until this voter campaigns if no leader is known by
    /// then (see [`Group::leader_gone`]).
    campaign_in: Option<usize>,
    /// The term we were last elected in.
    elected_term: u64,
    /// Write caching: entries count as persisted once in the page cache and are fsynced at
    /// this period (the metadata group never caches).
    write_caching: Option<Duration>,
    /// Write caching: entries were written since the last fsync started.
    cached: bool,
    /// When the last fsync started.
    last_sync: Instant,
    /// (term, vote) as last written to the hard state file: only a change of either must be
    /// durable before Raft goes on (the commit index is recomputed after a restart).
    saved_vote: (u64, u64),
    /// Ticks so far.
    ticks: u64,
    /// Leader: (follower, tick) of snapshot messages whose install is not yet confirmed.
    snapshots_sent: Vec<(u64, u64)>,
    /// Ticks after which an unconfirmed snapshot counts as failed (raft-rs then probes the
    /// follower again, and sends it a snapshot again if it still needs one).
    install_timeout_ticks: u64,
}

impl Group {
    /// The group `id` of node `me` over `partition`'s log. `applied`: where the state machine
    /// stands (`None`: everything committed, as for data partitions, whose state is the log).
    pub fn new(id: u64, me: u64, config: &RaftConfig, partition: Arc<Partition>, applied: Option<u64>, logger: &slog::Logger) -> Result<Group, raft::Error> {
        Group::with_election_timeout(id, me, config, None, partition, applied, logger)
    }

    /// [`Group::new`] with a fixed election timeout of `fixed_timeout` ticks instead of raft-rs's
    /// random one (drawn from an unseeded generator), so a seeded simulation replays exactly.
    pub(crate) fn with_election_timeout(
        id: u64,
        me: u64,
        config: &RaftConfig,
        fixed_timeout: Option<usize>,
        partition: Arc<Partition>,
        applied: Option<u64>,
        logger: &slog::Logger,
    ) -> Result<Group, raft::Error> {
        let storage = ReplicaStorage(Arc::clone(&partition));
        let state = storage.initial_state()?;
        let applied = applied.unwrap_or(state.hard_state.commit);
        let saved_vote = (state.hard_state.term, state.hard_state.vote);
        if applied > state.hard_state.commit {
            let mut hs = state.hard_state.clone();
            hs.commit = applied;
            partition.save_hard_state(&hs).map_err(|e| raft::Error::Store(raft::StorageError::Other(Box::new(std::io::Error::other(e.to_string())))))?;
        }
        let raft_config = raft::Config {
            id: me,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied,
            max_size_per_msg: config.max_append_bytes,
            max_inflight_msgs: config.max_inflight_appends,
            check_quorum: true,
            pre_vote: true,
            // raft-rs draws each timeout from [min, max).
            min_election_tick: fixed_timeout.unwrap_or(0),
            max_election_tick: fixed_timeout.map_or(0, |t| t + 1),
            ..Default::default()
        };
        let mut node = RawNode::new(&raft_config, storage, logger)?;
        if node.raft.prs().iter().all(|(&id, _)| id == me) {
            // A sole voter needs nobody's vote: lead at once instead of after a timeout.
            node.campaign()?;
        }
        let write_caching = (id != METADATA_GROUP).then(|| partition.write_caching()).flatten();
        let label = if id == METADATA_GROUP { partition.topic().to_string() } else { format!("{}-{}", partition.topic(), partition.index()) };
        Ok(Group {
            id,
            label,
            node,
            partition,
            leadership: Leadership::default(),
            proposed: VecDeque::new(),
            pending: VecDeque::new(),
            queued: 0,
            syncing: false,
            leader_start: None,
            campaign_in: None,
            elected_term: 0,
            write_caching,
            cached: false,
            last_sync: Instant::now(),
            saved_vote,
            ticks: 0,
            snapshots_sent: Vec::new(),
            install_timeout_ticks: (config.snapshot_install_timeout_ms / config.tick_ms.max(1)).max(1),
        })
    }

    /// One Raft tick.
    pub fn tick(&mut self) {
        self.node.tick();
        self.ticks += 1;
        self.expire_snapshots();
        if let Some(ticks) = self.campaign_in.take() {
            if ticks > 1 {
                self.campaign_in = Some(ticks - 1);
            } else if self.node.raft.leader_id == raft::INVALID_ID && self.node.raft.state != StateRole::Leader {
                let _ = self.node.campaign();
            }
        }
        self.maybe_serve();
    }

    /// Steps a peer's message into raft-rs after checking it against this group's log.
    pub fn step(&mut self, mut msg: Message, metrics: &Metrics) -> Result<(), Refusal> {
        if let Err(refusal) = validate::check_against_log(&self.node, &msg) {
            if let Refusal::Commit { .. } = refusal {
                // A heartbeat whose commit our log cannot hold: a leader that still believes we
                // have entries we lost (a wiped data dir), or a lie. It is answered, with no
                // commit beyond ours, and the leader is told where our log really ends.
                let (leader, claimed) = (msg.from, msg.commit);
                msg.commit = self.node.raft.raft_log.committed;
                let _ = self.node.step(msg);
                self.tell_lost_entries(leader, claimed);
            }
            return Err(refusal);
        }
        if self.lost_entries_reported(&msg) {
            return Ok(());
        }
        metrics.raft.received.with_label_values(&[self.label.as_str(), message_type(&msg)]).inc();
        let _ = self.node.step(msg);
        Ok(())
    }

    /// Tells the leader that our log ends before entries it believes we hold (up to `claimed`):
    /// raft-rs never lowers what it knows a follower holds, so without this a follower that
    /// lost its log could never be caught up by the same leader.
    fn tell_lost_entries(&mut self, leader: u64, claimed: u64) {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppendResponse);
        (m.to, m.from, m.term) = (leader, self.node.raft.id, self.node.raft.term);
        m.reject = true;
        m.index = claimed;
        m.reject_hint = self.node.raft.raft_log.last_index();
        m.context = LOST_ENTRIES.to_vec().into();
        self.node.raft.msgs.push(m);
    }

    /// Leader: a follower says its log ends at `reject_hint`, before what it had acknowledged.
    /// Its progress restarts from there: raft-rs probes it, and sends a snapshot if the log no
    /// longer holds what it needs.
    fn lost_entries_reported(&mut self, msg: &Message) -> bool {
        if msg.get_msg_type() != MessageType::MsgAppendResponse || !msg.reject || msg.context.as_ref() != LOST_ENTRIES {
            return false;
        }
        let raft = &mut self.node.raft;
        if raft.state != StateRole::Leader || msg.term != raft.term {
            return true;
        }
        if let Some(pr) = raft.mut_prs().get_mut(msg.from)
            && msg.reject_hint < pr.matched
        {
            info!(group = self.id, follower = msg.from, acknowledged = pr.matched, holds = msg.reject_hint, "a follower lost entries it had acknowledged; catching it up again");
            pr.matched = msg.reject_hint;
            pr.become_probe();
        }
        true
    }

    /// The stream from `peer` ended, most likely because it died. If it led this group, this
    /// follower forgets it, so it grants votes at once instead of honouring the dead leader's
    /// lease, and the voters left take turns, by id, to start a (pre-)election: the lowest now,
    /// the next one tick later if no leader is known by then (the first may have asked a voter
    /// that had not seen the stream end yet, or have a shorter log), and so on. Pre-vote keeps
    /// this harmless when the leader lives on: the voters still hearing from it refuse, and
    /// terms do not move.
    pub fn leader_gone(&mut self, peer: u64) {
        let raft = &mut self.node.raft;
        if raft.state != StateRole::Follower || raft.leader_id != peer {
            return;
        }
        raft.leader_id = raft::INVALID_ID;
        let me = raft.id;
        let rank = raft.prs().iter().filter(|&(&id, _)| id != peer && id < me).count();
        if rank == 0 {
            info!(group = self.id, term = raft.term, "the leader's stream ended; campaigning at once");
            let _ = self.node.campaign();
        } else {
            self.campaign_in = Some(rank);
        }
    }

    /// Proposes a leader's entry; drops it if the leadership it was built under has ended (it
    /// would leave a gap in the offsets), and records where raft-rs put it.
    pub fn propose(&mut self, p: Proposal) {
        if self.partition.lease() != p.lease || self.node.raft.state != StateRole::Leader {
            return;
        }
        if self.node.propose(Vec::new(), p.data).is_err() {
            self.partition.step_down();
            return;
        }
        let index = self.node.raft.raft_log.last_index();
        for placement in &p.placements {
            placement.set(index);
        }
        if self.proposed.len() < MAX_TIMED_PROPOSALS {
            self.proposed.push_back((index, Instant::now()));
        }
    }

    /// Handles a ready, if raft-rs has one: sends what may go before persistence, writes
    /// entries and hard state to the page cache, and returns the committed entries to apply.
    #[cfg(test)]
    pub fn ready(&mut self, out: &dyn Outbox, metrics: &Metrics) -> Result<Option<Readied>, Fatal> {
        self.ready_installing(out, metrics, &mut |_, _| Err("this group installs no snapshots".into()))
    }

    /// [`Group::ready`], with `install` putting a snapshot raft-rs restored into the state
    /// machine and this group's replica.
    pub fn ready_installing(&mut self, out: &dyn Outbox, metrics: &Metrics, install: &mut dyn FnMut(&Partition, &raft::prelude::Snapshot) -> Result<(), String>) -> Result<Option<Readied>, Fatal> {
        // A truncation's producer-state rebuild goes on a bounded read per round.
        // (A leader waiting for it starts serving at a later tick or apply.)
        self.partition.rebuild_producers(REBUILD_BYTES_PER_ROUND).map_err(|e| Fatal { group: self.id, cause: format!("rebuilding producer state failed: {e}") })?;
        if !self.node.has_ready() {
            return Ok(None);
        }
        let mut rd = self.node.ready();
        let role_changed = rd.ss().is_some() || rd.hs().is_some();
        if role_changed {
            let term = self.node.raft.term;
            if self.node.raft.state == StateRole::Leader {
                if self.elected_term != term {
                    self.elected_term = term;
                    metrics.raft.elections.with_label_values(&[self.label.as_str()]).inc();
                    self.leader_start = Some(self.node.raft.raft_log.last_index());
                    info!(group = self.id, term, "elected leader");
                }
            } else {
                self.leader_start = None;
                self.proposed.clear();
                self.partition.step_down();
            }
        }
        for msg in rd.take_messages() {
            self.send(out, msg, metrics);
        }
        let fatal = |cause: String| Fatal { group: self.id, cause };
        // A snapshot raft-rs restored goes into the state machine and the log (durably) before
        // any entry after it is written.
        let snapshot_index = (!rd.snapshot().is_empty()).then(|| rd.snapshot().get_metadata().index);
        if snapshot_index.is_some() {
            install(&self.partition, rd.snapshot()).map_err(|e| fatal(format!("installing a snapshot failed: {e}")))?;
        }
        let entries = rd.take_entries();
        let mut needs_sync = false;
        if !entries.is_empty() {
            metrics.raft.entries.with_label_values(&[self.label.as_str()]).inc_by(entries.len() as u64);
            self.partition.write_entries(&entries, now_ms()).map_err(|e| fatal(format!("writing raft entries failed: {e}")))?;
            if self.write_caching.is_some() {
                self.cached = true;
                self.partition.written();
            } else {
                needs_sync = true;
            }
        }
        let mut sync_state = false;
        if let Some(hs) = rd.hs() {
            self.partition.save_hard_state(hs).map_err(|e| fatal(format!("writing the raft hard state failed: {e}")))?;
            sync_state = (hs.term, hs.vote) != self.saved_vote;
            self.saved_vote = (hs.term, hs.vote);
            needs_sync |= sync_state;
        }
        let committed = rd.take_committed_entries();
        let persisted_messages = rd.take_persisted_messages();
        let number = rd.number();
        self.node.advance_append_async(rd);
        self.pending.push_back(Pending { number, messages: persisted_messages, needs_sync, sync_state, snapshot: snapshot_index });
        if !needs_sync && self.pending.len() == 1 {
            // Nothing to wait for: this ready is as durable as its predecessors.
            self.finish_persisted(number, out, metrics);
        }
        let raft = &self.node.raft;
        metrics.raft.term.with_label_values(&[self.label.as_str()]).set(raft.term as i64);
        metrics.raft.commit.with_label_values(&[self.label.as_str()]).set(raft.raft_log.committed as i64);
        Ok(Some(Readied { committed, role_changed }))
    }

    /// After the loop applied `committed` to its state machine: raises the high watermark,
    /// tells raft-rs, and serves as leader once caught up. Returns the log starts the entries
    /// decided, for the caller to apply with [`Partition::delete_before`] (blocking work).
    pub fn applied(&mut self, committed: &[Entry], metrics: &Metrics) -> Vec<i64> {
        let Some(last) = committed.last().map(|e| e.index) else { return Vec::new() };
        metrics.raft.applied.with_label_values(&[self.label.as_str()]).set(last as i64);
        while self.proposed.front().is_some_and(|(index, _)| *index <= last) {
            if let Some((_, at)) = self.proposed.pop_front() {
                metrics.raft.commit_seconds.with_label_values(&[self.label.as_str()]).observe(at.elapsed().as_secs_f64());
            }
        }
        self.partition.commit_to(last);
        self.node.advance_apply_to(last);
        self.maybe_serve();
        committed.iter().filter_map(|e| decode_log_start(&e.data)).collect()
    }

    /// The fsync this group needs, if it has unsynced writes and none running: at most one in
    /// flight per replica, so readies persist in order.
    /// Under write caching, cached writes are fsynced once the period has passed.
    pub fn sync_job(&mut self) -> Result<Option<SyncJob>, crate::partition::Error> {
        if self.syncing {
            return Ok(None);
        }
        let number = match self.pending.iter().rev().find(|p| p.needs_sync && p.number > self.queued) {
            Some(last) => last.number,
            None if self.cached && self.write_caching.is_some_and(|period| self.last_sync.elapsed() >= period) => self.queued,
            None => return Ok(None),
        };
        let sync_state = self.pending.iter().any(|p| p.number > self.queued && p.sync_state);
        let target = self.partition.sync_target()?;
        self.queued = number;
        self.syncing = true;
        self.cached = false;
        self.last_sync = Instant::now();
        Ok(Some(SyncJob { group: self.id, number, sync_state, target, partition: Arc::clone(&self.partition), timer: None }))
    }

    /// A [`SyncJob`] finished: what it covered counts as persisted (acks=1 on a leader), and
    /// the messages that waited for it go out.
    pub fn persisted(&mut self, number: u64, point: &RecoveryPoint, out: &dyn Outbox, metrics: &Metrics) {
        self.syncing = false;
        self.partition.persisted(point);
        self.finish_persisted(number, out, metrics);
    }

    /// Marks readies up to `number` persisted, plus any following ones that needed no fsync, and
    /// sends the messages that were waiting for that.
    fn finish_persisted(&mut self, number: u64, out: &dyn Outbox, metrics: &Metrics) {
        let mut upto = 0;
        let mut messages = Vec::new();
        let mut snapshot = None;
        while let Some(front) = self.pending.front() {
            if front.number > number && front.needs_sync {
                break;
            }
            let Some(p) = self.pending.pop_front() else { break };
            upto = p.number;
            messages.extend(p.messages);
            snapshot = p.snapshot.or(snapshot);
        }
        if upto == 0 {
            return;
        }
        self.node.on_persist_ready(upto);
        if let Some(index) = snapshot {
            // The state machine holds the snapshot's state, and raft-rs knows it is persisted.
            self.node.advance_apply_to(index);
            metrics.raft.applied.with_label_values(&[self.label.as_str()]).set(index as i64);
        }
        for msg in messages {
            self.send(out, msg, metrics);
        }
    }

    /// Leader: a follower that has not confirmed a snapshot in time is reported as failed, so
    /// raft-rs stops waiting for it.
    fn expire_snapshots(&mut self) {
        if self.snapshots_sent.is_empty() {
            return;
        }
        let waiting = |node: &RawNode<ReplicaStorage>, peer: u64| {
            node.raft.state == StateRole::Leader && node.raft.prs().get(peer).is_some_and(|pr| pr.state == raft::ProgressState::Snapshot)
        };
        let (ticks, timeout) = (self.ticks, self.install_timeout_ticks);
        let sent = std::mem::take(&mut self.snapshots_sent);
        for (peer, at) in sent {
            if !waiting(&self.node, peer) {
                continue;
            }
            if ticks - at >= timeout {
                tracing::warn!(group = self.id, peer, "a follower did not install its snapshot in time; a new one will be taken and sent");
                self.node.report_snapshot(peer, raft::SnapshotStatus::Failure);
                // It may be unreadable (damaged in the store): the next one is taken afresh.
                self.partition.stop_serving_snapshot();
            } else {
                self.snapshots_sent.push((peer, at));
            }
        }
    }

    /// Sends a message; one that cannot be queued counts as an unreachable peer.
    fn send(&mut self, out: &dyn Outbox, msg: Message, metrics: &Metrics) {
        let to = msg.to;
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            self.snapshots_sent.retain(|&(peer, _)| peer != to);
            self.snapshots_sent.push((to, self.ticks));
        }
        metrics.raft.sent.with_label_values(&[self.label.as_str(), message_type(&msg)]).inc();
        if !out.send(self.id, msg) {
            self.node.report_unreachable(to);
        }
    }

    /// A leader serves writes once everything up to its first entry of the term is applied, so
    /// its log end and producer state are exact; and again, from its log end, after a refused
    /// proposal (a leadership transfer in progress) made it stop.
    fn maybe_serve(&mut self) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader || self.partition.lease() != 0 {
            return;
        }
        let ready_at = self.leader_start.unwrap_or_else(|| raft.raft_log.last_index());
        if raft.raft_log.applied >= ready_at && self.partition.become_leader(raft.term) {
            self.leader_start = None;
            info!(group = self.id, term = raft.term, "serving as leader");
        }
    }
}

/// Applies a log start decided by the partition leader's retention (blocking: deletes files).
pub fn apply_log_start(partition: &Partition, start: i64, metrics: &Metrics) {
    match partition.delete_before(start) {
        Ok(deleted) => {
            metrics.retention_deleted_segments.inc_by(deleted as u64);
            info!(topic = partition.topic(), partition = partition.index(), start, deleted, "log start moved by the leader's retention");
        }
        Err(e) => error!(topic = partition.topic(), partition = partition.index(), start, cause = %e, "log start not moved"),
    }
}

/// The metrics label of a message's type.
pub fn message_type(msg: &Message) -> &'static str {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use futures::FutureExt;
    use tokio::sync::mpsc;

    use super::*;
    use crate::config::FlushPolicy;
    use crate::log::fs::FaultyFs;
    use crate::partition::Appended;
    use crate::partition::batch::tests::batch;
    use crate::partition::replica::ReplicaSetup;
    use crate::partition::replica::tests::settings;

    /// A sole voter has no peers to send to.
    struct Nowhere;

    impl Outbox for Nowhere {
        fn send(&self, _group: u64, _msg: Message) -> bool {
            true
        }
    }

    fn sole_voter(dir: &Path, policy: FlushPolicy, flush_interval: Duration) -> (Group, mpsc::Receiver<Proposal>) {
        sole_voter_on(FaultyFs::new(), dir, policy, flush_interval)
    }

    fn sole_voter_on(fs: FaultyFs, dir: &Path, policy: FlushPolicy, flush_interval: Duration) -> (Group, mpsc::Receiver<Proposal>) {
        let (tx, rx) = mpsc::channel(16);
        let setup = ReplicaSetup { group: 7, voters: vec![1], proposals: tx, cache_bytes: 1 << 20, offsets_on_write: false, applied: None };
        let config = crate::partition::PartitionConfig { flush_policy: policy, flush_interval, fs: Arc::new(fs), ..settings(1 << 20) };
        let partition = Partition::open_replica("t", 0, dir, config, setup).unwrap();
        let group = Group::new(7, 1, &RaftConfig::default(), partition, None, &slog::Logger::root(slog::Discard, slog::o!())).unwrap();
        (group, rx)
    }

    /// One round of the ready loop without a tick; returns how many files it fsynced.
    fn round(g: &mut Group, proposals: &mut mpsc::Receiver<Proposal>, metrics: &Metrics) -> usize {
        while let Ok(p) = proposals.try_recv() {
            g.propose(p);
        }
        if let Some(readied) = g.ready(&Nowhere, metrics).unwrap() {
            g.applied(&readied.committed, metrics);
        }
        match g.sync_job().unwrap() {
            Some(job) => {
                let files = 1 + usize::from(job.sync_state);
                let (_, number, point) = job.run().unwrap();
                g.persisted(number, &point, &Nowhere, metrics);
                files
            }
            None => 0,
        }
    }

    /// Runs rounds (no tick) until the replica serves as leader.
    fn lead(g: &mut Group, rx: &mut mpsc::Receiver<Proposal>, metrics: &Metrics) {
        for _ in 0..4 {
            round(g, rx, metrics);
        }
        assert!(g.partition.is_leader(), "a sole voter serves without waiting for an election timeout");
    }

    /// Appends a batch of three records and runs three rounds; returns the append and how many
    /// files those rounds fsynced.
    fn write(g: &mut Group, rx: &mut mpsc::Receiver<Proposal>, metrics: &Metrics) -> (Appended, usize) {
        let appended = g.partition.append(&batch(3, -1, -1, -1), 0).unwrap();
        let fsyncs = (0..3).map(|_| round(g, rx, metrics)).sum();
        (appended, fsyncs)
    }

    #[test]
    fn a_sole_voter_leads_at_once_and_commits_with_one_fsync_per_round() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(1);
        let (mut g, mut rx) = sole_voter(dir.path(), FlushPolicy::OnAck, Duration::from_secs(1));
        // No tick: no election timeout is waited for.
        lead(&mut g, &mut rx, &metrics);
        let (appended, fsyncs) = write(&mut g, &mut rx, &metrics);
        assert!(g.partition.wait_durable(&appended, true).now_or_never().is_some_and(|r| r.is_ok()), "acks=all is answered");
        assert_eq!(fsyncs, 1, "one write, one fsync (the hard state's commit index needs none)");
    }

    #[test]
    fn write_caching_acknowledges_before_the_fsync_and_fsyncs_each_period() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(1);
        let (mut g, mut rx) = sole_voter(dir.path(), FlushPolicy::Interval, Duration::from_secs(3600));
        lead(&mut g, &mut rx, &metrics);
        let (appended, fsyncs) = write(&mut g, &mut rx, &metrics);
        assert!(g.partition.wait_durable(&appended, true).now_or_never().is_some_and(|r| r.is_ok()), "cached writes are acknowledged");
        assert_eq!(fsyncs, 0, "nothing is fsynced before the period is over");
        // Once the period has passed, one fsync covers what was cached.
        g.write_caching = Some(Duration::ZERO);
        assert_eq!(round(&mut g, &mut rx, &metrics), 1);
        assert_eq!(round(&mut g, &mut rx, &metrics), 0, "nothing is left to fsync");
    }


    #[test]
    fn a_failed_fsync_acknowledges_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(1);
        let fs = FaultyFs::new();
        let (mut g, mut rx) = sole_voter_on(fs.clone(), dir.path(), FlushPolicy::OnAck, Duration::from_secs(1));
        lead(&mut g, &mut rx, &metrics);
        let appended = g.partition.append(&batch(3, -1, -1, -1), 0).unwrap();
        g.propose(rx.try_recv().unwrap());
        g.ready(&Nowhere, &metrics).unwrap();
        fs.fail_syncs(1);
        let job = g.sync_job().unwrap().expect("the entry needs an fsync");
        // The driver stops the node on this error; nothing it covered was acknowledged.
        assert!(job.run().is_err());
        for all in [true, false] {
            assert!(g.partition.wait_durable(&appended, all).now_or_never().is_none(), "acks={} answered for an entry whose fsync failed", if all { "all" } else { "1" });
        }
    }

    #[test]
    fn a_full_disk_or_a_torn_write_stops_the_replica_and_a_restart_keeps_what_was_acknowledged() {
        for fault in ["disk full", "torn write"] {
            let dir = tempfile::tempdir().unwrap();
            let metrics = Metrics::new(1);
            let fs = FaultyFs::new();
            let (mut g, mut rx) = sole_voter_on(fs.clone(), dir.path(), FlushPolicy::OnAck, Duration::from_secs(1));
            lead(&mut g, &mut rx, &metrics);
            let (first, _) = write(&mut g, &mut rx, &metrics);
            assert!(g.partition.wait_durable(&first, true).now_or_never().is_some_and(|r| r.is_ok()));
            let second = g.partition.append(&batch(5, -1, -1, -1), 0).unwrap();
            g.propose(rx.try_recv().unwrap());
            match fault {
                "disk full" => fs.set_disk_full(true),
                _ => fs.tear_next_write(10),
            }
            assert!(g.ready(&Nowhere, &metrics).is_err(), "{fault}: writing the entry must fail the replica");
            assert!(g.partition.wait_durable(&second, true).now_or_never().is_none(), "{fault}: the failed write was acknowledged");
            // The driver stops the node; after a power loss and a restart the acknowledged write
            // is there and the torn bytes are not.
            drop(g);
            fs.set_disk_full(false);
            fs.crash().unwrap();
            let (mut g, mut rx) = sole_voter_on(fs.clone(), dir.path(), FlushPolicy::OnAck, Duration::from_secs(1));
            lead(&mut g, &mut rx, &metrics);
            assert_eq!(g.partition.high_watermark(), first.end_offset, "{fault}");
            let third = g.partition.append(&batch(2, -1, -1, -1), 0).unwrap();
            assert_eq!(third.base_offset, first.end_offset, "{fault}: the log goes on after the acknowledged write");
        }
    }

    fn peer_message(kind: MessageType, term: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(kind);
        m.from = 2;
        m.to = 1;
        m.term = term;
        m
    }

    #[test]
    fn peer_messages_that_contradict_the_log_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(1);
        let (mut g, mut rx) = sole_voter(dir.path(), FlushPolicy::OnAck, Duration::from_secs(1));
        lead(&mut g, &mut rx, &metrics);
        let (appended, _) = write(&mut g, &mut rx, &metrics);
        let raft_log = &g.node.raft.raft_log;
        let (term, committed, last) = (g.node.raft.term, raft_log.committed, raft_log.last_index());
        let before_last = raft_log.term(committed - 1).unwrap();
        assert_eq!(committed, last);
        // A heartbeat that claims a commit past our log (raft-rs would panic on it).
        let mut heartbeat = peer_message(MessageType::MsgHeartbeat, term);
        heartbeat.commit = last + 5;
        assert!(matches!(g.step(heartbeat, &metrics), Err(Refusal::Commit { .. })));
        // A forged newer term that rewrites a committed entry.
        let mut rewrite = peer_message(MessageType::MsgAppend, term + 1);
        rewrite.index = committed - 1;
        rewrite.log_term = before_last;
        let mut e = Entry::default();
        e.index = committed;
        e.term = term + 1;
        rewrite.entries = vec![e].into();
        assert!(matches!(g.step(rewrite, &metrics), Err(Refusal::Entries(_))));
        // Entries whose offsets leave a gap after our log.
        let mut gap = peer_message(MessageType::MsgAppend, term);
        gap.index = last;
        gap.log_term = term;
        let mut e = Entry::default();
        e.index = last + 1;
        e.term = term;
        e.data = crate::raft::entry::encode_entry(appended.end_offset + 100, 1, 0, &batch(1, -1, -1, -1)).into();
        gap.entries = vec![e].into();
        assert!(matches!(g.step(gap, &metrics), Err(Refusal::Entries(_))));
        // None of them reached raft-rs.
        let raft = &g.node.raft;
        assert_eq!((raft.term, raft.raft_log.committed, raft.raft_log.last_index()), (term, committed, last));
        assert!(g.partition.is_leader());
    }
}
