//! Shared vocabulary of sampled data: the quality of a series and time helpers.
//!
//! A value is only ever used with its quality. `Fresh` data may drive decisions;
//! `Stale` (the source failed or stopped answering) and `Missing` (never sampled) data
//! is shown as such and never stands in for a number: unknown is not zero.

use std::time::{Duration, SystemTime};

use serde::Serialize;

mod batch;
mod labels;
pub use batch::{Batch, BatchIndex, BatchRow};
pub use labels::{Interned, SharedLabels};

/// Which kind of source a loop samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Kafka,
    Connect,
    Flink,
    Prometheus,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Kafka => "kafka",
            SourceKind::Connect => "connect",
            SourceKind::Flink => "flink",
            SourceKind::Prometheus => "prometheus",
        }
    }
}

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

/// An optional moment in 8 bytes (an `Option<SystemTime>` takes 16): nanoseconds since
/// the Unix epoch, so exact from 1677 to 2262 (a time outside is clamped to that range).
/// Serialized as [`opt_unix_seconds`] does: fractional Unix seconds, or null.
///
/// Alert instances hold seven of them; at 200,000 instances in a mass incident, with the
/// list shared by the rule's status while the next evaluation builds its own, the 8 bytes
/// saved per moment come to about 22 MB at the peak (computed, not measured).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(Option<std::num::NonZeroU64>);

impl Moment {
    pub const NONE: Moment = Moment(None);

    /// `t`, clamped to the range above.
    pub fn at(t: SystemTime) -> Moment {
        let nanos = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN + 1, |n| (-n).max(i64::MIN + 1)),
        };
        // Flipping the sign bit maps i64::MIN (excluded above) to 0 and keeps the order.
        Moment(std::num::NonZeroU64::new((nanos as u64) ^ (1 << 63)))
    }

    pub fn get(self) -> Option<SystemTime> {
        let nanos = (self.0?.get() ^ (1 << 63)) as i64;
        let magnitude = std::time::Duration::from_nanos(nanos.unsigned_abs());
        if nanos >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(magnitude)
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(magnitude)
        }
    }

    /// The moment, set to `now` first if there is none.
    pub fn get_or_insert(&mut self, now: SystemTime) -> SystemTime {
        match self.get() {
            Some(t) => t,
            None => {
                *self = Moment::at(now);
                self.get().unwrap_or(now)
            }
        }
    }
}

impl From<Option<SystemTime>> for Moment {
    fn from(t: Option<SystemTime>) -> Self {
        t.map_or(Moment::NONE, Moment::at)
    }
}

impl std::fmt::Debug for Moment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl Serialize for Moment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        opt_unix_seconds::serialize(&self.get(), s)
    }
}

/// Serde helper: an optional `SystemTime` as fractional Unix seconds, or null.
pub mod opt_unix_seconds {
    pub fn serialize<S: serde::Serializer>(t: &Option<std::time::SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_f64(super::unix_secs(*t)),
            None => s.serialize_none(),
        }
    }
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
    fn a_moment_is_8_bytes_keeps_nanoseconds_and_orders_and_serializes_as_the_time() {
        assert_eq!(std::mem::size_of::<Moment>(), 8);
        let epoch = SystemTime::UNIX_EPOCH;
        let times = [
            epoch,
            epoch + Duration::new(1_764_620_000, 123_456_789),
            epoch + Duration::new(1, 1),
            epoch - Duration::new(1, 1),
            epoch - Duration::new(86_400 * 365 * 200, 999_999_999),
            epoch + Duration::new(86_400 * 365 * 290, 7),
        ];
        for t in times {
            assert_eq!(Moment::at(t).get(), Some(t), "{t:?}");
            assert_eq!(Moment::from(Some(t)), Moment::at(t));
            let json = serde_json::to_string(&Moment::at(t)).unwrap();
            let want = serde_json::to_value(unix_secs(t)).unwrap().to_string();
            assert_eq!(json, want);
        }
        for a in times {
            for b in times {
                assert_eq!(Moment::at(a).cmp(&Moment::at(b)), a.cmp(&b), "{a:?} {b:?}");
            }
        }
        assert_eq!(Moment::NONE.get(), None);
        assert_eq!(Moment::from(None), Moment::NONE);
        assert_eq!(serde_json::to_string(&Moment::NONE).unwrap(), "null");
        let mut m = Moment::NONE;
        assert_eq!(m.get_or_insert(times[1]), times[1]);
        assert_eq!(m.get_or_insert(times[2]), times[1], "set once");
        // Beyond 2262 and before 1677: clamped, never a panic.
        let far = epoch + Duration::from_secs(u64::MAX / 4);
        assert!(Moment::at(far).get().is_some_and(|t| t < far));
        let early = epoch - Duration::from_secs(86_400 * 365 * 400);
        assert!(Moment::at(early).get().is_some_and(|t| t > early));
    }

    /// A borrowed key numbers its strings as the owned key's map orders them, for any
    /// label order, repeated names (the last wins) and more labels than fit the stack.
    #[test]
    fn a_key_ref_has_the_ids_of_its_owned_key() {
        let words = ["sig", "a", "b", "c", "d", "e", "f", "g", "h", "i", "1", "2", "3"];
        let id_of = |s: &str| words.iter().position(|w| *w == s).map(|i| i as u32);
        let owned_ids = |k: &SeriesKey| -> Vec<u32> {
            let mut v = vec![id_of(&k.signal).unwrap()];
            k.labels.iter().for_each(|(n, x)| v.extend([id_of(n).unwrap(), id_of(x).unwrap()]));
            v
        };
        let nine: Vec<(&str, &str)> = ["i", "h", "g", "f", "e", "d", "c", "b", "a"].iter().map(|n| (*n, "1")).collect();
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("b", "1"), ("a", "2")],
            vec![("c", "1"), ("a", "2"), ("c", "3")],
            nine.clone(),
            [nine.clone(), vec![("a", "3")]].concat(),
        ];
        for labels in &cases {
            let got = KeyRef::new("sig", labels).with_ids(id_of, |ids| ids.to_vec());
            assert_eq!(got, Some(owned_ids(&SeriesKey::new("sig", labels))), "{labels:?}");
        }
        assert_eq!(KeyRef::new("sig", &[("a", "unknown")]).with_ids(id_of, |_| ()), None);
        assert_eq!(KeyRef::new("unknown", &[]).with_ids(id_of, |_| ()), None);
    }

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

