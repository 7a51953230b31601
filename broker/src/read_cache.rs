//! A small in-memory cache of object runs for reads behind the in-memory tail, so a
//! consumer reading one run in several fetches issues one GET. Bounded by bytes, least
//! recently used out. (The foyer memory+disk cache replaces this in the storage
//! lifecycle work.)

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use cirrus_storage::ObjectStorage;

use crate::error::Result;
use crate::partition::RunLocation;

type Key = (String, u64);

#[derive(Debug)]
pub struct RunCache {
    capacity: u64,
    inner: Mutex<Inner>,
    /// Lookups answered from memory / from the bucket (the hit ratio's two halves).
    hits: prometheus_client::metrics::counter::Counter,
    misses: prometheus_client::metrics::counter::Counter,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Bytes>,
    order: VecDeque<Key>,
    bytes: u64,
}

impl RunCache {
    pub fn new(capacity: u64) -> Self {
        RunCache {
            capacity,
            inner: Mutex::new(Inner::default()),
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    /// Counts hits and misses into these (registered) counters.
    pub fn with_counters(
        mut self,
        hits: prometheus_client::metrics::counter::Counter,
        misses: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        self.hits = hits;
        self.misses = misses;
        self
    }

    pub async fn get_or_load(&self, storage: &ObjectStorage, run: &RunLocation) -> Result<Bytes> {
        let key: Key = (run.key.to_string(), run.position);
        if let Some(hit) = self.lock().map.get(&key).cloned() {
            self.hits.inc();
            return Ok(hit);
        }
        self.misses.inc();
        let data = storage
            .read_range(&run.key, run.position, run.length)
            .await?;
        let mut inner = self.lock();
        if (data.len() as u64) <= self.capacity && !inner.map.contains_key(&key) {
            inner.bytes += data.len() as u64;
            inner.map.insert(key.clone(), data.clone());
            inner.order.push_back(key);
            while inner.bytes > self.capacity {
                let Some(old) = inner.order.pop_front() else {
                    break;
                };
                if let Some(v) = inner.map.remove(&old) {
                    inner.bytes -= v.len() as u64;
                }
            }
        }
        Ok(data)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
