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
            "cleanup.policy" if value != "delete" => {
                return Err(bad("only cleanup.policy=delete is supported so far"));
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
}
