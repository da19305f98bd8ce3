//! One run's life after its plan: each step (intent, attempts, outcome), the
//! verification, rollback, escalation, the abort of an interrupted non-idempotent step.
//! A child of the executor: it shares the engine's state; see the guarantees there.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::super::actions::{self, ActionError};
use super::super::guard::{self, GuardOutcome};
use super::super::journal::{Phase, Record, RunEnd};
use super::{Remediation, FRESH_WAIT, POLL};
use crate::rules::expr::Truth;
use crate::rules::file::runbook::{Deadline, Runbook, Step, StepKind};
use crate::signal::Labels;

impl Remediation {
    /// Each `scale` step's dry-run plan (see `actions::scale::preview`), also written into
    /// its step view (`observed`: the why, `response`: the numbers).
    pub(super) async fn scale_previews(&self, rb: &Runbook, target: &Labels, steps: &mut [super::StepView]) -> Vec<serde_json::Value> {
        let Some(rt) = self.scale.get() else { return Vec::new() };
        let mut out = Vec::new();
        for (i, step) in rb.steps.iter().enumerate() {
            let StepKind::Act(crate::rules::file::runbook::Action::Scale(a)) = &step.kind else { continue };
            let v = actions::scale::preview(a, rt, &self.store, target).await;
            if let Some(sv) = steps.iter_mut().find(|s| s.phase == "steps" && s.index == i) {
                sv.observed = v["why"].as_str().or(v["error"].as_str()).map(str::to_string);
                sv.response = v.get("plan").map(|p| p.to_string());
            }
            out.push(v);
        }
        out
    }

