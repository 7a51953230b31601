//! The consumer group protocol of KIP-848 (ConsumerGroupHeartbeat), server side: one
//! group's members, its target assignment and the reconciliation of every member
//! towards it, as Kafka's GroupMetadataManager and CurrentAssignmentBuilder run them.
//! Pure, like [`super::state`]: no IO, no async, time passed in as milliseconds of a
//! monotonic clock, the topics passed in as a [`TopicView`] on every heartbeat, failures
//! returned as [`GroupError`]. The types here are plain structs; the handler converts
//! the wire messages.
//!
//! Epochs. The *group epoch* bumps when a member joins or is removed, when a
//! subscription or the chosen assignor changes, and when the subscribed topics'
//! metadata changes (a topic created, deleted or grown that a member subscribes to by
//! name or regex). After a bump, the next heartbeat computes a new *target assignment*
//! with the group's assignor, stamped with the group epoch (the *assignment epoch*).
//! Each member then converges to its target over its own heartbeats:
//! 1. partitions it must give up are revoked first: they leave its assignment and wait
//!    in its pending revocation set while it keeps its epoch (`UnrevokedPartitions`),
//!    until a heartbeat reports owned partitions without them;
//! 2. then it takes the assignment epoch and every target partition nobody else owns;
//!    partitions still owned by others (assigned or pending revocation) follow on a
//!    later heartbeat once released (`UnreleasedPartitions`).
//!
//! Invariants:
//! - No partition is owned (assigned or pending revocation) by two members; the
//!   `owners` index names the one owner of every owned partition.
//! - Member epoch ≤ assignment epoch ≤ group epoch (a static member away with epoch -2
//!   aside).
//! - A member's epoch advances only once it has revoked everything it must give up.
//! - The response carries the assignment only when it changed since the last one sent
//!   to the member, or when the request carried full state (join, full request, or
//!   owned partitions that differ from the member's assignment).
//!
//! Timeouts ([`ConsumerGroup::tick`]): a member whose last heartbeat is older than the
//! session timeout is removed; a static member that left with epoch -2 keeps its
//! assignment (so a restart with the same instance id takes it back) until the same
//! session timeout; a member still revoking partitions after its rebalance timeout
//! (counted from the revocation request) is removed. Each removal bumps the group
//! epoch; the new target is computed at the next heartbeat, as in Kafka.
//!
//! Durability: only the group epoch is meant to be persisted ([`ConsumerGroup::restored`]).
//! Members, subscriptions and assignments live in memory: after a coordinator move the
//! members get UNKNOWN_MEMBER_ID, rejoin with epoch 0 and are assigned afresh.
//!
//! Not implemented: rack-aware assignment (racks are only recorded), client-side
//! assignors, classic-protocol members in consumer groups, and group creation or
//! GROUP_ID_NOT_FOUND (the coordinator creates a group on the first epoch-0 join).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use regex::Regex;
use uuid::Uuid;

use super::error::GroupError;

/// The member epoch of a member leaving the group.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch of a static member leaving temporarily (it may come back).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

static NO_PARTITIONS: Assignment = Assignment::new();

/// A server-side assignor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    /// Spreads all partitions evenly, keeping each member's partitions where it can.
    Uniform,
    /// Per topic, contiguous ranges of partitions by sorted member id.
    Range,
}

impl Assignor {
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    fn assign(
        self,
        members: &BTreeMap<String, MemberSpec<'_>>,
        topics: &BTreeMap<Uuid, i32>,
    ) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Uniform => assign_uniform(members, topics),
            Assignor::Range => assign_range(members, topics),
        }
    }
}

/// Broker-wide settings of consumer groups (Kafka's `group.consumer.*`).
#[derive(Clone, Debug)]
pub struct ConsumerGroupConfig {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    /// Most members a group may have.
    pub max_size: usize,
    /// The assignors members may name; the first one is the default.
    pub assignors: Vec<Assignor>,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: 1000,
            assignors: vec![Assignor::Uniform, Assignor::Range],
        }
    }
}

/// The topics of the cluster as the caller sees them now: name → (id, partitions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicView {
    by_name: BTreeMap<String, (Uuid, i32)>,
    fingerprint: u64,
}

impl TopicView {
    pub fn new<S: Into<String>>(topics: impl IntoIterator<Item = (S, Uuid, i32)>) -> TopicView {
        let by_name: BTreeMap<String, (Uuid, i32)> = topics
            .into_iter()
            .map(|(name, id, partitions)| (name.into(), (id, partitions)))
            .collect();
        let mut h = DefaultHasher::new();
        by_name.hash(&mut h);
        TopicView {
            by_name,
            fingerprint: h.finish(),
        }
    }

    pub fn get(&self, name: &str) -> Option<(Uuid, i32)> {
        self.by_name.get(name).copied()
    }
}

/// A ConsumerGroupHeartbeat request, decoded (the handler sets every field).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// v0: empty on the first join (the coordinator picks one); v1+: always set.
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member leaving temporarily.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    /// None: unchanged.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// None: unchanged; empty: no regex.
    pub subscribed_topic_regex: Option<String>,
    /// None: unchanged.
    pub server_assignor: Option<String>,
    /// The partitions the member owns; None: unchanged since the last report.
    pub topic_partitions: Option<Vec<(Uuid, Vec<i32>)>>,
    pub client_id: String,
    pub client_host: String,
    /// The request version (v0: the coordinator picks the id of a new member).
    pub api_version: i16,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's whole assignment, when it must be (re)sent.
    pub assignment: Option<Vec<(Uuid, Vec<i32>)>>,
}

/// Where a member is in its reconciliation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// At its target (or waiting for nothing).
    Stable,
    /// Waiting for the member to revoke partitions.
    UnrevokedPartitions,
    /// At the assignment epoch, waiting for others to release partitions.
    UnreleasedPartitions,
}

/// The state of a consumer group, as KIP-848 names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    /// The group epoch is ahead of the target assignment.
    Assigning,
    /// Members are converging to the target assignment.
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "empty",
            ConsumerGroupState::Assigning => "assigning",
            ConsumerGroupState::Reconciling => "reconciling",
            ConsumerGroupState::Stable => "stable",
        }
    }
}

/// A member, for ConsumerGroupDescribe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub state: MemberState,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Vec<(Uuid, Vec<i32>)>,
    pub target_assignment: Vec<(Uuid, Vec<i32>)>,
}

/// A group, for ConsumerGroupDescribe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    pub group_id: String,
    pub state: ConsumerGroupState,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor_name: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    topics: BTreeSet<String>,
    regex: Option<String>,
    server_assignor: Option<Assignor>,
    rebalance_timeout_ms: i32,
    epoch: i32,
    previous_epoch: i32,
    assigned: Assignment,
    pending_revocation: Assignment,
    state: MemberState,
    last_heartbeat: i64,
    /// Set while revoking: when the member is removed if it has not revoked.
    revocation_deadline: Option<i64>,
    /// The assignment last sent to the member.
    last_sent: Option<Assignment>,
}

impl Member {
    fn new(now: i64) -> Member {
        Member {
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            topics: BTreeSet::new(),
            regex: None,
            server_assignor: None,
            rebalance_timeout_ms: 0,
            epoch: 0,
            previous_epoch: 0,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            state: MemberState::Stable,
            last_heartbeat: now,
            revocation_deadline: None,
            last_sent: None,
        }
    }

    fn set_epoch(&mut self, epoch: i32) {
        if epoch != self.epoch {
            self.previous_epoch = self.epoch;
            self.epoch = epoch;
        }
    }
}

/// Reference counts of the subscriptions of all members.
#[derive(Debug, Default)]
struct Subscriptions {
    names: BTreeMap<String, usize>,
    regexes: BTreeMap<String, usize>,
}

impl Subscriptions {
    fn add(&mut self, names: &BTreeSet<String>, regex: Option<&str>) {
        for n in names {
            *self.names.entry(n.clone()).or_default() += 1;
        }
        if let Some(r) = regex {
            *self.regexes.entry(r.to_string()).or_default() += 1;
        }
    }

    fn remove(&mut self, names: &BTreeSet<String>, regex: Option<&str>) {
        fn dec(map: &mut BTreeMap<String, usize>, key: &str) {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        for n in names {
            dec(&mut self.names, n);
        }
        if let Some(r) = regex {
            dec(&mut self.regexes, r);
        }
    }
}

/// What the assignor knows of a member.
#[derive(Debug)]
struct MemberSpec<'a> {
    topics: BTreeSet<Uuid>,
    /// Its current target, for stickiness.
    current: &'a Assignment,
}

/// The regex part of a validated request.
#[derive(Debug)]
enum RegexChange {
    Unchanged,
    Clear,
    Set(String, Option<Regex>),
}

/// How a heartbeat's member was found.
#[derive(Debug)]
enum Admission {
    Existing(String),
    New(String),
    /// A static member rejoining under `new` replaces its departed incarnation `old`.
    Replaced {
        old: String,
        new: String,
    },
}

/// One consumer group.
#[derive(Debug)]
pub struct ConsumerGroup {
    group_id: String,
    config: ConsumerGroupConfig,
    group_epoch: i32,
    assignment_epoch: i32,
    /// The assignor of the current target assignment.
    assignor: Assignor,
    members: BTreeMap<String, Member>,
    /// instance id → member id.
    static_members: BTreeMap<String, String>,
    targets: BTreeMap<String, Assignment>,
    /// (topic id, partition) → the member that owns it (assigned or pending revocation).
    owners: BTreeMap<(Uuid, i32), String>,
    subscriptions: Subscriptions,
    /// The subscribed topics' metadata the target was computed from: name → (id, partitions).
    metadata: BTreeMap<String, (Uuid, i32)>,
    regexes: BTreeMap<String, Regex>,
    /// regex → the topic names it matched in the view with fingerprint `resolved_for`.
    resolved: BTreeMap<String, BTreeSet<String>>,
    resolved_for: Option<u64>,
}

