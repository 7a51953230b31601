//! Tests of the `Metadata` model, on `MemoryMetaStore` and (across reopen) on
//! `EmbeddedMetaStore`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use cirrus_controller::metadata::{MAX_PARTITIONS, MAX_PRODUCER_ID_BLOCK};
use cirrus_controller::{
    CheckpointRecord, Clock, Compare, EmbeddedMetaStore, Entity, MemoryMetaStore, MetaError,
    MetaStore, Metadata, ObjectRecord, ProducerRecord, RunRecord, Txn,
};

const ROOT: &str = "/cirrus/";

/// The object-index writer (broker id) used by these tests.
const W: i32 = 1;

#[derive(Debug)]
struct FixedClock(i64);

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

fn memory() -> (Arc<MemoryMetaStore>, Metadata) {
    let store = Arc::new(MemoryMetaStore::new());
    let meta = Metadata::new(store.clone(), ROOT).with_clock(Arc::new(FixedClock(1234)));
    (store, meta)
}

fn object(seq: u64) -> ObjectRecord {
    ObjectRecord {
        seq,
        key: format!("data/{seq:020}.obj"),
        size: 1000 + seq,
        writer: "broker-0".into(),
        committed_ms: 1_700_000_000_000 + i64::try_from(seq).unwrap(),
        runs: vec![RunRecord {
            stream_id: 1,
            first_offset: i64::try_from(seq).unwrap() * 10,
            last_offset: i64::try_from(seq).unwrap() * 10 + 9,
            max_timestamp: 5,
            position: 0,
            length: 900,
            leader_epoch: 0,
            producers: vec![ProducerRecord {
                producer_id: 7,
                producer_epoch: 1,
                first_sequence: 0,
                last_sequence: 9,
                last_offset: i64::try_from(seq).unwrap() * 10 + 9,
                last_timestamp: 5,
            }],
            cleaned: false,
            tombstones_expire_ms: None,
        }],
    }
}

fn checkpoint(through_seq: u64) -> CheckpointRecord {
    CheckpointRecord {
        through_seq,
        key: format!("index/{through_seq:020}.ckpt"),
        written_ms: 99,
    }
}

fn seqs(objects: &[ObjectRecord]) -> Vec<u64> {
    objects.iter().map(|o| o.seq).collect()
}

