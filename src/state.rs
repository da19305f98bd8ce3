//! SLO state on disk: what is written, how a restored file is validated, and the health
//! of persistence as the API, `/metrics` and `/readyz` show it.
//!
//! # Layout and guarantees
//! - `state_file` (JSON, [`StateFile`]) is a snapshot of every SLO's event buckets,
//!   replaced atomically and durably (temp file, fsync, rename, fsync of the directory)
//!   every [`SNAPSHOT_INTERVAL`] and at shutdown.
//! - `state_file` + `.journal` is an append-only log: after every evaluation of a rule
//!   group with SLOs, one JSON line per SLO with the *absolute* value of the bucket that
//!   evaluation changed, then `fdatasync`. A kill therefore loses at most the evaluation
//!   in progress (one `evaluation_interval`). Writing a snapshot truncates the journal;
//!   replaying a line twice is harmless (absolute values).
//! - On start the snapshot is read, then the journal replayed (a torn last line from a
//!   kill mid-write is ignored). Everything is validated ([`validate_events`]): a bucket
//!   in the future, a negative, non-finite or implausibly large count, `good > total`, a
//!   bucket not aligned to its width, an invalid width, more buckets than the SLO keeps.
//!   A file that fails is moved aside (`<file>.rejected-<unix time>`) with a clear error,
//!   the agent starts with empty budgets, and says so in `/api/v1/slos` (`state`) and in
//!   `streamguard_state_restore_rejected_total{cause}`. An SLO whose bucket width changed
//!   (its alert windows were edited) starts empty alone, and is listed.
//! - A failed write (read-only directory, disk full) is counted by cause in
//!   `streamguard_state_persist_failures_total{cause}` and fails `/readyz` until a write
//!   succeeds again.
//!
//! Pure parts (validation, journal parsing, causes) take time as an argument.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::rules::slo::{self, Events, Sli, SloSpec};

/// How often a snapshot replaces the file (and empties the journal).
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);
/// A ratio SLO's events per bucket above this are not plausible (1e12 events in one
/// bucket of at most a minute is over 16 billion per second).
pub const MAX_RATIO_EVENTS_PER_BUCKET: f64 = 1e12;
/// A time-slice SLO counts seconds: a bucket holds its width plus at most one capped
/// slice (see `Engine::eval_slos`).
const MAX_SLICE_SECS: u64 = 300;
/// Clock skew tolerated for a bucket "in the future".
const FUTURE_SLACK: Duration = Duration::from_secs(60);

/// The snapshot's content.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    pub slos: HashMap<String, Events>,
}

/// One journal line: the absolute value of one bucket after an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub slo: String,
    pub width: u64,
    pub bucket: u64,
    pub good: f64,
    pub total: f64,
}

/// The journal next to a state file.
pub fn journal_path(state_file: &Path) -> PathBuf {
    let mut s = state_file.as_os_str().to_os_string();
    s.push(".journal");
    PathBuf::from(s)
}

/// Why a restored file was rejected: a bounded cause and the detail for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub cause: &'static str,
    pub message: String,
}

