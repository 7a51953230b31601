//! The read cache: object runs read from the bucket, kept in a foyer hybrid cache
//! (memory, plus local disk when `--read-cache-disk-bytes` is set) so that a consumer
//! reading one run in several fetches, or several consumers of one partition, issue one
//! GET. Only reads behind the in-memory tail come here. Consumers at the head are served
//! from the tail (`--tail-cache-bytes`), a separate budget that no historical read can
//! evict: that is the hot/cold separation.
//!
//! - **Unit**: one run (one partition's bytes in one object), keyed by object key and
//!   position. Runs are immutable, so entries never go stale. An entry of a deleted
//!   object is merely never asked for again.
//! - **Eviction**: S3-FIFO in memory. It is scan-resistant: a catch-up consumer
//!   replaying days of data passes through the small probationary queue without
//!   flushing the runs that are read again and again. The disk tier (foyer's block
//!   engine) takes what memory evicts. Entries larger than its block are not written
//!   to disk.
//! - **Read-ahead**: after a read from the bucket, the next run of the same partition
//!   is fetched in the background if it is not cached (at most
//!   [`MAX_READ_AHEAD_IN_FLIGHT`] at once per broker), so a sequential catch-up finds
//!   its next run warm.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use cirrus_storage::ObjectStorage;
use foyer::{
    BlockEngineConfig, DeviceBuilder, EvictionConfig, FsDeviceBuilder, HybridCache,
    HybridCacheBuilder, S3FifoConfig,
};
use prometheus_client::metrics::counter::Counter;

use crate::error::Result;
use crate::partition::RunLocation;

/// Background read-aheads in flight at once; more are skipped, not queued.
pub const MAX_READ_AHEAD_IN_FLIGHT: usize = 4;

/// Largest entry the disk tier stores (its block size).
const DISK_BLOCK_BYTES: usize = 16 << 20;

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create the read cache directory {}: {source}", .dir.display())]
    Dir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the read cache{}: {source}", .dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default())]
    Open {
        dir: Option<std::path::PathBuf>,
        source: foyer::Error,
    },
}

/// Where the disk tier lives and how large it may grow.
#[derive(Debug, Clone)]
pub struct DiskTier {
    pub dir: std::path::PathBuf,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
struct Counters {
    hits: Counter,
    misses: Counter,
    read_ahead: Counter,
}

pub struct RunCache {
    cache: Option<HybridCache<String, Bytes>>,
    counters: Counters,
    read_ahead_in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RunCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCache")
            .field("enabled", &self.cache.is_some())
            .field(
                "hybrid",
                &self.cache.as_ref().is_some_and(|c| c.is_hybrid()),
            )
            .finish()
    }
}

fn cache_key(run: &RunLocation) -> String {
    format!("{}@{}", run.key, run.position)
}

impl RunCache {
    /// A cache of `memory_bytes` in memory (0: no cache at all) and the optional disk tier.
    pub async fn open(
        memory_bytes: u64,
        disk: Option<DiskTier>,
    ) -> std::result::Result<Self, CacheError> {
        if memory_bytes == 0 {
            return Ok(RunCache {
                cache: None,
                counters: Counters::default(),
                read_ahead_in_flight: Arc::default(),
            });
        }
        let memory = HybridCacheBuilder::new()
            .with_name("cirrus-read-cache")
            .memory(usize::try_from(memory_bytes).unwrap_or(usize::MAX))
            .with_eviction_config(EvictionConfig::S3Fifo(S3FifoConfig::default()))
            .with_weighter(|key: &String, value: &Bytes| key.len() + value.len());
        let storage = memory.storage();
        let built = match disk.as_ref().filter(|d| d.bytes > 0) {
            None => storage.build().await,
            Some(tier) => {
                // foyer would panic on a directory it cannot create: check first.
                std::fs::create_dir_all(&tier.dir).map_err(|source| CacheError::Dir {
                    dir: tier.dir.clone(),
                    source,
                })?;
                let device = FsDeviceBuilder::new(&tier.dir)
                    .with_capacity(usize::try_from(tier.bytes).unwrap_or(usize::MAX))
                    .build()
                    .map_err(|source| CacheError::Open {
                        dir: Some(tier.dir.clone()),
                        source,
                    })?;
                storage
                    .with_engine_config(
                        BlockEngineConfig::new(device).with_block_size(DISK_BLOCK_BYTES),
                    )
                    .build()
                    .await
            }
        };
        let cache = built.map_err(|source| CacheError::Open {
            dir: disk.map(|d| d.dir),
            source,
        })?;
        Ok(RunCache {
            cache: Some(cache),
            counters: Counters::default(),
            read_ahead_in_flight: Arc::default(),
        })
    }

    /// Counts hits, misses and read-aheads into these (registered) counters.
    pub fn with_counters(mut self, hits: Counter, misses: Counter, read_ahead: Counter) -> Self {
        self.counters = Counters {
            hits,
            misses,
            read_ahead,
        };
        self
    }

