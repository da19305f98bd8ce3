//! One validator with sane bounds for every duration and number of the configuration
//! (issue 13, item 2), table-driven: each key just above its bound is a located error
//! (the file and the key), each key at its bound loads. `check` and `run` both call
//! `config::load`, so what loads here runs. No stack needed.

mod common;

use std::process::Command;

use common::*;
use streamguard::config;

const CLUSTER: &str = "[[clusters]]\nname = \"a\"\nbootstrap_servers = \"127.0.0.1:1\"\n";

/// (top-level lines, lines inside the cluster table, further tables)
type Case = (&'static str, &'static str, &'static str, &'static str);

fn body((top, cluster, tables, _): &Case) -> String {
    format!("listen = \"127.0.0.1:0\"\n{top}\n{CLUSTER}{cluster}\n{tables}\n")
}

fn load(text: &str) -> Result<config::Config, config::ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    config::load(&path)
}

const BIG: &[Case] = &[
    ("sample_interval = \"400000000000y\"", "", "", "sample_interval"),
    ("sample_interval = \"2h\"", "", "", "sample_interval: must be at most 1h"),
    ("sample_interval = \"1h\"\nsample_timeout = \"11m\"", "", "", "sample_timeout: must be at most 10m"),
    ("backoff_max = \"2h\"", "", "", "backoff_max: must be at most 1h"),
    ("offset_fetch_concurrency = 1025", "", "", "offset_fetch_concurrency: must be at most 1024"),
    ("offset_fetch_concurrency = 99999999999999999999", "", "", "line 2, column 28"),
    ("", "sample_interval = \"30d\"", "", "clusters[0].sample_interval: must be at most 1h"),
    ("", "backoff_max = \"300d\"", "", "clusters[0].backoff_max: must be at most 1h"),
    ("sample_interval = \"1h\"\nsample_timeout = \"10m\"", "probe_timeout = \"11m\"", "", "clusters[0].probe_timeout: must be at most 10m"),
    ("", "probe_budget = 100001", "", "clusters[0].probe_budget: must be at most 100000"),
    ("", "offset_fetch_concurrency = 2000", "", "clusters[0].offset_fetch_concurrency: must be at most 1024"),
    ("", "", "[[connect]]\nname = \"c\"\nurl = \"http://127.0.0.1:1\"\nsample_interval = \"2h\"", "connect[0].sample_interval: must be at most 1h"),
    ("", "", "[[flink]]\nname = \"f\"\nurl = \"http://127.0.0.1:1\"\nsample_timeout = \"11m\"", "flink[0].sample_timeout: must be at most 10m"),
    ("", "", "[[prometheus]]\nname = \"p\"\nurl = \"http://127.0.0.1:1\"\nbackoff_max = \"2h\"", "prometheus[0].backoff_max: must be at most 1h"),
    ("", "", "[rules]\nevaluation_interval = \"300d\"", "rules.evaluation_interval: must be at most 1h"),
    ("", "", "[rules]\nevaluation_interval = \"400000000000y\"", "rules.evaluation_interval"),
    ("", "", "[rules]\nunknown_after = \"2d\"", "rules.unknown_after: must be at most 1d"),
    ("", "", "[rules]\nconfidence = nan", "rules.confidence"),
    ("", "", "[rules]\nconfidence = inf", "rules.confidence"),
    ("", "", "[history]\nretention = \"400d\"", "history.retention: must be at most 366d"),
    ("", "", "[history]\nmax_points = 1000001", "history.max_points: must be at most 1000000"),
    ("", "", "[history]\nretention = \"366d\"\nrate_window = \"367d\"", "history.rate_window: must be at most 366d"),
    ("", "", "[history]\nretention = \"366d\"\nstatus_window = \"367d\"", "history.status_window: must be at most 366d"),
    ("", "", "[notify]\nresend_interval = \"2d\"", "notify.resend_interval: must be at most 1d"),
    ("", "", "[notify]\nresend_interval = \"1d\"\ntimeout = \"6m\"", "notify.timeout: must be at most 5m"),
    ("", "", "[notify]\nqueue_capacity = 1000001", "notify.queue_capacity: must be at most 1000000"),
    ("", "", "[notify]\nresend_interval = \"1d\"\n[[alertmanagers]]\nurl = \"http://127.0.0.1:1\"\ntimeout = \"6m\"", "alertmanagers[0].timeout: must be at most 5m"),
    ("", "", "[record]\npath = \"rec\"\nmax_age = \"400d\"", "record.max_age: must be at most 366d"),
    ("", "", "[record]\npath = \"rec\"\nmax_size = \"99999999999999999999GiB\"", "record.max_size"),
];

