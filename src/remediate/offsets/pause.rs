//! How the group's consumers are paused and resumed around an offset move:
//!
//! - `none`: nothing to pause (the consumers are already stopped); the procedure still
//!   waits for the group to be Empty and refuses otherwise.
//! - `command`: run a program (scale a `process` pool or a Deployment to 0 through its
//!   own CLI, `systemctl stop`, a Flink stop-with-savepoint script…), exit status 0
//!   required. Both commands must be safe to run twice: after a crash an interrupted
//!   pause or resume is run again.
//! - `actuator`: scale a scaling actuator of `crate::scale` (the `process` pool, a
//!   Kubernetes Deployment, a `command`) to 0 and back to `replicas`. The actuator is
//!   registered by name in the procedure's environment (it is not serializable; after a
//!   crash the same name must be registered again).
//! - `connect`: `PUT /connectors/{c}/stop` and `/resume` on a Kafka Connect worker,
//!   verified with the `connect` action's own check; a sink connector's offsets are then
//!   committed through Connect's offsets API rather than the admin API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::remediate::connect_api::{check, segment};
use crate::rules::file::runbook::ConnectOp;
use crate::scale::actuators::{Actuator, ScaleRequest};

/// Actuators by name.
pub type Actuators = BTreeMap<String, Arc<dyn Actuator>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Pause {
    None,
    Command { pause: Vec<String>, resume: Vec<String> },
    Connect { url: String, connector: String },
    Actuator { name: String, replicas: u32 },
}

impl Pause {
    pub fn describe(&self) -> String {
        match self {
            Pause::None => "nothing to pause".into(),
            Pause::Command { pause, .. } => format!("command {}", pause.join(" ")),
            Pause::Connect { connector, .. } => format!("stop connector {connector}"),
            Pause::Actuator { name, .. } => format!("scale {name} to 0"),
        }
    }
}

const POLL: Duration = Duration::from_millis(500);

async fn run(argv: &[String], timeout: Duration) -> Result<String, String> {
    let Some((prog, args)) = argv.split_first() else { return Err("empty command".into()) };
    let child = tokio::process::Command::new(prog).args(args).kill_on_drop(true).output();
    match tokio::time::timeout(timeout, child).await {
        Err(_) => Err(format!("{prog}: timed out after {timeout:?}")),
        Ok(Err(e)) => Err(format!("{prog}: cannot run: {e}")),
        Ok(Ok(o)) if o.status.success() => Ok(format!("{prog}: exit 0")),
        Ok(Ok(o)) => Err(format!("{prog}: {}: {}", o.status, cut(String::from_utf8_lossy(&o.stderr).trim().to_string()))),
    }
}

async fn connect(client: &reqwest::Client, url: &str, connector: &str, op: ConnectOp, timeout: Duration) -> Result<String, String> {
    let c = segment(connector);
    let path = format!("/connectors/{c}/{}", op.as_str());
    let r = client.put(format!("{url}{path}")).timeout(timeout).send().await.map_err(|e| format!("PUT {path}: {}", error_text(&e)))?;
    if !r.status().is_success() {
        let s = r.status().as_u16();
        return Err(format!("PUT {path}: HTTP {s}: {}", cut(r.text().await.unwrap_or_default())));
    }
    let deadline = Instant::now() + timeout;
    let mut seen = String::from("nothing read yet");
    loop {
        if let Ok(r) = client.get(format!("{url}/connectors/{c}/status")).timeout(timeout).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                let (ok, s) = check(&v, op);
                seen = s;
                if ok {
                    return Ok(format!("PUT {path} → {seen}"));
                }
            }
        }
        if Instant::now() + POLL > deadline {
            return Err(format!("PUT {path}: not reached within {timeout:?}, last seen: {seen}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn scale(actuators: &Actuators, name: &str, to: u32, why: &str) -> Result<String, String> {
    let a = actuators.get(name).ok_or_else(|| format!("no actuator {name:?} registered"))?;
    let req = ScaleRequest { target: name.to_string(), from: None, to, policy: "reprocess".into(), why: why.into(), dry_run: false };
    a.scale_to(&req).await.map(|o| format!("{} {name}: {o:?}", a.kind())).map_err(|e| format!("{} {name}: {e}", a.kind()))
}

pub async fn pause(p: &Pause, client: &reqwest::Client, actuators: &Actuators, timeout: Duration) -> Result<String, String> {
    match p {
        Pause::None => Ok("nothing to pause".into()),
        Pause::Command { pause, .. } => run(pause, timeout).await,
        Pause::Connect { url, connector } => connect(client, url, connector, ConnectOp::Stop, timeout).await,
        Pause::Actuator { name, .. } => scale(actuators, name, 0, "pause for an offset move").await,
    }
}

pub async fn resume(p: &Pause, client: &reqwest::Client, actuators: &Actuators, timeout: Duration) -> Result<String, String> {
    match p {
        Pause::None => Ok("nothing to resume".into()),
        Pause::Command { resume, .. } => run(resume, timeout).await,
        Pause::Connect { url, connector } => connect(client, url, connector, ConnectOp::Resume, timeout).await,
        Pause::Actuator { name, replicas } => scale(actuators, name, *replicas, "resume after an offset move").await,
    }
}

/// `PATCH /connectors/{c}/offsets` for a sink connector (the connector must be STOPPED).
pub async fn connect_commit(client: &reqwest::Client, url: &str, connector: &str, offsets: &[(String, i32, i64)], timeout: Duration) -> Result<String, String> {
    let body = serde_json::json!({"offsets": offsets.iter().map(|(t, p, o)| serde_json::json!({
        "partition": {"kafka_topic": t, "kafka_partition": p},
        "offset": {"kafka_offset": o},
    })).collect::<Vec<_>>()});
    let path = format!("/connectors/{}/offsets", segment(connector));
    let r = client.patch(format!("{url}{path}")).json(&body).timeout(timeout).send().await.map_err(|e| format!("PATCH {path}: {}", error_text(&e)))?;
    let s = r.status().as_u16();
    let text = cut(r.text().await.unwrap_or_default());
    if (200..300).contains(&s) {
        Ok(format!("PATCH {path}: HTTP {s}"))
    } else {
        Err(format!("PATCH {path}: HTTP {s}: {text}"))
    }
}

/// `s` cut to 512 bytes at a character boundary.
fn cut(s: String) -> String {
    crate::remediate::connect_api::cut_at(s, 512)
}

/// A request error without its URL (which may hold credentials).
fn error_text(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stop_is_reached_when_stopped_and_resume_only_when_every_task_runs() {
        assert!(check(&json!({"connector": {"state": "STOPPED"}, "tasks": []}), ConnectOp::Stop).0);
        assert!(!check(&json!({"connector": {"state": "RUNNING"}, "tasks": [{"state": "FAILED"}]}), ConnectOp::Resume).0);
        assert!(check(&json!({"connector": {"state": "RUNNING"}, "tasks": [{"state": "RUNNING"}]}), ConnectOp::Resume).0);
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(cut("é".repeat(300)).len(), 512);
    }
}
