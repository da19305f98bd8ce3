//! `streamguard test`: unit tests for rule files, in the spirit of `promtool test rules`.
//!
//! ```yaml
//! rule_files: [lag.yaml]            # relative to this file
//! evaluation_interval: 1m
//! tests:
//!   - name: lag alert fires after 5 minutes
//!     interval: 1m                  # spacing of input samples (default: evaluation_interval)
//!     input_series:
//!       - series: 'lag_seconds{cluster="prod",group="payments",method="probe"}'
//!         values: "0+10x30"         # 0 10 20 … 300;  "5 5 _ 7": `_` is a missing sample
//!     alert_rule_test:
//!       - eval_time: 10m
//!         alertname: payments-lag
//!         exp_alerts:                # every pending or firing instance, exactly
//!           - exp_labels: {group: payments}
//!             exp_state: firing      # default firing
//!     slo_test:
//!       - eval_time: 30m
//!         slo: payments-fresh
//!         exp_sli: 0.9               # each optional; tolerance default 0.001
//!         exp_budget_remaining: -19
//!         exp_firing: [page]         # severities of firing burn-rate alerts
//! ```
//! Time runs from 0 in steps of `evaluation_interval`; a series is fresh at a step when it
//! has a sample (not `_`) for that input interval; `_` is a sample its source failed to
//! take (unknown); after its last sample the series is gone (its source still answers).
//!
//! Every expectation is evaluated at exactly its `eval_time`, which must be on the grid
//! of `evaluation_interval`; every problem (an off-grid time, a non-finite number, a
//! duration over 366d, more than [`MAX_STEPS`] samples or steps, a case with nothing to
//! check) is reported at its `file:line:col`, and nothing passes silently.
//!
//! A test file is read like a rule file, through [`file::Ctx`] over saphyr's positioned
//! YAML: an unknown key (with a suggestion), a wrong type or a missing field is located
//! too, and every such problem of a file is reported at once before anything runs.
//!
//! A little over 600 lines: reading test files (with positions), expanding series
//! notation and checking expectations share one set of located-error helpers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use saphyr::{MarkedYamlOwned, YamlDataOwned};

use super::eval::{AlertState, Engine, EngineOptions};
use super::expr::{self, Dataset, SeriesData};
use super::file::{self, Ctx, RuleSet};
use crate::signal::Labels;

/// A test file as written; numbers and times are checked later, by [`prepare`].
#[derive(Debug)]
struct TestFile {
    /// Rule files under test, relative to the test file.
    rule_files: Vec<String>,
    /// Step of the evaluation clock (default 1m).
    evaluation_interval: Option<String>,
    tests: Vec<TestCase>,
}

#[derive(Debug)]
struct TestCase {
    /// Names the case in messages (default `test N`).
    name: Option<String>,
    /// Spacing of input samples (default: evaluation_interval).
    interval: Option<String>,
    input_series: Vec<InputSeries>,
    alert_rule_test: Vec<AlertTest>,
    slo_test: Vec<SloTest>,
}

#[derive(Debug)]
struct InputSeries {
    /// `signal{label="value",…}`.
    series: String,
    /// Compact value notation, see [`expand`].
    values: String,
}

#[derive(Debug)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    /// Every pending or firing instance, exactly.
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug)]
struct ExpAlert {
    exp_labels: BTreeMap<String, String>,
    /// `pending` or `firing` (default firing).
    exp_state: Option<String>,
}

#[derive(Debug)]
struct SloTest {
    eval_time: String,
    slo: String,
    exp_sli: Option<f64>,
    exp_budget_remaining: Option<f64>,
    /// Severities of the firing burn-rate alerts.
    exp_firing: Option<Vec<String>>,
    /// Of `exp_sli` and `exp_budget_remaining` (default 0.001).
    tolerance: Option<f64>,
}

const FILE_FIELDS: [&str; 3] = ["rule_files", "evaluation_interval", "tests"];
const CASE_FIELDS: [&str; 5] = ["name", "interval", "input_series", "alert_rule_test", "slo_test"];
const SERIES_FIELDS: [&str; 2] = ["series", "values"];
const ALERT_TEST_FIELDS: [&str; 3] = ["eval_time", "alertname", "exp_alerts"];
const EXP_ALERT_FIELDS: [&str; 2] = ["exp_labels", "exp_state"];
const SLO_TEST_FIELDS: [&str; 6] = ["eval_time", "slo", "exp_sli", "exp_budget_remaining", "exp_firing", "tolerance"];

