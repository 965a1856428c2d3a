//! A randomized, seeded simulation of one partition's Raft group: 3 or 5 replicas of the real
//! replica, log and per-group driver code ([`Group`], the proposal merging of the ready loop)
//! over a simulated network that drops, delays, reorders and partitions messages, with nodes
//! killed (kill -9: their process state lost, their files kept) or powered off (their
//! [`FaultyFs`] crashes: whatever was not fsynced is lost) and restarted. Time is the step
//! counter.
//!
//! Idempotent producers write all the time, each with one batch in flight, retrying a failed
//! batch on whichever replica leads, with acks=all or acks=1. Every acknowledgement is recorded.
//! At the end every fault is healed and the group settles; the checker then requires that
//! - every acknowledged batch is in every replica's committed log, at its acknowledged offset,
//!   with its bytes (its tag, producer id and sequence);
//! - no offset is acknowledged twice, and no batch is stored twice;
//! - the replicas' committed logs are identical;
//! - while a replica runs, its high watermark never moves backwards.
//!
//! The leader's retention moves the log start now and then, sometimes below what every replica
//! committed (replicas restart over logs whose prefix is gone), sometimes past what a replica
//! that is down or behind holds: the leader then serves a snapshot of the partition (its
//! descriptor) and that replica installs it, as the ready loop does, before taking the rest of
//! the log. Every round the committed batches are read back, so a write stored twice is caught
//! even after retention deleted one of the copies.
//!
//! A failing seed is printed with the command that replays it: `SLUICE_SIM_SEED=<seed> cargo
//! test -p sluice --lib raft::sim`. `SLUICE_SIM_SEEDS=<n>` runs seeds 1..=n (200 by default).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use raft::prelude::Message;
use tokio::sync::mpsc;

use super::driver::ProposalBatch;
use super::group::{Group, Outbox};
use super::storage::SnapshotPoint;
use crate::config::{FlushPolicy, RaftConfig};
use crate::log::LogConfig;
use crate::log::fs::FaultyFs;
use crate::metrics::Metrics;
use crate::partition::batch::{self, parse_batches};
use crate::partition::descriptor::Descriptor;
use crate::partition::replica::{Proposal, ReplicaSetup};
use crate::partition::{Appended, Partition, PartitionConfig};

const GROUP: u64 = 7;
const STEPS: u64 = 700;
/// At most this many steps at the end with every fault healed, for the group to settle (a
/// replica that was away long catches up one append at a time).
const SETTLE_STEPS: u64 = 20_000;
/// Rounds the replicas must agree for in a row before the group counts as settled.
const SETTLED_ROUNDS: u32 = 30;
const PRODUCERS: i64 = 4;
const DEFAULT_SEEDS: u64 = 200;

/// splitmix64: small, seedable, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Collects what a group sends in one call.
#[derive(Default)]
struct Sent(RefCell<Vec<Message>>);

impl Outbox for Sent {
    fn send(&self, _group: u64, msg: Message) -> bool {
        self.0.borrow_mut().push(msg);
        true
    }
}

struct InFlight {
    deliver_at: u64,
    msg: Message,
}

struct Replica {
    id: u64,
    dir: PathBuf,
    group: Option<Group>,
    proposals: Option<mpsc::Receiver<Proposal>>,
    /// A finished fsync, reported at the step given (fsyncs take time).
    synced: Option<(u64, u64, crate::log::RecoveryPoint)>,
    /// The high watermark this incarnation last showed.
    high_watermark: i64,
    /// Its files: a power loss keeps only what was made durable.
    fs: FaultyFs,
    /// A leader's snapshot fetched for the message stepped last, until raft-rs restores it:
    /// (index, offset after it, descriptor).
    fetched: Option<(u64, i64, Descriptor)>,
    /// Where reading its committed batches back goes on from.
    scanned: i64,
}

/// One logical write of a producer; retried with the same bytes until acknowledged.
#[derive(Clone)]
struct Write {
    tag: u32,
    producer: i64,
    sequence: i32,
    records: i32,
    all_replicas: bool,
}

struct Waiting {
    write: Write,
    node: u64,
    partition: Arc<Partition>,
    appended: Appended,
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    tag: u32,
    base: i64,
    end: i64,
    all_replicas: bool,
}

