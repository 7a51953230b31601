//! Damage at every byte: truncation and byte flips.

use std::path::Path;

use super::*;
use crate::WalError;
use crate::format::SEGMENT_HEADER_LEN;

const HEADER: u64 = SEGMENT_HEADER_LEN as u64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes records `1..=n` into a fresh WAL in `dir` and returns the segment
/// files' contents (oldest first) and names.
fn build(rt: &tokio::runtime::Runtime, dir: &Path, n: u64, target: u64) -> Vec<(String, Vec<u8>)> {
    rt.block_on(async {
        let (wal, _) = Wal::open(small_segments(dir, target)).await.unwrap();
        append_range(&wal, 1..=n).await;
        wal.close().await.unwrap();
    });
    segment_files(dir)
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_str().unwrap().to_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Frame end offsets within a segment holding records `first..=last`, starting
/// with the header end (offset of the first frame).
fn boundaries(first: u64, last: u64) -> Vec<u64> {
    let mut v = vec![HEADER];
    for i in first..=last {
        v.push(v[v.len() - 1] + frame_len(&payload(i)));
    }
    v
}

/// Number of whole frames in the first `len` bytes (0 if the header is cut).
fn whole_frames(bounds: &[u64], len: u64) -> usize {
    bounds.iter().skip(1).take_while(|&&b| b <= len).count()
}

/// Index of the frame containing byte `offset` (`None` if in the header).
fn frame_at(bounds: &[u64], offset: u64) -> Option<usize> {
    if offset < HEADER {
        return None;
    }
    Some(bounds.iter().skip(1).take_while(|&&b| b <= offset).count())
}

fn write_segments(dir: &Path, segs: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, data) in segs {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

#[test]
fn truncation_at_every_byte_offset() {
    let rt = runtime();
    let src = tempfile::tempdir().unwrap();
    const N: u64 = 14;
    let segs = build(&rt, src.path(), N, 64 << 20);
    assert_eq!(segs.len(), 1);
    let (name, data) = &segs[0];
    let bounds = boundaries(1, N);
    assert_eq!(*bounds.last().unwrap(), data.len() as u64);

    for cut in 0..=data.len() {
        let l = cut as u64;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_segments(dir, &[(name.clone(), data[..cut].to_vec())]);
        let k = whole_frames(&bounds, l);
        let good_len = if l < HEADER { 0 } else { bounds[k] };
        let at_boundary = l >= HEADER && l == bounds[k];

        rt.block_on(async {
            let (wal, rec) = reopen(dir).await;
            assert_eq!(rec.records, expected(1..=k as u64), "cut at {l}");
            assert_eq!(
                rec.torn_tail.is_some(),
                !at_boundary,
                "cut at {l}: {:?}",
                rec.torn_tail
            );
            if let Some(t) = &rec.torn_tail {
                assert_eq!(t.offset, good_len, "cut at {l}");
                assert_eq!(t.segment, dir.join(name));
            }
            match std::fs::metadata(dir.join(name)).map(|m| m.len()) {
                Ok(len) => assert_eq!(len, good_len, "cut at {l}"),
                // The headerless file was dropped, or no whole record was
                // left and the torn one's lsn skipped: the segment was
                // replaced by a fresh one starting at lsn 2.
                Err(_) => assert!(
                    k == 0 && (l < HEADER || l >= HEADER + FRAME_HEADER_LEN as u64),
                    "cut at {l}"
                ),
            }
            // The next lsn follows the recovered ones, skipping every lsn the
            // dropped bytes could have held (they might have been
            // acknowledged if the tail was damaged rather than torn), and,
            // for a dropped file, its name.
            let lsn = wal
                .append(3, vec![Bytes::from_static(b"next")])
                .await
                .unwrap();
            let skipped = if l < HEADER {
                1
            } else {
                (l - good_len) / FRAME_HEADER_LEN as u64
            };
            assert_eq!(lsn.0, k as u64 + 1 + skipped, "cut at {l}");
            wal.close().await.unwrap();
            let (_, again) = reopen(dir).await;
            assert!(again.torn_tail.is_none(), "cut at {l}");
            let mut want = expected(1..=k as u64);
            want.push(WalRecord {
                lsn,
                kind: 3,
                payload: Bytes::from_static(b"next"),
            });
            assert_eq!(again.records, want, "cut at {l}");
        });
    }
}

#[test]
fn byte_flip_at_every_offset_stops_at_the_damaged_record() {
    let rt = runtime();
    let src = tempfile::tempdir().unwrap();
    const N: u64 = 10;
    let segs = build(&rt, src.path(), N, 64 << 20);
    let (name, data) = &segs[0];
    let bounds = boundaries(1, N);

    for offset in 0..data.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut damaged = data.clone();
            damaged[offset] ^= mask;
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            write_segments(dir, &[(name.clone(), damaged)]);
            rt.block_on(async {
                let what = format!("flip {mask:#x} at {offset}");
                let Some(k) = frame_at(&bounds, offset as u64) else {
                    // A damaged header followed by records is not a crash
                    // artifact: refuse, and leave the file alone.
                    let err = Wal::open(opts(dir)).await.unwrap_err();
                    assert!(
                        matches!(err, WalError::Corrupt { offset: 0, .. }),
                        "{what}: {err}"
                    );
                    assert_eq!(
                        std::fs::read(dir.join(name)).unwrap()[offset],
                        data[offset] ^ mask
                    );
                    assert_eq!(segment_files(dir).len(), 1);
                    return;
                };
                let (wal, rec) = reopen(dir).await;
                assert_eq!(rec.records, expected(1..=k as u64), "{what}");
                let torn = rec.torn_tail.as_ref().expect(&what);
                assert_eq!(torn.offset, bounds[k], "{what}: {}", torn.reason);
                let lsn = wal.append(0, vec![]).await.unwrap();
                assert!(lsn.0 > k as u64, "{what}");
                wal.close().await.unwrap();
            });
        }
    }
}

