//! Traffic for the demo: a steady producer and a deliberately slow consumer group, so
//! `streamguard lag` and `/metrics` show lag that grows while you watch.
//!
//! ```text
//! cargo run --example demo_traffic -- produce  <bootstrap> <topic> <records_per_second>
//! cargo run --example demo_traffic -- consume  <bootstrap> <topic> <group> <records_per_second>
//! ```
//! Both run until killed. The consumer commits what it processed every second.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: demo_traffic produce BOOTSTRAP TOPIC RATE | consume BOOTSTRAP TOPIC GROUP RATE";
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["produce", bootstrap, topic, rate] => produce(bootstrap, topic, rate.parse().expect(usage)),
        ["consume", bootstrap, topic, group, rate] => consume(bootstrap, topic, group, rate.parse().expect(usage)),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

/// Creates the demo topic with 6 partitions unless it exists.
fn ensure_topic(bootstrap: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let new = NewTopic::new(topic, 6, TopicReplication::Fixed(1));
    match rt.block_on(admin.create_topics([&new], &AdminOptions::new())) {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(t) => eprintln!("demo: created topic {t} (6 partitions)"),
                    Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, e)) => eprintln!("demo: create topic {t}: {e}"),
                }
            }
        }
        Err(e) => eprintln!("demo: create topic: {e}"),
    }
}

fn produce(bootstrap: &str, topic: &str, rate: u64) {
    ensure_topic(bootstrap, topic);
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "20").create().expect("producer");
    let tick = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = Instant::now();
    for n in 0u64.. {
        let key = format!("order-{}", n % 97);
        let payload = format!("{{\"order\":{n},\"amount\":{}}}", n % 1000);
        if let Err((e, _)) = producer.send(BaseRecord::to(topic).key(&key).payload(&payload)) {
            eprintln!("demo producer: {e}");
        }
        if n % rate.max(1) == 0 {
            producer.flush(Duration::from_secs(5)).ok();
        }
        // Keep the average rate without drifting.
        let due = start + tick.mul_f64((n + 1) as f64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
}

fn consume(bootstrap: &str, topic: &str, group: &str, rate: u64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let per_record = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut last_commit = Instant::now();
    loop {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            // The "work": slower than the producer, so lag grows.
            std::thread::sleep(per_record);
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            // Nothing consumed yet is not an error worth printing.
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
                if !matches!(e, rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) {
                    eprintln!("demo consumer: commit: {e}");
                }
            }
            last_commit = Instant::now();
        }
    }
}
