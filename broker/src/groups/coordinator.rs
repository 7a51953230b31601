//! The group coordinator of one broker: which slots it coordinates, the cache of their
//! groups, loading groups from and storing them to the metadata store, the request entry
//! points the handlers call, and the timer loop.
//!
//! Ownership: the cache maps group id → [`GroupEntry`], tagged with the slot and the
//! slot partition's leader epoch at load. An entry is used only while its slot is still
//! owned at that epoch; otherwise it is dropped and the group is loaded again (from the
//! store) by whoever coordinates it now. The state machine of an entry is only touched
//! under its mutex, never across an await; its group record is written under its async
//! `persisted` lock, in generation order (a record never overwrites a newer one).
//!
//! Failure handling: a metadata write that fails or times out while completing a join
//! phase unloads the group (waiting members get NOT_COORDINATOR, rediscover, rejoin and
//! the group reloads from the store); reads that fail answer COORDINATOR_NOT_AVAILABLE;
//! a fenced write answers NOT_COORDINATOR.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cirrus_controller::{CommittedOffset, Compare, MetaError};
use futures::StreamExt;
use tokio::sync::watch;

use super::error::GroupError;
use super::state::{
    Group, GroupConfig, GroupDescription, GroupState, JoinRequest, JoinResponse, OffsetDeletion,
    PersistJob, Reply, SyncRequest, SyncResponse,
};
use super::{MAX_GROUP_ID_BYTES, OFFSETS_TOPIC, slot_of};
use crate::cluster::Member;
use crate::config::Settings;
use crate::log::{LogManager, now_ms};

/// Most topics per metadata commit (the controller's limit per transaction).
const MAX_TOPICS_PER_COMMIT: usize = cirrus_controller::groups::MAX_OFFSET_COMMIT_TOPICS;
/// Groups loaded concurrently by ListGroups.
const LIST_CONCURRENCY: usize = 16;

/// Settings of the coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub group: GroupConfig,
    /// Settings of KIP-848 consumer groups.
    pub consumer: super::consumer::ConsumerGroupConfig,
    /// Offsets of an empty group expire this long after their commit (or after the
    /// group became empty, whichever is later).
    pub offsets_retention: Duration,
    /// Period of the timer loop (sessions, join phases, slot ownership).
    pub tick: Duration,
    /// Period of the offsets sweeper.
    pub sweep_interval: Duration,
    /// Groups whose offsets one sweep examines at most.
    pub max_sweep_groups: usize,
    /// Bound on every metadata call.
    pub meta_timeout: Duration,
    /// A known-empty group idle this long leaves the cache (its state is all stored).
    pub idle_evict: Duration,
}

impl CoordinatorConfig {
    pub fn from_settings(settings: &Settings) -> CoordinatorConfig {
        CoordinatorConfig {
            group: GroupConfig {
                initial_rebalance_delay_ms: settings.group_initial_rebalance_delay.as_millis()
                    as i64,
                ..GroupConfig::default()
            },
            consumer: super::consumer::ConsumerGroupConfig::from_settings(settings),
            offsets_retention: settings.offsets_retention,
            tick: Duration::from_millis(100),
            sweep_interval: Duration::from_secs(60),
            max_sweep_groups: 1000,
            meta_timeout: Duration::from_secs(5),
            idle_evict: Duration::from_secs(600),
        }
    }
}

/// One cached group.
#[derive(Debug)]
pub(super) struct GroupEntry {
    pub(super) id: String,
    pub(super) slot: u32,
    /// The slot partition's leader epoch when the group was loaded.
    pub(super) epoch: i32,
    group: Mutex<Group>,
    /// The generation of the last record this coordinator stored (or loaded).
    persisted: tokio::sync::Mutex<i32>,
}

