//! The group APIs on the wire: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, OffsetDelete, ListGroups, DescribeGroups and
//! DeleteGroups. Decodes each version's fields into the coordinator's calls
//! ([`crate::groups::Coordinator`]) and encodes the answers setting only fields that
//! exist in the request's version.

use std::collections::BTreeMap;
use std::sync::Arc;

use cirrus_controller::CommittedOffset;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorAnswer;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, str_bytes, topic_name};
use crate::groups::error::code;
use crate::groups::state::{JoinRequest, Protocol, SyncRequest};
use crate::groups::{GroupError, MAX_OFFSET_METADATA_BYTES};
use crate::log::now_ms;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn opt_str(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.as_str().to_string())
}

fn group_id(s: &str) -> GroupId {
    GroupId(str_bytes(s))
}

pub(super) fn find_coordinator(
    ctx: &Arc<Ctx>,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let answer = |key: &str| -> Result<(i32, String, i32), (ResponseError, String)> {
        match req.key_type {
            KEY_TYPE_GROUP => ctx
                .groups
                .find_coordinator(key)
                .map_err(|e| (e.kafka(), e.to_string())),
            KEY_TYPE_TRANSACTION => Err((
                ResponseError::InvalidRequest,
                "transactions are not supported".to_string(),
            )),
            other => Err((
                ResponseError::InvalidRequest,
                format!("key type {other} is not supported"),
            )),
        }
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let base = CoordinatorAnswer::default().with_key(key.clone());
                match answer(key.as_str()) {
                    Ok((node, host, port)) => base
                        .with_node_id(BrokerId(node))
                        .with_host(str_bytes(&host))
                        .with_port(port),
                    Err((e, message)) => base
                        .with_node_id(BrokerId(-1))
                        .with_host(StrBytes::default())
                        .with_port(-1)
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(&message))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match answer(req.key.as_str()) {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(&host))
            .with_port(port),
        Err((e, message)) => FindCoordinatorResponse::default()
            .with_error_code(e.code())
            .with_error_message((version >= 1).then(|| str_bytes(&message)))
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1),
    }
}

pub(super) async fn join_group(
    ctx: &Arc<Ctx>,
    version: i16,
    client_id: &str,
    client_host: &str,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    if let Some(reason) = &req.reason {
        tracing::debug!(group = %req.group_id.as_str(), reason = %reason.as_str(), "join group");
    }
    let join = JoinRequest {
        member_id: req.member_id.as_str().to_string(),
        instance_id: if version >= 5 {
            opt_str(&req.group_instance_id)
        } else {
            None
        },
        require_known_member_id: version >= 4,
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout bounds the rejoin.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.as_str().to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| Protocol {
                name: p.name.as_str().to_string(),
                metadata: p.metadata.clone(),
            })
            .collect(),
    };
    let r = ctx.groups.join(req.group_id.as_str(), join).await;
    let members = r
        .members
        .into_iter()
        .map(|m| {
            let base = JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_metadata(m.metadata);
            if version >= 5 {
                base.with_group_instance_id(m.instance_id.as_deref().map(str_bytes))
            } else {
                base
            }
        })
        .collect();
    // Before v7 the protocol name is not nullable: Kafka sends "" for none.
    let protocol_name = match r.protocol_name {
        Some(n) => Some(str_bytes(&n)),
        None if version < 7 => Some(StrBytes::default()),
        None => None,
    };
    let resp = JoinGroupResponse::default()
        .with_error_code(code(r.error))
        .with_generation_id(r.generation)
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&r.leader))
        .with_member_id(str_bytes(&r.member_id))
        .with_members(members);
    if version >= 7 {
        resp.with_protocol_type(r.protocol_type.as_deref().map(str_bytes))
    } else {
        resp
    }
}

pub(super) async fn sync_group(
    ctx: &Arc<Ctx>,
    version: i16,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    let sync = SyncRequest {
        member_id: req.member_id.as_str().to_string(),
        instance_id: if version >= 3 {
            opt_str(&req.group_instance_id)
        } else {
            None
        },
        generation: req.generation_id,
        protocol_type: if version >= 5 {
            opt_str(&req.protocol_type)
        } else {
            None
        },
        protocol_name: if version >= 5 {
            opt_str(&req.protocol_name)
        } else {
            None
        },
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
            .collect(),
    };
    let r = ctx.groups.sync(req.group_id.as_str(), sync).await;
    let resp = SyncGroupResponse::default()
        .with_error_code(code(r.error))
        .with_assignment(r.assignment);
    if version >= 5 {
        resp.with_protocol_type(r.protocol_type.as_deref().map(str_bytes))
            .with_protocol_name(r.protocol_name.as_deref().map(str_bytes))
    } else {
        resp
    }
}

