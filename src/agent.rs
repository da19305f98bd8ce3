//! The long-running agent: one sampling loop per source, the HTTP server, and one
//! cancellation tree over all of them.
//!
//! # Guarantees
//! - Sources are isolated: each loop has its own schedule, timeout and backoff, and runs
//!   its blocking admin calls on the blocking pool, so a slow or dead cluster never
//!   delays another one or the HTTP server.
//! - A loop never runs two samples of one source at once: if an attempt outlives its
//!   timeout, following cycles are skipped (and counted) until it returns.
//! - Cancellation (SIGINT/SIGTERM) stops every loop at its next `.await`; shutdown waits
//!   at most [`SHUTDOWN_GRACE`] and logs when that is exceeded.
//! - Every background task (sampling loops, rule loops and reload watcher, notifier)
//!   runs under one [`Supervisor`]: a panic is logged, counted, fails `/readyz` and the
//!   task is rebuilt from its configuration and restarted with backoff.
//! - With `[[alertmanagers]]` configured, firing and resolved alerts are sent to each
//!   (see [`crate::notify`]); an unreachable Alertmanager never delays evaluation.
//! - With `[remediation]` configured, verdicts are queued from the first evaluation on
//!   and runbooks run under the same supervisor and tracker (see [`crate::remediate`]);
//!   runs left unfinished by the previous process are resumed from the journal first.
//!
//! # Errors
//! Only startup fails the agent (bad client configuration, port in use). Sampling errors
//! are recorded in the store (data becomes stale) and counted, and the loop retries
//! with exponential backoff capped at `backoff_max`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ClusterConfig, Config, HttpSourceConfig, PrometheusConfig};
use crate::evaluate::Rules;
use crate::telemetry::events::{SampleFailed, SamplePartial, SampleSkipped, SampleSucceeded};
use crate::sample::connect::ConnectSampler;
use crate::sample::flink::FlinkSampler;
use crate::sample::http::HttpError;
use crate::sample::kafka::{KafkaSampler, KafkaSnapshot, SampleError};
use crate::sample::kafka_admin::AdminError;
use crate::derive;
use crate::sample::prometheus::PrometheusSampler;
use crate::signal::SourceSample;
use crate::telemetry::metrics::Metrics;
use crate::serve::{router, AppState};
use crate::store::{SourceKind, Store};
use crate::supervise::{Policy, Supervisor};

/// How long shutdown may take, from SIGTERM to exit (documented in the README).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The part of [`SHUTDOWN_GRACE`] left to the runtime's own shutdown in `main`
/// (`Runtime::shutdown_timeout`): blocking calls still running then are abandoned.
pub const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// Blocking calls in flight (Kafka samples on the blocking pool), so shutdown can say
/// which ones it cut short.
#[derive(Debug, Default)]
pub struct InFlight {
    calls: std::sync::Mutex<std::collections::BTreeMap<u64, (String, Instant)>>,
    next: std::sync::atomic::AtomicU64,
}

/// Removes its call from [`InFlight`] when dropped (when the blocking call returns).
pub struct InFlightGuard {
    owner: Arc<InFlight>,
    id: u64,
}

