//! The persisted metadata records, their keys, and their JSON encoding.
//!
//! Every value is a JSON object whose first field is `"v": 1` (the layout version),
//! followed by the record's fields in declaration order. Decoding rejects any other
//! `"v"` with [`MetaError::Corrupt`] naming the key. The layouts below are pinned by
//! golden tests (`tests/golden.rs`); changing one is a format change and needs a new
//! `"v"` and a migration.
//!
//! # Keys and values (all keys below the root prefix, e.g. `/cirrus/`)
//!
//! | key | value |
//! |---|---|
//! | `cluster` | [`ClusterRecord`]: `{"v":1,"cluster_id":"<22 chars base64url>"}` |
//! | `topics/{name}` | [`TopicRecord`]: `{"v":1,"name":…,"topic_id":"<uuid>","partitions":[{"index":0,"stream_id":1,"leader_epoch":0,"log_start_offset":0},…],"configs":{…},"created_ms":…}` |
//! | `counters/stream_id` | [`CounterRecord`]: `{"v":1,"next":N}`, the next unallocated stream id (ids start at 1) |
//! | `producer_ids/next` | [`CounterRecord`]: `{"v":1,"next":N}`, the next unallocated producer id (ids start at 0) |
//! | `objects/{writer:010}/{seq:020}` | [`ObjectRecord`]: `{"v":1,"seq":…,"key":…,"size":…,"writer":…,"committed_ms":…,"runs":[{"stream_id":…,"first_offset":…,"last_offset":…,"max_timestamp":…,"position":…,"length":…,"leader_epoch":…,"producers":[{"producer_id":…,"producer_epoch":…,"first_sequence":…,"last_sequence":…,"last_offset":…,"last_timestamp":…}]}]}` |
//! | `index/{writer:010}` | [`CheckpointRecord`]: `{"v":1,"through_seq":…,"key":…,"written_ms":…}`, writer's index checkpoint |
//! | `brokers/{id:010}` | [`BrokerRecord`]: `{"v":1,"id":…,"host":…,"port":…,"admin_addr":…,"incarnation":…,"durability":"local"\|"object","started_ms":…}`, bound to the broker's session lease |
//! | `load/{id:010}` | [`BrokerLoad`]: `{"v":1,"id":…,"bytes_in_per_sec":…,"bytes_out_per_sec":…,"partitions":…,"cpu_cores_used":…,"measured_ms":…}`, bound to the broker's session lease |
//! | `controller` | [`ControllerRecord`]: `{"v":1,"broker_id":…,"incarnation":…,"elected_ms":…}`, bound to the controller's session lease |
//! | `owners/{stream_id:020}` | [`OwnerRecord`]: `{"v":1,"stream_id":…,"topic":…,"partition":…,"broker":…,"epoch":…}` plus `"moving_to":B` while a move is pending |
//! | `drains/{id:010}` | [`DrainRecord`]: `{"v":1,"broker":…,"requested_ms":…}` |
//! | `changes` | [`ChangesRecord`]: `{"v":1,"ms":…}`, put in every transaction that changes `topics/*` or `owners/*` |
//! | `groups/{group}` | [`GroupRecord`]: `{"v":1,"protocol_type":…,"generation":…,"protocol":…\|null,"leader":…\|null,"static_members":{"<instance id>":"<member id>",…},"updated_ms":…}` |
//! | `offsets/{group}/{topic}` | [`OffsetsRecord`]: `{"v":1,"partitions":{"<partition>":{"offset":…,"leader_epoch":…,"metadata":…\|null,"commit_ms":…},…}}` |
//!
//! `{seq:020}` and `{stream_id:020}` are zero-padded to 20 digits and broker ids
//! (`{id:010}`, `{writer:010}`, i32 ≥ 0) to 10, so key order is numeric order. The
//! object index is per writer: broker `writer` (its broker id; 0 on a single node)
//! alone appends `objects/{writer}/…` and moves `index/{writer}`. Topic configs are a
//! JSON object with keys sorted (a `BTreeMap`).
//!
//! `{group}` is the Kafka group id escaped by [`escape_group_name`]: `/`, `%` and
//! control characters are percent-encoded (`%2F`, `%25`, `%0A`, … one `%XX` per UTF-8
//! byte, upper-case hex), everything else (any other Unicode) is kept. So an escaped
//! name never contains `/`, `offsets/{group}/` is a prefix of that group's keys only,
//! and escaping is injective (the literal name `a%2Fb` is stored as `a%252Fb`).
//! `{topic}` is a valid Kafka topic name (`[a-zA-Z0-9._-]`), safe as it is. In
//! [`OffsetsRecord`] the partition indices are JSON object keys (decimal strings),
//! ordered numerically.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::MetaError;
use crate::store::MAX_VALUE_BYTES;

