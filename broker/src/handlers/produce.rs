//! Produce: validates each partition's batches, appends them in request order, and
//! answers once every partition is acknowledged per its durability (or at once for
//! acks=0, with no response at all).

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::Ctx;
use crate::batch;
use crate::error::BrokerError;
use crate::server::{PendingResponse, encode_response};

/// Bounds on how long a produce may wait, whatever timeout the client sends.
const MIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

type PartitionFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = PartitionProduceResponse> + Send>>;

pub(super) async fn handle(
    ctx: &Arc<Ctx>,
    version: i16,
    correlation_id: i32,
    req: ProduceRequest,
) -> PendingResponse {
    if req.transactional_id.is_some() {
        // Transactions are not implemented; refuse rather than pretend.
        let resp = error_response(
            &req,
            BrokerError::InvalidRequest("transactions are not supported".into()),
        );
        let acks = req.acks;
        return Box::pin(async move {
            if acks == 0 {
                return Ok(None);
            }
            encode_response(ApiKey::Produce, version, correlation_id, &resp)
        });
    }
    let acks = req.acks;
    // The client's request timeout bounds every wait (WAL space while the bucket is
    // unreachable, the object commit for durability=object): past it the partition
    // answers REQUEST_TIMED_OUT, which clients retry, instead of hanging.
    let timeout = std::time::Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0))
        .clamp(MIN_TIMEOUT, MAX_TIMEOUT);
    let mut topics: Vec<(kafka_protocol::messages::TopicName, Vec<PartitionFuture>)> = Vec::new();
    for topic in req.topic_data {
        let mut parts: Vec<PartitionFuture> = Vec::new();
        let resolved = if crate::groups::is_internal_topic(topic.name.as_str()) {
            Err(BrokerError::InvalidTopic(format!(
                "{} is an internal topic; clients cannot produce to it",
                topic.name.as_str()
            )))
        } else {
            ctx.logs
                .get_topic(topic.name.as_str())
                .ok_or(BrokerError::UnknownTopicOrPartition)
        };
        for pd in topic.partition_data {
            let index = pd.index;
            let fail = |e: BrokerError| -> PartitionFuture {
                let r = partition_error(index, &e);
                Box::pin(std::future::ready(r))
            };
            let partition = match &resolved {
                Ok(t) => match usize::try_from(index)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
                {
                    Some(p) => p.clone(),
                    None => {
                        parts.push(fail(BrokerError::UnknownTopicOrPartition));
                        continue;
                    }
                },
                Err(BrokerError::UnknownTopicOrPartition) => {
                    parts.push(fail(BrokerError::UnknownTopicOrPartition));
                    continue;
                }
                Err(e) => {
                    parts.push(fail(BrokerError::InvalidTopic(e.to_string())));
                    continue;
                }
            };
            let Some(records) = pd.records else {
                parts.push(fail(BrokerError::Batch(batch::BatchError::Corrupt)));
                continue;
            };
            let max = partition.lock().max_message_bytes;
            let compacted = resolved
                .as_ref()
                .is_ok_and(|t| crate::topic_config::is_compacted(&t.configs));
            let validated = batch::split_and_validate(&records, max).and_then(|b| {
                if compacted {
                    batch::require_keys(&b)?;
                }
                Ok(b)
            });
            let batches = match validated {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(topic = %partition.topic, partition = index, error = %e, "produce refused");
                    parts.push(fail(BrokerError::Batch(e)));
                    continue;
                }
            };
            // The ordered part (offsets, WAL submission) happens inside `append_start`,
            // now, in request order; only the wait for durability is deferred.
            let started = tokio::time::timeout(timeout, ctx.logs.append_start(&partition, batches))
                .await
                .unwrap_or(Err(BrokerError::Timeout));
            match started {
                Ok(ticket) => {
                    let logs = ctx.logs.clone();
                    parts.push(Box::pin(async move {
                        let finished =
                            tokio::time::timeout(timeout, logs.append_finish(&partition, ticket))
                                .await
                                .unwrap_or(Err(BrokerError::Timeout));
                        match finished {
                            Ok(r) => PartitionProduceResponse::default()
                                .with_index(index)
                                .with_base_offset(r.base_offset)
                                .with_log_start_offset(r.log_start_offset)
                                .with_log_append_time_ms(-1),
                            Err(e) => partition_error(index, &e),
                        }
                    }));
                }
                Err(e) => parts.push(fail(e)),
            }
        }
        topics.push((topic.name, parts));
    }
    Box::pin(async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, parts) in topics {
            let partition_responses = futures::future::join_all(parts).await;
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        if acks == 0 {
            return Ok(None);
        }
        let resp = ProduceResponse::default().with_responses(responses);
        encode_response(ApiKey::Produce, version, correlation_id, &resp)
    })
}

fn partition_error(index: i32, e: &BrokerError) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(e.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(Some(StrBytes::from_string(e.to_string())))
}

fn error_response(req: &ProduceRequest, e: BrokerError) -> ProduceResponse {
    ProduceResponse::default().with_responses(
        req.topic_data
            .iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| partition_error(p.index, &e))
                            .collect(),
                    )
            })
            .collect(),
    )
}
