//! Recovery: scan the segment files, repair a torn tail, pick the active
//! segment and the next lsn.
//!
//! Recovery first decides everything from the files as they are and only then
//! changes the disk, so an error ([`WalError::Corrupt`],
//! [`WalError::UnsupportedVersion`]) leaves the directory untouched.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::error::{WalError, io_err};
use crate::format::{self, Decoded, HeaderError};
use crate::segment::{self, SegmentMeta};
use crate::{Lsn, TornTail, WalRecord};

/// The active segment the writer continues with.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub(crate) file: File,
    /// Current length in bytes (header + frames).
    pub(crate) len: u64,
    /// Number of records in it.
    pub(crate) records: u64,
}

#[derive(Debug)]
pub(crate) struct Recovery {
    /// Records with lsn > `trimmed_through`, in lsn order.
    pub(crate) records: Vec<WalRecord>,
    pub(crate) torn_tail: Option<TornTail>,
    /// Segments on disk, oldest first; the last one is `active`.
    pub(crate) segments: Vec<SegmentMeta>,
    pub(crate) active: ActiveSegment,
    /// Lsn the next append gets.
    pub(crate) next_lsn: u64,
    pub(crate) trimmed_through: u64,
}

/// What the scan found for one kept segment.
struct Kept {
    meta: SegmentMeta,
    valid_len: u64,
    records: u64,
    /// Lsn the next record of this segment would have to carry.
    next_lsn: u64,
}

