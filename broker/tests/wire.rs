#![allow(clippy::unwrap_used)]
//! Wire-level tests of the Kafka gateway on a real socket: requests are encoded with
//! the kafka-protocol crate (a client's view), so these check exact error codes that
//! client libraries hide. End-to-end tests with real client libraries live in tests/e2e.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{Client, start};

fn records(n: usize, producer: Option<(i64, i16, i32)>, ts: i64) -> Bytes {
    let recs: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.map_or(-1, |p| p.0),
            producer_epoch: producer.map_or(-1, |p| p.1),
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch when offset - sequence changes.
            sequence: producer.map_or(i as i32 - 1, |p| p.2 + i as i32),
            timestamp: ts + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

fn produce_req(topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ])
}

fn produce_result(resp: &ProduceResponse) -> (i16, i64) {
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_req(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_current_leader_epoch(-1)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

async fn create_topic(c: &mut Client, name: &str, partitions: i32) -> i16 {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.into())))
                .with_num_partitions(partitions)
                .with_replication_factor(-1),
        ]);
    c.send(5, &req).await.topics[0].error_code
}

#[tokio::test]
async fn api_versions_advertises_only_what_is_implemented() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    let resp = c.send(3, &ApiVersionsRequest::default()).await;
    assert_eq!(resp.error_code, 0);
    let keys: Vec<i16> = resp.api_keys.iter().map(|k| k.api_key).collect();
    assert!(keys.contains(&(ApiKey::Produce as i16)));
    assert!(keys.contains(&(ApiKey::Fetch as i16)));
    // Consumer groups (classic and KIP-848); transactions and share groups are not
    // implemented.
    assert!(keys.contains(&(ApiKey::JoinGroup as i16)));
    assert!(keys.contains(&(ApiKey::FindCoordinator as i16)));
    assert!(keys.contains(&(ApiKey::ConsumerGroupHeartbeat as i16)));
    assert!(keys.contains(&(ApiKey::ConsumerGroupDescribe as i16)));
    assert!(!keys.contains(&(ApiKey::AddPartitionsToTxn as i16)));
    assert!(!keys.contains(&(ApiKey::TxnOffsetCommit as i16)));
    assert!(!keys.contains(&(ApiKey::ShareGroupHeartbeat as i16)));
    for k in &resp.api_keys {
        let api = ApiKey::try_from(k.api_key).unwrap();
        assert!(cirrus_broker::handlers::supported(api).is_some());
    }
    // An unknown ApiVersions version gets v0 with UNSUPPORTED_VERSION, as Kafka answers.
    let mut raw = BytesMut::new();
    raw.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(99)
        .with_correlation_id(7)
        .encode(&mut raw, 1)
        .unwrap();
    let len = (raw.len() - 4) as i32;
    raw[..4].copy_from_slice(&len.to_be_bytes());
    c.stream.write_all(&raw).await.unwrap();
    let mut frame = c.read_frame().await.unwrap();
    assert_eq!(frame.get_i32(), 7);
    let v0 = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(v0.error_code, ResponseError::UnsupportedVersion.code());
    assert!(!v0.api_keys.is_empty());
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn produce_fetch_and_bad_input_get_kafka_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |a| {
        a.auto_create_topics = Some(false);
        a.message_max_bytes = Some(cirrus_broker::config::ByteSize(4096));
    })
    .await;
    let mut c = Client::connect(broker.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "t", 2).await, 0);
    assert_eq!(
        create_topic(&mut c, "t", 2).await,
        ResponseError::TopicAlreadyExists.code()
    );
    assert_eq!(
        create_topic(&mut c, "bad name!", 1).await,
        ResponseError::InvalidTopicException.code()
    );

    let resp = c
        .send(9, &produce_req("t", 0, records(3, None, 1_000)))
        .await;
    assert_eq!(produce_result(&resp), (0, 0));
    let resp = c
        .send(9, &produce_req("t", 0, records(2, None, 2_000)))
        .await;
    assert_eq!(produce_result(&resp), (0, 3));

    // Corrupt CRC.
    let mut bad = records(1, None, 5).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    let resp = c.send(9, &produce_req("t", 0, Bytes::from(bad))).await;
    assert_eq!(
        produce_result(&resp).0,
        ResponseError::CorruptMessage.code()
    );
    // Oversized batch.
    let big = records(400, None, 5);
    assert!(big.len() > 4096);
    let resp = c.send(9, &produce_req("t", 0, big)).await;
    assert_eq!(
        produce_result(&resp).0,
        ResponseError::MessageTooLarge.code()
    );
    // Unknown topic with auto-create off, and unknown partition.
    let resp = c
        .send(9, &produce_req("nope", 0, records(1, None, 5)))
        .await;
    assert_eq!(
        produce_result(&resp).0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let resp = c.send(9, &produce_req("t", 9, records(1, None, 5))).await;
    assert_eq!(
        produce_result(&resp).0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let md = c
        .send(
            9,
            &MetadataRequest::default()
                .with_allow_auto_topic_creation(true)
                .with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_static_str("nope")))),
                ])),
        )
        .await;
    assert_eq!(
        md.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );

    // Fetch from the middle of the first batch returns that whole batch and the next.
    let resp = c.send(12, &fetch_req("t", 0, 1, 0)).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 5);
    let mut recs = p.records.clone().unwrap();
    let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut recs).unwrap();
    let offsets: Vec<i64> = sets
        .iter()
        .flat_map(|s| s.records.iter().map(|r| r.offset))
        .collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    // Past the end: OFFSET_OUT_OF_RANGE.
    let resp = c.send(12, &fetch_req("t", 0, 6, 0)).await;
    assert_eq!(
        resp.responses[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );
    // At the end: long poll until data arrives from another connection.
    let addr = broker.kafka_addr;
    let producer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut c2 = Client::connect(addr).await;
        produce_result(
            &c2.send(9, &produce_req("t", 0, records(1, None, 3_000)))
                .await,
        )
    });
    let resp = c.send(12, &fetch_req("t", 0, 5, 10_000)).await;
    assert_eq!(producer.await.unwrap(), (0, 5));
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.high_watermark, 6);
    assert!(
        !p.records.as_ref().unwrap().is_empty(),
        "the long poll returned with the new data"
    );

    // ListOffsets: earliest, latest, by timestamp.
    let list = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(ts)
                            .with_current_leader_epoch(-1),
                    ]),
            ])
    };
    let at = |r: ListOffsetsResponse| {
        (
            r.topics[0].partitions[0].offset,
            r.topics[0].partitions[0].timestamp,
        )
    };
    assert_eq!(at(c.send(5, &list(-2)).await).0, 0);
    assert_eq!(at(c.send(5, &list(-1)).await).0, 6);
    assert_eq!(at(c.send(5, &list(1_001)).await), (1, 1_001));
    assert_eq!(at(c.send(5, &list(2_000)).await), (3, 2_000));
    assert_eq!(at(c.send(5, &list(9_999)).await).0, -1);
    assert_eq!(at(c.send(7, &list(-3)).await), (5, 3_000));
    broker.shutdown().await.unwrap();
}

