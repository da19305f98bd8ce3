//! The Kafka Connect source: the health of every connector and task of one Connect
//! cluster, from one REST call per sample.
//!
//! A sample is a single `GET {url}/connectors?expand=status&expand=info`, whose answer
//! maps each connector name to `{"status": {...}, "info": {"config", "type", "tasks"}}`.
//! The pure [`parse`] turns it into typed [`Connector`]s and the pure [`to_sample`] into
//! series (state, type, task states, failed tasks, time since a task failed), targets
//! (the cluster and each connector, failure traces in their detail) and dead-letter links
//! (sink connectors with `errors.deadletterqueue.topic.name`).
//!
//! The REST API does not say *when* a task failed, so the sampler remembers when it first
//! saw each task FAILED and reports the time since then. That time is a lower bound: it
//! starts at streamguard's first sighting (and again after an agent restart), and a task
//! that fails, restarts and fails again between two samples keeps its earlier time.
//!
//! This module does not restart, pause or reconfigure anything, never calls the per-connector
//! endpoints (one request per sample however many connectors), and never puts a failure
//! trace or any other free text into a label.
//!
//! # Errors
//! An unreachable worker, a timeout, a non-2xx answer or a body that is not a JSON object
//! fails the sample ([`HttpError`]; the agent marks the data stale). A malformed entry for
//! one connector does not: it is skipped and listed in the cluster target's detail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::Deserialize;

use super::http::{self, HttpError};
use crate::config::HttpSourceConfig;
use crate::signal::{DlqLink, Observation, SourceSample, TargetInfo};



/// Connector config key naming the dead-letter topic of a sink connector.
const DLQ_TOPIC_KEY: &str = "errors.deadletterqueue.topic.name";
/// Connector config key overriding the sink's consumer group (default `connect-<name>`).
const GROUP_OVERRIDE_KEY: &str = "consumer.override.group.id";
const TOPICS_KEY: &str = "topics";
const TOPICS_REGEX_KEY: &str = "topics.regex";

/// Connector and task states as the REST API spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Running,
    Paused,
    Stopped,
    Failed,
    Unassigned,
    Restarting,
}

impl State {
    /// Every state a series is written for, in exposition order.
    pub const ALL: [State; 6] = [State::Running, State::Paused, State::Stopped, State::Failed, State::Unassigned, State::Restarting];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "RUNNING",
            State::Paused => "PAUSED",
            State::Stopped => "STOPPED",
            State::Failed => "FAILED",
            State::Unassigned => "UNASSIGNED",
            State::Restarting => "RESTARTING",
        }
    }

    /// `None` for a state this version does not know (it then has no series at 1).
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Status of a connector or a task, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RawStatus {
    pub state: String,
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Stack trace of the failure; Connect sets it only on FAILED.
    #[serde(default)]
    pub trace: Option<String>,
}

/// One task's status.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RawTaskStatus {
    pub id: i32,
    #[serde(flatten)]
    pub status: RawStatus,
}

#[derive(Debug, Deserialize)]
struct RawConnectorStatus {
    connector: RawStatus,
    #[serde(default)]
    tasks: Vec<RawTaskStatus>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawInfo {
    config: BTreeMap<String, String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    /// Task ids (`{"connector", "task"}`); only counted.
    tasks: Vec<serde_json::Value>,
}

/// One entry of the expanded listing; both expansions are required.
#[derive(Debug, Deserialize)]
struct RawEntry {
    status: RawConnectorStatus,
    info: RawInfo,
}

/// One connector, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connector {
    pub name: String,
    /// `sink`, `source` or `unknown`.
    pub kind: &'static str,
    pub status: RawStatus,
    /// Task statuses, sorted by id.
    pub tasks: Vec<RawTaskStatus>,
    /// Task configurations the connector has (`info.tasks`).
    pub task_count: usize,
    pub config: BTreeMap<String, String>,
}

impl Connector {
    pub fn state(&self) -> Option<State> {
        State::parse(&self.status.state)
    }

