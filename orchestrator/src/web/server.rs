//! Running the server: [`serve`] is `orchestrator serve` (open the state, resume interrupted
//! runs, bind, serve until SIGINT/SIGTERM, then leave the runs it drives resumable, or cancel
//! them with `--cancel-runs-on-exit`, and drain them and the notifications in flight);
//! [`serve_on`] serves an [`AppState`] on a bound listener (tests use it with port 0).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::config::ServeOptions;
use super::router::app;
use super::security::SecurityConfig;
use super::state::AppState;
use crate::cron::{CatchUp, DagFolder, Heartbeat};
use crate::scheduler::EngineSettings;
use crate::store::StateFiles;

/// How long a stopping server waits for notification deliveries in flight.
const NOTIFY_GRACE: Duration = Duration::from_secs(10);

/// How often the metrics look at the store.
const OBSERVE_EVERY: Duration = Duration::from_secs(2);

/// `orchestrator serve`.
pub fn serve(files: &StateFiles, args: ServeOptions) -> anyhow::Result<ExitCode> {
    if !args.bind.ip().is_loopback() && args.token.is_none() && !args.allow_unauthenticated {
        bail!(
            "refusing to serve {} without a token: anyone who reaches it could run DAGs. Pass --token (or VELOSTREAM_UI_TOKEN), bind 127.0.0.1, or pass --allow-unauthenticated",
            args.bind
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let store = files
            .open()
            .with_context(|| format!("opening the state database {files}"))?;
        let folder = DagFolder::open(&args.dags).context("loading the DAGs")?;
        let mut settings = EngineSettings::new(files.log_dir());
        settings.kill_grace = args.kill_grace;
        settings.max_parallel_tasks = args.max_parallel_tasks;
        settings.notify = settings.notify.with_public_url(args.link_base());
        std::fs::create_dir_all(&settings.log_dir).with_context(|| {
            format!("creating the log directory {}", settings.log_dir.display())
        })?;
        let shutdown = CancellationToken::new();
        let policy = if args.catchup {
            CatchUp::All
        } else {
            CatchUp::Latest
        };
        let state = AppState::new(
            store,
            settings,
            Arc::new(folder),
            SecurityConfig::for_bind(args.bind, args.token.clone()),
            policy,
            shutdown.clone(),
        );
        if args.lease.lease <= args.lease.heartbeat {
            bail!(
                "--lease ({:?}) must be longer than --heartbeat ({:?}), or other servers take this one for dead between two heartbeats; the defaults are 30s and 5s",
                args.lease.lease,
                args.lease.heartbeat
            );
        }
        let heartbeat = Heartbeat::new(state.launcher().clone(), args.lease);
        // The lease first: other servers on the state see this one alive before it takes runs.
        heartbeat
            .renew()
            .context("taking this server's lease in the state")?;
        resume_interrupted(&heartbeat)?;
        let listener = TcpListener::bind(args.bind).await.with_context(|| {
            format!(
                "listening on {}; is another server using it? pass --bind",
                args.bind
            )
        })?;
        let loaded = state.folder().snapshot();
        eprintln!(
            "Serving http://{} ({} DAG(s) from {}{}; schedules {}; catch-up {:?}); Ctrl-C stops",
            listener.local_addr().unwrap_or(args.bind),
            loaded.dags.len(),
            args.dags.display(),
            if loaded.errors.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} file(s) with errors shown in the UI",
                    loaded.errors.len()
                )
            },
            if args.no_cron { "off" } else { "on" },
            policy,
        );
        for e in &loaded.errors {
            eprintln!("{}", e.message);
        }
        let signals = shutdown.clone();
        let what = if args.cancel_runs_on_exit {
            "cancelling its runs"
        } else {
            "leaving its runs resumable for the next start"
        };
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            eprintln!("{name}: stopping the server, {what}...");
            signals.cancel();
        });
        let on_exit = if args.cancel_runs_on_exit {
            OnExit::CancelRuns
        } else {
            OnExit::LeaveRunsResumable
        };
        serve_with(
            listener,
            state,
            !args.no_cron,
            args.kill_grace,
            on_exit,
            Some(heartbeat),
        )
        .await
        .context("serving")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Takes over every run whose orchestrator died while it ran (a crash, a kill -9, a server
/// that stopped leaving its runs resumable, a server elsewhere whose lease ran out): each is
/// resumed and driven here. A run whose DAG cannot be read back is marked failed, as are runs of
/// dead owners the resume did not take. The heartbeat does the same while the server runs.
fn resume_interrupted(heartbeat: &Heartbeat) -> anyhow::Result<()> {
    let picked = heartbeat
        .pick_up()
        .context("looking for interrupted runs")?;
    let mut unresumable = Vec::new();
    for p in picked {
        match p {
            Ok(p) => {
                let restarted = p.plan.task_ids();
                eprintln!(
                    "note: resumed run {} of DAG {} (its orchestrator, pid {} on {}, {}){}",
                    p.run.run_id,
                    p.run.dag_id,
                    p.run.owner.pid,
                    p.run.owner.host,
                    if p.lease_expired {
                        "let its lease run out"
                    } else {
                        "stopped"
                    },
                    if restarted.is_empty() {
                        String::new()
                    } else {
                        format!("; starting again: {}", restarted.join(", "))
                    }
                );
            }
            Err(crate::cron::NotPickedUp { run, error }) => {
                eprintln!("warning: cannot resume run {}: {error:#}", run.run_id);
                unresumable.push(run.owner);
            }
        }
    }
    for run in heartbeat
        .close_unresumable(&unresumable)
        .context("recovering interrupted runs")?
    {
        eprintln!(
            "note: run {} of DAG {} was interrupted (its orchestrator, pid {}, died); marked failed",
            run.run_id, run.dag_id, run.owner.pid
        );
    }
    Ok(())
}

/// What a stopping server does with the runs it drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExit {
    /// Cancel them: they end failed with a note.
    CancelRuns,
    /// Stop their tasks but leave them `running` in the store: the next start resumes them.
    LeaveRunsResumable,
}

