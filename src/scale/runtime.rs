//! The scaling targets at run time: each target's actuator, its policy history and its
//! ineffective-scale state, and [`ScaleRuntime::scale`], which a runbook `scale` step
//! calls: read the group's signals (with their quality, through the caller's reader), decide with the
//! pure policy, act through the actuator, and after a scale-out watch the consume rate
//! for the detector's verification window (rolling back an ineffective scale-out).
//!
//! # Guarantees
//! - Decisions come only from [`super::policy::decide`]: stale or missing signals, a
//!   rebalancing group, the min interval, the stabilization window and an active
//!   scale-out block all hold, with their reason, and nothing is sent.
//! - A dry run decides and reports exactly as a real run, records the recommendation
//!   (for the stabilization window) but not a change, and sends nothing.
//! - One scale at a time per target (a per-target async lock), so two runs never race
//!   on the same count.
//!
//! # Not done here
//! Journaling, auditing and escalation (the remediation executor's job); the measured
//! rebalance duration (no signal carries it yet: the min interval applies alone).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::actuators::command::CommandActuator;
use super::actuators::kubernetes::KubernetesActuator;
use super::actuators::process::{PoolMetrics, ProcessPool};
use super::actuators::{Actuator, ActuatorError, ScaleOutcome, ScaleRequest};
use super::config::{ActuatorConfig, PolicyConfig, ScaleTarget};
use super::effectiveness::{self, Change, Finding};
use super::lag_policy::{self, PartitionOffsets};
use super::policy::{decide, Context, Decision, Estimate, GroupState, History, HoldReason, Reading};
use super::throughput_policy::{self, ThroughputInputs};
use crate::signal::Quality;

/// What a `scale` step asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleTo {
    /// The target's policy decides.
    Policy,
    /// Back to the count before the last change (a rollback step).
    Previous,
    /// A fixed count (bounded by min/max).
    Count(u32),
}

/// What a scale step did, for the audit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaleReport {
    pub target: String,
    pub decision: Decision,
    pub inputs: Option<ThroughputInputs>,
    pub outcome: Option<ScaleOutcome>,
    pub finding: Option<Finding>,
    pub dry_run: bool,
}

impl ScaleReport {
    /// The one-line why, with the detector's finding.
    pub fn why(&self) -> String {
        match &self.finding {
            Some(Finding::Effective { why, .. } | Finding::Inconclusive { why, .. }) => format!("{}; {why}", self.decision.why()),
            _ => self.decision.why().to_string(),
        }
    }
}

/// Why a scale step did not do what it was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScaleError {
    #[error("no scale target {0:?}")]
    UnknownTarget(String),
    #[error("{0}")]
    Actuator(#[from] ActuatorError),
    #[error("{target}: current replica count unknown")]
    UnknownCurrent { target: String },
    /// The policy held for a reason that means the step did not happen.
    #[error("{why}")]
    Held { reason: HoldReason, why: String, report: Box<ScaleReport> },
    #[error("{why}")]
    Ineffective { why: String, report: Box<ScaleReport> },
    #[error("{target}: no previous replica count to return to")]
    NoPrevious { target: String },
    /// Paused for an offset move ([`ScaleRuntime::pause`]): the policy does not scale it
    /// until the move's resume.
    #[error("{target}: paused for an offset move; not scaled until it is resumed")]
    Paused { target: String },
}

#[derive(Debug, Default)]
struct TargetState {
    history: History,
    effect: Option<effectiveness::State>,
    /// The last change made: (from, to).
    last_change: Option<(u32, u32)>,
    /// Paused for an offset move (see [`ScaleRuntime::pause`]).
    paused: bool,
}

struct Target {
    cfg: ScaleTarget,
    actuator: Arc<dyn Actuator>,
    pool: Option<ProcessPool>,
    state: Mutex<TargetState>,
    busy: tokio::sync::Mutex<()>,
}

