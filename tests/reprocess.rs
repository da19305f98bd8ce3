//! Reprocessing against the real stack (`stack/up kafka`): the real `streamguard offsets`
//! CLI against the real broker, counted with real consumers, the audit log read back.
//!
//! (b) a rewind to a timestamp replays exactly the records produced since then;
//! (c) a group with a live member (classic and KIP-848) is never committed to: the
//!     procedure waits for Empty, gives up at its deadline, resumes and says why;
//! (d) a rewind beyond the blast-radius limits is refused before anything is paused.
//!
//! Pause and resume are real shell commands given to the CLI; in (c) and (d) they only
//! touch marker files, so the test sees whether (and when) they ran.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files { dir: tempfile::tempdir().unwrap() }
    }
    fn journal(&self) -> PathBuf {
        self.dir.path().join("offsets.journal")
    }
    fn audit(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }
    fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn audit_records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit()).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

fn offsets(args: &[&str], files: &Files) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("offsets").args(args).arg("--bootstrap-servers").arg(bootstrap());
    if args[0] != "plan" {
        cmd.arg("--journal").arg(files.journal()).arg("--audit").arg(files.audit());
    }
    let out = run(&mut cmd);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The group's committed offsets, by partition, read as a non-member.
fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap()).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(20)).unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect()
}

/// Reads everything from `from[p]` to the end of each partition: (partition, offset, timestamp).
fn read_from(topic: &str, from: &[i64]) -> Vec<(i32, i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("reader"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, o) in from.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(*o)).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut eof = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while eof < from.len() {
        assert!(std::time::Instant::now() < deadline, "timed out reading {topic}");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((m.partition(), m.offset(), m.timestamp().to_millis().unwrap())),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
    out
}

fn marker_cmds(files: &Files) -> (String, String) {
    (format!("touch {}", files.marker("paused").display()), format!("touch {}", files.marker("resumed").display()))
}

fn exists(p: &Path) -> bool {
    p.exists()
}

#[test]
fn a_rewind_beyond_the_blast_radius_is_refused_before_anything_is_paused() {
    let (topic, group) = (unique("rp-limit"), unique("rp-limit-g"));
    create_topic(&bootstrap(), &topic, 2);
    produce(&bootstrap(), &topic, &[30, 30], None);
    consume_and_commit(&bootstrap(), &group, &topic, &[30, 30]);
    let files = Files::new();
    let (pause, resume) = marker_cmds(&files);
    let (code, out, err) = offsets(&["apply", "--group", &group, "--to-earliest", "--max-replayed", "59", "--pause-cmd", &pause, "--resume-cmd", &resume], &files);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("REFUSED (max_replayed): 60 records would be replayed, the limit is 59"), "{out}");
    assert!(!exists(&files.marker("paused")), "the pause command ran");
    assert!(!exists(&files.marker("resumed")));
    assert_eq!(committed(&group, &topic, 2), [Some(30), Some(30)]);
    let audit = files.audit_records();
    let plan = audit.iter().find(|r| r["kind"] == "offsets_plan").expect("plan audited");
    assert_eq!(plan["refused"], true);
    assert_eq!(plan["preview"]["replayed"], 60);
    let end = audit.iter().find(|r| r["kind"] == "run").expect("end audited");
    assert_eq!(end["end"], "aborted");
    assert!(end["reason"].as_str().unwrap().starts_with("refused before anything was paused"), "{end}");
    // No step but the plan was ever started.
    assert!(audit.iter().filter(|r| r["kind"] == "step").all(|r| r["action"] == "plan"), "{audit:?}");
    // Within the limit, the same move is accepted (the group is idle: nothing to pause).
    let (code, out, err) = offsets(&["apply", "--group", &group, "--to-earliest", "--max-replayed", "60", "--verify-deadline", "5s"], &files);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(committed(&group, &topic, 2), [Some(0), Some(0)]);
}

