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
//! has a sample (not `_`) for that input interval; after its last sample it is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use saphyr::{LoadableYamlNode, Yaml};
use serde::Deserialize;

use super::eval::{AlertState, Engine, EngineOptions};
use super::expr::{self, Dataset, SeriesData};
use super::file::{self, RuleSet};
use crate::signal::Labels;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    tests: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    slo_test: Vec<SloTest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_state: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SloTest {
    eval_time: String,
    slo: String,
    #[serde(default)]
    exp_sli: Option<f64>,
    #[serde(default)]
    exp_budget_remaining: Option<f64>,
    #[serde(default)]
    exp_firing: Option<Vec<String>>,
    #[serde(default)]
    tolerance: Option<f64>,
}

/// The outcome of one test file.
#[derive(Debug, Default)]
pub struct Outcome {
    pub passed: usize,
    pub failed: usize,
    /// One line per failed expectation (or a load error).
    pub messages: Vec<String>,
}

/// Converts saphyr YAML into JSON so serde can type it.
fn to_json(y: &Yaml) -> serde_json::Value {
    use saphyr::Scalar;
    type YamlData<'a> = Yaml<'a>;
    match y {
        YamlData::Value(Scalar::Null) => serde_json::Value::Null,
        YamlData::Value(Scalar::Boolean(b)) => (*b).into(),
        YamlData::Value(Scalar::Integer(i)) => (*i).into(),
        YamlData::Value(Scalar::FloatingPoint(f)) => serde_json::Number::from_f64(f.into_inner()).map_or(serde_json::Value::Null, Into::into),
        YamlData::Value(Scalar::String(s)) => s.to_string().into(),
        YamlData::Sequence(items) => items.iter().map(to_json).collect(),
        YamlData::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let key = match k {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    other => to_json(other).to_string(),
                };
                (key, to_json(v))
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        YamlData::Tagged(_, inner) => to_json(inner),
        _ => serde_json::Value::Null,
    }
}

