//! The [`MetaStore`] trait: a small, strongly consistent, etcd-shaped key-value store,
//! and the transaction vocabulary ([`Txn`], [`Compare`], [`Op`]) shared by every
//! implementation.
//!
//! Implementations: [`crate::EmbeddedMetaStore`] (single node, redb file in the data
//! directory), [`crate::MemoryMetaStore`] (unit tests) and [`crate::EtcdMetaStore`]
//! (an etcd cluster). All of them must pass [`crate::conformance::run`].
//!
//! # Limits
//!
//! etcd's defaults are 1.5 MiB per request and 128 operations per transaction. Cirrus
//! keeps under them with margin: every value is smaller than [`MAX_VALUE_BYTES`]
//! (1 MiB) and every transaction has at most [`MAX_TXN_OPS`] (128) ops. The
//! [`crate::Metadata`] model enforces both before it sends a transaction (and
//! [`Txn::validate`] is the one check everybody calls); the local stores call it too, so
//! a model bug fails in tests exactly as it would against etcd.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::MetaError;

/// Largest value size accepted, exclusive: values must be strictly smaller (1 MiB).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Most ops (puts + deletes) in one transaction: etcd's default `--max-txn-ops`. etcd
/// applies the same limit to the number of compares, and so does [`Txn::validate`].
pub const MAX_TXN_OPS: usize = 128;

/// Identifies a lease granted by [`MetaStore::lease_grant`]. Always > 0 (etcd treats 0 as
/// "no lease").
pub type LeaseId = i64;

/// One stored key with its value and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The value bytes.
    pub value: Bytes,
    /// Store-wide revision of the key's last modification; always > 0 (etcd's
    /// `mod_revision`). Revisions only increase, across all keys.
    pub version: u64,
}

/// A condition checked atomically at the start of a [`Txn`].
#[derive(Clone, Debug)]
pub enum Compare {
    /// Holds iff the key's current version equals `version`. An absent key has version
    /// 0, so `version: 0` holds exactly when the key is absent (as in etcd).
    Version {
        /// The key.
        key: String,
        /// The expected [`KeyValue::version`].
        version: u64,
    },
    /// Holds iff the key is absent.
    Absent {
        /// The key.
        key: String,
    },
}

impl Compare {
    /// The key this compare reads.
    pub fn key(&self) -> &str {
        match self {
            Compare::Version { key, .. } | Compare::Absent { key } => key,
        }
    }

    /// Whether the compare holds given the key's current version (`None` = absent).
    pub fn holds(&self, current: Option<u64>) -> bool {
        match self {
            Compare::Version { version, .. } => current.unwrap_or(0) == *version,
            Compare::Absent { .. } => current.is_none(),
        }
    }
}

/// A write applied by a successful [`Txn`].
#[derive(Clone, Debug)]
pub enum Op {
    /// Sets the key to the value; its version becomes the transaction's new revision.
    Put {
        /// The key.
        key: String,
        /// The new value, smaller than [`MAX_VALUE_BYTES`].
        value: Bytes,
        /// The lease the key is bound to (deleted when it expires or is revoked), or
        /// `None` for a key that lives until deleted. A put always replaces the key's
        /// binding: a put without a lease unbinds a key that had one (as in etcd).
        lease: Option<LeaseId>,
    },
    /// Removes the key; deleting an absent key is not an error.
    Delete {
        /// The key.
        key: String,
    },
}

impl Op {
    /// The key this op writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// A compare-then-write transaction: if every compare holds, every op is applied.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Writes, applied in order; keys must be distinct.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a compare `version(key) == version`.
    pub fn when_version(mut self, key: impl Into<String>, version: u64) -> Self {
        self.compares.push(Compare::Version {
            key: key.into(),
            version,
        });
        self
    }

    /// Adds a compare `key is absent`.
    pub fn when_absent(mut self, key: impl Into<String>) -> Self {
        self.compares.push(Compare::Absent { key: key.into() });
        self
    }

    /// Adds any compare.
    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    /// Adds a put of a key that is not bound to a lease.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        });
        self
    }

    /// Adds a put of a key bound to `lease`: the key is deleted when the lease expires or
    /// is revoked. If the lease is unknown or expired when the transaction applies, the
    /// transaction fails with [`MetaError::LeaseExpired`] and changes nothing.
    pub fn put_with_lease(
        mut self,
        key: impl Into<String>,
        value: impl Into<Bytes>,
        lease: LeaseId,
    ) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Checks the limits every store shares: at most [`MAX_TXN_OPS`] ops and at most
    /// [`MAX_TXN_OPS`] compares, every value smaller than [`MAX_VALUE_BYTES`], no key
    /// written twice (etcd rejects all of these too).
    pub fn validate(&self) -> Result<(), MetaError> {
        if self.ops.len() > MAX_TXN_OPS {
            return Err(MetaError::TooLarge(format!(
                "transaction has {} ops, the limit is {MAX_TXN_OPS}",
                self.ops.len()
            )));
        }
        if self.compares.len() > MAX_TXN_OPS {
            return Err(MetaError::TooLarge(format!(
                "transaction has {} compares, the limit is {MAX_TXN_OPS}",
                self.compares.len()
            )));
        }
        let mut seen = HashSet::with_capacity(self.ops.len());
        for op in &self.ops {
            if let Op::Put { key, value, .. } = op
                && value.len() >= MAX_VALUE_BYTES
            {
                return Err(MetaError::TooLarge(format!(
                    "value for key {key:?} is {} bytes, values must be smaller than {MAX_VALUE_BYTES}",
                    value.len()
                )));
            }
            if !seen.insert(op.key()) {
                return Err(MetaError::InvalidArgument(format!(
                    "key {:?} is written twice in one transaction",
                    op.key()
                )));
            }
        }
        Ok(())
    }
}

