//! [`MemoryMetaStore`]: an in-process [`MetaStore`] for unit tests.
//!
//! Owns a `BTreeMap`, a revision counter and the lease book behind one mutex, so every
//! operation is trivially linearizable. Nothing is persisted: "durable" means "until
//! drop".
//!
//! Leases live in memory with [`Instant`] deadlines. Expiry is enforced lazily at the
//! start of every call (under the same lock, before the call is evaluated) and by
//! nothing else: each expired lease's keys are deleted together, at one new revision.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::MetaError;
use crate::lease::LeaseBook;
use crate::store::{KeyValue, LeaseId, MetaStore, Op, Txn};

#[derive(Debug)]
struct Entry {
    value: Bytes,
    version: u64,
    lease: Option<LeaseId>,
}

#[derive(Debug, Default)]
struct State {
    revision: u64,
    entries: BTreeMap<String, Entry>,
    leases: LeaseBook,
}

impl State {
    /// Deletes the keys of every lease expired at `now`, one revision per lease that
    /// still had keys, and forgets those leases.
    fn expire(&mut self, now: Instant) {
        let expired = self.leases.expired(now);
        for lease in &expired {
            self.delete_lease_keys(*lease);
        }
        self.leases.forget(&expired);
    }

    fn delete_lease_keys(&mut self, lease: LeaseId) {
        let keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.lease == Some(lease))
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        // The deletion is one write: it takes one revision, like etcd's lease revoke.
        self.revision += 1;
        for key in keys {
            self.entries.remove(&key);
        }
    }
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

    /// Locks the state after expiring every lease whose deadline has passed; returns
    /// the instant the call is evaluated at.
    fn lock(&self) -> (MutexGuard<'_, State>, Instant) {
        // A panic while holding the lock cannot leave a half-applied txn: ops are
        // applied only after every check passed, and map inserts do not panic.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        state.expire(now);
        (state, now)
    }
}

#[async_trait]
impl MetaStore for MemoryMetaStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        Ok(self.lock().0.entries.get(key).map(|e| KeyValue {
            key: key.to_owned(),
            value: e.value.clone(),
            version: e.version,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, MetaError> {
        let (state, _) = self.lock();
        Ok(state
            .entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, e)| KeyValue {
                key: key.clone(),
                value: e.value.clone(),
                version: e.version,
            })
            .collect())
    }

    async fn txn(&self, txn: Txn) -> Result<bool, MetaError> {
        txn.validate()?;
        let (mut state, now) = self.lock();
        for compare in &txn.compares {
            let current = state.entries.get(compare.key()).map(|e| e.version);
            if !compare.holds(current) {
                return Ok(false);
            }
        }
        if txn.ops.is_empty() {
            return Ok(true);
        }
        for op in &txn.ops {
            if let Op::Put {
                lease: Some(lease), ..
            } = op
                && !state.leases.is_live(*lease, now)
            {
                return Err(MetaError::LeaseExpired);
            }
        }
        state.revision += 1;
        let revision = state.revision;
        for op in txn.ops {
            match op {
                Op::Put { key, value, lease } => {
                    state.entries.insert(
                        key,
                        Entry {
                            value,
                            version: revision,
                            lease,
                        },
                    );
                }
                Op::Delete { key } => {
                    state.entries.remove(&key);
                }
            }
        }
        Ok(true)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        let (mut state, now) = self.lock();
        Ok(state.leases.grant(ttl, now))
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<bool, MetaError> {
        let (mut state, now) = self.lock();
        Ok(state.leases.keep_alive(lease, now))
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), MetaError> {
        let (mut state, now) = self.lock();
        if state.leases.is_live(lease, now) {
            state.delete_lease_keys(lease);
            state.leases.forget(&[lease]);
        }
        Ok(())
    }
}
