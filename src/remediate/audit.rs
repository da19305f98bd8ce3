//! The audit log: one JSON object per line for every remediation decision (the trigger
//! and its evidence, each guard's outcome), every step (request, response, duration),
//! every verification and every run's end. Dry-run writes the same records, marked
//! `"executed": false`.
//!
//! # Guarantees
//! - Bounded on disk: when the file would exceed `max_size` it is rotated
//!   (`audit.jsonl` → `audit.jsonl.1` → … → `audit.jsonl.<max_files>`, the oldest
//!   deleted).
//! - Each record is flushed to the OS before [`Audit::write`] returns (it is not the
//!   source of truth for recovery, the journal is, so it is not fsynced per line).
//! - Records carry no secret: URLs are written without their user-info and query.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The audit log file and its rotation.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    max_size: u64,
    max_files: usize,
    file: std::fs::File,
    size: u64,
}

impl Audit {
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> std::io::Result<Audit> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Audit { path: path.to_path_buf(), max_size, max_files: max_files.max(1), file, size })
    }

    /// Appends `record` (with a `time` field added) as one line.
    pub fn write(&mut self, mut record: serde_json::Value) -> std::io::Result<()> {
        if let Some(o) = record.as_object_mut() {
            let now = std::time::SystemTime::now();
            o.insert("time".into(), serde_json::json!(crate::signal::unix_secs(now)));
        }
        let mut line = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.file.flush()?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let name = |i: usize| PathBuf::from(format!("{}.{i}", self.path.display()));
        match std::fs::remove_file(name(self.max_files)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for i in (1..self.max_files).rev() {
            match std::fs::rename(name(i), name(i + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, name(1))?;
        self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// `url` without user-info, query or fragment: safe to log.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let sep = if path.is_empty() { "" } else { "/" };
    if scheme.is_empty() {
        format!("{host}{sep}{path}")
    } else {
        format!("{scheme}://{host}{sep}{path}")
    }
}

/// Every record of the audit files under `path` (oldest rotated file first).
pub fn read_all(path: &Path, max_files: usize) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = (1..=max_files).rev().map(|i| PathBuf::from(format!("{}.{i}", path.display()))).collect();
    files.push(path.to_path_buf());
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect::<Vec<_>>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_at_its_size_and_keeps_at_most_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut a = Audit::open(&path, 200, 2).unwrap();
        for i in 0..20 {
            a.write(serde_json::json!({ "kind": "decision", "n": i })).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        assert!(dir.path().join("audit.jsonl.2").exists());
        assert!(!dir.path().join("audit.jsonl.3").exists());
        let all = read_all(&path, 2);
        assert_eq!(all.last().unwrap()["n"], 19, "newest last");
        assert!(all.len() < 20, "the oldest were dropped");
    }

    #[test]
    fn urls_lose_their_credentials_and_query() {
        assert_eq!(redact_url("http://user:secret@127.0.0.1:8083/connectors?x=token"), "http://127.0.0.1:8083/connectors");
        assert_eq!(redact_url("https://hooks.example/abc#frag"), "https://hooks.example/abc");
    }
}
