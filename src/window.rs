//! Pure computations over windows of (time, value) points: rates of offset series,
//! time-lag interpolation, and the consumer-group status evaluator.
//!
//! No clock, no I/O: times come in as arguments. Nothing here returns NaN: too little
//! data gives `None` (or `Status::Unknown`), which callers expose as absent/unknown.

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// A point: time and value.
pub type Point = (SystemTime, f64);

fn secs(t: SystemTime) -> f64 {
    crate::signal::unix_secs(t)
}

/// Rate of an offset series and the backward moves seen in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Units per second over the monotonic part of the window.
    pub per_second: f64,
    /// How many times the value went down (a rewind, a topic recreated).
    pub rewinds: usize,
}

/// Rate over `points` (oldest first). An offset that goes backwards is a rewind, never a
/// negative rate: the rate is computed over the points after the last backward move.
/// `None` with fewer than two points after that move, or no time between them.
pub fn rate(points: &[Point]) -> Option<Rate> {
    let rewinds = points.windows(2).filter(|w| w[1].1 < w[0].1).count();
    let start = points.windows(2).rposition(|w| w[1].1 < w[0].1).map_or(0, |i| i + 1);
    let tail = &points[start..];
    let (first, last) = (tail.first()?, tail.last()?);
    let dt = secs(last.0) - secs(first.0);
    if tail.len() < 2 || dt <= 0.0 {
        return None;
    }
    Some(Rate { per_second: (last.1 - first.1) / dt, rewinds })
}

/// When the log end was at `offset`, from a table of (time, log-end offset) points.
///
/// The table is cleaned first: points whose offset went backwards are dropped, and of a
/// run of equal offsets only the latest point is kept (the latest moment the end was
/// still there). The committed offset is then placed between the two surrounding points
/// by linear interpolation, or extrapolated from the first two points when it is older
/// than the table. `None` with fewer than two distinct points.
/// Callers handle "caught up" (`offset >= latest end`) themselves: lag is then 0.
pub fn time_at_offset(table: &[Point], offset: f64) -> Option<SystemTime> {
    let mut clean: Vec<Point> = Vec::with_capacity(table.len());
    for &p in table {
        match clean.last_mut() {
            Some(last) if p.1 < last.1 => {}
            Some(last) if p.1 == last.1 => *last = p,
            _ => clean.push(p),
        }
    }
    if clean.len() < 2 {
        return None;
    }
    let seg = match clean.windows(2).position(|w| w[0].1 <= offset && offset < w[1].1) {
        Some(i) => (clean[i], clean[i + 1]),
        None if offset < clean[0].1 => (clean[0], clean[1]),
        None => (clean[clean.len() - 2], clean[clean.len() - 1]),
    };
    let ((t0, o0), (t1, o1)) = seg;
    let t = secs(t0) + (offset - o0) * (secs(t1) - secs(t0)) / (o1 - o0);
    if !t.is_finite() {
        return None;
    }
    Some(if t >= 0.0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t)
    } else {
        SystemTime::UNIX_EPOCH
    })
}

/// Seconds from `then` to `now`, never negative.
pub fn age(now: SystemTime, then: SystemTime) -> f64 {
    now.duration_since(then).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Status of a consumer group (worst of its partitions), in the spirit of Burrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Not enough history in the window to judge.
    Unknown,
    Ok,
    /// Lag rose throughout the window.
    Warn,
    /// The committed offset moved backwards in the window.
    Rewind,
    /// Lag > 0, offsets unchanged across the window, members present (stuck consumer).
    Stall,
    /// Lag > 0, offsets unchanged across the window, no members (nobody consuming).
    Stop,
    /// The committed offset is beyond the log end (truncated or recreated topic): the
    /// group will reset by its `auto.offset.reset` policy. Judged on the latest sample.
    OutOfRange,
    /// The committed offset is below the log start: records were deleted before the
    /// group consumed them. Judged on the latest sample.
    DataLoss,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Ok,
        Status::Warn,
        Status::Stall,
        Status::Stop,
        Status::Rewind,
        Status::OutOfRange,
        Status::DataLoss,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "UNKNOWN",
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Rewind => "REWIND",
            Status::Stall => "STALL",
            Status::Stop => "STOP",
            Status::OutOfRange => "OUT_OF_RANGE",
            Status::DataLoss => "DATA_LOSS",
        }
    }
}