/// Every configured scaling target.
pub struct ScaleRuntime {
    targets: Vec<Target>,
    /// How often the detector looks at the consume rate while verifying.
    pub verify_poll: Duration,
}

impl std::fmt::Debug for ScaleRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.targets.iter().map(|t| &t.cfg.name)).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The group's readings in the store at `now`.
#[derive(Debug, Clone, Default)]
pub struct GroupReadings {
    pub produce_rate: Option<Reading>,
    pub consume_rate: Option<Reading>,
    pub lag: Option<Reading>,
    pub group_state: Option<GroupState>,
    pub partitions: Vec<PartitionOffsets>,
}

fn missing(now: SystemTime) -> Reading {
    Reading { value: f64::NAN, quality: Quality::Missing, at: now }
}

impl ScaleRuntime {
    /// Builds every target's actuator (a bad kubeconfig fails here, at startup).
    pub fn new(targets: &[ScaleTarget], metrics: &PoolMetrics) -> Result<ScaleRuntime, (String, ActuatorError)> {
        let mut out = Vec::new();
        for t in targets {
            let err = |e| (t.name.clone(), e);
            let (actuator, pool): (Arc<dyn Actuator>, Option<ProcessPool>) = match &t.actuator {
                ActuatorConfig::Process(p) => {
                    let pool = ProcessPool::new(&t.name, p.clone(), metrics.clone()).map_err(err)?;
                    (Arc::new(pool.clone()), Some(pool))
                }
                ActuatorConfig::Kubernetes(k) => (Arc::new(KubernetesActuator::new(k.clone()).map_err(err)?), None),
                ActuatorConfig::Command(c) => (Arc::new(CommandActuator::new(c.clone()).map_err(err)?), None),
            };
            out.push(Target { cfg: t.clone(), actuator, pool, state: Mutex::default(), busy: tokio::sync::Mutex::new(()) });
        }
        Ok(ScaleRuntime { targets: out, verify_poll: Duration::from_secs(2) })
    }

    /// The process pools, to supervise.
    pub fn pools(&self) -> Vec<ProcessPool> {
        self.targets.iter().filter_map(|t| t.pool.clone()).collect()
    }

    /// A target by name, else the one watching `group` (on `cluster` if given).
    pub fn resolve(&self, name: Option<&str>, cluster: Option<&str>, group: Option<&str>) -> Option<&str> {
        let t = match name {
            Some(n) => self.targets.iter().find(|t| t.cfg.name == n),
            None => self.targets.iter().find(|t| group == Some(t.cfg.group.as_str()) && (cluster.is_none() || cluster == t.cfg.cluster.as_deref())),
        };
        t.map(|t| t.cfg.name.as_str())
    }

    fn target(&self, name: &str) -> Result<&Target, ScaleError> {
        self.targets.iter().find(|t| t.cfg.name == name).ok_or_else(|| ScaleError::UnknownTarget(name.to_string()))
    }

    /// The pool status of a `process` target (for the target's detail).
    pub fn pool_status(&self, name: &str) -> Option<super::actuators::process::PoolStatus> {
        self.target(name).ok()?.pool.as_ref().map(|p| p.status())
    }

    /// Until when scale-outs of `name` are blocked, if they are.
    pub fn blocked_until(&self, name: &str, now: SystemTime) -> Option<SystemTime> {
        let t = self.target(name).ok()?;
        let st = lock(&t.state);
        st.effect.as_ref().and_then(|e| effectiveness::scale_out_blocked_until(e, now))
    }

    /// The target's current replica count (`None`: the actuator cannot tell).
    pub async fn current(&self, name: &str) -> Result<Option<u32>, ScaleError> {
        Ok(self.target(name)?.actuator.current().await?)
    }

