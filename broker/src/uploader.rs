//! The uploader: collects what the WAL received from every partition into one open
//! object, seals it at `object_target_bytes` or `flush_interval` (whichever comes first),
//! puts it into the bucket and commits it with one metadata write.
//!
//! Ordering and trimming: every WAL record is pushed here (under its partition's lock,
//! so each partition's chunks arrive in offset order). Objects are uploaded concurrently
//! (at most [`MAX_UPLOADS_IN_FLIGHT`]) but committed strictly in seal order. The WAL is
//! trimmed through the highest LSN below which every LSN is committed, so a crash at
//! any point leaves every uncommitted record in the WAL.
//!
//! Rewrites (object compaction) go through the same pipeline: the sealer numbers them
//! in the same sequence as WAL objects, so commits stay in seq order (a checkpoint
//! through seq N never misses an object below N). They carry no LSN; the commit loop
//! re-checks ownership before committing one, and a handover waits for the rewrites in
//! flight ([`Uploader::rewrites_idle`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cirrus_controller::{ProducerRecord, RunRecord};
use cirrus_storage::{EncodedObject, ObjectBuilder, ObjectStorage};
use object_store::path::Path;
use tokio::sync::{Notify, mpsc, watch};

use crate::batch::BatchHeader;

/// Sealed objects being uploaded at once; more wait (and so, eventually, does produce).
pub const MAX_UPLOADS_IN_FLIGHT: usize = 4;

#[derive(Debug, Default)]
struct OpenObject {
    builder: ObjectBuilder,
    runs: HashMap<u64, RunExtra>,
    lsns: Vec<u64>,
    opened_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct RunExtra {
    leader_epoch: i32,
    /// The last batches (up to the idempotence window) of each producer in the run: a
    /// new owner rebuilds the whole window from them, so a client's retry of any batch
    /// still in flight during a handover is recognised as a duplicate.
    producers: HashMap<i64, VecDeque<ProducerRecord>>,
    /// Set by the log cleaner (see [`RunRecord::cleaned`]).
    cleaned: bool,
    tombstones_expire_ms: Option<i64>,
}

impl RunExtra {
    /// Remembers an idempotent producer's batch (the last few per producer).
    fn record(&mut self, header: &BatchHeader) {
        if !header.is_idempotent() {
            return;
        }
        let window = self.producers.entry(header.producer_id).or_default();
        if window
            .back()
            .is_some_and(|p| p.producer_epoch != header.producer_epoch)
        {
            window.clear();
        }
        window.push_back(ProducerRecord {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            last_offset: header.last_offset(),
            last_timestamp: header.max_timestamp,
        });
        while window.len() > crate::partition::PRODUCER_BATCH_WINDOW {
            window.pop_front();
        }
    }
}

/// A sealed object on its way to the bucket.
#[derive(Debug)]
pub struct SealedObject {
    pub seq: u64,
    pub key: Path,
    pub object: EncodedObject,
    runs: HashMap<u64, RunExtra>,
    pub lsns: Vec<u64>,
    /// Set for a rewrite: told whether it was committed.
    pub rewrite: Option<tokio::sync::oneshot::Sender<bool>>,
    /// What made the rewrite ("compaction", "cleaner"): names its fault points.
    pub rewrite_kind: &'static str,
}

/// One partition's committed data, rewritten into an object of its own: merged runs
/// (object compaction) or a cleaned log (log compaction).
#[derive(Debug)]
pub struct RewriteRun {
    pub stream_id: u64,
    pub leader_epoch: i32,
    /// The chunks in offset order, contiguous: (first offset, last offset, max
    /// timestamp, bytes). A cleaned chunk keeps its batch's offsets and may hold fewer
    /// records, or none (empty bytes).
    pub chunks: Vec<(i64, i64, i64, Bytes)>,
    /// Headers of the batches rewritten (before any cleaning): the idempotent
    /// producers' windows come from them, so no retry is mistaken for a new batch.
    pub original_headers: Vec<BatchHeader>,
    pub cleaned: bool,
    pub tombstones_expire_ms: Option<i64>,
    /// "compaction" or "cleaner".
    pub kind: &'static str,
}

/// A rewritten run waiting for the sealer to number it.
#[derive(Debug)]
struct PendingRewrite {
    object: EncodedObject,
    runs: HashMap<u64, RunExtra>,
    done: tokio::sync::oneshot::Sender<bool>,
    kind: &'static str,
}

/// Why a rewrite could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("the batches of a rewrite are not in offset order: {0}")]
    Order(String),
}

