//! Data object encoding: `ObjectBuilder` push + finish of an ~8 MiB object made of
//! 1,000 streams x ~8 KiB chunks (what the broker seals at `object_target_bytes`),
//! and `decode_index` of that object's footer (what every read of a cold object does
//! first).

// Benchmarks are not library code: failing loudly is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use cirrus_storage::format::{ObjectBuilder, TRAILER_LEN, decode_index};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const STREAMS: u64 = 1_000;
/// 8 MiB / 1,000 streams.
const CHUNK: usize = (8 << 20) / STREAMS as usize;
/// Records per chunk (sets the offsets; the bytes are opaque to the builder).
const RECORDS_PER_CHUNK: i64 = 10;

fn chunks() -> Vec<Bytes> {
    (0..STREAMS)
        .map(|s| Bytes::from(vec![(s % 251) as u8; CHUNK]))
        .collect()
}

fn build(chunks: &[Bytes]) -> cirrus_storage::format::EncodedObject {
    let mut builder = ObjectBuilder::new();
    // Interleave the way a partition-by-partition flush arrives: stream ids are not
    // pushed in sorted order.
    for i in 0..STREAMS {
        let stream = (i * 7919) % STREAMS;
        let first = 1_000 * stream as i64;
        builder
            .push(
                stream,
                first,
                first + RECORDS_PER_CHUNK - 1,
                1_700_000_000_000 + i as i64,
                chunks[stream as usize].clone(),
            )
            .unwrap();
    }
    builder.finish()
}

fn object(c: &mut Criterion) {
    let chunks = chunks();
    let total = (CHUNK as u64) * STREAMS;

    let mut group = c.benchmark_group("object");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(20);

    group.throughput(Throughput::Bytes(total));
    group.bench_function("build_8MiB_1000_streams", |b| {
        b.iter(|| black_box(build(black_box(&chunks))));
    });

    let encoded = build(&chunks);
    let footer = encoded.parts.last().unwrap().clone();
    assert!(footer.len() > TRAILER_LEN);
    assert_eq!(decode_index(&footer).unwrap().len(), STREAMS as usize);
    // Reported per footer byte: the footer is what a reader fetches and parses.
    group.throughput(Throughput::Bytes(footer.len() as u64));
    group.bench_function("decode_index_1000_streams", |b| {
        b.iter(|| black_box(decode_index(black_box(&footer)).unwrap()));
    });
    group.finish();
}

criterion_group!(benches, object);
criterion_main!(benches);
