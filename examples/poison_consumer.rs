//! A consumer that processes each record exactly once and crashes on a poison record,
//! as the `process` pool runs it in the reprocessing tests (`tests/reprocess.rs`).
//!
//! ```text
//! KAFKA_BOOTSTRAP=127.0.0.1:9092 STREAMGUARD_GROUP=orders STREAMGUARD_TOPIC=orders \
//! POISON_CONSUMER_OUT=/tmp/processed.txt cargo run --example poison_consumer
//! ```
//!
//! For each record: a payload starting with `POISON` makes it exit 3 at once (nothing
//! processed, nothing committed: the pool restarts it and it crashes again, as a real
//! consumer stuck on a poison pill does); any other record is "processed" (its
//! `partition offset key` line appended to `POISON_CONSUMER_OUT`) and then its offset
//! committed synchronously, so every record is processed once. On SIGTERM it finishes
//! the record in hand, leaves the group and exits 0.

use std::io::Write as _;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

mod common;

fn env(name: &str) -> String {
    common::env("poison_consumer", name)
}

fn main() {
    common::on_stop_signals("poison_consumer");
    let (bootstrap, group, topic, out) = (env("KAFKA_BOOTSTRAP"), env("STREAMGUARD_GROUP"), env("STREAMGUARD_TOPIC"), env("POISON_CONSUMER_OUT"));
    let consumer = common::subscribed("poison_consumer", &bootstrap, &group, &topic, "poison-consumer");
    let mut file = match std::fs::OpenOptions::new().create(true).append(true).open(&out) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("poison_consumer: {out}: {e}");
            std::process::exit(1)
        }
    };
    while !common::stopping() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if m.payload().is_some_and(|p| p.starts_with(b"POISON")) {
                    eprintln!("poison_consumer: cannot parse {}:{}: crashing", m.partition(), m.offset());
                    std::process::exit(3);
                }
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                if let Err(e) = writeln!(file, "{} {} {key}", m.partition(), m.offset()).and_then(|_| file.sync_data()) {
                    eprintln!("poison_consumer: {out}: {e}");
                    std::process::exit(1);
                }
                let mut tpl = TopicPartitionList::new();
                if tpl.add_partition_offset(m.topic(), m.partition(), Offset::Offset(m.offset() + 1)).is_ok() {
                    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                        eprintln!("poison_consumer: commit: {e}");
                        std::process::exit(1);
                    }
                }
            }
            Some(Err(e)) => eprintln!("poison_consumer: {e}"),
            None => {}
        }
    }
    drop(consumer);
}
