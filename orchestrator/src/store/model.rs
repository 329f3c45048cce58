//! The records a [`Store`](super::Store) keeps and the state enums shared with the scheduler.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The state of a DAG run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Tasks are being run.
    Running,
    /// Every leaf task succeeded or was skipped.
    Success,
    /// A leaf task failed or had a failed upstream, the run was cancelled, or its orchestrator died.
    Failed,
}

/// The state of a task instance, as in Airflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Its trigger rule has not been decided yet (Airflow's "none").
    Pending,
    /// Its trigger rule is met; it waits for a free slot.
    Queued,
    /// A try is running.
    Running,
    /// A try succeeded.
    Success,
    /// The last try failed (or timed out, or was cancelled).
    Failed,
    /// A try failed and another follows after the retry delay.
    UpForRetry,
    /// Its trigger rule can no longer be met because upstream tasks failed.
    UpstreamFailed,
    /// Its trigger rule decided not to run it (or its run ended before it started).
    Skipped,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 8] = [
        Self::Pending,
        Self::Queued,
        Self::Running,
        Self::Success,
        Self::Failed,
        Self::UpForRetry,
        Self::UpstreamFailed,
        Self::Skipped,
    ];

    /// Whether the state is final for the run.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Failed | Self::UpstreamFailed | Self::Skipped
        )
    }

    /// The name used in the database, the CLI and templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::UpForRetry => "up_for_retry",
            Self::UpstreamFailed => "upstream_failed",
            Self::Skipped => "skipped",
        }
    }
}

impl RunState {
    /// The name used in the database and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for TaskState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

impl FromStr for RunState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Running, Self::Success, Self::Failed]
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `orchestrator run` or the web UI's trigger button.
    Manual,
    /// The cron scheduler.
    Scheduled,
    /// `orchestrator backfill`, or a backfill from the UI or API: one run per past slot.
    Backfill,
}

impl Trigger {
    /// The name used in run ids and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Scheduled => "scheduled",
            Self::Backfill => "backfill",
        }
    }
}

impl FromStr for Trigger {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manual" => Ok(Self::Manual),
            "scheduled" => Ok(Self::Scheduled),
            "backfill" => Ok(Self::Backfill),
            _ => Err(UnknownState(s.to_owned())),
        }
    }
}

/// The process that drives a run, to tell a live run from one whose orchestrator died.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so a
    /// reused pid is not mistaken for the owner.
    pub start_ticks: u64,
}

/// The lease of a serving process (`orchestrator serve`) on a shared state: the server counts as
/// alive while its lease runs, and renews it every heartbeat. Other servers take over the runs of
/// a server whose lease ran out (see [`Liveness`](super::Liveness)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerLease {
    /// The server.
    pub owner: Owner,
    /// When it took its first lease.
    pub started_at: DateTime<Utc>,
    /// When it last renewed it.
    pub renewed_at: DateTime<Utc>,
    /// When the lease runs out unless renewed.
    pub expires_at: DateTime<Utc>,
    /// Whether it had run out when it was read (by the database's clock where there is one).
    pub expired: bool,
}

/// A run to create.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// Proposed run id; the store appends `.2`, `.3`... if taken.
    pub run_id: String,
    /// The DAG.
    pub dag_id: String,
    /// The DAG file, if it came from one.
    pub dag_file: Option<PathBuf>,
    /// What started it.
    pub trigger: Trigger,
    /// The logical date (Airflow's): the schedule slot, or the trigger time.
    pub logical_date: DateTime<Utc>,
    /// Effective params (defaults with overrides applied).
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Task ids in topological order.
    pub task_ids: Vec<String>,
    /// The process that runs it.
    pub owner: Owner,
    /// Refuse to create the run when the DAG has this many running runs.
    pub max_active_runs: Option<u32>,
    /// When it starts.
    pub started_at: DateTime<Utc>,
    /// The DAG text it runs, stored as a version (content and hash) with the run, so history
    /// shows what it ran and a clear or resume runs the same DAG; `None` for DAGs built in code.
    pub dag_text: Option<String>,
}

/// A stored run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRecord {
    /// Unique id.
    pub run_id: String,
    /// The DAG.
    pub dag_id: String,
    /// The DAG file, if it came from one.
    pub dag_file: Option<PathBuf>,
    /// What started it.
    pub trigger: Trigger,
    /// Its state.
    pub state: RunState,
    /// The logical date.
    pub logical_date: DateTime<Utc>,
    /// Effective params.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End, once finished.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended the way it did (`cancelled by SIGINT`, `orchestrator died`...).
    pub note: Option<String>,
    /// The process that ran it.
    pub owner: Owner,
    /// The SHA-256 (hex) of the DAG text it ran (see [`DagVersion`]); `None` for runs stored
    /// before versions were kept, or of DAGs built in code.
    pub dag_hash: Option<String>,
}

