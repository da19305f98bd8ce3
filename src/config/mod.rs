//! The agent's configuration: a TOML file (`streamguard.toml`) merged with
//! `STREAMGUARD_*` environment overrides (figment), validated at load into typed values.
//!
//! Validation walks the merged tree itself instead of stopping at serde's first error,
//! so **every** problem is reported at once, each naming where it came from (the file,
//! or the environment variable) and the key:
//!
//! ```text
//! streamguard.toml: clusters[1].name: duplicate cluster name "prod" (first at clusters[0])
//! streamguard.toml: sample_intervall: unknown key (did you mean `sample_interval`?)
//! environment variable STREAMGUARD_SAMPLE_TIMEOUT: sample_timeout: invalid duration "5 parsecs": unknown time unit "parsecs" …
//! ```
//!
//! Only [`Config`] reaches the runtime; nothing downstream re-validates.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Profile, Provider};
use regex::Regex;

mod remediation;
pub mod secrets;
pub mod kafka_wire;
mod scale;
mod validate;
use validate::Validator;


/// Environment variables with this prefix override file keys; `__` separates nesting
/// (`STREAMGUARD_GROUPS__EXCLUDE`).
pub const ENV_PREFIX: &str = "STREAMGUARD_";
/// Variables under the prefix that belong to the CLI (and the remediation test hook,
/// `crate::remediate::executor`), not to the config tree.
const ENV_RESERVED: [&str; 5] = ["CONFIG", "LOG", "API_TOKEN", "TEST_PAUSE_AT", "TEST_PAUSE_FILE"];

/// One configuration problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or the environment variable, the bad value came from.
    pub origin: String,
    /// The key path, e.g. `clusters[0].sample_interval`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// Every problem found in one load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address for `/metrics`, `/healthz`, `/readyz`, `/api/v1`.
    pub listen: SocketAddr,
    pub clusters: Vec<ClusterConfig>,
    /// Kafka Connect clusters (REST).
    pub connect: Vec<HttpSourceConfig>,
    /// Flink clusters (REST).
    pub flink: Vec<HttpSourceConfig>,
    /// Prometheus servers with named instant queries.
    pub prometheus: Vec<PrometheusConfig>,
    pub dlq: DlqConfig,
    pub history: HistoryConfig,
    pub rules: RulesConfig,
    /// Where every stored observation is recorded for `streamguard replay` (`[record]`).
    pub record: Option<RecordConfig>,
    /// Where native alerts are sent (`[[alertmanagers]]`, `[notify]`).
    pub notify: NotifyConfig,
    /// Runbooks, the journal, the audit log, the API token (`[remediation]`); `None`:
    /// remediation is off (no runbook runs, not even in dry-run).
    pub remediation: Option<RemediationConfig>,
    /// Scaling targets (`[[scale]]`): what runbook `scale` steps change, and how.
    pub scale: Vec<crate::scale::config::ScaleTarget>,
    /// The file it was loaded from.
    pub path: PathBuf,
}

/// The `[remediation]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemediationConfig {
    /// The mode of runbooks that do not set one: `dry-run` (default), `act` or `approve`.
    pub default_mode: String,
    /// The write-ahead journal (relative paths are relative to the config file).
    pub journal: PathBuf,
    /// The audit log (JSONL), rotated at `audit_max_size` into `audit_max_files` files.
    pub audit: PathBuf,
    pub audit_max_size: u64,
    pub audit_max_files: usize,
    /// Runs in progress at once, all runbooks and targets together.
    pub max_concurrent_runs: usize,
    /// Verdicts waiting for the planner; beyond this they are dropped and counted.
    pub queue_capacity: usize,
    /// A run in `approve` mode not approved within this time expires.
    pub approval_timeout: Duration,
    /// The bearer token of the mutating API endpoints, read from this file...
    pub api_token_file: Option<PathBuf>,
    /// ... or from this environment variable. Neither: mutating endpoints are off.
    pub api_token_env: Option<String>,
}

/// Where rules live and how they are evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesConfig {
    /// Rule files or directories (relative paths are relative to the config file).
    pub paths: Vec<PathBuf>,
    pub evaluation_interval: Duration,
    /// A rule unknown (stale or missing data) this long raises `<rule>:unknown`.
    pub unknown_after: Duration,
    /// Confidence of trend tests (`slope`, `time_to_breach`).
    pub confidence: f64,
    /// SLO budgets survive restarts in this file (written atomically).
    pub state_file: PathBuf,
}

