//! Recording: every observation the store keeps, and every failed attempt, appended to
//! rotating files that `streamguard replay` reads back (see [`crate::replay`]).
//!
//! # Format
//! JSON lines, append-only, one segment file at a time in the recording directory
//! (`recording-<first unix ms>.jsonl`). Each segment is self-contained: a source and a
//! series are declared the first time a segment uses them, then samples name them by
//! number, so a sample of 10,000 series costs about 20 bytes per value.
//!
//! ```text
//! {"source":0,"kind":"kafka","name":"local","stale_after":3.0}
//! {"series":0,"signal":"lag_offsets","labels":{"cluster":"local","group":"g",…}}
//! {"t":1796138581.123,"s":0,"ok":[[0,12.0],[1,3.5]]}
//! {"t":1796138582.125,"s":0,"fail":true}
//! ```
//! Error messages are not recorded (they may carry host names or credentials); a failed
//! attempt is enough to replay staleness.
//!
//! # Guarantees
//! - Recording never blocks or fails sampling: records go through a bounded queue to a
//!   writer thread; when the queue is full a record is dropped and counted.
//! - Bounded on disk: a segment is closed at a quarter of `max_size` (or when older than
//!   `max_age / 4`); the oldest segments are deleted while the directory holds more than
//!   `max_size` or a segment ended longer than `max_age` ago.
//! - Write errors are counted and logged once per kind, never fatal.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use crate::config::RecordConfig;
use crate::signal::{unix_secs, Labels, Observation, SeriesKey, SourceKind};

/// Records queued to the writer before one is dropped.
const QUEUE: usize = 1024;

/// One thing to record.
#[derive(Debug)]
enum Msg {
    Sample { at: SystemTime, kind: SourceKind, name: String, stale_after: Duration, observations: Vec<Observation> },
    Failure { at: SystemTime, kind: SourceKind, name: String, stale_after: Duration },
}

/// Counters of the recorder, for `/metrics`.
#[derive(Debug, Default)]
pub struct RecordStats {
    pub records: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
    pub bytes: AtomicU64,
}

/// The handle the store writes through. Cloning shares the writer.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: SyncSender<Msg>,
    pub stats: Arc<RecordStats>,
}

impl Recorder {
    /// Starts the writer thread. It ends when every `Recorder` clone is dropped.
    pub fn start(config: RecordConfig) -> std::io::Result<Recorder> {
        std::fs::create_dir_all(&config.path)?;
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(RecordStats::default());
        let s = stats.clone();
        std::thread::Builder::new().name("streamguard-record".into()).spawn(move || writer(config, rx, &s))?;
        Ok(Recorder { tx, stats })
    }

    pub fn sample(&self, at: SystemTime, kind: SourceKind, name: &str, stale_after: Duration, observations: Vec<Observation>) {
        self.send(Msg::Sample { at, kind, name: name.to_string(), stale_after, observations });
    }

    pub fn failure(&self, at: SystemTime, kind: SourceKind, name: &str, stale_after: Duration) {
        self.send(Msg::Failure { at, kind, name: name.to_string(), stale_after });
    }

