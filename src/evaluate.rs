//! The evaluate stage at run time: loads rules, runs one evaluation loop per rule group
//! (a rule file) on a fixed interval, reloads on file change and SIGHUP, persists SLO
//! budgets, and keeps the latest statuses for `/metrics` and the API.
//!
//! The decisions are all in [`crate::rules`] (pure); this module only moves data between
//! the store, the engine, the state file and the clock.
//!
//! # Guarantees
//! - A reload that fails validation keeps the previous rule set running; the failure is
//!   logged and shows in `streamguard_rules_reload_success`.
//! - A reload keeps the pending timers and firing state of rules that still exist.
//! - Missed evaluation ticks (a tick that starts late by a whole interval) are counted.
//! - SLO state is journaled after every evaluation and snapshotted atomically and
//!   durably (see [`crate::state`]), so a kill loses at most one evaluation interval and
//!   neither a restart nor a power loss resets a 28-day budget. A restored file is
//!   validated; one that fails is moved aside and the agent starts clean, and says so.
//!   A failed write is a metric and a `/readyz` reason, not only a log line.
//! - File I/O (state file, rule files on reload, the change fingerprint) runs on the
//!   blocking pool, never on the async worker threads.
//! - Group loops run under the agent's [`Supervisor`], inside its task tracker: shutdown
//!   waits for them, and a panic in an evaluation is counted, fails `/readyz` and
//!   restarts the group with backoff.
//! - After each group evaluation the [`Rules::subscribe`] channel is bumped, so the
//!   notifier reads fresh statuses without ever making evaluation wait.
//! - With a verdict sink set ([`Rules::set_verdict_sink`]), every alert transition and
//!   every SLO burn-alert transition is sent on it as a [`Verdict`] with its evidence,
//!   without waiting: when the bounded channel is full the verdict is dropped, counted
//!   (`streamguard_remediation_verdicts_dropped_total`) and logged.
//!
//! Longer than ~600 lines: the persistence methods (restore, snapshot, journal) hold the
//! engine lock and the journal lock in one order that the evaluation also follows; kept
//! next to it so that order stays visible. The file format and its validation live in
//! [`crate::state`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::RulesConfig;
use crate::rules::eval::{AlertState, Engine, EngineOptions, RuleStatus, Transition};
use crate::rules::expr::{Dataset, EvalOptions, Points, SeriesData};
use crate::rules::file::{self, RuleErrors, RuleSet};
use crate::rules::slo::{Events, SloSpec, SloStatus};
use crate::rules::verdict::{self, Verdict};
use crate::state::{self, JournalEntry, RestoreStatus, StateHealth};
use crate::signal::Quality;
use crate::store::{HistoryNeed, Store};
use crate::supervise::Supervisor;

/// Outcome of the latest (re)load.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub success: bool,
    #[serde(skip)]
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

/// Per group (rule file) evaluation counters.
#[derive(Debug, Clone, Default)]
pub struct GroupStats {
    pub evaluations: u64,
    pub missed_ticks: u64,
    pub failures: u64,
    pub last_duration: Duration,
    /// Time its evaluations waited for Kafka cycles to store (see `store::turns`).
    pub turn_wait: Duration,
}

/// Upper bounds (seconds) of the evaluation duration histogram.
pub const EVAL_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Labels of per-group instruments: the rule file.
pub type GroupLabels = Vec<(&'static str, String)>;

/// Evaluation durations per group, as prometheus-client's histogram (the telemetry
/// module registers it; evaluation only observes).
pub type DurationHistograms =
    prometheus_client::metrics::family::Family<GroupLabels, prometheus_client::metrics::histogram::Histogram, fn() -> prometheus_client::metrics::histogram::Histogram>;

fn eval_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(EVAL_BUCKETS)
}

/// Shared state of the evaluate stage.
#[derive(Debug)]
pub struct Rules {
    pub config: RulesConfig,
    known_signals: BTreeSet<String>,
    set: RwLock<Arc<RuleSet>>,
    engine: Mutex<Engine>,
    rule_status: RwLock<BTreeMap<(PathBuf, String), RuleStatus>>,
    slo_status: RwLock<BTreeMap<String, SloStatus>>,
    pub reload: RwLock<ReloadStatus>,
    pub groups: Mutex<BTreeMap<PathBuf, GroupStats>>,
    /// `streamguard_rule_group_evaluation_duration_seconds`.
    pub eval_duration: DurationHistograms,
    /// Bumped on every successful reload; loops of an older generation stop.
    generation: Mutex<CancellationToken>,
    /// Counts group evaluations; the notifier waits on it.
    evaluated: tokio::sync::watch::Sender<u64>,
    /// Where verdicts go (remediation), if anywhere.
    verdict_sink: Mutex<Option<tokio::sync::mpsc::Sender<Verdict>>>,
    /// Verdicts dropped because the sink was full or closed.
    pub verdicts_dropped: prometheus_client::metrics::counter::Counter,
    /// Burn alerts firing at the previous evaluation, by (SLO, severity, long window).
    burn_firing: Mutex<verdict::BurnFiring>,
    /// Persistence health (API, metrics, readiness).
    pub state: StateHealth,
    /// The open journal (appended after every evaluation); `None` until first used or
    /// after a failed write. Held while a snapshot replaces the file.
    journal: Mutex<Option<std::fs::File>>,
    /// Group evaluations at once: [`EVALUATIONS_AT_ONCE`].
    evaluations: tokio::sync::Semaphore,
    /// Tests: the most group evaluations seen running at once, and those running now.
    #[cfg(test)]
    in_flight: (std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize),
}

/// Tests: counts a group evaluation as running until dropped.
#[cfg(test)]
struct Running<'a>(&'a std::sync::atomic::AtomicUsize);

#[cfg(test)]
impl<'a> Running<'a> {
    fn start((most, now): &'a (std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize)) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        most.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
        Running(now)
    }
}

#[cfg(test)]
impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Files evaluate on their own schedules, but the engine's lock lets one evaluate at a
/// time; unbounded, every file copied what it reads out of the store (its dataset) at
/// the same tick and held it while it waited for the lock: at 20,000 groups, hundreds of
/// MB at once. Two: one copies while the other evaluates.
pub const EVALUATIONS_AT_ONCE: usize = 2;

