//! A running node: opens the data dir, binds the listeners, starts the servers, and shuts them
//! down in the order that loses nothing (stop accepting, then flush and close every partition).

use std::collections::HashSet;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::cluster::control::Control;
use crate::cluster::metadata::{Command, MetadataMachine, Proposer};
use crate::cluster::{Cluster, Replicas};
use crate::groups::offsets::OFFSETS_TOPIC;
use crate::partition::Partition;
use crate::partition::replica::ReplicaSetup;
use crate::raft::driver::Driver;
use crate::raft::state_machine::StateMachine;
use crate::raft::transport::{Transport, TransportService};
use crate::raft::{METADATA_GROUP, Replication};
use crate::config::{Config, GroupsConfig};
use crate::error::Error;
use crate::admin::{self, AdminService};
use crate::cluster::retention;
use crate::groups::{Coordinator, OffsetsMachine};
use crate::plugins::Plugins;
use crate::kafka::{self, KafkaContext};
use crate::metrics::{self, Metrics};

const LOCK_FILE: &str = ".lock";
/// The metadata group's log: its name in logs and status, and its directory in the data dir.
const METADATA_LOG: &str = "__cluster_metadata";
const METADATA_LOG_DIR: &str = "metadata";
/// How often group timers (session expiry, rebalance deadlines) are checked: the precision of
/// every group timeout.
const GROUP_TICK: std::time::Duration = std::time::Duration::from_millis(100);
/// Consumer lag is published every this many group ticks (one second).
const LAG_EVERY_TICKS: u64 = 10;

/// A started node. Drop without [`Node::shutdown`] only in tests that simulate a crash.
pub struct Node {
    kafka_addr: SocketAddr,
    metrics_addr: SocketAddr,
    rpc_addr: SocketAddr,
    cluster: Arc<Cluster>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Held for the node's life: a second process on the same data dir fails to start.
    _lock: File,
}

