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
        // Opening partitions, replaying the offsets topic and opening the plugin store read and
        // fsync files: keep them off the async workers.
        let cluster = Arc::new(blocking("opening the data dir", {
            let config = Arc::clone(&config);
            move || Cluster::open(config)
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
