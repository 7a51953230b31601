//! Golden tests pinning the JSON layout of every metadata value (see `records.rs`).
//! Expected encodings live in `testdata/*.json`; a diff here is a format change.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use cirrus_controller::records::{self, CounterRecord};
use cirrus_controller::{
    CheckpointRecord, ClusterRecord, MetaError, ObjectRecord, PartitionRecord, ProducerRecord,
    RunRecord, TopicRecord,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn golden<T>(file: &str, record: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let path = format!("{}/testdata/{file}", env!("CARGO_MANIFEST_DIR"));
    let expected = std::fs::read_to_string(&path).unwrap();
    let expected = expected.trim_end();
    let encoded = records::encode("golden", record).unwrap();
    assert_eq!(
        std::str::from_utf8(&encoded).unwrap(),
        expected,
        "encoding of {file} changed"
    );
    let decoded: T = records::decode("golden", expected.as_bytes()).unwrap();
    assert_eq!(&decoded, record, "decoding of {file} changed");
}

#[test]
fn cluster_record() {
    golden(
        "cluster.json",
        &ClusterRecord {
            cluster_id: "MkU3OEVBNTcwNTJENDM2Qg".into(),
        },
    );
}

#[test]
fn topic_record() {
    golden(
        "topic.json",
        &TopicRecord {
            name: "orders.v1".into(),
            topic_id: "6ba7b810-9dad-11d1-80b4-00c04fd430c8".parse().unwrap(),
            partitions: vec![
                PartitionRecord {
                    index: 0,
                    stream_id: 1,
                    leader_epoch: 0,
                    log_start_offset: 0,
                },
                PartitionRecord {
                    index: 1,
                    stream_id: 2,
                    leader_epoch: 3,
                    log_start_offset: 1234,
                },
            ],
            configs: BTreeMap::from([
                ("retention.ms".to_owned(), "86400000".to_owned()),
                ("cleanup.policy".to_owned(), "delete".to_owned()),
            ]),
            created_ms: 1_700_000_000_000,
        },
    );
}

#[test]
fn counter_record() {
    golden("counter.json", &CounterRecord { next: 42 });
}

#[test]
fn object_record() {
    golden(
        "object.json",
        &ObjectRecord {
            seq: 7,
            key: "data/broker-1/00000000000000000007.obj".into(),
            size: 4096,
            writer: "broker-1/3f2a".into(),
            committed_ms: 1_700_000_000_123,
            runs: vec![
                RunRecord {
                    stream_id: 1,
                    first_offset: 100,
                    last_offset: 149,
                    max_timestamp: 1_700_000_000_100,
                    position: 0,
                    length: 3000,
                    leader_epoch: 2,
                    producers: vec![ProducerRecord {
                        producer_id: 1000,
                        producer_epoch: 0,
                        first_sequence: 40,
                        last_sequence: 49,
                        last_offset: 149,
                        last_timestamp: 1_700_000_000_100,
                    }],
                },
                RunRecord {
                    stream_id: 2,
                    first_offset: 0,
                    last_offset: 0,
                    max_timestamp: -1,
                    position: 3000,
                    length: 1096,
                    leader_epoch: 0,
                    producers: vec![],
                },
            ],
        },
    );
}

#[test]
fn checkpoint_record() {
    golden(
        "checkpoint.json",
        &CheckpointRecord {
            through_seq: 1000,
            key: "index/checkpoints/00000000000000001000.ckpt".into(),
            written_ms: 1_700_000_001_000,
        },
    );
}

#[test]
fn object_keys_sort_numerically() {
    assert_eq!(records::object_key(7), "objects/00000000000000000007");
    assert_eq!(
        records::object_key(u64::MAX),
        "objects/18446744073709551615"
    );
    assert!(records::object_key(9) < records::object_key(10));
    assert_eq!(records::topic_key("a.b"), "topics/a.b");
}

#[test]
fn decode_rejects_other_versions_and_bad_json_naming_the_key() {
    let err =
        records::decode::<CounterRecord>("/c/counters/x", br#"{"v":2,"next":1}"#).unwrap_err();
    assert!(
        matches!(&err, MetaError::Corrupt { key, .. } if key == "/c/counters/x"),
        "{err}"
    );
    assert!(
        err.to_string().contains("unsupported layout version"),
        "{err}"
    );
    let err = records::decode::<CounterRecord>("/c/k", b"{not json").unwrap_err();
    assert!(
        matches!(&err, MetaError::Corrupt { key, .. } if key == "/c/k"),
        "{err}"
    );
    let err = records::decode::<CounterRecord>("/c/k", br#"{"next":1}"#).unwrap_err();
    assert!(
        matches!(err, MetaError::Corrupt { .. }),
        "a value without \"v\" is corrupt"
    );
}
