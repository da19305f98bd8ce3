//! Rule files: YAML documents (`apiVersion: streamguard/v1`, several per file) of kind
//! `Alert`, `SLO` and `Runbook` (schema in [`runbook`]), validated into [`RuleSet`].
//!
//! Every error names its place, `rules/payments.yaml:14:7: slo "payments-fresh": objective
//! must be below 100%`, and every error of a file is reported at once. Unknown fields and
//! signals get the nearest valid name as a suggestion.
//!
//! Longer than most files on purpose: the schema of every document kind, read from one
//! positioned YAML tree with one error sink, so every message has its file:line:col.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

use super::expr::{self, Cond, Func, Unit, ValueExpr};
use super::slo::{self, BurnAlert, Sli, SloSpec};

pub mod runbook;

pub const API_VERSION: &str = "streamguard/v1";

/// One located problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: usize,
    /// 1-based.
    pub col: usize,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.message)
    }
}

/// All problems of one load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A validated alert rule.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub file: PathBuf,
    pub name: String,
    pub condition: Cond,
    pub condition_text: String,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runbooks: Vec<String>,
}

/// A validated set of rules, SLOs and runbook names from one or more files.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub alerts: Vec<AlertRule>,
    pub slos: Vec<SloSpec>,
    pub runbooks: BTreeSet<String>,
    /// The validated runbooks, by name (the names are also in `runbooks`).
    pub runbook_specs: BTreeMap<String, runbook::Runbook>,
    pub files: Vec<PathBuf>,
}

/// What validation needs to know about signals.
pub struct SignalNames<'a> {
    /// Built-in signals plus configured Prometheus query signals.
    pub known: &'a BTreeSet<String>,
}

impl SignalNames<'_> {
    /// Built-in signals only.
    pub fn builtin() -> BTreeSet<String> {
        crate::catalog::all().map(|d| d.name.to_string()).collect()
    }
}

type Node = MarkedYamlOwned;

pub(super) fn pos(n: &Node) -> (usize, usize) {
    (n.span.start.line(), n.span.start.col() + 1)
}

