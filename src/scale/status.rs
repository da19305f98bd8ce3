//! What a scaling target shows where a user looks: its status in the API
//! (`GET /api/v1/scale`, and `scale` in `GET /api/v1/targets`) and its metrics.
//!
//! Metrics (all labelled by `target`, the `[[scale]]` name, a bounded set):
//! - `streamguard_scale_decisions_total{target,decision,reason}`: every decision the
//!   runtime made, `decision` = `scale` | `hold` | `dry_run`, `reason` = the hold reason
//!   (`stale_data`, `rebalancing`, `min_interval`, `stabilizing`, `scale_out_blocked`,
//!   `at_desired`, `no_estimate`) or the policy that scaled (`lag`, `throughput`,
//!   `rollback`, `fixed`);
//! - `streamguard_scale_rebalance_seconds{target}`: how long the group took to settle after
//!   the last change (absent until one was measured: unknown is not zero);
//! - `streamguard_scale_rebalance_unsettled_total{target}`: changes after which the group
//!   was not seen settled within the verification window;
//! - `streamguard_scale_ineffective{target}`: 1 while scale-outs are blocked because the
//!   last one did not raise the consume rate, else 0;
//! - `streamguard_scale_out_blocked_until_seconds{target}`: the unix time the block ends
//!   (present only while blocked).
//!
//! Data only: the runtime fills these.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::actuators::process::PoolStatus;
use super::policy::Decision;
use super::rebalance::Settle;

type Labels = Vec<(&'static str, String)>;

/// The scaling instruments (register once, in the agent's registry).
#[derive(Debug, Clone, Default)]
pub struct ScaleMetrics {
    pub decisions: Family<Labels, Counter>,
    pub rebalance_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    pub rebalance_unsettled: Family<Labels, Counter>,
    pub ineffective: Family<Labels, Gauge>,
    pub blocked_until: Family<Labels, Gauge<f64, AtomicU64>>,
}

impl ScaleMetrics {
    /// Registers under the registry's `streamguard` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("scale_decisions", "Scaling decisions by target, decision (scale, hold, dry_run) and reason (hold reason or policy)", self.decisions.clone());
        registry.register("scale_rebalance_seconds", "Time from the last replica change until the group was seen stable with the new member count", self.rebalance_seconds.clone());
        registry.register("scale_rebalance_unsettled", "Replica changes after which the group was not seen settled within the verification window", self.rebalance_unsettled.clone());
        registry.register("scale_ineffective", "1 while scale-outs of the target are blocked because the last one did not raise the consume rate", self.ineffective.clone());
        registry.register("scale_out_blocked_until_seconds", "Unix time at which the scale-out block of the target ends (present only while blocked)", self.blocked_until.clone());
    }

    pub(super) fn target(name: &str) -> Labels {
        vec![("target", name.to_string())]
    }

    pub(super) fn decision(&self, target: &str, decision: &'static str, reason: &'static str) {
        self.decisions.get_or_create(&vec![("target", target.to_string()), ("decision", decision.to_string()), ("reason", reason.to_string())]).inc();
    }

    pub(super) fn rebalance(&self, target: &str, s: &Settle) {
        match s {
            Settle::Settled { seconds, .. } => {
                self.rebalance_seconds.get_or_create(&Self::target(target)).set(*seconds);
            }
            Settle::Unsettled { .. } => {
                self.rebalance_unsettled.get_or_create(&Self::target(target)).inc();
            }
            Settle::Pending => {}
        }
    }

    /// `until`: the unix time the block ends, if blocked.
    pub(super) fn blocked(&self, target: &str, until: Option<f64>) {
        let l = Self::target(target);
        self.ineffective.get_or_create(&l).set(i64::from(until.is_some()));
        match until {
            Some(u) => {
                self.blocked_until.get_or_create(&l).set(u);
            }
            None => {
                self.blocked_until.remove(&l);
            }
        }
    }
}

/// The last decision of a target, as shown in its status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastDecision {
    #[serde(flatten)]
    pub decision: Decision,
    pub dry_run: bool,
    pub at: f64,
}

/// One scaling target, as `GET /api/v1/scale` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStatus {
    pub name: String,
    pub cluster: Option<String>,
    pub group: String,
    pub topic: String,
    /// `process`, `kubernetes`, `command`.
    pub actuator: &'static str,
    /// `lag`, `throughput`.
    pub policy: &'static str,
    /// The count last read from the actuator (`null`: not read yet, or unknown).
    pub current_replicas: Option<u32>,
    /// The count the last policy decision wanted (after bounds, alignment, stabilization).
    pub desired_replicas: Option<u32>,
    pub last_decision: Option<LastDecision>,
    /// `true` while scale-outs are blocked after an ineffective one.
    pub scale_out_ineffective: bool,
    /// Unix time the block ends, while blocked.
    pub scale_out_blocked_until: Option<f64>,
    /// Why it is blocked (the detector's finding), while blocked.
    pub ineffective_why: Option<String>,
    /// The rebalance after the last change: settled (with its seconds), unsettled, or
    /// in progress.
    pub last_rebalance: Option<Settle>,
    /// A `process` pool's replicas, restarts and recent exits.
    pub pool: Option<PoolStatus>,
    /// `true` while an offset move holds the target at 0 (its policy does not scale it
    /// until the move resumes it).
    pub paused_for_offset_move: bool,
}
