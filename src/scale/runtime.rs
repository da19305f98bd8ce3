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
//! - A dry run decides and reports exactly as a real run (the count the policy would
//!   choose, with its inputs), records the recommendation (for the stabilization window)
//!   but not a change, and never calls the actuator's `scale_to`.
//! - After every change the group's rebalance is watched ([`super::rebalance`]) until the
//!   group is seen stable with the new member count, or the verification window ends;
//!   the measured duration goes in the report, the metric and the target's status, and
//!   feeds the next decision's min interval (`rebalance_cost_factor ×` it).
//! - One scale at a time per target (a per-target async lock), so two runs never race
//!   on the same count.
//!
//! - Every decision, rebalance and scale-out block is visible: [`ScaleRuntime::status`]
//!   (the API) and [`super::status::ScaleMetrics`] (set with [`ScaleRuntime::with_metrics`]);
//!   [`ScaleRuntime::tick`] (the agent calls it every second) ends expired blocks.
//!
//! # Not done here
//! Journaling, auditing and escalation (the remediation executor's job).
//!
//! (Just over 600 lines: about 250 are tests, which need the private target state.)

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
use super::rebalance::{self, GroupSample, Settle, Watch};
use super::status::{LastDecision, ScaleMetrics, TargetStatus};
use super::throughput_policy::{self, ThroughputInputs};
use crate::signal::{unix_secs, Quality};

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
    /// The rebalance after the change (none for a hold or a dry run).
    pub rebalance: Option<Settle>,
    pub dry_run: bool,
}

impl ScaleReport {
    /// The one-line why, with the detector's finding and the measured rebalance.
    pub fn why(&self) -> String {
        let mut why = match &self.finding {
            Some(Finding::Effective { why, .. } | Finding::Inconclusive { why, .. }) => format!("{}; {why}", self.decision.why()),
            _ => self.decision.why().to_string(),
        };
        if self.dry_run {
            why = format!("dry-run, nothing sent: {why}");
        }
        if let Some(r) = &self.rebalance {
            why = format!("{why}; {}", r.why());
        }
        why
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
    /// Only for a dry run: a change of the target is in progress.
    #[error("{target}: a scale of this target is in progress")]
    Busy { target: String },
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
    /// The count last read from the actuator.
    current: Option<u32>,
    desired: Option<u32>,
    last_decision: Option<LastDecision>,
    /// The rebalance after the last change, and the last one measured.
    rebalance: Option<Settle>,
    last_rebalance: Option<Duration>,
    /// The detector's why, while scale-outs are blocked.
    ineffective_why: Option<String>,
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
    /// How often the detector looks at the consume rate (and the group's rebalance)
    /// after a change.
    pub verify_poll: Duration,
    metrics: ScaleMetrics,
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
    /// The group's member count (its time is the group sample's).
    pub members: Option<Reading>,
    pub partitions: Vec<PartitionOffsets>,
}

impl GroupReadings {
    /// The group as a fresh sample saw it, for the rebalance watcher.
    fn group_sample(&self) -> Option<GroupSample> {
        let m = self.members.filter(|m| m.quality == Quality::Fresh && m.value.is_finite() && m.value >= 0.0)?;
        Some(GroupSample { state: self.group_state?, members: Some(m.value as u32), at: m.at })
    }
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
        Ok(ScaleRuntime { targets: out, verify_poll: Duration::from_secs(2), metrics: ScaleMetrics::default() })
    }

    /// Reports decisions, rebalances and blocks in `metrics` (the agent's registry).
    pub fn with_metrics(mut self, metrics: ScaleMetrics) -> ScaleRuntime {
        for t in &self.targets {
            metrics.blocked(&t.cfg.name, None);
        }
        self.metrics = metrics;
        self
    }

    /// Ends expired scale-out blocks (with their metrics). Cheap; call it every second.
    pub fn tick(&self, now: SystemTime) {
        for t in &self.targets {
            let mut st = lock(&t.state);
            let Some(e @ effectiveness::State::Blocked { .. }) = st.effect.clone() else { continue };
            let (next, finding) = effectiveness::step(&e, Change::None, None, None, &t.cfg.effectiveness, now);
            if let Some(Finding::Unblocked { why }) = finding {
                tracing::info!(target_name = %t.cfg.name, why = %why, "scale-out block ended");
                st.ineffective_why = None;
                self.metrics.blocked(&t.cfg.name, None);
            }
            st.effect = Some(next);
        }
    }

