//! The seam between evaluation and remediation: a [`Verdict`] is emitted for every alert
//! transition and every SLO burn-alert transition ([`burn_verdicts`]), with the evidence that decided it
//! (the series the condition read for that instance, each with its quality, last value
//! and time).
//!
//! Pure: built from the evaluator's own values and its [`Dataset`]; no clock, no I/O.
//! Whether a verdict may trigger anything is decided downstream (only a transition to
//! firing, true, on fresh evidence); this module only records the facts.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;

use super::eval::{AlertState, Transition};
use super::expr::{Cond, Dataset, SeriesData, Truth};
use super::slo::{Sli, SloSpec, SloStatus};
use crate::signal::{Labels, SharedLabels};

/// What kind of rule produced a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Alert,
    BurnAlert,
}

/// One series that took part in a decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub signal: String,
    pub labels: Labels,
    /// `fresh` when produced by its source's latest, recent sample; else `stale`.
    pub quality: &'static str,
    pub value: Option<f64>,
    #[serde(with = "crate::signal::opt_unix_seconds")]
    pub at: Option<SystemTime>,
    /// Points in the window the condition reads (statistics are computed over them).
    pub points: usize,
}

/// One transition of one rule instance, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// The alert's or the SLO's name (a burn alert adds its severity to the labels).
    pub rule: String,
    pub labels: Labels,
    pub from: AlertState,
    pub to: AlertState,
    pub truth: Truth,
    pub value: Option<f64>,
    /// Every piece of evidence is fresh (and there is some).
    pub fresh: bool,
    pub evidence: Vec<Evidence>,
    /// Runbooks the rule names.
    pub runbooks: Vec<String>,
    #[serde(with = "crate::signal::unix_seconds")]
    pub at: SystemTime,
}

impl Verdict {
    /// True only for a transition to firing, with a true condition, on fresh evidence:
    /// the only verdict that may trigger a runbook.
    pub fn triggers(&self) -> bool {
        self.to == AlertState::Firing && self.from != AlertState::Firing && self.truth == Truth::True && self.fresh
    }
}

/// Is `series` one of `instance`'s series: every label they share is equal.
pub fn compatible(series: &Labels, instance: &Labels) -> bool {
    instance.iter().all(|(k, v)| series.get(k).is_none_or(|s| s == v))
}

/// [`compatible`] for a series' shared label set.
pub fn compatible_set(series: &SharedLabels, instance: &Labels) -> bool {
    instance.iter().all(|(k, v)| series.get(k).is_none_or(|s| s == v))
}

/// The series of `data` that `cond` reads for the instance `labels`, with their quality.
pub fn evidence(cond: &Cond, labels: &Labels, data: &Dataset, now: SystemTime) -> Vec<Evidence> {
    EvidenceIndex::new(cond, data, now).evidence(labels)
}

/// The evidence of many instances of one condition, found in one pass over the data.
///
/// Per value expression, the series its selector matches are grouped by their values of
/// the instances' label names (the `by` labels of an aggregate; every label of a plain
/// selector), so each instance looks its own series up instead of scanning them all.
/// Scanning was quadratic in a mass incident: 20,000 groups lagging at once are 20,000
/// transitions of `max by (cluster, group) (…)`, each of which read all 20,000 series
/// (400 million label comparisons, most of an evaluation's CPU at that scale).
///
/// Same answer, in the same order, as a scan: a series is an instance's when every label
/// they share is equal ([`compatible`]); one that lacks some of the names is checked
/// against each instance as the scan did.
pub struct EvidenceIndex<'d> {
    values: Vec<&'d crate::rules::expr::ValueExpr>,
    data: &'d Dataset,
    now: SystemTime,
    /// Per set of instance label names, per value expression.
    by_names: HashMap<Vec<String>, Vec<Grouped<'d>>>,
}

/// The series one selector matches, grouped for one set of instance label names.
struct Grouped<'d> {
    /// Every matched series, in the dataset's order.
    matched: Vec<&'d SeriesData>,
    /// Positions in `matched` of the series that carry every name, by their values.
    exact: HashMap<Vec<&'d str>, Vec<usize>>,
    /// Positions of the series that lack some name.
    loose: Vec<usize>,
}