#[test]
fn damage_in_an_earlier_segment_drops_the_later_ones() {
    let rt = runtime();
    let src = tempfile::tempdir().unwrap();
    const N: u64 = 12;
    // ~4 records per segment.
    let segs = build(&rt, src.path(), N, 90);
    assert!(segs.len() >= 3, "{}", segs.len());
    let firsts: Vec<u64> = segs
        .iter()
        .map(|(n, _)| crate::format::parse_segment_file_name(n).unwrap())
        .collect();
    let last_of = |i: usize| firsts.get(i + 1).map_or(N, |f| f - 1);

    for (si, (name, data)) in segs.iter().enumerate().take(segs.len() - 1) {
        let bounds = boundaries(firsts[si], last_of(si));
        assert_eq!(*bounds.last().unwrap(), data.len() as u64);
        for offset in 0..data.len() {
            let mut damaged = segs.clone();
            damaged[si].1[offset] ^= 0x10;
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            write_segments(dir, &damaged);
            let what = format!("segment {si}, flip at {offset}");
            rt.block_on(async {
                let opened = Wal::open(small_segments(dir, 90)).await;
                if (offset as u64) < HEADER {
                    // A damaged header of a non-last segment cannot be
                    // repaired by truncation.
                    let err = opened.unwrap_err();
                    assert!(
                        matches!(err, WalError::Corrupt { offset: 0, .. }),
                        "{what}: {err}"
                    );
                    assert_eq!(segment_files(dir).len(), segs.len(), "{what}");
                    return;
                }
                let (wal, rec) = opened.unwrap();
                let k = frame_at(&bounds, offset as u64).unwrap();
                let last_good = firsts[si] + k as u64 - 1;
                assert_eq!(rec.records, expected(1..=last_good), "{what}");
                let torn = rec.torn_tail.as_ref().expect(&what);
                assert_eq!(torn.segment, dir.join(name), "{what}");
                assert_eq!(torn.offset, bounds[k], "{what}");
                // Later segments are gone; lsns that were handed out are not
                // reused.
                let lsn = wal.append(0, vec![]).await.unwrap();
                assert!(lsn.0 > N, "{what}: {lsn:?}");
                wal.close().await.unwrap();
                let (_, again) = Wal::open(small_segments(dir, 90)).await.unwrap();
                assert!(again.torn_tail.is_none(), "{what}");
                assert_eq!(again.records.len() as u64, last_good + 1, "{what}");
                assert_eq!(again.records.last().unwrap().lsn, lsn, "{what}");
            });
        }
    }

    // Truncating a middle segment: mid-frame is a torn tail; exactly at a
    // frame boundary it leaves a hole before the next segment: corrupt.
    let si = 1;
    let bounds = boundaries(firsts[si], last_of(si));
    for cut in HEADER as usize..segs[si].1.len() {
        let mut damaged = segs.clone();
        damaged[si].1.truncate(cut);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_segments(dir, &damaged);
        rt.block_on(async {
            let opened = Wal::open(small_segments(dir, 90)).await;
            let k = whole_frames(&bounds, cut as u64);
            if bounds[k] == cut as u64 {
                assert!(
                    matches!(opened, Err(WalError::Corrupt { .. })),
                    "cut at {cut}"
                );
            } else {
                let (_, rec) = opened.unwrap();
                assert_eq!(
                    rec.records,
                    expected(1..=firsts[si] + k as u64 - 1),
                    "cut at {cut}"
                );
                assert_eq!(rec.torn_tail.unwrap().offset, bounds[k]);
                assert_eq!(segment_files(dir).len(), si + 2, "cut at {cut}");
            }
        });
    }
}

