//! Checks on every Raft message a peer sends before it reaches raft-rs. A peer may be buggy or
//! hostile: raft-rs panics on some inconsistent input (a commit index past the log, an entry
//! that conflicts with a committed one), and an entry the log refuses would stop the node. A
//! refused message costs that message only; the driver counts it by reason.

use raft::RawNode;
use raft::prelude::{Entry, EntryType, Message, MessageType};

use super::entry::{ENTRY_PREFIX, decode_entry, decode_log_start};
use super::storage::ReplicaStorage;

/// Why a peer's message was refused (the metrics label is [`Refusal::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The sender is not who the stream says, not a voter, or the message is not for us.
    #[error("message from node {from} to node {to} on a stream of node {stream}")]
    WrongAddress {
        /// `from` in the message.
        from: u64,
        /// `to` in the message.
        to: u64,
        /// The stream's sender.
        stream: u64,
    },
    /// No such group on this node.
    #[error("unknown group {0}")]
    UnknownGroup(u64),
    /// A type peers never send (local messages), or a snapshot for a group that installs none.
    #[error("a peer may not send {0:?}")]
    Type(MessageType),
    /// Entries that do not continue each other or the log, or break the term order.
    #[error("inconsistent entries: {0}")]
    Entries(String),
    /// An entry larger than every log accepts.
    #[error("entry {index} holds {size} bytes, more than the {max} a log accepts")]
    TooLarge {
        /// Its index.
        index: u64,
        /// Its data's size.
        size: usize,
        /// The largest entry data accepted.
        max: usize,
    },
    /// A commit index beyond what this node's log holds.
    #[error("commit index {commit} is beyond this log's last index {last}")]
    Commit {
        /// The claimed commit index.
        commit: u64,
        /// Our last index.
        last: u64,
    },
}

impl Refusal {
    /// The metric label of this refusal, one of [`REFUSAL_REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::WrongAddress { .. } => "address",
            Refusal::UnknownGroup(_) => "group",
            Refusal::Type(_) => "type",
            Refusal::Entries(_) => "entries",
            Refusal::TooLarge { .. } => "too_large",
            Refusal::Commit { .. } => "commit",
        }
    }
}

/// Every value [`Refusal::reason`] takes.
/// (`peer_identity`: frames from a connection whose certificate names no node, or another node
/// than the one the frame claims to come from; refused by the transport.)
pub const REFUSAL_REASONS: [&str; 7] = ["address", "group", "type", "entries", "too_large", "commit", "peer_identity"];

/// Largest data of a snapshot message: it names the snapshot, it does not carry it.
pub const MAX_SNAPSHOT_DATA: usize = 4096;

/// What needs no group state: addressing, type, and the entries' shape and sizes.
/// `forwarded_proposals`: whether the group takes proposals a follower forwards to its leader
/// (the metadata group, where any node proposes; a partition's leader proposes itself).
/// `installs_snapshots`: whether the group takes a leader's snapshot message.
pub fn check_message(me: u64, voters: &[u64], stream: u64, msg: &Message, max_entry_bytes: usize, forwarded_proposals: bool, installs_snapshots: bool) -> Result<(), Refusal> {
    if msg.from != stream || msg.to != me || stream == me || !voters.contains(&msg.from) {
        return Err(Refusal::WrongAddress { from: msg.from, to: msg.to, stream });
    }
    let kind = msg.get_msg_type();
    let allowed = matches!(
        kind,
        MessageType::MsgAppend
            | MessageType::MsgAppendResponse
            | MessageType::MsgHeartbeat
            | MessageType::MsgHeartbeatResponse
            | MessageType::MsgRequestVote
            | MessageType::MsgRequestVoteResponse
            | MessageType::MsgRequestPreVote
            | MessageType::MsgRequestPreVoteResponse
            | MessageType::MsgTimeoutNow
    ) || (kind == MessageType::MsgPropose && forwarded_proposals)
        || (kind == MessageType::MsgSnapshot && installs_snapshots);
    if !allowed {
        return Err(Refusal::Type(kind));
    }
    if kind == MessageType::MsgSnapshot {
        return check_snapshot(voters, msg);
    }
    if kind == MessageType::MsgPropose {
        // Entries not yet in any log (index and term 0): only their kind and size to check.
        // raft-rs stops the node on an empty proposal.
        if msg.entries.is_empty() {
            return Err(Refusal::Entries("a proposal without entries".into()));
        }
        for e in msg.entries.iter() {
            check_entry_data(e, max_entry_bytes)?;
        }
        return Ok(());
    }
    if !msg.entries.is_empty() && kind != MessageType::MsgAppend {
        return Err(Refusal::Entries(format!("{kind:?} carries entries")));
    }
    let mut prev = (msg.index, msg.log_term);
    for e in msg.entries.iter() {
        check_entry_data(e, max_entry_bytes)?;
        if e.index != prev.0 + 1 {
            return Err(Refusal::Entries(format!("entry {} follows entry {}", e.index, prev.0)));
        }
        if e.term < prev.1 || e.term > msg.term {
            return Err(Refusal::Entries(format!("entry {} has term {} after term {} in a message of term {}", e.index, e.term, prev.1, msg.term)));
        }
        prev = (e.index, e.term);
    }
    Ok(())
}