struct Sim {
    seed: u64,
    rng: Rng,
    step: u64,
    replicas: Vec<Replica>,
    voters: Vec<u64>,
    net: Vec<InFlight>,
    /// Links cut: (from, to).
    cut: HashSet<(u64, u64)>,
    raft: RaftConfig,
    partition: PartitionConfig,
    metrics: Metrics,
    logger: slog::Logger,
    /// Per producer: its next sequence, the write in flight (if any), and whether an acks=1
    /// write of it is not yet known to be committed (a later acks=all write confirms it).
    producers: BTreeMap<i64, (i32, Option<Write>, bool)>,
    /// Violations seen while running.
    errors: Vec<String>,
    waiting: Vec<Waiting>,
    acks: Vec<Ack>,
    next_tag: u32,
    next_producer: i64,
    /// Probability that a message is dropped.
    loss: f64,
    /// Snapshots leaders serve, by the data their Raft message carries: (offset, descriptor).
    snapshots: HashMap<Vec<u8>, (i64, Descriptor)>,
    /// Every committed batch read back so far: tag -> base offset.
    stored: HashMap<u32, i64>,
    /// Snapshots installed by followers.
    installs: usize,
}

fn tagged_batch(w: &Write) -> Vec<u8> {
    // The tag is the last record's value, under the batch's CRC.
    batch::tests::batch_with_value(w.records, w.producer, 0, w.sequence, Some(&w.tag.to_be_bytes()))
}

impl Sim {
    fn new(seed: u64, root: &Path) -> Sim {
        let mut rng = Rng(seed);
        let n = if rng.chance(0.3) { 5 } else { 3 };
        let write_caching = rng.chance(0.25);
        let voters: Vec<u64> = (1..=n).collect();
        let partition = PartitionConfig {
            log: LogConfig { segment_bytes: 2048 + rng.below(4096), segment_ms: 3_600_000, index_interval_bytes: 256, max_entry_bytes: 1 << 20 },
            max_message_bytes: 1 << 20,
            // Write caching acknowledges what a power loss takes back: such seeds only kill -9.
            flush_policy: if write_caching { FlushPolicy::Interval } else { FlushPolicy::OnAck },
            // Elapsed at once or never, so the schedule does not depend on the clock.
            flush_interval: if rng.chance(0.5) { Duration::ZERO } else { Duration::from_secs(3600) },
            checkpoint_interval: if rng.chance(0.5) { Duration::ZERO } else { Duration::from_secs(3600) },
            producer_expiration_ms: i64::MAX,
            fs: crate::log::fs::StdFs::shared(),
        };
        let raft = RaftConfig { election_ticks: 10, heartbeat_ticks: 2, max_append_bytes: 256 + rng.below(8192), max_inflight_appends: 2 + rng.below(30) as usize, ..RaftConfig::default() };
        let loss = [0.0, 0.02, 0.1][rng.below(3) as usize];
        let replicas = voters
            .iter()
            .map(|&id| Replica { id, dir: root.join(format!("node-{id}")), group: None, proposals: None, synced: None, high_watermark: 0, fs: FaultyFs::new(), fetched: None, scanned: 0 })
            .collect();
        let mut sim = Sim {
            seed,
            rng,
            step: 0,
            replicas,
            voters,
            net: Vec::new(),
            cut: HashSet::new(),
            raft,
            partition,
            metrics: Metrics::new(0),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            producers: (1..=PRODUCERS).map(|p| (1000 + p, (0, None, false))).collect(),
            errors: Vec::new(),
            waiting: Vec::new(),
            acks: Vec::new(),
            next_tag: 1,
            next_producer: 1000 + PRODUCERS,
            loss,
            snapshots: HashMap::new(),
            stored: HashMap::new(),
            installs: 0,
        };
        for i in 0..sim.replicas.len() {
            sim.start(i);
        }
        sim
    }

