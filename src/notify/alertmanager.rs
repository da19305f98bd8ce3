//! The Alertmanager client (API v2): one bounded queue and one sender task per
//! Alertmanager, fed by one dispatcher that turns rule statuses into alerts to send
//! (the decisions are pure, in [`crate::notify`]).
//!
//! ```text
//!  Rules (evaluated) ──watch──▶ dispatcher: Tracker::observe/due ──push──▶ queue(am1) ─▶ sender(am1) ─POST /api/v2/alerts─▶ am1
//!                                                              └──push──▶ queue(am2) ─▶ sender(am2) ─POST /api/v2/alerts─▶ am2
//! ```
//!
//! # Guarantees
//! - Evaluation never waits for a notification: the seam is a `watch` channel (one
//!   value, never full) and the dispatcher reads the statuses itself.
//! - Every Alertmanager gets every alert, and each has its own queue and task, so a dead
//!   or slow one never delays another.
//! - A queue holds at most `queue_capacity` alerts, the newest version of each (a newer
//!   state of an alert replaces the queued one); when full, the oldest are dropped and
//!   counted in `streamguard_notifications_dropped_total`. When more alerts fall due at
//!   once than the largest queue holds, only that many are built; the others are counted
//!   as dropped (see [`Tracker::due`]).
//! - The tracker's work (reading every instance, building the alerts due) runs on the
//!   blocking pool, never on the runtime's threads.
//! - A batch that fails with a timeout, a connection error or a 5xx goes back to the
//!   front of its queue and is retried with exponential backoff (at most the resend
//!   interval); a 4xx (the Alertmanager rejects the payload) is counted and dropped,
//!   since sending it again cannot succeed.
//! - Metrics: `streamguard_notifications_sent_total`, `…_errors_total{error}`,
//!   `…_dropped_total`, `…_queue_length`, all per `alertmanager` (a configured URL).
//!
//! # Assumptions
//! - Alerts that are firing are re-sent every resend interval, so a restart of the
//!   dispatcher (which forgets what it sent) re-sends them; a resolve that happened
//!   while it was down is learnt by Alertmanager from the alert's `endsAt`.
//!
//! # Errors
//! Only building an HTTP client can fail at start ([`ClientError`]). Send failures are
//! counted and logged (a warning on the first failure of a run, not on every retry).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Alert, Timing, Tracker};
use crate::config::{AlertmanagerConfig, NotifyConfig};
use crate::evaluate::Rules;
use crate::signal::Labels;

/// Where the notifier reports what it did (the agent's metrics implement it, so this
/// module does not depend on `serve`). `url` is a configured Alertmanager.
pub trait NotifyMetrics: Send + Sync {
    /// The queue of `url` is now `len` long; `dropped` alerts fell out of it.
    fn queued(&self, url: &str, len: usize, dropped: usize);
    /// `n` alerts reached `url`; `len` are still queued.
    fn sent(&self, url: &str, n: usize, len: usize);
    /// A request with `n` alerts to `url` failed with a bounded `error` kind.
    fn failed(&self, url: &str, error: &'static str, n: usize);
}

/// Alerts per request (Prometheus' notifier: 64).
pub const MAX_BATCH: usize = 64;
/// How often the dispatcher looks for resends when no evaluation wakes it.
const DISPATCH_TICK: Duration = Duration::from_secs(1);
/// First retry delay after a failed request; doubles up to the resend interval.
const RETRY_BASE: Duration = Duration::from_millis(500);

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("alertmanager {url}: cannot build the HTTP client")]
pub struct ClientError {
    pub url: String,
    #[source]
    pub source: reqwest::Error,
}

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: cannot connect")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{url}: request failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

impl SendError {
    /// Bounded kind, for the `error` label.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::Timeout { .. } => "timeout",
            SendError::Connect { .. } => "connect",
            SendError::Status { status, .. } if *status < 500 => "status_4xx",
            SendError::Status { .. } => "status_5xx",
            SendError::Request { .. } => "request",
        }
    }

    /// Whether sending the same alerts again can succeed.
    pub fn retryable(&self) -> bool {
        !matches!(self, SendError::Status { status, .. } if *status < 500)
    }
}

