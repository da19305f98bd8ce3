//! The JSON API: `GET /api/v1/targets`, `GET /api/v1/signals` and `GET /api/v1/scale`.
//!
//! Read-only views of the store. Every value carries its quality; a value that is not
//! fresh is `null` (with the last known value and its time beside it), never 0.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{clip, off_async, ApiError, AppState};
use crate::signal::{unix_secs, Quality, TargetInfo};

/// Query of `/api/v1/targets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsQuery {
    /// Only sources of this kind (`kafka`, `connect`, `flink`, `prometheus`).
    pub source_kind: Option<String>,
    /// Only targets of this kind (`kafka_group`, `connector`, `flink_job` …).
    pub kind: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SourceView {
    pub kind: &'static str,
    pub name: String,
    pub quality: Quality,
    pub last_success_time: Option<f64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub targets: Vec<TargetInfo>,
}

const SOURCE_KINDS: [&str; 4] = ["kafka", "connect", "flink", "prometheus"];

/// Every watched thing and its health, grouped by the source that watches it.
pub async fn targets(State(s): State<AppState>, q: Result<Query<TargetsQuery>, QueryRejection>) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q?;
    if let Some(k) = &q.source_kind {
        if !SOURCE_KINDS.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!("source_kind: unknown kind {:?} (one of {})", clip(k), SOURCE_KINDS.join(", "))));
        }
    }
    let now = SystemTime::now();
    let sources: Vec<SourceView> = s.store.with_entries(|entries| {
        entries
            .filter(|e| q.source_kind.as_deref().is_none_or(|k| k == e.health.kind.as_str()))
            .map(|e| SourceView {
                kind: e.health.kind.as_str(),
                name: e.health.name.clone(),
                quality: e.health.quality(now),
                last_success_time: e.health.last_success.map(unix_secs),
                last_error: e.health.last_error.clone(),
                consecutive_failures: e.health.consecutive_failures,
                targets: e.targets.iter().filter(|t| q.kind.as_deref().is_none_or(|k| k == t.kind)).cloned().collect(),
            })
            .collect()
    });
    // The scaling targets' state (replicas, last decision, block, rebalance, pool exits).
    let scale = s.scale.as_ref().map(|rt| rt.status(now)).unwrap_or_default();
    Ok(Json(serde_json::json!({ "sources": sources, "scale": scale })))
}

/// Every `[[scale]]` target: current and desired replicas, the last decision and its why,
/// the scale-out block (ineffective scale-out), the last rebalance, and for a `process`
/// pool its replicas and recent exits.
pub async fn scale(State(s): State<AppState>) -> Json<serde_json::Value> {
    let targets = s.scale.as_ref().map(|rt| rt.status(SystemTime::now())).unwrap_or_default();
    Json(serde_json::json!({ "targets": targets }))
}

/// Query of `/api/v1/signals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsQuery {
    /// Signal name (`lag_seconds`, `checkpoint_age_seconds`, or a Prometheus query's).
    pub signal: Option<String>,
    /// A watched thing: matches series with any label equal to it (a group, connector,
    /// job, topic or cluster name).
    pub target: Option<String>,
    /// Only series of this source name.
    pub source: Option<String>,
    /// How much history to return per series (humantime; default `5m`, `0s` for none).
    pub history: Option<String>,
    /// At most this many series (default 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct SeriesView {
    pub signal: String,
    pub labels: BTreeMap<String, String>,
    pub source_kind: &'static str,
    pub source: String,
    pub quality: Quality,
    /// The current value when fresh; `null` otherwise.
    pub value: Option<f64>,
    pub last_value: Option<f64>,
    pub last_time: Option<f64>,
    /// `[unix_seconds, value]` pairs, oldest first.
    pub history: Vec<(f64, f64)>,
}

