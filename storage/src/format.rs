//! The data object format: one object holds one contiguous run of data for each of many
//! streams, then an index footer, then a fixed-size trailer.
//!
//! # Layout (format version 1, all integers little-endian)
//!
//! ```text
//! object  = { run* | footer | trailer }
//! run     = the concatenated chunk bytes of one stream, opaque to this crate
//! footer  = { u64 data_len | u32 entry_count | entry_count x entry }          (12 + 48 n bytes)
//! entry   = { u64 stream_id | i64 first_offset | i64 last_offset
//!           | i64 max_timestamp | u64 position | u64 length }                 (48 bytes)
//! trailer = { u32 footer_len | u32 crc32c(footer) | u16 format_version
//!           | [u8; 4] magic = "CRSO" }                                        (14 bytes)
//! ```
//!
//! A reader fetches the last [`TRAILER_LEN`] bytes (in practice a few KiB, which usually
//! hold the whole footer too), checks the magic and the version, then reads `footer_len`
//! bytes before the trailer and checks their CRC-32C (Castagnoli).
//!
//! # Invariants (checked by [`decode_index`], guaranteed by [`ObjectBuilder`])
//!
//! - `footer_len == 12 + 48 * entry_count`, and the object is exactly
//!   `data_len + footer_len + TRAILER_LEN` bytes long.
//! - Entries are sorted by `stream_id`, strictly: at most one run per stream per object,
//!   so readers may binary-search the index.
//! - `first_offset <= last_offset` in every entry.
//! - The runs tile the data region in index order: the first run starts at position 0,
//!   each next run starts where the previous one ends, and the last one ends at
//!   `data_len`. Runs may be empty (length 0).
//!
//! [`decode_index`] never panics, whatever bytes it is given.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{StorageError, StreamId};

/// Magic bytes at the very end of every data object.
pub const MAGIC: [u8; 4] = *b"CRSO";
/// The format version this build writes and reads. Stable: a new layout gets a new number.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the fixed trailer at the end of every data object.
pub const TRAILER_LEN: usize = 4 + 4 + 2 + 4;
/// Size of the fixed part of the footer (`data_len`, `entry_count`).
pub(crate) const FOOTER_HEADER_LEN: usize = 8 + 4;
/// Size of one footer entry.
pub(crate) const ENTRY_LEN: usize = 6 * 8;
/// Most streams one object may hold (a 48 MiB footer); keeps `footer_len` within a u32.
pub(crate) const MAX_RUNS: usize = 1 << 20;

/// One contiguous run of one stream inside a data object (one footer index entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunEntry {
    /// The stream the run belongs to.
    pub stream_id: StreamId,
    /// Offset of the first record in the run.
    pub first_offset: i64,
    /// Offset of the last record in the run (inclusive).
    pub last_offset: i64,
    /// Largest timestamp of any chunk in the run.
    pub max_timestamp: i64,
    /// Byte position of the run from the start of the object.
    pub position: u64,
    /// Byte length of the run.
    pub length: u64,
}

#[derive(Debug)]
struct PendingRun {
    first_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    length: u64,
    chunks: Vec<Bytes>,
}

/// Builds one data object: contiguous runs of data for many streams, then an index
/// footer, then a checksum trailer.
///
/// Chunks are kept as [`Bytes`] and never copied; [`ObjectBuilder::finish`] lays out each
/// stream's chunks as one run, streams in ascending `StreamId` order.
#[derive(Debug, Default)]
pub struct ObjectBuilder {
    runs: BTreeMap<StreamId, PendingRun>,
    data_len: u64,
}

