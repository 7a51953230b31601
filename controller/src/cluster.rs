//! Cluster membership and partition ownership in the [`Metadata`] model: broker
//! registrations, load reports, the controller election key, owner records, drains,
//! and the `changes` key. Layouts are in [`crate::records`]; the protocol around them
//! (sessions, election, handover, fencing, failover) is described in
//! `docs/0006-cluster-metadata.md`.
//!
//! # Invariants
//!
//! - `brokers/{id}`, `load/{id}` and `controller` are put only with a lease
//!   ([`Txn::put_with_lease`]): they vanish when their holder's session ends.
//! - `brokers/{id}` is created with a compare-absent: at most one live registration per
//!   broker id. Its version is the broker's **fence**: every object commit of the broker
//!   compares it ([`Metadata::broker_fence`]), so once the session lease expires (the key
//!   is deleted) or the broker re-registers (new version), commits made under the old
//!   registration fail with [`MetaError::Fenced`].
//! - `controller` is created with a compare-absent; the controller guards every owner
//!   change it makes with a version compare on it.
//! - Every change of `owners/*` is a compare on that owner record's version (0 = absent)
//!   and carries the put of `changes` ([`Metadata::apply_owner_changes`]).
//!
//! # Bound on the live metadata
//!
//! Nothing in the store grows with time or traffic, only with the cluster's shape
//! (consumer-group state, which grows with the number of groups, is bounded separately
//! in [`crate::groups`] and not included below). With `R` the root prefix length (`/cirrus/` = 8), `|x|` the JSON-escaped length of a
//! string, `P` partitions, `B` live brokers, `D` drains, `W` index writers and `O_w`
//! objects of writer `w` since its last checkpoint (< 256 plus cleanup leftovers), the
//! total size of all keys and values under the root is at most
//!
//! ```text
//! bytes ≤ 5·R + 289 + |controller incarnation|                 cluster, 2 counters, changes, controller
//!       + Σ_topics     (R + 137 + 2·|name| + Σ_configs (|k| + |v| + 6))
//!       + Σ_partitions (R + 289 + |topic name|)                 owner record + entry in the topic record
//!       + Σ_brokers    (2·R + 389 + |host| + |admin_addr| + |incarnation|)   brokers/ + load/
//!       + D·(R + 81)
//!       + Σ_writers    (R + 101 + |checkpoint blob key| + O_w · object record bytes)
//! ```
//!
//! The constants are the largest encodings of each record's fixed part (every integer
//! at its widest, floats at 24 characters); they are [`BOUND_FIXED_BYTES`],
//! [`BOUND_TOPIC_BYTES`], [`BOUND_PARTITION_BYTES`], [`BOUND_BROKER_BYTES`],
//! [`BOUND_DRAIN_BYTES`] and [`BOUND_CHECKPOINT_BYTES`], checked by unit tests against
//! maximal records. For 10 topics × 1,000 partitions with 10-character names on 3
//! brokers that is about 10,000 × 307 B ≈ 3.1 MB (the test
//! `tests/cluster.rs::live_metadata_for_10k_partitions_stays_small` measures ~2 MB),
//! three orders of magnitude under etcd's default 2 GiB quota; each partition costs
//! one owner key, and each object record lives only until its writer's next
//! checkpoint.

use std::collections::BTreeSet;

use crate::metadata::MAX_CAS_ATTEMPTS;
use crate::records::{
    self, BROKERS_PREFIX, BrokerLoad, BrokerRecord, CHANGES_KEY, CONTROLLER_KEY, ControllerRecord,
    DRAINS_PREFIX, DrainRecord, LOADS_PREFIX, OWNERS_PREFIX, OwnerRecord,
};
use crate::store::{Compare, LeaseId, MAX_TXN_OPS, Txn};
use crate::{Entity, MetaError, Metadata};

