//! `streamguard lag`: one sample of every cluster, printed as a table (like
//! `kafka-consumer-groups --describe --all-groups`) or as JSON.
//!
//! Rendering is pure (snapshots in, text out); [`sample_all`] is the only I/O.

use std::fmt::Write as _;

use regex::Regex;
use serde::Serialize;

use crate::config::Config;
use crate::sample::kafka::{KafkaSampler, KafkaSnapshot};

/// The outcome of sampling one cluster once.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub cluster: String,
    /// Set when the sample failed; `snapshot` is then absent.
    pub error: Option<String>,
    #[serde(flatten)]
    pub snapshot: Option<KafkaSnapshot>,
}

/// Samples every configured cluster once, concurrently.
pub async fn sample_all(config: &Config) -> Vec<ClusterReport> {
    let mut handles = Vec::new();
    for c in &config.clusters {
        let c = c.clone();
        let dlq = (config.dlq.clone(), Vec::new());
        handles.push(tokio::task::spawn_blocking(move || {
            let result =
                KafkaSampler::new(&c).map_err(|e| e.to_string()).and_then(|s| s.sample(&dlq).map_err(|e| e.to_string()));
            match result {
                Ok(s) => ClusterReport { cluster: c.name, error: None, snapshot: Some(s) },
                Err(e) => ClusterReport { cluster: c.name, error: Some(e), snapshot: None },
            }
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(r) => out.push(r),
            Err(e) => out.push(ClusterReport { cluster: "?".into(), error: Some(e.to_string()), snapshot: None }),
        }
    }
    out
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
    let mut errors = String::new();
    for r in reports {
        if let Some(e) = &r.error {
            let _ = writeln!(errors, "cluster {}: sample failed: {e}", r.cluster);
        }
        let Some(s) = &r.snapshot else { continue };
        for g in &s.groups {
            let head = [r.cluster.clone(), g.group.clone(), g.state.as_str().to_string(), g.kind.as_str().to_string(), g.members.to_string()];
            if let Some(e) = &g.error {
                let _ = writeln!(errors, "cluster {} group {}: {e}", r.cluster, g.group);
            }
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
    out.push_str(&errors);
    out
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
        ClusterReport { cluster: "local".into(), error: None, snapshot: Some(s) }
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
        let failed = ClusterReport { cluster: "down".into(), error: Some("timed out".into()), snapshot: None };
        let v = serde_json::to_value([report(), failed]).unwrap();
        assert_eq!(v[0]["groups"][0]["partitions"][0]["lag_offsets"], 7);
        assert!(v[0]["groups"][0]["partitions"][1]["lag_offsets"].is_null());
        assert_eq!(v[1]["error"], "timed out");
        assert!(v[1].get("groups").is_none());
    }

    #[test]
    fn group_filter_keeps_matching_groups_only() {
        let mut r = [report()];
        filter_groups(&mut r, Some(&Regex::new("^nothing$").unwrap()));
        assert!(r[0].snapshot.as_ref().unwrap().groups.is_empty());
    }
}
