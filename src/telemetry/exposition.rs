//! The store's signal families as exposition text, rendered in pieces so `/metrics`
//! streams hundreds of thousands of series without building them as one string.
//!
//! The bytes are those the registry's encoder writes for the same rows (families in
//! catalog order, rows sorted by their labels in catalog order): every batch of rows is
//! encoded by `prometheus_client` itself, and the family header it repeats for a
//! continuation batch is cut off. A test compares the result with the single-string
//! collector this replaced.
//!
//! The store's read lock is held only to copy what is exposed: each fresh series' value
//! and its label values as ranks in one sorted table of the sources' strings (the
//! strings themselves are shared, not copied). Sorting, encoding and handing pieces to
//! a client that may read slowly happen after the lock is released, so a scrape never
//! holds up the samplers' writes (nor, behind a waiting writer, other readers).
//!
//! Not here: HTTP (`serve::metrics`), the agent's own instruments (`metrics`).

use std::cmp::Ordering;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::metrics::Format;
use crate::catalog;
use crate::signal::{MetricKind, SignalDef};
use crate::store::{Entry, Store};

/// Rows encoded at a time.
const BATCH: usize = 512;
/// Pieces handed out are about this large.
pub const PIECE_BYTES: usize = 64 * 1024;
/// A label the series does not have, in place of its rank.
const ABSENT: u32 = u32::MAX;

/// One family's fresh series: per row, the rank of each catalog label's value in
/// [`Snapshot::strings`] ([`ABSENT`] when the series lacks the label), and its value.
#[derive(Debug)]
struct Family {
    def: &'static SignalDef,
    /// Row-major, `def.labels.len()` ranks per row.
    ranks: Vec<u32>,
    values: Vec<f64>,
    /// Row numbers in exposition order (filled by [`Family::sort`]).
    order: Vec<u32>,
}

impl Family {
    fn width(&self) -> usize {
        self.def.labels.len()
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    fn row(&self, i: u32) -> &[u32] {
        let w = self.width();
        let at = i as usize * w;
        self.ranks.get(at..at + w).unwrap_or(&[])
    }

    /// Orders rows as the registry rows were sorted: their (name, value) pairs in
    /// catalog order, compared as strings (ranks order as their strings do); equal
    /// rows keep the store's order.
    fn sort(&mut self) {
        let rows = u32::try_from(self.len()).unwrap_or(u32::MAX);
        let mut order: Vec<u32> = (0..rows).collect();
        let names = self.def.labels;
        order.sort_by(|&a, &b| compare(names, self.row(a), self.row(b)));
        self.order = order;
    }
}

/// Two rows' label pairs, in catalog order, absent labels skipped.
fn compare(names: &[&str], a: &[u32], b: &[u32]) -> Ordering {
    if !a.contains(&ABSENT) && !b.contains(&ABSENT) {
        // Same names at every position: the values decide.
        return a.cmp(b);
    }
    present(names, a).cmp(present(names, b))
}

/// A row's (name, rank) pairs for the labels it has.
fn present<'a>(names: &'a [&'a str], row: &'a [u32]) -> impl Iterator<Item = (&'a str, u32)> + 'a {
    names.iter().zip(row.iter().copied()).filter(|(_, r)| *r != ABSENT).map(|(n, r)| (*n, r))
}

/// What a scrape exposes from the store, copied under its lock.
#[derive(Debug)]
struct Snapshot {
    /// Every string of every source, sorted and without repeats.
    strings: Arc<[Arc<str>]>,
    /// In catalog order.
    families: Vec<Family>,
}

/// Ranks the strings of `entries` together: for each entry, its ids' ranks (indexed
/// by id; [`ABSENT`] for a freed id), and the sorted strings.
fn rank_strings(entries: &[&Entry]) -> (Vec<Vec<u32>>, Vec<Arc<str>>) {
    let mut all: Vec<(&Arc<str>, usize, u32)> = Vec::new();
    let mut ranks: Vec<Vec<u32>> = Vec::with_capacity(entries.len());
    for (source, entry) in entries.iter().enumerate() {
        let (live, bound) = entry.symbols();
        all.extend(live.map(|(id, text)| (text, source, id)));
        ranks.push(vec![ABSENT; bound]);
    }
    all.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut strings: Vec<Arc<str>> = Vec::new();
    for (text, source, id) in all {
        if strings.last().is_none_or(|last| last != text) {
            strings.push(text.clone());
        }
        let rank = u32::try_from(strings.len() - 1).unwrap_or(ABSENT);
        if let Some(slot) = ranks.get_mut(source).and_then(|r| r.get_mut(id as usize)) {
            *slot = rank;
        }
    }
    (ranks, strings)
}

/// Copies every fresh series of every built-in signal (under the store's read lock).
fn snapshot(store: &Store, defs: &[&'static SignalDef], now: SystemTime) -> Snapshot {
    let mut families: Vec<Family> = defs.iter().map(|def| Family { def, ranks: Vec::new(), values: Vec::new(), order: Vec::new() }).collect();
    let strings = store.with_entries(|entries| {
        let entries: Vec<&Entry> = entries.collect();
        let (ranks, strings) = rank_strings(&entries);
        for (entry, ranks) in entries.iter().zip(&ranks) {
            // This source's ids of each family's signal and catalog label names.
            let signals: Vec<Option<u32>> = defs.iter().map(|d| entry.symbol(d.name)).collect();
            if signals.iter().all(Option::is_none) {
                continue;
            }
            let names: Vec<Vec<Option<u32>>> = defs.iter().map(|d| d.labels.iter().map(|n| entry.symbol(n)).collect()).collect();
            for (series, value) in entry.fresh_series(now) {
                let signal = Some(series.signal_id());
                let Some(f) = signals.iter().position(|s| *s == signal) else { continue };
                let (family, names) = (&mut families[f], &names[f]);
                for name in names {
                    let value_id = name.and_then(|n| series.label_value_id(n));
                    family.ranks.push(value_id.and_then(|id| ranks.get(id as usize).copied()).unwrap_or(ABSENT));
                }
                family.values.push(value);
            }
        }
        strings
    });
    Snapshot { strings: strings.into(), families }
}

/// A row's labels for the encoder, resolved from ranks as they are written.
struct RowLabels<'a> {
    names: &'static [&'static str],
    ranks: &'a [u32],
    strings: &'a [Arc<str>],
}

impl EncodeLabelSet for RowLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for (name, rank) in self.names.iter().zip(self.ranks) {
            if let Some(value) = self.strings.get(*rank as usize) {
                (*name, &**value).encode(encoder.encode_label())?;
            }
        }
        Ok(())
    }
}

