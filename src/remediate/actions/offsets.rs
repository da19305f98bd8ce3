//! The `offsets` action: the reprocessing procedure of [`crate::remediate::offsets`]
//! (pause → wait Empty → DLQ copy → commit → resume → verify) as one runbook step.
//!
//! The target names the group: `group` (required), `cluster` (the `[[clusters]]` name;
//! optional when there is one cluster), and for `reset: skip-poison` the stuck
//! `topic` and `partition`; for `pause: connect` the `connect` and `connector` labels;
//! for `pause: flink` the `flink` (the `[[flink]]` source) and `flink_job` labels. `pause:
//! scale` names a `[[scale]]` target (`scale_target`, else the one watching the group).
//!
//! The procedure journals its own steps in its own journal (`<journal>.offsets.journal`,
//! audit `<audit>.offsets.jsonl`), tagged with this step (`run_id/phase/step`). Run again
//! for the same step (the executor retries an interrupted idempotent step after a crash),
//! it finishes that procedure or reports how it ended, and never starts a second one.

use std::time::{Duration, SystemTime};

use super::{cut, ActionError, ActionOutcome, Context};
use crate::remediate::offsets::compute::ResetMode;
use crate::remediate::offsets::limits::Limits;
use crate::remediate::offsets::pause::{FlinkPause, Pause};
use crate::remediate::offsets::procedure::{self, Env, Request};
use crate::rules::file::runbook::{OffsetsAction, OffsetsPause, OffsetsReset};

/// Budget of each Kafka call inside the procedure.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The procedure's request for this step and target. Pure but for `now` (passed in).
pub fn request(a: &OffsetsAction, cx: &Context<'_>, now: SystemTime) -> Result<Request, ActionError> {
    let label = |k: &str| cx.target.get(k).cloned().ok_or_else(|| ActionError::Config(format!("the target has no `{k}` label")));
    let group = label("group")?;
    let mode = match a.reset {
        OffsetsReset::SkipPoison => ResetMode::SkipPoison { partitions: vec![format!("{}:{}", label("topic")?, label("partition")?)] },
        OffsetsReset::Earliest => ResetMode::Earliest,
        OffsetsReset::Latest => ResetMode::Latest,
        OffsetsReset::ShiftBy(by) => ResetMode::Shift { by },
        OffsetsReset::Rewind(d) => {
            let at = now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
            ResetMode::ToTimestamp { ms: at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as i64 }
        }
    };
    let pause = match &a.pause {
        OffsetsPause::None => Pause::None,
        OffsetsPause::Command { pause, resume } => Pause::Command { pause: pause.clone(), resume: resume.clone() },
        OffsetsPause::Connect => {
            let source = label("connect")?;
            let url = cx.connect.get(&source).ok_or_else(|| ActionError::Config(format!("no [[connect]] source named {source:?}")))?;
            Pause::Connect { url: url.clone(), connector: label("connector")? }
        }
        OffsetsPause::Scale { target } => {
            let rt = cx.scale.ok_or_else(|| ActionError::Config("pause: scale, but no [[scale]] targets are configured".into()))?;
            let name = rt.resolve(target.as_deref(), cx.target.get("cluster").map(String::as_str), Some(&group)).ok_or_else(|| {
                ActionError::Config(match target {
                    Some(t) => format!("no [[scale]] target named {t:?}"),
                    None => format!("no [[scale]] target for group {group:?}"),
                })
            })?;
            Pause::Scale { target: name.to_string(), replicas: None }
        }
        OffsetsPause::Flink { jar, entry_class, args, discard_state } => {
            let source = label("flink")?;
            let url = cx.flink.get(&source).ok_or_else(|| ActionError::Config(format!("no [[flink]] source named {source:?}")))?;
            Pause::Flink(FlinkPause { url: url.clone(), job: label("flink_job")?, jar: jar.clone(), entry_class: entry_class.clone(), args: args.clone(), parallelism: None, discard_state: *discard_state })
        }
    };
    let topics = match &mode {
        ResetMode::SkipPoison { .. } => vec![label("topic")?],
        _ => cx.target.get("topic").cloned().into_iter().collect(),
    };
    Ok(Request {
        group,
        topics,
        mode,
        limits: Limits { max_partitions: a.max_partitions, max_skipped: a.max_skipped, max_replayed: a.max_replayed, max_rewind_age: a.max_rewind_age },
        pause,
        dlq: a.dlq.clone(),
        reason: format!("runbook {} run {}", cx.runbook, cx.run_id),
        empty_deadline: a.empty_deadline,
        verify_deadline: a.verify_deadline,
        timeout: CALL_TIMEOUT,
        tag: Some(format!("{}/{}/{}", cx.run_id, cx.phase, cx.step)),
    })
}

