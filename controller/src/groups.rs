//! Durable consumer-group state in the [`Metadata`] model: one record per group and the
//! group's committed offsets, one key per (group, topic). Layouts and the escaping of
//! group names in keys are in [`crate::records`]:
//!
//! | key | value | written |
//! |---|---|---|
//! | `groups/{group}` | [`GroupRecord`] | when a rebalance completes ([`Metadata::put_group`]); deleted by [`Metadata::delete_group`] |
//! | `offsets/{group}/{topic}` | [`OffsetsRecord`] | one transaction per OffsetCommit request ([`Metadata::commit_offsets`]) |
//!
//! # Ownership
//!
//! A group's state is written only by its coordinator: the broker that owns the
//! group's slot of `__consumer_offsets` (see `docs/0006-cluster-metadata.md`). Every
//! write takes the coordinator's `fence`, in cluster mode its broker fence
//! ([`Metadata::broker_fence`]), in the same transaction as the write, exactly as
//! object commits do; `None` on a single node. A coordinator whose registration is gone
//! or was replaced gets [`MetaError::Fenced`] and writes nothing. Every write method
//! checks the fence even when it has nothing to change, so a deposed coordinator always
//! learns it is deposed. (The fence is the broker's registration, not the slot's owner
//! record: a live coordinator that hands its slot over must stop writing group state
//! itself, as it stops producing to a partition it hands over.)
//!
//! # Invariants
//!
//! - Group names are any string of at most [`MAX_GROUP_NAME_BYTES`] bytes (Kafka's
//!   longest string), escaped in keys by [`records::escape_group_name`]; topic names are
//!   valid Kafka topic names ([`validate_topic_name`]); partition indices are ≥ 0.
//! - An `offsets/…` value is never empty: removing its last partition deletes the key.
//! - Offsets are merged, never replaced: [`Metadata::commit_offsets`] reads the touched
//!   topics' records, merges, and writes them back in ONE transaction with a version
//!   compare on every record (compare-absent for new ones) plus the fence, retrying at
//!   most [`MAX_CAS_ATTEMPTS`] times if another writer moved one of them. Hence at most
//!   [`MAX_OFFSET_COMMIT_TOPICS`] (127) topics per call: one compare per topic plus the
//!   fence fit etcd's 128 compares per transaction. Larger calls fail with
//!   [`MetaError::InvalidArgument`]; the caller splits them (each part is atomic).
//! - Every value stays below [`crate::MAX_VALUE_BYTES`] (1 MiB) and every transaction
//!   (keys, compares and values together) below [`MAX_GROUP_TXN_BYTES`] (1.25 MiB, under
//!   etcd's default 1.5 MiB request limit), on every store: a write that would exceed
//!   either fails with [`MetaError::TooLarge`] and writes nothing. With at most 8192
//!   partitions per topic an offsets value without metadata is < 1 MiB
//!   ([`BOUND_COMMITTED_OFFSET_BYTES`] per partition); the metadata strings clients
//!   attach are what can make it larger, so the broker bounds them (Kafka's
//!   `offset.metadata.max.bytes`, 4096 by default).
//! - [`Metadata::delete_group`] deletes the record and every offsets key in one
//!   transaction when they fit (up to 127 topics with offsets); otherwise the offsets go
//!   first in chunks and the record in the last transaction, and a retry after an
//!   interruption finishes the job (the group stays listed until then).
//!
//! # Size
//!
//! Group state grows with the number of groups and the topics they commit to, not with
//! traffic: a commit overwrites its partitions' entries. With `R` the root length and
//! `|x|` the JSON-escaped length of a string (`|g|` the escaped group name), a group
//! costs at most
//!
//! ```text
//! R + 142 + |g| + |protocol_type| + |protocol| + |leader| + Σ_static_members (|instance id| + |member id| + 6)
//! + Σ_topics with offsets (R + 32 + |g| + |topic| + Σ_partitions (122 + |metadata|))
//! ```
//!
//! ([`BOUND_GROUP_BYTES`], [`BOUND_OFFSETS_TOPIC_BYTES`], [`BOUND_COMMITTED_OFFSET_BYTES`],
//! checked by unit tests against maximal records). Expiring the offsets of empty groups
//! (and deleting groups left with nothing) is the coordinator's job.
//!
//! [`list_group_names`](Metadata::list_group_names) reads every group record and every
//! offsets value (stores have no keys-only listing), so it costs the whole size above;
//! it is meant for ListGroups and sweeps, not for hot paths.

