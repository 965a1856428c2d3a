//! Topic configs as Kafka names them (`retention.ms`, `segment.bytes`, ...): which keys exist,
//! which values are valid, and the effective value of each for a topic (its override, else the
//! node's default). Stored overrides are plain strings, exactly as the client sent them.

use std::collections::BTreeMap;

use crate::config::LogDefaults;

/// Kafka's config value types, as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    /// A string.
    String = 2,
    /// A 32-bit integer.
    Int = 3,
    /// A 64-bit integer.
    Long = 5,
    /// A comma-separated list.
    List = 7,
}

/// One known topic config key.
pub struct TopicConfigKey {
    /// Kafka's name.
    pub name: &'static str,
    /// Its type.
    pub config_type: ConfigType,
    /// What it means, for DescribeConfigs `include_documentation`.
    pub doc: &'static str,
    validate: fn(&str) -> Result<(), String>,
    default: fn(&LogDefaults) -> String,
}

/// Describes every `sluice.plugin.param.*` key in [`effective`].
static PLUGIN_PARAM_KEY: TopicConfigKey = TopicConfigKey {
    name: "sluice.plugin.param.*",
    config_type: ConfigType::String,
    doc: "a parameter of the topic's plugin bindings",
    validate: |_| Ok(()),
    default: |_| String::new(),
};

/// Every topic config this broker stores and reports.
pub const TOPIC_CONFIG_KEYS: &[TopicConfigKey] = &[
    TopicConfigKey {
        name: "cleanup.policy",
        config_type: ConfigType::List,
        doc: "delete, compact or both; stored and reported (log compaction is not implemented yet)",
        validate: |v| {
            let ok = v.split(',').map(str::trim).all(|p| p == "delete" || p == "compact");
            if ok && !v.trim().is_empty() { Ok(()) } else { Err("must be delete, compact or delete,compact".into()) }
        },
        default: |_| "delete".into(),
    },
    TopicConfigKey {
        name: "retention.ms",
        config_type: ConfigType::Long,
        doc: "age after which a segment may be deleted; -1 keeps everything",
        validate: |v| long_at_least(v, -1),
        default: |d| d.retention_ms.to_string(),
    },
    TopicConfigKey {
        name: "retention.bytes",
        config_type: ConfigType::Long,
        doc: "size above which the oldest segments may be deleted; -1 keeps everything",
        validate: |v| long_at_least(v, -1),
        default: |d| d.retention_bytes.to_string(),
    },
    TopicConfigKey {
        name: "segment.bytes",
        config_type: ConfigType::Int,
        doc: "segment size before a new segment is rolled",
        validate: |v| int_at_least(v, 1024),
        default: |d| d.segment_bytes.min(i32::MAX as u64).to_string(),
    },
    TopicConfigKey {
        name: "segment.ms",
        config_type: ConfigType::Long,
        doc: "segment age before a new segment is rolled",
        validate: |v| long_at_least(v, 1),
        default: |d| d.segment_ms.to_string(),
    },
    TopicConfigKey {
        name: "max.message.bytes",
        config_type: ConfigType::Int,
        doc: "largest record batch accepted",
        validate: |v| int_at_least(v, 0),
        default: |d| d.max_message_bytes.to_string(),
    },
    TopicConfigKey {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        doc: "replicas that must acknowledge an acks=all write",
        validate: |v| int_at_least(v, 1),
        default: |_| "1".into(),
    },
    TopicConfigKey {
        name: "message.timestamp.type",
        config_type: ConfigType::String,
        doc: "CreateTime: batches keep the producer's timestamps",
        validate: |v| if v == "CreateTime" { Ok(()) } else { Err("only CreateTime is supported".into()) },
        default: |_| "CreateTime".into(),
    },
    TopicConfigKey {
        name: "sluice.codec",
        config_type: ConfigType::String,
        doc: "codec plugin (name or name@version) for what Sluice compresses of this topic; unset: the cluster default",
        validate: plugin_spec,
        default: |_| String::new(),
    },
    TopicConfigKey {
        name: "sluice.snapshot.trigger",
        config_type: ConfigType::String,
        doc: "snapshot trigger plugin (name or name@version) of this topic's partitions; unset: the cluster default",
        validate: plugin_spec,
        default: |_| String::new(),
    },
    TopicConfigKey {
        name: "sluice.retention.policy",
        config_type: ConfigType::String,
        doc: "retention policy plugin (name or name@version) of this topic; unset: the cluster default (time-and-size)",
        validate: plugin_spec,
        default: |_| String::new(),
    },
    TopicConfigKey {
        name: "compression.type",
        config_type: ConfigType::String,
        doc: "producer: batches are stored with the codec the producer chose",
        validate: |v| if v == "producer" { Ok(()) } else { Err("only producer is supported: batches are stored as sent".into()) },
        default: |_| "producer".into(),
    },
];

