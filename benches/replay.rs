//! Replay throughput: 24 h of recorded signals for 1,000 series at a 10 s interval
//! through the example rules in `rules/` (goal: under 10 s on one core). Prints a table;
//! run with `cargo bench --bench replay`.
//!
//! The recording is synthetic but shaped like a real one: 1,000 `lag_seconds` probe
//! series of the `payments` group (which the example SLO and trend alert read), one
//! sample of all of them every 10 s, with a slow wave so alerts change state.

use std::time::{Duration, Instant, SystemTime};

use streamguard::record::{RecordedEvent, RecordedSource, Recording};
use streamguard::replay::{replay, ReplayOptions};
use streamguard::signal::Observation;
use streamguard::store::SourceKind;

fn recording(series: usize, hours: u64, every: Duration) -> Recording {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let n = hours * 3600 / every.as_secs();
    let keys: Vec<_> = (0..series)
        .map(|p| {
            let p = p.to_string();
            let l = [("cluster", "prod"), ("group", "payments"), ("topic", "payments"), ("partition", p.as_str()), ("method", "probe")];
            Observation::new("lag_seconds", &l, 0.0).map(|o| o.key).expect("finite")
        })
        .collect();
    let events = (0..n)
        .map(|i| {
            let wave = ((i as f64) / 360.0).sin() * 40.0 + 20.0;
            let values = (0..series).map(|p| (p as u32, (wave + (p % 7) as f64).max(0.0))).collect();
            RecordedEvent { at: start + every * i as u32, source: 0, values: Some(values) }
        })
        .collect();
    Recording {
        sources: vec![RecordedSource { kind: SourceKind::Kafka, name: "prod".into(), stale_after: every * 3 }],
        series: keys,
        events,
    }
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let known = streamguard::rules::file::SignalNames::builtin();
    let (set, _) = streamguard::rules::file::load(&[root], &known);
    let set = set.expect("the example rules load");
    let every = Duration::from_secs(10);
    let rec = recording(1_000, 24, every);
    let opts = ReplayOptions { evaluation_interval: every, confidence: 0.95, unknown_after: Duration::from_secs(600) };
    let mut runs = Vec::new();
    let mut entries = 0;
    for _ in 0..3 {
        let rec = rec.clone();
        let started = Instant::now();
        let tl = replay(rec, &set, &opts).expect("a day fits");
        runs.push(started.elapsed());
        entries = tl.entries.len();
    }
    runs.sort();
    println!("| series | hours | samples | evaluations | timeline entries | min | median | max |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| 1,000 | 24 | {} | {} | {entries} | {:.2} s | {:.2} s | {:.2} s |",
        rec.events.len(),
        rec.events.len() + 1,
        runs[0].as_secs_f64(),
        runs[1].as_secs_f64(),
        runs[2].as_secs_f64()
    );
}
