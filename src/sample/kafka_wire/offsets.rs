//! `ListOffsets` grouped by partition leader: earliest and latest (read_uncommitted, the
//! high watermark as `kafka-consumer-groups` uses) and latest with read_committed (the
//! last stable offset). Three requests per leader, sent together.
//!
//! A partition whose leader moved or whose epoch is stale (`NOT_LEADER_OR_FOLLOWER`,
//! `FENCED_LEADER_EPOCH`, …) gets its topic's metadata refreshed and is asked once more.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::client::{Client, TopicMeta};
use super::groups::futures_join;
use super::{codes, WireError};
use crate::sample::kafka_admin::TopicPartition;

/// Offsets of many partitions, each with its own outcome.
pub type Offsets = HashMap<TopicPartition, Result<i64, WireError>>;

/// (timestamp, isolation level) of the three lookups: earliest, latest, last stable.
const SPECS: [(i64, i8); 3] = [(-2, 0), (-1, 0), (-1, 1)];

/// Earliest, latest and last-stable offsets of `partitions`.
pub async fn list_offsets(client: &Client, partitions: &[TopicPartition], deadline: Instant) -> Result<[Offsets; 3], WireError> {
    let mut v = lookup(client, partitions, &SPECS, deadline).await?.into_iter();
    Ok([v.next().unwrap_or_default(), v.next().unwrap_or_default(), v.next().unwrap_or_default()])
}

/// Latest offsets only: one request per leader (the benchmark's floor).
pub async fn latest(client: &Client, partitions: &[TopicPartition], deadline: Instant) -> Result<Offsets, WireError> {
    Ok(lookup(client, partitions, &SPECS[1..2], deadline).await?.into_iter().next().unwrap_or_default())
}

/// One map per spec.
async fn lookup(client: &Client, partitions: &[TopicPartition], specs: &[(i64, i8)], deadline: Instant) -> Result<Vec<Offsets>, WireError> {
    let mut out: Vec<Offsets> = specs.iter().map(|_| Offsets::new()).collect();
    let mut todo: Vec<TopicPartition> = partitions.to_vec();
    for attempt in 0..2 {
        if todo.is_empty() {
            break;
        }
        let topics: BTreeSet<String> = todo.iter().map(|tp| tp.topic.clone()).collect();
        let meta = client.topics(&topics, deadline).await?;
        let (by_leader, unplaced) = place(&todo, &meta);
        let last = attempt == 1;
        let mut retry = BTreeSet::new();
        for (tp, code) in unplaced {
            if !last && codes::stale_leader(code) {
                retry.insert(tp);
            } else {
                for o in out.iter_mut() {
                    o.insert(tp.clone(), Err(WireError::kafka("ListOffsets", code)));
                }
            }
        }
        let mut calls = Vec::new();
        for (leader, parts) in &by_leader {
            for (i, (ts, iso)) in specs.iter().enumerate() {
                let req = request(parts, *ts, *iso);
                calls.push(async move { (i, *leader, client.call(*leader, &req, 2, 9, deadline).await) });
            }
        }
        for (i, leader, r) in futures_join(calls).await {
            match r {
                Err(e) => {
                    for (tp, _) in by_leader.get(&leader).into_iter().flatten() {
                        if !last && matches!(e, WireError::Transport { .. }) {
                            retry.insert(tp.clone());
                        } else {
                            out[i].insert(tp.clone(), Err(e.clone()));
                        }
                    }
                }
                Ok(resp) => {
                    for t in resp.topics {
                        let topic = t.name.0.to_string();
                        for p in t.partitions {
                            let tp = TopicPartition { topic: topic.clone(), partition: p.partition_index };
                            if p.error_code == codes::NONE {
                                out[i].insert(tp, Ok(p.offset));
                            } else if !last && codes::stale_leader(p.error_code) {
                                retry.insert(tp);
                            } else {
                                out[i].insert(tp, Err(WireError::kafka("ListOffsets", p.error_code)));
                            }
                        }
                    }
                }
            }
        }
        if !retry.is_empty() {
            client.invalidate_topics(retry.iter().map(|tp| tp.topic.as_str()));
        }
        // A partition asked again is asked for all three specs, so a mix of old and new
        // answers can never pair a start from one leader with an end from another.
        for tp in &retry {
            for o in out.iter_mut() {
                o.remove(tp);
            }
        }
        todo = retry.into_iter().collect();
    }
    Ok(out)
}

