//! Signals of the Flink source.
//!
//! Data only: the samplers produce these signals, rules and `/metrics` read them.

use crate::signal::{MetricKind, SignalDef};

/// Labels of every per-job series. The job name is `flink_job`, never `job`: Prometheus
/// reserves `job` (and `instance`) as target labels and, with the default
/// `honor_labels: false`, renames an exported `job` to `exported_job`, which would merge
/// every Flink job into one series group in `by (flink, job)` queries.
const J: &[&str] = &["flink", "flink_job"];

const fn gauge(name: &'static str, metric: &'static str, labels: &'static [&'static str], help: &'static str) -> SignalDef {
    SignalDef { name, metric, kind: MetricKind::Gauge, help, labels }
}

const fn counter(name: &'static str, metric: &'static str, labels: &'static [&'static str], help: &'static str) -> SignalDef {
    SignalDef { name, metric, kind: MetricKind::Counter, help, labels }
}

/// Signals of the Flink source. Every job series is labelled `flink` (the source name)
/// and `flink_job` (the job name).
pub const SIGNALS: &[SignalDef] = &[
    gauge(
        "flink_job_state",
        "flink_job_state",
        &["flink", "flink_job", "state"],
        "Job state: 1 for the current one of INITIALIZING, CREATED, RUNNING, FAILING, FAILED, CANCELLING, CANCELED, FINISHED, RESTARTING, SUSPENDED, RECONCILING",
    ),
    gauge(
        "flink_job_uptime_seconds",
        "flink_job_uptime_seconds",
        J,
        "Seconds since the job started; for a job in a terminal state, how long it ran",
    ),
    counter(
        "flink_job_restarts",
        "flink_job_restarts",
        J,
        "Restarts of the job (Flink's numRestarts job metric); absent until Flink's metric fetcher reports it",
    ),
    gauge(
        "checkpoint_age_seconds",
        "flink_checkpoint_age_seconds",
        J,
        "Seconds since the latest completed checkpoint was acknowledged; absent before the first one completes and for jobs in a terminal state",
    ),
    counter("checkpoints_failed", "flink_checkpoints_failed", J, "Failed checkpoints of the job, including ones that failed to trigger"),
    counter("checkpoints_completed", "flink_checkpoints_completed", J, "Completed checkpoints of the job"),
    gauge(
        "checkpoints_failed_rate",
        "flink_checkpoints_failed_rate",
        J,
        "Failed checkpoints per second since the previous sample of the same job run; absent on a run's first sample",
    ),
    gauge(
        "checkpoint_duration_seconds",
        "flink_checkpoint_duration_seconds",
        J,
        "End-to-end duration of the latest completed checkpoint",
    ),
    gauge(
        "checkpoint_size_bytes",
        "flink_checkpoint_size_bytes",
        J,
        "Data persisted by the latest completed checkpoint (checkpointed_size; the full state_size when Flink reports no checkpointed size)",
    ),
    gauge("flink_jobs", "flink_jobs", &["flink"], "Jobs the JobManager lists, in any state (several runs can share a name)"),
];
