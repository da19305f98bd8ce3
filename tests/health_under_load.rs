//! Health endpoints stay answerable while heavy work runs (issue 13, item 12), and every
//! API error is JSON, through a real `streamguard run`.
//!
//! The reload test loads 16,000 rules, then rewrites them (a reload re-parses all of
//! them) while three clients scrape `/metrics` and read `/api/v1/rules` as fast as they
//! can, as Prometheus and dashboards would, and a fourth polls `/healthz` and `/readyz`.
//! The behaviour asserted: polls keep being answered throughout the reload (several of
//! them between the file change and the "rules reloaded" line), none slower than a
//! generous 3 s. Before the fix, one rule-status listing was quadratic in the rule count
//! and ran on the async threads, so scrapes held them for seconds and `/healthz` waited.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const RULES: usize = 16_000;
const FILES: usize = 16;

fn write_rules(dir: &Path, threshold: u32) {
    for f in 0..FILES {
        let mut text = String::new();
        for i in 0..RULES / FILES {
            text += &format!(
                "---\napiVersion: streamguard/v1\nkind: Alert\nmetadata:\n  name: r{f}-{i}\n  labels: {{ severity: ticket }}\nspec:\n  condition: max by (group) (lag_offsets{{group=\"g{i}\"}}) > {threshold}\n  for: 1m\n"
            );
        }
        std::fs::write(dir.join(format!("rules-{f:02}.yaml")), text).unwrap();
    }
}

fn config(port: u16, rules_dir: &Path) -> String {
    let rules = format!(
        "[rules]\npaths = [\"{}\"]\nevaluation_interval = \"1s\"\nstate_file = \"{}\"\n",
        rules_dir.display(),
        rules_dir.join("state.json").display()
    );
    agent_config_with(port, &bootstrap(), "^nothing-matches$", &rules)
}

/// A raw GET with its own timeout; (status, body, time taken).
fn timed_get(port: u16, path: &str, timeout: Duration) -> (u16, String, Duration) {
    let started = Instant::now();
    let Ok(mut s) = TcpStream::connect_timeout(&format!("127.0.0.1:{port}").parse().unwrap(), timeout) else {
        return (0, String::new(), started.elapsed());
    };
    s.set_read_timeout(Some(timeout)).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (status, body, started.elapsed())
}

#[test]
fn health_endpoints_answer_every_poll_while_16000_rules_reload_under_scrape_load() {
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), 10);
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, dir.path()));
    let loaded = |a: &Agent| a.log().matches("rules reloaded").count();
    wait_until(Duration::from_secs(60), "the rules to be evaluated", || {
        timed_get(port, "/metrics", Duration::from_secs(30)).1.contains("streamguard_rule_group_evaluation")
    });

    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = ["/metrics", "/api/v1/rules", "/metrics"]
        .into_iter()
        .map(|path| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    timed_get(port, path, Duration::from_secs(60));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    let before = loaded(&agent);
    write_rules(dir.path(), 20);
    let changed = Instant::now();
    let mut polls = Vec::new();
    while loaded(&agent) == before {
        assert!(changed.elapsed() < Duration::from_secs(180), "no reload within 180 s:\n{}", agent.log());
        for path in ["/healthz", "/readyz"] {
            let (status, _, took) = timed_get(port, path, Duration::from_secs(30));
            polls.push((path, status, took));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let slow: Vec<_> = polls.iter().filter(|(_, status, took)| *status == 0 || *took > Duration::from_secs(3)).collect();
    let reload_took = changed.elapsed();
    assert!(polls.len() >= 6, "polls kept being answered during the {reload_took:?} reload: {polls:?}");
    assert!(slow.is_empty(), "health polls slower than 3 s or unanswered during the {reload_took:?} reload: {slow:?} of {}", polls.len());
    assert!(polls.iter().any(|(p, s, _)| *p == "/healthz" && *s == 200));
}

#[test]
fn a_megabyte_query_parameter_gets_a_quick_json_400_and_unknown_routes_and_methods_answer_json() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, dir.path()));
    // A megabyte does not get past the HTTP layer: hyper refuses the request head
    // (431) before any handler runs, quickly and without a body of its own.
    let (status, _, took) = timed_get(port, &format!("/api/v1/signals?signal={}", "x".repeat(1 << 20)), Duration::from_secs(30));
    assert!(status == 431 || status == 400, "{status} after {took:?}");
    // The longest parameter that does reach a handler (60 KB, under hyper's limit) gets
    // a JSON 400 that neither echoes it nor computes a suggestion table for it.
    let long = "x".repeat(60_000);
    for path in [format!("/api/v1/signals?signal={long}"), format!("/api/v1/targets?source_kind={long}"), format!("/api/v1/signals?target=a&history={long}")] {
        let (status, body, _) = timed_get(port, &path, Duration::from_secs(30));
        assert_eq!(status, 400, "{}", &body[..body.len().min(300)]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", &body[..body.len().min(300)]));
        let message = v["error"].as_str().unwrap();
        assert!(message.len() < 300, "the answer does not echo the megabyte: {} bytes", message.len());
    }
    for (path, status) in [("/nope", 404), ("/api/v1/nope", 404), ("/api/v1/signals?limit=banana", 400), ("/api/v1/targets?unknown=1", 400)] {
        let (got, body, _) = timed_get(port, path, Duration::from_secs(10));
        assert_eq!(got, status, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {v}");
    }
    // A method the route does not allow.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("405 not JSON ({e}): {text}"));
    assert!(v["error"].as_str().is_some(), "{v}");
    drop(agent);
}