/// Errors of the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid state file: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Rules {
    /// Loads the rules; an invalid set at start is an error (nothing to fall back to).
    pub fn load(config: RulesConfig, known_signals: BTreeSet<String>) -> Result<Self, RuleErrors> {
        let set = if config.paths.is_empty() { RuleSet::default() } else { file::load(&config.paths, &known_signals).0? };
        let rules = Rules {
            state: StateHealth::new(config.state_file.clone()),
            journal: Mutex::new(None),
            config,
            known_signals,
            set: RwLock::new(Arc::new(set)),
            engine: Mutex::new(Engine::default()),
            rule_status: RwLock::default(),
            slo_status: RwLock::default(),
            reload: RwLock::new(ReloadStatus { success: true, last_success: Some(SystemTime::now()), ..ReloadStatus::default() }),
            groups: Mutex::default(),
            eval_duration: DurationHistograms::new_with_constructor(eval_histogram),
            generation: Mutex::new(CancellationToken::new()),
            evaluated: tokio::sync::watch::Sender::new(0),
            verdict_sink: Mutex::new(None),
            verdicts_dropped: Default::default(),
            burn_firing: Mutex::default(),
            evaluations: tokio::sync::Semaphore::new(EVALUATIONS_AT_ONCE),
            #[cfg(test)]
            in_flight: Default::default(),
        };
        Ok(rules)
    }

    /// A receiver that changes after every group evaluation (one value: never full,
    /// never blocks evaluation).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.evaluated.subscribe()
    }

    /// Sends every later alert and burn-alert transition to `sink` (never waiting).
    pub fn set_verdict_sink(&self, sink: tokio::sync::mpsc::Sender<Verdict>) {
        *self.verdict_sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    fn has_verdict_sink(&self) -> bool {
        self.verdict_sink.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn send_verdicts(&self, verdicts: Vec<Verdict>) {
        let sink = self.verdict_sink.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(sink) = sink else { return };
        // One log line per evaluation, not per verdict: a mass incident can drop thousands.
        let (mut dropped, mut first) = (0u64, None);
        for v in verdicts {
            if let Err(e) = sink.try_send(v) {
                self.verdicts_dropped.inc();
                dropped += 1;
                if first.is_none() {
                    let v = match e {
                        tokio::sync::mpsc::error::TrySendError::Full(v) | tokio::sync::mpsc::error::TrySendError::Closed(v) => v,
                    };
                    first = Some((v.rule, v.to));
                }
            }
        }
        if let Some((rule, to)) = first {
            tracing::error!(dropped, first_rule = %rule, to = to.as_str(), "remediation verdicts dropped: their queue is full or closed");
        }
    }

    pub fn set(&self) -> Arc<RuleSet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn options(&self) -> EngineOptions {
        EngineOptions {
            eval: EvalOptions { confidence: self.config.confidence },
            unknown_after: self.config.unknown_after,
            ..EngineOptions::default()
        }
    }

    /// Re-reads the rule files. A valid set replaces the old one; an invalid one is
    /// rejected (and returned) while the old one keeps running.
    pub fn reload(&self) -> Result<(), RuleErrors> {
        let (result, _) = file::load(&self.config.paths, &self.known_signals);
        let mut status = self.reload.write().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(set) => {
                self.engine.lock().unwrap_or_else(|p| p.into_inner()).retain(&set);
                *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                status.success = true;
                status.last_success = Some(SystemTime::now());
                status.last_error = None;
                status.reloads_ok += 1;
                tracing::info!("rules reloaded");
                Ok(())
            }
            Err(errors) => {
                status.success = false;
                status.last_error = Some(errors.to_string());
                status.reloads_failed += 1;
                tracing::error!(errors = %errors, "rule reload rejected; the previous rules keep running");
                Err(errors)
            }
        }
    }

    /// Restores SLO events from the state file and its journal (absent: nothing to
    /// restore). A file that fails validation is moved aside and the agent starts with
    /// empty budgets (`Ok(0)`, shown in [`Rules::state`]); only an unreadable file is an
    /// error.
    pub fn restore(&self) -> Result<usize, StateError> {
        let now = SystemTime::now();
        let path = self.config.state_file.clone();
        let jpath = state::journal_path(&path);
        let read = |p: &Path| match std::fs::read_to_string(p) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path: p.to_path_buf(), source }),
        };
        let texts = read(&path).and_then(|a| Ok((a, read(&jpath)?)));
        let (snapshot, journal) = match texts {
            Ok(t) => t,
            Err(e) => {
                let status = RestoreStatus { outcome: "failed", cause: Some("io"), error: Some(e.to_string()), ..RestoreStatus::default() };
                self.state.record_restore(status);
                return Err(e);
            }
        };
        let set = self.set();
        let specs: HashMap<&str, &SloSpec> = set.slos.iter().map(|s| (s.name.as_str(), s)).collect();
        match state::decode(snapshot.as_deref(), journal.as_deref(), &specs, now) {
            Ok(d) => {
                let n = d.events.len();
                let outcome = if snapshot.is_none() && journal.is_none() { "empty" } else { "restored" };
                if !d.reset.is_empty() {
                    tracing::warn!(slos = ?d.reset, "SLO bucket width changed (its alert windows were edited): these SLOs start with empty budgets");
                }
                self.engine.lock().unwrap_or_else(|p| p.into_inner()).events.extend(d.events);
                self.state.record_restore(RestoreStatus { outcome, slos: n, journal_entries: d.journal_entries, reset: d.reset, ..RestoreStatus::default() });
                Ok(n)
            }
            Err(invalid) => {
                let mut moved = Vec::new();
                for p in [&path, &jpath] {
                    if p.exists() {
                        match state::quarantine(p, now) {
                            Ok(to) => moved.push(to),
                            Err(e) => tracing::error!(path = %p.display(), error = %e, "cannot move the rejected SLO state aside"),
                        }
                    }
                }
                tracing::error!(
                    path = %path.display(), cause = invalid.cause, error = %invalid.message, moved_to = ?moved,
                    "SLO state file rejected and moved aside; starting with empty budgets"
                );
                self.state.record_restore(RestoreStatus {
                    outcome: "rejected",
                    cause: Some(invalid.cause),
                    error: Some(invalid.message),
                    moved_to: moved.into_iter().next(),
                    ..RestoreStatus::default()
                });
                Ok(0)
            }
        }
    }

    /// Writes a snapshot of every SLO's events atomically and empties the journal
    /// (nothing when there are no SLOs). Failures are also recorded in [`Rules::state`].
    pub fn persist(&self) -> Result<(), StateError> {
        if self.set().slos.is_empty() {
            return Ok(());
        }
        let path = &self.config.state_file;
        let io = |source| StateError::Io { path: path.clone(), source };
        // Appends wait while the snapshot is taken and the journal emptied: a line
        // written after the copy below is then still in the journal.
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let state = state::StateFile { version: 1, slos: self.engine.lock().unwrap_or_else(|p| p.into_inner()).events.clone() };
        let text = serde_json::to_vec(&state).map_err(|source| StateError::Decode { path: path.clone(), source })?;
        let result = (|| {
            if let Some(dir) = path.parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)?;
                }
            }
            state::write_durably(&path.with_extension("json.tmp"), path, &text)?;
            match journal.as_mut() {
                Some(f) => {
                    f.set_len(0)?;
                    f.sync_data()
                }
                None => match std::fs::OpenOptions::new().write(true).truncate(true).open(state::journal_path(path)) {
                    Ok(f) => f.sync_data(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                },
            }
        })();
        match result {
            Ok(()) => {
                self.state.record_ok(SystemTime::now());
                Ok(())
            }
            Err(e) => {
                self.state.record_failure("snapshot", &e);
                *journal = None;
                Err(io(e))
            }
        }
    }

    /// Appends the buckets one evaluation changed to the journal and syncs it.
    fn journal(&self, entries: &[JournalEntry]) {
        if entries.is_empty() {
            return;
        }
        let mut text = Vec::new();
        for e in entries {
            if serde_json::to_writer(&mut text, e).is_ok() {
                text.push(b'\n');
            }
        }
        let path = &self.config.state_file;
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let result = (|| {
            if journal.is_none() {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                *journal = Some(std::fs::OpenOptions::new().create(true).append(true).open(state::journal_path(path))?);
            }
            let f = journal.as_mut().ok_or_else(|| std::io::Error::other("journal not open"))?;
            std::io::Write::write_all(f, &text)?;
            f.sync_data()
        })();
        match result {
            Ok(()) => self.state.record_ok(SystemTime::now()),
            Err(e) => {
                self.state.record_failure("journal", &e);
                *journal = None;
            }
        }
    }

    /// The `/readyz` reason while SLO state cannot be written.
    pub fn state_not_ready(&self) -> Option<String> {
        self.state.not_ready()
    }

    /// [`Rules::restore`] on the blocking pool.
    pub async fn restore_async(self: &Arc<Self>) -> Result<usize, StateError> {
        let rules = self.clone();
        joined(tokio::task::spawn_blocking(move || rules.restore()).await).unwrap_or(Ok(0))
    }

    /// [`Rules::persist`] on the blocking pool; errors are logged.
    async fn persist_async(self: &Arc<Self>, when: &'static str) {
        let rules = self.clone();
        if let Some(Err(e)) = joined(tokio::task::spawn_blocking(move || rules.persist()).await) {
            tracing::error!(error = %e, when, "cannot write the SLO state file");
        }
    }

    /// Evaluates one group (file) at `now` against the store.
    pub fn eval_group(&self, file: &Path, store: &Store, now: SystemTime) {
        #[cfg(test)]
        let _running = Running::start(&self.in_flight);
        let started = Instant::now();
        let set = self.set();
        let alerts: Vec<_> = set.alerts.iter().filter(|r| r.file == file).cloned().collect();
        let slos: Vec<_> = set.slos.iter().filter(|s| s.file == file).cloned().collect();
        // Only what this file's rules read (each file evaluates on its own schedule).
        let data = dataset_for(store, &file_values(&alerts, &slos), now);
        let opts = self.options();
        let (transitions, truths, statuses, slo_statuses, journal) = {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            let t = engine.eval_alerts(&alerts, &data, now, &opts);
            let truths: Vec<_> = t
                .iter()
                .map(|t| engine.instance(&t.file, &t.rule, &t.labels).map_or(crate::rules::expr::Truth::Unknown, |i| i.truth))
                .collect();
            let s = engine.rule_statuses(&alerts, now, &opts);
            let slo = engine.eval_slos(&slos, &data, now, &opts);
            (t, truths, s, slo, journal_entries(&slos, &engine.events, now))
        };
        self.journal(&journal);
        // Verdicts only for a sink (built for nothing otherwise: at scale a mass incident
        // is tens of thousands of transitions); each rule's evidence is indexed once.
        let mut verdicts: Vec<Verdict> = Vec::new();
        if self.has_verdict_sink() {
            let mut indexes: HashMap<&str, (&file::AlertRule, verdict::EvidenceIndex<'_>)> = HashMap::new();
            for (t, truth) in transitions.iter().zip(&truths) {
                let Some(rule) = alerts.iter().find(|r| *r.name == *t.rule) else { continue };
                let (rule, index) = indexes.entry(rule.name.as_str()).or_insert_with(|| (rule, verdict::EvidenceIndex::new(&rule.condition, &data, now)));
                verdicts.push(verdict::alert_verdict_indexed(t, *truth, &rule.runbooks, index, now));
            }
        }
        // Burn verdicts update the firing memory whether or not anyone listens.
        verdicts.extend(self.burn_verdicts(&slos, &slo_statuses, &data, now));
        self.send_verdicts(verdicts);
        let (one_by_one, counted) = transition_log(&transitions, LOGGED_TRANSITIONS_PER_RULE);
        for t in one_by_one {
            let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if t.to == AlertState::Firing || t.stale {
                tracing::warn!(rule = %t.rule, labels = %labels.join(","), from = t.from.as_str(), to = t.to.as_str(), value = ?t.value, stale = t.stale, "alert state changed");
            } else {
                tracing::info!(rule = %t.rule, labels = %labels.join(","), from = t.from.as_str(), to = t.to.as_str(), value = ?t.value, stale = t.stale, "alert state changed");
            }
        }
        for ((rule, from, to, stale), count) in counted {
            if to == AlertState::Firing || stale {
                tracing::warn!(rule, from = from.as_str(), to = to.as_str(), stale, count, "alert state changed for more instances, not logged one by one (GET /api/v1/alerts lists them)");
            } else {
                tracing::info!(rule, from = from.as_str(), to = to.as_str(), stale, count, "alert state changed for more instances, not logged one by one (GET /api/v1/alerts lists them)");
            }
        }
        {
            let mut rs = self.rule_status.write().unwrap_or_else(|p| p.into_inner());
            rs.retain(|k, _| k.0 != file);
            for s in statuses {
                rs.insert((s.file.clone(), s.name.clone()), s);
            }
        }
        {
            let mut ss = self.slo_status.write().unwrap_or_else(|p| p.into_inner());
            let names: BTreeSet<&str> = set.slos.iter().map(|s| s.name.as_str()).collect();
            ss.retain(|name, _| names.contains(name.as_str()));
            for s in slo_statuses {
                ss.insert(s.name.clone(), s);
            }
        }
        // The dataset goes, and the label sets only it held with it (store::label_sets).
        drop(data);
        store.release_label_sets();
        self.evaluated.send_modify(|n| *n = n.wrapping_add(1));
        let took = started.elapsed();
        self.eval_duration.get_or_create(&vec![("group", file.display().to_string())]).observe(took.as_secs_f64());
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let g = groups.entry(file.to_path_buf()).or_default();
        g.evaluations += 1;
        g.last_duration = took;
    }

    /// Verdicts of the burn alerts whose firing changed since the previous evaluation.
    fn burn_verdicts(&self, slos: &[crate::rules::slo::SloSpec], statuses: &[SloStatus], data: &Dataset, now: SystemTime) -> Vec<Verdict> {
        let mut before = self.burn_firing.lock().unwrap_or_else(|p| p.into_inner());
        verdict::burn_verdicts(slos, statuses, &mut before, data, now)
    }

    pub fn rule_statuses(&self) -> Vec<RuleStatus> {
        let set = self.set();
        // A set lookup, not a scan of the rules per status: with 16,000 rules the scan
        // was 256 million comparisons per scrape.
        let current: BTreeSet<(&Path, &str)> = set.alerts.iter().map(|r| (r.file.as_path(), r.name.as_str())).collect();
        let rs = self.rule_status.read().unwrap_or_else(|p| p.into_inner());
        rs.values().filter(|s| current.contains(&(s.file.as_path(), s.name.as_str()))).cloned().collect()
    }

    pub fn slo_statuses(&self) -> Vec<SloStatus> {
        self.slo_status.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Runs the group loops, the reload watcher and the persister until `cancel`. The
    /// SLO state is restored before (see [`Rules::restore_async`]), not here, so a
    /// restart of this task after a panic never rolls budgets back to the file.
    pub async fn run(self: Arc<Self>, store: Arc<Store>, supervisor: Supervisor, cancel: CancellationToken) {
        self.spawn_groups(&store, &supervisor, &cancel);
        let mut fingerprint = self.fingerprint().await;
        let mut hup = hangup();
        let mut poll = tokio::time::interval(Duration::from_secs(2));
        let mut persist = tokio::time::interval(state::SNAPSHOT_INTERVAL);
        persist.reset();
        loop {
            let reload = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = poll.tick() => {
                    let now = self.fingerprint().await;
                    let changed = now != fingerprint;
                    fingerprint = now;
                    changed
                }
                _ = recv(&mut hup) => {
                    tracing::info!("SIGHUP received, reloading rules");
                    true
                }
                _ = persist.tick() => {
                    self.persist_async("periodic").await;
                    false
                }
            };
            if reload && !self.config.paths.is_empty() {
                let rules = self.clone();
                if joined(tokio::task::spawn_blocking(move || rules.reload().is_ok()).await) == Some(true) {
                    self.spawn_groups(&store, &supervisor, &cancel);
                }
            }
        }
        self.persist_async("shutdown").await;
    }

    /// The rule files' fingerprint, read on the blocking pool.
    async fn fingerprint(&self) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
        let paths = self.config.paths.clone();
        joined(tokio::task::spawn_blocking(move || files_fingerprint(&paths)).await).unwrap_or_default()
    }

    /// (Re)starts one supervised loop per rule file of the current set; the loops of the
    /// previous set stop.
    fn spawn_groups(self: &Arc<Self>, store: &Arc<Store>, supervisor: &Supervisor, cancel: &CancellationToken) {
        let token = cancel.child_token();
        let old = std::mem::replace(&mut *self.generation.lock().unwrap_or_else(|p| p.into_inner()), token.clone());
        old.cancel();
        let set = self.set();
        store.keep_history("rules", history_windows(&set));
        let files: BTreeSet<PathBuf> = set.alerts.iter().map(|r| r.file.clone()).chain(set.slos.iter().map(|s| s.file.clone())).collect();
        for file in files {
            let (rules, store, t) = (self.clone(), store.clone(), token.clone());
            let id = format!("rule_group {}", file.display());
            supervisor.spawn("rule_group", id, token.clone(), move || {
                Some(rules.clone().group_loop(file.clone(), store.clone(), t.clone()))
            });
        }
    }

    async fn group_loop(self: Arc<Self>, file: PathBuf, store: Arc<Store>, cancel: CancellationToken) {
        let interval = self.config.evaluation_interval;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut expected = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let now = Instant::now();
            let missed = now.saturating_duration_since(expected).as_nanos() / interval.as_nanos().max(1);
            if missed > 0 {
                let mut g = self.groups.lock().unwrap_or_else(|p| p.into_inner());
                g.entry(file.clone()).or_default().missed_ticks += missed as u64;
                tracing::warn!(group = %file.display(), missed = missed as u64, "rule evaluation missed ticks");
            }
            expected = now + interval;
            // At most EVALUATIONS_AT_ONCE files copy and evaluate at once.
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = self.evaluations.acquire() => p,
            };
            let Ok(_permit) = permit else { break };
            // After a Kafka cycle that is storing, not beside it (see store::turns):
            // the evaluation then reads that sample, and their peaks do not add up.
            let waiting = Instant::now();
            let _turn = tokio::select! {
                _ = cancel.cancelled() => break,
                t = store.turns().evaluation(interval / 4) => t,
            };
            self.groups.lock().unwrap_or_else(|p| p.into_inner()).entry(file.clone()).or_default().turn_wait += waiting.elapsed();
            let (rules, f, s) = (self.clone(), file.clone(), store.clone());
            // The evaluation is CPU work: off the async threads, and a panic in it is a
            // counted failure of this group, not the end of the agent.
            let result = tokio::task::spawn_blocking(move || {
                rules.eval_group(&f, &s, SystemTime::now());
                // The file's dataset and scratch are freed: give them back.
                crate::heap::trim();
            })
            .await;
            if let Err(e) = result {
                self.groups.lock().unwrap_or_else(|p| p.into_inner()).entry(file.clone()).or_default().failures += 1;
                if e.is_panic() {
                    // The supervisor logs it, counts it, fails /readyz and restarts the
                    // group after a backoff.
                    std::panic::resume_unwind(e.into_panic());
                }
                tracing::error!(group = %file.display(), error = %e, "rule evaluation failed");
            }
        }
    }
}

