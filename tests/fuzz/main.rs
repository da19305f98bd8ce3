//! A property-based fuzz harness over every parser of user input (issue 13, item 4): the
//! configuration (TOML), rule files (YAML), rule test files (YAML, run end to end), series
//! notation and rule conditions (parsed, then evaluated). Runs on the stable toolchain.
//!
//! The property: no input panics, aborts, or runs longer than 5 s (a watchdog; a hang is
//! a failure), and every rule-file error is located (`file:line:col`). Inputs come from
//! the structure-aware generators in `gen.rs`; each worker thread has a 2 MiB stack, as
//! the agent's own worker threads have, so unbounded recursion shows here as it would
//! in `run`.
//!
//! ```text
//! cargo test --test fuzz                      # the short run (scripts/test): 600 per parser
//! FUZZ_CASES=200000 cargo test --release --test fuzz -- --nocapture
//!                                             # the long run: FUZZ_CASES per parser
//! FUZZ_SEED=42 …                              # another seed (the default is fixed)
//! FUZZ_KINDS=Rules,Test …                     # only these parsers (Config, Rules, Test,
//!                                             # Series, Expr): split a long run over cores
//! ```
//! A failing input is written to `target/fuzz-found/`; keep it as a regression case in
//! `tests/testdata/fuzz/` (the extension says which parser: `.toml`, `.rules.yaml`,
//! `.test.yaml`, `.series`, `.expr`), where `every_kept_input_…` replays it on every run.

mod gen;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use gen::Rng;
use streamguard::rules::expr::{self, Dataset, EvalOptions, SeriesData};
use streamguard::rules::{eval::Engine, eval::EngineOptions, file, testing};

const WATCHDOG: Duration = Duration::from_secs(5);
const STACK: usize = 2 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Config,
    Rules,
    Test,
    Series,
    Expr,
}

const KINDS: [Kind; 5] = [Kind::Config, Kind::Rules, Kind::Test, Kind::Series, Kind::Expr];

impl Kind {
    fn ext(self) -> &'static str {
        match self {
            Kind::Config => "toml",
            Kind::Rules => "rules.yaml",
            Kind::Test => "test.yaml",
            Kind::Series => "series",
            Kind::Expr => "expr",
        }
    }

    fn of(path: &Path) -> Option<Kind> {
        let name = path.file_name()?.to_str()?;
        KINDS.into_iter().find(|k| name.ends_with(&format!(".{}", k.ext())))
    }

    fn generate(self, r: &mut Rng) -> String {
        match self {
            Kind::Config => gen::config(r),
            Kind::Rules => gen::rule_file(r),
            Kind::Test => gen::test_file(r),
            Kind::Series => gen::series(r),
            Kind::Expr => gen::condition(r),
        }
    }
}

