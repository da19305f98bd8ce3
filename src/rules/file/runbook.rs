//! `kind: Runbook` documents: what a firing rule may do about itself, validated into
//! [`Runbook`] with every problem at its file:line:col, like rules.
//!
//! A runbook names the instance labels that identify what it acts on (`target`), a
//! `mode` (`dry-run`, the default; `act`; `approve`), its guards (cooldown per target,
//! at most `max_runs` per `window`, preconditions in the rule language), its `steps`
//! (typed actions, and `wait` for a condition with a deadline), a `verify` condition with
//! a deadline, `rollback` steps and `escalate` steps (run when verification fails or a
//! run aborts).
//!
//! Actions are a closed set ([`Action`]): each variant is parsed here into typed
//! parameters and executed by its own file under `crate::remediate::actions`. This module
//! only describes; it never performs I/O.
//!
//! It is a child of `rules::file` because it reads through the same positioned YAML
//! context ([`super::Ctx`]) and error sink.
//!
//! Over ~600 lines on purpose: one closed [`Action`] enum and its one step parser, with
//! a branch per action (connect, notify, scale, flink) sharing the field checks and
//! positions; split per action, each file would re-import the whole parsing context.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use saphyr::YamlDataOwned;

use super::{pos, str_of, text_of, Ctx, Node};
use crate::rules::expr::Cond;

/// When a runbook acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Plans, guards and audits exactly as `act`, but sends nothing (the default).
    DryRun,
    /// Runs the steps.
    Act,
    /// Waits for `streamguard approve ID` (or `POST /api/v1/actions/{id}/approve`).
    Approve,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Act => "act",
            Mode::Approve => "approve",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        [Mode::DryRun, Mode::Act, Mode::Approve].into_iter().find(|m| m.as_str() == s)
    }
}

/// A condition in the rule language, with its text for the audit log.
#[derive(Debug, Clone)]
pub struct Condition {
    pub cond: Cond,
    pub text: String,
}

/// A condition that must hold within a deadline.
#[derive(Debug, Clone)]
pub struct Deadline {
    pub condition: Condition,
    pub deadline: Duration,
}

/// Guards of a runbook (see `crate::remediate::guard`).
#[derive(Debug, Clone)]
pub struct Guards {
    /// No new run for the same target within this time of the previous run's start.
    pub cooldown: Duration,
    /// At most this many runs of this runbook (all targets) per `window`.
    pub max_runs: u32,
    pub window: Duration,
    /// Must be true, on fresh data, for the target right before each step.
    pub preconditions: Vec<Condition>,
}

impl Default for Guards {
    fn default() -> Self {
        Guards { cooldown: DEFAULT_COOLDOWN, max_runs: DEFAULT_MAX_RUNS, window: DEFAULT_WINDOW, preconditions: Vec::new() }
    }
}

/// What `connect` does to a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectOp {
    /// `POST /connectors/{c}/restart?includeTasks=true&onlyFailed=false`.
    Restart,
    /// `POST /connectors/{c}/restart?includeTasks=true&onlyFailed=true`.
    RestartFailedTasks,
    /// `PUT /connectors/{c}/pause`.
    Pause,
    /// `PUT /connectors/{c}/resume`.
    Resume,
    /// `PUT /connectors/{c}/stop`.
    Stop,
}

impl ConnectOp {
    pub const ALL: [ConnectOp; 5] = [ConnectOp::Restart, ConnectOp::RestartFailedTasks, ConnectOp::Pause, ConnectOp::Resume, ConnectOp::Stop];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectOp::Restart => "restart",
            ConnectOp::RestartFailedTasks => "restart-failed-tasks",
            ConnectOp::Pause => "pause",
            ConnectOp::Resume => "resume",
            ConnectOp::Stop => "stop",
        }
    }
}

/// Parameters of a `connect` step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConnectAction {
    pub operation: ConnectOp,
    /// The worker must report the expected state within this time after the request.
    #[serde(with = "secs")]
    pub deadline: Duration,
    /// Bound: refuse a restart that would restart more tasks than this (read from the
    /// worker right before the request). `None`: no bound.
    pub max_tasks: Option<u32>,
}

/// How `notify` delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    /// `POST url` with a JSON body describing the run.
    Webhook,
    /// `POST url/api/v2/alerts` with one alert (Alertmanager API v2).
    Alertmanager,
}

/// Parameters of a `notify` step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NotifyAction {
    pub url: String,
    pub format: NotifyFormat,
    pub message: String,
}

