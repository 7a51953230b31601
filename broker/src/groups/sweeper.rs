//! Expiry of committed offsets (Kafka's offsets.retention.minutes): the offsets of an
//! empty group expire `offsets_retention` after their commit, or after the group became
//! empty if that is later; a group left with no offsets and no members is deleted.
//!
//! Runs on each coordinator for the slots it owns, every `sweep_interval`, examining at
//! most `max_sweep_groups` groups per run (resuming after the last one examined).
//! Conservative by construction: a group counts as empty only if this coordinator knows
//! it (cached and known empty), or if nobody has named it since this broker has
//! coordinated its slot for at least the recovery window (an active member would have
//! heartbeated by then, and the group would be cached). Where "became empty" is not
//! known, the later of the commit time and the start of this broker's coordination of
//! the slot is used, so a failover only ever postpones expiry.
//!
//! Races with commits: an offset is removed only if its stored entry still carries the
//! commit time the sweep saw (one version-compared transaction), and a group whose
//! offsets all expired loses only its record, never offsets keys, so a commit that lands
//! during a sweep is never lost.

use std::collections::{BTreeMap, HashMap};

use super::coordinator::Coordinator;
use super::error::GroupError;
use super::{SLOTS, slot_of};
use crate::log::now_ms;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub groups_examined: usize,
    pub offsets_expired: usize,
    pub groups_deleted: usize,
}

impl Coordinator {
    /// Notes since when each slot is coordinated here (wall ms); forgets lost slots.
    fn refresh_slot_ownership(&self, wall: i64) -> HashMap<u32, i64> {
        let mut since = self
            .slot_owned_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut owned = HashMap::new();
        for slot in 0..SLOTS {
            match self.slot_epoch(slot) {
                Some(epoch) => {
                    let entry = since.entry(slot).or_insert((epoch, wall));
                    if entry.0 != epoch {
                        *entry = (epoch, wall);
                    }
                    owned.insert(slot, entry.1);
                }
                None => {
                    since.remove(&slot);
                }
            }
        }
        owned
    }

    /// One sweep over the groups of the slots this broker coordinates.
    pub async fn sweep_once(&self) -> Result<SweepStats, GroupError> {
        let wall = now_ms();
        let mono = self.now();
        let owned = self.refresh_slot_ownership(wall);
        let retention = self.config.offsets_retention.as_millis() as i64;
        let window = self.config.group.recovery_window_ms;
        let names = self
            .meta("listing groups", self.logs.meta.list_group_names())
            .await?;
        // Resume after the last group examined, wrapping around.
        let start = {
            let cursor = self.sweep_cursor.lock().unwrap_or_else(|p| p.into_inner());
            cursor
                .as_ref()
                .map_or(0, |c| names.partition_point(|n| n <= c))
        };
        let ordered = names[start..].iter().chain(names[..start].iter());
        let mut stats = SweepStats::default();
        for name in ordered {
            if stats.groups_examined >= self.config.max_sweep_groups {
                break;
            }
            let Some(&owned_since) = owned.get(&slot_of(name)) else {
                continue;
            };
            if self.is_active_consumer_group(name) {
                continue;
            }
            // When the group became empty (wall ms), if it is known to be empty.
            let empty_since = match self.cached(name) {
                Some(entry) => {
                    let g = entry.lock();
                    if !g.is_known_empty() {
                        continue;
                    }
                    wall - (mono - g.state_since())
                }
                None if wall - owned_since >= window => owned_since,
                None => continue,
            };
            stats.groups_examined += 1;
            *self.sweep_cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(name.clone());
            let offsets = self
                .meta("fetching offsets", self.logs.meta.fetch_offsets(name))
                .await?;
            let mut left = 0usize;
            for (topic, partitions) in &offsets {
                // Partition → the commit time seen: an entry is removed only if it still
                // carries it, so a commit landing meanwhile survives.
                let expired: BTreeMap<i32, i64> = partitions
                    .iter()
                    .filter(|(_, o)| o.commit_ms.max(empty_since).saturating_add(retention) <= wall)
                    .map(|(p, o)| (*p, o.commit_ms))
                    .collect();
                if expired.is_empty() {
                    left += partitions.len();
                    continue;
                }
                let removed = self
                    .meta(
                        "expiring offsets",
                        self.logs
                            .meta
                            .expire_offsets(name, topic, &expired, self.fence()),
                    )
                    .await?;
                left += partitions.len() - removed;
                stats.offsets_expired += removed;
                tracing::info!(group = %name, %topic, partitions = removed, "offsets expired");
            }
            if left == 0 {
                match self.delete_expired_group(name).await {
                    Ok(()) => stats.groups_deleted += 1,
                    // Offsets only, and now none: nothing else to delete; or not empty
                    // any more (a member joined meanwhile).
                    Err(GroupError::GroupIdNotFound | GroupError::NonEmptyGroup) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(stats)
    }
}
