//! The consumer group coordinator: group membership ([`group`]) and committed offsets
//! ([`offsets`]), for every group whose offsets partition this node leads (on a single node:
//! all of them). Offsets are durable in the internal `__consumer_offsets` topic and replayed into
//! an in-memory cache at start. Membership lives in memory: after a restart members rejoin, as
//! they do when a Kafka coordinator moves.
//!
//! Locking: one mutex over all groups and offsets; no I/O and no `.await` happens under it.

pub mod group;
pub mod offsets;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use raft::prelude::Entry;
use tracing::{info, warn};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::cluster::{self, Cluster};
use crate::config::GroupsConfig;
use crate::partition::replica::decode_entry;
use crate::partition::{Appended, Partition};
use crate::partition::kept_state::KeptState;
use crate::raft::state_machine::{FetchedSnapshot, GroupChange, StateMachine};
use group::{Group, GroupState, GroupTimeouts, JoinOutcome, JoinRequest, Reply, SyncOutcome};
use offsets::{CommittedOffset, OFFSETS_TOPIC, OffsetKey, OffsetRecord};

/// The offsets topic's [`StateMachine`]: every replica applies committed offsets to its
/// coordinator's cache as they commit, so whichever node becomes a group's coordinator already
/// has them. Applying an entry twice is harmless: a position not newer than the cached one is
/// skipped. Its snapshot is every live commit of the partition's groups; the newest one is also
/// kept beside the partition's log, which is compacted below it.
pub struct OffsetsMachine {
    coordinator: Arc<Coordinator>,
    log: Arc<Partition>,
}

impl OffsetsMachine {
    /// The state machine of offsets partition `log`.
    pub fn new(coordinator: Arc<Coordinator>, log: Arc<Partition>) -> OffsetsMachine {
        OffsetsMachine { coordinator, log }
    }
}

impl StateMachine for OffsetsMachine {
    fn apply(&mut self, committed: &[Entry]) -> Vec<GroupChange> {
        for entry in committed {
            if let Some((base, count, _, batches)) = decode_entry(&entry.data)
                && count > 0
            {
                self.coordinator.apply_committed(base, batches);
            }
        }
        Vec::new()
    }

    fn snapshot(&self) -> Option<Result<Vec<u8>, String>> {
        Some(offsets::encode_snapshot(&self.coordinator.commits_of_partition(self.log.index())))
    }

    fn check(&self, state: &[u8]) -> Result<(), String> {
        offsets::decode_snapshot(state).map(drop)
    }

    fn restore(&mut self, snapshot: &FetchedSnapshot, index: u64) -> Result<Vec<GroupChange>, String> {
        let commits = offsets::decode_snapshot(&snapshot.state)?;
        // Kept first: it is what a restart starts from once the log is replaced.
        let kept = KeptState { index, offset: snapshot.offset, state: snapshot.state.clone() };
        self.log.keep_state(&kept).map_err(|e| e.to_string())?;
        self.coordinator.restore_partition(self.log.index(), commits, snapshot.offset);
        Ok(Vec::new())
    }
}

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The offsets topic could not be created or opened.
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// The offsets topic could not be read back.
    #[error("replaying {OFFSETS_TOPIC}: {0}")]
    Replay(String),
}

/// A group as ListGroups and DescribeGroups show it.
#[derive(Debug, Clone)]
pub struct GroupSummary {
    /// The group id.
    pub id: String,
    /// Its state name.
    pub state: &'static str,
    /// "consumer", or empty for a group that only has offsets.
    pub protocol_type: String,
    /// The chosen assignor.
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment).
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// A topic's partitions with their committed offsets (`None`: nothing committed).
pub type TopicOffsets = (String, Vec<(i32, Option<CommittedOffset>)>);

/// One partition's commit, as the OffsetCommit handler passes it in.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// What to store.
    pub offset: CommittedOffset,
}

