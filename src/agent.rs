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

use crate::config::{ClusterConfig, Config};
use crate::events::{SampleFailed, SampleSkipped, SampleSucceeded};
use crate::sample::kafka::{KafkaSampler, KafkaSnapshot, SampleError};
use crate::sample::kafka_admin::AdminError;
use crate::serve::metrics::Metrics;
use crate::serve::{router, AppState};
use crate::store::{SourceKind, Store};

/// How long shutdown waits for loops and in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the agent could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cluster {cluster}: {source}")]
    Client {
        cluster: String,
        #[source]
        source: AdminError,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
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

/// Runs until `cancel` fires. Binds the HTTP listener first so a port conflict fails fast.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), AgentError> {
    let store = Arc::new(Store::default());
    let metrics = Arc::new(Metrics::new(store.clone()));
    let mut samplers = Vec::new();
    for c in &config.clusters {
        let sampler = KafkaSampler::new(c).map_err(|source| AgentError::Client { cluster: c.name.clone(), source })?;
        store.register(SourceKind::Kafka, &c.name, c.stale_after());
        samplers.push((Arc::new(sampler), c.clone()));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Bind { addr: config.listen, source })?;
    let local = listener.local_addr().map_err(AgentError::Serve)?;
    tracing::info!(listen = %local, clusters = config.clusters.len(), "streamguard agent started");

    let tracker = TaskTracker::new();
    for (sampler, cluster) in samplers {
        tracker.spawn(kafka_loop(sampler, cluster, store.clone(), metrics.clone(), cancel.child_token()));
    }
    let app = router(AppState { store, metrics });
    let server_cancel = cancel.child_token();
    let server = tracker.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_cancel.cancelled().await })
            .await
    });
    tracker.close();

    cancel.cancelled().await;
    tracing::info!("shutting down");
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "shutdown grace period exceeded; exiting anyway");
        return Ok(());
    }
    match server.await {
        Ok(Err(e)) => Err(AgentError::Serve(e)),
        _ => Ok(()),
    }
}

/// One cluster's sampling loop.
async fn kafka_loop(
    sampler: Arc<KafkaSampler>,
    cfg: ClusterConfig,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let name = cfg.name.clone();
    let kind = SourceKind::Kafka;
    // The sampler enforces its own deadline; this outer one only catches a call that
    // does not return (it should not happen, but a stuck C call must not stall the loop).
    let hard_timeout = cfg.sample_timeout + Duration::from_secs(2);
    let mut pending: Option<JoinHandle<Result<KafkaSnapshot, SampleError>>> = None;
    let mut failures = 0u32;
    let mut delay = Duration::ZERO;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        let started = Instant::now();
        let handle = match pending.take() {
            Some(h) if !h.is_finished() => {
                SampleSkipped { kind, source: &name }.emit(&metrics);
                pending = Some(h);
                delay = cfg.sample_interval;
                continue;
            }
            _ => {
                let s = sampler.clone();
                tokio::task::spawn_blocking(move || s.sample())
            }
        };
        let mut handle = handle;
        let outcome = tokio::select! {
            _ = cancel.cancelled() => break,
            r = tokio::time::timeout(hard_timeout, &mut handle) => r,
        };
        let now = SystemTime::now();
        match outcome {
            Ok(Ok(Ok(snapshot))) => {
                let groups = snapshot.groups.len();
                for e in &snapshot.partial_errors {
                    tracing::debug!(source = %name, error = %e, "partial sample error");
                }
                store.record_success(kind, &name, now, snapshot);
                SampleSucceeded { kind, source: &name, seconds: started.elapsed().as_secs_f64(), groups, recovered_after: failures }
                    .emit(&metrics);
                failures = 0;
            }
            Ok(Ok(Err(e))) => {
                failures = store.record_failure(kind, &name, now, e.to_string());
                SampleFailed { kind, source: &name, error_kind: e.kind(), error: &e, consecutive_failures: failures }.emit(&metrics);
            }
            Ok(Err(join)) => {
                failures = store.record_failure(kind, &name, now, join.to_string());
                SampleFailed { kind, source: &name, error_kind: "panic", error: &join, consecutive_failures: failures }.emit(&metrics);
            }
            Err(elapsed) => {
                pending = Some(handle);
                failures = store.record_failure(kind, &name, now, format!("sample did not return within {hard_timeout:?}"));
                SampleFailed { kind, source: &name, error_kind: "timeout", error: &elapsed, consecutive_failures: failures }.emit(&metrics);
            }
        }
        delay = next_delay(cfg.sample_interval, started.elapsed(), failures, cfg.backoff_max);
    }
    tracing::debug!(source = %name, "sampling loop stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

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
