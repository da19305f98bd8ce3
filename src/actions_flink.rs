//! Flink job actions over the REST API, each polled to completion and verified:
//!
//! - [`FlinkJobs::trigger_savepoint`]: `POST /jobs/{jid}/savepoints`, poll
//!   `GET /jobs/{jid}/savepoints/{request-id}` until COMPLETED (its location) or failed;
//! - [`FlinkJobs::stop_with_savepoint`]: `POST /jobs/{jid}/stop`, poll the same, then wait
//!   for the job to reach FINISHED;
//! - [`FlinkJobs::cancel`]: `PATCH /jobs/{jid}?mode=cancel`, wait for CANCELED;
//! - [`FlinkJobs::submit`]: `POST /jars/{jar}/run` (optionally from a savepoint or a
//!   retained checkpoint, optionally with a new parallelism: that is how a Flink job
//!   scales), then [`FlinkJobs::verify_running`]: RUNNING, and a checkpoint completed after
//!   the submission ("checkpoints complete again");
//! - [`FlinkJobs::rescale`]: stop-with-savepoint, then submit from it with a new parallelism;
//! - [`FlinkJobs::savepoint_and_restart`] (the stalled-checkpoint runbook's action):
//!   stop-with-savepoint if possible, else cancel and restart from the last *completed*
//!   checkpoint (read before cancelling; the job must retain checkpoints on cancellation,
//!   `execution.checkpointing.externalized-checkpoint-retention: RETAIN_ON_CANCELLATION`).
//!
//! A job's program (jar, entry class, arguments) is not retrievable from Flink, so a
//! resubmission takes a [`JobSpec`].
//!
//! # Guarantees
//! - Every wait is bounded by the caller's timeout and returns a typed
//!   [`FlinkActionError`] naming the step that failed; failure causes from Flink are
//!   shortened to their first line.
//! - Nothing here retries a non-idempotent call (a savepoint trigger, a submission): the
//!   executor's error policy decides.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::sample::flink_api::{CheckpointStats, JobState};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlinkActionError {
    #[error("{step}: {message}")]
    Http { step: &'static str, message: String },
    #[error("{step}: HTTP {status}: {body}")]
    Status { step: &'static str, status: u16, body: String },
    #[error("{step}: timed out after {secs:.0}s{last}")]
    Timeout { step: &'static str, secs: f64, last: String },
    #[error("{step} failed: {cause}")]
    Failed { step: &'static str, cause: String },
    #[error("job {jid} is {state}, expected {expected}")]
    UnexpectedState { jid: String, state: String, expected: &'static str },
    #[error("no jar named {0:?} is uploaded to this Flink cluster")]
    NoJar(String),
    #[error("job {0} has no completed checkpoint with an external path to restart from")]
    NoCheckpoint(String),
}

impl FlinkActionError {
    /// Bounded label value.
    pub fn kind(&self) -> &'static str {
        match self {
            FlinkActionError::Http { .. } => "http",
            FlinkActionError::Status { .. } => "http_status",
            FlinkActionError::Timeout { .. } => "timeout",
            FlinkActionError::Failed { .. } => "failed",
            FlinkActionError::UnexpectedState { .. } => "unexpected_state",
            FlinkActionError::NoJar(_) => "no_jar",
            FlinkActionError::NoCheckpoint(_) => "no_checkpoint",
        }
    }
}

/// How to (re)submit a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The uploaded jar's id (`GET /jars` `files[].id`); see [`FlinkJobs::find_jar`].
    pub jar_id: String,
    pub entry_class: Option<String>,
    #[serde(default)]
    pub program_args: Vec<String>,
    pub parallelism: Option<u32>,
    /// Per-job Flink configuration (`flinkConfiguration` of the run request).
    #[serde(default)]
    pub flink_configuration: BTreeMap<String, String>,
    #[serde(default)]
    pub allow_non_restored_state: bool,
}

/// A completed savepoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Savepoint {
    pub location: String,
    pub took_seconds: f64,
}

/// A verified running job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Running {
    pub jid: String,
    /// The highest vertex parallelism.
    pub parallelism: u32,
    /// The first checkpoint completed after the submission.
    pub checkpoint_id: u64,
}

