//! Guards: small pure functions, each deciding one thing about one planned run, each
//! tested alone. The planner ([`super::plan`]) runs them all and keeps every outcome, so
//! the audit log says which passed and which blocked, and why.
//!
//! # Guarantees
//! - Only a verdict that is a transition to firing, true, on fresh evidence passes the
//!   trigger guard (never resolved, never unknown, never stale data).
//! - A precondition whose data is stale or missing is *unknown*, and unknown blocks.
//! - Nothing here reads the clock: `now` is an argument.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::rules::expr::{self, Cond, Dataset, EvalOptions, Truth};
use crate::rules::file::runbook::Runbook;
use crate::rules::verdict::{compatible, Verdict};
use crate::signal::Labels;

/// One guard's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardOutcome {
    pub guard: &'static str,
    pub passed: bool,
    /// Why it blocked (or, when it passed, what it checked).
    pub reason: String,
}

impl GuardOutcome {
    fn pass(guard: &'static str, reason: impl Into<String>) -> Self {
        GuardOutcome { guard, passed: true, reason: reason.into() }
    }

    fn block(guard: &'static str, reason: impl Into<String>) -> Self {
        GuardOutcome { guard, passed: false, reason: reason.into() }
    }
}

/// A run, as guards see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PastRun {
    pub runbook: String,
    pub target: Labels,
    pub started: SystemTime,
    /// Still in progress (or waiting for approval).
    pub active: bool,
}

/// What guards need to know about runs past and present (rebuilt from the journal).
#[derive(Debug, Clone, Default)]
pub struct GuardState {
    pub runs: Vec<PastRun>,
    /// Global limit of runs in progress at once.
    pub max_concurrent: usize,
}

/// The target of a run: the runbook's `target` labels taken from the instance (all of
/// them when the runbook names none). `Err` names the missing labels.
pub fn target(runbook: &Runbook, instance: &Labels) -> Result<Labels, String> {
    if runbook.target.is_empty() {
        return Ok(instance.clone());
    }
    let missing: Vec<&str> = runbook.target.iter().filter(|l| !instance.contains_key(*l)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(format!("the instance has no label {}", missing.join(", ")));
    }
    Ok(runbook.target.iter().map(|l| (l.clone(), instance[l].clone())).collect())
}

pub fn trigger(v: &Verdict) -> GuardOutcome {
    const G: &str = "trigger";
    if v.to != crate::rules::eval::AlertState::Firing || v.from == crate::rules::eval::AlertState::Firing {
        return GuardOutcome::block(G, format!("not a transition to firing ({} → {})", v.from.as_str(), v.to.as_str()));
    }
    if v.truth != Truth::True {
        return GuardOutcome::block(G, format!("condition is {}", v.truth));
    }
    if !v.fresh {
        let stale = v.evidence.iter().filter(|e| e.quality != "fresh").count();
        return GuardOutcome::block(G, format!("stale data: {stale} of {} evidence series not fresh", v.evidence.len()));
    }
    GuardOutcome::pass(G, format!("{} fired on fresh data ({} series)", v.rule, v.evidence.len()))
}

pub fn cooldown(runbook: &Runbook, target: &Labels, state: &GuardState, now: SystemTime) -> GuardOutcome {
    const G: &str = "cooldown";
    let last = state.runs.iter().filter(|r| r.runbook == runbook.name && &r.target == target).map(|r| r.started).max();
    match last {
        Some(at) if since(now, at) < runbook.guards.cooldown => GuardOutcome::block(
            G,
            format!(
                "cooldown: last run for this target started {} ago (cooldown {})",
                fmt(since(now, at)),
                fmt(runbook.guards.cooldown)
            ),
        ),
        _ => GuardOutcome::pass(G, format!("no run for this target within {}", fmt(runbook.guards.cooldown))),
    }
}

pub fn rate(runbook: &Runbook, state: &GuardState, now: SystemTime) -> GuardOutcome {
    const G: &str = "rate";
    let g = &runbook.guards;
    let n = state.runs.iter().filter(|r| r.runbook == runbook.name && since(now, r.started) < g.window).count();
    if n >= g.max_runs as usize {
        GuardOutcome::block(G, format!("rate: {n} runs of {} in the last {} (max {})", runbook.name, fmt(g.window), g.max_runs))
    } else {
        GuardOutcome::pass(G, format!("{n} of at most {} runs in {}", g.max_runs, fmt(g.window)))
    }
}

pub fn concurrency(state: &GuardState) -> GuardOutcome {
    const G: &str = "concurrency";
    let n = state.runs.iter().filter(|r| r.active).count();
    if n >= state.max_concurrent {
        GuardOutcome::block(G, format!("concurrency: {n} runs in progress (max {})", state.max_concurrent))
    } else {
        GuardOutcome::pass(G, format!("{n} of at most {} runs in progress", state.max_concurrent))
    }
}