/// Reads the document of a test file; problems go to `cx`, each at its node.
fn read_file(cx: &mut Ctx, doc: &MarkedYamlOwned) -> TestFile {
    let f = cx.fields(doc, "test file", &FILE_FIELDS);
    if !matches!(doc.data, YamlDataOwned::Mapping(_)) {
        // Said once by `fields`; every field would be missing too.
        return TestFile { rule_files: Vec::new(), evaluation_interval: None, tests: Vec::new() };
    }
    let rule_files = match f.get("rule_files") {
        Some(n) => cx.string_list(n, "rule_files").into_iter().map(|(s, _)| s).collect(),
        None => {
            cx.err(file::pos(doc), "test file: rule_files is required");
            Vec::new()
        }
    };
    let evaluation_interval = f.get("evaluation_interval").and_then(|n| scalar(cx, n, "evaluation_interval"));
    let tests = match f.get("tests") {
        Some(n) => list(cx, n, "tests").iter().enumerate().map(|(i, c)| read_case(cx, c, i)).collect(),
        None => {
            cx.err(file::pos(doc), "test file: tests is required");
            Vec::new()
        }
    };
    TestFile { rule_files, evaluation_interval, tests }
}

fn read_case(cx: &mut Ctx, n: &MarkedYamlOwned, i: usize) -> TestCase {
    // Fields are read after the name, which every message of the case starts with.
    let name = match n.data {
        YamlDataOwned::Mapping(ref m) => m.iter().find(|(k, _)| file::str_of(k) == Some("name")).and_then(|(_, v)| file::text_of(v)),
        _ => None,
    };
    let what = name.clone().unwrap_or_else(|| format!("test {}", i + 1));
    let f = cx.fields(n, &what, &CASE_FIELDS);
    if let Some(v) = f.get("name") {
        scalar(cx, v, &format!("{what}: name"));
    }
    let interval = f.get("interval").and_then(|v| scalar(cx, v, &format!("{what}: interval")));
    let input_series = items(cx, &f, "input_series", &what).iter().filter_map(|s| read_series(cx, s, &format!("{what}: input_series"))).collect();
    let alert_rule_test =
        items(cx, &f, "alert_rule_test", &what).iter().filter_map(|a| read_alert_test(cx, a, &format!("{what}: alert_rule_test"))).collect();
    let slo_test = items(cx, &f, "slo_test", &what).iter().filter_map(|t| read_slo_test(cx, t, &format!("{what}: slo_test"))).collect();
    TestCase { name, interval, input_series, alert_rule_test, slo_test }
}

fn read_series(cx: &mut Ctx, n: &MarkedYamlOwned, what: &str) -> Option<InputSeries> {
    let f = cx.fields(n, what, &SERIES_FIELDS);
    let series = required(cx, n, &f, "series", what);
    let values = required(cx, n, &f, "values", what);
    Some(InputSeries { series: series?, values: values? })
}

fn read_alert_test(cx: &mut Ctx, n: &MarkedYamlOwned, what: &str) -> Option<AlertTest> {
    let f = cx.fields(n, what, &ALERT_TEST_FIELDS);
    let eval_time = required(cx, n, &f, "eval_time", what);
    let alertname = required(cx, n, &f, "alertname", what);
    let exp_alerts = items(cx, &f, "exp_alerts", what)
        .iter()
        .map(|e| {
            let what = format!("{what}: exp_alerts");
            let f = cx.fields(e, &what, &EXP_ALERT_FIELDS);
            ExpAlert {
                exp_labels: f.get("exp_labels").map(|v| cx.string_map(v, &format!("{what}: exp_labels"))).unwrap_or_default(),
                exp_state: f.get("exp_state").and_then(|v| scalar(cx, v, &format!("{what}: exp_state"))),
            }
        })
        .collect();
    Some(AlertTest { eval_time: eval_time?, alertname: alertname?, exp_alerts })
}

