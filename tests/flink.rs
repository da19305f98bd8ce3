//! The Flink source against the real Flink of `stack/up flink` (`$FLINK_URL`, default
//! http://127.0.0.1:8081). Nothing is mocked: each test submits its own run of the
//! stack's checkpointing job (`stack/flink-submit-job`, or `$FLINK_SUBMIT`) with a
//! unique name and marker files in its own temporary directory, and cancels it when done.
//!
//! The stack's TaskManager has 2 slots and every run takes one, so at most
//! [`MAX_RUNNING_JOBS`] of these tests hold a job at once (the others wait).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use streamguard::config::HttpSourceConfig;
use streamguard::sample::flink::{FlinkSampler, FlinkSnapshot, JobView};
use streamguard::sample::http::HttpError;
use streamguard::signal::Observation;

/// Checkpoint interval of every test job.
const INTERVAL_MS: u64 = 1000;
const MAX_RUNNING_JOBS: usize = 2;
/// How long a job may take to be submitted, scheduled and complete its first checkpoint
/// on a busy 2-core machine.
const STARTUP: Duration = Duration::from_secs(90);

fn flink_url() -> String {
    std::env::var("FLINK_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".to_string()).trim_end_matches('/').to_string()
}

/// `$FLINK_SUBMIT`, else this checkout's `stack/flink-submit-job`. From a second
/// worktree, point it at the checkout whose stack runs (its `stack/.run` holds the
/// cluster's pid files), or set `STACK_DIR`.
fn submit_script() -> PathBuf {
    std::env::var_os("FLINK_SUBMIT").map(PathBuf::from).unwrap_or_else(|| repo_root().join("stack/flink-submit-job"))
}

// ---------------------------------------------------------------------------------------
// Task slots: a counting semaphore over all tests of this file.
// ---------------------------------------------------------------------------------------

struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

static SLOTS: Slots = Slots { used: Mutex::new(0), freed: Condvar::new() };

struct Slot;

impl Slot {
    fn acquire() -> Slot {
        Slot::acquire_many(1).pop().unwrap()
    }

    /// `n` slots taken together, so two tests that each need several never deadlock
    /// holding one apiece.
    fn acquire_many(n: usize) -> Vec<Slot> {
        assert!(n <= MAX_RUNNING_JOBS);
        let mut used = SLOTS.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used + n > MAX_RUNNING_JOBS {
            used = SLOTS.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += n;
        (0..n).map(|_| Slot).collect()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = SLOTS.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= 1;
        SLOTS.freed.notify_all();
    }
}

// ---------------------------------------------------------------------------------------
// One submitted run of the checkpointing job; cancelled on drop.
// ---------------------------------------------------------------------------------------

struct Job {
    jid: String,
    name: String,
    dir: tempfile::TempDir,
    _slot: Slot,
}

impl Job {
    /// Submits a run named `name` with a 1 s checkpoint interval, markers in its own
    /// directory, and `extra` job options.
    fn submit(name: &str, extra: &[&str]) -> Job {
        Job::submit_in(Slot::acquire(), name, extra)
    }

    /// As [`Job::submit`], in a slot the caller already holds.
    fn submit_in(slot: Slot, name: &str, extra: &[&str]) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let interval = INTERVAL_MS.to_string();
        let out = run(Command::new(submit_script())
            .args(["--interval-ms", &interval, "--job-name", name, "--fail-marker"])
            .arg(dir.path().join("fail"))
            .arg("--stall-marker")
            .arg(dir.path().join("stall"))
            .args(extra));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{:?} failed: {stdout}\n{}", submit_script(), String::from_utf8_lossy(&out.stderr));
        let jid = stdout.lines().last().unwrap_or("").trim().to_string();
        assert_eq!(jid.len(), 32, "unexpected job id {jid:?} from {stdout}");
        Job { jid, name: name.to_string(), dir, _slot: slot }
    }

    fn fail_marker(&self) -> PathBuf {
        self.dir.path().join("fail")
    }

    fn stall_marker(&self) -> PathBuf {
        self.dir.path().join("stall")
    }

