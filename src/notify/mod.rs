//! Native alerts, on their way to people: which alerts to send to Alertmanager and when,
//! and what each looks like. Pure: rule statuses and the time come in, alerts to send
//! come out. The HTTP client, its queues and tasks are in [`alertmanager`].
//!
//! Semantics follow Prometheus' rule manager and notifier (`rules/alerting.go`,
//! `notifier/notifier.go`), so an Alertmanager cannot tell the two apart:
//!
//! - Only **firing** instances are sent; pending ones are shown in
//!   `streamguard_alerts{alertstate="pending"}` but never notified.
//! - Labels: the instance's series labels, overridden by the rule's `labels`, then
//!   `alertname` = the rule's name. Empty values are dropped, and so are names that are
//!   not valid Prometheus label names (Alertmanager would reject the whole batch).
//! - `startsAt` is when the instance started firing; while firing, `endsAt` is
//!   `now + 4 × max(resend_interval, evaluation_interval)`, so Alertmanager resolves the
//!   alert by itself if the agent dies; on resolve, `endsAt` is the resolve time.
//! - A firing alert is re-sent every `resend_interval`; a resolved one is sent at once,
//!   then re-sent every `resend_interval` for [`RESOLVED_RETENTION`] (an Alertmanager
//!   that missed the first resolve still learns it), then forgotten.
//!
//! # Guarantees
//! - An instance that stops firing for any reason — its condition cleared, its series
//!   or its rule disappeared (reload), its state machine dropped it — is resolved: the
//!   tracker remembers what it sent and resolves whatever it no longer sees firing.
//! - Decisions depend only on the public [`RuleStatus`]/[`crate::rules::eval::Instance`]
//!   view of the engine.
//!
//! # Assumptions
//! - `observe` receives the statuses of **every** rule of the running set (what
//!   [`crate::evaluate::Rules::rule_statuses`] returns), not one group's.

pub mod alertmanager;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::rules::eval::{AlertState, Instance, RuleStatus};
use crate::signal::{Labels, SharedLabels};

/// How long a resolved alert keeps being re-sent (Prometheus: 15m).
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// The label Alertmanager groups and silences by; set from the rule's name.
pub const ALERTNAME: &str = "alertname";

/// One alert as Alertmanager's API v2 (`POST /api/v2/alerts`) takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    #[serde(serialize_with = "rfc3339")]
    pub starts_at: SystemTime,
    #[serde(serialize_with = "rfc3339")]
    pub ends_at: SystemTime,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

impl Alert {
    /// Resolved when `endsAt` is not after `now`.
    pub fn is_resolved(&self, now: SystemTime) -> bool {
        self.ends_at <= now
    }
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
}

/// Whether `name` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not
/// `__name__`). Pure.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != "__name__"
}

/// The labels of one alert, as Prometheus builds them: series labels, overridden by
/// rule labels, then `alertname`. Empty values and invalid names are dropped. Pure.
pub fn alert_labels(rule: &str, rule_labels: &BTreeMap<String, String>, series: &SharedLabels) -> Labels {
    let mut out: Labels = series.to_labels();
    for (k, v) in rule_labels {
        out.insert(k.clone(), v.clone());
    }
    out.insert(ALERTNAME.to_string(), rule.to_string());
    out.retain(|k, v| !v.is_empty() && valid_label_name(k));
    out
}

/// Timing of notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub resend_interval: Duration,
    pub evaluation_interval: Duration,
}

impl Timing {
    /// How long a firing alert stays valid in Alertmanager without being re-sent
    /// (Prometheus: 4 × max(resend delay, evaluation interval)).
    pub fn valid_for(&self) -> Duration {
        self.resend_interval.max(self.evaluation_interval).saturating_mul(4)
    }
}

