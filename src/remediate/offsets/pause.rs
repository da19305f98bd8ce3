//! How the group's consumers are paused and resumed around an offset move:
//!
//! - `none`: nothing to pause (the consumers are already stopped); the procedure still
//!   waits for the group to be Empty and refuses otherwise.
//! - `command`: run a program (`systemctl stop`, a script…), exit status 0 required.
//!   Both commands must be safe to run twice: after a crash an interrupted pause or
//!   resume is run again.
//! - `scale`: a `[[scale]]` target (the `process` pool, a Kubernetes workload, a
//!   `command` actuator) scaled to 0 through [`crate::scale::runtime::ScaleRuntime::pause`]
//!   and back to the count it had when the plan was made. That count is read before
//!   anything changes and journaled with the plan, so a restart between pause and resume
//!   restores it, never the count found at restart (0) or the target's minimum. While
//!   paused the target's policy does not scale it.
//! - `connect`: `PUT /connectors/{c}/stop` and `/resume` on a Kafka Connect worker,
//!   verified with the `connect` action's own check; a sink connector's offsets are then
//!   committed through Connect's offsets API rather than the admin API.
//! - `flink`: stop the job with a savepoint, resubmit its jar **without** the savepoint.
//!   A Flink Kafka source restored from a savepoint takes its offsets from the savepoint's
//!   state and ignores the group's committed offsets, so resuming from it would silently
//!   undo the move. Resuming without it only works for a job whose source starts from the
//!   group's committed offsets (`OffsetsInitializer.committedOffsets(…)`), and loses the
//!   job's other state: the caller must say so (`discard_state`), else the procedure is
//!   refused before anything is paused ([`refusal`]). The savepoint's path is in the
//!   audit, for a person who wants the old state back. Idempotent: a pause finds no
//!   running job of that name (already stopped); a resume finds one running.
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::remediate::connect_api::{check, segment};
use crate::rules::file::runbook::ConnectOp;
use crate::actions_flink::{FlinkJobs, JobSpec};
use crate::sample::flink_api::{is_terminal, JobsOverview};
use crate::scale::runtime::ScaleRuntime;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Pause {
    None,
    Command { pause: Vec<String>, resume: Vec<String> },
    Connect { url: String, connector: String },
    /// A `[[scale]]` target; `replicas` is its count before the pause, read when the plan
    /// is made ([`prepare`]) and journaled with it.
    Scale {
        target: String,
        #[serde(default)]
        replicas: Option<u32>,
    },
    Flink(FlinkPause),
}

/// A Flink job to stop with a savepoint and resubmit without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlinkPause {
    /// The JobManager's REST URL.
    pub url: String,
    /// The job's name (ids change on every submission).
    pub job: String,
    /// The uploaded jar to resubmit (`GET /jars` name).
    pub jar: String,
    #[serde(default)]
    pub entry_class: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// The caller's statement that the job's source starts from the group's committed
    /// offsets and that its other state may be discarded.
    #[serde(default)]
    pub discard_state: bool,
}

impl Pause {
    pub fn describe(&self) -> String {
        match self {
            Pause::None => "nothing to pause".into(),
            Pause::Command { pause, .. } => format!("command {}", pause.join(" ")),
            Pause::Connect { connector, .. } => format!("stop connector {connector}"),
            Pause::Scale { target, .. } => format!("scale {target} to 0"),
            Pause::Flink(f) => format!("stop Flink job {} with a savepoint", f.job),
        }
    }
}

/// Why this pause cannot serve an offset move, if it cannot (checked before anything is
/// paused).
pub fn refusal(p: &Pause) -> Option<String> {
    match p {
        Pause::Flink(f) if !f.discard_state => Some(format!(
            "Flink job {:?}: a job restored from its savepoint takes its Kafka offsets from the savepoint, not from the group, so the move would be silently undone; \
             resuming without the savepoint starts the source from the group's committed offsets only if the job uses committedOffsets(), and discards the job's other state: \
             say so with --flink-discard-state (runbook: flink_state: discard) or move the offsets inside Flink",
            f.job
        )),
        _ => None,
    }
}

