//! Rule files and their tooling through the real binary and promtool: table tests over
//! `tests/testdata/rules/*.{good,bad}.yaml` (every expected message and position), the
//! shipped examples in `rules/` with their unit tests, and the Prometheus export.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use streamguard::rules::file;

fn testdata() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(repo_root().join("tests/testdata/rules")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn every_bad_file_reports_exactly_its_expected_errors_with_positions_and_good_files_load() {
    let signals = file::SignalNames::builtin();
    let files = testdata();
    assert!(files.len() >= 4);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let (result, _) = file::load(std::slice::from_ref(&path), &signals);
        if name.ends_with(".good.yaml") {
            assert!(result.is_ok(), "{name}: {}", result.unwrap_err());
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: BTreeSet<String> =
            text.lines().filter_map(|l| l.strip_prefix("# expect: ")).map(|l| format!("{}:{l}", path.display())).collect();
        assert!(!expected.is_empty(), "{name} has no # expect: lines");
        let got: BTreeSet<String> = result.unwrap_err().0.iter().map(ToString::to_string).collect();
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn check_prints_success_or_failed_per_file_with_exit_codes() {
    let out = run(Command::new(bin()).arg("check").arg(repo_root().join("rules")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let files = std::fs::read_dir(repo_root().join("rules"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".yaml"))
        .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".test.yaml"))
        .count();
    assert_eq!(stdout.lines().filter(|l| l.starts_with("SUCCESS: ")).count(), files, "one line per rule file: {stdout}");

    let out = run(Command::new(bin()).arg("check").arg(repo_root().join("tests/testdata/rules")));
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SUCCESS: ") && stdout.contains("everything.good.yaml"), "{stdout}");
    assert!(stdout.contains("FAILED: ") && stdout.contains("alert.bad.yaml: 4 error(s)"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("alert.bad.yaml:21:3: alert \"c\": unknown field `fro` (did you mean `for`?)"), "{stderr}");
}

#[test]
fn the_shipped_example_rules_pass_their_unit_tests() {
    let tests: Vec<PathBuf> = std::fs::read_dir(repo_root().join("rules"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yaml"))
        .collect();
    assert!(tests.len() >= 4, "{tests:?}");
    let out = run(Command::new(bin()).arg("test").args(&tests));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.trim_end().ends_with(" passed, 0 failed"), "{stdout}");
}

#[test]
fn a_rule_test_with_a_wrong_expectation_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo_root().join("rules/flink.yaml"), dir.path().join("flink.yaml")).unwrap();
    let test = dir.path().join("wrong.test.yaml");
    std::fs::write(
        &test,
        r#"rule_files: [flink.yaml]
evaluation_interval: 1m
tests:
  - name: claims the alert fires too early
    input_series:
      - series: 'checkpoint_age_seconds{flink="local",flink_job="etl"}'
        values: "0+60x20"
    alert_rule_test:
      - eval_time: 5m
        alertname: flink-checkpoint-stale
        exp_alerts:
          - exp_labels: { flink: local, flink_job: etl }
"#,
    )
    .unwrap();
    let out = run(Command::new(bin()).arg("test").arg(&test));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED: ") && stdout.contains("claims the alert fires too early: at 5m"), "{stdout}");
    assert!(stdout.trim_end().ends_with("0 passed, 1 failed"), "{stdout}");
}

#[test]
fn exported_prometheus_rules_pass_promtool_check_rules_and_inexact_rules_are_refused() {
    // The shipped examples hold a trend alert (time_to_breach), which has no exact PromQL
    // form: a plain export refuses, names it and writes nothing.
    let out = run(Command::new(bin()).args(["export", "prometheus"]).arg(repo_root().join("rules")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("kafka-freshness.yaml: rule \"payments-lag-rising\"") && stderr.contains("cannot be exported exactly"), "{stderr}");

    let out = run(Command::new(bin()).args(["export", "prometheus", "--partial"]).arg(repo_root().join("rules")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exported.yml");
    std::fs::write(&file, &out.stdout).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("payments-lag-rising"), "{text}");
    assert!(text.contains("alert: \"kafka-offsets-out-of-range\""), "{text}");
    assert!(text.contains("record: slo:streamguard_sli_bad:bool") && text.contains("record: slo:streamguard_sli_error:ratio_rate1h"), "{text}");
    assert!(text.contains("record: slo:streamguard_sli_bad:sum") && text.contains("record: slo:streamguard_sli_total:sum"), "{text}");
    let promtool = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".into());
    let check = run(Command::new(promtool).args(["check", "rules"]).arg(&file));
    assert!(
        check.status.success(),
        "promtool rejected the export:\n{}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Writes `flink.yaml` and a test file with `body` into a temporary directory and runs
/// `streamguard test` on it: (exit code, stdout, test file path, dir).
fn run_flink_test(body: &str) -> (Option<i32>, String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo_root().join("rules/flink.yaml"), dir.path().join("flink.yaml")).unwrap();
    let test = dir.path().join("t.test.yaml");
    std::fs::write(&test, body).unwrap();
    let out = run(Command::new(bin()).arg("test").arg(&test));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), test, dir)
}

#[test]
fn a_rule_test_whose_last_eval_time_is_off_the_evaluation_grid_fails_with_a_located_error() {
    let (code, stdout, test, _dir) = run_flink_test(
        r#"rule_files: [flink.yaml]
evaluation_interval: 1m
tests:
  - name: the only expectation is between two evaluations
    input_series:
      - series: 'checkpoint_age_seconds{flink="local",flink_job="etl"}'
        values: "0+60x20"
    alert_rule_test:
      - eval_time: 10m30s
        alertname: flink-checkpoint-stale
        exp_alerts: []
"#,
    );
    assert_eq!(code, Some(1), "{stdout}");
    let want = format!(
        "FAILED: {}:9:20: the only expectation is between two evaluations: eval_time 10m 30s is not a multiple of evaluation_interval 1m",
        test.display()
    );
    assert!(stdout.contains(&want), "expected {want:?} in:\n{stdout}");
    assert!(!stdout.contains("SUCCESS"), "{stdout}");
}

#[test]
fn wrong_types_and_unknown_keys_deep_in_a_rule_test_are_all_reported_at_their_line_and_column() {
    let (code, stdout, test, _dir) = run_flink_test(
        r#"rule_files: [flink.yaml]
evaluation_interval: 1m
tests:
  - name: deep mistakes
    input_series:
      - series: 'checkpoint_age_seconds{flink="local",flink_job="etl"}'
        value: "0+60x20"
    alert_rule_test:
      - eval_time: 5m
        alertname: flink-checkpoint-stale
        exp_alerts: firing
    slo_test:
      - { eval_time: 5m, slo: none, exp_sli: high }
"#,
    );
    assert_eq!(code, Some(1), "{stdout}");
    let p = test.display();
    for want in [
        format!("FAILED: {p}:7:9: deep mistakes: input_series: unknown field `value` (did you mean `values`?)"),
        format!("FAILED: {p}:6:9: deep mistakes: input_series: values is required"),
        format!("FAILED: {p}:11:21: deep mistakes: alert_rule_test: exp_alerts: expected a list"),
        format!("FAILED: {p}:13:46: deep mistakes: slo_test: exp_sli: expected a number"),
    ] {
        assert!(stdout.contains(&want), "expected {want:?} in:\n{stdout}");
    }
    assert!(stdout.trim_end().ends_with("0 passed, 4 failed"), "nothing runs past a malformed file:\n{stdout}");
}

#[test]
fn a_rule_test_file_with_no_expectations_fails() {
    let (code, stdout, test, _dir) = run_flink_test(
        r#"rule_files: [flink.yaml]
tests:
  - name: input but nothing to check
    input_series:
      - series: 'checkpoint_age_seconds{flink="local",flink_job="etl"}'
        values: "0+60x20"
"#,
    );
    assert_eq!(code, Some(1), "{stdout}");
    let want = format!("FAILED: {}:3:5: input but nothing to check: no alert_rule_test or slo_test to check", test.display());
    assert!(stdout.contains(&want), "expected {want:?} in:\n{stdout}");
}

#[test]
fn non_finite_or_unbounded_numbers_in_a_rule_test_are_located_errors() {
    let (code, stdout, test, _dir) = run_flink_test(
        r#"rule_files: [flink.yaml]
evaluation_interval: 0s
tests:
  - name: absurd numbers
    input_series:
      - series: 'checkpoint_age_seconds{flink="local",flink_job="etl"}'
        values: "0+60x100000000000 inf"
    alert_rule_test:
      - eval_time: 500000000000y
        alertname: flink-checkpoint-stale
        exp_alerts: []
    slo_test:
      - eval_time: 1m
        slo: none
        exp_sli: .nan
"#,
    );
    assert_eq!(code, Some(1), "{stdout}");
    let p = test.display();
    for want in [
        format!("{p}:2:22: evaluation_interval: must be greater than zero"),
        format!("{p}:7:17: absurd numbers: values: more than 100000 samples"),
        format!("{p}:9:20: absurd numbers: eval_time: must be at most 366d"),
        format!("{p}:15:18: absurd numbers: exp_sli: must be a finite number"),
    ] {
        assert!(stdout.contains(&want), "expected {want:?} in:\n{stdout}");
    }
}

#[test]
fn an_exported_slo_burn_rate_alert_carries_the_slo_labels_and_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("slo.yaml");
    std::fs::write(
        &rules,
        r#"apiVersion: streamguard/v1
kind: SLO
metadata:
  name: fresh
  labels: { team: payments }
  annotations: { dashboard: "https://grafana.example/d/fresh" }
spec:
  objective: 99%
  window: 30d
  indicator:
    timeslice:
      condition: max(lag_seconds) < 30s
  alerting:
    burn_rates:
      - { severity: page, factor: 14.4, long: 1h, short: 5m }
"#,
    )
    .unwrap();
    let out = run(Command::new(bin()).args(["export", "prometheus"]).arg(&rules));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let alert = text.split("- alert: ").nth(1).unwrap_or_default();
    assert!(alert.contains("team: \"payments\""), "{alert}");
    assert!(alert.contains("severity: \"page\""), "{alert}");
    assert!(alert.contains("dashboard: \"https://grafana.example/d/fresh\""), "{alert}");
    assert!(alert.contains("summary: "), "{alert}");
}