// ---------------------------------------------------------------------------------------
// Generic series: what every source produces, what the store keeps history of, what
// /metrics and /api/v1/signals show.
// ---------------------------------------------------------------------------------------

/// Label set of a series, sorted by name.
pub type Labels = std::collections::BTreeMap<String, String>;

/// Identity of a series: a signal name and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SeriesKey {
    pub signal: String,
    pub labels: Labels,
}

impl SeriesKey {
    pub fn new(signal: &str, labels: &[(&str, &str)]) -> Self {
        SeriesKey {
            signal: signal.to_string(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// Calls `f` with this key borrowed as a [`KeyRef`].
    pub fn with_ref<R>(&self, f: impl FnOnce(KeyRef<'_>) -> R) -> R {
        let labels: Vec<(&str, &str)> = self.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        f(KeyRef { signal: &self.signal, labels: &labels })
    }
}

/// A series key by reference, for look-ups that must not allocate (a derivation makes
/// several per group partition): the signal and its labels in any order. A name given
/// twice keeps its last value, as in [`SeriesKey::new`].
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    pub signal: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
}

impl<'a> KeyRef<'a> {
    pub fn new(signal: &'a str, labels: &'a [(&'a str, &'a str)]) -> Self {
        KeyRef { signal, labels }
    }

    /// Calls `f` with the key as numbers: `[signal, name₀, value₀, name₁, value₁, …]`
    /// with labels in name order, each string numbered by `id_of` (the layout of the
    /// store's and a batch's keys). `None`, without calling `f`, when a string has no
    /// number (so no such series exists). Up to 8 labels are sorted on the stack.
    pub fn with_ids<R>(&self, id_of: impl Fn(&str) -> Option<u32>, f: impl FnOnce(&[u32]) -> R) -> Option<R> {
        const INLINE: usize = 8;
        let n = self.labels.len();
        if n > INLINE {
            let owned = SeriesKey::new(self.signal, self.labels);
            let mut ids = Vec::with_capacity(1 + 2 * owned.labels.len());
            ids.push(id_of(&owned.signal)?);
            for (name, value) in &owned.labels {
                ids.extend([id_of(name)?, id_of(value)?]);
            }
            return Some(f(&ids));
        }
        let mut sorted = [("", ""); INLINE];
        let sorted = &mut sorted[..n];
        sorted.copy_from_slice(self.labels);
        // Stable: of a name given twice, the last stays last.
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut ids = [0u32; 1 + 2 * INLINE];
        ids[0] = id_of(self.signal)?;
        let mut len = 1;
        for (i, (name, value)) in sorted.iter().enumerate() {
            if sorted.get(i + 1).is_some_and(|next| next.0 == *name) {
                continue;
            }
            ids[len] = id_of(name)?;
            ids[len + 1] = id_of(value)?;
            len += 2;
        }
        Some(f(&ids[..len]))
    }
}

/// One value of one series in one sample. Never NaN or infinite: an unknown value is
/// simply not observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    pub key: SeriesKey,
    pub value: f64,
}

impl Observation {
    /// `None` for a non-finite value, so callers can `extend(…flatten())` without ever
    /// storing NaN.
    pub fn new(signal: &str, labels: &[(&str, &str)], value: f64) -> Option<Self> {
        value.is_finite().then(|| Observation { key: SeriesKey::new(signal, labels), value })
    }
}

/// Something watched, as the API lists it: a consumer group, a connector, a Flink job…
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetInfo {
    /// `kafka_cluster`, `kafka_group`, `connect_cluster`, `connector`, `flink_cluster`,
    /// `flink_job`, `prometheus`.
    pub kind: &'static str,
    /// Unique within (source, kind): group id, connector name, Flink job name.
    pub name: String,
    /// `ok`, `warn`, `failed` or `unknown`, in the target's own terms (detail explains).
    pub health: &'static str,
    /// Free-form detail for people: states, failure traces, config-derived facts.
    /// Never exported as metric labels.
    pub detail: Detail,
}

/// A target's detail: a JSON value, or one already written as JSON text.
///
/// A source with many targets writes each one's detail as text: a consumer group's
/// eight fields as a `serde_json` map cost about 1.2 KB of heap (a node, a key string
/// and a value per field), 25 MB at 20,000 groups rebuilt every cycle; as text, about
/// 200 bytes. The API emits both the same way.
#[derive(Debug, Clone)]
pub enum Detail {
    Json(serde_json::Value),
    Text(Box<serde_json::value::RawValue>),
}

impl Detail {
    /// The detail of `value` written as JSON text (`null` if it cannot be written).
    pub fn text(value: &impl Serialize) -> Detail {
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => Detail::Text(raw),
            Err(_) => Detail::Json(serde_json::Value::Null),
        }
    }

    /// As a JSON value (a text detail is parsed: for tests and rare readers).
    pub fn json(&self) -> std::borrow::Cow<'_, serde_json::Value> {
        match self {
            Detail::Json(v) => std::borrow::Cow::Borrowed(v),
            Detail::Text(raw) => std::borrow::Cow::Owned(serde_json::from_str(raw.get()).unwrap_or_default()),
        }
    }

