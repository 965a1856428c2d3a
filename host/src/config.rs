//! Node configuration: a TOML file, overridden by `SLUICE_*` environment variables, overridden by
//! command-line flags. Every limit the broker enforces is a named field here.
//!
//! Environment variables name a key with `__` between levels and `_` for `-`:
//! `SLUICE_LOG__SEGMENT_BYTES=1048576` sets `log.segment-bytes`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable did not parse.
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// The values parsed but make no sense together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything a node needs to start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// This node's id, reported to clients as the broker id.
    /// Default: 1
    pub node_id: i32,
    /// Where all partitions and cluster metadata live.
    /// Default: "./sluice-data"
    pub data_dir: PathBuf,
    /// The Kafka listener.
    /// Default: "127.0.0.1:9092"
    pub kafka_addr: SocketAddr,
    /// The address clients are told to connect to; the bound Kafka address when unset.
    /// Default: unset
    pub advertised_kafka_addr: Option<SocketAddr>,
    /// The gRPC port shared by the admin API and Raft traffic.
    /// Default: "127.0.0.1:9093"
    pub rpc_addr: SocketAddr,
    /// Security of the rpc port.
    pub rpc: RpcConfig,
    /// The Prometheus metrics endpoint.
    /// Default: "127.0.0.1:9644"
    pub metrics_addr: SocketAddr,
    /// Kafka protocol limits.
    pub kafka: KafkaConfig,
    /// Topic defaults and storage behaviour.
    pub log: LogDefaults,
    /// Consumer group coordination.
    pub groups: GroupsConfig,
    /// WebAssembly plugins.
    pub plugins: PluginsConfig,
    /// The cluster's nodes as `id@host:port` (their `--rpc-addr`), this node included. Empty:
    /// a single node, a cluster of one voter.
    /// Default: []
    pub peers: Vec<String>,
    /// Raft replication.
    pub raft: RaftConfig,
    /// Snapshots and the object store they are kept in.
    pub snapshot: SnapshotConfig,
}

/// Raft timing and queue limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RaftConfig {
    /// Length of one Raft tick.
    /// Default: 100
    pub tick_ms: u64,
    /// Ticks without a leader before a follower campaigns (randomised up to twice this).
    /// Default: 4
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    /// Default: 1
    pub heartbeat_ticks: usize,
    /// Messages queued per peer before further ones are dropped and the peer reported unreachable.
    /// Default: 65536
    pub peer_queue: usize,
    /// Proposals queued for the Raft driver before produces are refused as busy.
    /// Default: 65536
    pub proposal_queue: usize,
    /// Bytes of recent entries each replica keeps in memory for replication and apply.
    /// Default: 4194304 (4 MiB)
    pub entry_cache_bytes: usize,
    /// Largest append message sent to a follower.
    /// Default: 4194304 (4 MiB)
    pub max_append_bytes: u64,
    /// Append messages in flight per follower.
    /// Default: 256
    pub max_inflight_appends: usize,
    /// How long an admin request waits for its metadata change to apply.
    /// Default: 10000
    pub metadata_timeout_ms: u64,
    /// How long a leader waits for a follower to fetch and install a snapshot it was sent
    /// before taking a new one and sending that.
    /// Default: 60000
    pub snapshot_install_timeout_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            tick_ms: 100,
            election_ticks: 4,
            heartbeat_ticks: 1,
            peer_queue: 65536,
            proposal_queue: 65536,
            entry_cache_bytes: 4 << 20,
            max_append_bytes: 4 << 20,
            max_inflight_appends: 256,
            metadata_timeout_ms: 10_000,
            snapshot_install_timeout_ms: 60_000,
        }
    }
}