fn delete_records_req(topic: &str, partition: i32, offset: i64) -> DeleteRecordsRequest {
    DeleteRecordsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(partition)
                        .with_offset(offset),
                ]),
        ])
}

async fn earliest(c: &mut Client, topic: &str) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-2),
                ]),
        ]);
    let resp = c.send(7, &req).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, 0);
    resp.topics[0].partitions[0].offset
}

/// DeleteRecords moves the log start: ListOffsets(earliest) follows it, fetches below
/// it get OFFSET_OUT_OF_RANGE, it survives a restart, and bad offsets and unknown
/// partitions get Kafka's errors. Once the data is in an object, the object leaves the
/// bucket after the grace period.
#[tokio::test]
async fn delete_records_moves_the_log_start_and_frees_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let grace = |a: &mut cirrus_broker::config::SettingsArgs| {
        a.retention_check_interval = Some(Duration::from_millis(100));
        a.object_delete_grace = Some(Duration::ZERO);
    };
    let broker = start(dir.path(), grace).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "dr", 1).await, 0);
    for _ in 0..3 {
        let resp = c
            .send(9, &produce_req("dr", 0, records(4, None, now_ms())))
            .await;
        assert_eq!(produce_result(&resp).0, 0);
    }
    let objects_dir = dir.path().join("objects").join("data");
    let count_objects = || {
        walk(&objects_dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "obj"))
            .count()
    };
    // Wait for the upload (50 ms flushes), so the records are in objects.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count_objects() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(count_objects() > 0);
    let resp = c.send(2, &delete_records_req("dr", 0, 5)).await;
    assert_eq!(
        (
            resp.topics[0].partitions[0].error_code,
            resp.topics[0].partitions[0].low_watermark
        ),
        (0, 5)
    );
    assert_eq!(earliest(&mut c, "dr").await, 5);
    let below = c.send(12, &fetch_req("dr", 0, 4, 0)).await;
    assert_eq!(
        below.responses[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );
    let at = c.send(12, &fetch_req("dr", 0, 5, 0)).await;
    assert_eq!(at.responses[0].partitions[0].error_code, 0);
    assert_eq!(at.responses[0].partitions[0].log_start_offset, 5);
    // Never backwards; past the high watermark is out of range; unknown partitions.
    let back = c.send(2, &delete_records_req("dr", 0, 1)).await;
    assert_eq!(back.topics[0].partitions[0].low_watermark, 5);
    let past = c.send(2, &delete_records_req("dr", 0, 13)).await;
    assert_eq!(
        past.topics[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );
    let unknown = c.send(2, &delete_records_req("nope", 0, 1)).await;
    assert_eq!(
        unknown.topics[0].partitions[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    // -1: everything up to the high watermark; the objects then leave the bucket.
    let all = c.send(2, &delete_records_req("dr", 0, -1)).await;
    assert_eq!(all.topics[0].partitions[0].low_watermark, 12);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count_objects() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count_objects(),
        0,
        "dead objects are deleted after the grace"
    );
    broker.shutdown().await.unwrap();

    let broker = start(dir.path(), grace).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    assert_eq!(
        earliest(&mut c, "dr").await,
        12,
        "the log start survives a restart"
    );
    let resp = c
        .send(9, &produce_req("dr", 0, records(1, None, now_ms())))
        .await;
    assert_eq!(produce_result(&resp), (0, 12));
    let at = c.send(12, &fetch_req("dr", 0, 12, 0)).await;
    assert_eq!(at.responses[0].partitions[0].error_code, 0);
    broker.shutdown().await.unwrap();
}

/// Object compaction keeps the index bounded: after 1,000 flushes of one partition it
/// is as small as after 10 (one run, one object, a checkpoint of the same size), and
/// every record is still there, at its offset.
#[tokio::test]
async fn object_compaction_keeps_the_index_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |a| {
        // Every acknowledged produce is its own committed object.
        a.durability = Some(cirrus_broker::config::Durability::Object);
        a.flush_interval = Some(Duration::from_millis(1));
        a.compaction_interval = Some(Duration::from_millis(100));
        a.compaction_min_age = Some(Duration::ZERO);
        a.retention_check_interval = Some(Duration::from_millis(100));
        a.object_delete_grace = Some(Duration::ZERO);
    })
    .await;
    let mut c = Client::connect(broker.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "cmp", 1).await, 0);
    let partition = broker.logs.get_topic("cmp").unwrap().partitions[0].clone();
    let data_dir = dir.path().join("objects").join("data");
    let index_dir = dir.path().join("objects").join("index");
    let count_objects = || {
        walk(&data_dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "obj"))
            .count()
    };
    let index_bytes = || -> u64 {
        walk(&index_dir)
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    };
    // Produces up to `total` records one flush each, then waits until compaction and
    // deletion settle on one run in one object; returns (objects, checkpoint bytes).
    let mut produced = 0i64;
    let mut grow_to = async |c: &mut Client, total: i64| {
        while produced < total {
            let resp = c
                .send(9, &produce_req("cmp", 0, records(1, None, now_ms())))
                .await;
            assert_eq!(produce_result(&resp), (0, produced));
            produced += 1;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let runs = partition.lock().live_runs().count();
            if runs == 1 && count_objects() == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not compacted after {total} flushes: {runs} runs, {} objects",
                count_objects()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (count_objects(), index_bytes())
    };
    let (objects_10, index_10) = grow_to(&mut c, 10).await;
    let (objects_1000, index_1000) = grow_to(&mut c, 1000).await;
    assert_eq!((objects_10, objects_1000), (1, 1));
    assert!(
        index_1000 <= index_10 * 2,
        "the checkpoint grew from {index_10} to {index_1000} bytes"
    );
    let metrics = &broker.logs.metrics;
    assert!(metrics.compaction_runs_merged.get() >= 999);
    assert!(metrics.objects_deleted_dead.get() >= 999);

    // Every record, in order, from the compacted run.
    let mut next = 0i64;
    while next < 1000 {
        let resp = c.send(12, &fetch_req("cmp", 0, next, 0)).await;
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let mut recs = p.records.clone().unwrap();
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut recs).unwrap();
        for r in sets.iter().flat_map(|s| s.records.iter()) {
            if r.offset < next {
                continue; // the start of a batch before the fetch offset
            }
            assert_eq!(r.offset, next);
            next += 1;
        }
    }
    broker.shutdown().await.unwrap();

    // After a restart the index holds the compacted run only, and reads still work.
    let broker = start(dir.path(), |_| {}).await;
    let partition = broker.logs.get_topic("cmp").unwrap().partitions[0].clone();
    assert_eq!(partition.lock().live_runs().count(), 1);
    let mut c = Client::connect(broker.kafka_addr).await;
    let resp = c.send(12, &fetch_req("cmp", 0, 500, 0)).await;
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
    assert_eq!(resp.responses[0].partitions[0].high_watermark, 1000);
    broker.shutdown().await.unwrap();
}