impl ObjectBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk for `stream`.
    ///
    /// Chunks of the same stream must arrive in offset order and be contiguous
    /// (`first_offset == previous last_offset + 1`), otherwise
    /// [`StorageError::NonContiguous`]; a chunk with `first_offset > last_offset` gives
    /// [`StorageError::InvalidChunk`]. Chunks of different streams may interleave. On
    /// error the builder is unchanged.
    pub fn push(
        &mut self,
        stream: StreamId,
        first_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
        data: Bytes,
    ) -> Result<(), StorageError> {
        if first_offset > last_offset {
            return Err(StorageError::InvalidChunk {
                stream,
                first_offset,
                last_offset,
            });
        }
        let len = data.len() as u64;
        match self.runs.get_mut(&stream) {
            Some(run) => {
                if run.last_offset.checked_add(1) != Some(first_offset) {
                    return Err(StorageError::NonContiguous {
                        stream,
                        previous_last_offset: run.last_offset,
                        first_offset,
                    });
                }
                run.last_offset = last_offset;
                run.max_timestamp = run.max_timestamp.max(max_timestamp);
                run.length += len;
                if !data.is_empty() {
                    run.chunks.push(data);
                }
            }
            None => {
                if self.runs.len() >= MAX_RUNS {
                    return Err(StorageError::TooManyRuns { max: MAX_RUNS });
                }
                let chunks = if data.is_empty() { vec![] } else { vec![data] };
                self.runs.insert(
                    stream,
                    PendingRun {
                        first_offset,
                        last_offset,
                        max_timestamp,
                        length: len,
                        chunks,
                    },
                );
            }
        }
        self.data_len += len;
        Ok(())
    }

    /// True when no chunk has been pushed.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Number of streams (runs) pushed so far.
    pub fn stream_count(&self) -> usize {
        self.runs.len()
    }

    /// Bytes the finished object will have (data + footer + trailer).
    pub fn encoded_len(&self) -> u64 {
        self.data_len + footer_len(self.runs.len()) as u64 + TRAILER_LEN as u64
    }

    /// Lays out the object. Chunk bytes are not copied: they become `parts`, followed by
    /// one part holding the footer and trailer.
    pub fn finish(self) -> EncodedObject {
        let size = self.encoded_len();
        let mut parts =
            Vec::with_capacity(self.runs.values().map(|r| r.chunks.len()).sum::<usize>() + 1);
        let mut index = Vec::with_capacity(self.runs.len());
        let mut position = 0u64;
        for (stream_id, run) in self.runs {
            index.push(RunEntry {
                stream_id,
                first_offset: run.first_offset,
                last_offset: run.last_offset,
                max_timestamp: run.max_timestamp,
                position,
                length: run.length,
            });
            position += run.length;
            parts.extend(run.chunks);
        }
        parts.push(encode_footer_and_trailer(position, &index));
        EncodedObject { parts, index, size }
    }
}

/// A finished data object, ready to upload.
#[derive(Clone, Debug)]
pub struct EncodedObject {
    /// The object's bytes, in order: chunk bytes, then footer and trailer.
    pub parts: Vec<Bytes>,
    /// The footer index, sorted by stream.
    pub index: Vec<RunEntry>,
    /// Total size in bytes (sum of `parts`).
    pub size: u64,
}

impl EncodedObject {
    /// The whole object as one contiguous buffer. Copies; meant for tests and tools.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(usize::try_from(self.size).unwrap_or(0));
        for part in &self.parts {
            out.extend_from_slice(part);
        }
        out.freeze()
    }
}

fn footer_len(entries: usize) -> usize {
    FOOTER_HEADER_LEN + ENTRY_LEN * entries
}

fn encode_footer_and_trailer(data_len: u64, index: &[RunEntry]) -> Bytes {
    let flen = footer_len(index.len());
    let mut buf = BytesMut::with_capacity(flen + TRAILER_LEN);
    buf.put_u64_le(data_len);
    // MAX_RUNS keeps both casts in range.
    buf.put_u32_le(index.len() as u32);
    for e in index {
        buf.put_u64_le(e.stream_id);
        buf.put_i64_le(e.first_offset);
        buf.put_i64_le(e.last_offset);
        buf.put_i64_le(e.max_timestamp);
        buf.put_u64_le(e.position);
        buf.put_u64_le(e.length);
    }
    let crc = crc32c::crc32c(&buf);
    buf.put_u32_le(flen as u32);
    buf.put_u32_le(crc);
    buf.put_u16_le(FORMAT_VERSION);
    buf.put_slice(&MAGIC);
    buf.freeze()
}

/// The decoded trailer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trailer {
    pub(crate) footer_len: u32,
    crc: u32,
}

impl Trailer {
    /// Footer plus trailer: how many bytes at the end of the object a reader needs.
    pub(crate) fn tail_len(&self) -> u64 {
        u64::from(self.footer_len) + TRAILER_LEN as u64
    }
}

