//! The MetaStore conformance suite against every local implementation.

#![allow(clippy::unwrap_used)]

use cirrus_controller::{EmbeddedMetaStore, MemoryMetaStore, MetaStore, Txn, conformance};

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run(&MemoryMetaStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedMetaStore::open(dir.path().join("meta.redb")).unwrap();
    conformance::run(&store).await;
}

#[tokio::test]
async fn embedded_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("meta.redb");
    let (v_a, v_b) = {
        let store = EmbeddedMetaStore::open(&path).unwrap();
        assert!(
            store
                .txn(Txn::new().put("k/a", "1").put("k/b", "2"))
                .await
                .unwrap()
        );
        assert!(
            store
                .txn(Txn::new().put("k/b", "3").delete("k/a"))
                .await
                .unwrap()
        );
        assert!(store.txn(Txn::new().put("k/a", "4")).await.unwrap());
        let a = store.get("k/a").await.unwrap().unwrap().version;
        let b = store.get("k/b").await.unwrap().unwrap().version;
        (a, b)
    };
    let store = EmbeddedMetaStore::open(&path).unwrap();
    let listed = store.list("k/").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0].key.as_str(), &listed[0].value[..]),
        ("k/a", &b"4"[..])
    );
    assert_eq!(
        (listed[1].key.as_str(), &listed[1].value[..]),
        ("k/b", &b"3"[..])
    );
    assert_eq!(
        (listed[0].version, listed[1].version),
        (v_a, v_b),
        "versions persist"
    );
    // The revision counter persisted too: new writes get higher versions, and old
    // versions still work as compares.
    assert!(
        store
            .txn(Txn::new().when_version("k/a", v_a).put("k/c", "5"))
            .await
            .unwrap()
    );
    let v_c = store.get("k/c").await.unwrap().unwrap().version;
    assert!(v_c > v_a && v_c > v_b, "revision counter survived reopen");
}

#[tokio::test]
async fn embedded_store_reports_unusable_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = EmbeddedMetaStore::open(file.join("meta.redb")).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[tokio::test]
async fn embedded_store_drops_lease_bound_keys_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let (v_last, lease) = {
        let store = EmbeddedMetaStore::open(&path).unwrap();
        let lease = store
            .lease_grant(std::time::Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            store
                .txn(
                    Txn::new()
                        .put_with_lease("k/bound", "1", lease)
                        .put("k/plain", "2")
                )
                .await
                .unwrap()
        );
        // Bound, then unbound again by a plain put: survives.
        assert!(
            store
                .txn(Txn::new().put_with_lease("k/rebound", "3", lease))
                .await
                .unwrap()
        );
        assert!(store.txn(Txn::new().put("k/rebound", "4")).await.unwrap());
        let v_last = store.get("k/rebound").await.unwrap().unwrap().version;
        (v_last, lease)
    };
    let store = EmbeddedMetaStore::open(&path).unwrap();
    let keys: Vec<String> = store
        .list("k/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        keys,
        ["k/plain", "k/rebound"],
        "a restarted process has no leases"
    );
    assert!(
        !store.lease_keep_alive(lease).await.unwrap(),
        "the old lease is unknown"
    );
    let err = store
        .txn(Txn::new().put_with_lease("k/bound", "again", lease))
        .await
        .unwrap_err();
    assert!(
        matches!(err, cirrus_controller::MetaError::LeaseExpired),
        "{err}"
    );
    // The deletion on open took exactly one revision.
    assert!(store.txn(Txn::new().put("k/new", "5")).await.unwrap());
    assert_eq!(
        store.get("k/new").await.unwrap().unwrap().version,
        v_last + 2
    );
}