/// A consumer catching up behind the tail reads each run from the bucket once: the
/// next run is read ahead into the (memory + disk) read cache while it consumes one.
#[tokio::test]
async fn catch_up_reads_are_read_ahead_into_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |a: &mut cirrus_broker::config::SettingsArgs| {
        a.durability = Some(cirrus_broker::config::Durability::Object);
        a.read_cache_disk_bytes = Some(cirrus_broker::config::ByteSize(64 << 20));
    };
    let broker = start(dir.path(), settings).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "history", 1).await, 0);
    let now = now_ms();
    for i in 0..5 {
        // durability=object: each acknowledged batch is its own object, its own run.
        let resp = c
            .send(9, &produce_req("history", 0, records(3, None, now)))
            .await;
        assert_eq!(produce_result(&resp), (0, i * 3));
    }
    broker.shutdown().await.unwrap();

    // After a restart the tail is empty: every read comes from the bucket or the cache.
    let broker = start(dir.path(), settings).await;
    assert!(dir.path().join("read-cache").is_dir(), "no disk tier");
    let mut c = Client::connect(broker.kafka_addr).await;
    let metrics = broker.logs.metrics.clone();
    let mut next = 0i64;
    while next < 15 {
        let resp = c.send(12, &fetch_req("history", 0, next, 0)).await;
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let mut recs = p.records.clone().unwrap();
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut recs).unwrap();
        for r in sets.iter().flat_map(|s| s.records.iter()) {
            assert_eq!(r.offset, next);
            next += 1;
        }
        // Give the read-ahead of the next run time to land.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (hits, misses, ahead) = (
        metrics.read_cache_hits.get(),
        metrics.read_cache_misses.get(),
        metrics.read_ahead.get(),
    );
    assert!(ahead >= 4, "read-aheads: {ahead}");
    assert!(hits >= 4 && misses <= 1, "hits {hits}, misses {misses}");

    // Hot/cold: a consumer at the head reads the in-memory tail, never the read cache
    // the replay above filled.
    let resp = c
        .send(9, &produce_req("history", 0, records(2, None, now)))
        .await;
    assert_eq!(produce_result(&resp), (0, 15));
    let resp = c.send(12, &fetch_req("history", 0, 15, 0)).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 17));
    assert!(!p.records.as_ref().unwrap().is_empty());
    assert_eq!(
        (
            metrics.read_cache_hits.get(),
            metrics.read_cache_misses.get()
        ),
        (hits, misses),
        "a head read went to the read cache"
    );
    broker.shutdown().await.unwrap();
}

