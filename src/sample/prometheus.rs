//! The Prometheus source. SKELETON: to be implemented (see the signature contract).

use std::time::SystemTime;

use super::http::HttpError;
use crate::config::PrometheusConfig;
use crate::signal::SourceSample;

/// Runs the configured instant queries against one Prometheus server.
#[derive(Debug)]
pub struct PrometheusSampler {
    name: String,
}

impl PrometheusSampler {
    pub fn new(cfg: &PrometheusConfig) -> Result<Self, HttpError> {
        Ok(PrometheusSampler { name: cfg.source.name.clone() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn sample(&self, now: SystemTime) -> Result<SourceSample, HttpError> {
        let _ = now;
        Err(HttpError::Client("not implemented".into()))
    }
}
