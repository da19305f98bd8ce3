//! The `streamguard` command line: `run`, `check`, `test`, `export`, `lag`, `replay`,
//! and the remediation commands `plan`, `act`, `approve`, `actions` (clients of a running
//! agent's API).
//!
//! Library code returns typed errors; this file alone turns them into text, prefixed
//! `streamguard:`, and into exit codes (0 success, 1 failure or invalid input).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use regex::Regex;
use tokio_util::sync::CancellationToken;

use streamguard::{agent, config, report};

#[derive(Parser)]
#[command(name = "streamguard", version, about = "Keeps streaming pipelines inside their SLOs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: sample every cluster and serve /metrics, /healthz, /readyz.
    Run {
        /// Configuration file (TOML); `STREAMGUARD_*` variables override its keys.
        #[arg(long, short, env = "STREAMGUARD_CONFIG", default_value = "streamguard.toml")]
        config: PathBuf,
    },
    /// Validate rule files (given as PATHS: files or directories) or, without PATHS, the
    /// configuration and the rules it names. Prints SUCCESS or FAILED per file with every
    /// error; exit 0 when all are valid, 1 otherwise.
    Check {
        #[arg(long, short, env = "STREAMGUARD_CONFIG")]
        config: Option<PathBuf>,
        /// Rule files or directories.
        paths: Vec<PathBuf>,
    },
    /// Run rule unit tests (YAML test files, like `promtool test rules`).
    Test {
        /// Test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A configuration whose Prometheus query signals the rules may use.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Export rules as other tools' rules.
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
    /// Sample every cluster once and print each group's per-partition lag.
    Lag {
        #[arg(long, short, env = "STREAMGUARD_CONFIG", default_value = "streamguard.toml")]
        config: PathBuf,
        /// Only groups whose name matches this regular expression.
        #[arg(long, short)]
        group: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate rules over a recording (`[record]`) in simulated time and print every
    /// alert transition and SLO burn alert with its time, value and evidence.
    Replay {
        /// A recording directory or one segment file.
        recording: PathBuf,
        /// Rule files or directories.
        #[arg(long, short, required = true)]
        rules: Vec<PathBuf>,
        /// Evaluation interval of the simulation (default: the configuration's
        /// `rules.evaluation_interval`, else 10s).
        #[arg(long, value_parser = humantime::parse_duration)]
        interval: Option<std::time::Duration>,
        /// A configuration whose rules settings (interval, confidence, unknown_after) and
        /// Prometheus query signals apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also write a `promtool test rules` file for the exported rules of the same rule
        /// set: the recording's series as input and the native verdicts as expectations.
        #[arg(long, value_name = "FILE")]
        emit_promtool_test: Option<PathBuf>,
    },
    /// What the agent would do now, and why: for every firing alert that names a
    /// runbook, the decision, every guard's outcome and the steps.
    Plan {
        #[command(flatten)]
        agent: AgentArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a runbook now for a target (needs the API token); prints the run.
    Act {
        /// The runbook's name.
        runbook: String,
        /// A target label, `name=value` (repeat for each: --target connect=local --target connector=sink).
        #[arg(long, required = true, value_parser = parse_label)]
        target: Vec<(String, String)>,
        /// Plan and audit only; send nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Approve a run waiting in `approve` mode (needs the API token).
    Approve {
        /// The run's id (see `streamguard actions`).
        id: String,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Reprocessing: preview (`plan`) or run (`apply`) a journaled, guarded offset move
    /// (pause → wait Empty → rewind or skip → resume → verify); `resume` after a crash.
    Offsets {
        #[command(subcommand)]
        command: Box<streamguard::remediate::offsets::cli::OffsetsCommand>,
    },
    /// A table of recent runs and decisions, newest first.
    Actions {
        #[command(flatten)]
        agent: AgentArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected name=value, got {s:?}")),
    }
}

/// How the remediation commands reach the agent.
#[derive(clap::Args)]
struct AgentArgs {
    /// The agent's configuration: its `listen` address and `[remediation]` token settings
    /// are used when --url or the token are not given.
    #[arg(long, short, env = "STREAMGUARD_CONFIG", default_value = "streamguard.toml")]
    config: PathBuf,
    /// The agent's base URL (default: http://<listen> of the configuration).
    #[arg(long)]
    url: Option<String>,
    /// A file holding the API bearer token (default: `$STREAMGUARD_API_TOKEN`, else the
    /// configuration's `api_token_file` / `api_token_env`).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ExportFormat {
    /// Prometheus recording and alerting rules over streamguard's metrics (YAML on stdout).
    Prometheus {
        /// Rule files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Export the rules that translate exactly and report the others on stderr
        /// (without it, any such rule fails the export and nothing is written).
        #[arg(long)]
        partial: bool,
    },
}

fn main() -> ExitCode {
    streamguard::heap::configure();
    let cli = Cli::parse();
    // `lag` prints its table on stdout and one cause per failed cluster on stderr; the
    // client library's own lines (the same failure, retold) would only interleave there.
    let quiet_client = matches!(cli.command, Command::Lag { .. });
    init_logging(if quiet_client { "info,librdkafka=off,rdkafka=warn" } else { "info,librdkafka=warn,rdkafka=warn" });
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("streamguard: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STREAMGUARD_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { config, paths } => Ok(check(config.as_deref(), &paths)),
        Command::Test { files, config } => {
            let signals = known_signals(config.as_deref())?;
            let (mut passed, mut failed) = (0, 0);
            for f in &files {
                let o = streamguard::rules::testing::run_file(f, &signals);
                for m in &o.messages {
                    println!("FAILED: {m}");
                }
                if o.failed == 0 {
                    println!("SUCCESS: {}: {} expectation(s) met", f.display(), o.passed);
                }
                passed += o.passed;
                failed += o.failed;
            }
            println!("{passed} passed, {failed} failed");
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Export { format: ExportFormat::Prometheus { paths, partial } } => {
            let (set, _) = streamguard::rules::file::load(&paths, &known_signals(None)?);
            let set = set?;
            let (text, errors) = streamguard::rules::export::prometheus_partial(&set);
            for e in &errors {
                eprintln!("streamguard: cannot export {e}");
            }
            if errors.is_empty() || partial {
                print!("{text}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("streamguard: nothing written; --partial exports the rest");
                Ok(ExitCode::from(1))
            }
        }
        Command::Run { config } => {
            let cfg = config::load(&config)?;
            let rt = runtime()?;
            let result = rt.block_on(async {
                let cancel = CancellationToken::new();
                tokio::spawn(cancel_on_signal(cancel.clone()));
                agent::run(cfg, cancel).await
            });
            // Dropping the runtime would wait for every blocking call (a Kafka sample can
            // block for its whole sample_timeout): the shutdown grace bounds it instead.
            rt.shutdown_timeout(agent::RUNTIME_SHUTDOWN);
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { recording, rules, interval, config, json, emit_promtool_test } => {
            replay(&recording, &rules, interval, config.as_deref(), json, emit_promtool_test.as_deref())
        }
        Command::Plan { agent, json } => {
            let v = call_agent(&agent, reqwest::Method::GET, "/api/v1/plan", false, None)?;
            print_json_or(&v, json, streamguard::remediate::client::render_plans)
        }
        Command::Actions { agent, json } => {
            let v = call_agent(&agent, reqwest::Method::GET, "/api/v1/actions", false, None)?;
            print_json_or(&v, json, streamguard::remediate::client::render_actions)
        }
        Command::Approve { id, agent } => {
            let path = format!("/api/v1/actions/{}/approve", streamguard::remediate::actions::segment(&id));
            call_agent(&agent, reqwest::Method::POST, &path, true, None)?;
            println!("approved {id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Act { runbook, target, dry_run, agent } => {
            let target: std::collections::BTreeMap<String, String> = target.into_iter().collect();
            let path = format!("/api/v1/runbooks/{}/run", streamguard::remediate::actions::segment(&runbook));
            let body = serde_json::json!({ "target": target, "dry_run": dry_run });
            let v = call_agent(&agent, reqwest::Method::POST, &path, true, Some(body))?;
            println!("{} {} {}: {}", v["id"].as_str().unwrap_or("-"), v["runbook"].as_str().unwrap_or("-"), v["state"].as_str().unwrap_or("-"), v["reason"].as_str().unwrap_or(""));
            let blocked = v["state"].as_str() == Some("blocked");
            Ok(if blocked { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Offsets { command } => {
            let ok = runtime()?.block_on(streamguard::remediate::offsets::cli::run(*command))?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Lag { config, group, json } => {
            let group = group
                .map(|g| Regex::new(&g).with_context(|| format!("--group: invalid regex {g:?}")))
                .transpose()?;
            let cfg = config::load(&config)?;
            let mut reports = runtime()?.block_on(report::sample_all(&cfg));
            report::filter_groups(&mut reports, group.as_ref());
            // Data on stdout, failures on stderr, so the table or JSON stays parseable.
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "clusters": reports }))?);
            } else {
                print!("{}", report::render_table(&reports));
            }
            for line in report::error_lines(&reports) {
                eprintln!("streamguard: {line}");
            }
            let failed = reports.iter().any(|r| r.error.is_some());
            Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}

/// One request to the running agent's API; `auth`: with the bearer token.
fn call_agent(a: &AgentArgs, method: reqwest::Method, path: &str, auth: bool, body: Option<serde_json::Value>) -> anyhow::Result<serde_json::Value> {
    let cfg = if a.url.is_none() || (auth && a.token_file.is_none() && std::env::var_os("STREAMGUARD_API_TOKEN").is_none()) {
        Some(config::load(&a.config)?)
    } else {
        None
    };
    let base = match (&a.url, &cfg) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(c)) => format!("http://{}", c.listen),
        (None, None) => anyhow::bail!("give --url or a configuration"),
    };
    let token = if !auth {
        None
    } else if let Some(f) = &a.token_file {
        Some(std::fs::read_to_string(f).with_context(|| format!("cannot read the token file {}", f.display()))?.trim().to_string())
    } else if let Ok(t) = std::env::var("STREAMGUARD_API_TOKEN") {
        Some(t.trim().to_string())
    } else {
        let rc = cfg.as_ref().and_then(|c| c.remediation.as_ref()).context("no API token: give --token-file, set STREAMGUARD_API_TOKEN, or configure [remediation] api_token_file")?;
        Some(streamguard::remediate::executor::load_token(rc).map_err(|e| anyhow::anyhow!("API token: {e}"))?.context("no API token configured")?)
    };
    Ok(runtime()?.block_on(streamguard::remediate::client::call(&base, method, path, token.as_deref(), body))?)
}

fn print_json_or(v: &serde_json::Value, json: bool, render: fn(&serde_json::Value) -> String) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print!("{}", render(v));
    }
    Ok(ExitCode::SUCCESS)
}

/// Built-in signals plus the Prometheus query signals of `config`, if given.
fn known_signals(config: Option<&std::path::Path>) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let mut signals = streamguard::rules::file::SignalNames::builtin();
    if let Some(c) = config {
        let cfg = config::load(c)?;
        signals.extend(cfg.prometheus.iter().flat_map(|p| p.queries.iter().map(|q| q.signal.clone())));
    }
    Ok(signals)
}

/// Prints SUCCESS/FAILED per rule file; returns whether all were valid.
fn check_rules(paths: &[PathBuf], signals: &std::collections::BTreeSet<String>) -> bool {
    let (result, reports) = streamguard::rules::file::load(paths, signals);
    if reports.is_empty() {
        if let Err(e) = &result {
            println!("FAILED: {e}");
            return false;
        }
        println!("SUCCESS: no rule files in {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    for r in &reports {
        if r.errors.is_empty() {
            if r.runbooks > 0 {
                println!("SUCCESS: {}: {} alert(s), {} SLO(s), {} runbook(s)", r.file.display(), r.alerts, r.slos, r.runbooks);
            } else {
                println!("SUCCESS: {}: {} alert(s), {} SLO(s)", r.file.display(), r.alerts, r.slos);
            }
        } else {
            println!("FAILED: {}: {} error(s)", r.file.display(), r.errors.len());
            for e in &r.errors {
                eprintln!("  {e}");
            }
        }
    }
    result.is_ok()
}

fn check(config_path: Option<&std::path::Path>, paths: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    let mut signals = streamguard::rules::file::SignalNames::builtin();
    let config_path = match (config_path, paths.is_empty()) {
        (Some(c), _) => Some(c.to_path_buf()),
        (None, true) => Some(PathBuf::from("streamguard.toml")),
        (None, false) => None,
    };
    let mut rule_paths = paths.to_vec();
    if let Some(path) = &config_path {
        match config::load(path) {
            Ok(cfg) => {
                let names: Vec<&str> = config::cluster_names(&cfg).into_iter().collect();
                println!("SUCCESS: {}: {} cluster(s): {}", path.display(), cfg.clusters.len(), names.join(", "));
                signals.extend(cfg.prometheus.iter().flat_map(|p| p.queries.iter().map(|q| q.signal.clone())));
                if paths.is_empty() {
                    rule_paths = cfg.rules.paths.clone();
                }
            }
            Err(errors) => {
                println!("FAILED: {}: {} error(s)", path.display(), errors.0.len());
                for e in &errors.0 {
                    eprintln!("  {e}");
                }
                ok = false;
            }
        }
    }
    if !rule_paths.is_empty() {
        ok &= check_rules(&rule_paths, &signals);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn cancel_on_signal(cancel: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
    cancel.cancel();
}

/// `streamguard replay`.
fn replay(
    recording: &std::path::Path,
    rules: &[PathBuf],
    interval: Option<std::time::Duration>,
    config: Option<&std::path::Path>,
    json: bool,
    emit: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let cfg = config.map(config::load).transpose()?;
    let rules_cfg = cfg.as_ref().map(|c| c.rules.clone());
    let interval = interval.or(rules_cfg.as_ref().map(|r| r.evaluation_interval)).unwrap_or(std::time::Duration::from_secs(10));
    anyhow::ensure!(!interval.is_zero(), "--interval must be more than 0");
    let signals = known_signals(config)?;
    let (set, _) = streamguard::rules::file::load(rules, &signals);
    let set = set?;
    let rec = streamguard::record::read(recording)?;
    let opts = streamguard::replay::ReplayOptions {
        evaluation_interval: interval,
        confidence: rules_cfg.as_ref().map_or(0.95, |r| r.confidence),
        unknown_after: rules_cfg.as_ref().map_or(std::time::Duration::from_secs(600), |r| r.unknown_after),
    };
    let timeline = streamguard::replay::replay(rec.clone(), &set, &opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&timeline)?);
    } else {
        print!("{}", streamguard::replay::render(&timeline));
    }
    if let Some(path) = emit {
        // The exported rules go next to the test, which names them.
        let exported = streamguard::rules::export::prometheus(&set).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("cannot export exactly, so cannot test:\n  {}", lines.join("\n  "))
        })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("replay");
        let rules_name = format!("{stem}.rules.yml");
        let rules_path = path.with_file_name(&rules_name);
        let text = streamguard::replay::promtool_test(&rec, &set, &opts, &rules_name).map_err(|e| anyhow::anyhow!("{e}"))?;
        std::fs::write(&rules_path, exported).with_context(|| format!("cannot write {}", rules_path.display()))?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("streamguard: wrote {} and {}", path.display(), rules_path.display());
    }
    Ok(ExitCode::SUCCESS)
}
