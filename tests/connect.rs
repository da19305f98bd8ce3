//! The Kafka Connect source against the real distributed worker of `stack/up`
//! (`$CONNECT_URL`, default http://127.0.0.1:8083): connectors are really created (a
//! healthy FileStreamSink, one whose task really fails, DLQ sinks, a paused source), the
//! real agent binary exports them on `/metrics`, and the sampler is driven directly for
//! what `/metrics` does not show (traces, DLQ links). Nothing is mocked; each test owns
//! its connectors and topics and deletes its connectors when it ends, even on failure.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{json, Value};
use streamguard::config::HttpSourceConfig;
use streamguard::sample::connect::ConnectSampler;
use streamguard::sample::http::HttpError;
use streamguard::signal::{DlqLink, SeriesKey, SourceSample, TargetInfo};

fn connect_url() -> String {
    std::env::var("CONNECT_URL").unwrap_or_else(|_| "http://127.0.0.1:8083".to_string()).trim_end_matches('/').to_string()
}

/// One REST call to the worker on a throwaway runtime: (status, JSON body or Null).
fn rest(method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let url = format!("{}{path}", connect_url());
    block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut req = client.request(method, &url);
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    })
}

/// Waits for the worker to answer (the stack may be restarting).
fn wait_for_worker() {
    wait_until(Duration::from_secs(120), "Kafka Connect REST", || rest(reqwest::Method::GET, "/connectors", None).0 == 200);
}

fn put_config(name: &str, config: Value) {
    let (status, body) = rest(reqwest::Method::PUT, &format!("/connectors/{name}/config"), Some(&config));
    assert!(status == 200 || status == 201, "PUT config {name}: HTTP {status}: {body}");
}

fn status(name: &str) -> Value {
    rest(reqwest::Method::GET, &format!("/connectors/{name}/status"), None).1
}

fn connector_state(name: &str) -> Option<String> {
    status(name)["connector"]["state"].as_str().map(str::to_string)
}

fn task_state(name: &str, task: usize) -> Option<String> {
    status(name)["tasks"][task]["state"].as_str().map(str::to_string)
}

/// Connectors this test created; deleted on drop, whether the test passed or not.
struct Connectors(Vec<String>);

impl Connectors {
    fn new(names: &[&str]) -> Self {
        Connectors(names.iter().map(|n| n.to_string()).collect())
    }
}

impl Drop for Connectors {
    fn drop(&mut self) {
        for name in &self.0 {
            let (status, body) = rest(reqwest::Method::DELETE, &format!("/connectors/{name}"), None);
            if status != 204 && status != 404 {
                eprintln!("cleanup: DELETE connector {name}: HTTP {status}: {body}");
            }
        }
    }
}

fn file_sink(topics: &str, file: &std::path::Path) -> Value {
    json!({"connector.class": "FileStreamSink", "file": file, "topics": topics, "tasks.max": "1"})
}

fn source_config(name: &str, url: &str, timeout: Duration) -> HttpSourceConfig {
    HttpSourceConfig {
        name: name.to_string(),
        url: url.to_string(),
        sample_interval: Duration::from_secs(1),
        sample_timeout: timeout,
        backoff_max: Duration::from_secs(2),
    }
}

/// A current-thread runtime that lives as long as the sampler, so its pooled
/// connections stay usable between samples.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn target<'a>(s: &'a SourceSample, kind: &str, name: &str) -> &'a TargetInfo {
    s.targets.iter().find(|t| t.kind == kind && t.name == name).unwrap_or_else(|| panic!("no {kind} target {name}: {:#?}", s.targets))
}

fn value(s: &SourceSample, signal: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let key = SeriesKey::new(signal, labels);
    s.observations.iter().find(|o| o.key == key).map(|o| o.value)
}

/// The real `streamguard run` with `config` (`{port}` is replaced by its listen port).
fn start_agent(config: &str) -> Agent {
    let port = free_port();
    Agent::start_with(port, &config.replace("{port}", &port.to_string()))
}

