//! The reconciler: a pure function from a [`ClusterView`] to the [`OwnerChange`]s that
//! move the cluster toward "every partition has a live owner, and load is even". It
//! performs no I/O; the controller loop ([`crate::leader`]) reads the view and applies
//! the changes with per-record version compares, so a stale view only costs failed
//! compares, never a wrong write.
//!
//! # Terms
//!
//! - **Live** broker: has a registration in the view (`brokers/{id}`, lease-bound).
//! - **Eligible** broker: live and not draining. Only eligible brokers receive
//!   partitions.
//! - **Load** of a broker: owner records with `broker == it` and no pending move, plus
//!   owner records whose `moving_to == it` (a partition in flight counts for its
//!   destination), counted per **class**: data partitions, and partitions of internal
//!   topics (`__*`, the group coordinator slots), which carry no data and are balanced
//!   on their own. Ties are broken by the broker's total load, then `bytes_in_per_sec`
//!   from the load reports (lower first; a broker without a report counts as 0), then by
//!   the lower id.
//! - **Least loaded eligible**: the eligible broker with the smallest load; every
//!   assignment made while planning raises the destination's load at once, so a batch
//!   of placements spreads evenly.
//!
//! # Rules of [`reconcile`], in order (each owner record changes at most once per call)
//!
//! 1. A partition of a topic with no owner record gets one: the least loaded eligible
//!    broker, epoch 0, `expected_version: 0`. No eligible broker → nothing.
//! 2. An owner record whose stream id belongs to no topic is deleted.
//! 3. An owner record whose `broker` is not live fails over iff the topic config
//!    `cirrus.durability` is `"object"` (absent: `policy.default_durability_object`), or
//!    topic config `unclean.leader.election.enable` is `"true"`, or
//!    `policy.unclean_failover`. Failover writes `broker` = the pending move's
//!    destination if it is eligible, else the least loaded eligible broker;
//!    `epoch + 1`; `moving_to: None`. Otherwise the record is left alone: the partition
//!    is offline until its broker registers again (its unflushed data is only in that
//!    broker's WAL).
//! 4. A live owner with `moving_to = B` where `B` is not eligible (or is the owner
//!    itself) has the move cancelled (`moving_to: None`), or, if the owner is draining,
//!    redirected to the least loaded eligible broker.
//! 5. Every partition of a live draining broker with no pending move gets
//!    `moving_to` = the least loaded eligible broker (if any).
//! 6. If `policy.auto_rebalance`, no owner has a pending move, and rules 1–5 changed
//!    nothing: [`rebalance_plan`] with `policy.max_moves_per_tick`.
//!
//! A move is always expressed as `moving_to = Some(dest)` on the current owner's
//! record: the old owner completes the handover (flush, then write `broker = dest,
//! epoch + 1, moving_to = None`). Only failover of a dead owner rewrites
//! `broker`/`epoch` directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::cluster::OwnerChange;
use crate::records::{BrokerLoad, BrokerRecord, OwnerRecord, TopicRecord};

/// Topic config naming where acknowledged data lives: `"object"` or `"local"`.
pub const DURABILITY_CONFIG: &str = "cirrus.durability";
/// Kafka's topic config allowing failover that may lose acknowledged data.
pub const UNCLEAN_ELECTION_CONFIG: &str = "unclean.leader.election.enable";

/// Everything the reconciler looks at, as read by [`crate::leader::read_view`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    /// Live brokers.
    pub brokers: Vec<BrokerRecord>,
    /// Their load reports.
    pub loads: Vec<BrokerLoad>,
    /// Every topic.
    pub topics: Vec<TopicRecord>,
    /// Every owner record with its version.
    pub owners: Vec<(OwnerRecord, u64)>,
    /// Brokers with a drain request.
    pub drains: BTreeSet<i32>,
}

/// Controller policy knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Fail over partitions of dead brokers even when that may lose acknowledged data.
    pub unclean_failover: bool,
    /// Whether a topic without `cirrus.durability` counts as `"object"`.
    pub default_durability_object: bool,
    /// Even out partition counts when the cluster is otherwise settled.
    pub auto_rebalance: bool,
    /// Most moves one rebalance tick starts.
    pub max_moves_per_tick: usize,
}

impl Default for Policy {
    /// No unclean failover, local durability by default, auto-rebalance of up to 16
    /// moves per tick.
    fn default() -> Self {
        Self {
            unclean_failover: false,
            default_durability_object: false,
            auto_rebalance: true,
            max_moves_per_tick: 16,
        }
    }
}

/// Load classes, balanced independently: data partitions, and the partitions of
/// internal topics (names starting with `__`, e.g. the group coordinator slots of
/// `__consumer_offsets`), which carry no data. Balancing them apart keeps data partitions
/// even however the 50 slots are spread.
const CLASSES: usize = 2;

/// The load class of a topic's partitions.
fn class_of(topic: &str) -> usize {
    usize::from(topic.starts_with("__"))
}

/// Per-broker load accounting while planning.
#[derive(Debug)]
struct Loads {
    /// Eligible brokers: id → (load per class, bytes in per second).
    eligible: BTreeMap<i32, ([usize; CLASSES], f64)>,
}

impl Loads {
    fn new(view: &ClusterView, exclude: Option<i32>) -> Self {
        let live: BTreeSet<i32> = view.brokers.iter().map(|b| b.id).collect();
        let bytes_in: HashMap<i32, f64> = view
            .loads
            .iter()
            .map(|l| (l.id, l.bytes_in_per_sec))
            .collect();
        let mut eligible: BTreeMap<i32, ([usize; CLASSES], f64)> = live
            .iter()
            .filter(|id| !view.drains.contains(id) && Some(**id) != exclude)
            .map(|id| {
                let rate = bytes_in.get(id).copied().filter(|r| r.is_finite());
                (*id, ([0; CLASSES], rate.unwrap_or(0.0)))
            })
            .collect();
        for (owner, _) in &view.owners {
            if let Some(slot) = eligible.get_mut(&counted_for(owner)) {
                slot.0[class_of(&owner.topic)] += 1;
            }
        }
        Self { eligible }
    }

