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

use super::kafka_admin::{Admin, AdminError, Committed, GroupDescription, GroupListing, OffsetSpec, TopicPartition};
use super::kafka_context::{ClientEvents, ClientFault, KafkaContext};
use super::kafka_probe::Probe;
pub use super::kafka_snapshot::{
    build_snapshot, PARTIAL_CAUSES, offset_range, partition_lag, GroupLag, KafkaSnapshot, OffsetRange, PartitionLag, PartitionOffsets, ProbeCoverage,
    ResolvedDlq,
};
use crate::config::{ClusterConfig, DlqConfig, GroupFilter};
use crate::signal::DlqLink;

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
    /// The client could not authenticate or complete the TLS handshake (librdkafka
    /// retries those, so the request itself only times out).
    #[error("cluster {cluster}: {stage}: {fault}")]
    Client {
        cluster: String,
        stage: &'static str,
        fault: ClientFault,
    },
}

impl SampleError {
    /// A bounded label value for the error counter.
    pub fn kind(&self) -> &'static str {
        match self {
            SampleError::Client { fault, .. } => fault.kind.as_str(),
            SampleError::Admin { source: AdminError::Timeout { .. }, .. } => "timeout",
            SampleError::Admin {
                source:
                    AdminError::Kafka {
                        code: rdkafka::types::RDKafkaErrorCode::OperationTimedOut | rdkafka::types::RDKafkaErrorCode::RequestTimedOut,
                        ..
                    },
                ..
            } => {
                "timeout"
            }
            SampleError::Admin { stage, .. } => stage,
        }
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
    /// What librdkafka reported outside of results (authentication, TLS).
    events: std::sync::Arc<ClientEvents>,
    /// What it was built from (to rebuild it with rotated secrets).
    config: ClusterConfig,
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
        let events = ClientEvents::new(&cluster.name, &config);
        let admin = Admin::new(&config, KafkaContext { events: events.clone() })?;
        Ok(KafkaSampler {
            cluster: cluster.name.clone(),
            admin,
            filter: cluster.groups.clone(),
            timeout: cluster.sample_timeout,
            offset_fetch_concurrency: cluster.offset_fetch_concurrency,
            probe: Probe::new(config, cluster.probe_budget, cluster.probe_timeout, events.clone()),
            events,
            config: cluster.clone(),
        })
    }

    /// After an authentication failure: re-reads the secrets that come from files or
    /// variables and, if one changed, returns a sampler built with the new values (a
    /// Kubernetes secret rotated under a running agent). `None` when nothing changed or
    /// the sources cannot be read (logged without the value).
    pub fn with_reloaded_secrets(&self) -> Option<Result<KafkaSampler, AdminError>> {
        if self.config.secret_sources.is_empty() {
            return None;
        }
        match crate::config::secrets::reread(&self.config.properties, &self.config.secret_sources) {
            Ok(Some(properties)) => {
                let mut cfg = self.config.clone();
                cfg.properties = properties;
                Some(KafkaSampler::new(&cfg))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(cluster = %self.cluster, error = %e, "cannot re-read a secret");
                None
            }
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Takes one sample. Blocks for at most about the configured timeout.
    ///
    /// `dlq` is the configured DLQ matching and the links other sources discovered; the
    /// DLQ topics it resolves to are sampled too.
    pub fn sample(&self, dlq: &(DlqConfig, Vec<DlqLink>)) -> Result<KafkaSnapshot, SampleError> {
        self.admin.drain_events();
        let started = Instant::now();
        let deadline = started + self.timeout;
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        // A timeout is reported against the sample's budget, not the time that happened
        // to be left for the call: the same failure reads the same every time.
        let fail = |stage, source| {
            // An authentication or TLS failure since the last success is the cause of
            // whatever the request then reports (usually a timeout).
            self.admin.drain_events();
            if let Some(fault) = self.events.fault() {
                return SampleError::Client { cluster: self.cluster.clone(), stage, fault };
            }
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
        self.events.clear_fault();
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
