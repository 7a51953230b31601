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
//!
//! # Invariants
//!
//! - Every successful [`MetaStore::txn`] with at least one op is exactly one redb write
//!   transaction committed with [`redb::Durability::Immediate`] (fsync before return).
//!   Compares are evaluated inside that write transaction; redb serialises writers, so
//!   transactions are linearizable.
//! - Reads use a redb read transaction: a consistent snapshot of the last commit.
//! - Every redb call is blocking and runs under `tokio::task::spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::MetaError;
use crate::store::{KeyValue, MetaStore, Op, Txn};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";
const VERSION_LEN: usize = 8;

/// The embedded, persistent [`MetaStore`] on redb.
pub struct EmbeddedMetaStore {
    db: Arc<Database>,
    path: PathBuf,
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
    /// Opens (or creates) the store file at `path`, creating its parent directory.
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
        // Create both tables so that read transactions never meet a missing table.
        let wtx = db
            .begin_write()
            .map_err(backend("starting the initial transaction"))?;
        {
            wtx.open_table(KV).map_err(backend("creating table kv"))?;
            wtx.open_table(META)
                .map_err(backend("creating table meta"))?;
        }
        wtx.commit()
            .map_err(backend("committing the initial transaction"))?;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, MetaError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| MetaError::backend("running a blocking metadata call", e))?
    }
}

fn txn_blocking(db: &Database, txn: Txn) -> Result<bool, MetaError> {
    let wtx = db
        .begin_write()
        .map_err(backend("starting a write transaction"))?;
    {
        let mut kv = wtx.open_table(KV).map_err(backend("opening table kv"))?;
        for compare in &txn.compares {
            let current = match kv
                .get(compare.key())
                .map_err(backend("reading a compare key"))?
            {
                Some(raw) => Some(decode(compare.key(), raw.value())?.version),
                None => None,
            };
            if !compare.holds(current) {
                // Dropping `wtx` uncommitted aborts it.
                return Ok(false);
            }
        }
        if txn.ops.is_empty() {
            return Ok(true);
        }
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
        for op in &txn.ops {
            match op {
                Op::Put { key, value } => {
                    kv.insert(key.as_str(), encode(revision, value).as_slice())
                        .map_err(backend("writing a key"))?;
                }
                Op::Delete { key } => {
                    kv.remove(key.as_str()).map_err(backend("deleting a key"))?;
                }
            }
        }
    }
    wtx.commit()
        .map_err(backend("committing a write transaction"))?;
    Ok(true)
}

#[async_trait]
impl MetaStore for EmbeddedMetaStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        let key = key.to_owned();
        self.blocking(move |db| {
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
        self.blocking(move |db| {
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
        self.blocking(move |db| txn_blocking(db, txn)).await
    }
}
