//! Tests of the cluster part of the model (brokers, controller key, owners, drains,
//! `changes`, the per-writer index), the controller loop, and the bound on live
//! metadata, on `MemoryMetaStore`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cirrus_controller::cluster::{
    BOUND_BROKER_BYTES, BOUND_FIXED_BYTES, BOUND_PARTITION_BYTES, BOUND_TOPIC_BYTES,
};
use cirrus_controller::records::OWNERS_PREFIX;
use cirrus_controller::{
    BrokerLoad, BrokerRecord, CheckpointRecord, Compare, ControllerConfig, ControllerRecord,
    Entity, KeyValue, LeaseId, MAX_TXN_OPS, MAX_VALUE_BYTES, MemoryMetaStore, MetaError, MetaStore,
    Metadata, ObjectRecord, Op, OwnerChange, OwnerRecord, Policy, Session, Txn, read_view,
    reconcile, run_controller,
};

const ROOT: &str = "/cirrus/";

/// A store that records the largest transaction it was asked to run.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryMetaStore,
    txns: AtomicUsize,
    max_ops: AtomicUsize,
    max_compares: AtomicUsize,
    max_value: AtomicUsize,
    owner_lists: AtomicUsize,
}

#[async_trait]
impl MetaStore for Counting {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, MetaError> {
        if prefix.ends_with(OWNERS_PREFIX) {
            self.owner_lists.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.list(prefix).await
    }

    async fn txn(&self, txn: Txn) -> Result<bool, MetaError> {
        self.txns.fetch_add(1, Ordering::Relaxed);
        self.max_ops.fetch_max(txn.ops.len(), Ordering::Relaxed);
        self.max_compares
            .fetch_max(txn.compares.len(), Ordering::Relaxed);
        for op in &txn.ops {
            if let Op::Put { value, .. } = op {
                self.max_value.fetch_max(value.len(), Ordering::Relaxed);
            }
        }
        self.inner.txn(txn).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        self.inner.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<bool, MetaError> {
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), MetaError> {
        self.inner.lease_revoke(lease).await
    }
}

fn memory() -> (Arc<MemoryMetaStore>, Metadata) {
    let store = Arc::new(MemoryMetaStore::new());
    let meta = Metadata::new(store.clone(), ROOT);
    (store, meta)
}

fn broker(id: i32, incarnation: &str) -> BrokerRecord {
    BrokerRecord {
        id,
        host: "127.0.0.1".into(),
        port: 9092 + id,
        admin_addr: format!("127.0.0.1:{}", 9095 + id),
        incarnation: incarnation.into(),
        durability: "object".into(),
        started_ms: 1_700_000_000_000,
    }
}

fn object(seq: u64, writer: i32) -> ObjectRecord {
    ObjectRecord {
        seq,
        key: format!("data/{writer}/{seq:020}.obj"),
        size: 1000,
        writer: format!("broker-{writer}"),
        committed_ms: 1,
        runs: vec![],
    }
}

fn owner(stream_id: u64, broker: i32) -> OwnerRecord {
    OwnerRecord {
        stream_id,
        topic: "t".into(),
        partition: i32::try_from(stream_id).unwrap(),
        broker,
        epoch: 0,
        moving_to: None,
    }
}

/// Polls `check` every 20 ms until it holds; panics after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn broker_registration_is_exclusive_lease_bound_and_fences_commits() {
    let (store, meta) = memory();
    let lease = store.lease_grant(Duration::from_secs(10)).await.unwrap();
    let b1 = broker(1, "inc-a");
    let version = meta.register_broker(&b1, lease).await.unwrap();
    assert_eq!(meta.list_brokers().await.unwrap(), [(b1.clone(), version)]);

