//! A zero-copy view of Kafka RecordBatch v2 headers, and the checks a produce request's
//! batches pass before they are accepted.
//!
//! Batches are stored and served verbatim; the broker only reads the fixed 61-byte
//! header and rewrites two fields outside the CRC (base offset, partition leader epoch).
//! The kafka-protocol crate decodes whole batches (decompressing records), which the
//! hot path must not do, so the header is read here:
//!
//! ```text
//! batch = { i64 base_offset | i32 batch_length | i32 partition_leader_epoch | i8 magic (=2)
//!         | u32 crc32c(attributes..end) | i16 attributes | i32 last_offset_delta
//!         | i64 base_timestamp | i64 max_timestamp | i64 producer_id | i16 producer_epoch
//!         | i32 base_sequence | i32 records_count | records... }      (big-endian)
//! ```
//! `batch_length` counts the bytes after itself, so a batch spans `12 + batch_length` bytes.

use bytes::{Bytes, BytesMut};

/// Bytes before the records of a v2 batch.
pub const HEADER_LEN: usize = 61;
const LENGTH_OFFSET: usize = 8;
const EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;
const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;

/// Why a produced batch was refused; each maps to one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch is truncated or its length field is inconsistent")]
    Corrupt,
    #[error("record batch checksum mismatch")]
    CrcMismatch,
    #[error("record batch of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("message format v{0} is not supported; clients must send RecordBatch v2")]
    UnsupportedMagic(i8),
    #[error("record batch is invalid: {0}")]
    Invalid(&'static str),
}

/// The fields of a v2 batch header that the broker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Reads the header of the batch at the start of `buf` (no checksum check).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Corrupt);
        }
        let i64_at = |o: usize| i64::from_be_bytes(buf[o..o + 8].try_into().unwrap_or([0; 8]));
        let i32_at = |o: usize| i32::from_be_bytes(buf[o..o + 4].try_into().unwrap_or([0; 4]));
        let i16_at = |o: usize| i16::from_be_bytes(buf[o..o + 2].try_into().unwrap_or([0; 2]));
        let magic = buf[MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(BatchHeader {
            base_offset: i64_at(0),
            attributes: i16_at(ATTRIBUTES_OFFSET),
            last_offset_delta: i32_at(23),
            base_timestamp: i64_at(27),
            max_timestamp: i64_at(35),
            producer_id: i64_at(43),
            producer_epoch: i16_at(51),
            base_sequence: i32_at(53),
            records_count: i32_at(57),
        })
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence number of the last record in the batch (wrapping as Kafka does).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }

    /// The timestamp consumers see as the batch's largest (LogAppendTime batches carry it too).
    pub fn uses_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }
}

/// Total size of the batch at the start of `buf`, from its length field.
pub fn batch_size(buf: &[u8]) -> Result<usize, BatchError> {
    if buf.len() < LENGTH_OFFSET + 4 {
        return Err(BatchError::Corrupt);
    }
    let len = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if len < (HEADER_LEN - 12) as i32 {
        return Err(BatchError::Corrupt);
    }
    Ok(12 + len as usize)
}

/// One validated batch of a produce request.
#[derive(Debug, Clone)]
pub struct ProducedBatch {
    pub header: BatchHeader,
    pub bytes: Bytes,
}

/// Splits a partition's `records` into batches and validates each: v2 magic, length,
/// checksum, size limit, offsets and counts consistent, no control batches, no
/// transactional batches (transactions are not supported yet).
pub fn split_and_validate(
    records: &Bytes,
    max_batch_bytes: usize,
) -> Result<Vec<ProducedBatch>, BatchError> {
    let mut out = Vec::with_capacity(1);
    let mut pos = 0;
    if records.is_empty() {
        return Err(BatchError::Invalid(
            "produce request carries no record batch",
        ));
    }
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() > MAGIC_OFFSET && rest[MAGIC_OFFSET] as i8 != 2 {
            return Err(BatchError::UnsupportedMagic(rest[MAGIC_OFFSET] as i8));
        }
        let size = batch_size(rest)?;
        if size > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size,
                limit: max_batch_bytes,
            });
        }
        if size > rest.len() {
            return Err(BatchError::Corrupt);
        }
        let bytes = records.slice(pos..pos + size);
        let header = BatchHeader::parse(&bytes)?;
        let stored_crc = u32::from_be_bytes([
            bytes[CRC_OFFSET],
            bytes[CRC_OFFSET + 1],
            bytes[CRC_OFFSET + 2],
            bytes[CRC_OFFSET + 3],
        ]);
        if crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]) != stored_crc {
            return Err(BatchError::CrcMismatch);
        }
        if header.records_count <= 0 || header.last_offset_delta < 0 {
            return Err(BatchError::Invalid("batch has no records"));
        }
        if i64::from(header.last_offset_delta) + 1 != i64::from(header.records_count) {
            return Err(BatchError::Invalid(
                "last offset delta does not match the record count",
            ));
        }
        if header.is_control() {
            return Err(BatchError::Invalid(
                "clients may not produce control batches",
            ));
        }
        if header.is_transactional() {
            return Err(BatchError::Invalid(
                "transactional batches are not supported yet",
            ));
        }
        if header.is_idempotent() && (header.base_sequence < 0 || header.producer_epoch < 0) {
            return Err(BatchError::Invalid(
                "idempotent batch without a sequence number or epoch",
            ));
        }
        out.push(ProducedBatch { header, bytes });
        pos += size;
    }
    Ok(out)
}