impl InFlight {
    pub fn track(self: &Arc<Self>, what: String) -> InFlightGuard {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (what, Instant::now()));
        InFlightGuard { owner: self.clone(), id }
    }

    /// (what, running for) of every call still in flight.
    pub fn running(&self) -> Vec<(String, Duration)> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).values().map(|(w, at)| (w.clone(), at.elapsed())).collect()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.owner.calls.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// Why the agent could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cluster {cluster}: {source}")]
    Client {
        cluster: String,
        #[source]
        source: AdminError,
    },
    #[error("source {source_name}: {source}")]
    Http {
        source_name: String,
        #[source]
        source: HttpError,
    },
    #[error("invalid rules:\n{0}")]
    Rules(#[source] crate::rules::file::RuleErrors),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot start the recording in {path}")]
    Record {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Notify(#[from] crate::notify::alertmanager::ClientError),
    #[error("remediation: {0}")]
    Remediation(#[from] crate::remediate::executor::StartError),
    #[error("scale target {0}: {1}")]
    Scale(String, crate::scale::actuators::ActuatorError),
}

/// Delay before the next attempt. Pure.
///
/// Steady state: the interval minus the time the sample took (fixed rate, no drift).
/// After `failures` consecutive failures: `interval × 2^(failures−1)`, capped at
/// `max(backoff_max, interval)`.
pub fn next_delay(interval: Duration, elapsed: Duration, failures: u32, backoff_max: Duration) -> Duration {
    if failures == 0 {
        return interval.saturating_sub(elapsed);
    }
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    let backoff = interval.saturating_mul(factor).min(backoff_max.max(interval));
    backoff.saturating_sub(elapsed)
}

/// One source's schedule.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    interval: Duration,
    timeout: Duration,
    backoff_max: Duration,
}

/// A source's configuration: what a sampling loop is (re)built from.
#[derive(Debug, Clone)]
enum SourceSpec {
    Kafka(ClusterConfig),
    Connect(HttpSourceConfig),
    Flink(HttpSourceConfig),
    Prometheus(PrometheusConfig),
}

impl SourceSpec {
    fn kind(&self) -> SourceKind {
        match self {
            SourceSpec::Kafka(_) => SourceKind::Kafka,
            SourceSpec::Connect(_) => SourceKind::Connect,
            SourceSpec::Flink(_) => SourceKind::Flink,
            SourceSpec::Prometheus(_) => SourceKind::Prometheus,
        }
    }

    fn name(&self) -> &str {
        match self {
            SourceSpec::Kafka(c) => &c.name,
            SourceSpec::Connect(c) | SourceSpec::Flink(c) => &c.name,
            SourceSpec::Prometheus(c) => &c.source.name,
        }
    }

    fn schedule(&self) -> Schedule {
        let http = |c: &HttpSourceConfig| Schedule { interval: c.sample_interval, timeout: c.sample_timeout, backoff_max: c.backoff_max };
        match self {
            SourceSpec::Kafka(c) => Schedule { interval: c.sample_interval, timeout: c.sample_timeout, backoff_max: c.backoff_max },
            SourceSpec::Connect(c) | SourceSpec::Flink(c) => http(c),
            SourceSpec::Prometheus(c) => http(&c.source),
        }
    }

    fn stale_after(&self) -> Duration {
        match self {
            SourceSpec::Kafka(c) => c.stale_after(),
            SourceSpec::Connect(c) | SourceSpec::Flink(c) => c.stale_after(),
            SourceSpec::Prometheus(c) => c.source.stale_after(),
        }
    }

    fn build(&self) -> Result<Source, AgentError> {
        let http = |source| AgentError::Http { source_name: self.name().to_string(), source };
        Ok(match self {
            SourceSpec::Kafka(c) => {
                let sampler = KafkaSampler::new(c).map_err(|source| AgentError::Client { cluster: c.name.clone(), source })?;
                let (path, reason) = sampler.path();
                tracing::info!(cluster = %c.name, path, sampler = c.sampler.as_str(), reason = reason.as_deref().unwrap_or(""), "kafka sampler path");
                Source::Kafka { sampler: Arc::new(sampler), pending: None, derive: Default::default() }
            }
            SourceSpec::Connect(c) => Source::Connect(ConnectSampler::new(c).map_err(http)?),
            SourceSpec::Flink(c) => Source::Flink(FlinkSampler::new(c).map_err(http)?),
            SourceSpec::Prometheus(c) => Source::Prometheus(PrometheusSampler::new(c).map_err(http)?),
        })
    }
}

/// Every kind of source, dispatched by the loop.
enum Source {
    Kafka {
        sampler: Arc<KafkaSampler>,
        pending: Option<JoinHandle<Result<KafkaSnapshot, SampleError>>>,
        derive: derive::kafka::DeriveState,
    },
    Connect(ConnectSampler),
    Flink(FlinkSampler),
    Prometheus(PrometheusSampler),
}

/// Why one attempt failed: a bounded kind for the metric, the error for people.
struct Failure {
    kind: &'static str,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl Failure {
    fn new(kind: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Failure { kind, error: Box::new(error) }
    }
}

/// Errors that did not fail a sample, by bounded cause.
#[derive(Debug, Default)]
struct PartialErrors {
    causes: std::collections::BTreeMap<&'static str, u64>,
    first: Option<String>,
}

/// What one cycle did.
enum Cycle {
    /// Sampled and recorded this many series; some values may be missing (`partial`).
    Sampled { series: usize, partial: PartialErrors },
    /// The previous attempt has not returned yet.
    Skipped,
}

#[derive(Debug, thiserror::Error)]
#[error("sample did not return within {0:?}")]
struct HardTimeout(Duration);

impl Source {
    fn kind(&self) -> SourceKind {
        match self {
            Source::Kafka { .. } => SourceKind::Kafka,
            Source::Connect(_) => SourceKind::Connect,
            Source::Flink(_) => SourceKind::Flink,
            Source::Prometheus(_) => SourceKind::Prometheus,
        }
    }

    /// One attempt: sample, then record into the store.
    async fn run_once(&mut self, name: &str, store: &Arc<Store>, hard_timeout: Duration, in_flight: &Arc<InFlight>) -> Result<Cycle, Failure> {
        let kind = self.kind();
        let sample = match self {
            Source::Kafka { sampler, pending, derive } => {
                if pending.as_ref().is_some_and(|h| !h.is_finished()) {
                    return Ok(Cycle::Skipped);
                }
                let s = sampler.clone();
                let dlq = store.dlq_inputs();
                let guard = in_flight.track(format!("sample kafka {name}"));
                let mut handle = tokio::task::spawn_blocking(move || {
                    let _guard = guard;
                    s.sample(&dlq)
                });
                let snapshot = match tokio::time::timeout(hard_timeout, &mut handle).await {
                    Err(_) => {
                        *pending = Some(handle);
                        return Err(Failure::new("timeout", HardTimeout(hard_timeout)));
                    }
                    Ok(Err(join)) => return Err(Failure::new("panic", join)),
                    Ok(Ok(Err(e))) => {
                        // A rotated secret (file or variable) is read again after an
                        // authentication failure; the next attempt uses it.
                        if matches!(&e, SampleError::Client { fault, .. } if fault.kind == crate::sample::kafka_context::FaultKind::Authentication) {
                            match sampler.with_reloaded_secrets() {
                                Some(Ok(new)) => {
                                    tracing::info!(source = name, "a secret changed; Kafka client rebuilt with it");
                                    *sampler = Arc::new(new);
                                }
                                Some(Err(err)) => tracing::warn!(source = name, error = %err, "cannot rebuild the Kafka client with the changed secret"),
                                None => {}
                            }
                        }
                        return Err(Failure { kind: e.kind(), error: Box::new(e) });
                    }
                    Ok(Ok(Ok(snapshot))) => snapshot,
                };
                let guard = in_flight.track(format!("store kafka {name}"));
                let job = store_kafka(store.clone(), name.to_string(), snapshot, std::mem::take(derive), guard);
                let (n, partial, state) = job.await.map_err(|join| Failure::new("panic", join))?;
                *derive = state;
                return Ok(Cycle::Sampled { series: n, partial });
            }
            Source::Connect(s) => timed(hard_timeout, s.sample(SystemTime::now())).await?,
            Source::Flink(s) => timed(hard_timeout, s.sample(SystemTime::now())).await?,
            Source::Prometheus(s) => timed(hard_timeout, s.sample(SystemTime::now())).await?,
        };
        let n = sample.observations.len() + sample.batch.len();
        store.record_success(kind, name, SystemTime::now(), sample);
        Ok(Cycle::Sampled { series: n, partial: PartialErrors::default() })
    }
}

/// Stores a Kafka snapshot with what it derives (raw and derived series published
/// together), returning the series count, the partial errors and the derivation's
/// state.
///
/// Building the sample, deriving and storing take about a second of CPU at 20,000
/// groups, and the store's write lock waits for readers (a rule evaluation, a scrape's
/// copy): this runs on the blocking pool, never on one of the runtime's few workers,
/// which serve the API and `/healthz`. The state goes with the job and comes back; if
/// the job panics, it is lost and derivation starts over (counters since the agent
/// started included), and the cycle fails as a panic.
fn store_kafka(
    store: Arc<Store>,
    name: String,
    snapshot: KafkaSnapshot,
    mut state: derive::kafka::DeriveState,
    guard: impl Send + 'static,
) -> JoinHandle<(usize, PartialErrors, derive::kafka::DeriveState)> {
    tokio::task::spawn_blocking(move || {
        let _guard = guard;
        let (kind, at, history) = (SourceKind::Kafka, snapshot.taken_at, store.history_config());
        let n = store.record_success_with(kind, &name, at, snapshot.to_sample(), derive::kafka::LOOKS_UP, |view| {
            derive::kafka::derive(view, &snapshot, at, &history, &mut state)
        });
        let size = serde_json::to_value(state.size()).unwrap_or_default();
        store.annotate_target(kind, &name, "kafka_cluster", "derive_state", size);
        let partial = PartialErrors { causes: snapshot.partial_causes.clone(), first: snapshot.partial_errors.first().cloned() };
        // The snapshot and the derivation's scratch are freed: give them back.
        drop(snapshot);
        crate::heap::trim();
        (n, partial, state)
    })
}

async fn timed(
    hard_timeout: Duration,
    f: impl std::future::Future<Output = Result<SourceSample, HttpError>>,
) -> Result<SourceSample, Failure> {
    match tokio::time::timeout(hard_timeout, f).await {
        Err(_) => Err(Failure::new("timeout", HardTimeout(hard_timeout))),
        Ok(Err(e)) => Err(Failure { kind: e.kind(), error: Box::new(e) }),
        Ok(Ok(s)) => Ok(s),
    }
}

/// Runs until `cancel` fires. Binds the HTTP listener first so a port conflict fails fast.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), AgentError> {
    let store = Arc::new(Store::new(config.history));
    store.set_dlq_config(config.dlq.clone());
    if let Some(rc) = &config.record {
        let recorder = crate::record::Recorder::start(rc.clone()).map_err(|source| AgentError::Record { path: rc.path.clone(), source })?;
        tracing::info!(path = %rc.path.display(), "recording every stored observation");
        store.set_recorder(recorder);
    }
    let mut signals = crate::rules::file::SignalNames::builtin();
    signals.extend(config.prometheus.iter().flat_map(|p| p.queries.iter().map(|q| q.signal.clone())));
    let rules = Arc::new(Rules::load(config.rules.clone(), signals).map_err(AgentError::Rules)?);
    // The verdict queue exists before the first evaluation, so no transition is missed
    // while remediation starts; it waits in the bounded queue.
    let verdicts = config.remediation.as_ref().map(|rc| {
        let (tx, rx) = tokio::sync::mpsc::channel(rc.queue_capacity);
        rules.set_verdict_sink(tx);
        rx
    });
    // History is kept only for what the derivations and the rules read (the rest keeps
    // its latest value); the rule loops update theirs on every reload.
    store.keep_history("derive", crate::derive::kafka::history_windows(&config.history));
    store.keep_history("rules", crate::evaluate::history_windows(&rules.set()));
    let metrics = Arc::new(Metrics::new(store.clone(), rules.clone()));
    let specs = config
        .clusters
        .iter()
        .cloned()
        .map(SourceSpec::Kafka)
        .chain(config.connect.iter().cloned().map(SourceSpec::Connect))
        .chain(config.flink.iter().cloned().map(SourceSpec::Flink))
        .chain(config.prometheus.iter().cloned().map(SourceSpec::Prometheus));
    let mut loops: Vec<(Source, SourceSpec)> = Vec::new();
    for spec in specs {
        // Built now, so a bad client configuration fails the start, not a restart.
        let source = spec.build()?;
        store.register(spec.kind(), spec.name(), spec.stale_after());
        metrics.set_sample_timeout(spec.kind(), spec.name(), spec.schedule().timeout);
        loops.push((source, spec));
    }
    let outboxes = crate::notify::alertmanager::outboxes(&config.notify)?;
    for o in &outboxes {
        metrics.register_alertmanager(&o.client.url, config.notify.queue_capacity);
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Bind { addr: config.listen, source })?;
    let local = listener.local_addr().map_err(AgentError::Serve)?;
    tracing::info!(listen = %local, sources = loops.len(), "streamguard agent started");

    let tracker = TaskTracker::new();
    let supervisor = Supervisor::new(tracker.clone(), metrics.clone(), Policy::default());
    // Opened before anything runs: a bad journal or audit path, or an unreadable token,
    // fails the start.
    let remediation = match &config.remediation {
        Some(rc) => Some(crate::remediate::executor::Remediation::new(&config, rc, rules.clone(), store.clone(), metrics.clone(), tracker.clone(), cancel.child_token())?),
        None => None,
    };
    let in_flight = Arc::new(InFlight::default());
    for (source, spec) in loops {
        let (store, metrics, token, in_flight) = (store.clone(), metrics.clone(), cancel.child_token(), in_flight.clone());
        let id = format!("sample {} {}", spec.kind().as_str(), spec.name());
        let mut first = Some(source);
        supervisor.spawn("sample", id, token.clone(), move || {
            let source = match first.take() {
                Some(s) => s,
                None => match spec.build() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(source = spec.name(), error = %e, "cannot rebuild the sampler");
                        return None;
                    }
                },
            };
            Some(source_loop(source, spec.name().to_string(), spec.schedule(), store.clone(), metrics.clone(), token.clone(), in_flight.clone()))
        });
    }
    if let Err(e) = rules.restore_async().await {
        tracing::error!(error = %e, "cannot restore SLO budgets; starting from empty");
    }
    {
        let (rules, store, sup, token) = (rules.clone(), store.clone(), supervisor.clone(), cancel.child_token());
        supervisor.spawn("rules", "rules".to_string(), token.clone(), move || {
            Some(rules.clone().run(store.clone(), sup.clone(), token.clone()))
        });
    }
    if !outboxes.is_empty() {
        let timing = crate::notify::Timing {
            resend_interval: config.notify.resend_interval,
            evaluation_interval: config.rules.evaluation_interval,
        };
        let generator_url = format!("{}/api/v1/rules", config.notify.external_url);
        let token = cancel.child_token();
        for o in &outboxes {
            let (o, m, t, retry_cap) = (o.clone(), metrics.clone(), token.clone(), config.notify.resend_interval);
            supervisor.spawn("notify_send", format!("notify_send {}", o.client.url), token.clone(), move || {
                Some(crate::notify::alertmanager::sender(o.clone(), retry_cap, m.clone(), t.clone()))
            });
        }
        let (r, m, t) = (rules.clone(), metrics.clone(), token.clone());
        supervisor.spawn("notify_dispatch", "notify_dispatch".to_string(), token, move || {
            Some(crate::notify::alertmanager::dispatcher(r.clone(), outboxes.clone(), timing, generator_url.clone(), m.clone(), t.clone()))
        });
        tracing::info!(alertmanagers = config.notify.alertmanagers.len(), "sending alerts to Alertmanager");
    }
    // Scaling targets: their actuators now (a bad kubeconfig fails the start), each
    // process pool supervised and brought to its min_replicas.
    let mut scale = None;
    if !config.scale.is_empty() {
        let rt = Arc::new(crate::scale::runtime::ScaleRuntime::new(&config.scale, &metrics.scale_pools).map_err(|(t, e)| AgentError::Scale(t, e))?.with_metrics(metrics.scale.clone()));
        // A target an unfinished offset move paused stays at 0 (its recovery resumes it
        // to the journaled count): bringing it to its minimum would give the group
        // members before the commit.
        let held = match &config.remediation {
            Some(rc) => crate::remediate::offsets::procedure::held_scale_targets(&crate::remediate::executor::offsets_files(rc).0),
            None => Vec::new(),
        };
        for name in &held {
            rt.hold_paused(name);
            tracing::warn!(target_name = %name, "scale target held at 0: an unfinished offset move paused it");
        }
        for (pool, target) in rt.pools().into_iter().zip(config.scale.iter().filter(|t| matches!(t.actuator, crate::scale::config::ActuatorConfig::Process(_)))) {
            let p = pool.clone();
            let tok = cancel.child_token();
            supervisor.spawn("scale_pool", format!("scale_pool {}", target.name), tok.clone(), move || Some(p.clone().supervise(tok.clone())));
            if held.contains(&target.name) {
                continue;
            }
            let req = crate::scale::actuators::ScaleRequest { target: target.name.clone(), from: None, to: target.constraints.min_replicas, policy: "start".into(), why: "min_replicas at start".into(), dry_run: false };
            if let Err(e) = crate::scale::actuators::Actuator::scale_to(&pool, &req).await {
                // Visible in the pool status and its exit metric; the supervisor retries.
                tracing::error!(target_name = %target.name, error = %e, "cannot start the scaled consumer pool");
            }
        }
        {
            // Ends expired scale-out blocks (and their metric) even when no run asks.
            let (rt, tok) = (rt.clone(), cancel.child_token());
            supervisor.spawn("scale_tick", "scale_tick".to_string(), tok.clone(), move || Some(scale_tick(rt.clone(), tok.clone())));
        }
        if let Some(r) = &remediation {
            r.set_scale(rt.clone());
        }
        scale = Some(rt);
        tracing::info!(targets = config.scale.len(), "scale targets on");
    }
    if let (Some(r), Some(rc), Some(rx)) = (&remediation, &config.remediation, verdicts) {
        r.recover().await;
        let (rem, rx, token) = (r.clone(), Arc::new(tokio::sync::Mutex::new(rx)), cancel.child_token());
        supervisor.spawn("remediate", "remediate".to_string(), token, move || Some(rem.clone().run(rx.clone())));
        tracing::info!(journal = %rc.journal.display(), audit = %rc.audit.display(), default_mode = %rc.default_mode, "remediation on");
    }
    let app = router(AppState { store, metrics, rules, tasks: supervisor.health(), remediation, scale });
    let server_cancel = cancel.child_token();
    let server = tracker.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_cancel.cancelled().await })
            .await
    });
    tracker.close();

    cancel.cancelled().await;
    tracing::info!(grace = ?SHUTDOWN_GRACE, "shutting down");
    // Tasks get the grace minus what the runtime's own shutdown keeps (main); a task
    // still running then is dropped at its next .await, a blocking call abandoned.
    let tasks_grace = SHUTDOWN_GRACE.saturating_sub(RUNTIME_SHUTDOWN + Duration::from_millis(500));
    let finished = tokio::time::timeout(tasks_grace, tracker.wait()).await.is_ok();
    if !finished {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "shutdown grace exceeded: background tasks cut short");
    }
    for (what, running) in in_flight.running() {
        tracing::warn!(call = %what, running_for = ?running, "shutdown cut short a blocking call still in flight; its result is discarded");
    }
    if !finished {
        return Ok(());
    }
    match server.await {
        Ok(Err(e)) => Err(AgentError::Serve(e)),
        _ => Ok(()),
    }
}

