//! The log manager: every topic and partition this broker serves, the produce and fetch
//! paths over them, start-up recovery, and the upload/commit pipeline.
//!
//! Start-up order: metadata (topics, the index checkpoint and the object records after
//! it) rebuilds each partition's committed runs, offsets and producer state; then the
//! WAL is replayed for what was acknowledged but not yet committed; the replayed records
//! are pushed to the uploader, so they reach the bucket at the first flush.
//!
//! WAL data record payload (kind [`WAL_KIND_BATCH`] = 1, stable):
//! ```text
//! payload = { u8 format (=1) | u64 stream_id (BE) | i32 leader_epoch (BE) | record batch v2 bytes (base offset assigned) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use cirrus_controller::{
    Compare, MetaError, Metadata, ObjectRecord, RunRecord, Session, TopicRecord, WriterIndex,
};
use cirrus_storage::ObjectStorage;
use cirrus_wal::{Lsn, Wal, WalRecord};
use tokio::sync::{mpsc, watch};

use crate::batch::{self, BatchHeader, ProducedBatch};
use crate::config::{Durability, Settings};
use crate::error::{BrokerError, Result};
use crate::metrics::Metrics;
use crate::partition::{
    Partition, PartitionState, ProducerBatch, ReadPlan, RunLocation, SequenceCheck,
};
use crate::read_cache::RunCache;
use crate::topic_config;
use crate::uploader::{MAX_UPLOADS_IN_FLIGHT, SealedObject, Uploader};

/// WAL record kind of a produced batch. Stable: persisted in WAL segments.
pub const WAL_KIND_BATCH: u8 = 1;
const WAL_BATCH_FORMAT: u8 = 1;
const WAL_BATCH_HEADER: usize = 1 + 8 + 4;

/// Runs a read may skip when a cleaned run holds nothing at or after its offset.
const MAX_GAP_HOPS: usize = 64;

/// Bound on each metadata call of the storage lifecycle.
const LIFECYCLE_META_TIMEOUT: Duration = Duration::from_secs(10);

/// Objects committed between two index checkpoints.
pub const CHECKPOINT_EVERY_OBJECTS: u64 = 256;

/// An object of this writer whose data is all deleted, waiting to leave the bucket.
#[derive(Debug, Clone)]
struct DeadObject {
    seq: u64,
    key: String,
    size: u64,
    since: std::time::Instant,
    /// `checkpoint_snapshots` when it died: a checkpoint of a later snapshot no longer
    /// lists it.
    snapshot: u64,
}

/// Run bytes in the bucket, as [`LogManager::storage_usage`] counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageUsage {
    pub live_by_stream: HashMap<u64, u64>,
    pub deleted_bytes: u64,
}

/// What one round of dead-object collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadObjectStats {
    pub found: u64,
    pub deleted: u64,
    pub deleted_bytes: u64,
    pub pending: u64,
}

/// A topic as this broker serves it.
#[derive(Debug)]
pub struct Topic {
    pub name: Arc<str>,
    pub id: uuid::Uuid,
    pub partitions: Vec<Arc<Partition>>,
    pub configs: BTreeMap<String, String>,
}

/// An append whose offsets are assigned and whose WAL write is under way.
#[derive(Debug, Default)]
pub struct AppendTicket {
    pending: Vec<(cirrus_wal::Submitted, i64)>,
    first_base: Option<i64>,
    end: i64,
    has_duplicates: bool,
    durability: Durability,
    log_start_offset: i64,
}

/// Result of appending one partition's batches.
#[derive(Debug, Clone, Copy)]
pub struct AppendResult {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

/// What ties the log manager to a cluster: the session whose lease must be alive for
/// anything to be acknowledged, and the compare that fences every object commit.
#[derive(Debug, Clone)]
pub struct ClusterLink {
    pub session: Session,
    /// `brokers/{id}` at the version this incarnation registered: a commit after the
    /// lease expired (a paused or partitioned broker) fails this compare.
    pub fence: Compare,
    /// Set once this incarnation is fenced; the runtime then restarts the engine.
    pub fenced: watch::Sender<bool>,
}

/// Which partitions to serve at start-up.
#[derive(Debug, Clone)]
pub enum Ownership {
    /// Single node: every partition, at its topic record's epoch.
    All,
    /// Cluster: these streams at these ownership epochs.
    Streams(HashMap<u64, i32>),
}

#[derive(Debug)]
pub struct LogManager {
    pub settings: Arc<Settings>,
    pub meta: Metadata,
    pub storage: ObjectStorage,
    pub wal: Wal,
    pub uploader: Arc<Uploader>,
    pub cluster_id: String,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    streams: RwLock<HashMap<u64, Arc<Partition>>>,
    /// Bumped whenever a high watermark moves; long-polling fetches wait on it.
    data_version: watch::Sender<u64>,
    producer_ids: tokio::sync::Mutex<std::ops::Range<i64>>,
    read_cache: RunCache,
    /// Every object record that is live (since the start of the index), for checkpoints.
    live_objects: std::sync::Mutex<Vec<ObjectRecord>>,
    last_checkpoint_seq: std::sync::Mutex<u64>,
    /// The highest seq this writer committed (0: none yet).
    last_committed_seq: std::sync::atomic::AtomicU64,
    /// Objects of this writer whose data is all deleted, waiting for their grace period
    /// and for a checkpoint that no longer lists them (see [`crate::lifecycle`]).
    dead_objects: std::sync::Mutex<Vec<DeadObject>>,
    /// Serializes checkpoint writes (the commit loop and the lifecycle loop).
    checkpoint_lock: tokio::sync::Mutex<()>,
    /// Snapshots of `live_objects` taken for checkpoints (counted under its lock), and
    /// the number of the snapshot the last committed checkpoint holds.
    checkpoint_snapshots: std::sync::atomic::AtomicU64,
    checkpoint_covered: std::sync::atomic::AtomicU64,
    pub metrics: Arc<Metrics>,
    /// This broker's id: the namespace of its object records and checkpoints.
    pub writer_id: i32,
    pub cluster: Option<ClusterLink>,
    /// Parsed checkpoint blobs by key (immutable once written).
    checkpoint_blobs: std::sync::Mutex<HashMap<String, Arc<Vec<ObjectRecord>>>>,
}

impl LogManager {
    /// Loads metadata, rebuilds the partitions this broker serves and replays the WAL.
    #[allow(clippy::too_many_arguments)] // wiring done once, at the one call site
    pub async fn open(
        settings: Arc<Settings>,
        meta: Metadata,
        storage: ObjectStorage,
        wal: Wal,
        recovered: Vec<WalRecord>,
        writer: String,
        metrics: Arc<Metrics>,
        writer_id: i32,
        cluster: Option<ClusterLink>,
        ownership: Ownership,
    ) -> anyhow::Result<Arc<LogManager>> {
        let cluster_record = meta.init_cluster().await?;
        let index = meta.cluster_index().await?;
        let manager = Arc::new(LogManager {
            read_cache: RunCache::open(
                settings.read_cache_bytes,
                Some(crate::read_cache::DiskTier {
                    dir: settings.read_cache_dir.clone(),
                    bytes: settings.read_cache_disk_bytes,
                }),
            )
            .await?
            .with_counters(
                metrics.read_cache_hits.clone(),
                metrics.read_cache_misses.clone(),
                metrics.read_ahead.clone(),
            ),
            uploader: Arc::new(Uploader::new(
                settings.object_target_bytes,
                settings.flush_interval,
                writer,
                0,
            )),
            settings,
            meta,
            storage,
            wal,
            cluster_id: cluster_record.cluster_id,
            topics: RwLock::new(HashMap::new()),
            streams: RwLock::new(HashMap::new()),
            data_version: watch::channel(0).0,
            producer_ids: tokio::sync::Mutex::new(0..0),
            live_objects: std::sync::Mutex::new(Vec::new()),
            last_checkpoint_seq: std::sync::Mutex::new(0),
            last_committed_seq: std::sync::atomic::AtomicU64::new(0),
            dead_objects: std::sync::Mutex::new(Vec::new()),
            checkpoint_lock: tokio::sync::Mutex::new(()),
            checkpoint_snapshots: std::sync::atomic::AtomicU64::new(0),
            checkpoint_covered: std::sync::atomic::AtomicU64::new(0),
            metrics,
            writer_id,
            cluster,
            checkpoint_blobs: std::sync::Mutex::new(HashMap::new()),
        });
        // This writer's own live records, for its next checkpoint, and its next seq.
        let mut own: Vec<ObjectRecord> = Vec::new();
        let mut after_seq = 0;
        if let Some(w) = index.iter().find(|w| w.writer == writer_id) {
            if let Some(cp) = &w.checkpoint {
                own.extend(manager.checkpoint_blob(&cp.key).await?.iter().cloned());
                after_seq = cp.through_seq;
            }
            own.extend(w.objects.iter().cloned());
        }
        let next_seq = own.last().map_or(after_seq, |o| o.seq).max(after_seq) + 1;
        manager.uploader.set_next_seq(next_seq);
        manager
            .last_committed_seq
            .store(next_seq - 1, std::sync::atomic::Ordering::Release);
        *lock(&manager.live_objects) = own;
        *lock(&manager.last_checkpoint_seq) = after_seq;
        for record in manager.meta.list_topics().await? {
            manager.install_topic(&record);
        }
        let targets: Vec<(Arc<Partition>, i32)> = {
            let streams = read(&manager.streams);
            match &ownership {
                Ownership::All => streams
                    .values()
                    .map(|p| {
                        let epoch = p.lock().leader_epoch;
                        (p.clone(), epoch)
                    })
                    .collect(),
                Ownership::Streams(owned) => owned
                    .iter()
                    .filter_map(|(s, e)| streams.get(s).map(|p| (p.clone(), *e)))
                    .collect(),
            }
        };
        manager.load_partitions(&targets, &index).await?;
        let replayed = manager.replay_wal(recovered)?;
        // Records that needed no upload (already committed) can leave the WAL now.
        manager.wal.trim(Lsn(manager.uploader.trim_point()))?;
        tracing::info!(
            topics = manager.topic_names().len(),
            partitions = targets.len(),
            replayed_wal_records = replayed,
            "log manager ready"
        );
        Ok(manager)
    }

