//! Topic configs: the names Cirrus accepts, their defaults, and validation.
//!
//! Kafka refuses unknown topic configs; so does Cirrus. Configs that Kafka knows but
//! that have no meaning on object storage (segment and replica tuning) are accepted and
//! stored so that existing tooling keeps working, and reported as given.

use std::collections::BTreeMap;

use crate::config::Durability;
use crate::error::{BrokerError, Result};

/// Cirrus's own topic config: when produce is acknowledged (`local` or `object`).
pub const DURABILITY: &str = "cirrus.durability";

/// (name, default shown by DescribeConfigs, accepted but without effect yet)
pub const KNOWN: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("compression.type", "producer"),
    ("delete.retention.ms", "86400000"),
    ("file.delete.delay.ms", "60000"),
    ("flush.messages", "9223372036854775807"),
    ("flush.ms", "9223372036854775807"),
    ("index.interval.bytes", "4096"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.type", "CreateTime"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.compaction.lag.ms", "0"),
    ("min.insync.replicas", "1"),
    ("preallocate", "false"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.ms", "604800000"),
    ("unclean.leader.election.enable", "false"),
    (DURABILITY, "local"),
];

pub fn is_known(name: &str) -> bool {
    KNOWN.iter().any(|(n, _)| *n == name)
}

/// Validates config names and the values Cirrus interprets.
pub fn validate(configs: &BTreeMap<String, String>) -> Result<()> {
    for (name, value) in configs {
        if !is_known(name) {
            return Err(BrokerError::InvalidConfig(format!(
                "unknown topic config '{name}'"
            )));
        }
        let bad = |why: &str| BrokerError::InvalidConfig(format!("{name}={value}: {why}"));
        match name.as_str() {
            DURABILITY => {
                value.parse::<Durability>().map_err(|e| bad(&e))?;
            }
            "max.message.bytes" => {
                let n: i64 = value.parse().map_err(|_| bad("not an integer"))?;
                if !(1024..=(1 << 30)).contains(&n) {
                    return Err(bad("must be between 1024 and 1073741824"));
                }
            }
            "cleanup.policy" => {
                let policies: Vec<&str> = value.split(',').map(str::trim).collect();
                if policies.is_empty()
                    || policies.iter().any(|p| !matches!(*p, "delete" | "compact"))
                {
                    return Err(bad("must be delete, compact or compact,delete"));
                }
            }
            "min.cleanable.dirty.ratio" => {
                let r: f64 = value.parse().map_err(|_| bad("not a number"))?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(bad("must be between 0 and 1"));
                }
            }
            "message.timestamp.type" if value != "CreateTime" => {
                return Err(bad("only CreateTime is supported so far"));
            }
            "retention.ms"
            | "retention.bytes"
            | "delete.retention.ms"
            | "segment.ms"
            | "segment.bytes"
            | "min.compaction.lag.ms"
            | "max.compaction.lag.ms"
            | "flush.ms"
            | "flush.messages"
            | "file.delete.delay.ms"
            | "index.interval.bytes"
            | "min.insync.replicas" => {
                value.parse::<i64>().map_err(|_| bad("not an integer"))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the topic is compacted (`cleanup.policy` contains `compact`).
pub fn is_compacted(configs: &BTreeMap<String, String>) -> bool {
    configs
        .get("cleanup.policy")
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "compact"))
}

/// What the log cleaner needs of a compacted topic's configs (Kafka's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanerConfig {
    /// Tombstones are kept this long (by their timestamp) after which cleaning drops them.
    pub delete_retention_ms: i64,
    /// Records are cleaned only once their run's newest record is this old.
    pub min_compaction_lag_ms: i64,
    /// A dirty run older than this is cleaned whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// Cleaning starts once this share of the cleanable bytes is dirty.
    pub min_cleanable_dirty_ratio: f64,
}

impl CleanerConfig {
    /// None when the topic is not compacted.
    pub fn from_configs(configs: &BTreeMap<String, String>) -> Option<CleanerConfig> {
        if !is_compacted(configs) {
            return None;
        }
        let int = |name: &str, default: i64| {
            configs
                .get(name)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(default)
                .max(0)
        };
        Some(CleanerConfig {
            delete_retention_ms: int("delete.retention.ms", 86_400_000),
            min_compaction_lag_ms: int("min.compaction.lag.ms", 0),
            max_compaction_lag_ms: int("max.compaction.lag.ms", i64::MAX),
            min_cleanable_dirty_ratio: configs
                .get("min.cleanable.dirty.ratio")
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.5),
        })
    }
}

pub fn durability(configs: &BTreeMap<String, String>, default: Durability) -> Durability {
    configs
        .get(DURABILITY)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn max_message_bytes(configs: &BTreeMap<String, String>, default: u64) -> usize {
    configs
        .get("max.message.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_bad_values_are_refused() {
        let mut c = BTreeMap::new();
        c.insert("retention.ms".to_string(), "1000".to_string());
        c.insert(DURABILITY.to_string(), "object".to_string());
        validate(&c).unwrap();
        assert_eq!(durability(&c, Durability::Local), Durability::Object);
        c.insert("no.such.config".to_string(), "1".to_string());
        assert!(
            matches!(validate(&c), Err(BrokerError::InvalidConfig(m)) if m.contains("no.such.config"))
        );
        let mut c = BTreeMap::new();
        c.insert(DURABILITY.to_string(), "maybe".to_string());
        assert!(validate(&c).is_err());
    }

    #[test]
    fn cleanup_policies_and_cleaner_settings() {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        for ok in ["delete", "compact", "compact,delete", "delete, compact"] {
            validate(&one("cleanup.policy", ok)).unwrap();
        }
        for bad in ["", "compact,", "shred", "compact,shred"] {
            assert!(validate(&one("cleanup.policy", bad)).is_err(), "{bad}");
        }
        assert!(validate(&one("min.cleanable.dirty.ratio", "1.5")).is_err());
        validate(&one("min.cleanable.dirty.ratio", "0.1")).unwrap();
        assert_eq!(
            CleanerConfig::from_configs(&one("cleanup.policy", "delete")),
            None
        );
        let mut c = one("cleanup.policy", "compact,delete");
        c.insert("delete.retention.ms".into(), "5000".into());
        let cfg = CleanerConfig::from_configs(&c).unwrap();
        assert_eq!(
            (
                cfg.delete_retention_ms,
                cfg.min_compaction_lag_ms,
                cfg.max_compaction_lag_ms
            ),
            (5000, 0, i64::MAX)
        );
        assert_eq!(cfg.min_cleanable_dirty_ratio, 0.5);
    }
}
