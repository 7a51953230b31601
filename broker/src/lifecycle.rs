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
//!    committed: a crash between PUT and commit, a fenced broker) are deleted at their
//!    second sighting, one sweep interval (at least the delete grace) later, so that an
//!    object another writer just dropped keeps its delete grace. The
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
use crate::uploader::RewriteRun;

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

/// Lists the bucket and compares it with every writer's index. With `suspects`, it
/// deletes the orphans (unreferenced, older than `grace`) that the previous sweep
/// already found unreferenced, and leaves the current orphans as the next sweep's
/// suspects. An object another writer just dropped from its index (dead, in its
/// delete grace) is old by its bucket timestamp but not yet an orphan: seeing it
/// unreferenced twice, a sweep interval (at least the delete grace) apart, keeps the
/// grace that in-flight reads rely on.
pub async fn sweep_orphans(
    logs: &LogManager,
    grace: Duration,
    suspects: Option<&mut std::collections::HashSet<String>>,
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
    let Some(suspects) = suspects else {
        return Ok(report);
    };
    let seen_now: std::collections::HashSet<String> =
        orphans.iter().map(|(key, _)| key.to_string()).collect();
    let previous = std::mem::replace(suspects, seen_now);
    orphans.retain(|(key, _)| previous.contains(key.as_ref()));
    if !orphans.is_empty() {
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

/// One committed run, as object compaction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionCandidate {
    pub first_offset: i64,
    pub last_offset: i64,
    pub bytes: u64,
    pub committed_ms: i64,
    pub leader_epoch: i32,
    /// In an object of this broker's writer (whose deletion this broker decides).
    pub own: bool,
}

/// Which runs to merge: maximal stretches of adjacent runs (contiguous offsets, same
/// leader epoch) that are this writer's, smaller than half the target and committed at
/// least `min_age_ms` ago, cut so that each merged run stays within `target` bytes.
/// Only stretches of two or more runs are worth a rewrite. `runs` are in offset order.
pub fn plan_compaction(
    runs: &[CompactionCandidate],
    now_ms: i64,
    min_age_ms: i64,
    target: u64,
) -> Vec<std::ops::Range<usize>> {
    let small = |r: &CompactionCandidate| {
        r.own && r.bytes < target / 2 && r.committed_ms <= now_ms.saturating_sub(min_age_ms)
    };
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    let close = |groups: &mut Vec<std::ops::Range<usize>>, start: usize, end: usize| {
        if end - start >= 2 {
            groups.push(start..end);
        }
    };
    for (i, run) in runs.iter().enumerate() {
        let joins = i > start
            && small(run)
            && runs[i - 1].last_offset + 1 == run.first_offset
            && runs[i - 1].leader_epoch == run.leader_epoch
            && bytes + run.bytes <= target;
        if joins {
            bytes += run.bytes;
            continue;
        }
        close(&mut groups, start, i);
        start = if small(run) { i } else { i + 1 };
        bytes = if small(run) { run.bytes } else { 0 };
    }
    close(&mut groups, start.min(runs.len()), runs.len());
    groups
}

/// What one round of object compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    pub objects: u64,
    pub runs_merged: u64,
    pub bytes: u64,
}

/// How long a rewrite may wait for its commit before the round gives up on it.
const REWRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Merges small runs of the partitions this broker serves into per-partition objects
/// (at most four target sizes per round: the backpressure on the bucket).
pub async fn compact_objects(logs: &LogManager) -> CompactionStats {
    let settings = &logs.settings;
    let target = settings.compaction_target_bytes;
    let own = logs.own_object_keys();
    let now = now_ms();
    let min_age = settings.compaction_min_age.as_millis() as i64;
    let mut budget = target.saturating_mul(4);
    let mut stats = CompactionStats::default();
    for name in logs.topic_names() {
        let Some(topic) = logs.get_topic(&name) else {
            continue;
        };
        if crate::topic_config::is_compacted(&topic.configs) {
            continue; // the log cleaner rewrites (and so merges) these
        }
        for p in &topic.partitions {
            let (runs, plan) = {
                let st = p.lock();
                if !st.owned || st.releasing || st.deleted {
                    continue;
                }
                let runs: Vec<crate::partition::RunLocation> = st.live_runs().cloned().collect();
                let candidates: Vec<CompactionCandidate> = runs
                    .iter()
                    .map(|r| CompactionCandidate {
                        first_offset: r.first_offset,
                        last_offset: r.last_offset,
                        bytes: r.length,
                        committed_ms: r.committed_ms,
                        leader_epoch: r.leader_epoch,
                        own: own.contains(r.key.as_ref().as_ref()),
                    })
                    .collect();
                let plan = plan_compaction(&candidates, now, min_age, target);
                (runs, plan)
            };
            for group in plan {
                let group = &runs[group];
                let bytes: u64 = group.iter().map(|r| r.length).sum();
                if bytes > budget {
                    return stats;
                }
                budget -= bytes;
                match rewrite_runs(logs, p, group).await {
                    Ok(true) => {
                        stats.objects += 1;
                        stats.runs_merged += group.len() as u64;
                        stats.bytes += bytes;
                        logs.metrics.compaction_objects.inc();
                        logs.metrics
                            .compaction_runs_merged
                            .inc_by(group.len() as u64);
                        logs.metrics.compaction_bytes.inc_by(bytes);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "object compaction failed; retrying next round")
                    }
                }
            }
        }
    }
    if stats.objects > 0 {
        tracing::info!(
            objects = stats.objects,
            runs = stats.runs_merged,
            bytes = stats.bytes,
            "object compaction merged runs"
        );
    }
    stats
}

