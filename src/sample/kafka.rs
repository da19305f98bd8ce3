//! The Kafka source: one sample of every watched consumer group's lag on one cluster.
//!
//! A sample is four batched admin calls, never a per-partition round trip:
//! 1. `ListConsumerGroups` (state and protocol type of every group, classic and KIP-848),
//! 2. `DescribeConsumerGroups` for the watched groups in one call (members, assignments),
//! 3. `ListConsumerGroupOffsets`, one group per request as librdkafka requires, with a
//!    bounded number in flight on one queue,
//! 4. `ListOffsets` earliest, latest and last stable (read_committed) for the union of
//!    committed and assigned partitions, issued together (librdkafka sends one request
//!    per leader broker),
//! 5. the exact time-lag probe ([`super::kafka_probe`]) within its own, shorter budget.
//!
//! The result is turned into a [`KafkaSnapshot`] by the pure [`build_snapshot`]: lag per
//! partition is `log_end − committed`, and a partition with no committed offset has *no*
//! lag (`None`), never 0. A committed offset outside the log (beyond its end after a
//! truncation, or below its start after retention deleted unread records) is flagged
//! per partition, never hidden behind a lag of 0.
//!
//! This module does not schedule, retry or decide anything: the agent loop calls
//! [`KafkaSampler::sample`] (blocking) on its interval and the store keeps the result.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use serde::Serialize;

use super::kafka_admin::{
    Admin, AdminError, Committed, GroupDescription, GroupListing, GroupState, GroupType, OffsetSpec, TopicPartition,
};
use super::kafka_probe::{Probe, ProbeValue};
use crate::config::{ClusterConfig, DlqConfig};
use crate::signal::{DlqLink, MetricKind, Observation, SignalDef, SourceSample, TargetInfo};

const P: &[&str] = &["cluster", "group", "topic", "partition"];
const G: &[&str] = &["cluster", "group"];
const GT: &[&str] = &["cluster", "group", "topic"];
const TP: &[&str] = &["cluster", "topic", "partition"];

const fn gauge(name: &'static str, metric: &'static str, labels: &'static [&'static str], help: &'static str) -> SignalDef {
    SignalDef { name, metric, kind: MetricKind::Gauge, help, labels }
}

/// Signals of the Kafka source: the raw ones from each sample, and those derived from
/// their history (time lag, rates, status; see `kafka_derive`).
pub const SIGNALS: &[SignalDef] = &[
    gauge("lag_offsets", "kafka_partition_lag_offsets", P, "Log-end offset minus committed offset; absent when the partition has no commit"),
    gauge("committed_offset", "kafka_partition_committed_offset", P, "The group's committed offset"),
    gauge("has_committed_offset", "kafka_partition_has_committed_offset", P, "1 when the group has a committed offset for the partition, 0 when it has none"),
    gauge("log_end_offset", "kafka_partition_log_end_offset", TP, "Offset of the next record to be written"),
    gauge("log_start_offset", "kafka_partition_log_start_offset", TP, "Earliest offset still in the log"),
    gauge("last_stable_offset", "kafka_partition_last_stable_offset", TP, "Last stable offset (LSO): read_committed consumers cannot read past it; below the log end while a transaction is open"),
    gauge("open_transaction_offsets", "kafka_partition_open_transaction_offsets", TP, "Log end minus last stable offset: offsets held back by transactions not yet committed or aborted"),
    gauge("offsets_out_of_range", "kafka_partition_offsets_out_of_range", P, "1 when the committed offset is outside the log (beyond its end, or below its start), else 0"),
    gauge("lost_records", "kafka_partition_lost_records", P, "Log start minus committed offset when positive: records deleted before the group consumed them, else 0"),
    SignalDef { name: "group_lost_records", metric: "kafka_group_lost_records", kind: MetricKind::Counter, help: "Records deleted before the group consumed them, counted since the agent started", labels: G },
    gauge("group_lag_offsets", "kafka_group_lag_offsets", G, "Sum of the group's known partition lags"),
    gauge("group_topic_lag_offsets", "kafka_group_topic_lag_offsets", GT, "Sum of the group's known partition lags on one topic"),
    gauge("group_topic_max_lag_offsets", "kafka_group_topic_max_lag_offsets", GT, "Largest known partition lag of the group on one topic"),
    gauge("group_uncommitted_partitions", "kafka_group_uncommitted_partitions", G, "Partitions the group consumes (assigned or committed) that have no committed offset"),
    gauge("group_state", "kafka_group_state", &["cluster", "group", "state"], "Consumer group state: 1 for the current state"),
    gauge("group_members", "kafka_group_members", G, "Members of the consumer group"),
    gauge("group_info", "kafka_group_info", &["cluster", "group", "type"], "Consumer group protocol type (classic or consumer, KIP-848); always 1"),
    gauge("groups", "kafka_groups", &["cluster"], "Consumer groups watched on the cluster (after include/exclude)"),
    gauge("lag_seconds", "kafka_partition_lag_seconds", &["cluster", "group", "topic", "partition", "method"], "Time lag: age of the next record the group will read (method probe) or time since the log end was at the committed offset (method interpolation)"),
    gauge("group_lag_seconds", "kafka_group_lag_seconds", &["cluster", "group", "method"], "Largest partition time lag of the group"),
    gauge("probe_age_seconds", "kafka_partition_probe_age_seconds", P, "Seconds since the probe read the record behind lag_seconds{method=\"probe\"} (the value is exact while the committed offset stays)"),
    gauge("probe_lagging_partitions", "kafka_probe_lagging_partitions", &["cluster"], "Lagging (group, partition) pairs the time-lag probe should cover"),
    gauge("probe_uncovered_partitions", "kafka_probe_uncovered_partitions", &["cluster"], "Lagging (group, partition) pairs without a probe value for their current committed offset"),
    gauge("produce_rate", "kafka_partition_produce_rate", TP, "Records per second written to the partition over the rate window"),
    gauge("topic_produce_rate", "kafka_topic_produce_rate", &["cluster", "topic"], "Records per second written to the topic over the rate window"),
    gauge("consume_rate", "kafka_group_consume_rate", G, "Records per second the group commits over the rate window"),
    gauge("group_topic_consume_rate", "kafka_group_topic_consume_rate", GT, "Records per second the group commits on one topic over the rate window"),
    gauge("group_status", "kafka_group_status", &["cluster", "group", "status"], "Group status over the status window: 1 for the current one of OK, WARN, STALL, STOP, REWIND, OUT_OF_RANGE, DATA_LOSS, UNKNOWN"),
    SignalDef { name: "group_rebalances", metric: "kafka_group_rebalances", kind: MetricKind::Counter, help: "Rebalances seen (the group left Stable or its member count changed)", labels: G },
    SignalDef { name: "group_rewinds", metric: "kafka_group_rewinds", kind: MetricKind::Counter, help: "Committed offsets seen moving backwards", labels: G },
    gauge("dlq_rate", "kafka_dlq_rate", &["cluster", "dlq_topic"], "Records per second written to the dead-letter topic over the rate window (once per DLQ topic)"),
    gauge("dlq_ratio", "kafka_dlq_ratio", &["cluster", "dlq_topic", "topic", "group"], "DLQ rate divided by the consume rate of the group that writes the DLQ, on its source topic; absent while the source is idle"),
];