impl GroupEntry {
    pub(super) fn lock(&self) -> MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The coordinator of the groups whose slots this broker owns.
#[derive(Debug)]
pub struct Coordinator {
    pub(super) logs: Arc<LogManager>,
    member: Option<Arc<Member>>,
    settings: Arc<Settings>,
    pub(super) config: CoordinatorConfig,
    groups: Mutex<HashMap<String, Arc<GroupEntry>>>,
    /// KIP-848 consumer groups (see [`super::consumer_coordinator`]).
    consumer_groups: Mutex<HashMap<String, Arc<super::consumer_coordinator::ConsumerEntry>>>,
    /// Origin of the monotonic milliseconds the state machines run on.
    origin: Instant,
    /// Sweeper: since when (wall ms) each slot is owned at which epoch.
    pub(super) slot_owned_since: Mutex<HashMap<u32, (i32, i64)>>,
    /// Sweeper: the last group examined, to resume after it.
    pub(super) sweep_cursor: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Group ids Kafka refuses: empty for the membership APIs, over the protocol's string
/// limit for any.
pub fn validate_group_id(group: &str, allow_empty: bool) -> Result<(), GroupError> {
    if (group.is_empty() && !allow_empty) || group.len() > MAX_GROUP_ID_BYTES {
        return Err(GroupError::InvalidGroupId);
    }
    Ok(())
}

impl Coordinator {
    pub fn new(
        logs: Arc<LogManager>,
        member: Option<Arc<Member>>,
        settings: Arc<Settings>,
        config: CoordinatorConfig,
    ) -> Coordinator {
        Coordinator {
            logs,
            member,
            settings,
            config,
            groups: Mutex::new(HashMap::new()),
            consumer_groups: Mutex::new(HashMap::new()),
            origin: Instant::now(),
            slot_owned_since: Mutex::new(HashMap::new()),
            sweep_cursor: Mutex::new(None),
        }
    }

    pub(super) fn consumer_groups(
        &self,
    ) -> MutexGuard<'_, HashMap<String, Arc<super::consumer_coordinator::ConsumerEntry>>> {
        lock(&self.consumer_groups)
    }

    /// Monotonic milliseconds (the state machines' clock).
    pub(super) fn now(&self) -> i64 {
        self.origin.elapsed().as_millis() as i64
    }

    pub(super) fn fence(&self) -> Option<Compare> {
        self.member.as_ref().map(|m| m.fence())
    }

    /// The slot partition's leader epoch if this broker coordinates the slot now.
    pub(super) fn slot_epoch(&self, slot: u32) -> Option<i32> {
        if !self.logs.lease_ok() {
            return None;
        }
        let p = self.logs.partition(OFFSETS_TOPIC, slot as i32).ok()?;
        let st = p.lock();
        (st.owned && !st.releasing && !st.deleted).then_some(st.leader_epoch)
    }

