//! The planner: a pure function from (verdict, runbook, guard state, precondition
//! outcomes, mode, now) to a [`Plan`], which says what would run, for which target, and
//! every guard's outcome. No I/O, no clock: tested with plain values.
//!
//! # Guarantees
//! - Every guard runs and is recorded, even after one has blocked, so the audit log
//!   shows the whole picture.
//! - A plan is [`Decision::Run`] only when every guard passed.

use std::time::SystemTime;

use serde::Serialize;

use super::guard::{self, GuardOutcome, GuardState};
use crate::rules::file::runbook::{Mode, Runbook};
use crate::rules::verdict::Verdict;
use crate::signal::Labels;

/// What the planner decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Every guard passed: run (or, in dry-run, say what would run).
    Run,
    /// A guard blocked.
    Blocked,
}

/// A planned step, for display.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedStep {
    pub phase: &'static str,
    pub index: usize,
    pub action: &'static str,
    pub description: String,
    pub idempotent: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub runbook: String,
    /// `None` when the instance lacks the runbook's target labels.
    pub target: Option<Labels>,
    pub mode: Mode,
    pub decision: Decision,
    pub guards: Vec<GuardOutcome>,
    pub steps: Vec<PlannedStep>,
    #[serde(with = "crate::signal::unix_seconds")]
    pub at: SystemTime,
}

impl Plan {
    /// The first guard that blocked.
    pub fn blocked_by(&self) -> Option<&GuardOutcome> {
        self.guards.iter().find(|g| !g.passed)
    }
}

/// How a run was asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger<'a> {
    /// A rule's verdict.
    Verdict(&'a Verdict),
    /// An operator (`streamguard act`, `POST /api/v1/runbooks/{name}/run`): no trigger
    /// guard, the target is given.
    Manual(&'a Labels),
}

/// The steps of `runbook`, in order, with their phase.
pub fn steps(runbook: &Runbook) -> Vec<PlannedStep> {
    let phase = |name: &'static str, steps: &[crate::rules::file::runbook::Step]| -> Vec<PlannedStep> {
        steps
            .iter()
            .enumerate()
            .map(|(index, s)| PlannedStep { phase: name, index, action: s.name(), description: s.describe(), idempotent: s.idempotent() })
            .collect()
    };
    let mut out = phase("steps", &runbook.steps);
    if let Some(v) = &runbook.verify {
        out.push(PlannedStep {
            phase: "verify",
            index: 0,
            action: "verify",
            description: format!("{} within {}", v.condition.text, humantime::format_duration(v.deadline)),
            idempotent: true,
        });
    }
    out.extend(phase("rollback", &runbook.rollback));
    out.extend(phase("escalate", &runbook.escalate));
    out
}

