//! Time lag against ground truth on the real broker: records with known CreateTime
//! timestamps, a known committed offset, and the agent's probe and interpolation.

mod common;

use std::time::Duration;

use common::*;

fn config(port: u16, bootstrap: &str, group: &str) -> String {
    agent_config_with(port, bootstrap, &format!("^{group}$"), "[history]\nrate_window = \"5s\"\nstatus_window = \"10s\"\n")
}

#[test]
fn probe_reports_the_age_of_the_next_record_within_a_second() {
    let b = bootstrap();
    let topic = unique("age-topic");
    let group = unique("age-group");
    create_topic(&b, &topic, 2);
    let now = now_ms();
    // Partition 0: records written 300 s ago; partition 1: 120 s ago.
    let ages_ms = [300_000i64, 120_000];
    for (p, age) in ages_ms.iter().enumerate() {
        let mut counts = [0usize; 2];
        counts[p] = 10;
        produce(&b, &topic, &counts, Some(now - age));
    }
    consume_and_commit(&b, &group, &topic, &[4, 7]);
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &group));

    wait_until(Duration::from_secs(30), "probe lag for both partitions", || {
        (0..2).all(|p| agent.fresh("lag_seconds", &group, &[("method", "probe"), ("partition", &p.to_string())]).is_some())
    });
    for (p, age) in ages_ms.iter().enumerate() {
        let s = agent.fresh("lag_seconds", &group, &[("method", "probe"), ("partition", &p.to_string())]).unwrap();
        let sampled_at = s["last_time"].as_f64().unwrap();
        let expected = sampled_at - (now - age) as f64 / 1000.0;
        let got = s["value"].as_f64().unwrap();
        assert!((got - expected).abs() <= 1.0, "partition {p}: reported {got}s, record age at sample time {expected}s");
    }
    let max = agent.fresh("group_lag_seconds", &group, &[("method", "probe")]).unwrap();
    assert!((max["value"].as_f64().unwrap() - 300.0).abs() < 5.0, "{max}");
}

#[test]
fn a_caught_up_partition_has_zero_time_lag_by_both_methods() {
    let b = bootstrap();
    let topic = unique("zero-topic");
    let group = unique("zero-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[5], Some(now_ms() - 60_000));
    consume_and_commit(&b, &group, &topic, &[5]);
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &group));
    wait_until(Duration::from_secs(30), "probe lag", || agent.fresh("lag_seconds", &group, &[("method", "probe")]).is_some());
    assert_eq!(agent.fresh("lag_seconds", &group, &[("method", "probe")]).unwrap()["value"], 0.0);
    assert_eq!(agent.fresh("lag_seconds", &group, &[("method", "interpolation")]).unwrap()["value"], 0.0);
}

#[test]
fn interpolation_estimates_lag_from_the_log_end_history_within_two_seconds() {
    let b = bootstrap();
    let topic = unique("interp-topic");
    let group = unique("interp-group");
    create_topic(&b, &topic, 1);
    let port = free_port();
    let agent = Agent::start_with(port, &config(port, &b, &group));
    // The group exists from the start (committed 0), so the agent samples its topic's
    // log end while records arrive: 5 records every 250 ms for 8 s.
    produce(&b, &topic, &[1], None);
    consume_and_commit(&b, &group, &topic, &[1]);
    for _ in 0..32 {
        produce(&b, &topic, &[5], None);
        std::thread::sleep(Duration::from_millis(250));
    }
    // Commit offset 61: a record produced about 3 s into the run.
    consume_and_commit(&b, &group, &topic, &[61]);
    let record_time = {
        let probe = || agent.fresh("lag_seconds", &group, &[("method", "probe")]);
        wait_until(Duration::from_secs(20), "probe after the commit", || {
            probe().is_some_and(|s| s["value"].as_f64().unwrap() > 0.0)
        });
        let s = probe().unwrap();
        s["last_time"].as_f64().unwrap() - s["value"].as_f64().unwrap()
    };
    wait_until(Duration::from_secs(20), "interpolated lag", || agent.fresh("lag_seconds", &group, &[("method", "interpolation")]).is_some());
    let s = agent.fresh("lag_seconds", &group, &[("method", "interpolation")]).unwrap();
    let expected = s["last_time"].as_f64().unwrap() - record_time;
    let got = s["value"].as_f64().unwrap();
    assert!((got - expected).abs() <= 2.0, "interpolation {got}s vs record age {expected}s (tolerance 2 s = 2 sample intervals)");
}
