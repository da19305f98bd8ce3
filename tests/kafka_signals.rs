//! Kafka signals a remediation can act on, against the real broker of `stack/up`: the
//! time-lag probe never dies silently, is fair, reads past open transactions; committed
//! offsets outside the log are flagged; raw and derived series are published together;
//! the derive state follows the cluster.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// Commits `offsets[p]` for partition `p` as a non-member (the group stays Empty); the
/// broker accepts any offset, inside the log or not.
fn commit_offsets(bootstrap: &str, group: &str, topic: &str, offsets: &[i64]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(*o)).unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
}

fn config(port: u16, bootstrap: &str, group_regex: &str, cluster_extra: &str, extra: &str) -> String {
    // `cluster_extra` lands in the [[clusters]] table, right after its `groups` line.
    let tables = format!("{cluster_extra}\n\n[history]\nrate_window = \"5s\"\nstatus_window = \"5s\"\n{extra}");
    agent_config_with(port, bootstrap, group_regex, &tables)
}

/// The cluster target from `/api/v1/targets`.
fn cluster_target(agent: &Agent) -> serde_json::Value {
    let (status, body) = agent.get("/api/v1/targets");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let found = targets(&v).find(|t| t["kind"] == "kafka_cluster").cloned();
    found.unwrap_or_else(|| panic!("no kafka_cluster target in {v}"))
}

/// Every target of every source in an `/api/v1/targets` answer.
fn targets(v: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    v["sources"].as_array().into_iter().flatten().flat_map(|s| s["targets"].as_array().into_iter().flatten())
}

/// The cluster target's `detail`.
fn cluster_detail(agent: &Agent) -> serde_json::Value {
    cluster_target(agent)["detail"].clone()
}

fn group_target(agent: &Agent, group: &str) -> Option<serde_json::Value> {
    let (_, body) = agent.get("/api/v1/targets");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let found = targets(&v).find(|t| t["kind"] == "kafka_group" && t["name"] == group).cloned();
    found
}

#[test]
fn two_groups_at_different_offsets_of_one_partition_both_get_an_exact_probe_value() {
    let b = bootstrap();
    let topic = unique("dup-topic");
    let (a, g2) = (unique("dup-a"), unique("dup-b"));
    create_topic(&b, &topic, 1);
    let written = now_ms() - 200_000;
    produce(&b, &topic, &[10], Some(written));
    commit_offsets(&b, &a, &topic, &[2]);
    commit_offsets(&b, &g2, &topic, &[5]);
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &format!("^({a}|{g2})$"), "", ""));
    for g in [&a, &g2] {
        wait_until(Duration::from_secs(20), &format!("probe lag of {g}"), || {
            agent.fresh("lag_seconds", g, &[("method", "probe")]).is_some()
        });
        let s = agent.fresh("lag_seconds", g, &[("method", "probe")]).unwrap();
        let expected = s["last_time"].as_f64().unwrap() - written as f64 / 1000.0;
        let got = s["value"].as_f64().unwrap();
        assert!((got - expected).abs() <= 1.0, "{g}: {got}s vs {expected}s");
    }
    let detail = cluster_detail(&agent);
    assert!(detail["partial_error_causes"].get("probe_assign").is_none(), "{detail}");
    assert_eq!(cluster_target(&agent)["health"], "ok", "{detail}");
}

