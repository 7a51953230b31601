//! [`Metadata`]: the Cirrus metadata model (cluster, topics, object index, producer
//! ids) over any [`MetaStore`].
//!
//! Key and value layouts are documented in [`crate::records`]. This module owns the
//! rules for changing them:
//!
//! - Every change is one [`Txn`] whose compares make it safe to retry (see the retry
//!   rules on [`MetaStore`]); read-modify-write loops are bounded by
//!   [`MAX_CAS_ATTEMPTS`] and end in [`MetaError::Conflict`].
//! - Every transaction is checked with [`Txn::validate`] (≤ 128 ops, values < 1 MiB)
//!   before it is sent, so the same code runs unchanged on etcd.
//! - Stream ids come from `counters/stream_id`, allocated in the same transaction as
//!   the topic write that uses them, so they are never reused.
//! - A sealed data object costs exactly one metadata write ([`Metadata::commit_object`]),
//!   never one per batch or per partition.
//!
//! - Every transaction that changes `topics/*` (here) or `owners/*` (in
//!   [`crate::cluster`]) also puts `changes`, so a broker learns of any such change by
//!   polling one key's version ([`Metadata::changes_version`]).
//!
//! # The object index and its bound
//!
//! The index is per writer (a broker id; 0 on a single node): writer `w` alone appends
//! `objects/{w}/{seq}` and moves `index/{w}`, so writers never contend and each keeps
//! its own dense seq space. Object records accumulate until a checkpoint blob
//! summarising them is written to the bucket and [`Metadata::commit_checkpoint`]
//! records it. That call puts `index/{w}` and deletes the covered records. Readers
//! ([`Metadata::index_snapshot`], [`Metadata::list_objects_after`],
//! [`Metadata::cluster_index`]) ignore every object record with
//! `seq <= checkpoint.through_seq`, so deleting them is only cleanup: if it is
//! interrupted the leftovers are invisible, and the next checkpoint deletes them.
//! Hence the number of live index keys is `W + Σ_w O_w` for `W` writers, where `O_w`
//! is the number of objects writer `w` committed since its last checkpoint (< 256 plus
//! leftovers of an interrupted cleanup, removed by the next checkpoint). Without the
//! cluster keys the live keys under the root are
//!
//! ```text
//! keys = 1 (cluster) + T (topics) + 2 (counters) + W (checkpoints) + Σ O_w
//! ```
//!
//! where `T` is the number of topics (partitions live inside their topic's value, at
//! most [`MAX_PARTITIONS`] per topic so it stays < 1 MiB). Total bytes are
//! `O(T + P + Σ O_w × runs per object)` for `P` partitions; [`crate::cluster`] adds the
//! cluster keys and gives the full byte bound.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use uuid::Uuid;

use crate::records::{
    self, CHANGES_KEY, CLUSTER_KEY, ChangesRecord, CheckpointRecord, ClusterRecord, CounterRecord,
    INDEX_PREFIX, OBJECTS_PREFIX, ObjectRecord, PRODUCER_IDS_KEY, PartitionRecord,
    STREAM_ID_COUNTER_KEY, TOPICS_PREFIX, TopicRecord,
};
use crate::store::{Compare, MAX_TXN_OPS, MetaStore, Txn};
use crate::{Entity, MetaError};

/// Attempts of a compare-and-swap loop before it gives up with [`MetaError::Conflict`].
pub const MAX_CAS_ATTEMPTS: usize = 64;

/// Most partitions in one topic. A topic record holds all its partitions and must stay
/// below 1 MiB; a partition encodes to at most ~110 bytes, so 8192 leave margin.
pub const MAX_PARTITIONS: i32 = 8192;

/// Most producer ids one [`Metadata::allocate_producer_ids`] call may take.
pub const MAX_PRODUCER_ID_BLOCK: i64 = 1_000_000;

/// First stream id handed out; 0 is never a valid stream id.
const FIRST_STREAM_ID: u64 = 1;

/// Source of wall-clock time for timestamps written into metadata.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A consistent view of the object index: the checkpoint and the object records after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSnapshot {
    /// The current checkpoint and its store version, if one was ever committed.
    pub checkpoint: Option<(CheckpointRecord, u64)>,
    /// Object records with `seq > checkpoint.through_seq`, sorted by seq.
    pub objects: Vec<ObjectRecord>,
}

