//! The Prometheus source: named PromQL instant queries against one Prometheus server
//! become signals. Each result series of a query becomes one series of the query's
//! signal, keeping the series' own labels, so anything Prometheus already scrapes
//! (Kafka Streams apps, consumers' client metrics, exporters) can feed rules and the API.
//!
//! Every sample runs all configured queries concurrently, each as
//! `GET {url}/api/v1/query?query=…&time=<sample time>` bounded by the source's client
//! timeout, then turns the answers into observations with the pure [`to_observations`]
//! and [`assemble`].
//!
//! What it deliberately does not do:
//! - re-export these signals on `/metrics`: they are user-named, outside the built-in
//!   catalog, and already live in Prometheus; they exist for the JSON API and rules;
//! - run range queries, or accept `matrix` and `string` results (an error for that query);
//! - observe native histogram samples (skipped and noted);
//! - retry or cache: a failed query simply has no observations in this sample.
//!
//! # Guarantees
//! - Labels of a series are the result series' labels minus `__name__`, plus
//!   `prometheus = <source name>`. A result label already called `prometheus` is kept as
//!   `exported_prometheus` (Prometheus's own convention for clashing target labels).
//! - A NaN or ±Inf value is never observed: the series is absent, not zero.
//! - Two result series whose labels are equal once `__name__` is dropped yield one
//!   observation: the first; the target's detail notes the others.
//! - Exactly one target of kind `prometheus` per sample, named after the source: health
//!   `ok` when every query succeeded, `warn` when some failed, `failed` when all did
//!   (only reachable when the server answered 2xx with results that cannot be signals);
//!   its detail lists each query with its series count, error and notes.
//!
//! # Errors
//! The sample fails (and the source's data goes stale) only when no query got a 2xx
//! answer: the server is unreachable, timed out, or rejected every query. A single bad
//! query (a PromQL parse error is HTTP 400 `bad_data`) fails alone; its error is in the
//! target's detail and the other queries' observations are kept.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::SystemTime;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{self, HttpError};
use crate::config::{PrometheusConfig, PromQuery};
use crate::signal::{unix_secs, Labels, Observation, SourceSample, TargetInfo};

/// Target kind of a Prometheus server.
pub const TARGET_KIND: &str = "prometheus";
/// Label naming the source on every series of this source.
pub const SOURCE_LABEL: &str = "prometheus";
/// Where a result series' own `prometheus` label goes, so [`SOURCE_LABEL`] stays ours.
pub const EXPORTED_SOURCE_LABEL: &str = "exported_prometheus";
/// The metric name label; the signal name replaces it.
const NAME_LABEL: &str = "__name__";
/// Path of the instant query API, relative to the server's base URL.
const QUERY_PATH: &str = "/api/v1/query";

/// Why one query produced no observations.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    /// No usable answer: unreachable, timed out, or a non-2xx status without a
    /// Prometheus error body.
    #[error(transparent)]
    Request(HttpError),
    /// Prometheus refused or failed the query (`bad_data` for a PromQL parse error,
    /// `execution`, `timeout`…), in its own words.
    #[error("{error_type}: {error}")]
    Api { error_type: String, error: String },
    /// A result type that cannot become a signal (`matrix`, `string`).
    #[error("result type {0:?} cannot become a signal (use an instant vector or a scalar)")]
    ResultType(String),
    /// A body that is not a Prometheus API answer.
    #[error("invalid response: {0}")]
    Decode(String),
}

/// What one successful query answer became.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Converted {
    pub observations: Vec<Observation>,
    /// Result series (or a scalar) whose value was NaN or infinite: not observed.
    pub non_finite: usize,
    /// Native histogram series: not observed.
    pub histograms: usize,
    /// Label sets returned again after `__name__` was dropped; only the first was kept.
    pub duplicates: Vec<Labels>,
    /// Warnings Prometheus attached to the answer.
    pub warnings: Vec<String>,
}