    /// The run's bytes, from the cache or the bucket (then cached).
    pub async fn get_or_load(&self, storage: &ObjectStorage, run: &RunLocation) -> Result<Bytes> {
        let Some(cache) = &self.cache else {
            self.counters.misses.inc();
            return Ok(storage
                .read_range(&run.key, run.position, run.length)
                .await?);
        };
        let key = cache_key(run);
        match cache.get(&key).await {
            Ok(Some(entry)) => {
                self.counters.hits.inc();
                return Ok(entry.value().clone());
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "read cache lookup failed; reading the bucket"),
        }
        self.counters.misses.inc();
        let data = storage
            .read_range(&run.key, run.position, run.length)
            .await?;
        cache.insert(key, data.clone());
        Ok(data)
    }

    /// Loads `run` into the cache in the background unless it is cached already or
    /// enough read-aheads are in flight. Failures only cost the read-ahead.
    pub fn read_ahead(&self, storage: &ObjectStorage, run: RunLocation) {
        let Some(cache) = &self.cache else {
            return;
        };
        let key = cache_key(&run);
        if cache.contains(&key) {
            return;
        }
        let in_flight = self.read_ahead_in_flight.clone();
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_READ_AHEAD_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        self.counters.read_ahead.inc();
        let (cache, storage) = (cache.clone(), storage.clone());
        tokio::spawn(async move {
            match storage.read_range(&run.key, run.position, run.length).await {
                Ok(data) => {
                    cache.insert(key, data);
                }
                Err(e) => tracing::debug!(key = %run.key, error = %e, "read-ahead failed"),
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Flushes and closes the disk tier (on shutdown).
    pub async fn close(&self) {
        if let Some(cache) = &self.cache
            && let Err(e) = cache.close().await
        {
            tracing::warn!(error = %e, "closing the read cache failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    async fn storage_with(objects: &[(&str, &[u8])]) -> ObjectStorage {
        let storage = ObjectStorage::new(
            Arc::new(InMemory::new()),
            cirrus_storage::StorageOptions::default(),
        );
        for (key, data) in objects {
            storage
                .put_bytes(
                    &object_store::path::Path::from(*key),
                    Bytes::copy_from_slice(data),
                )
                .await
                .unwrap();
        }
        storage
    }

    fn run(key: &str, position: u64, length: u64) -> RunLocation {
        RunLocation {
            key: Arc::new(object_store::path::Path::from(key)),
            position,
            length,
            first_offset: 0,
            last_offset: 0,
            max_timestamp: 0,
            leader_epoch: 0,
            committed_ms: 0,
            cleaned: false,
            tombstones_expire_ms: None,
        }
    }

    async fn counted(cache: RunCache) -> (RunCache, Counters) {
        let counters = Counters::default();
        let cache = cache.with_counters(
            counters.hits.clone(),
            counters.misses.clone(),
            counters.read_ahead.clone(),
        );
        (cache, counters)
    }

    #[tokio::test]
    async fn runs_are_read_once_then_served_from_memory_or_disk() {
        let storage = storage_with(&[("data/a", b"0123456789"), ("data/b", b"abcdef")]).await;
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier {
            dir: dir.path().join("cache"),
            bytes: 64 << 20,
        };
        let (cache, counters) = counted(RunCache::open(1 << 20, Some(tier)).await.unwrap()).await;
        assert!(format!("{cache:?}").contains("hybrid: true"), "{cache:?}");
        let first = cache
            .get_or_load(&storage, &run("data/a", 2, 4))
            .await
            .unwrap();
        assert_eq!(&first[..], b"2345");
        let again = cache
            .get_or_load(&storage, &run("data/a", 2, 4))
            .await
            .unwrap();
        assert_eq!(again, first);
        assert_eq!((counters.hits.get(), counters.misses.get()), (1, 1));

        // Read-ahead loads a run in the background; the next read of it is a hit.
        cache.read_ahead(&storage, run("data/b", 0, 6));
        assert_eq!(counters.read_ahead.get(), 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while cache.read_ahead_in_flight.load(Ordering::Acquire) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "read-ahead never finished"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let b = cache
            .get_or_load(&storage, &run("data/b", 0, 6))
            .await
            .unwrap();
        assert_eq!(&b[..], b"abcdef");
        assert_eq!((counters.hits.get(), counters.misses.get()), (2, 1));
        // A cached run is not read ahead again.
        cache.read_ahead(&storage, run("data/b", 0, 6));
        assert_eq!(counters.read_ahead.get(), 1);
        cache.close().await;
    }

    #[tokio::test]
    async fn a_zero_budget_means_no_cache() {
        let storage = storage_with(&[("data/a", b"0123456789")]).await;
        let (cache, counters) = counted(RunCache::open(0, None).await.unwrap()).await;
        for _ in 0..2 {
            let got = cache
                .get_or_load(&storage, &run("data/a", 0, 3))
                .await
                .unwrap();
            assert_eq!(&got[..], b"012");
        }
        cache.read_ahead(&storage, run("data/a", 3, 3));
        assert_eq!(
            (
                counters.hits.get(),
                counters.misses.get(),
                counters.read_ahead.get()
            ),
            (0, 2, 0)
        );
    }

    #[tokio::test]
    async fn a_disk_tier_that_cannot_be_created_is_a_clear_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let tier = DiskTier {
            dir: file.path().join("under-a-file"),
            bytes: 64 << 20,
        };
        let err = RunCache::open(1 << 20, Some(tier)).await.unwrap_err();
        assert!(err.to_string().contains("under-a-file"), "{err}");
    }
}
