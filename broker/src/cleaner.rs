//! The log cleaner: log compaction for topics with `cleanup.policy=compact` (or
//! `compact,delete`), run by each partition's owner from the lifecycle loop.
//!
//! A cleaning reads a stretch of committed runs, finds the latest offset of every key
//! in it, and rewrites the stretch keeping only those records. A tombstone (a record
//! with a key and no value) is kept until its timestamp is `delete.retention.ms` old.
//! The rewrite goes through the upload pipeline like object compaction's
//! ([`crate::uploader::RewriteRun`], kind `cleaner`). It covers the same offsets as the
//! runs it replaces, so the originals are superseded and die as dead objects.
//!
//! Invariants:
//! - Offsets never change. Every batch keeps its place: it holds fewer records, or none
//!   (an empty chunk). A cleaned run can therefore start, end or be wholly inside a gap.
//!   The read path skips to the next run when one has nothing at or after the offset
//!   asked.
//! - Only the records of the stretch decide what is latest. A key updated after the
//!   stretch keeps its older value in the stretch until the next cleaning, as in Kafka
//!   (the active segment is never cleaned).
//! - What cleaning keeps is exactly what it read, byte for byte, for batches that lose
//!   no record. Others are re-encoded with their codec, producer id, epoch and
//!   sequences. The idempotent producers' windows come from the original headers.
//! - Only runs of this broker's own writer are rewritten (as in object compaction):
//!   runs written by a previous owner stay as they are, which only means more old
//!   values than necessary, never fewer.
//!
//! When: a partition's stretch is cleaned when its dirty (never cleaned) bytes reach
//! `min.cleanable.dirty.ratio`, when a dirty run is older than `max.compaction.lag.ms`,
//! or when a tombstone kept by an earlier cleaning expires. Runs whose newest record is
//! younger than `min.compaction.lag.ms` are not cleanable yet. At most four compaction
//! target sizes are read per round (the backpressure), and each rewritten run holds at
//! most one target size of input.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, RecordSet,
};

use crate::batch::{self, BatchHeader};
use crate::log::{LogManager, now_ms};
use crate::partition::{Partition, RunLocation};
use crate::topic_config::CleanerConfig;
use crate::uploader::RewriteRun;

/// How long a cleaning's rewrite may wait for its commit.
const REWRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// One batch after cleaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanedBatch {
    /// The batch to keep: the original bytes if no record goes, a re-encoded batch if
    /// some do, empty if all do.
    pub bytes: Bytes,
    /// Largest timestamp among the records kept (`i64::MIN` if none).
    pub max_timestamp: i64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// When the first tombstone kept expires.
    pub tombstones_expire_ms: Option<i64>,
}

/// Why a batch could not be cleaned.
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error("cannot decode a stored batch: {0}")]
    Decode(String),
    #[error("cannot encode a cleaned batch: {0}")]
    Encode(String),
    #[error("{0}")]
    Storage(String),
    #[error("the batches of {key} do not follow each other (offset {found}, expected {expected})")]
    Gap {
        key: String,
        found: i64,
        expected: i64,
    },
}

/// Decodes one stored batch.
fn decode(bytes: &Bytes) -> Result<RecordSet, CleanError> {
    let mut buf = bytes.clone();
    RecordBatchDecoder::decode(&mut buf).map_err(|e| CleanError::Decode(e.to_string()))
}

/// Keeps the records of one batch that are the latest of their key (`latest`) and, for
/// tombstones, younger than `delete_retention_ms`. Records without a key are kept
/// (compacted topics refuse them at produce; older data is never dropped blindly).
pub fn clean_batch(
    original: &Bytes,
    set: &RecordSet,
    latest: &HashMap<Bytes, i64>,
    now_ms: i64,
    delete_retention_ms: i64,
) -> Result<CleanedBatch, CleanError> {
    let mut kept = Vec::with_capacity(set.records.len());
    let mut tombstones_removed = 0;
    let mut expire: Option<i64> = None;
    for r in &set.records {
        let Some(key) = &r.key else {
            kept.push(r);
            continue;
        };
        if latest.get(key) != Some(&r.offset) {
            continue;
        }
        if r.value.is_none() {
            let expires = r.timestamp.saturating_add(delete_retention_ms);
            if expires <= now_ms {
                tombstones_removed += 1;
                continue;
            }
            expire = Some(expire.map_or(expires, |e| e.min(expires)));
        }
        kept.push(r);
    }
    let records_removed = (set.records.len() - kept.len()) as u64;
    let max_timestamp = kept.iter().map(|r| r.timestamp).max().unwrap_or(i64::MIN);
    let bytes = if records_removed == 0 {
        original.clone()
    } else if kept.is_empty() {
        Bytes::new()
    } else {
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: set.compression,
        };
        RecordBatchEncoder::encode(&mut buf, kept.iter().copied(), &options)
            .map_err(|e| CleanError::Encode(e.to_string()))?;
        buf.freeze()
    };
    Ok(CleanedBatch {
        bytes,
        max_timestamp,
        records_removed,
        tombstones_removed,
        tombstones_expire_ms: expire,
    })
}