/// Refuses batches holding a record without a key: a compacted topic keeps the latest
/// record per key, so a keyless one could never be cleaned (Kafka answers the same
/// INVALID_RECORD). Decodes (and decompresses) every record: only for compacted topics.
pub fn require_keys(batches: &[ProducedBatch]) -> Result<(), BatchError> {
    for b in batches {
        let mut buf = b.bytes.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
            .map_err(|_| BatchError::Corrupt)?;
        if set.records.iter().any(|r| r.key.is_none()) {
            return Err(BatchError::Invalid(
                "compacted topics only accept records with a key",
            ));
        }
    }
    Ok(())
}

/// Returns a copy of `batch` with its base offset and partition leader epoch set. Both
/// fields lie outside the checksum, so the batch stays valid. One copy per batch, never
/// per record.
pub fn assign(batch: &Bytes, base_offset: i64, leader_epoch: i32) -> Bytes {
    let mut out = BytesMut::with_capacity(batch.len());
    out.extend_from_slice(&base_offset.to_be_bytes());
    out.extend_from_slice(&batch[LENGTH_OFFSET..EPOCH_OFFSET]);
    out.extend_from_slice(&leader_epoch.to_be_bytes());
    out.extend_from_slice(&batch[MAGIC_OFFSET..]);
    out.freeze()
}

/// Iterates the batches of a buffer of whole batches (as stored in a run or the tail),
/// yielding `(header, bytes)`. Stops at the first malformed batch.
pub fn iter_batches(buf: &Bytes) -> impl Iterator<Item = (BatchHeader, Bytes)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let rest = buf.get(pos..)?;
        let size = batch_size(rest).ok()?;
        if size > rest.len() {
            return None;
        }
        let bytes = buf.slice(pos..pos + size);
        let header = BatchHeader::parse(&bytes).ok()?;
        pos += size;
        Some((header, bytes))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a valid uncompressed v2 batch with `n` records of `value` (test helper).
    pub(crate) fn make_batch(n: i32, producer_id: i64, base_sequence: i32, ts: i64) -> Bytes {
        let mut records = Vec::new();
        for i in 0..n {
            // record = { varint len | i8 attrs | varlong ts_delta | varint off_delta | varint key_len(-1) | varint val_len | val | varint headers(0) }
            let val = b"v";
            let mut body = vec![0u8];
            body.push(0); // timestamp delta 0 (zigzag)
            body.push((i as u8) << 1); // offset delta (small n only)
            body.push(1); // key length -1 (zigzag)
            body.push((val.len() as u8) << 1);
            body.extend_from_slice(val);
            body.push(0);
            records.push((body.len() as u8) << 1);
            records.extend_from_slice(&body);
        }
        let mut after_crc = Vec::new();
        after_crc.extend_from_slice(&0i16.to_be_bytes());
        after_crc.extend_from_slice(&(n - 1).to_be_bytes());
        after_crc.extend_from_slice(&ts.to_be_bytes());
        after_crc.extend_from_slice(&ts.to_be_bytes());
        after_crc.extend_from_slice(&producer_id.to_be_bytes());
        after_crc.extend_from_slice(&(if producer_id >= 0 { 0i16 } else { -1 }).to_be_bytes());
        after_crc.extend_from_slice(&base_sequence.to_be_bytes());
        after_crc.extend_from_slice(&n.to_be_bytes());
        after_crc.extend_from_slice(&records);
        let mut out = Vec::new();
        out.extend_from_slice(&0i64.to_be_bytes());
        out.extend_from_slice(&((4 + 1 + 4 + after_crc.len()) as i32).to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out.push(2);
        out.extend_from_slice(&crc32c::crc32c(&after_crc).to_be_bytes());
        out.extend_from_slice(&after_crc);
        Bytes::from(out)
    }

    #[test]
    fn valid_batch_passes_and_assign_keeps_crc() {
        let b = make_batch(3, -1, -1, 1000);
        let batches = split_and_validate(&b, 1 << 20).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].header.records_count, 3);
        let assigned = assign(&b, 42, 7);
        let again = split_and_validate(&assigned, 1 << 20).unwrap();
        assert_eq!(again[0].header.base_offset, 42);
        assert_eq!(again[0].header.last_offset(), 44);
        assert_eq!(i32::from_be_bytes(assigned[12..16].try_into().unwrap()), 7);
    }

    #[test]
    fn corrupt_batches_are_refused() {
        let b = make_batch(2, -1, -1, 5);
        let mut flipped = b.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert_eq!(
            split_and_validate(&Bytes::from(flipped), 1 << 20).unwrap_err(),
            BatchError::CrcMismatch
        );
        assert_eq!(
            split_and_validate(&b.slice(..b.len() - 1), 1 << 20).unwrap_err(),
            BatchError::Corrupt
        );
        assert!(matches!(
            split_and_validate(&b, 10).unwrap_err(),
            BatchError::TooLarge { .. }
        ));
        let mut v1 = b.to_vec();
        v1[16] = 1;
        assert_eq!(
            split_and_validate(&Bytes::from(v1), 1 << 20).unwrap_err(),
            BatchError::UnsupportedMagic(1)
        );
        for cut in 0..b.len() {
            assert!(split_and_validate(&b.slice(..cut), 1 << 20).is_err());
        }
    }

    #[test]
    fn several_batches_split_and_iterate() {
        let mut two = make_batch(2, -1, -1, 1).to_vec();
        two.extend_from_slice(&make_batch(1, 5, 0, 9));
        let two = Bytes::from(two);
        let batches = split_and_validate(&two, 1 << 20).unwrap();
        assert_eq!(batches.len(), 2);
        assert!(batches[1].header.is_idempotent());
        assert_eq!(iter_batches(&two).count(), 2);
    }
}
