//! [`EmbeddedMetaStore`]: the single-node [`MetaStore`], one redb file in the data
//! directory. Used when no etcd endpoint is configured.
//!
//! # On-disk layout (redb tables; stable, changing it needs a migration)
//!
//! - table `kv`: key `&str` (the full metadata key) → value `&[u8]` laid out as
//!   `{ u64 big-endian version | value bytes }`. The version is the store revision of
//!   the key's last modification (etcd's `mod_revision`).
//! - table `meta`: key `&str` → `u64`. One entry, `"revision"`: the last revision
//!   handed out. It is written in the same redb transaction as the keys it versions, so
//!   versions keep increasing across restarts.
//! - table `lease_keys`: key `&str` (a full metadata key) → `i64` (the lease it is bound
//!   to). Exactly the keys of `kv` that are bound to a lease; written in the same redb
//!   transaction as the key.
//!
//! # Leases
//!
//! Leases themselves live in memory (a lease book of [`std::time::Instant`] deadlines
//! behind a mutex): a restarted process has no leases, so [`EmbeddedMetaStore::open`]
//! deletes every key listed in `lease_keys` (at one new revision) before anything can
//! read them. Expiry is enforced lazily at the start of every call and by nothing else:
//! the call deletes the keys of each expired lease (one revision per lease) before it
//! is evaluated, in the same redb transaction as a `txn`'s own writes. The lease book
//! is locked for the whole of a `txn`, so a lease cannot expire between the check that
//! a put's lease is live and the commit that binds the key to it.
//!
//! # Invariants
//!
//! - Every successful [`MetaStore::txn`] with at least one op is exactly one redb write
//!   transaction committed with [`redb::Durability::Immediate`] (fsync before return).
//!   Compares are evaluated inside that write transaction; redb serialises writers, so
//!   transactions are linearizable.
//! - Reads use a redb read transaction: a consistent snapshot of the last commit.
//! - Every redb call is blocking and runs under `tokio::task::spawn_blocking`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::MetaError;
use crate::lease::LeaseBook;
use crate::store::{KeyValue, LeaseId, MetaStore, Op, Txn};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LEASE_KEYS: TableDefinition<&str, i64> = TableDefinition::new("lease_keys");
const REVISION_KEY: &str = "revision";
const VERSION_LEN: usize = 8;

/// The embedded, persistent [`MetaStore`] on redb.
pub struct EmbeddedMetaStore {
    db: Arc<Database>,
    path: PathBuf,
    leases: Arc<Mutex<LeaseBook>>,
}

impl std::fmt::Debug for EmbeddedMetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedMetaStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn backend<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> MetaError {
    move |e| MetaError::backend(context, e.into())
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue, MetaError> {
    let Some((version, value)) = raw.split_first_chunk::<VERSION_LEN>() else {
        return Err(MetaError::corrupt(
            key,
            format!(
                "stored entry is {} bytes, shorter than its version header",
                raw.len()
            ),
        ));
    };
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value),
        version: u64::from_be_bytes(*version),
    })
}

fn encode(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_LEN + value.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(value);
    out
}

impl EmbeddedMetaStore {
    /// Opens (or creates) the store file at `path`, creating its parent directory, and
    /// deletes every key that was bound to a lease (leases do not survive a restart).
    ///
    /// Blocking: call it at start-up, or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MetaError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| MetaError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let db = Database::create(&path).map_err(backend("opening the embedded metadata file"))?;
        // Create every table so that read transactions never meet a missing one, and
        // drop the keys of the previous process's leases.
        let wtx = db
            .begin_write()
            .map_err(backend("starting the initial transaction"))?;
        {
            wtx.open_table(KV).map_err(backend("creating table kv"))?;
            wtx.open_table(META)
                .map_err(backend("creating table meta"))?;
            wtx.open_table(LEASE_KEYS)
                .map_err(backend("creating table lease_keys"))?;
        }
        let dropped = delete_lease_keys(&wtx, None)?;
        wtx.commit()
            .map_err(backend("committing the initial transaction"))?;
        if dropped > 0 {
            tracing::info!(
                keys = dropped,
                path = %path.display(),
                "deleted lease-bound metadata keys left by the previous process"
            );
        }
        Ok(Self {
            db: Arc::new(db),
            path,
            leases: Arc::new(Mutex::new(LeaseBook::default())),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&Database, &Mutex<LeaseBook>) -> Result<T, MetaError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let leases = Arc::clone(&self.leases);
        tokio::task::spawn_blocking(move || f(&db, &leases))
            .await
            .map_err(|e| MetaError::backend("running a blocking metadata call", e))?
    }
}