/// Fixed bytes of the cluster-wide keys (see the module docs): cluster record, both
/// counters, `changes`, and `controller` without its incarnation; plus `5·R`.
pub const BOUND_FIXED_BYTES: usize = 289;
/// Fixed bytes of one topic record; plus `R + 2·|name|` and its configs.
pub const BOUND_TOPIC_BYTES: usize = 137;
/// Bytes of one partition: its owner record (key and value, without the topic name)
/// and its entry in the topic record; plus `R + |topic name|`.
pub const BOUND_PARTITION_BYTES: usize = 289;
/// Fixed bytes of one live broker's `brokers/` and `load/` keys; plus `2·R` and its
/// host, admin address and incarnation.
pub const BOUND_BROKER_BYTES: usize = 389;
/// Bytes of one drain record; plus `R`.
pub const BOUND_DRAIN_BYTES: usize = 81;
/// Fixed bytes of one writer's checkpoint pointer; plus `R` and the blob key.
pub const BOUND_CHECKPOINT_BYTES: usize = 101;

/// One change to an owner record, applied with a compare on the record's version by
/// [`Metadata::apply_owner_changes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerChange {
    /// Create or replace the owner record of `record.stream_id`.
    Put {
        /// The new record.
        record: OwnerRecord,
        /// The version the current record must have; 0 = it must be absent.
        expected_version: u64,
    },
    /// Delete the owner record of `stream_id`.
    Delete {
        /// The partition's stream id.
        stream_id: u64,
        /// The version the current record must have.
        expected_version: u64,
    },
}

impl OwnerChange {
    /// The stream id whose owner record this changes.
    pub fn stream_id(&self) -> u64 {
        match self {
            OwnerChange::Put { record, .. } => record.stream_id,
            OwnerChange::Delete { stream_id, .. } => *stream_id,
        }
    }

    /// The version the current owner record must have (0 = absent).
    pub fn expected_version(&self) -> u64 {
        match self {
            OwnerChange::Put {
                expected_version, ..
            }
            | OwnerChange::Delete {
                expected_version, ..
            } => *expected_version,
        }
    }
}

fn check_broker_id(what: &str, id: i32) -> Result<(), MetaError> {
    if id < 0 {
        return Err(MetaError::InvalidArgument(format!(
            "{what} {id} is negative (broker ids are >= 0)"
        )));
    }
    Ok(())
}

