//! Native alerts reach people, against the real Alertmanager of `stack/up` (Debian's
//! `prometheus-alertmanager`) and its webhook receiver: this test binary listens on
//! `$ALERTMANAGER_WEBHOOK_URL` and records what Alertmanager delivers.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::*;

fn alertmanager_url() -> String {
    std::env::var("ALERTMANAGER_URL").unwrap_or_else(|_| "http://127.0.0.1:9094".to_string())
}

/// Every webhook body Alertmanager posted to this process.
fn webhook() -> &'static Mutex<Vec<serde_json::Value>> {
    static RECEIVED: OnceLock<&'static Mutex<Vec<serde_json::Value>>> = OnceLock::new();
    RECEIVED.get_or_init(|| {
        let url = std::env::var("ALERTMANAGER_WEBHOOK_URL").unwrap_or_else(|_| "http://127.0.0.1:9095/webhook".to_string());
        let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
        let listener = TcpListener::bind(&addr).unwrap_or_else(|e| panic!("webhook receiver on {addr}: {e}"));
        let received: &'static Mutex<Vec<serde_json::Value>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        received.lock().unwrap().push(v);
                    }
                }
                let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        received
    })
}

/// Statuses (`firing`, `resolved`) of the webhook alerts named `alertname`.
fn delivered(alertname: &str) -> Vec<(String, serde_json::Value)> {
    webhook()
        .lock()
        .unwrap()
        .iter()
        .flat_map(|body| body["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["labels"]["alertname"] == alertname)
        .map(|a| (a["status"].as_str().unwrap_or_default().to_string(), a))
        .collect()
}

/// Alertmanager's `GET /api/v2/alerts` for one alertname.
fn am_alerts(alertname: &str) -> Vec<serde_json::Value> {
    let url = format!("{}/api/v2/alerts?filter={}", alertmanager_url(), urlencode(&format!("alertname=\"{alertname}\"")));
    block_on(async { reqwest::get(&url).await.expect("Alertmanager reachable").json::<Vec<serde_json::Value>>().await.unwrap() })
}

fn rule(name: &str, group: &str) -> String {
    format!(
        r#"apiVersion: streamguard/v1
kind: Alert
metadata:
  name: {name}
  labels: {{ severity: ticket, team: payments }}
  annotations: {{ summary: "group {group} is behind" }}
spec:
  condition: max by (group) (lag_offsets{{group="{group}"}}) > 5
"#
    )
}

fn config(port: u16, group: &str, rules_dir: &std::path::Path, alertmanagers: &[String], extra: &str) -> String {
    let ams: String = alertmanagers.iter().map(|u| format!("[[alertmanagers]]\nurl = \"{u}\"\n")).collect();
    let body = format!(
        "[rules]\npaths = [\"{}\"]\nevaluation_interval = \"1s\"\nstate_file = \"{}\"\n[notify]\nresend_interval = \"2s\"\ntimeout = \"1s\"\n{extra}{ams}",
        rules_dir.display(),
        rules_dir.join("state.json").display()
    );
    agent_config_with(port, &bootstrap(), &format!("^{group}$"), &body)
}

#[test]
fn an_alert_that_fires_reaches_alertmanager_and_its_webhook_with_labels_and_annotations_and_its_resolve_arrives() {
    webhook();
    let b = bootstrap();
    let topic = unique("am-topic");
    let group = unique("am-group");
    let alertname = unique("lag-high").replace('-', "_");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[10], None);
    consume_and_commit(&b, &group, &topic, &[0]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lag.yaml"), rule(&alertname, &group)).unwrap();
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &group, dir.path(), &[alertmanager_url()], ""));

    // Fires: the per-instance series, then Alertmanager has it, then the webhook gets it.
    wait_until(Duration::from_secs(30), "streamguard_alerts firing", || {
        agent.metrics().get("streamguard_alerts", &[("alertname", &alertname), ("alertstate", "firing"), ("group", &group)]) == Some(1.0)
    });
    let mut active = Vec::new();
    wait_until(Duration::from_secs(30), "the alert in Alertmanager", || {
        active = am_alerts(&alertname);
        !active.is_empty()
    });
    let a = &active[0];
    assert_eq!(a["labels"]["group"], group.as_str(), "{a}");
    assert_eq!(a["labels"]["severity"], "ticket", "{a}");
    assert_eq!(a["labels"]["team"], "payments", "{a}");
    assert_eq!(a["annotations"]["summary"], format!("group {group} is behind"), "{a}");
    assert_eq!(a["status"]["state"], "active", "{a}");
    assert_eq!(a["generatorURL"], format!("http://127.0.0.1:{port}/api/v1/rules"), "{a}");
    wait_until(Duration::from_secs(30), "the firing alert at the webhook", || delivered(&alertname).iter().any(|(s, _)| s == "firing"));
    let (_, hook) = delivered(&alertname).into_iter().find(|(s, _)| s == "firing").unwrap();
    assert_eq!(hook["labels"]["team"], "payments", "{hook}");
    assert_eq!(hook["annotations"]["summary"], format!("group {group} is behind"), "{hook}");
    let m = agent.metrics();
    assert!(m.get("streamguard_notifications_sent_total", &[("alertmanager", &alertmanager_url())]).unwrap() >= 1.0);

    // The group catches up: the alert resolves and the resolve arrives.
    consume_and_commit(&b, &group, &topic, &[10]);
    wait_until(Duration::from_secs(30), "the resolve at the webhook", || delivered(&alertname).iter().any(|(s, _)| s == "resolved"));
    let (_, resolved) = delivered(&alertname).into_iter().find(|(s, _)| s == "resolved").unwrap();
    let ends = resolved["endsAt"].as_str().unwrap();
    let ends = humantime::parse_rfc3339_weak(ends).unwrap_or_else(|e| panic!("endsAt {ends}: {e}"));
    assert!(ends <= std::time::SystemTime::now(), "endsAt in the past: {resolved}");
    assert!(am_alerts(&alertname).iter().all(|a| a["status"]["state"] != "active"), "no longer active in Alertmanager");
    assert_eq!(agent.metrics().count("streamguard_alerts", &[("alertname", &alertname)]), 0);
}