#[test]
fn the_agent_exports_a_failing_task_and_a_healthy_sink_on_metrics() {
    wait_for_worker();
    let b = bootstrap();
    let u = unique("sg-conn-metrics");
    let topic = format!("{u}-in");
    create_topic(&b, &topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let (healthy, failing) = (format!("{u}-ok"), format!("{u}-bad"));
    let _cleanup = Connectors::new(&[&healthy, &failing]);
    put_config(&healthy, file_sink(&topic, &dir.path().join("out.txt")));
    put_config(&failing, file_sink(&topic, &dir.path().join("no-such-dir/out.txt")));
    wait_until(Duration::from_secs(60), "failing task FAILED, healthy task RUNNING", || {
        task_state(&failing, 0).as_deref() == Some("FAILED") && task_state(&healthy, 0).as_deref() == Some("RUNNING")
    });

    let dead_port = free_port();
    let agent = start_agent(&format!(
        r#"listen = "127.0.0.1:{{port}}"
backoff_max = "2s"

[[connect]]
name = "local"
url = "{url}"
sample_interval = "1s"
sample_timeout = "1s"

[[connect]]
name = "dead"
url = "http://127.0.0.1:{dead_port}"
sample_interval = "1s"
sample_timeout = "1s"
"#,
        url = connect_url()
    ));
    let bad = [("connect", "local"), ("connector", failing.as_str())];
    wait_until(Duration::from_secs(30), "failing connector on /metrics", || {
        agent.metrics().get("streamguard_connect_connector_failed_tasks", &bad).is_some()
    });
    let m = agent.metrics();
    assert_eq!(m.get("streamguard_connect_connector_failed_tasks", &bad), Some(1.0));
    assert_eq!(m.get("streamguard_connect_connector_tasks", &bad), Some(1.0));
    assert_eq!(m.get("streamguard_connect_connector_info", &[bad[0], bad[1], ("type", "sink")]), Some(1.0));
    let bad_task = [bad[0], bad[1], ("task", "0")];
    for (state, want) in [("FAILED", 1.0), ("RUNNING", 0.0), ("PAUSED", 0.0), ("STOPPED", 0.0), ("UNASSIGNED", 0.0), ("RESTARTING", 0.0)] {
        assert_eq!(m.get("streamguard_connect_task_state", &[bad_task[0], bad_task[1], bad_task[2], ("state", state)]), Some(want), "{state}");
    }
    let first = m.get("streamguard_connect_task_failed_seconds", &bad_task).expect("failed seconds present");
    assert!(first >= 0.0);

    let ok = [("connect", "local"), ("connector", healthy.as_str())];
    assert_eq!(m.get("streamguard_connect_connector_state", &[ok[0], ok[1], ("state", "RUNNING")]), Some(1.0));
    assert_eq!(m.get("streamguard_connect_connector_state", &[ok[0], ok[1], ("state", "FAILED")]), Some(0.0));
    assert_eq!(m.get("streamguard_connect_connector_failed_tasks", &ok), Some(0.0));
    assert_eq!(m.get("streamguard_connect_task_state", &[ok[0], ok[1], ("task", "0"), ("state", "RUNNING")]), Some(1.0));
    assert_eq!(m.count("streamguard_connect_task_failed_seconds", &ok), 0, "no failure age for a healthy task");
    assert!(m.get("streamguard_connect_connectors", &[("connect", "local")]).is_some_and(|n| n >= 2.0));
    assert!(!m.text.contains("NoSuchFileException") && !m.text.contains("no-such-dir"), "a trace leaked into /metrics");
    promtool_check_metrics(&m.text);

    assert_eq!(m.get("streamguard_source_up", &[("kind", "connect"), ("source", "local")]), Some(1.0));
    assert_eq!(m.get("streamguard_source_up", &[("kind", "connect"), ("source", "dead")]), Some(0.0));
    assert_eq!(m.count("streamguard_connect_connectors", &[("connect", "dead")]), 0, "an unreachable worker has no data, not zero");

    std::thread::sleep(Duration::from_millis(2_500));
    let later = agent.metrics().get("streamguard_connect_task_failed_seconds", &bad_task).expect("still failed");
    assert!(later >= first + 1.0, "failure age grows between scrapes: {first} then {later}");
}

#[test]
fn the_sampler_puts_the_failure_trace_in_the_connector_detail_and_forgets_the_failure_after_recovery() {
    wait_for_worker();
    let u = unique("sg-conn-trace");
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{u}-sink");
    let _cleanup = Connectors::new(&[&name]);
    let missing = dir.path().join("no-such-dir/out.txt");
    put_config(&name, file_sink(&format!("{u}-in"), &missing));
    wait_until(Duration::from_secs(60), "task FAILED", || task_state(&name, 0).as_deref() == Some("FAILED"));

    let rt = runtime();
    let sampler = ConnectSampler::new(&source_config("local", &connect_url(), Duration::from_secs(5))).unwrap();
    assert_eq!(sampler.name(), "local");
    let t0 = SystemTime::now();
    let s = rt.block_on(sampler.sample(t0)).unwrap();
    let t = target(&s, "connector", &name);
    assert_eq!(t.health, "failed");
    assert_eq!(t.detail.json()["type"], "sink");
    assert_eq!(t.detail.json()["state"], "RUNNING", "Connect keeps the connector RUNNING when only its task fails");
    let task = &t.detail.json()["tasks"][0];
    assert_eq!(task["state"], "FAILED");
    assert_eq!(task["failed_since_seconds"], 0.0);
    let trace = task["trace"].as_str().expect("trace of the failed task");
    assert!(trace.contains("NoSuchFileException") && trace.contains(&missing.display().to_string()), "{trace}");
    assert!(trace.lines().count() > 5, "the full trace, not a summary: {trace}");
    assert!(
        s.observations.iter().all(|o| o.key.labels.values().all(|v| !v.contains("Exception"))),
        "no trace in labels"
    );
    let cluster = target(&s, "connect_cluster", "local");
    assert_eq!(cluster.health, "ok");
    assert_eq!(cluster.detail.json()["url"], connect_url());

    let s = rt.block_on(sampler.sample(t0 + Duration::from_secs(7))).unwrap();
    let task_labels = [("connect", "local"), ("connector", name.as_str()), ("task", "0")];
    assert_eq!(value(&s, "connector_task_failed_seconds", &task_labels), Some(7.0), "age counts from the first sighting");
    assert_eq!(target(&s, "connector", &name).detail.json()["tasks"][0]["failed_since_seconds"], 7.0);

    // Fix the config: Connect restarts the task with the new file, and it runs.
    put_config(&name, file_sink(&format!("{u}-in"), &dir.path().join("out.txt")));
    wait_until(Duration::from_secs(60), "task RUNNING again", || task_state(&name, 0).as_deref() == Some("RUNNING"));
    let s = rt.block_on(sampler.sample(t0 + Duration::from_secs(9))).unwrap();
    assert_eq!(value(&s, "connector_task_failed_seconds", &task_labels), None);
    assert_eq!(value(&s, "connector_failed_tasks", &task_labels[..2]), Some(0.0));
    let t = target(&s, "connector", &name);
    assert_eq!(t.health, "ok");
    assert_eq!(t.detail.json()["tasks"][0]["trace"], Value::Null);
}

#[test]
fn a_paused_source_connector_is_reported_paused_with_a_warning() {
    wait_for_worker();
    let u = unique("sg-conn-paused");
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{u}-src");
    let _cleanup = Connectors::new(&[&name]);
    let config = json!({"connector.class": "FileStreamSource", "file": dir.path().join("in.txt"), "topic": format!("{u}-out"), "tasks.max": "1"});
    put_config(&name, config);
    wait_until(Duration::from_secs(60), "source RUNNING", || task_state(&name, 0).as_deref() == Some("RUNNING"));
    let (code, body) = rest(reqwest::Method::PUT, &format!("/connectors/{name}/pause"), None);
    assert_eq!(code, 202, "{body}");
    wait_until(Duration::from_secs(60), "source PAUSED", || {
        connector_state(&name).as_deref() == Some("PAUSED") && task_state(&name, 0).as_deref() == Some("PAUSED")
    });

    let rt = runtime();
    let sampler = ConnectSampler::new(&source_config("local", &connect_url(), Duration::from_secs(5))).unwrap();
    let s = rt.block_on(sampler.sample(SystemTime::now())).unwrap();
    let c = [("connect", "local"), ("connector", name.as_str())];
    assert_eq!(value(&s, "connector_state", &[c[0], c[1], ("state", "PAUSED")]), Some(1.0));
    assert_eq!(value(&s, "connector_state", &[c[0], c[1], ("state", "RUNNING")]), Some(0.0));
    assert_eq!(value(&s, "connector_info", &[c[0], c[1], ("type", "source")]), Some(1.0));
    assert_eq!(value(&s, "connector_task_state", &[c[0], c[1], ("task", "0"), ("state", "PAUSED")]), Some(1.0));
    assert_eq!(value(&s, "connector_failed_tasks", &c), Some(0.0));
    assert_eq!(target(&s, "connector", &name).health, "warn");
    assert!(s.dlq_links.iter().all(|l| !l.origin.contains(&u)), "a source connector has no DLQ link");
}

#[test]
fn sinks_with_a_dead_letter_topic_yield_dlq_links_with_their_topics_and_group() {
    wait_for_worker();
    let u = unique("sg-conn-dlq");
    let dir = tempfile::tempdir().unwrap();
    let (listed, regex, plain) = (format!("{u}-listed"), format!("{u}-regex"), format!("{u}-plain"));
    let _cleanup = Connectors::new(&[&listed, &regex, &plain]);
    let dlq = |file: &str| {
        json!({
            "connector.class": "FileStreamSink", "file": dir.path().join(file), "tasks.max": "1",
            "errors.tolerance": "all", "errors.deadletterqueue.topic.name": format!("{u}.dlq"),
            "errors.deadletterqueue.topic.replication.factor": "1",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter", "value.converter.schemas.enable": "false",
        })
    };
    let mut c = dlq("listed.txt");
    c["topics"] = json!(format!("{u}-a, {u}-b"));
    put_config(&listed, c);
    let mut c = dlq("regex.txt");
    c["topics.regex"] = json!(format!("{u}-r.*"));
    c["consumer.override.group.id"] = json!(format!("{u}-group"));
    put_config(&regex, c);
    put_config(&plain, file_sink(&format!("{u}-a"), &dir.path().join("plain.txt")));
    wait_until(Duration::from_secs(60), "three sinks RUNNING", || {
        [&listed, &regex, &plain].iter().all(|n| task_state(n, 0).as_deref() == Some("RUNNING"))
    });

    let rt = runtime();
    let sampler = ConnectSampler::new(&source_config("local", &connect_url(), Duration::from_secs(5))).unwrap();
    let s = rt.block_on(sampler.sample(SystemTime::now())).unwrap();
    let mine: Vec<&DlqLink> = s.dlq_links.iter().filter(|l| l.origin.contains(&u)).collect();
    // Sorted by DlqLink's order: topic, then source topics (empty first).
    let want = [
        DlqLink {
            dlq_topic: format!("{u}.dlq"),
            source_topics: vec![],
            group: format!("{u}-group"),
            origin: format!("connect:local/{regex}"),
        },
        DlqLink {
            dlq_topic: format!("{u}.dlq"),
            source_topics: vec![format!("{u}-a"), format!("{u}-b")],
            group: format!("connect-{listed}"),
            origin: format!("connect:local/{listed}"),
        },
    ];
    assert_eq!(mine, want.iter().collect::<Vec<_>>());
    assert_eq!(target(&s, "connector", &listed).detail.json()["dlq_topic"], format!("{u}.dlq"));
    assert_eq!(target(&s, "connector", &regex).detail.json()["topics_regex"], format!("{u}-r.*"));

    // The groups in the links are the ones the sinks really consume as.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    wait_until(Duration::from_secs(60), "both sink groups on the broker", || {
        let groups = consumer.fetch_group_list(None, Duration::from_secs(10)).unwrap();
        want.iter().all(|l| groups.groups().iter().any(|g| g.name() == l.group))
    });
}

