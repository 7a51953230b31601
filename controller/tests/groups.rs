//! Durable consumer-group state (`groups/{group}`, `offsets/{group}/{topic}`, see
//! `src/groups.rs`) on `MemoryMetaStore` and `EmbeddedMetaStore`: every test runs on both.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cirrus_controller::groups::{MAX_GROUP_NAME_BYTES, MAX_OFFSET_COMMIT_TOPICS};
use cirrus_controller::records;
use cirrus_controller::{
    BrokerRecord, CommittedOffset, Compare, EmbeddedMetaStore, GroupRecord, MAX_VALUE_BYTES,
    MemoryMetaStore, MetaError, Metadata, Txn,
};

const ROOT: &str = "/cirrus/";

type Offsets = BTreeMap<String, BTreeMap<i32, CommittedOffset>>;

struct Fixture {
    meta: Metadata,
    _dir: Option<tempfile::TempDir>,
}

fn memory() -> Fixture {
    Fixture {
        meta: Metadata::new(Arc::new(MemoryMetaStore::new()), ROOT),
        _dir: None,
    }
}

fn embedded() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedMetaStore::open(dir.path().join("meta.redb")).unwrap();
    Fixture {
        meta: Metadata::new(Arc::new(store), ROOT),
        _dir: Some(dir),
    }
}

/// Runs each listed test once on a fresh `MemoryMetaStore` and once on a fresh
/// `EmbeddedMetaStore`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::memory()).await;
                }
            )*
        }
        mod embedded_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::embedded()).await;
                }
            )*
        }
    };
}

on_both_stores!(
    put_and_get_group,
    commit_fetch_and_merge_offsets_across_calls_and_topics,
    concurrent_commits_to_one_topic_all_survive,
    delete_offsets_removes_partitions_then_the_key,
    expiry_spares_offsets_committed_since_the_sweep_read_them,
    delete_group_removes_the_record_and_all_offsets_only_of_that_group,
    delete_group_of_more_topics_than_one_transaction_holds,
    list_group_names_covers_records_offsets_and_odd_names,
    a_failed_fence_writes_nothing,
    values_and_transactions_over_the_limits_are_too_large,
    more_than_127_topics_in_one_commit_are_rejected,
    invalid_arguments_are_rejected,
);

fn offset(offset: i64, metadata: Option<&str>) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: 3,
        metadata: metadata.map(str::to_owned),
        commit_ms: 1_700_000_000_000 + offset,
    }
}

fn offsets(entries: &[(&str, i32, CommittedOffset)]) -> Offsets {
    let mut out = Offsets::new();
    for (topic, partition, o) in entries {
        out.entry((*topic).to_owned())
            .or_default()
            .insert(*partition, o.clone());
    }
    out
}

fn group_record(generation: i32) -> GroupRecord {
    GroupRecord {
        protocol_type: "consumer".into(),
        generation,
        protocol: Some("range".into()),
        leader: Some("member-1".into()),
        static_members: BTreeMap::from([("instance-1".to_owned(), "member-1".to_owned())]),
        updated_ms: 1_700_000_000_000,
    }
}

/// The number of keys stored under the root.
async fn key_count(meta: &Metadata) -> usize {
    meta.store().list(meta.root()).await.unwrap().len()
}

async fn raw_get(meta: &Metadata, relative: &str) -> Option<cirrus_controller::KeyValue> {
    meta.store()
        .get(&format!("{}{relative}", meta.root()))
        .await
        .unwrap()
}

async fn put_and_get_group(f: Fixture) {
    let meta = &f.meta;
    assert_eq!(meta.get_group("g").await.unwrap(), None);
    let first = group_record(1);
    meta.put_group("g", &first, None).await.unwrap();
    let (got, v1) = meta.get_group("g").await.unwrap().unwrap();
    assert_eq!(got, first);
    let second = GroupRecord {
        generation: 2,
        protocol: None,
        leader: None,
        static_members: BTreeMap::new(),
        ..first.clone()
    };
    meta.put_group("g", &second, None).await.unwrap();
    let (got, v2) = meta.get_group("g").await.unwrap().unwrap();
    assert_eq!(got, second);
    assert!(v2 > v1, "a put moves the version");
    assert_eq!(meta.get_group("other").await.unwrap(), None);
    assert!(raw_get(meta, "groups/g").await.is_some());
}