struct State {
    groups: HashMap<String, Group>,
    /// Group -> (topic, partition) -> committed offset.
    offsets: HashMap<String, BTreeMap<(String, i32), CommittedOffset>>,
    /// Where in the offsets topic each cached commit was written. Commits wait for the fsync
    /// concurrently and may finish out of order; an older one must not replace a newer one.
    positions: HashMap<OffsetKey, i64>,
    /// Since when (ms) each group without members has been seen empty; the retention of its
    /// offsets counts from then at the earliest.
    empty_since: HashMap<String, i64>,
    /// Commits of each group between their check and their append: expiry leaves the group
    /// alone meanwhile, or a tombstone could land after an acknowledged commit.
    committing: HashMap<String, usize>,
    /// Groups whose expired offsets are being tombstoned: commits wait (retriably) meanwhile.
    expiring: HashSet<String>,
    /// Since when (ms) this node has led each offsets partition: no offset's retention counts
    /// from earlier, since whether its group had members before is not known here.
    leading_since: HashMap<i32, i64>,
    /// When expired offsets are looked for next.
    next_expiry_check: Instant,
}

impl State {
    fn new(offsets: HashMap<String, BTreeMap<(String, i32), CommittedOffset>>, first_expiry_check: Instant) -> State {
        State {
            groups: HashMap::new(),
            offsets,
            positions: HashMap::new(),
            empty_since: HashMap::new(),
            committing: HashMap::new(),
            expiring: HashSet::new(),
            leading_since: HashMap::new(),
            next_expiry_check: first_expiry_check,
        }
    }
}

/// The group coordinator of this node.
pub struct Coordinator {
    cluster: Arc<Cluster>,
    config: GroupsConfig,
    state: Mutex<State>,
}

impl Coordinator {
    /// Replays the offsets topic, if it exists yet.
    pub fn open(cluster: Arc<Cluster>, config: GroupsConfig) -> Result<Coordinator, Error> {
        if cluster.topic(OFFSETS_TOPIC).is_none() {
            // The metadata group creates it once a leader is elected.
            return Ok(Coordinator::with_offsets(cluster, config, HashMap::new()));
        }
        let topic = cluster.topic(OFFSETS_TOPIC).ok_or_else(|| Error::Replay("offsets topic vanished".into()))?;
        let mut offsets: HashMap<String, BTreeMap<(String, i32), CommittedOffset>> = HashMap::new();
        let mut replayed = 0usize;
        for partition in &topic.partitions {
            // The snapshot kept beside a compacted log first, then the log: replaying commits
            // older than the snapshot onto it ends where the snapshot stands.
            if let Some(kept) = partition.kept_state().map_err(|e| Error::Replay(e.to_string()))? {
                for (key, value) in offsets::decode_snapshot(&kept.state).map_err(Error::Replay)? {
                    if let Some(v) = value {
                        offsets.entry(key.group).or_default().insert((key.topic, key.partition), v);
                    }
                }
            }
            let mut from = partition.log_start_offset().map_err(|e| Error::Replay(e.to_string()))?;
            while from < partition.high_watermark() {
                let read = partition.read(from, 4 << 20).map_err(|e| Error::Replay(e.to_string()))?;
                let Some(next) = offsets::next_offset(&read.records) else { break };
                let (commits, skipped) = offsets::decode_batches(Bytes::from(read.records)).map_err(Error::Replay)?;
                if skipped > 0 {
                    warn!(partition = partition.index(), skipped, "unreadable records in the offsets topic were skipped");
                }
                for (key, value) in commits {
                    replayed += 1;
                    let group = offsets.entry(key.group).or_default();
                    match value {
                        Some(v) => group.insert((key.topic, key.partition), v),
                        None => group.remove(&(key.topic, key.partition)),
                    };
                }
                from = next;
            }
        }
        offsets.retain(|_, o| !o.is_empty());
        info!(groups = offsets.len(), records = replayed, "committed offsets loaded");
        Ok(Coordinator::with_offsets(cluster, config, offsets))
    }

