//! In-process tests of the plugin host with real components built from `plugins/` and
//! `tests/plugins/`: codec versions and their data, limits, the shipped defaults.

use std::sync::Arc;

use anyhow::{Result, ensure};
use sluice::Metrics;
use sluice::config::PluginsConfig;
use sluice::plugins::{Params, PluginKind, Plugins};
use sluice_tests::plugins::*;

fn open(dir: &std::path::Path) -> Result<Plugins> {
    // A generous deadline: these tests check behaviour, and a loaded machine must not turn a
    // slow first call into a timeout.
    let config = PluginsConfig { call_timeout_ms: 2000, ..PluginsConfig::default() };
    Ok(Plugins::open(dir, &config, Arc::new(Metrics::new(1)))?)
}

#[test]
fn data_written_by_a_swapped_codec_stays_readable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let plugins = open(dir.path())?;
    let v1 = plugins.load(&std::fs::read(ECHO_CODEC_COMPONENT)?, Some(PluginKind::Codec), "echo", "1")?;
    plugins.set_default(PluginKind::Codec, "echo", Params::new())?;
    let (codec, params) = plugins.binding(PluginKind::Codec, &Default::default())?;
    let old = plugins.seal(&codec, &params, b"written by version one")?;

    // Version two of the same codec writes a different format and becomes the default.
    let v2 = plugins.load(&std::fs::read(ECHO_V2_CODEC_COMPONENT)?, Some(PluginKind::Codec), "echo", "2")?;
    ensure!(v1.sha256 != v2.sha256);
    let (codec, params) = plugins.binding(PluginKind::Codec, &Default::default())?;
    ensure!(codec.info().version == "2", "the newest version binds by name");
    let new = plugins.seal(&codec, &params, b"written by version two")?;
    ensure!(new != old);

    // Each artifact is read by the version that wrote it, after a restart too.
    drop(plugins);
    let plugins = open(dir.path())?;
    let (codec, _) = plugins.binding(PluginKind::Codec, &Default::default())?;
    ensure!(codec.info().label() == "echo@2", "the default binding did not survive a restart");
    ensure!(plugins.unseal(&old)? == b"written by version one");
    ensure!(plugins.unseal(&new)? == b"written by version two");
    let mut damaged = new.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    ensure!(plugins.unseal(&damaged).is_err(), "a damaged artifact decoded");
    ensure!(plugins.unseal(b"garbage").is_err());
    Ok(())
}

#[test]
fn shipped_plugins_are_the_defaults_and_pass_their_self_checks() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let plugins = open(dir.path())?;
    for (kind, name) in [(PluginKind::Codec, "lz4"), (PluginKind::Codec, "deflate"), (PluginKind::Codec, "gzip"), (PluginKind::Codec, "zstd"), (PluginKind::Trigger, "entries-or-age"), (PluginKind::Trigger, "log-bytes"), (PluginKind::Retention, "time-and-size"), (PluginKind::Retention, "keep-last-segments")] {
        let plugin = plugins.resolve(kind, name)?;
        plugin.self_check()?;
    }
    let (codec, params) = plugins.binding(PluginKind::Codec, &Default::default())?;
    ensure!(codec.info().name == "lz4");
    let data: Vec<u8> = b"abcabcabc".iter().cycle().take(1 << 20).copied().collect();
    let sealed = plugins.seal(&codec, &params, &data)?;
    ensure!(sealed.len() < data.len() / 10, "lz4 did not compress: {} bytes", sealed.len());
    ensure!(plugins.unseal(&sealed)? == data);
    // keep-last-segments needs its parameter.
    let policy = plugins.resolve(PluginKind::Retention, "keep-last-segments")?;
    ensure!(policy.check_params(&Params::new()).is_err());
    ensure!(policy.check_params(&vec![("segments".into(), "2".into())]).is_ok());
    Ok(())
}

macro_rules! assert_test_exists {
    ($name:ident) => {
        // Every test plugin is used by a test here or in tests/process/plugins.rs.
        const _: &str = $name::NAME;
    };
}

/// Names every test plugin so `foreach_plugin!` can check each one is exercised.
#[allow(non_camel_case_types, dead_code)]
mod used {
    pub mod looping_trigger { pub const NAME: &str = "process: snapshot_triggers_swap_on_a_live_node_and_a_looping_one_is_contained"; }
    pub mod memory_bomb_codec { pub const NAME: &str = "process: hostile_plugins_are_refused_or_contained"; }
    pub mod trapping_retention { pub const NAME: &str = "process: hostile_plugins_are_refused_or_contained"; }
    pub mod huge_output_codec { pub const NAME: &str = "process: hostile_plugins_are_refused_or_contained"; }
    pub mod filesystem_codec { pub const NAME: &str = "process: hostile_plugins_are_refused_or_contained"; }
    pub mod echo_codec { pub const NAME: &str = "it: data_written_by_a_swapped_codec_stays_readable"; }
    pub mod echo_v2_codec { pub const NAME: &str = "it: data_written_by_a_swapped_codec_stays_readable"; }
}
use used::*;
sluice_tests::foreach_plugin!(assert_test_exists);
