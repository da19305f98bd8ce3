//! `streamguard replay`: the rules evaluated over a recording ([`crate::record`]) in
//! simulated time, as fast as the CPU allows.
//!
//! The recorded samples are fed, in time order, into a store of their own; the rule
//! engine runs at every tick of the evaluation interval with that tick as "now". The
//! store derives quality exactly as the agent's does (a failed attempt makes a source
//! stale, a series not produced by the latest sample is missing), so a replay gives the
//! verdicts the agent would have given, and they can be compared, tested and explained
//! after the fact.
//!
//! It does not touch the network, the clock or the state file.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::HistoryConfig;
use crate::evaluate::dataset;
use crate::record::Recording;
use crate::rules::eval::{Engine, EngineOptions};
use crate::rules::expr::EvalOptions;
use crate::rules::file::RuleSet;
use crate::signal::Labels;
use crate::store::Store;

/// The most evaluation ticks one replay may simulate (e.g. 115 days at 1 s, or three
/// years at 10 s): a recording whose times span more is refused, never a hang.
pub const MAX_TICKS: u64 = 10_000_000;

/// The most series values one emitted promtool test may hold.
pub const MAX_TEST_VALUES: u64 = 20_000_000;

/// Why a recording cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("the recording spans {ticks} evaluation ticks at this interval (at most {MAX_TICKS}): use a longer --interval or a shorter recording")]
    TooLong { ticks: u64 },
    #[error("the recording holds no samples")]
    Empty,
    #[error("the evaluation interval must be more than 0 and at most {}", crate::limits::MAX_DURATION_TEXT)]
    Interval,
}

/// The ticks a replay of `rec` at `interval` evaluates. Pure.
pub fn ticks(rec: &Recording, interval: Duration) -> u64 {
    let (Some(first), Some(last)) = (rec.events.first(), rec.events.last()) else { return 0 };
    let span = last.at.duration_since(first.at).unwrap_or_default();
    let per = interval.max(Duration::from_millis(1)).as_nanos();
    u64::try_from(span.as_nanos() / per).unwrap_or(u64::MAX).saturating_add(2)
}

fn check_length(rec: &Recording, interval: Duration) -> Result<(), ReplayError> {
    // Bounded, so times plus intervals never overflow.
    if interval.is_zero() || interval > crate::limits::MAX_DURATION {
        return Err(ReplayError::Interval);
    }
    match ticks(rec, interval) {
        0 => Err(ReplayError::Empty),
        t if t > MAX_TICKS => Err(ReplayError::TooLong { ticks: t }),
        _ => Ok(()),
    }
}

/// How to replay.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    pub evaluation_interval: Duration,
    pub confidence: f64,
    pub unknown_after: Duration,
}

/// One line of the timeline: an alert instance or an SLO burn alert changed state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    #[serde(with = "crate::signal::unix_seconds")]
    pub at: SystemTime,
    /// `alert` or `slo`.
    pub kind: &'static str,
    /// The alert rule or SLO name.
    pub rule: String,
    /// The alert instance's labels; for an SLO, `severity`, `long` and `short`.
    pub labels: Labels,
    pub from: String,
    pub to: String,
    /// The compared value (alerts) or the long-window burn rate (SLOs).
    pub value: Option<f64>,
    /// What decided it: the condition, or the burn rates and the factor.
    pub evidence: BTreeMap<String, serde_json::Value>,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    #[serde(with = "crate::signal::opt_unix_seconds")]
    pub start: Option<SystemTime>,
    #[serde(with = "crate::signal::opt_unix_seconds")]
    pub end: Option<SystemTime>,
    pub evaluations: u64,
    pub samples: u64,
    pub entries: Vec<TimelineEntry>,
}

/// The longest window any rule of `set` reads (history the store must keep).
pub fn longest_window(set: &RuleSet) -> Duration {
    let mut w = Duration::ZERO;
    for r in &set.alerts {
        for (v, _, _) in r.condition.values() {
            w = w.max(v.window.unwrap_or_default());
        }
    }
    for s in &set.slos {
        match &s.sli {
            crate::rules::slo::Sli::TimeSlice { cond, .. } => {
                for (v, _, _) in cond.values() {
                    w = w.max(v.window.unwrap_or_default());
                }
            }
            crate::rules::slo::Sli::Ratio { bad, total, .. } => {
                w = w.max(bad.window.unwrap_or_default()).max(total.window.unwrap_or_default());
            }
        }
    }
    w
}

