//! The admin gRPC API (`cirrus.admin.v1.Admin`, proto/) served by every broker on
//! `--admin-listen`; `cirrus admin` is its client.
//!
//! Cluster and topic calls read or write the shared metadata store, so any broker gives
//! the same answer. Moves are requests: they set `moving_to` on owner records and the
//! current owners perform the handover (see [`crate::cluster`]); calls with `wait` then
//! poll the owner records (bounded by the client's deadline) and stream [`Progress`].
//! On a single node the cluster calls (moves, drains, rebalance) answer
//! FAILED_PRECONDITION.
//!
//! What only one broker knows is forwarded to it over this same API, with `forwarded`
//! set so the receiver answers locally and never forwards again: partition offsets to
//! the partition's owner ([`ListOffsets`]), a group's live state to its coordinator
//! (DescribeGroup, ResetOffsets), and ListGroups to every live broker. Each forwarded
//! call is bounded by [`FORWARD_TIMEOUT`].

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cirrus_controller::{CommittedOffset, MetaError, OwnerChange, OwnerRecord};
use cirrus_proto::admin::v1 as pb;
use cirrus_proto::admin::v1::admin_client::AdminClient;
use cirrus_proto::admin::v1::admin_server::{Admin, AdminServer};
use futures::Stream;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use crate::cluster::Member;
use crate::error::BrokerError;
use crate::groups::{Coordinator, GroupError};
use crate::log::LogManager;

/// How often a waiting call re-reads the owner records.
const PROGRESS_POLL: Duration = Duration::from_millis(100);
/// A waiting call gives up after this long (the moves go on in the cluster).
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Default bound on the moves of one rebalance.
const DEFAULT_MAX_MOVES: usize = 1000;

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::Progress, Status>> + Send>>;

/// Bound on one call forwarded to another broker (connect included).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    service: AdminService,
    mut shutdown: watch::Receiver<bool>,
) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let result = tonic::transport::Server::builder()
        .add_service(AdminServer::new(service))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin API server failed");
    }
}

/// The admin API of one broker.
#[derive(Debug, Clone)]
pub struct AdminService {
    logs: Arc<LogManager>,
    /// None on a single node.
    member: Option<Arc<Member>>,
    groups: Arc<Coordinator>,
    autoscale: crate::load::AutoscaleSlot,
}

fn meta_status(e: MetaError) -> Status {
    match e {
        MetaError::NotFound { .. } => Status::not_found(e.to_string()),
        MetaError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        MetaError::InvalidTopicName { .. }
        | MetaError::InvalidPartitions { .. }
        | MetaError::InvalidArgument(_) => Status::invalid_argument(e.to_string()),
        MetaError::Conflict(_) => Status::aborted(e.to_string()),
        other => Status::unavailable(format!("metadata store: {other}")),
    }
}

