use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::timeout;

use super::*;
use crate::format::{self, SEGMENT_HEADER_LEN};
use crate::{MAX_RECORD_PAYLOAD, WalError, WalStats};

const LONG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn append_and_recover_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (wal, rec) = Wal::open(opts(&dir)).await.unwrap();
    assert!(rec.records.is_empty());
    assert!(rec.torn_tail.is_none());
    assert_eq!(
        wal.stats(),
        WalStats {
            outstanding_bytes: 0,
            segments: 1,
            last_lsn: Lsn(0),
            trimmed_through: Lsn(0),
            fsyncs: 0,
        }
    );
    append_range(&wal, 1..=100).await;
    // Empty payloads and payloads given in many parts are fine.
    assert_eq!(wal.append(9, vec![]).await.unwrap(), Lsn(101));
    let many: Vec<Bytes> = (0..50u8)
        .map(|i| Bytes::from(vec![i; i as usize]))
        .collect();
    assert_eq!(wal.append(200, many.clone()).await.unwrap(), Lsn(102));
    let total: u64 = (1..=100).map(|i| frame_len(&payload(i))).sum::<u64>()
        + FRAME_HEADER_LEN as u64
        + frame_len(&many.concat().into());
    let stats = wal.stats();
    assert_eq!(stats.outstanding_bytes, total);
    assert_eq!(stats.last_lsn, Lsn(102));
    wal.close().await.unwrap();

    let (wal2, rec) = reopen(&dir).await;
    assert!(rec.torn_tail.is_none());
    let mut want = expected(1..=100);
    want.push(WalRecord {
        lsn: Lsn(101),
        kind: 9,
        payload: Bytes::new(),
    });
    want.push(WalRecord {
        lsn: Lsn(102),
        kind: 200,
        payload: many.concat().into(),
    });
    assert_eq!(rec.records, want);
    let stats = wal2.stats();
    assert_eq!(stats.outstanding_bytes, total);
    assert_eq!(stats.last_lsn, Lsn(102));
    assert_eq!(stats.trimmed_through, Lsn(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(opts(tmp.path())).await.unwrap();
    const N: u64 = 1000;
    let barrier = Arc::new(tokio::sync::Barrier::new(N as usize));
    let mut tasks = Vec::new();
    for i in 0..N {
        let wal = wal.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let p = Bytes::from(i.to_le_bytes().to_vec());
            (wal.append(1, vec![p]).await.unwrap(), i)
        }));
    }
    let mut by_lsn = Vec::new();
    for t in tasks {
        by_lsn.push(timeout(LONG, t).await.unwrap().unwrap());
    }
    by_lsn.sort();
    let lsns: Vec<u64> = by_lsn.iter().map(|(l, _)| l.0).collect();
    assert_eq!(lsns, (1..=N).collect::<Vec<_>>());
    let fsyncs = wal.stats().fsyncs;
    eprintln!("{N} concurrent appends took {fsyncs} fsyncs");
    assert!(
        fsyncs < N / 2,
        "group commit should share fsyncs: {fsyncs} fsyncs for {N} appends"
    );
    wal.close().await.unwrap();

    // Each lsn carries the payload of the append that got it.
    let (_, rec) = reopen(tmp.path()).await;
    assert_eq!(rec.records.len(), N as usize);
    for (r, (lsn, i)) in rec.records.iter().zip(&by_lsn) {
        assert_eq!(r.lsn, *lsn);
        assert_eq!(&r.payload[..], &i.to_le_bytes());
    }
}

