//! The admin gRPC service on `--rpc-addr`: load, list, bind, unbind and describe plugins;
//! cluster status and leadership; snapshots and restores; SCRAM users. The `sluice plugin`,
//! `cluster`, `snapshot` and `user` commands are its clients. Topic bindings are stored as the topic's
//! configs (`sluice.retention.policy`, `sluice.plugin.param.*`, ...), exactly as Kafka's
//! IncrementalAlterConfigs would set them, so both paths see and change the same state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::cluster::control::Control;
use crate::cluster::{Cluster, group_of};
use crate::groups::Coordinator;
use crate::groups::offsets::{self, OFFSETS_TOPIC, OffsetRecord};
use crate::raft::transport::TransportService;
use crate::raft::transport::proto::raft_transport_server::RaftTransportServer;
use crate::cluster::topic_config::PLUGIN_PARAM_PREFIX;
use crate::plugins::registry::topic_params;
use crate::plugins::{Params, PluginKind, Plugins};
use crate::security::scram::{self, Mechanism, ScramCredential};
use crate::security::SecurityChange;
use crate::rpc_tls::RpcTls;
use crate::snapshot::Snapshots;

/// The generated protocol types and service traits.
pub mod proto {
    #![allow(missing_docs)]
    tonic::include_proto!("sluice.admin.v1");
}

use proto::admin_server::{Admin, AdminServer};

/// The admin service of one node.
pub struct AdminService {
    cluster: Arc<Cluster>,
    plugins: Arc<Plugins>,
    control: Arc<Control>,
    snapshots: Arc<Snapshots>,
    groups: Arc<Coordinator>,
    /// Mutual TLS towards the other nodes, when on.
    tls: Option<Arc<RpcTls>>,
}

impl AdminService {
    /// A service over this node's cluster state, plugins, snapshots and group coordinator.
    pub fn new(cluster: Arc<Cluster>, plugins: Arc<Plugins>, control: Arc<Control>, snapshots: Arc<Snapshots>, groups: Arc<Coordinator>, tls: Option<Arc<RpcTls>>) -> AdminService {
        AdminService { cluster, plugins, control, snapshots, groups, tls }
    }

