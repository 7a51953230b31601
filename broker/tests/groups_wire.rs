#![allow(clippy::unwrap_used)]
//! Wire-level tests of consumer groups on a real socket (single-node broker, in
//! process): every advertised version of every group API, the rebalance protocol with
//! several members on their own connections, offsets across a restart, the internal
//! topic, and offset expiry. Requests are encoded with kafka-protocol (a client's view),
//! so these check exact error codes. Real clients: tests/e2e/test_groups.py.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

mod common;
use common::{Client, start};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

fn tname(v: &str) -> TopicName {
    TopicName(s(v))
}

const SESSION_MS: i32 = 10_000;

fn join_req(group: &str, member: &str, meta: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(15_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            join_group_request::JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from(meta.to_string())),
        ])
}

fn join_req_v(v: i16, group: &str, member: &str, meta: &str) -> JoinGroupRequest {
    let req = join_req(group, member, meta);
    if v == 0 {
        req.with_rebalance_timeout_ms(-1)
    } else {
        req
    }
}

/// JoinGroup at version `v`, including the MEMBER_ID_REQUIRED round of v4+.
async fn join(c: &mut Client, v: i16, group: &str, meta: &str) -> JoinGroupResponse {
    let first = c.send(v, &join_req_v(v, group, "", meta)).await;
    if v < 4 {
        return first;
    }
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    assert!(!first.member_id.is_empty());
    c.send(v, &join_req_v(v, group, first.member_id.as_str(), meta))
        .await
}

fn sync_req(
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &str)],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::from(a.to_string()))
                })
                .collect(),
        )
}

/// A one-member Stable group: (member id, generation).
async fn form_group(c: &mut Client, group: &str) -> (String, i32) {
    let joined = join(c, 5, group, "meta").await;
    assert_eq!(joined.error_code, 0, "join {group}");
    let member = joined.member_id.as_str().to_string();
    let synced = c
        .send(
            3,
            &sync_req(group, &member, joined.generation_id, &[(&member, "asg")]),
        )
        .await;
    assert_eq!(synced.error_code, 0);
    assert_eq!(synced.assignment, Bytes::from("asg"));
    (member, joined.generation_id)
}

fn heartbeat_req(group: &str, member: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_generation_id(generation)
}

fn commit_req(
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    partition: i32,
    offset: i64,
    metadata: Option<&str>,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(tname(topic))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(partition)
                        .with_committed_offset(offset)
                        .with_committed_metadata(metadata.map(s)),
                ]),
        ])
}

fn commit_error(resp: &OffsetCommitResponse) -> i16 {
    resp.topics[0].partitions[0].error_code
}

/// OffsetFetch v7 of one partition: (offset, metadata, error).
async fn fetch_offset(
    c: &mut Client,
    group: &str,
    topic: &str,
    partition: i32,
) -> (i64, String, i16) {
    let req = OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(tname(topic))
                .with_partition_indexes(vec![partition]),
        ]));
    let resp = c.send(7, &req).await;
    assert_eq!(resp.error_code, 0);
    let p = &resp.topics[0].partitions[0];
    (
        p.committed_offset,
        p.metadata
            .as_ref()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
        p.error_code,
    )
}

async fn create_topic(c: &mut Client, name: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(tname(name))
                .with_num_partitions(partitions)
                .with_replication_factor(-1),
        ]);
    assert_eq!(c.send(5, &req).await.topics[0].error_code, 0);
}

const GROUP_KEYS: &[ApiKey] = &[
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::OffsetDelete,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
];