impl Converted {
    /// Human-readable remarks for the target's detail.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.non_finite > 0 {
            notes.push(format!("{} series with a NaN or infinite value not observed", self.non_finite));
        }
        if self.histograms > 0 {
            notes.push(format!("{} native histogram series not observed", self.histograms));
        }
        for labels in &self.duplicates {
            notes.push(format!("duplicate series {} once __name__ is dropped: kept the first", render_labels(labels)));
        }
        notes.extend(self.warnings.iter().map(|w| format!("prometheus warning: {w}")));
        notes
    }
}

/// The envelope of every `/api/v1/*` answer.
#[derive(Debug, Deserialize)]
struct Envelope {
    status: String,
    data: Option<QueryData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Value,
}

/// `[<unix seconds>, "<value>"]`: Prometheus writes values as strings (`"NaN"`, `"+Inf"`).
#[derive(Debug, Deserialize)]
struct SamplePair(#[allow(dead_code)] f64, String);

#[derive(Debug, Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: Labels,
    value: Option<SamplePair>,
    histogram: Option<IgnoredAny>,
}

/// Turns one `/api/v1/query` answer into observations of `signal` from source `source`.
/// Pure.
///
/// - `vector`: one observation per series, labelled as the module doc says;
/// - `scalar`: one observation labelled only with `prometheus`;
/// - `matrix`, `string`: [`QueryError::ResultType`];
/// - `{"status":"error",…}`: [`QueryError::Api`].
pub fn to_observations(source: &str, signal: &str, body: &Value) -> Result<Converted, QueryError> {
    let envelope = Envelope::deserialize(body).map_err(|e| QueryError::Decode(e.to_string()))?;
    if envelope.status != "success" {
        return Err(QueryError::Api {
            error_type: envelope.error_type.unwrap_or_else(|| "unknown".to_string()),
            error: envelope.error.unwrap_or_else(|| format!("status {:?}", envelope.status)),
        });
    }
    let data = envelope.data.ok_or_else(|| QueryError::Decode("success without data".to_string()))?;
    let mut out = Converted { warnings: envelope.warnings, ..Converted::default() };
    match data.result_type.as_str() {
        "vector" => {
            let series = Vec::<VectorSample>::deserialize(&data.result).map_err(|e| QueryError::Decode(e.to_string()))?;
            let mut seen: BTreeSet<Labels> = BTreeSet::new();
            for s in series {
                let labels = series_labels(source, s.metric);
                if seen.contains(&labels) {
                    out.duplicates.push(labels);
                    continue;
                }
                seen.insert(labels.clone());
                let Some(SamplePair(_, raw)) = s.value else {
                    if s.histogram.is_some() {
                        out.histograms += 1;
                        continue;
                    }
                    return Err(QueryError::Decode(format!("series {} has no value", render_labels(&labels))));
                };
                let value = parse_value(&raw)?;
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                match Observation::new(signal, &pairs, value) {
                    Some(o) => out.observations.push(o),
                    None => out.non_finite += 1,
                }
            }
        }
        "scalar" => {
            let SamplePair(_, raw) = SamplePair::deserialize(&data.result).map_err(|e| QueryError::Decode(e.to_string()))?;
            match Observation::new(signal, &[(SOURCE_LABEL, source)], parse_value(&raw)?) {
                Some(o) => out.observations.push(o),
                None => out.non_finite += 1,
            }
        }
        other => return Err(QueryError::ResultType(other.to_string())),
    }
    Ok(out)
}

/// A result series' labels as a signal's: `__name__` dropped, a clashing `prometheus`
/// label moved aside, the source added.
fn series_labels(source: &str, mut labels: Labels) -> Labels {
    labels.remove(NAME_LABEL);
    if let Some(theirs) = labels.remove(SOURCE_LABEL) {
        labels.insert(EXPORTED_SOURCE_LABEL.to_string(), theirs);
    }
    labels.insert(SOURCE_LABEL.to_string(), source.to_string());
    labels
}

