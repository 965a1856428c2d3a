//! Prometheus metrics: the registry, the counters the broker updates, and the HTTP endpoint
//! that serves them in the text format at `/metrics`.

use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::plugins::PluginInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

/// Why a connection was refused or closed by a limit (`kafka_connections_limited_total`).
pub const CONNECTION_LIMIT_REASONS: [&str; 5] = ["max_connections", "max_connections_per_ip", "idle", "request_read_timeout", "response_write_timeout"];
/// Why a plugin call failed (`plugin_failures_total`).
pub const PLUGIN_FAILURE_REASONS: [&str; 6] = ["error", "trap", "timeout", "output_too_large", "configure", "quarantined"];

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    /// Open Kafka connections.
    pub connections: IntGauge,
    /// Frames that closed their connection (bad size, unknown API, malformed).
    pub frame_errors: IntCounter,
    /// Connections refused or closed by a limit, by reason (`max_connections`,
    /// `max_connections_per_ip`, `idle`, `request_read_timeout`, `response_write_timeout`).
    pub connections_limited: IntCounterVec,
    /// SASL authentications, by outcome (`succeeded`, `failed`, `unauthenticated_request`).
    pub authentications: IntCounterVec,
    /// Operations refused by ACLs, by resource type.
    pub authorization_failures: IntCounterVec,
    /// Connections to the rpc port refused in the TLS handshake (no, or a foreign, certificate).
    pub rpc_tls_refused: IntCounter,
    /// Produce requests received.
    pub produced_requests: IntCounter,
    /// Record-set bytes appended by Produce.
    pub produced_bytes: IntCounter,
    /// Records acknowledged to producers.
    pub produced_records: IntCounter,
    /// Record bytes returned by Fetch.
    pub fetched_bytes: IntCounter,
    plugin_calls: IntCounterVec,
    plugin_failures: IntCounterVec,
    plugin_call_seconds: HistogramVec,
    plugin_loaded: IntGaugeVec,
    /// Segments deleted by retention.
    pub retention_deleted_segments: IntCounter,
    /// Records between a group's committed offset and the partition's high watermark, for the
    /// groups this node coordinates.
    pub consumer_group_lag: IntGaugeVec,
    /// Raft, by group (`topic-partition`, or `__cluster_metadata`).
    pub raft: RaftMetrics,
    /// Snapshots, by group kind.
    pub snapshot: SnapshotMetrics,
}

/// Why a snapshot failed (`snapshots_failed_total`).
pub const SNAPSHOT_FAILURE_REASONS: [&str; 8] = ["config", "store", "corrupt", "too_large", "codec", "task", "state", "install"];
/// Group kinds snapshots are labelled with.
pub const SNAPSHOT_KINDS: [&str; 3] = ["metadata", "offsets", "partition"];

/// Snapshot metrics.
pub struct SnapshotMetrics {
    /// Snapshots written to the store, by group kind.
    pub taken: IntCounterVec,
    /// Snapshots that failed, by group kind and reason.
    pub failed: IntCounterVec,
    /// From capturing the state to the manifest written, by group kind.
    pub seconds: HistogramVec,
    /// State bytes snapshotted, before compression.
    pub raw_bytes: IntCounterVec,
    /// Bytes written to the store (the compression ratio is raw / stored).
    pub stored_bytes: IntCounterVec,
    /// Index of the newest snapshot, by group.
    pub last_index: IntGaugeVec,
    /// Snapshots installed on this node as a follower, by group kind.
    pub installs: IntCounterVec,
    /// Snapshots deleted by `snapshot.retain`.
    pub deleted: IntCounter,
}

