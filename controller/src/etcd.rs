//! [`EtcdMetaStore`]: the [`MetaStore`] on an etcd v3 cluster (groundwork for cluster
//! mode), through the `etcd-client` crate over plain gRPC (no TLS yet).
//!
//! # How the trait maps to etcd
//!
//! - [`KeyValue::version`] is etcd's `mod_revision`: the store-wide revision of the
//!   key's last write. etcd gives every write transaction the next revision and stamps
//!   it on every key it puts, which is exactly the trait's ordering contract. (etcd's
//!   own per-key `version` counter is *not* used.)
//! - [`MetaStore::get`] is a linearizable (non-serializable) range read of one key.
//! - [`MetaStore::list`] is a linearizable range read of `[prefix, prefix_end)`, sorted
//!   by key, paged [`LIST_PAGE_KEYS`] keys at a time; every page after the first reads
//!   at the first page's revision, so the result is one consistent snapshot. At most
//!   [`MAX_LIST_KEYS`] keys are returned; a larger prefix is an error, not a partial
//!   answer. (A compaction between pages fails the list; the caller retries.)
//! - [`MetaStore::txn`] is one etcd `Txn`: [`Compare::Version`] becomes
//!   `mod_revision(key) == version` (a missing key compares as revision 0, so
//!   `version: 0` holds exactly when the key is absent, as the trait says) and
//!   [`Compare::Absent`] becomes `version(key) == 0` (etcd's per-key version is 0 only
//!   for a missing key). Puts and deletes go in the success branch, there is no
//!   failure branch, and the result is etcd's `succeeded`. etcd commits through raft
//!   before answering, which is the trait's durability rule.
//! - Leases are etcd's native leases. [`MetaStore::lease_grant`] asks for the TTL in
//!   whole seconds (etcd may raise it to its minimum, about 2 s with default election
//!   settings). [`MetaStore::lease_keep_alive`] opens a keep-alive stream, sends one
//!   request and reads one response (TTL 0 means the lease is gone: `Ok(false)`).
//!   A put with a lease becomes a put with that lease id; etcd's "requested lease not
//!   found" becomes [`MetaError::LeaseExpired`]. Lease id 0 means "no lease" to etcd, so
//!   a put with lease id ≤ 0 is refused with [`MetaError::LeaseExpired`] before sending.
//!
//! # Limits
//!
//! etcd's defaults are 128 ops per transaction (`--max-txn-ops`) and 1.5 MiB per
//! request (`--max-request-bytes`). [`Txn::validate`] (≤ [`crate::MAX_TXN_OPS`] ops,
//! values < [`crate::MAX_VALUE_BYTES`], distinct keys) runs before anything is sent,
//! as in the other stores. A transaction of many large values can still exceed
//! 1.5 MiB in total; etcd then rejects it and the store reports
//! [`MetaError::TooLarge`] (nothing applied). The model keeps transactions far smaller.
//!
//! # Timeouts and retries
//!
//! [`EtcdMetaStore::connect`] waits at most [`EtcdOptions::connect_timeout`] (default
//! 5 s) for a connection and a first successful read; every later request is bounded by
//! [`EtcdOptions::request_timeout`] (default 10 s). Errors come back as
//! [`MetaError::Backend`] naming the operation and the endpoints.
//!
//! A transaction that timed out or lost its connection **may or may not have been
//! applied**: etcd may have committed it after the client gave up. Retrying the same
//! transaction is safe exactly when it has compares (the model's always do): if the
//! first attempt applied, the retry's `mod_revision`/absence compare fails and it
//! returns `Ok(false)`, and the caller re-reads to find out what happened, as the
//! retry rules on [`MetaStore`] require. An unconditional transaction (puts without
//! compares) would simply be applied again, at a new revision.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, GetOptions, KvClient, LeaseClient,
    PutOptions, Txn as EtcdTxn, TxnOp,
};

use crate::MetaError;
use crate::store::{Compare, KeyValue, LeaseId, MetaStore, Op, Txn, lease_ttl_secs};

/// Keys fetched per range request by [`MetaStore::list`].
pub const LIST_PAGE_KEYS: i64 = 256;

/// Most keys one [`MetaStore::list`] returns; a larger prefix is an error.
pub const MAX_LIST_KEYS: usize = 1_000_000;

/// Largest gRPC response accepted: a full list page of maximal values plus headroom.
const MAX_RESPONSE_BYTES: usize = 320 * 1024 * 1024;

/// Key read once by [`EtcdMetaStore::connect`] to prove the cluster answers.
const PROBE_KEY: &str = "cirrus/connect-probe";