/// Every value the rules read: alert conditions and SLO indicators.
fn read_values(set: &RuleSet) -> Vec<&crate::rules::expr::ValueExpr> {
    let mut out = Vec::new();
    for r in &set.alerts {
        out.extend(r.condition.values().into_iter().map(|(v, _, _)| v));
    }
    for rb in set.runbook_specs.values() {
        for c in rb.conditions() {
            out.extend(c.values().into_iter().map(|(v, _, _)| v));
        }
    }
    for s in &set.slos {
        match &s.sli {
            crate::rules::slo::Sli::TimeSlice { cond, .. } => out.extend(cond.values().into_iter().map(|(v, _, _)| v)),
            crate::rules::slo::Sli::Ratio { bad, total, .. } => out.extend([bad, total]),
        }
    }
    out
}

/// What the rules read over a window, per signal: the window and the series the
/// selector picks. The store keeps history for those series only
/// ([`Store::keep_history`]); a selector read without a window needs none.
pub fn history_windows(set: &RuleSet) -> BTreeMap<String, Vec<HistoryNeed>> {
    let mut needs: BTreeMap<String, Vec<HistoryNeed>> = BTreeMap::new();
    for v in read_values(set) {
        let Some(window) = v.window.filter(|w| !w.is_zero()) else { continue };
        let matchers = v.selector.matchers.clone();
        let need = if matchers.is_empty() {
            HistoryNeed::all(window)
        } else {
            HistoryNeed::only(window, move |series| matchers.iter().all(|m| m.matches_value(series.label(&m.label).unwrap_or(""))))
        };
        needs.entry(v.selector.signal.clone()).or_default().push(need);
    }
    needs
}