pub(super) async fn heartbeat(
    ctx: &Arc<Ctx>,
    version: i16,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    let instance = if version >= 3 {
        opt_str(&req.group_instance_id)
    } else {
        None
    };
    let result = ctx
        .groups
        .heartbeat(
            req.group_id.as_str(),
            req.member_id.as_str(),
            instance.as_deref(),
            req.generation_id,
        )
        .await;
    HeartbeatResponse::default().with_error_code(code(result.err()))
}

pub(super) async fn leave_group(
    ctx: &Arc<Ctx>,
    version: i16,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str().to_string(),
                    opt_str(&m.group_instance_id),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.as_str().to_string(), None)]
    };
    let result = ctx.groups.leave(req.group_id.as_str(), &leaving).await;
    if version < 3 {
        let error = match result {
            Ok(results) => results.into_iter().find_map(Result::err),
            Err(e) => Some(e),
        };
        return LeaveGroupResponse::default().with_error_code(code(error));
    }
    match result {
        Ok(results) => LeaveGroupResponse::default().with_members(
            leaving
                .iter()
                .zip(results)
                .map(|((member, instance), r)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(member))
                        .with_group_instance_id(instance.as_deref().map(str_bytes))
                        .with_error_code(code(r.err()))
                })
                .collect(),
        ),
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
    }
}