#[test]
fn a_group_with_a_live_member_is_never_committed_to_and_the_audit_says_why() {
    for protocol in ["classic", "consumer"] {
        let (topic, group) = (unique("rp-live"), unique("rp-live-g"));
        create_topic(&bootstrap(), &topic, 1);
        produce(&bootstrap(), &topic, &[20], None);
        consume_and_commit(&bootstrap(), &group, &topic, &[20]);
        let member = Member::join(&bootstrap(), &group, &topic, protocol);
        wait_until(Duration::from_secs(60), "the member joined", || members(&group) > 0);
        let files = Files::new();
        // The pause command does not stop the member (a misconfigured pause).
        let (pause, resume) = marker_cmds(&files);
        let (code, out, err) = offsets(&["apply", "--group", &group, "--to-earliest", "--empty-deadline", "4s", "--pause-cmd", &pause, "--resume-cmd", &resume], &files);
        assert_eq!(code, 1, "{protocol}: {out}\n{err}");
        assert!(exists(&files.marker("paused")) && exists(&files.marker("resumed")), "{protocol}: paused, then resumed on timeout");
        let audit = files.audit_records();
        let end = audit.iter().find(|r| r["kind"] == "run").expect("end audited");
        assert_eq!(end["end"], "aborted", "{protocol}: {end}");
        let reason = end["reason"].as_str().unwrap();
        assert!(reason.contains("wait-empty failed: not Empty within 4s") && reason.contains("with 1 members"), "{protocol}: {reason}");
        assert!(reason.contains("the old offsets are unchanged"), "{protocol}: {reason}");
        assert!(audit.iter().all(|r| r["action"] != "commit"), "{protocol}: the commit step never ran: {audit:?}");
        assert_eq!(committed(&group, &topic, 1), [Some(20)], "{protocol}");
        drop(member);
    }
}

/// Members of `group` (DescribeConsumerGroups: sees classic and KIP-848 groups).
fn members(group: &str) -> usize {
    let admin = streamguard::sample::kafka_admin::Admin::new(&streamguard::sample::kafka::client_config(&bootstrap(), &Default::default())).unwrap();
    admin.describe_groups(&[group.to_string()], Duration::from_secs(10)).ok().and_then(|d| d.into_iter().next()).map_or(0, |d| d.members.len())
}

#[test]
fn a_rewind_to_a_timestamp_replays_exactly_the_records_produced_since_then() {
    let (topic, group) = (unique("rp-time"), unique("rp-time-g"));
    create_topic(&bootstrap(), &topic, 3);
    let t0 = now_ms() - 3_600_000;
    let t1 = t0 + 600_000;
    // 3 partitions: [10, 7, 0] records at t0, then [5, 0, 8] at t1.
    produce(&bootstrap(), &topic, &[10, 7, 0], Some(t0));
    produce(&bootstrap(), &topic, &[5, 0, 8], Some(t1));
    consume_and_commit(&bootstrap(), &group, &topic, &[15, 7, 8]);
    let since = t0 + 1;
    let files = Files::new();
    // The preview changes nothing and predicts the count.
    let (code, out, err) = offsets(&["plan", "--group", &group, "--to-timestamp", &since.to_string(), "--json"], &files);
    assert_eq!(code, 0, "{out}\n{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["replayed"], 13, "{p}");
    assert_eq!(committed(&group, &topic, 3), [Some(15), Some(7), Some(8)]);
    // The datetime form of the same preview.
    let dt = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(since as u64)).to_string();
    let (code, out, _) = offsets(&["plan", "--group", &group, "--to-datetime", &dt, "--json"], &files);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["replayed"], 13);
    let (code, out, err) = offsets(&["apply", "--group", &group, "--to-timestamp", &since.to_string(), "--verify-deadline", "5s"], &files);
    assert_eq!(code, 0, "{out}\n{err}");
    let now = committed(&group, &topic, 3);
    assert_eq!(now, [Some(10), Some(7), Some(0)]);
    let replayed = read_from(&topic, &now.iter().map(|o| o.unwrap()).collect::<Vec<_>>());
    assert_eq!(replayed.len(), 13);
    assert!(replayed.iter().all(|(_, _, ts)| *ts >= since), "{replayed:?}");
    // Every record at or after the time, on every partition, is replayed: count by timestamp.
    let all = read_from(&topic, &[0, 0, 0]);
    assert_eq!(all.iter().filter(|(_, _, ts)| *ts >= since).count(), replayed.len());
    let audit = files.audit_records();
    let steps: Vec<&str> = audit.iter().filter(|r| r["kind"] == "step").map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(steps, ["pause", "wait-empty", "dlq-copy", "commit", "resume", "verify"], "{audit:?}");
    assert_eq!(audit.iter().find(|r| r["kind"] == "run").unwrap()["end"], "succeeded");
}