    /// The fields of a JSON object detail, to add to (`None` for any other).
    pub fn as_object_mut(&mut self) -> Option<&mut serde_json::Map<String, serde_json::Value>> {
        match self {
            Detail::Json(v) => v.as_object_mut(),
            Detail::Text(_) => None,
        }
    }
}

impl From<serde_json::Value> for Detail {
    fn from(v: serde_json::Value) -> Self {
        Detail::Json(v)
    }
}

impl PartialEq for Detail {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl PartialEq<serde_json::Value> for Detail {
    fn eq(&self, other: &serde_json::Value) -> bool {
        *self.json() == *other
    }
}

impl Serialize for Detail {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Detail::Json(v) => v.serialize(s),
            Detail::Text(raw) => raw.serialize(s),
        }
    }
}

/// Everything one sample of one source produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceSample {
    pub observations: Vec<Observation>,
    /// More observations, compact (a large source's: see [`Batch`]); stored after
    /// `observations`.
    pub batch: Batch,
    pub targets: Vec<TargetInfo>,
    /// Dead-letter topics discovered from the source's own configuration (Kafka Connect
    /// sink connectors' `errors.deadletterqueue.topic.name`).
    pub dlq_links: Vec<DlqLink>,
}

/// A dead-letter topic and the pipeline it serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DlqLink {
    pub dlq_topic: String,
    /// Topics whose failed records go to the DLQ.
    pub source_topics: Vec<String>,
    /// The consumer group reading the source topics (`connect-<connector>` for sinks).
    pub group: String,
    /// Where the link came from: `config`, `pattern`, `connect:<source>/<connector>`.
    pub origin: String,
}

/// Prometheus metric type of a signal's exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    /// A monotonically increasing count (exposed with the `_total` suffix).
    Counter,
}

/// A signal every rule and dashboard can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalDef {
    /// Name used in rules and the API (`lag_seconds`, `checkpoint_age_seconds`).
    pub name: &'static str,
    /// Metric name after the `streamguard_` prefix (without `_total` for counters).
    pub metric: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    /// Label names every series of the signal carries.
    pub labels: &'static [&'static str],
}
