//! The evaluator: the pure core. A rule set, a [`Dataset`] and the current time go in;
//! alert states, SLO statuses and transitions come out. No I/O, no clock.
//!
//! # Guarantees
//! - States move `inactive → pending (held for `for`) → firing → resolved`. As in
//!   Prometheus, `keep_firing_for` runs from the first evaluation that finds the
//!   condition false after firing (not from the last one that found it true).
//! - A series that is gone while its source is fresh (a deleted group, connector or job)
//!   is false, as an absent series is in Prometheus: its alert resolves after
//!   `keep_firing_for`.
//! - Unknown (data of a stale or failing source) is never true: a pending alert falls
//!   back to inactive; a firing one keeps firing (no data is not an all-clear) for at most
//!   `unknown_after`, then resolves marked [`Instance::resolved_stale`], while the rule
//!   shows as unknown (`streamguard_rule_unknown`, which `alerts/` pages on).
//! - Instances are keyed by (file, rule, series labels), so a reload that keeps a rule
//!   keeps its pending timers and firing state.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::expr::{self, Dataset, EvalOptions, Paired, SourceName, SourceSet, Truth};
use super::file::{AlertRule, RuleSet};
use super::slo::{self, Events, Sli, SloSpec, SloStatus};
use crate::signal::{Moment, SharedLabels};

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
    pub active_since: Moment,
    pub firing_since: Moment,
    pub last_true: Moment,
    pub resolved_at: Moment,
    pub unknown_since: Moment,
    /// The first evaluation that found the condition false since it last fired: the
    /// start of `keep_firing_for`.
    pub keep_firing_since: Moment,
    /// Since when its series has been absent from the results.
    pub absent_since: Moment,
    /// Resolved because its data stayed unknown for `unknown_after`, not because the
    /// condition cleared.
    pub resolved_stale: bool,
    /// The sources its series came from at the last evaluation that had it.
    /// Shared: a copy of the instance (its rule's status) costs no allocation.
    #[serde(serialize_with = "names")]
    pub sources: Arc<[SourceName]>,
    /// False when some of those sources could not be named (see [`SourceSet`]).
    #[serde(skip)]
    pub sources_complete: bool,
    /// The compared value at the last evaluation (`None`: unknown).
    pub value: Option<f64>,
    pub truth: Truth,
}

fn shared_instances<S: serde::Serializer>(v: &Arc<Vec<(SharedLabels, Instance)>>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|(l, i)| (l, i)))
}

fn names<S: serde::Serializer>(v: &[SourceName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|n| &**n))
}

impl Default for Instance {
    fn default() -> Self {
        Instance {
            state: AlertState::Inactive,
            active_since: Moment::NONE,
            firing_since: Moment::NONE,
            last_true: Moment::NONE,
            resolved_at: Moment::NONE,
            unknown_since: Moment::NONE,
            keep_firing_since: Moment::NONE,
            absent_since: Moment::NONE,
            resolved_stale: false,
            sources: Arc::from([]),
            sources_complete: true,
            value: None,
            truth: Truth::Unknown,
        }
    }
}

impl Instance {
    /// Remembers the sources of this evaluation (allocating only when they change).
    fn set_sources(&mut self, set: SourceSet, data: &Dataset) {
        if !set.names(data).eq(self.sources.iter()) {
            self.sources = set.names(data).cloned().collect();
        }
        self.sources_complete = set.is_complete();
    }

    /// Truth of an instance whose series is absent: false when every source it came from
    /// is fresh (the series is gone), unknown otherwise (it may only be late).
    fn absent_truth(&self, data: &Dataset) -> Truth {
        if self.sources_complete && self.sources.iter().all(|s| data.source_fresh(s) == Some(true)) {
            Truth::False
        } else {
            Truth::Unknown
        }
    }
}