impl SnapshotMetrics {
    fn new() -> SnapshotMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        SnapshotMetrics {
            taken: counter("snapshots_taken_total", "Snapshots written to the object store, by group kind", &["kind"]),
            failed: counter("snapshots_failed_total", "Snapshots that failed, by group kind and reason", &["kind", "reason"]),
            seconds: HistogramVec::new(
                HistogramOpts::new("snapshot_duration_seconds", "From capturing a group's state to its manifest written")
                    .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
                &["kind"],
            )
            .expect("valid metric"),
            raw_bytes: counter("snapshot_raw_bytes_total", "State bytes snapshotted, before compression", &["kind"]),
            stored_bytes: counter("snapshot_stored_bytes_total", "Snapshot bytes written to the object store", &["kind"]),
            last_index: IntGaugeVec::new(Opts::new("snapshot_last_index", "Raft index of the newest snapshot, by group"), &["group"]).expect("valid metric"),
            installs: counter("snapshot_installs_total", "Snapshots installed on this node as a follower, by group kind", &["kind"]),
            deleted: IntCounter::new("snapshots_deleted_total", "Snapshots deleted by snapshot.retain").expect("valid metric"),
        }
    }

    fn register(&self, r: &Registry) {
        r.register(Box::new(self.taken.clone())).expect("unique metric");
        r.register(Box::new(self.failed.clone())).expect("unique metric");
        r.register(Box::new(self.seconds.clone())).expect("unique metric");
        r.register(Box::new(self.raw_bytes.clone())).expect("unique metric");
        r.register(Box::new(self.stored_bytes.clone())).expect("unique metric");
        r.register(Box::new(self.last_index.clone())).expect("unique metric");
        r.register(Box::new(self.installs.clone())).expect("unique metric");
        r.register(Box::new(self.deleted.clone())).expect("unique metric");
        // Known label values start at zero, so dashboards and alerts see them before they move.
        for kind in SNAPSHOT_KINDS {
            for v in [&self.taken, &self.raw_bytes, &self.stored_bytes, &self.installs] {
                v.with_label_values(&[kind]);
            }
            self.seconds.with_label_values(&[kind]);
            for reason in SNAPSHOT_FAILURE_REASONS {
                self.failed.with_label_values(&[kind, reason]);
            }
        }
    }
}

/// Raft metrics, labelled by group.
pub struct RaftMetrics {
    /// Times this node became a group's leader.
    pub elections: IntCounterVec,
    /// Messages sent, by group and type (append, heartbeat, vote, ...).
    pub sent: IntCounterVec,
    /// Messages received, by group and type.
    pub received: IntCounterVec,
    /// Peer messages refused before raft-rs saw them, by reason.
    pub refused: IntCounterVec,
    /// Entries written to the group's log on this node.
    pub entries: IntCounterVec,
    /// Current term.
    pub term: IntGaugeVec,
    /// Commit index.
    pub commit: IntGaugeVec,
    /// Applied index.
    pub applied: IntGaugeVec,
    /// On the leader: entries each follower is behind.
    pub follower_lag: IntGaugeVec,
    /// On the leader: from proposal to commit.
    pub commit_seconds: HistogramVec,
    /// One replica's fsync of its log (and hard state) in a persist round.
    pub fsync_seconds: Histogram,
}

impl RaftMetrics {
    fn new() -> RaftMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        let gauge = |name: &str, help: &str, labels: &[&str]| IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        RaftMetrics {
            elections: counter("raft_leader_elections_total", "Times this node became the group's leader", &["group"]),
            sent: counter("raft_messages_sent_total", "Raft messages sent, by type", &["group", "type"]),
            received: counter("raft_messages_received_total", "Raft messages received, by type", &["group", "type"]),
            refused: counter("raft_messages_refused_total", "Peer messages refused as malformed or inconsistent, by reason", &["reason"]),
            entries: counter("raft_log_entries_total", "Entries written to the group's log here", &["group"]),
            term: gauge("raft_term", "Current term", &["group"]),
            commit: gauge("raft_commit_index", "Commit index", &["group"]),
            applied: gauge("raft_applied_index", "Applied index", &["group"]),
            follower_lag: gauge("raft_follower_lag_entries", "Entries a follower is behind the leader (leader's view)", &["group", "follower"]),
            commit_seconds: HistogramVec::new(
                HistogramOpts::new("raft_proposal_commit_seconds", "From a leader's proposal to its commit")
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                &["group"],
            )
            .expect("valid metric"),
            fsync_seconds: Histogram::with_opts(
                HistogramOpts::new("log_fsync_seconds", "One replica's fsync of its log (and Raft hard state) in a persist round")
                    .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            )
            .expect("valid metric"),
        }
    }

    fn register(&self, r: &Registry) {
        r.register(Box::new(self.elections.clone())).expect("unique metric");
        r.register(Box::new(self.sent.clone())).expect("unique metric");
        r.register(Box::new(self.received.clone())).expect("unique metric");
        r.register(Box::new(self.refused.clone())).expect("unique metric");
        r.register(Box::new(self.entries.clone())).expect("unique metric");
        r.register(Box::new(self.term.clone())).expect("unique metric");
        r.register(Box::new(self.commit.clone())).expect("unique metric");
        r.register(Box::new(self.applied.clone())).expect("unique metric");
        r.register(Box::new(self.follower_lag.clone())).expect("unique metric");
        r.register(Box::new(self.commit_seconds.clone())).expect("unique metric");
        r.register(Box::new(self.fsync_seconds.clone())).expect("unique metric");
    }
}