/// A valid rule file the generated test files point at (`rule_files: [r.yaml]`).
const RULES: &str = "apiVersion: streamguard/v1\nkind: Alert\nmetadata: { name: a }\nspec:\n  condition: max by (group) (lag_offsets) > 10\n  for: 2m\n---\napiVersion: streamguard/v1\nkind: SLO\nmetadata: { name: s }\nspec:\n  objective: 99%\n  window: 1h\n  indicator:\n    timeslice:\n      condition: lag_offsets < 10\n";

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// A small dataset with ordinary and extreme (finite) values, for evaluating parsed
/// conditions.
fn dataset() -> Dataset {
    let mut d = Dataset::default();
    let src = d.add_source("fuzz", true);
    for (i, signal) in ["lag_offsets", "lag_seconds", "group_lag_seconds", "produce_rate", "connector_failed_tasks", "checkpoint_age_seconds"].iter().enumerate() {
        for (j, values) in [vec![0.0, 1.0, 5.0, 50.0], vec![f64::MAX, -f64::MAX, f64::MIN_POSITIVE, 0.0], vec![3.0]].iter().enumerate() {
            let labels: streamguard::signal::Labels = [("cluster", "local".to_string()), ("group", format!("g{j}")), ("topic", format!("t{i}"))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let points: Vec<_> = values.iter().enumerate().map(|(k, v)| (t(60 * k as u64), *v)).collect();
            d.by_signal.entry(signal.to_string()).or_default().push(SeriesData { labels: labels.into(), fresh: j != 2, points: points.into(), source: Some(src) });
        }
    }
    d
}

/// Runs one input through its parser (and what consumes a valid result). Panics on a
/// violated property.
fn exercise(kind: Kind, input: &str, dir: &Path, signals: &BTreeSet<String>) {
    match kind {
        Kind::Config => {
            let path = dir.join("c.toml");
            std::fs::write(&path, input).unwrap();
            let env = figment::providers::Env::prefixed("STREAMGUARD_FUZZ_UNUSED_");
            if let Err(errors) = streamguard::config::load_with_env(&path, env) {
                assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    assert!(!e.origin.is_empty() && !e.message.is_empty(), "an unlocated config error: {e:?}");
                }
            }
        }
        Kind::Rules => {
            let path = dir.join("fuzz.yaml");
            let mut set = file::RuleSet::default();
            let mut refs = Vec::new();
            let errors = file::parse_file(&path, input, signals, &mut set, &mut refs);
            for e in &errors {
                assert!(e.line >= 1 && e.col >= 1, "an unlocated rule error: {e}");
            }
            if errors.is_empty() {
                let data = dataset();
                let opts = EngineOptions::default();
                let mut engine = Engine::default();
                for step in 0..4 {
                    engine.eval_alerts(&set.alerts, &data, t(60 * step), &opts);
                    engine.eval_slos(&set.slos, &data, t(60 * step), &opts);
                }
                engine.rule_statuses(&set.alerts, t(240), &opts);
                let _ = streamguard::rules::export::prometheus_partial(&set);
            }
        }
        Kind::Test => {
            std::fs::write(dir.join("r.yaml"), RULES).unwrap();
            let path = dir.join("t.yaml");
            std::fs::write(&path, input).unwrap();
            let outcome = testing::run_file(&path, signals);
            assert!(outcome.passed + outcome.failed > 0 || !outcome.messages.is_empty(), "a test file with no outcome");
        }
        Kind::Series => {
            if let Ok(values) = testing::expand(input) {
                assert!(values.len() <= testing::MAX_STEPS);
                assert!(values.iter().flatten().all(|v| v.is_finite()), "a non-finite sample from {input:?}");
            }
        }
        Kind::Expr => {
            if let Ok(cond) = expr::parse(input) {
                let data = dataset();
                expr::eval(&cond, &data, t(180), &EvalOptions::default());
                cond.max_window();
            }
        }
    }
}

enum Verdict {
    Ok,
    Panic(String),
    Hang,
}

/// One worker thread (2 MiB stack) fed over a channel; the caller waits at most
/// [`WATCHDOG`] for each input. A hung worker is abandoned and replaced.
struct Worker {
    tx: mpsc::Sender<(Kind, String)>,
    rx: mpsc::Receiver<Result<(), String>>,
    _dir: tempfile::TempDir,
}

impl Worker {
    fn new() -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let (tx, inputs) = mpsc::channel::<(Kind, String)>();
        let (results, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("fuzz-worker".into())
            .stack_size(STACK)
            .spawn(move || {
                let signals = file::SignalNames::builtin();
                for (kind, input) in inputs {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(kind, &input, &path, &signals)));
                    let r = r.map_err(|p| {
                        p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
                    });
                    if results.send(r).is_err() {
                        break;
                    }
                }
            })
            .unwrap();
        Worker { tx, rx, _dir: dir }
    }

    fn check(&mut self, kind: Kind, input: &str) -> Verdict {
        self.tx.send((kind, input.to_string())).unwrap();
        match self.rx.recv_timeout(WATCHDOG) {
            Ok(Ok(())) => Verdict::Ok,
            Ok(Err(message)) => Verdict::Panic(message),
            Err(_) => {
                *self = Worker::new();
                Verdict::Hang
            }
        }
    }
}

struct Report {
    inputs: usize,
    failures: Vec<String>,
    slowest: (Duration, Kind, usize),
}

fn found_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../fuzz-found")
}