use std::collections::{BTreeMap, BTreeSet};

use crate::metadata::{MAX_CAS_ATTEMPTS, validate_topic_name};
use crate::records::{self, GROUPS_PREFIX, OFFSETS_PREFIX};
pub use crate::records::{CommittedOffset, GroupRecord, OffsetsRecord};
use crate::store::{Compare, MAX_TXN_OPS, Op, Txn};
use crate::{MetaError, Metadata};

/// Longest group name accepted, in bytes: Kafka's longest protocol string (`i16::MAX`).
pub const MAX_GROUP_NAME_BYTES: usize = 32_767;

/// Most topics one [`Metadata::commit_offsets`] call may carry: one version compare per
/// topic plus the fence within [`MAX_TXN_OPS`] compares.
pub const MAX_OFFSET_COMMIT_TOPICS: usize = MAX_TXN_OPS - 1;

/// Largest transaction the group methods send, in bytes of keys (of compares and ops)
/// and values: 1.25 MiB, leaving etcd's default 1.5 MiB request limit a margin for
/// framing.
pub const MAX_GROUP_TXN_BYTES: usize = 1_310_720;

/// Fixed bytes of one group record, key included; plus `R`, the escaped name, the
/// strings and the static members (see the module docs).
pub const BOUND_GROUP_BYTES: usize = 142;
/// Fixed bytes of one `offsets/{group}/{topic}` key and its empty value; plus `R`, the
/// escaped group name, the topic name and the partitions.
pub const BOUND_OFFSETS_TOPIC_BYTES: usize = 32;
/// Bytes of one partition's entry in an offsets value; plus its metadata string.
pub const BOUND_COMMITTED_OFFSET_BYTES: usize = 122;

fn check_group_name(group: &str) -> Result<(), MetaError> {
    if group.len() > MAX_GROUP_NAME_BYTES {
        return Err(MetaError::InvalidArgument(format!(
            "group name is {} bytes, the limit is {MAX_GROUP_NAME_BYTES}",
            group.len()
        )));
    }
    Ok(())
}

/// Bytes of keys and values a transaction sends.
fn txn_bytes(txn: &Txn) -> usize {
    let compares: usize = txn.compares.iter().map(|c| c.key().len()).sum();
    let ops: usize = txn
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
        })
        .sum();
    compares + ops
}

fn with_fence(txn: Txn, fence: Option<&Compare>) -> Txn {
    match fence {
        Some(fence) => txn.when(fence.clone()),
        None => txn,
    }
}

fn fenced(fence: Option<&Compare>) -> MetaError {
    match fence {
        Some(fence) => MetaError::Fenced {
            key: fence.key().to_owned(),
        },
        // Without a fence, a transaction of these methods has no compare that can fail.
        None => MetaError::Conflict("an unconditional group write was not applied".into()),
    }
}

impl Metadata {
    /// Sends a group transaction after checking [`MAX_GROUP_TXN_BYTES`].
    async fn group_txn(&self, txn: Txn) -> Result<bool, MetaError> {
        let bytes = txn_bytes(&txn);
        if bytes > MAX_GROUP_TXN_BYTES {
            return Err(MetaError::TooLarge(format!(
                "the group transaction would be {bytes} bytes of keys and values, the limit is {MAX_GROUP_TXN_BYTES}"
            )));
        }
        self.txn(txn).await
    }