/// Why a sample failed as a whole.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SampleError {
    #[error("cluster {cluster}: {stage}: {source}")]
    Admin {
        cluster: String,
        /// Which step failed: `list_groups`, `describe_groups` or `list_offsets`.
        stage: &'static str,
        #[source]
        source: AdminError,
    },
}

impl SampleError {
    /// A bounded label value for the error counter.
    pub fn kind(&self) -> &'static str {
        match self {
            SampleError::Admin { source: AdminError::Timeout { .. }, .. } => "timeout",
            SampleError::Admin { source: AdminError::Kafka { code, .. }, .. } if code == "_TIMED_OUT" || code == "OperationTimedOut" => {
                "timeout"
            }
            SampleError::Admin { stage, .. } => stage,
        }
    }
}

/// Lag of one partition for one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// `None`: the group has no committed offset for this partition.
    pub committed_offset: Option<i64>,
    /// `None`: the offset could not be read this sample.
    pub log_start_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    /// The LSO (read_committed end); below `log_end_offset` while a transaction is open.
    pub last_stable_offset: Option<i64>,
    /// `log_end_offset − committed_offset`, floored at 0; `None` when either is unknown.
    /// (Kafka's tool shows the unfloored value: see [`PartitionLag::tool_lag`].)
    pub lag_offsets: Option<i64>,
    /// The committed offset is beyond the log end or below the log start; `None` when
    /// unknown.
    pub out_of_range: Option<bool>,
    /// `log_start_offset − committed_offset` when positive, else 0: records deleted
    /// before the group read them. `None` when unknown.
    pub lost_records: Option<i64>,
    /// Client id of the member this partition is assigned to, if any.
    pub client_id: Option<String>,
}

/// Lag and state of one consumer group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupLag {
    pub group: String,
    pub state: GroupState,
    #[serde(rename = "type")]
    pub kind: GroupType,
    pub members: u32,
    pub partitions: Vec<PartitionLag>,
    /// Sum of the known partition lags; `None` when no partition lag is known.
    pub lag_offsets: Option<i64>,
    /// Partitions consumed by the group (assigned or committed) with no committed offset.
    pub uncommitted_partitions: u32,
    /// Set when this group's offsets could not be read this sample.
    pub error: Option<String>,
}

impl PartitionLag {
    /// The LAG column of `kafka-consumer-groups`: `end − committed`, negative when the
    /// committed offset is beyond the log end.
    pub fn tool_lag(&self) -> Option<i64> {
        Some(self.log_end_offset? - self.committed_offset?)
    }
}

impl GroupLag {
    /// Per topic: (sum of known lags, max of known lags); topics with no known lag are absent.
    pub fn topic_lags(&self) -> BTreeMap<&str, (i64, i64)> {
        let mut out: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for p in &self.partitions {
            if let Some(lag) = p.lag_offsets {
                let e = out.entry(p.topic.as_str()).or_insert((0, 0));
                e.0 += lag;
                e.1 = e.1.max(lag);
            }
        }
        out
    }
}

/// Start and end offsets of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionOffsets {
    pub log_start_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    pub last_stable_offset: Option<i64>,
}

/// One complete sample of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KafkaSnapshot {
    pub cluster: String,
    #[serde(with = "crate::signal::unix_seconds")]
    pub taken_at: SystemTime,
    pub duration_seconds: f64,
    pub groups: Vec<GroupLag>,
    /// Offsets of every partition some watched group consumes, by topic and partition.
    #[serde(skip)]
    pub partitions: BTreeMap<TopicPartition, PartitionOffsets>,
    /// Errors that did not fail the sample (a group whose offsets could not be read,
    /// partitions the probe could not read), for people.
    pub partial_errors: Vec<String>,
    /// The same, counted by bounded cause (`group_offsets`, `partition_offsets`,
    /// `probe_timeout` …), for the error counter.
    #[serde(skip)]
    pub partial_causes: BTreeMap<&'static str, u64>,
    /// Dead-letter topics found on the cluster and what they serve.
    pub dlq: Vec<ResolvedDlq>,
    /// What the exact probe knows of the record at (partition, committed offset), for
    /// lagging partitions it has read (this cycle or cached).
    #[serde(skip)]
    pub record_times: HashMap<TopicPartition, HashMap<i64, ProbeValue>>,
}