impl ConsumerGroup {
    pub fn new(group_id: &str, config: ConsumerGroupConfig) -> ConsumerGroup {
        ConsumerGroup::restored(group_id, config, 0)
    }

    /// A group whose last group epoch was `group_epoch` (members rejoin).
    pub fn restored(
        group_id: &str,
        config: ConsumerGroupConfig,
        group_epoch: i32,
    ) -> ConsumerGroup {
        let assignor = config
            .assignors
            .first()
            .copied()
            .unwrap_or(Assignor::Uniform);
        ConsumerGroup {
            group_id: group_id.to_string(),
            config,
            group_epoch: group_epoch.max(0),
            assignment_epoch: group_epoch.max(0),
            assignor,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            targets: BTreeMap::new(),
            owners: BTreeMap::new(),
            subscriptions: Subscriptions::default(),
            metadata: BTreeMap::new(),
            regexes: BTreeMap::new(),
            resolved: BTreeMap::new(),
            resolved_for: None,
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().any(|m| {
            m.epoch != STATIC_LEAVE_EPOCH
                && (m.state != MemberState::Stable || m.epoch != self.assignment_epoch)
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// Whether a member subscribes to the topic (by name, or by a regex as last resolved).
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.subscriptions.names.contains_key(topic)
            || self.resolved.values().any(|names| names.contains(topic))
    }

    /// The earliest time at which [`ConsumerGroup::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<i64> {
        let session = i64::from(self.config.session_timeout_ms);
        self.members
            .values()
            .flat_map(|m| [Some(m.last_heartbeat + session), m.revocation_deadline])
            .flatten()
            .min()
    }

    /// Handles a ConsumerGroupHeartbeat. On error nothing changed.
    pub fn heartbeat(
        &mut self,
        req: HeartbeatRequest,
        topics: &TopicView,
        now: i64,
    ) -> Result<HeartbeatResponse, GroupError> {
        let regex = self.check_request(&req)?;
        match req.member_epoch {
            LEAVE_EPOCH => return self.leave(req),
            STATIC_LEAVE_EPOCH => return self.leave_static(req, now),
            _ => {}
        }
        let owned = req.topic_partitions.as_deref().map(to_assignment);
        let full_request = req.member_epoch == 0
            || (req.rebalance_timeout_ms != -1
                && (req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some())
                && owned.is_some());
        let admission = self.admit(&req, owned.as_ref())?;
        // Nothing below fails.
        let (id, mut changed) = match admission {
            Admission::Existing(id) => (id, false),
            Admission::New(id) => {
                self.members.insert(id.clone(), Member::new(now));
                (id, true)
            }
            Admission::Replaced { old, new } => {
                self.replace_static(&old, &new);
                (new, false)
            }
        };
        let Some(m) = self.members.get_mut(&id) else {
            return Err(GroupError::UnknownMemberId);
        };
        let (old_topics, old_regex) = (m.topics.clone(), m.regex.clone());
        if let Some(names) = req.subscribed_topic_names {
            m.topics = names.into_iter().filter(|n| !n.is_empty()).collect();
        }
        match regex {
            RegexChange::Unchanged => {}
            RegexChange::Clear => m.regex = None,
            RegexChange::Set(pattern, compiled) => {
                if let Some(re) = compiled {
                    self.regexes.insert(pattern.clone(), re);
                }
                m.regex = Some(pattern);
            }
        }
        if m.topics != old_topics || m.regex != old_regex {
            changed = true;
            self.subscriptions.remove(&old_topics, old_regex.as_deref());
            self.subscriptions.add(&m.topics, m.regex.as_deref());
        }
        if let Some(instance) = req.instance_id {
            if let Some(previous) = m.instance_id.replace(instance.clone())
                && previous != instance
                && self.static_members.get(&previous) == Some(&id)
            {
                self.static_members.remove(&previous);
            }
            self.static_members.insert(instance, id.clone());
        }
        if req.rack_id.is_some() {
            m.rack_id = req.rack_id;
        }
        if req.rebalance_timeout_ms >= 0 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        let assignor_named = req.server_assignor.is_some();
        if let Some(name) = req.server_assignor {
            m.server_assignor = Assignor::from_name(&name);
        }
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.last_heartbeat = now;
        if (changed || assignor_named) && self.preferred_assignor() != self.assignor {
            changed = true;
        }
        self.prune_regexes();

        let metadata = self.subscribed_metadata(topics);
        if changed || metadata != self.metadata {
            self.metadata = metadata;
            self.group_epoch = self.group_epoch.saturating_add(1);
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_targets();
        }
        self.reconcile(&id, owned.as_ref(), now);

        let interval = self.config.heartbeat_interval_ms;
        let Some(m) = self.members.get_mut(&id) else {
            return Err(GroupError::UnknownMemberId);
        };
        let differs = owned.as_ref().is_some_and(|o| *o != m.assigned);
        let assignment = if full_request || differs || m.last_sent.as_ref() != Some(&m.assigned) {
            m.last_sent = Some(m.assigned.clone());
            Some(to_wire(&m.assigned))
        } else {
            None
        };
        Ok(HeartbeatResponse {
            member_id: id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: interval,
            assignment,
        })
    }

    /// Removes members whose session expired, and members that did not revoke within
    /// their rebalance timeout. Returns the removed member ids.
    pub fn tick(&mut self, now: i64) -> Vec<String> {
        let session = i64::from(self.config.session_timeout_ms);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.last_heartbeat + session <= now || m.revocation_deadline.is_some_and(|d| d <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.group_id, member = %id, "consumer group member expired");
            self.remove_member(id);
        }
        expired
    }

    pub fn describe(&self) -> ConsumerGroupDescription {
        let members = self
            .members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                rack_id: m.rack_id.clone(),
                member_epoch: m.epoch,
                state: m.state,
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                subscribed_topic_names: m.topics.iter().cloned().collect(),
                subscribed_topic_regex: m.regex.clone(),
                assignment: to_wire(&m.assigned),
                target_assignment: to_wire(self.targets.get(id).unwrap_or(&NO_PARTITIONS)),
            })
            .collect();
        ConsumerGroupDescription {
            group_id: self.group_id.clone(),
            state: self.state(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor_name: self.assignor.name().to_string(),
            members,
        }
    }

