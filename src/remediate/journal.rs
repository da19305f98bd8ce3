//! The write-ahead journal: an append-only file of JSON lines, the source of truth for
//! runs in progress.
//!
//! # Guarantees
//! - Every record is written and flushed to disk (`fsync`) before [`Journal::append`]
//!   returns: the executor writes a step's *intent* before it starts the step and its
//!   *outcome* after, so after a crash the journal says which steps completed and which
//!   one (at most one per run) was interrupted.
//! - A torn last line (the process died mid-write) is ignored on read, not an error.
//! - [`recover`] turns the records into per-run state; [`next_move`] decides, purely,
//!   what to do with an unfinished run: a completed step is never repeated; an
//!   interrupted step is retried only if its action is idempotent, else the run aborts.
//! - At open the file is compacted (atomically: temp file, fsync, rename, fsync of the
//!   directory) to the unfinished runs and the latest [`KEEP_FINISHED`] finished ones, so
//!   it does not grow without bound.
//!
//! # Errors
//! I/O errors are returned; the executor refuses to act when it cannot journal.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::rules::file::runbook::Mode;
use crate::signal::Labels;

/// Finished runs kept by compaction (they feed the cooldown and rate guards).
pub const KEEP_FINISHED: usize = 500;

/// Times as Unix seconds (fractional), both ways.
mod ts {
    use std::time::{Duration, SystemTime};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(crate::signal::unix_secs(*t))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let secs: f64 = serde::Deserialize::deserialize(d)?;
        if !(0.0..1e11).contains(&secs) {
            return Err(serde::de::Error::custom("time out of range"));
        }
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
    }
}

/// Where a step is in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Steps,
    Verify,
    Rollback,
    Escalate,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Steps => "steps",
            Phase::Verify => "verify",
            Phase::Rollback => "rollback",
            Phase::Escalate => "escalate",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    Succeeded,
    /// A step or the verification failed (rollback and escalation ran).
    Failed,
    /// Stopped safely without finishing: a precondition no longer held, an interrupted
    /// step could not be repeated, the runbook is gone.
    Aborted,
    /// Never approved in time.
    Expired,
}

impl RunEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnd::Succeeded => "succeeded",
            RunEnd::Failed => "failed",
            RunEnd::Aborted => "aborted",
            RunEnd::Expired => "expired",
        }
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Started {
        id: String,
        runbook: String,
        target: Labels,
        mode: Mode,
        #[serde(with = "ts")]
        at: SystemTime,
    },
    Approved {
        id: String,
        #[serde(with = "ts")]
        at: SystemTime,
    },
    Intent {
        id: String,
        phase: Phase,
        step: usize,
        #[serde(with = "ts")]
        at: SystemTime,
    },
    Outcome {
        id: String,
        phase: Phase,
        step: usize,
        ok: bool,
        summary: String,
        #[serde(with = "ts")]
        at: SystemTime,
    },
    Finished {
        id: String,
        end: RunEnd,
        reason: String,
        #[serde(with = "ts")]
        at: SystemTime,
    },
}

impl Record {
    pub fn id(&self) -> &str {
        match self {
            Record::Started { id, .. }
            | Record::Approved { id, .. }
            | Record::Intent { id, .. }
            | Record::Outcome { id, .. }
            | Record::Finished { id, .. } => id,
        }
    }
}

/// A run as the journal knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub id: String,
    pub runbook: String,
    pub target: Labels,
    pub mode: Mode,
    pub started: SystemTime,
    pub approved: bool,
    /// Steps with an outcome, by (phase, index): ok or not.
    pub done: BTreeMap<(Phase, usize), bool>,
    /// Intents per step (more than one: it was retried after an interruption).
    pub intents: BTreeMap<(Phase, usize), u32>,
    /// The step whose intent has no outcome yet (interrupted, if the run is not live).
    pub open: Option<(Phase, usize)>,
    pub finished: Option<(RunEnd, String)>,
}

