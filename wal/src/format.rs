//! On-disk encoding of the WAL. This module is the single source of truth for
//! the byte layout; the golden tests at the bottom pin it.
//!
//! All integers are little-endian. All checksums are CRC-32C (Castagnoli, the
//! `crc32c` crate).
//!
//! # Segment file
//!
//! A segment is named `NNNNNNNNNNNNNNNNNNNN.wal`, where the 20 decimal digits
//! are the lsn of its first record (zero-padded). It starts with a 32-byte
//! header followed by zero or more record frames, back to back:
//!
//! ```text
//! offset size field
//!      0    8 magic      b"CIRRUSWL"
//!      8    2 version    u16, currently 1
//!     10    2 flags      u16, must be 0
//!     12    8 first_lsn  u64, lsn of the first record (equals the file name)
//!     20    8 prev_lsn   u64, lsn of the last record of the previous segment
//!                        (0 for the first segment of a new WAL). Normally
//!                        first_lsn - 1; smaller when lsns were skipped at
//!                        recovery (see crate docs)
//!     28    4 crc        u32, crc32c of bytes 0..28
//! ```
//!
//! # Record frame
//!
//! ```text
//! offset size field
//!      0    4 payload_len u32, number of payload bytes (<= MAX_RECORD_PAYLOAD)
//!      4    4 crc         u32, crc32c over payload_len (4 bytes LE) ++ kind
//!                         ++ lsn (8 bytes LE) ++ payload
//!      8    1 kind        u8, opaque to the WAL
//!      9    8 lsn         u64
//!     17    n payload
//! ```
//!
//! A frame therefore occupies `17 + payload_len` bytes. The checksum covers the
//! length, so a damaged length field is detected even when it still points
//! inside the file.
//!
//! # Trim file
//!
//! `trim` (written as `trim.tmp`, then renamed over `trim`), 20 bytes:
//!
//! ```text
//!      0    8 magic          b"CIRRTRIM"
//!      8    8 trimmed_through u64
//!     16    4 crc            u32, crc32c of bytes 0..16
//! ```

use std::ops::Range;

use bytes::Bytes;

/// Magic bytes at the start of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"CIRRUSWL";
/// Current segment format version.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Size of the segment header in bytes.
pub(crate) const SEGMENT_HEADER_LEN: usize = 32;
/// Size of a record frame's fixed part in bytes.
pub(crate) const FRAME_HEADER_LEN: usize = 17;
/// Magic bytes of the trim file.
pub(crate) const TRIM_MAGIC: [u8; 8] = *b"CIRRTRIM";
/// Size of the trim file in bytes.
pub(crate) const TRIM_FILE_LEN: usize = 20;
/// Name of the persisted trim point file.
pub(crate) const TRIM_FILE: &str = "trim";
/// Temporary name the trim file is written under before the rename.
pub(crate) const TRIM_TMP_FILE: &str = "trim.tmp";
/// Segment file extension.
pub(crate) const SEGMENT_EXT: &str = ".wal";

/// Largest payload a single record may carry (256 MiB). Larger appends fail
/// with [`WalError::RecordTooLarge`](crate::WalError::RecordTooLarge); a frame
/// on disk claiming more is treated as corrupt.
pub const MAX_RECORD_PAYLOAD: u64 = 256 << 20;

/// Largest lsn the WAL will ever read or assign. Anything above it on disk is
/// treated as corrupt, which keeps all `lsn + 1` arithmetic overflow-free.
pub(crate) const MAX_LSN: u64 = i64::MAX as u64;

/// File name of the segment whose first record has lsn `first_lsn`.
pub(crate) fn segment_file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SEGMENT_EXT}")
}

/// Parses a segment file name; `None` if `name` is not one (or its lsn is out
/// of range).
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXT)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let lsn: u64 = digits.parse().ok()?;
    (1..=MAX_LSN).contains(&lsn).then_some(lsn)
}

/// Decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) first_lsn: u64,
    pub(crate) prev_lsn: u64,
}

/// Why a segment header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// The header is damaged or incomplete (reason for the report).
    Invalid(String),
    /// A well-formed header of a format this code does not understand.
    Unsupported { version: u16, flags: u16 },
}

