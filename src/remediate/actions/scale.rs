//! The `scale` action: sets a `[[scale]]` target's replica count through
//! `crate::scale::runtime` — the target's policy decides (`to: policy`), or the runbook
//! orders a rollback (`to: previous`) or a count. The outcome carries the decision's
//! one-line why, the rates it used and the computed count, for the audit.
//!
//! A hold for a reason that means "not done" (stale or missing data, a rebalancing group,
//! the min interval, a blocked scale-out, no estimate) and an ineffective scale-out
//! (rolled back) are errors, so the run fails and escalates; a hold at the desired count
//! (or in the scale-down window) is a success that changed nothing.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::{cut, ActionError, ActionOutcome, Context};
use crate::rules::file::runbook::{ScaleAction, ScaleTo};
use crate::scale::config::ScaleTarget;
use crate::scale::lag_policy::PartitionOffsets;
use crate::scale::policy::{GroupState, Reading};
use crate::scale::runtime::{GroupReadings, ScaleError, ScaleRuntime, ScaleTo as RtTo};
use crate::signal::{Labels, Quality, SourceKind};
use crate::store::Store;

/// What the policies need for the target's group and topic, from the Kafka source's
/// latest sample, each reading with its quality (a series absent from the latest sample
/// is `missing`, a source that is not fresh makes every reading `stale`).
pub fn readings(store: &Store, t: &ScaleTarget, now: SystemTime) -> GroupReadings {
    let (group, topic) = (t.group.as_str(), t.topic.as_str());
    store
        .with_entry(SourceKind::Kafka, t.cluster.as_deref().unwrap_or(""), |e| {
            let mut r = GroupReadings::default();
            let mut log_end = BTreeMap::new();
            let mut committed = BTreeMap::new();
            for k in e.iter() {
                let Some((at, v)) = k.last() else { continue };
                let q = || e.quality_of(now, &k);
                let is = |name: &str, val: &str| k.label(name) == Some(val);
                match k.signal() {
                    "topic_produce_rate" if is("topic", topic) => r.produce_rate = Some(Reading { value: v, quality: q(), at }),
                    "group_topic_consume_rate" if is("group", group) && is("topic", topic) => r.consume_rate = Some(Reading { value: v, quality: q(), at }),
                    "group_topic_lag_offsets" if is("group", group) && is("topic", topic) => r.lag = Some(Reading { value: v, quality: q(), at }),
                    "group_members" if is("group", group) => r.members = Some(Reading { value: v, quality: q(), at }),
                    "group_state" if is("group", group) && v == 1.0 && q() == Quality::Fresh => {
                        r.group_state = Some(match k.label("state").unwrap_or("") {
                            "Stable" | "Empty" => GroupState::Stable,
                            "PreparingRebalance" | "CompletingRebalance" => GroupState::Rebalancing,
                            _ => GroupState::Unknown,
                        })
                    }
                    "log_end_offset" if is("topic", topic) && q() == Quality::Fresh => {
                        log_end.insert(k.label("partition").unwrap_or("").to_string(), v as i64);
                    }
                    "committed_offset" if is("group", group) && is("topic", topic) && q() == Quality::Fresh => {
                        committed.insert(k.label("partition").unwrap_or("").to_string(), v as i64);
                    }
                    _ => {}
                }
            }
            r.partitions = log_end.iter().map(|(p, end)| PartitionOffsets { committed: committed.get(p).copied(), log_end: *end }).collect();
            r
        })
        .unwrap_or_default()
}

/// The numbers of a decision, small enough for the audit's response field.
fn compact(r: &crate::scale::runtime::ScaleReport) -> serde_json::Value {
    use crate::scale::policy::Decision;
    let num = |x: f64| if x.is_finite() { serde_json::json!((x * 1000.0).round() / 1000.0) } else { serde_json::Value::Null };
    let mut v = match &r.decision {
        Decision::Scale { from, to, raw, .. } => serde_json::json!({"decision": "scale", "from": from, "to": to, "raw": raw}),
        Decision::Hold { replicas, raw, reason, .. } => serde_json::json!({"decision": "hold", "replicas": replicas, "raw": raw, "reason": reason.as_str()}),
    };
    if let Some(i) = &r.inputs {
        v["produce_rate"] = num(i.produce_rate.value);
        v["consume_rate"] = num(i.consume_rate.value);
        v["lag"] = num(i.lag.value);
    }
    if let Some(f) = &r.finding {
        v["finding"] = f.kind().into();
    }
    match &r.rebalance {
        Some(crate::scale::rebalance::Settle::Settled { seconds, .. }) => v["rebalance_seconds"] = num(*seconds),
        Some(crate::scale::rebalance::Settle::Unsettled { .. }) => v["rebalance"] = "unsettled".into(),
        _ => {}
    }
    if r.dry_run {
        v["dry_run"] = true.into();
    }
    v
}