    fn start(&mut self, i: usize) {
        let (tx, rx) = mpsc::channel(1024);
        let r = &mut self.replicas[i];
        let setup = ReplicaSetup { group: GROUP, voters: self.voters.clone(), proposals: tx, cache_bytes: 2048, offsets_on_write: false, applied: None };
        let config = PartitionConfig { fs: Arc::new(r.fs.clone()), ..self.partition.clone() };
        let partition = Partition::open_replica("sim", 0, &r.dir, config, setup).unwrap_or_else(|e| panic!("seed {}: node {} does not reopen: {e}", self.seed, r.id));
        r.high_watermark = partition.high_watermark();
        // The sim's generator picks each incarnation's election timeout, so a seed replays.
        let timeout = self.raft.election_ticks + self.rng.below(self.raft.election_ticks as u64) as usize;
        let r = &mut self.replicas[i];
        r.group = Some(Group::with_election_timeout(GROUP, r.id, &self.raft, Some(timeout), partition, None, &self.logger).expect("raft group starts"));
        r.proposals = Some(rx);
        r.synced = None;
    }

    /// kill -9: the process state goes, the files stay; requests waiting on it get no answer.
    /// With `power_loss`, also everything not made durable goes: file contents not fsynced,
    /// names not fsynced into their directory.
    fn kill(&mut self, i: usize, power_loss: bool) {
        let id = self.replicas[i].id;
        let r = &mut self.replicas[i];
        r.group = None;
        r.proposals = None;
        r.synced = None;
        r.fetched = None;
        self.waiting.retain(|w| w.node != id);
        if power_loss {
            r.fs.crash().unwrap_or_else(|e| panic!("seed {}: power loss of node {id}: {e}", self.seed));
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.replicas.len()).filter(|&i| self.replicas[i].group.is_some()).collect()
    }

    fn index_of(&self, id: u64) -> usize {
        self.replicas.iter().position(|r| r.id == id).expect("a voter")
    }

    /// One round of every live replica's loop, plus the faults and the clients while the
    /// simulation is not settling.
    fn round(&mut self, faults: bool) {
        self.step += 1;
        if faults {
            self.inject_faults();
            self.client();
        }
        self.deliver();
        for i in self.live() {
            self.run_loop_round(i);
        }
        self.serve_snapshots();
        self.read_back();
        self.collect_answers();
    }

    /// A leader whose log starts past the snapshot it serves takes a new one (the snapshot
    /// loop's part).
    fn serve_snapshots(&mut self) {
        for i in self.live() {
            let r = &self.replicas[i];
            let Some(partition) = r.group.as_ref().map(|g| Arc::clone(&g.partition)) else { continue };
            if !partition.is_leader() || !partition.needs_snapshot_to_serve() {
                continue;
            }
            let Some((point, descriptor)) = partition.describe() else { continue };
            let data = format!("node {} index {} term {}", r.id, point.index, point.term).into_bytes();
            let mut snapshot = raft::prelude::Snapshot::default();
            snapshot.mut_metadata().index = point.index;
            snapshot.mut_metadata().term = point.term;
            snapshot.mut_metadata().mut_conf_state().voters = self.voters.clone();
            snapshot.data = data.clone().into();
            self.snapshots.insert(data, (point.offset, descriptor));
            partition.set_serving_snapshot(snapshot);
        }
    }

    /// Reads every live replica's newly committed batches back: a write committed at two
    /// offsets was stored twice.
    fn read_back(&mut self) {
        for i in self.live() {
            let r = &mut self.replicas[i];
            let Some(partition) = r.group.as_ref().map(|g| Arc::clone(&g.partition)) else { continue };
            let Ok(start) = partition.log_start_offset() else { continue };
            let from = r.scanned.max(start);
            let Ok(read) = partition.read(from, usize::MAX) else { continue };
            let Ok(headers) = parse_batches(&read.records, u32::MAX) else { continue };
            for h in headers {
                let b = &read.records[h.position..h.position + h.size];
                let base = i64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
                let tag = u32::from_be_bytes(b[b.len() - 5..b.len() - 1].try_into().expect("4 bytes"));
                if let Some(&other) = self.stored.get(&tag)
                    && other != base
                {
                    self.errors.push(format!("seed {}: write {tag} is stored twice, at offsets {other} and {base}", self.seed));
                }
                self.stored.insert(tag, base);
                r.scanned = base + i64::from(h.offset_count);
            }
        }
    }

