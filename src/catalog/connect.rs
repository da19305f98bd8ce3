//! Signals of the Kafka Connect source.
//!
//! Data only: the samplers produce these signals, rules and `/metrics` read them.

use crate::signal::{MetricKind, SignalDef};

const C: &[&str] = &["connect", "connector"];
const CT: &[&str] = &["connect", "connector", "task"];

const fn gauge(name: &'static str, metric: &'static str, labels: &'static [&'static str], help: &'static str) -> SignalDef {
    SignalDef { name, metric, kind: MetricKind::Gauge, help, labels }
}

/// Signals of the Connect source.
pub const SIGNALS: &[SignalDef] = &[
    gauge("connectors", "connect_connectors", &["connect"], "Connectors on the Connect cluster"),
    gauge("connector_state", "connect_connector_state", &["connect", "connector", "state"], "Connector state: 1 for the current one of RUNNING, PAUSED, STOPPED, FAILED, UNASSIGNED, RESTARTING"),
    gauge("connector_info", "connect_connector_info", &["connect", "connector", "type"], "Connector type (sink, source or unknown); always 1"),
    gauge("connector_tasks", "connect_connector_tasks", C, "Tasks the connector has (task configurations; 0 while STOPPED)"),
    gauge("connector_failed_tasks", "connect_connector_failed_tasks", C, "Tasks of the connector in state FAILED"),
    gauge("connector_task_state", "connect_task_state", &["connect", "connector", "task", "state"], "Task state: 1 for the current one of RUNNING, PAUSED, STOPPED, FAILED, UNASSIGNED, RESTARTING"),
    gauge("connector_task_failed_seconds", "connect_task_failed_seconds", CT, "Seconds since streamguard first saw the task FAILED; present only while it is FAILED"),
];