/// Some rows of one family (in exposition order), as the registry encodes them.
#[derive(Debug)]
struct Batch {
    family: Arc<Family>,
    strings: Arc<[Arc<str>]>,
    rows: Range<usize>,
}

impl Collector for Batch {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let def = self.family.def;
        let kind = match def.kind {
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Counter => MetricType::Counter,
        };
        let mut family = encoder.encode_descriptor(def.metric, def.help, None, kind)?;
        for &row in self.family.order.get(self.rows.clone()).unwrap_or(&[]) {
            let labels = RowLabels { names: def.labels, ranks: self.family.row(row), strings: &self.strings };
            let v = self.family.values.get(row as usize).copied().unwrap_or(f64::NAN);
            match def.kind {
                MetricKind::Gauge => ConstGauge::new(v).encode(family.encode_family(&labels)?)?,
                MetricKind::Counter => ConstCounter::new(v).encode(family.encode_family(&labels)?)?,
            }
        }
        Ok(())
    }
}

/// Encodes a registry's metrics without an end-of-file marker.
pub fn encode_registry(out: &mut String, registry: &Registry, format: Format) -> Result<(), std::fmt::Error> {
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode_registry(out, registry),
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(out, registry),
    }
}

fn encode_batch(batch: Batch, format: Format) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("streamguard");
    registry.register_collector(Box::new(batch));
    let mut out = String::new();
    encode_registry(&mut out, &registry, format)?;
    Ok(out)
}

/// Renders every fresh series of every built-in signal, family by family, handing
/// pieces of about [`PIECE_BYTES`] to `emit`. Stops (returning `Ok(false)`) as soon as
/// `emit` says so (the client went away). Holds the store's read lock only while it
/// copies the rows (see the module header), never while it sorts, encodes or emits.
pub fn store_families(store: &Store, format: Format, now: SystemTime, emit: &mut dyn FnMut(String) -> bool) -> Result<bool, std::fmt::Error> {
    let defs: Vec<&'static SignalDef> = catalog::all().collect();
    let Snapshot { strings, families } = snapshot(store, &defs, now);
    let mut out = String::with_capacity(PIECE_BYTES + 16 * 1024);
    for mut family in families {
        if family.len() == 0 {
            continue;
        }
        family.sort();
        let family = Arc::new(family);
        let header = encode_batch(Batch { family: family.clone(), strings: strings.clone(), rows: 0..0 }, format)?;
        for (i, start) in (0..family.len()).step_by(BATCH).enumerate() {
            let rows = start..(start + BATCH).min(family.len());
            let text = encode_batch(Batch { family: family.clone(), strings: strings.clone(), rows }, format)?;
            let body = if i == 0 { Some(text.as_str()) } else { text.strip_prefix(header.as_str()) };
            // The encoder writes the same header for the same family every time.
            out.push_str(body.ok_or(std::fmt::Error)?);
            if out.len() >= PIECE_BYTES && !emit(std::mem::replace(&mut out, String::with_capacity(PIECE_BYTES + 16 * 1024))) {
                return Ok(false);
            }
        }
    }
    Ok(out.is_empty() || emit(out))
}