    /// Whether an OffsetCommit from this member at this epoch may be stored. An epoch
    /// below zero without members is an admin tool or a non-group consumer.
    pub fn validate_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), GroupError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let m = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if member_epoch > m.epoch || (member_epoch < m.epoch && member_epoch != m.previous_epoch) {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Requests
    // ---------------------------------------------------------------------------------

    /// Kafka's request validation; compiles a new regex.
    fn check_request(&self, req: &HeartbeatRequest) -> Result<RegexChange, GroupError> {
        let epoch = req.member_epoch;
        let invalid = epoch < STATIC_LEAVE_EPOCH
            || (req.member_id.is_empty() && !(req.api_version == 0 && epoch == 0))
            || req.instance_id.as_deref() == Some("")
            || (epoch == STATIC_LEAVE_EPOCH && req.instance_id.is_none())
            || req.rebalance_timeout_ms < -1
            || (epoch == 0
                && (req.rebalance_timeout_ms == -1
                    || (req.subscribed_topic_names.is_none()
                        && req.subscribed_topic_regex.is_none())
                    || req
                        .topic_partitions
                        .as_ref()
                        .is_some_and(|tps| tps.iter().any(|(_, ps)| !ps.is_empty()))));
        if invalid {
            return Err(GroupError::InvalidRequest);
        }
        if let Some(name) = &req.server_assignor
            && !Assignor::from_name(name).is_some_and(|a| self.config.assignors.contains(&a))
        {
            return Err(GroupError::UnsupportedAssignor);
        }
        Ok(match &req.subscribed_topic_regex {
            None => RegexChange::Unchanged,
            Some(p) if p.is_empty() => RegexChange::Clear,
            Some(p) if self.regexes.contains_key(p) => RegexChange::Set(p.clone(), None),
            Some(p) => RegexChange::Set(p.clone(), Some(compile_regex(p)?)),
        })
    }

    /// Finds (or admits) the member of a join or heartbeat; checks its epoch.
    fn admit(
        &self,
        req: &HeartbeatRequest,
        owned: Option<&Assignment>,
    ) -> Result<Admission, GroupError> {
        let epoch = req.member_epoch;
        let Some(instance) = &req.instance_id else {
            if epoch == 0 {
                let id = if req.member_id.is_empty() {
                    Uuid::new_v4().to_string()
                } else {
                    req.member_id.clone()
                };
                return self.existing_or_new(id);
            }
            let m = self
                .members
                .get(&req.member_id)
                .ok_or(GroupError::UnknownMemberId)?;
            check_epoch(m, epoch, owned)?;
            return Ok(Admission::Existing(req.member_id.clone()));
        };
        let current = self
            .static_members
            .get(instance)
            .and_then(|id| Some((id, self.members.get(id)?)));
        if epoch != 0 {
            let (id, m) = current.ok_or(GroupError::UnknownMemberId)?;
            if *id != req.member_id {
                return Err(GroupError::FencedInstanceId);
            }
            check_epoch(m, epoch, owned)?;
            return Ok(Admission::Existing(id.clone()));
        }
        let id = if req.member_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            req.member_id.clone()
        };
        match current {
            None => {
                if let Some(m) = self.members.get(&id)
                    && m.instance_id.as_ref().is_some_and(|i| i != instance)
                {
                    return Err(GroupError::FencedInstanceId);
                }
                self.existing_or_new(id)
            }
            Some((old, m)) if m.epoch == STATIC_LEAVE_EPOCH => {
                if *old != id && self.members.contains_key(&id) {
                    return Err(GroupError::FencedInstanceId);
                }
                Ok(Admission::Replaced {
                    old: old.clone(),
                    new: id,
                })
            }
            // The same incarnation rejoining (e.g. after FENCED_MEMBER_EPOCH).
            Some((old, _)) if *old == id => Ok(Admission::Existing(id)),
            Some(_) => Err(GroupError::UnreleasedInstanceId),
        }
    }

    fn existing_or_new(&self, id: String) -> Result<Admission, GroupError> {
        if self.members.contains_key(&id) {
            Ok(Admission::Existing(id))
        } else if self.members.len() >= self.config.max_size {
            Err(GroupError::GroupMaxSizeReached)
        } else {
            Ok(Admission::New(id))
        }
    }

    /// Epoch -1: the member leaves; its partitions are free at once.
    fn leave(&mut self, req: HeartbeatRequest) -> Result<HeartbeatResponse, GroupError> {
        let id = self.leaving_member(&req)?;
        self.remove_member(&id);
        Ok(HeartbeatResponse {
            member_id: req.member_id,
            member_epoch: LEAVE_EPOCH,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    /// Epoch -2: a static member leaves but keeps its assignment until its session
    /// expires or its instance id rejoins.
    fn leave_static(
        &mut self,
        req: HeartbeatRequest,
        now: i64,
    ) -> Result<HeartbeatResponse, GroupError> {
        let id = self.leaving_member(&req)?;
        if let Some(m) = self.members.get_mut(&id) {
            m.set_epoch(STATIC_LEAVE_EPOCH);
            m.last_heartbeat = now;
        }
        Ok(HeartbeatResponse {
            member_id: req.member_id,
            member_epoch: STATIC_LEAVE_EPOCH,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    fn leaving_member(&self, req: &HeartbeatRequest) -> Result<String, GroupError> {
        match &req.instance_id {
            Some(instance) => match self.static_members.get(instance) {
                None => Err(GroupError::UnknownMemberId),
                Some(id) if *id != req.member_id => Err(GroupError::FencedInstanceId),
                Some(id) => Ok(id.clone()),
            },
            None if self.members.contains_key(&req.member_id) => Ok(req.member_id.clone()),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    // ---------------------------------------------------------------------------------
    // Membership
    // ---------------------------------------------------------------------------------

    /// Moves a departed static member (epoch -2) to its new member id: assignment,
    /// target, ownership and epoch carry over, the group epoch does not bump.
    fn replace_static(&mut self, old: &str, new: &str) {
        let Some(mut m) = self.members.remove(old) else {
            return;
        };
        let mut owns = m.assigned.clone();
        union_into(&mut owns, &m.pending_revocation);
        self.set_owned(old, &owns, &Assignment::new());
        self.set_owned(new, &Assignment::new(), &owns);
        m.epoch = m.previous_epoch;
        m.last_sent = None;
        if let Some(target) = self.targets.remove(old) {
            self.targets.insert(new.to_string(), target);
        }
        if let Some(instance) = &m.instance_id {
            self.static_members
                .insert(instance.clone(), new.to_string());
        }
        self.members.insert(new.to_string(), m);
    }

    /// Removes a member: its partitions are free, the group epoch bumps.
    fn remove_member(&mut self, id: &str) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        let mut owns = m.assigned.clone();
        union_into(&mut owns, &m.pending_revocation);
        self.set_owned(id, &owns, &Assignment::new());
        self.subscriptions.remove(&m.topics, m.regex.as_deref());
        self.prune_regexes();
        if let Some(instance) = &m.instance_id
            && self.static_members.get(instance).is_some_and(|x| x == id)
        {
            self.static_members.remove(instance);
        }
        self.targets.remove(id);
        self.group_epoch = self.group_epoch.saturating_add(1);
    }

    fn prune_regexes(&mut self) {
        let used = &self.subscriptions.regexes;
        self.regexes.retain(|r, _| used.contains_key(r));
        self.resolved.retain(|r, _| used.contains_key(r));
    }

    /// The assignor most members ask for (ties: config order), else the default.
    fn preferred_assignor(&self) -> Assignor {
        let assignors = &self.config.assignors;
        let mut votes = vec![0usize; assignors.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .server_assignor
                .and_then(|a| assignors.iter().position(|x| *x == a))
            {
                votes[i] += 1;
            }
        }
        let mut best: Option<(usize, Assignor)> = None;
        for (a, n) in assignors.iter().zip(votes) {
            if n > 0 && best.is_none_or(|(b, _)| n > b) {
                best = Some((n, *a));
            }
        }
        best.map(|(_, a)| a)
            .or_else(|| assignors.first().copied())
            .unwrap_or(Assignor::Uniform)
    }

    // ---------------------------------------------------------------------------------
    // Target assignment
    // ---------------------------------------------------------------------------------

    /// The metadata of every subscribed topic in the view (regexes resolved).
    fn subscribed_metadata(&mut self, topics: &TopicView) -> BTreeMap<String, (Uuid, i32)> {
        if self.resolved_for != Some(topics.fingerprint) {
            self.resolved.clear();
            self.resolved_for = Some(topics.fingerprint);
        }
        for pattern in self.subscriptions.regexes.keys() {
            if self.resolved.contains_key(pattern) {
                continue;
            }
            let matched = match self.regexes.get(pattern) {
                Some(re) => topics
                    .by_name
                    .keys()
                    .filter(|n| !super::is_internal_topic(n) && re.is_match(n))
                    .cloned()
                    .collect(),
                None => BTreeSet::new(),
            };
            self.resolved.insert(pattern.clone(), matched);
        }
        let names = self
            .subscriptions
            .names
            .keys()
            .chain(self.resolved.values().flatten());
        names
            .filter_map(|n| Some((n.clone(), topics.get(n)?)))
            .filter(|(_, (_, partitions))| *partitions > 0)
            .collect()
    }

    fn compute_targets(&mut self) {
        self.assignor = self.preferred_assignor();
        let topics: BTreeMap<Uuid, i32> = self.metadata.values().copied().collect();
        let specs: BTreeMap<String, MemberSpec<'_>> = self
            .members
            .iter()
            .map(|(id, m)| {
                let regex_topics = m.regex.as_ref().and_then(|r| self.resolved.get(r));
                let topics = m
                    .topics
                    .iter()
                    .chain(regex_topics.into_iter().flatten())
                    .filter_map(|n| self.metadata.get(n).map(|(tid, _)| *tid))
                    .collect();
                let current = self.targets.get(id).unwrap_or(&NO_PARTITIONS);
                (id.clone(), MemberSpec { topics, current })
            })
            .collect();
        let targets = self.assignor.assign(&specs, &topics);
        self.targets = targets;
        self.assignment_epoch = self.group_epoch;
    }

    // ---------------------------------------------------------------------------------
    // Reconciliation
    // ---------------------------------------------------------------------------------

    /// Moves a member one step towards its target (Kafka's CurrentAssignmentBuilder).
    /// `owned` is what the member reported owning (None: unknown, assume unchanged).
    fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: i64) {
        let Some(m) = self.members.get(id) else {
            return;
        };
        if m.state == MemberState::Stable && m.epoch == self.assignment_epoch {
            return;
        }
        let target = self.targets.get(id).unwrap_or(&NO_PARTITIONS);
        let keep = intersection(&m.assigned, target);
        let mut revoking = difference(&m.assigned, target);
        if m.state == MemberState::UnrevokedPartitions && owns_any(owned, &m.pending_revocation) {
            // Still revoking: anything else leaving its target is revoked with it.
            union_into(&mut revoking, &m.pending_revocation);
        }
        let (assigned, pending, epoch, state) = if owns_any(owned, &revoking) {
            (keep, revoking, m.epoch, MemberState::UnrevokedPartitions)
        } else {
            // Everything to give up is given up: take the target epoch and whatever
            // of the target is free (or ours, pending revocation).
            let mut assigned = keep;
            let mut unreleased = false;
            for (t, ps) in target {
                for p in ps {
                    if assigned.get(t).is_some_and(|s| s.contains(p)) {
                        continue;
                    }
                    match self.owners.get(&(*t, *p)) {
                        Some(owner) if owner != id => unreleased = true,
                        _ => {
                            assigned.entry(*t).or_default().insert(*p);
                        }
                    }
                }
            }
            let state = if unreleased {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
            (assigned, Assignment::new(), self.assignment_epoch, state)
        };
        let mut before = m.assigned.clone();
        union_into(&mut before, &m.pending_revocation);
        let mut after = assigned.clone();
        union_into(&mut after, &pending);
        let newly_revoking = !is_subset(&pending, &m.pending_revocation);
        self.set_owned(id, &before, &after);
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        m.revocation_deadline = match state {
            MemberState::UnrevokedPartitions
                if newly_revoking || m.revocation_deadline.is_none() =>
            {
                Some(now + i64::from(m.rebalance_timeout_ms))
            }
            MemberState::UnrevokedPartitions => m.revocation_deadline,
            _ => None,
        };
        m.assigned = assigned;
        m.pending_revocation = pending;
        m.state = state;
        m.set_epoch(epoch);
    }

    /// Moves the ownership of `id` from the partitions of `before` to those of `after`.
    fn set_owned(&mut self, id: &str, before: &Assignment, after: &Assignment) {
        for (t, ps) in before {
            for p in ps {
                if self.owners.get(&(*t, *p)).is_some_and(|o| o == id) {
                    self.owners.remove(&(*t, *p));
                }
            }
        }
        for (t, ps) in after {
            for p in ps {
                let previous = self.owners.insert((*t, *p), id.to_string());
                debug_assert!(
                    previous.as_deref().is_none_or(|o| o == id),
                    "partition {t}-{p} owned by {previous:?} given to {id}"
                );
            }
        }
    }
}

/// Kafka's member epoch check: a greater epoch is fenced; a lower one too, unless it
/// is the previous epoch and the owned partitions are all still assigned (the answer
/// that bumped the epoch was lost).
fn check_epoch(m: &Member, epoch: i32, owned: Option<&Assignment>) -> Result<(), GroupError> {
    if epoch > m.epoch
        || (epoch < m.epoch
            && !(epoch == m.previous_epoch && owned.is_some_and(|o| is_subset(o, &m.assigned))))
    {
        return Err(GroupError::FencedMemberEpoch);
    }
    Ok(())
}

/// Compiles a subscription regex; it must match whole topic names (Kafka's RE2J
/// `matches()`).
fn compile_regex(pattern: &str) -> Result<Regex, GroupError> {
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(1 << 20)
            .build()
            .map_err(|_| GroupError::InvalidRegularExpression)
    };
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}

// -------------------------------------------------------------------------------------
// Assignors
// -------------------------------------------------------------------------------------

/// Uniform, sticky: keep each member's valid current partitions, give the rest to the
/// least loaded subscribers, then move partitions from the most to the least loaded
/// eligible member while they differ by two or more.
fn assign_uniform(
    specs: &BTreeMap<String, MemberSpec<'_>>,
    topics: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = BTreeMap::new();
    let mut taken: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    let mut order: BTreeSet<(usize, &str)> = BTreeSet::new();
    for (id, spec) in specs {
        let mine = out.entry(id.clone()).or_default();
        let mut load = 0;
        for (t, ps) in spec.current {
            let Some(&count) = topics.get(t) else {
                continue;
            };
            if !spec.topics.contains(t) {
                continue;
            }
            for &p in ps {
                if (0..count).contains(&p) && taken.insert((*t, p)) {
                    mine.entry(*t).or_default().insert(p);
                    load += 1;
                }
            }
        }
        order.insert((load, id.as_str()));
    }
    let subscribes = |id: &str, t: &Uuid| specs.get(id).is_some_and(|s| s.topics.contains(t));
    for (t, &count) in topics {
        for p in 0..count {
            if taken.contains(&(*t, p)) {
                continue;
            }
            let Some(&(load, id)) = order.iter().find(|(_, id)| subscribes(id, t)) else {
                break; // nobody subscribes to this topic
            };
            order.remove(&(load, id));
            order.insert((load + 1, id));
            out.entry(id.to_string())
                .or_default()
                .entry(*t)
                .or_default()
                .insert(p);
        }
    }
    // Balance. Each move lowers the sum of squared loads, so this ends.
    while let Some(&(min, _)) = order.first() {
        let mut found = None;
        'heavy: for &(la, a) in order.iter().rev() {
            if la < min + 2 {
                break;
            }
            let Some(mine) = out.get(a) else {
                continue;
            };
            for (t, ps) in mine.iter().rev() {
                let lightest = order.iter().find(|(_, b)| *b != a && subscribes(b, t));
                if let Some(&(lb, b)) = lightest
                    && la >= lb + 2
                    && let Some(&p) = ps.last()
                {
                    found = Some(((la, a), (lb, b), *t, p));
                    break 'heavy;
                }
            }
        }
        let Some(((la, a), (lb, b), t, p)) = found else {
            break;
        };
        if let Some(mine) = out.get_mut(a)
            && let Some(ps) = mine.get_mut(&t)
        {
            ps.remove(&p);
            if ps.is_empty() {
                mine.remove(&t);
            }
        }
        out.entry(b.to_string())
            .or_default()
            .entry(t)
            .or_default()
            .insert(p);
        order.remove(&(la, a));
        order.insert((la - 1, a));
        order.remove(&(lb, b));
        order.insert((lb + 1, b));
    }
    out
}

/// Range: per topic, its subscribers sorted by member id get contiguous ranges, the
/// first `partitions % subscribers` one partition more.
fn assign_range(
    specs: &BTreeMap<String, MemberSpec<'_>>,
    topics: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = specs
        .keys()
        .map(|id| (id.clone(), Assignment::new()))
        .collect();
    for (t, &count) in topics {
        let subscribers: Vec<&String> = specs
            .iter()
            .filter(|(_, s)| s.topics.contains(t))
            .map(|(id, _)| id)
            .collect();
        let Ok(n) = i32::try_from(subscribers.len()) else {
            continue;
        };
        if n == 0 {
            continue;
        }
        let (base, extra) = (count / n, count % n);
        let mut start = 0;
        for (i, id) in (0..).zip(subscribers) {
            let len = base + i32::from(i < extra);
            if len > 0
                && let Some(mine) = out.get_mut(id)
            {
                mine.entry(*t).or_default().extend(start..start + len);
            }
            start += len;
        }
    }
    out
}

// -------------------------------------------------------------------------------------
// Partition sets
// -------------------------------------------------------------------------------------

fn to_assignment(tps: &[(Uuid, Vec<i32>)]) -> Assignment {
    let mut a = Assignment::new();
    for (t, ps) in tps {
        if !ps.is_empty() {
            a.entry(*t).or_default().extend(ps.iter().copied());
        }
    }
    a
}

fn to_wire(a: &Assignment) -> Vec<(Uuid, Vec<i32>)> {
    a.iter()
        .map(|(t, ps)| (*t, ps.iter().copied().collect()))
        .collect()
}

fn intersection(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let other = b.get(t)?;
            let s: BTreeSet<i32> = ps.intersection(other).copied().collect();
            (!s.is_empty()).then_some((*t, s))
        })
        .collect()
}

fn difference(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let s: BTreeSet<i32> = match b.get(t) {
                Some(other) => ps.difference(other).copied().collect(),
                None => ps.clone(),
            };
            (!s.is_empty()).then_some((*t, s))
        })
        .collect()
}

