//! Helpers of the reprocessing tests (`tests/reprocess*.rs`): a test's files (journal,
//! audit, markers), the `streamguard offsets` CLI, the group's committed offsets and
//! members read as a non-member, the example consumers built on demand.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::{bin, bootstrap, repo_root, run};

pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Files {
        Files { dir: tempfile::tempdir().unwrap() }
    }
    pub fn journal(&self) -> PathBuf {
        self.dir.path().join("offsets.journal")
    }
    pub fn audit(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }
    pub fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn audit_records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit()).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

pub fn offsets(args: &[&str], files: &Files) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("offsets").args(args).arg("--bootstrap-servers").arg(bootstrap());
    if args[0] != "plan" {
        cmd.arg("--journal").arg(files.journal()).arg("--audit").arg(files.audit());
    }
    let out = run(&mut cmd);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The group's committed offsets, by partition, read as a non-member.
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
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

/// Members of `group` (DescribeConsumerGroups: sees classic and KIP-848 groups).
pub fn members(group: &str) -> usize {
    let admin = streamguard::sample::kafka_admin::Admin::for_cluster("test", &streamguard::sample::kafka::client_config(&bootstrap(), &Default::default())).unwrap();
    admin.describe_groups(&[group.to_string()], Duration::from_secs(10)).ok().and_then(|d| d.into_iter().next()).map_or(0, |d| d.members.len())
}


/// Builds the example `name` (once per test binary in practice: cargo is incremental).
pub fn consumer_binary(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = run(Command::new(cargo).current_dir(repo_root()).args(["build", "--locked", "--example", name]));
    assert!(out.status.success(), "building the {name} example failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let exe = PathBuf::from(bin()).parent().unwrap().join("examples").join(name);
    assert!(exe.exists(), "{exe:?} missing after the build");
    exe
}

