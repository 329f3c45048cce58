//! The pipeline end to end: `orchestrator run dags/velostream_benchmark.toml` at the benchmark's
//! size on a fresh broker, while a thread scrapes the consumer's `/metrics` (lag as the consumer
//! sees it, insert latency, batch sizes) and samples the broker's memory. Figures come from the
//! run's state database: task outputs and timings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orchestrator::store::{RunFilter, RunState, SqliteStore, Store, TaskInstance, TaskState};
use serde::{Deserialize, Serialize};
use velostream_common::clickhouse::ClickHouseConfig;
use velostream_testkit::Storage;

use super::overhead::{mean, seconds};
use super::{Context, Rate};
use crate::cpu::{self, CpuRun, ProcessCpu};
use crate::error::BenchError;
use crate::exposition::Exposition;
use crate::{exec, http, machine};

/// The DAG this phase runs, relative to the repository.
pub const DAG: &str = "dags/velostream_benchmark.toml";
const DAG_ID: &str = "velostream_benchmark";

/// One task of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskTiming {
    /// Task id.
    pub id: String,
    /// Seconds from the run's start to the task's start.
    pub start: f64,
    /// The task's duration.
    pub seconds: f64,
    /// Seconds from its last upstream's end to its start (the scheduler's share); none for roots.
    pub gap: Option<f64>,
}

/// The pipeline's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineFigures {
    /// The run.
    pub run_id: String,
    /// Rows the producer had acknowledged.
    pub rows_produced: u64,
    /// `SELECT count() FROM table FINAL` after the run (the validation task's result).
    pub rows_in_clickhouse: u64,
    /// Rows the consumer dead-lettered.
    pub rows_dead_lettered: u64,
    /// The producer task: rows, bytes, seconds from its own summary.
    pub producer: Rate,
    /// The consumer: rows inserted over its active seconds (first message read to last insert).
    pub consumer: Rate,
    /// From the producer task's start to the lag sensor seeing 0: the data moving.
    pub data_seconds: f64,
    /// The whole run, provisioning and validation included.
    pub run_seconds: f64,
    /// Peak lag seen by the lag sensor (every 500 ms).
    pub peak_lag_sensor: u64,
    /// Peak of the consumer's summed `velostream_consumer_partition_lag` (scraped every 250 ms).
    pub peak_lag_metrics: Option<u64>,
    /// Mean duration of a ClickHouse insert (`velostream_consumer_insert_duration_seconds`).
    pub mean_insert_seconds: Option<f64>,
    /// Mean rows per insert (`velostream_consumer_batch_rows`).
    pub mean_batch_rows: Option<f64>,
    /// Inserts (`velostream_consumer_batches_total`).
    pub inserts: Option<u64>,
    /// Every task's timing, in the DAG's order.
    pub tasks: Vec<TaskTiming>,
    /// The broker's peak resident memory during the run (a fresh broker only).
    pub broker_peak_rss: Option<u64>,
    /// The broker's resident memory before the run, empty.
    pub broker_idle_rss: Option<u64>,
    /// The fresh broker's storage: `memory` or `durable` (Tansu on a local S3 server).
    #[serde(default = "memory")]
    pub broker_storage: String,
    /// The record format the producer wrote: `json` or `protobuf`.
    #[serde(default = "json")]
    pub format: String,
    /// CPU seconds of each process over the whole run (the producer's and the consumer's from
    /// their summaries, the broker's and ClickHouse's from `/proc` where the harness started them).
    #[serde(default)]
    pub cpu: Option<CpuRun>,
}

fn json() -> String {
    "json".into()
}

fn memory() -> String {
    Storage::Memory.name().to_string()
}

impl PipelineFigures {
    /// Mean scheduler gap over the tasks that have upstreams.
    pub fn mean_gap(&self) -> f64 {
        mean(self.tasks.iter().filter_map(|t| t.gap))
    }

    /// Largest scheduler gap.
    pub fn max_gap(&self) -> f64 {
        self.tasks.iter().filter_map(|t| t.gap).fold(0.0, f64::max)
    }

    /// The run's time outside the data movement: provisioning, consumer start, stop, validation.
    pub fn fixed_seconds(&self) -> f64 {
        (self.run_seconds - self.data_seconds).max(0.0)
    }
}

/// What the scraping thread saw.
#[derive(Debug, Default)]
struct Watch {
    peak_lag: Option<u64>,
    last: Option<Exposition>,
    broker_peak_rss: Option<u64>,
}

