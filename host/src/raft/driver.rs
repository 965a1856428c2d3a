//! The ready loop: one task per node drives every Raft group on it.
//!
//! Each round it takes everything waiting (peer messages, proposals, ticks), then handles each
//! group's `Ready` (the per-group steps are in [`super::group`]):
//! - a leader's messages go out at once, before its own fsync (Raft thesis 10.2.1), so the
//!   followers' disks and the leader's work in parallel;
//! - new entries and the hard state are written to the page cache, and the ready is advanced
//!   with `advance_append_async`;
//! - committed entries are applied: the group's [`StateMachine`] (if any) applies what they
//!   mean, then the replica moves its high watermark.
//!
//! Persistence is group commit: each round of the loop starts one background fsync for every
//! replica written since its last one (all together, at most one in flight per replica); each
//! reports back (`on_persist_ready`), and only then are the messages that must follow
//! persistence (votes, append responses) sent. While fsyncs run the loop keeps going, so the
//! disk and the network overlap.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use raft::StateRole;
use raft::prelude::{Entry, Message, MessageType};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::entry::{ENTRY_PREFIX, merge_entries};
use super::group::{self, Group, Outbox};
use super::state_machine::{FetchedSnapshot, GroupChange, MachineFor, SnapshotSource, StateMachine};
use super::storage::SnapshotPoint;
use super::transport::Transport;
use super::validate;
use super::{Event, GroupStatus, Leadership, METADATA_GROUP, Replication};
use crate::config::RaftConfig;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::partition::descriptor::Descriptor;
use crate::partition::producer_state::ProducerStates;
use crate::partition::replica::Proposal;

/// Events handled per round at most, so readies are produced regularly under load.
const MAX_EVENTS_PER_ROUND: usize = 4096;

impl Outbox for Transport {
    fn send(&self, group: u64, msg: Message) -> bool {
        Transport::send(self, group, msg)
    }
}

/// Runs the loop until `stop`.
pub struct Driver {
    me: u64,
    config: RaftConfig,
    replication: Arc<Replication>,
    transport: Transport,
    groups: HashMap<u64, Group>,
    /// The state machines of the groups that have one.
    machines: HashMap<u64, Box<dyn StateMachine>>,
    /// Picks the state machine of a partition's group.
    machine_for: MachineFor,
    events_tx: mpsc::Sender<Event>,
    /// Peers whose stream broke and that have not been heard from since.
    down_peers: HashSet<u64>,
    /// Where snapshots a leader names are fetched from (none: snapshots are refused).
    snapshots: Option<Arc<dyn SnapshotSource>>,
    /// Groups fetching a snapshot: one at a time each.
    installing: HashSet<u64>,
    /// Fetched snapshots, by group, with their index, until raft-rs restores them.
    fetched: HashMap<u64, (u64, FetchedSnapshot)>,
    logger: slog::Logger,
    metrics: Arc<Metrics>,
}

