//! What a Kafka sample asks for and how its answers become a snapshot, shared by both
//! paths (librdkafka in `kafka`, the direct client in `kafka_direct`). Pure.
//!
//! - which partitions to query ([`partitions_to_query`]) and which topics a group
//!   consumes ([`consumed_topics`]),
//! - which DLQ topics could match ([`dlq_candidates`], so the direct path asks metadata
//!   for those names only) and which do ([`resolve_dlq`]),
//! - the raw answers of one sample ([`Raw`]) and their assembly ([`assemble`]) into the
//!   [`KafkaSnapshot`] the rest of the agent uses, so both paths give the same snapshot
//!   for the same answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::kafka_admin::{AdminError, Committed, GroupDescription, GroupListing, PartitionOffsetMap, TopicPartition};
use super::kafka_snapshot::{build_snapshot, KafkaSnapshot, PartitionOffsets, ResolvedDlq};
use crate::config::DlqConfig;
use crate::signal::DlqLink;

/// The answers of one sample, before assembly.
#[derive(Debug, Default)]
pub struct Raw {
    pub listings: Vec<GroupListing>,
    pub descriptions: Vec<GroupDescription>,
    pub committed: Vec<(String, Result<Vec<Committed>, AdminError>)>,
    pub dlqs: Vec<ResolvedDlq>,
    /// Every partition of the resolved DLQ topics.
    pub dlq_partitions: BTreeSet<TopicPartition>,
    /// Earliest, latest and last stable offsets.
    pub starts: PartitionOffsetMap,
    pub ends: PartitionOffsetMap,
    pub stable: PartitionOffsetMap,
}

/// Builds the snapshot from one sample's answers. Pure.
pub fn assemble(cluster: &str, raw: &Raw) -> KafkaSnapshot {
    let mut snapshot = build_snapshot(cluster, &raw.listings, &raw.descriptions, &raw.committed, &raw.starts, &raw.ends);
    let get = |m: &PartitionOffsetMap, tp: &TopicPartition| m.get(tp).and_then(|r| r.as_ref().ok().copied());
    for tp in &raw.dlq_partitions {
        let o = PartitionOffsets { log_start_offset: get(&raw.starts, tp), log_end_offset: get(&raw.ends, tp), last_stable_offset: None };
        snapshot.partitions.entry(tp.clone()).or_insert(o);
    }
    for (tp, o) in snapshot.partitions.iter_mut() {
        o.last_stable_offset = get(&raw.stable, tp);
    }
    for g in &mut snapshot.groups {
        for p in &mut g.partitions {
            p.last_stable_offset = get(&raw.stable, &TopicPartition { topic: p.topic.clone(), partition: p.partition });
        }
    }
    snapshot.dlq = raw.dlqs.clone();
    snapshot
}

/// Every partition of the resolved DLQ topics, by the partition counts in `topics`.
pub fn dlq_partitions(dlqs: &[ResolvedDlq], topics: &BTreeMap<String, i32>) -> BTreeSet<TopicPartition> {
    dlqs.iter()
        .flat_map(|d| (0..topics.get(&d.dlq_topic).copied().unwrap_or(0)).map(|p| TopicPartition { topic: d.dlq_topic.clone(), partition: p }))
        .collect()
}

/// Every topic name [`resolve_dlq`] could match for these inputs: asking metadata for
/// these (and the consumed topics) gives the same resolution as asking for all topics.
pub fn dlq_candidates(cluster: &str, config: &DlqConfig, links: &[DlqLink], consumed: &BTreeSet<(String, String)>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.extend(config.topics.iter().filter(|m| m.cluster.as_deref().is_none_or(|c| c == cluster)).map(|m| m.dlq_topic.clone()));
    out.extend(links.iter().map(|l| l.dlq_topic.clone()));
    for (g, t) in consumed {
        for p in &config.patterns {
            out.insert(p.replace("{topic}", t).replace("{group}", g));
        }
    }
    out
}

/// (group, topic) pairs some group consumes.
pub fn consumed_topics(
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
pub fn failed_partitions(offsets: &[HashMap<TopicPartition, Result<i64, AdminError>>]) -> Vec<TopicPartition> {
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

    #[test]
    fn asking_metadata_for_the_dlq_candidates_only_resolves_the_same_dlqs_as_asking_for_every_topic() {
        let all: BTreeMap<String, i32> =
            ["orders", "orders.dlq", "failed-payments", "payments", "sink-dlq", "dlq-billing", "unrelated", "x"].iter().map(|t| (t.to_string(), 2)).collect();
        let config = DlqConfig {
            patterns: crate::config::DEFAULT_DLQ_PATTERNS.iter().map(|p| p.to_string()).collect(),
            topics: vec![crate::config::DlqMapping { cluster: None, dlq_topic: "failed-payments".into(), source_topic: "payments".into(), group: None }],
        };
        let links = vec![DlqLink { dlq_topic: "sink-dlq".into(), source_topics: vec!["orders".into()], group: "connect-sink".into(), origin: "connect:l/s".into() }];
        let used = consumed(&[("app", "orders"), ("billing", "invoices"), ("pay", "payments")]);
        let mut asked = dlq_candidates("c", &config, &links, &used);
        asked.extend(used.iter().map(|(_, t)| t.clone()));
        assert!(!asked.contains("unrelated") && !asked.contains("x"), "{asked:?}");
        let known: BTreeMap<String, i32> = all.iter().filter(|(t, _)| asked.contains(*t)).map(|(t, n)| (t.clone(), *n)).collect();
        let full = resolve_dlq("c", &config, &links, &used, &all);
        assert!(!full.is_empty());
        assert_eq!(resolve_dlq("c", &config, &links, &used, &known), full);
        assert_eq!(dlq_partitions(&full, &known), dlq_partitions(&full, &all));
    }
}