impl Node {
    /// Validates `config`, recovers the data dir and starts serving.
    pub async fn start(config: Config) -> Result<Node, Error> {
        config.validate()?;
        let io = |what: String| move |source| Error::Io { what, source };
        std::fs::create_dir_all(&config.data_dir).map_err(io(format!("creating {}", config.data_dir.display())))?;
        let lock = File::create(config.data_dir.join(LOCK_FILE)).map_err(io("creating the data dir lock".into()))?;
        if lock.try_lock().is_err() {
            return Err(Error::DataDirLocked(config.data_dir.clone()));
        }
        let tls = kafka::tls_acceptor(&config.kafka.tls)?;
        if !config.kafka_addr.ip().is_loopback() {
            match (tls.is_some(), !config.kafka.sasl.mechanisms.is_empty()) {
                (false, false) => warn!(
                    kafka_addr = %config.kafka_addr,
                    "THE KAFKA LISTENER IS OPEN BEYOND THIS MACHINE WITHOUT TLS OR SASL: any client that reaches it reads, writes and deletes every topic, in clear text; set kafka.tls.cert-file, kafka.tls.key-file and kafka.sasl.mechanisms"
                ),
                (true, false) => warn!(
                    kafka_addr = %config.kafka_addr,
                    "THE KAFKA LISTENER IS OPEN BEYOND THIS MACHINE WITHOUT SASL: any client that reaches it reads, writes and deletes every topic; set kafka.sasl.mechanisms"
                ),
                (false, true) => warn!(
                    kafka_addr = %config.kafka_addr,
                    "the Kafka listener is open beyond this machine without TLS: passwords (PLAIN) and records cross the network in clear text; set kafka.tls.cert-file and kafka.tls.key-file"
                ),
                (true, true) => {}
            }
        }
        let kafka_listener = TcpListener::bind(config.kafka_addr).await.map_err(io(format!("binding the Kafka listener {}", config.kafka_addr)))?;
        let metrics_listener =
            TcpListener::bind(config.metrics_addr).await.map_err(io(format!("binding the metrics listener {}", config.metrics_addr)))?;
        let rpc_listener = TcpListener::bind(config.rpc_addr).await.map_err(io(format!("binding the admin API listener {}", config.rpc_addr)))?;
        let rpc_addr = rpc_listener.local_addr().map_err(io("reading the admin API address".into()))?;
        let kafka_addr = kafka_listener.local_addr().map_err(io("reading the Kafka address".into()))?;
        let metrics_addr = metrics_listener.local_addr().map_err(io("reading the metrics address".into()))?;
        let advertised = config.advertised_kafka_addr.unwrap_or(kafka_addr);
        let node_id = config.node_id;
        let me = u64::try_from(node_id).map_err(|_| Error::Io { what: "node id".into(), source: std::io::Error::other("the node id must be positive") })?;
        // A single node is a cluster of one voter: the same Raft path, with nobody to wait for.
        let mut peers = crate::config::parse_peers(&config.peers)?;
        if peers.is_empty() {
            peers.push((me, rpc_addr));
        }
        let voters: Vec<u64> = peers.iter().map(|(id, _)| *id).collect();
        let config = Arc::new(config);
        let (events_tx, events_rx) = mpsc::channel(config.raft.peer_queue);
        let (proposals_tx, proposals_rx) = mpsc::channel(config.raft.proposal_queue);
        let replicas = Replicas { voters: voters.clone(), proposals: proposals_tx.clone(), cache_bytes: config.raft.entry_cache_bytes };
        // Opening partitions, replaying the offsets topic and opening the plugin store read and
        // fsync files: keep them off the async workers.
        let cluster = Arc::new(blocking("opening the data dir", {
            let config = Arc::clone(&config);
            move || Cluster::open(config, replicas)
        })
        .await?);
        let groups = Arc::new(blocking("loading consumer groups", {
            let (cluster, groups_config) = (Arc::clone(&cluster), config.groups.clone());
            move || Coordinator::open(cluster, groups_config)
        })
        .await?);
        let metrics = Arc::new(Metrics::new(node_id));
        let plugins = Arc::new(blocking("opening the plugin store", {
            let (data_dir, plugins_config, metrics) = (config.data_dir.clone(), config.plugins.clone(), Arc::clone(&metrics));
            move || Plugins::open(&data_dir, &plugins_config, metrics)
        })
        .await?);
        let (shutdown, stop) = watch::channel(false);
        let mut tasks = Vec::new();
        let metadata_log = blocking("opening the metadata log", {
            let config = Arc::clone(&config);
            let setup = ReplicaSetup { group: METADATA_GROUP, voters: voters.clone(), proposals: proposals_tx.clone(), cache_bytes: config.raft.entry_cache_bytes, offsets_on_write: true, applied: Some(cluster.applied_index()) };
            move || {
                let mut settings = crate::cluster::partition_config(&config, &std::collections::BTreeMap::new());
                settings.log.segment_bytes = config.snapshot.metadata_segment_bytes;
                Partition::open_replica(METADATA_LOG, 0, &config.data_dir.join(METADATA_LOG_DIR), settings, setup).map_err(crate::cluster::Error::from)
            }
        })
        .await?;
        let timeout = std::time::Duration::from_millis(config.raft.metadata_timeout_ms);
        let replication = Arc::new(Replication::new(me, voters.clone(), events_tx.clone(), config.kafka.max_request_bytes as usize));
        let proposer = Arc::new(Proposer::new(replication, timeout));
        let rpc_tls = crate::rpc_tls::RpcTls::load(&config.rpc.tls)?;
        if rpc_tls.is_none() && !config.rpc_addr.ip().is_loopback() {
            warn!(
                rpc_addr = %config.rpc_addr,
                "THE RPC PORT IS OPEN BEYOND THIS MACHINE WITHOUT TLS (--insecure-rpc): anyone who reaches it can load plugins, change bindings and send Raft messages; set rpc.tls.ca-file, rpc.tls.cert-file and rpc.tls.key-file"
            );
        }
        let transport = Transport::start(me, &peers, config.raft.peer_queue, events_tx.clone(), rpc_tls.clone());
        let offsets_groups = Arc::clone(&groups);
        let machine_for = Box::new(move |log: &Arc<Partition>| {
            (log.topic() == OFFSETS_TOPIC).then(|| Box::new(OffsetsMachine::new(Arc::clone(&offsets_groups), Arc::clone(log))) as Box<dyn StateMachine>)
        });
        let mut driver = Driver::new(config.raft.clone(), Arc::clone(proposer.replication()), transport, events_tx.clone(), Arc::clone(&metrics), machine_for);
        let store = Arc::new(
            crate::snapshot::SnapshotStore::open(&config.snapshot, &config.data_dir)
                .map_err(|e| Error::Io { what: "opening the snapshot store".into(), source: std::io::Error::other(e.to_string()) })?,
        );
        let peer_addrs = peers.iter().copied().collect();
        driver.set_snapshot_source(Arc::new(crate::snapshot::install::Fetcher::new(Arc::clone(&store), Arc::clone(&plugins), peer_addrs, Arc::clone(&config), rpc_tls.clone())));
        // Every node drops a deleted topic's offsets from the groups it coordinates.
        let forgetting = Arc::clone(&groups);
        let topic_deleted = Box::new(move |topic: String| {
            let groups = Arc::clone(&forgetting);
            tokio::spawn(async move { groups.forget_topic(&topic).await });
        });
        let metadata = MetadataMachine::new(Arc::clone(&cluster), Arc::clone(&plugins), Arc::clone(&proposer), topic_deleted);
        let raft_error = |e: raft::Error| Error::Io { what: "starting raft".into(), source: std::io::Error::other(e.to_string()) };
        let metadata_log_handle = Arc::clone(&metadata_log);
        driver.add_metadata_group(metadata_log, cluster.applied_index(), Box::new(metadata)).map_err(raft_error)?;
        for topic in cluster.topics() {
            for p in &topic.partitions {
                driver.add_partition(crate::cluster::group_of(topic.id, p.index()), Arc::clone(p)).map_err(raft_error)?;
            }
        }
        tasks.push(tokio::spawn(driver.run(events_rx, proposals_rx, stop.clone())));
        let mut bootstrapping = tokio::spawn(bootstrap(Arc::clone(&cluster), Arc::clone(&proposer), node_id, advertised, config.groups.clone(), stop.clone()));
        if voters.len() == 1 && tokio::time::timeout(timeout, &mut bootstrapping).await.is_ok() {
            // A sole voter needs nobody else: it serves with its metadata settled.
            debug!("bootstrapped");
        } else {
            tasks.push(bootstrapping);
        }
        let nodes = rpc_tls.is_some().then(|| voters.clone());
        let transport_service = TransportService::server(events_tx.clone(), config.kafka.max_request_bytes.saturating_mul(2) as usize, nodes, metrics.raft.refused.clone());
        let control = Arc::new(Control::new(Arc::clone(&cluster), proposer));
        let ctx = Arc::new(KafkaContext {
            cluster: Arc::clone(&cluster),
            node_id,
            advertised,
            metrics: Arc::clone(&metrics),
            groups: Arc::clone(&groups),
            plugins: Arc::clone(&plugins),
            control: Arc::clone(&control),
            response_budget: kafka::ResponseBudget::new(config.kafka.fetch_memory_bytes),
            authorizer: crate::security::Authorizer::new(!config.kafka.sasl.mechanisms.is_empty(), &config.kafka.super_users),
        });
        let snapshots = Arc::new(crate::snapshot::Snapshots::new(
            Arc::clone(&store),
            Arc::clone(&plugins),
            Arc::clone(control.replication()),
            Arc::clone(&metrics),
            Arc::clone(&cluster),
            Arc::clone(&metadata_log_handle),
            &config.snapshot,
        ));
        tasks.extend([
            tokio::spawn(Arc::clone(&snapshots).run(std::time::Duration::from_millis(config.snapshot.check_interval_ms), stop.clone())),
            tokio::spawn(kafka::serve(kafka_listener, ctx, tls, stop.clone())),
            tokio::spawn(tick_groups(Arc::clone(&groups), Arc::clone(&metrics), stop.clone())),
            tokio::spawn(retention::run(Arc::clone(&cluster), Arc::clone(&plugins), stop.clone())),
            tokio::spawn(admin::serve(rpc_listener, AdminService::new(Arc::clone(&cluster), plugins, control, snapshots, groups, rpc_tls), transport_service, metrics.rpc_tls_refused.clone(), stop.clone())),
            tokio::spawn(metrics::serve(metrics_listener, metrics, stop)),
        ]);
        info!(%kafka_addr, %metrics_addr, %rpc_addr, data_dir = %config.data_dir.display(), "sluice is serving");
        Ok(Node { kafka_addr, metrics_addr, rpc_addr, cluster, shutdown, tasks, _lock: lock })
    }