/// Parses `--peers` entries: `id@host:port`.
pub fn parse_peers(peers: &[String]) -> Result<Vec<(u64, SocketAddr)>, ConfigError> {
    let mut out = Vec::new();
    for p in peers {
        let bad = || ConfigError::Invalid(format!("peer {p:?} must look like 1@127.0.0.1:9093"));
        let (id, addr) = p.split_once('@').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        let addr = addr.trim().parse::<SocketAddr>().or_else(|_| {
            use std::net::ToSocketAddrs;
            addr.trim().to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(bad)
        })?;
        if id == 0 || out.iter().any(|(i, _)| *i == id) {
            return Err(ConfigError::Invalid(format!("peer ids must be unique and above 0: {p:?}")));
        }
        out.push((id, addr));
    }
    Ok(out)
}

/// Snapshots of every Raft group's state, and the object store that keeps them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SnapshotConfig {
    /// `file:///path`, `memory:///` or `s3://bucket/prefix` (S3 settings from the usual `AWS_*`
    /// variables; needs a build with the `s3` feature). The URL's path is the cluster's prefix:
    /// give each cluster its own.
    /// Default: none (`<data-dir>/object-store`, local to the node)
    pub store: Option<String>,
    /// Whether every node sees the same store (a shared `file://` path). S3 always is; a
    /// follower then reads a leader's snapshot from the store rather than from the leader.
    /// Default: false
    pub shared: bool,
    /// Endpoint of an S3-compatible server (`http://` is allowed).
    /// Default: none (AWS)
    pub s3_endpoint: Option<String>,
    /// Snapshot uploads and downloads running at once on this node.
    /// Default: 2
    pub max_concurrent: usize,
    /// Snapshots kept per group; older ones are deleted, manifest first.
    /// Default: 3
    pub retain: usize,
    /// Raw bytes per chunk (at most 1 MiB, so a codec call stays inside a plugin's limits).
    /// Default: 1048576
    pub chunk_bytes: usize,
    /// The largest state a snapshot may hold, written or read.
    /// Default: 1073741824 (1 GiB)
    pub max_snapshot_bytes: u64,
    /// How often each group's snapshot trigger is asked whether to snapshot.
    /// Default: 5000
    pub check_interval_ms: u64,
    /// Entries kept in the metadata log before a snapshot when it is compacted, so a follower
    /// that little behind catches up from the log rather than from the snapshot.
    /// Default: 1000
    pub keep_entries: u64,
    /// Segment size of the metadata group's log: after a snapshot, whole segments below it
    /// are deleted, so smaller segments keep less of the log.
    /// Default: 8388608 (8 MiB)
    pub metadata_segment_bytes: u64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            store: None,
            shared: false,
            s3_endpoint: None,
            max_concurrent: 2,
            retain: 3,
            chunk_bytes: 1 << 20,
            max_snapshot_bytes: 1 << 30,
            check_interval_ms: 5000,
            keep_entries: 1000,
            metadata_segment_bytes: 8 << 20,
        }
    }
}

/// Limits and schedules of WebAssembly plugins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct PluginsConfig {
    /// Longest one plugin call may run before it is interrupted.
    /// Default: 100
    pub call_timeout_ms: u64,
    /// Linear memory one plugin instance may grow to.
    /// Default: 67108864 (64 MiB)
    pub max_memory_bytes: usize,
    /// Largest result a plugin call may return.
    /// Default: 33554432 (32 MiB)
    pub max_output_bytes: usize,
    /// Largest component accepted for loading.
    /// Default: 33554432 (32 MiB)
    pub max_component_bytes: usize,
    /// Consecutive failures after which a plugin is quarantined (its kind's fallback applies).
    /// Default: 5
    pub quarantine_after_failures: u32,
    /// How often every partition's retention policy is evaluated.
    /// Default: 300000 (5 minutes, as Kafka's `log.retention.check.interval.ms`)
    pub retention_check_interval_ms: u64,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            call_timeout_ms: 100,
            max_memory_bytes: 64 << 20,
            max_output_bytes: 32 << 20,
            max_component_bytes: 32 << 20,
            quarantine_after_failures: 5,
            retention_check_interval_ms: 300_000,
        }
    }
}

