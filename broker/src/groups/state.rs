//! The classic group protocol of one group, as Kafka's GroupCoordinator runs it: a pure
//! state machine driven by requests and by [`Group::tick`], with time passed in as
//! milliseconds of a monotonic clock (so tests drive it with a manual clock).
//!
//! States: `Empty` (no members) → `PreparingRebalance` (the join phase: every known
//! member must send JoinGroup again, bounded by the largest rebalance timeout) →
//! `CompletingRebalance` (the generation is bumped, the leader got every member's
//! metadata and must send the assignment in SyncGroup) → `Stable` (every member gets
//! its assignment); `Dead` once the group is deleted or unloaded.
//!
//! Ownership: a [`Group`] is owned by the coordinator's cache entry and only touched
//! under its mutex. Requests that must wait (JoinGroup during the join phase, SyncGroup
//! of a follower before the leader's assignment) get a [`Reply::Later`] receiver; the
//! matching sender is kept in the member and answered by a later call.
//!
//! Invariants:
//! - `leader` is a member whenever there are members, and `None` otherwise.
//! - A member has at most one waiting JoinGroup and one waiting SyncGroup; a new one
//!   answers the old one with REBALANCE_IN_PROGRESS.
//! - Every `static_members` entry names a member, except in a group recovered from the
//!   store (members are not persisted), where it names the member id to accept back.
//! - The generation only grows. When a join phase completes, the group record to store
//!   and the JoinGroup answers are handed out together as a [`PersistJob`]: the answers
//!   go out only after the record is stored, so no member ever holds a generation the
//!   store does not know.
//! - A member is evicted when its session times out, unless it is waiting in JoinGroup
//!   or SyncGroup (the rebalance timeout bounds those); a member that heartbeats within
//!   its session timeout is never evicted.
//!
//! Recovered groups: the store keeps the generation, protocol, leader and static
//! members, not the members. A group loaded with a leader (it had members when it was
//! last stored) is *recovered*: until its next generation completes, an unknown member
//! id is not refused but told to rejoin (REBALANCE_IN_PROGRESS) and accepted back under
//! the same id, and commits carrying the stored generation are accepted. Without
//! members or traffic for `recovery_window_ms` it becomes a plain empty group.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use cirrus_controller::GroupRecord;
use tokio::sync::oneshot;

use super::error::GroupError;

/// The states of a classic group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses (ListGroups, DescribeGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Broker-wide group settings (Kafka's `group.*` broker configs).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// group.min.session.timeout.ms
    pub min_session_timeout_ms: i32,
    /// group.max.session.timeout.ms
    pub max_session_timeout_ms: i32,
    /// group.initial.rebalance.delay.ms: how long the first join phase of an empty group
    /// waits for more members (extended per new member, up to the rebalance timeout).
    pub initial_rebalance_delay_ms: i64,
    /// How long a group recovered from the store accepts unknown members back (see the
    /// module docs) while nobody shows up.
    pub recovery_window_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            recovery_window_ms: 300_000,
        }
    }
}

/// One protocol a member supports: its name and the member's metadata for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// A JoinGroup request, decoded.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
}

/// A member as the leader sees it in its JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to a JoinGroup request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol: for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    pub fn error(error: GroupError, member_id: &str) -> JoinResponse {
        JoinResponse {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup request, decoded.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    /// SyncGroup v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment: member id → assignment bytes.
    pub assignments: Vec<(String, Bytes)>,
}

/// The answer to a SyncGroup request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error: GroupError) -> SyncResponse {
        SyncResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer now, or a receiver of the answer once the group gets there.
#[derive(Debug)]
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A completed join phase: store `record`, then send the JoinGroup answers.
#[derive(Debug)]
pub struct PersistJob {
    pub record: GroupRecord,
    pub deliveries: Vec<(oneshot::Sender<JoinResponse>, JoinResponse)>,
}

impl PersistJob {
    /// Sends the JoinGroup answers (after the record is stored).
    pub fn deliver(self) {
        for (tx, resp) in self.deliveries {
            let _ = tx.send(resp);
        }
    }
}

/// A member of a group, for DescribeGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group, for DescribeGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol while Stable, else empty.
    pub protocol_data: String,
    pub members: Vec<MemberDescription>,
}

/// Which partitions OffsetDelete may remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetDeletion {
    /// Any: the group is empty or does not use group management.
    Any,
    /// Any of a topic the group is not subscribed to.
    NotSubscribed(HashSet<String>),
    /// None: a non-consumer group with members.
    NonEmpty,
    /// None: the group's subscriptions cannot be known (recovered, or unreadable
    /// metadata); every topic counts as subscribed.
    AllSubscribed,
}

#[derive(Debug)]
struct Member {
    seq: u64,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i64,
    rebalance_timeout_ms: i64,
    protocol_type: String,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResponse>>,
    sync_waiter: Option<oneshot::Sender<SyncResponse>>,
    last_heartbeat: i64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }
}

/// The join phase's timer: a deadline, and for the first phase of an empty group the
/// initial delay still available for extensions.
#[derive(Debug, Clone, Copy)]
struct JoinTimer {
    deadline: i64,
    /// Some while the phase is an initial delayed join: the delay that may still be
    /// added when new members keep arriving.
    initial_remaining: Option<i64>,
}

/// One consumer group.
#[derive(Debug)]
pub struct Group {
    id: String,
    config: GroupConfig,
    state: GroupState,
    /// When the group entered its state (monotonic ms).
    state_since: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED → when they lapse.
    pending: HashMap<String, i64>,
    join_timer: Option<JoinTimer>,
    new_member_added: bool,
    /// Some(since) while recovered from the store (see the module docs).
    recovered: Option<i64>,
    next_seq: u64,
    persist: Option<PersistJob>,
}

impl Group {
    /// A group nobody has used yet.
    pub fn new(id: &str, config: GroupConfig, now: i64) -> Group {
        Group {
            id: id.to_string(),
            config,
            state: GroupState::Empty,
            state_since: now,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending: HashMap::new(),
            join_timer: None,
            new_member_added: false,
            recovered: None,
            next_seq: 0,
            persist: None,
        }
    }

