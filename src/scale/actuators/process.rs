//! The `process` actuator: a supervised pool of local consumer processes, one per
//! replica, started from a command template. This is what the demo and the tests scale.
//!
//! Replica `i` (0-based) runs `command` with `{group}`, `{topic}` and `{index}`
//! substituted in its arguments and `STREAMGUARD_GROUP`, `STREAMGUARD_TOPIC`,
//! `STREAMGUARD_REPLICA_INDEX` (plus the configured `env`) in its environment.
//!
//! # Guarantees
//! - `scale_to(n)` keeps replicas `0..n`: new ones start at once, the highest indexes stop
//!   first (SIGTERM, then SIGKILL after `stop_grace`, so a consumer can leave its group
//!   cleanly and the rebalance is short).
//! - [`ProcessPool::supervise`] (run it as a supervised task) notices every exit within
//!   [`TICK`], restarts the replica after `restart_backoff × 2^(restarts−1)` (capped at
//!   [`MAX_BACKOFF`]) and reports the exit where a user looks: [`ProcessPool::status`]
//!   (for the target's detail) and [`PoolMetrics`] (`streamguard_scale_process_exits_total{target,reason}`,
//!   `streamguard_scale_process_replicas{target,state}`), not only a log line.
//! - Exits kept in the status are bounded ([`MAX_EXITS_KEPT`]); children are
//!   `kill_on_drop`, on cancellation the supervisor stops them all, and on Linux each
//!   child gets SIGTERM from the kernel when the agent dies without cleaning up
//!   (`PR_SET_PDEATHSIG`), so a killed agent leaves no consumer behind.
//!
//! # Assumptions
//! One pool per scaling target, owned by this agent; processes it did not start are not
//! its business.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::{Actuator, ActuatorError, BoxFuture, ScaleOutcome, ScaleRequest};

/// How often the supervisor looks at its children.
pub const TICK: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
pub const MAX_EXITS_KEPT: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessConfig {
    /// Program and arguments.
    pub command: Vec<String>,
    pub group: String,
    pub topic: String,
    pub env: BTreeMap<String, String>,
    pub stop_grace: Duration,
    pub restart_backoff: Duration,
    /// Each replica's stdout and stderr go to `replica-{index}.log` here; else nowhere.
    pub log_dir: Option<PathBuf>,
}

impl ProcessConfig {
    pub fn new(command: Vec<String>, group: &str, topic: &str) -> ProcessConfig {
        ProcessConfig { command, group: group.to_string(), topic: topic.to_string(), env: BTreeMap::new(), stop_grace: Duration::from_secs(10), restart_backoff: Duration::from_secs(1), log_dir: None }
    }
}

/// Why a replica's process ended; a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// Exit code 0 without being asked to stop.
    Clean,
    /// Non-zero exit code.
    Failed,
    /// Killed by a signal it was not sent by the pool.
    Signaled,
    /// Stopped by the pool (scale-down, shutdown).
    Stopped,
    /// Could not be started.
    SpawnError,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Clean => "clean",
            ExitReason::Failed => "failed",
            ExitReason::Signaled => "signaled",
            ExitReason::Stopped => "stopped",
            ExitReason::SpawnError => "spawn_error",
        }
    }
}

/// One ended (or failed to start) replica process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExitRecord {
    pub index: u32,
    pub pid: Option<u32>,
    pub reason: ExitReason,
    /// `exit status: 1`, `signal: 9 (SIGKILL)`, or the spawn error.
    pub detail: String,
    pub at_unix: f64,
    pub uptime_seconds: f64,
}

/// The pool as shown in a target's detail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolStatus {
    pub desired: u32,
    pub running: u32,
    /// Replicas waiting for a restart (after an exit or a spawn error).
    pub restarting: u32,
    pub restarts_total: u64,
    pub pids: Vec<Option<u32>>,
    /// Most recent last.
    pub recent_exits: Vec<ExitRecord>,
}

