//! The Prometheus source against the stack's real Prometheus (`$PROMETHEUS_URL`, default
//! http://127.0.0.1:9090, scraping itself as `job="prometheus"`): named instant queries
//! become labelled observations, a bad query fails alone, an unreachable server fails
//! the sample, and the agent binary samples it without re-exporting the signals on
//! `/metrics`. Nothing is mocked; a missing Prometheus fails the tests.

mod common;

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use streamguard::config::{HttpSourceConfig, PromQuery, PrometheusConfig};
use streamguard::sample::http::HttpError;
use streamguard::sample::prometheus::PrometheusSampler;
use streamguard::signal::{Labels, Observation, SourceSample, TargetInfo};

use common::*;

const TIMEOUT: Duration = Duration::from_secs(2);

fn prometheus_url() -> String {
    std::env::var("PROMETHEUS_URL").unwrap_or_else(|_| "http://127.0.0.1:9090".to_string())
}

fn config(url: &str, queries: &[(&str, &str)]) -> PrometheusConfig {
    PrometheusConfig {
        source: HttpSourceConfig {
            name: "local".to_string(),
            url: url.to_string(),
            sample_interval: Duration::from_secs(1),
            sample_timeout: TIMEOUT,
            backoff_max: Duration::from_secs(2),
        },
        queries: queries.iter().map(|(signal, query)| PromQuery { signal: signal.to_string(), query: query.to_string() }).collect(),
    }
}

fn sample(queries: &[(&str, &str)]) -> SourceSample {
    let sampler = PrometheusSampler::new(&config(&prometheus_url(), queries)).expect("sampler");
    assert_eq!(sampler.name(), "local");
    block_on(sampler.sample(SystemTime::now())).unwrap_or_else(|e| panic!("sample failed: {e}"))
}

fn of<'a>(s: &'a SourceSample, signal: &str) -> Vec<&'a Observation> {
    s.observations.iter().filter(|o| o.key.signal == signal).collect()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn target(s: &SourceSample) -> &TargetInfo {
    assert_eq!(s.targets.len(), 1, "exactly one target: {:?}", s.targets);
    let t = &s.targets[0];
    assert_eq!((t.kind, t.name.as_str()), ("prometheus", "local"));
    t
}

