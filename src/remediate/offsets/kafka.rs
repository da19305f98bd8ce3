//! The Kafka edge of the reprocessing procedure: the group's members, committed offsets
//! and log range, the record at an offset, the dead-letter copy (find, then produce) and
//! the commit. Blocking calls (librdkafka) run on `spawn_blocking`; every call has a
//! deadline and a typed, located error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::compute::{tp_name, PartitionState};
use crate::sample::kafka_admin::{Admin, AdminError, GroupState, OffsetSpec, TopicPartition};

/// Headers naming a dead-letter copy's origin.
pub const H_GROUP: &str = "streamguard.origin.group";
pub const H_TOPIC: &str = "streamguard.origin.topic";
pub const H_PARTITION: &str = "streamguard.origin.partition";
pub const H_OFFSET: &str = "streamguard.origin.offset";
pub const H_TIMESTAMP: &str = "streamguard.origin.timestamp";
pub const H_REASON: &str = "streamguard.reason";
/// How many of the newest records of each dead-letter partition are searched for an
/// existing copy (bounded work; a copy older than that is not looked for).
pub const MAX_DLQ_SCAN: i64 = 100_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KafkaError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("group {group}: {message}")]
    Group { group: String, message: String },
    #[error("{what}: {message}")]
    Client { what: String, message: String },
    #[error("{tp} offset {offset}: no record there (deleted or compacted away)")]
    NoRecord { tp: String, offset: i64 },
    #[error("{what}: timed out after {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("commit of group {group} refused for {tp}: {message}")]
    CommitRefused { group: String, tp: String, message: String },
}

/// What the coordinator says of the group's membership.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub state: GroupState,
    pub members: usize,
    /// `client_id@host` of each member, for the audit.
    pub who: Vec<String>,
}