pub(super) fn str_of(n: &Node) -> Option<&str> {
    match &n.data {
        YamlDataOwned::Value(ScalarOwned::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// A scalar as text (numbers and booleans too), for fields written either way.
pub(super) fn text_of(n: &Node) -> Option<String> {
    match &n.data {
        YamlDataOwned::Value(ScalarOwned::String(s)) => Some(s.clone()),
        YamlDataOwned::Value(ScalarOwned::Integer(i)) => Some(i.to_string()),
        YamlDataOwned::Value(ScalarOwned::FloatingPoint(f)) => Some(f.to_string()),
        YamlDataOwned::Value(ScalarOwned::Boolean(b)) => Some(b.to_string()),
        _ => None,
    }
}

fn entries(n: &Node) -> Option<Vec<(&Node, &Node)>> {
    match &n.data {
        YamlDataOwned::Mapping(m) => Some(m.iter().collect()),
        _ => None,
    }
}

/// Reads YAML nodes into values, collecting every located problem; rule files and rule
/// test files ([`super::testing`]) both read through it.
pub(super) struct Ctx<'a> {
    file: &'a Path,
    source: &'a str,
    errors: Vec<RuleError>,
    signals: &'a BTreeSet<String>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(file: &'a Path, source: &'a str, signals: &'a BTreeSet<String>) -> Self {
        Ctx { file, source, errors: Vec::new(), signals }
    }

    /// The problems found so far, in the order found.
    pub(super) fn into_errors(self) -> Vec<RuleError> {
        self.errors
    }

    /// The source's YAML documents with their positions; `None` (and a located error)
    /// when it is not YAML.
    pub(super) fn documents(&mut self) -> Option<Vec<Node>> {
        match MarkedYamlOwned::load_from_str(self.source) {
            Ok(docs) => Some(docs),
            Err(e) => {
                let m = e.marker();
                self.err((m.line(), m.col() + 1), format!("invalid YAML: {}", e.info()));
                None
            }
        }
    }

    pub(super) fn err(&mut self, at: (usize, usize), message: impl Into<String>) {
        self.errors.push(RuleError { file: self.file.to_path_buf(), line: at.0, col: at.1, message: message.into() });
    }

    /// Fields of a mapping by name; reports unknown fields (with a suggestion) and
    /// non-mappings.
    pub(super) fn fields<'n>(&mut self, n: &'n Node, what: &str, known: &[&str]) -> BTreeMap<String, &'n Node> {
        let mut out = BTreeMap::new();
        let Some(es) = entries(n) else {
            self.err(pos(n), format!("{what}: expected a mapping"));
            return out;
        };
        for (k, v) in es {
            let Some(key) = str_of(k) else {
                self.err(pos(k), format!("{what}: keys must be strings"));
                continue;
            };
            if !known.contains(&key) {
                let hint = crate::suggest::nearest(key, known.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_else(|| format!(" (expected one of: {})", known.join(", ")));
                self.err(pos(k), format!("{what}: unknown field `{key}`{hint}"));
                continue;
            }
            out.insert(key.to_string(), v);
        }
        out
    }

    fn duration(&mut self, n: &Node, what: &str) -> Option<Duration> {
        let Some(t) = text_of(n) else {
            self.err(pos(n), format!("{what}: expected a duration such as 5m"));
            return None;
        };
        match humantime::parse_duration(&t) {
            Ok(d) if d > expr::MAX_DURATION => {
                self.err(pos(n), format!("{what}: must be at most {}", expr::MAX_DURATION_TEXT));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(pos(n), format!("{what}: invalid duration {t:?}: {e}"));
                None
            }
        }
    }

    pub(super) fn string_map(&mut self, n: &Node, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(es) = entries(n) else {
            self.err(pos(n), format!("{what}: expected a mapping of strings"));
            return out;
        };
        for (k, v) in es {
            match (str_of(k), text_of(v)) {
                (Some(k), Some(v)) => {
                    out.insert(k.to_string(), v);
                }
                _ => self.err(pos(v), format!("{what}: expected string keys and values")),
            }
        }
        out
    }

    /// Label names must be Prometheus label names (they become labels of series and of
    /// exported alerts), not reserved by Prometheus (`__…`) nor in `reserved`.
    fn label_names(&mut self, n: &Node, what: &str, reserved: &[&str]) {
        for (k, _) in entries(n).unwrap_or_default() {
            let Some(key) = str_of(k) else { continue };
            let mut chars = key.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid || key.starts_with("__") {
                self.err(pos(k), format!("{what}: invalid label name {key:?} (use [a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"));
            } else if reserved.contains(&key) {
                self.err(pos(k), format!("{what}: label {key:?} is set by streamguard (reserved: {})", reserved.join(", ")));
            }
        }
    }

    pub(super) fn string_list(&mut self, n: &Node, what: &str) -> Vec<(String, (usize, usize))> {
        match &n.data {
            YamlDataOwned::Sequence(items) => items
                .iter()
                .filter_map(|i| match str_of(i) {
                    Some(s) => Some((s.to_string(), pos(i))),
                    None => {
                        self.err(pos(i), format!("{what}: expected a string"));
                        None
                    }
                })
                .collect(),
            _ => {
                self.err(pos(n), format!("{what}: expected a list of names"));
                Vec::new()
            }
        }
    }

    /// Parses a condition written in the scalar `n`, reporting errors at the exact
    /// column, and checks signals and units.
    fn condition(&mut self, n: &Node, what: &str) -> Option<(Cond, String)> {
        let Some(text) = str_of(n) else {
            self.err(pos(n), format!("{what}: expected a condition string"));
            return None;
        };
        let (line, col) = pos(n);
        // Offsets inside a quoted scalar start one column after the quote.
        let quoted = self.source.chars().nth(n.span.start.index()).is_some_and(|c| c == '"' || c == '\'');
        let at = |offset: usize| (line, col + offset + usize::from(quoted));
        match expr::parse(text) {
            Err(e) => {
                self.err(at(e.offset), format!("{what}: {}", e.message));
                None
            }
            Ok(cond) => {
                let mut ok = true;
                for (v, unit, offset) in cond.values() {
                    ok &= self.check_value(v, unit, what, at(v.selector.offset), at(offset));
                }
                ok.then(|| (cond, text.to_string()))
            }
        }
    }

    fn check_value(&mut self, v: &ValueExpr, unit: Unit, what: &str, sig_at: (usize, usize), at: (usize, usize)) -> bool {
        let name = &v.selector.signal;
        if !self.signals.contains(name) {
            let hint = crate::suggest::nearest(name, self.signals.iter().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            self.err(sig_at, format!("{what}: unknown signal `{name}`{hint}"));
            return false;
        }
        let is_time = name.ends_with("_seconds") || matches!(v.func, Func::TimeToBreach(_));
        let rate_like = matches!(v.func, Func::Rate | Func::Slope | Func::Increase | Func::TimeToBreach(_))
            || v.agg.as_ref().is_some_and(|(a, _)| *a == expr::Agg::Count);
        if unit == Unit::Seconds && !is_time && !rate_like {
            self.err(at, format!("{what}: `{name}` is not a time; compare it with a plain number or a %"));
            return false;
        }
        true
    }

    /// A duration that must not be zero.
    fn positive_duration(&mut self, n: &Node, what: &str) -> Option<Duration> {
        match self.duration(n, what)? {
            d if d.is_zero() => {
                self.err(pos(n), format!("{what}: must be greater than zero"));
                None
            }
            d => Some(d),
        }
    }

    /// A finite number (`NaN`, `inf` and `1e999` are errors, not values).
    fn number(&mut self, n: &Node, what: &str) -> Option<f64> {
        let v = text_of(n).and_then(|t| t.trim().parse::<f64>().ok());
        self.finite(n, what, v, "expected a number")
    }

    /// `v` when it is a finite number; otherwise a located error (`expected` when it is
    /// not a number at all).
    fn finite(&mut self, n: &Node, what: &str, v: Option<f64>, expected: &str) -> Option<f64> {
        match v {
            Some(x) if x.is_finite() => Some(x),
            Some(_) => {
                self.err(pos(n), format!("{what}: must be a finite number"));
                None
            }
            None => {
                self.err(pos(n), format!("{what}: {expected}"));
                None
            }
        }
    }

    /// `99.5%`, `99.5` (a number above 1 is a percentage) or `0.995`.
    fn percent(&mut self, n: &Node, what: &str) -> Option<f64> {
        let Some(t) = text_of(n) else {
            self.err(pos(n), format!("{what}: expected a percentage such as 99.5%"));
            return None;
        };
        let v = if let Some(p) = t.trim().strip_suffix('%') {
            p.trim().parse::<f64>().ok().map(|x| x / 100.0)
        } else {
            t.trim().parse::<f64>().ok().map(|x| if x > 1.0 { x / 100.0 } else { x })
        };
        self.finite(n, what, v, "expected a percentage such as 99.5%")
    }
}

/// Labels an SLO's burn-rate alerts and metrics set themselves.
const SLO_RESERVED_LABELS: [&str; 4] = ["slo", "severity", "long", "short"];

const DOC_FIELDS: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];
const META_FIELDS: [&str; 3] = ["name", "labels", "annotations"];
const ALERT_FIELDS: [&str; 4] = ["condition", "for", "keep_firing_for", "runbooks"];
const SLO_FIELDS: [&str; 5] = ["objective", "window", "indicator", "alerting", "runbooks"];
const INDICATOR_FIELDS: [&str; 2] = ["timeslice", "ratio"];
const TIMESLICE_FIELDS: [&str; 1] = ["condition"];
const RATIO_FIELDS: [&str; 2] = ["bad", "total"];
const ALERTING_FIELDS: [&str; 1] = ["burn_rates"];
const BURN_FIELDS: [&str; 4] = ["severity", "factor", "long", "short"];
const KINDS: [&str; 3] = ["Alert", "SLO", "Runbook"];

