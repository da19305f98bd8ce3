//! What a derivation reads: one source's entry as it will be once a pending sample is
//! appended, without appending it (so without the store's write lock).
//!
//! [`crate::store::Store::record_success_with`] derives under the read lock, where
//! scrapes and the API read too, then appends the raw and the derived series together
//! under a short write lock. The view answers the point queries a derivation makes
//! exactly as the entry would after the append: the pending value is the newest point
//! (replacing one at the same time), sample times the append would trim (retention,
//! `max_points`) are left out, and a sample older than the entry's latest adds nothing
//! (the store ignores it).
//!
//! It does not answer for series the pending sample would create other than through
//! the pending value itself, and it does not apply the history compaction (which keeps
//! every point a window reads anyway).

use std::time::SystemTime;

use super::{Cursor, Entry};
use crate::config::HistoryConfig;
use crate::signal::{Batch, BatchIndex, KeyRef};
use crate::window::Point;

/// A series as [`View::find`] found it: what the store holds of it, and the pending
/// sample's value.
pub struct Found<'a> {
    series: Option<super::SeriesRef<'a>>,
    pending: Option<f64>,
}

/// An entry plus a pending sample at `at`.
pub struct View<'a> {
    entry: &'a Entry,
    pending: BatchIndex<'a>,
    /// The whole pending sample ([`View::find`] checks what it is given against it).
    sample: &'a Batch,
    at: SystemTime,
    /// The store ignores a sample older than its latest.
    ignored: bool,
    /// The oldest sample time the append keeps.
    oldest: SystemTime,
}

impl<'a> View<'a> {
    /// `signals`: the signals the derivation reads (only those are indexed).
    pub(super) fn new(entry: &'a Entry, pending: &'a Batch, signals: &[&str], at: SystemTime, h: &HistoryConfig) -> Self {
        let times = &entry.times.times;
        let last = times.back().copied();
        let ignored = last.is_some_and(|l| l > at);
        let adds = last.is_none_or(|l| l < at);
        let horizon = at.checked_sub(h.retention).unwrap_or(SystemTime::UNIX_EPOCH);
        // After the append at most max_points times remain, the new one included.
        let keep_old = h.max_points.max(1) - usize::from(adds);
        let by_count = times.len().checked_sub(keep_old).and_then(|i| times.get(i).copied()).unwrap_or(SystemTime::UNIX_EPOCH);
        let oldest = if ignored { SystemTime::UNIX_EPOCH } else { horizon.max(by_count) };
        View { entry, pending: pending.index(signals), sample: pending, at, ignored, oldest }
    }

    /// The time of the pending sample.
    pub fn at(&self) -> SystemTime {
        self.at
    }

    /// Points of `key` at or after `since`, oldest first (`key`'s signal is one the
    /// view indexes, or its pending value is ignored: see [`View::find`]).
    pub fn points(&self, key: KeyRef<'_>, since: SystemTime) -> Vec<Point> {
        self.points_of(&self.found(key), since)
    }

    /// Points of `key` at or after `since`, plus the last one before it (as
    /// [`View::points`]).
    pub fn points_covering(&self, key: KeyRef<'_>, since: SystemTime) -> Vec<Point> {
        self.points_covering_of(&self.found(key), since)
    }