#[test]
fn an_unreachable_alertmanager_is_counted_and_never_slows_evaluation_or_the_others() {
    webhook();
    let b = bootstrap();
    let topic = unique("am-down-topic");
    let group = unique("am-down-group");
    let alertname = unique("lag-high-down").replace('-', "_");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[10], None);
    consume_and_commit(&b, &group, &topic, &[0]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lag.yaml"), rule(&alertname, &group)).unwrap();
    // Nothing listens on `closed`; `silent` accepts connections but never answers.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let silent_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", silent_listener.local_addr().unwrap());
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &group, dir.path(), &[closed.clone(), silent.clone(), alertmanager_url()], ""));

    wait_until(Duration::from_secs(30), "errors for both dead Alertmanagers", || {
        let m = agent.metrics();
        m.get("streamguard_notifications_errors_total", &[("alertmanager", &closed), ("error", "connect")]).unwrap_or(0.0) >= 1.0
            && m.get("streamguard_notifications_errors_total", &[("alertmanager", &silent), ("error", "timeout")]).unwrap_or(0.0) >= 1.0
    });
    // The live Alertmanager still gets the alert.
    wait_until(Duration::from_secs(30), "the alert in the live Alertmanager", || !am_alerts(&alertname).is_empty());
    // Evaluation keeps its 1 s pace while requests time out.
    let evals = |a: &Agent| a.metrics().get("streamguard_rule_group_evaluations_total", &[]).unwrap_or(0.0);
    let before = evals(&agent);
    std::thread::sleep(Duration::from_secs(5));
    let after = evals(&agent);
    assert!(after - before >= 4.0, "evaluations went from {before} to {after} in 5 s");
    let m = agent.metrics();
    assert!(m.get("streamguard_notifications_queue_length", &[("alertmanager", &closed)]).unwrap() >= 1.0, "kept for retry");
    assert_eq!(agent.get("/readyz").0, 200, "a dead Alertmanager does not make the agent unready");
    drop(silent_listener);
}