#[test]
fn a_small_group_gets_probe_values_while_a_big_busy_group_keeps_moving() {
    let b = bootstrap();
    let big_topic = unique("busy-topic");
    let small_topic = unique("quiet-topic");
    let (big, small) = (unique("busy-group"), unique("quiet-group"));
    create_topic(&b, &big_topic, 8);
    create_topic(&b, &small_topic, 1);
    produce(&b, &big_topic, &[2000; 8], Some(now_ms() - 600_000));
    produce(&b, &small_topic, &[5], Some(now_ms() - 60_000));
    commit_offsets(&b, &small, &small_topic, &[4]);
    // The big group commits a little further every 200 ms: its committed offsets (and so
    // the probe's cache keys) change every cycle while its lags stay the largest.
    let stop = Arc::new(AtomicBool::new(false));
    let mover = {
        let (b, big, topic, stop) = (b.clone(), big.clone(), big_topic.clone(), stop.clone());
        std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &b)
                .set("group.id", &big)
                .set("enable.auto.commit", "false")
                .create()
                .expect("consumer");
            let mut at = 0i64;
            while !stop.load(Ordering::Relaxed) && at < 1900 {
                at += 2;
                let mut tpl = TopicPartitionList::new();
                for p in 0..8 {
                    tpl.add_partition_offset(&topic, p, Offset::Offset(at)).unwrap();
                }
                consumer.commit(&tpl, CommitMode::Sync).expect("commit");
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &format!("^({big}|{small})$"), "probe_budget = 2", ""));
    let small_value = || agent.fresh("lag_seconds", &small, &[("method", "probe")]);
    // Before probing was fair, the budget went to the big group's larger lags every cycle.
    wait_until(Duration::from_secs(20), "probe lag of the small group", || small_value().is_some());
    let age = agent.fresh("probe_age_seconds", &small, &[]);
    assert!(value(age).is_some_and(|a| a >= 0.0), "the age of the probe value is exported");
    // Every partition of the big group is probed within a bounded number of cycles.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 8 && Instant::now() < deadline {
        for s in agent.signals(&format!("signal=lag_seconds&target={}", urlencode(&big))) {
            if s["quality"] == "fresh" && s["labels"]["method"] == "probe" {
                seen.insert(s["labels"]["partition"].as_str().unwrap_or("").to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    mover.join().unwrap();
    assert_eq!(seen.len(), 8, "partitions of the busy group with a probe value at some point: {seen:?}");
    // Coverage: lagging pairs and those without a value for their current offset.
    let m = agent.metrics();
    let lagging = m.get("streamguard_kafka_probe_lagging_partitions", &[("cluster", "local")]).expect("coverage gauge");
    let uncovered = m.get("streamguard_kafka_probe_uncovered_partitions", &[("cluster", "local")]).expect("coverage gauge");
    assert!(lagging >= 9.0 && uncovered <= lagging, "lagging {lagging}, uncovered {uncovered}");
}

#[test]
fn an_open_transaction_shows_as_the_last_stable_offset_and_does_not_block_the_probe() {
    let b = bootstrap();
    let topic = unique("txn-topic");
    let group = unique("txn-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[5], None);
    commit_offsets(&b, &group, &topic, &[5]);
    // An open transaction after the committed offset: 3 records, never committed.
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("transactional.id", unique("txn-id"))
        .set("transaction.timeout.ms", "120000")
        .create()
        .expect("transactional producer");
    producer.init_transactions(Duration::from_secs(30)).expect("init_transactions");
    producer.begin_transaction().expect("begin");
    let written = now_ms() - 30_000;
    for i in 0..3 {
        let payload = format!("open-{i}");
        producer.send(BaseRecord::<(), str>::to(&topic).partition(0).payload(&payload).timestamp(written)).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &format!("^{group}$"), "", ""));
    let t = topic.as_str();
    let part = [("topic", t), ("partition", "0")];
    wait_until(Duration::from_secs(20), "last stable offset", || agent.metrics().get("streamguard_kafka_partition_last_stable_offset", &part).is_some());
    let m = agent.metrics();
    assert_eq!(m.get("streamguard_kafka_partition_last_stable_offset", &part), Some(5.0));
    assert_eq!(m.get("streamguard_kafka_partition_log_end_offset", &part), Some(8.0));
    assert_eq!(m.get("streamguard_kafka_partition_open_transaction_offsets", &part), Some(3.0));
    // read_committed would wait for the transaction forever; the probe reads the record.
    wait_until(Duration::from_secs(20), "probe lag behind the open transaction", || {
        agent.fresh("lag_seconds", &group, &[("method", "probe")]).is_some()
    });
    let s = agent.fresh("lag_seconds", &group, &[("method", "probe")]).unwrap();
    let expected = s["last_time"].as_f64().unwrap() - written as f64 / 1000.0;
    assert!((s["value"].as_f64().unwrap() - expected).abs() <= 1.0, "{s}");
    let duration = cluster_detail(&agent)["duration_seconds"].as_f64().unwrap();
    assert!(duration < 0.9, "a sample took {duration}s of its 1 s budget");
    producer.abort_transaction(Duration::from_secs(30)).expect("abort");
}

#[test]
fn a_group_committed_on_a_transaction_marker_with_nothing_after_it_has_zero_time_lag() {
    let b = bootstrap();
    let topic = unique("marker-topic");
    let group = unique("marker-group");
    create_topic(&b, &topic, 1);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("transactional.id", unique("marker-id"))
        .create()
        .expect("transactional producer");
    producer.init_transactions(Duration::from_secs(30)).expect("init_transactions");
    producer.begin_transaction().expect("begin");
    for i in 0..3 {
        let payload = format!("r{i}");
        producer.send(BaseRecord::<(), str>::to(&topic).partition(0).payload(&payload)).expect("send");
    }
    producer.commit_transaction(Duration::from_secs(30)).expect("commit");
    // Records at 0, 1, 2; the commit marker at 3; log end 4. The group read every record
    // and committed 3: its offset lag is 1 (the marker), but nothing waits for it.
    commit_offsets(&b, &group, &topic, &[3]);
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &format!("^{group}$"), "", ""));
    wait_until(Duration::from_secs(20), "probe lag on the marker", || agent.fresh("lag_seconds", &group, &[("method", "probe")]).is_some());
    assert_eq!(value(agent.fresh("lag_offsets", &group, &[])), Some(1.0), "offset lag counts the marker, as Kafka's tool does");
    assert_eq!(value(agent.fresh("lag_seconds", &group, &[("method", "probe")])), Some(0.0));
    let oracle = kafka_consumer_groups_describe(&b, &group);
    assert_eq!(oracle[0].lag, Some(1), "{oracle:?}");
}

