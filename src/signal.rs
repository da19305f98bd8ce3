//! Shared vocabulary of sampled data: the quality of a series and time helpers.
//!
//! A value is only ever used with its quality. `Fresh` data may drive decisions;
//! `Stale` (the source failed or stopped answering) and `Missing` (never sampled) data
//! is shown as such and never stands in for a number: unknown is not zero.

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// How trustworthy the latest data of a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Fresh,
    Stale,
    Missing,
}

impl Quality {
    pub const ALL: [Quality; 3] = [Quality::Fresh, Quality::Stale, Quality::Missing];

    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Fresh => "fresh",
            Quality::Stale => "stale",
            Quality::Missing => "missing",
        }
    }
}

/// Quality of a source's data at `now`. Pure.
///
/// - never sampled successfully → `Missing`;
/// - the latest attempt failed, or the last success is older than `stale_after`
///   (the loop is stuck or slow) → `Stale`;
/// - otherwise `Fresh`.
pub fn quality(now: SystemTime, last_success: Option<SystemTime>, last_attempt_failed: bool, stale_after: Duration) -> Quality {
    match last_success {
        None => Quality::Missing,
        Some(t) if last_attempt_failed || now.duration_since(t).unwrap_or_default() > stale_after => Quality::Stale,
        Some(_) => Quality::Fresh,
    }
}

/// Seconds since the Unix epoch, as Prometheus timestamps are written.
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Serde helper: a `SystemTime` as fractional Unix seconds.
pub mod unix_seconds {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(super::unix_secs(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_follows_success_failure_and_age() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let stale_after = Duration::from_secs(25);
        assert_eq!(quality(t0, None, false, stale_after), Quality::Missing);
        assert_eq!(quality(t0, None, true, stale_after), Quality::Missing);
        assert_eq!(quality(t0 + Duration::from_secs(5), Some(t0), false, stale_after), Quality::Fresh);
        assert_eq!(quality(t0 + Duration::from_secs(5), Some(t0), true, stale_after), Quality::Stale);
        assert_eq!(quality(t0 + Duration::from_secs(26), Some(t0), false, stale_after), Quality::Stale);
    }
}