/// How much of the lagging partitions the probe covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProbeCoverage {
    /// Lagging (group, partition) pairs (lag > 0, committed offset known).
    pub lagging: u64,
    /// Those without a probe value for their current committed offset.
    pub uncovered: u64,
}

impl KafkaSnapshot {
    /// The probe's value for one (partition, committed offset), if known.
    pub fn probe_value(&self, tp: &TopicPartition, committed: i64) -> Option<&ProbeValue> {
        self.record_times.get(tp).and_then(|m| m.get(&committed))
    }

    /// Coverage of the lagging partitions by probe values. Pure.
    pub fn probe_coverage(&self) -> ProbeCoverage {
        let mut c = ProbeCoverage::default();
        for g in self.groups.iter().filter(|g| g.error.is_none()) {
            for p in &g.partitions {
                if let (Some(committed), Some(lag)) = (p.committed_offset, p.lag_offsets) {
                    if lag > 0 {
                        c.lagging += 1;
                        let tp = TopicPartition { topic: p.topic.clone(), partition: p.partition };
                        if self.probe_value(&tp, committed).is_none() {
                            c.uncovered += 1;
                        }
                    }
                }
            }
        }
        c
    }

    /// Records an error that did not fail the sample.
    pub fn add_partial_error(&mut self, cause: &'static str, message: String) {
        self.partial_errors.push(message);
        *self.partial_causes.entry(cause).or_default() += 1;
    }

    /// The raw signals of this sample. Unknown values produce no observation.
    pub fn observations(&self) -> Vec<Observation> {
        let c = self.cluster.as_str();
        let mut out = Vec::new();
        out.extend(Observation::new("groups", &[("cluster", c)], self.groups.len() as f64));
        for (tp, o) in &self.partitions {
            let p = tp.partition.to_string();
            let l = [("cluster", c), ("topic", tp.topic.as_str()), ("partition", p.as_str())];
            if let Some(v) = o.log_end_offset {
                out.extend(Observation::new("log_end_offset", &l, v as f64));
            }
            if let Some(v) = o.log_start_offset {
                out.extend(Observation::new("log_start_offset", &l, v as f64));
            }
            if let Some(v) = o.last_stable_offset {
                out.extend(Observation::new("last_stable_offset", &l, v as f64));
                if let Some(end) = o.log_end_offset {
                    out.extend(Observation::new("open_transaction_offsets", &l, (end - v).max(0) as f64));
                }
            }
        }
        for g in &self.groups {
            let gl = [("cluster", c), ("group", g.group.as_str())];
            for st in GroupState::ALL {
                out.extend(Observation::new("group_state", &[gl[0], gl[1], ("state", st.as_str())], f64::from(u8::from(st == g.state))));
            }
            out.extend(Observation::new("group_members", &gl, f64::from(g.members)));
            out.extend(Observation::new("group_info", &[gl[0], gl[1], ("type", g.kind.as_str())], 1.0));
            if g.error.is_some() {
                // This group's offsets are unknown this cycle: no lag series at all.
                continue;
            }
            out.extend(Observation::new("group_uncommitted_partitions", &gl, f64::from(g.uncommitted_partitions)));
            if let Some(v) = g.lag_offsets {
                out.extend(Observation::new("group_lag_offsets", &gl, v as f64));
            }
            for (topic, (sum, max)) in g.topic_lags() {
                let l = [gl[0], gl[1], ("topic", topic)];
                out.extend(Observation::new("group_topic_lag_offsets", &l, sum as f64));
                out.extend(Observation::new("group_topic_max_lag_offsets", &l, max as f64));
            }
            for p in &g.partitions {
                let part = p.partition.to_string();
                let l = [gl[0], gl[1], ("topic", p.topic.as_str()), ("partition", part.as_str())];
                out.extend(Observation::new("has_committed_offset", &l, f64::from(u8::from(p.committed_offset.is_some()))));
                if let Some(v) = p.committed_offset {
                    out.extend(Observation::new("committed_offset", &l, v as f64));
                }
                if let Some(v) = p.lag_offsets {
                    out.extend(Observation::new("lag_offsets", &l, v as f64));
                }
                if let Some(v) = p.out_of_range {
                    out.extend(Observation::new("offsets_out_of_range", &l, f64::from(u8::from(v))));
                }
                if let Some(v) = p.lost_records {
                    out.extend(Observation::new("lost_records", &l, v as f64));
                }
            }
        }
        out
    }