pub(super) async fn offset_commit(
    ctx: &Arc<Ctx>,
    version: i16,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let commit_ms = now_ms();
    // Per partition: its error, or the offset to store.
    type Answers = Vec<(TopicName, Vec<(i32, Option<GroupError>)>)>;
    let mut answers: Answers = Vec::new();
    let mut to_store: BTreeMap<String, BTreeMap<i32, CommittedOffset>> = BTreeMap::new();
    for t in &req.topics {
        let topic = ctx.logs.get_topic(t.name.as_str());
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let exists = topic.as_ref().is_some_and(|t| {
                usize::try_from(p.partition_index).is_ok_and(|i| i < t.partitions.len())
            });
            let error = if !exists {
                Some(GroupError::UnknownTopicOrPartition)
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > MAX_OFFSET_METADATA_BYTES)
            {
                Some(GroupError::OffsetMetadataTooLarge)
            } else {
                to_store
                    .entry(t.name.as_str().to_string())
                    .or_default()
                    .insert(
                        p.partition_index,
                        CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: if version >= 6 {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: opt_str(&p.committed_metadata),
                            commit_ms,
                        },
                    );
                None
            };
            parts.push((p.partition_index, error));
        }
        answers.push((t.name.clone(), parts));
    }
    let instance = if version >= 7 {
        opt_str(&req.group_instance_id)
    } else {
        None
    };
    let stored = if to_store.is_empty() {
        Ok(())
    } else {
        ctx.groups
            .commit(
                req.group_id.as_str(),
                req.member_id.as_str(),
                instance.as_deref(),
                req.generation_id_or_member_epoch,
                to_store,
            )
            .await
    };
    let topics = answers
        .into_iter()
        .map(|(name, parts)| {
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(index, error)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(code(error.or(stored.err())))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's answer to OffsetFetch: (topic, [(partition, offset, epoch, metadata)]).
type Fetched = Vec<(String, Vec<(i32, i64, i32, String)>)>;

/// The offsets of `wanted` (None: every committed one) in a group.
async fn fetch_group(
    ctx: &Arc<Ctx>,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Fetched, GroupError> {
    let stored = ctx.groups.fetch_offsets(group).await?;
    let entry = |o: Option<&CommittedOffset>, p: i32| match o {
        Some(o) => (
            p,
            o.offset,
            o.leader_epoch,
            o.metadata.clone().unwrap_or_default(),
        ),
        None => (p, -1, -1, String::new()),
    };
    Ok(match wanted {
        None => stored
            .iter()
            .map(|(topic, parts)| {
                (
                    topic.clone(),
                    parts.iter().map(|(p, o)| entry(Some(o), *p)).collect(),
                )
            })
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|(topic, parts)| {
                let known = stored.get(&topic);
                let answers = parts
                    .iter()
                    .map(|p| entry(known.and_then(|k| k.get(p)), *p))
                    .collect();
                (topic, answers)
            })
            .collect(),
    })
}

pub(super) async fn offset_fetch(
    ctx: &Arc<Ctx>,
    version: i16,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in &req.groups {
            let wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.as_str().to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let base = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(match fetch_group(ctx, g.group_id.as_str(), wanted).await {
                Ok(fetched) => base.with_topics(
                    fetched
                        .into_iter()
                        .map(|(topic, parts)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(topic_name(&topic))
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .map(|(p, offset, epoch, metadata)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(Some(str_bytes(&metadata)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
                Err(e) => base.with_error_code(e.code()),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.as_str().to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let partition = |p: i32, offset: i64, epoch: i32, metadata: &str, error: i16| {
        let base = OffsetFetchResponsePartition::default()
            .with_partition_index(p)
            .with_committed_offset(offset)
            .with_metadata(Some(str_bytes(metadata)))
            .with_error_code(error);
        if version >= 5 {
            base.with_committed_leader_epoch(epoch)
        } else {
            base
        }
    };
    match fetch_group(ctx, req.group_id.as_str(), wanted.clone()).await {
        Ok(fetched) => OffsetFetchResponse::default().with_topics(
            fetched
                .into_iter()
                .map(|(topic, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, o, e, m)| partition(p, o, e, &m, 0))
                                .collect(),
                        )
                })
                .collect(),
        ),
        // v1 has no top-level error: every requested partition carries it.
        Err(e) if version < 2 => OffsetFetchResponse::default().with_topics(
            wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|p| partition(p, -1, -1, "", e.code()))
                                .collect(),
                        )
                })
                .collect(),
        ),
        Err(e) => OffsetFetchResponse::default().with_error_code(e.code()),
    }
}

pub(super) async fn offset_delete(
    ctx: &Arc<Ctx>,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let topics: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_str().to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    match ctx
        .groups
        .delete_offsets(req.group_id.as_str(), &topics)
        .await
    {
        Ok(results) => OffsetDeleteResponse::default().with_topics(
            results
                .into_iter()
                .map(|(topic, parts)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, e)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(code(e))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
        Err(e) => OffsetDeleteResponse::default().with_error_code(e.code()),
    }
}

pub(super) async fn list_groups(
    ctx: &Arc<Ctx>,
    version: i16,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    let states: Vec<String> = if version >= 4 {
        req.states_filter
            .iter()
            .map(|s| s.as_str().to_string())
            .collect()
    } else {
        Vec::new()
    };
    match ctx.groups.list(&states).await {
        Ok(groups) => ListGroupsResponse::default().with_groups(
            groups
                .into_iter()
                .map(|(name, protocol_type, state)| {
                    let g = ListedGroup::default()
                        .with_group_id(group_id(&name))
                        .with_protocol_type(str_bytes(&protocol_type));
                    if version >= 4 {
                        g.with_group_state(str_bytes(&state))
                    } else {
                        g
                    }
                })
                .collect(),
        ),
        Err(e) => ListGroupsResponse::default().with_error_code(e.code()),
    }
}

pub(super) async fn describe_groups(
    ctx: &Arc<Ctx>,
    version: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in &req.groups {
        let base = DescribedGroup::default()
            .with_group_id(g.clone())
            .with_protocol_type(StrBytes::default())
            .with_protocol_data(StrBytes::default());
        groups.push(match ctx.groups.describe(g.as_str()).await {
            Ok(d) => base
                .with_group_state(str_bytes(d.state.name()))
                .with_protocol_type(str_bytes(&d.protocol_type))
                .with_protocol_data(str_bytes(&d.protocol_data))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            let member = DescribedGroupMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment);
                            if version >= 4 {
                                member
                                    .with_group_instance_id(m.instance_id.as_deref().map(str_bytes))
                            } else {
                                member
                            }
                        })
                        .collect(),
                ),
            Err(e) => base
                .with_error_code(e.code())
                .with_group_state(StrBytes::default()),
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(super) async fn delete_groups(
    ctx: &Arc<Ctx>,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in &req.groups_names {
        let result = ctx.groups.delete_group(g.as_str()).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code(result.err())),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// Client host as Kafka shows it ("/1.2.3.4").
pub(super) fn client_host(peer: Option<std::net::SocketAddr>) -> String {
    peer.map(|p| format!("/{}", p.ip())).unwrap_or_default()
}

/// ConsumerGroupHeartbeat (KIP-848): the consumer protocol's one request, join,
/// heartbeat, reconcile and leave.
pub(super) async fn consumer_group_heartbeat(
    ctx: &Arc<Ctx>,
    version: i16,
    client_id: &str,
    client_host: &str,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    use crate::groups::consumer::HeartbeatRequest;
    use kafka_protocol::messages::consumer_group_heartbeat_response::{
        Assignment, TopicPartitions,
    };
    let decoded = HeartbeatRequest {
        member_id: req.member_id.as_str().to_string(),
        member_epoch: req.member_epoch,
        instance_id: opt_str(&req.instance_id),
        rack_id: opt_str(&req.rack_id),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|names| names.iter().map(|n| n.as_str().to_string()).collect()),
        subscribed_topic_regex: opt_str(&req.subscribed_topic_regex),
        server_assignor: opt_str(&req.server_assignor),
        topic_partitions: req.topic_partitions.as_ref().map(|tps| {
            tps.iter()
                .map(|tp| (tp.topic_id, tp.partitions.clone()))
                .collect()
        }),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
        api_version: version,
    };
    match ctx
        .groups
        .consumer_heartbeat(req.group_id.as_str(), decoded)
        .await
    {
        Ok(r) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(str_bytes(&r.member_id)))
            .with_member_epoch(r.member_epoch)
            .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
            .with_assignment(r.assignment.map(|parts| {
                Assignment::default().with_topic_partitions(
                    parts
                        .into_iter()
                        .map(|(topic_id, partitions)| {
                            TopicPartitions::default()
                                .with_topic_id(topic_id)
                                .with_partitions(partitions)
                        })
                        .collect(),
                )
            })),
        Err(e) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(&e.to_string()))),
    }
}

/// ConsumerGroupDescribe (KIP-848).
pub(super) async fn consumer_group_describe(
    ctx: &Arc<Ctx>,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup, Member, TopicPartitions,
    };
    let names: std::collections::HashMap<uuid::Uuid, String> = ctx
        .logs
        .topic_names()
        .into_iter()
        .filter_map(|n| ctx.logs.get_topic(&n).map(|t| (t.id, n)))
        .collect();
    let assignment = |parts: &[(uuid::Uuid, Vec<i32>)]| {
        Assignment::default().with_topic_partitions(
            parts
                .iter()
                .map(|(id, partitions)| {
                    TopicPartitions::default()
                        .with_topic_id(*id)
                        .with_topic_name(topic_name(
                            names.get(id).map(String::as_str).unwrap_or(""),
                        ))
                        .with_partitions(partitions.clone())
                })
                .collect(),
        )
    };
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for g in &req.group_ids {
        let base = DescribedGroup::default()
            .with_group_id(g.clone())
            .with_authorized_operations(i32::MIN);
        groups.push(match ctx.groups.consumer_describe(g.as_str()).await {
            Ok(d) => base
                .with_group_state(str_bytes(d.state.name()))
                .with_group_epoch(d.group_epoch)
                .with_assignment_epoch(d.assignment_epoch)
                .with_assignor_name(str_bytes(&d.assignor_name))
                .with_members(
                    d.members
                        .iter()
                        .map(|m| {
                            Member::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_instance_id(m.instance_id.as_deref().map(str_bytes))
                                .with_rack_id(m.rack_id.as_deref().map(str_bytes))
                                .with_member_epoch(m.member_epoch)
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_subscribed_topic_names(
                                    m.subscribed_topic_names
                                        .iter()
                                        .map(|t| topic_name(t))
                                        .collect(),
                                )
                                .with_subscribed_topic_regex(
                                    m.subscribed_topic_regex.as_deref().map(str_bytes),
                                )
                                .with_assignment(assignment(&m.assignment))
                                .with_target_assignment(assignment(&m.target_assignment))
                                .with_member_type(1)
                        })
                        .collect(),
                ),
            Err(e) => base
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(&e.to_string()))),
        });
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