impl Invalid {
    fn new(cause: &'static str, message: String) -> Self {
        Invalid { cause, message }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Largest plausible `total` of one bucket of `spec`. Pure.
pub fn max_total(spec: &SloSpec) -> f64 {
    match spec.sli {
        Sli::TimeSlice { .. } => (spec.bucket().as_secs() + MAX_SLICE_SECS) as f64,
        Sli::Ratio { .. } => MAX_RATIO_EVENTS_PER_BUCKET,
    }
}

/// Checks one bucket. Pure.
pub fn validate_bucket(name: &str, spec: &SloSpec, width: u64, key: u64, (good, total): (f64, f64), now: SystemTime) -> Result<(), Invalid> {
    if width == 0 || key % width != 0 {
        return Err(Invalid::new("unaligned_bucket", format!("slo {name:?}: bucket {key} is not aligned to its width {width}s")));
    }
    let horizon = unix(now) + FUTURE_SLACK.as_secs();
    if key > horizon {
        return Err(Invalid::new("future_bucket", format!("slo {name:?}: bucket at unix time {key} is {}s in the future", key - unix(now))));
    }
    if !good.is_finite() || !total.is_finite() || good < 0.0 || total < 0.0 {
        return Err(Invalid::new("bad_count", format!("slo {name:?}: bucket {key} has counts good={good} total={total}; counts are finite and not negative")));
    }
    if good > total {
        return Err(Invalid::new("bad_count", format!("slo {name:?}: bucket {key} has more good events ({good}) than events ({total})")));
    }
    let max = max_total(spec);
    if total > max {
        return Err(Invalid::new("huge_count", format!("slo {name:?}: bucket {key} has {total} events, more than the {max} one bucket can hold")));
    }
    Ok(())
}

/// Checks one SLO's restored events against its spec at `now`. `Ok(false)`: the width
/// differs from the spec's (the SLO's windows changed): valid, but not usable. Pure.
pub fn validate_events(name: &str, events: &Events, spec: &SloSpec, now: SystemTime) -> Result<bool, Invalid> {
    if events.width == 0 || events.width > slo::BUCKET.as_secs() {
        return Err(Invalid::new("bad_width", format!("slo {name:?}: bucket width {}s is outside 1s..=60s", events.width)));
    }
    let keep = slo::retention(spec).as_secs() / events.width + 2;
    if events.buckets.len() as u64 > keep {
        return Err(Invalid::new("too_many_buckets", format!("slo {name:?}: {} buckets, more than the {keep} its window keeps", events.buckets.len())));
    }
    for (key, v) in &events.buckets {
        validate_bucket(name, spec, events.width, *key, *v, now)?;
    }
    Ok(events.width == spec.bucket().as_secs())
}

/// Parses a journal: its entries, and whether its last line was torn (a kill during a
/// write; ignored). A bad line anywhere else is an error. Pure.
pub fn parse_journal(text: &str) -> Result<(Vec<JournalEntry>, bool), Invalid> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    let mut torn = false;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<JournalEntry>(line) {
            Ok(e) => out.push(e),
            // The last line without its newline: the write was cut short.
            Err(_) if i == lines.len() - 1 => torn = true,
            Err(e) => return Err(Invalid::new("decode", format!("journal line {}: {e}", i + 1))),
        }
    }
    Ok((out, torn))
}

/// The restorable content of a snapshot and its journal.
#[derive(Debug, Default)]
pub struct Decoded {
    pub events: HashMap<String, Events>,
    /// SLOs whose bucket width changed: they start empty.
    pub reset: Vec<String>,
    pub journal_entries: usize,
    pub journal_torn: bool,
}

/// Decodes and validates a snapshot and its journal against the SLOs of the running set
/// (`specs`, by name) at `now`. State of SLOs that no longer exist is ignored. Pure.
pub fn decode(snapshot: Option<&str>, journal: Option<&str>, specs: &HashMap<&str, &SloSpec>, now: SystemTime) -> Result<Decoded, Invalid> {
    let mut out = Decoded::default();
    if let Some(text) = snapshot {
        let file: StateFile = serde_json::from_str(text).map_err(|e| Invalid::new("decode", format!("not a state file: {e}")))?;
        if file.version != 1 {
            return Err(Invalid::new("version", format!("unknown state file version {}", file.version)));
        }
        for (name, events) in file.slos {
            let Some(spec) = specs.get(name.as_str()) else { continue };
            if validate_events(&name, &events, spec, now)? {
                out.events.insert(name, events);
            } else {
                out.reset.push(name);
            }
        }
    }
    if let Some(text) = journal {
        let (entries, torn) = parse_journal(text)?;
        out.journal_torn = torn;
        for e in entries {
            let Some(spec) = specs.get(e.slo.as_str()) else { continue };
            if e.width != spec.bucket().as_secs() {
                if !out.reset.contains(&e.slo) {
                    out.reset.push(e.slo.clone());
                }
                continue;
            }
            validate_bucket(&e.slo, spec, e.width, e.bucket, (e.good, e.total), now)?;
            out.events.entry(e.slo.clone()).or_insert_with(|| Events::with_width(spec.bucket())).buckets.insert(e.bucket, (e.good, e.total));
            out.journal_entries += 1;
        }
        for (name, events) in &out.events {
            if let Some(spec) = specs.get(name.as_str()) {
                validate_events(name, events, spec, now)?;
            }
        }
    }
    out.reset.sort();
    out.reset.dedup();
    Ok(out)
}