    /// A checkpoint blob of the object index, parsed, from the cache or the bucket.
    async fn checkpoint_blob(&self, key: &str) -> anyhow::Result<Arc<Vec<ObjectRecord>>> {
        if let Some(blob) = lock(&self.checkpoint_blobs).get(key) {
            return Ok(blob.clone());
        }
        let bytes = self
            .storage
            .get_bytes(&object_store::path::Path::from(key))
            .await?;
        let parsed: Vec<ObjectRecord> = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("index checkpoint {key} is corrupt: {e}"))?;
        let parsed = Arc::new(parsed);
        lock(&self.checkpoint_blobs).insert(key.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// Rebuilds each partition's state from the committed index (every writer's
    /// objects) and starts serving it at the given ownership epoch. Replaces whatever
    /// state the partition had: it comes from the bucket, nothing is copied.
    pub async fn load_partitions(
        &self,
        targets: &[(Arc<Partition>, i32)],
        index: &[WriterIndex],
    ) -> anyhow::Result<()> {
        if targets.is_empty() {
            return Ok(());
        }
        let wanted: std::collections::HashSet<u64> =
            targets.iter().map(|(p, _)| p.stream_id).collect();
        type Found = (Arc<object_store::path::Path>, i64, RunRecord);
        let mut runs: HashMap<u64, Vec<Found>> = HashMap::new();
        let mut collect = |object: &ObjectRecord| {
            let key = Arc::new(object_store::path::Path::from(object.key.as_str()));
            for run in object.runs.iter().filter(|r| wanted.contains(&r.stream_id)) {
                runs.entry(run.stream_id).or_default().push((
                    key.clone(),
                    object.committed_ms,
                    run.clone(),
                ));
            }
        };
        let mut referenced = std::collections::HashSet::new();
        for w in index {
            if let Some(cp) = &w.checkpoint {
                referenced.insert(cp.key.clone());
                for object in self.checkpoint_blob(&cp.key).await?.iter() {
                    collect(object);
                }
            }
            for object in &w.objects {
                collect(object);
            }
        }
        // Blobs no checkpoint points at any more are never read again.
        lock(&self.checkpoint_blobs).retain(|k, _| referenced.contains(k));
        let budget = self.tail_budget_per_partition(read(&self.streams).len());
        for (p, epoch) in targets {
            let mut found = runs.remove(&p.stream_id).unwrap_or_default();
            // Longest (then newest) first among equal starts: a rewritten run before the
            // runs it replaced.
            found.sort_by_key(|(_, committed_ms, r)| {
                (
                    r.first_offset,
                    std::cmp::Reverse(r.last_offset),
                    std::cmp::Reverse(*committed_ms),
                )
            });
            let mut st = p.lock();
            let mut fresh = PartitionState::fresh(
                *epoch,
                st.log_start_offset,
                st.durability,
                st.max_message_bytes,
            );
            fresh.epochs.clear();
            for (key, committed_ms, run) in &found {
                if run.last_offset < fresh.committed_end {
                    // Within a run already loaded (sorted by first offset, longest first):
                    // the original of a rewritten run, or a partial overlap (never written).
                    if !fresh.runs.values().any(|r| {
                        r.first_offset <= run.first_offset && run.last_offset <= r.last_offset
                    }) {
                        tracing::error!(topic = %p.topic, partition = p.index, first = run.first_offset,
                            "overlapping committed runs in the index; keeping the first");
                    }
                    continue;
                }
                if fresh
                    .epochs
                    .last()
                    .is_none_or(|(e, _)| *e != run.leader_epoch)
                {
                    fresh.epochs.push((run.leader_epoch, run.first_offset));
                }
                fresh.add_run(RunLocation {
                    key: key.clone(),
                    position: run.position,
                    length: run.length,
                    first_offset: run.first_offset,
                    last_offset: run.last_offset,
                    max_timestamp: run.max_timestamp,
                    leader_epoch: run.leader_epoch,
                    committed_ms: *committed_ms,
                    cleaned: run.cleaned,
                    tombstones_expire_ms: run.tombstones_expire_ms,
                });
                learn_producers(&mut fresh, &run.producers);
            }
            if fresh.epochs.last().is_none_or(|(e, _)| *e != *epoch) {
                let start = fresh.next_offset;
                fresh.epochs.push((*epoch, start));
            }
            fresh.forget_below_log_start();
            fresh.evict_tail(budget);
            *st = fresh;
        }
        self.bump_data_version();
        Ok(())
    }

    /// Stops serving partitions (another broker owns them now): their state is dropped.
    pub fn disown(&self, parts: &[Arc<Partition>]) {
        for p in parts {
            let mut st = p.lock();
            let mut empty =
                PartitionState::fresh(-1, st.log_start_offset, st.durability, st.max_message_bytes);
            empty.owned = false;
            empty.deleted = st.deleted;
            *st = empty;
        }
        // Long-polling fetches wake up and answer NOT_LEADER_OR_FOLLOWER.
        self.bump_data_version();
    }

    /// First half of a handover: refuses new writes to `parts`, seals the open object
    /// and waits (bounded) until everything written to them is committed. False on
    /// timeout (the writes stay refused; call [`LogManager::resume_writes`] to cancel).
    pub async fn quiesce(&self, parts: &[Arc<Partition>], timeout: Duration) -> bool {
        for p in parts {
            p.lock().releasing = true;
        }
        let through = self.uploader.highest_pushed();
        self.uploader.request_seal();
        // Rewrites in flight either commit before the handover or are dropped (their
        // partitions are releasing now): none lands under the new owner.
        let settled = async {
            let committed = self.uploader.wait_committed(through).await;
            self.uploader.rewrites_idle().await;
            committed
        };
        matches!(tokio::time::timeout(timeout, settled).await, Ok(true))
    }

    /// Cancels a handover: the partitions take writes again.
    pub fn resume_writes(&self, parts: &[Arc<Partition>]) {
        for p in parts {
            p.lock().releasing = false;
        }
    }

    /// Every partition this broker knows, by stream id.
    pub fn partitions_by_stream(&self) -> HashMap<u64, Arc<Partition>> {
        read(&self.streams).clone()
    }

    /// Whether acknowledgements may be sent: always on a single node; in a cluster only
    /// while this incarnation's lease is certainly alive.
    pub fn lease_ok(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.session.is_valid())
    }