fn read_slo_test(cx: &mut Ctx, n: &MarkedYamlOwned, what: &str) -> Option<SloTest> {
    let f = cx.fields(n, what, &SLO_TEST_FIELDS);
    let eval_time = required(cx, n, &f, "eval_time", what);
    let slo = required(cx, n, &f, "slo", what);
    let mut number = |key: &str| f.get(key).and_then(|v| float(cx, v, &format!("{what}: {key}")));
    let (exp_sli, exp_budget_remaining, tolerance) = (number("exp_sli"), number("exp_budget_remaining"), number("tolerance"));
    let exp_firing = f.get("exp_firing").map(|v| cx.string_list(v, &format!("{what}: exp_firing")).into_iter().map(|(s, _)| s).collect());
    Some(SloTest { eval_time: eval_time?, slo: slo?, exp_sli, exp_budget_remaining, exp_firing, tolerance })
}

/// The scalar under `key` of the mapping `n`, reporting it missing at the mapping.
fn required(cx: &mut Ctx, n: &MarkedYamlOwned, f: &BTreeMap<String, &MarkedYamlOwned>, key: &str, what: &str) -> Option<String> {
    match f.get(key) {
        Some(v) => scalar(cx, v, &format!("{what}: {key}")),
        None => {
            cx.err(file::pos(n), format!("{what}: {key} is required"));
            None
        }
    }
}

/// A scalar as text: durations, names and value lists may be written as numbers too.
fn scalar(cx: &mut Ctx, n: &MarkedYamlOwned, what: &str) -> Option<String> {
    let text = file::text_of(n);
    if text.is_none() {
        cx.err(file::pos(n), format!("{what}: expected a string"));
    }
    text
}

/// A number; whether it is finite is [`prepare`]'s to say, with the case's other problems.
fn float(cx: &mut Ctx, n: &MarkedYamlOwned, what: &str) -> Option<f64> {
    let v = file::text_of(n).and_then(|t| t.trim().parse::<f64>().ok());
    if v.is_none() {
        cx.err(file::pos(n), format!("{what}: expected a number"));
    }
    v
}

/// The list under `key` of a mapping's fields (empty when absent).
fn items<'n>(cx: &mut Ctx, f: &BTreeMap<String, &'n MarkedYamlOwned>, key: &str, what: &str) -> &'n [MarkedYamlOwned] {
    f.get(key).map_or(&[], |v| list(cx, v, &format!("{what}: {key}")))
}

fn list<'n>(cx: &mut Ctx, n: &'n MarkedYamlOwned, what: &str) -> &'n [MarkedYamlOwned] {
    match &n.data {
        YamlDataOwned::Sequence(items) => items,
        _ => {
            cx.err(file::pos(n), format!("{what}: expected a list"));
            &[]
        }
    }
}

/// The outcome of one test file.
#[derive(Debug, Default)]
pub struct Outcome {
    pub passed: usize,
    pub failed: usize,
    /// One line per failed expectation (or a load error).
    pub messages: Vec<String>,
}

/// Expands the compact value notation: `1 2 _ 4`, `0+10x3` (0 10 20 30), `5-1x2`
/// (5 4 3), `_x3` (three missing samples).
/// At most [`MAX_STEPS`] samples; every number finite.
pub fn expand(values: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    let room = |out: &Vec<Option<f64>>, n: usize| {
        if out.len().saturating_add(n) > MAX_STEPS {
            Err(format!("more than {MAX_STEPS} samples"))
        } else {
            Ok(())
        }
    };
    let finite = |x: f64, tok: &str| if x.is_finite() { Ok(x) } else { Err(format!("{tok:?} is not a finite number")) };
    for tok in values.split_whitespace() {
        if tok == "_" {
            room(&out, 1)?;
            out.push(None);
        } else if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("invalid repeat in {tok:?}"))?;
            room(&out, n)?;
            out.extend(std::iter::repeat_n(None, n));
        } else if let Some((start, (negative, rest))) = split_step(tok) {
            let (step, n) = rest.split_once('x').ok_or_else(|| format!("invalid {tok:?}: expected a+bxn"))?;
            let a: f64 = start.parse().map_err(|_| format!("invalid number in {tok:?}"))?;
            let b: f64 = step.parse().map_err(|_| format!("invalid step in {tok:?}"))?;
            let n: usize = n.parse().map_err(|_| format!("invalid count in {tok:?}"))?;
            room(&out, n.saturating_add(1))?;
            let b = if negative { -b } else { b };
            for i in 0..=n {
                out.push(Some(finite(a + b * i as f64, tok)?));
            }
        } else {
            room(&out, 1)?;
            let v: f64 = tok.parse().map_err(|_| format!("invalid value {tok:?}"))?;
            out.push(Some(finite(v, tok)?));
        }
    }
    Ok(out)
}

