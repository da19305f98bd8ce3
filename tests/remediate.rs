//! Remediation against the real stack: the real `streamguard run` binary, the real Kafka
//! Connect worker of `stack/up` (`$CONNECT_URL`) with FileStreamSink connectors whose task
//! really fails (its file's directory does not exist), and the real CLI.
//!
//! (a) a failed task is restarted once its directory exists, verified, audited;
//! (b) a second failure inside the cooldown is not acted on ("blocked: cooldown");
//! (c) dry-run plans and audits and sends nothing;
//! (d) Connect unreachable (its data stale) or missing: no action, audited;
//! (e) SIGKILL of the agent at 21 step boundaries of a multi-step runbook: no completed
//!     step runs twice, no step is lost, an interrupted non-idempotent step aborts;
//! (f) approve mode waits for `streamguard approve ID`; a wrong token is refused; a run
//!     waiting for approval survives a SIGKILL, blocks its target, and expires;
//! and a restart that does not help fails, rolls back, and escalates to Alertmanager.
//!
//! The only stand-ins are on the test's side: a loopback webhook receiver (it counts the
//! agent's notifications) and, in (d), a loopback TCP relay in front of the real worker
//! that the test cuts to make Connect unreachable. The SIGKILL test pauses the agent at a
//! named boundary with its documented test hook (`STREAMGUARD_TEST_PAUSE_AT`) and then
//! kills the real process with SIGKILL.

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "remediate-test-token-6c1f0e2a";
const WRONG: &str = "wrong-token-0000000000000000";

fn rest(method: reqwest::Method, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", connect_url().trim_end_matches('/'));
    block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        match client.request(method, &url).send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null))
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    })
}

fn wait_for_worker() {
    wait_until(Duration::from_secs(120), "Kafka Connect REST", || rest(reqwest::Method::GET, "/connectors").0 == 200);
}

fn task_state(c: &Connector) -> Option<String> {
    c.status()["tasks"][0]["state"].as_str().map(str::to_string)
}

fn connector_state(c: &Connector) -> Option<String> {
    c.status()["connector"]["state"].as_str().map(str::to_string)
}

/// A FileStreamSink writing into `file`; its task fails at start when the directory of
/// `file` does not exist.
fn file_sink(name: &str, topic: &str, file: &Path) -> Connector {
    Connector::create(name, json!({"connector.class": "FileStreamSink", "file": file, "topics": topic, "tasks.max": "1"}))
}

/// A connector whose only task has really FAILED, its directory created afterwards (so a
/// restart would succeed): (connector, the directory).
fn failed_sink(prefix: &str, dir: &Path) -> Connector {
    let u = unique(prefix);
    let topic = format!("{u}-in");
    create_topic(&bootstrap(), &topic, 1);
    let out = dir.join("out");
    let c = file_sink(&u, &topic, &out.join("sink.txt"));
    wait_until(Duration::from_secs(60), "the task FAILED", || task_state(&c).as_deref() == Some("FAILED"));
    c
}