/// Folds records into runs (in start order). Records of unknown runs are ignored.
pub fn recover(records: &[Record]) -> Vec<RunState> {
    let mut order: Vec<String> = Vec::new();
    let mut runs: BTreeMap<String, RunState> = BTreeMap::new();
    for r in records {
        match r {
            Record::Started { id, runbook, target, mode, at } => {
                order.push(id.clone());
                runs.insert(
                    id.clone(),
                    RunState {
                        id: id.clone(),
                        runbook: runbook.clone(),
                        target: target.clone(),
                        mode: *mode,
                        started: *at,
                        approved: false,
                        done: BTreeMap::new(),
                        intents: BTreeMap::new(),
                        open: None,
                        finished: None,
                    },
                );
            }
            Record::Approved { id, .. } => {
                if let Some(s) = runs.get_mut(id) {
                    s.approved = true;
                }
            }
            Record::Intent { id, phase, step, .. } => {
                if let Some(s) = runs.get_mut(id) {
                    *s.intents.entry((*phase, *step)).or_default() += 1;
                    s.open = Some((*phase, *step));
                }
            }
            Record::Outcome { id, phase, step, ok, .. } => {
                if let Some(s) = runs.get_mut(id) {
                    s.done.insert((*phase, *step), *ok);
                    if s.open == Some((*phase, *step)) {
                        s.open = None;
                    }
                }
            }
            Record::Finished { id, end, reason, .. } => {
                if let Some(s) = runs.get_mut(id) {
                    s.finished = Some((*end, reason.clone()));
                    s.open = None;
                }
            }
        }
    }
    order.into_iter().filter_map(|id| runs.remove(&id)).collect()
}

/// What to do with an unfinished run after a restart. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// Still waiting for its approval.
    AwaitApproval,
    /// Continue at this step (the first one without an outcome in its phase; an
    /// interrupted idempotent step is retried).
    ResumeAt(Phase, usize),
    /// An interrupted step cannot be repeated safely: abort and escalate.
    Abort { phase: Phase, step: usize },
}

/// Decides how an unfinished run continues. `idempotent(phase, step)` says whether that
/// step's action may be repeated.
pub fn next_move(run: &RunState, idempotent: impl Fn(Phase, usize) -> bool) -> Move {
    if run.mode == Mode::Approve && !run.approved {
        return Move::AwaitApproval;
    }
    if let Some((phase, step)) = run.open {
        if !idempotent(phase, step) {
            return Move::Abort { phase, step };
        }
        return Move::ResumeAt(phase, step);
    }
    // The latest step with an outcome; continue after it in its phase (the executor
    // moves on to the next phase when a phase has no more steps, or to rollback and
    // escalation when that outcome was a failure).
    match run.done.iter().max_by_key(|((p, i), _)| (*p, *i)) {
        None => Move::ResumeAt(Phase::Steps, 0),
        Some(((p, i), _)) => Move::ResumeAt(*p, i + 1),
    }
}

/// The journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}: cannot encode a record: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Journal {
    /// Opens (creating) the journal, compacts it, and returns it with its records.
    pub fn open(path: &Path) -> Result<(Journal, Vec<Record>), JournalError> {
        let io = |source| JournalError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let records = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let records = compact(records);
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r).map_err(|source| JournalError::Encode { path: path.to_path_buf(), source })?);
            text.push('\n');
        }
        write_durably(path, text.as_bytes()).map_err(io)?;
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(io)?;
        Ok((Journal { path: path.to_path_buf(), file }, records))
    }

    /// Appends one record and flushes it to disk before returning.
    pub fn append(&mut self, r: &Record) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(r).map_err(|source| JournalError::Encode { path: self.path.clone(), source })?;
        line.push(b'\n');
        let io = |source| JournalError::Io { path: self.path.clone(), source };
        self.file.write_all(&line).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Every complete, valid line; a torn or foreign line is skipped.
