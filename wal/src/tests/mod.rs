//! Tests of the whole WAL (the format has its own golden tests in
//! `format.rs`).

#![allow(clippy::unwrap_used)]

mod basic;
mod prop;
mod torn;

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::format::FRAME_HEADER_LEN;
use crate::{Lsn, Recovered, Wal, WalOptions, WalRecord};

pub(crate) fn opts(dir: &Path) -> WalOptions {
    WalOptions {
        dir: dir.to_path_buf(),
        ..WalOptions::default()
    }
}

pub(crate) fn small_segments(dir: &Path, target: u64) -> WalOptions {
    WalOptions {
        dir: dir.to_path_buf(),
        segment_target_bytes: target,
        max_outstanding_bytes: 1 << 30,
    }
}

/// Deterministic payload of varying length (0..=40 bytes) for record `i`.
pub(crate) fn payload(i: u64) -> Bytes {
    let len = (i * 7 % 41) as usize;
    Bytes::from(
        (0..len)
            .map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8))
            .collect::<Vec<u8>>(),
    )
}

pub(crate) fn kind(i: u64) -> u8 {
    (i % 5) as u8
}

/// Splits a payload into a "header" part and a "body" part, like the broker.
pub(crate) fn parts(p: &Bytes) -> Vec<Bytes> {
    let cut = p.len() / 3;
    vec![p.slice(..cut), p.slice(cut..)]
}

pub(crate) fn frame_len(p: &Bytes) -> u64 {
    FRAME_HEADER_LEN as u64 + p.len() as u64
}

pub(crate) fn expected(range: std::ops::RangeInclusive<u64>) -> Vec<WalRecord> {
    range
        .map(|i| WalRecord {
            lsn: Lsn(i),
            kind: kind(i),
            payload: payload(i),
        })
        .collect()
}

/// Appends records `lsn = from..=to` (payload derived from the lsn) one by one
/// and checks the assigned lsns.
pub(crate) async fn append_range(wal: &Wal, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        let lsn = wal.append(kind(i), parts(&payload(i))).await.unwrap();
        assert_eq!(lsn, Lsn(i));
    }
}

pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

pub(crate) async fn reopen(dir: &Path) -> (Wal, Recovered) {
    Wal::open(opts(dir)).await.unwrap()
}
