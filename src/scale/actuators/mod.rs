//! The edges that change a replica count: one small async trait, one file per actuator.
//!
//! - [`process`]: a supervised pool of local consumer processes (the demo and tests);
//! - [`kubernetes`]: the `scale` subresource of a Deployment or StatefulSet;
//! - [`command`]: any program, the request as JSON on stdin and in the environment.
//!
//! # Guarantees
//! - `scale_to(n)` is idempotent: it sets the count to `n`, so repeating it after a
//!   crash or a timeout never adds replicas twice. Asking for the current count is
//!   [`ScaleOutcome::Unchanged`].
//! - Errors are typed, with a bounded [`ActuatorError::kind`] for metrics; no error text
//!   carries a credential.
//!
//! # Not done here
//! Deciding (see [`super::policy`]), journaling or verifying (the executor's job).

pub mod command;
pub mod kubernetes;
pub mod process;

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

/// A boxed future, so the trait stays object-safe (`Box<dyn Actuator>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an actuator is asked to do, with the decision behind it (the `command` actuator
/// hands this to its program as JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaleRequest {
    /// The scaling target's name.
    pub target: String,
    /// The count the caller believes is current (`None`: unknown).
    pub from: Option<u32>,
    pub to: u32,
    /// `lag`, `throughput`, `rollback`, `manual` …
    pub policy: String,
    /// The one-line why of the decision.
    pub why: String,
    pub dry_run: bool,
}

/// What a scale call did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ScaleOutcome {
    /// The count already was `replicas`.
    Unchanged { replicas: u32 },
    Scaled { from: Option<u32>, to: u32 },
}

/// Why an actuator call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActuatorError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot reach {what}: {message}")]
    Unreachable { what: String, message: String },
    #[error("{what} timed out after {secs:.1}s")]
    Timeout { what: String, secs: f64 },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("forbidden: {message}")]
    Forbidden { message: String },
    #[error("unauthorized: {message}")]
    Unauthorized { message: String },
    #[error("conflict on {what} after {attempts} attempts (someone else keeps changing it)")]
    Conflict { what: String, attempts: u32 },
    #[error("{what}: HTTP {status}: {message}")]
    Status { what: String, status: u16, message: String },
    #[error("{what}: invalid response: {message}")]
    Decode { what: String, message: String },
    #[error("cannot start {program}: {message}")]
    Spawn { program: String, message: String },
    #[error("{program} exited with {status}{stderr}")]
    Failed { program: String, status: String, stderr: String },
}

impl ActuatorError {
    /// Bounded label value.
    pub fn kind(&self) -> &'static str {
        match self {
            ActuatorError::Config(_) => "config",
            ActuatorError::Unreachable { .. } => "unreachable",
            ActuatorError::Timeout { .. } => "timeout",
            ActuatorError::NotFound { .. } => "not_found",
            ActuatorError::Forbidden { .. } => "forbidden",
            ActuatorError::Unauthorized { .. } => "unauthorized",
            ActuatorError::Conflict { .. } => "conflict",
            ActuatorError::Status { .. } => "http_status",
            ActuatorError::Decode { .. } => "decode",
            ActuatorError::Spawn { .. } => "spawn",
            ActuatorError::Failed { .. } => "failed",
        }
    }
}

/// Changes the replica count of one scaling target.
pub trait Actuator: Send + Sync {
    /// Bounded name: `process`, `kubernetes`, `command`.
    fn kind(&self) -> &'static str;
    /// The current desired count; `None` when the actuator cannot tell (a `command`
    /// without `current_command`): unknown, never 0.
    fn current(&self) -> BoxFuture<'_, Result<Option<u32>, ActuatorError>>;
    /// Sets the count to `req.to` (idempotent). A dry run only checks and reports.
    fn scale_to<'a>(&'a self, req: &'a ScaleRequest) -> BoxFuture<'a, Result<ScaleOutcome, ActuatorError>>;
}

/// The last `max` bytes of `bytes`, as text, for error messages.
pub(crate) fn tail_text(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}