pub async fn perform(a: &OffsetsAction, cx: &Context<'_>) -> Result<ActionOutcome, ActionError> {
    let kafka = match cx.target.get("cluster") {
        Some(c) => cx.kafka.get(c).ok_or_else(|| ActionError::Config(format!("no [[clusters]] entry named {c:?}")))?,
        None if cx.kafka.len() == 1 => cx.kafka.values().next().ok_or_else(|| ActionError::Config("no [[clusters]]".into()))?,
        None => return Err(ActionError::Config("the target has no `cluster` label and there are several clusters".into())),
    };
    let req = request(a, cx, SystemTime::now())?;
    let describe = format!("offsets {} group {}", req.mode.name(), req.group);
    let mut env = Env::open(kafka.clone(), cx.offsets_files.0, cx.offsets_files.1).map_err(|e| ActionError::Config(e.to_string()))?;
    env.scale = cx.scale.cloned();
    env.metrics = cx.offsets_metrics.clone();
    let tag = req.tag.clone().unwrap_or_default();
    let outcome = match procedure::by_tag(&env, &tag) {
        // This step already started a procedure (then the agent restarted).
        Some((id, Some((end, reason)))) => procedure::Outcome { id, end: end.as_str(), reason, preview: None },
        Some((id, None)) => {
            let all = procedure::recover(&env).await;
            all.into_iter().find(|o| o.id == id).ok_or_else(|| ActionError::Config(format!("procedure {id} not recovered")))?
        }
        None => procedure::apply(&env, req).await.map_err(|e| ActionError::Ended { request: describe.clone(), end: "not started".into(), reason: e.to_string() })?,
    };
    if outcome.end != "succeeded" {
        return Err(ActionError::Ended { request: describe, end: outcome.end.into(), reason: outcome.reason });
    }
    let response = outcome.preview.as_ref().map(|p| cut(p.table())).unwrap_or_default();
    Ok(ActionOutcome { request: format!("{describe} (procedure {})", outcome.id), status: 0, response, observed: outcome.reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn action(reset: OffsetsReset, pause: OffsetsPause) -> OffsetsAction {
        OffsetsAction {
            reset,
            dlq: Some("dlq".into()),
            pause,
            max_partitions: 4,
            max_skipped: 1,
            max_replayed: 100,
            max_rewind_age: Duration::from_secs(7200),
            empty_deadline: Duration::from_secs(60),
            verify_deadline: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_step_becomes_a_tagged_request_for_the_targets_group_and_partition() {
        let target: crate::signal::Labels = [("cluster", "local"), ("group", "orders"), ("topic", "in"), ("partition", "3"), ("connect", "w"), ("connector", "sink")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let client = reqwest::Client::new();
        let connect: BTreeMap<String, String> = [("w".to_string(), "http://127.0.0.1:8083".to_string())].into();
        let kafka = BTreeMap::new();
        let (store, flink) = (crate::store::Store::default(), BTreeMap::new());
        let (j, a) = (std::path::PathBuf::from("j"), std::path::PathBuf::from("a"));
        let cx = Context { run_id: "r1", runbook: "skip", target: &target, phase: "steps", step: 2, client: &client, connect: &connect, timeout: Duration::from_secs(1), kafka: &kafka, offsets_files: (&j, &a), scale: None, offsets_metrics: &Default::default(), store: &store, flink: &flink };
        let r = request(&action(OffsetsReset::SkipPoison, OffsetsPause::Connect), &cx, SystemTime::UNIX_EPOCH + Duration::from_secs(10_000)).unwrap();
        assert_eq!(r.group, "orders");
        assert_eq!(r.mode, ResetMode::SkipPoison { partitions: vec!["in:3".into()] });
        assert_eq!(r.pause, Pause::Connect { url: "http://127.0.0.1:8083".into(), connector: "sink".into() });
        assert_eq!(r.tag.as_deref(), Some("r1/steps/2"), "the same step of the same run finds its procedure again");
        assert_eq!((r.limits.max_skipped, r.limits.max_partitions), (1, 4));
        let r = request(&action(OffsetsReset::Rewind(Duration::from_secs(3600)), OffsetsPause::None), &cx, SystemTime::UNIX_EPOCH + Duration::from_secs(10_000)).unwrap();
        assert_eq!(r.mode, ResetMode::ToTimestamp { ms: 6_400_000 });
        assert_eq!(r.topics, ["in"]);
        let mut t = target.clone();
        t.remove("partition");
        let cx = Context { target: &t, ..cx };
        assert_eq!(request(&action(OffsetsReset::SkipPoison, OffsetsPause::None), &cx, SystemTime::UNIX_EPOCH).unwrap_err(), ActionError::Config("the target has no `partition` label".into()));
    }

    #[test]
    fn a_scale_pause_needs_scale_targets_and_a_flink_pause_takes_the_jobs_source_and_name() {
        let target: crate::signal::Labels = [("cluster", "local"), ("group", "orders"), ("flink", "f"), ("flink_job", "enricher")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let client = reqwest::Client::new();
        let (connect, kafka) = (BTreeMap::new(), BTreeMap::new());
        let flink: BTreeMap<String, String> = [("f".to_string(), "http://127.0.0.1:8081".to_string())].into();
        let store = crate::store::Store::default();
        let (j, a) = (std::path::PathBuf::from("j"), std::path::PathBuf::from("a"));
        let m = Default::default();
        let cx = Context { run_id: "r1", runbook: "replay", target: &target, phase: "steps", step: 0, client: &client, connect: &connect, timeout: Duration::from_secs(1), kafka: &kafka, offsets_files: (&j, &a), scale: None, offsets_metrics: &m, store: &store, flink: &flink };
        let e = request(&action(OffsetsReset::Latest, OffsetsPause::Scale { target: None }), &cx, SystemTime::UNIX_EPOCH).unwrap_err();
        assert_eq!(e, ActionError::Config("pause: scale, but no [[scale]] targets are configured".into()));
        let flink_pause = OffsetsPause::Flink { jar: "job.jar".into(), entry_class: Some("Main".into()), args: vec!["--x".into()], discard_state: true };
        let r = request(&action(OffsetsReset::Latest, flink_pause), &cx, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            r.pause,
            Pause::Flink(FlinkPause { url: "http://127.0.0.1:8081".into(), job: "enricher".into(), jar: "job.jar".into(), entry_class: Some("Main".into()), args: vec!["--x".into()], parallelism: None, discard_state: true })
        );
    }
}
