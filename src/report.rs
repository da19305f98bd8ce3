//! `streamguard lag`: one sample of every cluster, printed as a table (like
//! `kafka-consumer-groups --describe --all-groups`) or as JSON.
//!
//! Rendering is pure (snapshots in, text out); [`sample_all`] is the only I/O. Data and
//! errors are kept apart: [`render_table`] is the table alone, [`error_lines`] the
//! failures, for the caller to print on stderr.
//!
//! A cluster whose sample fails is diagnosed ([`kafka_diagnose`]) so the error names the
//! cause in the same words on every run (`cannot reach 127.0.0.1:9092: connection
//! refused`, `127.0.0.1:8083 is not a Kafka broker` …); when every bootstrap server
//! looks fine the sampler's own error is kept.

use std::fmt::Write as _;

use regex::Regex;
use serde::Serialize;

use crate::config::{ClusterConfig, Config, DlqConfig};
use crate::sample::kafka::{KafkaSampler, KafkaSnapshot, SampleError};
use crate::sample::kafka_diagnose;
use crate::signal::DlqLink;

/// The outcome of sampling one cluster once.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub cluster: String,
    /// Set when the sample failed (`snapshot` is then absent): the diagnosed cause, or
    /// the sampler's error when no cause was found.
    pub error: Option<String>,
    /// A bounded name for `error`: a diagnosed cause (`connection_refused`, `timeout`,
    /// `unknown_host`, `not_kafka` …), else the failed step of the sample.
    pub error_kind: Option<&'static str>,
    #[serde(flatten)]
    pub snapshot: Option<KafkaSnapshot>,
}

impl ClusterReport {
    fn failed(cluster: String, error: String, kind: &'static str) -> ClusterReport {
        ClusterReport { cluster, error: Some(error), error_kind: Some(kind), snapshot: None }
    }
}

/// Samples every configured cluster once, concurrently.
pub async fn sample_all(config: &Config) -> Vec<ClusterReport> {
    let mut handles = Vec::new();
    for c in &config.clusters {
        let c = c.clone();
        let dlq = (config.dlq.clone(), Vec::new());
        handles.push((c.name.clone(), tokio::task::spawn_blocking(move || sample_one(&c, &dlq))));
    }
    let mut out = Vec::with_capacity(handles.len());
    for (cluster, h) in handles {
        match h.await {
            Ok(r) => out.push(r),
            Err(e) => out.push(ClusterReport::failed(cluster, format!("sampling task failed: {e}"), "internal")),
        }
    }
    out
}

/// One cluster, blocking: the sample, and the diagnosis if it failed.
fn sample_one(c: &ClusterConfig, dlq: &(DlqConfig, Vec<DlqLink>)) -> ClusterReport {
    let sampler = match KafkaSampler::new(c) {
        Ok(s) => s,
        // A client that cannot be created is a configuration problem, not the network's.
        Err(e) => return ClusterReport::failed(c.name.clone(), e.to_string(), "client"),
    };
    match sampler.sample(dlq) {
        Ok(s) => ClusterReport { cluster: c.name.clone(), error: None, error_kind: None, snapshot: Some(s) },
        // The client said why (authentication, TLS): no need to guess from the network.
        Err(e @ SampleError::Client { .. }) => ClusterReport::failed(c.name.clone(), sample_error(&e), e.kind()),
        Err(e) => match kafka_diagnose::diagnose(&c.bootstrap_servers, &c.properties, c.sample_timeout) {
            Some(cause) => ClusterReport::failed(c.name.clone(), cause.to_string(), cause.as_str()),
            None => ClusterReport::failed(c.name.clone(), sample_error(&e), e.kind()),
        },
    }
}

/// The sampler's error without its `cluster …:` prefix (the report names the cluster).
fn sample_error(e: &SampleError) -> String {
    match e {
        SampleError::Admin { stage, source, .. } => format!("{stage}: {source}"),
        SampleError::Client { stage, fault, .. } => format!("{stage}: {fault}"),
    }
}

