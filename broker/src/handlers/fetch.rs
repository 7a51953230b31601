//! Fetch (long-polling on the high watermark), ListOffsets and OffsetForLeaderEpoch.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;

use super::Ctx;
use crate::error::BrokerError;

/// Longest long poll honoured, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

pub(super) async fn handle(ctx: &Arc<Ctx>, version: i16, req: FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    let mut data = ctx.logs.subscribe_data();
    loop {
        data.borrow_and_update();
        let (resp, bytes) = fetch_once(ctx, version, &req, max_bytes).await;
        if bytes >= min_bytes.max(1) || tokio::time::Instant::now() >= deadline || has_error(&resp)
        {
            return resp;
        }
        // Wait for any high watermark to move, or the deadline.
        if tokio::time::timeout_at(deadline, data.changed())
            .await
            .is_err()
        {
            return fetch_once(ctx, version, &req, max_bytes).await.0;
        }
    }
}

fn has_error(resp: &FetchResponse) -> bool {
    resp.responses
        .iter()
        .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
}

async fn fetch_once(
    ctx: &Arc<Ctx>,
    version: i16,
    req: &FetchRequest,
    max_bytes: usize,
) -> (FetchResponse, usize) {
    let mut total = 0usize;
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = if version >= 13 {
            ctx.logs.get_topic_by_id(t.topic_id)
        } else {
            ctx.logs.get_topic(t.topic.as_str())
        };
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut pd = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            let partition = topic
                .as_ref()
                .and_then(|t| {
                    usize::try_from(p.partition)
                        .ok()
                        .and_then(|i| t.partitions.get(i))
                })
                .cloned();
            let Some(partition) = partition else {
                let code = if version >= 13 {
                    kafka_protocol::ResponseError::UnknownTopicId
                } else {
                    kafka_protocol::ResponseError::UnknownTopicOrPartition
                };
                partitions.push(pd.with_error_code(code.code()));
                continue;
            };
            let budget = max_bytes.saturating_sub(total);
            if budget == 0 && total > 0 {
                let st = partition.lock();
                partitions.push(
                    pd.with_high_watermark(st.high_watermark)
                        .with_last_stable_offset(st.high_watermark)
                        .with_log_start_offset(st.log_start_offset),
                );
                continue;
            }
            let limit = (p.partition_max_bytes.max(0) as usize).min(budget.max(1));
            match ctx
                .logs
                .read(&partition, p.fetch_offset, limit, p.current_leader_epoch)
                .await
            {
                Ok((records, hwm, start)) => {
                    total += records.len();
                    if !records.is_empty() {
                        partition
                            .counters
                            .fetched_bytes
                            .inc_by(records.len() as u64);
                        partition.counters.total_out.inc_by(records.len() as u64);
                    }
                    pd = pd
                        .with_high_watermark(hwm)
                        .with_last_stable_offset(hwm)
                        .with_log_start_offset(start)
                        .with_aborted_transactions(Some(vec![]))
                        .with_records(Some(records));
                }
                Err(e) => {
                    if !matches!(
                        e,
                        BrokerError::OffsetOutOfRange { .. }
                            | BrokerError::FencedLeaderEpoch { .. }
                            | BrokerError::UnknownLeaderEpoch { .. }
                    ) {
                        tracing::warn!(topic = %partition.topic, partition = p.partition, error = %e, "fetch failed");
                    }
                    let st = partition.lock();
                    pd = pd
                        .with_error_code(e.code())
                        .with_high_watermark(st.high_watermark)
                        .with_last_stable_offset(st.high_watermark)
                        .with_log_start_offset(st.log_start_offset);
                }
            }
            partitions.push(pd);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    (FetchResponse::default().with_responses(responses), total)
}

/// Kafka's special ListOffsets timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub(super) async fn list_offsets(
    ctx: &Arc<Ctx>,
    version: i16,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let base =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let answer = async {
                let partition = ctx.logs.partition(t.name.as_str(), p.partition_index)?;
                let (epoch, hwm, start) = {
                    let st = partition.lock();
                    st.check_epoch(p.current_leader_epoch)?;
                    (st.leader_epoch, st.high_watermark, st.log_start_offset)
                };
                let (offset, timestamp) = match p.timestamp {
                    LATEST => (hwm, -1),
                    EARLIEST => (start, -1),
                    MAX_TIMESTAMP => ctx
                        .logs
                        .max_timestamp_offset(&partition)
                        .await?
                        .unwrap_or((-1, -1)),
                    ts if ts >= 0 => ctx
                        .logs
                        .offset_for_timestamp(&partition, ts)
                        .await?
                        .unwrap_or((-1, -1)),
                    other => {
                        return Err(BrokerError::InvalidRequest(format!(
                            "timestamp {other} is not supported"
                        )));
                    }
                };
                Ok::<_, BrokerError>((offset, timestamp, epoch))
            }
            .await;
            partitions.push(match answer {
                Ok((offset, timestamp, epoch)) => {
                    let base = base.with_offset(offset).with_timestamp(timestamp);
                    // leader_epoch exists from v4 on.
                    if version >= 4 {
                        base.with_leader_epoch(epoch)
                    } else {
                        base
                    }
                }
                Err(e) => base
                    .with_error_code(e.code())
                    .with_offset(-1)
                    .with_timestamp(-1),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

pub(super) fn offset_for_leader_epoch(
    ctx: &Arc<Ctx>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions =
                t.partitions
                    .iter()
                    .map(|p| {
                        let base = EpochEndOffset::default().with_partition(p.partition);
                        let result = ctx.logs.partition(t.topic.as_str(), p.partition).and_then(
                            |partition| {
                                let st = partition.lock();
                                st.check_epoch(p.current_leader_epoch)?;
                                Ok(st.end_offset_for_epoch(p.leader_epoch))
                            },
                        );
                        match result {
                            Ok((epoch, end)) => base.with_leader_epoch(epoch).with_end_offset(end),
                            Err(e) => base
                                .with_error_code(e.code())
                                .with_leader_epoch(-1)
                                .with_end_offset(-1),
                        }
                    })
                    .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
