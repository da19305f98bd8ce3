//! Every metric streamguard exposes, registered in one place.
//!
//! Two kinds:
//! - the agent's own counters and histograms (sample duration, errors), updated as
//!   things happen;
//! - the sampled data, rendered from the [`Store`] at scrape time by [`StoreCollector`],
//!   so a scrape always shows the latest snapshot and never a half-updated one.
//!
//! Conventions (see STYLE.md): prefix `streamguard_`, base units, counters registered
//! without `_total` (the encoder appends it), bounded label values only. A source whose
//! data is not fresh has its data series **withdrawn** (Prometheus then marks them
//! stale) while `streamguard_source_up`, `streamguard_source_quality` and
//! `streamguard_source_last_success_timestamp_seconds` say why: unknown is never 0.
//!
//! Over 600 lines because it keeps, for its tests only, the single-string store
//! collector `/metrics` used before it streamed: the streamed bytes are compared with it.

use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use std::sync::atomic::AtomicU64;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

#[cfg(test)]
use std::collections::BTreeMap;

use prometheus_client::metrics::counter::ConstCounter;

use super::exposition;
#[cfg(test)]
use crate::catalog;
use crate::evaluate::Rules;
use crate::rules::eval::AlertState;
use crate::signal::{unix_secs, Quality};
#[cfg(test)]
use crate::signal::{MetricKind, SignalDef};
use crate::store::{SourceKind, Store};

