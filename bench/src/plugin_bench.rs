//! `sluice-plugin-bench`: costs of the WebAssembly plugin host, in-process with the plugins
//! shipped in the `sluice` binary.
//!
//! - Per-call overhead of a trivial call: the `entries-or-age` trigger's `should-snapshot` on a
//!   recycled instance (target ≤ 1 µs).
//! - Codec throughput: the `lz4`, `deflate`, `gzip` and `zstd` components against the same
//!   Rust crates (`lz4_flex`, `miniz_oxide`, `flate2`, `ruzstd`) compiled natively, on the same
//!   data, in the same run (target ≥ 0.9×).
//! - Bind to effect: time from changing the default retention binding until a call runs on the
//!   new plugin, first with a compile, then with the plugin already compiled (target < 50 ms).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use sluice::Metrics;
use sluice::config::PluginsConfig;
use sluice::plugins::wit::latest::retention::exports::sluice::plugins::retention_policy::PartitionInfo;
use sluice::plugins::wit::latest::trigger::exports::sluice::plugins::snapshot_trigger::{GroupId, GroupStats};
use sluice::plugins::{Params, PluginKind, Plugins};

mod codecs;
use codecs::native_round_trip;

#[derive(Debug, Parser)]
#[command(name = "sluice-plugin-bench", about = "Plugin call overhead, codec throughput, bind-to-effect time")]
struct Args {
    /// Calls for the overhead measurement.
    #[arg(long, default_value_t = 200_000)]
    calls: u32,
    /// Bytes of data per codec round trip.
    #[arg(long, default_value_t = 4 << 20)]
    bytes: usize,
    /// Round trips per codec measurement.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Log-like data: repetitive structure with varying numbers, compressible about 4-5x.
fn sample(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 128);
    let mut i: u64 = 0;
    while out.len() < bytes {
        i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.extend_from_slice(format!("{{\"ts\":{},\"user\":{},\"event\":\"click\",\"path\":\"/item/{}\"}}\n", 1_700_000_000_000u64 + (i >> 40), (i >> 20) % 10_000, (i >> 8) % 977).as_bytes());
    }
    out.truncate(bytes);
    out
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let plugins = Plugins::open(dir.path(), &PluginsConfig::default(), Arc::new(Metrics::new(1)))?;

    // Per-call overhead.
    let trigger = plugins.resolve(PluginKind::Trigger, "entries-or-age")?;
    let params = Params::new();
    let stats = GroupStats {
        group: GroupId::Metadata,
        applied_index: 1,
        entries_since_snapshot: 1,
        bytes_since_snapshot: 1,
        millis_since_snapshot: 1,
        log_bytes: 1,
        is_leader: true,
        slowest_follower_lag: 0,
    };
    trigger.should_snapshot(&params, &stats)?;
    let mut per_call = Vec::new();
    for _ in 0..args.reps {
        let started = Instant::now();
        for _ in 0..args.calls {
            trigger.should_snapshot(&params, &stats)?;
        }
        per_call.push(started.elapsed().as_nanos() as f64 / f64::from(args.calls));
    }
    println!("trigger call, recycled instance: median {:.0} ns per call over {} calls x {} reps (all: {:?})", median(per_call.clone()), args.calls, args.reps, per_call.iter().map(|n| n.round()).collect::<Vec<_>>());
    // The same call on a fresh store and instance each time (what a per-call store would
    // cost): parameters no earlier call used find no ready instance.
    let fresh_calls = (args.calls / 100).max(100);
    let mut per_fresh = Vec::new();
    for rep in 0..args.reps {
        let started = Instant::now();
        for i in 0..fresh_calls {
            trigger.should_snapshot(&vec![("bench-unique".into(), format!("{rep}-{i}"))], &stats)?;
        }
        per_fresh.push(started.elapsed().as_nanos() as f64 / f64::from(fresh_calls));
    }
    println!("trigger call, fresh store and instance: median {:.0} ns per call over {fresh_calls} calls x {} reps", median(per_fresh), args.reps);

    // Codec throughput, wasm against native, same data, same run.
    let data = sample(args.bytes);
    let mb = (data.len() as f64 * f64::from(args.rounds)) / 1e6;
    for name in ["lz4", "deflate", "gzip", "zstd"] {
        let codec = plugins.resolve(PluginKind::Codec, name)?;
        let (mut wasm, mut native) = (Vec::new(), Vec::new());
        let mut ratio_size = 0usize;
        for _ in 0..args.reps {
            let started = Instant::now();
            for _ in 0..args.rounds {
                let packed = codec.compress(&params, &data, 0)?;
                ratio_size = packed.len();
                let restored = codec.decompress(&params, &packed, data.len() as u64)?;
                assert_eq!(restored.len(), data.len());
            }
            wasm.push(mb / started.elapsed().as_secs_f64());
            let started = Instant::now();
            for _ in 0..args.rounds {
                let restored = native_round_trip(name, &data)?;
                assert_eq!(restored.len(), data.len());
            }
            native.push(mb / started.elapsed().as_secs_f64());
        }
        let (w, n) = (median(wasm.clone()), median(native.clone()));
        println!(
            "codec {name}: round trip wasm {w:.1} MB/s, native {n:.1} MB/s, ratio {:.2} ({} -> {} bytes; wasm {:?}, native {:?})",
            w / n,
            data.len(),
            ratio_size,
            wasm.iter().map(|x| x.round()).collect::<Vec<_>>(),
            native.iter().map(|x| x.round()).collect::<Vec<_>>()
        );
    }

    // Bind to effect: the binding changes, the next call runs on the new plugin.
    let partition = PartitionInfo { topic: "t".into(), partition: 0, log_start_offset: 0, high_watermark: 0, total_bytes: 0, now_ms: 0 };
    let configs = Params::new();
    let bind_and_call = |spec: &str| -> Result<f64> {
        let started = Instant::now();
        plugins.set_default(PluginKind::Retention, spec, vec![("segments".into(), "3".into())])?;
        let (policy, params) = plugins.binding(PluginKind::Retention, &Default::default())?;
        policy.retain(&params, &partition, &configs, &[])?;
        assert_eq!(policy.info().name, spec);
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    };
    let first = bind_and_call("keep-last-segments")?;
    let mut rebinds = Vec::new();
    for _ in 0..args.reps {
        bind_and_call("time-and-size")?;
        rebinds.push(bind_and_call("keep-last-segments")?);
    }
    println!("bind to effect: first bind (compiles) {first:.1} ms; rebind median {:.2} ms ({:?})", median(rebinds.clone()), rebinds.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>());
    Ok(())
}
