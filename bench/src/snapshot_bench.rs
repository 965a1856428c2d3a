//! `sluice-snapshot-bench`: snapshot creation and install throughput through a real object
//! store (the local file system), per codec plugin, in-process with the plugins shipped in the
//! `sluice` binary.
//!
//! The state is what an offsets partition's snapshot holds (committed offsets of many groups,
//! Kafka's record layout). Creation is chunking, sealing with the codec, CRC32 and the puts,
//! manifest last; install is the reads, CRC checks and unsealing. The reference, in the same
//! run on the same bytes: the same crate's compress plus decompress natively, and the WASM
//! codec's own round trip without the store.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use sluice::Metrics;
use sluice::config::{PluginsConfig, SnapshotConfig};
use sluice::offsets::{CommittedOffset, OffsetKey, encode_snapshot};
use sluice::plugins::{Params, PluginKind, Plugins};
use sluice::snapshot::SnapshotStore;
use sluice::snapshot::manifest::GroupKind;
use sluice::snapshot::store::Head;

mod codecs;
use codecs::native_round_trip;

#[derive(Debug, Parser)]
#[command(name = "sluice-snapshot-bench", about = "Snapshot creation and install throughput per codec")]
struct Args {
    /// Committed offsets in the state.
    #[arg(long, default_value_t = 500_000)]
    keys: usize,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// An offsets snapshot of `keys` commits: 1000 groups over 20 topics of 50 partitions.
fn offsets_state(keys: usize) -> Result<Vec<u8>> {
    let commits: Vec<_> = (0..keys)
        .map(|i| {
            let key = OffsetKey { group: format!("consumer-group-{:04}", i % 1000), topic: format!("events-{:02}", (i / 1000) % 20), partition: ((i / 20_000) % 50) as i32 };
            let value = CommittedOffset { offset: 1_000_000 + (i as i64 * 7919) % 5_000_000, leader_epoch: 3, metadata: String::new(), commit_timestamp: 1_700_000_000_000 + i as i64, expire_timestamp: None };
            (key, Some(value))
        })
        .collect();
    encode_snapshot(&commits).map_err(anyhow::Error::msg)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let plugins = Arc::new(Plugins::open(dir.path(), &PluginsConfig::default(), Arc::new(Metrics::new(1)))?);
    let config = SnapshotConfig { retain: usize::MAX, ..SnapshotConfig::default() };
    let store = SnapshotStore::open(&config, dir.path())?;
    let state = offsets_state(args.keys)?;
    let mb = state.len() as f64 / 1e6;
    println!("state: {} committed offsets, {:.1} MB; store: {}", args.keys, mb, store.url());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut index = 0;
    for name in ["lz4", "deflate", "gzip", "zstd"] {
        let codec = plugins.resolve(PluginKind::Codec, name)?;
        let params = Params::new();
        let (mut create, mut install, mut wasm, mut native) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut stored = 0;
        for _ in 0..args.reps {
            index += 1;
            let head = Head { group: 1, kind: GroupKind::Offsets, name: "__consumer_offsets-0".into(), index, term: 1, voters: vec![1], plugins: Vec::new(), log_offset: 0 };
            let started = Instant::now();
            let manifest = runtime.block_on(store.write(&plugins, (Arc::clone(&codec), params.clone()), head, state.clone()))?;
            create.push(mb / started.elapsed().as_secs_f64());
            stored = manifest.stored_bytes();
            let started = Instant::now();
            let (_, read) = runtime.block_on(store.read(&plugins, &manifest.key()))?;
            install.push(mb / started.elapsed().as_secs_f64());
            anyhow::ensure!(read == state, "{name}: the state read back differs");
            // The codec alone, chunk by chunk as the store calls it, in WASM and natively.
            let started = Instant::now();
            for chunk in state.chunks(config.chunk_bytes) {
                let packed = codec.compress(&params, chunk, 0)?;
                codec.decompress(&params, &packed, chunk.len() as u64)?;
            }
            wasm.push(mb / started.elapsed().as_secs_f64());
            let started = Instant::now();
            for chunk in state.chunks(config.chunk_bytes) {
                native_round_trip(name, chunk)?;
            }
            native.push(mb / started.elapsed().as_secs_f64());
        }
        let (w, n) = (median(wasm), median(native));
        println!(
            "codec {name}: create {:.1} MB/s, install {:.1} MB/s, raw/stored {:.2}; codec round trip wasm {w:.1} MB/s, native {n:.1} MB/s, wasm/native {:.2} ({} reps)",
            median(create),
            median(install),
            state.len() as f64 / stored as f64,
            w / n,
            args.reps
        );
    }
    Ok(())
}
