//! The evaluator: the pure core. A rule set, a [`Dataset`] and the current time go in;
//! alert states, SLO statuses and transitions come out. No I/O, no clock.
//!
//! # Guarantees
//! - States move `inactive → pending (held for `for`) → firing (kept for
//!   `keep_firing_for` after the condition stops holding) → resolved`.
//! - Unknown (stale or missing data) is never true: a pending alert falls back to
//!   inactive, a firing one keeps firing (no data is not an all-clear) and is flagged;
//!   a rule unknown for longer than `unknown_after` raises its own `<rule>:unknown` alert.
//! - Instances are keyed by (file, rule, series labels), so a reload that keeps a rule
//!   keeps its pending timers and firing state.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::expr::{self, Dataset, EvalOptions, Truth};
use super::file::{AlertRule, RuleSet};
use super::slo::{self, Events, Sli, SloSpec, SloStatus};
use crate::signal::Labels;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub const ALL: [AlertState; 4] = [AlertState::Inactive, AlertState::Pending, AlertState::Firing, AlertState::Resolved];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert instance (one series of one rule).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    pub state: AlertState,
    #[serde(with = "opt_secs")]
    pub active_since: Option<SystemTime>,
    #[serde(with = "opt_secs")]
    pub firing_since: Option<SystemTime>,
    #[serde(with = "opt_secs")]
    pub last_true: Option<SystemTime>,
    #[serde(with = "opt_secs")]
    pub resolved_at: Option<SystemTime>,
    #[serde(with = "opt_secs")]
    pub unknown_since: Option<SystemTime>,
    /// The compared value at the last evaluation (`None`: unknown).
    pub value: Option<f64>,
    pub truth: Truth,
}

mod opt_secs {
    pub fn serialize<S: serde::Serializer>(t: &Option<std::time::SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_f64(crate::signal::unix_secs(*t)),
            None => s.serialize_none(),
        }
    }
}

impl Default for Instance {
    fn default() -> Self {
        Instance {
            state: AlertState::Inactive,
            active_since: None,
            firing_since: None,
            last_true: None,
            resolved_at: None,
            unknown_since: None,
            value: None,
            truth: Truth::Unknown,
        }
    }
}

/// Timing of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub for_: Duration,
    pub keep_firing_for: Duration,
}

fn elapsed(now: SystemTime, since: Option<SystemTime>) -> Duration {
    since.and_then(|s| now.duration_since(s).ok()).unwrap_or_default()
}

/// Advances one instance by one evaluation. Pure. Returns the new state.
pub fn step(i: &mut Instance, truth: Truth, value: Option<f64>, now: SystemTime, t: Timing) -> AlertState {
    i.truth = truth;
    i.value = value;
    match truth {
        Truth::True => {
            i.last_true = Some(now);
            i.unknown_since = None;
            match i.state {
                AlertState::Inactive | AlertState::Resolved => {
                    i.active_since = Some(now);
                    i.resolved_at = None;
                    if t.for_.is_zero() {
                        i.state = AlertState::Firing;
                        i.firing_since = Some(now);
                    } else {
                        i.state = AlertState::Pending;
                    }
                }
                AlertState::Pending => {
                    if elapsed(now, i.active_since) >= t.for_ {
                        i.state = AlertState::Firing;
                        i.firing_since = Some(now);
                    }
                }
                AlertState::Firing => {}
            }
        }
        Truth::False => {
            i.unknown_since = None;
            match i.state {
                AlertState::Pending => {
                    i.state = AlertState::Inactive;
                    i.active_since = None;
                }
                AlertState::Firing if elapsed(now, i.last_true) >= t.keep_firing_for => {
                    i.state = AlertState::Resolved;
                    i.resolved_at = Some(now);
                    i.active_since = None;
                    i.firing_since = None;
                }
                _ => {}
            }
        }
        Truth::Unknown => {
            i.unknown_since.get_or_insert(now);
            if i.state == AlertState::Pending {
                i.state = AlertState::Inactive;
                i.active_since = None;
            }
        }
    }
    i.state
}

/// A state change, for logs and the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub file: PathBuf,
    pub rule: String,
    pub labels: Labels,
    pub from: AlertState,
    pub to: AlertState,
    pub value: Option<f64>,
}

/// Evaluation settings.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub eval: EvalOptions,
    /// A rule unknown this long raises `<rule>:unknown`.
    pub unknown_after: Duration,
    /// Resolved and inactive instances whose series is gone are dropped after this.
    pub forget_after: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { eval: EvalOptions::default(), unknown_after: Duration::from_secs(600), forget_after: Duration::from_secs(900) }
    }
}

type Key = (PathBuf, String, Labels);

/// All evaluation state that survives from one tick (and one reload) to the next.
#[derive(Debug, Default)]
pub struct Engine {
    pub instances: BTreeMap<Key, Instance>,
    /// SLO events by SLO name.
    pub events: HashMap<String, Events>,
    /// Last evaluation time per SLO (the slice length of the next one).
    last_slo_eval: HashMap<String, SystemTime>,
}

