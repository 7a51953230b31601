//! The one conformance suite every [`MetaStore`] implementation must pass.
//!
//! Test support, not production code: it panics (with a message naming the broken
//! rule) on the first violation. Run it on an **empty** store:
//!
//! ```ignore
//! cirrus_controller::conformance::run(&MemoryMetaStore::new()).await;
//! ```
//!
//! On a shared store (etcd) use [`run_with_prefix`]: only keys under the prefix must be
//! absent at the start.
//!
//! It checks the contract written on [`MetaStore`]: put/get, list order and prefix
//! boundaries, increasing versions, all-or-nothing compare-and-swap, `Absent` and
//! `Version { version: 0 }` compares, delete, that concurrent CAS increments lose no
//! update, and leases (grant, keep-alive, revoke, expiry deleting a lease's keys
//! together, puts with a dead lease failing with [`MetaError::LeaseExpired`]). The
//! lease checks wait for one 1 s lease to expire (about 2–3 s on etcd, whose minimum
//! TTL is about 2 s).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::MetaError;
use crate::store::{Compare, KeyValue, LeaseId, MetaStore, Op, Txn};

/// Runs every check against `store`, which must start empty. Panics on a violation.
pub async fn run(store: &dyn MetaStore) {
    run_with_prefix(store, "").await;
}

/// Runs every check with every key under `prefix` (e.g. `"test-1234/"`), for a shared
/// store such as an etcd cluster: only keys under `prefix` must be absent at the start.
/// Keys are prefixed on the way in and the prefix is stripped from results, so the
/// checks (list boundaries included) are the same as for [`run`].
pub async fn run_with_prefix(store: &dyn MetaStore, prefix: &str) {
    let store = &Scoped { store, prefix };
    put_get(store).await;
    list_order_and_prefix_boundaries(store).await;
    versions_increase(store).await;
    cas_is_all_or_nothing(store).await;
    absent_compare(store).await;
    delete(store).await;
    limits(store).await;
    concurrent_increments(store).await;
    leases(store).await;
}

/// A view of a store with every key under a prefix; the checks talk only to this.
struct Scoped<'a> {
    store: &'a dyn MetaStore,
    prefix: &'a str,
}

