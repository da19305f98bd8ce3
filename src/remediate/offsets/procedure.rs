//! The reprocessing procedure: plan → pause → wait until the group is Empty → copy the
//! poison records to the dead-letter topic → commit → resume → verify, every step
//! journaled in the remediation write-ahead journal and audited in its audit log.
//!
//! # Guarantees
//! - Nothing is paused before the plan is computed and within every blast-radius limit
//!   ([`super::limits`]); a refused plan ends the run `aborted` with every breach in the
//!   audit.
//! - Offsets are never committed for a group with members: the commit step re-reads the
//!   membership right before committing, and the broker's per-partition answer is checked.
//!   When the group does not become Empty within the deadline the consumers are resumed
//!   and the run ends `aborted`, naming the members.
//! - The plan (absolute offsets) is journaled before anything changes; after a restart
//!   ([`recover`]) the run continues from the journal with that plan, never a recomputed
//!   one, so a skip is never applied twice. A completed step is not repeated; an
//!   interrupted one is run again, which is safe: the DLQ copy first looks for an
//!   existing copy with the same origin, the commit first reads the committed offsets and
//!   does nothing when they already are the plan's, pause and resume are idempotent.
//! - A failed DLQ copy or commit resumes the consumers (rollback) with the offsets the
//!   group then has; the end reason says which ones (read back, or unknown).
//! - The last step checks that the group's lag moved as the preview predicted
//!   ([`super::verify`]): right after the commit it is the predicted lag plus what was
//!   produced since, and resumed consumers consume from the new offsets. A prediction
//!   that does not hold (the consumers resumed from elsewhere, or did not consume within
//!   the deadline, or the log lost the records) ends the run `failed`, audited, counted
//!   as `verify_failed`; a runbook's step then fails and its escalation runs.
//! - Counted in `streamguard_offsets_*` (procedures by outcome, records skipped and
//!   replayed, dead-letter copies, refusals by reason) when run by the agent.
//!
//! # Test hook
//! `STREAMGUARD_TEST_PAUSE_AT` = `steps:N:intent|outcome` (or `rollback:0:…`, and inside
//! steps `steps:3:read`, `steps:3:produced`, `steps:4:sent`) makes the
//! run write the boundary to `STREAMGUARD_TEST_PAUSE_FILE` and wait there for ever, as the
//! executor does, so a test can SIGKILL the process at a known point.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};

use super::compute::{self, tp_name, Move, ResetMode};
use super::kafka::{self as k, KafkaError};
use super::limits::{self, Limits};
use super::pause::{self, Pause};
use super::preview::Preview;
use super::verify::{self, Judgement};
use crate::remediate::audit::Audit;
use crate::remediate::journal::{self, Journal, Phase, Record, RunEnd};
use crate::rules::file::runbook::Mode;
use crate::sample::kafka_admin::{Admin, TopicPartition};
use crate::scale::runtime::ScaleRuntime;
use crate::telemetry::remediation::OffsetsMetrics;

/// The journal's runbook name of these runs.
pub const RUNBOOK: &str = "offsets";

/// The steps, by journal index.
pub const STEPS: [&str; 7] = ["plan", "pause", "wait-empty", "dlq-copy", "commit", "resume", "verify"];
const PLAN: usize = 0;
const PAUSE: usize = 1;
const WAIT_EMPTY: usize = 2;
const DLQ: usize = 3;
const COMMIT: usize = 4;
const RESUME: usize = 5;
const VERIFY: usize = 6;

/// What to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub group: String,
    /// Topics whose partitions move (empty: those the group has commits for).
    pub topics: Vec<String>,
    pub mode: ResetMode,
    pub limits: Limits,
    pub pause: Pause,
    /// For `skip-poison`: where the poison records go, and why.
    pub dlq: Option<String>,
    pub reason: String,
    #[serde(with = "secs")]
    pub empty_deadline: Duration,
    #[serde(with = "secs")]
    pub verify_deadline: Duration,
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// Who asked (a runbook step: `run_id/phase/step`), kept in the journal so that the
    /// same step run again after a crash finds this procedure instead of starting anew.
    #[serde(default)]
    pub tag: Option<String>,
}

