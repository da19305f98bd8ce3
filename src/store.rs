//! The store: per source, the health of its sampling loop, its latest targets, and a
//! bounded history of every series it produced.
//!
//! Samplers write, everything else reads. The lock is a std `RwLock` held only for
//! copies and in-place updates, never across an `.await`.
//!
//! Layout, built for hundreds of thousands of series: each source keeps one column of
//! sample times (every series of a sample shares its time) and its label strings once,
//! reference-counted ([`series`]); a series is a run of string ids in its source's key
//! arena ([`table`]), its latest value,
//! and, only for the signals somebody reads over a window ([`Store::keep_history`]: the
//! rules and the derivations), older points compressed as Prometheus' head chunks do
//! (delta-of-delta positions, XOR-ed float bits: [`chunk`]).
//!
//! # Guarantees
//! - Memory is bounded: a source keeps at most `max_points` sample times and none older
//!   than `retention`, so no series holds more; a series not produced for `retention`
//!   is dropped whole, its strings with it; once readers have declared their windows, a
//!   signal keeps only as much history as its longest window (plus the point before).
//! - Quality is derived, never stored: a series is `fresh` only if its source's latest
//!   attempt succeeded recently **and** that sample produced the series; `stale` if the
//!   source failed or stopped; `missing` if the source is fine but no longer produces it.
//! - Values come back exactly (bit for bit) at exactly the time they were stored.
//! - No NaN or infinity is ever stored (refused at [`crate::signal::Observation::new`] and again here).
//! - History is never reordered: a sample older than its source's latest one adds no
//!   points (before, a series absent from the latest sample could still take one).
//!
//! Over 600 lines because of its tests, which include the property test against the
//! plain deque store this one replaced (the model is kept next to what it checks).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{DlqConfig, HistoryConfig};
pub use crate::signal::SourceKind;
use crate::signal::{quality, Batch, DlqLink, KeyRef, Quality, SeriesKey, SourceSample, TargetInfo};

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

mod chunk;
mod label_sets;
mod series;
mod table;
pub mod turns;
mod view;

pub use chunk::{Chunk, Unordered};
pub use label_sets::Sets as HeldLabelSets;
pub use series::{Packed, Series, SeriesRef, Times};
pub use table::Cursor;
pub use view::{Found, View};
use series::Symbols;

/// One source: health, latest targets and series history.
///
/// Series are kept compactly (see the module header); read them through [`Entry::iter`],
/// [`Entry::get`] and [`SeriesRef`].
#[derive(Debug, Clone)]
pub struct Entry {
    pub health: SourceHealth,
    pub targets: Vec<TargetInfo>,
    /// Dead-letter links the source discovered (Kafka Connect).
    pub dlq_links: Vec<DlqLink>,
    series: table::Table,
    /// The slots of the last raw sample's and the last derivation's series, in order.
    cursors: [table::Cursor; 2],
    symbols: Symbols,
    times: Times,
    /// The history policy generation the series' `keep_secs` follow.
    policy_gen: u64,
    /// The label sets readers hold ([`Entry::with_label_sets`]).
    label_sets: label_sets::LabelSets,
}

/// Which kind of batch a source writes, for its [`table::Cursor`]: a sample's raw
/// series, or what was derived from them.
#[derive(Debug, Clone, Copy)]
enum Lane {
    Raw = 0,
    Derived = 1,
}

/// What the store holds, for the benchmark and the agent's own metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreSize {
    pub series: usize,
    /// Series that keep history (the others keep their latest value only).
    pub series_with_history: usize,
    /// Points held compressed (the latest point of each series is not counted).
    pub history_points: usize,
    /// Heap bytes of the compressed history.
    pub history_bytes: usize,
    pub strings: usize,
    pub string_bytes: usize,
}

impl Entry {
    fn new(health: SourceHealth) -> Self {
        Entry {
            health,
            targets: Vec::new(),
            dlq_links: Vec::new(),
            series: table::Table::default(),
            cursors: Default::default(),
            symbols: Symbols::default(),
            times: Times::default(),
            policy_gen: 0,
            label_sets: label_sets::LabelSets::default(),
        }
    }

