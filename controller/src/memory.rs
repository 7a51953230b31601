//! [`MemoryMetaStore`]: an in-process [`MetaStore`] for unit tests.
//!
//! Owns a `BTreeMap` and a revision counter behind one mutex, so every operation is
//! trivially linearizable. Nothing is persisted: "durable" means "until drop".

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use crate::MetaError;
use crate::store::{KeyValue, MetaStore, Op, Txn};

#[derive(Debug, Default)]
struct State {
    revision: u64,
    entries: BTreeMap<String, (Bytes, u64)>,
}

/// An in-memory [`MetaStore`]; passes the same conformance suite as the others.
#[derive(Debug, Default)]
pub struct MemoryMetaStore {
    state: Mutex<State>,
}

impl MemoryMetaStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied txn: ops are
        // applied only after every check passed, and map inserts do not panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl MetaStore for MemoryMetaStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        Ok(self
            .lock()
            .entries
            .get(key)
            .map(|(value, version)| KeyValue {
                key: key.to_owned(),
                value: value.clone(),
                version: *version,
            }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, MetaError> {
        let state = self.lock();
        Ok(state
            .entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, (value, version))| KeyValue {
                key: key.clone(),
                value: value.clone(),
                version: *version,
            })
            .collect())
    }

    async fn txn(&self, txn: Txn) -> Result<bool, MetaError> {
        txn.validate()?;
        let mut state = self.lock();
        for compare in &txn.compares {
            let current = state.entries.get(compare.key()).map(|(_, v)| *v);
            if !compare.holds(current) {
                return Ok(false);
            }
        }
        if txn.ops.is_empty() {
            return Ok(true);
        }
        state.revision += 1;
        let revision = state.revision;
        for op in txn.ops {
            match op {
                Op::Put { key, value } => {
                    state.entries.insert(key, (value, revision));
                }
                Op::Delete { key } => {
                    state.entries.remove(&key);
                }
            }
        }
        Ok(true)
    }
}