#[tokio::test]
async fn init_cluster_creates_once() {
    let (_, meta) = memory();
    let first = meta.init_cluster().await.unwrap();
    assert_eq!(first.cluster_id.len(), 22);
    assert!(
        first
            .cluster_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let second = meta.init_cluster().await.unwrap();
    assert_eq!(first, second, "init_cluster returns the existing record");
}

#[tokio::test]
async fn topics_lifecycle() {
    let (_, meta) = memory();
    let configs = BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]);
    let b = meta.create_topic("b", 3, configs.clone()).await.unwrap();
    assert_eq!(b.name, "b");
    assert_eq!(
        b.created_ms, 1234,
        "created_ms comes from the injected clock"
    );
    assert_eq!(b.configs, configs);
    assert_eq!(
        b.partitions.iter().map(|p| p.index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let a = meta.create_topic("a", 2, BTreeMap::new()).await.unwrap();
    assert_ne!(a.topic_id, b.topic_id);

    let err = meta
        .create_topic("a", 5, BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::AlreadyExists {
                kind: Entity::Topic,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        meta.get_topic("a").await.unwrap().unwrap(),
        a,
        "failed create changed nothing"
    );

    let names: Vec<String> = meta
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a", "b"], "list_topics is sorted by name");

    // Stream ids are unique across topics.
    let mut ids: Vec<u64> = a
        .partitions
        .iter()
        .chain(&b.partitions)
        .map(|p| p.stream_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    assert!(!ids.contains(&0), "0 is never a stream id");

    let grown = meta.add_partitions("a", 4).await.unwrap();
    assert_eq!(grown.partitions.len(), 4);
    assert_eq!(
        grown.partitions[..2],
        a.partitions[..],
        "existing partitions are kept"
    );
    assert_eq!(grown.partitions[3].index, 3);
    for p in &grown.partitions[2..] {
        assert!(
            !ids.contains(&p.stream_id),
            "new partitions get fresh stream ids"
        );
    }
    for total in [4, 3] {
        let err = meta.add_partitions("a", total).await.unwrap_err();
        assert!(matches!(err, MetaError::InvalidPartitions { .. }), "{err}");
    }
    let err = meta.add_partitions("missing", 4).await.unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::NotFound {
                kind: Entity::Topic,
                ..
            }
        ),
        "{err}"
    );

    let new_configs = BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]);
    let updated = meta
        .set_topic_configs("b", new_configs.clone())
        .await
        .unwrap();
    assert_eq!(updated.configs, new_configs, "configs are replaced");
    assert_eq!(
        meta.get_topic("b").await.unwrap().unwrap().configs,
        new_configs
    );

    let t = meta.set_log_start_offset("b", 1, 100).await.unwrap();
    assert_eq!(t.partitions[1].log_start_offset, 100);
    let t = meta.set_log_start_offset("b", 1, 50).await.unwrap();
    assert_eq!(
        t.partitions[1].log_start_offset, 100,
        "log start offset never moves back"
    );
    assert_eq!(
        meta.get_topic("b").await.unwrap().unwrap().partitions[1].log_start_offset,
        100
    );
    for partition in [3, -1] {
        let err = meta
            .set_log_start_offset("b", partition, 10)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                MetaError::NotFound {
                    kind: Entity::Partition,
                    ..
                }
            ),
            "{err}"
        );
    }

    let deleted = meta.delete_topic("b").await.unwrap();
    assert_eq!(deleted.name, "b");
    assert_eq!(meta.get_topic("b").await.unwrap(), None);
    let err = meta.delete_topic("b").await.unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::NotFound {
                kind: Entity::Topic,
                ..
            }
        ),
        "{err}"
    );
    let again = meta.create_topic("b", 3, BTreeMap::new()).await.unwrap();
    for p in &again.partitions {
        assert!(
            !deleted
                .partitions
                .iter()
                .any(|d| d.stream_id == p.stream_id),
            "stream ids are never reused after delete"
        );
    }
}

#[tokio::test]
async fn topic_names_and_partition_counts_are_validated() {
    let (store, meta) = memory();
    let long_ok = "x".repeat(249);
    meta.create_topic(&long_ok, 1, BTreeMap::new())
        .await
        .unwrap();
    meta.create_topic("A-z_0.9", 1, BTreeMap::new())
        .await
        .unwrap();
    for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
        let err = meta
            .create_topic(bad, 1, BTreeMap::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, MetaError::InvalidTopicName { .. }),
            "{bad:?}: {err}"
        );
    }
    for bad in [0, -1, MAX_PARTITIONS + 1] {
        let err = meta
            .create_topic("t", bad, BTreeMap::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, MetaError::InvalidPartitions { .. }),
            "{bad}: {err}"
        );
    }
    // The largest topic still fits in one value.
    let big = meta
        .create_topic("big", MAX_PARTITIONS, BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(
        big.partitions.len(),
        usize::try_from(MAX_PARTITIONS).unwrap()
    );
    // An oversized value is refused before it reaches the store.
    let huge = BTreeMap::from([("k".to_owned(), "v".repeat(1024 * 1024))]);
    let err = meta.create_topic("huge", 1, huge).await.unwrap_err();
    assert!(matches!(err, MetaError::TooLarge(_)), "{err}");
    assert!(store.get("/cirrus/topics/huge").await.unwrap().is_none());
}