pub(crate) fn encode_segment_header(header: SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out[0..8].copy_from_slice(&SEGMENT_MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[10..12].copy_from_slice(&0u16.to_le_bytes());
    out[12..20].copy_from_slice(&header.first_lsn.to_le_bytes());
    out[20..28].copy_from_slice(&header.prev_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..28]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_segment_header(data: &[u8]) -> Result<SegmentHeader, HeaderError> {
    let Some(h) = data.get(..SEGMENT_HEADER_LEN) else {
        return Err(HeaderError::Invalid(format!(
            "incomplete segment header: {} of {SEGMENT_HEADER_LEN} bytes",
            data.len()
        )));
    };
    if h[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::Invalid("bad segment magic".into()));
    }
    let stored = read_u32(&h[28..32]);
    let actual = crc32c::crc32c(&h[0..28]);
    if stored != actual {
        return Err(HeaderError::Invalid(format!(
            "segment header checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        )));
    }
    let version = read_u16(&h[8..10]);
    let flags = read_u16(&h[10..12]);
    if version != FORMAT_VERSION || flags != 0 {
        return Err(HeaderError::Unsupported { version, flags });
    }
    let first_lsn = read_u64(&h[12..20]);
    let prev_lsn = read_u64(&h[20..28]);
    if first_lsn == 0 || first_lsn > MAX_LSN || prev_lsn >= first_lsn {
        return Err(HeaderError::Invalid(format!(
            "segment header has invalid lsns (first {first_lsn}, prev {prev_lsn})"
        )));
    }
    Ok(SegmentHeader {
        first_lsn,
        prev_lsn,
    })
}

/// Checksum of a frame whose payload is the concatenation of `parts`.
pub(crate) fn frame_checksum<P: AsRef<[u8]>>(
    payload_len: u32,
    kind: u8,
    lsn: u64,
    parts: &[P],
) -> u32 {
    let mut head = [0u8; 13];
    head[0..4].copy_from_slice(&payload_len.to_le_bytes());
    head[4] = kind;
    head[5..13].copy_from_slice(&lsn.to_le_bytes());
    let mut crc = crc32c::crc32c(&head);
    for p in parts {
        crc = crc32c::crc32c_append(crc, p.as_ref());
    }
    crc
}

/// Appends the frame for one record to `buf`. The caller guarantees the total
/// payload length is at most [`MAX_RECORD_PAYLOAD`].
pub(crate) fn encode_frame(buf: &mut Vec<u8>, kind: u8, lsn: u64, parts: &[Bytes]) {
    let len: usize = parts.iter().map(Bytes::len).sum();
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    debug_assert!(len as u64 <= MAX_RECORD_PAYLOAD);
    let crc = frame_checksum(len32, kind, lsn, parts);
    buf.reserve(FRAME_HEADER_LEN + len);
    buf.extend_from_slice(&len32.to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(&lsn.to_le_bytes());
    for p in parts {
        buf.extend_from_slice(p);
    }
}

/// Result of decoding the frame at some offset of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Clean end of the segment: no bytes left.
    End,
    /// A valid frame.
    Frame {
        kind: u8,
        lsn: u64,
        /// Byte range of the payload within the segment data.
        payload: Range<usize>,
        /// Offset of the next frame.
        next: usize,
    },
    /// Torn or corrupt: recovery stops here (reason for the report).
    Torn(String),
}

/// Decodes the frame at `offset` of `data`, which must carry lsn
/// `expected_lsn`. Never panics, whatever `data` holds.
pub(crate) fn decode_frame(data: &[u8], offset: usize, expected_lsn: u64) -> Decoded {
    let Some(rest) = data.get(offset..) else {
        return Decoded::Torn(format!("offset {offset} is past the end of the file"));
    };
    if rest.is_empty() {
        return Decoded::End;
    }
    let Some(head) = rest.get(..FRAME_HEADER_LEN) else {
        return Decoded::Torn(format!(
            "incomplete frame header: {} of {FRAME_HEADER_LEN} bytes",
            rest.len()
        ));
    };
    let len = read_u32(&head[0..4]);
    let stored_crc = read_u32(&head[4..8]);
    let kind = head[8];
    let lsn = read_u64(&head[9..17]);
    if u64::from(len) > MAX_RECORD_PAYLOAD {
        return Decoded::Torn(format!(
            "frame length {len} exceeds the maximum of {MAX_RECORD_PAYLOAD}"
        ));
    }
    let len = len as usize;
    let available = rest.len() - FRAME_HEADER_LEN;
    if len > available {
        return Decoded::Torn(format!(
            "frame of {len} payload bytes extends past the end of the file ({available} bytes left)"
        ));
    }
    let start = offset + FRAME_HEADER_LEN;
    let payload = &data[start..start + len];
    let actual = frame_checksum(len as u32, kind, lsn, &[payload]);
    if actual != stored_crc {
        return Decoded::Torn(format!(
            "frame checksum mismatch (stored {stored_crc:#010x}, computed {actual:#010x})"
        ));
    }
    if lsn != expected_lsn {
        return Decoded::Torn(format!(
            "frame lsn {lsn} does not follow the previous lsn (expected {expected_lsn})"
        ));
    }
    Decoded::Frame {
        kind,
        lsn,
        payload: start..start + len,
        next: start + len,
    }
}

pub(crate) fn encode_trim(trimmed_through: u64) -> [u8; TRIM_FILE_LEN] {
    let mut out = [0u8; TRIM_FILE_LEN];
    out[0..8].copy_from_slice(&TRIM_MAGIC);
    out[8..16].copy_from_slice(&trimmed_through.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the trim file; `Err(reason)` if it is damaged.
pub(crate) fn decode_trim(data: &[u8]) -> Result<u64, String> {
    if data.len() != TRIM_FILE_LEN {
        return Err(format!(
            "trim file has {} bytes, expected {TRIM_FILE_LEN}",
            data.len()
        ));
    }
    if data[0..8] != TRIM_MAGIC {
        return Err("bad trim file magic".into());
    }
    if read_u32(&data[16..20]) != crc32c::crc32c(&data[0..16]) {
        return Err("trim file checksum mismatch".into());
    }
    let v = read_u64(&data[8..16]);
    if v >= MAX_LSN {
        return Err(format!("trim point {v} out of range"));
    }
    Ok(v)
}

fn read_u16(b: &[u8]) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[..2]);
    u16::from_le_bytes(a)
}

fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        // Standard check value of CRC-32C.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn golden_segment_header() {
        let h = encode_segment_header(SegmentHeader {
            first_lsn: 0x0102_0304_0506_0708,
            prev_lsn: 0x0102_0304_0506_0707,
        });
        let expected: [u8; SEGMENT_HEADER_LEN] = [
            b'C', b'I', b'R', b'R', b'U', b'S', b'W', b'L', // magic
            0x01, 0x00, // version 1
            0x00, 0x00, // flags
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // first_lsn
            0x07, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // prev_lsn
            0x0f, 0x84, 0x42, 0x25, // crc32c of the above
        ];
        assert_eq!(h, expected);
        assert_eq!(crc32c::crc32c(&h[..28]), 0x2542_840f);
        assert_eq!(
            decode_segment_header(&h),
            Ok(SegmentHeader {
                first_lsn: 0x0102_0304_0506_0708,
                prev_lsn: 0x0102_0304_0506_0707,
            })
        );
    }

    #[test]
    fn golden_frame() {
        let mut buf = Vec::new();
        encode_frame(
            &mut buf,
            7,
            0x0102_0304_0506_0708,
            &[Bytes::from_static(b"he"), Bytes::from_static(b"llo")],
        );
        let expected: &[u8] = &[
            0x05, 0x00, 0x00, 0x00, // payload_len = 5
            0xd4, 0x9d, 0xad, 0x37, // crc32c(len ++ kind ++ lsn ++ payload)
            0x07, // kind
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // lsn
            b'h', b'e', b'l', b'l', b'o', // payload
        ];
        assert_eq!(buf, expected);
        let mut covered = Vec::new();
        covered.extend_from_slice(&5u32.to_le_bytes());
        covered.push(7);
        covered.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        covered.extend_from_slice(b"hello");
        assert_eq!(crc32c::crc32c(&covered), 0x37ad_9dd4);
        assert_eq!(
            decode_frame(&buf, 0, 0x0102_0304_0506_0708),
            Decoded::Frame {
                kind: 7,
                lsn: 0x0102_0304_0506_0708,
                payload: 17..22,
                next: 22,
            }
        );
        assert_eq!(decode_frame(&buf, 22, 0), Decoded::End);
    }

    #[test]
    fn golden_trim_file() {
        let t = encode_trim(42);
        let expected: [u8; TRIM_FILE_LEN] = [
            b'C', b'I', b'R', b'R', b'T', b'R', b'I', b'M', // magic
            42, 0, 0, 0, 0, 0, 0, 0, // trimmed_through
            0xaa, 0xce, 0x54, 0x81, // crc32c of the above
        ];
        assert_eq!(t, expected);
        assert_eq!(decode_trim(&t), Ok(42));
        let mut bad = t;
        bad[9] ^= 1;
        assert!(decode_trim(&bad).is_err());
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_segment_file_name("00000000000000000001.wal"), Some(1));
        assert_eq!(parse_segment_file_name("00000000000000000000.wal"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000001.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000a.wal"), None);
        assert_eq!(parse_segment_file_name("00000000000000000001.tmp"), None);
        assert_eq!(parse_segment_file_name("+0000000000000000001.wal"), None);
    }

    #[test]
    fn decode_never_panics_on_garbage() {
        let mut data = vec![0u8; 64];
        for i in 0..data.len() {
            data[i] = (i as u8).wrapping_mul(37);
            for off in 0..=data.len() + 2 {
                let _ = decode_frame(&data, off, 1);
            }
            let _ = decode_segment_header(&data[..i]);
            let _ = decode_trim(&data[..i.min(TRIM_FILE_LEN)]);
        }
        // A huge claimed length is rejected without allocating.
        let mut huge = vec![0xffu8; FRAME_HEADER_LEN];
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_frame(&huge, 0, 1), Decoded::Torn(_)));
    }
}
