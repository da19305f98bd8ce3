//! The Flink job actions (`streamguard::actions_flink`) against the real Flink of
//! `stack/up flink` (`$FLINK_URL`). Nothing is mocked: each test runs the stack's
//! checkpointing job (`stack/flink-job/CheckpointingJob.java`), acts on it over the REST
//! API and checks the result in Flink itself. The tests of this file run one at a time
//! (the TaskManager has 2 slots and a rescaled job takes both).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use streamguard::actions_flink::{FlinkJobs, JobSpec};

static SERIAL: Mutex<()> = Mutex::new(());

fn flink_url() -> String {
    std::env::var("FLINK_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".to_string()).trim_end_matches('/').to_string()
}

fn jobs() -> FlinkJobs {
    FlinkJobs::new(&flink_url(), Duration::from_secs(10), Duration::from_millis(500)).unwrap()
}

/// Cancels the listed jobs when the test ends, however it ends.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for jid in &self.0 {
            let url = format!("{}/jobs/{jid}?mode=cancel", flink_url());
            block_on(async { reqwest::Client::new().patch(&url).send().await.ok() });
        }
        // Let Flink free the slots before the next test.
        let j = jobs();
        let deadline = Instant::now() + Duration::from_secs(30);
        for jid in &self.0 {
            while Instant::now() < deadline {
                match block_on(j.job_state(jid)) {
                    Ok((s, _)) if !matches!(s.as_str(), "CANCELED" | "FAILED" | "FINISHED") => std::thread::sleep(Duration::from_millis(200)),
                    _ => break,
                }
            }
        }
    }
}

/// Submits the stack's job with `stack/flink-submit-job` (which uploads the jar) and
/// returns its id.
fn submit_with_script(args: &[&str]) -> String {
    let out = run(Command::new(repo_root().join("stack/flink-submit-job")).args(args));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "flink-submit-job failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().last().unwrap_or("").trim().to_string()
}

fn spec(jar_id: String, args: Vec<String>) -> JobSpec {
    JobSpec { jar_id, entry_class: Some("CheckpointingJob".into()), program_args: args, parallelism: None, flink_configuration: BTreeMap::new(), allow_non_restored_state: false }
}

/// A run of the stack's checkpointing job whose checkpoints (and savepoints) block past
/// the checkpoint timeout once `stall` exists, retaining its checkpoints on cancellation.
struct Stalling {
    jar: String,
    dir: tempfile::TempDir,
    stall: std::path::PathBuf,
    name: String,
    first: JobSpec,
    run: streamguard::actions_flink::Running,
    cleanup: Cleanup,
}

impl Stalling {
    fn start(j: &FlinkJobs, prefix: &str) -> Stalling {
        // The jar: uploaded by the script (a short run that is cancelled at once).
        let boot = submit_with_script(&["--job-name", &unique("sg-boot")]);
        drop(Cleanup(vec![boot]));
        let jar = block_on(j.find_jar("checkpointing-job")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stall = dir.path().join("stall");
        let name = unique(prefix);
        let mut first = spec(jar.clone(), stall_args(&name, &stall));
        first.flink_configuration.insert("execution.checkpointing.externalized-checkpoint-retention".into(), "RETAIN_ON_CANCELLATION".into());
        let run = block_on(j.submit(&first, None, None, Duration::from_secs(120))).unwrap();
        let cleanup = Cleanup(vec![run.jid.clone()]);
        Stalling { jar, dir, stall, name, first, run, cleanup }
    }
}

/// The job's arguments with the stall marker at `marker`.
fn stall_args(name: &str, marker: &Path) -> Vec<String> {
    ["--interval-ms", "1000", "--checkpoint-timeout-ms", "4000", "--job-name", name, "--stall-marker"].iter().map(|s| s.to_string()).chain([marker.display().to_string()]).collect()
}

fn local_path(uri: &str) -> &Path {
    Path::new(uri.strip_prefix("file:").unwrap_or(uri))
}

#[test]
fn a_savepoint_then_a_rescale_through_stop_with_savepoint_runs_the_job_again_at_the_new_parallelism() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = unique("sg-rescale");
    let args = ["--interval-ms", "1000", "--job-name", name.as_str()];
    let jid = submit_with_script(&args);
    let mut cleanup = Cleanup(vec![jid.clone()]);
    let j = jobs();
    let first = block_on(j.verify_running(&jid, std::time::SystemTime::now(), Instant::now() + Duration::from_secs(120))).unwrap();
    assert_eq!(first.parallelism, 1);