impl SealedObject {
    /// The metadata runs of this object, in footer order.
    pub fn run_records(&self) -> Vec<RunRecord> {
        self.object
            .index
            .iter()
            .map(|e| {
                let extra = self.runs.get(&e.stream_id);
                RunRecord {
                    stream_id: e.stream_id,
                    first_offset: e.first_offset,
                    last_offset: e.last_offset,
                    max_timestamp: e.max_timestamp,
                    position: e.position,
                    length: e.length,
                    leader_epoch: extra.map_or(0, |x| x.leader_epoch),
                    producers: extra
                        .map(|x| {
                            let mut all: Vec<ProducerRecord> =
                                x.producers.values().flatten().cloned().collect();
                            all.sort_by_key(|p| (p.producer_id, p.last_offset));
                            all
                        })
                        .unwrap_or_default(),
                    cleaned: extra.is_some_and(|x| x.cleaned),
                    tombstones_expire_ms: extra.and_then(|x| x.tombstones_expire_ms),
                }
            })
            .collect()
    }
}

/// Statistics for logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct UploaderStats {
    pub objects_committed: u64,
    pub bytes_committed: u64,
}

#[derive(Debug)]
pub struct Uploader {
    open: Mutex<OpenObject>,
    /// LSNs pushed but not yet committed, with when they were pushed.
    pending: Mutex<BTreeMap<u64, Instant>>,
    highest_pushed: Mutex<u64>,
    /// Seal the open object now, whatever its size (set by a partition handover).
    seal_requested: std::sync::atomic::AtomicBool,
    wake: Notify,
    committed_lsn: watch::Sender<u64>,
    target_bytes: u64,
    flush_interval: Duration,
    writer: String,
    next_seq: Mutex<u64>,
    stats: Mutex<UploaderStats>,
    rewrites: Mutex<VecDeque<PendingRewrite>>,
    /// Rewrites submitted and not yet committed or dropped.
    rewrites_in_flight: watch::Sender<usize>,
}

impl Uploader {
    pub fn new(target_bytes: u64, flush_interval: Duration, writer: String, next_seq: u64) -> Self {
        Uploader {
            open: Mutex::new(OpenObject::default()),
            pending: Mutex::new(BTreeMap::new()),
            highest_pushed: Mutex::new(0),
            seal_requested: std::sync::atomic::AtomicBool::new(false),
            wake: Notify::new(),
            committed_lsn: watch::channel(0).0,
            target_bytes,
            flush_interval,
            writer,
            next_seq: Mutex::new(next_seq),
            stats: Mutex::new(UploaderStats::default()),
            rewrites: Mutex::new(VecDeque::new()),
            rewrites_in_flight: watch::channel(0).0,
        }
    }

    /// Queues a rewrite of one partition's committed data into an object of its own.
    /// The receiver says whether the object was committed.
    pub fn submit_rewrite(
        &self,
        run: RewriteRun,
    ) -> Result<tokio::sync::oneshot::Receiver<bool>, RewriteError> {
        let mut builder = ObjectBuilder::new();
        for (first, last, max_timestamp, bytes) in run.chunks {
            builder
                .push(run.stream_id, first, last, max_timestamp, bytes)
                .map_err(|e| RewriteError::Order(e.to_string()))?;
        }
        let mut extra = RunExtra {
            leader_epoch: run.leader_epoch,
            cleaned: run.cleaned,
            tombstones_expire_ms: run.tombstones_expire_ms,
            ..RunExtra::default()
        };
        for header in &run.original_headers {
            extra.record(header);
        }
        let (done, rx) = tokio::sync::oneshot::channel();
        self.rewrites_in_flight.send_modify(|n| *n += 1);
        lock(&self.rewrites).push_back(PendingRewrite {
            object: builder.finish(),
            runs: HashMap::from([(run.stream_id, extra)]),
            done,
            kind: run.kind,
        });
        self.wake.notify_one();
        Ok(rx)
    }