/// `a+bxn` / `a-bxn` → (a, (negative, "bxn")).
fn split_step(tok: &str) -> Option<(&str, (bool, &str))> {
    let body = tok.strip_prefix('-').unwrap_or(tok);
    let skip = tok.len() - body.len();
    let i = body.find(['+', '-'])?;
    let (a, rest) = tok.split_at(skip + i);
    Some((a, (rest.starts_with('-'), &rest[1..])))
}

/// Parses `name{a="b",…}` into (signal, labels).
fn parse_series(s: &str) -> Result<(String, Labels), String> {
    let cond = expr::parse(&format!("{s} > 0")).map_err(|e| format!("series {s:?}: {}", e.message))?;
    let expr::Cond::Cmp { lhs, .. } = cond else { return Err(format!("series {s:?}: expected a selector")) };
    let mut labels = Labels::new();
    for m in &lhs.selector.matchers {
        if m.op != expr::MatchOp::Eq {
            return Err(format!("series {s:?}: labels must use `=`"));
        }
        labels.insert(m.label.clone(), m.value.clone());
    }
    Ok((lhs.selector.signal, labels))
}

/// A duration of a test file: at most [`expr::MAX_DURATION`]; `positive`: above zero.
fn dur(s: &str, what: &str, positive: bool) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if positive && d.is_zero() => Err(format!("{what}: must be greater than zero")),
        Ok(d) if d > expr::MAX_DURATION => Err(format!("{what}: must be at most {}", expr::MAX_DURATION_TEXT)),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{what}: invalid duration {s:?}: {e}")),
    }
}

/// The most samples one input series may expand to, and the most evaluation steps one
/// case may take (a 28-day SLO at one-minute steps takes 40,320).
pub const MAX_STEPS: usize = 100_000;

/// Test time 0, on a minute boundary so SLO buckets line up with evaluation steps.
const EPOCH: Duration = Duration::from_secs(1_700_000_040);

/// One step of a path into the YAML document, for error positions.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Positions of a test file's nodes, so every error can say `file:line:col`.
struct Locator<'a> {
    path: &'a Path,
    root: Option<&'a MarkedYamlOwned>,
}

impl Locator<'_> {
    fn node(&self, at: &[Seg]) -> Option<&MarkedYamlOwned> {
        let mut n = self.root?;
        for seg in at {
            n = match (seg, &n.data) {
                (Seg::Key(k), YamlDataOwned::Mapping(m)) => m.iter().find(|(key, _)| file::str_of(key) == Some(*k)).map(|(_, v)| v)?,
                (Seg::Index(i), YamlDataOwned::Sequence(v)) => v.get(*i)?,
                _ => return None,
            };
        }
        Some(n)
    }

    /// `file:line:col: message` at the deepest node of `at` that exists.
    fn at(&self, at: &[Seg], message: impl std::fmt::Display) -> String {
        let (line, col) = (0..=at.len()).rev().find_map(|k| self.node(&at[..k])).map_or((1, 1), file::pos);
        format!("{}:{line}:{col}: {message}", self.path.display())
    }
}