impl Scoped<'_> {
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn strip(&self, mut kv: KeyValue) -> KeyValue {
        kv.key = kv
            .key
            .strip_prefix(self.prefix)
            .unwrap_or_else(|| panic!("store returned key {:?} outside the prefix", kv.key))
            .to_owned();
        kv
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        let kv = self.store.get(&self.full(key)).await?;
        Ok(kv.map(|kv| self.strip(kv)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, MetaError> {
        let kvs = self.store.list(&self.full(prefix)).await?;
        Ok(kvs.into_iter().map(|kv| self.strip(kv)).collect())
    }

    async fn txn(&self, txn: Txn) -> Result<bool, MetaError> {
        let compares = txn
            .compares
            .into_iter()
            .map(|c| match c {
                Compare::Version { key, version } => Compare::Version {
                    key: self.full(&key),
                    version,
                },
                Compare::Absent { key } => Compare::Absent {
                    key: self.full(&key),
                },
            })
            .collect();
        let ops = txn
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => Op::Put {
                    key: self.full(&key),
                    value,
                    lease,
                },
                Op::Delete { key } => Op::Delete {
                    key: self.full(&key),
                },
            })
            .collect();
        self.store.txn(Txn { compares, ops }).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        self.store.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<bool, MetaError> {
        self.store.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), MetaError> {
        self.store.lease_revoke(lease).await
    }
}

async fn must_txn(store: &Scoped<'_>, txn: Txn) -> bool {
    store.txn(txn).await.expect("txn returned an error")
}

async fn value_of(store: &Scoped<'_>, key: &str) -> Option<Bytes> {
    store
        .get(key)
        .await
        .expect("get returned an error")
        .map(|kv| kv.value)
}

async fn put_get(store: &Scoped<'_>) {
    assert_eq!(
        value_of(store, "pg/a").await,
        None,
        "fresh key must be absent"
    );
    assert!(must_txn(store, Txn::new().put("pg/a", "one")).await);
    let kv = store.get("pg/a").await.expect("get").expect("key just put");
    assert_eq!(kv.key, "pg/a");
    assert_eq!(kv.value, Bytes::from_static(b"one"));
    assert!(kv.version > 0, "versions are > 0");
    assert!(must_txn(store, Txn::new().put("pg/a", "two")).await);
    assert_eq!(
        value_of(store, "pg/a").await,
        Some(Bytes::from_static(b"two"))
    );
    // Empty values and binary values round-trip.
    assert!(
        must_txn(
            store,
            Txn::new()
                .put("pg/empty", "")
                .put("pg/bin", vec![0u8, 255, 10])
        )
        .await
    );
    assert_eq!(value_of(store, "pg/empty").await, Some(Bytes::new()));
    assert_eq!(
        value_of(store, "pg/bin").await,
        Some(Bytes::from_static(&[0, 255, 10]))
    );
}

async fn list_order_and_prefix_boundaries(store: &Scoped<'_>) {
    // Inserted out of order, across several txns.
    for key in [
        "lo/b", "lo/a/2", "lo/a", "lo/c", "lo/a/1", "lo0", "ln/z", "lo/",
    ] {
        assert!(must_txn(store, Txn::new().put(key, key.to_owned())).await);
    }
    let keys: Vec<String> = store
        .list("lo/")
        .await
        .expect("list")
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        keys,
        ["lo/", "lo/a", "lo/a/1", "lo/a/2", "lo/b", "lo/c"],
        "list returns exactly the keys with the prefix, sorted"
    );
    let sub: Vec<String> = store
        .list("lo/a/")
        .await
        .expect("list")
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(sub, ["lo/a/1", "lo/a/2"], "list of a nested prefix");
    assert!(store.list("nothing-here/").await.expect("list").is_empty());
    let all = store.list("lo/b").await.expect("list");
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].value,
        Bytes::from_static(b"lo/b"),
        "list returns values"
    );
}

async fn versions_increase(store: &Scoped<'_>) {
    assert!(must_txn(store, Txn::new().put("vi/a", "1")).await);
    let v1 = store
        .get("vi/a")
        .await
        .expect("get")
        .expect("present")
        .version;
    assert!(must_txn(store, Txn::new().put("vi/b", "1")).await);
    let vb = store
        .get("vi/b")
        .await
        .expect("get")
        .expect("present")
        .version;
    assert!(
        vb > v1,
        "a later write to another key gets a higher version"
    );
    assert!(must_txn(store, Txn::new().put("vi/a", "2")).await);
    let v2 = store
        .get("vi/a")
        .await
        .expect("get")
        .expect("present")
        .version;
    assert!(
        v2 > vb,
        "rewriting a key raises its version above every earlier write"
    );
    // Keys written in one txn share its revision.
    assert!(must_txn(store, Txn::new().put("vi/c", "x").put("vi/d", "y")).await);
    let vc = store
        .get("vi/c")
        .await
        .expect("get")
        .expect("present")
        .version;
    let vd = store
        .get("vi/d")
        .await
        .expect("get")
        .expect("present")
        .version;
    assert_eq!(vc, vd, "keys of one txn carry the same revision");
    assert!(vc > v2);
    // list reports the same versions as get.
    let listed = store.list("vi/").await.expect("list");
    let a = listed
        .iter()
        .find(|kv| kv.key == "vi/a")
        .expect("vi/a listed");
    assert_eq!(a.version, v2);
}