    // Another incarnation of the same id is refused while this one is live.
    let err = meta
        .register_broker(&broker(1, "inc-b"), lease)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::AlreadyExists {
                kind: Entity::Broker,
                ..
            }
        ),
        "{err}"
    );
    // The same record again (a retry) re-binds it and returns the new version.
    let again = meta.register_broker(&b1, lease).await.unwrap();
    assert!(again > version);

    // Commits fenced by the current registration version apply; older ones do not.
    let fence = meta.broker_fence(1, again);
    meta.commit_object(1, object(1, 1), Some(fence.clone()))
        .await
        .unwrap();
    let err = meta
        .commit_object(1, object(2, 1), Some(meta.broker_fence(1, version)))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::Fenced { .. }), "{err}");

    // The lease ends (expiry or revoke): the registration vanishes, and so does the
    // broker's right to commit.
    store.lease_revoke(lease).await.unwrap();
    assert!(meta.list_brokers().await.unwrap().is_empty());
    let err = meta
        .commit_object(1, object(2, 1), Some(fence))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::Fenced { .. }), "{err}");
    assert_eq!(meta.last_object_seq(1).await.unwrap(), 1);

    // A dead lease cannot register; a new one can, with a new fence.
    let err = meta.register_broker(&b1, lease).await.unwrap_err();
    assert!(matches!(err, MetaError::LeaseExpired), "{err}");
    let lease2 = store.lease_grant(Duration::from_secs(10)).await.unwrap();
    let b1b = broker(1, "inc-b");
    let v2 = meta.register_broker(&b1b, lease2).await.unwrap();
    meta.commit_object(1, object(2, 1), Some(meta.broker_fence(1, v2)))
        .await
        .unwrap();

    let err = meta
        .register_broker(&broker(-1, "x"), lease2)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
}

#[tokio::test]
async fn loads_are_lease_bound() {
    let (store, meta) = memory();
    let lease = store.lease_grant(Duration::from_secs(10)).await.unwrap();
    let mut load = BrokerLoad {
        id: 4,
        bytes_in_per_sec: 10.0,
        bytes_out_per_sec: 20.0,
        partitions: 3,
        cpu_cores_used: 0.5,
        measured_ms: 1,
        hot_partitions: Vec::new(),
    };
    meta.publish_load(&load, lease).await.unwrap();
    load.bytes_in_per_sec = 11.0;
    meta.publish_load(&load, lease).await.unwrap();
    assert_eq!(meta.list_loads().await.unwrap(), [load.clone()]);
    store.lease_revoke(lease).await.unwrap();
    assert!(meta.list_loads().await.unwrap().is_empty());
    let err = meta.publish_load(&load, lease).await.unwrap_err();
    assert!(matches!(err, MetaError::LeaseExpired), "{err}");
}

#[tokio::test]
async fn controller_key_election() {
    let (store, meta) = memory();
    let la = store.lease_grant(Duration::from_secs(10)).await.unwrap();
    let lb = store.lease_grant(Duration::from_secs(10)).await.unwrap();
    let a = controller_a();
    let b = ControllerRecord {
        broker_id: 2,
        incarnation: "b".into(),
        elected_ms: 2,
    };
    let va = meta.try_become_controller(&a, la).await.unwrap().unwrap();
    assert_eq!(meta.try_become_controller(&b, lb).await.unwrap(), None);
    assert_eq!(
        meta.try_become_controller(&a, la).await.unwrap(),
        Some(va),
        "the holder keeps its key and version"
    );
    assert_eq!(meta.get_controller().await.unwrap(), Some((a.clone(), va)));
    meta.resign_controller("b").await.unwrap();
    assert_eq!(
        meta.get_controller().await.unwrap(),
        Some((a, va)),
        "not b's to resign"
    );
    meta.resign_controller("a").await.unwrap();
    assert_eq!(meta.get_controller().await.unwrap(), None);
    let vb = meta.try_become_controller(&b, lb).await.unwrap().unwrap();
    assert!(vb > va);
    // Lease expiry (here: revoke) frees the key for the next candidate.
    store.lease_revoke(lb).await.unwrap();
    let again = ControllerRecord {
        elected_ms: 3,
        ..controller_a()
    };
    assert!(
        meta.try_become_controller(&again, la)
            .await
            .unwrap()
            .is_some()
    );
}

fn controller_a() -> ControllerRecord {
    ControllerRecord {
        broker_id: 1,
        incarnation: "a".into(),
        elected_ms: 1,
    }
}