    pub fn failed_tasks(&self) -> usize {
        self.tasks.iter().filter(|t| State::parse(&t.status.state) == Some(State::Failed)).count()
    }

    /// `failed` if the connector or a task is FAILED, `warn` if any is in a transitional or
    /// stopped state, `unknown` if a state is not recognised, else `ok`.
    pub fn health(&self) -> &'static str {
        let states: Vec<Option<State>> =
            std::iter::once(self.state()).chain(self.tasks.iter().map(|t| State::parse(&t.status.state))).collect();
        if states.contains(&Some(State::Failed)) {
            "failed"
        } else if states.iter().any(|s| matches!(s, Some(State::Paused | State::Stopped | State::Unassigned | State::Restarting))) {
            "warn"
        } else if states.contains(&None) {
            "unknown"
        } else {
            "ok"
        }
    }

    /// The `topics` config, split on commas and trimmed; empty when unset.
    pub fn topics(&self) -> Vec<String> {
        self.config
            .get(TOPICS_KEY)
            .map(|t| t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn config_value(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// The dead-letter link of a sink connector with a DLQ topic configured.
    pub fn dlq_link(&self, source: &str) -> Option<DlqLink> {
        if self.kind != "sink" {
            return None;
        }
        let dlq_topic = self.config_value(DLQ_TOPIC_KEY)?;
        let group = self.config_value(GROUP_OVERRIDE_KEY).map_or_else(|| format!("connect-{}", self.name), str::to_string);
        Some(DlqLink {
            dlq_topic: dlq_topic.to_string(),
            source_topics: self.topics(),
            group,
            origin: format!("connect:{source}/{}", self.name),
        })
    }
}

/// A connector entry that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub connector: String,
    pub error: String,
}

/// The expanded listing, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Every connector the worker listed, readable or not.
    pub names: BTreeSet<String>,
    /// The readable ones, sorted by name.
    pub connectors: Vec<Connector>,
    pub skipped: Vec<Skipped>,
}

/// Reads the body of `GET /connectors?expand=status&expand=info`. Pure.
pub fn parse(body: &BTreeMap<String, serde_json::Value>) -> Parsed {
    let mut out = Parsed::default();
    for (name, value) in body {
        out.names.insert(name.clone());
        match RawEntry::deserialize(value) {
            Ok(e) => {
                let kind = match e.info.kind.as_deref().or(e.status.kind.as_deref()) {
                    Some("sink") => "sink",
                    Some("source") => "source",
                    _ => "unknown",
                };
                let mut tasks = e.status.tasks;
                tasks.sort_by_key(|t| t.id);
                out.connectors.push(Connector {
                    name: name.clone(),
                    kind,
                    status: e.status.connector,
                    tasks,
                    task_count: e.info.tasks.len(),
                    config: e.info.config,
                });
            }
            Err(e) => out.skipped.push(Skipped { connector: name.clone(), error: e.to_string() }),
        }
    }
    out
}

/// When streamguard first saw each (connector, task id) FAILED.
pub type FailedSince = HashMap<(String, i32), SystemTime>;