    fn send(&self, m: Msg) {
        match self.tx.try_send(m) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The open segment and what it has declared.
struct Segment {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    started: SystemTime,
    size: u64,
    sources: HashMap<(SourceKind, String), usize>,
    series: HashMap<SeriesKey, usize>,
}

fn writer(config: RecordConfig, rx: Receiver<Msg>, stats: &RecordStats) {
    let mut segment: Option<Segment> = None;
    let mut logged_error = false;
    while let Ok(msg) = rx.recv() {
        let at = match &msg {
            Msg::Sample { at, .. } | Msg::Failure { at, .. } => *at,
        };
        let result = (|| -> std::io::Result<()> {
            // Segment age and retention follow the wall clock (file times), not the
            // sample times.
            let wall = SystemTime::now();
            let rotate = segment.as_ref().is_some_and(|s| {
                s.size >= (config.max_size / 4).max(1) || wall.duration_since(s.started).unwrap_or_default() >= config.max_age / 4
            });
            if rotate {
                if let Some(mut s) = segment.take() {
                    s.file.flush()?;
                }
                prune(&config, wall)?;
            }
            if segment.is_none() {
                let millis = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
                let path = config.path.join(format!("recording-{millis}.jsonl"));
                let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
                segment = Some(Segment {
                    file: std::io::BufWriter::new(file),
                    path,
                    started: wall,
                    size: 0,
                    sources: HashMap::new(),
                    series: HashMap::new(),
                });
            }
            let Some(seg) = segment.as_mut() else { return Ok(()) };
            let written = write_msg(seg, &msg)?;
            seg.size += written;
            stats.bytes.fetch_add(written, Ordering::Relaxed);
            seg.file.flush()
        })();
        match result {
            Ok(()) => {
                stats.records.fetch_add(1, Ordering::Relaxed);
                logged_error = false;
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                if !logged_error {
                    tracing::error!(error = %e, path = %config.path.display(), "cannot write the recording");
                    logged_error = true;
                }
                // Start a fresh segment next time: the open one may be broken.
                segment = None;
            }
        }
    }
    if let Some(mut s) = segment {
        if let Err(e) = s.file.flush() {
            tracing::warn!(error = %e, path = %s.path.display(), "cannot flush the recording at exit");
        }
    }
}

fn write_msg(seg: &mut Segment, msg: &Msg) -> std::io::Result<u64> {
    let mut out = String::new();
    let (at, kind, name, stale_after) = match msg {
        Msg::Sample { at, kind, name, stale_after, .. } | Msg::Failure { at, kind, name, stale_after } => (*at, *kind, name, *stale_after),
    };
    let next = seg.sources.len();
    let src = *seg.sources.entry((kind, name.clone())).or_insert_with(|| {
        let line = serde_json::json!({ "source": next, "kind": kind.as_str(), "name": name, "stale_after": stale_after.as_secs_f64() });
        out.push_str(&line.to_string());
        out.push('\n');
        next
    });
    match msg {
        Msg::Failure { .. } => {
            out.push_str(&serde_json::json!({ "t": unix_secs(at), "s": src, "fail": true }).to_string());
            out.push('\n');
        }
        Msg::Sample { observations, .. } => {
            let mut values = Vec::with_capacity(observations.len());
            for o in observations {
                let next = seg.series.len();
                let id = *seg.series.entry(o.key.clone()).or_insert_with(|| {
                    let line = serde_json::json!({ "series": next, "signal": o.key.signal, "labels": o.key.labels });
                    out.push_str(&line.to_string());
                    out.push('\n');
                    next
                });
                values.push(serde_json::json!([id, o.value]));
            }
            out.push_str(&serde_json::json!({ "t": unix_secs(at), "s": src, "ok": values }).to_string());
            out.push('\n');
        }
    }
    seg.file.write_all(out.as_bytes())?;
    Ok(out.len() as u64)
}

/// Deletes the oldest segments while over `max_size` or past `max_age`.
fn prune(config: &RecordConfig, now: SystemTime) -> std::io::Result<()> {
    let mut segs = segments(&config.path)?;
    let mut total: u64 = segs.iter().map(|(_, _, size)| *size).sum();
    segs.sort();
    for (modified, path, size) in segs {
        let old = now.duration_since(modified).unwrap_or_default() > config.max_age;
        if total > config.max_size || old {
            std::fs::remove_file(&path)?;
            total = total.saturating_sub(size);
        }
    }
    Ok(())
}

/// The segment files of a recording directory: (modified, path, size).
fn segments(dir: &Path) -> std::io::Result<Vec<(SystemTime, PathBuf, u64)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("recording-") && name.ends_with(".jsonl") {
            let md = e.metadata()?;
            out.push((md.modified().unwrap_or(SystemTime::UNIX_EPOCH), e.path(), md.len()));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

/// A source as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSource {
    pub kind: SourceKind,
    pub name: String,
    pub stale_after: Duration,
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub at: SystemTime,
    /// Index into [`Recording::sources`].
    pub source: usize,
    /// (index into [`Recording::series`], value); `None`: the attempt failed.
    pub values: Option<Vec<(u32, f64)>>,
}

/// A whole recording, in time order. Series are stored once and named by index, so a
/// day of samples costs 12 bytes per value, not a label set per value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recording {
    pub sources: Vec<RecordedSource>,
    pub series: Vec<SeriesKey>,
    pub events: Vec<RecordedEvent>,
}

impl Recording {
    /// The index of `key`, adding it if new (`index` maps keys to indices).
    pub fn series_index(&mut self, index: &mut HashMap<SeriesKey, u32>, key: &SeriesKey) -> u32 {
        if let Some(i) = index.get(key) {
            return *i;
        }
        let i = u32::try_from(self.series.len()).unwrap_or(u32::MAX);
        self.series.push(key.clone());
        index.insert(key.clone(), i);
        i
    }

