//! The `flink` action: savepoint, savepoint-and-restart (the stalled-checkpoint remedy)
//! or rescale of the run's job, through `crate::actions_flink`, each polled to completion
//! and verified (RUNNING, a checkpoint completed after the resubmission).
//!
//! The job is the run's target: `flink` (the `[[flink]]` source) and `flink_job` (the
//! job name); its id is looked up in `GET /jobs/overview` (the one run of that name that
//! is not in a terminal state), since ids change on every submission.

use std::time::Duration;

use super::{ActionError, ActionOutcome, Context};
use crate::actions_flink::{FlinkActionError, FlinkJobs, JobSpec};
use crate::rules::file::runbook::{FlinkAction, FlinkOp};
use crate::sample::flink_api::{is_terminal, JobsOverview};

fn err(request: &str, e: FlinkActionError) -> ActionError {
    match e {
        FlinkActionError::Http { message, .. } => ActionError::Unreachable { request: request.to_string(), message },
        FlinkActionError::Status { status, body, .. } => ActionError::Status { request: request.to_string(), status, body },
        FlinkActionError::Timeout { .. } => ActionError::Timeout { request: format!("{request}: {e}") },
        // Failed savepoints, wrong states, missing jar or checkpoint: not transient.
        other => ActionError::Refused { request: request.to_string(), why: other.to_string() },
    }
}

pub async fn perform(a: &FlinkAction, cx: &Context<'_>) -> Result<ActionOutcome, ActionError> {
    let source = cx.target.get("flink").cloned().unwrap_or_default();
    let job = cx.target.get("flink_job").cloned().ok_or_else(|| ActionError::Config("the run's target has no `flink_job` label (use target: [flink, flink_job])".into()))?;
    let base = cx.flink.get(&source).ok_or_else(|| ActionError::Config(format!("no [[flink]] source named {source:?}")))?;
    let request = format!("flink {} {job}", a.operation.as_str());
    let jobs = FlinkJobs::new(base, cx.timeout.min(Duration::from_secs(30)), Duration::from_millis(500)).map_err(|e| err(&request, e))?;
    let overview: JobsOverview = crate::sample::http::get_json(cx.client, &format!("{}/jobs/overview", base.trim_end_matches('/'))).await.map_err(|e| ActionError::Unreachable { request: request.clone(), message: e.to_string() })?;
    let jid = overview
        .jobs
        .iter()
        .filter(|j| j.name == job && !is_terminal(&j.state))
        .max_by_key(|j| j.start_time)
        .map(|j| j.jid.clone())
        .ok_or_else(|| ActionError::Refused { request: request.clone(), why: format!("no running job named {job:?}") })?;
    let req = request.clone();
    let spec = async {
        let jar = a.jar.as_deref().unwrap_or_default();
        let jar_id = jobs.find_jar(jar).await.map_err(|e| err(&req, e))?;
        Ok::<_, ActionError>(JobSpec { jar_id, entry_class: a.entry_class.clone(), program_args: a.args.clone(), parallelism: a.parallelism, flink_configuration: Default::default(), allow_non_restored_state: false })
    };
    let (observed, response) = match a.operation {
        FlinkOp::Savepoint => {
            let sp = jobs.trigger_savepoint(&jid, None, a.deadline).await.map_err(|e| err(&request, e))?;
            (format!("savepoint of job {jid} at {} in {:.1}s", sp.location, sp.took_seconds), serde_json::json!({"jid": jid, "savepoint": sp.location}))
        }
        FlinkOp::SavepointAndRestart => {
            let spec = spec.await?;
            let r = jobs.savepoint_and_restart(&jid, &spec, a.savepoint_timeout, a.deadline).await.map_err(|e| err(&request, e))?;
            let why = r.savepoint_error.as_deref().map(|e| format!(" (savepoint failed: {e})")).unwrap_or_default();
            (
                format!("job {jid} restarted from {} {}{why}: job {} RUNNING, checkpoint {} completed", r.via, r.path, r.job.jid, r.job.checkpoint_id),
                serde_json::json!({"old_jid": jid, "via": r.via, "path": r.path, "jid": r.job.jid, "checkpoint": r.job.checkpoint_id}),
            )
        }
        FlinkOp::Rescale => {
            let spec = spec.await?;
            let p = a.parallelism.unwrap_or(1);
            let (sp, run) = jobs.rescale(&jid, &spec, p, a.deadline).await.map_err(|e| err(&request, e))?;
            (
                format!("job {jid} stopped at {}; job {} RUNNING at parallelism {}, checkpoint {} completed", sp.location, run.jid, run.parallelism, run.checkpoint_id),
                serde_json::json!({"old_jid": jid, "savepoint": sp.location, "jid": run.jid, "parallelism": run.parallelism}),
            )
        }
    };
    Ok(ActionOutcome { request, status: 0, response: super::cut(response.to_string()), observed })
}