/// The layout version written into every value as `"v"`.
pub const RECORD_VERSION: u32 = 1;

/// Relative key of the cluster record.
pub const CLUSTER_KEY: &str = "cluster";
/// Relative prefix of topic records.
pub const TOPICS_PREFIX: &str = "topics/";
/// Relative key of the stream-id counter.
pub const STREAM_ID_COUNTER_KEY: &str = "counters/stream_id";
/// Relative key of the producer-id counter.
pub const PRODUCER_IDS_KEY: &str = "producer_ids/next";
/// Relative prefix of object records (of every writer).
pub const OBJECTS_PREFIX: &str = "objects/";
/// Relative prefix of the per-writer index checkpoints.
pub const INDEX_PREFIX: &str = "index/";
/// Relative prefix of broker registrations.
pub const BROKERS_PREFIX: &str = "brokers/";
/// Relative prefix of broker load reports.
pub const LOADS_PREFIX: &str = "load/";
/// Relative key of the elected controller.
pub const CONTROLLER_KEY: &str = "controller";
/// Relative prefix of partition owner records.
pub const OWNERS_PREFIX: &str = "owners/";
/// Relative prefix of drain requests.
pub const DRAINS_PREFIX: &str = "drains/";
/// Relative key bumped by every transaction that changes topics or owners.
pub const CHANGES_KEY: &str = "changes";
/// Relative prefix of consumer group records.
pub const GROUPS_PREFIX: &str = "groups/";
/// Relative prefix of committed offsets (of every group).
pub const OFFSETS_PREFIX: &str = "offsets/";

/// Relative key of topic `name`.
pub fn topic_key(name: &str) -> String {
    format!("{TOPICS_PREFIX}{name}")
}

/// Relative prefix of writer `writer`'s object records: `objects/{writer:010}/`.
pub fn writer_objects_prefix(writer: i32) -> String {
    format!("{OBJECTS_PREFIX}{writer:010}/")
}

/// Relative key of writer `writer`'s object record `seq`:
/// `objects/{writer:010}/{seq:020}`.
pub fn object_key(writer: i32, seq: u64) -> String {
    format!("{OBJECTS_PREFIX}{writer:010}/{seq:020}")
}

/// Relative key of writer `writer`'s index checkpoint: `index/{writer:010}`.
pub fn checkpoint_key(writer: i32) -> String {
    format!("{INDEX_PREFIX}{writer:010}")
}

/// Relative key of broker `id`'s registration: `brokers/{id:010}`.
pub fn broker_key(id: i32) -> String {
    format!("{BROKERS_PREFIX}{id:010}")
}

/// Relative key of broker `id`'s load report: `load/{id:010}`.
pub fn load_key(id: i32) -> String {
    format!("{LOADS_PREFIX}{id:010}")
}

/// Relative key of the owner record of stream `stream_id`: `owners/{stream_id:020}`.
pub fn owner_key(stream_id: u64) -> String {
    format!("{OWNERS_PREFIX}{stream_id:020}")
}

/// Relative key of broker `id`'s drain request: `drains/{id:010}`.
pub fn drain_key(id: i32) -> String {
    format!("{DRAINS_PREFIX}{id:010}")
}

/// Whether `c` is percent-encoded in a group name key segment.
fn group_char_escaped(c: char) -> bool {
    c == '/' || c == '%' || c.is_control()
}