/// A rule's labels and annotations, as its alerts are sent with them: one per rule,
/// shared by each of its alerts (in a mass incident one rule fires 200,000 times), and
/// replaced when a reload changes them.
#[derive(Debug, PartialEq)]
struct Meta {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// What the tracker knows about one alert it has seen firing.
#[derive(Debug, Clone)]
struct Tracked {
    /// The rule's labels and annotations while the alert last fired (a resolved alert
    /// keeps the ones it fired with).
    meta: Arc<Meta>,
    starts_at: SystemTime,
    resolved_at: Option<SystemTime>,
    /// When it was last due (handed to the queues, or left out for their capacity: see
    /// [`Tracker::due`]).
    last_sent: Option<SystemTime>,
    /// When it was last handed to the queues.
    last_queued: Option<SystemTime>,
    /// The last [`Tracker::observe`] that read its instance firing.
    seen: u64,
}

/// The alerts of one rule, by series labels.
#[derive(Debug, Default)]
struct RuleAlerts {
    /// The rule's labels and annotations as last observed.
    meta: Option<Arc<Meta>>,
    alerts: HashMap<SharedLabels, Tracked>,
    /// The instance list last read. The engine makes a new list when it evaluates the
    /// rule's file, and the statuses are observed after any file's evaluation, so most
    /// observations find the list they read before and need not read it again. Weak: it
    /// only keeps the allocation (so its address cannot be reused), not the instances.
    read: Weak<Vec<(SharedLabels, Instance)>>,
    /// The observation that read it: an alert firing in it has this as `seen`.
    read_at: u64,
    /// The last observation whose statuses had this rule.
    observed_at: u64,
}

/// The notifier's memory: every alert seen firing, until its resolve has been sent for
/// [`RESOLVED_RETENTION`]. Kept per rule file, rule name and series labels, so an
/// observation looks an instance up by its borrowed labels and copies nothing for an
/// alert it already tracks: the alert's labels are built only when it is due.
#[derive(Debug, Default)]
pub struct Tracker {
    files: HashMap<PathBuf, HashMap<String, RuleAlerts>>,
    /// How many observations were made (tells which alerts the latest one saw).
    generation: u64,
}

impl Tracker {
    /// Takes in the statuses of every rule at `now`. Pure.
    pub fn observe(&mut self, statuses: &[RuleStatus], now: SystemTime) {
        self.generation += 1;
        let generation = self.generation;
        for rule in statuses {
            let tracked = match self.files.get_mut(rule.file.as_path()).and_then(|f| f.get_mut(rule.name.as_str())) {
                Some(tracked) => tracked,
                None if rule.instances.iter().any(|(_, i)| i.state == AlertState::Firing) => {
                    self.files.entry(rule.file.clone()).or_default().entry(rule.name.clone()).or_default()
                }
                None => continue, // nothing tracked, nothing firing
            };
            tracked.observed_at = generation;
            let (meta, same_meta) = match &tracked.meta {
                Some(m) if m.labels == rule.labels && m.annotations == rule.annotations => (m.clone(), true),
                _ => (tracked.meta.insert(Arc::new(Meta { labels: rule.labels.clone(), annotations: rule.annotations.clone() })).clone(), false),
            };
            if same_meta && std::ptr::eq(tracked.read.as_ptr(), Arc::as_ptr(&rule.instances)) {
                continue; // read already, and unchanged since
            }
            tracked.read = Arc::downgrade(&rule.instances);
            tracked.read_at = generation;
            for (series, inst) in rule.instances.iter() {
                let known = tracked.alerts.get_mut(series);
                if inst.state == AlertState::Firing {
                    match known {
                        Some(t) if t.resolved_at.is_none() => {
                            t.meta = meta.clone();
                            t.seen = generation;
                        }
                        // New, or fired again after resolving: a new alert for Alertmanager.
                        _ => {
                            let starts_at = inst.firing_since.get().or(inst.active_since.get()).unwrap_or(now);
                            let t = Tracked { meta: meta.clone(), starts_at, resolved_at: None, last_sent: None, last_queued: None, seen: generation };
                            tracked.alerts.insert(series.clone(), t);
                        }
                    }
                } else if let Some(t) = known.filter(|t| t.resolved_at.is_none()) {
                    t.resolved_at = Some(inst.resolved_at.get().unwrap_or(now).max(t.starts_at));
                }
            }
        }
        // Firing before and not in the list now, or the rule is gone.
        for rules in self.files.values_mut() {
            for rule in rules.values_mut() {
                let (gone, read_at) = (rule.observed_at != generation, rule.read_at);
                for t in rule.alerts.values_mut().filter(|t| t.resolved_at.is_none() && (gone || t.seen != read_at)) {
                    t.resolved_at = Some(now.max(t.starts_at));
                }
                rule.alerts.retain(|_, t| t.resolved_at.is_none_or(|r| now.duration_since(r).unwrap_or_default() < RESOLVED_RETENTION));
            }
            rules.retain(|_, rule| !rule.alerts.is_empty());
        }
        self.files.retain(|_, rules| !rules.is_empty());
    }

