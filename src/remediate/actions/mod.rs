//! Actions: one file per action, dispatched by the closed [`Action`] enum. Each attempt
//! has a timeout and returns a typed [`ActionOutcome`] or [`ActionError`]; the executor
//! decides about retries (only for idempotent actions, only for retryable errors).
//!
//! Requests are described by method and path only (never the base URL, which may carry
//! credentials), and responses are cut to [`MAX_RESPONSE`] bytes.

pub mod connect;
pub mod flink;
pub mod notify;
pub mod offsets;
pub mod scale;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::rules::file::runbook::Action;
use crate::signal::Labels;

/// Response bodies kept in outcomes and errors.
pub const MAX_RESPONSE: usize = 512;

/// What an action needs besides its parameters.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub run_id: &'a str,
    pub runbook: &'a str,
    pub target: &'a Labels,
    pub phase: &'a str,
    pub step: usize,
    pub client: &'a reqwest::Client,
    /// Kafka Connect clusters by source name (`[[connect]]`): base URLs.
    pub connect: &'a BTreeMap<String, String>,
    /// Budget of each request.
    pub timeout: Duration,
    /// Kafka clusters by name (`[[clusters]]`): client configurations (for `offsets`).
    pub kafka: &'a BTreeMap<String, rdkafka::ClientConfig>,
    /// The `offsets` procedure's own journal and audit log.
    pub offsets_files: (&'a std::path::Path, &'a std::path::Path),
    /// The `[[scale]]` targets, if any.
    pub scale: Option<&'a std::sync::Arc<crate::scale::runtime::ScaleRuntime>>,
    /// The `offsets` procedure's counters.
    pub offsets_metrics: &'a crate::telemetry::remediation::OffsetsMetrics,
    /// The samples, for actions that decide on fresh data (`scale`).
    pub store: &'a crate::store::Store,
    /// Flink clusters by source name (`[[flink]]`): base URLs.
    pub flink: &'a BTreeMap<String, String>,
}

/// A successful attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionOutcome {
    /// `METHOD path` (no host, no credentials).
    pub request: String,
    pub status: u16,
    pub response: String,
    /// The state verified afterwards (e.g. `connector RUNNING, tasks RUNNING`).
    pub observed: String,
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    Config(String),
    #[error("{request}: timed out")]
    Timeout { request: String },
    #[error("{request}: {message}")]
    Unreachable { request: String, message: String },
    #[error("{request}: HTTP {status}: {body}")]
    Status { request: String, status: u16, body: String },
    /// A bound of the action refused it; nothing was sent.
    #[error("{request}: refused by its bound: {why}")]
    Bound { request: String, why: String },
    #[error("{request}: expected {expected} within {deadline:?}, last seen: {observed}")]
    NotReached { request: String, expected: String, observed: String, deadline: Duration },
    /// A procedure that ran and ended other than succeeded (refused, aborted, failed).
    #[error("{request}: {end}: {reason}")]
    Ended { request: String, end: String, reason: String },
    /// The action decided not to act, or undid what it did (a `scale` step on stale
    /// data, or an ineffective scale-out rolled back): another attempt would only repeat
    /// the same decision.
    #[error("{request}: {why}")]
    Refused { request: String, why: String },
}

impl ActionError {
    /// Bounded label value.
    pub fn kind(&self) -> &'static str {
        match self {
            ActionError::Config(_) => "config",
            ActionError::Timeout { .. } => "timeout",
            ActionError::Unreachable { .. } => "unreachable",
            ActionError::Status { .. } => "http_status",
            ActionError::NotReached { .. } => "not_reached",
            ActionError::Ended { .. } => "ended",
            ActionError::Refused { .. } => "refused",
            ActionError::Bound { .. } => "bound",
        }
    }

    /// Worth another attempt (if the action is idempotent): not a configuration error,
    /// not a 4xx other than 409 (Connect answers 409 during a rebalance).
    pub fn retryable(&self) -> bool {
        match self {
            ActionError::Config(_) | ActionError::Ended { .. } | ActionError::Refused { .. } | ActionError::Bound { .. } => false,
            ActionError::Status { status, .. } => *status >= 500 || *status == 409 || *status == 429,
            _ => true,
        }
    }
}

/// Runs one attempt of `action`.
pub async fn perform(action: &Action, cx: &Context<'_>) -> Result<ActionOutcome, ActionError> {
    match action {
        Action::Connect(a) => connect::perform(a, cx).await,
        Action::Notify(a) => notify::perform(a, cx).await,
        Action::Offsets(a) => offsets::perform(a, cx).await,
        Action::Scale(a) => scale::perform(a, cx).await,
        Action::Flink(a) => flink::perform(a, cx).await,
    }
}

/// A reqwest error as text, with its causes, without the URL (which may hold secrets).
pub fn error_text(e: &reqwest::Error) -> String {
    let mut message = e.without_url_ref().to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message = format!("{message}: {s}");
        src = s.source();
    }
    message
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        if self.is_timeout() {
            "timed out".into()
        } else if self.is_connect() {
            "cannot connect".into()
        } else if self.is_body() || self.is_decode() {
            "invalid response body".into()
        } else {
            "request failed".into()
        }
    }
}

/// `s` cut to [`MAX_RESPONSE`] bytes at a character boundary.
pub fn cut(s: String) -> String {
    super::connect_api::cut_at(s, MAX_RESPONSE)
}

pub use super::connect_api::segment;