/// Escapes a Kafka group id for use as one key segment: every byte of the UTF-8
/// encoding of `/`, `%` and control characters (Unicode `Cc`) becomes `%XX`
/// (upper-case hex); every other character is kept. Injective, and the result never
/// contains `/`. The inverse is [`unescape_group_name`].
pub fn escape_group_name(group: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(group.len());
    for c in group.chars() {
        if group_char_escaped(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The group id of an escaped key segment, or `None` if `segment` is not exactly what
/// [`escape_group_name`] produces for some name (bad `%XX`, lower-case hex, an
/// unnecessary escape, an unescaped `/` or control character, or invalid UTF-8).
pub fn unescape_group_name(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'A'..=b'F' => Some(b - b'A' + 10),
                _ => None,
            };
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (escape_group_name(&name) == segment).then_some(name)
}

/// Relative key of group `group`'s record: `groups/{escaped group}`.
pub fn group_key(group: &str) -> String {
    format!("{GROUPS_PREFIX}{}", escape_group_name(group))
}

/// Relative prefix of group `group`'s committed offsets: `offsets/{escaped group}/`.
pub fn group_offsets_prefix(group: &str) -> String {
    format!("{OFFSETS_PREFIX}{}/", escape_group_name(group))
}

/// Relative key of group `group`'s committed offsets of `topic`:
/// `offsets/{escaped group}/{topic}`. `topic` must be a valid topic name.
pub fn offsets_key(group: &str, topic: &str) -> String {
    format!("{}{topic}", group_offsets_prefix(group))
}

/// Parses a 10-digit broker id key segment (the inverse of `{id:010}` for ids ≥ 0).
pub fn parse_broker_id(segment: &str) -> Option<i32> {
    if segment.len() != 10 || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

/// Parses a 20-digit sequence / stream id key segment.
pub fn parse_seq(segment: &str) -> Option<u64> {
    if segment.len() != 20 || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

/// The cluster's identity, written once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Kafka-style cluster id: 22 characters, URL-safe base64 of a random UUID.
    pub cluster_id: String,
}

/// A topic and all its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Topic name (validated as Kafka does).
    pub name: String,
    /// Kafka topic id.
    pub topic_id: Uuid,
    /// Partitions, `partitions[i].index == i`.
    pub partitions: Vec<PartitionRecord>,
    /// Topic-level config overrides.
    pub configs: BTreeMap<String, String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// One partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Partition index within the topic.
    pub index: i32,
    /// Cluster-unique stream id: the partition's identity in data objects. Never reused.
    pub stream_id: u64,
    /// Kafka leader epoch (the ownership epoch).
    pub leader_epoch: i32,
    /// First offset still readable; only moves forward.
    pub log_start_offset: i64,
}

/// A monotone counter (`counters/stream_id`, `producer_ids/next`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRecord {
    /// The next unallocated value.
    pub next: u64,
}

/// One sealed data object in the bucket, committed by one metadata write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Commit sequence number; object records are totally ordered by it.
    pub seq: u64,
    /// Object-store key of the data object.
    pub key: String,
    /// Size of the object in bytes.
    pub size: u64,
    /// Identity of the writer (broker id / incarnation).
    pub writer: String,
    /// Commit time, milliseconds since the Unix epoch.
    pub committed_ms: i64,
    /// The contiguous runs of batches the object holds, one per stream at most.
    pub runs: Vec<RunRecord>,
}

/// A contiguous range of one stream's batches inside an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The partition's stream id.
    pub stream_id: u64,
    /// First offset in the run.
    pub first_offset: i64,
    /// Last offset in the run (inclusive).
    pub last_offset: i64,
    /// Largest record timestamp in the run.
    pub max_timestamp: i64,
    /// Byte position of the run inside the object.
    pub position: u64,
    /// Byte length of the run.
    pub length: u64,
    /// Leader epoch the batches were written under.
    pub leader_epoch: i32,
    /// The last batch of each idempotent producer within this run.
    pub producers: Vec<ProducerRecord>,
    /// Written by the log cleaner (`cleanup.policy=compact`): holds only the latest
    /// record per key as of its cleaning, so the offsets it covers may have gaps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleaned: bool,
    /// For a cleaned run: when the first tombstone it kept passes `delete.retention.ms`
    /// (the cleaner runs again then to remove it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstones_expire_ms: Option<i64>,
}

