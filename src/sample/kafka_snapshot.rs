//! The model of one Kafka sample: per group and partition, committed and log offsets,
//! lag, where the commit lies relative to the log, and what the time-lag probe knows.
//!
//! [`build_snapshot`] turns the raw admin answers into it, purely: lag per partition is
//! `log_end − committed`, a partition with no committed offset has *no* lag (`None`),
//! never 0, and a committed offset outside the log (beyond its end after a truncation,
//! or below its start after retention deleted unread records) is flagged per partition,
//! never hidden behind a lag of 0.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use serde::Serialize;

use super::kafka_admin::{AdminError, Committed, GroupDescription, GroupListing, GroupState, GroupType, TopicPartition};
use crate::signal::{Batch, Detail, Observation, SourceSample, TargetInfo};

/// Bounded causes of partial errors (label values of the error counter).
pub const PARTIAL_CAUSES: [&str; 7] =
    ["describe_group", "group_offsets", "partition_offsets", "probe_consumer", "probe_assign", "probe_timeout", "probe_fetch"];

/// What the probe learned about one (partition, offset).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProbeValue {
    /// The first data record at or after the offset, with its timestamp.
    Record { timestamp_ms: i64, read_at: SystemTime },
    /// No data record at or after the offset up to the log end: only transaction
    /// markers remain, so nothing is waiting to be consumed. Never cached (a record
    /// may arrive next).
    NoRecord { read_at: SystemTime },
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
    /// Which client took the sample: `direct` or `librdkafka` (see `kafka::KafkaSampler`).
    pub sampler: &'static str,
    /// Why `librdkafka` serves a cluster whose `sampler` is `auto`; `None` otherwise.
    pub sampler_note: Option<String>,
    /// librdkafka clients the sampler holds (admin client, probe consumer); `None` when
    /// unknown (a snapshot not taken by `kafka::KafkaSampler`).
    pub librdkafka_clients: Option<u32>,
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

    /// The raw signals of this sample, as owned observations (tests and tools; the
    /// agent stores [`KafkaSnapshot::batch`]).
    pub fn observations(&self) -> Vec<Observation> {
        self.batch().to_observations()
    }

    /// The raw signals of this sample, compact. Unknown values produce no observation.
    pub fn batch(&self) -> Batch {
        let c = self.cluster.as_str();
        let (rows, words) = self.batch_size();
        let mut out = Batch::with_capacity(rows, words);
        out.push("groups", &[("cluster", c)], self.groups.len() as f64);
        out.push("sampler_info", &[("cluster", c), ("path", self.sampler)], 1.0);
        if let Some(n) = self.librdkafka_clients {
            out.push("librdkafka_clients", &[("cluster", c)], f64::from(n));
        }
        for (tp, o) in &self.partitions {
            let p = tp.partition.to_string();
            let l = [("cluster", c), ("topic", tp.topic.as_str()), ("partition", p.as_str())];
            if let Some(v) = o.log_end_offset {
                out.push("log_end_offset", &l, v as f64);
            }
            if let Some(v) = o.log_start_offset {
                out.push("log_start_offset", &l, v as f64);
            }
            if let Some(v) = o.last_stable_offset {
                out.push("last_stable_offset", &l, v as f64);
                if let Some(end) = o.log_end_offset {
                    out.push("open_transaction_offsets", &l, (end - v).max(0) as f64);
                }
            }
        }
        for g in &self.groups {
            let gl = [("cluster", c), ("group", g.group.as_str())];
            for st in GroupState::ALL {
                out.push("group_state", &[gl[0], gl[1], ("state", st.as_str())], f64::from(u8::from(st == g.state)));
            }
            out.push("group_members", &gl, f64::from(g.members));
            out.push("group_info", &[gl[0], gl[1], ("type", g.kind.as_str())], 1.0);
            if g.error.is_some() {
                // This group's offsets are unknown this cycle: no lag series at all.
                continue;
            }
            out.push("group_uncommitted_partitions", &gl, f64::from(g.uncommitted_partitions));
            if let Some(v) = g.lag_offsets {
                out.push("group_lag_offsets", &gl, v as f64);
            }
            for (topic, (sum, max)) in g.topic_lags() {
                let l = [gl[0], gl[1], ("topic", topic)];
                out.push("group_topic_lag_offsets", &l, sum as f64);
                out.push("group_topic_max_lag_offsets", &l, max as f64);
            }
            for p in &g.partitions {
                let part = p.partition.to_string();
                let l = [gl[0], gl[1], ("topic", p.topic.as_str()), ("partition", part.as_str())];
                out.push("has_committed_offset", &l, f64::from(u8::from(p.committed_offset.is_some())));
                if let Some(v) = p.committed_offset {
                    out.push("committed_offset", &l, v as f64);
                }
                if let Some(v) = p.lag_offsets {
                    out.push("lag_offsets", &l, v as f64);
                }
                if let Some(v) = p.out_of_range {
                    out.push("offsets_out_of_range", &l, f64::from(u8::from(v)));
                }
                if let Some(v) = p.lost_records {
                    out.push("lost_records", &l, v as f64);
                }
            }
        }
        out
    }

    /// At least the rows and key ids [`KafkaSnapshot::batch`] pushes (an upper bound:
    /// every optional value counted, a group's topics counted as the runs of its
    /// partitions' topics).
    fn batch_size(&self) -> (usize, usize) {
        // (rows, ids per row): a key of n labels is 1 + 2n ids.
        let mut rows = 3;
        let mut words = 3 + 5 + 3;
        rows += 4 * self.partitions.len();
        words += 4 * 7 * self.partitions.len();
        for g in &self.groups {
            let topics = g.partitions.windows(2).filter(|w| w[0].topic != w[1].topic).count() + usize::from(!g.partitions.is_empty());
            rows += GroupState::ALL.len() + 5 + 2 * topics + 5 * g.partitions.len();
            words += 7 * GroupState::ALL.len() + 5 + 7 + 5 + 5 + 2 * 7 * topics + 5 * 9 * g.partitions.len();
        }
        (rows, words)
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
                "sampler": self.sampler,
                "sampler_note": self.sampler_note,
                "librdkafka_clients": self.librdkafka_clients,
            }).into(),
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
                detail: Detail::text(&GroupDetail {
                    error: g.error.as_deref(),
                    lag_offsets: g.lag_offsets,
                    lost_records: g.partitions.iter().filter_map(|p| p.lost_records).sum::<i64>(),
                    members: g.members,
                    offsets_out_of_range: g.partitions.iter().filter(|p| p.out_of_range == Some(true)).count(),
                    state: g.state,
                    kind: g.kind,
                    uncommitted_partitions: g.uncommitted_partitions,
                }),
            });
        }
        out
    }

    /// Both, as one source sample.
    pub fn to_sample(&self) -> SourceSample {
        SourceSample { batch: self.batch(), targets: self.targets(), ..SourceSample::default() }
    }
}

