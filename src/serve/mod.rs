//! The HTTP face of the agent: `/metrics`, `/healthz`, `/readyz`.
//!
//! [`router`] builds the whole app from shared state, so tests drive it without a socket.
//! Errors become one [`ApiError`] with a precise status and a short reason; internal
//! detail (error chains, paths) goes to the log, not to the client.

pub mod metrics;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::signal::Quality;
use crate::store::Store;
use metrics::{Format, Metrics};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
}

/// One error type for every handler.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("metrics encoding failed")]
    Encode(#[from] std::fmt::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self, "request failed");
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{self}\n")).into_response()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics_handler(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = s.metrics.encode(format)?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

/// Ready once every source has fresh data; otherwise 503 naming those that do not.
async fn readyz(State(s): State<AppState>) -> Response {
    let now = SystemTime::now();
    let not_ready: Vec<String> = s
        .store
        .health()
        .iter()
        .filter_map(|(h, _)| {
            let q = h.quality(now);
            (q != Quality::Fresh).then(|| format!("{} {}: {}", h.kind.as_str(), h.name, q.as_str()))
        })
        .collect();
    if not_ready.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{}\n", not_ready.join("\n"))).into_response()
    }
}
