//! The Kafka Connect source. SKELETON: to be implemented (see the signature contract).

use std::time::SystemTime;

use super::http::HttpError;
use crate::config::HttpSourceConfig;
use crate::signal::{SignalDef, SourceSample};

/// Signals of the Connect source.
pub const SIGNALS: &[SignalDef] = &[];

/// Samples one Connect cluster over its REST API.
#[derive(Debug)]
pub struct ConnectSampler {
    name: String,
}

impl ConnectSampler {
    pub fn new(cfg: &HttpSourceConfig) -> Result<Self, HttpError> {
        Ok(ConnectSampler { name: cfg.name.clone() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One sample at `now`.
    pub async fn sample(&self, now: SystemTime) -> Result<SourceSample, HttpError> {
        let _ = now;
        Err(HttpError::Client("not implemented".into()))
    }
}