/// One run per target at a time, whatever the runbook.
pub fn one_per_target(target: &Labels, state: &GuardState) -> GuardOutcome {
    const G: &str = "target_busy";
    match state.runs.iter().find(|r| r.active && (&r.target == target || compatible(&r.target, target) && compatible(target, &r.target))) {
        Some(r) => GuardOutcome::block(G, format!("target busy: a run of runbook {} is in progress or awaiting approval for it", r.runbook)),
        None => GuardOutcome::pass(G, "no other run for this target"),
    }
}

/// The truth of `cond` for `target`: the results whose labels agree with the target; none
/// is unknown, any false is false, all true is true.
pub fn truth_for(cond: &Cond, target: &Labels, data: &Dataset, now: SystemTime, opts: &EvalOptions) -> (Truth, Option<f64>) {
    let results = expr::eval(cond, data, now, opts);
    let mine: Vec<_> = results.iter().filter(|(l, _)| crate::rules::verdict::compatible_set(l, target)).map(|(_, v)| *v).collect();
    if mine.is_empty() {
        return (Truth::Unknown, None);
    }
    let value = mine.first().and_then(|v| v.value);
    if mine.iter().any(|v| v.truth == Truth::False) {
        (Truth::False, value)
    } else if mine.iter().all(|v| v.truth == Truth::True) {
        (Truth::True, value)
    } else {
        (Truth::Unknown, value)
    }
}

/// Every precondition, evaluated for `target` on `data` (the caller builds it fresh).
pub fn preconditions(runbook: &Runbook, target: &Labels, data: &Dataset, now: SystemTime, opts: &EvalOptions) -> Vec<GuardOutcome> {
    runbook
        .guards
        .preconditions
        .iter()
        .map(|c| match truth_for(&c.cond, target, data, now, opts) {
            (Truth::True, v) => GuardOutcome::pass("precondition", format!("{} is true (value {})", c.text, show(v))),
            (Truth::False, v) => GuardOutcome::block("precondition", format!("precondition false: {} (value {})", c.text, show(v))),
            (Truth::Unknown, _) => GuardOutcome::block("precondition", format!("precondition unknown (stale or missing data): {}", c.text)),
        })
        .collect()
}

/// The target's data must be fresh: every series of `data` that carries all the target's
/// labels is fresh, and there is at least one. Guards manual runs (which have no verdict)
/// and every step (the data may have gone stale since the trigger).
pub fn fresh_data(target: &Labels, data: &Dataset) -> GuardOutcome {
    const G: &str = "fresh_data";
    let mine: Vec<_> =
        data.by_signal.values().flatten().filter(|s| target.iter().all(|(k, v)| s.labels.get(k) == Some(v))).collect();
    if mine.is_empty() {
        return GuardOutcome::block(G, "missing data: no series for the target (its source is down, or it does not exist)");
    }
    let stale = mine.iter().filter(|s| !s.fresh).count();
    if stale > 0 {
        return GuardOutcome::block(G, format!("stale data: {stale} of {} series for the target are not fresh", mine.len()));
    }
    GuardOutcome::pass(G, format!("{} series for the target, all fresh", mine.len()))
}

/// A block that may clear by itself once data arrives (stale or missing data, an
/// unknown precondition), as opposed to a precondition that is false.
pub fn is_unknown(g: &GuardOutcome) -> bool {
    !g.passed && (g.guard == "fresh_data" || g.reason.starts_with("precondition unknown"))
}

fn show(v: Option<f64>) -> String {
    v.map_or_else(|| "unknown".into(), |v| v.to_string())
}

fn since(now: SystemTime, at: SystemTime) -> Duration {
    now.duration_since(at).unwrap_or_default()
}

