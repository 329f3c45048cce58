//! `orchestrator clear`, `mark`, `resume` and `notes`: repairing a run from the command line.
//! Clear, mark and resume change the run in the store and then drive it here, in the
//! foreground, like `orchestrator run` (live lines, summary, exit code 0 iff it succeeds).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::commands::follow;
use super::table;
use crate::events::EventSink;
use crate::scheduler::{ClearRequest, Engine, EngineSettings, RepairPlan, Repaired};
use crate::store::{StateFiles, TaskState};

/// `orchestrator clear`.
#[derive(Debug, clap::Args)]
pub struct ClearArgs {
    /// The run id (see `orchestrator runs`).
    pub run: String,
    /// The tasks to run again (none with --failed: every failed task).
    pub tasks: Vec<String>,
    /// Clear everything downstream of the chosen tasks too.
    #[arg(long)]
    pub downstream: bool,
    /// Only tasks that failed (`failed` or `upstream_failed`).
    #[arg(long)]
    pub failed: bool,
    /// List what would run again, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not draw progress bars (state changes are still printed).
    #[arg(long)]
    pub no_progress: bool,
    /// Grace between SIGTERM and SIGKILL when stopping a task's processes.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub kill_grace: std::time::Duration,
    /// The base URL of `orchestrator serve` on this state file: notifications link under it.
    #[arg(long, env = "VELOSTREAM_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<reqwest::Url>,
}

/// A state a task instance can be marked with.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum MarkState {
    /// As if its try had succeeded.
    Success,
    /// As if its try had failed.
    Failed,
}

/// `orchestrator mark`.
#[derive(Debug, clap::Args)]
pub struct MarkArgs {
    /// The run id.
    pub run: String,
    /// The task.
    pub task: String,
    /// The state to set.
    #[arg(value_enum, value_name = "STATE")]
    pub to: MarkState,
    /// Why (kept in the run's history, shown on the run page).
    #[arg(long)]
    pub reason: String,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Grace between SIGTERM and SIGKILL when stopping a task's processes.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub kill_grace: std::time::Duration,
    /// The base URL of `orchestrator serve` on this state file: notifications link under it.
    #[arg(long, env = "VELOSTREAM_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<reqwest::Url>,
}

/// `orchestrator resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The run id of an interrupted run.
    pub run: String,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Grace between SIGTERM and SIGKILL when stopping a task's processes.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub kill_grace: std::time::Duration,
    /// The base URL of `orchestrator serve` on this state file: notifications link under it.
    #[arg(long, env = "VELOSTREAM_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<reqwest::Url>,
}

/// `orchestrator notes`.
#[derive(Debug, clap::Args)]
pub struct NotesArgs {
    /// The run id.
    pub run: String,
    /// Replace the run's notes with this text (without it, print them).
    #[arg(long, value_name = "TEXT")]
    pub set: Option<String>,
}

fn engine(
    files: &StateFiles,
    kill_grace: std::time::Duration,
    public_url: Option<reqwest::Url>,
) -> anyhow::Result<Engine> {
    let store = files
        .open()
        .with_context(|| format!("opening the state database {files}"))?;
    let mut settings = EngineSettings::new(files.log_dir());
    settings.kill_grace = kill_grace;
    // A repaired run notifies as any run does (its `[[dag.notify]]`).
    settings.notify = settings.notify.with_public_url(public_url);
    Ok(Engine::new(store, settings))
}

fn print_plan(plan: &RepairPlan) {
    let rows: Vec<Vec<String>> = plan
        .tasks
        .iter()
        .map(|t| {
            let why = match t.reason {
                crate::scheduler::repair::Reason::Chosen => "chosen",
                crate::scheduler::repair::Reason::Downstream => "downstream",
                crate::scheduler::repair::Reason::Redecided => "decided again (below a rerun)",
                crate::scheduler::repair::Reason::Process => {
                    "process.spawn/stop pair (the process is gone)"
                }
            };
            vec![t.task_id.clone(), t.state.to_string(), why.to_owned()]
        })
        .collect();
    table::print(&["TASK", "STATE NOW", "WHY"], &rows);
}

