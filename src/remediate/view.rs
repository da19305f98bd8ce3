//! What the API and the audit show of a run: [`RunView`] and its [`StepView`]s, built
//! from a plan, updated as the run goes, or read back from the journal. Data only.

use serde::Serialize;

use super::guard::GuardOutcome;
use super::journal::{self, Phase};
use crate::rules::file::runbook::Mode;
use crate::rules::verdict::Verdict;
use crate::signal::{unix_secs, Labels};

/// One step of a run, as the API and the audit show it.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub phase: &'static str,
    pub index: usize,
    pub action: &'static str,
    pub description: String,
    pub idempotent: bool,
    /// `pending`, `ok`, `failed`, `skipped`.
    pub state: &'static str,
    pub attempts: u32,
    pub request: Option<String>,
    pub status: Option<u16>,
    pub response: Option<String>,
    pub observed: Option<String>,
    pub error: Option<String>,
    pub duration_seconds: Option<f64>,
}

/// One run (or one blocked or dry-run decision), as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub id: String,
    pub runbook: String,
    pub target: Option<Labels>,
    pub mode: &'static str,
    /// Whether anything is (or was) sent: false for dry-run and blocked decisions.
    pub executed: bool,
    /// `blocked`, `dry_run`, `awaiting_approval`, `running`, `succeeded`, `failed`,
    /// `aborted`, `expired`.
    pub state: &'static str,
    pub reason: String,
    /// The verdict that triggered it (`None`: run by an operator).
    pub trigger: Option<Verdict>,
    pub guards: Vec<GuardOutcome>,
    pub steps: Vec<StepView>,
    pub created_at: f64,
    pub finished_at: Option<f64>,
}

pub fn phase_of(name: &str) -> Phase {
    match name {
        "verify" => Phase::Verify,
        "rollback" => Phase::Rollback,
        "escalate" => Phase::Escalate,
        _ => Phase::Steps,
    }
}

pub fn step_view(phase: &'static str, index: usize, action: &'static str, description: String, idempotent: bool) -> StepView {
    StepView {
        phase,
        index,
        action,
        description,
        idempotent,
        state: "pending",
        attempts: 0,
        request: None,
        status: None,
        response: None,
        observed: None,
        error: None,
        duration_seconds: None,
    }
}

/// A run read back from the journal (its steps as the journal knows them).
pub fn view_of_journal(r: &journal::RunState) -> RunView {
    let steps = r
        .done
        .iter()
        .map(|((p, i), ok)| {
            let mut s = step_view(p.as_str(), *i, "?", String::new(), false);
            s.state = if *ok { "ok" } else { "failed" };
            s.attempts = r.intents.get(&(*p, *i)).copied().unwrap_or(0);
            s
        })
        .collect();
    let (state, reason) = match &r.finished {
        Some((end, why)) => (end.as_str(), why.clone()),
        None if r.mode == Mode::Approve && !r.approved => ("awaiting_approval", "waiting for approval".into()),
        None => ("running", "resumed from the journal".into()),
    };
    RunView {
        id: r.id.clone(),
        runbook: r.runbook.clone(),
        target: Some(r.target.clone()),
        mode: r.mode.as_str(),
        executed: true,
        state,
        reason,
        trigger: None,
        guards: Vec::new(),
        steps,
        created_at: unix_secs(r.started),
        finished_at: None,
    }
}