async fn cas_is_all_or_nothing(store: &Scoped<'_>) {
    assert!(
        must_txn(
            store,
            Txn::new()
                .put("cas/x", "0")
                .put("cas/y", "0")
                .put("cas/w", "0")
        )
        .await
    );
    let vx = store
        .get("cas/x")
        .await
        .expect("get")
        .expect("present")
        .version;
    // Wrong version on one of two compares: nothing applies.
    let failed = Txn::new()
        .when_version("cas/x", vx)
        .when_version("cas/y", vx + 1000)
        .put("cas/x", "1")
        .put("cas/y", "1")
        .put("cas/z", "1")
        .delete("cas/w");
    assert!(
        !must_txn(store, failed).await,
        "a failing compare returns false"
    );
    assert_eq!(
        value_of(store, "cas/x").await,
        Some(Bytes::from_static(b"0"))
    );
    assert_eq!(
        value_of(store, "cas/y").await,
        Some(Bytes::from_static(b"0"))
    );
    assert_eq!(
        value_of(store, "cas/z").await,
        None,
        "no op of a failed txn applies"
    );
    assert_eq!(
        value_of(store, "cas/w").await,
        Some(Bytes::from_static(b"0")),
        "no delete of a failed txn applies"
    );
    assert_eq!(
        store
            .get("cas/x")
            .await
            .expect("get")
            .expect("present")
            .version,
        vx,
        "a failed txn does not touch versions"
    );
    // Correct versions: everything applies.
    let ok = Txn::new()
        .when_version("cas/x", vx)
        .when_version("cas/y", vx)
        .put("cas/x", "1")
        .put("cas/y", "1")
        .put("cas/z", "1");
    assert!(must_txn(store, ok).await, "all compares hold: txn applies");
    for key in ["cas/x", "cas/y", "cas/z"] {
        assert_eq!(value_of(store, key).await, Some(Bytes::from_static(b"1")));
    }
    // The old version is now stale.
    assert!(
        !must_txn(
            store,
            Txn::new().when_version("cas/x", vx).put("cas/x", "2")
        )
        .await
    );
    assert_eq!(
        value_of(store, "cas/x").await,
        Some(Bytes::from_static(b"1"))
    );
    // A version compare on an absent key fails unless it expects version 0.
    assert!(
        !must_txn(
            store,
            Txn::new().when_version("cas/none", 1).put("cas/none", "1")
        )
        .await
    );
    assert!(
        must_txn(
            store,
            Txn::new().when_version("cas/none", 0).put("cas/none", "1")
        )
        .await
    );
    // Compare-only txn: true iff compares hold, changes nothing.
    let vz = store
        .get("cas/z")
        .await
        .expect("get")
        .expect("present")
        .version;
    assert!(must_txn(store, Txn::new().when_version("cas/z", vz)).await);
    assert!(!must_txn(store, Txn::new().when_absent("cas/z")).await);
}

async fn absent_compare(store: &Scoped<'_>) {
    let create = || Txn::new().when_absent("abs/k").put("abs/k", "first");
    assert!(
        must_txn(store, create()).await,
        "absent key: create succeeds"
    );
    assert!(
        !must_txn(
            store,
            Txn::new().when_absent("abs/k").put("abs/k", "second")
        )
        .await
    );
    assert_eq!(
        value_of(store, "abs/k").await,
        Some(Bytes::from_static(b"first"))
    );
    // Absent compare with ops on other keys: all or nothing too.
    let mixed = Txn::new()
        .when(Compare::Absent {
            key: "abs/k".into(),
        })
        .put("abs/other", "x");
    assert!(!must_txn(store, mixed).await);
    assert_eq!(value_of(store, "abs/other").await, None);
}

async fn delete(store: &Scoped<'_>) {
    assert!(must_txn(store, Txn::new().put("del/a", "a").put("del/b", "b")).await);
    assert!(must_txn(store, Txn::new().delete("del/a")).await);
    assert_eq!(value_of(store, "del/a").await, None);
    assert_eq!(
        value_of(store, "del/b").await,
        Some(Bytes::from_static(b"b"))
    );
    let keys: Vec<String> = store
        .list("del/")
        .await
        .expect("list")
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["del/b"], "deleted keys vanish from list");
    assert!(
        must_txn(store, Txn::new().delete("del/never")).await,
        "deleting an absent key is fine"
    );
    // A deleted key is absent again for compares, and recreating it gives a fresh, higher version.
    let vb = store
        .get("del/b")
        .await
        .expect("get")
        .expect("present")
        .version;
    assert!(must_txn(store, Txn::new().when_absent("del/a").put("del/a", "again")).await);
    let va = store
        .get("del/a")
        .await
        .expect("get")
        .expect("present")
        .version;
    assert!(va > vb);
}

