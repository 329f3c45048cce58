//! `velostream-bench`: runs the pipeline at a given size beside its baselines (a plain rdkafka
//! flood, a raw ClickHouse insert, a small-batch consumer, direct process spawns), all in the same
//! run, and writes `docs/BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release -p velostream-bench -- --rows 10000000
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use velostream_bench::phases::Context;
use velostream_bench::programs::Programs;
use velostream_bench::run::{Config, Phase};
use velostream_common::clickhouse::ClickHouseConfig;
use velostream_testkit::Lane;

fn parse_lane(name: &str) -> Result<Lane, String> {
    Lane::parse(name).ok_or_else(|| format!("{name:?}: expected modern or legacy"))
}

/// Runs the pipeline benchmark and its baselines in one go and writes docs/BENCHMARKS.md.
///
/// By default every server is started fresh from the test harness (a broker per phase, since the
/// local broker keeps every message in memory; one ClickHouse), and the workspace binaries are
/// built first with the profile of this binary.
#[derive(Debug, Parser)]
#[command(name = "velostream-bench", version, about, long_about = None)]
struct Args {
    /// Rows per measurement (the sample is repeated with shifted timestamps to reach it).
    #[arg(long, env = "VELOSTREAM_BENCH_ROWS", default_value_t = 10_000_000)]
    rows: u64,
    /// Partitions of every topic.
    #[arg(long, env = "VELOSTREAM_BENCH_PARTITIONS", default_value_t = 6)]
    partitions: u32,
    /// Rows per ClickHouse insert of our consumer.
    #[arg(long, env = "VELOSTREAM_BENCH_BATCH_ROWS", default_value_t = 500_000)]
    batch_rows: u64,
    /// The Parquet input [default: the NYC taxi sample of the test harness].
    #[arg(long, env = "VELOSTREAM_BENCH_INPUT")]
    input: Option<PathBuf>,
    /// Where to write the report [default: docs/BENCHMARKS.md of the repository].
    #[arg(long, short, env = "VELOSTREAM_BENCH_OUTPUT")]
    output: Option<PathBuf>,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only these phases (comma-separated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Use this broker instead of fresh ones (topics bench-* are recreated on it).
    #[arg(long, env = "VELOSTREAM_BENCH_BROKERS")]
    brokers: Option<String>,
    /// Use this ClickHouse instead of a fresh one (the DAG drops and recreates bench_trips and
    /// velostream_consumer_offsets there).
    #[arg(long, env = "VELOSTREAM_BENCH_CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    /// ClickHouse user, with --clickhouse-url.
    #[arg(
        long,
        env = "VELOSTREAM_BENCH_CLICKHOUSE_USER",
        default_value = "velostream"
    )]
    clickhouse_user: String,
    /// ClickHouse password, with --clickhouse-url.
    #[arg(
        long,
        env = "VELOSTREAM_BENCH_CLICKHOUSE_PASSWORD",
        default_value = "velostream",
        hide_env_values = true
    )]
    clickhouse_password: String,
    /// ClickHouse database, with --clickhouse-url.
    #[arg(
        long,
        env = "VELOSTREAM_BENCH_CLICKHOUSE_DATABASE",
        default_value = "default"
    )]
    clickhouse_database: String,
    /// ClickHouse lanes of the fresh servers (comma-separated: modern, legacy): the first serves
    /// every phase, the consumer phase runs again on the others [default: $VELOSTREAM_CLICKHOUSE,
    /// else modern].
    #[arg(long, value_delimiter = ',', value_parser = parse_lane)]
    clickhouse_lanes: Vec<Lane>,
    /// Tasks in the `command` chain of the overhead phase.
    #[arg(long, default_value_t = 200)]
    command_tasks: usize,
    /// Tasks in the `noop` chain of the overhead phase.
    #[arg(long, default_value_t = 1000)]
    noop_tasks: usize,
    /// Rows the small-batch consumer baseline reads (its rate does not depend on it; it is slow).
    #[arg(long, default_value_t = 2_000_000)]
    small_batch_rows: u64,
    /// How long the consumer phase freezes ClickHouse (SIGSTOP) under a backlog, to measure the
    /// consumer's peak memory while its inserts cannot finish.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    memory_freeze: std::time::Duration,
    /// After the main phases, run the benchmark DAG again at these sizes (comma-separated, e.g.
    /// 44000000 for the reference run's size); the report shows them beside the estimate.
    #[arg(long, value_delimiter = ',')]
    also_pipeline_rows: Vec<u64>,
    /// Skip the second run of the benchmark DAG on a durable broker (Tansu on a local S3 server),
    /// which the report sets against the memory broker's run.
    #[arg(long)]
    no_durable_pipeline: bool,
    /// Skip the second run of the benchmark DAG with protobuf records, which the report sets
    /// against the JSON run.
    #[arg(long)]
    no_protobuf_pipeline: bool,
    /// Do not profile the processes of the CPU phase with `perf` (its CPU seconds are still
    /// measured).
    #[arg(long)]
    no_profile: bool,
    /// Rounds of each producer phase, alternating (the median round counts).
    #[arg(long, default_value_t = 3)]
    producer_rounds: u32,
    /// Skip the 200-byte reference flood.
    #[arg(long)]
    no_flood200: bool,
    /// Do not build the workspace binaries first (they must be built already).
    #[arg(long)]
    no_build: bool,
    /// Scratch folder for logs, state databases and results [default: a new temporary folder,
    /// kept when a phase fails].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Measure nothing: render the report again from a JSON file written by --json.
    #[arg(long, value_name = "JSON")]
    render: Option<PathBuf>,
    /// A note for the report (e.g. what else was running).
    #[arg(long)]
    note: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("velostream-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.rows > 0, "--rows must be at least 1");
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| velostream_testkit::repo_root().join("docs/BENCHMARKS.md"));
    if let Some(json) = &args.render {
        let text =
            std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
        let report: velostream_bench::report::Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a report written by --json", json.display()))?;
        std::fs::write(&output, report.markdown())
            .with_context(|| format!("writing {}", output.display()))?;
        println!("velostream-bench: wrote {}", output.display());
        return Ok(());
    }
    let programs = Programs::beside_current_exe()?;
    let repo = velostream_testkit::repo_root();
    if !args.no_build {
        tracing::info!("Building the workspace binaries (--no-build skips this)");
        programs.build(&repo)?;
    }
    let (work, temp) = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the work folder {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("velostream-bench-")
                .tempdir()
                .context("creating a temporary work folder")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let config = Config {
        context: Context {
            programs,
            repo: repo.clone(),
            work: work.clone(),
            input: args
                .input
                .clone()
                .unwrap_or_else(velostream_testkit::taxi_sample),
            rows: args.rows,
            partitions: args.partitions,
            batch_rows: args.batch_rows,
            brokers: args.brokers.clone(),
            clickhouse: args.clickhouse_url.as_ref().map(|url| ClickHouseConfig {
                url: url.clone(),
                user: args.clickhouse_user.clone(),
                password: args.clickhouse_password.clone(),
                database: args.clickhouse_database.clone(),
            }),
        },
        phases: if args.only.is_empty() {
            Phase::ALL.to_vec()
        } else {
            Phase::ALL
                .into_iter()
                .filter(|p| args.only.contains(p))
                .collect()
        },
        command_tasks: args.command_tasks,
        noop_tasks: args.noop_tasks,
        flood200: !args.no_flood200,
        small_batch_rows: args.small_batch_rows,
        memory_freeze: args.memory_freeze,
        lanes: if args.clickhouse_lanes.is_empty() {
            vec![Lane::from_env()]
        } else {
            args.clickhouse_lanes.clone()
        },
        producer_rounds: args.producer_rounds,
        extra_pipeline_rows: args.also_pipeline_rows.clone(),
        durable_pipeline: !args.no_durable_pipeline,
        profile: !args.no_profile,
        protobuf_pipeline: !args.no_protobuf_pipeline,
        command: command_line(),
        note: args.note.clone(),
    };
    let report = match velostream_bench::run::run(&config) {
        Ok(r) => r,
        Err(e) => {
            // Keep the logs and state databases for a look.
            if let Some(t) = temp {
                let kept = t.keep();
                eprintln!("velostream-bench: logs kept in {}", kept.display());
            }
            return Err(e.into());
        }
    };
    std::fs::write(&output, report.markdown())
        .with_context(|| format!("writing {}", output.display()))?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("velostream-bench: wrote {}", output.display());
    Ok(())
}

/// How to run this again, for the report.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exe = std::env::current_exe().ok();
    let profile = exe
        .as_ref()
        .and_then(|e| e.parent())
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let release = if profile == "release" {
        " --release"
    } else {
        ""
    };
    let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    format!(
        "cargo run{release} -p velostream-bench -- {}",
        quoted.join(" ")
    )
    .trim_end()
    .to_string()
}

/// `arg` as a POSIX shell word.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:@+%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn command_lines_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("--rows"), "--rows");
        assert_eq!(shell_quote("10000000"), "10000000");
        assert_eq!(shell_quote("a note"), "'a note'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
