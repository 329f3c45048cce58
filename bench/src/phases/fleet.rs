//! A consumer fleet on the same partitions: the topic is filled once with `velostream-producer`,
//! then `bench/dags/consumer_fleet.toml` drains it into a fresh table with 1, 2 and 3 consumer
//! processes in one group (process.spawn `replicas`), one after the other on the same broker and
//! ClickHouse. Each run must leave exactly the rows produced. The fleet's rate is the rows over
//! its active window (the longest of its consumers' first-message-to-last-insert times); the CPU
//! seconds the consumers, ClickHouse and the broker spent during each run say where the time
//! goes.

use std::process::Command;

use orchestrator::store::{RunFilter, RunState, SqliteStore, Store, TaskState};
use serde::{Deserialize, Serialize};
use velostream_common::clickhouse::ClickHouseConfig;
use velostream_common::process::cpu_seconds;

use super::Context;
use crate::error::BenchError;
use crate::exec;

/// The DAG this phase runs, relative to the repository.
pub const DAG: &str = "bench/dags/consumer_fleet.toml";
const DAG_ID: &str = "velostream_consumer_fleet";

/// The fleet sizes measured.
pub const SIZES: [u32; 3] = [1, 2, 3];

/// CPU seconds spent while one fleet drained the topic (the whole DAG run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSeconds {
    /// Every consumer process of the fleet, summed.
    pub consumers: f64,
    /// The ClickHouse server (a fresh one only).
    pub clickhouse: Option<f64>,
    /// The broker (a fresh one only).
    pub broker: Option<f64>,
}

/// One fleet size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetRun {
    /// Consumer processes in the group.
    pub consumers: u32,
    /// Rows in the table at the end (`count() FINAL`, checked equal to the rows produced).
    pub rows: u64,
    /// The longest first-message-to-last-insert time of the fleet's consumers.
    pub active_seconds: f64,
    /// From the fleet being ready (every /health answering) to the lag sensor seeing 0: the
    /// group's forming and rebalancing included.
    pub drain_seconds: f64,
    /// Messages the consumers read, summed (above `rows` when partitions moved mid-stream and a
    /// new owner read again what the last had not recorded).
    pub rows_read: u64,
    /// Each consumer's rows inserted, in replica order.
    pub rows_inserted: Vec<u64>,
    /// CPU seconds during the run.
    pub cpu: CpuSeconds,
    /// Wall seconds of the whole DAG run (the CPU seconds' window).
    pub run_seconds: f64,
}

impl FleetRun {
    /// Rows per second of the fleet while it was active.
    pub fn rows_per_sec(&self) -> f64 {
        if self.active_seconds > 0.0 {
            self.rows as f64 / self.active_seconds
        } else {
            0.0
        }
    }
}

/// The phase's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetFigures {
    /// Partitions of the topic.
    pub partitions: u32,
    /// Rows per ClickHouse insert of each consumer.
    pub batch_rows: u64,
    /// One run per fleet size, in [`SIZES`] order.
    pub runs: Vec<FleetRun>,
}

