//! The Kafka source: one sample of every watched consumer group's lag on one cluster.
//!
//! A sample is four batched admin calls, never a per-partition round trip:
//! 1. `ListConsumerGroups` (state and protocol type of every group, classic and KIP-848),
//! 2. `DescribeConsumerGroups` for the watched groups in one call (members, assignments),
//! 3. `ListConsumerGroupOffsets`, one group per request as librdkafka requires, with a
//!    bounded number in flight on one queue,
//! 4. `ListOffsets` earliest and latest for the union of committed and assigned
//!    partitions, issued together (librdkafka sends one request per leader broker).
//!
//! The result is turned into a [`KafkaSnapshot`] by the pure [`build_snapshot`]: lag per
//! partition is `log_end − committed`, and a partition with no committed offset has *no*
//! lag (`None`), never 0.
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
    gauge("produce_rate", "kafka_partition_produce_rate", TP, "Records per second written to the partition over the rate window"),
    gauge("topic_produce_rate", "kafka_topic_produce_rate", &["cluster", "topic"], "Records per second written to the topic over the rate window"),
    gauge("consume_rate", "kafka_group_consume_rate", G, "Records per second the group commits over the rate window"),
    gauge("group_topic_consume_rate", "kafka_group_topic_consume_rate", GT, "Records per second the group commits on one topic over the rate window"),
    gauge("group_status", "kafka_group_status", &["cluster", "group", "status"], "Group status over the status window: 1 for the current one of OK, WARN, STALL, STOP, REWIND, UNKNOWN"),
    SignalDef { name: "group_rebalances", metric: "kafka_group_rebalances", kind: MetricKind::Counter, help: "Rebalances seen (the group left Stable or its member count changed)", labels: G },
    SignalDef { name: "group_rewinds", metric: "kafka_group_rewinds", kind: MetricKind::Counter, help: "Committed offsets seen moving backwards", labels: G },
    gauge("dlq_rate", "kafka_dlq_rate", &["cluster", "dlq_topic", "topic", "group"], "Records per second written to the dead-letter topic over the rate window"),
    gauge("dlq_ratio", "kafka_dlq_ratio", &["cluster", "dlq_topic", "topic", "group"], "DLQ rate divided by the group's consume rate on the source topic; absent while the source is idle"),
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
    /// `log_end_offset − committed_offset`, floored at 0; `None` when either is unknown.
    pub lag_offsets: Option<i64>,
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
    /// Errors that did not fail the sample (a group whose offsets could not be read).
    pub partial_errors: Vec<String>,
    /// Dead-letter topics found on the cluster and what they serve.
    pub dlq: Vec<ResolvedDlq>,
    /// Time (ms since the epoch) of the record at (partition, committed offset), for
    /// lagging partitions the exact probe has read (this cycle or cached).
    #[serde(skip)]
    pub record_times: HashMap<TopicPartition, HashMap<i64, i64>>,
}