/// The test's files: rules, journal, audit log, token.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(rules: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("wrong-token"), WRONG).unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An agent config: the real worker as `[[connect]] local`, `extra` sources, the
    /// rules, and `[remediation]` with `remediation` lines.
    fn config(&self, port: u16, extra: &str, remediation: &str) -> String {
        format!(
            r#"listen = "127.0.0.1:{port}"
backoff_max = "2s"

[[connect]]
name = "local"
url = "{connect}"
sample_interval = "2s"
sample_timeout = "2s"
{extra}{tables}{remediation}
"#,
            connect = connect_url().trim_end_matches('/'),
            tables = rules_and_remediation(self.dir.path()),
        )
    }

    fn audit(&self) -> Vec<Value> {
        lines(&self.path("audit.jsonl"))
    }

    fn journal(&self) -> Vec<Value> {
        lines(&self.path("journal.jsonl"))
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The real agent with extra environment variables.
fn start(config: &str, env: &[(&str, &str)]) -> Agent {
    let port: u16 = config.split("127.0.0.1:").nth(1).and_then(|r| r.split('"').next()).and_then(|p| p.parse().ok()).unwrap();
    Agent::start_with_env(port, config, env)
}

/// A request to the agent's API: (status, JSON body or the text as a string).
fn api(agent: &Agent, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build().unwrap();
    let mut req = client.request(method, format!("http://127.0.0.1:{}{path}", agent.port));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn actions(agent: &Agent) -> Vec<Value> {
    let (status, v) = api(agent, reqwest::Method::GET, "/api/v1/actions", None, None);
    assert_eq!(status, 200, "{v}");
    v["actions"].as_array().cloned().unwrap_or_default()
}

/// Waits for a run of `runbook` in `state` and returns it.
fn wait_for_run(agent: &Agent, runbook: &str, state: &str, timeout: Duration) -> Value {
    let mut found = None;
    let deadline = Instant::now() + timeout;
    while found.is_none() {
        let all = actions(agent);
        // A run that ended otherwise will not get there: say so now, with its story.
        if let Some(other) = all.iter().find(|a| a["runbook"] == runbook && a["state"] != state && ["failed", "aborted", "expired"].contains(&a["state"].as_str().unwrap_or(""))) {
            panic!("a {runbook} run ended {} while waiting for {state}: {other:#}\n{}", other["state"], agent.log());
        }
        found = all.into_iter().find(|a| a["runbook"] == runbook && a["state"] == state);
        if found.is_none() {
            assert!(Instant::now() < deadline, "no {runbook} run {state} within {timeout:?}: {:#?}\n{}", actions(agent), agent.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    found.unwrap()
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).env_remove("STREAMGUARD_API_TOKEN").env_remove("STREAMGUARD_CONFIG").output().unwrap()
}

/// An alert on the failed tasks of one connector that names `runbook`, and that runbook.
fn rules(connector: &str, runbook_spec: &str) -> String {
    format!(
        r#"apiVersion: streamguard/v1
kind: Alert
metadata: {{ name: connector-task-failed }}
spec:
  condition: 'max by (connect, connector) (connector_failed_tasks{{connector="{connector}"}}) > 0'
  runbooks: [restart]
---
apiVersion: streamguard/v1
kind: Runbook
metadata: {{ name: restart }}
spec:
{runbook_spec}"#
    )
}

const RESTART: &str = r#"  target: [connect, connector]
  guards:
    cooldown: 10m
    preconditions: ["max by (connect, connector) (connector_failed_tasks) > 0"]
  steps:
    - action: connect
      operation: restart-failed-tasks
      deadline: 45s
      max_tasks: 1
  verify:
    condition: "max by (connect, connector) (connector_failed_tasks) == 0"
    deadline: 1m
"#;

#[test]
fn a_failed_task_is_restarted_once_its_directory_exists_verified_and_audited_and_a_second_failure_inside_the_cooldown_is_blocked() {
    wait_for_worker();
    let work = tempfile::tempdir().unwrap();
    let c = failed_sink("sg-rem-act", work.path());
    std::fs::create_dir_all(work.path().join("out")).unwrap();
    let files = Files::new(&rules(&c.name, &format!("  mode: act\n{RESTART}")));
    let agent = start(&files.config(free_port(), "", ""), &[]);

    // (a) The alert fires on fresh data, the runbook restarts the failed task, verifies.
    let run = wait_for_run(&agent, "restart", "succeeded", Duration::from_secs(120));
    wait_until(Duration::from_secs(30), "the task RUNNING", || task_state(&c).as_deref() == Some("RUNNING"));
    assert_eq!(run["executed"], true);
    assert_eq!(run["target"], json!({"connect": "local", "connector": c.name}));
    let trigger = &run["trigger"];
    assert_eq!(trigger["rule"], "connector-task-failed");
    assert_eq!(trigger["to"], "firing");
    assert_eq!(trigger["fresh"], true);
    let ev = &trigger["evidence"][0];
    assert_eq!((ev["signal"].as_str(), ev["quality"].as_str(), ev["value"].as_f64()), (Some("connector_failed_tasks"), Some("fresh"), Some(1.0)), "{trigger}");
    assert!(run["guards"].as_array().unwrap().iter().all(|g| g["passed"] == true), "{run}");

    // The audit log has the whole story: decision, step, verification, end.
    let audit = files.audit();
    let id = run["id"].as_str().unwrap();
    let of = |kind: &str| audit.iter().filter(|r| r["run_id"] == id && r["kind"] == kind).cloned().collect::<Vec<_>>();
    let decision = &of("decision")[0];
    assert_eq!((decision["executed"].as_bool(), decision["decision"].as_str()), (Some(true), Some("running")), "{decision}");
    assert_eq!(decision["trigger"]["evidence"][0]["signal"], "connector_failed_tasks");
    let guards: Vec<&str> = decision["guards"].as_array().unwrap().iter().map(|g| g["guard"].as_str().unwrap()).collect();
    assert_eq!(guards, ["trigger", "cooldown", "target_busy", "rate", "concurrency", "fresh_data", "precondition"], "{decision}");
    let step = &of("step")[0];
    assert_eq!(step["request"], format!("POST /connectors/{}/restart?includeTasks=true&onlyFailed=true", c.name));
    assert_eq!(step["status"], 202, "{step}");
    assert_eq!(step["ok"], true);
    assert!(step["observed"].as_str().unwrap().contains("tasks [RUNNING]"), "{step}");
    assert!(step["duration_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(of("verification")[0]["ok"], true);
    assert_eq!(of("run")[0]["end"], "succeeded");
    let m = agent.metrics();
    assert_eq!(m.get("streamguard_remediation_runs_total", &[("runbook", "restart"), ("outcome", "succeeded")]), Some(1.0));
    assert_eq!(m.get("streamguard_remediation_steps_total", &[("action", "connect"), ("outcome", "ok")]), Some(1.0));
    assert_eq!(m.get("streamguard_remediation_runs_in_progress", &[]), Some(0.0));
    assert_eq!(m.count("streamguard_remediation_step_duration_seconds_count", &[("action", "connect")]), 1);
    promtool_check_metrics(&m.text);

    // (b) It fails again inside the cooldown: not acted on, and the audit says why.
    std::fs::remove_dir_all(work.path().join("out")).unwrap();
    let (status, body) = rest(reqwest::Method::POST, &format!("/connectors/{}/tasks/0/restart", c.name));
    assert!(status == 202 || status == 204, "{status} {body}");
    wait_until(Duration::from_secs(60), "the task FAILED again", || task_state(&c).as_deref() == Some("FAILED"));
    let blocked = wait_for_run(&agent, "restart", "blocked", Duration::from_secs(60));
    assert!(blocked["reason"].as_str().unwrap().starts_with("blocked: cooldown"), "{blocked}");
    assert_eq!(blocked["executed"], false);
    let record = files.audit().into_iter().find(|r| r["run_id"] == blocked["id"]).unwrap();
    assert_eq!(record["executed"], false);
    assert!(record["reason"].as_str().unwrap().starts_with("blocked: cooldown"), "{record}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(task_state(&c).as_deref(), Some("FAILED"), "nothing restarted it");
    assert_eq!(agent.metrics().get("streamguard_remediation_guard_blocks_total", &[("runbook", "restart"), ("guard", "cooldown")]), Some(1.0));
}

#[test]
fn dry_run_plans_and_audits_and_the_worker_receives_nothing() {
    wait_for_worker();
    let work = tempfile::tempdir().unwrap();
    let c = failed_sink("sg-rem-dry", work.path());
    // A restart would now succeed: a task still FAILED later proves none was sent.
    std::fs::create_dir_all(work.path().join("out")).unwrap();
    // No mode in the runbook, none in [remediation]: dry-run. No token: mutations off.
    let files = Files::new(&rules(&c.name, RESTART));
    let agent = start(&files.config(free_port(), "", ""), &[]);
    let run = wait_for_run(&agent, "restart", "dry_run", Duration::from_secs(60));
    assert_eq!((run["mode"].as_str(), run["executed"].as_bool()), (Some("dry-run"), Some(false)));
    assert!(run["steps"].as_array().unwrap().iter().all(|s| s["state"] == "pending" && s["request"].is_null()), "{run}");
    let audit = files.audit();
    let decision = audit.iter().find(|r| r["run_id"] == run["id"]).unwrap();
    assert_eq!((decision["executed"].as_bool(), decision["decision"].as_str()), (Some(false), Some("dry_run")), "{decision}");
    assert_eq!(decision["steps"][0]["description"], "connect restart-failed-tasks");
    assert!(audit.iter().all(|r| r["kind"] != "step"), "no step was executed: {audit:#?}");

    // `streamguard plan` says what it would do now, and why; `actions` lists the run.
    let base = format!("http://127.0.0.1:{}", agent.port);
    let out = cli(&["plan", "--url", &base]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("connector-task-failed connect=local,connector={} → runbook restart (dry-run): would run (dry-run: nothing is sent)", c.name)), "{stdout}");
    assert!(stdout.contains("pass  precondition"), "{stdout}");
    let out = cli(&["actions", "--url", &base]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with(run["id"].as_str().unwrap()) && l.contains("dry_run")), "{stdout}");

    // Without a configured token the mutating endpoints are off.
    let (status, body) = api(&agent, reqwest::Method::POST, "/api/v1/runbooks/restart/run", Some(TOKEN), Some(json!({"target": {"connect": "local", "connector": c.name}})));
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("mutating endpoints are off"), "{body}");

    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(task_state(&c).as_deref(), Some("FAILED"), "the worker received no restart");
    assert_eq!(agent.metrics().get("streamguard_remediation_runs_total", &[("runbook", "restart"), ("outcome", "dry_run")]), Some(1.0));
}

/// A loopback TCP relay to the real worker that the test can cut (every connection).
struct Relay {
    port: u16,
    open: Arc<Mutex<Vec<TcpStream>>>,
    on: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let on = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (o, flag) = (open.clone(), on.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let mut list = o.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, open, on }
    }

    /// Refuses every new connection and closes the open ones.
    fn cut(&self) {
        self.on.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn with_connect_unreachable_or_unknown_nothing_is_sent_and_the_refusal_is_audited() {
    wait_for_worker();
    let work = tempfile::tempdir().unwrap();
    let c = failed_sink("sg-rem-stale", work.path());
    std::fs::create_dir_all(work.path().join("out")).unwrap();
    let relay = Relay::start(&connect_url());
    let dead = free_port();
    let extra = format!(
        r#"
[[connect]]
name = "relayed"
url = "http://127.0.0.1:{}"
sample_interval = "2s"
sample_timeout = "2s"

[[connect]]
name = "dead"
url = "http://127.0.0.1:{dead}"
sample_interval = "1s"
sample_timeout = "1s"
"#,
        relay.port
    );
    // Act mode and no precondition: only the freshness of the data stands in the way.
    let spec = "  mode: act\n  target: [connect, connector]\n  guards: { cooldown: 0s }\n  steps:\n    - action: connect\n      operation: restart-failed-tasks\n";
    let files = Files::new(&rules("no-such-connector", spec));
    let token = files.path("token");
    let agent = start(&files.config(free_port(), &extra, &format!("api_token_file = \"{}\"", token.display())), &[]);
    let fresh = |q: &str| {
        let (_, body) = agent.get("/api/v1/targets?source_kind=connect");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["sources"].as_array().into_iter().flatten().any(|s| s["name"] == "relayed" && s["quality"] == q)
    };
    wait_until(Duration::from_secs(30), "the relayed source fresh", || fresh("fresh"));
    relay.cut();
    wait_until(Duration::from_secs(30), "the relayed source stale", || fresh("stale"));

    let base = format!("http://127.0.0.1:{}", agent.port);
    let t = token.display().to_string();
    for (connect, why) in [("relayed", "blocked: stale data"), ("dead", "blocked: missing data")] {
        let out = cli(&["act", "restart", "--target", &format!("connect={connect}"), "--target", &format!("connector={}", c.name), "--url", &base, "--token-file", &t]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "a blocked run exits 1: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(why), "{connect}: {stdout}");
    }
    let audit = files.audit();
    let decisions: Vec<&Value> = audit.iter().filter(|r| r["kind"] == "decision").collect();
    assert_eq!(decisions.len(), 2, "{audit:#?}");
    for d in &decisions {
        assert_eq!((d["executed"].as_bool(), d["decision"].as_str(), d["trigger"].as_str()), (Some(false), Some("blocked"), Some("manual")), "{d}");
        let g = d["guards"].as_array().unwrap().iter().find(|g| g["guard"] == "fresh_data").unwrap();
        assert_eq!(g["passed"], false, "{d}");
    }
    assert!(files.journal().iter().all(|r| r["type"] != "started"), "no run started: {:#?}", files.journal());
    assert_eq!(task_state(&c).as_deref(), Some("FAILED"), "the worker received no restart");
    let m = agent.metrics();
    assert_eq!(m.get("streamguard_remediation_guard_blocks_total", &[("runbook", "restart"), ("guard", "fresh_data")]), Some(2.0));
}

#[test]
fn approve_mode_waits_for_streamguard_approve_and_a_wrong_or_missing_token_is_refused() {
    wait_for_worker();
    let work = tempfile::tempdir().unwrap();
    let c = failed_sink("sg-rem-approve", work.path());
    std::fs::create_dir_all(work.path().join("out")).unwrap();
    let files = Files::new(&rules(&c.name, &format!("  mode: approve\n{RESTART}")));
    let token = files.path("token");
    let agent = start(&files.config(free_port(), "", &format!("api_token_file = \"{}\"", token.display())), &[]);
    let run = wait_for_run(&agent, "restart", "awaiting_approval", Duration::from_secs(60));
    let id = run["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(task_state(&c).as_deref(), Some("FAILED"), "nothing happens before the approval");

    let path = format!("/api/v1/actions/{id}/approve");
    let (status, body) = api(&agent, reqwest::Method::POST, &path, None, None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = api(&agent, reqwest::Method::POST, &path, Some(WRONG), None);
    assert_eq!(status, 403, "{body}");
    assert!(!body.to_string().contains(WRONG) && !body.to_string().contains(TOKEN), "{body}");
    let base = format!("http://127.0.0.1:{}", agent.port);
    let wrong = files.path("wrong-token").display().to_string();
    let out = cli(&["approve", &id, "--url", &base, "--token-file", &wrong]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP 403: invalid token"), "{stderr}");
    assert!(!stderr.contains(WRONG) && !stderr.contains(TOKEN), "{stderr}");
    assert!(agent.get(&format!("/api/v1/actions/{id}")).1.contains("awaiting_approval"), "still waiting");

    let out = cli(&["approve", &id, "--url", &base, "--token-file", &token.display().to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("approved {id}"));
    let done = wait_for_run(&agent, "restart", "succeeded", Duration::from_secs(90));
    assert_eq!(done["id"], id.as_str());
    assert_eq!(task_state(&c).as_deref(), Some("RUNNING"));
    assert!(files.audit().iter().any(|r| r["kind"] == "approval" && r["run_id"] == id.as_str()));
    // A second approval of a run that is not waiting any more is a conflict.
    let (status, _) = api(&agent, reqwest::Method::POST, &path, Some(TOKEN), None);
    assert_eq!(status, 409);
    let log = agent.log();
    assert!(!log.contains(TOKEN) && !log.contains(WRONG), "the token never reaches the log");
}

#[test]
fn a_run_waiting_for_approval_survives_a_sigkill_blocks_its_target_and_expires_unapproved() {
    wait_for_worker();
    let work = tempfile::tempdir().unwrap();
    let c = failed_sink("sg-rem-expire", work.path());
    std::fs::create_dir_all(work.path().join("out")).unwrap();
    let files = Files::new(&rules(&c.name, &format!("  mode: approve\n{RESTART}")));
    let config = |port| files.config(port, "", &format!("api_token_file = \"{}\"\napproval_timeout = \"12s\"", files.path("token").display()));
    let mut agent = start(&config(free_port()), &[]);
    let waiting = wait_for_run(&agent, "restart", "awaiting_approval", Duration::from_secs(60));
    let id = waiting["id"].as_str().unwrap().to_string();
    agent.child.kill().unwrap(); // SIGKILL
    agent.child.wait().unwrap();
    drop(agent);

    let agent = start(&config(free_port()), &[]);
    // Recovered from the journal, still waiting; the alert fires again in the new process
    // and its run is blocked: one run per target.
    let (status, run) = api(&agent, reqwest::Method::GET, &format!("/api/v1/actions/{id}"), None, None);
    assert_eq!((status, run["state"].as_str()), (200, Some("awaiting_approval")), "{run}");
    let blocked = wait_for_run(&agent, "restart", "blocked", Duration::from_secs(60));
    let busy = blocked["guards"].as_array().unwrap().iter().find(|g| g["guard"] == "target_busy").unwrap();
    assert_eq!(busy["passed"], false, "{blocked}");
    assert!(busy["reason"].as_str().unwrap().starts_with("target busy: a run of runbook restart is in progress or awaiting approval"), "{blocked}");
    let expired = wait_for_run(&agent, "restart", "expired", Duration::from_secs(60));
    assert_eq!(expired["id"], id.as_str());
    assert!(expired["reason"].as_str().unwrap().starts_with("not approved within 12s"), "{expired}");
    assert_eq!(task_state(&c).as_deref(), Some("FAILED"), "nothing was sent");
    let (status, _) = api(&agent, reqwest::Method::POST, &format!("/api/v1/actions/{id}/approve"), Some(TOKEN), None);
    assert_eq!(status, 409, "too late to approve");
    assert!(files.audit().iter().any(|r| r["kind"] == "run" && r["run_id"] == id.as_str() && r["end"] == "expired"));
    assert_eq!(agent.metrics().get("streamguard_remediation_runs_total", &[("runbook", "restart"), ("outcome", "expired")]), Some(1.0));
}

/// A loopback webhook receiver: every JSON body it got.
struct Webhook {
    port: u16,
    got: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let Ok(n) = s.read(&mut chunk) else { break None };
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(at) = text.find("\r\n\r\n") {
                        let len = text[..at]
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                            .unwrap_or(0);
                        if buf.len() >= at + 4 + len {
                            break Some(buf[at + 4..at + 4 + len].to_vec());
                        }
                    }
                };
                if let Some(b) = body {
                    g.lock().unwrap().push(serde_json::from_slice(&b).unwrap_or(Value::Null));
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Webhook { port, got }
    }

    /// Deliveries for `run_id` in `phase`, by step.
    fn count(&self, run_id: &str, phase: &str) -> BTreeMap<u64, usize> {
        let mut out = BTreeMap::new();
        for v in self.got.lock().unwrap().iter().filter(|v| v["run_id"] == run_id && v["phase"] == phase) {
            *out.entry(v["step"].as_u64().unwrap()).or_default() += 1;
        }
        out
    }
}

/// Journal records of one run.
fn records(files: &Files, id: &str) -> Vec<Value> {
    files.journal().into_iter().filter(|r| r["id"] == id).collect()
}

/// (intents, outcomes) per (phase, step); and whether an intent ever followed an outcome
/// of the same step (a completed step run again).
type Tally = BTreeMap<(String, u64), (usize, usize)>;

fn tally(recs: &[Value]) -> (Tally, Vec<String>) {
    let mut t = Tally::new();
    let mut repeated = Vec::new();
    for r in recs {
        let (Some(phase), Some(step)) = (r["phase"].as_str(), r["step"].as_u64()) else { continue };
        let e = t.entry((phase.to_string(), step)).or_default();
        match r["type"].as_str() {
            Some("intent") => {
                if e.1 > 0 {
                    repeated.push(format!("{phase}:{step}"));
                }
                e.0 += 1;
            }
            Some("outcome") => e.1 += 1,
            _ => {}
        }
    }
    (t, repeated)
}

#[test]
fn sigkill_at_every_step_boundary_never_repeats_a_completed_step_never_loses_one_and_aborts_an_interrupted_restart() {
    wait_for_worker();
    let work = tempfile::tempdir().unwrap();
    let u = unique("sg-rem-kill");
    let topic = format!("{u}-in");
    create_topic(&bootstrap(), &topic, 1);
    let c = file_sink(&u, &topic, &work.path().join("sink.txt"));
    wait_until(Duration::from_secs(60), "the task RUNNING", || task_state(&c).as_deref() == Some("RUNNING"));
    let hook = Webhook::start();
    let h = format!("http://127.0.0.1:{}", hook.port);
    let spec = format!(
        r#"  mode: act
  target: [connect, connector]
  guards: {{ cooldown: 0s, max_runs: 100, window: 1h }}
  steps:
    - {{ action: notify, url: "{h}/start", message: start }}
    - {{ action: connect, operation: pause, deadline: 45s }}
    - wait: {{ condition: 'max by (connect, connector) (connector_state{{state="PAUSED"}}) == 1', deadline: 45s }}
    - {{ action: connect, operation: resume, deadline: 45s }}
    - {{ action: connect, operation: restart, deadline: 60s }}
    - {{ action: notify, url: "{h}/done", message: done }}
  verify:
    condition: "max by (connect, connector) (connector_failed_tasks) == 0"
    deadline: 1m
  escalate:
    - {{ action: notify, url: "{h}/escalate", message: escalate }}
"#
    );
    // The alert never fires (no such connector): runs are started by an operator.
    let files = Files::new(&rules("no-such-connector", &spec));
    let remediation = format!("api_token_file = \"{}\"", files.path("token").display());
    let pause_file = files.path("paused");
    let pf = pause_file.display().to_string();
    let target = json!({"target": {"connect": "local", "connector": c.name}});
    let kills = std::cell::Cell::new(0);

    // Starts the agent paused at `at` (or not at all), returns it.
    let agent_at = |at: Option<&str>| {
        let _ = std::fs::remove_file(&pause_file);
        let env: Vec<(&str, &str)> = match at {
            Some(b) => vec![("STREAMGUARD_TEST_PAUSE_AT", b), ("STREAMGUARD_TEST_PAUSE_FILE", pf.as_str())],
            None => vec![],
        };
        start(&files.config(free_port(), "", &remediation), &env)
    };
    // Waits for the agent to pause at `at`, then SIGKILLs it.
    let kill_at = |mut agent: Agent, at: &str| {
        wait_until(Duration::from_secs(120), &format!("paused at {at}"), || std::fs::read_to_string(&pause_file).ok().as_deref() == Some(at));
        agent.child.kill().unwrap(); // SIGKILL
        let status = agent.child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
        kills.set(kills.get() + 1);
    };

    // Run A: killed at every boundary but the restart's intent, resumed each time.
    let boundaries = [
        "steps:0:before", "steps:0:intent", "steps:0:outcome", "steps:1:before", "steps:1:intent", "steps:1:outcome",
        "steps:2:before", "steps:2:intent", "steps:2:outcome", "steps:3:before", "steps:3:intent", "steps:3:outcome",
        "steps:4:before", "steps:4:outcome", "steps:5:before", "steps:5:intent", "steps:5:outcome", "verify:0:intent",
        "verify:0:outcome",
    ];
    let agent = agent_at(Some(boundaries[0]));
    let (status, run) = api(&agent, reqwest::Method::POST, "/api/v1/runbooks/restart/run", Some(TOKEN), Some(target.clone()));
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["state"], "running", "{run}");
    let run_a = run["id"].as_str().unwrap().to_string();
    kill_at(agent, boundaries[0]);
    for b in &boundaries[1..] {
        kill_at(agent_at(Some(b)), b);
    }
    let agent = agent_at(None);
    let done = wait_for_run(&agent, "restart", "succeeded", Duration::from_secs(120));
    assert_eq!(done["id"], run_a.as_str());
    wait_until(Duration::from_secs(60), "the connector RUNNING", || connector_state(&c).as_deref() == Some("RUNNING") && task_state(&c).as_deref() == Some("RUNNING"));

    let recs = records(&files, &run_a);
    let (t, repeated) = tally(&recs);
    assert!(repeated.is_empty(), "completed steps ran again: {repeated:?}\n{recs:#?}");
    for step in 0..6u64 {
        let (intents, outcomes) = t[&("steps".to_string(), step)];
        assert_eq!(outcomes, 1, "step {step} has exactly one outcome: {recs:#?}");
        // Killed between its intent and its outcome: retried once (all idempotent).
        let want = if boundaries.contains(&format!("steps:{step}:intent").as_str()) { 2 } else { 1 };
        assert_eq!(intents, want, "step {step}: {recs:#?}");
    }
    assert_eq!(t[&("verify".to_string(), 0)], (2, 1));
    assert!(recs.iter().all(|r| r["type"] != "outcome" || r["ok"] == true), "{recs:#?}");
    assert_eq!(recs.last().unwrap()["type"], "finished");
    assert_eq!(recs.last().unwrap()["end"], "succeeded");
    // Each notification delivered exactly once: the kill before a request never sent it,
    // the one after its outcome never repeats it.
    assert_eq!(hook.count(&run_a, "steps"), BTreeMap::from([(0, 1), (5, 1)]));
    assert!(hook.count(&run_a, "escalate").is_empty());

    // Run B: killed inside the (idempotent) pause, then inside the (non-idempotent)
    // restart: the restart is not repeated; the run aborts and escalates.
    drop(agent);
    let agent = agent_at(Some("steps:1:intent"));
    let (status, run) = api(&agent, reqwest::Method::POST, "/api/v1/runbooks/restart/run", Some(TOKEN), Some(target));
    assert_eq!(status, 200, "{run}");
    let run_b = run["id"].as_str().unwrap().to_string();
    kill_at(agent, "steps:1:intent");
    kill_at(agent_at(Some("steps:4:intent")), "steps:4:intent");
    let agent = agent_at(None);
    let aborted = wait_for_run(&agent, "restart", "aborted", Duration::from_secs(60));
    assert_eq!(aborted["id"], run_b.as_str());
    assert!(aborted["reason"].as_str().unwrap().contains("step 4 (connect) is not idempotent: not repeated"), "{aborted}");
    let recs = records(&files, &run_b);
    let (t, repeated) = tally(&recs);
    assert!(repeated.is_empty(), "{repeated:?}");
    assert_eq!(t[&("steps".to_string(), 1)], (2, 1), "the pause was retried once");
    assert_eq!(t[&("steps".to_string(), 4)], (1, 1), "the restart's intent is never written twice");
    let restart_outcome = recs.iter().find(|r| r["type"] == "outcome" && r["step"] == 4).unwrap();
    assert_eq!(restart_outcome["ok"], false);
    assert!(!t.contains_key(&("steps".to_string(), 5)), "nothing after the abort: {recs:#?}");
    assert_eq!(hook.count(&run_b, "escalate"), BTreeMap::from([(0, 1)]), "escalated once");
    assert_eq!(recs.last().unwrap()["end"], "aborted");
    assert_eq!(kills.get(), 21, "at least 20 kills across the boundaries");
    // Leave the connector running for the next test (the aborted run left it RUNNING
    // after its resume; check).
    assert_eq!(connector_state(&c).as_deref(), Some("RUNNING"));
}

fn alertmanager_url() -> String {
    std::env::var("ALERTMANAGER_URL").unwrap_or_else(|_| "http://127.0.0.1:9094".to_string()).trim_end_matches('/').to_string()
}

#[test]
fn a_restart_that_does_not_bring_the_task_back_fails_rolls_back_by_stopping_the_connector_and_escalates_to_alertmanager() {
    wait_for_worker();
    let work = tempfile::tempdir().unwrap();
    // The directory stays missing: the restarted task fails again.
    let c = failed_sink("sg-rem-escalate", work.path());
    let spec = format!(
        r#"  mode: act
  target: [connect, connector]
  steps:
    - {{ action: connect, operation: restart-failed-tasks, deadline: 5s, retries: 1 }}
  rollback:
    - {{ action: connect, operation: stop, deadline: 45s }}
  escalate:
    - {{ action: notify, format: alertmanager, url: "{am}", message: "restart did not help; connector stopped" }}
"#,
        am = alertmanager_url()
    );
    let files = Files::new(&rules(&c.name, &spec));
    let agent = start(&files.config(free_port(), "", ""), &[]);
    let run = wait_for_run(&agent, "restart", "failed", Duration::from_secs(120));
    let steps = run["steps"].as_array().unwrap();
    let step = |phase: &str| steps.iter().find(|s| s["phase"] == phase).unwrap().clone();
    let restart = step("steps");
    assert_eq!((restart["state"].as_str(), restart["attempts"].as_u64()), (Some("failed"), Some(2)), "idempotent: retried once: {run}");
    assert!(restart["error"].as_str().unwrap().contains("expected connector and every task RUNNING within 5s"), "{restart}");
    assert!(run["reason"].as_str().unwrap().starts_with("step 0 (connect) failed"), "{run}");
    assert_eq!(step("rollback")["state"], "ok", "{run}");
    assert_eq!(step("escalate")["state"], "ok", "{run}");
    assert_eq!(connector_state(&c).as_deref(), Some("STOPPED"), "the rollback really stopped it");
    // The real Alertmanager has the escalation.
    let url = format!("{}/api/v2/alerts?filter=alertname%3D%22StreamguardRemediation%22", alertmanager_url());
    let alerts: Value = block_on(async { reqwest::get(&url).await.unwrap().json().await.unwrap() });
    let mine = alerts.as_array().unwrap().iter().find(|a| a["labels"]["connector"] == c.name.as_str()).unwrap_or_else(|| panic!("{alerts:#}"));
    assert_eq!(mine["labels"]["runbook"], "restart");
    assert_eq!(mine["annotations"]["summary"], "restart did not help; connector stopped");
    assert_eq!(mine["annotations"]["run_id"], run["id"]);
    let m = agent.metrics();
    assert_eq!(m.get("streamguard_remediation_runs_total", &[("runbook", "restart"), ("outcome", "failed")]), Some(1.0));
    assert_eq!(m.get("streamguard_remediation_steps_total", &[("action", "connect"), ("outcome", "error")]), Some(1.0));
    assert_eq!(m.get("streamguard_remediation_steps_total", &[("action", "notify"), ("outcome", "ok")]), Some(1.0));
}