/// Minimum fraction of the window the points must span before a status is given.
const MIN_COVERAGE: f64 = 0.8;
/// Minimum points in the window.
const MIN_POINTS: usize = 3;

/// Status of one partition from its committed-offset and lag points within the window
/// (oldest first), and whether the group has members. Pure; see the README for the
/// rules and how they differ from Burrow's.
pub fn partition_status(committed: &[Point], lag: &[Point], window: Duration, has_members: bool) -> Status {
    if committed.windows(2).any(|w| w[1].1 < w[0].1) {
        return Status::Rewind;
    }
    let covered = |p: &[Point]| {
        p.len() >= MIN_POINTS
            && match (p.first(), p.last()) {
                (Some(a), Some(b)) => secs(b.0) - secs(a.0) >= window.as_secs_f64() * MIN_COVERAGE,
                _ => false,
            }
    };
    if !covered(committed) || !covered(lag) {
        return Status::Unknown;
    }
    let last_lag = lag.last().map_or(0.0, |p| p.1);
    if last_lag <= 0.0 {
        return Status::Ok;
    }
    let unchanged = committed.windows(2).all(|w| w[1].1 == w[0].1);
    if unchanged {
        return if has_members { Status::Stall } else { Status::Stop };
    }
    let never_decreased = lag.windows(2).all(|w| w[1].1 >= w[0].1);
    let rose = lag.first().is_some_and(|f| last_lag > f.1);
    if never_decreased && rose {
        Status::Warn
    } else {
        Status::Ok
    }
}