/// How an `offsets` step moves the group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OffsetsReset {
    /// Copy the record at the committed offset of the target's `topic`/`partition` to the
    /// dead-letter topic and move past it.
    SkipPoison,
    Earliest,
    Latest,
    /// By this many records (negative: back).
    ShiftBy(i64),
    /// Back to the first record at or after (run start − this duration).
    #[serde(with = "secs")]
    Rewind(Duration),
}

/// How an `offsets` step pauses the group's consumers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetsPause {
    /// Nothing to pause: the group must already be Empty.
    None,
    /// Stop and resume the target's connector (`connect`/`connector` labels).
    Connect,
    /// Programs (argv) that stop and start the consumers.
    Command { pause: Vec<String>, resume: Vec<String> },
    /// Scale a `[[scale]]` target to 0 and back to its count before the pause
    /// (`scale_target`, else the target watching the run's group).
    Scale { target: Option<String> },
    /// Stop the run's Flink job (`flink`/`flink_job` labels) with a savepoint and
    /// resubmit `flink_jar` without it; `discard_state` is `flink_state: discard`
    /// (without it the procedure refuses, see `remediate::offsets::pause`).
    Flink { jar: String, entry_class: Option<String>, args: Vec<String>, discard_state: bool },
}

/// Parameters of an `offsets` step (the reprocessing procedure of
/// `crate::remediate::offsets`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OffsetsAction {
    pub reset: OffsetsReset,
    pub dlq: Option<String>,
    pub pause: OffsetsPause,
    pub max_partitions: usize,
    pub max_skipped: u64,
    pub max_replayed: u64,
    #[serde(with = "secs")]
    pub max_rewind_age: Duration,
    #[serde(with = "secs")]
    pub empty_deadline: Duration,
    #[serde(with = "secs")]
    pub verify_deadline: Duration,
}

/// The closed set of actions. A new action is a variant here, its parser below, and its
/// file under `remediate/actions/`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Connect(ConnectAction),
    Notify(NotifyAction),
    Offsets(OffsetsAction),
    Scale(ScaleAction),
    Flink(FlinkAction),
}

/// What a `flink` step does to the run's job (`crate::actions_flink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlinkOp {
    /// A savepoint; the job keeps running.
    Savepoint,
    /// Stop with a savepoint and resubmit from it; if the savepoint fails, cancel and
    /// resubmit from the last completed checkpoint (the stalled-checkpoint remedy).
    SavepointAndRestart,
    /// Stop with a savepoint and resubmit from it at `parallelism`.
    Rescale,
}

impl FlinkOp {
    pub const ALL: [FlinkOp; 3] = [FlinkOp::Savepoint, FlinkOp::SavepointAndRestart, FlinkOp::Rescale];

    pub fn as_str(self) -> &'static str {
        match self {
            FlinkOp::Savepoint => "savepoint",
            FlinkOp::SavepointAndRestart => "savepoint-and-restart",
            FlinkOp::Rescale => "rescale",
        }
    }
}

/// Parameters of a `flink` step. A resubmission needs the program, which Flink does not
/// keep: the uploaded jar (a substring of its file name), the entry class, the arguments.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FlinkAction {
    pub operation: FlinkOp,
    pub jar: Option<String>,
    pub entry_class: Option<String>,
    pub args: Vec<String>,
    pub parallelism: Option<u32>,
    #[serde(with = "secs")]
    pub savepoint_timeout: Duration,
    /// The whole operation, verification included (RUNNING and a new checkpoint).
    #[serde(with = "secs")]
    pub deadline: Duration,
}

/// What a `scale` step sets the count to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleTo {
    /// The scale target's policy decides (`to: policy`, the default).
    Policy,
    /// The count before the target's last change (`to: previous`, for rollbacks).
    Previous,
    /// A fixed count (`to: 3`).
    Count(u32),
}

/// Parameters of a `scale` step (executed by `crate::remediate::actions::scale`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScaleAction {
    /// A `[[scale]]` target name; absent: the target whose group is the run's `group`.
    pub target: Option<String>,
    pub to: ScaleTo,
}

