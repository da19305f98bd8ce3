//! Scaling through runbooks against the real stack: the real `streamguard run` binary
//! samples the real Kafka of `stack/up kafka` (`$KAFKA_BOOTSTRAP`), an alert fires on
//! the group's lag, its runbook's `scale` step runs the target's policy on the sampled
//! rates and scales a `process` pool of real consumers (`examples/scale_consumer.rs`).
//! Nothing is mocked; the producer is this test, writing at a steady rate.
//!
//! (a) a slow pool (one consumer, too slow for the producer) is scaled out under the
//!     `throughput` policy; the consume rate rises; the lag falls; verification passes;
//!     the audit shows the rates and the computed count;
//! (b) a scale-out that cannot help (a single-partition topic: more consumers sit idle)
//!     is detected, rolled back, and further scale-outs are blocked for the cooldown;
//! (c) under the `lag` policy, once the backlog is gone the scale-down waits for the
//!     stabilization window (the held decisions' why is in the audit), then happens; the
//!     rebalance of each change is measured and shown;
//! (g) with the broker SIGSTOPped (a private one) the Kafka data goes stale: runs asked
//!     for then never change the pool, and the block is audited with a bounded reason;
//!     a dry run asked for before computes the count the policy would choose.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use serde_json::Value;

const TOKEN: &str = "scale-test-token-5d2c9a71e0";

fn consumer_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = run(Command::new(cargo).current_dir(repo_root()).args(["build", "--locked", "--example", "scale_consumer"]));
    assert!(out.status.success(), "building the scale_consumer example failed:\n{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(env!("CARGO_BIN_EXE_streamguard")).parent().unwrap().join("examples/scale_consumer")
}