    fn with_offsets(cluster: Arc<Cluster>, config: GroupsConfig, offsets: HashMap<String, BTreeMap<(String, i32), CommittedOffset>>) -> Coordinator {
        let first_check = Instant::now() + Duration::from_millis(config.offsets_retention_check_interval_ms);
        Coordinator { cluster, config, state: Mutex::new(State::new(offsets, first_check)) }
    }

    /// Whether this node coordinates `group_id`: it leads the group's offsets partition (always,
    /// on a single node). Members of a group whose coordinator moved get NOT_COORDINATOR and
    /// look it up again.
    pub fn is_coordinator(&self, group_id: &str) -> bool {
        let Some(topic) = self.cluster.topic(OFFSETS_TOPIC) else { return false };
        let index = offsets::partition_for(group_id, topic.partitions.len() as i32);
        topic.partitions.get(index as usize).is_some_and(|p| p.is_leader())
    }

    /// Advances every group's timers (session expiry, rebalance deadlines), forgets groups left
    /// with neither members nor offsets, and expires offsets when a check is due.
    pub fn tick(&self) {
        let now = Instant::now();
        let expiry_due = {
            let mut state = self.lock();
            let State { groups, offsets, empty_since, leading_since, .. } = &mut *state;
            for group in groups.values_mut() {
                group.tick(now);
            }
            let now_ms = now_ms();
            if let Some(topic) = self.cluster.topic(OFFSETS_TOPIC) {
                for p in &topic.partitions {
                    if p.is_leader() {
                        leading_since.entry(p.index()).or_insert(now_ms);
                    } else {
                        leading_since.remove(&p.index());
                    }
                }
            }
            groups.retain(|id, g| !(g.state() == GroupState::Dead || (g.is_unused() && !offsets.contains_key(id))));
            for (id, g) in groups.iter() {
                if g.is_unused() {
                    empty_since.entry(id.clone()).or_insert(now_ms);
                } else {
                    empty_since.remove(id);
                }
            }
            empty_since.retain(|id, _| groups.contains_key(id));
            let due = now >= state.next_expiry_check;
            if due {
                state.next_expiry_check = now + Duration::from_millis(self.config.offsets_retention_check_interval_ms);
            }
            due
        };
        if expiry_due {
            self.expire_offsets();
        }
    }

    /// The lag of every committed offset of the groups this node coordinates: the partition's
    /// high watermark minus the offset (0 when the group is ahead). Returns
    /// (group, topic, partition, lag).
    pub fn lags(&self) -> Vec<(String, String, i32, i64)> {
        let state = self.lock();
        let mut lags = Vec::new();
        for (group, committed) in state.offsets.iter().filter(|(group, _)| self.is_coordinator(group)) {
            for ((topic, partition), offset) in committed {
                if let Some(p) = self.cluster.partition(topic, *partition) {
                    lags.push((group.clone(), topic.clone(), *partition, (p.high_watermark() - offset.offset).max(0)));
                }
            }
        }
        lags
    }

