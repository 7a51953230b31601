//! The storage lifecycle of one broker, one background loop: retention, deletion of
//! objects whose data is all deleted, and the orphan sweep.
//!
//! Every `--retention-check-interval`:
//! 1. **Retention** of the partitions this broker owns (`cleanup.policy` containing
//!    `delete`): whole committed runs go from the head of the log while they are older
//!    than `retention.ms` (their largest timestamp) or the partition holds more than
//!    `retention.bytes`; the log start offset moves to the first run kept
//!    ([`LogManager::advance_log_start`]: topic record first, then memory). DeleteRecords
//!    moves it the same way. Data not yet in an object is never touched by retention.
//! 2. **Dead objects** of this broker's own writer: an object all of whose runs lie below
//!    their partition's log start, or belong to deleted topics, leaves the live index
//!    ([`LogManager::collect_dead_objects`]) and, after `--object-delete-grace` (reads
//!    already planned on it finish) and once a committed index checkpoint no longer lists
//!    it, the bucket ([`LogManager::delete_dead_objects`]).
//! 3. **Orphans**, every `--orphan-gc-interval`, on the controller (or a single node):
//!    objects under `data/` and checkpoint blobs under `index/` that no writer's index
//!    references and that are older than `--orphan-grace` (uploaded but never
//!    committed: a crash between PUT and commit, a fenced broker) are deleted. The
//!    bucket is listed *before* the index is read, so an object committed in between is
//!    seen as referenced or is younger than the grace; an upload whose commit waits
//!    longer than a third of the grace is uploaded again (the commit loop), so a pending
//!    commit never loses its object.
//!
//! Crash safety: every step is idempotent and ordered so that an interruption leaves
//! only garbage for the next round or the orphan sweep, never a reference to a missing
//! object. Named fault points ([`fault_point`], `CIRRUS_FAULT_POINT=name` aborts the
//! process there) let tests kill the broker in the middle: `upload.before_commit` (an
//! object in the bucket that no index references: an orphan once the WAL replay uploads
//! its data again under the new incarnation), `gc.before_delete` (dead objects already
//! out of the index, not yet deleted: orphans after the restart, which forgets its dead
//! list) and `orphans.before_delete` (the next sweep deletes them).
//!
//! Ownership and bounds: retention only for partitions this broker serves; deletions
//! only of this writer's objects (dead) or of unreferenced ones (orphans); each
//! metadata call is bounded by a timeout; the loop stops with the broker's shutdown
//! signal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::Member;
use crate::groups::is_internal_topic;
use crate::log::{LogManager, now_ms};

/// Aborts the process at the named point if `CIRRUS_FAULT_POINT` names it (tests of
/// crash safety; never set in production).
pub fn fault_point(name: &str) {
    if std::env::var("CIRRUS_FAULT_POINT").is_ok_and(|v| v == name) {
        tracing::error!(point = name, "fault injection: aborting here");
        std::process::abort();
    }
}

/// What a topic's configs ask of retention; None when `cleanup.policy` has no `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Runs whose newest record is older than this go (None: kept forever).
    pub retention_ms: Option<i64>,
    /// The partition keeps at most this many bytes of runs (None: no limit).
    pub retention_bytes: Option<i64>,
}

impl RetentionPolicy {
    /// Kafka's defaults: 7 days, no size limit.
    pub fn from_configs(configs: &BTreeMap<String, String>) -> Option<RetentionPolicy> {
        let cleanup = configs
            .get("cleanup.policy")
            .map_or("delete", String::as_str);
        if !cleanup.split(',').any(|p| p.trim() == "delete") {
            return None;
        }
        let limit = |name: &str, default: i64| {
            let v = configs
                .get(name)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(default);
            (v >= 0).then_some(v)
        };
        Some(RetentionPolicy {
            retention_ms: limit("retention.ms", 7 * 24 * 3600 * 1000),
            retention_bytes: limit("retention.bytes", -1),
        })
    }
}

/// One committed run, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunView {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub bytes: u64,
}

