//! Prometheus metrics of the broker, served on `/metrics` of the HTTP listener.
//!
//! Names carry the `cirrus_` prefix; counters end in `_total`, sizes are in bytes and
//! durations in seconds, as Prometheus conventions ask. Event counters and histograms
//! are updated where the events happen; values that already live elsewhere (object
//! store request counts, WAL size) are read at scrape time by [`StateCollector`], so
//! the hot path does no extra work for them.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Label of per-API series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub api: &'static str,
}

/// Label of per-topic series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

/// The per-topic series of one topic, cloned out of their families (a clone shares the
/// counter).
#[derive(Clone, Debug, Default)]
pub struct TopicCounters {
    pub produced_bytes: Counter,
    pub produced_records: Counter,
    pub fetched_bytes: Counter,
    /// Broker-wide totals (shared by every topic's counters), for the load it publishes.
    pub total_in: Counter,
    pub total_out: Counter,
}

/// Every metric the broker updates directly.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<ApiLabel, Counter>,
    pub request_seconds: Family<ApiLabel, Histogram>,
    pub produced_bytes: Family<TopicLabel, Counter>,
    pub produced_records: Family<TopicLabel, Counter>,
    pub fetched_bytes: Family<TopicLabel, Counter>,
    pub objects_committed: Counter,
    pub object_bytes_committed: Counter,
    pub object_size: Histogram,
    pub upload_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub metadata_writes: Counter,
    /// Times this broker found itself fenced (lease lost) and restarted its engine.
    pub fenced: Counter,
    pub moves_in: Counter,
    pub moves_out: Counter,
    pub partitions_owned: Gauge,
    pub coordinator_slots_owned: Gauge,
    pub is_controller: Gauge,
    pub offline_partitions: Gauge,
    pub autoscale_recommended_brokers: Gauge,
    /// Failovers done by this broker's controller (durability=object: nothing lost;
    /// unclean: the dead broker's unuploaded tail is lost).
    pub clean_failovers: Counter,
    pub unclean_failovers: Counter,
    /// Reads of committed runs answered by the in-memory run cache, and from the bucket.
    pub read_cache_hits: Counter,
    pub read_cache_misses: Counter,
    /// Runs loaded into the read cache ahead of a sequential reader.
    pub read_ahead: Counter,
    /// Storage lifecycle: objects and bytes deleted from the bucket, by reason (dead:
    /// all their data deleted; orphan: never committed), orphans seen by the last sweep,
    /// and log start moves by reason (retention, delete_records).
    pub objects_deleted_dead: Counter,
    pub objects_deleted_orphan: Counter,
    pub object_bytes_deleted_dead: Counter,
    pub object_bytes_deleted_orphan: Counter,
    pub orphan_objects: Gauge,
    pub orphan_bytes: Gauge,
    pub log_start_moves_retention: Counter,
    /// Object compaction: objects written, runs merged into them, bytes rewritten; and
    /// the size of the index it keeps bounded (runs of the partitions served here, live
    /// objects of this broker's writer).
    pub compaction_objects: Counter,
    pub compaction_runs_merged: Counter,
    pub compaction_bytes: Counter,
    pub index_runs: Gauge,
    pub index_objects: Gauge,
    /// The log cleaner (compacted topics): cleanings, bytes read, records removed.
    pub cleaner_cleanings: Counter,
    pub cleaner_bytes_read: Counter,
    pub cleaner_records_removed: Counter,
    pub log_start_moves_delete_records: Counter,
    /// Bytes produced and fetched over all topics (not exported; see TopicCounters).
    pub total_in: Counter,
    pub total_out: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cirrus");
        let requests = Family::<ApiLabel, Counter>::default();
        registry.register(
            "requests",
            "Kafka requests handled, by API",
            requests.clone(),
        );
        let request_seconds = Family::<ApiLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response, by API",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let produced_bytes = Family::<TopicLabel, Counter>::default();
        registry.register_with_unit(
            "produced",
            "Record batch bytes appended, by topic",
            Unit::Bytes,
            produced_bytes.clone(),
        );
        let produced_records = Family::<TopicLabel, Counter>::default();
        registry.register(
            "produced_records",
            "Records appended, by topic",
            produced_records.clone(),
        );
        let fetched_bytes = Family::<TopicLabel, Counter>::default();
        registry.register_with_unit(
            "fetched",
            "Record batch bytes returned to consumers, by topic",
            Unit::Bytes,
            fetched_bytes.clone(),
        );
        let objects_committed = Counter::default();
        registry.register(
            "objects_committed",
            "Data objects uploaded and committed",
            objects_committed.clone(),
        );
        let object_bytes_committed = Counter::default();
        registry.register_with_unit(
            "object_committed",
            "Bytes of committed data objects",
            Unit::Bytes,
            object_bytes_committed.clone(),
        );
        let object_size = Histogram::new(exponential_buckets(16_384.0, 2.0, 14));
        registry.register_with_unit(
            "object_size",
            "Size of committed data objects",
            Unit::Bytes,
            object_size.clone(),
        );
        let upload_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register_with_unit(
            "object_upload",
            "Time to put one data object into the bucket",
            Unit::Seconds,
            upload_seconds.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register_with_unit(
            "object_commit",
            "Time of the metadata write that commits one object",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        let metadata_writes = Counter::default();
        registry.register(
            "metadata_writes",
            "Transactions written to the metadata store by the data path",
            metadata_writes.clone(),
        );
        let fenced = Counter::default();
        registry.register(
            "fenced",
            "Times this broker lost its session (lease) and restarted its engine",
            fenced.clone(),
        );
        let moves = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "ownership_moves",
            "Partitions taken over (in) and handed over (out) by this broker",
            moves.clone(),
        );
        let moves_in = moves
            .get_or_create(&DirectionLabel { direction: "in" })
            .clone();
        let moves_out = moves
            .get_or_create(&DirectionLabel { direction: "out" })
            .clone();
        let partitions_owned = Gauge::default();
        registry.register(
            "partitions_owned",
            "Data partitions this broker serves (internal coordinator slots are counted apart)",
            partitions_owned.clone(),
        );
        let coordinator_slots_owned = Gauge::default();
        registry.register(
            "coordinator_slots_owned",
            "Group coordinator slots (partitions of __consumer_offsets) this broker serves",
            coordinator_slots_owned.clone(),
        );
        let is_controller = Gauge::default();
        registry.register(
            "is_controller",
            "1 while this broker is the elected controller",
            is_controller.clone(),
        );
        let offline_partitions = Gauge::default();
        registry.register(
            "offline_partitions",
            "Partitions whose owner is not live (reported by the controller)",
            offline_partitions.clone(),
        );
        let autoscale_recommended_brokers = Gauge::default();
        registry.register(
            "autoscale_recommended_brokers",
            "Brokers the measured load needs against the per-broker targets (GET /v1/autoscale explains)",
            autoscale_recommended_brokers.clone(),
        );
        let failovers = Family::<KindLabel, Counter>::default();
        registry.register(
            "partition_failovers",
            "Partitions of dead brokers given to live ones by this broker's controller; kind=unclean lost the dead broker's unuploaded tail",
            failovers.clone(),
        );
        let clean_failovers = failovers
            .get_or_create(&KindLabel { kind: "clean" })
            .clone();
        let unclean_failovers = failovers
            .get_or_create(&KindLabel { kind: "unclean" })
            .clone();
        let read_cache = Family::<ResultLabel, Counter>::default();
        registry.register(
            "read_cache_requests",
            "Reads behind the in-memory tail, by result: hit (run cache) or miss (ranged GET from the bucket)",
            read_cache.clone(),
        );
        let read_cache_hits = read_cache
            .get_or_create(&ResultLabel { result: "hit" })
            .clone();
        let read_cache_misses = read_cache
            .get_or_create(&ResultLabel { result: "miss" })
            .clone();
        let deleted = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "objects_deleted",
            "Data objects deleted from the bucket, by reason: dead (all their data deleted by retention, DeleteRecords or topic deletion) or orphan (uploaded, never committed)",
            deleted.clone(),
        );
        let deleted_bytes = Family::<ReasonLabel, Counter>::default();
        registry.register_with_unit(
            "object_deleted",
            "Bytes of data objects deleted from the bucket, by reason",
            Unit::Bytes,
            deleted_bytes.clone(),
        );
        let orphan_objects = Gauge::default();
        registry.register(
            "orphan_objects",
            "Unreferenced objects older than the orphan grace found by the last orphan sweep (controller or single node)",
            orphan_objects.clone(),
        );
        let orphan_bytes = Gauge::default();
        registry.register_with_unit(
            "orphan",
            "Bytes of the orphans found by the last orphan sweep",
            Unit::Bytes,
            orphan_bytes.clone(),
        );
        let log_start_moves = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "log_start_moves",
            "Times a partition's log start offset moved forward, by reason: retention or delete_records",
            log_start_moves.clone(),
        );
        let read_ahead = Counter::default();
        registry.register(
            "read_ahead",
            "Runs loaded into the read cache ahead of a sequential reader (the next run of the partition it read)",
            read_ahead.clone(),
        );
        let compaction_objects = Counter::default();
        registry.register(
            "compaction_objects",
            "Per-partition objects written by object compaction",
            compaction_objects.clone(),
        );
        let compaction_runs_merged = Counter::default();
        registry.register(
            "compaction_runs_merged",
            "Runs merged by object compaction (each leaves the index, replaced by a larger one)",
            compaction_runs_merged.clone(),
        );
        let compaction_bytes = Counter::default();
        registry.register_with_unit(
            "compaction",
            "Bytes of runs rewritten by object compaction",
            Unit::Bytes,
            compaction_bytes.clone(),
        );
        let index_runs = Gauge::default();
        registry.register(
            "index_runs",
            "Committed runs in the index of the partitions this broker serves",
            index_runs.clone(),
        );
        let index_objects = Gauge::default();
        registry.register(
            "index_objects",
            "Live objects in this broker's own index (what its checkpoint lists)",
            index_objects.clone(),
        );
        let cleaner_cleanings = Counter::default();
        registry.register(
            "log_cleaner_cleanings",
            "Partitions of compacted topics cleaned (each cleaning rewrites a stretch of runs)",
            cleaner_cleanings.clone(),
        );
        let cleaner_bytes_read = Counter::default();
        registry.register_with_unit(
            "log_cleaner_read",
            "Bytes of runs the log cleaner read",
            Unit::Bytes,
            cleaner_bytes_read.clone(),
        );
        let cleaner_records_removed = Counter::default();
        registry.register(
            "log_cleaner_records_removed",
            "Records the log cleaner removed: superseded by a later record of their key, or expired tombstones",
            cleaner_records_removed.clone(),
        );
        // Each `get_or_create` holds the family's lock until its statement ends: one per statement.
        let reason = |r: &'static str| ReasonLabel { reason: r };
        let objects_deleted_dead = deleted.get_or_create(&reason("dead")).clone();
        let objects_deleted_orphan = deleted.get_or_create(&reason("orphan")).clone();
        let object_bytes_deleted_dead = deleted_bytes.get_or_create(&reason("dead")).clone();
        let object_bytes_deleted_orphan = deleted_bytes.get_or_create(&reason("orphan")).clone();
        let log_start_moves_retention = log_start_moves.get_or_create(&reason("retention")).clone();
        let log_start_moves_delete_records = log_start_moves
            .get_or_create(&reason("delete_records"))
            .clone();
        Metrics {
            objects_deleted_dead,
            objects_deleted_orphan,
            object_bytes_deleted_dead,
            object_bytes_deleted_orphan,
            orphan_objects,
            orphan_bytes,
            log_start_moves_retention,
            log_start_moves_delete_records,
            compaction_objects,
            compaction_runs_merged,
            compaction_bytes,
            index_runs,
            index_objects,
            cleaner_cleanings,
            cleaner_bytes_read,
            cleaner_records_removed,
            read_cache_hits,
            read_cache_misses,
            read_ahead,
            clean_failovers,
            unclean_failovers,
            autoscale_recommended_brokers,
            total_in: Counter::default(),
            total_out: Counter::default(),
            fenced,
            moves_in,
            moves_out,
            partitions_owned,
            coordinator_slots_owned,
            is_controller,
            offline_partitions,
            registry,
            requests,
            request_seconds,
            produced_bytes,
            produced_records,
            fetched_bytes,
            objects_committed,
            object_bytes_committed,
            object_size,
            upload_seconds,
            commit_seconds,
            metadata_writes,
        }
    }

    /// The series of `topic`, registered on first use.
    pub fn topic_counters(&self, topic: &str) -> TopicCounters {
        let label = TopicLabel {
            topic: topic.to_string(),
        };
        TopicCounters {
            produced_bytes: self.produced_bytes.get_or_create(&label).clone(),
            produced_records: self.produced_records.get_or_create(&label).clone(),
            fetched_bytes: self.fetched_bytes.get_or_create(&label).clone(),
            total_in: self.total_in.clone(),
            total_out: self.total_out.clone(),
        }
    }

    /// Adds the collector of scrape-time values. Call once, before serving.
    pub fn register_state(&mut self, collector: StateCollector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// Registers a collector that reads its values at scrape time.
    pub fn register_collector(&mut self, collector: impl Collector + 'static) {
        self.registry.register_collector(Box::new(collector));
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Values read at scrape time.
#[derive(Debug)]
pub struct StateCollector {
    pub object_store: cirrus_storage::RequestCounter,
    pub wal: cirrus_wal::Wal,
    /// Set once the log manager exists (the collector is registered before).
    pub uploader: Arc<std::sync::OnceLock<Arc<crate::uploader::Uploader>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&'static str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (kind, v) in values {
        let label = KindLabel { kind };
        ConstCounter::new(*v).encode(metric.encode_family(&label)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(encoder.encode_descriptor(name, help, unit, g.metric_type())?)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.object_store.snapshot();
        counter_family(
            &mut encoder,
            "object_store_requests",
            "Requests to the object store, by kind (multipart parts count as PUTs in S3 billing)",
            &[
                ("put", c.put),
                ("get", c.get),
                ("head", c.head),
                ("list", c.list),
                ("delete", c.delete),
                ("multipart_create", c.multipart_create),
                ("multipart_part", c.multipart_part),
                ("multipart_complete", c.multipart_complete),
            ],
        )?;
        counter_family(
            &mut encoder,
            "object_store_errors",
            "Failed object store requests; throttled = 503 SlowDown / 429",
            &[("all", c.errors), ("throttled", c.throttled)],
        )?;
        counter_family(
            &mut encoder,
            "object_store_bytes",
            "Bytes sent to and received from the object store",
            &[("put", c.bytes_put), ("get", c.bytes_got)],
        )?;
        let cost = ConstCounter::new(c.estimated_cost_usd());
        cost.encode(encoder.encode_descriptor(
            "object_store_estimated_cost_dollars",
            "Request cost at S3 Standard list prices (us-east-1)",
            None,
            cost.metric_type(),
        )?)?;
        let wal = self.wal.stats();
        gauge(
            &mut encoder,
            "wal_outstanding",
            "WAL bytes not yet in a committed object",
            Some(&Unit::Bytes),
            wal.outstanding_bytes as i64,
        )?;
        gauge(
            &mut encoder,
            "wal_segments",
            "WAL segment files on disk",
            None,
            wal.segments as i64,
        )?;
        gauge(
            &mut encoder,
            "wal_oldest_unflushed_age",
            "Age of the oldest record not yet in a committed object",
            Some(&Unit::Seconds),
            self.uploader
                .get()
                .and_then(|u| u.oldest_pending_age())
                .map_or(0, |d| d.as_secs() as i64),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_have_prefix_units_and_total_suffix() {
        let m = Metrics::new();
        m.requests.get_or_create(&ApiLabel { api: "Produce" }).inc();
        m.objects_committed.inc_by(3);
        let text = m.encode();
        assert!(
            text.contains("cirrus_requests_total{api=\"Produce\"} 1"),
            "{text}"
        );
        assert!(text.contains("cirrus_objects_committed_total 3"), "{text}");
        assert!(
            text.contains("cirrus_object_upload_seconds_bucket"),
            "{text}"
        );
    }
}
