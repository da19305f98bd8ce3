//! Kafka consumer lag, end to end against the real broker of `stack/up`:
//! streamguard's `/metrics` and `lag --json` against known ground truth and against
//! Kafka's own `kafka-consumer-groups --describe`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::TopicPartitionList;

fn lag_json(bootstrap: &str, group: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &agent_config(free_port(), bootstrap, ".*"));
    let out = run(Command::new(bin()).args(["lag", "--json", "--group", &format!("^{group}$"), "--config"]).arg(&cfg));
    assert!(out.status.success(), "lag failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("lag --json prints JSON")
}

#[test]
fn lag_is_produced_minus_committed_per_partition_in_metrics_json_and_kafka_tools() {
    let b = bootstrap();
    let topic = unique("lag-topic");
    let group = unique("lag-group");
    let produced = [10usize, 20, 30];
    let consumed = [3usize, 0, 12];
    create_topic(&b, &topic, 3);
    produce(&b, &topic, &produced, None);
    consume_and_commit(&b, &group, &topic, &consumed);
    let expected: Vec<i64> = produced.iter().zip(&consumed).map(|(n, m)| (n - m) as i64).collect();
    let total: i64 = expected.iter().sum();
    assert_eq!(total, 45);

    // 1. /metrics of a running agent.
    let agent = Agent::start(&b, &format!("^{group}$"));
    let g = group.as_str();
    wait_until(Duration::from_secs(30), "group lag in /metrics", || {
        agent.metrics().get("streamguard_kafka_group_lag_offsets", &[("group", g)]).is_some()
    });
    let m = agent.metrics();
    for (p, want) in expected.iter().enumerate() {
        let p = p.to_string();
        let l = [("cluster", "local"), ("group", g), ("topic", topic.as_str()), ("partition", p.as_str())];
        assert_eq!(m.get("streamguard_kafka_partition_lag_offsets", &l), Some(*want as f64), "partition {p}");
        assert_eq!(m.get("streamguard_kafka_partition_has_committed_offset", &l), Some(1.0));
        assert_eq!(
            m.get("streamguard_kafka_partition_log_end_offset", &[("topic", topic.as_str()), ("partition", p.as_str())]),
            Some(produced[p.parse::<usize>().unwrap()] as f64)
        );
    }
    assert_eq!(m.get("streamguard_kafka_group_lag_offsets", &[("group", g)]), Some(total as f64));
    assert_eq!(m.get("streamguard_kafka_group_topic_lag_offsets", &[("group", g), ("topic", &topic)]), Some(total as f64));
    assert_eq!(m.get("streamguard_kafka_group_topic_max_lag_offsets", &[("group", g), ("topic", &topic)]), Some(20.0));
    assert_eq!(m.get("streamguard_kafka_group_state", &[("group", g), ("state", "Empty")]), Some(1.0));
    assert_eq!(m.get("streamguard_kafka_group_members", &[("group", g)]), Some(0.0));
    assert_eq!(m.get("streamguard_source_up", &[("kind", "kafka"), ("source", "local")]), Some(1.0));
    assert_eq!(m.get("streamguard_source_quality", &[("source", "local"), ("quality", "fresh")]), Some(1.0));
    assert_eq!(agent.get("/readyz").0, 200);

    // 2. `streamguard lag --json`.
    let v = lag_json(&b, &group);
    let groups = v["clusters"][0]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{v}");
    assert_eq!(groups[0]["lag_offsets"], total);
    for (p, want) in expected.iter().enumerate() {
        let part = &groups[0]["partitions"][p];
        assert_eq!(part["partition"], p as i64);
        assert_eq!(part["lag_offsets"], *want, "{part}");
        assert_eq!(part["committed_offset"], consumed[p] as i64);
    }

    // 3. Kafka's own tool agrees on every partition.
    let oracle = kafka_consumer_groups_describe(&b, &group);
    assert_eq!(oracle.len(), 3, "{oracle:?}");
    for row in &oracle {
        let p = row.partition as usize;
        assert_eq!(row.current, Some(consumed[p] as i64), "{row:?}");
        assert_eq!(row.log_end, Some(produced[p] as i64), "{row:?}");
        assert_eq!(row.lag, Some(expected[p]), "{row:?}");
        let ours = &groups[0]["partitions"][p];
        assert_eq!(ours["lag_offsets"].as_i64(), row.lag);
        assert_eq!(ours["log_end_offset"].as_i64(), row.log_end);
    }
}