    /// The alerts due at `now` (new, resolved since last sent, or due for a resend),
    /// marked as sent, at most `limit` of them (the queues' capacity), and how many more
    /// were due. Pure.
    ///
    /// Every due alert counts as sent, as in Prometheus' notifier, whose queue drops what
    /// does not fit; only the alerts that can be queued are built (in a mass incident
    /// 200,000 alerts fall due at once, and the queue holds 10,000). The ones left out go
    /// first the next time more are due than fit: resolves not queued since they
    /// resolved, then the alerts queued longest ago (never, first). The alerts returned
    /// are in label order.
    pub fn due(&mut self, now: SystemTime, timing: Timing, generator_url: &str, limit: usize) -> (Vec<Alert>, usize) {
        let mut due: Vec<(&str, &SharedLabels, &mut Tracked)> = Vec::new();
        for rules in self.files.values_mut() {
            for (name, rule) in rules.iter_mut() {
                for (series, t) in rule.alerts.iter_mut() {
                    if needs_sending(t.last_sent, t.resolved_at, now, timing.resend_interval) {
                        due.push((name.as_str(), series, t));
                    }
                }
            }
        }
        let left_out = due.len().saturating_sub(limit);
        if left_out > 0 {
            // The `limit` first by priority, in no particular order (they are sorted by
            // label below): linear, where sorting 200,000 label sets was not.
            let priority = |t: &Tracked| (t.resolved_at.is_none_or(|r| t.last_queued.is_some_and(|q| q >= r)), t.last_queued);
            due.select_nth_unstable_by(limit, |a, b| priority(a.2).cmp(&priority(b.2)));
        }
        let mut out = Vec::with_capacity(due.len().min(limit));
        for (i, (name, series, t)) in due.into_iter().enumerate() {
            t.last_sent = Some(now);
            if i >= limit {
                continue;
            }
            t.last_queued = Some(now);
            out.push(Alert {
                labels: alert_labels(name, &t.meta.labels, series),
                annotations: t.meta.annotations.clone(),
                starts_at: t.starts_at,
                ends_at: t.resolved_at.unwrap_or(now + timing.valid_for()),
                generator_url: generator_url.to_string(),
            });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        (out, left_out)
    }

    /// Alerts tracked (firing, or resolved within the retention).
    pub fn len(&self) -> usize {
        self.files.values().flat_map(|rules| rules.values()).map(|rule| rule.alerts.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Prometheus' `needsSending`: never sent, resolved since last sent, or last sent a
/// whole resend interval ago. Pure.
pub fn needs_sending(last_sent: Option<SystemTime>, resolved_at: Option<SystemTime>, now: SystemTime, resend: Duration) -> bool {
    let Some(sent) = last_sent else { return true };
    if resolved_at.is_some_and(|r| r > sent) {
        return true;
    }
    sent + resend <= now
}

/// The series of `streamguard_alerts` (Prometheus' `ALERTS`): one per pending or firing
/// instance, labelled like the alert plus `alertstate`, each label set once. Pure.
///
/// `f` is called with each label set (name order) as it is built, in one reused buffer:
/// at 20,000 groups a mass incident is 200,000 instances, and a scrape that built them
/// all as maps first held ~300 MB for a moment. Instances are gathered only where two
/// could share a label set (see [`may_collide`]), a group of rules of one name at a time.
pub fn for_each_alert_series<E>(statuses: &[RuleStatus], mut f: impl FnMut(&[(&str, &str)]) -> Result<(), E>) -> Result<(), E> {
    let mut by_name: BTreeMap<&str, Vec<&RuleStatus>> = BTreeMap::new();
    for rule in statuses {
        by_name.entry(rule.name.as_str()).or_default().push(rule);
    }
    let mut buf = Vec::new();
    for rules in by_name.values() {
        if !may_collide(rules) {
            for (rule, series, state) in active(rules) {
                alert_pairs(rule, series, state, &mut buf);
                f(&buf)?;
            }
            continue;
        }
        let mut sets: Vec<Vec<(&str, &str)>> = active(rules)
            .map(|(rule, series, state)| {
                let mut v = Vec::new();
                alert_pairs(rule, series, state, &mut v);
                v
            })
            .collect();
        sets.sort_unstable();
        sets.dedup();
        for set in &sets {
            f(set)?;
        }
    }
    Ok(())
}

/// [`for_each_alert_series`], collected and sorted (tests).
#[cfg(test)]
fn alert_series(statuses: &[RuleStatus]) -> Vec<Labels> {
    let mut out: Vec<Labels> = Vec::new();
    let _ = for_each_alert_series(statuses, |l| {
        out.push(l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        Ok::<(), std::convert::Infallible>(())
    });
    out.sort();
    out
}

/// The pending and firing instances of `rules`, with their `alertstate`.
fn active<'a>(rules: &'a [&'a RuleStatus]) -> impl Iterator<Item = (&'a RuleStatus, &'a SharedLabels, &'static str)> + 'a {
    rules.iter().flat_map(|rule| {
        rule.instances.iter().filter_map(move |(series, inst)| match inst.state {
            AlertState::Pending => Some((*rule, series, "pending")),
            AlertState::Firing => Some((*rule, series, "firing")),
            AlertState::Inactive | AlertState::Resolved => None,
        })
    })
}

/// Whether two instances of `rules` (rules of one name) could have the same alert
/// labels: rules of one name in several files, or a series label that the alert's labels
/// override or drop (a rule label, `alertname`, `alertstate`, an empty value, an invalid
/// name). Otherwise distinct series are distinct alerts.
fn may_collide(rules: &[&RuleStatus]) -> bool {
    if rules.len() > 1 {
        return true;
    }
    active(rules).any(|(rule, series, _)| {
        series.iter().any(|(k, v)| v.is_empty() || !valid_label_name(k) || k == ALERTNAME || k == "alertstate" || rule.labels.contains_key(k))
    })
}

/// The labels of one `streamguard_alerts` series in `out`, by name: [`alert_labels`]
/// plus `alertstate`, borrowed.
fn alert_pairs<'a>(rule: &'a RuleStatus, series: &'a SharedLabels, state: &'a str, out: &mut Vec<(&'a str, &'a str)>) {
    out.clear();
    out.extend(series.iter());
    out.extend(rule.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    out.push((ALERTNAME, rule.name.as_str()));
    out.push(("alertstate", state));
    // Stable: of one name, the one pushed last (rule over series, ours over both) wins.
    out.sort_by(|a, b| a.0.cmp(b.0));
    out.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            *kept = *later;
        }
        same
    });
    out.retain(|(k, v)| !v.is_empty() && valid_label_name(k));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::expr::Truth;
    use crate::signal::Moment;
    use std::path::Path;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    const TIMING: Timing = Timing { resend_interval: Duration::from_secs(60), evaluation_interval: Duration::from_secs(10) };
    const URL: &str = "http://agent:9898/api/v1/rules";

    /// (group, endsAt) of each alert.
    fn ends(sent: &[Alert]) -> Vec<(&str, SystemTime)> {
        sent.iter().map(|a| (a.labels["group"].as_str(), a.ends_at)).collect()
    }

    /// Every alert due (no queue limit).
    fn due(tr: &mut Tracker, now: SystemTime) -> Vec<Alert> {
        let (alerts, left_out) = tr.due(now, TIMING, URL, usize::MAX);
        assert_eq!(left_out, 0);
        alerts
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn instance(state: AlertState, since: u64) -> Instance {
        Instance {
            state,
            active_since: Moment::at(t(since)),
            firing_since: (state == AlertState::Firing).then(|| t(since)).into(),
            truth: Truth::True,
            ..Instance::default()
        }
    }

    fn status(instances: Vec<(Labels, Instance)>) -> RuleStatus {
        RuleStatus {
            file: PathBuf::from("rules/lag.yaml"),
            name: "lag-high".into(),
            condition: "max(lag_seconds) > 30s".into(),
            for_seconds: 0.0,
            keep_firing_for_seconds: 0.0,
            labels: [("severity".to_string(), "page".to_string())].into(),
            annotations: [("summary".to_string(), "behind".to_string())].into(),
            runbooks: Vec::new(),
            unknown: false,
            instances: std::sync::Arc::new(instances.into_iter().map(|(l, i)| (l.into(), i)).collect()),
            quiet: 0,
        }
    }

    #[test]
    fn rule_labels_override_series_labels_and_alertname_overrides_both() {
        let rule = [("severity".to_string(), "page".to_string()), ("group".to_string(), "ruled".to_string())].into();
        let series = labels(&[("group", "billing"), ("alertname", "spoof"), ("cluster", "local"), ("bad-name", "x"), ("empty", "")]);
        let got = alert_labels("lag-high", &rule, &series.into());
        assert_eq!(got, labels(&[("alertname", "lag-high"), ("cluster", "local"), ("group", "ruled"), ("severity", "page")]));
    }

    #[test]
    fn a_firing_instance_is_sent_at_once_with_ends_at_four_resend_intervals_ahead() {
        let mut tr = Tracker::default();
        tr.observe(&[status(vec![(labels(&[("group", "g")]), instance(AlertState::Firing, 0))])], t(5));
        let sent = due(&mut tr, t(5));
        assert_eq!(sent.len(), 1);
        let a = &sent[0];
        assert_eq!(a.labels, labels(&[("alertname", "lag-high"), ("group", "g"), ("severity", "page")]));
        assert_eq!(a.annotations["summary"], "behind");
        assert_eq!(a.starts_at, t(0));
        assert_eq!(a.ends_at, t(5 + 240));
        assert_eq!(a.generator_url, URL);
        let json = serde_json::to_value(a).unwrap();
        assert_eq!(json["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(json["generatorURL"], URL);
    }

    #[test]
    fn pending_instances_are_never_sent() {
        let mut tr = Tracker::default();
        tr.observe(&[status(vec![(labels(&[("group", "g")]), instance(AlertState::Pending, 0))])], t(5));
        assert!(due(&mut tr, t(5)).is_empty());
        assert!(tr.is_empty());
    }

    #[test]
    fn a_firing_alert_is_resent_only_after_the_resend_interval() {
        let mut tr = Tracker::default();
        let firing = [status(vec![(labels(&[("group", "g")]), instance(AlertState::Firing, 0))])];
        tr.observe(&firing, t(0));
        assert_eq!(due(&mut tr, t(0)).len(), 1);
        for s in [10, 30, 59] {
            tr.observe(&firing, t(s));
            assert!(due(&mut tr, t(s)).is_empty(), "at {s}s");
        }
        tr.observe(&firing, t(60));
        let again = due(&mut tr, t(60));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].ends_at, t(300), "validity moves forward with each resend");
    }

    #[test]
    fn a_resolved_alert_is_sent_at_once_with_ends_at_the_resolve_time_then_forgotten() {
        let mut tr = Tracker::default();
        let g = labels(&[("group", "g")]);
        tr.observe(&[status(vec![(g.clone(), instance(AlertState::Firing, 0))])], t(0));
        due(&mut tr, t(0));
        let resolved = Instance { state: AlertState::Resolved, resolved_at: Moment::at(t(20)), ..Instance::default() };
        tr.observe(&[status(vec![(g.clone(), resolved.clone())])], t(20));
        let sent = due(&mut tr, t(20));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].ends_at, t(20));
        assert!(sent[0].is_resolved(t(20)));
        assert_eq!(sent[0].starts_at, t(0), "start time survives the resolve");
        // Re-sent each resend interval while retained, then dropped.
        tr.observe(&[status(vec![(g.clone(), resolved.clone())])], t(80));
        assert_eq!(due(&mut tr, t(80)).len(), 1);
        tr.observe(&[status(vec![(g, resolved)])], t(20) + RESOLVED_RETENTION);
        assert!(tr.is_empty());
    }