#[tokio::test]
async fn trim_deletes_segments_and_survives_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (wal, _) = Wal::open(small_segments(dir, 200)).await.unwrap();
    append_range(&wal, 1..=60).await;
    let before = wal.stats();
    assert!(before.segments > 5, "{before:?}");
    assert_eq!(segment_files(dir).len(), before.segments);

    wal.trim(Lsn(30)).unwrap();
    let after = wal.stats();
    assert_eq!(after.trimmed_through, Lsn(30));
    let untrimmed: u64 = (31..=60).map(|i| frame_len(&payload(i))).sum();
    assert_eq!(after.outstanding_bytes, untrimmed);
    assert!(after.segments < before.segments);
    let files = segment_files(dir);
    assert_eq!(files.len(), after.segments);
    // The oldest remaining segment still holds lsn 31: it starts at or below
    // it, and its successor starts above it.
    let firsts: Vec<u64> = files
        .iter()
        .map(|p| format::parse_segment_file_name(p.file_name().unwrap().to_str().unwrap()).unwrap())
        .collect();
    assert!(firsts[0] <= 31 && firsts[1] > 31, "{firsts:?}");

    // Idempotent and monotone.
    wal.trim(Lsn(30)).unwrap();
    wal.trim(Lsn(10)).unwrap();
    assert_eq!(wal.stats(), after);
    wal.close().await.unwrap();

    let (wal, rec) = Wal::open(small_segments(dir, 200)).await.unwrap();
    assert!(rec.torn_tail.is_none());
    assert_eq!(rec.records, expected(31..=60));
    let st = wal.stats();
    assert_eq!(st.trimmed_through, Lsn(30));
    assert_eq!(st.outstanding_bytes, untrimmed);
    assert_eq!(st.last_lsn, Lsn(60));

    // Trimming everything leaves only the active segment; the lsn carries on.
    wal.trim(Lsn(60)).unwrap();
    assert_eq!(wal.stats().segments, 1);
    assert_eq!(wal.stats().outstanding_bytes, 0);
    append_range(&wal, 61..=61).await;
    wal.close().await.unwrap();
    let (_, rec) = Wal::open(small_segments(dir, 200)).await.unwrap();
    assert_eq!(rec.records, expected(61..=61));
}

#[tokio::test]
async fn trim_beyond_last_lsn_is_clamped() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = reopen(tmp.path()).await;
    append_range(&wal, 1..=3).await;
    wal.trim(Lsn(u64::MAX)).unwrap();
    assert_eq!(wal.stats().trimmed_through, Lsn(3));
    append_range(&wal, 4..=5).await;
    wal.close().await.unwrap();
    let (_, rec) = reopen(tmp.path()).await;
    assert_eq!(rec.records, expected(4..=5));
}

#[tokio::test]
async fn active_segment_is_deleted_once_trimmed_and_rolled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Every record fills a segment: each append after the first rolls.
    let (wal, _) = Wal::open(small_segments(dir, 1)).await.unwrap();
    append_range(&wal, 1..=3).await;
    assert_eq!(wal.stats().segments, 3);
    wal.trim(Lsn(3)).unwrap();
    // Segment 3 is active: it stays.
    assert_eq!(segment_files(dir).len(), 1);
    append_range(&wal, 4..=4).await;
    // The roll sealed segment 3, already fully trimmed: gone (unlinked by the reaper
    // thread, off the write path).
    assert_eq!(wal.stats().segments, 1);
    for _ in 0..500 {
        if segment_files(dir).len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(segment_files(dir).len(), 1);
    wal.close().await.unwrap();
    let (_, rec) = Wal::open(small_segments(dir, 1)).await.unwrap();
    assert_eq!(rec.records, expected(4..=4));
}

#[tokio::test]
async fn lsn_continues_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (wal, _) = reopen(dir).await;
        append_range(&wal, 1..=5).await;
        wal.close().await.unwrap();
    }
    {
        let (wal, rec) = reopen(dir).await;
        assert_eq!(rec.records, expected(1..=5));
        append_range(&wal, 6..=7).await;
        wal.trim(Lsn(7)).unwrap();
        // Dropped without close: the writer stops once every handle is gone.
    }
    {
        let (wal, rec) = reopen(dir).await;
        assert!(rec.records.is_empty());
        assert_eq!(wal.stats().last_lsn, Lsn(7));
        assert_eq!(wal.stats().trimmed_through, Lsn(7));
        append_range(&wal, 8..=8).await;
        wal.close().await.unwrap();
    }
    // Trimmed everything and rolled away every old segment: lsns still do
    // not restart.
    {
        let (wal, _) = Wal::open(small_segments(dir, 1)).await.unwrap();
        append_range(&wal, 9..=10).await;
        wal.trim(Lsn(10)).unwrap();
        wal.close().await.unwrap();
    }
    std::fs::remove_file(dir.join(format::TRIM_FILE)).unwrap();
    let (wal, rec) = reopen(dir).await;
    // A clean close after a full trim rolled the active segment away, so even
    // without the trim file nothing comes back, and lsns do not restart.
    assert!(rec.records.is_empty());
    assert_eq!(wal.append(0, vec![]).await.unwrap(), Lsn(11));
}