impl Action {
    /// Bounded name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Connect(_) => "connect",
            Action::Notify(_) => "notify",
            Action::Offsets(_) => "offsets",
            Action::Scale(_) => "scale",
            Action::Flink(_) => "flink",
        }
    }

    /// How long after its request the action may spend checking that it took effect
    /// (the executor's hard limit of one attempt is the step's timeout plus this).
    pub fn verify_deadline(&self) -> Duration {
        match self {
            Action::Connect(c) => c.deadline,
            Action::Notify(_) => Duration::ZERO,
            // The whole procedure: the wait for Empty, then the verification.
            Action::Offsets(o) => o.empty_deadline + o.verify_deadline,
            // The step's `timeout` must cover the target's verification window.
            Action::Scale(_) => Duration::ZERO,
            Action::Flink(f) => f.deadline,
        }
    }

    /// Whether running it twice is the same as running it once: only such an action is
    /// retried after a failure that may have reached the other side, or after a crash
    /// between its intent and its outcome.
    pub fn idempotent(&self) -> bool {
        match self {
            // A second restart of a connector restarts it again.
            Action::Connect(c) => c.operation != ConnectOp::Restart,
            // A second message is a duplicate, not a second effect; losing an escalation
            // is worse.
            Action::Notify(_) => true,
            // The procedure journals its own steps and, run again for the same step of
            // the same run, finishes or reports that procedure instead of starting anew.
            Action::Offsets(_) => true,
            // Sets a count: the same request twice is the same count.
            Action::Scale(_) => true,
            // A second savepoint is harmless; a second restart restarts again.
            Action::Flink(f) => f.operation == FlinkOp::Savepoint,
        }
    }
}

/// One step of a runbook.
#[derive(Debug, Clone)]
pub enum StepKind {
    Act(Action),
    Wait(Deadline),
}

#[derive(Debug, Clone)]
pub struct Step {
    pub kind: StepKind,
    /// Budget of one attempt.
    pub timeout: Duration,
    /// Further attempts after a failure, with backoff; used only for idempotent actions.
    pub retries: u32,
    /// For messages: file:line of the step.
    pub line: usize,
}

impl Step {
    pub fn name(&self) -> &'static str {
        match &self.kind {
            StepKind::Act(a) => a.name(),
            StepKind::Wait(_) => "wait",
        }
    }

    pub fn idempotent(&self) -> bool {
        match &self.kind {
            StepKind::Act(a) => a.idempotent(),
            StepKind::Wait(_) => true,
        }
    }

    /// One line for plans and the audit log.
    pub fn describe(&self) -> String {
        match &self.kind {
            StepKind::Act(Action::Connect(c)) => format!("connect {}", c.operation.as_str()),
            StepKind::Act(Action::Notify(n)) => format!("notify ({})", match n.format {
                NotifyFormat::Webhook => "webhook",
                NotifyFormat::Alertmanager => "alertmanager",
            }),
            StepKind::Act(Action::Offsets(o)) => format!("offsets {} ({})", match o.reset {
                OffsetsReset::SkipPoison => format!("skip-poison to {}", o.dlq.as_deref().unwrap_or("?")),
                OffsetsReset::Earliest => "earliest".into(),
                OffsetsReset::Latest => "latest".into(),
                OffsetsReset::ShiftBy(n) => format!("shift by {n}"),
                OffsetsReset::Rewind(d) => format!("rewind {}", humantime::format_duration(d)),
            }, match &o.pause {
                OffsetsPause::None => "nothing to pause".to_string(),
                OffsetsPause::Connect => "stop the connector".to_string(),
                OffsetsPause::Command { pause, .. } => format!("pause with {}", pause.first().map_or("?", String::as_str)),
                OffsetsPause::Scale { target } => format!("scale {} to 0", target.as_deref().unwrap_or("the group's target")),
                OffsetsPause::Flink { .. } => "stop the Flink job with a savepoint".to_string(),
            }),
            StepKind::Act(Action::Scale(a)) => format!(
                "scale {} to {}",
                a.target.as_deref().unwrap_or("the group's target"),
                match a.to {
                    ScaleTo::Policy => "the policy's count".to_string(),
                    ScaleTo::Previous => "the previous count".to_string(),
                    ScaleTo::Count(n) => n.to_string(),
                }
            ),
            StepKind::Act(Action::Flink(f)) => format!("flink {}", f.operation.as_str()),
            StepKind::Wait(w) => format!("wait until {} (deadline {})", w.condition.text, humantime::format_duration(w.deadline)),
        }
    }
}

