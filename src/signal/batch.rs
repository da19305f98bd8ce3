//! A compact, columnar batch of observations: what a large source (Kafka: hundreds of
//! thousands of partition series per sample) and its derivations hand to the store.
//!
//! An [`Observation`] owns its signal name and a `BTreeMap` of label strings: about
//! 900 bytes for a partition series, so 220,000 of them cost some 200 MB for one sample.
//! A batch keeps each distinct string once (a group name is shared by all its partitions
//! and signals) and a series as a run of string ids plus its value: about 60 bytes.
//!
//! Semantics are exactly [`Observation::new`]'s: labels in name order, the last of two
//! labels with the same name wins, a non-finite value is not observed. It does not
//! deduplicate series: two pushes of one series are two rows, and the store keeps the
//! later value (as it does for two observations).

use std::collections::HashMap;
use std::sync::Arc;

use super::{KeyRef, Observation, SeriesKey};

/// Observations, columnar: interned strings, key ids, values.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Distinct strings, by id.
    strings: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    /// Every row's key: `[signal, name₀, value₀, name₁, value₁, …]`, labels in name order.
    keys: Vec<u32>,
    rows: Vec<Row>,
    /// Recently interned strings by address: a source pushes the same few strings
    /// (cluster, group, topic, label names) row after row, and a hit costs one short
    /// comparison instead of a hash and a probe. A hit is checked against the string's
    /// content, so a buffer reused for another string only misses.
    recent: [(usize, u32); RECENT],
}

const RECENT: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Row {
    /// Where the row's key starts in `keys`.
    start: u32,
    /// Its length (1 + 2 × labels).
    len: u32,
    value: f64,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    /// A batch with room for `rows` observations whose keys total `words` ids (a
    /// series with n labels is 1 + 2n): a source that knows its size reserves once
    /// instead of growing by doubling, which holds the old and the new buffers at once
    /// (at 20,000 groups, 96 MiB for the key ids' 44 MB).
    pub fn with_capacity(rows: usize, words: usize) -> Self {
        Batch { keys: Vec::with_capacity(words), rows: Vec::with_capacity(rows), ..Batch::default() }
    }

    /// Number of observations.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn intern(&mut self, s: &str) -> u32 {
        let addr = s.as_ptr() as usize;
        let slot = (addr ^ s.len()).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - RECENT.trailing_zeros());
        let slot = slot % RECENT;
        let (cached_addr, cached_id) = self.recent[slot];
        if cached_addr == addr && self.strings.get(cached_id as usize).is_some_and(|t| **t == *s) {
            return cached_id;
        }
        if let Some(&id) = self.ids.get(s) {
            self.recent[slot] = (addr, id);
            return id;
        }
        // More than 4 billion distinct strings in one sample cannot be held anyway.
        let id = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        let text: Arc<str> = Arc::from(s);
        self.strings.push(text.clone());
        self.ids.insert(text, id);
        self.recent[slot] = (addr, id);
        id
    }

    /// Observes `value` of the series (`signal`, `labels`); a non-finite value is not
    /// observed (as [`Observation::new`] returns `None` for it).
    pub fn push(&mut self, signal: &str, labels: &[(&str, &str)], value: f64) {
        if !value.is_finite() {
            return;
        }
        // Name order, the later of equal names first so that dedup keeps it (a map's
        // insert: the last wins). Labels are few: up to 16 are sorted on the stack.
        let mut inline = [0usize; 16];
        let mut spilled = Vec::new();
        let order: &mut [usize] = if labels.len() <= inline.len() {
            &mut inline[..labels.len()]
        } else {
            spilled.resize(labels.len(), 0);
            &mut spilled
        };
        order.iter_mut().enumerate().for_each(|(i, o)| *o = i);
        order.sort_unstable_by(|a, b| labels[*a].0.cmp(labels[*b].0).then(b.cmp(a)));
        let start = self.keys.len();
        let signal = self.intern(signal);
        self.keys.push(signal);
        let mut previous: Option<&str> = None;
        for i in order.iter() {
            let (name, v) = labels[*i];
            if previous == Some(name) {
                continue;
            }
            previous = Some(name);
            let (n, v) = (self.intern(name), self.intern(v));
            self.keys.extend([n, v]);
        }
        let len = self.keys.len() - start;
        self.rows.push(Row { start: u32::try_from(start).unwrap_or(u32::MAX), len: u32::try_from(len).unwrap_or(u32::MAX), value });
    }

    /// Observes an [`Observation`] (its labels are already in name order).
    pub fn push_observation(&mut self, o: &Observation) {
        let labels: Vec<(&str, &str)> = o.key.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.push(&o.key.signal, &labels, o.value);
    }

    /// Every row of `other`, after these.
    pub fn append(&mut self, other: &Batch) {
        for r in other.iter() {
            let start = self.keys.len();
            for id in r.ids() {
                let s = other.string(*id);
                let id = self.intern(s);
                self.keys.push(id);
            }
            let len = self.keys.len() - start;
            self.rows.push(Row { start: u32::try_from(start).unwrap_or(u32::MAX), len: u32::try_from(len).unwrap_or(u32::MAX), value: r.value() });
        }
    }

    /// The string of a batch-local id (empty for an id this batch never gave out).
    pub fn string(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("", |s| s)
    }

    /// Number of distinct strings (ids are `0..strings()`).
    pub fn strings(&self) -> usize {
        self.strings.len()
    }

    /// Every observation, in push order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = BatchRow<'_>> {
        self.rows.iter().map(move |row| BatchRow { batch: self, row: *row })
    }

    /// As owned observations (for tests, the recorder, and callers that need a
    /// [`SeriesKey`]).
    pub fn to_observations(&self) -> Vec<Observation> {
        self.iter().map(|r| r.to_observation()).collect()
    }

    /// (rows, key ids) held: what [`Batch::with_capacity`] takes to hold the same again.
    pub fn size(&self) -> (usize, usize) {
        (self.rows.len(), self.keys.len())
    }

    /// Room for (rows, key ids) without growing (see [`Batch::with_capacity`]).
    pub fn capacity(&self) -> (usize, usize) {
        (self.rows.capacity(), self.keys.capacity())
    }

    /// Heap bytes held (approximate: the tables' capacities and the strings).
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self.strings.iter().map(|s| s.len() + 16).sum();
        strings
            + self.strings.capacity() * std::mem::size_of::<Arc<str>>()
            + self.ids.capacity() * (std::mem::size_of::<Arc<str>>() + 4 + 1)
            + self.keys.capacity() * 4
            + self.rows.capacity() * std::mem::size_of::<Row>()
    }
}