    /// Whether `fence` holds now (`None` always does).
    async fn fence_holds(&self, fence: Option<&Compare>) -> Result<bool, MetaError> {
        let Some(fence) = fence else {
            return Ok(true);
        };
        let current = self.store().get(fence.key()).await?.map(|kv| kv.version);
        Ok(fence.holds(current))
    }

    /// `Ok(())` if `fence` holds, else [`MetaError::Fenced`].
    async fn require_fence(&self, fence: Option<&Compare>) -> Result<(), MetaError> {
        if self.fence_holds(fence).await? {
            Ok(())
        } else {
            Err(fenced(fence))
        }
    }

    /// The record of `group` and its version, if it has one.
    pub async fn get_group(&self, group: &str) -> Result<Option<(GroupRecord, u64)>, MetaError> {
        check_group_name(group)?;
        self.read(&records::group_key(group)).await
    }

    /// Creates or replaces the record of `group`, in one transaction with `fence`
    /// ([`MetaError::Fenced`] if it fails, nothing written). [`MetaError::TooLarge`] if
    /// the value would be 1 MiB or more.
    pub async fn put_group(
        &self,
        group: &str,
        record: &GroupRecord,
        fence: Option<Compare>,
    ) -> Result<(), MetaError> {
        check_group_name(group)?;
        let key = self.key(&records::group_key(group));
        let value = records::encode(&key, record)?;
        let txn = with_fence(Txn::new(), fence.as_ref()).put(key, value);
        if !self.group_txn(txn).await? {
            return Err(fenced(fence.as_ref()));
        }
        tracing::debug!(group, generation = record.generation, "stored group record");
        Ok(())
    }

