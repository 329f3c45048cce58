//! The whole benchmark: servers, versions, then each phase in turn, into one [`Report`].

use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use velostream_common::clickhouse::ClickHouseConfig;

use velostream_testkit::{Lane, Storage};

use crate::error::BenchError;
use crate::machine::{self, Machine, Versions};
use crate::phases::{self, Context};
use crate::report::{Report, Settings};

/// The phases a benchmark can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// The orchestrator's overhead per task against direct spawns.
    Overhead,
    /// The producer alone against a plain rdkafka flood (producer-bench).
    Producer,
    /// The consumer alone against a raw insert and a small-batch consumer (consumer-bench).
    Consumer,
    /// The benchmark DAG end to end.
    Pipeline,
    /// The producer and the consumer alone: CPU per row of every process, and profiles.
    Cpu,
    /// 1, 2 and 3 consumers in one group draining the same filled topic.
    Fleet,
}

impl Phase {
    /// Every phase, in the order they run.
    pub const ALL: [Phase; 6] = [
        Phase::Overhead,
        Phase::Producer,
        Phase::Consumer,
        Phase::Pipeline,
        Phase::Cpu,
        Phase::Fleet,
    ];

    /// The programs the phase runs.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Self::Overhead => &["orchestrator"],
            Self::Producer => &["producer-bench"],
            Self::Consumer => &["consumer-bench"],
            Self::Pipeline | Self::Fleet => {
                &["orchestrator", "velostream-producer", "velostream-consumer"]
            }
            Self::Cpu => &["velostream-producer", "velostream-consumer"],
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The shared context of the phases (rows, partitions, programs, endpoints...).
    pub context: Context,
    /// The phases to run.
    pub phases: Vec<Phase>,
    /// Tasks of the `command` chain.
    pub command_tasks: usize,
    /// Tasks of the `noop` chain.
    pub noop_tasks: usize,
    /// Also flood 200-byte messages (the reference).
    pub flood200: bool,
    /// Sizes at which to run the benchmark DAG again, after the main phases.
    pub extra_pipeline_rows: Vec<u64>,
    /// Run the benchmark DAG again on a durable broker (Tansu on a local S3 server), beside the
    /// memory broker's run, when the harness starts the broker.
    pub durable_pipeline: bool,
    /// Run the benchmark DAG again with protobuf records, beside the JSON run.
    pub protobuf_pipeline: bool,
    /// Profile the CPU phase's processes with `perf`.
    pub profile: bool,
    /// Rounds of each producer phase (the median counts).
    pub producer_rounds: u32,
    /// Rows the small-batch consumer baseline reads.
    pub small_batch_rows: u64,
    /// How long the consumer's memory run freezes ClickHouse.
    pub memory_freeze: std::time::Duration,
    /// The ClickHouse lanes of fresh servers: the first serves every phase, the consumer phase
    /// runs again on each other one (its ceiling and our share there).
    pub lanes: Vec<Lane>,
    /// The command line, for the report.
    pub command: String,
    /// A note for the report.
    pub note: Option<String>,
}