/// Now, in milliseconds since the Unix epoch: record timestamps that retention (7 days by
/// default) leaves alone.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn idempotent_producer_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "idem", 1).await, 0);
    let init = c
        .send(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    let first = records(3, Some((pid, 0, 0)), 10);
    assert_eq!(
        produce_result(&c.send(9, &produce_req("idem", 0, first.clone())).await),
        (0, 0)
    );
    // A retried batch is acknowledged with its original offset, not appended again.
    assert_eq!(
        produce_result(&c.send(9, &produce_req("idem", 0, first.clone())).await),
        (0, 0)
    );
    // A gap in sequence numbers is refused.
    let gap = records(1, Some((pid, 0, 7)), 10);
    assert_eq!(
        produce_result(&c.send(9, &produce_req("idem", 0, gap)).await).0,
        ResponseError::OutOfOrderSequenceNumber.code()
    );
    // Two more batches: all three end up in one run of one object at shutdown.
    let second = records(2, Some((pid, 0, 3)), 10);
    assert_eq!(
        produce_result(&c.send(9, &produce_req("idem", 0, second.clone())).await),
        (0, 3)
    );
    let third = records(1, Some((pid, 0, 5)), 10);
    assert_eq!(
        produce_result(&c.send(9, &produce_req("idem", 0, third)).await),
        (0, 5)
    );
    broker.shutdown().await.unwrap();

    // The state comes back from the committed runs (as for a new owner after a move):
    // every batch of the idempotence window, not only the last one, is a duplicate.
    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    assert_eq!(
        produce_result(&c.send(9, &produce_req("idem", 0, first)).await),
        (0, 0),
        "duplicate of an older batch in the window after restart"
    );
    assert_eq!(
        produce_result(&c.send(9, &produce_req("idem", 0, second)).await),
        (0, 3),
        "duplicate after restart"
    );
    let next = records(2, Some((pid, 0, 6)), 10);
    assert_eq!(
        produce_result(&c.send(9, &produce_req("idem", 0, next)).await),
        (0, 6)
    );
    let resp = c.send(12, &fetch_req("idem", 0, 0, 0)).await;
    assert_eq!(resp.responses[0].partitions[0].high_watermark, 8);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut good = Client::connect(broker.kafka_addr).await;
    for garbage in [
        vec![0, 0, 0, 12, 0xff, 0xff, 0, 0, 0, 0, 0, 1, 9, 9, 9, 9], // unknown api key
        vec![0, 0, 0, 10, 0, 3, 0, 9, 0, 0, 0, 1, 0xff, 0xff],       // metadata v9 truncated
        vec![0x7f, 0xff, 0xff, 0xff],                                // absurd length
        vec![0, 0, 0, 2, 0, 0],                                      // shorter than a header
    ] {
        let mut bad = TcpStream::connect(broker.kafka_addr).await.unwrap();
        bad.write_all(&garbage).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), bad.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "connection closed without a response for {garbage:?}");
    }
    let resp = good.send(3, &ApiVersionsRequest::default()).await;
    assert_eq!(resp.error_code, 0);
    broker.shutdown().await.unwrap();
}