/// Calls `tick(now, store)` at every evaluation tick from the first recorded sample to
/// one interval past the last, after feeding the store every sample up to `now`. The
/// recording is consumed: its observations move into the store without a copy.
pub fn simulate(rec: Recording, set: &RuleSet, interval: Duration, mut tick: impl FnMut(SystemTime, &Store)) -> (u64, u64) {
    let interval = interval.max(Duration::from_millis(1));
    let history = HistoryConfig {
        retention: longest_window(set) + interval * 2 + Duration::from_secs(60),
        max_points: 1_000_000,
        ..HistoryConfig::default()
    };
    let store = Store::new(history);
    for s in &rec.sources {
        store.register(s.kind, &s.name, s.stale_after);
    }
    let (Some(first), Some(last)) = (rec.events.first(), rec.events.last()) else { return (0, 0) };
    let end = last.at + interval;
    let mut now = first.at;
    let series = &rec.series;
    let mut events = rec.events.into_iter().peekable();
    let (mut ticks, mut samples) = (0u64, 0u64);
    while now <= end {
        while let Some(e) = events.next_if(|e| e.at <= now) {
            let Some(src) = rec.sources.get(e.source) else { continue };
            match e.values {
                Some(values) => {
                    let values = values.into_iter().filter_map(|(i, v)| series.get(i as usize).map(|k| (k, v)));
                    store.record_values(src.kind, &src.name, e.at, values);
                }
                None => {
                    store.record_failure(src.kind, &src.name, e.at, "recorded failure".into());
                }
            }
            samples += 1;
        }
        tick(now, &store);
        ticks += 1;
        now += interval;
    }
    (ticks, samples)
}

/// Replays `rec` through `set`: every alert transition and SLO burn-alert change.
pub fn replay(rec: Recording, set: &RuleSet, opts: &ReplayOptions) -> Result<Timeline, ReplayError> {
    check_length(&rec, opts.evaluation_interval)?;
    let (start, end) = (rec.events.first().map(|e| e.at), rec.events.last().map(|e| e.at));
    let engine_opts = EngineOptions {
        eval: EvalOptions { confidence: opts.confidence },
        unknown_after: opts.unknown_after,
        ..EngineOptions::default()
    };
    let mut engine = Engine::default();
    let mut entries = Vec::new();
    let mut burning: HashMap<(String, String, String, String), bool> = HashMap::new();
    let (evaluations, samples) = simulate(rec, set, opts.evaluation_interval, |now, store| {
        let data = dataset(store, set, now);
        for t in engine.eval_alerts(&set.alerts, &data, now, &engine_opts) {
            let condition = set.alerts.iter().find(|r| *r.name == *t.rule).map(|r| r.condition_text.clone()).unwrap_or_default();
            entries.push(TimelineEntry {
                at: now,
                kind: "alert",
                rule: t.rule.to_string(),
                labels: t.labels.to_labels(),
                from: t.from.as_str().to_string(),
                to: t.to.as_str().to_string(),
                value: t.value,
                evidence: BTreeMap::from([("condition".to_string(), serde_json::Value::String(condition))]),
            });
        }
        for s in engine.eval_slos(&set.slos, &data, now, &engine_opts) {
            for a in &s.alerts {
                let key = (s.name.clone(), a.severity.clone(), a.long.clone(), a.short.clone());
                let was = burning.insert(key, a.firing).unwrap_or(false);
                if was != a.firing {
                    let labels: Labels = [("severity", &a.severity), ("long", &a.long), ("short", &a.short)]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect();
                    let mut evidence = BTreeMap::new();
                    evidence.insert("factor".to_string(), serde_json::json!(a.factor));
                    evidence.insert(format!("burn_{}", a.long), serde_json::json!(a.long_burn));
                    evidence.insert(format!("burn_{}", a.short), serde_json::json!(a.short_burn));
                    evidence.insert("sli".to_string(), serde_json::json!(s.sli));
                    evidence.insert("budget_remaining".to_string(), serde_json::json!(s.budget_remaining));
                    entries.push(TimelineEntry {
                        at: now,
                        kind: "slo",
                        rule: s.name.clone(),
                        labels,
                        from: if was { "firing" } else { "inactive" }.into(),
                        to: if a.firing { "firing" } else { "inactive" }.into(),
                        value: a.long_burn,
                        evidence,
                    });
                }
            }
        }
    });
    Ok(Timeline { start, end, evaluations, samples, entries })
}

