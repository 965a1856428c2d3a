//! Node-to-node transport for every Raft group: one long-lived gRPC stream per peer, each frame
//! carrying every message queued for that peer across all groups (so heartbeats and appends of
//! many partitions share a frame), behind a bounded queue. A full queue or a broken stream is
//! reported to the driver, which calls `report_unreachable` so the leader probes the peer
//! again instead of streaming into the void.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounterVec;
use protobuf::Message as _;
use raft::prelude::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use super::Event;
use crate::rpc_tls::RpcTls;

/// The generated protocol types and service traits.
pub mod proto {
    #![allow(missing_docs)]
    tonic::include_proto!("sluice.raft.v1");
}

use proto::raft_transport_client::RaftTransportClient;
use proto::raft_transport_server::{RaftTransport, RaftTransportServer};
use proto::{Frame, GroupMessage, StreamEnd};

/// Messages coalesced into one frame at most.
const MAX_FRAME_MESSAGES: usize = 4096;
/// Wait before reconnecting to a peer whose stream broke.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// Sends Raft messages to peers.
pub struct Transport {
    peers: HashMap<u64, mpsc::Sender<(u64, Message)>>,
}

impl Transport {
    /// Starts one sender task per peer. `queue` bounds the messages waiting for each peer.
    pub fn start(me: u64, peers: &[(u64, SocketAddr)], queue: usize, events: mpsc::Sender<Event>, tls: Option<Arc<RpcTls>>) -> Transport {
        let mut senders = HashMap::new();
        for &(id, addr) in peers {
            if id == me {
                continue;
            }
            let (tx, rx) = mpsc::channel(queue);
            tokio::spawn(run_peer(me, id, addr, rx, events.clone(), tls.clone()));
            senders.insert(id, tx);
        }
        Transport { peers: senders }
    }

    /// Queues a message; `false` if the peer is unknown or its queue is full.
    pub fn send(&self, group: u64, msg: Message) -> bool {
        match self.peers.get(&msg.to) {
            Some(tx) => tx.try_send((group, msg)).is_ok(),
            None => false,
        }
    }
}

async fn run_peer(me: u64, peer: u64, addr: SocketAddr, mut rx: mpsc::Receiver<(u64, Message)>, events: mpsc::Sender<Event>, tls: Option<Arc<RpcTls>>) {
    loop {
        // With TLS, the peer must prove it is node `peer`.
        let client = match crate::rpc_tls::endpoint(tls.as_deref(), addr, Some(peer)) {
            Ok(e) => e.connect_timeout(Duration::from_millis(500)).tcp_nodelay(true),
            Err(e) => {
                warn!(peer, %addr, cause = %e, "bad peer address");
                return;
            }
        };
        let channel = match client.connect().await {
            Ok(c) => c,
            Err(e) => {
                debug!(peer, cause = %e, "peer unreachable");
                // Messages queued meanwhile are stale: drop them and tell Raft.
                if drain_and_report(&mut rx, peer, &events).await {
                    return;
                }
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
        };
        let (frames, frames_rx) = mpsc::channel::<Frame>(4);
        let mut client = RaftTransportClient::new(channel).max_encoding_message_size(usize::MAX);
        let call = tokio::spawn(async move { client.stream(Request::new(ReceiverStream::new(frames_rx))).await });
        loop {
            let Some(first) = rx.recv().await else { return };
            let mut messages = Vec::with_capacity(16);
            push(&mut messages, first);
            while messages.len() < MAX_FRAME_MESSAGES {
                match rx.try_recv() {
                    Ok(m) => push(&mut messages, m),
                    Err(_) => break,
                }
            }
            if frames.send(Frame { from: me, messages }).await.is_err() {
                break;
            }
        }
        let _ = call.await;
        if events.send(Event::Unreachable { peer }).await.is_err() {
            return;
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

fn push(out: &mut Vec<GroupMessage>, (group, msg): (u64, Message)) {
    match msg.write_to_bytes() {
        Ok(bytes) => out.push(GroupMessage { group, message: bytes }),
        Err(e) => warn!(cause = %e, "raft message not encodable; dropped"),
    }
}

/// Drops queued messages and reports the peer unreachable. Returns true once the node stops.
async fn drain_and_report(rx: &mut mpsc::Receiver<(u64, Message)>, peer: u64, events: &mpsc::Sender<Event>) -> bool {
    loop {
        match rx.try_recv() {
            Ok(_) => continue,
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => return true,
        }
    }
    events.send(Event::Unreachable { peer }).await.is_err()
}

/// The receiving side: hands every message to the driver.
pub struct TransportService {
    events: mpsc::Sender<Event>,
    /// With mutual TLS: the cluster's node ids, one of which the sender's certificate must name.
    nodes: Option<Vec<u64>>,
    /// Frames refused, by reason.
    refused: IntCounterVec,
}

impl TransportService {
    /// A service feeding `events`; `max_message` bounds one frame. With `nodes`, each stream
    /// must come from a certificate naming one of them, and carry only that node's messages.
    pub fn server(events: mpsc::Sender<Event>, max_message: usize, nodes: Option<Vec<u64>>, refused: IntCounterVec) -> RaftTransportServer<TransportService> {
        RaftTransportServer::new(TransportService { events, nodes, refused }).max_decoding_message_size(max_message)
    }

    /// The node the stream's certificate names (`None` without TLS: any sender is taken at its
    /// word), or the refusal.
    fn sender(&self, request: &Request<Streaming<Frame>>) -> Result<Option<u64>, Status> {
        let Some(nodes) = &self.nodes else { return Ok(None) };
        let named = request.peer_certs().and_then(|certs| crate::rpc_tls::node_of(&certs, nodes.iter().copied()));
        match named {
            Some(node) => Ok(Some(node)),
            None => {
                self.refused.with_label_values(&["peer_identity"]).inc();
                warn!(peer = ?request.remote_addr(), "raft stream refused: the certificate names no node of this cluster");
                Err(Status::permission_denied("only a node of this cluster may send raft messages"))
            }
        }
    }
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn stream(&self, request: Request<Streaming<Frame>>) -> Result<Response<StreamEnd>, Status> {
        let sender = self.sender(&request)?;
        let mut stream = request.into_inner();
        let mut from = None;
        let ended = loop {
            let frame = match stream.message().await {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            if sender.is_some_and(|node| node != frame.from) {
                self.refused.with_label_values(&["peer_identity"]).inc();
                warn!(claimed = frame.from, certified = ?sender, "raft frame refused: it claims another node than its certificate names");
                return Err(Status::permission_denied("a node may only send its own raft messages"));
            }
            from = Some(frame.from);
            let mut batch = Vec::with_capacity(frame.messages.len());
            for m in frame.messages {
                match Message::parse_from_bytes(&m.message) {
                    Ok(msg) => batch.push((m.group, msg)),
                    Err(e) => return Err(Status::invalid_argument(format!("undecodable raft message from node {}: {e}", frame.from))),
                }
            }
            if self.events.send(Event::Messages { from: frame.from, messages: batch }).await.is_err() {
                return Err(Status::unavailable("node is stopping"));
            }
        };
        // A peer that dies (kill -9, crash) drops this stream at once: the groups it led need
        // not wait out an election timeout to replace it (see `Group::leader_gone`).
        if let Some(peer) = from {
            let _ = self.events.send(Event::PeerGone { peer }).await;
        }
        ended?;
        Ok(Response::new(StreamEnd {}))
    }
}
