//! The harness builds a real plugin crate and runs it in the real host.

use sluice_plugin_sdk::harness::retention::{PartitionInfo, Retention, SegmentInfo};
use sluice_plugin_sdk::harness::{Harness, PluginKind, PluginsConfig};

#[test]
fn keep_last_segments_runs_in_the_host() {
    let crate_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/keep-last-segments-retention");
    let component = Harness::build(crate_dir).expect("the plugin builds");
    // A generous deadline, so a loaded machine cannot turn the first call into a timeout.
    let config = PluginsConfig { call_timeout_ms: 2000, ..PluginsConfig::default() };
    let harness = Harness::with_config(config).expect("the host starts");
    let policy = harness.load(&component, PluginKind::Retention).expect("the plugin loads");
    let partition = PartitionInfo { topic: "t".into(), partition: 0, log_start_offset: 0, high_watermark: 500, total_bytes: 5000, now_ms: 0 };
    let segments: Vec<SegmentInfo> = (0..5)
        .map(|i| SegmentInfo { base_offset: i * 100, last_offset: i * 100 + 99, size_bytes: 1000, first_timestamp: -1, max_timestamp: -1 })
        .collect();
    let params = vec![("segments".to_string(), "2".to_string())];
    match policy.retain(&params, &partition, &vec![], &segments).expect("the policy answers") {
        Retention::DeleteBefore(offset) => assert_eq!(offset, 300),
        Retention::KeepAll => panic!("keep-last-segments kept all five segments"),
    }
    // Without its required parameter the binding is refused.
    assert!(policy.check_params(&vec![]).is_err());
}