/// Plans one run. `preconditions` are the runbook's preconditions evaluated for the target
/// on fresh data by the caller (see [`guard::preconditions`]).
pub fn plan(trigger: Trigger, runbook: &Runbook, state: &GuardState, preconditions: &[GuardOutcome], mode: Mode, now: SystemTime) -> Plan {
    let mut guards = Vec::new();
    let target = match trigger {
        Trigger::Verdict(v) => {
            guards.push(guard::trigger(v));
            match guard::target(runbook, &v.labels) {
                Ok(t) => Some(t),
                Err(why) => {
                    guards.push(GuardOutcome { guard: "target", passed: false, reason: format!("target: {why}") });
                    None
                }
            }
        }
        Trigger::Manual(t) => match guard::target(runbook, t) {
            Ok(t) => Some(t),
            Err(why) => {
                guards.push(GuardOutcome { guard: "target", passed: false, reason: format!("target: {why}") });
                None
            }
        },
    };
    if let Some(t) = &target {
        guards.push(guard::cooldown(runbook, t, state, now));
        guards.push(guard::one_per_target(t, state));
    }
    guards.push(guard::rate(runbook, state, now));
    guards.push(guard::concurrency(state));
    guards.extend(preconditions.iter().cloned());
    let decision = if guards.iter().all(|g| g.passed) { Decision::Run } else { Decision::Blocked };
    Plan { runbook: runbook.name.clone(), target, mode, decision, guards, steps: steps(runbook), at: now }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::eval::AlertState;
    use crate::rules::expr::Truth;
    use crate::rules::file::runbook::Guards;
    use crate::rules::verdict::VerdictKind;
    use std::time::Duration;

    use crate::remediate::guard::tests::{labels, t};

    fn runbook() -> Runbook {
        Runbook {
            file: "r.yaml".into(),
            name: "restart".into(),
            mode: None,
            target: vec!["connect".into(), "connector".into()],
            guards: Guards { cooldown: Duration::from_secs(600), max_runs: 3, window: Duration::from_secs(3600), preconditions: Vec::new() },
            steps: Vec::new(),
            verify: None,
            rollback: Vec::new(),
            escalate: Vec::new(),
            labels: Default::default(),
        }
    }

    fn verdict(fresh: bool) -> Verdict {
        Verdict {
            kind: VerdictKind::Alert,
            rule: "connector-task-failed".into(),
            labels: labels("a"),
            from: AlertState::Pending,
            to: AlertState::Firing,
            truth: Truth::True,
            value: Some(1.0),
            fresh,
            evidence: Vec::new(),
            runbooks: vec!["restart".into()],
            at: t(0),
        }
    }

    fn state(runs: Vec<guard::PastRun>) -> GuardState {
        GuardState { runs, max_concurrent: 2 }
    }

    #[test]
    fn a_fresh_firing_verdict_with_every_guard_passing_plans_a_run_for_its_target() {
        let p = plan(Trigger::Verdict(&verdict(true)), &runbook(), &state(vec![]), &[], Mode::Act, t(1));
        assert_eq!(p.decision, Decision::Run, "{p:?}");
        assert_eq!(p.target, Some(labels("a")));
        let names: Vec<&str> = p.guards.iter().map(|g| g.guard).collect();
        assert_eq!(names, ["trigger", "cooldown", "target_busy", "rate", "concurrency"]);
    }

    #[test]
    fn a_second_failure_inside_the_cooldown_is_blocked_by_cooldown_and_every_guard_is_still_recorded() {
        let past = guard::PastRun { runbook: "restart".into(), target: labels("a"), started: t(0), active: false };
        let p = plan(Trigger::Verdict(&verdict(true)), &runbook(), &state(vec![past]), &[], Mode::Act, t(60));
        assert_eq!(p.decision, Decision::Blocked);
        assert!(p.blocked_by().unwrap().reason.starts_with("cooldown:"), "{p:?}");
        assert_eq!(p.guards.len(), 5);
    }

    #[test]
    fn stale_data_blocks_before_anything_else() {
        let p = plan(Trigger::Verdict(&verdict(false)), &runbook(), &state(vec![]), &[], Mode::Act, t(1));
        assert_eq!(p.decision, Decision::Blocked);
        assert_eq!(p.blocked_by().unwrap().guard, "trigger");
        assert!(p.blocked_by().unwrap().reason.starts_with("stale data"));
    }

    #[test]
    fn a_failed_precondition_blocks_and_a_manual_run_has_no_trigger_guard() {
        let pre = GuardOutcome { guard: "precondition", passed: false, reason: "precondition false: x".into() };
        let p = plan(Trigger::Manual(&labels("a")), &runbook(), &state(vec![]), &[pre], Mode::DryRun, t(1));
        assert_eq!(p.decision, Decision::Blocked);
        assert!(p.guards.iter().all(|g| g.guard != "trigger"));
        let p = plan(Trigger::Manual(&[("connect".to_string(), "x".to_string())].into()), &runbook(), &state(vec![]), &[], Mode::DryRun, t(1));
        assert_eq!(p.blocked_by().unwrap().guard, "target");
    }
}