/// The text of a DAG as some run ran it, by the SHA-256 of the text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DagVersion {
    /// SHA-256 of `text`, hex.
    pub hash: String,
    /// The DAG.
    pub dag_id: String,
    /// The DAG file's text.
    pub text: String,
}

/// What a repair of a finished or interrupted run does, see [`Store::repair_run`](super::Store::repair_run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairKind {
    /// `orchestrator clear`: chosen task instances go back to `pending` for new tries.
    Clear,
    /// `orchestrator mark`: one task instance is set to `success` or `failed` by hand.
    Mark,
    /// `orchestrator resume` or `serve` at start: a run whose orchestrator died is taken over.
    Resume,
}

impl RepairKind {
    /// The name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clear => "clear",
            Self::Mark => "mark",
            Self::Resume => "resume",
        }
    }
}

impl FromStr for RepairKind {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Clear, Self::Mark, Self::Resume]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A repair to apply to a run in one transaction; the caller (the engine) decides which tasks,
/// the store's [`rules`](super::rules) decide what that does to the records.
#[derive(Clone, Debug)]
pub struct Repair {
    /// What it is.
    pub kind: RepairKind,
    /// Task instances that go back to `pending` (their next try is a new try).
    pub reset: Vec<String>,
    /// A task instance set by hand to `success` or `failed`.
    pub mark: Option<(String, TaskState)>,
    /// Why (shown in the run's history; a mark's reason).
    pub reason: Option<String>,
    /// The process that drives the run from now on.
    pub owner: Owner,
    /// When.
    pub at: DateTime<Utc>,
}

/// One repair of a run, kept as its history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunAction {
    /// The run.
    pub run_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub kind: RepairKind,
    /// The tasks it reset (and the marked one).
    pub tasks: Vec<String>,
    /// The state a mark set.
    pub state: Option<TaskState>,
    /// The run's state before the repair (`running` for a run whose orchestrator died).
    pub from_state: RunState,
    /// Why.
    pub reason: Option<String>,
    /// The process that applied it (and drove the run after it).
    pub by: Owner,
}

/// A run's notes, written by people (the run page, `orchestrator notes`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunNotes {
    /// The text.
    pub text: String,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A change to a task instance.
#[derive(Clone, Debug, Default)]
pub struct TaskUpdate {
    /// The task.
    pub task_id: String,
    /// The try this update belongs to; 0 for state changes outside any try (pending, queued,
    /// skipped, upstream_failed).
    pub try_number: u32,
    /// The new state (`None` keeps the current one; used to attach a log path).
    pub state: Option<TaskState>,
    /// When it happened.
    pub at: Option<DateTime<Utc>>,
    /// Exit status of the try's process, when it ran one.
    pub exit_code: Option<i32>,
    /// Error message of a failed try.
    pub error: Option<String>,
    /// Outputs of a finished try.
    pub outputs: Option<serde_json::Map<String, serde_json::Value>>,
    /// The try's log file.
    pub log_path: Option<PathBuf>,
}

/// A task instance: one task in one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskInstance {
    /// The run.
    pub run_id: String,
    /// The task.
    pub task_id: String,
    /// Current state.
    pub state: TaskState,
    /// Tries started so far.
    pub try_number: u32,
    /// Start of the first try.
    pub started_at: Option<DateTime<Utc>>,
    /// End of the last try, once finished.
    pub ended_at: Option<DateTime<Utc>>,
    /// Exit status of the last try's process.
    pub exit_code: Option<i32>,
    /// Error of the last failed try.
    pub error: Option<String>,
    /// Outputs of the successful try.
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

/// One try of a task instance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskTry {
    /// The run.
    pub run_id: String,
    /// The task.
    pub task_id: String,
    /// 1-based try number.
    pub try_number: u32,
    /// The try's state (running, success, failed, up_for_retry).
    pub state: TaskState,
    /// Start.
    pub started_at: Option<DateTime<Utc>>,
    /// End.
    pub ended_at: Option<DateTime<Utc>>,
    /// Exit status of its process.
    pub exit_code: Option<i32>,
    /// Error message.
    pub error: Option<String>,
    /// Outputs.
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// Log file.
    pub log_path: Option<PathBuf>,
}

/// A process a task spawned (its own process group).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessRecord {
    /// The run.
    pub run_id: String,
    /// The task.
    pub task_id: String,
    /// Process id (also the process group id).
    pub pid: u32,
    /// Start time in clock ticks since boot, to detect pid reuse.
    pub start_ticks: u64,
    /// Host name.
    pub host: String,
}

/// Which runs to list.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only this DAG's runs.
    pub dag_id: Option<String>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Only runs started this way (e.g. `backfill`).
    pub trigger: Option<Trigger>,
    /// At most this many (newest first); 0 means no limit.
    pub limit: usize,
}