/// The status of one rule after a tick.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    pub file: PathBuf,
    pub name: String,
    pub condition: String,
    pub for_seconds: f64,
    pub keep_firing_for_seconds: f64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runbooks: Vec<String>,
    /// Unknown for longer than `unknown_after`: the rule cannot be trusted.
    pub unknown: bool,
    pub instances: Vec<(Labels, Instance)>,
}

impl Engine {
    /// Evaluates every alert rule at `now`; returns the transitions.
    pub fn eval_alerts(&mut self, rules: &[AlertRule], data: &Dataset, now: SystemTime, opts: &EngineOptions) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for rule in rules {
            transitions.extend(self.eval_rule(rule, data, now, opts));
        }
        transitions
    }

    fn eval_rule(&mut self, rule: &AlertRule, data: &Dataset, now: SystemTime, opts: &EngineOptions) -> Vec<Transition> {
        let timing = Timing { for_: rule.for_, keep_firing_for: rule.keep_firing_for };
        let results = expr::eval(&rule.condition, data, now, &opts.eval);
        let mut out = Vec::new();
        let mut seen = Vec::with_capacity(results.len());
        for (labels, (truth, value)) in results {
            let key = (rule.file.clone(), rule.name.clone(), labels.clone());
            let inst = self.instances.entry(key).or_default();
            let from = inst.state;
            let to = step(inst, truth, value, now, timing);
            if from != to {
                out.push(Transition { file: rule.file.clone(), rule: rule.name.clone(), labels: labels.clone(), from, to, value });
            }
            seen.push(labels);
        }
        // Instances whose series vanished: their data is missing, so unknown.
        let gone: Vec<Key> = self
            .instances
            .range((rule.file.clone(), rule.name.clone(), Labels::new())..)
            .take_while(|(k, _)| k.0 == rule.file && k.1 == rule.name)
            .filter(|(k, _)| !seen.contains(&k.2))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            let Some(inst) = self.instances.get_mut(&key) else { continue };
            let from = inst.state;
            let to = step(inst, Truth::Unknown, None, now, timing);
            if from != to {
                out.push(Transition { file: key.0.clone(), rule: key.1.clone(), labels: key.2.clone(), from, to, value: None });
            }
            let quiet = matches!(to, AlertState::Inactive | AlertState::Resolved);
            if quiet && elapsed(now, inst.unknown_since) >= opts.forget_after {
                self.instances.remove(&key);
            }
        }
        out
    }

    /// Status of every rule (for the API and metrics).
    pub fn rule_statuses(&self, rules: &[AlertRule], now: SystemTime, opts: &EngineOptions) -> Vec<RuleStatus> {
        rules
            .iter()
            .map(|rule| {
                let instances: Vec<(Labels, Instance)> = self
                    .instances
                    .range((rule.file.clone(), rule.name.clone(), Labels::new())..)
                    .take_while(|(k, _)| k.0 == rule.file && k.1 == rule.name)
                    .map(|(k, v)| (k.2.clone(), v.clone()))
                    .collect();
                // The rule is unknown when every instance has been unknown long enough
                // (or it has none at all, which only happens when nothing matched).
                let unknown = !instances.is_empty()
                    && instances.iter().all(|(_, i)| i.truth == Truth::Unknown && elapsed(now, i.unknown_since) >= opts.unknown_after);
                RuleStatus {
                    file: rule.file.clone(),
                    name: rule.name.clone(),
                    condition: rule.condition_text.clone(),
                    for_seconds: rule.for_.as_secs_f64(),
                    keep_firing_for_seconds: rule.keep_firing_for.as_secs_f64(),
                    labels: rule.labels.clone(),
                    annotations: rule.annotations.clone(),
                    runbooks: rule.runbooks.clone(),
                    unknown,
                    instances,
                }
            })
            .collect()
    }

    /// Adds this tick's SLI events for every SLO and returns their statuses.
    pub fn eval_slos(&mut self, slos: &[SloSpec], data: &Dataset, now: SystemTime, opts: &EngineOptions) -> Vec<SloStatus> {
        let mut out = Vec::with_capacity(slos.len());
        for spec in slos {
            let last = self.last_slo_eval.insert(spec.name.clone(), now);
            // The slice is the time since the previous evaluation (capped, so a long
            // pause is not counted as one huge good or bad slice).
            let slice = last.and_then(|l| now.duration_since(l).ok()).unwrap_or_default().min(Duration::from_secs(300));
            let events = self.events.entry(spec.name.clone()).or_insert_with(|| Events::with_width(spec.bucket()));
            if !slice.is_zero() {
                if let Some((good, total)) = sli_events(&spec.sli, data, now, slice, opts) {
                    events.add(now, good, total);
                }
            }
            events.trim(now, slo::retention(spec));
            out.push(slo::status(spec, events, now));
        }
        out
    }

    /// Forgets instances of rules and events of SLOs that are no longer in the set
    /// (after a reload); everything else carries over.
    pub fn retain(&mut self, set: &RuleSet) {
        self.instances.retain(|k, _| set.alerts.iter().any(|r| r.file == k.0 && r.name == k.1));
        self.events.retain(|k, _| set.slos.iter().any(|s| &s.name == k));
        self.last_slo_eval.retain(|k, _| set.slos.iter().any(|s| &s.name == k));
    }
}

