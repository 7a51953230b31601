//! [`ObjectStorage`]: every request this crate makes to the bucket.
//!
//! # Contract
//!
//! - [`ObjectStorage::put_object`] writes a whole data object atomically: readers see
//!   either no object or all of it (a single PUT, or a multipart upload that becomes
//!   visible only on completion). A failed multipart upload is aborted, so no orphan
//!   parts are billed. Putting the same key twice with the same bytes is harmless, which
//!   is what makes retrying a put safe.
//! - Each request (each part, for multipart) gets `request_timeout`. A request that times
//!   out is retried up to `retries` times with exponential backoff (100 ms, 200 ms, ...,
//!   capped at 5 s); after that the caller gets [`StorageError::Timeout`]. Other errors
//!   are not retried here: the S3 client already retries throttling, 5xx and connection
//!   errors itself (configured in [`crate::open_object_store`]), and local or in-memory
//!   errors are not transient.
//! - A missing object is [`StorageError::NotFound`]; [`ObjectStorage::delete`] of a
//!   missing object succeeds (deletes are idempotent on every backend).
//!
//! # Key layout
//!
//! Data objects live at `data/{hash}/{writer}-{seq:020}.obj`, where `hash` is four
//! lowercase hex digits: the low 16 bits of `crc32c("{writer}/{seq}")`. The hash spreads
//! request load over 65 536 prefixes, which S3 partitions independently; the zero-padded
//! sequence keeps one writer's objects in order when listed under one prefix. Side
//! objects (index checkpoints and the like) are placed by their callers outside `data/`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, PutPayload};
use tracing::{debug, warn};

use crate::StorageError;
use crate::format::{RunEntry, decode_tail, decode_trailer};

/// How many bytes [`ObjectStorage::read_index`] fetches first: the trailer plus a footer
/// of up to ~80 entries, so most objects need one request.
const TAIL_READ: u64 = 4096;
/// Parts of one multipart upload in flight at once.
const PART_CONCURRENCY: usize = 4;
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Tunables of [`ObjectStorage`].
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Objects of at least this many bytes are uploaded with a multipart upload; smaller
    /// ones with one PUT. Default: 16 MiB.
    pub multipart_threshold: u64,
    /// Size of each multipart part (the last may be smaller). S3 requires at least 5 MiB
    /// for all parts but the last. Default: 8 MiB. Minimum: 1 byte (0 is treated as 1).
    pub multipart_part_size: u64,
    /// Time allowed for each request (each part, for multipart). Default: 30 s.
    pub request_timeout: Duration,
    /// How many times a timed-out request is retried, with exponential backoff. Default: 3.
    pub retries: u32,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            multipart_threshold: 16 * 1024 * 1024,
            multipart_part_size: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            retries: 3,
        }
    }
}

/// Object storage for data objects, over any `object_store` backend.
#[derive(Clone, Debug)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    opts: StorageOptions,
}

/// Why one attempt failed.
enum Attempt {
    Store(object_store::Error),
    TimedOut,
}

impl From<object_store::Error> for Attempt {
    fn from(e: object_store::Error) -> Self {
        Attempt::Store(e)
    }
}

async fn timed<T, E: Into<Attempt>>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, Attempt> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(Attempt::TimedOut),
    }
}

fn backoff(attempt: u32) -> Duration {
    INITIAL_BACKOFF
        .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF)
}