impl IndexSnapshot {
    /// `through_seq` of the checkpoint, or 0.
    pub fn through_seq(&self) -> u64 {
        self.checkpoint.as_ref().map_or(0, |(c, _)| c.through_seq)
    }
}

/// One writer's part of [`Metadata::cluster_index`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterIndex {
    /// The writer (broker id).
    pub writer: i32,
    /// Its checkpoint, if it ever committed one.
    pub checkpoint: Option<CheckpointRecord>,
    /// Its object records with `seq > checkpoint.through_seq`, sorted by seq.
    pub objects: Vec<ObjectRecord>,
}

impl WriterIndex {
    /// `through_seq` of the checkpoint, or 0.
    pub fn through_seq(&self) -> u64 {
        self.checkpoint.as_ref().map_or(0, |c| c.through_seq)
    }
}

/// The metadata model over a [`MetaStore`], every key under one root prefix.
#[derive(Clone, Debug)]
pub struct Metadata {
    store: Arc<dyn MetaStore>,
    root: String,
    clock: Arc<dyn Clock>,
}

/// Validates a topic name as Kafka does: 1 to 249 characters of `[a-zA-Z0-9._-]`,
/// and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), MetaError> {
    let invalid = |reason| {
        Err(MetaError::InvalidTopicName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("the name is empty");
    }
    if name == "." || name == ".." {
        return invalid("\".\" and \"..\" are reserved");
    }
    if name.len() > 249 {
        return invalid("the name is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("the name contains a character outside [a-zA-Z0-9._-]");
    }
    Ok(())
}

/// A Kafka-style cluster id: URL-safe base64 (no padding) of a random UUID, 22 chars.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = Uuid::new_v4().as_u128();
    // 128 bits = 21 full sextets + 2 leftover bits, which base64 left-aligns.
    let mut out = String::with_capacity(22);
    for i in 0..21 {
        let sextet = (value >> (122 - 6 * i)) & 0x3f;
        out.push(char::from(ALPHABET[sextet as usize]));
    }
    out.push(char::from(ALPHABET[((value & 0x3) << 4) as usize]));
    out
}

impl Metadata {
    /// A model rooted at `root` (e.g. `"/cirrus/"`; a trailing `/` is added if missing),
    /// using the system clock.
    pub fn new(store: Arc<dyn MetaStore>, root: impl Into<String>) -> Self {
        let mut root = root.into();
        if !root.ends_with('/') {
            root.push('/');
        }
        Self {
            store,
            root,
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the clock used for `created_ms`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// The root prefix, ending in `/`.
    pub fn root(&self) -> &str {
        &self.root
    }

    pub(crate) fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.root)
    }

    /// Milliseconds since the Unix epoch from the model's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Adds the put of `changes` (see [`crate::records`]) that every transaction
    /// changing `topics/*` or `owners/*` carries, so brokers polling its version notice.
    pub(crate) fn with_changes(&self, txn: Txn) -> Result<Txn, MetaError> {
        let key = self.key(CHANGES_KEY);
        let value = records::encode(
            &key,
            &ChangesRecord {
                ms: self.clock.now_ms(),
            },
        )?;
        Ok(txn.put(key, value))
    }

    pub(crate) async fn read<T: serde::de::DeserializeOwned>(
        &self,
        relative: &str,
    ) -> Result<Option<(T, u64)>, MetaError> {
        let key = self.key(relative);
        match self.store.get(&key).await? {
            Some(kv) => Ok(Some((records::decode(&key, &kv.value)?, kv.version))),
            None => Ok(None),
        }
    }

    pub(crate) async fn txn(&self, txn: Txn) -> Result<bool, MetaError> {
        txn.validate()?;
        self.store.txn(txn).await
    }

    /// Adds the compare that pins `relative` to what was read (`None` = absent).
    pub(crate) fn pin(&self, txn: Txn, relative: &str, version: Option<u64>) -> Txn {
        match version {
            Some(v) => txn.when_version(self.key(relative), v),
            None => txn.when_absent(self.key(relative)),
        }
    }

    // ---- cluster ------------------------------------------------------------------