#[test]
fn a_connect_url_with_nothing_listening_fails_fast() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let rt = runtime();
    let sampler = ConnectSampler::new(&source_config("nobody", &url, Duration::from_secs(1))).unwrap();
    let started = Instant::now();
    let r = rt.block_on(sampler.sample(SystemTime::now()));
    let took = started.elapsed();
    match r {
        Err(e @ HttpError::Connect { .. }) => assert!(e.to_string().contains(&url), "{e}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_worker_that_accepts_but_never_answers_times_out_within_the_sample_timeout() {
    // A real socket that completes the TCP handshake (kernel backlog) and never replies.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let rt = runtime();
    let sampler = ConnectSampler::new(&source_config("silent", &url, Duration::from_secs(1))).unwrap();
    let started = Instant::now();
    let r = rt.block_on(sampler.sample(SystemTime::now()));
    let took = started.elapsed();
    assert!(matches!(r, Err(HttpError::Timeout { .. })), "{r:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_non_2xx_answer_fails_the_sample_with_its_status() {
    wait_for_worker();
    let url = format!("{}/no-such-prefix", connect_url());
    let rt = runtime();
    let sampler = ConnectSampler::new(&source_config("wrong-path", &url, Duration::from_secs(5))).unwrap();
    match rt.block_on(sampler.sample(SystemTime::now())) {
        Err(HttpError::Status { status, .. }) => assert_eq!(status, 404),
        other => panic!("expected HTTP 404, got {other:?}"),
    }
}