/// Runs `cases` generated inputs per parser from `seed`.
fn fuzz(seed: u64, cases: usize) -> Report {
    // Caught panics are reported below with their input; the default hook would print
    // each one again.
    std::panic::set_hook(Box::new(|_| {}));
    let mut worker = Worker::new();
    let mut report = Report { inputs: 0, failures: Vec::new(), slowest: (Duration::ZERO, Kind::Expr, 0) };
    // FUZZ_TRACE=1 writes each input before it runs: what killed the process (the OOM
    // killer, an abort) is then in target/fuzz-found/current.*.
    let trace = std::env::var_os("FUZZ_TRACE").is_some();
    let trace_progress = cases >= 10_000;
    // FUZZ_KINDS=Rules,Expr runs only those parsers (several processes share the work).
    let only = std::env::var("FUZZ_KINDS").ok();
    for (k, kind) in KINDS.into_iter().enumerate() {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|n| n.trim() == format!("{kind:?}"))) {
            continue;
        }
        let kind_started = Instant::now();
        let mut r = Rng::new(seed ^ (k as u64).wrapping_mul(0x9E37_79B9));
        for i in 0..cases {
            let input = kind.generate(&mut r);
            if trace {
                std::fs::create_dir_all(found_dir()).unwrap();
                std::fs::write(found_dir().join(format!("current.{}", kind.ext())), &input).unwrap();
            }
            let started = Instant::now();
            let verdict = worker.check(kind, &input);
            let took = started.elapsed();
            if took > report.slowest.0 {
                report.slowest = (took, kind, i);
            }
            report.inputs += 1;
            if trace_progress && (i + 1) % 10_000 == 0 {
                eprintln!("fuzz: {kind:?}: {} inputs, {} failures, {:.0} s", i + 1, report.failures.len(), kind_started.elapsed().as_secs_f64());
            }
            let what = match verdict {
                Verdict::Ok => continue,
                Verdict::Panic(m) => format!("panic: {m}"),
                Verdict::Hang => format!("no answer within {WATCHDOG:?}"),
            };
            let dir = found_dir();
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{seed}-{i}.{}", kind.ext()));
            std::fs::write(&path, &input).unwrap();
            let line = format!("{kind:?} #{i} (seed {seed}): {what}; input in {}", path.display());
            eprintln!("fuzz: {line}");
            report.failures.push(line);
        }
        eprintln!("fuzz: {kind:?}: {cases} inputs in {:.1} s", kind_started.elapsed().as_secs_f64());
    }
    let _ = std::panic::take_hook();
    report
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5EED_0013)
}

/// The short run in `scripts/test` (600 inputs per parser) and, with `FUZZ_CASES`, the
/// long run: one test, so nothing is skipped and the long run is the same code.
#[test]
fn generated_configs_rules_tests_series_and_conditions_never_panic_abort_or_hang() {
    let cases = env_usize("FUZZ_CASES", 600);
    let started = Instant::now();
    let report = fuzz(seed(), cases);
    println!(
        "fuzz: seed {}, {} inputs ({cases} per parser), {} failures (panics, aborts, hangs over {WATCHDOG:?}), {:.1} s, slowest input {:?} ({:?} #{})",
        seed(),
        report.inputs,
        report.failures.len(),
        started.elapsed().as_secs_f64(),
        report.slowest.0,
        report.slowest.1,
        report.slowest.2
    );
    assert!(report.failures.is_empty(), "{}", report.failures.join("\n"));
}

#[test]
fn every_kept_input_in_testdata_fuzz_is_handled_without_panic_or_hang() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/fuzz");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| Kind::of(p).is_some()).collect();
    files.sort();
    assert!(files.len() >= 5, "regression inputs in {}", dir.display());
    let mut worker = Worker::new();
    let mut failures = Vec::new();
    for path in files {
        let kind = Kind::of(&path).unwrap();
        let input = std::fs::read_to_string(&path).unwrap();
        match worker.check(kind, &input) {
            Verdict::Ok => {}
            Verdict::Panic(m) => failures.push(format!("{}: panic: {m}", path.display())),
            Verdict::Hang => failures.push(format!("{}: no answer within {WATCHDOG:?}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
