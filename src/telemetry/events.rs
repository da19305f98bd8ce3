//! Telemetry events: one struct per notable occurrence whose `emit` writes the log line
//! and updates the metric together, so the two never disagree.

use super::metrics::Metrics;
use crate::store::SourceKind;

/// A sample attempt failed.
pub struct SampleFailed<'a> {
    pub kind: SourceKind,
    pub source: &'a str,
    /// Bounded error kind, used as a label.
    pub error_kind: &'static str,
    pub error: &'a (dyn std::error::Error + Send + Sync),
    pub consecutive_failures: u32,
}

impl SampleFailed<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics.count_error(self.kind, self.source, self.error_kind);
        // The first failure is news; repeats while a source stays down are noise.
        if self.consecutive_failures <= 1 {
            tracing::warn!(kind = self.kind.as_str(), source = self.source, error_kind = self.error_kind, error = %self.error, "sample failed, data marked stale");
        } else {
            tracing::debug!(kind = self.kind.as_str(), source = self.source, error_kind = self.error_kind, error = %self.error, failures = self.consecutive_failures, "sample failed again");
        }
    }
}

/// A sample succeeded.
pub struct SampleSucceeded<'a> {
    pub kind: SourceKind,
    pub source: &'a str,
    pub seconds: f64,
    /// Series produced by the sample.
    pub series: usize,
    /// Failures that preceded this success (0 in steady state).
    pub recovered_after: u32,
}

impl SampleSucceeded<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics.observe_sample(self.kind, self.source, self.seconds);
        if self.recovered_after > 0 {
            tracing::info!(kind = self.kind.as_str(), source = self.source, failures = self.recovered_after, "source recovered, data fresh again");
        }
        tracing::debug!(kind = self.kind.as_str(), source = self.source, seconds = self.seconds, series = self.series, "sampled");
    }
}

/// A cycle was skipped because the previous attempt had not returned.
pub struct SampleSkipped<'a> {
    pub kind: SourceKind,
    pub source: &'a str,
}

impl SampleSkipped<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics.count_skipped(self.kind, self.source);
        tracing::warn!(kind = self.kind.as_str(), source = self.source, "previous sample still running, cycle skipped");
    }
}

/// A sample succeeded but some values could not be computed (a group's offsets, probe
/// reads): the data is published without them, the target says why, and this counts it.
pub struct SamplePartial<'a> {
    pub kind: SourceKind,
    pub source: &'a str,
    /// Bounded causes and how many items each affected this cycle (may be empty when
    /// the previous cycle was partial and this one is complete).
    pub causes: &'a std::collections::BTreeMap<&'static str, u64>,
    pub first: Option<&'a str>,
    /// Whether the previous cycle was partial too (then this is not news).
    pub was_partial: bool,
}

impl SamplePartial<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        for (cause, n) in self.causes {
            metrics.count_partial(self.kind, self.source, cause, *n);
        }
        match (self.causes.is_empty(), self.was_partial) {
            (true, _) => tracing::info!(kind = self.kind.as_str(), source = self.source, "sample complete again"),
            (false, false) => {
                tracing::warn!(kind = self.kind.as_str(), source = self.source, causes = ?self.causes, first = self.first.unwrap_or(""), "sample incomplete: some values are missing")
            }
            (false, true) => {
                tracing::debug!(kind = self.kind.as_str(), source = self.source, causes = ?self.causes, "sample still incomplete")
            }
        }
    }
}