fn lock(leases: &Mutex<LeaseBook>) -> MutexGuard<'_, LeaseBook> {
    // The book is only changed after the redb commit it describes succeeded, and its
    // updates do not panic, so a poisoned lock still holds a consistent book.
    leases
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes the next store revision inside `wtx`.
fn next_revision(wtx: &WriteTransaction) -> Result<u64, MetaError> {
    let mut meta = wtx
        .open_table(META)
        .map_err(backend("opening table meta"))?;
    let previous = meta
        .get(REVISION_KEY)
        .map_err(backend("reading the revision counter"))?
        .map(|g| g.value())
        .unwrap_or(0);
    let revision = previous
        .checked_add(1)
        .ok_or_else(|| MetaError::corrupt(REVISION_KEY, "revision counter overflowed"))?;
    meta.insert(REVISION_KEY, revision)
        .map_err(backend("writing the revision counter"))?;
    Ok(revision)
}

/// Deletes the keys bound to `leases` (`None` = every lease), one revision per lease
/// that had keys. Returns how many keys were deleted.
fn delete_lease_keys(
    wtx: &WriteTransaction,
    leases: Option<&[LeaseId]>,
) -> Result<usize, MetaError> {
    if leases.is_some_and(<[LeaseId]>::is_empty) {
        return Ok(0);
    }
    let mut by_lease: BTreeMap<LeaseId, Vec<String>> = BTreeMap::new();
    {
        let table = wtx
            .open_table(LEASE_KEYS)
            .map_err(backend("opening table lease_keys"))?;
        for item in table.iter().map_err(backend("scanning lease-bound keys"))? {
            let (key, lease) = item.map_err(backend("scanning lease-bound keys"))?;
            let lease = lease.value();
            if leases.is_none_or(|wanted| wanted.contains(&lease)) {
                by_lease
                    .entry(lease)
                    .or_default()
                    .push(key.value().to_owned());
            }
        }
    }
    let mut deleted = 0;
    for keys in by_lease.values() {
        next_revision(wtx)?;
        let mut kv = wtx.open_table(KV).map_err(backend("opening table kv"))?;
        let mut bound = wtx
            .open_table(LEASE_KEYS)
            .map_err(backend("opening table lease_keys"))?;
        for key in keys {
            kv.remove(key.as_str())
                .map_err(backend("deleting a lease-bound key"))?;
            bound
                .remove(key.as_str())
                .map_err(backend("unbinding a lease-bound key"))?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes the keys of every lease expired at `now` and forgets those leases.
fn expire(db: &Database, book: &mut LeaseBook, now: Instant) -> Result<(), MetaError> {
    let expired = book.expired(now);
    if expired.is_empty() {
        return Ok(());
    }
    let wtx = db
        .begin_write()
        .map_err(backend("starting a lease expiry transaction"))?;
    delete_lease_keys(&wtx, Some(&expired))?;
    wtx.commit()
        .map_err(backend("committing a lease expiry transaction"))?;
    book.forget(&expired);
    Ok(())
}

/// What evaluating a [`Txn`] inside a write transaction decided.
enum Decision {
    Applied,
    CompareFailed,
    LeaseExpired,
}

fn evaluate(
    wtx: &WriteTransaction,
    book: &LeaseBook,
    now: Instant,
    txn: &Txn,
) -> Result<Decision, MetaError> {
    {
        let kv = wtx.open_table(KV).map_err(backend("opening table kv"))?;
        for compare in &txn.compares {
            let current = match kv
                .get(compare.key())
                .map_err(backend("reading a compare key"))?
            {
                Some(raw) => Some(decode(compare.key(), raw.value())?.version),
                None => None,
            };
            if !compare.holds(current) {
                return Ok(Decision::CompareFailed);
            }
        }
    }
    if txn.ops.is_empty() {
        return Ok(Decision::Applied);
    }
    for op in &txn.ops {
        if let Op::Put {
            lease: Some(lease), ..
        } = op
            && !book.is_live(*lease, now)
        {
            return Ok(Decision::LeaseExpired);
        }
    }
    let revision = next_revision(wtx)?;
    let mut kv = wtx.open_table(KV).map_err(backend("opening table kv"))?;
    let mut bound = wtx
        .open_table(LEASE_KEYS)
        .map_err(backend("opening table lease_keys"))?;
    for op in &txn.ops {
        match op {
            Op::Put { key, value, lease } => {
                kv.insert(key.as_str(), encode(revision, value).as_slice())
                    .map_err(backend("writing a key"))?;
                match lease {
                    Some(lease) => {
                        bound
                            .insert(key.as_str(), *lease)
                            .map_err(backend("binding a key to its lease"))?;
                    }
                    None => {
                        bound
                            .remove(key.as_str())
                            .map_err(backend("unbinding a key from its lease"))?;
                    }
                }
            }
            Op::Delete { key } => {
                kv.remove(key.as_str()).map_err(backend("deleting a key"))?;
                bound
                    .remove(key.as_str())
                    .map_err(backend("unbinding a deleted key"))?;
            }
        }
    }
    Ok(Decision::Applied)
}

fn txn_blocking(db: &Database, leases: &Mutex<LeaseBook>, txn: Txn) -> Result<bool, MetaError> {
    let mut book = lock(leases);
    let now = Instant::now();
    let expired = book.expired(now);
    let wtx = db
        .begin_write()
        .map_err(backend("starting a write transaction"))?;
    delete_lease_keys(&wtx, Some(&expired))?;
    let decision = evaluate(&wtx, &book, now, &txn)?;
    let wrote = matches!(decision, Decision::Applied) && !txn.ops.is_empty();
    if wrote || !expired.is_empty() {
        wtx.commit()
            .map_err(backend("committing a write transaction"))?;
        book.forget(&expired);
    }
    // Otherwise dropping `wtx` uncommitted aborts it.
    match decision {
        Decision::Applied => Ok(true),
        Decision::CompareFailed => Ok(false),
        Decision::LeaseExpired => Err(MetaError::LeaseExpired),
    }
}

#[async_trait]
impl MetaStore for EmbeddedMetaStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        let key = key.to_owned();
        self.blocking(move |db, leases| {
            expire(db, &mut lock(leases), Instant::now())?;
            let rtx = db
                .begin_read()
                .map_err(backend("starting a read transaction"))?;
            let kv = rtx.open_table(KV).map_err(backend("opening table kv"))?;
            match kv.get(key.as_str()).map_err(backend("reading a key"))? {
                Some(raw) => Ok(Some(decode(&key, raw.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, MetaError> {
        let prefix = prefix.to_owned();
        self.blocking(move |db, leases| {
            expire(db, &mut lock(leases), Instant::now())?;
            let rtx = db
                .begin_read()
                .map_err(backend("starting a read transaction"))?;
            let kv = rtx.open_table(KV).map_err(backend("opening table kv"))?;
            let mut out = Vec::new();
            for item in kv
                .range(prefix.as_str()..)
                .map_err(backend("scanning a prefix"))?
            {
                let (key, raw) = item.map_err(backend("scanning a prefix"))?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                out.push(decode(key, raw.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<bool, MetaError> {
        txn.validate()?;
        self.blocking(move |db, leases| txn_blocking(db, leases, txn))
            .await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        self.blocking(move |db, leases| {
            let mut book = lock(leases);
            let now = Instant::now();
            expire(db, &mut book, now)?;
            Ok(book.grant(ttl, now))
        })
        .await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<bool, MetaError> {
        self.blocking(move |db, leases| {
            let mut book = lock(leases);
            let now = Instant::now();
            expire(db, &mut book, now)?;
            Ok(book.keep_alive(lease, now))
        })
        .await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), MetaError> {
        self.blocking(move |db, leases| {
            let mut book = lock(leases);
            let now = Instant::now();
            expire(db, &mut book, now)?;
            if !book.is_live(lease, now) {
                return Ok(());
            }
            let wtx = db
                .begin_write()
                .map_err(backend("starting a lease revoke transaction"))?;
            delete_lease_keys(&wtx, Some(&[lease]))?;
            wtx.commit()
                .map_err(backend("committing a lease revoke transaction"))?;
            book.forget(&[lease]);
            Ok(())
        })
        .await
    }
}
