//! `sluice plugin ...`: a client of a node's admin API.

use anyhow::{Context, Result};
use sluice::admin::proto::{self, Binding};

use crate::cli::{PluginArgs, PluginCommand};

/// Runs one `sluice plugin` command and prints its outcome.
pub async fn run(args: PluginArgs) -> Result<()> {
    let mut client = args.target.connect().await?.max_encoding_message_size(usize::MAX);
    let refused = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    match args.command {
        PluginCommand::Load { file, name, version, kind } => {
            let component = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = name.unwrap_or_else(|| {
                file.file_stem().map(|s| s.to_string_lossy().replace('_', "-")).unwrap_or_else(|| "plugin".into())
            });
            let version = version.unwrap_or_else(|| sluice::plugins::registry::sha256_hex(&component)[..12].to_string());
            let request = proto::LoadPluginRequest { component, name, version, kind: kind.unwrap_or_default() };
            let p = client.load_plugin(request).await.map_err(refused)?.into_inner();
            println!("loaded {} plugin {}@{} (sha256 {})", p.kind, p.name, p.version, p.sha256);
        }
        PluginCommand::List => {
            let list = client.list_plugins(proto::ListPluginsRequest {}).await.map_err(refused)?.into_inner();
            println!("{:<10} {:<24} {:<16} {:<14} STATE", "KIND", "NAME", "VERSION", "SHA256");
            for p in list.plugins {
                let state = match (p.builtin, p.quarantined) {
                    (_, true) => "quarantined",
                    (true, false) => "shipped",
                    (false, false) => "loaded",
                };
                println!("{:<10} {:<24} {:<16} {:<14} {state}", p.kind, p.name, p.version, &p.sha256[..12.min(p.sha256.len())]);
            }
        }
        PluginCommand::Bind { kind, topic, plugin, params } => {
            let params = params.into_iter().map(|(key, value)| proto::Param { key, value }).collect();
            let request = proto::BindRequest { kind, topic: topic.unwrap_or_default(), plugin, params };
            print_binding(&client.bind(request).await.map_err(refused)?.into_inner());
        }
        PluginCommand::Unbind { kind, topic } => {
            print_binding(&client.unbind(proto::UnbindRequest { kind, topic }).await.map_err(refused)?.into_inner());
        }
        PluginCommand::Describe { kind, topic } => {
            let request = proto::DescribeRequest { kind, topic: topic.unwrap_or_default() };
            print_binding(&client.describe(request).await.map_err(refused)?.into_inner());
        }
    }
    Ok(())
}

fn print_binding(b: &Binding) {
    let scope = if b.topic.is_empty() { "cluster default".to_string() } else { format!("topic {}", b.topic) };
    let source = if b.is_default && !b.topic.is_empty() { " (cluster default)" } else { "" };
    let params: Vec<String> = b.params.iter().map(|p| format!("{}={}", p.key, p.value)).collect();
    println!("{} {}: {}{} [{}]", b.kind, scope, b.plugin, source, params.join(", "));
}