    /// Every target's status, for the API.
    pub fn status(&self, now: SystemTime) -> Vec<TargetStatus> {
        self.targets
            .iter()
            .map(|t| {
                let st = lock(&t.state);
                let until = st.effect.as_ref().and_then(|e| effectiveness::scale_out_blocked_until(e, now));
                TargetStatus {
                    name: t.cfg.name.clone(),
                    cluster: t.cfg.cluster.clone(),
                    group: t.cfg.group.clone(),
                    topic: t.cfg.topic.clone(),
                    actuator: t.actuator.kind(),
                    policy: policy_name(&t.cfg.policy),
                    current_replicas: st.current,
                    desired_replicas: st.desired,
                    last_decision: st.last_decision.clone(),
                    scale_out_ineffective: until.is_some(),
                    scale_out_blocked_until: until.map(unix_secs),
                    ineffective_why: until.and(st.ineffective_why.clone()),
                    last_rebalance: st.rebalance.clone(),
                    pool: t.pool.as_ref().map(|p| p.status()),
                    paused_for_offset_move: st.paused,
                }
            })
            .collect()
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
        // A dry run never waits behind a real change (the executor previews while it
        // plans, and a scale-out's verification can take minutes).
        let _busy = match dry_run {
            true => t.busy.try_lock().map_err(|_| ScaleError::Busy { target: name.to_string() })?,
            false => t.busy.lock().await,
        };
        if lock(&t.state).paused {
            return Err(ScaleError::Paused { target: name.to_string() });
        }
        let cfg = &t.cfg;
        let now = SystemTime::now();
        let current = t.actuator.current().await?;
        lock(&t.state).current = current;
        let current = current.ok_or_else(|| ScaleError::UnknownCurrent { target: name.to_string() })?;
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
        let (blocked, history, last_rebalance) = {
            let st = lock(&t.state);
            (st.effect.as_ref().and_then(|e| effectiveness::scale_out_blocked_until(e, now)), st.history.clone(), st.last_rebalance)
        };
        let ctx = Context { current, partitions: (!r.partitions.is_empty()).then_some(r.partitions.len() as u32), group_state: r.group_state.unwrap_or(GroupState::Unknown), last_rebalance, scale_out_blocked_until: blocked };
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
        let policy = match to {
            ScaleTo::Policy => policy_name(&cfg.policy),
            ScaleTo::Previous => "rollback",
            ScaleTo::Count(_) => "fixed",
        };
        self.record_decision(t, &decision, dry_run, policy, next, now);
        let mut report = ScaleReport { target: name.to_string(), decision: decision.clone(), inputs: Some(inputs), outcome: None, finding: None, rebalance: None, dry_run };
        let Decision::Scale { from, to: n, .. } = decision else {
            let Decision::Hold { reason, why, .. } = decision else { unreachable!() };
            return match reason {
                HoldReason::AtDesired | HoldReason::Stabilizing => Ok(report),
                _ => Err(ScaleError::Held { reason, why, report: Box::new(report) }),
            };
        };
        if dry_run {
            return Ok(report);
        }
        let req = ScaleRequest { target: name.to_string(), from: Some(from), to: n, policy: policy.to_string(), why: decision.why().to_string(), dry_run };
        report.outcome = Some(t.actuator.scale_to(&req).await?);
        let changed = SystemTime::now();
        {
            let mut st = lock(&t.state);
            st.last_change = Some((from, n));
            st.current = Some(n);
            st.rebalance = Some(Settle::Pending);
        }
        let watch = Watch { from, to: n, since: changed };
        let prior = lock(&t.state).effect.take().unwrap_or(effectiveness::State::Idle);
        let (mut state, finding) = effectiveness::step(&prior, Change::Scaled { from, to: n }, inputs.consume_rate.quality.eq(&Quality::Fresh).then_some(&inputs.consume_rate), None, &cfg.effectiveness, changed);
        report.finding = finding;
        // Watch the rebalance (every change) and, after a scale-out, the consume rate,
        // until both are decided.
        let mut settle = Settle::Pending;
        let mut verifying = matches!(state, effectiveness::State::Verifying { .. });
        loop {
            if settle == Settle::Pending {
                let now = SystemTime::now();
                settle = rebalance::observe(&watch, read(cfg, now).group_sample().as_ref(), now, cfg.effectiveness.verify_within);
                if settle != Settle::Pending {
                    self.record_rebalance(t, &settle);
                    report.rebalance = Some(settle.clone());
                }
            }
            if !verifying && settle != Settle::Pending {
                lock(&t.state).effect = Some(state);
                return Ok(report);
            }
            tokio::time::sleep(self.verify_poll).await;
            if !verifying {
                continue;
            }
            let now = SystemTime::now();
            let rate = read(cfg, now).consume_rate;
            let (s, f) = effectiveness::step(&state, Change::None, None, rate.as_ref(), &cfg.effectiveness, now);
            state = s;
            let Some(f) = f else { continue };
            verifying = false;
            report.finding = Some(f.clone());
            if let Finding::Ineffective { why, .. } = &f {
                if settle == Settle::Pending {
                    settle = rebalance::observe(&watch, None, now, Duration::ZERO);
                    self.record_rebalance(t, &settle);
                    report.rebalance = Some(settle);
                }
                let until = effectiveness::scale_out_blocked_until(&state, now);
                {
                    let mut st = lock(&t.state);
                    st.effect = Some(state);
                    st.ineffective_why = Some(why.clone());
                }
                self.metrics.blocked(name, until.map(unix_secs));
                let back = ScaleRequest { target: name.to_string(), from: Some(n), to: from, policy: "rollback".into(), why: why.clone(), dry_run: false };
                let rolled = t.actuator.scale_to(&back).await;
                {
                    let mut st = lock(&t.state);
                    st.last_change = Some((n, from));
                    if rolled.is_ok() {
                        self.metrics.decision(name, "scale", "rollback");
                        st.current = Some(from);
                    }
                }
                let why = match rolled {
                    Ok(_) => why.clone(),
                    Err(e) => format!("{why}; the rollback failed: {e}"),
                };
                return Err(ScaleError::Ineffective { why, report: Box::new(report) });
            }
        }
    }