    /// The cluster and its groups as API targets.
    pub fn targets(&self) -> Vec<TargetInfo> {
        // A cluster that answered but could not give every value is not "ok": something
        // a user relies on (a group's offsets, a probe value) is missing.
        let health = if self.partial_errors.is_empty() { "ok" } else { "warn" };
        let mut out = vec![TargetInfo {
            kind: "kafka_cluster",
            name: self.cluster.clone(),
            health,
            detail: serde_json::json!({
                "groups": self.groups.len(),
                "partial_errors": self.partial_errors,
                "partial_error_causes": self.partial_causes,
                "probe": self.probe_coverage(),
                "taken_at": crate::signal::unix_secs(self.taken_at),
                "duration_seconds": self.duration_seconds,
            }),
        }];
        for g in &self.groups {
            let outside = g.partitions.iter().any(|p| p.out_of_range == Some(true));
            let health = match (&g.error, g.state) {
                (Some(_), _) => "unknown",
                (None, GroupState::Dead | GroupState::Unknown) => "warn",
                _ if outside => "warn",
                _ => "ok",
            };
            out.push(TargetInfo {
                kind: "kafka_group",
                name: g.group.clone(),
                health,
                detail: serde_json::json!({
                    "state": g.state, "type": g.kind, "members": g.members, "lag_offsets": g.lag_offsets,
                    "uncommitted_partitions": g.uncommitted_partitions, "error": g.error,
                    "offsets_out_of_range": g.partitions.iter().filter(|p| p.out_of_range == Some(true)).count(),
                    "lost_records": g.partitions.iter().filter_map(|p| p.lost_records).sum::<i64>(),
                }),
            });
        }
        out
    }

    /// Both, as one source sample.
    pub fn to_sample(&self) -> SourceSample {
        SourceSample { observations: self.observations(), targets: self.targets(), dlq_links: Vec::new() }
    }
}

/// Which groups to watch.
#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    pub include: Vec<regex::Regex>,
    pub exclude: Vec<regex::Regex>,
}

impl GroupFilter {
    /// A group is watched when it matches an include pattern (or there are none) and no
    /// exclude pattern.
    pub fn matches(&self, group: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(group)))
            && !self.exclude.iter().any(|r| r.is_match(group))
    }
}

/// Samples one cluster.
#[derive(Debug)]
pub struct KafkaSampler {
    cluster: String,
    admin: Admin,
    filter: GroupFilter,
    timeout: Duration,
    offset_fetch_concurrency: usize,
    probe: Probe,
}

/// Bounded causes of partial errors (label values of the error counter).
pub const PARTIAL_CAUSES: [&str; 7] =
    ["describe_group", "group_offsets", "partition_offsets", "probe_consumer", "probe_assign", "probe_timeout", "probe_fetch"];

/// librdkafka properties the sampler sets itself unless the user overrides them.
pub fn client_config(bootstrap: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("client.id", "streamguard")
        // A broker outage is reported once per sample by us, not every second by librdkafka.
        .set("log.connection.close", "false")
        .set("reconnect.backoff.max.ms", "2000")
        .set_log_level(RDKafkaLogLevel::Error);
    for (k, v) in properties {
        cfg.set(k, v);
    }
    cfg
}

impl KafkaSampler {
    /// Creates the sampler and its client (no connection is made yet).
    pub fn new(cluster: &ClusterConfig) -> Result<Self, AdminError> {
        let config = client_config(&cluster.bootstrap_servers, &cluster.properties);
        let admin = Admin::new(&config)?;
        Ok(KafkaSampler {
            cluster: cluster.name.clone(),
            admin,
            filter: cluster.groups.clone(),
            timeout: cluster.sample_timeout,
            offset_fetch_concurrency: cluster.offset_fetch_concurrency,
            probe: Probe::new(config, cluster.probe_budget, cluster.probe_timeout),
        })
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Takes one sample. Blocks for at most about the configured timeout.
    ///
    /// `dlq` is the configured DLQ matching and the links other sources discovered; the
    /// DLQ topics it resolves to are sampled too.
    pub fn sample(&self, dlq: &(DlqConfig, Vec<DlqLink>)) -> Result<KafkaSnapshot, SampleError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        // A timeout is reported against the sample's budget, not the time that happened
        // to be left for the call: the same failure reads the same every time.
        let fail = |stage, source| {
            let source = match source {
                AdminError::Timeout { op, .. } => AdminError::Timeout { op, timeout: self.timeout },
                other => other,
            };
            SampleError::Admin { cluster: self.cluster.clone(), stage, source }
        };

        let (listings, list_errors) = self.admin.list_groups(left()).map_err(|e| fail("list_groups", e))?;
        // librdkafka answers ListConsumerGroups with per-broker errors and whatever the
        // other brokers listed: with the cluster down that is "no groups", with one broker
        // down it is a list missing that broker's groups. Either way the group set is
        // unknown, so the sample fails rather than report groups as gone.
        if let Some(first) = list_errors.into_iter().next() {
            return Err(fail("list_groups", first));
        }
        let listings: Vec<GroupListing> = listings.into_iter().filter(|g| self.filter.matches(&g.group_id)).collect();
        let names: Vec<String> = listings.iter().map(|g| g.group_id.clone()).collect();

        let descriptions = self.admin.describe_groups(&names, left()).map_err(|e| fail("describe_groups", e))?;
        let committed = self.admin.list_group_offsets(&names, self.offset_fetch_concurrency, left());
        let topics = self.admin.topics(left()).map_err(|e| fail("metadata", e))?;

        let mut wanted = partitions_to_query(&descriptions, &committed);
        let consumed = consumed_topics(&descriptions, &committed);
        let dlqs = resolve_dlq(&self.cluster, &dlq.0, &dlq.1, &consumed, &topics);
        let dlq_partitions: BTreeSet<TopicPartition> = dlqs
            .iter()
            .flat_map(|d| (0..topics.get(&d.dlq_topic).copied().unwrap_or(0)).map(|p| TopicPartition { topic: d.dlq_topic.clone(), partition: p }))
            .collect();
        wanted.extend(dlq_partitions.iter().cloned());
        wanted.sort();
        wanted.dedup();

        let specs = [OffsetSpec::Earliest, OffsetSpec::Latest, OffsetSpec::LastStable];
        let mut offsets = self.admin.list_offsets(&wanted, &specs, left()).map_err(|e| fail("list_offsets", e))?;
        let failed = failed_partitions(&offsets);
        if !failed.is_empty() {
            // Stale leader metadata fails every affected partition until the cache is
            // refreshed (see Admin::topics): refresh once more, retry only those.
            if self.admin.topics(left()).is_ok() {
                if let Ok(retry) = self.admin.list_offsets(&failed, &specs, left()) {
                    for (all, again) in offsets.iter_mut().zip(retry) {
                        all.extend(again);
                    }
                }
            }
        }
        // The moment the offsets were read: lag and time lag are as of now.
        let taken_at = SystemTime::now();
        let mut specs = offsets.into_iter();
        let (starts, ends, stable) = (specs.next().unwrap_or_default(), specs.next().unwrap_or_default(), specs.next().unwrap_or_default());

        let mut snapshot = build_snapshot(&self.cluster, &listings, &descriptions, &committed, &starts, &ends);
        let get = |m: &HashMap<TopicPartition, Result<i64, AdminError>>, tp: &TopicPartition| m.get(tp).and_then(|r| r.as_ref().ok().copied());
        for tp in dlq_partitions {
            let o = PartitionOffsets { log_start_offset: get(&starts, &tp), log_end_offset: get(&ends, &tp), last_stable_offset: None };
            snapshot.partitions.entry(tp).or_insert(o);
        }
        for (tp, o) in snapshot.partitions.iter_mut() {
            o.last_stable_offset = get(&stable, tp);
        }
        for g in &mut snapshot.groups {
            for p in &mut g.partitions {
                p.last_stable_offset = get(&stable, &TopicPartition { topic: p.topic.clone(), partition: p.partition });
            }
        }
        snapshot.dlq = dlqs;
        snapshot.taken_at = taken_at;
        // The exact time-lag probe has its own budget, shorter than the sample's.
        let probe = self.probe.run(&snapshot.groups, deadline, taken_at);
        for ((tp, offset), v) in probe.values {
            snapshot.record_times.entry(tp).or_default().insert(offset, v);
        }
        for e in probe.errors {
            tracing::debug!(cluster = %self.cluster, error = %e, "time-lag probe incomplete");
            snapshot.add_partial_error(e.cause(), e.to_string());
        }
        snapshot.duration_seconds = started.elapsed().as_secs_f64();
        Ok(snapshot)
    }
}

