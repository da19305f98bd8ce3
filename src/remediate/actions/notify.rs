//! The `notify` action, used for escalation: a webhook (`POST url` with a JSON body
//! describing the run) or an Alertmanager (`POST url/api/v2/alerts` with one alert named
//! `StreamguardRemediation`, labelled with the runbook and the target).
//!
//! Idempotent by declaration: a duplicate message is better than a lost escalation.

use std::time::{Duration, SystemTime};

use super::{cut, error_text, ActionError, ActionOutcome, Context};
use crate::notify::Alert;
use crate::rules::file::runbook::{NotifyAction, NotifyFormat};

/// How long an Alertmanager keeps the alert active unless re-sent.
const ALERT_LIFETIME: Duration = Duration::from_secs(3600);

/// The webhook body. Pure.
pub fn webhook_body(a: &NotifyAction, cx: &Context<'_>) -> serde_json::Value {
    serde_json::json!({
        "source": "streamguard",
        "run_id": cx.run_id,
        "runbook": cx.runbook,
        "target": cx.target,
        "phase": cx.phase,
        "step": cx.step,
        "message": a.message,
    })
}

/// The Alertmanager alert. Pure.
pub fn alert(a: &NotifyAction, cx: &Context<'_>, now: SystemTime) -> Alert {
    let mut labels = crate::signal::Labels::new();
    for (k, v) in cx.target {
        if crate::notify::valid_label_name(k) {
            labels.insert(k.clone(), v.clone());
        }
    }
    labels.insert("alertname".into(), "StreamguardRemediation".into());
    labels.insert("runbook".into(), cx.runbook.to_string());
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert("summary".into(), a.message.clone());
    annotations.insert("run_id".into(), cx.run_id.to_string());
    annotations.insert("phase".into(), cx.phase.to_string());
    Alert { labels, annotations, starts_at: now, ends_at: now + ALERT_LIFETIME, generator_url: String::new() }
}

pub async fn perform(a: &NotifyAction, cx: &Context<'_>) -> Result<ActionOutcome, ActionError> {
    let (url, path, body) = match a.format {
        NotifyFormat::Webhook => (a.url.clone(), "webhook", webhook_body(a, cx)),
        NotifyFormat::Alertmanager => (
            format!("{}/api/v2/alerts", a.url),
            "/api/v2/alerts",
            serde_json::to_value([alert(a, cx, SystemTime::now())]).map_err(|e| ActionError::Config(e.to_string()))?,
        ),
    };
    let request = format!("POST {path}");
    let resp = cx
        .client
        .post(&url)
        .timeout(cx.timeout)
        .json(&body)
        .send()
        .await
        .map_err(|e| if e.is_timeout() { ActionError::Timeout { request: request.clone() } } else { ActionError::Unreachable { request: request.clone(), message: error_text(&e) } })?;
    let status = resp.status().as_u16();
    let response = cut(resp.text().await.unwrap_or_default());
    if !(200..300).contains(&status) {
        return Err(ActionError::Status { request, status, body: response });
    }
    Ok(ActionOutcome { request, status, response, observed: "delivered".into() })
}