fn parse_value(raw: &str) -> Result<f64, QueryError> {
    raw.parse::<f64>().map_err(|_| QueryError::Decode(format!("invalid sample value {raw:?}")))
}

fn render_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// The query error of a request that got no 2xx answer: Prometheus's own `errorType` and
/// `error` when the body carries them (a bad query), else the request error.
fn request_error(err: HttpError) -> QueryError {
    if let HttpError::Status { body, .. } = &err {
        if let Ok(Envelope { status, error_type: Some(error_type), error: Some(error), .. }) = serde_json::from_str(body) {
            if status == "error" {
                return QueryError::Api { error_type, error };
            }
        }
    }
    QueryError::Request(err)
}

/// One sample from the answers to `queries` (in the same order). Pure.
///
/// `Err` with the first query's error when no query got a 2xx answer (and there is at
/// least one query); otherwise every usable answer's observations and the one
/// `prometheus` target describing each query.
pub fn assemble(
    source: &str,
    url: &str,
    queries: &[PromQuery],
    answers: Vec<Result<Value, HttpError>>,
) -> Result<SourceSample, HttpError> {
    if answers.iter().all(Result::is_err) {
        if let Some(first) = answers.iter().find_map(|a| a.as_ref().err()) {
            return Err(first.clone());
        }
    }
    let mut sample = SourceSample::default();
    let mut details = Vec::with_capacity(queries.len());
    let mut failed = 0usize;
    for (q, answer) in queries.iter().zip(answers) {
        let converted = match answer {
            Ok(body) => to_observations(source, &q.signal, &body),
            Err(e) => Err(request_error(e)),
        };
        let (series, error, notes) = match converted {
            Ok(c) => {
                let notes = c.notes();
                let n = c.observations.len();
                sample.observations.extend(c.observations);
                (n, Value::Null, notes)
            }
            Err(e) => {
                failed += 1;
                (0, Value::String(e.to_string()), Vec::new())
            }
        };
        details.push(json!({ "signal": q.signal, "query": q.query, "series": series, "error": error, "notes": notes }));
    }
    let health = match failed {
        0 => "ok",
        n if n == queries.len() => "failed",
        _ => "warn",
    };
    sample.targets.push(TargetInfo {
        kind: TARGET_KIND,
        name: source.to_string(),
        health,
        detail: json!({ "url": url, "queries": details }).into(),
    });
    Ok(sample)
}

/// Runs the configured instant queries against one Prometheus server.
#[derive(Debug)]
pub struct PrometheusSampler {
    name: String,
    /// Base URL, as configured (shown in the target's detail).
    url: String,
    /// `{url}/api/v1/query`, parsed once.
    endpoint: reqwest::Url,
    queries: Vec<PromQuery>,
    client: reqwest::Client,
}

