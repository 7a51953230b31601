//! The MetaStore conformance suite against a real etcd cluster.
//!
//! Runs only when `CIRRUS_TEST_ETCD_ENDPOINTS` is set (comma-separated, e.g.
//! `http://127.0.0.1:2379`); tests/e2e/test_etcd_conformance.py starts an etcd and sets
//! it. Every run uses its own key prefix, so a shared etcd works too.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cirrus_controller::{
    BrokerRecord, CommittedOffset, Compare, ControllerRecord, EtcdMetaStore, EtcdOptions,
    GroupRecord, MetaError, MetaStore, Metadata, ObjectRecord, Policy, Session, Txn, conformance,
    read_view, reconcile,
};

fn endpoints() -> Option<Vec<String>> {
    let raw = std::env::var("CIRRUS_TEST_ETCD_ENDPOINTS").ok()?;
    let list: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!list.is_empty()).then_some(list)
}

fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("cirrus-test/{test}-{}-{nanos}/", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    let Some(endpoints) = endpoints() else {
        println!("etcd conformance skipped: CIRRUS_TEST_ETCD_ENDPOINTS is not set");
        return;
    };
    let store = EtcdMetaStore::connect(&endpoints, EtcdOptions::default())
        .await
        .unwrap();
    let prefix = unique_prefix("conformance");
    conformance::run_with_prefix(&store, &prefix).await;
    println!("etcd conformance passed against {endpoints:?} under {prefix:?}");
}

#[tokio::test]
async fn etcd_list_pages_through_large_prefixes() {
    let Some(endpoints) = endpoints() else {
        println!("etcd paging test skipped: CIRRUS_TEST_ETCD_ENDPOINTS is not set");
        return;
    };
    let store = EtcdMetaStore::connect(&endpoints, EtcdOptions::default())
        .await
        .unwrap();
    let prefix = unique_prefix("paging");
    // More than two pages, written in batches of 100 (under the 128-op limit).
    let total = 2 * cirrus_controller::etcd::LIST_PAGE_KEYS as usize + 37;
    for batch in (0..total).collect::<Vec<_>>().chunks(100) {
        let mut txn = Txn::new();
        for i in batch {
            txn = txn.put(format!("{prefix}k/{i:05}"), i.to_string());
        }
        assert!(store.txn(txn).await.unwrap());
    }
    // A key just past the prefix must not appear.
    assert!(
        store
            .txn(Txn::new().put(format!("{prefix}k0"), "outside"))
            .await
            .unwrap()
    );
    let listed = store.list(&format!("{prefix}k/")).await.unwrap();
    assert_eq!(listed.len(), total);
    for (i, kv) in listed.iter().enumerate() {
        assert_eq!(kv.key, format!("{prefix}k/{i:05}"), "sorted, no gaps");
        assert_eq!(&kv.value[..], i.to_string().as_bytes());
    }
}

#[tokio::test]
async fn etcd_rejects_requests_over_its_size_limit_as_too_large() {
    let Some(endpoints) = endpoints() else {
        println!("etcd request-size test skipped: CIRRUS_TEST_ETCD_ENDPOINTS is not set");
        return;
    };
    let store = EtcdMetaStore::connect(&endpoints, EtcdOptions::default())
        .await
        .unwrap();
    let prefix = unique_prefix("size");
    // Each value is under MAX_VALUE_BYTES, together they exceed etcd's 1.5 MiB default.
    let value = vec![b'x'; 900 * 1024];
    let txn = Txn::new()
        .put(format!("{prefix}a"), value.clone())
        .put(format!("{prefix}b"), value);
    let err = store.txn(txn).await.unwrap_err();
    assert!(
        matches!(err, cirrus_controller::MetaError::TooLarge(_)),
        "{err}"
    );
    assert!(
        store.list(&prefix).await.unwrap().is_empty(),
        "nothing applied"
    );
}