/// A bounded queue of alerts waiting for one Alertmanager: oldest first, one entry per
/// alert (label set), the newest version of each.
#[derive(Debug)]
pub struct Queue {
    capacity: usize,
    items: BTreeMap<i64, Alert>,
    index: HashMap<Labels, i64>,
    next_back: i64,
    next_front: i64,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Queue { capacity: capacity.max(1), items: BTreeMap::new(), index: HashMap::new(), next_back: 0, next_front: -1 }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends `alert`, replacing a queued version of it; returns how many of the
    /// oldest alerts were dropped to stay within capacity.
    pub fn push(&mut self, alert: Alert) -> usize {
        if let Some(old) = self.index.remove(&alert.labels) {
            self.items.remove(&old);
        }
        let seq = self.next_back;
        self.next_back += 1;
        self.index.insert(alert.labels.clone(), seq);
        self.items.insert(seq, alert);
        self.trim()
    }

    /// Removes and returns up to `n` of the oldest alerts.
    pub fn take(&mut self, n: usize) -> Vec<Alert> {
        let mut out = Vec::with_capacity(n.min(self.items.len()));
        while out.len() < n {
            let Some((_, a)) = self.items.pop_first() else { break };
            self.index.remove(&a.labels);
            out.push(a);
        }
        out
    }

    /// Puts a batch that failed back at the front, in order, except alerts of which a
    /// newer version was queued meanwhile; returns how many were dropped for capacity.
    pub fn requeue(&mut self, batch: Vec<Alert>) -> usize {
        for a in batch.into_iter().rev() {
            if self.index.contains_key(&a.labels) {
                continue;
            }
            let seq = self.next_front;
            self.next_front -= 1;
            self.index.insert(a.labels.clone(), seq);
            self.items.insert(seq, a);
        }
        self.trim()
    }

    fn trim(&mut self) -> usize {
        let mut dropped = 0;
        while self.items.len() > self.capacity {
            if let Some((_, a)) = self.items.pop_first() {
                self.index.remove(&a.labels);
                dropped += 1;
            }
        }
        dropped
    }
}

/// One Alertmanager's HTTP client.
#[derive(Debug, Clone)]
pub struct Client {
    /// The configured base URL (the metrics' `alertmanager` label).
    pub url: String,
    endpoint: String,
    timeout: Duration,
    http: reqwest::Client,
}

impl Client {
    pub fn new(config: &AlertmanagerConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("streamguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError { url: config.url.clone(), source })?;
        Ok(Client { url: config.url.clone(), endpoint: format!("{}/api/v2/alerts", config.url), timeout: config.timeout, http })
    }

    /// `POST /api/v2/alerts` with `alerts`.
    pub async fn post(&self, alerts: &[Alert]) -> Result<(), SendError> {
        let url = self.url.clone();
        let classify = |source: reqwest::Error| {
            if source.is_timeout() {
                SendError::Timeout { url: url.clone(), timeout: self.timeout }
            } else if source.is_connect() {
                SendError::Connect { url: url.clone(), source }
            } else {
                SendError::Request { url: url.clone(), source }
            }
        };
        let resp = self.http.post(&self.endpoint).json(alerts).send().await.map_err(classify)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let mut body = resp.text().await.unwrap_or_default();
        body.truncate(200);
        Err(SendError::Status { url: self.url.clone(), status: status.as_u16(), body: body.trim().to_string() })
    }
}

/// What the dispatcher and one sender share.
#[derive(Debug)]
pub struct Outbox {
    pub client: Client,
    queue: Mutex<Queue>,
    wake: Notify,
}

impl Outbox {
    pub fn new(client: Client, capacity: usize) -> Arc<Self> {
        Arc::new(Outbox { client, queue: Mutex::new(Queue::new(capacity)), wake: Notify::new() })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.queue().len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue().is_empty()
    }

    /// How many alerts its queue holds at most.
    pub fn capacity(&self) -> usize {
        self.queue().capacity
    }

