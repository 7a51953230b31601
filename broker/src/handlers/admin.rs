//! Metadata, topic administration, configs, cluster description and producer ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;

use super::{Ctx, str_bytes, topic_name};
use crate::error::BrokerError;
use crate::log::Topic;
use crate::topic_config;

/// DescribeConfigs resource types (Kafka's ConfigResource.Type).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Config sources (Kafka's DescribeConfigsResponse.ConfigSource).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Every live broker: (id, host, port). A single node is its own cluster.
fn brokers(ctx: &Ctx) -> Vec<(i32, String, i32)> {
    match &ctx.member {
        Some(member) => member
            .view()
            .brokers
            .values()
            .map(|b| (b.id, b.host.clone(), b.port))
            .collect(),
        None => vec![(
            ctx.settings.node_id,
            ctx.settings.advertised_host.clone(),
            ctx.settings.advertised_port,
        )],
    }
}

/// The controller id told to Kafka clients. They send admin requests (CreateTopics,
/// DeleteTopics, ...) there, and every broker handles those, so when the elected
/// controller is not a live broker (a standalone `cirrus controller`, or an election in
/// progress) this broker names itself rather than leaving clients without one.
fn controller_id(ctx: &Ctx) -> i32 {
    match &ctx.member {
        Some(member) => {
            let view = member.view();
            view.controller
                .filter(|id| view.brokers.contains_key(id))
                .unwrap_or(ctx.settings.node_id)
        }
        None => ctx.settings.node_id,
    }
}

fn topic_metadata(ctx: &Ctx, t: &Topic) -> MetadataResponseTopic {
    let view = ctx.member.as_ref().map(|m| m.view());
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let base = MetadataResponsePartition::default().with_partition_index(p.index);
            let (leader, epoch) = match &view {
                None => (ctx.settings.node_id, p.lock().leader_epoch),
                // The owner record is the truth: clients go to its broker, at its epoch.
                Some(view) => match view.live_owner(p.stream_id) {
                    Some((b, o)) => (b.id, o.epoch),
                    None => {
                        let epoch = view.owners.get(&p.stream_id).map_or(-1, |o| o.epoch);
                        return base
                            .with_error_code(ResponseError::LeaderNotAvailable.code())
                            .with_leader_id(BrokerId(-1))
                            .with_leader_epoch(epoch)
                            .with_replica_nodes(vec![])
                            .with_isr_nodes(vec![]);
                    }
                },
            };
            let node = BrokerId(leader);
            base.with_leader_id(node)
                .with_leader_epoch(epoch)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(t.id)
        .with_is_internal(crate::groups::is_internal_topic(&t.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN)
}

pub(super) async fn metadata(
    ctx: &Arc<Ctx>,
    version: i16,
    req: MetadataRequest,
) -> MetadataResponse {
    // v0 has no null topic list: an empty list means "all topics".
    let wanted: Option<Vec<MetadataRequestTopic>> = match req.topics {
        Some(t) if version == 0 && t.is_empty() => None,
        other => other,
    };
    let auto_create = version < 4 || req.allow_auto_topic_creation;
    let topics = match wanted {
        None => ctx
            .logs
            .topic_names()
            .iter()
            .filter_map(|n| ctx.logs.get_topic(n))
            .map(|t| topic_metadata(ctx, &t))
            .collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for entry in list {
                let resolved = match (&entry.name, entry.topic_id.is_nil()) {
                    (Some(name), _) => {
                        ctx.logs
                            .get_or_create_topic(name.as_str(), auto_create)
                            .await
                    }
                    (None, false) => ctx
                        .logs
                        .get_topic_by_id(entry.topic_id)
                        .ok_or(BrokerError::UnknownTopicOrPartition),
                    (None, true) => Err(BrokerError::InvalidRequest(
                        "topic without name or id".into(),
                    )),
                };
                out.push(match resolved {
                    Ok(t) => topic_metadata(ctx, &t),
                    Err(e) => {
                        let code = match (&entry.name, &e) {
                            (None, BrokerError::UnknownTopicOrPartition) => {
                                ResponseError::UnknownTopicId.code()
                            }
                            _ => e.code(),
                        };
                        MetadataResponseTopic::default()
                            .with_name(entry.name.clone())
                            .with_topic_id(entry.topic_id)
                            .with_error_code(code)
                    }
                });
            }
            out
        }
    };
    let brokers = brokers(ctx)
        .into_iter()
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(str_bytes(&host))
                .with_port(port)
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&ctx.logs.cluster_id)))
        .with_controller_id(BrokerId(controller_id(ctx)))
        .with_topics(topics)
        .with_cluster_authorized_operations(i32::MIN)
}

