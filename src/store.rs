//! The store: per source, the health of its sampling loop, its latest targets, and a
//! bounded history of every series it produced.
//!
//! Samplers write, everything else reads. The lock is a std `RwLock` held only for
//! copies and in-place updates, never across an `.await`.
//!
//! # Guarantees
//! - Memory is bounded: each series keeps at most `max_points` points and none older than
//!   `retention`; a series not produced for `retention` is dropped whole.
//! - Quality is derived, never stored: a series is `fresh` only if its source's latest
//!   attempt succeeded recently **and** that sample produced the series; `stale` if the
//!   source failed or stopped; `missing` if the source is fine but no longer produces it.
//! - No NaN is ever stored ([`Observation::new`] refuses non-finite values).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{DlqConfig, HistoryConfig};
pub use crate::signal::SourceKind;
use crate::signal::{quality, DlqLink, Observation, Quality, SeriesKey, SourceSample, TargetInfo};

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
    /// A successful attempt at `at`.
    fn succeeded(&mut self, at: SystemTime) {
        self.last_attempt = Some(at);
        self.last_success = Some(at);
        self.last_error = None;
        self.consecutive_failures = 0;
    }

    pub fn quality(&self, now: SystemTime) -> Quality {
        quality(now, self.last_success, self.consecutive_failures > 0, self.stale_after)
    }
}

/// Bounded history of one series.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Oldest first; timestamps strictly increasing.
    pub points: VecDeque<(SystemTime, f64)>,
}

impl Series {
    pub fn last(&self) -> Option<(SystemTime, f64)> {
        self.points.back().copied()
    }

    /// Points at or after `since`, oldest first (timestamps are increasing, so this is a
    /// binary search and a copy, not a scan).
    pub fn since(&self, since: SystemTime) -> impl Iterator<Item = (SystemTime, f64)> + '_ {
        let from = self.points.partition_point(|(t, _)| *t < since);
        self.points.range(from..).copied()
    }
}

/// Every series of one source. Keys are hashed for every value of every sample, so with
/// foldhash (randomly seeded per map, several times faster than SipHash on these keys).
pub type SeriesMap = HashMap<SeriesKey, Series, foldhash::fast::RandomState>;

/// One source: health, latest targets and series history.
#[derive(Debug, Clone)]
pub struct Entry {
    pub health: SourceHealth,
    pub targets: Vec<TargetInfo>,
    /// Dead-letter links the source discovered (Kafka Connect).
    pub dlq_links: Vec<DlqLink>,
    pub series: SeriesMap,
}

impl Entry {
    /// Quality of one series of this source at `now`.
    pub fn series_quality(&self, now: SystemTime, key: &SeriesKey) -> Quality {
        match self.health.quality(now) {
            Quality::Fresh => {
                let produced_last_time = self
                    .series
                    .get(key)
                    .and_then(Series::last)
                    .is_some_and(|(t, _)| Some(t) == self.health.last_success);
                if produced_last_time {
                    Quality::Fresh
                } else {
                    Quality::Missing
                }
            }
            q => q,
        }
    }

    /// The series this source produced in its latest successful sample, while fresh.
    pub fn fresh_series(&self, now: SystemTime) -> impl Iterator<Item = (&SeriesKey, f64)> {
        let fresh = self.health.quality(now) == Quality::Fresh;
        let at = self.health.last_success;
        self.series.iter().filter_map(move |(k, s)| match s.last() {
            Some((t, v)) if fresh && Some(t) == at => Some((k, v)),
            _ => None,
        })
    }
}

/// Shared between samplers and readers.
#[derive(Debug)]
pub struct Store {
    inner: RwLock<BTreeMap<(SourceKind, String), Entry>>,
    history: HistoryConfig,
    dlq: RwLock<DlqConfig>,
    /// Where every stored observation is also recorded (`[record]`), if anywhere.
    recorder: std::sync::OnceLock<crate::record::Recorder>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(HistoryConfig::default())
    }
}

impl Store {
    pub fn new(history: HistoryConfig) -> Self {
        Store {
            inner: RwLock::default(),
            history,
            dlq: RwLock::new(DlqConfig { patterns: Vec::new(), topics: Vec::new() }),
            recorder: std::sync::OnceLock::new(),
        }
    }

    /// Records every observation stored from now on (and every failed attempt).
    pub fn set_recorder(&self, recorder: crate::record::Recorder) {
        if self.recorder.set(recorder).is_err() {
            tracing::warn!("a recorder was already set; keeping the first");
        }
    }

    pub fn recorder(&self) -> Option<&crate::record::Recorder> {
        self.recorder.get()
    }

    pub fn set_dlq_config(&self, dlq: DlqConfig) {
        *self.dlq.write().unwrap_or_else(|p| p.into_inner()) = dlq;
    }