    /// Queues `alerts` and wakes the sender; counts what had to be dropped, with the
    /// `left_out` alerts that were due but never built because no queue could hold them
    /// (see [`Tracker::due`]).
    pub fn push(&self, alerts: &[Alert], left_out: usize, metrics: &dyn NotifyMetrics) {
        let (dropped, len) = {
            let mut q = self.queue();
            let dropped: usize = alerts.iter().cloned().map(|a| q.push(a)).sum();
            (dropped + left_out, q.len())
        };
        metrics.queued(&self.client.url, len, dropped);
        if dropped > 0 {
            tracing::warn!(alertmanager = %self.client.url, dropped, "notification queue full, oldest alerts dropped");
        }
        self.wake.notify_one();
    }
}

/// Builds one outbox per configured Alertmanager.
pub fn outboxes(config: &NotifyConfig) -> Result<Vec<Arc<Outbox>>, ClientError> {
    config.alertmanagers.iter().map(|a| Ok(Outbox::new(Client::new(a)?, config.queue_capacity))).collect()
}

/// Delay before retry number `failures` (1-based): `RETRY_BASE × 2^(failures−1)`, at
/// most `cap`. Pure.
pub fn retry_delay(failures: u32, cap: Duration) -> Duration {
    RETRY_BASE.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16))).min(cap.max(RETRY_BASE))
}

/// Sends what is queued in `outbox` until `cancel`.
pub async fn sender(outbox: Arc<Outbox>, retry_cap: Duration, metrics: Arc<dyn NotifyMetrics>, cancel: CancellationToken) {
    let url = outbox.client.url.clone();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = outbox.wake.notified() => {}
        }
        loop {
            let batch = outbox.queue().take(MAX_BATCH);
            if batch.is_empty() {
                break;
            }
            let n = batch.len();
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = outbox.client.post(&batch) => r,
            };
            match result {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(alertmanager = %url, failures, "alertmanager reachable again");
                    }
                    failures = 0;
                    metrics.sent(&url, n, outbox.len());
                    tracing::debug!(alertmanager = %url, alerts = n, "alerts sent");
                }
                Err(e) => {
                    failures += 1;
                    metrics.failed(&url, e.kind(), n);
                    if !e.retryable() {
                        tracing::error!(alertmanager = %url, error = %e, alerts = n, "alertmanager rejected alerts; dropped");
                        continue;
                    }
                    let (dropped, len) = {
                        let mut q = outbox.queue();
                        (q.requeue(batch), q.len())
                    };
                    metrics.queued(&url, len, dropped);
                    if failures == 1 {
                        tracing::warn!(alertmanager = %url, error = %e, alerts = n, "cannot send alerts; retrying");
                    } else {
                        tracing::debug!(alertmanager = %url, error = %e, failures, "cannot send alerts again");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(retry_delay(failures, retry_cap)) => {}
                    }
                }
            }
        }
    }
}

