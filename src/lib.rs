//! streamguard: keeps streaming pipelines (Kafka, Kafka Connect, Flink) inside their SLOs.
//!
//! Data flows one way: `config` → `sample` (one module per source) → `store` →
//! `serve` (`/metrics`, health). See `DESIGN.md` in the shared docs and the README.

pub mod actions_flink;
pub mod agent;
pub mod catalog;
pub mod config;
pub mod derive;
pub mod evaluate;
pub mod heap;
pub mod limits;
pub mod record;
pub mod remediate;
pub mod replay;
pub mod notify;
pub mod report;
pub mod rules;
pub mod sample;
pub mod scale;
pub mod serve;
pub mod signal;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod suggest;
pub mod supervise;
pub mod window;