mod secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v: f64 = serde::Deserialize::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// What the journal keeps of a planned run (step 0's outcome).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Planned {
    request: Request,
    moves: Vec<Move>,
}

/// How a run ended, for the CLI and the tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub id: String,
    pub end: &'static str,
    pub reason: String,
    pub preview: Option<Preview>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcedureError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Compute(Vec<compute::ComputeError>),
    #[error("{0}")]
    Config(String),
    #[error("journal: {0}")]
    Journal(String),
    #[error("group {group} has an unfinished run {id} in the journal: finish it first with `streamguard offsets resume`")]
    Unfinished { group: String, id: String },
}

/// Everything the procedure talks to.
pub struct Env {
    pub kafka: ClientConfig,
    pub admin: Arc<Admin>,
    pub http: reqwest::Client,
    /// `None` for a preview (nothing to journal).
    journal: Option<Arc<Mutex<Journal>>>,
    audit: Option<Arc<Mutex<Audit>>>,
    /// The records read when the journal was opened (for [`recover`]).
    pub records: Vec<Record>,
    /// The `[[scale]]` targets a [`Pause::Scale`] may name.
    pub scale: Option<Arc<ScaleRuntime>>,
    /// Where the procedure is counted (the agent's registry; the CLI's counts go nowhere).
    pub metrics: OffsetsMetrics,
    hook: Option<(String, PathBuf)>,
}

impl Env {
    pub fn open(kafka: ClientConfig, journal: &std::path::Path, audit: &std::path::Path) -> Result<Env, ProcedureError> {
        let admin = Admin::for_cluster("offsets", &kafka).map_err(KafkaError::from)?;
        let (j, records) = Journal::open(journal).map_err(|e| ProcedureError::Journal(e.to_string()))?;
        let a = Audit::open(audit, 64 << 20, 4).map_err(|e| ProcedureError::Config(format!("audit log {}: {e}", audit.display())))?;
        let http = reqwest::Client::builder().build().map_err(|e| ProcedureError::Config(e.to_string()))?;
        let hook = std::env::var("STREAMGUARD_TEST_PAUSE_AT").ok().map(|at| (at, std::env::var_os("STREAMGUARD_TEST_PAUSE_FILE").map_or_else(|| journal.with_extension("paused"), Into::into)));
        Ok(Env { kafka, admin: Arc::new(admin), http, journal: Some(Arc::new(Mutex::new(j))), audit: Some(Arc::new(Mutex::new(a))), records, scale: None, metrics: OffsetsMetrics::default(), hook })
    }

    /// An environment that can only read (for [`preview`]): no journal, no audit.
    pub fn reader(kafka: ClientConfig) -> Result<Env, ProcedureError> {
        let admin = Admin::for_cluster("offsets", &kafka).map_err(KafkaError::from)?;
        let http = reqwest::Client::builder().build().map_err(|e| ProcedureError::Config(e.to_string()))?;
        Ok(Env { kafka, admin: Arc::new(admin), http, journal: None, audit: None, records: Vec::new(), scale: None, metrics: OffsetsMetrics::default(), hook: None })
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Admin, &ClientConfig) -> Result<T, KafkaError> + Send + 'static) -> Result<T, KafkaError> {
        let (admin, cfg) = (self.admin.clone(), self.kafka.clone());
        tokio::task::spawn_blocking(move || f(&admin, &cfg)).await.unwrap_or_else(|e| Err(KafkaError::Client { what: "blocking task".into(), message: e.to_string() }))
    }

    async fn journal(&self, r: Record) -> Result<(), String> {
        let Some(j) = self.journal.clone() else { return Err("no journal".into()) };
        tokio::task::spawn_blocking(move || lock(&j).append(&r).map_err(|e| e.to_string())).await.unwrap_or_else(|e| Err(e.to_string()))
    }

    async fn audit(&self, v: serde_json::Value) {
        let Some(a) = self.audit.clone() else { return };
        match tokio::task::spawn_blocking(move || lock(&a).write(v)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write the audit log"),
            Err(e) => tracing::error!(error = %e, "audit write did not run"),
        }
    }

    async fn pause_at(&self, boundary: &str) {
        let Some((at, file)) = &self.hook else { return };
        if at != boundary {
            return;
        }
        if let Err(e) = std::fs::write(file, boundary) {
            tracing::error!(error = %e, "test hook: cannot write the pause file");
        }
        std::future::pending::<()>().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The time of the oldest record a move would replay: for a rewind by time, that time;
/// otherwise read from the log (the record at each rewinding partition's new offset).
/// An error says why the time could not be read (the refusal names it).
async fn oldest_replayed(env: &Env, mode: &ResetMode, moves: &[Move], timeout: Duration) -> Result<Option<SystemTime>, KafkaError> {
    let rewinding: Vec<(TopicPartition, i64)> = moves.iter().filter(|m| m.replayed() > 0).map(|m| (m.tp(), m.new)).collect();
    if rewinding.is_empty() {
        return Ok(None);
    }
    if let ResetMode::ToTimestamp { ms } = mode {
        return Ok(Some(SystemTime::UNIX_EPOCH + Duration::from_millis((*ms).max(0) as u64)));
    }
    let r = env
        .blocking(move |_, cfg| {
            let mut oldest: Option<i64> = None;
            for (tp, o) in &rewinding {
                let ts = k::read_record(cfg, tp, *o, timeout)?.timestamp.ok_or_else(|| KafkaError::NoRecord { tp: tp_name(tp), offset: *o })?;
                oldest = Some(oldest.map_or(ts, |x: i64| x.min(ts)));
            }
            Ok(oldest)
        })
        .await;
    Ok(r?.map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)))
}