/// Builds the evaluator's view of the store: every series of every signal the rules
/// name, with its quality and the history the longest window needs. Every series of
/// those signals, whatever the selectors' matchers (replay reads it whole; the executor
/// takes only a target's part, [`target_dataset`]).
pub fn dataset(store: &Store, set: &RuleSet, now: SystemTime) -> Dataset {
    dataset_of(store, &read_values(set), false, None, now)
}

/// [`dataset`] cut to the series that carry every label of `target` with its value: all
/// the `fresh_data` guard looks at. One target's series, not a copy of every series of
/// every signal the rules read (a million at 20,000 groups) per remediation decision.
pub fn target_dataset(store: &Store, set: &RuleSet, target: &crate::signal::Labels, now: SystemTime) -> Dataset {
    dataset_of(store, &read_values(set), false, Some(target), now)
}

/// The series `conds` read (as [`dataset_for`]): enough to evaluate them.
pub fn conds_dataset<'c>(store: &Store, conds: impl IntoIterator<Item = &'c crate::rules::expr::Cond>, now: SystemTime) -> Dataset {
    let values: Vec<_> = conds.into_iter().flat_map(|c| c.values().into_iter().map(|(v, _, _)| v)).collect();
    dataset_for(store, &values, now)
}

/// What one rule file reads: its alerts' conditions and its SLOs' indicators (the
/// runbooks' preconditions are read by the executor, with [`dataset`]).
fn file_values<'a>(alerts: &'a [file::AlertRule], slos: &'a [SloSpec]) -> Vec<&'a crate::rules::expr::ValueExpr> {
    let mut out = Vec::new();
    for r in alerts {
        out.extend(r.condition.values().into_iter().map(|(v, _, _)| v));
    }
    for s in slos {
        match &s.sli {
            crate::rules::slo::Sli::TimeSlice { cond, .. } => out.extend(cond.values().into_iter().map(|(v, _, _)| v)),
            crate::rules::slo::Sli::Ratio { bad, total, .. } => out.extend([bad, total]),
        }
    }
    out
}