    /// Writes tombstones for the expired offsets of the groups this node coordinates that have
    /// no members (as Kafka, offsets of a group with members never expire). Every replica drops
    /// them from its cache when the tombstones apply. Returns how many expired.
    fn expire_offsets(&self) -> usize {
        let now = now_ms();
        let doomed: Vec<(String, Vec<OffsetRecord>)> = {
            let mut state = self.lock();
            let State { groups, offsets, empty_since, committing, expiring, leading_since, .. } = &mut *state;
            let partitions = self.cluster.topic(OFFSETS_TOPIC).map_or(1, |t| t.partitions.len() as i32);
            let doomed: Vec<(String, Vec<OffsetRecord>)> = offsets
                .iter()
                .filter(|(id, _)| groups.get(*id).is_none_or(Group::is_unused) && !committing.contains_key(*id) && self.is_coordinator(id))
                .filter_map(|(id, committed)| {
                    let Some(&leading_from) = leading_since.get(&offsets::partition_for(id, partitions)) else { return None };
                    let empty_from = empty_since.get(id).copied().unwrap_or(leading_from).max(leading_from);
                    let expired: Vec<OffsetRecord> = committed
                        .iter()
                        .filter(|(_, o)| match o.expire_timestamp {
                            Some(at) => now >= at,
                            None => now.saturating_sub(o.commit_timestamp.max(empty_from)) >= self.config.offsets_retention_ms,
                        })
                        .map(|((topic, partition), _)| (OffsetKey { group: id.clone(), topic: topic.clone(), partition: *partition }, None))
                        .collect();
                    (!expired.is_empty()).then(|| (id.clone(), expired))
                })
                .collect();
            expiring.extend(doomed.iter().map(|(id, _)| id.clone()));
            doomed
        };
        let mut expired = 0;
        for (group, tombstones) in &doomed {
            match self.append_offsets(group, tombstones) {
                Ok(_) => expired += tombstones.len(),
                Err(code) => warn!(group, code, "could not expire offsets; retrying at the next check"),
            }
        }
        let mut state = self.lock();
        for (group, _) in &doomed {
            state.expiring.remove(group);
        }
        if expired > 0 {
            info!(offsets = expired, groups = doomed.len(), "committed offsets expired");
        }
        expired
    }

    /// Handles JoinGroup; waits for the join phase to complete.
    pub async fn join(&self, group_id: &str, req: JoinRequest) -> JoinOutcome {
        let member_id = req.member_id.clone();
        if !valid_group_id(group_id) {
            return self.join_error(ResponseError::InvalidGroupId, &member_id);
        }
        if !self.is_coordinator(group_id) {
            return self.join_error(ResponseError::NotCoordinator, &member_id);
        }
        let reply = {
            let mut state = self.lock();
            let timeouts = self.timeouts();
            let created = !state.groups.contains_key(group_id);
            let group = state.groups.entry(group_id.to_string()).or_insert_with(|| Group::new(timeouts));
            if group.state() == GroupState::Dead {
                *group = Group::new(timeouts);
            }
            let client_id = req.client_id.clone();
            let reply = group.join(req, Instant::now(), || format!("{client_id}-{}", Uuid::new_v4()));
            // A refused join creates no group (Kafka creates one only for an accepted join).
            if created && group.is_unused() {
                state.groups.remove(group_id);
            }
            reply
        };
        match reply {
            Reply::Now(outcome) => outcome,
            Reply::Later(rx) => rx.await.unwrap_or_else(|_| self.join_error(ResponseError::UnknownMemberId, &member_id)),
        }
    }

