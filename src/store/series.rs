//! The store's compact series: interned label strings, a key of string ids per series, the
//! latest value in the clear and older points in a compressed [`Chunk`].
//!
//! A source's series repeat the same few strings (its cluster, each group and topic
//! name, partition numbers): each is kept once per source with a reference count and
//! freed with its last series, so churning groups do not accumulate strings.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use super::chunk::Chunk;
use crate::signal::{Labels, SeriesKey, SharedLabels};

/// Reference-counted strings of one source, numbered.
#[derive(Debug, Clone, Default)]
pub(super) struct Symbols {
    ids: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    /// (string, references); a freed slot is `None` and listed in `free`.
    strings: Vec<(Option<Arc<str>>, u32)>,
    free: Vec<u32>,
}

impl Symbols {
    pub(super) fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    /// The id of `s`, with one more reference.
    pub(super) fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            if let Some(slot) = self.strings.get_mut(id as usize) {
                slot.1 = slot.1.saturating_add(1);
            }
            return id;
        }
        let text: Arc<str> = Arc::from(s);
        let id = match self.free.pop() {
            Some(id) => {
                self.strings[id as usize] = (Some(text.clone()), 1);
                id
            }
            None => {
                // More than 4 billion distinct strings cannot be held in memory anyway.
                let id = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
                self.strings.push((Some(text.clone()), 1));
                id
            }
        };
        self.ids.insert(text, id);
        id
    }

    /// Drops one reference; the string goes with the last.
    pub(super) fn release(&mut self, id: u32) {
        let Some(slot) = self.strings.get_mut(id as usize) else { return };
        slot.1 = slot.1.saturating_sub(1);
        if slot.1 == 0 {
            if let Some(text) = slot.0.take() {
                self.ids.remove(&text);
                self.free.push(id);
            }
        }
    }

    pub(super) fn resolve(&self, id: u32) -> &str {
        self.strings.get(id as usize).and_then(|s| s.0.as_deref()).unwrap_or("")
    }

    /// [`Symbols::resolve`], shared: the string's own `Arc`, not a copy.
    pub(super) fn resolve_shared(&self, id: u32) -> Arc<str> {
        self.strings.get(id as usize).and_then(|s| s.0.clone()).unwrap_or_else(|| Arc::from(""))
    }

    /// The string `id` as held here (its `Arc`, not a copy).
    pub(super) fn shared_ref(&self, id: u32) -> Option<&Arc<str>> {
        self.strings.get(id as usize).and_then(|s| s.0.as_ref())
    }

    /// Every live string with its id.
    pub(super) fn live(&self) -> impl Iterator<Item = (u32, &Arc<str>)> {
        self.strings.iter().zip(0u32..).filter_map(|(s, id)| s.0.as_ref().map(|text| (id, text)))
    }

    /// The references to string `id`: each series' key holds one per string in it, so
    /// for a signal name, at least its number of series.
    pub(super) fn uses(&self, id: u32) -> usize {
        self.strings.get(id as usize).map_or(0, |s| s.1 as usize)
    }

    /// One more than the largest id ever handed out.
    pub(super) fn id_bound(&self) -> usize {
        self.strings.len()
    }

    /// (live strings, their bytes).
    pub(super) fn size(&self) -> (usize, usize) {
        let live = self.strings.iter().filter_map(|s| s.0.as_ref());
        live.fold((0, 0), |(n, b), s| (n + 1, b + s.len()))
    }
}

// A series' identity (its key) is `[signal, name₀, value₀, name₁, value₁, …]` as symbol
// ids, labels in name order (as [`SeriesKey`]'s map); its table keeps it as
// `[signal, schema, values…]` (see [`KeyIds`]).

/// Writes the ids of `key` into `buf` without interning; `false` when a string is
/// unknown (so no such series exists).
pub(super) fn lookup_ids(symbols: &Symbols, key: &SeriesKey, buf: &mut Vec<u32>) -> bool {
    buf.clear();
    let Some(signal) = symbols.get(&key.signal) else { return false };
    buf.push(signal);
    for (name, value) in &key.labels {
        match (symbols.get(name), symbols.get(value)) {
            (Some(n), Some(v)) => buf.extend([n, v]),
            _ => return false,
        }
    }
    true
}

/// Writes the ids of `key` into `buf`, interning its strings (one more reference each).
pub(super) fn intern_key(symbols: &mut Symbols, key: &SeriesKey, buf: &mut Vec<u32>) {
    buf.clear();
    buf.push(symbols.intern(&key.signal));
    for (name, value) in &key.labels {
        buf.push(symbols.intern(name));
        buf.push(symbols.intern(value));
    }
}