    fn inject_faults(&mut self) {
        let n = self.replicas.len();
        let live = self.live();
        let down = n - live.len();
        if self.rng.chance(0.004) && down < (n - 1) / 2 + usize::from(self.rng.chance(0.2)) {
            let victim = live[self.rng.below(live.len() as u64) as usize];
            let power_loss = self.rng.chance(0.5) && self.partition.flush_policy == FlushPolicy::OnAck;
            self.kill(victim, power_loss);
        }
        for i in 0..n {
            if self.replicas[i].group.is_none() && self.rng.chance(0.03) {
                self.start(i);
            }
        }
        if self.rng.chance(0.01) {
            // Isolate one node, or cut one direction of one link.
            let a = self.voters[self.rng.below(n as u64) as usize];
            if self.rng.chance(0.5) {
                for &b in &self.voters {
                    self.cut.insert((a, b));
                    self.cut.insert((b, a));
                }
            } else {
                let b = self.voters[self.rng.below(n as u64) as usize];
                self.cut.insert((a, b));
            }
        }
        if self.rng.chance(0.02) {
            self.cut.clear();
        }
        // Producer state of batches retention deleted survives a restart only in checkpoints:
        // run retention where they are written on every persist.
        if self.partition.checkpoint_interval.is_zero() && self.rng.chance(0.02) {
            self.retention();
        }
    }

    /// The leader's retention moves the log start: half the time never past what every
    /// replica (running or not) has committed, half the time up to its own high watermark, so
    /// a replica that lacks deleted entries catches up through a snapshot. Every replica
    /// deletes the prefix when it applies the leader's entry.
    fn retention(&mut self) {
        let Some(i) = self.live().into_iter().find(|&i| self.replicas[i].group.as_ref().is_some_and(|g| g.partition.is_leader())) else { return };
        let Some(partition) = self.replicas[i].group.as_ref().map(|g| Arc::clone(&g.partition)) else { return };
        let everywhere = if self.rng.chance(0.5) { self.replicas.iter().map(|r| r.high_watermark).min().unwrap_or(0) } else { partition.high_watermark() };
        let start = partition.log_start_offset().unwrap_or(everywhere);
        if everywhere > start {
            let _ = partition.retain_from(start + 1 + self.rng.below((everywhere - start) as u64) as i64);
        }
    }