#[tokio::test]
async fn backpressure_waits_for_trim() {
    let tmp = tempfile::tempdir().unwrap();
    let options = WalOptions {
        dir: tmp.path().to_path_buf(),
        segment_target_bytes: 64 << 20,
        max_outstanding_bytes: 100,
    };
    let (wal, _) = Wal::open(options).await.unwrap();
    let big = Bytes::from(vec![7u8; 90]);
    // Outstanding is 0 < 100: admitted although the record alone exceeds it.
    let first = timeout(LONG, wal.append(1, vec![big.clone()]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wal.stats().outstanding_bytes, 107);

    let w = wal.clone();
    let b = big.clone();
    let mut second = tokio::spawn(async move { w.append(1, vec![b]).await });
    // Blocked while outstanding >= limit.
    assert!(
        timeout(Duration::from_millis(200), &mut second)
            .await
            .is_err()
    );
    assert_eq!(wal.stats().last_lsn, first);
    // A trim below the current point changes nothing.
    wal.trim(Lsn(0)).unwrap();
    assert!(
        timeout(Duration::from_millis(50), &mut second)
            .await
            .is_err()
    );

    wal.trim(first).unwrap();
    let lsn = timeout(LONG, second).await.unwrap().unwrap().unwrap();
    assert_eq!(lsn, Lsn(2));
    assert_eq!(wal.stats().outstanding_bytes, 107);

    // A cancelled waiting append releases nothing it did not take.
    let cancelled = timeout(Duration::from_millis(50), wal.append(1, vec![big.clone()])).await;
    assert!(cancelled.is_err());
    assert_eq!(wal.stats().outstanding_bytes, 107);
    wal.trim(lsn).unwrap();
    assert_eq!(wal.stats().outstanding_bytes, 0);
    assert_eq!(
        timeout(LONG, wal.append(1, vec![big]))
            .await
            .unwrap()
            .unwrap(),
        Lsn(3)
    );
}

#[tokio::test]
async fn close_fails_later_appends_and_wakes_waiters() {
    let tmp = tempfile::tempdir().unwrap();
    let options = WalOptions {
        dir: tmp.path().to_path_buf(),
        segment_target_bytes: 64 << 20,
        max_outstanding_bytes: 10,
    };
    let (wal, _) = Wal::open(options).await.unwrap();
    wal.append(1, vec![Bytes::from_static(b"x")]).await.unwrap();
    let w = wal.clone();
    let mut waiting = tokio::spawn(async move { w.append(1, vec![]).await });
    // Backpressured: outstanding (18 bytes) >= 10.
    assert!(
        timeout(Duration::from_millis(100), &mut waiting)
            .await
            .is_err()
    );
    timeout(LONG, wal.close()).await.unwrap().unwrap();
    assert!(matches!(
        timeout(LONG, waiting).await.unwrap().unwrap(),
        Err(WalError::Closed)
    ));
    assert!(matches!(wal.append(1, vec![]).await, Err(WalError::Closed)));
    // Idempotent; stats and trim still work.
    wal.close().await.unwrap();
    assert_eq!(wal.stats().last_lsn, Lsn(1));
    wal.trim(Lsn(1)).unwrap();
    assert_eq!(wal.stats().outstanding_bytes, 0);
    let (_, rec) = reopen(tmp.path()).await;
    assert!(rec.records.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_flushes_queued_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = reopen(tmp.path()).await;
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let w = wal.clone();
        tasks.push(tokio::spawn(async move {
            w.append(0, vec![Bytes::from(i.to_le_bytes().to_vec())])
                .await
        }));
    }
    tokio::task::yield_now().await;
    timeout(LONG, wal.close()).await.unwrap().unwrap();
    let mut ok = 0;
    for t in tasks {
        match timeout(LONG, t).await.unwrap().unwrap() {
            Ok(_) => ok += 1,
            Err(WalError::Closed) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // Every append that succeeded is durable, and only those.
    let (_, rec) = reopen(tmp.path()).await;
    assert_eq!(rec.records.len(), ok);
}

#[tokio::test]
async fn writer_failure_fails_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = reopen(tmp.path()).await;
    append_range(&wal, 1..=2).await;
    wal.inject_sync_failure();
    let err = wal.append(0, vec![]).await.unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{err}"
    );
    let again = wal.append(0, vec![]).await.unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(wal.close().await.unwrap_err().to_string(), err.to_string());
    assert_eq!(wal.stats().last_lsn, Lsn(2));
    drop(wal);
    // Reopening recovers; the lsn of the failed append is not reused (its
    // bytes were written, only the sync "failed").
    let (wal, rec) = reopen(tmp.path()).await;
    assert_eq!(rec.records[..2], expected(1..=2)[..]);
    let next = wal.append(0, vec![]).await.unwrap();
    assert_eq!(next.0, rec.records.len() as u64 + 1);
}

#[tokio::test]
async fn rejects_oversized_records_and_bad_options() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = reopen(tmp.path()).await;
    let mib = Bytes::from(vec![0u8; 1 << 20]);
    let parts: Vec<Bytes> = (0..(MAX_RECORD_PAYLOAD >> 20) + 1)
        .map(|_| mib.clone())
        .collect();
    assert!(matches!(
        wal.append(0, parts).await,
        Err(WalError::RecordTooLarge { .. })
    ));
    assert_eq!(wal.stats().outstanding_bytes, 0);
    assert_eq!(wal.append(0, vec![]).await.unwrap(), Lsn(1));

    let bad = WalOptions {
        max_outstanding_bytes: 0,
        ..opts(&tmp.path().join("other"))
    };
    assert!(matches!(
        Wal::open(bad).await,
        Err(WalError::InvalidOptions(_))
    ));
}