/// Consumer group coordination (Kafka's `group.*` and `offsets.*` broker settings).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct GroupsConfig {
    /// Partitions of the internal `__consumer_offsets` topic, fixed when it is first created.
    /// Default: 8
    pub offsets_topic_partitions: i32,
    /// Smallest `session.timeout.ms` a consumer may use.
    /// Default: 6000
    pub min_session_timeout_ms: u64,
    /// Largest `session.timeout.ms` a consumer may use.
    /// Default: 1800000
    pub max_session_timeout_ms: u64,
    /// How long a new group waits for more members before its first assignment.
    /// Default: 3000
    pub initial_rebalance_delay_ms: u64,
    /// Largest metadata string stored with a committed offset.
    /// Default: 4096
    pub max_metadata_bytes: usize,
    /// How long committed offsets are kept once their group has no members (counted from the
    /// later of the commit and the group becoming empty), or after the commit for groups that
    /// never had members (Kafka's `offsets.retention.minutes`, in ms). A commit naming its own
    /// retention (OffsetCommit v2-v4) keeps that instead.
    /// Default: 604800000 (7 days)
    pub offsets_retention_ms: i64,
    /// How often expired offsets are looked for (Kafka's `offsets.retention.check.interval.ms`).
    /// Default: 600000
    pub offsets_retention_check_interval_ms: u64,
    /// Segment size of the `__consumer_offsets` partitions, fixed when the topic is first
    /// created (Kafka's `offsets.topic.segment.bytes`): their logs are compacted below a snapshot
    /// a whole segment at a time.
    /// Default: 104857600 (100 MiB)
    pub offsets_segment_bytes: u64,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            offsets_topic_partitions: 8,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3000,
            max_metadata_bytes: 4096,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offsets_segment_bytes: 100 << 20,
        }
    }
}

/// TLS on the Kafka listener (Kafka's `SSL` security protocol): on when both files are set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaTls {
    /// PEM certificate chain, the broker's own certificate first.
    /// Default: none
    pub cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    /// Default: none
    pub key_file: Option<PathBuf>,
}

/// Mutual TLS on the rpc port (Raft transport and admin API): on when all three files are set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RpcTlsFiles {
    /// PEM certificate(s) of the cluster's CA, which signs every node's and admin's certificate.
    /// Default: none
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain of this node: names `node-<id>` (DNS) and the rpc address clients
    /// connect to.
    /// Default: none
    pub cert_file: Option<PathBuf>,
    /// PEM private key of that certificate.
    /// Default: none
    pub key_file: Option<PathBuf>,
}

/// Security of the rpc port.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RpcConfig {
    /// Mutual TLS.
    pub tls: RpcTlsFiles,
    /// Serve the rpc port beyond loopback without TLS (`--insecure-rpc`): anyone who reaches it
    /// can load plugins and send Raft messages.
    /// Default: false
    pub insecure: bool,
}

/// SASL on the Kafka listener (Kafka's `SASL_PLAINTEXT`, or `SASL_SSL` with TLS on): on when a
/// mechanism is listed, and with it ACLs are enforced on every request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaSasl {
    /// Mechanisms clients may authenticate with: any of `SCRAM-SHA-256`, `SCRAM-SHA-512`,
    /// `PLAIN` (checked against the users' SCRAM credentials).
    /// Default: [] (no SASL)
    pub mechanisms: Vec<String>,
    /// Largest request a client may send before it has authenticated (Kafka's
    /// `sasl.server.max.receive.size`).
    /// Default: 524288
    pub max_receive_bytes: u32,
}

impl Default for KafkaSasl {
    fn default() -> Self {
        KafkaSasl { mechanisms: Vec::new(), max_receive_bytes: 512 * 1024 }
    }
}

