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
//! - The state file is written atomically (temp file + rename) and read at start, so a
//!   restart does not reset a 28-day budget.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::RulesConfig;
use crate::rules::eval::{AlertState, Engine, EngineOptions, RuleStatus};
use crate::rules::expr::{Dataset, EvalOptions, SeriesData};
use crate::rules::file::{self, RuleErrors, RuleSet};
use crate::rules::slo::{Events, SloStatus};
use crate::signal::Quality;
use crate::store::Store;

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
    /// Evaluation durations: cumulative counts per [`EVAL_BUCKETS`] bound, sum, count.
    pub bucket_counts: [u64; EVAL_BUCKETS.len()],
    pub duration_sum: f64,
}

/// Upper bounds (seconds) of the evaluation duration histogram.
pub const EVAL_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

impl GroupStats {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        self.last_duration = d;
        self.duration_sum += s;
        for (i, b) in EVAL_BUCKETS.iter().enumerate() {
            if s <= *b {
                self.bucket_counts[i] += 1;
            }
        }
    }
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
    /// Bumped on every successful reload; loops of an older generation stop.
    generation: Mutex<CancellationToken>,
}

/// The state file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    slos: HashMap<String, Events>,
}

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
            config,
            known_signals,
            set: RwLock::new(Arc::new(set)),
            engine: Mutex::new(Engine::default()),
            rule_status: RwLock::default(),
            slo_status: RwLock::default(),
            reload: RwLock::new(ReloadStatus { success: true, last_success: Some(SystemTime::now()), ..ReloadStatus::default() }),
            groups: Mutex::default(),
            generation: Mutex::new(CancellationToken::new()),
        };
        Ok(rules)
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

    /// Restores SLO events from the state file (absent file: nothing to restore).
    pub fn restore(&self) -> Result<usize, StateError> {
        let path = &self.config.state_file;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(StateError::Io { path: path.clone(), source }),
        };
        let state: StateFile = serde_json::from_str(&text).map_err(|source| StateError::Decode { path: path.clone(), source })?;
        let set = self.set();
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for (name, events) in state.slos {
            if set.slos.iter().any(|s| s.name == name) {
                engine.events.insert(name, events);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Writes SLO events atomically (nothing when there are no SLOs).
    pub fn persist(&self) -> Result<(), StateError> {
        if self.set().slos.is_empty() {
            return Ok(());
        }
        let path = &self.config.state_file;
        let state = StateFile { version: 1, slos: self.engine.lock().unwrap_or_else(|p| p.into_inner()).events.clone() };
        let io = |source| StateError::Io { path: path.clone(), source };
        let text = serde_json::to_vec(&state).map_err(|source| StateError::Decode { path: path.clone(), source })?;
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Evaluates one group (file) at `now` against the store.
    pub fn eval_group(&self, file: &Path, store: &Store, now: SystemTime) {
        let started = Instant::now();
        let set = self.set();
        let alerts: Vec<_> = set.alerts.iter().filter(|r| r.file == file).cloned().collect();
        let slos: Vec<_> = set.slos.iter().filter(|s| s.file == file).cloned().collect();
        let data = dataset(store, &set, now);
        let opts = self.options();
        let (transitions, statuses, slo_statuses) = {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            let t = engine.eval_alerts(&alerts, &data, now, &opts);
            let s = engine.rule_statuses(&alerts, now, &opts);
            let slo = engine.eval_slos(&slos, &data, now, &opts);
            (t, s, slo)
        };
        for t in &transitions {
            let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let level_firing = t.to == AlertState::Firing;
            if level_firing || t.stale {
                tracing::warn!(rule = %t.rule, labels = %labels.join(","), from = t.from.as_str(), to = t.to.as_str(), value = ?t.value, stale = t.stale, "alert state changed");
            } else {
                tracing::info!(rule = %t.rule, labels = %labels.join(","), from = t.from.as_str(), to = t.to.as_str(), value = ?t.value, stale = t.stale, "alert state changed");
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
            ss.retain(|name, _| set.slos.iter().any(|s| &s.name == name));
            for s in slo_statuses {
                ss.insert(s.name.clone(), s);
            }
        }
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let g = groups.entry(file.to_path_buf()).or_default();
        g.evaluations += 1;
        g.observe(started.elapsed());
    }

    pub fn rule_statuses(&self) -> Vec<RuleStatus> {
        let set = self.set();
        let rs = self.rule_status.read().unwrap_or_else(|p| p.into_inner());
        rs.values().filter(|s| set.alerts.iter().any(|r| r.file == s.file && r.name == s.name)).cloned().collect()
    }

    pub fn slo_statuses(&self) -> Vec<SloStatus> {
        self.slo_status.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Runs the group loops, the reload watcher and the persister until `cancel`.
    pub async fn run(self: Arc<Self>, store: Arc<Store>, cancel: CancellationToken) {
        if let Err(e) = self.restore() {
            tracing::error!(error = %e, "cannot restore SLO budgets; starting from empty");
        }
        self.spawn_groups(&store, &cancel);
        let mut fingerprint = files_fingerprint(&self.config.paths);
        let mut hup = hangup();
        let mut poll = tokio::time::interval(Duration::from_secs(2));
        let mut persist = tokio::time::interval(Duration::from_secs(30));
        loop {
            let reload = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = poll.tick() => {
                    let now = files_fingerprint(&self.config.paths);
                    let changed = now != fingerprint;
                    fingerprint = now;
                    changed
                }
                _ = recv(&mut hup) => {
                    tracing::info!("SIGHUP received, reloading rules");
                    true
                }
                _ = persist.tick() => {
                    if let Err(e) = self.persist() {
                        tracing::error!(error = %e, "cannot write the SLO state file");
                    }
                    false
                }
            };
            if reload && !self.config.paths.is_empty() && self.reload().is_ok() {
                self.spawn_groups(&store, &cancel);
            }
        }
        if let Err(e) = self.persist() {
            tracing::error!(error = %e, "cannot write the SLO state file at shutdown");
        }
    }

    /// (Re)starts one loop per rule file of the current set.
    fn spawn_groups(self: &Arc<Self>, store: &Arc<Store>, cancel: &CancellationToken) {
        let token = cancel.child_token();
        let old = std::mem::replace(&mut *self.generation.lock().unwrap_or_else(|p| p.into_inner()), token.clone());
        old.cancel();
        let set = self.set();
        let files: BTreeSet<PathBuf> = set.alerts.iter().map(|r| r.file.clone()).chain(set.slos.iter().map(|s| s.file.clone())).collect();
        for file in files {
            let (rules, store, token) = (self.clone(), store.clone(), token.clone());
            tokio::spawn(async move { rules.group_loop(file, store, token).await });
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
            let (rules, f, s) = (self.clone(), file.clone(), store.clone());
            // The evaluation is CPU work: off the async threads, and a panic in it is a
            // counted failure of this group, not the end of the agent.
            let result = tokio::task::spawn_blocking(move || rules.eval_group(&f, &s, SystemTime::now())).await;
            if let Err(e) = result {
                self.groups.lock().unwrap_or_else(|p| p.into_inner()).entry(file.clone()).or_default().failures += 1;
                tracing::error!(group = %file.display(), error = %e, "rule evaluation failed");
            }
        }
    }
}

/// Builds the evaluator's view of the store: every series of every signal the rules
/// name, with its quality and the history the longest window needs.
pub fn dataset(store: &Store, set: &RuleSet, now: SystemTime) -> Dataset {
    let mut wanted: HashMap<String, Duration> = HashMap::new();
    let mut want = |v: &crate::rules::expr::ValueExpr| {
        let w = wanted.entry(v.selector.signal.clone()).or_default();
        *w = (*w).max(v.window.unwrap_or_default());
    };
    for r in &set.alerts {
        r.condition.values().into_iter().for_each(|(v, _, _)| want(v));
    }
    for s in &set.slos {
        match &s.sli {
            crate::rules::slo::Sli::TimeSlice { cond, .. } => cond.values().into_iter().for_each(|(v, _, _)| want(v)),
            crate::rules::slo::Sli::Ratio { bad, total, .. } => {
                want(bad);
                want(total);
            }
        }
    }
    let mut data = Dataset::default();
    store.with_entries(|entries| {
        for e in entries {
            // Every source, with or without wanted series: an alert whose series vanished
            // is resolved only if the source it came from is known to be fresh.
            let source_name = format!("{}/{}", e.health.kind.as_str(), e.health.name);
            let source = data.add_source(&source_name, e.health.quality(now) == Quality::Fresh);
            for (key, series) in &e.series {
                let Some(window) = wanted.get(key.signal.as_str()) else { continue };
                let since = now.checked_sub(*window).unwrap_or(SystemTime::UNIX_EPOCH);
                let points: Vec<_> = if window.is_zero() {
                    series.last().into_iter().collect()
                } else {
                    series.since(since).collect()
                };
                data.by_signal.entry(key.signal.clone()).or_default().push(SeriesData {
                    labels: key.labels.clone(),
                    fresh: e.series_quality(now, key) == Quality::Fresh,
                    points,
                    source: Some(source),
                });
            }
        }
    });
    data
}

/// Modification times and sizes of the rule files: a change means reload.
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
