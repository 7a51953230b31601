//! One partition's log as its owner sees it: offsets, the in-memory tail, the index of
//! committed object runs, idempotent-producer state and the leader-epoch history.
//!
//! Invariants (all under the partition's mutex):
//! - `log_start_offset <= high_watermark <= next_offset`; offsets in `[committed_end,
//!   next_offset)` live only in the tail (and the WAL); offsets below `committed_end`
//!   live in object runs (and possibly still in the tail, until evicted).
//! - Tail batches and runs are in offset order and contiguous. A rewritten run (object
//!   compaction) replaces the runs within its offsets; a run within another is dropped.
//! - The high watermark only moves forward and always sits on a batch boundary.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;

use crate::batch::BatchHeader;
use crate::config::Durability;
use crate::error::{BrokerError, Result};

/// How many recent batches per producer are remembered to acknowledge retried
/// duplicates, as Kafka does (max.in.flight.requests.per.connection <= 5).
pub(crate) const PRODUCER_BATCH_WINDOW: usize = 5;

/// A committed run of this partition inside a data object.
#[derive(Debug, Clone)]
pub struct RunLocation {
    pub key: Arc<Path>,
    pub position: u64,
    pub length: u64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Leader epoch the run's batches were written under.
    pub leader_epoch: i32,
    /// When the object holding the run was committed (ms since the Unix epoch).
    pub committed_ms: i64,
    /// Written by the log cleaner (may have gaps), and when a tombstone it kept expires.
    pub cleaned: bool,
    pub tombstones_expire_ms: Option<i64>,
}

impl RunLocation {
    /// Whether this run's offsets lie within `other`'s.
    pub fn within(&self, other: &RunLocation) -> bool {
        other.first_offset <= self.first_offset && self.last_offset <= other.last_offset
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TailBatch {
    pub(crate) base_offset: i64,
    pub(crate) last_offset: i64,
    pub(crate) bytes: Bytes,
    pub(crate) committed: bool,
}

/// Metadata of one recent batch of an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub last_offset: i64,
    pub timestamp: i64,
}

#[derive(Debug, Clone)]
pub struct ProducerState {
    pub epoch: i16,
    pub batches: VecDeque<ProducerBatch>,
}

/// Outcome of the idempotence check for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Fresh,
    /// A retry of a batch already appended; acknowledge with its offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// What a fetch found, decided under the lock.
#[derive(Debug)]
pub enum ReadPlan {
    /// Nothing to return yet (fetch offset == high watermark).
    Empty,
    /// Batches from the in-memory tail.
    Tail(Vec<Bytes>),
    /// The run to read from the bucket, and the limit to stop at.
    Object(RunLocation),
}

#[derive(Debug)]
pub struct PartitionState {
    pub leader_epoch: i32,
    pub log_start_offset: i64,
    pub next_offset: i64,
    pub high_watermark: i64,
    /// End (exclusive) of what is committed in object runs.
    pub committed_end: i64,
    pub durability: Durability,
    pub max_message_bytes: usize,
    pub(crate) tail: VecDeque<TailBatch>,
    tail_bytes: u64,
    pub(crate) runs: BTreeMap<i64, RunLocation>,
    pub producers: HashMap<i64, ProducerState>,
    /// (epoch, start offset) in increasing order.
    pub epochs: Vec<(i32, i64)>,
    pub deleted: bool,
    /// This broker serves the partition (single node: always; cluster: while it owns it
    /// and has loaded its state). Everything above is meaningless while false.
    pub owned: bool,
    /// Handing over to another broker: reads still served, writes refused.
    pub releasing: bool,
}

/// One partition's log.
#[derive(Debug)]
pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: uuid::Uuid,
    pub index: i32,
    pub stream_id: u64,
    pub state: std::sync::Mutex<PartitionState>,
    /// This topic's per-topic metric series, resolved once so the hot path does no
    /// label lookups.
    pub counters: crate::metrics::TopicCounters,
    /// Produce bytes appended here, for the per-partition rates balancing uses.
    pub bytes_in: std::sync::atomic::AtomicU64,
}

