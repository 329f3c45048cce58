//! The subcommands, each a function from parsed arguments to output and an exit code.

use std::collections::BTreeMap;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{Local, Utc};
use tokio_util::sync::CancellationToken;

use super::progress::Display;
use super::table;
use super::{GraphArgs, GraphFormat, LogsArgs, PauseArgs, RunArgs, RunsArgs, ValidateArgs};
use crate::cron::DagFolder;
use crate::dag::{self, render_dot, render_text};
use crate::events::EventSink;
use crate::scheduler::{Engine, EngineSettings, RunOutcome, RunRequest};
use crate::store::{RunFilter, RunState, StateFiles, Store, Trigger};

/// Opens the state database.
fn open(files: &StateFiles) -> anyhow::Result<Arc<dyn Store>> {
    files
        .open()
        .with_context(|| format!("opening the state database {files}"))
}

/// An engine over the state, with default settings; notifications link under `public_url`.
pub(super) fn engine(
    files: &StateFiles,
    public_url: Option<reqwest::Url>,
) -> anyhow::Result<Engine> {
    let mut settings = EngineSettings::new(files.log_dir());
    settings.notify = settings.notify.with_public_url(public_url);
    Ok(Engine::new(open(files)?, settings))
}

/// How long a command waits for its notifications' deliveries before it exits.
const NOTIFY_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits (up to [`NOTIFY_GRACE`]) for the notifications in flight, then prints how each of
/// `run_ids`' deliveries went.
pub(super) async fn drain_notifications(engine: &Engine, run_ids: &[&str]) {
    let notifier = engine.notifier();
    if notifier.in_flight() > 0 {
        eprintln!(
            "Delivering notifications (up to {})...",
            humantime::format_duration(NOTIFY_GRACE)
        );
    }
    tokio::select! {
        _ = notifier.drain(NOTIFY_GRACE) => {}
        _ = tokio::signal::ctrl_c() => {
            eprintln!("SIGINT: not waiting for notifications; those not delivered are recorded as given up");
            notifier.abandon();
            notifier.drain(std::time::Duration::from_secs(5)).await;
        }
    }
    for run_id in run_ids {
        let store = engine.store().clone();
        let id = (*run_id).to_owned();
        if let Ok(Ok(list)) = tokio::task::spawn_blocking(move || store.notifications(&id)).await {
            print_notifications(&list);
        }
    }
}

