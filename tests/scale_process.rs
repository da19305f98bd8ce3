//! The `process` scaling actuator against the real Kafka of `stack/up kafka`
//! (`$KAFKA_BOOTSTRAP`): a pool of real consumer processes (`examples/scale_consumer.rs`,
//! built by this test) in one consumer group. Nothing is mocked: group membership and
//! committed offsets are read from the broker.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;
use streamguard::scale::actuators::process::{ExitReason, PoolMetrics, ProcessConfig, ProcessPool};
use streamguard::scale::actuators::{Actuator, ScaleOutcome, ScaleRequest};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 4;

/// Builds the consumer example (the test binary does not build examples by itself).
fn consumer_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = run(Command::new(cargo).current_dir(repo_root()).args(["build", "--locked", "--example", "scale_consumer"]));
    assert!(out.status.success(), "building the scale_consumer example failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_streamguard")).parent().unwrap().join("examples/scale_consumer");
    assert!(exe.exists(), "{exe:?} missing after the build");
    exe
}

/// (state, member client ids) of the group, from the broker.
fn group(bootstrap: &str, group: &str) -> (String, Vec<String>) {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    // A coordinator still loading (fresh broker, new group) answers an error: ask again.
    let Ok(list) = c.fetch_group_list(Some(group), Duration::from_secs(10)) else { return ("Unknown".to_string(), Vec::new()) };
    match list.groups().first() {
        Some(g) => (g.state().to_string(), g.members().iter().map(|m| m.client_id().to_string()).collect()),
        None => ("Dead".to_string(), Vec::new()),
    }
}

/// Sum of the group's committed offsets on the topic (asked again while the
/// coordinator is busy).
fn committed(bootstrap: &str, group: &str, topic: &str) -> i64 {
    for _ in 0..20 {
        if let Some(n) = committed_once(bootstrap, group, topic) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("cannot read the committed offsets of {group}");
}

fn committed_once(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    Some(got.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o >= 0).sum())
}

/// Records/s committed over `secs`.
fn rate(bootstrap: &str, g: &str, topic: &str, secs: u64) -> f64 {
    let a = committed(bootstrap, g, topic);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let b = committed(bootstrap, g, topic);
    (b - a) as f64 / t.elapsed().as_secs_f64()
}

fn req(to: u32) -> ScaleRequest {
    ScaleRequest { target: "orders".into(), from: None, to, policy: "manual".into(), why: "test".into(), dry_run: false }
}

fn wait_members(bootstrap: &str, g: &str, n: usize, timeout: Duration) {
    wait_until(timeout, &format!("{n} members, Stable, in {g}"), || {
        let (state, members) = group(bootstrap, g);
        state == "Stable" && members.len() == n
    });
}

#[test]
fn a_process_pool_scales_real_consumers_in_and_out_restarts_a_killed_one_and_reports_every_exit() {
    let bootstrap = bootstrap();
    let exe = consumer_binary();
    let topic = unique("scale-proc");
    let g = unique("scale-proc-g");
    create_topic(&bootstrap, &topic, PARTITIONS);
    let total = 4000usize;
    produce(&bootstrap, &topic, &[total / 4; 4], None);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut cfg = ProcessConfig::new(vec![exe.display().to_string()], &g, &topic);
    cfg.env.insert("KAFKA_BOOTSTRAP".into(), bootstrap.clone());
    // 20 ms per record: one replica does ≤ 50 records/s.
    cfg.env.insert("SCALE_CONSUMER_DELAY_MS".into(), "20".into());
    cfg.restart_backoff = Duration::from_millis(200);
    cfg.stop_grace = Duration::from_secs(15);
    cfg.log_dir = Some(logs.path().to_path_buf());
    let metrics = PoolMetrics::default();
    let pool = ProcessPool::new("orders", cfg, metrics.clone()).unwrap();
    let cancel = CancellationToken::new();
    let supervisor = rt.spawn(pool.clone().supervise(cancel.clone()));
    let log = || std::fs::read_dir(logs.path()).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default()).collect::<Vec<_>>().join("\n");

    assert_eq!(rt.block_on(pool.scale_to(&req(1))).unwrap(), ScaleOutcome::Scaled { from: Some(0), to: 1 });
    wait_members(&bootstrap, &g, 1, Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "first commits", || committed(&bootstrap, &g, &topic) > 0);
    let one = rate(&bootstrap, &g, &topic, 6);

    assert_eq!(rt.block_on(pool.scale_to(&req(4))).unwrap(), ScaleOutcome::Scaled { from: Some(1), to: 4 });
    wait_members(&bootstrap, &g, 4, Duration::from_secs(60));
    let (_, members) = group(&bootstrap, &g);
    let mut ids = members.clone();
    ids.sort();
    assert_eq!(ids, ["scale-consumer-0", "scale-consumer-1", "scale-consumer-2", "scale-consumer-3"], "each replica has its index");
    let four = rate(&bootstrap, &g, &topic, 6);
    assert!(four > one * 1.8, "4 replicas on 4 partitions must consume faster: {one:.1}/s → {four:.1}/s\n{}", log());

    // A replica killed from outside: the exit is reported (status and metric) and the
    // replica restarted; the group gets back to 4 members.
    let victim = pool.status().pids[2].expect("replica 2 runs");
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    wait_until(Duration::from_secs(20), "the kill reported and replica 2 restarted", || {
        let s = pool.status();
        s.restarts_total == 1 && s.running == 4 && s.recent_exits.iter().any(|e| e.reason == ExitReason::Signaled && e.index == 2)
    });
    assert_eq!(metrics.exits.get_or_create(&vec![("target", "orders".into()), ("reason", "signaled".into())]).get(), 1);
    wait_members(&bootstrap, &g, 4, Duration::from_secs(60));

    // Scale in: the highest replicas get SIGTERM, commit, leave the group and exit 0.
    assert_eq!(rt.block_on(pool.scale_to(&req(1))).unwrap(), ScaleOutcome::Scaled { from: Some(4), to: 1 });
    let s = pool.status();
    let stopped: Vec<_> = s.recent_exits.iter().filter(|e| e.reason == ExitReason::Stopped).collect();
    assert_eq!(stopped.iter().map(|e| e.index).collect::<Vec<_>>(), [3, 2, 1]);
    assert!(stopped.iter().all(|e| e.detail == "exit status: 0"), "each stopped cleanly: {stopped:?}\n{}", log());
    wait_members(&bootstrap, &g, 1, Duration::from_secs(60));
    assert_eq!(group(&bootstrap, &g).1, ["scale-consumer-0"]);

    // The last replica drains the topic.
    wait_until(Duration::from_secs(120), "all records committed", || committed(&bootstrap, &g, &topic) == total as i64);

    cancel.cancel();
    rt.block_on(supervisor).unwrap();
    assert_eq!(pool.status().running, 0);
    wait_until(Duration::from_secs(30), "the group empty", || group(&bootstrap, &g).1.is_empty());
}