    /// Handles SyncGroup; waits for the leader's assignments.
    /// `protocol` is the (type, assignor) the request names, if it names them (v5+).
    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol: (Option<String>, Option<String>),
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        if !self.is_coordinator(group_id) {
            return sync_error(ResponseError::NotCoordinator);
        }
        let reply = {
            let mut state = self.lock();
            match state.groups.get_mut(group_id) {
                Some(group)
                    if protocol.0.as_deref().is_some_and(|t| group.protocol_type() != Some(t))
                        || protocol.1.as_deref().is_some_and(|n| group.protocol() != Some(n)) =>
                {
                    return sync_error(ResponseError::InconsistentGroupProtocol);
                }
                Some(group) => group.sync(member_id, instance_id, generation, assignments, Instant::now()),
                None => return sync_error(ResponseError::UnknownMemberId),
            }
        };
        match reply {
            Reply::Now(outcome) => outcome,
            Reply::Later(rx) => rx.await.unwrap_or_else(|_| sync_error(ResponseError::RebalanceInProgress)),
        }
    }

    /// Handles Heartbeat; returns the error code.
    pub fn heartbeat(&self, group_id: &str, member_id: &str, instance_id: Option<&str>, generation: i32) -> i16 {
        if !self.is_coordinator(group_id) {
            return ResponseError::NotCoordinator.code();
        }
        match self.lock().groups.get_mut(group_id) {
            Some(group) => group.heartbeat(member_id, instance_id, generation, Instant::now()),
            None => ResponseError::UnknownMemberId.code(),
        }
    }

    /// Handles LeaveGroup for each (member id, instance id); returns each member's error code.
    pub fn leave(&self, group_id: &str, members: &[(String, Option<String>)]) -> Result<Vec<i16>, ResponseError> {
        if !self.is_coordinator(group_id) {
            return Err(ResponseError::NotCoordinator);
        }
        let mut state = self.lock();
        let group = state.groups.get_mut(group_id).ok_or(ResponseError::UnknownMemberId)?;
        let now = Instant::now();
        Ok(members.iter().map(|(id, instance)| group.leave(id, instance.as_deref(), now)).collect())
    }

    /// Checks and stores an OffsetCommit. Returns one error code per commit, in order.
    pub async fn commit(&self, group_id: &str, member_id: &str, instance_id: Option<&str>, generation: i32, commits: Vec<CommitRequest>) -> Vec<i16> {
        let mut codes = vec![0i16; commits.len()];
        if !valid_group_id(group_id) {
            return vec![ResponseError::InvalidGroupId.code(); commits.len()];
        }
        if !self.is_coordinator(group_id) {
            return vec![ResponseError::NotCoordinator.code(); commits.len()];
        }
        let _committing = {
            let mut state = self.lock();
            let allowed = match state.groups.get_mut(group_id) {
                Some(group) => group.check_commit(member_id, instance_id, generation, Instant::now()),
                // A group unknown to membership takes only "simple" commits (no generation).
                None if generation < 0 => Ok(()),
                None => Err(ResponseError::IllegalGeneration),
            };
            if let Err(e) = allowed {
                return vec![e.code(); commits.len()];
            }
            if state.expiring.contains(group_id) {
                // For the moment its expired offsets' tombstones are being appended.
                return vec![ResponseError::CoordinatorLoadInProgress.code(); commits.len()];
            }
            *state.committing.entry(group_id.to_string()).or_default() += 1;
            Committing { coordinator: self, group: group_id }
        };
        let mut accepted = Vec::new();
        for (i, c) in commits.iter().enumerate() {
            if c.offset.metadata.len() > self.config.max_metadata_bytes {
                codes[i] = ResponseError::OffsetMetadataTooLarge.code();
            } else if self.cluster.partition(&c.topic, c.partition).is_none() {
                codes[i] = ResponseError::UnknownTopicOrPartition.code();
            } else {
                accepted.push(i);
            }
        }
        if accepted.is_empty() {
            return codes;
        }
        let records: Vec<OffsetRecord> = accepted
            .iter()
            .map(|&i| {
                let c = &commits[i];
                (OffsetKey { group: group_id.to_string(), topic: c.topic.clone(), partition: c.partition }, Some(c.offset.clone()))
            })
            .collect();
        let base = match self.store(group_id, &records).await {
            Ok(base) => base,
            Err(code) => {
                for &i in &accepted {
                    codes[i] = code;
                }
                return codes;
            }
        };
        let mut state = self.lock();
        let State { offsets, positions, .. } = &mut *state;
        let cache = offsets.entry(group_id.to_string()).or_default();
        for (i, (key, value)) in records.into_iter().enumerate() {
            let position = base + i as i64;
            if positions.get(&key).is_some_and(|newer| *newer > position) {
                continue;
            }
            positions.insert(key.clone(), position);
            if let Some(v) = value {
                cache.insert((key.topic, key.partition), v);
            }
        }
        codes
    }

    /// Every live commit of the groups whose offsets partition is `partition`, in key order.
    pub fn commits_of_partition(&self, partition: i32) -> Vec<OffsetRecord> {
        let partitions = self.offsets_partitions();
        let state = self.lock();
        let mut commits: Vec<OffsetRecord> = state
            .offsets
            .iter()
            .filter(|(group, _)| offsets::partition_for(group, partitions) == partition)
            .flat_map(|(group, o)| o.iter().map(|((topic, p), v)| (OffsetKey { group: group.clone(), topic: topic.clone(), partition: *p }, Some(v.clone()))))
            .collect();
        commits.sort_by(|a, b| a.0.cmp(&b.0));
        commits
    }

    /// Replaces the commits of the groups of offsets partition `partition` with a snapshot's,
    /// taken where the partition's log reached `offset`.
    pub fn restore_partition(&self, partition: i32, commits: Vec<OffsetRecord>, offset: i64) {
        let partitions = self.offsets_partitions();
        let mut state = self.lock();
        let State { offsets, positions, .. } = &mut *state;
        offsets.retain(|group, _| offsets::partition_for(group, partitions) != partition);
        positions.retain(|key, _| offsets::partition_for(&key.group, partitions) != partition);
        for (key, value) in commits {
            let Some(v) = value else { continue };
            positions.insert(key.clone(), offset - 1);
            offsets.entry(key.group).or_default().insert((key.topic, key.partition), v);
        }
    }

    fn offsets_partitions(&self) -> i32 {
        self.cluster.topic(OFFSETS_TOPIC).map_or(1, |t| t.partitions.len() as i32)
    }

    /// Replicated: applies an offsets-topic entry as it commits, on every replica, so whichever
    /// node becomes a group's coordinator already has its offsets. `base_offset` is the entry's
    /// first offset.
    pub fn apply_committed(&self, base_offset: i64, batches: &[u8]) {
        let records = match offsets::decode_batches(Bytes::copy_from_slice(batches)) {
            Ok((records, _)) => records,
            Err(cause) => {
                warn!(base_offset, %cause, "undecodable offsets-topic entry skipped");
                return;
            }
        };
        let mut state = self.lock();
        let State { offsets, positions, .. } = &mut *state;
        for (i, (key, value)) in records.into_iter().enumerate() {
            let position = base_offset + i as i64;
            if positions.get(&key).is_some_and(|newer| *newer >= position) {
                continue;
            }
            positions.insert(key.clone(), position);
            match value {
                Some(v) => {
                    offsets.entry(key.group).or_default().insert((key.topic, key.partition), v);
                }
                None => {
                    if let Some(o) = offsets.get_mut(&key.group) {
                        o.remove(&(key.topic, key.partition));
                        if o.is_empty() {
                            offsets.remove(&key.group);
                        }
                    }
                }
            }
        }
    }

    /// Committed offsets of a group: of the listed partitions, or all of them (`None`).
    pub fn fetch_offsets(&self, group_id: &str, wanted: Option<Vec<(String, Vec<i32>)>>) -> Vec<TopicOffsets> {
        let state = self.lock();
        let empty = BTreeMap::new();
        let committed = state.offsets.get(group_id).unwrap_or(&empty);
        match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions.into_iter().map(|p| (p, committed.get(&(topic.clone(), p)).cloned())).collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> = BTreeMap::new();
                for ((topic, p), v) in committed {
                    by_topic.entry(topic.clone()).or_default().push((*p, Some(v.clone())));
                }
                by_topic.into_iter().collect()
            }
        }
    }

    /// Every known group this node coordinates (with members or with committed offsets). Every
    /// replica of an offsets partition knows its groups' offsets; only the coordinator knows the
    /// group.
    pub fn list(&self) -> Vec<GroupSummary> {
        let state = self.lock();
        let mut ids: Vec<&String> = state.groups.iter().filter(|(_, g)| g.state() != GroupState::Dead).map(|(id, _)| id).collect();
        ids.extend(state.offsets.keys().filter(|id| !state.groups.contains_key(*id)));
        ids.sort();
        ids.dedup();
        ids.into_iter().filter(|id| self.is_coordinator(id)).filter_map(|id| summarize(&state, id)).collect()
    }

    /// One group, if it exists; only its coordinator answers.
    pub fn describe(&self, group_id: &str) -> Result<Option<GroupSummary>, ResponseError> {
        if !self.is_coordinator(group_id) {
            return Err(ResponseError::NotCoordinator);
        }
        Ok(summarize(&self.lock(), group_id))
    }

    /// Deletes a group with no members, and its offsets.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ResponseError> {
        if !self.is_coordinator(group_id) {
            return Err(ResponseError::NotCoordinator);
        }
        let keys: Vec<OffsetRecord> = {
            let state = self.lock();
            let group = state.groups.get(group_id).filter(|g| g.state() != GroupState::Dead);
            if group.is_some_and(|g| !g.is_empty()) {
                return Err(ResponseError::NonEmptyGroup);
            }
            let offsets = state.offsets.get(group_id);
            if group.is_none() && offsets.is_none() {
                return Err(ResponseError::GroupIdNotFound);
            }
            offsets
                .into_iter()
                .flat_map(|o| o.keys())
                .map(|(topic, partition)| (OffsetKey { group: group_id.to_string(), topic: topic.clone(), partition: *partition }, None))
                .collect()
        };
        if !keys.is_empty() {
            self.store(group_id, &keys).await.map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        }
        let mut state = self.lock();
        if state.groups.get(group_id).is_some_and(|g| !g.is_empty()) {
            // A member joined while the tombstones were written; the group lives on, offsets gone.
            state.offsets.remove(group_id);
            return Err(ResponseError::NonEmptyGroup);
        }
        if let Some(mut group) = state.groups.remove(group_id) {
            group.delete();
        }
        state.offsets.remove(group_id);
        state.positions.retain(|k, _| k.group != group_id);
        Ok(())
    }

    /// Drops committed offsets of a deleted topic from the groups this node coordinates, as
    /// Kafka does (every node runs this when the deletion applies; the tombstones reach the other
    /// replicas through the offsets topic).
    pub async fn forget_topic(&self, topic: &str) {
        let doomed: Vec<(String, Vec<i32>)> = {
            let state = self.lock();
            state
                .offsets
                .iter()
                .filter(|(group, _)| self.is_coordinator(group))
                .filter_map(|(group, o)| {
                    let parts: Vec<i32> = o.keys().filter(|(t, _)| t == topic).map(|(_, p)| *p).collect();
                    (!parts.is_empty()).then(|| (group.clone(), parts))
                })
                .collect()
        };
        for (group, partitions) in doomed {
            let keys: Vec<OffsetRecord> =
                partitions.iter().map(|p| (OffsetKey { group: group.clone(), topic: topic.to_string(), partition: *p }, None)).collect();
            if let Err(code) = self.store(&group, &keys).await {
                warn!(group, topic, code, "could not remove offsets of a deleted topic");
                continue;
            }
            let mut state = self.lock();
            state.positions.retain(|k, _| !(k.group == group && k.topic == topic));
            if let Some(o) = state.offsets.get_mut(&group) {
                o.retain(|(t, _), _| t != topic);
                if o.is_empty() {
                    state.offsets.remove(&group);
                }
            }
        }
    }

    /// Commits a lost cluster's offsets of `group_id` (a cluster restore), as its coordinator:
    /// NOT_COORDINATOR when this node is not it. Every replica's cache takes them when the
    /// entry is applied.
    pub async fn restore_offsets(&self, group_id: &str, commits: &[OffsetRecord]) -> Result<(), i16> {
        if !valid_group_id(group_id) || commits.iter().any(|(k, _)| k.group != group_id) {
            return Err(ResponseError::InvalidGroupId.code());
        }
        if !self.is_coordinator(group_id) {
            return Err(ResponseError::NotCoordinator.code());
        }
        self.store(group_id, commits).await.map(drop)
    }

    /// Appends commits or tombstones to the group's offsets partition and waits until durable.
    /// Returns the offset the first record got.
    async fn store(&self, group_id: &str, records: &[OffsetRecord]) -> Result<i64, i16> {
        let (partition, appended) = self.append_offsets(group_id, records)?;
        partition.wait_durable(&appended, true).await.map_err(|e| {
            warn!(group = group_id, cause = %e, "offset commit not made durable");
            ResponseError::CoordinatorNotAvailable.code()
        })?;
        Ok(appended.base_offset)
    }

    /// Appends commits or tombstones to the group's offsets partition.
    fn append_offsets(&self, group_id: &str, records: &[OffsetRecord]) -> Result<(Arc<Partition>, Appended), i16> {
        // The topic's real partition count, fixed when it was created, decides where a group
        // lives, whatever the configuration says today.
        let topic = self.cluster.topic(OFFSETS_TOPIC).ok_or(ResponseError::CoordinatorNotAvailable.code())?;
        let partition_index = offsets::partition_for(group_id, topic.partitions.len() as i32);
        let partition = topic.partitions.get(partition_index as usize).cloned().ok_or(ResponseError::CoordinatorNotAvailable.code())?;
        let batch = offsets::encode_batch(records, now_ms()).map_err(|_| ResponseError::UnknownServerError.code())?;
        let appended = partition.append(&batch, now_ms()).map_err(|e| {
            warn!(group = group_id, cause = %e, "offset commit append failed");
            match e {
                // Retrying the same commit cannot help: say so, as Kafka does.
                crate::partition::Error::Log(crate::log::Error::EntryTooLarge { .. })
                | crate::partition::Error::Batch(crate::partition::batch::BatchError::TooLarge { .. }) => ResponseError::InvalidCommitOffsetSize.code(),
                _ => ResponseError::CoordinatorNotAvailable.code(),
            }
        })?;
        Ok((partition, appended))
    }

    fn timeouts(&self) -> GroupTimeouts {
        GroupTimeouts {
            min_session: Duration::from_millis(self.config.min_session_timeout_ms),
            max_session: Duration::from_millis(self.config.max_session_timeout_ms),
            initial_rebalance_delay: Duration::from_millis(self.config.initial_rebalance_delay_ms),
        }
    }

    fn join_error(&self, error: ResponseError, member_id: &str) -> JoinOutcome {
        JoinOutcome { error: error.code(), generation: -1, protocol_type: None, protocol_name: None, leader: String::new(), member_id: member_id.to_string(), members: Vec::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Group transitions complete before anything can panic, so a poisoned state is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A commit of a group between its check and its append (or its end, if cancelled).
struct Committing<'a> {
    coordinator: &'a Coordinator,
    group: &'a str,
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        let mut state = self.coordinator.lock();
        if let Some(count) = state.committing.get_mut(self.group) {
            *count -= 1;
            if *count == 0 {
                state.committing.remove(self.group);
            }
        }
    }
}