    /// Updates the topics from metadata (another broker created, changed or deleted one).
    pub fn sync_topics(&self, records: &[TopicRecord]) {
        let names: std::collections::HashSet<&str> =
            records.iter().map(|r| r.name.as_str()).collect();
        for record in records {
            let unchanged = self.get_topic(&record.name).is_some_and(|t| {
                t.id == record.topic_id
                    && t.partitions.len() == record.partitions.len()
                    && t.configs == record.configs
            });
            if !unchanged {
                if self
                    .get_topic(&record.name)
                    .is_some_and(|t| t.id != record.topic_id)
                {
                    self.forget_topic(&record.name);
                }
                self.install_topic(record);
            }
            // Log starts only move forward (retention, DeleteRecords by the owner).
            if let Some(topic) = self.get_topic(&record.name) {
                for rp in &record.partitions {
                    if let Some(p) = topic.partitions.get(rp.index as usize) {
                        p.lock().truncate_before(rp.log_start_offset);
                    }
                }
            }
        }
        let gone: Vec<String> = read(&self.topics)
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.forget_topic(&name);
        }
    }

    fn forget_topic(&self, name: &str) {
        let removed = write(&self.topics).remove(name);
        if let Some(t) = removed {
            let mut streams = write(&self.streams);
            for p in &t.partitions {
                streams.remove(&p.stream_id);
                p.lock().deleted = true;
            }
        }
        self.bump_data_version();
    }

    fn install_topic(&self, record: &TopicRecord) -> Arc<Topic> {
        let name: Arc<str> = Arc::from(record.name.as_str());
        let durability = topic_config::durability(&record.configs, self.settings.durability);
        let max_bytes =
            topic_config::max_message_bytes(&record.configs, self.settings.message_max_bytes);
        let existing = self.get_topic(&record.name);
        let partitions: Vec<Arc<Partition>> = record
            .partitions
            .iter()
            .map(|p| {
                if let Some(existing) = existing
                    .as_ref()
                    .and_then(|t| t.partitions.get(p.index as usize))
                {
                    return existing.clone();
                }
                let partition = Partition::new(
                    name.clone(),
                    record.topic_id,
                    p.index,
                    p.stream_id,
                    p.leader_epoch,
                    p.log_start_offset,
                    durability,
                    max_bytes,
                )
                .with_counters(self.metrics.topic_counters(&record.name));
                // In a cluster a partition is served only once its owner record says so.
                partition.lock().owned = self.cluster.is_none();
                Arc::new(partition)
            })
            .collect();
        for p in &partitions {
            let mut st = p.lock();
            st.durability = durability;
            st.max_message_bytes = max_bytes;
        }
        let topic = Arc::new(Topic {
            name,
            id: record.topic_id,
            partitions: partitions.clone(),
            configs: record.configs.clone(),
        });
        {
            let mut streams = write(&self.streams);
            for p in &partitions {
                streams.insert(p.stream_id, p.clone());
            }
        }
        write(&self.topics).insert(record.name.clone(), topic.clone());
        topic
    }

    /// Applies a just-committed object's runs to the partitions this broker serves
    /// (idempotence state is already ahead of the object and is left alone).
    fn apply_object(&self, object: &ObjectRecord) {
        let key = Arc::new(object_store::path::Path::from(object.key.as_str()));
        let streams = read(&self.streams);
        let mut moved = false;
        for run in &object.runs {
            let Some(p) = streams.get(&run.stream_id) else {
                continue;
            };
            let mut st = p.lock();
            if !st.owned {
                continue;
            }
            st.add_run(RunLocation {
                key: key.clone(),
                position: run.position,
                length: run.length,
                first_offset: run.first_offset,
                last_offset: run.last_offset,
                max_timestamp: run.max_timestamp,
                leader_epoch: run.leader_epoch,
                committed_ms: object.committed_ms,
                cleaned: run.cleaned,
                tombstones_expire_ms: run.tombstones_expire_ms,
            });
            // The committed batches' producer sequences, as a load from the index would
            // give them: a no-op for batches appended here, but after a fenced restart
            // that reloaded the partition while its replayed WAL records were still on
            // their way to the bucket, the only way a client's retry of them is still
            // recognised as a duplicate.
            learn_producers(&mut st, &run.producers);
            // DeleteRecords may have moved the log start past data still in the WAL.
            st.forget_below_log_start();
            if st.advance_high_watermark(run.last_offset + 1) {
                moved = true;
            }
            let budget = self.tail_budget_per_partition(streams.len());
            st.evict_tail(budget);
        }
        if moved {
            self.bump_data_version();
        }
    }

    fn tail_budget_per_partition(&self, partitions: usize) -> u64 {
        (self.settings.tail_cache_bytes / partitions.max(1) as u64).max(1 << 20)
    }

    /// Re-applies WAL records that are not yet committed; returns how many.
    fn replay_wal(&self, records: Vec<WalRecord>) -> anyhow::Result<usize> {
        let mut replayed = 0;
        let streams = read(&self.streams);
        for record in records {
            if record.kind != WAL_KIND_BATCH {
                anyhow::bail!(
                    "WAL record {} has unknown kind {}",
                    record.lsn.0,
                    record.kind
                );
            }
            let (stream_id, leader_epoch, bytes) = decode_wal_batch(&record.payload)
                .ok_or_else(|| anyhow::anyhow!("WAL record {} is malformed", record.lsn.0))?;
            let header = BatchHeader::parse(&bytes).map_err(|e| {
                anyhow::anyhow!("WAL record {} holds a bad batch: {e}", record.lsn.0)
            })?;
            let Some(p) = streams.get(&stream_id) else {
                // Topic deleted since: nothing to recover, but the LSN must still be
                // accounted for so the WAL can be trimmed past it.
                self.uploader.push_skipped(record.lsn.0);
                continue;
            };
            let mut st = p.lock();
            if !st.owned || (self.cluster.is_some() && st.leader_epoch != leader_epoch) {
                // Another broker owns it now, or owned it since (a failover with
                // unclean.failover, or durability=object where this was never
                // acknowledged): this tail is not part of the log.
                self.uploader.push_skipped(record.lsn.0);
                continue;
            }
            if header.last_offset() < st.next_offset {
                self.uploader.push_skipped(record.lsn.0);
                continue; // already committed in an object
            }
            if header.base_offset != st.next_offset {
                anyhow::bail!(
                    "WAL record {} for {}-{} starts at offset {} but the log ends at {}",
                    record.lsn.0,
                    p.topic,
                    p.index,
                    header.base_offset,
                    st.next_offset
                );
            }
            if header.is_idempotent() {
                st.record_producer_batch(
                    header.producer_id,
                    header.producer_epoch,
                    ProducerBatch {
                        first_sequence: header.base_sequence,
                        last_sequence: header.last_sequence(),
                        last_offset: header.last_offset(),
                        timestamp: header.max_timestamp,
                    },
                );
            }
            st.push_tail(&header, bytes.clone());
            // It was durable in the WAL, so it is acknowledged data (durability=local);
            // for durability=object it becomes visible once committed.
            if st.durability == Durability::Local {
                st.advance_high_watermark(header.last_offset() + 1);
            }
            self.uploader
                .push(record.lsn.0, stream_id, leader_epoch, &header, bytes);
            replayed += 1;
        }
        Ok(replayed)
    }

    pub fn bump_data_version(&self) {
        self.data_version.send_modify(|v| *v += 1);
    }

    pub fn subscribe_data(&self) -> watch::Receiver<u64> {
        self.data_version.subscribe()
    }

    pub fn get_topic(&self, name: &str) -> Option<Arc<Topic>> {
        read(&self.topics).get(name).cloned()
    }