/// Where retention moves the log start: past every run at the head that is older
/// than `retention_ms` or beyond the `retention_bytes` budget (counted from the newest
/// run), stopping at the first run kept; `committed_end` if every run goes. None if
/// nothing moves. `runs` are the live runs in offset order.
pub fn retention_start(
    runs: &[RunView],
    log_start: i64,
    committed_end: i64,
    now_ms: i64,
    policy: &RetentionPolicy,
) -> Option<i64> {
    let mut remaining: u64 = runs.iter().map(|r| r.bytes).sum();
    let mut start = log_start;
    for (i, run) in runs.iter().enumerate() {
        let too_old = policy
            .retention_ms
            .is_some_and(|ms| run.max_timestamp < now_ms.saturating_sub(ms));
        let too_big = policy
            .retention_bytes
            .is_some_and(|limit| remaining > limit as u64);
        if !(too_old || too_big) {
            break;
        }
        remaining -= run.bytes;
        start = runs
            .get(i + 1)
            .map_or(committed_end, |next| next.first_offset);
    }
    (start > log_start).then_some(start)
}

/// Applies retention to every partition this broker serves; returns how many moved.
pub async fn apply_retention(logs: &LogManager) -> usize {
    let now = now_ms();
    let mut moved = 0;
    for name in logs.topic_names() {
        if is_internal_topic(&name) {
            continue;
        }
        let Some(topic) = logs.get_topic(&name) else {
            continue;
        };
        let Some(policy) = RetentionPolicy::from_configs(&topic.configs) else {
            continue;
        };
        for p in &topic.partitions {
            let target = {
                let st = p.lock();
                if !st.owned || st.releasing || st.deleted {
                    continue;
                }
                let runs: Vec<RunView> = st
                    .live_runs()
                    .map(|r| RunView {
                        first_offset: r.first_offset,
                        last_offset: r.last_offset,
                        max_timestamp: r.max_timestamp,
                        bytes: r.length,
                    })
                    .collect();
                retention_start(&runs, st.log_start_offset, st.committed_end, now, &policy)
            };
            let Some(target) = target else {
                continue;
            };
            match logs.advance_log_start(p, target).await {
                Ok(_) => {
                    moved += 1;
                    logs.metrics.log_start_moves_retention.inc();
                }
                Err(e) => {
                    tracing::warn!(topic = %name, partition = p.index, error = %e, "retention could not move the log start; retrying next round")
                }
            }
        }
    }
    moved
}

/// What the orphan sweep saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketReport {
    pub data_objects: u64,
    pub data_bytes: u64,
    pub index_blobs: u64,
    pub index_bytes: u64,
    /// Unreferenced and older than the grace.
    pub orphan_objects: u64,
    pub orphan_bytes: u64,
    /// Unreferenced but younger than the grace (uploads in flight, dead objects in
    /// their grace period).
    pub unreferenced_young_objects: u64,
    pub unreferenced_young_bytes: u64,
    pub deleted_objects: u64,
    pub deleted_bytes: u64,
}

/// Lists the bucket and compares it with every writer's index; with `delete`, removes
/// the orphans (older than `grace`).
pub async fn sweep_orphans(
    logs: &LogManager,
    grace: Duration,
    delete: bool,
) -> anyhow::Result<BucketReport> {
    use object_store::path::Path;
    // List first, then read the index: see the module docs.
    let data = logs.storage.list(&Path::from("data")).await?;
    let blobs = logs.storage.list(&Path::from("index")).await?;
    let (referenced, referenced_blobs) = logs.referenced_keys().await?;
    let now = now_ms();
    let grace_ms = grace.as_millis() as i64;
    let mut report = BucketReport::default();
    let mut orphans = Vec::new();
    for (meta, is_blob) in data
        .iter()
        .map(|m| (m, false))
        .chain(blobs.iter().map(|m| (m, true)))
    {
        let key = meta.location.to_string();
        let size = meta.size;
        if is_blob {
            report.index_blobs += 1;
            report.index_bytes += size;
        } else {
            report.data_objects += 1;
            report.data_bytes += size;
        }
        let known = if is_blob {
            referenced_blobs.contains(&key)
        } else {
            referenced.contains(&key)
        };
        if known {
            continue;
        }
        if now - meta.last_modified.timestamp_millis() < grace_ms {
            report.unreferenced_young_objects += 1;
            report.unreferenced_young_bytes += size;
            continue;
        }
        report.orphan_objects += 1;
        report.orphan_bytes += size;
        orphans.push((meta.location.clone(), size));
    }
    logs.metrics
        .orphan_objects
        .set(report.orphan_objects as i64);
    logs.metrics.orphan_bytes.set(report.orphan_bytes as i64);
    if delete && !orphans.is_empty() {
        fault_point("orphans.before_delete");
        for (key, size) in orphans {
            match logs.storage.delete(&key).await {
                Ok(()) => {
                    report.deleted_objects += 1;
                    report.deleted_bytes += size;
                    logs.metrics.objects_deleted_orphan.inc();
                    logs.metrics.object_bytes_deleted_orphan.inc_by(size);
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "cannot delete an orphan; retrying next sweep")
                }
            }
        }
        tracing::info!(
            objects = report.deleted_objects,
            bytes = report.deleted_bytes,
            "deleted orphan objects"
        );
    }
    Ok(report)
}