/// Connection settings for [`EtcdMetaStore::connect`].
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Bound on establishing the connection and the first read (default 5 s).
    pub connect_timeout: Duration,
    /// Bound on every request after that (default 10 s).
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Why an etcd request failed; the `source` of [`MetaError::Backend`].
#[derive(Debug, thiserror::Error)]
enum EtcdError {
    #[error("etcd at {endpoints} did not answer within {timeout:?}")]
    Timeout {
        endpoints: String,
        timeout: Duration,
    },
    #[error("etcd at {endpoints}: {source}")]
    Client {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("no etcd endpoints given")]
    NoEndpoints,
}

/// A [`MetaStore`] backed by an etcd v3 cluster; passes the same conformance suite as
/// the local stores. Cheap to share: requests multiplex over one gRPC channel.
pub struct EtcdMetaStore {
    kv: KvClient,
    lease: LeaseClient,
    endpoints: String,
    request_timeout: Duration,
}

impl std::fmt::Debug for EtcdMetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdMetaStore")
            .field("endpoints", &self.endpoints)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdMetaStore {
    /// Connects to the etcd cluster at `endpoints` (e.g. `http://10.0.0.1:2379`) and
    /// checks that it answers a linearizable read, all within
    /// [`EtcdOptions::connect_timeout`].
    pub async fn connect(endpoints: &[String], opts: EtcdOptions) -> Result<Self, MetaError> {
        let joined = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(backend("connecting to etcd", EtcdError::NoEndpoints));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_timeout(opts.request_timeout);
        let connecting = async {
            let client = Client::connect(endpoints, Some(options)).await?;
            let mut kv = client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES);
            kv.get(PROBE_KEY, Some(GetOptions::new().with_count_only()))
                .await?;
            Ok::<_, etcd_client::Error>((kv, client.lease_client()))
        };
        let (kv, lease) = match tokio::time::timeout(opts.connect_timeout, connecting).await {
            Ok(Ok(clients)) => clients,
            Ok(Err(source)) => {
                return Err(backend(
                    "connecting to etcd",
                    EtcdError::Client {
                        endpoints: joined,
                        source,
                    },
                ));
            }
            Err(_) => {
                return Err(backend(
                    "connecting to etcd",
                    EtcdError::Timeout {
                        endpoints: joined,
                        timeout: opts.connect_timeout,
                    },
                ));
            }
        };
        Ok(Self {
            kv,
            lease,
            endpoints: joined,
            request_timeout: opts.request_timeout,
        })
    }

    /// Runs one request under the request timeout, mapping failures to [`MetaError`].
    async fn call<T, F>(&self, context: &str, request: F) -> Result<T, MetaError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(self.map_error(context, source)),
            Err(_) => Err(backend(
                context,
                EtcdError::Timeout {
                    endpoints: self.endpoints.clone(),
                    timeout: self.request_timeout,
                },
            )),
        }
    }

    fn map_error(&self, context: &str, source: etcd_client::Error) -> MetaError {
        if let etcd_client::Error::GRpcStatus(status) = &source {
            let message = status.message();
            if message.contains("too many operations") || message.contains("too large") {
                return MetaError::TooLarge(format!("etcd rejected the request: {message}"));
            }
            if is_lease_not_found(&source) {
                return MetaError::LeaseExpired;
            }
        }
        backend(
            context,
            EtcdError::Client {
                endpoints: self.endpoints.clone(),
                source,
            },
        )
    }
}

/// Whether etcd answered "requested lease not found" (or the client saw a TTL of 0).
fn is_lease_not_found(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.message().contains("requested lease not found")
        }
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

fn backend(context: &str, source: EtcdError) -> MetaError {
    MetaError::Backend {
        context: context.to_owned(),
        source: Box::new(source),
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end);
/// empty (= "to the end of the keyspace") if there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // The empty prefix, or all 0xff: "\0" as range end means "every key from here".
    vec![0]
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue, MetaError> {
    let key = String::from_utf8(kv.key().to_vec()).map_err(|_| MetaError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: "key is not UTF-8".into(),
    })?;
    let version = u64::try_from(kv.mod_revision())
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| MetaError::Corrupt {
            key: key.clone(),
            reason: format!("etcd reported mod_revision {}", kv.mod_revision()),
        })?;
    Ok(KeyValue {
        key,
        value: Bytes::copy_from_slice(kv.value()),
        version,
    })
}