    /// Runs `f` with this source's label sets: [`HeldLabelSets::get`] gives a series'
    /// [`SeriesRef::label_set`], shared with every reader that holds the same one (see
    /// `store::label_sets`). Readers of one source take turns here.
    pub fn with_label_sets<T>(&self, f: impl FnOnce(&mut HeldLabelSets) -> T) -> T {
        self.label_sets.with(f)
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// This source's id for the string `s` (a signal name, a label name or value), for
    /// comparing with [`SeriesRef::signal_id`]; `None` when no series of it uses `s`.
    pub fn symbol(&self, s: &str) -> Option<u32> {
        self.symbols.get(s)
    }

    /// An upper bound on the series of the signal whose symbol is `id` (every use of the
    /// string: by its series' keys, and as any label's name or value), to size a copy.
    pub fn signal_bound(&self, id: u32) -> usize {
        self.symbols.uses(id)
    }

    /// Every string this source's series use (signal names, label names and values),
    /// with its id, and one more than the largest id: for readers that copy ids under
    /// the lock and resolve them after (`telemetry::exposition`).
    pub fn symbols(&self) -> (impl Iterator<Item = (u32, &Arc<str>)>, usize) {
        (self.symbols.live(), self.symbols.id_bound())
    }

    /// The source's sample times, copied once to be shared by the [`Packed`] points of
    /// its series (see [`SeriesRef::packed_since`]).
    pub fn time_column(&self) -> Arc<Times> {
        Arc::new(self.times.clone())
    }

    /// Every series, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = SeriesRef<'_>> {
        self.series.iter().map(|(k, s)| self.series_ref(k, s))
    }