#[tokio::test]
async fn commit_object_is_one_guarded_write() {
    let (store, meta) = memory();
    assert_eq!(meta.last_object_seq(W).await.unwrap(), 0);
    for seq in 1..=3 {
        meta.commit_object(W, object(seq), None).await.unwrap();
    }
    assert_eq!(
        seqs(&meta.list_objects_after(W, 0).await.unwrap()),
        [1, 2, 3]
    );
    assert_eq!(seqs(&meta.list_objects_after(W, 2).await.unwrap()), [3]);
    assert_eq!(
        meta.list_objects_after(W, 1).await.unwrap()[0],
        object(2),
        "records round-trip"
    );
    assert_eq!(meta.last_object_seq(W).await.unwrap(), 3);

    // Retrying an identical commit (e.g. after a transport error) succeeds.
    meta.commit_object(W, object(3), None).await.unwrap();
    // A different record under the same seq is refused.
    let mut other = object(3);
    other.writer = "broker-9".into();
    let err = meta.commit_object(W, other, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::AlreadyExists {
                kind: Entity::Object,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(meta.list_objects_after(W, 2).await.unwrap()[0], object(3));

    // Fencing: the write applies only while the fence key has the expected version.
    assert!(
        store
            .txn(Txn::new().put("/fence/owner", "epoch-1"))
            .await
            .unwrap()
    );
    let version = store.get("/fence/owner").await.unwrap().unwrap().version;
    let fence = |v| Compare::Version {
        key: "/fence/owner".into(),
        version: v,
    };
    meta.commit_object(W, object(4), Some(fence(version)))
        .await
        .unwrap();
    assert!(
        store
            .txn(Txn::new().put("/fence/owner", "epoch-2"))
            .await
            .unwrap()
    );
    let err = meta
        .commit_object(W, object(5), Some(fence(version)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MetaError::Fenced { key } if key == "/fence/owner"),
        "{err}"
    );
    assert_eq!(
        meta.last_object_seq(W).await.unwrap(),
        4,
        "fenced commit wrote nothing"
    );
}

#[tokio::test]
async fn checkpoint_hides_and_deletes_covered_objects() {
    let (store, meta) = memory();
    for seq in 1..=10 {
        meta.commit_object(W, object(seq), None).await.unwrap();
    }
    assert_eq!(meta.get_checkpoint(W).await.unwrap(), None);
    meta.commit_checkpoint(W, checkpoint(6), None)
        .await
        .unwrap();
    let (cp, version) = meta.get_checkpoint(W).await.unwrap().unwrap();
    assert_eq!(cp, checkpoint(6));
    assert_eq!(
        seqs(&meta.list_objects_after(W, 0).await.unwrap()),
        [7, 8, 9, 10]
    );
    assert_eq!(
        store
            .list("/cirrus/objects/0000000001/")
            .await
            .unwrap()
            .len(),
        4,
        "covered records deleted"
    );
    assert_eq!(meta.last_object_seq(W).await.unwrap(), 10);

    // A stale expected version is a conflict and changes nothing.
    let err = meta
        .commit_checkpoint(W, checkpoint(8), None)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::Conflict(_)), "{err}");
    let err = meta
        .commit_checkpoint(W, checkpoint(8), Some(version + 1000))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::Conflict(_)), "{err}");
    // Moving back is refused.
    let err = meta
        .commit_checkpoint(W, checkpoint(5), Some(version))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
    assert_eq!(
        meta.get_checkpoint(W).await.unwrap().unwrap().0,
        checkpoint(6)
    );

    // Leftovers at or below through_seq (an interrupted cleanup) are ignored by readers
    // and removed by the next checkpoint.
    meta.commit_object(W, object(3), None).await.unwrap();
    assert_eq!(
        seqs(&meta.list_objects_after(W, 0).await.unwrap()),
        [7, 8, 9, 10]
    );
    let snapshot = meta.index_snapshot(W).await.unwrap();
    assert_eq!(snapshot.through_seq(), 6);
    assert_eq!(seqs(&snapshot.objects), [7, 8, 9, 10]);
    meta.commit_checkpoint(W, checkpoint(8), Some(version))
        .await
        .unwrap();
    assert_eq!(seqs(&meta.list_objects_after(W, 0).await.unwrap()), [9, 10]);
    let left: Vec<String> = store
        .list("/cirrus/objects/0000000001/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        left,
        [
            "/cirrus/objects/0000000001/00000000000000000009",
            "/cirrus/objects/0000000001/00000000000000000010"
        ]
    );
    // After checkpointing everything, the next seq continues from through_seq.
    let (_, version) = meta.get_checkpoint(W).await.unwrap().unwrap();
    meta.commit_checkpoint(W, checkpoint(10), Some(version))
        .await
        .unwrap();
    assert!(meta.list_objects_after(W, 0).await.unwrap().is_empty());
    assert_eq!(meta.last_object_seq(W).await.unwrap(), 10);
}