/// Unresolved runbook references, checked once all files are read.
type RunbookRefs = Vec<(String, PathBuf, (usize, usize))>;

/// Parses one file's text into `set`; returns its errors (empty when valid).
pub fn parse_file(path: &Path, source: &str, signals: &BTreeSet<String>, set: &mut RuleSet, refs: &mut RunbookRefs) -> Vec<RuleError> {
    let mut cx = Ctx::new(path, source, signals);
    let Some(docs) = cx.documents() else { return cx.errors };
    let mut names: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for doc in &docs {
        if matches!(doc.data, YamlDataOwned::Value(ScalarOwned::Null)) {
            continue; // an empty document (a trailing `---`)
        }
        let f = cx.fields(doc, "document", &DOC_FIELDS);
        match f.get("apiVersion").map(|n| (str_of(n), pos(n))) {
            Some((Some(API_VERSION), _)) => {}
            Some((other, at)) => cx.err(at, format!("apiVersion must be {API_VERSION:?}, got {:?}", other.unwrap_or("?"))),
            None => cx.err(pos(doc), format!("missing apiVersion: {API_VERSION}")),
        }
        let kind = match f.get("kind") {
            Some(n) => match str_of(n) {
                Some(k) if KINDS.contains(&k) => k.to_string(),
                Some(k) => {
                    let hint = crate::suggest::nearest(k, KINDS).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                    cx.err(pos(n), format!("unknown kind `{k}`{hint}; expected Alert, SLO or Runbook"));
                    continue;
                }
                None => {
                    cx.err(pos(n), "kind must be a string");
                    continue;
                }
            },
            None => {
                cx.err(pos(doc), "missing kind (Alert, SLO or Runbook)");
                continue;
            }
        };
        let Some(meta) = f.get("metadata") else {
            cx.err(pos(doc), format!("{}: missing metadata.name", kind.to_lowercase()));
            continue;
        };
        let m = cx.fields(meta, "metadata", &META_FIELDS);
        let name = match m.get("name").map(|n| (str_of(n), pos(n))) {
            Some((Some(n), at)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) => {
                if let Some(first) = names.insert((kind.clone(), n.to_string()), at) {
                    cx.err(at, format!("{} {n:?} is defined twice (first at line {})", kind.to_lowercase(), first.0));
                }
                n.to_string()
            }
            Some((_, at)) => {
                cx.err(at, "metadata.name: use letters, digits, `-`, `_`, `.`, `:`");
                continue;
            }
            None => {
                cx.err(pos(meta), "metadata.name is required");
                continue;
            }
        };
        let labels = m.get("labels").map(|n| cx.string_map(n, "metadata.labels")).unwrap_or_default();
        let annotations = m.get("annotations").map(|n| cx.string_map(n, "metadata.annotations")).unwrap_or_default();
        if let Some(n) = m.get("labels") {
            // SLO labels go on series that already carry these names.
            let reserved: &[&str] = if kind == "SLO" { &SLO_RESERVED_LABELS } else { &[] };
            cx.label_names(n, &format!("{} {name:?}: metadata.labels", kind.to_lowercase()), reserved);
        }
        let what = format!("{} {name:?}", kind.to_lowercase());
        match kind.as_str() {
            "Runbook" => {
                set.runbooks.insert(name.clone());
                if let Some(other) = set.runbook_specs.get(&name).filter(|r| r.file != path) {
                    // Runs are journaled and guarded by runbook name.
                    let message = format!("{what} is also defined in {} (runbook names are global)", other.file.display());
                    cx.err(pos(meta), message);
                    continue;
                }
                if let Some(rb) = runbook::parse(&mut cx, f.get("spec").copied(), &what, &name, labels) {
                    set.runbook_specs.insert(name, rb);
                }
            }
            "Alert" => {
                let Some(spec) = f.get("spec") else {
                    cx.err(pos(doc), format!("{what}: missing spec"));
                    continue;
                };
                let s = cx.fields(spec, &what, &ALERT_FIELDS);
                let Some(cn) = s.get("condition") else {
                    cx.err(pos(spec), format!("{what}: spec.condition is required"));
                    continue;
                };
                let cond = cx.condition(cn, &what);
                let for_ = s.get("for").and_then(|n| cx.duration(n, &format!("{what}: for"))).unwrap_or_default();
                let keep = s.get("keep_firing_for").and_then(|n| cx.duration(n, &format!("{what}: keep_firing_for"))).unwrap_or_default();
                let runbooks = s.get("runbooks").map(|n| cx.string_list(n, &format!("{what}: runbooks"))).unwrap_or_default();
                for (r, at) in &runbooks {
                    refs.push((r.clone(), path.to_path_buf(), *at));
                }
                if let Some((condition, condition_text)) = cond {
                    set.alerts.push(AlertRule {
                        file: path.to_path_buf(),
                        name,
                        condition,
                        condition_text,
                        for_,
                        keep_firing_for: keep,
                        labels,
                        annotations,
                        runbooks: runbooks.into_iter().map(|r| r.0).collect(),
                    });
                }
            }
            _ => {
                let Some(spec) = f.get("spec") else {
                    cx.err(pos(doc), format!("{what}: missing spec"));
                    continue;
                };
                if let Some(slo) = parse_slo(&mut cx, spec, &what, path, &name, (labels, annotations), refs) {
                    set.slos.push(slo);
                }
            }
        }
    }
    cx.errors
}

