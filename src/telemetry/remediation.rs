//! Remediation instruments: runs by runbook and outcome, steps by action and outcome,
//! step durations, runs in progress, guard blocks by reason, dropped verdicts. Label
//! values are bounded: runbook names come from the rule files, actions and outcomes and
//! guard names from closed sets.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone)]
pub struct RemediationMetrics {
    runs: Family<Labels, Counter>,
    steps: Family<Labels, Counter>,
    step_duration: Family<Labels, Histogram>,
    in_progress: Gauge,
    guard_blocks: Family<Labels, Counter>,
    write_errors: Family<Labels, Counter>,
}

impl RemediationMetrics {
    /// Registers every instrument; `dropped` is the evaluator's dropped-verdict counter.
    pub fn register(registry: &mut Registry, dropped: Counter) -> Self {
        let m = RemediationMetrics {
            runs: Family::default(),
            steps: Family::default(),
            step_duration: Family::new_with_constructor(|| Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])),
            in_progress: Gauge::default(),
            guard_blocks: Family::default(),
            write_errors: Family::default(),
        };
        for file in ["journal", "audit"] {
            m.write_errors.get_or_create(&vec![("file", file.to_string())]).inc_by(0);
        }
        registry.register(
            "remediation_runs",
            "Runbook runs by runbook and outcome (succeeded, failed, aborted, expired, dry_run, blocked)",
            m.runs.clone(),
        );
        registry.register("remediation_steps", "Runbook steps by action and outcome (ok, error kind)", m.steps.clone());
        registry.register_with_unit("remediation_step_duration", "Duration of one runbook step", Unit::Seconds, m.step_duration.clone());
        registry.register("remediation_runs_in_progress", "Runbook runs in progress or awaiting approval", m.in_progress.clone());
        registry.register(
            "remediation_guard_blocks",
            "Planned runs a guard blocked, by runbook and guard (trigger, target, cooldown, target_busy, rate, concurrency, precondition)",
            m.guard_blocks.clone(),
        );
        registry.register(
            "remediation_write_errors",
            "Failed writes of the remediation journal (the step is not run) or audit log, by file (journal, audit)",
            m.write_errors.clone(),
        );
        registry.register(
            "remediation_verdicts_dropped",
            "Verdicts dropped because the remediation queue was full",
            dropped,
        );
        m
    }

    pub fn run(&self, runbook: &str, outcome: &'static str) {
        self.runs.get_or_create(&vec![("runbook", runbook.to_string()), ("outcome", outcome.to_string())]).inc();
    }

    pub fn step(&self, action: &'static str, outcome: &'static str, seconds: f64) {
        self.steps.get_or_create(&vec![("action", action.to_string()), ("outcome", outcome.to_string())]).inc();
        self.step_duration.get_or_create(&vec![("action", action.to_string())]).observe(seconds);
    }

    pub fn set_in_progress(&self, n: usize) {
        self.in_progress.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn write_error(&self, file: &'static str) {
        self.write_errors.get_or_create(&vec![("file", file.to_string())]).inc();
    }

    pub fn guard_block(&self, runbook: &str, guard: &'static str) {
        self.guard_blocks.get_or_create(&vec![("runbook", runbook.to_string()), ("guard", guard.to_string())]).inc();
    }
}