/// The preview of `req` now: reads the group and the log, changes nothing.
pub async fn preview(env: &Env, req: &Request) -> Result<Preview, ProcedureError> {
    let at = match &req.mode {
        ResetMode::ToTimestamp { ms } => Some(*ms),
        _ => None,
    };
    let (group, topics, timeout) = (req.group.clone(), req.topics.clone(), req.timeout);
    let parts = env.blocking(move |admin, _| k::partition_states(admin, &group, &topics, at, timeout)).await?;
    let moves = compute::compute(&req.mode, &parts).map_err(ProcedureError::Compute)?;
    let oldest = oldest_replayed(env, &req.mode, &moves, req.timeout).await;
    let mut breaches = limits::check(&moves, &req.limits, oldest.as_ref().ok().copied().flatten(), SystemTime::now());
    if let Err(why) = &oldest {
        // "Unknown" says why: the refusal is never a mystery.
        for b in breaches.iter_mut().filter(|b| b.limit == "max_rewind_age") {
            b.reason = format!("{}: {why}", b.reason);
        }
    }
    if matches!(req.mode, ResetMode::SkipPoison { .. }) && req.dlq.is_none() {
        return Err(ProcedureError::Config("skipping a poison record needs a dead-letter topic (--dlq)".into()));
    }
    Ok(Preview::new(&req.group, req.mode.clone(), moves, breaches))
}

fn new_id() -> String {
    let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
    format!("{ms:013}-{RUNBOOK}-{:04x}", std::process::id() & 0xffff)
}

fn target(group: &str, tag: Option<&str>) -> BTreeMap<String, String> {
    let mut t: BTreeMap<String, String> = [("group".to_string(), group.to_string())].into();
    if let Some(tag) = tag {
        t.insert("tag".into(), tag.into());
    }
    t
}

/// The procedure started for `tag`, if any: its id and, when it finished, how.
pub fn by_tag(env: &Env, tag: &str) -> Option<(String, Option<(RunEnd, String)>)> {
    journal::recover(&env.records).into_iter().rev().find(|r| r.runbook == RUNBOOK && r.target.get("tag").map(String::as_str) == Some(tag)).map(|r| (r.id, r.finished))
}