/// Partitions by leader, each with the cached leader epoch.
pub type ByLeader = BTreeMap<i32, Vec<(TopicPartition, i32)>>;

/// Partitions grouped by leader with their cached epochs, and those without a leader
/// (with the error code that says why). Pure.
pub fn place(partitions: &[TopicPartition], meta: &HashMap<String, TopicMeta>) -> (ByLeader, Vec<(TopicPartition, i16)>) {
    let mut by_leader = ByLeader::new();
    let mut unplaced = Vec::new();
    for tp in partitions {
        let m = match meta.get(&tp.topic) {
            None => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
            Some(Err(code)) => Err(*code),
            Some(Ok(parts)) => match usize::try_from(tp.partition).ok().and_then(|i| parts.get(i).copied()) {
                None => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
                Some(None) => Err(codes::LEADER_NOT_AVAILABLE),
                Some(Some(p)) if p.leader < 0 => Err(codes::LEADER_NOT_AVAILABLE),
                Some(Some(p)) => Ok(p),
            },
        };
        match m {
            Ok(p) => by_leader.entry(p.leader).or_default().push((tp.clone(), p.epoch)),
            Err(code) => unplaced.push((tp.clone(), code)),
        }
    }
    (by_leader, unplaced)
}

fn request(parts: &[(TopicPartition, i32)], timestamp: i64, isolation: i8) -> ListOffsetsRequest {
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for (tp, epoch) in parts {
        let mut p = ListOffsetsPartition::default();
        p.partition_index = tp.partition;
        p.current_leader_epoch = *epoch;
        p.timestamp = timestamp;
        topics.entry(tp.topic.as_str()).or_default().push(p);
    }
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.isolation_level = isolation;
    req.topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = ListOffsetsTopic::default();
            t.name = TopicName(StrBytes::from_string(name.to_string()));
            t.partitions = partitions;
            t
        })
        .collect();
    req
}

#[cfg(test)]
mod tests {
    use super::super::client::PartitionMeta;
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition { topic: t.into(), partition: p }
    }

    #[test]
    fn partitions_are_grouped_by_leader_and_unknown_ones_carry_the_reason() {
        let meta: HashMap<String, TopicMeta> = [
            ("a".to_string(), Ok(vec![Some(PartitionMeta { leader: 1, epoch: 5 }), Some(PartitionMeta { leader: 2, epoch: 0 }), None])),
            ("gone".to_string(), Err(codes::UNKNOWN_TOPIC_OR_PARTITION)),
        ]
        .into_iter()
        .collect();
        let (by, un) = place(&[tp("a", 0), tp("a", 1), tp("a", 2), tp("a", 9), tp("gone", 0), tp("unasked", 0)], &meta);
        assert_eq!(by[&1], vec![(tp("a", 0), 5)]);
        assert_eq!(by[&2], vec![(tp("a", 1), 0)]);
        assert_eq!(
            un,
            vec![
                (tp("a", 2), codes::LEADER_NOT_AVAILABLE),
                (tp("a", 9), codes::UNKNOWN_TOPIC_OR_PARTITION),
                (tp("gone", 0), codes::UNKNOWN_TOPIC_OR_PARTITION),
                (tp("unasked", 0), codes::UNKNOWN_TOPIC_OR_PARTITION),
            ]
        );
        let req = request(&by[&1], -1, 1);
        assert_eq!(req.isolation_level, 1);
        assert_eq!(req.topics[0].partitions[0].current_leader_epoch, 5);
    }
}
