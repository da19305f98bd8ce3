//! `streamguard lag` through the real binary against the real broker of `stack/up` and
//! clusters it cannot use: the table (or JSON) alone on stdout, one stable line per
//! failed cluster on stderr naming the cause, the same on every run, exit code 1.
//! (Unknown hosts are covered by the unit tests with a stub resolver: these tests send
//! nothing beyond loopback, not even a DNS query.)

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::*;
use streamguard::sample::kafka_diagnose::{self, Unreachable};

/// A loopback server that, like Go's net/http or Jetty, answers nothing until a request
/// line ends, then "400 Bad Request". Serves until the test process exits.
fn http_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 256];
                while !seen.windows(2).any(|w| w == b"\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            });
        }
    });
    addr
}

fn cluster(name: &str, bootstrap: &str, group: &str) -> String {
    format!(
        r#"
[[clusters]]
name = "{name}"
bootstrap_servers = "{bootstrap}"
sample_timeout = "2s"
groups = {{ include = ["^{group}$"] }}
"#
    )
}

struct Lag {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn lag(config: &std::path::Path, extra: &[&str]) -> Lag {
    let out = run(Command::new(bin()).args(["lag", "--config"]).arg(config).args(extra).env_remove("STREAMGUARD_LOG"));
    Lag {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn lag_prints_the_table_alone_on_stdout_and_one_stable_cause_per_failed_cluster_on_stderr() {
    let b = bootstrap();
    let topic = unique("cli-lag-topic");
    let group = unique("cli-lag-group");
    create_topic(&b, &topic, 2);
    produce(&b, &topic, &[4, 2], None);
    consume_and_commit(&b, &group, &topic, &[1, 2]);

    let refused = format!("127.0.0.1:{}", free_port());
    let http = http_server();
    let dir = tempfile::tempdir().unwrap();
    let body = [cluster("good", &b, &group), cluster("refused", &refused, &group), cluster("web", &http, &group)].concat();
    let config = write_config(dir.path(), &body);

    let first = lag(&config, &[]);
    assert_eq!(first.code, Some(1), "a failed cluster fails the command:\n{}{}", first.stdout, first.stderr);
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert!(lines[0].starts_with("CLUSTER "), "{}", first.stdout);
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "only the good cluster's rows:\n{}", first.stdout);
    for (p, row) in rows.iter().enumerate() {
        assert_eq!((row[0], row[1], row[5], row[6]), ("good", group.as_str(), topic.as_str(), p.to_string().as_str()), "{}", first.stdout);
    }
    assert_eq!(rows[0][10], "3", "{}", first.stdout);
    assert_eq!(
        first.stderr,
        format!(
            "streamguard: cluster refused: cannot reach {refused}: connection refused\n\
             streamguard: cluster web: {http} is not a Kafka broker\n"
        )
    );

    let second = lag(&config, &[]);
    assert_eq!(second.stderr, first.stderr, "identical runs print identical errors");
    assert_eq!(second.code, Some(1));

    let json = lag(&config, &["--json"]);
    assert_eq!(json.code, Some(1));
    assert_eq!(json.stderr, first.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("stdout is JSON only ({e}):\n{}", json.stdout));
    let by_name: BTreeMap<&str, &serde_json::Value> =
        v["clusters"].as_array().unwrap().iter().map(|c| (c["cluster"].as_str().unwrap(), c)).collect();
    assert!(by_name["good"]["error"].is_null(), "{v}");
    assert_eq!(by_name["refused"]["error"], format!("cannot reach {refused}: connection refused"));
    assert_eq!(by_name["refused"]["error_kind"], "connection_refused");
    assert_eq!(by_name["web"]["error"], format!("{http} is not a Kafka broker"));
    assert_eq!(by_name["web"]["error_kind"], "not_kafka");
}

#[test]
fn the_diagnosis_finds_nothing_wrong_with_the_real_broker() {
    assert_eq!(kafka_diagnose::diagnose(&bootstrap(), &BTreeMap::new(), Duration::from_secs(2)), None);
    let refused = format!("127.0.0.1:{}", free_port());
    assert_eq!(
        kafka_diagnose::diagnose(&format!("{refused},{}", bootstrap()), &BTreeMap::new(), Duration::from_secs(2)),
        None,
        "one usable bootstrap server is enough"
    );
    assert_eq!(
        kafka_diagnose::diagnose(&refused, &BTreeMap::new(), Duration::from_secs(2)),
        Some(Unreachable::Refused { server: refused.clone() })
    );
}