    /// `key` found by a plain look-up, its pending value from the view's index (as
    /// [`View::points`]).
    pub fn found(&self, key: KeyRef<'_>) -> Found<'_> {
        Found { series: self.entry.get_ref(key), pending: self.pending.get(key) }
    }

    /// Finds `key` for [`View::points_of`] and [`View::points_covering_of`], with the
    /// pending sample's value of it given by the caller, who built the sample, instead
    /// of looked up in it, and the store's slot tried first where `cursor`'s next row
    /// found it last time (a derivation makes the same look-ups in the same order every
    /// sample; it calls [`Cursor::finish`] after the last). A hash look-up per series
    /// cost more than the rest of a derivation. Debug builds check `pending`.
    pub fn find(&self, key: KeyRef<'_>, pending: Option<f64>, cursor: &mut Cursor) -> Found<'_> {
        debug_assert_eq!(
            pending.map(f64::to_bits),
            self.sample.get(key).map(f64::to_bits),
            "the pending value given for {key:?} is not the sample's"
        );
        Found { series: self.entry.find_ref(key, cursor), pending }
    }

    /// Points of a found series at or after `since`, oldest first.
    pub fn points_of(&self, found: &Found<'_>, since: SystemTime) -> Vec<Point> {
        let since = since.max(self.oldest);
        let mut v: Vec<Point> = match &found.series {
            Some(s) if self.keeps(s, found.pending) => s.since(since).collect(),
            _ => Vec::new(),
        };
        self.overlay(found.pending, &mut v, since);
        v
    }

    /// Points of a found series at or after `since`, plus the last one before it.
    pub fn points_covering_of(&self, found: &Found<'_>, since: SystemTime) -> Vec<Point> {
        let oldest = self.oldest;
        let mut v: Vec<Point> = match &found.series {
            Some(s) if self.keeps(s, found.pending) => {
                let anchor = s.last_before(since).filter(|p| p.0 >= oldest);
                anchor.into_iter().chain(s.since(since.max(oldest))).collect()
            }
            _ => Vec::new(),
        };
        // The pending point replaces a newer one before `since` as the anchor, too.
        self.overlay(found.pending, &mut v, SystemTime::UNIX_EPOCH);
        if let Some(first_in) = v.iter().position(|p| p.0 >= since) {
            let from = first_in.saturating_sub(1);
            v.drain(..from);
        } else if v.len() > 1 {
            v.drain(..v.len() - 1);
        }
        v
    }

    /// Whether the series' points stay once the pending sample is appended: a series
    /// nobody reads over a window keeps only its latest value, so a pending value newer
    /// than its latest replaces them all.
    fn keeps(&self, s: &super::SeriesRef<'_>, pending: Option<f64>) -> bool {
        s.series.keep_secs > 0 || self.ignored || s.last().is_some_and(|p| p.0 >= self.at) || pending.is_none()
    }

    fn overlay(&self, pending: Option<f64>, v: &mut Vec<Point>, since: SystemTime) {
        if self.ignored || self.at < since {
            return;
        }
        let Some(value) = pending else { return };
        if v.last().is_some_and(|p| p.0 == self.at) {
            v.pop();
        }
        v.push((self.at, value));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::signal::{SeriesKey, SourceSample};
    use crate::store::{HistoryNeed, SourceKind, Store};

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_millis(ms)
    }

    fn key(signal: &str, n: usize) -> SeriesKey {
        SeriesKey::new(signal, &[("cluster", "c"), ("n", &n.to_string())])
    }

    proptest::proptest! {
        /// What a derivation reads through the view is what it would read from the entry
        /// once the sample is appended (the agent did exactly that, under the write lock).
        #[test]
        fn the_view_reads_what_the_entry_holds_after_the_append(
            steps in proptest::collection::vec((0u64..4, proptest::collection::vec((0usize..2, 0usize..4, -1e3f64..1e3), 0..8)), 1..60),
            max_points in 2usize..12,
            windows in proptest::collection::vec(0u64..30_000, 1..4),
        ) {
            let h = HistoryConfig { retention: Duration::from_secs(60), max_points, ..HistoryConfig::default() };
            let store = Store::new(h);
            // `kept` keeps history over 30 s; `latest` keeps its latest value only.
            store.keep_history("derive", BTreeMap::from([("kept".to_string(), vec![HistoryNeed::all(Duration::from_secs(30))])]));
            store.register(SourceKind::Kafka, "c", Duration::from_secs(10));
            let mut at = t(0);
            let cursor = std::cell::RefCell::new(Cursor::default());
            for (advance, values) in steps {
                // 0: a second sample at the same time; otherwise 5–15 s later; a sample
                // older than the latest now and then.
                at = match advance {
                    0 => at,
                    3 => at.checked_sub(Duration::from_millis(2_500)).unwrap_or(at),
                    a => at + Duration::from_millis(a * 5_003),
                };
                let mut batch = Batch::new();
                for (signal, n, v) in &values {
                    let k = key(["kept", "latest"][*signal], *n);
                    batch.push(&k.signal, &[("cluster", "c"), ("n", k.label("n").unwrap_or(""))], *v);
                }
                let keys: Vec<SeriesKey> = (0..4).flat_map(|n| [key("kept", n), key("latest", n)]).collect();
                let sinces: Vec<SystemTime> = windows.iter().map(|w| at.checked_sub(Duration::from_millis(*w)).unwrap_or(t(0))).collect();
                let read = |e: &Entry, view: Option<&View<'_>>| -> Vec<(Vec<Point>, Vec<Point>)> {
                    let mut out = Vec::new();
                    for k in &keys {
                        for since in &sinces {
                            out.push(match view {
                                Some(v) => k.with_ref(|k| {
                                    // Found through a cursor that lives across samples:
                                    // the same points as a plain look-up.
                                    let found = v.find(k, v.pending.get(k), &mut cursor.borrow_mut());
                                    let via_cursor = (v.points_of(&found, *since), v.points_covering_of(&found, *since));
                                    let plain = (v.points(k, *since), v.points_covering(k, *since));
                                    assert_eq!(via_cursor, plain);
                                    plain
                                }),
                                None => match e.get(k) {
                                    Some(s) => (s.since(*since).collect(), s.last_before(*since).into_iter().chain(s.since(*since)).collect()),
                                    None => (Vec::new(), Vec::new()),
                                },
                            });
                        }
                    }
                    out
                };
                let through_view = store.with_entry(SourceKind::Kafka, "c", |e| read(e, Some(&View::new(e, &batch, &["kept", "latest"], at, &h)))).unwrap();
                cursor.borrow_mut().finish();
                store.record_success(SourceKind::Kafka, "c", at, SourceSample { batch, ..SourceSample::default() });
                let after = store.with_entry(SourceKind::Kafka, "c", |e| read(e, None)).unwrap();
                proptest::prop_assert_eq!(through_view, after);
            }
        }
    }
}