/// [`dataset`] for the series `values` select: per signal, the series some selector's
/// matchers pick (a selector without matchers picks all), over the longest window any
/// of them reads. Each selector applies its own matchers again when evaluated, so this
/// only leaves out series no selector could use: at 20,000 groups a rule about one
/// group no longer copies the labels of a million series.
pub fn dataset_for(store: &Store, values: &[&crate::rules::expr::ValueExpr], now: SystemTime) -> Dataset {
    dataset_of(store, values, true, None, now)
}

/// The series of the signals `values` read; with `by_matchers`, only those some
/// selector's matchers pick; with a `target`, only those carrying its labels.
fn dataset_of(store: &Store, values: &[&crate::rules::expr::ValueExpr], by_matchers: bool, target: Option<&crate::signal::Labels>, now: SystemTime) -> Dataset {
    type Matchers<'v> = Option<Vec<&'v [crate::rules::expr::Matcher]>>;
    // Signal -> (longest window, matcher sets; None: every series).
    let mut wanted: HashMap<&str, (Duration, Matchers<'_>), foldhash::fast::RandomState> = HashMap::default();
    for v in values {
        let w = wanted.entry(v.selector.signal.as_str()).or_insert((Duration::ZERO, Some(Vec::new())));
        w.0 = w.0.max(v.window.unwrap_or_default());
        match (&mut w.1, !by_matchers || v.selector.matchers.is_empty()) {
            (Some(sets), false) => sets.push(&v.selector.matchers),
            (sets, _) => *sets = None,
        }
    }
    let picks = |series: &crate::store::SeriesRef<'_>, sets: &Matchers<'_>| match sets {
        None => true,
        Some(sets) => sets.iter().any(|ms| ms.iter().all(|m| m.matches_value(series.label(&m.label).unwrap_or("")))),
    };
    let mut data = Dataset::default();
    store.with_entries(|entries| {
        for e in entries {
            // Every source, with or without wanted series: an alert whose series vanished
            // is resolved only if the source it came from is known to be fresh.
            let source_name = format!("{}/{}", e.health.kind.as_str(), e.health.name);
            let source_fresh = e.health.quality(now) == Quality::Fresh;
            let source = data.add_source(&source_name, source_fresh);
            // The wanted signals as this source's ids: each series is then told apart by
            // one integer compare, not by hashing its signal's name (a file reads a few
            // signals of millions of series), and a source with none of them is skipped.
            let ids: Vec<(u32, &(Duration, Matchers<'_>))> = wanted.iter().filter_map(|(signal, w)| Some((e.symbol(signal)?, w))).collect();
            if ids.is_empty() {
                continue;
            }
            // A signal read whole is copied whole: its list is sized once, not doubled
            // (at 20,000 groups a signal is 400,000 series).
            if target.is_none() {
                for (signal, w) in &wanted {
                    if let (Some(id), None) = (e.symbol(signal), &w.1) {
                        data.by_signal.entry(signal.to_string()).or_default().reserve(e.signal_bound(id));
                    }
                }
            }
            // The source's time column, copied once if a series is read over a window.
            let mut column = None;
            // One label set per distinct labels of this source, shared by its signals'
            // series (a partition's committed offset and lag are read together), by the
            // other files' datasets and by the alert instances that hold it.
            e.with_label_sets(|held| for series in e.iter() {
                let Some((_, (window, sets))) = ids.iter().find(|(id, _)| *id == series.signal_id()) else { continue };
                if !picks(&series, sets) || target.is_some_and(|t| t.iter().any(|(k, v)| series.label(k) != Some(v.as_str()))) {
                    continue;
                }
                let since = now.checked_sub(*window).unwrap_or(SystemTime::UNIX_EPOCH);
                let points: Points = if window.is_zero() {
                    series.last().into()
                } else {
                    let column = column.get_or_insert_with(|| e.time_column());
                    match series.packed_since(since, column) {
                        Some(packed) => Points::Packed(Arc::new(packed)),
                        None => series.since_vec(since).into(),
                    }
                };
                // As Entry::series_quality, without looking the series up again.
                let fresh = source_fresh && series.last().is_some_and(|(t, _)| Some(t) == e.health.last_success);
                let sd = SeriesData { labels: held.get(&series), fresh, points, source: Some(source) };
                match data.by_signal.get_mut(series.signal()) {
                    Some(v) => v.push(sd),
                    None => {
                        data.by_signal.insert(series.signal().to_string(), vec![sd]);
                    }
                }
            });
        }
    });
    data
}

/// A series read over a window is held packed in a file's dataset (see [`Points`]).
impl crate::rules::expr::PackedPoints for crate::store::Packed {
    fn unpack(&self) -> Vec<(SystemTime, f64)> {
        crate::store::Packed::unpack(self)
    }

    fn last(&self) -> Option<(SystemTime, f64)> {
        crate::store::Packed::last(self)
    }
}

/// At most this many state changes of one rule are logged one by one per evaluation; the
/// rest are counted, one line per change. A mass incident (every partition of 20,000
/// groups) is 200,000 changes at once: one log line each was 50 MB of log per wave, the
/// same as nothing to a reader. The API and `streamguard_alerts` list every instance.
const LOGGED_TRANSITIONS_PER_RULE: usize = 20;

/// Key of the counted state changes: rule, from, to, stale.
type TransitionKind<'t> = (&'t str, AlertState, AlertState, bool);

/// The transitions to log one by one (the first `per_rule` of each rule, in order) and
/// how many of the others there are per rule and change. Pure.
fn transition_log(transitions: &[Transition], per_rule: usize) -> (Vec<&Transition>, BTreeMap<TransitionKind<'_>, usize>) {
    let mut logged: HashMap<&str, usize> = HashMap::new();
    let (mut one_by_one, mut counted) = (Vec::new(), BTreeMap::new());
    for t in transitions {
        let n = logged.entry(&*t.rule).or_default();
        if *n < per_rule {
            *n += 1;
            one_by_one.push(t);
        } else {
            *counted.entry((&*t.rule, t.from, t.to, t.stale)).or_default() += 1;
        }
    }
    (one_by_one, counted)
}

/// The value of a job on the blocking pool. A panic in it continues in the caller (so
/// the task's supervisor sees it); a cancelled job (the runtime is shutting down) is
/// `None`.
fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// The bucket each SLO's events have at `now` (what this evaluation may have changed),
/// as absolute values. Pure.
fn journal_entries(slos: &[SloSpec], events: &HashMap<String, Events>, now: SystemTime) -> Vec<JournalEntry> {
    let t = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    slos.iter()
        .filter_map(|spec| {
            let e = events.get(&spec.name)?;
            let w = e.width.max(1);
            let bucket = t / w * w;
            let (good, total) = *e.buckets.get(&bucket)?;
            Some(JournalEntry { slo: spec.name.clone(), width: w, bucket, good, total })
        })
        .collect()
}

fn files_fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    file::rule_files(paths)
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let md = std::fs::metadata(&f).ok();
            let (m, l) = (md.as_ref().and_then(|m| m.modified().ok()), md.map_or(0, |m| m.len()));
            (f, m, l)
        })
        .collect()
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn recv(h: &mut Hangup) {
    #[cfg(unix)]
    if let Some(s) = h {
        s.recv().await;
        return;
    }
    let _ = h;
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::task::TaskTracker;

    const RULES: &str = r#"apiVersion: streamguard/v1
kind: SLO
metadata: { name: fresh }
spec:
  objective: 99%
  window: 1h
  indicator:
    timeslice:
      condition: max(lag_seconds) < 30s
  alerting:
    burn_rates:
      - { severity: page, factor: 2, long: 20s, short: 5s }
---
apiVersion: streamguard/v1
kind: Alert
metadata: { name: lag-high }
spec:
  condition: max(lag_seconds) > 30s
"#;

    fn rules_in(dir: &Path, files: &[&str]) -> Arc<Rules> {
        let mut paths = Vec::new();
        for f in files {
            let p = dir.join(f);
            std::fs::write(&p, RULES.replace("name: fresh", &format!("name: fresh-{f}")).replace("lag-high", &format!("lag-high-{f}")))
                .unwrap();
            paths.push(p);
        }
        let config = RulesConfig {
            paths,
            evaluation_interval: Duration::from_millis(50),
            state_file: dir.join("state.json"),
            ..RulesConfig::for_tests()
        };
        Arc::new(Rules::load(config, file::SignalNames::builtin()).unwrap())
    }

    fn supervisor(tracker: &TaskTracker, rules: &Arc<Rules>) -> Supervisor {
        let metrics = Arc::new(crate::telemetry::metrics::Metrics::new(Arc::new(Store::default()), rules.clone()));
        Supervisor::new(tracker.clone(), metrics, crate::supervise::Policy::default())
    }

    #[tokio::test]
    async fn rule_group_loops_run_inside_the_agents_task_tracker_so_shutdown_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rules_in(dir.path(), &["a.yaml", "b.yaml"]);
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let sup = supervisor(&tracker, &rules);
        tracker.spawn(rules.clone().run(Arc::new(Store::default()), sup, cancel.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while rules.groups.lock().unwrap().values().filter(|g| g.evaluations > 0).count() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "groups not evaluated");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The reload watcher, and per group file a supervisor and its loop.
        assert_eq!(tracker.len(), 1 + 2 * 2, "group loops are tracked");
        cancel.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.expect("every loop stops");
        let after: Vec<u64> = rules.groups.lock().unwrap().values().map(|g| g.evaluations).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let later: Vec<u64> = rules.groups.lock().unwrap().values().map(|g| g.evaluations).collect();
        assert_eq!(after, later, "no evaluation after shutdown returned");
    }

    /// While a Kafka cycle holds its turn (it is storing), a file's evaluation waits for
    /// it, a quarter of the evaluation interval at most, then goes ahead beside it; the
    /// wait is counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_evaluation_waits_for_a_storing_kafka_cycle_a_bounded_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, RULES).unwrap();
        let config = RulesConfig { paths: vec![path], evaluation_interval: Duration::from_secs(4), state_file: dir.path().join("state.json"), ..RulesConfig::for_tests() };
        let rules = Arc::new(Rules::load(config, file::SignalNames::builtin()).unwrap());
        let store = Arc::new(Store::default());
        let turn = store.turns().sample(Duration::from_secs(1)).await;
        assert!(turn.is_some());
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let sup = supervisor(&tracker, &rules);
        let started = tokio::time::Instant::now();
        tracker.spawn(rules.clone().run(store.clone(), sup, cancel.clone()));
        let evaluations = || rules.groups.lock().unwrap().values().map(|g| g.evaluations).sum::<u64>();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(evaluations(), 0, "evaluated beside a storing Kafka cycle");
        let deadline = started + Duration::from_secs(30);
        while evaluations() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the evaluation waited for ever");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(started.elapsed() >= Duration::from_secs(1), "went ahead before its quarter interval");
        let waited: Duration = rules.groups.lock().unwrap().values().map(|g| g.turn_wait).sum();
        assert!(waited >= Duration::from_millis(900), "wait not counted: {waited:?}");
        drop(turn);
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    /// Six files on one schedule, each copying 20,000 series: at most two evaluate (and
    /// hold their copy) at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn at_most_two_files_evaluate_at_once() {
        use crate::signal::{Batch, SourceSample};
        let dir = tempfile::tempdir().unwrap();
        let files = ["a.yaml", "b.yaml", "c.yaml", "d.yaml", "e.yaml", "f.yaml"];
        let rules = rules_in(dir.path(), &files);
        let store = Arc::new(Store::default());
        store.register(crate::store::SourceKind::Kafka, "c", Duration::from_secs(3600));
        let mut b = Batch::new();
        for g in 0..20_000 {
            b.push("lag_seconds", &[("cluster", "c"), ("group", &format!("g{g}")), ("method", "probe")], 1.0);
        }
        store.record_success(crate::store::SourceKind::Kafka, "c", SystemTime::now(), SourceSample { batch: b, ..SourceSample::default() });
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let sup = supervisor(&tracker, &rules);
        tracker.spawn(rules.clone().run(store, sup, cancel.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while rules.groups.lock().unwrap().values().filter(|g| g.evaluations >= 3).count() < files.len() {
            assert!(tokio::time::Instant::now() < deadline, "groups not evaluated");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        let most = rules.in_flight.0.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=EVALUATIONS_AT_ONCE).contains(&most), "{most} evaluations at once");
    }

    /// The state file's temp file is a FIFO: opening it for writing blocks until a
    /// reader comes. On the blocking pool that blocks one pool thread; on the (single)
    /// async thread it would freeze the runtime, and the timer below would never fire.
    #[cfg(unix)]
    #[test]
    fn the_slo_state_is_written_off_the_async_threads() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rules_in(dir.path(), &["a.yaml"]);
        rules.eval_group(&dir.path().join("a.yaml"), &Store::default(), SystemTime::now());
        let fifo = dir.path().join("state.json.tmp");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let (done, finished) = std::sync::mpsc::channel();
        let reader = fifo.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let tracker = TaskTracker::new();
                let cancel = CancellationToken::new();
                cancel.cancel();
                let sup = supervisor(&tracker, &rules);
                let run = tokio::spawn(rules.clone().run(Arc::new(Store::default()), sup, cancel));
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert!(!run.is_finished(), "the write waits for the FIFO's reader");
                let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(reader).unwrap()).await.unwrap();
                run.await.unwrap();
                assert!(text.contains("fresh-a.yaml"), "{text}");
            });
            let _ = done.send(());
        });
        match finished.recv_timeout(Duration::from_secs(10)) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the runtime thread failed (see its panic above)"),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Unblock the writer so the process can end, then fail.
                let _ = std::fs::read_to_string(&fifo);
                panic!("the async runtime froze while the state file was written");
            }
        }
    }

    #[test]
    fn a_file_evaluates_over_only_the_series_its_own_selectors_pick() {
        use crate::signal::{Batch, SourceSample};
        use crate::store::SourceKind;
        let dir = tempfile::tempdir().unwrap();
        let one = "apiVersion: streamguard/v1\nkind: Alert\nmetadata: { name: one }\nspec:\n  condition: lag_seconds{group=\"g1\", method=\"probe\"} > 30s\n";
        let other = "apiVersion: streamguard/v1\nkind: Alert\nmetadata: { name: other }\nspec:\n  condition: max by (cluster, group) (lost_records) > 0\n";
        std::fs::write(dir.path().join("one.yaml"), one).unwrap();
        std::fs::write(dir.path().join("other.yaml"), other).unwrap();
        let config = RulesConfig { paths: vec![dir.path().join("one.yaml"), dir.path().join("other.yaml")], state_file: dir.path().join("s.json"), ..RulesConfig::for_tests() };
        let rules = Rules::load(config, file::SignalNames::builtin()).unwrap();
        let store = Store::default();
        store.register(SourceKind::Kafka, "c", Duration::from_secs(3600));
        let mut b = Batch::new();
        for g in 0..50 {
            let group = format!("g{g}");
            for method in ["probe", "interpolation"] {
                b.push("lag_seconds", &[("cluster", "c"), ("group", &group), ("topic", "t"), ("partition", "0"), ("method", method)], 40.0);
            }
            b.push("lost_records", &[("cluster", "c"), ("group", &group), ("topic", "t"), ("partition", "0")], 0.0);
        }
        let now = SystemTime::now();
        store.record_success(SourceKind::Kafka, "c", now, SourceSample { batch: b, ..SourceSample::default() });
        let set = rules.set();
        let of = |name: &str| {
            let alerts: Vec<_> = set.alerts.iter().filter(|r| r.file.ends_with(name)).cloned().collect();
            let data = dataset_for(&store, &file_values(&alerts, &[]), now);
            data.by_signal.iter().map(|(k, v)| (k.clone(), v.len())).collect::<BTreeMap<_, _>>()
        };
        assert_eq!(of("one.yaml"), BTreeMap::from([("lag_seconds".to_string(), 1)]), "one group, one method, not the other file's signal");
        assert_eq!(of("other.yaml"), BTreeMap::from([("lost_records".to_string(), 50)]));
        let all = dataset(&store, &set, now);
        assert_eq!(all.by_signal.get("lag_seconds").map(Vec::len), Some(100), "the whole set (the executor's guards): every series of the signals");
        assert_eq!(all.by_signal["lag_seconds"].capacity(), 100, "a signal read whole is sized once, not grown by doubling");
        // Its label strings are the store's own: a reference count each, never a copy
        // (at 20,000 groups the copies were a third of the agent's peak heap).
        let stored: Vec<Arc<str>> = store.with_entries(|es| es.flat_map(|e| e.symbols().0.map(|(_, s)| s.clone()).collect::<Vec<_>>()).collect());
        let of_store = |s: &Arc<str>| stored.iter().any(|t| Arc::ptr_eq(s, t));
        for sd in all.by_signal.values().flatten() {
            for name in sd.labels.keys() {
                let (n, v) = sd.labels.get_shared(name).unwrap();
                assert!(of_store(n) && of_store(v), "{name} of {:?} is a copy", sd.labels);
            }
        }
        // Datasets read at once (files evaluating together) hold one label set per
        // series between them, not one each.
        let again = dataset(&store, &set, now);
        for (signal, series) in &all.by_signal {
            assert_eq!(series.len(), again.by_signal[signal].len());
            for (a, b) in series.iter().zip(&again.by_signal[signal]) {
                assert!(crate::signal::SharedLabels::ptr_eq(&a.labels, &b.labels), "{signal} {:?}: a set per dataset", a.labels);
            }
        }
        drop((all, again));
        // And the rule still fires on it.
        rules.eval_group(&dir.path().join("one.yaml"), &store, now);
        rules.eval_group(&dir.path().join("one.yaml"), &store, now + Duration::from_secs(1));
        let firing = rules.engine.lock().unwrap().all_instances().filter(|(_, _, i)| i.state == AlertState::Firing).count();
        assert_eq!(firing, 1);
        // Once evaluated, the store keeps only the sets someone holds: the firing
        // instance's, not the other file's 50 quiet series'.
        rules.eval_group(&dir.path().join("other.yaml"), &store, now);
        assert_eq!(store.held_label_sets(), 1);
        // The next evaluation's dataset takes the set the firing instance holds.
        let data = dataset(&store, &set, now + Duration::from_secs(2));
        let engine = rules.engine.lock().unwrap();
        let (_, held, _) = engine.all_instances().find(|(_, _, i)| i.state == AlertState::Firing).unwrap();
        assert!(data.by_signal["lag_seconds"].iter().any(|sd| crate::signal::SharedLabels::ptr_eq(&sd.labels, held)), "{held:?}");
    }

    #[test]
    fn a_mass_incident_logs_a_few_changes_per_rule_and_counts_the_rest() {
        use AlertState::{Firing, Inactive, Pending};
        let change = |rule: &str, i: usize, to: AlertState| Transition {
            file: std::path::Path::new("f.yaml").into(),
            rule: rule.into(),
            labels: crate::signal::Labels::from([("p".to_string(), i.to_string())]).into(),
            from: Inactive,
            to,
            value: None,
            stale: false,
        };
        let mut all: Vec<_> = (0..1000).map(|i| change("a", i, if i % 2 == 0 { Pending } else { Firing })).collect();
        all.extend((0..5).map(|i| change("b", i, Pending)));
        let (one_by_one, counted) = transition_log(&all, 20);
        assert_eq!(one_by_one.iter().map(|t| (&*t.rule, t.labels.get("p").unwrap())).filter(|(r, _)| *r == "a").count(), 20);
        assert_eq!(one_by_one.iter().filter(|t| &*t.rule == "b").count(), 5, "a rule with few changes logs them all");
        assert_eq!(one_by_one[0].labels.get("p"), Some("0"), "the first ones, in order");
        assert_eq!(counted, BTreeMap::from([(("a", Inactive, Pending, false), 490), (("a", Inactive, Firing, false), 490)]));
    }

    #[test]
    fn the_state_file_is_replaced_whole_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rules_in(dir.path(), &["a.yaml"]);
        std::fs::write(dir.path().join("state.json"), "old").unwrap();
        rules.eval_group(&dir.path().join("a.yaml"), &Store::default(), SystemTime::now());
        rules.persist().unwrap();
        let text = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
        assert!(text.starts_with("{\"version\":1"), "{text}");
        assert!(!dir.path().join("state.json.tmp").exists());
        assert_eq!(rules.restore().unwrap(), 1);
    }

    #[test]
    fn a_firing_instance_is_exposed_as_a_streamguard_alerts_series_like_prometheus_alerts() {
        use crate::signal::{Observation, SourceSample};
        use crate::store::SourceKind;
        let dir = tempfile::tempdir().unwrap();
        let rules = rules_in(dir.path(), &["a.yaml"]);
        let store = Arc::new(Store::default());
        store.register(SourceKind::Kafka, "local", Duration::from_secs(3600));
        let labels = [("cluster", "local"), ("group", "billing"), ("topic", "t"), ("partition", "0"), ("method", "probe")];
        let sample = SourceSample {
            observations: vec![Observation::new("lag_seconds", &labels, 100.0).unwrap()],
            ..SourceSample::default()
        };
        store.record_success(SourceKind::Kafka, "local", SystemTime::now(), sample);
        let metrics = crate::telemetry::metrics::Metrics::new(store.clone(), rules.clone());
        let scrape = || metrics.encode(crate::telemetry::metrics::Format::Prometheus).unwrap();
        assert!(!scrape().contains("streamguard_alerts{"), "no series before anything fires");
        rules.eval_group(&dir.path().join("a.yaml"), &store, SystemTime::now());
        let text = scrape();
        assert!(text.contains("# TYPE streamguard_alerts gauge"), "{text}");
        assert!(text.contains("streamguard_alerts{alertname=\"lag-high-a.yaml\",alertstate=\"firing\"} 1"), "{text}");
    }

    #[test]
    fn every_alert_transition_is_sent_as_a_verdict_with_its_evidence_and_a_full_queue_drops_and_counts() {
        use crate::signal::{Observation, SourceSample};
        use crate::store::SourceKind;
        let dir = tempfile::tempdir().unwrap();
        let rules = rules_in(dir.path(), &["a.yaml"]);
        let store = Arc::new(Store::default());
        store.register(SourceKind::Kafka, "local", Duration::from_secs(3600));
        let labels = [("cluster", "local"), ("group", "billing"), ("topic", "t"), ("partition", "0"), ("method", "probe")];
        let sample = SourceSample { observations: vec![Observation::new("lag_seconds", &labels, 100.0).unwrap()], ..SourceSample::default() };
        store.record_success(SourceKind::Kafka, "local", SystemTime::now(), sample);
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        rules.set_verdict_sink(tx);
        rules.eval_group(&dir.path().join("a.yaml"), &store, SystemTime::now());
        let v = rx.try_recv().expect("a verdict");
        assert_eq!((v.rule.as_str(), v.to, v.truth), ("lag-high-a.yaml", AlertState::Firing, crate::rules::expr::Truth::True));
        assert!(v.fresh && v.triggers(), "{v:?}");
        assert_eq!(v.evidence[0].signal, "lag_seconds");
        assert_eq!((v.evidence[0].quality, v.evidence[0].value), ("fresh", Some(100.0)));
        // The alert stays firing: no alert verdict. The SLO's time slices are all bad
        // (lag 100 s against < 30 s), so its page burn alert starts firing: one verdict.
        std::thread::sleep(Duration::from_millis(20));
        rules.eval_group(&dir.path().join("a.yaml"), &store, SystemTime::now());
        let burn = rx.try_recv().expect("a burn-alert verdict");
        assert_eq!((burn.kind, burn.rule.as_str(), burn.to), (crate::rules::verdict::VerdictKind::BurnAlert, "fresh-a.yaml", AlertState::Firing), "{burn:?}");
        assert_eq!(burn.labels["severity"], "page");
        assert!(burn.fresh && burn.evidence[0].signal == "lag_seconds", "{burn:?}");
        assert!(rx.try_recv().is_err(), "nothing else changed");
        assert_eq!(rules.verdicts_dropped.get(), 0);
        // The data goes stale: the firing alert keeps firing (no transition); a second
        // rule file firing while nobody reads the queue fills it, then drops and counts.
        let second = rules_in(dir.path(), &["b.yaml"]);
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        second.set_verdict_sink(tx.clone());
        tx.try_send(v).unwrap();
        second.eval_group(&dir.path().join("b.yaml"), &store, SystemTime::now());
        assert_eq!(second.verdicts_dropped.get(), 1);
    }

    #[test]
    fn every_group_evaluation_wakes_subscribers() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rules_in(dir.path(), &["a.yaml"]);
        let rx = rules.subscribe();
        let before = *rx.borrow();
        rules.eval_group(&dir.path().join("a.yaml"), &Store::default(), SystemTime::now());
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow(), before + 1);
    }
}