pub(super) fn release_key(symbols: &mut Symbols, key: KeyIds<'_>) {
    symbols.release(key.signal());
    for (n, v) in key.pairs() {
        symbols.release(n);
        symbols.release(v);
    }
}

/// A series' key as symbol ids: its signal, and its labels' names and values in name
/// order. Either as a table stores it (`[schema, values…]`, the names kept once per
/// schema) or a full key (`[signal, n₀, v₀, n₁, v₁, …]`, as looked up).
#[derive(Clone, Copy)]
pub struct KeyIds<'a> {
    signal: u32,
    /// A stored key's names (its schema's); empty for a full key.
    names: &'a [u32],
    /// Stored: `[schema, values…]`; full: `[n₀, v₀, n₁, v₁, …]`.
    labels: &'a [u32],
    full: bool,
}

impl<'a> KeyIds<'a> {
    /// A stored key: `labels` is `[schema, values…]`, one value per name.
    pub(super) fn stored(signal: u32, names: &'a [u32], labels: &'a [u32]) -> Self {
        KeyIds { signal, names, labels, full: false }
    }

    /// A full key `[signal, n₀, v₀, …]`; `None` unless it is a signal and label pairs.
    pub(super) fn full(ids: &'a [u32]) -> Option<Self> {
        let (signal, labels) = ids.split_first()?;
        (labels.len() % 2 == 0).then_some(KeyIds { signal: *signal, names: &[], labels, full: true })
    }

    pub fn signal(&self) -> u32 {
        self.signal
    }

    /// A stored key's schema (`u32::MAX` for a full key).
    pub(super) fn schema(&self) -> u32 {
        if self.full {
            u32::MAX
        } else {
            self.labels.first().copied().unwrap_or(u32::MAX)
        }
    }

    /// Number of labels.
    pub(super) fn len(&self) -> usize {
        if self.full {
            self.labels.len() / 2
        } else {
            self.names.len().min(self.labels.len().saturating_sub(1))
        }
    }

    /// (name, value) ids of each label, in name order.
    pub fn pairs(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        let key = *self;
        (0..key.len()).map(move |i| if key.full { (key.labels[2 * i], key.labels[2 * i + 1]) } else { (key.names[i], key.labels[1 + i]) })
    }

    /// The labels' ids as one slice: within one source, equal slices of keys of the
    /// same form are equal label sets (a stored key's is `[schema, values…]`).
    pub fn label_ids(&self) -> &'a [u32] {
        self.labels
    }

    /// The value id of the label named `name` (an id).
    pub fn value_of(&self, name: u32) -> Option<u32> {
        self.pairs().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Whether this is the key of the full ids `ids`.
    pub(super) fn is(&self, ids: &[u32]) -> bool {
        ids.len() == 1 + 2 * self.len() && ids[0] == self.signal && self.pairs().zip(ids[1..].chunks_exact(2)).all(|((n, v), p)| n == p[0] && v == p[1])
    }

    /// As a full key `[signal, n₀, v₀, …]`.
    #[cfg(test)]
    pub(super) fn to_full(self) -> Vec<u32> {
        std::iter::once(self.signal).chain(self.pairs().flat_map(|(n, v)| [n, v])).collect()
    }
}

/// One series: the latest point in the clear, older ones compressed (only for signals
/// whose history somebody reads).
#[derive(Debug, Clone)]
pub struct Series {
    pub(super) head_seq: u64,
    pub(super) head: f64,
    pub(super) history: Option<Box<Chunk>>,
    /// How far back its readers read, in seconds (0: the latest value only; `u32::MAX`:
    /// the whole retention), as of the entry's policy generation.
    pub(super) keep_secs: u32,
    /// The table's: where the series' key starts in its key arena ([`FREE`]: none, a
    /// free slot). Here rather than beside the series so that a slot is 32 bytes.
    pub(super) key_at: u32,
}

/// A [`Series::key_at`] that points nowhere.
pub(super) const FREE: u32 = u32::MAX;

impl Series {
    pub(super) fn new(seq: u64, value: f64) -> Self {
        Series { head_seq: seq, head: value, history: None, keep_secs: 0, key_at: FREE }
    }

