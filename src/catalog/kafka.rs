//! Signals of the Kafka source: raw ones from each sample and those the derive stage computes from their history.
//!
//! Data only: the samplers produce these signals, rules and `/metrics` read them.

use crate::signal::{MetricKind, SignalDef};

const P: &[&str] = &["cluster", "group", "topic", "partition"];
const G: &[&str] = &["cluster", "group"];
const GT: &[&str] = &["cluster", "group", "topic"];
const TP: &[&str] = &["cluster", "topic", "partition"];

const fn gauge(name: &'static str, metric: &'static str, labels: &'static [&'static str], help: &'static str) -> SignalDef {
    SignalDef { name, metric, kind: MetricKind::Gauge, help, labels }
}

/// Signals of the Kafka source: the raw ones from each sample, and those derived from
/// their history (time lag, rates, status; see `derive::kafka`).
pub const SIGNALS: &[SignalDef] = &[
    gauge("lag_offsets", "kafka_partition_lag_offsets", P, "Log-end offset minus committed offset; absent when the partition has no commit"),
    gauge("committed_offset", "kafka_partition_committed_offset", P, "The group's committed offset"),
    gauge("has_committed_offset", "kafka_partition_has_committed_offset", P, "1 when the group has a committed offset for the partition, 0 when it has none"),
    gauge("log_end_offset", "kafka_partition_log_end_offset", TP, "Offset of the next record to be written"),
    gauge("log_start_offset", "kafka_partition_log_start_offset", TP, "Earliest offset still in the log"),
    gauge("last_stable_offset", "kafka_partition_last_stable_offset", TP, "Last stable offset (LSO): read_committed consumers cannot read past it; below the log end while a transaction is open"),
    gauge("open_transaction_offsets", "kafka_partition_open_transaction_offsets", TP, "Log end minus last stable offset: offsets held back by transactions not yet committed or aborted"),
    gauge("offsets_out_of_range", "kafka_partition_offsets_out_of_range", P, "1 when the committed offset is outside the log (beyond its end, or below its start), else 0"),
    gauge("lost_records", "kafka_partition_lost_records", P, "Log start minus committed offset when positive: records deleted before the group consumed them, else 0"),
    SignalDef { name: "group_lost_records", metric: "kafka_group_lost_records", kind: MetricKind::Counter, help: "Records deleted before the group consumed them, counted since the agent started", labels: G },
    gauge("group_lag_offsets", "kafka_group_lag_offsets", G, "Sum of the group's known partition lags"),
    gauge("group_topic_lag_offsets", "kafka_group_topic_lag_offsets", GT, "Sum of the group's known partition lags on one topic"),
    gauge("group_topic_max_lag_offsets", "kafka_group_topic_max_lag_offsets", GT, "Largest known partition lag of the group on one topic"),
    gauge("group_uncommitted_partitions", "kafka_group_uncommitted_partitions", G, "Partitions the group consumes (assigned or committed) that have no committed offset"),
    gauge("group_state", "kafka_group_state", &["cluster", "group", "state"], "Consumer group state: 1 for the current state"),
    gauge("group_members", "kafka_group_members", G, "Members of the consumer group"),
    gauge("group_info", "kafka_group_info", &["cluster", "group", "type"], "Consumer group protocol type (classic or consumer, KIP-848); always 1"),
    gauge("groups", "kafka_groups", &["cluster"], "Consumer groups watched on the cluster (after include/exclude)"),
    gauge("sampler_info", "kafka_sampler_info", &["cluster", "path"], "Which client sampled the cluster: path direct (the protocol client) or librdkafka; always 1"),
    gauge("librdkafka_clients", "kafka_librdkafka_clients", &["cluster"], "librdkafka clients the cluster's sampler holds: the admin client (made only when librdkafka samples the cluster) and the time-lag probe's consumer (made on its first read)"),
    gauge("lag_seconds", "kafka_partition_lag_seconds", &["cluster", "group", "topic", "partition", "method"], "Time lag: age of the next record the group will read (method probe) or time since the log end was at the committed offset (method interpolation)"),
    gauge("group_lag_seconds", "kafka_group_lag_seconds", &["cluster", "group", "method"], "Largest partition time lag of the group"),
    gauge("probe_age_seconds", "kafka_partition_probe_age_seconds", P, "Seconds since the probe read the record behind lag_seconds{method=\"probe\"} (the value is exact while the committed offset stays)"),
    gauge("probe_lagging_partitions", "kafka_probe_lagging_partitions", &["cluster"], "Lagging (group, partition) pairs the time-lag probe should cover"),
    gauge("probe_uncovered_partitions", "kafka_probe_uncovered_partitions", &["cluster"], "Lagging (group, partition) pairs without a probe value for their current committed offset"),
    gauge("produce_rate", "kafka_partition_produce_rate", TP, "Records per second written to the partition over the rate window"),
    gauge("topic_produce_rate", "kafka_topic_produce_rate", &["cluster", "topic"], "Records per second written to the topic over the rate window"),
    gauge("consume_rate", "kafka_group_consume_rate", G, "Records per second the group commits over the rate window"),
    gauge("group_topic_consume_rate", "kafka_group_topic_consume_rate", GT, "Records per second the group commits on one topic over the rate window"),
    gauge("group_status", "kafka_group_status", &["cluster", "group", "status"], "Group status over the status window: 1 for the current one of OK, WARN, STALL, STOP, REWIND, OUT_OF_RANGE, DATA_LOSS, UNKNOWN"),
    SignalDef { name: "group_rebalances", metric: "kafka_group_rebalances", kind: MetricKind::Counter, help: "Rebalances seen (the group left Stable or its member count changed)", labels: G },
    SignalDef { name: "group_rewinds", metric: "kafka_group_rewinds", kind: MetricKind::Counter, help: "Committed offsets seen moving backwards", labels: G },
    gauge("dlq_rate", "kafka_dlq_rate", &["cluster", "dlq_topic"], "Records per second written to the dead-letter topic over the rate window (once per DLQ topic)"),
    gauge("dlq_ratio", "kafka_dlq_ratio", &["cluster", "dlq_topic", "topic", "group"], "DLQ rate divided by the consume rate of the group that writes the DLQ, on its source topic; absent while the source is idle"),
];