impl Partition {
    #[allow(clippy::too_many_arguments)] // plain data, all needed, named at the one call site
    pub fn new(
        topic: Arc<str>,
        topic_id: uuid::Uuid,
        index: i32,
        stream_id: u64,
        leader_epoch: i32,
        log_start_offset: i64,
        durability: Durability,
        max_message_bytes: usize,
    ) -> Self {
        Partition {
            topic,
            topic_id,
            index,
            stream_id,
            state: std::sync::Mutex::new(PartitionState::fresh(
                leader_epoch,
                log_start_offset,
                durability,
                max_message_bytes,
            )),
            counters: crate::metrics::TopicCounters::default(),
            bytes_in: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Locks the state. A poisoned lock means a panic mid-update; the state may be torn,
    /// so the process cannot continue safely.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, PartitionState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(_) => {
                tracing::error!(topic = %self.topic, partition = self.index, "partition state poisoned; aborting");
                std::process::abort();
            }
        }
    }
}

impl Partition {
    /// Attaches the topic's registered metric series.
    pub fn with_counters(mut self, counters: crate::metrics::TopicCounters) -> Self {
        self.counters = counters;
        self
    }
}

impl PartitionState {
    /// An empty, owned log starting at `log_start_offset`.
    pub fn fresh(
        leader_epoch: i32,
        log_start_offset: i64,
        durability: Durability,
        max_message_bytes: usize,
    ) -> Self {
        PartitionState {
            leader_epoch,
            log_start_offset,
            next_offset: log_start_offset,
            high_watermark: log_start_offset,
            committed_end: log_start_offset,
            durability,
            max_message_bytes,
            tail: VecDeque::new(),
            tail_bytes: 0,
            runs: BTreeMap::new(),
            producers: HashMap::new(),
            epochs: vec![(leader_epoch, log_start_offset)],
            deleted: false,
            owned: true,
            releasing: false,
        }
    }