/// Topic configs with this prefix are parameters of the topic's plugin bindings
/// (`sluice.plugin.param.segments=3` passes `segments=3` to `configure`).
pub const PLUGIN_PARAM_PREFIX: &str = "sluice.plugin.param.";

/// Finds a known key (every `sluice.plugin.param.<name>` is one).
pub fn key(name: &str) -> Option<&'static TopicConfigKey> {
    if name.len() > PLUGIN_PARAM_PREFIX.len() && name.starts_with(PLUGIN_PARAM_PREFIX) {
        return Some(&PLUGIN_PARAM_KEY);
    }
    TOPIC_CONFIG_KEYS.iter().find(|k| k.name == name)
}

/// Checks one override; the error names the key and says what is allowed.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    if let Some(param) = name.strip_prefix(PLUGIN_PARAM_PREFIX) {
        return if param.is_empty() { Err(format!("{name} names no parameter")) } else { Ok(()) };
    }
    let key = key(name).ok_or_else(|| format!("unknown topic config {name}"))?;
    (key.validate)(value).map_err(|why| format!("invalid value {value:?} for {name}: {why}"))
}

/// One config of a topic as DescribeConfigs reports it.
pub struct Effective {
    /// The key (for plugin parameters, the full `sluice.plugin.param.<name>`).
    pub name: String,
    /// What kind of key it is.
    pub key: &'static TopicConfigKey,
    /// Its value.
    pub value: String,
    /// Whether the topic overrides the default.
    pub overridden: bool,
}

/// The effective value of every known key for a topic with these overrides, plus its plugin
/// parameters. Unset plugin bindings are left out: the cluster default applies to them.
pub fn effective(overrides: &BTreeMap<String, String>, defaults: &LogDefaults) -> Vec<Effective> {
    let known = TOPIC_CONFIG_KEYS.iter().filter_map(|key| match overrides.get(key.name) {
        Some(v) => Some(Effective { name: key.name.to_string(), key, value: v.clone(), overridden: true }),
        None if key.name.starts_with("sluice.") => None,
        None => Some(Effective { name: key.name.to_string(), key, value: (key.default)(defaults), overridden: false }),
    });
    let params = overrides
        .iter()
        .filter(|(k, _)| k.starts_with(PLUGIN_PARAM_PREFIX))
        .map(|(k, v)| Effective { name: k.clone(), key: &PLUGIN_PARAM_KEY, value: v.clone(), overridden: true });
    known.chain(params).collect()
}

/// The effective value of one key, parsed as an integer (the caller names a numeric key).
pub fn effective_i64(overrides: &BTreeMap<String, String>, defaults: &LogDefaults, name: &str) -> i64 {
    let value = match (overrides.get(name), key(name)) {
        (Some(v), _) => v.clone(),
        (None, Some(k)) => (k.default)(defaults),
        (None, None) => return 0,
    };
    // Overrides were validated when stored, and defaults are numbers.
    value.trim().parse().unwrap_or(0)
}

/// One change of IncrementalAlterConfigs, applied to the overrides as they are when the metadata
/// entry applies, so concurrent changes of different keys all take effect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConfigChange {
    /// Override a key.
    Set(String, String),
    /// Drop an override (back to the default).
    Delete(String),
    /// Add items to a list config (those not there yet).
    Append(String, String),
    /// Remove items from a list config.
    Subtract(String, String),
}