    /// One series by its key.
    pub fn get(&self, key: &SeriesKey) -> Option<SeriesRef<'_>> {
        let mut ids = Vec::with_capacity(1 + 2 * key.labels.len());
        if !series::lookup_ids(&self.symbols, key, &mut ids) {
            return None;
        }
        self.series.get(ids.as_slice()).map(|(k, s)| self.series_ref(k, s))
    }

    /// One series by a borrowed key, without allocating.
    pub fn get_ref(&self, key: KeyRef<'_>) -> Option<SeriesRef<'_>> {
        key.with_ids(|s| self.symbols.get(s), |ids| self.series.get(ids).map(|(k, s)| self.series_ref(k, s))).flatten()
    }

    /// [`Entry::get_ref`] trying first the slot `cursor`'s next row found last time;
    /// records the slot found.
    pub(super) fn find_ref(&self, key: KeyRef<'_>, cursor: &mut table::Cursor) -> Option<SeriesRef<'_>> {
        let hint = cursor.next_hint();
        let found = key.with_ids(|s| self.symbols.get(s), |ids| self.series.find(ids, hint)).flatten();
        cursor.record(found.map(|(slot, _, _)| slot));
        found.map(|(_, k, s)| self.series_ref(k, s))
    }

    fn series_ref<'a>(&'a self, key: series::KeyIds<'a>, series: &'a Series) -> SeriesRef<'a> {
        SeriesRef { symbols: &self.symbols, times: &self.times, key, series }
    }

    /// Whether a series was produced by the latest successful sample.
    fn produced_last_time(&self, r: &SeriesRef<'_>) -> bool {
        r.last().is_some_and(|(t, _)| Some(t) == self.health.last_success)
    }

    /// Quality of one series of this source at `now`.
    pub fn series_quality(&self, now: SystemTime, key: &SeriesKey) -> Quality {
        match self.health.quality(now) {
            Quality::Fresh => {
                if self.get(key).is_some_and(|r| self.produced_last_time(&r)) {
                    Quality::Fresh
                } else {
                    Quality::Missing
                }
            }
            q => q,
        }
    }

    /// Quality of a series of this source (as [`Entry::series_quality`], without the
    /// look-up).
    pub fn quality_of(&self, now: SystemTime, r: &SeriesRef<'_>) -> Quality {
        match self.health.quality(now) {
            Quality::Fresh if self.produced_last_time(r) => Quality::Fresh,
            Quality::Fresh => Quality::Missing,
            q => q,
        }
    }

    /// The series this source produced in its latest successful sample, while fresh.
    pub fn fresh_series(&self, now: SystemTime) -> impl Iterator<Item = (SeriesRef<'_>, f64)> {
        let fresh = self.health.quality(now) == Quality::Fresh;
        let at = self.health.last_success;
        self.iter().filter(move |_| fresh).filter_map(move |r| match r.last() {
            Some((t, v)) if Some(t) == at => Some((r, v)),
            _ => None,
        })
    }

    /// What this entry holds.
    pub fn size(&self) -> StoreSize {
        let mut s = StoreSize { series: self.series.len(), ..StoreSize::default() };
        for (_, series) in self.series.iter() {
            let (points, bytes) = series.heap_bytes();
            s.series_with_history += usize::from(series.history.is_some());
            s.history_points += points;
            s.history_bytes += bytes;
        }
        (s.strings, s.string_bytes) = self.symbols.size();
        s
    }

    /// Appends values at `at` and enforces the bounds. A second value for the same
    /// series at the same time replaces the first; values at a time before the source's
    /// latest sample are ignored (history is never reordered); non-finite values are
    /// never stored.
    fn append<'k>(&mut self, at: SystemTime, values: impl Iterator<Item = (&'k SeriesKey, f64)>, h: &HistoryConfig, policy: &Policy) {
        let Some(seq) = self.begin(at, policy) else { return };
        let mut ids = Vec::new();
        for (key, value) in values {
            if !value.is_finite() {
                continue;
            }
            let found = series::lookup_ids(&self.symbols, key, &mut ids);
            match found.then(|| self.series.get_mut(ids.as_slice(), None)).flatten() {
                Some((_, s)) => {
                    let keep = s.keep_secs > 0;
                    s.push(seq, value, keep);
                }
                None => {
                    series::intern_key(&mut self.symbols, key, &mut ids);
                    self.insert_series(&ids, seq, value, policy);
                }
            }
        }
        self.trim(at, h);
    }

    /// [`Entry::append`] for a compact batch: each distinct string of the batch is
    /// looked up once, not once per series, and each series first at the slot the same
    /// row of the previous batch of this `lane` used (see [`table`]).
    fn append_batch(&mut self, at: SystemTime, batch: &Batch, h: &HistoryConfig, policy: &Policy, lane: Lane) {
        let Some(seq) = self.begin(at, policy) else { return };
        let mut cursor = std::mem::take(&mut self.cursors[lane as usize]);
        // Batch id -> store id, where the store has the string.
        let mut to_store: Vec<Option<u32>> = (0..batch.strings()).map(|i| self.symbols.get(batch.string(i as u32))).collect();
        let mut ids = Vec::new();
        for (row_no, row) in batch.iter().enumerate() {
            let value = row.value();
            if !value.is_finite() {
                cursor.record(None);
                continue;
            }
            ids.clear();
            let found = row.ids().iter().all(|i| match to_store.get(*i as usize).copied().flatten() {
                Some(id) => {
                    ids.push(id);
                    true
                }
                None => false,
            });
            match found.then(|| self.series.get_mut(ids.as_slice(), cursor.hint(row_no))).flatten() {
                Some((slot, s)) => {
                    let keep = s.keep_secs > 0;
                    s.push(seq, value, keep);
                    cursor.record(Some(slot));
                }
                None => {
                    ids.clear();
                    for i in row.ids() {
                        let id = self.symbols.intern(batch.string(*i));
                        if let Some(slot) = to_store.get_mut(*i as usize) {
                            *slot = Some(id);
                        }
                        ids.push(id);
                    }
                    cursor.record(self.insert_series(&ids, seq, value, policy));
                }
            }
        }
        cursor.finish();
        self.cursors[lane as usize] = cursor;
        self.trim(at, h);
    }

    /// The sequence number of a sample at `at` (a new one, or the latest when `at` is
    /// its time), `None` when `at` is before the latest; re-judges which series keep
    /// history when the readers changed.
    fn begin(&mut self, at: SystemTime, policy: &Policy) -> Option<u64> {
        let seq = match self.times.times.back() {
            Some(last) if *last == at => self.times.last_seq().unwrap_or(self.times.base),
            Some(last) if *last > at => return None,
            _ => {
                self.times.times.push_back(at);
                self.times.base + self.times.times.len() as u64 - 1
            }
        };
        if self.policy_gen != policy.generation {
            // Readers changed (a rule reload): every series is judged again.
            let (symbols, times) = (&self.symbols, &self.times);
            for (k, s) in self.series.iter_mut() {
                s.keep_secs = policy.keep_secs(&SeriesRef { symbols, times, key: k, series: s });
            }
            self.policy_gen = policy.generation;
        }
        Some(seq)
    }

    /// Adds the series of `ids` (interned by the caller); its slot (`None`: the table
    /// is full, and the references are given back).
    fn insert_series(&mut self, ids: &[u32], seq: u64, value: f64, policy: &Policy) -> Option<u32> {
        let mut s = Series::new(seq, value);
        let Some(key) = series::KeyIds::full(ids) else {
            // Not a signal and label pairs (no caller builds one): its references go back.
            ids.iter().for_each(|id| self.symbols.release(*id));
            return None;
        };
        s.keep_secs = policy.keep_secs(&SeriesRef { symbols: &self.symbols, times: &self.times, key, series: &s });
        let slot = self.series.insert(ids, s);
        if slot.is_none() {
            series::release_key(&mut self.symbols, key);
        }
        slot
    }

    /// Enforces the bounds: sample times past retention or beyond `max_points`, series
    /// whose latest point went with them, history no reader needs.
    fn trim(&mut self, at: SystemTime, h: &HistoryConfig) {
        let horizon = at.checked_sub(h.retention).unwrap_or(SystemTime::UNIX_EPOCH);
        let times = &mut self.times;
        while times.times.len() > h.max_points.max(1) || times.times.front().is_some_and(|t| *t < horizon) {
            times.times.pop_front();
            times.base += 1;
        }
        let base = times.base;
        let (symbols, times) = (&mut self.symbols, &self.times);
        let keep = |s: &mut Series| {
            if s.head_seq < base {
                return false;
            }
            if s.history.is_some() {
                if s.keep_secs == 0 {
                    s.history = None;
                } else {
                    let window = Duration::from_secs(u64::from(s.keep_secs)).min(h.retention);
                    let from = at.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
                    s.compact(base, times.seq_since(from));
                }
            }
            true
        };
        self.series.retain(keep, |k| series::release_key(symbols, k));
    }
}

