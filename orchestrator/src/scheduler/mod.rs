//! Running DAGs: [`Engine::start`] creates a run in the store and drives it on tokio (trigger
//! rules, bounded parallelism, retries with backoff, timeouts, cancellation), returning a
//! [`RunHandle`] at once; the CLI waits on it, `serve` can start many. A run's `run_timeout`,
//! `deadline` and notifications are watched beside it (`watch`). A run that ended can be
//! repaired and driven again from its stored states ([`Engine::clear`], [`Engine::mark`]); one
//! whose orchestrator died is taken over ([`Engine::resume`]), always with the DAG version it
//! ran. [`Engine::recover`] marks runs whose orchestrator died as failed (resumable) and kills
//! what their tasks left running.

mod attempt;
mod rendered;
pub mod repair;
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

pub use repair::{ClearRequest, PlanError, RepairPlan};
pub use rules::{Decision, decide};

use crate::dag::{Dag, ParamError};
use crate::events::EventSink;
use crate::notify::{Notifier, NotifySettings};
use crate::process::kill_leftover_group;
use crate::store::{
    Liveness, NewRun, Repair, RepairKind, RunFilter, RunRecord, RunState, Store, StoreError,
    TaskState, Trigger, current_owner,
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
    /// A clear request does not fit the run.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The DAG a stored run ran cannot be read back.
    #[error("run {run_id}: cannot load the DAG it ran: {message}")]
    RunDag {
        /// The run.
        run_id: String,
        /// Why.
        message: String,
    },
}

/// A run in progress.
#[derive(Debug)]
pub struct RunHandle {
    run_id: String,
    token: CancellationToken,
    detach: CancellationToken,
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
            detach: self.detach.clone(),
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
    detach: CancellationToken,
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

    /// Stops driving the run without ending it (a server going down): its tries and background
    /// processes are stopped, its stored state stays `running`, and the next `serve` (or
    /// `orchestrator resume`) takes it over; the handle's outcome then has state `running`.
    pub fn leave_resumable(&self) {
        self.detach.cancel();
    }
}

/// A repair applied to a run, and the run driven again.
#[derive(Debug)]
pub struct Repaired {
    /// The task instances it sent back to `pending`.
    pub plan: RepairPlan,
    /// The run, driven again.
    pub handle: RunHandle,
    /// The DAG (the run's own version).
    pub dag: Arc<Dag>,
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

    /// Marks runs (of `dag_id`, or of every DAG) whose orchestrator process died as failed
    /// (unfinished tasks failed or skipped; [`resume`](Self::resume) takes such a run back) and
    /// kills the process groups their tasks had started. `orchestrator run` does it for its DAG
    /// (so an interrupted run does not hold `max_active_runs`); `serve` resumes interrupted runs
    /// and closes only those it cannot resume.
    pub fn recover(&self, dag_id: Option<&str>) -> Result<Vec<RunRecord>, StoreError> {
        self.recover_where(dag_id, None)
    }