    /// Marks `name` paused without acting (at start, for a target an unfinished offset
    /// move left at 0: it is not brought to its minimum, and the policy leaves it alone
    /// until the move's resume).
    pub fn hold_paused(&self, name: &str) -> bool {
        self.target(name).map(|t| lock(&t.state).paused = true).is_ok()
    }

    /// Whether `name` is paused for an offset move.
    pub fn is_paused(&self, name: &str) -> bool {
        self.target(name).is_ok_and(|t| lock(&t.state).paused)
    }

    /// Pause for an offset move: scale to 0 through the actuator (idempotent) and hold
    /// the policy off until [`ScaleRuntime::resume`]. The caller keeps the count to
    /// return to (it reads [`ScaleRuntime::current`] first and journals it).
    pub async fn pause(&self, name: &str, why: &str) -> Result<ScaleOutcome, ScaleError> {
        let t = self.target(name)?;
        let _busy = t.busy.lock().await;
        lock(&t.state).paused = true;
        let req = ScaleRequest { target: name.to_string(), from: None, to: 0, policy: "pause".into(), why: why.to_string(), dry_run: false };
        Ok(t.actuator.scale_to(&req).await?)
    }

    /// Resume after an offset move: back to `replicas` (idempotent), the policy free again.
    pub async fn resume(&self, name: &str, replicas: u32, why: &str) -> Result<ScaleOutcome, ScaleError> {
        let t = self.target(name)?;
        let _busy = t.busy.lock().await;
        let req = ScaleRequest { target: name.to_string(), from: None, to: replicas, policy: "resume".into(), why: why.to_string(), dry_run: false };
        let out = t.actuator.scale_to(&req).await?;
        lock(&t.state).paused = false;
        Ok(out)
    }