impl Metadata {
    /// Lists and decodes every record under `prefix`, checking that each sits under the
    /// key `key_of` names for it.
    async fn list_records<T, K>(&self, prefix: &str, key_of: K) -> Result<Vec<(T, u64)>, MetaError>
    where
        T: serde::de::DeserializeOwned,
        K: Fn(&T) -> String,
    {
        let kvs = self.store().list(&self.key(prefix)).await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let record: T = records::decode(&kv.key, &kv.value)?;
            if kv.key != self.key(&key_of(&record)) {
                return Err(MetaError::corrupt(
                    &kv.key,
                    "the record names another key than the one it is stored under",
                ));
            }
            out.push((record, kv.version));
        }
        Ok(out)
    }

    // ---- brokers ------------------------------------------------------------------

    /// Registers a live broker: puts `brokers/{id}` bound to `lease` if absent, and
    /// returns its version (the broker's fence, see [`Metadata::broker_fence`]).
    ///
    /// [`MetaError::AlreadyExists`] (`kind: Broker`) if another registration of that id
    /// is live. If an identical record is present (a retry after a transport error, or
    /// a new session of the same incarnation), it is re-put bound to `lease` and the new
    /// version returned. [`MetaError::LeaseExpired`] if `lease` is not live.
    pub async fn register_broker(
        &self,
        record: &BrokerRecord,
        lease: LeaseId,
    ) -> Result<u64, MetaError> {
        check_broker_id("broker id", record.id)?;
        let relative = records::broker_key(record.id);
        let key = self.key(&relative);
        let value = records::encode(&key, record)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let txn = match self.read::<BrokerRecord>(&relative).await? {
                None => Txn::new().when_absent(key.clone()),
                Some((existing, version)) if existing == *record => {
                    Txn::new().when_version(key.clone(), version)
                }
                Some(_) => {
                    return Err(MetaError::AlreadyExists {
                        kind: Entity::Broker,
                        name: record.id.to_string(),
                    });
                }
            };
            if !self
                .txn(txn.put_with_lease(key.clone(), value.clone(), lease))
                .await?
            {
                tokio::task::yield_now().await;
                continue;
            }
            return match self.read::<BrokerRecord>(&relative).await? {
                Some((now, version)) if now == *record => {
                    tracing::info!(broker = record.id, version, "registered broker");
                    Ok(version)
                }
                // Gone (or replaced) right after the put: the lease expired meanwhile.
                _ => Err(MetaError::LeaseExpired),
            };
        }
        Err(MetaError::Conflict(format!(
            "registering broker {}: its registration key kept changing",
            record.id
        )))
    }

    /// Every live broker with its registration version, sorted by id.
    pub async fn list_brokers(&self) -> Result<Vec<(BrokerRecord, u64)>, MetaError> {
        self.list_records(BROKERS_PREFIX, |r: &BrokerRecord| records::broker_key(r.id))
            .await
    }

    /// The fence for broker `id`'s commits: a [`Compare::Version`] on its registration
    /// key at `version` (as returned by [`Metadata::register_broker`]). Pass it to
    /// [`Metadata::commit_object`].
    pub fn broker_fence(&self, id: i32, version: u64) -> Compare {
        Compare::Version {
            key: self.key(&records::broker_key(id)),
            version,
        }
    }

    /// Publishes (replaces) the broker's load report, bound to `lease`.
    pub async fn publish_load(&self, load: &BrokerLoad, lease: LeaseId) -> Result<(), MetaError> {
        check_broker_id("broker id", load.id)?;
        let key = self.key(&records::load_key(load.id));
        let value = records::encode(&key, load)?;
        self.txn(Txn::new().put_with_lease(key, value, lease))
            .await?;
        Ok(())
    }

    /// Every published load report, sorted by broker id.
    pub async fn list_loads(&self) -> Result<Vec<BrokerLoad>, MetaError> {
        Ok(self
            .list_records(LOADS_PREFIX, |l: &BrokerLoad| records::load_key(l.id))
            .await?
            .into_iter()
            .map(|(l, _)| l)
            .collect())
    }

    // ---- controller election ------------------------------------------------------

    /// Campaigns for the `controller` key: puts it bound to `lease` if absent.
    /// `Some(version)` if this incarnation holds it now (won it, or already held it);
    /// `None` if another incarnation does.
    pub async fn try_become_controller(
        &self,
        record: &ControllerRecord,
        lease: LeaseId,
    ) -> Result<Option<u64>, MetaError> {
        let key = self.key(CONTROLLER_KEY);
        let value = records::encode(&key, record)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let won = self
                .txn(Txn::new().when_absent(key.clone()).put_with_lease(
                    key.clone(),
                    value.clone(),
                    lease,
                ))
                .await?;
            match self.get_controller().await? {
                Some((holder, version)) if holder.incarnation == record.incarnation => {
                    if won {
                        tracing::info!(
                            broker = record.broker_id,
                            incarnation = %record.incarnation,
                            version,
                            "became controller"
                        );
                    }
                    return Ok(Some(version));
                }
                Some(_) => return Ok(None),
                // Vanished between the txn and the read (a lease expired): try again.
                None => tokio::task::yield_now().await,
            }
        }
        Err(MetaError::Conflict(
            "campaigning for controller: the controller key kept changing".into(),
        ))
    }

    /// The current controller and the version of its key, if one is elected.
    pub async fn get_controller(&self) -> Result<Option<(ControllerRecord, u64)>, MetaError> {
        self.read(CONTROLLER_KEY).await
    }

    /// Deletes the controller key if `incarnation` holds it; otherwise does nothing.
    pub async fn resign_controller(&self, incarnation: &str) -> Result<(), MetaError> {
        let key = self.key(CONTROLLER_KEY);
        for _ in 0..MAX_CAS_ATTEMPTS {
            match self.get_controller().await? {
                Some((holder, version)) if holder.incarnation == incarnation => {
                    if self
                        .txn(
                            Txn::new()
                                .when_version(key.clone(), version)
                                .delete(key.clone()),
                        )
                        .await?
                    {
                        tracing::info!(incarnation, "resigned as controller");
                        return Ok(());
                    }
                    tokio::task::yield_now().await;
                }
                _ => return Ok(()),
            }
        }
        Err(MetaError::Conflict(
            "resigning as controller: the controller key kept changing".into(),
        ))
    }

    // ---- ownership ----------------------------------------------------------------

    /// Every owner record with its version, sorted by stream id.
    pub async fn list_owners(&self) -> Result<Vec<(OwnerRecord, u64)>, MetaError> {
        self.list_records(OWNERS_PREFIX, |o: &OwnerRecord| {
            records::owner_key(o.stream_id)
        })
        .await
    }

    /// The owner record of `stream_id` and its version, if any.
    pub async fn get_owner(&self, stream_id: u64) -> Result<Option<(OwnerRecord, u64)>, MetaError> {
        self.read(&records::owner_key(stream_id)).await
    }

    /// The version of `changes`, 0 if absent. It moves on every change of topics or
    /// owners; a broker re-lists them when it does.
    pub async fn changes_version(&self) -> Result<u64, MetaError> {
        Ok(self
            .store()
            .get(&self.key(CHANGES_KEY))
            .await?
            .map_or(0, |kv| kv.version))
    }

    fn owner_txn(&self, changes: &[OwnerChange], guard: &[Compare]) -> Result<Txn, MetaError> {
        let mut txn = Txn {
            compares: guard.to_vec(),
            ops: Vec::new(),
        };
        for change in changes {
            let key = self.key(&records::owner_key(change.stream_id()));
            txn = txn.when_version(key.clone(), change.expected_version());
            txn = match change {
                OwnerChange::Put { record, .. } => {
                    let value = records::encode(&key, record)?;
                    txn.put(key, value)
                }
                OwnerChange::Delete { .. } => txn.delete(key),
            };
        }
        self.with_changes(txn)
    }

    /// Whether every compare of `guard` holds now.
    async fn guard_holds(&self, guard: &[Compare]) -> Result<bool, MetaError> {
        if guard.is_empty() {
            return Ok(true);
        }
        self.txn(Txn {
            compares: guard.to_vec(),
            ops: Vec::new(),
        })
        .await
    }

    /// Applies owner changes with per-key compares, in chunks that fit
    /// [`MAX_TXN_OPS`] (each txn: the `guard` compares, one compare + one op per
    /// change, plus the `changes` put). If a chunk's compares fail and the guard still
    /// holds, it retries that chunk's changes one per txn, so one conflicting change
    /// does not block the rest. Stops as soon as the guard fails. Returns how many
    /// changes were applied.
    ///
    /// [`MetaError::InvalidArgument`] (nothing applied) if a stream id appears twice,
    /// a broker id is negative, or `guard` leaves no room for a change.
    pub async fn apply_owner_changes(
        &self,
        changes: &[OwnerChange],
        guard: &[Compare],
    ) -> Result<usize, MetaError> {
        if changes.is_empty() {
            return Ok(0);
        }
        if guard.len() >= MAX_TXN_OPS {
            return Err(MetaError::InvalidArgument(format!(
                "an owner-change guard of {} compares leaves no room in a {MAX_TXN_OPS}-compare transaction",
                guard.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for change in changes {
            if !seen.insert(change.stream_id()) {
                return Err(MetaError::InvalidArgument(format!(
                    "owner changes name stream {} twice",
                    change.stream_id()
                )));
            }
            if let OwnerChange::Put { record, .. } = change {
                check_broker_id("owner broker", record.broker)?;
                if let Some(to) = record.moving_to {
                    check_broker_id("move destination broker", to)?;
                }
            }
        }
        // Ops: one per change + the `changes` put; compares: guard + one per change.
        let per_txn = (MAX_TXN_OPS - 1).min(MAX_TXN_OPS - guard.len());
        let mut applied = 0;
        for chunk in changes.chunks(per_txn) {
            if self.txn(self.owner_txn(chunk, guard)?).await? {
                applied += chunk.len();
                continue;
            }
            if !self.guard_holds(guard).await? {
                tracing::info!(applied, "owner changes stopped: the guard no longer holds");
                return Ok(applied);
            }
            for change in chunk {
                if self
                    .txn(self.owner_txn(std::slice::from_ref(change), guard)?)
                    .await?
                {
                    applied += 1;
                } else {
                    tracing::debug!(
                        stream_id = change.stream_id(),
                        "owner change lost its compare"
                    );
                    if !self.guard_holds(guard).await? {
                        return Ok(applied);
                    }
                }
            }
        }
        Ok(applied)
    }

    // ---- drains -------------------------------------------------------------------

    /// Requests (`drain = true`) or cancels a drain of `broker`. Idempotent: draining a
    /// draining broker keeps the original request time.
    pub async fn set_drain(&self, broker: i32, drain: bool) -> Result<(), MetaError> {
        check_broker_id("drained broker", broker)?;
        let key = self.key(&records::drain_key(broker));
        let txn = if drain {
            let record = DrainRecord {
                broker,
                requested_ms: self.now_ms(),
            };
            Txn::new()
                .when_absent(key.clone())
                .put(key.clone(), records::encode(&key, &record)?)
        } else {
            Txn::new().delete(key)
        };
        // A failed compare means the broker is already draining: nothing to do.
        self.txn(txn).await?;
        Ok(())
    }

    /// The brokers with a drain request.
    pub async fn list_drains(&self) -> Result<BTreeSet<i32>, MetaError> {
        Ok(self
            .list_records(DRAINS_PREFIX, |d: &DrainRecord| {
                records::drain_key(d.broker)
            })
            .await?
            .into_iter()
            .map(|(d, _)| d.broker)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{
        ChangesRecord, CheckpointRecord, ClusterRecord, CounterRecord, PartitionRecord, TopicRecord,
    };

    const I32: i32 = i32::MIN;
    const I64: i64 = i64::MIN;
    const F64: f64 = -1.797_693_134_862_315_7e308;

    fn len<T: serde::Serialize>(record: &T) -> usize {
        records::encode("k", record)
            .map(|b| b.len())
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn bound_constants_cover_maximal_records() {
        let controller = ControllerRecord {
            broker_id: I32,
            incarnation: String::new(),
            elected_ms: I64,
        };
        let fixed = len(&ClusterRecord {
            cluster_id: "x".repeat(22),
        }) + records::CLUSTER_KEY.len()
            + 2 * len(&CounterRecord { next: u64::MAX })
            + records::STREAM_ID_COUNTER_KEY.len()
            + records::PRODUCER_IDS_KEY.len()
            + len(&ChangesRecord { ms: I64 })
            + CHANGES_KEY.len()
            + len(&controller)
            + CONTROLLER_KEY.len();
        assert!(fixed <= BOUND_FIXED_BYTES, "{fixed}");

        let topic = |partitions: Vec<PartitionRecord>| TopicRecord {
            name: String::new(),
            topic_id: uuid::Uuid::nil(),
            partitions,
            configs: Default::default(),
            created_ms: I64,
        };
        let empty_topic = len(&topic(vec![])) + records::topic_key("").len();
        assert!(empty_topic <= BOUND_TOPIC_BYTES, "{empty_topic}");
        let entry = PartitionRecord {
            index: I32,
            stream_id: u64::MAX,
            leader_epoch: I32,
            log_start_offset: I64,
        };
        // The entry's share of the topic value, separator included.
        let in_topic = len(&topic(vec![entry.clone(), entry])) - len(&topic(vec![])) + 1;
        let in_topic = in_topic.div_ceil(2);
        let owner = OwnerRecord {
            stream_id: u64::MAX,
            topic: String::new(),
            partition: I32,
            broker: I32,
            epoch: I32,
            moving_to: Some(I32),
        };
        let partition = in_topic + len(&owner) + records::owner_key(u64::MAX).len();
        assert!(partition <= BOUND_PARTITION_BYTES, "{partition}");

        let broker = BrokerRecord {
            id: I32,
            host: String::new(),
            port: I32,
            admin_addr: String::new(),
            incarnation: String::new(),
            durability: "object".into(),
            started_ms: I64,
        };
        let load = BrokerLoad {
            id: I32,
            bytes_in_per_sec: F64,
            bytes_out_per_sec: F64,
            partitions: u32::MAX,
            cpu_cores_used: F64,
            measured_ms: I64,
            hot_partitions: Vec::new(),
        };
        let per_broker =
            len(&broker) + records::broker_key(0).len() + len(&load) + records::load_key(0).len();
        assert!(per_broker <= BOUND_BROKER_BYTES, "{per_broker}");

        let drain = len(&DrainRecord {
            broker: I32,
            requested_ms: I64,
        }) + records::drain_key(0).len();
        assert!(drain <= BOUND_DRAIN_BYTES, "{drain}");

        let checkpoint = len(&CheckpointRecord {
            through_seq: u64::MAX,
            key: String::new(),
            written_ms: I64,
        }) + records::checkpoint_key(0).len();
        assert!(checkpoint <= BOUND_CHECKPOINT_BYTES, "{checkpoint}");
    }
}
