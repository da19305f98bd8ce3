//! The new offset of each partition for each reset mode. Pure: the partition's committed,
//! earliest and latest offsets (and, for a rewind by time, the offset `ListOffsets` found
//! for that time) come in as values; the new offsets come out, or a located refusal.
//!
//! It deliberately does not decide whether a move is acceptable (that is
//! [`super::limits`]) and never clamps an explicit offset into range: an offset the log
//! does not hold is refused, not silently moved. `shift` clamps to the log's range, as
//! `kafka-consumer-groups --shift-by` does, and the preview shows it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sample::kafka_admin::TopicPartition;

/// How to move a group's offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum ResetMode {
    /// To the first record at or after this time (Unix milliseconds); the log end when
    /// there is none.
    ToTimestamp { ms: i64 },
    /// To the log start.
    Earliest,
    /// To the log end (skip everything not yet consumed).
    Latest,
    /// By `by` records (negative: back), clamped to the log's range.
    Shift { by: i64 },
    /// To the given offset of each listed partition (the others are left alone).
    Explicit { offsets: BTreeMap<String, i64> },
    /// Past the record at the committed offset of each listed partition (`topic:partition`),
    /// which is copied to the dead-letter topic first.
    SkipPoison { partitions: Vec<String> },
}

impl ResetMode {
    pub fn name(&self) -> &'static str {
        match self {
            ResetMode::ToTimestamp { .. } => "to-timestamp",
            ResetMode::Earliest => "earliest",
            ResetMode::Latest => "latest",
            ResetMode::Shift { .. } => "shift",
            ResetMode::Explicit { .. } => "explicit",
            ResetMode::SkipPoison { .. } => "skip-poison",
        }
    }
}

/// What is known of one partition before the move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub tp: TopicPartition,
    /// `None`: the group has no commit for it.
    pub committed: Option<i64>,
    pub earliest: i64,
    pub latest: i64,
    /// For [`ResetMode::ToTimestamp`]: what `ListOffsets` answered for the time (`None`:
    /// no record at or after it).
    pub at_time: Option<i64>,
}

/// One partition's move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub old: Option<i64>,
    pub new: i64,
    pub earliest: i64,
    pub latest: i64,
}

impl Move {
    pub fn tp(&self) -> TopicPartition {
        TopicPartition { topic: self.topic.clone(), partition: self.partition }
    }
    /// Records consumed again (a rewind): `old - new` when `new < old`.
    pub fn replayed(&self) -> u64 {
        match self.old {
            Some(o) if self.new < o => (o - self.new) as u64,
            _ => 0,
        }
    }
    /// Records never consumed (a skip): `new - old` when `new > old`.
    pub fn skipped(&self) -> u64 {
        match self.old {
            Some(o) if self.new > o => (self.new - o) as u64,
            _ => 0,
        }
    }
}

/// Why offsets cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputeError {
    #[error("{0}: not a partition of the group's topics (expected topic:partition)")]
    UnknownPartition(String),
    #[error("{tp}: offset {offset} is outside the log [{earliest}, {latest}]")]
    OutOfRange { tp: String, offset: i64, earliest: i64, latest: i64 },
    #[error("{0}: the group has no committed offset here, so there is no record to skip")]
    NothingCommitted(String),
    #[error("{0}: the committed offset is the log end: there is no record to skip")]
    NothingToSkip(String),
    #[error("no partition to move")]
    Empty,
}

pub fn tp_name(tp: &TopicPartition) -> String {
    format!("{}:{}", tp.topic, tp.partition)
}

