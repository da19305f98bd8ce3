//! Throughput and group status on the real broker: produce and consume rates from
//! offset deltas, and the OK / STALL / STOP / REWIND evaluator over short windows.

mod common;

use std::time::Duration;

use common::*;

fn config(port: u16, bootstrap: &str, group_regex: &str) -> String {
    agent_config_with(port, bootstrap, group_regex, "[history]\nrate_window = \"4s\"\nstatus_window = \"4s\"\n")
}

#[test]
fn rates_follow_the_offsets_and_a_progressing_group_is_ok_or_warn() {
    let b = bootstrap();
    let topic = unique("rate-topic");
    let group = unique("rate-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[1], None);
    consume_and_commit(&b, &group, &topic, &[1]);
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &format!("^{group}$")));
    // Each step: 20 records produced and 10 more committed, every ~500 ms, for 8 s. The
    // true rates come from the measured step time, not the nominal one.
    let producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &b).set("linger.ms", "0").create().unwrap();
    let committer: rdkafka::consumer::BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &b).set("group.id", &group).create().unwrap();
    let started = std::time::Instant::now();
    let steps = 16;
    for i in 1..=steps {
        for _ in 0..20 {
            producer.send(rdkafka::producer::BaseRecord::<(), str>::to(&topic).partition(0).payload("x")).unwrap();
        }
        rdkafka::producer::Producer::flush(&producer, Duration::from_secs(5)).unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(1 + 10 * i)).unwrap();
        rdkafka::consumer::Consumer::commit(&committer, &tpl, rdkafka::consumer::CommitMode::Sync).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    let step = started.elapsed().as_secs_f64() / steps as f64;
    let (true_produce, true_consume) = (20.0 / step, 10.0 / step);
    let produce_rate = value(agent.fresh("topic_produce_rate", &topic, &[])).expect("produce rate");
    let consume_rate = value(agent.fresh("consume_rate", &group, &[])).expect("consume rate");
    let close = |got: f64, truth: f64| (got - truth).abs() <= truth * 0.25;
    assert!(close(produce_rate, true_produce), "produce rate {produce_rate}/s, true {true_produce}/s");
    assert!(close(consume_rate, true_consume), "consume rate {consume_rate}/s, true {true_consume}/s");
    // Produced twice as fast as committed: lag rises, but the group makes progress, so it
    // is OK or WARN (WARN needs every sample's lag above the previous one; a sample taken
    // between a produce and its commit can break that), never STALL, STOP or UNKNOWN.
    let current: Vec<String> = agent
        .signals(&format!("signal=group_status&target={group}"))
        .into_iter()
        .filter(|s| s["value"] == 1.0)
        .map(|s| s["labels"]["status"].as_str().unwrap().to_string())
        .collect();
    assert!(current == ["OK"] || current == ["WARN"], "{current:?}");
}

#[test]
fn a_group_with_lag_and_no_progress_is_stop_without_members_and_stall_with_one() {
    let b = bootstrap();
    let topic = unique("stall-topic");
    let stopped = unique("stopped-group");
    let stalled = unique("stalled-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[10], None);
    consume_and_commit(&b, &stopped, &topic, &[2]);
    consume_and_commit(&b, &stalled, &topic, &[2]);
    // A member that stays in the group but never commits.
    let _member = Member::join(&b, &stalled, &topic, "classic");
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, "^(stopped|stalled)-group"));
    let status = |g: &str, s: &str| value(agent.fresh("group_status", g, &[("status", s)])) == Some(1.0);
    wait_until(Duration::from_secs(30), "STOP for the empty group", || status(&stopped, "STOP"));
    wait_until(Duration::from_secs(30), "STALL for the group with a silent member", || status(&stalled, "STALL"));
}

#[test]
fn a_committed_offset_moving_back_is_a_rewind() {
    let b = bootstrap();
    let topic = unique("rewind-topic");
    let group = unique("rewind-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[50], None);
    consume_and_commit(&b, &group, &topic, &[40]);
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &format!("^{group}$")));
    wait_until(Duration::from_secs(20), "first samples", || agent.fresh("committed_offset", &group, &[]).is_some());
    std::thread::sleep(Duration::from_secs(2));
    consume_and_commit(&b, &group, &topic, &[5]);
    wait_until(Duration::from_secs(20), "REWIND", || value(agent.fresh("group_status", &group, &[("status", "REWIND")])) == Some(1.0));
    assert_eq!(value(agent.fresh("group_rewinds", &group, &[])), Some(1.0));
    let rate = value(agent.fresh("consume_rate", &group, &[]));
    assert!(rate.is_none_or(|r| r >= 0.0), "never a negative rate: {rate:?}");
    let (_, metrics) = agent.get("/metrics");
    assert!(metrics.contains(&format!("streamguard_kafka_group_rewinds_total{{cluster=\"local\",group=\"{group}\"}} 1")), "{metrics}");
}

#[test]
fn a_member_joining_and_leaving_counts_rebalances() {
    let b = bootstrap();
    let topic = unique("rebalance-topic");
    let group = unique("rebalance-group");
    create_topic(&b, &topic, 2);
    produce(&b, &topic, &[3, 3], None);
    consume_and_commit(&b, &group, &topic, &[1, 1]);
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &format!("^{group}$")));
    wait_until(Duration::from_secs(20), "first samples", || agent.fresh("group_rebalances", &group, &[]).is_some());
    assert_eq!(value(agent.fresh("group_rebalances", &group, &[])), Some(0.0));
    let member = Member::join(&b, &group, &topic, "consumer");
    wait_until(Duration::from_secs(30), "member seen", || value(agent.fresh("group_members", &group, &[])) == Some(1.0));
    member.leave();
    wait_until(Duration::from_secs(30), "two rebalances (join, leave)", || {
        value(agent.fresh("group_rebalances", &group, &[])).is_some_and(|v| v >= 2.0)
    });
}