    /// Commits a restored cluster's offsets, each group's on its coordinator (this node, or
    /// another through its admin API), retrying while coordinators move or are not elected yet.
    /// Returns how many groups were restored.
    async fn commit_restored(&self, commits: Vec<OffsetRecord>) -> Result<usize, Status> {
        let mut by_group: BTreeMap<String, Vec<OffsetRecord>> = BTreeMap::new();
        for commit in commits {
            by_group.entry(commit.0.group.clone()).or_default().push(commit);
        }
        let peers: HashMap<u64, std::net::SocketAddr> = crate::config::parse_peers(&self.cluster.config().peers).map_err(|e| Status::internal(e.to_string()))?.into_iter().collect();
        let topic = self.cluster.topic(OFFSETS_TOPIC).ok_or_else(|| Status::unavailable(format!("{OFFSETS_TOPIC} does not exist yet")))?;
        let replication = self.control.replication();
        let deadline = tokio::time::Instant::now() + RESTORE_COMMIT_PATIENCE;
        for (group, records) in &by_group {
            let offsets_group = group_of(topic.id, offsets::partition_for(group, topic.partitions.len() as i32));
            loop {
                let leader = replication.leadership(offsets_group).leader;
                let committed = if leader == replication.me() {
                    self.groups.restore_offsets(group, records).await.map_err(|code| format!("error code {code}"))
                } else {
                    restore_on(self.tls.as_deref(), peers.get(&leader).map(|a| (leader, *a)), group, records).await
                };
                match committed {
                    Ok(()) => break,
                    Err(why) if tokio::time::Instant::now() >= deadline => {
                        return Err(Status::unavailable(format!("restoring the offsets of group {group}: {why}")));
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                }
            }
        }
        Ok(by_group.len())
    }
}

/// How long a cluster restore keeps trying to reach each group's coordinator.
const RESTORE_COMMIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Sends a group's restored offsets to its coordinator (node id, rpc address).
async fn restore_on(tls: Option<&RpcTls>, coordinator: Option<(u64, std::net::SocketAddr)>, group: &str, records: &[OffsetRecord]) -> Result<(), String> {
    let (node, addr) = coordinator.ok_or("the group's coordinator is not known yet")?;
    let commits = offsets::encode_snapshot(records)?;
    let channel = crate::rpc_tls::endpoint(tls, addr, Some(node)).map_err(|e| e.to_string())?.connect().await.map_err(|e| e.to_string())?;
    let mut client = proto::admin_client::AdminClient::new(channel);
    client.restore_offsets(proto::RestoreOffsetsRequest { group: group.to_string(), commits }).await.map_err(|e| e.message().to_string())?;
    Ok(())
}

impl AdminService {
    /// The Raft group of a topic's partition, or the metadata group for an empty topic.
    fn group(&self, topic: &str, partition: i32) -> Result<u64, Status> {
        if topic.is_empty() {
            return Ok(crate::raft::METADATA_GROUP);
        }
        let found = self.cluster.topic(topic).ok_or_else(|| Status::not_found(format!("topic {topic} does not exist")))?;
        if partition < 0 || partition as usize >= found.partitions.len() {
            return Err(Status::not_found(format!("topic {topic} has no partition {partition}")));
        }
        Ok(crate::cluster::group_of(found.id, partition))
    }
}

fn snapshot_info(m: &crate::snapshot::Manifest) -> proto::Snapshot {
    proto::Snapshot {
        group: m.group,
        kind: m.kind.name().to_string(),
        name: m.name.clone(),
        index: m.index,
        term: m.term,
        codec: m.codec.name.clone(),
        raw_bytes: m.raw_bytes(),
        stored_bytes: m.stored_bytes(),
        chunks: m.chunks.len() as u32,
        created_ms: m.created_ms,
        manifest_key: m.key(),
    }
}

/// Serves the admin API and the Raft transport on `listener` until `stop` turns true; only to
/// clients with a certificate from the cluster CA when `tls` is set (each refusal counted in
/// `tls_refused`).
pub async fn serve(listener: TcpListener, service: AdminService, raft: RaftTransportServer<TransportService>, tls_refused: prometheus::IntCounter, stop: watch::Receiver<bool>) {
    // A component may be as large as plugins.max-component-bytes, plus the request around it.
    let limit = service.cluster.config().plugins.max_component_bytes + (1 << 20);
    let tls = service.tls.clone();
    let router = tonic::transport::Server::builder().add_service(AdminServer::new(service).max_decoding_message_size(limit)).add_service(raft);
    let stopped = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let served = match tls {
        None => router.serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stopped).await,
        Some(tls) => {
            let incoming = crate::rpc_tls::incoming(listener, &tls, tls_refused, stop);
            router.serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(incoming), stopped).await
        }
    };
    if let Err(e) = served {
        tracing::error!(cause = %e, "admin API stopped");
    }
}

fn kind(name: &str) -> Result<PluginKind, Status> {
    name.parse().map_err(Status::invalid_argument)
}

fn params(list: Vec<proto::Param>) -> Params {
    list.into_iter().map(|p| (p.key, p.value)).collect()
}

fn to_proto(params: Params) -> Vec<proto::Param> {
    params.into_iter().map(|(key, value)| proto::Param { key, value }).collect()
}

fn refused(e: impl std::fmt::Display) -> Status {
    Status::failed_precondition(e.to_string())
}