#[tokio::test]
async fn owner_changes_apply_in_chunks_with_per_key_compares() {
    let store = Arc::new(Counting::default());
    let meta = Metadata::new(store.clone(), ROOT);
    let lease = store.lease_grant(Duration::from_secs(10)).await.unwrap();
    let ctl = controller_a();
    let cv = meta
        .try_become_controller(&ctl, lease)
        .await
        .unwrap()
        .unwrap();
    let guard = [Compare::Version {
        key: format!("{ROOT}controller"),
        version: cv,
    }];

    let changes0 = meta.changes_version().await.unwrap();
    assert_eq!(changes0, 0, "no change yet");
    let create: Vec<OwnerChange> = (1..=300)
        .map(|s| OwnerChange::Put {
            record: owner(s, 1),
            expected_version: 0,
        })
        .collect();
    let before = store.txns.load(Ordering::Relaxed);
    assert_eq!(
        meta.apply_owner_changes(&create, &guard).await.unwrap(),
        300
    );
    assert_eq!(
        store.txns.load(Ordering::Relaxed) - before,
        3,
        "300 changes fit in 3 transactions of 127"
    );
    assert!(store.max_ops.load(Ordering::Relaxed) <= MAX_TXN_OPS);
    assert!(store.max_compares.load(Ordering::Relaxed) <= MAX_TXN_OPS);
    let owners = meta.list_owners().await.unwrap();
    assert_eq!(owners.len(), 300);
    assert!(
        owners
            .windows(2)
            .all(|w| w[0].0.stream_id < w[1].0.stream_id),
        "sorted"
    );
    let changes1 = meta.changes_version().await.unwrap();
    assert!(changes1 > changes0, "owner changes bump `changes`");
    assert_eq!(meta.get_owner(7).await.unwrap(), Some(owners[6].clone()));
    assert_eq!(meta.get_owner(999).await.unwrap(), None);

    // One stale change among 200 does not block the other 199.
    let mut moves: Vec<OwnerChange> = owners[..200]
        .iter()
        .map(|(o, v)| OwnerChange::Put {
            record: OwnerRecord {
                moving_to: Some(2),
                ..o.clone()
            },
            expected_version: *v,
        })
        .collect();
    if let OwnerChange::Put {
        expected_version, ..
    } = &mut moves[50]
    {
        *expected_version += 1_000_000;
    }
    assert_eq!(meta.apply_owner_changes(&moves, &guard).await.unwrap(), 199);
    let after = meta.list_owners().await.unwrap();
    assert_eq!(
        after[50].0.moving_to, None,
        "the stale change did not apply"
    );
    assert_eq!(after[51].0.moving_to, Some(2));
    assert!(meta.changes_version().await.unwrap() > changes1);

    // A failed guard applies nothing.
    let bad_guard = [Compare::Version {
        key: format!("{ROOT}controller"),
        version: cv + 1_000_000,
    }];
    let deletes: Vec<OwnerChange> = after
        .iter()
        .map(|(o, v)| OwnerChange::Delete {
            stream_id: o.stream_id,
            expected_version: *v,
        })
        .collect();
    assert_eq!(
        meta.apply_owner_changes(&deletes, &bad_guard)
            .await
            .unwrap(),
        0
    );
    assert_eq!(meta.list_owners().await.unwrap().len(), 300);
    // The right guard deletes them all.
    assert_eq!(
        meta.apply_owner_changes(&deletes, &guard).await.unwrap(),
        300
    );
    assert!(meta.list_owners().await.unwrap().is_empty());

    // Malformed batches are refused whole.
    let twice = [create[0].clone(), create[0].clone()];
    let err = meta.apply_owner_changes(&twice, &guard).await.unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
    let negative = [OwnerChange::Put {
        record: owner(1, -3),
        expected_version: 0,
    }];
    let err = meta
        .apply_owner_changes(&negative, &guard)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
    let huge_guard = vec![guard[0].clone(); MAX_TXN_OPS];
    let err = meta
        .apply_owner_changes(&create[..1], &huge_guard)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
    assert!(meta.list_owners().await.unwrap().is_empty());
    assert_eq!(meta.apply_owner_changes(&[], &guard).await.unwrap(), 0);
}