    fn is_eligible(&self, id: i32) -> bool {
        self.eligible.contains_key(&id)
    }

    /// Order of brokers by load in `class`, then total load, then bytes in.
    fn key(entry: &([usize; CLASSES], f64), class: usize) -> (usize, usize) {
        (entry.0[class], entry.0.iter().sum())
    }

    fn least_loaded(&self, class: usize) -> Option<i32> {
        self.eligible
            .iter()
            .min_by(|a, b| {
                Self::key(a.1, class)
                    .cmp(&Self::key(b.1, class))
                    .then(a.1.1.total_cmp(&b.1.1))
                    .then(a.0.cmp(b.0))
            })
            .map(|(id, _)| *id)
    }

    fn most_loaded(&self, class: usize) -> Option<i32> {
        self.eligible
            .iter()
            .max_by(|a, b| {
                Self::key(a.1, class)
                    .cmp(&Self::key(b.1, class))
                    .then(a.1.1.total_cmp(&b.1.1))
                    // Among equals prefer the lower id, as least_loaded does.
                    .then(b.0.cmp(a.0))
            })
            .map(|(id, _)| *id)
    }

    fn load(&self, id: i32, class: usize) -> usize {
        self.eligible.get(&id).map_or(0, |s| s.0[class])
    }

    /// Moves one unit of `class` load from `from` (if eligible) to `to` (if eligible).
    fn shift(&mut self, from: Option<i32>, to: i32, class: usize) {
        if let Some(slot) = from.and_then(|f| self.eligible.get_mut(&f)) {
            slot.0[class] = slot.0[class].saturating_sub(1);
        }
        if let Some(slot) = self.eligible.get_mut(&to) {
            slot.0[class] += 1;
        }
    }

    /// The least loaded eligible broker for `class`, charged with one more partition
    /// (taken from `from`'s count).
    fn take_least(&mut self, from: Option<i32>, class: usize) -> Option<i32> {
        let to = self.least_loaded(class)?;
        self.shift(from, to, class);
        Some(to)
    }
}

/// The broker an owner record's load counts for.
fn counted_for(owner: &OwnerRecord) -> i32 {
    owner.moving_to.unwrap_or(owner.broker)
}

fn put(record: OwnerRecord, expected_version: u64) -> OwnerChange {
    OwnerChange::Put {
        record,
        expected_version,
    }
}

fn failover_allowed(topic: &TopicRecord, policy: &Policy) -> bool {
    let object = match topic.configs.get(DURABILITY_CONFIG) {
        Some(value) => value == "object",
        None => policy.default_durability_object,
    };
    let unclean = topic
        .configs
        .get(UNCLEAN_ELECTION_CONFIG)
        .is_some_and(|v| v == "true");
    object || unclean || policy.unclean_failover
}

/// The owner changes that bring the cluster closer to its goal; see the module docs
/// for the rules. Empty on a settled, balanced cluster. Each stream id appears at most
/// once.
pub fn reconcile(view: &ClusterView, policy: &Policy) -> Vec<OwnerChange> {
    let live: BTreeSet<i32> = view.brokers.iter().map(|b| b.id).collect();
    let mut loads = Loads::new(view, None);
    let mut topic_of: HashMap<u64, &TopicRecord> = HashMap::new();
    for topic in &view.topics {
        for p in &topic.partitions {
            topic_of.insert(p.stream_id, topic);
        }
    }
    let owned: BTreeSet<u64> = view.owners.iter().map(|(o, _)| o.stream_id).collect();
    let mut changes = Vec::new();

    // 1. Place partitions without an owner.
    for topic in &view.topics {
        for p in &topic.partitions {
            if owned.contains(&p.stream_id) {
                continue;
            }
            let Some(broker) = loads.take_least(None, class_of(&topic.name)) else {
                break;
            };
            changes.push(put(
                OwnerRecord {
                    stream_id: p.stream_id,
                    topic: topic.name.clone(),
                    partition: p.index,
                    broker,
                    epoch: 0,
                    moving_to: None,
                },
                0,
            ));
        }
    }

    for (owner, version) in &view.owners {
        // 2. Owners of streams that no topic has.
        let Some(topic) = topic_of.get(&owner.stream_id) else {
            changes.push(OwnerChange::Delete {
                stream_id: owner.stream_id,
                expected_version: *version,
            });
            continue;
        };
        let class = class_of(&owner.topic);
        // 3. Owners that are not live.
        if !live.contains(&owner.broker) {
            if !failover_allowed(topic, policy) {
                continue;
            }
            let counted = counted_for(owner);
            let dest = match owner.moving_to {
                Some(to) if loads.is_eligible(to) => Some(to),
                _ => loads.take_least(Some(counted), class),
            };
            if let Some(dest) = dest {
                changes.push(put(
                    OwnerRecord {
                        broker: dest,
                        epoch: owner.epoch.saturating_add(1),
                        moving_to: None,
                        ..owner.clone()
                    },
                    *version,
                ));
            }
            continue;
        }
        let draining = view.drains.contains(&owner.broker);
        match owner.moving_to {
            // 4. Pending moves to a broker that cannot take the partition.
            Some(to) if to == owner.broker || !loads.is_eligible(to) => {
                let redirect = if draining {
                    loads.take_least(Some(to), class)
                } else {
                    loads.shift(Some(to), owner.broker, class);
                    None
                };
                changes.push(put(
                    OwnerRecord {
                        moving_to: redirect,
                        ..owner.clone()
                    },
                    *version,
                ));
            }
            Some(_) => {}
            // 5. Partitions of draining brokers.
            None if draining => {
                if let Some(to) = loads.take_least(Some(owner.broker), class) {
                    changes.push(put(
                        OwnerRecord {
                            moving_to: Some(to),
                            ..owner.clone()
                        },
                        *version,
                    ));
                }
            }
            None => {}
        }
    }

    // 6. Rebalance a settled cluster.
    if policy.auto_rebalance
        && changes.is_empty()
        && view.owners.iter().all(|(o, _)| o.moving_to.is_none())
    {
        return rebalance_plan(view, policy.max_moves_per_tick);
    }
    changes
}

