//! Flink's REST answers, as Flink 2.3 writes them: only the fields the Flink source
//! uses, unknown ones ignored. Parsing only; the source's pure core ([`super::flink`])
//! decides what they mean.

use serde::{Deserialize, Serialize};


/// `GET /jobs/overview`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobsOverview {
    pub jobs: Vec<JobOverview>,
}

/// One job of `GET /jobs/overview`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct JobOverview {
    pub jid: String,
    pub name: String,
    /// A `JobStatus` name (`RUNNING`, `CANCELED`…), kept as text so a state this code
    /// does not know still reaches the target detail.
    pub state: String,
    /// Unix milliseconds.
    #[serde(rename = "start-time")]
    pub start_time: i64,
    /// Unix milliseconds; -1 while the job has not ended.
    #[serde(rename = "end-time", default = "minus_one")]
    pub end_time: i64,
    /// Milliseconds: to now for running jobs, start to end for ended ones.
    #[serde(default)]
    pub duration: i64,
}

pub(super) fn minus_one() -> i64 {
    -1
}

/// `GET /overview`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ClusterOverview {
    pub taskmanagers: u64,
    #[serde(rename = "slots-total")]
    pub slots_total: u64,
    #[serde(rename = "slots-available")]
    pub slots_available: u64,
    #[serde(rename = "flink-version", default)]
    pub flink_version: String,
}

/// `GET /jobs/{jid}/checkpoints`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CheckpointStats {
    pub counts: CheckpointCounts,
    #[serde(default)]
    pub latest: LatestCheckpoints,
}

/// `counts` of `GET /jobs/{jid}/checkpoints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct CheckpointCounts {
    pub completed: u64,
    /// Includes checkpoints that failed to trigger (e.g. "Not all required tasks are
    /// currently running" right after submission), which never appear in
    /// `latest.failed` or the history.
    pub failed: u64,
    #[serde(default)]
    pub in_progress: u64,
    #[serde(default)]
    pub restored: u64,
    #[serde(default)]
    pub total: u64,
}

/// `latest` of `GET /jobs/{jid}/checkpoints`; each is `null` until there is one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct LatestCheckpoints {
    #[serde(default)]
    pub completed: Option<CompletedCheckpoint>,
    #[serde(default)]
    pub failed: Option<FailedCheckpoint>,
}

/// `latest.completed`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CompletedCheckpoint {
    pub id: u64,
    /// Unix milliseconds.
    pub trigger_timestamp: i64,
    /// Unix milliseconds of the last acknowledgement: when the checkpoint completed.
    pub latest_ack_timestamp: i64,
    /// Milliseconds.
    pub end_to_end_duration: i64,
    /// Bytes persisted by this checkpoint (incremental); absent before Flink 1.15.
    #[serde(default)]
    pub checkpointed_size: Option<u64>,
    /// Bytes of the full state.
    #[serde(default)]
    pub state_size: Option<u64>,
    #[serde(default)]
    pub external_path: Option<String>,
}

impl CompletedCheckpoint {
    pub fn size_bytes(&self) -> Option<u64> {
        self.checkpointed_size.or(self.state_size)
    }
}

/// `latest.failed`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct FailedCheckpoint {
    pub id: u64,
    /// Unix milliseconds.
    pub trigger_timestamp: i64,
    /// Unix milliseconds.
    pub failure_timestamp: i64,
    #[serde(default)]
    pub failure_message: Option<String>,
}

/// One entry of `GET /jobs/{jid}/metrics?get=…`; Flink writes every value as a string.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MetricValue {
    pub id: String,
    pub value: String,
}

/// Flink's `JobStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Initializing,
    Created,
    Running,
    Failing,
    Failed,
    Cancelling,
    Canceled,
    Finished,
    Restarting,
    Suspended,
    Reconciling,
}

impl JobState {
    pub const ALL: [JobState; 11] = [
        JobState::Initializing,
        JobState::Created,
        JobState::Running,
        JobState::Failing,
        JobState::Failed,
        JobState::Cancelling,
        JobState::Canceled,
        JobState::Finished,
        JobState::Restarting,
        JobState::Suspended,
        JobState::Reconciling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Initializing => "INITIALIZING",
            JobState::Created => "CREATED",
            JobState::Running => "RUNNING",
            JobState::Failing => "FAILING",
            JobState::Failed => "FAILED",
            JobState::Cancelling => "CANCELLING",
            JobState::Canceled => "CANCELED",
            JobState::Finished => "FINISHED",
            JobState::Restarting => "RESTARTING",
            JobState::Suspended => "SUSPENDED",
            JobState::Reconciling => "RECONCILING",
        }
    }

    /// `None` for a name this code does not know.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The job will not run again in this JobManager (Flink's `isTerminalState`:
    /// FINISHED, CANCELED, FAILED, and the locally terminal SUSPENDED).
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Finished | JobState::Canceled | JobState::Failed | JobState::Suspended)
    }
}

/// Whether a listed job is in a terminal state; an unknown state counts as running,
/// so its series are kept rather than silently dropped.
pub fn is_terminal(state: &str) -> bool {
    JobState::parse(state).is_some_and(JobState::is_terminal)
}