    /// A group loaded from its stored record.
    pub fn from_record(id: &str, record: &GroupRecord, config: GroupConfig, now: i64) -> Group {
        let mut g = Group::new(id, config, now);
        g.generation = record.generation;
        g.protocol_type = (!record.protocol_type.is_empty()).then(|| record.protocol_type.clone());
        g.protocol = record.protocol.clone();
        g.leader = None;
        if record.leader.is_some() {
            // It had members when stored: they may still be alive and come back.
            g.recovered = Some(now);
            g.static_members = record.static_members.clone();
        }
        g
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn member_ids(&self) -> Vec<String> {
        let mut ids: Vec<(&u64, &String)> = self.members.iter().map(|(k, m)| (&m.seq, k)).collect();
        ids.sort();
        ids.into_iter().map(|(_, k)| k.clone()).collect()
    }

    pub fn is_recovered(&self) -> bool {
        self.recovered.is_some()
    }

    /// Empty, and not possibly holding members it does not know of (recovered).
    pub fn is_known_empty(&self) -> bool {
        self.state == GroupState::Empty && self.recovered.is_none() && self.pending.is_empty()
    }

    /// Since when the group is in its current state (monotonic ms).
    pub fn state_since(&self) -> i64 {
        self.state_since
    }

    /// The completed join phase to store, if one completed since the last call.
    pub fn take_persist(&mut self) -> Option<PersistJob> {
        self.persist.take()
    }

    /// The record that describes the group now.
    pub fn record(&self) -> GroupRecord {
        GroupRecord {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            static_members: self.static_members.clone(),
            updated_ms: 0,
        }
    }

    /// Unloads the group: every waiting request gets `error`, and it is Dead.
    pub fn shutdown(&mut self, error: GroupError) {
        for m in self.members.values_mut() {
            if let Some(tx) = m.join_waiter.take() {
                let _ = tx.send(JoinResponse::error(error, ""));
            }
            if let Some(tx) = m.sync_waiter.take() {
                let _ = tx.send(SyncResponse::error(error));
            }
        }
        self.persist = None;
        self.join_timer = None;
        self.state = GroupState::Dead;
    }

    fn transition(&mut self, state: GroupState, now: i64) {
        self.state = state;
        self.state_since = now;
    }

    fn static_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|mapped| mapped != member_id)
    }

    fn rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// Protocol names every member supports.
    fn candidate_protocols(&self) -> HashSet<&str> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return HashSet::new();
        };
        let mut set: HashSet<&str> = first.protocols.iter().map(|p| p.name.as_str()).collect();
        for m in members {
            let theirs: HashSet<&str> = m.protocols.iter().map(|p| p.name.as_str()).collect();
            set.retain(|n| theirs.contains(n));
        }
        set
    }

    fn supports(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols
            .iter()
            .any(|p| candidates.contains(p.name.as_str()))
    }

    /// The protocol most members prefer among those all support.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(p) = m
                .protocols
                .iter()
                .find(|p| candidates.contains(p.name.as_str()))
            {
                *votes.entry(p.name.as_str()).or_default() += 1;
            }
        }
        // Ties go to the leader's preference order.
        let order: Vec<&str> = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .map(|m| m.protocols.iter().map(|p| p.name.as_str()).collect())
            .unwrap_or_default();
        let rank = |name: &str| order.iter().position(|n| *n == name).unwrap_or(usize::MAX);
        votes
            .into_iter()
            .max_by(|(a, va), (b, vb)| va.cmp(vb).then(rank(b).cmp(&rank(a))))
            .map(|(name, _)| name.to_string())
    }

    /// The JoinGroup answer for `member_id` at the current generation.
    fn join_answer(&self, member_id: &str, leader_id: Option<&str>) -> JoinResponse {
        let is_leader = leader_id == Some(member_id);
        let members = if is_leader {
            let protocol = self.protocol.clone().unwrap_or_default();
            self.member_ids()
                .into_iter()
                .filter_map(|id| {
                    let m = self.members.get(&id)?;
                    Some(JoinedMember {
                        metadata: m.metadata(&protocol),
                        instance_id: m.instance_id.clone(),
                        member_id: id,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: leader_id.unwrap_or_default().to_string(),
            member_id: member_id.to_string(),
            members,
        }
    }

    // ---------------------------------------------------------------------------------
    // JoinGroup
    // ---------------------------------------------------------------------------------

    /// Handles a JoinGroup request.
    pub fn join(&mut self, req: JoinRequest, now: i64) -> Reply<JoinResponse> {
        let fail = |e: GroupError| Reply::Now(JoinResponse::error(e, &req.member_id));
        if self.state == GroupState::Dead {
            return fail(GroupError::CoordinatorNotAvailable);
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(GroupError::InvalidSessionTimeout);
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return fail(GroupError::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            self.join_new(req, now)
        } else {
            self.join_known(req, now)
        }
    }

    fn new_member_id(req: &JoinRequest) -> String {
        let prefix = req.instance_id.as_deref().unwrap_or(&req.client_id);
        format!("{prefix}-{}", uuid::Uuid::new_v4())
    }

    fn join_new(&mut self, req: JoinRequest, now: i64) -> Reply<JoinResponse> {
        let new_id = Self::new_member_id(&req);
        if let Some(instance) = req.instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned()
                && self.members.contains_key(&old_id)
            {
                return self.replace_static_member(&old_id, new_id, req, now);
            }
            self.static_members.insert(instance, new_id.clone());
            return self.add_member_and_rebalance(new_id, req, now);
        }
        if req.require_known_member_id {
            let lapse = now + i64::from(req.session_timeout_ms);
            self.pending.insert(new_id.clone(), lapse);
            return Reply::Now(JoinResponse::error(GroupError::MemberIdRequired, &new_id));
        }
        self.add_member_and_rebalance(new_id, req, now)
    }

    fn join_known(&mut self, req: JoinRequest, now: i64) -> Reply<JoinResponse> {
        let id = req.member_id.clone();
        if let Some(instance) = req.instance_id.as_deref() {
            match self.static_members.get(instance) {
                Some(mapped) if *mapped != id => {
                    return Reply::Now(JoinResponse::error(GroupError::FencedInstanceId, &id));
                }
                Some(_) => {}
                None if self.recovered.is_some() => {
                    self.static_members.insert(instance.to_string(), id.clone());
                }
                None => return Reply::Now(JoinResponse::error(GroupError::UnknownMemberId, &id)),
            }
        }
        if self.pending.remove(&id).is_some() {
            return self.add_member_and_rebalance(id, req, now);
        }
        if !self.members.contains_key(&id) {
            if self.recovered.is_some() {
                // A member of the stored generation coming back: accept it under its id.
                return self.add_member_and_rebalance(id, req, now);
            }
            return Reply::Now(JoinResponse::error(GroupError::UnknownMemberId, &id));
        }
        let matches = self
            .members
            .get(&id)
            .is_some_and(|m| m.protocols == req.protocols);
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(&id, req, now),
            GroupState::CompletingRebalance if matches => {
                // It missed the answer of this generation: give it again.
                if let Some(m) = self.members.get_mut(&id) {
                    m.last_heartbeat = now;
                }
                Reply::Now(self.join_answer(&id, self.leader.as_deref()))
            }
            GroupState::CompletingRebalance => self.update_member_and_rebalance(&id, req, now),
            GroupState::Stable => {
                if self.leader.as_deref() == Some(id.as_str()) || !matches {
                    self.update_member_and_rebalance(&id, req, now)
                } else {
                    if let Some(m) = self.members.get_mut(&id) {
                        m.last_heartbeat = now;
                    }
                    // A follower with unchanged metadata: nothing to rebalance.
                    Reply::Now(self.join_answer(&id, self.leader.as_deref()))
                }
            }
            GroupState::Empty | GroupState::Dead => {
                Reply::Now(JoinResponse::error(GroupError::UnknownMemberId, &id))
            }
        }
    }

    /// A restarted static member (same instance id, new member id) takes the old
    /// member's place: without a rebalance if the group is Stable and its metadata is
    /// unchanged.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
        now: i64,
    ) -> Reply<JoinResponse> {
        let Some(mut member) = self.members.remove(old_id) else {
            return self.add_member_and_rebalance(new_id, req, now);
        };
        // The old incarnation's waiting requests are fenced.
        if let Some(tx) = member.join_waiter.take() {
            let _ = tx.send(JoinResponse::error(GroupError::FencedInstanceId, old_id));
        }
        if let Some(tx) = member.sync_waiter.take() {
            let _ = tx.send(SyncResponse::error(GroupError::FencedInstanceId));
        }
        let unchanged = member.protocols == req.protocols;
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout_ms = i64::from(req.session_timeout_ms);
        member.rebalance_timeout_ms = i64::from(req.rebalance_timeout_ms);
        member.protocols = req.protocols.clone();
        member.last_heartbeat = now;
        let old_leader = self.leader.clone();
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        if let Some(instance) = &req.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        match self.state {
            GroupState::Stable if unchanged => {
                // Keep the generation and everyone's assignment. The answer names the
                // old leader id, so even a restarted leader does not assign again (a
                // Stable group would not pass a new assignment on).
                self.persist = Some(PersistJob {
                    record: self.record(),
                    deliveries: Vec::new(),
                });
                let mut answer = self.join_answer(&new_id, old_leader.as_deref());
                answer.members.clear();
                Reply::Now(answer)
            }
            GroupState::PreparingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.join_waiter = Some(tx);
                }
                self.try_complete_join(now);
                Reply::Later(rx)
            }
            _ => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.join_waiter = Some(tx);
                }
                self.prepare_rebalance(now);
                self.try_complete_join(now);
                Reply::Later(rx)
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        id: String,
        req: JoinRequest,
        now: i64,
    ) -> Reply<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.next_seq += 1;
        let member = Member {
            seq: self.next_seq,
            instance_id: req.instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: i64::from(req.session_timeout_ms),
            rebalance_timeout_ms: i64::from(req.rebalance_timeout_ms),
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(tx),
            sync_waiter: None,
            last_heartbeat: now,
        };
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.members.insert(id, member);
        if self.state == GroupState::PreparingRebalance {
            self.new_member_added = true;
        }
        self.maybe_prepare_rebalance(now);
        self.try_complete_join(now);
        Reply::Later(rx)
    }

    fn update_member_and_rebalance(
        &mut self,
        id: &str,
        req: JoinRequest,
        now: i64,
    ) -> Reply<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        let Some(m) = self.members.get_mut(id) else {
            return Reply::Now(JoinResponse::error(GroupError::UnknownMemberId, id));
        };
        m.protocols = req.protocols;
        m.protocol_type = req.protocol_type;
        m.session_timeout_ms = i64::from(req.session_timeout_ms);
        m.rebalance_timeout_ms = i64::from(req.rebalance_timeout_ms);
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.last_heartbeat = now;
        if let Some(old) = m.join_waiter.replace(tx) {
            let _ = old.send(JoinResponse::error(GroupError::RebalanceInProgress, id));
        }
        self.maybe_prepare_rebalance(now);
        self.try_complete_join(now);
        Reply::Later(rx)
    }

    fn maybe_prepare_rebalance(&mut self, now: i64) {
        if matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now);
        }
    }

    fn prepare_rebalance(&mut self, now: i64) {
        if self.state == GroupState::CompletingRebalance {
            // Assignments of the aborted generation are void; waiting followers rejoin.
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(tx) = m.sync_waiter.take() {
                    let _ = tx.send(SyncResponse::error(GroupError::RebalanceInProgress));
                }
            }
        }
        let rebalance_timeout = self.rebalance_timeout();
        let delay = self.config.initial_rebalance_delay_ms;
        self.join_timer = Some(if self.state == GroupState::Empty && delay > 0 {
            JoinTimer {
                deadline: now + delay,
                initial_remaining: Some((rebalance_timeout - delay).max(0)),
            }
        } else {
            JoinTimer {
                deadline: now + rebalance_timeout,
                initial_remaining: None,
            }
        });
        self.new_member_added = false;
        self.transition(GroupState::PreparingRebalance, now);
    }

    /// Completes the join phase if every member has rejoined (and no initial delay and
    /// no pending member holds it).
    fn try_complete_join(&mut self, now: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self
            .join_timer
            .is_some_and(|t| t.initial_remaining.is_some())
        {
            return;
        }
        if self.pending.is_empty() && self.members.values().all(Member::awaiting_join) {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: i64) {
        // Members that did not rejoin in time are gone (static ones wait for their
        // session to time out, as Kafka does).
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.awaiting_join() && m.instance_id.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        if !self.members.is_empty() && !self.elect_joined_leader() {
            // Only static members that have not rejoined: wait another round.
            self.join_timer = Some(JoinTimer {
                deadline: now + self.rebalance_timeout(),
                initial_remaining: None,
            });
            return;
        }
        self.join_timer = None;
        self.new_member_added = false;
        self.recovered = None;
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.transition(GroupState::Empty, now);
            self.persist = Some(PersistJob {
                record: self.record(),
                deliveries: Vec::new(),
            });
            return;
        }
        self.protocol = self.select_protocol();
        self.transition(GroupState::CompletingRebalance, now);
        let leader = self.leader.clone();
        let mut deliveries = Vec::new();
        for id in self.member_ids() {
            let answer = self.join_answer(&id, leader.as_deref());
            if let Some(m) = self.members.get_mut(&id) {
                m.last_heartbeat = now;
                m.assignment = Bytes::new();
                if let Some(tx) = m.join_waiter.take() {
                    deliveries.push((tx, answer));
                }
            }
        }
        self.persist = Some(PersistJob {
            record: self.record(),
            deliveries,
        });
    }

    /// Keeps the leader if it rejoined, else makes a rejoined member the leader. False
    /// if no member rejoined.
    fn elect_joined_leader(&mut self) -> bool {
        if let Some(l) = &self.leader
            && self.members.get(l).is_some_and(Member::awaiting_join)
        {
            return true;
        }
        let first = self
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_join())
            .min_by_key(|(_, m)| m.seq)
            .map(|(id, _)| id.clone());
        match first {
            Some(id) => {
                self.leader = Some(id);
                true
            }
            None => false,
        }
    }

    /// Removes a member (its waiting requests get UNKNOWN_MEMBER_ID); no rebalance.
    fn remove_member(&mut self, id: &str) {
        let Some(mut m) = self.members.remove(id) else {
            return;
        };
        if let Some(tx) = m.join_waiter.take() {
            let _ = tx.send(JoinResponse::error(GroupError::UnknownMemberId, id));
        }
        if let Some(tx) = m.sync_waiter.take() {
            let _ = tx.send(SyncResponse::error(GroupError::UnknownMemberId));
        }
        if let Some(instance) = &m.instance_id
            && self.static_members.get(instance).is_some_and(|x| x == id)
        {
            self.static_members.remove(instance);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self
                .members
                .iter()
                .min_by_key(|(_, m)| m.seq)
                .map(|(k, _)| k.clone());
        }
    }

    /// After members were removed: rebalance, or finish the join phase without them.
    fn after_removal(&mut self, now: i64) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---------------------------------------------------------------------------------
    // SyncGroup, Heartbeat, LeaveGroup
    // ---------------------------------------------------------------------------------

    /// Handles a SyncGroup request.
    pub fn sync(&mut self, req: SyncRequest, now: i64) -> Reply<SyncResponse> {
        let fail = |e: GroupError| Reply::Now(SyncResponse::error(e));
        if self.state == GroupState::Dead {
            return fail(GroupError::CoordinatorNotAvailable);
        }
        if self.static_fenced(&req.member_id, req.instance_id.as_deref()) {
            return fail(GroupError::FencedInstanceId);
        }
        if !self.members.contains_key(&req.member_id) {
            return fail(if self.recovered.is_some() {
                GroupError::RebalanceInProgress
            } else {
                GroupError::UnknownMemberId
            });
        }
        if req.generation != self.generation {
            return fail(GroupError::IllegalGeneration);
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| self.protocol_type.as_ref() != Some(t))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| self.protocol.as_ref() != Some(n))
        {
            return fail(GroupError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => fail(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.last_heartbeat = now;
                    if let Some(old) = m.sync_waiter.replace(tx) {
                        let _ = old.send(SyncResponse::error(GroupError::RebalanceInProgress));
                    }
                }
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    let mut given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                    }
                    self.transition(GroupState::Stable, now);
                    let (ptype, pname) = (self.protocol_type.clone(), self.protocol.clone());
                    for m in self.members.values_mut() {
                        if let Some(tx) = m.sync_waiter.take() {
                            let _ = tx.send(SyncResponse {
                                error: None,
                                protocol_type: ptype.clone(),
                                protocol_name: pname.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
                Reply::Later(rx)
            }
            GroupState::Stable => {
                let Some(m) = self.members.get_mut(&req.member_id) else {
                    return fail(GroupError::UnknownMemberId);
                };
                m.last_heartbeat = now;
                Reply::Now(SyncResponse {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: m.assignment.clone(),
                })
            }
        }
    }

    /// Handles a Heartbeat request.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if self.static_fenced(member_id, instance_id) {
            return Err(GroupError::FencedInstanceId);
        }
        let recovered = self.recovered.is_some();
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(if recovered {
                GroupError::RebalanceInProgress
            } else {
                GroupError::UnknownMemberId
            });
        };
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                m.last_heartbeat = now;
                Err(GroupError::RebalanceInProgress)
            }
            // After its JoinGroup answer a member may heartbeat before its SyncGroup.
            GroupState::CompletingRebalance | GroupState::Stable => {
                m.last_heartbeat = now;
                Ok(())
            }
        }
    }

    /// Handles a LeaveGroup request: (member id, instance id) per leaving member.
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now: i64,
    ) -> Vec<Result<(), GroupError>> {
        if self.state == GroupState::Dead {
            return vec![Err(GroupError::CoordinatorNotAvailable); leaving.len()];
        }
        let mut removed = false;
        let mut out = Vec::with_capacity(leaving.len());
        for (member_id, instance_id) in leaving {
            let target = match instance_id {
                Some(instance) => match self.static_members.get(instance) {
                    None => Err(GroupError::UnknownMemberId),
                    Some(mapped) if !member_id.is_empty() && mapped != member_id => {
                        Err(GroupError::FencedInstanceId)
                    }
                    Some(mapped) => Ok(mapped.clone()),
                },
                None => Ok(member_id.clone()),
            };
            let result = match target {
                Err(GroupError::UnknownMemberId) if self.recovered.is_some() => Ok(()),
                Err(e) => Err(e),
                Ok(id) => {
                    if self.pending.remove(&id).is_some() {
                        removed = true;
                        Ok(())
                    } else if self.members.contains_key(&id) {
                        self.remove_member(&id);
                        if let Some(instance) = instance_id {
                            self.static_members.remove(instance);
                        }
                        removed = true;
                        Ok(())
                    } else if self.recovered.is_some() {
                        if let Some(instance) = instance_id {
                            self.static_members.remove(instance);
                        }
                        Ok(())
                    } else {
                        Err(GroupError::UnknownMemberId)
                    }
                }
            };
            out.push(result);
        }
        if removed {
            self.after_removal(now);
        }
        out
    }

    // ---------------------------------------------------------------------------------
    // Offsets, timers, descriptions
    // ---------------------------------------------------------------------------------

    /// Whether an OffsetCommit from this member at this generation may be stored.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if self.static_fenced(member_id, instance_id) {
            return Err(GroupError::FencedInstanceId);
        }
        if generation < 0 && self.state == GroupState::Empty {
            // A simple consumer or an admin tool: the group only stores offsets.
            return Ok(());
        }
        let recovered = self.recovered.is_some();
        let Some(m) = self.members.get_mut(member_id) else {
            if recovered && generation == self.generation {
                // A member of the stored generation, not back yet.
                return Ok(());
            }
            return Err(GroupError::UnknownMemberId);
        };
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        m.last_heartbeat = now;
        Ok(())
    }

    /// Advances the timers to `now`: expires sessions and pending member ids, ends the
    /// join phase at its deadline, ends the recovery window.
    pub fn tick(&mut self, now: i64) {
        if self.state == GroupState::Dead {
            return;
        }
        let before = self.pending.len();
        self.pending.retain(|_, lapse| *lapse > now);
        let mut changed = self.pending.len() != before;
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && m.last_heartbeat + m.session_timeout_ms <= now
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(id);
            changed = true;
        }
        if changed {
            self.after_removal(now);
        }
        if self.state == GroupState::PreparingRebalance
            && let Some(timer) = self.join_timer
            && now >= timer.deadline
        {
            match timer.initial_remaining {
                Some(remaining) if self.new_member_added && remaining > 0 => {
                    let delay = self.config.initial_rebalance_delay_ms.min(remaining);
                    self.new_member_added = false;
                    self.join_timer = Some(JoinTimer {
                        deadline: now + delay,
                        initial_remaining: Some(remaining - delay),
                    });
                }
                _ => self.complete_join(now),
            }
        }
        if let Some(since) = self.recovered
            && self.state == GroupState::Empty
            && now - since >= self.config.recovery_window_ms
        {
            self.recovered = None;
            self.static_members.clear();
        }
    }

    /// The group for DescribeGroups: metadata and assignments only while Stable.
    pub fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = self
            .member_ids()
            .into_iter()
            .filter_map(|id| {
                let m = self.members.get(&id)?;
                Some(MemberDescription {
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                    member_id: id,
                })
            })
            .collect();
        GroupDescription {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_data: if stable { protocol } else { String::new() },
            members,
        }
    }

    /// Which offsets OffsetDelete may remove.
    pub fn offset_deletion(&self) -> OffsetDeletion {
        if self.protocol_type.is_none() || self.is_known_empty() {
            return OffsetDeletion::Any;
        }
        if self.protocol_type.as_deref() != Some("consumer") {
            return if self.members.is_empty() && self.recovered.is_none() {
                OffsetDeletion::Any
            } else {
                OffsetDeletion::NonEmpty
            };
        }
        if self.recovered.is_some() {
            return OffsetDeletion::AllSubscribed;
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut topics = HashSet::new();
        for m in self.members.values() {
            let metadata = m
                .protocols
                .iter()
                .find(|p| p.name == protocol)
                .or_else(|| m.protocols.first())
                .map(|p| p.metadata.clone())
                .unwrap_or_default();
            match subscribed_topics(&metadata) {
                Some(t) => topics.extend(t),
                None => return OffsetDeletion::AllSubscribed,
            }
        }
        OffsetDeletion::NotSubscribed(topics)
    }

    /// Marks the group deleted (the caller removes its stored state). Fails with
    /// NON_EMPTY_GROUP unless it is known to be empty.
    pub fn mark_deleted(&mut self) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::GroupIdNotFound);
        }
        if !self.is_known_empty() {
            return Err(GroupError::NonEmptyGroup);
        }
        self.shutdown(GroupError::CoordinatorNotAvailable);
        Ok(())
    }
}

