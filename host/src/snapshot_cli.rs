//! `sluice snapshot ...`: a client of a node's admin API.

use anyhow::Result;
use sluice::admin::proto::{CreateSnapshotRequest, ListSnapshotsRequest, Snapshot};

use crate::cli::{SnapshotArgs, SnapshotCommand};

/// Runs one `sluice snapshot` command and prints its outcome as a table.
pub async fn run(args: SnapshotArgs) -> Result<()> {
    let mut client = args.target.connect().await?;
    let refused = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    let snapshots = match args.command {
        SnapshotCommand::List { group } => client.list_snapshots(ListSnapshotsRequest { group }).await.map_err(refused)?.into_inner().snapshots,
        SnapshotCommand::Create { topic, partition } => {
            vec![client.create_snapshot(CreateSnapshotRequest { topic: topic.unwrap_or_default(), partition }).await.map_err(refused)?.into_inner()]
        }
    };
    print_table(&snapshots);
    Ok(())
}

fn print_table(snapshots: &[Snapshot]) {
    println!("{:<20} {:<9} {:<26} {:>10} {:>6} {:<10} {:>12} {:>12} {:>6}  MANIFEST", "GROUP", "KIND", "NAME", "INDEX", "TERM", "CODEC", "RAW", "STORED", "CHUNKS");
    for s in snapshots {
        println!(
            "{:<20} {:<9} {:<26} {:>10} {:>6} {:<10} {:>12} {:>12} {:>6}  {}",
            s.group, s.kind, s.name, s.index, s.term, s.codec, s.raw_bytes, s.stored_bytes, s.chunks, s.manifest_key
        );
    }
}