/// One source's sampling loop: its own schedule, timeout and backoff.
async fn source_loop(
    mut source: Source,
    name: String,
    sched: Schedule,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    in_flight: Arc<InFlight>,
) {
    let kind = source.kind();
    // Samplers enforce their own deadline; this outer one only catches a call that does
    // not return, so a stuck call can never stall the loop.
    let hard_timeout = sched.timeout + Duration::from_secs(2);
    let mut failures = 0u32;
    let mut partial_before = false;
    let mut delay = Duration::ZERO;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        let due = Instant::now();
        // A Kafka cycle waits for the rule evaluations running (a quarter of its interval
        // at most), and the ones that start meanwhile wait for it (see store::turns).
        let turn = match kind {
            SourceKind::Kafka => {
                let turn = tokio::select! {
                    _ = cancel.cancelled() => break,
                    t = store.turns().sample(sched.interval / 4) => t,
                };
                metrics.count_turn_wait(kind, &name, due.elapsed().as_secs_f64());
                turn
            }
            _ => None,
        };
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = cancel.cancelled() => break,
            r = source.run_once(&name, &store, hard_timeout, &in_flight) => r,
        };
        drop(turn);
        match outcome {
            Ok(Cycle::Sampled { series, partial }) => {
                SampleSucceeded { kind, source: &name, seconds: started.elapsed().as_secs_f64(), series, recovered_after: failures }
                    .emit(&metrics);
                failures = 0;
                if !partial.causes.is_empty() || partial_before {
                    SamplePartial { kind, source: &name, causes: &partial.causes, first: partial.first.as_deref(), was_partial: partial_before }
                        .emit(&metrics);
                }
                partial_before = !partial.causes.is_empty();
            }
            Ok(Cycle::Skipped) => {
                SampleSkipped { kind, source: &name }.emit(&metrics);
            }
            Err(f) => {
                failures = store.record_failure(kind, &name, SystemTime::now(), f.error.to_string());
                SampleFailed { kind, source: &name, error_kind: f.kind, error: f.error.as_ref(), consecutive_failures: failures }
                    .emit(&metrics);
            }
        }
        delay = next_delay(sched.interval, due.elapsed(), failures, sched.backoff_max);
    }
    tracing::debug!(kind = kind.as_str(), source = %name, "sampling loop stopped");
}