pub(super) async fn create_topics(
    ctx: &Arc<Ctx>,
    version: i16,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.as_str().to_string();
        let outcome = async {
            if !t.assignments.is_empty() {
                return Err(BrokerError::InvalidRequest(
                    "manual replica assignments are not supported".into(),
                ));
            }
            if t.replication_factor == 0 || t.replication_factor < -1 {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "{} (data lives in object storage; any positive value or -1 is accepted)",
                    t.replication_factor
                )));
            }
            let partitions = if t.num_partitions == -1 {
                ctx.settings.default_partitions
            } else {
                t.num_partitions
            };
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                if let Some(v) = &c.value {
                    configs.insert(c.name.as_str().to_string(), v.as_str().to_string());
                }
            }
            let topic = ctx
                .logs
                .create_topic(&name, partitions, configs, req.validate_only)
                .await?;
            Ok((topic, partitions))
        }
        .await;
        let base = CreatableTopicResult::default().with_name(t.name.clone());
        results.push(match outcome {
            // The topic's details are part of the response from v5 on.
            Ok(_) if version < 5 => base,
            Ok((topic, partitions)) => base
                .with_topic_id(topic.id)
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(Some(
                    effective_configs(ctx, &topic.configs)
                        .into_iter()
                        .map(|(n, v, source)| {
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(&n))
                                .with_value(Some(str_bytes(&v)))
                                .with_config_source(source)
                        })
                        .collect(),
                )),
            Err(e) => base
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(&e.to_string()))),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub(super) async fn delete_topics(
    ctx: &Arc<Ctx>,
    version: i16,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<TopicName>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let resolved = match &name {
            Some(n) => Some(n.as_str().to_string()),
            None => ctx.logs.get_topic_by_id(id).map(|t| t.name.to_string()),
        };
        let result = match &resolved {
            // The group coordinator slots must exist as long as the cluster does.
            Some(n) if crate::groups::is_internal_topic(n) => Err(BrokerError::InvalidTopic(
                format!("{n} is an internal topic and cannot be deleted"),
            )),
            Some(n) => ctx.logs.delete_topic(n).await,
            None => Err(BrokerError::UnknownTopicOrPartition),
        };
        let base = DeletableTopicResult::default()
            .with_name(name.clone().or(resolved.as_deref().map(topic_name)));
        responses.push(match result {
            Ok(topic_id) => base.with_topic_id(topic_id),
            Err(e) => {
                let code = if name.is_none() {
                    ResponseError::UnknownTopicId.code()
                } else {
                    e.code()
                };
                base.with_topic_id(id)
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&e.to_string())))
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(super) async fn create_partitions(
    ctx: &Arc<Ctx>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let result = if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            Err(BrokerError::InvalidRequest(
                "manual replica assignments are not supported".into(),
            ))
        } else {
            ctx.logs
                .add_partitions(t.name.as_str(), t.count, req.validate_only)
                .await
        };
        let base = CreatePartitionsTopicResult::default().with_name(t.name);
        results.push(match result {
            Ok(()) => base,
            Err(e) => base
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(&e.to_string()))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// Every topic config with its effective value and source.
fn effective_configs(ctx: &Ctx, set: &BTreeMap<String, String>) -> Vec<(String, String, i8)> {
    topic_config::KNOWN
        .iter()
        .map(|(name, default)| {
            if let Some(v) = set.get(*name) {
                return (name.to_string(), v.clone(), SOURCE_TOPIC);
            }
            let value = match *name {
                "max.message.bytes" => ctx.settings.message_max_bytes.to_string(),
                topic_config::DURABILITY => ctx.settings.durability.as_str().to_string(),
                _ => default.to_string(),
            };
            (name.to_string(), value, SOURCE_DEFAULT)
        })
        .collect()
}

fn broker_configs(ctx: &Ctx) -> Vec<(String, String, i8)> {
    let s = &ctx.settings;
    vec![
        (
            "auto.create.topics.enable".into(),
            s.auto_create_topics.to_string(),
            SOURCE_STATIC_BROKER,
        ),
        (
            "num.partitions".into(),
            s.default_partitions.to_string(),
            SOURCE_STATIC_BROKER,
        ),
        (
            "message.max.bytes".into(),
            s.message_max_bytes.to_string(),
            SOURCE_STATIC_BROKER,
        ),
        (
            "broker.id".into(),
            s.node_id.to_string(),
            SOURCE_STATIC_BROKER,
        ),
        (
            "cirrus.durability".into(),
            s.durability.as_str().to_string(),
            SOURCE_STATIC_BROKER,
        ),
        (
            "cirrus.flush.interval.ms".into(),
            s.flush_interval.as_millis().to_string(),
            SOURCE_STATIC_BROKER,
        ),
        (
            "cirrus.object.target.bytes".into(),
            s.object_target_bytes.to_string(),
            SOURCE_STATIC_BROKER,
        ),
    ]
}

pub(super) fn describe_configs(
    ctx: &Arc<Ctx>,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let configs = match r.resource_type {
                RESOURCE_TOPIC => match ctx.logs.get_topic(r.resource_name.as_str()) {
                    Some(t) => Ok(effective_configs(ctx, &t.configs)),
                    None => Err((
                        ResponseError::UnknownTopicOrPartition,
                        "unknown topic".to_string(),
                    )),
                },
                RESOURCE_BROKER => {
                    let name = r.resource_name.as_str();
                    if name.is_empty() || name == ctx.settings.node_id.to_string() {
                        Ok(broker_configs(ctx))
                    } else {
                        Err((
                            ResponseError::InvalidRequest,
                            format!("broker {name} is not this broker"),
                        ))
                    }
                }
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported"),
                )),
            };
            match configs {
                Ok(list) => {
                    let wanted: Option<Vec<String>> = r
                        .configuration_keys
                        .filter(|k| !k.is_empty())
                        .map(|k| k.iter().map(|s| s.as_str().to_string()).collect());
                    base.with_configs(
                        list.into_iter()
                            .filter(|(n, _, _)| wanted.as_ref().is_none_or(|w| w.contains(n)))
                            .map(|(n, v, source)| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(str_bytes(&n))
                                    .with_value(Some(str_bytes(&v)))
                                    .with_config_source(source)
                                    .with_read_only(r.resource_type == RESOURCE_BROKER)
                            })
                            .collect(),
                    )
                }
                Err((code, message)) => base
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

pub(super) fn describe_cluster(ctx: &Arc<Ctx>) -> DescribeClusterResponse {
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&ctx.logs.cluster_id))
        .with_controller_id(BrokerId(controller_id(ctx)))
        .with_brokers(
            brokers(ctx)
                .into_iter()
                .map(|(id, host, port)| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(id))
                        .with_host(str_bytes(&host))
                        .with_port(port)
                })
                .collect(),
        )
        .with_cluster_authorized_operations(i32::MIN)
}