/// Completes the pause for the plan: a `scale` target's current count is read (the count
/// the resume returns to). An unknown count refuses: the resume could not restore it.
pub async fn prepare(p: &mut Pause, scale: Option<&ScaleRuntime>) -> Result<(), String> {
    if let Pause::Scale { target, replicas } = p {
        if replicas.is_none() {
            let rt = scale.ok_or_else(|| format!("no [[scale]] targets here to pause {target:?}"))?;
            let n = rt.current(target).await.map_err(|e| format!("cannot read the replica count of {target}: {e}"))?;
            *replicas = Some(n.ok_or_else(|| format!("the replica count of {target} is unknown, so a resume could not restore it"))?);
        }
    }
    Ok(())
}

const POLL: Duration = Duration::from_millis(500);

async fn run(argv: &[String], timeout: Duration) -> Result<String, String> {
    let Some((prog, args)) = argv.split_first() else { return Err("empty command".into()) };
    let child = tokio::process::Command::new(prog).args(args).kill_on_drop(true).output();
    match tokio::time::timeout(timeout, child).await {
        Err(_) => Err(format!("{prog}: timed out after {timeout:?}")),
        Ok(Err(e)) => Err(format!("{prog}: cannot run: {e}")),
        Ok(Ok(o)) if o.status.success() => Ok(format!("{prog}: exit 0")),
        Ok(Ok(o)) => Err(format!("{prog}: {}: {}", o.status, cut(String::from_utf8_lossy(&o.stderr).trim().to_string()))),
    }
}