fn parse_slo(
    cx: &mut Ctx,
    spec: &Node,
    what: &str,
    path: &Path,
    name: &str,
    (labels, annotations): (BTreeMap<String, String>, BTreeMap<String, String>),
    refs: &mut RunbookRefs,
) -> Option<SloSpec> {
    let s = cx.fields(spec, what, &SLO_FIELDS);
    let objective = match s.get("objective") {
        None => {
            cx.err(pos(spec), format!("{what}: objective is required (e.g. 99.5%)"));
            None
        }
        Some(n) => match cx.percent(n, &format!("{what}: objective")) {
            Some(o) if o >= 1.0 => {
                cx.err(pos(n), format!("{what}: objective must be below 100%"));
                None
            }
            Some(o) if o <= 0.0 => {
                cx.err(pos(n), format!("{what}: objective must be above 0%"));
                None
            }
            o => o,
        },
    };
    let window = match s.get("window") {
        None => {
            cx.err(pos(spec), format!("{what}: window is required (e.g. 28d)"));
            None
        }
        Some(n) => cx.positive_duration(n, &format!("{what}: window")),
    };
    let sli = match s.get("indicator") {
        None => {
            cx.err(pos(spec), format!("{what}: indicator is required (timeslice or ratio)"));
            None
        }
        Some(n) => {
            let i = cx.fields(n, &format!("{what}: indicator"), &INDICATOR_FIELDS);
            match (i.get("timeslice"), i.get("ratio")) {
                (Some(t), None) => {
                    let tf = cx.fields(t, &format!("{what}: timeslice"), &TIMESLICE_FIELDS);
                    match tf.get("condition") {
                        Some(c) => cx.condition(c, &format!("{what}: timeslice")).map(|(cond, text)| Sli::TimeSlice { cond, text }),
                        None => {
                            cx.err(pos(t), format!("{what}: timeslice.condition is required"));
                            None
                        }
                    }
                }
                (None, Some(r)) => {
                    let rf = cx.fields(r, &format!("{what}: ratio"), &RATIO_FIELDS);
                    let mut part = |k: &str| -> Option<(ValueExpr, String)> {
                        let Some(n) = rf.get(k) else {
                            cx.err(pos(r), format!("{what}: ratio.{k} is required"));
                            return None;
                        };
                        // A ratio part is a value, parsed as the left side of `>= 0`.
                        let text = str_of(n)?.to_string();
                        let probe = MarkedYamlOwned { span: n.span, data: YamlDataOwned::Value(ScalarOwned::String(format!("{text} >= 0"))) };
                        let (cond, _) = cx.condition(&probe, &format!("{what}: ratio.{k}"))?;
                        match cond {
                            Cond::Cmp { lhs, .. } => Some((lhs, text)),
                            _ => None,
                        }
                    };
                    let (bad, total) = (part("bad"), part("total"));
                    match (bad, total) {
                        (Some(b), Some(t)) => Some(Sli::Ratio { bad: b.0, bad_text: b.1, total: t.0, total_text: t.1 }),
                        _ => None,
                    }
                }
                (Some(_), Some(_)) => {
                    cx.err(pos(n), format!("{what}: indicator: choose one of timeslice or ratio"));
                    None
                }
                (None, None) => {
                    cx.err(pos(n), format!("{what}: indicator needs timeslice or ratio"));
                    None
                }
            }
        }
    };
    let alerts = match s.get("alerting") {
        None => None,
        Some(n) => {
            let a = cx.fields(n, &format!("{what}: alerting"), &ALERTING_FIELDS);
            match a.get("burn_rates").map(|b| (*b, &b.data)) {
                None => None,
                Some((_, YamlDataOwned::Sequence(rows))) => Some(rows.iter().filter_map(|row| burn_row(cx, row, what, window)).collect()),
                Some((b, _)) => {
                    cx.err(pos(b), format!("{what}: alerting.burn_rates must be a list"));
                    Some(Vec::new())
                }
            }
        }
    };
    let alerts = match alerts {
        Some(rows) => rows,
        None => {
            let rows = window.map(slo::default_burn_alerts).unwrap_or_default();
            if let (Some(w), Some(longest)) = (window, rows.iter().map(|r| r.long).max()) {
                if longest > w {
                    let at = s.get("window").map_or(pos(spec), |n| pos(n));
                    cx.err(
                        at,
                        format!(
                            "{what}: window {} is shorter than the default burn-rate windows (up to {}): set alerting.burn_rates",
                            short_duration(w),
                            short_duration(longest)
                        ),
                    );
                }
            }
            rows
        }
    };
    let runbooks = s.get("runbooks").map(|n| cx.string_list(n, &format!("{what}: runbooks"))).unwrap_or_default();
    for (r, at) in &runbooks {
        refs.push((r.clone(), path.to_path_buf(), *at));
    }
    Some(SloSpec {
        file: path.to_path_buf(),
        name: name.to_string(),
        objective: objective?,
        window: window?,
        sli: sli?,
        alerts,
        labels,
        annotations,
        runbooks: runbooks.into_iter().map(|r| r.0).collect(),
    })
}