impl Metrics {
    /// Creates and registers every metric, labelled with the node id.
    pub fn new(node_id: i32) -> Metrics {
        let labels = std::collections::HashMap::from([("node".to_string(), node_id.to_string())]);
        let registry = Registry::new_custom(Some("sluice".into()), Some(labels)).expect("valid registry prefix");
        let requests = IntCounterVec::new(Opts::new("kafka_requests_total", "Kafka requests handled, by API"), &["api"]).expect("valid metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("kafka_request_duration_seconds", "Kafka request latency, by API")
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
            &["api"],
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let metrics = Metrics {
            connections: IntGauge::new("kafka_connections", "Open Kafka connections").expect("valid metric"),
            frame_errors: counter("kafka_frame_errors_total", "Frames that closed their connection"),
            connections_limited: IntCounterVec::new(Opts::new("kafka_connections_limited_total", "Connections refused or closed by a limit, by reason"), &["reason"]).expect("valid metric"),
            authentications: IntCounterVec::new(Opts::new("kafka_sasl_authentications_total", "SASL authentications, by outcome"), &["outcome"]).expect("valid metric"),
            authorization_failures: IntCounterVec::new(Opts::new("kafka_authorization_failures_total", "Operations refused by ACLs, by resource type"), &["resource"]).expect("valid metric"),
            rpc_tls_refused: counter("rpc_tls_refused_total", "Connections to the rpc port refused in the TLS handshake"),
            produced_requests: counter("produce_requests_total", "Produce requests received"),
            produced_bytes: counter("produce_bytes_total", "Record-set bytes appended"),
            produced_records: counter("produce_records_acked_total", "Records acknowledged to producers"),
            fetched_bytes: counter("fetch_bytes_total", "Record bytes returned by Fetch"),
            plugin_calls: IntCounterVec::new(Opts::new("plugin_calls_total", "Plugin calls, by plugin"), &["plugin", "version", "kind"]).expect("valid metric"),
            plugin_failures: IntCounterVec::new(
                Opts::new("plugin_failures_total", "Failed plugin calls, by plugin and reason (error, trap, timeout, output_too_large, configure, quarantined)"),
                &["plugin", "version", "reason"],
            )
            .expect("valid metric"),
            plugin_call_seconds: HistogramVec::new(
                HistogramOpts::new("plugin_call_duration_seconds", "Plugin call latency, by plugin")
                    .buckets(vec![0.000001, 0.000005, 0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5]),
                &["plugin", "version"],
            )
            .expect("valid metric"),
            plugin_loaded: IntGaugeVec::new(Opts::new("plugin_loaded", "Compiled plugin versions, by plugin"), &["plugin", "version", "kind", "sha256"]).expect("valid metric"),
            retention_deleted_segments: counter("retention_deleted_segments_total", "Segments deleted by retention"),
            consumer_group_lag: IntGaugeVec::new(
                Opts::new("consumer_group_lag", "Records between a group's committed offset and the high watermark, by group and partition"),
                &["group", "topic", "partition"],
            )
            .expect("valid metric"),
            raft: RaftMetrics::new(),
            snapshot: SnapshotMetrics::new(),
            requests,
            request_seconds,
            registry,
        };
        // Registering distinct names in a fresh registry cannot fail.
        let r = &metrics.registry;
        r.register(Box::new(metrics.requests.clone())).expect("unique metric");
        r.register(Box::new(metrics.request_seconds.clone())).expect("unique metric");
        r.register(Box::new(metrics.connections.clone())).expect("unique metric");
        r.register(Box::new(metrics.frame_errors.clone())).expect("unique metric");
        r.register(Box::new(metrics.connections_limited.clone())).expect("unique metric");
        r.register(Box::new(metrics.authentications.clone())).expect("unique metric");
        r.register(Box::new(metrics.authorization_failures.clone())).expect("unique metric");
        r.register(Box::new(metrics.rpc_tls_refused.clone())).expect("unique metric");
        r.register(Box::new(metrics.produced_requests.clone())).expect("unique metric");
        r.register(Box::new(metrics.produced_bytes.clone())).expect("unique metric");
        r.register(Box::new(metrics.produced_records.clone())).expect("unique metric");
        r.register(Box::new(metrics.fetched_bytes.clone())).expect("unique metric");
        r.register(Box::new(metrics.plugin_calls.clone())).expect("unique metric");
        r.register(Box::new(metrics.plugin_failures.clone())).expect("unique metric");
        r.register(Box::new(metrics.plugin_call_seconds.clone())).expect("unique metric");
        r.register(Box::new(metrics.plugin_loaded.clone())).expect("unique metric");
        r.register(Box::new(metrics.retention_deleted_segments.clone())).expect("unique metric");
        r.register(Box::new(metrics.consumer_group_lag.clone())).expect("unique metric");
        metrics.raft.register(r);
        metrics.snapshot.register(r);
        // Known label values start at zero, so dashboards and alerts see them before they move.
        for reason in CONNECTION_LIMIT_REASONS {
            metrics.connections_limited.with_label_values(&[reason]);
        }
        for outcome in ["succeeded", "failed", "unauthenticated_request"] {
            metrics.authentications.with_label_values(&[outcome]);
        }
        for resource in ["topic", "group", "cluster", "transactional_id"] {
            metrics.authorization_failures.with_label_values(&[resource]);
        }
        for reason in crate::raft::validate::REFUSAL_REASONS {
            metrics.raft.refused.with_label_values(&[reason]);
        }
        metrics
    }

    /// Counts one plugin call and its latency.
    pub fn observe_plugin_call(&self, plugin: &PluginInfo, took: Duration) {
        self.plugin_calls.with_label_values(&[&plugin.name, &plugin.version, plugin.kind.name()]).inc();
        self.plugin_call_seconds.with_label_values(&[&plugin.name, &plugin.version]).observe(took.as_secs_f64());
    }

    /// Counts one failed plugin call.
    pub fn count_plugin_failure(&self, plugin: &PluginInfo, reason: &str) {
        self.plugin_failures.with_label_values(&[&plugin.name, &plugin.version, reason]).inc();
    }

    /// Marks a plugin version as compiled and active on this node; its call and failure
    /// counters start at zero, so dashboards see them before the first call or failure.
    pub fn set_plugin_loaded(&self, plugin: &PluginInfo) {
        self.plugin_loaded.with_label_values(&[&plugin.name, &plugin.version, plugin.kind.name(), &plugin.sha256[..12.min(plugin.sha256.len())]]).set(1);
        self.plugin_calls.with_label_values(&[&plugin.name, &plugin.version, plugin.kind.name()]);
        self.plugin_call_seconds.with_label_values(&[&plugin.name, &plugin.version]);
        for reason in PLUGIN_FAILURE_REASONS {
            self.plugin_failures.with_label_values(&[&plugin.name, &plugin.version, reason]);
        }
    }

    /// Counts one handled request and its latency.
    pub fn observe_request(&self, api: ApiKey, took: Duration) {
        let name = format!("{api:?}");
        self.requests.with_label_values(&[&name]).inc();
        self.request_seconds.with_label_values(&[&name]).observe(took.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec only fails for invalid metric families, which registration prevents.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Serves `GET /metrics` until `shutdown` turns true. Deliberately tiny: one request per
/// connection, no keep-alive, anything else is a 404.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let metrics = std::sync::Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let (status, body) = if request[..n].starts_with(b"GET /metrics") {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", b"not found\n".to_vec())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if let Err(e) = async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&body).await
            }
            .await
            {
                debug!(cause = %e, "metrics write failed");
            }
        });
    }
}