/// Every group API answers correctly at every version it advertises (and no other
/// version is advertised). A field set outside its version would make the encoder fail
/// and close the connection, which fails these tests.
#[tokio::test]
async fn every_advertised_group_api_version_answers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let port = i32::from(broker.kafka_addr.port());
    let mut c = Client::connect(broker.kafka_addr).await;
    create_topic(&mut c, "t", 2).await;
    let versions = c.send(3, &ApiVersionsRequest::default()).await.api_keys;
    let advertised = |k: ApiKey| {
        let v = versions
            .iter()
            .find(|a| a.api_key == k as i16)
            .unwrap_or_else(|| panic!("{k:?} is not advertised"));
        (v.min_version, v.max_version)
    };
    let expected: &[(ApiKey, (i16, i16))] = &[
        (ApiKey::FindCoordinator, (0, 4)),
        (ApiKey::JoinGroup, (0, 8)),
        (ApiKey::SyncGroup, (0, 5)),
        (ApiKey::Heartbeat, (0, 4)),
        (ApiKey::LeaveGroup, (0, 4)),
        (ApiKey::OffsetCommit, (2, 8)),
        (ApiKey::OffsetFetch, (1, 8)),
        (ApiKey::OffsetDelete, (0, 0)),
        (ApiKey::ListGroups, (0, 4)),
        (ApiKey::DescribeGroups, (0, 5)),
        (ApiKey::DeleteGroups, (0, 2)),
    ];
    assert_eq!(expected.len(), GROUP_KEYS.len());
    for (key, range) in expected {
        assert_eq!(advertised(*key), *range, "{key:?}");
    }

    for &key in GROUP_KEYS {
        let (min, max) = advertised(key);
        for v in min..=max {
            let label = format!("{key:?} v{v}");
            match key {
                ApiKey::FindCoordinator => {
                    if v >= 4 {
                        let req = FindCoordinatorRequest::default()
                            .with_key_type(0)
                            .with_coordinator_keys(vec![s("g1"), s("g2")]);
                        let resp = c.send(v, &req).await;
                        assert_eq!(resp.coordinators.len(), 2, "{label}");
                        for co in &resp.coordinators {
                            assert_eq!(
                                (co.error_code, co.node_id.0, co.port),
                                (0, 0, port),
                                "{label}"
                            );
                        }
                        let txn = FindCoordinatorRequest::default()
                            .with_key_type(1)
                            .with_coordinator_keys(vec![s("txn")]);
                        let co = &c.send(v, &txn).await.coordinators[0];
                        assert_eq!(co.error_code, ResponseError::InvalidRequest.code());
                        assert!(
                            co.error_message
                                .as_ref()
                                .is_some_and(|m| m.contains("transactions"))
                        );
                    } else {
                        let resp = c
                            .send(v, &FindCoordinatorRequest::default().with_key(s("g")))
                            .await;
                        assert_eq!(
                            (resp.error_code, resp.node_id.0, resp.port),
                            (0, 0, port),
                            "{label}"
                        );
                        assert_eq!(resp.host.as_str(), "127.0.0.1");
                        if v >= 1 {
                            let txn = FindCoordinatorRequest::default()
                                .with_key(s("txn"))
                                .with_key_type(1);
                            let resp = c.send(v, &txn).await;
                            assert_eq!(resp.error_code, ResponseError::InvalidRequest.code());
                            assert_eq!(resp.node_id.0, -1);
                        }
                    }
                }
                ApiKey::JoinGroup => {
                    let group = format!("join-v{v}");
                    let resp = join(&mut c, v, &group, "m").await;
                    assert_eq!(resp.error_code, 0, "{label}");
                    assert_eq!(resp.generation_id, 1, "{label}");
                    assert_eq!(resp.leader, resp.member_id, "{label}");
                    assert_eq!(
                        resp.protocol_name.as_ref().map(|p| p.as_str()),
                        Some("range")
                    );
                    assert_eq!(resp.members.len(), 1, "{label}");
                    assert_eq!(resp.members[0].metadata, Bytes::from("m"));
                    if v >= 7 {
                        assert_eq!(
                            resp.protocol_type.as_ref().map(|p| p.as_str()),
                            Some("consumer")
                        );
                    }
                    if v >= 5 {
                        // A static member: no MEMBER_ID_REQUIRED round.
                        let group = format!("join-static-v{v}");
                        let req =
                            join_req(&group, "", "m").with_group_instance_id(Some(s("instance-1")));
                        let resp = c.send(v, &req).await;
                        assert_eq!(resp.error_code, 0, "{label} static");
                        assert!(resp.member_id.starts_with("instance-1-"));
                        assert_eq!(
                            resp.members[0]
                                .group_instance_id
                                .as_ref()
                                .map(|i| i.as_str()),
                            Some("instance-1")
                        );
                    }
                    if v >= 8 {
                        let req = join_req(&format!("join-reason-v{v}"), "", "m")
                            .with_reason(Some(s("testing")));
                        assert_eq!(
                            c.send(v, &req).await.error_code,
                            ResponseError::MemberIdRequired.code()
                        );
                    }
                }
                ApiKey::SyncGroup => {
                    let group = format!("sync-v{v}");
                    let joined = join(&mut c, 5, &group, "m").await;
                    let member = joined.member_id.as_str().to_string();
                    let mut req =
                        sync_req(&group, &member, joined.generation_id, &[(&member, "p0,p1")]);
                    if v >= 5 {
                        req = req
                            .with_protocol_type(Some(s("consumer")))
                            .with_protocol_name(Some(s("range")));
                    }
                    let resp = c.send(v, &req).await;
                    assert_eq!(resp.error_code, 0, "{label}");
                    assert_eq!(resp.assignment, Bytes::from("p0,p1"), "{label}");
                    if v >= 5 {
                        assert_eq!(
                            resp.protocol_name.as_ref().map(|p| p.as_str()),
                            Some("range")
                        );
                        let wrong = sync_req(&group, &member, joined.generation_id, &[])
                            .with_protocol_type(Some(s("connect")));
                        assert_eq!(
                            c.send(v, &wrong).await.error_code,
                            ResponseError::InconsistentGroupProtocol.code()
                        );
                    }
                    let stale = sync_req(&group, &member, joined.generation_id + 1, &[]);
                    assert_eq!(
                        c.send(v, &stale).await.error_code,
                        ResponseError::IllegalGeneration.code(),
                        "{label}"
                    );
                }
                ApiKey::Heartbeat => {
                    let group = format!("hb-v{v}");
                    let (member, generation) = form_group(&mut c, &group).await;
                    let resp = c.send(v, &heartbeat_req(&group, &member, generation)).await;
                    assert_eq!(resp.error_code, 0, "{label}");
                    let resp = c
                        .send(v, &heartbeat_req(&group, &member, generation - 1))
                        .await;
                    assert_eq!(resp.error_code, ResponseError::IllegalGeneration.code());
                    let resp = c
                        .send(v, &heartbeat_req(&group, "nobody", generation))
                        .await;
                    assert_eq!(resp.error_code, ResponseError::UnknownMemberId.code());
                }
                ApiKey::LeaveGroup => {
                    let group = format!("leave-v{v}");
                    let (member, _) = form_group(&mut c, &group).await;
                    let req = if v >= 3 {
                        LeaveGroupRequest::default()
                            .with_group_id(gid(&group))
                            .with_members(vec![
                                leave_group_request::MemberIdentity::default()
                                    .with_member_id(s(&member)),
                                leave_group_request::MemberIdentity::default()
                                    .with_member_id(s("stranger")),
                            ])
                    } else {
                        LeaveGroupRequest::default()
                            .with_group_id(gid(&group))
                            .with_member_id(s(&member))
                    };
                    let resp = c.send(v, &req).await;
                    assert_eq!(resp.error_code, 0, "{label}");
                    if v >= 3 {
                        let codes: Vec<i16> = resp.members.iter().map(|m| m.error_code).collect();
                        assert_eq!(codes, vec![0, ResponseError::UnknownMemberId.code()]);
                    }
                    let d = c
                        .send(
                            5,
                            &DescribeGroupsRequest::default().with_groups(vec![gid(&group)]),
                        )
                        .await;
                    assert_eq!(d.groups[0].group_state.as_str(), "Empty", "{label}");
                }
                ApiKey::OffsetCommit => {
                    let group = format!("commit-v{v}");
                    let meta = format!("meta-{v}");
                    let mut req =
                        commit_req(&group, "", -1, "t", 1, 40 + i64::from(v), Some(&meta));
                    if v >= 6 {
                        req.topics[0].partitions[0].committed_leader_epoch = 3;
                    }
                    let resp = c.send(v, &req).await;
                    assert_eq!(commit_error(&resp), 0, "{label}");
                    let (offset, metadata, error) = fetch_offset(&mut c, &group, "t", 1).await;
                    assert_eq!(
                        (offset, metadata.as_str(), error),
                        (40 + i64::from(v), meta.as_str(), 0)
                    );
                    // Unknown partitions and oversized metadata are refused per partition.
                    let resp = c
                        .send(v, &commit_req(&group, "", -1, "t", 9, 1, None))
                        .await;
                    assert_eq!(
                        commit_error(&resp),
                        ResponseError::UnknownTopicOrPartition.code()
                    );
                    let big = "x".repeat(5000);
                    let resp = c
                        .send(v, &commit_req(&group, "", -1, "t", 0, 1, Some(&big)))
                        .await;
                    assert_eq!(
                        commit_error(&resp),
                        ResponseError::OffsetMetadataTooLarge.code()
                    );
                    // A member of a live group needs its generation.
                    let live = format!("commit-live-v{v}");
                    let (member, generation) = form_group(&mut c, &live).await;
                    let ok = c
                        .send(v, &commit_req(&live, &member, generation, "t", 0, 5, None))
                        .await;
                    assert_eq!(commit_error(&ok), 0, "{label}");
                    let stale = c
                        .send(
                            v,
                            &commit_req(&live, &member, generation + 1, "t", 0, 5, None),
                        )
                        .await;
                    assert_eq!(
                        commit_error(&stale),
                        ResponseError::IllegalGeneration.code()
                    );
                    let simple = c.send(v, &commit_req(&live, "", -1, "t", 0, 5, None)).await;
                    assert_eq!(commit_error(&simple), ResponseError::UnknownMemberId.code());
                }
                ApiKey::OffsetFetch => {
                    let group = format!("fetch-v{v}");
                    let resp = c
                        .send(5, &commit_req(&group, "", -1, "t", 0, 77, Some("md")))
                        .await;
                    assert_eq!(commit_error(&resp), 0);
                    if v >= 8 {
                        let req = OffsetFetchRequest::default().with_groups(vec![
                            offset_fetch_request::OffsetFetchRequestGroup::default()
                                .with_group_id(gid(&group))
                                .with_topics(None),
                            offset_fetch_request::OffsetFetchRequestGroup::default()
                                .with_group_id(gid("never-used"))
                                .with_topics(Some(vec![
                                    offset_fetch_request::OffsetFetchRequestTopics::default()
                                        .with_name(tname("t"))
                                        .with_partition_indexes(vec![0, 1]),
                                ])),
                        ]);
                        let resp = c.send(v, &req).await;
                        assert_eq!(resp.groups.len(), 2, "{label}");
                        let g0 = &resp.groups[0];
                        assert_eq!(g0.error_code, 0);
                        assert_eq!(g0.topics[0].partitions[0].committed_offset, 77);
                        assert_eq!(
                            g0.topics[0].partitions[0]
                                .metadata
                                .as_ref()
                                .map(|m| m.as_str()),
                            Some("md")
                        );
                        let g1 = &resp.groups[1];
                        let offsets: Vec<i64> = g1.topics[0]
                            .partitions
                            .iter()
                            .map(|p| p.committed_offset)
                            .collect();
                        assert_eq!(offsets, vec![-1, -1], "{label}");
                    } else {
                        let req = OffsetFetchRequest::default()
                            .with_group_id(gid(&group))
                            .with_topics(Some(vec![
                                offset_fetch_request::OffsetFetchRequestTopic::default()
                                    .with_name(tname("t"))
                                    .with_partition_indexes(vec![0, 1]),
                            ]));
                        let resp = c.send(v, &req).await;
                        let parts = &resp.topics[0].partitions;
                        assert_eq!(
                            parts.iter().map(|p| p.committed_offset).collect::<Vec<_>>(),
                            vec![77, -1],
                            "{label}"
                        );
                        assert_eq!(parts[0].metadata.as_ref().map(|m| m.as_str()), Some("md"));
                        if v >= 2 {
                            // All committed partitions when topics is null.
                            let all = c
                                .send(
                                    v,
                                    &OffsetFetchRequest::default()
                                        .with_group_id(gid(&group))
                                        .with_topics(None),
                                )
                                .await;
                            assert_eq!(all.error_code, 0);
                            assert_eq!(all.topics.len(), 1, "{label}");
                            assert_eq!(all.topics[0].partitions.len(), 1);
                            assert_eq!(all.topics[0].partitions[0].committed_offset, 77);
                        }
                    }
                }
                ApiKey::OffsetDelete => {
                    let group = format!("delete-offsets-v{v}");
                    let resp = c
                        .send(5, &commit_req(&group, "", -1, "t", 0, 11, None))
                        .await;
                    assert_eq!(commit_error(&resp), 0);
                    let req = OffsetDeleteRequest::default()
                        .with_group_id(gid(&group))
                        .with_topics(vec![
                            offset_delete_request::OffsetDeleteRequestTopic::default()
                                .with_name(tname("t"))
                                .with_partitions(vec![
                                    offset_delete_request::OffsetDeleteRequestPartition::default()
                                        .with_partition_index(0),
                                ]),
                        ]);
                    let resp = c.send(v, &req).await;
                    assert_eq!(resp.error_code, 0, "{label}");
                    assert_eq!(resp.topics[0].partitions[0].error_code, 0);
                    assert_eq!(fetch_offset(&mut c, &group, "t", 0).await.0, -1);
                    let unknown = req.clone().with_group_id(gid("no-such-group"));
                    assert_eq!(
                        c.send(v, &unknown).await.error_code,
                        ResponseError::GroupIdNotFound.code()
                    );
                }
                ApiKey::ListGroups => {
                    let group = format!("list-v{v}");
                    form_group(&mut c, &group).await;
                    let resp = c.send(v, &ListGroupsRequest::default()).await;
                    assert_eq!(resp.error_code, 0, "{label}");
                    let found = resp
                        .groups
                        .iter()
                        .find(|g| g.group_id.as_str() == group)
                        .unwrap_or_else(|| panic!("{label}: {group} not listed"));
                    assert_eq!(found.protocol_type.as_str(), "consumer");
                    if v >= 4 {
                        assert_eq!(found.group_state.as_str(), "Stable");
                        let filtered = c
                            .send(
                                v,
                                &ListGroupsRequest::default().with_states_filter(vec![s("empty")]),
                            )
                            .await;
                        assert!(
                            filtered
                                .groups
                                .iter()
                                .all(|g| g.group_state.as_str() == "Empty")
                        );
                        assert!(!filtered.groups.iter().any(|g| g.group_id.as_str() == group));
                    }
                }
                ApiKey::DescribeGroups => {
                    let group = format!("describe-v{v}");
                    let (member, _) = form_group(&mut c, &group).await;
                    let req = DescribeGroupsRequest::default()
                        .with_groups(vec![gid(&group), gid("no-such-group")]);
                    let resp = c.send(v, &req).await;
                    let g = &resp.groups[0];
                    assert_eq!(
                        (g.error_code, g.group_state.as_str()),
                        (0, "Stable"),
                        "{label}"
                    );
                    assert_eq!(g.protocol_type.as_str(), "consumer");
                    assert_eq!(g.protocol_data.as_str(), "range");
                    assert_eq!(g.members.len(), 1);
                    let m = &g.members[0];
                    assert_eq!(m.member_id.as_str(), member);
                    assert_eq!(m.client_id.as_str(), common::CLIENT_ID);
                    assert_eq!(m.client_host.as_str(), "/127.0.0.1");
                    assert_eq!(m.member_assignment, Bytes::from("asg"));
                    assert_eq!(m.member_metadata, Bytes::from("meta"));
                    assert_eq!(resp.groups[1].group_state.as_str(), "Dead");
                }
                ApiKey::DeleteGroups => {
                    let group = format!("delete-v{v}");
                    let resp = c
                        .send(5, &commit_req(&group, "", -1, "t", 0, 1, None))
                        .await;
                    assert_eq!(commit_error(&resp), 0);
                    let busy = format!("delete-busy-v{v}");
                    form_group(&mut c, &busy).await;
                    let req = DeleteGroupsRequest::default().with_groups_names(vec![
                        gid(&group),
                        gid(&busy),
                        gid("no-such-group"),
                    ]);
                    let codes: Vec<i16> = c
                        .send(v, &req)
                        .await
                        .results
                        .iter()
                        .map(|r| r.error_code)
                        .collect();
                    assert_eq!(
                        codes,
                        vec![
                            0,
                            ResponseError::NonEmptyGroup.code(),
                            ResponseError::GroupIdNotFound.code()
                        ],
                        "{label}"
                    );
                    assert_eq!(fetch_offset(&mut c, &group, "t", 0).await.0, -1);
                }
                other => panic!("{other:?} has no case in this test"),
            }
        }
    }
    broker.shutdown().await.unwrap();
}