/// Every API answers at every version it advertises (a response field set outside its
/// version would make the encoder fail and the client wait).
#[tokio::test]
async fn every_advertised_version_answers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "v", 1).await, 0);
    assert_eq!(
        produce_result(&c.send(9, &produce_req("v", 0, records(2, None, 7))).await),
        (0, 0)
    );
    let name = |s: &str| TopicName(StrBytes::from_string(s.into()));
    for api in c.send(3, &ApiVersionsRequest::default()).await.api_keys {
        let key = ApiKey::try_from(api.api_key).unwrap();
        for v in api.min_version..=api.max_version {
            let ok = match key {
                ApiKey::ApiVersions => {
                    c.send(v, &ApiVersionsRequest::default()).await.error_code == 0
                }
                ApiKey::Produce => {
                    c.send(v, &produce_req("v", 0, records(1, None, 9)))
                        .await
                        .responses[0]
                        .partition_responses[0]
                        .error_code
                        == 0
                }
                ApiKey::Fetch => {
                    let mut req = fetch_req("v", 0, 0, 0);
                    if v >= 13 {
                        let md = c
                            .send(12, &MetadataRequest::default().with_topics(None))
                            .await;
                        req.topics[0].topic_id = md
                            .topics
                            .iter()
                            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("v"))
                            .unwrap()
                            .topic_id;
                    }
                    let resp = c.send(v, &req).await;
                    resp.responses[0].partitions[0].error_code == 0
                        && resp.responses[0].partitions[0]
                            .records
                            .as_ref()
                            .is_some_and(|r| !r.is_empty())
                }
                ApiKey::ListOffsets => {
                    let req = ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![
                            list_offsets_request::ListOffsetsTopic::default()
                                .with_name(name("v"))
                                .with_partitions(vec![
                                    list_offsets_request::ListOffsetsPartition::default()
                                        .with_partition_index(0)
                                        .with_timestamp(-1),
                                ]),
                        ]);
                    c.send(v, &req).await.topics[0].partitions[0].offset >= 2
                }
                ApiKey::Metadata => {
                    let req = MetadataRequest::default().with_topics(if v == 0 {
                        Some(vec![])
                    } else {
                        None
                    });
                    c.send(v, &req)
                        .await
                        .topics
                        .iter()
                        .any(|t| t.name.as_ref().map(|n| n.as_str()) == Some("v"))
                }
                ApiKey::CreateTopics => {
                    let req = CreateTopicsRequest::default()
                        .with_timeout_ms(1000)
                        .with_topics(vec![
                            create_topics_request::CreatableTopic::default()
                                .with_name(name(&format!("ct{v}")))
                                .with_num_partitions(1)
                                .with_replication_factor(1),
                        ]);
                    c.send(v, &req).await.topics[0].error_code == 0
                }
                ApiKey::DeleteTopics => {
                    assert_eq!(create_topic(&mut c, &format!("dt{v}"), 1).await, 0);
                    let req = if v >= 6 {
                        DeleteTopicsRequest::default().with_topics(vec![
                            delete_topics_request::DeleteTopicState::default()
                                .with_name(Some(name(&format!("dt{v}")))),
                        ])
                    } else {
                        DeleteTopicsRequest::default()
                            .with_topic_names(vec![name(&format!("dt{v}"))])
                    };
                    c.send(v, &req).await.responses[0].error_code == 0
                }
                ApiKey::DeleteRecords => {
                    assert_eq!(create_topic(&mut c, &format!("dr{v}"), 1).await, 0);
                    let topic = format!("dr{v}");
                    c.send(9, &produce_req(&topic, 0, records(3, None, 1)))
                        .await;
                    let resp = c.send(v, &delete_records_req(&topic, 0, 2)).await;
                    let p = &resp.topics[0].partitions[0];
                    p.error_code == 0 && p.low_watermark == 2
                }
                ApiKey::CreatePartitions => {
                    assert_eq!(create_topic(&mut c, &format!("cp{v}"), 1).await, 0);
                    let req = CreatePartitionsRequest::default()
                        .with_timeout_ms(1000)
                        .with_topics(vec![
                            create_partitions_request::CreatePartitionsTopic::default()
                                .with_name(name(&format!("cp{v}")))
                                .with_count(3),
                        ]);
                    c.send(v, &req).await.results[0].error_code == 0
                }
                ApiKey::DescribeConfigs => {
                    let req = DescribeConfigsRequest::default().with_resources(vec![
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("v")),
                    ]);
                    let resp = c.send(v, &req).await;
                    resp.results[0].error_code == 0
                        && resp.results[0]
                            .configs
                            .iter()
                            .any(|c| c.name.as_str() == "cleanup.policy")
                }
                ApiKey::DescribeCluster => {
                    c.send(v, &DescribeClusterRequest::default())
                        .await
                        .brokers
                        .len()
                        == 1
                }
                ApiKey::OffsetForLeaderEpoch => {
                    let req = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderTopic::default().with_topic(name("v")).with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default().with_partition(0).with_current_leader_epoch(-1).with_leader_epoch(0),
                        ]),
                    ]);
                    c.send(v, &req).await.topics[0].partitions[0].end_offset >= 2
                }
                ApiKey::InitProducerId => {
                    let req = InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(1000)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1);
                    c.send(v, &req).await.error_code == 0
                }
                // Every version of every group API is exercised by
                // tests/groups_wire.rs::every_advertised_group_api_version_answers.
                ApiKey::FindCoordinator
                | ApiKey::JoinGroup
                | ApiKey::SyncGroup
                | ApiKey::Heartbeat
                | ApiKey::LeaveGroup
                | ApiKey::OffsetCommit
                | ApiKey::OffsetFetch
                | ApiKey::OffsetDelete
                | ApiKey::ListGroups
                | ApiKey::DescribeGroups
                | ApiKey::DeleteGroups
                | ApiKey::ConsumerGroupHeartbeat
                | ApiKey::ConsumerGroupDescribe => true,
                other => panic!("advertised API {other:?} has no case in this test"),
            };
            assert!(ok, "{key:?} v{v} answered with an unexpected result");
        }
    }
    broker.shutdown().await.unwrap();
}