    /// The observations of one event (cloning each series key; for tests and tools).
    pub fn observations(&self, e: &RecordedEvent) -> Option<Vec<Observation>> {
        e.values.as_ref().map(|v| {
            v.iter()
                .filter_map(|(i, value)| self.series.get(*i as usize).map(|key| Observation { key: key.clone(), value: *value }))
                .collect()
        })
    }
}

/// Why a recording cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid { path: PathBuf, line: usize, message: String },
    #[error("{path}: no recording segments (recording-*.jsonl)")]
    Empty { path: PathBuf },
}

/// Reads a segment file, or every segment of a recording directory, oldest first.
pub fn read(path: &Path) -> Result<Recording, ReadError> {
    let io = |source| ReadError::Io { path: path.to_path_buf(), source };
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut s = segments(path).map_err(io)?;
        s.sort_by(|a, b| a.1.cmp(&b.1));
        s.into_iter().map(|(_, p, _)| p).collect()
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(ReadError::Empty { path: path.to_path_buf() });
    }
    let mut rec = Recording::default();
    let mut source_index: HashMap<(SourceKind, String), usize> = HashMap::new();
    let mut series_index: HashMap<SeriesKey, u32> = HashMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| ReadError::Io { path: f.clone(), source })?;
        read_segment(&f, &text, &mut rec, &mut source_index, &mut series_index)?;
    }
    rec.events.sort_by_key(|e| e.at);
    Ok(rec)
}

