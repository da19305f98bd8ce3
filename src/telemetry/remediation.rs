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
    /// The reprocessing procedure's own counters (`offsets` steps run inside the agent).
    pub offsets: OffsetsMetrics,
}

/// The reprocessing procedure (`crate::remediate::offsets`): procedures by outcome,
/// records skipped and replayed by committed moves, dead-letter copies produced, and
/// refusals by reason. Every label value comes from a closed set ([`OFFSETS_OUTCOMES`],
/// [`OFFSETS_REFUSALS`]); an unregistered default (the CLI) counts into nothing.
#[derive(Debug, Clone, Default)]
pub struct OffsetsMetrics {
    procedures: Family<Labels, Counter>,
    skipped: Counter,
    replayed: Counter,
    dlq_copies: Counter,
    refusals: Family<Labels, Counter>,
}

/// How a procedure ends, as counted (`verify_failed`: committed and resumed, but the
/// group's lag did not move as the preview predicted).
pub const OFFSETS_OUTCOMES: [&str; 6] = ["succeeded", "refused", "aborted", "failed", "verify_failed", "interrupted"];
/// Why a procedure was refused: a blast-radius limit, a group that kept members, a plan
/// that could not be computed, a pause that cannot be undone.
pub const OFFSETS_REFUSALS: [&str; 7] = ["max_partitions", "max_skipped", "max_replayed", "max_rewind_age", "group_not_empty", "plan_error", "pause_unsupported"];

impl OffsetsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = OffsetsMetrics::default();
        // Every outcome and reason exists from the start (at 0): a rate over a series
        // that appears on its first increment misses that increment.
        for o in OFFSETS_OUTCOMES {
            m.procedures.get_or_create(&vec![("outcome", o.to_string())]).inc_by(0);
        }
        for r in OFFSETS_REFUSALS {
            m.refusals.get_or_create(&vec![("reason", r.to_string())]).inc_by(0);
        }
        registry.register("offsets_procedures", "Reprocessing procedures (pause, offset move, resume, verify) by outcome (succeeded, refused, aborted, failed, verify_failed, interrupted)", m.procedures.clone());
        registry.register("offsets_records_skipped", "Records skipped (never processed) by committed offset moves", m.skipped.clone());
        registry.register("offsets_records_replayed", "Records to be processed again by committed offset moves (rewinds)", m.replayed.clone());
        registry.register("offsets_dlq_copies", "Poison records copied to a dead-letter topic by the reprocessing procedure", m.dlq_copies.clone());
        registry.register(
            "offsets_refusals",
            "Reprocessing procedures refused, by reason (max_partitions, max_skipped, max_replayed, max_rewind_age, group_not_empty, plan_error, pause_unsupported)",
            m.refusals.clone(),
        );
        m
    }

    /// A procedure ended; `outcome` must be one of [`OFFSETS_OUTCOMES`].
    pub fn procedure(&self, outcome: &'static str) {
        debug_assert!(OFFSETS_OUTCOMES.contains(&outcome), "{outcome}");
        self.procedures.get_or_create(&vec![("outcome", outcome.to_string())]).inc();
    }

    /// A refusal; `reason` must be one of [`OFFSETS_REFUSALS`].
    pub fn refusal(&self, reason: &'static str) {
        debug_assert!(OFFSETS_REFUSALS.contains(&reason), "{reason}");
        self.refusals.get_or_create(&vec![("reason", reason.to_string())]).inc();
    }

    /// A move was committed.
    pub fn committed(&self, skipped: u64, replayed: u64) {
        self.skipped.inc_by(skipped);
        self.replayed.inc_by(replayed);
    }

    pub fn dlq_copy(&self) {
        self.dlq_copies.inc();
    }
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
            offsets: OffsetsMetrics::register(registry),
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
