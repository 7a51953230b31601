//! `Wal::append` + fdatasync, in a temporary directory under the target dir (the
//! data disk).
//!
//! * `wal_append/single_1KiB`: one appender, 1 KiB records: the latency of one
//!   durable append (one write + one fdatasync each).
//! * `wal_append/concurrent64/{1KiB,64KiB}`: 64 appenders on a multi-thread tokio
//!   runtime; one iteration is one record, so the reported time is amortised per
//!   record and the throughput is in bytes/s (group commit at work).
//!
//! Records are trimmed as we go so backpressure never stalls the benchmark and
//! segments are deleted once rolled.

// Benchmarks are not library code: failing loudly on an IO error is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cirrus_wal::{Lsn, Wal, WalOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

const KIND: u8 = 1;
const APPENDERS: u64 = 64;
/// Trim roughly every this many bytes appended.
const TRIM_EVERY_BYTES: u64 = 4 << 20;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn open_wal(rt: &Runtime, dir: &std::path::Path) -> Wal {
    let opts = WalOptions {
        dir: dir.join("wal"),
        segment_target_bytes: 64 << 20,
        max_outstanding_bytes: 1 << 30,
    };
    let (wal, recovered) = rt.block_on(Wal::open(opts)).expect("open wal");
    assert!(recovered.records.is_empty());
    wal
}

fn tempdir() -> tempfile::TempDir {
    // CARGO_TARGET_TMPDIR is under target/, i.e. on the disk that holds the data.
    tempfile::Builder::new()
        .prefix("wal-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
}

fn payload(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>())
}

fn single(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempdir();
    let wal = open_wal(&rt, dir.path());
    let record = payload(1024);
    let trim_every = TRIM_EVERY_BYTES / record.len() as u64;

    let mut group = c.benchmark_group("wal_append");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(20);
    group.throughput(Throughput::Bytes(record.len() as u64));
    group.bench_function("single_1KiB", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let mut last = Lsn(0);
                for i in 0..iters {
                    last = wal.append(KIND, vec![record.clone()]).await.unwrap();
                    if i % trim_every == trim_every - 1 {
                        wal.trim(last).unwrap();
                    }
                }
                let elapsed = start.elapsed();
                wal.trim(last).unwrap();
                elapsed
            })
        });
    });
    group.finish();
    rt.block_on(wal.close()).unwrap();
}

fn concurrent(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempdir();
    let wal = Arc::new(open_wal(&rt, dir.path()));

    let mut group = c.benchmark_group("wal_append/concurrent64");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(20);
    for (name, size) in [("1KiB", 1024usize), ("64KiB", 64 << 10)] {
        let record = payload(size);
        let trim_every = (TRIM_EVERY_BYTES / size as u64).max(1);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..APPENDERS)
                        .map(|k| {
                            // `iters` records in all, spread over the appenders.
                            let n = iters / APPENDERS + u64::from(k < iters % APPENDERS);
                            let wal = wal.clone();
                            let record = record.clone();
                            tokio::spawn(async move {
                                let mut last = Lsn(0);
                                for _ in 0..n {
                                    last = wal.append(KIND, vec![record.clone()]).await.unwrap();
                                    if last.0.is_multiple_of(trim_every) {
                                        wal.trim(last).unwrap();
                                    }
                                }
                                last
                            })
                        })
                        .collect();
                    let mut last = Lsn(0);
                    for t in tasks {
                        last = last.max(t.await.unwrap());
                    }
                    let elapsed = start.elapsed();
                    wal.trim(last).unwrap();
                    elapsed
                })
            });
        });
    }
    group.finish();
    let stats = wal.stats();
    eprintln!(
        "wal_append/concurrent64: {} records, {} fdatasyncs ({:.1} records per sync)",
        stats.last_lsn.0,
        stats.fsyncs,
        stats.last_lsn.0 as f64 / stats.fsyncs.max(1) as f64
    );
    rt.block_on(wal.close()).unwrap();
}

criterion_group!(benches, single, concurrent);
criterion_main!(benches);
