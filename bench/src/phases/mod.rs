//! The benchmark's phases, each measuring ours beside its baseline in the same run:
//! [`producer`] (a plain rdkafka flood vs the producer alone), [`consumer`] (a raw ClickHouse
//! insert and a small-batch consumer vs the consumer alone), [`overhead`] (a chain of tasks
//! through the orchestrator vs spawning the same program directly), [`pipeline`] (the
//! benchmark DAG end to end), [`cpu`] (each program alone: its CPU per row and its profile, beside
//! the pipeline's) and [`fleet`] (1, 2 and 3 consumers in one group on the same partitions, each
//! size against the one consumer).

pub mod consumer;
pub mod cpu;
pub mod fleet;
pub mod overhead;
pub mod pipeline;
pub mod producer;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use velostream_common::clickhouse::ClickHouseConfig;

use crate::programs::Programs;

/// What every phase needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The workspace binaries.
    pub programs: Programs,
    /// The repository (for `dags/`).
    pub repo: PathBuf,
    /// Scratch folder: logs, state databases, JSON results.
    pub work: PathBuf,
    /// The Parquet input.
    pub input: PathBuf,
    /// Rows per measurement.
    pub rows: u64,
    /// Partitions of every topic.
    pub partitions: u32,
    /// Rows per ClickHouse insert in the pipeline and the consumer's own measurement.
    pub batch_rows: u64,
    /// The broker to use; `None` starts a fresh one from the test harness per phase.
    pub brokers: Option<String>,
    /// The ClickHouse server to use; `None` starts one from the test harness.
    pub clickhouse: Option<ClickHouseConfig>,
}

/// Rows moved in some time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Rows.
    pub rows: u64,
    /// Payload bytes (0 where not measured).
    pub bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// CPU seconds of the measuring process, where measured.
    pub cpu_seconds: Option<f64>,
}

impl Rate {
    /// Rows per second.
    pub fn rows_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.rows as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Megabytes (10^6) per second.
    pub fn mb_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / 1e6 / self.seconds
        } else {
            0.0
        }
    }

    /// Seconds this rate takes for `rows`.
    pub fn seconds_for(&self, rows: u64) -> f64 {
        let r = self.rows_per_sec();
        if r > 0.0 { rows as f64 / r } else { f64::NAN }
    }
}

/// `orchestrator run DAG --no-progress --state STATE --param k=v...` against `brokers` and
/// `clickhouse`, in `work`: how the pipeline and fleet phases run their DAGs.
pub(crate) fn dag_run(
    orchestrator: &Path,
    dag: &Path,
    state: &Path,
    params: &[(&str, String)],
    brokers: &str,
    clickhouse: &ClickHouseConfig,
    work: &Path,
) -> Command {
    let mut cmd = Command::new(orchestrator);
    cmd.arg("run")
        .arg(dag)
        .arg("--no-progress")
        .arg("--state")
        .arg(state);
    for (k, v) in params {
        cmd.arg("--param").arg(format!("{k}={v}"));
    }
    cmd.env("KAFKA_BROKERS", brokers)
        .env("CLICKHOUSE_URL", &clickhouse.url)
        .env("CLICKHOUSE_USER", &clickhouse.user)
        .env("CLICKHOUSE_PASSWORD", &clickhouse.password)
        .env("CLICKHOUSE_DATABASE", &clickhouse.database)
        .current_dir(work);
    cmd
}

/// Awaits one ClickHouse request on a one-thread runtime of its own (the phases are synchronous).
pub(crate) fn clickhouse_request<T, E: std::fmt::Display>(
    config: &ClickHouseConfig,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, crate::error::BenchError> {
    let err = |message: String| crate::error::BenchError::ClickHouse {
        url: config.url.clone(),
        message,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(e.to_string()))?
        .block_on(request)
        .map_err(|e| err(e.to_string()))
}