    fn record_decision(&self, t: &Target, d: &Decision, dry_run: bool, policy: &'static str, next: History, now: SystemTime) {
        let c = &t.cfg.constraints;
        let (label, reason, desired) = match d {
            Decision::Scale { to, .. } => (if dry_run { "dry_run" } else { "scale" }, policy, Some(*to)),
            Decision::Hold { reason, raw, .. } => ("hold", reason.as_str(), raw.map(|r| r.clamp(c.min_replicas, c.max_replicas))),
        };
        self.metrics.decision(&t.cfg.name, label, reason);
        let mut st = lock(&t.state);
        st.history = next;
        st.desired = desired;
        st.last_decision = Some(LastDecision { decision: d.clone(), dry_run, at: unix_secs(now) });
    }

    fn record_rebalance(&self, t: &Target, s: &Settle) {
        self.metrics.rebalance(&t.cfg.name, s);
        let mut st = lock(&t.state);
        if let Settle::Settled { seconds, .. } = s {
            st.last_rebalance = Some(Duration::from_secs_f64(*seconds));
        }
        st.rebalance = Some(s.clone());
    }
}

fn policy_name(p: &PolicyConfig) -> &'static str {
    match p {
        PolicyConfig::Lag(_) => "lag",
        PolicyConfig::Throughput(_) => "throughput",
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
            members: None,
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
        // "Scale-out ineffective" is its own signal: the metric, the block's end, the status.
        assert_eq!(rt.metrics.ineffective.get_or_create(&ScaleMetrics::target("t")).get(), 1);
        assert!(rt.metrics.blocked_until.get_or_create(&ScaleMetrics::target("t")).get() > unix_secs(SystemTime::now()));
        let st = &rt.status(SystemTime::now())[0];
        assert!(st.scale_out_ineffective && st.scale_out_blocked_until.is_some(), "{st:?}");
        assert!(st.ineffective_why.as_deref().is_some_and(|w| w.starts_with("scale-out ineffective: 2 → 6")), "{st:?}");
        assert_eq!(st.current_replicas, Some(2), "rolled back");
        // The block ends after the cooldown (here: by stepping the clock past it).
        rt.tick(SystemTime::now() + Duration::from_secs(3601));
        assert_eq!(rt.metrics.ineffective.get_or_create(&ScaleMetrics::target("t")).get(), 0);
        assert!(!rt.status(SystemTime::now())[0].scale_out_ineffective);
        // Block again for the rest of the test.
        lock(&rt.target("t").unwrap().state).effect = Some(effectiveness::State::Blocked { from: 2, to: 6, until: SystemTime::now() + Duration::from_secs(3600) });
        // Blocked now: the next policy decision holds and sends nothing.
        let e = block_on(rt.scale("t", ScaleTo::Policy, &read, false)).unwrap_err();
        assert!(matches!(e, ScaleError::Held { reason: HoldReason::ScaleOutBlocked, .. }), "{e:?}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), sent);
    }

    #[test]
    fn a_dry_run_computes_the_count_with_its_inputs_and_never_calls_the_actuator() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests");
        let rt = runtime(&log, serde_json::json!({"type": "throughput", "catch_up_within": "1m"}));
        let read = |_: &ScaleTarget, _: SystemTime| readings(Quality::Fresh, 60.0, 20.0, 1200.0);
        let report = block_on(rt.scale("t", ScaleTo::Policy, &read, true)).unwrap();
        assert_eq!(report.decision.target(), Some(6));
        assert!(report.dry_run && report.outcome.is_none(), "{report:?}");
        let why = report.why();
        assert!(why.starts_with("dry-run, nothing sent: 2 → 6: ceil((produce 60.0/s + lag 1200 / 1m) / per-consumer 10.0/s) = 8"), "{why}");
        assert_eq!(report.inputs.unwrap().produce_rate.value, 60.0);
        assert!(!log.exists(), "a dry run never runs the actuator's program");
        let st = &rt.status(SystemTime::now())[0];
        assert_eq!((st.current_replicas, st.desired_replicas), (Some(2), Some(6)));
        assert!(st.last_decision.as_ref().is_some_and(|d| d.dry_run));
        assert_eq!(rt.metrics.decisions.get_or_create(&vec![("target", "t".into()), ("decision", "dry_run".into()), ("reason", "throughput".into())]).get(), 1);
    }

    #[test]
    fn the_rebalance_after_a_change_is_measured_shown_and_spaces_the_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests");
        let rt = runtime(&log, serde_json::json!({"type": "throughput", "catch_up_within": "1m"})).with_metrics(ScaleMetrics::default());
        // The group is seen stable with the new 4 members 0.3 s after the change
        // (the command's `current` says 2, the order is a fixed count of 4).
        let changed = std::sync::Mutex::new(None::<SystemTime>);
        let read = |_: &ScaleTarget, now: SystemTime| {
            let mut r = readings(Quality::Fresh, 60.0, 20.0, 1200.0);
            // The first read is the decision's (a stable group of 2), the next ones the
            // rebalance's.
            let mut first = changed.lock().unwrap();
            let since = *first.get_or_insert(now);
            let (state, members) = match now.duration_since(since).unwrap_or_default() {
                d if d.is_zero() => (GroupState::Stable, 2.0),
                d if d < Duration::from_millis(300) => (GroupState::Rebalancing, 3.0),
                _ => (GroupState::Stable, 4.0),
            };
            r.group_state = Some(state);
            r.members = Some(Reading::fresh(members, now));
            // The 4 consumers consume twice as much: the scale-out helped.
            r.consume_rate = Some(Reading::fresh(members * 10.0, now));
            r
        };
        let report = block_on(rt.scale("t", ScaleTo::Count(4), &read, false)).unwrap();
        let Some(Settle::Settled { from: 2, to: 4, seconds }) = report.rebalance else { panic!("{report:?}") };
        assert!((0.2..5.0).contains(&seconds), "{seconds}");
        assert!(report.why().contains("rebalance after 2 → 4 took"), "{}", report.why());
        let g = rt.metrics.rebalance_seconds.get_or_create(&ScaleMetrics::target("t")).get();
        assert_eq!(g, seconds);
        assert!(matches!(rt.status(SystemTime::now())[0].last_rebalance, Some(Settle::Settled { .. })));
        // The measured rebalance is fed into the next decision: min_interval is 0 s, but
        // rebalance_cost_factor (3) × the rebalance holds the next policy change.
        let e = block_on(rt.scale("t", ScaleTo::Policy, &|_: &ScaleTarget, now: SystemTime| { let mut r = readings(Quality::Fresh, 60.0, 20.0, 1200.0); r.members = Some(Reading::fresh(4.0, now)); r }, false)).unwrap_err();
        let ScaleError::Held { reason, why, .. } = e else { panic!("{e:?}") };
        assert_eq!(reason, HoldReason::MinInterval, "{why}");
        assert!(why.contains("last rebalance took"), "{why}");
    }

    #[test]
    fn a_rebalance_never_seen_settled_is_unknown_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests");
        let rt = runtime(&log, serde_json::json!({"type": "throughput", "catch_up_within": "1m"})).with_metrics(ScaleMetrics::default());
        let read = |_: &ScaleTarget, _: SystemTime| readings(Quality::Fresh, 60.0, 20.0, 1200.0);
        let report = block_on(rt.scale("t", ScaleTo::Count(1), &read, false)).unwrap();
        assert!(matches!(report.rebalance, Some(Settle::Unsettled { .. })), "{report:?}");
        assert_eq!(rt.metrics.rebalance_unsettled.get_or_create(&ScaleMetrics::target("t")).get(), 1);
        assert_eq!(rt.metrics.rebalance_seconds.get_or_create(&ScaleMetrics::target("t")).get(), 0.0, "never set (the series is created only by this read)");
    }
}
