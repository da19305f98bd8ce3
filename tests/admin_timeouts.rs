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

/// librdkafka 2.12.1 crashes (SIGSEGV, a NULL consumer-group handle in
/// `rd_kafka_handle_OffsetFetch`, librdkafka issue #5040) when a `ListConsumerGroupOffsets`
/// is answered `NOT_COORDINATOR` or `COORDINATOR_NOT_AVAILABLE` by a client that is not a
/// group consumer: it asks its own consumer group, which an admin client does not have, to
/// look for a new coordinator. A real broker answers so while a group's coordinator moves
/// (seen here after a broker was paused and resumed: the `offsets` CLI died of SIGSEGV). A
/// single local broker cannot be made to answer so on demand, so a proxy in front of the
/// real broker answers two OffsetFetch requests itself (see `common::fault_proxy`).
#[test]
fn an_offset_fetch_answered_not_coordinator_is_a_typed_per_group_error_not_a_crash() {
    use common::fault_proxy::FaultProxy;
    const NOT_COORDINATOR: i16 = 16;
    const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    let proxy_port = free_service_port();
    let broker = PrivateBroker::behind_proxy(proxy_port);
    let topic = unique("t5040");
    create_topic(&broker.bootstrap(), &topic, 2);
    produce(&broker.bootstrap(), &topic, &[3, 3], None);
    let group = unique("t5040-g");
    consume_and_commit(&broker.bootstrap(), &group, &topic, &[2, 1]);

    let proxy = FaultProxy::start(proxy_port, broker.proxied_port());
    for (i, code) in [NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE].into_iter().enumerate() {
        proxy.fail_offset_fetch(code, 1);
        let config = client_config(&format!("127.0.0.1:{proxy_port}"), &Default::default());
        let admin = Admin::for_cluster("t5040", &config).unwrap();
        let got = admin.list_group_offsets(std::slice::from_ref(&group), 1, Duration::from_secs(20));
        assert_eq!(proxy.injected(), i + 1, "the proxy answered the OffsetFetch");
        match &got[0].1 {
            Err(AdminError::Kafka { code: c, .. }) => assert_eq!(*c as i32, i32::from(code), "{got:?}"),
            other => panic!("code {code}: a typed per-group error, got {other:?}"),
        }
        // The same client reads the offsets once the coordinator answers.
        let again = admin.list_group_offsets(std::slice::from_ref(&group), 1, Duration::from_secs(20));
        let mut offsets: Vec<(i32, i64)> = again[0].1.as_ref().expect("answered").iter().map(|(tp, o)| (tp.partition, o.unwrap_or(-1))).collect();
        offsets.sort();
        assert_eq!(offsets, vec![(0, 2), (1, 1)]);
    }
}
