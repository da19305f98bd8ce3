//! Supervision of the agent's background tasks (sampling loops, rule loops, the reload
//! watcher, the notifier): a panic is caught, logged, counted and makes `/readyz` fail,
//! and the task is restarted with backoff.
//!
//! # Guarantees
//! - Every task runs inside the agent's [`TaskTracker`] (restarts too), so shutdown
//!   waits for all of them.
//! - A panic never ends the agent or goes unnoticed: it is logged at ERROR with the
//!   panic message, counted in `streamguard_task_panics_total{task}` (a bounded name),
//!   and the task is reported not ready until it has run [`Policy::stable_after`]
//!   without panicking again.
//! - A task is restarted after `backoff_base × 2^(panics−1)` (capped at `backoff_max`),
//!   each restart counted in `streamguard_task_restarts_total{task}`. A task that
//!   cannot be rebuilt (its factory returns `None`) stays not ready until the agent
//!   restarts.
//! - A task that returns normally (cancelled) is not restarted.
//!
//! # Assumptions
//! - A task's factory builds a fresh future from state that survives a panic (config,
//!   shared `Arc`s); state that lived inside the panicked future is lost.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where the supervisor reports panics and restarts (the agent's metrics implement it,
/// so this module does not depend on `serve`).
pub trait TaskMetrics: Send + Sync + std::fmt::Debug {
    fn task_panicked(&self, task: &'static str);
    fn task_restarted(&self, task: &'static str);
}

/// Restart timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A restarted task counts as healthy again after running this long.
    pub stable_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { backoff_base: Duration::from_secs(1), backoff_max: Duration::from_secs(60), stable_after: Duration::from_secs(60) }
    }
}

impl Policy {
    /// Delay before restart after the `panics`-th consecutive panic (1-based). Pure.
    pub fn backoff(&self, panics: u32) -> Duration {
        self.backoff_base.saturating_mul(2u32.saturating_pow(panics.saturating_sub(1).min(16))).min(self.backoff_max)
    }
}

/// What is known of one supervised task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// Bounded kind (the metric label).
    pub task: &'static str,
    /// Panics since the agent started.
    pub panics: u32,
    pub last_panic: Option<SystemTime>,
    pub last_message: Option<String>,
    /// When the task was last (re)started.
    pub started: Option<SystemTime>,
    /// The task panicked and could not be rebuilt.
    pub gave_up: bool,
}

/// Why a task is not ready at `now`, if it is not. Pure.
pub fn not_ready_reason(s: &TaskState, now: SystemTime, policy: &Policy) -> Option<String> {
    let msg = s.last_message.as_deref().unwrap_or("panic");
    if s.gave_up {
        return Some(format!("panicked and could not be restarted: {msg}"));
    }
    let last = s.last_panic?;
    let restarted = s.started.filter(|st| *st >= last);
    match restarted {
        None => Some(format!("panicked ({msg}); restarting")),
        Some(st) if now.duration_since(st).unwrap_or_default() < policy.stable_after => {
            Some(format!("restarted after a panic ({msg}); not yet stable"))
        }
        Some(_) => None,
    }
}

/// Health of every supervised task, for `/readyz`.
#[derive(Debug, Default)]
pub struct TaskHealth {
    tasks: Mutex<BTreeMap<String, TaskState>>,
    policy: Policy,
}

impl TaskHealth {
    pub fn new(policy: Policy) -> Self {
        TaskHealth { tasks: Mutex::default(), policy }
    }

    fn update(&self, id: &str, task: &'static str, f: impl FnOnce(&mut TaskState)) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let s = tasks.entry(id.to_string()).or_insert_with(|| TaskState {
            task,
            panics: 0,
            last_panic: None,
            last_message: None,
            started: None,
            gave_up: false,
        });
        f(s);
    }

    fn remove_if_healthy(&self, id: &str) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if tasks.get(id).is_some_and(|s| s.panics == 0) {
            tasks.remove(id);
        }
    }

    /// `"<id>: <reason>"` for every task that is not ready at `now`.
    pub fn not_ready(&self, now: SystemTime) -> Vec<String> {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.iter().filter_map(|(id, s)| not_ready_reason(s, now, &self.policy).map(|r| format!("task {id}: {r}"))).collect()
    }

    pub fn get(&self, id: &str) -> Option<TaskState> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }
}

/// Spawns supervised tasks into one tracker.
#[derive(Debug, Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    health: Arc<TaskHealth>,
    metrics: Arc<dyn TaskMetrics>,
    policy: Policy,
}

impl Supervisor {
    pub fn new(tracker: TaskTracker, metrics: Arc<dyn TaskMetrics>, policy: Policy) -> Self {
        Supervisor { tracker, health: Arc::new(TaskHealth::new(policy)), metrics, policy }
    }

