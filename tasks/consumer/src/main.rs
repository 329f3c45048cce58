//! `velostream-consumer`: parses flags, sets up logging (stderr; stdout carries only the
//! `::velostream::` summary line), turns SIGTERM/SIGINT into a graceful stop, runs the consumer.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use velostream_consumer::Consumer;
use velostream_consumer::cli::Args;

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Cancels `stop` on the first SIGTERM or SIGINT.
fn stop_on_signals(stop: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping fetching, flushing, committing"),
            _ = int.recv() => tracing::info!("SIGINT: stopping fetching, flushing, committing"),
        }
        stop.cancel();
    });
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let stop = CancellationToken::new();
    stop_on_signals(stop.clone())?;
    tracing::info!(
        topic = %settings.topic,
        group = %settings.group,
        table = %settings.table,
        batch_rows = settings.batch_rows,
        batch_ms = settings.batch_time.as_millis() as u64,
        "Starting"
    );
    let summary = Consumer::new(settings).run(stop).await?;
    println!("{}", summary.line());
    tracing::info!(
        rows_inserted = summary.rows_inserted,
        rows_dead_lettered = summary.rows_dead_lettered,
        rows_per_sec = summary.rows_per_sec,
        "Stopped cleanly"
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("velostream-consumer: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("velostream-consumer: {err:#}");
            ExitCode::FAILURE
        }
    }
}