type SourceLabels = Vec<(&'static str, String)>;

/// The agent's own instruments.
#[derive(Debug)]
pub struct Metrics {
    /// The instruments and the sources' health: what comes before the store's series.
    registry: Registry,
    /// What comes after them: the recording's counters, build information, rule state.
    trailer: Registry,
    store: Arc<Store>,
    samples: Family<SourceLabels, Counter>,
    sample_errors: Family<SourceLabels, Counter>,
    sample_partial_errors: Family<SourceLabels, Counter>,
    sample_skipped: Family<SourceLabels, Counter>,
    sample_turn_wait: Family<SourceLabels, Counter<f64, AtomicU64>>,
    sample_duration: Family<SourceLabels, Histogram>,
    sample_timeout: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    notifications_sent: Family<SourceLabels, Counter>,
    notification_errors: Family<SourceLabels, Counter>,
    notifications_dropped: Family<SourceLabels, Counter>,
    notification_queue_length: Family<SourceLabels, Gauge>,
    notification_queue_capacity: Gauge,
    task_panics: Family<SourceLabels, Counter>,
    task_restarts: Family<SourceLabels, Counter>,
    /// Runbook runs, steps, guard blocks (see [`super::remediation`]).
    pub remediation: super::remediation::RemediationMetrics,
    /// The `process` scaling actuator's pools (exits, replicas), shared by every pool.
    pub scale_pools: crate::scale::actuators::process::PoolMetrics,
    /// Scaling decisions, rebalances and scale-out blocks (see `crate::scale::status`).
    pub scale: crate::scale::status::ScaleMetrics,
}

fn am_labels(url: &str) -> SourceLabels {
    vec![("alertmanager", url.to_string())]
}

fn source_labels(kind: SourceKind, source: &str) -> SourceLabels {
    vec![("kind", kind.as_str().to_string()), ("source", source.to_string())]
}

impl Metrics {
    pub fn new(store: Arc<Store>, rules: Arc<Rules>) -> Self {
        let mut registry = Registry::with_prefix("streamguard");
        let samples = Family::<SourceLabels, Counter>::default();
        let sample_errors = Family::<SourceLabels, Counter>::default();
        let sample_partial_errors = Family::<SourceLabels, Counter>::default();
        let sample_skipped = Family::<SourceLabels, Counter>::default();
        let sample_turn_wait = Family::<SourceLabels, Counter<f64, AtomicU64>>::default();
        let sample_duration = Family::<SourceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register("samples", "Completed sample attempts per source", samples.clone());
        registry.register(
            "sample_errors",
            "Failed sample attempts per source and error kind (timeout, authentication, tls, list_groups, describe_groups, list_offsets, client)",
            sample_errors.clone(),
        );
        registry.register(
            "sample_partial_errors",
            "Values a successful sample could not compute, per source and cause (describe_group, group_offsets, partition_offsets, probe_consumer, probe_assign, probe_timeout, probe_fetch)",
            sample_partial_errors.clone(),
        );
        registry.register(
            "sample_skipped",
            "Sample cycles skipped because the previous attempt was still running",
            sample_skipped.clone(),
        );
        registry.register_with_unit(
            "sample_turn_wait",
            "Time Kafka sample cycles waited for running rule evaluations before they started (they take turns)",
            Unit::Seconds,
            sample_turn_wait.clone(),
        );
        registry.register_with_unit(
            "sample_duration",
            "Duration of one sample of one source",
            Unit::Seconds,
            sample_duration.clone(),
        );
        let sample_timeout = Family::<SourceLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "source_sample_timeout",
            "The configured sample_timeout of the source: a sample that takes longer fails",
            Unit::Seconds,
            sample_timeout.clone(),
        );
        let notifications_sent = Family::<SourceLabels, Counter>::default();
        let notification_errors = Family::<SourceLabels, Counter>::default();
        let notifications_dropped = Family::<SourceLabels, Counter>::default();
        let notification_queue_length = Family::<SourceLabels, Gauge>::default();
        let notification_queue_capacity = Gauge::default();
        registry.register("notifications_sent", "Alerts sent to the Alertmanager", notifications_sent.clone());
        registry.register(
            "notifications_errors",
            "Alerts whose request to the Alertmanager failed, per error kind (timeout, connect, status_4xx, status_5xx, request)",
            notification_errors.clone(),
        );
        registry.register(
            "notifications_dropped",
            "Alerts dropped because the Alertmanager's queue was full (oldest first)",
            notifications_dropped.clone(),
        );
        registry.register(
            "notifications_queue_length",
            "Alerts waiting to be sent to the Alertmanager",
            notification_queue_length.clone(),
        );
        registry.register(
            "notifications_queue_capacity",
            "Alerts a queue holds before it drops the oldest (notify.queue_capacity)",
            notification_queue_capacity.clone(),
        );
        let task_panics = Family::<SourceLabels, Counter>::default();
        let task_restarts = Family::<SourceLabels, Counter>::default();
        registry.register(
            "task_panics",
            "Panics caught in background tasks, per task (sample, rules, rule_group, notify_dispatch, notify_send)",
            task_panics.clone(),
        );
        registry.register("task_restarts", "Restarts of background tasks after a panic, per task", task_restarts.clone());
        registry.register_collector(Box::new(HealthCollector { store: store.clone() }));
        registry.register_with_unit(
            "rule_group_evaluation_duration",
            "Duration of one evaluation of a rule group (a rule file)",
            Unit::Seconds,
            rules.eval_duration.clone(),
        );
        let remediation = super::remediation::RemediationMetrics::register(&mut registry, rules.verdicts_dropped.clone());
        let scale_pools = crate::scale::actuators::process::PoolMetrics::default();
        scale_pools.register(&mut registry);
        let scale = crate::scale::status::ScaleMetrics::default();
        scale.register(&mut registry);
        let mut trailer = Registry::with_prefix("streamguard");
        trailer.register_collector(Box::new(TrailerCollector { store: store.clone() }));
        trailer.register_collector(Box::new(RulesCollector { rules }));
        Metrics {
            remediation,
            scale_pools,
            scale,
            registry,
            trailer,
            store,
            samples,
            sample_errors,
            sample_partial_errors,
            sample_skipped,
            sample_turn_wait,
            sample_duration,
            sample_timeout,
            notifications_sent,
            notification_errors,
            notifications_dropped,
            notification_queue_length,
            notification_queue_capacity,
            task_panics,
            task_restarts,
        }
    }

    /// Records a source's configured sample timeout (once, at start).
    pub fn set_sample_timeout(&self, kind: SourceKind, source: &str, timeout: std::time::Duration) {
        self.sample_timeout.get_or_create(&source_labels(kind, source)).set(timeout.as_secs_f64());
    }

    /// Creates the notification series of an Alertmanager (at 0) and records the capacity.
    pub fn register_alertmanager(&self, url: &str, capacity: usize) {
        let l = am_labels(url);
        self.notifications_sent.get_or_create(&l).inc_by(0);
        self.notifications_dropped.get_or_create(&l).inc_by(0);
        self.notification_queue_length.get_or_create(&l).set(0);
        self.notification_queue_capacity.set(i64::try_from(capacity).unwrap_or(i64::MAX));
    }

    /// Alerts were queued for `url`: the queue is now `len` long, `dropped` fell out.
    pub fn notifications_queued(&self, url: &str, len: usize, dropped: usize) {
        let l = am_labels(url);
        self.notification_queue_length.get_or_create(&l).set(i64::try_from(len).unwrap_or(i64::MAX));
        if dropped > 0 {
            self.notifications_dropped.get_or_create(&l).inc_by(dropped as u64);
        }
    }

    /// `n` alerts reached `url`; `len` are still queued.
    pub fn notifications_sent(&self, url: &str, n: usize, len: usize) {
        let l = am_labels(url);
        self.notifications_sent.get_or_create(&l).inc_by(n as u64);
        self.notification_queue_length.get_or_create(&l).set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// A request with `n` alerts to `url` failed with a bounded `error` kind.
    pub fn notification_errors(&self, url: &str, error: &'static str, n: usize) {
        let mut l = am_labels(url);
        l.push(("error", error.to_string()));
        self.notification_errors.get_or_create(&l).inc_by(n as u64);
    }

    /// A background task (a bounded name) panicked.
    pub fn count_task_panic(&self, task: &'static str) {
        self.task_panics.get_or_create(&vec![("task", task.to_string())]).inc();
    }

    /// A background task was restarted after a panic.
    pub fn count_task_restart(&self, task: &'static str) {
        self.task_restarts.get_or_create(&vec![("task", task.to_string())]).inc();
    }

    pub fn observe_sample(&self, kind: SourceKind, source: &str, seconds: f64) {
        let l = source_labels(kind, source);
        self.samples.get_or_create(&l).inc();
        self.sample_duration.get_or_create(&l).observe(seconds);
    }

    pub fn count_error(&self, kind: SourceKind, source: &str, error: &'static str) {
        let mut l = source_labels(kind, source);
        l.push(("error", error.to_string()));
        self.sample_errors.get_or_create(&l).inc();
    }

    pub fn count_partial(&self, kind: SourceKind, source: &str, cause: &'static str, n: u64) {
        let mut l = source_labels(kind, source);
        l.push(("cause", cause.to_string()));
        self.sample_partial_errors.get_or_create(&l).inc_by(n);
    }

    pub fn count_skipped(&self, kind: SourceKind, source: &str) {
        self.sample_skipped.get_or_create(&source_labels(kind, source)).inc();
    }

    pub fn count_turn_wait(&self, kind: SourceKind, source: &str, seconds: f64) {
        self.sample_turn_wait.get_or_create(&source_labels(kind, source)).inc_by(seconds);
    }

    /// Everything, as OpenMetrics text (what Prometheus asks for) or, for clients
    /// that do not accept it (promtool, curl), the classic Prometheus text format 0.0.4,
    /// handed to `emit` in pieces of about [`exposition::PIECE_BYTES`] (the store's
    /// series are never built as one string). Stops early, returning `Ok(false)`, when
    /// `emit` returns false; `Ok(true)` once everything (the end marker included) went out.
    pub fn render(&self, format: Format, emit: &mut dyn FnMut(String) -> bool) -> Result<bool, std::fmt::Error> {
        let mut head = String::with_capacity(16 * 1024);
        exposition::encode_registry(&mut head, &self.registry, format)?;
        if !emit(head) {
            return Ok(false);
        }
        if !exposition::store_families(&self.store, format, SystemTime::now(), emit)? {
            return Ok(false);
        }
        let mut tail = String::with_capacity(16 * 1024);
        exposition::encode_registry(&mut tail, &self.trailer, format)?;
        if format == Format::OpenMetrics {
            prometheus_client::encoding::text::encode_eof(&mut tail)?;
        }
        Ok(emit(tail))
    }

    /// [`Metrics::render`] into one string (tests, small registries).
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        self.render(format, &mut |piece| {
            out.push_str(&piece);
            true
        })?;
        Ok(out)
    }
}

