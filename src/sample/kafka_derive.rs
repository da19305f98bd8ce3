//! Signals derived from a Kafka source's history: time lag, rates, group status, DLQ.
//! SKELETON.

use std::time::SystemTime;

use crate::sample::kafka::KafkaSnapshot;
use crate::signal::Observation;
use crate::store::Store;

pub fn derive(store: &Store, cluster: &str, snapshot: &KafkaSnapshot, at: SystemTime) -> Vec<Observation> {
    let _ = (store, cluster, snapshot, at);
    Vec::new()
}
