//! The coordinator's side of KIP-848 consumer groups ([`super::consumer`]): the cache of
//! consumer-protocol groups per slot, the ConsumerGroupHeartbeat entry point, and what
//! the classic paths must ask of them (commits, joins, deletes, listings).
//!
//! A group id is either a classic group or a consumer group: a heartbeat for a classic
//! group that has members answers GROUP_ID_NOT_FOUND (Kafka's "not a consumer group"),
//! a JoinGroup for a consumer group with members answers INCONSISTENT_GROUP_PROTOCOL.
//! An empty group of either kind becomes the other on the first request.
//!
//! Durability: only committed offsets are stored (through the classic commit path).
//! Members, epochs and assignments live in memory; after a coordinator move or crash
//! the members' next heartbeat gets UNKNOWN_MEMBER_ID and they rejoin with epoch 0 (one
//! rebalance), resuming from the committed offsets. Entries follow the same ownership
//! rule as classic groups: used only while the slot is owned at the epoch they were
//! created under, dropped by the timer tick otherwise. Empty groups leave the cache at
//! the next tick.

use std::sync::{Arc, Mutex, MutexGuard};

use super::GroupError;
use super::consumer::{
    ConsumerGroup, ConsumerGroupConfig, ConsumerGroupDescription, HeartbeatRequest,
    HeartbeatResponse, TopicView,
};
use super::coordinator::{Coordinator, validate_group_id};
use super::{is_internal_topic, slot_of};

/// One cached consumer-protocol group.
#[derive(Debug)]
pub struct ConsumerEntry {
    slot: u32,
    /// The slot partition's leader epoch when the group was created here.
    epoch: i32,
    group: Mutex<ConsumerGroup>,
}

impl ConsumerEntry {
    pub(super) fn lock(&self) -> MutexGuard<'_, ConsumerGroup> {
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ConsumerGroupConfig {
    pub fn from_settings(settings: &crate::config::Settings) -> ConsumerGroupConfig {
        ConsumerGroupConfig {
            session_timeout_ms: settings.group_consumer_session_timeout.as_millis() as i32,
            heartbeat_interval_ms: settings.group_consumer_heartbeat_interval.as_millis() as i32,
            ..ConsumerGroupConfig::default()
        }
    }
}

impl Coordinator {
    /// The topics a consumer group may subscribe to (internal ones excluded).
    fn topic_view(&self) -> TopicView {
        TopicView::new(
            self.logs
                .topic_names()
                .into_iter()
                .filter(|n| !is_internal_topic(n))
                .filter_map(|n| {
                    let t = self.logs.get_topic(&n)?;
                    Some((n, t.id, t.partitions.len() as i32))
                }),
        )
    }

    /// The cached consumer group, if it exists and its slot is still owned at the epoch
    /// it was created under.
    pub(super) fn consumer_group(&self, group: &str) -> Option<Arc<ConsumerEntry>> {
        let entry = self.consumer_groups().get(group).cloned()?;
        (self.slot_epoch(entry.slot) == Some(entry.epoch)).then_some(entry)
    }

    /// Whether `group` is a consumer group with members (so classic requests must not
    /// touch it).
    pub(super) fn is_active_consumer_group(&self, group: &str) -> bool {
        self.consumer_group(group)
            .is_some_and(|e| !e.lock().is_empty())
    }

    /// ConsumerGroupHeartbeat.
    pub async fn consumer_heartbeat(
        &self,
        group: &str,
        req: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, GroupError> {
        validate_group_id(group, false)?;
        let slot = slot_of(group);
        let epoch = self.slot_epoch(slot).ok_or(GroupError::NotCoordinator)?;
        if let Some(classic) = self.cached(group)
            && !classic.lock().is_known_empty()
            && !classic.lock().member_ids().is_empty()
        {
            return Err(GroupError::GroupIdNotFound);
        }
        let topics = self.topic_view();
        let now = self.now();
        let entry = {
            let mut map = self.consumer_groups();
            match map.get(group) {
                Some(e) if e.epoch == epoch => e.clone(),
                _ => {
                    let e = Arc::new(ConsumerEntry {
                        slot,
                        epoch,
                        group: Mutex::new(ConsumerGroup::new(group, self.config.consumer.clone())),
                    });
                    map.insert(group.to_string(), e.clone());
                    e
                }
            }
        };
        let answer = entry.lock().heartbeat(req, &topics, now);
        if answer.is_err() && entry.lock().is_empty() {
            self.drop_if_empty(group, &entry);
        }
        answer
    }

    fn drop_if_empty(&self, group: &str, entry: &Arc<ConsumerEntry>) {
        let mut map = self.consumer_groups();
        if map.get(group).is_some_and(|e| Arc::ptr_eq(e, entry)) && entry.lock().is_empty() {
            map.remove(group);
        }
    }

    /// ConsumerGroupDescribe of one group: GROUP_ID_NOT_FOUND unless it is a consumer
    /// group this broker coordinates.
    pub async fn consumer_describe(
        &self,
        group: &str,
    ) -> Result<ConsumerGroupDescription, GroupError> {
        validate_group_id(group, true)?;
        self.slot_epoch(slot_of(group))
            .ok_or(GroupError::NotCoordinator)?;
        self.consumer_group(group)
            .map(|e| e.lock().describe())
            .ok_or(GroupError::GroupIdNotFound)
    }

    /// The consumer groups of the owned slots: (group id, state, members).
    pub(super) fn consumer_groups_listed(&self) -> Vec<(String, String)> {
        let entries: Vec<(String, Arc<ConsumerEntry>)> = self
            .consumer_groups()
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        entries
            .into_iter()
            .filter(|(_, e)| self.slot_epoch(e.slot) == Some(e.epoch))
            .map(|(id, e)| (id, capitalized(e.lock().describe().state.name())))
            .collect()
    }

    /// Timer tick of the consumer groups: expire sessions and revocations; drop groups
    /// of slots no longer owned here and groups left empty.
    pub(super) fn tick_consumer_groups(&self) {
        let now = self.now();
        let entries: Vec<(String, Arc<ConsumerEntry>)> = self
            .consumer_groups()
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        for (id, entry) in entries {
            if self.slot_epoch(entry.slot) != Some(entry.epoch) {
                tracing::info!(group = %id, "no longer the coordinator of the consumer group's slot; dropping it");
                self.consumer_groups().remove(&id);
                continue;
            }
            let removed = entry.lock().tick(now);
            if !removed.is_empty() {
                tracing::info!(group = %id, members = ?removed, "consumer group members removed (session or rebalance timeout)");
            }
            self.drop_if_empty(&id, &entry);
        }
    }
}

/// "stable" → "Stable": Kafka's ListGroups spells consumer group states capitalized.
pub(crate) fn capitalized(state: &str) -> String {
    let mut chars = state.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn states_are_capitalized_for_list_groups() {
        assert_eq!(super::capitalized("reconciling"), "Reconciling");
        assert_eq!(super::capitalized(""), "");
    }
}