/// A group's status: the worst known status of its partitions; `Unknown` only when no
/// partition could be judged.
pub fn group_status(partitions: impl IntoIterator<Item = Status>) -> Status {
    partitions.into_iter().filter(|s| *s != Status::Unknown).max().unwrap_or(Status::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1_000_000.0 + s)
    }

    fn pts(v: &[(f64, f64)]) -> Vec<Point> {
        v.iter().map(|&(s, x)| (t(s), x)).collect()
    }

    #[test]
    fn rate_is_delta_over_time() {
        let r = rate(&pts(&[(0.0, 100.0), (10.0, 150.0), (20.0, 300.0)])).unwrap();
        assert_eq!(r.per_second, 10.0);
        assert_eq!(r.rewinds, 0);
    }

    #[test]
    fn a_backward_move_is_a_rewind_and_never_a_negative_rate() {
        let r = rate(&pts(&[(0.0, 100.0), (10.0, 200.0), (20.0, 50.0), (30.0, 80.0)])).unwrap();
        assert_eq!(r.rewinds, 1);
        assert_eq!(r.per_second, 3.0, "only the points after the rewind count");
        assert!(rate(&pts(&[(0.0, 100.0), (10.0, 50.0)])).is_none(), "one point after the rewind: unknown");
    }

    #[test]
    fn rate_needs_two_points() {
        assert!(rate(&pts(&[(0.0, 1.0)])).is_none());
        assert!(rate(&[]).is_none());
    }

    #[test]
    fn interpolation_places_the_offset_between_the_surrounding_points() {
        let table = pts(&[(0.0, 0.0), (10.0, 100.0), (20.0, 300.0)]);
        assert_eq!(time_at_offset(&table, 50.0), Some(t(5.0)));
        assert_eq!(time_at_offset(&table, 200.0), Some(t(15.0)));
        assert_eq!(time_at_offset(&table, 100.0), Some(t(10.0)));
    }

    #[test]
    fn interpolation_extrapolates_beyond_the_table() {
        let table = pts(&[(10.0, 100.0), (20.0, 200.0)]);
        assert_eq!(time_at_offset(&table, 50.0), Some(t(5.0)));
        assert_eq!(time_at_offset(&table, 250.0), Some(t(25.0)));
    }

    #[test]
    fn interpolation_drops_backward_points_and_keeps_the_latest_of_equal_ones() {
        // 100 at t=0,5,8 (idle), then 200 at t=18; a backwards blip at t=9 is ignored.
        let table = pts(&[(0.0, 100.0), (5.0, 100.0), (8.0, 100.0), (9.0, 90.0), (18.0, 200.0)]);
        assert_eq!(time_at_offset(&table, 150.0), Some(t(13.0)));
        assert_eq!(time_at_offset(&table, 100.0), Some(t(8.0)));
    }

    #[test]
    fn interpolation_needs_two_distinct_points() {
        assert_eq!(time_at_offset(&pts(&[(0.0, 5.0), (10.0, 5.0)]), 3.0), None);
        assert_eq!(time_at_offset(&pts(&[(0.0, 5.0)]), 3.0), None);
        assert_eq!(time_at_offset(&[], 3.0), None);
    }

    const W: Duration = Duration::from_secs(100);

    fn series(step: f64, values: &[f64]) -> Vec<Point> {
        values.iter().enumerate().map(|(i, v)| (t(i as f64 * step), *v)).collect()
    }

    #[test]
    fn status_ok_when_caught_up_or_progressing() {
        let committed = series(25.0, &[10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!(partition_status(&committed, &series(25.0, &[5.0, 5.0, 5.0, 5.0, 0.0]), W, true), Status::Ok);
        assert_eq!(partition_status(&committed, &series(25.0, &[5.0, 7.0, 4.0, 6.0, 5.0]), W, true), Status::Ok);
    }

    #[test]
    fn status_warn_when_lag_rises_throughout_the_window() {
        let committed = series(25.0, &[10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!(partition_status(&committed, &series(25.0, &[5.0, 6.0, 6.0, 9.0, 12.0]), W, true), Status::Warn);
    }

    #[test]
    fn status_stall_or_stop_when_offsets_do_not_move_with_lag() {
        let committed = series(25.0, &[10.0; 5]);
        let lag = series(25.0, &[5.0, 6.0, 7.0, 8.0, 9.0]);
        assert_eq!(partition_status(&committed, &lag, W, true), Status::Stall);
        assert_eq!(partition_status(&committed, &lag, W, false), Status::Stop);
    }

    #[test]
    fn status_rewind_when_the_committed_offset_goes_back() {
        let committed = series(25.0, &[10.0, 20.0, 5.0]);
        assert_eq!(partition_status(&committed, &series(25.0, &[1.0, 1.0, 9.0]), W, true), Status::Rewind);
    }

    #[test]
    fn status_unknown_without_enough_history() {
        let committed = series(10.0, &[10.0, 10.0, 10.0]);
        let lag = series(10.0, &[5.0, 5.0, 5.0]);
        assert_eq!(partition_status(&committed, &lag, W, false), Status::Unknown, "covers 20s of a 100s window");
        assert_eq!(partition_status(&[], &[], W, false), Status::Unknown);
    }

    #[test]
    fn group_takes_the_worst_known_partition() {
        assert_eq!(group_status([Status::Ok, Status::Warn, Status::Unknown]), Status::Warn);
        assert_eq!(group_status([Status::Stall, Status::Stop, Status::Rewind]), Status::Stop);
        assert_eq!(group_status([Status::Unknown, Status::Unknown]), Status::Unknown);
        assert_eq!(group_status([]), Status::Unknown);
        assert_eq!(group_status([Status::Stop, Status::OutOfRange, Status::Ok]), Status::OutOfRange);
        assert_eq!(group_status([Status::OutOfRange, Status::DataLoss, Status::Unknown]), Status::DataLoss);
    }
}
