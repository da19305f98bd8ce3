//! Secrets in Kafka client properties never reach stdout, stderr, the API or /metrics,
//! whatever the command (`check`, `lag`, `run`) and whether the property is misspelled,
//! invalid or fine; `check` rejects what `run` would reject. Against the stack's broker
//! (PLAINTEXT listener: the secrets here are never used to authenticate).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const SECRET: &str = "hunter2-Sup3rSecret";

fn config(port: u16, properties: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
sample_interval = "1s"
sample_timeout = "1s"

[[clusters]]
name = "local"
bootstrap_servers = "{}"
groups = {{ include = ["^no-such-group-secrets$"] }}
properties = {{ {properties} }}
"#,
        bootstrap()
    )
}

struct Out {
    code: i32,
    text: String,
}

fn cli(args: &[&str], body: &str) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), body);
    let out = run(Command::new(bin()).args(args).arg("--config").arg(&path).env("STREAMGUARD_LOG", "debug"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Out { code: out.status.code().unwrap_or(-1), text }
}

/// `run` with a config it must refuse: it exits (non-zero) within seconds.
fn run_refused(body: &str) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), body);
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("STREAMGUARD_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("run kept running with a bad property:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        text: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    }
}

#[test]
fn a_misspelled_secret_property_fails_check_lag_and_run_without_printing_its_value() {
    let body = config(free_port(), &format!(r#""sasl.pasword" = "{SECRET}""#));
    let check = cli(&["check"], &body);
    assert_eq!(check.code, 1, "check must reject an unknown librdkafka property:\n{}", check.text);
    assert!(check.text.contains("properties.\"sasl.pasword\""), "the error names the key:\n{}", check.text);
    assert!(check.text.contains("unknown"), "{}", check.text);
    let lag = cli(&["lag"], &body);
    let run = run_refused(&body);
    for (what, o) in [("check", &check), ("lag", &lag), ("run", &run)] {
        assert_ne!(o.code, 0, "{what} accepted it:\n{}", o.text);
        assert!(!o.text.contains(SECRET), "{what} printed the secret:\n{}", o.text);
    }
}

#[test]
fn an_invalid_value_next_to_a_secret_is_reported_without_any_secret() {
    // A bad value of a secret-named key, and a bad value of a plain key: both rejected,
    // the plain one may show its value, the secret one never.
    let body = config(free_port(), &format!(r#""sasl.password" = "{SECRET}", "ssl.key.password" = "{SECRET}", "security.protocol" = "carrier-pigeon""#));
    for o in [cli(&["check"], &body), cli(&["lag"], &body), run_refused(&body)] {
        assert_ne!(o.code, 0, "{}", o.text);
        assert!(o.text.contains("security.protocol"), "{}", o.text);
        assert!(!o.text.contains(SECRET), "printed the secret:\n{}", o.text);
    }
}

#[test]
fn a_running_agent_with_secret_properties_never_shows_them_in_logs_api_or_metrics() {
    // Valid properties that a PLAINTEXT connection ignores (librdkafka warns about them).
    let port = free_port();
    let body = config(port, &format!(r#""sasl.username" = "someone", "sasl.password" = "{SECRET}", "sasl.mechanism" = "SCRAM-SHA-512""#));
    let check = cli(&["check"], &body);
    assert_eq!(check.code, 0, "{}", check.text);
    assert!(!check.text.contains(SECRET), "{}", check.text);
    let agent = Agent::start_with(port, &body);
    wait_until(Duration::from_secs(30), "a sample", || agent.get("/readyz").0 == 200);
    for path in ["/api/v1/targets", "/metrics", "/api/v1/signals", "/readyz"] {
        let (_, text) = agent.get(path);
        assert!(!text.contains(SECRET), "{path} shows the secret:\n{text}");
    }
    assert!(!agent.log().contains(SECRET), "the log shows the secret:\n{}", agent.log());
}