impl crate::supervise::TaskMetrics for Metrics {
    fn task_panicked(&self, task: &'static str) {
        self.count_task_panic(task);
    }

    fn task_restarted(&self, task: &'static str) {
        self.count_task_restart(task);
    }
}

impl crate::notify::alertmanager::NotifyMetrics for Metrics {
    fn queued(&self, url: &str, len: usize, dropped: usize) {
        self.notifications_queued(url, len, dropped);
    }

    fn sent(&self, url: &str, n: usize, len: usize) {
        self.notifications_sent(url, n, len);
    }

    fn failed(&self, url: &str, error: &'static str, n: usize) {
        self.notification_errors(url, error, n);
    }
}

/// Exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Prometheus,
}

impl Format {
    /// Picks the format from an HTTP `Accept` header.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Renders the sources' health at scrape time (before the store's series).
#[derive(Debug)]
struct HealthCollector {
    store: Arc<Store>,
}

/// Writes one metric family from rows of (labels, value); writes nothing for no rows.
fn gauge_family<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: &[(Vec<(&'static str, String)>, V)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_health(&self.store, SystemTime::now(), &mut encoder)
    }
}

fn encode_health(store: &Store, now: SystemTime, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let mut up = Vec::new();
    let mut quality = Vec::new();
    let mut last_success = Vec::new();
    let mut failures = Vec::new();
    for h in store.health() {
        let l = source_labels(h.kind, &h.name);
        let q = h.quality(now);
        up.push((l.clone(), i64::from(h.last_success.is_some() && h.consecutive_failures == 0)));
        for each in Quality::ALL {
            let mut ql = l.clone();
            ql.push(("quality", each.as_str().to_string()));
            quality.push((ql, i64::from(each == q)));
        }
        if let Some(t) = h.last_success {
            last_success.push((l.clone(), unix_secs(t)));
        }
        failures.push((l, i64::from(h.consecutive_failures)));
    }
    gauge_family(e, "source_up", "1 when the latest sample attempt of the source succeeded", None, &up)?;
    gauge_family(e, "source_quality", "Quality of the source's data: 1 for the current one of fresh, stale, missing", None, &quality)?;
    gauge_family(
        e,
        "source_last_success_timestamp_seconds",
        "Unix time of the source's last successful sample",
        None,
        &last_success,
    )?;
    gauge_family(e, "source_consecutive_failures", "Failed sample attempts since the last success", None, &failures)
}

/// Renders what follows the store's series: the recording's counters and the build.
#[derive(Debug)]
struct TrailerCollector {
    store: Arc<Store>,
}

impl Collector for TrailerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_trailer(&self.store, &mut encoder)
    }
}

