//! The cost of SLO state persistence (src/state.rs): the journal line appended and
//! fdatasync'd after every group evaluation, and the snapshot that replaces the file
//! every 30 s, for 28-day SLOs (40,320 one-minute buckets each). Prints a table of
//! min / median / max over several runs; run with `cargo bench --bench state`. Writes
//! into a temporary directory (on the same file system as $TMPDIR).

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use streamguard::rules::slo::Events;
use streamguard::state::{write_durably, JournalEntry, StateFile};

const RUNS: usize = 15;

fn stats(mut times: Vec<Duration>) -> (f64, f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(times[0]), ms(times[times.len() / 2]), ms(times[times.len() - 1]))
}

fn row(what: String, bytes: usize, times: Vec<Duration>) {
    let (min, median, max) = stats(times);
    println!("{what:<44} {bytes:>12} {min:>10.2} {median:>10.2} {max:>10.2}");
}

fn month(slos: usize) -> StateFile {
    let now = 1_800_000_000u64 / 60 * 60;
    let mut map = HashMap::new();
    for s in 0..slos {
        let mut e = Events::with_width(Duration::from_secs(60));
        e.buckets = (0..40_320u64).map(|i| (now - i * 60, (59.0 + (i % 2) as f64, 60.0))).collect();
        map.insert(format!("slo-{s}"), e);
    }
    StateFile { version: 1, slos: map }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    println!("{:<44} {:>12} {:>10} {:>10} {:>10}", "operation", "bytes", "min ms", "median ms", "max ms");
    for slos in [1usize, 10, 100] {
        let mut text = Vec::new();
        for s in 0..slos {
            let e = JournalEntry { slo: format!("slo-{s}"), width: 60, bucket: 1_800_000_000, good: 59.0, total: 60.0 };
            serde_json::to_writer(&mut text, &e).expect("json");
            text.push(b'\n');
        }
        let path = dir.path().join(format!("journal-{slos}"));
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("journal");
        let times = (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                f.write_all(&text).expect("write");
                f.sync_data().expect("sync");
                started.elapsed()
            })
            .collect();
        row(format!("journal append + fdatasync, {slos} SLO(s)"), text.len(), times);
    }
    for slos in [1usize, 10] {
        let state = month(slos);
        let path = dir.path().join(format!("state-{slos}.json"));
        let mut bytes = 0;
        let times = (0..RUNS.min(7))
            .map(|_| {
                let started = Instant::now();
                let text = serde_json::to_vec(&state).expect("json");
                bytes = text.len();
                write_durably(&path.with_extension("json.tmp"), &path, &text).expect("write");
                started.elapsed()
            })
            .collect();
        row(format!("snapshot (serialize + fsync + rename), {slos} x 28d"), bytes, times);
    }
}
