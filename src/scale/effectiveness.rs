//! Ineffective-scale detection: after a scale-out, did the consume rate rise? A pure
//! state machine per target, stepped by the caller with the time and the latest consume
//! rate; it returns the next state and, when something is decided, a [`Finding`].
//!
//! ```text
//!            scale-out recorded                       rate ≥ baseline × (1 + min_rise)
//!   Idle ───────────────────────────▶ Verifying ────────────────────────────────▶ Idle  (Effective)
//!    ▲                                  │ window over, rate fresh but too low
//!    │ cooldown over                    ▼
//!    └──────────────────────────── Blocked { until }   (Ineffective: roll back to `from`)
//! ```
//!
//! A scale-out that does not help has a cause more replicas cannot fix: a per-record
//! bottleneck, one hot partition, a downstream limit. Rolling back returns the
//! rebalance-free capacity; blocking stops a policy from trying again every tick. The
//! Flink Kubernetes operator does this for Flink; this does it for plain consumers.
//!
//! # Guarantees
//! - Stale data never rolls back: when the window ends without a fresh rate, the finding
//!   is [`Finding::Inconclusive`] and nothing is blocked.
//! - A scale-down, or a rollback, while verifying ends the verification without a finding
//!   (the count the verification was about is gone).
//! - While blocked, [`scale_out_blocked_until`] says until when; scale-downs stay allowed.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::policy::Reading;
use crate::signal::Quality;

/// Settings of the detector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effectiveness {
    /// The consume rate must rise by at least this fraction of its pre-scale value
    /// (0.2 = 20 %), > 0.
    pub min_rise: f64,
    /// How long after the scale-out the rise may take (covers the rebalance).
    pub verify_within: Duration,
    /// How long further scale-outs stay blocked after an ineffective one.
    pub cooldown: Duration,
}

impl Default for Effectiveness {
    fn default() -> Self {
        Effectiveness { min_rise: 0.2, verify_within: Duration::from_secs(180), cooldown: Duration::from_secs(1800) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Idle,
    Verifying {
        from: u32,
        to: u32,
        baseline: f64,
        #[serde(skip)]
        since: SystemTime,
        /// The highest fresh rate seen so far.
        best: Option<f64>,
    },
    Blocked {
        from: u32,
        to: u32,
        #[serde(skip)]
        until: SystemTime,
    },
}

/// What happened to the target's replica count since the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// The count changed from → to (by a decision or a rollback).
    Scaled { from: u32, to: u32 },
}

/// A decision of the detector, for the audit, the signal and the notifier.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    Effective { from: u32, to: u32, baseline: f64, rate: f64, why: String },
    /// Roll back to `from`; scale-outs are blocked until `blocked_for` has passed.
    Ineffective { from: u32, to: u32, baseline: f64, best: f64, why: String, #[serde(skip)] blocked_for: Duration },
    Inconclusive { from: u32, to: u32, why: String },
    /// The block ended.
    Unblocked { why: String },
}

impl Finding {
    /// Bounded label value.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Effective { .. } => "effective",
            Finding::Ineffective { .. } => "ineffective",
            Finding::Inconclusive { .. } => "inconclusive",
            Finding::Unblocked { .. } => "unblocked",
        }
    }
}

/// Until when scale-outs are blocked, if they are.
pub fn scale_out_blocked_until(state: &State, now: SystemTime) -> Option<SystemTime> {
    match state {
        State::Blocked { until, .. } if *until > now => Some(*until),
        _ => None,
    }
}

fn fresh_rate(r: Option<&Reading>) -> Option<f64> {
    r.filter(|r| r.quality == Quality::Fresh && r.value.is_finite() && r.value >= 0.0).map(|r| r.value)
}