    /// A value at `seq`: replaces the latest at the same sample, is ignored before it
    /// (history is never reordered), otherwise becomes the latest, the previous one
    /// moving into history when `keep` (else history is dropped).
    pub(super) fn push(&mut self, seq: u64, value: f64, keep: bool) {
        if seq == self.head_seq {
            self.head = value;
            return;
        }
        if seq < self.head_seq {
            return;
        }
        if keep {
            match &mut self.history {
                Some(c) => {
                    // Cannot be refused: every point in the chunk came before the head.
                    if c.push(self.head_seq, self.head).is_err() {
                        self.history = Some(Box::new(Chunk::new(self.head_seq, self.head)));
                    }
                }
                None => self.history = Some(Box::new(Chunk::new(self.head_seq, self.head))),
            }
        } else {
            self.history = None;
        }
        self.head_seq = seq;
        self.head = value;
    }

    /// Drops the history points before `base` (gone from the source's time column) and
    /// those before `from` except the last of them (the anchor a window starts from),
    /// when that frees enough to be worth re-encoding.
    pub(super) fn compact(&mut self, base: u64, from: u64) {
        let Some(c) = &self.history else { return };
        let from = from.max(base);
        let dead_span = from.saturating_sub(c.first_seq());
        if c.first_seq() >= base && dead_span < (c.len() as u64 / 4).max(16) {
            return;
        }
        let mut anchor = None;
        let mut kept = Vec::new();
        for (s, v) in c.iter() {
            if s < base {
                continue;
            }
            if s < from {
                anchor = Some((s, v));
            } else {
                kept.push((s, v));
            }
        }
        let mut points = anchor.into_iter().chain(kept);
        self.history = points.next().map(|(s, v)| {
            let mut c = Chunk::new(s, v);
            for (s, v) in points {
                // Increasing: they come from a chunk in order.
                let _refused = c.push(s, v).is_err();
            }
            c.shrink_to_fit();
            Box::new(c)
        });
    }

    pub(super) fn heap_bytes(&self) -> (usize, usize) {
        match &self.history {
            Some(c) => (c.len(), c.heap_bytes() + std::mem::size_of::<Chunk>()),
            None => (0, 0),
        }
    }
}

/// A series' points from some sample on, compressed as the store holds them (see
/// [`SeriesRef::packed_since`]).
#[derive(Debug, Clone)]
pub struct Packed {
    times: Arc<Times>,
    history: Option<Chunk>,
    head: (u64, f64),
    /// The first sample kept.
    from: u64,
}

impl Packed {
    /// The points, oldest first.
    pub fn unpack(&self) -> Vec<(SystemTime, f64)> {
        let history = self.history.iter().flat_map(|c| c.iter());
        let (times, from) = (&self.times, self.from);
        history.chain(std::iter::once(self.head)).filter(|(s, _)| *s >= from).filter_map(|(s, v)| times.at(s).map(|t| (t, v))).collect()
    }

    /// The newest point (the latest value: no history to read).
    pub fn last(&self) -> Option<(SystemTime, f64)> {
        let (seq, v) = self.head;
        (seq >= self.from).then(|| self.times.at(seq).map(|t| (t, v))).flatten()
    }
}

/// The sample times of one source, numbered: every series of a sample shares its time.
#[derive(Debug, Clone, Default)]
pub struct Times {
    pub(super) times: VecDeque<SystemTime>,
    /// Sequence number of `times[0]`.
    pub(super) base: u64,
}

impl Times {
    pub(super) fn at(&self, seq: u64) -> Option<SystemTime> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.times.get(i).copied()
    }

    /// The first sequence number at or after `t` (one past the last when none).
    pub(super) fn seq_since(&self, t: SystemTime) -> u64 {
        self.base + self.times.partition_point(|x| *x < t) as u64
    }

    pub(super) fn last_seq(&self) -> Option<u64> {
        (!self.times.is_empty()).then(|| self.base + self.times.len() as u64 - 1)
    }
}

/// One series of a source, borrowed from the store: its identity and its points.
#[derive(Clone, Copy)]
pub struct SeriesRef<'a> {
    pub(super) symbols: &'a Symbols,
    pub(super) times: &'a Times,
    pub(super) key: KeyIds<'a>,
    pub(super) series: &'a Series,
}

impl std::fmt::Debug for SeriesRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesRef").field("signal", &self.signal()).field("labels", &self.labels().collect::<Vec<_>>()).finish()
    }
}