/// Whether a partition's cleanable stretch is due for cleaning.
pub fn cleaning_due(runs: &[RunLocation], config: &CleanerConfig, now_ms: i64) -> bool {
    let total: u64 = runs.iter().map(|r| r.length).sum();
    let dirty: Vec<&RunLocation> = runs.iter().filter(|r| !r.cleaned).collect();
    let dirty_bytes: u64 = dirty.iter().map(|r| r.length).sum();
    let ratio_reached = dirty_bytes > 0
        && dirty_bytes as f64 >= config.min_cleanable_dirty_ratio * total.max(1) as f64;
    let overdue = dirty.iter().any(|r| {
        r.max_timestamp != i64::MIN
            && r.max_timestamp < now_ms.saturating_sub(config.max_compaction_lag_ms)
    });
    let tombstones_expired = runs
        .iter()
        .any(|r| r.tombstones_expire_ms.is_some_and(|t| t <= now_ms));
    ratio_reached || overdue || tombstones_expired
}

/// The runs a cleaning may take, in offset order: after any runs of other writers at
/// the head, the adjacent runs of this writer whose newest record is at least
/// `min.compaction.lag.ms` old, within `budget` bytes.
pub fn cleanable_stretch(
    runs: &[RunLocation],
    own: &HashSet<String>,
    config: &CleanerConfig,
    now_ms: i64,
    budget: u64,
) -> Vec<RunLocation> {
    let is_own = |r: &RunLocation| own.contains(r.key.as_ref().as_ref());
    let ripe =
        |r: &RunLocation| r.max_timestamp <= now_ms.saturating_sub(config.min_compaction_lag_ms);
    let mut out: Vec<RunLocation> = Vec::new();
    let mut bytes = 0u64;
    for r in runs.iter().skip_while(|r| !is_own(r)) {
        let adjacent = out
            .last()
            .is_none_or(|p| p.last_offset + 1 == r.first_offset);
        if !is_own(r) || !ripe(r) || !adjacent || (bytes + r.length > budget && !out.is_empty()) {
            break;
        }
        bytes += r.length;
        out.push(r.clone());
    }
    out
}

/// What one round of the cleaner did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanerStats {
    pub partitions: u64,
    pub bytes_read: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
}

/// Cleans the compacted partitions this broker serves that are due (see the module docs).
pub async fn clean_logs(logs: &LogManager) -> CleanerStats {
    let own = logs.own_object_keys();
    let budget = logs.settings.compaction_target_bytes.saturating_mul(4);
    let now = now_ms();
    let mut stats = CleanerStats::default();
    for name in logs.topic_names() {
        let Some(topic) = logs.get_topic(&name) else {
            continue;
        };
        let Some(config) = CleanerConfig::from_configs(&topic.configs) else {
            continue;
        };
        for p in &topic.partitions {
            let stretch = {
                let st = p.lock();
                if !st.owned || st.releasing || st.deleted {
                    continue;
                }
                let runs: Vec<RunLocation> = st.live_runs().cloned().collect();
                cleanable_stretch(&runs, &own, &config, now, budget)
            };
            if stretch.is_empty() || !cleaning_due(&stretch, &config, now) {
                continue;
            }
            match clean_partition(logs, p, &stretch, &config, now).await {
                Ok(Some(done)) => {
                    stats.partitions += 1;
                    stats.bytes_read += done.bytes_read;
                    stats.records_removed += done.records_removed;
                    stats.tombstones_removed += done.tombstones_removed;
                    logs.metrics.cleaner_cleanings.inc();
                    logs.metrics.cleaner_bytes_read.inc_by(done.bytes_read);
                    logs.metrics
                        .cleaner_records_removed
                        .inc_by(done.records_removed);
                    tracing::info!(topic = %p.topic, partition = p.index,
                        first = stretch[0].first_offset, last = stretch[stretch.len() - 1].last_offset,
                        removed = done.records_removed, tombstones = done.tombstones_removed,
                        "cleaned the log");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "log cleaning failed; retrying next round")
                }
            }
        }
    }
    stats
}