    let sp = block_on(j.trigger_savepoint(&jid, None, Duration::from_secs(60))).unwrap();
    assert!(local_path(&sp.location).join("_metadata").exists(), "savepoint {} has no _metadata on disk", sp.location);
    assert_eq!(block_on(j.job_state(&jid)).unwrap().0, "RUNNING", "a plain savepoint keeps the job running");

    let jar = block_on(j.find_jar("checkpointing-job")).unwrap();
    let spec = spec(jar, args.iter().map(|s| s.to_string()).collect());
    let (stop_sp, run) = block_on(j.rescale(&jid, &spec, 2, Duration::from_secs(180))).unwrap();
    cleanup.0.push(run.jid.clone());
    assert_eq!(block_on(j.job_state(&jid)).unwrap().0, "FINISHED", "stop-with-savepoint finishes the old run");
    assert_ne!(run.jid, jid);
    assert_eq!(run.parallelism, 2, "resubmitted at the new parallelism");
    assert_eq!(block_on(j.job_state(&run.jid)).unwrap(), ("RUNNING".to_string(), 2));
    let stats = block_on(j.checkpoints(&run.jid)).unwrap();
    assert!(stats.counts.restored >= 1, "the new run restored from the savepoint: {stats:?}");
    assert!(stats.counts.completed >= 1 && stats.latest.completed.as_ref().is_some_and(|c| c.id >= run.checkpoint_id), "{stats:?}");
    assert!(local_path(&stop_sp.location).join("_metadata").exists(), "{}", stop_sp.location);
}

/// The stalled-checkpoint remedy. The stack job's stall marker makes every checkpoint
/// (and savepoint) of this run block in `snapshotState` past the checkpoint timeout, so
/// stop-with-savepoint fails; the action then cancels and restarts from the last
/// completed checkpoint (retained on cancellation by the run's configuration). The
/// resubmission's program arguments point at a marker that does not exist: the stall's
/// cause does not survive the restart, as a stuck connection would not.
#[test]
fn a_stalled_checkpoint_falls_back_from_a_failed_savepoint_to_a_restart_from_the_last_checkpoint() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let j = jobs();
    let Stalling { jar, dir, stall, name, first, run, mut cleanup } = Stalling::start(&j, "sg-stall");
    let base = |marker: &Path| stall_args(&name, marker);

    // Stall: checkpoints stop completing.
    std::fs::write(&stall, b"").unwrap();
    let stalled_at = block_on(j.checkpoints(&run.jid)).unwrap().latest.completed.map(|c| c.id).unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let stats = block_on(j.checkpoints(&run.jid)).unwrap();
    let last = stats.latest.completed.clone().unwrap();
    assert!(last.id <= stalled_at + 1, "checkpoints must stall: {stats:?}");

    let mut again = spec(jar, base(&dir.path().join("no-such-marker")));
    again.flink_configuration = first.flink_configuration.clone();
    let restarted = block_on(j.savepoint_and_restart(&run.jid, &again, Duration::from_secs(30), Duration::from_secs(240))).unwrap();
    cleanup.0.push(restarted.job.jid.clone());
    assert_eq!(restarted.via, "checkpoint", "{restarted:?}");
    assert!(restarted.savepoint_error.is_some(), "{restarted:?}");
    assert_eq!(restarted.path, last.external_path.clone().unwrap(), "restarted from the last completed checkpoint");
    assert_eq!(block_on(j.job_state(&run.jid)).unwrap().0, "CANCELED");
    // Checkpoints complete again in the new run, which restored the old state.
    let stats = block_on(j.checkpoints(&restarted.job.jid)).unwrap();
    assert!(stats.counts.restored >= 1 && stats.counts.completed >= 1, "{stats:?}");
    assert_eq!(block_on(j.job_state(&restarted.job.jid)).unwrap().0, "RUNNING");
}