/// A validated runbook.
#[derive(Debug, Clone)]
pub struct Runbook {
    pub file: PathBuf,
    pub name: String,
    /// `None`: not written; the `[remediation] default_mode` applies (dry-run unless set).
    pub mode: Option<Mode>,
    /// Instance labels naming what it acts on (empty: all of the instance's labels).
    pub target: Vec<String>,
    pub guards: Guards,
    pub steps: Vec<Step>,
    pub verify: Option<Deadline>,
    pub rollback: Vec<Step>,
    pub escalate: Vec<Step>,
    pub labels: BTreeMap<String, String>,
}

impl Runbook {
    /// Every condition it evaluates (for the evaluator's view of the store).
    pub fn conditions(&self) -> Vec<&Cond> {
        let steps = self.steps.iter().chain(&self.rollback).chain(&self.escalate);
        let waits = steps.filter_map(|s| match &s.kind {
            StepKind::Wait(w) => Some(&w.condition.cond),
            StepKind::Act(_) => None,
        });
        self.guards.preconditions.iter().map(|c| &c.cond).chain(waits).chain(self.verify.iter().map(|v| &v.condition.cond)).collect()
    }
}

mod secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_RUNS: u32 = 3;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_CONNECT_DEADLINE: Duration = Duration::from_secs(60);
/// Bounds that keep a runbook from retrying or waiting without end.
pub const MAX_RETRIES: u32 = 10;
pub const MAX_STEPS: usize = 50;

const SPEC_FIELDS: [&str; 7] = ["mode", "target", "guards", "steps", "verify", "rollback", "escalate"];
const GUARD_FIELDS: [&str; 4] = ["cooldown", "max_runs", "window", "preconditions"];
const DEADLINE_FIELDS: [&str; 2] = ["condition", "deadline"];
const CONNECT_FIELDS: [&str; 6] = ["action", "operation", "deadline", "timeout", "retries", "max_tasks"];
const NOTIFY_FIELDS: [&str; 6] = ["action", "url", "format", "message", "timeout", "retries"];
const OFFSETS_FIELDS: [&str; 19] = [
    "action", "reset", "dlq", "pause", "pause_command", "resume_command", "max_partitions", "max_skipped", "max_replayed", "max_rewind_age", "empty_deadline", "verify_deadline", "timeout", "retries",
    "scale_target", "flink_jar", "flink_entry_class", "flink_args", "flink_state",
];
const WAIT_FIELDS: [&str; 1] = ["wait"];
const SCALE_FIELDS: [&str; 5] = ["action", "target", "to", "timeout", "retries"];
const FLINK_FIELDS: [&str; 10] = ["action", "operation", "jar", "entry_class", "args", "parallelism", "savepoint_timeout", "deadline", "timeout", "retries"];
const ACTIONS: [&str; 5] = ["connect", "notify", "offsets", "scale", "flink"];
pub const DEFAULT_OFFSETS_DEADLINE: Duration = Duration::from_secs(120);

/// Parses a runbook's `spec` (absent: a runbook with no steps).
pub(super) fn parse(cx: &mut Ctx, spec: Option<&Node>, what: &str, name: &str, labels: BTreeMap<String, String>) -> Option<Runbook> {
    let before = cx.errors.len();
    let mut rb = Runbook {
        file: cx.file.to_path_buf(),
        name: name.to_string(),
        mode: None,
        target: Vec::new(),
        guards: Guards::default(),
        steps: Vec::new(),
        verify: None,
        rollback: Vec::new(),
        escalate: Vec::new(),
        labels,
    };
    let Some(spec) = spec else { return Some(rb) };
    let s = cx.fields(spec, what, &SPEC_FIELDS);
    if let Some(n) = s.get("mode") {
        match str_of(n).and_then(Mode::parse) {
            Some(m) => rb.mode = Some(m),
            None => cx.err(pos(n), format!("{what}: mode must be dry-run, act or approve")),
        }
    }
    if let Some(n) = s.get("target") {
        rb.target = cx.string_list(n, &format!("{what}: target")).into_iter().map(|(t, _)| t).collect();
    }
    if let Some(n) = s.get("guards") {
        rb.guards = guards(cx, n, what);
    }
    rb.steps = s.get("steps").map(|n| steps(cx, n, &format!("{what}: steps"))).unwrap_or_default();
    rb.rollback = s.get("rollback").map(|n| steps(cx, n, &format!("{what}: rollback"))).unwrap_or_default();
    rb.escalate = s.get("escalate").map(|n| steps(cx, n, &format!("{what}: escalate"))).unwrap_or_default();
    rb.verify = s.get("verify").and_then(|n| deadline(cx, n, &format!("{what}: verify")));
    (cx.errors.len() == before).then_some(rb)
}