impl<'a> SeriesRef<'a> {
    pub fn signal(&self) -> &'a str {
        self.symbols.resolve(self.key.signal())
    }

    /// The signal as its source's symbol id (see `Entry::symbol`).
    pub fn signal_id(&self) -> u32 {
        self.key.signal()
    }

    /// Labels in name order.
    pub fn labels(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let symbols = self.symbols;
        self.key.pairs().map(move |(n, v)| (symbols.resolve(n), symbols.resolve(v)))
    }

    /// The labels as the source's symbol ids, one slice: among the series of one
    /// source's table, equal slices are equal label sets (the same partition's series
    /// of different signals share them).
    pub fn label_ids(&self) -> &'a [u32] {
        self.key.label_ids()
    }

    /// The value of the label whose name is the source's symbol `name`, as an id.
    pub fn label_value_id(&self, name: u32) -> Option<u32> {
        self.key.value_of(name)
    }

    pub fn label(&self, name: &str) -> Option<&'a str> {
        self.labels().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The source's own strings of the key's labels, each name then its value, in the
    /// key's order (`None` for an id the source does not hold).
    pub(super) fn key_strings(&self) -> impl Iterator<Item = Option<&'a Arc<str>>> + 'a {
        let symbols = self.symbols;
        self.key.pairs().flat_map(move |(n, v)| [symbols.shared_ref(n), symbols.shared_ref(v)])
    }

    /// Number of labels.
    pub(super) fn label_count(&self) -> usize {
        self.key.len()
    }

    /// The labels as a shared set whose strings are this source's own (reference counts
    /// taken, nothing copied): what the evaluator reads.
    pub fn label_set(&self) -> SharedLabels {
        let pairs: Vec<(Arc<str>, Arc<str>)> = self.key.pairs().map(|(n, v)| (self.symbols.resolve_shared(n), self.symbols.resolve_shared(v))).collect();
        if pairs.windows(2).all(|w| w[0].0 < w[1].0) {
            SharedLabels::from_sorted(pairs)
        } else {
            SharedLabels::from_pairs(pairs)
        }
    }

    pub fn labels_map(&self) -> Labels {
        self.labels().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// The owned key (allocates).
    pub fn key(&self) -> SeriesKey {
        SeriesKey { signal: self.signal().to_string(), labels: self.labels_map() }
    }

    /// The latest point.
    pub fn last(&self) -> Option<(SystemTime, f64)> {
        self.times.at(self.series.head_seq).map(|t| (t, self.series.head))
    }

    /// Every point still held, oldest first.
    pub fn points(&self) -> impl Iterator<Item = (SystemTime, f64)> + 'a {
        self.points_from(self.times.base)
    }

    /// Points at or after `since`, oldest first.
    pub fn since(&self, since: SystemTime) -> impl Iterator<Item = (SystemTime, f64)> + 'a {
        self.points_from(self.times.seq_since(since))
    }

    /// [`Self::since`] collected, allocated once: at most one point per sample time
    /// since `since` (the store's time column bounds it).
    pub fn since_vec(&self, since: SystemTime) -> Vec<(SystemTime, f64)> {
        let from = self.times.seq_since(since);
        let at_most = self.times.last_seq().map_or(0, |last| last.saturating_add(1).saturating_sub(from));
        let mut out = Vec::with_capacity(usize::try_from(at_most).unwrap_or(0).min(self.times.times.len()));
        out.extend(self.points_from(from));
        out
    }

    /// The points at or after `since`, as the store holds them: the series' compressed
    /// history (copied as it is, not decoded) and its latest point, with the source's
    /// time column shared (`column`, from [`crate::store::Entry::time_column`]).
    /// [`Packed::unpack`] gives exactly [`Self::since_vec`]. A rule file's dataset holds
    /// the series it reads over a window this way: a few bytes a point instead of 24.
    /// `None` when the series keeps no history (its latest point is all there is).
    pub fn packed_since(&self, since: SystemTime, column: &Arc<Times>) -> Option<Packed> {
        let history = self.series.history.as_deref()?.clone();
        Some(Packed { times: column.clone(), history: Some(history), head: (self.series.head_seq, self.series.head), from: self.times.seq_since(since) })
    }

    /// The latest point before `before`.
    pub fn last_before(&self, before: SystemTime) -> Option<(SystemTime, f64)> {
        let until = self.times.seq_since(before);
        let (times, series) = (self.times, self.series);
        let history = series.history.iter().flat_map(|c| c.iter());
        history
            .chain(std::iter::once((series.head_seq, series.head)))
            .take_while(|(s, _)| *s < until)
            .filter_map(|(s, v)| times.at(s).map(|t| (t, v)))
            .last()
    }

    fn points_from(&self, from: u64) -> impl Iterator<Item = (SystemTime, f64)> + 'a {
        let (times, series) = (self.times, self.series);
        let history = series.history.iter().flat_map(|c| c.iter());
        history
            .chain(std::iter::once((series.head_seq, series.head)))
            .filter(move |(s, _)| *s >= from)
            .filter_map(move |(s, v)| times.at(s).map(|t| (t, v)))
    }
}