#[tokio::test]
async fn corrupt_header_in_a_middle_segment_is_an_error_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (wal, _) = Wal::open(small_segments(dir, 100)).await.unwrap();
    append_range(&wal, 1..=20).await;
    wal.close().await.unwrap();
    let files = segment_files(dir);
    assert!(files.len() >= 3);
    let snapshot = |files: &[PathBuf]| -> Vec<Vec<u8>> {
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    };

    // Damaged header checksum.
    let mut data = std::fs::read(&files[1]).unwrap();
    data[15] ^= 0x40;
    std::fs::write(&files[1], &data).unwrap();
    let before = snapshot(&files);
    let err = Wal::open(small_segments(dir, 100)).await.unwrap_err();
    assert!(matches!(err, WalError::Corrupt { offset: 0, .. }), "{err}");
    assert_eq!(segment_files(dir), files);
    assert_eq!(snapshot(&files), before);

    // Unknown version with a valid checksum.
    data[15] ^= 0x40;
    data[8] = 9;
    let crc = crc32c::crc32c(&data[..28]);
    data[28..32].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&files[1], &data).unwrap();
    let err = Wal::open(small_segments(dir, 100)).await.unwrap_err();
    assert!(
        matches!(err, WalError::UnsupportedVersion { version: 9, .. }),
        "{err}"
    );
    // ... even as the last segment: never delete what we cannot read.
    for f in &files[2..] {
        std::fs::remove_file(f).unwrap();
    }
    let err = Wal::open(small_segments(dir, 100)).await.unwrap_err();
    assert!(matches!(err, WalError::UnsupportedVersion { .. }), "{err}");
}

#[tokio::test]
async fn missing_middle_segment_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (wal, _) = Wal::open(small_segments(dir, 100)).await.unwrap();
    append_range(&wal, 1..=20).await;
    wal.close().await.unwrap();
    let files = segment_files(dir);
    assert!(files.len() >= 3);
    std::fs::remove_file(&files[1]).unwrap();
    let err = Wal::open(small_segments(dir, 100)).await.unwrap_err();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    assert_eq!(segment_files(dir).len(), files.len() - 1);
}