#[test]
fn a_probe_that_cannot_finish_is_reported_in_the_target_and_counted() {
    let b = bootstrap();
    let topic = unique("slowprobe-topic");
    let group = unique("slowprobe-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[10], None);
    commit_offsets(&b, &group, &topic, &[1]);
    let port = free_port();
    // One millisecond cannot fit an assignment and a fetch.
    let agent = Agent::start_with(port, &config(port, &b, &format!("^{group}$"), "probe_timeout = \"1ms\"", ""));
    let g = group.as_str();
    wait_until(Duration::from_secs(20), "probe timeouts counted", || {
        agent
            .metrics()
            .get("streamguard_sample_partial_errors_total", &[("source", "local"), ("cause", "probe_timeout")])
            .is_some_and(|v| v >= 1.0)
    });
    let target = cluster_target(&agent);
    assert_eq!(target["health"], "warn", "{target}");
    let errors = target["detail"]["partial_errors"].to_string();
    assert!(errors.contains("probe"), "{target}");
    assert!(agent.metrics().get("streamguard_kafka_group_lag_offsets", &[("group", g)]).is_some(), "offset lag is unaffected");
}

#[test]
fn a_commit_beyond_the_log_end_is_out_of_range_and_the_lag_table_matches_kafka() {
    let b = bootstrap();
    let topic = unique("beyond-topic");
    let group = unique("beyond-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[10], None);
    commit_offsets(&b, &group, &topic, &[50]);
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &format!("^{group}$"), "", ""));
    wait_until(Duration::from_secs(20), "out-of-range flag", || agent.fresh("offsets_out_of_range", &group, &[]).is_some());
    assert_eq!(value(agent.fresh("offsets_out_of_range", &group, &[])), Some(1.0));
    assert_eq!(value(agent.fresh("lag_offsets", &group, &[])), Some(0.0), "the metric never goes negative");
    assert_eq!(value(agent.fresh("lost_records", &group, &[])), Some(0.0));
    wait_until(Duration::from_secs(10), "status OUT_OF_RANGE", || {
        value(agent.fresh("group_status", &group, &[("status", "OUT_OF_RANGE")])) == Some(1.0)
    });
    assert_eq!(value(agent.fresh("group_status", &group, &[("status", "OK")])), Some(0.0));
    assert_eq!(group_target(&agent, &group).unwrap()["health"], "warn");

    // The table shows Kafka's own LAG: −40.
    let oracle = kafka_consumer_groups_describe(&b, &group);
    assert_eq!(oracle[0].lag, Some(-40), "{oracle:?}");
    let cfg = agent.config_path();
    let out = run(Command::new(bin()).args(["lag", "--group", &format!("^{group}$"), "--config"]).arg(&cfg));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = stdout.lines().find(|l| l.contains(&group)).expect("a row").split_whitespace().collect();
    assert_eq!(&row[7..11], ["0", "50", "10", "-40"], "{stdout}");
}

#[test]
fn records_deleted_before_the_group_read_them_are_lost_records_and_data_loss() {
    let b = bootstrap();
    let topic = unique("lost-topic");
    let group = unique("lost-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[20], None);
    commit_offsets(&b, &group, &topic, &[5]);
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &format!("^{group}$"), "", ""));
    wait_until(Duration::from_secs(20), "in range first", || value(agent.fresh("offsets_out_of_range", &group, &[])) == Some(0.0));
    assert_eq!(value(agent.fresh("group_lost_records", &group, &[])), Some(0.0));

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(12)).unwrap();
    let res = block_on(admin(&b).delete_records(&tpl, &rdkafka::admin::AdminOptions::new())).expect("delete_records");
    assert!(res.elements()[0].error().is_ok(), "{:?}", res.elements()[0].error());

    wait_until(Duration::from_secs(20), "lost records", || value(agent.fresh("lost_records", &group, &[])) == Some(7.0));
    assert_eq!(value(agent.fresh("offsets_out_of_range", &group, &[])), Some(1.0));
    wait_until(Duration::from_secs(10), "status DATA_LOSS", || {
        value(agent.fresh("group_status", &group, &[("status", "DATA_LOSS")])) == Some(1.0)
    });
    // Counted once, not once per cycle.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(value(agent.fresh("group_lost_records", &group, &[])), Some(7.0));
    let detail = &group_target(&agent, &group).unwrap()["detail"];
    assert_eq!(detail["lost_records"], 7, "{detail}");
}