async fn connect(client: &reqwest::Client, url: &str, connector: &str, op: ConnectOp, timeout: Duration) -> Result<String, String> {
    let c = segment(connector);
    let path = format!("/connectors/{c}/{}", op.as_str());
    let r = client.put(format!("{url}{path}")).timeout(timeout).send().await.map_err(|e| format!("PUT {path}: {}", error_text(&e)))?;
    if !r.status().is_success() {
        let s = r.status().as_u16();
        return Err(format!("PUT {path}: HTTP {s}: {}", cut(r.text().await.unwrap_or_default())));
    }
    let deadline = Instant::now() + timeout;
    let mut seen = String::from("nothing read yet");
    loop {
        if let Ok(r) = client.get(format!("{url}/connectors/{c}/status")).timeout(timeout).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                let (ok, s) = check(&v, op);
                seen = s;
                if ok {
                    return Ok(format!("PUT {path} → {seen}"));
                }
            }
        }
        if Instant::now() + POLL > deadline {
            return Err(format!("PUT {path}: not reached within {timeout:?}, last seen: {seen}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn scale_pause(scale: Option<&ScaleRuntime>, target: &str) -> Result<String, String> {
    let rt = scale.ok_or_else(|| format!("no [[scale]] targets here to pause {target:?}"))?;
    rt.pause(target, "pause for an offset move").await.map(|o| format!("scale {target}: {o:?}")).map_err(|e| format!("scale {target}: {e}"))
}

async fn scale_resume(scale: Option<&ScaleRuntime>, target: &str, replicas: Option<u32>) -> Result<String, String> {
    let rt = scale.ok_or_else(|| format!("no [[scale]] targets here to resume {target:?}"))?;
    let n = replicas.ok_or_else(|| format!("{target}: the count before the pause was not recorded"))?;
    rt.resume(target, n, "resume after an offset move").await.map(|o| format!("scale {target}: {o:?}")).map_err(|e| format!("scale {target}: {e}"))
}

/// Budget of a stop-with-savepoint or of a resubmission until RUNNING and checkpointing.
const FLINK_DEADLINE: Duration = Duration::from_secs(120);

async fn flink_running(f: &FlinkPause, client: &reqwest::Client) -> Result<Option<String>, String> {
    let o: JobsOverview = crate::sample::http::get_json(client, &format!("{}/jobs/overview", f.url.trim_end_matches('/'))).await.map_err(|e| format!("GET /jobs/overview: {e}"))?;
    Ok(o.jobs.into_iter().filter(|j| j.name == f.job && !is_terminal(&j.state)).max_by_key(|j| j.start_time).map(|j| j.jid))
}

async fn flink_pause(f: &FlinkPause, client: &reqwest::Client, timeout: Duration) -> Result<String, String> {
    let jobs = FlinkJobs::new(&f.url, timeout, POLL).map_err(|e| e.to_string())?;
    let Some(jid) = flink_running(f, client).await? else { return Ok(format!("no running Flink job named {:?}: already stopped", f.job)) };
    let sp = jobs.stop_with_savepoint(&jid, None, FLINK_DEADLINE).await.map_err(|e| format!("stop job {jid} with a savepoint: {e}"))?;
    Ok(format!("Flink job {jid} ({}) stopped with savepoint {} (kept; the resume does not use it)", f.job, sp.location))
}

async fn flink_resume(f: &FlinkPause, client: &reqwest::Client, timeout: Duration) -> Result<String, String> {
    if let Some(jid) = flink_running(f, client).await? {
        return Ok(format!("Flink job {jid} ({}) already running", f.job));
    }
    let jobs = FlinkJobs::new(&f.url, timeout, POLL).map_err(|e| e.to_string())?;
    let jar_id = jobs.find_jar(&f.jar).await.map_err(|e| e.to_string())?;
    let spec = JobSpec { jar_id, entry_class: f.entry_class.clone(), program_args: f.args.clone(), parallelism: f.parallelism, flink_configuration: Default::default(), allow_non_restored_state: false };
    let r = jobs.submit(&spec, None, None, FLINK_DEADLINE).await.map_err(|e| format!("resubmit {}: {e}", f.jar))?;
    Ok(format!("Flink job {} ({}) resubmitted without the savepoint: RUNNING, checkpoint {} completed", r.jid, f.job, r.checkpoint_id))
}

pub async fn pause(p: &Pause, client: &reqwest::Client, scale: Option<&ScaleRuntime>, timeout: Duration) -> Result<String, String> {
    match p {
        Pause::None => Ok("nothing to pause".into()),
        Pause::Command { pause, .. } => run(pause, timeout).await,
        Pause::Connect { url, connector } => connect(client, url, connector, ConnectOp::Stop, timeout).await,
        Pause::Scale { target, .. } => scale_pause(scale, target).await,
        Pause::Flink(f) => flink_pause(f, client, timeout).await,
    }
}

pub async fn resume(p: &Pause, client: &reqwest::Client, scale: Option<&ScaleRuntime>, timeout: Duration) -> Result<String, String> {
    match p {
        Pause::None => Ok("nothing to resume".into()),
        Pause::Command { resume, .. } => run(resume, timeout).await,
        Pause::Connect { url, connector } => connect(client, url, connector, ConnectOp::Resume, timeout).await,
        Pause::Scale { target, replicas } => scale_resume(scale, target, *replicas).await,
        Pause::Flink(f) => flink_resume(f, client, timeout).await,
    }
}

/// `PATCH /connectors/{c}/offsets` for a sink connector (the connector must be STOPPED).
pub async fn connect_commit(client: &reqwest::Client, url: &str, connector: &str, offsets: &[(String, i32, i64)], timeout: Duration) -> Result<String, String> {
    let body = serde_json::json!({"offsets": offsets.iter().map(|(t, p, o)| serde_json::json!({
        "partition": {"kafka_topic": t, "kafka_partition": p},
        "offset": {"kafka_offset": o},
    })).collect::<Vec<_>>()});
    let path = format!("/connectors/{}/offsets", segment(connector));
    let r = client.patch(format!("{url}{path}")).json(&body).timeout(timeout).send().await.map_err(|e| format!("PATCH {path}: {}", error_text(&e)))?;
    let s = r.status().as_u16();
    let text = cut(r.text().await.unwrap_or_default());
    if (200..300).contains(&s) {
        Ok(format!("PATCH {path}: HTTP {s}"))
    } else {
        Err(format!("PATCH {path}: HTTP {s}: {text}"))
    }
}

/// `s` cut to 512 bytes at a character boundary.
fn cut(s: String) -> String {
    crate::remediate::connect_api::cut_at(s, 512)
}

/// A request error without its URL (which may hold credentials).
fn error_text(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A runtime whose one `command` target appends every request to `log` and reports
    /// `current` (`None`: no current_command, the count is unknown).
    fn runtime(log: &std::path::Path, current: Option<&str>) -> ScaleRuntime {
        let mut actuator = json!({"type": "command", "command": ["sh", "-c", format!("cat >> {}; echo >> {}", log.display(), log.display())]});
        if let Some(c) = current {
            actuator["current_command"] = json!(["sh", "-c", format!("echo {c}")]);
        }
        let raw: crate::scale::config::RawScaleTarget = serde_json::from_value(json!({
            "name": "t", "group": "g", "topic": "x", "min_replicas": 1, "max_replicas": 8, "min_interval": "0s",
            "policy": {"type": "throughput", "catch_up_within": "1m"}, "actuator": actuator
        }))
        .unwrap();
        ScaleRuntime::new(&[crate::scale::config::validate(&raw, "test", "scale[0]").unwrap()], &Default::default()).unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    #[test]
    fn a_scale_pause_returns_to_the_count_read_at_the_plan_and_holds_the_policy_off_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests");
        let rt = runtime(&log, Some("3"));
        let mut p = Pause::Scale { target: "t".into(), replicas: None };
        block_on(prepare(&mut p, Some(&rt))).unwrap();
        assert_eq!(p, Pause::Scale { target: "t".into(), replicas: Some(3) }, "the count before the pause, journaled with the plan");
        let client = reqwest::Client::new();
        block_on(pause(&p, &client, Some(&rt), Duration::from_secs(5))).unwrap();
        assert!(rt.is_paused("t"));
        assert!(rt.status(std::time::SystemTime::now())[0].paused_for_offset_move, "the API shows the hold");
        let read = |_: &crate::scale::config::ScaleTarget, _| crate::scale::runtime::GroupReadings::default();
        let e = block_on(rt.scale("t", crate::scale::runtime::ScaleTo::Count(5), &read, false)).unwrap_err();
        assert_eq!(e.to_string(), "t: paused for an offset move; not scaled until it is resumed");
        block_on(resume(&p, &client, Some(&rt), Duration::from_secs(5))).unwrap();
        assert!(!rt.is_paused("t"));
        assert!(!rt.status(std::time::SystemTime::now())[0].paused_for_offset_move);
        let sent: Vec<serde_json::Value> = std::fs::read_to_string(&log).unwrap().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
        let to: Vec<u64> = sent.iter().map(|r| r["to"].as_u64().unwrap()).collect();
        assert_eq!(to, [0, 3], "paused to 0, resumed to 3; the held policy sent nothing: {sent:?}");
    }

    #[test]
    fn a_scale_target_of_unknown_count_and_a_flink_job_whose_state_must_stay_are_refused_before_any_pause() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir.path().join("requests"), None);
        let mut p = Pause::Scale { target: "t".into(), replicas: None };
        let e = block_on(prepare(&mut p, Some(&rt))).unwrap_err();
        assert_eq!(e, "the replica count of t is unknown, so a resume could not restore it");
        assert!(block_on(prepare(&mut Pause::Scale { target: "t".into(), replicas: None }, None)).unwrap_err().contains("no [[scale]] targets"));
        assert!(!dir.path().join("requests").exists(), "nothing was sent");
        let f = FlinkPause { url: "http://127.0.0.1:1".into(), job: "j".into(), jar: "j.jar".into(), entry_class: None, args: vec![], parallelism: None, discard_state: false };
        assert!(refusal(&Pause::Flink(f.clone())).unwrap().contains("takes its Kafka offsets from the savepoint, not from the group"));
        assert_eq!(refusal(&Pause::Flink(FlinkPause { discard_state: true, ..f })), None);
    }

    #[test]
    fn stop_is_reached_when_stopped_and_resume_only_when_every_task_runs() {
        assert!(check(&json!({"connector": {"state": "STOPPED"}, "tasks": []}), ConnectOp::Stop).0);
        assert!(!check(&json!({"connector": {"state": "RUNNING"}, "tasks": [{"state": "FAILED"}]}), ConnectOp::Resume).0);
        assert!(check(&json!({"connector": {"state": "RUNNING"}, "tasks": [{"state": "RUNNING"}]}), ConnectOp::Resume).0);
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(cut("é".repeat(300)).len(), 512);
    }
}