    /// The bound Kafka address (the real port when configured with port 0).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addr
    }

    /// The bound admin API address.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Stops accepting clients, then flushes and closes every partition.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let cluster = self.cluster;
        let _ = tokio::task::spawn_blocking(move || cluster.close()).await;
        info!("sluice stopped cleanly");
    }
}

/// Runs `open` on a blocking thread; a panic there becomes an error naming `what`.
async fn blocking<T: Send + 'static, E: Into<Error> + Send + 'static>(
    what: &str,
    open: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(open).await {
        Ok(opened) => opened.map_err(Into::into),
        Err(e) => Err(Error::Io { what: what.to_string(), source: std::io::Error::other(e.to_string()) }),
    }
}

/// Settles the cluster id, registers this node's Kafka address with the metadata group and makes
/// sure the offsets topic exists, retrying each until it is applied (a leader must be elected
/// first).
async fn bootstrap(cluster: Arc<Cluster>, proposer: Arc<Proposer>, node_id: i32, advertised: SocketAddr, groups: GroupsConfig, mut stop: watch::Receiver<bool>) {
    let (offsets_partitions, offsets_segment_bytes) = (groups.offsets_topic_partitions, groups.offsets_segment_bytes);
    let mut cluster_id_settled = false;
    while !cluster_id_settled {
        match proposer.propose(Command::InitCluster { cluster_id: cluster.cluster_id() }).await {
            Ok(_) => cluster_id_settled = true,
            Err(e) => {
                debug!(cause = %e, "cluster id pending");
                if pause_unless_stopping(&mut stop).await {
                    return;
                }
            }
        }
    }
    let registered = |c: &Cluster| c.brokers().get(&node_id) == Some(&advertised.to_string());
    while !registered(&cluster) {
        if let Err(e) = proposer.propose(Command::RegisterBroker { node: node_id, addr: advertised.to_string() }).await {
            debug!(cause = %e, "broker registration pending");
            if pause_unless_stopping(&mut stop).await {
                return;
            }
        }
    }
    while cluster.topic(OFFSETS_TOPIC).is_none() {
        let configs = std::collections::BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string()), ("segment.bytes".to_string(), offsets_segment_bytes.to_string())]);
        let command = Command::CreateTopic { name: OFFSETS_TOPIC.into(), id: uuid::Uuid::new_v4(), partitions: offsets_partitions, replication_factor: -1, configs, start_offsets: Vec::new() };
        if let Err(e) = proposer.propose(command).await {
            debug!(cause = %e, "offsets topic creation pending");
            if pause_unless_stopping(&mut stop).await {
                return;
            }
        }
    }
    // Group coordinators are the offsets partitions' leaders: wait for them too, so a sole
    // voter answers its first group request instead of NOT_COORDINATOR.
    if let Some(offsets) = cluster.topic(OFFSETS_TOPIC) {
        tokio::select! {
            _ = crate::cluster::control::wait_for_leaders(proposer.replication(), &offsets, 0, proposer.timeout()) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
}

/// Waits before a bootstrap step is retried; true if the node is stopping instead.
async fn pause_unless_stopping(stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

/// Drives the group coordinator's timers until shutdown.
async fn tick_groups(groups: Arc<Coordinator>, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(GROUP_TICK);
    let mut published: HashSet<(String, String, String)> = HashSet::new();
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                groups.tick();
                round += 1;
                if round.is_multiple_of(LAG_EVERY_TICKS) {
                    publish_lag(&groups, &metrics, &mut published);
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Sets the consumer-lag gauges, and drops those of offsets no longer committed here.
fn publish_lag(groups: &Coordinator, metrics: &Metrics, published: &mut HashSet<(String, String, String)>) {
    let mut now = HashSet::new();
    for (group, topic, partition, lag) in groups.lags() {
        let labels = (group, topic, partition.to_string());
        metrics.consumer_group_lag.with_label_values(&[labels.0.as_str(), labels.1.as_str(), labels.2.as_str()]).set(lag);
        now.insert(labels);
    }
    for gone in published.difference(&now) {
        let _ = metrics.consumer_group_lag.remove_label_values(&[gone.0.as_str(), gone.1.as_str(), gone.2.as_str()]);
    }
    *published = now;
}
