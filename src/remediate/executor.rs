//! The executor: consumes verdicts, plans with the pure planner, and runs what the plan
//! allows, journaling every step before and after, verifying, rolling back and
//! escalating, and writing every decision to the audit log.
//!
//! A run's steps, verification, rollback and escalation are in [`run`] (a child module).
//! (Over 600 lines: the engine's state, its API and the start of a run share one struct;
//! what a run does once started is in `run`.)
//!
//! # Guarantees
//! - Dry-run (the default mode) plans, guards and audits exactly as `act` and sends
//!   nothing: the record says `"executed": false`.
//! - Guards are checked and the run registered under one lock, so two triggers for the
//!   same target cannot both pass `target_busy`.
//! - Before each step the target's data must be fresh and the runbook's preconditions
//!   are re-evaluated on it; stale data, or a precondition that is false or unknown,
//!   fails the run before that step (nothing is sent).
//! - The journal is written (and fsynced) before a step starts and after it ends. On
//!   start, [`Remediation::recover`] resumes every unfinished run: a step with an outcome
//!   is never repeated, an interrupted idempotent step is retried, an interrupted
//!   non-idempotent step aborts the run, which escalates.
//! - Retries are bounded (`retries`, with backoff 1 s, 2 s, 4 s…) and only for idempotent
//!   actions and retryable errors; every attempt has the step's timeout.
//!
//! # Test hook
//! When `STREAMGUARD_TEST_PAUSE_AT` is set (only then; it is read once at start) to a
//! boundary `PHASE:STEP:WHEN` (`WHEN` = `before`, `intent` or `outcome`, e.g.
//! `steps:1:intent`), the run that reaches that boundary writes the boundary's name to
//! `STREAMGUARD_TEST_PAUSE_FILE` and waits there for ever, so a test can SIGKILL the
//! real process at a known point. Unset, nothing pauses.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod run;

use super::audit::Audit;
use super::guard::{self, GuardOutcome, GuardState, PastRun};
use super::journal::{self, Journal, Move, Phase, Record, RunEnd};
use super::plan::{self, Decision, Plan, Trigger};
use crate::config::{Config, RemediationConfig};
use crate::evaluate::Rules;
pub use super::view::{RunView, StepView};
use super::view::{phase_of, step_view, view_of_journal};
use crate::rules::expr::EvalOptions;
use crate::rules::file::runbook::{Mode, Runbook, Step};
use crate::rules::verdict::Verdict;
use crate::signal::{unix_secs, Labels};
use crate::store::Store;
use crate::telemetry::metrics::Metrics;

/// Runs kept in memory for the API (the audit log keeps everything).
pub const MAX_VIEWS: usize = 1000;
/// Between two evaluations of a `wait` or `verify` condition.
const POLL: Duration = Duration::from_secs(1);
/// How long a step waits for its target's data to become fresh before it fails.
pub const FRESH_WAIT: Duration = Duration::from_secs(30);

/// Errors that stop remediation from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error("audit log {path}: {source}")]
    Audit {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API token: {0}")]
    Token(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Errors of API requests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("no run {0:?}")]
    NoRun(String),
    #[error("run {0:?} is not awaiting approval")]
    NotAwaiting(String),
    #[error("no runbook {0:?}")]
    NoRunbook(String),
}

/// Where a run pauses for the test hook.
#[derive(Debug, Clone)]
struct Hook {
    at: String,
    file: std::path::PathBuf,
}

/// The remediation engine.
#[derive(Debug)]
pub struct Remediation {
    default_mode: Mode,
    cfg: RemediationConfig,
    rules: Arc<Rules>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    journal: Arc<Mutex<Journal>>,
    audit: Arc<Mutex<Audit>>,
    views: Mutex<BTreeMap<String, RunView>>,
    past: Mutex<Vec<PastRun>>,
    approvals: Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// Held while guards are checked and a run registered.
    plan_lock: tokio::sync::Mutex<()>,
    client: reqwest::Client,
    connect: BTreeMap<String, String>,
    kafka: BTreeMap<String, rdkafka::ClientConfig>,
    /// The `offsets` procedure's journal and audit log (next to the executor's).
    offsets_files: (std::path::PathBuf, std::path::PathBuf),
    /// Flink clusters by source name (`[[flink]]`): base URLs.
    flink: BTreeMap<String, String>,
    /// The `[[scale]]` targets (set once by the agent, which supervises their pools).
    scale: std::sync::OnceLock<Arc<crate::scale::runtime::ScaleRuntime>>,
    token: Option<String>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    seq: std::sync::atomic::AtomicU64,
    hook: Option<Hook>,
    /// Unfinished runs read from the journal at start, resumed by [`Remediation::recover`].
    pending: Mutex<Vec<journal::RunState>>,
}

