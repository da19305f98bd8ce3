//! Derivation runs off the store's write lock: a scrape (and the API, which reads the
//! store the same way) is answered while a slow derivation runs, and the sample's raw
//! and derived series still appear together, never one without the other.
//!
//! In-process, no services: the derivation is slowed by the test itself (it waits for
//! the test's signal), which stands for the seconds a derivation takes at 20,000 groups.

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, SystemTime};

use streamguard::config::RulesConfig;
use streamguard::evaluate::Rules;
use streamguard::rules::file::SignalNames;
use streamguard::signal::{Batch, KeyRef, SourceSample};
use streamguard::store::{SourceKind, Store};
use streamguard::telemetry::metrics::{Format, Metrics};

fn lag(batch: &mut Batch, group: &str, v: f64) {
    batch.push("lag_offsets", &[("cluster", "c"), ("group", group), ("topic", "t"), ("partition", "0")], v);
}

#[test]
fn a_scrape_is_answered_while_a_derivation_runs_and_sees_raw_and_derived_together() {
    let store = Arc::new(Store::default());
    store.register(SourceKind::Kafka, "c", Duration::from_secs(3600));
    let t0 = SystemTime::now() - Duration::from_secs(10);
    let mut first = Batch::new();
    lag(&mut first, "g", 1.0);
    store.record_success(SourceKind::Kafka, "c", t0, SourceSample { batch: first, ..SourceSample::default() });
    let rules = Arc::new(Rules::load(RulesConfig::for_tests(), SignalNames::builtin()).expect("no rules load"));
    let metrics = Arc::new(Metrics::new(store.clone(), rules));

    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let writer = {
        let store = store.clone();
        thread::spawn(move || {
            let mut raw = Batch::new();
            lag(&mut raw, "g", 2.0);
            let sample = SourceSample { batch: raw, ..SourceSample::default() };
            store.record_success_with(SourceKind::Kafka, "c", SystemTime::now(), sample, &["lag_offsets"], |view| {
                let key = KeyRef::new("lag_offsets", &[("cluster", "c"), ("group", "g"), ("topic", "t"), ("partition", "0")]);
                let seen: Vec<f64> = view.points(key, SystemTime::UNIX_EPOCH).into_iter().map(|p| p.1).collect();
                entered_tx.send(seen).expect("the test waits");
                // A slow derivation: until the test has scraped (or 30 s).
                let _released = release_rx.recv_timeout(Duration::from_secs(30));
                let mut derived = Batch::new();
                derived.push("group_lag_offsets", &[("cluster", "c"), ("group", "g")], 2.0);
                derived
            })
        })
    };
    let seen = entered_rx.recv_timeout(Duration::from_secs(10)).expect("the derivation started");
    assert_eq!(seen, vec![1.0, 2.0], "the derivation reads the history with the pending sample");

    let (done_tx, done_rx) = mpsc::channel();
    let scraper = {
        let metrics = metrics.clone();
        thread::spawn(move || {
            let body = metrics.encode(Format::Prometheus);
            let _gone = done_tx.send(body);
        })
    };
    let scraped = done_rx.recv_timeout(Duration::from_secs(10));
    release_tx.send(()).expect("the derivation waits");
    let recorded = writer.join().expect("the writer does not panic");
    scraper.join().expect("the scraper does not panic");

    let body = scraped.expect("the scrape was answered while the derivation ran").expect("it renders");
    let line = |b: &str, metric: &str| b.lines().find(|l| l.starts_with(metric) && l.contains("group=\"g\"")).map(str::to_string);
    let raw = line(&body, "streamguard_kafka_partition_lag_offsets{").expect("the first sample's lag is exposed");
    assert!(raw.ends_with(" 1.0"), "the scrape shows the previous sample, not half of the new one: {raw}");
    assert_eq!(line(&body, "streamguard_kafka_group_lag_offsets{"), None, "nothing derived is shown before its sample is");

    assert_eq!(recorded, 2, "one raw and one derived series");
    let after = metrics.encode(Format::Prometheus).expect("it renders");
    assert!(line(&after, "streamguard_kafka_partition_lag_offsets{").is_some_and(|l| l.ends_with(" 2.0")), "{after}");
    assert!(line(&after, "streamguard_kafka_group_lag_offsets{").is_some_and(|l| l.ends_with(" 2.0")), "{after}");
}