/// A bounded cause for a failed write. Pure.
pub fn io_cause(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::PermissionDenied => "permission_denied",
        K::ReadOnlyFilesystem => "read_only",
        K::StorageFull | K::QuotaExceeded => "no_space",
        K::NotFound => "not_found",
        K::NotADirectory => "not_a_directory",
        _ => "io",
    }
}

/// Moves a rejected file aside; returns where it went.
pub fn quarantine(path: &Path, now: SystemTime) -> std::io::Result<PathBuf> {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".rejected-{}", unix(now)));
    let to = PathBuf::from(s);
    std::fs::rename(path, &to)?;
    Ok(to)
}

/// Writes `text` to `tmp`, flushes it to disk, renames it over `path` and flushes the
/// directory, so after a crash `path` holds either the old or the new content, whole.
pub fn write_durably(tmp: &Path, path: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(tmp)?;
    f.write_all(text)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp, path)?;
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What happened to the state at start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreStatus {
    /// `restored`, `empty` (no file), `rejected` (moved aside), `failed` (unreadable).
    pub outcome: &'static str,
    /// SLOs whose budgets were restored.
    pub slos: usize,
    /// Journal entries replayed on top of the snapshot.
    pub journal_entries: usize,
    /// SLOs that start empty because their bucket width changed.
    pub reset: Vec<String>,
    /// For `rejected`/`failed`: why, and where the file went.
    pub cause: Option<&'static str>,
    pub error: Option<String>,
    pub moved_to: Option<PathBuf>,
}

/// Persistence health, as shown in the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StateStatus {
    pub state_file: PathBuf,
    pub restore: RestoreStatus,
    /// Whether the last write (journal or snapshot) succeeded.
    pub persist_ok: bool,
    pub last_persist_error: Option<String>,
    #[serde(skip)]
    pub last_persist_cause: Option<&'static str>,
    /// Unix time of the last successful write.
    pub last_persist_time: Option<f64>,
    #[serde(skip)]
    pub failures: BTreeMap<&'static str, u64>,
    #[serde(skip)]
    pub restore_rejected: BTreeMap<&'static str, u64>,
}

/// Shared, updated by the writers, read by the API, `/metrics` and `/readyz`.
#[derive(Debug)]
pub struct StateHealth {
    status: Mutex<StateStatus>,
}

impl StateHealth {
    pub fn new(state_file: PathBuf) -> Self {
        StateHealth { status: Mutex::new(StateStatus { state_file, persist_ok: true, ..StateStatus::default() }) }
    }