/// The `instance` label Prometheus gives its own target, read from Prometheus itself.
fn own_instance() -> String {
    let (status, v) = prometheus_query(r#"up{job="prometheus"}"#);
    assert_eq!(status, 200, "{v}");
    v["data"]["result"][0]["metric"]["instance"].as_str().expect("instance label").to_string()
}

#[test]
fn an_instant_vector_becomes_one_series_per_result_with_its_labels_minus_the_name() {
    let s = sample(&[("prom_up", r#"up{job="prometheus"}"#)]);
    let up = of(&s, "prom_up");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].key.labels, labels(&[("instance", &own_instance()), ("job", "prometheus"), ("prometheus", "local")]));
    assert_eq!(up[0].value, 1.0);
    let t = target(&s);
    assert_eq!(t.health, "ok");
    assert_eq!(
        t.detail,
        json!({ "url": prometheus_url(), "queries": [
            { "signal": "prom_up", "query": "up{job=\"prometheus\"}", "series": 1, "error": null, "notes": [] } ] })
    );
}

#[test]
fn aggregates_and_scalars_carry_only_the_prometheus_label() {
    let (status, v) = prometheus_query("up");
    assert_eq!(status, 200, "{v}");
    let targets = v["data"]["result"].as_array().expect("vector").len() as f64;
    assert!(targets >= 1.0, "{v}");

    // `1+1` is a scalar expression; a naive encoder sending a raw `+` would make it `1 1`.
    let s = sample(&[("targets_total", "count(up)"), ("two", "1+1"), ("two_again", "scalar(vector(2))")]);
    let only_source = labels(&[("prometheus", "local")]);
    for (signal, value) in [("targets_total", targets), ("two", 2.0), ("two_again", 2.0)] {
        let o = of(&s, signal);
        assert_eq!(o.len(), 1, "{signal}: {o:?}");
        assert_eq!((&o[0].key.labels, o[0].value), (&only_source, value), "{signal}");
    }
    assert_eq!(target(&s).health, "ok");
}

#[test]
fn query_strings_with_reserved_characters_reach_prometheus_intact() {
    let s = sample(&[("odd", r#"label_replace(vector(7), "x", "a&b=c d+e%f#g", "", "")"#)]);
    let o = of(&s, "odd");
    assert_eq!(o.len(), 1, "{:?}", s.targets);
    assert_eq!(o[0].key.labels, labels(&[("prometheus", "local"), ("x", "a&b=c d+e%f#g")]));
    assert_eq!(o[0].value, 7.0);
}

#[test]
fn nan_and_infinite_results_are_not_observed() {
    let s = sample(&[("nan", "vector(0) / 0"), ("inf", "vector(1) / 0"), ("one", "vector(1)")]);
    assert!(of(&s, "nan").is_empty(), "{s:?}");
    assert!(of(&s, "inf").is_empty(), "{s:?}");
    assert_eq!(of(&s, "one").len(), 1);
    assert!(s.observations.iter().all(|o| o.value.is_finite()));
    let t = target(&s);
    assert_eq!(t.health, "ok");
    assert_eq!(t.detail.json()["queries"][0]["series"], 0);
    assert_eq!(t.detail.json()["queries"][0]["notes"], json!(["1 series with a NaN or infinite value not observed"]));
}

#[test]
fn a_bad_query_is_reported_in_the_target_and_the_others_still_sample() {
    // In Prometheus 2.42, `scalar(1+1)` is a parse error too: scalar() takes a vector.
    let s = sample(&[("prom_up", r#"up{job="prometheus"}"#), ("broken", "up{"), ("not_scalar", "scalar(1+1)"), ("two", "1+1")]);
    assert_eq!(of(&s, "prom_up").len(), 1);
    assert_eq!(of(&s, "two").len(), 1);
    assert!(of(&s, "broken").is_empty() && of(&s, "not_scalar").is_empty());
    let t = target(&s);
    assert_eq!(t.health, "warn");
    let q = &t.detail.json()["queries"];
    assert_eq!((&q[0]["error"], &q[3]["error"]), (&json!(null), &json!(null)));
    assert_eq!((&q[1]["signal"], &q[1]["series"]), (&json!("broken"), &json!(0)));
    assert_eq!(q[1]["error"], r#"bad_data: invalid parameter "query": 1:4: parse error: unexpected end of input inside braces"#);
    assert_eq!(
        q[2]["error"],
        r#"bad_data: invalid parameter "query": 1:8: parse error: expected type instant vector in call to function "scalar", got scalar"#
    );
}

#[test]
fn range_vector_and_string_results_are_errors_of_their_query() {
    let s = sample(&[("range", "up[1m]"), ("text", r#""hello""#), ("one", "vector(1)")]);
    assert_eq!(s.observations.len(), 1, "{s:?}");
    let t = target(&s);
    assert_eq!(t.health, "warn");
    assert_eq!(t.detail.json()["queries"][0]["error"], r#"result type "matrix" cannot become a signal (use an instant vector or a scalar)"#);
    assert_eq!(t.detail.json()["queries"][1]["error"], r#"result type "string" cannot become a signal (use an instant vector or a scalar)"#);
}

#[test]
fn series_equal_without_their_name_keep_the_first_and_are_noted() {
    // Two metrics with the same target labels: equal once `__name__` is dropped.
    let s = sample(&[("two_metrics", r#"{__name__=~"up|scrape_samples_scraped",job="prometheus"}"#)]);
    let o = of(&s, "two_metrics");
    let kept = labels(&[("instance", &own_instance()), ("job", "prometheus"), ("prometheus", "local")]);
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!(o[0].key.labels, kept);
    let t = target(&s);
    assert_eq!(t.health, "ok");
    assert_eq!(t.detail.json()["queries"][0]["series"], 1);
    let note = format!(
        r#"duplicate series {{instance="{}",job="prometheus",prometheus="local"}} once __name__ is dropped: kept the first"#,
        own_instance()
    );
    assert_eq!(t.detail.json()["queries"][0]["notes"], json!([note]), "{s:?}");
}

#[test]
fn queries_are_evaluated_at_the_sample_time() {
    // Long before this Prometheus existed: the vector is empty, not an error.
    let sampler = PrometheusSampler::new(&config(&prometheus_url(), &[("prom_up", r#"up{job="prometheus"}"#)])).unwrap();
    let s = block_on(sampler.sample(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))).unwrap();
    assert!(s.observations.is_empty(), "{s:?}");
    assert_eq!(target(&s).health, "ok");
}

#[test]
fn only_rejected_queries_fail_the_whole_sample() {
    let sampler = PrometheusSampler::new(&config(&prometheus_url(), &[("a", "up{"), ("b", "sum(")])).unwrap();
    let err = block_on(sampler.sample(SystemTime::now())).unwrap_err();
    assert!(matches!(&err, HttpError::Status { status: 400, .. }), "{err:?}");
}

#[test]
fn an_unreachable_server_fails_the_sample_within_the_timeout() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let sampler = PrometheusSampler::new(&config(&url, &[("a", "up"), ("b", "count(up)")])).unwrap();
    let started = Instant::now();
    let err = block_on(sampler.sample(SystemTime::now())).unwrap_err();
    let took = started.elapsed();
    assert!(took < TIMEOUT, "took {took:?}");
    assert!(matches!(&err, HttpError::Connect { url: u, .. } if u.starts_with(&format!("{url}/api/v1/query?query="))), "{err:?}");
}

fn start_agent(prometheus_url: &str) -> Agent {
    let port = free_port();
    Agent::start_with(
        port,
        &format!(
            r#"listen = "127.0.0.1:{port}"

[[prometheus]]
name = "local"
url = "{prometheus_url}"
sample_interval = "1s"
sample_timeout = "1s"
queries = [{{ signal = "prom_up", query = "up{{job=\"prometheus\"}}" }}]
"#
        ),
    )
}

#[test]
fn the_agent_samples_prometheus_but_does_not_reexport_its_signals() {
    let agent = start_agent(&prometheus_url());
    let started = Instant::now();
    let mut last = (0, String::new());
    let deadline = started + Duration::from_secs(20);
    while last.0 != 200 {
        assert!(Instant::now() < deadline, "/readyz never 200: {last:?}\nlog:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
        last = http_get(agent.port, "/readyz");
    }
    eprintln!("ready after {:?}", started.elapsed());

    let (status, text) = http_get(agent.port, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("prom_up"), "user-named signals are not re-exported:\n{text}");
    let m = Metrics::parse(&text);
    assert_eq!(m.get("streamguard_source_up", &[("kind", "prometheus"), ("source", "local")]), Some(1.0), "{text}");
    assert_eq!(
        m.get("streamguard_source_quality", &[("kind", "prometheus"), ("source", "local"), ("quality", "fresh")]),
        Some(1.0),
        "{text}"
    );
}
