//! Running DAGs: [`Engine::start`] creates a run in the store and drives it on tokio (trigger
//! rules, bounded parallelism, retries with backoff, timeouts, cancellation), returning a
//! [`RunHandle`] at once; the CLI waits on it, `serve` can start many. A run's `run_timeout`,
//! `deadline` and notifications are watched beside it (`watch`). [`Engine::recover`] marks runs
//! whose orchestrator died as failed and kills what their tasks left running.

mod attempt;
mod rendered;
mod rules;
mod run;
mod watch;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use rules::{Decision, decide};

use crate::dag::{Dag, ParamError};
use crate::events::EventSink;
use crate::notify::{Notifier, NotifySettings};
use crate::process::kill_leftover_group;
use crate::store::{
    NewRun, RunRecord, RunState, Store, StoreError, TaskState, Trigger, current_owner, is_alive,
};

/// Engine-wide settings.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Where try logs go: `<log_dir>/<dag>/<run>/<task>/try-<n>.log`.
    pub log_dir: PathBuf,
    /// Grace between SIGTERM and SIGKILL when stopping a task's processes.
    pub kill_grace: Duration,
    /// Tasks running at once across all runs of this engine (`None`: only per-DAG limits).
    pub max_parallel_tasks: Option<usize>,
    /// How `[[dag.notify]]` messages are delivered (and the public URL they link to).
    pub notify: NotifySettings,
}

impl EngineSettings {
    /// Settings with logs under `log_dir`, a 5 s kill grace and no engine-wide limit.
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        Self {
            log_dir: log_dir.into(),
            kill_grace: Duration::from_secs(5),
            max_parallel_tasks: None,
            notify: NotifySettings::default(),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Param overrides (`--param k=v`, the UI's form), read as each default's type.
    pub params: BTreeMap<String, String>,
    /// The logical date; default: now.
    pub logical_date: Option<DateTime<Utc>>,
    /// What started it.
    pub trigger: Trigger,
}

impl Default for RunRequest {
    fn default() -> Self {
        Self {
            params: BTreeMap::new(),
            logical_date: None,
            trigger: Trigger::Manual,
        }
    }
}

/// How one task ended in a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskSummary {
    /// The task.
    pub task_id: String,
    /// Final state.
    pub state: TaskState,
    /// Tries made.
    pub tries: u32,
    /// Start of the first try.
    pub started_at: Option<DateTime<Utc>>,
    /// End of the last try (or when it was skipped).
    pub ended_at: Option<DateTime<Utc>>,
    /// Error of the last failed try.
    pub error: Option<String>,
}

impl TaskSummary {
    /// Time from the first try's start to the last one's end.
    pub fn duration(&self) -> Option<Duration> {
        Some(
            (self.ended_at? - self.started_at?)
                .to_std()
                .unwrap_or_default(),
        )
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunOutcome {
    /// The run.
    pub run_id: String,
    /// The DAG.
    pub dag_id: String,
    /// Its final state.
    pub state: RunState,
    /// Why it was cancelled, if it was.
    pub note: Option<String>,
    /// Every task, in topological order.
    pub tasks: Vec<TaskSummary>,
}

/// Errors starting or waiting for a run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A param override does not fit.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run's driver task died (a bug, or the runtime shutting down).
    #[error("the run's driver stopped unexpectedly: {0}")]
    Driver(String),
}

/// A run in progress.
#[derive(Debug)]
pub struct RunHandle {
    run_id: String,
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    join: JoinHandle<RunOutcome>,
}

impl RunHandle {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Cancels the run: running tries are stopped (their process groups killed), tasks not yet
    /// started are skipped, the run ends failed with `reason` as its note.
    pub fn cancel(&self, reason: impl Into<String>) {
        self.canceller().cancel(reason);
    }

    /// A cloneable way to cancel the run from elsewhere (a signal handler, a web request).
    pub fn canceller(&self) -> RunCanceller {
        RunCanceller {
            token: self.token.clone(),
            reason: self.reason.clone(),
        }
    }

