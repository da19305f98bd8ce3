//! The agent runs the reprocessing procedure (`action: offsets` in a runbook) against
//! the real stack (`stack/up kafka`): with its guards, journal, audit and metrics, and
//! with `pause: scale` on a real `process` pool (`[[scale]]`), across a SIGKILL of the
//! agent between the pause and the resume; and the CLI's `--pause-scale` on a `command`
//! target (real programs). Nothing is mocked.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::reprocess::*;
use common::*;
use serde_json::Value;

/// Runs `runbook` for the group through the API, retrying while the executor's
/// fresh-data guard blocks it (the target is not sampled yet). Returns the run's view.
fn run_runbook(agent: &Agent, token: &str, runbook: &str, group: &str) -> Value {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).no_proxy().build().unwrap();
    let body = serde_json::json!({"target": {"cluster": "local", "group": group}, "dry_run": false});
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = client.post(format!("http://127.0.0.1:{}/api/v1/runbooks/{runbook}/run", agent.port)).bearer_auth(token).json(&body).send().unwrap();
        let v: Value = r.json().unwrap();
        if v["state"] != "blocked" {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "still blocked: {v:#}\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The run `id` once it has ended (from `/api/v1/actions`).
fn finished(agent: &Agent, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (_, body) = agent.get("/api/v1/actions");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let last = v["actions"].as_array().into_iter().flatten().find(|a| a["id"] == id).cloned().unwrap_or(Value::Null);
        if matches!(last["state"].as_str(), Some("succeeded" | "failed" | "aborted")) {
            return last;
        }
        assert!(std::time::Instant::now() < deadline, "not finished: {last:#}\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_agent_runs_the_offsets_action_of_a_runbook_with_its_guards_journal_and_audit() {
    let (topic, group) = (unique("rp-agent"), unique("rp-agent-g"));
    create_topic(&bootstrap(), &topic, 2);
    produce(&bootstrap(), &topic, &[10, 10], None);
    consume_and_commit(&bootstrap(), &group, &topic, &[10, 8]);
    let files = Files::new();
    let d = files.dir.path().display();
    let token = "reprocess-test-token-5e9a1c77";
    std::fs::write(files.marker("token"), token).unwrap();
    std::fs::write(
        files.marker("rules.yaml"),
        "apiVersion: streamguard/v1\nkind: Runbook\nmetadata: { name: replay-three }\nspec:\n  mode: act\n  target: [cluster, group]\n  guards:\n    preconditions: [\"max by (cluster, group) (group_lag_offsets) >= 0\"]\n  steps:\n    - action: offsets\n      reset: shift-by -3\n      max_replayed: 6\n      empty_deadline: 10s\n      verify_deadline: 10s\n      timeout: 1m\n---\napiVersion: streamguard/v1\nkind: Runbook\nmetadata: { name: replay-too-much }\nspec:\n  mode: act\n  target: [cluster, group]\n  guards:\n    preconditions: [\"max by (cluster, group) (group_lag_offsets) >= 0\"]\n  steps:\n    - action: offsets\n      reset: earliest\n      max_replayed: 5\n",
    )
    .unwrap();
    let port = free_port();
    let extra = format!("[rules]\npaths = [\"{d}/rules.yaml\"]\nevaluation_interval = \"1s\"\n\n[remediation]\njournal = \"{d}/journal.jsonl\"\naudit = \"{d}/audit.jsonl\"\napi_token_file = \"{d}/token\"\n");
    let agent = Agent::start_with(port, &agent_config_with(port, &bootstrap(), &group, &extra));
    let run = |runbook: &str| run_runbook(&agent, token, runbook, &group);
    let finished = |id: &str| finished(&agent, id);
    // Beyond its limit: the step fails with the refusal, nothing moves.
    let v = run("replay-too-much");
    let r = finished(v["id"].as_str().unwrap_or_else(|| panic!("{v}\n{}", agent.log())));
    assert_eq!(r["state"], "failed", "{r:#}");
    let err = r["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(err.contains("aborted: refused before anything was paused: 18 records would be replayed, the limit is 5"), "{r:#}");
    assert_eq!(committed(&group, &topic, 2), [Some(10), Some(8)]);
    // Within it: three records back on each partition, through the executor.
    let v = run("replay-three");
    let r = finished(v["id"].as_str().unwrap());
    assert_eq!(r["state"], "succeeded", "{r:#}\n{}", agent.log());
    assert_eq!(committed(&group, &topic, 2), [Some(7), Some(5)]);
    // The executor's journal and audit have the step; the procedure's own have its steps.
    let audit: Vec<Value> = std::fs::read_to_string(files.marker("audit.jsonl")).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(audit.iter().any(|a| a["kind"] == "step" && a["action"] == "offsets" && a["ok"] == true), "{audit:?}");
    let inner: Vec<Value> = std::fs::read_to_string(files.marker("audit.offsets.jsonl")).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let commits = inner.iter().filter(|a| a["action"] == "commit" && a["ok"] == true).count();
    assert_eq!(commits, 1, "{inner:?}");
    assert!(files.marker("journal.offsets.journal").exists());
    // Counted: one refusal (and why), one success, the records it replays.
    let m = agent.metrics();
    assert_eq!(m.get("streamguard_offsets_procedures_total", &[("outcome", "refused")]), Some(1.0));
    assert_eq!(m.get("streamguard_offsets_procedures_total", &[("outcome", "succeeded")]), Some(1.0));
    assert_eq!(m.get("streamguard_offsets_procedures_total", &[("outcome", "verify_failed")]), Some(0.0), "every outcome is there from the start");
    assert_eq!(m.get("streamguard_offsets_refusals_total", &[("reason", "max_replayed")]), Some(1.0));
    assert_eq!(m.get("streamguard_offsets_refusals_total", &[("reason", "group_not_empty")]), Some(0.0));
    assert_eq!(m.get("streamguard_offsets_records_replayed_total", &[]), Some(6.0));
    assert_eq!(m.get("streamguard_offsets_records_skipped_total", &[]), Some(0.0));
    assert_eq!(m.get("streamguard_offsets_dlq_copies_total", &[]), Some(0.0));
}

/// Starts `streamguard run` on `config` (written into `dir`), with the procedure's test
/// hook at `hook` if given; its log is the returned agent's.
fn start_agent(dir: &Path, config: &str, port: u16, hook: Option<&Path>) -> Agent {
    let path = dir.join("streamguard.toml");
    std::fs::write(&path, config).unwrap();
    let out = run(Command::new(bin()).args(["check", "--config"]).arg(&path).env_remove("STREAMGUARD_CONFIG"));
    assert!(out.status.success(), "check: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let logs = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(logs.path().join("agent.log")).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--config"]).arg(&path).env("STREAMGUARD_LOG", "info").stdout(Stdio::null()).stderr(log);
    if let Some(file) = hook {
        // After the pause and the wait for Empty, before the DLQ step: the consumers are
        // at 0 and the commit not made.
        cmd.env("STREAMGUARD_TEST_PAUSE_AT", "steps:3:intent").env("STREAMGUARD_TEST_PAUSE_FILE", file);
    }
    let agent = Agent { child: cmd.spawn().unwrap(), port, _dir: logs };
    wait_until(Duration::from_secs(30), "the agent healthy", || agent.get("/healthz").0 == 200);
    agent
}

/// `pause: scale` names a `[[scale]]` process pool: the procedure scales it to 0 and back
/// to the 2 replicas it had (not its minimum of 1), and an agent SIGKILLed between the
/// pause and the resume restores that count after its restart: the pool stays at 0 until
/// the recovery resumes it, so the group never has members before the commit.
#[test]
fn a_scale_target_paused_for_an_offset_move_comes_back_to_its_count_across_a_sigkill_of_the_agent() {
    let exe = consumer_binary("poison_consumer");
    let (topic, group) = (unique("rp-scale"), unique("rp-scale-g"));
    create_topic(&bootstrap(), &topic, 2);
    produce(&bootstrap(), &topic, &[10, 10], None);
    let files = Files::new();
    let d = files.dir.path().display();
    let token = "reprocess-scale-token-2b7f44e1";
    std::fs::write(files.marker("token"), token).unwrap();
    let processed = files.marker("processed.txt");
    let guards = "  guards:\n    preconditions: [\"max by (cluster, group) (group_lag_offsets) >= 0\"]\n";
    std::fs::write(
        files.marker("rules.yaml"),
        format!(
            "apiVersion: streamguard/v1\nkind: Runbook\nmetadata: {{ name: two }}\nspec:\n  mode: act\n  target: [cluster, group]\n{guards}  steps:\n    - action: scale\n      to: 2\n---\n\
             apiVersion: streamguard/v1\nkind: Runbook\nmetadata: {{ name: replay-paused }}\nspec:\n  mode: act\n  target: [cluster, group]\n{guards}  steps:\n    - action: offsets\n      reset: shift-by -4\n      pause: scale\n      empty_deadline: 60s\n      verify_deadline: 90s\n      timeout: 2m\n"
        ),
    )
    .unwrap();
    let config = |port: u16| {
        let extra = format!(
            "[rules]\npaths = [\"{d}/rules.yaml\"]\nevaluation_interval = \"1s\"\n\n[remediation]\njournal = \"{d}/journal.jsonl\"\naudit = \"{d}/audit.jsonl\"\napi_token_file = \"{d}/token\"\n\n\
             [[scale]]\nname = \"rp-pool\"\ngroup = \"{group}\"\ntopic = \"{topic}\"\nmin_replicas = 1\nmax_replicas = 4\nmin_interval = \"0s\"\nmax_data_age = \"20s\"\n\
             policy = {{ type = \"throughput\", catch_up_within = \"1m\" }}\n\
             actuator = {{ type = \"process\", command = [\"{exe}\"], env = {{ KAFKA_BOOTSTRAP = \"{bs}\", POISON_CONSUMER_OUT = \"{out}\" }}, stop_grace = \"10s\" }}\n",
            exe = exe.display(),
            bs = bootstrap(),
            out = processed.display()
        );
        agent_config_with(port, &bootstrap(), &format!("^{group}$"), &extra)
    };
    let lines = || std::fs::read_to_string(&processed).unwrap_or_default().lines().count();
    let hooked = files.marker("hooked");
    let port = free_port();
    let mut agent = start_agent(files.dir.path(), &config(port), port, Some(&hooked));
    // The pool starts at its minimum (1) and consumes everything.
    wait_until(Duration::from_secs(90), "the pool consumed everything", || committed(&group, &topic, 2) == [Some(10), Some(10)]);
    let r = finished(&agent, run_runbook(&agent, token, "two", &group)["id"].as_str().unwrap());
    assert_eq!(r["state"], "succeeded", "{r:#}\n{}", agent.log());
    wait_until(Duration::from_secs(60), "two members", || members(&group) == 2);
    let v = run_runbook(&agent, token, "replay-paused", &group);
    let id = v["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
    wait_until(Duration::from_secs(90), "the procedure paused the pool and found the group Empty", || hooked.exists());
    assert_eq!(members(&group), 0);
    // SIGKILL: the agent's replicas go with it (PR_SET_PDEATHSIG).
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let port = free_port();
    let agent = start_agent(files.dir.path(), &config(port), port, None);
    assert!(agent.log().contains("scale target held at 0"), "{}", agent.log());
    let r = finished(&agent, &id);
    assert_eq!(r["state"], "succeeded", "{r:#}\n{}", agent.log());
    wait_until(Duration::from_secs(60), "back to two members, not the minimum of one", || members(&group) == 2);
    // (Consumed again from 6: the verification saw the group's commits rise from there.
    // The replicas share one output file, so its lines are not counted here.)
    wait_until(Duration::from_secs(60), "the replayed records consumed", || committed(&group, &topic, 2) == [Some(10), Some(10)]);
    assert!(lines() >= 20);
    let inner: Vec<Value> = std::fs::read_to_string(files.marker("audit.offsets.jsonl")).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let detail = |a: &str| inner.iter().filter(|r| r["kind"] == "step" && r["action"] == a && r["ok"] == true).map(|r| r["detail"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(detail("pause").len(), 1, "{inner:?}");
    assert!(detail("pause")[0].contains("Scaled { from: Some(2), to: 0 }"), "{inner:?}");
    assert_eq!(detail("commit").len(), 1, "{inner:?}");
    assert!(detail("resume")[0].contains("to: 2 }"), "{inner:?}");
    assert!(detail("verify")[0].contains("consuming again from the new offsets"), "{inner:?}");
}

/// The CLI's `--pause-scale` names a `[[scale]]` target of `--config`: a `command`
/// actuator (real programs: its requests land in a file) is scaled to 0 and back to the
/// count its `current_command` reported; a `process` pool is refused (it lives inside the
/// agent), before anything is paused.
#[test]
fn the_cli_pauses_a_command_scale_target_and_returns_it_to_its_count_and_refuses_a_process_pool() {
    let (topic, group) = (unique("rp-cli-scale"), unique("rp-cli-scale-g"));
    create_topic(&bootstrap(), &topic, 1);
    produce(&bootstrap(), &topic, &[10], None);
    consume_and_commit(&bootstrap(), &group, &topic, &[6]);
    let files = Files::new();
    let log = files.marker("requests.jsonl");
    let table = |name: &str, actuator: &str| format!("[[scale]]\nname = \"{name}\"\ngroup = \"{group}\"\ntopic = \"{topic}\"\npolicy = {{ type = \"throughput\", catch_up_within = \"1m\" }}\nactuator = {actuator}\n");
    let command = format!("{{ type = \"command\", command = [\"sh\", \"-c\", \"cat >> {l}; echo >> {l}\"], current_command = [\"sh\", \"-c\", \"echo 3\"] }}", l = log.display());
    let config = agent_config_with(free_port(), &bootstrap(), &format!("^{group}$"), &format!("{}\n{}", table("deploy", &command), table("pool", "{ type = \"process\", command = [\"true\"] }")));
    let path = files.marker("streamguard.toml");
    std::fs::write(&path, config).unwrap();
    let cfg = path.display().to_string();
    // The process pool: refused, nothing sent, nothing moved.
    let (code, out, err) = offsets(&["apply", "--config", &cfg, "--group", &group, "--to-latest", "--pause-scale", "pool"], &files);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("[[scale]] pool: a process pool lives inside the agent that supervises it"), "{err}");
    assert!(!log.exists());
    assert_eq!(committed(&group, &topic, 1), [Some(6)]);
    // The command target: 3 → 0 → 3 around the commit (to the log end: nothing to consume).
    let (code, out, err) = offsets(&["apply", "--config", &cfg, "--group", &group, "--to-latest", "--pause-scale", "deploy", "--verify-deadline", "10s"], &files);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(committed(&group, &topic, 1), [Some(10)]);
    let sent: Vec<Value> = std::fs::read_to_string(&log).unwrap().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    let to: Vec<(u64, &str)> = sent.iter().map(|r| (r["to"].as_u64().unwrap(), r["policy"].as_str().unwrap())).collect();
    assert_eq!(to, [(0, "pause"), (3, "resume")], "{sent:?}");
    let plan = files.audit_records().into_iter().find(|r| r["kind"] == "offsets_plan").unwrap();
    assert_eq!(plan["pause"], "scale deploy to 0", "{plan}");
}