/// A snapshot message: no entries, a snapshot of a term the message may speak for, of this
/// cluster's voters, naming (not carrying) its data.
fn check_snapshot(voters: &[u64], msg: &Message) -> Result<(), Refusal> {
    let snapshot = msg.get_snapshot();
    let meta = snapshot.get_metadata();
    let mut theirs = meta.get_conf_state().voters.to_vec();
    let mut ours = voters.to_vec();
    theirs.sort_unstable();
    ours.sort_unstable();
    let why = if !msg.entries.is_empty() {
        "it carries entries"
    } else if meta.index == 0 || meta.term == 0 || meta.term > msg.term {
        "its index or term is impossible"
    } else if theirs != ours || !meta.get_conf_state().learners.is_empty() {
        "its voters are not this cluster's"
    } else if snapshot.data.is_empty() || snapshot.data.len() > MAX_SNAPSHOT_DATA {
        "it does not name a snapshot"
    } else {
        return Ok(());
    };
    Err(Refusal::Entries(format!("snapshot message refused: {why}")))
}

/// An entry's type, size and data: a normal entry every log accepts, of a kind Sluice writes.
fn check_entry_data(e: &Entry, max_entry_bytes: usize) -> Result<(), Refusal> {
    if e.get_entry_type() != EntryType::EntryNormal {
        // Membership changes come with a later version; until then every group's voters are fixed.
        return Err(Refusal::Entries(format!("entry {} is a configuration change", e.index)));
    }
    if e.data.len() > max_entry_bytes + ENTRY_PREFIX {
        return Err(Refusal::TooLarge { index: e.index, size: e.data.len(), max: max_entry_bytes + ENTRY_PREFIX });
    }
    if !e.data.is_empty() && decode_entry(&e.data).is_none() && decode_log_start(&e.data).is_none() {
        return Err(Refusal::Entries(format!("entry {} holds {} bytes of no known kind", e.index, e.data.len())));
    }
    Ok(())
}

