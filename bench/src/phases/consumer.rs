//! The consumer beside its baselines: `consumer-bench` pre-fills a topic with the same rows, then
//! measures the raw ClickHouse insert of the rows from memory (the machine's ceiling), a
//! small-batch consumer that inserts each poll's messages (the reference Python consumer's way),
//! and our consumer alone.

use std::process::Command;

use serde::{Deserialize, Serialize};
use velostream_common::clickhouse::ClickHouseConfig;

use super::producer::read_json;
use super::{Context, Rate};
use crate::error::BenchError;
use crate::exec;

/// The consumer's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerFigures {
    /// Ceiling: raw inserts of the rows already decoded in memory.
    pub raw_insert: Rate,
    /// Baseline: a consumer inserting each poll's messages.
    pub small_batch: Rate,
    /// Ours alone, from a pre-filled topic.
    pub alone: Rate,
    /// Mean rows per insert of the small-batch consumer.
    pub small_batch_rows_per_insert: Option<f64>,
}

#[derive(Deserialize)]
struct Output {
    phases: Vec<Phase>,
}

#[derive(Deserialize)]
struct Phase {
    name: String,
    rows: u64,
    seconds: f64,
    #[serde(default)]
    bytes: u64,
    #[serde(default)]
    cpu_seconds: Option<f64>,
    #[serde(default)]
    rows_per_insert: Option<f64>,
}

/// Runs `consumer-bench` at `ctx.rows` against `clickhouse`.
pub fn run(ctx: &Context, clickhouse: &ClickHouseConfig) -> Result<ConsumerFigures, BenchError> {
    let program = ctx.programs.path("consumer-bench")?;
    let json = ctx.work.join("consumer-bench.json");
    let log = ctx.work.join("consumer-bench.log");
    let mut cmd = Command::new(&program);
    cmd.arg("--rows")
        .arg(ctx.rows.to_string())
        .arg("--partitions")
        .arg(ctx.partitions.to_string())
        .arg("--batch-rows")
        .arg(ctx.batch_rows.to_string())
        .arg("--json")
        .arg(&json)
        .env("CLICKHOUSE_URL", &clickhouse.url)
        .env("CLICKHOUSE_USER", &clickhouse.user)
        .env("CLICKHOUSE_PASSWORD", &clickhouse.password)
        .env("CLICKHOUSE_DATABASE", &clickhouse.database);
    if let Some(brokers) = &ctx.brokers {
        cmd.arg("--brokers").arg(brokers);
    }
    exec::run_logged(&mut cmd, &log)?;
    let output: Output = read_json(&json, "consumer-bench")?;
    let find = |prefix: &str| {
        output
            .phases
            .iter()
            .find(|p| p.name.starts_with(prefix))
            .ok_or_else(|| BenchError::Results {
                program: "consumer-bench".into(),
                path: json.clone(),
                message: format!("no phase named `{prefix}...` in it"),
            })
    };
    let as_rate = |p: &Phase| Rate {
        rows: p.rows,
        bytes: p.bytes,
        seconds: p.seconds,
        cpu_seconds: p.cpu_seconds,
    };
    let small = find("small-batch")?;
    Ok(ConsumerFigures {
        raw_insert: as_rate(find("raw insert")?),
        small_batch: as_rate(small),
        alone: as_rate(find("ours")?),
        small_batch_rows_per_insert: small.rows_per_insert,
    })
}
