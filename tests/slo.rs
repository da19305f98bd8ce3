//! Rules and SLOs end to end on the real broker: a consumer group that falls behind
//! drives a freshness SLO's burn-rate alert (and a plain alert) to firing, and back to
//! resolved when it catches up; the budget survives an agent restart; rule files reload.

mod common;

use std::time::Duration;

use common::*;

fn config(port: u16, bootstrap: &str, group: &str, rules_dir: &std::path::Path) -> String {
    let rules = format!(
        "[rules]\npaths = [\"{}\"]\nevaluation_interval = \"1s\"\nstate_file = \"{}\"\n",
        rules_dir.display(),
        rules_dir.join("state.json").display()
    );
    agent_config_with(port, bootstrap, &format!("^{group}$"), &rules)
}

fn rules(group: &str) -> String {
    format!(
        r#"apiVersion: streamguard/v1
kind: SLO
metadata:
  name: fresh
  labels: {{ team: streaming }}
  annotations: {{ dashboard: "https://grafana.example/d/fresh" }}
spec:
  runbooks: [catch-up]
  objective: 90%
  window: 10m
  indicator:
    timeslice:
      condition: max(lag_seconds{{group="{group}", method="probe"}}) < 5s
  alerting:
    burn_rates:
      - {{ severity: page, factor: 2, long: 20s, short: 5s }}
---
apiVersion: streamguard/v1
kind: Alert
metadata: {{ name: lag-high }}
spec:
  condition: max by (group) (lag_seconds{{group="{group}", method="probe"}}) > 5s
  for: 2s
---
apiVersion: streamguard/v1
kind: Runbook
metadata: {{ name: catch-up }}
spec: {{}}
"#
    )
}

fn slo(agent: &Agent) -> serde_json::Value {
    let (status, body) = agent.get("/api/v1/slos");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["slos"][0].clone()
}

fn alert_state(agent: &Agent) -> Option<String> {
    let (_, body) = agent.get("/api/v1/rules");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["rules"][0]["instances"][0]["instance"]["state"].as_str().map(str::to_string)
}

fn page_firing(agent: &Agent) -> bool {
    slo(agent)["alerts"][0]["firing"] == true
}

#[test]
fn a_group_falling_behind_fires_the_burn_rate_alert_which_resolves_when_it_catches_up_and_the_budget_survives_a_restart() {
    let b = bootstrap();
    let topic = unique("slo-topic");
    let group = unique("slo-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[10], None);
    consume_and_commit(&b, &group, &topic, &[10]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fresh.yaml"), rules(&group)).unwrap();
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &group, dir.path()));

    // Caught up: good slices, no alert.
    wait_until(Duration::from_secs(30), "good slices", || slo(&agent)["sli"] == 1.0);
    assert!(!page_firing(&agent));

    // Fall behind: records a minute old that the group does not consume.
    produce(&b, &topic, &[20], Some(now_ms() - 60_000));
    wait_until(Duration::from_secs(40), "the page burn-rate alert to fire", || page_firing(&agent));
    let s = slo(&agent);
    assert!(s["alerts"][0]["short_burn"].as_f64().unwrap() > 2.0, "{s}");
    assert!(s["budget_remaining"].as_f64().unwrap() < 1.0, "{s}");
    wait_until(Duration::from_secs(20), "the lag alert to fire", || alert_state(&agent).as_deref() == Some("firing"));
    let (_, metrics) = agent.get("/metrics");
    assert!(
        metrics.contains("streamguard_slo_burn_rate_alert{slo=\"fresh\",severity=\"page\",long=\"20s\",short=\"5s\",team=\"streaming\"} 1"),
        "the SLO's labels are on its alert series: {metrics}"
    );
    assert_eq!(s["labels"]["team"], "streaming", "{s}");
    assert_eq!(s["annotations"]["dashboard"], "https://grafana.example/d/fresh", "{s}");
    assert_eq!(s["runbooks"][0], "catch-up", "{s}");
    assert!(metrics.contains("streamguard_rule_alerts{file="), "{metrics}");

    // Catch up: the short window clears and the page stops; the alert resolves.
    consume_and_commit(&b, &group, &topic, &[30]);
    wait_until(Duration::from_secs(40), "the page to stop", || !page_firing(&agent));
    wait_until(Duration::from_secs(20), "the lag alert to resolve", || alert_state(&agent).as_deref() == Some("resolved"));
    let budget_before = slo(&agent)["budget_remaining"].as_f64().unwrap();
    assert!(budget_before < 1.0);

    // A graceful restart persists the budget; the new agent starts from it, not from empty.
    let pid = agent.child.id().to_string();
    assert!(run(std::process::Command::new("kill").args(["-TERM", &pid])).status.success());
    let mut agent = agent;
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status:?}\n{}", agent.log());
    assert!(dir.path().join("state.json").exists());
    let port = free_port();
    let again = Agent::start_with(port, &config(port, &b, &group, dir.path()));
    wait_until(Duration::from_secs(20), "the restored SLO", || slo(&again)["budget_remaining"].is_number());
    let budget_after = slo(&again)["budget_remaining"].as_f64().unwrap();
    assert!(budget_after < 1.0 && (budget_after - budget_before).abs() < 0.2, "before {budget_before}, after {budget_after}");
}

#[test]
fn rule_files_reload_on_change_and_sighup_and_an_invalid_set_keeps_the_last_good_one() {
    let b = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.yaml");
    let alert = |name: &str, condition: &str| {
        format!("apiVersion: streamguard/v1\nkind: Alert\nmetadata: {{ name: {name} }}\nspec:\n  condition: {condition}\n")
    };
    std::fs::write(&file, alert("first", "lag_offsets > 1")).unwrap();
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, "nothing-matches", dir.path()));
    let names = || -> Vec<String> {
        let (_, body) = agent.get("/api/v1/rules");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["rules"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
    };
    let reload_ok = || agent.metrics().get("streamguard_rules_reload_success", &[]);
    assert_eq!(names(), ["first"]);

    std::fs::write(&file, alert("second", "lag_offsets > 2")).unwrap();
    wait_until(Duration::from_secs(15), "the changed file to load", || names() == ["second"]);
    assert_eq!(reload_ok(), Some(1.0));

    std::fs::write(&file, alert("third", "lag_ofsets > 2")).unwrap();
    wait_until(Duration::from_secs(15), "the invalid file to be rejected", || reload_ok() == Some(0.0));
    assert_eq!(names(), ["second"], "the last good set keeps running");
    let (_, body) = agent.get("/api/v1/rules");
    assert!(body.contains("unknown signal `lag_ofsets` (did you mean `lag_offsets`?)"), "{body}");
    assert!(agent.log().contains("rule reload rejected"), "{}", agent.log());

    // SIGHUP reloads even when no file changed (after fixing the file).
    std::fs::write(&file, alert("fourth", "lag_offsets > 3")).unwrap();
    wait_until(Duration::from_secs(15), "the fixed file to load", || names() == ["fourth"]);
    let count = |a: &Agent| a.log().matches("rules reloaded").count();
    let before = count(&agent);
    let pid = agent.child.id().to_string();
    assert!(run(std::process::Command::new("kill").args(["-HUP", &pid])).status.success());
    wait_until(Duration::from_secs(10), "a reload on SIGHUP", || count(&agent) > before);
    assert!(agent.log().contains("SIGHUP received, reloading rules"));
}