async fn commit_fetch_and_merge_offsets_across_calls_and_topics(f: Fixture) {
    let meta = &f.meta;
    assert!(meta.fetch_offsets("g").await.unwrap().is_empty());
    let quoted = "unicode ✓ \"quoted\"\nline";
    meta.commit_offsets(
        "g",
        &offsets(&[
            ("t1", 0, offset(10, None)),
            ("t1", 1, offset(11, Some(""))),
            ("t2", 0, offset(20, Some(quoted))),
        ]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        meta.fetch_offsets("g").await.unwrap(),
        offsets(&[
            ("t1", 0, offset(10, None)),
            ("t1", 1, offset(11, Some(""))),
            ("t2", 0, offset(20, Some(quoted))),
        ]),
        "metadata round-trips: null, empty and arbitrary text stay distinct"
    );
    // A second call merges: partition 1 replaced, 2 added, 0 and t2 kept.
    meta.commit_offsets(
        "g",
        &offsets(&[
            ("t1", 1, offset(111, Some("m"))),
            ("t1", 2, offset(12, None)),
        ]),
        None,
    )
    .await
    .unwrap();
    // A third adds a topic, and empty topics are ignored.
    let mut third = offsets(&[("t3", 7, offset(37, None))]);
    third.insert("t4".into(), BTreeMap::new());
    meta.commit_offsets("g", &third, None).await.unwrap();
    let expected = offsets(&[
        ("t1", 0, offset(10, None)),
        ("t1", 1, offset(111, Some("m"))),
        ("t1", 2, offset(12, None)),
        ("t2", 0, offset(20, Some(quoted))),
        ("t3", 7, offset(37, None)),
    ]);
    assert_eq!(meta.fetch_offsets("g").await.unwrap(), expected);
    // Stored one key per topic, none for the empty one, and other groups see nothing.
    assert!(raw_get(meta, "offsets/g/t1").await.is_some());
    assert!(raw_get(meta, "offsets/g/t4").await.is_none());
    assert_eq!(key_count(meta).await, 3);
    assert!(meta.fetch_offsets("g2").await.unwrap().is_empty());
    assert!(meta.fetch_offsets("").await.unwrap().is_empty());
    // An empty commit changes nothing.
    meta.commit_offsets("g", &Offsets::new(), None)
        .await
        .unwrap();
    assert_eq!(meta.fetch_offsets("g").await.unwrap(), expected);
    // The lag monitor's view: every group's offsets, by group then topic.
    meta.commit_offsets("a/b", &offsets(&[("t1", 3, offset(5, None))]), None)
        .await
        .unwrap();
    let all = meta.list_all_offsets().await.unwrap();
    let listed: Vec<(&str, &str, Vec<i32>)> = all
        .iter()
        .map(|(g, t, p)| (g.as_str(), t.as_str(), p.keys().copied().collect()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("a/b", "t1", vec![3]),
            ("g", "t1", vec![0, 1, 2]),
            ("g", "t2", vec![0]),
            ("g", "t3", vec![7]),
        ]
    );
    assert_eq!(all[1].2[&1], offset(111, Some("m")));
}

async fn concurrent_commits_to_one_topic_all_survive(f: Fixture) {
    let meta = f.meta.clone();
    let tasks: Vec<_> = (0..16)
        .map(|p| {
            let meta = meta.clone();
            tokio::spawn(async move {
                meta.commit_offsets("g", &offsets(&[("t", p, offset(i64::from(p), None))]), None)
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let fetched = meta.fetch_offsets("g").await.unwrap();
    assert_eq!(
        fetched["t"].keys().copied().collect::<Vec<_>>(),
        (0..16).collect::<Vec<_>>(),
        "the compare-and-swap merge loses no concurrent commit"
    );
}

/// The sweeper's race with a commit: an entry goes only if it still carries the commit
/// time the sweeper saw; the record-only delete leaves offsets alone.
async fn expiry_spares_offsets_committed_since_the_sweep_read_them(f: Fixture) {
    let meta = &f.meta;
    let seen = offsets(&[("t", 0, offset(1, None)), ("t", 1, offset(2, None))]);
    meta.commit_offsets("g", &seen, None).await.unwrap();
    meta.put_group("g", &GroupRecord::default(), None)
        .await
        .unwrap();
    // Partition 1 is committed again after the sweeper read it.
    meta.commit_offsets("g", &offsets(&[("t", 1, offset(7, None))]), None)
        .await
        .unwrap();
    let expired = BTreeMap::from([(0, seen["t"][&0].commit_ms), (1, seen["t"][&1].commit_ms)]);
    assert_eq!(
        meta.expire_offsets("g", "t", &expired, None).await.unwrap(),
        1
    );
    assert_eq!(
        meta.fetch_offsets("g").await.unwrap(),
        offsets(&[("t", 1, offset(7, None))])
    );
    assert_eq!(
        meta.expire_offsets("g", "t", &expired, None).await.unwrap(),
        0
    );
    assert_eq!(
        meta.expire_offsets("g", "gone", &expired, None)
            .await
            .unwrap(),
        0
    );
    // Deleting only the record keeps the offsets committed meanwhile.
    meta.delete_group_record("g", None).await.unwrap();
    assert_eq!(meta.get_group("g").await.unwrap(), None);
    assert_eq!(
        meta.fetch_offsets("g").await.unwrap(),
        offsets(&[("t", 1, offset(7, None))])
    );
    meta.delete_group_record("g", None).await.unwrap();
}

async fn delete_offsets_removes_partitions_then_the_key(f: Fixture) {
    let meta = &f.meta;
    meta.commit_offsets(
        "g",
        &offsets(&[
            ("t1", 0, offset(1, None)),
            ("t1", 1, offset(2, None)),
            ("t1", 2, offset(3, None)),
            ("t2", 0, offset(4, None)),
        ]),
        None,
    )
    .await
    .unwrap();
    // Unknown partitions are ignored.
    meta.delete_offsets("g", "t1", &[1, 99], None)
        .await
        .unwrap();
    assert_eq!(
        meta.fetch_offsets("g").await.unwrap(),
        offsets(&[
            ("t1", 0, offset(1, None)),
            ("t1", 2, offset(3, None)),
            ("t2", 0, offset(4, None)),
        ])
    );
    meta.delete_offsets("g", "t1", &[0, 2], None).await.unwrap();
    assert_eq!(
        meta.fetch_offsets("g").await.unwrap(),
        offsets(&[("t2", 0, offset(4, None))])
    );
    assert!(
        raw_get(meta, "offsets/g/t1").await.is_none(),
        "the last partition takes the key with it"
    );
    // Nothing to delete: fine.
    meta.delete_offsets("g", "t1", &[0], None).await.unwrap();
    meta.delete_offsets("g", "t2", &[], None).await.unwrap();
    meta.delete_offsets("nobody", "t2", &[0], None)
        .await
        .unwrap();
    assert_eq!(
        meta.fetch_offsets("g").await.unwrap(),
        offsets(&[("t2", 0, offset(4, None))])
    );
}

async fn delete_group_removes_the_record_and_all_offsets_only_of_that_group(f: Fixture) {
    let meta = &f.meta;
    // "a", and names whose escaped form starts like it.
    for group in ["a", "a/b", "ab", "a%2Fb"] {
        meta.put_group(group, &group_record(1), None).await.unwrap();
        meta.commit_offsets(
            group,
            &offsets(&[
                ("t1", 0, offset(1, None)),
                ("t2", 0, offset(2, None)),
                ("t3", 5, offset(3, None)),
            ]),
            None,
        )
        .await
        .unwrap();
    }
    assert_eq!(key_count(meta).await, 16);
    meta.delete_group("a", None).await.unwrap();
    assert_eq!(meta.get_group("a").await.unwrap(), None);
    assert!(meta.fetch_offsets("a").await.unwrap().is_empty());
    assert_eq!(key_count(meta).await, 12);
    assert_eq!(
        meta.list_group_names().await.unwrap(),
        ["a%2Fb", "a/b", "ab"]
    );
    for group in ["a/b", "ab", "a%2Fb"] {
        assert!(meta.get_group(group).await.unwrap().is_some(), "{group}");
        assert_eq!(meta.fetch_offsets(group).await.unwrap().len(), 3, "{group}");
    }
    // A group with only offsets, only a record, or nothing at all.
    meta.delete_group("a/b", None).await.unwrap();
    meta.delete_offsets("ab", "t1", &[0], None).await.unwrap();
    meta.delete_offsets("ab", "t2", &[0], None).await.unwrap();
    meta.delete_offsets("ab", "t3", &[5], None).await.unwrap();
    meta.delete_group("ab", None).await.unwrap();
    meta.delete_group("never-existed", None).await.unwrap();
    assert_eq!(meta.list_group_names().await.unwrap(), ["a%2Fb"]);
    meta.delete_group("a%2Fb", None).await.unwrap();
    assert_eq!(key_count(meta).await, 0);
}

async fn delete_group_of_more_topics_than_one_transaction_holds(f: Fixture) {
    let meta = &f.meta;
    meta.put_group("big", &group_record(3), None).await.unwrap();
    // 300 topics in three commits of 100.
    for batch in 0..3 {
        let entries: Vec<_> = (0..100)
            .map(|i| {
                (
                    format!("topic-{:03}", batch * 100 + i),
                    0,
                    offset(i64::from(i), None),
                )
            })
            .collect();
        let commit: Offsets = entries
            .iter()
            .map(|(t, p, o)| (t.clone(), BTreeMap::from([(*p, o.clone())])))
            .collect();
        meta.commit_offsets("big", &commit, None).await.unwrap();
    }
    meta.commit_offsets("small", &offsets(&[("t", 0, offset(1, None))]), None)
        .await
        .unwrap();
    assert_eq!(meta.fetch_offsets("big").await.unwrap().len(), 300);
    meta.delete_group("big", None).await.unwrap();
    assert_eq!(meta.get_group("big").await.unwrap(), None);
    assert!(meta.fetch_offsets("big").await.unwrap().is_empty());
    assert_eq!(meta.list_group_names().await.unwrap(), ["small"]);
    assert_eq!(key_count(meta).await, 1);
}

async fn list_group_names_covers_records_offsets_and_odd_names(f: Fixture) {
    let meta = &f.meta;
    assert!(meta.list_group_names().await.unwrap().is_empty());
    let t = |o| offsets(&[("t", 0, offset(o, None))]);
    meta.commit_offsets("only-offsets", &t(1), None)
        .await
        .unwrap();
    meta.put_group("only-record", &group_record(1), None)
        .await
        .unwrap();
    meta.put_group("both", &group_record(1), None)
        .await
        .unwrap();
    meta.commit_offsets("both", &t(2), None).await.unwrap();
    meta.commit_offsets(
        "both",
        &offsets(&[("u", 0, offset(3, None)), ("v", 1, offset(4, None))]),
        None,
    )
    .await
    .unwrap();
    let odd = [
        "a/b",
        "/leading/and/trailing/",
        "100%",
        "a%2Fb",
        "grüppe 日本 🎉",
        "tab\tand\nnewline",
        "",
    ];
    for (i, name) in odd.iter().enumerate() {
        if i % 2 == 0 {
            meta.commit_offsets(name, &t(5), None).await.unwrap();
        } else {
            meta.put_group(name, &group_record(1), None).await.unwrap();
        }
    }
    // Foreign keys that are not what the model writes are skipped.
    let junk = Txn::new()
        .put(format!("{ROOT}groups/bad%zz"), "x")
        .put(format!("{ROOT}offsets/no-topic-separator"), "x");
    assert!(meta.store().txn(junk).await.unwrap());

    let mut expected: Vec<String> = ["only-offsets", "only-record", "both"]
        .iter()
        .chain(odd.iter())
        .map(|s| (*s).to_owned())
        .collect();
    expected.sort();
    assert_eq!(meta.list_group_names().await.unwrap(), expected);
    // Every listed name reads back its own state.
    for (i, name) in odd.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(meta.fetch_offsets(name).await.unwrap(), t(5), "{name:?}");
            assert_eq!(meta.get_group(name).await.unwrap(), None, "{name:?}");
        } else {
            assert!(
                meta.fetch_offsets(name).await.unwrap().is_empty(),
                "{name:?}"
            );
            assert!(meta.get_group(name).await.unwrap().is_some(), "{name:?}");
        }
    }
}

fn broker(incarnation: &str) -> BrokerRecord {
    BrokerRecord {
        id: 1,
        host: "127.0.0.1".into(),
        port: 9092,
        admin_addr: "127.0.0.1:9095".into(),
        incarnation: incarnation.into(),
        durability: "object".into(),
        started_ms: 1,
    }
}

async fn a_failed_fence_writes_nothing(f: Fixture) {
    let meta = &f.meta;
    let store = meta.store().clone();
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let version = meta.register_broker(&broker("a"), lease).await.unwrap();
    let fence = meta.broker_fence(1, version);
    // Under a live registration every write applies.
    meta.put_group("g", &group_record(1), Some(fence.clone()))
        .await
        .unwrap();
    let committed = offsets(&[("t1", 0, offset(1, None)), ("t1", 1, offset(2, None))]);
    meta.commit_offsets("g", &committed, Some(fence.clone()))
        .await
        .unwrap();
    meta.delete_offsets("g", "t1", &[1], Some(fence.clone()))
        .await
        .unwrap();
    let before_record = meta.get_group("g").await.unwrap();
    let before_offsets = meta.fetch_offsets("g").await.unwrap();
    assert_eq!(before_offsets, offsets(&[("t1", 0, offset(1, None))]));

    // The session ends: the registration is deleted and the fence fails.
    store.lease_revoke(lease).await.unwrap();
    let keys = key_count(meta).await;
    let is_fenced = |r: Result<(), MetaError>| match r {
        Err(MetaError::Fenced { key }) => assert_eq!(key, fence.key()),
        other => panic!("expected Fenced, got {other:?}"),
    };
    is_fenced(
        meta.commit_offsets(
            "g",
            &offsets(&[("t1", 0, offset(99, None)), ("t2", 0, offset(99, None))]),
            Some(fence.clone()),
        )
        .await,
    );
    is_fenced(
        meta.commit_offsets(
            "new",
            &offsets(&[("t", 0, offset(1, None))]),
            Some(fence.clone()),
        )
        .await,
    );
    is_fenced(
        meta.put_group("g", &group_record(2), Some(fence.clone()))
            .await,
    );
    is_fenced(
        meta.put_group("new", &group_record(1), Some(fence.clone()))
            .await,
    );
    is_fenced(
        meta.delete_offsets("g", "t1", &[0], Some(fence.clone()))
            .await,
    );
    is_fenced(meta.delete_group("g", Some(fence.clone())).await);
    // Even calls with nothing to change report the lost fence.
    is_fenced(
        meta.commit_offsets("g", &Offsets::new(), Some(fence.clone()))
            .await,
    );
    is_fenced(
        meta.delete_offsets("g", "t1", &[7], Some(fence.clone()))
            .await,
    );
    is_fenced(meta.delete_group("nobody", Some(fence.clone())).await);
    assert_eq!(meta.get_group("g").await.unwrap(), before_record);
    assert_eq!(meta.fetch_offsets("g").await.unwrap(), before_offsets);
    assert_eq!(meta.get_group("new").await.unwrap(), None);
    assert!(meta.fetch_offsets("new").await.unwrap().is_empty());
    assert_eq!(key_count(meta).await, keys, "nothing written");

    // A new registration (new version) is a new fence; the old one stays dead.
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let version = meta.register_broker(&broker("b"), lease).await.unwrap();
    let new_fence = meta.broker_fence(1, version);
    is_fenced(
        meta.commit_offsets(
            "g",
            &offsets(&[("t1", 0, offset(5, None))]),
            Some(fence.clone()),
        )
        .await,
    );
    meta.commit_offsets(
        "g",
        &offsets(&[("t1", 0, offset(5, None))]),
        Some(new_fence.clone()),
    )
    .await
    .unwrap();
    meta.delete_group("g", Some(new_fence)).await.unwrap();
    assert!(meta.list_group_names().await.unwrap().is_empty());
    // A fence on a key that was never written (version 0 would mean "absent").
    let bogus = Compare::Version {
        key: format!("{ROOT}brokers/0000000042"),
        version: 12345,
    };
    is_fenced_on(
        meta.put_group("g", &group_record(1), Some(bogus.clone()))
            .await,
        &bogus,
    );
}

fn is_fenced_on(result: Result<(), MetaError>, fence: &Compare) {
    match result {
        Err(MetaError::Fenced { key }) => assert_eq!(key, fence.key()),
        other => panic!("expected Fenced, got {other:?}"),
    }
}

fn is_too_large(result: Result<(), MetaError>) {
    assert!(
        matches!(result, Err(MetaError::TooLarge(_))),
        "expected TooLarge, got {result:?}"
    );
}

async fn values_and_transactions_over_the_limits_are_too_large(f: Fixture) {
    let meta = &f.meta;
    // One offset whose metadata alone is over the value limit.
    let huge = "x".repeat(MAX_VALUE_BYTES);
    is_too_large(
        meta.commit_offsets("g", &offsets(&[("t", 0, offset(1, Some(&huge)))]), None)
            .await,
    );
    assert_eq!(key_count(meta).await, 0);
    // A value that grows over the limit by merging: the last commit fails, the stored
    // value stays as it was.
    let big = "y".repeat(400 * 1024);
    for p in 0..2 {
        meta.commit_offsets("g", &offsets(&[("t", p, offset(1, Some(&big)))]), None)
            .await
            .unwrap();
    }
    let before = meta.fetch_offsets("g").await.unwrap();
    is_too_large(
        meta.commit_offsets(
            "g",
            &offsets(&[("t", 2, offset(1, Some(&big))), ("u", 0, offset(1, None))]),
            None,
        )
        .await,
    );
    assert_eq!(meta.fetch_offsets("g").await.unwrap(), before);
    assert!(
        raw_get(meta, "offsets/g/u").await.is_none(),
        "all or nothing"
    );
    // Values each under the limit whose sum is over the transaction limit (etcd would
    // reject the request; every store refuses it the same way).
    let medium = "z".repeat(700 * 1024);
    is_too_large(
        meta.commit_offsets(
            "h",
            &offsets(&[
                ("a", 0, offset(1, Some(&medium))),
                ("b", 0, offset(1, Some(&medium))),
            ]),
            None,
        )
        .await,
    );
    assert!(meta.fetch_offsets("h").await.unwrap().is_empty());
    // A group record over the value limit.
    let mut record = group_record(1);
    for i in 0..20 {
        record
            .static_members
            .insert(format!("instance-{i}"), "m".repeat(64 * 1024));
    }
    is_too_large(meta.put_group("g", &record, None).await);
    assert_eq!(meta.get_group("g").await.unwrap(), None);
}

async fn more_than_127_topics_in_one_commit_are_rejected(f: Fixture) {
    let meta = &f.meta;
    let store = meta.store().clone();
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let version = meta.register_broker(&broker("a"), lease).await.unwrap();
    let fence = meta.broker_fence(1, version);
    let keys = key_count(meta).await;
    let commit = |n: usize| -> Offsets {
        (0..n)
            .map(|i| {
                (
                    format!("topic-{i:03}"),
                    BTreeMap::from([(0, offset(1, None))]),
                )
            })
            .collect()
    };
    assert_eq!(MAX_OFFSET_COMMIT_TOPICS, 127);
    let err = meta
        .commit_offsets("g", &commit(128), Some(fence.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("127"), "{err}");
    assert_eq!(key_count(meta).await, keys, "nothing written");
    // 127 topics and the fence: 128 compares, the most one transaction may have.
    meta.commit_offsets("g", &commit(127), Some(fence.clone()))
        .await
        .unwrap();
    assert_eq!(meta.fetch_offsets("g").await.unwrap().len(), 127);
    // And again, now that every key exists (127 version compares + the fence).
    meta.commit_offsets("g", &commit(127), Some(fence))
        .await
        .unwrap();
}

async fn invalid_arguments_are_rejected(f: Fixture) {
    let meta = &f.meta;
    let err = meta
        .commit_offsets("g", &offsets(&[("t", -1, offset(1, None))]), None)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
    let err = meta
        .commit_offsets("g", &offsets(&[("a/b", 0, offset(1, None))]), None)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::InvalidTopicName { .. }), "{err}");
    let err = meta.delete_offsets("g", "", &[0], None).await.unwrap_err();
    assert!(matches!(err, MetaError::InvalidTopicName { .. }), "{err}");
    // Kafka's longest string is fine, one byte more is not.
    let longest = "é".repeat(MAX_GROUP_NAME_BYTES / 2) + "x";
    assert_eq!(longest.len(), MAX_GROUP_NAME_BYTES);
    meta.commit_offsets(&longest, &offsets(&[("t", 0, offset(1, None))]), None)
        .await
        .unwrap();
    assert_eq!(meta.fetch_offsets(&longest).await.unwrap().len(), 1);
    assert_eq!(
        meta.list_group_names().await.unwrap(),
        vec![longest.clone()]
    );
    let too_long = longest + "x";
    let err = meta.get_group(&too_long).await.unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
    let err = meta
        .put_group(&too_long, &group_record(1), None)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
    assert_eq!(key_count(meta).await, 1);
    // A stored offsets value with a partition key that is not a number is corrupt.
    let key = format!("{ROOT}{}", records::offsets_key("c", "t"));
    assert!(
        meta.store()
            .txn(Txn::new().put(key.clone(), r#"{"v":1,"partitions":{"x":{"offset":1,"leader_epoch":0,"metadata":null,"commit_ms":0}}}"#))
            .await
            .unwrap()
    );
    let err = meta.fetch_offsets("c").await.unwrap_err();
    assert!(
        matches!(&err, MetaError::Corrupt { key: k, .. } if *k == key),
        "{err}"
    );
}
