//! SLO state on disk, end to end with the real agent and broker: a state directory that
//! cannot be written is a metric and a `/readyz` reason; a SIGKILL loses at most one
//! evaluation interval of budget events; a crafted state file (a bucket in the future,
//! negative, huge or inconsistent counts, bad JSON) is moved aside and the agent starts
//! clean, saying so in `/api/v1/slos` and in a metric.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// An always-good SLO over `group` (whose lag is 0), 1 s buckets, evaluated every second.
fn rules(group: &str) -> String {
    format!(
        r#"apiVersion: streamguard/v1
kind: SLO
metadata: {{ name: steady }}
spec:
  objective: 90%
  window: 10m
  indicator:
    timeslice:
      condition: max(lag_offsets{{group="{group}"}}) < 1000
  alerting:
    burn_rates:
      - {{ severity: page, factor: 2, long: 20s, short: 5s }}
"#
    )
}

struct Setup {
    dir: tempfile::TempDir,
    group: String,
}

impl Setup {
    fn new() -> Setup {
        let b = bootstrap();
        let topic = unique("state-topic");
        let group = unique("state-group");
        create_topic(&b, &topic, 1);
        produce(&b, &topic, &[3], None);
        consume_and_commit(&b, &group, &topic, &[3]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/steady.yaml"), rules(&group)).unwrap();
        Setup { dir, group }
    }

    fn start(&self, state_file: &Path) -> Agent {
        let port = free_port();
        let extra = format!(
            "[rules]\npaths = [\"{}\"]\nevaluation_interval = \"1s\"\nstate_file = \"{}\"\n",
            self.dir.path().join("rules").display(),
            state_file.display()
        );
        Agent::start_with(port, &agent_config_with(port, &bootstrap(), &format!("^{}$", self.group), &extra))
    }
}

fn slos(agent: &Agent) -> serde_json::Value {
    let (status, body) = agent.get("/api/v1/slos");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn a_state_directory_that_cannot_be_written_fails_readyz_and_is_counted_by_cause() {
    let s = Setup::new();
    let ro = s.dir.path().join("readonly");
    std::fs::create_dir(&ro).unwrap();
    let mut perms = std::fs::metadata(&ro).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(&ro, perms).unwrap();
    // root writes into a 0555 directory anyway: then the "directory" is a regular file,
    // which nobody can create entries in.
    let state_dir = if std::fs::write(ro.join("probe"), b"x").is_ok() {
        let f = s.dir.path().join("not-a-directory");
        std::fs::write(&f, b"").unwrap();
        f
    } else {
        ro
    };
    let agent = s.start(&state_dir.join("state.json"));
    wait_until(Duration::from_secs(30), "a persistence failure in /readyz", || {
        let (status, body) = agent.get("/readyz");
        status == 503 && body.contains("slo state: cannot persist")
    });
    let m = agent.metrics();
    let failures: f64 = m
        .samples
        .iter()
        .filter(|(n, l, _)| n == "streamguard_state_persist_failures_total" && l.contains_key("cause"))
        .map(|(_, _, v)| *v)
        .sum();
    assert!(failures >= 1.0, "{}", m.text);
    assert_eq!(m.get("streamguard_state_persist_ok", &[]), Some(0.0));
    let state = &slos(&agent)["state"];
    assert_eq!(state["persist_ok"], false, "{state}");
    assert!(state["last_persist_error"].as_str().unwrap_or("").contains("journal"), "{state}");
}

/// Seconds of budget events on disk: the snapshot plus the journal replayed on it.
fn seconds_on_disk(state_file: &Path) -> f64 {
    let mut buckets: std::collections::BTreeMap<u64, f64> = Default::default();
    if let Ok(text) = std::fs::read_to_string(state_file) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (k, b) in v["slos"]["steady"]["buckets"].as_object().into_iter().flatten() {
            buckets.insert(k.parse().unwrap(), b[1].as_f64().unwrap());
        }
    }
    let mut journal = state_file.as_os_str().to_os_string();
    journal.push(".journal");
    if let Ok(text) = std::fs::read_to_string(PathBuf::from(journal)) {
        for line in text.lines() {
            if let Ok(e) = serde_json::from_str::<serde_json::Value>(line) {
                buckets.insert(e["bucket"].as_u64().unwrap(), e["total"].as_f64().unwrap());
            }
        }
    }
    buckets.values().sum()
}

#[test]
fn a_kill_loses_at_most_one_evaluation_interval_of_budget_events() {
    let s = Setup::new();
    let state_file = s.dir.path().join("state.json");
    let mut agent = s.start(&state_file);
    wait_until(Duration::from_secs(30), "a known SLI", || !slos(&agent)["slos"][0]["sli"].is_null());
    let first = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let counted = first.elapsed().as_secs_f64();
    let on_disk = seconds_on_disk(&state_file);
    // The first known evaluation counts no slice (no previous one); after it every
    // evaluation adds the seconds since the previous one. At most one interval (1 s) may
    // be lost, plus scheduling slack on a loaded machine.
    assert!(on_disk >= counted - 2.5, "{on_disk} s of events on disk after {counted:.1} s of evaluations");

    // And the restarted agent restores them.
    let agent = s.start(&state_file);
    let state = &slos(&agent)["state"]["restore"];
    assert_eq!(state["outcome"], "restored", "{state}");
    assert_eq!(state["slos"], 1, "{state}");
}

/// A state file for the `steady` SLO (1 s buckets) with `buckets` as JSON.
fn crafted(buckets: &str) -> String {
    format!(r#"{{"version":1,"slos":{{"steady":{{"width":1,"buckets":{{{buckets}}}}}}}}}"#)
}

#[test]
fn crafted_state_files_are_moved_aside_and_the_agent_starts_clean_and_says_so() {
    let s = Setup::new();
    let t = now_secs();
    let cases = [
        ("future_bucket", crafted(&format!(r#""{}":[0.0,100000.0]"#, t + 7 * 86400))),
        ("bad_count", crafted(&format!(r#""{}":[-5.0,1.0]"#, t - 10))),
        ("bad_count", crafted(&format!(r#""{}":[10.0,1.0]"#, t - 10))),
        ("huge_count", crafted(&format!(r#""{}":[1e300,1e300]"#, t - 10))),
        ("decode", "{\"version\":1,\"slos\":".to_string()),
    ];
    for (cause, text) in cases {
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join("state.json");
        std::fs::write(&state_file, &text).unwrap();
        let agent = s.start(&state_file);
        let v = slos(&agent);
        let restore = &v["state"]["restore"];
        assert_eq!(restore["outcome"], "rejected", "{cause}: {restore}");
        assert_eq!(restore["cause"], cause, "{restore}");
        let moved = PathBuf::from(restore["moved_to"].as_str().unwrap_or_else(|| panic!("{restore}")));
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), text, "the rejected file is kept aside, whole");
        let m = agent.metrics();
        assert_eq!(m.get("streamguard_state_restore_rejected_total", &[("cause", cause)]), Some(1.0), "{cause}");
        assert!(agent.log().contains("SLO state file rejected"), "{}", agent.log());
        if cause == "future_bucket" {
            // An always-good SLO reads good, not a budget of -99.
            wait_until(Duration::from_secs(30), "a known budget", || !slos(&agent)["slos"][0]["budget_remaining"].is_null());
            let budget = slos(&agent)["slos"][0]["budget_remaining"].as_f64().unwrap();
            assert!(budget > 0.99, "budget {budget}");
        }
    }
}