    pub fn status(&self) -> StateStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn record_restore(&self, r: RestoreStatus) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(cause), "rejected") = (r.cause, r.outcome) {
            *s.restore_rejected.entry(cause).or_default() += 1;
        }
        s.restore = r;
    }

    /// A write succeeded; logs the recovery after failures.
    pub fn record_ok(&self, at: SystemTime) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if !s.persist_ok {
            tracing::info!(path = %s.state_file.display(), "SLO state persisted again");
        }
        s.persist_ok = true;
        s.last_persist_error = None;
        s.last_persist_cause = None;
        s.last_persist_time = Some(crate::signal::unix_secs(at));
    }

    /// A write failed: counted by cause; logged when it starts failing.
    pub fn record_failure(&self, what: &str, e: &std::io::Error) {
        let cause = io_cause(e);
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if s.persist_ok {
            tracing::error!(path = %s.state_file.display(), what, cause, error = %e, "cannot persist SLO state: budgets will be lost on restart");
        }
        s.persist_ok = false;
        s.last_persist_error = Some(format!("{what}: {e}"));
        s.last_persist_cause = Some(cause);
        *s.failures.entry(cause).or_default() += 1;
    }

    /// A `/readyz` reason while writes fail.
    pub fn not_ready(&self) -> Option<String> {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        (!s.persist_ok).then(|| {
            format!(
                "slo state: cannot persist to {} ({}): {}",
                s.state_file.display(),
                s.last_persist_cause.unwrap_or("io"),
                s.last_persist_error.as_deref().unwrap_or("")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SloSpec {
        let text = "apiVersion: streamguard/v1\nkind: SLO\nmetadata:\n  name: fresh\nspec:\n  objective: 99%\n  window: 28d\n  indicator:\n    timeslice:\n      condition: max(lag_seconds) < 30s\n";
        let mut set = crate::rules::file::RuleSet::default();
        let errors = crate::rules::file::parse_file(Path::new("t.yaml"), text, &crate::rules::file::SignalNames::builtin(), &mut set, &mut Vec::new());
        assert!(errors.is_empty(), "{errors:?}");
        set.slos[0].clone()
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn events(buckets: &[(u64, (f64, f64))]) -> Events {
        let s = spec();
        let mut e = Events::with_width(s.bucket());
        e.buckets = buckets.iter().copied().collect();
        e
    }

    #[test]
    fn plausible_events_pass_and_a_changed_width_is_reported_not_rejected() {
        let s = spec();
        let w = s.bucket().as_secs();
        let t = 1_800_000_000 / w * w;
        assert_eq!(validate_events("fresh", &events(&[(t - w, (w as f64, w as f64)), (t, (0.0, 3.0))]), &s, now()), Ok(true));
        let mut other = events(&[]);
        other.width = if w == 60 { 30 } else { 60 };
        assert_eq!(validate_events("fresh", &other, &s, now()), Ok(false));
    }

    #[test]
    fn future_negative_huge_inconsistent_and_unaligned_buckets_are_rejected_with_a_cause() {
        let s = spec();
        let w = s.bucket().as_secs();
        let t = 1_800_000_000 / w * w;
        let cause = |b: &[(u64, (f64, f64))]| validate_events("fresh", &events(b), &s, now()).unwrap_err().cause;
        assert_eq!(cause(&[(t + 3600, (1.0, 1.0))]), "future_bucket");
        assert_eq!(cause(&[(t, (-1.0, 1.0))]), "bad_count");
        assert_eq!(cause(&[(t, (f64::NAN, 1.0))]), "bad_count");
        assert_eq!(cause(&[(t, (5.0, 1.0))]), "bad_count");
        assert_eq!(cause(&[(t, (1e300, 1e300))]), "huge_count");
        assert_eq!(cause(&[(t + 1, (1.0, 1.0))]), "unaligned_bucket");
        let mut e = events(&[]);
        e.width = 0;
        assert_eq!(validate_events("fresh", &e, &s, now()).unwrap_err().cause, "bad_width");
        let many: Vec<(u64, (f64, f64))> = (0..100_000u64).map(|i| (t - i * w, (0.0, 0.0))).collect();
        assert_eq!(cause(&many), "too_many_buckets");
    }

    #[test]
    fn a_torn_last_journal_line_is_ignored_and_a_bad_line_elsewhere_is_an_error() {
        let line = r#"{"slo":"a","width":60,"bucket":60,"good":1.0,"total":2.0}"#;
        let (entries, torn) = parse_journal(&format!("{line}\n{line}\n{{\"slo\":\"a\",\"wid")).unwrap();
        assert_eq!((entries.len(), torn), (2, true));
        assert_eq!(parse_journal(&format!("{line}\nnot json\n{line}\n")).unwrap_err().cause, "decode");
        assert_eq!(parse_journal("").unwrap(), (vec![], false));
    }

    #[test]
    fn write_failures_are_counted_by_cause_and_fail_readiness_until_a_write_succeeds() {
        let h = StateHealth::new(PathBuf::from("/x/state.json"));
        assert!(h.not_ready().is_none());
        h.record_failure("journal", &std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        h.record_failure("journal", &std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        let r = h.not_ready().unwrap();
        assert!(r.contains("/x/state.json") && r.contains("permission_denied"), "{r}");
        assert_eq!(h.status().failures["permission_denied"], 2);
        h.record_ok(SystemTime::now());
        assert!(h.not_ready().is_none());
        assert_eq!(h.status().failures["permission_denied"], 2, "counters never go back");
    }
}