impl Driver {
    /// A driver with no groups yet: add the metadata group ([`Driver::add_metadata_group`]) and
    /// the partitions ([`Driver::add_partition`]) before running it.
    pub fn new(config: RaftConfig, replication: Arc<Replication>, transport: Transport, events_tx: mpsc::Sender<Event>, metrics: Arc<Metrics>, machine_for: MachineFor) -> Driver {
        Driver {
            me: replication.me(),
            config,
            replication,
            transport,
            groups: HashMap::new(),
            machines: HashMap::new(),
            machine_for,
            events_tx,
            down_peers: HashSet::new(),
            snapshots: None,
            installing: HashSet::new(),
            fetched: HashMap::new(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            metrics,
        }
    }

    /// Adds the metadata group, whose state has applied the entries up to `applied`.
    pub fn add_metadata_group(&mut self, log: Arc<Partition>, applied: u64, machine: Box<dyn StateMachine>) -> Result<(), raft::Error> {
        self.groups.insert(METADATA_GROUP, Group::new(METADATA_GROUP, self.me, &self.config, log, Some(applied), &self.logger)?);
        self.machines.insert(METADATA_GROUP, machine);
        Ok(())
    }

    /// Lets groups whose state machine restores snapshots install the ones leaders send.
    pub fn set_snapshot_source(&mut self, source: Arc<dyn SnapshotSource>) {
        self.snapshots = Some(source);
    }

    /// Adds a partition's group.
    pub fn add_partition(&mut self, id: u64, log: Arc<Partition>) -> Result<(), raft::Error> {
        let machine = (self.machine_for)(&log);
        self.groups.insert(id, Group::new(id, self.me, &self.config, log, None, &self.logger)?);
        match machine {
            Some(machine) => self.machines.insert(id, machine),
            None => self.machines.remove(&id),
        };
        Ok(())
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>, mut proposals: mpsc::Receiver<Proposal>, mut stop: watch::Receiver<bool>) {
        // A merged entry must fit in every replica's log as well as in one append message.
        let merge_limit = (self.config.max_append_bytes as usize).min(self.replication.max_entry_bytes());
        let mut batch = ProposalBatch::new(merge_limit);
        let mut ticks = tokio::time::interval(Duration::from_millis(self.config.tick_ms));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                _ = ticks.tick() => {
                    for g in self.groups.values_mut() {
                        g.tick();
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
            Event::Messages { from, messages } => {
                self.down_peers.remove(&from);
                let max_entry_bytes = self.replication.max_entry_bytes();
                for (group, msg) in messages {
                    // Only the metadata group takes forwarded proposals.
                    let metadata = group == METADATA_GROUP;
                    let installs = self.snapshots.is_some();
                    let checked = validate::check_message(self.me, self.replication.voters(), from, &msg, max_entry_bytes, metadata, installs).and_then(|()| {
                        if msg.get_msg_type() == MessageType::MsgSnapshot {
                            return self.snapshot_message(group, msg);
                        }
                        let g = self.groups.get_mut(&group).ok_or(validate::Refusal::UnknownGroup(group))?;
                        g.step(msg, &self.metrics)
                    });
                    if let Err(refusal) = checked {
                        self.metrics.raft.refused.with_label_values(&[refusal.reason()]).inc();
                        warn!(peer = from, group, %refusal, "refused a raft message");
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
            Event::PeerGone { peer } => {
                // Clients stop being told the peer leads at once, and its groups elect anew.
                self.down_peers.insert(peer);
                for g in self.groups.values_mut() {
                    g.leader_gone(peer);
                    publish_leadership(g, self.config.heartbeat_ticks, &self.down_peers, &self.replication);
                }
            }
            Event::Propose { group, data, refused } => {
                let proposed = self.groups.get_mut(&group).map(|g| g.node.propose(Vec::new(), data));
                match proposed {
                    Some(Ok(())) => {}
                    Some(Err(raft::Error::ProposalDropped)) => {
                        let _ = refused.send("no leader is known yet".into());
                    }
                    Some(Err(e)) => {
                        let _ = refused.send(e.to_string());
                    }
                    None => {
                        let _ = refused.send(format!("group {group} is not on this node"));
                    }
                }
            }
            Event::Persisted(Ok((group, number, point))) => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.persisted(number, &point, &self.transport, &self.metrics);
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
            Event::Capture { group, reply } => {
                let _ = reply.send(self.capture(group));
            }
            Event::SnapshotFetched { group, msg, fetched } => {
                self.installing.remove(&group);
                match fetched {
                    Ok(fetched) => self.fetched(group, *msg, fetched),
                    Err(cause) => {
                        self.metrics.snapshot.failed.with_label_values(&[self.kind_of(group), "install"]).inc();
                        warn!(group, %cause, "the leader's snapshot could not be fetched; it will be sent again");
                    }
                }
            }
        }
    }

    /// A leader's snapshot message: raft-rs takes it as it is if the log already holds the
    /// snapshot's entry or the message is stale; otherwise the snapshot is fetched first (off
    /// the loop), installed, and only then is the message stepped.
    fn snapshot_message(&mut self, group: u64, msg: Message) -> Result<(), validate::Refusal> {
        let g = self.groups.get_mut(&group).ok_or(validate::Refusal::UnknownGroup(group))?;
        if !needs_install(g, &msg) {
            return g.step(msg, &self.metrics);
        }
        let Some(source) = self.snapshots.clone() else { return Ok(()) };
        if !self.installing.insert(group) {
            // One fetch at a time; the leader sends the message again if this one fails.
            return Ok(());
        }
        let (events, leader, data) = (self.events_tx.clone(), msg.from, msg.get_snapshot().data.to_vec());
        tokio::spawn(async move {
            let fetched = source.fetch(group, leader, data).await;
            let _ = events.send(Event::SnapshotFetched { group, msg: Box::new(msg), fetched }).await;
        });
        Ok(())
    }

    /// A fetched snapshot: kept for the ready in which raft-rs restores it, then the message
    /// is stepped (raft-rs decides whether to restore it).
    fn fetched(&mut self, group: u64, msg: Message, fetched: FetchedSnapshot) {
        let Some(g) = self.groups.get_mut(&group) else { return };
        let readable = match self.machines.get(&group) {
            Some(machine) => machine.check(&fetched.state),
            None => Descriptor::decode(&fetched.state).map(drop),
        };
        if let Err(cause) = readable {
            // Refused before raft-rs accepts it: once it has, the install must not fail.
            self.metrics.snapshot.failed.with_label_values(&[self.kind_of(group), "corrupt"]).inc();
            warn!(group, %cause, "the leader's snapshot is refused");
            return;
        }
        if needs_install(g, &msg) {
            self.fetched.insert(group, (msg.get_snapshot().get_metadata().index, fetched));
        }
        if let Err(refusal) = g.step(msg, &self.metrics) {
            warn!(group, %refusal, "the snapshot's message was refused");
        }
    }

    /// The applied state of `group` with the index and term it stands at; for a data
    /// partition, its descriptor at the entry before its log's first.
    fn capture(&self, group: u64) -> Result<super::Captured, String> {
        let g = self.groups.get(&group).ok_or_else(|| format!("group {group} is not on this node"))?;
        if group != METADATA_GROUP && !self.machines.contains_key(&group) {
            let (point, descriptor) = g.partition.describe().ok_or("the partition is closed")?;
            let applied = g.node.raft.raft_log.applied;
            return Ok(super::Captured { index: point.index, applied, term: point.term, voters: self.replication.voters().to_vec(), offset: point.offset, state: descriptor.encode() });
        }
        let machine = self.machines.get(&group).ok_or_else(|| format!("group {group} keeps no state beyond its log"))?;
        let state = machine.snapshot().ok_or_else(|| format!("group {group} keeps no state beyond its log"))??;
        let raft = &g.node.raft;
        let index = raft.raft_log.applied;
        let term = raft.raft_log.term(index).map_err(|e| format!("term of entry {index}: {e}"))?;
        if index == 0 {
            return Err("nothing applied yet".into());
        }
        let offset = g.partition.offset_after(index).ok_or_else(|| format!("entry {index} is no longer in the log"))?;
        Ok(super::Captured { index, applied: index, term, voters: self.replication.voters().to_vec(), offset, state })
    }

    fn propose(&mut self, p: Proposal) {
        if let Some(g) = self.groups.get_mut(&p.group) {
            g.propose(p);
        }
    }

    /// The snapshot metrics' `kind` label of a group.
    fn kind_of(&self, group: u64) -> &'static str {
        match (group, self.machines.contains_key(&group)) {
            (METADATA_GROUP, _) => "metadata",
            (_, true) => "offsets",
            (_, false) => "partition",
        }
    }

    fn handle_ready(&mut self, id: u64) {
        let kind = self.kind_of(id);
        let Some(g) = self.groups.get_mut(&id) else { return };
        let (machines, fetched, metrics) = (&mut self.machines, &mut self.fetched, &self.metrics);
        let mut changes = Vec::new();
        let mut install = |partition: &Partition, snapshot: &raft::prelude::Snapshot| {
            let machine = machines.get_mut(&id).map(|m| m.as_mut() as &mut dyn StateMachine);
            changes = install(id, snapshot, partition, machine, fetched)?;
            metrics.snapshot.installs.with_label_values(&[kind]).inc();
            Ok(())
        };
        let readied = g.ready_installing(&self.transport, &self.metrics, &mut install);
        self.change_groups(changes);
        let Some(g) = self.groups.get_mut(&id) else { return };
        let readied = match readied {
            Ok(Some(readied)) => readied,
            Ok(None) => return,
            Err(fatal) => {
                // Raft cannot go on without its disk: what is not durable must not be
                // acknowledged, so the node stops rather than serve from a broken log.
                error!(%fatal, "stopping the node");
                std::process::exit(70);
            }
        };
        if readied.role_changed {
            publish_leadership(g, self.config.heartbeat_ticks, &self.down_peers, &self.replication);
        }
        if !readied.committed.is_empty() {
            self.apply(id, &readied.committed);
        }
        self.update_caught_up(id);
    }

    /// Applies committed entries: to the group's state machine first (so what waits for the
    /// high watermark, an offset commit say, finds its state applied), then to the replica (high
    /// watermark, log start); then starts and stops the groups metadata entries created and
    /// deleted.
    fn apply(&mut self, id: u64, committed: &[Entry]) {
        let changes = self.machines.get_mut(&id).map(|m| m.apply(committed)).unwrap_or_default();
        if let Some(g) = self.groups.get_mut(&id) {
            // Deleting files is blocking work; the log start only moves forward, so order is moot.
            for start in g.applied(committed, &self.metrics) {
                let (partition, metrics) = (Arc::clone(&g.partition), Arc::clone(&self.metrics));
                tokio::task::spawn_blocking(move || group::apply_log_start(&partition, start, &metrics));
            }
        }
        self.change_groups(changes);
    }

    /// Starts and stops the groups a state machine created and deleted.
    fn change_groups(&mut self, changes: Vec<GroupChange>) {
        for change in changes {
            match change {
                GroupChange::Start { group, log } => {
                    if let Err(e) = self.add_partition(group, log) {
                        error!(group, cause = %e, "could not start a partition's raft group");
                    }
                }
                GroupChange::Stop { group } => {
                    self.groups.remove(&group);
                    self.machines.remove(&group);
                    self.replication.set_leadership(group, Leadership::default());
                }
            }
        }
    }

    /// Starts an fsync for every replica with unsynced writes and none running: each replica
    /// has at most one in flight (readies persist in order), and all of a round's start
    /// together, so the disk sees them side by side and no partition waits for another's.
    fn start_persist_round(&mut self) {
        for (&id, g) in self.groups.iter_mut() {
            let mut job = match g.sync_job() {
                Ok(Some(job)) => job,
                Ok(None) => continue,
                Err(e) => {
                    warn!(group = id, cause = %e, "replica closed while persisting");
                    continue;
                }
            };
            job.timer = Some(self.metrics.raft.fsync_seconds.clone());
            let events = self.events_tx.clone();
            tokio::task::spawn_blocking(move || {
                let _ = events.blocking_send(Event::Persisted(job.run()));
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
pub(crate) struct ProposalBatch {
    limit: usize,
    merged: Vec<Proposal>,
}

impl ProposalBatch {
    pub(crate) fn new(limit: usize) -> ProposalBatch {
        ProposalBatch { limit, merged: Vec::new() }
    }

    pub(crate) fn push(&mut self, p: Proposal) {
        let into = self.merged.iter_mut().rev().find(|m| m.group == p.group);
        if let Some(m) = into
            && m.lease == p.lease
            && merge_entries(&mut m.data, &p.data, self.limit.saturating_sub(ENTRY_PREFIX))
        {
            m.placements.extend(p.placements);
            return;
        }
        self.merged.push(p);
    }

    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, Proposal> {
        self.merged.drain(..)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::entry::{decode_entry, encode_entry};

    fn proposal(group: u64, lease: u64, base: i64, count: u32, payload: &[u8]) -> Proposal {
        Proposal { group, lease, data: encode_entry(base, count, base * 10, payload), placements: Vec::new() }
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

/// Whether a leader's snapshot message needs the snapshot installed before raft-rs takes it:
/// not if it is stale (an older term, or at most our commit), nor if our log already holds the
/// snapshot's entry (raft-rs then just moves the commit).
pub(super) fn needs_install(g: &Group, msg: &Message) -> bool {
    let meta = msg.get_snapshot().get_metadata();
    let log = &g.node.raft.raft_log;
    msg.term >= g.node.raft.term && meta.index > log.committed && !log.match_term(meta.index, meta.term)
}

/// Puts a snapshot raft-rs restored into the group's state machine and log, from what was
/// fetched for it: first a record of the install (so a crash part way is recognised), then the
/// state machine (whose applied index decides, after a crash, whether the install happened),
/// then the log. Returns the groups the state machine started or stopped.
fn install(
    group: u64,
    snapshot: &raft::prelude::Snapshot,
    partition: &Partition,
    machine: Option<&mut dyn StateMachine>,
    fetched: &mut HashMap<u64, (u64, FetchedSnapshot)>,
) -> Result<Vec<GroupChange>, String> {
    let meta = snapshot.get_metadata();
    let (index, snapshot) = fetched.remove(&group).ok_or("raft-rs restored a snapshot that was not fetched")?;
    if index != meta.index {
        return Err(format!("raft-rs restored snapshot {}, but {index} was fetched", meta.index));
    }
    let point = SnapshotPoint { index, term: meta.term, offset: snapshot.offset };
    let changes = match machine {
        Some(machine) => {
            partition.begin_install(point).map_err(|e| e.to_string())?;
            let changes = machine.restore(&snapshot, index)?;
            partition.install_snapshot(point, ProducerStates::default()).map_err(|e| e.to_string())?;
            changes
        }
        None => {
            // Decoded once already, before raft-rs took the message.
            let descriptor = Descriptor::decode(&snapshot.state)?;
            partition.install_descriptor(point, descriptor).map_err(|e| e.to_string())?;
            Vec::new()
        }
    };
    tracing::info!(group, index, term = meta.term, "installed the leader's snapshot");
    Ok(changes)
}
