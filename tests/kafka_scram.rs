//! The agent over SASL/SCRAM + TLS, end to end, against the stack broker's SASL_SSL
//! listener (self-signed CA and `streamguard` user made by `stack/up kafka`; addresses
//! from `stack/env`): lag sampled with SCRAM-SHA-512 and SCRAM-SHA-256, the password read
//! from a file and from an environment variable, and a wrong password reported as
//! "authentication failed" with a bounded cause, never as a timeout, and never printed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

struct Scram {
    bootstrap: String,
    ca: String,
    user: String,
    password: String,
}

fn scram() -> Scram {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set: run through scripts/test (or eval \"$(stack/env)\")"));
    let s = Scram {
        bootstrap: var("KAFKA_SASL_SSL_BOOTSTRAP"),
        ca: var("KAFKA_SSL_CA_LOCATION"),
        user: var("KAFKA_SASL_USERNAME"),
        password: var("KAFKA_SASL_PASSWORD"),
    };
    assert!(!s.password.is_empty(), "KAFKA_SASL_PASSWORD is empty: the stack's broker has not been started");
    s
}

/// A group with 6 records of lag on a fresh topic (set up over the PLAINTEXT listener).
fn lagging_group() -> String {
    let b = bootstrap();
    let topic = unique("scram-topic");
    let group = unique("scram-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[8], None);
    consume_and_commit(&b, &group, &topic, &[2]);
    group
}

fn config(port: u16, s: &Scram, group: &str, mechanism: &str, password_property: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
sample_interval = "2s"
sample_timeout = "2s"
backoff_max = "2s"

[[clusters]]
name = "secure"
bootstrap_servers = "{}"
groups = {{ include = ["^{group}$"] }}
properties = {{ "security.protocol" = "SASL_SSL", "sasl.mechanism" = "{mechanism}", "sasl.username" = "{}", "ssl.ca.location" = "{}", {password_property} }}
"#,
        s.bootstrap, s.user, s.ca
    )
}

fn lag_json(body: &str, env: &[(&str, &str)]) -> (i32, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), body);
    let mut cmd = Command::new(bin());
    cmd.args(["lag", "--json", "--config"]).arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn group_lag(json: &serde_json::Value, group: &str) -> Option<i64> {
    let groups = json["clusters"][0]["groups"].as_array()?;
    groups.iter().find(|g| g["group"] == group)?["lag_offsets"].as_i64()
}

#[test]
fn lag_is_sampled_over_scram_sha_512_and_tls_with_the_password_from_a_file() {
    let s = scram();
    let group = lagging_group();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    // As Kubernetes (and echo) write it: with a trailing newline.
    std::fs::write(&pw, format!("{}\n", s.password)).unwrap();
    let body = config(free_port(), &s, &group, "SCRAM-SHA-512", &format!(r#""sasl.password_file" = "{}""#, pw.display()));
    let (code, json, stderr) = lag_json(&body, &[]);
    assert_eq!(code, 0, "{stderr}\n{json}");
    assert_eq!(group_lag(&json, &group), Some(6), "{json}");
    assert!(!stderr.contains(&s.password) && !json.to_string().contains(&s.password));
}

#[test]
fn lag_is_sampled_over_scram_sha_256_with_the_password_from_an_environment_variable() {
    let s = scram();
    let group = lagging_group();
    let body = config(free_port(), &s, &group, "SCRAM-SHA-256", r#""sasl.password_env" = "SG_TEST_SCRAM_PASSWORD""#);
    let (code, json, stderr) = lag_json(&body, &[("SG_TEST_SCRAM_PASSWORD", &s.password)]);
    assert_eq!(code, 0, "{stderr}\n{json}");
    assert_eq!(group_lag(&json, &group), Some(6), "{json}");
    // Without the variable, the configuration is refused, naming the variable.
    let (code, _, stderr) = lag_json(&body, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("environment variable SG_TEST_SCRAM_PASSWORD is not set"), "{stderr}");
}

#[test]
fn a_wrong_password_reads_authentication_failed_in_the_target_and_the_metric_not_timed_out() {
    let s = scram();
    let group = lagging_group();
    let wrong = "wrong-Passw0rd-not-this-one";
    let port = free_port();
    let body = config(port, &s, &group, "SCRAM-SHA-512", &format!(r#""sasl.password" = "{wrong}""#));

    let (code, _, stderr) = lag_json(&body, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("authentication failed"), "lag: {stderr}");
    assert!(!stderr.contains(wrong), "lag printed the password: {stderr}");

    let agent = Agent::start_with(port, &body);
    let error = || -> Option<String> {
        let (_, body) = agent.get("/api/v1/targets");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["sources"].as_array()?.iter().find(|x| x["name"] == "secure")?["last_error"].as_str().map(str::to_string)
    };
    wait_until(Duration::from_secs(30), "a failed sample", || error().is_some());
    let e = error().unwrap();
    assert!(e.contains("authentication failed"), "target detail: {e}");
    assert!(!e.contains("timed out"), "target detail: {e}");
    // Every failure, not only the first (librdkafka reports a repeated one rarely).
    let auth_errors = || agent.metrics().get("streamguard_sample_errors_total", &[("source", "secure"), ("error", "authentication")]).unwrap_or(0.0);
    wait_until(Duration::from_secs(30), "three failed samples", || auth_errors() >= 3.0);
    let m = agent.metrics();
    assert_eq!(m.get("streamguard_sample_errors_total", &[("source", "secure"), ("error", "timeout")]), None, "{}", m.text);
    assert!(error().unwrap().contains("authentication failed"));
    for path in ["/api/v1/targets", "/metrics", "/readyz"] {
        assert!(!agent.get(path).1.contains(wrong), "{path} shows the password");
    }
    assert!(!agent.log().contains(wrong), "the log shows the password");
}

#[test]
fn a_rotated_password_file_is_picked_up_by_the_running_agent_after_an_authentication_failure() {
    let s = scram();
    let group = lagging_group();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "the-old-password\n").unwrap();
    let port = free_port();
    let body = config(port, &s, &group, "SCRAM-SHA-512", &format!(r#""sasl.password_file" = "{}""#, pw.display()));
    let agent = Agent::start_with(port, &body);
    let last_error = || -> String {
        let (_, body) = agent.get("/api/v1/targets");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["sources"][0]["last_error"].as_str().unwrap_or("").to_string()
    };
    wait_until(Duration::from_secs(30), "an authentication failure", || last_error().contains("authentication failed"));
    // Kubernetes updates the mounted secret in place.
    std::fs::write(&pw, format!("{}\n", s.password)).unwrap();
    wait_until(Duration::from_secs(30), "fresh lag with the new password, without a restart", || {
        agent.get("/readyz").0 == 200 && agent.metrics().get("streamguard_kafka_group_lag_offsets", &[("group", &group)]) == Some(6.0)
    });
    assert!(agent.log().contains("a secret changed; Kafka client rebuilt"), "{}", agent.log());
    assert!(!agent.log().contains(&s.password), "the log shows the password");
}
