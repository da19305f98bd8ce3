//! Helpers shared by the integration tests. They run against the real local stack
//! (`stack/up`): Kafka on `$KAFKA_BOOTSTRAP` (default 127.0.0.1:9092). Nothing is mocked;
//! a missing stack fails the tests, it never skips them.
#![allow(dead_code)]

pub mod fault_proxy;
mod private_broker;
pub mod reprocess;
#[allow(unused_imports)]
pub use private_broker::{free_service_port, Paused, PrivateBroker};

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A name no other test (or earlier run) uses. The count makes it unique within the
/// process: without it, threads that ask in the same clock tick would get the same
/// name (suspected, not proven, when the SIGKILL test of `tests/reprocess.rs` once
/// found a DLQ copy under the group of a run that never copied).
pub fn unique(prefix: &str) -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{}-{n}", std::process::id(), nanos % 1_000_000_000)
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client")
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin = admin(bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let res = block_on(admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &opts))
        .expect("create_topics request");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// Produces `counts[p]` records to partition `p`, each with the given CreateTime (ms) if any.
pub fn produce(bootstrap: &str, topic: &str, counts: &[usize], timestamp_ms: Option<i64>) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create().expect("producer");
    for (p, n) in counts.iter().enumerate() {
        for i in 0..*n {
            let payload = format!("{{\"n\":{i}}}");
            let key = format!("k{i}");
            let mut rec = BaseRecord::to(topic).partition(p as i32).payload(&payload).key(&key);
            if let Some(ts) = timestamp_ms {
                rec = rec.timestamp(ts);
            }
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        assert!(matches!(e, rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)), "{e}");
                        rec = r;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Commits `(partition, offset)` pairs for `group` as a non-member (the group stays
/// Empty).
pub fn commit_offsets(bootstrap: &str, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).set("enable.auto.commit", "false").create().expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(*o)).unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
}

/// A real consumer of `group` that reads exactly `counts[p]` records from each partition
/// (by assignment, so the group stays Empty) and commits what it read. Returns the
/// committed offsets.
pub fn consume_and_commit(bootstrap: &str, group: &str, topic: &str, counts: &[usize]) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut committed = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for (p, n) in counts.iter().enumerate() {
        let mut assign = TopicPartitionList::new();
        assign.add_partition_offset(topic, p as i32, Offset::Beginning).unwrap();
        consumer.assign(&assign).unwrap();
        let mut read = 0usize;
        let deadline = Instant::now() + Duration::from_secs(30);
        while read < *n {
            assert!(Instant::now() < deadline, "timed out reading {topic}/{p}");
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.expect("consume");
                assert_eq!(rdkafka::Message::partition(&m), p as i32);
                read += 1;
            }
        }
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(*n as i64)).unwrap();
        committed.push(*n as i64);
    }
    // A broker just started may not have loaded the group's coordinator yet
    // (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS): ask again for a while.
    let mut tries = 0;
    while let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tries += 1;
        assert!(tries < 20, "commit: {e}");
        std::thread::sleep(Duration::from_millis(500));
    }
    committed
}

/// A consumer that joins `group` by subscription and keeps polling until dropped.
pub struct Member {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    /// `protocol` is `classic` or `consumer` (KIP-848).
    pub fn join(bootstrap: &str, group: &str, topic: &str, protocol: &str) -> Member {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("group.protocol", protocol)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        if protocol == "classic" {
            cfg.set("session.timeout.ms", "6000");
        }
        let consumer: BaseConsumer = cfg.create().expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
            // Dropping the consumer leaves the group cleanly.
            drop(consumer);
        });
        Member { stop, thread: Some(thread) }
    }

    pub fn leave(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop_now();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("streamguard.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// A config for one cluster watching groups that match `group_regex`, sampling every second.
pub fn agent_config(port: u16, bootstrap: &str, group_regex: &str) -> String {
    agent_config_with(port, bootstrap, group_regex, "")
}

/// As [`agent_config`], followed by `extra` TOML tables (`[history]`, `[rules]` …).
pub fn agent_config_with(port: u16, bootstrap: &str, group_regex: &str, extra: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
sample_interval = "1s"
sample_timeout = "1s"
backoff_max = "2s"

[[clusters]]
name = "local"
bootstrap_servers = "{bootstrap}"
groups = {{ include = ["{group_regex}"] }}
{extra}"#
    )
}

/// The `[rules]` (one file, `dir/rules.yaml`, evaluated every second) and `[remediation]`
/// (journal and audit in `dir`) tables of a test agent's config.
pub fn rules_and_remediation(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
[rules]
paths = ["{d}/rules.yaml"]
evaluation_interval = "1s"
state_file = "{d}/state.json"

[remediation]
journal = "{d}/journal.jsonl"
audit = "{d}/audit.jsonl"
"#
    )
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_streamguard")
}

