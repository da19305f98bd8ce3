//! Scaling on the evidence: pure policies that compute a replica count with a one-line
//! why, the constraints every policy shares, ineffective-scale detection, and the
//! actuators that change a count (process pool, Kubernetes, command). The Flink job
//! actions (savepoint, stop-with-savepoint, resubmit with a new parallelism) are in
//! `crate::actions_flink`.
//!
//! Pure (no clock, no I/O): [`policy`], [`lag_policy`], [`throughput_policy`],
//! [`effectiveness`], [`config`]. Edges: [`actuators`], [`runtime`] (which reads the
//! group's signals through a function the caller gives it).
//!
//! Depends only on `signal` and `limits`, so the agent's config can hold scale targets
//! (`crate::config` → `scale`) without a cycle.
//!
//! # Not done here
//! Runbooks, guards, the journal and the audit (the remediation executor, whose `scale`
//! action calls [`runtime`]).

pub mod actuators;
pub mod config;
pub mod effectiveness;
pub mod lag_policy;
pub mod policy;
pub mod rebalance;
pub mod runtime;
pub mod status;
pub mod throughput_policy;
