//! Load measurement of this broker (bytes in/out per second, CPU) and the autoscaling
//! recommendation built from it: published to the metadata store in a cluster, served
//! on `GET /v1/autoscale`, the admin API and the `cirrus_autoscale_recommended_brokers`
//! gauge.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use cirrus_controller::records::HOT_PARTITIONS;
use cirrus_controller::{AutoscaleTargets, BrokerLoad, PartitionRate, Recommendation};
use tokio::sync::watch;

use crate::log::{LogManager, now_ms};

/// The latest recommendation, shared between the loop that computes it and the
/// endpoints that serve it.
pub type AutoscaleSlot = Arc<RwLock<Option<Recommendation>>>;

/// How often a single node re-measures its load.
pub const MEASURE_INTERVAL: Duration = Duration::from_secs(5);

/// Measures this broker's bytes in/out per second and CPU between two calls.
#[derive(Debug)]
pub struct LoadMeter {
    at: Instant,
    bytes_in: u64,
    bytes_out: u64,
    cpu_ticks: u64,
    /// Produce bytes per partition (stream id) at the last measurement.
    partition_bytes: HashMap<u64, u64>,
}

impl LoadMeter {
    pub fn new(logs: &LogManager) -> Self {
        LoadMeter {
            at: Instant::now(),
            bytes_in: logs.metrics.total_in.get(),
            bytes_out: logs.metrics.total_out.get(),
            cpu_ticks: process_cpu_ticks().unwrap_or(0),
            partition_bytes: partition_bytes(logs),
        }
    }

    pub fn measure(&mut self, id: i32, logs: &LogManager) -> BrokerLoad {
        let now = Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64().max(0.001);
        let (bytes_in, bytes_out) = (logs.metrics.total_in.get(), logs.metrics.total_out.get());
        let cpu_ticks = process_cpu_ticks().unwrap_or(self.cpu_ticks);
        let partition_bytes = partition_bytes(logs);
        let mut hot: Vec<PartitionRate> = partition_bytes
            .iter()
            .filter_map(|(stream, total)| {
                let delta = total.saturating_sub(*self.partition_bytes.get(stream).unwrap_or(&0));
                (delta > 0).then(|| PartitionRate {
                    stream_id: *stream,
                    bytes_in_per_sec: delta as f64 / secs,
                })
            })
            .collect();
        hot.sort_by(|a, b| b.bytes_in_per_sec.total_cmp(&a.bytes_in_per_sec));
        hot.truncate(HOT_PARTITIONS);
        let load = BrokerLoad {
            id,
            bytes_in_per_sec: bytes_in.saturating_sub(self.bytes_in) as f64 / secs,
            bytes_out_per_sec: bytes_out.saturating_sub(self.bytes_out) as f64 / secs,
            partitions: u32::try_from(logs.metrics.partitions_owned.get()).unwrap_or(0),
            // USER_HZ is 100 on every Linux we run on.
            cpu_cores_used: cpu_ticks.saturating_sub(self.cpu_ticks) as f64 / 100.0 / secs,
            measured_ms: now_ms(),
            hot_partitions: hot,
        };
        *self = LoadMeter {
            at: now,
            bytes_in,
            bytes_out,
            cpu_ticks,
            partition_bytes,
        };
        load
    }
}

/// Produce bytes so far of every partition this broker serves, by stream id.
fn partition_bytes(logs: &LogManager) -> HashMap<u64, u64> {
    logs.partitions_by_stream()
        .into_iter()
        .filter(|(_, p)| p.lock().owned)
        .map(|(stream, p)| (stream, p.bytes_in.load(Ordering::Relaxed)))
        .collect()
}

/// utime + stime of this process in clock ticks, from /proc/self/stat.
fn process_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Single node: measures every [`MEASURE_INTERVAL`] and keeps the recommendation
/// current (a node alone is the whole cluster). Returns on shutdown.
pub async fn run_single_node(
    logs: Arc<LogManager>,
    slot: AutoscaleSlot,
    targets: AutoscaleTargets,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut meter = LoadMeter::new(&logs);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(MEASURE_INTERVAL) => {}
        }
        let load = meter.measure(logs.writer_id, &logs);
        let rec = cirrus_controller::recommend(&[load], 1, &targets);
        logs.metrics
            .autoscale_recommended_brokers
            .set(i64::from(rec.recommended_brokers));
        *slot.write().unwrap_or_else(|p| p.into_inner()) = Some(rec);
    }
}

/// The current recommendation, or one computed from nothing measured yet.
pub fn current(slot: &AutoscaleSlot, targets: &AutoscaleTargets, live: u32) -> Recommendation {
    slot.read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| cirrus_controller::recommend(&[], live, targets))
}