    /// [`recover`](Self::recover) for the runs of `owners` only: `serve` closes the runs of dead
    /// owners that a resume could not take, never one whose owner died a moment after it looked
    /// (that one is picked up at the next heartbeat).
    pub fn recover_runs_of(
        &self,
        owners: &[crate::store::Owner],
    ) -> Result<Vec<RunRecord>, StoreError> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        self.recover_where(None, Some(owners))
    }

    fn recover_where(
        &self,
        dag_id: Option<&str>,
        owners: Option<&[crate::store::Owner]>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let me = current_owner();
        let live = self.liveness()?;
        let orphaned = self.store.fail_orphaned_runs(dag_id, &|o| {
            owners.is_some_and(|owners| !owners.contains(o)) || live.is_alive(o)
        })?;
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
            dag_text: Some(dag.source.to_string()),
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
        Ok(self.drive(dag, &run, params, None, events, parent))
    }

    /// Starts a driver for `run`, from `stored` instances or from scratch.
    fn drive(
        &self,
        dag: Arc<Dag>,
        run: &RunRecord,
        params: serde_json::Map<String, serde_json::Value>,
        stored: Option<Vec<crate::store::TaskInstance>>,
        events: EventSink,
        parent: &CancellationToken,
    ) -> RunHandle {
        let token = parent.child_token();
        let detach = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        // A repaired run is bounded again from the repair: its run_timeout and deadline count
        // from now (a scheduled run's deadline from its slot would have passed already).
        let (started, bounds_from) = if stored.is_none() {
            (run.started_at, run.trigger)
        } else {
            (Utc::now(), Trigger::Manual)
        };
        let watch = watch::RunWatch::new(
            dag.clone(),
            run.run_id.clone(),
            self.notifier.clone(),
            bounds_from,
            run.logical_date,
            started,
        );
        let driver = run::RunDriver {
            watch,
            dag,
            run_id: run.run_id.clone(),
            params,
            logical_date: run.logical_date,
            store: self.store.clone(),
            writer: self.writer.clone(),
            events,
            settings: self.settings.clone(),
            global_slots: self.global_slots.clone(),
            token: token.clone(),
            cancel_reason: reason.clone(),
            stored,
            detach: detach.clone(),
        };
        let join = tokio::spawn(driver.drive());
        RunHandle {
            run_id: run.run_id.clone(),
            token,
            detach,
            reason,
            join,
        }
    }

    /// A stored run.
    pub fn stored_run(&self, run_id: &str) -> Result<RunRecord, EngineError> {
        Ok(self
            .store
            .run(run_id)?
            .ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?)
    }

    /// The DAG a stored run ran: its stored version read as its file (relative paths against the
    /// file's directory, `${ENV}` from this process's environment); for a run stored before DAG
    /// versions were kept, its file as it is now.
    pub fn dag_of(&self, run: &RunRecord) -> Result<Arc<Dag>, EngineError> {
        let fail = |message: String| EngineError::RunDag {
            run_id: run.run_id.clone(),
            message,
        };
        let file = run
            .dag_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.toml", run.dag_id)));
        let dag = match &run.dag_hash {
            Some(hash) => {
                let version = self
                    .store
                    .dag_version(hash)?
                    .ok_or_else(|| fail(format!("its DAG version {hash} is not stored")))?;
                crate::dag::parse_as_file(&version.text, &file)
            }
            None => crate::dag::load(&file),
        }
        .map_err(|e| fail(e.to_string()))?;
        if dag.id != run.dag_id {
            return Err(fail(format!(
                "{} defines DAG {}, not {}",
                file.display(),
                dag.id,
                run.dag_id
            )));
        }
        Ok(Arc::new(dag))
    }

    /// What a clear of `run_id` would send back to `pending` (`--dry-run`), without changing it.
    pub fn plan_clear(&self, run_id: &str, req: &ClearRequest) -> Result<RepairPlan, EngineError> {
        let run = self.stored_run(run_id)?;
        let dag = self.dag_of(&run)?;
        let instances = self.store.task_instances(run_id)?;
        Ok(repair::plan_clear(&dag, &instances, req)?)
    }

    /// Clears task instances of an ended run (see [`repair`]) and drives the run again with this
    /// process as its owner, from its stored states and with its own DAG version.
    pub fn clear(
        &self,
        run_id: &str,
        req: &ClearRequest,
        events: EventSink,
        parent: &CancellationToken,
    ) -> Result<Repaired, EngineError> {
        let run = self.stored_run(run_id)?;
        let dag = self.dag_of(&run)?;
        let instances = self.store.task_instances(run_id)?;
        let plan = repair::plan_clear(&dag, &instances, req)?;
        let repair = Repair {
            kind: RepairKind::Clear,
            reset: plan.task_ids(),
            mark: None,
            reason: None,
            owner: current_owner(),
            at: Utc::now(),
        };
        self.apply(run_id, dag, plan, &repair, events, parent)
    }

    /// Sets a task instance of an ended run to `success` or `failed` by hand, with a reason;
    /// the tasks below it whose state followed from it are decided again, and the run is driven
    /// to its end again (its state recomputed).
    pub fn mark(
        &self,
        run_id: &str,
        task_id: &str,
        state: TaskState,
        reason: Option<String>,
        events: EventSink,
        parent: &CancellationToken,
    ) -> Result<Repaired, EngineError> {
        let run = self.stored_run(run_id)?;
        let dag = self.dag_of(&run)?;
        let i = dag
            .index_of(task_id)
            .ok_or_else(|| StoreError::NoSuchTask {
                run_id: run_id.to_owned(),
                task_id: task_id.to_owned(),
            })?;
        let instances = self.store.task_instances(run_id)?;
        let plan = repair::plan_mark(&dag, &instances, i);
        let repair = Repair {
            kind: RepairKind::Mark,
            reset: plan.task_ids(),
            mark: Some((task_id.to_owned(), state)),
            reason,
            owner: current_owner(),
            at: Utc::now(),
        };
        self.apply(run_id, dag, plan, &repair, events, parent)
    }

    /// Takes over a run whose orchestrator died (or that a CLI command closed as interrupted):
    /// kills what its tasks left running, counts the interrupted tries as failed (retried per
    /// their policy, or failed), starts again the background processes it still needs, and
    /// drives it to its end from its stored states, with its own DAG version.
    pub fn resume(
        &self,
        run_id: &str,
        events: EventSink,
        parent: &CancellationToken,
    ) -> Result<Repaired, EngineError> {
        let run = self.stored_run(run_id)?;
        let live = self.liveness()?;
        crate::store::rules::check_repair(&run, RepairKind::Resume, &|o| live.is_alive(o))?;
        let dag = self.dag_of(&run)?;
        let me = current_owner();
        for p in self.store.processes(run_id)? {
            if p.host == me.host && kill_leftover_group(p.pid, p.start_ticks) {
                tracing::warn!(run_id, task_id = %p.task_id, pid = p.pid, "Killed a process group left by the interrupted run");
            }
        }
        let closed = run.was_closed_orphaned();
        let mut instances = self.store.task_instances(run_id)?;
        for ti in &mut instances {
            ti.interrupt(closed);
        }
        let plan = repair::plan_resume(&dag, &instances);
        let repair = Repair {
            kind: RepairKind::Resume,
            reset: plan.task_ids(),
            mark: None,
            reason: None,
            owner: me,
            at: Utc::now(),
        };
        self.apply(run_id, dag, plan, &repair, events, parent)
    }

    /// Whether run owners live: by pid on this host, by server lease elsewhere ([`Liveness`]).
    pub fn liveness(&self) -> Result<Liveness, StoreError> {
        Liveness::read(self.store.as_ref())
    }

    /// Runs whose orchestrator died while they were running (`serve` resumes them at start, and
    /// picks up those of servers whose lease ran out while it serves).
    pub fn interrupted_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let live = self.liveness()?;
        Ok(self
            .store
            .runs(&RunFilter {
                state: Some(RunState::Running),
                ..Default::default()
            })?
            .into_iter()
            .filter(|r| r.is_orphaned(&|o| live.is_alive(o)))
            .collect())
    }

    /// Applies a repair in the store and drives the run from its stored states.
    fn apply(
        &self,
        run_id: &str,
        dag: Arc<Dag>,
        plan: RepairPlan,
        repair: &Repair,
        events: EventSink,
        parent: &CancellationToken,
    ) -> Result<Repaired, EngineError> {
        let live = self.liveness()?;
        let run = self
            .store
            .repair_run(run_id, repair, &|o| live.is_alive(o))?;
        let instances = self.store.task_instances(run_id)?;
        tracing::info!(dag_id = %run.dag_id, run_id, kind = repair.kind.as_str(), tasks = ?plan.task_ids(), "Repaired a run");
        let handle = self.drive(
            dag.clone(),
            &run,
            run.params.clone(),
            Some(instances),
            events,
            parent,
        );
        Ok(Repaired { plan, handle, dag })
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
