//! The `lag` policy: KEDA's Kafka scaler formula, so a KEDA user can move to streamguard
//! and get the same replica counts, then turn on what KEDA lacks (see
//! [`super::throughput_policy`] and [`super::effectiveness`]).
//!
//! KEDA (Apache Kafka scaler, documented at keda.sh/docs/latest/scalers/apache-kafka):
//! - per partition, lag = log end offset − committed offset; a partition with no
//!   committed offset counts 1 with `offsetResetPolicy: latest` (0 with
//!   `scaleToZeroOnInvalidOffset: true`) and its whole log with `earliest`;
//! - total lag = the sum; unless `allowIdleConsumers` is set (or whenever
//!   `limitToPartitionsWithLag` is), the total is capped at `upper × lagThreshold`, where
//!   upper is the partition count (or the number of partitions with lag > 0), when
//!   `total / lagThreshold` in *integer* division exceeds upper (as KEDA's source does,
//!   so one replica above the partition count is possible, e.g. lag 35 / 10 on 3);
//! - the HPA's AverageValue target is `lagThreshold`, so replicas =
//!   ceil(total / lagThreshold), bounded by min/max replica counts;
//! - the scaler is *active* only while the uncapped total lag > `activationLagThreshold`; an inactive
//!   scaler with `minReplicaCount: 0` scales to zero, an active one to at least 1.
//!
//! Deliberate differences, documented in the README: a committed offset beyond the log
//! end counts 0 (KEDA issue #2612 scaled such groups to max); the HPA's 10 % tolerance is
//! not applied (streamguard's stabilization and min interval do that job).
//!
//! Pure: the lag comes in as numbers; [`estimate`] returns the raw count and its arithmetic.

use serde::{Deserialize, Serialize};

use super::policy::Estimate;

/// What KEDA assumes for a partition without a committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetResetPolicy {
    #[default]
    Latest,
    Earliest,
}

/// The `lag` policy's settings (KEDA's names in snake case).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagPolicy {
    /// Target lag per replica (KEDA `lagThreshold`, default 10); > 0.
    pub lag_threshold: u64,
    /// The scaler is active above this total lag (KEDA `activationLagThreshold`, default 0).
    pub activation_lag_threshold: u64,
    pub allow_idle_consumers: bool,
    pub limit_to_partitions_with_lag: bool,
    pub offset_reset_policy: OffsetResetPolicy,
    pub scale_to_zero_on_invalid_offset: bool,
}

impl Default for LagPolicy {
    fn default() -> Self {
        LagPolicy { lag_threshold: 10, activation_lag_threshold: 0, allow_idle_consumers: false, limit_to_partitions_with_lag: false, offset_reset_policy: OffsetResetPolicy::Latest, scale_to_zero_on_invalid_offset: false }
    }
}

/// One partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// `None`: the group has no committed offset for it.
    pub committed: Option<i64>,
    pub log_end: i64,
}

/// The total lag as KEDA computes it (after the idle-consumer cap), and the partition
/// counts behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KedaLag {
    pub total: u64,
    pub uncapped: u64,
    pub partitions: u64,
    pub partitions_with_lag: u64,
}

fn partition_lag(p: &PartitionOffsets, cfg: &LagPolicy) -> u64 {
    match p.committed {
        None | Some(..0) => match cfg.offset_reset_policy {
            OffsetResetPolicy::Latest => u64::from(!cfg.scale_to_zero_on_invalid_offset),
            OffsetResetPolicy::Earliest => p.log_end.max(0) as u64,
        },
        Some(c) => p.log_end.saturating_sub(c).max(0) as u64,
    }
}

/// KEDA's total lag over `partitions`.
pub fn keda_lag(partitions: &[PartitionOffsets], cfg: &LagPolicy) -> KedaLag {
    let lags: Vec<u64> = partitions.iter().map(|p| partition_lag(p, cfg)).collect();
    let uncapped = lags.iter().fold(0u64, |a, l| a.saturating_add(*l));
    let with_lag = lags.iter().filter(|l| **l > 0).count() as u64;
    let n = partitions.len() as u64;
    let mut total = uncapped;
    if !cfg.allow_idle_consumers || cfg.limit_to_partitions_with_lag {
        let upper = if cfg.limit_to_partitions_with_lag { with_lag } else { n };
        let thr = cfg.lag_threshold.max(1);
        if total / thr > upper {
            total = upper.saturating_mul(thr);
        }
    }
    KedaLag { total, uncapped, partitions: n, partitions_with_lag: with_lag }
}