#[async_trait]
impl MetaStore for EtcdMetaStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        let mut kv = self.kv.clone();
        let resp = self
            .call("reading a key from etcd", kv.get(key, None))
            .await?;
        // A single-key range matches at most one key; anything else is not this key.
        match resp.kvs().iter().find(|kv| kv.key() == key.as_bytes()) {
            Some(found) => convert(found).map(Some),
            None => Ok(None),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, MetaError> {
        let end = prefix_end(prefix.as_bytes());
        let mut start = prefix.as_bytes().to_vec();
        if start.is_empty() {
            // etcd rejects an empty key; "\0" with range end "\0" is "every key".
            start.push(0);
        }
        let mut revision = 0i64;
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE_KEYS);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut kv = self.kv.clone();
            let resp = self
                .call("listing keys in etcd", kv.get(start.clone(), Some(options)))
                .await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let page = resp.kvs();
            for item in page {
                out.push(convert(item)?);
            }
            if out.len() > MAX_LIST_KEYS {
                return Err(MetaError::TooLarge(format!(
                    "prefix {prefix:?} holds more than {MAX_LIST_KEYS} keys"
                )));
            }
            match page.last() {
                Some(last) if resp.more() => {
                    // Next page starts just after the last key seen.
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn txn(&self, txn: Txn) -> Result<bool, MetaError> {
        txn.validate()?;
        let mut compares = Vec::with_capacity(txn.compares.len());
        for compare in &txn.compares {
            compares.push(match compare {
                Compare::Version { key, version } => match i64::try_from(*version) {
                    Ok(rev) => EtcdCompare::mod_revision(key.as_str(), CompareOp::Equal, rev),
                    // No etcd revision is that large: the compare cannot hold.
                    Err(_) => return Ok(false),
                },
                Compare::Absent { key } => EtcdCompare::version(key.as_str(), CompareOp::Equal, 0),
            });
        }
        let mut ops = Vec::with_capacity(txn.ops.len());
        for op in txn.ops {
            ops.push(match op {
                Op::Put {
                    key,
                    value,
                    lease: None,
                } => TxnOp::put(key, value.to_vec(), None),
                // etcd reads lease 0 as "no lease": no granted lease has an id <= 0.
                Op::Put {
                    lease: Some(lease), ..
                } if lease <= 0 => return Err(MetaError::LeaseExpired),
                Op::Put {
                    key,
                    value,
                    lease: Some(lease),
                } => TxnOp::put(
                    key,
                    value.to_vec(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                Op::Delete { key } => TxnOp::delete(key, None),
            });
        }
        let request = EtcdTxn::new().when(compares).and_then(ops);
        let mut kv = self.kv.clone();
        let resp = self
            .call("committing a transaction to etcd", kv.txn(request))
            .await?;
        Ok(resp.succeeded())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        let secs = i64::try_from(lease_ttl_secs(ttl)).unwrap_or(i64::MAX);
        let mut lease = self.lease.clone();
        let resp = self
            .call("granting a lease in etcd", lease.grant(secs, None))
            .await?;
        if !resp.error().is_empty() || resp.id() <= 0 {
            return Err(MetaError::Backend {
                context: "granting a lease in etcd".into(),
                source: format!(
                    "etcd at {} refused the lease grant (id {}): {}",
                    self.endpoints,
                    resp.id(),
                    resp.error()
                )
                .into(),
            });
        }
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<bool, MetaError> {
        if id <= 0 {
            return Ok(false);
        }
        let mut lease = self.lease.clone();
        // etcd-client's keep_alive opens the stream, sends one request and reads one
        // response; a TTL of 0 in it comes back as "lease not found". Dropping the
        // keeper and the stream closes the stream.
        match tokio::time::timeout(self.request_timeout, lease.keep_alive(id)).await {
            Ok(Ok((_keeper, _stream))) => Ok(true),
            Ok(Err(e)) if is_lease_not_found(&e) => Ok(false),
            Ok(Err(source)) => Err(self.map_error("refreshing a lease in etcd", source)),
            Err(_) => Err(backend(
                "refreshing a lease in etcd",
                EtcdError::Timeout {
                    endpoints: self.endpoints.clone(),
                    timeout: self.request_timeout,
                },
            )),
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(), MetaError> {
        if id <= 0 {
            return Ok(());
        }
        let mut lease = self.lease.clone();
        match self
            .call("revoking a lease in etcd", lease.revoke(id))
            .await
        {
            Ok(_) | Err(MetaError::LeaseExpired) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"lo/"), b"lo0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[tokio::test]
    async fn connect_without_endpoints_fails_readably() {
        let err = EtcdMetaStore::connect(&[], EtcdOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no etcd endpoints"), "{err}");
    }

    #[tokio::test]
    async fn connect_to_nothing_fails_within_the_timeout() {
        // Port 1 on loopback: nothing listens there.
        let opts = EtcdOptions {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_millis(500),
        };
        let started = std::time::Instant::now();
        let err = EtcdMetaStore::connect(&["http://127.0.0.1:1".to_owned()], opts)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