fn group_state_follows_membership(protocol: &str) {
    let b = bootstrap();
    let topic = unique(&format!("state-topic-{protocol}"));
    let group = unique(&format!("state-group-{protocol}"));
    create_topic(&b, &topic, 2);
    produce(&b, &topic, &[5, 5], None);
    let agent = Agent::start(&b, &format!("^{group}$"));
    let g = group.as_str();

    let member = Member::join(&b, &group, &topic, protocol);
    wait_until(Duration::from_secs(60), "group Stable with one member", || {
        let m = agent.metrics();
        m.get("streamguard_kafka_group_state", &[("group", g), ("state", "Stable")]) == Some(1.0)
            && m.get("streamguard_kafka_group_members", &[("group", g)]) == Some(1.0)
    });
    let m = agent.metrics();
    let want_type = if protocol == "consumer" { "consumer" } else { "classic" };
    assert_eq!(m.get("streamguard_kafka_group_info", &[("group", g), ("type", want_type)]), Some(1.0), "{}", m.text);
    // The member owns both partitions but committed nothing: reported as uncommitted, never lag 0.
    assert_eq!(m.get("streamguard_kafka_group_uncommitted_partitions", &[("group", g)]), Some(2.0));
    assert_eq!(m.get("streamguard_kafka_partition_lag_offsets", &[("group", g)]), None);
    assert_eq!(m.get("streamguard_kafka_partition_has_committed_offset", &[("group", g), ("partition", "0")]), Some(0.0));

    member.leave();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = agent.metrics();
        if m.get("streamguard_kafka_group_state", &[("group", g), ("state", "Empty")]) == Some(1.0)
            && m.get("streamguard_kafka_group_members", &[("group", g)]) == Some(0.0)
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            // Say what the agent showed instead (the group's lines, its sample health, its log).
            let lines: Vec<&str> = m.text.lines().filter(|l| l.contains(g) || l.starts_with("streamguard_sample_errors_total") || l.starts_with("streamguard_source_up")).collect();
            let (_, targets) = agent.get("/api/v1/targets");
            panic!("group not Empty with 0 members 60 s after the member left:\n{}\ntargets: {targets}\nagent log:\n{}", lines.join("\n"), agent.log());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn classic_group_state_is_stable_with_a_member_and_empty_after_it_leaves() {
    group_state_follows_membership("classic");
}

#[test]
fn kip848_consumer_group_state_is_stable_with_a_member_and_empty_after_it_leaves() {
    group_state_follows_membership("consumer");
}

#[test]
fn lag_stays_correct_after_delete_records_moves_log_start_past_the_commit() {
    let b = bootstrap();
    let topic = unique("deleted-topic");
    let group = unique("deleted-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[10], None);
    consume_and_commit(&b, &group, &topic, &[3]);

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(7)).unwrap();
    let res = block_on(admin(&b).delete_records(&tpl, &rdkafka::admin::AdminOptions::new())).expect("delete_records");
    assert!(res.elements()[0].error().is_ok(), "{:?}", res.elements()[0].error());

    let v = lag_json(&b, &group);
    let part = &v["clusters"][0]["groups"][0]["partitions"][0];
    assert_eq!(part["log_start_offset"], 7, "{part}");
    assert_eq!(part["committed_offset"], 3);
    assert_eq!(part["log_end_offset"], 10);
    assert_eq!(part["lag_offsets"], 7, "lag is log end minus commit even when the commit fell off the log");

    let oracle = kafka_consumer_groups_describe(&b, &group);
    assert_eq!(oracle[0].lag, Some(7), "{oracle:?}");
    assert_eq!(oracle[0].current, Some(3));
}

#[test]
fn lag_table_lists_each_partition_like_kafka_consumer_groups() {
    let b = bootstrap();
    let topic = unique("table-topic");
    let group = unique("table-group");
    create_topic(&b, &topic, 2);
    produce(&b, &topic, &[4, 6], None);
    consume_and_commit(&b, &group, &topic, &[4, 1]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &agent_config(free_port(), &b, ".*"));
    let out = run(Command::new(bin()).args(["lag", "--group", &group, "--config"]).arg(&cfg));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(&rows[0][1..], [group.as_str(), "Empty", "classic", "0", topic.as_str(), "0", "0", "4", "4", "0", "-"]);
    assert_eq!(&rows[1][5..11], [topic.as_str(), "1", "0", "1", "6", "5"]);
}