fn fmt(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rules::eval::AlertState;
    use crate::rules::file::runbook::Guards;

    pub(crate) fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    pub(crate) fn labels(c: &str) -> Labels {
        [("connect".to_string(), "local".to_string()), ("connector".to_string(), c.to_string())].into()
    }

    pub(crate) fn runbook() -> Runbook {
        Runbook {
            file: "r.yaml".into(),
            name: "restart".into(),
            mode: None,
            target: vec!["connect".into(), "connector".into()],
            guards: Guards { cooldown: Duration::from_secs(600), max_runs: 2, window: Duration::from_secs(3600), preconditions: Vec::new() },
            steps: Vec::new(),
            verify: None,
            rollback: Vec::new(),
            escalate: Vec::new(),
            labels: Default::default(),
        }
    }

    fn run(c: &str, at: u64, active: bool) -> PastRun {
        PastRun { runbook: "restart".into(), target: labels(c), started: t(at), active }
    }

    #[test]
    fn the_target_is_the_runbooks_labels_of_the_instance() {
        let mut inst = labels("a");
        inst.insert("extra".into(), "x".into());
        assert_eq!(target(&runbook(), &inst).unwrap(), labels("a"));
        let err = target(&runbook(), &[("connect".to_string(), "local".to_string())].into()).unwrap_err();
        assert!(err.contains("connector"), "{err}");
    }

    #[test]
    fn cooldown_blocks_the_same_target_only_and_only_within_the_cooldown() {
        let s = GuardState { runs: vec![run("a", 0, false)], max_concurrent: 4 };
        let g = cooldown(&runbook(), &labels("a"), &s, t(300));
        assert!(!g.passed && g.reason.starts_with("cooldown:"), "{g:?}");
        assert!(cooldown(&runbook(), &labels("b"), &s, t(300)).passed, "another target");
        assert!(cooldown(&runbook(), &labels("a"), &s, t(600)).passed, "after the cooldown");
    }

    #[test]
    fn rate_counts_runs_of_the_runbook_inside_the_window() {
        let s = GuardState { runs: vec![run("a", 0, false), run("b", 100, false)], max_concurrent: 4 };
        assert!(!rate(&runbook(), &s, t(200)).passed);
        assert!(rate(&runbook(), &s, t(3601)).passed, "the first left the window");
    }

    #[test]
    fn concurrency_and_one_run_per_target() {
        let s = GuardState { runs: vec![run("a", 0, true)], max_concurrent: 1 };
        assert!(!concurrency(&s).passed);
        assert!(!one_per_target(&labels("a"), &s).passed);
        assert!(one_per_target(&labels("b"), &s).passed);
        let s = GuardState { runs: vec![run("a", 0, false)], max_concurrent: 1 };
        assert!(concurrency(&s).passed && one_per_target(&labels("a"), &s).passed);
    }

    #[test]
    fn the_trigger_guard_passes_only_fresh_true_transitions_to_firing() {
        let mut v = Verdict {
            kind: crate::rules::verdict::VerdictKind::Alert,
            rule: "r".into(),
            labels: labels("a"),
            from: AlertState::Pending,
            to: AlertState::Firing,
            truth: Truth::True,
            value: Some(1.0),
            fresh: true,
            evidence: Vec::new(),
            runbooks: Vec::new(),
            at: t(0),
        };
        assert!(trigger(&v).passed);
        v.fresh = false;
        assert!(trigger(&v).reason.starts_with("stale data"));
        v.fresh = true;
        v.to = AlertState::Resolved;
        assert!(!trigger(&v).passed);
        v.to = AlertState::Firing;
        v.truth = Truth::Unknown;
        assert!(!trigger(&v).passed);
    }

    #[test]
    fn a_precondition_on_stale_data_is_unknown_and_blocks() {
        use crate::rules::expr::SeriesData;
        let mut rb = runbook();
        rb.guards.preconditions.push(crate::rules::file::runbook::Condition {
            cond: expr::parse("connector_failed_tasks > 0").unwrap(),
            text: "connector_failed_tasks > 0".into(),
        });
        let data = |fresh: bool, v: f64| {
            let mut d = Dataset::default();
            let src = Some(d.add_source("connect/local", fresh));
            d.by_signal.entry("connector_failed_tasks".into()).or_default().push(SeriesData { labels: labels("a").into(), fresh, points: vec![(t(0), v)].into(), source: src });
            d
        };
        let opts = EvalOptions::default();
        assert!(preconditions(&rb, &labels("a"), &data(true, 1.0), t(1), &opts)[0].passed);
        let g = &preconditions(&rb, &labels("a"), &data(true, 0.0), t(1), &opts)[0];
        assert!(!g.passed && g.reason.starts_with("precondition false"), "{g:?}");
        let g = &preconditions(&rb, &labels("a"), &data(false, 1.0), t(1), &opts)[0];
        assert!(!g.passed && g.reason.starts_with("precondition unknown"), "{g:?}");
        let g = &preconditions(&rb, &labels("b"), &data(true, 1.0), t(1), &opts)[0];
        assert!(!g.passed, "no data for the target is unknown: {g:?}");
        assert!(fresh_data(&labels("a"), &data(true, 1.0)).passed);
        assert!(fresh_data(&labels("a"), &data(false, 1.0)).reason.starts_with("stale data"));
        assert!(fresh_data(&labels("b"), &data(true, 1.0)).reason.starts_with("missing data"));
    }
}