fn mode_of(s: &str) -> Mode {
    match s {
        "act" => Mode::Act,
        "approve" => Mode::Approve,
        _ => Mode::DryRun,
    }
}

/// The `offsets` procedure's own journal and audit log, next to the executor's.
pub fn offsets_files(cfg: &RemediationConfig) -> (std::path::PathBuf, std::path::PathBuf) {
    (cfg.journal.with_extension("offsets.journal"), cfg.audit.with_extension("offsets.jsonl"))
}

/// Reads the API token from its file or variable. `Ok(None)`: none configured.
pub fn load_token(cfg: &RemediationConfig) -> Result<Option<String>, String> {
    let token = match (&cfg.api_token_file, &cfg.api_token_env) {
        (Some(f), _) => std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {}", f.display(), e.kind()))?,
        (None, Some(var)) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
        (None, None) => return Ok(None),
    };
    let token = token.trim().to_string();
    if token.len() < 16 {
        return Err("the token must be at least 16 characters".into());
    }
    Ok(Some(token))
}

impl Remediation {
    /// Opens the journal and the audit log and reads the runs in progress; call
    /// [`Remediation::recover`] once the loops may start.
    pub fn new(
        config: &Config,
        cfg: &RemediationConfig,
        rules: Arc<Rules>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, StartError> {
        let (journal, records) = Journal::open(&cfg.journal)?;
        let audit = Audit::open(&cfg.audit, cfg.audit_max_size, cfg.audit_max_files)
            .map_err(|source| StartError::Audit { path: cfg.audit.clone(), source })?;
        let token = load_token(cfg).map_err(StartError::Token)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("streamguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StartError::Client(e.to_string()))?;
        let runs = journal::recover(&records);
        let past = runs
            .iter()
            .map(|r| PastRun { runbook: r.runbook.clone(), target: r.target.clone(), started: r.started, active: r.finished.is_none() })
            .collect();
        let hook = std::env::var("STREAMGUARD_TEST_PAUSE_AT").ok().map(|at| Hook {
            at,
            file: std::env::var_os("STREAMGUARD_TEST_PAUSE_FILE").map_or_else(|| cfg.journal.with_extension("paused"), Into::into),
        });
        let mut views = BTreeMap::new();
        for r in &runs {
            views.insert(r.id.clone(), view_of_journal(r));
        }
        let pending = runs.into_iter().filter(|r| r.finished.is_none()).collect();
        let me = Arc::new(Remediation {
            default_mode: mode_of(&cfg.default_mode),
            cfg: cfg.clone(),
            rules,
            store,
            metrics,
            journal: Arc::new(Mutex::new(journal)),
            audit: Arc::new(Mutex::new(audit)),
            views: Mutex::new(views),
            past: Mutex::new(past),
            approvals: Mutex::default(),
            plan_lock: tokio::sync::Mutex::new(()),
            client,
            connect: config.connect.iter().map(|c| (c.name.clone(), c.url.clone())).collect(),
            kafka: config.clusters.iter().map(|c| (c.name.clone(), crate::sample::kafka::client_config(&c.bootstrap_servers, &c.properties))).collect(),
            offsets_files: offsets_files(cfg),
            flink: config.flink.iter().map(|c| (c.name.clone(), c.url.clone())).collect(),
            scale: std::sync::OnceLock::new(),
            token,
            tracker,
            cancel,
            seq: std::sync::atomic::AtomicU64::new(0),
            hook,
            pending: Mutex::new(pending),
        });
        me.refresh_in_progress();
        Ok(me)
    }

    /// Gives the `scale` action its targets (once, at start).
    pub fn set_scale(&self, scale: Arc<crate::scale::runtime::ScaleRuntime>) {
        if self.scale.set(scale).is_err() {
            tracing::warn!("scale targets set twice; keeping the first");
        }
    }

    /// The API token, if one is configured.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Resumes (or aborts, or keeps waiting for approval) every unfinished run of the
    /// journal, each on its own task.
    pub async fn recover(self: &Arc<Self>) {
        let pending = std::mem::take(&mut *lock(&self.pending));
        for run in pending {
            let set = self.rules.set();
            let Some(rb) = set.runbook_specs.get(&run.runbook).cloned() else {
                self.finish(&run.id, &run.runbook, RunEnd::Aborted, format!("runbook {:?} is no longer defined", run.runbook)).await;
                continue;
            };
            let mv = journal::next_move(&run, |phase, i| step_of(&rb, phase, i).is_none_or(Step::idempotent));
            // The view gets the runbook's steps, with what the journal says of each.
            let steps: Vec<StepView> = plan::steps(&rb)
                .into_iter()
                .map(|s| {
                    let mut v = step_view(s.phase, s.index, s.action, s.description, s.idempotent);
                    let key = (phase_of(s.phase), s.index);
                    if let Some(ok) = run.done.get(&key) {
                        v.state = if *ok { "ok" } else { "failed" };
                    }
                    v.attempts = run.intents.get(&key).copied().unwrap_or(0);
                    v
                })
                .collect();
            self.update(&run.id, |v| v.steps = steps);
            tracing::warn!(run_id = %run.id, runbook = %run.runbook, r#move = ?mv, "resuming a run from the journal");
            self.audit(serde_json::json!({"kind": "recovery", "run_id": run.id, "runbook": run.runbook, "target": run.target, "move": format!("{mv:?}")})).await;
            let failed = run.done.iter().find(|((p, _), ok)| matches!(p, Phase::Steps | Phase::Verify) && !**ok).map(|_| "a step or the verification failed before the restart".to_string());
            let (me, target, id) = (self.clone(), run.target.clone(), run.id.clone());
            match mv {
                Move::AwaitApproval => {
                    let deadline = run.started + self.cfg.approval_timeout;
                    let rx = self.register_approval(&id);
                    self.tracker.spawn(async move { me.await_approval(id, rb, target, rx, deadline).await });
                }
                Move::ResumeAt(phase, i) => {
                    self.tracker.spawn(async move { me.execute(id, rb, target, phase, i, failed).await });
                }
                Move::Abort { phase, step } => {
                    let why = format!("interrupted {} step {step} ({}) is not idempotent: not repeated", phase.as_str(), step_of(&rb, phase, step).map_or("?", Step::name));
                    self.tracker.spawn(async move { me.abort(id, rb, target, phase, step, why).await });
                }
            }
        }
    }

    /// Consumes verdicts until cancelled. The receiver is shared so that a supervised
    /// restart of this loop (after a panic) picks up the same queue.
    pub async fn run(self: Arc<Self>, verdicts: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Verdict>>>) {
        let mut verdicts = verdicts.lock().await;
        loop {
            let v = tokio::select! {
                _ = self.cancel.cancelled() => break,
                v = verdicts.recv() => match v { Some(v) => v, None => break },
            };
            // Only transitions to firing are decisions; the others are not triggers.
            if v.to != crate::rules::eval::AlertState::Firing {
                continue;
            }
            for name in v.runbooks.clone() {
                self.on_verdict(&v, &name).await;
            }
        }
    }

    async fn on_verdict(self: &Arc<Self>, v: &Verdict, name: &str) {
        let set = self.rules.set();
        let Some(rb) = set.runbook_specs.get(name).cloned() else { return };
        let _held = self.plan_lock.lock().await;
        let now = SystemTime::now();
        // The guards that read no data first: preconditions read the store, so they are
        // evaluated only when nothing else blocks (in a mass incident thousands of
        // instances fire together and the rate and concurrency guards block most).
        let (state, mode) = (self.guard_state(), rb.mode.unwrap_or(self.default_mode));
        let mut p = plan::plan(Trigger::Verdict(v), &rb, &state, &[], mode, now);
        if p.decision == Decision::Run {
            if let Some(t) = &p.target {
                let pre = self.preconditions(&rb, t, now);
                p = plan::plan(Trigger::Verdict(v), &rb, &state, &pre, mode, now);
            }
        }
        self.start(p, rb, Some(v.clone())).await;
    }

    /// `POST /api/v1/runbooks/{name}/run`: an operator's run of `name` for `target`
    /// (dry-run when asked, else `act`: the authenticated request is the approval).
    pub async fn run_manual(self: &Arc<Self>, name: &str, target: &Labels, dry_run: bool) -> Result<RunView, RequestError> {
        let rb = self.rules.set().runbook_specs.get(name).cloned().ok_or_else(|| RequestError::NoRunbook(name.to_string()))?;
        let _held = self.plan_lock.lock().await;
        let now = SystemTime::now();
        let pre = match guard::target(&rb, target) {
            Ok(t) => self.preconditions(&rb, &t, now),
            Err(_) => Vec::new(),
        };
        let mode = if dry_run { Mode::DryRun } else { Mode::Act };
        let p = plan::plan(Trigger::Manual(target), &rb, &self.guard_state(), &pre, mode, now);
        Ok(self.start(p, rb, None).await)
    }

    /// What would run now for every firing alert instance that names a runbook, and why.
    pub fn plan_now(&self) -> Vec<(String, Labels, Plan)> {
        let set = self.rules.set();
        let now = SystemTime::now();
        let state = self.guard_state();
        let mut out = Vec::new();
        for status in self.rules.rule_statuses() {
            for (labels, inst) in status.instances.iter().filter(|(_, i)| i.state == crate::rules::eval::AlertState::Firing) {
                for name in &status.runbooks {
                    let Some(rb) = set.runbook_specs.get(name) else { continue };
                    let labels = labels.to_labels();
                    let pre = guard::target(rb, &labels).map(|t| self.preconditions(rb, &t, now)).unwrap_or_default();
                    let mut p = plan::plan(Trigger::Manual(&labels), rb, &state, &pre, rb.mode.unwrap_or(self.default_mode), now);
                    p.guards.insert(0, GuardOutcome { guard: "trigger", passed: true, reason: format!("{} is firing (value {})", status.name, inst.value.map_or_else(|| "unknown".to_string(), |v| v.to_string())) });
                    out.push((status.name.clone(), labels, p));
                }
            }
        }
        out
    }

    /// Approves a run waiting in `approve` mode.
    pub async fn approve(&self, id: &str) -> Result<(), RequestError> {
        let tx = lock(&self.approvals).remove(id);
        match tx {
            Some(tx) => {
                // The waiting task may have just expired: then it is not awaiting any more.
                tx.send(()).map_err(|_| RequestError::NotAwaiting(id.to_string()))
            }
            None if lock(&self.views).contains_key(id) => Err(RequestError::NotAwaiting(id.to_string())),
            None => Err(RequestError::NoRun(id.to_string())),
        }
    }

    /// Recent runs, newest first.
    pub fn list(&self) -> Vec<RunView> {
        let mut v: Vec<RunView> = lock(&self.views).values().cloned().collect();
        v.sort_by(|a, b| b.created_at.total_cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        v
    }

    pub fn get(&self, id: &str) -> Option<RunView> {
        lock(&self.views).get(id).cloned()
    }

    fn guard_state(&self) -> GuardState {
        GuardState { runs: lock(&self.past).clone(), max_concurrent: self.cfg.max_concurrent_runs }
    }

    /// The target's data is fresh, and every precondition holds on it.
    fn preconditions(&self, rb: &Runbook, target: &Labels, now: SystemTime) -> Vec<GuardOutcome> {
        let set = self.rules.set();
        let mut out = vec![guard::fresh_data(target, &crate::evaluate::target_dataset(&self.store, &set, target, now))];
        if !rb.guards.preconditions.is_empty() {
            let data = crate::evaluate::conds_dataset(&self.store, rb.guards.preconditions.iter().map(|c| &c.cond), now);
            out.extend(guard::preconditions(rb, target, &data, now, &self.eval_options()));
        }
        out
    }

    fn eval_options(&self) -> EvalOptions {
        EvalOptions { confidence: self.rules.config.confidence }
    }

    fn new_id(&self) -> String {
        let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("r{ms}-{n}")
    }

    /// Records the decision and, when it runs, starts it.
    async fn start(self: &Arc<Self>, p: Plan, rb: Runbook, trigger: Option<Verdict>) -> RunView {
        let id = self.new_id();
        let now = SystemTime::now();
        let executed = p.decision == Decision::Run && p.mode != Mode::DryRun;
        let (state, reason) = match (p.decision, p.mode) {
            (Decision::Blocked, _) => ("blocked", format!("blocked: {}", p.blocked_by().map_or("", |g| g.reason.as_str()))),
            (Decision::Run, Mode::DryRun) => ("dry_run", "dry-run: every guard passed; nothing was sent".to_string()),
            (Decision::Run, Mode::Approve) => ("awaiting_approval", "waiting for approval".to_string()),
            (Decision::Run, Mode::Act) => ("running", "every guard passed".to_string()),
        };
        let mut steps: Vec<StepView> = p.steps.iter().map(|s| step_view(s.phase, s.index, s.action, s.description.clone(), s.idempotent)).collect();
        // A dry run of a `scale` step computes the count the policy would choose now.
        let previews = match (&p.target, state) {
            (Some(target), "dry_run") => self.scale_previews(&rb, target, &mut steps).await,
            _ => Vec::new(),
        };
        let reason = match previews.iter().filter_map(|v| v["decision"].as_str()).next() {
            Some(why) => format!("{reason}; {why}"),
            None => reason,
        };
        let view = RunView {
            id: id.clone(),
            runbook: rb.name.clone(),
            target: p.target.clone(),
            mode: p.mode.as_str(),
            executed,
            state,
            reason: reason.clone(),
            trigger: trigger.clone(),
            guards: p.guards.clone(),
            steps,
            created_at: unix_secs(now),
            finished_at: (!executed).then(|| unix_secs(now)),
        };
        self.remember(view.clone());
        let mut record = serde_json::json!({
            "kind": "decision", "run_id": id, "runbook": rb.name, "target": p.target, "mode": p.mode.as_str(),
            "executed": executed, "decision": state, "reason": reason,
            "trigger": trigger.as_ref().map_or_else(|| serde_json::json!("manual"), |v| serde_json::to_value(v).unwrap_or_default()),
            "guards": p.guards, "steps": p.steps,
        });
        if !previews.is_empty() {
            record["scale_previews"] = previews.into();
        }
        self.audit(record).await;
        match state {
            "blocked" => {
                if let Some(g) = p.blocked_by() {
                    self.metrics.remediation.guard_block(&rb.name, g.guard);
                }
                self.metrics.remediation.run(&rb.name, "blocked");
                tracing::info!(runbook = %rb.name, run_id = %id, reason = %reason, "runbook blocked");
                return view;
            }
            "dry_run" => {
                self.metrics.remediation.run(&rb.name, "dry_run");
                tracing::info!(runbook = %rb.name, run_id = %id, "runbook planned (dry-run)");
                return view;
            }
            _ => {}
        }
        let Some(target) = p.target.clone() else { return view };
        let started = Record::Started { id: id.clone(), runbook: rb.name.clone(), target: target.clone(), mode: p.mode, at: now };
        if let Err(e) = self.journal(started).await {
            self.update(&id, |v| {
                v.state = "failed";
                v.executed = false;
                v.reason = format!("not started: cannot write the journal: {e}");
                v.finished_at = Some(unix_secs(SystemTime::now()));
            });
            self.metrics.remediation.run(&rb.name, "failed");
            return self.get(&id).unwrap_or(view);
        }
        {
            let mut past = lock(&self.past);
            past.push(PastRun { runbook: rb.name.clone(), target: target.clone(), started: now, active: true });
            // Bounded: finished runs beyond the journal's own bound are forgotten, oldest
            // first (runs in progress never are).
            let mut excess = past.iter().filter(|r| !r.active).count().saturating_sub(journal::KEEP_FINISHED);
            past.retain(|r| {
                let drop = excess > 0 && !r.active;
                excess -= usize::from(drop);
                !drop
            });
        }
        self.refresh_in_progress();
        tracing::warn!(runbook = %rb.name, run_id = %id, mode = p.mode.as_str(), "runbook run started");
        let me = self.clone();
        if p.mode == Mode::Approve {
            let rx = self.register_approval(&id);
            let deadline = now + self.cfg.approval_timeout;
            let id2 = id.clone();
            self.tracker.spawn(async move { me.await_approval(id2, rb, target, rx, deadline).await });
        } else {
            let id2 = id.clone();
            self.tracker.spawn(async move { me.execute(id2, rb, target, Phase::Steps, 0, None).await });
        }
        self.get(&id).unwrap_or(view)
    }

    fn register_approval(&self, id: &str) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.approvals).insert(id.to_string(), tx);
        rx
    }

    async fn await_approval(self: Arc<Self>, id: String, rb: Runbook, target: Labels, rx: tokio::sync::oneshot::Receiver<()>, deadline: SystemTime) {
        let wait = deadline.duration_since(SystemTime::now()).unwrap_or_default();
        let approved = tokio::select! {
            _ = self.cancel.cancelled() => return,
            r = rx => r.is_ok(),
            _ = tokio::time::sleep(wait) => false,
        };
        lock(&self.approvals).remove(&id);
        if !approved {
            self.finish(&id, &rb.name, RunEnd::Expired, format!("not approved within {}", humantime::format_duration(self.cfg.approval_timeout))).await;
            return;
        }
        if let Err(e) = self.journal(Record::Approved { id: id.clone(), at: SystemTime::now() }).await {
            tracing::error!(run_id = %id, error = %e, "cannot journal an approval; the run does not start");
            return;
        }
        self.audit(serde_json::json!({"kind": "approval", "run_id": id, "runbook": rb.name, "target": target})).await;
        self.update(&id, |v| {
            v.state = "running";
            v.reason = "approved".into();
        });
        self.execute(id, rb, target, Phase::Steps, 0, None).await;
    }

    async fn finish(&self, id: &str, runbook: &str, end: RunEnd, reason: String) {
        if let Err(e) = self.journal(Record::Finished { id: id.into(), end, reason: reason.clone(), at: SystemTime::now() }).await {
            tracing::error!(run_id = %id, error = %e, "cannot journal the end of a run");
        }
        for r in lock(&self.past).iter_mut().filter(|r| r.active) {
            if self.get(id).is_some_and(|v| v.runbook == r.runbook && v.target.as_ref() == Some(&r.target)) {
                r.active = false;
            }
        }
        self.refresh_in_progress();
        self.metrics.remediation.run(runbook, end.as_str());
        self.update(id, |v| {
            v.state = end.as_str();
            v.reason = reason.clone();
            v.finished_at = Some(unix_secs(SystemTime::now()));
            for s in v.steps.iter_mut().filter(|s| s.state == "pending") {
                s.state = "skipped";
            }
        });
        if end == RunEnd::Succeeded {
            tracing::info!(run_id = %id, runbook, "runbook run succeeded");
        } else {
            tracing::error!(run_id = %id, runbook, end = end.as_str(), reason = %reason, "runbook run did not succeed");
        }
        self.audit(serde_json::json!({"kind": "run", "run_id": id, "runbook": runbook, "end": end.as_str(), "reason": reason})).await;
    }

    fn refresh_in_progress(&self) {
        let n = lock(&self.past).iter().filter(|r| r.active).count();
        self.metrics.remediation.set_in_progress(n);
    }

    async fn journal(&self, r: Record) -> Result<(), String> {
        let j = self.journal.clone();
        match tokio::task::spawn_blocking(move || lock(&j).append(&r)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.metrics.remediation.write_error("journal");
                tracing::error!(error = %e, "cannot write the remediation journal");
                Err(e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn audit(&self, record: serde_json::Value) {
        let a = self.audit.clone();
        match tokio::task::spawn_blocking(move || lock(&a).write(record)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.metrics.remediation.write_error("audit");
                tracing::error!(error = %e, "cannot write the audit log");
            }
            Err(e) => tracing::error!(error = %e, "audit write did not run"),
        }
    }

    async fn pause_at(&self, boundary: &str) {
        let Some(h) = &self.hook else { return };
        if h.at != boundary {
            return;
        }
        tracing::warn!(boundary, "test hook: pausing at a step boundary");
        if let Err(e) = std::fs::write(&h.file, boundary).and_then(|_| std::fs::File::open(&h.file)?.sync_all()) {
            tracing::error!(error = %e, "test hook: cannot write the pause file");
        }
        std::future::pending::<()>().await;
    }

    fn remember(&self, v: RunView) {
        let mut views = lock(&self.views);
        views.insert(v.id.clone(), v);
        while views.len() > MAX_VIEWS {
            // Ids start with the creation time: the first is the oldest.
            let Some(oldest) = views.keys().next().cloned() else { break };
            views.remove(&oldest);
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut RunView)) {
        if let Some(v) = lock(&self.views).get_mut(id) {
            f(v);
        }
    }

    fn set_step(&self, id: &str, phase: &str, index: usize, f: impl FnOnce(&mut StepView)) {
        self.update(id, |v| {
            if let Some(s) = v.steps.iter_mut().find(|s| s.phase == phase && s.index == index) {
                f(s);
            }
        });
    }
}

fn step_of(rb: &Runbook, phase: Phase, i: usize) -> Option<&Step> {
    match phase {
        Phase::Steps => rb.steps.get(i),
        Phase::Rollback => rb.rollback.get(i),
        Phase::Escalate => rb.escalate.get(i),
        Phase::Verify => None,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
