//! The consumer beside its baselines: `consumer-bench` pre-fills a topic with the sample's rows
//! repeated, then measures on the same servers the raw ClickHouse insert of the rows already
//! decoded in memory (the machine's ceiling), our consumer alone, and a small-batch consumer that
//! inserts and commits each poll's messages (the reference Python consumer's way). Its figures
//! come from its final `::velostream::` output line (ARCHITECTURE.md's protocol). It runs on the
//! ClickHouse lane asked for (`VELOSTREAM_CLICKHOUSE` of its fresh server), so one benchmark run
//! can measure the ceiling and our share on both lanes. Ours and the Kafka-engine peer run again on
//! a topic of the same rows as protobuf records ([`ConsumerProtobuf`]).

use std::process::Command;

use serde::{Deserialize, Serialize};

use velostream_testkit::Lane;

use super::{Context, Rate};
use crate::error::BenchError;
use crate::exec;

/// Messages per insert of the small-batch consumer (one poll's worth at most).
pub const SMALL_BATCH: u64 = 10_000;

/// The consumer's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumerFigures {
    /// Ceiling: raw inserts of the rows already decoded in memory.
    pub raw_insert: Rate,
    /// Baseline: a consumer inserting and committing each poll's messages.
    pub small_batch: Rate,
    /// Ours alone, from the pre-filled topic (first message read to last insert).
    pub alone: Rate,
    /// Reading the topic and nothing else, for reference.
    pub fetch_only: Option<Rate>,
    /// Most rows per insert of the small-batch consumer.
    pub small_batch_rows_per_insert: Option<f64>,
    /// Peer: ClickHouse's own Kafka engine and a materialized view into the same table layout
    /// (modern servers only), from the first rows stored to the last.
    #[serde(default)]
    pub kafka_engine: Option<Rate>,
    /// The ClickHouse lane of the fresh server (`modern`, `legacy`); `None` for a given server.
    #[serde(default)]
    pub lane: Option<String>,
    /// `SELECT version()` of the server measured on.
    #[serde(default)]
    pub clickhouse_version: Option<String>,
    /// Peak RSS of the consumer binary beside the bound it states.
    #[serde(default)]
    pub memory: Option<ConsumerMemory>,
    /// The same runs on a topic of the same rows as protobuf records.
    #[serde(default)]
    pub protobuf: Option<ConsumerProtobuf>,
}

/// The consumer's figures on protobuf records, beside what they compare with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConsumerProtobuf {
    /// Ours alone on the protobuf topic.
    pub alone: Rate,
    /// ClickHouse's Kafka engine reading the protobuf topic (`ProtobufSingle`), modern servers.
    pub kafka_engine: Option<Rate>,
    /// One thread decoding JSON records into rows, rows/s.
    pub decode_json: f64,
    /// The same for protobuf records.
    pub decode_protobuf: f64,
    /// Average record size of the sample as JSON.
    pub json_bytes_per_row: u64,
    /// As protobuf.
    pub protobuf_bytes_per_row: u64,
}

/// Peak resident memory of `velostream-consumer` (its `VmHWM`) with its default settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConsumerMemory {
    /// Rows it read each time (a backlog: its prefetch queue stays full).
    pub rows: u64,
    /// Reading the backlog at full speed.
    pub backlog_bytes: u64,
    /// The same with ClickHouse frozen (SIGSTOP) for `freeze_secs` after the first insert.
    pub frozen_bytes: Option<u64>,
    /// How long ClickHouse was frozen.
    pub freeze_secs: f64,
    /// What the consumer states as its bound (`memory_bound_mb` in its log).
    pub bound_bytes: u64,
}

#[derive(Deserialize)]
struct Line {
    output: Output,
}

#[derive(Deserialize)]
struct Output {
    rows: u64,
    ceiling_rows_per_sec: f64,
    ours_rows_per_sec: f64,
    plain_rows_per_sec: Option<f64>,
    fetch_only_rows_per_sec: Option<f64>,
    clickhouse_version: Option<String>,
    kafka_engine_rows_per_sec: Option<f64>,
    memory_rows: Option<u64>,
    memory_backlog_bytes: Option<u64>,
    memory_frozen_bytes: Option<u64>,
    memory_freeze_secs: Option<f64>,
    memory_bound_bytes: Option<u64>,
    ours_protobuf_rows_per_sec: Option<f64>,
    kafka_engine_protobuf_rows_per_sec: Option<f64>,
    decode_json_rows_per_sec: Option<f64>,
    decode_protobuf_rows_per_sec: Option<f64>,
    json_bytes_per_row: Option<u64>,
    protobuf_bytes_per_row: Option<u64>,
}