    #[test]
    fn an_alert_whose_instance_or_rule_disappears_is_resolved_at_that_time() {
        let mut tr = Tracker::default();
        tr.observe(&[status(vec![(labels(&[("group", "g")]), instance(AlertState::Firing, 0))])], t(0));
        due(&mut tr, t(0));
        tr.observe(&[status(vec![])], t(30));
        let sent = due(&mut tr, t(30));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].ends_at, t(30));
        // A rule removed by a reload: no status at all.
        tr.observe(&[status(vec![(labels(&[("group", "h")]), instance(AlertState::Firing, 40))])], t(40));
        due(&mut tr, t(40));
        tr.observe(&[], t(50));
        let sent = due(&mut tr, t(50));
        assert_eq!(ends(&sent), vec![("h", t(50))]);
    }

    #[test]
    fn an_alert_that_fires_again_after_resolving_is_a_new_alert() {
        let mut tr = Tracker::default();
        let g = labels(&[("group", "g")]);
        tr.observe(&[status(vec![(g.clone(), instance(AlertState::Firing, 0))])], t(0));
        due(&mut tr, t(0));
        tr.observe(&[status(vec![])], t(10));
        due(&mut tr, t(10));
        tr.observe(&[status(vec![(g, instance(AlertState::Firing, 20))])], t(20));
        let sent = due(&mut tr, t(20));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].starts_at, t(20));
        assert!(!sent[0].is_resolved(t(20)));
    }

    #[test]
    fn more_alerts_due_than_the_queues_hold_are_left_out_counted_and_go_first_next_time() {
        let mut tr = Tracker::default();
        let group = |g: usize| labels(&[("group", &format!("g{g:02}"))]);
        let firing = |n: usize| status((0..n).map(|g| (group(g), instance(AlertState::Firing, 0))).collect());
        tr.observe(&[firing(25)], t(0));
        let (first, left_out) = tr.due(t(0), TIMING, URL, 10);
        assert_eq!((first.len(), left_out), (10, 15));
        assert!(first.windows(2).all(|w| w[0].labels < w[1].labels), "in label order");
        // Left out counts as sent (Prometheus' queue drops them): nothing is due before the resend.
        tr.observe(&[firing(25)], t(30));
        assert_eq!(tr.due(t(30), TIMING, URL, 10), (vec![], 0));
        // At the resend, the 15 never queued go first; g00 resolves then, and its resolve
        // goes before them.
        let mut now = vec![(group(0), Instance { state: AlertState::Resolved, resolved_at: Moment::at(t(60)), ..Instance::default() })];
        now.extend((1..25).map(|g| (group(g), instance(AlertState::Firing, 0))));
        tr.observe(&[status(now)], t(60));
        let (second, left_out) = tr.due(t(60), TIMING, URL, 10);
        assert_eq!((second.len(), left_out), (10, 15));
        let g00 = second.iter().find(|a| a.labels["group"] == "g00").expect("the resolve is queued first");
        assert_eq!(g00.ends_at, t(60));
        let queued_before: Vec<&str> = first.iter().map(|a| a.labels["group"].as_str()).collect();
        assert!(second.iter().filter(|a| a.labels["group"] != "g00").all(|a| !queued_before.contains(&a.labels["group"].as_str())), "{second:?}");
        // Within three resends every alert has been queued once.
        tr.observe(&[firing(25)], t(120));
        let (third, _) = tr.due(t(120), TIMING, URL, 10);
        let mut queued: Vec<String> = [first, second, third].iter().flatten().map(|a| a.labels["group"].clone()).collect();
        queued.sort();
        queued.dedup();
        assert_eq!(queued.len(), 25, "{queued:?}");
    }

    #[test]
    fn an_instance_list_read_before_is_not_read_again_and_its_alerts_stay_firing() {
        let mut tr = Tracker::default();
        let (g1, g2) = (labels(&[("group", "g1")]), labels(&[("group", "g2")]));
        let first = status(vec![(g1.clone(), instance(AlertState::Firing, 0)), (g2.clone(), instance(AlertState::Firing, 0))]);
        tr.observe(std::slice::from_ref(&first), t(0));
        assert_eq!(due(&mut tr, t(0)).len(), 2);
        // Other files evaluated: the same list (the same Arc) is observed again, and again.
        for s in [3, 6] {
            tr.observe(std::slice::from_ref(&first), t(s));
            assert!(due(&mut tr, t(s)).is_empty(), "at {s}s nothing resolved");
        }
        assert_eq!(tr.len(), 2);
        // The rule's file evaluated: a new list without g2.
        tr.observe(&[status(vec![(g1, instance(AlertState::Firing, 0))])], t(10));
        let sent = due(&mut tr, t(10));
        assert_eq!(ends(&sent), vec![("g2", t(10))]);
        // The rule gone (a reload removed it): its firing alert resolves.
        tr.observe(&[], t(20));
        let sent = due(&mut tr, t(20));
        assert_eq!(ends(&sent), vec![("g1", t(20))]);
    }

    #[test]
    fn a_reload_relabels_firing_alerts_not_resolved_ones_and_a_rules_alerts_share_its_labels() {
        let mut tr = Tracker::default();
        let (g1, g2) = (labels(&[("group", "g1")]), labels(&[("group", "g2")]));
        tr.observe(&[status(vec![(g1.clone(), instance(AlertState::Firing, 0)), (g2.clone(), instance(AlertState::Firing, 0))])], t(0));
        due(&mut tr, t(0));
        let rule = &tr.files[Path::new("rules/lag.yaml")]["lag-high"];
        let meta = rule.meta.as_ref().unwrap();
        assert!(rule.alerts.values().all(|a| Arc::ptr_eq(&a.meta, meta)), "one copy of the rule's labels, not one per alert");
        // A reload changes the rule's labels as g2 resolves.
        let resolved = Instance { state: AlertState::Resolved, resolved_at: Moment::at(t(30)), ..Instance::default() };
        let reloaded = RuleStatus { labels: [("severity".to_string(), "ticket".to_string())].into(), ..status(vec![(g1, instance(AlertState::Firing, 0)), (g2, resolved)]) };
        tr.observe(std::slice::from_ref(&reloaded), t(30));
        let sent = due(&mut tr, t(30));
        assert_eq!(sent.iter().map(|a| (a.labels["group"].as_str(), a.labels["severity"].as_str(), a.ends_at)).collect::<Vec<_>>(), vec![("g2", "page", t(30))], "resolved with the labels it fired with");
        tr.observe(std::slice::from_ref(&reloaded), t(60));
        let sent = due(&mut tr, t(60));
        assert_eq!(sent.iter().map(|a| (a.labels["group"].as_str(), a.labels["severity"].as_str())).collect::<Vec<_>>(), vec![("g1", "ticket")]);
        assert_eq!(tr.len(), 2);
    }

    #[test]
    fn alert_series_cover_pending_and_firing_and_alertstate_wins_over_a_series_label() {
        let s = status(vec![
            (labels(&[("group", "a"), ("alertstate", "spoof")]), instance(AlertState::Pending, 0)),
            (labels(&[("group", "b")]), instance(AlertState::Firing, 0)),
            (labels(&[("group", "c")]), Instance { state: AlertState::Resolved, ..Instance::default() }),
            (labels(&[("group", "d")]), Instance::default()),
        ]);
        let series = alert_series(&[s]);
        assert_eq!(
            series,
            vec![
                labels(&[("alertname", "lag-high"), ("alertstate", "firing"), ("group", "b"), ("severity", "page")]),
                labels(&[("alertname", "lag-high"), ("alertstate", "pending"), ("group", "a"), ("severity", "page")]),
            ]
        );
    }

    /// The collection the streaming replaced, kept as the model it must agree with: every
    /// pending or firing instance's alert labels plus `alertstate`, sorted, each once.
    fn alert_series_model(statuses: &[RuleStatus]) -> Vec<Labels> {
        let mut out = Vec::new();
        for rule in statuses {
            for (series, inst) in rule.instances.iter() {
                let state = match inst.state {
                    AlertState::Pending => "pending",
                    AlertState::Firing => "firing",
                    AlertState::Inactive | AlertState::Resolved => continue,
                };
                let mut labels = alert_labels(&rule.name, &rule.labels, series);
                labels.insert("alertstate".to_string(), state.to_string());
                out.push(labels);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn alert_series_are_each_label_set_once_whether_streamed_or_gathered() {
        let rule = |file: &str, name: &str, rule_labels: &[(&str, &str)], instances: Vec<(Labels, Instance)>| RuleStatus {
            file: PathBuf::from(file),
            name: name.to_string(),
            labels: labels(rule_labels),
            instances: std::sync::Arc::new(instances.into_iter().map(|(l, i)| (l.into(), i)).collect()),
            ..status(vec![])
        };
        let firing = || instance(AlertState::Firing, 0);
        let pending = || instance(AlertState::Pending, 0);
        let cases = [
            // Streamed: one rule, nothing overridden.
            vec![rule("a.yaml", "lag", &[("severity", "page")], (0..5).map(|g| (labels(&[("group", &g.to_string())]), if g % 2 == 0 { firing() } else { pending() })).collect())],
            // Gathered: a rule label overrides a series label, so two instances are one alert.
            vec![rule("a.yaml", "lag", &[("severity", "page")], vec![(labels(&[("group", "g"), ("severity", "x")]), firing()), (labels(&[("group", "g"), ("severity", "y")]), firing())])],
            // Gathered: one name in two files; another name streamed beside them.
            vec![
                rule("a.yaml", "lag", &[], vec![(labels(&[("group", "g")]), firing())]),
                rule("b.yaml", "lag", &[], vec![(labels(&[("group", "g")]), firing()), (labels(&[("group", "h")]), pending())]),
                rule("b.yaml", "other", &[], vec![(labels(&[("group", "g")]), firing())]),
            ],
            // Gathered: an empty value and an invalid name are dropped.
            vec![rule("a.yaml", "lag", &[], vec![(labels(&[("group", "g"), ("x", "")]), firing()), (labels(&[("group", "g"), ("bad-name", "1")]), firing()), (labels(&[("group", "g")]), firing())])],
        ];
        for (i, statuses) in cases.iter().enumerate() {
            let mut seen = 0;
            let _ = for_each_alert_series(statuses, |l| {
                assert!(l.windows(2).all(|w| w[0].0 < w[1].0), "case {i}: names sorted and unique: {l:?}");
                seen += 1;
                Ok::<(), ()>(())
            });
            let model = alert_series_model(statuses);
            assert_eq!(alert_series(statuses), model, "case {i}");
            assert_eq!(seen, model.len(), "case {i}: each label set once");
        }
        assert_eq!(alert_series_model(&cases[1]).len(), 1);
        assert_eq!(alert_series_model(&cases[2]).len(), 3);
        assert_eq!(alert_series_model(&cases[3]).len(), 1);
    }

    #[test]
    fn needs_sending_follows_prometheus() {
        let r = Duration::from_secs(60);
        assert!(needs_sending(None, None, t(0), r));
        assert!(!needs_sending(Some(t(0)), None, t(59), r));
        assert!(needs_sending(Some(t(0)), None, t(60), r));
        assert!(needs_sending(Some(t(0)), Some(t(1)), t(1), r), "resolved since last sent");
        assert!(!needs_sending(Some(t(2)), Some(t(1)), t(3), r), "resolve already sent");
    }
}