#[test]
fn derived_series_are_published_with_the_raw_ones_never_missing_in_between() {
    let b = bootstrap();
    let topic = unique("atomic-topic");
    let group = unique("atomic-group");
    create_topic(&b, &topic, 40);
    produce(&b, &topic, &[3; 40], None);
    commit_offsets(&b, &group, &topic, &[1; 40]);
    let port = free_port();
    let body = config(port, &b, &format!("^{group}$"), "", "").replace("sample_interval = \"1s\"", "sample_interval = \"200ms\"").replace(
        "sample_timeout = \"1s\"",
        "sample_timeout = \"150ms\"",
    );
    let agent = Agent::start_with(port, &body);
    wait_until(Duration::from_secs(20), "group status", || agent.fresh("group_status", &group, &[("status", "OK")]).is_some());
    // A reader between the raw and the derived half of a sample would see the raw series
    // fresh and the derived ones missing. Read everything of the group in one request, as
    // fast as we can over at least 5 s (25 sample cycles) and 100 fresh reads. (A sample
    // that fails under load makes both stale, which is honest and skipped here.) The
    // count, not the machine's speed, ends the loop; the cap only stops a run that never
    // sees fresh data.
    let started = Instant::now();
    let cap = started + Duration::from_secs(120);
    let mut reads = 0;
    while (reads <= 100 || started.elapsed() < Duration::from_secs(5)) && Instant::now() < cap {
        let all = agent.signals(&format!("target={}", urlencode(&group)));
        let raw_fresh = all.iter().any(|s| s["signal"] == "group_members" && s["quality"] == "fresh");
        if !raw_fresh {
            continue;
        }
        let status: Vec<&serde_json::Value> = all.iter().filter(|s| s["signal"] == "group_status").collect();
        assert!(!status.is_empty(), "{all:?}");
        for s in status {
            assert_eq!(s["quality"], "fresh", "read {reads}: raw series fresh, derived {s}");
        }
        reads += 1;
    }
    assert!(reads > 100, "only {reads} fresh reads in {:?}", started.elapsed());
}

#[test]
fn the_derive_state_shrinks_back_after_a_thousand_groups_are_deleted() {
    let b = bootstrap();
    let topic = unique("churn-topic");
    let prefix = unique("churn");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[5], None);
    let groups: Vec<String> = (0..1000).map(|i| format!("{prefix}-{i}")).collect();
    // Deletes the groups even when an assertion fails, so a failed run does not leave a
    // thousand groups behind for the tests that watch every group.
    struct Cleanup<'a>(&'a str, &'a [String]);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let names: Vec<&str> = self.1.iter().map(String::as_str).collect();
            for chunk in names.chunks(200) {
                let _ = block_on(admin(self.0).delete_groups(chunk, &rdkafka::admin::AdminOptions::new()));
            }
        }
    }
    let _cleanup = Cleanup(&b, &groups);
    // Commit from a few threads: one client per group.
    std::thread::scope(|s| {
        for chunk in groups.chunks(250) {
            let (b, topic) = (&b, &topic);
            s.spawn(move || {
                for g in chunk {
                    commit_offsets(b, g, topic, &[2]);
                }
            });
        }
    });
    let port = free_port();
    // A thousand groups take more than a second to sample on this machine.
    let body = config(port, &b, &format!("^{prefix}-"), "", "retention = \"12s\"\n")
        .replace("sample_interval = \"1s\"", "sample_interval = \"3s\"")
        .replace("sample_timeout = \"1s\"", "sample_timeout = \"3s\"");
    let agent = Agent::start_with(port, &body);
    let tracked = |agent: &Agent| {
        let (_, body) = agent.get("/api/v1/targets");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let d = targets(&v).find(|t| t["kind"] == "kafka_cluster").map(|t| t["detail"]["derive_state"].clone()).unwrap_or_default();
        (d["groups"].as_u64(), d["partitions"].as_u64())
    };
    wait_until(Duration::from_secs(60), "1,000 groups tracked", || tracked(&agent) == (Some(1000), Some(1000)));

    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    for chunk in names.chunks(200) {
        let res = block_on(admin(&b).delete_groups(chunk, &rdkafka::admin::AdminOptions::new())).expect("delete_groups");
        assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    }
    // Partitions go with the snapshot; groups' counters after the grace (retention).
    wait_until(Duration::from_secs(40), "derive state back to empty", || tracked(&agent) == (Some(0), Some(0)));
    wait_until(Duration::from_secs(30), "their series dropped from the store", || {
        agent.signals("signal=group_members").iter().all(|s| !s["labels"]["group"].as_str().unwrap_or("").starts_with(&prefix))
    });
}