/// Steps the scale targets' clocks every second (see `ScaleRuntime::tick`).
async fn scale_tick(rt: Arc<crate::scale::runtime::ScaleRuntime>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => rt.tick(std::time::SystemTime::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// Storing a Kafka sample waits for the store's write lock while a reader holds it
    /// (a rule evaluation, a scrape's copy), and then derives for about a second at
    /// scale: neither may stop the runtime's other tasks. On a one-thread runtime a
    /// ticker must keep ticking while the store is read-locked by another thread (it
    /// did not tick at all when this ran inline on the async task).
    #[test]
    fn storing_a_kafka_sample_never_blocks_the_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = Arc::new(Store::default());
        store.register(SourceKind::Kafka, "c", S(3600));
        let snapshot = crate::sample::kafka_snapshot::build_snapshot("c", &[], &[], &[], &Default::default(), &Default::default());
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        // Holds the store's read lock until the runtime has ticked 5 times, or for 10 s:
        // the ticks it saw while holding it. (A count of ticks in a fixed time would
        // depend on how loaded the machine is.)
        let reader = {
            let (store, ticks) = (store.clone(), ticks.clone());
            std::thread::spawn(move || {
                store.with_entries(|_| {
                    let _ = locked_tx.send(());
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while ticks.load(std::sync::atomic::Ordering::Relaxed) < 5 && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    ticks.load(std::sync::atomic::Ordering::Relaxed)
                })
            })
        };
        locked_rx.recv().unwrap();
        let n = rt.block_on(async {
            let ticker = {
                let ticks = ticks.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            };
            // Let the ticker start, then store while the reader holds the lock.
            tokio::task::yield_now().await;
            let (n, _, _) = store_kafka(store.clone(), "c".into(), snapshot, Default::default(), ()).await.unwrap();
            ticker.abort();
            n
        });
        let ticked = reader.join().unwrap();
        assert!(ticked >= 5, "the runtime ticked {ticked} times while the store was locked (10 s at most)");
        assert!(store.health().iter().any(|h| h.name == "c" && h.last_success.is_some()), "the sample was stored ({n} series)");
    }

    /// A Kafka cycle waits for the rule evaluations running (see store::turns), a
    /// quarter of its interval at most, then samples beside them; the wait is counted
    /// per source. (The cluster is a closed port on loopback: the attempt fails, after
    /// the wait.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kafka_cycle_waits_for_running_evaluations_a_bounded_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("streamguard.toml");
        std::fs::write(&path, "[[clusters]]\nname = \"c\"\nbootstrap_servers = \"127.0.0.1:9\"\nsample_interval = \"4s\"\nsample_timeout = \"1s\"\n").unwrap();
        let mut config = crate::config::load(&path).unwrap();
        let spec = SourceSpec::Kafka(config.clusters.remove(0));
        let source = spec.build().unwrap();
        let store = Arc::new(Store::default());
        store.register(SourceKind::Kafka, "c", S(3600));
        let rules = Arc::new(crate::evaluate::Rules::load(crate::config::RulesConfig::for_tests(), Default::default()).unwrap());
        let metrics = Arc::new(Metrics::new(store.clone(), rules));
        let evaluation = store.turns().evaluation(S(1)).await;
        assert!(evaluation.is_some());
        let (cancel, in_flight) = (CancellationToken::new(), Arc::new(InFlight::default()));
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(source_loop(source, "c".into(), spec.schedule(), store.clone(), metrics.clone(), cancel.clone(), in_flight.clone()));
        // Started: the blocking call is in flight, or it already failed.
        let attempted = || !in_flight.running().is_empty() || store.health().iter().any(|h| h.name == "c" && h.consecutive_failures > 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!attempted(), "sampled beside a running evaluation");
        while !attempted() {
            assert!(started.elapsed() < S(30), "the cycle waited for ever");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(started.elapsed() >= S(1), "went ahead before a quarter of its interval");
        let text = metrics.encode(crate::telemetry::metrics::Format::Prometheus).unwrap();
        let waited: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("streamguard_sample_turn_wait_seconds_total{kind=\"kafka\",source=\"c\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no wait counted in {text}"));
        assert!(waited >= 0.9, "counted {waited} s");
        drop(evaluation);
        cancel.cancel();
        task.await.unwrap();
    }

    #[test]
    fn steady_state_keeps_a_fixed_rate() {
        assert_eq!(next_delay(S(10), Duration::from_millis(300), 0, S(60)), Duration::from_millis(9_700));
        assert_eq!(next_delay(S(10), S(12), 0, S(60)), Duration::ZERO);
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let d: Vec<u64> = (1..=6).map(|f| next_delay(S(5), Duration::ZERO, f, S(30)).as_secs()).collect();
        assert_eq!(d, vec![5, 10, 20, 30, 30, 30]);
        // A cap below the interval never makes sampling faster than the interval.
        assert_eq!(next_delay(S(10), Duration::ZERO, 3, S(1)), S(10));
        // Huge failure counts do not overflow.
        assert_eq!(next_delay(S(10), Duration::ZERO, u32::MAX, S(60)), S(60));
    }
}

