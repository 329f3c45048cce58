//! Task kinds: the closed set of things a task can do. [`TaskKind`] has one variant per kind, each
//! holding the kind's config struct (serde, `deny_unknown_fields`, a doc comment per field), and
//! every config implements [`Operator`].
//!
//! Adding a kind: write `operators/<kind>.rs` with its config and `impl Operator`, add its `mod`
//! line, a variant to [`TaskKind`] (with `#[serde(rename = "<kind name>")]`) and an arm to
//! `dispatch!`. The loader, templating and the scheduler need nothing else.
//!
//! Before `execute` the engine renders `{{ ... }}` templates in every string of the config, so an
//! operator sees final values; `validate` (at load time) sees the raw template text.

pub mod clickhouse;
mod command;
mod context;
mod error_tail;
pub mod http;
pub mod kafka;
mod noop;
pub mod process_spawn;
pub mod process_stop;
mod secrets;

use std::fmt;
use std::future::Future;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use command::CommandConfig;
pub use context::{
    Connections, DEFAULT_KILL_GRACE, KafkaConnection, TaskContext, TaskContextBuilder,
};
pub use noop::{NoopConfig, SleepConfig};
pub use secrets::{MASK, Secrets, is_secret_name};

use crate::process::{ExitInfo, ProcessError};

/// One task's kind and its own fields. Deserialized from the task table minus the common fields
/// (`id`, `kind`, `depends_on`, retries, timeout, trigger rule...) as `{ "<kind>": { fields } }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskKind {
    /// Runs a program to completion; success iff it exits 0.
    #[serde(rename = "command")]
    Command(CommandConfig),
    /// Does nothing (optionally fails, or sets outputs): for tests and joins.
    #[serde(rename = "noop")]
    Noop(NoopConfig),
    /// Waits for a duration: for tests.
    #[serde(rename = "sleep")]
    Sleep(SleepConfig),
    /// Makes a Kafka topic exist with the partitions, replication and config asked for.
    #[serde(rename = "kafka.create_topic")]
    KafkaCreateTopic(kafka::CreateTopic),
    /// Deletes a Kafka topic.
    #[serde(rename = "kafka.delete_topic")]
    KafkaDeleteTopic(kafka::DeleteTopic),
    /// Sensor: waits until a consumer group's lag on a topic is at most a threshold.
    #[serde(rename = "kafka.wait_lag")]
    KafkaWaitLag(kafka::WaitLag),
    /// Runs SQL statements, inline or from a `.sql` file; a small last result becomes outputs.
    #[serde(rename = "clickhouse.sql")]
    ClickHouseSql(clickhouse::ClickHouseSql),
    /// Compares a query's value with an expected one.
    #[serde(rename = "clickhouse.assert")]
    ClickHouseAssert(clickhouse::ClickHouseAssert),
    /// Starts a long-running program in the background and succeeds once it is ready.
    #[serde(rename = "process.spawn")]
    ProcessSpawn(process_spawn::ProcessSpawn),
    /// Stops a program started by a process.spawn task: SIGTERM, grace, SIGKILL.
    #[serde(rename = "process.stop")]
    ProcessStop(process_stop::ProcessStop),
    /// An HTTP request with an expected status: health checks.
    #[serde(rename = "http.check")]
    HttpCheck(http::HttpCheck),
}

/// Runs `$body` with `$op` bound to the variant's config, for every kind.
macro_rules! dispatch {
    ($kind:expr, $op:ident => $body:expr) => {
        match $kind {
            TaskKind::Command($op) => $body,
            TaskKind::Noop($op) => $body,
            TaskKind::Sleep($op) => $body,
            TaskKind::KafkaCreateTopic($op) => $body,
            TaskKind::KafkaDeleteTopic($op) => $body,
            TaskKind::KafkaWaitLag($op) => $body,
            TaskKind::ClickHouseSql($op) => $body,
            TaskKind::ClickHouseAssert($op) => $body,
            TaskKind::ProcessSpawn($op) => $body,
            TaskKind::ProcessStop($op) => $body,
            TaskKind::HttpCheck($op) => $body,
        }
    };
}

impl TaskKind {
    /// The kind's name as written in DAG files.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Command(_) => "command",
            Self::Noop(_) => "noop",
            Self::Sleep(_) => "sleep",
            Self::KafkaCreateTopic(_) => "kafka.create_topic",
            Self::KafkaDeleteTopic(_) => "kafka.delete_topic",
            Self::KafkaWaitLag(_) => "kafka.wait_lag",
            Self::ClickHouseSql(_) => "clickhouse.sql",
            Self::ClickHouseAssert(_) => "clickhouse.assert",
            Self::ProcessSpawn(_) => "process.spawn",
            Self::ProcessStop(_) => "process.stop",
            Self::HttpCheck(_) => "http.check",
        }
    }
}

impl Operator for TaskKind {
    fn validate(&self, ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        dispatch!(self, op => op.validate(ctx))
    }

    fn referenced_tasks(&self) -> Vec<&str> {
        dispatch!(self, op => op.referenced_tasks())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        dispatch!(self, op => op.execute(ctx).await)
    }
}

/// What every task kind does.
pub trait Operator {
    /// Field checks at load time beyond serde (zero partitions, both `program` and `shell`...).
    /// Strings may still hold `{{ ... }}` templates here.
    fn validate(&self, _ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        Vec::new()
    }

    /// Task ids this kind refers to by name (e.g. process.stop's target). The loader checks that
    /// each exists and is upstream of the task, like a template reference.
    fn referenced_tasks(&self) -> Vec<&str> {
        Vec::new()
    }

    /// Does the work. Must return soon after `ctx.cancelled()` fires (timeout or run cancel),
    /// with [`OperatorError::Cancelled`] or the error that ended it.
    fn execute(&self, ctx: &TaskContext) -> impl Future<Output = Result<(), OperatorError>> + Send;
}

/// What an operator's `validate` may look at.
#[derive(Clone, Copy, Debug)]
pub struct ValidateContext<'a> {
    /// The task being validated.
    pub task_id: &'a str,
    /// The DAG file's directory (relative paths such as `.sql` files resolve against it).
    pub dag_dir: &'a Path,
    /// Every task id of the DAG.
    pub task_ids: &'a [String],
    /// The DAG's params with their defaults.
    pub params: &'a serde_json::Map<String, serde_json::Value>,
}

/// A problem found by [`Operator::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The field at fault (used to point at its line and column), or `None` for the whole task.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A problem with the task as a whole.
    pub fn task(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a task try failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The operator decided it failed.
    #[error("{0}")]
    Failed(String),
    /// A program exited unsuccessfully.
    #[error("{program} failed with {exit}")]
    Exit {
        /// The program.
        program: String,
        /// How it ended.
        exit: ExitInfo,
    },
    /// `ctx.cancelled()` fired and the operator stopped.
    #[error("cancelled")]
    Cancelled,
    /// The operator decided the task should be skipped rather than failed (a sensor's
    /// `soft_fail`, as Airflow's `AirflowSkipException`); the message says why.
    #[error("skipped: {0}")]
    Skipped(String),
    /// Supervising a process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// Anything else, with what was being done.
    #[error("{context}: {source}")]
    Other {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl OperatorError {
    /// A failure with a message.
    pub fn failed(message: impl fmt::Display) -> Self {
        Self::Failed(message.to_string())
    }

    /// A failure caused by `source` while doing `context`.
    pub fn other(
        context: impl fmt::Display,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Other {
            context: context.to_string(),
            source: source.into(),
        }
    }
}