/// Series, targets and dead-letter links of one sample at `now`. Pure: `failed_since` is
/// the sampler's memory, updated here (a task FAILED for the first time is recorded at
/// `now`; one that is no longer FAILED, or whose connector is gone, is forgotten; the
/// tasks of a skipped connector keep their times, since their state is unknown).
pub fn to_sample(source: &str, url: &str, parsed: &Parsed, now: SystemTime, failed_since: &mut FailedSince) -> SourceSample {
    let mut failing = BTreeSet::new();
    for c in &parsed.connectors {
        for t in c.tasks.iter().filter(|t| State::parse(&t.status.state) == Some(State::Failed)) {
            let key = (c.name.clone(), t.id);
            failed_since.entry(key.clone()).or_insert(now);
            failing.insert(key);
        }
    }
    let unreadable: BTreeSet<&str> = parsed.skipped.iter().map(|s| s.connector.as_str()).collect();
    failed_since.retain(|key, _| failing.contains(key) || unreadable.contains(key.0.as_str()));
    let failed_for = |connector: &str, task: i32| {
        failed_since
            .get(&(connector.to_string(), task))
            .map(|t| now.duration_since(*t).unwrap_or_default().as_secs_f64())
    };

    let mut sample = SourceSample::default();
    let obs = &mut sample.observations;
    obs.extend(Observation::new("connectors", &[("connect", source)], parsed.names.len() as f64));
    sample.targets.push(TargetInfo {
        kind: "connect_cluster",
        name: source.to_string(),
        health: "ok",
        detail: serde_json::json!({
            "url": url,
            "connectors": parsed.names.len(),
            "skipped": parsed.skipped.iter().map(|s| serde_json::json!({"connector": s.connector, "error": s.error})).collect::<Vec<_>>(),
        }).into(),
    });
    for c in &parsed.connectors {
        let l = [("connect", source), ("connector", c.name.as_str())];
        let state = c.state();
        for st in State::ALL {
            obs.extend(Observation::new("connector_state", &[l[0], l[1], ("state", st.as_str())], f64::from(u8::from(state == Some(st)))));
        }
        obs.extend(Observation::new("connector_info", &[l[0], l[1], ("type", c.kind)], 1.0));
        obs.extend(Observation::new("connector_tasks", &l, c.task_count as f64));
        obs.extend(Observation::new("connector_failed_tasks", &l, c.failed_tasks() as f64));
        let mut task_detail = Vec::with_capacity(c.tasks.len());
        for t in &c.tasks {
            let id = t.id.to_string();
            let tl = [l[0], l[1], ("task", id.as_str())];
            let tstate = State::parse(&t.status.state);
            for st in State::ALL {
                obs.extend(Observation::new("connector_task_state", &[tl[0], tl[1], tl[2], ("state", st.as_str())], f64::from(u8::from(tstate == Some(st)))));
            }
            let failed = failed_for(&c.name, t.id);
            if let Some(secs) = failed {
                obs.extend(Observation::new("connector_task_failed_seconds", &tl, secs));
            }
            task_detail.push(serde_json::json!({
                "id": t.id, "state": t.status.state, "worker_id": t.status.worker_id,
                "trace": t.status.trace, "failed_since_seconds": failed,
            }));
        }
        sample.targets.push(TargetInfo {
            kind: "connector",
            name: c.name.clone(),
            health: c.health(),
            detail: serde_json::json!({
                "type": c.kind, "state": c.status.state, "worker_id": c.status.worker_id, "trace": c.status.trace,
                "tasks": task_detail, "topics": c.topics(), "topics_regex": c.config.get(TOPICS_REGEX_KEY),
                "dlq_topic": c.config_value(DLQ_TOPIC_KEY),
            }).into(),
        });
        sample.dlq_links.extend(c.dlq_link(source));
    }
    sample.dlq_links.sort();
    sample
}

/// Samples one Connect cluster over its REST API.
#[derive(Debug)]
pub struct ConnectSampler {
    name: String,
    url: String,
    listing_url: String,
    client: reqwest::Client,
    /// Held only inside [`to_sample`], never across an `.await`.
    failed_since: Mutex<FailedSince>,
}