/// Runs the benchmark DAG at `ctx.rows` against `clickhouse` and a fresh broker with `storage`
/// (or the given one), the producer writing `format` records (`json` or `protobuf`);
/// `clickhouse_pid` is the fresh server's, for its CPU seconds.
pub fn run(
    ctx: &Context,
    clickhouse: &ClickHouseConfig,
    clickhouse_pid: Option<u32>,
    storage: Storage,
    format: &str,
) -> Result<PipelineFigures, BenchError> {
    let program = ctx.programs.path("orchestrator")?;
    ctx.programs
        .check(&["velostream-producer", "velostream-consumer"])?;
    let broker = ctx
        .brokers
        .is_none()
        .then(|| velostream_testkit::Kafka::start_with(storage));
    let brokers = ctx
        .brokers
        .clone()
        .or_else(|| broker.as_ref().map(|b| b.bootstrap.clone()))
        .unwrap_or_default();
    let broker_pid = broker.as_ref().and_then(|b| b.pid());
    let broker_idle_rss = broker_pid.and_then(machine::rss_bytes);
    let consumer_http = format!("127.0.0.1:{}", velostream_testkit::free_port());
    let state = ctx.work.join("pipeline.db");
    let dag = ctx.repo.join(DAG);
    let params = [
        ("local_infra", "false".to_string()),
        ("input", ctx.input.display().to_string()),
        ("rows", ctx.rows.to_string()),
        // Passes enough to reach `rows`; the producer stops at `rows`.
        ("repeat", ctx.rows.max(1).to_string()),
        ("topic", "bench-taxi".into()),
        ("table", "bench_trips".into()),
        ("group", "velostream-bench".into()),
        ("partitions", ctx.partitions.to_string()),
        ("batch_rows", ctx.batch_rows.to_string()),
        ("consumer_http", consumer_http.clone()),
        ("format", format.to_string()),
    ];
    let mut cmd = super::dag_run(
        &program, &dag, &state, &params, &brokers, clickhouse, &ctx.work,
    );
    let log = ctx.work.join("pipeline.log");

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let addr = consumer_http.clone();
        std::thread::spawn(move || watch(&addr, broker_pid, &stop))
    };
    let broker_meter = cpu::meter(broker_pid);
    let clickhouse_meter = cpu::meter(clickhouse_pid);
    let outcome = exec::spawn_logged(&mut cmd, &log).and_then(|mut child| {
        let status = child.wait().map_err(|source| BenchError::Spawn {
            program: exec::describe(&cmd),
            source,
        })?;
        Ok(status)
    });
    let broker_cpu = broker_meter.and_then(|m| m.seconds());
    let clickhouse_cpu = clickhouse_meter.and_then(|m| m.seconds());
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap_or_default();
    let status = outcome?;

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
    let Some(run) = run else {
        exec::check_status(&cmd, status, &log)?;
        return Err(BenchError::Results {
            program: "orchestrator".into(),
            path: state,
            message: "no run of the benchmark DAG".into(),
        });
    };
    let tis = store.task_instances(&run.run_id)?;
    if run.state != RunState::Success {
        let detail = tis
            .iter()
            .filter(|t| t.state != TaskState::Success)
            .map(|t| {
                format!(
                    "{} {}{}",
                    t.task_id,
                    t.state,
                    t.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
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

    let by_id: HashMap<&str, &TaskInstance> = tis.iter().map(|t| (t.task_id.as_str(), t)).collect();
    let task = |id: &str| {
        by_id.get(id).copied().ok_or_else(|| BenchError::Results {
            program: "orchestrator".into(),
            path: state.clone(),
            message: format!("the run has no task {id}: did {DAG} change?"),
        })
    };
    let out_u64 = |t: &TaskInstance, key: &str| t.outputs.get(key).and_then(json_u64);
    let out_f64 = |t: &TaskInstance, key: &str| {
        t.outputs
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let produce = task("produce")?;
    let wait = task("wait_lag_zero")?;
    let stop_consumer = task("stop_consumer")?;
    let validate = task("validate_count")?;

    let upstreams = upstreams_of(&dag);
    let run_start = run.started_at;
    let ends: HashMap<&str, _> = tis
        .iter()
        .filter_map(|t| Some((t.task_id.as_str(), t.ended_at?)))
        .collect();
    let tasks = tis
        .iter()
        .filter_map(|t| {
            let (start, end) = (t.started_at?, t.ended_at?);
            let gap = upstreams
                .get(&t.task_id)
                .and_then(|ups| ups.iter().filter_map(|u| ends.get(u.as_str())).max())
                .map(|last| seconds(start - *last));
            Some(TaskTiming {
                id: t.task_id.clone(),
                start: seconds(start - run_start),
                seconds: seconds(end - start),
                gap,
            })
        })
        .collect();

    let consumer_rows = out_u64(stop_consumer, "rows_inserted").unwrap_or(0);
    let run_seconds = run.ended_at.map_or(0.0, |end| seconds(end - run_start));
    let cpu_secs = |t: &TaskInstance| {
        t.outputs
            .get("cpu_secs")
            .and_then(serde_json::Value::as_f64)
    };
    let cpu = CpuRun {
        rows: out_u64(produce, "rows").unwrap_or(0),
        wall_seconds: run_seconds,
        cpu: ProcessCpu {
            producer: cpu_secs(produce),
            broker: broker_cpu,
            consumer: cpu_secs(stop_consumer),
            clickhouse: clickhouse_cpu,
        },
    };
    let last = seen.last.as_ref();
    Ok(PipelineFigures {
        run_id: run.run_id.clone(),
        rows_produced: out_u64(produce, "rows").unwrap_or(0),
        rows_in_clickhouse: out_u64(validate, "actual").unwrap_or(0),
        rows_dead_lettered: out_u64(stop_consumer, "rows_dead_lettered").unwrap_or(0),
        producer: Rate {
            rows: out_u64(produce, "rows").unwrap_or(0),
            bytes: out_u64(produce, "bytes").unwrap_or(0),
            seconds: out_f64(produce, "seconds"),
            cpu_seconds: None,
        },
        consumer: Rate {
            rows: consumer_rows,
            bytes: 0,
            seconds: out_f64(stop_consumer, "active_secs"),
            cpu_seconds: None,
        },
        data_seconds: match (produce.started_at, wait.ended_at) {
            (Some(a), Some(b)) => seconds(b - a),
            _ => 0.0,
        },
        run_seconds,
        peak_lag_sensor: out_u64(wait, "peak_lag").unwrap_or(0),
        peak_lag_metrics: seen.peak_lag,
        mean_insert_seconds: last
            .and_then(|e| e.histogram_mean("velostream_consumer_insert_duration_seconds")),
        mean_batch_rows: last.and_then(|e| e.histogram_mean("velostream_consumer_batch_rows")),
        inserts: last
            .and_then(|e| e.sum("velostream_consumer_batches_total"))
            .map(|v| v as u64),
        tasks,
        broker_peak_rss: seen.broker_peak_rss,
        broker_idle_rss,
        broker_storage: storage.name().to_string(),
        format: format.to_string(),
        cpu: Some(cpu),
    })
}

fn json_u64(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().map(|f| f as u64))
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Each task's upstream ids, from the DAG file (empty if it no longer loads).
fn upstreams_of(dag: &std::path::Path) -> HashMap<String, Vec<String>> {
    match orchestrator::dag::load(dag) {
        Ok(d) => d
            .tasks
            .iter()
            .map(|t| (t.id.clone(), t.depends_on.clone()))
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "Cannot load the DAG for its dependencies; no scheduler gaps");
            HashMap::new()
        }
    }
}

/// Scrapes the consumer every 250 ms until `stop`.
fn watch(addr: &str, broker_pid: Option<u32>, stop: &AtomicBool) -> Watch {
    let mut seen = Watch::default();
    while !stop.load(Ordering::Relaxed) {
        if let Ok((200, body)) = http::get(addr, "/metrics", Duration::from_secs(1))
            && let Ok(exposition) = Exposition::parse(&body)
        {
            if let Some(lag) = exposition.sum("velostream_consumer_partition_lag") {
                let lag = lag.max(0.0) as u64;
                seen.peak_lag = Some(seen.peak_lag.map_or(lag, |p| p.max(lag)));
            }
            seen.last = Some(exposition);
        }
        if let Some(rss) = broker_pid.and_then(machine::rss_bytes) {
            seen.broker_peak_rss = Some(seen.broker_peak_rss.map_or(rss, |p| p.max(rss)));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    seen
}

/// Where the phase keeps its state database (for `orchestrator logs`).
pub fn state_db(ctx: &Context) -> PathBuf {
    ctx.work.join("pipeline.db")
}
