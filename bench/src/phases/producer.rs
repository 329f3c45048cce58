//! The producer beside its baseline: `producer-bench` floods the broker with the very messages we
//! send through a plain rdkafka `BaseProducer` (with librdkafka's settings, and with ours; and
//! 200-byte messages, the reference), and runs our producer pipeline alone, each on a
//! fresh broker, at the benchmark's size, alternating over rounds; the median round counts. The
//! flood of our messages and ours alone run in both record formats, JSON and protobuf.

use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{Context, Rate};
use crate::error::BenchError;
use crate::exec;

/// The producer's figures, each the median round of `rounds`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducerFigures {
    /// Baseline: a plain rdkafka flood of our messages (same keys, same JSON; acks=all,
    /// idempotent, lz4, librdkafka's defaults otherwise).
    pub flood: Rate,
    /// The same flood with velostream-producer's client settings (batching, linger, queues).
    pub flood_tuned: Option<Rate>,
    /// Reference: a plain rdkafka flood of 200-byte messages.
    pub flood200: Option<Rate>,
    /// Ours alone: the velostream-producer pipeline (Parquet -> JSON -> Kafka), nothing else running.
    pub alone: Rate,
    /// Ours alone with `--format protobuf` (the same rows as `TaxiTrip` messages).
    #[serde(default)]
    pub alone_protobuf: Option<Rate>,
    /// The plain flood of the same rows as protobuf messages.
    #[serde(default)]
    pub flood_protobuf: Option<Rate>,
    /// Rows of one pass over the input.
    pub rows_per_pass: u64,
    /// Rounds each phase ran (alternating, a fresh broker each).
    pub rounds: u32,
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

/// Runs `producer-bench` at `ctx.rows`, `rounds` times each phase.
pub fn run(ctx: &Context, with_flood200: bool, rounds: u32) -> Result<ProducerFigures, BenchError> {
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
            "flood200,flood,floodtuned,ours,floodpb,ourspb"
        } else {
            "flood,floodtuned,ours,floodpb,ourspb"
        })
        .arg("--rounds")
        .arg(rounds.max(1).to_string())
        .arg("--json")
        .arg(&json);
    // Without --brokers it starts a fresh broker per phase (the local broker keeps every message
    // in memory).
    match &ctx.brokers {
        Some(brokers) => cmd.arg("--brokers").arg(brokers),
        // Keep a broker in this process's environment from leaking into its --brokers fallback.
        None => cmd.env_remove("KAFKA_BROKERS"),
    };
    exec::run_logged(&mut cmd, &log)?;
    let output: Output = read_json(&json, "producer-bench")?;
    let median = |prefix: &str| {
        let mut rounds: Vec<Rate> = output
            .phases
            .iter()
            .filter(|p| p.name.starts_with(prefix))
            .map(|p| Rate {
                rows: p.rows,
                bytes: p.bytes,
                seconds: p.seconds,
                cpu_seconds: Some(p.cpu_seconds),
            })
            .collect();
        rounds.sort_by(|a, b| a.rows_per_sec().total_cmp(&b.rows_per_sec()));
        rounds.get(rounds.len().saturating_sub(1) / 2).copied()
    };
    let missing = |what: &str| BenchError::Results {
        program: "producer-bench".into(),
        path: json.clone(),
        message: format!("no `{what}` phase in it"),
    };
    Ok(ProducerFigures {
        flood: median("baseline B").ok_or_else(|| missing("baseline B"))?,
        flood_tuned: median("baseline C"),
        flood200: median("baseline A"),
        alone: median("ours").ok_or_else(|| missing("ours"))?,
        alone_protobuf: median("protobuf ours"),
        flood_protobuf: median("protobuf baseline B"),
        rows_per_pass: output.rows_per_pass,
        rounds: rounds.max(1),
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