    /// Reports a rewrite committed or dropped (by the commit loop).
    pub fn finish_rewrite(&self, sealed: &mut SealedObject, committed: bool) {
        if let Some(done) = sealed.rewrite.take() {
            let _ = done.send(committed);
            self.rewrites_in_flight
                .send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    /// Waits until no rewrite is in flight (a handover, so that none commits after it).
    pub async fn rewrites_idle(&self) {
        let mut rx = self.rewrites_in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Numbers the next queued rewrite.
    fn seal_rewrite(&self) -> Option<SealedObject> {
        let pending = lock(&self.rewrites).pop_front()?;
        let mut sealed = self.number(pending.object, pending.runs, Vec::new(), Some(pending.done));
        sealed.rewrite_kind = pending.kind;
        Some(sealed)
    }

    /// Adds one WAL record's batch to the open object. Call under the partition's lock.
    pub fn push(
        &self,
        lsn: u64,
        stream_id: u64,
        leader_epoch: i32,
        header: &BatchHeader,
        bytes: Bytes,
    ) {
        lock(&self.pending).insert(lsn, Instant::now());
        {
            let mut h = lock(&self.highest_pushed);
            *h = (*h).max(lsn);
        }
        let mut open = lock(&self.open);
        let was_empty = open.builder.is_empty();
        if let Err(e) = open.builder.push(
            stream_id,
            header.base_offset,
            header.last_offset(),
            header.max_timestamp,
            bytes,
        ) {
            // Cannot happen while the partition lock orders pushes; losing the chunk would
            // lose data, so stop rather than continue.
            tracing::error!(error = %e, stream_id, "object builder refused a chunk; aborting");
            std::process::abort();
        }
        open.lsns.push(lsn);
        let run = open.runs.entry(stream_id).or_default();
        run.leader_epoch = leader_epoch;
        run.record(header);
        if was_empty {
            open.opened_at = Some(Instant::now());
            self.wake.notify_one();
        } else if open.builder.encoded_len() >= self.target_bytes {
            self.wake.notify_one();
        }
    }

    /// Accounts for a recovered WAL record that needs no upload (already committed, or
    /// its topic is gone), so the WAL can be trimmed past it.
    pub fn push_skipped(&self, lsn: u64) {
        let mut h = lock(&self.highest_pushed);
        *h = (*h).max(lsn);
    }

    /// The LSN through which the WAL may be trimmed now.
    pub fn trim_point(&self) -> u64 {
        match lock(&self.pending).first_key_value() {
            Some((first, _)) => first - 1,
            None => *lock(&self.highest_pushed),
        }
    }

    /// Sets the seq of the next sealed object (after the index is read at start-up).
    pub fn set_next_seq(&self, seq: u64) {
        *lock(&self.next_seq) = seq;
    }

    /// The highest LSN pushed so far: once [`Uploader::wait_committed`] reaches it,
    /// everything pushed before this call is in the bucket.
    pub fn highest_pushed(&self) -> u64 {
        *lock(&self.highest_pushed)
    }

    /// Asks the sealer to seal the open object now (a handover waits for it).
    pub fn request_seal(&self) {
        self.seal_requested
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }

    /// The writer name in object keys.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Seals the open object if it is due (or if `force` and it is not empty).
    fn seal_if_due(&self, force: bool) -> Option<SealedObject> {
        let force = force
            || self
                .seal_requested
                .swap(false, std::sync::atomic::Ordering::AcqRel);
        let mut open = lock(&self.open);
        if open.builder.is_empty() {
            return None;
        }
        let full = open.builder.encoded_len() >= self.target_bytes;
        let old = open
            .opened_at
            .is_some_and(|t| t.elapsed() >= self.flush_interval);
        if !(force || full || old) {
            return None;
        }
        let taken = std::mem::take(&mut *open);
        drop(open);
        Some(self.number(taken.builder.finish(), taken.runs, taken.lsns, None))
    }

    /// Gives a sealed object the next seq of this writer, and its key.
    fn number(
        &self,
        object: EncodedObject,
        runs: HashMap<u64, RunExtra>,
        lsns: Vec<u64>,
        rewrite: Option<tokio::sync::oneshot::Sender<bool>>,
    ) -> SealedObject {
        let seq = {
            let mut s = lock(&self.next_seq);
            let seq = *s;
            *s += 1;
            seq
        };
        SealedObject {
            seq,
            key: ObjectStorage::data_object_key(&self.writer, seq),
            object,
            runs,
            lsns,
            rewrite,
            rewrite_kind: "",
        }
    }

    /// When the open object becomes due, if it is not empty.
    fn due_at(&self) -> Option<(Instant, bool)> {
        let open = lock(&self.open);
        let opened = open.opened_at?;
        Some((
            opened + self.flush_interval,
            open.builder.encoded_len() >= self.target_bytes,
        ))
    }

    /// Marks an object's records committed; returns the LSN through which the WAL may be trimmed.
    pub fn mark_committed(&self, sealed: &SealedObject) -> u64 {
        let mut pending = lock(&self.pending);
        for lsn in &sealed.lsns {
            pending.remove(lsn);
        }
        drop(pending);
        let through = self.trim_point();
        let mut stats = lock(&self.stats);
        stats.objects_committed += 1;
        stats.bytes_committed += sealed.object.size;
        drop(stats);
        self.committed_lsn.send_if_modified(|c| {
            if through > *c {
                *c = through;
                true
            } else {
                false
            }
        });
        through
    }

    /// Waits until every WAL record up to `lsn` is committed in the bucket.
    pub async fn wait_committed(&self, lsn: u64) -> bool {
        let mut rx = self.committed_lsn.subscribe();
        rx.wait_for(|c| *c >= lsn).await.is_ok()
    }

    /// How long the oldest record not yet committed has waited.
    pub fn oldest_pending_age(&self) -> Option<Duration> {
        lock(&self.pending)
            .first_key_value()
            .map(|(_, t)| t.elapsed())
    }

    /// True when nothing pushed is still waiting for a commit.
    pub fn is_drained(&self) -> bool {
        lock(&self.pending).is_empty()
    }

    pub fn stats(&self) -> UploaderStats {
        *lock(&self.stats)
    }

    /// The sealing loop: seals due objects and hands them to `sealed_tx` (bounded: when
    /// uploads fall behind, sealing waits). On shutdown, seals whatever is open and returns.
    pub async fn run_sealer(
        self: Arc<Self>,
        sealed_tx: mpsc::Sender<SealedObject>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            if let Some(sealed) = self.seal_rewrite() {
                if sealed_tx.send(sealed).await.is_err() {
                    return;
                }
                continue;
            }
            if let Some(sealed) = self.seal_if_due(false) {
                if sealed_tx.send(sealed).await.is_err() {
                    return;
                }
                continue;
            }
            match self.due_at() {
                Some((_, true)) => continue,
                Some((deadline, false)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline.into()) => {}
                        _ = self.wake.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
        // Queued rewrites are dropped (their data stays in the objects they copy).
        let dropped: Vec<PendingRewrite> = lock(&self.rewrites).drain(..).collect();
        for pending in dropped {
            let _ = pending.done.send(false);
            self.rewrites_in_flight
                .send_modify(|n| *n = n.saturating_sub(1));
        }
        // Final flush: everything pushed before shutdown goes into one last object.
        if let Some(sealed) = self.seal_if_due(true) {
            let _ = sealed_tx.send(sealed).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
