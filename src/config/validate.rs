//! The validator behind [`super::load`]: walks the merged figment tree key by key, so
//! every error is reported at once with its file (or environment variable) and key, and
//! turns raw values into the typed configuration. `check` and `run` both go through it.
//!
//! Longer than most files on purpose: one method per config section, all sharing the
//! error sink and the origin lookup; split by section it would only scatter them.

use super::*;

pub(super) struct Validator<'a> {
    pub(super) figment: &'a Figment,
    pub(super) default_origin: String,
    pub(super) errors: Vec<ConfigError>,
}

/// Settings that a cluster inherits from the top level.
#[derive(Clone)]
struct Inherited {
    interval: Duration,
    timeout: Duration,
    backoff_max: Duration,
    concurrency: usize,
    groups: GroupFilter,
}

impl Validator<'_> {
    pub(super) fn origin(&self, value: Option<&Value>) -> String {
        let Some(meta) = value.and_then(|v| self.figment.get_metadata(v.tag())) else {
            return self.default_origin.clone();
        };
        match &meta.source {
            Some(figment::Source::File(p)) => p.display().to_string(),
            _ if meta.name.contains("environment") => "environment".to_string(),
            _ => meta.name.to_string(),
        }
    }

    pub(super) fn error(&mut self, value: Option<&Value>, key: &str, message: impl Into<String>) {
        let mut origin = self.origin(value);
        if origin == "environment" {
            origin = format!("environment variable {ENV_PREFIX}{}", env_name(key));
        }
        self.errors.push(ConfigError { origin, key: key.to_string(), message: message.into() });
    }

    pub(super) fn unknown_keys(&mut self, dict: &Dict, prefix: &str, known: &[&str]) {
        for (k, v) in dict {
            if !known.contains(&k.as_str()) {
                let hint = match crate::suggest::nearest(k, known.iter().copied()) {
                    Some(s) => format!(" (did you mean `{s}`?)"),
                    None => format!(" (known keys: {})", known.join(", ")),
                };
                self.error(Some(v), &join(prefix, k), format!("unknown key{hint}"));
            }
        }
    }

    pub(super) fn config(&mut self, dict: &Dict, path: &Path) -> Config {
        self.unknown_keys(dict, "", &TOP_KEYS);
        let listen = self
            .string(dict, "", "listen")
            .and_then(|(s, v)| match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    self.error(Some(v), "listen", format!("invalid address {s:?}: {e} (expected host:port, e.g. 127.0.0.1:9898)"));
                    None
                }
            })
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default listen address"));
        let top = self.inherited(dict, "", None);
        let clusters = self.tables(dict, "clusters", |v, c, prefix| v.cluster(c, prefix, &top));
        let connect = self.tables(dict, "connect", |v, c, prefix| v.http_source(c, prefix, &top, &HTTP_SOURCE_KEYS));
        let flink = self.tables(dict, "flink", |v, c, prefix| v.http_source(c, prefix, &top, &HTTP_SOURCE_KEYS));
        let prometheus = self.tables(dict, "prometheus", |v, c, prefix| v.prometheus(c, prefix, &top));
        if clusters.is_empty() && connect.is_empty() && flink.is_empty() && prometheus.is_empty() && self.errors.is_empty() {
            self.error(
                dict.get("clusters"),
                "clusters",
                "no sources: configure at least one [[clusters]], [[connect]], [[flink]] or [[prometheus]]",
            );
        }
        self.unique_names(&clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), dict, "clusters");
        self.unique_names(&connect.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), dict, "connect");
        self.unique_names(&flink.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), dict, "flink");
        self.unique_names(&prometheus.iter().map(|c| c.source.name.as_str()).collect::<Vec<_>>(), dict, "prometheus");
        self.unique_signals(&prometheus, dict);
        let dlq = self.dlq(dict);
        let history = self.history(dict);
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let rules = self.rules(dict, &base);
        let record = self.record(dict, &base);
        let notify = self.notify(dict, listen);
        let remediation = self.remediation(dict, &base);
        let scale = self.scale(dict, &base, &clusters);
        Config { listen, clusters, connect, flink, prometheus, dlq, history, rules, record, notify, remediation, scale, path: path.to_path_buf() }
    }

    /// Validates an array of tables under `key` with `each`; bad entries are reported
    /// and skipped.
    fn tables<T>(&mut self, dict: &Dict, key: &str, mut each: impl FnMut(&mut Self, &Dict, &str) -> Option<T>) -> Vec<T> {
        let mut out = Vec::new();
        match dict.get(key) {
            None => {}
            Some(Value::Array(_, items)) => {
                for (i, item) in items.iter().enumerate() {
                    let prefix = format!("{key}[{i}]");
                    match item {
                        Value::Dict(_, c) => out.extend(each(self, c, &prefix)),
                        _ => self.error(Some(item), &prefix, format!("expected a table ([[{key}]])")),
                    }
                }
            }
            Some(other) => self.error(Some(other), key, format!("expected an array of tables ([[{key}]])")),
        }
        out
    }

    /// Reports the second and later uses of a name within one kind of source.
    fn unique_names(&mut self, names: &[&str], dict: &Dict, key: &str) {
        let items = match dict.get(key) {
            Some(Value::Array(_, items)) => items.as_slice(),
            _ => &[],
        };
        // Names are compared on the validated entries, whose order matches the file
        // except for skipped bad entries: locate each by its `name` value in the file.
        let mut first: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Dict(_, c) = item else { continue };
            let Some(name) = c.get("name").and_then(|v| v.as_str()) else { continue };
            if !names.contains(&name) {
                continue;
            }
            match first.get(name) {
                Some(f) => self.error(
                    c.get("name"),
                    &format!("{key}[{i}].name"),
                    format!("duplicate {} name {name:?} (first at {key}[{f}])", if key == "clusters" { "cluster" } else { key }),
                ),
                None => {
                    first.insert(name, i);
                }
            }
        }
    }

    fn unique_signals(&mut self, prometheus: &[PrometheusConfig], dict: &Dict) {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for (i, p) in prometheus.iter().enumerate() {
            for (j, q) in p.queries.iter().enumerate() {
                if !seen.insert(q.signal.as_str()) {
                    let key = format!("prometheus[{i}].queries[{j}].signal");
                    self.error(dict.get("prometheus"), &key, format!("signal {:?} is defined twice", q.signal));
                }
            }
        }
    }

    fn name(&mut self, c: &Dict, prefix: &str) -> Option<String> {
        let name_key = join(prefix, "name");
        match self.string(c, prefix, "name") {
            Some((n, v)) if n.is_empty() || !n.chars().all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch)) => {
                self.error(Some(v), &name_key, format!("invalid name {n:?}: use letters, digits, `_`, `.`, `-`"));
                None
            }
            Some((n, _)) => Some(n.to_string()),
            None => {
                if !c.contains_key("name") {
                    self.error(None, &name_key, "missing (every source needs a unique name)");
                }
                None
            }
        }
    }

    fn http_source(&mut self, c: &Dict, prefix: &str, top: &Inherited, keys: &[&str]) -> Option<HttpSourceConfig> {
        self.unknown_keys(c, prefix, keys);
        let name = self.name(c, prefix);
        let url_key = join(prefix, "url");
        let url = match self.string(c, prefix, "url") {
            Some((u, v)) => {
                let u = u.trim_end_matches('/');
                if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() <= "http://".len() {
                    self.error(Some(v), &url_key, format!("invalid URL {u:?}: expected http://host:port or https://…"));
                    None
                } else {
                    Some(u.to_string())
                }
            }
            None => {
                if !c.contains_key("url") {
                    self.error(None, &url_key, "missing (e.g. \"http://127.0.0.1:8083\")");
                }
                None
            }
        };
        let settings = self.inherited(c, prefix, Some(top));
        Some(HttpSourceConfig {
            name: name?,
            url: url?,
            sample_interval: settings.interval,
            sample_timeout: settings.timeout,
            backoff_max: settings.backoff_max,
        })
    }

    fn prometheus(&mut self, c: &Dict, prefix: &str, top: &Inherited) -> Option<PrometheusConfig> {
        let source = self.http_source(c, prefix, top, &PROMETHEUS_KEYS);
        let queries = self.tables(c, "queries", |v, q, qprefix| {
            let qprefix = format!("{prefix}.{qprefix}");
            v.unknown_keys(q, &qprefix, &QUERY_KEYS);
            let signal = match v.string(q, &qprefix, "signal") {
                Some((s, val)) => {
                    let ok = s.chars().next().is_some_and(|ch| ch.is_ascii_lowercase() || ch == '_')
                        && s.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
                    if !ok {
                        v.error(Some(val), &join(&qprefix, "signal"), format!("invalid signal name {s:?}: use [a-z_][a-z0-9_]*"));
                        None
                    } else if crate::catalog::find(s).is_some() {
                        v.error(Some(val), &join(&qprefix, "signal"), format!("{s:?} is a built-in signal; pick another name"));
                        None
                    } else {
                        Some(s.to_string())
                    }
                }
                None => {
                    if !q.contains_key("signal") {
                        v.error(None, &join(&qprefix, "signal"), "missing");
                    }
                    None
                }
            };
            let query = match v.string(q, &qprefix, "query") {
                Some((s, _)) if !s.trim().is_empty() => Some(s.to_string()),
                Some((_, val)) => {
                    v.error(Some(val), &join(&qprefix, "query"), "empty query");
                    None
                }
                None => {
                    if !q.contains_key("query") {
                        v.error(None, &join(&qprefix, "query"), "missing");
                    }
                    None
                }
            };
            Some(PromQuery { signal: signal?, query: query? })
        });
        Some(PrometheusConfig { source: source?, queries })
    }

    fn dlq(&mut self, dict: &Dict) -> DlqConfig {
        let mut out = DlqConfig { patterns: DEFAULT_DLQ_PATTERNS.iter().map(|p| p.to_string()).collect(), topics: Vec::new() };
        let d = match dict.get("dlq") {
            None => return out,
            Some(Value::Dict(_, d)) => d,
            Some(v) => {
                self.error(Some(v), "dlq", "expected a table ([dlq])");
                return out;
            }
        };
        self.unknown_keys(d, "dlq", &DLQ_KEYS);
        match d.get("patterns") {
            None => {}
            Some(Value::Array(_, items)) => {
                out.patterns.clear();
                for (i, item) in items.iter().enumerate() {
                    let key = format!("dlq.patterns[{i}]");
                    match item.as_str() {
                        Some(p) if p.contains("{topic}") || p.contains("{group}") => out.patterns.push(p.to_string()),
                        Some(p) => self.error(Some(item), &key, format!("pattern {p:?} names neither {{topic}} nor {{group}}")),
                        None => self.error(Some(item), &key, "expected a string"),
                    }
                }
            }
            Some(v) => self.error(Some(v), "dlq.patterns", "expected a list of patterns such as \"{topic}.dlq\""),
        }
        out.topics = self.tables(d, "topics", |v, t, prefix| {
            let prefix = format!("dlq.{prefix}");
            v.unknown_keys(t, &prefix, &DLQ_TOPIC_KEYS);
            let req = |v: &mut Self, k: &str| match v.string(t, &prefix, k) {
                Some((s, _)) => Some(s.to_string()),
                None => {
                    if !t.contains_key(k) {
                        v.error(None, &join(&prefix, k), "missing");
                    }
                    None
                }
            };
            let dlq_topic = req(v, "dlq_topic");
            let source_topic = req(v, "source_topic");
            let cluster = v.string(t, &prefix, "cluster").map(|(s, _)| s.to_string());
            let group = v.string(t, &prefix, "group").map(|(s, _)| s.to_string());
            Some(DlqMapping { cluster, dlq_topic: dlq_topic?, source_topic: source_topic?, group })
        });
        out
    }

    fn rules(&mut self, dict: &Dict, base: &Path) -> RulesConfig {
        let mut r = RulesConfig::defaults(base);
        let d = match dict.get("rules") {
            None => return r,
            Some(Value::Dict(_, d)) => d,
            Some(v) => {
                self.error(Some(v), "rules", "expected a table ([rules])");
                return r;
            }
        };
        self.unknown_keys(d, "rules", &RULES_KEYS);
        match d.get("paths") {
            None => {}
            Some(Value::Array(_, items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(p) => r.paths.push(base.join(p)),
                        None => self.error(Some(item), &format!("rules.paths[{i}]"), "expected a path"),
                    }
                }
            }
            Some(v) => self.error(Some(v), "rules.paths", "expected a list of files or directories"),
        }
        if let Some(v) = self.duration(d, "rules", "evaluation_interval") {
            r.evaluation_interval = v;
        }
        if let Some(v) = self.duration(d, "rules", "unknown_after") {
            r.unknown_after = v;
        }
        if let Some(v) = d.get("confidence") {
            match v.to_f64().or_else(|| v.to_i128().map(|i| i as f64)) {
                Some(c) if c > 0.5 && c < 1.0 => r.confidence = c,
                _ => self.error(Some(v), "rules.confidence", "expected a number between 0.5 and 1 (e.g. 0.95)"),
            }
        }
        if let Some((p, _)) = self.string(d, "rules", "state_file") {
            r.state_file = base.join(p);
        }
        r
    }

    /// `[notify]` and `[[alertmanagers]]`. Each Alertmanager's `timeout` defaults to
    /// `notify.timeout` and must not exceed `notify.resend_interval` (a request that
    /// outlives it would delay the next resend).
    fn notify(&mut self, dict: &Dict, listen: SocketAddr) -> NotifyConfig {
        let mut n = NotifyConfig {
            alertmanagers: Vec::new(),
            resend_interval: DEFAULT_RESEND_INTERVAL,
            queue_capacity: DEFAULT_NOTIFY_QUEUE_CAPACITY,
            external_url: format!("http://{listen}"),
        };
        let mut timeout = DEFAULT_NOTIFY_TIMEOUT;
        let empty = Dict::new();
        let d = match dict.get("notify") {
            None => &empty,
            Some(Value::Dict(_, d)) => d,
            Some(v) => {
                self.error(Some(v), "notify", "expected a table ([notify])");
                &empty
            }
        };
        self.unknown_keys(d, "notify", &NOTIFY_KEYS);
        if let Some(v) = self.duration(d, "notify", "resend_interval") {
            n.resend_interval = v;
        }
        if let Some(v) = self.duration(d, "notify", "timeout") {
            timeout = v;
        }
        if let Some(v) = self.positive(d, "notify", "queue_capacity") {
            n.queue_capacity = v;
        }
        if let Some(u) = self.http_url(d, "notify", "external_url") {
            n.external_url = u;
        }
        let resend = n.resend_interval;
        let check_timeout = |v: &mut Self, t: Duration, value: Option<&Value>, key: &str| {
            if t > resend {
                v.error(
                    value,
                    key,
                    format!(
                        "timeout ({}) must not exceed notify.resend_interval ({})",
                        humantime::format_duration(t),
                        humantime::format_duration(resend)
                    ),
                );
            }
        };
        if timeout > resend {
            let key = if d.contains_key("timeout") { "timeout" } else { "resend_interval" };
            check_timeout(self, timeout, d.get(key), &join("notify", key));
        }
        n.alertmanagers = self.tables(dict, "alertmanagers", |v, a, prefix| {
            v.unknown_keys(a, prefix, &ALERTMANAGER_KEYS);
            let url = v.http_url(a, prefix, "url");
            if url.is_none() && !a.contains_key("url") {
                v.error(None, &join(prefix, "url"), "missing (e.g. \"http://127.0.0.1:9093\")");
            }
            let own = v.duration(a, prefix, "timeout");
            if let Some(t) = own {
                check_timeout(v, t, a.get("timeout"), &join(prefix, "timeout"));
            }
            Some(AlertmanagerConfig { url: url?, timeout: own.unwrap_or(timeout) })
        });
        let items = match dict.get("alertmanagers") {
            Some(Value::Array(_, items)) => items.as_slice(),
            _ => &[],
        };
        let mut first: BTreeMap<String, usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Dict(_, a) = item else { continue };
            let Some(url) = a.get("url").and_then(|v| v.as_str()) else { continue };
            let url = url.trim_end_matches('/').to_string();
            match first.get(&url) {
                Some(f) => self.error(
                    a.get("url"),
                    &format!("alertmanagers[{i}].url"),
                    format!("duplicate Alertmanager {url:?} (first at alertmanagers[{f}]); each gets every alert already"),
                ),
                None => {
                    first.insert(url, i);
                }
            }
        }
        n
    }

    /// An `http://` or `https://` base URL, trailing slashes removed.
    fn http_url(&mut self, dict: &Dict, prefix: &str, name: &str) -> Option<String> {
        let (u, v) = self.string(dict, prefix, name)?;
        let u = u.trim_end_matches('/');
        let key = join(prefix, name);
        let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') && !u.contains('?') && !u.contains('#') => {
                if u.ends_with("/api/v2/alerts") || u.ends_with("/api/v2") {
                    self.error(Some(v), &key, format!("{u:?}: give the base URL; streamguard adds /api/v2/alerts"));
                    return None;
                }
                Some(u.to_string())
            }
            _ => {
                self.error(Some(v), &key, format!("invalid URL {u:?}: expected http://host:port or https://host[/path]"));
                None
            }
        }
    }

    fn history(&mut self, dict: &Dict) -> HistoryConfig {
        let mut h = HistoryConfig::default();
        let d = match dict.get("history") {
            None => return h,
            Some(Value::Dict(_, d)) => d,
            Some(v) => {
                self.error(Some(v), "history", "expected a table ([history])");
                return h;
            }
        };
        self.unknown_keys(d, "history", &HISTORY_KEYS);
        if let Some(v) = self.duration(d, "history", "retention") {
            h.retention = v;
        }
        if let Some(v) = self.positive(d, "history", "max_points") {
            h.max_points = v;
        }
        if let Some(v) = self.duration(d, "history", "rate_window") {
            h.rate_window = v;
        }
        if let Some(v) = self.duration(d, "history", "status_window") {
            h.status_window = v;
        }
        for (key, w) in [("rate_window", h.rate_window), ("status_window", h.status_window)] {
            if w > h.retention {
                self.error(
                    d.get(key),
                    &format!("history.{key}"),
                    format!(
                        "window ({}) is longer than history.retention ({})",
                        humantime::format_duration(w),
                        humantime::format_duration(h.retention)
                    ),
                );
            }
        }
        h
    }

    fn inherited(&mut self, dict: &Dict, prefix: &str, parent: Option<&Inherited>) -> Inherited {
        let interval = self.duration(dict, prefix, "sample_interval");
        let timeout = self.duration(dict, prefix, "sample_timeout");
        let backoff_max = self.duration(dict, prefix, "backoff_max");
        let concurrency = self.positive(dict, prefix, "offset_fetch_concurrency");
        let groups = self.groups(dict, prefix);
        let base = parent.cloned().unwrap_or(Inherited {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            backoff_max: DEFAULT_BACKOFF_MAX,
            concurrency: DEFAULT_OFFSET_FETCH_CONCURRENCY,
            groups: GroupFilter::default(),
        });
        let out = Inherited {
            interval: interval.unwrap_or(base.interval),
            timeout: timeout.unwrap_or(base.timeout),
            backoff_max: backoff_max.unwrap_or(base.backoff_max),
            concurrency: concurrency.unwrap_or(base.concurrency),
            groups: groups.unwrap_or(base.groups),
        };
        // A cluster repeats the check only for values it sets itself, so one bad
        // top-level pair is reported once.
        let own = parent.is_none() || interval.is_some() || timeout.is_some();
        if own && out.timeout > out.interval {
            let key = if timeout.is_some() { "sample_timeout" } else { "sample_interval" };
            self.error(
                dict.get(key),
                &join(prefix, key),
                format!(
                    "sample_timeout ({}) must not exceed sample_interval ({})",
                    humantime::format_duration(out.timeout),
                    humantime::format_duration(out.interval)
                ),
            );
        }
        out
    }

    fn cluster(&mut self, c: &Dict, prefix: &str, top: &Inherited) -> Option<ClusterConfig> {
        self.unknown_keys(c, prefix, &CLUSTER_KEYS);
        let name = self.name(c, prefix);
        let bs_key = join(prefix, "bootstrap_servers");
        let bootstrap = match c.get("bootstrap_servers") {
            None => {
                self.error(None, &bs_key, "missing (e.g. \"127.0.0.1:9092\")");
                None
            }
            Some(Value::String(_, s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::Array(_, items)) if !items.is_empty() => {
                let hosts: Option<Vec<String>> = items.iter().map(|i| i.as_str().map(str::to_string)).collect();
                if hosts.is_none() {
                    self.error(c.get("bootstrap_servers"), &bs_key, "expected strings \"host:port\"");
                }
                hosts.map(|h| h.join(","))
            }
            Some(v) => {
                self.error(Some(v), &bs_key, "expected \"host:port[,host:port…]\" or an array of them");
                None
            }
        };
        let (properties, secret_sources) = self.properties(c, prefix);
        let probe_budget = match c.get("probe_budget") {
            Some(v) if v.to_i128() == Some(0) => Some(0),
            Some(_) => self.positive(c, prefix, "probe_budget"),
            None => None,
        }
        .unwrap_or(DEFAULT_PROBE_BUDGET);
        let settings = self.inherited(c, prefix, Some(top));
        let probe_timeout = match self.duration(c, prefix, "probe_timeout") {
            Some(t) if t >= settings.timeout || t.is_zero() => {
                self.error(
                    c.get("probe_timeout"),
                    &join(prefix, "probe_timeout"),
                    format!(
                        "must be more than 0 and less than sample_timeout ({})",
                        humantime::format_duration(settings.timeout)
                    ),
                );
                None
            }
            t => t,
        }
        .unwrap_or_else(|| default_probe_timeout(settings.timeout));
        let sampler = self.sampler(c, prefix, bootstrap.as_deref(), &properties);
        Some(ClusterConfig {
            name: name?,
            bootstrap_servers: bootstrap?,
            properties,
            secret_sources,
            sample_interval: settings.interval,
            sample_timeout: settings.timeout,
            backoff_max: settings.backoff_max,
            offset_fetch_concurrency: settings.concurrency,
            groups: settings.groups,
            probe_budget,
            probe_timeout,
            sampler,
        })
    }

    /// `sampler`: `auto` (default), `direct` or `librdkafka`; `direct` only with
    /// properties the direct client honours, so `check` accepts exactly what `run` runs.
    fn sampler(&mut self, c: &Dict, prefix: &str, bootstrap: Option<&str>, properties: &BTreeMap<String, String>) -> SamplerChoice {
        let key = join(prefix, "sampler");
        let choice = match c.get("sampler") {
            None => SamplerChoice::Auto,
            Some(Value::String(_, s)) if s == "auto" => SamplerChoice::Auto,
            Some(Value::String(_, s)) if s == "direct" => SamplerChoice::Direct,
            Some(Value::String(_, s)) if s == "librdkafka" => SamplerChoice::Librdkafka,
            Some(v) => {
                self.error(Some(v), &key, "expected \"auto\", \"direct\" or \"librdkafka\"");
                return SamplerChoice::Auto;
            }
        };
        if choice == SamplerChoice::Direct {
            if let Some(b) = bootstrap {
                if let Err(e) = super::kafka_wire::WireConfig::from_properties(b, properties) {
                    self.error(c.get("sampler"), &key, format!("the direct client cannot serve this cluster: {e} (use \"auto\" or \"librdkafka\")"));
                }
            }
        }
        choice
    }

    fn record(&mut self, dict: &Dict, base: &Path) -> Option<RecordConfig> {
        let v = dict.get("record")?;
        let Value::Dict(_, d) = v else {
            self.error(Some(v), "record", "expected a table ([record])");
            return None;
        };
        self.unknown_keys(d, "record", &RECORD_KEYS);
        let path = match self.string(d, "record", "path") {
            Some((p, _)) if !p.trim().is_empty() => Some(base.join(p)),
            Some((_, pv)) => {
                self.error(Some(pv), "record.path", "must not be empty");
                None
            }
            None => {
                if d.get("path").is_none() {
                    self.error(Some(v), "record.path", "missing (a directory for the recording segments)");
                }
                None
            }
        };
        let max_size = match d.get("max_size") {
            None => Some(DEFAULT_RECORD_MAX_SIZE),
            Some(sv) => {
                let parsed = match sv {
                    Value::String(_, s) => parse_size(s),
                    other => other.to_i128().and_then(|n| u64::try_from(n).ok()),
                };
                match parsed {
                    Some(n) if n >= MIN_RECORD_MAX_SIZE => Some(n),
                    Some(_) => {
                        self.error(Some(sv), "record.max_size", format!("must be at least {MIN_RECORD_MAX_SIZE} bytes (64KiB)"));
                        None
                    }
                    None => {
                        self.error(Some(sv), "record.max_size", "expected a size in bytes, or a string such as \"512MiB\" or \"1GB\"");
                        None
                    }
                }
            }
        };
        let max_age = if d.contains_key("max_age") { self.duration(d, "record", "max_age") } else { Some(DEFAULT_RECORD_MAX_AGE) };
        Some(RecordConfig { path: path?, max_size: max_size?, max_age: max_age? })
    }

    fn properties(&mut self, c: &Dict, prefix: &str) -> (BTreeMap<String, String>, BTreeMap<String, secrets::SecretSource>) {
        let key = join(prefix, "properties");
        let mut out = BTreeMap::new();
        let mut sources = BTreeMap::new();
        match c.get("properties") {
            None => {}
            Some(Value::Dict(_, d)) => {
                // (name, value, where it was written): a `_file`/`_env` key gives its
                // base name the secret it reads (see config::secrets).
                let mut given: Vec<(String, String, Option<secrets::SecretSource>, String, &Value)> = Vec::new();
                for (k, v) in flatten_dotted(d) {
                    let pkey = format!("{key}.\"{k}\"");
                    let Some(s) = scalar_string(v) else {
                        self.error(Some(v), &pkey, "expected a string, number or boolean");
                        continue;
                    };
                    let (name, value, source) = match secrets::reference(&k, &s) {
                        None => (k, s, None),
                        Some((base, source)) => match secrets::read(&source) {
                            Ok(secret) => (base, secret, Some(source)),
                            Err(m) => {
                                self.error(Some(v), &pkey, m);
                                continue;
                            }
                        },
                    };
                    if RESERVED_PROPERTIES.contains(&name.as_str()) {
                        self.error(Some(v), &pkey, "set by streamguard itself; remove it (use bootstrap_servers for the brokers)");
                        continue;
                    }
                    given.push((name, value, source, pkey, v));
                }
                for (name, value, source, pkey, v) in given {
                    if out.contains_key(&name) {
                        self.error(Some(v), &pkey, format!("\"{name}\" is given twice (directly and from a file or variable); keep one"));
                        continue;
                    }
                    // librdkafka's own check, without a client: `check` refuses exactly
                    // what `run` could not create.
                    if let Err(m) = secrets::librdkafka_accepts(&name, &value) {
                        self.error(Some(v), &pkey, m);
                        continue;
                    }
                    if let Some(source) = source {
                        sources.insert(name.clone(), source);
                    }
                    out.insert(name, value);
                }
            }
            Some(v) => self.error(Some(v), &key, "expected a table of librdkafka properties"),
        }
        (out, sources)
    }

    fn groups(&mut self, dict: &Dict, prefix: &str) -> Option<GroupFilter> {
        let key = join(prefix, "groups");
        let g = match dict.get("groups")? {
            Value::Dict(_, g) => g,
            v => {
                self.error(Some(v), &key, "expected a table with `include` and/or `exclude` regex lists");
                return None;
            }
        };
        self.unknown_keys(g, &key, &GROUP_KEYS);
        let include = self.regexes(g, &key, "include");
        let exclude = self.regexes(g, &key, "exclude");
        Some(GroupFilter { include, exclude })
    }

    fn regexes(&mut self, dict: &Dict, prefix: &str, name: &str) -> Vec<Regex> {
        let key = join(prefix, name);
        let items: Vec<&Value> = match dict.get(name) {
            None => return Vec::new(),
            Some(Value::Array(_, items)) => items.iter().collect(),
            Some(v @ Value::String(..)) => vec![v],
            Some(v) => {
                self.error(Some(v), &key, "expected a list of regular expressions");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let ikey = format!("{key}[{i}]");
            match item.as_str() {
                Some(s) => match Regex::new(s) {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        let detail = e.to_string().lines().last().unwrap_or_default().trim().to_string();
                        self.error(Some(item), &ikey, format!("invalid regex {s:?}: {detail}"))
                    }
                },
                None => self.error(Some(item), &ikey, "expected a string (a regular expression)"),
            }
        }
        out
    }

    pub(super) fn string<'d>(&mut self, dict: &'d Dict, prefix: &str, name: &str) -> Option<(&'d str, &'d Value)> {
        let v = dict.get(name)?;
        match v.as_str() {
            Some(s) => Some((s, v)),
            None => {
                self.error(Some(v), &join(prefix, name), "expected a string");
                None
            }
        }
    }

    pub(super) fn duration(&mut self, dict: &Dict, prefix: &str, name: &str) -> Option<Duration> {
        let key = join(prefix, name);
        let v = dict.get(name)?;
        let Some(s) = v.as_str() else {
            self.error(Some(v), &key, "expected a duration string such as \"10s\" or \"2m\"");
            return None;
        };
        match humantime::parse_duration(s) {
            Ok(d) if d.is_zero() => {
                self.error(Some(v), &key, "must be greater than zero");
                None
            }
            // Bounded so that sums such as `2 × interval + timeout` and `now + interval`
            // can never overflow (which would panic in a sampler or the rule loop), and
            // per key so that nothing `check` accepts leaves `run` idle for ever.
            Ok(d) if d > crate::limits::config_duration_max(name).0 => {
                self.error(Some(v), &key, format!("must be at most {}", crate::limits::config_duration_max(name).1));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(Some(v), &key, format!("invalid duration {s:?}: {e} (use e.g. \"10s\", \"2m\", \"1h\")"));
                None
            }
        }
    }

    pub(super) fn positive(&mut self, dict: &Dict, prefix: &str, name: &str) -> Option<usize> {
        let v = dict.get(name)?;
        let max = crate::limits::config_count_max(name);
        match v.to_i128().and_then(|n| usize::try_from(n).ok()).filter(|n| *n > 0) {
            Some(n) if n <= max => Some(n),
            Some(_) => {
                self.error(Some(v), &join(prefix, name), format!("must be at most {max}"));
                None
            }
            None => {
                self.error(Some(v), &join(prefix, name), "expected a positive integer");
                None
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `sample_interval` → `SAMPLE_INTERVAL`; `groups.include` → `GROUPS__INCLUDE`.
fn env_name(key: &str) -> String {
    key.replace('.', "__").to_ascii_uppercase()
}

/// librdkafka property names contain dots; TOML reads unquoted `sasl.mechanism = …` as a
/// nested table. Both spellings become the flat name.
fn flatten_dotted(d: &Dict) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for (k, v) in d {
        match v {
            Value::Dict(_, inner) => {
                for (ik, iv) in flatten_dotted(inner) {
                    out.push((format!("{k}.{ik}"), iv));
                }
            }
            _ => out.push((k.clone(), v)),
        }
    }
    out
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(_, s) => Some(s.clone()),
        Value::Bool(_, b) => Some(b.to_string()),
        Value::Num(_, n) => n.to_i128().map(|i| i.to_string()).or_else(|| n.to_f64().map(|f| f.to_string())),
        Value::Char(_, c) => Some(c.to_string()),
        _ => None,
    }
}
