//! The command line: `sluice serve` and its flags. Flags override the config file and the
//! `SLUICE_*` environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    }
}
