//! The command line: `sluice serve` and its flags. Flags override the config file and the
//! `SLUICE_*` environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sluice::admin::proto::admin_client::AdminClient;
use sluice::config::RpcTlsFiles;
use sluice::rpc_tls::RpcTls;
use tonic::transport::Channel;

/// Sluice, a Kafka-compatible message broker.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker node.
    Serve(ServeArgs),
    /// Load, list and bind WebAssembly plugins on a running node.
    Plugin(PluginArgs),
    /// Inspect a running cluster through one node's admin API.
    Cluster(ClusterArgs),
    /// List and take snapshots through one node's admin API.
    Snapshot(SnapshotArgs),
    /// Create, delete and list SASL/SCRAM users through one node's admin API.
    User(UserArgs),
}

/// Flags of `sluice user`.
#[derive(Debug, clap::Args)]
pub struct UserArgs {
    /// Where the node's admin API is and how to reach it.
    #[command(flatten)]
    pub target: AdminTarget,
    /// What to do.
    #[command(subcommand)]
    pub command: UserCommand,
}

/// `sluice user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, or set a new password for one; it may then authenticate with this SCRAM
    /// mechanism, and with PLAIN when the listener allows it.
    Create {
        /// User name.
        name: String,
        /// Password (stored only as salted SCRAM keys).
        #[arg(long, env = "SLUICE_USER_PASSWORD", hide_env_values = true)]
        password: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
        /// PBKDF2 iterations (4096..=16384).
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// Delete a user's credentials (of one mechanism, or all).
    Delete {
        /// User name.
        name: String,
        /// Only this mechanism's credential.
        #[arg(long)]
        mechanism: Option<String>,
    },
    /// Every user and its mechanisms.
    List,
}

/// How a CLI command reaches a node's admin API.
#[derive(Debug, clap::Args)]
pub struct AdminTarget {
    /// The node's admin API address (its --rpc-addr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9093", env = "SLUICE_RPC_ADDR", global = true)]
    pub rpc_addr: SocketAddr,
    /// The cluster CA (PEM). With --tls-cert-file and --tls-key-file: connect with mutual TLS,
    /// to a node whose certificate names the address.
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_ca_file: Option<PathBuf>,
    /// This client's certificate (PEM), signed by the cluster CA.
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_key_file: Option<PathBuf>,
}

impl AdminTarget {
    /// A client of the admin API, over mutual TLS when the TLS files are given.
    pub async fn connect(&self) -> anyhow::Result<AdminClient<Channel>> {
        use anyhow::Context;
        let files = RpcTlsFiles { ca_file: self.tls_ca_file.clone(), cert_file: self.tls_cert_file.clone(), key_file: self.tls_key_file.clone() };
        let tls = RpcTls::load(&files)?;
        if tls.is_none() && [&files.ca_file, &files.cert_file, &files.key_file].iter().any(|f| f.is_some()) {
            anyhow::bail!("--tls-ca-file, --tls-cert-file and --tls-key-file go together");
        }
        let channel = sluice::rpc_tls::endpoint(tls.as_deref(), self.rpc_addr, None)?
            .connect()
            .await
            .with_context(|| format!("connecting to the admin API at {} (is the node running with this --rpc-addr? does it require TLS?)", self.rpc_addr))?;
        Ok(AdminClient::new(channel))
    }
}

/// Flags of `sluice snapshot`.
#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// Where the node's admin API is and how to reach it.
    #[command(flatten)]
    pub target: AdminTarget,
    /// What to do.
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

/// `sluice snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// The snapshots in the node's store, oldest first per group.
    List {
        /// Only this group's (0: the metadata group; see `sluice cluster status`).
        #[arg(long)]
        group: Option<u64>,
    },
    /// Snapshot a group now (without --topic: the metadata group).
    Create {
        /// Topic.
        #[arg(long)]
        topic: Option<String>,
        /// Partition.
        #[arg(long, default_value_t = 0)]
        partition: i32,
    },
}