/// Timing of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub for_: Duration,
    pub keep_firing_for: Duration,
    /// A firing alert whose data stays unknown this long resolves (marked stale).
    pub unknown_after: Duration,
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
            i.last_true = Moment::at(now);
            i.unknown_since = Moment::NONE;
            i.keep_firing_since = Moment::NONE;
            match i.state {
                AlertState::Inactive | AlertState::Resolved => {
                    i.active_since = Moment::at(now);
                    i.resolved_at = Moment::NONE;
                    i.resolved_stale = false;
                    if t.for_.is_zero() {
                        i.state = AlertState::Firing;
                        i.firing_since = Moment::at(now);
                    } else {
                        i.state = AlertState::Pending;
                    }
                }
                AlertState::Pending => {
                    if elapsed(now, i.active_since.get()) >= t.for_ {
                        i.state = AlertState::Firing;
                        i.firing_since = Moment::at(now);
                    }
                }
                AlertState::Firing => {}
            }
        }
        Truth::False => {
            i.unknown_since = Moment::NONE;
            match i.state {
                AlertState::Pending => {
                    i.state = AlertState::Inactive;
                    i.active_since = Moment::NONE;
                }
                AlertState::Firing => {
                    // Prometheus: `KeepFiringSince` is stamped by the first evaluation
                    // that misses, and the alert resolves once `keep_firing_for` has
                    // passed since then.
                    let since = i.keep_firing_since.get_or_insert(now);
                    if elapsed(now, Some(since)) >= t.keep_firing_for {
                        resolve(i, now, false);
                    }
                }
                _ => {}
            }
        }
        Truth::Unknown => {
            let since = i.unknown_since.get_or_insert(now);
            match i.state {
                AlertState::Pending => {
                    i.state = AlertState::Inactive;
                    i.active_since = Moment::NONE;
                }
                AlertState::Firing if elapsed(now, Some(since)) >= t.unknown_after => resolve(i, now, true),
                _ => {}
            }
        }
    }
    i.state
}

fn resolve(i: &mut Instance, now: SystemTime, stale: bool) {
    i.state = AlertState::Resolved;
    i.resolved_at = Moment::at(now);
    i.resolved_stale = stale;
    i.active_since = Moment::NONE;
    i.firing_since = Moment::NONE;
    i.keep_firing_since = Moment::NONE;
}

/// A state change, for logs and the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// The rule's file and name, shared by its transitions: a mass incident is tens of
    /// thousands of them at once (two allocations each when they owned these).
    pub file: Arc<Path>,
    pub rule: Arc<str>,
    pub labels: SharedLabels,
    pub from: AlertState,
    pub to: AlertState,
    pub value: Option<f64>,
    /// Resolved because the data stayed unknown for `unknown_after`.
    pub stale: bool,
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

/// A rule: its file and name.
type RuleKey = (PathBuf, String);