/// A duration as rules write it: `3d`, `6h`, `90s` (the largest unit that divides it).
fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return humantime::format_duration(d).to_string();
    }
    [(86_400, "d"), (3600, "h"), (60, "m")]
        .iter()
        .find(|(unit, _)| secs % unit == 0)
        .map_or_else(|| format!("{secs}s"), |(unit, name)| format!("{}{name}", secs / unit))
}

/// One row of `alerting.burn_rates`, with each problem at its field.
fn burn_row(cx: &mut Ctx, row: &Node, what: &str, window: Option<Duration>) -> Option<BurnAlert> {
    let r = cx.fields(row, &format!("{what}: burn_rates"), &BURN_FIELDS);
    let severity = r.get("severity").and_then(|n| str_of(n)).unwrap_or("page").to_string();
    let factor = match r.get("factor") {
        None => {
            cx.err(pos(row), format!("{what}: burn_rates: factor is required"));
            None
        }
        Some(n) => match cx.number(n, &format!("{what}: burn_rates.factor"))? {
            f if f > 0.0 => Some(f),
            _ => {
                cx.err(pos(n), format!("{what}: burn_rates.factor: must be above 0"));
                None
            }
        },
    };
    let mut window_of = |k: &str| -> Option<(Duration, (usize, usize))> {
        match r.get(k) {
            None => {
                cx.err(pos(row), format!("{what}: burn_rates: {k} is required"));
                None
            }
            Some(n) => cx.positive_duration(n, &format!("{what}: burn_rates.{k}")).map(|d| (d, pos(n))),
        }
    };
    let (long, short) = (window_of("long"), window_of("short"));
    let (Some(factor), Some((long, long_at)), Some((short, short_at))) = (factor, long, short) else { return None };
    let fmt = short_duration;
    if short >= long {
        cx.err(short_at, format!("{what}: burn_rates.short: {} must be shorter than the long window {}", fmt(short), fmt(long)));
        return None;
    }
    if let Some(w) = window.filter(|w| long > *w) {
        cx.err(long_at, format!("{what}: burn_rates.long: {} is longer than the SLO window {}", fmt(long), fmt(w)));
        return None;
    }
    Some(BurnAlert { severity, factor, long, short })
}

