//! The producer beside its baseline: `producer-bench` floods the broker with the very messages we
//! send through a plain rdkafka `BaseProducer` (and with 200-byte messages, the reference),
//! then runs our producer pipeline alone, each on a fresh broker, at the benchmark's size.

use std::process::Command;

use serde::Deserialize;
use serde::Serialize;

use super::{Context, Rate};
use crate::error::BenchError;
use crate::exec;

/// The producer's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ProducerFigures {
    /// Baseline: a plain rdkafka flood of our messages (same keys, same JSON, same settings).
    pub flood: Rate,
    /// Reference: a plain rdkafka flood of 200-byte messages.
    pub flood200: Option<Rate>,
    /// Ours alone: the velostream-producer pipeline (Parquet -> JSON -> Kafka), nothing else running.
    pub alone: Rate,
    /// Rows of one pass over the input.
    pub rows_per_pass: u64,
}

#[derive(Deserialize)]
struct Output {
    rows_per_pass: u64,
    phases: Vec<Phase>,
}

#[derive(Deserialize)]
struct Phase {
    name: String,
    rows: u64,
    bytes: u64,
    seconds: f64,
    cpu_seconds: f64,
}

/// Runs `producer-bench` at `ctx.rows`.
pub fn run(ctx: &Context, with_flood200: bool) -> Result<ProducerFigures, BenchError> {
    let program = ctx.programs.path("producer-bench")?;
    let json = ctx.work.join("producer-bench.json");
    let log = ctx.work.join("producer-bench.log");
    let mut cmd = Command::new(&program);
    cmd.arg("--rows")
        .arg(ctx.rows.to_string())
        .arg("--partitions")
        .arg(ctx.partitions.to_string())
        .arg("--file")
        .arg(&ctx.input)
        .arg("--only")
        .arg(if with_flood200 {
            "flood200,flood,ours"
        } else {
            "flood,ours"
        })
        .arg("--json")
        .arg(&json);
    // Without --brokers it starts a fresh broker per phase (the local broker keeps every message
    // in memory).
    if let Some(brokers) = &ctx.brokers {
        cmd.arg("--brokers").arg(brokers);
    }
    exec::run_logged(&mut cmd, &log)?;
    let output: Output = read_json(&json, "producer-bench")?;
    let find = |prefix: &str| {
        output
            .phases
            .iter()
            .find(|p| p.name.starts_with(prefix))
            .map(|p| Rate {
                rows: p.rows,
                bytes: p.bytes,
                seconds: p.seconds,
                cpu_seconds: Some(p.cpu_seconds),
            })
    };
    let missing = |what: &str| BenchError::Results {
        program: "producer-bench".into(),
        path: json.clone(),
        message: format!("no `{what}` phase in it"),
    };
    Ok(ProducerFigures {
        flood: find("baseline B").ok_or_else(|| missing("baseline B"))?,
        flood200: find("baseline A"),
        alone: find("ours").ok_or_else(|| missing("ours"))?,
        rows_per_pass: output.rows_per_pass,
    })
}

/// Reads the JSON results file a bench program wrote.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    program: &str,
) -> Result<T, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::Results {
        program: program.into(),
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| BenchError::Results {
        program: program.into(),
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
