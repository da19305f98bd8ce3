//! A broker that goes away and comes back. This test owns a second, private Kafka
//! broker (same `stack/` scripts, its own run directory and ports) so stopping it
//! disturbs no other test.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn is_stale(m: &Metrics) -> bool {
    m.get("streamguard_source_up", &[("source", "local")]) == Some(0.0)
        && m.get("streamguard_source_quality", &[("source", "local"), ("quality", "stale")]) == Some(1.0)
}

#[test]
fn a_stopped_broker_makes_data_stale_and_sampling_resumes_by_itself_when_it_returns() {
    let broker = PrivateBroker::new();
    assert!(Path::new(&repo_root().join("stack/up")).exists());
    broker.up();
    let b = broker.bootstrap();
    let topic = unique("outage-topic");
    let group = unique("outage-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[8], None);
    consume_and_commit(&b, &group, &topic, &[2]);

    let mut agent = Agent::start(&b, &format!("^{group}$"));
    let g = group.as_str();
    let lag = |m: &Metrics| m.get("streamguard_kafka_group_lag_offsets", &[("group", g)]);
    wait_until(Duration::from_secs(30), "first fresh sample", || agent.get("/readyz").0 == 200);
    assert_eq!(lag(&agent.metrics()), Some(6.0));

    broker.down();
    wait_until(Duration::from_secs(30), "series marked stale", || is_stale(&agent.metrics()));
    let m = agent.metrics();
    assert_eq!(lag(&m), None, "stale lag is withdrawn, never shown as a number");
    assert_eq!(m.count("streamguard_kafka_partition_lag_offsets", &[("group", g)]), 0);
    assert!(m.get("streamguard_source_last_success_timestamp_seconds", &[("source", "local")]).is_some());
    let errors: f64 = m
        .samples
        .iter()
        .filter(|(n, l, _)| n == "streamguard_sample_errors_total" && l.get("source").map(String::as_str) == Some("local"))
        .map(|(_, _, v)| *v)
        .sum();
    assert!(errors >= 1.0, "errors are counted:\n{}", m.text);
    let (status, body) = agent.get("/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("kafka local: stale"), "{body}");
    assert_eq!(agent.get("/healthz").0, 200, "the agent keeps serving");

    broker.up();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(agent.get("/readyz").0 == 200 && lag(&agent.metrics()).is_some()) {
        if std::time::Instant::now() > deadline {
            let out = run(Command::new(bin()).args(["lag", "--json", "--group", g, "--config"]).arg(agent.config_path()));
            panic!(
                "no fresh lag 60s after the broker returned\nagent log:\n{}\nlag --json:\n{}{}",
                agent.log(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let m = agent.metrics();
    assert_eq!(lag(&m), Some(6.0));
    assert_eq!(m.get("streamguard_source_up", &[("source", "local")]), Some(1.0));
    let log = agent.log();
    assert!(agent.child.try_wait().unwrap().is_none(), "the agent never restarted:\n{log}");
}

/// librdkafka lines in the agent's log.
fn client_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("librdkafka")).collect()
}

#[test]
fn a_long_broker_outage_yields_a_bounded_number_of_client_log_lines_with_counts() {
    let broker = PrivateBroker::new();
    broker.up();
    let b = broker.bootstrap();
    let topic = unique("storm-topic");
    let group = unique("storm-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[8], None);
    // Lag, so the time-lag probe's consumer is connected too.
    consume_and_commit(&b, &group, &topic, &[2]);
    // The librdkafka path: its admin client and the probe's consumer are the clients whose
    // lines the limiter bounds (the direct path makes no admin client at all).
    let port = free_port();
    let agent = Agent::start_with(port, &agent_config_with(port, &b, &format!("^{group}$"), "sampler = \"librdkafka\"\n"));
    wait_until(Duration::from_secs(30), "first fresh sample", || agent.get("/readyz").0 == 200);
    let before = client_lines(&agent.log()).len();

    broker.down();
    std::thread::sleep(Duration::from_secs(45));
    broker.up();
    wait_until(Duration::from_secs(60), "fresh again", || agent.get("/readyz").0 == 200);
    std::thread::sleep(Duration::from_secs(3));

    // The window that began with the outage ends within a minute: its summary says how
    // many lines were held back.
    wait_until(Duration::from_secs(75), "the summary of suppressed lines", || agent.log().contains("similar lines suppressed"));
    let log = agent.log();
    let lines = client_lines(&log);
    let storm = &lines[before..];
    // At most LIMIT_PER_WINDOW (10) lines per minute plus one summary per kind of
    // suppressed line; the outage and recovery span at most two windows here.
    assert!(storm.len() <= 30, "{} librdkafka lines for a 45 s outage:\n{}", storm.len(), storm.join("\n"));
    let suppressed: u64 = storm
        .iter()
        .filter(|l| l.contains("similar lines suppressed"))
        .filter_map(|l| l.split("suppressed=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(suppressed > storm.len() as u64, "the limiter held back more lines ({suppressed}) than it printed ({}):\n{}", storm.len(), storm.join("\n"));
}