    /// [`Self::preconditions`] right before a step. While they block only for want of
    /// fresh data (after a restart the store is empty until the first sample), they are
    /// re-read every second for at most [`FRESH_WAIT`]; a false precondition is final.
    async fn fresh_preconditions(&self, rb: &Runbook, target: &Labels) -> Vec<GuardOutcome> {
        let until = Instant::now() + FRESH_WAIT;
        loop {
            let pre = self.preconditions(rb, target, SystemTime::now());
            let waiting = pre.iter().any(guard::is_unknown) && pre.iter().all(|g| g.passed || guard::is_unknown(g));
            if !waiting || Instant::now() + POLL > until {
                return pre;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `rb` for `target` from (`phase`, `from`); `failed` set: a step or the
    /// verification already failed, only rollback and escalation remain.
    pub(super) async fn execute(self: Arc<Self>, id: String, rb: Runbook, target: Labels, phase: Phase, from: usize, mut failed: Option<String>) {
        let cancel = self.cancel.clone();
        tokio::select! {
            _ = cancel.cancelled() => {
                tracing::warn!(run_id = %id, "shutdown during a run; it resumes from the journal at the next start");
            }
            _ = self.execute_inner(&id, &rb, &target, phase, from, &mut failed) => {}
        }
    }

    async fn execute_inner(&self, id: &str, rb: &Runbook, target: &Labels, phase: Phase, from: usize, failed: &mut Option<String>) {
        self.update(id, |v| v.state = "running");
        if failed.is_none() && phase == Phase::Steps {
            for (i, step) in rb.steps.iter().enumerate().skip(from) {
                self.pause_at(&format!("steps:{i}:before")).await;
                let pre = self.fresh_preconditions(rb, target).await;
                if let Some(g) = pre.iter().find(|g| !g.passed) {
                    let why = g.reason.clone();
                    let _ = self.journal(Record::Outcome { id: id.into(), phase: Phase::Steps, step: i, ok: false, summary: why.clone(), at: SystemTime::now() }).await;
                    self.set_step(id, "steps", i, |s| {
                        s.state = "failed";
                        s.error = Some(why.clone());
                    });
                    self.audit(serde_json::json!({"kind": "step", "run_id": id, "runbook": rb.name, "target": target, "phase": "steps", "step": i, "executed": false, "guards": pre})).await;
                    *failed = Some(why);
                    break;
                }
                if let Err(e) = self.step(id, rb, target, Phase::Steps, i, step).await {
                    *failed = Some(format!("step {i} ({}) failed: {e}", step.name()));
                    break;
                }
            }
        }
        let verify_from = if phase == Phase::Verify { from } else { 0 };
        if failed.is_none() && phase <= Phase::Verify && verify_from == 0 {
            if let Some(v) = &rb.verify {
                if let Err(e) = self.verify(id, rb, target, v).await {
                    *failed = Some(format!("verification failed: {e}"));
                }
            }
        }
        match failed.clone() {
            None => self.finish(id, &rb.name, RunEnd::Succeeded, "every step ran and the verification passed".into()).await,
            Some(why) => {
                let rb_from = match phase {
                    Phase::Rollback => from,
                    Phase::Escalate => rb.rollback.len(),
                    _ => 0,
                };
                for (i, step) in rb.rollback.iter().enumerate().skip(rb_from) {
                    // A failed rollback step is recorded; the others still run.
                    let _ = self.step(id, rb, target, Phase::Rollback, i, step).await;
                }
                let esc_from = if phase == Phase::Escalate { from } else { 0 };
                for (i, step) in rb.escalate.iter().enumerate().skip(esc_from) {
                    let _ = self.step(id, rb, target, Phase::Escalate, i, step).await;
                }
                self.finish(id, &rb.name, RunEnd::Failed, why).await;
            }
        }
    }

    /// An interrupted non-idempotent step: record it as failed (not repeated), escalate,
    /// end the run as aborted.
    pub(super) async fn abort(self: Arc<Self>, id: String, rb: Runbook, target: Labels, phase: Phase, step: usize, why: String) {
        let _ = self.journal(Record::Outcome { id: id.clone(), phase, step, ok: false, summary: why.clone(), at: SystemTime::now() }).await;
        self.set_step(&id, phase.as_str(), step, |s| {
            s.state = "failed";
            s.error = Some(why.clone());
        });
        let cancel = self.cancel.clone();
        let escalate = async {
            for (i, s) in rb.escalate.iter().enumerate() {
                if phase == Phase::Escalate && i <= step {
                    continue;
                }
                let _ = self.step(&id, &rb, &target, Phase::Escalate, i, s).await;
            }
            self.finish(&id, &rb.name, RunEnd::Aborted, why.clone()).await;
        };
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = escalate => {}
        }
    }

    /// One step: intent, attempts, outcome.
    async fn step(&self, id: &str, rb: &Runbook, target: &Labels, phase: Phase, i: usize, step: &Step) -> Result<(), String> {
        let p = phase.as_str();
        if let Err(e) = self.journal(Record::Intent { id: id.into(), phase, step: i, at: SystemTime::now() }).await {
            return Err(format!("cannot write the journal, step not run: {e}"));
        }
        self.pause_at(&format!("{p}:{i}:intent")).await;
        let started = Instant::now();
        let (result, attempts) = match &step.kind {
            StepKind::Wait(w) => (self.wait_for(target, w).await.map(|observed| actions::ActionOutcome { request: "wait".into(), status: 0, response: String::new(), observed }), 1),
            StepKind::Act(action) => {
                let cx = actions::Context {
                    run_id: id,
                    runbook: &rb.name,
                    target,
                    phase: p,
                    step: i,
                    client: &self.client,
                    connect: &self.connect,
                    timeout: step.timeout,
                    kafka: &self.kafka,
                    offsets_files: (&self.offsets_files.0, &self.offsets_files.1),
                    scale: self.scale.get(),
                    offsets_metrics: &self.metrics.remediation.offsets,
                    store: &self.store,
                    flink: &self.flink,
                };
                let retries = if step.idempotent() { step.retries } else { 0 };
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let hard = step.timeout + action.verify_deadline();
                    let r = match tokio::time::timeout(hard, actions::perform(action, &cx)).await {
                        Ok(r) => r,
                        Err(_) => Err(ActionError::Timeout { request: step.describe() }),
                    };
                    match r {
                        Err(e) if e.retryable() && attempt <= retries => {
                            tracing::warn!(run_id = %id, step = i, attempt, error = %e, "step failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1).min(5))).await;
                        }
                        r => break (r.map_err(|e| e.to_string()), attempt),
                    }
                }
            }
        };
        let took = started.elapsed().as_secs_f64();
        let ok = result.is_ok();
        let summary = match &result {
            Ok(o) => format!("{} → {}", o.request, o.observed),
            Err(e) => e.clone(),
        };
        if let Err(e) = self.journal(Record::Outcome { id: id.into(), phase, step: i, ok, summary, at: SystemTime::now() }).await {
            tracing::error!(run_id = %id, error = %e, "cannot journal a step outcome");
        }
        self.pause_at(&format!("{p}:{i}:outcome")).await;
        self.metrics.remediation.step(step.name(), if ok { "ok" } else { "error" }, took);
        self.set_step(id, p, i, |s| {
            s.state = if ok { "ok" } else { "failed" };
            s.attempts = attempts;
            s.duration_seconds = Some(took);
            match &result {
                Ok(o) => {
                    s.request = Some(o.request.clone());
                    s.status = (o.status != 0).then_some(o.status);
                    s.response = Some(o.response.clone());
                    s.observed = Some(o.observed.clone());
                }
                Err(e) => s.error = Some(e.clone()),
            }
        });
        let record = serde_json::json!({
            "kind": "step", "run_id": id, "runbook": rb.name, "target": target, "executed": true,
            "phase": p, "step": i, "action": step.name(), "description": step.describe(), "attempts": attempts,
            "ok": ok, "duration_seconds": took,
            "request": result.as_ref().ok().map(|o| o.request.clone()),
            "status": result.as_ref().ok().map(|o| o.status),
            "response": result.as_ref().ok().map(|o| o.response.clone()),
            "observed": result.as_ref().ok().map(|o| o.observed.clone()),
            "error": result.as_ref().err(),
        });
        self.audit(record).await;
        result.map(|_| ())
    }

    async fn verify(&self, id: &str, rb: &Runbook, target: &Labels, v: &Deadline) -> Result<(), String> {
        if let Err(e) = self.journal(Record::Intent { id: id.into(), phase: Phase::Verify, step: 0, at: SystemTime::now() }).await {
            return Err(format!("cannot write the journal: {e}"));
        }
        self.pause_at("verify:0:intent").await;
        let started = Instant::now();
        let result = self.wait_for(target, v).await;
        let took = started.elapsed().as_secs_f64();
        let ok = result.is_ok();
        let summary = result.clone().unwrap_or_else(|e| e);
        let _ = self.journal(Record::Outcome { id: id.into(), phase: Phase::Verify, step: 0, ok, summary: summary.clone(), at: SystemTime::now() }).await;
        self.pause_at("verify:0:outcome").await;
        self.set_step(id, "verify", 0, |s| {
            s.state = if ok { "ok" } else { "failed" };
            s.attempts = 1;
            s.duration_seconds = Some(took);
            if ok {
                s.observed = Some(summary.clone());
            } else {
                s.error = Some(summary.clone());
            }
        });
        self.audit(serde_json::json!({"kind": "verification", "run_id": id, "runbook": rb.name, "target": target, "condition": v.condition.text, "ok": ok, "detail": summary, "duration_seconds": took})).await;
        result.map(|_| ())
    }

    /// Polls `d.condition` for `target` on fresh data until it is true or the deadline
    /// passes.
    async fn wait_for(&self, target: &Labels, d: &Deadline) -> Result<String, String> {
        let deadline = Instant::now() + d.deadline;
        loop {
            let now = SystemTime::now();
            let data = crate::evaluate::conds_dataset(&self.store, [&d.condition.cond], now);
            let (truth, value) = guard::truth_for(&d.condition.cond, target, &data, now, &self.eval_options());
            if truth == Truth::True {
                return Ok(format!("{} is true (value {})", d.condition.text, value.map_or("unknown".into(), |v| v.to_string())));
            }
            if Instant::now() + POLL > deadline {
                return Err(format!("{} still {truth} after {}", d.condition.text, humantime::format_duration(d.deadline)));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