fn broker_status(e: BrokerError) -> Status {
    match e {
        BrokerError::UnknownTopicOrPartition => Status::not_found(e.to_string()),
        BrokerError::TopicAlreadyExists => Status::already_exists(e.to_string()),
        BrokerError::InvalidTopic(_)
        | BrokerError::InvalidPartitions(_)
        | BrokerError::InvalidConfig(_)
        | BrokerError::InvalidRequest(_) => Status::invalid_argument(e.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

impl AdminService {
    pub fn new(
        logs: Arc<LogManager>,
        member: Option<Arc<Member>>,
        groups: Arc<Coordinator>,
        autoscale: crate::load::AutoscaleSlot,
    ) -> AdminService {
        AdminService {
            logs,
            member,
            groups,
            autoscale,
        }
    }

    fn meta(&self) -> &cirrus_controller::Metadata {
        &self.logs.meta
    }

    /// The cluster membership, or FAILED_PRECONDITION on a single node.
    fn member(&self) -> Result<&Arc<Member>, Status> {
        self.member.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this broker runs as a single node (no --etcd-endpoints): there are no other brokers to move partitions to",
            )
        })
    }

    /// Stream ids of a topic's partitions, by index.
    async fn streams_of(&self, topic: &str) -> Result<Vec<u64>, Status> {
        let record = self
            .meta()
            .get_topic(topic)
            .await
            .map_err(meta_status)?
            .ok_or_else(|| Status::not_found(format!("topic {topic} does not exist")))?;
        Ok(record.partitions.iter().map(|p| p.stream_id).collect())
    }

    /// Sets `moving_to` on the given owner records (CAS); returns how many were recorded.
    async fn request_moves(&self, moves: &[(OwnerRecord, u64, i32)]) -> Result<usize, Status> {
        let changes: Vec<OwnerChange> = moves
            .iter()
            .map(|(o, version, dest)| OwnerChange::Put {
                record: OwnerRecord {
                    moving_to: Some(*dest),
                    ..o.clone()
                },
                expected_version: *version,
            })
            .collect();
        self.meta()
            .apply_owner_changes(&changes, &[])
            .await
            .map_err(meta_status)
    }

    /// Streams progress until `done(owners)` counts `total`, or the stream's reader
    /// goes away, or [`MAX_WAIT`] passes.
    fn progress<F>(&self, total: usize, message: String, done: F) -> ProgressStream
    where
        F: Fn(&HashMap<u64, OwnerRecord>) -> usize + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(16);
        let meta = self.logs.meta.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut last_done = usize::MAX;
            loop {
                let owners = match meta.list_owners().await {
                    Ok(o) => o.into_iter().map(|(o, _)| (o.stream_id, o)).collect(),
                    Err(e) => {
                        tracing::debug!(error = %e, "admin progress: listing owners failed");
                        tokio::time::sleep(PROGRESS_POLL).await;
                        continue;
                    }
                };
                let done_now = done(&owners).min(total);
                let finished = done_now >= total;
                if done_now != last_done || finished {
                    last_done = done_now;
                    let progress = pb::Progress {
                        total: total as u32,
                        done: done_now as u32,
                        remaining: (total - done_now) as u32,
                        elapsed_seconds: started.elapsed().as_secs_f64(),
                        message: message.clone(),
                        finished,
                    };
                    if tx.send(Ok(progress)).await.is_err() {
                        return; // the client went away (or its deadline passed)
                    }
                }
                if finished {
                    return;
                }
                if started.elapsed() > MAX_WAIT {
                    let _ = tx
                        .send(Err(Status::deadline_exceeded(
                            "the moves did not finish in time; they go on in the cluster",
                        )))
                        .await;
                    return;
                }
                tokio::time::sleep(PROGRESS_POLL).await;
            }
        });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    /// The one-message answer of a call with `wait = false`: `total` moves recorded,
    /// none done yet (finished only when there was nothing to move).
    fn recorded(total: usize, message: String) -> ProgressStream {
        let progress = pb::Progress {
            total: total as u32,
            done: 0,
            remaining: total as u32,
            elapsed_seconds: 0.0,
            message,
            finished: total == 0,
        };
        Box::pin(futures::stream::iter([Ok(progress)]))
    }

    /// Waits (streaming progress) until every stream in `targets` is owned by its
    /// destination with no move pending.
    fn wait_for_moves(&self, targets: HashMap<u64, i32>, message: String) -> ProgressStream {
        let total = targets.len();
        self.progress(total, message, move |owners| {
            targets
                .iter()
                .filter(|(s, dest)| {
                    owners
                        .get(s)
                        .is_some_and(|o| o.broker == **dest && o.moving_to.is_none())
                })
                .count()
        })
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    type MovePartitionsStream = ProgressStream;
    type DrainBrokerStream = ProgressStream;
    type RebalanceStream = ProgressStream;

    async fn describe_cluster(
        &self,
        _request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let meta = &self.meta();
        let Some(member) = &self.member else {
            return self.describe_single_node().await.map(Response::new);
        };
        let view = member.refresh_view().await.map_err(meta_status)?;
        let loads: HashMap<i32, cirrus_controller::BrokerLoad> = meta
            .list_loads()
            .await
            .map_err(meta_status)?
            .into_iter()
            .map(|l| (l.id, l))
            .collect();
        let topics = meta.list_topics().await.map_err(meta_status)?;
        let mut infos: BTreeMap<i32, pb::BrokerInfo> = view
            .brokers
            .values()
            .map(|b| {
                (
                    b.id,
                    pb::BrokerInfo {
                        id: b.id,
                        host: b.host.clone(),
                        port: b.port,
                        admin_addr: b.admin_addr.clone(),
                        live: true,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let mut offline = 0u32;
        for o in view.owners.values() {
            let owner = infos.entry(o.broker).or_insert_with(|| pb::BrokerInfo {
                id: o.broker,
                live: false,
                ..Default::default()
            });
            owner.partitions += 1;
            if !owner.live {
                offline += 1;
            }
            if let Some(dest) = o.moving_to {
                owner.moving_out += 1;
                infos
                    .entry(dest)
                    .or_insert_with(|| pb::BrokerInfo {
                        id: dest,
                        ..Default::default()
                    })
                    .moving_in += 1;
            }
        }
        for (id, info) in infos.iter_mut() {
            info.draining = view.drains.contains(id);
            if let Some(load) = loads.get(id) {
                info.bytes_in_per_sec = load.bytes_in_per_sec;
                info.bytes_out_per_sec = load.bytes_out_per_sec;
            }
        }
        let partitions: usize = topics.iter().map(|t| t.partitions.len()).sum();
        let unowned = partitions.saturating_sub(view.owners.len()) as u32;
        Ok(Response::new(pb::DescribeClusterResponse {
            brokers: infos.into_values().collect(),
            controller_id: view.controller.unwrap_or(-1),
            topics: topics.len() as u32,
            partitions: partitions as u32,
            offline_partitions: offline + unowned,
        }))
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let topics = self.meta().list_topics().await.map_err(meta_status)?;
        Ok(Response::new(pb::ListTopicsResponse {
            topics: topics
                .into_iter()
                .map(|t| pb::TopicInfo {
                    partitions: t.partitions.len() as i32,
                    topic_id: t.topic_id.to_string(),
                    configs: t.configs.into_iter().collect(),
                    name: t.name,
                })
                .collect(),
        }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let name = request.into_inner().name;
        let record = self
            .meta()
            .get_topic(&name)
            .await
            .map_err(meta_status)?
            .ok_or_else(|| Status::not_found(format!("topic {name} does not exist")))?;
        let view = match &self.member {
            Some(member) => Some(member.refresh_view().await.map_err(meta_status)?),
            None => None,
        };
        let offsets = self
            .list_offsets_anywhere(
                record
                    .partitions
                    .iter()
                    .map(|p| query(&record.name, p.index))
                    .collect(),
            )
            .await;
        let local = self.logs.partitions_by_stream();
        let partitions = record
            .partitions
            .iter()
            .zip(offsets)
            .map(|(p, found)| {
                let (log_start_offset, high_watermark) = if found.error.is_empty() {
                    (found.log_start_offset, found.high_watermark)
                } else {
                    (p.log_start_offset, -1)
                };
                let info = pb::PartitionInfo {
                    index: p.index,
                    stream_id: p.stream_id,
                    log_start_offset,
                    high_watermark,
                    ..Default::default()
                };
                match &view {
                    Some(view) => {
                        let owner = view.owners.get(&p.stream_id);
                        pb::PartitionInfo {
                            owner: owner.map_or(-1, |o| o.broker),
                            epoch: owner.map_or(-1, |o| o.epoch),
                            moving_to: owner.and_then(|o| o.moving_to).unwrap_or(-1),
                            online: owner.is_some_and(|o| view.brokers.contains_key(&o.broker)),
                            ..info
                        }
                    }
                    None => pb::PartitionInfo {
                        owner: self.logs.settings.node_id,
                        epoch: local
                            .get(&p.stream_id)
                            .map_or(-1, |l| l.lock().leader_epoch),
                        moving_to: -1,
                        online: true,
                        ..info
                    },
                }
            })
            .collect();
        Ok(Response::new(pb::DescribeTopicResponse {
            name: record.name,
            topic_id: record.topic_id.to_string(),
            configs: record.configs.into_iter().collect(),
            partitions,
        }))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let req = request.into_inner();
        let topic = self
            .logs
            .create_topic(
                &req.name,
                req.partitions,
                req.configs.into_iter().collect(),
                false,
            )
            .await
            .map_err(broker_status)?;
        Ok(Response::new(pb::CreateTopicResponse {
            topic_id: topic.id.to_string(),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        self.logs.delete_topic(&name).await.map_err(broker_status)?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn move_partitions(
        &self,
        request: Request<pb::MovePartitionsRequest>,
    ) -> Result<Response<Self::MovePartitionsStream>, Status> {
        let req = request.into_inner();
        if req.moves.is_empty() {
            return Err(Status::invalid_argument("no partitions to move"));
        }
        let view = self.member()?.refresh_view().await.map_err(meta_status)?;
        let versions: HashMap<u64, (OwnerRecord, u64)> = self
            .meta()
            .list_owners()
            .await
            .map_err(meta_status)?
            .into_iter()
            .map(|(o, v)| (o.stream_id, (o, v)))
            .collect();
        let mut targets: HashMap<u64, i32> = HashMap::new();
        let mut requests = Vec::new();
        for m in &req.moves {
            if !view.brokers.contains_key(&m.to_broker) {
                return Err(Status::failed_precondition(format!(
                    "broker {} is not live",
                    m.to_broker
                )));
            }
            if view.drains.contains(&m.to_broker) {
                return Err(Status::failed_precondition(format!(
                    "broker {} is draining; undrain it first",
                    m.to_broker
                )));
            }
            let streams = self.streams_of(&m.topic).await?;
            let stream = usize::try_from(m.partition)
                .ok()
                .and_then(|i| streams.get(i).copied())
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "topic {} has no partition {}",
                        m.topic, m.partition
                    ))
                })?;
            if targets.insert(stream, m.to_broker).is_some() {
                return Err(Status::invalid_argument(format!(
                    "partition {}-{} is listed twice",
                    m.topic, m.partition
                )));
            }
            let (owner, version) = versions.get(&stream).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "partition {}-{} has no owner yet; retry in a moment",
                    m.topic, m.partition
                ))
            })?;
            if !view.brokers.contains_key(&owner.broker) {
                return Err(Status::failed_precondition(format!(
                    "partition {}-{} is offline (broker {} is not live): it moves when that broker returns, or by failover",
                    m.topic, m.partition, owner.broker
                )));
            }
            if owner.broker != m.to_broker {
                requests.push((owner.clone(), *version, m.to_broker));
            }
        }
        let recorded = self.request_moves(&requests).await?;
        if recorded < requests.len() {
            return Err(Status::aborted(format!(
                "{} of {} moves were recorded; the others changed concurrently, retry",
                recorded,
                requests.len()
            )));
        }
        let message = format!("moving {} partitions", targets.len());
        if !req.wait {
            let total = if requests.is_empty() {
                0
            } else {
                targets.len()
            };
            return Ok(Response::new(Self::recorded(total, message)));
        }
        Ok(Response::new(self.wait_for_moves(targets, message)))
    }

    async fn drain_broker(
        &self,
        request: Request<pb::DrainBrokerRequest>,
    ) -> Result<Response<Self::DrainBrokerStream>, Status> {
        let req = request.into_inner();
        let id = req.broker_id;
        let view = self.member()?.refresh_view().await.map_err(meta_status)?;
        let owned = view.owners.values().filter(|o| o.broker == id).count();
        if !view.brokers.contains_key(&id) && owned == 0 {
            return Err(Status::not_found(format!(
                "broker {id} is not registered and owns no partitions"
            )));
        }
        let others = view
            .brokers
            .keys()
            .filter(|b| **b != id && !view.drains.contains(b))
            .count();
        if others == 0 && owned > 0 {
            return Err(Status::failed_precondition(format!(
                "no other live, undrained broker can take broker {id}'s {owned} partitions"
            )));
        }
        self.meta().set_drain(id, true).await.map_err(meta_status)?;
        let message = format!("draining broker {id}");
        if !req.wait {
            return Ok(Response::new(Self::recorded(owned, message)));
        }
        Ok(Response::new(self.progress(
            owned,
            message,
            move |owners| {
                let left = owners.values().filter(|o| o.broker == id).count();
                owned.saturating_sub(left)
            },
        )))
    }

    async fn undrain_broker(
        &self,
        request: Request<pb::UndrainBrokerRequest>,
    ) -> Result<Response<pb::UndrainBrokerResponse>, Status> {
        let id = request.into_inner().broker_id;
        self.member()?;
        self.meta()
            .set_drain(id, false)
            .await
            .map_err(meta_status)?;
        Ok(Response::new(pb::UndrainBrokerResponse {}))
    }

    async fn rebalance(
        &self,
        request: Request<pb::RebalanceRequest>,
    ) -> Result<Response<Self::RebalanceStream>, Status> {
        let req = request.into_inner();
        let max_moves = match req.max_moves {
            0 => DEFAULT_MAX_MOVES,
            n => n as usize,
        };
        self.member()?;
        let view = cirrus_controller::read_view(self.meta())
            .await
            .map_err(meta_status)?;
        let plan = cirrus_controller::rebalance_plan(&view, max_moves);
        let mut targets = HashMap::new();
        for change in &plan {
            if let OwnerChange::Put { record, .. } = change
                && let Some(dest) = record.moving_to
            {
                targets.insert(record.stream_id, dest);
            }
        }
        let recorded = self
            .meta()
            .apply_owner_changes(&plan, &[])
            .await
            .map_err(meta_status)?;
        let message = if plan.is_empty() {
            "already balanced".to_string()
        } else {
            format!(
                "rebalancing: {} moves planned, {recorded} recorded",
                plan.len()
            )
        };
        if !req.wait || targets.is_empty() {
            return Ok(Response::new(Self::recorded(targets.len(), message)));
        }
        Ok(Response::new(self.wait_for_moves(targets, message)))
    }

    async fn get_autoscale(
        &self,
        _request: Request<pb::GetAutoscaleRequest>,
    ) -> Result<Response<pb::GetAutoscaleResponse>, Status> {
        let live = self
            .member
            .as_ref()
            .map_or(1, |m| m.view().brokers.len() as u32);
        let r = crate::load::current(&self.autoscale, &self.logs.settings.autoscale, live);
        Ok(Response::new(pb::GetAutoscaleResponse {
            recommended_brokers: r.recommended_brokers,
            current_brokers: r.current_brokers,
            limited_by: r.limited_by,
            bytes_in_per_sec: r.bytes_in_per_sec,
            bytes_out_per_sec: r.bytes_out_per_sec,
            cpu_cores_used: r.cpu_cores_used,
            need_by_bytes_in: r.need_by_bytes_in,
            need_by_bytes_out: r.need_by_bytes_out,
            need_by_cpu: r.need_by_cpu,
            target_bytes_in_per_sec: r.targets.bytes_in_per_sec,
            target_bytes_out_per_sec: r.targets.bytes_out_per_sec,
            target_cpu_cores: r.targets.cpu_cores,
            min_brokers: r.targets.min_brokers,
            max_brokers: r.targets.max_brokers,
            measured_brokers: r.measured_brokers,
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let req = request.into_inner();
        let partitions = if req.forwarded {
            self.list_offsets_local(&req.partitions).await
        } else {
            self.list_offsets_anywhere(req.partitions).await
        };
        Ok(Response::new(pb::ListOffsetsResponse { partitions }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let req = request.into_inner();
        let local = self.groups.list(&req.states).await.map_err(group_status)?;
        let mut groups: Vec<pb::GroupListing> = local
            .into_iter()
            .map(|(group, protocol_type, state)| pb::GroupListing {
                group,
                protocol_type,
                state,
                coordinator: self.node_id(),
            })
            .collect();
        if let (false, Some(member)) = (req.forwarded, &self.member) {
            let view = member.view();
            let others = view
                .brokers
                .values()
                .filter(|b| b.id != self.node_id())
                .map(|b| {
                    let request = pb::ListGroupsRequest {
                        states: req.states.clone(),
                        forwarded: true,
                    };
                    let (id, addr) = (b.id, b.admin_addr.clone());
                    async move {
                        let mut client = connect(&addr).await?;
                        client.list_groups(request).await.map_err(|e| {
                            Status::unavailable(format!(
                                "broker {id} did not list its groups: {}",
                                e.message()
                            ))
                        })
                    }
                });
            for answer in futures::future::join_all(others).await {
                groups.extend(answer?.into_inner().groups);
            }
        }
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        groups.dedup_by(|a, b| a.group == b.group);
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let req = request.into_inner();
        if !req.forwarded
            && let Some((_, addr)) = self.coordinator_addr(&req.group)?
        {
            let mut client = connect(&addr).await?;
            return client
                .describe_group(pb::DescribeGroupRequest {
                    forwarded: true,
                    ..req
                })
                .await;
        }
        Ok(Response::new(self.describe_group_local(&req.group).await?))
    }

    async fn reset_offsets(
        &self,
        request: Request<pb::ResetOffsetsRequest>,
    ) -> Result<Response<pb::ResetOffsetsResponse>, Status> {
        let req = request.into_inner();
        if !req.forwarded
            && let Some((_, addr)) = self.coordinator_addr(&req.group)?
        {
            let mut client = connect(&addr).await?;
            return client
                .reset_offsets(pb::ResetOffsetsRequest {
                    forwarded: true,
                    ..req
                })
                .await;
        }
        Ok(Response::new(self.reset_offsets_local(req).await?))
    }

    async fn get_storage(
        &self,
        _: Request<pb::GetStorageRequest>,
    ) -> Result<Response<pb::GetStorageResponse>, Status> {
        let grace = self.logs.settings.orphan_grace;
        let survey = async {
            // Bucket first, index second (see crate::lifecycle).
            let bucket = crate::lifecycle::sweep_orphans(&self.logs, grace, None).await?;
            let usage = self.logs.storage_usage().await?;
            anyhow::Ok((bucket, usage))
        };
        let (bucket, usage) = tokio::time::timeout(STORAGE_SURVEY_TIMEOUT, survey)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "surveying the bucket took longer than {STORAGE_SURVEY_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| Status::unavailable(format!("cannot survey the bucket: {e:#}")))?;
        let mut topics: BTreeMap<String, pb::TopicStorage> = BTreeMap::new();
        let mut deleted_record_bytes = usage.deleted_bytes;
        for (stream, bytes) in usage.live_by_stream {
            let Some((topic, _)) = self.logs.topic_of_stream(stream) else {
                deleted_record_bytes += bytes;
                continue;
            };
            let entry = topics
                .entry(topic.clone())
                .or_insert_with(|| pb::TopicStorage {
                    topic,
                    ..Default::default()
                });
            entry.live_bytes += bytes;
            entry.partitions += 1;
        }
        Ok(Response::new(pb::GetStorageResponse {
            topics: topics.into_values().collect(),
            data_objects: bucket.data_objects,
            data_bytes: bucket.data_bytes,
            index_blobs: bucket.index_blobs,
            index_bytes: bucket.index_bytes,
            deleted_record_bytes,
            orphan_objects: bucket.orphan_objects,
            orphan_bytes: bucket.orphan_bytes,
            unreferenced_young_objects: bucket.unreferenced_young_objects,
            unreferenced_young_bytes: bucket.unreferenced_young_bytes,
            orphan_grace_ms: grace.as_millis() as u64,
        }))
    }
}

/// Bound on listing the bucket and reading the index for GetStorage.
const STORAGE_SURVEY_TIMEOUT: Duration = Duration::from_secs(120);

/// A ListOffsets query for the offsets of one partition, without lookups.
fn query(topic: &str, partition: i32) -> pb::PartitionOffsetQuery {
    pb::PartitionOffsetQuery {
        topic: topic.to_string(),
        partition,
        timestamp_ms: None,
        timestamp_of_offset: None,
    }
}

/// The answer for a partition that has none.
fn offsets_error(q: &pb::PartitionOffsetQuery, error: String) -> pb::PartitionOffsets {
    pb::PartitionOffsets {
        topic: q.topic.clone(),
        partition: q.partition,
        error,
        log_start_offset: -1,
        high_watermark: -1,
        offset_for_timestamp: -1,
        timestamp_of_offset: -1,
    }
}

fn group_status(e: GroupError) -> Status {
    match e {
        GroupError::NotCoordinator | GroupError::CoordinatorNotAvailable => Status::unavailable(
            format!("{e}; the coordinator is moving, try again in a moment"),
        ),
        GroupError::InvalidGroupId | GroupError::InvalidRequest => {
            Status::invalid_argument(e.to_string())
        }
        GroupError::UnknownTopicOrPartition => Status::not_found(e.to_string()),
        GroupError::GroupIdNotFound => Status::not_found(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

/// A client of another broker's admin API, bounded by [`FORWARD_TIMEOUT`].
async fn connect(addr: &str) -> Result<AdminClient<tonic::transport::Channel>, Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::internal(format!("bad admin address {addr:?}: {e}")))?
        .connect_timeout(FORWARD_TIMEOUT)
        .timeout(FORWARD_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot reach the admin API of {addr}: {e}")))?;
    Ok(AdminClient::new(channel))
}

impl AdminService {
    fn node_id(&self) -> i32 {
        self.logs.settings.node_id
    }

    /// DescribeCluster of a single node: itself, owning every partition.
    async fn describe_single_node(&self) -> Result<pb::DescribeClusterResponse, Status> {
        let topics = self.meta().list_topics().await.map_err(meta_status)?;
        let partitions: usize = topics.iter().map(|t| t.partitions.len()).sum();
        let settings = &self.logs.settings;
        let load = crate::load::current(&self.autoscale, &settings.autoscale, 1);
        Ok(pb::DescribeClusterResponse {
            brokers: vec![pb::BrokerInfo {
                id: settings.node_id,
                host: settings.advertised_host.clone(),
                port: settings.advertised_port,
                admin_addr: settings.admin_listen.to_string(),
                live: true,
                partitions: partitions as u32,
                bytes_in_per_sec: load.bytes_in_per_sec,
                bytes_out_per_sec: load.bytes_out_per_sec,
                ..Default::default()
            }],
            controller_id: settings.node_id,
            topics: topics.len() as u32,
            partitions: partitions as u32,
            offline_partitions: 0,
        })
    }

    /// The offsets of one partition this broker serves.
    async fn offsets_of(&self, q: &pb::PartitionOffsetQuery) -> pb::PartitionOffsets {
        let Ok(partition) = self.logs.partition(&q.topic, q.partition) else {
            return offsets_error(q, "unknown topic or partition".to_string());
        };
        let (served, log_start_offset, high_watermark) = {
            let st = partition.lock();
            (
                st.owned && !st.deleted,
                st.log_start_offset,
                st.high_watermark,
            )
        };
        if !served {
            return offsets_error(
                q,
                format!(
                    "broker {} does not serve this partition (now)",
                    self.node_id()
                ),
            );
        }
        let offset_for_timestamp = match q.timestamp_ms {
            None => -1,
            Some(ts) => match self.logs.offset_for_timestamp(&partition, ts).await {
                Ok(found) => found.map_or(high_watermark, |(offset, _)| offset),
                Err(e) => return offsets_error(q, e.to_string()),
            },
        };
        let timestamp_of_offset = match q.timestamp_of_offset {
            None => -1,
            Some(offset) => match self.logs.timestamp_at_offset(&partition, offset).await {
                Ok(found) => found.unwrap_or(-1),
                Err(e) => return offsets_error(q, e.to_string()),
            },
        };
        pb::PartitionOffsets {
            topic: q.topic.clone(),
            partition: q.partition,
            error: String::new(),
            log_start_offset,
            high_watermark,
            offset_for_timestamp,
            timestamp_of_offset,
        }
    }

    async fn list_offsets_local(
        &self,
        queries: &[pb::PartitionOffsetQuery],
    ) -> Vec<pb::PartitionOffsets> {
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            out.push(self.offsets_of(q).await);
        }
        out
    }

    /// Answers every query, in order: partitions served here locally, the others by
    /// their owners (one forwarded call per owner, concurrently). A partition whose
    /// owner is not live or does not answer gets an error entry.
    async fn list_offsets_anywhere(
        &self,
        queries: Vec<pb::PartitionOffsetQuery>,
    ) -> Vec<pb::PartitionOffsets> {
        let Some(member) = &self.member else {
            return self.list_offsets_local(&queries).await;
        };
        let view = member.view();
        let mut out: Vec<pb::PartitionOffsets> = queries
            .iter()
            .map(|q| offsets_error(q, "the partition has no owner".to_string()))
            .collect();
        let mut by_owner: BTreeMap<i32, Vec<(usize, pb::PartitionOffsetQuery)>> = BTreeMap::new();
        for (i, q) in queries.into_iter().enumerate() {
            let owner = self
                .logs
                .partition(&q.topic, q.partition)
                .ok()
                .and_then(|p| view.owners.get(&p.stream_id).map(|o| o.broker));
            match owner {
                Some(broker) => by_owner.entry(broker).or_default().push((i, q)),
                None if self.logs.partition(&q.topic, q.partition).is_err() => {
                    out[i] = offsets_error(&q, "unknown topic or partition".to_string());
                }
                None => {}
            }
        }
        let view = &view;
        let calls = by_owner.into_iter().map(|(broker, items)| async move {
            let (indices, qs): (Vec<usize>, Vec<pb::PartitionOffsetQuery>) =
                items.into_iter().unzip();
            let answers = if broker == self.node_id() {
                self.list_offsets_local(&qs).await
            } else {
                let failed = |why: String| -> Vec<pb::PartitionOffsets> {
                    qs.iter().map(|q| offsets_error(q, why.clone())).collect()
                };
                match view.brokers.get(&broker) {
                    None => failed(format!("its owner, broker {broker}, is not live")),
                    Some(b) => {
                        let request = pb::ListOffsetsRequest {
                            partitions: qs.clone(),
                            forwarded: true,
                        };
                        let answer = match connect(&b.admin_addr).await {
                            Ok(mut client) => client.list_offsets(request).await,
                            Err(e) => Err(e),
                        };
                        match answer {
                            Ok(r) if r.get_ref().partitions.len() == qs.len() => {
                                r.into_inner().partitions
                            }
                            Ok(_) => failed(format!("broker {broker} answered another count")),
                            Err(e) => failed(format!(
                                "its owner, broker {broker}, did not answer: {}",
                                e.message()
                            )),
                        }
                    }
                }
            };
            indices.into_iter().zip(answers).collect::<Vec<_>>()
        });
        for pairs in futures::future::join_all(calls).await {
            for (i, answer) in pairs {
                out[i] = answer;
            }
        }
        out
    }

    /// The admin address of a group's coordinator, or None if it is this broker.
    fn coordinator_addr(&self, group: &str) -> Result<Option<(i32, String)>, Status> {
        let (node, _, _) = self.groups.find_coordinator(group).map_err(group_status)?;
        if node == self.node_id() {
            return Ok(None);
        }
        let addr = self
            .member
            .as_ref()
            .and_then(|m| m.view().brokers.get(&node).map(|b| b.admin_addr.clone()))
            .ok_or_else(|| {
                Status::unavailable(format!(
                    "the group's coordinator, broker {node}, is not live"
                ))
            })?;
        Ok(Some((node, addr)))
    }

    async fn describe_group_local(&self, group: &str) -> Result<pb::DescribeGroupResponse, Status> {
        if let Ok(consumer) = self.groups.consumer_describe(group).await
            && !consumer.members.is_empty()
        {
            return self.describe_consumer_group(consumer).await;
        }
        let desc = self.groups.describe(group).await.map_err(group_status)?;
        let committed = self
            .groups
            .fetch_offsets(group)
            .await
            .map_err(group_status)?;
        let mut assigned: BTreeMap<(String, i32), String> = BTreeMap::new();
        let mut members = Vec::with_capacity(desc.members.len());
        for m in &desc.members {
            let assignment = if desc.protocol_type == "consumer" {
                crate::groups::state::assigned_partitions(&m.assignment).unwrap_or_default()
            } else {
                Vec::new()
            };
            for (topic, partitions) in &assignment {
                for p in partitions {
                    assigned.insert((topic.clone(), *p), m.member_id.clone());
                }
            }
            members.push(pb::GroupMember {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone().unwrap_or_default(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                assignment: assignment
                    .into_iter()
                    .map(|(topic, partitions)| pb::TopicPartitions { topic, partitions })
                    .collect(),
            });
        }
        let offsets = self.offset_rows(committed, &assigned).await;
        Ok(pb::DescribeGroupResponse {
            group: group.to_string(),
            state: desc.state.name().to_string(),
            protocol_type: desc.protocol_type,
            protocol: desc.protocol_data,
            coordinator: self.node_id(),
            members,
            offsets,
        })
    }

    /// DescribeGroup of a KIP-848 consumer group (members and assignments from the
    /// consumer group state machine; topic ids shown by name).
    async fn describe_consumer_group(
        &self,
        d: crate::groups::consumer::ConsumerGroupDescription,
    ) -> Result<pb::DescribeGroupResponse, Status> {
        let committed = self
            .groups
            .fetch_offsets(&d.group_id)
            .await
            .map_err(group_status)?;
        let names: HashMap<uuid::Uuid, String> = self
            .logs
            .topic_names()
            .into_iter()
            .filter_map(|n| self.logs.get_topic(&n).map(|t| (t.id, n)))
            .collect();
        let mut assigned: BTreeMap<(String, i32), String> = BTreeMap::new();
        let members = d
            .members
            .iter()
            .map(|m| {
                let assignment: Vec<pb::TopicPartitions> = m
                    .assignment
                    .iter()
                    .map(|(id, partitions)| {
                        let topic = names.get(id).cloned().unwrap_or_else(|| id.to_string());
                        for p in partitions {
                            assigned.insert((topic.clone(), *p), m.member_id.clone());
                        }
                        pb::TopicPartitions {
                            topic,
                            partitions: partitions.clone(),
                        }
                    })
                    .collect();
                pb::GroupMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone().unwrap_or_default(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    assignment,
                }
            })
            .collect();
        let offsets = self.offset_rows(committed, &assigned).await;
        Ok(pb::DescribeGroupResponse {
            group: d.group_id.clone(),
            state: crate::groups::consumer_coordinator::capitalized(d.state.name()),
            protocol_type: "consumer".to_string(),
            protocol: d.assignor_name.clone(),
            coordinator: self.node_id(),
            members,
            offsets,
        })
    }

    /// The offset rows of a group description: every committed partition, then the
    /// assigned partitions without a commit, with the log end and the lag.
    async fn offset_rows(
        &self,
        committed: BTreeMap<String, BTreeMap<i32, CommittedOffset>>,
        assigned: &BTreeMap<(String, i32), String>,
    ) -> Vec<pb::GroupOffset> {
        let mut rows: BTreeMap<(String, i32), Option<CommittedOffset>> = BTreeMap::new();
        for (topic, partitions) in committed {
            for (p, c) in partitions {
                rows.insert((topic.clone(), p), Some(c));
            }
        }
        for key in assigned.keys() {
            rows.entry(key.clone()).or_insert(None);
        }
        let queries = rows
            .iter()
            .map(|((topic, p), c)| pb::PartitionOffsetQuery {
                timestamp_of_offset: c.as_ref().map(|c| c.offset),
                ..query(topic, *p)
            })
            .collect();
        let answers = self.list_offsets_anywhere(queries).await;
        let now = crate::log::now_ms();
        rows.into_iter()
            .zip(answers)
            .map(|((key, c), found)| {
                let known = found.error.is_empty();
                let committed = c.as_ref().map_or(-1, |c| c.offset);
                let log_end = if known { found.high_watermark } else { -1 };
                let lag = if known && committed >= 0 {
                    (log_end - committed).max(0)
                } else {
                    -1
                };
                let lag_ms = match lag {
                    -1 => -1,
                    0 => 0,
                    _ if found.timestamp_of_offset >= 0 => (now - found.timestamp_of_offset).max(0),
                    _ => -1,
                };
                pb::GroupOffset {
                    member_id: assigned.get(&key).cloned().unwrap_or_default(),
                    topic: key.0,
                    partition: key.1,
                    committed,
                    log_end,
                    lag,
                    lag_ms,
                    metadata: c.and_then(|c| c.metadata).unwrap_or_default(),
                }
            })
            .collect()
    }

    async fn reset_offsets_local(
        &self,
        req: pb::ResetOffsetsRequest,
    ) -> Result<pb::ResetOffsetsResponse, Status> {
        use pb::reset_offsets_request::Target;
        let group = req.group.as_str();
        let target = req.target.ok_or_else(|| {
            Status::invalid_argument(
                "say where to reset to: earliest, latest, a datetime, an offset or a shift",
            )
        })?;
        let desc = self.groups.describe(group).await.map_err(group_status)?;
        let (members, state) = match self.groups.consumer_describe(group).await {
            Ok(c) if !c.members.is_empty() => (c.members.len(), c.state.name().to_string()),
            _ => (desc.members.len(), desc.state.name().to_string()),
        };
        if members > 0 {
            return Err(Status::failed_precondition(format!(
                "group {group:?} has {members} active members (state {state}); offsets can only be reset while the group is inactive: stop its consumers first"
            )));
        }
        let committed = self
            .groups
            .fetch_offsets(group)
            .await
            .map_err(group_status)?;
        let mut partitions: Vec<(String, i32)> = Vec::new();
        if req.all_topics {
            for (topic, ps) in &committed {
                partitions.extend(ps.keys().map(|p| (topic.clone(), *p)));
            }
        } else {
            if req.topics.is_empty() {
                return Err(Status::invalid_argument(
                    "name the topics to reset, or all topics",
                ));
            }
            for t in &req.topics {
                let topic = self.logs.get_topic(&t.topic).ok_or_else(|| {
                    Status::not_found(format!("topic {} does not exist", t.topic))
                })?;
                let count = topic.partitions.len() as i32;
                if t.partitions.is_empty() {
                    partitions.extend((0..count).map(|p| (t.topic.clone(), p)));
                } else {
                    for p in &t.partitions {
                        if !(0..count).contains(p) {
                            return Err(Status::not_found(format!(
                                "topic {} has no partition {p} (it has {count})",
                                t.topic
                            )));
                        }
                        partitions.push((t.topic.clone(), *p));
                    }
                }
            }
        }
        partitions.sort();
        partitions.dedup();
        let queries = partitions
            .iter()
            .map(|(topic, p)| pb::PartitionOffsetQuery {
                timestamp_ms: match target {
                    Target::ToDatetimeMs(ts) => Some(ts),
                    _ => None,
                },
                ..query(topic, *p)
            })
            .collect();
        let answers = self.list_offsets_anywhere(queries).await;
        let mut resets = Vec::with_capacity(partitions.len());
        for ((topic, p), found) in partitions.into_iter().zip(answers) {
            if !found.error.is_empty() {
                return Err(Status::unavailable(format!(
                    "offsets of {topic}-{p} are not available: {}",
                    found.error
                )));
            }
            let previous = committed
                .get(&topic)
                .and_then(|ps| ps.get(&p))
                .map_or(-1, |c| c.offset);
            let (start, end) = (found.log_start_offset, found.high_watermark);
            let new_offset = match target {
                Target::ToEarliest(_) => start,
                Target::ToLatest(_) => end,
                Target::ToDatetimeMs(_) => found.offset_for_timestamp,
                Target::ToOffset(o) => o.clamp(start, end),
                Target::ShiftBy(n) => {
                    if previous < 0 {
                        return Err(Status::failed_precondition(format!(
                            "{topic}-{p} has no committed offset to shift"
                        )));
                    }
                    previous.saturating_add(n).clamp(start, end)
                }
            };
            resets.push(pb::OffsetReset {
                topic,
                partition: p,
                previous,
                new_offset,
            });
        }
        if req.execute && !resets.is_empty() {
            let now = crate::log::now_ms();
            let mut offsets: BTreeMap<String, BTreeMap<i32, CommittedOffset>> = BTreeMap::new();
            for r in &resets {
                offsets.entry(r.topic.clone()).or_default().insert(
                    r.partition,
                    CommittedOffset {
                        offset: r.new_offset,
                        leader_epoch: -1,
                        metadata: Some(String::new()),
                        commit_ms: now,
                    },
                );
            }
            // A commit outside group management: refused if a member joined meanwhile.
            self.groups
                .commit(group, "", None, -1, offsets)
                .await
                .map_err(group_status)?;
            tracing::info!(group, partitions = resets.len(), "reset committed offsets");
        }
        Ok(pb::ResetOffsetsResponse {
            offsets: resets,
            executed: req.execute,
        })
    }
}