/// The last batch of one producer within a run, enough to rebuild idempotence state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerRecord {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// First sequence of the producer's last batch in the run.
    pub first_sequence: i32,
    /// Last sequence of that batch.
    pub last_sequence: i32,
    /// Offset of the last record of that batch.
    pub last_offset: i64,
    /// Max timestamp of that batch.
    pub last_timestamp: i64,
}

/// A checkpoint of the object index: a blob in the bucket that summarises every
/// object record with `seq <= through_seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Every object record with `seq <= through_seq` is covered by the blob, and
    /// readers ignore such records if any remain.
    pub through_seq: u64,
    /// Object-store key of the checkpoint blob.
    pub key: String,
    /// Time the checkpoint was written, milliseconds since the Unix epoch.
    pub written_ms: i64,
}

/// A live broker, registered under its session lease at start-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    /// Broker id, unique in the cluster (≥ 0).
    pub id: i32,
    /// Host Kafka clients connect to.
    pub host: String,
    /// Kafka listener port.
    pub port: i32,
    /// Address of the broker's admin gRPC service (`host:port`).
    pub admin_addr: String,
    /// Random id of this broker process; changes on every start.
    pub incarnation: String,
    /// Where the broker's acknowledged data lives until it is in an object:
    /// `"local"` (its own WAL) or `"object"` (acknowledged only once in the bucket).
    pub durability: String,
    /// Process start time, milliseconds since the Unix epoch.
    pub started_ms: i64,
}

/// A broker's recent load, republished every few seconds under its session lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerLoad {
    /// Broker id.
    pub id: i32,
    /// Produce throughput, bytes per second.
    pub bytes_in_per_sec: f64,
    /// Fetch throughput, bytes per second.
    pub bytes_out_per_sec: f64,
    /// Partitions the broker serves now.
    pub partitions: u32,
    /// CPU cores busy on the broker's behalf.
    pub cpu_cores_used: f64,
    /// Measurement time, milliseconds since the Unix epoch.
    pub measured_ms: i64,
    /// The busiest partitions by produce rate (at most [`HOT_PARTITIONS`]), for
    /// rebalancing by bytes; partitions not listed are colder than every listed one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hot_partitions: Vec<PartitionRate>,
}

/// Most partitions a [`BrokerLoad`] lists in `hot_partitions`.
pub const HOT_PARTITIONS: usize = 16;

/// One partition's measured produce rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionRate {
    /// The partition's stream id.
    pub stream_id: u64,
    /// Produce throughput, bytes per second.
    pub bytes_in_per_sec: f64,
}

/// The elected controller, bound to its session lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRecord {
    /// Broker id of the controller, -1 for a standalone controller process.
    pub broker_id: i32,
    /// Incarnation of the controller process.
    pub incarnation: String,
    /// Election time, milliseconds since the Unix epoch.
    pub elected_ms: i64,
}

/// Which broker owns (serves and writes) a partition, under which ownership epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// The partition's stream id (also the key).
    pub stream_id: u64,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The owning broker.
    pub broker: i32,
    /// Ownership epoch (the Kafka leader epoch); raised by every change of owner.
    pub epoch: i32,
    /// Pending move: the owner hands the partition over to this broker and then writes
    /// `broker = moving_to, epoch + 1, moving_to = None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<i32>,
}

/// An admin's request to move every partition off a broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// The broker being drained.
    pub broker: i32,
    /// Request time, milliseconds since the Unix epoch.
    pub requested_ms: i64,
}

/// The value of `changes`: its version tells brokers when to re-list topics and owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesRecord {
    /// Time of the change, milliseconds since the Unix epoch.
    pub ms: i64,
}

