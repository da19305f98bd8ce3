//! Store memory and `/metrics` cost at scale: fills the store with the series of a large
//! Kafka cluster for one hour at a 10 s interval (synthetic, in-process, no broker) and
//! prints a table. Run with `cargo bench --bench store` (goal: RSS ≤ 150 MB, `/metrics`
//! rendered in ≤ 1 s).
//!
//! The data: `GROUPS` groups × 10 partitions, each group reading one of `GROUPS / 5`
//! topics of 10 partitions. Per group partition the series the Kafka source and its
//! derivations produce with the labels cluster, group, topic, partition:
//! `committed_offset`, `lag_offsets`, `lag_seconds{method=probe}` and
//! `lag_seconds{method=interpolation}` (4 × 50,000 = 200,000 partition series at the
//! default size), plus `log_end_offset` per topic partition and `group_lag_seconds` per
//! group and method. Offsets grow by a varying amount every cycle and time lags carry
//! millisecond fractions, as real ones do (the compressor's unfavourable case).
//!
//! Environment: `BENCH_GROUPS` (default 5000), `BENCH_CYCLES` (default 360 = 1 h at
//! 10 s), `BENCH_RUNS` (default 5, for the render and evaluation timings),
//! `BENCH_OBSERVATIONS=1` (hand the store owned `Observation`s, one label map each, as
//! every source did before the compact [`Batch`]: shows what that costs),
//! `BENCH_INCIDENT=1` (a mass incident: every group's committed offsets stand still while
//! lag stays, so `consumer-stuck-on-a-record` is active on every partition, as when a
//! whole cluster's consumers stop; the evaluation rows then show what 50,000 active
//! instances cost at 5,000 groups).
//!
//! Where the memory goes: a counting global allocator gives the heap in use (live) and
//! its peak within each cycle, next to the process' VmRSS / VmHWM, so the table shows
//! what one sample costs while it is built and stored and what the store keeps.
//! While it renders `/metrics`, a second thread writes to the store every millisecond;
//! its longest wait is how long a render holds the store's lock at a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use streamguard::config::{HistoryConfig, RulesConfig};
use streamguard::evaluate::Rules;
use streamguard::rules::file::SignalNames;
use streamguard::signal::{Batch, Observation, SourceSample};
use streamguard::store::{SourceKind, Store};
use streamguard::telemetry::metrics::{Format, Metrics};

/// Heap bytes in use, and the most in use since the last [`reset_peak`].
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

#[global_allocator]
static ALLOC: Counting = Counting;

const PARTITIONS: usize = 10;
const INTERVAL: Duration = Duration::from_secs(10);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// (VmRSS, VmHWM) in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time of the calling thread (user + system), from /proc (10 ms resolution): on a
/// machine shared with other work, wall time overstates what an operation costs.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The names of one group partition, built once (the sampler gets them from the broker).
struct Names {
    groups: Vec<String>,
    topics: Vec<String>,
    partitions: Vec<String>,
}

