//! Samplers: one file per source. A sampler measures and returns values; it never
//! decides, retries or schedules (that is the agent loop's job).

pub mod connect;
pub mod flink;
pub mod flink_api;
pub mod http;
pub mod kafka;
pub mod kafka_admin;
pub mod kafka_context;
pub mod kafka_diagnose;
pub mod kafka_direct;
pub mod kafka_plan;
pub mod kafka_probe;
pub mod kafka_snapshot;
pub mod kafka_wire;
pub mod prometheus;