/// Limits of the Kafka listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaConfig {
    /// TLS for clients.
    pub tls: KafkaTls,
    /// SASL for clients.
    pub sasl: KafkaSasl,
    /// Principals (`User:name`, or a bare user name) allowed every operation whatever the ACLs
    /// say, when SASL is on.
    /// Default: []
    pub super_users: Vec<String>,
    /// Largest request frame accepted; a larger size prefix closes the connection before any
    /// allocation (Kafka's `socket.request.max.bytes`).
    /// Default: 104857600 (100 MiB)
    pub max_request_bytes: u32,
    /// Requests one connection may have in flight; responses still go out in request order.
    /// Default: 16
    pub max_in_flight_per_connection: usize,
    /// Concurrent client connections; further ones are closed at accept.
    /// Default: 10000
    pub max_connections: usize,
    /// Concurrent client connections from one IP address; further ones are closed at accept
    /// (Kafka's `max.connections.per.ip`).
    /// Default: 1000
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight that sends nothing for this long is closed, and
    /// so is one that does not read a response for this long (Kafka's
    /// `connections.max.idle.ms`).
    /// Default: 600000 (10 min)
    pub connections_max_idle_ms: u64,
    /// Once a request's size has been read, its whole frame must arrive within this time, or
    /// the connection is closed (a half-sent frame holds its buffer no longer).
    /// Default: 60000
    pub request_read_timeout_ms: u64,
    /// Whether Metadata and Produce create unknown topics (Kafka's `auto.create.topics.enable`).
    /// Default: false
    pub auto_create_topics: bool,
    /// Partitions of a topic created without a count.
    /// Default: 1
    pub default_partitions: i32,
    /// Upper bound on partitions per topic.
    /// Default: 10000
    pub max_partitions_per_topic: i32,
    /// Longest a fetch may wait for data, whatever the client asks.
    /// Default: 30000
    pub max_fetch_wait_ms: u64,
    /// Most record bytes one Fetch response carries, whatever the client asks (Kafka's
    /// broker-side `fetch.max.bytes`); the first partition may exceed it by one entry.
    /// Default: 57671680 (55 MiB)
    pub fetch_max_bytes: usize,
    /// Most bytes one compressed produced batch may decompress to; its records are counted
    /// through a streaming decoder that stops here (CORRUPT_MESSAGE beyond it).
    /// Default: 268435456 (256 MiB)
    pub max_uncompressed_batch_bytes: u64,
    /// Fetch response bytes the node holds at once, across every connection: records being
    /// read for responses being built, and responses waiting for their client.
    /// Default: 268435456 (256 MiB)
    pub fetch_memory_bytes: usize,
}

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FlushPolicy {
    /// fsync before acknowledging acks=1/-1 and before data becomes visible to consumers; one
    /// fsync per replica covers every entry written while the previous one ran (group commit).
    OnAck,
    /// Write caching: a replica counts entries as persisted once they are in its page cache
    /// and fsyncs every `flush-interval-ms`; acknowledgements and visibility do not wait for
    /// it. A process crash loses nothing acknowledged; a power loss of a majority can.
    Interval,
}