impl RulesConfig {
    /// No rule paths; a state file nobody writes (for tests of other parts).
    pub fn for_tests() -> Self {
        RulesConfig::defaults(Path::new("/nonexistent"))
    }

    fn defaults(base: &Path) -> Self {
        RulesConfig {
            paths: Vec::new(),
            evaluation_interval: Duration::from_secs(10),
            unknown_after: Duration::from_secs(600),
            confidence: 0.95,
            state_file: base.join("streamguard-state.json"),
        }
    }
}

/// Where native alerts go (Alertmanager API v2) and how they are re-sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// Every alert goes to each of these (none: alerts are only shown in `/metrics` and
    /// the API).
    pub alertmanagers: Vec<AlertmanagerConfig>,
    /// Firing alerts are re-sent this often, so an Alertmanager that restarted or missed
    /// a request learns them again (Prometheus' `--rules.alert.resend-delay`, 1m).
    pub resend_interval: Duration,
    /// Alerts waiting per Alertmanager; beyond this the oldest are dropped (and counted).
    pub queue_capacity: usize,
    /// This agent's base URL as people reach it: each alert's `generatorURL` points at
    /// `<external_url>/api/v1/rules`. Default: `http://<listen>`.
    pub external_url: String,
}

/// One Alertmanager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerConfig {
    /// Base URL without a trailing slash (`http://127.0.0.1:9093`); alerts are POSTed to
    /// `<url>/api/v2/alerts`.
    pub url: String,
    /// Budget of one request.
    pub timeout: Duration,
}

/// A source reached over HTTP (Kafka Connect, Flink).
#[derive(Debug, Clone)]
pub struct HttpSourceConfig {
    /// Unique within its kind, label-safe.
    pub name: String,
    /// Base URL, without a trailing slash (`http://127.0.0.1:8083`).
    pub url: String,
    pub sample_interval: Duration,
    pub sample_timeout: Duration,
    pub backoff_max: Duration,
}

impl HttpSourceConfig {
    pub fn stale_after(&self) -> Duration {
        self.sample_interval * 2 + self.sample_timeout
    }
}

/// A Prometheus server and the instant queries that become signals.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    pub source: HttpSourceConfig,
    pub queries: Vec<PromQuery>,
}

/// One named PromQL instant query; each result series becomes a series of `signal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromQuery {
    /// Signal name (`[a-z_][a-z0-9_]*`), unique, not a built-in signal.
    pub signal: String,
    pub query: String,
}

/// How dead-letter topics are matched to the pipeline they serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqConfig {
    /// Name patterns with `{topic}` (a consumed topic) or `{group}` (a consumer group).
    pub patterns: Vec<String>,
    /// Explicit mappings.
    pub topics: Vec<DlqMapping>,
}

/// An explicit dead-letter topic mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqMapping {
    /// Cluster of the DLQ topic; `None`: every cluster that has the topic.
    pub cluster: Option<String>,
    pub dlq_topic: String,
    /// The topic whose records fail into the DLQ.
    pub source_topic: String,
    /// The group consuming `source_topic`; `None`: every group consuming it.
    pub group: Option<String>,
}

/// Bounded per-series history and the windows computed over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Points older than this are dropped.
    pub retention: Duration,
    /// At most this many points per series.
    pub max_points: usize,
    /// Window of produce/consume/DLQ rates.
    pub rate_window: Duration,
    /// Window of the consumer group status evaluation.
    pub status_window: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention: Duration::from_secs(30 * 60),
            max_points: 720,
            rate_window: Duration::from_secs(60),
            status_window: Duration::from_secs(5 * 60),
        }
    }
}

/// Default DLQ name patterns.
pub const DEFAULT_DLQ_PATTERNS: [&str; 4] = ["{topic}.dlq", "{topic}-dlq", "dlq.{topic}", "dlq-{group}"];

/// Which groups to watch.
#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    pub include: Vec<regex::Regex>,
    pub exclude: Vec<regex::Regex>,
}

impl GroupFilter {
    /// A group is watched when it matches an include pattern (or there are none) and no
    /// exclude pattern.
    pub fn matches(&self, group: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(group)))
            && !self.exclude.iter().any(|r| r.is_match(group))
    }
}