fn guards(cx: &mut Ctx, n: &Node, what: &str) -> Guards {
    let what = format!("{what}: guards");
    let g = cx.fields(n, &what, &GUARD_FIELDS);
    let mut out = Guards::default();
    if let Some(d) = g.get("cooldown").and_then(|n| cx.duration(n, &format!("{what}.cooldown"))) {
        out.cooldown = d;
    }
    if let Some(d) = g.get("window").and_then(|n| cx.positive_duration(n, &format!("{what}.window"))) {
        out.window = d;
    }
    if let Some(n) = g.get("max_runs") {
        match text_of(n).and_then(|t| t.trim().parse::<u32>().ok()) {
            Some(v) if v > 0 => out.max_runs = v,
            _ => cx.err(pos(n), format!("{what}.max_runs: expected a positive integer")),
        }
    }
    if let Some(n) = g.get("preconditions") {
        out.preconditions = conditions(cx, n, &format!("{what}.preconditions"));
    }
    out
}

fn conditions(cx: &mut Ctx, n: &Node, what: &str) -> Vec<Condition> {
    match &n.data {
        YamlDataOwned::Sequence(items) => {
            items.iter().filter_map(|i| cx.condition(i, what).map(|(cond, text)| Condition { cond, text })).collect()
        }
        _ => {
            cx.err(pos(n), format!("{what}: expected a list of conditions"));
            Vec::new()
        }
    }
}

fn deadline(cx: &mut Ctx, n: &Node, what: &str) -> Option<Deadline> {
    let f = cx.fields(n, what, &DEADLINE_FIELDS);
    let condition = match f.get("condition") {
        Some(c) => cx.condition(c, what).map(|(cond, text)| Condition { cond, text }),
        None => {
            cx.err(pos(n), format!("{what}: condition is required"));
            None
        }
    };
    let deadline = match f.get("deadline") {
        Some(d) => cx.positive_duration(d, &format!("{what}: deadline")),
        None => {
            cx.err(pos(n), format!("{what}: deadline is required (e.g. 2m)"));
            None
        }
    };
    Some(Deadline { condition: condition?, deadline: deadline? })
}

fn steps(cx: &mut Ctx, n: &Node, what: &str) -> Vec<Step> {
    let YamlDataOwned::Sequence(items) = &n.data else {
        cx.err(pos(n), format!("{what}: expected a list of steps"));
        return Vec::new();
    };
    if items.len() > MAX_STEPS {
        cx.err(pos(n), format!("{what}: at most {MAX_STEPS} steps"));
        return Vec::new();
    }
    items.iter().enumerate().filter_map(|(i, item)| step(cx, item, &format!("{what}[{i}]"))).collect()
}

/// The value of `key` in a mapping node, if it is one.
fn get<'n>(n: &'n Node, key: &str) -> Option<&'n Node> {
    match &n.data {
        YamlDataOwned::Mapping(m) => m.iter().find(|(k, _)| str_of(k) == Some(key)).map(|(_, v)| v),
        _ => None,
    }
}

