//! The constraints every scaling policy shares, as one pure function: a formula's raw
//! replica count goes in with the evidence, the target's current count and its recent
//! history; a [`Decision`] (scale to N, or hold and why) comes out with the next
//! history. No clock, no I/O: `now` is an argument.
//!
//! # Guarantees (checked in this order; the first that holds decides)
//! 1. Never on stale or missing data: any input that is not `fresh`, or older than
//!    [`Constraints::max_data_age`], holds with [`HoldReason::StaleData`].
//! 2. Never during a rebalance: a group that is rebalancing, or whose state is unknown,
//!    holds with [`HoldReason::Rebalancing`].
//! 3. The target is clamped to `[min_replicas, max_replicas]`, optionally rounded up to a
//!    divisor of the partition count (so every consumer gets the same number of
//!    partitions), then limited to `max_step` replicas per change. The step limit wins
//!    over the alignment.
//! 4. Scale-down stabilization (as the HPA's `behavior.scaleDown.stabilizationWindowSeconds`):
//!    a scale-down goes only to the *highest* recommendation seen within the window, so
//!    a dip shorter than the window never removes replicas.
//! 5. A scale-out blocked by the ineffective-scale detector holds with
//!    [`HoldReason::ScaleOutBlocked`] (scale-downs still pass).
//! 6. Changes are at least `min_interval` apart, or `rebalance_cost_factor ×` the last
//!    measured rebalance duration if that is longer: each change costs a rebalance.
//!
//! # Not done here
//! Computing the raw count (see [`super::lag_policy`], [`super::throughput_policy`]),
//! acting, or journaling: the caller keeps the returned [`History`].

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::signal::Quality;

/// At most this many recommendations are kept for the stabilization window (one per
/// evaluation; older ones fall out first), so the history is bounded whatever the window.
pub const MAX_RECOMMENDATIONS: usize = 1024;

/// One input of a policy, with its quality and the time it was measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reading {
    pub value: f64,
    pub quality: Quality,
    #[serde(with = "unix_secs_serde")]
    pub at: SystemTime,
}

impl Reading {
    pub fn fresh(value: f64, at: SystemTime) -> Reading {
        Reading { value, quality: Quality::Fresh, at }
    }
}

mod unix_secs_serde {
    use std::time::SystemTime;
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(crate::signal::unix_secs(*t))
    }
}

/// The consumer group's rebalance state as last sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    Stable,
    Rebalancing,
    Unknown,
}

/// The shared limits of one scaling target (validated by [`super::config`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Constraints {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Most replicas added or removed by one change.
    pub max_step: u32,
    /// Round the target up to a divisor of the partition count.
    pub align_to_partitions: bool,
    pub min_interval: Duration,
    /// Changes are also at least this many times the last measured rebalance apart.
    pub rebalance_cost_factor: f64,
    pub scale_down_stabilization: Duration,
    /// Inputs older than this count as stale even when marked fresh.
    pub max_data_age: Duration,
}

impl Default for Constraints {
    fn default() -> Self {
        Constraints {
            min_replicas: 1,
            max_replicas: 10,
            max_step: 4,
            align_to_partitions: false,
            min_interval: Duration::from_secs(60),
            rebalance_cost_factor: 3.0,
            scale_down_stabilization: Duration::from_secs(300),
            max_data_age: Duration::from_secs(120),
        }
    }
}

/// What the policy knows of the target right now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Context {
    pub current: u32,
    /// Partitions of the consumed topic(s); unknown disables the alignment.
    pub partitions: Option<u32>,
    pub group_state: GroupState,
    /// How long the last rebalance took (from the group's rebalance signal), if measured.
    pub last_rebalance: Option<Duration>,
    /// Scale-outs are blocked until then by the ineffective-scale detector.
    #[serde(skip)]
    pub scale_out_blocked_until: Option<SystemTime>,
}

/// What the policy remembers between evaluations (the caller stores it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub last_change: Option<SystemTime>,
    /// (time, recommended replicas after min/max/alignment), oldest first.
    pub recommendations: VecDeque<(SystemTime, u32)>,
}