async fn limits(store: &Scoped<'_>) {
    let mut txn = Txn::new();
    for i in 0..=crate::MAX_TXN_OPS {
        txn = txn.put(format!("lim/{i:04}"), "x");
    }
    assert!(
        store.txn(txn).await.is_err(),
        "more than MAX_TXN_OPS ops is rejected"
    );
    assert!(
        store.list("lim/").await.expect("list").is_empty(),
        "and nothing applied"
    );
    let mut txn = Txn::new();
    for i in 0..crate::MAX_TXN_OPS {
        txn = txn.put(format!("lim/{i:04}"), "x");
    }
    assert!(
        must_txn(store, txn).await,
        "exactly MAX_TXN_OPS ops is accepted"
    );
    assert_eq!(
        store.list("lim/").await.expect("list").len(),
        crate::MAX_TXN_OPS
    );
    let twice = Txn::new().put("lim/dup", "1").delete("lim/dup");
    assert!(
        store.txn(twice).await.is_err(),
        "a key written twice in one txn is rejected"
    );
    assert_eq!(value_of(store, "lim/dup").await, None);
}

const TASKS: usize = 20;
const INCREMENTS_PER_TASK: usize = 5;

async fn increment(store: &Scoped<'_>, key: &str) -> usize {
    let mut conflicts = 0;
    loop {
        let current = store.get(key).await.expect("get");
        let (value, txn) = match &current {
            Some(kv) => {
                let n: u64 = std::str::from_utf8(&kv.value)
                    .expect("counter is utf-8")
                    .parse()
                    .expect("counter is a number");
                (n + 1, Txn::new().when_version(key, kv.version))
            }
            None => (1, Txn::new().when_absent(key)),
        };
        // Let the other tasks read the same version before we write.
        tokio::task::yield_now().await;
        if must_txn(store, txn.put(key, value.to_string())).await {
            return conflicts;
        }
        conflicts += 1;
    }
}

async fn concurrent_increments(store: &Scoped<'_>) {
    let key = "conc/counter";
    let tasks = (0..TASKS).map(|_| async move {
        let mut conflicts = 0;
        for _ in 0..INCREMENTS_PER_TASK {
            conflicts += increment(store, key).await;
        }
        conflicts
    });
    let conflicts: usize = futures::future::join_all(tasks).await.into_iter().sum();
    let final_value = value_of(store, key).await.expect("counter exists");
    assert_eq!(
        std::str::from_utf8(&final_value).expect("utf-8"),
        (TASKS * INCREMENTS_PER_TASK).to_string(),
        "concurrent CAS increments lost an update"
    );
    assert!(
        conflicts > 0,
        "interleaved read-modify-write must have produced at least one failed compare"
    );
}

