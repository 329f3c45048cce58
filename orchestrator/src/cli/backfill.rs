//! `orchestrator backfill DAG_FILE --from DATE --to DATE`: one run per schedule slot in the range,
//! oldest first, at most `--max-active-runs` at once, with a progress bar; Ctrl-C cancels the
//! whole backfill (its running runs are cancelled, no further slot starts). `--dry-run` prints the
//! slots and what would happen to each. See [`crate::cron::backfill`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::table;
use crate::cron::Launcher;
use crate::cron::backfill::{self, Reprocess};
use crate::cron::upcoming::{local, utc};
use crate::dag;
use crate::store::StateFiles;

/// `orchestrator backfill`.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The DAG file.
    pub file: PathBuf,
    /// First logical date: RFC 3339, or a date (midnight in the DAG's time zone).
    #[arg(long, value_name = "DATE")]
    pub from: String,
    /// Last logical date, inclusive: RFC 3339, or a date (through the end of that day in the DAG's
    /// time zone).
    #[arg(long, value_name = "DATE")]
    pub to: String,
    /// Which slots that already ran run again.
    #[arg(long, value_enum, default_value_t = Reprocess::None)]
    pub reprocess: Reprocess,
    /// Runs of the backfill at once (the DAG's own max_active_runs still applies).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub max_active_runs: usize,
    /// Print the slots and what would happen to each; start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// The base URL of `orchestrator serve` on this state file: notifications
    /// (`[[dag.notify]]`) link to the run's page under it.
    #[arg(long, env = "VELOSTREAM_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<reqwest::Url>,
}

fn parse_date(s: &str, tz: chrono_tz::Tz, end_of_day: bool) -> anyhow::Result<DateTime<Utc>> {
    Ok(backfill::parse_date(s, tz, end_of_day)?)
}

/// Runs (or with `--dry-run` plans) the backfill; exit 0 when every run succeeded.
pub fn backfill(files: &StateFiles, args: &BackfillArgs) -> anyhow::Result<ExitCode> {
    let dag = Arc::new(dag::load(&args.file).map_err(|e| anyhow::anyhow!("{e}"))?);
    let from = parse_date(&args.from, dag.timezone, false).context("--from")?;
    let to = parse_date(&args.to, dag.timezone, true).context("--to")?;
    let engine = super::commands::engine(files, args.public_url.clone())?;
    super::commands::recover(&engine, &dag.id)?;
    let slots = backfill::plan(&dag, engine.store().as_ref(), from, to, args.reprocess)?;
    let tz = dag.timezone;
    if args.dry_run {
        let rows: Vec<Vec<String>> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                vec![
                    (i + 1).to_string(),
                    local(s.logical_date, tz),
                    utc(s.logical_date),
                    format!("[{}, {})", utc(s.data_interval_start), utc(s.logical_date)),
                    s.existing
                        .as_ref()
                        .map_or("-".into(), |(id, st)| format!("{id} ({st})")),
                    s.action.describe().to_owned(),
                ]
            })
            .collect();
        let zone = format!("LOGICAL DATE ({})", tz.name());
        print!(
            "{}",
            table::render(
                &[
                    "#",
                    &zone,
                    "UTC",
                    "DATA INTERVAL (UTC)",
                    "EXISTING RUN",
                    "ACTION"
                ],
                &rows
            )
        );
        let runs = slots.iter().filter(|s| s.action.runs()).count();
        println!(
            "Dry run: {} slot(s) of DAG {} from {} to {}; {runs} would run, {} skipped",
            slots.len(),
            dag.id,
            utc(from),
            utc(to),
            slots.len() - runs
        );
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let launcher = Launcher::new(engine, shutdown.clone());
        let cancel = CancellationToken::new();
        let signals = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("SIGINT: cancelling the backfill, stopping its runs...");
                    cancel.cancel();
                }
            }
        });
        let bar = ProgressBar::with_draw_target(
            Some(slots.len() as u64),
            if args.no_progress {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} slots {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        println!(
            "Backfill of DAG {}: {} slot(s) from {} to {}, {} to run, at most {} at once",
            dag.id,
            slots.len(),
            utc(from),
            utc(to),
            slots.iter().filter(|s| s.action.runs()).count(),
            args.max_active_runs.max(1)
        );
        let report = |p: &backfill::Progress| {
            bar.set_position(p.done() as u64);
            bar.set_message(format!(
                "({} running, {} succeeded, {} failed, {} skipped)",
                p.running, p.succeeded, p.failed, p.skipped
            ));
        };
        let done = backfill::execute(
            &launcher,
            dag.clone(),
            &slots,
            args.max_active_runs,
            &cancel,
            &report,
        )
        .await;
        bar.finish_and_clear();
        signals.abort();
        launcher
            .shutdown("the backfill ended", std::time::Duration::from_secs(30))
            .await;
        super::commands::drain_notifications(launcher.engine(), &[]).await;
        println!(
            "Backfill {}: {} succeeded, {} failed, {} cancelled, {} skipped of {} slot(s)",
            if done.cancel_requested {
                "cancelled"
            } else {
                "finished"
            },
            done.succeeded,
            done.failed,
            done.cancelled,
            done.skipped,
            done.total
        );
        Ok(if done.failed == 0 && done.cancelled == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}