/// Flags of `sluice cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Where the node's admin API is and how to reach it.
    #[command(flatten)]
    pub target: AdminTarget,
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// `sluice cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes, and every Raft group as this node sees it: leader, term, commit and applied
    /// indexes, and (where this node leads) each follower's lag in entries.
    Status,
    /// Hand leadership of a partition (or, without --topic, of the metadata group) to a node.
    /// Send it to the current leader.
    TransferLeader {
        /// Topic [default: the metadata group].
        #[arg(long)]
        topic: Option<String>,
        /// Partition.
        #[arg(long, default_value_t = 0)]
        partition: i32,
        /// Node id to hand leadership to.
        #[arg(long)]
        to: u64,
    },
    /// Bring a new, empty cluster back from the newest metadata snapshot in a lost cluster's
    /// store: topics (same ids, partitions, configs), plugins and bindings. Partitions start
    /// empty; records and committed offsets are not restored.
    Restore {
        /// The lost cluster's snapshot store (`file:///path`, `s3://bucket/prefix`).
        #[arg(long)]
        store: String,
    },
}

/// Flags of `sluice plugin`.
#[derive(Debug, clap::Args)]
pub struct PluginArgs {
    /// Where the node's admin API is and how to reach it.
    #[command(flatten)]
    pub target: AdminTarget,
    /// What to do.
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// `sluice plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load a component (.wasm) as a plugin.
    Load {
        /// The component file.
        file: PathBuf,
        /// Plugin name [default: the file name without extension, `_` as `-`].
        #[arg(long)]
        name: Option<String>,
        /// Plugin version [default: the first 12 hex digits of the file's sha256].
        #[arg(long)]
        version: Option<String>,
        /// codec, trigger or retention [default: detected from the exported world].
        #[arg(long)]
        kind: Option<String>,
    },
    /// List loaded plugins.
    List,
    /// Bind a plugin to a topic, or as the cluster default without --topic.
    Bind {
        /// codec, trigger or retention.
        #[arg(long)]
        kind: String,
        /// The topic [default: the cluster-wide default binding].
        #[arg(long)]
        topic: Option<String>,
        /// NAME or NAME@VERSION.
        plugin: String,
        /// A parameter passed to the plugin's `configure`, as key=value (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Remove a topic's binding, so the cluster default applies again.
    Unbind {
        /// codec, trigger or retention.
        #[arg(long)]
        kind: String,
        /// The topic.
        #[arg(long)]
        topic: String,
    },
    /// Show the binding in effect.
    Describe {
        /// codec, trigger or retention.
        #[arg(long)]
        kind: String,
        /// The topic [default: the cluster-wide default binding].
        #[arg(long)]
        topic: Option<String>,
    },
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Flags of `sluice serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./sluice-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kafka listener address [default: 127.0.0.1:9092].
    #[arg(long, value_name = "ADDR")]
    pub kafka_addr: Option<SocketAddr>,
    /// Address advertised to Kafka clients [default: the bound Kafka address].
    #[arg(long, value_name = "ADDR")]
    pub advertised_kafka_addr: Option<SocketAddr>,
    /// Prometheus metrics address [default: 127.0.0.1:9644].
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// gRPC address for the admin API and Raft traffic [default: 127.0.0.1:9093].
    #[arg(long, value_name = "ADDR")]
    pub rpc_addr: Option<SocketAddr>,
    /// This node's id [default: 1].
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,
    /// Every node of the cluster, this one included: `1@host:port,2@host:port,...` (their
    /// --rpc-addr). Without it the node runs alone, unreplicated.
    #[arg(long, value_name = "ID@ADDR,...", value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Serve --rpc-addr beyond loopback without mutual TLS (rpc.insecure).
    #[arg(long)]
    pub insecure_rpc: bool,
}

impl ServeArgs {
    /// Applies the flags that were given on top of `config`.
    pub fn apply(&self, config: &mut sluice::Config) {
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = self.kafka_addr {
            config.kafka_addr = v;
        }
        if let Some(v) = self.advertised_kafka_addr {
            config.advertised_kafka_addr = Some(v);
        }
        if let Some(v) = self.metrics_addr {
            config.metrics_addr = v;
        }
        if let Some(v) = self.rpc_addr {
            config.rpc_addr = v;
        }
        if let Some(v) = self.node_id {
            config.node_id = v;
        }
        if let Some(v) = &self.peers {
            config.peers = v.clone();
        }
        if self.insecure_rpc {
            config.rpc.insecure = true;
        }
    }
}