    /// Runs a metadata call with the coordinator's timeout.
    pub(super) async fn meta<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, MetaError>>,
    ) -> Result<T, GroupError> {
        match tokio::time::timeout(self.config.meta_timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "group coordinator: {what} failed");
                Err(GroupError::from_meta(&e))
            }
            Err(_) => {
                tracing::warn!(
                    "group coordinator: {what} timed out after {:?}",
                    self.config.meta_timeout
                );
                Err(GroupError::CoordinatorNotAvailable)
            }
        }
    }

    pub(super) fn cached(&self, group: &str) -> Option<Arc<GroupEntry>> {
        lock(&self.groups).get(group).cloned()
    }

    /// Drops a cached group: its waiting requests get `error`.
    pub(super) fn unload(&self, entry: &Arc<GroupEntry>, error: GroupError) {
        {
            let mut map = lock(&self.groups);
            if map.get(&entry.id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
                map.remove(&entry.id);
            }
        }
        entry.lock().shutdown(error);
    }

    /// The cached group, loaded from the store if needed; a new empty group if it has no
    /// record and `create`. NOT_COORDINATOR unless this broker coordinates its slot.
    pub(super) async fn entry(
        &self,
        group: &str,
        create: bool,
    ) -> Result<Option<Arc<GroupEntry>>, GroupError> {
        let slot = slot_of(group);
        let epoch = self.slot_epoch(slot).ok_or(GroupError::NotCoordinator)?;
        if let Some(e) = self.cached(group) {
            if e.epoch == epoch {
                return Ok(Some(e));
            }
            tracing::info!(group, slot, "reloading group: its slot changed hands");
            self.unload(&e, GroupError::NotCoordinator);
        }
        let stored = self
            .meta("loading a group", self.logs.meta.get_group(group))
            .await?;
        let now = self.now();
        let config = self.config.group.clone();
        let (state, persisted) = match &stored {
            Some((record, _)) => (
                Group::from_record(group, record, config, now),
                record.generation,
            ),
            None if create => (Group::new(group, config, now), -1),
            None => return Ok(None),
        };
        if self.slot_epoch(slot) != Some(epoch) {
            return Err(GroupError::NotCoordinator);
        }
        let mut map = lock(&self.groups);
        if let Some(e) = map.get(group)
            && e.epoch == epoch
        {
            return Ok(Some(e.clone()));
        }
        if state.is_recovered() {
            tracing::info!(
                group,
                slot,
                generation = state.generation(),
                "loaded group; its members may rejoin"
            );
        }
        let entry = Arc::new(GroupEntry {
            id: group.to_string(),
            slot,
            epoch,
            group: Mutex::new(state),
            persisted: tokio::sync::Mutex::new(persisted),
        });
        map.insert(group.to_string(), entry.clone());
        Ok(Some(entry))
    }

    /// Stores the group's record (the completed join phase of `job`), then sends the
    /// job's JoinGroup answers. False if the write failed: the group is unloaded.
    async fn persist(&self, entry: &Arc<GroupEntry>, job: PersistJob) -> bool {
        let mut last = entry.persisted.lock().await;
        // The group's record as of now: newer than the job's if more happened since.
        let record = {
            let g = entry.lock();
            (g.state() != GroupState::Dead).then(|| g.record())
        };
        let Some(mut record) = record else {
            return false;
        };
        if record.generation < *last {
            drop(last);
            job.deliver();
            return true;
        }
        record.updated_ms = now_ms();
        let written = self
            .meta(
                "storing a group record",
                self.logs.meta.put_group(&entry.id, &record, self.fence()),
            )
            .await;
        match written {
            Ok(()) => {
                *last = record.generation;
                drop(last);
                tracing::info!(group = %entry.id, generation = record.generation,
                    protocol = record.protocol.as_deref().unwrap_or(""),
                    members = job.deliveries.len(), "group rebalanced");
                job.deliver();
                true
            }
            Err(e) => {
                drop(last);
                tracing::warn!(group = %entry.id, error = %e, "cannot store the group; unloading it (members rejoin)");
                drop(job);
                self.unload(entry, GroupError::NotCoordinator);
                false
            }
        }
    }

    /// Longest a request may wait for the group (a safety net: the group's own timers
    /// answer first).
    fn wait_bound(&self, timeout_ms: i32) -> Duration {
        Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0)).max(Duration::from_millis(
            u64::try_from(self.config.group.max_session_timeout_ms).unwrap_or(0),
        )) + Duration::from_secs(60)
    }

    // ---------------------------------------------------------------------------------
    // Requests
    // ---------------------------------------------------------------------------------

    /// FindCoordinator of a group: (node id, host, port) of its slot's live owner.
    pub fn find_coordinator(&self, group: &str) -> Result<(i32, String, i32), GroupError> {
        let slot = slot_of(group);
        let p = self
            .logs
            .partition(OFFSETS_TOPIC, slot as i32)
            .map_err(|_| GroupError::CoordinatorNotAvailable)?;
        match &self.member {
            None => Ok((
                self.settings.node_id,
                self.settings.advertised_host.clone(),
                self.settings.advertised_port,
            )),
            Some(member) => member
                .view()
                .live_owner(p.stream_id)
                .map(|(b, _)| (b.id, b.host.clone(), b.port))
                .ok_or(GroupError::CoordinatorNotAvailable),
        }
    }

    pub async fn join(&self, group: &str, req: JoinRequest) -> JoinResponse {
        let member_id = req.member_id.clone();
        let fail = |e| JoinResponse::error(e, &member_id);
        if let Err(e) = validate_group_id(group, false) {
            return fail(e);
        }
        if self.is_active_consumer_group(group) {
            // A consumer-protocol (KIP-848) group with members: no classic members.
            return fail(GroupError::InconsistentGroupProtocol);
        }
        let entry = match self.entry(group, true).await {
            Ok(Some(e)) => e,
            Ok(None) => return fail(GroupError::CoordinatorNotAvailable),
            Err(e) => return fail(e),
        };
        let bound = self.wait_bound(req.rebalance_timeout_ms.max(req.session_timeout_ms));
        let (reply, job) = {
            let mut g = entry.lock();
            let reply = g.join(req, self.now());
            (reply, g.take_persist())
        };
        if let Some(job) = job
            && !self.persist(&entry, job).await
            && matches!(reply, Reply::Now(_))
        {
            return fail(GroupError::NotCoordinator);
        }
        match reply {
            Reply::Now(r) => r,
            Reply::Later(rx) => match tokio::time::timeout(bound, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => fail(GroupError::NotCoordinator),
                Err(_) => fail(GroupError::RebalanceInProgress),
            },
        }
    }

    pub async fn sync(&self, group: &str, req: SyncRequest) -> SyncResponse {
        if let Err(e) = validate_group_id(group, false) {
            return SyncResponse::error(e);
        }
        let entry = match self.entry(group, false).await {
            Ok(Some(e)) => e,
            Ok(None) => return SyncResponse::error(GroupError::UnknownMemberId),
            Err(e) => return SyncResponse::error(e),
        };
        let reply = entry.lock().sync(req, self.now());
        match reply {
            Reply::Now(r) => r,
            Reply::Later(rx) => match tokio::time::timeout(self.wait_bound(0), rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => SyncResponse::error(GroupError::NotCoordinator),
                Err(_) => SyncResponse::error(GroupError::RebalanceInProgress),
            },
        }
    }

    pub async fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        validate_group_id(group, false)?;
        let entry = self
            .entry(group, false)
            .await?
            .ok_or(GroupError::UnknownMemberId)?;
        entry
            .lock()
            .heartbeat(member_id, instance_id, generation, self.now())
    }

    /// LeaveGroup: one result per (member id, instance id).
    pub async fn leave(
        &self,
        group: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        validate_group_id(group, false)?;
        let Some(entry) = self.entry(group, false).await? else {
            return Ok(vec![Err(GroupError::UnknownMemberId); leaving.len()]);
        };
        let (results, job) = {
            let mut g = entry.lock();
            let results = g.leave(leaving, self.now());
            (results, g.take_persist())
        };
        if let Some(job) = job {
            self.persist(&entry, job).await;
        }
        Ok(results)
    }

    /// OffsetCommit of already validated partitions.
    pub async fn commit(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        offsets: BTreeMap<String, BTreeMap<i32, CommittedOffset>>,
    ) -> Result<(), GroupError> {
        validate_group_id(group, true)?;
        match self.consumer_group(group) {
            // Members of a consumer-protocol group commit with their member epoch.
            Some(consumer) if !consumer.lock().is_empty() => {
                consumer.lock().validate_commit(member_id, generation)?;
            }
            _ => {
                let entry = self
                    .entry(group, generation < 0)
                    .await?
                    .ok_or(GroupError::IllegalGeneration)?;
                entry
                    .lock()
                    .validate_commit(member_id, instance_id, generation, self.now())?;
            }
        }
        let topics: Vec<(String, BTreeMap<i32, CommittedOffset>)> = offsets.into_iter().collect();
        for chunk in topics.chunks(MAX_TOPICS_PER_COMMIT) {
            let part: BTreeMap<String, BTreeMap<i32, CommittedOffset>> =
                chunk.iter().cloned().collect();
            self.meta(
                "committing offsets",
                self.logs.meta.commit_offsets(group, &part, self.fence()),
            )
            .await?;
        }
        Ok(())
    }

    /// OffsetFetch: every committed offset of the group.
    pub async fn fetch_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<String, BTreeMap<i32, CommittedOffset>>, GroupError> {
        validate_group_id(group, true)?;
        self.slot_epoch(slot_of(group))
            .ok_or(GroupError::NotCoordinator)?;
        self.meta("fetching offsets", self.logs.meta.fetch_offsets(group))
            .await
    }

    /// OffsetDelete: per topic, per partition, None if deleted (or had no offset).
    #[allow(clippy::type_complexity)] // the response's own shape
    pub async fn delete_offsets(
        &self,
        group: &str,
        topics: &[(String, Vec<i32>)],
    ) -> Result<Vec<(String, Vec<(i32, Option<GroupError>)>)>, GroupError> {
        validate_group_id(group, true)?;
        let rule = match self.entry(group, false).await? {
            Some(entry) => entry.lock().offset_deletion(),
            None => {
                let stored = self.fetch_offsets(group).await?;
                if stored.is_empty() {
                    return Err(GroupError::GroupIdNotFound);
                }
                OffsetDeletion::Any
            }
        };
        if rule == OffsetDeletion::NonEmpty {
            return Err(GroupError::NonEmptyGroup);
        }
        let mut out = Vec::with_capacity(topics.len());
        for (topic, partitions) in topics {
            let subscribed = match &rule {
                OffsetDeletion::Any | OffsetDeletion::NonEmpty => false,
                OffsetDeletion::NotSubscribed(t) => t.contains(topic),
                OffsetDeletion::AllSubscribed => true,
            };
            if subscribed {
                out.push((
                    topic.clone(),
                    partitions
                        .iter()
                        .map(|p| (*p, Some(GroupError::GroupSubscribedToTopic)))
                        .collect(),
                ));
                continue;
            }
            let valid: Vec<i32> = partitions.iter().copied().filter(|p| *p >= 0).collect();
            let result = if cirrus_controller::validate_topic_name(topic).is_err() {
                Err(GroupError::UnknownTopicOrPartition)
            } else if valid.is_empty() {
                Ok(())
            } else {
                self.meta(
                    "deleting offsets",
                    self.logs
                        .meta
                        .delete_offsets(group, topic, &valid, self.fence()),
                )
                .await
            };
            out.push((
                topic.clone(),
                partitions
                    .iter()
                    .map(|p| {
                        let e = if *p < 0 {
                            Some(GroupError::UnknownTopicOrPartition)
                        } else {
                            result.err()
                        };
                        (*p, e)
                    })
                    .collect(),
            ));
        }
        Ok(out)
    }

    /// DescribeGroups of one group; an unknown group is described as Dead.
    pub async fn describe(&self, group: &str) -> Result<GroupDescription, GroupError> {
        validate_group_id(group, true)?;
        if let Some(entry) = self.entry(group, false).await? {
            return Ok(entry.lock().describe());
        }
        let stored = self.fetch_offsets(group).await?;
        Ok(GroupDescription {
            state: if stored.is_empty() {
                GroupState::Dead
            } else {
                GroupState::Empty
            },
            protocol_type: String::new(),
            protocol_data: String::new(),
            members: Vec::new(),
        })
    }

    /// ListGroups: (group id, protocol type, state name) of every group whose slot this
    /// broker coordinates, classic and consumer-protocol, sorted, in the given states
    /// (all when empty, case-insensitive).
    pub async fn list(
        &self,
        states: &[String],
    ) -> Result<Vec<(String, String, String)>, GroupError> {
        let mut names: Vec<String> = self
            .meta("listing groups", self.logs.meta.list_group_names())
            .await?;
        names.extend(lock(&self.groups).keys().cloned());
        names.sort();
        names.dedup();
        names.retain(|n| self.slot_epoch(slot_of(n)).is_some());
        let listed: Vec<Option<(String, String, GroupState)>> = futures::stream::iter(names)
            .map(|name| async move {
                match self.entry(&name, false).await {
                    Ok(Some(entry)) => {
                        let g = entry.lock();
                        let state = g.state();
                        (state != GroupState::Dead).then(|| {
                            (
                                name.clone(),
                                g.protocol_type().unwrap_or("").to_string(),
                                state,
                            )
                        })
                    }
                    // Only offsets: a group that does not use group management.
                    Ok(None) => Some((name, String::new(), GroupState::Empty)),
                    Err(_) => None,
                }
            })
            .buffered(LIST_CONCURRENCY)
            .collect()
            .await;
        // Consumer-protocol groups replace a classic listing of the same id.
        let consumer = self.consumer_groups_listed();
        let consumer_ids: HashSet<&str> = consumer.iter().map(|(id, _)| id.as_str()).collect();
        let classic: Vec<(String, String, String)> = listed
            .into_iter()
            .flatten()
            .filter(|(id, _, _)| !consumer_ids.contains(id.as_str()))
            .map(|(id, ptype, state)| (id, ptype, state.name().to_string()))
            .collect();
        let mut all: Vec<(String, String, String)> = consumer
            .into_iter()
            .map(|(id, state)| (id, "consumer".to_string(), state))
            .chain(classic)
            .collect();
        all.sort();
        Ok(all
            .into_iter()
            .filter(|(_, _, s)| {
                states.is_empty() || states.iter().any(|w| w.eq_ignore_ascii_case(s))
            })
            .collect())
    }

    /// DeleteGroups of one group: its record and offsets go; it must be empty.
    pub async fn delete_group(&self, group: &str) -> Result<(), GroupError> {
        validate_group_id(group, true)?;
        if self.is_active_consumer_group(group) {
            return Err(GroupError::NonEmptyGroup);
        }
        match self.entry(group, false).await? {
            Some(entry) => {
                // Under the record lock: no record write of this group can follow.
                let _persist = entry.persisted.lock().await;
                self.forget_deleted(&entry)?;
                self.meta(
                    "deleting a group",
                    self.logs.meta.delete_group(group, self.fence()),
                )
                .await
            }
            None => {
                if self.fetch_offsets(group).await?.is_empty() {
                    return Err(GroupError::GroupIdNotFound);
                }
                self.meta(
                    "deleting a group",
                    self.logs.meta.delete_group(group, self.fence()),
                )
                .await
            }
        }
    }

    /// Marks a cached group deleted (NON_EMPTY_GROUP if it has members) and drops it
    /// from the cache. The caller holds its record lock.
    fn forget_deleted(&self, entry: &Arc<GroupEntry>) -> Result<(), GroupError> {
        entry.lock().mark_deleted()?;
        let mut map = lock(&self.groups);
        if map.get(&entry.id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            map.remove(&entry.id);
        }
        Ok(())
    }

    /// The sweeper's delete of a group whose offsets all expired: like
    /// [`Coordinator::delete_group`], but only the group record goes, so offsets
    /// committed after the sweep read them stay. GroupIdNotFound if there is no record.
    pub(super) async fn delete_expired_group(&self, group: &str) -> Result<(), GroupError> {
        let Some(entry) = self.entry(group, false).await? else {
            return Err(GroupError::GroupIdNotFound);
        };
        let _persist = entry.persisted.lock().await;
        self.forget_deleted(&entry)?;
        self.meta(
            "deleting an expired group",
            self.logs.meta.delete_group_record(group, self.fence()),
        )
        .await
    }

    // ---------------------------------------------------------------------------------
    // Background loops
    // ---------------------------------------------------------------------------------

    /// Starts the timer loop and the offsets sweeper; both stop when `shutdown` turns
    /// true (every cached group is then unloaded, its waiting requests answered).
    pub fn start(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let timers = {
            let me = self.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(me.config.tick);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tick.tick() => {}
                    }
                    if *shutdown.borrow() {
                        break;
                    }
                    me.tick_once();
                    me.tick_consumer_groups();
                }
                me.unload_all();
            })
        };
        let sweeper = {
            let me = self.clone();
            let mut shutdown = shutdown;
            tokio::spawn(async move {
                let period = me.config.sweep_interval;
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tick.tick() => {}
                    }
                    if *shutdown.borrow() {
                        break;
                    }
                    // Bounded: each metadata call has its timeout, and the whole sweep
                    // may not outlast its period.
                    match tokio::time::timeout(period, me.sweep_once()).await {
                        Ok(Ok(stats)) if stats.offsets_expired > 0 || stats.groups_deleted > 0 => {
                            tracing::info!(?stats, "expired offsets of empty groups");
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "offsets sweep failed; retrying at the next period")
                        }
                        Err(_) => {
                            tracing::warn!("offsets sweep timed out; resuming at the next period")
                        }
                    }
                }
            })
        };
        vec![timers, sweeper]
    }

    /// One timer tick: drops groups of slots no longer coordinated here, advances every
    /// group's timers, stores completed join phases, evicts idle empty groups.
    pub fn tick_once(self: &Arc<Self>) {
        let now = self.now();
        let entries: Vec<Arc<GroupEntry>> = lock(&self.groups).values().cloned().collect();
        let idle = self.config.idle_evict.as_millis() as i64;
        for entry in entries {
            if self.slot_epoch(entry.slot) != Some(entry.epoch) {
                tracing::info!(group = %entry.id, slot = entry.slot, "no longer the coordinator of the group's slot; dropping it");
                self.unload(&entry, GroupError::NotCoordinator);
                continue;
            }
            let (job, evict) = {
                let mut g = entry.lock();
                g.tick(now);
                let evict = g.is_known_empty() && now - g.state_since() >= idle;
                (g.take_persist(), evict)
            };
            if let Some(job) = job {
                let me = self.clone();
                tokio::spawn(async move {
                    me.persist(&entry, job).await;
                });
            } else if evict && entry.persisted.try_lock().is_ok() {
                let mut map = lock(&self.groups);
                if map.get(&entry.id).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                    map.remove(&entry.id);
                }
            }
        }
    }

    fn unload_all(&self) {
        self.consumer_groups().clear();
        let entries: Vec<Arc<GroupEntry>> = lock(&self.groups).drain().map(|(_, e)| e).collect();
        for e in entries {
            e.lock().shutdown(GroupError::NotCoordinator);
        }
    }

    /// The number of cached groups (for tests and metrics).
    pub fn cached_groups(&self) -> usize {
        lock(&self.groups).len()
    }
}