fn union_into(a: &mut Assignment, b: &Assignment) {
    for (t, ps) in b {
        if !ps.is_empty() {
            a.entry(*t).or_default().extend(ps.iter().copied());
        }
    }
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|other| ps.is_subset(other)))
}

/// Whether the member still owns any of `set`; unknown ownership counts as owning.
fn owns_any(owned: Option<&Assignment>, set: &Assignment) -> bool {
    match owned {
        None => set.values().any(|ps| !ps.is_empty()),
        Some(o) => set
            .iter()
            .any(|(t, ps)| o.get(t).is_some_and(|mine| !mine.is_disjoint(ps))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::OFFSETS_TOPIC;

    const REBALANCE: i32 = 30_000;

    fn tid(name: &str) -> Uuid {
        let seed = 0x9e37_79b9_u128;
        Uuid::from_u128(
            name.bytes()
                .fold(seed, |h, b| h.wrapping_mul(131).wrapping_add(u128::from(b))),
        )
    }

    fn view(topics: &[(&str, i32)]) -> TopicView {
        TopicView::new(topics.iter().map(|(n, p)| (*n, tid(n), *p)))
    }

    /// Partitions by topic name.
    fn parts(spec: &[(&str, &[i32])]) -> Assignment {
        let parts = spec
            .iter()
            .map(|(n, ps)| (tid(n), ps.iter().copied().collect()));
        parts.collect()
    }

    fn wire(spec: &[(&str, &[i32])]) -> Option<Vec<(Uuid, Vec<i32>)>> {
        Some(to_wire(&parts(spec)))
    }

    fn join(id: &str, topics: &[&str]) -> HeartbeatRequest {
        HeartbeatRequest {
            rebalance_timeout_ms: REBALANCE,
            subscribed_topic_names: Some(topics.iter().map(|t| t.to_string()).collect()),
            topic_partitions: Some(Vec::new()),
            ..hb(id, 0, None)
        }
    }

    fn hb(id: &str, epoch: i32, owned: Option<Assignment>) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            topic_partitions: owned.as_ref().map(to_wire),
            api_version: 1,
            ..HeartbeatRequest::default()
        }
    }

    fn static_(req: HeartbeatRequest, instance: &str) -> HeartbeatRequest {
        let instance_id = Some(instance.to_string());
        HeartbeatRequest { instance_id, ..req }
    }

    /// (member epoch, number of partitions in the answer if it carried an assignment)
    fn got(r: &HeartbeatResponse) -> (i32, Option<usize>) {
        let count = |a: &Vec<(Uuid, Vec<i32>)>| a.iter().map(|(_, ps)| ps.len()).sum();
        (r.member_epoch, r.assignment.as_ref().map(count))
    }

    /// A group, its topics and its clock; the invariants are checked after every call.
    struct T {
        g: ConsumerGroup,
        v: TopicView,
        now: i64,
    }

    impl T {
        fn new(topics: &[(&str, i32)]) -> T {
            let g = ConsumerGroup::new("g", ConsumerGroupConfig::default());
            T {
                g,
                v: view(topics),
                now: 0,
            }
        }

        fn call(&mut self, req: HeartbeatRequest) -> Result<HeartbeatResponse, GroupError> {
            let r = self.g.heartbeat(req, &self.v, self.now);
            check_invariants(&self.g);
            r
        }

        fn ok(&mut self, req: HeartbeatRequest) -> HeartbeatResponse {
            self.call(req).unwrap()
        }

        fn err(&mut self, req: HeartbeatRequest) -> GroupError {
            self.call(req).unwrap_err()
        }

        fn tick(&mut self, now: i64) -> Vec<String> {
            self.now = now;
            let gone = self.g.tick(now);
            check_invariants(&self.g);
            gone
        }
    }

    /// The server-side invariants, recomputed from scratch.
    fn check_invariants(g: &ConsumerGroup) {
        let mut owners = BTreeMap::new();
        let mut subs = Subscriptions::default();
        for (id, m) in &g.members {
            for (t, ps) in m.assigned.iter().chain(&m.pending_revocation) {
                for p in ps {
                    let other = owners.insert((*t, *p), id.clone());
                    assert!(other.is_none(), "{t}-{p} owned by {other:?} and {id}");
                }
            }
            assert!(m.epoch <= g.assignment_epoch, "{id}: epoch ahead");
            let revoking = m.state == MemberState::UnrevokedPartitions;
            let shape = (
                m.pending_revocation.is_empty(),
                m.revocation_deadline.is_some(),
            );
            assert_eq!(shape, (!revoking, revoking), "{id}: {m:?}");
            if let Some(i) = &m.instance_id {
                assert_eq!(g.static_members.get(i), Some(id));
            }
            subs.add(&m.topics, m.regex.as_deref());
        }
        assert_eq!(owners, g.owners, "the owners index");
        assert!(g.assignment_epoch <= g.group_epoch);
        for (i, id) in &g.static_members {
            assert_eq!(g.members[id].instance_id.as_ref(), Some(i));
        }
        assert!(g.targets.keys().all(|id| g.members.contains_key(id)));
        let targeted: Vec<(Uuid, i32)> = g
            .targets
            .values()
            .flat_map(|a| a.iter().flat_map(|(t, ps)| ps.iter().map(|p| (*t, *p))))
            .collect();
        let distinct: BTreeSet<_> = targeted.iter().collect();
        assert_eq!(targeted.len(), distinct.len(), "a partition targeted twice");
        assert_eq!(subs.names, g.subscriptions.names);
        assert_eq!(subs.regexes, g.subscriptions.regexes);
        assert!(subs.regexes.keys().all(|r| g.regexes.contains_key(r)));
    }

    #[test]
    fn single_member_gets_all_partitions() {
        let mut t = T::new(&[("a", 3), ("b", 2), ("other", 4)]);
        let r = t.ok(join("m1", &["a", "b"]));
        assert_eq!(
            (r.member_id.as_str(), r.heartbeat_interval_ms),
            ("m1", 5_000)
        );
        assert_eq!(r.member_epoch, 1);
        assert_eq!(r.assignment, wire(&[("a", &[0, 1, 2]), ("b", &[0, 1])]));
        assert_eq!(t.g.group_epoch(), 1);
        assert_eq!(t.g.state(), ConsumerGroupState::Stable);
        // Unchanged: no assignment in the answer, whether owned partitions come or not.
        assert_eq!(got(&t.ok(hb("m1", 1, None))), (1, None));
        let all = parts(&[("a", &[0, 1, 2]), ("b", &[0, 1])]);
        assert_eq!(got(&t.ok(hb("m1", 1, Some(all)))), (1, None));
        // Owned partitions that differ from the assignment: it is sent again.
        let nothing = Some(Assignment::new());
        assert_eq!(got(&t.ok(hb("m1", 1, nothing))), (1, Some(5)));
    }

    #[test]
    fn second_member_waits_for_the_first_to_revoke() {
        let mut t = T::new(&[("t", 6)]);
        let all = parts(&[("t", &[0, 1, 2, 3, 4, 5])]);
        t.ok(join("a", &["t"]));
        // b takes the new epoch at once but gets nothing: a owns everything.
        assert_eq!(got(&t.ok(join("b", &["t"]))), (2, Some(0)));
        assert_eq!(t.g.members["b"].state, MemberState::UnreleasedPartitions);
        assert_eq!(t.g.state(), ConsumerGroupState::Reconciling);
        // a is asked to revoke half, and keeps epoch 1 meanwhile.
        let r = t.ok(hb("a", 1, Some(all.clone())));
        assert_eq!(got(&r), (1, Some(3)));
        let kept = to_assignment(&r.assignment.unwrap());
        assert_eq!(t.g.members["a"].state, MemberState::UnrevokedPartitions);
        // No report, or a report still holding them, is no ack; b keeps waiting.
        assert_eq!(got(&t.ok(hb("b", 2, None))), (2, None));
        assert_eq!(got(&t.ok(hb("a", 1, None))), (1, None));
        assert_eq!(got(&t.ok(hb("a", 1, Some(all.clone())))), (1, Some(3)));
        // a acks: it moves to epoch 2, then b gets the other half.
        assert_eq!(got(&t.ok(hb("a", 1, Some(kept.clone())))), (2, None));
        let r = t.ok(hb("b", 2, None));
        assert_eq!(got(&r), (2, Some(3)));
        let theirs = to_assignment(&r.assignment.unwrap());
        assert!(intersection(&theirs, &kept).is_empty());
        assert_eq!(t.g.state(), ConsumerGroupState::Stable);
        // The previous epoch passes if the owned partitions are all still assigned (an
        // answer was lost); otherwise it is fenced.
        assert_eq!(got(&t.ok(hb("a", 1, Some(kept)))), (2, None));
        assert_eq!(t.err(hb("a", 1, Some(all))), GroupError::FencedMemberEpoch);
    }

    #[test]
    fn fenced_member_epoch() {
        let mut t = T::new(&[("t", 4)]);
        t.ok(join("a", &["t"]));
        t.ok(join("b", &["t"]));
        t.ok(hb("a", 1, Some(parts(&[("t", &[0, 1])]))));
        let a = &t.g.members["a"];
        assert_eq!((a.epoch, a.previous_epoch), (2, 1));
        assert_eq!(t.err(hb("a", 3, None)), GroupError::FencedMemberEpoch);
        // The previous epoch without owned partitions cannot be checked: fenced.
        assert_eq!(t.err(hb("a", 1, None)), GroupError::FencedMemberEpoch);
        assert_eq!(t.err(hb("x", 1, None)), GroupError::UnknownMemberId);
        // A rejoin (epoch 0) keeps the member's place and sends its assignment.
        assert_eq!(got(&t.ok(join("a", &["t"]))), (2, Some(2)));
        // A subscription change moves a to epoch 3: epoch 1 is fenced now even with
        // partitions still assigned; epoch 2 is the previous one.
        let names = Some(vec!["t".to_string(), "later".to_string()]);
        let req = HeartbeatRequest {
            subscribed_topic_names: names,
            ..hb("a", 2, None)
        };
        assert_eq!(t.ok(req).member_epoch, 3);
        let mine = t.g.members["a"].assigned.clone();
        let e = t.err(hb("a", 1, Some(mine.clone())));
        assert_eq!(e, GroupError::FencedMemberEpoch);
        assert_eq!(got(&t.ok(hb("a", 2, Some(mine)))), (3, None));
    }

    #[test]
    fn leave_bumps_epoch_and_reassigns() {
        let mut t = T::new(&[("t", 4)]);
        t.ok(join("a", &["t"]));
        t.ok(join("b", &["t"]));
        t.ok(hb("a", 1, Some(parts(&[("t", &[0, 1])]))));
        assert_eq!(got(&t.ok(hb("b", 2, None))), (2, Some(2)));
        let r = t.ok(hb("b", LEAVE_EPOCH, None));
        assert_eq!((r.member_id.as_str(), r.member_epoch), ("b", LEAVE_EPOCH));
        assert_eq!((t.g.group_epoch(), t.g.member_count()), (3, 1));
        assert_eq!(t.g.state(), ConsumerGroupState::Assigning);
        // b's partitions are free at once: a's next heartbeat takes all four.
        assert_eq!(got(&t.ok(hb("a", 2, None))), (3, Some(4)));
        assert_eq!(t.g.state(), ConsumerGroupState::Stable);
        let e = t.err(hb("b", LEAVE_EPOCH, None));
        assert_eq!(e, GroupError::UnknownMemberId);
        t.ok(hb("a", LEAVE_EPOCH, None));
        assert!(t.g.is_empty());
        assert_eq!(t.g.state(), ConsumerGroupState::Empty);
    }

    #[test]
    fn session_timeout_removes_members() {
        let mut t = T::new(&[("t", 2)]);
        t.ok(join("a", &["t"]));
        t.now = 1_000;
        t.ok(join("b", &["t"]));
        assert_eq!(t.g.next_deadline(), Some(45_000));
        assert!(t.tick(44_999).is_empty());
        t.ok(hb("b", 2, None));
        assert_eq!(t.tick(45_000), ["a"]);
        assert_eq!(t.g.group_epoch(), 3);
        // b takes both partitions on its next heartbeat.
        assert_eq!(got(&t.ok(hb("b", 2, None))), (3, Some(2)));
        assert!(t.tick(89_999).is_empty());
        assert_eq!(t.tick(90_000), ["b"]);
        assert!(t.g.is_empty());
        assert_eq!(t.err(hb("b", 3, None)), GroupError::UnknownMemberId);
    }

    #[test]
    fn rebalance_timeout_removes_a_member_that_never_revokes() {
        let mut t = T::new(&[("t", 4)]);
        t.ok(join("a", &["t"]));
        t.ok(join("b", &["t"]));
        let all = parts(&[("t", &[0, 1, 2, 3])]);
        t.now = 1_000;
        t.ok(hb("a", 1, Some(all.clone())));
        let deadline = 1_000 + i64::from(REBALANCE);
        assert_eq!(t.g.members["a"].revocation_deadline, Some(deadline));
        assert_eq!(t.g.next_deadline(), Some(deadline));
        // a heartbeats (its session is fine) but never lets go.
        for now in [6_000, 11_000, 16_000, 21_000, 26_000, 30_999] {
            assert!(t.tick(now).is_empty());
            assert_eq!(t.ok(hb("a", 1, Some(all.clone()))).member_epoch, 1);
            t.ok(hb("b", 2, None));
        }
        assert_eq!(t.tick(deadline), ["a"]);
        assert_eq!(t.g.group_epoch(), 3);
        assert_eq!(t.err(hb("a", 1, Some(all))), GroupError::UnknownMemberId);
        assert_eq!(got(&t.ok(hb("b", 2, None))), (3, Some(4)));
    }

    #[test]
    fn static_member_rejoin_keeps_its_assignment() {
        let mut t = T::new(&[("t", 4)]);
        t.ok(static_(join("a1", &["t"]), "ia"));
        t.ok(join("b", &["t"]));
        t.ok(hb("a1", 1, Some(parts(&[("t", &[0, 1])]))));
        t.ok(hb("b", 2, None));
        let mine = t.g.members["a1"].assigned.clone();
        // The instance leaves for a while: assignment kept, no bump, still stable.
        t.now = 1_000;
        let r = t.ok(static_(hb("a1", STATIC_LEAVE_EPOCH, None), "ia"));
        assert_eq!(r.member_epoch, STATIC_LEAVE_EPOCH);
        assert_eq!(t.g.group_epoch(), 2);
        assert_eq!(t.g.state(), ConsumerGroupState::Stable);
        assert_eq!(t.g.members["a1"].assigned, mine);
        // The old incarnation is fenced.
        assert_eq!(t.err(hb("a1", 2, None)), GroupError::FencedMemberEpoch);
        // It restarts under a new member id: same partitions and epoch, no rebalance.
        t.now = 2_000;
        let r = t.ok(static_(join("a2", &["t"]), "ia"));
        assert_eq!((r.member_id.as_str(), r.member_epoch), ("a2", 2));
        assert_eq!(r.assignment, Some(to_wire(&mine)));
        assert_eq!((t.g.group_epoch(), t.g.member_count()), (2, 2));
        assert!(!t.g.members.contains_key("a1"));
        // Left with -2 and never back: removed at the session timeout.
        t.now = 3_000;
        t.ok(static_(hb("a2", STATIC_LEAVE_EPOCH, None), "ia"));
        t.now = 40_000;
        t.ok(hb("b", 2, None));
        assert!(t.tick(47_999).is_empty());
        assert_eq!(t.tick(48_000), ["a2"]);
        assert!(!t.g.static_members.contains_key("ia"));
        assert_eq!(t.g.group_epoch(), 3);
    }

    #[test]
    fn unreleased_and_fenced_instance_ids() {
        let mut t = T::new(&[("t", 2)]);
        t.ok(static_(join("a1", &["t"]), "ia"));
        // Another member id with the instance id while a1 has not left.
        let e = t.err(static_(join("a2", &["t"]), "ia"));
        assert_eq!(e, GroupError::UnreleasedInstanceId);
        // The instance named with the wrong member id; an unknown instance.
        let e = t.err(static_(hb("a2", 1, None), "ia"));
        assert_eq!(e, GroupError::FencedInstanceId);
        let e = t.err(static_(hb("a2", LEAVE_EPOCH, None), "ia"));
        assert_eq!(e, GroupError::FencedInstanceId);
        let e = t.err(static_(hb("a1", 1, None), "zz"));
        assert_eq!(e, GroupError::UnknownMemberId);
        // The same incarnation rejoining is fine.
        assert_eq!(got(&t.ok(static_(join("a1", &["t"]), "ia"))), (1, Some(2)));
        // After a real leave (-1) the instance id is free.
        t.ok(static_(hb("a1", LEAVE_EPOCH, None), "ia"));
        assert_eq!(got(&t.ok(static_(join("a2", &["t"]), "ia"))), (3, Some(2)));
        assert_eq!(t.g.member_count(), 1);
    }

    #[test]
    fn subscription_and_metadata_changes_reassign() {
        let mut t = T::new(&[("a", 2), ("b", 2)]);
        let subscribe = |names: &[&str], req| HeartbeatRequest {
            subscribed_topic_names: Some(names.iter().map(|n| n.to_string()).collect()),
            ..req
        };
        t.ok(join("m", &["a"]));
        // Changes of topics nobody subscribes to do not bump.
        t.v = view(&[("a", 2), ("b", 5), ("c", 1)]);
        assert_eq!(got(&t.ok(hb("m", 1, None))), (1, None));
        // A subscription change bumps and reassigns.
        let r = t.ok(subscribe(&["a", "b"], hb("m", 1, None)));
        assert_eq!(r.member_epoch, 2);
        assert_eq!(
            r.assignment,
            wire(&[("a", &[0, 1]), ("b", &[0, 1, 2, 3, 4])])
        );
        // More partitions of a subscribed topic: bump, the new ones are assigned.
        t.v = view(&[("a", 4), ("b", 5)]);
        let r = t.ok(hb("m", 2, None));
        assert_eq!(got(&r), (3, Some(9)));
        // A subscribed topic deleted: bump, its partitions are revoked.
        t.v = view(&[("a", 4)]);
        let owned = to_assignment(&r.assignment.unwrap());
        assert_eq!(got(&t.ok(hb("m", 3, Some(owned)))), (3, Some(4)));
        assert_eq!(t.g.group_epoch(), 4);
        let a = parts(&[("a", &[0, 1, 2, 3])]);
        assert_eq!(got(&t.ok(hb("m", 3, Some(a.clone())))), (4, None));
        // Unsubscribing from everything revokes everything.
        assert_eq!(
            got(&t.ok(subscribe(&[], hb("m", 4, Some(a))))),
            (4, Some(0))
        );
        assert!(!t.g.is_subscribed("a"));
    }

    #[test]
    fn regex_subscription() {
        let topics = [("orders-eu", 2), ("orders-us", 1), ("payments", 3)];
        let mut t = T::new(&topics);
        t.v = view(&[topics[0], topics[1], topics[2], (OFFSETS_TOPIC, 50)]);
        let regex = |p: &str, req| HeartbeatRequest {
            subscribed_topic_regex: Some(p.to_string()),
            ..req
        };
        let names = None;
        let r = t.ok(regex(
            "orders-.*",
            HeartbeatRequest {
                subscribed_topic_names: names,
                ..join("m", &[])
            },
        ));
        assert_eq!(
            r.assignment,
            wire(&[("orders-eu", &[0, 1]), ("orders-us", &[0])])
        );
        assert!(t.g.is_subscribed("orders-us") && !t.g.is_subscribed("payments"));
        // Whole names only, and never internal topics.
        assert_eq!(
            got(&t.ok(regex("pay|.*offsets", hb("m", 1, None)))),
            (1, Some(0))
        );
        assert_eq!(got(&t.ok(hb("m", 1, Some(Assignment::new())))), (2, None));
        // Matching topics are assigned, and new ones picked up.
        let r = t.ok(regex("pay.*", hb("m", 2, None)));
        assert_eq!(r.assignment, wire(&[("payments", &[0, 1, 2])]));
        t.v = view(&[("payments", 3), ("payouts", 1)]);
        let r = t.ok(hb("m", 3, None));
        assert_eq!(
            r.assignment,
            wire(&[("payments", &[0, 1, 2]), ("payouts", &[0])])
        );
        // Invalid regexes are refused and change nothing.
        for bad in ["orders-(", "a)|(b", "[z-a]"] {
            let e = t.err(regex(bad, hb("m", 4, None)));
            assert_eq!(e, GroupError::InvalidRegularExpression);
        }
        assert_eq!(t.g.group_epoch(), 4);
        // An empty regex clears it.
        t.ok(regex("", hb("m", 4, None)));
        assert!(t.g.regexes.is_empty() && t.g.resolved.is_empty());
    }

    type Subs<'a> = &'a [(&'a str, &'a [&'a str])];

    fn specs<'a>(
        members: Subs<'_>,
        current: &'a BTreeMap<String, Assignment>,
    ) -> BTreeMap<String, MemberSpec<'a>> {
        let spec = |id: &str, topics: &[&str]| MemberSpec {
            topics: topics.iter().map(|t| tid(t)).collect(),
            current: current.get(id).unwrap_or(&NO_PARTITIONS),
        };
        let specs = members
            .iter()
            .map(|(id, ts)| (id.to_string(), spec(id, ts)));
        specs.collect()
    }

    fn sizes(out: &BTreeMap<String, Assignment>) -> Vec<usize> {
        let size = |a: &Assignment| a.values().map(BTreeSet::len).sum();
        out.values().map(size).collect()
    }

    #[test]
    fn range_and_uniform_assignors() {
        let topics: BTreeMap<Uuid, i32> = [(tid("x"), 5), (tid("y"), 3)].into();
        let none = BTreeMap::new();
        let both: Subs<'_> = &[("m1", &["x", "y"]), ("m2", &["x", "y"])];
        let range = assign_range(&specs(both, &none), &topics);
        assert_eq!(range["m1"], parts(&[("x", &[0, 1, 2]), ("y", &[0, 1])]));
        assert_eq!(range["m2"], parts(&[("x", &[3, 4]), ("y", &[2])]));
        // Uniform balances the totals: 4 and 4 where range gives 5 and 3.
        assert_eq!(sizes(&assign_uniform(&specs(both, &none), &topics)), [4, 4]);
        // Heterogeneous subscriptions: only subscribers get a topic's partitions.
        let mixed: Subs<'_> = &[("m1", &["x"]), ("m2", &["x", "y"]), ("m3", &["y"])];
        let range = assign_range(&specs(mixed, &none), &topics);
        assert_eq!(range["m2"], parts(&[("x", &[3, 4]), ("y", &[0, 1])]));
        assert_eq!(range["m3"], parts(&[("y", &[2])]));
        let uniform = assign_uniform(&specs(mixed, &none), &topics);
        assert!(uniform["m1"].keys().all(|t| *t == tid("x")));
        assert!(uniform["m3"].keys().all(|t| *t == tid("y")));
        assert!(sizes(&uniform).iter().all(|n| (2..=3).contains(n)));
        assert_eq!(uniform, assign_uniform(&specs(mixed, &none), &topics));
    }

    #[test]
    fn uniform_is_sticky() {
        let topics: BTreeMap<Uuid, i32> = [(tid("x"), 7), (tid("y"), 5)].into();
        let xy: &[&str] = &["x", "y"];
        let (two, three) = ([("a", xy), ("b", xy)], [("a", xy), ("b", xy), ("c", xy)]);
        let before = assign_uniform(&specs(&two, &BTreeMap::new()), &topics);
        assert_eq!(sizes(&before), [6, 6]);
        // A third member: 4 partitions move, all to it.
        let after = assign_uniform(&specs(&three, &before), &topics);
        assert_eq!(sizes(&after), [4, 4, 4]);
        assert!(is_subset(&after["a"], &before["a"]) && is_subset(&after["b"], &before["b"]));
        assert_eq!(assign_uniform(&specs(&three, &after), &topics), after);
        // It leaves again: only its partitions move.
        let back = assign_uniform(&specs(&two, &after), &topics);
        assert_eq!(sizes(&back), [6, 6]);
        assert!(is_subset(&after["a"], &back["a"]) && is_subset(&after["b"], &back["b"]));
    }

    #[test]
    fn group_uses_the_assignor_members_ask_for() {
        let mut t = T::new(&[("x", 3), ("y", 3)]);
        let asking = |assignor: &str, id: &str| HeartbeatRequest {
            server_assignor: Some(assignor.to_string()),
            ..join(id, &["x", "y"])
        };
        t.ok(asking("range", "m1"));
        t.ok(asking("range", "m2"));
        let d = t.g.describe();
        assert_eq!(d.assignor_name, "range");
        let target = |i: usize| to_assignment(&d.members[i].target_assignment);
        assert_eq!(target(0), parts(&[("x", &[0, 1]), ("y", &[0, 1])]));
        assert_eq!(target(1), parts(&[("x", &[2]), ("y", &[2])]));
        let e = t.err(asking("sticky", "m3"));
        assert_eq!(e, GroupError::UnsupportedAssignor);
        let assignors = vec![Assignor::Uniform];
        t.g = ConsumerGroup::new(
            "g",
            ConsumerGroupConfig {
                assignors,
                ..Default::default()
            },
        );
        assert_eq!(
            t.err(asking("range", "m1")),
            GroupError::UnsupportedAssignor
        );
    }

    #[test]
    fn request_validation() {
        let mut t = T::new(&[("t", 1)]);
        let j = || join("m", &["t"]);
        let invalid = [
            HeartbeatRequest {
                member_epoch: -3,
                ..j()
            },
            HeartbeatRequest {
                rebalance_timeout_ms: -1,
                ..j()
            },
            HeartbeatRequest {
                subscribed_topic_names: None,
                ..j()
            },
            HeartbeatRequest {
                topic_partitions: Some(vec![(tid("t"), vec![0])]),
                ..j()
            },
            HeartbeatRequest {
                instance_id: Some(String::new()),
                ..j()
            },
            join("", &["t"]),                  // v1: the client picks its id
            hb("m", STATIC_LEAVE_EPOCH, None), // -2 needs an instance id
        ];
        for req in invalid {
            assert_eq!(t.err(req), GroupError::InvalidRequest);
        }
        assert_eq!((t.g.is_empty(), t.g.group_epoch()), (true, 0));
        // v0: the coordinator picks the id of a new member.
        let r = t.ok(HeartbeatRequest {
            api_version: 0,
            ..join("", &["t"])
        });
        assert!(!r.member_id.is_empty() && t.g.members.contains_key(&r.member_id));
        // At most max_size members; a rejoin is no new member.
        let config = ConsumerGroupConfig {
            max_size: 1,
            ..Default::default()
        };
        t.g = ConsumerGroup::new("g", config);
        t.ok(join("a", &["t"]));
        assert_eq!(t.err(join("b", &["t"])), GroupError::GroupMaxSizeReached);
        t.ok(join("a", &["t"]));
    }

    #[test]
    fn validate_commit_cases() {
        let mut t = T::new(&[("t", 2)]);
        // An empty group: admin tools and simple consumers commit with -1.
        assert_eq!(t.g.validate_commit("", -1), Ok(()));
        assert_eq!(
            t.g.validate_commit("x", 3),
            Err(GroupError::UnknownMemberId)
        );
        t.ok(join("a", &["t"]));
        t.ok(join("b", &["t"]));
        t.ok(hb("a", 1, Some(parts(&[("t", &[0])]))));
        let a = &t.g.members["a"];
        assert_eq!((a.epoch, a.previous_epoch), (2, 1));
        let check = |id: &str, epoch: i32| t.g.validate_commit(id, epoch);
        assert_eq!(check("", -1), Err(GroupError::UnknownMemberId));
        assert_eq!(check("zz", 2), Err(GroupError::UnknownMemberId));
        assert_eq!(check("a", 2), Ok(()));
        assert_eq!(check("a", 1), Ok(())); // the previous epoch
        assert_eq!(check("a", 3), Err(GroupError::StaleMemberEpoch));
        assert_eq!(check("a", 0), Err(GroupError::StaleMemberEpoch));
    }

    #[test]
    fn describe_reports_members() {
        let mut t = T::new(&[("t", 2)]);
        t.ok(HeartbeatRequest {
            rack_id: Some("r1".into()),
            client_id: "c".into(),
            client_host: "/10.0.0.1".into(),
            ..static_(join("a", &["t"]), "i")
        });
        let d = t.g.describe();
        assert_eq!((d.group_id.as_str(), d.state.name()), ("g", "stable"));
        assert_eq!((d.group_epoch, d.assignment_epoch), (1, 1));
        assert_eq!(d.assignor_name, "uniform");
        let m = &d.members[0];
        assert_eq!((m.member_id.as_str(), m.member_epoch), ("a", 1));
        assert_eq!(
            (m.instance_id.as_deref(), m.rack_id.as_deref()),
            (Some("i"), Some("r1"))
        );
        assert_eq!(
            (m.client_id.as_str(), m.client_host.as_str()),
            ("c", "/10.0.0.1")
        );
        assert_eq!(
            (
                m.subscribed_topic_names.as_slice(),
                &m.subscribed_topic_regex
            ),
            (&["t".to_string()][..], &None)
        );
        assert_eq!(Some(m.assignment.clone()), wire(&[("t", &[0, 1])]));
        assert_eq!(m.target_assignment, m.assignment);
        let restored = ConsumerGroup::restored("g", ConsumerGroupConfig::default(), 7);
        assert_eq!(
            (restored.group_epoch(), restored.state().name()),
            (7, "empty")
        );
    }

    // ---------------------------------------------------------------------------------
    // Randomized simulation: clients joining, leaving, stalling, losing answers and
    // reconciling late, against the group; checked after every step.
    // ---------------------------------------------------------------------------------

    /// xorshift64*
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    #[derive(Debug, Default)]
    struct Client {
        id: String,
        instance: Option<String>,
        live: bool,
        /// A static member that left with -2.
        away: bool,
        epoch: i32,
        topics: Vec<String>,
        owned: Assignment,
        target: Assignment,
        /// The owned partitions as last reported.
        reported: Option<Assignment>,
        /// The target last reconciled: a new one makes the client report its partitions
        /// (the Java client's local assignment epoch).
        reconciled: Option<Assignment>,
        /// The last answer was lost: send a full request, take no partitions.
        lost: bool,
        /// Never revokes (until the calm phase).
        stubborn: bool,
    }

    impl Client {
        /// Drops all it holds, to start over with epoch 0.
        fn reset(&mut self) {
            self.epoch = 0;
            self.owned.clear();
            self.target.clear();
            self.reported = None;
            self.reconciled = None;
            self.lost = false;
        }
    }

    struct Sim {
        rng: Rng,
        g: ConsumerGroup,
        topics: Vec<(String, i32)>,
        clients: Vec<Client>,
        now: i64,
        ids: usize,
        assignor: &'static str,
        /// No lost answers, clients reconcile at once.
        calm: bool,
    }

    impl Sim {
        fn view(&self) -> TopicView {
            TopicView::new(self.topics.iter().map(|(n, p)| (n.clone(), tid(n), *p)))
        }

        fn some_topics(&mut self) -> Vec<String> {
            let topics = self.topics.iter().map(|(n, _)| n.clone());
            topics.filter(|_| self.rng.chance(60)).collect()
        }

        fn new_id(&mut self) -> String {
            self.ids += 1;
            format!("m{}", self.ids)
        }

        fn join(&mut self, instance: Option<String>) {
            let c = Client {
                id: self.new_id(),
                instance,
                live: true,
                topics: self.some_topics(),
                stubborn: self.rng.chance(5),
                ..Client::default()
            };
            self.clients.push(c);
            self.heartbeat(self.clients.len() - 1);
        }

        fn rejoin(&mut self, i: usize) {
            let id = self.new_id();
            let c = &mut self.clients[i];
            (c.id, c.live, c.away) = (id, true, false);
            c.reset();
            self.heartbeat(i);
        }

        fn heartbeat(&mut self, i: usize) {
            let v = self.view();
            let c = &mut self.clients[i];
            let full = c.epoch == 0 || c.lost;
            let send_owned = full || c.reported.as_ref() != Some(&c.owned) || self.rng.chance(30);
            let req = HeartbeatRequest {
                instance_id: c.instance.clone().filter(|_| full),
                rebalance_timeout_ms: if full { 5_000 } else { -1 },
                subscribed_topic_names: Some(c.topics.clone()),
                server_assignor: full.then(|| self.assignor.to_string()),
                ..hb(&c.id, c.epoch, send_owned.then(|| c.owned.clone()))
            };
            let lost = !self.calm && self.rng.chance(5);
            match self.g.heartbeat(req, &v, self.now) {
                Ok(r) => {
                    if send_owned {
                        c.reported = Some(c.owned.clone());
                    }
                    c.lost = lost;
                    if !lost {
                        c.epoch = r.member_epoch;
                        if let Some(a) = r.assignment {
                            c.target = to_assignment(&a);
                        }
                    }
                }
                // Give everything up and rejoin (under the same id).
                Err(GroupError::FencedMemberEpoch) => c.reset(),
                Err(e) => panic!("{e:?} for {c:?}"),
            }
        }

        /// Revokes what the target lacks, then (mostly) takes the rest of it.
        fn reconcile(&mut self, i: usize) {
            let c = &mut self.clients[i];
            if !c.live || c.stubborn {
                return;
            }
            if c.reconciled.as_ref() != Some(&c.target) {
                c.reconciled = Some(c.target.clone());
                c.reported = None;
            }
            c.owned = intersection(&c.owned, &c.target);
            if !c.lost && (self.calm || self.rng.chance(80)) {
                union_into(&mut c.owned, &c.target);
            }
        }

        fn leave(&mut self, i: usize, epoch: i32) {
            let v = self.view();
            let c = &mut self.clients[i];
            let req = HeartbeatRequest {
                instance_id: c.instance.clone(),
                ..hb(&c.id, epoch, None)
            };
            self.g.heartbeat(req, &v, self.now).unwrap();
            c.reset();
            (c.live, c.away) = (false, epoch == STATIC_LEAVE_EPOCH);
        }

        fn tick(&mut self) {
            let gone = self.g.tick(self.now);
            for c in self.clients.iter_mut().filter(|c| gone.contains(&c.id)) {
                // Timed out on its side too: it lost its partitions.
                c.reset();
                (c.live, c.away) = (false, false);
            }
        }

        fn step(&mut self) {
            self.now += self.rng.below(1_500) as i64;
            let pick = |rng: &mut Rng, of: Vec<usize>| of.get(rng.below(of.len())).copied();
            let live = (0..self.clients.len())
                .filter(|i| self.clients[*i].live)
                .collect();
            let away = (0..self.clients.len())
                .filter(|i| self.clients[*i].away)
                .collect();
            let (one, away) = (pick(&mut self.rng, live), pick(&mut self.rng, away));
            let lives = self.clients.iter().filter(|c| c.live).count();
            match (self.rng.below(100), one) {
                (0..=44, Some(i)) => self.heartbeat(i),
                (45..=69, Some(i)) => self.reconcile(i),
                (70..=73, _) if lives < 12 => {
                    let instance = self.rng.chance(40).then(|| format!("i{}", self.ids));
                    self.join(instance);
                }
                (74..=75, Some(i)) => self.leave(i, LEAVE_EPOCH),
                (76..=77, Some(i)) if self.clients[i].instance.is_some() => {
                    self.leave(i, STATIC_LEAVE_EPOCH);
                }
                (78..=80, _) => away.into_iter().for_each(|i| self.rejoin(i)),
                (81..=82, Some(i)) => {
                    self.clients[i].topics = self.some_topics();
                    self.heartbeat(i);
                }
                (83, _) => {
                    let k = self.rng.below(self.topics.len());
                    self.topics[k].1 += 1;
                }
                (84, _) if self.topics.len() < 6 => {
                    let n = self.topics.len();
                    self.topics
                        .push((format!("t{n}"), 1 + self.rng.below(5) as i32));
                }
                (85, _) => self.now += 5_000 + self.rng.below(10_000) as i64, // a stall
                (86.., _) => self.tick(),
                _ => {}
            }
        }

        /// The server's invariants, and the clients' safety: no partition is owned by
        /// two clients, and a client owns only what the group counts as its own.
        fn check(&self) {
            check_invariants(&self.g);
            let mut seen = BTreeMap::new();
            for c in self.clients.iter().filter(|c| !c.owned.is_empty()) {
                let m = &self.g.members[&c.id];
                let mut theirs = m.assigned.clone();
                union_into(&mut theirs, &m.pending_revocation);
                assert!(is_subset(&c.owned, &theirs), "{c:?} owns beyond {m:?}");
                for (t, ps) in &c.owned {
                    for p in ps {
                        let other = seen.insert((*t, *p), &c.id);
                        assert!(
                            other.is_none(),
                            "{t}-{p} consumed by {other:?} and {}",
                            c.id
                        );
                    }
                }
            }
        }
    }

    fn simulate(seed: u64, assignor: &'static str) {
        let config = ConsumerGroupConfig {
            session_timeout_ms: 10_000,
            ..Default::default()
        };
        let mut sim = Sim {
            rng: Rng(seed),
            g: ConsumerGroup::new("g", config),
            topics: vec![("t0".into(), 4), ("t1".into(), 3), ("t2".into(), 6)],
            clients: Vec::new(),
            now: 0,
            ids: 0,
            assignor,
            calm: false,
        };
        for _ in 0..3_000 {
            sim.step();
            sim.check();
        }
        // Calm: the away come back, some of the dead too, all heartbeat and reconcile.
        sim.calm = true;
        for i in 0..sim.clients.len() {
            sim.clients[i].stubborn = false;
            if sim.clients[i].away || (!sim.clients[i].live && i % 5 == 0) {
                sim.rejoin(i);
                sim.check();
            }
        }
        for _ in 0..10 {
            sim.now += 100;
            for i in 0..sim.clients.len() {
                if sim.clients[i].live {
                    sim.heartbeat(i);
                    sim.reconcile(i);
                }
            }
            sim.check();
        }
        // Converged: stable, every subscribed partition consumed, the assignor's shape.
        let g = &sim.g;
        assert_eq!(
            g.state(),
            ConsumerGroupState::Stable,
            "seed {seed}: {:#?}",
            g.describe()
        );
        let live: Vec<&Client> = sim.clients.iter().filter(|c| c.live).collect();
        assert_eq!(live.len(), g.member_count());
        let mut consumed = BTreeSet::new();
        for c in &live {
            let m = &g.members[&c.id];
            assert_eq!(&c.owned, &m.assigned);
            assert_eq!(&m.assigned, g.targets.get(&c.id).unwrap_or(&NO_PARTITIONS));
            consumed.extend(
                m.assigned
                    .iter()
                    .flat_map(|(t, ps)| ps.iter().map(|p| (*t, *p))),
            );
        }
        let expected: BTreeSet<(Uuid, i32)> = (sim.topics.iter())
            .filter(|(n, _)| g.is_subscribed(n))
            .flat_map(|(n, count)| (0..*count).map(|p| (tid(n), p)))
            .collect();
        assert_eq!(
            consumed, expected,
            "seed {seed}: every subscribed partition consumed"
        );
        let load = |m: &Member| m.assigned.values().map(BTreeSet::len).sum::<usize>();
        for (name, (t, count)) in &g.metadata {
            let subscribers: Vec<&Member> = g
                .members
                .values()
                .filter(|m| m.topics.contains(name))
                .collect();
            if assignor == "range" {
                // Contiguous ranges in member id order.
                let ps = subscribers
                    .iter()
                    .flat_map(|m| m.assigned.get(t).into_iter().flatten());
                assert!(
                    ps.copied().eq(0..*count),
                    "seed {seed}: {name} not in ranges"
                );
            } else {
                // Balanced: no partition of the topic could go to a subscriber with two fewer.
                for a in subscribers.iter().filter(|m| m.assigned.contains_key(t)) {
                    let balanced = subscribers.iter().all(|b| load(a) <= load(b) + 1);
                    assert!(balanced, "seed {seed}: unbalanced");
                }
            }
        }
    }

    #[test]
    fn randomized_simulation_never_owns_a_partition_twice() {
        for seed in 1..=12u64 {
            let assignor = if seed % 3 == 0 { "range" } else { "uniform" };
            simulate(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), assignor);
        }
    }
}