/// Picks the series a reader reads (a rule's selector).
pub type SeriesFilter = Arc<dyn Fn(&SeriesRef<'_>) -> bool + Send + Sync>;

/// How far back one reader reads one signal: over every series, or over those a
/// filter picks.
#[derive(Clone)]
pub struct HistoryNeed {
    pub window: Duration,
    pub only: Option<SeriesFilter>,
}

impl HistoryNeed {
    pub fn all(window: Duration) -> Self {
        HistoryNeed { window, only: None }
    }

    pub fn only(window: Duration, filter: impl Fn(&SeriesRef<'_>) -> bool + Send + Sync + 'static) -> Self {
        HistoryNeed { window, only: Some(Arc::new(filter)) }
    }
}

impl std::fmt::Debug for HistoryNeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryNeed").field("window", &self.window).field("filtered", &self.only.is_some()).finish()
    }
}

/// Which series keep history and how far back, by reader (`rules`, `derive`); no
/// readers until one says: until then every series keeps the whole retention.
#[derive(Debug, Default)]
struct Policy {
    generation: u64,
    readers: Option<BTreeMap<&'static str, BTreeMap<String, Vec<HistoryNeed>>>>,
}

impl Policy {
    /// The longest window any reader reads `series` over, in seconds (0: none).
    fn keep_secs(&self, series: &SeriesRef<'_>) -> u32 {
        let Some(readers) = &self.readers else { return u32::MAX };
        let signal = series.signal();
        let longest = readers
            .values()
            .filter_map(|m| m.get(signal))
            .flatten()
            .filter(|n| n.only.as_ref().is_none_or(|f| f(series)))
            .map(|n| n.window)
            .max()
            .unwrap_or_default();
        if longest.is_zero() {
            0
        } else {
            // A sub-second window still needs the point before it.
            u32::try_from(longest.as_secs().max(1)).unwrap_or(u32::MAX)
        }
    }
}

