//! The autoscaling signal: how many brokers the measured load needs, against per-broker
//! targets an operator sets (bytes/s in, bytes/s out, CPU cores).
//!
//! Pure arithmetic over the brokers' published [`BrokerLoad`] records; the broker serves
//! the result on `GET /v1/autoscale`, on the admin API and as the gauge
//! `cirrus_autoscale_recommended_brokers` for HPA/KEDA.
//!
//! Rule: `need = max(Σin / target_in, Σout / target_out, Σcpu / target_cpu)`.
//! Scaling out follows `ceil(need)` at once (bursts must be absorbed); scaling in keeps
//! [`SCALE_IN_HEADROOM`] spare, i.e. recommends `ceil(need / 0.8)` while that is below the
//! current count, so a cluster hovering at a boundary does not flap. The result is
//! clamped to `[min_brokers, max_brokers]`.

use serde::{Deserialize, Serialize};

use crate::records::BrokerLoad;

/// Utilization kept free when recommending fewer brokers than are running.
pub const SCALE_IN_HEADROOM: f64 = 0.2;

/// Per-broker capacity targets and bounds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleTargets {
    /// Produce bytes per second one broker should take.
    pub bytes_in_per_sec: f64,
    /// Fetch bytes per second one broker should serve.
    pub bytes_out_per_sec: f64,
    /// CPU cores one broker should use.
    pub cpu_cores: f64,
    /// Never recommend fewer brokers.
    pub min_brokers: u32,
    /// Never recommend more brokers.
    pub max_brokers: u32,
}

/// The recommendation and the measurements behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The broker count the load needs.
    pub recommended_brokers: u32,
    /// Live brokers now.
    pub current_brokers: u32,
    /// Which dimension decided: "bytes_in", "bytes_out", "cpu" or "minimum".
    pub limited_by: String,
    /// Sum over brokers of the measured produce bytes/s.
    pub bytes_in_per_sec: f64,
    /// Sum over brokers of the measured fetch bytes/s.
    pub bytes_out_per_sec: f64,
    /// Sum over brokers of the CPU cores used.
    pub cpu_cores_used: f64,
    /// Brokers the load needs per dimension, before rounding and headroom.
    pub need_by_bytes_in: f64,
    pub need_by_bytes_out: f64,
    pub need_by_cpu: f64,
    /// The targets used.
    pub targets: AutoscaleTargets,
    /// Brokers whose load was measured (those that published one).
    pub measured_brokers: u32,
}

fn ratio(total: f64, target: f64) -> f64 {
    if target > 0.0 && total.is_finite() {
        (total / target).max(0.0)
    } else {
        0.0
    }
}

/// The broker count `loads` need with `current` brokers live.
pub fn recommend(loads: &[BrokerLoad], current: u32, targets: &AutoscaleTargets) -> Recommendation {
    let bytes_in: f64 = loads.iter().map(|l| l.bytes_in_per_sec).sum();
    let bytes_out: f64 = loads.iter().map(|l| l.bytes_out_per_sec).sum();
    let cpu: f64 = loads.iter().map(|l| l.cpu_cores_used).sum();
    let by_in = ratio(bytes_in, targets.bytes_in_per_sec);
    let by_out = ratio(bytes_out, targets.bytes_out_per_sec);
    let by_cpu = ratio(cpu, targets.cpu_cores);
    let (need, mut limited_by) = [(by_in, "bytes_in"), (by_out, "bytes_out"), (by_cpu, "cpu")]
        .into_iter()
        .fold((0.0_f64, "minimum"), |best, (n, what)| {
            if n > best.0 { (n, what) } else { best }
        });
    let at_once = need.ceil() as u32;
    let with_headroom = (need / (1.0 - SCALE_IN_HEADROOM)).ceil() as u32;
    let wanted = if at_once >= current {
        at_once
    } else {
        with_headroom.min(current)
    };
    let min = targets.min_brokers.max(1);
    let max = targets.max_brokers.max(min);
    let recommended = wanted.clamp(min, max);
    if recommended == min && wanted <= min {
        limited_by = "minimum";
    }
    Recommendation {
        recommended_brokers: recommended,
        current_brokers: current,
        limited_by: limited_by.to_string(),
        bytes_in_per_sec: bytes_in,
        bytes_out_per_sec: bytes_out,
        cpu_cores_used: cpu,
        need_by_bytes_in: by_in,
        need_by_bytes_out: by_out,
        need_by_cpu: by_cpu,
        targets: *targets,
        measured_brokers: loads.len() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(id: i32, bytes_in: f64, bytes_out: f64, cpu: f64) -> BrokerLoad {
        BrokerLoad {
            id,
            bytes_in_per_sec: bytes_in,
            bytes_out_per_sec: bytes_out,
            partitions: 0,
            cpu_cores_used: cpu,
            measured_ms: 0,
            hot_partitions: Vec::new(),
        }
    }

    const TARGETS: AutoscaleTargets = AutoscaleTargets {
        bytes_in_per_sec: 100.0,
        bytes_out_per_sec: 200.0,
        cpu_cores: 1.0,
        min_brokers: 1,
        max_brokers: 10,
    };

    #[test]
    fn scales_out_to_the_tightest_dimension() {
        let r = recommend(
            &[load(0, 150.0, 100.0, 0.5), load(1, 100.0, 100.0, 0.5)],
            2,
            &TARGETS,
        );
        assert_eq!(r.recommended_brokers, 3);
        assert_eq!(r.limited_by, "bytes_in");
        assert!((r.need_by_bytes_in - 2.5).abs() < 1e-9);
        let r = recommend(&[load(0, 10.0, 10.0, 3.2)], 1, &TARGETS);
        assert_eq!((r.recommended_brokers, r.limited_by.as_str()), (4, "cpu"));
    }

    #[test]
    fn scales_in_only_with_headroom() {
        // need 2.5 with 4 running: ceil(2.5 / 0.8) = 4 -> stay.
        let loads = [load(0, 250.0, 0.0, 0.0)];
        assert_eq!(recommend(&loads, 4, &TARGETS).recommended_brokers, 4);
        // need 1.5 with 4 running: ceil(1.5 / 0.8) = 2.
        let loads = [load(0, 150.0, 0.0, 0.0)];
        assert_eq!(recommend(&loads, 4, &TARGETS).recommended_brokers, 2);
        // At the boundary scaling out is immediate: need 2.01 with 2 running -> 3.
        let loads = [load(0, 201.0, 0.0, 0.0)];
        assert_eq!(recommend(&loads, 2, &TARGETS).recommended_brokers, 3);
    }

    #[test]
    fn bounds_and_idle_clusters() {
        let idle = recommend(&[], 3, &TARGETS);
        assert_eq!(
            (idle.recommended_brokers, idle.limited_by.as_str()),
            (1, "minimum")
        );
        let huge = recommend(&[load(0, 1e9, 0.0, 0.0)], 3, &TARGETS);
        assert_eq!(huge.recommended_brokers, 10);
        let floor = AutoscaleTargets {
            min_brokers: 3,
            ..TARGETS
        };
        assert_eq!(recommend(&[], 5, &floor).recommended_brokers, 3);
        // Nonsense targets (0) never divide by zero; NaN loads count as nothing.
        let zero = AutoscaleTargets {
            bytes_in_per_sec: 0.0,
            ..TARGETS
        };
        assert_eq!(
            recommend(&[load(0, f64::NAN, 0.0, 0.0)], 1, &zero).recommended_brokers,
            1
        );
    }
}