fn object(seq: u64) -> ObjectRecord {
    ObjectRecord {
        seq,
        key: format!("data/{seq}.obj"),
        size: 1,
        writer: "broker-1".into(),
        committed_ms: 1,
        runs: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_session_keeps_the_registration_alive_and_close_fences_it() {
    let Some(endpoints) = endpoints() else {
        println!("etcd session test skipped: CIRRUS_TEST_ETCD_ENDPOINTS is not set");
        return;
    };
    let store: Arc<dyn MetaStore> = Arc::new(
        EtcdMetaStore::connect(&endpoints, EtcdOptions::default())
            .await
            .unwrap(),
    );
    let meta = Metadata::new(store.clone(), unique_prefix("session"));
    let session = Session::start(store.clone(), Duration::from_secs(2))
        .await
        .unwrap();
    let record = BrokerRecord {
        id: 1,
        host: "127.0.0.1".into(),
        port: 9092,
        admin_addr: "127.0.0.1:9095".into(),
        incarnation: "etcd-test".into(),
        durability: "object".into(),
        started_ms: 1,
    };
    let version = meta
        .register_broker(&record, session.lease())
        .await
        .unwrap();
    let fence = meta.broker_fence(1, version);
    // Longer than the TTL: the keep-alives hold the lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(session.is_valid());
    assert_eq!(meta.list_brokers().await.unwrap(), [(record, version)]);
    meta.commit_object(1, object(1), Some(fence.clone()))
        .await
        .unwrap();
    session.close().await;
    assert!(
        meta.list_brokers().await.unwrap().is_empty(),
        "close revoked the lease"
    );
    let err = meta
        .commit_object(1, object(2), Some(fence))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::Fenced { .. }), "{err}");
}

#[tokio::test]
async fn etcd_owner_changes_are_chunked_and_guarded() {
    let Some(endpoints) = endpoints() else {
        println!("etcd owner-change test skipped: CIRRUS_TEST_ETCD_ENDPOINTS is not set");
        return;
    };
    let store: Arc<dyn MetaStore> = Arc::new(
        EtcdMetaStore::connect(&endpoints, EtcdOptions::default())
            .await
            .unwrap(),
    );
    let meta = Metadata::new(store.clone(), unique_prefix("owners"));
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    for id in 1..=3 {
        let record = BrokerRecord {
            id,
            host: "127.0.0.1".into(),
            port: 9092,
            admin_addr: "127.0.0.1:9095".into(),
            incarnation: format!("inc-{id}"),
            durability: "object".into(),
            started_ms: 1,
        };
        meta.register_broker(&record, lease).await.unwrap();
    }
    meta.create_topic("a", 300, BTreeMap::new()).await.unwrap();
    meta.create_topic("b", 100, BTreeMap::new()).await.unwrap();
    let controller = ControllerRecord {
        broker_id: -1,
        incarnation: "ctl".into(),
        elected_ms: 1,
    };
    let version = meta
        .try_become_controller(&controller, lease)
        .await
        .unwrap()
        .unwrap();
    let guard = [Compare::Version {
        key: format!("{}controller", meta.root()),
        version,
    }];
    let changes_before = meta.changes_version().await.unwrap();
    let changes = reconcile(&read_view(&meta).await.unwrap(), &Policy::default());
    assert_eq!(changes.len(), 400);
    assert_eq!(
        meta.apply_owner_changes(&changes, &guard).await.unwrap(),
        400
    );
    assert!(meta.changes_version().await.unwrap() > changes_before);
    assert!(reconcile(&read_view(&meta).await.unwrap(), &Policy::default()).is_empty());
    // Once the controller resigns, its guard stops every change.
    meta.resign_controller("ctl").await.unwrap();
    let owners = meta.list_owners().await.unwrap();
    let deletes: Vec<_> = owners
        .iter()
        .map(|(o, v)| cirrus_controller::OwnerChange::Delete {
            stream_id: o.stream_id,
            expected_version: *v,
        })
        .collect();
    assert_eq!(meta.apply_owner_changes(&deletes, &guard).await.unwrap(), 0);
    assert_eq!(meta.list_owners().await.unwrap().len(), 400);
    store.lease_revoke(lease).await.unwrap();
    assert!(meta.list_brokers().await.unwrap().is_empty());
}