/// One cycle's observations: compact (as the Kafka source gives them) or owned
/// (`owned`: one `Observation` and label map each, as before).
fn sample(n: &Names, cycle: u64, rng: &mut Rng, owned: bool, incident: bool) -> SourceSample {
    let c = "prod-eu-west-1";
    let mut batch = Batch::new();
    let mut o: Vec<Observation> = Vec::new();
    let mut push = |signal: &str, labels: &[(&str, &str)], v: f64| {
        if owned {
            o.extend(Observation::new(signal, labels, v));
        } else {
            batch.push(signal, labels, v);
        }
    };
    for (ti, topic) in n.topics.iter().enumerate() {
        for (p, part) in n.partitions.iter().enumerate() {
            let end = (cycle * (150 + (ti * 7 + p * 13) as u64 % 400)) as f64;
            push("log_end_offset", &[("cluster", c), ("topic", topic), ("partition", part)], end);
        }
    }
    for (gi, group) in n.groups.iter().enumerate() {
        let topic = &n.topics[gi % n.topics.len()];
        let mut max_lag = 0.0f64;
        for part in &n.partitions {
            let l = [("cluster", c), ("group", group.as_str()), ("topic", topic.as_str()), ("partition", part.as_str())];
            let lag = (rng.next() % 500 + u64::from(incident)) as f64;
            // Stuck: the same committed offset every cycle.
            let committed = if incident { 1000.0 } else { (cycle * 200) as f64 + (rng.next() % 50) as f64 };
            let probe = (rng.next() % 60_000) as f64 / 1000.0;
            let interp = (rng.next() % 90_000) as f64 / 1000.0;
            max_lag = max_lag.max(probe);
            push("committed_offset", &l, committed);
            push("lag_offsets", &l, lag);
            push("lag_seconds", &[l[0], l[1], l[2], l[3], ("method", "probe")], probe);
            push("lag_seconds", &[l[0], l[1], l[2], l[3], ("method", "interpolation")], interp);
        }
        push("group_lag_seconds", &[("cluster", c), ("group", group), ("method", "probe")], max_lag);
        push("group_lag_seconds", &[("cluster", c), ("group", group), ("method", "interpolation")], max_lag * 1.5);
    }
    SourceSample { observations: o, batch, ..SourceSample::default() }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn min_median(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    (ms(v[0]), ms(v[v.len() / 2]))
}

fn main() {
    let groups = env("BENCH_GROUPS", 5000);
    let cycles = env("BENCH_CYCLES", 360) as u64;
    let runs = env("BENCH_RUNS", 5).max(1);
    let owned = std::env::var_os("BENCH_OBSERVATIONS").is_some();
    let incident = std::env::var_os("BENCH_INCIDENT").is_some();
    let names = Names {
        groups: (0..groups).map(|g| format!("payments-settlement-consumer-{g:05}")).collect(),
        topics: (0..groups.div_ceil(5)).map(|t| format!("payments.settlement.events.v2.{t:04}")).collect(),
        partitions: (0..PARTITIONS).map(|p| p.to_string()).collect(),
    };
    let history = HistoryConfig { retention: Duration::from_secs(3600), ..HistoryConfig::default() };
    let store = Arc::new(Store::new(history));
    let rules_config = RulesConfig { paths: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")], ..RulesConfig::for_tests() };
    let rules = Arc::new(Rules::load(rules_config, SignalNames::builtin()).expect("the example rules load"));
    prepare(&store, &rules);
    store.register(SourceKind::Kafka, "prod", Duration::from_secs(3600));
    let metrics = Metrics::new(store.clone(), rules.clone());

    let (rss_before, _) = rss();
    let live_before = LIVE.load(Ordering::Relaxed);
    let start = SystemTime::now() - INTERVAL * cycles as u32;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut inserts = Vec::with_capacity(cycles as usize);
    let mut insert_cpu = Vec::with_capacity(cycles as usize);
    let mut series = 0;
    // The heaviest cycle: (store's heap before it, the sample's heap, peak heap within it).
    let (mut sample_bytes, mut cycle_peak, mut store_before_peak) = (0, 0, 0);
    for cycle in 0..cycles {
        reset_peak();
        let live0 = LIVE.load(Ordering::Relaxed);
        let s = sample(&names, cycle, &mut rng, owned, incident);
        let built = LIVE.load(Ordering::Relaxed).saturating_sub(live0);
        series = s.observations.len() + s.batch.len();
        let at = start + INTERVAL * cycle as u32 + Duration::from_millis(rng.next() % 300);
        let (started, c0) = (Instant::now(), cpu());
        store.record_success(SourceKind::Kafka, "prod", at, s);
        inserts.push(started.elapsed());
        insert_cpu.push(cpu().saturating_sub(c0));
        let peak = PEAK.load(Ordering::Relaxed);
        if peak > cycle_peak {
            (sample_bytes, cycle_peak, store_before_peak) = (built, peak, live0);
        }
    }
    let live_store = LIVE.load(Ordering::Relaxed).saturating_sub(live_before);
    let now = start + INTERVAL * cycles as u32;
    let (rss_after, hwm) = rss();
    // The allocator keeps the freed samples' memory; what the store itself holds shows
    // once it gives that back.
    trim_heap();
    let (rss_trimmed, _) = rss();
    let stored = rss_trimmed.saturating_sub(rss_before);

    let (mut renders, mut render_cpu) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    let (live_before_render, mut render_peak) = (LIVE.load(Ordering::Relaxed), 0);
    // A sampler's write while scrapes run: the longest it waited is how long a render
    // holds the store's lock at a time.
    let rendering = std::sync::atomic::AtomicBool::new(true);
    let write_wait = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut longest = Duration::ZERO;
            while rendering.load(Ordering::Relaxed) {
                let started = Instant::now();
                // Takes the write lock; the source does not exist, so nothing changes.
                store.record_failure(SourceKind::Kafka, "bench-lock-probe", now, String::new());
                longest = longest.max(started.elapsed());
                std::thread::sleep(Duration::from_millis(1));
            }
            longest
        });
        for _ in 0..runs {
            reset_peak();
            let (started, c0) = (Instant::now(), cpu());
            bytes = render(&metrics);
            renders.push(started.elapsed());
            render_cpu.push(cpu().saturating_sub(c0));
            render_peak = render_peak.max(PEAK.load(Ordering::Relaxed).saturating_sub(live_before_render));
        }
        rendering.store(false, Ordering::Relaxed);
        writer.join().unwrap_or_default()
    });
    let set = rules.set();
    let (mut evals, mut eval_cpu) = (Vec::new(), Vec::new());
    let live_before_eval = LIVE.load(Ordering::Relaxed);
    let mut eval_peak = 0;
    for run in 0..runs {
        reset_peak();
        let (started, c0) = (Instant::now(), cpu());
        // One cycle apart, as the agent evaluates: `for` durations advance.
        let at = now + INTERVAL * run as u32;
        for file in &set.files {
            rules.eval_group(file, &store, at);
        }
        evals.push(started.elapsed());
        eval_cpu.push(cpu().saturating_sub(c0));
        eval_peak = eval_peak.max(PEAK.load(Ordering::Relaxed).saturating_sub(live_before_eval));
    }
    let eval_kept = LIVE.load(Ordering::Relaxed).saturating_sub(live_before_eval);
    let active: usize = rules.rule_statuses().iter().map(|r| r.instances.len()).sum();

    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let samples = series as f64 * cycles as f64;
    let input = if owned { "owned Observations" } else { "a compact Batch" };
    println!("store: {groups} groups x {PARTITIONS} partitions, {series} series, {cycles} cycles at 10 s ({samples:.0} samples), each sample {input}");
    let mbu = |b: usize| mb(b as u64);
    println!("{:<44} {:>12}", "heap: one sample as built (MB)", format!("{:.1}", mbu(sample_bytes)));
    println!("{:<44} {:>12}", "heap: in use before the peak cycle (MB)", format!("{:.1}", mbu(store_before_peak)));
    println!("{:<44} {:>12}", "heap: peak within a cycle (MB)", format!("{:.1}", mbu(cycle_peak)));
    println!("{:<44} {:>12}", "heap: the store after fill (MB)", format!("{:.1}", mbu(live_store)));
    println!("{:<44} {:>12}", "heap slope: bytes per series", format!("{:.0}", live_store as f64 / series as f64));
    println!("{:<44} {:>12}", "heap slope: bytes per sample", format!("{:.2}", live_store as f64 / samples));
    println!("{:<44} {:>12}", "heap: peak above the store, rendering (MB)", format!("{:.1}", mbu(render_peak)));
    println!("{:<44} {:>12}", "a write's longest wait while rendering (ms)", format!("{:.1}", write_wait.as_secs_f64() * 1000.0));
    println!("{:<44} {:>12}", "heap: rules' state after evaluations (MB)", format!("{:.1}", mbu(eval_kept)));
    println!("{:<44} {:>12}", "heap: peak above the store, evaluating (MB)", format!("{:.1}", mbu(eval_peak)));
    println!("{:<44} {:>12}", "alert instances kept (not quiet)", active);
    println!("{:<44} {:>12}", "RSS after fill (MB)", format!("{:.1}", mb(rss_after)));
    println!("{:<44} {:>12}", "peak RSS, VmHWM (MB)", format!("{:.1}", mb(hwm)));
    println!("{:<44} {:>12}", "RSS after fill, freed heap returned (MB)", format!("{:.1}", mb(rss_trimmed)));
    println!("{:<44} {:>12}", "store: RSS growth, heap returned (MB)", format!("{:.1}", mb(stored)));
    println!("{:<44} {:>12}", "bytes per series (that growth / series)", format!("{:.0}", stored as f64 / series as f64));
    println!("{:<44} {:>12}", "bytes per sample (that growth / samples)", format!("{:.2}", stored as f64 / samples));
    extra(&store);
    println!("{:<44} {:>12} {:>12} {:>12} {:>12}", "", "wall min ms", "wall med ms", "CPU min ms", "CPU med ms");
    let row = |name: String, wall: Vec<Duration>, cpu: Vec<Duration>| {
        let ((a, b), (c, d)) = (min_median(wall), min_median(cpu));
        println!("{name:<44} {a:>12.1} {b:>12.1} {c:>12.0} {d:>12.0}");
    };
    row(format!("insert one cycle ({cycles} cycles)"), inserts, insert_cpu);
    row(format!("/metrics render ({runs} runs, {:.1} MB)", mb(bytes as u64)), renders, render_cpu);
    row(format!("evaluate rules/ ({} files, {runs} runs)", set.files.len()), evals, eval_cpu);
}