/// (group, topic) pairs some group consumes.
fn consumed_topics(
    descriptions: &[GroupDescription],
    committed: &[(String, Result<Vec<Committed>, AdminError>)],
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for d in descriptions {
        for m in &d.members {
            out.extend(m.assignment.iter().map(|tp| (d.group_id.clone(), tp.topic.clone())));
        }
    }
    for (g, r) in committed {
        if let Ok(list) = r {
            out.extend(list.iter().map(|(tp, _)| (g.clone(), tp.topic.clone())));
        }
    }
    out
}

/// A dead-letter topic matched to the pipeline it serves, on one cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ResolvedDlq {
    pub dlq_topic: String,
    /// The topic whose failed records go to the DLQ.
    pub source_topic: String,
    /// The group that writes the DLQ while consuming `source_topic` (its consume rate is
    /// the ratio's denominator); `None` when the match names only the topic, so the DLQ
    /// is not blamed on every group that happens to read the topic.
    pub group: Option<String>,
    /// `config`, `pattern <p>` or `connect:<source>/<connector>`.
    pub origin: String,
}

/// Matches DLQ topics that exist on the cluster to (source topic, group) pairs. Pure.
///
/// Precedence: explicit config, then links discovered from Kafka Connect, then name
/// patterns (`{topic}` is a consumed topic, `{group}` a group consuming it). A DLQ topic
/// is never matched to itself as a source.
///
/// A DLQ belongs to the group (or connector) that writes it: a match is attached to a
/// group only when it says which group (config `group`, a Connect sink's own group, a
/// pattern with `{group}`); otherwise it is attached to the source topic alone.
pub fn resolve_dlq(
    cluster: &str,
    config: &DlqConfig,
    links: &[DlqLink],
    consumed: &BTreeSet<(String, String)>,
    topics: &BTreeMap<String, i32>,
) -> Vec<ResolvedDlq> {
    // Keyed by (dlq, source, group): the first origin (highest precedence) wins.
    let mut out: BTreeMap<(String, String, Option<String>), String> = BTreeMap::new();
    let mut add = |dlq: &str, source: &str, group: Option<&str>, origin: String| {
        if dlq != source && topics.contains_key(dlq) {
            out.entry((dlq.to_string(), source.to_string(), group.map(str::to_string))).or_insert(origin);
        }
    };
    for m in &config.topics {
        if m.cluster.as_deref().is_some_and(|c| c != cluster) {
            continue;
        }
        add(&m.dlq_topic, &m.source_topic, m.group.as_deref(), "config".into());
    }
    for l in links {
        for t in &l.source_topics {
            add(&l.dlq_topic, t, Some(&l.group), l.origin.clone());
        }
    }
    for (g, t) in consumed {
        for p in &config.patterns {
            let name = p.replace("{topic}", t).replace("{group}", g);
            let group = p.contains("{group}").then_some(g.as_str());
            add(&name, t, group, format!("pattern {p}"));
        }
    }
    // A topic-only match is redundant where the same DLQ and source are already
    // attributed to a group.
    let attributed: BTreeSet<(String, String)> =
        out.keys().filter(|(_, _, g)| g.is_some()).map(|(d, s, _)| (d.clone(), s.clone())).collect();
    out.into_iter()
        .filter(|((d, s, g), _)| g.is_some() || !attributed.contains(&(d.clone(), s.clone())))
        .map(|((dlq_topic, source_topic, group), origin)| ResolvedDlq { dlq_topic, source_topic, group, origin })
        .collect()
}