impl<'d> EvidenceIndex<'d> {
    pub fn new(cond: &'d Cond, data: &'d Dataset, now: SystemTime) -> Self {
        EvidenceIndex { values: cond.values().into_iter().map(|(v, _, _)| v).collect(), data, now, by_names: HashMap::new() }
    }

    /// The series the condition reads for the instance `labels` (at most
    /// [`MAX_EVIDENCE`]), with their quality.
    pub fn evidence(&mut self, labels: &Labels) -> Vec<Evidence> {
        let names: Vec<String> = labels.keys().cloned().collect();
        let (values, data) = (&self.values, self.data);
        let groups = self.by_names.entry(names).or_insert_with_key(|names| values.iter().map(|v| Grouped::new(v, names, data)).collect());
        let key: Vec<&str> = labels.values().map(String::as_str).collect();
        let mut out = Vec::new();
        for (v, g) in self.values.iter().zip(groups.iter()) {
            let mut mine: Vec<usize> = g.exact.get(key.as_slice()).cloned().unwrap_or_default();
            mine.extend(g.loose.iter().copied().filter(|&i| compatible_set(&g.matched[i].labels, labels)));
            mine.sort_unstable();
            for s in mine.into_iter().map(|i| g.matched[i]) {
                let since = v.window.and_then(|w| self.now.checked_sub(w));
                let points = s.points.slice().iter().filter(|(t, _)| since.is_none_or(|from| *t >= from) && *t <= self.now).count();
                let last = s.points.last();
                out.push(Evidence {
                    signal: v.selector.signal.clone(),
                    labels: s.labels.to_labels(),
                    quality: if s.fresh { "fresh" } else { "stale" },
                    value: last.map(|p| p.1),
                    at: last.map(|p| p.0),
                    points,
                });
                // Bounded: an aggregate over thousands of series keeps the first 50.
                if out.len() >= MAX_EVIDENCE {
                    return out;
                }
            }
        }
        out
    }
}

impl<'d> Grouped<'d> {
    fn new(v: &crate::rules::expr::ValueExpr, names: &[String], data: &'d Dataset) -> Self {
        let matched: Vec<&SeriesData> = data
            .by_signal
            .get(&v.selector.signal)
            .map(|series| series.iter().filter(|s| v.selector.matchers.iter().all(|m| m.matches(&s.labels))).collect())
            .unwrap_or_default();
        let mut g = Grouped { matched: Vec::new(), exact: HashMap::new(), loose: Vec::new() };
        for (i, s) in matched.iter().enumerate() {
            match names.iter().map(|n| s.labels.get(n)).collect::<Option<Vec<&str>>>() {
                Some(key) => g.exact.entry(key).or_default().push(i),
                None => g.loose.push(i),
            }
        }
        g.matched = matched;
        g
    }
}

/// At most this many series are kept as the evidence of one verdict.
pub const MAX_EVIDENCE: usize = 50;

/// The verdict of an alert transition.
pub fn alert_verdict(t: &Transition, cond: &Cond, truth: Truth, runbooks: &[String], data: &Dataset, now: SystemTime) -> Verdict {
    alert_verdict_indexed(t, truth, runbooks, &mut EvidenceIndex::new(cond, data, now), now)
}

/// [`alert_verdict`] with an index built once for all the transitions of one rule.
pub fn alert_verdict_indexed(t: &Transition, truth: Truth, runbooks: &[String], index: &mut EvidenceIndex<'_>, now: SystemTime) -> Verdict {
    let labels = t.labels.to_labels();
    let evidence = index.evidence(&labels);
    let fresh = !evidence.is_empty() && evidence.iter().all(|e| e.quality == "fresh");
    Verdict {
        kind: VerdictKind::Alert,
        rule: t.rule.to_string(),
        labels,
        from: t.from,
        to: t.to,
        truth,
        value: t.value,
        fresh,
        evidence,
        runbooks: runbooks.to_vec(),
        at: now,
    }
}