#[tokio::test]
async fn metadata_stays_bounded_after_checkpoint() {
    let (store, meta) = memory();
    meta.init_cluster().await.unwrap();
    let topics = 5;
    let partitions = 20;
    for t in 0..topics {
        meta.create_topic(&format!("topic-{t}"), partitions, BTreeMap::new())
            .await
            .unwrap();
    }
    meta.allocate_producer_ids(10).await.unwrap();
    let baseline = store.list(ROOT).await.unwrap().len();
    // cluster + topics + 2 counters + changes
    assert_eq!(baseline, 1 + 5 + 2 + 1);
    for seq in 1..=1000 {
        meta.commit_object(W, object(seq), None).await.unwrap();
    }
    assert_eq!(store.list(ROOT).await.unwrap().len(), baseline + 1000);
    meta.commit_checkpoint(W, checkpoint(1000), None)
        .await
        .unwrap();
    let keys = store.list(ROOT).await.unwrap();
    // keys = 1 (cluster) + T (topics) + 2 (counters) + 1 (changes) + W (1 checkpoint)
    //        + O (0 objects left)
    assert_eq!(
        keys.len(),
        baseline + 1,
        "only the checkpoint key remains from the index: {keys:?}"
    );
    assert!(keys.len() <= 5 + usize::try_from(topics).unwrap());
    assert!(meta.list_objects_after(W, 0).await.unwrap().is_empty());
    assert_eq!(meta.last_object_seq(W).await.unwrap(), 1000);
    // The topics, with their partitions, are intact.
    let listed = meta.list_topics().await.unwrap();
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|t| t.partitions.len() == 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producer_id_allocations_are_disjoint() {
    let (_, meta) = memory();
    let mut tasks = Vec::new();
    for i in 0..20_i64 {
        let meta = meta.clone();
        tasks.push(tokio::spawn(async move {
            meta.allocate_producer_ids(1 + i % 3).await
        }));
    }
    let mut ranges = Vec::new();
    for task in tasks {
        ranges.push(task.await.unwrap().unwrap());
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for range in &ranges {
        assert!(!range.is_empty());
        for id in range.clone() {
            assert!(seen.insert(id), "producer id {id} handed out twice");
            total += 1;
        }
    }
    let expected: i64 = (0..20_i64).map(|i| 1 + i % 3).sum();
    assert_eq!(total, expected);
    // Allocation is dense from 0: the ranges tile 0..expected.
    assert_eq!(seen, (0..expected).collect::<HashSet<_>>());
    let next = meta.allocate_producer_ids(1).await.unwrap();
    assert_eq!(next, expected..expected + 1);
    for bad in [0, -5, MAX_PRODUCER_ID_BLOCK + 1] {
        let err = meta.allocate_producer_ids(bad).await.unwrap_err();
        assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
    }
}

#[tokio::test]
async fn corrupt_values_are_reported_with_their_key() {
    let (store, meta) = memory();
    assert!(
        store
            .txn(Txn::new().put("/cirrus/topics/bad", "{oops"))
            .await
            .unwrap()
    );
    let err = meta.get_topic("bad").await.unwrap_err();
    assert!(
        matches!(&err, MetaError::Corrupt { key, .. } if key == "/cirrus/topics/bad"),
        "{err}"
    );
    assert!(err.to_string().contains("/cirrus/topics/bad"));
    assert!(meta.list_topics().await.is_err());
}

#[tokio::test]
async fn roots_are_isolated() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let one = Metadata::new(store.clone(), "/one");
    let two = Metadata::new(store.clone(), "/one-two/");
    assert_eq!(one.root(), "/one/");
    one.create_topic("t", 1, BTreeMap::new()).await.unwrap();
    assert!(two.list_topics().await.unwrap().is_empty());
    two.create_topic("t", 1, BTreeMap::new()).await.unwrap();
    assert_eq!(one.list_topics().await.unwrap().len(), 1);
}

#[tokio::test]
async fn embedded_model_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let (cluster, orders, logs) = {
        let store = Arc::new(EmbeddedMetaStore::open(&path).unwrap());
        let meta = Metadata::new(store, ROOT);
        let cluster = meta.init_cluster().await.unwrap();
        let orders = meta
            .create_topic("orders", 3, BTreeMap::new())
            .await
            .unwrap();
        let logs = meta.create_topic("logs", 2, BTreeMap::new()).await.unwrap();
        // Enough objects that the checkpoint's deletions span several transactions.
        for seq in 1..=200 {
            meta.commit_object(W, object(seq), None).await.unwrap();
        }
        meta.commit_checkpoint(W, checkpoint(150), None)
            .await
            .unwrap();
        (cluster, orders, logs)
    };
    let store = Arc::new(EmbeddedMetaStore::open(&path).unwrap());
    let meta = Metadata::new(store.clone(), ROOT);
    assert_eq!(meta.init_cluster().await.unwrap(), cluster);
    assert_eq!(meta.list_topics().await.unwrap(), [logs, orders]);
    let after = meta.list_objects_after(W, 0).await.unwrap();
    assert_eq!(seqs(&after), (151..=200).collect::<Vec<_>>());
    assert_eq!(after[0], object(151));
    assert_eq!(
        meta.get_checkpoint(W).await.unwrap().unwrap().0,
        checkpoint(150)
    );
    assert_eq!(meta.last_object_seq(W).await.unwrap(), 200);
    assert_eq!(
        store
            .list("/cirrus/objects/0000000001/")
            .await
            .unwrap()
            .len(),
        50
    );
    // Allocation continues after reopen without reusing stream ids.
    let next = meta.create_topic("more", 1, BTreeMap::new()).await.unwrap();
    assert_eq!(next.partitions[0].stream_id, 6);
}