impl KafkaSnapshot {
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
            }
        }
        out
    }

    /// The cluster and its groups as API targets.
    pub fn targets(&self) -> Vec<TargetInfo> {
        let mut out = vec![TargetInfo {
            kind: "kafka_cluster",
            name: self.cluster.clone(),
            health: "ok",
            detail: serde_json::json!({ "groups": self.groups.len(), "partial_errors": self.partial_errors }),
        }];
        for g in &self.groups {
            let health = match (&g.error, g.state) {
                (Some(_), _) => "unknown",
                (None, GroupState::Dead | GroupState::Unknown) => "warn",
                _ => "ok",
            };
            out.push(TargetInfo {
                kind: "kafka_group",
                name: g.group.clone(),
                health,
                detail: serde_json::json!({
                    "state": g.state, "type": g.kind, "members": g.members, "lag_offsets": g.lag_offsets,
                    "uncommitted_partitions": g.uncommitted_partitions, "error": g.error,
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
            probe: Probe::new(config, cluster.probe_budget),
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
        let fail = |stage, source| SampleError::Admin { cluster: self.cluster.clone(), stage, source };

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

        let specs = [OffsetSpec::Earliest, OffsetSpec::Latest];
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
        let mut specs = offsets.into_iter();
        let (starts, ends) = (specs.next().unwrap_or_default(), specs.next().unwrap_or_default());

        let mut snapshot = build_snapshot(&self.cluster, &listings, &descriptions, &committed, &starts, &ends);
        for tp in dlq_partitions {
            let o = PartitionOffsets {
                log_start_offset: starts.get(&tp).and_then(|r| r.as_ref().ok().copied()),
                log_end_offset: ends.get(&tp).and_then(|r| r.as_ref().ok().copied()),
            };
            snapshot.partitions.entry(tp).or_insert(o);
        }
        snapshot.dlq = dlqs;
        // The exact time-lag probe spends what is left of the budget, never more.
        for ((tp, offset), ms) in self.probe.run(&snapshot.groups, deadline) {
            snapshot.record_times.entry(tp).or_default().insert(offset, ms);
        }
        snapshot.taken_at = SystemTime::now();
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
    /// The group consuming `source_topic` (its consume rate is the ratio's denominator).
    pub group: String,
    /// `config`, `pattern <p>` or `connect:<source>/<connector>`.
    pub origin: String,
}

/// Matches DLQ topics that exist on the cluster to (source topic, group) pairs. Pure.
///
/// Precedence: explicit config, then links discovered from Kafka Connect, then name
/// patterns (`{topic}` is a consumed topic, `{group}` a group consuming it). A DLQ topic
/// is never matched to itself as a source.
pub fn resolve_dlq(
    cluster: &str,
    config: &DlqConfig,
    links: &[DlqLink],
    consumed: &BTreeSet<(String, String)>,
    topics: &BTreeMap<String, i32>,
) -> Vec<ResolvedDlq> {
    let mut out: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut add = |dlq: &str, source: &str, group: &str, origin: String| {
        if dlq != source && topics.contains_key(dlq) {
            out.entry((dlq.to_string(), source.to_string(), group.to_string())).or_insert(origin);
        }
    };
    for m in &config.topics {
        if m.cluster.as_deref().is_some_and(|c| c != cluster) {
            continue;
        }
        match &m.group {
            Some(g) => add(&m.dlq_topic, &m.source_topic, g, "config".into()),
            None => {
                for (g, t) in consumed {
                    if *t == m.source_topic {
                        add(&m.dlq_topic, t, g, "config".into());
                    }
                }
            }
        }
    }
    for l in links {
        for t in &l.source_topics {
            add(&l.dlq_topic, t, &l.group, l.origin.clone());
        }
    }
    for (g, t) in consumed {
        for p in &config.patterns {
            let name = p.replace("{topic}", t).replace("{group}", g);
            add(&name, t, g, format!("pattern {p}"));
        }
    }
    out.into_iter()
        .map(|((dlq_topic, source_topic, group), origin)| ResolvedDlq { dlq_topic, source_topic, group, origin })
        .collect()
}

/// The exact time-lag probe: reads the timestamp of the record at a lagging group's
/// committed offset (the next record it will process), a bounded number per cycle,
/// cached by (partition, offset) so a stuck group costs one read, not one per cycle.
struct Probe {
    config: ClientConfig,
    budget: usize,
    consumer: std::sync::Mutex<Option<rdkafka::consumer::BaseConsumer>>,
    cache: std::sync::Mutex<HashMap<(TopicPartition, i64), i64>>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").field("budget", &self.budget).finish_non_exhaustive()
    }
}

/// Which (partition, committed offset) pairs to probe this cycle: lagging ones not yet
/// cached, largest lag first, at most `budget`. Pure.
pub fn probe_candidates(
    groups: &[GroupLag],
    cached: &dyn Fn(&(TopicPartition, i64)) -> bool,
    budget: usize,
) -> Vec<(TopicPartition, i64)> {
    let mut lagging: BTreeMap<(TopicPartition, i64), i64> = BTreeMap::new();
    for g in groups {
        for p in &g.partitions {
            if let (Some(c), Some(lag)) = (p.committed_offset, p.lag_offsets) {
                if lag > 0 {
                    let key = (TopicPartition { topic: p.topic.clone(), partition: p.partition }, c);
                    let e = lagging.entry(key).or_insert(0);
                    *e = (*e).max(lag);
                }
            }
        }
    }
    let mut v: Vec<((TopicPartition, i64), i64)> = lagging.into_iter().filter(|(k, _)| !cached(k)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter().take(budget).map(|(k, _)| k).collect()
}

impl Probe {
    fn new(mut config: ClientConfig, budget: usize) -> Self {
        config
            .set("group.id", "streamguard-probe")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50")
            .set("max.partition.fetch.bytes", "65536");
        Probe { config, budget, consumer: std::sync::Mutex::new(None), cache: std::sync::Mutex::new(HashMap::new()) }
    }

    /// Probes what the budget and `deadline` allow; returns the record time (ms since
    /// the epoch) of every (partition, committed offset) of a lagging group that is known.
    fn run(&self, groups: &[GroupLag], deadline: Instant) -> HashMap<(TopicPartition, i64), i64> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Keep only entries still at some group's committed offset: bounded by partitions.
        let live: BTreeSet<(TopicPartition, i64)> = groups
            .iter()
            .flat_map(|g| g.partitions.iter().filter_map(|p| p.committed_offset.map(|c| (TopicPartition { topic: p.topic.clone(), partition: p.partition }, c))))
            .collect();
        cache.retain(|k, _| live.contains(k));
        if self.budget > 0 {
            let wanted = probe_candidates(groups, &|k| cache.contains_key(k), self.budget);
            if !wanted.is_empty() {
                let found = self.read_timestamps(&wanted, deadline);
                cache.extend(found);
            }
        }
        cache.clone()
    }

    fn read_timestamps(&self, wanted: &[(TopicPartition, i64)], deadline: Instant) -> HashMap<(TopicPartition, i64), i64> {
        use rdkafka::consumer::Consumer as _;
        use rdkafka::Message as _;
        let mut out = HashMap::new();
        let mut slot = self.consumer.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            match self.config.create::<rdkafka::consumer::BaseConsumer>() {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the time-lag probe consumer");
                    return out;
                }
            }
        }
        let Some(consumer) = slot.as_ref() else { return out };
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut pending: HashMap<(String, i32), i64> = HashMap::new();
        for (tp, offset) in wanted {
            if tpl.add_partition_offset(&tp.topic, tp.partition, rdkafka::Offset::Offset(*offset)).is_ok() {
                pending.insert((tp.topic.clone(), tp.partition), *offset);
            }
        }
        if let Err(e) = consumer.assign(&tpl) {
            tracing::warn!(error = %e, "time-lag probe: assign failed");
            return out;
        }
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match consumer.poll(left.min(Duration::from_millis(100))) {
                Some(Ok(m)) => {
                    let key = (m.topic().to_string(), m.partition());
                    if let Some(&offset) = pending.get(&key) {
                        // The first record at or after the committed offset (a compacted
                        // or deleted record is replaced by the next one that exists).
                        if m.offset() >= offset {
                            pending.remove(&key);
                            if let Some(ms) = m.timestamp().to_millis() {
                                out.insert((TopicPartition { topic: key.0, partition: key.1 }, offset), ms);
                            }
                        }
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "time-lag probe: fetch error"),
                None => {}
            }
        }
        let _ = consumer.unassign().map_err(|e| tracing::debug!(error = %e, "time-lag probe: unassign failed"));
        out
    }
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
        let mut error = desc.and_then(|d| d.error.as_ref()).map(|e| e.to_string());
        let mut commits: BTreeMap<TopicPartition, Option<i64>> = BTreeMap::new();
        match committed.get(listing.group_id.as_str()) {
            Some(Ok(list)) => commits.extend(list.iter().cloned()),
            Some(Err(e)) => error = Some(e.to_string()),
            None => {}
        }
        if let Some(e) = &error {
            partial_errors.push(format!("group {}: {e}", listing.group_id));
        }
        for tp in owner.keys() {
            commits.entry(tp.clone()).or_insert(None);
        }
        let mut parts = Vec::with_capacity(commits.len());
        for (tp, committed_offset) in commits {
            let o = PartitionOffsets { log_start_offset: offset(starts, &tp), log_end_offset: offset(ends, &tp) };
            partitions.insert(tp.clone(), o);
            parts.push(PartitionLag {
                client_id: owner.get(&tp).cloned().flatten(),
                lag_offsets: partition_lag(committed_offset, o.log_end_offset),
                topic: tp.topic,
                partition: tp.partition,
                committed_offset,
                log_start_offset: o.log_start_offset,
                log_end_offset: o.log_end_offset,
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
    partial_errors.extend(offset_errors.into_iter().map(|(e, n)| format!("{n} partition offset(s): {e}")));
    KafkaSnapshot {
        cluster: cluster.to_string(),
        taken_at: SystemTime::UNIX_EPOCH,
        duration_seconds: 0.0,
        groups,
        partitions,
        partial_errors,
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
        let rows: Vec<(&str, &str, &str, &str)> =
            got.iter().map(|d| (d.dlq_topic.as_str(), d.source_topic.as_str(), d.group.as_str(), d.origin.as_str())).collect();
        assert_eq!(
            rows,
            vec![
                ("dlq-billing", "invoices", "billing", "pattern dlq-{group}"),
                ("failed-payments", "payments", "pay", "config"),
                ("orders.dlq", "orders", "app", "pattern {topic}.dlq"),
                ("orders.dlq", "orders", "connect-sink", "pattern {topic}.dlq"),
                ("sink-dlq", "orders", "connect-sink", "connect:local/sink"),
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
    fn probe_picks_uncached_lagging_partitions_largest_lag_first_within_budget() {
        let committed = vec![(
            "g".to_string(),
            Ok(vec![(tp("t", 0), Some(1)), (tp("t", 1), Some(1)), (tp("t", 2), Some(10)), (tp("t", 3), None)]),
        )];
        let ends: HashMap<_, _> = [(tp("t", 0), Ok(5)), (tp("t", 1), Ok(50)), (tp("t", 2), Ok(10)), (tp("t", 3), Ok(9))].into_iter().collect();
        let s = build_snapshot("c", &[listing("g")], &[], &committed, &HashMap::new(), &ends);
        let picked = probe_candidates(&s.groups, &|_| false, 10);
        assert_eq!(picked, vec![(tp("t", 1), 1), (tp("t", 0), 1)], "caught-up and uncommitted partitions are never probed");
        assert_eq!(probe_candidates(&s.groups, &|_| false, 1), vec![(tp("t", 1), 1)]);
        assert_eq!(probe_candidates(&s.groups, &|k| k.0.partition == 1, 10), vec![(tp("t", 0), 1)]);
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