/// The rebalance protocol with members on their own connections: a second member joining
/// a Stable group triggers one rebalance, the first member learns it from its heartbeat
/// and rejoins with its member id, the leader gets every member's metadata, each
/// follower waits in SyncGroup for the leader and gets its own assignment.
#[tokio::test]
async fn second_member_rebalance_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut a = Client::connect(broker.kafka_addr).await;
    create_topic(&mut a, "t", 1).await;
    let (a_id, gen1) = form_group(&mut a, "g").await;

    let mut b = Client::connect(broker.kafka_addr).await;
    let first = b.send(5, &join_req("g", "", "meta-b")).await;
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    let b_id = first.member_id.as_str().to_string();
    // B's join waits for the rebalance to complete.
    let b_join = tokio::spawn(async move {
        let resp = b.send(5, &join_req("g", &b_id, "meta-b")).await;
        (b, resp)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b_join.is_finished());
    let hb = a.send(4, &heartbeat_req("g", &a_id, gen1)).await;
    assert_eq!(hb.error_code, ResponseError::RebalanceInProgress.code());
    // A commits during the join phase: allowed at its (old) generation.
    let commit = a
        .send(8, &commit_req("g", &a_id, gen1, "t", 0, 1, None))
        .await;
    assert_eq!(commit_error(&commit), 0);
    let a_join = a.send(5, &join_req("g", &a_id, "meta-a")).await;
    assert_eq!(a_join.error_code, 0);
    assert_eq!(a_join.member_id.as_str(), a_id, "A rejoined under its id");
    assert_eq!(a_join.leader.as_str(), a_id);
    assert_eq!(a_join.generation_id, gen1 + 1);
    let mut metas: Vec<Bytes> = a_join.members.iter().map(|m| m.metadata.clone()).collect();
    metas.sort();
    assert_eq!(metas, vec![Bytes::from("meta-a"), Bytes::from("meta-b")]);
    let (mut b, b_resp) = b_join.await.unwrap();
    assert_eq!(b_resp.error_code, 0);
    assert_eq!(b_resp.generation_id, gen1 + 1);
    assert!(b_resp.members.is_empty(), "followers get no member list");
    let b_id = b_resp.member_id.as_str().to_string();
    let gen2 = a_join.generation_id;

    // B syncs first and waits for the leader's assignment.
    let b_sync = tokio::spawn(async move {
        let resp = b.send(5, &sync_req("g", &b_id, gen2, &[])).await;
        (b, b_id, resp)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b_sync.is_finished());
    let followers = a_join
        .members
        .iter()
        .find(|m| m.member_id.as_str() != a_id)
        .unwrap();
    let a_sync = a
        .send(
            5,
            &sync_req(
                "g",
                &a_id,
                gen2,
                &[
                    (&a_id, "A-parts"),
                    (followers.member_id.as_str(), "B-parts"),
                ],
            ),
        )
        .await;
    assert_eq!(
        (a_sync.error_code, a_sync.assignment.clone()),
        (0, Bytes::from("A-parts"))
    );
    let (mut b, b_id, b_sync) = b_sync.await.unwrap();
    assert_eq!(
        (b_sync.error_code, b_sync.assignment),
        (0, Bytes::from("B-parts"))
    );
    // Exactly one rebalance: both heartbeat fine at generation 2.
    assert_eq!(
        a.send(4, &heartbeat_req("g", &a_id, gen2)).await.error_code,
        0
    );
    assert_eq!(
        b.send(4, &heartbeat_req("g", &b_id, gen2)).await.error_code,
        0
    );
    // B leaves: A is told to rejoin, and the group goes on without B.
    let leave = b
        .send(
            1,
            &LeaveGroupRequest::default()
                .with_group_id(gid("g"))
                .with_member_id(s(&b_id)),
        )
        .await;
    assert_eq!(leave.error_code, 0);
    let hb = a.send(4, &heartbeat_req("g", &a_id, gen2)).await;
    assert_eq!(hb.error_code, ResponseError::RebalanceInProgress.code());
    let again = a.send(5, &join_req("g", &a_id, "meta-a")).await;
    assert_eq!(
        (again.error_code, again.generation_id, again.members.len()),
        (0, gen2 + 1, 1)
    );
    broker.shutdown().await.unwrap();
}

/// A member that stops heartbeating is evicted after its session timeout.
#[tokio::test]
async fn session_timeout_evicts_a_silent_member() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    let req = join_req("silent", "", "m").with_session_timeout_ms(6_000);
    let id = c.send(5, &req).await.member_id;
    let joined = c.send(5, &req.clone().with_member_id(id.clone())).await;
    assert_eq!(joined.error_code, 0);
    let synced = c
        .send(
            5,
            &sync_req("silent", id.as_str(), joined.generation_id, &[]),
        )
        .await;
    assert_eq!(synced.error_code, 0);
    let describe = DescribeGroupsRequest::default().with_groups(vec![gid("silent")]);
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    assert_eq!(
        c.send(5, &describe).await.groups[0].group_state.as_str(),
        "Stable"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let d = c.send(5, &describe).await;
    assert_eq!(d.groups[0].group_state.as_str(), "Empty");
    assert!(d.groups[0].members.is_empty());
    let hb = c
        .send(
            4,
            &heartbeat_req("silent", id.as_str(), joined.generation_id),
        )
        .await;
    assert_eq!(hb.error_code, ResponseError::UnknownMemberId.code());
    broker.shutdown().await.unwrap();
}

/// Offsets and the group's generation survive a restart; after it, the group's old
/// member is told to rejoin and is taken back under its member id.
#[tokio::test]
async fn offsets_and_generation_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    create_topic(&mut c, "t", 1).await;
    let (member, generation) = form_group(&mut c, "durable").await;
    let resp = c
        .send(
            8,
            &commit_req("durable", &member, generation, "t", 0, 1234, Some("meta")),
        )
        .await;
    assert_eq!(commit_error(&resp), 0);
    broker.shutdown().await.unwrap();

    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    assert_eq!(
        fetch_offset(&mut c, "durable", "t", 0).await,
        (1234, "meta".to_string(), 0)
    );
    // The member of the stored generation may still commit, and is told to rejoin.
    let resp = c
        .send(
            8,
            &commit_req("durable", &member, generation, "t", 0, 1300, None),
        )
        .await;
    assert_eq!(commit_error(&resp), 0);
    let hb = c
        .send(4, &heartbeat_req("durable", &member, generation))
        .await;
    assert_eq!(hb.error_code, ResponseError::RebalanceInProgress.code());
    let joined = c.send(5, &join_req("durable", &member, "meta")).await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.member_id.as_str(), member);
    assert_eq!(joined.generation_id, generation + 1, "generations continue");
    assert_eq!(fetch_offset(&mut c, "durable", "t", 0).await.0, 1300);
    broker.shutdown().await.unwrap();
}