/// /metrics exposes the data path: requests, committed objects, object store PUTs.
#[tokio::test]
async fn metrics_move_with_the_data_path() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "m", 1).await, 0);
    assert_eq!(
        produce_result(&c.send(9, &produce_req("m", 0, records(10, None, 1))).await),
        (0, 0)
    );
    let scrape = |addr: std::net::SocketAddr| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    // The flush interval is 50ms: wait (bounded) until the object is committed.
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(broker.http_addr).await;
        if value(&text, "cirrus_objects_committed_total") >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        value(&text, "cirrus_objects_committed_total") >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "cirrus_object_store_requests_total{kind=\"put\"}") >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "cirrus_requests_total{api=\"Produce\"}") >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "cirrus_produced_records_total{topic=\"m\"}") >= 10.0,
        "{text}"
    );
    assert!(text.contains("cirrus_wal_outstanding_bytes"), "{text}");
    broker.shutdown().await.unwrap();
}

/// A commit that lands after later batches of the same idempotent producer were
/// appended must not rewind the producer's sequence (found by the load generator).
#[tokio::test]
async fn slow_commits_do_not_break_idempotent_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |a| {
        a.flush_interval = Some(Duration::from_millis(10));
        a.object_store_latency = Some("fixed:300ms".into());
    })
    .await;
    let mut c = Client::connect(broker.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "slow", 1).await, 0);
    let init = c
        .send(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    let pid = init.producer_id.0;
    let mut seq = 0;
    for round in 0..6 {
        let resp = c
            .send(
                9,
                &produce_req("slow", 0, records(3, Some((pid, 0, seq)), 10)),
            )
            .await;
        assert_eq!(produce_result(&resp), (0, i64::from(seq)), "round {round}");
        seq += 3;
        // Upload takes 300 ms: later batches are appended while earlier objects commit.
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    broker.shutdown().await.unwrap();
}