impl Membership {
    /// No member at all (a group that never existed counts as empty: nobody can be
    /// consuming).
    pub fn is_empty(&self) -> bool {
        self.members == 0 && matches!(self.state, GroupState::Empty | GroupState::Dead)
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

pub fn membership(admin: &Admin, group: &str, timeout: Duration) -> Result<Membership, KafkaError> {
    let d = admin.describe_groups(&[group.to_string()], timeout)?;
    let d = d.into_iter().next().ok_or_else(|| KafkaError::Group { group: group.into(), message: "no description returned".into() })?;
    if let Some(e) = d.error {
        // A group the coordinator does not know has no members.
        if matches!(&e, AdminError::Kafka { code: rdkafka::types::RDKafkaErrorCode::GroupIdNotFound, .. }) {
            return Ok(Membership { state: GroupState::Dead, members: 0, who: Vec::new() });
        }
        return Err(e.into());
    }
    Ok(Membership { state: d.state, members: d.members.len(), who: d.members.iter().map(|m| format!("{}@{}", m.client_id, m.host)).collect() })
}

/// The group's committed offsets (`None`: no commit), every partition.
pub fn committed(admin: &Admin, group: &str, timeout: Duration) -> Result<BTreeMap<TopicPartition, Option<i64>>, KafkaError> {
    let r = admin.list_group_offsets(&[group.to_string()], 1, timeout);
    let (_, r) = r.into_iter().next().ok_or_else(|| KafkaError::Group { group: group.into(), message: "no committed offsets returned".into() })?;
    Ok(r?.into_iter().collect())
}

/// What the verification reads: the group's committed offset and the log range of each
/// of `tps`. A partition whose range could not be read is left out (unknown, not zero).
pub fn observe(admin: &Admin, group: &str, tps: &[TopicPartition], timeout: Duration) -> Result<BTreeMap<TopicPartition, super::verify::Observed>, KafkaError> {
    let committed = committed(admin, group, timeout)?;
    // Refreshes leader epochs before ListOffsets (see `Admin::topics`).
    admin.topics(timeout)?;
    let maps = admin.list_offsets(tps, &[OffsetSpec::Earliest, OffsetSpec::Latest], timeout)?;
    Ok(tps
        .iter()
        .filter_map(|tp| match (maps[0].get(tp), maps[1].get(tp)) {
            (Some(Ok(e)), Some(Ok(l))) => Some((tp.clone(), super::verify::Observed { committed: committed.get(tp).copied().flatten(), earliest: *e, latest: *l })),
            _ => None,
        })
        .collect())
}

/// The state of every partition of `topics` (or, when empty, of the topics the group has
/// commits for), with the offset for `at_ms` when given.
pub fn partition_states(admin: &Admin, group: &str, topics: &[String], at_ms: Option<i64>, timeout: Duration) -> Result<Vec<PartitionState>, KafkaError> {
    let committed = committed(admin, group, timeout)?;
    // Also refreshes leader epochs before ListOffsets (see `Admin::topics`).
    let all = admin.topics(timeout)?;
    let wanted: Vec<String> = if topics.is_empty() {
        let mut t: Vec<String> = committed.keys().map(|tp| tp.topic.clone()).collect();
        t.dedup();
        t
    } else {
        topics.to_vec()
    };
    if wanted.is_empty() {
        return Err(KafkaError::Group { group: group.into(), message: "has no committed offsets; name its topics".into() });
    }
    let mut parts = Vec::new();
    for t in &wanted {
        let n = *all.get(t).ok_or_else(|| KafkaError::Group { group: group.into(), message: format!("topic {t:?} does not exist") })?;
        parts.extend((0..n).map(|p| TopicPartition { topic: t.clone(), partition: p }));
    }
    let mut specs = vec![OffsetSpec::Earliest, OffsetSpec::Latest];
    if let Some(ms) = at_ms {
        specs.push(OffsetSpec::Timestamp(ms));
    }
    let maps = admin.list_offsets(&parts, &specs, timeout)?;
    let get = |i: usize, tp: &TopicPartition| -> Result<i64, KafkaError> {
        match maps[i].get(tp) {
            Some(Ok(o)) => Ok(*o),
            Some(Err(e)) => Err(e.clone().into()),
            None => Err(KafkaError::Group { group: group.into(), message: format!("no offset returned for {}", tp_name(tp)) }),
        }
    };
    parts
        .iter()
        .map(|tp| {
            let at_time = if at_ms.is_some() { Some(get(2, tp)?).filter(|o| *o >= 0) } else { None };
            Ok(PartitionState { tp: tp.clone(), committed: committed.get(tp).copied().flatten(), earliest: get(0, tp)?, latest: get(1, tp)?, at_time })
        })
        .collect()
}

/// Commits `offsets` as a non-member; every partition must be accepted.
pub fn commit(admin: &Admin, group: &str, offsets: &[(TopicPartition, i64)], timeout: Duration) -> Result<(), KafkaError> {
    for (tp, r) in admin.alter_group_offsets(group, offsets, timeout)? {
        if let Err(e) = r {
            return Err(KafkaError::CommitRefused { group: group.into(), tp: tp_name(&tp), message: e.to_string() });
        }
    }
    Ok(())
}

fn consumer(base: &ClientConfig) -> Result<BaseConsumer, KafkaError> {
    let mut c = base.clone();
    c.set("group.id", "streamguard-reprocess-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_uncommitted")
        .set("enable.partition.eof", "true");
    c.create().map_err(|e| KafkaError::Client { what: "consumer".into(), message: e.to_string() })
}

fn client_err(what: &str, e: impl std::fmt::Display) -> KafkaError {
    KafkaError::Client { what: what.into(), message: e.to_string() }
}

/// The record at `offset` of `tp` (assigned, never subscribed: no group is joined).
pub fn read_record(base: &ClientConfig, tp: &TopicPartition, offset: i64, timeout: Duration) -> Result<Record, KafkaError> {
    let c = consumer(base)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(offset)).map_err(|e| client_err("assign", e))?;
    c.assign(&tpl).map_err(|e| client_err("assign", e))?;
    let deadline = Instant::now() + timeout;
    // librdkafka reports passing trouble (a connection closed, "all brokers down" for a
    // moment) as errors on the poll; they are retried until the deadline, and the last
    // one is named if it comes.
    let mut last: Option<String> = None;
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Err(KafkaError::NoRecord { tp: tp_name(tp), offset }),
            Some(Err(e)) => last = Some(e.to_string()),
            Some(Ok(m)) if m.offset() == offset => {
                let headers = m.headers().map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect()).unwrap_or_default();
                return Ok(Record { key: m.key().map(<[u8]>::to_vec), value: m.payload().map(<[u8]>::to_vec), headers, timestamp: m.timestamp().to_millis() });
            }
            Some(Ok(_)) => return Err(KafkaError::NoRecord { tp: tp_name(tp), offset }),
        }
    }
    let what = match last {
        Some(e) => format!("reading {} offset {offset} (last error: {e})", tp_name(tp)),
        None => format!("reading {} offset {offset}", tp_name(tp)),
    };
    Err(KafkaError::Timeout { what, timeout })
}