/// The real `streamguard run` process; killed on drop.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start(bootstrap: &str, group_regex: &str) -> Agent {
        Agent::start_on(free_port(), bootstrap, group_regex)
    }

    pub fn start_on(port: u16, bootstrap: &str, group_regex: &str) -> Agent {
        Agent::start_with(port, &agent_config(port, bootstrap, group_regex))
    }

    /// Starts the agent with a whole config file body (which must listen on `port`).
    pub fn start_with(port: u16, config: &str) -> Agent {
        Agent::start_with_env(port, config, &[])
    }

    /// [`Agent::start_with`], with extra environment variables.
    pub fn start_with_env(port: u16, config: &str, env: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(dir.path(), config);
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .env("STREAMGUARD_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn streamguard");
        let mut agent = Agent { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent.get("/healthz").0 != 200 {
            // An agent that exited (bad config, port taken) says why in its log.
            let exited = agent.child.try_wait().ok().flatten();
            assert!(exited.is_none() && Instant::now() < deadline, "agent not healthy ({exited:?}):\n{}", agent.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path)
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("streamguard.toml")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on loopback: (status, body); (0, error) when nothing answers or the exchange fails.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_get_with(port, path, "")
}

/// As [`http_get`], with extra header lines (`Name: value`, each ending in `\r\n`).
pub fn http_get_with(port: u16, path: &str, headers: &str) -> (u16, String) {
    let mut request = http_client().get(format!("http://127.0.0.1:{port}{path}"));
    for line in headers.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("header line without ':': {line:?}"));
        request = request.header(name.trim(), value.trim());
    }
    let response = match request.send() {
        Ok(r) => r,
        Err(e) => return (0, e.to_string()),
    };
    let status = response.status().as_u16();
    match response.text() {
        Ok(body) => (status, body),
        Err(e) => (0, e.to_string()),
    }
}

/// One blocking client for every test in the binary: no pooled connection outlives an agent
/// (a test's next agent may reuse the port), and nothing waits longer than the old raw
/// client's 10 s read timeout.
fn http_client() -> &'static reqwest::blocking::Client {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .no_proxy()
            .build()
            .expect("HTTP client")
    })
}

/// Parsed Prometheus text exposition (what `/metrics` serves by default): one
/// (sample name, labels, value) per line, histogram lines under their `_bucket`, `_sum` and
/// `_count` names.
pub struct Metrics {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        use prom_text_format_parser::{Scrape, Type, ValueType};
        let scrape = Scrape::parse(text).unwrap_or_else(|e| panic!("exposition does not parse: {e:?}\n{text}"));
        let mut samples = Vec::new();
        for metric in &scrape.metrics {
            for sample in &metric.samples {
                let name = match (sample.value.value_type, metric.kind) {
                    (ValueType::Sum, _) => format!("{}_sum", metric.name),
                    (ValueType::Count, _) => format!("{}_count", metric.name),
                    (ValueType::Sample, Type::Histogram) => format!("{}_bucket", metric.name),
                    (ValueType::Sample, _) => metric.name.clone(),
                };
                let labels = sample.labels.iter().map(|l| (l.key.clone(), unescape_label_value(&l.value))).collect();
                samples.push((name, labels, sample.value.value.as_f64()));
            }
        }
        Metrics { samples, text: text.to_string() }
    }

    /// The value of the one series named `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| *v)
            .collect();
        assert!(found.len() <= 1, "{name}{labels:?} matches {} series", found.len());
        found.first().copied()
    }

    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .count()
    }
}

/// The parser checks a label value's escapes but hands the value back as written; the
/// text format has three (`\\`, `\"`, `\n`).
fn unescape_label_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(escaped) => out.push(escaped),
            None => out.push(c),
        }
    }
    out
}

pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    out
}

/// One row of `kafka-consumer-groups --describe`.
#[derive(Debug, Clone, PartialEq)]
pub struct OracleRow {
    pub topic: String,
    pub partition: i32,
    pub current: Option<i64>,
    pub log_end: Option<i64>,
    pub lag: Option<i64>,
}

/// Kafka's own `kafka-consumer-groups --describe --group G`, parsed.
pub fn kafka_consumer_groups_describe(bootstrap: &str, group: &str) -> Vec<OracleRow> {
    let script = repo_root().join("stack/kafka-consumer-groups");
    let out = run(Command::new(&script).args(["--bootstrap-server", bootstrap, "--describe", "--group", group]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kafka-consumer-groups failed: {}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    let num = |s: &str| if s == "-" { None } else { Some(s.parse::<i64>().unwrap()) };
    let mut rows = Vec::new();
    for line in stdout.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 6 && cols[0] == group {
            rows.push(OracleRow {
                topic: cols[1].to_string(),
                partition: cols[2].parse().unwrap(),
                current: num(cols[3]),
                log_end: num(cols[4]),
                lag: num(cols[5]),
            });
        }
    }
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    rows
}

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs an instant query against the stack's Prometheus: (HTTP status, JSON body).
pub fn prometheus_query(expr: &str) -> (u16, serde_json::Value) {
    let port: u16 = std::env::var("PROMETHEUS_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9090);
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", urlencode(expr)));
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
}

impl Agent {
    /// `/api/v1/signals` with the given query string, parsed.
    pub fn signals(&self, query: &str) -> Vec<serde_json::Value> {
        let (status, body) = self.get(&format!("/api/v1/signals?{query}"));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["signals"].as_array().cloned().unwrap_or_default()
    }

    /// The one fresh series of `signal` whose labels include `labels`, if any.
    pub fn fresh(&self, signal: &str, target: &str, labels: &[(&str, &str)]) -> Option<serde_json::Value> {
        let found: Vec<serde_json::Value> = self
            .signals(&format!("signal={signal}&target={}", urlencode(target)))
            .into_iter()
            .filter(|s| s["quality"] == "fresh" && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .collect();
        assert!(found.len() <= 1, "{signal} {labels:?} matches {found:?}");
        found.into_iter().next()
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64
}

pub fn connect_url() -> String {
    std::env::var("CONNECT_URL").unwrap_or_else(|_| "http://127.0.0.1:8083".to_string())
}

/// A connector created on the real Connect worker; deleted on drop.
pub struct Connector {
    pub name: String,
}

impl Connector {
    pub fn create(name: &str, config: serde_json::Value) -> Connector {
        let url = format!("{}/connectors/{name}/config", connect_url());
        let (status, body) = block_on(async {
            let resp = reqwest::Client::new().put(&url).json(&config).send().await.expect("Connect REST reachable");
            (resp.status().as_u16(), resp.text().await.unwrap_or_default())
        });
        assert!(status == 200 || status == 201, "PUT {url}: {status} {body}");
        Connector { name: name.to_string() }
    }

    pub fn status(&self) -> serde_json::Value {
        let url = format!("{}/connectors/{}/status", connect_url(), self.name);
        block_on(async { reqwest::get(&url).await.unwrap().json().await.unwrap_or_default() })
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let url = format!("{}/connectors/{}", connect_url(), self.name);
        let _ = block_on(async { reqwest::Client::new().delete(&url).send().await });
    }
}

/// Produces raw string payloads to partition 0.
pub fn produce_payloads(bootstrap: &str, topic: &str, payloads: &[String]) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("producer");
    for p in payloads {
        producer.send(BaseRecord::<(), str>::to(topic).partition(0).payload(p.as_str())).expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// `promtool check metrics` (installed by `stack/deps`) accepts the exposition: no errors,
/// no lint warnings.
pub fn promtool_check_metrics(text: &str) {
    let promtool = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_string());
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (stack/deps installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}");
}

/// The value of a series from [`Agent::fresh`].
pub fn value(s: Option<serde_json::Value>) -> Option<f64> {
    s.and_then(|s| s["value"].as_f64())
}
