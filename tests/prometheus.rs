//! streamguard as a Prometheus citizen, checked with the real Prometheus and promtool of
//! `stack/up`: the exposition passes `promtool check metrics`, the stack's Prometheus
//! scrapes the agent and stores its lag series, and `alerts/` passes promtool.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn promtool() -> String {
    std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_string())
}

#[test]
fn metrics_pass_promtool_lint_and_openmetrics_is_served_on_request() {
    let b = bootstrap();
    let topic = unique("lint-topic");
    let group = unique("lint-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[3], None);
    consume_and_commit(&b, &group, &topic, &[1]);
    let agent = Agent::start(&b, &format!("^{group}$"));
    wait_until(Duration::from_secs(30), "lag series", || agent.get("/readyz").0 == 200);

    let (status, text) = agent.get("/metrics");
    assert_eq!(status, 200);
    assert!(text.contains(&format!("streamguard_kafka_partition_lag_offsets{{cluster=\"local\",group=\"{group}\"")), "{text}");
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (stack/deps installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}");

    let (status, om) = http_get_with(agent.port, "/metrics", "Accept: application/openmetrics-text; version=1.0.0\r\n");
    assert_eq!(status, 200);
    assert!(om.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
    assert!(om.contains("# TYPE streamguard_kafka_group info"));
}

#[test]
fn the_stack_prometheus_scrapes_the_agent_and_stores_lag() {
    let scrape = std::env::var("STREAMGUARD_SCRAPE").unwrap_or_else(|_| "127.0.0.1:9898".to_string());
    let port: u16 = scrape.rsplit(':').next().unwrap().parse().unwrap();
    let prom: u16 = std::env::var("PROMETHEUS_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9090);
    let b = bootstrap();
    let topic = unique("scrape-topic");
    let group = unique("scrape-group");
    create_topic(&b, &topic, 2);
    produce(&b, &topic, &[7, 5], None);
    consume_and_commit(&b, &group, &topic, &[2, 0]);
    let _agent = Agent::start_on(port, &b, &format!("^{group}$"));

    let query = format!("/api/v1/query?query=streamguard_kafka_group_lag_offsets%7Bgroup%3D%22{group}%22%7D");
    let mut last = String::new();
    wait_until(Duration::from_secs(60), "Prometheus to store the agent's lag series", || {
        let (status, body) = http_get(prom, &query);
        last = body.clone();
        status == 200 && {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            v["data"]["result"][0]["value"][1] == "10"
        }
    });
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["data"]["result"][0]["metric"]["job"], "streamguard", "{last}");
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let alerts = repo_root().join("alerts");
    let rules: Vec<_> = std::fs::read_dir(&alerts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .collect();
    assert!(!rules.is_empty());
    let out = run(Command::new(promtool()).args(["check", "rules"]).args(&rules));
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = run(Command::new(promtool()).current_dir(&alerts).args(["test", "rules", "streamguard.test.yml"]));
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
