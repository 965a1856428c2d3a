//! The Kafka wire server: [`server`] accepts connections, [`connection`] moves frames,
//! [`frame`] handles bytes, and [`api`] gives requests their meaning.

mod api;
mod connection;
pub mod frame;
mod response_budget;
mod server;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

pub use response_budget::ResponseBudget;
pub use server::serve;
pub use tls::{TlsError, acceptor as tls_acceptor};

use crate::cluster::Cluster;
use crate::groups::Coordinator;
use crate::metrics::Metrics;
use crate::plugins::Plugins;

/// What every request handler can reach.
pub struct KafkaContext {
    /// Topics, partitions and configuration.
    pub cluster: Arc<Cluster>,
    /// This broker's id.
    pub node_id: i32,
    /// The address clients are told to use.
    pub advertised: SocketAddr,
    /// Request and data counters.
    pub metrics: Arc<Metrics>,
    /// The consumer group coordinator.
    pub groups: Arc<Coordinator>,
    /// The plugin host, for checking plugin bindings in topic configs.
    pub plugins: Arc<Plugins>,
    /// How cluster metadata is changed (directly, or through the metadata group).
    pub control: Arc<crate::cluster::control::Control>,
    /// Memory for Fetch responses, node-wide.
    pub response_budget: ResponseBudget,
}