#[test]
fn actions_on_an_unknown_job_fail_with_the_step_and_the_status() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let j = jobs();
    let e = block_on(j.trigger_savepoint("00000000000000000000000000000000", None, Duration::from_secs(10))).unwrap_err();
    // Flink accepts the trigger and fails the asynchronous operation.
    assert_eq!(e.kind(), "failed", "{e}");
    assert!(e.to_string().starts_with("savepoint failed: ") && e.to_string().contains("FlinkJobNotFoundException"), "{e}");
    let e = block_on(j.job_state("00000000000000000000000000000000")).unwrap_err();
    assert!(e.to_string().starts_with("job detail: HTTP 404"), "{e}");
    assert_eq!(block_on(j.find_jar("no-such-jar-xyz")).unwrap_err().kind(), "no_jar");
}

/// Test (f): a stalled checkpoint (the stack job's stall marker) fires an alert on the
/// job's checkpoint age; the real agent's runbook runs the `flink savepoint-and-restart`
/// step (the savepoint cannot complete while checkpoints stall, so it restarts from the
/// last completed checkpoint); checkpoints complete again and the verification (the age
/// falls) passes. The resubmission's arguments name a marker that does not exist.
#[test]
fn a_stalled_checkpoint_fires_the_runbook_which_restarts_the_job_and_checkpoints_complete_again() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let j = jobs();
    let Stalling { dir, stall, name, run, mut cleanup, .. } = Stalling::start(&j, "sg-rb-stall");
    let args = |marker: &Path| stall_args(&name, marker);
    let quoted: Vec<String> = args(&dir.path().join("no-such-marker")).iter().map(|a| format!("\"{a}\"")).collect();
    let rules = format!(
        r#"apiVersion: streamguard/v1
kind: Alert
metadata: {{ name: checkpoint-stalled }}
spec:
  condition: 'max by (flink, flink_job) (checkpoint_age_seconds{{flink_job="{name}"}}) > 12'
  runbooks: [restart-stalled-job]
---
apiVersion: streamguard/v1
kind: Runbook
metadata: {{ name: restart-stalled-job }}
spec:
  mode: act
  target: [flink, flink_job]
  steps:
    - action: flink
      operation: savepoint-and-restart
      jar: checkpointing-job
      entry_class: CheckpointingJob
      args: [{args}]
      savepoint_timeout: 20s
      deadline: 3m
      timeout: 4m
  verify:
    condition: 'max by (flink, flink_job) (checkpoint_age_seconds{{flink_job="{name}"}}) < 8'
    deadline: 2m
"#,
        args = quoted.join(", ")
    );
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("rules.yaml"), rules).unwrap();
    let port = free_port();
    let cfg = agent_config_with(
        port,
        &bootstrap(),
        "^no-group-here$",
        &format!("\n[[flink]]\nname = \"local\"\nurl = \"{}\"\nsample_interval = \"1s\"\nsample_timeout = \"1s\"\n{}", flink_url(), rules_and_remediation(files.path())),
    );
    let agent = Agent::start_with(port, &cfg);

    std::fs::write(&stall, b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let (_, body) = agent.get("/api/v1/actions");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let runs = v["actions"].as_array().cloned().unwrap_or_default();
        if let Some(r) = runs.iter().find(|r| r["runbook"] == "restart-stalled-job" && (r["state"] == "succeeded" || r["state"] == "failed")) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no finished run: {runs:#?}\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    let observed = done["steps"][0]["observed"].as_str().unwrap_or_default().to_string();
    if let Some(new) = observed.split("job ").nth(2).and_then(|s| s.split_whitespace().next()) {
        cleanup.0.push(new.to_string());
    }
    assert_eq!(done["state"], "succeeded", "{done:#}\n{}", agent.log());
    assert!(observed.contains("restarted from checkpoint") && observed.contains("savepoint failed"), "{observed}");
    assert_eq!(block_on(j.job_state(&run.jid)).unwrap().0, "CANCELED");
    let audit: Vec<serde_json::Value> = std::fs::read_to_string(files.path().join("audit.jsonl")).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(audit.iter().any(|r| r["run_id"] == done["id"] && r["kind"] == "verification" && r["ok"] == true), "{audit:#?}");
}