    /// Refuses requests for a partition another broker owns (the client refreshes its
    /// metadata and goes there), then checks a client-supplied leader epoch (-1 means
    /// "don't check").
    pub fn check_epoch(&self, requested: i32) -> Result<()> {
        if self.deleted {
            return Err(BrokerError::UnknownTopicOrPartition);
        }
        if !self.owned {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        if requested < 0 || requested == self.leader_epoch {
            Ok(())
        } else if requested < self.leader_epoch {
            Err(BrokerError::FencedLeaderEpoch {
                requested,
                current: self.leader_epoch,
            })
        } else {
            Err(BrokerError::UnknownLeaderEpoch {
                requested,
                current: self.leader_epoch,
            })
        }
    }

    /// Kafka's idempotence rules for one batch (does not change state).
    pub fn check_sequence(&self, h: &BatchHeader) -> Result<SequenceCheck> {
        if !h.is_idempotent() {
            return Ok(SequenceCheck::Fresh);
        }
        let Some(p) = self.producers.get(&h.producer_id) else {
            // Unknown producer here (new, or its state expired): accept, as Kafka does.
            return Ok(SequenceCheck::Fresh);
        };
        if h.producer_epoch < p.epoch {
            return Err(BrokerError::InvalidProducerEpoch {
                got: h.producer_epoch,
                current: p.epoch,
            });
        }
        if h.producer_epoch > p.epoch {
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Fresh)
            } else {
                Err(BrokerError::OutOfOrderSequence {
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last_seq = h.last_sequence();
        if let Some(dup) = p
            .batches
            .iter()
            .find(|b| b.first_sequence == h.base_sequence && b.last_sequence == last_seq)
        {
            let count = i64::from(h.last_offset_delta);
            return Ok(SequenceCheck::Duplicate {
                base_offset: dup.last_offset - count,
                last_offset: dup.last_offset,
            });
        }
        let expected = match p.batches.back() {
            Some(b) if b.last_sequence == i32::MAX => 0,
            Some(b) => b.last_sequence + 1,
            None => h.base_sequence,
        };
        if h.base_sequence == expected {
            Ok(SequenceCheck::Fresh)
        } else {
            Err(BrokerError::OutOfOrderSequence {
                expected,
                got: h.base_sequence,
            })
        }
    }

    /// Records an appended idempotent batch. Idempotent: a batch at or below the last
    /// one recorded (e.g. replayed from committed metadata) changes nothing.
    pub fn record_producer_batch(&mut self, producer_id: i64, epoch: i16, batch: ProducerBatch) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerState {
                epoch,
                batches: VecDeque::new(),
            });
        if epoch < entry.epoch {
            return; // an older epoch's batch (replayed metadata): the newer state wins
        }
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry
            .batches
            .back()
            .is_some_and(|b| b.last_offset >= batch.last_offset)
        {
            return; // already known: state only moves forward
        }
        entry.batches.push_back(batch);
        while entry.batches.len() > PRODUCER_BATCH_WINDOW {
            entry.batches.pop_front();
        }
    }

    /// Appends an offset-assigned batch to the tail (not yet durable, not yet visible).
    pub fn push_tail(&mut self, header: &BatchHeader, bytes: Bytes) {
        let last = header.last_offset();
        self.tail_bytes += bytes.len() as u64;
        self.tail.push_back(TailBatch {
            base_offset: header.base_offset,
            last_offset: last,
            bytes,
            committed: false,
        });
        self.next_offset = last + 1;
    }

    /// Makes offsets below `end` visible to consumers. Returns true if it moved.
    pub fn advance_high_watermark(&mut self, end: i64) -> bool {
        let end = end.min(self.next_offset);
        if end > self.high_watermark {
            self.high_watermark = end;
            true
        } else {
            false
        }
    }

    /// Adds a committed run to the index; marks the tail batches it covers as committed.
    /// A run below `committed_end` is a rewrite of committed data (object compaction):
    /// it replaces the runs within its offsets (the newer copy wins an exact tie, as in
    /// dead-object collection), unless a larger run already covers it (an older copy).
    pub fn add_run(&mut self, run: RunLocation) {
        if run.last_offset < self.committed_end {
            let same_range = |r: &RunLocation| {
                r.first_offset == run.first_offset && r.last_offset == run.last_offset
            };
            let partial = |r: &RunLocation| {
                r.first_offset <= run.last_offset
                    && run.first_offset <= r.last_offset
                    && !r.within(&run)
                    && !run.within(r)
            };
            // Partial overlaps are never written (rewrites merge whole runs): keep what is known.
            if self
                .runs
                .values()
                .any(|r| (run.within(r) && !same_range(r)) || partial(r))
            {
                return;
            }
            self.runs.retain(|_, r| !r.within(&run));
            if run.cleaned {
                // The tail still holds what the cleaning removed: serve these offsets
                // from the cleaned run from now on (the tail must stay a suffix).
                self.drop_committed_tail_through(run.last_offset);
            }
            self.runs.insert(run.first_offset, run);
            return;
        }
        self.committed_end = run.last_offset + 1;
        for b in self.tail.iter_mut() {
            if b.last_offset <= run.last_offset {
                b.committed = true;
            }
        }
        if self.next_offset < self.committed_end {
            // Recovery from metadata: offsets come from the committed runs.
            self.next_offset = self.committed_end;
            self.high_watermark = self.committed_end;
        }
        self.runs.insert(run.first_offset, run);
    }

    /// Raises the log start offset to `offset` (no-op at or below it) and forgets what
    /// lies wholly below it: runs, and committed tail batches (uncommitted ones stay
    /// until their object is committed; reads never return them). The caller keeps
    /// `offset <= high_watermark` for a partition it serves.
    pub fn truncate_before(&mut self, offset: i64) -> bool {
        if offset <= self.log_start_offset {
            return false;
        }
        self.log_start_offset = offset;
        self.forget_below_log_start();
        true
    }

    /// Forgets runs and committed tail batches that end below the log start offset.
    pub fn forget_below_log_start(&mut self) {
        let start = self.log_start_offset;
        self.runs.retain(|_, r| r.last_offset >= start);
        while let Some(b) = self.tail.front() {
            if !(b.committed && b.last_offset < start) {
                break;
            }
            self.tail_bytes -= b.bytes.len() as u64;
            self.tail.pop_front();
        }
    }

    /// The committed runs still (partly) at or above the log start, in offset order.
    pub fn live_runs(&self) -> impl Iterator<Item = &RunLocation> {
        let start = self.log_start_offset;
        self.runs.values().filter(move |r| r.last_offset >= start)
    }

    /// Drops committed batches from the head of the tail up to the one holding `offset`.
    fn drop_committed_tail_through(&mut self, offset: i64) {
        while let Some(b) = self.tail.front() {
            if !(b.committed && b.base_offset <= offset) {
                break;
            }
            self.tail_bytes -= b.bytes.len() as u64;
            self.tail.pop_front();
        }
    }

    /// Drops committed batches from the head of the tail until it holds at most `budget` bytes.
    pub fn evict_tail(&mut self, budget: u64) {
        while self.tail_bytes > budget {
            match self.tail.front() {
                Some(b) if b.committed => {
                    self.tail_bytes -= b.bytes.len() as u64;
                    self.tail.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Decides where a fetch at `offset` reads from. `max_bytes` bounds what the tail
    /// returns (at least one batch is always returned, as Kafka does).
    pub fn plan_read(&self, offset: i64, max_bytes: usize) -> Result<ReadPlan> {
        if offset < self.log_start_offset || offset > self.high_watermark {
            return Err(BrokerError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: self.high_watermark,
            });
        }
        if offset == self.high_watermark {
            return Ok(ReadPlan::Empty);
        }
        if let Some(front) = self.tail.front()
            && front.base_offset <= offset
        {
            let mut out = Vec::new();
            let mut size = 0usize;
            for b in self.tail.iter() {
                if b.last_offset < offset {
                    continue;
                }
                if b.base_offset >= self.high_watermark {
                    break;
                }
                if !out.is_empty() && size + b.bytes.len() > max_bytes {
                    break;
                }
                size += b.bytes.len();
                out.push(b.bytes.clone());
            }
            return Ok(ReadPlan::Tail(out));
        }
        match self.runs.range(..=offset).next_back() {
            Some((_, run)) if run.last_offset >= offset => Ok(ReadPlan::Object(run.clone())),
            // The offset lies in a gap (below the first run after retention, or a hole):
            // serve the next run that exists.
            _ => match self.runs.range(offset..).next() {
                Some((_, run)) => Ok(ReadPlan::Object(run.clone())),
                None => Ok(ReadPlan::Empty),
            },
        }
    }

    /// The leader epoch history answer of OffsetForLeaderEpoch: (epoch, end offset).
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        if requested > self.leader_epoch {
            return (-1, -1);
        }
        let mut answer = (-1, -1);
        for (i, (epoch, start)) in self.epochs.iter().enumerate() {
            if *epoch > requested {
                break;
            }
            let end = self
                .epochs
                .get(i + 1)
                .map_or(self.next_offset, |(_, next_start)| *next_start);
            answer = (*epoch, end.max(*start));
        }
        answer
    }

    /// The first committed run (in offset order) that may hold a record with timestamp
    /// >= `ts`: its max timestamp is the time index. Callers then look in the tail.
    pub fn first_run_at_or_after_time(&self, ts: i64) -> Option<RunLocation> {
        self.runs
            .values()
            .find(|r| r.max_timestamp >= ts && r.last_offset >= self.log_start_offset)
            .cloned()
    }

    pub fn tail_batches_from(&self, offset: i64) -> Vec<Bytes> {
        self.tail
            .iter()
            .filter(|b| b.last_offset >= offset && b.base_offset < self.high_watermark)
            .map(|b| b.bytes.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::make_batch;
    use crate::batch::{BatchHeader, assign};

    fn partition() -> Partition {
        Partition::new(
            Arc::from("t"),
            uuid::Uuid::nil(),
            0,
            1,
            0,
            0,
            Durability::Local,
            1 << 20,
        )
    }

    fn append(st: &mut PartitionState, b: &Bytes) -> BatchHeader {
        let assigned = assign(b, st.next_offset, st.leader_epoch);
        let h = BatchHeader::parse(&assigned).unwrap();
        if h.is_idempotent() {
            st.record_producer_batch(
                h.producer_id,
                h.producer_epoch,
                ProducerBatch {
                    first_sequence: h.base_sequence,
                    last_sequence: h.last_sequence(),
                    last_offset: h.last_offset(),
                    timestamp: h.max_timestamp,
                },
            );
        }
        st.push_tail(&h, assigned);
        h
    }

    fn run_at(first: i64, last: i64) -> RunLocation {
        RunLocation {
            key: Arc::new(Path::from("data/x")),
            position: 0,
            length: 10,
            first_offset: first,
            last_offset: last,
            max_timestamp: last,
            leader_epoch: 0,
            committed_ms: 0,
            cleaned: false,
            tombstones_expire_ms: None,
        }
    }

    #[test]
    fn a_cleaned_run_takes_over_from_the_tail() {
        let p = partition();
        let mut st = p.lock();
        for _ in 0..3 {
            append(&mut st, &make_batch(2, -1, -1, 1));
        }
        st.advance_high_watermark(6);
        st.add_run(run_at(0, 3));
        assert!(matches!(
            st.plan_read(0, 1 << 20).unwrap(),
            ReadPlan::Tail(_)
        ));
        st.add_run(RunLocation {
            cleaned: true,
            key: Arc::new(Path::from("data/clean")),
            ..run_at(0, 3)
        });
        match st.plan_read(0, 1 << 20).unwrap() {
            ReadPlan::Object(r) => assert_eq!(r.key.to_string(), "data/clean"),
            other => panic!("{other:?}"),
        }
        // The uncommitted batch stays in the tail.
        assert!(matches!(st.plan_read(4, 1 << 20).unwrap(), ReadPlan::Tail(b) if b.len() == 1));
    }

    #[test]
    fn rewritten_runs_replace_the_runs_within_them() {
        let p = partition();
        let mut st = p.lock();
        for (first, last) in [(0, 9), (10, 19), (20, 29), (30, 39)] {
            st.add_run(run_at(first, last));
        }
        let keys = |st: &PartitionState| -> Vec<(i64, i64, String)> {
            st.runs
                .values()
                .map(|r| (r.first_offset, r.last_offset, r.key.to_string()))
                .collect()
        };
        let merged = |first, last, key: &str| RunLocation {
            key: Arc::new(Path::from(key)),
            ..run_at(first, last)
        };
        st.add_run(merged(10, 29, "data/m1"));
        assert_eq!(
            keys(&st),
            [
                (0, 9, "data/x".to_string()),
                (10, 29, "data/m1".to_string()),
                (30, 39, "data/x".to_string())
            ]
        );
        assert_eq!(
            st.committed_end, 40,
            "a rewrite never moves the committed end"
        );
        // An older copy inside a known run is ignored; an exact tie goes to the newer.
        st.add_run(merged(10, 19, "data/old"));
        assert_eq!(keys(&st)[1], (10, 29, "data/m1".to_string()));
        st.add_run(merged(10, 29, "data/again"));
        assert_eq!(keys(&st)[1], (10, 29, "data/again".to_string()));
        // A larger rewrite swallows the earlier one.
        st.add_run(merged(0, 39, "data/m2"));
        assert_eq!(keys(&st), [(0, 39, "data/m2".to_string())]);
        match st.plan_read(25, 1 << 20).unwrap() {
            ReadPlan::Object(r) => assert_eq!(r.key.to_string(), "data/m2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncate_before_forgets_what_lies_below_the_log_start() {
        let p = partition();
        let mut st = p.lock();
        for _ in 0..3 {
            append(&mut st, &make_batch(2, -1, -1, 0)); // offsets 0-1, 2-3, 4-5
        }
        st.advance_high_watermark(6);
        st.add_run(run_at(0, 1));
        st.add_run(run_at(2, 3));
        assert!(st.truncate_before(3));
        assert_eq!(st.log_start_offset, 3);
        // The run 0-1 is gone, 2-3 holds offset 3; committed tail 0-1 is gone, the
        // uncommitted 4-5 stays.
        assert_eq!(st.runs.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(st.live_runs().count(), 1);
        let tail: Vec<i64> = st.tail.iter().map(|b| b.base_offset).collect();
        assert_eq!(tail, vec![2, 4]);
        assert!(matches!(
            st.plan_read(2, 1 << 20),
            Err(BrokerError::OffsetOutOfRange { .. })
        ));
        assert!(!st.truncate_before(1), "never moves back");
        assert_eq!(st.log_start_offset, 3);
        assert!(st.truncate_before(6));
        assert!(st.runs.is_empty());
        assert!(matches!(st.plan_read(6, 1 << 20), Ok(ReadPlan::Empty)));
    }

    #[test]
    fn idempotent_sequences_follow_kafka_rules() {
        let p = partition();
        let mut st = p.lock();
        let b0 = make_batch(3, 7, 0, 1);
        let h0 = BatchHeader::parse(&b0).unwrap();
        assert_eq!(st.check_sequence(&h0).unwrap(), SequenceCheck::Fresh);
        append(&mut st, &b0);
        // The same batch again is a duplicate with its original offsets.
        assert_eq!(
            st.check_sequence(&h0).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: 0,
                last_offset: 2
            }
        );
        // A gap is refused.
        let gap = BatchHeader::parse(&make_batch(1, 7, 5, 1)).unwrap();
        assert!(matches!(
            st.check_sequence(&gap),
            Err(BrokerError::OutOfOrderSequence {
                expected: 3,
                got: 5
            })
        ));
        // The next batch in order is fresh.
        let next = BatchHeader::parse(&make_batch(1, 7, 3, 1)).unwrap();
        assert_eq!(st.check_sequence(&next).unwrap(), SequenceCheck::Fresh);
    }

    #[test]
    fn replayed_older_producer_batches_do_not_rewind_the_sequence() {
        let p = partition();
        let mut st = p.lock();
        append(&mut st, &make_batch(3, 7, 0, 1));
        append(&mut st, &make_batch(2, 7, 3, 1));
        // An object holding only the first batch commits after the second was appended.
        st.record_producer_batch(
            7,
            0,
            ProducerBatch {
                first_sequence: 0,
                last_sequence: 2,
                last_offset: 2,
                timestamp: 1,
            },
        );
        let next = BatchHeader::parse(&make_batch(1, 7, 5, 1)).unwrap();
        assert_eq!(st.check_sequence(&next).unwrap(), SequenceCheck::Fresh);
    }

    #[test]
    fn reads_respect_the_high_watermark_and_start_mid_batch() {
        let p = partition();
        let mut st = p.lock();
        append(&mut st, &make_batch(3, -1, -1, 1));
        append(&mut st, &make_batch(2, -1, -1, 2));
        assert!(matches!(st.plan_read(0, 1 << 20).unwrap(), ReadPlan::Empty));
        st.advance_high_watermark(3);
        match st.plan_read(1, 1 << 20).unwrap() {
            ReadPlan::Tail(b) => assert_eq!(b.len(), 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            st.plan_read(4, 1 << 20),
            Err(BrokerError::OffsetOutOfRange { .. })
        ));
        st.advance_high_watermark(5);
        match st.plan_read(1, 1).unwrap() {
            // At least one batch even when it exceeds max_bytes.
            ReadPlan::Tail(b) => assert_eq!(b.len(), 1),
            other => panic!("{other:?}"),
        }
        match st.plan_read(3, 1 << 20).unwrap() {
            ReadPlan::Tail(b) => assert_eq!(b.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn committed_tail_is_evicted_and_served_from_runs() {
        let p = partition();
        let mut st = p.lock();
        append(&mut st, &make_batch(3, -1, -1, 1));
        st.advance_high_watermark(3);
        st.evict_tail(0);
        assert_eq!(st.tail.len(), 1, "uncommitted data is never evicted");
        st.add_run(RunLocation {
            key: Arc::new(Path::from("k")),
            position: 0,
            length: 10,
            first_offset: 0,
            last_offset: 2,
            leader_epoch: 0,
            committed_ms: 0,
            cleaned: false,
            tombstones_expire_ms: None,
            max_timestamp: 1,
        });
        st.evict_tail(0);
        assert!(st.tail.is_empty());
        assert!(
            matches!(st.plan_read(1, 100).unwrap(), ReadPlan::Object(r) if r.first_offset == 0)
        );
        assert_eq!(st.end_offset_for_epoch(0), (0, 3));
        assert_eq!(st.end_offset_for_epoch(5), (-1, -1));
    }
}