/// Rule files under `paths` (files, or directories scanned for `*.yaml`/`*.yml`, not
/// recursing, skipping `*.test.yaml` unit-test files), sorted.
pub fn rule_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            for e in std::fs::read_dir(p)? {
                let f = e?.path();
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
                if f.is_file() && yaml && !name.contains(".test.") {
                    out.push(f);
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Per-file outcome of [`load`].
#[derive(Debug)]
pub struct FileReport {
    pub file: PathBuf,
    pub errors: Vec<RuleError>,
    pub alerts: usize,
    pub slos: usize,
    pub runbooks: usize,
}

/// Loads and validates every rule file under `paths`. The set is valid only if every
/// file is; reports say per file what was found.
pub fn load(paths: &[PathBuf], signals: &BTreeSet<String>) -> (Result<RuleSet, RuleErrors>, Vec<FileReport>) {
    let mut set = RuleSet::default();
    let mut reports = Vec::new();
    let mut refs = RunbookRefs::new();
    let files = match rule_files(paths) {
        Ok(f) => f,
        Err(e) => {
            let err = RuleError { file: paths.first().cloned().unwrap_or_default(), line: 0, col: 0, message: format!("cannot read: {e}") };
            return (Err(RuleErrors(vec![err])), reports);
        }
    };
    for file in &files {
        let (a0, s0, r0) = (set.alerts.len(), set.slos.len(), set.runbook_specs.len());
        let errors = match std::fs::read_to_string(file) {
            Ok(text) => parse_file(file, &text, signals, &mut set, &mut refs),
            Err(e) => vec![RuleError { file: file.clone(), line: 0, col: 0, message: format!("cannot read: {e}") }],
        };
        let runbooks = set.runbook_specs.len() - r0;
        reports.push(FileReport { file: file.clone(), errors, alerts: set.alerts.len() - a0, slos: set.slos.len() - s0, runbooks });
    }
    for (name, file, at) in refs {
        if !set.runbooks.contains(&name) {
            let hint = crate::suggest::nearest(&name, set.runbooks.iter().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            let e = RuleError { file: file.clone(), line: at.0, col: at.1, message: format!("unknown runbook `{name}`{hint}") };
            if let Some(r) = reports.iter_mut().find(|r| r.file == file) {
                r.errors.push(e);
            }
        }
    }
    // SLO budgets are persisted by name, so an SLO name is unique across files.
    let mut slo_names: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut dup = Vec::new();
    for s in &set.slos {
        if let Some(first) = slo_names.insert(&s.name, &s.file) {
            if first != s.file {
                dup.push((s.file.clone(), format!("slo {:?} is also defined in {} (SLO names are global)", s.name, first.display())));
            }
        }
    }
    for (file, message) in dup {
        if let Some(r) = reports.iter_mut().find(|r| r.file == file) {
            r.errors.push(RuleError { file, line: 1, col: 1, message });
        }
    }
    set.files = files;
    let all: Vec<RuleError> = reports.iter().flat_map(|r| r.errors.iter().cloned()).collect();
    if all.is_empty() {
        (Ok(set), reports)
    } else {
        (Err(RuleErrors(all)), reports)
    }
}