#[tokio::test]
async fn legacy_single_writer_index_migrates_to_a_writer() {
    let (store, meta) = memory();
    // The layout of earlier builds: objects/{seq} and index/checkpoint.
    for seq in 1..=150 {
        let key = format!("/cirrus/objects/{seq:020}");
        let value = cirrus_controller::records::encode(&key, &object(seq)).unwrap();
        assert!(store.txn(Txn::new().put(key, value)).await.unwrap());
    }
    let key = "/cirrus/index/checkpoint";
    let value = cirrus_controller::records::encode(key, &checkpoint(20)).unwrap();
    assert!(store.txn(Txn::new().put(key, value)).await.unwrap());
    // Before migrating, readers of the new layout ignore the legacy keys.
    assert!(meta.cluster_index().await.unwrap().is_empty());

    assert_eq!(meta.migrate_legacy_index(0).await.unwrap(), 151);
    let snapshot = meta.index_snapshot(0).await.unwrap();
    assert_eq!(snapshot.checkpoint.as_ref().unwrap().0, checkpoint(20));
    assert_eq!(seqs(&snapshot.objects), (21..=150).collect::<Vec<_>>());
    assert_eq!(snapshot.objects[0], object(21));
    assert_eq!(meta.last_object_seq(0).await.unwrap(), 150);
    let left: Vec<String> = store
        .list("/cirrus/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .filter(|k| {
            k == "/cirrus/index/checkpoint"
                || k.strip_prefix("/cirrus/objects/")
                    .is_some_and(|rest| !rest.contains('/'))
        })
        .collect();
    assert!(left.is_empty(), "legacy keys remain: {left:?}");
    assert_eq!(
        store
            .list("/cirrus/objects/0000000000/")
            .await
            .unwrap()
            .len(),
        130,
        "covered records were dropped, not moved"
    );
    assert_eq!(meta.migrate_legacy_index(0).await.unwrap(), 0, "idempotent");
    let index = meta.cluster_index().await.unwrap();
    assert_eq!(index.len(), 1);
    assert_eq!(index[0].writer, 0);
    assert_eq!(index[0].objects.len(), 130);
}