/// Serves `state` on `listener` until the state's shutdown token fires, with the cron scheduler
/// when `cron` is set; then cancels the runs this server drives and waits for them (their tasks
/// get `kill_grace` to stop).
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    cron: bool,
    kill_grace: Duration,
) -> std::io::Result<()> {
    serve_with(listener, state, cron, kill_grace, OnExit::CancelRuns, None).await
}

/// [`serve_on`], with what to do with the runs at the end, and the server's lease on the state
/// (renewed every heartbeat, runs of dead servers picked up; ended when the runs are drained).
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    cron: bool,
    kill_grace: Duration,
    on_exit: OnExit,
    heartbeat: Option<Heartbeat>,
) -> std::io::Result<()> {
    let shutdown = state.shutdown_token().clone();
    let mut background = tokio::task::JoinSet::new();
    if let Some(heartbeat) = heartbeat.clone() {
        let token = shutdown.clone();
        background.spawn(async move { heartbeat.run(token).await });
    }
    if cron {
        let scheduler = state.cron().clone();
        let token = shutdown.clone();
        background.spawn(async move { scheduler.run(token).await });
    }
    {
        let state = state.clone();
        let token = shutdown.clone();
        background.spawn(async move {
            loop {
                let s = state.clone();
                let observed =
                    tokio::task::spawn_blocking(move || s.metrics().observe(s.store().as_ref()))
                        .await;
                if let Ok(Err(error)) = observed {
                    tracing::warn!(%error, "Cannot read the store for metrics");
                }
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(OBSERVE_EVERY) => {}
                }
            }
        });
    }
    let served = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    shutdown.cancel();
    let deadline = kill_grace + Duration::from_secs(10);
    let drained = match on_exit {
        OnExit::CancelRuns => {
            state
                .launcher()
                .shutdown("cancelled: the server shut down", deadline)
                .await
        }
        OnExit::LeaveRunsResumable => state.launcher().leave_resumable(deadline).await,
    };
    if !drained {
        tracing::warn!("Some runs did not stop in time");
    }
    if let Some(heartbeat) = heartbeat {
        // The runs are drained (ended, or left resumable): other servers may take them now.
        let ended = tokio::task::spawn_blocking(move || heartbeat.end()).await;
        if let Ok(Err(error)) = ended {
            tracing::warn!(%error, "Cannot end this server's lease; other servers take its runs when it runs out");
        }
    }
    let notifier = state.launcher().engine().notifier();
    if notifier.in_flight() > 0 {
        tracing::info!(
            in_flight = notifier.in_flight(),
            "Waiting for notification deliveries"
        );
    }
    if !notifier.drain(NOTIFY_GRACE).await {
        tracing::warn!("Some notifications were not delivered before the server stopped");
    }
    while background.join_next().await.is_some() {}
    served
}
