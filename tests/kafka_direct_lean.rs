//! The direct path holds nothing it does not use, on the real broker of `stack/up`:
//! - no librdkafka client (no `rdk:*` threads in the agent process, the metric
//!   `streamguard_kafka_librdkafka_clients` and the target's `librdkafka_clients` at 0)
//!   while the direct client samples, and one as soon as librdkafka has to;
//! - group descriptions (classic and KIP-848) are cached while the group stays Stable,
//!   and a membership change still reaches the sampler: at the next sample when it saw
//!   the group rebalance, within the refresh age when the rebalance fell between two
//!   samples (members, state, assignment).

mod common;

use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use streamguard::sample::kafka::{KafkaSampler, KafkaSnapshot};

/// Threads librdkafka started in process `pid` (it names them `rdk:main`,
/// `rdk:broker…`, `rdk:bg`).
fn librdkafka_threads(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/<pid>/task");
    tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok()).filter(|c| c.starts_with("rdk:")).count()
}

fn target_detail(agent: &Agent) -> serde_json::Value {
    let (_, body) = agent.get("/api/v1/targets");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["targets"].as_array().into_iter().flatten())
        .find(|t| t["kind"] == "kafka_cluster")
        .map(|t| t["detail"].clone())
        .unwrap_or_else(|| panic!("no cluster target in {v}"))
}

#[test]
fn the_direct_path_makes_no_librdkafka_client_and_a_fallback_makes_one() {
    let b = bootstrap();
    let group = unique("lean-group");
    let topic = unique("lean-topic");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[4], None);
    commit_offsets(&b, &group, &topic, &[(0, 1)]);
    for (sampler, extra, path, clients) in [
        ("direct", "", "direct", 0.0),
        ("auto", "", "direct", 0.0),
        // A property only librdkafka honours: auto falls back, and librdkafka needs its client.
        ("auto", "\n[clusters.properties]\n\"message.max.bytes\" = \"2000000\"\n", "librdkafka", 1.0),
    ] {
        let port = free_port();
        let cfg = format!(
            "listen = \"127.0.0.1:{port}\"\nsample_interval = \"1s\"\nsample_timeout = \"1s\"\n[[clusters]]\nname = \"local\"\nbootstrap_servers = \"{b}\"\nsampler = \"{sampler}\"\nprobe_budget = 0\n[clusters.groups]\ninclude = [\"^{group}$\"]\n{extra}"
        );
        let agent = Agent::start_with(port, &cfg);
        wait_until(Duration::from_secs(30), "group lag", || agent.metrics().get("streamguard_kafka_group_lag_offsets", &[("group", group.as_str())]) == Some(3.0));
        // A few more cycles, so a client made by any of them would show.
        let m = agent.metrics();
        let cycles = m.get("streamguard_samples_total", &[("source", "local")]).unwrap_or(0.0);
        wait_until(Duration::from_secs(30), "three more samples", || agent.metrics().get("streamguard_samples_total", &[("source", "local")]).unwrap_or(0.0) >= cycles + 3.0);
        let m = agent.metrics();
        assert_eq!(m.get("streamguard_kafka_sampler_info", &[("cluster", "local"), ("path", path)]), Some(1.0), "{sampler}{extra}");
        assert_eq!(m.get("streamguard_kafka_librdkafka_clients", &[("cluster", "local")]), Some(clients), "{sampler}{extra}");
        assert_eq!(target_detail(&agent)["librdkafka_clients"], clients as u64, "{sampler}{extra}");
        let threads = librdkafka_threads(agent.child.id());
        if clients == 0.0 {
            assert_eq!(threads, 0, "{sampler}: no librdkafka thread while the direct client samples");
        } else {
            assert!(threads > 0, "the fallback's admin client runs librdkafka threads");
        }
    }
}

/// A classic group member that polls only when told to (a member that does not poll
/// keeps a rebalance waiting for it, so the test sees the state it wants).
struct Polled {
    consumer: BaseConsumer,
}

impl Polled {
    fn join(bootstrap: &str, group: &str, topic: &str) -> Polled {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "45000")
            .set("max.poll.interval.ms", "300000")
            .set("heartbeat.interval.ms", "1000")
            .create()
            .expect("member");
        consumer.subscribe(&[topic]).expect("subscribe");
        Polled { consumer }
    }

    fn poll_for(&self, d: Duration) {
        let end = std::time::Instant::now() + d;
        while std::time::Instant::now() < end {
            let _ = self.consumer.poll(Duration::from_millis(100));
        }
    }

    fn assigned(&self) -> usize {
        self.consumer.assignment().map(|a| a.count()).unwrap_or(0)
    }
}

/// A cluster sampled by the direct client, watching the groups named `<prefix>-…`.
fn direct_cluster(b: &str, prefix: &str) -> streamguard::config::ClusterConfig {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[[clusters]]\nname = \"local\"\nbootstrap_servers = \"{b}\"\nsampler = \"direct\"\nprobe_budget = 0\nsample_timeout = \"10s\"\nsample_interval = \"10s\"\n[clusters.groups]\ninclude = [\"^{prefix}-\"]\n"
    );
    streamguard::config::load(&write_config(dir.path(), &body)).unwrap().clusters.remove(0)
}

fn group_of<'a>(s: &'a KafkaSnapshot, g: &str) -> &'a streamguard::sample::kafka::GroupLag {
    s.groups.iter().find(|x| x.group == g).unwrap_or_else(|| panic!("{g} missing from {:?}", s.groups))
}

fn assigned_partitions(g: &streamguard::sample::kafka::GroupLag) -> usize {
    g.partitions.iter().filter(|p| p.client_id.is_some()).count()
}