/// Cleans one stretch; None if a rewrite was dropped (the partition changed hands).
async fn clean_partition(
    logs: &LogManager,
    partition: &Partition,
    stretch: &[RunLocation],
    config: &CleanerConfig,
    now: i64,
) -> Result<Option<CleanerStats>, CleanError> {
    // Pass 1: read and decode every batch, and the latest offset of every key.
    let mut runs: Vec<Vec<(BatchHeader, Bytes, RecordSet)>> = Vec::with_capacity(stretch.len());
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    let mut stats = CleanerStats::default();
    for run in stretch {
        let data = logs
            .storage
            .read_range(&run.key, run.position, run.length)
            .await
            .map_err(|e| CleanError::Storage(e.to_string()))?;
        stats.bytes_read += data.len() as u64;
        let mut batches = Vec::new();
        for (header, bytes) in batch::iter_batches(&data) {
            let set = decode(&bytes)?;
            for r in &set.records {
                if let Some(key) = &r.key {
                    latest.insert(key.clone(), r.offset);
                }
            }
            batches.push((header, bytes, set));
        }
        runs.push(batches);
    }
    // Pass 2: one rewrite per stretch of runs with the same leader epoch, cut at the
    // compaction target (runs are read whole: a cleaned run stays one read).
    let target = logs.settings.compaction_target_bytes;
    let mut start = 0;
    while start < stretch.len() {
        let epoch = stretch[start].leader_epoch;
        let mut end = start + 1;
        let mut bytes = stretch[start].length;
        while let Some(r) = stretch.get(end) {
            if r.leader_epoch != epoch || bytes + r.length > target {
                break;
            }
            bytes += r.length;
            end += 1;
        }
        let mut chunks = Vec::new();
        let mut headers = Vec::new();
        let mut expire: Option<i64> = None;
        // The first chunk starts where the first run does (it may start in a gap left
        // by an earlier cleaning); each next one right after the previous.
        let mut next = stretch[start].first_offset;
        for (run, batches) in stretch[start..end].iter().zip(&runs[start..end]) {
            for (header, bytes, set) in batches {
                if header.base_offset < next {
                    return Err(CleanError::Gap {
                        key: run.key.to_string(),
                        found: header.base_offset,
                        expected: next,
                    });
                }
                let cleaned = clean_batch(bytes, set, &latest, now, config.delete_retention_ms)?;
                stats.records_removed += cleaned.records_removed;
                stats.tombstones_removed += cleaned.tombstones_removed;
                if let Some(t) = cleaned.tombstones_expire_ms {
                    expire = Some(expire.map_or(t, |e| e.min(t)));
                }
                chunks.push((
                    next,
                    header.last_offset(),
                    cleaned.max_timestamp,
                    cleaned.bytes,
                ));
                headers.push(*header);
                next = header.last_offset() + 1;
            }
            // The run may end in a gap: its last chunk reaches its end.
            if next <= run.last_offset {
                chunks.push((next, run.last_offset, i64::MIN, Bytes::new()));
                next = run.last_offset + 1;
            }
        }
        let done = logs
            .uploader
            .submit_rewrite(RewriteRun {
                stream_id: partition.stream_id,
                leader_epoch: epoch,
                chunks,
                original_headers: headers,
                cleaned: true,
                tombstones_expire_ms: expire,
                kind: "cleaner",
            })
            .map_err(|e| CleanError::Encode(e.to_string()))?;
        match tokio::time::timeout(REWRITE_TIMEOUT, done).await {
            Ok(Ok(true)) => {}
            Ok(_) => return Ok(None),
            Err(_) => {
                return Err(CleanError::Storage(
                    "the cleaned run was not committed in time".to_string(),
                ));
            }
        }
        start = end;
    }
    Ok(Some(stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, Record, TimestampType};
    use std::sync::Arc;

    fn record(offset: i64, key: Option<&str>, value: Option<&str>, ts: i64) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1 + i32::try_from(offset - 10).unwrap_or(0),
            timestamp: ts,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        }
    }

    fn encode(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn cleaning_keeps_the_latest_per_key_and_young_tombstones() {
        for compression in [Compression::None, Compression::Lz4] {
            let batch = encode(
                &[
                    record(10, Some("a"), Some("a1"), 1_000),
                    record(11, Some("b"), Some("b1"), 1_000),
                    record(12, Some("a"), Some("a2"), 1_000),
                    record(13, Some("c"), None, 1_000), // tombstone, old
                    record(14, Some("d"), None, 9_500), // tombstone, young
                    record(15, None, Some("keyless"), 1_000),
                ],
                compression,
            );
            let set = decode(&batch).unwrap();
            let mut latest = HashMap::new();
            for r in &set.records {
                if let Some(k) = &r.key {
                    latest.insert(k.clone(), r.offset);
                }
            }
            latest.insert(Bytes::from_static(b"b"), 99); // b is updated in a later batch
            let cleaned = clean_batch(&batch, &set, &latest, 10_000, 1_000).unwrap();
            assert_eq!(
                (cleaned.records_removed, cleaned.tombstones_removed),
                (3, 1)
            );
            assert_eq!(cleaned.tombstones_expire_ms, Some(10_500));
            assert_eq!(cleaned.max_timestamp, 9_500);
            let header = BatchHeader::parse(&cleaned.bytes).unwrap();
            assert_eq!(header.base_offset, 12, "offsets never change");
            assert_eq!(header.last_offset(), 15);
            let kept = decode(&cleaned.bytes).unwrap();
            assert_eq!(kept.compression, compression);
            let got: Vec<(i64, Option<Bytes>)> = kept
                .records
                .iter()
                .map(|r| (r.offset, r.value.clone()))
                .collect();
            assert_eq!(
                got,
                vec![
                    (12, Some(Bytes::from_static(b"a2"))),
                    (14, None),
                    (15, Some(Bytes::from_static(b"keyless")))
                ]
            );
            // Nothing to remove: the very same bytes.
            let all: HashMap<Bytes, i64> = [("a", 12), ("b", 11), ("c", 13), ("d", 14)]
                .into_iter()
                .map(|(k, o)| (Bytes::from_static(k.as_bytes()), o))
                .collect();
            let one = encode(&[record(12, Some("a"), Some("a2"), 1_000)], compression);
            let cleaned = clean_batch(&one, &decode(&one).unwrap(), &all, 10_000, 1_000).unwrap();
            assert_eq!(cleaned.bytes, one);
            // Everything removed: an empty chunk.
            let gone =
                clean_batch(&one, &decode(&one).unwrap(), &HashMap::new(), 10_000, 1_000).unwrap();
            assert!(gone.bytes.is_empty());
            assert_eq!((gone.records_removed, gone.max_timestamp), (1, i64::MIN));
        }
    }

    fn run(first: i64, last: i64, key: &str, cleaned: bool, max_timestamp: i64) -> RunLocation {
        RunLocation {
            key: Arc::new(object_store::path::Path::from(key)),
            position: 0,
            length: 100,
            first_offset: first,
            last_offset: last,
            max_timestamp,
            leader_epoch: 0,
            committed_ms: 0,
            cleaned,
            tombstones_expire_ms: None,
        }
    }

    #[test]
    fn what_is_cleanable_and_when() {
        let config = CleanerConfig {
            delete_retention_ms: 1_000,
            min_compaction_lag_ms: 500,
            max_compaction_lag_ms: 5_000,
            min_cleanable_dirty_ratio: 0.5,
        };
        let own: HashSet<String> = ["data/own1", "data/own2", "data/own3", "data/own4"]
            .into_iter()
            .map(String::from)
            .collect();
        let runs = [
            run(0, 9, "data/theirs", false, 100),
            run(10, 19, "data/own1", true, 100),
            run(20, 29, "data/own2", false, 100),
            run(30, 39, "data/own3", false, 9_800), // too young at 10_000
            run(40, 49, "data/own4", false, 100),
        ];
        let stretch = cleanable_stretch(&runs, &own, &config, 10_000, 1 << 20);
        assert_eq!(
            stretch.iter().map(|r| r.first_offset).collect::<Vec<_>>(),
            [10, 20]
        );
        // Budget: at least one run, then only what fits.
        assert_eq!(
            cleanable_stretch(&runs, &own, &config, 10_000, 150).len(),
            1
        );
        // Half dirty: due. One clean run alone: not due, until a tombstone expires.
        assert!(cleaning_due(&stretch, &config, 10_000));
        assert!(!cleaning_due(&stretch[..1], &config, 10_000));
        let mut with_tombstone = stretch[0].clone();
        with_tombstone.tombstones_expire_ms = Some(10_000);
        assert!(cleaning_due(&[with_tombstone], &config, 10_000));
        // Mostly clean but a dirty run past max.compaction.lag.ms: due.
        let mostly_clean = [
            run(0, 9, "data/own1", true, 100),
            run(10, 19, "data/own2", true, 100),
            run(20, 29, "data/own3", false, 4_000),
        ];
        assert!(!cleaning_due(&mostly_clean, &config, 8_000));
        assert!(cleaning_due(&mostly_clean, &config, 9_100));
    }
}
