//! The admin gRPC API (`cirrus.admin.v1.Admin`, proto/) served by every cluster member
//! on `--admin-listen`; `cirrus admin` is its client.
//!
//! Every call reads or writes the shared metadata store, so any broker gives the same
//! answer. Moves are requests: they set `moving_to` on owner records and the current
//! owners perform the handover (see [`crate::cluster`]); calls with `wait` then poll the
//! owner records (bounded by the client's deadline) and stream [`Progress`].

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cirrus_controller::{MetaError, OwnerChange, OwnerRecord};
use cirrus_proto::admin::v1 as pb;
use cirrus_proto::admin::v1::admin_server::{Admin, AdminServer};
use futures::Stream;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use crate::cluster::Member;
use crate::error::BrokerError;
use crate::log::LogManager;

/// How often a waiting call re-reads the owner records.
const PROGRESS_POLL: Duration = Duration::from_millis(100);
/// A waiting call gives up after this long (the moves go on in the cluster).
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Default bound on the moves of one rebalance.
const DEFAULT_MAX_MOVES: usize = 1000;

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::Progress, Status>> + Send>>;

/// Serves the admin API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    member: Arc<Member>,
    logs: Arc<LogManager>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = AdminService { member, logs };
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

#[derive(Debug, Clone)]
struct AdminService {
    member: Arc<Member>,
    logs: Arc<LogManager>,
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
    /// Stream ids of a topic's partitions, by index.
    async fn streams_of(&self, topic: &str) -> Result<Vec<u64>, Status> {
        let record = self
            .member
            .meta
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
        self.member
            .meta
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
        let meta = self.member.meta.clone();
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
        let meta = &self.member.meta;
        let view = self.member.refresh_view().await.map_err(meta_status)?;
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
        let topics = self.member.meta.list_topics().await.map_err(meta_status)?;
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
            .member
            .meta
            .get_topic(&name)
            .await
            .map_err(meta_status)?
            .ok_or_else(|| Status::not_found(format!("topic {name} does not exist")))?;
        let view = self.member.refresh_view().await.map_err(meta_status)?;
        let local = self.logs.partitions_by_stream();
        let partitions = record
            .partitions
            .iter()
            .map(|p| {
                let owner = view.owners.get(&p.stream_id);
                let high_watermark = local
                    .get(&p.stream_id)
                    .map(|l| l.lock())
                    .filter(|st| st.owned)
                    .map_or(-1, |st| st.high_watermark);
                pb::PartitionInfo {
                    index: p.index,
                    stream_id: p.stream_id,
                    owner: owner.map_or(-1, |o| o.broker),
                    epoch: owner.map_or(-1, |o| o.epoch),
                    moving_to: owner.and_then(|o| o.moving_to).unwrap_or(-1),
                    online: owner.is_some_and(|o| view.brokers.contains_key(&o.broker)),
                    log_start_offset: p.log_start_offset,
                    high_watermark,
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
        let view = self.member.refresh_view().await.map_err(meta_status)?;
        let versions: HashMap<u64, (OwnerRecord, u64)> = self
            .member
            .meta
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
        let view = self.member.refresh_view().await.map_err(meta_status)?;
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
        self.member
            .meta
            .set_drain(id, true)
            .await
            .map_err(meta_status)?;
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
        self.member
            .meta
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
        let view = cirrus_controller::read_view(&self.member.meta)
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
            .member
            .meta
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
        let live = self.member.view().brokers.len() as u32;
        let r = crate::load::current(&self.member.autoscale, &self.member.autoscale_targets, live);
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
}
