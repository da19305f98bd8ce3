//! DLQ rate and ratio with a real Kafka Connect sink: `errors.tolerance=all` sends
//! records its JsonConverter cannot read to a dead-letter topic; streamguard matches the
//! DLQ to the sink's consumer group and reports rate and ratio. A DLQ belongs to the
//! group that writes it: a match that names only the topic is never blamed on the groups
//! that happen to read that topic.

mod common;

use std::time::Duration;

use common::*;

/// Runs the scenario: a sink reading `topic`, failing records to `dlq`; returns the agent.
fn scenario(topic: &str, dlq: &str, connector: &str, extra_config: &str) -> (Agent, Connector, tempfile::TempDir) {
    let b = bootstrap();
    create_topic(&b, topic, 1);
    create_topic(&b, dlq, 1);
    let dir = tempfile::tempdir().unwrap();
    let sink = Connector::create(
        connector,
        serde_json::json!({
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "tasks.max": "1",
            "topics": topic,
            "file": dir.path().join("sink.txt").to_string_lossy(),
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false",
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": dlq,
            "errors.deadletterqueue.topic.replication.factor": "1",
            "errors.deadletterqueue.context.headers.enable": "true",
        }),
    );
    let port = free_port();
    let extra = format!("[history]\nrate_window = \"60s\"\n{extra_config}\n");
    let config = agent_config_with(port, &b, &format!("^connect-{connector}$"), &extra);
    let agent = Agent::start_with(port, &config);
    (agent, sink, dir)
}

fn run_mix(agent: &Agent, topic: &str, dlq: &str, group: &str) {
    let b = bootstrap();
    // Warm-up: 10 good records, so the sink's group has a committed offset in history.
    produce_payloads(&b, topic, &(0..10).map(|i| format!("{{\"n\":{i}}}")).collect::<Vec<_>>());
    wait_until(Duration::from_secs(60), "the sink to commit the warm-up records", || {
        value(agent.fresh("committed_offset", group, &[("topic", topic)])) == Some(10.0)
    });
    // The mix: 100 records, every 5th one not JSON (20 poison pills).
    let mix: Vec<String> =
        (0..100).map(|i| if i % 5 == 0 { format!("poison pill {i}") } else { format!("{{\"n\":{i}}}") }).collect();
    produce_payloads(&b, topic, &mix);
    wait_until(Duration::from_secs(60), "the sink to process the mix and the DLQ to hold 20", || {
        value(agent.fresh("committed_offset", group, &[("topic", topic)])) == Some(110.0)
            && value(agent.fresh("log_end_offset", dlq, &[])) == Some(20.0)
    });
    wait_until(Duration::from_secs(10), "dlq_ratio", || agent.fresh("dlq_ratio", dlq, &[]).is_some());
}

#[test]
fn dlq_rate_and_ratio_match_the_poison_pill_share_of_a_real_connect_sink() {
    let topic = unique("orders");
    let connector = unique("dlq-sink");
    let group = format!("connect-{connector}");
    let dlq = format!("dlq-{group}"); // matches the default pattern dlq-{group}
    let (agent, _sink, _dir) = scenario(&topic, &dlq, &connector, "");
    run_mix(&agent, &topic, &dlq, &group);

    let ratio = agent.fresh("dlq_ratio", &dlq, &[("group", &group), ("topic", &topic)]).unwrap();
    // Both rates span the same sample times, from before the mix to after it, so the
    // ratio is exactly 20 failed of 100 consumed.
    assert!((ratio["value"].as_f64().unwrap() - 0.2).abs() < 1e-9, "{ratio}");
    // The DLQ rate is the 20 failed records over the span of the DLQ's sampled history
    // (the whole run: it is shorter than the 60 s rate window).
    let rate = agent.fresh("dlq_rate", &dlq, &[]).unwrap();
    assert!(rate["labels"].get("group").is_none(), "dlq_rate is per DLQ topic: {rate}");
    let end = agent.fresh("log_end_offset", &dlq, &[]).unwrap();
    let (rate_at, h) = (rate["last_time"].as_f64().unwrap(), end["history"].as_array().unwrap());
    let first = h.iter().find(|p| p[0].as_f64().unwrap() <= rate_at).unwrap();
    let last = h.iter().rev().find(|p| p[0].as_f64().unwrap() <= rate_at).unwrap();
    let expected = (last[1].as_f64().unwrap() - first[1].as_f64().unwrap()) / (last[0].as_f64().unwrap() - first[0].as_f64().unwrap());
    assert_eq!(first[1].as_f64(), Some(0.0), "history starts before the first poison pill: {end}");
    // `expected` comes from times as the API gives them, f64 Unix seconds, whose last
    // bit is 2.4e-7 s today; the agent divides exact time differences. Over a span of
    // a few seconds that is up to ~2e-7 of the rate (a 1.06e-6 difference at 6.67/s was
    // seen), so the bound is relative: a wrong span or count is off by percents.
    assert!((rate["value"].as_f64().unwrap() - expected).abs() <= 1e-6 * expected.abs(), "rate {rate} expected {expected}");
    let (_, metrics) = agent.get("/metrics");
    assert!(metrics.contains("streamguard_kafka_dlq_ratio{"), "{metrics}");
}