/// The moves of `mode` over `parts` (every partition of the group's topics). Partitions
/// a mode does not name (explicit, skip-poison) are left out. Every problem is returned.
pub fn compute(mode: &ResetMode, parts: &[PartitionState]) -> Result<Vec<Move>, Vec<ComputeError>> {
    let mut errors = Vec::new();
    let by_name: BTreeMap<String, &PartitionState> = parts.iter().map(|p| (tp_name(&p.tp), p)).collect();
    let mv = |p: &PartitionState, new: i64| Move { topic: p.tp.topic.clone(), partition: p.tp.partition, old: p.committed, new, earliest: p.earliest, latest: p.latest };
    let mut out = Vec::new();
    match mode {
        ResetMode::ToTimestamp { .. } => out.extend(parts.iter().map(|p| mv(p, p.at_time.unwrap_or(p.latest).clamp(p.earliest, p.latest)))),
        ResetMode::Earliest => out.extend(parts.iter().map(|p| mv(p, p.earliest))),
        ResetMode::Latest => out.extend(parts.iter().map(|p| mv(p, p.latest))),
        ResetMode::Shift { by } => out.extend(parts.iter().map(|p| {
            // A partition without a commit shifts from the log start, like the consumer's
            // default `auto.offset.reset=earliest` would read it.
            let from = p.committed.unwrap_or(p.earliest);
            mv(p, from.saturating_add(*by).clamp(p.earliest, p.latest))
        })),
        ResetMode::Explicit { offsets } => {
            for (name, offset) in offsets {
                match by_name.get(name) {
                    None => errors.push(ComputeError::UnknownPartition(name.clone())),
                    Some(p) if *offset < p.earliest || *offset > p.latest => {
                        errors.push(ComputeError::OutOfRange { tp: name.clone(), offset: *offset, earliest: p.earliest, latest: p.latest })
                    }
                    Some(p) => out.push(mv(p, *offset)),
                }
            }
        }
        ResetMode::SkipPoison { partitions } => {
            for name in partitions {
                match by_name.get(name) {
                    None => errors.push(ComputeError::UnknownPartition(name.clone())),
                    Some(p) => match p.committed {
                        None => errors.push(ComputeError::NothingCommitted(name.clone())),
                        Some(c) if c >= p.latest => errors.push(ComputeError::NothingToSkip(name.clone())),
                        Some(c) if c < p.earliest => errors.push(ComputeError::OutOfRange { tp: name.clone(), offset: c, earliest: p.earliest, latest: p.latest }),
                        Some(c) => out.push(mv(p, c + 1)),
                    },
                }
            }
        }
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(ComputeError::Empty);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(partition: i32, committed: Option<i64>, earliest: i64, latest: i64, at_time: Option<i64>) -> PartitionState {
        PartitionState { tp: TopicPartition { topic: "t".into(), partition }, committed, earliest, latest, at_time }
    }

    fn news(m: &[Move]) -> Vec<i64> {
        m.iter().map(|m| m.new).collect()
    }

    #[test]
    fn a_rewind_to_a_time_takes_the_offset_found_for_it_and_the_log_end_when_none_was() {
        let parts = [p(0, Some(100), 0, 100, Some(40)), p(1, Some(50), 0, 50, None)];
        let m = compute(&ResetMode::ToTimestamp { ms: 1 }, &parts).unwrap();
        assert_eq!(news(&m), [40, 50]);
        assert_eq!((m[0].replayed(), m[0].skipped()), (60, 0));
        assert_eq!((m[1].replayed(), m[1].skipped()), (0, 0));
    }

    #[test]
    fn earliest_latest_and_shift_move_within_the_log_and_shift_clamps_like_kafka_consumer_groups() {
        let parts = [p(0, Some(10), 5, 20, None), p(1, None, 0, 7, None)];
        assert_eq!(news(&compute(&ResetMode::Earliest, &parts).unwrap()), [5, 0]);
        assert_eq!(news(&compute(&ResetMode::Latest, &parts).unwrap()), [20, 7]);
        assert_eq!(news(&compute(&ResetMode::Shift { by: -3 }, &parts).unwrap()), [7, 0]);
        assert_eq!(news(&compute(&ResetMode::Shift { by: -100 }, &parts).unwrap()), [5, 0]);
        assert_eq!(news(&compute(&ResetMode::Shift { by: i64::MAX }, &parts).unwrap()), [20, 7]);
        let m = compute(&ResetMode::Latest, &parts).unwrap();
        assert_eq!(m[0].skipped(), 10);
        assert_eq!(m[1].skipped(), 0, "no commit: nothing is known to be skipped");
    }

    #[test]
    fn an_explicit_offset_outside_the_log_or_an_unknown_partition_is_refused_not_clamped() {
        let parts = [p(0, Some(10), 5, 20, None)];
        let mode = |o: &[(&str, i64)]| ResetMode::Explicit { offsets: o.iter().map(|(k, v)| (k.to_string(), *v)).collect() };
        assert_eq!(news(&compute(&mode(&[("t:0", 12)]), &parts).unwrap()), [12]);
        let e = compute(&mode(&[("t:0", 21), ("t:9", 1)]), &parts).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].to_string(), "t:0: offset 21 is outside the log [5, 20]");
        assert!(matches!(&e[1], ComputeError::UnknownPartition(n) if n == "t:9"));
        assert_eq!(compute(&mode(&[]), &parts).unwrap_err(), vec![ComputeError::Empty]);
    }

    #[test]
    fn skipping_a_poison_record_moves_exactly_one_past_the_committed_offset() {
        let parts = [p(0, Some(10), 0, 20, None), p(1, Some(20), 0, 20, None), p(2, None, 0, 5, None)];
        let skip = |names: &[&str]| ResetMode::SkipPoison { partitions: names.iter().map(|s| s.to_string()).collect() };
        let m = compute(&skip(&["t:0"]), &parts).unwrap();
        assert_eq!((m.len(), m[0].new, m[0].skipped()), (1, 11, 1));
        let e = compute(&skip(&["t:1", "t:2"]), &parts).unwrap_err();
        assert!(matches!(&e[0], ComputeError::NothingToSkip(_)), "{e:?}");
        assert!(matches!(&e[1], ComputeError::NothingCommitted(_)), "{e:?}");
    }
}