    /// The token that cancels the run (fire it to cancel without a reason).
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Waits for the run to end.
    pub async fn wait(self) -> Result<RunOutcome, EngineError> {
        self.join
            .await
            .map_err(|e| EngineError::Driver(e.to_string()))
    }
}

/// Cancels a run; see [`RunHandle::cancel`].
#[derive(Clone, Debug)]
pub struct RunCanceller {
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl RunCanceller {
    /// Cancels the run with `reason` as its note (the first reason given wins).
    pub fn cancel(&self, reason: impl Into<String>) {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| reason.into());
        self.token.cancel();
    }
}

/// Runs DAGs against a store.
#[derive(Clone, Debug)]
pub struct Engine {
    store: Arc<dyn Store>,
    writer: writer::StoreWriter,
    settings: EngineSettings,
    global_slots: Option<Arc<Semaphore>>,
    notifier: Notifier,
}

impl Engine {
    /// An engine over `store`.
    pub fn new(store: Arc<dyn Store>, settings: EngineSettings) -> Self {
        let global_slots = settings
            .max_parallel_tasks
            .map(|n| Arc::new(Semaphore::new(n.max(1))));
        Self {
            writer: writer::StoreWriter::spawn(store.clone()),
            notifier: Notifier::new(store.clone(), settings.notify.clone()),
            store,
            settings,
            global_slots,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The notifier of this engine's runs (drain it before the process exits).
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Marks runs whose orchestrator process died as failed (unfinished tasks failed or skipped)
    /// and kills the process groups their tasks had started. Call it when a process opens the
    /// store (the CLI does on `run` and `runs`; `serve` at start-up).
    pub fn recover(&self) -> Result<Vec<RunRecord>, StoreError> {
        let me = current_owner();
        let orphaned = self.store.fail_orphaned_runs(&is_alive)?;
        let mut runs = Vec::with_capacity(orphaned.len());
        for (run, processes) in orphaned {
            tracing::warn!(dag_id = %run.dag_id, run_id = %run.run_id, owner_pid = run.owner.pid, "Marked an interrupted run failed");
            for p in processes.iter().filter(|p| p.host == me.host) {
                if kill_leftover_group(p.pid, p.start_ticks) {
                    tracing::warn!(run_id = %run.run_id, task_id = %p.task_id, pid = p.pid, "Killed a process group left by the interrupted run");
                }
            }
            runs.push(run);
        }
        Ok(runs)
    }

    /// Creates a run of `dag` in the store and starts driving it in the background. Fails when
    /// a param override does not fit or the DAG already has `max_active_runs` runs. The run stops
    /// early when `parent` (e.g. the server's shutdown token) or the handle is cancelled.
    pub fn start(
        &self,
        dag: Arc<Dag>,
        request: RunRequest,
        events: EventSink,
        parent: &CancellationToken,
    ) -> Result<RunHandle, EngineError> {
        let params = dag.resolve_params(&request.params)?;
        let now = Utc::now();
        let logical_date = request.logical_date.unwrap_or(now);
        let run = self.store.create_run(&NewRun {
            run_id: format!(
                "{}__{}",
                request.trigger.as_str(),
                logical_date.to_rfc3339_opts(SecondsFormat::Millis, true)
            ),
            dag_id: dag.id.clone(),
            dag_file: dag.file.clone(),
            trigger: request.trigger,
            logical_date,
            params: params.clone(),
            task_ids: dag.tasks.iter().map(|t| t.id.clone()).collect(),
            owner: current_owner(),
            max_active_runs: Some(dag.max_active_runs),
            started_at: now,
        })?;
        let token = parent.child_token();
        let reason = Arc::new(Mutex::new(None));
        let watch = watch::RunWatch::new(
            dag.clone(),
            run.run_id.clone(),
            self.notifier.clone(),
            request.trigger,
            logical_date,
            now,
        );
        let driver = run::RunDriver {
            watch,
            dag,
            run_id: run.run_id.clone(),
            params,
            logical_date,
            store: self.store.clone(),
            writer: self.writer.clone(),
            events,
            settings: self.settings.clone(),
            global_slots: self.global_slots.clone(),
            token: token.clone(),
            cancel_reason: reason.clone(),
        };
        let join = tokio::spawn(driver.drive());
        Ok(RunHandle {
            run_id: run.run_id,
            token,
            reason,
            join,
        })
    }

    /// Starts a run and waits for it.
    pub async fn run(
        &self,
        dag: Arc<Dag>,
        request: RunRequest,
        events: EventSink,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, EngineError> {
        self.start(dag, request, events, cancel)?.wait().await
    }
}