/// Shared between samplers and readers.
#[derive(Debug)]
pub struct Store {
    inner: RwLock<BTreeMap<(SourceKind, String), Entry>>,
    history: HistoryConfig,
    dlq: RwLock<DlqConfig>,
    /// Which series keep history (see [`Store::keep_history`]).
    policy: RwLock<Arc<Policy>>,
    /// Where every stored observation is also recorded (`[record]`), if anywhere.
    recorder: std::sync::OnceLock<crate::record::Recorder>,
    /// Kafka cycles and rule evaluations take turns ([`turns`]).
    turns: turns::Turns,
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
            policy: RwLock::default(),
            recorder: std::sync::OnceLock::new(),
            turns: turns::Turns::default(),
        }
    }

    /// Forgets the label sets no reader holds any more (see [`Entry::with_label_sets`]):
    /// a reader calls it when it lets go of what it read, so a cycle does not carry the
    /// last evaluation's sets until the next one.
    pub fn release_label_sets(&self) {
        for e in self.read().values() {
            e.label_sets.with(|_| ());
        }
    }

    /// Tests: the label sets the sources keep for their readers.
    #[cfg(test)]
    pub fn held_label_sets(&self) -> usize {
        self.read().values().map(|e| e.label_sets.held()).sum()
    }

    /// Where Kafka cycles and rule evaluations take turns (see [`turns`]).
    pub fn turns(&self) -> &turns::Turns {
        &self.turns
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

    /// Says which series `reader` (`rules`, `derive`) reads over a window, and how long,
    /// per signal. From the first call on, a series keeps history only as far back as
    /// the longest window any reader reads it over (plus the point before, where a
    /// window starts), capped by the retention; every other series keeps its latest
    /// value only. Until then every series keeps the whole retention. Replaces what
    /// `reader` said before; series are judged again at their source's next sample.
    pub fn keep_history(&self, reader: &'static str, needs: BTreeMap<String, Vec<HistoryNeed>>) {
        let mut p = self.policy.write().unwrap_or_else(|p| p.into_inner());
        let mut readers = p.readers.clone().unwrap_or_default();
        readers.insert(reader, needs);
        *p = Arc::new(Policy { generation: p.generation + 1, readers: Some(readers) });
    }

    /// What every source holds, summed.
    pub fn size(&self) -> StoreSize {
        self.read().values().map(Entry::size).fold(StoreSize::default(), |a, b| StoreSize {
            series: a.series + b.series,
            series_with_history: a.series_with_history + b.series_with_history,
            history_points: a.history_points + b.history_points,
            history_bytes: a.history_bytes + b.history_bytes,
            strings: a.strings + b.strings,
            string_bytes: a.string_bytes + b.string_bytes,
        })
    }

    fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
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
        self.write().insert((kind, name.to_string()), Entry::new(health));
    }

    /// Records a successful sample: appends every observation to its series' history,
    /// replaces the targets, trims history to the configured bounds.
    pub fn record_success(&self, kind: SourceKind, name: &str, at: SystemTime, sample: SourceSample) {
        let (history, policy) = (self.history, self.policy());
        let mut map = self.write();
        let Some(e) = map.get_mut(&(kind, name.to_string())) else { return };
        e.health.succeeded(at);
        e.targets = sample.targets;
        e.dlq_links = sample.dlq_links;
        e.append(at, sample.observations.iter().map(|o| (&o.key, o.value)), &history, &policy);
        if !sample.batch.is_empty() {
            e.append_batch(at, &sample.batch, &history, &policy, Lane::Raw);
        }
        if let Some(r) = self.recorder.get() {
            let mut all = sample.observations;
            all.extend(sample.batch.to_observations());
            r.sample(at, kind, name, e.health.stale_after, all);
        }
    }

    /// Records a successful sample given as values of known series (replay): a series
    /// key is cloned only the first time it is seen. No targets.
    pub fn record_values<'k>(&self, kind: SourceKind, name: &str, at: SystemTime, values: impl Iterator<Item = (&'k SeriesKey, f64)>) {
        let (history, policy) = (self.history, self.policy());
        let mut map = self.write();
        let Some(e) = map.get_mut(&(kind, name.to_string())) else { return };
        e.health.succeeded(at);
        e.append(at, values, &history, &policy);
    }

    /// Records a successful sample and the series derived from it (time lag, rates,
    /// status) as one snapshot. `derive` runs under the read lock (scrapes and the API
    /// are answered meanwhile) over a [`View`]: the entry as it will be with the sample
    /// appended (`reads`: the signals whose pending values the view looks up in the
    /// sample; [`View::find`] takes them from the caller). Then the raw and derived series are appended
    /// under one short write lock, so no reader ever sees the raw series of a sample
    /// without its derived ones (which would read as `missing`, reset pending alerts and
    /// make a scrape withdraw them). Returns the number of series recorded.
    ///
    /// Assumes one writer per source (its sampling loop), as the agent runs it: nothing
    /// else appends to the entry between the derivation and the write.
    pub fn record_success_with(
        &self,
        kind: SourceKind,
        name: &str,
        at: SystemTime,
        sample: SourceSample,
        reads: &[&str],
        derive: impl FnOnce(&View<'_>) -> Batch,
    ) -> usize {
        let (history, policy) = (self.history, self.policy());
        let key = (kind, name.to_string());
        // Owned observations (small sources) first, as `record_success` stores them.
        let pending = if sample.observations.is_empty() {
            sample.batch
        } else {
            let mut b = Batch::from(sample.observations);
            b.append(&sample.batch);
            b
        };
        let derived = {
            let map = self.read();
            let Some(e) = map.get(&key) else { return 0 };
            derive(&View::new(e, &pending, reads, at, &history))
        };
        let n = pending.len() + derived.len();
        let mut map = self.write();
        let Some(e) = map.get_mut(&key) else { return 0 };
        e.health.succeeded(at);
        e.targets = sample.targets;
        e.dlq_links = sample.dlq_links;
        e.append_batch(at, &pending, &history, &policy, Lane::Raw);
        e.append_batch(at, &derived, &history, &policy, Lane::Derived);
        if let Some(r) = self.recorder.get() {
            let mut all = pending.to_observations();
            all.extend(derived.to_observations());
            r.sample(at, kind, name, e.health.stale_after, all);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Observation;
    use std::collections::VecDeque;

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
        let kept = s.with_entry(SourceKind::Kafka, "c", |e| e.len()).unwrap();
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
            let fresh: Vec<_> = e.fresh_series(t(1)).map(|(k, v)| (k.signal().to_string(), v)).collect();
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
            .with_entry(SourceKind::Kafka, "c", |e| e.get(&SeriesKey::new("a", &[("cluster", "c")])).unwrap().points().map(|p| p.1).collect())
            .unwrap();
        assert_eq!(pts, vec![15.0, 16.0, 17.0, 18.0, 19.0]);
        // A series unseen for longer than retention is dropped.
        s.record_success(SourceKind::Kafka, "c", t(19 + 101), sample(vec![obs("b", 1.0)]));
        let n = s.with_entry(SourceKind::Kafka, "c", |e| e.len()).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn only_signals_somebody_reads_keep_history_and_only_as_far_back_as_read() {
        let s = Store::new(HistoryConfig { retention: Duration::from_secs(1000), max_points: 1000, ..HistoryConfig::default() });
        let need = |secs| vec![HistoryNeed::all(Duration::from_secs(secs))];
        s.keep_history("rules", BTreeMap::from([("a".to_string(), need(100))]));
        s.keep_history("derive", BTreeMap::from([("a".to_string(), need(50)), ("b".to_string(), need(300))]));
        s.register(SourceKind::Kafka, "c", Duration::from_secs(10));
        for i in 0..200 {
            s.record_success(SourceKind::Kafka, "c", t(i * 10), sample(vec![obs("a", i as f64), obs("b", i as f64), obs("z", i as f64)]));
        }
        let now = t(1990);
        s.with_entry(SourceKind::Kafka, "c", |e| {
            let get = |sig: &str| e.get(&SeriesKey::new(sig, &[("cluster", "c")])).unwrap();
            // The longest window of any reader (100 s), from the point before it on.
            let a: Vec<f64> = get("a").since(now - Duration::from_secs(100)).map(|p| p.1).collect();
            assert_eq!(a, (189..200).map(f64::from).collect::<Vec<_>>());
            assert_eq!(get("a").last_before(now - Duration::from_secs(100)).map(|p| p.1), Some(188.0), "the anchor");
            assert_eq!(get("b").since(now - Duration::from_secs(300)).count(), 31);
            let z: Vec<_> = get("z").points().collect();
            assert_eq!(z, vec![(now, 199.0)], "nobody reads z: its latest value only");
            assert!(get("a").points().count() < 11 + 1 + 30, "history beyond the window is dropped");
        });
        // A reader that changes its mind: a later reload stops reading b.
        s.keep_history("derive", BTreeMap::new());
        s.record_success(SourceKind::Kafka, "c", t(2000), sample(vec![obs("a", 1.0), obs("b", 1.0)]));
        let b = s.with_entry(SourceKind::Kafka, "c", |e| e.get(&SeriesKey::new("b", &[("cluster", "c")])).unwrap().points().count()).unwrap();
        assert_eq!(b, 1);
    }

    #[test]
    fn a_filtered_reader_keeps_history_only_for_the_series_it_selects() {
        let s = Store::default();
        let payments = HistoryNeed::only(Duration::from_secs(60), |r| r.label("group") == Some("payments"));
        s.keep_history("rules", BTreeMap::from([("lag".to_string(), vec![payments])]));
        s.register(SourceKind::Kafka, "c", Duration::from_secs(10));
        let lag = |g: &str, v| Observation::new("lag", &[("cluster", "c"), ("group", g)], v).unwrap();
        for i in 0..20 {
            s.record_success(SourceKind::Kafka, "c", t(i * 10), sample(vec![lag("payments", i as f64), lag("billing", i as f64)]));
        }
        let count = |g: &str| s.with_entry(SourceKind::Kafka, "c", |e| e.get(&SeriesKey::new("lag", &[("cluster", "c"), ("group", g)])).unwrap().points().count()).unwrap();
        assert!((7..=8 + 16).contains(&count("payments")), "{}", count("payments"));
        assert_eq!(count("billing"), 1);
        // A reload that reads billing too: it keeps history from its latest point on.
        s.keep_history("rules", BTreeMap::from([("lag".to_string(), vec![HistoryNeed::all(Duration::from_secs(60))])]));
        for i in 20..23 {
            s.record_success(SourceKind::Kafka, "c", t(i * 10), sample(vec![lag("payments", i as f64), lag("billing", i as f64)]));
        }
        assert_eq!(count("billing"), 4);
    }

    #[test]
    fn quality_survives_history_compression() {
        let s = Store::default();
        s.register(SourceKind::Kafka, "c", Duration::from_secs(15));
        for i in 0..100 {
            let mut o = vec![obs("a", i as f64 * 0.1)];
            if i < 50 {
                o.push(obs("b", 1.0));
            }
            s.record_success(SourceKind::Kafka, "c", t(i * 10), sample(o));
        }
        let (a, b) = (SeriesKey::new("a", &[("cluster", "c")]), SeriesKey::new("b", &[("cluster", "c")]));
        s.with_entry(SourceKind::Kafka, "c", |e| {
            assert_eq!(e.series_quality(t(990), &a), Quality::Fresh);
            assert_eq!(e.series_quality(t(990), &b), Quality::Missing, "not produced by the latest sample");
            assert_eq!(e.series_quality(t(1100), &a), Quality::Stale, "the source stopped");
            assert_eq!(e.get(&a).unwrap().points().count(), 100);
            assert_eq!(e.get(&a).unwrap().last(), Some((t(990), 99.0 * 0.1)));
        });
        s.record_failure(SourceKind::Kafka, "c", t(1000), "down".into());
        assert_eq!(s.with_entry(SourceKind::Kafka, "c", |e| e.series_quality(t(1000), &a)).unwrap(), Quality::Stale);
    }

    #[test]
    fn strings_go_with_the_last_series_that_used_them() {
        let s = Store::new(HistoryConfig { retention: Duration::from_secs(100), ..HistoryConfig::default() });
        s.register(SourceKind::Kafka, "c", Duration::from_secs(10));
        for i in 0..50u64 {
            let group = format!("ephemeral-{i}");
            let o = Observation::new("lag_offsets", &[("cluster", "c"), ("group", &group)], 1.0).unwrap();
            s.record_success(SourceKind::Kafka, "c", t(i * 10), sample(vec![o, obs("a", 1.0)]));
        }
        let size = s.size();
        // Groups seen within the last 100 s (11 of them), plus the shared strings.
        assert_eq!(size.series, 12);
        assert!(size.strings <= 11 + 6, "{size:?}");
    }

    #[test]
    fn a_value_at_the_same_time_replaces_and_an_older_one_is_ignored() {
        let s = Store::default();
        s.register(SourceKind::Kafka, "c", Duration::from_secs(10));
        s.record_success(SourceKind::Kafka, "c", t(10), sample(vec![obs("a", 1.0)]));
        s.record_success(SourceKind::Kafka, "c", t(10), sample(vec![obs("a", 2.0)]));
        s.record_success(SourceKind::Kafka, "c", t(5), sample(vec![obs("a", 3.0)]));
        s.record_success(SourceKind::Kafka, "c", t(20), sample(vec![obs("a", 4.0)]));
        let pts: Vec<_> = s.with_entry(SourceKind::Kafka, "c", |e| e.get(&SeriesKey::new("a", &[("cluster", "c")])).unwrap().points().collect()).unwrap();
        assert_eq!(pts, vec![(t(10), 2.0), (t(20), 4.0)]);
        let key = SeriesKey::new("a", &[("cluster", "c")]);
        s.record_values(SourceKind::Kafka, "c", t(30), [(&key, f64::NAN), (&key, f64::INFINITY)].into_iter());
        let last = s.with_entry(SourceKind::Kafka, "c", |e| e.get(&key).unwrap().last()).unwrap();
        assert_eq!(last, Some((t(20), 4.0)), "non-finite values are never stored");
    }

    /// The store as it was (a deque of points per series), for the property test.
    #[derive(Default)]
    struct Naive(BTreeMap<SeriesKey, VecDeque<(SystemTime, f64)>>);

    impl Naive {
        fn record(&mut self, at: SystemTime, obs: &[Observation], retention: Duration) {
            for o in obs {
                let s = self.0.entry(o.key.clone()).or_default();
                match s.back_mut() {
                    Some((t, v)) if *t == at => *v = o.value,
                    Some((t, _)) if *t > at => {}
                    _ => s.push_back((at, o.value)),
                }
            }
            let horizon = at - retention;
            self.0.retain(|_, s| {
                while s.front().is_some_and(|(t, _)| *t < horizon) {
                    s.pop_front();
                }
                !s.is_empty()
            });
        }
    }

    proptest::proptest! {
        #[test]
        fn the_compressed_store_holds_what_the_plain_one_did(
            steps in proptest::collection::vec((0u64..3, proptest::collection::vec((0usize..6, -1e6f64..1e6), 0..8)), 1..120),
            sinces in proptest::collection::vec(0u64..900_000, 1..6),
        ) {
            let retention = Duration::from_secs(200);
            let s = Store::new(HistoryConfig { retention, max_points: 10_000, ..HistoryConfig::default() });
            s.register(SourceKind::Kafka, "c", Duration::from_secs(10));
            let mut naive = Naive::default();
            let mut at = t(0);
            for (advance, values) in steps {
                at += Duration::from_millis(advance * 7_001);
                let obs: Vec<Observation> = values.iter().map(|(i, v)| Observation::new("x", &[("cluster", "c"), ("n", &i.to_string())], *v).unwrap()).collect();
                naive.record(at, &obs, retention);
                s.record_success(SourceKind::Kafka, "c", at, sample(obs));
            }
            let ours: BTreeMap<SeriesKey, Vec<(SystemTime, u64)>> = s
                .with_entry(SourceKind::Kafka, "c", |e| e.iter().map(|r| (r.key(), r.points().map(|(t, v)| (t, v.to_bits())).collect())).collect())
                .unwrap();
            let theirs: BTreeMap<SeriesKey, Vec<(SystemTime, u64)>> =
                naive.0.into_iter().map(|(k, v)| (k, v.into_iter().map(|(t, v)| (t, v.to_bits())).collect())).collect();
            proptest::prop_assert_eq!(ours, theirs);
            // Packed (a rule file's dataset) holds the same points as a list read since
            // any time, bit for bit.
            s.with_entry(SourceKind::Kafka, "c", |e| {
                let column = e.time_column();
                for r in e.iter() {
                    for since in &sinces {
                        let since = t(0) + Duration::from_millis(*since);
                        let listed: Vec<(SystemTime, u64)> = r.since_vec(since).into_iter().map(|(t, v)| (t, v.to_bits())).collect();
                        if let Some(packed) = r.packed_since(since, &column) {
                            let unpacked: Vec<(SystemTime, u64)> = packed.unpack().into_iter().map(|(t, v)| (t, v.to_bits())).collect();
                            assert_eq!(unpacked, listed, "{r:?} since {since:?}");
                            assert_eq!(packed.last().map(|(t, v)| (t, v.to_bits())), listed.last().copied());
                        } else {
                            assert!(listed.len() <= 1, "no history: at most the latest point");
                        }
                    }
                }
            });
        }
    }

    #[test]
    fn nan_is_never_observed() {
        assert!(Observation::new("a", &[], f64::NAN).is_none());
        assert!(Observation::new("a", &[], f64::INFINITY).is_none());
    }
}
