//! The agent's own telemetry: its metrics registry (what `/metrics` encodes) and its
//! events (one struct per notable occurrence whose `emit` writes the log line and the
//! metric together).
//!
//! Upstream of `serve`: the HTTP layer only encodes what is registered here, and nothing
//! here knows about HTTP.

pub mod events;
pub mod metrics;
pub mod remediation;