fn encode_trailer(store: &Store, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    if let Some(r) = store.recorder() {
        use std::sync::atomic::Ordering::Relaxed;
        let none: SourceLabels = Vec::new();
        for (name, help, v) in [
            ("record_records", "Samples and failed attempts written to the recording", r.stats.records.load(Relaxed)),
            ("record_dropped", "Records dropped because the recording writer fell behind", r.stats.dropped.load(Relaxed)),
            ("record_errors", "Records that could not be written to the recording", r.stats.errors.load(Relaxed)),
            ("record_written_bytes", "Bytes written to the recording", r.stats.bytes.load(Relaxed)),
        ] {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(family.encode_family(&none)?)?;
        }
    }
    let mut build = e.encode_descriptor("build", "streamguard build information", None, MetricType::Info)?;
    build.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])
}

/// The single-string collector `/metrics` used before it streamed, kept as the
/// reference the streamed bytes are compared with.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct StoreCollector {
    pub(crate) store: Arc<Store>,
}

#[cfg(test)]
impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = SystemTime::now();
        let e = &mut encoder;
        encode_health(&self.store, now, e)?;
        // Every built-in signal's fresh series. Stale and missing series are withdrawn.
        let mut rows: BTreeMap<&'static str, Vec<(SourceLabels, f64)>> = BTreeMap::new();
        self.store.with_entries(|entries| {
            for entry in entries {
                for (key, value) in entry.fresh_series(now) {
                    let Some(def) = catalog::find(key.signal()) else { continue };
                    rows.entry(def.name).or_default().push((ordered_labels(def, &key), value));
                }
            }
        });
        for def in catalog::all() {
            let Some(rows) = rows.get_mut(def.name) else { continue };
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            match def.kind {
                MetricKind::Gauge => gauge_family(e, def.metric, def.help, None, rows)?,
                MetricKind::Counter => {
                    let mut family = e.encode_descriptor(def.metric, def.help, None, MetricType::Counter)?;
                    for (labels, v) in rows.iter() {
                        ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
                    }
                }
            }
        }
        encode_trailer(&self.store, e)
    }
}