/// Copies the batches of adjacent runs into one new object and commits it through the
/// upload pipeline; true once committed, false if it was dropped (ownership changed).
async fn rewrite_runs(
    logs: &LogManager,
    partition: &crate::partition::Partition,
    runs: &[crate::partition::RunLocation],
) -> Result<bool, String> {
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        return Ok(false);
    };
    let mut batches = Vec::new();
    let mut next = first.first_offset;
    for run in runs {
        let bytes = logs
            .storage
            .read_range(&run.key, run.position, run.length)
            .await
            .map_err(|e| e.to_string())?;
        let mut seen = 0u64;
        for (header, batch) in crate::batch::iter_batches(&bytes) {
            if header.base_offset != next {
                return Err(format!(
                    "{}: batch at offset {} where {next} was expected",
                    run.key, header.base_offset
                ));
            }
            next = header.last_offset() + 1;
            seen += batch.len() as u64;
            batches.push((header, batch));
        }
        if seen != run.length {
            return Err(format!("{}: the run does not hold whole batches", run.key));
        }
    }
    if next != last.last_offset + 1 {
        return Err(format!(
            "the runs end at {} but their batches at {}",
            last.last_offset,
            next - 1
        ));
    }
    let done = logs
        .uploader
        .submit_rewrite(RewriteRun {
            stream_id: partition.stream_id,
            leader_epoch: first.leader_epoch,
            original_headers: batches.iter().map(|(h, _)| *h).collect(),
            chunks: batches
                .into_iter()
                .map(|(h, b)| (h.base_offset, h.last_offset(), h.max_timestamp, b))
                .collect(),
            cleaned: runs.iter().all(|r| r.cleaned),
            tombstones_expire_ms: runs.iter().filter_map(|r| r.tombstones_expire_ms).min(),
            kind: "compaction",
        })
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(REWRITE_TIMEOUT, done).await {
        Ok(Ok(committed)) => Ok(committed),
        Ok(Err(_)) => Ok(false), // the pipeline stopped
        Err(_) => Err("the rewrite was not committed in time".to_string()),
    }
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
    let mut orphan_suspects = std::collections::HashSet::new();
    let mut last_compaction = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let round = async {
            apply_retention(&logs).await;
            if !settings.compaction_interval.is_zero()
                && last_compaction.elapsed() >= settings.compaction_interval
            {
                last_compaction = tokio::time::Instant::now();
                compact_objects(&logs).await;
                crate::cleaner::clean_logs(&logs).await;
            } else {
                logs.own_object_keys(); // keeps the index gauges current
            }
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
                let suspects = Some(&mut orphan_suspects);
                if let Err(e) = sweep_orphans(&logs, settings.orphan_grace, suspects).await {
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
    fn compaction_merges_small_old_adjacent_runs_of_this_writer() {
        let c = |first: i64, last: i64, bytes: u64, committed_ms: i64| CompactionCandidate {
            first_offset: first,
            last_offset: last,
            bytes,
            committed_ms,
            leader_epoch: 0,
            own: true,
        };
        let target = 1_000;
        // Four small old runs: one group.
        let runs = [
            c(0, 9, 100, 0),
            c(10, 19, 100, 0),
            c(20, 29, 100, 0),
            c(30, 39, 100, 0),
        ];
        assert_eq!(plan_compaction(&runs, 10_000, 1_000, target), vec![0..4]);
        // Too young: nothing.
        assert!(plan_compaction(&runs, 500, 1_000, target).is_empty());
        // A large run (>= target / 2), another writer's run, a new epoch, a gap and the
        // target size all cut the stretch; lone runs stay as they are.
        let mixed = [
            c(0, 9, 100, 0),
            c(10, 19, 100, 0),
            c(20, 29, 600, 0), // large
            c(30, 39, 100, 0),
            c(40, 49, 100, 0),
            CompactionCandidate {
                own: false,
                ..c(50, 59, 100, 0)
            },
            c(60, 69, 100, 0),
            CompactionCandidate {
                leader_epoch: 1,
                ..c(70, 79, 100, 0)
            },
            CompactionCandidate {
                leader_epoch: 1,
                ..c(80, 89, 100, 0)
            },
            c(95, 99, 100, 0), // gap before it
            c(100, 109, 100, 0),
            c(110, 119, 100, 9_500), // young
        ];
        assert_eq!(
            plan_compaction(&mixed, 10_000, 1_000, target),
            vec![0..2, 3..5, 7..9, 9..11]
        );
        // The target bounds a group: a third run of 300 would make 900 > 800.
        let three = [c(0, 9, 300, 0), c(10, 19, 300, 0), c(20, 29, 300, 0)];
        assert_eq!(plan_compaction(&three, 10_000, 0, 800), vec![0..2]);
        let four = [three[0], three[1], three[2], c(30, 39, 300, 0)];
        assert_eq!(plan_compaction(&four, 10_000, 0, 800), vec![0..2, 2..4]);
        assert!(plan_compaction(&[], 0, 0, 800).is_empty());
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