/// The lifecycle loop; see the module docs. Runs until `shutdown` turns true.
pub async fn run(
    logs: Arc<LogManager>,
    member: Option<Arc<Member>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let settings = logs.settings.clone();
    let mut ticker = tokio::time::interval(settings.retention_check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_orphan_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let round = async {
            apply_retention(&logs).await;
            logs.collect_dead_objects();
            if let Err(e) = logs.delete_dead_objects(settings.object_delete_grace).await {
                tracing::warn!(error = %e, "deleting dead objects failed; retrying next round");
            }
            let sweeper = member
                .as_ref()
                .is_none_or(|m| m.is_controller.load(std::sync::atomic::Ordering::Acquire));
            if sweeper
                && !settings.orphan_gc_interval.is_zero()
                && last_orphan_sweep.elapsed() >= settings.orphan_gc_interval
            {
                last_orphan_sweep = tokio::time::Instant::now();
                if let Err(e) = sweep_orphans(&logs, settings.orphan_grace, true).await {
                    tracing::warn!(error = %e, "orphan sweep failed; retrying at the next interval");
                }
            }
        };
        tokio::select! {
            _ = round => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first: i64, last: i64, ts: i64, bytes: u64) -> RunView {
        RunView {
            first_offset: first,
            last_offset: last,
            max_timestamp: ts,
            bytes,
        }
    }

    #[test]
    fn policies_follow_the_topic_configs() {
        let c = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            RetentionPolicy::from_configs(&c(&[])),
            Some(RetentionPolicy {
                retention_ms: Some(604_800_000),
                retention_bytes: None
            })
        );
        assert_eq!(
            RetentionPolicy::from_configs(&c(&[
                ("retention.ms", "-1"),
                ("retention.bytes", "100")
            ])),
            Some(RetentionPolicy {
                retention_ms: None,
                retention_bytes: Some(100)
            })
        );
        assert_eq!(
            RetentionPolicy::from_configs(&c(&[("cleanup.policy", "compact")])),
            None
        );
        assert!(
            RetentionPolicy::from_configs(&c(&[("cleanup.policy", "compact,delete")])).is_some()
        );
    }

    #[test]
    fn retention_drops_whole_runs_from_the_head() {
        let runs = [
            run(0, 9, 1_000, 100),
            run(10, 19, 2_000, 100),
            run(20, 29, 3_000, 100),
        ];
        let by_time = |ms| RetentionPolicy {
            retention_ms: Some(ms),
            retention_bytes: None,
        };
        // now 3500, retention 2000: runs newer than 1500 stay.
        assert_eq!(
            retention_start(&runs, 0, 30, 3_500, &by_time(2_000)),
            Some(10)
        );
        assert_eq!(
            retention_start(&runs, 0, 30, 3_500, &by_time(100)),
            Some(30)
        );
        assert_eq!(retention_start(&runs, 0, 30, 3_500, &by_time(10_000)), None);
        // Already past the first run's start (DeleteRecords moved it mid-run).
        assert_eq!(
            retention_start(&runs[1..], 15, 30, 3_500, &by_time(1_000)),
            Some(20)
        );
        // Bytes: keep at most 150 of 300 → two runs go.
        let by_bytes = RetentionPolicy {
            retention_ms: None,
            retention_bytes: Some(150),
        };
        assert_eq!(retention_start(&runs, 0, 30, 0, &by_bytes), Some(20));
        let exact = RetentionPolicy {
            retention_ms: None,
            retention_bytes: Some(300),
        };
        assert_eq!(retention_start(&runs, 0, 30, 0, &exact), None);
        assert_eq!(retention_start(&[], 0, 0, 0, &by_bytes), None);
    }
}