impl PrometheusSampler {
    pub fn new(cfg: &PrometheusConfig) -> Result<Self, HttpError> {
        let url = cfg.source.url.trim_end_matches('/').to_string();
        let endpoint = reqwest::Url::parse(&format!("{url}{QUERY_PATH}"))
            .map_err(|e| HttpError::Client(format!("invalid URL {url:?}: {e}")))?;
        Ok(PrometheusSampler {
            name: cfg.source.name.clone(),
            url,
            endpoint,
            queries: cfg.queries.clone(),
            client: http::client(cfg.source.sample_timeout)?,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One sample: every query evaluated at `now`, concurrently.
    pub async fn sample(&self, now: SystemTime) -> Result<SourceSample, HttpError> {
        let time = format!("{:.3}", unix_secs(now));
        let answers = join_all(self.queries.iter().map(|q| self.query(&q.query, &time)).collect()).await;
        let sample = assemble(&self.name, &self.url, &self.queries, answers)?;
        // A failed query does not fail the sample, so the agent loop does not log it:
        // say it here, once per sample, as Prometheus does for a failing rule.
        for t in &sample.targets {
            for q in t.detail.json()["queries"].as_array().into_iter().flatten() {
                if let Some(error) = q["error"].as_str() {
                    tracing::warn!(source = %self.name, signal = q["signal"].as_str(), error, "prometheus query failed");
                }
            }
        }
        Ok(sample)
    }

    async fn query(&self, query: &str, time: &str) -> Result<Value, HttpError> {
        // The request is built only to have reqwest encode the query string; `get_json`
        // then sends it and classifies timeouts, statuses and bodies like every HTTP source.
        let request = self
            .client
            .get(self.endpoint.clone())
            .query(&[("query", query), ("time", time)])
            .build()
            .map_err(|e| HttpError::Client(e.to_string()))?;
        http::get_json(&self.client, request.url().as_str()).await
    }
}

/// Polls every future concurrently on the current task; outputs in input order.
/// Dropping the returned future drops (cancels) all of them.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, out) in pending.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn obs(signal: &str, pairs: &[(&str, &str)], value: f64) -> Observation {
        Observation::new(signal, pairs, value).unwrap()
    }

    fn q(signal: &str, query: &str) -> PromQuery {
        PromQuery { signal: signal.to_string(), query: query.to_string() }
    }

    fn vector(result: Value) -> Value {
        json!({ "status": "success", "data": { "resultType": "vector", "result": result } })
    }

    const BAD_DATA: &str =
        r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:4: parse error: unexpected end of input inside braces"}"#;

    fn status_400(body: &str) -> HttpError {
        HttpError::Status { url: "http://p/api/v1/query?query=up%7B".into(), status: 400, body: body.into() }
    }

    #[test]
    fn a_vector_becomes_one_observation_per_series_without_the_name_label() {
        let body = vector(json!([
            { "metric": { "__name__": "up", "instance": "127.0.0.1:9090", "job": "prometheus" }, "value": [1795657332.388, "1"] },
            { "metric": { "__name__": "up", "instance": "127.0.0.1:9898", "job": "streamguard" }, "value": [1795657332.388, "0"] },
        ]));
        let c = to_observations("local", "prom_up", &body).unwrap();
        assert_eq!(
            c.observations,
            vec![
                obs("prom_up", &[("instance", "127.0.0.1:9090"), ("job", "prometheus"), ("prometheus", "local")], 1.0),
                obs("prom_up", &[("instance", "127.0.0.1:9898"), ("job", "streamguard"), ("prometheus", "local")], 0.0),
            ]
        );
        assert_eq!((c.non_finite, c.histograms, c.duplicates.len()), (0, 0, 0));
    }

    #[test]
    fn an_aggregate_without_labels_carries_only_the_source_label() {
        let body = vector(json!([{ "metric": {}, "value": [1795657332.704, "2"] }]));
        let c = to_observations("local", "targets", &body).unwrap();
        assert_eq!(c.observations, vec![obs("targets", &[("prometheus", "local")], 2.0)]);
    }

    #[test]
    fn an_empty_vector_is_no_observation_and_no_error() {
        let c = to_observations("local", "s", &vector(json!([]))).unwrap();
        assert_eq!(c, Converted::default());
    }

    #[test]
    fn a_scalar_becomes_one_observation_with_only_the_source_label() {
        let body = json!({ "status": "success", "data": { "resultType": "scalar", "result": [1795657335.334, "2"] } });
        let c = to_observations("local", "two", &body).unwrap();
        assert_eq!(c.observations, vec![obs("two", &[("prometheus", "local")], 2.0)]);
    }

    #[test]
    fn nan_and_infinite_values_are_not_observed() {
        let body = vector(json!([
            { "metric": { "a": "nan" }, "value": [1.0, "NaN"] },
            { "metric": { "a": "pinf" }, "value": [1.0, "+Inf"] },
            { "metric": { "a": "ninf" }, "value": [1.0, "-Inf"] },
            { "metric": { "a": "ok" }, "value": [1.0, "1e+06"] },
        ]));
        let c = to_observations("local", "s", &body).unwrap();
        assert_eq!(c.observations, vec![obs("s", &[("a", "ok"), ("prometheus", "local")], 1e6)]);
        assert_eq!(c.non_finite, 3);
        assert!(c.observations.iter().all(|o| o.value.is_finite()));

        let scalar = json!({ "status": "success", "data": { "resultType": "scalar", "result": [1.0, "NaN"] } });
        let c = to_observations("local", "s", &scalar).unwrap();
        assert!(c.observations.is_empty());
        assert_eq!(c.non_finite, 1);
        assert_eq!(c.notes(), vec!["1 series with a NaN or infinite value not observed".to_string()]);
    }

    #[test]
    fn series_equal_once_the_name_is_dropped_keep_the_first_and_are_noted() {
        let body = vector(json!([
            { "metric": { "__name__": "scrape_samples_scraped", "job": "prometheus" }, "value": [1.0, "424"] },
            { "metric": { "__name__": "up", "job": "prometheus" }, "value": [1.0, "1"] },
            { "metric": { "__name__": "up", "job": "other" }, "value": [1.0, "0"] },
        ]));
        let c = to_observations("local", "s", &body).unwrap();
        assert_eq!(
            c.observations,
            vec![obs("s", &[("job", "prometheus"), ("prometheus", "local")], 424.0), obs("s", &[("job", "other"), ("prometheus", "local")], 0.0)]
        );
        assert_eq!(c.duplicates, vec![labels(&[("job", "prometheus"), ("prometheus", "local")])]);
        assert_eq!(
            c.notes(),
            vec![r#"duplicate series {job="prometheus",prometheus="local"} once __name__ is dropped: kept the first"#.to_string()]
        );
    }

    #[test]
    fn a_series_own_prometheus_label_is_kept_as_exported_prometheus() {
        let body = vector(json!([{ "metric": { "prometheus": "monitoring/k8s", "job": "x" }, "value": [1.0, "3"] }]));
        let c = to_observations("local", "s", &body).unwrap();
        assert_eq!(
            c.observations,
            vec![obs("s", &[("exported_prometheus", "monitoring/k8s"), ("job", "x"), ("prometheus", "local")], 3.0)]
        );
    }

    #[test]
    fn matrix_and_string_results_are_errors() {
        let matrix = json!({ "status": "success", "data": { "resultType": "matrix", "result": [
            { "metric": { "__name__": "up" }, "values": [[1.0, "1"], [2.0, "1"]] } ] } });
        let e = to_observations("local", "s", &matrix).unwrap_err();
        assert!(matches!(&e, QueryError::ResultType(t) if t == "matrix"), "{e:?}");
        assert_eq!(e.to_string(), r#"result type "matrix" cannot become a signal (use an instant vector or a scalar)"#);
        let string = json!({ "status": "success", "data": { "resultType": "string", "result": [1.0, "hello"] } });
        assert!(matches!(to_observations("local", "s", &string), Err(QueryError::ResultType(t)) if t == "string"));
    }

    #[test]
    fn an_error_body_is_an_api_error_in_prometheus_words() {
        let body: Value = serde_json::from_str(BAD_DATA).unwrap();
        let e = to_observations("local", "s", &body).unwrap_err();
        assert!(matches!(&e, QueryError::Api { error_type, .. } if error_type == "bad_data"), "{e:?}");
        assert_eq!(e.to_string(), r#"bad_data: invalid parameter "query": 1:4: parse error: unexpected end of input inside braces"#);
    }

    #[test]
    fn malformed_bodies_are_decode_errors() {
        for body in [
            json!({ "status": "success" }),
            json!("not an object"),
            vector(json!([{ "metric": { "a": "b" }, "value": [1.0, "one"] }])),
            vector(json!([{ "metric": { "a": "b" } }])),
            json!({ "status": "success", "data": { "resultType": "scalar", "result": "2" } }),
        ] {
            let r = to_observations("local", "s", &body);
            assert!(matches!(r, Err(QueryError::Decode(_))), "{body}: {r:?}");
        }
    }

    #[test]
    fn native_histograms_and_warnings_are_noted_not_observed() {
        let body = json!({ "status": "success", "warnings": ["something odd"], "data": { "resultType": "vector", "result": [
            { "metric": { "a": "h" }, "histogram": [1.0, { "count": "3", "sum": "4", "buckets": [] }] },
            { "metric": { "a": "v" }, "value": [1.0, "5"] } ] } });
        let c = to_observations("local", "s", &body).unwrap();
        assert_eq!(c.observations, vec![obs("s", &[("a", "v"), ("prometheus", "local")], 5.0)]);
        assert_eq!(c.notes(), vec!["1 native histogram series not observed".to_string(), "prometheus warning: something odd".to_string()]);
    }

    #[test]
    fn one_rejected_query_fails_alone_and_is_reported_in_the_target() {
        let queries = [q("good", "count(up)"), q("bad", "up{")];
        let answers = vec![Ok(vector(json!([{ "metric": {}, "value": [1.0, "2"] }]))), Err(status_400(BAD_DATA))];
        let s = assemble("local", "http://p", &queries, answers).unwrap();
        assert_eq!(s.observations, vec![obs("good", &[("prometheus", "local")], 2.0)]);
        assert_eq!(s.targets.len(), 1);
        let t = &s.targets[0];
        assert_eq!((t.kind, t.name.as_str(), t.health), ("prometheus", "local", "warn"));
        assert_eq!(
            t.detail,
            json!({ "url": "http://p", "queries": [
                { "signal": "good", "query": "count(up)", "series": 1, "error": null, "notes": [] },
                { "signal": "bad", "query": "up{", "series": 0,
                  "error": "bad_data: invalid parameter \"query\": 1:4: parse error: unexpected end of input inside braces", "notes": [] },
            ] })
        );
    }

    #[test]
    fn the_sample_fails_only_when_no_query_got_a_2xx_answer() {
        let queries = [q("a", "up{"), q("b", "up")];
        let unreachable = HttpError::Connect { url: "http://p/api/v1/query".into(), message: "connection refused".into() };
        let e = assemble("local", "http://p", &queries, vec![Err(status_400(BAD_DATA)), Err(unreachable)]).unwrap_err();
        assert!(matches!(e, HttpError::Status { status: 400, .. }), "{e:?}");

        // Answered 2xx, but nothing usable: the sample stands, the target says failed.
        let matrix = json!({ "status": "success", "data": { "resultType": "matrix", "result": [] } });
        let s = assemble("local", "http://p", &queries, vec![Err(status_400(BAD_DATA)), Ok(matrix)]).unwrap();
        assert!(s.observations.is_empty());
        assert_eq!(s.targets[0].health, "failed");
    }

    #[test]
    fn a_non_2xx_answer_without_a_prometheus_body_keeps_the_request_error() {
        let queries = [q("a", "up"), q("b", "up")];
        let proxy = HttpError::Status { url: "http://p/api/v1/query".into(), status: 502, body: "<html>bad gateway</html>".into() };
        let ok = vector(json!([]));
        let s = assemble("local", "http://p", &queries, vec![Ok(ok), Err(proxy)]).unwrap();
        assert_eq!(s.targets[0].detail.json()["queries"][1]["error"], "GET http://p/api/v1/query: HTTP 502: <html>bad gateway</html>");
    }

    #[test]
    fn no_queries_is_an_ok_target_with_nothing_observed() {
        let s = assemble("local", "http://p", &[], Vec::new()).unwrap();
        assert!(s.observations.is_empty());
        assert_eq!(s.targets[0].health, "ok");
        assert_eq!(s.targets[0].detail, json!({ "url": "http://p", "queries": [] }));
    }

    #[test]
    fn join_all_keeps_input_order_whatever_the_completion_order() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let out = rt.block_on(join_all(
            [30u64, 0, 10]
                .into_iter()
                .map(|ms| async move {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    ms
                })
                .collect(),
        ));
        assert_eq!(out, vec![30, 0, 10]);
    }
}