#[test]
fn an_explicitly_mapped_dlq_is_matched_whatever_its_name() {
    let topic = unique("payments");
    let dlq = unique("failed-payments");
    let connector = unique("mapped-sink");
    let group = format!("connect-{connector}");
    let extra = format!("[[dlq.topics]]\ndlq_topic = \"{dlq}\"\nsource_topic = \"{topic}\"\ngroup = \"{group}\"\n");
    let (agent, _sink, _dir) = scenario(&topic, &dlq, &connector, &extra);
    run_mix(&agent, &topic, &dlq, &group);
    let ratio = value(agent.fresh("dlq_ratio", &dlq, &[("group", &group)])).unwrap();
    assert!((ratio - 0.2).abs() < 1e-9, "{ratio}");
}

#[test]
fn a_dlq_named_only_in_a_connect_sink_config_is_discovered_through_the_connect_source() {
    let topic = unique("invoices");
    let dlq = unique("sink-dead-letters"); // matches no pattern and no explicit mapping
    let connector = unique("discovered-sink");
    let group = format!("connect-{connector}");
    let extra = format!("[[connect]]\nname = \"local\"\nurl = \"{}\"\n", connect_url());
    let (agent, _sink, _dir) = scenario(&topic, &dlq, &connector, &extra);
    run_mix(&agent, &topic, &dlq, &group);
    let ratio = value(agent.fresh("dlq_ratio", &dlq, &[("group", &group), ("topic", &topic)])).unwrap();
    assert!((ratio - 0.2).abs() < 1e-9, "{ratio}");
}

#[test]
fn a_dlq_matched_by_topic_name_is_counted_once_and_blamed_on_no_group() {
    let b = bootstrap();
    let topic = unique("shipments");
    let dlq = format!("{topic}.dlq"); // the default pattern {topic}.dlq names no group
    create_topic(&b, &topic, 1);
    create_topic(&b, &dlq, 1);
    produce(&b, &topic, &[10], None);
    let (g1, g2) = (unique("ship-a"), unique("ship-b"));
    consume_and_commit(&b, &g1, &topic, &[4]);
    consume_and_commit(&b, &g2, &topic, &[6]);
    let port = free_port();
    let agent = Agent::start_with(port, &agent_config_with(port, &b, &format!("^({g1}|{g2})$"), "[history]\nrate_window = \"30s\"\n"));
    wait_until(Duration::from_secs(20), "the DLQ sampled", || agent.fresh("log_end_offset", &dlq, &[]).is_some());
    produce(&b, &dlq, &[5], None);
    wait_until(Duration::from_secs(20), "a DLQ rate", || value(agent.fresh("dlq_rate", &dlq, &[])).is_some_and(|r| r > 0.0));
    let rates: Vec<serde_json::Value> =
        agent.signals(&format!("signal=dlq_rate&target={}", urlencode(&dlq))).into_iter().filter(|s| s["quality"] == "fresh").collect();
    assert_eq!(rates.len(), 1, "one series per DLQ topic, not one per group reading the source: {rates:?}");
    assert!(agent.signals(&format!("signal=dlq_ratio&target={}", urlencode(&dlq))).is_empty(), "no group writes it, so no ratio");
    let m = agent.metrics();
    assert_eq!(m.count("streamguard_kafka_dlq_rate", &[("dlq_topic", dlq.as_str())]), 1);
}
