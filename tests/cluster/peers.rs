//! Peers are not trusted: a node given malformed or inconsistent Raft messages on its rpc port
//! refuses each with an error and a metric and goes on serving; raft-rs never sees them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kafka_protocol::messages::ApiVersionsRequest;
use protobuf::Message as _;
use raft::prelude::{Entry, Message, MessageType};
use sluice::raft_proto::raft_transport_client::RaftTransportClient;
use sluice::raft_proto::{Frame, GroupMessage};
use sluice_tests::{Broker, RawClient, free_port};

use crate::{PATIENCE, serial};

const MAX_REQUEST_BYTES: usize = 65536;

fn message(kind: MessageType, from: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = 1;
    m.term = term;
    m
}

fn append(index: u64, log_term: u64, term: u64, entries: &[(u64, u64, usize)]) -> Message {
    let mut m = message(MessageType::MsgAppend, 2, term);
    m.index = index;
    m.log_term = log_term;
    m.entries = entries
        .iter()
        .map(|&(index, term, size)| {
            let mut e = Entry::default();
            e.index = index;
            e.term = term;
            // A records entry: base offset, count and timestamp, then `size` bytes of batches.
            let mut data = vec![0u8; 20 + size];
            data[8..12].copy_from_slice(&1u32.to_be_bytes());
            e.data = data.into();
            e
        })
        .collect::<Vec<_>>()
        .into();
    m
}

/// Refused messages by reason, as the node's metrics report them.
fn refused(node: &Broker) -> Result<BTreeMap<String, f64>> {
    let text = node.metrics()?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("sluice_raft_messages_refused_total{"))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?.to_string();
            Some((reason, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect())
}

#[test]
fn peers_are_not_trusted_malformed_raft_messages_are_refused() -> Result<()> {
    let _one = serial();
    let dir = tempfile::tempdir()?;
    let ports = [free_port(), free_port(), free_port()];
    // Node 1 of a cluster whose nodes 2 and 3 never start: the test speaks as node 2.
    let peers = format!("1@127.0.0.1:{},2@127.0.0.1:{},3@127.0.0.1:{}", ports[0], ports[1], ports[2]);
    let mut node = Broker::new(env!("CARGO_BIN_EXE_sluice"), dir.path())
        .rpc_port(ports[0])
        .node_id(1)
        .peers(&peers)
        .env("SLUICE_KAFKA__MAX_REQUEST_BYTES", &MAX_REQUEST_BYTES.to_string())
        .env("SLUICE_LOG__MAX_MESSAGE_BYTES", "60000");
    node.start()?;

    let mut sent = vec![
        // A group this node does not have.
        (12345, message(MessageType::MsgHeartbeat, 2, 1)),
        // Snapshots are not supported, and local messages never come from a peer.
        (0, message(MessageType::MsgSnapshot, 2, 1)),
        (0, message(MessageType::MsgHup, 2, 1)),
        // Node 3's name on node 2's stream.
        (0, message(MessageType::MsgHeartbeat, 3, 1)),
        // Entries with a gap, and entries of a later term than their message (a forged term).
        (0, append(0, 0, 2, &[(1, 2, 0), (3, 2, 0)])),
        (0, append(0, 0, 2, &[(1, 9, 0)])),
        // An entry larger than any log here accepts.
        (0, append(0, 0, 2, &[(1, 2, MAX_REQUEST_BYTES + 1)])),
    ];
    // A commit index far beyond the log: raft-rs would panic on it.
    let mut lying = message(MessageType::MsgHeartbeat, 2, 1);
    lying.commit = 1_000_000;
    sent.push((0, lying));
    let expected = sent.len() as f64;
    // A well-formed heartbeat after them is accepted.
    sent.push((0, message(MessageType::MsgHeartbeat, 2, 1)));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let frames: Vec<Frame> = sent
        .into_iter()
        .map(|(group, m)| -> Result<Frame> { Ok(Frame { from: 2, messages: vec![GroupMessage { group, message: m.write_to_bytes()? }] }) })
        .collect::<Result<_>>()?;
    runtime.block_on(async {
        let mut client = RaftTransportClient::connect(format!("http://127.0.0.1:{}", ports[0])).await?;
        client.stream(tokio_stream::iter(frames)).await.context("the stream of frames")?;
        anyhow::Ok(())
    })?;

    let deadline = Instant::now() + PATIENCE;
    let counts = loop {
        let counts = refused(&node)?;
        if counts.values().sum::<f64>() >= expected || Instant::now() >= deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("refused by reason: {counts:?}");
    ensure!(counts.values().sum::<f64>() == expected, "refused {counts:?}, expected {expected} refusals");
    for reason in ["group", "type", "address", "entries", "too_large", "commit"] {
        ensure!(counts.get(reason).is_some_and(|n| *n >= 1.0), "no refusal for {reason}: {counts:?}");
    }
    // The node still runs and still serves, and its Raft loop still answers.
    ensure!(node.is_running(), "the node exited");
    let mut kafka = RawClient::connect(node.addr())?;
    let versions = kafka.send(3, &ApiVersionsRequest::default())?;
    ensure!(versions.error_code == 0, "ApiVersions answered {}", versions.error_code);
    let rpc = node.rpc_addr().context("started")?.to_string();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(["cluster", "status", "--rpc-addr", &rpc]).output()?;
    let text = String::from_utf8_lossy(&status.stdout);
    ensure!(status.status.success() && text.contains("__cluster_metadata"), "cluster status: {text} {}", String::from_utf8_lossy(&status.stderr));
    Ok(())
}
