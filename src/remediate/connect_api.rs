//! What the `connect` action and the offsets procedure's Connect pause share: the path
//! segment encoding, a response cut to size, and the reading of a connector's status.
//! A leaf: it depends on nothing of `remediate`, so `actions` (which uses the offsets
//! procedure) and `offsets` can both use it without a cycle (tests/module_graph.rs).

use crate::rules::file::runbook::ConnectOp;

/// Percent-encodes a path segment (connector names may hold any character).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` cut to `max` bytes at a character boundary.
pub fn cut_at(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// Whether a `GET /connectors/{c}/status` answer shows the state `op` should lead to,
/// and what it shows. Pure.
pub fn check(status: &serde_json::Value, op: ConnectOp) -> (bool, String) {
    let connector = status["connector"]["state"].as_str().unwrap_or("?");
    let tasks: Vec<&str> = status["tasks"].as_array().map(|t| t.iter().map(|t| t["state"].as_str().unwrap_or("?")).collect()).unwrap_or_default();
    let seen = format!("connector {connector}, tasks [{}]", tasks.join(", "));
    let reached = match op {
        ConnectOp::Restart | ConnectOp::RestartFailedTasks | ConnectOp::Resume => {
            connector == "RUNNING" && !tasks.is_empty() && tasks.iter().all(|t| *t == "RUNNING")
        }
        ConnectOp::Pause => connector == "PAUSED",
        ConnectOp::Stop => connector == "STOPPED",
    };
    (reached, seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded_and_cuts_keep_characters_whole() {
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(cut_at("é".repeat(300), 512).len(), 512);
        assert_eq!(cut_at("é".repeat(300), 511).len(), 510);
        assert_eq!(cut_at("abc".into(), 512), "abc");
    }
}