/// What needs the group's log: a commit index we could not hold, an entry that rewrites a
/// committed one, and data entries whose offsets do not continue the log.
pub fn check_against_log(node: &RawNode<ReplicaStorage>, msg: &Message) -> Result<(), Refusal> {
    if msg.term != 0 && msg.term < node.raft.term {
        // A deposed leader's message: raft-rs only answers it with the newer term.
        return Ok(());
    }
    let log = &node.raft.raft_log;
    let last = log.last_index();
    if msg.get_msg_type() == MessageType::MsgHeartbeat && msg.commit > last {
        // A leader sends min(what we have, its commit): more is a lie raft-rs would panic on.
        return Err(Refusal::Commit { commit: msg.commit, last });
    }
    if msg.get_msg_type() != MessageType::MsgAppend || msg.entries.is_empty() {
        return Ok(());
    }
    for e in msg.entries.iter().take_while(|e| e.index <= log.committed) {
        if log.term(e.index).is_ok_and(|ours| ours != e.term) {
            return Err(Refusal::Entries(format!("entry {} of term {} conflicts with the committed entry", e.index, e.term)));
        }
    }
    // Offsets continue from the entry the message builds on, when our log holds it as the
    // leader's does.
    node.store().0.check_offsets(msg.index, msg.log_term, &msg.entries).map_err(Refusal::Entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(index: u64, log_term: u64, term: u64, entries: &[(u64, u64)]) -> Message {
        let mut m = message_of(MessageType::MsgAppend, entries);
        m.term = term;
        m.index = index;
        m.log_term = log_term;
        m
    }

    fn message_of(kind: MessageType, entries: &[(u64, u64)]) -> Message {
        let mut m = Message::default();
        m.set_msg_type(kind);
        m.from = 2;
        m.to = 1;
        m.entries = entries
            .iter()
            .map(|&(index, term)| {
                let mut e = Entry::default();
                e.index = index;
                e.term = term;
                e
            })
            .collect::<Vec<_>>()
            .into();
        m
    }

    #[test]
    fn malformed_messages_are_refused_by_reason() {
        let check = |m: &Message| check_message(1, &[1, 2, 3], 2, m, 1024, false, false).map_err(|r| r.reason());
        assert_eq!(check(&append(3, 2, 4, &[(4, 2), (5, 4)])), Ok(()));
        assert_eq!(check(&append(3, 2, 4, &[(4, 2), (6, 4)])), Err("entries"), "a gap");
        assert_eq!(check(&append(3, 2, 4, &[(4, 5)])), Err("entries"), "an entry of a later term than its message");
        assert_eq!(check(&append(3, 3, 4, &[(4, 2)])), Err("entries"), "terms going back");
        let mut forged = append(3, 2, 4, &[]);
        forged.from = 3;
        assert_eq!(check(&forged), Err("address"), "another node's name on node 2's stream");
        forged.from = 2;
        forged.to = 3;
        assert_eq!(check(&forged), Err("address"), "a message for another node");
        let mut snapshot = append(3, 2, 4, &[]);
        snapshot.set_msg_type(MessageType::MsgSnapshot);
        assert_eq!(check(&snapshot), Err("type"));
        snapshot.set_msg_type(MessageType::MsgHup);
        assert_eq!(check(&snapshot), Err("type"), "local messages stay local");
        // A follower forwards proposals to its leader, where the group takes them.
        let mut forwarded = message_of(MessageType::MsgPropose, &[(0, 0)]);
        forwarded.entries[0].data = crate::raft::entry::encode_entry(-1, 1, 0, b"{}").into();
        assert_eq!(check(&forwarded), Err("type"), "a partition's leader proposes itself");
        let metadata = |m: &Message| check_message(1, &[1, 2, 3], 2, m, 1024, true, false).map_err(|r| r.reason());
        assert_eq!(metadata(&forwarded), Ok(()));
        assert_eq!(metadata(&message_of(MessageType::MsgPropose, &[])), Err("entries"), "raft-rs stops on an empty proposal");
        let mut big = append(3, 2, 4, &[(4, 4)]);
        big.entries[0].data = vec![0u8; 1024 + ENTRY_PREFIX + 1].into();
        assert_eq!(check(&big), Err("too_large"));
        let mut odd = append(3, 2, 4, &[(4, 4)]);
        odd.entries[0].data = vec![1u8; 7].into();
        assert_eq!(check(&odd), Err("entries"), "data that is no kind of entry");
        let mut conf = append(3, 2, 4, &[(4, 4)]);
        conf.entries[0].set_entry_type(EntryType::EntryConfChangeV2);
        assert_eq!(check(&conf), Err("entries"));
    }

    #[test]
    fn a_snapshot_message_must_name_a_snapshot_of_this_clusters_voters() {
        let check = |m: &Message, installs: bool| check_message(1, &[1, 2, 3], 2, m, 1024, true, installs).map_err(|r| r.reason());
        let snapshot = |index: u64, term: u64, voters: &[u64], data: &[u8]| {
            let mut m = message_of(MessageType::MsgSnapshot, &[]);
            m.term = 3;
            let meta = m.mut_snapshot().mut_metadata();
            (meta.index, meta.term) = (index, term);
            meta.mut_conf_state().voters = voters.to_vec();
            m.mut_snapshot().data = data.to_vec().into();
            m
        };
        assert_eq!(check(&snapshot(10, 2, &[3, 1, 2], b"{}"), true), Ok(()));
        assert_eq!(check(&snapshot(10, 2, &[1, 2, 3], b"{}"), false), Err("type"), "a group that installs none");
        assert_eq!(check(&snapshot(0, 2, &[1, 2, 3], b"{}"), true), Err("entries"), "index 0 makes raft-rs panic");
        assert_eq!(check(&snapshot(10, 4, &[1, 2, 3], b"{}"), true), Err("entries"), "a term after the message's");
        assert_eq!(check(&snapshot(10, 2, &[1, 2, 9], b"{}"), true), Err("entries"), "other voters");
        assert_eq!(check(&snapshot(10, 2, &[1, 2, 3], b""), true), Err("entries"), "names nothing");
        assert_eq!(check(&snapshot(10, 2, &[1, 2, 3], &[b'x'; MAX_SNAPSHOT_DATA + 1]), true), Err("entries"), "carries data");
    }
}