fn corrupt(reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        key: None,
        reason: reason.into(),
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le_i64(b: &[u8], at: usize) -> i64 {
    le_u64(b, at) as i64
}

/// Parses and checks the trailer at the end of `tail` (magic, version, footer length).
pub(crate) fn decode_trailer(tail: &[u8]) -> Result<Trailer, StorageError> {
    let Some(start) = tail.len().checked_sub(TRAILER_LEN) else {
        return Err(corrupt(format!(
            "object tail is {} bytes, shorter than the {TRAILER_LEN}-byte trailer",
            tail.len()
        )));
    };
    let t = &tail[start..];
    if t[10..14] != MAGIC {
        return Err(corrupt(format!(
            "bad magic {:02x?} at the end of the object, expected {:02x?} (\"CRSO\")",
            &t[10..14],
            MAGIC
        )));
    }
    let version = le_u16(t, 8);
    if version != FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            key: None,
            version,
            supported: FORMAT_VERSION,
        });
    }
    let footer_len = le_u32(t, 0);
    let flen = footer_len as usize;
    if flen < FOOTER_HEADER_LEN || !(flen - FOOTER_HEADER_LEN).is_multiple_of(ENTRY_LEN) {
        return Err(corrupt(format!(
            "footer length {footer_len} is not 12 + a multiple of 48"
        )));
    }
    Ok(Trailer {
        footer_len,
        crc: le_u32(t, 4),
    })
}

/// Decodes the footer and trailer at the end of `tail`; returns `(data_len, index)`.
pub(crate) fn decode_tail(tail: &[u8]) -> Result<(u64, Vec<RunEntry>), StorageError> {
    let trailer = decode_trailer(tail)?;
    let flen = trailer.footer_len as usize;
    let Some(footer_start) = tail.len().checked_sub(TRAILER_LEN + flen) else {
        return Err(corrupt(format!(
            "object tail is {} bytes, but the footer and trailer need {}",
            tail.len(),
            trailer.tail_len()
        )));
    };
    let footer = &tail[footer_start..footer_start + flen];
    let actual = crc32c::crc32c(footer);
    if actual != trailer.crc {
        return Err(corrupt(format!(
            "footer checksum mismatch: trailer says {:#010x}, footer hashes to {actual:#010x}",
            trailer.crc
        )));
    }
    let data_len = le_u64(footer, 0);
    let count = le_u32(footer, 8) as usize;
    let expected_entries = (flen - FOOTER_HEADER_LEN) / ENTRY_LEN;
    if count != expected_entries {
        return Err(corrupt(format!(
            "footer says {count} entries, but its length {flen} holds {expected_entries}"
        )));
    }
    let mut index = Vec::with_capacity(count);
    let mut position = 0u64;
    let mut previous: Option<StreamId> = None;
    for i in 0..count {
        let at = FOOTER_HEADER_LEN + i * ENTRY_LEN;
        let e = RunEntry {
            stream_id: le_u64(footer, at),
            first_offset: le_i64(footer, at + 8),
            last_offset: le_i64(footer, at + 16),
            max_timestamp: le_i64(footer, at + 24),
            position: le_u64(footer, at + 32),
            length: le_u64(footer, at + 40),
        };
        if previous.is_some_and(|p| p >= e.stream_id) {
            return Err(corrupt(format!(
                "index entry {i} (stream {}) is not sorted after stream {}",
                e.stream_id,
                previous.unwrap_or_default()
            )));
        }
        if e.first_offset > e.last_offset {
            return Err(corrupt(format!(
                "index entry {i} (stream {}) has reversed offsets {}..={}",
                e.stream_id, e.first_offset, e.last_offset
            )));
        }
        if e.position != position {
            return Err(corrupt(format!(
                "index entry {i} (stream {}) starts at {}, expected {position}",
                e.stream_id, e.position
            )));
        }
        position = match position.checked_add(e.length) {
            Some(p) if p <= data_len => p,
            _ => {
                return Err(corrupt(format!(
                    "index entry {i} (stream {}) of {} bytes at {} runs past the data region of {data_len} bytes",
                    e.stream_id, e.length, e.position
                )));
            }
        };
        previous = Some(e.stream_id);
        index.push(e);
    }
    if position != data_len {
        return Err(corrupt(format!(
            "runs cover {position} bytes, but the footer says the data region is {data_len} bytes"
        )));
    }
    Ok((data_len, index))
}

