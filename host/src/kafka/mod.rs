//! The Kafka wire server: [`server`] accepts connections, [`connection`] moves frames,
//! [`frame`] handles bytes, and [`api`] gives requests their meaning.

mod api;
mod connection;
pub mod frame;
mod response_budget;
mod sasl;
mod server;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

pub use response_budget::ResponseBudget;
pub use server::serve;
pub use tls::{TlsError, acceptor as tls_acceptor};

use crate::cluster::Cluster;
use crate::groups::Coordinator;
use crate::metrics::Metrics;
use crate::plugins::Plugins;
use crate::security::{Authorizer, Operation, ResourceType};
use frame::Request;

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
    /// Decides what each principal may do (everything, when SASL is off).
    pub authorizer: Authorizer,
}

impl KafkaContext {
    /// Whether the request's principal may do `operation` on the resource, uncounted: for
    /// filtering what a listing shows, and for one of several ways to be allowed.
    pub fn may(&self, request: &Request, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        !self.authorizer.enabled() || self.authorizer.permits(&self.cluster.security(), request.principal(), request.peer.map(|p| p.ip()), operation, resource_type, name)
    }

    /// Whether the request's principal may do `operation` on the resource; a refusal is
    /// counted and logged.
    pub fn permits(&self, request: &Request, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        let allowed = self.may(request, operation, resource_type, name);
        if !allowed {
            let resource = match resource_type {
                ResourceType::Topic => "topic",
                ResourceType::Group => "group",
                ResourceType::Cluster => "cluster",
                ResourceType::TransactionalId => "transactional_id",
            };
            self.metrics.authorization_failures.with_label_values(&[resource]).inc();
            tracing::debug!(principal = request.principal(), ?operation, resource, name, "refused by ACLs");
        }
        allowed
    }

    /// Whether the request's principal may do `operation` on the cluster.
    pub fn permits_cluster(&self, request: &Request, operation: Operation) -> bool {
        self.permits(request, operation, ResourceType::Cluster, crate::security::acl::CLUSTER_RESOURCE)
    }
}