/// Runs the configured phases and gathers the report.
pub fn run(config: &Config) -> Result<Report, BenchError> {
    let started = Instant::now();
    let date = Utc::now();
    let machine = Machine::detect();
    let ctx = &config.context;
    let wants = |p: Phase| config.phases.contains(&p);
    let lane = config.lanes.first().copied().unwrap_or_else(Lane::from_env);
    let mut needed: Vec<&str> = Vec::new();
    for name in config
        .phases
        .iter()
        .flat_map(|p| p.programs().iter().copied())
    {
        if !needed.contains(&name) {
            needed.push(name);
        }
    }
    ctx.programs.check(&needed)?;

    // One ClickHouse for the whole run (tables are dropped and created by each phase).
    let needs_clickhouse = wants(Phase::Pipeline)
        || wants(Phase::Cpu)
        || wants(Phase::Fleet)
        || !config.extra_pipeline_rows.is_empty();
    let owned_clickhouse = (needs_clickhouse && ctx.clickhouse.is_none()).then(|| {
        tracing::info!("Starting a fresh ClickHouse from the test harness");
        velostream_testkit::ClickHouse::start_lane(lane)
    });
    let clickhouse = ctx.clickhouse.clone().or_else(|| {
        owned_clickhouse.as_ref().map(|c| ClickHouseConfig {
            url: c.http_url.clone(),
            user: c.user.into(),
            password: c.password.into(),
            database: "default".into(),
        })
    });
    let clickhouse_pid = owned_clickhouse.as_ref().and_then(|c| c.pid());
    let mut versions = Versions {
        clickhouse: match &clickhouse {
            Some(c) => clickhouse_version(c)?,
            None => "(not used)".into(),
        },
        clickhouse_lane: ctx.clickhouse.is_none().then(|| lane.name().to_string()),
        broker: match &ctx.brokers {
            Some(b) => format!("given endpoint {b}"),
            None => format!(
                "{}, memory engine, a fresh one per phase (and the S3 engine on s3rver for the durable pipeline run)",
                machine::program_version(&velostream_testkit::tansu_binary())
            ),
        },
        librdkafka: machine::librdkafka_version(),
        rustc: machine::rustc_version(),
        velostream: machine::git_version(&ctx.repo),
    };
    tracing::info!(
        clickhouse = %versions.clickhouse,
        broker = %versions.broker,
        rows = ctx.rows,
        work = %ctx.work.display(),
        "Benchmark starting"
    );

    let overhead = if wants(Phase::Overhead) {
        tracing::info!(
            command_tasks = config.command_tasks,
            noop_tasks = config.noop_tasks,
            "Orchestrator overhead: task chains against direct spawns"
        );
        let o = phases::overhead::run(ctx, config.command_tasks, config.noop_tasks, 3)?;
        tracing::info!(
            per_task_ms = o.command_per_task * 1e3,
            direct_ms = o.direct_spawn * 1e3,
            noop_us = o.noop_per_task * 1e6,
            "Orchestrator overhead measured"
        );
        Some(o)
    } else {
        None
    };
    let producer = if wants(Phase::Producer) {
        tracing::info!("Producer: plain rdkafka flood against ours (producer-bench)");
        let p = phases::producer::run(ctx, config.flood200, config.producer_rounds)?;
        tracing::info!(
            flood = p.flood.rows_per_sec().round(),
            ours = p.alone.rows_per_sec().round(),
            "Producer measured (rows/s)"
        );
        Some(p)
    } else {
        None
    };
    let consumer = if wants(Phase::Consumer) {
        {
            tracing::info!(
                "Consumer: raw insert and small-batch consumer against ours (consumer-bench)"
            );
            let c =
                phases::consumer::run(ctx, config.small_batch_rows, config.memory_freeze, lane)?;
            tracing::info!(
                raw_insert = c.raw_insert.rows_per_sec().round(),
                small_batch = c.small_batch.rows_per_sec().round(),
                ours = c.alone.rows_per_sec().round(),
                "Consumer measured (rows/s)"
            );
            Some(c)
        }
    } else {
        None
    };
    let mut consumer_other_lanes = Vec::new();
    if wants(Phase::Consumer) && ctx.clickhouse.is_none() {
        for &other in config.lanes.iter().skip(1) {
            tracing::info!(lane = %other, "Consumer again on another ClickHouse lane");
            let c =
                phases::consumer::run(ctx, config.small_batch_rows, config.memory_freeze, other)?;
            tracing::info!(
                lane = %other,
                raw_insert = c.raw_insert.rows_per_sec().round(),
                ours = c.alone.rows_per_sec().round(),
                "Consumer measured (rows/s)"
            );
            consumer_other_lanes.push(c);
        }
    }
    let pipeline = match (&clickhouse, wants(Phase::Pipeline)) {
        (Some(ch), true) => {
            tracing::info!(dag = phases::pipeline::DAG, "Pipeline: the benchmark DAG");
            let p = phases::pipeline::run(ctx, ch, clickhouse_pid, Storage::Memory, "json")?;
            tracing::info!(
                producer = p.producer.rows_per_sec().round(),
                consumer = p.consumer.rows_per_sec().round(),
                data_seconds = p.data_seconds,
                run_seconds = p.run_seconds,
                peak_lag = p.peak_lag_sensor,
                "Pipeline measured"
            );
            Some(p)
        }
        _ => None,
    };
    let protobuf_pipeline = match (&clickhouse, &pipeline) {
        (Some(ch), Some(_)) if config.protobuf_pipeline => {
            tracing::info!("Pipeline again with protobuf records");
            let p = phases::pipeline::run(ctx, ch, clickhouse_pid, Storage::Memory, "protobuf")?;
            tracing::info!(
                producer = p.producer.rows_per_sec().round(),
                consumer = p.consumer.rows_per_sec().round(),
                data_seconds = p.data_seconds,
                "Protobuf pipeline measured"
            );
            Some(p)
        }
        _ => None,
    };
    let durable_pipeline = match (&clickhouse, &pipeline) {
        (Some(ch), Some(_)) if config.durable_pipeline && ctx.brokers.is_none() => {
            tracing::info!("Pipeline again on a durable broker (Tansu on a local S3 server)");
            let p = phases::pipeline::run(ctx, ch, clickhouse_pid, Storage::Durable, "json")?;
            tracing::info!(
                producer = p.producer.rows_per_sec().round(),
                consumer = p.consumer.rows_per_sec().round(),
                data_seconds = p.data_seconds,
                "Durable pipeline measured"
            );
            Some(p)
        }
        _ => None,
    };
    let mut extra_pipelines = Vec::new();
    if let Some(ch) = &clickhouse {
        for &rows in &config.extra_pipeline_rows {
            tracing::info!(rows, "Pipeline again, at another size");
            let sized = Context {
                rows,
                ..ctx.clone()
            };
            let p = phases::pipeline::run(&sized, ch, clickhouse_pid, Storage::Memory, "json")?;
            tracing::info!(
                rows,
                data_seconds = p.data_seconds,
                run_seconds = p.run_seconds,
                "Pipeline measured"
            );
            extra_pipelines.push(p);
        }
    }
    let cpu = match (&clickhouse, wants(Phase::Cpu)) {
        (Some(ch), true) => {
            let c = phases::cpu::run(ctx, ch, clickhouse_pid, config.profile)?;
            tracing::info!(
                producer_alone = ?c.producer_alone.cpu,
                consumer_alone = ?c.consumer_alone.cpu,
                profiles = c.profiles.len(),
                "CPU per row measured"
            );
            Some(c)
        }
        _ => None,
    };
    let fleet = match (&clickhouse, wants(Phase::Fleet)) {
        (Some(ch), true) => {
            tracing::info!(
                dag = phases::fleet::DAG,
                "Fleet: 1, 2 and 3 consumers in one group"
            );
            Some(phases::fleet::run(ctx, ch, clickhouse_pid)?)
        }
        _ => None,
    };
    drop(owned_clickhouse);
    if clickhouse.is_none()
        && let Some(v) = consumer.as_ref().and_then(|c| c.clickhouse_version.clone())
    {
        versions.clickhouse = v;
    }

    Ok(Report {
        date,
        settings: Settings {
            rows: ctx.rows,
            partitions: ctx.partitions,
            batch_rows: ctx.batch_rows,
            input: display_input(&ctx.input, &ctx.repo),
            profile: ctx.programs.profile(),
            servers: match (&ctx.brokers, &ctx.clickhouse) {
                (None, None) => {
                    "servers started fresh by the test harness (`velostream_testkit`)".into()
                }
                _ => "servers given on the command line".into(),
            },
            command: config.command.clone(),
            note: config.note.clone(),
        },
        machine,
        load_at_end: machine::load_average(),
        versions,
        producer,
        consumer,
        consumer_other_lanes,
        overhead,
        pipeline,
        durable_pipeline,
        protobuf_pipeline,
        extra_pipelines,
        cpu,
        fleet,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// `SELECT version()`.
fn clickhouse_version(config: &ClickHouseConfig) -> Result<String, BenchError> {
    phases::clickhouse_request(
        config,
        config
            .plain_client()
            .query("SELECT version()")
            .fetch_one::<String>(),
    )
}

/// The input relative to the repository's parent when it lives there (shorter, and the same on
/// every checkout), else as given.
fn display_input(input: &std::path::Path, repo: &std::path::Path) -> String {
    let input = input.canonicalize().unwrap_or_else(|_| input.to_path_buf());
    let parent = repo
        .canonicalize()
        .ok()
        .and_then(|r| r.parent().map(PathBuf::from));
    match parent.and_then(|p| input.strip_prefix(&p).ok().map(PathBuf::from)) {
        Some(rel) => format!("../{}", rel.display()),
        None => input.display().to_string(),
    }
}