/// Group ids must be non-empty and fit the i16 length of an offsets-topic key.
fn valid_group_id(group_id: &str) -> bool {
    !group_id.is_empty() && group_id.len() <= i16::MAX as usize
}

fn sync_error(error: ResponseError) -> SyncOutcome {
    SyncOutcome { error: error.code(), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
}

fn summarize(state: &State, id: &str) -> Option<GroupSummary> {
    match state.groups.get(id).filter(|g| g.state() != GroupState::Dead) {
        Some(g) => Some(GroupSummary {
            id: id.to_string(),
            state: g.state().name(),
            protocol_type: g.protocol_type().unwrap_or_default().to_string(),
            protocol: if matches!(g.state(), GroupState::Stable | GroupState::CompletingRebalance) { g.protocol().unwrap_or_default().to_string() } else { String::new() },
            members: g
                .members()
                .iter()
                .map(|(mid, m)| {
                    let metadata = m.protocols.iter().find(|(n, _)| Some(n.as_str()) == g.protocol()).map(|(_, md)| md.clone()).unwrap_or_default();
                    (mid.clone(), m.instance_id.clone(), m.client_id.clone(), m.client_host.clone(), metadata, m.assignment.clone())
                })
                .collect(),
        }),
        None if state.offsets.contains_key(id) => {
            Some(GroupSummary { id: id.to_string(), state: GroupState::Empty.name(), protocol_type: String::new(), protocol: String::new(), members: Vec::new() })
        }
        None => None,
    }
}
