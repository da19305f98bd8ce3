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
//! leaves the group (a short rebalance, not a session timeout) and exits 0; if that
//! takes over 10 s (the broker is gone), it exits 1 anyway.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

mod common;

fn env(name: &str) -> String {
    common::env("scale_consumer", name)
}

fn main() {
    common::on_stop_signals("scale_consumer");
    let bootstrap = env("KAFKA_BOOTSTRAP");
    let group = env("STREAMGUARD_GROUP");
    let topic = env("STREAMGUARD_TOPIC");
    let index = env("STREAMGUARD_REPLICA_INDEX");
    let delay = Duration::from_millis(std::env::var("SCALE_CONSUMER_DELAY_MS").ok().and_then(|d| d.parse().ok()).unwrap_or(10));
    let consumer = common::subscribed("scale_consumer", &bootstrap, &group, &topic, &format!("scale-consumer-{index}"));
    eprintln!("scale_consumer {index}: consuming {topic} as {group}, {delay:?} per record");
    let mut last_commit = Instant::now();
    let mut consumed = 0u64;
    while !common::stopping() {
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
