//! Sluice: a Kafka-compatible message broker.
//!
//! # Layout
//! - [`config`]: the node's settings (TOML, `SLUICE_*` environment, flags).
//! - `kafka/`: the wire server — framing, then one handler module per API family.
//! - `partition/`: one partition replica — batch validation, idempotent producers, group commit.
//! - `log/`: the on-disk partition log — segments, indexes, recovery.
//! - `cluster/`: topics, topic configs and producer ids, persisted in the data dir; the metadata
//!   group's commands and state machine.
//! - `groups/`: the consumer group coordinator and committed offsets.
//! - `raft/`: Raft replication — the ready loop, a replica's Raft storage, the peer transport,
//!   and the state-machine trait committed entries are applied through.
//! - [`snapshot`]: snapshots of every group's state in an object store, compressed by codec
//!   plugins, taken when trigger plugins say.
//! - [`plugins`]: the WebAssembly plugin host (codecs, snapshot triggers, retention policies).
//! - `metrics`: Prometheus counters and their HTTP endpoint.
//! - [`Node`]: starts and stops all of the above.
//! - [`admin`]: the admin gRPC service (plugins and bindings) and its protocol.
//! - [`allocator`]: the process allocator, which keeps hostile array counts from aborting it.

pub mod admin;
pub mod allocator;
pub mod config;
mod clock;
mod cluster;
mod durable;
mod error;
mod groups;
mod kafka;
mod log;
mod metrics;
mod node;
mod partition;
pub mod plugins;
pub mod rpc_tls;
mod raft;
mod security;
pub mod snapshot;

pub use config::Config;
pub use error::Error;
/// Committed offsets as records of `__consumer_offsets` (and as an offsets snapshot holds them).
pub use groups::offsets;
pub use kafka::frame;
pub use metrics::Metrics;
pub use node::Node;
/// The node-to-node wire protocol (Raft traffic on `--rpc-addr`), for tools and tests that
/// speak to a node as a peer would.
pub use crate::raft::transport::proto as raft_proto;

// Unit tests decode hostile frames in-process, so they need the broker's allocator too.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: allocator::SluiceAllocator = allocator::SluiceAllocator;
