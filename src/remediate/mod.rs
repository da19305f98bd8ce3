//! The remediate stage: turns verdicts into guarded, journaled, verified, audited runs of
//! runbooks (DESIGN.md "Safety principles of remediation").
//!
//! - [`plan`] and [`guard`]: pure decisions, (verdict, runbook, guard state, now) → plan.
//! - [`journal`]: the write-ahead journal, source of truth for runs in progress.
//! - [`audit`]: the JSONL audit log of every decision, rotating.
//! - [`actions`]: one file per action (`connect`, `notify`), each with a timeout and a
//!   typed outcome.
//! - [`client`]: the CLI side of the remediation API.
//! - [`view`]: runs as the API shows them.
//! - [`executor`]: consumes verdicts, plans, runs, verifies, rolls back, escalates, and
//!   recovers runs from the journal after a restart.
//!
//! Runbooks themselves are parsed with the rules (`crate::rules::file::runbook`); the
//! verdict type is `crate::rules::verdict` (evaluation emits it and must not depend on
//! this module).

pub mod actions;
pub mod audit;
pub mod client;
pub mod connect_api;
pub mod executor;
pub mod guard;
pub mod journal;
pub mod offsets;
pub mod plan;
pub mod view;