async fn keys_under(store: &Scoped<'_>, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

/// Longest wait for a 1 s lease to be observed expired (etcd rounds TTLs up to its
/// minimum and checks expiry on a timer).
const LEASE_EXPIRY_DEADLINE: Duration = Duration::from_secs(15);

async fn leases(store: &Scoped<'_>) {
    let ttl = Duration::from_secs(1);
    let expiring = store.lease_grant(ttl).await.expect("lease_grant");
    let kept = store.lease_grant(ttl).await.expect("lease_grant");
    let revoked = store.lease_grant(ttl).await.expect("lease_grant");
    assert!(expiring > 0 && kept > 0 && revoked > 0, "lease ids are > 0");
    assert!(
        expiring != kept && kept != revoked && expiring != revoked,
        "lease ids are distinct"
    );

    // Two keys on the expiring lease in one txn, together with an unbound key.
    assert!(
        must_txn(
            store,
            Txn::new()
                .put_with_lease("lease/a1", "1", expiring)
                .put_with_lease("lease/a2", "2", expiring)
                .put("lease/plain", "p")
        )
        .await
    );
    assert!(must_txn(store, Txn::new().put_with_lease("lease/b", "b", kept)).await);
    assert!(must_txn(store, Txn::new().put_with_lease("lease/c", "c", revoked)).await);
    // A put without a lease unbinds the key (as in etcd): it outlives the lease.
    assert!(
        must_txn(
            store,
            Txn::new().put_with_lease("lease/unbound", "x", expiring)
        )
        .await
    );
    assert!(must_txn(store, Txn::new().put("lease/unbound", "y")).await);
    assert!(
        store.lease_keep_alive(kept).await.expect("keep-alive"),
        "a live lease can be kept alive"
    );

    // Revoke deletes the lease's keys and nothing else.
    store.lease_revoke(revoked).await.expect("lease_revoke");
    assert_eq!(
        value_of(store, "lease/c").await,
        None,
        "revoke deletes its keys"
    );
    assert_eq!(
        keys_under(store, "lease/").await,
        [
            "lease/a1",
            "lease/a2",
            "lease/b",
            "lease/plain",
            "lease/unbound"
        ]
    );
    store
        .lease_revoke(revoked)
        .await
        .expect("revoking a revoked lease is fine");
    assert!(
        !store.lease_keep_alive(revoked).await.expect("keep-alive"),
        "a revoked lease cannot be kept alive"
    );
    let err = store
        .txn(
            Txn::new()
                .put("lease/after-revoke", "x")
                .put_with_lease("lease/c", "again", revoked),
        )
        .await
        .expect_err("a put with a revoked lease must fail");
    assert!(matches!(err, MetaError::LeaseExpired), "{err}");
    assert_eq!(
        value_of(store, "lease/after-revoke").await,
        None,
        "a txn refused for its lease applies nothing"
    );
    // The lease is only checked for a txn that would apply.
    assert!(
        !must_txn(
            store,
            Txn::new()
                .when_absent("lease/plain")
                .put_with_lease("lease/c", "again", revoked)
        )
        .await,
        "a failed compare wins over a dead lease"
    );

    // Expiry: keep one lease alive, let the other lapse. Its keys vanish together.
    let started = Instant::now();
    loop {
        assert!(
            store.lease_keep_alive(kept).await.expect("keep-alive"),
            "a lease kept alive every 200 ms must not expire"
        );
        let keys = keys_under(store, "lease/").await;
        let a1 = keys.iter().any(|k| k == "lease/a1");
        let a2 = keys.iter().any(|k| k == "lease/a2");
        assert_eq!(
            a1, a2,
            "the keys of one lease are deleted atomically: {keys:?}"
        );
        if !a1 {
            break;
        }
        assert!(
            started.elapsed() < LEASE_EXPIRY_DEADLINE,
            "a 1 s lease without keep-alives did not expire within {LEASE_EXPIRY_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "a lease must not expire well before its TTL"
    );
    assert_eq!(
        keys_under(store, "lease/").await,
        ["lease/b", "lease/plain", "lease/unbound"],
        "expiry deletes exactly the lease's keys"
    );
    assert_eq!(
        value_of(store, "lease/unbound").await,
        Some(Bytes::from_static(b"y"))
    );
    assert!(
        !store.lease_keep_alive(expiring).await.expect("keep-alive"),
        "an expired lease cannot be kept alive"
    );
    let err = store
        .txn(Txn::new().put_with_lease("lease/a1", "late", expiring))
        .await
        .expect_err("a put with an expired lease must fail");
    assert!(matches!(err, MetaError::LeaseExpired), "{err}");
    assert_eq!(value_of(store, "lease/a1").await, None);
    // The expired key is absent for compares: somebody else can take it.
    assert!(
        must_txn(
            store,
            Txn::new()
                .when(Compare::Absent {
                    key: "lease/a1".into()
                })
                .put_with_lease("lease/a1", "successor", kept)
        )
        .await,
        "a Compare::Absent on an expired lease's key holds"
    );

    // Revoking the kept lease deletes both of its keys; revoking again is fine.
    store.lease_revoke(kept).await.expect("lease_revoke");
    assert_eq!(
        keys_under(store, "lease/").await,
        ["lease/plain", "lease/unbound"]
    );
    assert!(!store.lease_keep_alive(kept).await.expect("keep-alive"));
    store
        .lease_revoke(expiring)
        .await
        .expect("revoking an expired lease is fine");
}