fn read_segment(
    path: &Path,
    text: &str,
    rec: &mut Recording,
    source_index: &mut HashMap<(SourceKind, String), usize>,
    series_index: &mut HashMap<SeriesKey, u32>,
) -> Result<(), ReadError> {
    let mut sources: HashMap<u64, usize> = HashMap::new();
    // Segment-local series number → index in the whole recording.
    let mut series: HashMap<u64, u32> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |message: String| ReadError::Invalid { path: path.to_path_buf(), line: i + 1, message };
        if line.trim().is_empty() {
            continue;
        }
        // A segment cut short by a crash ends in a partial line: stop there.
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            if i + 1 == text.lines().count() {
                break;
            }
            return Err(bad("not a JSON object".into()));
        };
        if let Some(id) = v.get("source").and_then(|x| x.as_u64()) {
            let kind = match v["kind"].as_str() {
                Some("kafka") => SourceKind::Kafka,
                Some("connect") => SourceKind::Connect,
                Some("flink") => SourceKind::Flink,
                Some("prometheus") => SourceKind::Prometheus,
                other => return Err(bad(format!("unknown source kind {other:?}"))),
            };
            let name = v["name"].as_str().ok_or_else(|| bad("source without a name".into()))?.to_string();
            let stale = v["stale_after"].as_f64().filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9).ok_or_else(|| bad("invalid stale_after".into()))?;
            let idx = *source_index.entry((kind, name.clone())).or_insert_with(|| {
                rec.sources.push(RecordedSource { kind, name, stale_after: Duration::from_secs_f64(stale) });
                rec.sources.len() - 1
            });
            sources.insert(id, idx);
        } else if let Some(id) = v.get("series").and_then(|x| x.as_u64()) {
            let signal = v["signal"].as_str().ok_or_else(|| bad("series without a signal".into()))?;
            let labels: Labels = serde_json::from_value(v["labels"].clone()).map_err(|e| bad(format!("labels: {e}")))?;
            let key = SeriesKey { signal: signal.to_string(), labels };
            let global = rec.series_index(series_index, &key);
            series.insert(id, global);
        } else if let Some(t) = v.get("t").and_then(|x| x.as_f64()) {
            if !(t.is_finite() && (0.0..1e11).contains(&t)) {
                return Err(bad("invalid time (expected Unix seconds)".into()));
            }
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t);
            let s = v["s"].as_u64().and_then(|s| sources.get(&s).copied()).ok_or_else(|| bad("sample of an undeclared source".into()))?;
            let values = if v.get("fail").is_some() {
                None
            } else {
                let pairs = v["ok"].as_array().ok_or_else(|| bad("sample without values".into()))?;
                let mut values = Vec::with_capacity(pairs.len());
                for pair in pairs {
                    let id = pair[0].as_u64().ok_or_else(|| bad("value without a series".into()))?;
                    let global = series.get(&id).ok_or_else(|| bad(format!("value of undeclared series {id}")))?;
                    let value = pair[1].as_f64().filter(|x| x.is_finite()).ok_or_else(|| bad("value is not a finite number".into()))?;
                    values.push((*global, value));
                }
                Some(values)
            };
            rec.events.push(RecordedEvent { at, source: s, values });
        } else {
            return Err(bad("neither a source, a series nor a sample".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(signal: &str, group: &str, v: f64) -> Observation {
        Observation::new(signal, &[("cluster", "c"), ("group", group)], v).unwrap()
    }

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn what_is_recorded_reads_back_in_order_with_failures() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecordConfig { path: dir.path().to_path_buf(), max_size: 1 << 20, max_age: Duration::from_secs(3600) };
        let r = Recorder::start(cfg).unwrap();
        r.sample(t(0), SourceKind::Kafka, "c", Duration::from_secs(3), vec![obs("lag_offsets", "a", 1.0), obs("lag_offsets", "b", 2.0)]);
        r.failure(t(1), SourceKind::Kafka, "c", Duration::from_secs(3));
        r.sample(t(2), SourceKind::Kafka, "c", Duration::from_secs(3), vec![obs("lag_offsets", "a", 3.0)]);
        let stats = r.stats.clone();
        drop(r);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while stats.records.load(Ordering::Relaxed) < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let rec = read(dir.path()).unwrap();
        assert_eq!(rec.sources, vec![RecordedSource { kind: SourceKind::Kafka, name: "c".into(), stale_after: Duration::from_secs(3) }]);
        assert_eq!(rec.events.len(), 3);
        assert_eq!(rec.events[0].values.as_ref().map(Vec::len), Some(2));
        assert_eq!(rec.events[1].values, None);
        assert_eq!(rec.observations(&rec.events[2]), Some(vec![obs("lag_offsets", "a", 3.0)]));
        assert_eq!(rec.events[2].at, t(2));
    }

    #[test]
    fn segments_rotate_and_the_oldest_are_deleted_beyond_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecordConfig { path: dir.path().to_path_buf(), max_size: 4000, max_age: Duration::from_secs(3600) };
        let r = Recorder::start(cfg).unwrap();
        for i in 0..200 {
            r.sample(t(i), SourceKind::Kafka, "c", Duration::from_secs(3), vec![obs("lag_offsets", "a", i as f64)]);
            std::thread::sleep(Duration::from_millis(1));
        }
        let stats = r.stats.clone();
        drop(r);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while stats.records.load(Ordering::Relaxed) < 200 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let segs = segments(dir.path()).unwrap();
        assert!(segs.len() > 1, "rotated");
        let total: u64 = segs.iter().map(|s| s.2).sum();
        assert!(total <= 4000 + 1000, "bounded: {total} bytes");
        // Every segment is self-contained: the newest reads on its own.
        let rec = read(dir.path()).unwrap();
        assert!(!rec.events.is_empty());
        assert_eq!(rec.observations(rec.events.last().unwrap()), Some(vec![obs("lag_offsets", "a", 199.0)]));
    }

    #[test]
    fn a_hostile_line_is_a_located_error_and_a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("recording-1.jsonl");
        std::fs::write(&p, "{\"source\":0,\"kind\":\"kafka\",\"name\":\"c\",\"stale_after\":3}\n{\"t\":1e300,\"s\":0,\"ok\":[]}\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.ends_with(":2: invalid time (expected Unix seconds)"), "{e}");
        std::fs::write(&p, "{\"source\":0,\"kind\":\"kafka\",\"name\":\"c\",\"stale_after\":3}\n{\"t\":5,\"s\":0,\"ok\":[]}\n{\"t\":6,\"s").unwrap();
        assert_eq!(read(&p).unwrap().events.len(), 1);
        std::fs::write(&p, "{\"t\":5,\"s\":7,\"ok\":[]}\n{}\n").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains(":1: sample of an undeclared source"));
    }
}
