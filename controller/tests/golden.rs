//! Golden tests pinning the JSON layout of every metadata value (see `records.rs`).
//! Expected encodings live in `testdata/*.json`; a diff here is a format change.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use cirrus_controller::records::{self, CounterRecord};
use cirrus_controller::{
    BrokerLoad, BrokerRecord, ChangesRecord, CheckpointRecord, ClusterRecord, CommittedOffset,
    ControllerRecord, DrainRecord, GroupRecord, MetaError, ObjectRecord, OffsetsRecord,
    OwnerRecord, PartitionRecord, ProducerRecord, RunRecord, TopicRecord,
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
                    cleaned: false,
                    tombstones_expire_ms: None,
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
                    cleaned: false,
                    tombstones_expire_ms: None,
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
fn broker_record() {
    golden(
        "broker.json",
        &BrokerRecord {
            id: 2,
            host: "broker-2.cirrus.internal".into(),
            port: 9092,
            admin_addr: "broker-2.cirrus.internal:9095".into(),
            incarnation: "5f0c2a7e-1b9d-4e07-a1f3-0c8d2e6b9a41".into(),
            durability: "object".into(),
            started_ms: 1_700_000_000_000,
        },
    );
}

#[test]
fn broker_load() {
    golden(
        "load.json",
        &BrokerLoad {
            id: 2,
            bytes_in_per_sec: 1_048_576.5,
            bytes_out_per_sec: 0.0,
            partitions: 120,
            cpu_cores_used: 1.25,
            measured_ms: 1_700_000_005_000,
            hot_partitions: Vec::new(),
        },
    );
}

#[test]
fn controller_record() {
    golden(
        "controller.json",
        &ControllerRecord {
            broker_id: -1,
            incarnation: "controller-7d1e".into(),
            elected_ms: 1_700_000_000_500,
        },
    );
}

#[test]
fn owner_record() {
    let owner = OwnerRecord {
        stream_id: 42,
        topic: "orders.v1".into(),
        partition: 3,
        broker: 2,
        epoch: 5,
        moving_to: None,
    };
    golden("owner.json", &owner);
    golden(
        "owner_moving.json",
        &OwnerRecord {
            moving_to: Some(7),
            ..owner
        },
    );
}

#[test]
fn drain_record() {
    golden(
        "drain.json",
        &DrainRecord {
            broker: 3,
            requested_ms: 1_700_000_009_000,
        },
    );
}

#[test]
fn changes_record() {
    golden(
        "changes.json",
        &ChangesRecord {
            ms: 1_700_000_001_234,
        },
    );
}

#[test]
fn group_record() {
    golden(
        "group.json",
        &GroupRecord {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("consumer-1-6f0c1c1e-4d1f-4a8e-9c53-2b7d1f0e9a11".into()),
            static_members: BTreeMap::from([
                (
                    "instance-b".to_owned(),
                    "instance-b-0b5e2f6a-7c1d-4e8f-a2b3-c4d5e6f7a8b9".to_owned(),
                ),
                (
                    "instance-a".to_owned(),
                    "consumer-1-6f0c1c1e-4d1f-4a8e-9c53-2b7d1f0e9a11".to_owned(),
                ),
            ]),
            updated_ms: 1_700_000_002_000,
        },
    );
    // An empty group (no rebalance completed yet, or all members gone).
    golden(
        "group_empty.json",
        &GroupRecord {
            protocol_type: String::new(),
            generation: 0,
            protocol: None,
            leader: None,
            static_members: BTreeMap::new(),
            updated_ms: 1_700_000_002_500,
        },
    );
}

#[test]
fn offsets_record() {
    golden(
        "offsets.json",
        &OffsetsRecord {
            partitions: BTreeMap::from([
                (
                    10,
                    CommittedOffset {
                        offset: 0,
                        leader_epoch: -1,
                        metadata: None,
                        commit_ms: 1_700_000_003_100,
                    },
                ),
                (
                    2,
                    CommittedOffset {
                        offset: 1234,
                        leader_epoch: 3,
                        metadata: Some("app=\"billing\"; host=h1\n".into()),
                        commit_ms: 1_700_000_003_000,
                    },
                ),
                (
                    0,
                    CommittedOffset {
                        offset: 42,
                        leader_epoch: 3,
                        metadata: Some(String::new()),
                        commit_ms: 1_700_000_003_000,
                    },
                ),
            ]),
        },
    );
}

#[test]
fn group_keys_escape_group_names() {
    assert_eq!(records::group_key("my-group"), "groups/my-group");
    assert_eq!(records::group_key("a/b"), "groups/a%2Fb");
    assert_eq!(records::group_key("100%"), "groups/100%25");
    assert_eq!(records::group_key("a%2Fb"), "groups/a%252Fb");
    assert_eq!(records::group_key("tab\there\n"), "groups/tab%09here%0A");
    assert_eq!(records::group_key("del\u{7f}"), "groups/del%7F");
    // C1 controls are two UTF-8 bytes, each escaped; other Unicode is kept.
    assert_eq!(records::group_key("c1\u{85}"), "groups/c1%C2%85");
    assert_eq!(records::group_key("grüppe 日本"), "groups/grüppe 日本");
    assert_eq!(records::group_key(""), "groups/");
    assert_eq!(
        records::offsets_key("a/b", "orders.v1"),
        "offsets/a%2Fb/orders.v1"
    );
    assert_eq!(records::group_offsets_prefix("a/b"), "offsets/a%2Fb/");
    assert_eq!(records::group_offsets_prefix(""), "offsets//");
    // One group's prefix never covers another group's keys.
    assert!(!records::offsets_key("a/b", "t").starts_with(&records::group_offsets_prefix("a")));
}

#[test]
fn keys_sort_numerically() {
    assert_eq!(
        records::object_key(3, 7),
        "objects/0000000003/00000000000000000007"
    );
    assert_eq!(
        records::object_key(i32::MAX, u64::MAX),
        "objects/2147483647/18446744073709551615"
    );
    assert!(records::object_key(1, 9) < records::object_key(1, 10));
    assert!(records::object_key(9, u64::MAX) < records::object_key(10, 1));
    assert_eq!(records::writer_objects_prefix(3), "objects/0000000003/");
    assert_eq!(records::checkpoint_key(3), "index/0000000003");
    assert_eq!(records::topic_key("a.b"), "topics/a.b");
    assert_eq!(records::broker_key(12), "brokers/0000000012");
    assert_eq!(records::load_key(12), "load/0000000012");
    assert_eq!(records::drain_key(12), "drains/0000000012");
    assert_eq!(records::owner_key(42), "owners/00000000000000000042");
    assert!(records::owner_key(9) < records::owner_key(10));
    assert!(records::broker_key(9) < records::broker_key(10));
    assert_eq!(records::parse_broker_id("0000000012"), Some(12));
    assert_eq!(records::parse_broker_id("-000000001"), None);
    assert_eq!(records::parse_broker_id("12"), None);
    assert_eq!(records::parse_seq("00000000000000000042"), Some(42));
    assert_eq!(records::parse_seq("0000000000000000004x"), None);
}

#[test]
fn owner_record_without_moving_to_decodes_from_older_writers() {
    // `moving_to` is optional on the wire: absent means no pending move.
    let owner: OwnerRecord = records::decode(
        "k",
        br#"{"v":1,"stream_id":1,"topic":"t","partition":0,"broker":1,"epoch":0}"#,
    )
    .unwrap();
    assert_eq!(owner.moving_to, None);
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
