//! The CLI's side of the remediation API (`streamguard plan`, `act`, `approve`,
//! `actions`): requests to a running agent and the tables they print. The renderers are
//! pure; the token goes only into the `Authorization` header, never into a message.

use std::time::Duration;

/// A failed request to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{method} {path}: HTTP {status}: {message}")]
    Status { method: String, path: String, status: u16, message: String },
}

/// Sends one request to the agent at `base` and returns its JSON answer.
pub async fn call(base: &str, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<serde_json::Value>) -> Result<serde_json::Value, ClientError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ClientError::Unreachable { url: base.into(), message: e.to_string() })?;
    let mut req = client.request(method.clone(), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| ClientError::Unreachable { url: base.into(), message: super::actions::error_text(&e) })?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if !(200..300).contains(&status) {
        let message = value["error"].as_str().map_or_else(|| super::actions::cut(text.clone()), str::to_string);
        return Err(ClientError::Status { method: method.to_string(), path: path.into(), status, message });
    }
    Ok(value)
}

fn target_text(v: &serde_json::Value) -> String {
    match v.as_object() {
        Some(o) => o.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(","),
        None => "-".into(),
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let n = cells.len();
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| if i + 1 == n { c } else { format!("{c:<w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
            + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// `streamguard actions`: one line per run, newest first. Pure.
pub fn render_actions(v: &serde_json::Value) -> String {
    let rows = v["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    // Any number may come back: out of range is shown as unknown, never a panic.
                    let created = r["created_at"]
                        .as_f64()
                        .filter(|t| (0.0..1e11).contains(t))
                        .and_then(|t| Duration::try_from_secs_f64(t).ok())
                        .map_or("-".into(), |d| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + d).to_string());
                    vec![
                        r["id"].as_str().unwrap_or("-").to_string(),
                        created,
                        r["runbook"].as_str().unwrap_or("-").to_string(),
                        target_text(&r["target"]),
                        r["mode"].as_str().unwrap_or("-").to_string(),
                        r["state"].as_str().unwrap_or("-").to_string(),
                        r["reason"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["ID", "CREATED", "RUNBOOK", "TARGET", "MODE", "STATE", "REASON"], rows)
}

/// `streamguard plan`: per firing instance and runbook, the decision and every guard. Pure.
pub fn render_plans(v: &serde_json::Value) -> String {
    let plans = v["plans"].as_array().cloned().unwrap_or_default();
    if plans.is_empty() {
        return "nothing to do: no firing alert names a runbook\n".into();
    }
    let mut out = String::new();
    for p in plans {
        let plan = &p["plan"];
        out.push_str(&format!(
            "{} {} → runbook {} ({}): {}\n",
            p["rule"].as_str().unwrap_or("-"),
            target_text(&p["labels"]),
            plan["runbook"].as_str().unwrap_or("-"),
            plan["mode"].as_str().unwrap_or("-"),
            match (plan["decision"].as_str(), plan["mode"].as_str()) {
                (Some("run"), Some("dry-run")) => "would run (dry-run: nothing is sent)",
                (Some("run"), Some("approve")) => "would wait for approval",
                (Some("run"), _) => "would run",
                _ => "blocked",
            }
        ));
        for g in plan["guards"].as_array().into_iter().flatten() {
            let mark = if g["passed"].as_bool() == Some(true) { "pass " } else { "BLOCK" };
            out.push_str(&format!("  {mark} {:<12} {}\n", g["guard"].as_str().unwrap_or("-"), g["reason"].as_str().unwrap_or("")));
        }
        for s in plan["steps"].as_array().into_iter().flatten() {
            out.push_str(&format!("  step  {}[{}] {}\n", s["phase"].as_str().unwrap_or("-"), s["index"], s["description"].as_str().unwrap_or("")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_actions_table_has_one_line_per_run_with_its_state_and_reason() {
        let v = json!({"actions": [{"id": "r1-0", "created_at": 0.0, "runbook": "restart", "target": {"connect": "local", "connector": "s"}, "mode": "act", "state": "blocked", "reason": "blocked: cooldown: …"}]});
        let t = render_actions(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(lines[1].starts_with("r1-0  1970-01-01T00:00:00Z  restart  connect=local,connector=s  act   blocked  blocked: cooldown"), "{t}");
        let odd = json!({"actions": [{"id": "x", "created_at": 1e300}, {"id": "y", "created_at": -5.0}, {"id": "z", "created_at": "soon"}]});
        assert_eq!(render_actions(&odd).lines().filter(|l| l.contains("  -  ")).count(), 3, "unknown, not a panic");
    }

    #[test]
    fn a_plan_shows_every_guard_and_step() {
        let v = json!({"plans": [{"rule": "connector-task-failed", "labels": {"connector": "s"}, "plan": {"runbook": "restart", "mode": "dry-run", "decision": "run",
            "guards": [{"guard": "cooldown", "passed": true, "reason": "no run"}], "steps": [{"phase": "steps", "index": 0, "description": "connect restart-failed-tasks"}]}}]});
        let t = render_plans(&v);
        assert!(t.contains("would run (dry-run: nothing is sent)"), "{t}");
        assert!(t.contains("pass  cooldown"), "{t}");
        assert!(t.contains("step  steps[0] connect restart-failed-tasks"), "{t}");
        assert_eq!(render_plans(&json!({"plans": []})), "nothing to do: no firing alert names a runbook\n");
    }
}