    /// Decides and (unless `dry_run`) acts; see the module doc.
    /// `read(now)` returns the target's group readings (the caller reads its store).
    pub async fn scale(&self, name: &str, to: ScaleTo, read: &(dyn Fn(&ScaleTarget, SystemTime) -> GroupReadings + Sync), dry_run: bool) -> Result<ScaleReport, ScaleError> {
        let t = self.target(name)?;
        let _busy = t.busy.lock().await;
        if lock(&t.state).paused {
            return Err(ScaleError::Paused { target: name.to_string() });
        }
        let cfg = &t.cfg;
        let now = SystemTime::now();
        let current = t.actuator.current().await?.ok_or_else(|| ScaleError::UnknownCurrent { target: name.to_string() })?;
        let r = read(cfg, now);
        let inputs = ThroughputInputs {
            produce_rate: r.produce_rate.unwrap_or_else(|| missing(now)),
            consume_rate: r.consume_rate.unwrap_or_else(|| missing(now)),
            lag: r.lag.unwrap_or_else(|| missing(now)),
        };
        let (estimate, used): (Estimate, Vec<Reading>) = match (to, &cfg.policy) {
            (ScaleTo::Policy, PolicyConfig::Throughput(p)) => (throughput_policy::estimate(&inputs, current, p), inputs.readings().to_vec()),
            (ScaleTo::Policy, PolicyConfig::Lag(p)) => (lag_policy::estimate(&r.partitions, p, cfg.constraints.min_replicas), vec![inputs.lag]),
            (ScaleTo::Count(n), _) => (Estimate::Replicas { raw: n, formula: format!("set to {n} by the runbook") }, vec![]),
            (ScaleTo::Previous, _) => {
                let prev = lock(&t.state).last_change.map(|(from, _)| from).ok_or_else(|| ScaleError::NoPrevious { target: name.to_string() })?;
                (Estimate::Replicas { raw: prev, formula: format!("back to the previous count {prev}") }, vec![])
            }
        };
        let (blocked, history) = {
            let st = lock(&t.state);
            (st.effect.as_ref().and_then(|e| effectiveness::scale_out_blocked_until(e, now)), st.history.clone())
        };
        let ctx = Context { current, partitions: (!r.partitions.is_empty()).then_some(r.partitions.len() as u32), group_state: r.group_state.unwrap_or(GroupState::Unknown), last_rebalance: None, scale_out_blocked_until: blocked };
        // A rollback or a fixed count is the runbook's explicit order: only bounds, the
        // step limit and the data guards apply, not the interval or the stabilization.
        let mut constraints = cfg.constraints.clone();
        if to != ScaleTo::Policy {
            constraints.min_interval = Duration::ZERO;
            constraints.scale_down_stabilization = Duration::ZERO;
            constraints.max_step = u32::MAX;
        }
        let (decision, mut next) = decide(&estimate, &used, &ctx, &constraints, &history, now);
        if dry_run {
            next.last_change = history.last_change;
        }
        lock(&t.state).history = next;
        let mut report = ScaleReport { target: name.to_string(), decision: decision.clone(), inputs: Some(inputs), outcome: None, finding: None, dry_run };
        let Decision::Scale { from, to: n, .. } = decision else {
            let Decision::Hold { reason, why, .. } = decision else { unreachable!() };
            return match reason {
                HoldReason::AtDesired | HoldReason::Stabilizing => Ok(report),
                _ => Err(ScaleError::Held { reason, why, report: Box::new(report) }),
            };
        };
        let policy = match to {
            ScaleTo::Policy => match cfg.policy {
                PolicyConfig::Lag(_) => "lag",
                PolicyConfig::Throughput(_) => "throughput",
            },
            ScaleTo::Previous => "rollback",
            ScaleTo::Count(_) => "fixed",
        };
        let req = ScaleRequest { target: name.to_string(), from: Some(from), to: n, policy: policy.to_string(), why: decision.why().to_string(), dry_run };
        report.outcome = Some(t.actuator.scale_to(&req).await?);
        if dry_run {
            return Ok(report);
        }
        lock(&t.state).last_change = Some((from, n));
        let change = Change::Scaled { from, to: n };
        let state = lock(&t.state).effect.take().unwrap_or(effectiveness::State::Idle);
        let (mut state, finding) = effectiveness::step(&state, change, inputs.consume_rate.quality.eq(&Quality::Fresh).then_some(&inputs.consume_rate), None, &cfg.effectiveness, now);
        if finding.is_some() || n <= from {
            report.finding = finding;
            lock(&t.state).effect = Some(state);
            return Ok(report);
        }
        // Verify the scale-out: watch the consume rate until the detector decides.
        loop {
            tokio::time::sleep(self.verify_poll).await;
            let now = SystemTime::now();
            let rate = read(cfg, now).consume_rate;
            let (s, f) = effectiveness::step(&state, Change::None, None, rate.as_ref(), &cfg.effectiveness, now);
            state = s;
            let Some(f) = f else { continue };
            report.finding = Some(f.clone());
            if let Finding::Ineffective { why, .. } = &f {
                lock(&t.state).effect = Some(state);
                let back = ScaleRequest { target: name.to_string(), from: Some(n), to: from, policy: "rollback".into(), why: why.clone(), dry_run: false };
                let rolled = t.actuator.scale_to(&back).await;
                lock(&t.state).last_change = Some((n, from));
                let why = match rolled {
                    Ok(_) => why.clone(),
                    Err(e) => format!("{why}; the rollback failed: {e}"),
                };
                return Err(ScaleError::Ineffective { why, report: Box::new(report) });
            }
            lock(&t.state).effect = Some(state);
            return Ok(report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::config::{RawScaleTarget, validate};

    /// A target whose `command` actuator appends every request to `log` (a real program).
    fn runtime(log: &std::path::Path, policy: serde_json::Value) -> ScaleRuntime {
        let raw: RawScaleTarget = serde_json::from_value(serde_json::json!({
            "name": "t", "group": "g", "topic": "x", "min_replicas": 1, "max_replicas": 8, "min_interval": "0s",
            "max_data_age": "30s", "policy": policy,
            "effectiveness": {"min_rise": 0.2, "verify_within": "1s", "cooldown": "1h"},
            "actuator": {"type": "command", "command": ["sh", "-c", format!("cat >> {}; echo >> {}", log.display(), log.display())], "current_command": ["sh", "-c", "echo 2"]}
        }))
        .unwrap();
        let t = validate(&raw, "test", "scale[0]").unwrap();
        let mut rt = ScaleRuntime::new(&[t], &PoolMetrics::default()).unwrap();
        rt.verify_poll = Duration::from_millis(100);
        rt
    }

    fn readings(q: Quality, produce: f64, consume: f64, lag: f64) -> GroupReadings {
        let at = SystemTime::now();
        GroupReadings {
            produce_rate: Some(Reading { value: produce, quality: q, at }),
            consume_rate: Some(Reading { value: consume, quality: q, at }),
            lag: Some(Reading { value: lag, quality: q, at }),
            group_state: Some(GroupState::Stable),
            partitions: Vec::new(),
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    #[test]
    fn stale_or_missing_readings_never_reach_the_actuator() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests");
        let rt = runtime(&log, serde_json::json!({"type": "throughput", "catch_up_within": "1m"}));
        for r in [readings(Quality::Stale, 100.0, 10.0, 5000.0), readings(Quality::Missing, 100.0, 10.0, 5000.0), GroupReadings { group_state: Some(GroupState::Stable), ..GroupReadings::default() }] {
            let read = move |_: &ScaleTarget, _: SystemTime| r.clone();
            let e = block_on(rt.scale("t", ScaleTo::Policy, &read, false)).unwrap_err();
            let ScaleError::Held { reason, why, .. } = e else { panic!("{e:?}") };
            assert_eq!(reason, HoldReason::StaleData, "{why}");
            assert!(why.contains("stale data never scales"), "{why}");
        }
        assert!(!log.exists(), "the actuator was never called");
    }

    #[test]
    fn a_fresh_decision_reaches_the_command_with_its_why_and_an_ineffective_one_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests");
        let rt = runtime(&log, serde_json::json!({"type": "throughput", "catch_up_within": "1m"}));
        // 2 replicas at 10/s each; 60/s produced + 1200/60 s = 80/s → 8.
        let read = |_: &ScaleTarget, _: SystemTime| readings(Quality::Fresh, 60.0, 20.0, 1200.0);
        let e = block_on(rt.scale("t", ScaleTo::Policy, &read, false)).unwrap_err();
        // The rate never rose: rolled back to 2 and blocked.
        let ScaleError::Ineffective { why, report } = e else { panic!("{e:?}") };
        assert!(why.starts_with("scale-out ineffective: 2 → 6"), "max_step 4 from 2: {why}");
        assert_eq!(report.decision.target(), Some(6));
        let sent = std::fs::read_to_string(&log).unwrap();
        let reqs: Vec<serde_json::Value> = sent.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(reqs.len(), 2, "{sent}");
        assert_eq!((reqs[0]["to"].as_u64(), reqs[0]["policy"].as_str()), (Some(6), Some("throughput")));
        assert!(reqs[0]["why"].as_str().unwrap().contains("ceil((produce 60.0/s + lag 1200 / 1m) / per-consumer 10.0/s) = 8"), "{}", reqs[0]);
        assert_eq!((reqs[1]["to"].as_u64(), reqs[1]["policy"].as_str()), (Some(2), Some("rollback")));
        assert!(rt.blocked_until("t", SystemTime::now()).is_some());
        // Blocked now: the next policy decision holds and sends nothing.
        let e = block_on(rt.scale("t", ScaleTo::Policy, &read, false)).unwrap_err();
        assert!(matches!(e, ScaleError::Held { reason: HoldReason::ScaleOutBlocked, .. }), "{e:?}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), sent);
    }
}