/// The topics of a consumer protocol subscription (`ConsumerProtocolSubscription`),
/// None if the bytes are not one.
pub fn subscribed_topics(metadata: &Bytes) -> Option<Vec<String>> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    if metadata.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([metadata[0], metadata[1]]);
    if version < 0 {
        return None;
    }
    // Newer versions only add fields at the end: read them as the newest known one.
    let version = version.min(3);
    let mut body = metadata.slice(2..);
    let decoded =
        crate::server::decode_guarded(|| ConsumerProtocolSubscription::decode(&mut body, version))
            .ok()?;
    Some(
        decoded
            .topics
            .iter()
            .map(|t| t.as_str().to_string())
            .collect(),
    )
}

/// The partitions of a consumer protocol assignment (`ConsumerProtocolAssignment`), by
/// topic, None if the bytes are not one.
pub fn assigned_partitions(assignment: &Bytes) -> Option<Vec<(String, Vec<i32>)>> {
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    use kafka_protocol::protocol::Decodable;
    if assignment.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([assignment[0], assignment[1]]);
    if version < 0 {
        return None;
    }
    let version = version.min(3);
    let mut body = assignment.slice(2..);
    let decoded =
        crate::server::decode_guarded(|| ConsumerProtocolAssignment::decode(&mut body, version))
            .ok()?;
    Some(
        decoded
            .assigned_partitions
            .iter()
            .map(|t| (t.topic.as_str().to_string(), t.partitions.clone()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: i32 = 10_000;
    const REBALANCE: i32 = 30_000;

    fn config(initial_delay: i64) -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: initial_delay,
            ..GroupConfig::default()
        }
    }

    fn protocols(meta: &str) -> Vec<Protocol> {
        vec![
            Protocol {
                name: "range".into(),
                metadata: Bytes::from(format!("range:{meta}")),
            },
            Protocol {
                name: "roundrobin".into(),
                metadata: Bytes::from(format!("rr:{meta}")),
            },
        ]
    }

    fn join_req(member_id: &str, meta: &str) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: None,
            require_known_member_id: true,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: protocols(meta),
        }
    }

    fn static_req(member_id: &str, instance: &str, meta: &str) -> JoinRequest {
        JoinRequest {
            instance_id: Some(instance.into()),
            ..join_req(member_id, meta)
        }
    }

    fn sync_req(member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> SyncRequest {
        SyncRequest {
            member_id: member_id.into(),
            instance_id: None,
            generation,
            protocol_type: None,
            protocol_name: None,
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
                .collect(),
        }
    }

    /// Runs the group's persistence step as the coordinator would (the store accepts).
    fn persist(g: &mut Group) -> Option<GroupRecord> {
        g.take_persist().map(|job| {
            let record = job.record.clone();
            job.deliver();
            record
        })
    }

    fn now<T: std::fmt::Debug>(r: Reply<T>) -> T {
        match r {
            Reply::Now(t) => t,
            Reply::Later(_) => panic!("expected an immediate answer"),
        }
    }

    fn later<T>(r: Reply<T>) -> oneshot::Receiver<T> {
        match r {
            Reply::Later(rx) => rx,
            Reply::Now(_) => panic!("expected a waiting answer"),
        }
    }

    fn ready<T>(rx: &mut oneshot::Receiver<T>) -> Option<T> {
        rx.try_recv().ok()
    }

    /// A new member's two-step join (MEMBER_ID_REQUIRED, then join with the id).
    fn join_new(g: &mut Group, meta: &str, t: i64) -> (String, oneshot::Receiver<JoinResponse>) {
        let first = now(g.join(join_req("", meta), t));
        assert_eq!(first.error, Some(GroupError::MemberIdRequired));
        assert!(first.member_id.starts_with("client-"));
        let rx = later(g.join(join_req(&first.member_id, meta), t));
        (first.member_id, rx)
    }

    /// One member through join and sync; returns (member id, generation).
    fn single_member_group(g: &mut Group, t: i64) -> (String, i32) {
        let (a, mut rx) = join_new(g, "a", t);
        let rec = persist(g).expect("join completes at once without initial delay");
        let resp = ready(&mut rx).unwrap();
        assert_eq!(resp.error, None);
        assert_eq!(resp.leader, a);
        assert_eq!(resp.generation, rec.generation);
        assert_eq!(resp.members.len(), 1);
        // The leader's sync completes the phase: its own answer is ready at once.
        let mut srx = later(g.sync(sync_req(&a, resp.generation, &[(&a, "all")]), t));
        assert_eq!(ready(&mut srx).unwrap().assignment, Bytes::from("all"));
        assert_eq!(g.state(), GroupState::Stable);
        (a, resp.generation)
    }

    #[test]
    fn join_sync_heartbeat_and_leave_of_one_member() {
        let mut g = Group::new("g", config(0), 0);
        let (a, mut rx) = join_new(&mut g, "a", 0);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let record = persist(&mut g).unwrap();
        assert_eq!(record.generation, 1);
        assert_eq!(record.leader.as_deref(), Some(a.as_str()));
        assert_eq!(record.protocol.as_deref(), Some("range"));
        let joined = ready(&mut rx).unwrap();
        assert_eq!(joined.error, None);
        assert_eq!(joined.members[0].metadata, Bytes::from("range:a"));
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));

        let mut srx = later(g.sync(sync_req(&a, 1, &[(&a, "p0,p1")]), 10));
        let synced = ready(&mut srx).unwrap();
        assert_eq!(synced.error, None);
        assert_eq!(synced.assignment, Bytes::from("p0,p1"));
        assert_eq!(g.state(), GroupState::Stable);

        assert_eq!(g.heartbeat(&a, None, 1, 20), Ok(()));
        assert_eq!(
            g.heartbeat(&a, None, 0, 20),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat("nobody", None, 1, 20),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(g.leave(&[(a.clone(), None)], 30), vec![Ok(())]);
        assert_eq!(g.state(), GroupState::Empty);
        let record = persist(&mut g).unwrap();
        assert_eq!((record.generation, record.leader), (2, None));
        assert!(g.is_known_empty());
        assert_eq!(
            g.leave(&[(a, None)], 40),
            vec![Err(GroupError::UnknownMemberId)]
        );
    }

    #[test]
    fn second_member_joining_a_stable_group_causes_exactly_one_rebalance() {
        let mut g = Group::new("g", config(0), 0);
        let (a, gen1) = single_member_group(&mut g, 0);
        assert_eq!(g.state(), GroupState::Stable);

        // B's first join only gets its member id: the group stays Stable.
        let (b, mut b_rx) = {
            let first = now(g.join(join_req("", "b"), 100));
            assert_eq!(first.error, Some(GroupError::MemberIdRequired));
            assert_eq!(g.state(), GroupState::Stable);
            let rx = later(g.join(join_req(&first.member_id, "b"), 100));
            (first.member_id, rx)
        };
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        // A learns of the rebalance on its next heartbeat and rejoins with its member id.
        assert_eq!(
            g.heartbeat(&a, None, gen1, 200),
            Err(GroupError::RebalanceInProgress)
        );
        let mut a_rx = later(g.join(join_req(&a, "a"), 300));
        let record = persist(&mut g).unwrap();
        assert_eq!(record.generation, gen1 + 1);
        let a_join = ready(&mut a_rx).unwrap();
        let b_join = ready(&mut b_rx).unwrap();
        assert_eq!((a_join.error, b_join.error), (None, None));
        assert_eq!(a_join.member_id, a);
        assert_eq!(a_join.leader, a, "the first member stays leader");
        assert_eq!(a_join.members.len(), 2);
        assert!(b_join.members.is_empty(), "followers get no member list");
        let generation = a_join.generation;

        // The follower syncs first and waits for the leader's assignment.
        let mut b_sync = later(g.sync(sync_req(&b, generation, &[]), 400));
        assert!(ready(&mut b_sync).is_none());
        let mut a_sync = later(g.sync(sync_req(&a, generation, &[(&a, "p0"), (&b, "p1")]), 500));
        assert_eq!(ready(&mut a_sync).unwrap().assignment, Bytes::from("p0"));
        assert_eq!(ready(&mut b_sync).unwrap().assignment, Bytes::from("p1"));
        assert_eq!(g.state(), GroupState::Stable);
        // Exactly one rebalance: both heartbeat fine at the new generation.
        assert_eq!(g.heartbeat(&a, None, generation, 600), Ok(()));
        assert_eq!(g.heartbeat(&b, None, generation, 600), Ok(()));
        assert_eq!(g.generation(), gen1 + 1);
        assert!(g.take_persist().is_none());
    }

    #[test]
    fn a_member_that_heartbeats_is_never_evicted_and_a_silent_one_is() {
        let mut g = Group::new("g", config(0), 0);
        let (a, gen1) = single_member_group(&mut g, 0);
        // Heartbeats every 9 s (session 10 s) for a long time: never evicted.
        let mut t = 0;
        for _ in 0..100 {
            t += 9_000;
            g.tick(t);
            assert_eq!(g.heartbeat(&a, None, gen1, t), Ok(()));
        }
        assert_eq!(g.state(), GroupState::Stable);
        // Then silence: evicted once the session times out, the group becomes Empty.
        g.tick(t + 9_999);
        assert_eq!(g.state(), GroupState::Stable);
        g.tick(t + 10_000);
        assert_eq!(g.state(), GroupState::Empty);
        let record = persist(&mut g).unwrap();
        assert_eq!(record.generation, gen1 + 1);
        assert_eq!(
            g.heartbeat(&a, None, gen1, t + 10_001),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn session_expiry_of_one_member_rebalances_the_others() {
        let mut g = Group::new("g", config(0), 0);
        let (a, gen1) = single_member_group(&mut g, 0);
        let (b, mut b_rx) = join_new(&mut g, "b", 1_000);
        assert_eq!(
            g.heartbeat(&a, None, gen1, 1_000),
            Err(GroupError::RebalanceInProgress)
        );
        let mut a_rx = later(g.join(join_req(&a, "a"), 1_000));
        persist(&mut g);
        let generation = ready(&mut a_rx).unwrap().generation;
        ready(&mut b_rx).unwrap();
        let _ = g.sync(sync_req(&a, generation, &[(&a, "x"), (&b, "y")]), 1_000);
        let _ = g.sync(sync_req(&b, generation, &[]), 1_000);
        // B goes silent; A keeps heartbeating.
        let mut t = 1_000;
        while g.state() == GroupState::Stable {
            t += 1_000;
            assert!(t < 20_000, "B was never evicted");
            g.tick(t);
            if g.state() == GroupState::Stable {
                assert_eq!(g.heartbeat(&a, None, generation, t), Ok(()));
            }
        }
        assert_eq!(t, 11_000, "evicted exactly at its session timeout");
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&a, None, generation, t),
            Err(GroupError::RebalanceInProgress)
        );
        let mut a_rx = later(g.join(join_req(&a, "a"), t));
        // A is the only member left: the phase completes with it alone.
        persist(&mut g).unwrap();
        let resp = ready(&mut a_rx).unwrap();
        assert_eq!(resp.members.len(), 1);
        assert_eq!(resp.generation, generation + 1);
        assert_eq!(g.member_ids(), vec![a]);
    }

    #[test]
    fn rebalance_timeout_removes_members_that_do_not_rejoin() {
        let mut g = Group::new("g", config(0), 0);
        let (a, gen1) = single_member_group(&mut g, 0);
        let (_b, mut b_rx) = join_new(&mut g, "b", 1_000);
        // A keeps heartbeating (so its session never expires) but never rejoins.
        let mut t = 1_000;
        while t < 1_000 + i64::from(REBALANCE) - 1 {
            t += 3_000;
            t = t.min(1_000 + i64::from(REBALANCE) - 1);
            g.tick(t);
            assert_eq!(
                g.heartbeat(&a, None, gen1, t),
                Err(GroupError::RebalanceInProgress)
            );
            assert!(ready(&mut b_rx).is_none());
        }
        g.tick(1_000 + i64::from(REBALANCE));
        persist(&mut g).unwrap();
        let resp = ready(&mut b_rx).unwrap();
        assert_eq!(resp.error, None);
        assert_eq!(resp.leader, resp.member_id, "B became the leader");
        assert_eq!(
            g.heartbeat(&a, None, gen1, t + 2_000),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn initial_delay_collects_members_before_the_first_generation() {
        let mut g = Group::new("g", config(3_000), 0);
        let (a, mut a_rx) = join_new(&mut g, "a", 0);
        assert!(g.take_persist().is_none());
        g.tick(2_000);
        let (_b, mut b_rx) = join_new(&mut g, "b", 2_000);
        // The first delay ends at 3 s, but B arrived: one more delay.
        g.tick(3_000);
        assert!(g.take_persist().is_none());
        g.tick(5_999);
        assert!(g.take_persist().is_none());
        g.tick(6_000);
        persist(&mut g).unwrap();
        let a_resp = ready(&mut a_rx).unwrap();
        assert_eq!(a_resp.leader, a);
        assert_eq!(a_resp.members.len(), 2);
        assert_eq!(a_resp.generation, 1);
        assert_eq!(ready(&mut b_rx).unwrap().generation, 1);
    }

    #[test]
    fn followers_get_their_assignment_never_an_empty_one() {
        let mut g = Group::new("g", config(3_000), 0);
        let (a, mut a_rx) = join_new(&mut g, "a", 0);
        let (b, mut b_rx) = join_new(&mut g, "b", 0);
        let (c, mut c_rx) = join_new(&mut g, "c", 0);
        g.tick(3_000);
        g.tick(6_000);
        persist(&mut g).unwrap();
        let gen1 = ready(&mut a_rx).unwrap().generation;
        ready(&mut b_rx).unwrap();
        ready(&mut c_rx).unwrap();
        let mut rb = later(g.sync(sync_req(&b, gen1, &[]), 6_001));
        let mut rc = later(g.sync(sync_req(&c, gen1, &[]), 6_001));
        assert!(ready(&mut rb).is_none() && ready(&mut rc).is_none());
        let _ = g.sync(
            sync_req(&a, gen1, &[(&a, "A"), (&b, "B"), (&c, "C")]),
            6_002,
        );
        assert_eq!(ready(&mut rb).unwrap().assignment, Bytes::from("B"));
        assert_eq!(ready(&mut rc).unwrap().assignment, Bytes::from("C"));
        // A follower syncing late gets its own assignment too.
        let late = now(g.sync(sync_req(&b, gen1, &[]), 6_003));
        assert_eq!(late.assignment, Bytes::from("B"));
        // Wrong generation / unknown member.
        assert_eq!(
            now(g.sync(sync_req(&b, gen1 + 5, &[]), 6_004)).error,
            Some(GroupError::IllegalGeneration)
        );
        assert_eq!(
            now(g.sync(sync_req("x", gen1, &[]), 6_004)).error,
            Some(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn a_rebalance_during_sync_sends_waiting_followers_back_to_join() {
        let mut g = Group::new("g", config(3_000), 0);
        let (a, mut a_rx) = join_new(&mut g, "a", 0);
        let (b, mut b_rx) = join_new(&mut g, "b", 0);
        g.tick(3_000);
        g.tick(6_000);
        persist(&mut g);
        let gen1 = ready(&mut a_rx).unwrap().generation;
        ready(&mut b_rx).unwrap();
        let mut rb = later(g.sync(sync_req(&b, gen1, &[]), 6_001));
        // A third member joins before the leader synced.
        let (_c, _c_rx) = join_new(&mut g, "c", 6_002);
        assert_eq!(
            ready(&mut rb).unwrap().error,
            Some(GroupError::RebalanceInProgress)
        );
        assert_eq!(
            now(g.sync(sync_req(&a, gen1, &[(&a, "x")]), 6_003)).error,
            Some(GroupError::RebalanceInProgress)
        );
    }

    #[test]
    fn commits_need_a_member_and_its_generation_unless_the_group_is_empty() {
        let mut g = Group::new("g", config(0), 0);
        // Simple consumer / admin: generation -1, empty member id, empty group.
        assert_eq!(g.validate_commit("", None, -1, 0), Ok(()));
        let (a, generation) = single_member_group(&mut g, 0);
        assert_eq!(g.validate_commit(&a, None, generation, 1), Ok(()));
        assert_eq!(
            g.validate_commit(&a, None, generation - 1, 1),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            g.validate_commit("", None, -1, 1),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            g.validate_commit("other", None, generation, 1),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn static_member_restart_takes_its_place_without_a_rebalance() {
        let mut g = Group::new("g", config(0), 0);
        let mut rx = later(g.join(static_req("", "i-1", "a"), 0));
        persist(&mut g).unwrap();
        let first = ready(&mut rx).unwrap();
        let old_id = first.member_id.clone();
        assert!(old_id.starts_with("i-1-"));
        let generation = first.generation;
        let _ = g.sync(
            SyncRequest {
                instance_id: Some("i-1".into()),
                ..sync_req(&old_id, generation, &[(&old_id, "asg")])
            },
            1,
        );
        assert_eq!(g.state(), GroupState::Stable);

        // Restart: same instance id, no member id, same metadata.
        let again = now(g.join(static_req("", "i-1", "a"), 100));
        assert_eq!(again.error, None);
        assert_ne!(again.member_id, old_id);
        assert_eq!(again.generation, generation, "no rebalance");
        assert_eq!(again.leader, old_id, "the old leader id: no re-assignment");
        assert_eq!(g.state(), GroupState::Stable);
        let record = persist(&mut g).unwrap();
        assert_eq!(record.static_members["i-1"], again.member_id);
        // The new incarnation keeps the assignment.
        let synced = now(g.sync(
            SyncRequest {
                instance_id: Some("i-1".into()),
                ..sync_req(&again.member_id, generation, &[])
            },
            101,
        ));
        assert_eq!(synced.assignment, Bytes::from("asg"));
        // The old incarnation is fenced everywhere.
        assert_eq!(
            g.heartbeat(&old_id, Some("i-1"), generation, 102),
            Err(GroupError::FencedInstanceId)
        );
        assert_eq!(
            g.validate_commit(&old_id, Some("i-1"), generation, 102),
            Err(GroupError::FencedInstanceId)
        );
        assert_eq!(
            now(g.join(static_req(&old_id, "i-1", "a"), 103)).error,
            Some(GroupError::FencedInstanceId)
        );

        // Restart with changed metadata: a rebalance.
        let mut rx = later(g.join(static_req("", "i-1", "changed"), 200));
        persist(&mut g).unwrap();
        let resp = ready(&mut rx).unwrap();
        assert_eq!(resp.generation, generation + 1);
        // Leaving by instance id removes it.
        assert_eq!(
            g.leave(&[(String::new(), Some("i-1".into()))], 300),
            vec![Ok(())]
        );
        assert_eq!(g.state(), GroupState::Empty);
        assert!(g.static_members.is_empty());
    }

    #[test]
    fn invalid_joins_are_refused() {
        let mut g = Group::new("g", config(0), 0);
        let too_short = JoinRequest {
            session_timeout_ms: 1_000,
            ..join_req("", "a")
        };
        assert_eq!(
            now(g.join(too_short, 0)).error,
            Some(GroupError::InvalidSessionTimeout)
        );
        let no_protocols = JoinRequest {
            protocols: vec![],
            ..join_req("", "a")
        };
        assert_eq!(
            now(g.join(no_protocols, 0)).error,
            Some(GroupError::InconsistentGroupProtocol)
        );
        assert_eq!(
            now(g.join(join_req("made-up", "a"), 0)).error,
            Some(GroupError::UnknownMemberId)
        );
        let (_a, _) = single_member_group(&mut g, 0);
        let other_type = JoinRequest {
            protocol_type: "connect".into(),
            ..join_req("", "b")
        };
        assert_eq!(
            now(g.join(other_type, 1)).error,
            Some(GroupError::InconsistentGroupProtocol)
        );
        let other_protocol = JoinRequest {
            protocols: vec![Protocol {
                name: "sticky".into(),
                metadata: Bytes::new(),
            }],
            ..join_req("", "b")
        };
        assert_eq!(
            now(g.join(other_protocol, 1)).error,
            Some(GroupError::InconsistentGroupProtocol)
        );
    }

    #[test]
    fn pending_member_ids_lapse_and_do_not_hold_the_join_phase_forever() {
        let mut g = Group::new("g", config(0), 0);
        let (a, generation) = single_member_group(&mut g, 0);
        let pending = now(g.join(join_req("", "b"), 1_000));
        assert_eq!(pending.error, Some(GroupError::MemberIdRequired));
        // A leaves meanwhile; the pending id keeps the phase open until it lapses.
        assert_eq!(g.leave(&[(a, None)], 2_000), vec![Ok(())]);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        g.tick(1_000 + i64::from(SESSION));
        assert_eq!(g.state(), GroupState::Empty);
        assert_eq!(persist(&mut g).unwrap().generation, generation + 1);
        assert_eq!(
            now(g.join(join_req(&pending.member_id, "b"), 20_000)).error,
            Some(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn a_recovered_group_takes_its_members_back_under_their_ids() {
        let record = GroupRecord {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            static_members: BTreeMap::new(),
            updated_ms: 0,
        };
        let mut g = Group::from_record("g", &record, config(0), 0);
        assert!(g.is_recovered());
        assert!(!g.is_known_empty());
        // Members of generation 7 may still commit; they are told to rejoin.
        assert_eq!(g.validate_commit("m-2", None, 7, 10), Ok(()));
        assert_eq!(
            g.validate_commit("m-2", None, 6, 10),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            g.heartbeat("m-1", None, 7, 10),
            Err(GroupError::RebalanceInProgress)
        );
        let mut rx = later(g.join(join_req("m-1", "a"), 20));
        persist(&mut g).unwrap();
        let resp = ready(&mut rx).unwrap();
        assert_eq!((resp.member_id.as_str(), resp.generation), ("m-1", 8));
        assert!(!g.is_recovered());
        assert_eq!(
            g.heartbeat("m-2", None, 7, 30),
            Err(GroupError::UnknownMemberId)
        );

        // A recovered group nobody comes back to becomes a plain empty group.
        let mut g = Group::from_record("g", &record, config(0), 0);
        g.tick(GroupConfig::default().recovery_window_ms);
        assert!(g.is_known_empty());
        // A record of an empty group is not recovered at all.
        let empty = GroupRecord {
            leader: None,
            protocol: None,
            ..record
        };
        assert!(Group::from_record("g", &empty, config(0), 0).is_known_empty());
    }

    #[test]
    fn describe_and_offset_deletion_rules() {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let mut meta = bytes::BytesMut::new();
        meta.extend_from_slice(&1i16.to_be_bytes());
        ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("orders")])
            .encode(&mut meta, 1)
            .unwrap();
        let meta = meta.freeze();
        assert_eq!(subscribed_topics(&meta), Some(vec!["orders".to_string()]));

        let mut g = Group::new("g", config(0), 0);
        assert_eq!(g.offset_deletion(), OffsetDeletion::Any);
        let req = JoinRequest {
            protocols: vec![Protocol {
                name: "range".into(),
                metadata: meta.clone(),
            }],
            ..join_req("", "")
        };
        let id = now(g.join(req.clone(), 0)).member_id;
        let _ = g.join(
            JoinRequest {
                member_id: id.clone(),
                ..req
            },
            0,
        );
        persist(&mut g);
        let _ = g.sync(sync_req(&id, 1, &[(&id, "asg")]), 0);
        assert_eq!(
            g.offset_deletion(),
            OffsetDeletion::NotSubscribed(HashSet::from(["orders".to_string()]))
        );
        let d = g.describe();
        assert_eq!(d.state, GroupState::Stable);
        assert_eq!(d.protocol_data, "range");
        assert_eq!(d.members[0].assignment, Bytes::from("asg"));
        assert_eq!(d.members[0].metadata, meta);
        assert_eq!(g.mark_deleted(), Err(GroupError::NonEmptyGroup));
        assert_eq!(g.leave(&[(id, None)], 1), vec![Ok(())]);
        assert_eq!(g.mark_deleted(), Ok(()));
        assert_eq!(g.state(), GroupState::Dead);
    }
}