    /// `PATCH /jobs/{jid}?mode=cancel` (Flink answers 202 and cancels asynchronously).
    fn cancel(&self) -> u16 {
        let url = format!("{}/jobs/{}?mode=cancel", flink_url(), self.jid);
        block_on(async { reqwest::Client::new().patch(&url).send().await.map(|r| r.status().as_u16()).unwrap_or(0) })
    }

    /// The run's state per `GET /jobs/{jid}`, if Flink answers.
    fn state(&self) -> Option<String> {
        let url = format!("{}/jobs/{}", flink_url(), self.jid);
        block_on(async {
            let v: serde_json::Value = reqwest::Client::new().get(&url).send().await.ok()?.json().await.ok()?;
            v["state"].as_str().map(str::to_string)
        })
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // Let a stalled task return before it is cancelled, then free the slot only
        // once Flink has released it.
        let _ = std::fs::remove_file(self.stall_marker());
        self.cancel();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.state().as_deref() {
                Some("CANCELED" | "FAILED" | "FINISHED") | None => break,
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sampling helpers
// ---------------------------------------------------------------------------------------

struct Probe {
    rt: tokio::runtime::Runtime,
    sampler: FlinkSampler,
}

impl Probe {
    fn new() -> Probe {
        Probe::at(&flink_url())
    }

    fn at(url: &str) -> Probe {
        let cfg = HttpSourceConfig {
            name: "local".into(),
            url: url.to_string(),
            sample_interval: Duration::from_secs(1),
            sample_timeout: Duration::from_secs(3),
            backoff_max: Duration::from_secs(2),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Probe { rt, sampler: FlinkSampler::new(&cfg).unwrap() }
    }

    fn snapshot(&self) -> Result<FlinkSnapshot, HttpError> {
        self.rt.block_on(self.sampler.snapshot(SystemTime::now()))
    }

    /// Samples every 500 ms until `f` holds for `job`'s view and observations; returns them.
    fn until(&self, job: &str, timeout: Duration, what: &str, mut f: impl FnMut(&View) -> bool) -> View {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(snap) = self.snapshot() {
                if let Some(v) = View::of(&snap, job) {
                    if f(&v) {
                        return v;
                    }
                    last = Some(v);
                }
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}; last view: {last:#?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// One job's view and observations in one sample.
#[derive(Debug)]
struct View {
    job: JobView,
    health: &'static str,
    observations: Vec<Observation>,
}

impl View {
    fn of(snap: &FlinkSnapshot, name: &str) -> Option<View> {
        let job = snap.jobs.iter().find(|j| j.name == name)?.clone();
        let health = snap.targets().into_iter().find(|t| t.kind == "flink_job" && t.name == name)?.health;
        let observations =
            snap.observations().into_iter().filter(|o| o.key.label("flink_job") == Some(name)).collect();
        Some(View { job, health, observations })
    }

    fn get(&self, signal: &str) -> Option<f64> {
        self.observations.iter().find(|o| o.key.signal == signal).map(|o| o.value)
    }

    fn state(&self, state: &str) -> Option<f64> {
        self.observations
            .iter()
            .find(|o| o.key.signal == "flink_job_state" && o.key.label("state") == Some(state))
            .map(|o| o.value)
    }

    fn age(&self) -> Option<f64> {
        self.get("checkpoint_age_seconds")
    }

    fn failed(&self) -> f64 {
        self.get("checkpoints_failed").unwrap_or(-1.0)
    }

    fn completed(&self) -> f64 {
        self.get("checkpoints_completed").unwrap_or(-1.0)
    }
}

/// An agent on `port` watching the stack's Flink as source `name`, sampling every second.
fn agent_flink_config(port: u16, name: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"

[[flink]]
name = "{name}"
url = "{url}"
sample_interval = "1s"
sample_timeout = "1s"
"#,
        url = flink_url()
    )
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn the_agent_exports_a_healthy_jobs_state_and_a_checkpoint_age_below_a_few_intervals() {
    let job = Job::submit(&unique("sg-healthy"), &[]);
    let port = free_port();
    let config = agent_flink_config(port, "local");
    let agent = Agent::start_with(port, &config);
    let labels = [("flink", "local"), ("flink_job", job.name.as_str())];
    let age_metric = "streamguard_flink_checkpoint_age_seconds";
    let mut m = None;
    let deadline = Instant::now() + STARTUP;
    while m.is_none() {
        let (status, body) = agent.get("/metrics");
        if status == 200 && Metrics::parse(&body).get(age_metric, &labels).is_some() {
            m = Some(Metrics::parse(&body));
        } else {
            assert!(Instant::now() < deadline, "no checkpoint age for {} after {STARTUP:?}:\n{body}\n{}", job.name, agent.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let m = m.unwrap();
    let series: Vec<_> = m.samples.iter().filter(|(n, l, _)| n == age_metric && l.get("flink_job") == Some(&job.name)).collect();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].1.keys().collect::<Vec<_>>(), vec!["flink", "flink_job"], "labels are exactly flink and flink_job");
    let completed_metric = "streamguard_flink_checkpoints_completed_total";
    let first_completed = m.get(completed_metric, &labels).expect("completed count");

    let mut ages = Vec::new();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_secs(1));
        let m = agent.metrics();
        let age = m.get(age_metric, &labels).expect("checkpoint age stays exported");
        ages.push(age);
        assert_eq!(m.get("streamguard_flink_job_state", &[labels[0], labels[1], ("state", "RUNNING")]), Some(1.0));
        assert_eq!(m.get("streamguard_flink_job_state", &[labels[0], labels[1], ("state", "FAILED")]), Some(0.0));
        assert!(m.get("streamguard_flink_job_uptime_seconds", &labels).is_some_and(|u| u > 0.0));
        assert!(m.get("streamguard_flink_checkpoint_size_bytes", &labels).is_some_and(|s| s > 0.0));
        assert!(m.get("streamguard_flink_checkpoint_duration_seconds", &labels).is_some_and(|d| d >= 0.0));
        assert!(m.get("streamguard_flink_jobs", &[("flink", "local")]).is_some_and(|n| n >= 1.0));
    }
    // A few 1 s intervals: interval + Flink's checkpoint-statistics cache (1 s in the
    // stack) + one sample interval of the agent, with slack for a busy machine.
    assert!(ages.iter().all(|a| *a < 5.0), "checkpoint ages {ages:?}");
    let last_completed = agent.metrics().get(completed_metric, &labels).expect("completed count");
    assert!(last_completed >= first_completed + 3.0, "completed {first_completed} → {last_completed}");
}

#[test]
fn failing_checkpoints_raise_the_failed_count_and_age_the_last_checkpoint_until_they_succeed_again() {
    let job = Job::submit(&unique("sg-failing"), &[]);
    let probe = Probe::new();
    let before = probe.until(&job.name, STARTUP, "a first completed checkpoint", |v| v.age().is_some());
    assert_eq!(before.job.jid, job.jid);
    assert_eq!(before.state("RUNNING"), Some(1.0));

    std::fs::write(job.fail_marker(), b"").unwrap();
    let marked = Instant::now();
    let f0 = probe.until(&job.name, Duration::from_secs(10), "a sample after the marker", |_| true).failed();
    let mut max_rate = 0.0f64;
    let failing = probe.until(&job.name, Duration::from_secs(40), "failed count +3 and age beyond the interval", |v| {
        max_rate = max_rate.max(v.get("checkpoints_failed_rate").unwrap_or(0.0));
        v.failed() >= f0 + 3.0 && v.age().is_some_and(|a| a > 3.0)
    });
    eprintln!("failing: +{} failed checkpoints in {:?}", failing.failed() - f0, marked.elapsed());
    assert!(max_rate > 0.0, "a positive failed-checkpoint rate while failing");
    assert_eq!(failing.health, "warn", "the latest failure is newer than the latest completion");
    assert_eq!(failing.state("RUNNING"), Some(1.0), "async failures are tolerated: the job keeps running");
    let failure = failing.job.checkpoints.as_ref().and_then(|c| c.latest.failed.as_ref()).expect("latest failed checkpoint");
    assert!(failure.failure_message.is_some(), "{failure:?}");

    std::fs::remove_file(job.fail_marker()).unwrap();
    let recovered = probe.until(&job.name, Duration::from_secs(30), "checkpoints to succeed again", |v| v.age().is_some_and(|a| a < 2.5));
    assert!(recovered.completed() > failing.completed());
    assert_eq!(recovered.health, "ok");
}

#[test]
fn a_stalled_checkpoint_ages_without_completing_and_counts_as_failed_after_the_timeout() {
    let job = Job::submit(&unique("sg-stalled"), &["--checkpoint-timeout-ms", "2000"]);
    let probe = Probe::new();
    probe.until(&job.name, STARTUP, "a first completed checkpoint", |v| v.age().is_some());

    std::fs::write(job.stall_marker(), b"").unwrap();
    let marked = Instant::now();
    let start = probe.until(&job.name, Duration::from_secs(10), "a sample after the marker", |_| true);
    let (f0, c0) = (start.failed(), start.completed());
    let mut ages = Vec::new();
    let stalled = probe.until(&job.name, Duration::from_secs(40), "an expired checkpoint", |v| {
        ages.extend(v.age());
        v.failed() > f0 && v.age().is_some_and(|a| a > 2.0)
    });
    eprintln!("stalled: first expiry counted after {:?}; ages {ages:?}", marked.elapsed());
    // At most the checkpoint already under way when the marker appeared completes.
    assert!(stalled.completed() <= c0 + 1.0, "completed {c0} → {}", stalled.completed());
    assert!(stalled.age().is_some_and(|a| a > 2.0), "older than the checkpoint timeout");
    let message = stalled.job.checkpoints.as_ref().and_then(|c| c.latest.failed.as_ref()).and_then(|f| f.failure_message.clone());
    assert!(message.is_some_and(|m| m.contains("expired")), "{:?}", stalled.job.checkpoints);
    assert_eq!(stalled.health, "warn");
}

#[test]
fn a_cancelled_job_reports_canceled_without_checkpoint_age_and_its_resubmission_takes_over_the_name() {
    let name = unique("sg-cancel");
    let first = Job::submit(&name, &[]);
    let probe = Probe::new();
    probe.until(&name, STARTUP, "a first completed checkpoint", |v| v.age().is_some());

    assert_eq!(first.cancel(), 202);
    let cancelled = probe.until(&name, Duration::from_secs(30), "state CANCELED", |v| v.state("CANCELED") == Some(1.0));
    assert_eq!(cancelled.job.jid, first.jid);
    assert_eq!(cancelled.age(), None, "no checkpoint age for an ended job");
    assert_eq!(cancelled.state("RUNNING"), Some(0.0));
    let ran_for = cancelled.get("flink_job_uptime_seconds").expect("uptime");
    assert!(ran_for > 0.0);
    // The run time of an ended job stays put.
    std::thread::sleep(Duration::from_millis(1200));
    let later = probe.until(&name, Duration::from_secs(10), "another sample", |_| true);
    assert_eq!(later.get("flink_job_uptime_seconds"), Some(ran_for));
    assert!(later.get("checkpoints_completed").is_some_and(|c| c >= 1.0), "the ended run's counts are still reported");
    let first_jid = first.jid.clone();
    drop(first);

    // A new run under the same name: it is exported, the cancelled one is only detail.
    let second = Job::submit(&name, &[]);
    let resubmitted = probe.until(&name, STARTUP, "the new run with a checkpoint", |v| v.job.jid == second.jid && v.age().is_some());
    assert_eq!(resubmitted.state("RUNNING"), Some(1.0));
    assert_eq!(resubmitted.job.shadowed_jids, vec![first_jid]);
    let rated = probe.until(&name, Duration::from_secs(10), "a failed-checkpoint rate", |v| v.get("checkpoints_failed_rate").is_some());
    assert_eq!(rated.job.jid, second.jid);
    assert!(rated.get("checkpoints_failed_rate").is_some_and(|r| r >= 0.0));
}

#[test]
fn an_unreachable_cluster_fails_the_sample() {
    let probe = Probe::at(&format!("http://127.0.0.1:{}", free_port()));
    match probe.snapshot() {
        Err(HttpError::Connect { url, .. }) => assert!(url.ends_with("/jobs/overview"), "{url}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
}

/// The first `host:port` the stack's Prometheus scrapes as job `streamguard`.
fn scrape_port() -> u16 {
    let targets = std::env::var("PROMETHEUS_SCRAPE_TARGETS").unwrap_or_else(|_| "127.0.0.1:9898".to_string());
    let first = targets.split(',').next().unwrap_or_default();
    first.rsplit(':').next().and_then(|p| p.trim().parse().ok()).unwrap_or_else(|| panic!("bad PROMETHEUS_SCRAPE_TARGETS {targets:?}"))
}

/// The label sets of a Prometheus instant-query answer.
fn result_labels(v: &serde_json::Value) -> Vec<serde_json::Map<String, serde_json::Value>> {
    v["data"]["result"].as_array().into_iter().flatten().filter_map(|r| r["metric"].as_object().cloned()).collect()
}

#[test]
fn prometheus_scraping_the_agent_keeps_one_series_per_flink_job_instead_of_collapsing_them_into_exported_job() {
    // Both jobs run at once; the slots are taken together so this test never holds one
    // while waiting for the other.
    let mut slots = Slot::acquire_many(2);
    let a = Job::submit_in(slots.pop().unwrap(), &unique("sg-label-a"), &[]);
    let b = Job::submit_in(slots.pop().unwrap(), &unique("sg-label-b"), &[]);
    // A source name of its own: series from earlier runs or other tests never match.
    let source = unique("sg-scrape");
    let port = scrape_port();
    let config = agent_flink_config(port, &source);
    let agent = Agent::start_with(port, &config);

    let metric = "streamguard_flink_job_uptime_seconds";
    let by_job = format!("count by (flink_job) ({metric}{{flink=\"{source}\"}})");
    let names = [a.name.as_str(), b.name.as_str()];
    let deadline = Instant::now() + STARTUP;
    loop {
        let (status, v) = prometheus_query(&by_job);
        let seen: Vec<String> =
            result_labels(&v).iter().filter_map(|l| l.get("flink_job").and_then(|j| j.as_str()).map(str::to_string)).collect();
        if status == 200 && names.iter().all(|n| seen.iter().any(|s| s == n)) {
            break;
        }
        if Instant::now() >= deadline {
            let (_, raw) = prometheus_query(&format!("{metric}{{flink=\"{source}\"}}"));
            panic!(
                "Prometheus has no separate series for {names:?} after {STARTUP:?}.\n{by_job} -> {status} {v}\nraw series: {raw}\nagent log:\n{}",
                agent.log()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // Exactly one group per job, and the scrape kept its own `job` label intact.
    let selector = format!("{metric}{{flink=\"{source}\",flink_job=~\"{}|{}\"}}", a.name, b.name);
    let (status, v) = prometheus_query(&format!("count by (flink_job) ({selector})"));
    assert_eq!(status, 200, "{v}");
    let mut groups: Vec<String> =
        result_labels(&v).iter().map(|l| l.get("flink_job").and_then(|j| j.as_str()).unwrap_or("").to_string()).collect();
    groups.sort();
    assert_eq!(groups, vec![a.name.clone(), b.name.clone()], "{v}");
    assert!(v["data"]["result"].as_array().unwrap().iter().all(|r| r["value"][1] == "1"), "{v}");
    let (_, raw) = prometheus_query(&selector);
    let series = result_labels(&raw);
    assert_eq!(series.len(), 2, "{raw}");
    for l in &series {
        assert!(!l.contains_key("exported_job") && !l.contains_key("exported_instance"), "{raw}");
        assert_eq!(l.get("job").and_then(|j| j.as_str()), Some("streamguard"), "the scrape's own job label: {raw}");
    }
    drop(agent);
    // Jobs are cancelled (and their slots freed) on drop.
    drop((a, b));
}