/// Drives a repaired run in the foreground.
fn drive(
    files: &StateFiles,
    kill_grace: std::time::Duration,
    public_url: Option<reqwest::Url>,
    no_progress: bool,
    what: &str,
    repair: impl FnOnce(&Engine, EventSink, &CancellationToken) -> anyhow::Result<Repaired>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let engine = engine(files, kill_grace, public_url)?;
        let (events, rx) = EventSink::channel();
        let repaired = repair(&engine, events, &CancellationToken::new())?;
        let run_id = repaired.handle.run_id().to_owned();
        if repaired.plan.tasks.is_empty() {
            println!("Run {run_id}: {what}; nothing else runs again");
        } else {
            println!(
                "Run {run_id}: {what}; {} task instance(s) run again:",
                repaired.plan.tasks.len()
            );
            print_plan(&repaired.plan);
        }
        println!(
            "Driving run {run_id} of DAG {} to its end; logs under {}",
            repaired.dag.id,
            files
                .log_dir()
                .join(&repaired.dag.id)
                .join(&run_id)
                .display()
        );
        let dag: Arc<crate::dag::Dag> = repaired.dag.clone();
        follow(&engine, &dag, repaired.handle, rx, no_progress).await
    })
}

/// `orchestrator clear RUN_ID [TASK...] [--downstream] [--failed] [--dry-run]`.
pub fn clear(files: &StateFiles, args: ClearArgs) -> anyhow::Result<ExitCode> {
    let req = ClearRequest {
        tasks: args.tasks.clone(),
        downstream: args.downstream,
        failed: args.failed,
    };
    if args.dry_run {
        let engine = engine(files, args.kill_grace, None)?;
        let plan = engine
            .plan_clear(&args.run, &req)
            .with_context(|| format!("planning a clear of run {}", args.run))?;
        println!(
            "Run {}: a clear would run {} task instance(s) again:",
            args.run,
            plan.tasks.len()
        );
        print_plan(&plan);
        println!("(dry run: nothing changed)");
        return Ok(ExitCode::SUCCESS);
    }
    drive(
        files,
        args.kill_grace,
        args.public_url.clone(),
        args.no_progress,
        "cleared",
        |engine, events, token| {
            engine
                .clear(&args.run, &req, events, token)
                .with_context(|| format!("clearing run {}", args.run))
        },
    )
}

/// `orchestrator mark RUN_ID TASK success|failed --reason TEXT`.
pub fn mark(files: &StateFiles, args: MarkArgs) -> anyhow::Result<ExitCode> {
    let state = match args.to {
        MarkState::Success => TaskState::Success,
        MarkState::Failed => TaskState::Failed,
    };
    let what = format!("task {} marked {state} ({})", args.task, args.reason);
    drive(
        files,
        args.kill_grace,
        args.public_url.clone(),
        args.no_progress,
        &what,
        |engine, events, token| {
            engine
                .mark(
                    &args.run,
                    &args.task,
                    state,
                    Some(args.reason.clone()),
                    events,
                    token,
                )
                .with_context(|| format!("marking task {} of run {}", args.task, args.run))
        },
    )
}

/// `orchestrator resume RUN_ID`.
pub fn resume(files: &StateFiles, args: ResumeArgs) -> anyhow::Result<ExitCode> {
    drive(
        files,
        args.kill_grace,
        args.public_url.clone(),
        args.no_progress,
        "resumed (interrupted tries count as failed tries)",
        |engine, events, token| {
            engine
                .resume(&args.run, events, token)
                .with_context(|| format!("resuming run {}", args.run))
        },
    )
}

/// `orchestrator notes RUN_ID [--set TEXT]`.
pub fn notes(files: &StateFiles, args: &NotesArgs) -> anyhow::Result<ExitCode> {
    let store = files
        .open()
        .with_context(|| format!("opening the state database {files}"))?;
    if let Some(text) = &args.set {
        store
            .set_run_notes(&args.run, text, Utc::now())
            .with_context(|| format!("writing the notes of run {}", args.run))?;
        println!("Notes of run {} saved", args.run);
        return Ok(ExitCode::SUCCESS);
    }
    if store.run(&args.run)?.is_none() {
        anyhow::bail!("no run {}; `orchestrator runs` lists them", args.run);
    }
    match store.run_notes(&args.run)? {
        Some(notes) => println!("{}", notes.text),
        None => eprintln!(
            "run {} has no notes; `orchestrator notes {} --set TEXT` writes them",
            args.run, args.run
        ),
    }
    Ok(ExitCode::SUCCESS)
}