#[tokio::test]
async fn topic_changes_bump_the_changes_key_and_drains_do_not() {
    let (_, meta) = memory();
    let mut last = meta.changes_version().await.unwrap();
    assert_eq!(last, 0);
    let mut bumped = |now: u64, what: &str| {
        assert!(now > last, "{what} must bump `changes`");
        last = now;
    };
    meta.create_topic("t", 2, BTreeMap::new()).await.unwrap();
    bumped(meta.changes_version().await.unwrap(), "create_topic");
    meta.add_partitions("t", 3).await.unwrap();
    bumped(meta.changes_version().await.unwrap(), "add_partitions");
    meta.set_topic_configs("t", BTreeMap::from([("a".into(), "b".into())]))
        .await
        .unwrap();
    bumped(meta.changes_version().await.unwrap(), "set_topic_configs");
    meta.set_log_start_offset("t", 0, 5).await.unwrap();
    bumped(
        meta.changes_version().await.unwrap(),
        "set_log_start_offset",
    );
    meta.delete_topic("t").await.unwrap();
    bumped(meta.changes_version().await.unwrap(), "delete_topic");

    meta.set_drain(2, true).await.unwrap();
    meta.set_drain(2, true).await.unwrap();
    meta.set_drain(5, true).await.unwrap();
    assert_eq!(meta.list_drains().await.unwrap(), BTreeSet::from([2, 5]));
    meta.set_drain(2, false).await.unwrap();
    meta.set_drain(7, false).await.unwrap();
    assert_eq!(meta.list_drains().await.unwrap(), BTreeSet::from([5]));
    assert_eq!(meta.changes_version().await.unwrap(), last);
    let err = meta.set_drain(-1, true).await.unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
}