#[tokio::test]
async fn damaged_or_stale_trim_files_are_handled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (wal, _) = reopen(dir).await;
    append_range(&wal, 1..=4).await;
    wal.trim(Lsn(2)).unwrap();
    wal.close().await.unwrap();
    // A leftover temp file from a crash mid-trim is removed.
    std::fs::write(dir.join(format::TRIM_TMP_FILE), b"junk").unwrap();
    let (wal, rec) = reopen(dir).await;
    assert_eq!(rec.records, expected(3..=4));
    assert!(!dir.join(format::TRIM_TMP_FILE).exists());
    wal.close().await.unwrap();
    // A damaged trim file is ignored: at-least-once.
    std::fs::write(dir.join(format::TRIM_FILE), b"garbage").unwrap();
    let (_, rec) = reopen(dir).await;
    assert_eq!(rec.records, expected(1..=4));
}

#[tokio::test]
async fn lost_trimmed_tail_does_not_reuse_lsns() {
    // The trim point is beyond the last surviving record (records 6..=10 were
    // trimmed, then lost to damage): the next lsn is still 11.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (wal, _) = reopen(dir).await;
        append_range(&wal, 1..=10).await;
        wal.trim(Lsn(10)).unwrap();
        // Dropped without close (a crash): no roll, the segment stays.
    }
    // Let the writer thread notice that every handle is gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    let five: u64 = (1..=5).map(|i| frame_len(&payload(i))).sum();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .unwrap();
    f.set_len(SEGMENT_HEADER_LEN as u64 + five).unwrap();
    drop(f);
    let (wal, rec) = reopen(dir).await;
    assert!(rec.records.is_empty());
    assert!(rec.torn_tail.is_none());
    assert_eq!(wal.stats().last_lsn, Lsn(10));
    assert_eq!(wal.append(0, vec![]).await.unwrap(), Lsn(11));
    wal.close().await.unwrap();
    // The skipped lsns are recorded in the new segment's header: the gap is
    // accepted at the next recovery.
    let (wal, rec) = reopen(dir).await;
    assert!(rec.torn_tail.is_none());
    assert_eq!(
        rec.records.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        [Lsn(11)]
    );
    assert_eq!(wal.append(0, vec![]).await.unwrap(), Lsn(12));
}

#[tokio::test]
async fn new_wal_dir_is_created_and_foreign_files_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/c");
    let (wal, _) = reopen(&dir).await;
    append_range(&wal, 1..=2).await;
    wal.close().await.unwrap();
    std::fs::write(dir.join("README"), b"hi").unwrap();
    std::fs::write(dir.join("1.wal"), b"not a segment").unwrap();
    std::fs::create_dir(dir.join("00000000000000000099.wal")).unwrap();
    let (wal, rec) = reopen(&dir).await;
    assert_eq!(rec.records, expected(1..=2));
    assert!(rec.torn_tail.is_none());
    append_range(&wal, 3..=3).await;
    assert!(format!("{wal:?}").contains("Wal"));
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Wal>();
    check::<WalError>();
}

#[tokio::test]
async fn clean_close_after_full_trim_leaves_no_records_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(opts(dir.path())).await.unwrap();
    for i in 1..=50u64 {
        wal.append(kind(i), parts(&payload(i))).await.unwrap();
    }
    wal.trim(Lsn(50)).unwrap();
    wal.close().await.unwrap();
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        on_disk <= crate::format::SEGMENT_HEADER_LEN as u64,
        "{on_disk} bytes of segments left after a clean close"
    );
    let (wal, rec) = Wal::open(opts(dir.path())).await.unwrap();
    assert!(rec.records.is_empty());
    let next = wal.append(1, vec![Bytes::from_static(b"x")]).await.unwrap();
    assert!(next.0 > 50, "lsns continue after the roll: {next:?}");
    wal.close().await.unwrap();
}

#[tokio::test]
async fn submitted_lsns_follow_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(opts(dir.path())).await.unwrap();
    let submitted: Vec<_> = (1..=20u64)
        .map(|i| wal.submit(kind(i), parts(&payload(i))).unwrap())
        .collect();
    let lsns: Vec<u64> = submitted.iter().map(|s| s.lsn().0).collect();
    assert_eq!(lsns, (1..=20).collect::<Vec<_>>());
    for s in submitted {
        let lsn = s.lsn();
        assert_eq!(s.durable().await.unwrap(), lsn);
    }
    wal.close().await.unwrap();
    let (_, rec) = Wal::open(opts(dir.path())).await.unwrap();
    assert_eq!(rec.records, expected(1..=20));
}