/// Moves that even out load among eligible brokers: while the most and least loaded
/// eligible brokers differ by more than one partition, move one partition (as
/// `moving_to`) from the most to the least loaded, preferring partitions that are not
/// already moving (redirecting one that is moving to the most loaded broker
/// otherwise). At most `max_moves` changes.
pub fn rebalance_plan(view: &ClusterView, max_moves: usize) -> Vec<OwnerChange> {
    let mut loads = Loads::new(view, None);
    let live: BTreeSet<i32> = view.brokers.iter().map(|b| b.id).collect();
    let mut changes = Vec::new();
    for class in 0..CLASSES {
        // Candidates per eligible broker, in stream id order: (not moving, moving to it).
        let mut settled: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        let mut inbound: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, (owner, _)) in view.owners.iter().enumerate() {
            if !live.contains(&owner.broker) || class_of(&owner.topic) != class {
                continue;
            }
            match owner.moving_to {
                None if loads.is_eligible(owner.broker) => {
                    settled.entry(owner.broker).or_default().push(i)
                }
                Some(to) if loads.is_eligible(to) => inbound.entry(to).or_default().push(i),
                _ => {}
            }
        }
        // Pop from the back: highest stream ids move first, deterministically.
        while changes.len() < max_moves {
            let (Some(max), Some(min)) = (loads.most_loaded(class), loads.least_loaded(class))
            else {
                break;
            };
            if loads.load(max, class) <= loads.load(min, class) + 1 {
                break;
            }
            let pick = settled
                .get_mut(&max)
                .and_then(Vec::pop)
                .or_else(|| inbound.get_mut(&max).and_then(Vec::pop));
            let Some(i) = pick else {
                break;
            };
            let (owner, version) = &view.owners[i];
            // Moving back to the current owner cancels the pending move instead.
            let moving_to = (owner.broker != min).then_some(min);
            changes.push(put(
                OwnerRecord {
                    moving_to,
                    ..owner.clone()
                },
                *version,
            ));
            loads.shift(Some(max), min, class);
        }
    }
    changes
}

/// Smallest produce-rate gap (bytes/s) between the busiest and the idlest broker that
/// is worth a move.
pub const BYTES_IMBALANCE_MIN: f64 = 1024.0 * 1024.0;
/// The busiest broker must take at least this many times the idlest one's bytes/s.
pub const BYTES_IMBALANCE_RATIO: f64 = 1.5;
/// A swap must shrink the gap to at most this fraction of what it was.
const BYTES_SWAP_GAIN: f64 = 0.7;