/// One step. `rate_before` is the consume rate measured before `change` (the baseline
/// of a scale-out); `rate` is the latest.
pub fn step(state: &State, change: Change, rate_before: Option<&Reading>, rate: Option<&Reading>, cfg: &Effectiveness, now: SystemTime) -> (State, Option<Finding>) {
    // A new change first: it starts or ends a verification.
    if let Change::Scaled { from, to } = change {
        if let State::Blocked { .. } = state {
            // A scale-down (or the rollback itself) while blocked keeps the block.
            if to <= from {
                return (state.clone(), None);
            }
        }
        if to > from {
            return match fresh_rate(rate_before) {
                Some(baseline) => (State::Verifying { from, to, baseline, since: now, best: None }, None),
                None => (State::Idle, Some(Finding::Inconclusive { from, to, why: format!("scale-out {from} → {to} not verified: no fresh consume rate before it") })),
            };
        }
        if let State::Verifying { .. } = state {
            return (State::Idle, None);
        }
        return (state.clone(), None);
    }
    match state {
        State::Idle => (State::Idle, None),
        State::Blocked { until, .. } => {
            if now >= *until {
                (State::Idle, Some(Finding::Unblocked { why: "scale-out cooldown over".to_string() }))
            } else {
                (state.clone(), None)
            }
        }
        State::Verifying { from, to, baseline, since, best } => {
            let (from, to, baseline) = (*from, *to, *baseline);
            let need = baseline * (1.0 + cfg.min_rise);
            let best = match (fresh_rate(rate), *best) {
                (Some(r), Some(b)) => Some(r.max(b)),
                (r, b) => r.or(b),
            };
            if let Some(r) = fresh_rate(rate) {
                if r >= need && r > baseline {
                    let why = format!("scale-out {from} → {to} helped: consume rate {baseline:.1}/s → {r:.1}/s (needed ≥ {need:.1}/s)");
                    return (State::Idle, Some(Finding::Effective { from, to, baseline, rate: r, why }));
                }
            }
            if now.duration_since(*since).unwrap_or_default() < cfg.verify_within {
                return (State::Verifying { from, to, baseline, since: *since, best }, None);
            }
            match best {
                Some(b) => {
                    let why = format!(
                        "scale-out ineffective: {from} → {to} raised the consume rate only {baseline:.1}/s → {b:.1}/s (needed ≥ {need:.1}/s within {}); rolling back to {from}, scale-outs blocked for {}",
                        humantime::format_duration(cfg.verify_within),
                        humantime::format_duration(cfg.cooldown)
                    );
                    (State::Blocked { from, to, until: now + cfg.cooldown }, Some(Finding::Ineffective { from, to, baseline, best: b, why, blocked_for: cfg.cooldown }))
                }
                None => (State::Idle, Some(Finding::Inconclusive { from, to, why: format!("scale-out {from} → {to} not verified: no fresh consume rate within {}", humantime::format_duration(cfg.verify_within)) })),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn r(v: f64) -> Reading {
        Reading::fresh(v, t(0))
    }

    fn stale(v: f64) -> Reading {
        Reading { value: v, quality: Quality::Stale, at: t(0) }
    }

    fn cfg() -> Effectiveness {
        Effectiveness { min_rise: 0.2, verify_within: Duration::from_secs(60), cooldown: Duration::from_secs(600) }
    }

    fn scaled_out() -> State {
        step(&State::Idle, Change::Scaled { from: 1, to: 3 }, Some(&r(100.0)), None, &cfg(), t(0)).0
    }

    #[test]
    fn a_scale_out_that_raises_the_rate_is_effective() {
        let s = scaled_out();
        assert!(matches!(s, State::Verifying { baseline, .. } if baseline == 100.0));
        let (s, f) = step(&s, Change::None, None, Some(&r(110.0)), &cfg(), t(10));
        assert!(f.is_none() && matches!(s, State::Verifying { .. }));
        let (s, f) = step(&s, Change::None, None, Some(&r(250.0)), &cfg(), t(20));
        assert_eq!(s, State::Idle);
        assert!(matches!(f, Some(Finding::Effective { rate, .. }) if rate == 250.0), "{f:?}");
    }

    #[test]
    fn a_scale_out_that_does_not_raise_the_rate_rolls_back_and_blocks_until_the_cooldown() {
        let mut s = scaled_out();
        for at in [10, 30, 50] {
            let (n, f) = step(&s, Change::None, None, Some(&r(105.0)), &cfg(), t(at));
            assert!(f.is_none(), "{f:?}");
            s = n;
        }
        let (s, f) = step(&s, Change::None, None, Some(&r(101.0)), &cfg(), t(60));
        let Some(Finding::Ineffective { from, to, best, why, .. }) = f else { panic!("{f:?}") };
        assert_eq!((from, to, best), (1, 3, 105.0));
        assert!(why.starts_with("scale-out ineffective: 1 → 3") && why.contains("rolling back to 1"), "{why}");
        assert_eq!(scale_out_blocked_until(&s, t(61)), Some(t(660)));
        // The rollback (3 → 1) keeps the block.
        let (s, f) = step(&s, Change::Scaled { from: 3, to: 1 }, None, None, &cfg(), t(62));
        assert!(f.is_none());
        assert_eq!(scale_out_blocked_until(&s, t(100)), Some(t(660)));
        let (s, f) = step(&s, Change::None, None, None, &cfg(), t(659));
        assert!(f.is_none() && scale_out_blocked_until(&s, t(659)).is_some());
        let (s, f) = step(&s, Change::None, None, None, &cfg(), t(660));
        assert_eq!(s, State::Idle);
        assert_eq!(f.map(|f| f.kind()), Some("unblocked"));
        assert_eq!(scale_out_blocked_until(&s, t(660)), None);
    }

    #[test]
    fn stale_rates_never_roll_back() {
        let s = scaled_out();
        let (s, _) = step(&s, Change::None, None, Some(&stale(0.0)), &cfg(), t(30));
        let (s, f) = step(&s, Change::None, None, Some(&stale(0.0)), &cfg(), t(60));
        assert_eq!(s, State::Idle);
        assert!(matches!(f, Some(Finding::Inconclusive { .. })), "{f:?}");
        // No fresh baseline: not verified, not blocked.
        let (s, f) = step(&State::Idle, Change::Scaled { from: 1, to: 2 }, Some(&stale(5.0)), None, &cfg(), t(0));
        assert_eq!(s, State::Idle);
        assert!(matches!(f, Some(Finding::Inconclusive { .. })));
    }

    #[test]
    fn a_scale_down_while_verifying_ends_the_verification() {
        let (s, f) = step(&scaled_out(), Change::Scaled { from: 3, to: 2 }, None, None, &cfg(), t(5));
        assert_eq!((s, f), (State::Idle, None));
    }

    #[test]
    fn a_zero_baseline_needs_a_real_rise() {
        let s = step(&State::Idle, Change::Scaled { from: 1, to: 2 }, Some(&r(0.0)), None, &cfg(), t(0)).0;
        let (s, f) = step(&s, Change::None, None, Some(&r(0.0)), &cfg(), t(10));
        assert!(f.is_none() && matches!(s, State::Verifying { .. }));
        let (_, f) = step(&s, Change::None, None, Some(&r(3.0)), &cfg(), t(20));
        assert_eq!(f.map(|f| f.kind()), Some("effective"));
    }
}
