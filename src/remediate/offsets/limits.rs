//! Blast-radius limits of an offset move, checked before anything is paused. Pure.
//!
//! A move beyond a limit is **refused**, never truncated: replaying "only the first
//! million" of two million records, or skipping part of a range, leaves the data in a
//! state nobody asked for. Every limit is checked and every breach reported at once.
//! An unknown quantity that a limit depends on (the age of the oldest replayed record)
//! refuses too: unknown is not zero.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::compute::Move;

/// The limits; each applies to one procedure run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Partitions whose offset changes.
    pub max_partitions: usize,
    /// Records skipped (never processed), summed over partitions.
    pub max_skipped: u64,
    /// Records processed again, summed over partitions.
    pub max_replayed: u64,
    /// How far back the oldest replayed record may be.
    #[serde(with = "humantime_serde_secs")]
    pub max_rewind_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_partitions: 64, max_skipped: 1_000, max_replayed: 10_000_000, max_rewind_age: Duration::from_secs(7 * 24 * 3600) }
    }
}

mod humantime_serde_secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_secs(secs))
    }
}

/// One breached limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breach {
    pub limit: &'static str,
    pub reason: String,
}

/// Every limit `moves` breaches (empty: within limits). `oldest_replayed` is the time of
/// the oldest record the move would replay (`None`: unknown), `now` the current time.
pub fn check(moves: &[Move], limits: &Limits, oldest_replayed: Option<SystemTime>, now: SystemTime) -> Vec<Breach> {
    let mut out = Vec::new();
    let changed = moves.iter().filter(|m| m.old != Some(m.new)).count();
    if changed > limits.max_partitions {
        out.push(Breach { limit: "max_partitions", reason: format!("{changed} partitions would move, the limit is {}", limits.max_partitions) });
    }
    let skipped: u64 = moves.iter().map(Move::skipped).sum();
    if skipped > limits.max_skipped {
        out.push(Breach { limit: "max_skipped", reason: format!("{skipped} records would be skipped, the limit is {}", limits.max_skipped) });
    }
    let replayed: u64 = moves.iter().map(Move::replayed).sum();
    if replayed > limits.max_replayed {
        out.push(Breach { limit: "max_replayed", reason: format!("{replayed} records would be replayed, the limit is {}", limits.max_replayed) });
    }
    if replayed > 0 {
        match oldest_replayed {
            None => out.push(Breach { limit: "max_rewind_age", reason: "the age of the oldest replayed record is unknown".into() }),
            Some(t) => {
                let age = now.duration_since(t).unwrap_or_default();
                if age > limits.max_rewind_age {
                    out.push(Breach {
                        limit: "max_rewind_age",
                        reason: format!(
                            "the rewind reaches back {}, the limit is {}",
                            humantime::format_duration(Duration::from_secs(age.as_secs())),
                            humantime::format_duration(limits.max_rewind_age)
                        ),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(partition: i32, old: i64, new: i64) -> Move {
        Move { topic: "t".into(), partition, old: Some(old), new, earliest: 0, latest: 1_000_000 }
    }

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn a_move_within_every_limit_passes() {
        let l = Limits { max_partitions: 2, max_skipped: 1, max_replayed: 100, max_rewind_age: Duration::from_secs(3600) };
        assert!(check(&[mv(0, 10, 11), mv(1, 100, 0)], &l, Some(t(0)), t(3600)).is_empty());
    }

    #[test]
    fn every_breached_limit_is_reported_and_nothing_is_truncated() {
        let l = Limits { max_partitions: 1, max_skipped: 1, max_replayed: 99, max_rewind_age: Duration::from_secs(60) };
        let b = check(&[mv(0, 10, 12), mv(1, 100, 0)], &l, Some(t(0)), t(3600));
        let names: Vec<&str> = b.iter().map(|b| b.limit).collect();
        assert_eq!(names, ["max_partitions", "max_skipped", "max_replayed", "max_rewind_age"]);
        assert_eq!(b[2].reason, "100 records would be replayed, the limit is 99");
        assert_eq!(b[3].reason, "the rewind reaches back 1h, the limit is 1m");
    }

    #[test]
    fn a_rewind_of_unknown_age_is_refused_and_a_skip_needs_no_age() {
        let l = Limits::default();
        assert_eq!(check(&[mv(0, 10, 5)], &l, None, t(0))[0].limit, "max_rewind_age");
        assert!(check(&[mv(0, 10, 11)], &l, None, t(0)).is_empty());
        assert!(check(&[mv(0, 10, 10)], &Limits { max_partitions: 0, ..l }, None, t(0)).is_empty(), "an unchanged partition does not count");
    }
}