#[test]
fn an_unchanged_group_is_not_described_again_and_a_membership_change_reaches_the_next_sample() {
    let b = bootstrap();
    let prefix = unique("cache");
    let topic = format!("{prefix}-t");
    let group = format!("{prefix}-g");
    create_topic(&b, &topic, 4);
    produce(&b, &topic, &[3, 3, 3, 3], None);
    let c = direct_cluster(&b, &prefix);
    let s = KafkaSampler::new(&c).unwrap();
    let dlq = (streamguard::config::DlqConfig { patterns: Vec::new(), topics: Vec::new() }, Vec::new());
    let describes = |s: &KafkaSampler| s.direct_request_counts().get("DescribeGroups").copied().unwrap_or(0);

    // One member, Stable, holding all four partitions.
    let a = Polled::join(&b, &group, &topic);
    wait_until(Duration::from_secs(30), "member a assigned", || {
        a.poll_for(Duration::from_millis(300));
        a.assigned() == 4
    });
    a.poll_for(Duration::from_secs(1));
    let first = s.sample(&dlq).unwrap();
    let g = group_of(&first, &group);
    assert_eq!((g.members, format!("{:?}", g.state), assigned_partitions(g)), (1, "Stable".into(), 4), "{g:?}");
    let after_first = describes(&s);
    assert!(after_first >= 1, "a group with members is described");

    // Nothing changed: the description is reused, not requested again.
    for _ in 0..3 {
        a.poll_for(Duration::from_millis(500));
        let again = s.sample(&dlq).unwrap();
        let g = group_of(&again, &group);
        assert_eq!((g.members, assigned_partitions(g)), (1, 4), "{g:?}");
    }
    assert_eq!(describes(&s), after_first, "an unchanged group is not described again: {:?}", s.direct_request_counts());

    // Member b joins; a does not poll, so the rebalance waits for it: the listing's
    // state changes and the next sample describes the group again.
    let bm = Polled::join(&b, &group, &topic);
    bm.poll_for(Duration::from_secs(2));
    let during = s.sample(&dlq).unwrap();
    let g = group_of(&during, &group);
    assert_ne!(format!("{:?}", g.state), "Stable", "the rebalance is visible: {g:?}");
    assert!(describes(&s) > after_first, "a state change is described again");

    // Both poll: Stable again with two members sharing the four partitions.
    wait_until(Duration::from_secs(60), "both members assigned", || {
        std::thread::scope(|sc| {
            sc.spawn(|| a.poll_for(Duration::from_millis(500)));
            bm.poll_for(Duration::from_millis(500));
        });
        a.assigned() + bm.assigned() == 4 && a.assigned() > 0 && bm.assigned() > 0
    });
    let settled = s.sample(&dlq).unwrap();
    let g = group_of(&settled, &group);
    assert_eq!((g.members, format!("{:?}", g.state), assigned_partitions(g)), (2, "Stable".into(), 4), "the next sample shows the new membership: {g:?}");
    let clients: std::collections::BTreeSet<_> = g.partitions.iter().filter_map(|p| p.client_id.clone()).collect();
    assert!(!clients.is_empty(), "{g:?}");
    drop(bm);
    drop(a);
}

#[test]
fn a_kip848_group_is_described_once_while_stable_and_a_new_member_shows_within_the_refresh_age() {
    let b = bootstrap();
    let prefix = unique("cache848");
    let topic = format!("{prefix}-t");
    let group = format!("{prefix}-g");
    create_topic(&b, &topic, 4);
    produce(&b, &topic, &[2, 2, 2, 2], None);
    let c = direct_cluster(&b, &prefix);
    let dlq = (streamguard::config::DlqConfig { patterns: Vec::new(), topics: Vec::new() }, Vec::new());
    // A sampler made for each look: no cache, the broker's current view.
    let fresh = || KafkaSampler::new(&c).unwrap().sample(&dlq).unwrap();
    // (The group is listed once its first member joined.)
    let settled = |s: &KafkaSnapshot, members: u32| {
        s.groups.iter().find(|x| x.group == group).is_some_and(|g| g.members == members && format!("{:?}", g.state) == "Stable" && assigned_partitions(g) == 4)
    };

    let _m1 = Member::join(&b, &group, &topic, "consumer");
    wait_until(Duration::from_secs(60), "one KIP-848 member with all partitions", || settled(&fresh(), 1));
    let s = KafkaSampler::new(&c).unwrap();
    let cgd = |s: &KafkaSampler| s.direct_request_counts().get("ConsumerGroupDescribe").copied().unwrap_or(0);
    let first = s.sample(&dlq).unwrap();
    assert!(settled(&first, 1), "{:?}", group_of(&first, &group));
    assert_eq!(cgd(&s), 1, "{:?}", s.direct_request_counts());
    for _ in 0..3 {
        let again = s.sample(&dlq).unwrap();
        assert!(settled(&again, 1), "{:?}", group_of(&again, &group));
    }
    assert_eq!(cgd(&s), 1, "a Stable KIP-848 group is not described again: {:?}", s.direct_request_counts());

    // A second member: the broker's view changes; the cached sampler follows within the
    // refresh age (30 s) even if it never sees the group outside Stable.
    let _m2 = Member::join(&b, &group, &topic, "consumer");
    wait_until(Duration::from_secs(60), "two KIP-848 members sharing the partitions", || settled(&fresh(), 2));
    let t0 = std::time::Instant::now();
    wait_until(Duration::from_secs(40), "the cached sampler shows both members", || {
        std::thread::sleep(Duration::from_millis(500));
        settled(&s.sample(&dlq).unwrap(), 2)
    });
    assert!(t0.elapsed() <= streamguard::sample::kafka_direct::DESCRIBE_MAX_AGE + Duration::from_secs(5), "{:?}", t0.elapsed());
}
