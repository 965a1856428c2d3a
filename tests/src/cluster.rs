//! A cluster of real `sluice serve` processes on loopback, with a [`FaultProxy`] on every
//! directed link between them, for replication tests under crashes, pauses and a bad network.
//!
//! Node `i` (0-based) runs with `--node-id i+1`. Its `--peers` names its own real rpc address
//! and, for every other node `j`, the proxy `i -> j`, which forwards to `j`'s real rpc port. So
//! all Raft traffic from `i` to `j` crosses proxy `(i, j)`, and the two directions of a link can
//! be faulted independently. Kafka clients connect to the nodes directly.
//!
//! Everything is dropped in order: processes first (killed), then the proxies and their
//! runtime, then the data dirs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tempfile::TempDir;

use crate::proxy::FaultProxy;
use crate::{Broker, RawClient, client_config, free_port};

/// N nodes, replicated, each link behind its own fault proxy.
pub struct TestCluster {
    // Field order is drop order: processes die before their proxies and data dirs go.
    brokers: Vec<Broker>,
    /// `((from, to), proxy)` for every ordered pair of distinct nodes.
    proxies: Vec<((usize, usize), FaultProxy)>,
    /// Runs the proxies' tasks; only held.
    _runtime: tokio::runtime::Runtime,
    dir: TempDir,
}

impl TestCluster {
    /// Starts `n` nodes of `binary` (pass `env!("CARGO_BIN_EXE_sluice")`) with `env` set on
    /// each (`{node}` in a value becomes the node's id), and returns once every process reported
    /// its listeners. A metadata leader is
    /// elected shortly after; [`TestCluster::wait_for_leader`] waits for partition leaders.
    ///
    /// Ports are picked free but only bound when the processes start, so another process can
    /// take one in between: a cluster that fails to start is torn down and tried again on new
    /// ports.
    pub fn start(binary: impl Into<PathBuf>, n: usize, env: &[(&str, &str)]) -> Result<TestCluster> {
        let binary = binary.into();
        let mut attempt = 1;
        loop {
            match TestCluster::try_start(&binary, n, env) {
                Ok(cluster) => return Ok(cluster),
                Err(e) if attempt < 3 => eprintln!("cluster start attempt {attempt} failed, retrying on new ports: {e:#}"),
                Err(e) => return Err(e),
            }
            attempt += 1;
        }
    }

    fn try_start(binary: &std::path::Path, n: usize, env: &[(&str, &str)]) -> Result<TestCluster> {
        let dir = tempfile::tempdir()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .context("proxy runtime")?;
        let mut rpc_ports: Vec<u16> = Vec::new();
        while rpc_ports.len() < n {
            let port = free_port();
            if !rpc_ports.contains(&port) {
                rpc_ports.push(port);
            }
        }
        let rpc_addr = |j: usize| SocketAddr::from(([127, 0, 0, 1], rpc_ports[j]));
        let mut proxies = Vec::new();
        for from in 0..n {
            for to in (0..n).filter(|&to| to != from) {
                // A proxy must not sit on a port picked for a node.
                let proxy = loop {
                    let proxy = runtime.block_on(FaultProxy::start(rpc_addr(to))).context("starting a fault proxy")?;
                    if !rpc_ports.contains(&proxy.addr().port()) {
                        break proxy;
                    }
                };
                proxies.push(((from, to), proxy));
            }
        }
        let mut brokers = Vec::new();
        for (i, &rpc_port) in rpc_ports.iter().enumerate() {
            let peers: Vec<String> = (0..n)
                .map(|j| {
                    let addr = if j == i { rpc_addr(i) } else { proxy_addr(&proxies, i, j) };
                    format!("{}@{addr}", j + 1)
                })
                .collect();
            let mut broker = Broker::new(binary, &dir.path().join(format!("node{}", i + 1)))
                .rpc_port(rpc_port)
                .node_id(i as i32 + 1)
                .peers(&peers.join(","));
            for (k, v) in env {
                broker = broker.env(k, &v.replace("{node}", &(i + 1).to_string()));
            }
            brokers.push(broker);
        }
        let mut cluster = TestCluster { brokers, proxies, _runtime: runtime, dir };
        for (i, broker) in cluster.brokers.iter_mut().enumerate() {
            broker.start().with_context(|| format!("starting node {i}"))?;
        }
        Ok(cluster)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.brokers.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.brokers.is_empty()
    }

