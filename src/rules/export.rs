//! `streamguard export prometheus`: Prometheus recording and alerting rules over
//! streamguard's own metrics that mean what the native rules mean, for teams that alert
//! from Prometheus.
//!
//! # Translation
//! - A selector becomes the signal's metric (`lag_seconds` →
//!   `streamguard_kafka_partition_lag_seconds`); window functions become
//!   `avg/max/min/quantile_over_time`, `rate` and `increase`.
//! - `a and b` pairs series with identical labels, as the engine does; when one side is
//!   an aggregate without `by` (one label-less value that applies to every series of the
//!   other side), it becomes `other and on() aggregate`, so it matches.
//! - An SLO becomes Sloth-style recording rules: the instantaneous bad/total of its SLI at
//!   every evaluation (`slo:streamguard_sli_bad:bool` for a time slice, good only when the
//!   condition holds for *every* series, as the engine requires; `slo:streamguard_sli_bad:sum`
//!   and `slo:streamguard_sli_total:sum` for a ratio), and per alert window the error
//!   ratio over that record (`slo:streamguard_sli_error:ratio_rate<w>`). Long windows cost
//!   one sample per evaluation, never a 40,320-step subquery. The burn-rate alerts
//!   compare two of those windows.
//! - PromQL has no unknown: absent data yields no alert, which matches "unknown is never
//!   true".
//!
//! # Refused (with the reason; the rest of the file is still exported with `--partial`)
//! Prometheus-query signals (alert on the query itself); `slope` and `time_to_breach`
//! (the engine's significance test and confidence bound have no PromQL equivalent; a
//! `deriv`/`predict_linear` rule would fire where the native one does not); `or` between
//! an aggregate without `by` and per-series values (PromQL's `or` cannot apply a scalar
//! truth to every series); `or` inside a time-slice SLI.
//!
//! # Assumptions
//! `rate` and `increase` equal PromQL's on a window covered by samples at both ends with
//! no counter reset; at the edges (a window only partly covered) PromQL extrapolates and
//! the engine does not.

use std::fmt::Write as _;

use super::expr::{Agg, Cond, Func, MatchOp, ValueExpr};
use super::file::RuleSet;
use super::slo::{self, Sli, SloSpec};
use crate::signal::MetricKind;

/// Why a rule cannot be exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {message}")]
pub struct ExportError {
    pub rule: String,
    pub message: String,
}

fn metric(signal: &str) -> Result<String, String> {
    let def = crate::catalog::find(signal).ok_or_else(|| format!("signal `{signal}` is not a streamguard metric (a Prometheus query signal?): alert on the query itself"))?;
    Ok(match def.kind {
        MetricKind::Gauge => format!("streamguard_{}", def.metric),
        MetricKind::Counter => format!("streamguard_{}_total", def.metric),
    })
}

fn selector(v: &ValueExpr) -> Result<String, String> {
    let mut s = metric(&v.selector.signal)?;
    if !v.selector.matchers.is_empty() {
        let m: Vec<String> = v
            .selector
            .matchers
            .iter()
            .map(|m| {
                let op = match m.op {
                    MatchOp::Eq => "=",
                    MatchOp::Ne => "!=",
                    MatchOp::Re => "=~",
                    MatchOp::NotRe => "!~",
                };
                format!("{}{op}{:?}", m.label, m.value)
            })
            .collect();
        s = format!("{s}{{{}}}", m.join(","));
    }
    Ok(s)
}

/// Whether the value is one label-less number (an aggregate without `by`).
fn labelless(v: &ValueExpr) -> bool {
    matches!(&v.agg, Some((_, by)) if by.is_empty())
}

fn cond_labelless(c: &Cond) -> bool {
    match c {
        Cond::Cmp { lhs, .. } => labelless(lhs),
        Cond::And(a, b) | Cond::Or(a, b) => cond_labelless(a) && cond_labelless(b),
    }
}

const NOT_EXACT_TREND: &str = "slope and time_to_breach cannot be exported exactly: the engine's significance test and lower confidence bound have no PromQL equivalent (deriv/predict_linear would fire where the native rule does not); alert on it natively";

fn window(v: &ValueExpr) -> String {
    prom_duration(v.window.unwrap_or_default().as_secs())
}

