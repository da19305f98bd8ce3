//! `streamguard export prometheus`: equivalent Prometheus recording and alerting rules
//! over streamguard's own metrics, for teams that alert from Prometheus.
//!
//! Translation: a selector becomes the signal's metric (`lag_seconds` →
//! `streamguard_kafka_partition_lag_seconds`); window functions become `*_over_time`,
//! `rate`, `increase`, `deriv` (slope, without streamguard's significance test) and
//! `quantile_over_time`; `time_to_breach(x, T) < D` becomes `predict_linear(x[w], D) >= T`.
//! SLOs become error-ratio recording rules per window and the multi-window burn-rate
//! alerts of their table. PromQL has no unknown: data that is absent simply yields no
//! alert, which matches streamguard's "unknown is never true".
//!
//! Not exportable (an error names the rule): Prometheus-query signals (alert on the query
//! itself), and `time_to_breach` compared any other way than `<`/`<=` a duration.

use std::fmt::Write as _;

use super::expr::{Agg, CmpOp, Cond, Func, MatchOp, ValueExpr};
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
        Func::Slope => format!("deriv({sel}[{}])", window(v)),
        Func::Quantile(q) => format!("quantile_over_time({q}, {sel}[{}])", window(v)),
        Func::TimeToBreach(_) => return Err("time_to_breach must be compared with < or <= a duration".into()),
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

/// PromQL of a condition; with `as_bool`, comparisons return 0/1 (for time-slice SLIs).
fn condition(c: &Cond, as_bool: bool) -> Result<String, String> {
    match c {
        Cond::Cmp { lhs, op, rhs, .. } => {
            if let Func::TimeToBreach(threshold) = lhs.func {
                if !matches!(op, CmpOp::Lt | CmpOp::Le) {
                    return Err("time_to_breach must be compared with < or <= a duration".into());
                }
                let inner = format!("predict_linear({}[{}], {})", selector(lhs)?, window(lhs), number(*rhs));
                // The soonest breach (min of times) is the highest prediction (max).
                let mut flipped = lhs.clone();
                if let Some((agg, _)) = flipped.agg.as_mut() {
                    *agg = match *agg {
                        Agg::Min => Agg::Max,
                        Agg::Max => Agg::Min,
                        other => other,
                    };
                }
                let b = if as_bool { " bool" } else { "" };
                return Ok(format!("{} >={b} {}", aggregate(&flipped, inner), number(threshold)));
            }
            let b = if as_bool { " bool" } else { "" };
            Ok(format!("{} {}{b} {}", value(lhs)?, op.as_str(), number(*rhs)))
        }
        Cond::And(a, b) => {
            let (a, b) = (condition(a, as_bool)?, condition(b, as_bool)?);
            Ok(if as_bool { format!("(({a}) * ({b}))") } else { format!("({a}) and ({b})") })
        }
        Cond::Or(a, b) => {
            let (a, b) = (condition(a, as_bool)?, condition(b, as_bool)?);
            Ok(if as_bool { format!("clamp_max(({a}) + ({b}), 1)") } else { format!("({a}) or ({b})") })
        }
    }
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Error ratio of an SLO over `w`, in PromQL.
fn error_ratio(spec: &SloSpec, w: &str) -> Result<String, String> {
    match &spec.sli {
        Sli::TimeSlice { cond, .. } => Ok(format!("1 - avg_over_time(({})[{w}:1m])", condition(cond, true)?)),
        Sli::Ratio { bad, total, .. } => {
            let over = |v: &ValueExpr| -> Result<String, String> {
                let sel = selector(v)?;
                Ok(aggregate(v, format!("avg_over_time({sel}[{w}])")))
            };
            Ok(format!("({}) / ({})", over(bad)?, over(total)?))
        }
    }
}

/// The whole rule set as one Prometheus rule file.
pub fn prometheus(set: &RuleSet) -> Result<String, Vec<ExportError>> {
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
            match condition(&r.condition, false) {
                Err(message) => errors.push(ExportError { rule: r.name.clone(), message }),
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
                errors.push(ExportError { rule: s.name.clone(), message });
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
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

fn write_slo(out: &mut String, s: &SloSpec) -> Result<(), String> {
    let mut windows: Vec<u64> = s.alerts.iter().flat_map(|a| [a.long.as_secs(), a.short.as_secs()]).collect();
    windows.push(s.window.as_secs());
    windows.sort_unstable();
    windows.dedup();
    let record = |w: u64| format!("streamguard:slo_error_ratio:{}", prom_duration(w));
    let mut text = String::new();
    for w in &windows {
        let _ = writeln!(
            text,
            "      - record: {}\n        expr: {}\n        labels:\n          slo: {}",
            record(*w),
            yaml_str(&error_ratio(s, &prom_duration(*w))?),
            yaml_str(&s.name)
        );
    }
    let budget = 1.0 - s.objective;
    for a in &s.alerts {
        let sev = slo::severity(a);
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
            yaml_str(&format!("{}-burn-{}-{}", s.name, prom_duration(a.long.as_secs()), prom_duration(a.short.as_secs()))),
            yaml_str(&expr),
        );
        // The SLO's labels and annotations, then what the alert sets itself (load
        // rejects SLO labels named slo or severity); a `summary` of the SLO wins.
        let mut labels = s.labels.clone();
        labels.insert("severity".into(), sev.to_string());
        labels.insert("slo".into(), s.name.clone());
        let mut annotations = s.annotations.clone();
        annotations.entry("summary".into()).or_insert_with(|| {
            format!(
                "SLO {} burns its error budget {}x faster than allowed over {} and {}",
                s.name,
                a.factor,
                prom_duration(a.long.as_secs()),
                prom_duration(a.short.as_secs())
            )
        });
        write_map(&mut text, "labels", &labels);
        write_map(&mut text, "annotations", &annotations);
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
            condition(&c, false).unwrap(),
            r#"max by (group) (avg_over_time(streamguard_kafka_partition_lag_seconds{group=~"pay.*"}[5m])) > 30"#
        );
        let c = parse("time_to_breach(lag_seconds, 60s, 10m) < 5m").unwrap();
        assert_eq!(condition(&c, false).unwrap(), "predict_linear(streamguard_kafka_partition_lag_seconds[10m], 300) >= 60");
        let c = parse("group_rewinds > 0 and dlq_ratio > 1%").unwrap();
        assert_eq!(
            condition(&c, true).unwrap(),
            "((streamguard_kafka_group_rewinds_total >bool 0) * (streamguard_kafka_dlq_ratio >bool 0.01))".replace(">bool", "> bool")
        );
    }

    #[test]
    fn query_signals_are_not_exportable() {
        let c = parse("my_query > 1").unwrap();
        assert!(condition(&c, false).unwrap_err().contains("not a streamguard metric"));
    }
}