/// Parses the footer + trailer from the last bytes of an object (validates magic,
/// version, checksum and the layout invariants of the module docs).
///
/// `object_tail` may be the whole object or any suffix of it that holds the footer and
/// trailer. Never panics.
pub fn decode_index(object_tail: &[u8]) -> Result<Vec<RunEntry>, StorageError> {
    decode_tail(object_tail).map(|(_, index)| index)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(tag: u8, n: usize) -> Bytes {
        Bytes::from(
            (0..n)
                .map(|i| tag.wrapping_add(i as u8))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn interleaved_pushes_make_one_run_per_stream() {
        let mut b = ObjectBuilder::new();
        assert!(b.is_empty());
        // (stream, first, last, ts, data)
        let pushes: Vec<(u64, i64, i64, i64, Bytes)> = vec![
            (7, 100, 104, 1_000, chunk(1, 30)),
            (3, 0, 0, 2_000, chunk(2, 11)),
            (7, 105, 109, 900, chunk(3, 17)),
            (42, 5, 9, 5, chunk(4, 0)),
            (3, 1, 10, 1_500, chunk(5, 64)),
            (7, 110, 110, 3_000, chunk(6, 5)),
            (42, 10, 10, 6, chunk(7, 9)),
        ];
        let mut expected_data: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for (s, f, l, t, d) in &pushes {
            b.push(*s, *f, *l, *t, d.clone()).unwrap();
            expected_data.entry(*s).or_default().extend_from_slice(d);
        }
        assert!(!b.is_empty());
        assert_eq!(b.stream_count(), 3);
        let predicted = b.encoded_len();
        let obj = b.finish();
        let bytes = obj.to_bytes();
        assert_eq!(obj.size, predicted);
        assert_eq!(bytes.len() as u64, obj.size);

        let ids: Vec<u64> = obj.index.iter().map(|e| e.stream_id).collect();
        assert_eq!(ids, vec![3, 7, 42]);
        let e7 = &obj.index[1];
        assert_eq!(
            (e7.first_offset, e7.last_offset, e7.max_timestamp),
            (100, 110, 3_000)
        );
        let e3 = &obj.index[0];
        assert_eq!(
            (e3.first_offset, e3.last_offset, e3.max_timestamp),
            (0, 10, 2_000)
        );

        assert_eq!(decode_index(&bytes).unwrap(), obj.index);
        // A suffix holding just footer + trailer decodes too.
        let tail_len = FOOTER_HEADER_LEN + 3 * ENTRY_LEN + TRAILER_LEN;
        assert_eq!(
            decode_index(&bytes[bytes.len() - tail_len..]).unwrap(),
            obj.index
        );

        for e in &obj.index {
            let run = &bytes[e.position as usize..(e.position + e.length) as usize];
            assert_eq!(
                run,
                expected_data[&e.stream_id].as_slice(),
                "stream {}",
                e.stream_id
            );
        }
    }

    #[test]
    fn finish_does_not_copy_chunks() {
        let data = chunk(9, 100);
        let mut b = ObjectBuilder::new();
        b.push(1, 0, 0, 0, data.clone()).unwrap();
        let obj = b.finish();
        assert_eq!(obj.parts.len(), 2);
        assert_eq!(obj.parts[0].as_ptr(), data.as_ptr());
    }

    #[test]
    fn non_contiguous_and_reversed_chunks_are_rejected() {
        let mut b = ObjectBuilder::new();
        b.push(1, 10, 19, 0, chunk(0, 4)).unwrap();
        let gap = b.push(1, 21, 30, 0, chunk(0, 4)).unwrap_err();
        assert!(matches!(
            gap,
            StorageError::NonContiguous {
                stream: 1,
                previous_last_offset: 19,
                first_offset: 21
            }
        ));
        let overlap = b.push(1, 15, 30, 0, chunk(0, 4)).unwrap_err();
        assert!(matches!(overlap, StorageError::NonContiguous { .. }));
        let reversed = b.push(2, 5, 4, 0, chunk(0, 4)).unwrap_err();
        assert!(matches!(
            reversed,
            StorageError::InvalidChunk { stream: 2, .. }
        ));
        // Rejected pushes left the builder unchanged.
        b.push(1, 20, 20, 0, chunk(0, 4)).unwrap();
        let obj = b.finish();
        assert_eq!(obj.index.len(), 1);
        assert_eq!(obj.index[0].last_offset, 20);
        assert_eq!(obj.index[0].length, 8);
        // i64::MAX cannot be followed.
        let mut b = ObjectBuilder::new();
        b.push(1, i64::MAX, i64::MAX, 0, chunk(0, 1)).unwrap();
        assert!(matches!(
            b.push(1, i64::MIN, i64::MIN, 0, chunk(0, 1)),
            Err(StorageError::NonContiguous { .. })
        ));
    }

    #[test]
    fn empty_object_round_trips() {
        let b = ObjectBuilder::new();
        assert_eq!(b.encoded_len(), (FOOTER_HEADER_LEN + TRAILER_LEN) as u64);
        let obj = b.finish();
        assert!(obj.index.is_empty());
        assert_eq!(decode_index(&obj.to_bytes()).unwrap(), vec![]);
    }

    #[test]
    fn corruption_is_detected() {
        let mut b = ObjectBuilder::new();
        b.push(1, 0, 3, 7, chunk(0, 10)).unwrap();
        b.push(2, 0, 3, 7, chunk(0, 10)).unwrap();
        let good = b.finish().to_bytes().to_vec();
        let n = good.len();

        let mut bad_magic = good.clone();
        bad_magic[n - 1] ^= 0xff;
        assert!(matches!(
            decode_index(&bad_magic),
            Err(StorageError::Corrupt { .. })
        ));

        let mut bad_version = good.clone();
        bad_version[n - 6] = 9;
        assert!(matches!(
            decode_index(&bad_version),
            Err(StorageError::UnsupportedVersion { version: 9, .. })
        ));

        let mut bad_crc = good.clone();
        bad_crc[n - TRAILER_LEN - 1] ^= 1; // last byte of the footer
        let err = decode_index(&bad_crc).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");

        assert!(matches!(
            decode_index(&good[n - 20..]),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_index(&[]),
            Err(StorageError::Corrupt { .. })
        ));
    }

    /// Re-signs a footer so that semantic checks (not the CRC) are what reject it.
    fn resign(footer: &[u8]) -> Vec<u8> {
        let mut out = footer.to_vec();
        out.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(footer).to_le_bytes());
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&MAGIC);
        out
    }

    #[test]
    fn semantic_checks_reject_well_signed_bad_footers() {
        let mut b = ObjectBuilder::new();
        b.push(1, 0, 3, 7, chunk(0, 10)).unwrap();
        b.push(2, 0, 3, 7, chunk(0, 10)).unwrap();
        let obj = b.finish();
        let footer_part = obj.parts.last().unwrap();
        let footer = &footer_part[..footer_part.len() - TRAILER_LEN];
        assert!(decode_index(&resign(footer)).is_ok());

        let entry1 = FOOTER_HEADER_LEN + ENTRY_LEN;
        // Unsorted: second entry's stream id set to 1.
        let mut f = footer.to_vec();
        f[entry1..entry1 + 8].copy_from_slice(&1u64.to_le_bytes());
        assert!(
            decode_index(&resign(&f))
                .unwrap_err()
                .to_string()
                .contains("sorted")
        );
        // Gap between runs.
        let mut f = footer.to_vec();
        f[entry1 + 32..entry1 + 40].copy_from_slice(&11u64.to_le_bytes());
        assert!(decode_index(&resign(&f)).is_err());
        // Data length disagrees with runs.
        let mut f = footer.to_vec();
        f[0..8].copy_from_slice(&21u64.to_le_bytes());
        assert!(decode_index(&resign(&f)).is_err());
        // Entry count disagrees with footer length.
        let mut f = footer.to_vec();
        f[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(decode_index(&resign(&f)).is_err());
        // Reversed offsets.
        let mut f = footer.to_vec();
        f[entry1 + 8..entry1 + 16].copy_from_slice(&9i64.to_le_bytes());
        assert!(decode_index(&resign(&f)).is_err());
    }

    fn hex(bytes: &[u8]) -> String {
        let mut s = String::new();
        for line in bytes.chunks(16) {
            for b in line {
                s.push_str(&format!("{b:02x}"));
            }
            s.push('\n');
        }
        s
    }

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn golden_object() -> EncodedObject {
        let mut b = ObjectBuilder::new();
        b.push(
            0x0102_0304_0506_0708,
            0,
            1,
            1_700_000_000_000,
            Bytes::from_static(b"alpha"),
        )
        .unwrap();
        b.push(2, -1, -1, -5, Bytes::from_static(b"xy")).unwrap();
        b.push(
            0x0102_0304_0506_0708,
            2,
            2,
            1_600_000_000_000,
            Bytes::from_static(b"beta"),
        )
        .unwrap();
        b.finish()
    }

    /// Pins format version 1. Regenerate (only with a format version bump) by running
    /// with `CIRRUS_BLESS=1`.
    #[test]
    fn golden_format_v1() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/data_object_v1.hex");
        let obj = golden_object();
        let bytes = obj.to_bytes();
        if std::env::var_os("CIRRUS_BLESS").is_some() {
            std::fs::write(path, hex(&bytes)).unwrap();
        }
        let fixture = unhex(&std::fs::read_to_string(path).unwrap());
        assert_eq!(
            hex(&bytes),
            hex(&fixture),
            "encoding changed; bump FORMAT_VERSION"
        );
        let index = decode_index(&fixture).unwrap();
        assert_eq!(
            index,
            vec![
                RunEntry {
                    stream_id: 2,
                    first_offset: -1,
                    last_offset: -1,
                    max_timestamp: -5,
                    position: 0,
                    length: 2
                },
                RunEntry {
                    stream_id: 0x0102_0304_0506_0708,
                    first_offset: 0,
                    last_offset: 2,
                    max_timestamp: 1_700_000_000_000,
                    position: 2,
                    length: 9
                },
            ]
        );
        assert_eq!(&fixture[..11], b"xyalphabeta");
        assert_eq!(&fixture[fixture.len() - 4..], b"CRSO");
    }

    proptest! {
        #[test]
        fn arbitrary_tails_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_index(&tail);
        }

        #[test]
        fn arbitrary_signed_footers_never_panic_and_ok_means_valid(
            footer in proptest::collection::vec(any::<u8>(), 0..400),
            lie_len in proptest::option::of(any::<u32>()),
        ) {
            let mut tail = resign(&footer);
            if let Some(l) = lie_len {
                let at = tail.len() - TRAILER_LEN;
                tail[at..at + 4].copy_from_slice(&l.to_le_bytes());
            }
            if let Ok(index) = decode_index(&tail) {
                let mut pos = 0;
                for w in index.windows(2) {
                    prop_assert!(w[0].stream_id < w[1].stream_id);
                }
                for e in &index {
                    prop_assert_eq!(e.position, pos);
                    prop_assert!(e.first_offset <= e.last_offset);
                    pos += e.length;
                }
            }
        }

        #[test]
        fn mutated_objects_never_panic(
            at in any::<prop::sample::Index>(),
            xor in 1u8..,
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = golden_object().to_bytes().to_vec();
            let mut m = bytes.clone();
            let i = at.index(m.len());
            m[i] ^= xor;
            let _ = decode_index(&m);
            let _ = decode_index(&bytes[cut.index(bytes.len())..]);
        }

        #[test]
        fn random_objects_round_trip(
            pushes in proptest::collection::vec((0u64..6, 0i64..4, any::<i64>(), 0usize..40), 0..30)
        ) {
            let mut b = ObjectBuilder::new();
            let mut next: BTreeMap<u64, i64> = BTreeMap::new();
            let mut data: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            for (s, span, ts, len) in pushes {
                let first = *next.get(&s).unwrap_or(&0);
                let d = chunk(s as u8, len);
                b.push(s, first, first + span, ts, d.clone()).unwrap();
                next.insert(s, first + span + 1);
                data.entry(s).or_default().extend_from_slice(&d);
            }
            let predicted = b.encoded_len();
            let obj = b.finish();
            let bytes = obj.to_bytes();
            prop_assert_eq!(bytes.len() as u64, predicted);
            prop_assert_eq!(decode_index(&bytes).unwrap(), obj.index.clone());
            for e in &obj.index {
                prop_assert_eq!(
                    &bytes[e.position as usize..(e.position + e.length) as usize],
                    data[&e.stream_id].as_slice()
                );
                prop_assert_eq!(e.last_offset + 1, next[&e.stream_id]);
            }
        }
    }
}