/// Fills a topic with `ctx.rows` rows, then drains it with each fleet size of [`SIZES`].
/// `clickhouse_pid` is the fresh server's, for its CPU time.
pub fn run(
    ctx: &Context,
    clickhouse: &ClickHouseConfig,
    clickhouse_pid: Option<u32>,
) -> Result<FleetFigures, BenchError> {
    let orchestrator = ctx.programs.path("orchestrator")?;
    let producer = ctx.programs.path("velostream-producer")?;
    ctx.programs.check(&["velostream-consumer"])?;
    let broker = ctx.brokers.is_none().then(velostream_testkit::Kafka::start);
    let brokers = ctx
        .brokers
        .clone()
        .or_else(|| broker.as_ref().map(|b| b.bootstrap.clone()))
        .unwrap_or_default();
    let broker_pid = broker.as_ref().and_then(|b| b.pid());
    let topic = "bench-fleet";

    tracing::info!(rows = ctx.rows, topic, "Fleet: filling the topic");
    let mut fill = Command::new(&producer);
    fill.arg("--brokers")
        .arg(&brokers)
        .args(["--topic", topic, "--create-topic"])
        .arg("--partitions")
        .arg(ctx.partitions.to_string())
        .arg("--repeat")
        .arg(ctx.rows.max(1).to_string())
        .arg("--limit")
        .arg(ctx.rows.to_string())
        .args(["--progress", "none"])
        .arg(&ctx.input);
    exec::run_logged(&mut fill, &ctx.work.join("fleet-fill.log"))?;

    let mut runs = Vec::new();
    for consumers in SIZES {
        let state = ctx.work.join(format!("fleet-{consumers}.db"));
        let prefix = velostream_testkit::free_port_block(consumers as u16);
        let params = [
            ("topic", topic.to_string()),
            ("rows", ctx.rows.to_string()),
            ("consumers", consumers.to_string()),
            ("group", format!("bench-fleet-{consumers}")),
            ("table", "bench_fleet_trips".into()),
            ("batch_rows", ctx.batch_rows.to_string()),
            ("consumer_http", format!("{prefix}{{{{ replica }}}}")),
        ];
        let mut cmd = super::dag_run(
            &orchestrator,
            &ctx.repo.join(DAG),
            &state,
            &params,
            &brokers,
            clickhouse,
            &ctx.work,
        );
        let log = ctx.work.join(format!("fleet-{consumers}.log"));
        let ch_before = clickhouse_pid.and_then(cpu_seconds);
        let broker_before = broker_pid.and_then(cpu_seconds);
        let outcome = exec::spawn_logged(&mut cmd, &log).and_then(|mut child| {
            child.wait().map_err(|source| BenchError::Spawn {
                program: exec::describe(&cmd),
                source,
            })
        });
        let status = outcome?;
        let delta =
            |before: Option<f64>, pid: Option<u32>| Some(pid.and_then(cpu_seconds)? - before?);
        let clickhouse_cpu = delta(ch_before, clickhouse_pid);
        let broker_cpu = delta(broker_before, broker_pid);

        let store = SqliteStore::open(&state)?;
        let run = store
            .runs(&RunFilter {
                dag_id: Some(DAG_ID.into()),
                state: None,
                trigger: None,
                limit: 1,
            })?
            .into_iter()
            .next();
        let results = |message: String| BenchError::Results {
            program: "orchestrator".into(),
            path: state.clone(),
            message,
        };
        let Some(run) = run else {
            exec::check_status(&cmd, status, &log)?;
            return Err(results(format!("no run of {DAG}")));
        };
        let tis = store.task_instances(&run.run_id)?;
        if run.state != RunState::Success {
            let detail = tis
                .iter()
                .filter(|t| t.state != TaskState::Success)
                .map(|t| {
                    format!(
                        "{} {} ({})",
                        t.task_id,
                        t.state,
                        t.error.as_deref().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(BenchError::RunFailed {
                run_id: run.run_id,
                state: run.state.to_string(),
                detail,
                state_db: state,
            });
        }
        exec::check_status(&cmd, status, &log)?;
        let task = |id: &str| {
            tis.iter()
                .find(|t| t.task_id == id)
                .ok_or_else(|| results(format!("the run has no task {id}: did {DAG} change?")))
        };
        let (spawn, wait, stop_task, validate) = (
            task("start_consumer")?,
            task("wait_lag_zero")?,
            task("stop_consumer")?,
            task("validate_count")?,
        );
        // One consumer reports its figures as they are; a fleet keeps each one's under by_replica.
        let replicas: Vec<serde_json::Map<String, serde_json::Value>> =
            match stop_task.outputs.get("by_replica") {
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .filter_map(|v| v.as_object().cloned())
                    .collect(),
                _ => vec![stop_task.outputs.clone()],
            };
        let num = |o: &serde_json::Map<String, serde_json::Value>, k: &str| {
            o.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
        };
        let seconds = |a: Option<chrono::DateTime<chrono::Utc>>,
                       b: Option<chrono::DateTime<chrono::Utc>>| match (a, b)
        {
            (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1e3,
            _ => 0.0,
        };
        let fleet = FleetRun {
            consumers,
            rows: validate
                .outputs
                .get("actual")
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                .ok_or_else(|| results("validate_count has no `actual`".into()))?,
            active_seconds: replicas
                .iter()
                .map(|o| num(o, "active_secs"))
                .fold(0.0, f64::max),
            drain_seconds: seconds(spawn.ended_at, wait.ended_at),
            rows_read: replicas
                .iter()
                .map(|o| num(o, "rows_consumed") as u64)
                .sum(),
            rows_inserted: replicas
                .iter()
                .map(|o| num(o, "rows_inserted") as u64)
                .collect(),
            cpu: CpuSeconds {
                // Each consumer's own count (its summary's `cpu_secs`).
                consumers: replicas.iter().map(|o| num(o, "cpu_secs")).sum(),
                clickhouse: clickhouse_cpu,
                broker: broker_cpu,
            },
            run_seconds: seconds(Some(run.started_at), run.ended_at),
        };
        tracing::info!(
            consumers,
            rows_per_sec = fleet.rows_per_sec().round(),
            active_seconds = fleet.active_seconds,
            drain_seconds = fleet.drain_seconds,
            consumer_cpu = fleet.cpu.consumers,
            clickhouse_cpu = ?fleet.cpu.clickhouse,
            "Fleet measured"
        );
        runs.push(fleet);
    }
    Ok(FleetFigures {
        partitions: ctx.partitions,
        batch_rows: ctx.batch_rows,
        runs,
    })
}
