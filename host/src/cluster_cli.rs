//! `sluice cluster ...`: a client of a node's admin API.

use anyhow::Result;
use sluice::admin::proto::{ClusterStatusRequest, RestoreClusterRequest, TransferLeaderRequest};

use crate::cli::{ClusterArgs, ClusterCommand};

/// Runs one `sluice cluster` command and prints its outcome.
pub async fn run(args: ClusterArgs) -> Result<()> {
    let mut client = args.target.connect().await?;
    let refused = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    match args.command {
        ClusterCommand::Status => {
            let status = client.cluster_status(ClusterStatusRequest {}).await.map_err(refused)?.into_inner();
            println!("node {}", status.node);
            for b in &status.brokers {
                println!("broker {} {}", b.id, b.kafka_addr);
            }
            println!("{:<20} {:<24} {:>9} {:>6} {:>6} {:>10} {:>10} {:>10}  LAG", "GROUP", "TOPIC", "PARTITION", "LEADER", "TERM", "COMMIT", "APPLIED", "LAST");
            for g in &status.groups {
                let lag = if g.lag.is_empty() { "-".to_string() } else { g.lag.iter().map(|l| format!("{}:{}", l.node, l.entries)).collect::<Vec<_>>().join(",") };
                println!(
                    "{:<20} {:<24} {:>9} {:>6} {:>6} {:>10} {:>10} {:>10}  {lag}",
                    g.group, g.topic, g.partition, g.leader, g.term, g.commit, g.applied, g.last_index
                );
            }
        }
        ClusterCommand::TransferLeader { topic, partition, to } => {
            client.transfer_leader(TransferLeaderRequest { topic: topic.unwrap_or_default(), partition, to }).await.map_err(refused)?;
            println!("leadership transfer to node {to} started");
        }
        ClusterCommand::Restore { store } => {
            let restored = client.restore_cluster(RestoreClusterRequest { store: store.clone() }).await.map_err(refused)?.into_inner();
            let from = restored.snapshot.map(|s| format!("{} (index {}, term {})", s.manifest_key, s.index, s.term)).unwrap_or_default();
            println!("restored from {store}: {from}");
            println!("{} topics, {} plugins, {} metadata changes applied", restored.topics, restored.plugins, restored.commands);
            println!("{} committed offsets of {} consumer groups restored", restored.offsets, restored.groups);
        }
    }
    Ok(())
}
