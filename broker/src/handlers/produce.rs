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
    let mut topics: Vec<(kafka_protocol::messages::TopicName, Vec<PartitionFuture>)> = Vec::new();
    for topic in req.topic_data {
        let mut parts: Vec<PartitionFuture> = Vec::new();
        let resolved = ctx
            .logs
            .get_topic(topic.name.as_str())
            .ok_or(BrokerError::UnknownTopicOrPartition);
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
            let batches = match batch::split_and_validate(&records, max) {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(topic = %partition.topic, partition = index, error = %e, "produce refused");
                    parts.push(fail(BrokerError::Batch(e)));
                    continue;
                }
            };
            // The ordered part (offsets, WAL submission) happens inside `append_start`,
            // now, in request order; only the wait for durability is deferred.
            match ctx.logs.append_start(&partition, batches).await {
                Ok(ticket) => {
                    let logs = ctx.logs.clone();
                    parts.push(Box::pin(async move {
                        match logs.append_finish(&partition, ticket).await {
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