/// Expands the compact value notation: `1 2 _ 4`, `0+10x3` (0 10 20 30), `5-1x2`
/// (5 4 3), `_x3` (three missing samples).
pub fn expand(values: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in values.split_whitespace() {
        if tok == "_" {
            out.push(None);
        } else if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("invalid repeat in {tok:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
        } else if let Some((start, (negative, rest))) = split_step(tok) {
            let (step, n) = rest.split_once('x').ok_or_else(|| format!("invalid {tok:?}: expected a+bxn"))?;
            let a: f64 = start.parse().map_err(|_| format!("invalid number in {tok:?}"))?;
            let b: f64 = step.parse().map_err(|_| format!("invalid step in {tok:?}"))?;
            let n: usize = n.parse().map_err(|_| format!("invalid count in {tok:?}"))?;
            let b = if negative { -b } else { b };
            out.extend((0..=n).map(|i| Some(a + b * i as f64)));
        } else {
            out.push(Some(tok.parse().map_err(|_| format!("invalid value {tok:?}"))?));
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

fn dur(s: &str, what: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{what}: invalid duration {s:?}: {e}"))
}

/// Test time 0, on a minute boundary so SLO buckets line up with evaluation steps.
const EPOCH: Duration = Duration::from_secs(1_700_000_040);

/// Runs every test of one test file.
pub fn run_file(path: &Path, known_signals: &BTreeSet<String>) -> Outcome {
    let mut out = Outcome::default();
    let fail = |out: &mut Outcome, m: String| {
        out.failed += 1;
        out.messages.push(format!("{}: {m}", path.display()));
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            fail(&mut out, format!("cannot read: {e}"));
            return out;
        }
    };
    let doc = match Yaml::load_from_str(&text) {
        Ok(d) if !d.is_empty() => to_json(&d[0]),
        Ok(_) => serde_json::Value::Null,
        Err(e) => {
            fail(&mut out, format!("invalid YAML: {e}"));
            return out;
        }
    };
    let tf: TestFile = match serde_json::from_value(doc) {
        Ok(t) => t,
        Err(e) => {
            fail(&mut out, format!("invalid test file: {e}"));
            return out;
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let files: Vec<PathBuf> = tf.rule_files.iter().map(|f| base.join(f)).collect();
    let set = match file::load(&files, known_signals).0 {
        Ok(s) => s,
        Err(e) => {
            fail(&mut out, format!("rule files are invalid:\n{e}"));
            return out;
        }
    };
    let eval_interval = match tf.evaluation_interval.as_deref().map(|s| dur(s, "evaluation_interval")).transpose() {
        Ok(d) => d.unwrap_or(Duration::from_secs(60)),
        Err(e) => {
            fail(&mut out, e);
            return out;
        }
    };
    for (i, case) in tf.tests.iter().enumerate() {
        let name = case.name.clone().unwrap_or_else(|| format!("test {}", i + 1));
        match run_case(case, &set, eval_interval) {
            Ok((passed, failures)) => {
                out.passed += passed;
                for f in failures {
                    fail(&mut out, format!("{name}: {f}"));
                }
            }
            Err(e) => fail(&mut out, format!("{name}: {e}")),
        }
    }
    out
}

/// Runs one case: returns (passed expectations, failure messages).
fn run_case(case: &TestCase, set: &RuleSet, eval_interval: Duration) -> Result<(usize, Vec<String>), String> {
    let interval = case.interval.as_deref().map(|s| dur(s, "interval")).transpose()?.unwrap_or(eval_interval);
    let mut inputs = Vec::new();
    for s in &case.input_series {
        let (signal, labels) = parse_series(&s.series)?;
        inputs.push((signal, labels, expand(&s.values)?));
    }
    let mut checks: BTreeMap<Duration, (Vec<&AlertTest>, Vec<&SloTest>)> = BTreeMap::new();
    for a in &case.alert_rule_test {
        checks.entry(dur(&a.eval_time, "eval_time")?).or_default().0.push(a);
    }
    for s in &case.slo_test {
        checks.entry(dur(&s.eval_time, "eval_time")?).or_default().1.push(s);
    }
    let end = checks.keys().next_back().copied().unwrap_or_default();
    let mut engine = Engine::default();
    let opts = EngineOptions::default();
    let (mut passed, mut failures) = (0usize, Vec::new());
    let mut t = Duration::ZERO;
    loop {
        let now = SystemTime::UNIX_EPOCH + EPOCH + t;
        let data = dataset_at(&inputs, interval, t);
        engine.eval_alerts(&set.alerts, &data, now, &opts);
        let slos = engine.eval_slos(&set.slos, &data, now, &opts);
        if let Some((alerts, slo_tests)) = checks.get(&t) {
            for a in alerts {
                match check_alert(a, &engine, set) {
                    Ok(()) => passed += 1,
                    Err(e) => failures.push(format!("at {}: {e}", humantime::format_duration(t))),
                }
            }
            for s in slo_tests {
                match slos.iter().find(|x| x.name == s.slo) {
                    None => failures.push(format!("at {}: no SLO named {:?}", humantime::format_duration(t), s.slo)),
                    Some(status) => match check_slo(s, status) {
                        Ok(()) => passed += 1,
                        Err(e) => failures.push(format!("at {}: slo {:?}: {e}", humantime::format_duration(t), s.slo)),
                    },
                }
            }
        }
        if t >= end {
            break;
        }
        t += eval_interval;
    }
    // Eval times between steps are never reached: say so instead of passing silently.
    for (at, _) in checks.range(..end) {
        if at.as_nanos() % eval_interval.as_nanos() != 0 {
            failures.push(format!("eval_time {} is not a multiple of the evaluation interval", humantime::format_duration(*at)));
        }
    }
    Ok((passed, failures))
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
        data.by_signal.entry(signal.clone()).or_default().push(SeriesData { labels: labels.clone(), fresh, points, source: Some(source) });
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
        .instances
        .iter()
        .filter(|(k, i)| k.0 == rule.file && k.1 == rule.name && matches!(i.state, AlertState::Pending | AlertState::Firing))
        .map(|(k, i)| (k.2.clone(), i.state.as_str().to_string()))
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
    }

    #[test]
    fn series_notation_gives_signal_and_labels() {
        let (s, l) = parse_series(r#"lag_seconds{group="g",method="probe"}"#).unwrap();
        assert_eq!(s, "lag_seconds");
        assert_eq!(l.get("method").map(String::as_str), Some("probe"));
        assert!(parse_series(r#"x{a=~"b"}"#).is_err());
    }
}
