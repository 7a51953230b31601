//! Consumer groups (Kafka's classic group protocol, KIP-848's consumer protocol, and
//! committed offsets), broker side.
//!
//! Placement: every group hashes to one of [`SLOTS`] *coordinator slots*, the partitions
//! of the internal topic [`OFFSETS_TOPIC`] (`slot = crc32c(group) % 50`). No record is
//! ever written to that topic; its partitions only carry ownership. The broker that
//! owns a slot's partition (owner record, loaded, lease alive; on a single node: always)
//! coordinates the slot's groups, so drain, rebalance and failover move coordinators
//! like any partition. FindCoordinator answers the slot's live owner.
//!
//! Modules: [`state`] is the per-group state machine of the classic protocol (pure,
//! clock passed in); [`consumer`] the one of KIP-848 consumer groups (pure);
//! [`coordinator`] owns the cache of groups per slot, checks ownership, loads groups
//! from the metadata store and writes them back, and runs the timers;
//! [`consumer_coordinator`] does the same for consumer groups (memory only);
//! [`sweeper`] expires the offsets of empty groups.
//!
//! Durable state (controller crate, `groups/{group}` and `offsets/{group}/{topic}`):
//! the group record is written when a join phase completes (generation bump), before
//! the members get their JoinGroup answers; offsets are written through on every
//! OffsetCommit (one transaction per request, up to 127 topics each). Every write
//! carries this broker's fence (its registration, cluster mode), so a deposed
//! coordinator cannot write. Members, assignments and sessions live only in memory: a
//! new coordinator loads a group lazily on the first request naming it, and its
//! members rejoin (one rebalance) — see [`state`] on recovered groups.
//!
//! Invariants:
//! - A group is served only by the coordinator of its slot: a request for a slot this
//!   broker does not own (owned, not releasing, lease alive) is answered
//!   NOT_COORDINATOR, and the cached groups of a slot that is lost, handed over, or
//!   comes back at another epoch are dropped (their waiting requests get
//!   NOT_COORDINATOR) within one timer tick.
//! - Every background loop ticks, stops with the broker's shutdown signal, and bounds
//!   each metadata call with a timeout.

pub mod consumer;
pub mod consumer_coordinator;
pub mod coordinator;
pub mod error;
pub mod state;
pub mod sweeper;

pub use coordinator::{Coordinator, CoordinatorConfig};
pub use error::GroupError;

/// The internal topic whose partitions are the coordinator slots.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Its partition count (Kafka's offsets.topic.num.partitions). Fixed: the slot of a
/// group must never change.
pub const SLOTS: u32 = 50;
/// Longest OffsetCommit metadata string accepted (Kafka's offset.metadata.max.bytes).
pub const MAX_OFFSET_METADATA_BYTES: usize = 4096;
/// Longest group id accepted (Kafka's longest protocol string).
pub const MAX_GROUP_ID_BYTES: usize = 32_767;

/// The coordinator slot of a group.
pub fn slot_of(group: &str) -> u32 {
    crc32c::crc32c(group.as_bytes()) % SLOTS
}

/// Whether a topic is internal (clients may not produce to it).
pub fn is_internal_topic(name: &str) -> bool {
    name == OFFSETS_TOPIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_crc32c_mod_50() {
        // Values fixed by the spec: crc32c of the group's bytes, modulo 50.
        assert_eq!(slot_of(""), 0);
        assert_eq!(slot_of("g"), crc32c::crc32c(b"g") % 50);
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(slot_of("123456789"), 0xE306_9283 % 50);
        assert!((0..1000).all(|i| slot_of(&format!("group-{i}")) < SLOTS));
    }
}
