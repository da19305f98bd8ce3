//! The `[remediation]` table, validated like the rest of the configuration (every
//! problem at once, each with its origin and key).

use std::path::Path;
use std::time::Duration;

use figment::value::{Dict, Value};

use super::validate::Validator;
use super::RemediationConfig;

const KEYS: [&str; 10] = [
    "default_mode",
    "journal",
    "audit",
    "audit_max_size",
    "audit_max_files",
    "max_concurrent_runs",
    "queue_capacity",
    "approval_timeout",
    "api_token_file",
    "api_token_env",
];
const MODES: [&str; 3] = ["dry-run", "act", "approve"];

impl Validator<'_> {
    pub(super) fn remediation(&mut self, dict: &Dict, base: &Path) -> Option<RemediationConfig> {
        let v = dict.get("remediation")?;
        let Value::Dict(_, d) = v else {
            self.error(Some(v), "remediation", "expected a table ([remediation])");
            return None;
        };
        let p = "remediation";
        self.unknown_keys(d, p, &KEYS);
        let mut c = RemediationConfig {
            default_mode: "dry-run".into(),
            journal: base.join("streamguard-journal.jsonl"),
            audit: base.join("streamguard-audit.jsonl"),
            audit_max_size: 64 << 20,
            audit_max_files: 5,
            max_concurrent_runs: 4,
            queue_capacity: 1024,
            approval_timeout: Duration::from_secs(3600),
            api_token_file: None,
            api_token_env: None,
        };
        if let Some((m, mv)) = self.string(d, p, "default_mode") {
            if MODES.contains(&m) {
                c.default_mode = m.to_string();
            } else {
                self.error(Some(mv), "remediation.default_mode", format!("must be one of {}", MODES.join(", ")));
            }
        }
        for (key, slot) in [("journal", &mut c.journal), ("audit", &mut c.audit)] {
            if let Some((s, sv)) = self.string(d, p, key) {
                if s.trim().is_empty() {
                    self.error(Some(sv), &format!("remediation.{key}"), "must not be empty");
                } else {
                    *slot = base.join(s);
                }
            }
        }
        if let Some(n) = self.positive(d, p, "audit_max_size") {
            c.audit_max_size = n as u64;
        }
        if let Some(n) = self.positive(d, p, "audit_max_files") {
            c.audit_max_files = n;
        }
        if let Some(n) = self.positive(d, p, "max_concurrent_runs") {
            c.max_concurrent_runs = n;
        }
        if let Some(n) = self.positive(d, p, "queue_capacity") {
            c.queue_capacity = n;
        }
        if let Some(t) = self.duration(d, p, "approval_timeout") {
            c.approval_timeout = t;
        }
        c.api_token_file = self.string(d, p, "api_token_file").map(|(s, _)| base.join(s));
        c.api_token_env = self.string(d, p, "api_token_env").map(|(s, _)| s.to_string());
        Some(c)
    }
}