    /// The configured DLQ mappings and every link the sources discovered.
    pub fn dlq_inputs(&self) -> (DlqConfig, Vec<DlqLink>) {
        let config = self.dlq.read().unwrap_or_else(|p| p.into_inner()).clone();
        let links = self.read().values().flat_map(|e| e.dlq_links.iter().cloned()).collect();
        (config, links)
    }

    pub fn history_config(&self) -> HistoryConfig {
        self.history
    }

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
        self.write()
            .insert((kind, name.to_string()), Entry { health, targets: Vec::new(), dlq_links: Vec::new(), series: SeriesMap::default() });
    }

    /// Records a successful sample: appends every observation to its series' history,
    /// replaces the targets, trims history to the configured bounds.
    pub fn record_success(&self, kind: SourceKind, name: &str, at: SystemTime, sample: SourceSample) {
        let history = self.history;
        let mut map = self.write();
        let Some(e) = map.get_mut(&(kind, name.to_string())) else { return };
        e.health.succeeded(at);
        e.targets = sample.targets;
        e.dlq_links = sample.dlq_links;
        if let Some(r) = self.recorder.get() {
            r.sample(at, kind, name, e.health.stale_after, sample.observations.clone());
        }
        append(&mut e.series, at, sample.observations, &history);
    }

    /// Records a successful sample given as values of known series (replay): a series
    /// key is cloned only the first time it is seen. No targets.
    pub fn record_values<'k>(&self, kind: SourceKind, name: &str, at: SystemTime, values: impl Iterator<Item = (&'k SeriesKey, f64)>) {
        let history = self.history;
        let mut map = self.write();
        let Some(e) = map.get_mut(&(kind, name.to_string())) else { return };
        e.health.succeeded(at);
        for (key, value) in values {
            if !value.is_finite() {
                continue;
            }
            let s = match e.series.get_mut(key) {
                Some(s) => s,
                None => e.series.entry(key.clone()).or_default(),
            };
            push_point(s, at, value);
        }
        trim(&mut e.series, at, &history);
    }

    /// Records a successful sample and the series derived from it (time lag, rates,
    /// status) as one snapshot: `derive` reads the entry with the raw series already
    /// appended, and no reader ever sees the raw series of a sample without its derived
    /// ones (which would read as `missing`, reset pending alerts and make a scrape
    /// withdraw them). Returns the number of series recorded.
    pub fn record_success_with(
        &self,
        kind: SourceKind,
        name: &str,
        at: SystemTime,
        sample: SourceSample,
        derive: impl FnOnce(&Entry) -> Vec<Observation>,
    ) -> usize {
        let history = self.history;
        let mut map = self.write();
        let Some(e) = map.get_mut(&(kind, name.to_string())) else { return 0 };
        let raw = sample.observations.len();
        e.health.succeeded(at);
        e.targets = sample.targets;
        e.dlq_links = sample.dlq_links;
        let recorded = self.recorder.get().map(|_| sample.observations.clone());
        append(&mut e.series, at, sample.observations, &history);
        let derived = derive(e);
        let n = raw + derived.len();
        if let (Some(r), Some(mut all)) = (self.recorder.get(), recorded) {
            all.extend(derived.iter().cloned());
            r.sample(at, kind, name, e.health.stale_after, all);
        }
        append(&mut e.series, at, derived, &history);
        n
    }

    /// Adds `key: value` to the detail of one of a source's targets.
    pub fn annotate_target(&self, kind: SourceKind, name: &str, target_kind: &str, key: &str, value: serde_json::Value) {
        let mut map = self.write();
        let Some(e) = map.get_mut(&(kind, name.to_string())) else { return };
        for t in e.targets.iter_mut().filter(|t| t.kind == target_kind) {
            if let Some(obj) = t.detail.as_object_mut() {
                obj.insert(key.to_string(), value.clone());
            }
        }
    }

    /// Records a failed attempt; history is kept but the source's series are now stale.
    /// Returns the number of consecutive failures.
    pub fn record_failure(&self, kind: SourceKind, name: &str, at: SystemTime, error: String) -> u32 {
        let mut map = self.write();
        let Some(e) = map.get_mut(&(kind, name.to_string())) else { return 0 };
        e.health.last_attempt = Some(at);
        e.health.last_error = Some(error);
        e.health.consecutive_failures = e.health.consecutive_failures.saturating_add(1);
        if let Some(r) = self.recorder.get() {
            r.failure(at, kind, name, e.health.stale_after);
        }
        e.health.consecutive_failures
    }

    /// Runs `f` over one source's entry under the read lock.
    pub fn with_entry<T>(&self, kind: SourceKind, name: &str, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        self.read().get(&(kind, name.to_string())).map(f)
    }

    /// Runs `f` over every entry under the read lock (no copies).
    pub fn with_entries<T>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &Entry>) -> T) -> T {
        let map = self.read();
        let mut it = map.values();
        f(&mut it)
    }

    /// A copy of every source's health (cheap: no series).
    pub fn health(&self) -> Vec<SourceHealth> {
        self.read().values().map(|e| e.health.clone()).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(SourceKind, String), Entry>> {
        // Every write is a sequence of single-field updates that cannot panic halfway
        // in a way that breaks an invariant readers rely on, so poisoning is ignored.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(SourceKind, String), Entry>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Appends observations at `at` and enforces the bounds. A second value for the same
/// series at the same time replaces the first.
fn append(series: &mut SeriesMap, at: SystemTime, observations: Vec<Observation>, h: &HistoryConfig) {
    for o in observations {
        push_point(series.entry(o.key).or_default(), at, o.value);
    }
    trim(series, at, h);
}

fn push_point(s: &mut Series, at: SystemTime, value: f64) {
    match s.points.back_mut() {
        Some((t, v)) if *t == at => *v = value,
        Some((t, _)) if *t > at => {} // never reorder history
        _ => s.points.push_back((at, value)),
    }
}

/// Enforces the bounds: points past retention or beyond `max_points`, empty series.
fn trim(series: &mut SeriesMap, at: SystemTime, h: &HistoryConfig) {
    let horizon = at.checked_sub(h.retention).unwrap_or(SystemTime::UNIX_EPOCH);
    series.retain(|_, s| {
        while s.points.len() > h.max_points || s.points.front().is_some_and(|(t, _)| *t < horizon) {
            s.points.pop_front();
        }
        !s.points.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + s)
    }

    fn obs(signal: &str, v: f64) -> Observation {
        Observation::new(signal, &[("cluster", "c")], v).unwrap()
    }

    fn sample(o: Vec<Observation>) -> SourceSample {
        SourceSample { observations: o, ..SourceSample::default() }
    }

    #[test]
    fn a_source_goes_missing_fresh_stale_and_fresh_again() {
        let s = Store::default();
        s.register(SourceKind::Kafka, "c", Duration::from_secs(10));
        let q = |now| s.with_entry(SourceKind::Kafka, "c", |e| e.health.quality(now)).unwrap();
        assert_eq!(q(t(0)), Quality::Missing);
        s.record_success(SourceKind::Kafka, "c", t(0), sample(vec![obs("a", 1.0)]));
        assert_eq!(q(t(0)), Quality::Fresh);
        assert_eq!(s.record_failure(SourceKind::Kafka, "c", t(1), "down".into()), 1);
        assert_eq!(q(t(1)), Quality::Stale);
        let kept = s.with_entry(SourceKind::Kafka, "c", |e| e.series.len()).unwrap();
        assert_eq!(kept, 1, "history is kept while stale");
        s.record_success(SourceKind::Kafka, "c", t(2), sample(vec![obs("a", 2.0)]));
        assert_eq!(q(t(2)), Quality::Fresh);
    }

    #[test]
    fn a_series_not_produced_by_the_latest_sample_is_missing_not_fresh() {
        let s = Store::default();
        s.register(SourceKind::Kafka, "c", Duration::from_secs(10));
        s.record_success(SourceKind::Kafka, "c", t(0), sample(vec![obs("a", 1.0), obs("b", 1.0)]));
        s.record_success(SourceKind::Kafka, "c", t(1), sample(vec![obs("a", 2.0)]));
        s.with_entry(SourceKind::Kafka, "c", |e| {
            assert_eq!(e.series_quality(t(1), &SeriesKey::new("a", &[("cluster", "c")])), Quality::Fresh);
            assert_eq!(e.series_quality(t(1), &SeriesKey::new("b", &[("cluster", "c")])), Quality::Missing);
            let fresh: Vec<_> = e.fresh_series(t(1)).map(|(k, v)| (k.signal.clone(), v)).collect();
            assert_eq!(fresh, vec![("a".to_string(), 2.0)]);
        });
    }

    #[test]
    fn history_is_bounded_by_points_and_age() {
        let s = Store::new(HistoryConfig { retention: Duration::from_secs(100), max_points: 5, ..HistoryConfig::default() });
        s.register(SourceKind::Kafka, "c", Duration::from_secs(10));
        for i in 0..20 {
            s.record_success(SourceKind::Kafka, "c", t(i), sample(vec![obs("a", i as f64)]));
        }
        let pts: Vec<f64> = s
            .with_entry(SourceKind::Kafka, "c", |e| e.series[&SeriesKey::new("a", &[("cluster", "c")])].points.iter().map(|p| p.1).collect())
            .unwrap();
        assert_eq!(pts, vec![15.0, 16.0, 17.0, 18.0, 19.0]);
        // A series unseen for longer than retention is dropped.
        s.record_success(SourceKind::Kafka, "c", t(19 + 101), sample(vec![obs("b", 1.0)]));
        let n = s.with_entry(SourceKind::Kafka, "c", |e| e.series.len()).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn nan_is_never_observed() {
        assert!(Observation::new("a", &[], f64::NAN).is_none());
        assert!(Observation::new("a", &[], f64::INFINITY).is_none());
    }
}