/// All evaluation state that survives from one tick (and one reload) to the next.
#[derive(Debug, Default)]
pub struct Engine {
    /// Every instance with something to remember: pending, firing, resolved, unknown, or
    /// absent. A quiet one (inactive, its condition false) is only counted, in `quiet`:
    /// it would be recreated exactly as it was by its next evaluation, and at scale there
    /// are hundreds of thousands of them (a rule per partition of 20,000 groups).
    /// By rule, then by labels (a lookup compares labels only, not the file's path and
    /// the rule's name first: at 200,000 instances those comparisons were most of it).
    /// Each rule's instances are a list in label order (merged with each evaluation's
    /// results, which come in that order), shared with the rule's latest status (at
    /// 200,000 instances of ~170 bytes, a copy each was 34 MB). An `Arc<Vec>`, not an
    /// `Arc<[_]>`: the list an evaluation builds is shared as it is, not copied again.
    pub instances: BTreeMap<RuleKey, Arc<Vec<(SharedLabels, Instance)>>>,
    /// Quiet instances per rule at its latest evaluation.
    quiet: HashMap<RuleKey, usize>,
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
    /// Every instance but the quiet ones (as Prometheus lists only active alerts).
    /// Shared: the API, the metrics, the notifier and the executor each take the
    /// statuses, and at scale this is hundreds of thousands of instances.
    #[serde(serialize_with = "shared_instances")]
    pub instances: Arc<Vec<(SharedLabels, Instance)>>,
    /// Instances inactive with a false condition: counted, not listed.
    pub quiet: usize,
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
        let timing = Timing { for_: rule.for_, keep_firing_for: rule.keep_firing_for, unknown_after: opts.unknown_after };
        let results = expr::eval(&rule.condition, data, now, &opts.eval);
        let (mut out, mut gone) = (Vec::new(), Vec::new());
        let (file, name): (Arc<Path>, Arc<str>) = (Arc::from(rule.file.as_path()), Arc::from(rule.name.as_str()));
        let transition = |out: &mut Vec<Transition>, labels: &SharedLabels, from: AlertState, inst: &Instance| {
            if from != inst.state {
                let stale = inst.state == AlertState::Resolved && inst.resolved_stale;
                out.push(Transition { file: file.clone(), rule: name.clone(), labels: labels.clone(), from, to: inst.state, value: inst.value, stale });
            }
        };
        let rule_key = (rule.file.clone(), rule.name.clone());
        // The kept instances and the results are both in label order: one merge pairs
        // them (at 200,000 instances, a look-up per result and per instance was most of
        // the evaluation), and the instances to keep come out in order too.
        let before = self.instances.remove(&rule_key).unwrap_or_default();
        let mut kept: Vec<(SharedLabels, Instance)> = Vec::with_capacity(before.len());
        let mut quiet = 0;
        for pair in expr::merge_sorted(results.iter().map(|(l, v)| (l, v)), before.iter().cloned(), |(a, _), (b, _)| expr::cmp_labels(a, b)) {
            let ((labels, v), mut inst) = match pair {
                Paired::Both(result, (_, inst)) => (result, inst),
                Paired::Left(result) => (result, Instance::default()),
                // Its series is absent: gone (false) if its sources are fresh, unknown
                // if not.
                Paired::Right((labels, mut inst)) => {
                    let from = inst.state;
                    inst.absent_since.get_or_insert(now);
                    let truth = inst.absent_truth(data);
                    step(&mut inst, truth, None, now, timing);
                    transition(&mut gone, &labels, from, &inst);
                    let quiet = matches!(inst.state, AlertState::Inactive | AlertState::Resolved);
                    if !(quiet && elapsed(now, inst.absent_since.get()) >= opts.forget_after) {
                        kept.push((labels, inst));
                    }
                    continue;
                }
            };
            let from = inst.state;
            inst.absent_since = Moment::NONE;
            inst.set_sources(v.sources, data);
            step(&mut inst, v.truth, v.value, now, timing);
            transition(&mut out, labels, from, &inst);
            // A quiet instance (inactive, false) is not kept: its next evaluation would
            // build it again exactly as it is.
            let is_quiet = inst.state == AlertState::Inactive && inst.truth == Truth::False;
            quiet += usize::from(is_quiet);
            if !is_quiet {
                kept.push((labels.clone(), inst));
            }
        }
        // Present series' transitions first, then absent ones', each in label order.
        out.append(&mut gone);
        if !kept.is_empty() {
            if kept.capacity() > kept.len() + kept.len() / 4 {
                kept.shrink_to_fit();
            }
            self.instances.insert(rule_key.clone(), Arc::new(kept));
        }
        self.quiet.insert(rule_key, quiet);
        out
    }

    /// The instance of rule `name` of `file` for `labels`, if it is kept.
    pub fn instance(&self, file: &Path, name: &str, labels: &SharedLabels) -> Option<&Instance> {
        let kept = self.instances.get(&(file.to_path_buf(), name.to_string()))?;
        kept.binary_search_by(|(l, _)| expr::cmp_labels(l, labels)).ok().map(|i| &kept[i].1)
    }

    /// Every kept instance: (file, rule name), labels, instance.
    pub fn all_instances(&self) -> impl Iterator<Item = (&(PathBuf, String), &SharedLabels, &Instance)> {
        self.instances.iter().flat_map(|(k, m)| m.iter().map(move |(l, i)| (k, l, i)))
    }

    /// Status of every rule (for the API and metrics).
    pub fn rule_statuses(&self, rules: &[AlertRule], now: SystemTime, opts: &EngineOptions) -> Vec<RuleStatus> {
        rules
            .iter()
            .map(|rule| {
                let key = (rule.file.clone(), rule.name.clone());
                let instances = self.instances.get(&key).cloned().unwrap_or_default();
                // The rule is unknown when every instance has been unknown long enough
                // (or it has none at all, which only happens when nothing matched).
                let quiet = self.quiet.get(&key).copied().unwrap_or(0);
                let unknown = quiet == 0
                    && !instances.is_empty()
                    && instances.iter().all(|(_, i)| i.truth == Truth::Unknown && elapsed(now, i.unknown_since.get()) >= opts.unknown_after);
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
                    quiet,
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
        self.quiet.retain(|k, _| set.alerts.iter().any(|r| r.file == k.0 && r.name == k.1));
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
            let has = |t: Truth| results.values().any(|v| v.truth == t);
            if results.is_empty() || has(Truth::Unknown) && !has(Truth::False) {
                return None;
            }
            let good = results.values().all(|v| v.truth == Truth::True);
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
    use crate::signal::Labels;
    use proptest::prelude::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    const TIMING: Timing =
        Timing { for_: Duration::from_secs(30), keep_firing_for: Duration::from_secs(20), unknown_after: Duration::from_secs(60) };

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
    fn keep_firing_for_runs_from_the_first_false_evaluation_as_in_prometheus() {
        // Fires at 30 s; first false at 40 s; keep_firing_for 20 s holds it at 40 and 50 s
        // and resolves it at 60 s (counted from the last true, 30 s, it would be 50 s).
        assert_eq!(run(&[T, T, T, T, F, F, F], TIMING), vec![Pending, Pending, Pending, Firing, Firing, Firing, Resolved]);
        // A true evaluation restarts it.
        assert_eq!(run(&[T, T, T, T, F, T, F, F, F], TIMING)[4..], [Firing, Firing, Firing, Firing, Resolved]);
    }

    #[test]
    fn unknown_is_never_true() {
        assert_eq!(run(&[U, U, U, U, U], TIMING), vec![Inactive; 5]);
        assert_eq!(run(&[T, T, U, T, T], TIMING), vec![Pending, Pending, Inactive, Pending, Pending], "unknown resets pending");
        assert_eq!(run(&[T, T, T, T, U, U, U], TIMING)[4..], [Firing, Firing, Firing], "no data is not an all-clear");
    }

    #[test]
    fn a_firing_alert_unknown_for_unknown_after_resolves_marked_stale() {
        let mut i = Instance::default();
        let states: Vec<AlertState> =
            [T, T, T, T, U, U, U, U, U, U, U].iter().enumerate().map(|(k, tr)| step(&mut i, *tr, None, t(k as u64 * 10), TIMING)).collect();
        // Unknown from 40 s; unknown_after 60 s resolves it at 100 s.
        assert_eq!(states[4..], [Firing, Firing, Firing, Firing, Firing, Firing, Resolved]);
        assert!(i.resolved_stale);
        step(&mut i, T, None, t(110), TIMING);
        assert!(!i.resolved_stale, "a new activation clears the mark");
    }

    #[test]
    fn without_for_an_alert_fires_at_once_and_resolves_without_keep() {
        let timing = Timing { for_: Duration::ZERO, keep_firing_for: Duration::ZERO, unknown_after: Duration::from_secs(60) };
        assert_eq!(run(&[F, T, F, T], timing), vec![Inactive, Firing, Resolved, Firing]);
    }

    /// One Kafka source and, per entry, a series of `lag` for group `g`:
    /// (group, series produced by the latest sample).
    fn data(source_fresh: bool, series: &[(&str, bool)], at: u64) -> Dataset {
        let mut d = Dataset::default();
        let source = Some(d.add_source("kafka/prod", source_fresh));
        for (g, fresh) in series {
            let labels: Labels = [("group".to_string(), g.to_string())].into();
            let s = expr::SeriesData { labels: labels.into(), fresh: *fresh, points: vec![(t(at), 100.0)].into(), source };
            d.by_signal.entry("lag".into()).or_default().push(s);
        }
        d
    }

    fn rule(condition: &str, keep: u64) -> AlertRule {
        AlertRule {
            file: PathBuf::from("r.yaml"),
            name: "lagging".into(),
            condition: expr::parse(condition).unwrap(),
            condition_text: condition.into(),
            for_: Duration::ZERO,
            keep_firing_for: Duration::from_secs(keep),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            runbooks: Vec::new(),
        }
    }

    fn opts() -> EngineOptions {
        EngineOptions { unknown_after: Duration::from_secs(60), ..EngineOptions::default() }
    }

    /// Runs `rule` over one dataset per 10 s step; the state of group `g` after each.
    fn states(rule: &AlertRule, steps: &[Dataset]) -> (Engine, Vec<Option<AlertState>>) {
        let mut e = Engine::default();
        let g = SharedLabels::from(Labels::from([("group".to_string(), "g".to_string())]));
        let out = steps
            .iter()
            .enumerate()
            .map(|(k, d)| {
                e.eval_alerts(std::slice::from_ref(rule), d, t(k as u64 * 10), &opts());
                e.instance(&rule.file, &rule.name, &g).map(|i| i.state)
            })
            .collect();
        (e, out)
    }

    #[test]
    fn an_instance_and_its_labels_fit_in_112_bytes() {
        // Kept for every active alert, twice while an evaluation replaces a rule's list
        // (the rule's status holds the previous one): 200,000 in a mass incident. With
        // `Option<SystemTime>` moments it was 168.
        assert!(std::mem::size_of::<(SharedLabels, Instance)>() <= 112, "{}", std::mem::size_of::<(SharedLabels, Instance)>());
    }

    #[test]
    fn a_quiet_instance_is_counted_not_kept_and_still_keeps_the_rule_from_being_unknown() {
        // 1,000 groups under the threshold, one over it, one from a stale source.
        let r = rule("max by (group) (lag) > 150", 0);
        let mut d = Dataset::default();
        let (fresh, stale) = (Some(d.add_source("kafka/a", true)), Some(d.add_source("kafka/b", false)));
        let mut push = |g: String, v: f64, fresh: bool, source| {
            let s = expr::SeriesData { labels: Labels::from([("group".to_string(), g)]).into(), fresh, points: vec![(t(0), v)].into(), source };
            d.by_signal.entry("lag".into()).or_default().push(s);
        };
        for g in 0..1000 {
            push(format!("q{g}"), 100.0, true, fresh);
        }
        push("hot".into(), 200.0, true, fresh);
        push("dark".into(), 200.0, false, stale);
        let mut e = Engine::default();
        for k in 0..10 {
            e.eval_alerts(std::slice::from_ref(&r), &d, t(k * 10), &opts());
        }
        let kept: Vec<&str> = e.all_instances().map(|(_, l, _)| &l["group"]).collect();
        assert_eq!(kept, ["dark", "hot"], "only instances with something to remember are kept");
        let status = e.rule_statuses(std::slice::from_ref(&r), t(90), &opts()).remove(0);
        assert_eq!(status.quiet, 1000);
        assert!(!status.unknown, "a rule with known instances is not unknown, kept or not");
        let engines = e.instances.values().next().unwrap();
        assert!(Arc::ptr_eq(&status.instances, engines), "the status shares the engine's instances, not a copy");
        e.eval_alerts(std::slice::from_ref(&r), &d, t(100), &opts());
        assert_eq!(status.instances.len(), 2, "a status taken before stays as it was");
        // Every group under the threshold but the stale one: still not unknown, as before.
        let mut only_dark = d.clone();
        only_dark.by_signal.get_mut("lag").unwrap().retain(|s| &s.labels["group"] != "hot");
        for k in 10..20 {
            e.eval_alerts(std::slice::from_ref(&r), &only_dark, t(k * 10), &opts());
        }
        let status = e.rule_statuses(std::slice::from_ref(&r), t(190), &opts()).remove(0);
        assert!(!status.unknown && status.quiet == 1000, "{status:?}");
        // Only the stale group, from the start: the rule is unknown.
        only_dark.by_signal.get_mut("lag").unwrap().retain(|s| &s.labels["group"] == "dark");
        let mut e = Engine::default();
        for k in 0..10 {
            e.eval_alerts(std::slice::from_ref(&r), &only_dark, t(k * 10), &opts());
        }
        let status = e.rule_statuses(std::slice::from_ref(&r), t(90), &opts()).remove(0);
        assert!(status.unknown && status.quiet == 0, "{status:?}");
    }

    #[test]
    fn a_firing_alert_whose_series_is_gone_from_a_fresh_source_resolves_after_keep_firing_for() {
        for condition in ["lag > 1", "max by (group) (lag) > 1"] {
            let r = rule(condition, 20);
            let mut steps: Vec<Dataset> = (0..2).map(|k| data(true, &[("g", true)], k * 10)).collect();
            // The group is deleted: the source still answers, without it.
            steps.extend((2..6).map(|_| data(true, &[("g", false)], 0)));
            let (_, got) = states(&r, &steps);
            assert_eq!(got, [Some(Firing), Some(Firing), Some(Firing), Some(Firing), Some(Resolved), Some(Resolved)], "{condition}");
            // And the same once the store has dropped the series altogether.
            let mut steps: Vec<Dataset> = (0..2).map(|k| data(true, &[("g", true)], k * 10)).collect();
            steps.extend((2..6).map(|_| data(true, &[], 0)));
            let (_, got) = states(&r, &steps);
            assert_eq!(got[4], Some(Resolved), "{condition}: dropped from the store");
        }
    }

    #[test]
    fn a_firing_alert_whose_source_is_stale_keeps_firing_until_unknown_after_then_resolves_marked() {
        let r = rule("max by (group) (lag) > 1", 20);
        let mut steps: Vec<Dataset> = (0..2).map(|k| data(true, &[("g", true)], k * 10)).collect();
        steps.extend((2..10).map(|_| data(false, &[("g", false)], 0)));
        let (e, got) = states(&r, &steps);
        // Unknown from 20 s; unknown_after 60 s: still firing at 70 s, resolved at 80 s.
        assert_eq!(got[2..], [Some(Firing), Some(Firing), Some(Firing), Some(Firing), Some(Firing), Some(Firing), Some(Resolved), Some(Resolved)]);
        let status = &e.rule_statuses(std::slice::from_ref(&r), t(90), &opts())[0];
        assert!(status.unknown, "the rule shows as unknown");
        assert!(status.instances[0].1.resolved_stale);
        // The source also stale once its series are dropped: still unknown, not gone.
        let mut steps: Vec<Dataset> = (0..2).map(|k| data(true, &[("g", true)], k * 10)).collect();
        steps.extend((2..5).map(|_| data(false, &[], 0)));
        assert_eq!(states(&r, &steps).1[4], Some(Firing));
    }

    #[test]
    fn a_stale_resolution_is_reported_as_such_in_its_transition() {
        let r = rule("lag > 1", 0);
        let mut e = Engine::default();
        e.eval_alerts(std::slice::from_ref(&r), &data(true, &[("g", true)], 0), t(0), &opts());
        e.eval_alerts(std::slice::from_ref(&r), &data(false, &[("g", false)], 0), t(10), &opts());
        let tr = e.eval_alerts(std::slice::from_ref(&r), &data(false, &[("g", false)], 0), t(70), &opts());
        assert_eq!(tr.len(), 1);
        assert!(tr[0].stale && tr[0].to == Resolved, "{tr:?}");
    }

    #[test]
    fn the_transitions_of_a_rule_share_its_file_and_name() {
        // A mass incident: every group changes at once.
        let groups: Vec<(String, bool)> = (0..100).map(|g| (format!("g{g}"), true)).collect();
        let series: Vec<(&str, bool)> = groups.iter().map(|(g, f)| (g.as_str(), *f)).collect();
        let r = rule("lag > 1", 0);
        let tr = Engine::default().eval_alerts(std::slice::from_ref(&r), &data(true, &series, 0), t(0), &opts());
        assert_eq!(tr.len(), 100);
        assert!(tr.iter().all(|x| &*x.rule == "lagging" && &*x.file == std::path::Path::new("r.yaml")));
        assert!(tr.iter().all(|x| Arc::ptr_eq(&x.rule, &tr[0].rule) && Arc::ptr_eq(&x.file, &tr[0].file)), "one name and one path for all, not a copy each");
    }

    /// A naive model of the state machine, written from the spec independently: ticks
    /// are 10 s; `keep_firing_for` counts from the first false tick after firing; a firing
    /// alert unknown for `unknown_ticks` resolves.
    fn model(truths: &[Truth], for_ticks: usize, keep_ticks: usize, unknown_ticks: usize) -> Vec<AlertState> {
        let mut out = Vec::new();
        let mut state = Inactive;
        let mut true_run = 0usize; // consecutive trues ending now
        let mut false_since: Option<usize> = None; // tick of the first false while firing
        let mut unknown_run = 0usize; // consecutive unknowns ending now
        for (k, tr) in truths.iter().enumerate() {
            match tr {
                T => {
                    true_run += 1;
                    unknown_run = 0;
                    false_since = None;
                }
                F => {
                    true_run = 0;
                    unknown_run = 0;
                }
                U => {
                    true_run = 0;
                    unknown_run += 1;
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
                (Firing, F) => {
                    let since = *false_since.get_or_insert(k);
                    if k - since >= keep_ticks {
                        Resolved
                    } else {
                        Firing
                    }
                }
                (Firing, U) => {
                    if unknown_run > unknown_ticks {
                        Resolved
                    } else {
                        Firing
                    }
                }
                (Pending, _) => Inactive,
                (s, _) => s,
            };
            if state == Resolved {
                false_since = None;
            }
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
            unknown_ticks in 0usize..4,
        ) {
            let secs = |ticks: usize| Duration::from_secs(10 * ticks as u64);
            let timing = Timing { for_: secs(for_ticks), keep_firing_for: secs(keep_ticks), unknown_after: secs(unknown_ticks) };
            prop_assert_eq!(run(&truths, timing), model(&truths, for_ticks, keep_ticks, unknown_ticks));
        }
    }
}