/// The `[[scale]]` target a step names, or the one watching the run's group.
fn resolve(a: &ScaleAction, rt: &ScaleRuntime, target: &Labels) -> Result<String, ActionError> {
    let group = target.get("group").map(String::as_str);
    let cluster = target.get("cluster").map(String::as_str);
    rt.resolve(a.target.as_deref(), cluster, group).map(str::to_string).ok_or_else(|| {
        ActionError::Config(match &a.target {
            Some(t) => format!("no [[scale]] target named {t:?}"),
            None => format!("no [[scale]] target for group {:?}", group.unwrap_or("")),
        })
    })
}

fn runtime_to(to: ScaleTo) -> RtTo {
    match to {
        ScaleTo::Policy => RtTo::Policy,
        ScaleTo::Previous => RtTo::Previous,
        ScaleTo::Count(n) => RtTo::Count(n),
    }
}

/// What a dry run of the step shows: the count the policy would choose now, its one-line
/// why and its inputs (as in an executed step's audit record). Nothing is sent: the
/// actuator is only asked for its current count.
pub async fn preview(a: &ScaleAction, rt: &ScaleRuntime, store: &Store, target: &Labels) -> serde_json::Value {
    let name = match resolve(a, rt, target) {
        Ok(n) => n,
        Err(e) => return serde_json::json!({"error": e.to_string()}),
    };
    let read = move |t: &ScaleTarget, now: SystemTime| readings(store, t, now);
    match rt.scale(&name, runtime_to(a.to), &read, true).await {
        Ok(report) => serde_json::json!({"target": name, "why": report.why(), "decision": format!("scale {name}: {}", report.decision.why()), "plan": compact(&report)}),
        Err(ScaleError::Held { why, report, .. }) => serde_json::json!({"target": name, "why": format!("dry-run, nothing sent: {why}"), "decision": format!("scale {name}: {why}"), "plan": compact(&report)}),
        Err(e) => serde_json::json!({"target": name, "error": e.to_string()}),
    }
}

pub async fn perform(a: &ScaleAction, cx: &Context<'_>) -> Result<ActionOutcome, ActionError> {
    let Some(rt) = cx.scale else { return Err(ActionError::Config("no [[scale]] targets are configured".into())) };
    let name = resolve(a, rt, cx.target)?;
    let to = runtime_to(a.to);
    let request = format!("scale {name}");
    let store = cx.store;
    let read = move |t: &ScaleTarget, now: SystemTime| readings(store, t, now);
    match rt.scale(&name, to, &read, false).await {
        Ok(report) => {
            let observed = report.why();
            Ok(ActionOutcome { request, status: 0, response: cut(compact(&report).to_string()), observed })
        }
        Err(ScaleError::Held { why, report, .. }) => Err(ActionError::Refused { request, why: format!("{why} {}", compact(&report)) }),
        Err(ScaleError::Ineffective { why, .. }) => Err(ActionError::Refused { request, why }),
        Err(e @ ScaleError::Paused { .. }) => Err(ActionError::Refused { request, why: e.to_string() }),
        Err(ScaleError::Actuator(e)) if matches!(e.kind(), "timeout" | "unreachable" | "conflict") => Err(ActionError::Unreachable { request, message: e.to_string() }),
        Err(e) => Err(ActionError::Config(format!("{request}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held or rolled-back scale is a decision, not a transient failure: retrying the
    /// step would only repeat it (and hide the first attempt's reason).
    #[test]
    fn a_refused_scale_is_not_retried() {
        let e = ActionError::Refused { request: "scale orders".into(), why: "holding at 1: input is stale".into() };
        assert!(!e.retryable());
        assert_eq!(e.kind(), "refused");
        assert_eq!(e.to_string(), "scale orders: holding at 1: input is stale");
    }
}
