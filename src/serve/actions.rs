//! The remediation API: `GET /api/v1/actions`, `GET /api/v1/actions/{id}`,
//! `GET /api/v1/plan`, and the mutating `POST /api/v1/actions/{id}/approve` and
//! `POST /api/v1/runbooks/{name}/run`.
//!
//! # Guarantees
//! - Mutating endpoints need `Authorization: Bearer <token>`: 401 without it (or not a
//!   bearer token), 403 with a wrong one (compared in constant time). Without a
//!   configured token they are off (403 saying so). The token is never logged, echoed
//!   or put in an error.
//! - Without `[remediation]` every endpoint answers 404 saying remediation is off.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::remediate::executor::{Remediation, RequestError};
use crate::signal::Labels;

fn engine(s: &AppState) -> Result<&Arc<Remediation>, ApiError> {
    s.remediation.as_ref().ok_or_else(|| ApiError::NotFound("remediation is off: the configuration has no [remediation]".into()))
}

/// Checks the bearer token of a mutating request.
fn authorize(r: &Remediation, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = r.token() else {
        return Err(ApiError::Forbidden("mutating endpoints are off: no API token is configured ([remediation] api_token_file or api_token_env)".into()));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("invalid token".into()))
    }
}

/// Equality whose time does not depend on where the inputs differ. Pure.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff));
    }
    diff == 0
}

fn request_error(e: RequestError) -> ApiError {
    match e {
        RequestError::NoRun(_) | RequestError::NoRunbook(_) => ApiError::NotFound(e.to_string()),
        RequestError::NotAwaiting(_) => ApiError::Conflict(e.to_string()),
    }
}

/// Recent runs and decisions, newest first.
pub async fn list(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let r = engine(&s)?;
    Ok(Json(serde_json::json!({ "actions": r.list() })))
}

pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let r = engine(&s)?;
    let v = r.get(&id).ok_or_else(|| ApiError::NotFound(format!("no run {id:?}")))?;
    Ok(Json(serde_json::to_value(v).unwrap_or_default()))
}

/// What the agent would do now for every firing alert that names a runbook, and why.
pub async fn plan(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let r = engine(&s)?;
    let plans: Vec<serde_json::Value> = r
        .plan_now()
        .into_iter()
        .map(|(rule, labels, p)| serde_json::json!({ "rule": rule, "labels": labels, "plan": p }))
        .collect();
    Ok(Json(serde_json::json!({ "plans": plans })))
}

pub async fn approve(State(s): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let r = engine(&s)?;
    authorize(r, &headers)?;
    r.approve(&id).await.map_err(request_error)?;
    Ok(Json(serde_json::json!({ "approved": id })))
}

/// Body of `POST /api/v1/runbooks/{name}/run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The target's labels (e.g. `{"connect": "local", "connector": "sink"}`).
    pub target: Labels,
    /// Plan and audit only.
    #[serde(default)]
    pub dry_run: bool,
}

pub async fn run(State(s): State<AppState>, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let r = engine(&s)?;
    authorize(r, &headers)?;
    let req: RunRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    let v = r.run_manual(&name, &req.target, req.dry_run).await.map_err(request_error)?;
    Ok(Json(serde_json::to_value(v).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcdeg"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
