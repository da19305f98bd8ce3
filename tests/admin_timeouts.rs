//! Admin calls driven into their timeouts must never take the process down (issue 13,
//! item 0: `rd_kafka_enq_once_del_source_return: Assertion 'eonce->refcnt > 0'`).
//!
//! This test owns a private Kafka broker (same `stack/` scripts, its own run directory
//! and ports), so pausing it with SIGSTOP disturbs no other test. A guard sends SIGCONT
//! on drop, also when the test panics.
//!
//! The scenario: thousands of groups described and their offsets listed while the
//! broker is paused, so every coordinator lookup is still in flight when the calls time
//! out; then the broker resumes and answers those lookups. Before the fix librdkafka
//! timed the requests out itself and, when the late coordinator answer arrived, released
//! the request's once-only reply object twice and aborted (exit 134).

mod common;

use std::time::{Duration, Instant};

use common::*;
use streamguard::sample::kafka::client_config;
use streamguard::sample::kafka_admin::{Admin, AdminError};

fn is_timeout(e: &AdminError) -> bool {
    matches!(e, AdminError::Timeout { .. })
}

#[test]
fn admin_calls_that_time_out_against_a_paused_broker_never_abort_the_process_and_report_typed_timeouts() {
    let broker = PrivateBroker::start();
    let config = client_config(&broker.bootstrap(), &Default::default());
    let admin = Admin::for_cluster("timeouts", &config).unwrap();
    // Thousands of groups: each needs its own coordinator lookup. They need not exist:
    // the coordinator answers an unknown group as Dead, after the same lookups.
    let groups: Vec<String> = (0..3000).map(|i| format!("{}-{i}", unique("t13-timeout"))).collect();
    let warm = admin.list_groups(Duration::from_secs(30)).expect("broker answers before the pause");
    assert!(warm.1.is_empty(), "{:?}", warm.1);

    let rounds = 3;
    for round in 0..rounds {
        {
            let _paused = Paused::new(broker.pid());
            let started = Instant::now();
            let described = admin.describe_groups(&groups, Duration::from_secs(2));
            match &described {
                Err(e) => assert!(is_timeout(e), "round {round}: describe fails as a typed timeout, got {e:?}"),
                Ok(d) => panic!("round {round}: a paused broker cannot describe {} groups", d.len()),
            }
            let offsets = admin.list_group_offsets(&groups[..500], 64, Duration::from_secs(2));
            assert_eq!(offsets.len(), 500, "one entry per requested group");
            assert!(
                offsets.iter().all(|(_, r)| matches!(r, Err(e) if is_timeout(e))),
                "round {round}: every group reports its own typed timeout: {:?}",
                offsets.iter().find(|(_, r)| !matches!(r, Err(e) if is_timeout(e)))
            );
            assert!(started.elapsed() < Duration::from_secs(10), "calls are bounded by their timeouts: {:?}", started.elapsed());
            // The guard resumes the broker here: the coordinator lookups still queued
            // inside the client are answered now.
        }
        // Let the late answers arrive and be processed while nothing waits for them.
        std::thread::sleep(Duration::from_secs(3));
    }

    // The process is alive (an abort would have ended the test binary) and the same
    // client still works once the broker answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match admin.describe_groups(&groups[..50], Duration::from_secs(10)) {
            Ok(d) if d.len() == 50 => break,
            other if Instant::now() > deadline => panic!("the client never recovered: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    let offsets = admin.list_group_offsets(&groups[..50], 16, Duration::from_secs(10));
    assert!(offsets.iter().all(|(_, r)| r.is_ok()), "{:?}", offsets.iter().find(|(_, r)| r.is_err()));
}