/// The pool's instruments (register once, in the agent's registry).
#[derive(Debug, Clone, Default)]
pub struct PoolMetrics {
    pub exits: Family<Vec<(&'static str, String)>, Counter>,
    pub replicas: Family<Vec<(&'static str, String)>, Gauge>,
}

impl PoolMetrics {
    /// Registers under the registry's `streamguard` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("scale_process_exits", "Ends of scaled consumer processes, by reason (clean, failed, signaled, stopped, spawn_error)", self.exits.clone());
        registry.register("scale_process_replicas", "Scaled consumer processes: desired, running, restarting", self.replicas.clone());
    }
}

struct Slot {
    child: Option<Child>,
    pid: Option<u32>,
    started: Option<(Instant, SystemTime)>,
    restarts: u32,
    restart_at: Option<Instant>,
}

struct State {
    slots: Vec<Slot>,
    exits: VecDeque<ExitRecord>,
    restarts_total: u64,
}

struct Inner {
    target: String,
    cfg: ProcessConfig,
    state: tokio::sync::Mutex<State>,
    /// The last status, readable without waiting for the async lock.
    snapshot: Mutex<PoolStatus>,
    metrics: PoolMetrics,
}

/// A pool of consumer processes; cheap to clone (shared).
#[derive(Clone)]
pub struct ProcessPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool").field("target", &self.inner.target).finish()
    }
}

fn describe(status: &std::process::ExitStatus) -> (Option<i32>, Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt;
    (status.code(), status.signal(), status.to_string())
}

impl ProcessPool {
    pub fn new(target: &str, cfg: ProcessConfig, metrics: PoolMetrics) -> Result<ProcessPool, ActuatorError> {
        if cfg.command.is_empty() {
            return Err(ActuatorError::Config("command: must name a program".to_string()));
        }
        let empty = PoolStatus { desired: 0, running: 0, restarting: 0, restarts_total: 0, pids: Vec::new(), recent_exits: Vec::new() };
        let inner = Inner { target: target.to_string(), cfg, state: tokio::sync::Mutex::new(State { slots: Vec::new(), exits: VecDeque::new(), restarts_total: 0 }), snapshot: Mutex::new(empty), metrics };
        Ok(ProcessPool { inner: Arc::new(inner) })
    }