impl ObjectStorage {
    /// Wraps `store`.
    pub fn new(store: Arc<dyn ObjectStore>, opts: StorageOptions) -> Self {
        Self { store, opts }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The options in use.
    pub fn options(&self) -> &StorageOptions {
        &self.opts
    }

    /// Key for a new data object: `data/{hash}/{writer}-{seq:020}.obj` (see the module
    /// docs). `writer` should be one path segment; a `/` in it is percent-encoded.
    pub fn data_object_key(writer: &str, seq: u64) -> Path {
        let hash = crc32c::crc32c(format!("{writer}/{seq}").as_bytes()) & 0xffff;
        Path::from_iter([
            "data".to_owned(),
            format!("{hash:04x}"),
            format!("{writer}-{seq:020}.obj"),
        ])
    }

    /// Runs `attempt` with the request timeout, retrying timeouts with backoff.
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        key: &Path,
        mut attempt: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let mut tries = 0u32;
        loop {
            tries += 1;
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(Attempt::Store(e)) => {
                    return Err(StorageError::from_store(op, key.as_ref(), e));
                }
                Err(Attempt::TimedOut) => {
                    if tries > self.opts.retries {
                        return Err(StorageError::Timeout {
                            op,
                            key: key.to_string(),
                            after: self.opts.request_timeout,
                            attempts: tries,
                        });
                    }
                    let wait = backoff(tries - 1);
                    warn!(op, %key, attempt = tries, ?wait, "object store request timed out; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Puts the whole object: a single PUT below `multipart_threshold`, a multipart
    /// upload at or above it. A failed multipart upload is aborted.
    pub async fn put_object(
        &self,
        key: &Path,
        object: &crate::EncodedObject,
    ) -> Result<(), StorageError> {
        if object.size < self.opts.multipart_threshold {
            debug!(%key, size = object.size, "put data object");
            let limit = self.opts.request_timeout;
            self.run("put", key, || {
                let payload: PutPayload = object.parts.iter().cloned().collect();
                timed(limit, self.store.put(key, payload))
            })
            .await?;
            Ok(())
        } else {
            debug!(%key, size = object.size, "multipart put data object");
            self.run("multipart put", key, || {
                self.multipart_once(key, &object.parts)
            })
            .await
        }
    }

    /// One multipart upload attempt; aborts the upload if any step fails.
    async fn multipart_once(&self, key: &Path, parts: &[Bytes]) -> Result<(), Attempt> {
        let limit = self.opts.request_timeout;
        let mut upload = timed(limit, self.store.put_multipart(key)).await?;
        let payloads = split_parts(parts, self.opts.multipart_part_size);
        let uploads: Vec<_> = payloads.into_iter().map(|p| upload.put_part(p)).collect();
        let result = async {
            // At most PART_CONCURRENCY parts in flight; a plain loop (rather than a
            // stream combinator with a closure) keeps the future provably Send.
            let mut waiting = uploads.into_iter();
            let mut in_flight = futures::stream::FuturesUnordered::new();
            loop {
                while in_flight.len() < PART_CONCURRENCY {
                    match waiting.next() {
                        Some(part) => in_flight.push(timed(limit, part)),
                        None => break,
                    }
                }
                match in_flight.next().await {
                    Some(done) => done?,
                    None => break,
                }
            }
            timed(limit, upload.complete()).await
        }
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                match timed(limit, upload.abort()).await {
                    Ok(()) => debug!(%key, "aborted failed multipart upload"),
                    Err(Attempt::Store(abort_err)) => {
                        warn!(%key, error = %abort_err, "could not abort failed multipart upload")
                    }
                    Err(_) => warn!(%key, "could not abort failed multipart upload"),
                }
                Err(e)
            }
        }
    }

    /// One ranged GET of `length` bytes at `position`.
    pub async fn read_range(
        &self,
        key: &Path,
        position: u64,
        length: u64,
    ) -> Result<Bytes, StorageError> {
        let Some(end) = position.checked_add(length) else {
            return Err(StorageError::InvalidRange {
                key: key.to_string(),
                position,
                length,
            });
        };
        if length == 0 {
            return Ok(Bytes::new());
        }
        let limit = self.opts.request_timeout;
        let bytes = self
            .run("get range", key, || {
                timed(limit, self.store.get_range(key, position..end))
            })
            .await?;
        if bytes.len() as u64 != length {
            return Err(StorageError::ShortRead {
                key: key.to_string(),
                position,
                expected: length,
                got: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Reads and decodes the footer of a data object: one suffix GET of the last few KiB
    /// (trailer and, usually, the footer), then a ranged GET of the footer if it is larger.
    /// Also checks that the footer's data length matches the object's size.
    pub async fn read_index(&self, key: &Path) -> Result<Vec<RunEntry>, StorageError> {
        let limit = self.opts.request_timeout;
        let (size, tail) = self
            .run("get footer", key, || {
                timed(limit, async {
                    let opts = GetOptions {
                        range: Some(GetRange::Suffix(TAIL_READ)),
                        ..Default::default()
                    };
                    let res = self.store.get_opts(key, opts).await?;
                    let size = res.meta.size;
                    let bytes = res.bytes().await?;
                    Ok::<_, object_store::Error>((size, bytes))
                })
            })
            .await?;
        let trailer = decode_trailer(&tail).map_err(|e| e.with_key(key.as_ref()))?;
        let need = trailer.tail_len();
        let Some(footer_start) = size.checked_sub(need) else {
            return Err(StorageError::Corrupt {
                key: Some(key.to_string()),
                reason: format!("object is {size} bytes, but its footer and trailer claim {need}"),
            });
        };
        let tail = if need <= tail.len() as u64 {
            tail
        } else {
            self.read_range(key, footer_start, need).await?
        };
        let (data_len, index) = decode_tail(&tail).map_err(|e| e.with_key(key.as_ref()))?;
        if data_len != footer_start {
            return Err(StorageError::Corrupt {
                key: Some(key.to_string()),
                reason: format!(
                    "footer says {data_len} data bytes, but the object holds {footer_start} bytes before its footer"
                ),
            });
        }
        Ok(index)
    }

    /// Puts a small side object (an index checkpoint, say) with one PUT.
    pub async fn put_bytes(&self, key: &Path, data: Bytes) -> Result<(), StorageError> {
        let limit = self.opts.request_timeout;
        self.run("put", key, || {
            timed(limit, self.store.put(key, data.clone().into()))
        })
        .await?;
        Ok(())
    }

    /// Gets a whole object.
    pub async fn get_bytes(&self, key: &Path) -> Result<Bytes, StorageError> {
        let limit = self.opts.request_timeout;
        self.run("get", key, || {
            timed(limit, async { self.store.get(key).await?.bytes().await })
        })
        .await
    }

    /// Deletes an object. Deleting a missing object succeeds.
    pub async fn delete(&self, key: &Path) -> Result<(), StorageError> {
        let limit = self.opts.request_timeout;
        match self
            .run("delete", key, || timed(limit, self.store.delete(key)))
            .await
        {
            Ok(()) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lists every object under `prefix` (recursively), in no particular order.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>, StorageError> {
        let limit = self.opts.request_timeout;
        self.run("list", prefix, || {
            timed(limit, self.store.list(Some(prefix)).try_collect::<Vec<_>>())
        })
        .await
    }
}

/// Splits the object's parts into multipart payloads of `part_size` bytes (the last may
/// be smaller), slicing `Bytes` without copying.
fn split_parts(parts: &[Bytes], part_size: u64) -> Vec<PutPayload> {
    let part_size = usize::try_from(part_size.max(1)).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut current: Vec<Bytes> = Vec::new();
    let mut filled = 0usize;
    for part in parts {
        let mut rest = part.clone();
        while !rest.is_empty() {
            let take = (part_size - filled).min(rest.len());
            current.push(rest.split_to(take));
            filled += take;
            if filled == part_size {
                out.push(std::mem::take(&mut current).into_iter().collect());
                filled = 0;
            }
        }
    }
    if !current.is_empty() {
        out.push(current.into_iter().collect());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn split_parts_slices_exactly() {
        let parts = vec![
            Bytes::from(vec![1u8; 7]),
            Bytes::from(vec![2u8; 2]),
            Bytes::from(vec![3u8; 6]),
        ];
        let payloads = split_parts(&parts, 4);
        let sizes: Vec<usize> = payloads.iter().map(|p| p.content_length()).collect();
        assert_eq!(sizes, vec![4, 4, 4, 3]);
        let joined: Vec<u8> = payloads
            .iter()
            .flat_map(|p| p.iter().flat_map(|b| b.to_vec()))
            .collect();
        let expected: Vec<u8> = parts.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(joined, expected);
        assert!(split_parts(&[], 4).is_empty());
        assert_eq!(split_parts(&parts, 0).len(), 15);
    }

    #[test]
    fn data_object_keys_are_hashed_and_padded() {
        let k = ObjectStorage::data_object_key("broker-1", 42);
        let s = k.to_string();
        let segs: Vec<&str> = s.split('/').collect();
        assert_eq!(segs.len(), 3, "{s}");
        assert_eq!(segs[0], "data");
        assert_eq!(segs[1].len(), 4);
        assert!(
            segs[1]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(segs[2], "broker-1-00000000000000000042.obj");
        let expected = crc32c::crc32c(b"broker-1/42") & 0xffff;
        assert_eq!(segs[1], format!("{expected:04x}"));
        // Different sequences land on different prefixes (for these two, at least).
        let prefixes: std::collections::BTreeSet<String> = (0..64)
            .map(|i| ObjectStorage::data_object_key("w", i).to_string()[5..9].to_owned())
            .collect();
        assert!(prefixes.len() > 32);
        // A slash in the writer cannot add a path segment.
        let odd = ObjectStorage::data_object_key("a/b", 1).to_string();
        assert_eq!(odd.split('/').count(), 3, "{odd}");
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