/// Labels in the order the catalog declares them. The catalog lists every label a
/// built-in signal carries (a unit test in each source checks its observations).
#[cfg(test)]
fn ordered_labels(def: &SignalDef, series: &crate::store::SeriesRef<'_>) -> SourceLabels {
    def.labels.iter().filter_map(|name| series.label(name).map(|v| (*name, v.to_string()))).collect()
}

/// Renders rule and SLO state at scrape time.
#[derive(Debug)]
struct RulesCollector {
    rules: Arc<Rules>,
}

impl Collector for RulesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        let mut alerts = Vec::new();
        let mut unknown = Vec::new();
        let statuses = self.rules.rule_statuses();
        let active = |i: &crate::rules::eval::Instance| matches!(i.state, AlertState::Pending | AlertState::Firing);
        if statuses.iter().any(|r| r.instances.iter().any(|(_, i)| active(i))) {
            let mut family = e.encode_descriptor(
                "alerts",
                "1 per pending or firing alert instance, labelled alertname, alertstate, the rule's labels and the instance's (Prometheus' ALERTS)",
                None,
                MetricType::Gauge,
            )?;
            crate::notify::for_each_alert_series(&statuses, |l| ConstGauge::new(1i64).encode(family.encode_family(&l)?))?;
        }
        for r in statuses {
            let base = vec![("file", r.file.display().to_string()), ("rule", r.name.clone())];
            for state in AlertState::ALL {
                let quiet = if state == AlertState::Inactive { r.quiet } else { 0 };
                let n = r.instances.iter().filter(|(_, i)| i.state == state).count() + quiet;
                let mut l = base.clone();
                l.push(("state", state.as_str().to_string()));
                alerts.push((l, n as i64));
            }
            unknown.push((base, i64::from(r.unknown)));
        }
        gauge_family(e, "rule_alerts", "Alert instances of the rule per state", None, &alerts)?;
        gauge_family(
            e,
            "rule_unknown",
            "1 when every instance of the rule has had unknown (stale or missing) data for longer than rules.unknown_after",
            None,
            &unknown,
        )?;

        let mut objective = Vec::new();
        let mut sli = Vec::new();
        let mut budget = Vec::new();
        let mut burn = Vec::new();
        let mut burn_alert = Vec::new();
        for s in self.rules.slo_statuses() {
            let l = vec![("slo", s.name.clone())];
            objective.push((l.clone(), s.objective));
            if let Some(v) = s.sli {
                sli.push((l.clone(), v));
            }
            if let Some(v) = s.budget_remaining {
                budget.push((l.clone(), v));
            }
            for (w, v) in &s.burn_rates {
                if let Some(v) = v {
                    burn.push((vec![("slo", s.name.clone()), ("window", w.clone())], *v));
                }
            }
            for a in &s.alerts {
                // The SLO's own labels go on its alert series, as Prometheus puts an
                // alert rule's labels on ALERTS (their names are validated at load).
                let mut l: Vec<(String, String)> = vec![
                    ("slo".into(), s.name.clone()),
                    ("severity".into(), a.severity.clone()),
                    ("long".into(), a.long.clone()),
                    ("short".into(), a.short.clone()),
                ];
                l.extend(s.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                burn_alert.push((l, i64::from(a.firing)));
            }
        }
        gauge_family(e, "slo_objective_ratio", "The SLO's objective", None, &objective)?;
        gauge_family(e, "slo_sli_ratio", "Fraction of good events (or time slices) over the SLO window", None, &sli)?;
        gauge_family(
            e,
            "slo_error_budget_remaining_ratio",
            "Fraction of the SLO window's error budget left (negative when overspent)",
            None,
            &budget,
        )?;
        gauge_family(e, "slo_burn_rate", "Error budget burn rate over the window (1 = exactly on budget)", None, &burn)?;
        if !burn_alert.is_empty() {
            // Encoded here rather than with gauge_family: the SLO's label names are not static.
            let mut family =
                e.encode_descriptor("slo_burn_rate_alert", "1 when the multi-window burn-rate alert fires", None, MetricType::Gauge)?;
            for (labels, v) in &burn_alert {
                ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
            }
        }

        let groups = self.rules.groups.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !groups.is_empty() {
            for (name, help, get) in [
                ("rule_group_missed_ticks", "Evaluation ticks of the group that started a whole interval late", (|g: &crate::evaluate::GroupStats| g.missed_ticks) as fn(&crate::evaluate::GroupStats) -> u64),
                ("rule_group_evaluation_failures", "Evaluations of the group that failed", |g| g.failures),
                ("rule_group_evaluations", "Evaluations of the group", |g| g.evaluations),
            ] {
                let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
                for (file, g) in &groups {
                    let l = [("group", file.display().to_string())];
                    ConstCounter::new(get(g)).encode(family.encode_family(&l)?)?;
                }
            }
            let mut family = e.encode_descriptor(
                "rule_group_turn_wait",
                "Time the group's evaluations waited for Kafka cycles to store before they started (they take turns)",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            for (file, g) in &groups {
                let l = [("group", file.display().to_string())];
                ConstCounter::new(g.turn_wait.as_secs_f64()).encode(family.encode_family(&l)?)?;
            }
        }
        let reload = self.rules.reload.read().unwrap_or_else(|p| p.into_inner()).clone();
        gauge_family(e, "rules_reload_success", "1 when the last rule (re)load succeeded; 0 while a rejected set is being ignored", None, &[(vec![], i64::from(reload.success))])?;
        if let Some(t) = reload.last_success {
            gauge_family(e, "rules_last_reload_success_timestamp_seconds", "Unix time of the last successful rule load", None, &[(vec![], unix_secs(t))])?;
        }
        let state = self.rules.state.status();
        gauge_family(e, "state_persist_ok", "1 while SLO state is written (journal and snapshot); 0 after a failed write", None, &[(vec![], i64::from(state.persist_ok))])?;
        if let Some(t) = state.last_persist_time {
            gauge_family(e, "state_last_persist_timestamp_seconds", "Unix time of the last successful write of SLO state", None, &[(vec![], t)])?;
        }
        for (name, help, counts) in [
            ("state_persist_failures", "Failed writes of SLO state, per cause (permission_denied, read_only, no_space, not_found, not_a_directory, io)", &state.failures),
            (
                "state_restore_rejected",
                "State files rejected at start and moved aside, per cause (decode, version, future_bucket, bad_count, huge_count, unaligned_bucket, bad_width, too_many_buckets)",
                &state.restore_rejected,
            ),
        ] {
            // A family without series is not valid exposition: none until something failed.
            if counts.is_empty() {
                continue;
            }
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (cause, n) in counts {
                ConstCounter::new(*n).encode(family.encode_family(&[("cause", cause.to_string())])?)?;
            }
        }
        let set = self.rules.set();
        gauge_family(
            e,
            "rules_loaded",
            "Rules and SLOs in the running set",
            None,
            &[(vec![("kind", "alert".to_string())], set.alerts.len() as i64), (vec![("kind", "slo".to_string())], set.slos.len() as i64)],
        )?;
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{Observation, SourceSample};
    use std::time::Duration;

    /// Thousands of series over two sources (one stale), label values that need
    /// escaping, a series without one of its catalog labels, a counter family, values
    /// of every shape.
    fn store() -> Arc<Store> {
        let store = Arc::new(Store::default());
        let hour = Duration::from_secs(3600);
        store.register(SourceKind::Kafka, "a", hour);
        store.register(SourceKind::Kafka, "b", hour);
        store.register(SourceKind::Flink, "f", hour);
        let values = [0.5, 1e21, -0.0, 1e-7, 123_456_789_012.0, 3.0, f64::MAX, 1.0 / 3.0];
        let names = ["plain", "with \"quote\"", "back\\slash", "new\nline", "ünïcødé", "z", "A", ""];
        let mut o = Vec::new();
        for g in 0..300 {
            let group = format!("{}-{g}", names[g % names.len()]);
            for p in 0..10usize {
                let (p, v) = (p.to_string(), values[(g + p) % values.len()] * (g as f64));
                o.extend(Observation::new("lag_offsets", &[("cluster", "a"), ("group", &group), ("topic", "t"), ("partition", &p)], v));
                o.extend(Observation::new("committed_offset", &[("cluster", "a"), ("group", &group), ("topic", "t"), ("partition", &p), ("extra", "x")], v));
            }
            o.extend(Observation::new("group_rebalances", &[("cluster", "a"), ("group", &group)], g as f64));
            o.extend(Observation::new("lag_offsets", &[("cluster", "a"), ("group", &group), ("partition", "0")], 1.0));
        }
        o.extend(Observation::new("not_a_catalog_signal", &[("cluster", "a")], 1.0));
        let now = SystemTime::now();
        store.record_success(SourceKind::Kafka, "a", now, SourceSample { observations: o, ..SourceSample::default() });
        let b = vec![Observation::new("lag_offsets", &[("cluster", "b"), ("group", "g"), ("topic", "t"), ("partition", "1")], 7.0).unwrap()];
        store.record_success(SourceKind::Kafka, "b", now, SourceSample { observations: b, ..SourceSample::default() });
        let f = vec![Observation::new("checkpoint_age_seconds", &[("cluster", "f"), ("job", "j")], 7.0).unwrap()];
        store.record_success(SourceKind::Flink, "f", now - Duration::from_secs(10), SourceSample { observations: f, ..SourceSample::default() });
        store.record_failure(SourceKind::Flink, "f", now, "down".into());
        store
    }

    fn reference(store: &Arc<Store>, format: Format) -> String {
        let mut registry = Registry::with_prefix("streamguard");
        registry.register_collector(Box::new(StoreCollector { store: store.clone() }));
        let mut out = String::new();
        match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry).unwrap(),
            Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap(),
        }
        out
    }

    fn streamed(store: &Arc<Store>, format: Format) -> (String, usize) {
        let mut head = Registry::with_prefix("streamguard");
        head.register_collector(Box::new(HealthCollector { store: store.clone() }));
        let mut out = String::new();
        exposition::encode_registry(&mut out, &head, format).unwrap();
        let mut pieces = 0;
        let done = exposition::store_families(store, format, SystemTime::now(), &mut |p| {
            assert!(p.len() < exposition::PIECE_BYTES + 64 * 1024, "a piece of {} bytes", p.len());
            pieces += 1;
            out.push_str(&p);
            true
        });
        assert_eq!(done, Ok(true));
        let mut tail = Registry::with_prefix("streamguard");
        tail.register_collector(Box::new(TrailerCollector { store: store.clone() }));
        exposition::encode_registry(&mut out, &tail, format).unwrap();
        if format == Format::OpenMetrics {
            prometheus_client::encoding::text::encode_eof(&mut out).unwrap();
        }
        (out, pieces)
    }

    #[test]
    fn the_streamed_exposition_is_byte_for_byte_the_single_string_one() {
        let store = store();
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let (ours, pieces) = streamed(&store, format);
            let theirs = reference(&store, format);
            assert!(pieces > 1, "{format:?}: rendered in {pieces} piece(s)");
            assert!(theirs.contains("streamguard_kafka_partition_lag_offsets{cluster=\"a\",group=\"with \\\"quote\\\"-1\""), "{format:?}");
            assert!(!theirs.contains("checkpoint_age"), "the stale source's series are withdrawn");
            if ours != theirs {
                let at = ours.bytes().zip(theirs.bytes()).position(|(a, b)| a != b).unwrap_or(ours.len().min(theirs.len()));
                panic!("{format:?}: differ at byte {at}: ours {:?} / theirs {:?}", &ours[at.saturating_sub(80)..(at + 80).min(ours.len())], &theirs[at.saturating_sub(80)..(at + 80).min(theirs.len())]);
            }
        }
    }

    /// A client reading slowly holds the renderer in `emit`; the samplers must still be
    /// able to write (before, the store's read lock was held across every `emit`, for
    /// as long as `serve::metrics::SEND_TIMEOUT`).
    #[test]
    fn a_slow_scrape_does_not_hold_up_the_samplers() {
        let store = store();
        let mut pieces = 0;
        let mut written = Vec::new();
        let done = exposition::store_families(&store, Format::Prometheus, SystemTime::now(), &mut |_| {
            pieces += 1;
            let (tx, rx) = std::sync::mpsc::channel();
            let writer = store.clone();
            std::thread::spawn(move || {
                let b = vec![Observation::new("lag_offsets", &[("cluster", "b"), ("group", "g"), ("topic", "t"), ("partition", "1")], 8.0).unwrap()];
                writer.record_success(SourceKind::Kafka, "b", SystemTime::now(), SourceSample { observations: b, ..SourceSample::default() });
                let _ = tx.send(());
            });
            let ok = rx.recv_timeout(Duration::from_secs(10)).is_ok();
            written.push(ok);
            ok
        });
        assert!(written.iter().all(|w| *w), "a write waited for the scrape: {written:?}");
        assert_eq!(done, Ok(true));
        assert!(pieces > 1, "rendered in {pieces} piece(s)");
    }

    #[test]
    fn rendering_stops_when_the_reader_goes_away() {
        let store = store();
        let mut calls = 0;
        let done = exposition::store_families(&store, Format::Prometheus, SystemTime::now(), &mut |_| {
            calls += 1;
            false
        });
        assert_eq!((done, calls), (Ok(false), 1));
    }
}