    /// The last known status (updated on every change and supervisor tick).
    pub fn status(&self) -> PoolStatus {
        self.inner.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn command_for(&self, index: u32) -> Result<Command, ActuatorError> {
        let cfg = &self.inner.cfg;
        let subst = |s: &str| s.replace("{group}", &cfg.group).replace("{topic}", &cfg.topic).replace("{index}", &index.to_string());
        let mut cmd = Command::new(subst(&cfg.command[0]));
        cmd.args(cfg.command[1..].iter().map(|a| subst(a)))
            .envs(&cfg.env)
            .env("STREAMGUARD_GROUP", &cfg.group)
            .env("STREAMGUARD_TOPIC", &cfg.topic)
            .env("STREAMGUARD_REPLICA_INDEX", index.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // If the agent itself dies (SIGKILL, OOM), `kill_on_drop` never runs: ask the
        // kernel to send the replica SIGTERM when its parent goes, so no consumer is
        // left running (and holding partitions) without a supervisor.
        #[cfg(target_os = "linux")]
        // SAFETY: prctl(2) is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match &cfg.log_dir {
            Some(dir) => {
                let open = || std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("replica-{index}.log")));
                let out = open().map_err(|e| ActuatorError::Spawn { program: cfg.command[0].clone(), message: format!("log file in {}: {e}", dir.display()) })?;
                let err = out.try_clone().map_err(|e| ActuatorError::Spawn { program: cfg.command[0].clone(), message: e.to_string() })?;
                cmd.stdout(out).stderr(err);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        Ok(cmd)
    }

    fn record(&self, st: &mut State, rec: ExitRecord) {
        tracing::warn!(target_name = %self.inner.target, index = rec.index, pid = ?rec.pid, reason = rec.reason.as_str(), detail = %rec.detail, "scaled consumer process ended");
        self.inner.metrics.exits.get_or_create(&vec![("target", self.inner.target.clone()), ("reason", rec.reason.as_str().to_string())]).inc();
        if st.exits.len() >= MAX_EXITS_KEPT {
            st.exits.pop_front();
        }
        st.exits.push_back(rec);
    }

    /// Starts replica `index` in its slot; a failure is recorded and scheduled for retry.
    fn start(&self, st: &mut State, index: usize) -> Result<(), ActuatorError> {
        let spawned = self.command_for(index as u32).and_then(|mut c| c.spawn().map_err(|e| ActuatorError::Spawn { program: self.inner.cfg.command[0].clone(), message: e.to_string() }));
        match spawned {
            Ok(child) => {
                let slot = &mut st.slots[index];
                slot.pid = child.id();
                slot.child = Some(child);
                slot.started = Some((Instant::now(), SystemTime::now()));
                slot.restart_at = None;
                Ok(())
            }
            Err(e) => {
                let backoff = self.backoff(st.slots[index].restarts + 1);
                let slot = &mut st.slots[index];
                slot.restarts += 1;
                slot.restart_at = Some(Instant::now() + backoff);
                let rec = ExitRecord { index: index as u32, pid: None, reason: ExitReason::SpawnError, detail: e.to_string(), at_unix: crate::signal::unix_secs(SystemTime::now()), uptime_seconds: 0.0 };
                self.record(st, rec);
                Err(e)
            }
        }
    }

    fn backoff(&self, restarts: u32) -> Duration {
        self.inner.cfg.restart_backoff.saturating_mul(2u32.saturating_pow(restarts.saturating_sub(1).min(16))).min(MAX_BACKOFF)
    }

    /// Stops the processes of `indexes` together: SIGTERM to all, then each gets until
    /// one shared grace deadline before SIGKILL (so stopping many replicas takes one
    /// grace period, not one per replica). Records the exits in the order given.
    async fn stop(&self, st: &mut State, indexes: &[usize]) {
        let mut stopping = Vec::new();
        for &index in indexes {
            let Some(child) = st.slots[index].child.take() else { continue };
            let pid = child.id();
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) with a pid this pool spawned and has not reaped yet.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            stopping.push((index, pid, child));
        }
        let deadline = tokio::time::Instant::now() + self.inner.cfg.stop_grace;
        for (index, pid, mut child) in stopping {
            let status = match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(s) => s.ok(),
                Err(_) => {
                    child.start_kill().ok();
                    child.wait().await.ok()
                }
            };
            let detail = status.map(|s| describe(&s).2).unwrap_or_else(|| "unknown".to_string());
            let uptime = st.slots[index].started.map(|(i, _)| i.elapsed().as_secs_f64()).unwrap_or(0.0);
            let rec = ExitRecord { index: index as u32, pid, reason: ExitReason::Stopped, detail, at_unix: crate::signal::unix_secs(SystemTime::now()), uptime_seconds: uptime };
            self.record(st, rec);
        }
    }

    /// Reaps exited children and restarts the replicas that are due. Returns after one pass.
    async fn tick(&self) {
        let mut st = self.inner.state.lock().await;
        let now = Instant::now();
        for i in 0..st.slots.len() {
            let exited = match st.slots[i].child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status),
                Some(Ok(None)) | None => None,
                Some(Err(e)) => {
                    tracing::warn!(target_name = %self.inner.target, index = i, error = %e, "cannot poll scaled consumer process");
                    None
                }
            };
            if let Some(status) = exited {
                let (code, signal, detail) = describe(&status);
                let reason = match (code, signal) {
                    (Some(0), _) => ExitReason::Clean,
                    (Some(_), _) => ExitReason::Failed,
                    _ => ExitReason::Signaled,
                };
                let uptime = st.slots[i].started.map(|(s, _)| s.elapsed()).unwrap_or_default();
                // A replica that ran a good while starts its backoff afresh.
                if uptime > MAX_BACKOFF {
                    st.slots[i].restarts = 0;
                }
                st.slots[i].restarts += 1;
                let backoff = self.backoff(st.slots[i].restarts);
                let pid = st.slots[i].pid;
                st.slots[i].child = None;
                st.slots[i].restart_at = Some(now + backoff);
                let rec = ExitRecord { index: i as u32, pid, reason, detail, at_unix: crate::signal::unix_secs(SystemTime::now()), uptime_seconds: uptime.as_secs_f64() };
                self.record(&mut st, rec);
            }
            if st.slots[i].child.is_none() && st.slots[i].restart_at.is_some_and(|t| t <= now) {
                st.restarts_total += 1;
                // A failure is recorded inside and retried later.
                if self.start(&mut st, i).is_ok() {
                    tracing::info!(target_name = %self.inner.target, index = i, "scaled consumer process restarted");
                }
            }
        }
        self.publish(&st);
    }

    fn publish(&self, st: &State) {
        let running = st.slots.iter().filter(|s| s.child.is_some()).count() as u32;
        let status = PoolStatus {
            desired: st.slots.len() as u32,
            running,
            restarting: st.slots.len() as u32 - running,
            restarts_total: st.restarts_total,
            pids: st.slots.iter().map(|s| s.child.as_ref().and(s.pid)).collect(),
            recent_exits: st.exits.iter().cloned().collect(),
        };
        for (state, v) in [("desired", status.desired), ("running", status.running), ("restarting", status.restarting)] {
            self.inner.metrics.replicas.get_or_create(&vec![("target", self.inner.target.clone()), ("state", state.to_string())]).set(i64::from(v));
        }
        *self.inner.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// Watches the children until `cancel`, then stops them all. Run it once per pool.
    pub async fn supervise(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(TICK) => self.tick().await,
            }
        }
        let mut st = self.inner.state.lock().await;
        let all: Vec<usize> = (0..st.slots.len()).rev().collect();
        self.stop(&mut st, &all).await;
        st.slots.clear();
        self.publish(&st);
    }

    async fn set(&self, n: u32, dry_run: bool) -> Result<ScaleOutcome, ActuatorError> {
        let mut st = self.inner.state.lock().await;
        let from = st.slots.len() as u32;
        if n == from || dry_run {
            return Ok(if n == from { ScaleOutcome::Unchanged { replicas: n } } else { ScaleOutcome::Scaled { from: Some(from), to: n } });
        }
        let mut first_error = None;
        while (st.slots.len() as u32) < n {
            st.slots.push(Slot { child: None, pid: None, started: None, restarts: 0, restart_at: None });
            let i = st.slots.len() - 1;
            if let Err(e) = self.start(&mut st, i) {
                first_error.get_or_insert(e);
            }
        }
        if (st.slots.len() as u32) > n {
            let extra: Vec<usize> = (n as usize..st.slots.len()).rev().collect();
            self.stop(&mut st, &extra).await;
            st.slots.truncate(n as usize);
        }
        self.publish(&st);
        match first_error {
            // The count is set (the supervisor keeps retrying), but the caller must know.
            Some(e) => Err(e),
            None => Ok(ScaleOutcome::Scaled { from: Some(from), to: n }),
        }
    }
}