/// Turns rule statuses into alerts for every outbox until `cancel`: after each rule
/// evaluation and at least every second (for resends).
pub async fn dispatcher(
    rules: Arc<Rules>,
    outboxes: Vec<Arc<Outbox>>,
    timing: Timing,
    generator_url: String,
    metrics: Arc<dyn NotifyMetrics>,
    cancel: CancellationToken,
) {
    let mut evaluated = rules.subscribe();
    let mut tick = tokio::time::interval(DISPATCH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracker = Tracker::default();
    // More than the largest queue holds would be dropped at once: not even built.
    let limit = outboxes.iter().map(|o| o.capacity()).max().unwrap_or(0);
    // Statuses change only when a group is evaluated: read them then (and once at
    // start); a tick alone only looks for resends.
    let mut stale = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = evaluated.changed() => {
                stale = true;
                if r.is_err() {
                    // The rules are gone (shutdown): resends still run on the tick.
                    evaluated = rules.subscribe();
                }
            }
            _ = tick.tick() => {}
        }
        let now = SystemTime::now();
        let statuses = std::mem::take(&mut stale).then(|| rules.rule_statuses());
        // Off the runtime's threads: in a mass incident the statuses hold 200,000
        // instances, and a resend interval makes as many alerts due.
        let url = generator_url.clone();
        let work = tokio::task::spawn_blocking(move || {
            if let Some(statuses) = statuses {
                tracker.observe(&statuses, now);
            }
            let due = tracker.due(now, timing, &url, limit);
            (tracker, due)
        });
        let (due, left_out) = match work.await {
            Ok((back, due)) => {
                tracker = back;
                due
            }
            // A panic in the tracker ends the task; its supervisor restarts it with a
            // new tracker (see the module's assumptions).
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return, // the runtime is shutting down
        };
        if due.is_empty() && left_out == 0 {
            continue;
        }
        let resolved = due.iter().filter(|a| a.is_resolved(now)).count();
        tracing::debug!(alerts = due.len(), resolved, left_out, "alerts due");
        for o in &outboxes {
            o.push(&due, left_out, metrics.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::Metrics;

    fn alert(name: &str, ends: u64) -> Alert {
        Alert {
            labels: [("alertname".to_string(), name.to_string())].into(),
            annotations: Default::default(),
            starts_at: SystemTime::UNIX_EPOCH,
            ends_at: SystemTime::UNIX_EPOCH + Duration::from_secs(ends),
            generator_url: String::new(),
        }
    }

    fn names(v: &[Alert]) -> Vec<&str> {
        v.iter().map(|a| a.labels["alertname"].as_str()).collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_alerts_and_says_how_many() {
        let mut q = Queue::new(2);
        assert_eq!(q.push(alert("a", 1)), 0);
        assert_eq!(q.push(alert("b", 1)), 0);
        assert_eq!(q.push(alert("c", 1)), 1);
        assert_eq!(names(&q.take(10)), vec!["b", "c"]);
    }

    #[test]
    fn a_newer_version_of_a_queued_alert_replaces_it_at_the_back() {
        let mut q = Queue::new(10);
        q.push(alert("a", 1));
        q.push(alert("b", 1));
        q.push(alert("a", 2));
        let got = q.take(10);
        assert_eq!(names(&got), vec!["b", "a"]);
        assert_eq!(got[1].ends_at, SystemTime::UNIX_EPOCH + Duration::from_secs(2));
    }

    #[test]
    fn a_failed_batch_goes_back_to_the_front_unless_a_newer_version_was_queued() {
        let mut q = Queue::new(3);
        for n in ["a", "b", "c"] {
            q.push(alert(n, 1));
        }
        let batch = q.take(2);
        q.push(alert("a", 2));
        q.push(alert("d", 1));
        assert_eq!(q.requeue(batch), 1, "b back at the front, then the oldest (b) dropped to fit");
        assert_eq!(names(&q.take(10)), vec!["c", "a", "d"]);
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let cap = Duration::from_secs(60);
        assert_eq!(retry_delay(1, cap), Duration::from_millis(500));
        assert_eq!(retry_delay(3, cap), Duration::from_secs(2));
        assert_eq!(retry_delay(30, cap), cap);
    }

    #[test]
    fn client_errors_are_not_retried_and_server_errors_are() {
        let s = |status| SendError::Status { url: "u".into(), status, body: String::new() };
        assert!(!s(400).retryable());
        assert_eq!(s(400).kind(), "status_4xx");
        assert!(s(503).retryable());
        assert_eq!(s(503).kind(), "status_5xx");
    }

    #[tokio::test]
    async fn an_unreachable_alertmanager_counts_errors_and_keeps_the_alerts_queued() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = AlertmanagerConfig { url: format!("http://127.0.0.1:{port}"), timeout: Duration::from_secs(1) };
        let outbox = Outbox::new(Client::new(&cfg).unwrap(), 10);
        let store = Arc::new(crate::store::Store::default());
        let rules = Arc::new(Rules::load(crate::config::RulesConfig::for_tests(), Default::default()).unwrap());
        let metrics = Arc::new(Metrics::new(store, rules));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(sender(outbox.clone(), Duration::from_secs(60), metrics.clone(), cancel.clone()));
        // Three more were due and left out (never built): dropped, as if queued and pushed out.
        outbox.push(&[alert("a", 1), alert("b", 1)], 3, metrics.as_ref());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let text = loop {
            let text = metrics.encode(crate::telemetry::metrics::Format::Prometheus).unwrap();
            if text.contains("streamguard_notifications_errors_total{alertmanager=") {
                break text;
            }
            assert!(tokio::time::Instant::now() < deadline, "no error counted:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(text.contains(&format!("streamguard_notifications_errors_total{{alertmanager=\"{}\",error=\"connect\"}} 2", cfg.url)), "{text}");
        assert_eq!(outbox.len(), 2, "kept for a retry");
        assert!(text.contains(&format!("streamguard_notifications_dropped_total{{alertmanager=\"{}\"}} 3", cfg.url)), "{text}");
        cancel.cancel();
        task.await.unwrap();
    }
}
