//! `streamguard check` and config errors through the real binary: every kind of bad
//! configuration names its key (and file), and the exit code is 1; a good one exits 0.

mod common;

use std::process::Command;

use common::*;

fn check(body: &str) -> (i32, String, String, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), body);
    let out = run(Command::new(bin()).args(["check", "--config"]).arg(&path).env_remove("STREAMGUARD_LISTEN"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
        dir,
    )
}

const GOOD: &str = "[[clusters]]\nname = \"local\"\nbootstrap_servers = \"127.0.0.1:9092\"\n";

#[test]
fn a_valid_config_passes_check_with_exit_code_0() {
    let (code, out, _, path, _d) = check(GOOD);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("SUCCESS: {}: 1 cluster(s): local", path.display()));
}

#[test]
fn each_kind_of_bad_config_names_its_key_and_exits_1() {
    let cases: &[(&str, &str, &str)] = &[
        ("unknown key", "sample_intervl = \"10s\"\n", "sample_intervl: unknown key (did you mean `sample_interval`?)"),
        ("bad duration", "sample_interval = \"ten seconds\"\n", "sample_interval: invalid duration \"ten seconds\""),
        ("bad regex", "groups = { exclude = [\"[z-a]\"] }\n", "groups.exclude[0]: invalid regex \"[z-a]\""),
        (
            "duplicate cluster",
            "[[clusters]]\nname = \"local\"\nbootstrap_servers = \"h:1\"\n",
            "clusters[1].name: duplicate cluster name \"local\" (first at clusters[0])",
        ),
        ("unknown cluster key", "[[clusters]]\nname = \"x\"\nbootstrap = \"h:1\"\n", "clusters[1].bootstrap: unknown key"),
        ("bad listen", "listen = \"localhost\"\n", "listen: invalid address \"localhost\""),
    ];
    for (what, extra, expected) in cases {
        // Top-level keys must come before the first [[clusters]] table in TOML.
        let body = if extra.starts_with("[[") { format!("{GOOD}{extra}") } else { format!("{extra}{GOOD}") };
        let (code, out, err, path, _d) = check(&body);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(out.starts_with("FAILED:"), "{what}: {out}");
        let want = format!("{}: {expected}", path.display());
        assert!(err.contains(&want), "{what}: expected {want:?} in:\n{err}");
    }
}

#[test]
fn all_errors_of_one_file_are_reported_together() {
    let body = format!("sample_interval = \"x\"\nsample_timeout = \"y\"\nfoo = 1\n{GOOD}");
    let (code, out, err, _, _d) = check(&body);
    assert_eq!(code, 1);
    assert!(out.contains("3 error(s)"), "{out}");
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn environment_overrides_are_validated_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), GOOD);
    let out = run(Command::new(bin()).args(["check", "--config"]).arg(&path).env("STREAMGUARD_SAMPLE_TIMEOUT", "soon"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("environment variable STREAMGUARD_SAMPLE_TIMEOUT: sample_timeout: invalid duration \"soon\""), "{err}");
}

#[test]
fn run_with_a_bad_config_exits_1_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "clusters = 3\n");
    let out = run(Command::new(bin()).args(["run", "--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("streamguard: "), "{err}");
    assert!(err.contains("clusters: expected an array of tables"), "{err}");
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let out = run(Command::new(bin()).args(["check", "--config", "/nonexistent/sg.toml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/sg.toml: cannot read config file"));
}

#[test]
fn a_rule_with_an_absurd_window_fails_check_with_a_located_error_instead_of_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("absurd.yaml");
    std::fs::write(
        &rules,
        "apiVersion: streamguard/v1\nkind: Alert\nmetadata: { name: a }\nspec:\n  condition: max(rate(lag_offsets, 1e20s)) > 0\n",
    )
    .unwrap();
    let out = run(Command::new(bin()).arg("check").arg(&rules));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("FAILED: ") && stdout.contains("absurd.yaml: 1 error(s)"), "{stdout}");
    let want = format!("{}:5:36: alert \"a\": window 1e20s is too long (at most 366d)", rules.display());
    assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
}

#[test]
fn config_durations_too_large_to_compute_with_are_named_errors() {
    for (key, body) in [
        ("sample_interval", format!("sample_interval = \"500000000000y\"\n{GOOD}")),
        ("rules.evaluation_interval", format!("{GOOD}[rules]\nevaluation_interval = \"500000000000y\"\n")),
    ] {
        let (code, out, err, path, _d) = check(&body);
        assert_eq!(code, 1, "{key}: {out}{err}");
        // Both keys have a tighter bound than the general 366d (see limits.rs).
        let want = format!("{}: {key}: must be at most 1h", path.display());
        assert!(err.contains(&want), "{key}: expected {want:?} in:\n{err}");
    }
}

/// `[[scale]]` targets: `check` reports every problem with its file and key, as `run` would refuse them.
#[test]
fn bad_scale_targets_are_reported_with_their_keys_and_a_good_one_passes() {
    let good = format!("{GOOD}[[scale]]\nname = \"orders\"\ngroup = \"g\"\ntopic = \"t\"\npolicy = {{ type = \"lag\", lag_threshold = 100 }}\nactuator = {{ type = \"command\", command = [\"/usr/local/bin/scale-orders\"] }}\n");
    let (code, out, err, _, _d) = check(&good);
    assert_eq!(code, 0, "{out}{err}");
    let bad = format!("{GOOD}[[scale]]\nname = \"orders\"\ncluster = \"nope\"\ngroup = \"g\"\ntopic = \"t\"\nmax_step = 0\npolicy = {{ type = \"throughput\", catch_up_within = \"soon\" }}\nactuator = {{ type = \"process\", command = [] }}\n[[scale]]\nname = \"x\"\ngroup = \"g\"\ntopic = \"t\"\npolicy = {{ type = \"lag\", lagThreshold = 5 }}\nactuator = {{ type = \"command\", command = [\"x\"] }}\n");
    let (code, out, err, path, _d) = check(&bad);
    assert_eq!(code, 1, "{out}{err}");
    let all = format!("{out}{err}");
    for want in [
        "scale[0].max_step: must be ≥ 1",
        "scale[0].policy.catch_up_within: invalid duration \"soon\"",
        "scale[0].actuator.command: must name a program",
        "scale[0].cluster: no [[clusters]] named \"nope\"",
        "scale[1]: unknown field: found `lagThreshold`",
    ] {
        assert!(all.contains(&format!("{}: {want}", path.display())), "missing {want:?} in:\n{all}");
    }
}