/// The `[record]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    /// Directory of the segment files (created if needed).
    pub path: PathBuf,
    /// Largest total size of the segments, in bytes.
    pub max_size: u64,
    /// Segments that ended longer ago than this are deleted.
    pub max_age: Duration,
}

/// One Kafka cluster to watch. Its `Debug` hides secret property values.
#[derive(Clone)]
pub struct ClusterConfig {
    /// Unique, label-safe name (`[A-Za-z0-9_.-]+`).
    pub name: String,
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Pass-through librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*` …),
    /// with the values of `<property>_file` / `<property>_env` keys read in.
    pub properties: BTreeMap<String, String>,
    /// Properties whose value came from a file or a variable: re-read after an
    /// authentication failure, so a rotated secret is picked up without a restart.
    pub secret_sources: BTreeMap<String, secrets::SecretSource>,
    pub sample_interval: Duration,
    /// Budget for one whole sample (all admin calls of one cycle).
    pub sample_timeout: Duration,
    /// Longest wait between attempts while the cluster keeps failing.
    pub backoff_max: Duration,
    /// `ListConsumerGroupOffsets` requests kept in flight at once.
    pub offset_fetch_concurrency: usize,
    pub groups: GroupFilter,
    /// Lagging partitions whose committed record's timestamp is read per cycle (exact
    /// time lag); 0 disables the probe.
    pub probe_budget: usize,
    /// Time the probe may spend per sample, always less than `sample_timeout`, so a
    /// probe that cannot read (an open transaction, a slow leader) never makes the
    /// whole sample time out. Default: half the sample timeout, at most 2 s.
    pub probe_timeout: Duration,
    /// Which client samples offsets and groups: the direct protocol client or librdkafka.
    pub sampler: SamplerChoice,
}

/// `sampler = "auto" | "direct" | "librdkafka"` of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SamplerChoice {
    /// The direct client where it can serve the cluster's properties and brokers,
    /// librdkafka otherwise (decided per cluster, and said so).
    #[default]
    Auto,
    /// The direct client only; `check` refuses properties it cannot honour.
    Direct,
    /// librdkafka only (the path before the direct client existed).
    Librdkafka,
}

impl SamplerChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerChoice::Auto => "auto",
            SamplerChoice::Direct => "direct",
            SamplerChoice::Librdkafka => "librdkafka",
        }
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("name", &self.name)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &secrets::redacted(&self.properties))
            .field("secret_sources", &self.secret_sources)
            .field("sample_interval", &self.sample_interval)
            .field("sample_timeout", &self.sample_timeout)
            .field("backoff_max", &self.backoff_max)
            .field("offset_fetch_concurrency", &self.offset_fetch_concurrency)
            .field("groups", &self.groups)
            .field("probe_budget", &self.probe_budget)
            .field("probe_timeout", &self.probe_timeout)
            .finish()
    }
}

impl ClusterConfig {
    /// Data older than this is stale even if no attempt failed (the loop is stuck).
    pub fn stale_after(&self) -> Duration {
        self.sample_interval * 2 + self.sample_timeout
    }
}

const DEFAULT_LISTEN: &str = "127.0.0.1:9898";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
const DEFAULT_OFFSET_FETCH_CONCURRENCY: usize = 16;
const DEFAULT_PROBE_BUDGET: usize = 50;
const MAX_DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_NOTIFY_QUEUE_CAPACITY: usize = 10_000;

/// Half the sample timeout, at most 2 s. Pure.
pub fn default_probe_timeout(sample_timeout: Duration) -> Duration {
    (sample_timeout / 2).min(MAX_DEFAULT_PROBE_TIMEOUT)
}

const TOP_KEYS: [&str; 18] = [
    "remediation",
    "scale",
    "record",
    "rules",
    "alertmanagers",
    "notify",
    "listen",
    "sample_interval",
    "sample_timeout",
    "backoff_max",
    "offset_fetch_concurrency",
    "groups",
    "clusters",
    "connect",
    "flink",
    "prometheus",
    "dlq",
    "history",
];
const HTTP_SOURCE_KEYS: [&str; 5] = ["name", "url", "sample_interval", "sample_timeout", "backoff_max"];
const PROMETHEUS_KEYS: [&str; 6] = ["name", "url", "sample_interval", "sample_timeout", "backoff_max", "queries"];
const QUERY_KEYS: [&str; 2] = ["signal", "query"];
const DLQ_KEYS: [&str; 2] = ["patterns", "topics"];
const DLQ_TOPIC_KEYS: [&str; 4] = ["cluster", "dlq_topic", "source_topic", "group"];
const HISTORY_KEYS: [&str; 4] = ["retention", "max_points", "rate_window", "status_window"];
const RULES_KEYS: [&str; 5] = ["paths", "evaluation_interval", "unknown_after", "confidence", "state_file"];
const CLUSTER_KEYS: [&str; 11] = [
    "sampler",
    "probe_budget",
    "probe_timeout",
    "name",
    "bootstrap_servers",
    "properties",
    "sample_interval",
    "sample_timeout",
    "backoff_max",
    "offset_fetch_concurrency",
    "groups",
];
const NOTIFY_KEYS: [&str; 4] = ["resend_interval", "timeout", "queue_capacity", "external_url"];
const ALERTMANAGER_KEYS: [&str; 2] = ["url", "timeout"];
const GROUP_KEYS: [&str; 2] = ["include", "exclude"];
const RECORD_KEYS: [&str; 3] = ["path", "max_size", "max_age"];
const DEFAULT_RECORD_MAX_SIZE: u64 = 1 << 30;
const DEFAULT_RECORD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// A recording smaller than this could not hold one sample of a busy cluster.
const MIN_RECORD_MAX_SIZE: u64 = 64 * 1024;

/// A size such as `1073741824`, `"512MiB"`, `"1GB"`, `"64KiB"`. Pure.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}
/// Properties the agent owns; setting them through `properties` would break sampling.
const RESERVED_PROPERTIES: [&str; 3] = ["bootstrap.servers", "group.id", "enable.auto.commit"];

/// Loads and validates `path` plus the environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, Env::prefixed(ENV_PREFIX).ignore(&ENV_RESERVED).split("__"))
}

/// As [`load`], with the environment provider given (tests use `Env::raw()` subsets).
pub fn load_with_env(path: &Path, env: Env) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let fail = |message: String| ConfigErrors(vec![ConfigError { origin: origin.clone(), key: String::new(), message }]);
    if !path.is_file() {
        return Err(fail("cannot read config file: no such file".into()));
    }
    let figment = Figment::new().merge(Toml::file_exact(path)).merge(env);
    let mut data = figment.data().map_err(|e| fail(e.to_string()))?;
    let dict = data.remove(&Profile::Default).unwrap_or_default();
    let mut v = Validator { figment: &figment, default_origin: origin, errors: Vec::new() };
    let config = v.config(&dict, path);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

/// Names of every cluster, for messages.
pub fn cluster_names(config: &Config) -> BTreeSet<&str> {
    config.clusters.iter().map(|c| c.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_str(toml: &str) -> Result<Config, ConfigErrors> {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        load_with_env(f.path(), Env::prefixed("STREAMGUARD_TEST_UNUSED_"))
    }

    fn messages(toml: &str) -> Vec<String> {
        load_str(toml).unwrap_err().0.into_iter().map(|e| format!("{}: {}", e.key, e.message)).collect()
    }

    #[test]
    fn a_minimal_file_gets_defaults() {
        let c = load_str("[[clusters]]\nname = \"local\"\nbootstrap_servers = \"127.0.0.1:9092\"\n").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.clusters[0].sample_interval, DEFAULT_INTERVAL);
        assert_eq!(c.clusters[0].sample_timeout, DEFAULT_TIMEOUT);
        assert!(c.clusters[0].groups.matches("any"));
    }

    #[test]
    fn clusters_inherit_top_level_settings_and_override_them() {
        let c = load_str(
            r#"
sample_interval = "30s"
sample_timeout = "10s"
groups = { exclude = ["^_"] }
[[clusters]]
name = "a"
bootstrap_servers = ["h1:9092", "h2:9092"]
[[clusters]]
name = "b"
bootstrap_servers = "h3:9092"
sample_interval = "1m"
offset_fetch_concurrency = 4
properties = { "security.protocol" = "SASL_SSL", sasl.mechanism = "PLAIN", "socket.timeout.ms" = 5000 }
"#,
        )
        .unwrap();
        assert_eq!(c.clusters[0].bootstrap_servers, "h1:9092,h2:9092");
        assert_eq!(c.clusters[0].sample_interval, Duration::from_secs(30));
        assert!(!c.clusters[0].groups.matches("_internal"));
        assert_eq!(c.clusters[1].sample_interval, Duration::from_secs(60));
        assert_eq!(c.clusters[1].sample_timeout, Duration::from_secs(10));
        assert_eq!(c.clusters[0].offset_fetch_concurrency, DEFAULT_OFFSET_FETCH_CONCURRENCY);
        assert_eq!(c.clusters[1].offset_fetch_concurrency, 4);
        assert_eq!(c.clusters[1].properties["security.protocol"], "SASL_SSL");
        assert_eq!(c.clusters[1].properties["sasl.mechanism"], "PLAIN");
        assert_eq!(c.clusters[1].properties["socket.timeout.ms"], "5000");
    }

    #[test]
    fn every_kind_of_error_is_reported_at_once_with_its_key() {
        let m = messages(
            r#"
sample_intervall = "10s"
sample_timeout = "5 parsecs"
listen = "nowhere"
offset_fetch_concurrency = 0
groups = { include = ["(unclosed"] }
[[clusters]]
name = "prod"
bootstrap_servers = "h:9092"
[[clusters]]
name = "prod"
bootstrap_servers = "h:9093"
properties = { "group.id" = "x" }
"#,
        );
        let has = |key: &str, text: &str| m.iter().any(|l| l.starts_with(key) && l.contains(text));
        assert!(has("sample_intervall:", "did you mean `sample_interval`"), "{m:#?}");
        assert!(has("sample_timeout:", "invalid duration \"5 parsecs\""), "{m:#?}");
        assert!(has("listen:", "invalid address"), "{m:#?}");
        assert!(has("offset_fetch_concurrency:", "expected a positive integer"), "{m:#?}");
        assert!(has("groups.include[0]:", "invalid regex"), "{m:#?}");
        assert!(has("clusters[1].name:", "duplicate cluster name \"prod\""), "{m:#?}");
        assert!(has("clusters[1].properties.\"group.id\":", "set by streamguard"), "{m:#?}");
        assert_eq!(m.len(), 7, "{m:#?}");
    }

    #[test]
    fn the_sampler_key_is_validated_and_direct_is_refused_where_the_direct_client_cannot_serve() {
        let m = messages(
            r#"
[[clusters]]
name = "a"
bootstrap_servers = "h:9092"
sampler = "fast"
[[clusters]]
name = "b"
bootstrap_servers = "h:9092"
sampler = "direct"
properties = { "security.protocol" = "SASL_SSL", "sasl.mechanism" = "GSSAPI" }
[[clusters]]
name = "c"
bootstrap_servers = "h:9092"
sampler = "auto"
properties = { "security.protocol" = "SASL_SSL", "sasl.mechanism" = "GSSAPI" }
"#,
        );
        let has = |key: &str, text: &str| m.iter().any(|l| l.starts_with(key) && l.contains(text));
        assert!(has("clusters[0].sampler:", "expected \"auto\", \"direct\" or \"librdkafka\""), "{m:#?}");
        assert!(has("clusters[1].sampler:", "GSSAPI"), "{m:#?}");
        assert_eq!(m.len(), 2, "auto falls back instead: {m:#?}");
        let c = load_str(
            "[[clusters]]\nname = \"a\"\nbootstrap_servers = \"h:1\"\n[[clusters]]\nname = \"b\"\nbootstrap_servers = \"h:1\"\nsampler = \"librdkafka\"\n",
        )
        .unwrap();
        assert_eq!(c.clusters[0].sampler, SamplerChoice::Auto);
        assert_eq!(c.clusters[1].sampler, SamplerChoice::Librdkafka);
    }

    #[test]
    fn errors_name_the_file() {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(b"[[clusters]]\nname = \"a\"\nbootstrap_servers = \"h:1\"\nsample_interval = 10\n").unwrap();
        let errs = load_with_env(f.path(), Env::prefixed("STREAMGUARD_TEST_UNUSED_")).unwrap_err();
        let line = errs.to_string();
        assert!(line.starts_with(&format!("{}: clusters[0].sample_interval: expected a duration", f.path().display())), "{line}");
    }

    #[test]
    fn missing_clusters_and_missing_file_are_errors() {
        assert!(messages("listen = \"127.0.0.1:1\"\n").iter().any(|l| l.starts_with("clusters:")));
        let e = load(Path::new("/nonexistent/streamguard.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/streamguard.toml: cannot read config file"));
    }

    #[test]
    fn timeout_longer_than_interval_is_rejected() {
        let m = messages("sample_interval = \"5s\"\nsample_timeout = \"10s\"\n[[clusters]]\nname = \"a\"\nbootstrap_servers = \"h:1\"\n");
        assert!(m.iter().any(|l| l.starts_with("sample_timeout:") && l.contains("must not exceed")), "{m:#?}");
    }

    #[test]
    fn alertmanagers_get_defaults_and_inherit_the_notify_timeout() {
        let c = load_str(
            r#"
listen = "127.0.0.1:9999"
[notify]
timeout = "3s"
[[clusters]]
name = "a"
bootstrap_servers = "h:1"
[[alertmanagers]]
url = "http://127.0.0.1:9094/"
[[alertmanagers]]
url = "https://am.example/prefix"
timeout = "5s"
"#,
        )
        .unwrap();
        let n = &c.notify;
        assert_eq!(n.resend_interval, DEFAULT_RESEND_INTERVAL);
        assert_eq!(n.queue_capacity, DEFAULT_NOTIFY_QUEUE_CAPACITY);
        assert_eq!(n.external_url, "http://127.0.0.1:9999");
        assert_eq!(n.alertmanagers[0], AlertmanagerConfig { url: "http://127.0.0.1:9094".into(), timeout: Duration::from_secs(3) });
        assert_eq!(n.alertmanagers[1], AlertmanagerConfig { url: "https://am.example/prefix".into(), timeout: Duration::from_secs(5) });
        assert!(load_str("[[clusters]]\nname = \"a\"\nbootstrap_servers = \"h:1\"\n").unwrap().notify.alertmanagers.is_empty());
    }

    #[test]
    fn every_notify_error_is_reported_with_its_key() {
        let m = messages(
            r#"
[notify]
resend_interval = "30s"
queue_capacity = 0
external_url = "streamguard:9898"
resend_intervall = "1m"
[[clusters]]
name = "a"
bootstrap_servers = "h:1"
[[alertmanagers]]
url = "http://am:9093/api/v2/alerts"
[[alertmanagers]]
url = "ftp://am"
timeout = "1m"
[[alertmanagers]]
timeout = "1s"
[[alertmanagers]]
url = "http://b:9093"
tls = true
[[alertmanagers]]
url = "http://b:9093/"
"#,
        );
        let has = |key: &str, text: &str| m.iter().any(|l| l.starts_with(key) && l.contains(text));
        assert!(has("notify.queue_capacity:", "positive integer"), "{m:#?}");
        assert!(has("notify.external_url:", "invalid URL"), "{m:#?}");
        assert!(has("notify.resend_intervall:", "did you mean `resend_interval`"), "{m:#?}");
        assert!(has("alertmanagers[0].url:", "give the base URL"), "{m:#?}");
        assert!(has("alertmanagers[1].url:", "invalid URL \"ftp://am\""), "{m:#?}");
        assert!(has("alertmanagers[1].timeout:", "must not exceed notify.resend_interval (30s)"), "{m:#?}");
        assert!(has("alertmanagers[2].url:", "missing"), "{m:#?}");
        assert!(has("alertmanagers[3].tls:", "unknown key"), "{m:#?}");
        assert!(has("alertmanagers[4].url:", "duplicate Alertmanager \"http://b:9093\" (first at alertmanagers[3])"), "{m:#?}");
        assert_eq!(m.len(), 9, "{m:#?}");
    }

    #[test]
    fn toml_syntax_errors_are_reported_with_the_file() {
        let errs = load_str("[[clusters]\nname=").unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert!(errs.to_string().contains("line"), "{errs}");
    }

    #[test]
    fn filter_applies_include_then_exclude() {
        let f = GroupFilter {
            include: vec![regex::Regex::new("^pay").unwrap()],
            exclude: vec![regex::Regex::new("test$").unwrap()],
        };
        assert!(f.matches("payments"));
        assert!(!f.matches("payments-test"));
        assert!(!f.matches("orders"));
        assert!(GroupFilter::default().matches("anything"));
    }
}