/// Burn alerts firing at the previous evaluation, by (SLO, severity, long window).
pub type BurnFiring = std::collections::HashMap<(String, String, String), bool>;

/// The verdicts of the burn alerts of `statuses` (one per SLO of `slos`, in order) whose
/// firing changed since `before`, which is updated. A time-slice SLI's evidence is the
/// series its condition reads; a ratio SLI's is its burn rates (the verdict's value), known
/// on both windows or not fresh.
pub fn burn_verdicts(slos: &[SloSpec], statuses: &[SloStatus], before: &mut BurnFiring, data: &Dataset, now: SystemTime) -> Vec<Verdict> {
    let mut out = Vec::new();
    for (spec, status) in slos.iter().zip(statuses) {
        for a in &status.alerts {
            let key = (spec.name.clone(), a.severity.clone(), a.long.clone());
            let was = before.insert(key, a.firing).unwrap_or(false);
            if was == a.firing {
                continue;
            }
            let (evidence, fresh) = match &spec.sli {
                Sli::TimeSlice { cond, .. } => {
                    let e = evidence(cond, &Labels::new(), data, now);
                    let fresh = !e.is_empty() && e.iter().all(|e| e.quality == "fresh");
                    (e, fresh)
                }
                Sli::Ratio { .. } => (Vec::new(), a.long_burn.is_some() && a.short_burn.is_some()),
            };
            let mut labels = spec.labels.clone();
            labels.insert("slo".into(), spec.name.clone());
            labels.insert("severity".into(), a.severity.clone());
            labels.insert("long".into(), a.long.clone());
            labels.insert("short".into(), a.short.clone());
            out.push(Verdict {
                kind: VerdictKind::BurnAlert,
                rule: spec.name.clone(),
                labels,
                from: if was { AlertState::Firing } else { AlertState::Inactive },
                to: if a.firing { AlertState::Firing } else { AlertState::Resolved },
                truth: if a.firing { Truth::True } else { Truth::False },
                value: a.long_burn,
                fresh,
                evidence,
                runbooks: spec.runbooks.clone(),
                at: now,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::expr::{self, SeriesData};
    use std::time::Duration;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn data(fresh: bool) -> Dataset {
        let mut d = Dataset::default();
        let src = Some(d.add_source("connect/local", fresh));
        for (c, v) in [("a", 1.0), ("b", 0.0)] {
            let labels: Labels = [("connect".to_string(), "local".to_string()), ("connector".to_string(), c.to_string())].into();
            d.by_signal.entry("connector_failed_tasks".into()).or_default().push(SeriesData { labels: labels.into(), fresh, points: vec![(t(0), v)].into(), source: src });
        }
        d
    }

    fn transition(to: AlertState) -> Transition {
        Transition {
            file: std::path::Path::new("r.yaml").into(),
            rule: "connector-task-failed".into(),
            labels: Labels::from([("connect".to_string(), "local".to_string()), ("connector".to_string(), "a".to_string())]).into(),
            from: AlertState::Pending,
            to,
            value: Some(1.0),
            stale: false,
        }
    }

    #[test]
    fn the_evidence_is_the_instances_own_series_with_quality_and_time() {
        let cond = expr::parse("max by (connect, connector) (connector_failed_tasks) > 0").unwrap();
        let v = alert_verdict(&transition(AlertState::Firing), &cond, Truth::True, &[], &data(true), t(1));
        assert_eq!(v.evidence.len(), 1, "{v:?}");
        assert_eq!(v.evidence[0].labels["connector"], "a");
        assert_eq!((v.evidence[0].quality, v.evidence[0].value, v.evidence[0].at), ("fresh", Some(1.0), Some(t(0))));
        assert!(v.fresh && v.triggers());
    }

    /// The scan the index replaced, kept as the model it must agree with.
    fn scanned(cond: &Cond, labels: &Labels, data: &Dataset) -> Vec<(String, Labels)> {
        let mut out = Vec::new();
        for (v, _, _) in cond.values() {
            for s in data.by_signal.get(&v.selector.signal).into_iter().flatten() {
                if v.selector.matchers.iter().all(|m| m.matches(&s.labels)) && compatible_set(&s.labels, labels) && out.len() < MAX_EVIDENCE {
                    out.push((v.selector.signal.clone(), s.labels.to_labels()));
                }
            }
        }
        out
    }

    #[test]
    fn the_indexed_evidence_of_every_instance_is_the_scans_in_the_same_order() {
        // 300 groups × 3 partitions of lag_seconds, plus series that lack the `group`
        // label (compatible with every instance) interleaved, and a second selector.
        let mut d = Dataset::default();
        let src = Some(d.add_source("kafka/c", true));
        let l = |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        for g in 0..300 {
            for p in 0..3 {
                let (gs, ps) = (format!("g{g}"), p.to_string());
                let labels = l(&[("cluster", "c"), ("group", &gs), ("partition", &ps)]);
                d.by_signal.entry("lag_seconds".into()).or_default().push(SeriesData { labels: labels.into(), fresh: true, points: vec![(t(0), g as f64)].into(), source: src });
            }
            if g % 100 == 0 {
                let labels = l(&[("cluster", "c"), ("partition", "9")]);
                d.by_signal.entry("lag_seconds".into()).or_default().push(SeriesData { labels: labels.into(), fresh: false, points: vec![(t(0), 1.0)].into(), source: src });
            }
            let labels = l(&[("cluster", "c"), ("group", &format!("g{g}"))]);
            d.by_signal.entry("group_members".into()).or_default().push(SeriesData { labels: labels.into(), fresh: true, points: vec![(t(0), 0.0)].into(), source: src });
        }
        let cond = expr::parse(r#"max by (cluster, group) (lag_seconds{partition!="2"}) > 30s and min by (cluster, group) (group_members) < 1"#).unwrap();
        let mut index = EvidenceIndex::new(&cond, &d, t(1));
        let mut checked = 0;
        for g in (0..300).step_by(7).chain([1000]) {
            for labels in [l(&[("cluster", "c"), ("group", &format!("g{g}"))]), l(&[("group", &format!("g{g}"))]), l(&[])] {
                let got: Vec<(String, Labels)> = index.evidence(&labels).into_iter().map(|e| (e.signal, e.labels)).collect();
                assert_eq!(got, scanned(&cond, &labels, &d), "instance {labels:?}");
                checked += usize::from(!got.is_empty());
            }
        }
        assert!(checked > 80, "the instances had evidence to compare ({checked})");
        // A group's own, in the data's order: the loose series of g0 (before g5's), its two
        // partitions but not the third, the other two loose series, its members.
        let mine = index.evidence(&l(&[("cluster", "c"), ("group", "g5")]));
        let shown: Vec<String> = mine.iter().map(|e| format!("{}:{}", e.signal, e.labels.get("partition").map_or("-", String::as_str))).collect();
        assert_eq!(shown, ["lag_seconds:9", "lag_seconds:0", "lag_seconds:1", "lag_seconds:9", "lag_seconds:9", "group_members:-"]);
    }

    #[test]
    fn only_a_fresh_true_transition_to_firing_triggers() {
        let cond = expr::parse("connector_failed_tasks > 0").unwrap();
        let firing = alert_verdict(&transition(AlertState::Firing), &cond, Truth::True, &[], &data(true), t(1));
        assert!(firing.triggers());
        let stale = alert_verdict(&transition(AlertState::Firing), &cond, Truth::True, &[], &data(false), t(1));
        assert!(!stale.fresh && !stale.triggers(), "stale evidence never triggers");
        let resolved = alert_verdict(&transition(AlertState::Resolved), &cond, Truth::False, &[], &data(true), t(1));
        assert!(!resolved.triggers());
        let unknown = alert_verdict(&transition(AlertState::Firing), &cond, Truth::Unknown, &[], &data(true), t(1));
        assert!(!unknown.triggers());
        let mut no_evidence = firing.clone();
        no_evidence.evidence.clear();
        no_evidence.fresh = false;
        assert!(!no_evidence.triggers(), "no evidence is not fresh evidence");
    }
}
