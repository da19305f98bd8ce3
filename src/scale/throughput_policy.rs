//! The `throughput` policy: as many consumers as it takes to keep up with the producers
//! *and* drain the backlog in time, from the agent's own measured rates.
//!
//! ```text
//! per_consumer = consume_rate / current_replicas          (measured, records/s)
//! needed       = produce_rate + lag / catch_up_within     (records/s)
//! desired      = ceil(needed × (1 + headroom) / per_consumer)
//! ```
//!
//! `catch_up_within` comes from the SLO: "back under 30 s of lag within 10 min" means the
//! backlog must drain in 10 min. Unlike KEDA's `lag / lagThreshold`, the count follows
//! what one consumer really does, so a slow consumer gets more replicas and a fast one
//! fewer, and a burst that the current pool drains in time scales nothing.
//!
//! Pure: rates come in as [`Reading`]s (the caller passes them to
//! [`super::policy::decide`] too, which refuses stale ones).

use std::time::Duration;

use serde::Serialize;

use super::policy::{Estimate, Reading};

/// The `throughput` policy's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThroughputPolicy {
    /// The backlog must drain within this (> 0).
    pub catch_up_within: Duration,
    /// Extra capacity as a fraction (0.2 = 20 %), ≥ 0.
    pub headroom: f64,
    /// A consumer rate below this (records/s) is "not measured": no estimate.
    pub min_measured_rate: f64,
}

impl Default for ThroughputPolicy {
    fn default() -> Self {
        ThroughputPolicy { catch_up_within: Duration::from_secs(600), headroom: 0.0, min_measured_rate: 0.001 }
    }
}

/// The readings the formula uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThroughputInputs {
    /// Records/s produced to the consumed partitions.
    pub produce_rate: Reading,
    /// Records/s the whole group consumes (all replicas).
    pub consume_rate: Reading,
    /// Records behind, summed over partitions.
    pub lag: Reading,
}

impl ThroughputInputs {
    pub fn readings(&self) -> [Reading; 3] {
        [self.produce_rate, self.consume_rate, self.lag]
    }
}

fn finite_nonneg(x: f64) -> Option<f64> {
    (x.is_finite() && x >= 0.0).then_some(x)
}

/// The raw count for [`super::policy::decide`].
pub fn estimate(inputs: &ThroughputInputs, current_replicas: u32, cfg: &ThroughputPolicy) -> Estimate {
    let (Some(produce), Some(consume), Some(lag)) = (finite_nonneg(inputs.produce_rate.value), finite_nonneg(inputs.consume_rate.value), finite_nonneg(inputs.lag.value)) else {
        return Estimate::None { why: "a rate or the lag is negative or not a number".to_string() };
    };
    if current_replicas == 0 {
        return Estimate::None { why: "no running consumer to measure a per-consumer rate from".to_string() };
    }
    let per = consume / f64::from(current_replicas);
    if per < cfg.min_measured_rate {
        return Estimate::None { why: format!("per-consumer rate {per:.3}/s is not measurable (consumers stuck or idle)") };
    }
    let catch_up = cfg.catch_up_within.as_secs_f64().max(1.0);
    let needed = produce + lag / catch_up;
    let raw_f = (needed * (1.0 + cfg.headroom.max(0.0)) / per).ceil();
    let raw = if raw_f.is_finite() { raw_f.clamp(0.0, f64::from(u32::MAX)) as u32 } else { u32::MAX };
    let head = if cfg.headroom > 0.0 { format!(" × {:.2}", 1.0 + cfg.headroom) } else { String::new() };
    let formula = format!(
        "ceil((produce {produce:.1}/s + lag {lag:.0} / {}){head} / per-consumer {per:.1}/s) = {raw}",
        humantime::format_duration(Duration::from_secs(catch_up as u64))
    );
    Estimate::Replicas { raw, formula }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn inputs(produce: f64, consume: f64, lag: f64) -> ThroughputInputs {
        let at = SystemTime::UNIX_EPOCH;
        ThroughputInputs { produce_rate: Reading::fresh(produce, at), consume_rate: Reading::fresh(consume, at), lag: Reading::fresh(lag, at) }
    }

    fn raw(e: Estimate) -> u32 {
        match e {
            Estimate::Replicas { raw, .. } => raw,
            Estimate::None { why } => panic!("no estimate: {why}"),
        }
    }

    #[test]
    fn a_slow_consumer_behind_a_faster_producer_gets_enough_replicas_to_catch_up() {
        // 1 consumer at 20/s, producer 50/s, 6000 behind, drain in 10 min: 50 + 10 = 60/s → 3.
        let e = estimate(&inputs(50.0, 20.0, 6000.0), 1, &ThroughputPolicy::default());
        assert_eq!(raw(e.clone()), 3);
        let Estimate::Replicas { formula, .. } = e else { unreachable!() };
        assert_eq!(formula, "ceil((produce 50.0/s + lag 6000 / 10m) / per-consumer 20.0/s) = 3");
    }

    #[test]
    fn a_pool_that_keeps_up_keeps_its_size_and_a_burst_it_drains_in_time_scales_nothing() {
        assert_eq!(raw(estimate(&inputs(100.0, 100.0, 0.0), 4, &ThroughputPolicy::default())), 4);
        // 4 × 30/s = 120/s; produce 100 + 6000/600 = 110 ≤ 120.
        assert_eq!(raw(estimate(&inputs(100.0, 120.0, 6000.0), 4, &ThroughputPolicy::default())), 4);
    }

    #[test]
    fn an_idle_pool_scales_down_to_what_the_production_needs() {
        // 6 consumers measured at 10/s each (60/s total), producer 15/s, no lag → 2.
        assert_eq!(raw(estimate(&inputs(15.0, 60.0, 0.0), 6, &ThroughputPolicy::default())), 2);
    }

    #[test]
    fn headroom_adds_capacity() {
        let cfg = ThroughputPolicy { headroom: 0.5, ..ThroughputPolicy::default() };
        assert_eq!(raw(estimate(&inputs(40.0, 20.0, 0.0), 1, &cfg)), 3);
    }

    #[test]
    fn no_estimate_without_a_measured_per_consumer_rate_or_with_bad_numbers() {
        for (i, n) in [(inputs(10.0, 0.0, 100.0), 1), (inputs(10.0, 10.0, 100.0), 0), (inputs(f64::NAN, 1.0, 0.0), 1), (inputs(1.0, 1.0, -5.0), 1)].into_iter().enumerate() {
            assert!(matches!(estimate(&n.0, n.1, &ThroughputPolicy::default()), Estimate::None { .. }), "case {i}");
        }
    }
}