impl ConnectSampler {
    /// Creates the sampler and its HTTP client (no request is made yet).
    pub fn new(cfg: &HttpSourceConfig) -> Result<Self, HttpError> {
        Ok(ConnectSampler {
            name: cfg.name.clone(),
            url: cfg.url.clone(),
            listing_url: format!("{}/connectors?expand=status&expand=info", cfg.url),
            client: http::client(cfg.sample_timeout)?,
            failed_since: Mutex::new(FailedSince::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One sample at `now`: one GET, bounded by the configured timeout.
    #[tracing::instrument(level = "debug", skip_all, fields(source = %self.name))]
    pub async fn sample(&self, now: SystemTime) -> Result<SourceSample, HttpError> {
        let body: BTreeMap<String, serde_json::Value> = http::get_json(&self.client, &self.listing_url).await?;
        let parsed = parse(&body);
        for s in &parsed.skipped {
            tracing::debug!(connector = %s.connector, error = %s.error, "malformed connector entry skipped");
        }
        // A poisoned lock only means an earlier sample panicked mid-update; the map is
        // still a valid (if possibly stale) memory of failure times.
        let mut failed_since = self.failed_since.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(to_sample(&self.name, &self.url, &parsed, now, &mut failed_since))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::signal::SeriesKey;

    const TRACE: &str = "org.apache.kafka.connect.errors.ConnectException: Couldn't find or create file '/nope/out.txt' for FileStreamSinkTask\n\tat org.apache.kafka.connect.file.FileStreamSinkTask.start(FileStreamSinkTask.java:74)\nCaused by: java.nio.file.NoSuchFileException: /nope/out.txt\n";

    /// Shaped like Kafka Connect 4.1.1's answer: a sink with a failed task, a paused
    /// source, a sink with a DLQ over two topics, a stopped sink with a DLQ on a regex and
    /// a group override.
    fn body() -> BTreeMap<String, serde_json::Value> {
        let v = serde_json::json!({
            "bad-sink": {
                "status": {"name": "bad-sink", "connector": {"state": "RUNNING", "worker_id": "127.0.0.1:8083", "version": "4.1.1"},
                    "tasks": [{"id": 0, "state": "FAILED", "worker_id": "127.0.0.1:8083", "version": "4.1.1", "trace": TRACE}], "type": "sink"},
                "info": {"name": "bad-sink", "config": {"connector.class": "FileStreamSink", "file": "/nope/out.txt", "topics": "t1", "tasks.max": "1", "name": "bad-sink"},
                    "tasks": [{"connector": "bad-sink", "task": 0}], "type": "sink"}
            },
            "paused-src": {
                "status": {"name": "paused-src", "connector": {"state": "PAUSED", "worker_id": "127.0.0.1:8083", "version": "4.1.1"},
                    "tasks": [{"id": 0, "state": "PAUSED", "worker_id": "127.0.0.1:8083", "version": "4.1.1"}], "type": "source"},
                "info": {"name": "paused-src", "config": {"connector.class": "FileStreamSource", "file": "/tmp/in.txt", "topic": "t-src", "tasks.max": "1", "name": "paused-src"},
                    "tasks": [{"connector": "paused-src", "task": 0}], "type": "source"}
            },
            "dlq-sink": {
                "status": {"name": "dlq-sink", "connector": {"state": "RUNNING", "worker_id": "127.0.0.1:8083", "version": "4.1.1"},
                    "tasks": [{"id": 1, "state": "RUNNING", "worker_id": "127.0.0.1:8083"}, {"id": 0, "state": "RUNNING", "worker_id": "127.0.0.1:8083"}], "type": "sink"},
                "info": {"name": "dlq-sink", "config": {"connector.class": "FileStreamSink", "topics": "a, b ,", "errors.tolerance": "all",
                    "errors.deadletterqueue.topic.name": "a.dlq", "errors.deadletterqueue.topic.replication.factor": "1", "name": "dlq-sink"},
                    "tasks": [{"connector": "dlq-sink", "task": 0}, {"connector": "dlq-sink", "task": 1}], "type": "sink"}
            },
            "stopped-regex": {
                "status": {"name": "stopped-regex", "connector": {"state": "STOPPED", "worker_id": "127.0.0.1:8083", "version": "4.1.1"}, "tasks": [], "type": "sink"},
                "info": {"name": "stopped-regex", "config": {"connector.class": "FileStreamSink", "topics.regex": "orders-.*",
                    "errors.deadletterqueue.topic.name": "orders.dlq", "consumer.override.group.id": "orders-sink", "name": "stopped-regex"},
                    "tasks": [], "type": "sink"}
            }
        });
        serde_json::from_value(v).unwrap()
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn sample_at(body: &BTreeMap<String, serde_json::Value>, now: SystemTime, mem: &mut FailedSince) -> SourceSample {
        to_sample("local", "http://127.0.0.1:8083", &parse(body), now, mem)
    }

    fn value(s: &SourceSample, signal: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let key = SeriesKey::new(signal, labels);
        let found: Vec<f64> = s.observations.iter().filter(|o| o.key == key).map(|o| o.value).collect();
        assert!(found.len() <= 1, "{key:?} observed {} times", found.len());
        found.first().copied()
    }

    fn target<'a>(s: &'a SourceSample, kind: &str, name: &str) -> &'a TargetInfo {
        s.targets.iter().find(|t| t.kind == kind && t.name == name).unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    #[test]
    fn states_parse_exactly_as_the_api_spells_them() {
        for st in State::ALL {
            assert_eq!(State::parse(st.as_str()), Some(st));
        }
        assert_eq!(State::parse("running"), None);
        assert_eq!(State::parse("DESTROYED"), None);
    }

    #[test]
    fn a_failed_task_gives_failed_state_count_and_age_since_first_seen() {
        let mut mem = FailedSince::new();
        let s = sample_at(&body(), t0(), &mut mem);
        let c = [("connect", "local"), ("connector", "bad-sink")];
        assert_eq!(value(&s, "connector_failed_tasks", &c), Some(1.0));
        assert_eq!(value(&s, "connector_tasks", &c), Some(1.0));
        assert_eq!(value(&s, "connector_state", &[c[0], c[1], ("state", "RUNNING")]), Some(1.0));
        let task = [c[0], c[1], ("task", "0")];
        for st in State::ALL {
            let want = if st == State::Failed { 1.0 } else { 0.0 };
            assert_eq!(value(&s, "connector_task_state", &[task[0], task[1], task[2], ("state", st.as_str())]), Some(want), "{st:?}");
        }
        assert_eq!(value(&s, "connector_task_failed_seconds", &task), Some(0.0), "first sighting is now");

        let s = sample_at(&body(), t0() + Duration::from_secs(42), &mut mem);
        assert_eq!(value(&s, "connector_task_failed_seconds", &task), Some(42.0));
        let t = target(&s, "connector", "bad-sink");
        assert_eq!(t.health, "failed");
        assert_eq!(
            t.detail,
            serde_json::json!({
                "type": "sink", "state": "RUNNING", "worker_id": "127.0.0.1:8083", "trace": null,
                "tasks": [{"id": 0, "state": "FAILED", "worker_id": "127.0.0.1:8083", "trace": TRACE, "failed_since_seconds": 42.0}],
                "topics": ["t1"], "topics_regex": null, "dlq_topic": null,
            })
        );
    }

    #[test]
    fn failure_time_is_forgotten_when_the_task_recovers_and_restarts_when_it_fails_again() {
        let mut mem = FailedSince::new();
        sample_at(&body(), t0(), &mut mem);
        let mut healed = body();
        healed.get_mut("bad-sink").unwrap()["status"]["tasks"][0] = serde_json::json!({"id": 0, "state": "RUNNING", "worker_id": "127.0.0.1:8083"});
        let s = sample_at(&healed, t0() + Duration::from_secs(10), &mut mem);
        let task = [("connect", "local"), ("connector", "bad-sink"), ("task", "0")];
        assert_eq!(value(&s, "connector_task_failed_seconds", &task), None);
        assert_eq!(target(&s, "connector", "bad-sink").health, "ok");
        assert!(mem.is_empty());
        let s = sample_at(&body(), t0() + Duration::from_secs(20), &mut mem);
        assert_eq!(value(&s, "connector_task_failed_seconds", &task), Some(0.0));
        let s = sample_at(&body(), t0() + Duration::from_secs(25), &mut mem);
        assert_eq!(value(&s, "connector_task_failed_seconds", &task), Some(5.0));
    }

    #[test]
    fn failure_time_of_a_deleted_connector_is_forgotten_but_a_malformed_one_keeps_it() {
        let mut mem = FailedSince::new();
        sample_at(&body(), t0(), &mut mem);
        let mut garbled = body();
        garbled.get_mut("bad-sink").unwrap()["status"] = serde_json::json!("garbage");
        let s = sample_at(&garbled, t0() + Duration::from_secs(3), &mut mem);
        assert_eq!(mem.get(&("bad-sink".to_string(), 0)), Some(&t0()), "state unknown: keep the time");
        assert_eq!(value(&s, "connectors", &[("connect", "local")]), Some(4.0), "still listed by the worker");
        let mut gone = body();
        gone.remove("bad-sink");
        sample_at(&gone, t0() + Duration::from_secs(6), &mut mem);
        assert!(mem.is_empty());
    }

    #[test]
    fn a_malformed_entry_is_skipped_and_noted_without_failing_the_sample() {
        let mut b = body();
        b.insert("half".into(), serde_json::json!({"status": {"connector": {"state": "RUNNING"}, "tasks": []}}));
        b.insert("empty".into(), serde_json::json!({}));
        let s = sample_at(&b, t0(), &mut FailedSince::new());
        assert_eq!(value(&s, "connectors", &[("connect", "local")]), Some(6.0));
        assert!(s.observations.iter().all(|o| !matches!(o.key.label("connector"), Some("half" | "empty"))));
        let cluster = target(&s, "connect_cluster", "local");
        assert_eq!(cluster.health, "ok");
        assert_eq!(cluster.detail.json()["url"], "http://127.0.0.1:8083");
        assert_eq!(cluster.detail.json()["connectors"], 6);
        let detail = cluster.detail.json();
        let skipped = detail["skipped"].as_array().unwrap();
        let names: Vec<&str> = skipped.iter().map(|s| s["connector"].as_str().unwrap()).collect();
        assert_eq!(names, ["empty", "half"]);
        assert!(skipped[1]["error"].as_str().unwrap().contains("info"), "{skipped:?}");
        assert_eq!(s.targets.iter().filter(|t| t.kind == "connector").count(), 4);
    }

    #[test]
    fn a_paused_source_connector_is_a_warning_with_type_source() {
        let s = sample_at(&body(), t0(), &mut FailedSince::new());
        let c = [("connect", "local"), ("connector", "paused-src")];
        assert_eq!(value(&s, "connector_state", &[c[0], c[1], ("state", "PAUSED")]), Some(1.0));
        assert_eq!(value(&s, "connector_state", &[c[0], c[1], ("state", "RUNNING")]), Some(0.0));
        assert_eq!(value(&s, "connector_info", &[c[0], c[1], ("type", "source")]), Some(1.0));
        assert_eq!(value(&s, "connector_failed_tasks", &c), Some(0.0));
        assert_eq!(value(&s, "connector_task_failed_seconds", &[c[0], c[1], ("task", "0")]), None);
        let t = target(&s, "connector", "paused-src");
        assert_eq!(t.health, "warn");
        assert_eq!(t.detail.json()["tasks"][0]["state"], "PAUSED");
        assert_eq!(t.detail.json()["tasks"][0]["trace"], serde_json::Value::Null);
        assert_eq!(t.detail.json()["topics"], serde_json::json!([]));
    }

    #[test]
    fn a_stopped_connector_has_no_tasks_and_warns() {
        let s = sample_at(&body(), t0(), &mut FailedSince::new());
        let c = [("connect", "local"), ("connector", "stopped-regex")];
        assert_eq!(value(&s, "connector_state", &[c[0], c[1], ("state", "STOPPED")]), Some(1.0));
        assert_eq!(value(&s, "connector_tasks", &c), Some(0.0));
        assert_eq!(target(&s, "connector", "stopped-regex").health, "warn");
        assert_eq!(target(&s, "connector", "stopped-regex").detail.json()["topics_regex"], "orders-.*");
    }

    #[test]
    fn sinks_with_a_dead_letter_topic_yield_links_and_sources_never_do() {
        let mut b = body();
        // A DLQ key on a source connector means nothing to Connect.
        b.get_mut("paused-src").unwrap()["info"]["config"][DLQ_TOPIC_KEY] = serde_json::json!("src.dlq");
        // An empty DLQ name disables the DLQ.
        b.get_mut("bad-sink").unwrap()["info"]["config"][DLQ_TOPIC_KEY] = serde_json::json!(" ");
        let s = sample_at(&b, t0(), &mut FailedSince::new());
        assert_eq!(
            s.dlq_links,
            vec![
                DlqLink {
                    dlq_topic: "a.dlq".into(),
                    source_topics: vec!["a".into(), "b".into()],
                    group: "connect-dlq-sink".into(),
                    origin: "connect:local/dlq-sink".into(),
                },
                DlqLink {
                    dlq_topic: "orders.dlq".into(),
                    source_topics: vec![],
                    group: "orders-sink".into(),
                    origin: "connect:local/stopped-regex".into(),
                },
            ]
        );
    }

    #[test]
    fn tasks_are_reported_in_id_order_and_counted_from_the_task_configs() {
        let s = sample_at(&body(), t0(), &mut FailedSince::new());
        let t = target(&s, "connector", "dlq-sink");
        let ids: Vec<i64> = t.detail.json()["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [0, 1]);
        assert_eq!(t.health, "ok");
        assert_eq!(value(&s, "connector_tasks", &[("connect", "local"), ("connector", "dlq-sink")]), Some(2.0));
    }

    #[test]
    fn an_unknown_state_sets_no_state_series_to_one_and_makes_health_unknown() {
        let mut b = body();
        b.get_mut("dlq-sink").unwrap()["status"]["connector"]["state"] = serde_json::json!("DESTROYED");
        b.get_mut("dlq-sink").unwrap()["info"]["type"] = serde_json::json!("weird");
        b.get_mut("dlq-sink").unwrap()["status"]["type"] = serde_json::json!("weird");
        let s = sample_at(&b, t0(), &mut FailedSince::new());
        let c = [("connect", "local"), ("connector", "dlq-sink")];
        for st in State::ALL {
            assert_eq!(value(&s, "connector_state", &[c[0], c[1], ("state", st.as_str())]), Some(0.0));
        }
        assert_eq!(value(&s, "connector_info", &[c[0], c[1], ("type", "unknown")]), Some(1.0));
        assert_eq!(target(&s, "connector", "dlq-sink").health, "unknown");
        assert_eq!(target(&s, "connector", "dlq-sink").detail.json()["state"], "DESTROYED");
        assert!(s.dlq_links.iter().all(|l| l.origin != "connect:local/dlq-sink"), "type unknown: not a sink");
    }

    #[test]
    fn every_observation_is_a_declared_signal_with_exactly_its_labels() {
        let mut mem = FailedSince::new();
        let s = sample_at(&body(), t0(), &mut mem);
        let mut seen = BTreeSet::new();
        for o in &s.observations {
            let def = crate::catalog::connect::SIGNALS.iter().find(|d| d.name == o.key.signal).unwrap_or_else(|| panic!("undeclared {}", o.key.signal));
            let labels: BTreeSet<&str> = o.key.labels.keys().map(String::as_str).collect();
            let declared: BTreeSet<&str> = def.labels.iter().copied().collect();
            assert_eq!(labels, declared, "{:?}", o.key);
            assert!(o.key.labels.values().all(|v| !v.contains('\n') && v.len() < 200), "no free text in labels: {:?}", o.key);
            seen.insert(def.name);
        }
        let all: BTreeSet<&str> = crate::catalog::connect::SIGNALS.iter().map(|d| d.name).collect();
        assert_eq!(seen, all, "the fixture exercises every signal");
    }

    #[test]
    fn a_sampler_builds_from_config_and_keeps_its_name() {
        let cfg = HttpSourceConfig {
            name: "local".into(),
            url: "http://127.0.0.1:8083".into(),
            sample_interval: Duration::from_secs(1),
            sample_timeout: Duration::from_secs(1),
            backoff_max: Duration::from_secs(2),
        };
        let s = ConnectSampler::new(&cfg).unwrap();
        assert_eq!(s.name(), "local");
        assert_eq!(s.listing_url, "http://127.0.0.1:8083/connectors?expand=status&expand=info");
    }
}