/// (good, total) events of one slice; `None` when unknown (counted neither way).
pub fn sli_events(sli: &Sli, data: &Dataset, now: SystemTime, slice: Duration, opts: &EngineOptions) -> Option<(f64, f64)> {
    let secs = slice.as_secs_f64();
    match sli {
        Sli::TimeSlice { cond, .. } => {
            let results = expr::eval(cond, data, now, &opts.eval);
            if results.is_empty() || results.values().any(|(t, _)| *t == Truth::Unknown) && !results.values().any(|(t, _)| *t == Truth::False) {
                return None;
            }
            let good = results.values().all(|(t, _)| *t == Truth::True);
            Some((if good { secs } else { 0.0 }, secs))
        }
        Sli::Ratio { bad, total, .. } => {
            let sum = |v: &expr::ValueExpr| -> Option<f64> {
                let vals = expr::eval_value(v, data, now, &opts.eval);
                if vals.is_empty() {
                    return None;
                }
                vals.iter().map(|(_, v)| *v).sum::<Option<f64>>()
            };
            let (b, t) = (sum(bad)?, sum(total)?);
            if t <= 0.0 {
                return None;
            }
            let b = b.clamp(0.0, t);
            Some(((t - b) * secs, t * secs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    const TIMING: Timing = Timing { for_: Duration::from_secs(30), keep_firing_for: Duration::from_secs(20) };

    fn run(truths: &[Truth], timing: Timing) -> Vec<AlertState> {
        let mut i = Instance::default();
        truths.iter().enumerate().map(|(k, tr)| step(&mut i, *tr, None, t(k as u64 * 10), timing)).collect()
    }

    use AlertState::*;
    use Truth::{False as F, True as T, Unknown as U};

    #[test]
    fn pending_is_held_for_the_for_duration_then_fires() {
        assert_eq!(run(&[T, T, T, T, T], TIMING), vec![Pending, Pending, Pending, Firing, Firing]);
    }

    #[test]
    fn keep_firing_for_holds_firing_after_the_condition_clears() {
        assert_eq!(run(&[T, T, T, T, F, F, F], TIMING), vec![Pending, Pending, Pending, Firing, Firing, Resolved, Resolved]);
    }

    #[test]
    fn unknown_is_never_true() {
        assert_eq!(run(&[U, U, U, U, U], TIMING), vec![Inactive; 5]);
        assert_eq!(run(&[T, T, U, T, T], TIMING), vec![Pending, Pending, Inactive, Pending, Pending], "unknown resets pending");
        assert_eq!(run(&[T, T, T, T, U, U, U], TIMING)[4..], [Firing, Firing, Firing], "no data is not an all-clear");
    }

    #[test]
    fn without_for_an_alert_fires_at_once_and_resolves_without_keep() {
        let timing = Timing { for_: Duration::ZERO, keep_firing_for: Duration::ZERO };
        assert_eq!(run(&[F, T, F, T], timing), vec![Inactive, Firing, Resolved, Firing]);
    }

    /// A naive model of the state machine, written from the spec independently.
    fn model(truths: &[Truth], for_ticks: usize, keep_ticks: usize) -> Vec<AlertState> {
        let mut out = Vec::new();
        let mut state = Inactive;
        let mut true_run = 0usize; // consecutive trues ending now
        let mut since_true: Option<usize> = None; // ticks since last true
        for tr in truths {
            match tr {
                T => {
                    true_run += 1;
                    since_true = Some(0);
                }
                _ => {
                    true_run = 0;
                    since_true = since_true.map(|s| s + 1);
                }
            }
            state = match (state, tr) {
                (Firing, T) => Firing,
                (_, T) => {
                    if true_run > for_ticks {
                        Firing
                    } else {
                        Pending
                    }
                }
                (Firing, U) => Firing,
                (Firing, F) => {
                    if since_true.is_none_or(|s| s >= keep_ticks) {
                        Resolved
                    } else {
                        Firing
                    }
                }
                (Pending, _) => Inactive,
                (s, _) => s,
            };
            out.push(state);
        }
        out
    }

    proptest! {
        #[test]
        fn the_state_machine_agrees_with_a_naive_model(
            truths in proptest::collection::vec(prop_oneof![Just(T), Just(F), Just(U)], 1..40),
            for_ticks in 0usize..4,
            keep_ticks in 0usize..4,
        ) {
            let timing = Timing { for_: Duration::from_secs(10 * for_ticks as u64), keep_firing_for: Duration::from_secs(10 * keep_ticks as u64) };
            prop_assert_eq!(run(&truths, timing), model(&truths, for_ticks, keep_ticks));
        }
    }
}