    /// Every node's Kafka address, comma-separated (dead ones included: clients skip them).
    pub fn bootstrap(&self) -> String {
        self.brokers.iter().map(Broker::bootstrap).collect::<Vec<_>>().join(",")
    }

    /// The Kafka addresses of the nodes that are running and not paused.
    pub fn live_bootstrap(&self) -> String {
        self.live().map(|i| self.brokers[i].bootstrap()).collect::<Vec<_>>().join(",")
    }

    /// Node `i` (0-based; its node id is `i + 1`).
    pub fn node(&self, i: usize) -> &Broker {
        &self.brokers[i]
    }

    /// Node `i`, mutably (to pause, resume, terminate...).
    pub fn node_mut(&mut self, i: usize) -> &mut Broker {
        &mut self.brokers[i]
    }

    /// Whether node `i` has a process that is not paused.
    pub fn is_live(&self, i: usize) -> bool {
        self.brokers[i].pid().is_some() && !self.brokers[i].is_paused()
    }

    /// The nodes that are running and not paused.
    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.brokers.len()).filter(|&i| self.is_live(i))
    }

    /// Nodes whose process ended although the test did not stop it (crashed, or signalled
    /// from outside the test).
    pub fn unexpected_exits(&mut self) -> Vec<usize> {
        (0..self.brokers.len()).filter(|&i| self.brokers[i].pid().is_some() && !self.brokers[i].is_running()).collect()
    }

    /// SIGKILL node `i`.
    pub fn kill9(&mut self, i: usize) {
        self.brokers[i].kill9();
    }

    /// Starts node `i` again on its data dir and ports.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.brokers[i].start().with_context(|| format!("restarting node {i}"))
    }

    /// SIGSTOP node `i`.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.brokers[i].pause()
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.brokers[i].resume()
    }

    /// The proxy carrying Raft traffic from node `from` to node `to`.
    pub fn proxy(&self, from: usize, to: usize) -> &FaultProxy {
        &self.proxies.iter().find(|((f, t), _)| (*f, *t) == (from, to)).expect("no such link").1
    }

    /// Partitions (or heals) every link from and to node `i`.
    pub fn isolate(&self, i: usize, on: bool) {
        for ((from, to), proxy) in &self.proxies {
            if *from == i || *to == i {
                proxy.set_partitioned(on);
            }
        }
    }

    /// Adds `d` of one-way latency on every link.
    pub fn set_latency_all(&self, d: Duration) {
        self.proxies.iter().for_each(|(_, p)| p.set_latency(d));
    }

    /// Sets the per-chunk loss (retransmission stall) probability on every link.
    pub fn set_loss_all(&self, p: f64) {
        self.proxies.iter().for_each(|(_, proxy)| proxy.set_loss(p));
    }

    /// Removes every fault from every link.
    pub fn heal_all(&self) {
        for (_, proxy) in &self.proxies {
            proxy.set_partitioned(false);
            proxy.set_latency(Duration::ZERO);
            proxy.set_loss(0.0);
            proxy.set_reset_probability(0.0);
            proxy.set_slow_close(Duration::ZERO);
        }
    }

    /// The leader of `topic`/`partition` as the first live node that names one says (through
    /// librdkafka's Metadata), as a node index. `None` if no live node knows a leader.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<usize> {
        self.live().find_map(|i| self.leader_via_rdkafka(i, topic, partition).ok().flatten())
    }

    /// What node `i` reports (librdkafka Metadata, bootstrapped to that node alone) as the
    /// leader of `topic`/`partition`.
    fn leader_via_rdkafka(&self, i: usize, topic: &str, partition: i32) -> Result<Option<usize>> {
        let consumer: BaseConsumer = client_config(&self.brokers[i].bootstrap()).create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
        let Some(p) = t.partitions().iter().find(|p| p.id() == partition) else { return Ok(None) };
        Ok(self.index_of(p.leader()))
    }

    /// What node `i` itself answers, on a raw connection to it alone, as the leader of
    /// `topic`/`partition` (a node index), or `None` if it names none.
    pub fn leader_reported_by(&self, i: usize, topic: &str, partition: i32) -> Result<Option<usize>> {
        let mut client = RawClient::connect(self.brokers[i].addr())?;
        let mut request = MetadataRequest::default();
        let mut t = MetadataRequestTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
        request.topics = Some(vec![t]);
        let response = client.send(12, &request)?;
        let Some(t) = response.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic)) else {
            return Ok(None);
        };
        let Some(p) = t.partitions.iter().find(|p| p.partition_index == partition) else { return Ok(None) };
        Ok(self.index_of(p.leader_id.0))
    }

    /// Waits until every live node names the same leader for each of `partitions` partitions
    /// of `topic`; returns those leaders.
    pub fn wait_for_agreement(&self, topic: &str, partitions: i32, limit: Duration) -> Result<Vec<usize>> {
        let deadline = Instant::now() + limit;
        loop {
            let views: Vec<Vec<Option<usize>>> = self
                .live()
                .map(|i| (0..partitions).map(|p| self.leader_reported_by(i, topic, p).ok().flatten()).collect())
                .collect();
            if let Some(first) = views.first()
                && first.iter().all(Option::is_some)
                && views.iter().all(|v| v == first)
            {
                return Ok(first.iter().flatten().copied().collect());
            }
            if Instant::now() >= deadline {
                bail!("nodes still disagree on the leaders of {topic} after {limit:?}: {}", self.leaders_by_node(topic, partitions));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What every live node reports as the leader of each of `partitions` partitions of
    /// `topic` (`node i: [leader of 0, leader of 1, ...]`, node indexes), for diagnostics.
    pub fn leaders_by_node(&self, topic: &str, partitions: i32) -> String {
        self.live()
            .map(|i| {
                let leaders: Vec<String> = (0..partitions)
                    .map(|p| match self.leader_reported_by(i, topic, p) {
                        Ok(Some(l)) => l.to_string(),
                        Ok(None) => "-".to_string(),
                        Err(e) => format!("error: {e}"),
                    })
                    .collect();
                format!("node {i}: [{}]", leaders.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Waits until a live node names a leader of `topic`/`partition` other than `excluding`,
    /// and that leader (live) confirms it; returns its index.
    pub fn wait_for_leader(&self, topic: &str, partition: i32, excluding: Option<usize>, limit: Duration) -> Result<usize> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(leader) = self.leader_of_excluding(topic, partition, excluding)
                && self.is_live(leader)
                && self.leader_reported_by(leader, topic, partition).ok().flatten() == Some(leader)
            {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                bail!("no leader for {topic}/{partition} (excluding {excluding:?}) after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Like [`TestCluster::leader_of`], skipping answers that name `excluding` (a stale view)
    /// and not asking `excluding` itself.
    fn leader_of_excluding(&self, topic: &str, partition: i32, excluding: Option<usize>) -> Option<usize> {
        self.live()
            .filter(|&i| Some(i) != excluding)
            .filter_map(|i| self.leader_via_rdkafka(i, topic, partition).ok().flatten())
            .find(|&l| Some(l) != excluding)
    }

    /// The data dirs' parent.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn index_of(&self, node_id: i32) -> Option<usize> {
        usize::try_from(node_id).ok().filter(|&id| (1..=self.brokers.len()).contains(&id)).map(|id| id - 1)
    }
}

fn proxy_addr(proxies: &[((usize, usize), FaultProxy)], from: usize, to: usize) -> SocketAddr {
    proxies.iter().find(|((f, t), _)| (*f, *t) == (from, to)).expect("a proxy per link").1.addr()
}