/// `__consumer_offsets` exists, is internal, takes no produce and cannot be deleted.
#[tokio::test]
async fn the_coordinator_topic_is_internal() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    let md = c
        .send(12, &MetadataRequest::default().with_topics(None))
        .await;
    let topic = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("__consumer_offsets"))
        .expect("__consumer_offsets exists");
    assert!(topic.is_internal);
    assert_eq!(topic.partitions.len(), 50);
    assert!(
        md.topics
            .iter()
            .filter(|t| t.name.as_ref().map(|n| n.as_str()) != Some("__consumer_offsets"))
            .all(|t| !t.is_internal)
    );
    let mut batch = BytesMut::new();
    kafka_protocol::records::RecordBatchEncoder::encode(
        &mut batch,
        &[kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 1,
            key: None,
            value: Some(Bytes::from_static(b"nope")),
            headers: Default::default(),
        }],
        &kafka_protocol::records::RecordEncodeOptions {
            version: 2,
            compression: kafka_protocol::records::Compression::None,
        },
    )
    .unwrap();
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(tname("__consumer_offsets"))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.freeze())),
                ]),
        ]);
    let resp = c.send(9, &produce).await;
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidTopicException.code()
    );
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![tname("__consumer_offsets")]);
    assert_eq!(
        c.send(4, &delete).await.responses[0].error_code,
        ResponseError::InvalidTopicException.code()
    );
    broker.shutdown().await.unwrap();
    // A restart finds the topic and does not create it again.
    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    let md = c
        .send(
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(tname("__consumer_offsets"))),
            ])),
        )
        .await;
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(md.topics[0].partitions.len(), 50);
    broker.shutdown().await.unwrap();
}