fn step(cx: &mut Ctx, n: &Node, what: &str) -> Option<Step> {
    let line = pos(n).0;
    if let Some(w) = get(n, "wait") {
        cx.fields(n, what, &WAIT_FIELDS);
        let d = deadline(cx, w, &format!("{what}: wait"))?;
        return Some(Step { kind: StepKind::Wait(d), timeout: DEFAULT_STEP_TIMEOUT, retries: 0, line });
    }
    let Some(a) = get(n, "action") else {
        cx.err(pos(n), format!("{what}: expected `action: connect|notify|offsets|scale|flink` or `wait:`"));
        return None;
    };
    let action = str_of(a).unwrap_or_default();
    let before = cx.errors.len();
    let (f, kind) = match action {
        "connect" => {
            let f = cx.fields(n, what, &CONNECT_FIELDS);
            let operation = match f.get("operation") {
                Some(o) => {
                    let op = str_of(o).and_then(|s| ConnectOp::ALL.into_iter().find(|c| c.as_str() == s));
                    if op.is_none() {
                        let names: Vec<&str> = ConnectOp::ALL.iter().map(|c| c.as_str()).collect();
                        cx.err(pos(o), format!("{what}: operation must be one of {}", names.join(", ")));
                    }
                    op
                }
                None => {
                    cx.err(pos(n), format!("{what}: connect needs an operation"));
                    None
                }
            };
            let deadline = f.get("deadline").map_or(Some(DEFAULT_CONNECT_DEADLINE), |d| cx.positive_duration(d, &format!("{what}: deadline")));
            let max_tasks = f.get("max_tasks").and_then(|m| match text_of(m).and_then(|t| t.trim().parse::<u32>().ok()) {
                Some(v) if v > 0 => Some(v),
                _ => {
                    cx.err(pos(m), format!("{what}: max_tasks must be a positive integer"));
                    None
                }
            });
            let kind = match (operation, deadline) {
                (Some(operation), Some(deadline)) => Some(Action::Connect(ConnectAction { operation, deadline, max_tasks })),
                _ => None,
            };
            (f, kind)
        }
        "notify" => {
            let f = cx.fields(n, what, &NOTIFY_FIELDS);
            let url = match f.get("url").map(|u| (str_of(u), pos(u))) {
                Some((Some(u), _)) if u.starts_with("http://") || u.starts_with("https://") => Some(u.trim_end_matches('/').to_string()),
                Some((_, at)) => {
                    cx.err(at, format!("{what}: url must be an http:// or https:// URL"));
                    None
                }
                None => {
                    cx.err(pos(n), format!("{what}: notify needs a url"));
                    None
                }
            };
            let format = match f.get("format").map(|v| (str_of(v), pos(v))) {
                None | Some((Some("webhook"), _)) => Some(NotifyFormat::Webhook),
                Some((Some("alertmanager"), _)) => Some(NotifyFormat::Alertmanager),
                Some((_, at)) => {
                    cx.err(at, format!("{what}: format must be webhook or alertmanager"));
                    None
                }
            };
            let message = f.get("message").and_then(|m| text_of(m)).unwrap_or_default();
            let kind = match (url, format) {
                (Some(url), Some(format)) => Some(Action::Notify(NotifyAction { url, format, message })),
                _ => None,
            };
            (f, kind)
        }
        "offsets" => {
            let f = cx.fields(n, what, &OFFSETS_FIELDS);
            let kind = offsets(cx, n, &f, what).map(Action::Offsets);
            (f, kind)
        }
        "scale" => {
            let f = cx.fields(n, what, &SCALE_FIELDS);
            let target = f.get("target").and_then(|t| text_of(t));
            let to = match f.get("to").map(|t| (text_of(t), pos(t))) {
                None => Some(ScaleTo::Policy),
                Some((Some(t), at)) => match t.trim() {
                    "policy" => Some(ScaleTo::Policy),
                    "previous" => Some(ScaleTo::Previous),
                    n => match n.parse::<u32>() {
                        Ok(n) => Some(ScaleTo::Count(n)),
                        Err(_) => {
                            cx.err(at, format!("{what}: to must be policy, previous or a replica count"));
                            None
                        }
                    },
                },
                Some((None, at)) => {
                    cx.err(at, format!("{what}: to must be policy, previous or a replica count"));
                    None
                }
            };
            (f, to.map(|to| Action::Scale(ScaleAction { target, to })))
        }
        "flink" => {
            let f = cx.fields(n, what, &FLINK_FIELDS);
            let operation = match f.get("operation") {
                Some(o) => {
                    let op = str_of(o).and_then(|s| FlinkOp::ALL.into_iter().find(|c| c.as_str() == s));
                    if op.is_none() {
                        let names: Vec<&str> = FlinkOp::ALL.iter().map(|c| c.as_str()).collect();
                        cx.err(pos(o), format!("{what}: operation must be one of {}", names.join(", ")));
                    }
                    op
                }
                None => {
                    cx.err(pos(n), format!("{what}: flink needs an operation"));
                    None
                }
            };
            let args = match f.get("args").map(|a| &a.data) {
                None => Some(Vec::new()),
                Some(YamlDataOwned::Sequence(items)) => items.iter().map(text_of).collect::<Option<Vec<_>>>(),
                Some(_) => None,
            };
            if args.is_none() {
                cx.err(f.get("args").map_or(pos(n), |a| pos(a)), format!("{what}: args must be a list of strings"));
            }
            let parallelism = match f.get("parallelism") {
                None => None,
                Some(p) => match text_of(p).and_then(|t| t.trim().parse::<u32>().ok()).filter(|p| *p > 0) {
                    Some(v) => Some(v),
                    None => {
                        cx.err(pos(p), format!("{what}: parallelism must be a positive integer"));
                        None
                    }
                },
            };
            let jar = f.get("jar").and_then(|j| text_of(j));
            if operation.is_some_and(|o| o != FlinkOp::Savepoint) {
                if jar.is_none() {
                    cx.err(pos(n), format!("{what}: {} needs `jar` (the uploaded jar to resubmit)", operation.map_or("", |o| o.as_str())));
                }
                if operation == Some(FlinkOp::Rescale) && parallelism.is_none() {
                    cx.err(pos(n), format!("{what}: rescale needs `parallelism`"));
                }
            }
            let savepoint_timeout = f.get("savepoint_timeout").map_or(Some(Duration::from_secs(60)), |d| cx.positive_duration(d, &format!("{what}: savepoint_timeout")));
            let deadline = f.get("deadline").map_or(Some(Duration::from_secs(180)), |d| cx.positive_duration(d, &format!("{what}: deadline")));
            let kind = match (operation, args, savepoint_timeout, deadline) {
                (Some(operation), Some(args), Some(savepoint_timeout), Some(deadline)) => Some(Action::Flink(FlinkAction {
                    operation,
                    jar,
                    entry_class: f.get("entry_class").and_then(|e| text_of(e)),
                    args,
                    parallelism,
                    savepoint_timeout,
                    deadline,
                })),
                _ => None,
            };
            (f, kind)
        }
        other => {
            let hint = crate::suggest::nearest(other, ACTIONS).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            cx.err(pos(a), format!("{what}: unknown action `{other}`{hint}; expected one of: {}", ACTIONS.join(", ")));
            return None;
        }
    };
    let timeout = f.get("timeout").map_or(Some(DEFAULT_STEP_TIMEOUT), |t| cx.positive_duration(t, &format!("{what}: timeout")));
    let retries = match f.get("retries") {
        None => DEFAULT_RETRIES,
        Some(r) => match text_of(r).and_then(|t| t.trim().parse::<u32>().ok()) {
            Some(v) if v <= MAX_RETRIES => v,
            _ => {
                cx.err(pos(r), format!("{what}: retries must be an integer from 0 to {MAX_RETRIES}"));
                0
            }
        },
    };
    if cx.errors.len() != before {
        return None;
    }
    Some(Step { kind: StepKind::Act(kind?), timeout: timeout?, retries, line })
}