    /// Returns the cluster record, creating it (with a fresh id) on first call.
    pub async fn init_cluster(&self) -> Result<ClusterRecord, MetaError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            if let Some((record, _)) = self.read::<ClusterRecord>(CLUSTER_KEY).await? {
                return Ok(record);
            }
            let key = self.key(CLUSTER_KEY);
            let record = ClusterRecord {
                cluster_id: new_cluster_id(),
            };
            let value = records::encode(&key, &record)?;
            if self
                .txn(Txn::new().when_absent(key.clone()).put(key, value))
                .await?
            {
                tracing::info!(cluster_id = %record.cluster_id, "initialised cluster metadata");
                return Ok(record);
            }
        }
        Err(MetaError::Conflict("cluster record kept changing".into()))
    }

    // ---- topics -------------------------------------------------------------------

    /// The topic, if it exists.
    pub async fn get_topic(&self, name: &str) -> Result<Option<TopicRecord>, MetaError> {
        validate_topic_name(name)?;
        Ok(self
            .read::<TopicRecord>(&records::topic_key(name))
            .await?
            .map(|(t, _)| t))
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicRecord>, MetaError> {
        self.store
            .list(&self.key(TOPICS_PREFIX))
            .await?
            .iter()
            .map(|kv| records::decode(&kv.key, &kv.value))
            .collect()
    }

    async fn stream_counter(&self) -> Result<(u64, Option<u64>), MetaError> {
        Ok(
            match self.read::<CounterRecord>(STREAM_ID_COUNTER_KEY).await? {
                Some((c, version)) => (c.next, Some(version)),
                None => (FIRST_STREAM_ID, None),
            },
        )
    }

    fn new_partitions(
        topic: &str,
        from_index: i32,
        to_index: i32,
        first_stream_id: u64,
    ) -> Result<(Vec<PartitionRecord>, u64), MetaError> {
        let mut next = first_stream_id;
        let mut out = Vec::with_capacity(usize::try_from(to_index - from_index).unwrap_or(0));
        for index in from_index..to_index {
            out.push(PartitionRecord {
                index,
                stream_id: next,
                leader_epoch: 0,
                log_start_offset: 0,
            });
            next = next.checked_add(1).ok_or_else(|| {
                MetaError::corrupt(
                    STREAM_ID_COUNTER_KEY,
                    format!("stream id space exhausted while allocating for topic {topic:?}"),
                )
            })?;
        }
        Ok((out, next))
    }

    fn check_partition_count(topic: &str, count: i32) -> Result<(), MetaError> {
        if !(1..=MAX_PARTITIONS).contains(&count) {
            return Err(MetaError::InvalidPartitions {
                topic: topic.to_owned(),
                reason: format!("partition count {count} is outside 1..={MAX_PARTITIONS}"),
            });
        }
        Ok(())
    }

    /// Creates a topic with `partitions` partitions, allocating their stream ids in the
    /// same transaction. [`MetaError::AlreadyExists`] if it exists.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicRecord, MetaError> {
        validate_topic_name(name)?;
        Self::check_partition_count(name, partitions)?;
        let relative = records::topic_key(name);
        let key = self.key(&relative);
        let topic_id = Uuid::new_v4();
        let created_ms = self.clock.now_ms();
        for _ in 0..MAX_CAS_ATTEMPTS {
            if self.store.get(&key).await?.is_some() {
                return Err(MetaError::AlreadyExists {
                    kind: Entity::Topic,
                    name: name.to_owned(),
                });
            }
            let (first, counter_version) = self.stream_counter().await?;
            let (parts, next) = Self::new_partitions(name, 0, partitions, first)?;
            let record = TopicRecord {
                name: name.to_owned(),
                topic_id,
                partitions: parts,
                configs: configs.clone(),
                created_ms,
            };
            let counter_key = self.key(STREAM_ID_COUNTER_KEY);
            let txn = self
                .pin(Txn::new(), STREAM_ID_COUNTER_KEY, counter_version)
                .when_absent(key.clone())
                .put(key.clone(), records::encode(&key, &record)?)
                .put(
                    counter_key.clone(),
                    records::encode(&counter_key, &CounterRecord { next })?,
                );
            if self.txn(self.with_changes(txn)?).await? {
                tracing::info!(topic = name, partitions, %topic_id, "created topic");
                return Ok(record);
            }
            tokio::task::yield_now().await;
        }
        Err(MetaError::Conflict(format!(
            "creating topic {name:?}: stream-id counter kept changing"
        )))
    }

    /// Deletes a topic and returns its last record (the caller reclaims its streams).
    pub async fn delete_topic(&self, name: &str) -> Result<TopicRecord, MetaError> {
        validate_topic_name(name)?;
        let relative = records::topic_key(name);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some((record, version)) = self.read::<TopicRecord>(&relative).await? else {
                return Err(MetaError::NotFound {
                    kind: Entity::Topic,
                    name: name.to_owned(),
                });
            };
            let key = self.key(&relative);
            let txn =
                self.with_changes(Txn::new().when_version(key.clone(), version).delete(key))?;
            if self.txn(txn).await? {
                tracing::info!(topic = name, "deleted topic");
                return Ok(record);
            }
            tokio::task::yield_now().await;
        }
        Err(MetaError::Conflict(format!(
            "deleting topic {name:?}: it kept changing"
        )))
    }

    /// Grows a topic to `new_total` partitions; [`MetaError::InvalidPartitions`] unless
    /// `new_total` is greater than the current count.
    pub async fn add_partitions(
        &self,
        name: &str,
        new_total: i32,
    ) -> Result<TopicRecord, MetaError> {
        validate_topic_name(name)?;
        Self::check_partition_count(name, new_total)?;
        let relative = records::topic_key(name);
        let key = self.key(&relative);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some((mut record, version)) = self.read::<TopicRecord>(&relative).await? else {
                return Err(MetaError::NotFound {
                    kind: Entity::Topic,
                    name: name.to_owned(),
                });
            };
            let current = i32::try_from(record.partitions.len()).unwrap_or(i32::MAX);
            if new_total <= current {
                return Err(MetaError::InvalidPartitions {
                    topic: name.to_owned(),
                    reason: format!(
                        "the topic has {current} partitions, the new total {new_total} must be greater"
                    ),
                });
            }
            let (first, counter_version) = self.stream_counter().await?;
            let (parts, next) = Self::new_partitions(name, current, new_total, first)?;
            record.partitions.extend(parts);
            let counter_key = self.key(STREAM_ID_COUNTER_KEY);
            let txn = self
                .pin(Txn::new(), STREAM_ID_COUNTER_KEY, counter_version)
                .when_version(key.clone(), version)
                .put(key.clone(), records::encode(&key, &record)?)
                .put(
                    counter_key.clone(),
                    records::encode(&counter_key, &CounterRecord { next })?,
                );
            if self.txn(self.with_changes(txn)?).await? {
                tracing::info!(
                    topic = name,
                    from = current,
                    to = new_total,
                    "added partitions"
                );
                return Ok(record);
            }
            tokio::task::yield_now().await;
        }
        Err(MetaError::Conflict(format!(
            "adding partitions to topic {name:?}: it kept changing"
        )))
    }

    /// Read-modify-write of one topic. `change` returns whether it changed anything;
    /// if not, nothing is written.
    async fn modify_topic<F>(
        &self,
        name: &str,
        what: &str,
        mut change: F,
    ) -> Result<TopicRecord, MetaError>
    where
        F: FnMut(&mut TopicRecord) -> Result<bool, MetaError>,
    {
        validate_topic_name(name)?;
        let relative = records::topic_key(name);
        let key = self.key(&relative);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some((mut record, version)) = self.read::<TopicRecord>(&relative).await? else {
                return Err(MetaError::NotFound {
                    kind: Entity::Topic,
                    name: name.to_owned(),
                });
            };
            if !change(&mut record)? {
                return Ok(record);
            }
            let txn = Txn::new()
                .when_version(key.clone(), version)
                .put(key.clone(), records::encode(&key, &record)?);
            if self.txn(self.with_changes(txn)?).await? {
                return Ok(record);
            }
            tokio::task::yield_now().await;
        }
        Err(MetaError::Conflict(format!(
            "{what} of topic {name:?}: it kept changing"
        )))
    }

    /// Replaces the topic's config overrides with `configs`.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicRecord, MetaError> {
        self.modify_topic(name, "setting configs", |record| {
            if record.configs == configs {
                return Ok(false);
            }
            record.configs = configs.clone();
            Ok(true)
        })
        .await
    }

    /// Raises a partition's log start offset to `offset`. Monotone: an offset at or
    /// below the current one changes nothing.
    pub async fn set_log_start_offset(
        &self,
        name: &str,
        partition: i32,
        offset: i64,
    ) -> Result<TopicRecord, MetaError> {
        if offset < 0 {
            return Err(MetaError::InvalidArgument(format!(
                "log start offset {offset} for {name}-{partition} is negative"
            )));
        }
        self.modify_topic(name, "setting the log start offset", |record| {
            let slot = usize::try_from(partition)
                .ok()
                .and_then(|i| record.partitions.get_mut(i));
            let Some(p) = slot else {
                return Err(MetaError::NotFound {
                    kind: Entity::Partition,
                    name: format!("{name}-{partition}"),
                });
            };
            if offset <= p.log_start_offset {
                return Ok(false);
            }
            p.log_start_offset = offset;
            Ok(true)
        })
        .await
    }

    // ---- object index -------------------------------------------------------------

    fn check_writer(writer: i32) -> Result<(), MetaError> {
        if writer < 0 {
            return Err(MetaError::InvalidArgument(format!(
                "object index writer id {writer} is negative (writers are broker ids >= 0)"
            )));
        }
        Ok(())
    }

    /// Records one sealed data object of `writer`: ONE transaction comparing
    /// `objects/{writer}/{seq}` absent (and `fence`, if given) and putting it.
    ///
    /// `fence` is an absolute key compare (not under the root); in cluster mode it is
    /// [`Metadata::broker_fence`], the version of the writer's own registration key, so
    /// a broker whose session lease expired (its registration was deleted, or replaced
    /// by a new registration) can no longer commit. If it fails the result is
    /// [`MetaError::Fenced`]. Retrying after a transport error is safe: if the record is
    /// already present with identical contents this returns `Ok(())`; with different
    /// contents, [`MetaError::AlreadyExists`].
    pub async fn commit_object(
        &self,
        writer: i32,
        record: ObjectRecord,
        fence: Option<Compare>,
    ) -> Result<(), MetaError> {
        Self::check_writer(writer)?;
        let relative = records::object_key(writer, record.seq);
        let key = self.key(&relative);
        let value = records::encode(&key, &record)?;
        let mut txn = Txn::new().when_absent(key.clone());
        if let Some(fence) = &fence {
            txn = txn.when(fence.clone());
        }
        if self.txn(txn.put(key.clone(), value)).await? {
            tracing::debug!(writer, seq = record.seq, object = %record.key, runs = record.runs.len(), "committed object");
            return Ok(());
        }
        match self.read::<ObjectRecord>(&relative).await? {
            Some((existing, _)) if existing == record => Ok(()),
            Some(_) => Err(MetaError::AlreadyExists {
                kind: Entity::Object,
                name: format!("{writer}/{}", record.seq),
            }),
            None => match fence {
                Some(fence) => Err(MetaError::Fenced {
                    key: fence.key().to_owned(),
                }),
                None => Err(MetaError::Conflict(format!(
                    "object record {writer}/{} vanished while committing (checkpointed concurrently?)",
                    record.seq
                ))),
            },
        }
    }

    /// `writer`'s current checkpoint and its store version (pass it as `prev_version`
    /// to the next [`Metadata::commit_checkpoint`]).
    pub async fn get_checkpoint(
        &self,
        writer: i32,
    ) -> Result<Option<(CheckpointRecord, u64)>, MetaError> {
        Self::check_writer(writer)?;
        self.read(&records::checkpoint_key(writer)).await
    }

    /// Decodes object records listed under `objects/`, checking that each sits under
    /// the key its writer and seq name. Returns `(writer, record)` pairs in key order.
    fn decode_objects(
        &self,
        kvs: Vec<crate::store::KeyValue>,
    ) -> Result<Vec<(i32, ObjectRecord)>, MetaError> {
        let prefix = self.key(OBJECTS_PREFIX);
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            if kv
                .key
                .strip_prefix(prefix.as_str())
                .and_then(records::parse_seq)
                .is_some()
            {
                tracing::warn!(
                    key = %kv.key,
                    "ignoring an object record of the single-writer layout; migrate_legacy_index moves it"
                );
                continue;
            }
            let record: ObjectRecord = records::decode(&kv.key, &kv.value)?;
            let writer = kv
                .key
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(writer, _)| records::parse_broker_id(writer));
            let Some(writer) = writer else {
                return Err(MetaError::corrupt(
                    &kv.key,
                    "object record key is not objects/{writer:010}/{seq:020}",
                ));
            };
            if kv.key != self.key(&records::object_key(writer, record.seq)) {
                return Err(MetaError::corrupt(
                    &kv.key,
                    format!("record says seq {} but sits under another key", record.seq),
                ));
            }
            out.push((writer, record));
        }
        Ok(out)
    }

    async fn list_object_records(&self, writer: i32) -> Result<Vec<ObjectRecord>, MetaError> {
        let kvs = self
            .store
            .list(&self.key(&records::writer_objects_prefix(writer)))
            .await?;
        Ok(self
            .decode_objects(kvs)?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }

    /// A consistent view of `writer`'s object index: its checkpoint, and its object
    /// records after it. Reads the checkpoint before and after listing and retries if
    /// it moved, so no record newer than the returned checkpoint can be missing.
    pub async fn index_snapshot(&self, writer: i32) -> Result<IndexSnapshot, MetaError> {
        Self::check_writer(writer)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let before = self.get_checkpoint(writer).await?;
            let objects = self.list_object_records(writer).await?;
            let after = self.get_checkpoint(writer).await?;
            if before.as_ref().map(|c| c.1) != after.as_ref().map(|c| c.1) {
                tokio::task::yield_now().await;
                continue;
            }
            let through = after.as_ref().map_or(0, |(c, _)| c.through_seq);
            return Ok(IndexSnapshot {
                checkpoint: after,
                objects: objects.into_iter().filter(|o| o.seq > through).collect(),
            });
        }
        Err(MetaError::Conflict(format!(
            "writer {writer}'s index checkpoint kept changing while listing objects"
        )))
    }

    /// `writer`'s object records with `seq > seq_exclusive` that its checkpoint does not
    /// cover, sorted by seq.
    pub async fn list_objects_after(
        &self,
        writer: i32,
        seq_exclusive: u64,
    ) -> Result<Vec<ObjectRecord>, MetaError> {
        let snapshot = self.index_snapshot(writer).await?;
        Ok(snapshot
            .objects
            .into_iter()
            .filter(|o| o.seq > seq_exclusive)
            .collect())
    }

    /// `writer`'s highest committed object seq (including checkpointed ones), or 0 if
    /// none. Its next object takes this + 1.
    pub async fn last_object_seq(&self, writer: i32) -> Result<u64, MetaError> {
        let snapshot = self.index_snapshot(writer).await?;
        Ok(snapshot
            .objects
            .last()
            .map_or(0, |o| o.seq)
            .max(snapshot.through_seq()))
    }

    /// Every writer's checkpoint and the object records after it, from one consistent
    /// view: lists every checkpoint pointer, then every object record, then the
    /// pointers again, and retries while any pointer moved. Used to load partitions that
    /// other brokers wrote. Sorted by writer; each writer's objects sorted by seq.
    pub async fn cluster_index(&self) -> Result<Vec<WriterIndex>, MetaError> {
        let index_prefix = self.key(INDEX_PREFIX);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let before = self.store.list(&index_prefix).await?;
            let objects = self.decode_objects(self.store.list(&self.key(OBJECTS_PREFIX)).await?)?;
            let after = self.store.list(&index_prefix).await?;
            let pointers = |kvs: &[crate::store::KeyValue]| -> Vec<(String, u64)> {
                kvs.iter().map(|kv| (kv.key.clone(), kv.version)).collect()
            };
            if pointers(&before) != pointers(&after) {
                tokio::task::yield_now().await;
                continue;
            }
            let mut by_writer: BTreeMap<i32, WriterIndex> = BTreeMap::new();
            for kv in &after {
                let writer = kv
                    .key
                    .strip_prefix(index_prefix.as_str())
                    .and_then(records::parse_broker_id);
                let Some(writer) = writer else {
                    // Not a writer's checkpoint (e.g. a key of an older layout).
                    tracing::warn!(key = %kv.key, "ignoring an unexpected key under index/");
                    continue;
                };
                let checkpoint: CheckpointRecord = records::decode(&kv.key, &kv.value)?;
                by_writer.insert(
                    writer,
                    WriterIndex {
                        writer,
                        checkpoint: Some(checkpoint),
                        objects: Vec::new(),
                    },
                );
            }
            for (writer, record) in objects {
                let entry = by_writer.entry(writer).or_insert_with(|| WriterIndex {
                    writer,
                    checkpoint: None,
                    objects: Vec::new(),
                });
                let through = entry.checkpoint.as_ref().map_or(0, |c| c.through_seq);
                if record.seq > through {
                    entry.objects.push(record);
                }
            }
            return Ok(by_writer.into_values().collect());
        }
        Err(MetaError::Conflict(
            "index checkpoints kept changing while listing the cluster's objects".into(),
        ))
    }

    /// Records a checkpoint blob of `writer`'s index and drops the object records it
    /// covers.
    ///
    /// `prev_version` is the version of the checkpoint the caller built on (`None` if
    /// there was none); if it has changed this fails with [`MetaError::Conflict`] and
    /// changes nothing. The first transaction puts the checkpoint together with the
    /// first deletions (at most 127); the remaining deletions follow in transactions of
    /// at most 128 ops. Those later deletions are idempotent cleanup: readers ignore
    /// object records with `seq <= through_seq`, so an interruption leaves only
    /// invisible garbage, which the next checkpoint deletes.
    pub async fn commit_checkpoint(
        &self,
        writer: i32,
        record: CheckpointRecord,
        prev_version: Option<u64>,
    ) -> Result<(), MetaError> {
        Self::check_writer(writer)?;
        let current = self.get_checkpoint(writer).await?;
        if current.as_ref().map(|c| c.1) != prev_version {
            return Err(MetaError::Conflict(format!(
                "writer {writer}'s index checkpoint is at version {:?}, not the expected {prev_version:?}",
                current.as_ref().map(|c| c.1)
            )));
        }
        if let Some((existing, _)) = &current
            && record.through_seq < existing.through_seq
        {
            return Err(MetaError::InvalidArgument(format!(
                "checkpoint through_seq {} would move back from {}",
                record.through_seq, existing.through_seq
            )));
        }
        let prefix = self.key(&records::writer_objects_prefix(writer));
        let covered: Vec<String> = self
            .store
            .list(&prefix)
            .await?
            .into_iter()
            .filter(|kv| {
                kv.key
                    .strip_prefix(prefix.as_str())
                    .and_then(records::parse_seq)
                    .is_some_and(|seq| seq <= record.through_seq)
            })
            .map(|kv| kv.key)
            .collect();
        let relative = records::checkpoint_key(writer);
        let key = self.key(&relative);
        let first_chunk = covered.len().min(MAX_TXN_OPS - 1);
        let mut txn = self
            .pin(Txn::new(), &relative, prev_version)
            .put(key.clone(), records::encode(&key, &record)?);
        for k in &covered[..first_chunk] {
            txn = txn.delete(k.clone());
        }
        if !self.txn(txn).await? {
            return Err(MetaError::Conflict(format!(
                "writer {writer}'s index checkpoint changed while committing a new one"
            )));
        }
        for chunk in covered[first_chunk..].chunks(MAX_TXN_OPS) {
            let txn = chunk
                .iter()
                .fold(Txn::new(), |txn, k| txn.delete(k.clone()));
            self.txn(txn).await?;
        }
        tracing::info!(
            writer,
            through_seq = record.through_seq,
            deleted = covered.len(),
            "committed index checkpoint"
        );
        Ok(())
    }

    /// Moves an object index of the earlier single-writer layout (`index/checkpoint`,
    /// `objects/{seq:020}`) to `writer`'s keys (`index/{writer}`,
    /// `objects/{writer}/{seq}`); returns how many keys it moved (0 if there was no
    /// such index). Call it once at start-up, before the index is read, on a store
    /// written by an older single-node build; it is a no-op otherwise.
    ///
    /// Idempotent and resumable: the checkpoint moves in one transaction, then the
    /// records it does not cover move in transactions of at most 64 (put the new key,
    /// delete the old one); covered records are just deleted. An interruption leaves a
    /// state the next call finishes. [`MetaError::Conflict`] if `writer` already has a
    /// checkpoint while a legacy one exists. Not safe to run while another process
    /// commits to the legacy keys (no build does any more).
    pub async fn migrate_legacy_index(&self, writer: i32) -> Result<usize, MetaError> {
        Self::check_writer(writer)?;
        let mut moved = 0;
        let legacy_checkpoint_relative = format!("{INDEX_PREFIX}checkpoint");
        let new_checkpoint_relative = records::checkpoint_key(writer);
        let legacy = self
            .read::<CheckpointRecord>(&legacy_checkpoint_relative)
            .await?;
        if let Some((checkpoint, version)) = legacy {
            let old = self.key(&legacy_checkpoint_relative);
            let new = self.key(&new_checkpoint_relative);
            let txn = Txn::new()
                .when_version(old.clone(), version)
                .when_absent(new.clone())
                .put(new.clone(), records::encode(&new, &checkpoint)?)
                .delete(old);
            if !self.txn(txn).await? {
                return Err(MetaError::Conflict(format!(
                    "moving the legacy index checkpoint to {new:?}: the legacy key changed, or writer {writer} already has a checkpoint"
                )));
            }
            moved += 1;
        }
        let through = self
            .get_checkpoint(writer)
            .await?
            .map_or(0, |(c, _)| c.through_seq);
        let prefix = self.key(OBJECTS_PREFIX);
        let mut legacy_objects = Vec::new();
        for kv in self.store.list(&prefix).await? {
            let Some(seq) = kv
                .key
                .strip_prefix(prefix.as_str())
                .and_then(records::parse_seq)
            else {
                continue;
            };
            let record: ObjectRecord = records::decode(&kv.key, &kv.value)?;
            if record.seq != seq {
                return Err(MetaError::corrupt(
                    &kv.key,
                    format!("record says seq {} but sits under another key", record.seq),
                ));
            }
            legacy_objects.push((kv.key, record));
        }
        // Two ops per live record, one per covered record: chunks of 64 fit in 128.
        for chunk in legacy_objects.chunks(MAX_TXN_OPS / 2) {
            let mut txn = Txn::new();
            for (old, record) in chunk {
                if record.seq > through {
                    let new = self.key(&records::object_key(writer, record.seq));
                    txn = txn.put(new.clone(), records::encode(&new, record)?);
                }
                txn = txn.delete(old.clone());
            }
            self.txn(txn).await?;
            moved += chunk.len();
        }
        if moved > 0 {
            tracing::info!(writer, moved, "migrated the single-writer object index");
        }
        Ok(moved)
    }

    // ---- producer ids -------------------------------------------------------------

    /// Allocates `count` consecutive producer ids (1..=[`MAX_PRODUCER_ID_BLOCK`]) by
    /// compare-and-swap on `producer_ids/next`. Ranges from concurrent callers are
    /// disjoint; ids are never reused.
    pub async fn allocate_producer_ids(&self, count: i64) -> Result<Range<i64>, MetaError> {
        if !(1..=MAX_PRODUCER_ID_BLOCK).contains(&count) {
            return Err(MetaError::InvalidArgument(format!(
                "producer id block size {count} is outside 1..={MAX_PRODUCER_ID_BLOCK}"
            )));
        }
        let key = self.key(PRODUCER_IDS_KEY);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (next, version) = match self.read::<CounterRecord>(PRODUCER_IDS_KEY).await? {
                Some((c, v)) => (c.next, Some(v)),
                None => (0, None),
            };
            let start = i64::try_from(next)
                .map_err(|_| MetaError::corrupt(&key, format!("counter {next} exceeds i64")))?;
            let end = start
                .checked_add(count)
                .ok_or_else(|| MetaError::TooLarge("the producer id space is exhausted".into()))?;
            let txn = self.pin(Txn::new(), PRODUCER_IDS_KEY, version).put(
                key.clone(),
                records::encode(
                    &key,
                    &CounterRecord {
                        next: end.unsigned_abs(),
                    },
                )?,
            );
            if self.txn(txn).await? {
                return Ok(start..end);
            }
            tokio::task::yield_now().await;
        }
        Err(MetaError::Conflict(
            "allocating producer ids: the counter kept changing".into(),
        ))
    }
}