/// The replica count KEDA (with the HPA, tolerance aside) would set: the whole
/// ScaledObject, including `minReplicaCount`/`maxReplicaCount`.
pub fn keda_replicas(lag: &KedaLag, cfg: &LagPolicy, min_replicas: u32, max_replicas: u32) -> u32 {
    // KEDA decides activity on the uncapped total (`totalLagWithPersistent`).
    let active = lag.uncapped > cfg.activation_lag_threshold;
    if !active && min_replicas == 0 {
        return 0;
    }
    let raw = lag.total.div_ceil(cfg.lag_threshold.max(1));
    let floor = min_replicas.max(1);
    (raw.min(u64::from(u32::MAX)) as u32).clamp(floor, max_replicas.max(floor))
}

/// The raw count for [`super::policy::decide`], which applies min/max and the rest.
/// Activation only matters for scaling to and from zero, as in KEDA: with
/// `min_replicas` ≥ 1 the count follows the lag even below the activation threshold.
pub fn estimate(partitions: &[PartitionOffsets], cfg: &LagPolicy, min_replicas: u32) -> Estimate {
    if partitions.is_empty() {
        return Estimate::None { why: "no partitions known for the group".to_string() };
    }
    let lag = keda_lag(partitions, cfg);
    let thr = cfg.lag_threshold.max(1);
    if lag.uncapped <= cfg.activation_lag_threshold && min_replicas == 0 {
        return Estimate::Replicas { raw: 0, formula: format!("lag {} ≤ activation threshold {}: inactive", lag.uncapped, cfg.activation_lag_threshold) };
    }
    let raw = lag.total.div_ceil(thr).min(u64::from(u32::MAX)) as u32;
    let cap = if lag.total != lag.uncapped {
        let what = if cfg.limit_to_partitions_with_lag { format!("{} partitions with lag", lag.partitions_with_lag) } else { format!("{} partitions", lag.partitions) };
        format!(" (lag {} capped at {what} × {thr})", lag.uncapped)
    } else {
        String::new()
    };
    Estimate::Replicas { raw, formula: format!("ceil(lag {} / threshold {thr}) = {raw}{cap}", lag.total) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(lags: &[i64]) -> Vec<PartitionOffsets> {
        lags.iter().map(|l| PartitionOffsets { committed: Some(1000), log_end: 1000 + l }).collect()
    }

    /// Test (d): replica counts from KEDA's documented formula, worked out by hand
    /// (not by calling the code under test): replicas = ceil(totalLag / lagThreshold),
    /// total capped at partitions × threshold unless allowIdleConsumers, 0 when inactive
    /// and minReplicaCount is 0, bounded by min/max.
    #[test]
    fn lag_policy_gives_the_same_replica_counts_as_kedas_documented_formula() {
        struct Case {
            lags: &'static [i64],
            threshold: u64,
            activation: u64,
            idle: bool,
            with_lag_only: bool,
            min: u32,
            max: u32,
            keda: u32,
        }
        #[rustfmt::skip]
        let cases = [
            // no lag, minReplicaCount 0: inactive → 0
            Case { lags: &[0, 0, 0], threshold: 10, activation: 0, idle: false, with_lag_only: false, min: 0, max: 10, keda: 0 },
            // no lag, minReplicaCount 1: 1
            Case { lags: &[0, 0, 0], threshold: 10, activation: 0, idle: false, with_lag_only: false, min: 1, max: 10, keda: 1 },
            // lag 1: active, ceil(1/10) = 1
            Case { lags: &[1, 0, 0], threshold: 10, activation: 0, idle: false, with_lag_only: false, min: 0, max: 10, keda: 1 },
            // lag 25 = ceil(2.5) = 3
            Case { lags: &[10, 10, 5], threshold: 10, activation: 0, idle: false, with_lag_only: false, min: 0, max: 10, keda: 3 },
            // lag 30 exactly: 3
            Case { lags: &[10, 10, 10], threshold: 10, activation: 0, idle: false, with_lag_only: false, min: 0, max: 10, keda: 3 },
            // lag 1000 on 3 partitions: capped at 3 partitions
            Case { lags: &[900, 50, 50], threshold: 10, activation: 0, idle: false, with_lag_only: false, min: 0, max: 10, keda: 3 },
            // same with allowIdleConsumers: 100, then maxReplicaCount 10
            Case { lags: &[900, 50, 50], threshold: 10, activation: 0, idle: true, with_lag_only: false, min: 0, max: 10, keda: 10 },
            // allowIdleConsumers within max: ceil(45/10) = 5 on 3 partitions
            Case { lags: &[15, 15, 15], threshold: 10, activation: 0, idle: true, with_lag_only: false, min: 0, max: 10, keda: 5 },
            // limitToPartitionsWithLag: 1 of 4 partitions lags → at most 1
            Case { lags: &[500, 0, 0, 0], threshold: 10, activation: 0, idle: false, with_lag_only: true, min: 0, max: 10, keda: 1 },
            // lag 5 ≤ activation 5, min 0: inactive → 0
            Case { lags: &[5, 0], threshold: 2, activation: 5, idle: false, with_lag_only: false, min: 0, max: 10, keda: 0 },
            // lag 6 > activation 5: ceil(6/2) = 3 ≥ 2 partitions? capped at 2
            Case { lags: &[6, 0], threshold: 2, activation: 5, idle: false, with_lag_only: false, min: 0, max: 10, keda: 2 },
            // activation only matters for 0↔1: min 1 and lag below activation → ceil(4/2) = 2
            Case { lags: &[2, 2], threshold: 2, activation: 5, idle: false, with_lag_only: false, min: 1, max: 10, keda: 2 },
            // minReplicaCount above the formula
            Case { lags: &[1, 1, 1, 1], threshold: 10, activation: 0, idle: false, with_lag_only: false, min: 3, max: 10, keda: 3 },
            // threshold 1, 12 partitions, lag 7: 7
            Case { lags: &[1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0], threshold: 1, activation: 0, idle: false, with_lag_only: false, min: 0, max: 20, keda: 7 },
            // KEDA's source compares the cap with integer division (kafka_scaler.go
            // getTotalLag: `totalLag / lagThreshold > upperBound`): lag 35, threshold 10,
            // 3 partitions → 35/10 = 3 is not > 3, so no cap, and ceil(3.5) = 4 replicas
            Case { lags: &[15, 10, 10], threshold: 10, activation: 0, idle: false, with_lag_only: false, min: 0, max: 10, keda: 4 },
            // negative lag (committed beyond log end) counts 0, not max (KEDA #2612)
            Case { lags: &[-50, 0], threshold: 10, activation: 0, idle: false, with_lag_only: false, min: 0, max: 10, keda: 0 },
        ];
        for (i, c) in cases.iter().enumerate() {
            let cfg = LagPolicy { lag_threshold: c.threshold, activation_lag_threshold: c.activation, allow_idle_consumers: c.idle, limit_to_partitions_with_lag: c.with_lag_only, ..LagPolicy::default() };
            let lag = keda_lag(&parts(c.lags), &cfg);
            assert_eq!(keda_replicas(&lag, &cfg, c.min, c.max), c.keda, "case {i}: lags {:?} threshold {}", c.lags, c.threshold);
            // The policy's raw estimate, once bounded like KEDA bounds it, agrees.
            let Estimate::Replicas { raw, .. } = estimate(&parts(c.lags), &cfg, c.min) else { panic!("case {i}: no estimate") };
            let bounded = if raw == 0 && c.min == 0 { 0 } else { raw.clamp(c.min.max(1), c.max) };
            assert_eq!(bounded, c.keda, "case {i}: estimate {raw}");
        }
    }

    #[test]
    fn partitions_without_a_committed_offset_follow_the_reset_policy() {
        let p = [PartitionOffsets { committed: None, log_end: 500 }, PartitionOffsets { committed: Some(0), log_end: 0 }];
        let latest = LagPolicy::default();
        assert_eq!(keda_lag(&p, &latest).total, 1);
        let zero = LagPolicy { scale_to_zero_on_invalid_offset: true, ..LagPolicy::default() };
        assert_eq!(keda_lag(&p, &zero).total, 0);
        let earliest = LagPolicy { offset_reset_policy: OffsetResetPolicy::Earliest, allow_idle_consumers: true, ..LagPolicy::default() };
        assert_eq!(keda_lag(&p, &earliest).total, 500);
    }

    #[test]
    fn the_estimate_says_why_in_one_line() {
        let Estimate::Replicas { raw, formula } = estimate(&parts(&[900, 50, 50]), &LagPolicy::default(), 0) else { panic!() };
        assert_eq!(raw, 3);
        assert_eq!(formula, "ceil(lag 30 / threshold 10) = 3 (lag 1000 capped at 3 partitions × 10)");
        assert!(matches!(estimate(&[], &LagPolicy::default(), 0), Estimate::None { .. }));
    }
}