/// `action: offsets` (fields already checked against [`OFFSETS_FIELDS`]).
fn offsets(cx: &mut Ctx, n: &Node, f: &BTreeMap<String, &Node>, what: &str) -> Option<OffsetsAction> {
    let reset = match f.get("reset").map(|r| (str_of(r).map(str::trim), pos(r))) {
        Some((Some("skip-poison"), _)) => Some(OffsetsReset::SkipPoison),
        Some((Some("earliest"), _)) => Some(OffsetsReset::Earliest),
        Some((Some("latest"), _)) => Some(OffsetsReset::Latest),
        Some((Some(s), at)) if s.starts_with("shift-by ") => match s["shift-by ".len()..].trim().parse::<i64>() {
            Ok(v) if v != 0 => Some(OffsetsReset::ShiftBy(v)),
            _ => {
                cx.err(at, format!("{what}: reset: `shift-by N` needs a non-zero integer N"));
                None
            }
        },
        Some((Some(s), at)) if s.starts_with("rewind ") => match humantime::parse_duration(s["rewind ".len()..].trim()) {
            Ok(d) if !d.is_zero() && d <= crate::limits::MAX_DURATION => Some(OffsetsReset::Rewind(d)),
            _ => {
                cx.err(at, format!("{what}: reset: `rewind D` needs a positive duration D (e.g. rewind 1h)"));
                None
            }
        },
        Some((_, at)) => {
            cx.err(at, format!("{what}: reset must be skip-poison, earliest, latest, `shift-by N` or `rewind D`"));
            None
        }
        None => {
            cx.err(pos(n), format!("{what}: offsets needs a reset"));
            None
        }
    };
    let dlq = f.get("dlq").and_then(|d| str_of(d)).map(str::to_string);
    if reset == Some(OffsetsReset::SkipPoison) && dlq.is_none() {
        cx.err(pos(n), format!("{what}: reset: skip-poison needs a dlq topic (the poison record is copied there first)"));
    }
    let argv = |cx: &mut Ctx, key: &str| f.get(key).map(|c| cx.string_list(c, &format!("{what}: {key}")).into_iter().map(|(s, _)| s).collect::<Vec<String>>());
    let pause = match f.get("pause").map(|p| (str_of(p), pos(p))) {
        None | Some((Some("none"), _)) => Some(OffsetsPause::None),
        Some((Some("connect"), _)) => Some(OffsetsPause::Connect),
        Some((Some("command"), at)) => match (argv(cx, "pause_command"), argv(cx, "resume_command")) {
            (Some(p), Some(r)) if !p.is_empty() && !r.is_empty() => Some(OffsetsPause::Command { pause: p, resume: r }),
            _ => {
                cx.err(at, format!("{what}: pause: command needs pause_command and resume_command (argv lists)"));
                None
            }
        },
        Some((Some("scale"), _)) => Some(OffsetsPause::Scale { target: f.get("scale_target").and_then(|t| str_of(t)).map(str::to_string) }),
        Some((Some("flink"), at)) => {
            let jar = f.get("flink_jar").and_then(|j| str_of(j)).map(str::to_string);
            let args = argv(cx, "flink_args").unwrap_or_default();
            // A job resumed from its savepoint restores its Kafka offsets from it and would
            // undo the move: only a resubmission without it (state discarded) can run.
            let discard_state = match f.get("flink_state").map(|s| (str_of(s), pos(s))) {
                Some((Some("discard"), _)) => true,
                Some((_, at)) => {
                    cx.err(at, format!("{what}: flink_state must be discard: a Flink job resumed from its savepoint takes its Kafka offsets from the savepoint, not the group, and would undo the move"));
                    false
                }
                None => {
                    cx.err(at, format!("{what}: pause: flink needs flink_state: discard (the job is resubmitted without its savepoint so that its source reads the group's committed offsets; its other state is lost)"));
                    false
                }
            };
            match jar {
                Some(jar) => Some(OffsetsPause::Flink { jar, entry_class: f.get("flink_entry_class").and_then(|c| str_of(c)).map(str::to_string), args, discard_state }),
                None => {
                    cx.err(at, format!("{what}: pause: flink needs flink_jar (the uploaded jar to resubmit)"));
                    None
                }
            }
        }
        Some((_, at)) => {
            cx.err(at, format!("{what}: pause must be none, connect, command, scale or flink"));
            None
        }
    };
    // A field of another kind of pause would be ignored by the run: refused here instead.
    let only_for = |p: &OffsetsPause| -> &[&str] {
        match p {
            OffsetsPause::Command { .. } => &["pause_command", "resume_command"],
            OffsetsPause::Scale { .. } => &["scale_target"],
            OffsetsPause::Flink { .. } => &["flink_jar", "flink_entry_class", "flink_args", "flink_state"],
            OffsetsPause::None | OffsetsPause::Connect => &[],
        }
    };
    if let Some(p) = &pause {
        for key in ["pause_command", "resume_command", "scale_target", "flink_jar", "flink_entry_class", "flink_args", "flink_state"] {
            if let Some(v) = f.get(key).filter(|_| !only_for(p).contains(&key)) {
                cx.err(pos(v), format!("{what}: {key} does not apply to this pause (pause: {})", f.get("pause").and_then(|p| str_of(p)).unwrap_or("none")));
            }
        }
    }
    let count = |cx: &mut Ctx, key: &str, default: u64| match f.get(key) {
        None => default,
        Some(v) => match text_of(v).and_then(|t| t.trim().parse::<u64>().ok()) {
            Some(v) if v <= 1_000_000_000_000 => v,
            _ => {
                cx.err(pos(v), format!("{what}: {key}: expected a non-negative integer"));
                default
            }
        },
    };
    let max_partitions = count(cx, "max_partitions", 64) as usize;
    let max_skipped = count(cx, "max_skipped", 1_000);
    let max_replayed = count(cx, "max_replayed", 10_000_000);
    let dur = |cx: &mut Ctx, key: &str, default: Duration| f.get(key).map_or(Some(default), |d| cx.positive_duration(d, &format!("{what}: {key}")));
    let max_rewind_age = dur(cx, "max_rewind_age", Duration::from_secs(7 * 24 * 3600));
    let empty_deadline = dur(cx, "empty_deadline", Duration::from_secs(60));
    let verify_deadline = dur(cx, "verify_deadline", Duration::from_secs(120));
    Some(OffsetsAction {
        reset: reset?,
        dlq,
        pause: pause?,
        max_partitions,
        max_skipped,
        max_replayed,
        max_rewind_age: max_rewind_age?,
        empty_deadline: empty_deadline?,
        verify_deadline: verify_deadline?,
    })
}