    fn deliver(&mut self) {
        let now = self.step;
        let (due, later): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.net).into_iter().partition(|m| m.deliver_at <= now);
        self.net = later;
        for m in due {
            let i = self.index_of(m.msg.to);
            let Some(group) = self.replicas[i].group.as_ref() else { continue };
            let from = m.msg.from;
            if super::validate::check_message(m.msg.to, &self.voters, from, &m.msg, 1 << 20, false, true).is_err() {
                continue;
            }
            // A snapshot the replica lacks is fetched (at once, here) before raft-rs sees it.
            if m.msg.get_msg_type() == raft::prelude::MessageType::MsgSnapshot && super::driver::needs_install(group, &m.msg) {
                let Some((offset, descriptor)) = self.snapshots.get(&m.msg.get_snapshot().data[..]).cloned() else { continue };
                self.replicas[i].fetched = Some((m.msg.get_snapshot().get_metadata().index, offset, descriptor));
            }
            if let Some(group) = self.replicas[i].group.as_mut() {
                let _ = group.step(m.msg, &self.metrics);
            }
        }
    }

    fn send_all(&mut self, sent: Sent) {
        for msg in sent.0.into_inner() {
            if self.cut.contains(&(msg.from, msg.to)) || self.rng.chance(self.loss) {
                continue;
            }
            let delay = 1 + self.rng.below(3);
            self.net.push(InFlight { deliver_at: self.step + delay, msg });
        }
    }

    /// What the ready loop does for one group in one round, in its order.
    fn run_loop_round(&mut self, i: usize) {
        let sent = Sent::default();
        let installs = &mut self.installs;
        let r = &mut self.replicas[i];
        let Replica { group: Some(group), fetched, .. } = r else { return };
        group.tick();
        let mut batch = ProposalBatch::new(self.raft.max_append_bytes as usize);
        if let Some(rx) = r.proposals.as_mut() {
            while let Ok(p) = rx.try_recv() {
                batch.push(p);
            }
        }
        for p in batch.drain() {
            group.propose(p);
        }
        if let Some((at, number, point)) = r.synced.take() {
            if at <= self.step {
                group.persisted(number, &point, &sent, &self.metrics);
            } else {
                r.synced = Some((at, number, point));
            }
        }
        let mut install = |partition: &Partition, snapshot: &raft::prelude::Snapshot| {
            let (index, offset, descriptor) = fetched.take().ok_or("raft-rs restored a snapshot that was not fetched")?;
            let meta = snapshot.get_metadata();
            if index != meta.index {
                return Err(format!("raft-rs restored snapshot {}, but {index} was fetched", meta.index));
            }
            partition.install_descriptor(SnapshotPoint { index, term: meta.term, offset }, descriptor).map_err(|e| e.to_string())?;
            *installs += 1;
            Ok(())
        };
        match group.ready_installing(&sent, &self.metrics, &mut install) {
            Ok(Some(readied)) => {
                for start in group.applied(&readied.committed, &self.metrics) {
                    super::group::apply_log_start(&group.partition, start, &self.metrics);
                }
            }
            Ok(None) => {}
            Err(fatal) => panic!("seed {}: node {}: {fatal}", self.seed, r.id),
        }
        if r.synced.is_none()
            && let Ok(Some(job)) = group.sync_job()
        {
            let done = job.run().unwrap_or_else(|e| panic!("seed {}: fsync: {e}", self.seed));
            r.synced = Some((self.step + self.rng.below(3), done.1, done.2));
        }
        let hw = group.partition.high_watermark();
        assert!(hw >= r.high_watermark, "seed {}: node {}'s high watermark went back from {} to {hw}", self.seed, r.id, r.high_watermark);
        r.high_watermark = hw;
        self.send_all(sent);
    }

    /// Producers without a write in flight send their next one (or retry a failed one) to a
    /// replica that says it leads.
    fn client(&mut self) {
        let leaders: Vec<usize> = self.live().into_iter().filter(|&i| self.replicas[i].group.as_ref().is_some_and(|g| g.partition.is_leader())).collect();
        if leaders.is_empty() {
            return;
        }
        let in_flight: HashSet<i64> = self.waiting.iter().map(|w| w.write.producer).collect();
        let producers: Vec<i64> = self.producers.keys().copied().filter(|p| !in_flight.contains(p)).collect();
        for producer in producers {
            // Producers take turns resting (a retry in flight still goes out): a rested one's
            // last batch may end up below a snapshot some replica installs, and that replica
            // must still know its sequence.
            let resting = (self.step / 150 + producer as u64).is_multiple_of(2) && self.producers.get(&producer).is_some_and(|p| p.1.is_none());
            if resting || !self.rng.chance(0.3) {
                continue;
            }
            let write = match self.producers.get(&producer) {
                Some((_, Some(retry), _)) => retry.clone(),
                Some((sequence, None, _)) => {
                    let records = 1 + self.rng.below(4) as i32;
                    let w = Write { tag: self.next_tag, producer, sequence: *sequence, records, all_replicas: self.rng.chance(0.7) };
                    self.next_tag += 1;
                    w
                }
                None => continue,
            };
            if let Some(entry) = self.producers.get_mut(&producer) {
                entry.1 = Some(write.clone());
            }
            let i = leaders[self.rng.below(leaders.len() as u64) as usize];
            let Some(partition) = self.replicas[i].group.as_ref().map(|g| Arc::clone(&g.partition)) else { continue };
            match partition.append(&tagged_batch(&write), crate::clock::now_ms()) {
                Ok(appended) => self.waiting.push(Waiting { write, node: self.replicas[i].id, partition, appended }),
                Err(crate::partition::Error::Sequence(check)) => {
                    if self.producers.get(&producer).is_some_and(|p| p.2) {
                        // Its last acks=1 write was lost with a leader: start over as a new producer.
                        self.producers.remove(&producer);
                        self.next_producer += 1;
                        self.producers.insert(self.next_producer, (0, None, false));
                    } else {
                        let seed = self.seed;
                        self.errors.push(format!("seed {seed}: producer {producer}, whose writes were all committed, got {check:?} for write {}", write.tag));
                    }
                }
                Err(_) => {}
            }
        }
    }

    fn collect_answers(&mut self) {
        let mut still = Vec::new();
        for w in std::mem::take(&mut self.waiting) {
            match w.partition.wait_durable(&w.appended, w.write.all_replicas).now_or_never() {
                None => still.push(w),
                Some(Ok(())) => {
                    self.acks.push(Ack { tag: w.write.tag, base: w.appended.base_offset, end: w.appended.end_offset, all_replicas: w.write.all_replicas });
                    if let Some(p) = self.producers.get_mut(&w.write.producer) {
                        *p = (w.write.sequence.wrapping_add(w.write.records), None, !w.write.all_replicas);
                    }
                }
                // The producer retries the same batch.
                Some(Err(_)) => {}
            }
        }
        self.waiting = still;
    }

    /// Heals everything and lets the group settle.
    fn settle(&mut self) -> Result<(), String> {
        self.cut.clear();
        self.loss = 0.0;
        for i in 0..self.replicas.len() {
            if self.replicas[i].group.is_none() {
                self.start(i);
            }
        }
        let mut agreeing = 0;
        for _ in 0..SETTLE_STEPS {
            self.round(false);
            agreeing = if self.agree() { agreeing + 1 } else { 0 };
            if agreeing >= SETTLED_ROUNDS {
                return Ok(());
            }
        }
        let views: Vec<String> = self
            .replicas
            .iter()
            .filter_map(|r| r.group.as_ref().map(|g| (r.id, g)))
            .map(|(id, g)| {
                let raft = &g.node.raft;
                let serving = if g.partition.is_leader() { " serving" } else { "" };
                let progress: Vec<String> = raft.prs().iter().map(|(p, pr)| format!("{p}:{:?}/{}/{}", pr.state, pr.matched, pr.next_idx)).collect();
                format!(
                    "node {id}: {:?}{serving} term {} first {} last {} commit {} hw {} progress [{}]",
                    raft.state,
                    raft.term,
                    raft.raft_log.first_index(),
                    raft.raft_log.last_index(),
                    raft.raft_log.committed,
                    g.partition.high_watermark(),
                    if raft.state == raft::StateRole::Leader { progress.join(" ") } else { String::new() }
                )
            })
            .collect();
        Err(format!("seed {}: the group did not settle in {SETTLE_STEPS} rounds: {}", self.seed, views.join("; ")))
    }

    /// Whether one replica serves as leader (so everything acknowledged is below its commit),
    /// nothing is uncommitted, and every replica has the same last index, commit index and high
    /// watermark.
    fn agree(&self) -> bool {
        let (mut views, mut leaders) = (Vec::new(), 0);
        for r in &self.replicas {
            let Some(g) = r.group.as_ref() else { return false };
            let log = &g.node.raft.raft_log;
            leaders += usize::from(g.partition.is_leader());
            views.push((log.last_index(), log.committed, g.partition.high_watermark()));
        }
        leaders == 1 && views[0].0 == views[0].1 && views.windows(2).all(|w| w[0] == w[1])
    }

    /// The committed log of every replica, as (base offset, tag, producer, sequence) per batch,
    /// from the latest log start of any replica (retention deletes whole segments, so replicas
    /// may keep different amounts below it).
    fn check(&self) -> Result<(), String> {
        let seed = self.seed;
        let mut logs = Vec::new();
        let mut latest_start = 0;
        for r in &self.replicas {
            let g = r.group.as_ref().ok_or(format!("node {} is down", r.id))?;
            let hw = g.partition.high_watermark();
            let start = g.partition.log_start_offset().map_err(|e| e.to_string())?;
            latest_start = latest_start.max(start);
            let read = g.partition.read(start, usize::MAX).map_err(|e| format!("node {}: {e}", r.id))?;
            let mut batches = Vec::new();
            if !read.records.is_empty() {
                for h in parse_batches(&read.records, u32::MAX).map_err(|e| format!("node {}: {e}", r.id))? {
                    let b = &read.records[h.position..h.position + h.size];
                    let base = i64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
                    // The last record's value, before its final byte (no headers).
                    let tag = u32::from_be_bytes(b[b.len() - 5..b.len() - 1].try_into().expect("4 bytes"));
                    batches.push((base, h.offset_count, tag, h.producer_id, h.base_sequence));
                }
            }
            logs.push((r.id, hw, batches));
        }
        for (_, _, batches) in &mut logs {
            batches.retain(|&(base, ..)| base >= latest_start);
        }
        let (first_id, first_hw, first) = &logs[0];
        for (id, hw, batches) in &logs[1..] {
            if hw != first_hw || batches != first {
                return Err(format!("seed {seed}: committed logs differ: node {first_id} (hw {first_hw}, {} batches) and node {id} (hw {hw}, {} batches)", first.len(), batches.len()));
            }
        }
        let by_offset: HashMap<i64, (u32, u32)> = first.iter().map(|&(base, count, tag, _, _)| (base, (tag, count))).collect();
        let mut seen_tags = HashSet::new();
        for &(base, _, tag, _, _) in first {
            if !seen_tags.insert(tag) {
                return Err(format!("seed {seed}: write {tag} is stored twice (again at offset {base})"));
            }
        }
        let tag_offsets: HashMap<u32, i64> = first.iter().map(|&(base, _, tag, _, _)| (tag, base)).collect();
        let mut acked_offsets: BTreeMap<i64, u32> = BTreeMap::new();
        for ack in self.acks.iter().filter(|ack| ack.base >= latest_start) {
            if !ack.all_replicas {
                // acks=1 promises the leader's disk only: a new leader may overwrite it. If the
                // write survived, it is where it was acknowledged.
                if let Some(&at) = tag_offsets.get(&ack.tag)
                    && at != ack.base
                {
                    return Err(format!("seed {seed}: write {} acknowledged (acks=1) at {} is stored at {at}", ack.tag, ack.base));
                }
                continue;
            }
            match by_offset.get(&ack.base) {
                Some(&(tag, count)) if tag == ack.tag && i64::from(count) == ack.end - ack.base => {}
                found => {
                    return Err(format!(
                        "seed {seed}: write {} acknowledged at [{}, {}) with acks={} is lost: the committed log holds {found:?} there",
                        ack.tag,
                        ack.base,
                        ack.end,
                        if ack.all_replicas { "all" } else { "1" }
                    ));
                }
            }
            if let Some(other) = acked_offsets.insert(ack.base, ack.tag)
                && other != ack.tag
            {
                return Err(format!("seed {seed}: offset {} acknowledged to writes {other} and {}", ack.base, ack.tag));
            }
        }
        Ok(())
    }
}