impl AdminService {
    fn describe_binding(&self, kind: PluginKind, topic: &str) -> Result<proto::Binding, Status> {
        if !topic.is_empty() {
            let t = self.cluster.topic(topic).ok_or_else(|| Status::not_found(format!("topic {topic} does not exist")))?;
            if let Some(spec) = t.configs.get(kind.topic_config()) {
                return Ok(proto::Binding {
                    kind: kind.name().into(),
                    topic: topic.into(),
                    plugin: spec.clone(),
                    params: to_proto(topic_params(&t.configs)),
                    is_default: false,
                });
            }
        }
        let table = self.plugins.registry().snapshot();
        let default = table.default_binding(kind).ok_or_else(|| Status::not_found(format!("no default {} binding", kind.name())))?;
        Ok(proto::Binding {
            kind: kind.name().into(),
            topic: topic.into(),
            plugin: default.plugin.clone(),
            params: to_proto(default.params.clone()),
            is_default: true,
        })
    }

    /// Replaces a topic's configs after checking its plugin bindings.
    async fn update_topic(&self, topic: &str, change: impl FnOnce(&mut BTreeMap<String, String>)) -> Result<(), Status> {
        let t = self.cluster.topic(topic).ok_or_else(|| Status::not_found(format!("topic {topic} does not exist")))?;
        let mut configs = t.configs.clone();
        change(&mut configs);
        self.plugins.check_topic_configs(&configs).map_err(refused)?;
        self.control.set_topic_configs(topic, configs).await.map_err(refused)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn load_plugin(&self, request: Request<proto::LoadPluginRequest>) -> Result<Response<proto::Plugin>, Status> {
        let r = request.into_inner();
        let kind = if r.kind.is_empty() { None } else { Some(kind(&r.kind)?) };
        let info = self.control.load_plugin(r.component, kind, r.name, r.version).await.map_err(refused)?;
        Ok(Response::new(proto::Plugin {
            name: info.name,
            version: info.version,
            kind: info.kind.name().into(),
            sha256: info.sha256,
            builtin: false,
            quarantined: false,
        }))
    }

    async fn list_plugins(&self, _request: Request<proto::ListPluginsRequest>) -> Result<Response<proto::ListPluginsResponse>, Status> {
        let table = self.plugins.registry().snapshot();
        let plugins = table
            .entries()
            .iter()
            .map(|e| proto::Plugin {
                name: e.info().name.clone(),
                version: e.info().version.clone(),
                kind: e.info().kind.name().into(),
                sha256: e.info().sha256.clone(),
                builtin: e.builtin(),
                quarantined: e.quarantined(),
            })
            .collect();
        Ok(Response::new(proto::ListPluginsResponse { plugins }))
    }

    async fn bind(&self, request: Request<proto::BindRequest>) -> Result<Response<proto::Binding>, Status> {
        let r = request.into_inner();
        let kind = kind(&r.kind)?;
        let params = params(r.params);
        if r.topic.is_empty() {
            self.control.set_default_binding(kind, r.plugin.clone(), params).await.map_err(refused)?;
        } else {
            self.update_topic(&r.topic, |configs| {
                configs.insert(kind.topic_config().to_string(), r.plugin.clone());
                for (k, v) in params {
                    configs.insert(format!("{PLUGIN_PARAM_PREFIX}{k}"), v);
                }
            })
            .await?;
        }
        Ok(Response::new(self.describe_binding(kind, &r.topic)?))
    }

    async fn unbind(&self, request: Request<proto::UnbindRequest>) -> Result<Response<proto::Binding>, Status> {
        let r = request.into_inner();
        let kind = kind(&r.kind)?;
        if r.topic.is_empty() {
            return Err(Status::invalid_argument("the cluster default cannot be unbound; bind another plugin instead"));
        }
        self.update_topic(&r.topic, |configs| {
            configs.remove(kind.topic_config());
        })
        .await?;
        Ok(Response::new(self.describe_binding(kind, &r.topic)?))
    }

    async fn cluster_status(&self, _request: Request<proto::ClusterStatusRequest>) -> Result<Response<proto::ClusterStatusResponse>, Status> {
        let r = self.control.replication();
        let groups = r
            .status()
            .await
            .into_iter()
            .map(|g| proto::GroupState {
                group: g.group,
                topic: g.name,
                partition: g.partition,
                leader: g.leader,
                term: g.term,
                commit: g.commit,
                applied: g.applied,
                last_index: g.last_index,
                lag: g.lag.into_iter().map(|(node, entries)| proto::FollowerLag { node, entries }).collect(),
            })
            .collect();
        let brokers = self.cluster.brokers().into_iter().map(|(id, kafka_addr)| proto::BrokerAddress { id, kafka_addr }).collect();
        Ok(Response::new(proto::ClusterStatusResponse { node: r.me(), brokers, groups }))
    }

    async fn create_user(&self, request: Request<proto::CreateUserRequest>) -> Result<Response<proto::User>, Status> {
        let req = request.into_inner();
        if req.name.is_empty() || req.password.is_empty() {
            return Err(Status::invalid_argument("a user needs a name and a password"));
        }
        let mechanism = Mechanism::from_name(&req.mechanism).ok_or_else(|| Status::invalid_argument(format!("unknown SCRAM mechanism {:?} (SCRAM-SHA-256 or SCRAM-SHA-512)", req.mechanism)))?;
        let iterations = if req.iterations == 0 { scram::MIN_ITERATIONS } else { req.iterations };
        let credential = ScramCredential::from_password(mechanism, &req.password, iterations.into()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let change = SecurityChange::SetCredential { user: req.name.clone(), mechanism, credential: Some(credential) };
        self.control.change_security(change).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(user_info(&req.name, self.cluster.security().users.get(&req.name))))
    }

    async fn delete_user(&self, request: Request<proto::DeleteUserRequest>) -> Result<Response<proto::DeleteUserResponse>, Status> {
        let req = request.into_inner();
        let wanted = match req.mechanism.as_str() {
            "" => None,
            name => Some(Mechanism::from_name(name).ok_or_else(|| Status::invalid_argument(format!("unknown SCRAM mechanism {name:?}")))?),
        };
        let held: Vec<Mechanism> = self.cluster.security().users.get(&req.name).map(|c| c.keys().copied().filter(|m| wanted.is_none_or(|w| w == *m)).collect()).unwrap_or_default();
        if held.is_empty() {
            return Err(Status::not_found(format!("user {} has no such credential", req.name)));
        }
        for mechanism in &held {
            let change = SecurityChange::SetCredential { user: req.name.clone(), mechanism: *mechanism, credential: None };
            self.control.change_security(change).await.map_err(|e| Status::unavailable(e.to_string()))?;
        }
        Ok(Response::new(proto::DeleteUserResponse { removed: held.len() as u32 }))
    }

    async fn list_users(&self, _request: Request<proto::ListUsersRequest>) -> Result<Response<proto::ListUsersResponse>, Status> {
        let security = self.cluster.security();
        Ok(Response::new(proto::ListUsersResponse { users: security.users.iter().map(|(name, creds)| user_info(name, Some(creds))).collect() }))
    }

    async fn list_snapshots(&self, request: Request<proto::ListSnapshotsRequest>) -> Result<Response<proto::ListSnapshotsResponse>, Status> {
        let group = request.into_inner().group;
        let listed = self.snapshots.store().list(group).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(proto::ListSnapshotsResponse { snapshots: listed.iter().map(snapshot_info).collect() }))
    }