#[test]
fn damaged_header_of_an_empty_last_segment_is_a_torn_tail() {
    let rt = runtime();
    let src = tempfile::tempdir().unwrap();
    let segs = build(&rt, src.path(), 4, 64 << 20);
    let (name, data) = &segs[0];
    let header_only = &data[..HEADER as usize];
    // Partial header, header-sized garbage, zero-filled blocks: all look like
    // a crash while the segment was being created.
    let mut bad_crc = header_only.to_vec();
    bad_crc[30] ^= 1;
    let cases: Vec<Vec<u8>> = vec![header_only[..5].to_vec(), bad_crc, vec![0u8; 4096]];
    for (i, content) in cases.into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_segments(dir, &[(name.clone(), content)]);
        rt.block_on(async {
            let (wal, rec) = reopen(dir).await;
            assert!(rec.records.is_empty(), "case {i}");
            let torn = rec.torn_tail.unwrap();
            assert_eq!(torn.offset, 0, "case {i}");
            assert_eq!(torn.segment, dir.join(name), "case {i}");
            // A fresh segment replaced it (skipping the lsns the zeros could
            // have held).
            wal.append(0, vec![]).await.unwrap();
            wal.close().await.unwrap();
            let (_, again) = reopen(dir).await;
            assert!(again.torn_tail.is_none(), "case {i}");
            assert_eq!(again.records.len(), 1, "case {i}");
        });
    }
}

#[test]
fn recovery_interrupted_after_creating_the_new_segment_is_safe() {
    let rt = runtime();
    let src = tempfile::tempdir().unwrap();
    const N: u64 = 12;
    let segs = build(&rt, src.path(), N, 90);
    assert!(segs.len() >= 3);
    let mut damaged = segs.clone();
    let bounds = boundaries(1, 12);
    // Damage the second frame of the first segment.
    damaged[0].1[bounds[1] as usize + 20] ^= 0x04;

    // A full recovery, to learn which segment it creates.
    let full = tempfile::tempdir().unwrap();
    write_segments(full.path(), &damaged);
    let (new_name, new_data, first_lsn) = rt.block_on(async {
        let (wal, rec) = reopen(full.path()).await;
        assert_eq!(rec.records, expected(1..=1));
        let lsn = wal.append(0, vec![]).await.unwrap();
        assert!(lsn.0 > N);
        wal.close().await.unwrap();
        let files = segment_files(full.path());
        let last = files.last().unwrap();
        let mut data = std::fs::read(last).unwrap();
        data.truncate(HEADER as usize);
        (
            last.file_name().unwrap().to_str().unwrap().to_owned(),
            data,
            lsn,
        )
    });

    // Crash right after that segment was created: the damaged segment and
    // the later ones are all still there.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut state = damaged.clone();
    state.push((new_name, new_data));
    write_segments(dir, &state);
    rt.block_on(async {
        let (wal, rec) = reopen(dir).await;
        assert_eq!(rec.records, expected(1..=1));
        assert!(rec.torn_tail.is_some());
        // The interrupted run's segment is removed too, but its lsns stay
        // used.
        let lsn = wal.append(0, vec![]).await.unwrap();
        assert!(lsn > first_lsn, "{lsn:?} vs {first_lsn:?}");
        wal.close().await.unwrap();
        let (_, again) = reopen(dir).await;
        assert!(again.torn_tail.is_none());
        assert_eq!(again.records.len(), 2);
    });
}