impl Batch {
    /// An index of the rows of `signals` by key (the last row of a series wins, as in
    /// the store), for point look-ups by [`KeyRef`].
    pub fn index(&self, signals: &[&str]) -> BatchIndex<'_> {
        let wanted: Vec<u32> = signals.iter().filter_map(|s| self.ids.get(*s).copied()).collect();
        let mut rows = HashMap::default();
        for r in self.iter() {
            if r.ids().first().is_some_and(|s| wanted.contains(s)) {
                rows.insert(r.ids(), r.value());
            }
        }
        BatchIndex { batch: self, rows }
    }
}

impl Batch {
    /// The value of `key` in this batch (its last row wins, as in the store), by a
    /// scan of every row: for checks and tests, not for hot paths (see [`Batch::index`]).
    pub fn get(&self, key: KeyRef<'_>) -> Option<f64> {
        key.with_ids(|s| self.ids.get(s).copied(), |ids| self.iter().filter(|r| r.ids() == ids).last().map(|r| r.value())).flatten()
    }
}

/// Rows of a [`Batch`] by key (see [`Batch::index`]).
pub struct BatchIndex<'a> {
    batch: &'a Batch,
    rows: HashMap<&'a [u32], f64, foldhash::fast::RandomState>,
}

impl BatchIndex<'_> {
    /// The value of `key`, if the indexed rows have it.
    pub fn get(&self, key: KeyRef<'_>) -> Option<f64> {
        if self.rows.is_empty() {
            return None;
        }
        key.with_ids(|s| self.batch.ids.get(s).copied(), |ids| self.rows.get(ids).copied()).flatten()
    }
}

impl From<Vec<Observation>> for Batch {
    fn from(obs: Vec<Observation>) -> Self {
        let mut b = Batch::new();
        obs.iter().for_each(|o| b.push_observation(o));
        b
    }
}

/// Two batches are equal when they hold the same observations in the same order
/// (whatever ids their strings got).
impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.iter().zip(other.iter()).all(|(a, b)| {
                a.value().to_bits() == b.value().to_bits()
                    && a.ids().len() == b.ids().len()
                    && a.ids().iter().zip(b.ids()).all(|(x, y)| self.string(*x) == other.string(*y))
            })
    }
}

impl serde::Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(|r| r.to_observation()))
    }
}

/// One observation of a [`Batch`].
#[derive(Clone, Copy)]
pub struct BatchRow<'a> {
    batch: &'a Batch,
    row: Row,
}