/// Defaults for every topic's storage, overridable per topic through topic configs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct LogDefaults {
    /// Segment size before rolling (`segment.bytes`).
    /// Default: 1073741824 (1 GiB)
    pub segment_bytes: u64,
    /// Segment age before rolling (`segment.ms`).
    /// Default: 604800000 (7 days)
    pub segment_ms: u64,
    /// Bytes between two sparse index entries (`index.interval.bytes`).
    /// Default: 4096
    pub index_interval_bytes: u32,
    /// Largest record batch accepted (`max.message.bytes`).
    /// Default: 1048588
    pub max_message_bytes: u32,
    /// Retention by age (`retention.ms`); -1 keeps everything.
    /// Default: 604800000 (7 days)
    pub retention_ms: i64,
    /// Retention by size per partition (`retention.bytes`); -1 keeps everything.
    /// Default: -1
    pub retention_bytes: i64,
    /// When to fsync.
    /// Default: "on-ack"
    pub flush_policy: FlushPolicy,
    /// Period of the `interval` flush policy.
    /// Default: 1000
    pub flush_interval_ms: u64,
    /// How often the recovery checkpoint is rewritten; a crash rescans at most this much tail.
    /// Default: 1000
    pub checkpoint_interval_ms: u64,
    /// How long an idempotent producer's sequence state is kept after its last write (Kafka's
    /// `producer.id.expiration.ms`); expired producers get UNKNOWN_PRODUCER_ID if they return.
    /// Default: 86400000 (1 day)
    pub producer_id_expiration_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("./sluice-data"),
            kafka_addr: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_kafka_addr: None,
            rpc_addr: SocketAddr::from(([127, 0, 0, 1], 9093)),
            rpc: RpcConfig::default(),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9644)),
            kafka: KafkaConfig::default(),
            log: LogDefaults::default(),
            groups: GroupsConfig::default(),
            plugins: PluginsConfig::default(),
            peers: Vec::new(),
            raft: RaftConfig::default(),
            snapshot: SnapshotConfig::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            tls: KafkaTls::default(),
            sasl: KafkaSasl::default(),
            super_users: Vec::new(),
            max_request_bytes: 100 * 1024 * 1024,
            max_in_flight_per_connection: 16,
            max_connections: 10_000,
            max_connections_per_ip: 1000,
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 60_000,
            auto_create_topics: false,
            default_partitions: 1,
            max_partitions_per_topic: 10_000,
            max_fetch_wait_ms: 30_000,
            fetch_max_bytes: 55 << 20,
            max_uncompressed_batch_bytes: 256 << 20,
            fetch_memory_bytes: 256 << 20,
        }
    }
}