/// Runs `consumer-bench` at `ctx.rows`; the small-batch consumer reads `small_batch_rows` of them
/// (it is slow, and its rate does not depend on how many). Its fresh ClickHouse is of `lane`
/// (unused when the context gives a server).
pub fn run(
    ctx: &Context,
    small_batch_rows: u64,
    freeze: std::time::Duration,
    lane: Lane,
) -> Result<ConsumerFigures, BenchError> {
    let program = ctx.programs.path("consumer-bench")?;
    let log = ctx.work.join(format!("consumer-bench-{lane}.log"));
    let stdout = ctx.work.join(format!("consumer-bench-{lane}.out"));
    let small_rows = small_batch_rows.min(ctx.rows);
    let mut cmd = Command::new(&program);
    cmd.arg("--rows")
        .arg(ctx.rows.to_string())
        .arg("--partitions")
        .arg(ctx.partitions.to_string())
        .arg("--batch-rows")
        .arg(ctx.batch_rows.to_string())
        .arg("--plain-batch")
        .arg(SMALL_BATCH.to_string())
        .arg("--plain-rows")
        .arg(small_rows.to_string())
        .arg("--sample")
        .arg(&ctx.input)
        .arg("--freeze")
        .arg(format!("{}ms", freeze.as_millis()));
    // Without endpoints it starts a fresh broker and ClickHouse of its own; keep endpoints in this
    // process's environment from leaking into its flags' env fallbacks.
    match &ctx.brokers {
        Some(b) => cmd.arg("--brokers").arg(b),
        None => cmd.env_remove("KAFKA_BROKERS"),
    };
    match &ctx.clickhouse {
        Some(c) => cmd
            .arg("--clickhouse-url")
            .arg(&c.url)
            .env("CLICKHOUSE_USER", &c.user)
            .env("CLICKHOUSE_PASSWORD", &c.password)
            .env("CLICKHOUSE_DATABASE", &c.database),
        None => cmd
            .env_remove("CLICKHOUSE_URL")
            .env(velostream_testkit::LANE_ENV, lane.name()),
    };
    exec::run_logged_split(&mut cmd, &stdout, &log)?;
    let text = std::fs::read_to_string(&stdout).map_err(|source| BenchError::Io {
        action: "reading",
        path: stdout.clone(),
        source,
    })?;
    let bad = |message: String| BenchError::Results {
        program: "consumer-bench".into(),
        path: stdout.clone(),
        message,
    };
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("::velostream:: "))
        .ok_or_else(|| bad("no `::velostream::` output line".into()))?;
    let out = serde_json::from_str::<Line>(line)
        .map_err(|e| bad(format!("{e} in {line}")))?
        .output;
    let rate = |rows: u64, per_sec: f64| Rate {
        rows,
        bytes: 0,
        seconds: if per_sec > 0.0 {
            rows as f64 / per_sec
        } else {
            0.0
        },
        cpu_seconds: None,
    };
    Ok(ConsumerFigures {
        raw_insert: rate(out.rows, out.ceiling_rows_per_sec),
        small_batch: rate(
            small_rows,
            out.plain_rows_per_sec
                .ok_or_else(|| bad("no small-batch (plain) figure".into()))?,
        ),
        alone: rate(out.rows, out.ours_rows_per_sec),
        fetch_only: out.fetch_only_rows_per_sec.map(|r| rate(out.rows, r)),
        small_batch_rows_per_insert: Some(SMALL_BATCH as f64),
        kafka_engine: out.kafka_engine_rows_per_sec.map(|r| rate(out.rows, r)),
        lane: ctx.clickhouse.is_none().then(|| lane.name().to_string()),
        clickhouse_version: out.clickhouse_version,
        memory: match (
            out.memory_rows,
            out.memory_backlog_bytes,
            out.memory_bound_bytes,
        ) {
            (Some(rows), Some(backlog_bytes), Some(bound_bytes)) => Some(ConsumerMemory {
                rows,
                backlog_bytes,
                frozen_bytes: out.memory_frozen_bytes,
                freeze_secs: out.memory_freeze_secs.unwrap_or(0.0),
                bound_bytes,
            }),
            _ => None,
        },
        protobuf: out.ours_protobuf_rows_per_sec.map(|r| ConsumerProtobuf {
            alone: rate(out.rows, r),
            kafka_engine: out
                .kafka_engine_protobuf_rows_per_sec
                .map(|r| rate(out.rows, r)),
            decode_json: out.decode_json_rows_per_sec.unwrap_or(f64::NAN),
            decode_protobuf: out.decode_protobuf_rows_per_sec.unwrap_or(f64::NAN),
            json_bytes_per_row: out.json_bytes_per_row.unwrap_or(0),
            protobuf_bytes_per_row: out.protobuf_bytes_per_row.unwrap_or(0),
        }),
    })
}