const AT_BOUND: &[Case] = &[
    ("sample_interval = \"1h\"\nsample_timeout = \"10m\"\nbackoff_max = \"1h\"\noffset_fetch_concurrency = 1024", "probe_timeout = \"9m\"\nprobe_budget = 100000", "", ""),
    ("", "", "[rules]\nevaluation_interval = \"1h\"\nunknown_after = \"1d\"\nconfidence = 0.99", ""),
    ("", "", "[history]\nretention = \"366d\"\nmax_points = 1000000\nrate_window = \"366d\"\nstatus_window = \"366d\"", ""),
    ("", "", "[notify]\nresend_interval = \"1d\"\ntimeout = \"5m\"\nqueue_capacity = 1000000\n[[alertmanagers]]\nurl = \"http://127.0.0.1:1\"\ntimeout = \"5m\"", ""),
    ("", "", "[record]\npath = \"rec\"\nmax_age = \"366d\"", ""),
];

#[test]
fn every_duration_and_number_key_above_its_bound_is_an_error_naming_the_file_and_key() {
    let mut failures = Vec::new();
    for case in BIG {
        let text = body(case);
        match load(&text) {
            Ok(_) => failures.push(format!("accepted:\n{text}")),
            Err(e) => {
                let shown = e.to_string();
                let located = e.0.iter().any(|err| err.origin.ends_with("c.toml") && err.to_string().contains(case.3));
                if !located {
                    failures.push(format!("expected `{}` in:\n{shown}", case.3));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn every_duration_and_number_key_at_its_bound_loads() {
    for case in AT_BOUND {
        let text = body(case);
        if let Err(e) = load(&text) {
            panic!("{text}\n{e}");
        }
    }
}

#[test]
fn check_reports_an_out_of_range_interval_and_run_refuses_it_the_same_way_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &body(&("sample_interval = \"400000000000y\"", "", "[rules]\nevaluation_interval = \"300d\"", "")));
    let check = run(Command::new(bin()).args(["check", "--config"]).arg(&cfg));
    let text = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(text.contains("sample_interval"), "{text}");
    assert!(text.contains("rules.evaluation_interval: must be at most 1h"), "{text}");
    let started = run(Command::new(bin()).args(["run", "--config"]).arg(&cfg));
    let err = String::from_utf8_lossy(&started.stderr);
    assert_eq!(started.status.code(), Some(1), "an error exit, never a panic (101) or an abort:\n{err}");
    assert!(err.contains("rules.evaluation_interval: must be at most 1h") && !err.contains("panicked"), "{err}");
}

#[test]
fn an_slo_objective_that_is_nan_infinite_or_outside_0_to_100_percent_is_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    for (i, objective) in [".nan", ".inf", "-.inf", "NaN", "100%", "0%", "-5%", "1e400", "101%"].iter().enumerate() {
        let path = dir.path().join(format!("slo{i}.yaml"));
        let text = format!(
            "apiVersion: streamguard/v1\nkind: SLO\nmetadata: {{ name: s }}\nspec:\n  objective: {objective}\n  window: 1d\n  indicator:\n    timeslice:\n      condition: lag_offsets < 10\n"
        );
        std::fs::write(&path, text).unwrap();
        let out = run(Command::new(bin()).arg("check").arg(&path));
        let shown = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{objective}:\n{shown}");
        assert!(shown.contains(&format!("{}:5:14: slo \"s\": objective", path.display())), "{objective}:\n{shown}");
    }
}