/// Offsets of an empty group expire after the retention; the group then disappears.
/// Offsets of a group with members do not.
#[tokio::test]
async fn offsets_of_empty_groups_expire() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |a| {
        a.offsets_retention = Some(Duration::from_secs(1));
    })
    .await;
    let mut c = Client::connect(broker.kafka_addr).await;
    create_topic(&mut c, "t", 1).await;
    let resp = c
        .send(8, &commit_req("idle", "", -1, "t", 0, 5, None))
        .await;
    assert_eq!(commit_error(&resp), 0);
    let (member, generation) = form_group(&mut c, "busy").await;
    let resp = c
        .send(8, &commit_req("busy", &member, generation, "t", 0, 6, None))
        .await;
    assert_eq!(commit_error(&resp), 0);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        c.send(4, &heartbeat_req("busy", &member, generation))
            .await
            .error_code,
        0
    );
    let stats = broker.groups.sweep_once().await.unwrap();
    assert_eq!(stats.offsets_expired, 1, "{stats:?}");
    assert_eq!(stats.groups_deleted, 1, "{stats:?}");
    assert_eq!(fetch_offset(&mut c, "idle", "t", 0).await.0, -1);
    assert_eq!(fetch_offset(&mut c, "busy", "t", 0).await.0, 6);
    let listed = c.send(3, &ListGroupsRequest::default()).await;
    let names: Vec<&str> = listed.groups.iter().map(|g| g.group_id.as_str()).collect();
    assert_eq!(names, vec!["busy"]);
    broker.shutdown().await.unwrap();
}

