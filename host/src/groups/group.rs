//! One consumer group's membership state machine (Kafka's classic rebalance protocol), with no
//! I/O: the coordinator feeds it requests and the clock, and it answers at once or hands back a
//! receiver that is answered when the rebalance step completes.
//!
//! ```text
//! Empty --join--> PreparingRebalance --all joined / deadline--> CompletingRebalance
//!   ^                    ^   |                                        | leader's SyncGroup
//!   |                    |   +--no members left--> Empty               v
//!   +----last leaves-----+------member joins, leaves or expires---- Stable
//! ```
//! The broker only relays: the group leader's client runs the assignor (range, roundrobin,
//! cooperative-sticky) and sends every member's assignment in its SyncGroup.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

/// Where the group is in a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (it may still have committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignments.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// The name Kafka's DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Timing rules that come from the broker's configuration.
#[derive(Debug, Clone, Copy)]
pub struct GroupTimeouts {
    /// Smallest session timeout a member may ask for.
    pub min_session: Duration,
    /// Largest session timeout a member may ask for.
    pub max_session: Duration,
    /// How long a new group waits for more members before its first assignment.
    pub initial_rebalance_delay: Duration,
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// Static membership (`group.instance.id`).
    pub instance_id: Option<String>,
    /// Whether the client understands MEMBER_ID_REQUIRED (JoinGroup v4+).
    pub requires_known_member_id: bool,
    /// Client id, for DescribeGroups.
    pub client_id: String,
    /// Client address, for DescribeGroups.
    pub client_host: String,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms` (rebalance timeout).
    pub rebalance_timeout: Duration,
    /// "consumer" for consumers.
    pub protocol_type: String,
    /// Assignors the member supports, in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
}

/// What a JoinGroup is answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinOutcome {
    /// Kafka error code (0 = none).
    pub error: i16,
    /// The new generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen assignor.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// This member's id (assigned by the coordinator).
    pub member_id: String,
    /// For the leader only: every member with its metadata for the chosen assignor.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    fn error(error: ResponseError, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error: error.code(),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// What a SyncGroup is answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncOutcome {
    /// Kafka error code (0 = none).
    pub error: i16,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen assignor.
    pub protocol_name: Option<String>,
    /// This member's assignment, as the leader encoded it.
    pub assignment: Bytes,
}

impl SyncOutcome {
    fn error(error: ResponseError) -> SyncOutcome {
        SyncOutcome { error: error.code(), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// An answer now, or a receiver answered when the rebalance step completes.
pub enum Reply<T> {
    /// Answer at once.
    Now(T),
    /// Answer when the group gets there.
    Later(oneshot::Receiver<T>),
}

/// One member of a group.
#[derive(Debug)]
pub struct Member {
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    /// Assignors in preference order, with metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// The assignment from the last completed SyncGroup.
    pub assignment: Bytes,
    last_heartbeat: Instant,
    /// Order of first join: the leader is the earliest member still present.
    joined_seq: u64,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
}

/// A consumer group's membership.
#[derive(Debug)]
pub struct Group {
    state: GroupState,
    /// Invariant: increases by one at every completed join phase.
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// `group.instance.id` -> member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, valid until the instant given.
    pending_members: HashMap<String, Instant>,
    /// PreparingRebalance: when the join phase completes even if members are missing.
    join_deadline: Option<Instant>,
    /// PreparingRebalance from Empty: no early completion before this.
    initial_delay_until: Option<Instant>,
    /// CompletingRebalance: when waiting for the leader's SyncGroup gives up.
    sync_deadline: Option<Instant>,
    next_seq: u64,
    timeouts: GroupTimeouts,
}

impl Group {
    /// A new, empty group.
    pub fn new(timeouts: GroupTimeouts) -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            join_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
            next_seq: 0,
            timeouts,
        }
    }

    /// The current state.
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// The protocol type ("consumer"), once a member has joined.
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    /// The chosen assignor, in CompletingRebalance and Stable.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Members by id.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// Whether the group has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether nothing has joined it: no members, none waiting to rejoin with an assigned id,
    /// no rebalance under way.
    pub fn is_unused(&self) -> bool {
        self.members.is_empty() && self.pending_members.is_empty() && self.state() == GroupState::Empty
    }

    /// Handles JoinGroup. `new_member_id` is called when the coordinator must assign an id.
    pub fn join(&mut self, req: JoinRequest, now: Instant, new_member_id: impl FnOnce() -> String) -> Reply<JoinOutcome> {
        if req.session_timeout < self.timeouts.min_session || req.session_timeout > self.timeouts.max_session {
            return Reply::Now(JoinOutcome::error(ResponseError::InvalidSessionTimeout, &req.member_id));
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() || !self.supports(&req.protocol_type, &req.protocols) {
            return Reply::Now(JoinOutcome::error(ResponseError::InconsistentGroupProtocol, &req.member_id));
        }
        if self.state == GroupState::Dead {
            return Reply::Now(JoinOutcome::error(ResponseError::CoordinatorNotAvailable, &req.member_id));
        }
        if req.member_id.is_empty() {
            if let Some(instance) = &req.instance_id {
                if let Some(old_id) = self.static_members.get(instance).cloned() {
                    return self.rejoin_static(old_id, new_member_id(), req, now);
                }
                let id = new_member_id();
                return self.add_member(id, req, now);
            }
            let id = new_member_id();
            if req.requires_known_member_id {
                // KIP-394: the client must come back with this id, so a client that times out
                // and retries never leaves an orphan member behind.
                self.pending_members.insert(id.clone(), now + req.session_timeout);
                return Reply::Now(JoinOutcome::error(ResponseError::MemberIdRequired, &id));
            }
            return self.add_member(id, req, now);
        }
        if let Some(instance) = &req.instance_id
            && self.static_members.get(instance).is_some_and(|id| *id != req.member_id)
        {
            return Reply::Now(JoinOutcome::error(ResponseError::FencedInstanceId, &req.member_id));
        }
        if self.pending_members.remove(&req.member_id).is_some() {
            return self.add_member(req.member_id.clone(), req, now);
        }
        if !self.members.contains_key(&req.member_id) {
            return Reply::Now(JoinOutcome::error(ResponseError::UnknownMemberId, &req.member_id));
        }
        self.rejoin(req, now)
    }

    /// Handles SyncGroup.
    pub fn sync(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, assignments: Vec<(String, Bytes)>, now: Instant) -> Reply<SyncOutcome> {
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return Reply::Now(SyncOutcome::error(e));
        }
        self.touch(member_id, now);
        match self.state {
            GroupState::PreparingRebalance => Reply::Now(SyncOutcome::error(ResponseError::RebalanceInProgress)),
            GroupState::Stable => Reply::Now(self.sync_outcome(member_id)),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(member) = self.members.get_mut(member_id) {
                    member.sync_waiter = Some(tx);
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, member) in self.members.iter_mut() {
                        member.assignment = assigned.remove(id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let outcome = self.sync_outcome(&id);
                        if let Some(waiter) = self.members.get_mut(&id).and_then(|m| m.sync_waiter.take()) {
                            let _ = waiter.send(outcome);
                        }
                    }
                }
                Reply::Later(rx)
            }
            GroupState::Empty | GroupState::Dead => Reply::Now(SyncOutcome::error(ResponseError::UnknownMemberId)),
        }
    }

    /// Handles Heartbeat; returns the error code.
    pub fn heartbeat(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, now: Instant) -> i16 {
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return e.code();
        }
        self.touch(member_id, now);
        if self.state == GroupState::PreparingRebalance { ResponseError::RebalanceInProgress.code() } else { 0 }
    }

    /// Whether an offset commit by this member at this generation is allowed; `Ok` when it is.
    /// Generation -1 with no member id is a "simple" commit, allowed only while the group has
    /// no members (otherwise, as in Kafka, the empty member id is an unknown member).
    pub fn check_commit(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, now: Instant) -> Result<(), ResponseError> {
        if generation < 0 && member_id.is_empty() {
            return if self.members.is_empty() { Ok(()) } else { Err(ResponseError::UnknownMemberId) };
        }
        self.check_member(member_id, instance_id, generation)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        self.touch(member_id, now);
        Ok(())
    }

    /// Handles one member of a LeaveGroup; returns the error code.
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant) -> i16 {
        let id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                Some(_) => return ResponseError::FencedInstanceId.code(),
                None => return ResponseError::UnknownMemberId.code(),
            },
            None => member_id.to_string(),
        };
        if self.pending_members.remove(&id).is_some() {
            return 0;
        }
        if !self.members.contains_key(&id) {
            return ResponseError::UnknownMemberId.code();
        }
        self.remove_member(&id, now);
        0
    }

    /// Advances timers: expires silent members, completes or abandons rebalance phases.
    pub fn tick(&mut self, now: Instant) {
        self.pending_members.retain(|_, until| *until > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none() && now.duration_since(m.last_heartbeat) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove_member(&id, now);
        }
        if self.state == GroupState::CompletingRebalance && self.sync_deadline.is_some_and(|d| now >= d) {
            // The leader never sent assignments: everyone joins again.
            self.prepare_rebalance(now);
        }
        self.maybe_complete_join(now);
    }

    /// Marks the group deleted; waiting members are told the coordinator moved.
    pub fn delete(&mut self) {
        for member in self.members.values_mut() {
            if let Some(w) = member.join_waiter.take() {
                let _ = w.send(JoinOutcome::error(ResponseError::CoordinatorNotAvailable, ""));
            }
            if let Some(w) = member.sync_waiter.take() {
                let _ = w.send(SyncOutcome::error(ResponseError::CoordinatorNotAvailable));
            }
        }
        self.members.clear();
        self.static_members.clear();
        self.state = GroupState::Dead;
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    fn check_member(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id
            && self.static_members.get(instance).is_some_and(|id| id != member_id)
        {
            return Err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    fn touch(&mut self, member_id: &str, now: Instant) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
    }

    fn add_member(&mut self, id: String, req: JoinRequest, now: Instant) -> Reply<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        self.next_seq += 1;
        self.members.insert(
            id,
            Member {
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_heartbeat: now,
                joined_seq: self.next_seq,
                join_waiter: Some(tx),
                sync_waiter: None,
            },
        );
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.maybe_complete_join(now);
        Reply::Later(rx)
    }

    fn rejoin(&mut self, req: JoinRequest, now: Instant) -> Reply<JoinOutcome> {
        let id = req.member_id.clone();
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        let Some(member) = self.members.get_mut(&id) else {
            return Reply::Now(JoinOutcome::error(ResponseError::UnknownMemberId, &id));
        };
        let unchanged = member.protocols == req.protocols;
        member.last_heartbeat = now;
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.protocols = req.protocols;
        // A follower rejoining with the same metadata while nothing changed gets the current
        // generation back instead of forcing everyone through a rebalance.
        if unchanged && !is_leader && matches!(self.state, GroupState::Stable | GroupState::CompletingRebalance) {
            return Reply::Now(self.join_outcome(&id));
        }
        let (tx, rx) = oneshot::channel();
        if let Some(old) = member.join_waiter.replace(tx) {
            let _ = old.send(JoinOutcome::error(ResponseError::UnknownMemberId, &id));
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.maybe_complete_join(now);
        Reply::Later(rx)
    }

    /// A static member came back (after a restart) under a new member id.
    fn rejoin_static(&mut self, old_id: String, new_id: String, req: JoinRequest, now: Instant) -> Reply<JoinOutcome> {
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members.remove(req.instance_id.as_deref().unwrap_or_default());
            return self.add_member(new_id, req, now);
        };
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinOutcome::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(SyncOutcome::error(ResponseError::FencedInstanceId));
        }
        let unchanged = member.protocols == req.protocols;
        member.last_heartbeat = now;
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.protocols = req.protocols.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = &req.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        // Same metadata in a stable group: keep the assignment, no rebalance (KIP-345). The
        // member fetches its old assignment with SyncGroup.
        if unchanged && self.state == GroupState::Stable && !was_leader {
            return Reply::Now(self.join_outcome(&new_id));
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&new_id) {
            m.join_waiter = Some(tx);
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.maybe_complete_join(now);
        Reply::Later(rx)
    }

    fn remove_member(&mut self, id: &str, now: Instant) {
        let Some(mut member) = self.members.remove(id) else { return };
        if let Some(instance) = &member.instance_id {
            self.static_members.remove(instance);
        }
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinOutcome::error(ResponseError::UnknownMemberId, id));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(SyncOutcome::error(ResponseError::UnknownMemberId));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        if matches!(self.state, GroupState::Stable | GroupState::CompletingRebalance) {
            self.prepare_rebalance(now);
        }
        // With the last member gone this completes at once and leaves the group Empty.
        self.maybe_complete_join(now);
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        let from_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        self.sync_deadline = None;
        // Members waiting for assignments must join again.
        for member in self.members.values_mut() {
            if let Some(w) = member.sync_waiter.take() {
                let _ = w.send(SyncOutcome::error(ResponseError::RebalanceInProgress));
            }
        }
        let longest = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        if from_empty {
            let delay = self.timeouts.initial_rebalance_delay.min(longest);
            self.initial_delay_until = Some(now + delay);
            self.join_deadline = Some(now + delay);
        } else {
            self.initial_delay_until = None;
            self.join_deadline = Some(now + longest);
        }
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let delayed = self.initial_delay_until.is_some_and(|until| now < until);
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let deadline_passed = self.join_deadline.is_some_and(|d| now >= d);
        if !(deadline_passed || (all_joined && !delayed)) {
            return;
        }
        // Members that did not rejoin in time are out.
        let missing: Vec<String> = self.members.iter().filter(|(_, m)| m.join_waiter.is_none()).map(|(id, _)| id.clone()).collect();
        for id in missing {
            if let Some(m) = self.members.remove(&id)
                && let Some(instance) = &m.instance_id
            {
                self.static_members.remove(instance);
            }
        }
        self.generation += 1;
        self.join_deadline = None;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.iter().min_by_key(|(_, m)| m.joined_seq).map(|(id, _)| id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let longest = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        self.sync_deadline = Some(now + longest);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let outcome = self.join_outcome(&id);
            if let Some(w) = self.members.get_mut(&id).and_then(|m| m.join_waiter.take()) {
                let _ = w.send(outcome);
            }
        }
    }

    /// Kafka's rule: among assignors every member supports, each member votes for the first
    /// one in its own preference order; the most votes wins.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == *n)))
            .collect();
        let mut votes: Vec<(&String, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p))
                && let Some(v) = votes.iter_mut().find(|(c, _)| *c == name)
            {
                v.1 += 1;
            }
        }
        // Ties go to the earlier candidate, so the choice is deterministic.
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes.into_iter().find(|(_, n)| *n == best).map(|(c, _)| c.clone())
    }

    fn join_outcome(&self, member_id: &str) -> JoinOutcome {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone();
        let members = if leader == member_id {
            let mut ordered: Vec<(&String, &Member)> = self.members.iter().collect();
            ordered.sort_by_key(|(_, m)| m.joined_seq);
            ordered
                .into_iter()
                .map(|(id, m)| {
                    let metadata = m.protocols.iter().find(|(n, _)| Some(n) == protocol.as_ref()).map(|(_, md)| md.clone()).unwrap_or_default();
                    (id.clone(), m.instance_id.clone(), metadata)
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: protocol,
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    fn sync_outcome(&self, member_id: &str) -> SyncOutcome {
        SyncOutcome {
            error: 0,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> GroupTimeouts {
        GroupTimeouts { min_session: Duration::from_millis(100), max_session: Duration::from_secs(60), initial_rebalance_delay: Duration::from_millis(500) }
    }

    fn request(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            instance_id: None,
            requires_known_member_id: true,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from_static(b"meta"))).collect(),
        }
    }

    fn now_outcome<T>(reply: Reply<T>) -> T {
        match reply {
            Reply::Now(t) => t,
            Reply::Later(_) => panic!("expected an immediate answer"),
        }
    }

    fn later<T>(reply: Reply<T>) -> oneshot::Receiver<T> {
        match reply {
            Reply::Later(rx) => rx,
            Reply::Now(_) => panic!("expected a deferred answer"),
        }
    }

    /// Joins with an empty id, then with the id the coordinator hands out.
    fn join_new(group: &mut Group, id: &str, protocols: &[&str], now: Instant) -> oneshot::Receiver<JoinOutcome> {
        let first = now_outcome(group.join(request("", protocols), now, || id.to_string()));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        later(group.join(request(id, protocols), now, || unreachable!()))
    }

    #[test]
    fn two_members_join_sync_and_become_stable() {
        let t0 = Instant::now();
        let mut g = Group::new(timeouts());
        let mut a = join_new(&mut g, "a", &["range", "roundrobin"], t0);
        let mut b = join_new(&mut g, "b", &["roundrobin", "range"], t0);
        // The initial delay holds the first generation back for more members.
        g.tick(t0 + Duration::from_millis(100));
        assert!(a.try_recv().is_err());
        g.tick(t0 + Duration::from_millis(600));
        let (a, b) = (a.try_recv().unwrap(), b.try_recv().unwrap());
        assert_eq!((a.generation, b.generation), (1, 1));
        assert_eq!(a.leader, "a");
        assert_eq!(a.members.len(), 2);
        assert!(b.members.is_empty());
        // One vote each; the tie goes to the first member's preference.
        assert_eq!(a.protocol_name.as_deref(), Some("range"));
        assert_eq!(g.state(), GroupState::CompletingRebalance);

        let now = t0 + Duration::from_millis(700);
        let mut b_sync = later(g.sync("b", None, 1, vec![], now));
        let mut a_sync = later(g.sync("a", None, 1, vec![("a".into(), Bytes::from_static(b"A")), ("b".into(), Bytes::from_static(b"B"))], now));
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(a_sync.try_recv().unwrap().assignment, Bytes::from_static(b"A"));
        assert_eq!(b_sync.try_recv().unwrap().assignment, Bytes::from_static(b"B"));
        assert_eq!(g.heartbeat("a", None, 1, now), 0);
        assert_eq!(g.heartbeat("a", None, 0, now), ResponseError::IllegalGeneration.code());
        assert_eq!(g.heartbeat("zz", None, 1, now), ResponseError::UnknownMemberId.code());
    }

    #[test]
    fn a_silent_member_expires_and_the_rest_rebalance() {
        let t0 = Instant::now();
        let mut g = Group::new(timeouts());
        let _a = join_new(&mut g, "a", &["range"], t0);
        let _b = join_new(&mut g, "b", &["range"], t0);
        let t1 = t0 + Duration::from_secs(1);
        g.tick(t1);
        let _ = g.sync("a", None, 1, vec![], t1);
        assert_eq!(g.state(), GroupState::Stable);
        // a keeps heartbeating, b goes silent past its 10 s session.
        for s in 2..=12 {
            // b's session ends after second 10; from then on a is told to rejoin.
            let expected = if s <= 10 { 0 } else { ResponseError::RebalanceInProgress.code() };
            assert_eq!(g.heartbeat("a", None, 1, t0 + Duration::from_secs(s)), expected);
            g.tick(t0 + Duration::from_secs(s) + Duration::from_millis(1));
        }
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert!(!g.members().contains_key("b"));
        let mut rejoin = later(g.join(request("a", &["range"]), t0 + Duration::from_secs(13), || unreachable!()));
        let outcome = rejoin.try_recv().unwrap();
        assert_eq!(outcome.generation, 2);
        assert_eq!(outcome.members.len(), 1);
        // A commit from the old generation is fenced.
        assert_eq!(g.check_commit("a", None, 1, t0 + Duration::from_secs(13)), Err(ResponseError::IllegalGeneration));
    }

    #[test]
    fn leaving_empties_the_group_and_simple_commits_need_an_empty_group() {
        let t0 = Instant::now();
        let mut g = Group::new(timeouts());
        let _a = join_new(&mut g, "a", &["range"], t0);
        g.tick(t0 + Duration::from_secs(1));
        // As Kafka: the empty member id is no member of a group that has members.
        assert_eq!(g.check_commit("", None, -1, t0), Err(ResponseError::UnknownMemberId));
        assert_eq!(g.leave("a", None, t0), 0);
        assert_eq!(g.state(), GroupState::Empty);
        assert_eq!(g.check_commit("", None, -1, t0), Ok(()));
        assert_eq!(g.leave("a", None, t0), ResponseError::UnknownMemberId.code());
    }

    #[test]
    fn static_member_rejoins_without_a_rebalance_and_fences_its_old_id() {
        let t0 = Instant::now();
        let mut g = Group::new(timeouts());
        let mut leader = join_new(&mut g, "l", &["range"], t0);
        let mut req = request("", &["range"]);
        req.instance_id = Some("pod-1".into());
        let mut s = later(g.join(req.clone(), t0, || "s1".into()));
        let t1 = t0 + Duration::from_secs(1);
        g.tick(t1);
        assert_eq!(leader.try_recv().unwrap().generation, 1);
        assert_eq!(s.try_recv().unwrap().member_id, "s1");
        let _ = g.sync("l", None, 1, vec![("s1".into(), Bytes::from_static(b"S"))], t1);
        assert_eq!(g.state(), GroupState::Stable);

        // The static member restarts: new member id, same generation, same assignment.
        let again = now_outcome(g.join(req, t1, || "s2".into()));
        assert_eq!((again.error, again.generation, again.member_id.as_str()), (0, 1, "s2"));
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(now_outcome(g.sync("s2", Some("pod-1"), 1, vec![], t1)).assignment, Bytes::from_static(b"S"));
        assert_eq!(g.heartbeat("s1", Some("pod-1"), 1, t1), ResponseError::FencedInstanceId.code());
    }

    #[test]
    fn bad_joins_are_refused() {
        let t0 = Instant::now();
        let mut g = Group::new(timeouts());
        let mut short = request("", &["range"]);
        short.session_timeout = Duration::from_millis(1);
        assert_eq!(now_outcome(g.join(short, t0, || "x".into())).error, ResponseError::InvalidSessionTimeout.code());
        let _a = join_new(&mut g, "a", &["range"], t0);
        let other = now_outcome(g.join(request("", &["sticky"]), t0, || "y".into()));
        assert_eq!(other.error, ResponseError::InconsistentGroupProtocol.code());
        let unknown = now_outcome(g.join(request("ghost", &["range"]), t0, || unreachable!()));
        assert_eq!(unknown.error, ResponseError::UnknownMemberId.code());
    }
}