/// Runs every test of one test file. Every expectation is evaluated or reported as an
/// error; a file or a case with nothing to check fails.
pub fn run_file(path: &Path, known_signals: &BTreeSet<String>) -> Outcome {
    let mut out = Outcome::default();
    let fail = |out: &mut Outcome, m: String| {
        out.failed += 1;
        out.messages.push(m);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            fail(&mut out, format!("{}: cannot read: {e}", path.display()));
            return out;
        }
    };
    let signals = BTreeSet::new(); // a test file names no signal outside its series
    let mut cx = Ctx::new(path, &text, &signals);
    let root = cx.documents().and_then(|docs| docs.into_iter().next());
    let tf = root.as_ref().map(|doc| read_file(&mut cx, doc));
    let errors = cx.into_errors();
    let tf = match tf {
        Some(tf) if errors.is_empty() => tf,
        Some(_) | None => {
            for e in &errors {
                fail(&mut out, e.to_string());
            }
            if errors.is_empty() {
                fail(&mut out, format!("{}:1:1: test file: empty", path.display()));
            }
            return out;
        }
    };
    let loc = Locator { path, root: root.as_ref() };
    let base = path.parent().unwrap_or(Path::new("."));
    let files: Vec<PathBuf> = tf.rule_files.iter().map(|f| base.join(f)).collect();
    let set = match file::load(&files, known_signals).0 {
        Ok(s) => s,
        Err(e) => {
            fail(&mut out, format!("{}: rule files are invalid:\n{e}", path.display()));
            return out;
        }
    };
    let eval_interval = match tf.evaluation_interval.as_deref().map(|s| dur(s, "evaluation_interval", true)).transpose() {
        Ok(d) => Some(d.unwrap_or(Duration::from_secs(60))),
        Err(e) => {
            fail(&mut out, loc.at(&[Seg::Key("evaluation_interval")], e));
            None
        }
    };
    if tf.tests.is_empty() {
        fail(&mut out, loc.at(&[Seg::Key("tests")], "no tests"));
    }
    for (i, case) in tf.tests.iter().enumerate() {
        let name = case.name.clone().unwrap_or_else(|| format!("test {}", i + 1));
        let here = [Seg::Key("tests"), Seg::Index(i)];
        let case_fail = |out: &mut Outcome, (at, m): (Vec<Seg>, String)| {
            let full: Vec<Seg> = here.iter().copied().chain(at).collect();
            fail(out, loc.at(&full, format!("{name}: {m}")));
        };
        let prepared = match prepare(case, eval_interval) {
            Ok(p) => p,
            Err(errors) => {
                for e in errors {
                    case_fail(&mut out, e);
                }
                continue;
            }
        };
        let (passed, failures) = run_case(case, &prepared, &set);
        out.passed += passed;
        for f in failures {
            case_fail(&mut out, f);
        }
    }
    out
}

/// A case checked and ready to run.
struct Prepared {
    interval: Duration,
    eval_interval: Duration,
    inputs: Vec<(String, Labels, Vec<Option<f64>>)>,
    /// Expectations by evaluation time: (index in alert_rule_test, index in slo_test).
    checks: BTreeMap<Duration, (Vec<usize>, Vec<usize>)>,
}