/// One line per notification delivery: event, target, state, attempts, last answer.
fn print_notifications(list: &[crate::store::NotificationRecord]) {
    for n in list {
        println!(
            "Notified {} to #{} {} ({}): {} after {} attempt(s){}",
            n.event,
            n.target_index,
            n.target,
            n.format,
            n.state,
            n.attempts,
            n.detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
    }
}

/// `orchestrator pause` / `unpause`: sets the flag the cron scheduler of `orchestrator serve`
/// reads (it looks again within a second).
pub fn pause(files: &StateFiles, args: &PauseArgs, paused: bool) -> anyhow::Result<ExitCode> {
    open(files)?
        .set_paused(&args.dag, paused)
        .with_context(|| format!("pausing or unpausing DAG {}", args.dag))?;
    println!(
        "DAG {} {} (in {}); a running `orchestrator serve` on this state sees it within a second",
        args.dag,
        if paused { "paused" } else { "unpaused" },
        files
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn recover(engine: &Engine, dag_id: &str) -> anyhow::Result<()> {
    for run in engine
        .recover(Some(dag_id))
        .context("recovering interrupted runs")?
    {
        eprintln!(
            "note: run {} of DAG {} was interrupted (its orchestrator, pid {}, died); marked failed (`orchestrator resume {}` continues it)",
            run.run_id, run.dag_id, run.owner.pid, run.run_id
        );
    }
    Ok(())
}

/// `orchestrator run FILE`: runs the DAG with live progress, prints a summary, exits 0 iff the run
/// succeeded (1 if it failed, 2 if it could not start).
pub fn run(files: &StateFiles, args: RunArgs) -> anyhow::Result<ExitCode> {
    let dag = match dag::load(&args.file) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "error: {} is not a valid DAG ({} problem(s))",
                args.file.display(),
                e.problems.len()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut settings = EngineSettings::new(files.log_dir());
        settings.kill_grace = args.kill_grace;
        settings.notify = settings.notify.with_public_url(args.public_url.clone());
        let engine = Engine::new(open(files)?, settings);
        recover(&engine, &dag.id)?;
        let (events, rx) = EventSink::channel();
        let request = RunRequest {
            params: args.params.into_iter().collect::<BTreeMap<_, _>>(),
            logical_date: args.logical_date,
            trigger: Trigger::Manual,
        };
        let handle = engine
            .start(dag.clone(), request, events, &CancellationToken::new())
            .context("starting the run")?;
        println!(
            "Run {} of DAG {} ({} tasks); logs under {}",
            handle.run_id(),
            dag.id,
            dag.tasks.len(),
            files
                .log_dir()
                .join(&dag.id)
                .join(handle.run_id())
                .display()
        );
        follow(&engine, &dag, handle, rx, args.no_progress).await
    })
}

/// Shows a run driven by this process until it ends (live state lines and progress bars, Ctrl-C
/// cancels), then its summary and leaf outputs; exit 0 iff it succeeded, 1 otherwise.
pub(super) async fn follow(
    engine: &Engine,
    dag: &Arc<crate::dag::Dag>,
    handle: crate::scheduler::RunHandle,
    rx: tokio::sync::mpsc::UnboundedReceiver<crate::events::RunEvent>,
    no_progress: bool,
) -> anyhow::Result<ExitCode> {
    let canceller = handle.canceller();
    let signals = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            eprintln!("{name}: cancelling the run, stopping its tasks...");
            canceller.cancel(format!("cancelled by {name}"));
        }
    });
    let display = Display::new(dag, !no_progress);
    let shown = tokio::spawn(display.show(rx));
    let outcome = handle.wait().await.context("running the DAG")?;
    let _ = shown.await;
    signals.abort();
    print_summary(&outcome);
    print_leaf_outputs(dag, &outcome, engine.store().as_ref());
    drain_notifications(engine, &[&outcome.run_id]).await;
    Ok(if outcome.state == RunState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_summary(outcome: &RunOutcome) {
    let rows: Vec<Vec<String>> = outcome
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.task_id.clone(),
                t.state.to_string(),
                t.tries.to_string(),
                t.duration()
                    .map(table::duration)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    println!();
    table::print(&["TASK", "STATE", "TRIES", "DURATION"], &rows);
    for t in outcome
        .tasks
        .iter()
        .filter(|t| t.error.is_some() && t.state != crate::store::TaskState::Success)
    {
        println!("  {}: {}", t.task_id, t.error.as_deref().unwrap_or(""));
    }
    let took = outcome
        .tasks
        .iter()
        .filter_map(|t| t.started_at)
        .min()
        .zip(outcome.tasks.iter().filter_map(|t| t.ended_at).max())
        .map(|(a, b)| table::duration((b - a).to_std().unwrap_or_default()))
        .unwrap_or_else(|| "0s".into());
    match &outcome.note {
        Some(note) => println!(
            "\nRun {} {} ({note}) after {took}",
            outcome.run_id, outcome.state
        ),
        None => println!("\nRun {} {} in {took}", outcome.run_id, outcome.state),
    }
}

/// The outputs of the DAG's successful leaf tasks (a benchmark's report task, say): the run's
/// results, shown under the summary so a user need not look them up with `orchestrator runs`.
fn print_leaf_outputs(dag: &crate::dag::Dag, outcome: &RunOutcome, store: &dyn Store) {
    let Ok(instances) = store.task_instances(&outcome.run_id) else {
        return;
    };
    for task in dag.tasks.iter().filter(|t| t.downstream.is_empty()) {
        let Some(instance) = instances
            .iter()
            .find(|i| i.task_id == task.id && i.state == crate::store::TaskState::Success)
        else {
            continue;
        };
        if instance.outputs.is_empty() {
            continue;
        }
        println!("\nOutputs of {}:", task.id);
        let width = instance.outputs.keys().map(String::len).max().unwrap_or(0);
        for (key, value) in &instance.outputs {
            let shown = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("  {key:<width$}  {shown}");
        }
    }
}

/// `orchestrator validate PATH...`: every problem of every DAG file (a folder stands for every
/// `*.toml` under it, recursively, as `serve --dags` reads it); exit 1 if any.
pub fn validate(args: &ValidateArgs) -> ExitCode {
    let mut files = Vec::new();
    let mut bad = 0;
    for path in &args.files {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        match DagFolder::files(path) {
            Ok(found) if found.is_empty() => {
                bad += 1;
                eprintln!(
                    "{}: no *.toml DAG files in this folder or below it",
                    path.display()
                );
            }
            Ok(found) => files.extend(found),
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    // DAG ids are unique across the files validated together, as `serve` requires.
    let mut first_of: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
    for file in &files {
        match dag::load(file) {
            Ok(d) => match first_of.get(&d.id) {
                Some(first) => {
                    bad += 1;
                    eprintln!(
                        "{}: DAG id {:?} is already defined in {}; DAG ids must be unique",
                        file.display(),
                        d.id,
                        first.display()
                    );
                }
                None => {
                    println!(
                        "{}: ok (DAG {}, {} tasks)",
                        file.display(),
                        d.id,
                        d.tasks.len()
                    );
                    first_of.insert(d.id, file.clone());
                }
            },
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    if bad > 0 {
        eprintln!("error: {bad} of {} file(s) invalid", files.len().max(bad));
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `orchestrator graph FILE`.
pub fn graph(args: &GraphArgs) -> anyhow::Result<()> {
    let dag = dag::load(&args.file).map_err(|e| anyhow::anyhow!("{e}"))?;
    match args.format {
        GraphFormat::Text => print!("{}", render_text(&dag)),
        GraphFormat::Dot => print!("{}", render_dot(&dag)),
        GraphFormat::Both => print!("{}\n{}", render_text(&dag), render_dot(&dag)),
    }
    Ok(())
}

/// `orchestrator runs [DAG]`.
pub fn runs(files: &StateFiles, args: &RunsArgs) -> anyhow::Result<()> {
    let engine = engine(files, None)?;
    let store = engine.store();
    if let Some(run_id) = &args.run {
        let Some(run) = store.run(run_id)? else {
            bail!("no run {run_id}; `orchestrator runs` lists them");
        };
        println!(
            "Run {} of DAG {}: {} (logical date {}, params {})",
            run.run_id,
            run.dag_id,
            run.state,
            run.logical_date.to_rfc3339(),
            serde_json::Value::Object(run.params.clone())
        );
        if let Some(note) = &run.note {
            println!("  {note}");
        }
        if let Some(hash) = &run.dag_hash {
            println!(
                "  DAG version {} (sha256 {hash})",
                &hash[..12.min(hash.len())]
            );
        }
        if let Some(notes) = store.run_notes(run_id)? {
            println!(
                "  Notes ({}): {}",
                notes.updated_at.to_rfc3339(),
                notes.text
            );
        }
        for a in store.run_actions(run_id)? {
            let state = a.state.map(|s| format!(" {s}")).unwrap_or_default();
            let reason = a.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            println!(
                "  {} {}{state} by pid {} on {}: {}{reason}",
                a.at.to_rfc3339(),
                a.kind.as_str(),
                a.by.pid,
                a.by.host,
                a.tasks.join(", ")
            );
        }
        let rows: Vec<Vec<String>> = store
            .task_instances(run_id)?
            .into_iter()
            .map(|t| {
                let duration = t
                    .started_at
                    .zip(t.ended_at)
                    .map(|(a, b)| table::duration((b - a).to_std().unwrap_or_default()))
                    .unwrap_or_else(|| "-".into());
                vec![
                    t.task_id,
                    t.state.to_string(),
                    t.try_number.to_string(),
                    duration,
                    t.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    if t.outputs.is_empty() {
                        String::new()
                    } else {
                        serde_json::Value::Object(t.outputs).to_string()
                    },
                    t.error.unwrap_or_default(),
                ]
            })
            .collect();
        let header = [
            "TASK", "STATE", "TRIES", "DURATION", "EXIT", "OUTPUTS", "ERROR",
        ];
        table::print(&header, &rows);
        let notifications = store.notifications(run_id)?;
        if !notifications.is_empty() {
            println!();
            print_notifications(&notifications);
        }
        return Ok(());
    }
    let list = store.runs(&RunFilter {
        dag_id: args.dag.clone(),
        state: None,
        trigger: None,
        limit: args.limit,
    })?;
    if list.is_empty() {
        println!(
            "No runs yet{}.",
            args.dag
                .as_ref()
                .map(|d| format!(" of DAG {d}"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let now = Utc::now();
    let live = crate::store::Liveness::read(store.as_ref())?;
    let rows: Vec<Vec<String>> = list
        .into_iter()
        .map(|r| {
            let end = r.ended_at.unwrap_or(now);
            let interrupted = r.is_orphaned(&|o| live.is_alive(o));
            vec![
                r.run_id,
                r.dag_id,
                if interrupted {
                    "interrupted".to_owned()
                } else {
                    r.state.to_string()
                },
                r.started_at
                    .with_timezone(&Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string(),
                table::duration((end - r.started_at).to_std().unwrap_or_default()),
                r.trigger.as_str().to_owned(),
                format!("pid {} on {}", r.owner.pid, r.owner.host),
                if interrupted {
                    format!(
                        "its orchestrator (pid {}) stopped; `orchestrator resume` or the next `serve` continues it",
                        r.owner.pid
                    )
                } else {
                    r.note.unwrap_or_default()
                },
            ]
        })
        .collect();
    let header = [
        "RUN",
        "DAG",
        "STATE",
        "STARTED",
        "DURATION",
        "TRIGGER",
        "DRIVEN BY",
        "NOTE",
    ];
    table::print(&header, &rows);
    Ok(())
}

/// `orchestrator logs RUN TASK [--try N]`.
pub fn logs(files: &StateFiles, args: &LogsArgs) -> anyhow::Result<()> {
    let store = open(files)?;
    if store.run(&args.run)?.is_none() {
        bail!("no run {}; `orchestrator runs` lists them", args.run);
    }
    let tasks = store.task_instances(&args.run)?;
    if !tasks.iter().any(|t| t.task_id == args.task) {
        let ids: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        bail!(
            "run {} has no task {}; its tasks: {}",
            args.run,
            args.task,
            ids.join(", ")
        );
    }
    let tries = store.tries(&args.run, &args.task)?;
    let Some(last) = tries.last() else {
        bail!(
            "task {} never ran in run {} (no tries)",
            args.task,
            args.run
        );
    };
    let chosen = match args.try_number {
        None => last,
        Some(n) => tries.iter().find(|t| t.try_number == n).with_context(|| {
            format!(
                "task {} has tries 1 to {} in run {}, not {n}",
                args.task, last.try_number, args.run
            )
        })?,
    };
    let Some(path) = &chosen.log_path else {
        bail!(
            "try {} of {} has no log path recorded",
            chosen.try_number,
            args.task
        );
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&bytes)
                .context("writing to stdout")?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "(try {} of {} wrote no log lines)",
                chosen.try_number, args.task
            );
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    Ok(())
}
