//! `streamguard offsets plan|apply|resume`: the reprocessing procedure for people, with
//! the same limits, journal and audit as a runbook. `plan` reads and prints, nothing
//! changes; `apply` runs every step; `resume` finishes runs a crash interrupted.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::compute::ResetMode;
use super::limits::Limits;
use super::pause::{FlinkPause, Pause};
use super::procedure::{self, Env, Outcome, ProcedureError, Request};

// Parsed once per process: the size of the `apply` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
pub enum OffsetsCommand {
    /// Preview a move: per partition old → new offset, records to reprocess or skip, and
    /// the limits' verdict (like `kafka-consumer-groups --reset-offsets --dry-run`).
    Plan {
        #[command(flatten)]
        target: TargetArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the whole procedure: plan, pause, wait for Empty, copy poison records to the
    /// DLQ, commit, resume, verify. Exit 0 only when it succeeded.
    Apply {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        apply: ApplyArgs,
        #[arg(long)]
        json: bool,
    },
    /// Finish every run a crash left unfinished in the journal.
    Resume {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        files: FileArgs,
    },
}

#[derive(clap::Args, Debug)]
pub struct KafkaArgs {
    /// Bootstrap servers (default: the configuration's cluster).
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// The configuration whose `[[clusters]]` entry (`--cluster`, else the first) is used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub cluster: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct FileArgs {
    /// The procedure's write-ahead journal (not the agent's: the agent's executor owns that one).
    #[arg(long, default_value = "streamguard-offsets.journal")]
    pub journal: PathBuf,
    /// The audit log (JSON lines).
    #[arg(long, default_value = "streamguard-offsets-audit.jsonl")]
    pub audit: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[arg(long, short)]
    pub group: String,
    /// Topics to move (repeat; default: those the group has commits for).
    #[arg(long)]
    pub topic: Vec<String>,
    /// To the first record at or after this RFC 3339 time (2026-12-01T10:00:00Z).
    #[arg(long, group = "mode")]
    pub to_datetime: Option<String>,
    /// To the first record at or after this Unix time in milliseconds.
    #[arg(long, group = "mode")]
    pub to_timestamp: Option<i64>,
    #[arg(long, group = "mode")]
    pub to_earliest: bool,
    #[arg(long, group = "mode")]
    pub to_latest: bool,
    /// Move by N records (negative: back), clamped to the log.
    #[arg(long, group = "mode", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// `topic:partition=offset` (repeat).
    #[arg(long, group = "mode")]
    pub to_offset: Vec<String>,
    /// Skip the record at the committed offset of `topic:partition` (repeat), after
    /// copying it to --dlq.
    #[arg(long, group = "mode")]
    pub skip: Vec<String>,
    #[arg(long, default_value_t = Limits::default().max_partitions)]
    pub max_partitions: usize,
    #[arg(long, default_value_t = Limits::default().max_skipped)]
    pub max_skipped: u64,
    #[arg(long, default_value_t = Limits::default().max_replayed)]
    pub max_replayed: u64,
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub max_rewind_age: Duration,
    /// Dead-letter topic for --skip.
    #[arg(long)]
    pub dlq: Option<String>,
    #[arg(long, default_value_t = Duration::from_secs(10).as_secs())]
    pub timeout_seconds: u64,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Shell command that stops the group's consumers (run with `sh -c`; must be safe to
    /// run twice). Without it and --connector, nothing is paused: the group must already be
    /// Empty.
    #[arg(long)]
    pub pause_cmd: Option<String>,
    /// Shell command that starts them again.
    #[arg(long, requires = "pause_cmd")]
    pub resume_cmd: Option<String>,
    /// Pause a Kafka Connect sink connector (stop / resume; offsets through Connect's API).
    #[arg(long, conflicts_with = "pause_cmd", requires = "connect_url")]
    pub connector: Option<String>,
    #[arg(long)]
    pub connect_url: Option<String>,
    /// Pause a `[[scale]]` target of the configuration (--config): scale it to 0, then
    /// back to the count it had (journaled). Kubernetes and `command` targets only: a
    /// `process` pool lives inside the agent that supervises it (use a runbook's `pause: scale`).
    #[arg(long, conflicts_with_all = ["pause_cmd", "connector"])]
    pub pause_scale: Option<String>,
    /// Pause a Flink job (by name) on the JobManager at --flink-url: stop it with a
    /// savepoint, resubmit --flink-jar WITHOUT the savepoint (see --flink-discard-state).
    #[arg(long, conflicts_with_all = ["pause_cmd", "connector", "pause_scale"], requires_all = ["flink_url", "flink_jar"])]
    pub flink_job: Option<String>,
    #[arg(long)]
    pub flink_url: Option<String>,
    /// The uploaded jar (its name in `GET /jars`) the job is resubmitted from.
    #[arg(long)]
    pub flink_jar: Option<String>,
    #[arg(long)]
    pub flink_entry_class: Option<String>,
    /// A program argument of the resubmitted job (repeat).
    #[arg(long, allow_hyphen_values = true)]
    pub flink_arg: Vec<String>,
    /// Required with --flink-job: the job's Kafka source starts from the group's committed
    /// offsets, and its other state may be discarded (a job restored from its savepoint
    /// would take its offsets from the savepoint and undo the move).
    #[arg(long)]
    pub flink_discard_state: bool,
    /// Why (in the DLQ copy's `streamguard.reason` header and the audit).
    #[arg(long, default_value = "reprocessing by streamguard offsets apply")]
    pub reason: String,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub empty_deadline: Duration,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub verify_deadline: Duration,
    #[command(flatten)]
    pub files: FileArgs,
}

/// The `[[scale]]` targets `names` of the configuration, as a runtime of their own (a
/// `process` pool is refused: it lives inside the agent that supervises it).
fn scale_runtime(a: &KafkaArgs, names: &[String]) -> Result<std::sync::Arc<crate::scale::runtime::ScaleRuntime>, ProcedureError> {
    let path = a.config.clone().unwrap_or_else(|| "streamguard.toml".into());
    let cfg = crate::config::load(&path).map_err(|e| ProcedureError::Config(e.to_string()))?;
    let mut targets = Vec::new();
    for name in names {
        let t = cfg.scale.iter().find(|t| &t.name == name).ok_or_else(|| ProcedureError::Config(format!("no [[scale]] target {name:?} in {}", path.display())))?;
        if matches!(t.actuator, crate::scale::config::ActuatorConfig::Process(_)) {
            return Err(ProcedureError::Config(format!("[[scale]] {name}: a process pool lives inside the agent that supervises it; pause it from a runbook (pause: scale) run by that agent")));
        }
        targets.push(t.clone());
    }
    let rt = crate::scale::runtime::ScaleRuntime::new(&targets, &Default::default()).map_err(|(t, e)| ProcedureError::Config(format!("[[scale]] {t}: {e}")))?;
    Ok(std::sync::Arc::new(rt))
}

fn kafka_config(a: &KafkaArgs) -> Result<rdkafka::ClientConfig, ProcedureError> {
    if let Some(b) = &a.bootstrap_servers {
        return Ok(crate::sample::kafka::client_config(b, &Default::default()));
    }
    let path = a.config.clone().unwrap_or_else(|| "streamguard.toml".into());
    let cfg = crate::config::load(&path).map_err(|e| ProcedureError::Config(e.to_string()))?;
    let c = match &a.cluster {
        Some(n) => cfg.clusters.iter().find(|c| &c.name == n).ok_or_else(|| ProcedureError::Config(format!("no cluster {n:?} in {}", path.display())))?,
        None => cfg.clusters.first().ok_or_else(|| ProcedureError::Config(format!("no [[clusters]] in {}", path.display())))?,
    };
    Ok(crate::sample::kafka::client_config(&c.bootstrap_servers, &c.properties))
}

fn mode(t: &TargetArgs) -> Result<ResetMode, ProcedureError> {
    if let Some(d) = &t.to_datetime {
        let at = humantime::parse_rfc3339_weak(d).map_err(|e| ProcedureError::Config(format!("--to-datetime {d:?}: {e}")))?;
        let ms = at.duration_since(SystemTime::UNIX_EPOCH).map_err(|_| ProcedureError::Config("--to-datetime before 1970".into()))?.as_millis();
        return Ok(ResetMode::ToTimestamp { ms: ms as i64 });
    }
    if let Some(ms) = t.to_timestamp {
        return Ok(ResetMode::ToTimestamp { ms });
    }
    if t.to_earliest {
        return Ok(ResetMode::Earliest);
    }
    if t.to_latest {
        return Ok(ResetMode::Latest);
    }
    if let Some(by) = t.shift_by {
        return Ok(ResetMode::Shift { by });
    }
    if !t.to_offset.is_empty() {
        let mut offsets = std::collections::BTreeMap::new();
        for s in &t.to_offset {
            let (tp, o) = s.rsplit_once('=').ok_or_else(|| ProcedureError::Config(format!("--to-offset {s:?}: expected topic:partition=offset")))?;
            let o: i64 = o.parse().map_err(|_| ProcedureError::Config(format!("--to-offset {s:?}: offset is not a number")))?;
            offsets.insert(tp.to_string(), o);
        }
        return Ok(ResetMode::Explicit { offsets });
    }
    if !t.skip.is_empty() {
        return Ok(ResetMode::SkipPoison { partitions: t.skip.clone() });
    }
    Err(ProcedureError::Config("give one of --to-datetime, --to-timestamp, --to-earliest, --to-latest, --shift-by, --to-offset, --skip".into()))
}

fn request(t: &TargetArgs, a: Option<&ApplyArgs>) -> Result<Request, ProcedureError> {
    let pause = match a {
        Some(ApplyArgs { pause_cmd: Some(p), resume_cmd, .. }) => {
            let sh = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
            let r = resume_cmd.as_deref().ok_or_else(|| ProcedureError::Config("--pause-cmd needs --resume-cmd".into()))?;
            Pause::Command { pause: sh(p), resume: sh(r) }
        }
        Some(ApplyArgs { connector: Some(c), connect_url: Some(u), .. }) => Pause::Connect { url: u.trim_end_matches('/').to_string(), connector: c.clone() },
        Some(ApplyArgs { pause_scale: Some(t), .. }) => Pause::Scale { target: t.clone(), replicas: None },
        Some(a @ ApplyArgs { flink_job: Some(job), flink_url: Some(url), flink_jar: Some(jar), .. }) => Pause::Flink(FlinkPause {
            url: url.trim_end_matches('/').to_string(),
            job: job.clone(),
            jar: jar.clone(),
            entry_class: a.flink_entry_class.clone(),
            args: a.flink_arg.clone(),
            parallelism: None,
            discard_state: a.flink_discard_state,
        }),
        _ => Pause::None,
    };
    Ok(Request {
        group: t.group.clone(),
        topics: t.topic.clone(),
        mode: mode(t)?,
        limits: Limits { max_partitions: t.max_partitions, max_skipped: t.max_skipped, max_replayed: t.max_replayed, max_rewind_age: t.max_rewind_age },
        pause,
        dlq: t.dlq.clone(),
        reason: a.map_or_else(String::new, |a| a.reason.clone()),
        empty_deadline: a.map_or(Duration::from_secs(60), |a| a.empty_deadline),
        verify_deadline: a.map_or(Duration::from_secs(60), |a| a.verify_deadline),
        timeout: Duration::from_secs(t.timeout_seconds.clamp(1, 600)),
        tag: None,
    })
}

fn print_outcome(o: &Outcome, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(o).unwrap_or_default());
    } else {
        if let Some(p) = &o.preview {
            print!("{}", p.table());
        }
        println!("{} {}: {}", o.id, o.end, o.reason);
    }
}