pub fn parse(text: &str) -> Vec<Record> {
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Keeps the records of unfinished runs and of the latest [`KEEP_FINISHED`] finished ones.
pub fn compact(records: Vec<Record>) -> Vec<Record> {
    let runs = recover(&records);
    let finished: Vec<&str> = runs.iter().filter(|r| r.finished.is_some()).map(|r| r.id.as_str()).collect();
    let drop: std::collections::BTreeSet<String> =
        finished.iter().take(finished.len().saturating_sub(KEEP_FINISHED)).map(|s| s.to_string()).collect();
    records.into_iter().filter(|r| !drop.contains(r.id())).collect()
}

fn write_durably(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("compact.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn started(id: &str, mode: Mode) -> Record {
        Record::Started { id: id.into(), runbook: "rb".into(), target: Labels::new(), mode, at: t(0) }
    }

    fn intent(id: &str, step: usize) -> Record {
        Record::Intent { id: id.into(), phase: Phase::Steps, step, at: t(1) }
    }

    fn outcome(id: &str, step: usize) -> Record {
        Record::Outcome { id: id.into(), phase: Phase::Steps, step, ok: true, summary: String::new(), at: t(2) }
    }

    #[test]
    fn a_completed_step_is_never_repeated_and_the_next_one_runs() {
        let runs = recover(&[started("r1", Mode::Act), intent("r1", 0), outcome("r1", 0)]);
        assert_eq!(next_move(&runs[0], |_, _| false), Move::ResumeAt(Phase::Steps, 1));
    }

    #[test]
    fn an_interrupted_step_is_retried_only_when_idempotent() {
        let runs = recover(&[started("r1", Mode::Act), intent("r1", 0), outcome("r1", 0), intent("r1", 1)]);
        assert_eq!(next_move(&runs[0], |_, _| true), Move::ResumeAt(Phase::Steps, 1));
        assert_eq!(next_move(&runs[0], |_, _| false), Move::Abort { phase: Phase::Steps, step: 1 });
    }

    #[test]
    fn an_unapproved_run_keeps_waiting_and_a_fresh_one_starts_at_the_first_step() {
        let runs = recover(&[started("r1", Mode::Approve), started("r2", Mode::Act)]);
        assert_eq!(next_move(&runs[0], |_, _| true), Move::AwaitApproval);
        assert_eq!(next_move(&runs[1], |_, _| true), Move::ResumeAt(Phase::Steps, 0));
    }

    #[test]
    fn records_survive_a_reopen_and_a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let (mut j, recs) = Journal::open(&path).unwrap();
            assert!(recs.is_empty());
            j.append(&started("r1", Mode::Act)).unwrap();
            j.append(&intent("r1", 0)).unwrap();
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"type\":\"outcome\",\"id\":\"r1\",\"pha").unwrap();
        drop(f);
        let (_, recs) = Journal::open(&path).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recover(&recs)[0].open, Some((Phase::Steps, 0)));
    }

    use proptest::prelude::*;

    proptest! {
        /// Against a naive model: a run of steps (each idempotent or not) journaled as
        /// Started, Intent 0, Outcome 0, Intent 1, … and cut after any record (a crash).
        /// Recovery resumes right after the last outcome; an open intent is retried when
        /// idempotent and aborts the run when not; a step with an outcome never runs again.
        #[test]
        fn recovery_after_a_crash_at_any_record_agrees_with_a_naive_model(
            idempotent in proptest::collection::vec(any::<bool>(), 1..8),
            cut in 1usize..20,
        ) {
            let mut recs = vec![started("r", Mode::Act)];
            for i in 0..idempotent.len() {
                recs.push(intent("r", i));
                recs.push(outcome("r", i));
            }
            let cut = cut.min(recs.len());
            let kept = &recs[..cut];
            let runs = recover(kept);
            let got = next_move(&runs[0], |_, i| idempotent[i]);
            // The model: records after Started alternate intent/outcome.
            let after = cut - 1;
            let completed = after / 2;
            let expected = if after % 2 == 1 {
                if idempotent[completed] { Move::ResumeAt(Phase::Steps, completed) } else { Move::Abort { phase: Phase::Steps, step: completed } }
            } else {
                Move::ResumeAt(Phase::Steps, completed)
            };
            prop_assert_eq!(&got, &expected);
            if let Move::ResumeAt(_, at) = got {
                prop_assert!(runs[0].done.keys().all(|(_, i)| *i < at), "a completed step is never resumed");
            }
        }
    }

    #[test]
    fn compaction_keeps_unfinished_runs_and_the_latest_finished_ones() {
        let mut recs = vec![started("open", Mode::Act)];
        for i in 0..KEEP_FINISHED + 3 {
            let id = format!("f{i}");
            recs.push(started(&id, Mode::Act));
            recs.push(Record::Finished { id, end: RunEnd::Succeeded, reason: String::new(), at: t(3) });
        }
        let kept = recover(&compact(recs));
        assert_eq!(kept.len(), KEEP_FINISHED + 1);
        assert_eq!(kept[0].id, "open");
        assert_eq!(kept[1].id, "f3");
    }
}