/// A located problem inside a case: (path below the case, message).
type CaseError = (Vec<Seg<'static>>, String);

/// Checks every number and time of a case before anything runs; reports all problems.
fn prepare(case: &TestCase, eval_interval: Option<Duration>) -> Result<Prepared, Vec<CaseError>> {
    let mut errors: Vec<CaseError> = Vec::new();
    let interval = match case.interval.as_deref().map(|s| dur(s, "interval", true)).transpose() {
        Ok(d) => d.or(eval_interval),
        Err(e) => {
            errors.push((vec![Seg::Key("interval")], e));
            None
        }
    };
    let mut inputs = Vec::new();
    for (j, s) in case.input_series.iter().enumerate() {
        let at = |k: &'static str| vec![Seg::Key("input_series"), Seg::Index(j), Seg::Key(k)];
        match (parse_series(&s.series), expand(&s.values)) {
            (Ok((signal, labels)), Ok(values)) => inputs.push((signal, labels, values)),
            (Err(e), _) => errors.push((at("series"), e)),
            (_, Err(e)) => errors.push((at("values"), format!("values: {e}"))),
        }
    }
    let mut checks: BTreeMap<Duration, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    let times = case.alert_rule_test.iter().map(|a| ("alert_rule_test", &a.eval_time)).chain(case.slo_test.iter().map(|s| ("slo_test", &s.eval_time)));
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (list, text) in times {
        let k = *index.entry(list).and_modify(|k| *k += 1).or_insert(0);
        let at = vec![Seg::Key(list), Seg::Index(k), Seg::Key("eval_time")];
        let t = match dur(text, "eval_time", false) {
            Ok(t) => t,
            Err(e) => {
                errors.push((at, e));
                continue;
            }
        };
        if let Some(step) = eval_interval {
            let fmt = |d: Duration| humantime::format_duration(d).to_string();
            if t.as_nanos() % step.as_nanos() != 0 {
                errors.push((at, format!("eval_time {} is not a multiple of evaluation_interval {}", fmt(t), fmt(step))));
                continue;
            }
            if t.as_nanos() / step.as_nanos() > MAX_STEPS as u128 {
                errors.push((at, format!("eval_time {} is more than {MAX_STEPS} evaluation steps away", fmt(t))));
                continue;
            }
        }
        let entry = checks.entry(t).or_default();
        if list == "alert_rule_test" {
            entry.0.push(k);
        } else {
            entry.1.push(k);
        }
    }
    for (k, st) in case.slo_test.iter().enumerate() {
        for (key, value) in [("exp_sli", st.exp_sli), ("exp_budget_remaining", st.exp_budget_remaining), ("tolerance", st.tolerance)] {
            let at = vec![Seg::Key("slo_test"), Seg::Index(k), Seg::Key(key)];
            if value.is_some_and(|v| !v.is_finite()) {
                errors.push((at, format!("{key}: must be a finite number")));
            } else if key == "tolerance" && value.is_some_and(|v| v < 0.0) {
                errors.push((at, "tolerance: must not be negative".into()));
            }
        }
    }
    if case.alert_rule_test.is_empty() && case.slo_test.is_empty() {
        errors.push((Vec::new(), "no alert_rule_test or slo_test to check".into()));
    }
    match (interval, eval_interval) {
        (Some(interval), Some(eval_interval)) if errors.is_empty() => Ok(Prepared { interval, eval_interval, inputs, checks }),
        // Without a valid evaluation_interval nothing runs; that error is the file's.
        _ => Err(errors),
    }
}

/// Runs one prepared case: returns (passed expectations, located failures). Every
/// expectation is on the evaluation grid (checked by [`prepare`]), so each is evaluated.
fn run_case(case: &TestCase, p: &Prepared, set: &RuleSet) -> (usize, Vec<CaseError>) {
    let end = p.checks.keys().next_back().copied().unwrap_or_default();
    let mut engine = Engine::default();
    let opts = EngineOptions::default();
    let (mut passed, mut failures) = (0usize, Vec::new());
    let mut evaluated = 0usize;
    let mut t = Duration::ZERO;
    while let Some(now) = (SystemTime::UNIX_EPOCH + EPOCH).checked_add(t) {
        let data = dataset_at(&p.inputs, p.interval, t);
        engine.eval_alerts(&set.alerts, &data, now, &opts);
        let slos = engine.eval_slos(&set.slos, &data, now, &opts);
        if let Some((alerts, slo_tests)) = p.checks.get(&t) {
            let when = humantime::format_duration(t);
            for &k in alerts {
                evaluated += 1;
                let at = vec![Seg::Key("alert_rule_test"), Seg::Index(k), Seg::Key("eval_time")];
                match check_alert(&case.alert_rule_test[k], &engine, set) {
                    Ok(()) => passed += 1,
                    Err(e) => failures.push((at, format!("at {when}: {e}"))),
                }
            }
            for &k in slo_tests {
                evaluated += 1;
                let at = vec![Seg::Key("slo_test"), Seg::Index(k), Seg::Key("eval_time")];
                let s = &case.slo_test[k];
                match slos.iter().find(|x| x.name == s.slo) {
                    None => failures.push((at, format!("at {when}: no SLO named {:?}", s.slo))),
                    Some(status) => match check_slo(s, status) {
                        Ok(()) => passed += 1,
                        Err(e) => failures.push((at, format!("at {when}: slo {:?}: {e}", s.slo))),
                    },
                }
            }
        }
        if t >= end {
            break;
        }
        t += p.eval_interval;
    }
    let expected: usize = p.checks.values().map(|(a, s)| a.len() + s.len()).sum();
    if evaluated != expected {
        // Cannot happen once `prepare` has checked the grid; never pass silently anyway.
        failures.push((Vec::new(), format!("{} expectation(s) were not evaluated", expected - evaluated)));
    }
    (passed, failures)
}

/// The inputs as the engine sees them at `t`. Each input series has its own source:
/// - a sample at this step: the series is fresh;
/// - `_`: the source failed to sample, so the data is unknown;
/// - after the last value: the source answers without the series, which is gone (and
///   takes no part, as an absent series in Prometheus).
fn dataset_at(inputs: &[(String, Labels, Vec<Option<f64>>)], interval: Duration, t: Duration) -> Dataset {
    let mut data = Dataset::default();
    for (n, (signal, labels, values)) in inputs.iter().enumerate() {
        let upto = usize::try_from(t.as_nanos() / interval.as_nanos().max(1)).unwrap_or(usize::MAX);
        let points: Vec<_> = values
            .iter()
            .enumerate()
            .take(upto.saturating_add(1))
            .filter_map(|(i, v)| Some((at(interval, i)?, (*v)?)))
            .collect();
        let now = values.get(upto);
        let source = data.add_source(&format!("test/{n}"), !matches!(now, Some(None)));
        let fresh = now.is_some_and(Option::is_some);
        data.by_signal.entry(signal.clone()).or_default().push(SeriesData { labels: labels.clone().into(), fresh, points: points.into(), source: Some(source) });
    }
    data
}

/// The time of sample `i` (`None` if it cannot be represented).
fn at(interval: Duration, i: usize) -> Option<SystemTime> {
    let offset = interval.checked_mul(u32::try_from(i).ok()?)?;
    (SystemTime::UNIX_EPOCH + EPOCH).checked_add(offset)
}

fn check_alert(a: &AlertTest, engine: &Engine, set: &RuleSet) -> Result<(), String> {
    let rule = set.alerts.iter().find(|r| r.name == a.alertname).ok_or_else(|| format!("no alert rule named {:?}", a.alertname))?;
    let mut actual: Vec<(Labels, String)> = engine
        .all_instances()
        .filter(|(k, _, i)| k.0 == rule.file && k.1 == rule.name && matches!(i.state, AlertState::Pending | AlertState::Firing))
        .map(|(_, l, i)| (l.to_labels(), i.state.as_str().to_string()))
        .collect();
    let mut expected: Vec<(Labels, String)> =
        a.exp_alerts.iter().map(|e| (e.exp_labels.clone(), e.exp_state.clone().unwrap_or_else(|| "firing".into()))).collect();
    actual.sort();
    expected.sort();
    if actual == expected {
        Ok(())
    } else {
        Err(format!("alert {:?}: expected {expected:?}, got {actual:?}", a.alertname))
    }
}

fn check_slo(s: &SloTest, status: &super::slo::SloStatus) -> Result<(), String> {
    let tol = s.tolerance.unwrap_or(0.001);
    let close = |what: &str, exp: Option<f64>, got: Option<f64>| -> Result<(), String> {
        match (exp, got) {
            (None, _) => Ok(()),
            (Some(e), Some(g)) if (e - g).abs() <= tol => Ok(()),
            (Some(e), g) => Err(format!("{what}: expected {e}, got {g:?}")),
        }
    };
    close("sli", s.exp_sli, status.sli)?;
    close("budget_remaining", s.exp_budget_remaining, status.budget_remaining)?;
    if let Some(exp) = &s.exp_firing {
        let mut got: Vec<String> = status.alerts.iter().filter(|a| a.firing).map(|a| a.severity.clone()).collect();
        let mut exp = exp.clone();
        got.sort();
        got.dedup();
        exp.sort();
        if got != exp {
            return Err(format!("firing burn-rate alerts: expected {exp:?}, got {got:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compact_notation_expands_like_promtool() {
        assert_eq!(expand("0+10x3").unwrap(), vec![Some(0.0), Some(10.0), Some(20.0), Some(30.0)]);
        assert_eq!(expand("5-1x2").unwrap(), vec![Some(5.0), Some(4.0), Some(3.0)]);
        assert_eq!(expand("-1+1x1").unwrap(), vec![Some(-1.0), Some(0.0)]);
        assert_eq!(expand("5 5 _ 7").unwrap(), vec![Some(5.0), Some(5.0), None, Some(7.0)]);
        assert_eq!(expand("_x2 1").unwrap(), vec![None, None, Some(1.0)]);
        assert!(expand("1+x").is_err());
        assert!(expand("abc").is_err());
        assert_eq!(expand("0+1x100000000000").unwrap_err(), "more than 100000 samples");
        assert_eq!(expand("_x100001").unwrap_err(), "more than 100000 samples");
        assert_eq!(expand("1 inf").unwrap_err(), "\"inf\" is not a finite number");
        assert_eq!(expand("1e308+1e308x2").unwrap_err(), "\"1e308+1e308x2\" is not a finite number");
    }

    #[test]
    fn series_notation_gives_signal_and_labels() {
        let (s, l) = parse_series(r#"lag_seconds{group="g",method="probe"}"#).unwrap();
        assert_eq!(s, "lag_seconds");
        assert_eq!(l.get("method").map(String::as_str), Some("probe"));
        assert!(parse_series(r#"x{a=~"b"}"#).is_err());
    }
}