/// Why nothing changes; a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    AtDesired,
    StaleData,
    Rebalancing,
    MinInterval,
    Stabilizing,
    ScaleOutBlocked,
    /// The formula could not compute a count (e.g. no measured consume rate).
    NoEstimate,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::AtDesired => "at_desired",
            HoldReason::StaleData => "stale_data",
            HoldReason::Rebalancing => "rebalancing",
            HoldReason::MinInterval => "min_interval",
            HoldReason::Stabilizing => "stabilizing",
            HoldReason::ScaleOutBlocked => "scale_out_blocked",
            HoldReason::NoEstimate => "no_estimate",
        }
    }
}

/// The outcome of one evaluation, with the numbers that decided it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Scale { from: u32, to: u32, raw: u32, why: String },
    Hold { replicas: u32, raw: Option<u32>, reason: HoldReason, why: String },
}

impl Decision {
    pub fn why(&self) -> &str {
        match self {
            Decision::Scale { why, .. } | Decision::Hold { why, .. } => why,
        }
    }

    /// The count to scale to, if any.
    pub fn target(&self) -> Option<u32> {
        match self {
            Decision::Scale { to, .. } => Some(*to),
            Decision::Hold { .. } => None,
        }
    }
}

/// A formula's result: a raw count and the one-line arithmetic behind it, or why there
/// is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Estimate {
    Replicas { raw: u32, formula: String },
    None { why: String },
}

fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(if d.is_zero() { 0 } else { 1 }))).to_string()
}

/// The smallest divisor of `partitions` that is ≥ `n`, if one is ≤ `max`; else `n`.
pub fn align_up(n: u32, partitions: u32, max: u32) -> u32 {
    if partitions == 0 {
        return n;
    }
    (n.max(1)..=partitions.min(max)).find(|d| partitions % d == 0).unwrap_or(n)
}

