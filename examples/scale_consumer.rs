//! One replica of a scaled consumer, as the `process` scaling actuator starts it: a real
//! Kafka consumer in a group, configured from the environment the pool sets.
//!
//! ```text
//! KAFKA_BOOTSTRAP=127.0.0.1:9092 STREAMGUARD_GROUP=orders STREAMGUARD_TOPIC=orders \
//! STREAMGUARD_REPLICA_INDEX=0 SCALE_CONSUMER_DELAY_MS=20 cargo run --example scale_consumer
//! ```
//!
//! `SCALE_CONSUMER_DELAY_MS` is the per-record "work" (default 10 ms), so one replica
//! consumes at most ~1000/delay records/s and more replicas really consume faster (up
//! to the partition count). It commits every 500 ms; on SIGTERM or SIGINT it commits,
//! leaves the group (a short rebalance, not a session timeout) and exits 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("scale_consumer: {name} is not set");
        std::process::exit(2)
    })
}

fn main() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let bootstrap = env("KAFKA_BOOTSTRAP");
    let group = env("STREAMGUARD_GROUP");
    let topic = env("STREAMGUARD_TOPIC");
    let index = env("STREAMGUARD_REPLICA_INDEX");
    let delay = Duration::from_millis(std::env::var("SCALE_CONSUMER_DELAY_MS").ok().and_then(|d| d.parse().ok()).unwrap_or(10));
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("client.id", format!("scale-consumer-{index}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scale_consumer: {e}");
            std::process::exit(1)
        }
    };
    if let Err(e) = consumer.subscribe(&[&topic]) {
        eprintln!("scale_consumer: subscribe: {e}");
        std::process::exit(1)
    }
    eprintln!("scale_consumer {index}: consuming {topic} as {group}, {delay:?} per record");
    let mut last_commit = Instant::now();
    let mut consumed = 0u64;
    while !STOP.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                consumed += 1;
                std::thread::sleep(delay);
            }
            Some(Err(e)) => eprintln!("scale_consumer {index}: {e}"),
            None => {}
        }
        if last_commit.elapsed() >= Duration::from_millis(500) {
            commit(&consumer);
            last_commit = Instant::now();
        }
    }
    commit(&consumer);
    eprintln!("scale_consumer {index}: stopping after {consumed} records");
    // Dropping the consumer closes it: it leaves the group.
    drop(consumer);
}

fn commit(consumer: &BaseConsumer) {
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        if !matches!(e, rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) {
            eprintln!("scale_consumer: commit: {e}");
        }
    }
}
