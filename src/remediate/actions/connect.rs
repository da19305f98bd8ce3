//! The `connect` action: restart a connector, restart only its failed tasks, pause,
//! resume or stop it, through the worker's REST API, then verify the worker reports the
//! expected state (RUNNING / PAUSED / STOPPED) within the step's deadline.
//!
//! The connector is the target's `connector` label; the worker is the `[[connect]]`
//! source named by the target's `connect` label (the labels of `connector_*` signals).
//!
//! Idempotence (see `Action::idempotent`): everything but `restart` may be repeated.
//! `restart-failed-tasks` after success restarts nothing (no task is FAILED).

use std::time::{Duration, Instant};

use reqwest::Method;

use super::{cut, error_text, segment, ActionError, ActionOutcome, Context};
use crate::rules::file::runbook::{ConnectAction, ConnectOp};

/// Between two status reads while waiting for the expected state.
const POLL: Duration = Duration::from_millis(500);

pub async fn perform(a: &ConnectAction, cx: &Context<'_>) -> Result<ActionOutcome, ActionError> {
    let source = cx.target.get("connect").ok_or_else(|| ActionError::Config("the target has no `connect` label".into()))?;
    let connector = cx.target.get("connector").ok_or_else(|| ActionError::Config("the target has no `connector` label".into()))?;
    let base = cx.connect.get(source).ok_or_else(|| ActionError::Config(format!("no [[connect]] source named {source:?}")))?;
    let c = segment(connector);
    let (method, path) = match a.operation {
        ConnectOp::Restart => (Method::POST, format!("/connectors/{c}/restart?includeTasks=true&onlyFailed=false")),
        ConnectOp::RestartFailedTasks => (Method::POST, format!("/connectors/{c}/restart?includeTasks=true&onlyFailed=true")),
        ConnectOp::Pause => (Method::PUT, format!("/connectors/{c}/pause")),
        ConnectOp::Resume => (Method::PUT, format!("/connectors/{c}/resume")),
        ConnectOp::Stop => (Method::PUT, format!("/connectors/{c}/stop")),
    };
    let request = format!("{method} {path}");
    let status_path = format!("{base}/connectors/{c}/status");
    if let Some(max) = a.max_tasks {
        let current: serde_json::Value = match cx.client.get(&status_path).timeout(cx.timeout).send().await {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
            Ok(r) => return Err(ActionError::Status { request: format!("GET /connectors/{c}/status"), status: r.status().as_u16(), body: String::new() }),
            Err(e) => return Err(ActionError::Unreachable { request: format!("GET /connectors/{c}/status"), message: error_text(&e) }),
        };
        if let Some(why) = over_bound(&current, a.operation, max) {
            return Err(ActionError::Bound { request, why });
        }
    }
    let resp = cx
        .client
        .request(method, format!("{base}{path}"))
        .timeout(cx.timeout)
        .send()
        .await
        .map_err(|e| if e.is_timeout() { ActionError::Timeout { request: request.clone() } } else { ActionError::Unreachable { request: request.clone(), message: error_text(&e) } })?;
    let status = resp.status().as_u16();
    let body = cut(resp.text().await.unwrap_or_default());
    if !(200..300).contains(&status) {
        return Err(ActionError::Status { request, status, body });
    }
    let expected = expected(a.operation);
    let deadline = Instant::now() + a.deadline;
    let mut observed = String::from("nothing read yet");
    loop {
        if let Ok(r) = cx.client.get(&status_path).timeout(cx.timeout).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                let (reached, seen) = check(&v, a.operation);
                observed = seen;
                if reached {
                    return Ok(ActionOutcome { request, status, response: body, observed });
                }
            }
        }
        if Instant::now() + POLL > deadline {
            return Err(ActionError::NotReached { request, expected: expected.into(), observed, deadline: a.deadline });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Why restarting would exceed `max` tasks, if it would. Pure.
pub fn over_bound(status: &serde_json::Value, op: ConnectOp, max: u32) -> Option<String> {
    let tasks = status["tasks"].as_array().cloned().unwrap_or_default();
    let n = match op {
        ConnectOp::Restart => tasks.len(),
        ConnectOp::RestartFailedTasks => tasks.iter().filter(|t| t["state"] == "FAILED").count(),
        ConnectOp::Pause | ConnectOp::Resume | ConnectOp::Stop => return None,
    };
    (n > max as usize).then(|| format!("{n} tasks to restart, max_tasks {max}"))
}

fn expected(op: ConnectOp) -> &'static str {
    match op {
        ConnectOp::Restart | ConnectOp::RestartFailedTasks | ConnectOp::Resume => "connector and every task RUNNING",
        ConnectOp::Pause => "connector PAUSED",
        ConnectOp::Stop => "connector STOPPED",
    }
}

pub use crate::remediate::connect_api::check;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_restart_is_verified_only_when_the_connector_and_every_task_run() {
        let ok = json!({"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "RUNNING"}]});
        let failed = json!({"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "FAILED"}]});
        assert_eq!(check(&ok, ConnectOp::RestartFailedTasks), (true, "connector RUNNING, tasks [RUNNING]".into()));
        assert!(!check(&failed, ConnectOp::RestartFailedTasks).0, "a connector stays RUNNING while its task is FAILED");
        assert!(!check(&json!({"connector": {"state": "RUNNING"}, "tasks": []}), ConnectOp::Resume).0);
        assert!(check(&json!({"connector": {"state": "PAUSED"}, "tasks": []}), ConnectOp::Pause).0);
        assert!(check(&json!({"connector": {"state": "STOPPED"}}), ConnectOp::Stop).0);
    }

    #[test]
    fn max_tasks_bounds_how_many_tasks_a_restart_may_restart() {
        let s = json!({"connector": {"state": "RUNNING"}, "tasks": [{"state": "FAILED"}, {"state": "FAILED"}, {"state": "RUNNING"}]});
        assert_eq!(over_bound(&s, ConnectOp::RestartFailedTasks, 1).as_deref(), Some("2 tasks to restart, max_tasks 1"));
        assert_eq!(over_bound(&s, ConnectOp::RestartFailedTasks, 2), None);
        assert_eq!(over_bound(&s, ConnectOp::Restart, 2).as_deref(), Some("3 tasks to restart, max_tasks 2"));
        assert_eq!(over_bound(&s, ConnectOp::Pause, 1), None);
    }
}