/// Produces `rate` records/s to every partition in turn until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(bootstrap: &str, topic: &str, rate: u64) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, b, t) = (stop.clone(), bootstrap.to_string(), topic.to_string());
        let thread = std::thread::spawn(move || {
            let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new().set("bootstrap.servers", &b).set("linger.ms", "20").create().unwrap();
            let start = Instant::now();
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                let payload = format!("{{\"n\":{n}}}");
                let key = format!("k{}", n % 64);
                // A full queue only delays this record; the pacing below keeps the rate.
                p.send(BaseRecord::to(&t).key(&key).payload(&payload)).ok();
                n += 1;
                let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            p.flush(Duration::from_secs(5)).ok();
        });
        Traffic { stop, thread: Some(thread) }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("audit.jsonl")).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Starts the agent with the rules and one `[[scale]]` target.
    fn agent(&self, group: &str, rules: &str, scale: &str) -> Agent {
        self.agent_on(&bootstrap(), group, rules, scale)
    }

    /// The agent, sampling the broker at `bootstrap`.
    fn agent_on(&self, bootstrap: &str, group: &str, rules: &str, scale: &str) -> Agent {
        std::fs::write(self.path("rules.yaml"), rules).unwrap();
        std::fs::write(self.path("token"), TOKEN).unwrap();
        let d = self.dir.path().display();
        let port = free_port();
        let extra = format!(
            r#"
[history]
rate_window = "8s"
status_window = "8s"
{tables}api_token_file = "{d}/token"

{scale}
"#,
            tables = rules_and_remediation(self.dir.path()),
        );
        let cfg = agent_config_with(port, bootstrap, &format!("^{group}$"), &extra);
        let path = write_config(self.dir.path(), &cfg);
        // `check` accepts exactly what `run` runs.
        let out = run(Command::new(bin()).args(["check", "--config"]).arg(&path).env_remove("STREAMGUARD_CONFIG"));
        assert!(out.status.success(), "check: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let log = std::fs::File::create(self.path("agent.log")).unwrap();
        let child = Command::new(bin()).args(["run", "--config"]).arg(&path).env("STREAMGUARD_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let agent = Agent { child, port, _dir: tempfile::tempdir().unwrap() };
        wait_until(Duration::from_secs(30), "the agent healthy", || agent.get("/healthz").0 == 200);
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }
}

const THROUGHPUT: &str = r#"{ type = "throughput", catch_up_within = "1m" }"#;

fn scale_table(name: &str, group: &str, topic: &str, exe: &Path, delay_ms: u32, extra: &str) -> String {
    scale_table_on(&bootstrap(), name, group, topic, exe, delay_ms, THROUGHPUT, extra)
}

#[allow(clippy::too_many_arguments)]
fn scale_table_on(bootstrap: &str, name: &str, group: &str, topic: &str, exe: &Path, delay_ms: u32, policy: &str, extra: &str) -> String {
    format!(
        r#"[[scale]]
name = "{name}"
group = "{group}"
topic = "{topic}"
min_replicas = 1
max_replicas = 4
max_step = 4
min_interval = "0s"
max_data_age = "20s"
policy = {policy}
effectiveness = {{ min_rise = 0.3, verify_within = "35s", cooldown = "10m" }}
actuator = {{ type = "process", command = ["{exe}"], env = {{ KAFKA_BOOTSTRAP = "{bootstrap}", SCALE_CONSUMER_DELAY_MS = "{delay_ms}" }}, stop_grace = "10s" }}
{extra}"#,
        exe = exe.display(),
    )
}

fn rules(group: &str, lag_over: u32, verify_under: u32, cooldown: &str) -> String {
    format!(
        r#"apiVersion: streamguard/v1
kind: Alert
metadata: {{ name: consumers-behind }}
spec:
  condition: 'max by (cluster, group) (group_lag_offsets{{group="{group}"}}) > {lag_over}'
  runbooks: [scale-out]
---
apiVersion: streamguard/v1
kind: Runbook
metadata: {{ name: scale-out }}
spec:
  mode: act
  target: [cluster, group]
  guards: {{ cooldown: {cooldown}, max_runs: 50, window: 1h }}
  steps:
    - action: scale
      timeout: 2m
  verify:
    condition: 'max by (cluster, group) (group_lag_offsets{{group="{group}"}}) < {verify_under}'
    deadline: 3m
"#
    )
}

fn actions(agent: &Agent) -> Vec<Value> {
    let (status, body) = agent.get("/api/v1/actions");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["actions"].as_array().cloned().unwrap_or_default()
}

fn running(agent: &Agent, target: &str) -> Option<f64> {
    agent.metrics().get("streamguard_scale_process_replicas", &[("target", target), ("state", "running")])
}

#[test]
fn a_slow_pool_is_scaled_out_under_the_throughput_policy_the_lag_falls_and_the_audit_shows_the_rates_and_the_count() {
    let exe = consumer_binary();
    let topic = unique("scale-a");
    let group = unique("scale-a-g");
    create_topic(&bootstrap(), &topic, 4);
    // 120 records/s against one replica doing at most 40/s (25 ms per record).
    let _producer = Traffic::start(&bootstrap(), &topic, 120);
    let setup = Setup::new();
    let agent = setup.agent(&group, &rules(&group, 400, 150, "10m"), &scale_table("orders", &group, &topic, &exe, 25, ""));
    wait_until(Duration::from_secs(60), "the pool at its min_replicas", || running(&agent, "orders") == Some(1.0));

    let deadline = Instant::now() + Duration::from_secs(360);
    let run = loop {
        let a = actions(&agent);
        if let Some(r) = a.iter().find(|r| r["runbook"] == "scale-out" && r["state"] == "succeeded") {
            break r.clone();
        }
        if let Some(r) = a.iter().find(|r| r["runbook"] == "scale-out" && r["state"] == "failed") {
            panic!("the scale-out run failed: {r:#}\n{}", setup.log());
        }
        assert!(Instant::now() < deadline, "no successful scale-out run: {a:#?}\n{}", setup.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    let step = &run["steps"][0];
    let observed = step["observed"].as_str().unwrap();
    // e.g. "1 → 4: ceil((produce 120.3/s + lag 2417 / 1m) / per-consumer 39.1/s) = 5; bounded to [1, 4]; scale-out 1 → 4 helped: …"
    assert!(observed.starts_with("1 → ") && observed.contains("ceil((produce ") && observed.contains("/ per-consumer "), "{observed}");
    assert!(observed.contains("helped: consume rate"), "the scale-out was verified effective: {observed}");
    let to: u32 = observed["1 → ".len()..].split(':').next().unwrap().trim().parse().unwrap();
    assert!((3..=4).contains(&to), "120/s needs at least 3 consumers of 40/s: {observed}");
    assert_eq!(running(&agent, "orders"), Some(to as f64));

    // The audit's step record carries the decision: the rates and the computed count.
    let audit = setup.audit();
    let rec = audit.iter().find(|r| r["run_id"] == run["id"] && r["kind"] == "step").expect("a step record");
    assert_eq!(rec["ok"], true, "{rec}");
    assert!(rec["observed"].as_str().unwrap().contains("ceil((produce"), "{rec}");
    let response = rec["response"].as_str().unwrap();
    assert!(response.contains("\"decision\":\"scale\"") && response.contains(&format!("\"to\":{to}")) && response.contains("\"produce_rate\""), "{response}");
    assert!(audit.iter().any(|r| r["run_id"] == run["id"] && r["kind"] == "verification" && r["ok"] == true), "{audit:#?}");
    let m = agent.metrics();
    assert_eq!(m.get("streamguard_remediation_steps_total", &[("action", "scale"), ("outcome", "ok")]), Some(1.0));

    // An agent killed without a chance to clean up leaves no consumer running.
    let mut agent = agent;
    let out = common::run(Command::new("pgrep").args(["-P", &agent.child.id().to_string()]));
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect();
    assert_eq!(pids.len(), to as usize, "one process per replica: {pids:?}");
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    wait_until(Duration::from_secs(30), "the replicas gone with the agent", || pids.iter().all(|p| !Path::new(&format!("/proc/{p}")).exists()));
}

#[test]
fn an_ineffective_scale_out_is_detected_rolled_back_and_further_scale_outs_are_blocked() {
    let exe = consumer_binary();
    let topic = unique("scale-b");
    let group = unique("scale-b-g");
    // One partition: a second consumer gets nothing to read.
    create_topic(&bootstrap(), &topic, 1);
    let _producer = Traffic::start(&bootstrap(), &topic, 80);
    let setup = Setup::new();
    let agent = setup.agent(&group, &rules(&group, 300, 50, "1s"), &scale_table("ledger", &group, &topic, &exe, 25, ""));
    wait_until(Duration::from_secs(60), "the pool at its min_replicas", || running(&agent, "ledger") == Some(1.0));

    let deadline = Instant::now() + Duration::from_secs(360);
    let failed = loop {
        let a = actions(&agent);
        if let Some(r) = a.iter().find(|r| r["runbook"] == "scale-out" && r["state"] == "failed" && r["steps"][0]["error"].as_str().is_some_and(|e| e.contains("scale-out ineffective: "))) {
            break r.clone();
        }
        assert!(a.iter().all(|r| r["state"] != "succeeded"), "a scale-out of a 1-partition topic cannot succeed: {a:#?}");
        assert!(Instant::now() < deadline, "no ineffective scale-out detected: {a:#?}\n{}", setup.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    let error = failed["steps"][0]["error"].as_str().unwrap();
    assert!(error.contains("rolling back to 1") && error.contains("scale-outs blocked for 10m"), "{error}");
    wait_until(Duration::from_secs(30), "the pool back at 1", || running(&agent, "ledger") == Some(1.0));
    // "Scale-out ineffective" is its own signal: the metric, the block's end, the status.
    let m = agent.metrics();
    assert_eq!(m.get("streamguard_scale_ineffective", &[("target", "ledger")]), Some(1.0));
    let until = m.get("streamguard_scale_out_blocked_until_seconds", &[("target", "ledger")]).expect("the block's end");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(until > now + 500.0 && until < now + 601.0, "blocked for the 10m cooldown: {until} vs {now}");
    let st: Value = serde_json::from_str(&agent.get("/api/v1/scale").1).unwrap();
    let t = &st["targets"][0];
    assert_eq!((t["scale_out_ineffective"].as_bool(), t["current_replicas"].as_u64()), (Some(true), Some(1)), "{t:#}");
    assert!(t["ineffective_why"].as_str().is_some_and(|w| w.starts_with("scale-out ineffective: 1 → ")), "{t:#}");

    // The alert still fires; a new run (asked for by hand: the alert already fired) is
    // held by the block, and nothing scales.
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build().unwrap();
    let ask = || {
        let resp = client
            .post(format!("http://127.0.0.1:{}/api/v1/runbooks/scale-out/run", agent.port))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"target": {"cluster": "local", "group": group}}))
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text());
    };
    let blocked = |a: &Vec<Value>| a.iter().any(|r| r["runbook"] == "scale-out" && r["state"] == "failed" && r["steps"][0]["error"].as_str().is_some_and(|e| e.contains("scale-out ineffective earlier, blocked for")));
    // A run can itself be blocked by a guard (a busy target, data between two samples):
    // ask again every 10 s until one reaches the scale step.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut asked = Instant::now() - Duration::from_secs(60);
    loop {
        if asked.elapsed() >= Duration::from_secs(10) {
            ask();
            asked = Instant::now();
        }
        let a = actions(&agent);
        if blocked(&a) {
            break;
        }
        assert!(Instant::now() < deadline, "no later run held by the block: {a:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(running(&agent, "ledger"), Some(1.0));
    let audit = setup.audit();
    assert!(audit.iter().any(|r| r["kind"] == "step" && r["ok"] == false && r["summary"].as_str().or(r["error"].as_str()).is_some_and(|e| e.contains("blocked for"))), "the block is audited: {audit:#?}");
}

/// A runbook run by hand (POST …/run): one `scale` step to the policy's count.
fn manual_rules(group: &str) -> String {
    format!(
        r#"apiVersion: streamguard/v1
kind: Runbook
metadata: {{ name: rescale }}
spec:
  mode: act
  target: [cluster, group]
  guards:
    cooldown: 1s
    max_runs: 1000
    window: 1h
    preconditions: ['max by (cluster, group) (group_lag_offsets{{group="{group}"}}) >= 0']
  steps:
    - action: scale
      timeout: 2m
"#
    )
}

/// Asks for a run of `rescale` for the group (act, or dry-run); returns the run.
fn ask(agent: &Agent, group: &str, dry_run: bool) -> Value {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build().unwrap();
    let resp = client
        .post(format!("http://127.0.0.1:{}/api/v1/runbooks/rescale/run", agent.port))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"target": {"cluster": "local", "group": group}, "dry_run": dry_run}))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text());
    resp.json().unwrap()
}

