//! The Flink source: job and checkpoint health of one Flink cluster, over its REST API.
//!
//! One sample is:
//! 1. `GET /jobs/overview` (every job the JobManager still lists: running ones and
//!    terminal ones until `jobstore.expiration-time`) and `GET /overview` (TaskManagers
//!    and slots), concurrently;
//! 2. for each *exported* job (see below), concurrently with at most [`MAX_IN_FLIGHT`]
//!    jobs in flight: `GET /jobs/{jid}/checkpoints` and
//!    `GET /jobs/{jid}/metrics?get=numRestarts` (Flink 2.x has no restart count in
//!    `GET /jobs/{jid}`; the job metric is kept for ended jobs while they are listed).
//!
//! Jobs are labelled by **name**, never by id: a job id is new on every submission, so
//! ids are unbounded over time. Several listed jobs can share a name (a cancelled run and
//! its resubmission); per name the sampler exports one, chosen by [`select_jobs`]: a
//! job in a non-terminal state wins over terminal ones, then the latest start time. The
//! job id is in the target detail.
//!
//! The answers become observations in the pure [`build`]: a function of the parsed
//! responses, the sample time and the previous failed-checkpoint counts (kept by the
//! sampler for [`checkpoints_failed_rate`](crate::catalog::flink::SIGNALS)). Unknown is not zero: no
//! checkpoint age before a job's first completed checkpoint, none for terminal jobs, no
//! restart count until Flink's metric fetcher has one (it refreshes every
//! `metrics.fetcher.update-interval`, 10 s by default, and answers `[]` for a job it
//! has not fetched yet).
//!
//! # Errors
//! - `/jobs/overview` unreachable, timed out, non-2xx or undecodable: the sample fails
//!   with that [`HttpError`] and the source goes stale.
//! - One job's checkpoint (or metric) call failing does not fail the sample: that job
//!   has no checkpoint (or restart) series this sample and the error is in its target
//!   detail. `/overview` failing only leaves TaskManager counts out of the cluster target.
//! - Every call times out with the source's `sample_timeout`, and the per-job calls must
//!   also finish by the end of that timeout counted from the start of the sample (but
//!   get at least 250 ms), so a sample stays within the agent's hard timeout.
//!
//! # Not done here
//! No retries, scheduling or decisions (the agent loop's job); no per-vertex metrics
//! (back pressure, watermarks); no savepoints or job control.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::flink_api::*;
use super::http::{self, HttpError};
use crate::config::HttpSourceConfig;
use crate::signal::{Observation, SourceSample, TargetInfo};

/// Per-job requests in flight at once (each job makes one or two calls).
pub const MAX_IN_FLIGHT: usize = 8;

/// Time every job's calls get even when `/jobs/overview` used up the sample timeout,
/// so a slow overview does not wipe every job's checkpoint series.
const MIN_JOB_BUDGET: Duration = Duration::from_millis(250);

/// The Flink metric holding a job's restart count.
const RESTARTS_METRIC: &str = "numRestarts";

// ---------------------------------------------------------------------------------------
// Pure core
// ---------------------------------------------------------------------------------------

/// One exported job and the ids of the other listed runs of the same name.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected<'a> {
    pub job: &'a JobOverview,
    pub shadowed: Vec<&'a str>,
}

/// One job per name: non-terminal before terminal, then the latest start time, then
/// the greatest id (only so the choice is deterministic). Sorted by name. Pure.
pub fn select_jobs(jobs: &[JobOverview]) -> Vec<Selected<'_>> {
    let mut by_name: BTreeMap<&str, Vec<&JobOverview>> = BTreeMap::new();
    for j in jobs {
        by_name.entry(j.name.as_str()).or_default().push(j);
    }
    by_name
        .into_values()
        .filter_map(|mut runs| {
            runs.sort_by(|a, b| {
                (!is_terminal(&a.state), a.start_time, &a.jid).cmp(&(!is_terminal(&b.state), b.start_time, &b.jid)).reverse()
            });
            let (first, rest) = runs.split_first()?;
            Some(Selected { job: first, shadowed: rest.iter().map(|j| j.jid.as_str()).collect() })
        })
        .collect()
}

/// What the per-job calls returned. `restarts` is `Ok(None)` while Flink's metric
/// store has no value (it answers `[]`, also for a job id it does not know).
#[derive(Debug, Clone)]
pub struct JobFetch {
    pub checkpoints: Result<CheckpointStats, HttpError>,
    pub restarts: Result<Option<u64>, HttpError>,
}

/// The restart count in a `GET /jobs/{jid}/metrics?get=numRestarts` answer.
pub fn restarts_from_metrics(values: &[MetricValue]) -> Option<u64> {
    values.iter().find(|m| m.id == RESTARTS_METRIC).and_then(|m| m.value.trim().parse::<u64>().ok())
}

/// Failed-checkpoint count and sample time of each job run at its previous sample, by
/// job id: what [`checkpoints_failed_rate`](crate::catalog::flink::SIGNALS) is computed from.
pub type RateState = HashMap<String, (u64, SystemTime)>;

/// One exported job, with everything derived from this sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    pub name: String,
    pub jid: String,
    /// As Flink wrote it.
    pub state: String,
    /// Unix milliseconds.
    pub start_time: i64,
    pub end_time: i64,
    pub uptime_seconds: f64,
    /// Other listed runs with this name (not exported).
    pub shadowed_jids: Vec<String>,
    pub restarts: Option<u64>,
    pub restarts_error: Option<String>,
    pub checkpoints: Option<CheckpointStats>,
    pub checkpoints_error: Option<String>,
    /// `None`: no completed checkpoint, terminal job, or checkpoints unknown.
    pub checkpoint_age_seconds: Option<f64>,
    /// `None`: first sample of this run, counts unknown, or a counter reset.
    pub checkpoints_failed_rate: Option<f64>,
}