    pub fn health(&self) -> Arc<TaskHealth> {
        self.health.clone()
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Runs `make()`'s future as task `id` (of bounded kind `task`) until it returns or
    /// `cancel` fires; rebuilds and restarts it after a panic. `make` returning `None`
    /// means the task cannot be rebuilt.
    pub fn spawn<F, Fut>(&self, task: &'static str, id: String, cancel: CancellationToken, mut make: F)
    where
        F: FnMut() -> Option<Fut> + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        self.tracker.spawn(async move {
            let mut panics = 0u32;
            loop {
                let Some(fut) = make() else {
                    this.health.update(&id, task, |s| s.gave_up = true);
                    tracing::error!(task, id = %id, "task cannot be restarted; the agent is not ready");
                    return;
                };
                this.health.update(&id, task, |s| s.started = Some(SystemTime::now()));
                let handle = this.tracker.spawn(fut);
                let error = match handle.await {
                    Ok(()) => break,
                    Err(e) if e.is_panic() => panic_message(e.into_panic()),
                    // Aborted: only the runtime shutting down does that.
                    Err(_) => break,
                };
                panics += 1;
                this.metrics.task_panicked(task);
                let now = SystemTime::now();
                this.health.update(&id, task, |s| {
                    s.panics += 1;
                    s.last_panic = Some(now);
                    s.last_message = Some(error.clone());
                });
                if cancel.is_cancelled() {
                    tracing::error!(task, id = %id, panic = %error, "task panicked during shutdown");
                    return;
                }
                let delay = this.policy.backoff(panics);
                tracing::error!(task, id = %id, panic = %error, restart_in = ?delay, "task panicked; restarting");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                this.metrics.task_restarted(task);
            }
            this.health.remove_if_healthy(&id);
        });
    }
}

/// The text of a panic payload (`&str` or `String`), bounded for logs and `/readyz`.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let mut s = match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p.downcast::<&'static str>().map(|s| s.to_string()).unwrap_or_else(|_| "non-string panic".to_string()),
    };
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const FAST: Policy =
        Policy { backoff_base: Duration::from_millis(10), backoff_max: Duration::from_millis(40), stable_after: Duration::from_millis(300) };

    use crate::telemetry::metrics::Metrics;

    fn metrics() -> Arc<Metrics> {
        let store = Arc::new(crate::store::Store::default());
        let rules = Arc::new(crate::evaluate::Rules::load(crate::config::RulesConfig::for_tests(), Default::default()).unwrap());
        Arc::new(Metrics::new(store, rules))
    }

    fn scrape(m: &Metrics) -> String {
        m.encode(crate::telemetry::metrics::Format::Prometheus).unwrap()
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = Policy::default();
        assert_eq!(p.backoff(1), Duration::from_secs(1));
        assert_eq!(p.backoff(3), Duration::from_secs(4));
        assert_eq!(p.backoff(40), Duration::from_secs(60));
    }

    #[test]
    fn a_task_is_not_ready_after_a_panic_until_it_has_run_stably() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let p = Policy::default();
        let mut s = TaskState { task: "x", panics: 0, last_panic: None, last_message: None, started: Some(t0), gave_up: false };
        assert_eq!(not_ready_reason(&s, t0, &p), None);
        s.panics = 1;
        s.last_panic = Some(t0 + Duration::from_secs(5));
        s.last_message = Some("boom".into());
        assert!(not_ready_reason(&s, t0 + Duration::from_secs(6), &p).unwrap().contains("restarting"));
        s.started = Some(t0 + Duration::from_secs(6));
        assert!(not_ready_reason(&s, t0 + Duration::from_secs(30), &p).unwrap().contains("not yet stable"));
        assert_eq!(not_ready_reason(&s, t0 + Duration::from_secs(66), &p), None);
        s.gave_up = true;
        assert!(not_ready_reason(&s, t0 + Duration::from_secs(600), &p).unwrap().contains("could not be restarted"));
    }

    #[tokio::test]
    async fn a_panicking_task_is_caught_counted_restarted_and_not_ready_until_stable() {
        let m = metrics();
        let tracker = TaskTracker::new();
        let sup = Supervisor::new(tracker.clone(), m.clone(), FAST);
        let cancel = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let c = cancel.clone();
        sup.spawn("sample", "sample kafka local".into(), cancel.clone(), move || {
            let (r, c) = (r.clone(), c.clone());
            Some(async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom {}", r.load(Ordering::SeqCst));
                }
                c.cancelled().await;
            })
        });
        let health = sup.health();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(tokio::time::Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let text = scrape(&m);
        assert!(text.contains("streamguard_task_panics_total{task=\"sample\"} 2"), "{text}");
        assert!(text.contains("streamguard_task_restarts_total{task=\"sample\"} 2"), "{text}");
        let reasons = health.not_ready(SystemTime::now());
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].starts_with("task sample kafka local: restarted after a panic (boom 2)"), "{reasons:?}");
        tokio::time::sleep(FAST.stable_after + Duration::from_millis(50)).await;
        assert!(health.not_ready(SystemTime::now()).is_empty(), "stable again");
        cancel.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.expect("shutdown waits for the task and ends");
    }

    #[tokio::test]
    async fn a_task_that_cannot_be_rebuilt_keeps_the_agent_not_ready() {
        let m = metrics();
        let tracker = TaskTracker::new();
        let sup = Supervisor::new(tracker.clone(), m.clone(), FAST);
        let mut first = true;
        sup.spawn("notify_send", "notify_send am".into(), CancellationToken::new(), move || {
            let go = std::mem::replace(&mut first, false);
            go.then_some(async { panic!("lost its state") })
        });
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.expect("the supervisor gives up and ends");
        let reasons = sup.health().not_ready(SystemTime::now() + Duration::from_secs(3600));
        assert_eq!(reasons, vec!["task notify_send am: panicked and could not be restarted: lost its state".to_string()]);
    }

    #[tokio::test]
    async fn a_task_that_ends_normally_is_not_restarted() {
        let m = metrics();
        let tracker = TaskTracker::new();
        let sup = Supervisor::new(tracker.clone(), m.clone(), FAST);
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        sup.spawn("rules", "rules".into(), CancellationToken::new(), move || {
            r.fetch_add(1, Ordering::SeqCst);
            Some(async {})
        });
        tracker.close();
        tracker.wait().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(sup.health().not_ready(SystemTime::now()).is_empty());
    }
}
