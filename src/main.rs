//! The `streamguard` command line: `run`, `check`, `lag`.
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
    /// Validate a configuration file: prints SUCCESS or FAILED with every error; exit 0 or 1.
    Check {
        #[arg(long, short, env = "STREAMGUARD_CONFIG", default_value = "streamguard.toml")]
        config: PathBuf,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("streamguard: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STREAMGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn"));
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
        Command::Check { config } => Ok(check(&config)),
        Command::Run { config } => {
            let cfg = config::load(&config)?;
            let rt = runtime()?;
            rt.block_on(async {
                let cancel = CancellationToken::new();
                tokio::spawn(cancel_on_signal(cancel.clone()));
                agent::run(cfg, cancel).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lag { config, group, json } => {
            let group = group
                .map(|g| Regex::new(&g).with_context(|| format!("--group: invalid regex {g:?}")))
                .transpose()?;
            let cfg = config::load(&config)?;
            let mut reports = runtime()?.block_on(report::sample_all(&cfg));
            report::filter_groups(&mut reports, group.as_ref());
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "clusters": reports }))?);
            } else {
                print!("{}", report::render_table(&reports));
            }
            let failed = reports.iter().any(|r| r.error.is_some());
            Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            println!("SUCCESS: {}: {} cluster(s): {}", path.display(), cfg.clusters.len(), {
                let names: Vec<&str> = config::cluster_names(&cfg).into_iter().collect();
                names.join(", ")
            });
            ExitCode::SUCCESS
        }
        Err(errors) => {
            println!("FAILED: {}: {} error(s)", path.display(), errors.0.len());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            ExitCode::from(1)
        }
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