fn header<'a>(h: &'a [(String, Option<Vec<u8>>)], k: &str) -> Option<&'a [u8]> {
    h.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.as_deref())
}

/// Whether the dead-letter topic already holds a copy of `tp`@`offset` skipped for
/// `group` (searches the newest [`MAX_DLQ_SCAN`] records of each of its partitions).
pub fn find_copy(admin: &Admin, base: &ClientConfig, dlq: &str, group: &str, tp: &TopicPartition, offset: i64, timeout: Duration) -> Result<Option<(i32, i64)>, KafkaError> {
    let n = *admin.topics(timeout)?.get(dlq).ok_or_else(|| client_err("dead-letter topic", format!("{dlq:?} does not exist")))?;
    let parts: Vec<TopicPartition> = (0..n).map(|p| TopicPartition { topic: dlq.into(), partition: p }).collect();
    let maps = admin.list_offsets(&parts, &[OffsetSpec::Earliest, OffsetSpec::Latest], timeout)?;
    let c = consumer(base)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in &parts {
        let lo = maps[0].get(p).cloned().unwrap_or(Ok(0))?;
        let hi = maps[1].get(p).cloned().unwrap_or(Ok(0))?;
        if hi > lo {
            tpl.add_partition_offset(dlq, p.partition, Offset::Offset(lo.max(hi - MAX_DLQ_SCAN))).map_err(|e| client_err("assign", e))?;
            ends.insert(p.partition, hi);
        }
    }
    if ends.is_empty() {
        return Ok(None);
    }
    c.assign(&tpl).map_err(|e| client_err("assign", e))?;
    let (want_t, want_p, want_o) = (tp.topic.as_bytes(), tp.partition.to_string(), offset.to_string());
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(KafkaError::Timeout { what: format!("searching {dlq} for a copy"), timeout });
        }
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            Some(Err(e)) => return Err(client_err("search", e)),
            Some(Ok(m)) => {
                let h: Vec<(String, Option<Vec<u8>>)> = m.headers().map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect()).unwrap_or_default();
                if header(&h, H_GROUP) == Some(group.as_bytes()) && header(&h, H_TOPIC) == Some(want_t) && header(&h, H_PARTITION) == Some(want_p.as_bytes()) && header(&h, H_OFFSET) == Some(want_o.as_bytes()) {
                    return Ok(Some((m.partition(), m.offset())));
                }
                if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
                    ends.remove(&m.partition());
                }
            }
        }
    }
    Ok(None)
}

/// Produces the dead-letter copy of `r` (key, value, headers, timestamp, plus the
/// origin headers) and waits for the broker's acknowledgement. Returns (partition, offset).
#[allow(clippy::too_many_arguments)]
pub async fn produce_copy(base: &ClientConfig, dlq: &str, group: &str, tp: &TopicPartition, offset: i64, r: &Record, reason: &str, timeout: Duration) -> Result<(i32, i64), KafkaError> {
    let mut cfg = base.clone();
    cfg.set("enable.idempotence", "true").set("acks", "all");
    let p: FutureProducer = cfg.create().map_err(|e| client_err("producer", e))?;
    let mut headers = OwnedHeaders::new();
    for (k, v) in &r.headers {
        headers = headers.insert(Header { key: k, value: v.as_deref() });
    }
    let (part, off, ts) = (tp.partition.to_string(), offset.to_string(), r.timestamp.map(|t| t.to_string()).unwrap_or_default());
    for (k, v) in [(H_GROUP, group), (H_TOPIC, tp.topic.as_str()), (H_PARTITION, part.as_str()), (H_OFFSET, off.as_str()), (H_TIMESTAMP, ts.as_str()), (H_REASON, reason)] {
        headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
    }
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq).headers(headers);
    if let Some(k) = &r.key {
        rec = rec.key(k.as_slice());
    }
    if let Some(v) = &r.value {
        rec = rec.payload(v.as_slice());
    }
    if let Some(t) = r.timestamp {
        rec = rec.timestamp(t);
    }
    let delivery = p.send(rec, timeout).await.map_err(|(e, _)| client_err(&format!("producing to {dlq}"), e))?;
    Ok((delivery.partition, delivery.offset))
}
