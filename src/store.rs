//! The store: the latest sample of every source and the health of its sampling loop.
//!
//! Samplers write, the HTTP layer reads. The lock is a std `RwLock` held only for a
//! copy or a pointer swap, never across an `.await`. Snapshots are `Arc`ed so a scrape
//! never copies a cluster's data.
//!
//! It keeps the latest snapshot only; bounded per-series history windows (for rates,
//! time lag and trends) are a later layer on top of this one.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::sample::kafka::KafkaSnapshot;
use crate::signal::{quality, Quality};

/// Which kind of source a loop samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Kafka,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Kafka => "kafka",
        }
    }
}

/// Health of one source's sampling loop.
#[derive(Debug, Clone, Serialize)]
pub struct SourceHealth {
    pub kind: SourceKind,
    pub name: String,
    #[serde(skip)]
    pub last_attempt: Option<SystemTime>,
    #[serde(skip)]
    pub last_success: Option<SystemTime>,
    /// The latest error, for people (logs, API); never a metric label.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    #[serde(skip)]
    pub stale_after: Duration,
}

impl SourceHealth {
    pub fn quality(&self, now: SystemTime) -> Quality {
        quality(now, self.last_success, self.consecutive_failures > 0, self.stale_after)
    }
}

/// One source: its health and latest data.
#[derive(Debug, Clone)]
pub struct Entry {
    pub health: SourceHealth,
    pub snapshot: Option<Arc<KafkaSnapshot>>,
}

/// Shared between samplers and readers.
#[derive(Debug, Default)]
pub struct Store {
    inner: RwLock<BTreeMap<(SourceKind, String), Entry>>,
}

impl Store {
    /// Declares a source before its first sample, so it is `missing` (not absent) until then.
    pub fn register(&self, kind: SourceKind, name: &str, stale_after: Duration) {
        let health = SourceHealth {
            kind,
            name: name.to_string(),
            last_attempt: None,
            last_success: None,
            last_error: None,
            consecutive_failures: 0,
            stale_after,
        };
        self.write().insert((kind, name.to_string()), Entry { health, snapshot: None });
    }

    /// Records a successful sample.
    pub fn record_success(&self, kind: SourceKind, name: &str, at: SystemTime, snapshot: KafkaSnapshot) {
        if let Some(e) = self.write().get_mut(&(kind, name.to_string())) {
            e.health.last_attempt = Some(at);
            e.health.last_success = Some(at);
            e.health.last_error = None;
            e.health.consecutive_failures = 0;
            e.snapshot = Some(Arc::new(snapshot));
        }
    }

    /// Records a failed attempt; the previous snapshot is kept but is now stale.
    /// Returns the number of consecutive failures.
    pub fn record_failure(&self, kind: SourceKind, name: &str, at: SystemTime, error: String) -> u32 {
        let mut map = self.write();
        let Some(e) = map.get_mut(&(kind, name.to_string())) else { return 0 };
        e.health.last_attempt = Some(at);
        e.health.last_error = Some(error);
        e.health.consecutive_failures = e.health.consecutive_failures.saturating_add(1);
        e.health.consecutive_failures
    }

    /// A consistent copy of every entry (cheap: snapshots are shared).
    pub fn entries(&self) -> Vec<Entry> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(SourceKind, String), Entry>> {
        // A panic while holding the lock cannot leave the map half-written (every
        // write is a single insert or field assignment), so poisoning is ignored.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(SourceKind, String), Entry>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> KafkaSnapshot {
        crate::sample::kafka::build_snapshot("c", &[], &[], &[], &Default::default(), &Default::default())
    }

    #[test]
    fn a_source_goes_missing_fresh_stale_and_fresh_again() {
        let s = Store::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        s.register(SourceKind::Kafka, "c", Duration::from_secs(10));
        assert_eq!(s.entries()[0].health.quality(t0), Quality::Missing);
        s.record_success(SourceKind::Kafka, "c", t0, snapshot());
        assert_eq!(s.entries()[0].health.quality(t0), Quality::Fresh);
        assert_eq!(s.record_failure(SourceKind::Kafka, "c", t0, "down".into()), 1);
        let e = &s.entries()[0];
        assert_eq!(e.health.quality(t0), Quality::Stale);
        assert!(e.snapshot.is_some(), "the last data is kept, flagged stale");
        s.record_success(SourceKind::Kafka, "c", t0, snapshot());
        assert_eq!(s.entries()[0].health.quality(t0), Quality::Fresh);
        assert_eq!(s.entries()[0].health.consecutive_failures, 0);
    }
}