pub(crate) fn recover(dir: &Path) -> Result<Recovery, WalError> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let tmp = dir.join(format::TRIM_TMP_FILE);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(WalError::io("remove", &tmp, e)),
    }
    let persisted_trim = segment::read_trim_file(dir)?;
    let mut listed = segment::list_segments(dir)?;
    // Every lsn named by a segment file was assigned at some point: never hand
    // it out again, even if that file's records are lost below.
    let mut lsn_floor = listed.last().map_or(0, |(lsn, _)| *lsn);

    // Segments whose successor starts at or below the trim point hold only
    // trimmed records (a crash hit between trim and unlink). Drop them unread.
    let mut remove: Vec<PathBuf> = Vec::new();
    while listed.len() >= 2 && listed[1].0 - 1 <= persisted_trim {
        let (_, path) = listed.remove(0);
        remove.push(path);
    }

    let mut records: Vec<WalRecord> = Vec::new();
    let mut kept: Vec<Kept> = Vec::new();
    let mut torn: Option<TornTail> = None;
    let mut truncate: Option<(PathBuf, u64)> = None;
    // Lsn of the last record seen so far (or the first kept segment's prev_lsn).
    let mut last_seen: Option<u64> = None;
    let count = listed.len();
    for (i, (name_lsn, path)) in listed.into_iter().enumerate() {
        if torn.is_some() {
            // Everything after a torn tail goes. Its records may have been
            // acknowledged: never reuse their lsns. Each frame takes at least
            // FRAME_HEADER_LEN bytes, which bounds how many there were.
            let size = fs::metadata(&path).map_err(io_err("stat", &path))?.len();
            lsn_floor = lsn_floor.max(removed_floor(name_lsn, size));
            remove.push(path);
            continue;
        }
        let is_last = i + 1 == count;
        let data = fs::read(&path).map_err(io_err("read", &path))?;
        let header = match format::decode_segment_header(&data) {
            Ok(h) if h.first_lsn == name_lsn => Ok(h),
            Ok(h) => Err(format!(
                "segment header says first lsn {} but the file name says {name_lsn}",
                h.first_lsn
            )),
            Err(HeaderError::Unsupported { version, flags }) => {
                return Err(WalError::UnsupportedVersion {
                    path,
                    version,
                    flags,
                });
            }
            Err(HeaderError::Invalid(reason)) => Err(reason),
        };
        let header = match header {
            Ok(h) => h,
            // A crash while creating the newest segment leaves at most a
            // partial header (or zeros): it never held a durable record, so
            // drop the file. The header is synced before any frame is
            // written, so a bad header followed by data is damage, not a
            // crash: refuse (below) rather than delete acknowledged records.
            Err(reason)
                if is_last
                    && (data.len() <= format::SEGMENT_HEADER_LEN
                        || data.iter().all(|&b| b == 0)) =>
            {
                lsn_floor = lsn_floor.max(removed_floor(name_lsn, data.len() as u64));
                torn = Some(TornTail {
                    segment: path.clone(),
                    offset: 0,
                    reason,
                });
                remove.push(path);
                continue;
            }
            Err(reason) => {
                return Err(WalError::Corrupt {
                    path,
                    offset: 0,
                    reason,
                });
            }
        };
        if let Some(prev) = last_seen
            && header.prev_lsn != prev
        {
            return Err(WalError::Corrupt {
                path,
                offset: 0,
                reason: format!(
                    "segment continues after lsn {} but the previous segment ends at lsn {prev} \
                     (a segment file is missing or foreign)",
                    header.prev_lsn
                ),
            });
        }

        let data = Bytes::from(data);
        let mut offset = format::SEGMENT_HEADER_LEN;
        let mut expected = header.first_lsn;
        let mut found: Vec<(u8, u64, std::ops::Range<usize>)> = Vec::new();
        loop {
            match format::decode_frame(&data, offset, expected) {
                Decoded::End => break,
                Decoded::Frame {
                    kind,
                    lsn,
                    payload,
                    next,
                } => {
                    found.push((kind, lsn, payload));
                    offset = next;
                    expected = lsn + 1;
                }
                Decoded::Torn(reason) => {
                    // Frames past the damage cannot be parsed, but there are
                    // at most this many of them: skip their lsns.
                    lsn_floor = lsn_floor
                        .max(expected.saturating_add(max_frames_in((data.len() - offset) as u64)));
                    torn = Some(TornTail {
                        segment: path.clone(),
                        offset: offset as u64,
                        reason,
                    });
                    truncate = Some((path.clone(), offset as u64));
                    break;
                }
            }
        }
        last_seen = Some(found.last().map_or(header.prev_lsn, |f| f.1));
        // Keep payloads as zero-copy slices of the segment buffer, unless most
        // of the buffer is already trimmed (then copy, so it can be freed).
        let retained: usize = found
            .iter()
            .filter(|f| f.1 > persisted_trim)
            .map(|f| f.2.len())
            .sum();
        let copy = retained.saturating_mul(2) < data.len();
        let nrecords = found.len() as u64;
        for (kind, lsn, range) in found {
            let payload = if copy {
                Bytes::copy_from_slice(&data[range])
            } else {
                data.slice(range)
            };
            records.push(WalRecord {
                lsn: Lsn(lsn),
                kind,
                payload,
            });
        }
        kept.push(Kept {
            meta: SegmentMeta {
                first_lsn: header.first_lsn,
                prev_lsn: header.prev_lsn,
                path,
            },
            valid_len: offset as u64,
            records: nrecords,
            next_lsn: expected,
        });
    }

    let last = last_seen.unwrap_or(0);
    let next_lsn = (last + 1).max(persisted_trim + 1).max(lsn_floor);
    if next_lsn > format::MAX_LSN {
        return Err(WalError::Corrupt {
            path: dir.to_path_buf(),
            offset: 0,
            reason: format!("next lsn {next_lsn} is out of range"),
        });
    }
    // Everything below the oldest kept segment is gone; with no segment at all,
    // everything before next_lsn is.
    let floor = kept.first().map_or(next_lsn - 1, |k| k.meta.prev_lsn);
    let trimmed_through = persisted_trim.max(floor).min(next_lsn - 1);
    records.retain(|r| r.lsn.0 > trimmed_through);

    // The active segment: the last kept one if the next record continues it,
    // otherwise a fresh one (lsns were skipped or nothing is left).
    let mut segments: Vec<SegmentMeta> = Vec::with_capacity(kept.len() + 1);
    let mut reuse: Option<(u64, u64)> = None;
    let n = kept.len();
    for (i, k) in kept.into_iter().enumerate() {
        if i + 1 == n && k.next_lsn == next_lsn {
            reuse = Some((k.valid_len, k.records));
        }
        segments.push(k.meta);
    }

    // Apply, in an order that is safe to interrupt at any point:
    // 1. create the new active segment (if any) first: its name carries the
    //    lsn floor, and it is above every file about to be removed, so the
    //    names cannot clash;
    // 2. remove files and sync the directory;
    // 3. truncate the torn segment.
    // A crash before 3 leaves the damage in place to be found again; the new
    // segment then follows it and is removed in turn, its name still raising
    // the floor. Truncating before removing could leave a truncated segment
    // followed by one that no longer continues it.
    let created = match reuse {
        Some(_) => None,
        None => Some(segment::create_segment(dir, next_lsn, last)?),
    };
    if !remove.is_empty() {
        segment::remove_files(&remove)?;
        segment::sync_dir(dir)?;
    }
    if let Some((path, len)) = &truncate {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err("open", path))?;
        f.set_len(*len).map_err(io_err("truncate", path))?;
        f.sync_all().map_err(io_err("fsync", path))?;
    }
    if let Some(t) = &torn {
        tracing::warn!(
            segment = %t.segment.display(),
            offset = t.offset,
            reason = %t.reason,
            removed_segments = remove.len(),
            next_lsn,
            "wal recovery found a torn or corrupt tail; truncated it",
        );
    }

    let active = match (created, reuse, segments.last()) {
        (Some((file, meta)), _, _) => {
            segments.push(meta);
            ActiveSegment {
                file,
                len: format::SEGMENT_HEADER_LEN as u64,
                records: 0,
            }
        }
        (None, Some((len, records)), Some(meta)) => {
            let file = OpenOptions::new()
                .append(true)
                .open(&meta.path)
                .map_err(io_err("open segment", &meta.path))?;
            ActiveSegment { file, len, records }
        }
        // `reuse` is only set when a kept segment exists.
        (None, _, _) => {
            return Err(WalError::Corrupt {
                path: dir.to_path_buf(),
                offset: 0,
                reason: "internal error: no active segment".into(),
            });
        }
    };

    // Sealed segments that hold only trimmed records go now.
    let mut dead = 0;
    while dead + 1 < segments.len() && segments[dead + 1].prev_lsn <= trimmed_through {
        dead += 1;
    }
    if dead > 0 {
        let paths: Vec<PathBuf> = segments.drain(..dead).map(|s| s.path).collect();
        segment::remove_files(&paths)?;
    }

    Ok(Recovery {
        records,
        torn_tail: torn,
        segments,
        active,
        next_lsn,
        trimmed_through,
    })
}

/// Upper bound on the number of frames in `bytes` bytes of segment data.
fn max_frames_in(bytes: u64) -> u64 {
    bytes / format::FRAME_HEADER_LEN as u64
}

/// Lowest lsn that may be assigned after removing segment file `name_lsn`
/// of `size` bytes: above every lsn it could hold, and above its name, so the
/// new active segment never clashes with a file still awaiting removal.
fn removed_floor(name_lsn: u64, size: u64) -> u64 {
    name_lsn
        .saturating_add(max_frames_in(
            size.saturating_sub(format::SEGMENT_HEADER_LEN as u64),
        ))
        .saturating_add(1)
}