/// A small, strongly consistent key-value store shaped like etcd's KV API.
///
/// # Contract (every implementation, checked by [`crate::conformance::run`])
///
/// - **Atomicity.** [`MetaStore::txn`] evaluates every compare and applies every op as
///   one step: either all ops are applied and it returns `Ok(true)`, or (some compare
///   failed) nothing changes and it returns `Ok(false)`. No reader ever sees part of a
///   transaction.
/// - **Durability.** When `txn` returns `Ok(true)` the write is durable: it survives a
///   process crash or power loss (embedded: fsynced redb commit; etcd: committed by a
///   quorum).
/// - **Ordering.** Operations are linearizable: every `get`/`list` that starts after a
///   `txn` returned sees its effect, and all clients observe writes in one total order.
///   Each successful transaction with at least one op takes the next store-wide
///   revision, and every key it puts gets that revision as its [`KeyValue::version`];
///   versions therefore strictly increase across successive writes, across all keys.
/// - **Retries.** On `Err(_)` (transport error, timeout, I/O error) the transaction
///   *may or may not* have been applied. Callers make retries safe by design: compares
///   on a key's version or absence mean a duplicate attempt fails its compare instead of
///   applying twice, and after a failed compare the caller re-reads and decides (e.g.
///   `commit_object` treats "already present with identical contents" as success).
/// - **Limits.** Values must be smaller than [`MAX_VALUE_BYTES`] and transactions hold
///   at most [`MAX_TXN_OPS`] ops with distinct keys; see [`Txn::validate`]. A store may
///   reject larger requests with [`MetaError::TooLarge`].
/// - **Scale.** This store holds small metadata only: list results are returned whole,
///   so prefixes must stay bounded (the model keeps them so, see [`crate::metadata`]).
/// - **Leases.** [`MetaStore::lease_grant`] hands out a lease with a TTL; keys put with
///   [`Txn::put_with_lease`] are bound to it. When the lease expires (no
///   [`MetaStore::lease_keep_alive`] within its TTL) or is revoked, the store deletes
///   every key bound to it in one atomic step (one revision per lease), so no reader sees
///   some of them gone and others present, and a [`Compare::Absent`] on such a key holds
///   afterwards. A transaction that would put with an unknown, expired or revoked lease
///   fails with [`MetaError::LeaseExpired`] and applies nothing (if its compares fail it
///   returns `Ok(false)` as usual; the lease is only checked for a transaction that would
///   apply). The local stores keep leases in memory and enforce expiry lazily at the
///   start of every call, so a lease is observed expired no later than the first call
///   after its deadline; etcd expires leases on its own timer (TTL rounded up to its
///   minimum, about 2 s by default, and expiry noticed within about half a second).
#[async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug + 'static {
    /// The current value of `key`, or `None` if absent.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError>;

    /// Every key starting with `prefix`, sorted by key (byte order), from one
    /// consistent snapshot.
    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, MetaError>;

    /// Atomic: if every compare holds, applies every op and returns `Ok(true)`, all or
    /// nothing, durable before returning; else changes nothing and returns `Ok(false)`.
    async fn txn(&self, txn: Txn) -> Result<bool, MetaError>;

    /// Grants a lease with this TTL (rounded up to whole seconds, min 1 s). Keys put with
    /// it are deleted (atomically, one revision) when it expires or is revoked.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, MetaError>;

    /// Refreshes the lease's TTL. `Ok(false)` if it has expired, was revoked, or never
    /// existed.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<bool, MetaError>;

    /// Revokes the lease and deletes its keys. An unknown lease is not an error.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), MetaError>;
}

/// Longest lease TTL any store grants: etcd's maximum (9,000,000,000 s).
pub const MAX_LEASE_TTL_SECS: u64 = 9_000_000_000;

/// A lease TTL in whole seconds as every store grants it: rounded up, at least 1 s,
/// at most [`MAX_LEASE_TTL_SECS`].
pub fn lease_ttl_secs(ttl: Duration) -> u64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    secs.clamp(1, MAX_LEASE_TTL_SECS)
}

/// `now + ttl`, or the latest instant this platform can represent near it.
pub(crate) fn deadline_after(now: std::time::Instant, ttl: Duration) -> std::time::Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX))))
        .unwrap_or(now)
}