pub(super) async fn init_producer_id(
    ctx: &Arc<Ctx>,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let base = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        // Transactions are not implemented (FindCoordinator is not advertised either).
        return base.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    if req.producer_id.0 >= 0 {
        // KIP-360: an idempotent producer bumping its epoch after an error keeps its id.
        let epoch = req.producer_epoch.checked_add(1).filter(|e| *e >= 0);
        return match epoch {
            Some(e) => base
                .with_producer_id(req.producer_id)
                .with_producer_epoch(e),
            None => match ctx.logs.next_producer_id().await {
                Ok(id) => base.with_producer_id(ProducerId(id)).with_producer_epoch(0),
                Err(e) => base.with_error_code(e.code()),
            },
        };
    }
    match ctx.logs.next_producer_id().await {
        Ok(id) => base.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => base.with_error_code(e.code()),
    }
}

/// DeleteRecords: moves each partition's log start offset up to the given offset (-1:
/// the high watermark), as its owner; the data below leaves the bucket with the
/// storage lifecycle (`crate::lifecycle`). OFFSET_OUT_OF_RANGE past the high watermark.
pub(super) async fn delete_records(
    ctx: &Arc<Ctx>,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    use kafka_protocol::messages::delete_records_response::{
        DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
    };
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let answer = |low_watermark: i64, error: i16| {
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(low_watermark)
                    .with_error_code(error)
            };
            let Ok(partition) = ctx.logs.partition(t.name.as_str(), p.partition_index) else {
                partitions.push(answer(-1, ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let hwm = partition.lock().high_watermark;
            let target = if p.offset == -1 { hwm } else { p.offset };
            if target < 0 || target > hwm {
                partitions.push(answer(-1, ResponseError::OffsetOutOfRange.code()));
                continue;
            }
            let before = partition.lock().log_start_offset;
            partitions.push(match ctx.logs.advance_log_start(&partition, target).await {
                Ok(low) => {
                    if low > before {
                        ctx.logs.metrics.log_start_moves_delete_records.inc();
                    }
                    answer(low, 0)
                }
                Err(e) => answer(-1, e.code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