    async fn create_snapshot(&self, request: Request<proto::CreateSnapshotRequest>) -> Result<Response<proto::Snapshot>, Status> {
        let req = request.into_inner();
        let group = self.group(&req.topic, req.partition)?;
        let manifest = self.snapshots.take(group).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(snapshot_info(&manifest)))
    }

    async fn restore_cluster(&self, request: Request<proto::RestoreClusterRequest>) -> Result<Response<proto::RestoreClusterResponse>, Status> {
        let url = request.into_inner().store;
        let config = self.cluster.config();
        let settings = crate::config::SnapshotConfig { store: Some(url.clone()), ..config.snapshot.clone() };
        let store = crate::snapshot::SnapshotStore::open(&settings, &config.data_dir).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let max_component = config.plugins.max_component_bytes as u64;
        // Committed offsets go to the new cluster's offsets topic: wait for it before creating
        // anything, so a restore never stops half done for want of it.
        let deadline = tokio::time::Instant::now() + RESTORE_COMMIT_PATIENCE;
        while self.cluster.topic(OFFSETS_TOPIC).is_none() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(format!("{OFFSETS_TOPIC} does not exist yet; try again once the cluster is up")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let restored = crate::snapshot::restore::restore_cluster(&store, &self.plugins, &self.cluster, &self.control, max_component)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let offsets = restored.commits.len() as u32;
        let groups = self.commit_restored(restored.commits).await? as u32;
        Ok(Response::new(proto::RestoreClusterResponse {
            snapshot: Some(snapshot_info(&restored.manifest)),
            topics: restored.topics as u32,
            plugins: restored.plugins as u32,
            commands: restored.commands as u32,
            offsets,
            groups,
        }))
    }

    async fn restore_offsets(&self, request: Request<proto::RestoreOffsetsRequest>) -> Result<Response<proto::RestoreOffsetsResponse>, Status> {
        let request = request.into_inner();
        let commits = offsets::decode_snapshot(&request.commits).map_err(Status::invalid_argument)?;
        self.groups.restore_offsets(&request.group, &commits).await.map_err(|code| {
            let why = format!("committing group {}'s offsets: error code {code}", request.group);
            // A bad group id, or commits of another group, cannot succeed on a retry.
            if code == kafka_protocol::ResponseError::InvalidGroupId.code() { Status::invalid_argument(why) } else { Status::unavailable(why) }
        })?;
        Ok(Response::new(proto::RestoreOffsetsResponse {}))
    }

    type ReadObjectStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<proto::ObjectPart, Status>> + Send>>;

    async fn read_object(&self, request: Request<proto::ReadObjectRequest>) -> Result<Response<Self::ReadObjectStream>, Status> {
        let key = request.into_inner().key;
        let limit = crate::snapshot::install::readable_limit(&key, self.cluster.config()).ok_or_else(|| Status::invalid_argument(format!("{key} is not a snapshot object")))?;
        let bytes = self.snapshots.store().get(&key, limit).await.map_err(|e| if e.is_not_found() { Status::not_found(e.to_string()) } else { Status::unavailable(e.to_string()) })?;
        let parts: Vec<Result<proto::ObjectPart, Status>> = bytes.chunks(crate::snapshot::install::PART_BYTES).map(|c| Ok(proto::ObjectPart { data: c.to_vec() })).collect();
        Ok(Response::new(Box::pin(futures::stream::iter(parts))))
    }

    async fn transfer_leader(&self, request: Request<proto::TransferLeaderRequest>) -> Result<Response<proto::TransferLeaderResponse>, Status> {
        let req = request.into_inner();
        let r = self.control.replication();
        if !r.voters().contains(&req.to) {
            return Err(Status::invalid_argument(format!("node {} is not in the cluster", req.to)));
        }
        let group = self.group(&req.topic, req.partition)?;
        if r.leadership(group).leader != r.me() {
            return Err(Status::failed_precondition("this node does not lead that group; ask its leader"));
        }
        r.transfer_leader(group, req.to).await;
        Ok(Response::new(proto::TransferLeaderResponse {}))
    }

    async fn describe(&self, request: Request<proto::DescribeRequest>) -> Result<Response<proto::Binding>, Status> {
        let r = request.into_inner();
        Ok(Response::new(self.describe_binding(kind(&r.kind)?, &r.topic)?))
    }
}

/// A user as the admin API reports it: its mechanisms, never its keys.
fn user_info(name: &str, credentials: Option<&BTreeMap<Mechanism, ScramCredential>>) -> proto::User {
    let credentials = credentials
        .into_iter()
        .flatten()
        .map(|(m, c)| proto::UserCredential { mechanism: m.name().to_string(), iterations: c.iterations })
        .collect();
    proto::User { name: name.to_string(), credentials }
}