impl<'a> BatchRow<'a> {
    /// The key as batch-local string ids: signal, then name and value of each label in
    /// name order.
    pub fn ids(&self) -> &'a [u32] {
        let start = self.row.start as usize;
        self.batch.keys.get(start..start + self.row.len as usize).unwrap_or(&[])
    }

    pub fn value(&self) -> f64 {
        self.row.value
    }

    pub fn signal(&self) -> &'a str {
        self.ids().first().map_or("", |id| self.batch.string(*id))
    }

    /// Labels in name order.
    pub fn labels(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let b = self.batch;
        self.ids().get(1..).unwrap_or(&[]).chunks_exact(2).map(move |p| (b.string(p[0]), b.string(p[1])))
    }

    pub fn key(&self) -> SeriesKey {
        SeriesKey { signal: self.signal().to_string(), labels: self.labels().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    pub fn to_observation(&self) -> Observation {
        Observation { key: self.key(), value: self.value() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

    /// The recent-strings cache is keyed by address: a buffer rewritten with another
    /// string of the same length at the same address must not get the old string's id.
    #[test]
    fn a_reused_buffer_is_interned_by_its_content() {
        let mut b = Batch::new();
        let mut expected = Vec::new();
        let mut buf = String::with_capacity(8);
        for i in 0..40 {
            buf.clear();
            buf.push_str(&format!("p{:02}", i % 20));
            let labels = [("partition", buf.as_str()), ("cluster", "c")];
            b.push("lag", &labels, f64::from(i));
            expected.extend(Observation::new("lag", &labels, f64::from(i)));
        }
        let many: Vec<(String, String)> = (0..40).map(|i| (format!("n{i:02}"), format!("v{}", i % 3))).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        b.push("wide", &many, 1.0);
        expected.extend(Observation::new("wide", &many, 1.0));
        assert_eq!(b.to_observations(), expected);
        assert_eq!(b.strings(), 1 + 3 + 20 + 40 + 3 + 1, "lag, partition, cluster and c, 20 partitions, 40 names, 3 values, wide");
    }

    #[test]
    fn a_batch_holds_what_observations_hold() {
        let cases: Vec<Case<'_>> = vec![
            ("lag_seconds", vec![("cluster", "c"), ("group", "g"), ("topic", "t"), ("partition", "0"), ("method", "probe")], 1.5),
            ("a", vec![], 0.0),
            ("dup", vec![("x", "first"), ("a", "1"), ("x", "second")], -2.0),
            ("nan", vec![("a", "b")], f64::NAN),
            ("inf", vec![], f64::INFINITY),
            ("lag_seconds", vec![("cluster", "c"), ("group", "g"), ("topic", "t"), ("partition", "0"), ("method", "probe")], 2.5),
        ];
        let mut b = Batch::new();
        let mut expected = Vec::new();
        for (signal, labels, v) in &cases {
            b.push(signal, labels, *v);
            expected.extend(Observation::new(signal, labels, *v));
        }
        assert_eq!(b.len(), 4, "non-finite values are not observed");
        assert_eq!(b.to_observations(), expected);
        assert_eq!(Batch::from(expected.clone()), b);
        let mut twice = b.clone();
        twice.append(&b);
        assert_eq!(twice.to_observations(), [expected.clone(), expected].concat());
        assert_eq!(b.strings(), 16, "every distinct string once");
        let index = b.index(&["lag_seconds", "dup"]);
        let lag = [("method", "probe"), ("cluster", "c"), ("group", "g"), ("topic", "t"), ("partition", "0")];
        assert_eq!(index.get(KeyRef::new("lag_seconds", &lag)), Some(2.5), "the last value of a series wins");
        assert_eq!(index.get(KeyRef::new("dup", &[("a", "1"), ("x", "second")])), Some(-2.0));
        assert_eq!(index.get(KeyRef::new("dup", &[("x", "first"), ("a", "1"), ("x", "second")])), Some(-2.0), "a name given twice keeps its last value");
        assert_eq!(index.get(KeyRef::new("a", &[])), None, "not an indexed signal");
        assert_eq!(index.get(KeyRef::new("lag_seconds", &[("cluster", "c")])), None);
        assert_eq!(b.get(KeyRef::new("lag_seconds", &lag)), Some(2.5), "the scan agrees with the index");
        assert_eq!(b.get(KeyRef::new("a", &[])), Some(0.0), "the scan reads every signal");
        assert_eq!(b.get(KeyRef::new("nan", &[("a", "b")])), None, "a non-finite value is not observed");
        let nine: Vec<(&str, &str)> = ["a", "b", "c", "d", "e", "f", "g", "h", "i"].iter().map(|n| (*n, "1")).collect();
        assert_eq!(index.get(KeyRef::new("lag_seconds", &nine)), None, "more labels than sorted on the stack");
    }
}