fn prom_duration(secs: u64) -> String {
    if secs % 86400 == 0 && secs > 0 {
        format!("{}d", secs / 86400)
    } else if secs % 3600 == 0 && secs > 0 {
        format!("{}h", secs / 3600)
    } else if secs % 60 == 0 && secs > 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// PromQL of a value expression (the `time_to_breach` case is handled by the caller).
fn value(v: &ValueExpr) -> Result<String, String> {
    let sel = selector(v)?;
    let inner = match &v.func {
        Func::Last => sel,
        Func::Avg => format!("avg_over_time({sel}[{}])", window(v)),
        Func::Max => format!("max_over_time({sel}[{}])", window(v)),
        Func::Min => format!("min_over_time({sel}[{}])", window(v)),
        Func::Rate => format!("rate({sel}[{}])", window(v)),
        Func::Increase => format!("increase({sel}[{}])", window(v)),
        Func::Quantile(q) => format!("quantile_over_time({q}, {sel}[{}])", window(v)),
        Func::Slope | Func::TimeToBreach(_) => return Err(NOT_EXACT_TREND.into()),
    };
    Ok(aggregate(v, inner))
}

fn aggregate(v: &ValueExpr, inner: String) -> String {
    match &v.agg {
        None => inner,
        Some((agg, by)) => {
            let name = match agg {
                Agg::Max => "max",
                Agg::Min => "min",
                Agg::Sum => "sum",
                Agg::Avg => "avg",
                Agg::Count => "count",
            };
            if by.is_empty() {
                format!("{name}({inner})")
            } else {
                format!("{name} by ({}) ({inner})", by.join(", "))
            }
        }
    }
}

fn number(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// PromQL of an alert condition: the series for which it holds.
fn condition(c: &Cond) -> Result<String, String> {
    match c {
        Cond::Cmp { lhs, op, rhs, .. } => Ok(format!("{} {} {}", value(lhs)?, op.as_str(), number(*rhs))),
        Cond::And(a, b) => {
            let (ea, eb) = (condition(a)?, condition(b)?);
            Ok(match (cond_labelless(a), cond_labelless(b)) {
                // A label-less side applies to every series of the other side.
                (true, false) => format!("({eb}) and on() ({ea})"),
                (false, true) => format!("({ea}) and on() ({eb})"),
                _ => format!("({ea}) and ({eb})"),
            })
        }
        Cond::Or(a, b) => {
            if cond_labelless(a) != cond_labelless(b) {
                return Err("`or` between an aggregate without `by` and per-series values cannot be exported exactly: PromQL's `or` does not apply a scalar truth to every series".into());
            }
            Ok(format!("({}) or ({})", condition(a)?, condition(b)?))
        }
    }
}

/// 1 when a time-slice condition holds for every series (as the engine requires of a
/// good slice), 0 when some series fails it; absent without data.
fn slice_good(c: &Cond) -> Result<String, String> {
    match c {
        Cond::Cmp { lhs, op, rhs, .. } => Ok(format!("min({} {} bool {})", value(lhs)?, op.as_str(), number(*rhs))),
        Cond::And(a, b) => Ok(format!("({}) * ({})", slice_good(a)?, slice_good(b)?)),
        Cond::Or(..) => Err("`or` inside a time-slice SLI cannot be exported exactly (\"every series holds a or b\" has no PromQL form); split the SLO".into()),
    }
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Recording rule names (`level:metric:operations`).
pub const SLI_BAD_BOOL: &str = "slo:streamguard_sli_bad:bool";
pub const SLI_BAD_SUM: &str = "slo:streamguard_sli_bad:sum";
pub const SLI_TOTAL_SUM: &str = "slo:streamguard_sli_total:sum";

fn ratio_record(w: u64) -> String {
    format!("slo:streamguard_sli_error:ratio_rate{}", prom_duration(w))
}

/// The whole of a ratio SLI side as one label-less number, as the engine sums it.
fn summed(v: &ValueExpr) -> Result<String, String> {
    let e = value(v)?;
    Ok(if labelless(v) { e } else { format!("sum({e})") })
}

/// The per-evaluation SLI records of an SLO: (record name, PromQL).
fn sli_records(spec: &SloSpec) -> Result<Vec<(&'static str, String)>, String> {
    match &spec.sli {
        Sli::TimeSlice { cond, .. } => Ok(vec![(SLI_BAD_BOOL, format!("1 - ({})", slice_good(cond)?))]),
        Sli::Ratio { bad, total, .. } => {
            // The engine skips a slice whose total is not positive and clamps bad to
            // [0, total]; both records are absent in such a slice.
            let total_pos = format!("({}) > 0", summed(total)?);
            let bad = format!("(clamp_min({}, 0) < on() ({total_pos})) or on() ({total_pos})", summed(bad)?);
            Ok(vec![(SLI_BAD_SUM, bad), (SLI_TOTAL_SUM, total_pos)])
        }
    }
}

/// Error ratio of an SLO over `w`, from its SLI records.
fn error_ratio(spec: &SloSpec, w: &str) -> String {
    let slo = format!("{{slo={:?}}}", spec.name);
    match &spec.sli {
        Sli::TimeSlice { .. } => format!("avg_over_time({SLI_BAD_BOOL}{slo}[{w}])"),
        Sli::Ratio { .. } => format!("sum_over_time({SLI_BAD_SUM}{slo}[{w}]) / sum_over_time({SLI_TOTAL_SUM}{slo}[{w}])"),
    }
}

/// The whole rule set as one Prometheus rule file, or every rule that cannot be exported
/// exactly.
pub fn prometheus(set: &RuleSet) -> Result<String, Vec<ExportError>> {
    match prometheus_partial(set) {
        (text, errors) if errors.is_empty() => Ok(text),
        (_, errors) => Err(errors),
    }
}

/// Every rule that can be exported exactly, and the reasons for those that cannot.
pub fn prometheus_partial(set: &RuleSet) -> (String, Vec<ExportError>) {
    let mut out = String::from("# Generated by `streamguard export prometheus` from streamguard rule files.\n# Do not edit: change the source rules and export again.\ngroups:\n");
    let mut errors = Vec::new();
    for file in &set.files {
        let alerts: Vec<_> = set.alerts.iter().filter(|r| &r.file == file).collect();
        let slos: Vec<_> = set.slos.iter().filter(|s| &s.file == file).collect();
        if alerts.is_empty() && slos.is_empty() {
            continue;
        }
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("rules");
        let _ = writeln!(out, "  - name: streamguard-{stem}\n    rules:");
        for r in alerts {
            match condition(&r.condition) {
                Err(message) => errors.push(ExportError { rule: format!("{}: rule {:?}", r.file.display(), r.name), message }),
                Ok(expr) => {
                    let _ = writeln!(out, "      - alert: {}\n        expr: {}", yaml_str(&r.name), yaml_str(&expr));
                    if !r.for_.is_zero() {
                        let _ = writeln!(out, "        for: {}", prom_duration(r.for_.as_secs()));
                    }
                    if !r.keep_firing_for.is_zero() {
                        let _ = writeln!(out, "        keep_firing_for: {}", prom_duration(r.keep_firing_for.as_secs()));
                    }
                    write_map(&mut out, "labels", &r.labels);
                    write_map(&mut out, "annotations", &r.annotations);
                }
            }
        }
        for s in slos {
            if let Err(message) = write_slo(&mut out, s) {
                errors.push(ExportError { rule: format!("{}: slo {:?}", s.file.display(), s.name), message });
            }
        }
    }
    (out, errors)
}

fn write_map(out: &mut String, key: &str, map: &std::collections::BTreeMap<String, String>) {
    if map.is_empty() {
        return;
    }
    let _ = writeln!(out, "        {key}:");
    for (k, v) in map {
        let _ = writeln!(out, "          {k}: {}", yaml_str(v));
    }
}

/// The exported name of one burn-rate alert of an SLO.
pub fn slo_alert_name(s: &SloSpec, a: &slo::BurnAlert) -> String {
    format!("{}-burn-{}-{}", s.name, prom_duration(a.long.as_secs()), prom_duration(a.short.as_secs()))
}

/// Its labels: the SLO's, then what the alert sets itself (load rejects SLO labels named
/// `slo` or `severity`).
pub fn slo_alert_labels(s: &SloSpec, a: &slo::BurnAlert) -> std::collections::BTreeMap<String, String> {
    let mut labels = s.labels.clone();
    labels.insert("severity".into(), slo::severity(a).to_string());
    labels.insert("slo".into(), s.name.clone());
    labels
}

/// Its annotations: the SLO's, and a `summary` unless the SLO has one.
pub fn slo_alert_annotations(s: &SloSpec, a: &slo::BurnAlert) -> std::collections::BTreeMap<String, String> {
    let mut annotations = s.annotations.clone();
    annotations.entry("summary".into()).or_insert_with(|| slo_alert_summary(s, a));
    annotations
}

/// The default `summary` annotation.
pub fn slo_alert_summary(s: &SloSpec, a: &slo::BurnAlert) -> String {
    format!(
        "SLO {} burns its error budget {}x faster than allowed over {} and {}",
        s.name,
        a.factor,
        prom_duration(a.long.as_secs()),
        prom_duration(a.short.as_secs())
    )
}

/// A duration as Prometheus writes it (`5m`, `1h`, `90s`).
pub fn prom_duration_of(d: std::time::Duration) -> String {
    prom_duration(d.as_secs())
}

/// The exported metric of a catalog signal (`streamguard_…`, counters with `_total`).
pub fn metric_name(signal: &str) -> Result<String, String> {
    metric(signal)
}

fn write_slo(out: &mut String, s: &SloSpec) -> Result<(), String> {
    let mut windows: Vec<u64> = s.alerts.iter().flat_map(|a| [a.long.as_secs(), a.short.as_secs()]).collect();
    windows.push(s.window.as_secs());
    windows.sort_unstable();
    windows.dedup();
    let record = ratio_record;
    let mut text = String::new();
    for (name, expr) in sli_records(s)? {
        let _ = writeln!(text, "      - record: {name}\n        expr: {}\n        labels:\n          slo: {}", yaml_str(&expr), yaml_str(&s.name));
    }
    for w in &windows {
        let _ = writeln!(
            text,
            "      - record: {}\n        expr: {}\n        labels:\n          slo: {}",
            record(*w),
            yaml_str(&error_ratio(s, &prom_duration(*w))),
            yaml_str(&s.name)
        );
    }
    let budget = 1.0 - s.objective;
    for a in &s.alerts {
        let threshold = number(a.factor * budget);
        let expr = format!(
            "{}{{slo={:?}}} > {threshold} and {}{{slo={:?}}} > {threshold}",
            record(a.long.as_secs()),
            s.name,
            record(a.short.as_secs()),
            s.name
        );
        let _ = writeln!(
            text,
            "      - alert: {}\n        expr: {}",
            yaml_str(&slo_alert_name(s, a)),
            yaml_str(&expr),
        );
        write_map(&mut text, "labels", &slo_alert_labels(s, a));
        write_map(&mut text, "annotations", &slo_alert_annotations(s, a));
    }
    out.push_str(&text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::expr::parse;
    use super::*;

    #[test]
    fn conditions_translate_to_promql_over_streamguard_metrics() {
        let c = parse(r#"max by (group) (avg(lag_seconds{group=~"pay.*"}, 5m)) > 30s"#).unwrap();
        assert_eq!(
            condition(&c).unwrap(),
            r#"max by (group) (avg_over_time(streamguard_kafka_partition_lag_seconds{group=~"pay.*"}[5m])) > 30"#
        );
        let c = parse("group_rewinds > 0 and dlq_ratio > 1%").unwrap();
        assert_eq!(condition(&c).unwrap(), "(streamguard_kafka_group_rewinds_total > 0) and (streamguard_kafka_dlq_ratio > 0.01)");
    }

    #[test]
    fn an_aggregate_without_by_applies_to_every_series_of_the_other_side() {
        // Before: `(max(...) > 10) and (lag > 5)` never matched in PromQL (no common labels).
        let c = parse("max(lag_offsets) > 10 and group_lag_offsets > 5").unwrap();
        assert_eq!(
            condition(&c).unwrap(),
            "(streamguard_kafka_group_lag_offsets > 5) and on() (max(streamguard_kafka_partition_lag_offsets) > 10)"
        );
        let c = parse("max(lag_offsets) > 10 or group_lag_offsets > 5").unwrap();
        assert!(condition(&c).unwrap_err().contains("`or` between an aggregate"));
    }

    #[test]
    fn trend_functions_are_refused_not_approximated() {
        for text in ["slope(lag_seconds, 10m) > 0", "time_to_breach(lag_seconds, 60s, 10m) < 5m"] {
            let c = parse(text).unwrap();
            assert!(condition(&c).unwrap_err().contains("cannot be exported exactly"), "{text}");
        }
    }

    #[test]
    fn a_time_slice_is_good_only_when_every_series_holds() {
        let c = parse("lag_seconds < 30s and group_lag_offsets < 100").unwrap();
        assert_eq!(
            slice_good(&c).unwrap(),
            "(min(streamguard_kafka_partition_lag_seconds < bool 30)) * (min(streamguard_kafka_group_lag_offsets < bool 100))"
        );
        assert!(slice_good(&parse("lag_seconds < 1 or lag_offsets < 1").unwrap()).is_err());
    }

    #[test]
    fn query_signals_are_not_exportable() {
        let c = parse("my_query > 1").unwrap();
        assert!(condition(&c).unwrap_err().contains("not a streamguard metric"));
    }
}
