//! A running node: opens the data dir, binds the listeners, starts the servers, and shuts them
//! down in the order that loses nothing (stop accepting, then flush and close every partition).

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::Error;
use crate::admin::{self, AdminService};
use crate::cluster::retention;
use crate::groups::Coordinator;
use crate::plugins::Plugins;
use crate::kafka::{self, KafkaContext};
use crate::metrics::{self, Metrics};

const LOCK_FILE: &str = ".lock";
/// How often group timers (session expiry, rebalance deadlines) are checked: the precision of
/// every group timeout.
const GROUP_TICK: std::time::Duration = std::time::Duration::from_millis(100);

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
        let kafka_listener = TcpListener::bind(config.kafka_addr).await.map_err(io(format!("binding the Kafka listener {}", config.kafka_addr)))?;
        let metrics_listener =
            TcpListener::bind(config.metrics_addr).await.map_err(io(format!("binding the metrics listener {}", config.metrics_addr)))?;
        let rpc_listener = TcpListener::bind(config.rpc_addr).await.map_err(io(format!("binding the admin API listener {}", config.rpc_addr)))?;
        let rpc_addr = rpc_listener.local_addr().map_err(io("reading the admin API address".into()))?;
        let kafka_addr = kafka_listener.local_addr().map_err(io("reading the Kafka address".into()))?;
        let metrics_addr = metrics_listener.local_addr().map_err(io("reading the metrics address".into()))?;
        let advertised = config.advertised_kafka_addr.unwrap_or(kafka_addr);
        let node_id = config.node_id;
        let config = Arc::new(config);
        let cluster = {
            let config = Arc::clone(&config);
            // Opening partitions reads and fsyncs files: keep it off the async workers.
            tokio::task::spawn_blocking(move || Cluster::open(config)).await.map_err(|e| Error::Io {
                what: "opening the data dir".into(),
                source: std::io::Error::other(e.to_string()),
            })??
        };
        let cluster = Arc::new(cluster);
        let groups = {
            let cluster = Arc::clone(&cluster);
            let groups_config = config.groups.clone();
            // Replaying the offsets topic reads files: keep it off the async workers.
            tokio::task::spawn_blocking(move || Coordinator::open(cluster, groups_config)).await.map_err(|e| Error::Io {
                what: "loading consumer groups".into(),
                source: std::io::Error::other(e.to_string()),
            })??
        };
        let groups = Arc::new(groups);
        let metrics = Arc::new(Metrics::new(node_id));
        let plugins = {
            let (data_dir, plugins_config, metrics) = (config.data_dir.clone(), config.plugins.clone(), Arc::clone(&metrics));
            tokio::task::spawn_blocking(move || Plugins::open(&data_dir, &plugins_config, metrics)).await.map_err(|e| Error::Io {
                what: "opening the plugin store".into(),
                source: std::io::Error::other(e.to_string()),
            })??
        };
        let plugins = Arc::new(plugins);
        let (shutdown, stop) = watch::channel(false);
        let ctx = Arc::new(KafkaContext { cluster: Arc::clone(&cluster), node_id, advertised, metrics: Arc::clone(&metrics), groups: Arc::clone(&groups), plugins: Arc::clone(&plugins) });
        let tasks = vec![
            tokio::spawn(kafka::serve(kafka_listener, ctx, stop.clone())),
            tokio::spawn(tick_groups(groups, stop.clone())),
            tokio::spawn(retention::run(Arc::clone(&cluster), Arc::clone(&plugins), Arc::clone(&metrics), stop.clone())),
            tokio::spawn(admin::serve(rpc_listener, AdminService::new(Arc::clone(&cluster), plugins), stop.clone())),
            tokio::spawn(metrics::serve(metrics_listener, metrics, stop)),
        ];
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

/// Drives the group coordinator's timers until shutdown.
async fn tick_groups(groups: Arc<Coordinator>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(GROUP_TICK);
    loop {
        tokio::select! {
            _ = ticks.tick() => groups.tick(),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