impl Default for LogDefaults {
    fn default() -> Self {
        LogDefaults {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            flush_policy: FlushPolicy::OnAck,
            flush_interval_ms: 1000,
            checkpoint_interval_ms: 1000,
            producer_id_expiration_ms: 86_400_000,
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if any), then `SLUICE_*` environment variables.
    /// Flags are applied by the caller afterwards, then [`Config::validate`] runs.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(
            Env::prefixed("SLUICE_")
                .split("__")
                .map(|key| key.as_str().replace('_', "-").into()),
        );
        figment.extract().map_err(|e| ConfigError::Parse(Box::new(e)))
    }

    /// Rejects combinations that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: &str| Err(ConfigError::Invalid(msg.to_string()));
        if self.node_id < 1 {
            return invalid("node-id must be at least 1");
        }
        if self.kafka.max_request_bytes < 64 {
            return invalid("kafka.max-request-bytes must be at least 64");
        }
        if self.kafka.max_in_flight_per_connection == 0 || self.kafka.max_connections_per_ip == 0 {
            return invalid("kafka.max-in-flight-per-connection and kafka.max-connections-per-ip must be at least 1");
        }
        let rpc_tls = &self.rpc.tls;
        let rpc_files = [&rpc_tls.ca_file, &rpc_tls.cert_file, &rpc_tls.key_file].iter().filter(|f| f.is_some()).count();
        if rpc_files != 0 && rpc_files != 3 {
            return invalid("rpc.tls.ca-file, rpc.tls.cert-file and rpc.tls.key-file go together");
        }
        if rpc_files == 0 && !self.rpc.insecure && !self.rpc_addr.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "rpc-addr {} is reachable beyond this machine without mutual TLS: anyone who reaches it could load plugins and send Raft messages. Set rpc.tls.ca-file, rpc.tls.cert-file and rpc.tls.key-file, or pass --insecure-rpc",
                self.rpc_addr
            )));
        }
        if self.kafka.tls.cert_file.is_some() != self.kafka.tls.key_file.is_some() {
            return invalid("kafka.tls.cert-file and kafka.tls.key-file go together");
        }
        if let Some(unknown) = self.kafka.sasl.mechanisms.iter().find(|m| *m != crate::security::PLAIN && crate::security::Mechanism::from_name(m).is_none()) {
            return Err(ConfigError::Invalid(format!("kafka.sasl.mechanisms: unknown mechanism {unknown:?} (SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN)")));
        }
        if self.kafka.sasl.max_receive_bytes < 64 {
            return invalid("kafka.sasl.max-receive-bytes must be at least 64");
        }
        if self.kafka.fetch_max_bytes == 0 || self.kafka.fetch_memory_bytes < self.kafka.fetch_max_bytes {
            return invalid("kafka.fetch-max-bytes must be positive and kafka.fetch-memory-bytes at least as large");
        }
        if self.kafka.connections_max_idle_ms == 0 || self.kafka.request_read_timeout_ms == 0 {
            return invalid("kafka.connections-max-idle-ms and kafka.request-read-timeout-ms must be positive");
        }
        if self.kafka.default_partitions < 1
            || self.kafka.default_partitions > self.kafka.max_partitions_per_topic
        {
            return invalid("kafka.default-partitions must be in 1..=max-partitions-per-topic");
        }
        if self.log.segment_bytes < 1024 {
            return invalid("log.segment-bytes must be at least 1024");
        }
        if u64::from(self.log.max_message_bytes) > self.log.segment_bytes {
            return invalid("log.max-message-bytes must not exceed log.segment-bytes");
        }
        if self.log.max_message_bytes > self.kafka.max_request_bytes {
            return invalid("log.max-message-bytes must not exceed kafka.max-request-bytes");
        }
        if self.log.index_interval_bytes == 0 {
            return invalid("log.index-interval-bytes must be at least 1");
        }
        let peers = parse_peers(&self.peers)?;
        if !peers.is_empty() && !peers.iter().any(|(id, _)| i64::try_from(*id).ok() == Some(i64::from(self.node_id))) {
            return invalid("peers must include this node's own id");
        }
        if self.raft.tick_ms == 0 || self.raft.heartbeat_ticks == 0 || self.raft.election_ticks <= self.raft.heartbeat_ticks {
            return invalid("raft.tick-ms and raft.heartbeat-ticks must be positive and raft.election-ticks larger than heartbeat-ticks");
        }
        if self.raft.peer_queue == 0 || self.raft.proposal_queue == 0 || self.raft.max_inflight_appends == 0 {
            return invalid("raft queues must hold at least one message");
        }
        if !(1024..=i32::MAX as u64).contains(&self.groups.offsets_segment_bytes) {
            return invalid("groups.offsets-segment-bytes must be at least 1024 and fit an i32");
        }
        if self.groups.offsets_topic_partitions < 1 {
            return invalid("groups.offsets-topic-partitions must be at least 1");
        }
        if self.groups.offsets_retention_ms < 1 || self.groups.offsets_retention_check_interval_ms == 0 {
            return invalid("groups.offsets-retention-ms and groups.offsets-retention-check-interval-ms must be positive");
        }
        if self.groups.min_session_timeout_ms > self.groups.max_session_timeout_ms {
            return invalid("groups.min-session-timeout-ms must not exceed groups.max-session-timeout-ms");
        }
        if self.plugins.call_timeout_ms == 0 || self.plugins.retention_check_interval_ms == 0 {
            return invalid("plugins.call-timeout-ms and plugins.retention-check-interval-ms must be positive");
        }
        if self.plugins.max_memory_bytes < (1 << 20) {
            return invalid("plugins.max-memory-bytes must be at least 1 MiB");
        }
        if self.snapshot.max_concurrent == 0 || self.snapshot.retain == 0 || self.snapshot.check_interval_ms == 0 {
            return invalid("snapshot.max-concurrent, snapshot.retain and snapshot.check-interval-ms must be at least 1");
        }
        if self.snapshot.metadata_segment_bytes < 1024 || self.snapshot.metadata_segment_bytes > u64::from(u32::MAX) {
            return invalid("snapshot.metadata-segment-bytes must be in 1024..=4294967295");
        }
        if self.snapshot.chunk_bytes == 0 || self.snapshot.chunk_bytes > 1 << 20 {
            return invalid("snapshot.chunk-bytes must be in 1..=1048576");
        }
        if self.log.flush_interval_ms == 0 || self.log.checkpoint_interval_ms == 0 {
            return invalid("log.flush-interval-ms and log.checkpoint-interval-ms must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    // figment's `Jail` closure signature fixes the error type.
    #[allow(clippy::result_large_err)]
    fn file_and_environment_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "node-id = 7\n[log]\nsegment-bytes = 4096\nflush-policy = \"interval\"\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("SLUICE_KAFKA__MAX_REQUEST_BYTES", "1000");
            let config = Config::load(Some(&file)).unwrap();
            assert_eq!(config.node_id, 7);
            assert_eq!(config.log.segment_bytes, 4096);
            assert_eq!(config.log.flush_policy, FlushPolicy::Interval);
            assert_eq!(config.kafka.max_request_bytes, 1000);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "no-such-key = 1\n").unwrap();
        assert!(Config::load(Some(&file)).is_err());
        std::fs::write(&file, "[log]\nsegment-bytes = \"big\"\n").unwrap();
        assert!(Config::load(Some(&file)).is_err());
        let mut config = Config::default();
        config.log.segment_bytes = 10;
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.kafka.tls.cert_file = Some("cert.pem".into());
        assert!(config.validate().is_err(), "a certificate without its key");
    }

    #[test]
    fn an_rpc_port_beyond_loopback_needs_mutual_tls_or_an_explicit_insecure_flag() {
        let mut config = Config { rpc_addr: "10.0.0.7:9093".parse().unwrap(), ..Config::default() };
        let refused = config.validate().unwrap_err().to_string();
        assert!(refused.contains("--insecure-rpc"), "{refused}");
        config.rpc.insecure = true;
        config.validate().unwrap();
        config.rpc.insecure = false;
        config.rpc.tls.ca_file = Some("ca.pem".into());
        assert!(config.validate().unwrap_err().to_string().contains("go together"));
        config.rpc.tls.cert_file = Some("node.pem".into());
        config.rpc.tls.key_file = Some("node.key".into());
        config.validate().unwrap();
        config.kafka.sasl.mechanisms = vec!["SCRAM-SHA-1".into()];
        assert!(config.validate().unwrap_err().to_string().contains("unknown mechanism"));
    }

    #[test]
    fn peers_are_parsed_and_checked() {
        let peers = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let parsed = parse_peers(&peers(&["1@127.0.0.1:9093", " 2@127.0.0.1:9094"])).unwrap();
        assert_eq!(parsed, vec![(1, "127.0.0.1:9093".parse().unwrap()), (2, "127.0.0.1:9094".parse().unwrap())]);
        for bad in [&["127.0.0.1:9093"][..], &["x@127.0.0.1:9093"], &["0@127.0.0.1:9093"], &["1@nowhere"], &["1@127.0.0.1:1", "1@127.0.0.1:2"]] {
            assert!(parse_peers(&peers(bad)).is_err(), "{bad:?}");
        }
        let mut config = Config { node_id: 3, peers: peers(&["1@127.0.0.1:9093", "2@127.0.0.1:9094"]), ..Config::default() };
        assert!(config.validate().is_err(), "a node must be one of its peers");
        config.node_id = 2;
        config.validate().unwrap();
        config.raft.election_ticks = config.raft.heartbeat_ticks;
        assert!(config.validate().is_err(), "elections must take longer than heartbeats");
    }
}
