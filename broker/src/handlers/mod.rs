//! One handler per Kafka API. [`supported`] is the single list of what the broker
//! implements: ApiVersions advertises exactly it, and anything else closes the
//! connection, as Kafka does for APIs it does not know.

mod admin;
mod fetch;
mod groups;
mod produce;

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::config::Settings;
use crate::log::LogManager;
use crate::server::{DecodedRequest, PendingResponse, encode_response, ready};

/// What every handler can reach.
#[derive(Debug)]
pub struct Ctx {
    pub settings: Arc<Settings>,
    pub logs: Arc<LogManager>,
    /// Cluster membership (None on a single node).
    pub member: Option<Arc<crate::cluster::Member>>,
    /// The consumer group coordinator.
    pub groups: Arc<crate::groups::Coordinator>,
}

/// The versions this broker implements, per API (None: not implemented, not advertised).
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    Some(match key {
        ApiKey::Produce => (3, 11),
        ApiKey::Fetch => (4, 16),
        ApiKey::ListOffsets => (1, 7),
        ApiKey::Metadata => (0, 12),
        ApiKey::ApiVersions => (0, 3),
        ApiKey::CreateTopics => (2, 7),
        ApiKey::DeleteTopics => (1, 6),
        ApiKey::CreatePartitions => (0, 3),
        ApiKey::DeleteRecords => (0, 2),
        ApiKey::DescribeConfigs => (1, 4),
        ApiKey::DescribeCluster => (0, 1),
        ApiKey::OffsetForLeaderEpoch => (2, 4),
        ApiKey::InitProducerId => (0, 4),
        ApiKey::FindCoordinator => (0, 4),
        ApiKey::JoinGroup => (0, 8),
        ApiKey::SyncGroup => (0, 5),
        ApiKey::Heartbeat => (0, 4),
        ApiKey::LeaveGroup => (0, 4),
        ApiKey::OffsetCommit => (2, 8),
        ApiKey::OffsetFetch => (1, 8),
        ApiKey::OffsetDelete => (0, 0),
        ApiKey::ListGroups => (0, 4),
        ApiKey::DescribeGroups => (0, 5),
        ApiKey::DeleteGroups => (0, 2),
        ApiKey::ConsumerGroupHeartbeat => (0, 1),
        ApiKey::ConsumerGroupDescribe => (0, 1),
        _ => return None,
    })
}

/// A static name per implemented API, for metric labels.
pub fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        _ => "other",
    }
}

const ALL_KEYS: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::DeleteRecords,
    ApiKey::DescribeConfigs,
    ApiKey::DescribeCluster,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::InitProducerId,
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
    ApiKey::ConsumerGroupHeartbeat,
    ApiKey::ConsumerGroupDescribe,
];

fn api_keys() -> Vec<ApiVersion> {
    ALL_KEYS
        .iter()
        .filter_map(|k| {
            let (min, max) = supported(*k)?;
            let crate_range = k.valid_versions();
            Some(
                ApiVersion::default()
                    .with_api_key(*k as i16)
                    .with_min_version(min.max(crate_range.min))
                    .with_max_version(max.min(crate_range.max)),
            )
        })
        .collect()
}

/// The answer to an ApiVersions request of a version we do not know (sent as v0).
pub fn api_versions_unsupported() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys())
}

/// Runs the handler of a decoded request and encodes the response. `peer` is the
/// client's address (DescribeGroups shows it).
pub async fn handle(
    ctx: &Arc<Ctx>,
    req: DecodedRequest,
    peer: Option<std::net::SocketAddr>,
) -> Result<PendingResponse, String> {
    let DecodedRequest { key, header, body } = req;
    let v = header.request_api_version;
    let cid = header.correlation_id;
    macro_rules! respond {
        ($resp:expr) => {
            Ok(ready(encode_response(key, v, cid, &$resp)))
        };
    }
    match body {
        RequestKind::ApiVersions(_) => {
            respond!(ApiVersionsResponse::default().with_api_keys(api_keys()))
        }
        RequestKind::Produce(req) => Ok(produce::handle(ctx, v, cid, req).await),
        RequestKind::Fetch(req) => respond!(fetch::handle(ctx, v, req).await),
        RequestKind::ListOffsets(req) => respond!(fetch::list_offsets(ctx, v, req).await),
        RequestKind::OffsetForLeaderEpoch(req) => {
            respond!(fetch::offset_for_leader_epoch(ctx, req))
        }
        RequestKind::Metadata(req) => respond!(admin::metadata(ctx, v, req).await),
        RequestKind::CreateTopics(req) => respond!(admin::create_topics(ctx, v, req).await),
        RequestKind::DeleteTopics(req) => respond!(admin::delete_topics(ctx, v, req).await),
        RequestKind::CreatePartitions(req) => respond!(admin::create_partitions(ctx, req).await),
        RequestKind::DeleteRecords(req) => respond!(admin::delete_records(ctx, req).await),
        RequestKind::DescribeConfigs(req) => respond!(admin::describe_configs(ctx, req)),
        RequestKind::DescribeCluster(_) => respond!(admin::describe_cluster(ctx)),
        RequestKind::InitProducerId(req) => respond!(admin::init_producer_id(ctx, req).await),
        RequestKind::FindCoordinator(req) => respond!(groups::find_coordinator(ctx, v, req)),
        RequestKind::JoinGroup(req) => {
            let host = groups::client_host(peer);
            respond!(groups::join_group(ctx, v, &client_id(&header), &host, req).await)
        }
        RequestKind::SyncGroup(req) => respond!(groups::sync_group(ctx, v, req).await),
        RequestKind::Heartbeat(req) => respond!(groups::heartbeat(ctx, v, req).await),
        RequestKind::LeaveGroup(req) => respond!(groups::leave_group(ctx, v, req).await),
        RequestKind::OffsetCommit(req) => respond!(groups::offset_commit(ctx, v, req).await),
        RequestKind::OffsetFetch(req) => respond!(groups::offset_fetch(ctx, v, req).await),
        RequestKind::OffsetDelete(req) => respond!(groups::offset_delete(ctx, req).await),
        RequestKind::ListGroups(req) => respond!(groups::list_groups(ctx, v, req).await),
        RequestKind::DescribeGroups(req) => respond!(groups::describe_groups(ctx, v, req).await),
        RequestKind::DeleteGroups(req) => respond!(groups::delete_groups(ctx, req).await),
        RequestKind::ConsumerGroupHeartbeat(req) => {
            let host = groups::client_host(peer);
            respond!(
                groups::consumer_group_heartbeat(ctx, v, &client_id(&header), &host, req).await
            )
        }
        RequestKind::ConsumerGroupDescribe(req) => {
            respond!(groups::consumer_group_describe(ctx, req).await)
        }
        _ => Err(format!("api {key:?} is not supported")),
    }
}

/// The request header's client id ("" when null).
fn client_id(header: &kafka_protocol::messages::RequestHeader) -> String {
    header
        .client_id
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default()
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}