/// Every partition some group consumes: committed or assigned, deduplicated and sorted.
pub fn partitions_to_query(
    descriptions: &[GroupDescription],
    committed: &[(String, Result<Vec<Committed>, AdminError>)],
) -> Vec<TopicPartition> {
    let mut set = BTreeSet::new();
    for d in descriptions {
        for m in &d.members {
            set.extend(m.assignment.iter().cloned());
        }
    }
    for (_, r) in committed {
        if let Ok(offsets) = r {
            set.extend(offsets.iter().map(|(tp, _)| tp.clone()));
        }
    }
    set.into_iter().collect()
}

/// Partitions for which any of the offset lookups failed, deduplicated and sorted.
fn failed_partitions(offsets: &[HashMap<TopicPartition, Result<i64, AdminError>>]) -> Vec<TopicPartition> {
    let set: BTreeSet<&TopicPartition> = offsets.iter().flat_map(|m| m.iter().filter(|(_, r)| r.is_err()).map(|(tp, _)| tp)).collect();
    set.into_iter().cloned().collect()
}

/// Lag of one partition: `end − committed`, floored at 0 (a committed offset beyond the
/// log end, after an unclean truncation, is "caught up", never negative lag).
pub fn partition_lag(committed: Option<i64>, end: Option<i64>) -> Option<i64> {
    Some((end? - committed?).max(0))
}

/// Where a committed offset lies relative to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    /// Beyond the log end (truncated or recreated topic) or below the log start.
    pub out_of_range: bool,
    /// `start − committed` when positive (records deleted unread), else 0.
    pub lost_records: i64,
}

/// Classifies a committed offset; `None` when it or either end of the log is unknown. Pure.
pub fn offset_range(committed: Option<i64>, start: Option<i64>, end: Option<i64>) -> Option<OffsetRange> {
    let (c, s, e) = (committed?, start?, end?);
    Some(OffsetRange { out_of_range: c > e || c < s, lost_records: (s - c).max(0) })
}

