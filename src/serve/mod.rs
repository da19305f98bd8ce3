//! The HTTP face of the agent: `/metrics`, `/healthz`, `/readyz`, the JSON API
//! ([`api`]) and the remediation API ([`actions`]).
//!
//! [`router`] builds the whole app from shared state, so tests drive it without a socket.
//! Errors become one [`ApiError`] with a precise status and a short reason; internal
//! detail (error chains, paths) goes to the log, not to the client.

pub mod actions;
pub mod api;
pub mod metrics;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::signal::Quality;
use crate::store::Store;
use crate::telemetry::metrics::Metrics;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub rules: Arc<crate::evaluate::Rules>,
    /// Health of the supervised background tasks.
    pub tasks: Arc<crate::supervise::TaskHealth>,
    /// The remediation engine (`None`: no `[remediation]` configured).
    pub remediation: Option<Arc<crate::remediate::executor::Remediation>>,
    /// The `[[scale]]` targets (`None`: none configured).
    pub scale: Option<Arc<crate::scale::runtime::ScaleRuntime>>,
}

/// One error type for every handler; every error is answered as JSON
/// (`{"error": "…"}`), axum's own rejections (unknown route, wrong method, a query that
/// does not parse) included.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says which parameter and why.
    #[error("{0}")]
    BadRequest(String),
    /// An unknown endpoint or object; the message says which.
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed for this endpoint")]
    MethodNotAllowed,
    #[error("metrics encoding failed")]
    Encode(#[from] std::fmt::Error),
    /// No bearer token given.
    #[error("missing bearer token (Authorization: Bearer <token>)")]
    Unauthorized,
    /// A wrong token, or an endpoint that is off.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// Work moved off the async threads did not finish (it panicked).
    #[error("internal error")]
    Internal(String),
}

/// The longest piece of a request echoed back in an error message.
const MAX_ECHO: usize = 64;

