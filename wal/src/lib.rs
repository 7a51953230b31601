//! Cirrus's local write-ahead log.
//!
//! The broker appends produced data here, gets it durable on local disk
//! quickly, later uploads it to object storage and then [`Wal::trim`]s it. The
//! WAL knows nothing about Kafka: a record is an opaque payload plus a `u8`
//! kind, identified by a [`Lsn`] (log sequence number).
//!
//! # Files
//!
//! The WAL directory holds:
//!
//! * segment files `NNNNNNNNNNNNNNNNNNNN.wal`, named by the lsn of their first
//!   record (20 digits, zero-padded): a 32-byte header (magic, format version,
//!   first lsn, lsn of the previous segment's last record, CRC-32C) followed by
//!   record frames `u32 payload_len | u32 crc32c | u8 kind | u64 lsn |
//!   payload`. The exact layout is documented (and pinned by golden tests) in
//!   `src/format.rs`. A segment is rolled once it reaches
//!   [`WalOptions::segment_target_bytes`] (so it can exceed it by one batch's
//!   last record);
//! * `trim`: the persisted trim point (20 bytes, checksummed), written as
//!   `trim.tmp` and renamed over `trim`.
//!
//! Other files are ignored.
//!
//! # Durability
//!
//! [`Wal::append`] resolves only after the record's bytes were written and
//! `fdatasync`ed. A new segment's header and directory entry are synced before
//! any record goes into it. One writer thread does all segment IO: it drains
//! the bounded request queue into a batch, writes it, issues a single
//! `fdatasync` and then answers every request of the batch (group commit).
//!
//! If a write or sync fails, the WAL *fails closed*: that batch, everything
//! queued and every later append return (a clone of) that error, since a file
//! whose fsync failed cannot be trusted. Reopen the WAL to recover.
//!
//! # Trim persistence
//!
//! The trim point is kept in two ways:
//!
//! * segment files whose records are all trimmed are deleted (the active
//!   segment only once it has been rolled);
//! * the `trim` file records the exact lsn, so recovery filters out trimmed
//!   records still sitting in the remaining segments.
//!
//! The `trim` file is written without fsync, to keep [`Wal::trim`] cheap: after
//! a power loss it can be older than the last trim, in which case recovery
//! returns records that were already trimmed (at-least-once: the broker must
//! tolerate re-uploading them). It is never ahead of the data. Lsn uniqueness
//! never depends on it.
//!
//! # Recovery
//!
//! [`Wal::open`] reads the segments in lsn order. Within a segment, the first
//! frame that is short, claims a length beyond the file (or above
//! [`MAX_RECORD_PAYLOAD`]), fails its checksum or does not carry the next lsn
//! ends recovery: the segment is truncated just before it, every later
//! segment file is deleted, and the damage is reported as
//! [`Recovered::torn_tail`] (and logged with `tracing::warn!`).
//!
//! A segment header is synced before any frame is written after it, so the
//! only header damage a crash can cause is in the newest segment, with no
//! frame after it: a last segment that is at most a header long (or all
//! zeros) and does not decode is deleted and reported as a torn tail at
//! offset 0. Any other bad header, a header of an unknown format version
//! ([`WalError::UnsupportedVersion`]), or a segment that does not continue
//! the previous one (a missing or foreign file) is [`WalError::Corrupt`]:
//! recovery refuses to guess, and leaves the directory untouched. No file
//! content makes recovery panic.
//!
//! # Lsns
//!
//! Lsns start at 1 in a new WAL, increase by one per record and are never
//! reused, across trims and restarts. When recovery drops data whose records
//! may have been acknowledged (bytes after a damaged frame, later segment
//! files), it skips every lsn they could have carried (each frame is at least
//! 17 bytes, which bounds their number) and goes above the name of every
//! segment file it removes. It also never goes below the persisted trim
//! point. A crash-torn tail therefore may cost a few lsns; that
//! is harmless. When lsns are skipped, a new active segment starts above them
//! and its header's `prev_lsn` field records where the previous segment
//! really ends, so the gap is recognised as intentional at the next recovery.
//!
//! # Backpressure
//!
//! Outstanding bytes are the frame bytes (`17 + payload length` per record)
//! of records that were admitted by `append` (durable or still queued) and
//! not yet trimmed. `append` waits while they are at or above
//! [`WalOptions::max_outstanding_bytes`] (so a single record larger than the
//! limit is still admitted once everything else is trimmed). The request queue
//! itself is bounded too.

mod error;
mod format;
mod recovery;
mod segment;
mod wal;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use bytes::Bytes;

pub use error::WalError;
pub use format::MAX_RECORD_PAYLOAD;
pub use wal::{Submitted, Wal};

/// Options for [`Wal::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// Directory holding the WAL's files (created if missing).
    pub dir: PathBuf,
    /// Roll to a new segment file once the current one reaches this size. Default 64 MiB.
    pub segment_target_bytes: u64,
    /// Backpressure: `append` waits while appended-but-untrimmed bytes are >= this. Default 1 GiB.
    /// Must be > 0.
    pub max_outstanding_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            dir: PathBuf::from("wal"),
            segment_target_bytes: 64 << 20,
            max_outstanding_bytes: 1 << 30,
        }
    }
}

/// Log sequence number: assigned to each record in append order, starting at
/// 1 for a brand-new WAL and continuing after recovery (never reused, even
/// after trim + restart). `Lsn(0)` means "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Records not yet trimmed, in lsn order (lsns strictly increasing,
    /// consecutive).
    pub records: Vec<WalRecord>,
    /// Set if recovery cut off a torn or corrupt tail.
    pub torn_tail: Option<TornTail>,
}

/// One record read back by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload: Bytes,
}

/// Where and why recovery stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file the damage is in.
    pub segment: PathBuf,
    /// Offset of the first bad byte range (the file was truncated to this
    /// length; 0 means the segment's header was bad and the file was deleted).
    pub offset: u64,
    /// Human-readable reason.
    pub reason: String,
}

/// Counters reported by [`Wal::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalStats {
    /// Frame bytes admitted by `append` and not yet trimmed.
    pub outstanding_bytes: u64,
    /// Segment files on disk, the active one included.
    pub segments: usize,
    /// Highest durable lsn (0 if none). After a recovery that skipped lsns,
    /// the highest skipped one.
    pub last_lsn: Lsn,
    /// Everything at or below this lsn is trimmed.
    pub trimmed_through: Lsn,
    /// `fsync`/`fdatasync` calls issued by the writer since open (group
    /// commit makes this much smaller than the number of appends under load).
    pub fsyncs: u64,
}