    /// The name of every group with a record or committed offsets (or both), sorted,
    /// each once. Keys that are not what this module writes are skipped with a warning.
    pub async fn list_group_names(&self) -> Result<Vec<String>, MetaError> {
        let mut names = BTreeSet::new();
        let groups_prefix = self.key(GROUPS_PREFIX);
        for kv in self.store().list(&groups_prefix).await? {
            let name = kv
                .key
                .strip_prefix(groups_prefix.as_str())
                .and_then(records::unescape_group_name);
            match name {
                Some(name) => {
                    names.insert(name);
                }
                None => {
                    tracing::warn!(key = %kv.key, "ignoring a key under groups/ that is not an escaped group name")
                }
            }
        }
        let offsets_prefix = self.key(OFFSETS_PREFIX);
        for kv in self.store().list(&offsets_prefix).await? {
            let name = kv
                .key
                .strip_prefix(offsets_prefix.as_str())
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(group, _topic)| records::unescape_group_name(group));
            match name {
                Some(name) => {
                    names.insert(name);
                }
                None => {
                    tracing::warn!(key = %kv.key, "ignoring a key under offsets/ that is not offsets/{{group}}/{{topic}}")
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Merges `offsets` (topic → partition → offset) into `group`'s stored offsets in
    /// ONE transaction: reads the touched topics' records, merges (a partition's new
    /// entry replaces its old one; other partitions are kept), and writes one put per
    /// topic with a version compare on each (compare-absent for a new one) and `fence`.
    /// If another writer moved a record meanwhile it re-reads and retries, at most
    /// [`MAX_CAS_ATTEMPTS`] times ([`MetaError::Conflict`] then).
    ///
    /// Errors, all with nothing written: [`MetaError::Fenced`] if `fence` fails;
    /// [`MetaError::InvalidArgument`] for more than [`MAX_OFFSET_COMMIT_TOPICS`] topics,
    /// a negative partition or a group name over [`MAX_GROUP_NAME_BYTES`];
    /// [`MetaError::InvalidTopicName`] for a topic Kafka would reject;
    /// [`MetaError::TooLarge`] if a merged value would be 1 MiB or more, or the
    /// transaction over [`MAX_GROUP_TXN_BYTES`]. Topics with no partitions are ignored;
    /// with nothing to commit only the fence is checked.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<String, BTreeMap<i32, CommittedOffset>>,
        fence: Option<Compare>,
    ) -> Result<(), MetaError> {
        check_group_name(group)?;
        if offsets.len() > MAX_OFFSET_COMMIT_TOPICS {
            return Err(MetaError::InvalidArgument(format!(
                "an offset commit of group {group:?} names {} topics, the limit per call is {MAX_OFFSET_COMMIT_TOPICS}",
                offsets.len()
            )));
        }
        for (topic, partitions) in offsets {
            validate_topic_name(topic)?;
            if let Some(p) = partitions.keys().find(|p| **p < 0) {
                return Err(MetaError::InvalidArgument(format!(
                    "an offset commit of group {group:?} names partition {p} of topic {topic:?} (partitions are >= 0)"
                )));
            }
        }
        let topics: Vec<(&String, &BTreeMap<i32, CommittedOffset>)> =
            offsets.iter().filter(|(_, p)| !p.is_empty()).collect();
        if topics.is_empty() {
            return self.require_fence(fence.as_ref()).await;
        }
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = futures::future::try_join_all(topics.iter().map(|(topic, _)| {
                let relative = records::offsets_key(group, topic);
                async move { self.read::<OffsetsRecord>(&relative).await }
            }))
            .await?;
            let mut txn = with_fence(Txn::new(), fence.as_ref());
            for ((topic, new), stored) in topics.iter().zip(current) {
                let relative = records::offsets_key(group, topic);
                let (mut record, version) = match stored {
                    Some((record, version)) => (record, Some(version)),
                    None => (OffsetsRecord::default(), None),
                };
                record
                    .partitions
                    .extend(new.iter().map(|(p, o)| (*p, o.clone())));
                let key = self.key(&relative);
                let value = records::encode(&key, &record)?;
                txn = self.pin(txn, &relative, version).put(key, value);
            }
            if self.group_txn(txn).await? {
                tracing::debug!(group, topics = topics.len(), "committed offsets");
                return Ok(());
            }
            self.require_fence(fence.as_ref()).await?;
            tokio::task::yield_now().await;
        }
        Err(MetaError::Conflict(format!(
            "committing offsets of group {group:?}: its offsets kept changing"
        )))
    }

    /// Every committed offset of `group`: topic → partition → offset. Empty if it has
    /// none.
    pub async fn fetch_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<String, BTreeMap<i32, CommittedOffset>>, MetaError> {
        check_group_name(group)?;
        let prefix = self.key(&records::group_offsets_prefix(group));
        let mut out = BTreeMap::new();
        for kv in self.store().list(&prefix).await? {
            let Some(topic) = kv.key.strip_prefix(prefix.as_str()) else {
                continue;
            };
            if validate_topic_name(topic).is_err() {
                return Err(MetaError::corrupt(
                    &kv.key,
                    "the key is not offsets/{group}/{topic} with a valid topic name",
                ));
            }
            let record: OffsetsRecord = records::decode(&kv.key, &kv.value)?;
            if !record.partitions.is_empty() {
                out.insert(topic.to_owned(), record.partitions);
            }
        }
        Ok(out)
    }

    /// Every group's committed offsets, from one snapshot: (group, topic, partition →
    /// offset), sorted by group then topic. Keys that are not what this module writes
    /// are skipped with a warning. The consumer-lag monitor reads this periodically.
    pub async fn list_all_offsets(
        &self,
    ) -> Result<Vec<(String, String, BTreeMap<i32, CommittedOffset>)>, MetaError> {
        let prefix = self.key(OFFSETS_PREFIX);
        let mut out = Vec::new();
        for kv in self.store().list(&prefix).await? {
            let parsed = kv
                .key
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(group, topic)| {
                    let group = records::unescape_group_name(group)?;
                    validate_topic_name(topic).ok()?;
                    Some((group, topic.to_owned()))
                });
            let Some((group, topic)) = parsed else {
                tracing::warn!(key = %kv.key, "ignoring a key under offsets/ that is not offsets/{{group}}/{{topic}}");
                continue;
            };
            let record: OffsetsRecord = records::decode(&kv.key, &kv.value)?;
            if !record.partitions.is_empty() {
                out.push((group, topic, record.partitions));
            }
        }
        Ok(out)
    }