/// Current values, quality and recent history of matching series.
pub async fn signals(State(s): State<AppState>, q: Result<Query<SignalsQuery>, QueryRejection>) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q?;
    let history = match q.history.as_deref() {
        None => Duration::from_secs(300),
        Some(h) => humantime::parse_duration(h)
            .map_err(|e| ApiError::bad_request(format!("history: invalid duration {:?}: {e}", clip(h))))?,
    };
    let limit = q.limit.unwrap_or(1000).min(100_000);
    let now = SystemTime::now();
    let since = now.checked_sub(history).unwrap_or(SystemTime::UNIX_EPOCH);
    let (views, known, total) = s.store.with_entries(|entries| {
        let mut known: std::collections::BTreeSet<String> = crate::catalog::all().map(|d| d.name.to_string()).collect();
        let mut views = Vec::new();
        let mut total = 0usize;
        for e in entries {
            if q.source.as_deref().is_some_and(|src| src != e.health.name) {
                known.extend(e.iter().map(|r| r.signal().to_string()));
                continue;
            }
            for r in e.iter() {
                let signal = r.signal();
                if !known.contains(signal) {
                    known.insert(signal.to_string());
                }
                if q.signal.as_deref().is_some_and(|sig| sig != signal) {
                    continue;
                }
                if q.target.as_deref().is_some_and(|t| !r.labels().any(|(_, v)| v == t)) {
                    continue;
                }
                total += 1;
                if views.len() >= limit {
                    continue;
                }
                let quality = e.quality_of(now, &r);
                let last = r.last();
                views.push(SeriesView {
                    signal: signal.to_string(),
                    labels: r.labels_map(),
                    source_kind: e.health.kind.as_str(),
                    source: e.health.name.clone(),
                    quality,
                    value: if quality == Quality::Fresh { last.map(|p| p.1) } else { None },
                    last_value: last.map(|p| p.1),
                    last_time: last.map(|p| unix_secs(p.0)),
                    history: if history.is_zero() { Vec::new() } else { r.since(since).map(|(t, v)| (unix_secs(t), v)).collect() },
                });
            }
        }
        (views, known, total)
    });
    if let Some(sig) = &q.signal {
        if !known.contains(sig) {
            let hint = crate::suggest::nearest(sig, known.iter().map(String::as_str))
                .map(|n| format!(" (did you mean {n:?}?)"))
                .unwrap_or_default();
            return Err(ApiError::bad_request(format!("signal: unknown signal {:?}{hint}", clip(sig))));
        }
    }
    let mut views = views;
    views.sort_by(|a, b| (&a.signal, &a.labels).cmp(&(&b.signal, &b.labels)));
    Ok(Json(serde_json::json!({ "signals": views, "total": total, "truncated": total > views.len() })))
}

/// Every alert rule: its condition, timing and instances with their states.
pub async fn rules(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    // Thousands of rules make this CPU work: off the async threads.
    off_async(move || rules_json(&s)).await.map(Json)
}

fn rules_json(s: &AppState) -> serde_json::Value {
    let reload = s.rules.reload.read().unwrap_or_else(|p| p.into_inner()).clone();
    let rules: Vec<serde_json::Value> = s
        .rules
        .rule_statuses()
        .into_iter()
        .map(|r| {
            let instances: Vec<serde_json::Value> =
                r.instances.iter().map(|(labels, i)| serde_json::json!({ "labels": labels, "instance": i })).collect();
            serde_json::json!({
                "file": r.file, "name": r.name, "condition": r.condition, "for_seconds": r.for_seconds,
                "keep_firing_for_seconds": r.keep_firing_for_seconds, "labels": r.labels, "annotations": r.annotations,
                "runbooks": r.runbooks, "unknown": r.unknown, "instances": instances, "quiet_instances": r.quiet,
            })
        })
        .collect();
    serde_json::json!({ "rules": rules, "reload": reload })
}

/// Every SLO: SLI, error budget left, burn rates and burn-rate alerts; and the state
/// file's health (what was restored or rejected at start, whether writes succeed).
pub async fn slos(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "slos": s.rules.slo_statuses(), "state": s.rules.state.status() }))
}