/// Runs one seed to the end: the writes acknowledged and the snapshots installed, or the first
/// violated property.
fn run_seed(seed: u64) -> Result<(usize, usize), String> {
    let root = tempfile::Builder::new().prefix("sluice-sim-").tempdir_in(sim_root()).map_err(|e| e.to_string())?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sim = Sim::new(seed, root.path());
        for _ in 0..STEPS {
            sim.round(true);
        }
        sim.settle()?;
        if let Some(error) = sim.errors.first() {
            return Err(error.clone());
        }
        sim.check().map(|()| (sim.acks.len(), sim.installs))
    }));
    outcome.unwrap_or_else(|panic| Err(panic.downcast_ref::<String>().cloned().unwrap_or_else(|| format!("seed {seed}: panicked"))))
}

/// tmpfs when there is one: the simulation fsyncs a lot and asserts nothing about speed.
fn sim_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

#[test]
fn simulated_faults_never_lose_an_acknowledged_write() {
    let seeds: Vec<u64> = match std::env::var("SLUICE_SIM_SEED") {
        Ok(one) => vec![one.parse().expect("SLUICE_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("SLUICE_SIM_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_SEEDS);
            (1..=n).collect()
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let _inside = runtime.enter();
    let mut failures = Vec::new();
    let (mut acked, mut installs) = (0, 0);
    for &seed in &seeds {
        match run_seed(seed) {
            Ok((n, i)) => (acked, installs) = (acked + n, installs + i),
            Err(e) => {
                eprintln!("{e}\n  replay: SLUICE_SIM_SEED={seed} cargo test -p sluice --lib raft::sim");
                failures.push(seed);
            }
        }
    }
    eprintln!("{} seeds, {acked} acknowledged writes checked, {installs} snapshots installed, failing seeds: {failures:?}", seeds.len());
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    assert!(acked > seeds.len(), "the simulation acknowledged almost nothing: it checks nothing");
    assert!(seeds.len() < 50 || installs > 0, "no replica ever installed a snapshot: that path goes unchecked");
}