    /// Removes `partitions` of `topic` from `group`'s committed offsets (deleting the key
    /// when none are left), with a version compare and `fence`; retried like
    /// [`Metadata::commit_offsets`]. Partitions without an offset are ignored; with
    /// nothing to remove only the fence is checked. [`MetaError::Fenced`] if `fence`
    /// fails (nothing written).
    pub async fn delete_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
        fence: Option<Compare>,
    ) -> Result<(), MetaError> {
        self.remove_offsets(group, topic, |p, _| partitions.contains(&p), fence)
            .await
            .map(|_| ())
    }

    /// Offset expiry: removes each partition of `expired` (partition → the `commit_ms`
    /// the sweeper saw) only if its stored entry still carries that commit time, in the
    /// same version-compared transaction, so a commit that lands while the sweeper
    /// decides is never removed. Returns how many were removed. Fenced like
    /// [`Metadata::delete_offsets`].
    pub async fn expire_offsets(
        &self,
        group: &str,
        topic: &str,
        expired: &BTreeMap<i32, i64>,
        fence: Option<Compare>,
    ) -> Result<usize, MetaError> {
        self.remove_offsets(
            group,
            topic,
            |p, o| expired.get(&p) == Some(&o.commit_ms),
            fence,
        )
        .await
    }

    /// Removes the partitions `doomed` selects (read-modify-write under a version
    /// compare and `fence`, retried); returns how many were removed.
    async fn remove_offsets(
        &self,
        group: &str,
        topic: &str,
        doomed: impl Fn(i32, &CommittedOffset) -> bool,
        fence: Option<Compare>,
    ) -> Result<usize, MetaError> {
        check_group_name(group)?;
        validate_topic_name(topic)?;
        let relative = records::offsets_key(group, topic);
        let key = self.key(&relative);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some((mut record, version)) = self.read::<OffsetsRecord>(&relative).await? else {
                return self.require_fence(fence.as_ref()).await.map(|_| 0);
            };
            let before = record.partitions.len();
            record.partitions.retain(|p, o| !doomed(*p, o));
            let removed = before - record.partitions.len();
            if removed == 0 {
                return self.require_fence(fence.as_ref()).await.map(|_| 0);
            }
            let txn = with_fence(
                Txn::new().when_version(key.clone(), version),
                fence.as_ref(),
            );
            let txn = if record.partitions.is_empty() {
                txn.delete(key.clone())
            } else {
                let value = records::encode(&key, &record)?;
                txn.put(key.clone(), value)
            };
            if self.group_txn(txn).await? {
                tracing::debug!(
                    group,
                    topic,
                    left = record.partitions.len(),
                    "deleted offsets"
                );
                return Ok(removed);
            }
            self.require_fence(fence.as_ref()).await?;
            tokio::task::yield_now().await;
        }
        Err(MetaError::Conflict(format!(
            "deleting offsets of group {group:?}, topic {topic:?}: they kept changing"
        )))
    }

    /// Deletes only `group`'s record (not its offsets), guarded by `fence`: the offset
    /// sweeper's last step for a group whose offsets all expired, which must not take
    /// along offsets committed meanwhile. Absent already: only the fence is checked.
    pub async fn delete_group_record(
        &self,
        group: &str,
        fence: Option<Compare>,
    ) -> Result<(), MetaError> {
        check_group_name(group)?;
        let key = self.key(&records::group_key(group));
        if self.store().get(&key).await?.is_none() {
            return self.require_fence(fence.as_ref()).await;
        }
        let txn = with_fence(Txn::new().delete(key), fence.as_ref());
        if self.group_txn(txn).await? {
            return Ok(());
        }
        self.require_fence(fence.as_ref()).await
    }

    /// Deletes `group`'s record and all its committed offsets, guarded by `fence`. One
    /// transaction when they fit (record + up to 127 offsets keys, under
    /// [`MAX_GROUP_TXN_BYTES`]); otherwise offsets keys go first, in transactions of at
    /// most [`MAX_TXN_OPS`] deletes, and the record goes in the last one, so an
    /// interrupted delete leaves the group listed and a retry finishes it. A group with
    /// nothing stored only checks the fence. [`MetaError::Fenced`] if `fence` fails
    /// (that transaction and all later ones are not applied).
    pub async fn delete_group(&self, group: &str, fence: Option<Compare>) -> Result<(), MetaError> {
        check_group_name(group)?;
        let record_key = self.key(&records::group_key(group));
        let prefix = self.key(&records::group_offsets_prefix(group));
        let mut keys: Vec<String> = self
            .store()
            .list(&prefix)
            .await?
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        let offsets_keys = keys.len();
        if self.store().get(&record_key).await?.is_some() {
            keys.push(record_key);
        }
        if keys.is_empty() {
            return self.require_fence(fence.as_ref()).await;
        }
        let fence_bytes = fence.as_ref().map_or(0, |f| f.key().len());
        let mut pending = keys.into_iter().peekable();
        let mut txns = 0;
        while pending.peek().is_some() {
            let mut txn = with_fence(Txn::new(), fence.as_ref());
            let mut bytes = fence_bytes;
            while let Some(key) = pending.peek() {
                let full = txn.ops.len() >= MAX_TXN_OPS;
                let over = !txn.ops.is_empty() && bytes + key.len() > MAX_GROUP_TXN_BYTES;
                if full || over {
                    break;
                }
                bytes += key.len();
                if let Some(key) = pending.next() {
                    txn = txn.delete(key);
                }
            }
            if !self.group_txn(txn).await? {
                return Err(fenced(fence.as_ref()));
            }
            txns += 1;
        }
        tracing::info!(group, offsets_keys, txns, "deleted group");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I32: i32 = i32::MIN;
    const I64: i64 = i64::MIN;

    fn len<T: serde::Serialize>(record: &T) -> usize {
        records::encode("k", record)
            .map(|b| b.len())
            .unwrap_or(usize::MAX)
    }

    fn offset(metadata: Option<String>) -> CommittedOffset {
        CommittedOffset {
            offset: I64,
            leader_epoch: I32,
            metadata,
            commit_ms: I64,
        }
    }

    #[test]
    fn bound_constants_cover_maximal_records() {
        let empty = GroupRecord {
            protocol_type: String::new(),
            generation: I32,
            protocol: None,
            leader: None,
            static_members: BTreeMap::new(),
            updated_ms: I64,
        };
        let group = len(&empty) + records::group_key("").len();
        assert!(group <= BOUND_GROUP_BYTES, "{group}");
        // A static member costs its two strings plus 6 (quotes, colon, comma).
        let one = len(&GroupRecord {
            static_members: BTreeMap::from([(String::new(), String::new())]),
            ..empty.clone()
        });
        let two = len(&GroupRecord {
            static_members: BTreeMap::from([
                ("a".to_owned(), String::new()),
                ("b".to_owned(), String::new()),
            ]),
            ..empty.clone()
        });
        assert!(one - len(&empty) <= 6 && two - one - 2 <= 6);
        // Some("") is shorter than null, so a string costs at most its length.
        let with_strings = len(&GroupRecord {
            protocol: Some(String::new()),
            leader: Some(String::new()),
            ..empty.clone()
        });
        assert!(with_strings <= len(&empty));

        let topic = len(&OffsetsRecord::default()) + records::offsets_key("", "").len();
        assert!(topic <= BOUND_OFFSETS_TOPIC_BYTES, "{topic}");
        let one = OffsetsRecord {
            partitions: BTreeMap::from([(I32, offset(None))]),
        };
        let two = OffsetsRecord {
            partitions: BTreeMap::from([(I32, offset(None)), (i32::MAX, offset(None))]),
        };
        // Each entry's share, separator included (`-2147483648` is the widest key).
        let entry = (len(&two) - len(&OffsetsRecord::default())).div_ceil(2) + 1;
        assert!(entry <= BOUND_COMMITTED_OFFSET_BYTES, "{entry}");
        assert!(len(&one) - len(&OffsetsRecord::default()) <= BOUND_COMMITTED_OFFSET_BYTES);
        let with_metadata = OffsetsRecord {
            partitions: BTreeMap::from([(I32, offset(Some(String::new())))]),
        };
        assert!(len(&with_metadata) <= len(&one));
        // The largest topic without metadata stays under the value limit.
        assert!(
            crate::metadata::MAX_PARTITIONS as usize * BOUND_COMMITTED_OFFSET_BYTES
                + BOUND_OFFSETS_TOPIC_BYTES
                < crate::MAX_VALUE_BYTES
        );
    }

    #[test]
    fn group_names_round_trip_through_keys() {
        let names = [
            "",
            "g",
            "a/b",
            "/",
            "//x//",
            "%",
            "100%",
            "a%2Fb",
            "%25",
            "tab\there\nnew\r\0nul",
            "del\u{7f}c1\u{85}\u{9f}",
            "grüppe 日本 🎉",
            "spaces and . dots ..",
        ];
        for name in names {
            let escaped = records::escape_group_name(name);
            assert!(!escaped.contains('/'), "{escaped:?}");
            assert!(!escaped.chars().any(char::is_control), "{escaped:?}");
            assert_eq!(
                records::unescape_group_name(&escaped).as_deref(),
                Some(name),
                "{name:?}"
            );
        }
        let distinct: BTreeSet<String> = names
            .iter()
            .map(|n| records::escape_group_name(n))
            .collect();
        assert_eq!(distinct.len(), names.len(), "escaping is injective");
    }

    #[test]
    fn unescape_rejects_what_escape_never_writes() {
        for segment in [
            "a/b",    // unescaped '/'
            "%",      // truncated
            "%2",     // truncated
            "%2f",    // lower-case hex
            "%G0",    // not hex
            "%41",    // 'A' needs no escape
            "%C3%A9", // 'é' needs no escape
            "%FF",    // not UTF-8
            "%C2",    // truncated UTF-8
            "tab\t",  // unescaped control character
        ] {
            assert_eq!(records::unescape_group_name(segment), None, "{segment:?}");
        }
    }

    /// The broker drives these from spawned tasks: every future must be `Send`.
    #[test]
    fn futures_are_send() {
        fn send<T: Send>(_: T) {}
        let meta = Metadata::new(std::sync::Arc::new(crate::MemoryMetaStore::new()), "/r/");
        let record = GroupRecord::default();
        let offsets = BTreeMap::new();
        send(meta.get_group("g"));
        send(meta.put_group("g", &record, None));
        send(meta.list_group_names());
        send(meta.commit_offsets("g", &offsets, None));
        send(meta.fetch_offsets("g"));
        send(meta.list_all_offsets());
        send(meta.delete_offsets("g", "t", &[0], None));
        send(meta.delete_group("g", None));
        send(meta.delete_group_record("g", None));
        send(meta.expire_offsets("g", "t", &BTreeMap::new(), None));
    }

    #[test]
    fn txn_bytes_counts_keys_compares_and_values() {
        let txn = Txn::new()
            .when_version("abc", 1)
            .put("de", "fgh")
            .delete("ij");
        assert_eq!(txn_bytes(&txn), 3 + 2 + 3 + 2);
    }
}
