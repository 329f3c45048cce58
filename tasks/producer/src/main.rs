//! `velostream-producer`: the thin binary over the library. Parses the command line, sets up
//! logging on stderr, runs the command and maps the outcome to an exit code (see `--help`).

use std::process::ExitCode;

use anyhow::Context;
use prometheus_client::registry::Registry;
use serde_json::json;
use tracing_subscriber::EnvFilter;
use velostream_producer::cli::{Cli, Command, FetchArgs, GenerateArgs, InspectArgs, ProduceArgs};
use velostream_producer::metrics::MetricsServer;
use velostream_producer::report::{self, Progress};
use velostream_producer::stats::Stats;
use velostream_producer::{fetch, generate, input, pipeline, shutdown, verify};

/// Nothing was sent: bad input or configuration, broker unreachable, missing topic.
const EXIT_NOT_STARTED: u8 = 1;
/// Some rows failed to be delivered.
const EXIT_FAILED_ROWS: u8 = 3;
/// Stopped early by a signal.
const EXIT_INTERRUPTED: u8 = 4;
/// The broker acknowledged rows the topic does not hold.
const EXIT_LOST: u8 = 5;

/// Bound on each read of the topic's high watermarks (before and after producing).
const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse_env();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never into a DAG's log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Some(Command::Generate(args)) => run_generate(&args),
        Some(Command::Inspect(args)) => run_inspect(&args),
        Some(Command::Fetch(args)) => run_fetch(&args),
        Some(Command::Produce(args)) => run_produce(&args),
        None => match &cli.produce {
            Some(args) => run_produce(args),
            None => unreachable!("clap requires the produce arguments without a subcommand"),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Once, as `error: ...`: a log line with the same text would say it twice.
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_NOT_STARTED)
        }
    }
}

fn run_produce(args: &ProduceArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let stop = shutdown::stop_on_signals().context("installing signal handlers")?;
    let plan = pipeline::plan(&config)?;
    tracing::info!(
        files = plan.files.len(),
        rows_per_pass = plan.rows_per_pass,
        passes = config.repeat,
        rows = plan.total_rows,
        "Inputs checked"
    );

    let stats = Stats::default();
    let _metrics = match args.metrics_addr {
        Some(addr) => {
            let mut registry = Registry::default();
            stats.register(&mut registry);
            Some(
                MetricsServer::start(addr, registry)
                    .with_context(|| format!("serving metrics on {addr}"))?,
            )
        }
        None => None,
    };

    let sender = pipeline::connect(&config, &stats)?;
    let (brokers, topic) = (&config.delivery.brokers, &config.delivery.topic);
    let before = verify::log_ends(brokers, topic, VERIFY_TIMEOUT)
        .inspect_err(|e| {
            tracing::warn!(error = %e, "Cannot read the topic's high watermarks; the run will not check that the broker kept what it acknowledged");
        })
        .ok();
    let progress = Progress::start(args.progress, stats.clone(), plan.total_rows);
    let outcome = pipeline::run(&config, &plan, sender, &stats, &stop);
    progress.finish();
    let summary = outcome?;

    report::emit_output(report::output_value(&summary, &config.delivery.topic));
    tracing::info!(
        rows = summary.delivered,
        failed = summary.failed,
        bytes = summary.bytes,
        seconds = summary.elapsed.as_secs_f64(),
        rows_per_sec = summary.rows_per_sec().round(),
        mb_per_sec = (summary.bytes as f64 / 1e6 / summary.elapsed.as_secs_f64().max(1e-9)).round(),
        "Done"
    );
    if let Some(e) = &summary.read_error {
        eprintln!(
            "error: reading stopped after {} of {} rows: {e}",
            summary.delivered, summary.planned
        );
        return Ok(ExitCode::from(EXIT_NOT_STARTED));
    }
    if summary.failed > 0 {
        eprintln!(
            "error: {} of {} rows failed to be delivered (first error: {})",
            summary.failed,
            summary.planned,
            summary.first_error.as_deref().unwrap_or("unknown")
        );
        return Ok(ExitCode::from(EXIT_FAILED_ROWS));
    }
    if let Some(before) = &before
        && summary.delivered > 0
    {
        match verify::log_ends(brokers, topic, VERIFY_TIMEOUT) {
            Ok(after) => match verify::check_growth(topic, before, &after, summary.delivered) {
                Ok(grown) => tracing::info!(grown, "The topic grew by every acknowledged row"),
                Err(lost) => {
                    eprintln!("error: {lost}");
                    return Ok(ExitCode::from(EXIT_LOST));
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the topic's high watermarks after producing; not checked that the broker kept what it acknowledged")
            }
        }
    }
    if summary.interrupted {
        eprintln!(
            "stopped by a signal after {} of {} rows",
            summary.delivered, summary.planned
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_generate(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let start = std::time::Instant::now();
    let bytes = generate::generate(&args.output, &args.config())?;
    let seconds = start.elapsed().as_secs_f64();
    tracing::info!(
        path = %args.output.display(),
        rows = args.rows,
        bytes,
        seconds,
        "Generated"
    );
    report::emit_output(json!({
        "rows": args.rows,
        "bytes": bytes,
        "path": args.output.display().to_string(),
    }));
    Ok(ExitCode::SUCCESS)
}

fn run_fetch(args: &FetchArgs) -> anyhow::Result<ExitCode> {
    let months = fetch::parse_months(&args.months)?;
    let config = fetch::FetchConfig {
        base_url: args.base_url.clone(),
        cache_dir: args.cache_dir.clone(),
        parallel: args.parallel,
        attempts: args.attempts.max(1),
        timeout: args.timeout,
        progress: args.progress,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let fetched = runtime.block_on(fetch::fetch(&months, &config))?;
    if let Some(dir) = &args.into {
        fetch::link_into(&fetched, dir)?;
    }
    let rows: i64 = fetched.iter().map(|f| f.rows).sum();
    let downloaded = fetched.iter().filter(|f| f.downloaded).count();
    tracing::info!(months = fetched.len(), downloaded, rows, cache = %config.cache_dir.display(), "Fetched");
    report::emit_output(json!({
        "months": fetched.len(),
        "downloaded": downloaded,
        "cached": fetched.len() - downloaded,
        "rows": rows,
        "bytes": fetched.iter().map(|f| f.bytes).sum::<u64>(),
        "dir": args.into.as_ref().unwrap_or(&config.cache_dir).display().to_string(),
        "per_month": fetched
            .iter()
            .map(|f| format!("{} {} rows", f.month, f.rows))
            .collect::<Vec<_>>()
            .join(", "),
        "files": fetched,
    }));
    Ok(ExitCode::SUCCESS)
}

fn run_inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let paths = input::resolve(&args.inputs)?;
    let files = input::open_all(&paths, args.schema, &Default::default())?;
    let mut total = 0;
    for file in &files {
        total += file.rows;
        println!(
            "{}: {} rows, {} bytes, {} row groups",
            file.path.display(),
            file.rows,
            file.bytes,
            file.row_groups()
        );
        let nulls = file.null_counts();
        for field in file.schema.fields() {
            let count = nulls
                .iter()
                .find(|(path, _)| path == field.name())
                .and_then(|(_, n)| *n)
                .map_or_else(|| "nulls unknown".to_string(), |n| format!("{n} nulls"));
            println!(
                "  {:<24} {:<16} {}{}",
                field.name(),
                field.data_type().to_string(),
                count,
                if field.is_nullable() {
                    ""
                } else {
                    ", not null"
                }
            );
        }
    }
    report::emit_output(json!({"files": files.len(), "rows": total}));
    Ok(ExitCode::SUCCESS)
}