fn labels_text(l: &Labels) -> String {
    let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(","))
}

/// The timeline for people: one line per change, times in UTC (RFC 3339).
pub fn render(t: &Timeline) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let time = |at: SystemTime| humantime::format_rfc3339_millis(at).to_string();
    match (t.start, t.end) {
        (Some(s), Some(e)) => {
            let _ = writeln!(out, "replayed {} samples from {} to {} in {} evaluations", t.samples, time(s), time(e), t.evaluations);
        }
        _ => {
            let _ = writeln!(out, "the recording holds no samples");
        }
    }
    for e in &t.entries {
        let value = e.value.map_or_else(|| "unknown".to_string(), |v| format!("{v}"));
        let evidence: Vec<String> = e
            .evidence
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        let _ = writeln!(
            out,
            "{}  {:<5} {}{}  {} -> {}  value={}  ({})",
            time(e.at),
            e.kind,
            e.rule,
            labels_text(&e.labels),
            e.from,
            e.to,
            value,
            evidence.join("; ")
        );
    }
    out
}

/// Relative distance from a burn-rate threshold under which an SLO verdict is not used
/// as an expectation: the engine's time buckets and PromQL's sample windows may round
/// the same burn to either side of it.
const SLO_MARGIN: f64 = 0.05;

/// A `promtool test rules` file for the exported rules of `set` (in `rules_file`, next
/// to the test): the recording's series, resampled on the evaluation grid, as input, and
/// the native engine's firing alerts at every tick, computed on that same grid, as
/// expectations. If the export means what the engine means, promtool passes it.
///
/// Errors: a rule of `set` that cannot be exported exactly (there is nothing to test it
/// against), or a recording with no samples.
pub fn promtool_test(rec: &Recording, set: &RuleSet, opts: &ReplayOptions, rules_file: &str) -> Result<String, String> {
    use std::fmt::Write as _;
    check_length(rec, opts.evaluation_interval).map_err(|e| e.to_string())?;
    // A promtool test lists every value of every series: keep it to a readable size.
    let cells = ticks(rec, opts.evaluation_interval).saturating_mul(rec.series.len() as u64);
    if cells > MAX_TEST_VALUES {
        return Err(format!(
            "{cells} values ({} series x {} ticks) are too many for a promtool test (at most {MAX_TEST_VALUES}): replay a shorter stretch or at a longer --interval",
            rec.series.len(),
            ticks(rec, opts.evaluation_interval)
        ));
    }
    let (_, refused) = crate::rules::export::prometheus_partial(set);
    if !refused.is_empty() {
        let reasons: Vec<String> = refused.iter().map(ToString::to_string).collect();
        return Err(format!("these rules cannot be exported exactly, so not tested:\n  {}", reasons.join("\n  ")));
    }
    let interval = opts.evaluation_interval.max(Duration::from_millis(1));
    // Pass 1: the value of every series the rules read at every tick (None: not fresh).
    let mut grid: BTreeMap<crate::signal::SeriesKey, Vec<Option<f64>>> = BTreeMap::new();
    let mut ticks = 0usize;
    let start = rec.events.first().map(|e| e.at).ok_or("the recording holds no samples")?;
    simulate(rec.clone(), set, interval, |now, store| {
        for (signal, series) in &dataset(store, set, now).by_signal {
            for sd in series {
                let key = crate::signal::SeriesKey { signal: signal.clone(), labels: sd.labels.to_labels() };
                let v = if sd.fresh { sd.points.last().map(|p| p.1) } else { None };
                let col = grid.entry(key).or_insert_with(|| vec![None; ticks]);
                col.resize(ticks, None);
                col.push(v);
            }
        }
        ticks += 1;
    });
    for col in grid.values_mut() {
        col.resize(ticks, None);
    }
    // Pass 2: the native verdicts on exactly that grid.
    let source = crate::record::RecordedSource { kind: crate::store::SourceKind::Kafka, name: "grid".into(), stale_after: interval };
    let events: Vec<crate::record::RecordedEvent> = (0..ticks)
        .map(|k| crate::record::RecordedEvent {
            at: start + interval * u32::try_from(k).unwrap_or(u32::MAX),
            source: 0,
            values: Some(
                grid.values()
                    .enumerate()
                    .filter_map(|(i, col)| col[k].map(|value| (u32::try_from(i).unwrap_or(u32::MAX), value)))
                    .collect(),
            ),
        })
        .collect();
    let on_grid = Recording { sources: vec![source], series: grid.keys().cloned().collect(), events };
    let engine_opts = EngineOptions {
        eval: EvalOptions { confidence: opts.confidence },
        unknown_after: opts.unknown_after,
        ..EngineOptions::default()
    };
    let mut engine = Engine::default();
    // (tick, alertname) → expected firing alerts: labels and annotations.
    type Expected = Vec<(BTreeMap<String, String>, BTreeMap<String, String>)>;
    let mut checks: Vec<(usize, String, Expected)> = Vec::new();
    let mut tick = 0usize;
    simulate(on_grid, set, interval, |now, store| {
        if tick >= ticks {
            return;
        }
        let data = dataset(store, set, now);
        engine.eval_alerts(&set.alerts, &data, now, &engine_opts);
        for status in engine.rule_statuses(&set.alerts, now, &engine_opts) {
            let rule = set.alerts.iter().find(|r| r.name == status.name && r.file == status.file);
            let mut expected: Expected = Vec::new();
            for (labels, inst) in status.instances.iter() {
                if inst.state == crate::rules::eval::AlertState::Firing {
                    let mut l: BTreeMap<String, String> = labels.to_labels();
                    if let Some(r) = rule {
                        l.extend(r.labels.clone());
                    }
                    expected.push((l, rule.map(|r| r.annotations.clone()).unwrap_or_default()));
                }
            }
            checks.push((tick, status.name.clone(), expected));
        }
        for (spec, status) in set.slos.iter().zip(engine.eval_slos(&set.slos, &data, now, &engine_opts)) {
            for (a, st) in spec.alerts.iter().zip(&status.alerts) {
                let near = |b: Option<f64>| b.is_none_or(|b| (b - a.factor).abs() <= a.factor * SLO_MARGIN);
                if near(st.long_burn) || near(st.short_burn) {
                    continue;
                }
                let mut expected: Expected = Vec::new();
                if st.firing {
                    expected.push((crate::rules::export::slo_alert_labels(spec, a), crate::rules::export::slo_alert_annotations(spec, a)));
                }
                checks.push((tick, crate::rules::export::slo_alert_name(spec, a), expected));
            }
        }
        tick += 1;
    });

    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let step = crate::rules::export::prom_duration_of(interval);
    let mut out = String::new();
    let _ = writeln!(out, "# Generated by `streamguard replay --emit-promtool-test`: the recorded series on a");
    let _ = writeln!(out, "# {step} grid and the native verdicts on them. `promtool test rules` passes when the");
    let _ = writeln!(out, "# exported rules in {rules_file} mean what the native rules mean.");
    let _ = writeln!(out, "rule_files: [{}]\nevaluation_interval: {step}\ntests:\n  - interval: {step}\n    input_series:", q(rules_file));
    for (key, col) in &grid {
        let metric = crate::rules::export::metric_name(&key.signal)?;
        let labels: Vec<String> = key.labels.iter().map(|(k, v)| format!("{k}={}", q(v))).collect();
        let mut values = Vec::with_capacity(col.len());
        let mut was_present = false;
        for v in col {
            values.push(match v {
                Some(x) => {
                    was_present = true;
                    format!("{x}")
                }
                None if was_present => {
                    was_present = false;
                    "stale".to_string()
                }
                None => "_".to_string(),
            });
        }
        let _ = writeln!(out, "      - series: {}\n        values: {}", q(&format!("{metric}{{{}}}", labels.join(","))), q(&values.join(" ")));
    }
    let _ = writeln!(out, "    alert_rule_test:");
    for (tick, name, expected) in &checks {
        let at = crate::rules::export::prom_duration_of(interval * u32::try_from(*tick).unwrap_or(u32::MAX));
        let at = if *tick == 0 { "0s".to_string() } else { at };
        let _ = writeln!(out, "      - eval_time: {at}\n        alertname: {}", q(name));
        if expected.is_empty() {
            let _ = writeln!(out, "        exp_alerts: []");
            continue;
        }
        let _ = writeln!(out, "        exp_alerts:");
        for (labels, annotations) in expected {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {}", q(v))).collect();
            let _ = writeln!(out, "          - exp_labels: {{{}}}", l.join(", "));
            if !annotations.is_empty() {
                let a: Vec<String> = annotations.iter().map(|(k, v)| format!("{k}: {}", q(v))).collect();
                let _ = writeln!(out, "            exp_annotations: {{{}}}", a.join(", "));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecordedEvent, RecordedSource};
    use crate::signal::Observation;
    use crate::store::SourceKind;
    use std::collections::BTreeSet;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn rules(text: &str) -> RuleSet {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.yaml");
        std::fs::write(&p, text).unwrap();
        let known: BTreeSet<String> = ["lag_offsets".to_string()].into_iter().collect();
        crate::rules::file::load(&[p], &known).0.unwrap()
    }

    fn lag(at: u64, v: f64) -> RecordedEvent {
        RecordedEvent { at: t(at), source: 0, values: Some(vec![(0, v)]) }
    }

    #[test]
    fn a_group_falling_behind_and_catching_up_fires_and_resolves_in_simulated_time() {
        let set = rules(
            "apiVersion: streamguard/v1\nkind: Alert\nmetadata:\n  name: behind\nspec:\n  condition: max(lag_offsets) > 100\n  for: 20s\n",
        );
        let mut events: Vec<RecordedEvent> = (0..30).map(|i| lag(i * 10, if (6..=15).contains(&i) { 500.0 } else { 0.0 })).collect();
        events.insert(20, RecordedEvent { at: t(195), source: 0, values: None });
        let rec = Recording {
            sources: vec![RecordedSource { kind: SourceKind::Kafka, name: "c".into(), stale_after: Duration::from_secs(25) }],
            series: vec![Observation::new("lag_offsets", &[("cluster", "c"), ("group", "g")], 0.0).unwrap().key],
            events,
        };
        let opts = ReplayOptions { evaluation_interval: Duration::from_secs(10), confidence: 0.95, unknown_after: Duration::from_secs(600) };
        let tl = replay(rec, &set, &opts).unwrap();
        let changes: Vec<(u64, &str, &str)> = tl
            .entries
            .iter()
            .map(|e| (e.at.duration_since(t(0)).unwrap().as_secs(), e.from.as_str(), e.to.as_str()))
            .collect();
        assert_eq!(changes, vec![(60, "inactive", "pending"), (80, "pending", "firing"), (160, "firing", "resolved")]);
        assert_eq!(tl.entries[0].value, Some(500.0));
        assert_eq!(tl.samples, 31);
        let text = render(&tl);
        assert!(text.contains("behind{} ") || text.contains("behind{"), "{text}");
        assert!(text.lines().nth(2).unwrap_or("").contains("pending -> firing"), "{text}");
    }

    #[test]
    fn a_recording_spanning_too_many_ticks_is_refused_not_simulated() {
        let set = rules("apiVersion: streamguard/v1\nkind: Alert\nmetadata:\n  name: a\nspec:\n  condition: max(lag_offsets) > 1\n");
        let far = RecordedEvent { at: t(0) + Duration::from_secs(50 * 365 * 86_400), source: 0, values: Some(vec![(0, 1.0)]) };
        let rec = Recording {
            sources: vec![RecordedSource { kind: SourceKind::Kafka, name: "c".into(), stale_after: Duration::from_secs(25) }],
            series: vec![Observation::new("lag_offsets", &[("cluster", "c")], 0.0).unwrap().key],
            events: vec![lag(0, 1.0), far],
        };
        let opts = ReplayOptions { evaluation_interval: Duration::from_secs(1), confidence: 0.95, unknown_after: Duration::from_secs(600) };
        assert!(matches!(replay(rec.clone(), &set, &opts), Err(ReplayError::TooLong { .. })));
        assert!(promtool_test(&rec, &set, &opts, "r.yml").unwrap_err().contains("evaluation ticks"));
        let huge = ReplayOptions { evaluation_interval: Duration::from_secs(u64::MAX / 4), ..opts };
        assert_eq!(replay(rec.clone(), &set, &huge).unwrap_err(), ReplayError::Interval, "never an overflow");
        let empty = Recording { events: Vec::new(), ..rec };
        assert_eq!(replay(empty, &set, &opts).unwrap_err(), ReplayError::Empty);
    }
}