/// Applies the shared constraints to a formula's estimate. Pure; see the module doc for
/// the order of the checks. `inputs` are every reading the formula used.
pub fn decide(estimate: &Estimate, inputs: &[Reading], ctx: &Context, c: &Constraints, history: &History, now: SystemTime) -> (Decision, History) {
    let mut next = history.clone();
    let hold = |reason: HoldReason, raw: Option<u32>, why: String| Decision::Hold { replicas: ctx.current, raw, reason, why };

    if let Some(bad) = inputs.iter().find(|r| r.quality != Quality::Fresh || now.duration_since(r.at).unwrap_or_default() > c.max_data_age) {
        let age = now.duration_since(bad.at).unwrap_or_default();
        let why = format!("holding at {}: input is {} (measured {} ago, limit {}); stale data never scales", ctx.current, bad.quality.as_str(), secs(age), secs(c.max_data_age));
        return (hold(HoldReason::StaleData, None, why), next);
    }
    match ctx.group_state {
        GroupState::Stable => {}
        GroupState::Rebalancing => return (hold(HoldReason::Rebalancing, None, format!("holding at {}: the group is rebalancing", ctx.current)), next),
        GroupState::Unknown => return (hold(HoldReason::Rebalancing, None, format!("holding at {}: the group's rebalance state is unknown", ctx.current)), next),
    }
    let (raw, formula) = match estimate {
        Estimate::Replicas { raw, formula } => (*raw, formula.clone()),
        Estimate::None { why } => return (hold(HoldReason::NoEstimate, None, format!("holding at {}: {why}", ctx.current)), next),
    };

    // Bounds and alignment give the recommendation.
    let mut rec = raw.clamp(c.min_replicas, c.max_replicas);
    let mut notes = Vec::new();
    if rec != raw {
        notes.push(format!("bounded to [{}, {}]", c.min_replicas, c.max_replicas));
    }
    if c.align_to_partitions {
        if let Some(p) = ctx.partitions {
            let a = align_up(rec, p, c.max_replicas);
            if a != rec {
                notes.push(format!("aligned to a divisor of {p} partitions"));
                rec = a;
            }
        }
    }
    while next.recommendations.len() >= MAX_RECOMMENDATIONS {
        next.recommendations.pop_front();
    }
    next.recommendations.push_back((now, rec));
    while next.recommendations.front().is_some_and(|(t, _)| now.duration_since(*t).unwrap_or_default() > c.scale_down_stabilization) {
        next.recommendations.pop_front();
    }

    let mut target = rec;
    if target < ctx.current {
        let highest = next.recommendations.iter().map(|(_, r)| *r).max().unwrap_or(target).min(ctx.current);
        if highest > target {
            notes.push(format!("stabilized at the highest recommendation ({highest}) of the last {}", secs(c.scale_down_stabilization)));
            target = highest;
        }
    }
    let step = c.max_step.max(1);
    if target > ctx.current.saturating_add(step) {
        target = ctx.current.saturating_add(step);
        notes.push(format!("limited to +{step} per change"));
    } else if target.saturating_add(step) < ctx.current {
        target = ctx.current - step;
        notes.push(format!("limited to -{step} per change"));
    }
    let detail = if notes.is_empty() { formula } else { format!("{formula}; {}", notes.join(", ")) };

    if target == ctx.current {
        let reason = if rec < ctx.current { HoldReason::Stabilizing } else { HoldReason::AtDesired };
        return (hold(reason, Some(raw), format!("holding at {}: {detail}", ctx.current)), next);
    }
    if target > ctx.current {
        if let Some(until) = ctx.scale_out_blocked_until.filter(|u| *u > now) {
            let left = until.duration_since(now).unwrap_or_default();
            return (hold(HoldReason::ScaleOutBlocked, Some(raw), format!("holding at {}: scale-out ineffective earlier, blocked for {} more ({detail})", ctx.current, secs(left))), next);
        }
    }
    let cost = ctx.last_rebalance.map(|d| d.mul_f64(c.rebalance_cost_factor.max(0.0)));
    let interval = cost.map_or(c.min_interval, |k| k.max(c.min_interval));
    if let Some(last) = history.last_change {
        let since = now.duration_since(last).unwrap_or_default();
        if since < interval {
            let rb = ctx.last_rebalance.map(|d| format!(", last rebalance took {}", secs(d))).unwrap_or_default();
            let why = format!("holding at {} (wants {target}): last change {} ago, min interval {}{rb} ({detail})", ctx.current, secs(since), secs(interval));
            return (hold(HoldReason::MinInterval, Some(raw), why), next);
        }
    }
    next.last_change = Some(now);
    let why = format!("{} → {target}: {detail}", ctx.current);
    (Decision::Scale { from: ctx.current, to: target, raw, why }, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn ctx(current: u32) -> Context {
        Context { current, partitions: Some(12), group_state: GroupState::Stable, last_rebalance: None, scale_out_blocked_until: None }
    }

    fn est(raw: u32) -> Estimate {
        Estimate::Replicas { raw, formula: format!("raw {raw}") }
    }

    fn c() -> Constraints {
        Constraints { min_replicas: 1, max_replicas: 12, max_step: 3, min_interval: Duration::from_secs(60), rebalance_cost_factor: 3.0, scale_down_stabilization: Duration::from_secs(300), max_data_age: Duration::from_secs(60), align_to_partitions: false }
    }

    #[test]
    fn stale_or_old_input_never_scales() {
        let stale = Reading { value: 1.0, quality: Quality::Stale, at: t(100) };
        let (d, _) = decide(&est(5), &[stale], &ctx(1), &c(), &History::default(), t(100));
        assert!(matches!(d, Decision::Hold { reason: HoldReason::StaleData, .. }), "{d:?}");
        let old = Reading::fresh(1.0, t(0));
        let (d, _) = decide(&est(5), &[old], &ctx(1), &c(), &History::default(), t(100));
        assert!(matches!(d, Decision::Hold { reason: HoldReason::StaleData, .. }), "{d:?}");
        assert!(d.why().contains("stale data never scales"), "{}", d.why());
    }

    #[test]
    fn rebalancing_or_unknown_group_state_holds() {
        for gs in [GroupState::Rebalancing, GroupState::Unknown] {
            let mut x = ctx(1);
            x.group_state = gs;
            let (d, _) = decide(&est(5), &[Reading::fresh(1.0, t(0))], &x, &c(), &History::default(), t(0));
            assert!(matches!(d, Decision::Hold { reason: HoldReason::Rebalancing, .. }), "{d:?}");
        }
    }

    #[test]
    fn bounds_and_max_step_limit_a_scale_out() {
        let (d, h) = decide(&est(40), &[], &ctx(2), &c(), &History::default(), t(0));
        assert_eq!(d.target(), Some(5), "{d:?}");
        assert!(d.why().contains("bounded to [1, 12]") && d.why().contains("+3 per change"), "{}", d.why());
        assert_eq!(h.last_change, Some(t(0)));
    }

    #[test]
    fn alignment_rounds_up_to_a_divisor_of_the_partitions() {
        assert_eq!(align_up(5, 12, 12), 6);
        assert_eq!(align_up(7, 12, 12), 12);
        assert_eq!(align_up(7, 12, 10), 7, "no divisor within max: unchanged");
        assert_eq!(align_up(0, 12, 12), 1);
        let mut cc = c();
        cc.align_to_partitions = true;
        cc.max_step = 10;
        let (d, _) = decide(&est(5), &[], &ctx(1), &cc, &History::default(), t(0));
        assert_eq!(d.target(), Some(6), "{d:?}");
    }

    #[test]
    fn changes_are_at_least_the_min_interval_or_the_rebalance_cost_apart() {
        let h = History { last_change: Some(t(0)), ..History::default() };
        let (d, _) = decide(&est(3), &[], &ctx(2), &c(), &h, t(30));
        assert!(matches!(d, Decision::Hold { reason: HoldReason::MinInterval, .. }), "{d:?}");
        let (d, _) = decide(&est(3), &[], &ctx(2), &c(), &h, t(61));
        assert_eq!(d.target(), Some(3));
        let mut x = ctx(2);
        x.last_rebalance = Some(Duration::from_secs(40));
        let (d, _) = decide(&est(3), &[], &x, &c(), &h, t(61));
        assert!(matches!(d, Decision::Hold { reason: HoldReason::MinInterval, .. }), "{d:?}");
        assert!(d.why().contains("last rebalance took 40s") && d.why().contains("min interval 2m"), "{}", d.why());
        let (d, _) = decide(&est(3), &[], &x, &c(), &h, t(121));
        assert_eq!(d.target(), Some(3));
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let mut h = History::default();
        let (d, h1) = decide(&est(6), &[], &ctx(6), &c(), &h, t(0));
        assert!(matches!(d, Decision::Hold { reason: HoldReason::AtDesired, .. }));
        h = h1;
        // Load drops at t=10: every recommendation says 2, but 6 was seen within 300 s.
        for s in (10..=300).step_by(10) {
            let (d, next) = decide(&est(2), &[], &ctx(6), &c(), &h, t(s));
            assert!(matches!(d, Decision::Hold { reason: HoldReason::Stabilizing, .. }), "at {s}: {d:?}");
            h = next;
        }
        let (d, _) = decide(&est(2), &[], &ctx(6), &c(), &h, t(301));
        assert_eq!(d.target(), Some(3), "down by at most max_step once the 6 left the window: {d:?}");
    }

    #[test]
    fn a_short_dip_inside_the_window_does_not_scale_down_below_the_highest() {
        let mut h = History::default();
        for (s, raw) in [(0, 6), (100, 4), (200, 5)] {
            h = decide(&est(raw), &[], &ctx(6), &c(), &h, t(s)).1;
        }
        let (d, _) = decide(&est(2), &[], &ctx(6), &c(), &h, t(350));
        // 6 left the window (older than 300 s); 5 (t=200) is the highest left.
        assert_eq!(d.target(), Some(5), "{d:?}");
    }

    #[test]
    fn a_blocked_scale_out_holds_but_a_scale_down_passes() {
        let mut x = ctx(2);
        x.scale_out_blocked_until = Some(t(100));
        let (d, _) = decide(&est(4), &[], &x, &c(), &History::default(), t(50));
        assert!(matches!(d, Decision::Hold { reason: HoldReason::ScaleOutBlocked, .. }), "{d:?}");
        let (d, _) = decide(&est(4), &[], &x, &c(), &History::default(), t(100));
        assert_eq!(d.target(), Some(4));
        let mut cc = c();
        cc.scale_down_stabilization = Duration::ZERO;
        let (d, _) = decide(&est(1), &[], &x, &cc, &History::default(), t(50));
        assert_eq!(d.target(), Some(1));
    }

    #[test]
    fn history_stays_bounded() {
        let mut h = History::default();
        let mut cc = c();
        cc.scale_down_stabilization = Duration::from_secs(u32::MAX as u64);
        for s in 0..(MAX_RECOMMENDATIONS as u64 + 50) {
            h = decide(&est(3), &[], &ctx(3), &cc, &h, t(s)).1;
        }
        assert_eq!(h.recommendations.len(), MAX_RECOMMENDATIONS);
    }
}