/// Runs the whole procedure for `req`.
pub async fn apply(env: &Env, req: Request) -> Result<Outcome, ProcedureError> {
    if let Some(run) = journal::recover(&env.records).into_iter().find(|r| r.runbook == RUNBOOK && r.finished.is_none() && r.target.get("group") == Some(&req.group)) {
        return Err(ProcedureError::Unfinished { group: req.group.clone(), id: run.id });
    }
    let id = new_id();
    env.journal(Record::Started { id: id.clone(), runbook: RUNBOOK.into(), target: target(&req.group, req.tag.as_deref()), mode: Mode::Act, at: SystemTime::now() })
        .await
        .map_err(ProcedureError::Journal)?;
    env.journal(Record::Intent { id: id.clone(), phase: Phase::Steps, step: PLAN, at: SystemTime::now() }).await.map_err(ProcedureError::Journal)?;
    env.pause_at("steps:0:intent").await;
    let mut req = req;
    let planning = match pause::refusal(&req.pause) {
        Some(why) => Err(("pause_unsupported", why)),
        None => match pause::prepare(&mut req.pause, env.scale.as_deref()).await {
            Err(why) => Err(("pause_unsupported", why)),
            Ok(()) => preview(env, &req).await.map_err(|e| ("plan_error", e.to_string())),
        },
    };
    let p = match planning {
        Ok(p) => p,
        Err((reason, e)) => {
            let why = format!("cannot plan: {e}");
            env.metrics.refusal(reason);
            step_end(env, &id, &req.group, PLAN, Err(why.clone())).await;
            return Ok(finish(env, &id, &req.group, RunEnd::Aborted, "refused", why, None).await);
        }
    };
    env.audit(serde_json::json!({"kind": "offsets_plan", "run_id": id, "group": req.group, "preview": p, "refused": p.refused(), "pause": req.pause.describe()})).await;
    if p.refused() {
        for b in &p.breaches {
            env.metrics.refusal(b.limit);
        }
        let why = format!("refused before anything was paused: {}", p.breaches.iter().map(|b| b.reason.as_str()).collect::<Vec<_>>().join("; "));
        step_end(env, &id, &req.group, PLAN, Err(why.clone())).await;
        return Ok(finish(env, &id, &req.group, RunEnd::Aborted, "refused", why, Some(p)).await);
    }
    let planned = Planned { request: req, moves: p.moves.clone() };
    let summary = serde_json::to_string(&planned).map_err(|e| ProcedureError::Journal(e.to_string()))?;
    env.journal(Record::Outcome { id: id.clone(), phase: Phase::Steps, step: PLAN, ok: true, summary, at: SystemTime::now() }).await.map_err(ProcedureError::Journal)?;
    env.pause_at("steps:0:outcome").await;
    Ok(execute(env, &id, &planned, PAUSE, Some(p)).await)
}