#[tokio::test]
async fn the_object_index_is_per_writer_and_cluster_index_reads_them_all() {
    let (store, meta) = memory();
    // Writers have independent seq spaces.
    for writer in [1, 2, 3] {
        for seq in 1..=4 {
            meta.commit_object(writer, object(seq, writer), None)
                .await
                .unwrap();
        }
    }
    assert_eq!(meta.last_object_seq(2).await.unwrap(), 4);
    assert_eq!(meta.last_object_seq(9).await.unwrap(), 0);
    meta.commit_checkpoint(
        2,
        CheckpointRecord {
            through_seq: 3,
            key: "index/2/3.ckpt".into(),
            written_ms: 1,
        },
        None,
    )
    .await
    .unwrap();
    // Writer 3 checkpoints everything.
    meta.commit_checkpoint(
        3,
        CheckpointRecord {
            through_seq: 4,
            key: "index/3/4.ckpt".into(),
            written_ms: 1,
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .list("/cirrus/objects/0000000002/")
            .await
            .unwrap()
            .len(),
        1,
        "writer 2's covered records are deleted, and only its"
    );
    assert_eq!(
        store
            .list("/cirrus/objects/0000000001/")
            .await
            .unwrap()
            .len(),
        4
    );

    let index = meta.cluster_index().await.unwrap();
    let summary: Vec<(i32, u64, Vec<u64>)> = index
        .iter()
        .map(|w| {
            (
                w.writer,
                w.through_seq(),
                w.objects.iter().map(|o| o.seq).collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(1, 0, vec![1, 2, 3, 4]), (2, 3, vec![4]), (3, 4, vec![]),]
    );
    assert_eq!(index[1].objects[0], object(4, 2));
    assert_eq!(index[1].checkpoint.as_ref().unwrap().key, "index/2/3.ckpt");

    // A leftover below a checkpoint (interrupted cleanup) stays invisible.
    meta.commit_object(2, object(1, 2), None).await.unwrap();
    let index = meta.cluster_index().await.unwrap();
    assert_eq!(
        index[1].objects.iter().map(|o| o.seq).collect::<Vec<_>>(),
        [4]
    );

    let err = meta
        .commit_object(-1, object(1, 0), None)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err}");
}

/// Creates 10 topics x 1,000 partitions, registers 3 brokers, places every partition
/// with one reconcile, and checks the live metadata against the bound documented in
/// `cluster.rs`.
#[tokio::test]
async fn live_metadata_for_10k_partitions_stays_small() {
    const TOPICS: usize = 10;
    const PARTITIONS: usize = 1_000;
    let store = Arc::new(Counting::default());
    let meta = Metadata::new(store.clone(), ROOT);
    meta.init_cluster().await.unwrap();
    let session = Session::start(store.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let mut brokers = Vec::new();
    for id in 1..=3 {
        let record = broker(id, &format!("{id:08}-1b9d-4e07-a1f3-0c8d2e6b9a41"));
        meta.register_broker(&record, session.lease())
            .await
            .unwrap();
        meta.publish_load(
            &BrokerLoad {
                id,
                bytes_in_per_sec: 1.0e6,
                bytes_out_per_sec: 2.0e6,
                partitions: 3334,
                cpu_cores_used: 1.5,
                measured_ms: 1_700_000_000_000,
                hot_partitions: Vec::new(),
            },
            session.lease(),
        )
        .await
        .unwrap();
        brokers.push(record);
    }
    let names: Vec<String> = (0..TOPICS).map(|t| format!("topic-{t}")).collect();
    for name in &names {
        meta.create_topic(name, i32::try_from(PARTITIONS).unwrap(), BTreeMap::new())
            .await
            .unwrap();
    }
    let controller = ControllerRecord {
        broker_id: -1,
        incarnation: "standalone-controller-1".into(),
        elected_ms: 1,
    };
    let version = meta
        .try_become_controller(&controller, session.lease())
        .await
        .unwrap()
        .unwrap();
    let guard = [Compare::Version {
        key: format!("{ROOT}controller"),
        version,
    }];
    let policy = Policy::default();
    let view = read_view(&meta).await.unwrap();
    let changes = reconcile(&view, &policy);
    assert_eq!(changes.len(), TOPICS * PARTITIONS);
    assert_eq!(
        meta.apply_owner_changes(&changes, &guard).await.unwrap(),
        TOPICS * PARTITIONS
    );
    let settled = read_view(&meta).await.unwrap();
    assert!(
        reconcile(&settled, &policy).is_empty(),
        "placed and balanced"
    );
    let mut per_broker: BTreeMap<i32, usize> = BTreeMap::new();
    for (o, _) in &settled.owners {
        *per_broker.entry(o.broker).or_default() += 1;
    }
    assert_eq!(per_broker.len(), 3);
    assert!(
        per_broker.values().all(|n| (3333..=3334).contains(n)),
        "{per_broker:?}"
    );
    assert_eq!(
        store
            .list(&format!("{ROOT}{OWNERS_PREFIX}"))
            .await
            .unwrap()
            .len(),
        TOPICS * PARTITIONS,
        "one owner key per partition"
    );

    // Every key and value under the root.
    let all = store.list(ROOT).await.unwrap();
    let total: usize = all.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
    // The bound from cluster.rs (no drains, no index writers yet).
    let r = ROOT.len();
    let fixed = 5 * r + BOUND_FIXED_BYTES + controller.incarnation.len();
    let per_topic: usize = names
        .iter()
        .map(|n| r + BOUND_TOPIC_BYTES + 2 * n.len())
        .sum();
    let per_partition: usize = names
        .iter()
        .map(|n| PARTITIONS * (r + BOUND_PARTITION_BYTES + n.len()))
        .sum();
    let per_broker_bytes: usize = brokers
        .iter()
        .map(|b| {
            2 * r + BOUND_BROKER_BYTES + b.host.len() + b.admin_addr.len() + b.incarnation.len()
        })
        .sum();
    let bound = fixed + per_topic + per_partition + per_broker_bytes;
    println!(
        "live metadata for {} partitions: {} keys, {total} bytes ({} per partition); bound {bound} bytes",
        TOPICS * PARTITIONS,
        all.len(),
        total / (TOPICS * PARTITIONS)
    );
    assert!(
        total <= bound,
        "{total} bytes exceed the documented bound {bound}"
    );
    assert!(bound < 3_200_000, "the bound itself is small: {bound}");
    // cluster + stream-id counter + changes + controller + T topics + P owners + 2B
    // (no producer ids allocated yet).
    assert_eq!(
        all.len(),
        4 + TOPICS + TOPICS * PARTITIONS + 2 * brokers.len()
    );

    // The stores' per-transaction limits held throughout.
    assert!(store.max_ops.load(Ordering::Relaxed) <= MAX_TXN_OPS);
    assert!(store.max_compares.load(Ordering::Relaxed) <= MAX_TXN_OPS);
    assert!(store.max_value.load(Ordering::Relaxed) < MAX_VALUE_BYTES);
    session.close().await;
}

fn fast(broker_id: i32, incarnation: &str) -> ControllerConfig {
    ControllerConfig {
        tick: Duration::from_millis(50),
        ..ControllerConfig::new(broker_id, incarnation)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_controller_takes_over_when_the_leader_session_ends() {
    let (store, meta) = memory();
    let ttl = Duration::from_secs(1);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut sessions = BTreeMap::new();
    let mut configs = BTreeMap::new();
    let mut tasks = BTreeMap::new();
    for name in ["a", "b"] {
        let session = Session::start(store.clone(), ttl).await.unwrap();
        let config = fast(-1, name);
        tasks.insert(
            name,
            tokio::spawn(run_controller(
                meta.clone(),
                session.clone(),
                config.clone(),
                stop.clone(),
            )),
        );
        sessions.insert(name, session);
        configs.insert(name, config);
    }
    fn leaders(configs: &BTreeMap<&'static str, ControllerConfig>) -> Vec<&'static str> {
        configs
            .iter()
            .filter(|(_, c)| c.leader.load(Ordering::SeqCst))
            .map(|(n, _)| *n)
            .collect()
    }
    eventually("a leader", Duration::from_secs(5), || {
        let n = leaders(&configs).len();
        async move { n == 1 }
    })
    .await;
    let winner = leaders(&configs)[0];
    let loser = if winner == "a" { "b" } else { "a" };
    let (record, _) = meta.get_controller().await.unwrap().unwrap();
    assert_eq!(record.incarnation, winner);
    // Both keep running; the loser stays a follower.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(leaders(&configs), [winner]);

    // Close the winner's session: its key goes at once and the loser takes over.
    let closed_at = Instant::now();
    sessions.remove(winner).unwrap().close().await;
    eventually("the standby to take over", Duration::from_secs(3), || {
        let l = leaders(&configs);
        async move { l == [loser] }
    })
    .await;
    println!("takeover after close: {:?}", closed_at.elapsed());
    let (record, _) = meta.get_controller().await.unwrap().unwrap();
    assert_eq!(record.incarnation, loser);
    tokio::time::timeout(Duration::from_secs(2), tasks.remove(winner).unwrap())
        .await
        .expect("the old leader's loop returns once its session is lost")
        .unwrap();

    // A third candidate; then the leader's lease disappears behind its back (what
    // expiry looks like to the store): the candidate takes over.
    let session_c = Session::start(store.clone(), ttl).await.unwrap();
    let config_c = fast(-1, "c");
    let task_c = tokio::spawn(run_controller(
        meta.clone(),
        session_c.clone(),
        config_c.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!config_c.leader.load(Ordering::SeqCst));
    store.lease_revoke(sessions[loser].lease()).await.unwrap();
    eventually("c to take over", Duration::from_secs(3), || {
        let c = config_c.leader.load(Ordering::SeqCst);
        async move { c }
    })
    .await;
    eventually(
        "the deposed leader to notice",
        Duration::from_secs(3),
        || {
            let l = configs[loser].leader.load(Ordering::SeqCst);
            async move { !l }
        },
    )
    .await;

    // Shutdown: the leader resigns and every loop returns.
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(6), task_c)
        .await
        .unwrap()
        .unwrap();
    for (_, task) in tasks {
        tokio::time::timeout(Duration::from_secs(6), task)
            .await
            .unwrap()
            .unwrap();
    }
    assert!(!config_c.leader.load(Ordering::SeqCst));
    assert_eq!(
        meta.get_controller().await.unwrap(),
        None,
        "resigned on shutdown"
    );
    session_c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_broker_loses_object_partitions_and_keeps_local_ones() {
    let (store, meta) = memory();
    let obj = BTreeMap::from([("cirrus.durability".to_owned(), "object".to_owned())]);
    let loc = BTreeMap::from([("cirrus.durability".to_owned(), "local".to_owned())]);
    meta.create_topic("obj", 6, obj).await.unwrap();
    meta.create_topic("loc", 6, loc).await.unwrap();

    let mut broker_sessions = BTreeMap::new();
    let mut fences = BTreeMap::new();
    for id in 1..=3 {
        let session = Session::start(store.clone(), Duration::from_secs(1))
            .await
            .unwrap();
        let version = meta
            .register_broker(&broker(id, &format!("inc-{id}")), session.lease())
            .await
            .unwrap();
        fences.insert(id, meta.broker_fence(id, version));
        broker_sessions.insert(id, session);
    }
    let controller_session = Session::start(store.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let config = fast(-1, "ctl");
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_controller(
        meta.clone(),
        controller_session.clone(),
        config.clone(),
        stop,
    ));

    eventually("every partition placed", Duration::from_secs(5), || {
        let meta = meta.clone();
        async move { meta.list_owners().await.unwrap().len() == 12 }
    })
    .await;
    assert!(config.leader.load(Ordering::SeqCst));
    let placed = meta.list_owners().await.unwrap();
    let on_2: Vec<OwnerRecord> = placed
        .iter()
        .filter(|(o, _)| o.broker == 2)
        .map(|(o, _)| o.clone())
        .collect();
    assert_eq!(on_2.len(), 4, "12 partitions over 3 brokers");
    assert!(on_2.iter().any(|o| o.topic == "obj") && on_2.iter().any(|o| o.topic == "loc"));

    // Broker 2 goes silent: its keep-alives stop and its 1 s lease expires.
    drop(broker_sessions.remove(&2));
    let silent_at = Instant::now();
    eventually(
        "failover of broker 2's object partitions",
        Duration::from_secs(10),
        || {
            let meta = meta.clone();
            let on_2 = on_2.clone();
            async move {
                let now = meta.list_owners().await.unwrap();
                on_2.iter().filter(|o| o.topic == "obj").all(|before| {
                    now.iter()
                        .any(|(o, _)| o.stream_id == before.stream_id && o.broker != 2)
                })
            }
        },
    )
    .await;
    println!(
        "failover after the broker went silent: {:?}",
        silent_at.elapsed()
    );
    let after = meta.list_owners().await.unwrap();
    for before in &on_2 {
        let (now, _) = after
            .iter()
            .find(|(o, _)| o.stream_id == before.stream_id)
            .unwrap();
        if before.topic == "obj" {
            assert!(now.broker == 1 || now.broker == 3, "{now:?}");
            assert_eq!(now.epoch, before.epoch + 1, "failover raises the epoch");
            assert_eq!(now.moving_to, None);
        } else {
            assert_eq!(
                now, before,
                "local-durability partitions wait for their broker"
            );
        }
    }
    // Partitions of live brokers were not touched.
    for (o, _) in &placed {
        if o.broker != 2 {
            assert!(after.iter().any(|(a, _)| a == o), "{o:?} changed");
        }
    }
    // The silent broker's commits are fenced.
    let err = meta
        .commit_object(2, object(1, 2), Some(fences[&2].clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::Fenced { .. }), "{err}");
    meta.commit_object(1, object(1, 1), Some(fences[&1].clone()))
        .await
        .unwrap();

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(6), task)
        .await
        .unwrap()
        .unwrap();
    assert!(!config.leader.load(Ordering::SeqCst));
    controller_session.close().await;
    for (_, s) in broker_sessions {
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_controller_does_not_relist_owners() {
    let store = Arc::new(Counting::default());
    let meta = Metadata::new(store.clone(), ROOT);
    let session = Session::start(store.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    for id in 1..=2 {
        meta.register_broker(&broker(id, &format!("inc-{id}")), session.lease())
            .await
            .unwrap();
    }
    meta.create_topic("t", 50, BTreeMap::new()).await.unwrap();
    let config = ControllerConfig {
        tick: Duration::from_millis(20),
        ..ControllerConfig::new(-1, "ctl")
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_controller(meta.clone(), session.clone(), config, stop));
    eventually("placement", Duration::from_secs(5), || {
        let meta = meta.clone();
        async move { meta.list_owners().await.unwrap().len() == 50 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = store.owner_lists.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.owner_lists.load(Ordering::Relaxed),
        before,
        "about 20 idle ticks listed no owners"
    );
    // A change to topics bumps `changes`: the controller looks again and places it.
    meta.create_topic("u", 10, BTreeMap::new()).await.unwrap();
    eventually("placement of the new topic", Duration::from_secs(5), || {
        let meta = meta.clone();
        async move { meta.list_owners().await.unwrap().len() == 60 }
    })
    .await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(6), task)
        .await
        .unwrap()
        .unwrap();
    session.close().await;
}
