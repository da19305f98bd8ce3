//! The store's signal families as exposition text, rendered in pieces so `/metrics`
//! streams hundreds of thousands of series without building them as one string.
//!
//! The bytes are those the registry's encoder writes for the same rows (families in
//! catalog order, rows sorted by their labels in catalog order): every batch of rows is
//! encoded by `prometheus_client` itself, and the family header it repeats for a
//! continuation batch is cut off. A test compares the result with the single-string
//! collector this replaced.
//!
//! Not here: HTTP (`serve::metrics`), the agent's own instruments (`metrics`).

use std::cmp::Ordering;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::metrics::Format;
use crate::catalog;
use crate::signal::{MetricKind, SignalDef};
use crate::store::{SeriesRef, Store};

/// Rows encoded at a time.
const BATCH: usize = 512;
/// Pieces handed out are about this large.
pub const PIECE_BYTES: usize = 64 * 1024;
/// Label values compared without a look-up, for families with at most this many labels.
const FAST_LABELS: usize = 8;

type Rows = Vec<(Vec<(&'static str, String)>, f64)>;

/// One family's rows, as the registry encodes them.
#[derive(Debug)]
struct Batch {
    def: &'static SignalDef,
    rows: Rows,
}

impl Collector for Batch {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kind = match self.def.kind {
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Counter => MetricType::Counter,
        };
        let mut family = encoder.encode_descriptor(self.def.metric, self.def.help, None, kind)?;
        for (labels, v) in &self.rows {
            match self.def.kind {
                MetricKind::Gauge => ConstGauge::new(*v).encode(family.encode_family(labels)?)?,
                MetricKind::Counter => ConstCounter::new(*v).encode(family.encode_family(labels)?)?,
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

fn encode_batch(def: &'static SignalDef, rows: Rows, format: Format) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("streamguard");
    registry.register_collector(Box::new(Batch { def, rows }));
    let mut out = String::new();
    encode_registry(&mut out, &registry, format)?;
    Ok(out)
}

/// A fresh series to expose, with its label values in catalog order.
struct Row<'a> {
    family: usize,
    series: SeriesRef<'a>,
    value: f64,
    /// Label values in catalog order, when every label is present and few enough.
    fast: Option<[&'a str; FAST_LABELS]>,
}

fn ordered<'a>(def: &'static SignalDef, r: &SeriesRef<'a>) -> impl Iterator<Item = (&'static str, &'a str)> + 'a {
    let r = *r;
    def.labels.iter().filter_map(move |name| r.label(name).map(|v| (*name, v)))
}

/// Orders rows as the registry rows were sorted: (name, value) pairs in catalog order.
fn compare(defs: &[&'static SignalDef], a: &Row<'_>, b: &Row<'_>) -> Ordering {
    a.family.cmp(&b.family).then_with(|| match (&a.fast, &b.fast) {
        (Some(x), Some(y)) => x.cmp(y),
        _ => {
            let def = defs[a.family];
            ordered(def, &a.series).cmp(ordered(def, &b.series))
        }
    })
}

fn fast_key<'a>(def: &SignalDef, r: &SeriesRef<'a>) -> Option<[&'a str; FAST_LABELS]> {
    if def.labels.len() > FAST_LABELS {
        return None;
    }
    let mut key = [""; FAST_LABELS];
    for (slot, name) in key.iter_mut().zip(def.labels) {
        *slot = r.label(name)?;
    }
    Some(key)
}

/// Renders every fresh series of every built-in signal, family by family, handing
/// pieces of about [`PIECE_BYTES`] to `emit`. Stops (returning `Ok(false)`) as soon as
/// `emit` says so (the client went away). Holds the store's read lock throughout.
pub fn store_families(store: &Store, format: Format, now: SystemTime, emit: &mut dyn FnMut(String) -> bool) -> Result<bool, std::fmt::Error> {
    let defs: Vec<&'static SignalDef> = catalog::all().collect();
    store.with_entries(|entries| {
        let mut rows: Vec<Row<'_>> = Vec::new();
        for entry in entries {
            for (series, value) in entry.fresh_series(now) {
                let Some(family) = defs.iter().position(|d| d.name == series.signal()) else { continue };
                let fast = fast_key(defs[family], &series);
                rows.push(Row { family, series, value, fast });
            }
        }
        rows.sort_by(|a, b| compare(&defs, a, b));
        let mut out = String::with_capacity(PIECE_BYTES + 16 * 1024);
        for family in rows.chunk_by(|a, b| a.family == b.family) {
            let def = defs[family[0].family];
            let header = encode_batch(def, Vec::new(), format)?;
            for (i, batch) in family.chunks(BATCH).enumerate() {
                let owned: Rows = batch.iter().map(|r| (ordered(def, &r.series).map(|(n, v)| (n, v.to_string())).collect(), r.value)).collect();
                let text = encode_batch(def, owned, format)?;
                let body = if i == 0 { Some(text.as_str()) } else { text.strip_prefix(header.as_str()) };
                // The encoder writes the same header for the same family every time.
                out.push_str(body.ok_or(std::fmt::Error)?);
                if out.len() >= PIECE_BYTES && !emit(std::mem::replace(&mut out, String::with_capacity(PIECE_BYTES + 16 * 1024))) {
                    return Ok(false);
                }
            }
        }
        Ok(out.is_empty() || emit(out))
    })
}
