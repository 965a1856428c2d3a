//! The `sluice` binary.

mod cli;
mod cluster_cli;
mod plugin_cli;
mod snapshot_cli;
mod user_cli;

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

use cli::{Cli, Command};

#[global_allocator]
static ALLOCATOR: sluice::allocator::SluiceAllocator = sluice::allocator::SluiceAllocator;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Serve(args) => {
            let mut config = sluice::Config::load(args.config.as_deref())?;
            args.apply(&mut config);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve(config))
        }
        Command::Plugin(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
            runtime.block_on(plugin_cli::run(args))
        }
        Command::Cluster(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
            runtime.block_on(cluster_cli::run(args))
        }
        Command::Snapshot(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
            runtime.block_on(snapshot_cli::run(args))
        }
        Command::User(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
            runtime.block_on(user_cli::run(args))
        }
    }
}

async fn serve(config: sluice::Config) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let node = sluice::Node::start(config).await?;
    // One line on stdout that scripts and tests can wait for.
    println!("sluice: kafka listening on {}, admin on {}, metrics on {}", node.kafka_addr(), node.rpc_addr(), node.metrics_addr());
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    node.shutdown().await;
    Ok(())
}