/// Runs one subcommand; `Ok(true)`: success (exit 0).
pub async fn run(cmd: OffsetsCommand) -> Result<bool, ProcedureError> {
    match cmd {
        OffsetsCommand::Plan { target, json } => {
            let req = request(&target, None)?;
            // A preview changes nothing, so it journals nothing.
            let env = Env::reader(kafka_config(&target.kafka)?)?;
            let p = procedure::preview(&env, &req).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default());
            } else {
                print!("{}", p.table());
            }
            Ok(!p.refused())
        }
        OffsetsCommand::Apply { target, apply, json } => {
            let req = request(&target, Some(&apply))?;
            let mut env = Env::open(kafka_config(&target.kafka)?, &apply.files.journal, &apply.files.audit)?;
            if let Some(name) = &apply.pause_scale {
                env.scale = Some(scale_runtime(&target.kafka, std::slice::from_ref(name))?);
            }
            let o = procedure::apply(&env, req).await?;
            print_outcome(&o, json);
            Ok(o.end == "succeeded")
        }
        OffsetsCommand::Resume { kafka, files } => {
            // Targets a run paused are resumed through the configuration's [[scale]] entries.
            let held = procedure::held_scale_targets(&files.journal);
            let mut env = Env::open(kafka_config(&kafka)?, &files.journal, &files.audit)?;
            if !held.is_empty() {
                env.scale = Some(scale_runtime(&kafka, &held)?);
            }
            let all = procedure::recover(&env).await;
            if all.is_empty() {
                println!("no unfinished run");
            }
            for o in &all {
                print_outcome(o, false);
            }
            Ok(all.iter().all(|o| o.end == "succeeded"))
        }
    }
}