impl JobView {
    fn parsed_state(&self) -> Option<JobState> {
        JobState::parse(&self.state)
    }

    /// `failed` for FAILED/FAILING; `warn` for RESTARTING, or when the latest failed
    /// checkpoint is newer than the latest completed one (of a job that still runs);
    /// `ok` for RUNNING and FINISHED; `unknown` otherwise, and for a running job whose
    /// checkpoints could not be read.
    pub fn health(&self) -> &'static str {
        let state = self.parsed_state();
        match state {
            Some(JobState::Failed | JobState::Failing) => return "failed",
            Some(JobState::Restarting) => return "warn",
            _ => {}
        }
        let running = !state.is_some_and(JobState::is_terminal);
        if running && self.checkpoints.as_ref().is_some_and(latest_failure_is_newer) {
            return "warn";
        }
        match state {
            Some(JobState::Running) if self.checkpoints_error.is_some() => "unknown",
            Some(JobState::Running | JobState::Finished) => "ok",
            _ => "unknown",
        }
    }
}

/// The latest failed checkpoint failed after the latest completed one completed (or
/// none ever completed).
fn latest_failure_is_newer(c: &CheckpointStats) -> bool {
    match (&c.latest.failed, &c.latest.completed) {
        (Some(f), Some(ok)) => f.failure_timestamp > ok.latest_ack_timestamp,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// One complete sample of one Flink cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlinkSnapshot {
    pub source: String,
    pub url: String,
    pub cluster: Option<ClusterOverview>,
    pub cluster_error: Option<String>,
    /// Jobs listed by `/jobs/overview`, all states, duplicates of a name included.
    pub jobs_listed: usize,
    /// One per job name, sorted by name.
    pub jobs: Vec<JobView>,
}

fn ms_to_time(ms: i64) -> Option<SystemTime> {
    u64::try_from(ms).ok().map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

/// `later − earlier` in seconds, floored at 0 (Flink's clock may run slightly ahead of
/// the sample time taken before the request).
fn secs_between(earlier: SystemTime, later: SystemTime) -> f64 {
    later.duration_since(earlier).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Assembles a snapshot from the REST answers. Pure: `now` is the sample time, `prev`
/// the previous failed counts; returns the snapshot and the counts to keep for the
/// next sample (exported jobs only; a job whose checkpoints could not be read keeps its
/// previous entry, so the next rate spans both intervals).
pub fn build(
    source: &str,
    url: &str,
    cluster: Result<ClusterOverview, HttpError>,
    jobs: &[JobOverview],
    fetched: &HashMap<String, JobFetch>,
    now: SystemTime,
    prev: &RateState,
) -> (FlinkSnapshot, RateState) {
    let mut next = RateState::new();
    let mut views = Vec::new();
    for sel in select_jobs(jobs) {
        let j = sel.job;
        let terminal = is_terminal(&j.state);
        let uptime_seconds = if terminal {
            j.duration.max(0) as f64 / 1000.0
        } else {
            ms_to_time(j.start_time).map(|t| secs_between(t, now)).unwrap_or(0.0)
        };
        let fetch = fetched.get(&j.jid);
        let (checkpoints, checkpoints_error) = match fetch.map(|f| &f.checkpoints) {
            Some(Ok(c)) => (Some(c.clone()), None),
            Some(Err(e)) => (None, Some(e.to_string())),
            None => (None, Some("checkpoint statistics were not fetched".to_string())),
        };
        let (restarts, restarts_error) = match fetch.map(|f| &f.restarts) {
            Some(Ok(r)) => (*r, None),
            Some(Err(e)) => (None, Some(e.to_string())),
            None => (None, None),
        };
        let checkpoint_age_seconds = match &checkpoints {
            Some(c) if !terminal => c
                .latest
                .completed
                .as_ref()
                .and_then(|done| ms_to_time(done.latest_ack_timestamp))
                .map(|acked| secs_between(acked, now)),
            _ => None,
        };
        let checkpoints_failed_rate = match &checkpoints {
            Some(c) => {
                next.insert(j.jid.clone(), (c.counts.failed, now));
                prev.get(&j.jid).and_then(|&(before, at)| {
                    let dt = now.duration_since(at).ok()?.as_secs_f64();
                    (dt > 0.0 && c.counts.failed >= before).then(|| (c.counts.failed - before) as f64 / dt)
                })
            }
            None => {
                if let Some(p) = prev.get(&j.jid) {
                    next.insert(j.jid.clone(), *p);
                }
                None
            }
        };
        views.push(JobView {
            name: j.name.clone(),
            jid: j.jid.clone(),
            state: j.state.clone(),
            start_time: j.start_time,
            end_time: j.end_time,
            uptime_seconds,
            shadowed_jids: sel.shadowed.iter().map(|s| s.to_string()).collect(),
            restarts,
            restarts_error,
            checkpoints,
            checkpoints_error,
            checkpoint_age_seconds,
            checkpoints_failed_rate,
        });
    }
    let (cluster, cluster_error) = match cluster {
        Ok(c) => (Some(c), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let snapshot = FlinkSnapshot {
        source: source.to_string(),
        url: url.to_string(),
        cluster,
        cluster_error,
        jobs_listed: jobs.len(),
        jobs: views,
    };
    (snapshot, next)
}

impl FlinkSnapshot {
    /// The signals of this sample. Unknown values produce no observation.
    pub fn observations(&self) -> Vec<Observation> {
        let f = self.source.as_str();
        let mut out = Vec::new();
        out.extend(Observation::new("flink_jobs", &[("flink", f)], self.jobs_listed as f64));
        for j in &self.jobs {
            let l = [("flink", f), ("flink_job", j.name.as_str())];
            let state = j.parsed_state();
            for st in JobState::ALL {
                out.extend(Observation::new(
                    "flink_job_state",
                    &[l[0], l[1], ("state", st.as_str())],
                    f64::from(u8::from(state == Some(st))),
                ));
            }
            out.extend(Observation::new("flink_job_uptime_seconds", &l, j.uptime_seconds));
            if let Some(r) = j.restarts {
                out.extend(Observation::new("flink_job_restarts", &l, r as f64));
            }
            if let Some(age) = j.checkpoint_age_seconds {
                out.extend(Observation::new("checkpoint_age_seconds", &l, age));
            }
            if let Some(rate) = j.checkpoints_failed_rate {
                out.extend(Observation::new("checkpoints_failed_rate", &l, rate));
            }
            let Some(c) = &j.checkpoints else { continue };
            out.extend(Observation::new("checkpoints_failed", &l, c.counts.failed as f64));
            out.extend(Observation::new("checkpoints_completed", &l, c.counts.completed as f64));
            if let Some(done) = &c.latest.completed {
                out.extend(Observation::new("checkpoint_duration_seconds", &l, done.end_to_end_duration.max(0) as f64 / 1000.0));
                if let Some(size) = done.size_bytes() {
                    out.extend(Observation::new("checkpoint_size_bytes", &l, size as f64));
                }
            }
        }
        out
    }

    /// The cluster and its exported jobs as API targets.
    pub fn targets(&self) -> Vec<TargetInfo> {
        let health = match &self.cluster {
            None => "unknown",
            Some(c) if c.taskmanagers == 0 => "warn",
            Some(_) => "ok",
        };
        let mut out = vec![TargetInfo {
            kind: "flink_cluster",
            name: self.source.clone(),
            health,
            detail: serde_json::json!({
                "url": self.url,
                "taskmanagers": self.cluster.as_ref().map(|c| c.taskmanagers),
                "slots_total": self.cluster.as_ref().map(|c| c.slots_total),
                "slots_available": self.cluster.as_ref().map(|c| c.slots_available),
                "flink_version": self.cluster.as_ref().map(|c| c.flink_version.as_str()),
                "jobs_listed": self.jobs_listed,
                "jobs_exported": self.jobs.len(),
                "error": self.cluster_error,
            }).into(),
        }];
        for j in &self.jobs {
            let c = j.checkpoints.as_ref();
            out.push(TargetInfo {
                kind: "flink_job",
                name: j.name.clone(),
                health: j.health(),
                detail: serde_json::json!({
                    "jid": j.jid,
                    "state": j.state,
                    "start_time_ms": j.start_time,
                    "end_time_ms": (j.end_time >= 0).then_some(j.end_time),
                    "uptime_seconds": j.uptime_seconds,
                    "restarts": j.restarts,
                    "restarts_error": j.restarts_error,
                    "checkpoint_counts": c.map(|c| c.counts),
                    "latest_completed_checkpoint": c.and_then(|c| c.latest.completed.as_ref()),
                    "latest_failed_checkpoint": c.and_then(|c| c.latest.failed.as_ref()),
                    "checkpoint_age_seconds": j.checkpoint_age_seconds,
                    "checkpoints_error": j.checkpoints_error,
                    "other_runs": j.shadowed_jids,
                }).into(),
            });
        }
        out
    }

    /// Both, as one source sample.
    pub fn to_sample(&self) -> SourceSample {
        SourceSample { observations: self.observations(), targets: self.targets(), ..SourceSample::default() }
    }
}

// ---------------------------------------------------------------------------------------
// Edge: the HTTP calls
// ---------------------------------------------------------------------------------------

/// Samples one Flink cluster over its REST API.
#[derive(Debug)]
pub struct FlinkSampler {
    name: String,
    url: String,
    client: reqwest::Client,
    timeout: Duration,
    /// Failed-checkpoint counts at the previous sample, by job id. Never held across
    /// an `.await`.
    rates: Mutex<RateState>,
}

impl FlinkSampler {
    pub fn new(cfg: &HttpSourceConfig) -> Result<Self, HttpError> {
        Ok(FlinkSampler {
            name: cfg.name.clone(),
            url: cfg.url.trim_end_matches('/').to_string(),
            client: http::client(cfg.sample_timeout)?,
            timeout: cfg.sample_timeout,
            rates: Mutex::new(RateState::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full snapshot of one sample at `now` (what [`sample`](Self::sample) returns
    /// as observations and targets).
    pub async fn snapshot(&self, now: SystemTime) -> Result<FlinkSnapshot, HttpError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let jobs_url = format!("{}/jobs/overview", self.url);
        let overview_url = format!("{}/overview", self.url);
        let (jobs, cluster) = tokio::join!(
            http::get_json::<JobsOverview>(&self.client, &jobs_url),
            http::get_json::<ClusterOverview>(&self.client, &overview_url),
        );
        let jobs = jobs?.jobs;
        let selected: Vec<String> = select_jobs(&jobs).iter().map(|s| s.job.jid.clone()).collect();
        let job_deadline = deadline.max(tokio::time::Instant::now() + MIN_JOB_BUDGET);
        let fetched = self.fetch_jobs(selected, job_deadline).await;

        // The lock is taken and released without an `.await` in between.
        let mut rates = self.rates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (snapshot, next) = build(&self.name, &self.url, cluster, &jobs, &fetched, now, &rates);
        *rates = next;
        Ok(snapshot)
    }

    /// One sample at `now`.
    pub async fn sample(&self, now: SystemTime) -> Result<SourceSample, HttpError> {
        Ok(self.snapshot(now).await?.to_sample())
    }

    /// Checkpoint statistics and restart count of each job id, at most
    /// [`MAX_IN_FLIGHT`] jobs at once, all by `deadline`.
    async fn fetch_jobs(&self, jobs: Vec<String>, deadline: tokio::time::Instant) -> HashMap<String, JobFetch> {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut set = JoinSet::new();
        for jid in jobs {
            let client = self.client.clone();
            let permits = permits.clone();
            let checkpoints_url = format!("{}/jobs/{jid}/checkpoints", self.url);
            let metrics_url = format!("{}/jobs/{jid}/metrics?get={RESTARTS_METRIC}", self.url);
            set.spawn(async move {
                // The semaphore is never closed; without a permit the calls still run.
                let _permit = permits.acquire_owned().await.ok();
                let checkpoints = until(deadline, &checkpoints_url, http::get_json::<CheckpointStats>(&client, &checkpoints_url));
                let restarts = async {
                    let values = until(deadline, &metrics_url, http::get_json::<Vec<MetricValue>>(&client, &metrics_url)).await?;
                    Ok(restarts_from_metrics(&values))
                };
                let (checkpoints, restarts) = tokio::join!(checkpoints, restarts);
                (jid, JobFetch { checkpoints, restarts })
            });
        }
        let mut out = HashMap::new();
        while let Some(joined) = set.join_next().await {
            // A panicked task leaves its job out: `build` reports it as not fetched.
            if let Ok((jid, fetch)) = joined {
                out.insert(jid, fetch);
            }
        }
        out
    }
}

/// `f`, or a timeout error for `url` if it has not finished by `deadline`.
async fn until<T>(
    deadline: tokio::time::Instant,
    url: &str,
    f: impl std::future::Future<Output = Result<T, HttpError>>,
) -> Result<T, HttpError> {
    tokio::time::timeout_at(deadline, f).await.unwrap_or_else(|_| Err(HttpError::Timeout { url: url.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of the sample time used by most tests.
    const NOW_MS: u64 = 1_795_657_320_000;

    fn at_ms(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// A `/jobs/overview` entry as Flink 2.3 writes it.
    fn job_json(jid: &str, name: &str, state: &str, start: i64, end: i64, duration: i64) -> serde_json::Value {
        serde_json::json!({
            "jid": jid, "name": name, "jobType": "STREAMING", "schedulerType": "Default",
            "start-time": start, "end-time": end, "duration": duration, "state": state,
            "last-modification": start + 500,
            "tasks": {"running": 2, "canceling": 0, "canceled": 0, "total": 2, "created": 0, "scheduled": 0,
                      "deploying": 0, "reconciling": 0, "finished": 0, "initializing": 0, "failed": 0},
            "pending-operators": 0
        })
    }

    fn jobs(list: Vec<serde_json::Value>) -> Vec<JobOverview> {
        let overview: JobsOverview = serde_json::from_value(serde_json::json!({ "jobs": list })).unwrap();
        overview.jobs
    }

    /// A completed checkpoint as in `latest.completed` / `history`.
    fn completed_json(id: u64, trigger: i64, ack: i64, duration: i64, size: u64) -> serde_json::Value {
        serde_json::json!({
            "className": "completed", "id": id, "status": "COMPLETED", "is_savepoint": false,
            "savepointFormat": null, "trigger_timestamp": trigger, "latest_ack_timestamp": ack,
            "checkpointed_size": size, "state_size": size + 100, "end_to_end_duration": duration,
            "alignment_buffered": 0, "processed_data": 0, "persisted_data": 0, "num_subtasks": 2,
            "num_acknowledged_subtasks": 2, "checkpoint_type": "CHECKPOINT", "tasks": {},
            "external_path": format!("file:/tmp/checkpoints/chk-{id}"), "discarded": false
        })
    }

    fn failed_json(id: u64, trigger: i64, failed_at: i64, message: &str) -> serde_json::Value {
        serde_json::json!({
            "className": "failed", "id": id, "status": "FAILED", "is_savepoint": false,
            "savepointFormat": null, "trigger_timestamp": trigger, "latest_ack_timestamp": -1,
            "checkpointed_size": 3922, "state_size": 3922, "end_to_end_duration": 39,
            "alignment_buffered": 0, "processed_data": 0, "persisted_data": 0, "num_subtasks": 2,
            "num_acknowledged_subtasks": 0, "checkpoint_type": "CHECKPOINT", "tasks": {},
            "failure_timestamp": failed_at, "failure_message": message
        })
    }

    /// `GET /jobs/{jid}/checkpoints` with the summary and history Flink also sends.
    fn checkpoints(completed: u64, failed: u64, latest_completed: serde_json::Value, latest_failed: serde_json::Value) -> CheckpointStats {
        let nan_stats = serde_json::json!({"min": 0, "max": 0, "avg": 0, "p50": "NaN", "p90": "NaN", "p95": "NaN", "p99": "NaN", "p999": "NaN"});
        let body = serde_json::json!({
            "counts": {"restored": 0, "total": completed + failed, "in_progress": 0, "completed": completed, "failed": failed},
            "summary": {"checkpointed_size": nan_stats, "state_size": nan_stats, "end_to_end_duration": nan_stats},
            "latest": {"completed": latest_completed, "savepoint": null, "failed": latest_failed, "restored": null},
            "history": [],
        });
        serde_json::from_value(body).unwrap()
    }

    fn fetch(c: CheckpointStats, restarts: Option<u64>) -> JobFetch {
        JobFetch { checkpoints: Ok(c), restarts: Ok(restarts) }
    }

    fn cluster() -> Result<ClusterOverview, HttpError> {
        Ok(serde_json::from_str(
            r#"{"taskmanagers":1,"slots-total":2,"slots-available":1,"jobs-running":1,"jobs-finished":0,"jobs-cancelled":1,"jobs-failed":0,"flink-version":"2.3.0","flink-commit":"c0f8d1a"}"#,
        )
        .unwrap())
    }

    fn value(obs: &[Observation], signal: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let key = crate::signal::SeriesKey::new(signal, labels);
        let found: Vec<f64> = obs.iter().filter(|o| o.key == key).map(|o| o.value).collect();
        assert!(found.len() <= 1, "{signal}{labels:?} observed {} times", found.len());
        found.first().copied()
    }

    fn assert_declared(obs: &[Observation]) {
        for o in obs {
            let def = crate::catalog::flink::SIGNALS.iter().find(|d| d.name == o.key.signal).unwrap_or_else(|| panic!("{} not in SIGNALS", o.key.signal));
            let mut declared: Vec<&str> = def.labels.to_vec();
            declared.sort_unstable();
            let got: Vec<&str> = o.key.labels.keys().map(String::as_str).collect();
            assert_eq!(got, declared, "labels of {}", o.key.signal);
        }
    }

    const L: [(&str, &str); 2] = [("flink", "local"), ("flink_job", "orders")];

    #[test]
    fn a_running_job_with_checkpoints_yields_exact_values() {
        let start = NOW_MS as i64 - 90_000;
        let list = jobs(vec![job_json("aa01", "orders", "RUNNING", start, -1, 90_000)]);
        let c = checkpoints(6, 1, completed_json(6, NOW_MS as i64 - 2_500, NOW_MS as i64 - 2_250, 31, 4348), serde_json::Value::Null);
        let fetched = HashMap::from([("aa01".to_string(), fetch(c, Some(3)))]);
        let (snap, next) = build("local", "http://127.0.0.1:8081", cluster(), &list, &fetched, at_ms(NOW_MS), &RateState::new());
        let obs = snap.observations();
        assert_declared(&obs);
        assert_eq!(value(&obs, "flink_jobs", &[("flink", "local")]), Some(1.0));
        assert_eq!(value(&obs, "flink_job_uptime_seconds", &L), Some(90.0));
        assert_eq!(value(&obs, "flink_job_restarts", &L), Some(3.0));
        assert_eq!(value(&obs, "checkpoint_age_seconds", &L), Some(2.25));
        assert_eq!(value(&obs, "checkpoints_completed", &L), Some(6.0));
        assert_eq!(value(&obs, "checkpoints_failed", &L), Some(1.0));
        assert_eq!(value(&obs, "checkpoint_duration_seconds", &L), Some(0.031));
        assert_eq!(value(&obs, "checkpoint_size_bytes", &L), Some(4348.0), "checkpointed_size, not state_size");
        assert_eq!(value(&obs, "checkpoints_failed_rate", &L), None, "no rate on the first sample");
        for st in JobState::ALL {
            let want = if st == JobState::Running { 1.0 } else { 0.0 };
            assert_eq!(value(&obs, "flink_job_state", &[L[0], L[1], ("state", st.as_str())]), Some(want), "{st:?}");
        }
        assert_eq!(obs.len(), 1 + 11 + 7, "no rate on the first sample");
        assert_eq!(next.get("aa01"), Some(&(1, at_ms(NOW_MS))));

        let targets = snap.targets();
        assert_eq!(targets.len(), 2);
        assert_eq!((targets[0].kind, targets[0].name.as_str(), targets[0].health), ("flink_cluster", "local", "ok"));
        assert_eq!(targets[0].detail.json()["taskmanagers"], 1);
        assert_eq!(targets[0].detail.json()["slots_available"], 1);
        assert_eq!((targets[1].kind, targets[1].name.as_str(), targets[1].health), ("flink_job", "orders", "ok"));
        assert_eq!(targets[1].detail.json()["jid"], "aa01");
        assert_eq!(targets[1].detail.json()["restarts"], 3);
        assert_eq!(targets[1].detail.json()["checkpoint_counts"]["completed"], 6);
        assert_eq!(targets[1].detail.json()["latest_completed_checkpoint"]["id"], 6);
        assert!(targets[1].detail.json()["latest_failed_checkpoint"].is_null());
    }

    #[test]
    fn no_checkpoint_age_before_the_first_checkpoint_completes() {
        let list = jobs(vec![job_json("aa01", "orders", "RUNNING", NOW_MS as i64 - 3_000, -1, 3_000)]);
        // Right after submission the first trigger fails ("Not all required tasks are
        // currently running"): counted as failed, but with no latest.failed entry.
        let c = checkpoints(0, 1, serde_json::Value::Null, serde_json::Value::Null);
        let fetched = HashMap::from([("aa01".to_string(), fetch(c, None))]);
        let (snap, _) = build("local", "u", cluster(), &list, &fetched, at_ms(NOW_MS), &RateState::new());
        let obs = snap.observations();
        assert_declared(&obs);
        assert_eq!(value(&obs, "checkpoint_age_seconds", &L), None);
        assert_eq!(value(&obs, "checkpoint_duration_seconds", &L), None);
        assert_eq!(value(&obs, "checkpoint_size_bytes", &L), None);
        assert_eq!(value(&obs, "flink_job_restarts", &L), None, "no numRestarts yet: unknown, not 0");
        assert_eq!(value(&obs, "checkpoints_completed", &L), Some(0.0));
        assert_eq!(value(&obs, "checkpoints_failed", &L), Some(1.0));
        assert_eq!(snap.targets()[1].health, "ok");
    }

    #[test]
    fn a_terminal_job_has_its_run_time_as_uptime_and_no_checkpoint_age() {
        let start = NOW_MS as i64 - 60_000;
        let list = jobs(vec![job_json("cc01", "orders", "CANCELED", start, start + 7_597, 7_597)]);
        let c = checkpoints(6, 0, completed_json(6, start + 6_000, start + 6_030, 30, 4348), serde_json::Value::Null);
        let fetched = HashMap::from([("cc01".to_string(), fetch(c, Some(0)))]);
        let (snap, _) = build("local", "u", cluster(), &list, &fetched, at_ms(NOW_MS), &RateState::new());
        let obs = snap.observations();
        assert_declared(&obs);
        assert_eq!(value(&obs, "flink_job_uptime_seconds", &L), Some(7.597));
        assert_eq!(value(&obs, "checkpoint_age_seconds", &L), None);
        assert_eq!(value(&obs, "checkpoints_completed", &L), Some(6.0));
        assert_eq!(value(&obs, "flink_job_state", &[L[0], L[1], ("state", "CANCELED")]), Some(1.0));
        assert_eq!(value(&obs, "flink_job_state", &[L[0], L[1], ("state", "RUNNING")]), Some(0.0));
        assert_eq!(snap.targets()[1].health, "unknown");
        assert_eq!(snap.targets()[1].detail.json()["end_time_ms"], start + 7_597);
    }

    #[test]
    fn one_job_per_name_a_running_run_beats_newer_terminal_ones_then_the_latest_start_wins() {
        let t = NOW_MS as i64;
        let list = jobs(vec![
            job_json("a-old-canceled", "orders", "CANCELED", t - 50_000, t - 40_000, 10_000),
            job_json("a-running", "orders", "RUNNING", t - 30_000, -1, 30_000),
            job_json("a-new-failed", "orders", "FAILED", t - 10_000, t - 5_000, 5_000),
            job_json("b-old", "billing", "FINISHED", t - 50_000, t - 45_000, 5_000),
            job_json("b-new", "billing", "CANCELED", t - 20_000, t - 15_000, 5_000),
            job_json("c-only", "clicks", "RESTARTING", t - 5_000, -1, 5_000),
        ]);
        let picked: Vec<(&str, &str, Vec<&str>)> =
            select_jobs(&list).into_iter().map(|s| (s.job.name.as_str(), s.job.jid.as_str(), s.shadowed)).collect();
        assert_eq!(
            picked,
            vec![
                ("billing", "b-new", vec!["b-old"]),
                ("clicks", "c-only", vec![]),
                ("orders", "a-running", vec!["a-new-failed", "a-old-canceled"]),
            ]
        );

        let (snap, _) = build("local", "u", cluster(), &list, &HashMap::new(), at_ms(NOW_MS), &RateState::new());
        let obs = snap.observations();
        assert_declared(&obs);
        assert_eq!(value(&obs, "flink_jobs", &[("flink", "local")]), Some(6.0), "every listed run counts");
        assert_eq!(value(&obs, "flink_job_state", &[L[0], L[1], ("state", "RUNNING")]), Some(1.0));
        assert_eq!(value(&obs, "flink_job_state", &[L[0], L[1], ("state", "FAILED")]), Some(0.0));
        assert_eq!(snap.targets().iter().filter(|t| t.kind == "flink_job").count(), 3);
        let orders = snap.targets().into_iter().find(|t| t.name == "orders").unwrap();
        assert_eq!(orders.detail.json()["jid"], "a-running");
        assert_eq!(orders.detail.json()["other_runs"], serde_json::json!(["a-new-failed", "a-old-canceled"]));
    }

    #[test]
    fn failed_rate_is_per_second_since_the_previous_sample_of_the_same_run() {
        let t = NOW_MS as i64;
        let list = jobs(vec![job_json("aa01", "orders", "RUNNING", t - 60_000, -1, 60_000)]);
        let done = completed_json(6, t - 9_000, t - 8_970, 30, 4348);
        let failing = failed_json(9, t - 1_000, t - 960, "Asynchronous task checkpoint failed.");
        let run = |failed: u64, now: SystemTime, prev: &RateState| {
            let c = checkpoints(6, failed, done.clone(), failing.clone());
            let fetched = HashMap::from([("aa01".to_string(), fetch(c, Some(0)))]);
            build("local", "u", cluster(), &list, &fetched, now, prev)
        };
        let (first, state) = run(2, at_ms(NOW_MS), &RateState::new());
        assert_eq!(value(&first.observations(), "checkpoints_failed_rate", &L), None);
        let (second, state) = run(5, at_ms(NOW_MS + 2_000), &state);
        assert_eq!(value(&second.observations(), "checkpoints_failed_rate", &L), Some(1.5));
        assert_eq!(value(&second.observations(), "checkpoint_age_seconds", &L), Some(10.97));
        assert_eq!(second.targets()[1].health, "warn", "latest failure is newer than the latest completion");
        assert_eq!(second.targets()[1].detail.json()["latest_failed_checkpoint"]["failure_message"], "Asynchronous task checkpoint failed.");
        let (third, state) = run(5, at_ms(NOW_MS + 4_000), &state);
        assert_eq!(value(&third.observations(), "checkpoints_failed_rate", &L), Some(0.0));
        // A count that went backwards (the same id restored elsewhere) is a reset: unknown.
        let (reset, state) = run(1, at_ms(NOW_MS + 5_000), &state);
        assert_eq!(value(&reset.observations(), "checkpoints_failed_rate", &L), None);
        assert_eq!(state.get("aa01"), Some(&(1, at_ms(NOW_MS + 5_000))));

        // A sample whose checkpoint call failed keeps the previous count for the next one.
        let err = HttpError::Timeout { url: "http://127.0.0.1:8081/jobs/aa01/checkpoints".into() };
        let fetched = HashMap::from([("aa01".to_string(), JobFetch { checkpoints: Err(err), restarts: Ok(Some(0)) })]);
        let (_, kept) = build("local", "u", cluster(), &list, &fetched, at_ms(NOW_MS + 6_000), &state);
        assert_eq!(kept.get("aa01"), Some(&(1, at_ms(NOW_MS + 5_000))));
        let (after, _) = run(4, at_ms(NOW_MS + 7_000), &kept);
        assert_eq!(value(&after.observations(), "checkpoints_failed_rate", &L), Some(1.5));

        // Runs no longer listed are forgotten.
        let (_, gone) = build("local", "u", cluster(), &[], &HashMap::new(), at_ms(NOW_MS + 8_000), &kept);
        assert!(gone.is_empty());
    }

    #[test]
    fn a_failed_checkpoint_call_drops_only_that_jobs_checkpoint_series() {
        let t = NOW_MS as i64;
        let list = jobs(vec![
            job_json("aa01", "orders", "RUNNING", t - 60_000, -1, 60_000),
            job_json("bb01", "billing", "RUNNING", t - 60_000, -1, 60_000),
        ]);
        let err = HttpError::Status {
            url: "http://127.0.0.1:8081/jobs/aa01/checkpoints".into(),
            status: 404,
            body: r#"{"errors":["org.apache.flink.runtime.rest.NotFoundException: Job aa01 not found"]}"#.into(),
        };
        let c = checkpoints(3, 0, completed_json(3, t - 1_500, t - 1_000, 20, 100), serde_json::Value::Null);
        let fetched = HashMap::from([
            ("aa01".to_string(), JobFetch { checkpoints: Err(err), restarts: Ok(Some(0)) }),
            ("bb01".to_string(), fetch(c, Some(0))),
        ]);
        let (snap, _) = build("local", "u", cluster(), &list, &fetched, at_ms(NOW_MS), &RateState::new());
        let obs = snap.observations();
        assert_declared(&obs);
        for s in ["checkpoint_age_seconds", "checkpoints_failed", "checkpoints_completed", "checkpoint_duration_seconds", "checkpoint_size_bytes"] {
            assert_eq!(value(&obs, s, &L), None, "{s}");
        }
        assert_eq!(value(&obs, "flink_job_uptime_seconds", &L), Some(60.0));
        let billing = [("flink", "local"), ("flink_job", "billing")];
        assert_eq!(value(&obs, "checkpoint_age_seconds", &billing), Some(1.0));
        let orders = snap.targets().into_iter().find(|t| t.name == "orders").unwrap();
        assert_eq!(orders.health, "unknown");
        assert!(orders.detail.json()["checkpoints_error"].as_str().unwrap().contains("HTTP 404"), "{:?}", orders.detail);
    }

    #[test]
    fn health_follows_state_then_checkpoint_failures() {
        let t = NOW_MS as i64;
        let done = completed_json(3, t - 5_000, t - 4_900, 20, 100);
        let older_failure = failed_json(2, t - 7_000, t - 6_000, "Checkpoint expired before completing.");
        let newer_failure = failed_json(4, t - 2_000, t - 1_000, "Checkpoint expired before completing.");
        let health = |state: &str, failed: &serde_json::Value| {
            let list = jobs(vec![job_json("aa01", "orders", state, t - 60_000, -1, 60_000)]);
            let c = checkpoints(3, 2, done.clone(), failed.clone());
            let fetched = HashMap::from([("aa01".to_string(), fetch(c, Some(0)))]);
            build("local", "u", cluster(), &list, &fetched, at_ms(NOW_MS), &RateState::new()).0.targets()[1].health
        };
        assert_eq!(health("RUNNING", &older_failure), "ok");
        assert_eq!(health("RUNNING", &newer_failure), "warn");
        assert_eq!(health("RUNNING", &serde_json::Value::Null), "ok");
        assert_eq!(health("RESTARTING", &older_failure), "warn");
        assert_eq!(health("FAILING", &newer_failure), "failed");
        assert_eq!(health("FAILED", &older_failure), "failed");
        assert_eq!(health("FINISHED", &newer_failure), "ok", "an ended job's last failure is history");
        assert_eq!(health("CANCELED", &older_failure), "unknown");
        assert_eq!(health("INITIALIZING", &serde_json::Value::Null), "unknown");
        assert_eq!(health("SOMETHING_NEW", &serde_json::Value::Null), "unknown");
    }

    #[test]
    fn an_unknown_state_is_exported_as_no_known_state_and_keeps_its_checkpoint_age() {
        let t = NOW_MS as i64;
        let list = jobs(vec![job_json("aa01", "orders", "SOMETHING_NEW", t - 60_000, -1, 60_000)]);
        let c = checkpoints(3, 0, completed_json(3, t - 1_500, t - 1_000, 20, 100), serde_json::Value::Null);
        let fetched = HashMap::from([("aa01".to_string(), fetch(c, None))]);
        let (snap, _) = build("local", "u", cluster(), &list, &fetched, at_ms(NOW_MS), &RateState::new());
        let obs = snap.observations();
        assert_declared(&obs);
        assert!(JobState::ALL.iter().all(|st| value(&obs, "flink_job_state", &[L[0], L[1], ("state", st.as_str())]) == Some(0.0)));
        assert_eq!(value(&obs, "checkpoint_age_seconds", &L), Some(1.0));
        assert_eq!(snap.targets()[1].detail.json()["state"], "SOMETHING_NEW");
    }

    #[test]
    fn a_checkpoint_acknowledged_after_the_sample_time_has_age_zero_not_negative() {
        let t = NOW_MS as i64;
        let list = jobs(vec![job_json("aa01", "orders", "RUNNING", t - 60_000, -1, 60_000)]);
        let c = checkpoints(3, 0, completed_json(3, t - 20, t + 40, 60, 100), serde_json::Value::Null);
        let fetched = HashMap::from([("aa01".to_string(), fetch(c, None))]);
        let (snap, _) = build("local", "u", cluster(), &list, &fetched, at_ms(NOW_MS), &RateState::new());
        assert_eq!(value(&snap.observations(), "checkpoint_age_seconds", &L), Some(0.0));
    }

    #[test]
    fn an_unreachable_overview_leaves_the_cluster_unknown_but_jobs_reported() {
        let list = jobs(vec![job_json("aa01", "orders", "RUNNING", NOW_MS as i64 - 1_000, -1, 1_000)]);
        let err = HttpError::Timeout { url: "http://127.0.0.1:8081/overview".into() };
        let (snap, _) = build("local", "u", Err(err), &list, &HashMap::new(), at_ms(NOW_MS), &RateState::new());
        let t = snap.targets();
        assert_eq!(t[0].health, "unknown");
        assert!(t[0].detail.json()["error"].as_str().unwrap().contains("timed out"));
        assert_eq!(t[0].detail.json()["taskmanagers"], serde_json::Value::Null);
        assert_eq!(value(&snap.observations(), "flink_jobs", &[("flink", "local")]), Some(1.0));
    }

    #[test]
    fn restarts_come_from_the_numrestarts_metric_whose_values_are_strings() {
        let values: Vec<MetricValue> = serde_json::from_str(r#"[{"id":"numRestarts","value":"5"}]"#).unwrap();
        assert_eq!(restarts_from_metrics(&values), Some(5));
        let empty: Vec<MetricValue> = serde_json::from_str("[]").unwrap();
        assert_eq!(restarts_from_metrics(&empty), None, "not fetched by Flink yet");
        let other: Vec<MetricValue> = serde_json::from_str(r#"[{"id":"uptime","value":"7933"}]"#).unwrap();
        assert_eq!(restarts_from_metrics(&other), None);
    }

    #[test]
    fn the_real_checkpoints_answer_of_a_failing_job_parses() {
        // Trimmed from a Flink 2.3.0 job whose checkpoints fail in the async phase.
        let body = r#"{"counts":{"restored":0,"total":20,"in_progress":0,"completed":18,"failed":2},
          "summary":{"checkpointed_size":{"min":4297,"max":4348,"avg":4339,"p50":4348.0,"p90":4348.0,"p95":4348.0,"p99":4348.0,"p999":4348.0}},
          "latest":{"completed":{"className":"completed","id":18,"status":"COMPLETED","is_savepoint":false,"savepointFormat":null,
              "trigger_timestamp":1795657378809,"latest_ack_timestamp":1795657378852,"checkpointed_size":4348,"state_size":4348,
              "end_to_end_duration":43,"alignment_buffered":0,"processed_data":0,"persisted_data":0,"num_subtasks":2,
              "num_acknowledged_subtasks":2,"checkpoint_type":"CHECKPOINT","tasks":{},
              "external_path":"file:/work/main/stack/.run/flink/checkpoints/24438ce164e4ab8781736fe9f7a7c0c1/chk-18","discarded":false},
            "savepoint":null,
            "failed":{"className":"failed","id":19,"status":"FAILED","is_savepoint":false,"savepointFormat":null,
              "trigger_timestamp":1795657379809,"latest_ack_timestamp":1795657379850,"checkpointed_size":3922,"state_size":3922,
              "end_to_end_duration":93,"alignment_buffered":0,"processed_data":0,"persisted_data":0,"num_subtasks":2,
              "num_acknowledged_subtasks":1,"checkpoint_type":"CHECKPOINT","tasks":{},
              "failure_timestamp":1795657379902,"failure_message":"Asynchronous task checkpoint failed."},
            "restored":null},
          "history":[]}"#;
        let c: CheckpointStats = serde_json::from_str(body).unwrap();
        assert_eq!(c.counts, CheckpointCounts { completed: 18, failed: 2, in_progress: 0, restored: 0, total: 20 });
        let done = c.latest.completed.as_ref().unwrap();
        assert_eq!((done.id, done.latest_ack_timestamp, done.end_to_end_duration, done.size_bytes()), (18, 1795657378852, 43, Some(4348)));
        let failed = c.latest.failed.as_ref().unwrap();
        assert_eq!((failed.id, failed.failure_timestamp), (19, 1795657379902));
        assert_eq!(failed.failure_message.as_deref(), Some("Asynchronous task checkpoint failed."));
        assert!(latest_failure_is_newer(&c));
    }

    #[test]
    fn signals_have_the_flink_and_flink_job_labels_and_counter_names_without_total() {
        for d in crate::catalog::flink::SIGNALS {
            assert_eq!(d.labels.first(), Some(&"flink"), "{}", d.name);
            if d.name != "flink_jobs" {
                assert_eq!(d.labels.get(1), Some(&"flink_job"), "{}", d.name);
            }
            assert!(d.metric.starts_with("flink_"), "{}", d.metric);
            assert!(!d.metric.ends_with("_total"), "{}", d.metric);
        }
        let counters: Vec<&str> = crate::catalog::flink::SIGNALS.iter().filter(|d| d.kind == crate::signal::MetricKind::Counter).map(|d| d.name).collect();
        assert_eq!(counters, vec!["flink_job_restarts", "checkpoints_failed", "checkpoints_completed"]);
    }
}