/// The `[[scale]]` targets that unfinished runs of the journal at `path` pause: at start
/// the agent holds them (not brought to their minimum, not scaled by their policy) until
/// the recovery resumes them to their journaled count. A missing journal holds none.
pub fn held_scale_targets(path: &std::path::Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let records = journal::parse(&text);
    let unfinished: Vec<String> = journal::recover(&records).into_iter().filter(|r| r.runbook == RUNBOOK && r.finished.is_none()).map(|r| r.id).collect();
    let mut out: Vec<String> = records
        .iter()
        .filter_map(|r| match r {
            Record::Outcome { id, phase: Phase::Steps, step: PLAN, ok: true, summary, .. } if unfinished.contains(id) => match serde_json::from_str::<Planned>(summary).ok()?.request.pause {
                Pause::Scale { target, .. } => Some(target),
                _ => None,
            },
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Finishes every unfinished reprocessing run of the journal (after a crash).
pub async fn recover(env: &Env) -> Vec<Outcome> {
    let mut out = Vec::new();
    for run in journal::recover(&env.records).into_iter().filter(|r| r.runbook == RUNBOOK && r.finished.is_none()) {
        let group = run.target.get("group").cloned().unwrap_or_default();
        let planned = env.records.iter().find_map(|r| match r {
            Record::Outcome { id, phase: Phase::Steps, step: PLAN, ok: true, summary, .. } if *id == run.id => serde_json::from_str::<Planned>(summary).ok(),
            _ => None,
        });
        env.audit(serde_json::json!({"kind": "recovery", "run_id": run.id, "group": group, "done": run.done.iter().map(|((p, i), ok)| format!("{}:{i}:{ok}", p.as_str())).collect::<Vec<_>>()})).await;
        let Some(planned) = planned else {
            out.push(finish(env, &run.id, &group, RunEnd::Aborted, "interrupted", "interrupted before its plan was journaled: nothing was changed".into(), None).await);
            continue;
        };
        let failed = run.done.iter().any(|((p, _), ok)| *p == Phase::Steps && !ok);
        let o = if failed || run.done.contains_key(&(Phase::Rollback, 0)) || run.open.is_some_and(|(p, _)| p == Phase::Rollback) {
            rollback(env, &run.id, &planned, "a step failed before the restart".into()).await
        } else {
            let next = match journal::next_move(&run, |_, _| true) {
                journal::Move::ResumeAt(Phase::Steps, i) => i,
                _ => VERIFY + 1,
            };
            execute(env, &run.id, &planned, next, None).await
        };
        out.push(o);
    }
    out
}

async fn step_end(env: &Env, id: &str, group: &str, step: usize, r: Result<String, String>) {
    let (ok, summary) = match &r {
        Ok(s) => (true, s.clone()),
        Err(s) => (false, s.clone()),
    };
    if let Err(e) = env.journal(Record::Outcome { id: id.into(), phase: Phase::Steps, step, ok, summary: summary.clone(), at: SystemTime::now() }).await {
        tracing::error!(run_id = %id, error = %e, "cannot journal a step outcome");
    }
    // Audited before the boundary, so a crash right after the outcome loses no audit record.
    env.audit(serde_json::json!({"kind": "step", "run_id": id, "runbook": RUNBOOK, "group": group, "step": step, "action": STEPS[step], "ok": ok, "detail": summary})).await;
    env.pause_at(&format!("steps:{step}:outcome")).await;
}

/// Ends the run; `counted` is its `streamguard_offsets_procedures_total` outcome.
async fn finish(env: &Env, id: &str, group: &str, end: RunEnd, counted: &'static str, reason: String, preview: Option<Preview>) -> Outcome {
    env.metrics.procedure(counted);
    if let Err(e) = env.journal(Record::Finished { id: id.into(), end, reason: reason.clone(), at: SystemTime::now() }).await {
        tracing::error!(run_id = %id, error = %e, "cannot journal the end of a run");
    }
    env.audit(serde_json::json!({"kind": "run", "run_id": id, "runbook": RUNBOOK, "group": group, "end": end.as_str(), "reason": reason})).await;
    Outcome { id: id.into(), end: end.as_str(), reason, preview }
}

async fn execute(env: &Env, id: &str, planned: &Planned, from: usize, preview: Option<Preview>) -> Outcome {
    let req = &planned.request;
    for (step, name) in STEPS.iter().enumerate().skip(from) {
        if let Err(e) = env.journal(Record::Intent { id: id.into(), phase: Phase::Steps, step, at: SystemTime::now() }).await {
            // Nothing of this step ran; the consumers stay as they are and the run stays
            // unfinished in the journal for `offsets resume`.
            env.metrics.procedure("interrupted");
            return Outcome { id: id.into(), end: "interrupted", reason: format!("cannot write the journal before {name}: {e}"), preview };
        }
        env.pause_at(&format!("steps:{step}:intent")).await;
        let r = match step {
            PAUSE => pause::pause(&req.pause, &env.http, env.scale.as_deref(), req.timeout).await,
            WAIT_EMPTY => wait_empty(env, req).await,
            DLQ => dlq_copy(env, id, planned).await,
            COMMIT => commit(env, planned).await,
            RESUME => pause::resume(&req.pause, &env.http, env.scale.as_deref(), req.timeout).await,
            _ => verify(env, planned).await,
        };
        let failed = r.as_ref().err().cloned();
        step_end(env, id, &req.group, step, r).await;
        if let Some(why) = failed {
            let why = format!("{name} failed: {why}");
            if step == PAUSE || step == RESUME || step == VERIFY {
                let counted = if step == VERIFY { "verify_failed" } else { "failed" };
                return finish(env, id, &req.group, RunEnd::Failed, counted, why, preview).await;
            }
            let mut o = rollback(env, id, planned, why).await;
            o.preview = preview;
            return o;
        }
    }
    let reason = format!("{} partitions moved; {} records to reprocess, {} skipped", planned.moves.len(), planned.moves.iter().map(Move::replayed).sum::<u64>(), planned.moves.iter().map(Move::skipped).sum::<u64>());
    finish(env, id, &req.group, RunEnd::Succeeded, "succeeded", reason, preview).await
}

/// A step before the consumers were resumed failed: resume them with whatever offsets the
/// group has (read back for the reason) and end the run.
async fn rollback(env: &Env, id: &str, planned: &Planned, why: String) -> Outcome {
    let req = &planned.request;
    let _ = env.journal(Record::Intent { id: id.into(), phase: Phase::Rollback, step: 0, at: SystemTime::now() }).await;
    env.pause_at("rollback:0:intent").await;
    let r = pause::resume(&req.pause, &env.http, env.scale.as_deref(), req.timeout).await;
    let ok = r.is_ok();
    let detail = r.unwrap_or_else(|e| e);
    let _ = env.journal(Record::Outcome { id: id.into(), phase: Phase::Rollback, step: 0, ok, summary: detail.clone(), at: SystemTime::now() }).await;
    env.audit(serde_json::json!({"kind": "step", "run_id": id, "runbook": RUNBOOK, "group": req.group, "phase": "rollback", "action": "resume", "ok": ok, "detail": detail})).await;
    env.pause_at("rollback:0:outcome").await;
    let (group, timeout) = (req.group.clone(), req.timeout);
    let now = env.blocking(move |admin, _| k::committed(admin, &group, timeout)).await;
    let state = match now {
        Err(e) => format!("the committed offsets are unknown ({e})"),
        Ok(c) if planned.moves.iter().all(|m| c.get(&m.tp()).copied().flatten() == Some(m.new)) => "the new offsets are committed".into(),
        Ok(c) if planned.moves.iter().all(|m| c.get(&m.tp()).copied().flatten() == m.old) => "the old offsets are unchanged".into(),
        Ok(_) => "the committed offsets are neither the old nor the new ones".into(),
    };
    let (end, counted) = if why.starts_with("wait-empty") {
        env.metrics.refusal("group_not_empty");
        (RunEnd::Aborted, "aborted")
    } else {
        (RunEnd::Failed, "failed")
    };
    let resumed = if ok { "consumers resumed" } else { "consumers NOT resumed" };
    finish(env, id, &req.group, end, counted, format!("{why}; {resumed}; {state}"), None).await
}

async fn wait_empty(env: &Env, req: &Request) -> Result<String, String> {
    let deadline = Instant::now() + req.empty_deadline;
    let mut last;
    loop {
        let (g, t) = (req.group.clone(), req.timeout);
        match env.blocking(move |admin, _| k::membership(admin, &g, t)).await {
            Ok(m) if m.is_empty() => return Ok(format!("group {} is {} with no members", req.group, m.state.as_str())),
            Ok(m) => last = format!("group {} is {} with {} members: {}", req.group, m.state.as_str(), m.members, m.who.join(", ")),
            Err(e) => last = format!("membership unknown: {e}"),
        }
        if Instant::now() + Duration::from_millis(500) > deadline {
            return Err(format!("not Empty within {}: {last}", humantime::format_duration(req.empty_deadline)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn dlq_copy(env: &Env, id: &str, planned: &Planned) -> Result<String, String> {
    let req = &planned.request;
    let ResetMode::SkipPoison { .. } = &req.mode else { return Ok("nothing to copy".into()) };
    let dlq = req.dlq.clone().ok_or("no dead-letter topic")?;
    let mut done = Vec::new();
    for m in &planned.moves {
        let (tp, offset, t) = (m.tp(), m.new - 1, req.timeout);
        let (d, tp2) = (dlq.clone(), tp.clone());
        // Idempotence: a copy produced before a crash (and not yet journaled) is found.
        let g = req.group.clone();
        let found = env.blocking(move |admin, cfg| k::find_copy(admin, cfg, &d, &g, &tp2, offset, t)).await.map_err(|e| e.to_string())?;
        if let Some((p, o)) = found {
            done.push(format!("{}@{offset} already in {dlq} at {p}:{o}", tp_name(&tp)));
            continue;
        }
        let tp3 = tp.clone();
        let record = env.blocking(move |_, cfg| k::read_record(cfg, &tp3, offset, t)).await.map_err(|e| e.to_string())?;
        env.pause_at("steps:3:read").await;
        let reason = format!("{} (run {id})", req.reason);
        let (p, o) = k::produce_copy(&env.kafka, &dlq, &req.group, &tp, offset, &record, &reason, req.timeout).await.map_err(|e| e.to_string())?;
        env.metrics.dlq_copy();
        // A crash here (produced, not journaled) is what the search above is for.
        env.pause_at("steps:3:produced").await;
        done.push(format!("{}@{offset} copied to {dlq} at {p}:{o}", tp_name(&tp)));
    }
    Ok(done.join("; "))
}

async fn commit(env: &Env, planned: &Planned) -> Result<String, String> {
    let req = &planned.request;
    let offsets: Vec<(TopicPartition, i64)> = planned.moves.iter().map(|m| (m.tp(), m.new)).collect();
    let (g, t) = (req.group.clone(), req.timeout);
    let current = env.blocking(move |admin, _| k::committed(admin, &g, t)).await.map_err(|e| format!("cannot read the committed offsets: {e}"))?;
    let (skipped, replayed) = (planned.moves.iter().map(Move::skipped).sum(), planned.moves.iter().map(Move::replayed).sum());
    if offsets.iter().all(|(tp, o)| current.get(tp).copied().flatten() == Some(*o)) {
        // Sent before a crash (by this process or one that died): counted now.
        env.metrics.committed(skipped, replayed);
        return Ok("already committed (nothing sent)".into());
    }
    // Never commit for a group with members: re-checked right before the commit.
    let (g, t) = (req.group.clone(), req.timeout);
    let m = env.blocking(move |admin, _| k::membership(admin, &g, t)).await.map_err(|e| format!("membership unknown, not committed: {e}"))?;
    if !m.is_empty() {
        return Err(format!("group {} has {} members again ({}), not committed", req.group, m.members, m.who.join(", ")));
    }
    if let Pause::Connect { url, connector } = &req.pause {
        let o: Vec<(String, i32, i64)> = offsets.iter().map(|(tp, o)| (tp.topic.clone(), tp.partition, *o)).collect();
        let r = pause::connect_commit(&env.http, url, connector, &o, req.timeout).await;
        if r.is_ok() {
            env.metrics.committed(skipped, replayed);
        }
        return r;
    }
    let (g, t, o) = (req.group.clone(), req.timeout, offsets.clone());
    env.blocking(move |admin, _| k::commit(admin, &g, &o, t)).await.map_err(|e| e.to_string())?;
    // A crash here (committed, not journaled) is what the read-back above is for.
    env.pause_at("steps:4:sent").await;
    let (g, t) = (req.group.clone(), req.timeout);
    let after = env.blocking(move |admin, _| k::committed(admin, &g, t)).await.map_err(|e| format!("committed, but cannot read it back: {e}"))?;
    let wrong: Vec<String> = offsets.iter().filter(|(tp, o)| after.get(tp).copied().flatten() != Some(*o)).map(|(tp, o)| format!("{} (wanted {o})", tp_name(tp))).collect();
    if wrong.is_empty() {
        env.metrics.committed(skipped, replayed);
        Ok(format!("committed {} partitions with the admin API", offsets.len()))
    } else {
        Err(format!("read back differs: {}", wrong.join(", ")))
    }
}

/// After the resume: the group's lag moved as the preview predicted ([`verify::judge`]);
/// when consumers were resumed, each partition with records past its new offset is
/// consumed from it within the deadline.
async fn verify(env: &Env, planned: &Planned) -> Result<String, String> {
    let req = &planned.request;
    let deadline = Instant::now() + req.verify_deadline;
    let consuming = !matches!(req.pause, Pause::None);
    let tps: Vec<TopicPartition> = planned.moves.iter().map(Move::tp).collect();
    let mut last;
    loop {
        let (g, t, tps) = (req.group.clone(), req.timeout, tps.clone());
        match env.blocking(move |admin, _| k::observe(admin, &g, &tps, t)).await {
            Ok(now) => match verify::judge(&planned.moves, &now, consuming) {
                Judgement::Holds(s) => return Ok(if consuming { format!("consuming again from the new offsets: {s}") } else { s }),
                Judgement::Fails(s) => return Err(format!("the lag did not move as predicted: {s}")),
                Judgement::Pending(s) => last = s,
            },
            Err(e) => last = format!("committed offsets or log range unknown: {e}"),
        }
        if Instant::now() + Duration::from_millis(500) > deadline {
            return Err(format!("the lag did not move as predicted within {}: {last}", humantime::format_duration(req.verify_deadline)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