/// Returns freed heap memory to the system (glibc), so RSS shows what is in use.
fn trim_heap() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim only releases free memory; it takes no pointers.
    let _released = unsafe { malloc_trim(0) };
}

/// Renders the whole exposition as `/metrics` streams it (pieces of about 64 KiB,
/// dropped as they are made); returns its size in bytes.
fn render(metrics: &Metrics) -> usize {
    let mut bytes = 0;
    let done = metrics.render(Format::Prometheus, &mut |piece| {
        bytes += piece.len();
        true
    });
    assert_eq!(done, Ok(true));
    bytes
}

/// What the agent tells the store before sampling: which signals the derivations and
/// the rules read over a window (`BENCH_KEEP_ALL=1`: keep every signal's history).
fn prepare(store: &Store, rules: &Rules) {
    if std::env::var_os("BENCH_KEEP_ALL").is_some() {
        return;
    }
    store.keep_history("derive", streamguard::derive::kafka::history_windows(&store.history_config()));
    store.keep_history("rules", streamguard::evaluate::history_windows(&rules.set()));
}

/// The store's own accounting.
fn extra(store: &Store) {
    let s = store.size();
    println!("{:<44} {:>12}", "series keeping history", s.series_with_history);
    println!("{:<44} {:>12}", "compressed points held", s.history_points);
    println!("{:<44} {:>12}", "compressed history (MB)", format!("{:.1}", s.history_bytes as f64 / (1024.0 * 1024.0)));
    println!("{:<44} {:>12}", "compressed bytes per point", format!("{:.2}", s.history_bytes as f64 / s.history_points.max(1) as f64));
    println!("{:<44} {:>12}", "interned strings (bytes)", format!("{} ({})", s.strings, s.string_bytes));
}