/// Invalid group ids, session timeouts, unknown members and unknown groups get Kafka's
/// error codes.
#[tokio::test]
async fn invalid_requests_get_kafka_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    create_topic(&mut c, "t", 1).await;
    assert_eq!(
        c.send(5, &join_req("", "", "m")).await.error_code,
        ResponseError::InvalidGroupId.code()
    );
    assert_eq!(
        c.send(5, &join_req("g", "", "m").with_session_timeout_ms(10))
            .await
            .error_code,
        ResponseError::InvalidSessionTimeout.code()
    );
    assert_eq!(
        c.send(5, &join_req("g", "made-up-id", "m"))
            .await
            .error_code,
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        c.send(4, &heartbeat_req("unknown-group", "m", 1))
            .await
            .error_code,
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        c.send(3, &sync_req("unknown-group", "m", 1, &[]))
            .await
            .error_code,
        ResponseError::UnknownMemberId.code()
    );
    let resp = c
        .send(8, &commit_req("unknown-group", "m", 3, "t", 0, 1, None))
        .await;
    assert_eq!(commit_error(&resp), ResponseError::IllegalGeneration.code());
    broker.shutdown().await.unwrap();
}

/// When this broker stops coordinating a group's slot, the group is dropped: waiting and
/// new requests get NOT_COORDINATOR. When it coordinates the slot again (at a new epoch),
/// the group is loaded from the store and its member is taken back under its id.
#[tokio::test]
async fn losing_a_slot_drops_its_groups_and_regaining_it_reloads_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut a = Client::connect(broker.kafka_addr).await;
    let (a_id, gen1) = form_group(&mut a, "moving").await;
    // B's join waits for A to rejoin.
    let mut b = Client::connect(broker.kafka_addr).await;
    let b_id = b.send(5, &join_req("moving", "", "b")).await.member_id;
    let b_join = tokio::spawn(async move {
        b.send(5, &join_req("moving", b_id.as_str(), "b"))
            .await
            .error_code
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b_join.is_finished());

    let slot = cirrus_broker::groups::slot_of("moving");
    let p = broker
        .logs
        .partition(cirrus_broker::groups::OFFSETS_TOPIC, slot as i32)
        .unwrap();
    broker.logs.disown(std::slice::from_ref(&p));
    let code = tokio::time::timeout(Duration::from_secs(5), b_join)
        .await
        .expect("the waiting join is answered")
        .unwrap();
    assert_eq!(code, ResponseError::NotCoordinator.code());
    assert_eq!(
        a.send(4, &heartbeat_req("moving", &a_id, gen1))
            .await
            .error_code,
        ResponseError::NotCoordinator.code()
    );
    let fetch = OffsetFetchRequest::default()
        .with_group_id(gid("moving"))
        .with_topics(None);
    assert_eq!(
        a.send(7, &fetch).await.error_code,
        ResponseError::NotCoordinator.code()
    );
    // Other slots are unaffected.
    let other = (0..)
        .map(|i| format!("other-{i}"))
        .find(|g| cirrus_broker::groups::slot_of(g) != slot)
        .unwrap();
    form_group(&mut a, &other).await;

    // The slot comes back at a new epoch: the group reloads from the store.
    let index = broker.logs.meta.cluster_index().await.unwrap();
    broker
        .logs
        .load_partitions(&[(p, 7)], &index)
        .await
        .unwrap();
    assert_eq!(
        a.send(4, &heartbeat_req("moving", &a_id, gen1))
            .await
            .error_code,
        ResponseError::RebalanceInProgress.code()
    );
    let again = a.send(5, &join_req("moving", &a_id, "meta")).await;
    assert_eq!(again.error_code, 0);
    assert_eq!(again.member_id.as_str(), a_id);
    assert!(again.generation_id > gen1);
    broker.shutdown().await.unwrap();
}