impl Actuator for ProcessPool {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn current(&self) -> BoxFuture<'_, Result<Option<u32>, ActuatorError>> {
        Box::pin(async move { Ok(Some(self.inner.state.lock().await.slots.len() as u32)) })
    }

    fn scale_to<'a>(&'a self, req: &'a ScaleRequest) -> BoxFuture<'a, Result<ScaleOutcome, ActuatorError>> {
        Box::pin(self.set(req.to, req.dry_run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(to: u32) -> ScaleRequest {
        ScaleRequest { target: "t".into(), from: None, to, policy: "manual".into(), why: String::new(), dry_run: false }
    }

    async fn wait_for(pool: &ProcessPool, what: &str, f: impl Fn(&PoolStatus) -> bool) -> PoolStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = pool.status();
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_pool_starts_stops_and_restarts_real_processes_and_reports_their_exits() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ProcessConfig::new(vec!["sh".into(), "-c".into(), "echo \"$STREAMGUARD_GROUP $STREAMGUARD_TOPIC {index}\" > \"$OUT/r$STREAMGUARD_REPLICA_INDEX\"; exec sleep 60".into()], "g1", "t1");
        cfg.env.insert("OUT".into(), dir.path().display().to_string());
        cfg.stop_grace = Duration::from_secs(5);
        cfg.restart_backoff = Duration::from_millis(100);
        let metrics = PoolMetrics::default();
        let pool = ProcessPool::new("orders", cfg, metrics.clone()).unwrap();
        let cancel = CancellationToken::new();
        let sup = tokio::spawn(pool.clone().supervise(cancel.clone()));

        assert_eq!(pool.scale_to(&req(3)).await.unwrap(), ScaleOutcome::Scaled { from: Some(0), to: 3 });
        assert_eq!(pool.scale_to(&req(3)).await.unwrap(), ScaleOutcome::Unchanged { replicas: 3 });
        let s = wait_for(&pool, "3 running", |s| s.running == 3).await;
        for i in 0..3 {
            // The replica creates the file, then writes it: wait for the whole line.
            let (p, want) = (dir.path().join(format!("r{i}")), format!("g1 t1 {i}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            let read = || std::fs::read_to_string(&p).unwrap_or_default();
            while read().trim() != want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(read().trim(), want);
        }

        // Kill replica 1 from outside: the exit is reported and the replica restarted.
        let victim = s.pids[1].unwrap() as i32;
        unsafe {
            libc::kill(victim, libc::SIGKILL);
        }
        let s = wait_for(&pool, "the kill reported and replica 1 restarted", |s| s.recent_exits.iter().any(|e| e.reason == ExitReason::Signaled) && s.running == 3 && s.restarts_total == 1).await;
        let exit = s.recent_exits.iter().find(|e| e.reason == ExitReason::Signaled).unwrap();
        assert_eq!((exit.index, exit.pid), (1, Some(victim as u32)));
        assert!(exit.detail.contains("signal: 9"), "{exit:?}");
        assert_ne!(s.pids[1], Some(victim as u32));
        assert_eq!(metrics.exits.get_or_create(&vec![("target", "orders".into()), ("reason", "signaled".into())]).get(), 1);

        // Scale down stops the highest index with SIGTERM.
        assert_eq!(pool.scale_to(&req(1)).await.unwrap(), ScaleOutcome::Scaled { from: Some(3), to: 1 });
        let s = pool.status();
        assert_eq!((s.desired, s.running), (1, 1));
        let stopped: Vec<u32> = s.recent_exits.iter().filter(|e| e.reason == ExitReason::Stopped).map(|e| e.index).collect();
        assert_eq!(stopped, vec![2, 1]);
        assert_eq!(metrics.replicas.get_or_create(&vec![("target", "orders".into()), ("state", "running".into())]).get(), 1);

        cancel.cancel();
        sup.await.unwrap();
        assert_eq!(pool.status().running, 0);
    }

    #[tokio::test]
    async fn a_failing_command_is_reported_and_retried_with_backoff() {
        let mut cfg = ProcessConfig::new(vec!["sh".into(), "-c".into(), "exit 7".into()], "g", "t");
        cfg.restart_backoff = Duration::from_millis(50);
        let pool = ProcessPool::new("bad", cfg, PoolMetrics::default()).unwrap();
        let cancel = CancellationToken::new();
        let sup = tokio::spawn(pool.clone().supervise(cancel.clone()));
        pool.scale_to(&req(1)).await.unwrap();
        let s = wait_for(&pool, "two failures", |s| s.recent_exits.iter().filter(|e| e.reason == ExitReason::Failed).count() >= 2).await;
        assert!(s.recent_exits[0].detail.contains("exit status: 7"), "{s:?}");
        cancel.cancel();
        sup.await.unwrap();

        let missing = ProcessPool::new("missing", ProcessConfig::new(vec!["/nonexistent/consumer".into()], "g", "t"), PoolMetrics::default()).unwrap();
        let e = missing.scale_to(&req(1)).await.unwrap_err();
        assert_eq!(e.kind(), "spawn");
        let s = missing.status();
        assert_eq!((s.desired, s.running, s.restarting), (1, 0, 1));
        assert_eq!(s.recent_exits[0].reason, ExitReason::SpawnError);
    }
}