/// A consumer group target's detail, written as JSON text (20,000 groups' JSON maps
/// were 25 MB). Fields in name order, as the map wrote them.
#[derive(Serialize)]
struct GroupDetail<'a> {
    error: Option<&'a str>,
    lag_offsets: Option<i64>,
    lost_records: i64,
    members: u32,
    offsets_out_of_range: usize,
    state: GroupState,
    #[serde(rename = "type")]
    kind: GroupType,
    uncommitted_partitions: u32,
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
        sampler: "librdkafka",
        sampler_note: None,
        librdkafka_clients: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn the_batch_is_reserved_once_and_never_grows() {
        // Topics interleaved (a, b, a): runs over-count them, never under-count.
        let parts = |g: &str| (g.to_string(), Ok(vec![(tp("a", 0), Some(1)), (tp("b", 0), Some(2)), (tp("a", 1), None)]));
        let committed = vec![parts("g1"), parts("g2"), ("g3".to_string(), Ok(vec![]))];
        let ends: HashMap<_, _> = [(tp("a", 0), Ok(5)), (tp("a", 1), Ok(10)), (tp("b", 0), Ok(3))].into_iter().collect();
        let starts: HashMap<_, _> = [(tp("a", 0), Ok(0)), (tp("a", 1), Ok(20)), (tp("b", 0), Ok(0))].into_iter().collect();
        let mut s = build_snapshot("c", &[listing("g1"), listing("g2"), listing("g3")], &[], &committed, &starts, &ends);
        s.librdkafka_clients = Some(1);
        for o in s.partitions.values_mut() {
            o.last_stable_offset = o.log_end_offset;
        }
        let b = s.batch();
        assert!(b.len() > 30, "a real batch: {} rows", b.len());
        assert_eq!(b.capacity(), s.batch_size(), "pushing past the reserved size grew a buffer");
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

    /// A group's detail is kept as JSON text, and the API shows the same fields and
    /// values the JSON map had (text written in the map's key order).
    #[test]
    fn a_group_detail_is_json_text_with_every_field() {
        let committed = vec![("g".to_string(), Ok(vec![(tp("t", 0), Some(3)), (tp("t", 1), Some(9)), (tp("t", 2), None)]))];
        let ends: HashMap<_, _> = (0..3).map(|p| (tp("t", p), Ok(10))).collect();
        let starts: HashMap<_, _> = (0..3).map(|p| (tp("t", p), Ok(8))).collect();
        let s = build_snapshot("c", &[listing("g")], &[], &committed, &starts, &ends);
        let group = &s.targets()[1];
        assert!(matches!(group.detail, Detail::Text(_)), "{:?}", group.detail);
        let expected = serde_json::json!({
            "error": null, "lag_offsets": 8, "lost_records": 5, "members": 0, "offsets_out_of_range": 1,
            "state": "Empty", "type": "classic", "uncommitted_partitions": 1,
        });
        assert_eq!(*group.detail.json(), expected);
        assert_eq!(serde_json::to_string(&group.detail).unwrap(), serde_json::to_string(&expected).unwrap());
        assert_eq!(group.health, "warn");
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
        assert_eq!(cluster.detail.json()["partial_errors"].as_array().map(Vec::len), Some(3));
    }

}
