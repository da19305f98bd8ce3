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

use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::sample::kafka::KafkaSnapshot;
use crate::signal::{unix_secs, Quality};
use crate::store::{SourceKind, Store};

type SourceLabels = Vec<(&'static str, String)>;

/// The agent's own instruments.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    samples: Family<SourceLabels, Counter>,
    sample_errors: Family<SourceLabels, Counter>,
    sample_skipped: Family<SourceLabels, Counter>,
    sample_duration: Family<SourceLabels, Histogram>,
}

fn source_labels(kind: SourceKind, source: &str) -> SourceLabels {
    vec![("kind", kind.as_str().to_string()), ("source", source.to_string())]
}

impl Metrics {
    pub fn new(store: Arc<Store>) -> Self {
        let mut registry = Registry::with_prefix("streamguard");
        let samples = Family::<SourceLabels, Counter>::default();
        let sample_errors = Family::<SourceLabels, Counter>::default();
        let sample_skipped = Family::<SourceLabels, Counter>::default();
        let sample_duration = Family::<SourceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register("samples", "Completed sample attempts per source", samples.clone());
        registry.register(
            "sample_errors",
            "Failed sample attempts per source and error kind (timeout, list_groups, describe_groups, list_offsets, client)",
            sample_errors.clone(),
        );
        registry.register(
            "sample_skipped",
            "Sample cycles skipped because the previous attempt was still running",
            sample_skipped.clone(),
        );
        registry.register_with_unit(
            "sample_duration",
            "Duration of one sample of one source",
            Unit::Seconds,
            sample_duration.clone(),
        );
        registry.register_collector(Box::new(StoreCollector { store }));
        Metrics { registry, samples, sample_errors, sample_skipped, sample_duration }
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

    pub fn count_skipped(&self, kind: SourceKind, source: &str) {
        self.sample_skipped.get_or_create(&source_labels(kind, source)).inc();
    }

    /// Everything, as OpenMetrics text (what Prometheus asks for) or, for clients
    /// that do not accept it (promtool, curl), the classic Prometheus text format 0.0.4.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &self.registry)?,
            Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?,
        }
        Ok(out)
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

/// Renders the store at scrape time.
#[derive(Debug)]
struct StoreCollector {
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

/// Data series of one fresh Kafka snapshot, grouped by metric.
#[derive(Default)]
struct KafkaRows {
    lag: Vec<(SourceLabels, i64)>,
    committed: Vec<(SourceLabels, i64)>,
    has_commit: Vec<(SourceLabels, i64)>,
    end: Vec<(SourceLabels, i64)>,
    start: Vec<(SourceLabels, i64)>,
    group_lag: Vec<(SourceLabels, i64)>,
    topic_lag: Vec<(SourceLabels, i64)>,
    topic_max_lag: Vec<(SourceLabels, i64)>,
    uncommitted: Vec<(SourceLabels, i64)>,
    state: Vec<(SourceLabels, i64)>,
    members: Vec<(SourceLabels, i64)>,
    info: Vec<SourceLabels>,
    groups: Vec<(SourceLabels, i64)>,
}

impl KafkaRows {
    fn add(&mut self, s: &KafkaSnapshot) {
        let c = || ("cluster", s.cluster.clone());
        self.groups.push((vec![c()], s.groups.len() as i64));
        for (tp, o) in &s.partitions {
            let l = vec![c(), ("topic", tp.topic.clone()), ("partition", tp.partition.to_string())];
            if let Some(v) = o.log_end_offset {
                self.end.push((l.clone(), v));
            }
            if let Some(v) = o.log_start_offset {
                self.start.push((l, v));
            }
        }
        for g in &s.groups {
            let gl = vec![c(), ("group", g.group.clone())];
            for st in crate::sample::kafka_admin::GroupState::ALL {
                let mut l = gl.clone();
                l.push(("state", st.as_str().to_string()));
                self.state.push((l, i64::from(st == g.state)));
            }
            self.members.push((gl.clone(), i64::from(g.members)));
            let mut info = gl.clone();
            info.push(("type", g.kind.as_str().to_string()));
            self.info.push(info);
            if g.error.is_some() {
                // Offsets of this group are unknown this cycle: no lag series at all.
                continue;
            }
            self.uncommitted.push((gl.clone(), i64::from(g.uncommitted_partitions)));
            if let Some(v) = g.lag_offsets {
                self.group_lag.push((gl.clone(), v));
            }
            for (topic, (sum, max)) in g.topic_lags() {
                let mut l = gl.clone();
                l.push(("topic", topic.to_string()));
                self.topic_lag.push((l.clone(), sum));
                self.topic_max_lag.push((l, max));
            }
            for p in &g.partitions {
                let mut l = gl.clone();
                l.push(("topic", p.topic.clone()));
                l.push(("partition", p.partition.to_string()));
                self.has_commit.push((l.clone(), i64::from(p.committed_offset.is_some())));
                if let Some(v) = p.committed_offset {
                    self.committed.push((l.clone(), v));
                }
                if let Some(v) = p.lag_offsets {
                    self.lag.push((l, v));
                }
            }
        }
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = SystemTime::now();
        let entries = self.store.entries();
        let mut up = Vec::new();
        let mut quality = Vec::new();
        let mut last_success = Vec::new();
        let mut failures = Vec::new();
        let mut kafka = KafkaRows::default();
        for e in &entries {
            let h = &e.health;
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
            if q == Quality::Fresh {
                if let Some(s) = &e.snapshot {
                    kafka.add(s);
                }
            }
        }
        let e = &mut encoder;
        gauge_family(e, "source_up", "1 when the latest sample attempt of the source succeeded", None, &up)?;
        gauge_family(e, "source_quality", "Quality of the source's data: 1 for the current one of fresh, stale, missing", None, &quality)?;
        gauge_family(
            e,
            "source_last_success_timestamp_seconds",
            "Unix time of the source's last successful sample",
            None,
            &last_success,
        )?;
        gauge_family(e, "source_consecutive_failures", "Failed sample attempts since the last success", None, &failures)?;
        gauge_family(e, "kafka_groups", "Consumer groups watched on the cluster (after include/exclude)", None, &kafka.groups)?;
        gauge_family(e, "kafka_group_state", "Consumer group state: 1 for the current state", None, &kafka.state)?;
        gauge_family(e, "kafka_group_members", "Members of the consumer group", None, &kafka.members)?;
        if !kafka.info.is_empty() {
            let mut family = e.encode_descriptor(
                "kafka_group",
                "Consumer group protocol type (classic or consumer, KIP-848)",
                None,
                MetricType::Info,
            )?;
            for l in &kafka.info {
                family.encode_info(l)?;
            }
        }
        gauge_family(e, "kafka_group_lag_offsets", "Sum of the group's known partition lags", None, &kafka.group_lag)?;
        gauge_family(e, "kafka_group_topic_lag_offsets", "Sum of the group's known partition lags on one topic", None, &kafka.topic_lag)?;
        gauge_family(
            e,
            "kafka_group_topic_max_lag_offsets",
            "Largest known partition lag of the group on one topic",
            None,
            &kafka.topic_max_lag,
        )?;
        gauge_family(
            e,
            "kafka_group_uncommitted_partitions",
            "Partitions the group consumes (assigned or committed) that have no committed offset",
            None,
            &kafka.uncommitted,
        )?;
        gauge_family(
            e,
            "kafka_partition_lag_offsets",
            "Log-end offset minus committed offset; absent when the partition has no commit",
            None,
            &kafka.lag,
        )?;
        gauge_family(e, "kafka_partition_committed_offset", "The group's committed offset", None, &kafka.committed)?;
        gauge_family(
            e,
            "kafka_partition_has_committed_offset",
            "1 when the group has a committed offset for the partition, 0 when it has none",
            None,
            &kafka.has_commit,
        )?;
        gauge_family(e, "kafka_partition_log_end_offset", "Offset of the next record to be written", None, &kafka.end)?;
        gauge_family(e, "kafka_partition_log_start_offset", "Earliest offset still in the log", None, &kafka.start)?;
        let mut build = e.encode_descriptor("build", "streamguard build information", None, MetricType::Info)?;
        build.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
    }
}