    pub fn get_topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        read(&self.topics).values().find(|t| t.id == id).cloned()
    }

    pub fn topic_names(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.topics).keys().cloned().collect();
        names.sort();
        names
    }

    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>> {
        self.get_topic(topic)
            .and_then(|t| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| t.partitions.get(i).cloned())
            })
            .ok_or(BrokerError::UnknownTopicOrPartition)
    }

    /// Creates a topic (validating its configs) and starts serving it.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>> {
        if !(1..=100_000).contains(&partitions) {
            return Err(BrokerError::InvalidPartitions(format!(
                "{partitions} partitions requested; 1 to 100000 allowed"
            )));
        }
        topic_config::validate(&configs)?;
        cirrus_controller::validate_topic_name(name).map_err(BrokerError::from)?;
        if validate_only {
            if self.get_topic(name).is_some() {
                return Err(BrokerError::TopicAlreadyExists);
            }
            return Ok(Arc::new(Topic {
                name: Arc::from(name),
                id: uuid::Uuid::nil(),
                partitions: vec![],
                configs,
            }));
        }
        let record = self.meta.create_topic(name, partitions, configs).await?;
        Ok(self.install_topic(&record))
    }

    /// The topic, auto-created when allowed.
    pub async fn get_or_create_topic(
        &self,
        name: &str,
        allow_auto_create: bool,
    ) -> Result<Arc<Topic>> {
        if let Some(t) = self.get_topic(name) {
            return Ok(t);
        }
        if !(allow_auto_create && self.settings.auto_create_topics) {
            return Err(BrokerError::UnknownTopicOrPartition);
        }
        match self
            .create_topic(
                name,
                self.settings.default_partitions,
                BTreeMap::new(),
                false,
            )
            .await
        {
            Ok(t) => Ok(t),
            // Another request created it at the same time.
            Err(BrokerError::TopicAlreadyExists) => self.reload_topic(name).await,
            Err(e) => Err(e),
        }
    }

    async fn reload_topic(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(t) = self.get_topic(name) {
            return Ok(t);
        }
        let record = self
            .meta
            .get_topic(name)
            .await?
            .ok_or(BrokerError::UnknownTopicOrPartition)?;
        Ok(self.install_topic(&record))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<uuid::Uuid> {
        let record = self.meta.delete_topic(name).await?;
        self.forget_topic(name);
        Ok(record.topic_id)
    }

    pub async fn add_partitions(&self, name: &str, total: i32, validate_only: bool) -> Result<()> {
        let topic = self
            .get_topic(name)
            .ok_or(BrokerError::UnknownTopicOrPartition)?;
        let current = topic.partitions.len() as i32;
        if total <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic {name} has {current} partitions; the new count must be larger, not {total}"
            )));
        }
        if total > 100_000 {
            return Err(BrokerError::InvalidPartitions(format!(
                "{total} partitions requested; at most 100000"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let record = self.meta.add_partitions(name, total).await?;
        self.install_topic(&record);
        Ok(())
    }

    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<()> {
        topic_config::validate(&configs)?;
        let record = self.meta.set_topic_configs(name, configs).await?;
        self.install_topic(&record);
        Ok(())
    }

    /// First half of an append, run in request order: waits for WAL space, then under
    /// the partition lock checks idempotence, assigns offsets, submits to the WAL and
    /// hands the batches to the uploader. Nothing is visible to consumers yet.
    pub async fn append_start(
        &self,
        partition: &Partition,
        batches: Vec<ProducedBatch>,
    ) -> Result<AppendTicket> {
        let bytes: u64 = batches.iter().map(|b| b.bytes.len() as u64).sum();
        self.wal.wait_for_space(bytes).await?;
        let mut ticket = AppendTicket {
            pending: Vec::with_capacity(batches.len()),
            ..AppendTicket::default()
        };
        if !self.lease_ok() {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        let mut st = partition.lock();
        if st.deleted {
            return Err(BrokerError::UnknownTopicOrPartition);
        }
        if !st.owned || st.releasing {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        for b in &batches {
            if b.bytes.len() > st.max_message_bytes {
                return Err(BrokerError::Batch(crate::batch::BatchError::TooLarge {
                    size: b.bytes.len(),
                    limit: st.max_message_bytes,
                }));
            }
        }
        // Idempotence: check every batch before changing anything.
        let mut checks = Vec::with_capacity(batches.len());
        for b in &batches {
            checks.push(st.check_sequence(&b.header)?);
        }
        let epoch = st.leader_epoch;
        for (b, check) in batches.iter().zip(checks) {
            if let SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            } = check
            {
                ticket.first_base.get_or_insert(base_offset);
                ticket.end = ticket.end.max(last_offset + 1);
                ticket.has_duplicates = true;
                continue;
            }
            let base = st.next_offset;
            let assigned = batch::assign(&b.bytes, base, epoch);
            let header = BatchHeader {
                base_offset: base,
                ..b.header
            };
            let submitted = self.wal.submit(
                WAL_KIND_BATCH,
                encode_wal_batch(partition.stream_id, epoch, &assigned),
            )?;
            if header.is_idempotent() {
                st.record_producer_batch(
                    header.producer_id,
                    header.producer_epoch,
                    ProducerBatch {
                        first_sequence: header.base_sequence,
                        last_sequence: header.last_sequence(),
                        last_offset: header.last_offset(),
                        timestamp: header.max_timestamp,
                    },
                );
            }
            st.push_tail(&header, assigned.clone());
            self.uploader.push(
                submitted.lsn().0,
                partition.stream_id,
                epoch,
                &header,
                assigned,
            );
            ticket.first_base.get_or_insert(base);
            ticket.pending.push((submitted, header.last_offset() + 1));
        }
        ticket.durability = st.durability;
        ticket.log_start_offset = st.log_start_offset;
        drop(st);
        let records: u64 = batches
            .iter()
            .map(|b| b.header.records_count.max(0) as u64)
            .sum();
        partition.counters.produced_bytes.inc_by(bytes);
        partition.counters.total_in.inc_by(bytes);
        partition
            .bytes_in
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        partition.counters.produced_records.inc_by(records);
        Ok(ticket)
    }

    /// Second half of an append: waits until the batches are acknowledged per the
    /// partition's durability (WAL fsync, or object commit) and visible to consumers.
    pub async fn append_finish(
        &self,
        partition: &Partition,
        ticket: AppendTicket,
    ) -> Result<AppendResult> {
        let mut end = ticket.end;
        let mut last_lsn = Lsn(0);
        for (submitted, batch_end) in ticket.pending {
            last_lsn = submitted.durable().await?;
            end = end.max(batch_end);
            if ticket.durability == Durability::Local && !self.lease_ok() {
                // Durable here, but this broker may have lost the partition meanwhile:
                // do not acknowledge (the client retries against the current owner).
                return Err(BrokerError::NotLeaderOrFollower);
            }
            if ticket.durability == Durability::Local
                && partition.lock().advance_high_watermark(batch_end)
            {
                self.bump_data_version();
            }
        }
        if ticket.durability == Durability::Object
            && last_lsn.0 > 0
            && !self.uploader.wait_committed(last_lsn.0).await
        {
            return Err(BrokerError::ShuttingDown);
        }
        if ticket.has_duplicates || ticket.durability == Durability::Object {
            // New data of durability=object is committed by now: if the partition was
            // handed over meanwhile, the new owner serves it, so it is acknowledged.
            let committed = ticket.durability == Durability::Object && !ticket.has_duplicates;
            self.wait_visible(partition, end, committed).await?;
        }
        Ok(AppendResult {
            base_offset: ticket.first_base.unwrap_or(-1),
            log_start_offset: ticket.log_start_offset,
        })
    }

    /// Waits until the partition's high watermark reaches `end`. If this broker stops
    /// serving the partition meanwhile, that is success when the data is known to be
    /// `committed` (the new owner serves it) and NOT_LEADER_OR_FOLLOWER otherwise.
    async fn wait_visible(&self, partition: &Partition, end: i64, committed: bool) -> Result<()> {
        let mut rx = self.subscribe_data();
        loop {
            {
                let st = partition.lock();
                if st.deleted {
                    return Err(BrokerError::UnknownTopicOrPartition);
                }
                if !st.owned {
                    return if committed {
                        Ok(())
                    } else {
                        Err(BrokerError::NotLeaderOrFollower)
                    };
                }
                if st.high_watermark >= end {
                    return Ok(());
                }
            }
            if rx.changed().await.is_err() {
                return Err(BrokerError::ShuttingDown);
            }
        }
    }

    /// Reads batches of a partition at `offset`, up to about `max_bytes` (at least one
    /// whole batch). Returns (records, high watermark, log start offset).
    pub async fn read(
        &self,
        partition: &Partition,
        offset: i64,
        max_bytes: usize,
        leader_epoch: i32,
    ) -> Result<(Bytes, i64, i64)> {
        if !self.lease_ok() {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        let (plan, hwm, start) = {
            let st = partition.lock();
            st.check_epoch(leader_epoch)?;
            (
                st.plan_read(offset, max_bytes)?,
                st.high_watermark,
                st.log_start_offset,
            )
        };
        let mut plan = plan;
        let mut at = offset;
        let mut hops = 0;
        let records = loop {
            match plan {
                ReadPlan::Empty => break Bytes::new(),
                ReadPlan::Tail(batches) => break concat(batches),
                ReadPlan::Object(run) => {
                    let data = self.read_cache.get_or_load(&self.storage, &run).await?;
                    let found = slice_batches(&data, at, hwm, max_bytes);
                    // A reader behind the tail is most likely reading on: warm its next run.
                    let next = partition
                        .lock()
                        .runs
                        .range(run.last_offset + 1..)
                        .next()
                        .map(|(_, r)| r.clone());
                    if let Some(next) = next {
                        self.read_cache.read_ahead(&self.storage, next);
                    }
                    // A cleaned run (compacted topic) may end in a gap: nothing at or
                    // after `at` in it. Go on with the next run rather than answer
                    // nothing, which would leave the consumer stuck at this offset.
                    if !found.is_empty() || run.last_offset + 1 >= hwm || hops == MAX_GAP_HOPS {
                        break found;
                    }
                    hops += 1;
                    at = run.last_offset + 1;
                    match partition.lock().plan_read(at, max_bytes) {
                        Ok(next) => plan = next,
                        Err(_) => break Bytes::new(),
                    }
                }
            }
        };
        Ok((records, hwm, start))
    }

    /// ListOffsets by timestamp: the first offset whose record timestamp is >= `ts`,
    /// with that record's timestamp; None if there is none.
    pub async fn offset_for_timestamp(
        &self,
        partition: &Partition,
        ts: i64,
    ) -> Result<Option<(i64, i64)>> {
        let (run, tail, hwm, start) = {
            let st = partition.lock();
            (
                st.first_run_at_or_after_time(ts),
                st.tail_batches_from(st.log_start_offset),
                st.high_watermark,
                st.log_start_offset,
            )
        };
        if let Some(run) = run {
            let data = self.read_cache.get_or_load(&self.storage, &run).await?;
            if let Some(found) =
                find_timestamp(batch::iter_batches(&data).map(|(_, b)| b), ts, start, hwm)
            {
                return Ok(Some(found));
            }
        }
        Ok(find_timestamp(tail.into_iter(), ts, start, hwm))
    }

    /// The timestamp of the record at `offset` (or of the first record after it, if
    /// `offset` falls in a gap); None at or past the high watermark. Consumer lag in
    /// time is "now minus this" for a group's committed offset. Reads at most one run,
    /// through the read cache.
    pub async fn timestamp_at_offset(
        &self,
        partition: &Partition,
        offset: i64,
    ) -> Result<Option<i64>> {
        let (plan, offset, hwm) = {
            let st = partition.lock();
            let offset = offset.max(st.log_start_offset);
            if offset >= st.high_watermark {
                return Ok(None);
            }
            (st.plan_read(offset, 1)?, offset, st.high_watermark)
        };
        let (mut plan, mut at) = (plan, offset);
        for _ in 0..=MAX_GAP_HOPS {
            match plan {
                ReadPlan::Empty => return Ok(None),
                ReadPlan::Tail(batches) => {
                    return Ok(first_record_at(batches.into_iter(), at, hwm).map(|(_, ts)| ts));
                }
                ReadPlan::Object(run) => {
                    let data = self.read_cache.get_or_load(&self.storage, &run).await?;
                    let batches = batch::iter_batches(&data).map(|(_, b)| b);
                    if let Some((_, ts)) = first_record_at(batches, at, hwm) {
                        return Ok(Some(ts));
                    }
                    // Past the end of a cleaned run: the next run holds the next record.
                    at = run.last_offset + 1;
                    if at >= hwm {
                        return Ok(None);
                    }
                    plan = partition.lock().plan_read(at, 1)?;
                }
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: the offset and timestamp of the first record carrying
    /// the partition's largest timestamp.
    pub async fn max_timestamp_offset(&self, partition: &Partition) -> Result<Option<(i64, i64)>> {
        let (best_run, tail, hwm, start) = {
            let st = partition.lock();
            let best_run = st
                .runs
                .values()
                .filter(|r| r.last_offset >= st.log_start_offset)
                .fold(None::<RunLocation>, |best, r| match best {
                    Some(b) if b.max_timestamp >= r.max_timestamp => Some(b),
                    _ => Some(r.clone()),
                });
            (
                best_run,
                st.tail_batches_from(st.committed_end.max(st.log_start_offset)),
                st.high_watermark,
                st.log_start_offset,
            )
        };
        let tail_max = tail
            .iter()
            .filter_map(|b| BatchHeader::parse(b).ok())
            .filter(|h| h.base_offset < hwm)
            .map(|h| h.max_timestamp)
            .max();
        match (best_run, tail_max) {
            (Some(run), t) if t.is_none_or(|t| run.max_timestamp >= t) => {
                let data = self.read_cache.get_or_load(&self.storage, &run).await?;
                Ok(find_timestamp(
                    batch::iter_batches(&data).map(|(_, b)| b),
                    run.max_timestamp,
                    start,
                    hwm,
                ))
            }
            (_, Some(t)) => Ok(find_timestamp(tail.into_iter(), t, start, hwm)),
            _ => Ok(None),
        }
    }

    /// Allocates a producer id for an idempotent producer.
    pub async fn next_producer_id(&self) -> Result<i64> {
        let mut ids = self.producer_ids.lock().await;
        if ids.is_empty() {
            *ids = self.meta.allocate_producer_ids(1000).await?;
        }
        let id = ids.start;
        ids.start += 1;
        Ok(id)
    }

    /// Spawns the sealer and the upload/commit pipeline; returns their handles.
    pub fn start_pipeline(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let (sealed_tx, sealed_rx) = mpsc::channel::<SealedObject>(1);
        let (upload_tx, upload_rx) = mpsc::channel(MAX_UPLOADS_IN_FLIGHT);
        let sealer = tokio::spawn(self.uploader.clone().run_sealer(sealed_tx, shutdown));
        let me = self.clone();
        let uploads = tokio::spawn(async move { me.run_uploads(sealed_rx, upload_tx).await });
        let me = self.clone();
        let commits = tokio::spawn(async move { me.run_commits(upload_rx).await });
        vec![sealer, uploads, commits]
    }

    /// Starts each sealed object's upload at once (bounded by the channel to the committer).
    async fn run_uploads(
        self: Arc<Self>,
        mut sealed_rx: mpsc::Receiver<SealedObject>,
        upload_tx: mpsc::Sender<(SealedObject, tokio::task::JoinHandle<()>)>,
    ) {
        while let Some(sealed) = sealed_rx.recv().await {
            let storage = self.storage.clone();
            let key = sealed.key.clone();
            let object = sealed.object.clone();
            let metrics = self.metrics.clone();
            let handle = tokio::spawn(async move {
                let started = std::time::Instant::now();
                retry_forever("upload object", || {
                    let (storage, key, object) = (storage.clone(), key.clone(), object.clone());
                    async move { storage.put_object(&key, &object).await }
                })
                .await;
                metrics
                    .upload_seconds
                    .observe(started.elapsed().as_secs_f64());
            });
            if upload_tx.send((sealed, handle)).await.is_err() {
                return;
            }
        }
    }

    /// Commits uploaded objects in seal order, applies them and trims the WAL.
    async fn run_commits(
        self: Arc<Self>,
        mut upload_rx: mpsc::Receiver<(SealedObject, tokio::task::JoinHandle<()>)>,
    ) {
        while let Some((mut sealed, upload)) = upload_rx.recv().await {
            if upload.await.is_err() {
                tracing::error!(key = %sealed.key, "upload task panicked; stopping the commit pipeline");
                return;
            }
            if sealed.rewrite.is_some() && !self.may_commit_rewrite(&sealed) {
                // The partition is being handed over (or is gone): the new owner must not
                // see runs appear under it. The copy is referenced by nothing.
                tracing::info!(key = %sealed.key, "dropping a rewrite: its partition changed hands");
                let _ = self.storage.delete(&sealed.key).await;
                self.uploader.finish_rewrite(&mut sealed, false);
                continue;
            }
            let record = ObjectRecord {
                seq: sealed.seq,
                key: sealed.key.to_string(),
                size: sealed.object.size,
                writer: self.uploader.writer().to_string(),
                committed_ms: now_ms(),
                runs: sealed.run_records(),
            };
            let started = std::time::Instant::now();
            let fence = self.cluster.as_ref().map(|c| c.fence.clone());
            let writer_id = self.writer_id;
            // The orphan sweep deletes unreferenced objects older than orphan_grace: an
            // upload still waiting for its commit (metadata store away) is uploaded
            // again long before that.
            let refresh_after = self.settings.orphan_grace / 3;
            let mut uploaded = std::time::Instant::now();
            if sealed.rewrite.is_some() {
                crate::lifecycle::fault_point(&format!("{}.before_commit", sealed.rewrite_kind));
            } else {
                crate::lifecycle::fault_point("upload.before_commit");
            }
            let committed = retry_forever("commit object", || {
                let (meta, record, fence) = (self.meta.clone(), record.clone(), fence.clone());
                let refresh = uploaded.elapsed() >= refresh_after;
                if refresh {
                    uploaded = std::time::Instant::now();
                }
                let (storage, key, object) = (
                    self.storage.clone(),
                    sealed.key.clone(),
                    sealed.object.clone(),
                );
                async move {
                    if refresh {
                        tracing::warn!(%key, "object still not committed; uploading it again so it never looks orphaned");
                        storage
                            .put_object(&key, &object)
                            .await
                            .map_err(|e| format!("re-uploading {key}: {e}"))?;
                    }
                    match meta.commit_object(writer_id, record, fence).await {
                        Err(MetaError::Fenced { key }) => Ok(Err(key)),
                        other => other.map(Ok).map_err(|e| e.to_string()),
                    }
                }
            })
            .await;
            if let Err(key) = committed {
                // Our lease expired (paused, partitioned): another broker may own these
                // partitions now. Nothing more may be committed by this incarnation.
                tracing::error!(%key, object = %sealed.key, "object commit fenced: this broker lost its registration; restarting the engine");
                self.metrics.fenced.inc();
                if let Some(c) = &self.cluster {
                    let _ = c.fenced.send(true);
                }
                return;
            }
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics.metadata_writes.inc();
            self.metrics.objects_committed.inc();
            self.metrics.object_bytes_committed.inc_by(record.size);
            self.metrics.object_size.observe(record.size as f64);
            self.apply_object(&record);
            lock(&self.live_objects).push(record);
            self.last_committed_seq
                .fetch_max(sealed.seq, std::sync::atomic::Ordering::AcqRel);
            let through = self.uploader.mark_committed(&sealed);
            if sealed.rewrite.is_some() {
                self.uploader.finish_rewrite(&mut sealed, true);
                crate::lifecycle::fault_point(&format!("{}.after_commit", sealed.rewrite_kind));
            }
            // Trimming unlinks segment files, which can block: keep it off the runtime.
            let wal = self.wal.clone();
            let trimmed = tokio::task::spawn_blocking(move || wal.trim(Lsn(through))).await;
            if let Ok(Err(e)) = trimmed {
                tracing::warn!(error = %e, "WAL trim failed; will retry at the next commit");
            }
            tracing::debug!(key = %sealed.key, size = sealed.object.size, runs = sealed.object.index.len(), "object committed");
            if sealed.seq >= *lock(&self.last_checkpoint_seq) + CHECKPOINT_EVERY_OBJECTS
                && let Err(e) = self.write_checkpoint(sealed.seq).await
            {
                tracing::warn!(error = %e, "index checkpoint failed; will retry later");
            }
        }
    }

    /// Whether a rewrite may still be committed: every partition in it is served here
    /// and not being handed over.
    fn may_commit_rewrite(&self, sealed: &crate::uploader::SealedObject) -> bool {
        let streams = read(&self.streams);
        sealed.object.index.iter().all(|run| {
            streams.get(&run.stream_id).is_some_and(|p| {
                let st = p.lock();
                st.owned && !st.releasing && !st.deleted
            })
        })
    }

    /// Writes every live object record into one blob in the bucket and replaces the
    /// object records in the metadata store by a pointer to it.
    async fn write_checkpoint(&self, through_seq: u64) -> anyhow::Result<()> {
        let _one_at_a_time = self.checkpoint_lock.lock().await;
        if through_seq < *lock(&self.last_checkpoint_seq) {
            return Ok(());
        }
        let (objects, snapshot) = {
            let live = lock(&self.live_objects);
            let snapshot = self
                .checkpoint_snapshots
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                + 1;
            let objects: Vec<ObjectRecord> = live
                .iter()
                .filter(|o| o.seq <= through_seq)
                .cloned()
                .collect();
            (objects, snapshot)
        };
        let blob = serde_json::to_vec(&objects)?;
        // Unique per write (the same through_seq may be checkpointed again after
        // objects died): the previous blob is deleted once the new one is committed.
        let key = object_store::path::Path::from(format!(
            "index/{:010}/checkpoint-{through_seq:020}-{:013}.json",
            self.writer_id,
            now_ms()
        ));
        self.storage.put_bytes(&key, Bytes::from(blob)).await?;
        let previous = self.meta.get_checkpoint(self.writer_id).await?;
        self.meta
            .commit_checkpoint(
                self.writer_id,
                cirrus_controller::CheckpointRecord {
                    through_seq,
                    key: key.to_string(),
                    written_ms: now_ms(),
                },
                previous.as_ref().map(|(_, version)| *version),
            )
            .await?;
        *lock(&self.last_checkpoint_seq) = through_seq;
        self.checkpoint_covered
            .fetch_max(snapshot, std::sync::atomic::Ordering::AcqRel);
        self.metrics.metadata_writes.inc();
        if let Some((prev, _)) = previous.filter(|(prev, _)| prev.key != key.as_ref()) {
            // Readers load the checkpoint named in metadata; the old blob is no longer referenced.
            let _ = self
                .storage
                .delete(&object_store::path::Path::from(prev.key.as_str()))
                .await;
        }
        tracing::info!(
            through_seq,
            objects = objects.len(),
            "index checkpoint written"
        );
        Ok(())
    }

    /// Owner side of retention and DeleteRecords: raises a served partition's log start
    /// to `offset` (clamped to the high watermark), first in the topic record, then in
    /// memory (forgetting runs wholly below it). Returns the log start now. Brokers that
    /// do not serve the partition learn it from the topic record (`sync_topics`).
    pub async fn advance_log_start(&self, partition: &Partition, offset: i64) -> Result<i64> {
        let target = {
            let st = partition.lock();
            if !st.owned || st.releasing || st.deleted {
                return Err(BrokerError::NotLeaderOrFollower);
            }
            let target = offset.min(st.high_watermark);
            if target <= st.log_start_offset {
                return Ok(st.log_start_offset);
            }
            target
        };
        if !self.lease_ok() {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        tokio::time::timeout(
            LIFECYCLE_META_TIMEOUT,
            self.meta
                .set_log_start_offset(&partition.topic, partition.index, target),
        )
        .await
        .map_err(|_| BrokerError::Timeout)??;
        let mut st = partition.lock();
        st.truncate_before(target);
        tracing::info!(topic = %partition.topic, partition = partition.index, log_start = st.log_start_offset, "log start moved");
        Ok(st.log_start_offset)
    }

    /// Moves this writer's objects whose every run is deleted (their topic is gone, the
    /// run ends below its partition's log start, or a rewrite of this writer covers it)
    /// from the live set, which the next checkpoint writes, to the dead list. Returns how
    /// many it moved.
    pub fn collect_dead_objects(&self) -> u64 {
        let streams = read(&self.streams);
        let now = std::time::Instant::now();
        // Never an object that a served partition still reads from (belt and braces: a
        // rewrite replaces the runs it covers before its originals can die here).
        let in_use: std::collections::HashSet<String> = streams
            .values()
            .flat_map(|p| {
                let st = p.lock();
                st.live_runs()
                    .map(|r| r.key.to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut live = lock(&self.live_objects);
        let superseded = superseded_runs(&live);
        let dead_run = |seq: u64, r: &RunRecord| {
            superseded.contains(&(seq, r.stream_id))
                || match streams.get(&r.stream_id) {
                    None => true,
                    Some(p) => r.last_offset < p.lock().log_start_offset,
                }
        };
        let snapshot = self
            .checkpoint_snapshots
            .load(std::sync::atomic::Ordering::Acquire);
        let before = live.len();
        let mut died = Vec::new();
        live.retain(|o| {
            let dead = o.runs.iter().all(|r| dead_run(o.seq, r)) && !in_use.contains(&o.key);
            if dead {
                died.push(DeadObject {
                    seq: o.seq,
                    key: o.key.clone(),
                    size: o.size,
                    since: now,
                    snapshot,
                });
            }
            !dead
        });
        let found = (before - live.len()) as u64;
        drop(live);
        lock(&self.dead_objects).extend(died);
        found
    }

    /// Deletes dead objects older than `grace` from the bucket, once a committed
    /// checkpoint no longer lists them (writing one first if needed, which also removes
    /// their object records from the metadata store). Failed deletes are retried at the
    /// next round; an object that is already gone counts as deleted.
    pub async fn delete_dead_objects(&self, grace: Duration) -> anyhow::Result<DeadObjectStats> {
        use std::sync::atomic::Ordering;
        let ripe = |d: &DeadObject| d.since.elapsed() >= grace;
        let covered = self.checkpoint_covered.load(Ordering::Acquire);
        let listed = lock(&self.dead_objects)
            .iter()
            .any(|d| ripe(d) && d.snapshot >= covered);
        if listed {
            // Still in the current checkpoint blob or an object record: write a new one.
            let through = self
                .last_committed_seq
                .load(Ordering::Acquire)
                .max(*lock(&self.last_checkpoint_seq));
            self.write_checkpoint(through).await?;
        }
        let covered = self.checkpoint_covered.load(Ordering::Acquire);
        let doomed: Vec<DeadObject> = lock(&self.dead_objects)
            .iter()
            .filter(|d| ripe(d) && d.snapshot < covered)
            .cloned()
            .collect();
        let mut stats = DeadObjectStats::default();
        if !doomed.is_empty() {
            crate::lifecycle::fault_point("gc.before_delete");
        }
        let mut deleted = std::collections::HashSet::new();
        for d in &doomed {
            match self
                .storage
                .delete(&object_store::path::Path::from(d.key.as_str()))
                .await
            {
                Ok(()) => {
                    deleted.insert(d.seq);
                    stats.deleted += 1;
                    stats.deleted_bytes += d.size;
                    self.metrics.objects_deleted_dead.inc();
                    self.metrics.object_bytes_deleted_dead.inc_by(d.size);
                }
                Err(e) => {
                    tracing::warn!(key = %d.key, error = %e, "cannot delete a dead object; retrying next round")
                }
            }
        }
        let mut dead = lock(&self.dead_objects);
        dead.retain(|d| !deleted.contains(&d.seq));
        stats.pending = dead.len() as u64;
        if stats.deleted > 0 {
            tracing::info!(
                objects = stats.deleted,
                bytes = stats.deleted_bytes,
                "deleted objects whose data is all deleted"
            );
        }
        Ok(stats)
    }

    /// The object keys every writer's index references now (checkpoint blobs and the
    /// object records after them), and the checkpoint blob keys; for the orphan sweep.
    pub async fn referenced_keys(
        &self,
    ) -> anyhow::Result<(
        std::collections::HashSet<String>,
        std::collections::HashSet<String>,
    )> {
        let index = self.meta.cluster_index().await?;
        let mut objects = std::collections::HashSet::new();
        let mut blobs = std::collections::HashSet::new();
        for w in &index {
            if let Some(cp) = &w.checkpoint {
                blobs.insert(cp.key.clone());
                for o in self.checkpoint_blob(&cp.key).await?.iter() {
                    objects.insert(o.key.clone());
                }
            }
            objects.extend(w.objects.iter().map(|o| o.key.clone()));
        }
        // This writer's dead objects still wait for their grace: not orphans yet.
        objects.extend(lock(&self.dead_objects).iter().map(|d| d.key.clone()));
        Ok((objects, blobs))
    }

    /// Bytes of runs in every writer's index, live (at or above their partition's log
    /// start) by stream and deleted (below it, or of a deleted topic); for
    /// `cirrus admin storage`.
    pub async fn storage_usage(&self) -> anyhow::Result<StorageUsage> {
        let index = self.meta.cluster_index().await?;
        let mut objects: Vec<ObjectRecord> = Vec::new();
        for w in &index {
            if let Some(cp) = &w.checkpoint {
                objects.extend(self.checkpoint_blob(&cp.key).await?.iter().cloned());
            }
            objects.extend(w.objects.iter().cloned());
        }
        let streams = read(&self.streams);
        let mut usage = StorageUsage::default();
        for r in objects.iter().flat_map(|o| &o.runs) {
            match streams.get(&r.stream_id) {
                Some(p) if r.last_offset >= p.lock().log_start_offset => {
                    *usage.live_by_stream.entry(r.stream_id).or_default() += r.length;
                }
                _ => usage.deleted_bytes += r.length,
            }
        }
        Ok(usage)
    }

    /// Keys of the live objects of this broker's writer (object compaction only merges
    /// runs whose deletion this writer decides), and updates the index gauges.
    pub fn own_object_keys(&self) -> std::collections::HashSet<String> {
        let keys: std::collections::HashSet<String> = lock(&self.live_objects)
            .iter()
            .map(|o| o.key.clone())
            .collect();
        self.metrics.index_objects.set(keys.len() as i64);
        let runs: usize = read(&self.streams)
            .values()
            .map(|p| {
                let st = p.lock();
                if st.owned { st.runs.len() } else { 0 }
            })
            .sum();
        self.metrics.index_runs.set(runs as i64);
        keys
    }

    /// Every partition this broker knows, by stream id.
    pub fn topic_of_stream(&self, stream_id: u64) -> Option<(String, i32)> {
        read(&self.streams)
            .get(&stream_id)
            .map(|p| (p.topic.to_string(), p.index))
    }

    /// Closes the read cache (flushes its disk tier); on shutdown.
    pub async fn close_read_cache(&self) {
        self.read_cache.close().await;
    }

    /// Waits (bounded) until everything pushed to the uploader is committed.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.uploader.is_drained() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// Retries an operation against the bucket or the metadata store with capped
/// exponential backoff until it succeeds: the data is safe in the WAL meanwhile, and
/// produce slows down through WAL backpressure.
async fn retry_forever<T, E: std::fmt::Display, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
{
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                attempt += 1;
                tracing::warn!(attempt, error = %e, "{what} failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn encode_wal_batch(stream_id: u64, leader_epoch: i32, batch: &Bytes) -> Vec<Bytes> {
    let mut head = BytesMut::with_capacity(WAL_BATCH_HEADER);
    head.put_u8(WAL_BATCH_FORMAT);
    head.put_u64(stream_id);
    head.put_i32(leader_epoch);
    vec![head.freeze(), batch.clone()]
}

fn decode_wal_batch(payload: &Bytes) -> Option<(u64, i32, Bytes)> {
    if payload.len() < WAL_BATCH_HEADER || payload[0] != WAL_BATCH_FORMAT {
        return None;
    }
    let stream_id = u64::from_be_bytes(payload[1..9].try_into().ok()?);
    let epoch = i32::from_be_bytes(payload[9..13].try_into().ok()?);
    Some((stream_id, epoch, payload.slice(WAL_BATCH_HEADER..)))
}

/// Whole batches of a run from the one containing `offset`, below `hwm`, up to about
/// `max_bytes` (at least one batch). Batches are contiguous in the run, so this slices
/// without copying.
fn slice_batches(run: &Bytes, offset: i64, hwm: i64, max_bytes: usize) -> Bytes {
    let mut start: Option<usize> = None;
    let mut end = 0usize;
    let mut pos = 0usize;
    for (h, b) in batch::iter_batches(run) {
        let here = pos;
        pos += b.len();
        if h.last_offset() < offset {
            continue;
        }
        if h.base_offset >= hwm {
            break;
        }
        match start {
            None => start = Some(here),
            Some(s) if pos - s > max_bytes => break,
            Some(_) => {}
        }
        end = pos;
    }
    match start {
        Some(s) => run.slice(s..end),
        None => Bytes::new(),
    }
}

fn concat(batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.into_iter().next().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
            for b in batches {
                out.extend_from_slice(&b);
            }
            out.freeze()
        }
    }
}

/// The first record with timestamp >= ts among `batches` (offsets in [start, hwm)).
fn find_timestamp(
    batches: impl Iterator<Item = Bytes>,
    ts: i64,
    start: i64,
    hwm: i64,
) -> Option<(i64, i64)> {
    for b in batches {
        let Ok(h) = BatchHeader::parse(&b) else {
            continue;
        };
        if h.max_timestamp < ts || h.last_offset() < start || h.base_offset >= hwm {
            continue;
        }
        let mut buf = b.clone();
        let Ok(set) = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf) else {
            // Undecodable (should not happen: batches were validated): answer at batch level.
            return Some((h.base_offset.max(start), h.max_timestamp));
        };
        for r in set.records {
            if r.offset >= start && r.offset < hwm && r.timestamp >= ts {
                return Some((r.offset, r.timestamp));
            }
        }
    }
    None
}

/// The first record at or after `offset` (below `hwm`) in `batches`: (offset, timestamp).
fn first_record_at(
    batches: impl Iterator<Item = Bytes>,
    offset: i64,
    hwm: i64,
) -> Option<(i64, i64)> {
    for b in batches {
        let Ok(h) = BatchHeader::parse(&b) else {
            continue;
        };
        if h.last_offset() < offset || h.base_offset >= hwm {
            continue;
        }
        let mut buf = b.clone();
        let Ok(set) = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf) else {
            return Some((h.base_offset.max(offset), h.base_timestamp));
        };
        if let Some(r) = set
            .records
            .iter()
            .find(|r| r.offset >= offset && r.offset < hwm)
        {
            return Some((r.offset, r.timestamp));
        }
    }
    None
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// Records a committed run's idempotent-producer batches in the partition's state, in
/// offset order (batches it already knows are ignored).
fn learn_producers(st: &mut PartitionState, producers: &[cirrus_controller::ProducerRecord]) {
    let mut ordered: Vec<&cirrus_controller::ProducerRecord> = producers.iter().collect();
    ordered.sort_by_key(|pr| pr.last_offset);
    for pr in ordered {
        st.record_producer_batch(
            pr.producer_id,
            pr.producer_epoch,
            ProducerBatch {
                first_sequence: pr.first_sequence,
                last_sequence: pr.last_sequence,
                last_offset: pr.last_offset,
                timestamp: pr.last_timestamp,
            },
        );
    }
}

/// The runs (object seq, stream) of `objects` that another run of the same stream
/// covers: a larger one, or an equal one in a later object. What object compaction
/// rewrote; their copies in the rewrite serve every read.
fn superseded_runs(objects: &[ObjectRecord]) -> std::collections::HashSet<(u64, u64)> {
    let mut by_stream: HashMap<u64, Vec<(i64, i64, u64)>> = HashMap::new();
    for o in objects {
        for r in &o.runs {
            by_stream
                .entry(r.stream_id)
                .or_default()
                .push((r.first_offset, r.last_offset, o.seq));
        }
    }
    let mut out = std::collections::HashSet::new();
    for (stream, mut runs) in by_stream {
        // By first offset, longest first, newest first: a run is covered iff the run
        // reaching furthest among those sorted before it reaches its end.
        runs.sort_by_key(|&(first, last, seq)| {
            (first, std::cmp::Reverse(last), std::cmp::Reverse(seq))
        });
        let mut furthest: Option<i64> = None;
        for (_, last, seq) in runs {
            if furthest.is_some_and(|end| last <= end) {
                out.insert((seq, stream));
            }
            furthest = Some(furthest.map_or(last, |end| end.max(last)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::make_batch;

    #[test]
    fn rewritten_runs_supersede_the_runs_they_cover() {
        let run = |stream_id: u64, first_offset: i64, last_offset: i64| RunRecord {
            stream_id,
            first_offset,
            last_offset,
            max_timestamp: 0,
            position: 0,
            length: 1,
            leader_epoch: 0,
            producers: Vec::new(),
            cleaned: false,
            tombstones_expire_ms: None,
        };
        let object = |seq: u64, runs: Vec<RunRecord>| ObjectRecord {
            seq,
            key: format!("data/{seq}"),
            size: 1,
            writer: "w".into(),
            committed_ms: 0,
            runs,
        };
        let objects = [
            object(1, vec![run(7, 0, 9), run(8, 0, 4)]),
            object(2, vec![run(7, 10, 19), run(8, 5, 9)]),
            object(3, vec![run(7, 20, 29)]),
            object(4, vec![run(7, 0, 19)]), // rewrite of 7's first two runs
            object(5, vec![run(8, 0, 9)]),  // rewrite of all of 8
            object(6, vec![run(8, 0, 9)]),  // the same range again: the newer wins
            object(7, vec![run(7, 15, 25)]), // partial overlap: covers nothing
        ];
        let got = superseded_runs(&objects);
        let want: std::collections::HashSet<(u64, u64)> = [(1, 7), (1, 8), (2, 7), (2, 8), (5, 8)]
            .into_iter()
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn wal_batch_payload_round_trips() {
        let b = make_batch(2, -1, -1, 3);
        let parts = encode_wal_batch(77, 4, &b);
        let payload = Bytes::from(parts.concat());
        assert_eq!(
            &payload[..WAL_BATCH_HEADER],
            &[1, 0, 0, 0, 0, 0, 0, 0, 77, 0, 0, 0, 4]
        );
        let (s, e, body) = decode_wal_batch(&payload).unwrap();
        assert_eq!((s, e, body), (77, 4, b));
        assert!(decode_wal_batch(&payload.slice(..5)).is_none());
    }

    #[test]
    fn slicing_a_run_starts_at_the_batch_holding_the_offset() {
        let mut run = BytesMut::new();
        let mut next = 0;
        for n in [3, 2, 4] {
            run.extend_from_slice(&batch::assign(&make_batch(n, -1, -1, 1), next, 0));
            next += i64::from(n);
        }
        let run = run.freeze();
        let all = slice_batches(&run, 0, 9, 1 << 20);
        assert_eq!(all.len(), run.len());
        let from4 = slice_batches(&run, 4, 9, 1 << 20);
        let first = BatchHeader::parse(&from4).unwrap();
        assert_eq!(first.base_offset, 3);
        // Below the high watermark only.
        let capped = slice_batches(&run, 0, 5, 1 << 20);
        assert_eq!(batch::iter_batches(&capped).count(), 2);
        // At least one batch even when max_bytes is tiny.
        assert_eq!(
            batch::iter_batches(&slice_batches(&run, 0, 9, 1)).count(),
            1
        );
    }
}
