//! streamguard as a Prometheus citizen, checked with the real Prometheus and promtool of
//! `stack/up`: the exposition passes `promtool check metrics`, the stack's Prometheus
//! scrapes the agent and stores its lag series, and `alerts/` passes promtool.

mod common;

use std::process::Command;
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
    promtool_check_metrics(&text);

    let (status, om) = http_get_with(agent.port, "/metrics", "Accept: application/openmetrics-text; version=1.0.0\r\n");
    assert_eq!(status, 200);
    assert!(om.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
    assert!(om.contains("# TYPE streamguard_build info"), "{om}");
    assert!(om.contains("# TYPE streamguard_kafka_group_info gauge"), "{om}");
}

#[test]
fn the_exposition_reader_unescapes_label_values_and_names_histogram_lines() {
    let text = r#"# HELP x_total X.
# TYPE x_total counter
x_total{a="q\"u,o=t}e",b="back\\slash\nnl"} 2
x_total{a="plain"} 1
# HELP h H.
# TYPE h histogram
h_bucket{le="0.5"} 1
h_bucket{le="+Inf"} 3
h_sum 1.5
h_count 3
"#;
    let m = Metrics::parse(text);
    assert_eq!(m.get("x_total", &[("a", "q\"u,o=t}e"), ("b", "back\\slash\nnl")]), Some(2.0));
    assert_eq!(m.get("x_total", &[("a", "plain")]), Some(1.0));
    assert_eq!(m.get("h_bucket", &[("le", "+Inf")]), Some(3.0));
    assert_eq!(m.get("h_sum", &[]), Some(1.5));
    assert_eq!(m.get("h_count", &[]), Some(3.0));
}

#[test]
fn the_stack_prometheus_scrapes_the_agent_and_stores_lag() {
    let scrape = std::env::var("PROMETHEUS_SCRAPE_TARGETS").unwrap_or_else(|_| "127.0.0.1:9898".to_string());
    let port: u16 = scrape.rsplit(':').next().unwrap().parse().unwrap();
    let b = bootstrap();
    let topic = unique("scrape-topic");
    let group = unique("scrape-group");
    create_topic(&b, &topic, 2);
    produce(&b, &topic, &[7, 5], None);
    consume_and_commit(&b, &group, &topic, &[2, 0]);
    let _agent = Agent::start_on(port, &b, &format!("^{group}$"));

    let query = format!("streamguard_kafka_group_lag_offsets{{group=\"{group}\"}}");
    let mut last = serde_json::Value::Null;
    wait_until(Duration::from_secs(60), "Prometheus to store the agent's lag series", || {
        let (status, v) = prometheus_query(&query);
        last = v;
        status == 200 && last["data"]["result"][0]["value"][1] == "10"
    });
    assert_eq!(last["data"]["result"][0]["metric"]["job"], "streamguard", "{last}");
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

#[test]
fn dashboard_queries_are_valid_promql_over_metrics_the_agent_exposes() {
    let path = repo_root().join("dashboards/streamguard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        // Annotations (remediation runs) are queries too.
        .chain(dash["annotations"]["list"].as_array().into_iter().flatten().filter_map(|a| a["expr"].as_str().map(str::to_string)))
        .collect();
    assert!(exprs.len() >= 8);
    // Metric names are registered in src/telemetry/ and in the signal catalog.
    let registered: String = ["src/telemetry/metrics.rs", "src/telemetry/remediation.rs", "src/catalog/kafka.rs", "src/catalog/connect.rs", "src/catalog/flink.rs"]
        .iter()
        .map(|f| std::fs::read_to_string(repo_root().join(f)).unwrap())
        .collect();
    let name = regex::Regex::new(r"streamguard_[a-z_]+").unwrap();
    for expr in &exprs {
        let concrete = expr.replace("$cluster", ".*").replace("$group", ".*");
        let (status, v) = prometheus_query(&concrete);
        assert_eq!(status, 200, "{expr}: {v}");
        assert_eq!(v["status"], "success", "{expr}: {v}");
        for m in name.find_iter(expr) {
            let base = m.as_str().trim_start_matches("streamguard_");
            let base = base.trim_end_matches("_bucket").trim_end_matches("_total").trim_end_matches("_info");
            let base = base.trim_end_matches("_seconds");
            assert!(registered.contains(&format!("\"{base}")), "{expr}: {} is not a streamguard metric", m.as_str());
        }
    }
}

/// YAML (saphyr) as JSON, for reading `alerts/` without a second YAML crate.
fn yaml_to_json(y: &saphyr::Yaml) -> serde_json::Value {
    use saphyr::{Scalar, Yaml};
    match y {
        Yaml::Value(Scalar::Null) => serde_json::Value::Null,
        Yaml::Value(Scalar::Boolean(b)) => (*b).into(),
        Yaml::Value(Scalar::Integer(i)) => (*i).into(),
        Yaml::Value(Scalar::FloatingPoint(f)) => f.into_inner().into(),
        Yaml::Value(Scalar::String(s)) => s.to_string().into(),
        Yaml::Sequence(items) => items.iter().map(yaml_to_json).collect(),
        Yaml::Mapping(m) => {
            m.iter().map(|(k, v)| (yaml_to_json(k).as_str().unwrap_or_default().to_string(), yaml_to_json(v))).collect::<serde_json::Map<_, _>>().into()
        }
        Yaml::Tagged(_, inner) => yaml_to_json(inner),
        _ => serde_json::Value::Null,
    }
}

fn load_yaml(path: &std::path::Path) -> serde_json::Value {
    use saphyr::LoadableYamlNode as _;
    let text = std::fs::read_to_string(path).unwrap();
    yaml_to_json(&saphyr::Yaml::load_from_str(&text).unwrap()[0])
}

#[test]
fn every_shipped_alert_has_a_promtool_case_that_fires_it_and_one_that_keeps_it_quiet() {
    let alerts = repo_root().join("alerts");
    let rules = load_yaml(&alerts.join("streamguard.rules.yml"));
    let names: Vec<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    let tests = load_yaml(&alerts.join("streamguard.test.yml"));
    let cases: Vec<(String, bool)> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            let fires = c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            (c["alertname"].as_str().unwrap().to_string(), fires)
        })
        .collect();
    let missing: Vec<String> = names
        .iter()
        .flat_map(|n| {
            let fires = cases.iter().any(|(c, f)| c == n && *f);
            let quiet = cases.iter().any(|(c, f)| c == n && !*f);
            [(!fires).then(|| format!("{n}: no case that fires it")), (!quiet).then(|| format!("{n}: no case that keeps it quiet"))]
        })
        .flatten()
        .collect();
    assert!(missing.is_empty(), "{missing:#?}");
}
