//! Scaling on the evidence: pure policies that compute a replica count with a one-line
//! why, the constraints every policy shares, ineffective-scale detection, the actuators
//! that change a count (process pool, Kubernetes, command) and the Flink job actions
//! (savepoint, stop-with-savepoint, resubmit with a new parallelism).
//!
//! Pure (no clock, no I/O): [`policy`], [`lag_policy`], [`throughput_policy`],
//! [`effectiveness`], [`config`]. Edges: [`actuators`], [`flink_job`].
//!
//! # Not done here
//! Runbooks, guards, the journal and the audit (the remediation executor); this module
//! gives it decisions and actions to call.

pub mod actuators;
pub mod config;
pub mod effectiveness;
pub mod flink_job;
pub mod lag_policy;
pub mod policy;
pub mod throughput_policy;
