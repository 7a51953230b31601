//! The MetaStore conformance suite against a real etcd cluster.
//!
//! Runs only when `CIRRUS_TEST_ETCD_ENDPOINTS` is set (comma-separated, e.g.
//! `http://127.0.0.1:2379`); tests/e2e/test_etcd_conformance.py starts an etcd and sets
//! it. Every run uses its own key prefix, so a shared etcd works too.

#![allow(clippy::unwrap_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use cirrus_controller::{EtcdMetaStore, EtcdOptions, MetaStore, Txn, conformance};

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
