//! The broker's per-batch produce work on a realistic payload: one uncompressed
//! RecordBatch v2 of 100 records of ~800 bytes (what a librdkafka producer with
//! default linger sends per partition), built once with kafka-protocol's encoder.
//!
//! * `batch/split_and_validate`: framing, header checks and the CRC-32C over the batch.
//! * `batch/assign`: setting base offset + leader epoch, the one copy per batch.

// Benchmarks are not library code: failing loudly is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cirrus_broker::batch::{assign, split_and_validate};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const RECORDS: usize = 100;
const VALUE_LEN: usize = 800;

fn produce_payload() -> Bytes {
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever offset - sequence changes.
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{i:06}"))),
            value: Some(Bytes::from(
                (0..VALUE_LEN)
                    .map(|j| b'a' + ((i + j) % 26) as u8)
                    .collect::<Vec<u8>>(),
            )),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

fn batch(c: &mut Criterion) {
    let payload = produce_payload();
    let batches = split_and_validate(&payload, 1 << 20).unwrap();
    assert_eq!(batches.len(), 1, "the encoder must produce one batch");
    assert_eq!(batches[0].header.records_count, RECORDS as i32);
    let one = batches[0].bytes.clone();

    let mut group = c.benchmark_group("batch");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(20);
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("split_and_validate_100x800B", |b| {
        b.iter(|| split_and_validate(black_box(&payload), 1 << 20).unwrap());
    });
    group.bench_function("assign_100x800B", |b| {
        b.iter(|| assign(black_box(&one), 42, 7));
    });
    group.finish();
}

criterion_group!(benches, batch);
criterion_main!(benches);
