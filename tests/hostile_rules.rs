//! Hostile rule files through the real binary (issue 13, item 1): conditions nested
//! 1,250 parentheses deep or chaining 5,000 comparisons are located errors in `check`,
//! refused at start with an error (never an abort), and a hot reload with such a file
//! keeps the last good set while the agent keeps running.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn alert(name: &str, condition: &str) -> String {
    format!("apiVersion: streamguard/v1\nkind: Alert\nmetadata: {{ name: {name} }}\nspec:\n  condition: '{condition}'\n")
}

fn deep(levels: usize) -> String {
    format!("{}lag_offsets > 1{}", "(".repeat(levels), ")".repeat(levels))
}

fn flat(terms: usize) -> String {
    vec!["lag_offsets > 1"; terms].join(" and ")
}

fn config(port: u16, rules_dir: &Path) -> String {
    let rules = format!(
        "[rules]\npaths = [\"{}\"]\nevaluation_interval = \"1s\"\nstate_file = \"{}\"\n",
        rules_dir.display(),
        rules_dir.join("state.json").display()
    );
    agent_config_with(port, &bootstrap(), "^nothing-matches$", &rules)
}

#[test]
fn check_reports_deep_and_long_conditions_and_deep_yaml_as_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("deep.yaml", alert("deep", &deep(1250)), "deep.yaml:5:79: alert \"deep\": conditions nested more than 64 parentheses deep"),
        ("deeper.yaml", alert("deeper", &deep(5000)), "deeper.yaml:5:79: alert \"deeper\": conditions nested more than 64 parentheses deep"),
        ("flat.yaml", alert("flat", &flat(5000)), "flat.yaml:5:15: alert \"flat\": condition is 99995 bytes long (at most 16384)"),
        ("chain.yaml", alert("chain", &flat(300)), "chain.yaml:5:5135: alert \"chain\": more than 256 comparisons in one condition"),
        ("yaml.yaml", format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)), "yaml.yaml:1:"),
    ];
    for (name, body, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let out = run(Command::new(bin()).arg("check").arg(&path));
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: FAILED with exit 1, not a crash:\n{text}");
        assert!(text.contains(&format!("FAILED: {}", path.display())), "{name}:\n{text}");
        assert!(text.contains(&format!("{}{}", dir.path().join("").display(), expected)), "{name}: expected {expected:?} in\n{text}");
    }
}

#[test]
fn run_refuses_a_deep_condition_at_start_with_an_error_instead_of_aborting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.yaml"), alert("deep", &deep(1250))).unwrap();
    let port = free_port();
    let cfg = write_config(dir.path(), &config(port, dir.path()));
    let mut child = Command::new(bin()).args(["run", "--config"]).arg(&cfg).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "run did not refuse the rules");
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "an error exit, not an abort (134) or a signal: {status:?}\n{err}");
    assert!(err.contains("nested more than 64 parentheses deep"), "{err}");
}

#[test]
fn a_hot_reload_with_a_deep_or_long_condition_keeps_the_last_good_set_and_the_agent_running() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.yaml");
    std::fs::write(&file, alert("good", "lag_offsets > 1")).unwrap();
    let port = free_port();
    let mut agent = Agent::start_with(port, &config(port, dir.path()));
    let names = |agent: &Agent| -> Vec<String> {
        let (_, body) = agent.get("/api/v1/rules");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["rules"].as_array().map(|a| a.iter().filter_map(|r| r["name"].as_str().map(str::to_string)).collect()).unwrap_or_default()
    };
    assert_eq!(names(&agent), ["good"]);

    for (i, bad) in [deep(1250), flat(5000), deep(5000)].into_iter().enumerate() {
        std::fs::write(&file, alert(&format!("bad{i}"), &bad)).unwrap();
        wait_until(Duration::from_secs(15), "the hostile file to be rejected", || {
            assert_eq!(agent.get("/healthz").0, 200, "the agent died on reload:\n{}", agent.log());
            agent.metrics().get("streamguard_rules_reload_success", &[]) == Some(0.0)
        });
        assert_eq!(names(&agent), ["good"], "the last good set keeps running");
        // Valid again, so the next hostile file is a change from a good set.
        std::fs::write(&file, alert("good", "lag_offsets > 1")).unwrap();
        wait_until(Duration::from_secs(15), "the good file to load again", || {
            agent.metrics().get("streamguard_rules_reload_success", &[]) == Some(1.0)
        });
    }
    assert!(agent.child.try_wait().unwrap().is_none(), "still running:\n{}", agent.log());
    assert_eq!(agent.get("/healthz").0, 200);
}