/// When partition counts are even but produce bytes/s are not: one swap (two moves)
/// between the busiest and the idlest eligible broker, the busiest one's hot partition
/// that best closes the gap against the idlest one's coldest partition, so counts stay
/// even. Needs a load report from every eligible broker; empty while any move is
/// pending, when the gap is small (under [`BYTES_IMBALANCE_MIN`] or
/// [`BYTES_IMBALANCE_RATIO`]) or no swap shrinks it enough. The controller calls it at
/// most once per [`crate::leader::BYTE_MOVE_INTERVAL`], since the reports lag the moves.
pub fn byte_balance_plan(view: &ClusterView) -> Vec<OwnerChange> {
    if view.owners.iter().any(|(o, _)| o.moving_to.is_some()) {
        return Vec::new();
    }
    let loads = Loads::new(view, None);
    let reports: BTreeMap<i32, &BrokerLoad> = view
        .loads
        .iter()
        .filter(|l| loads.is_eligible(l.id) && l.bytes_in_per_sec.is_finite())
        .map(|l| (l.id, l))
        .collect();
    if reports.len() < 2 || reports.len() != loads.eligible.len() {
        return Vec::new();
    }
    let by_rate =
        |a: &&&BrokerLoad, b: &&&BrokerLoad| a.bytes_in_per_sec.total_cmp(&b.bytes_in_per_sec);
    let (Some(busy), Some(idle)) = (
        reports.values().max_by(by_rate),
        reports.values().min_by(by_rate),
    ) else {
        return Vec::new();
    };
    let gap = busy.bytes_in_per_sec - idle.bytes_in_per_sec;
    if gap < BYTES_IMBALANCE_MIN
        || busy.bytes_in_per_sec < BYTES_IMBALANCE_RATIO * idle.bytes_in_per_sec
    {
        return Vec::new();
    }
    let settled = |broker: i32| {
        view.owners.iter().filter(move |(o, _)| {
            o.broker == broker && o.moving_to.is_none() && class_of(&o.topic) == 0
        })
    };
    let idle_rates: HashMap<u64, f64> = idle
        .hot_partitions
        .iter()
        .map(|p| (p.stream_id, p.bytes_in_per_sec))
        .collect();
    // The idle broker's coldest partition: one it does not list as hot (rate ~0), else
    // the least busy it lists.
    let Some((cold, cold_rate)) = settled(idle.id)
        .map(|(o, v)| {
            (
                (o, *v),
                idle_rates.get(&o.stream_id).copied().unwrap_or(0.0),
            )
        })
        .min_by(|a, b| {
            a.1.total_cmp(&b.1)
                .then(b.0.0.stream_id.cmp(&a.0.0.stream_id))
        })
    else {
        return Vec::new();
    };
    let busy_owned: HashMap<u64, (&OwnerRecord, u64)> = settled(busy.id)
        .map(|(o, v)| (o.stream_id, (o, *v)))
        .collect();
    let best = busy
        .hot_partitions
        .iter()
        .filter_map(|p| {
            let owned = busy_owned.get(&p.stream_id)?;
            let after = (gap - 2.0 * (p.bytes_in_per_sec - cold_rate)).abs();
            Some((owned, after))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let Some(((hot, hot_version), after)) = best else {
        return Vec::new();
    };
    if after > BYTES_SWAP_GAIN * gap {
        return Vec::new();
    }
    vec![
        put(
            OwnerRecord {
                moving_to: Some(idle.id),
                ..(*hot).clone()
            },
            *hot_version,
        ),
        put(
            OwnerRecord {
                moving_to: Some(busy.id),
                ..cold.0.clone()
            },
            cold.1,
        ),
    ]
}

/// Moves every partition off `broker`: each owner record with `broker == it` and no
/// pending move to an eligible broker gets `moving_to` = the least loaded eligible
/// broker other than `broker` (works before the drain record is written). Empty if no
/// other broker is eligible.
pub fn drain_plan(view: &ClusterView, broker: i32) -> Vec<OwnerChange> {
    let mut loads = Loads::new(view, Some(broker));
    let mut changes = Vec::new();
    for (owner, version) in &view.owners {
        if owner.broker != broker {
            continue;
        }
        if owner.moving_to.is_some_and(|to| loads.is_eligible(to)) {
            continue;
        }
        let Some(to) = loads.take_least(owner.moving_to, class_of(&owner.topic)) else {
            break;
        };
        changes.push(put(
            OwnerRecord {
                moving_to: Some(to),
                ..owner.clone()
            },
            *version,
        ));
    }
    changes
}

/// Brokers for `count` new partitions, least loaded eligible first, each choice
/// counted before the next so they spread evenly. Empty if no broker is eligible.
pub fn place(view: &ClusterView, count: usize) -> Vec<i32> {
    let mut loads = Loads::new(view, None);
    (0..count)
        .map_while(|_| loads.take_least(None, 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::records::PartitionRecord;

    fn broker(id: i32) -> BrokerRecord {
        BrokerRecord {
            id,
            host: "127.0.0.1".into(),
            port: 9092 + id,
            admin_addr: format!("127.0.0.1:{}", 9095 + id),
            incarnation: format!("inc-{id}"),
            durability: "local".into(),
            started_ms: 1,
        }
    }

    fn load(id: i32, bytes_in: f64) -> BrokerLoad {
        BrokerLoad {
            id,
            bytes_in_per_sec: bytes_in,
            bytes_out_per_sec: 0.0,
            partitions: 0,
            cpu_cores_used: 0.0,
            measured_ms: 1,
            hot_partitions: Vec::new(),
        }
    }

    /// Topic `name` with `count` partitions whose stream ids start at `first`.
    fn topic(name: &str, first: u64, count: u64, configs: &[(&str, &str)]) -> TopicRecord {
        TopicRecord {
            name: name.into(),
            topic_id: uuid::Uuid::nil(),
            partitions: (0..count)
                .map(|i| PartitionRecord {
                    index: i32::try_from(i).unwrap(),
                    stream_id: first + i,
                    leader_epoch: 0,
                    log_start_offset: 0,
                })
                .collect(),
            configs: configs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            created_ms: 1,
        }
    }

    fn owner(t: &TopicRecord, partition: usize, broker: i32, epoch: i32) -> OwnerRecord {
        OwnerRecord {
            stream_id: t.partitions[partition].stream_id,
            topic: t.name.clone(),
            partition: t.partitions[partition].index,
            broker,
            epoch,
            moving_to: None,
        }
    }

    /// Every partition of `t` owned round-robin by `brokers`, versions = stream id.
    fn owned(t: &TopicRecord, brokers: &[i32]) -> Vec<(OwnerRecord, u64)> {
        (0..t.partitions.len())
            .map(|i| {
                let o = owner(t, i, brokers[i % brokers.len()], 0);
                let v = o.stream_id;
                (o, v)
            })
            .collect()
    }

    fn view(brokers: &[i32], topics: Vec<TopicRecord>) -> ClusterView {
        ClusterView {
            brokers: brokers.iter().map(|id| broker(*id)).collect(),
            loads: Vec::new(),
            topics,
            owners: Vec::new(),
            drains: BTreeSet::new(),
        }
    }

    fn quiet() -> Policy {
        Policy {
            auto_rebalance: false,
            ..Policy::default()
        }
    }

    /// Applies changes to the view as the store would (new versions = 10_000 + n).
    fn apply(view: &mut ClusterView, changes: &[OwnerChange]) {
        for (n, change) in changes.iter().enumerate() {
            let version = 10_000 + u64::try_from(n).unwrap();
            let at = view
                .owners
                .iter()
                .position(|(o, _)| o.stream_id == change.stream_id());
            match (change, at) {
                (
                    OwnerChange::Put {
                        record,
                        expected_version,
                    },
                    Some(i),
                ) => {
                    assert_eq!(
                        view.owners[i].1, *expected_version,
                        "stale expected version"
                    );
                    view.owners[i] = (record.clone(), version);
                }
                (
                    OwnerChange::Put {
                        record,
                        expected_version,
                    },
                    None,
                ) => {
                    assert_eq!(*expected_version, 0, "a new owner must expect absence");
                    view.owners.push((record.clone(), version));
                }
                (
                    OwnerChange::Delete {
                        expected_version, ..
                    },
                    Some(i),
                ) => {
                    assert_eq!(view.owners[i].1, *expected_version);
                    view.owners.remove(i);
                }
                (OwnerChange::Delete { .. }, None) => panic!("delete of a missing owner"),
            }
        }
        view.owners.sort_by_key(|(o, _)| o.stream_id);
    }

    /// Completes every pending move as the old owners would.
    fn complete_moves(view: &mut ClusterView) {
        for (o, v) in &mut view.owners {
            if let Some(to) = o.moving_to.take() {
                o.broker = to;
                o.epoch += 1;
                *v += 1;
            }
        }
    }

    fn counts(view: &ClusterView) -> BTreeMap<i32, usize> {
        let mut out = BTreeMap::new();
        for (o, _) in &view.owners {
            *out.entry(o.moving_to.unwrap_or(o.broker)).or_insert(0) += 1;
        }
        out
    }

    fn puts(changes: &[OwnerChange]) -> Vec<&OwnerRecord> {
        changes
            .iter()
            .filter_map(|c| match c {
                OwnerChange::Put { record, .. } => Some(record),
                OwnerChange::Delete { .. } => None,
            })
            .collect()
    }

    #[test]
    fn byte_balance_swaps_the_partition_that_best_closes_the_gap() {
        const MIB: f64 = 1024.0 * 1024.0;
        let t = topic("t", 1, 4, &[]);
        let mut v = view(&[0, 1], vec![t.clone()]);
        v.owners = vec![
            (owner(&t, 0, 0, 0), 1),
            (owner(&t, 1, 0, 0), 1),
            (owner(&t, 2, 1, 0), 1),
            (owner(&t, 3, 1, 0), 1),
        ];
        let rate = |stream_id: u64, mib: f64| crate::records::PartitionRate {
            stream_id,
            bytes_in_per_sec: mib * MIB,
        };
        let mut busy = load(0, 4.0 * MIB);
        busy.hot_partitions = vec![rate(1, 3.0), rate(2, 1.0)];
        let mut idle = load(1, 0.2 * MIB);
        idle.hot_partitions = vec![rate(3, 0.2)];
        v.loads = vec![busy.clone(), idle.clone()];
        // Counts are even: the count rebalance has nothing to do.
        assert!(rebalance_plan(&v, 100).is_empty());
        // Moving stream 2 (1 MiB/s) against the idle broker's unlisted stream 4 leaves
        // a 1.8 MiB/s gap; moving stream 1 (3 MiB/s) would leave 2.2 MiB/s.
        let swap = byte_balance_plan(&v);
        let moves: Vec<(u64, Option<i32>)> = swap
            .iter()
            .map(|c| match c {
                OwnerChange::Put { record, .. } => (record.stream_id, record.moving_to),
                OwnerChange::Delete { .. } => panic!("no deletes"),
            })
            .collect();
        assert_eq!(moves, vec![(2, Some(1)), (4, Some(0))]);
        // Nothing while those moves are pending.
        apply(&mut v, &swap);
        assert!(byte_balance_plan(&v).is_empty());
        complete_moves(&mut v);
        // A small gap, or a broker without a report, moves nothing.
        let mut small = v.clone();
        small.loads = vec![load(0, 1.2 * MIB), load(1, 0.9 * MIB)];
        assert!(byte_balance_plan(&small).is_empty());
        let mut unreported = v.clone();
        unreported.loads = vec![busy];
        assert!(byte_balance_plan(&unreported).is_empty());
    }

    #[test]
    fn internal_slots_do_not_unbalance_data_partitions() {
        // All 50 coordinator slots landed on broker 0 (it started first).
        let slots = topic("__consumer_offsets", 1000, 50, &[]);
        let mut v = view(&[0, 1, 2], vec![slots.clone()]);
        v.owners = (0..50).map(|i| (owner(&slots, i, 0, 0), 1)).collect();
        // A data topic is placed evenly although broker 0 holds 50 partitions.
        v.topics.push(topic("t", 1, 12, &[]));
        let changes = reconcile(&v, &quiet());
        apply(&mut v, &changes);
        let data = |v: &ClusterView| {
            let mut out = BTreeMap::new();
            for (o, _) in v.owners.iter().filter(|(o, _)| o.topic == "t") {
                *out.entry(o.moving_to.unwrap_or(o.broker)).or_insert(0) += 1;
            }
            out
        };
        assert_eq!(data(&v), BTreeMap::from([(0, 4), (1, 4), (2, 4)]));
        // Rebalancing moves slots only: data stays 4/4/4, slots become 17/17/16.
        let moves = rebalance_plan(&v, 1000);
        assert!(moves.iter().all(|c| match c {
            OwnerChange::Put { record, .. } => record.topic == "__consumer_offsets",
            OwnerChange::Delete { .. } => false,
        }));
        apply(&mut v, &moves);
        complete_moves(&mut v);
        assert_eq!(data(&v), BTreeMap::from([(0, 4), (1, 4), (2, 4)]));
        let mut slots_per = counts(&v);
        for (b, n) in data(&v) {
            *slots_per.entry(b).or_default() -= n;
        }
        let mut sorted: Vec<usize> = slots_per.values().copied().collect();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![16, 17, 17]);
        assert!(rebalance_plan(&v, 1000).is_empty());
    }

    #[test]
    fn rule1_places_unowned_partitions_evenly_at_epoch_0() {
        let t = topic("t", 1, 7, &[]);
        let v = view(&[3, 1, 2], vec![t]);
        let changes = reconcile(&v, &quiet());
        assert_eq!(changes.len(), 7);
        for c in &changes {
            let OwnerChange::Put {
                record,
                expected_version,
            } = c
            else {
                panic!("{c:?}");
            };
            assert_eq!(*expected_version, 0);
            assert_eq!(record.epoch, 0);
            assert_eq!(record.moving_to, None);
            assert_eq!(record.topic, "t");
        }
        let brokers: Vec<i32> = puts(&changes).iter().map(|r| r.broker).collect();
        // Ties go to the lower id.
        assert_eq!(brokers, [1, 2, 3, 1, 2, 3, 1]);
        let partitions: Vec<i32> = puts(&changes).iter().map(|r| r.partition).collect();
        assert_eq!(partitions, [0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rule1_fills_the_least_loaded_and_uses_bytes_in_to_break_ties() {
        let t = topic("t", 1, 6, &[]);
        let mut v = view(&[1, 2, 3], vec![t.clone()]);
        // Broker 1 owns 3 partitions already; 2 and 3 none, 2 is busier in bytes.
        v.owners = (0..3).map(|i| (owner(&t, i, 1, 0), 1)).collect();
        v.loads = vec![load(2, 500.0), load(3, 100.0)];
        let changes = reconcile(&v, &quiet());
        let brokers: Vec<i32> = puts(&changes).iter().map(|r| r.broker).collect();
        assert_eq!(brokers, [3, 2, 3], "3 wins the first tie on bytes in");
    }

    #[test]
    fn rule1_without_eligible_brokers_does_nothing() {
        let t = topic("t", 1, 3, &[]);
        assert!(reconcile(&view(&[], vec![t.clone()]), &Policy::default()).is_empty());
        let mut v = view(&[1], vec![t]);
        v.drains.insert(1);
        assert!(
            reconcile(&v, &Policy::default()).is_empty(),
            "a draining broker is not eligible"
        );
    }

    #[test]
    fn rule2_deletes_owners_of_deleted_topics() {
        let kept = topic("kept", 1, 2, &[]);
        let gone = topic("gone", 10, 2, &[]);
        let mut v = view(&[1], vec![kept.clone()]);
        v.owners = owned(&kept, &[1]);
        v.owners.extend(owned(&gone, &[1]));
        let changes = reconcile(&v, &quiet());
        assert_eq!(
            changes,
            [
                OwnerChange::Delete {
                    stream_id: 10,
                    expected_version: 10
                },
                OwnerChange::Delete {
                    stream_id: 11,
                    expected_version: 11
                },
            ]
        );
    }

    #[test]
    fn rule3_fails_over_object_durability_partitions_with_epoch_plus_one() {
        let obj = topic("obj", 1, 4, &[(DURABILITY_CONFIG, "object")]);
        let loc = topic("loc", 10, 4, &[(DURABILITY_CONFIG, "local")]);
        let dflt = topic("dflt", 20, 4, &[]);
        let unclean = topic("unclean", 30, 2, &[(UNCLEAN_ELECTION_CONFIG, "true")]);
        let mut v = view(
            &[1, 3],
            vec![obj.clone(), loc.clone(), dflt.clone(), unclean.clone()],
        );
        // Broker 2 is dead; it owned every partition, with epoch 4.
        for t in [&obj, &loc, &dflt, &unclean] {
            for i in 0..t.partitions.len() {
                let o = owner(t, i, 2, 4);
                let version = o.stream_id;
                v.owners.push((o, version));
            }
        }
        v.owners.sort_by_key(|(o, _)| o.stream_id);
        let changes = reconcile(&v, &quiet());
        let moved: Vec<u64> = changes.iter().map(OwnerChange::stream_id).collect();
        assert_eq!(
            moved,
            [1, 2, 3, 4, 30, 31],
            "object and unclean topics only"
        );
        for record in puts(&changes) {
            assert_eq!(record.epoch, 5);
            assert!(record.broker == 1 || record.broker == 3);
            assert_eq!(record.moving_to, None);
        }
        let on_1 = puts(&changes).iter().filter(|r| r.broker == 1).count();
        assert_eq!(on_1, 3, "failover spreads evenly");

        // Object durability by default.
        let object_default = Policy {
            default_durability_object: true,
            ..quiet()
        };
        let moved: Vec<u64> = reconcile(&v, &object_default)
            .iter()
            .map(OwnerChange::stream_id)
            .collect();
        assert_eq!(moved, [1, 2, 3, 4, 20, 21, 22, 23, 30, 31]);

        // Unclean failover moves everything.
        let unclean_policy = Policy {
            unclean_failover: true,
            ..quiet()
        };
        assert_eq!(reconcile(&v, &unclean_policy).len(), 14);

        // No eligible broker: nothing, even if allowed.
        let mut none = v.clone();
        none.drains = [1, 3].into();
        assert!(reconcile(&none, &unclean_policy).is_empty());
    }

    #[test]
    fn rule3_prefers_the_pending_move_destination() {
        let t = topic("t", 1, 1, &[(DURABILITY_CONFIG, "object")]);
        let mut v = view(&[1, 3], vec![t.clone()]);
        let mut o = owner(&t, 0, 2, 7);
        o.moving_to = Some(3);
        v.owners = vec![(o, 42)];
        let changes = reconcile(&v, &quiet());
        assert_eq!(
            changes,
            [OwnerChange::Put {
                record: OwnerRecord {
                    broker: 3,
                    epoch: 8,
                    moving_to: None,
                    ..owner(&t, 0, 2, 7)
                },
                expected_version: 42,
            }]
        );
    }

    #[test]
    fn rule4_cancels_moves_to_brokers_that_cannot_take_them() {
        let t = topic("t", 1, 4, &[]);
        let mut v = view(&[1, 2, 4], vec![t.clone()]);
        v.drains.insert(4);
        let mut to_dead = owner(&t, 0, 1, 0);
        to_dead.moving_to = Some(3);
        let mut to_draining = owner(&t, 1, 1, 0);
        to_draining.moving_to = Some(4);
        let mut to_self = owner(&t, 2, 2, 0);
        to_self.moving_to = Some(2);
        let mut fine = owner(&t, 3, 1, 0);
        fine.moving_to = Some(2);
        v.owners = vec![(to_dead, 1), (to_draining, 2), (to_self, 3), (fine, 4)];
        let changes = reconcile(&v, &Policy::default());
        let records = puts(&changes);
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(records.iter().all(|r| r.moving_to.is_none()));
        assert_eq!(
            changes
                .iter()
                .map(OwnerChange::stream_id)
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn rule4_redirects_a_draining_owners_broken_move() {
        let t = topic("t", 1, 1, &[]);
        let mut v = view(&[1, 2], vec![t.clone()]);
        v.drains.insert(1);
        let mut o = owner(&t, 0, 1, 0);
        o.moving_to = Some(9);
        v.owners = vec![(o, 5)];
        let changes = reconcile(&v, &quiet());
        assert_eq!(puts(&changes)[0].moving_to, Some(2));
    }

    #[test]
    fn rule5_drains_every_partition_of_a_draining_broker() {
        let t = topic("t", 1, 6, &[]);
        let mut v = view(&[1, 2, 3], vec![t.clone()]);
        v.owners = owned(&t, &[1, 2, 3]);
        v.drains.insert(1);
        let changes = reconcile(&v, &Policy::default());
        assert_eq!(changes.len(), 2);
        for c in &changes {
            let OwnerChange::Put {
                record,
                expected_version,
            } = c
            else {
                panic!("{c:?}");
            };
            assert_eq!(
                record.broker, 1,
                "the old owner keeps the record until handover"
            );
            assert_eq!(record.epoch, 0);
            assert!(matches!(record.moving_to, Some(2 | 3)));
            assert_eq!(*expected_version, record.stream_id);
        }
        let dests: BTreeSet<_> = puts(&changes).iter().map(|r| r.moving_to).collect();
        assert_eq!(dests.len(), 2, "spread over both remaining brokers");
        // Once moves are pending, the same view yields nothing new.
        apply(&mut v, &changes);
        assert!(reconcile(&v, &Policy::default()).is_empty());
        // After handover, the drained broker owns nothing.
        complete_moves(&mut v);
        assert_eq!(counts(&v).get(&1), None);
        assert!(reconcile(&v, &Policy::default()).is_empty());
    }

    #[test]
    fn rule5_with_no_other_broker_does_nothing() {
        let t = topic("t", 1, 2, &[]);
        let mut v = view(&[1], vec![t.clone()]);
        v.owners = owned(&t, &[1]);
        v.drains.insert(1);
        assert!(reconcile(&v, &Policy::default()).is_empty());
    }

    #[test]
    fn rule6_rebalances_only_a_settled_cluster() {
        let t = topic("t", 1, 9, &[]);
        let mut v = view(&[1, 2, 3], vec![t.clone()]);
        v.owners = owned(&t, &[1]);
        // auto_rebalance off: nothing.
        assert!(reconcile(&v, &quiet()).is_empty());
        let policy = Policy {
            max_moves_per_tick: 100,
            ..Policy::default()
        };
        let changes = reconcile(&v, &policy);
        assert_eq!(changes.len(), 6, "9 on one broker -> 3/3/3");
        apply(&mut v, &changes);
        assert_eq!(counts(&v), BTreeMap::from([(1, 3), (2, 3), (3, 3)]));
        // While moves are pending, no further rebalance.
        assert!(reconcile(&v, &policy).is_empty());
        complete_moves(&mut v);
        assert!(reconcile(&v, &policy).is_empty(), "balanced: no changes");
        // Another rule's change also defers rebalancing to a later tick.
        let mut busy = v.clone();
        busy.topics.push(topic("new", 100, 1, &[]));
        let changes = reconcile(&busy, &policy);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].expected_version(), 0);
    }

    #[test]
    fn rebalance_is_bounded_and_prefers_settled_partitions() {
        let t = topic("t", 1, 10, &[]);
        let mut v = view(&[1, 2], vec![t.clone()]);
        v.owners = owned(&t, &[1]);
        assert_eq!(rebalance_plan(&v, 2).len(), 2, "bounded by max_moves");
        assert!(rebalance_plan(&v, 0).is_empty());
        let all = rebalance_plan(&v, 100);
        assert_eq!(all.len(), 5);
        // Within one: nothing to do.
        let mut w = view(&[1, 2], vec![t.clone()]);
        w.owners = owned(&t, &[1, 1, 2]);
        let c = counts(&w);
        assert!(c[&1] - c[&2] > 1);
        let plan = rebalance_plan(&w, 100);
        apply(&mut w, &plan);
        let c = counts(&w);
        assert!(c[&1].abs_diff(c[&2]) <= 1, "{c:?}");
        assert!(rebalance_plan(&w, 100).is_empty());

        // Broker 1 owns 4 settled partitions and 4 are moving to it from broker 2:
        // settled ones move first.
        let t = topic("t", 1, 12, &[]);
        let mut v = view(&[1, 2, 3], vec![t.clone()]);
        v.owners = (0..12)
            .map(|i| {
                let mut o = owner(&t, i, if i < 4 { 1 } else { 2 }, 0);
                if (4..8).contains(&i) {
                    o.moving_to = Some(1);
                }
                (o, 1)
            })
            .collect();
        // Loads: 1 -> 8 (4 settled + 4 inbound), 2 -> 4, 3 -> 0.
        let plan = rebalance_plan(&v, 100);
        let records = puts(&plan);
        assert!(!records.is_empty());
        let from_settled = records.iter().filter(|r| r.broker == 1).count();
        assert!(
            from_settled >= 4.min(records.len()) || records.iter().take(4).all(|r| r.broker == 1)
        );
        assert!(
            records[0].broker == 1,
            "a settled partition of broker 1 goes first"
        );
        apply(&mut v, &plan);
        let c = counts(&v);
        let max = c.values().max().copied().unwrap_or(0);
        let min = [1, 2, 3]
            .iter()
            .map(|b| c.get(b).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        assert!(max - min <= 1, "{c:?}");
    }

    #[test]
    fn rebalance_redirecting_back_to_the_owner_cancels_the_move() {
        // Broker 2 owns 4 partitions, all moving to broker 1; broker 1 owns nothing else.
        let t = topic("t", 1, 4, &[]);
        let mut v = view(&[1, 2], vec![t.clone()]);
        v.owners = (0..4)
            .map(|i| {
                let mut o = owner(&t, i, 2, 0);
                o.moving_to = Some(1);
                (o, 1)
            })
            .collect();
        let plan = rebalance_plan(&v, 100);
        assert_eq!(plan.len(), 2);
        for r in puts(&plan) {
            assert_eq!(r.moving_to, None, "moving back to the owner is a cancel");
        }
    }

    #[test]
    fn drain_plan_moves_everything_off_before_the_drain_record_exists() {
        let t = topic("t", 1, 6, &[]);
        let mut v = view(&[1, 2, 3], vec![t.clone()]);
        v.owners = owned(&t, &[1, 1, 2]);
        let plan = drain_plan(&v, 1);
        assert_eq!(plan.len(), 4);
        for r in puts(&plan) {
            assert_eq!(r.broker, 1);
            assert!(matches!(r.moving_to, Some(2 | 3)));
        }
        apply(&mut v, &plan);
        assert_eq!(counts(&v), BTreeMap::from([(2, 3), (3, 3)]));
        assert!(drain_plan(&v, 1).is_empty(), "pending moves are kept");
        // Only broker 1 live: nowhere to go.
        let mut alone = view(&[1], vec![t.clone()]);
        alone.owners = owned(&t, &[1]);
        assert!(drain_plan(&alone, 1).is_empty());
    }

    #[test]
    fn place_spreads_and_skips_ineligible_brokers() {
        let t = topic("t", 1, 4, &[]);
        let mut v = view(&[1, 2, 3], vec![t.clone()]);
        v.owners = owned(&t, &[1, 1, 2, 2]);
        v.drains.insert(3);
        assert_eq!(place(&v, 0), Vec::<i32>::new());
        assert_eq!(place(&v, 4), [1, 2, 1, 2]);
        v.drains.clear();
        assert_eq!(place(&v, 5), [3, 3, 1, 2, 3]);
        assert!(place(&view(&[], vec![]), 3).is_empty());
    }

    #[test]
    fn reconcile_is_deterministic_and_touches_each_owner_once() {
        let obj = topic("obj", 1, 50, &[(DURABILITY_CONFIG, "object")]);
        let mut v = view(&[1, 2, 3], vec![obj.clone(), topic("new", 100, 20, &[])]);
        v.owners = owned(&obj, &[1, 2, 4]);
        v.drains.insert(2);
        v.owners
            .push((owner(&topic("gone", 500, 1, &[]), 0, 1, 0), 9));
        let a = reconcile(&v, &Policy::default());
        let b = reconcile(&v, &Policy::default());
        assert_eq!(a, b);
        let ids: Vec<u64> = a.iter().map(OwnerChange::stream_id).collect();
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "one change per stream id");
    }

    #[test]
    fn ten_thousand_partitions_place_evenly_and_settle() {
        let topics: Vec<TopicRecord> = (0..10u64)
            .map(|t| topic(&format!("topic-{t}"), 1 + t * 1000, 1000, &[]))
            .collect();
        let mut v = view(&[1, 2, 3], topics);
        let policy = Policy::default();
        let started = std::time::Instant::now();
        let changes = reconcile(&v, &policy);
        assert_eq!(changes.len(), 10_000);
        apply(&mut v, &changes);
        let c = counts(&v);
        assert_eq!(c.values().sum::<usize>(), 10_000);
        let max = c.values().max().copied().unwrap_or(0);
        let min = c.values().min().copied().unwrap_or(0);
        assert!(max - min <= 1, "placement is balanced: {c:?}");
        // Per topic, too (each topic's partitions spread over all brokers).
        for t in 0..10 {
            let name = format!("topic-{t}");
            let mut per: BTreeMap<i32, usize> = BTreeMap::new();
            for (o, _) in v.owners.iter().filter(|(o, _)| o.topic == name) {
                *per.entry(o.broker).or_default() += 1;
            }
            assert!(
                per.values().all(|n| (333..=334).contains(n)),
                "{name}: {per:?}"
            );
        }
        assert!(
            reconcile(&v, &policy).is_empty(),
            "a settled cluster needs no change"
        );
        // A fourth broker joins: rebalance in bounded steps until even, then quiet.
        v.brokers.push(broker(4));
        let mut ticks = 0;
        loop {
            let changes = reconcile(&v, &policy);
            if changes.is_empty() {
                break;
            }
            assert!(changes.len() <= policy.max_moves_per_tick);
            apply(&mut v, &changes);
            complete_moves(&mut v);
            ticks += 1;
            assert!(ticks < 1000, "rebalance does not converge");
        }
        let c = counts(&v);
        let max = c.values().max().copied().unwrap_or(0);
        let min = c.values().min().copied().unwrap_or(0);
        assert!(max - min <= 1, "{c:?}");
        assert_eq!(c.len(), 4);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "reconcile is fast enough for 10k partitions"
        );
    }
}