fn lag(agent: &Agent, group: &str) -> Option<f64> {
    agent.metrics().get("streamguard_kafka_group_lag_offsets", &[("group", group)])
}

/// The step's decision numbers (`response`: `{"decision":"hold","raw":1,"reason":"stabilizing",…}`).
fn decision(run: &Value) -> Value {
    run["steps"][0]["response"].as_str().and_then(|r| serde_json::from_str(r).ok()).unwrap_or(Value::Null)
}

#[test]
fn under_the_lag_policy_a_scale_down_waits_for_the_stabilization_window_and_the_audit_shows_the_held_decisions_why() {
    const WINDOW: f64 = 20.0;
    let exe = consumer_binary();
    let topic = unique("scale-c");
    let group = unique("scale-c-g");
    create_topic(&bootstrap(), &topic, 4);
    // 150 records/s against one replica doing at most 50/s (20 ms per record): the lag grows.
    let _producer = Traffic::start(&bootstrap(), &topic, 150);
    let setup = Setup::new();
    let policy = r#"{ type = "lag", lag_threshold = 200 }"#;
    let table = scale_table_on(&bootstrap(), "fleet", &group, &topic, &exe, 20, policy, &format!("scale_down_stabilization = \"{WINDOW}s\"\n"));
    let agent = setup.agent(&group, &manual_rules(&group), &table);
    wait_until(Duration::from_secs(60), "the pool at its min_replicas", || running(&agent, "fleet") == Some(1.0));
    wait_until(Duration::from_secs(90), "a lag of 900 records", || lag(&agent, &group).is_some_and(|l| l > 900.0));

    // Scale out: ceil(lag / 200) ≥ 5, bounded to 4.
    let out = ask(&agent, &group, false);
    let id = out["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let scaled_out = loop {
        let a = actions(&agent);
        let r = a.iter().find(|r| r["id"] == id.as_str()).cloned().unwrap_or(Value::Null);
        if r["state"] == "succeeded" {
            break r;
        }
        assert!(!matches!(r["state"].as_str(), Some("failed" | "blocked" | "aborted")), "the scale-out run did not succeed: {r:#}\n{}", setup.log());
        assert!(Instant::now() < deadline, "the scale-out run did not end: {r:#}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let observed = scaled_out["steps"][0]["observed"].as_str().unwrap().to_string();
    assert!(observed.starts_with("1 → 4: ceil(lag ") && observed.contains(" / threshold 200) = "), "{observed}");
    assert_eq!(running(&agent, "fleet"), Some(4.0), "{observed}");
    // The change's rebalance was measured from the group's samples and is shown.
    assert!(observed.contains("rebalance after 1 → 4 took "), "{observed}");
    let rb = agent.metrics().get("streamguard_scale_rebalance_seconds", &[("target", "fleet")]).expect("the rebalance metric");
    assert!((0.0..35.0).contains(&rb), "{rb}");
    let (status, body) = agent.get("/api/v1/scale");
    assert_eq!(status, 200, "{body}");
    let st: Value = serde_json::from_str(&body).unwrap();
    let t = &st["targets"][0];
    assert_eq!((t["name"].as_str(), t["current_replicas"].as_u64(), t["policy"].as_str()), (Some("fleet"), Some(4), Some("lag")), "{t:#}");
    assert_eq!(t["last_rebalance"]["rebalance"], "settled", "{t:#}");
    assert_eq!(t["pool"]["running"], 4, "{t:#}");
    assert_eq!(t["scale_out_ineffective"], false, "{t:#}");

    // Now ask every 2 s while the backlog drains: the policy soon wants fewer, but nothing
    // is removed until the window has passed since it last wanted 4.
    let mut runs: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let down = loop {
        let r = ask(&agent, &group, false);
        let id = r["id"].as_str().unwrap().to_string();
        let done = loop {
            let r = actions(&agent).into_iter().find(|r| r["id"] == id.as_str()).unwrap_or(Value::Null);
            if !matches!(r["state"].as_str(), Some("running") | None) {
                break r;
            }
            assert!(Instant::now() < deadline, "a run did not end: {r:#}");
            std::thread::sleep(Duration::from_millis(200));
        };
        let d = decision(&done);
        if done["state"] == "succeeded" && d["decision"] == "scale" {
            break done;
        }
        if done["state"] == "succeeded" {
            assert_eq!(running(&agent, "fleet"), Some(4.0), "nothing changes while held: {done:#}");
            runs.push(done);
        }
        assert!(Instant::now() < deadline, "no scale-down within 240 s: {runs:#?}\n{}", setup.log());
        std::thread::sleep(Duration::from_secs(2));
    };
    // Down to the highest recommendation left in the window (HPA semantics), below 4.
    let d = decision(&down);
    let to = d["to"].as_u64().unwrap();
    assert_eq!(d["from"].as_u64(), Some(4), "{down:#}");
    assert!(to < 4, "{down:#}");
    assert_eq!(running(&agent, "fleet"), Some(to as f64));
    assert!(down["steps"][0]["observed"].as_str().unwrap().contains("rebalance after 4 → "), "the scale-down's rebalance measured: {down:#}");
    // The pool's status shows the change, its why and the replicas it stopped.
    let st: Value = serde_json::from_str(&agent.get("/api/v1/scale").1).unwrap();
    let t = &st["targets"][0];
    assert_eq!((t["current_replicas"].as_u64(), t["last_decision"]["decision"].as_str(), t["last_decision"]["to"].as_u64()), (Some(to), Some("scale"), Some(to)), "{t:#}");
    assert!(t["last_decision"]["why"].as_str().unwrap().starts_with(&format!("4 → {to}: ")), "{t:#}");
    let stopped: Vec<u64> = t["pool"]["recent_exits"].as_array().unwrap().iter().filter(|e| e["reason"] == "stopped").map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(stopped, (to..4).rev().collect::<Vec<u64>>(), "the highest replicas stopped: {t:#}");

    // The window: the scale-down was decided at least WINDOW after the last decision that
    // recommended 4 (the scale-out, or a hold while the lag was still high).
    let recommended = |r: &Value| decision(r)["raw"].as_u64().map(|raw| raw.clamp(1, 4));
    let last_high = runs.iter().filter(|r| recommended(r) == Some(4)).map(|r| r["created_at"].as_f64().unwrap()).fold(scaled_out["created_at"].as_f64().unwrap(), f64::max);
    let held: Vec<&Value> = runs.iter().filter(|r| decision(r)["reason"] == "stabilizing").collect();
    assert!(!held.is_empty(), "some decisions wanted fewer replicas and were held: {runs:#?}");
    let waited = down["created_at"].as_f64().unwrap() - last_high;
    assert!(waited >= WINDOW - 1.0, "scaled down {waited:.1}s after the last recommendation of 4 (window {WINDOW}s): {runs:#?}");
    // Held decisions came before, and their why (in the audit) names the window.
    let audit = setup.audit();
    let why: Vec<&str> = audit.iter().filter(|r| r["kind"] == "step" && held.iter().any(|h| h["id"] == r["run_id"])).filter_map(|r| r["observed"].as_str()).collect();
    assert_eq!(why.len(), held.len(), "{audit:#?}");
    assert!(why.iter().all(|w| w.starts_with("holding at 4: ") && w.contains(&format!("stabilized at the highest recommendation (4) of the last {WINDOW}s"))), "{why:#?}");
    let m = agent.metrics();
    assert!(m.get("streamguard_scale_decisions_total", &[("target", "fleet"), ("decision", "hold"), ("reason", "stabilizing")]).unwrap_or(0.0) >= held.len() as f64);
}

#[test]
fn with_the_broker_paused_the_data_goes_stale_and_no_run_changes_the_pool_and_the_block_is_audited() {
    let broker = PrivateBroker::start();
    let exe = consumer_binary();
    let topic = unique("scale-g");
    let group = unique("scale-g-g");
    create_topic(&broker.bootstrap(), &topic, 4);
    // A backlog of 2,000 records and a consumer that does one per second: the lag policy
    // wants ceil(lag / 100) ≥ 4 replicas for as long as this test runs (the lag of the
    // partitions the consumer has not committed on yet is not known; each counts 1, as
    // in KEDA with `offset_reset_policy: latest`).
    produce(&broker.bootstrap(), &topic, &[500, 500, 500, 500], None);
    let setup = Setup::new();
    let policy = r#"{ type = "lag", lag_threshold = 100 }"#;
    let agent = setup.agent_on(&broker.bootstrap(), &group, &manual_rules(&group), &scale_table_on(&broker.bootstrap(), "paused", &group, &topic, &exe, 1000, policy, ""));
    wait_until(Duration::from_secs(60), "the pool at its min_replicas", || running(&agent, "paused") == Some(1.0));
    let deadline = Instant::now() + Duration::from_secs(90);
    while !lag(&agent, &group).is_some_and(|l| l > 400.0) {
        assert!(Instant::now() < deadline, "the group's lag never sampled over 400: {:?}\n{}", agent.get("/metrics").1.lines().filter(|l| l.contains(&group)).collect::<Vec<_>>(), setup.log());
        std::thread::sleep(Duration::from_millis(500));
    }

    // A dry run computes the count the policy would choose, with its inputs, and sends nothing.
    let dry = ask(&agent, &group, true);
    assert_eq!(dry["state"], "dry_run", "{dry:#}");
    let step = &dry["steps"][0];
    let observed = step["observed"].as_str().unwrap_or_default();
    assert!(observed.starts_with("dry-run, nothing sent: 1 → 4: "), "{dry:#}");
    let d = decision(&dry);
    assert_eq!((d["decision"].as_str(), d["to"].as_u64(), d["dry_run"].as_bool()), (Some("scale"), Some(4), Some(true)), "{dry:#}");
    assert!(d["lag"].as_f64().is_some_and(|l| l > 400.0), "the inputs are shown: {d}");
    assert!(dry["reason"].as_str().unwrap().contains("scale paused: 1 → 4: "), "{dry:#}");
    assert!(setup.audit().iter().any(|r| r["run_id"] == dry["id"] && r["scale_previews"][0]["plan"]["to"] == 4), "the dry run's plan is audited");
    assert_eq!(running(&agent, "paused"), Some(1.0), "a dry run changes nothing");

    // Pause the broker: the agent's Kafka data goes stale.
    let paused = Paused::new(broker.pid());
    wait_until(Duration::from_secs(60), "the Kafka source not fresh", || {
        let (_, body) = agent.get("/api/v1/targets?source_kind=kafka");
        serde_json::from_str::<Value>(&body).ok().is_some_and(|v| v["sources"][0]["quality"].as_str().is_some_and(|q| q != "fresh"))
    });
    let mut asked = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        asked.push(ask(&agent, &group, false)["id"].as_str().unwrap().to_string());
        for _ in 0..8 {
            assert_eq!(running(&agent, "paused"), Some(1.0), "stale data never scales\n{}", setup.log());
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // Every run asked for while stale was blocked (fresh_data guard) or held (stale_data),
    // each with its bounded reason, in the API and in the audit.
    let a = actions(&agent);
    let audit = setup.audit();
    for id in &asked {
        let r = a.iter().find(|r| r["id"] == id.as_str()).unwrap_or_else(|| panic!("run {id} in the API: {a:#?}"));
        let guard_blocked = r["state"] == "blocked" && r["guards"].as_array().unwrap().iter().any(|g| g["guard"] == "fresh_data" && g["passed"] == false);
        let held = r["state"] == "failed" && r["steps"][0]["error"].as_str().is_some_and(|e| e.contains("stale data never scales"));
        assert!(guard_blocked || held, "run {id} neither blocked by fresh_data nor held on stale data: {r:#}");
        assert!(audit.iter().any(|x| x["run_id"] == id.as_str() && (x["decision"] == "blocked" || x["kind"] == "step" && x["ok"] == false)), "run {id} audited: {audit:#?}");
    }
    let m = agent.metrics();
    let blocked = m.get("streamguard_remediation_guard_blocks_total", &[("runbook", "rescale"), ("guard", "fresh_data")]).unwrap_or(0.0);
    let held = m.get("streamguard_scale_decisions_total", &[("target", "paused"), ("decision", "hold"), ("reason", "stale_data")]).unwrap_or(0.0);
    assert_eq!(blocked + held, asked.len() as f64, "each block counted under its bounded reason");
    assert_eq!(m.get("streamguard_scale_decisions_total", &[("target", "paused"), ("decision", "scale"), ("reason", "lag")]), None, "never scaled");
    drop(paused);
    assert_eq!(running(&agent, "paused"), Some(1.0));
}
