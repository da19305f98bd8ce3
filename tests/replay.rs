//! Record and replay, end to end on the real stack, and the export-equivalence check:
//! an agent records a real scenario (a group falls behind and catches up; a Connect task
//! really fails); `streamguard replay` finds the same alert transitions the agent saw;
//! `--emit-promtool-test` turns the recording and the native verdicts into a
//! `promtool test rules` file for the exported rules, and the real promtool passes it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn rules(group: &str, connector: &str) -> String {
    format!(
        r#"apiVersion: streamguard/v1
kind: Alert
metadata:
  name: behind
  labels:
    severity: page
  annotations:
    summary: the group is more than 50 records behind
spec:
  condition: max by (cluster, group) (lag_offsets{{group="{group}"}}) > 50
  for: 3s
---
apiVersion: streamguard/v1
kind: Alert
metadata:
  name: behind-recently
spec:
  condition: max by (group) (max(lag_offsets{{group="{group}"}}, 5s)) > 50 and max(group_members{{group="{group}"}}) < 1
---
apiVersion: streamguard/v1
kind: Alert
metadata:
  name: task-failed
spec:
  condition: max by (connector) (connector_failed_tasks{{connector="{connector}"}}) > 0
  for: 2s
---
apiVersion: streamguard/v1
kind: SLO
metadata:
  name: fresh
spec:
  objective: 99%
  window: 1h
  indicator:
    timeslice:
      condition: max(lag_offsets{{group="{group}"}}) < 50
  alerting:
    burn_rates:
      - {{ severity: page, factor: 5, long: 20s, short: 5s }}
"#
    )
}

#[test]
fn a_recorded_scenario_replays_to_the_same_verdicts_and_the_export_passes_promtool_on_it() {
    let b = bootstrap();
    let topic = unique("replay-topic");
    let group = unique("replay-group");
    let connector = unique("replay-sink");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[10], None);
    consume_and_commit(&b, &group, &topic, &[10]);

    let dir = tempfile::tempdir().unwrap();
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("scenario.yaml"), rules(&group, &connector)).unwrap();
    let recording = dir.path().join("recording");
    let port = free_port();
    let config = agent_config_with(
        port,
        &b,
        &format!("^{group}$"),
        &format!(
            "[[connect]]\nname = \"local\"\nurl = \"{}\"\n\n[rules]\npaths = [\"{}\"]\nevaluation_interval = \"1s\"\nstate_file = \"{}\"\n\n[record]\npath = \"{}\"\n",
            connect_url(),
            rules_dir.display(),
            dir.path().join("state.json").display(),
            recording.display()
        ),
    );
    let agent = Agent::start_with(port, &config);
    let behind = |agent: &Agent| {
        let (_, body) = agent.get("/api/v1/rules");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v.to_string()
    };
    // Caught up for a few seconds, then 100 records behind for ~10 s, then caught up.
    std::thread::sleep(Duration::from_secs(4));
    produce(&b, &topic, &[100], None);
    wait_until(Duration::from_secs(30), "the lag alert firing", || behind(&agent).contains("\"firing\""));
    std::thread::sleep(Duration::from_secs(4));
    consume_and_commit(&b, &group, &topic, &[110]);
    // A sink whose task really fails: its file is in a directory that does not exist.
    let sink = Connector::create(
        &connector,
        serde_json::json!({
            "connector.class": "FileStreamSink", "topics": topic, "tasks.max": "1",
            "file": dir.path().join("missing-dir/out.txt").to_string_lossy(),
        }),
    );
    wait_until(Duration::from_secs(60), "the task-failed alert firing", || {
        let (_, body) = agent.get("/api/v1/rules");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["rules"].as_array().into_iter().flatten().any(|r| {
            r["name"] == "task-failed" && r["instances"].as_array().into_iter().flatten().any(|i| i["instance"]["state"] == "firing")
        })
    });
    std::thread::sleep(Duration::from_secs(3));
    let m = agent.metrics();
    assert!(m.get("streamguard_record_records_total", &[]).is_some_and(|n| n > 10.0), "the recorder counts what it writes");
    assert_eq!(m.get("streamguard_record_dropped_total", &[]), Some(0.0));
    drop(agent);
    drop(sink);

    // The replay finds the transitions the agent went through.
    let out = run(Command::new(bin()).arg("replay").arg(&recording).args(["--interval", "1s", "--json", "--rules"]).arg(&rules_dir));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tl: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes: Vec<(String, String)> = tl["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["rule"].as_str().unwrap().to_string(), e["to"].as_str().unwrap().to_string()))
        .collect();
    let has = |rule: &str, to: &str| changes.iter().any(|(r, t)| r == rule && t == to);
    assert!(has("behind", "pending") && has("behind", "firing") && has("behind", "resolved"), "{changes:?}");
    assert!(has("task-failed", "firing"), "{changes:?}");
    assert!(has("fresh", "firing"), "the SLO burns while behind: {changes:?}");
    let text = run(Command::new(bin()).arg("replay").arg(&recording).args(["--interval", "1s", "--rules"]).arg(&rules_dir));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("alert behind{cluster=\"local\",group=") && text.contains("pending -> firing"), "{text}");

    // Export equivalence: promtool runs the exported rules over the same series.
    let test_file = dir.path().join("equivalence.test.yml");
    let out = run(
        Command::new(bin())
            .arg("replay")
            .arg(&recording)
            .args(["--interval", "1s", "--emit-promtool-test"])
            .arg(&test_file)
            .arg("--rules")
            .arg(&rules_dir),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let test_text = std::fs::read_to_string(&test_file).unwrap();
    assert!(test_text.contains("alertname: \"behind\"") && test_text.contains("exp_labels:"), "{test_text}");
    let promtool = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_string());
    let out = run(Command::new(promtool).args(["test", "rules"]).arg(&test_file).current_dir(dir.path()));
    assert!(
        out.status.success(),
        "promtool test rules failed: the export does not mean what the engine means\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
