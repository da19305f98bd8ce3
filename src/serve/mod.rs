//! The HTTP face of the agent: `/metrics`, `/healthz`, `/readyz`, the JSON API
//! ([`api`]) and the remediation API ([`actions`]).
//!
//! [`router`] builds the whole app from shared state, so tests drive it without a socket.
//! Errors become one [`ApiError`] with a precise status and a short reason; internal
//! detail (error chains, paths) goes to the log, not to the client.

pub mod actions;
pub mod api;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::signal::Quality;
use crate::store::Store;
use crate::telemetry::metrics::{Format, Metrics};

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
}

/// One error type for every handler.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says which parameter and why.
    #[error("{0}")]
    BadRequest(String),
    #[error("metrics encoding failed")]
    Encode(#[from] std::fmt::Error),
    /// No bearer token given.
    #[error("missing bearer token (Authorization: Bearer <token>)")]
    Unauthorized,
    /// A wrong token, or an endpoint that is off.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
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
            ApiError::Encode(_) => {
                tracing::error!(error = %self, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/targets", get(api::targets))
        .route("/api/v1/signals", get(api::signals))
        .route("/api/v1/rules", get(api::rules))
        .route("/api/v1/slos", get(api::slos))
        .route("/api/v1/actions", get(actions::list))
        .route("/api/v1/actions/{id}", get(actions::get))
        .route("/api/v1/actions/{id}/approve", post(actions::approve))
        .route("/api/v1/runbooks/{name}/run", post(actions::run))
        .route("/api/v1/plan", get(actions::plan))
        .with_state(state)
}

async fn metrics_handler(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = s.metrics.encode(format)?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
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
    use axum::http::Request;
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
            targets: vec![TargetInfo { kind: "kafka_group", name: "billing".into(), health: "ok", detail: serde_json::json!({}) }],
            dlq_links: Vec::new(),
        };
        store.record_success(SourceKind::Kafka, "local", SystemTime::now(), sample);
        let rules = Arc::new(crate::evaluate::Rules::load(crate::config::RulesConfig::for_tests(), Default::default()).unwrap());
        let metrics = Arc::new(Metrics::new(store.clone(), rules.clone()));
        router(AppState { store, metrics, rules, tasks: Default::default(), remediation: None })
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