/// A consumer group's durable state, written by its coordinator when a rebalance
/// completes (generation bump). Members, their assignments and session state live only
/// in the coordinator's memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group's protocol type (`"consumer"`, `"connect"`, …; empty if unknown).
    pub protocol_type: String,
    /// The generation of the last completed rebalance.
    pub generation: i32,
    /// The protocol chosen in that rebalance (e.g. `"range"`), if any.
    pub protocol: Option<String>,
    /// Member id of the leader of that rebalance, if any.
    pub leader: Option<String>,
    /// Static membership: `group.instance.id` → member id.
    pub static_members: BTreeMap<String, String>,
    /// Time of the write, milliseconds since the Unix epoch.
    pub updated_ms: i64,
}

/// The committed offsets of one group for one topic (`offsets/{group}/{topic}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetsRecord {
    /// Partition index (≥ 0) → its committed offset. Never empty in the store (the key is
    /// deleted instead).
    #[serde(with = "partition_keys")]
    pub partitions: BTreeMap<i32, CommittedOffset>,
}

/// (De)serializes a map keyed by partition index as a JSON object keyed by the decimal
/// index. serde_json does this for integer keys by itself, but not inside the
/// `#[serde(flatten)]` envelope every value is decoded through, so the keys are
/// converted here.
mod partition_keys {
    use std::collections::BTreeMap;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S, V>(map: &BTreeMap<i32, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        V: Serialize,
    {
        serializer.collect_map(map.iter().map(|(k, v)| (k.to_string(), v)))
    }

    pub(super) fn deserialize<'de, D, V>(deserializer: D) -> Result<BTreeMap<i32, V>, D::Error>
    where
        D: Deserializer<'de>,
        V: Deserialize<'de>,
    {
        BTreeMap::<String, V>::deserialize(deserializer)?
            .into_iter()
            .map(|(k, v)| match k.parse::<i32>() {
                Ok(p) if p.to_string() == k => Ok((p, v)),
                _ => Err(D::Error::custom(format!(
                    "partition key {k:?} is not a decimal i32"
                ))),
            })
            .collect()
    }
}

/// One committed offset of a partition, as OffsetCommit carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The next offset the group will consume.
    pub offset: i64,
    /// Leader epoch of the last consumed record, -1 if unknown.
    pub leader_epoch: i32,
    /// Client metadata, `None` if the client sent null.
    pub metadata: Option<String>,
    /// Commit time, milliseconds since the Unix epoch.
    pub commit_ms: i64,
}

#[derive(Serialize)]
struct VersionedRef<'a, T> {
    v: u32,
    #[serde(flatten)]
    record: &'a T,
}

#[derive(Deserialize)]
struct Versioned<T> {
    v: u32,
    #[serde(flatten)]
    record: T,
}

/// Encodes `record` as its versioned JSON value, refusing values of
/// [`MAX_VALUE_BYTES`] or more. `key` is only used in the error message.
pub fn encode<T: Serialize>(key: &str, record: &T) -> Result<Bytes, MetaError> {
    let json = serde_json::to_vec(&VersionedRef {
        v: RECORD_VERSION,
        record,
    })
    .map_err(|e| MetaError::InvalidArgument(format!("cannot encode value for {key:?}: {e}")))?;
    if json.len() >= MAX_VALUE_BYTES {
        return Err(MetaError::TooLarge(format!(
            "value for key {key:?} would be {} bytes, values must be smaller than {MAX_VALUE_BYTES}",
            json.len()
        )));
    }
    Ok(Bytes::from(json))
}

/// Decodes a versioned JSON value stored at `key`.
pub fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, MetaError> {
    let versioned: Versioned<T> =
        serde_json::from_slice(value).map_err(|e| MetaError::corrupt(key, e))?;
    if versioned.v != RECORD_VERSION {
        return Err(MetaError::corrupt(
            key,
            format!(
                "unsupported layout version \"v\": {} (this build reads {RECORD_VERSION})",
                versioned.v
            ),
        ));
    }
    Ok(versioned.record)
}