/// Assembles a snapshot from the raw admin answers. Pure.
pub fn build_snapshot(
    cluster: &str,
    listings: &[GroupListing],
    descriptions: &[GroupDescription],
    committed: &[(String, Result<Vec<Committed>, AdminError>)],
    starts: &HashMap<TopicPartition, Result<i64, AdminError>>,
    ends: &HashMap<TopicPartition, Result<i64, AdminError>>,
) -> KafkaSnapshot {
    let described: HashMap<&str, &GroupDescription> = descriptions.iter().map(|d| (d.group_id.as_str(), d)).collect();
    let committed: HashMap<&str, &Result<Vec<Committed>, AdminError>> =
        committed.iter().map(|(g, r)| (g.as_str(), r)).collect();
    let offset = |m: &HashMap<TopicPartition, Result<i64, AdminError>>, tp: &TopicPartition| {
        m.get(tp).and_then(|r| r.as_ref().ok().copied())
    };

    let mut partitions = BTreeMap::new();
    let mut partial_errors = Vec::new();
    let mut partial_causes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut groups = Vec::with_capacity(listings.len());
    for listing in listings {
        let desc = described.get(listing.group_id.as_str()).copied();
        // The description is fresher and more detailed than the listing; the listing
        // still has state and type when the describe answered with an error.
        let (state, kind, members) = match desc {
            Some(d) if d.error.is_none() => (d.state, d.kind, d.members.as_slice()),
            _ => (listing.state, listing.kind, &[][..]),
        };
        let kind = if kind == GroupType::Unknown { listing.kind } else { kind };
        let mut owner: BTreeMap<TopicPartition, Option<String>> = BTreeMap::new();
        for m in members {
            for tp in &m.assignment {
                owner.insert(tp.clone(), Some(m.client_id.clone()));
            }
        }
        let mut error = desc.and_then(|d| d.error.as_ref()).map(|e| ("describe_group", e.to_string()));
        let mut commits: BTreeMap<TopicPartition, Option<i64>> = BTreeMap::new();
        match committed.get(listing.group_id.as_str()) {
            Some(Ok(list)) => commits.extend(list.iter().cloned()),
            Some(Err(e)) => error = Some(("group_offsets", e.to_string())),
            None => {}
        }
        if let Some((cause, e)) = &error {
            partial_errors.push(format!("group {}: {e}", listing.group_id));
            *partial_causes.entry(cause).or_default() += 1;
        }
        let error = error.map(|(_, e)| e);
        for tp in owner.keys() {
            commits.entry(tp.clone()).or_insert(None);
        }
        let mut parts = Vec::with_capacity(commits.len());
        for (tp, committed_offset) in commits {
            let o = PartitionOffsets { log_start_offset: offset(starts, &tp), log_end_offset: offset(ends, &tp), last_stable_offset: None };
            partitions.insert(tp.clone(), o);
            let range = offset_range(committed_offset, o.log_start_offset, o.log_end_offset);
            parts.push(PartitionLag {
                client_id: owner.get(&tp).cloned().flatten(),
                lag_offsets: partition_lag(committed_offset, o.log_end_offset),
                topic: tp.topic,
                partition: tp.partition,
                committed_offset,
                log_start_offset: o.log_start_offset,
                log_end_offset: o.log_end_offset,
                last_stable_offset: None,
                out_of_range: range.map(|r| r.out_of_range),
                lost_records: range.map(|r| r.lost_records),
            });
        }
        let known: Vec<i64> = parts.iter().filter_map(|p| p.lag_offsets).collect();
        groups.push(GroupLag {
            group: listing.group_id.clone(),
            state,
            kind,
            members: members.len() as u32,
            uncommitted_partitions: parts.iter().filter(|p| p.committed_offset.is_none()).count() as u32,
            lag_offsets: (!known.is_empty()).then(|| known.iter().sum()),
            partitions: parts,
            error,
        });
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    // Per-partition offset errors, summarised (one line per distinct error, not per partition).
    let mut offset_errors: BTreeMap<String, usize> = BTreeMap::new();
    for r in starts.values().chain(ends.values()) {
        if let Err(e) = r {
            *offset_errors.entry(e.to_string()).or_default() += 1;
        }
    }
    for (e, n) in offset_errors {
        partial_errors.push(format!("{n} partition offset(s): {e}"));
        *partial_causes.entry("partition_offsets").or_default() += n as u64;
    }
    KafkaSnapshot {
        cluster: cluster.to_string(),
        taken_at: SystemTime::UNIX_EPOCH,
        duration_seconds: 0.0,
        groups,
        partitions,
        partial_errors,
        partial_causes,
        dlq: Vec::new(),
        record_times: HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition { topic: t.into(), partition: p }
    }

    fn listing(g: &str) -> GroupListing {
        GroupListing { group_id: g.into(), state: GroupState::Empty, kind: GroupType::Classic, simple: false }
    }

    #[test]
    fn lag_is_end_minus_committed_and_unknown_without_a_commit() {
        assert_eq!(partition_lag(Some(3), Some(10)), Some(7));
        assert_eq!(partition_lag(None, Some(10)), None);
        assert_eq!(partition_lag(Some(3), None), None);
        assert_eq!(partition_lag(Some(12), Some(10)), Some(0), "never negative");
    }

    #[test]
    fn snapshot_reports_uncommitted_assigned_partitions_as_unknown_not_zero() {
        let desc = GroupDescription {
            group_id: "g".into(),
            state: GroupState::Stable,
            kind: GroupType::Consumer,
            members: vec![super::super::kafka_admin::Member {
                client_id: "c1".into(),
                consumer_id: "m1".into(),
                host: "/127.0.0.1".into(),
                assignment: vec![tp("t", 0), tp("t", 1)],
            }],
            error: None,
        };
        let committed = vec![("g".to_string(), Ok(vec![(tp("t", 0), Some(4))]))];
        let ends: HashMap<_, _> = [(tp("t", 0), Ok(10)), (tp("t", 1), Ok(5))].into_iter().collect();
        let starts: HashMap<_, _> = [(tp("t", 0), Ok(0)), (tp("t", 1), Ok(0))].into_iter().collect();
        let s = build_snapshot("c", &[listing("g")], &[desc], &committed, &starts, &ends);
        let g = &s.groups[0];
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.kind, GroupType::Consumer);
        assert_eq!(g.members, 1);
        assert_eq!(g.partitions.len(), 2);
        assert_eq!(g.partitions[0].lag_offsets, Some(6));
        assert_eq!(g.partitions[1].committed_offset, None);
        assert_eq!(g.partitions[1].lag_offsets, None);
        assert_eq!(g.lag_offsets, Some(6));
        assert_eq!(g.uncommitted_partitions, 1);
        assert_eq!(g.partitions[1].client_id.as_deref(), Some("c1"));
    }

    #[test]
    fn a_group_whose_offsets_failed_carries_the_error_and_no_lag() {
        let err = AdminError::Timeout { op: "ListConsumerGroupOffsets", timeout: Duration::from_secs(1) };
        let committed = vec![("g".to_string(), Err(err))];
        let s = build_snapshot("c", &[listing("g")], &[], &committed, &HashMap::new(), &HashMap::new());
        assert!(s.groups[0].error.as_deref().unwrap_or("").contains("timed out"));
        assert_eq!(s.groups[0].lag_offsets, None);
        assert_eq!(s.partial_errors.len(), 1);
    }

    #[test]
    fn topic_lags_sum_and_max_known_partitions_only() {
        let committed = vec![(
            "g".to_string(),
            Ok(vec![(tp("a", 0), Some(1)), (tp("a", 1), Some(2)), (tp("b", 0), None)]),
        )];
        let ends: HashMap<_, _> = [(tp("a", 0), Ok(5)), (tp("a", 1), Ok(10)), (tp("b", 0), Ok(3))].into_iter().collect();
        let s = build_snapshot("c", &[listing("g")], &[], &committed, &HashMap::new(), &ends);
        let t = s.groups[0].topic_lags();
        assert_eq!(t.get("a"), Some(&(12, 8)));
        assert_eq!(t.get("b"), None);
    }

    fn consumed(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        pairs.iter().map(|(g, t)| (g.to_string(), t.to_string())).collect()
    }

    #[test]
    fn dlq_topics_are_matched_by_config_then_connect_links_then_patterns() {
        let topics: BTreeMap<String, i32> =
            ["orders", "orders.dlq", "failed-payments", "payments", "sink-dlq", "dlq-billing"].iter().map(|t| (t.to_string(), 1)).collect();
        let config = DlqConfig {
            patterns: crate::config::DEFAULT_DLQ_PATTERNS.iter().map(|p| p.to_string()).collect(),
            topics: vec![
                crate::config::DlqMapping { cluster: None, dlq_topic: "failed-payments".into(), source_topic: "payments".into(), group: None },
                crate::config::DlqMapping { cluster: Some("other".into()), dlq_topic: "orders".into(), source_topic: "x".into(), group: None },
            ],
        };
        let links = vec![DlqLink {
            dlq_topic: "sink-dlq".into(),
            source_topics: vec!["orders".into()],
            group: "connect-sink".into(),
            origin: "connect:local/sink".into(),
        }];
        let got = resolve_dlq(
            "c",
            &config,
            &links,
            &consumed(&[("app", "orders"), ("pay", "payments"), ("billing", "invoices"), ("connect-sink", "orders")]),
            &topics,
        );
        let rows: Vec<(&str, &str, Option<&str>, &str)> =
            got.iter().map(|d| (d.dlq_topic.as_str(), d.source_topic.as_str(), d.group.as_deref(), d.origin.as_str())).collect();
        assert_eq!(
            rows,
            vec![
                ("dlq-billing", "invoices", Some("billing"), "pattern dlq-{group}"),
                ("failed-payments", "payments", None, "config"),
                // A name pattern without {group} names the topic only: not blamed on
                // `app` and `connect-sink`, the two groups that read `orders`.
                ("orders.dlq", "orders", None, "pattern {topic}.dlq"),
                ("sink-dlq", "orders", Some("connect-sink"), "connect:local/sink"),
            ]
        );
    }

    #[test]
    fn a_dlq_that_does_not_exist_or_is_its_own_source_is_not_matched() {
        let topics: BTreeMap<String, i32> = [("a".to_string(), 1), ("a.dlq".to_string(), 1)].into_iter().collect();
        let config = DlqConfig { patterns: vec!["{topic}.dlq".into(), "{topic}".into()], topics: Vec::new() };
        let got = resolve_dlq("c", &config, &[], &consumed(&[("g", "a"), ("g", "b")]), &topics);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].dlq_topic, "a.dlq");
    }

    #[test]
    fn a_committed_offset_outside_the_log_is_flagged_and_lost_records_counted() {
        assert_eq!(offset_range(Some(50), Some(0), Some(10)), Some(OffsetRange { out_of_range: true, lost_records: 0 }));
        assert_eq!(offset_range(Some(3), Some(8), Some(10)), Some(OffsetRange { out_of_range: true, lost_records: 5 }));
        assert_eq!(offset_range(Some(8), Some(8), Some(10)), Some(OffsetRange { out_of_range: false, lost_records: 0 }));
        assert_eq!(offset_range(Some(10), Some(8), Some(10)), Some(OffsetRange { out_of_range: false, lost_records: 0 }), "at the end is in range");
        assert_eq!(offset_range(None, Some(0), Some(10)), None);
        assert_eq!(offset_range(Some(3), None, Some(10)), None, "unknown is not in range");
    }

    #[test]
    fn tool_lag_is_negative_beyond_the_log_end_while_the_lag_metric_stays_at_zero() {
        let committed = vec![("g".to_string(), Ok(vec![(tp("t", 0), Some(50))]))];
        let ends: HashMap<_, _> = [(tp("t", 0), Ok(10))].into_iter().collect();
        let starts: HashMap<_, _> = [(tp("t", 0), Ok(0))].into_iter().collect();
        let s = build_snapshot("c", &[listing("g")], &[], &committed, &starts, &ends);
        let p = &s.groups[0].partitions[0];
        assert_eq!(p.tool_lag(), Some(-40));
        assert_eq!(p.lag_offsets, Some(0));
        assert_eq!(p.out_of_range, Some(true));
        let obs = s.observations();
        let get = |name: &str| obs.iter().find(|o| o.key.signal == name).map(|o| o.value);
        assert_eq!(get("offsets_out_of_range"), Some(1.0));
        assert_eq!(get("lost_records"), Some(0.0));
        assert_eq!(get("lag_offsets"), Some(0.0));
        assert_eq!(s.targets()[1].health, "warn");
    }

    #[test]
    fn partial_errors_are_counted_by_bounded_cause_and_make_the_cluster_warn() {
        let err = AdminError::Timeout { op: "ListConsumerGroupOffsets", timeout: Duration::from_secs(1) };
        let committed = vec![("g".to_string(), Err(err))];
        let ends: HashMap<_, _> = [(tp("t", 0), Err(AdminError::Timeout { op: "ListOffsets", timeout: Duration::from_secs(1) }))].into_iter().collect();
        let mut s = build_snapshot("c", &[listing("g")], &[], &committed, &HashMap::new(), &ends);
        s.add_partial_error("probe_timeout", "probe".into());
        assert_eq!(s.partial_causes.get("group_offsets"), Some(&1));
        assert_eq!(s.partial_causes.get("partition_offsets"), Some(&1));
        assert_eq!(s.partial_causes.get("probe_timeout"), Some(&1));
        for cause in s.partial_causes.keys() {
            assert!(PARTIAL_CAUSES.contains(cause), "{cause} is not a declared cause");
        }
        let cluster = &s.targets()[0];
        assert_eq!(cluster.health, "warn");
        assert_eq!(cluster.detail["partial_errors"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn filter_applies_include_then_exclude() {
        let f = GroupFilter {
            include: vec![regex::Regex::new("^pay").unwrap()],
            exclude: vec![regex::Regex::new("test$").unwrap()],
        };
        assert!(f.matches("payments"));
        assert!(!f.matches("payments-test"));
        assert!(!f.matches("orders"));
        assert!(GroupFilter::default().matches("anything"));
    }
}
