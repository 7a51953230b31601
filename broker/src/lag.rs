//! Consumer lag: how far each consumer group's committed offsets are behind the log, in
//! records and in time, for the partitions this broker owns.
//!
//! Who measures: the owner of a partition, because it alone knows the partition's high
//! watermark and holds its time index (the tail and the runs). Every
//! `--consumer-lag-interval` the [`run`] loop reads every group's committed offsets in
//! one listing of the metadata store, keeps the partitions this broker serves, and
//! replaces the [`LagSnapshot`] that [`LagCollector`] exposes at scrape time. Summed
//! over brokers (Prometheus `sum by (group, topic)`), the series cover every partition
//! once; a partition that moves disappears from the old owner at its next round.
//!
//! Definitions (those of Kafka's `kafka-consumer-groups`): lag in records is
//! `max(0, high watermark - committed offset)`; lag in time is `now - timestamp of the
//! record at the committed offset` (the oldest record the group has not consumed) when
//! the lag is positive, else 0. A committed offset below the log start counts from the
//! log start for the timestamp.
//!
//! Bounds: one metadata listing per round (timeout [`META_TIMEOUT`]), at most
//! [`MAX_SERIES`] partitions per broker (the rest are counted and logged, not
//! exposed), and at most one object run read per lagging partition per round, through
//! the read cache.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::sync::watch;

use crate::error::Result;
use crate::log::{LogManager, now_ms};
use crate::partition::Partition;

/// Bound on the one metadata listing of a round.
const META_TIMEOUT: Duration = Duration::from_secs(10);
/// Most (group, topic, partition) series one broker exposes.
pub const MAX_SERIES: usize = 10_000;

/// The lag of one group on one partition.
#[derive(Clone, Debug, PartialEq)]
pub struct LagSample {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub log_end: i64,
    pub lag_records: i64,
    pub lag_seconds: f64,
}

/// The latest round's samples, shared between the loop and the collector.
pub type LagSnapshot = Arc<Mutex<Arc<Vec<LagSample>>>>;

/// Lag of one committed offset on a partition this broker serves: (log end offset,
/// lag in records, lag in milliseconds). None if the partition is not served here.
pub async fn partition_lag(
    logs: &LogManager,
    partition: &Partition,
    committed: i64,
    now: i64,
) -> Result<Option<(i64, i64, i64)>> {
    let hwm = {
        let st = partition.lock();
        if !st.owned || st.deleted {
            return Ok(None);
        }
        st.high_watermark
    };
    let lag = (hwm - committed.max(0)).max(0);
    if lag == 0 {
        return Ok(Some((hwm, 0, 0)));
    }
    let lag_ms = match logs.timestamp_at_offset(partition, committed).await? {
        Some(ts) => (now - ts).max(0),
        None => 0,
    };
    Ok(Some((hwm, lag, lag_ms)))
}

/// One round: every committed offset on a partition this broker serves.
pub async fn compute(logs: &LogManager) -> Result<Vec<LagSample>> {
    let all = tokio::time::timeout(META_TIMEOUT, logs.meta.list_all_offsets())
        .await
        .map_err(|_| crate::error::BrokerError::Timeout)??;
    let now = now_ms();
    let mut out = Vec::new();
    let mut skipped = 0usize;
    for (group, topic, partitions) in all {
        for (index, committed) in partitions {
            let Ok(partition) = logs.partition(&topic, index) else {
                continue;
            };
            // A run that cannot be read (bucket away) just leaves this sample out.
            let lag = match partition_lag(logs, &partition, committed.offset, now).await {
                Ok(Some(lag)) => lag,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(%group, %topic, index, error = %e, "consumer lag unavailable");
                    continue;
                }
            };
            if out.len() >= MAX_SERIES {
                skipped += 1;
                continue;
            }
            let (log_end, lag_records, lag_ms) = lag;
            out.push(LagSample {
                group: group.clone(),
                topic: topic.clone(),
                partition: index,
                committed: committed.offset,
                log_end,
                lag_records,
                lag_seconds: lag_ms as f64 / 1000.0,
            });
        }
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            limit = MAX_SERIES,
            "more consumer-lag series than the limit; the rest are not exposed"
        );
    }
    Ok(out)
}

/// Recomputes the snapshot every `interval` until `shutdown` turns true.
pub async fn run(
    logs: Arc<LogManager>,
    snapshot: LagSnapshot,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    if interval.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let round = tokio::select! {
            r = compute(&logs) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match round {
            Ok(samples) => {
                if let Ok(mut slot) = snapshot.lock() {
                    *slot = Arc::new(samples);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot compute consumer lag this round"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    group: String,
    topic: String,
    partition: i32,
}

/// Which value of a sample a family exposes.
type SampleValue = fn(&LagSample) -> f64;

/// Exposes the latest snapshot as `cirrus_consumer_group_lag_records` and
/// `cirrus_consumer_group_lag_seconds`.
#[derive(Debug)]
pub struct LagCollector(pub LagSnapshot);

impl Collector for LagCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::result::Result<(), std::fmt::Error> {
        let samples = match self.0.lock() {
            Ok(slot) => slot.clone(),
            Err(_) => return Ok(()),
        };
        let families: [(&str, &str, SampleValue); 2] = [
            (
                "consumer_group_lag_records",
                "Records a consumer group has not consumed yet (high watermark minus committed offset), per partition this broker owns",
                |s| s.lag_records as f64,
            ),
            (
                "consumer_group_lag_seconds",
                "Age of the oldest record a consumer group has not consumed yet (0 when caught up), per partition this broker owns",
                |s| s.lag_seconds,
            ),
        ];
        for (name, help, value) in families {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0f64).metric_type())?;
            for s in samples.iter() {
                let labels = LagLabels {
                    group: s.group.clone(),
                    topic: s.topic.clone(),
                    partition: s.partition,
                };
                ConstGauge::new(value(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