/// `overrides` with `changes` applied in order (the effective value of a list config is what
/// APPEND and SUBTRACT start from).
pub fn apply_changes(overrides: &BTreeMap<String, String>, changes: &[ConfigChange], defaults: &LogDefaults) -> Result<BTreeMap<String, String>, String> {
    let mut configs = overrides.clone();
    for change in changes {
        match change {
            ConfigChange::Set(k, v) => {
                configs.insert(k.clone(), v.clone());
            }
            ConfigChange::Delete(k) => {
                configs.remove(k);
            }
            ConfigChange::Append(k, items) | ConfigChange::Subtract(k, items) => {
                if key(k).is_none_or(|known| known.config_type != ConfigType::List) {
                    return Err(format!("{k} is not a list; APPEND and SUBTRACT do not apply"));
                }
                let current = effective(&configs, defaults).into_iter().find(|e| e.name == *k).map(|e| e.value).unwrap_or_default();
                let mut list: Vec<String> = current.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if matches!(change, ConfigChange::Append(..)) {
                        if !list.iter().any(|i| i == item) {
                            list.push(item.to_string());
                        }
                    } else {
                        list.retain(|i| i != item);
                    }
                }
                configs.insert(k.clone(), list.join(","));
            }
        }
    }
    Ok(configs)
}

/// `name` or `name@version`; whether such a plugin is loaded is checked by the plugin host.
fn plugin_spec(v: &str) -> Result<(), String> {
    let (name, version) = v.split_once('@').unwrap_or((v, "x"));
    if name.is_empty() || version.is_empty() || v.contains(char::is_whitespace) {
        return Err("must be a plugin name or name@version".into());
    }
    Ok(())
}

fn long_at_least(v: &str, min: i64) -> Result<(), String> {
    match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(_) => Err(format!("must be at least {min}")),
        Err(_) => Err("must be an integer".into()),
    }
}

fn int_at_least(v: &str, min: i32) -> Result<(), String> {
    match v.trim().parse::<i32>() {
        Ok(n) if n >= min => Ok(()),
        Ok(_) => Err(format!("must be at least {min}")),
        Err(_) => Err("must be a 32-bit integer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_known_keys() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("segment.bytes", "10").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("no.such.key", "1").is_err());
    }

    #[test]
    fn overrides_win_over_defaults() {
        let defaults = LogDefaults::default();
        let mut overrides = BTreeMap::new();
        overrides.insert("segment.bytes".to_string(), "4096".to_string());
        assert_eq!(effective_i64(&overrides, &defaults, "segment.bytes"), 4096);
        assert_eq!(effective_i64(&overrides, &defaults, "retention.bytes"), -1);
        overrides.insert("sluice.plugin.param.segments".to_string(), "3".to_string());
        let all = effective(&overrides, &defaults);
        // Unset plugin bindings are left out; every other key is reported, plus the parameter.
        assert_eq!(all.len(), TOPIC_CONFIG_KEYS.iter().filter(|k| !k.name.starts_with("sluice.")).count() + 1);
        assert!(validate("sluice.retention.policy", "keep-last-segments@0.1.0").is_ok());
        assert!(validate("sluice.retention.policy", "@1").is_err());
        assert!(validate("sluice.plugin.param.segments", "3").is_ok());
        assert!(validate("sluice.plugin.param.", "3").is_err());
        assert!(all.iter().any(|e| e.name == "segment.bytes" && e.value == "4096" && e.overridden));
        assert!(all.iter().any(|e| e.name == "sluice.plugin.param.segments" && e.value == "3"));
    }

    #[test]
    fn incremental_changes_apply_to_the_configs_as_they_are_then() {
        use super::ConfigChange::{Append, Delete, Set, Subtract};
        let defaults = LogDefaults::default();
        let start: BTreeMap<String, String> = [("retention.ms".to_string(), "1000".to_string())].into();
        // Two clients alter different keys from the same view: applied one after the other,
        // both changes stay (a whole-set replacement computed from the view would lose one).
        let first = apply_changes(&start, &[Set("segment.bytes".into(), "4096".into())], &defaults).unwrap();
        let both = apply_changes(&first, &[Set("max.message.bytes".into(), "2000".into()), Delete("retention.ms".into())], &defaults).unwrap();
        assert_eq!(both.get("segment.bytes").map(String::as_str), Some("4096"));
        assert_eq!(both.get("max.message.bytes").map(String::as_str), Some("2000"));
        assert!(!both.contains_key("retention.ms"));
        let listed = apply_changes(&both, &[Append("cleanup.policy".into(), "compact".into())], &defaults).unwrap();
        assert_eq!(listed.get("cleanup.policy").map(String::as_str), Some("delete,compact"));
        let back = apply_changes(&listed, &[Subtract("cleanup.policy".into(), "delete".into())], &defaults).unwrap();
        assert_eq!(back.get("cleanup.policy").map(String::as_str), Some("compact"));
        assert!(apply_changes(&back, &[Append("retention.ms".into(), "5".into())], &defaults).is_err(), "not a list");
    }
}