#[tokio::test]
async fn etcd_group_offsets_commit_fetch_delete() {
    let Some(endpoints) = endpoints() else {
        println!("etcd group offsets test skipped: CIRRUS_TEST_ETCD_ENDPOINTS is not set");
        return;
    };
    let store: Arc<dyn MetaStore> = Arc::new(
        EtcdMetaStore::connect(&endpoints, EtcdOptions::default())
            .await
            .unwrap(),
    );
    let meta = Metadata::new(store.clone(), unique_prefix("groups"));
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let record = BrokerRecord {
        id: 1,
        host: "127.0.0.1".into(),
        port: 9092,
        admin_addr: "127.0.0.1:9095".into(),
        incarnation: "groups-test".into(),
        durability: "object".into(),
        started_ms: 1,
    };
    let version = meta.register_broker(&record, lease).await.unwrap();
    let fence = meta.broker_fence(1, version);
    let offset = |offset: i64, metadata: Option<&str>| CommittedOffset {
        offset,
        leader_epoch: 2,
        metadata: metadata.map(str::to_owned),
        commit_ms: 1_700_000_000_000,
    };
    let group = "orders/consumers 100% ✓";
    // 127 topics (the most per call) with the fence: 128 compares, etcd's limit.
    let commit: BTreeMap<String, BTreeMap<i32, CommittedOffset>> = (0..127)
        .map(|i| {
            (
                format!("topic-{i:03}"),
                BTreeMap::from([(0, offset(i, None)), (1, offset(i + 1, Some("m")))]),
            )
        })
        .collect();
    meta.commit_offsets(group, &commit, Some(fence.clone()))
        .await
        .unwrap();
    // Merge: replace one partition, add another.
    let update = BTreeMap::from([(
        "topic-000".to_owned(),
        BTreeMap::from([(1, offset(100, None)), (5, offset(5, Some("")))]),
    )]);
    meta.commit_offsets(group, &update, Some(fence.clone()))
        .await
        .unwrap();
    let fetched = meta.fetch_offsets(group).await.unwrap();
    assert_eq!(fetched.len(), 127);
    assert_eq!(
        fetched["topic-000"],
        BTreeMap::from([
            (0, offset(0, None)),
            (1, offset(100, None)),
            (5, offset(5, Some("")))
        ])
    );
    assert_eq!(fetched["topic-126"], commit["topic-126"]);
    meta.put_group(
        group,
        &GroupRecord {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            static_members: BTreeMap::new(),
            updated_ms: 1,
        },
        Some(fence.clone()),
    )
    .await
    .unwrap();
    assert_eq!(meta.list_group_names().await.unwrap(), [group]);
    meta.delete_offsets(group, "topic-000", &[0, 1, 5], Some(fence.clone()))
        .await
        .unwrap();
    assert_eq!(meta.fetch_offsets(group).await.unwrap().len(), 126);
    // A lost session fences every group write.
    store.lease_revoke(lease).await.unwrap();
    let err = meta
        .commit_offsets(group, &update, Some(fence.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::Fenced { .. }), "{err}");
    let err = meta
        .delete_group(group, Some(fence.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::Fenced { .. }), "{err}");
    assert_eq!(meta.fetch_offsets(group).await.unwrap().len(), 126);
    // Deleting the group (record + 126 offsets keys) is one 127-op transaction.
    meta.delete_group(group, None).await.unwrap();
    assert!(meta.list_group_names().await.unwrap().is_empty());
    // A commit just under the model's transaction limit fits etcd's request limit.
    let half = cirrus_controller::groups::MAX_GROUP_TXN_BYTES / 2 - 2048;
    let metadata = "x".repeat(half);
    let near_limit = BTreeMap::from([
        (
            "a".to_owned(),
            BTreeMap::from([(0, offset(1, Some(&metadata)))]),
        ),
        (
            "b".to_owned(),
            BTreeMap::from([(0, offset(1, Some(&metadata)))]),
        ),
    ]);
    meta.commit_offsets("big", &near_limit, None).await.unwrap();
    assert_eq!(meta.fetch_offsets("big").await.unwrap(), near_limit);
    meta.delete_group("big", None).await.unwrap();
    assert!(store.list(meta.root()).await.unwrap().is_empty());
    println!("etcd group offsets test passed");
}