/// `s`, cut to [`MAX_ECHO`] characters (with `…`): error messages name what was wrong
/// without echoing a megabyte back.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        // serde's message may quote the offending field or value: keep it short.
        let text = e.body_text();
        let cut = text.char_indices().nth(4 * MAX_ECHO).map_or(text.as_str(), |(i, _)| &text[..i]);
        ApiError::BadRequest(format!("invalid query: {cut}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => {
                let body = axum::Json(serde_json::json!({ "error": self.to_string() }));
                return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Encode(_) | ApiError::Internal(_) => {
                tracing::error!(error = %self, detail = ?self, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

/// Runs CPU-heavy handler work (encoding thousands of series, listing thousands of rules)
/// on the blocking pool, so the async threads stay free for `/healthz` and `/readyz`.
pub async fn off_async<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(e.to_string()))
}

/// `/healthz` answers from no shared state at all: nothing it could wait on.
async fn healthz() -> &'static str {
    "ok\n"
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/targets", get(api::targets))
        .route("/api/v1/signals", get(api::signals))
        .route("/api/v1/scale", get(api::scale))
        .route("/api/v1/rules", get(api::rules))
        .route("/api/v1/slos", get(api::slos))
        .route("/api/v1/actions", get(actions::list))
        .route("/api/v1/actions/{id}", get(actions::get))
        .route("/api/v1/actions/{id}/approve", post(actions::approve))
        .route("/api/v1/runbooks/{name}/run", post(actions::run))
        .route("/api/v1/plan", get(actions::plan))
        .fallback(|uri: axum::http::Uri| async move { ApiError::NotFound(format!("no such endpoint: {}", clip(uri.path()))) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// Ready once every source has fresh data and no background task has recently
/// panicked; otherwise 503 naming what is not ready.
async fn readyz(State(s): State<AppState>) -> Response {
    let now = SystemTime::now();
    let mut not_ready: Vec<String> = s
        .store
        .health()
        .iter()
        .filter_map(|h| {
            let q = h.quality(now);
            (q != Quality::Fresh).then(|| format!("{} {}: {}", h.kind.as_str(), h.name, q.as_str()))
        })
        .collect();
    not_ready.extend(s.tasks.not_ready(now));
    not_ready.extend(s.rules.state_not_ready());
    if not_ready.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{}\n", not_ready.join("\n"))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{Observation, SourceSample, TargetInfo};
    use crate::store::SourceKind;
    use axum::body::Body;
    use axum::http::{header, Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app() -> Router {
        let store = Arc::new(Store::default());
        store.register(SourceKind::Kafka, "local", std::time::Duration::from_secs(3600));
        store.register(SourceKind::Flink, "flink", std::time::Duration::from_secs(3600));
        let sample = SourceSample {
            observations: vec![
                Observation::new("lag_seconds", &[("cluster", "local"), ("group", "billing"), ("method", "probe")], 12.5).unwrap(),
                Observation::new("lag_offsets", &[("cluster", "local"), ("group", "other")], 3.0).unwrap(),
            ],
            targets: vec![TargetInfo { kind: "kafka_group", name: "billing".into(), health: "ok", detail: serde_json::json!({}).into() }],
            ..SourceSample::default()
        };
        store.record_success(SourceKind::Kafka, "local", SystemTime::now(), sample);
        let rules = Arc::new(crate::evaluate::Rules::load(crate::config::RulesConfig::for_tests(), Default::default()).unwrap());
        let metrics = Arc::new(Metrics::new(store.clone(), rules.clone()));
        router(AppState { store, metrics, rules, tasks: Default::default(), remediation: None, scale: None })
    }

    async fn get(uri: &str) -> (StatusCode, serde_json::Value) {
        let resp = app().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn signals_filter_by_signal_and_target_and_carry_quality() {
        let (status, v) = get("/api/v1/signals?signal=lag_seconds&target=billing").await;
        assert_eq!(status, StatusCode::OK);
        let s = &v["signals"];
        assert_eq!(s.as_array().unwrap().len(), 1, "{v}");
        assert_eq!(s[0]["value"], 12.5);
        assert_eq!(s[0]["quality"], "fresh");
        assert_eq!(s[0]["labels"]["method"], "probe");
        assert_eq!(s[0]["history"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_unknown_signal_is_a_400_with_a_suggestion() {
        let (status, v) = get("/api/v1/signals?signal=lag_second").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"], "signal: unknown signal \"lag_second\" (did you mean \"lag_seconds\"?)");
        let (status, v) = get("/api/v1/signals?history=forever").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().starts_with("history: invalid duration"), "{v}");
    }

    #[tokio::test]
    async fn unknown_routes_wrong_methods_and_bad_queries_answer_json() {
        let (status, v) = get("/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["error"], "no such endpoint: /nope");
        let resp = app().oneshot(Request::post("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["error"].as_str().unwrap().starts_with("method not allowed"), "{v}");
        let (status, v) = get("/api/v1/signals?limit=banana").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().starts_with("invalid query"), "{v}");
        let (status, v) = get(&format!("/api/v1/targets?{}=1", "k".repeat(60_000))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().len() < 400, "{v}");
    }

    #[tokio::test]
    async fn a_long_unknown_signal_is_a_short_400_without_a_suggestion() {
        let (status, v) = get(&format!("/api/v1/signals?signal={}", "lag_seconds".repeat(5_000))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let m = v["error"].as_str().unwrap();
        assert!(m.starts_with("signal: unknown signal \"lag_secondslag") && m.len() < 200 && !m.contains("did you mean"), "{m}");
    }

    #[tokio::test]
    async fn metrics_are_streamed_whole_in_both_formats() {
        for (accept, eof) in [("text/plain", false), ("application/openmetrics-text; version=1.0.0", true)] {
            let resp = app().oneshot(Request::get("/metrics").header(header::ACCEPT, accept).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
            assert!(text.contains("\nstreamguard_kafka_partition_lag_seconds{cluster=\"local\",group=\"billing\",method=\"probe\"} 12.5\n"), "{text}");
            assert!(text.contains("streamguard_rules_loaded"), "the trailer follows the store's series");
            assert_eq!(text.ends_with("# EOF\n"), eof, "{accept}");
        }
    }

    #[tokio::test]
    async fn targets_list_every_source_with_its_quality() {
        let (status, v) = get("/api/v1/targets").await;
        assert_eq!(status, StatusCode::OK);
        let sources = v["sources"].as_array().unwrap();
        assert_eq!(sources.len(), 2);
        let flink = sources.iter().find(|s| s["kind"] == "flink").unwrap();
        assert_eq!(flink["quality"], "missing", "never sampled is missing, not fresh or empty");
        let kafka = sources.iter().find(|s| s["kind"] == "kafka").unwrap();
        assert_eq!(kafka["targets"][0]["name"], "billing");
        let (status, _) = get("/api/v1/targets?source_kind=kafak").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