/// KIP-848 on the wire, both advertised versions of ConsumerGroupHeartbeat and
/// ConsumerGroupDescribe: a join (v0: the coordinator picks the member id; v1: the
/// client's), the assignment by topic id, a second member that gets partitions only
/// after the first acknowledges their revocation, a commit with the member epoch, the
/// classic protocol refused for the same group, a leave, and Kafka's error codes.
#[tokio::test]
async fn consumer_protocol_heartbeats_assign_and_revoke() {
    use consumer_group_heartbeat_request::TopicPartitions as Owned;
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = Client::connect(broker.kafka_addr).await;
    create_topic(&mut c, "kt", 4).await;
    let md = c
        .send(12, &MetadataRequest::default().with_topics(None))
        .await;
    let topic_id = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("kt"))
        .unwrap()
        .topic_id;
    let hb = |member: &str, epoch: i32| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(gid("kg"))
            .with_member_id(s(member))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(30_000)
    };
    let assigned = |r: &ConsumerGroupHeartbeatResponse| -> Option<Vec<i32>> {
        r.assignment.as_ref().map(|a| {
            assert!(a.topic_partitions.iter().all(|tp| tp.topic_id == topic_id));
            let mut ps: Vec<i32> = a
                .topic_partitions
                .iter()
                .flat_map(|tp| tp.partitions.clone())
                .collect();
            ps.sort();
            ps
        })
    };
    let owned = |ps: &[i32]| {
        Some(vec![
            Owned::default()
                .with_topic_id(topic_id)
                .with_partitions(ps.to_vec()),
        ])
    };

    // v0: the coordinator names the member; it gets all four partitions.
    let a = c
        .send(
            0,
            &hb("", 0)
                .with_subscribed_topic_names(Some(vec![tname("kt")]))
                .with_topic_partitions(Some(vec![])),
        )
        .await;
    assert_eq!(a.error_code, 0, "{a:?}");
    let a_id = a.member_id.clone().unwrap().to_string();
    assert!(!a_id.is_empty());
    assert!(a.member_epoch > 0 && a.heartbeat_interval_ms > 0);
    assert_eq!(assigned(&a), Some(vec![0, 1, 2, 3]));
    let a_epoch = a.member_epoch;
    let a2 = c
        .send(
            0,
            &hb(&a_id, a_epoch).with_topic_partitions(owned(&[0, 1, 2, 3])),
        )
        .await;
    assert_eq!((a2.error_code, a2.member_epoch), (0, a_epoch));

    // v1: the client names the member. B joins; A must give up two partitions first.
    let b = c
        .send(
            1,
            &hb("member-b", 0)
                .with_subscribed_topic_names(Some(vec![tname("kt")]))
                .with_topic_partitions(Some(vec![])),
        )
        .await;
    assert_eq!(b.error_code, 0, "{b:?}");
    assert_eq!(b.member_id.as_deref(), Some("member-b"));
    assert_eq!(assigned(&b), Some(vec![]), "nothing until A revokes");
    let a3 = c.send(1, &hb(&a_id, a_epoch)).await;
    assert_eq!(a3.error_code, 0);
    let kept = assigned(&a3).expect("A is told what it keeps");
    assert_eq!(kept.len(), 2);
    assert_eq!(
        a3.member_epoch, a_epoch,
        "the epoch waits for the revocation"
    );
    // A commits with its epoch meanwhile.
    let commit = c
        .send(8, &commit_req("kg", &a_id, a_epoch, "kt", 0, 3, None))
        .await;
    assert_eq!(commit_error(&commit), 0);
    let stale = c
        .send(8, &commit_req("kg", &a_id, a_epoch + 5, "kt", 0, 4, None))
        .await;
    assert_eq!(commit_error(&stale), ResponseError::StaleMemberEpoch.code());
    // A acknowledges; then B gets the other two.
    let a4 = c
        .send(1, &hb(&a_id, a_epoch).with_topic_partitions(owned(&kept)))
        .await;
    assert_eq!(a4.error_code, 0);
    assert!(a4.member_epoch > a_epoch);
    let b2 = c.send(1, &hb("member-b", b.member_epoch)).await;
    assert_eq!(b2.error_code, 0);
    let mut all = kept.clone();
    all.extend(assigned(&b2).expect("B gets the released partitions"));
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3]);

    // ConsumerGroupDescribe, both versions.
    for v in 0..=1 {
        let d = c
            .send(
                v,
                &ConsumerGroupDescribeRequest::default()
                    .with_group_ids(vec![gid("kg"), gid("nope")]),
            )
            .await;
        assert_eq!(d.groups[0].error_code, 0);
        assert_eq!(d.groups[0].members.len(), 2);
        assert_eq!(d.groups[0].assignor_name.as_str(), "uniform");
        assert_eq!(
            d.groups[1].error_code,
            ResponseError::GroupIdNotFound.code()
        );
    }
    // The classic protocol may not join a consumer group with members.
    assert_eq!(
        c.send(5, &join_req("kg", "", "m")).await.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    // Errors: an unknown member, a fenced epoch, an unknown assignor.
    assert_eq!(
        c.send(1, &hb("ghost", 3)).await.error_code,
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        c.send(1, &hb("member-b", 999)).await.error_code,
        ResponseError::FencedMemberEpoch.code()
    );
    assert_eq!(
        c.send(
            1,
            &hb("member-c", 0)
                .with_subscribed_topic_names(Some(vec![tname("kt")]))
                .with_server_assignor(Some(s("nope")))
                .with_topic_partitions(Some(vec![]))
        )
        .await
        .error_code,
        ResponseError::UnsupportedAssignor.code()
    );
    // Leaving: epoch -1 answers -1; B then gets everything.
    let left = c.send(1, &hb(&a_id, -1)).await;
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    let b3 = c.send(1, &hb("member-b", b2.member_epoch)).await;
    assert_eq!(assigned(&b3), Some(vec![0, 1, 2, 3]));
    let (offset, _, err) = fetch_offset(&mut c, "kg", "kt", 0).await;
    assert_eq!((offset, err), (3, 0));
    broker.shutdown().await.unwrap();
}