/// How [`FlinkJobs::savepoint_and_restart`] restarted the job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Restarted {
    /// `savepoint` or `checkpoint`.
    pub via: &'static str,
    pub path: String,
    /// Why the savepoint was not used, if it was not.
    pub savepoint_error: Option<String>,
    pub job: Running,
}

#[derive(Debug, Deserialize)]
struct TriggerResponse {
    #[serde(rename = "request-id")]
    request_id: String,
}

#[derive(Debug, Deserialize)]
struct AsyncStatus {
    status: AsyncStatusId,
    #[serde(default)]
    operation: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct AsyncStatusId {
    id: String,
}

#[derive(Debug, Deserialize)]
struct JobDetail {
    state: String,
    #[serde(default)]
    vertices: Vec<Vertex>,
}

#[derive(Debug, Deserialize)]
struct Vertex {
    parallelism: u32,
}

#[derive(Debug, Deserialize)]
struct Jars {
    #[serde(default)]
    files: Vec<JarFile>,
}

#[derive(Debug, Deserialize)]
struct JarFile {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct RunResponse {
    jobid: String,
}

/// The first line of a Flink failure cause (its stack trace is long and unbounded).
fn failure_cause(op: &serde_json::Value) -> String {
    let fc = &op["failure-cause"];
    let text = fc["stack-trace"].as_str().or(fc["class"].as_str()).unwrap_or("unknown failure");
    let mut first = text.lines().next().unwrap_or("").trim().to_string();
    first.truncate(500);
    first
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Flink job actions against one cluster.
#[derive(Debug, Clone)]
pub struct FlinkJobs {
    base: String,
    client: reqwest::Client,
    poll: Duration,
}

impl FlinkJobs {
    pub fn new(base_url: &str, request_timeout: Duration, poll: Duration) -> Result<FlinkJobs, FlinkActionError> {
        let client = crate::sample::http::client(request_timeout).map_err(|e| FlinkActionError::Http { step: "client", message: e.to_string() })?;
        Ok(FlinkJobs { base: base_url.trim_end_matches('/').to_string(), client, poll })
    }

    async fn call<T: serde::de::DeserializeOwned>(&self, step: &'static str, req: reqwest::RequestBuilder) -> Result<T, FlinkActionError> {
        let resp = req.send().await.map_err(|e| FlinkActionError::Http { step, message: e.to_string() })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| FlinkActionError::Http { step, message: e.to_string() })?;
        if !status.is_success() {
            let mut body = String::from_utf8_lossy(&bytes).to_string();
            body.truncate(500);
            return Err(FlinkActionError::Status { step, status: status.as_u16(), body });
        }
        serde_json::from_slice(&bytes).map_err(|e| FlinkActionError::Http { step, message: format!("invalid response: {e}") })
    }

    /// The id of the uploaded jar whose file name contains `name` (newest first as Flink lists them).
    pub async fn find_jar(&self, name: &str) -> Result<String, FlinkActionError> {
        let jars: Jars = self.call("list jars", self.client.get(format!("{}/jars", self.base))).await?;
        jars.files.into_iter().find(|f| f.name.contains(name)).map(|f| f.id).ok_or_else(|| FlinkActionError::NoJar(name.to_string()))
    }

    pub async fn job_state(&self, jid: &str) -> Result<(String, u32), FlinkActionError> {
        let d: JobDetail = self.call("job detail", self.client.get(format!("{}/jobs/{jid}", self.base))).await?;
        Ok((d.state, d.vertices.iter().map(|v| v.parallelism).max().unwrap_or(0)))
    }

    pub async fn checkpoints(&self, jid: &str) -> Result<CheckpointStats, FlinkActionError> {
        self.call("checkpoint statistics", self.client.get(format!("{}/jobs/{jid}/checkpoints", self.base))).await
    }

    async fn poll_savepoint(&self, step: &'static str, jid: &str, request_id: &str, deadline: Instant, started: Instant) -> Result<Savepoint, FlinkActionError> {
        let url = format!("{}/jobs/{jid}/savepoints/{request_id}", self.base);
        loop {
            let s: AsyncStatus = self.call(step, self.client.get(&url)).await?;
            if s.status.id == "COMPLETED" {
                let op = s.operation.unwrap_or_default();
                if let Some(loc) = op["location"].as_str() {
                    return Ok(Savepoint { location: loc.to_string(), took_seconds: started.elapsed().as_secs_f64() });
                }
                return Err(FlinkActionError::Failed { step, cause: failure_cause(&op) });
            }
            if Instant::now() >= deadline {
                return Err(FlinkActionError::Timeout { step, secs: started.elapsed().as_secs_f64(), last: format!(" (status {})", s.status.id) });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Waits until the job is in `want` (or fails fast on another terminal state).
    async fn wait_state(&self, step: &'static str, jid: &str, want: JobState, deadline: Instant) -> Result<u32, FlinkActionError> {
        let started = Instant::now();
        loop {
            let (state, par) = self.job_state(jid).await?;
            if state == want.as_str() {
                return Ok(par);
            }
            if JobState::parse(&state).is_some_and(|s| s.is_terminal()) {
                return Err(FlinkActionError::UnexpectedState { jid: jid.to_string(), state, expected: want.as_str() });
            }
            if Instant::now() >= deadline {
                return Err(FlinkActionError::Timeout { step, secs: started.elapsed().as_secs_f64(), last: format!(" (job {state})") });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Triggers a savepoint (the job keeps running) and waits for it.
    pub async fn trigger_savepoint(&self, jid: &str, target_dir: Option<&str>, timeout: Duration) -> Result<Savepoint, FlinkActionError> {
        let started = Instant::now();
        let body = serde_json::json!({"target-directory": target_dir, "cancel-job": false});
        let t: TriggerResponse = self.call("trigger savepoint", self.client.post(format!("{}/jobs/{jid}/savepoints", self.base)).json(&body)).await?;
        self.poll_savepoint("savepoint", jid, &t.request_id, started + timeout, started).await
    }

    /// Stops the job with a savepoint and waits for FINISHED.
    pub async fn stop_with_savepoint(&self, jid: &str, target_dir: Option<&str>, timeout: Duration) -> Result<Savepoint, FlinkActionError> {
        let started = Instant::now();
        let body = serde_json::json!({"targetDirectory": target_dir, "drain": false});
        let t: TriggerResponse = self.call("stop with savepoint", self.client.post(format!("{}/jobs/{jid}/stop", self.base)).json(&body)).await?;
        let sp = self.poll_savepoint("stop with savepoint", jid, &t.request_id, started + timeout, started).await?;
        self.wait_state("stop with savepoint", jid, JobState::Finished, started + timeout).await?;
        Ok(sp)
    }

    /// Cancels the job and waits for CANCELED.
    pub async fn cancel(&self, jid: &str, timeout: Duration) -> Result<(), FlinkActionError> {
        let started = Instant::now();
        let resp = self.client.patch(format!("{}/jobs/{jid}?mode=cancel", self.base)).send().await.map_err(|e| FlinkActionError::Http { step: "cancel", message: e.to_string() })?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let mut body = resp.text().await.unwrap_or_default();
            body.truncate(500);
            return Err(FlinkActionError::Status { step: "cancel", status, body });
        }
        self.wait_state("cancel", jid, JobState::Canceled, started + timeout).await.map(|_| ())
    }

    /// Submits `spec` (from `restore_path` if given, with `parallelism` overriding the
    /// spec's) and verifies it runs and checkpoints.
    pub async fn submit(&self, spec: &JobSpec, restore_path: Option<&str>, parallelism: Option<u32>, timeout: Duration) -> Result<Running, FlinkActionError> {
        let started = Instant::now();
        let since = SystemTime::now();
        let mut body = serde_json::json!({"programArgsList": spec.program_args, "allowNonRestoredState": spec.allow_non_restored_state});
        if let Some(c) = &spec.entry_class {
            body["entryClass"] = c.clone().into();
        }
        if let Some(p) = parallelism.or(spec.parallelism) {
            body["parallelism"] = p.into();
        }
        if let Some(path) = restore_path {
            body["savepointPath"] = path.into();
        }
        if !spec.flink_configuration.is_empty() {
            body["flinkConfiguration"] = serde_json::to_value(&spec.flink_configuration).unwrap_or_default();
        }
        let r: RunResponse = self.call("submit", self.client.post(format!("{}/jars/{}/run", self.base, spec.jar_id)).json(&body)).await?;
        self.verify_running(&r.jobid, since, started + timeout).await
    }

    /// RUNNING, then a checkpoint completed after `since`.
    pub async fn verify_running(&self, jid: &str, since: SystemTime, deadline: Instant) -> Result<Running, FlinkActionError> {
        let started = Instant::now();
        let parallelism = self.wait_state("verify running", jid, JobState::Running, deadline).await?;
        loop {
            // Right after submission the statistics may not exist yet: keep polling.
            if let Ok(stats) = self.checkpoints(jid).await {
                if let Some(c) = stats.latest.completed.filter(|c| c.latest_ack_timestamp >= unix_ms(since)) {
                    return Ok(Running { jid: jid.to_string(), parallelism, checkpoint_id: c.id });
                }
            }
            if Instant::now() >= deadline {
                return Err(FlinkActionError::Timeout { step: "verify checkpoints complete", secs: started.elapsed().as_secs_f64(), last: String::new() });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Scales a job: stop with a savepoint, submit from it with `parallelism`.
    pub async fn rescale(&self, jid: &str, spec: &JobSpec, parallelism: u32, timeout: Duration) -> Result<(Savepoint, Running), FlinkActionError> {
        let started = Instant::now();
        let sp = self.stop_with_savepoint(jid, None, timeout).await?;
        let left = timeout.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
        let run = self.submit(spec, Some(&sp.location), Some(parallelism), left).await?;
        Ok((sp, run))
    }

    /// The stalled-checkpoint remedy: stop with a savepoint (within `savepoint_timeout`)
    /// and resubmit from it; if the savepoint fails, cancel and resubmit from the last
    /// completed checkpoint. Verified like [`FlinkJobs::submit`].
    pub async fn savepoint_and_restart(&self, jid: &str, spec: &JobSpec, savepoint_timeout: Duration, timeout: Duration) -> Result<Restarted, FlinkActionError> {
        let started = Instant::now();
        // Read the fallback before anything changes.
        let checkpoint = self.checkpoints(jid).await?.latest.completed.and_then(|c| c.external_path);
        match self.stop_with_savepoint(jid, None, savepoint_timeout).await {
            Ok(sp) => {
                let left = timeout.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
                let job = self.submit(spec, Some(&sp.location), None, left).await?;
                Ok(Restarted { via: "savepoint", path: sp.location, savepoint_error: None, job })
            }
            Err(e) => {
                // A checkpoint may have completed since: prefer the newest known.
                let newer = self.checkpoints(jid).await.ok().and_then(|s| s.latest.completed).and_then(|c| c.external_path);
                let path = newer.or(checkpoint).ok_or_else(|| FlinkActionError::NoCheckpoint(jid.to_string()))?;
                // A stop that failed leaves the job running; a stop that finished the job
                // without a savepoint location is reported as the error and restarted too.
                let (state, _) = self.job_state(jid).await?;
                if !JobState::parse(&state).is_some_and(|s| s.is_terminal()) {
                    self.cancel(jid, timeout.saturating_sub(started.elapsed()).max(Duration::from_secs(1))).await?;
                }
                let left = timeout.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
                let job = self.submit(spec, Some(&path), None, left).await?;
                Ok(Restarted { via: "checkpoint", path, savepoint_error: Some(e.to_string()), job })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_cause_is_shortened_to_its_first_line() {
        let op = serde_json::json!({"failure-cause": {"class": "java.util.concurrent.CompletionException", "stack-trace": "org.apache.flink.runtime.checkpoint.CheckpointException: Checkpoint expired before completing.\n\tat a.b.C\n\tat d.e.F"}});
        assert_eq!(failure_cause(&op), "org.apache.flink.runtime.checkpoint.CheckpointException: Checkpoint expired before completing.");
        assert_eq!(failure_cause(&serde_json::json!({})), "unknown failure");
    }
}