/// Keeps only groups whose name matches `group`.
pub fn filter_groups(reports: &mut [ClusterReport], group: Option<&Regex>) {
    let Some(re) = group else { return };
    for r in reports {
        if let Some(s) = &mut r.snapshot {
            s.groups.retain(|g| re.is_match(&g.group));
        }
    }
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A fixed-width table, one row per (group, partition); unknown values print as `-`.
pub fn render_table(reports: &[ClusterReport]) -> String {
    let header = [
        "CLUSTER", "GROUP", "STATE", "TYPE", "MEMBERS", "TOPIC", "PARTITION", "LOG-START", "CURRENT-OFFSET", "LOG-END-OFFSET",
        "LAG", "CLIENT-ID",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in reports {
        let Some(s) = &r.snapshot else { continue };
        for g in &s.groups {
            let head = [r.cluster.clone(), g.group.clone(), g.state.as_str().to_string(), g.kind.as_str().to_string(), g.members.to_string()];
            if g.partitions.is_empty() {
                let mut row = head.to_vec();
                row.extend(std::iter::repeat_n("-".to_string(), header.len() - head.len()));
                rows.push(row);
            }
            for p in &g.partitions {
                let mut row = head.to_vec();
                row.extend([
                    p.topic.clone(),
                    p.partition.to_string(),
                    opt(p.log_start_offset),
                    opt(p.committed_offset),
                    opt(p.log_end_offset),
                    opt(p.tool_lag()),
                    p.client_id.clone().unwrap_or_else(|| "-".into()),
                ]);
                rows.push(row);
            }
        }
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", text.join(" ").trim_end());
    };
    line(&mut out, &mut header.iter().copied());
    for row in &rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// One line per failed cluster (`cluster local: cannot reach …`), then one per error
/// that did not fail its cluster's sample (a group or partition offsets that could not
/// be read); for stderr, never mixed into the table.
pub fn error_lines(reports: &[ClusterReport]) -> Vec<String> {
    let failed = reports.iter().filter_map(|r| Some(format!("cluster {}: {}", r.cluster, r.error.as_ref()?)));
    let partial = reports
        .iter()
        .flat_map(|r| r.snapshot.iter().flat_map(move |s| s.partial_errors.iter().map(move |e| format!("cluster {}: {e}", r.cluster))));
    failed.chain(partial).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::kafka_admin::{GroupListing, GroupState, GroupType, TopicPartition};
    use std::collections::HashMap;

    fn report() -> ClusterReport {
        let tp = TopicPartition { topic: "orders".into(), partition: 0 };
        let listing = GroupListing { group_id: "billing".into(), state: GroupState::Empty, kind: GroupType::Classic, simple: false };
        let committed = vec![("billing".to_string(), Ok(vec![(tp.clone(), Some(3)), (TopicPartition { topic: "orders".into(), partition: 1 }, None)]))];
        let ends: HashMap<_, _> = [(tp.clone(), Ok(10))].into_iter().collect();
        let s = crate::sample::kafka::build_snapshot("local", &[listing], &[], &committed, &HashMap::new(), &ends);
        ClusterReport { cluster: "local".into(), error: None, error_kind: None, snapshot: Some(s) }
    }

    #[test]
    fn table_shows_lag_and_dashes_for_unknown_values() {
        let t = render_table(&[report()]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("CLUSTER"));
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cols, ["local", "billing", "Empty", "classic", "0", "orders", "0", "-", "3", "10", "7", "-"]);
        let cols: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&cols[7..11], ["-", "-", "-", "-"], "no commit: no lag, never 0");
    }

    #[test]
    fn json_uses_null_for_unknown_and_reports_failed_clusters() {
        let failed = ClusterReport::failed("down".into(), "cannot reach 127.0.0.1:1: connection refused".into(), "connection_refused");
        let v = serde_json::to_value([report(), failed]).unwrap();
        assert_eq!(v[0]["groups"][0]["partitions"][0]["lag_offsets"], 7);
        assert!(v[0]["groups"][0]["partitions"][1]["lag_offsets"].is_null());
        assert!(v[0]["error"].is_null() && v[0]["error_kind"].is_null());
        assert_eq!(v[1]["error"], "cannot reach 127.0.0.1:1: connection refused");
        assert_eq!(v[1]["error_kind"], "connection_refused");
        assert!(v[1].get("groups").is_none());
    }

    #[test]
    fn the_table_holds_only_the_header_and_rows_and_errors_come_as_one_line_per_cluster() {
        let down = ClusterReport::failed("down".into(), "cannot reach 127.0.0.1:1: connection refused".into(), "connection_refused");
        let mut partial = report();
        if let Some(s) = &mut partial.snapshot {
            s.partial_errors.push("group billing: ListConsumerGroupOffsets timed out".into());
        }
        let reports = [partial, down];
        let table = render_table(&reports);
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(table.lines().all(|l| l.starts_with("CLUSTER") || l.starts_with("local ")), "{table}");
        assert_eq!(
            error_lines(&reports),
            [
                "cluster down: cannot reach 127.0.0.1:1: connection refused",
                "cluster local: group billing: ListConsumerGroupOffsets timed out",
            ]
        );
        assert!(error_lines(&[report()]).is_empty());
    }

    #[test]
    fn group_filter_keeps_matching_groups_only() {
        let mut r = [report()];
        filter_groups(&mut r, Some(&Regex::new("^nothing$").unwrap()));
        assert!(r[0].snapshot.as_ref().unwrap().groups.is_empty());
    }
}
