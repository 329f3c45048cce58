//! The runs this process drives, whether the cron scheduler or the UI started them, or a repair
//! (clear, mark, resume) drives them again: each is started through the [`Engine`], its events
//! are followed to keep live progress and the time series its tasks record, it can be cancelled,
//! and when the server shuts down all of them are either cancelled or left resumable, and
//! drained. Finished runs live on in the store only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lease::SharingCounters;
use crate::dag::Dag;
use crate::events::{EventSink, RunEvent};
use crate::scheduler::{
    ClearRequest, Engine, EngineError, RepairPlan, Repaired, RunCanceller, RunHandle, RunRequest,
};
use crate::series::{self, SeriesMap};
use crate::store::TaskState;

/// What a running task reported so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LiveTask {
    /// Units done.
    pub done: u64,
    /// Units in total, when known.
    pub total: Option<u64>,
    /// What is counted.
    pub unit: Option<String>,
    /// The time series the task recorded so far, in the stored form of
    /// [`series::OUTPUT_KEY`](crate::series::OUTPUT_KEY).
    #[serde(
        skip_serializing_if = "SeriesMap::is_empty",
        serialize_with = "serialize_series"
    )]
    pub series: SeriesMap,
}

fn serialize_series<S: serde::Serializer>(map: &SeriesMap, s: S) -> Result<S::Ok, S::Error> {
    series::to_output(map).serialize(s)
}

/// A run this process drives, with what its tasks reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LiveRun {
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
    /// Progress per task id.
    pub tasks: BTreeMap<String, LiveTask>,
}

#[derive(Debug)]
struct Entry {
    canceller: RunCanceller,
    live: LiveRun,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    runs: Mutex<HashMap<String, Entry>>,
    finished: Notify,
    counters: SharingCounters,
}

/// Starts and follows runs; cheap to clone.
#[derive(Clone, Debug)]
pub struct Launcher(Arc<Inner>);

impl Launcher {
    /// A launcher over `engine`; runs are cancelled when `shutdown` fires.
    pub fn new(engine: Engine, shutdown: CancellationToken) -> Self {
        Self(Arc::new(Inner {
            engine,
            shutdown,
            tracker: TaskTracker::new(),
            runs: Mutex::new(HashMap::new()),
            finished: Notify::new(),
            counters: SharingCounters::default(),
        }))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    /// What this server counts of the work it shares with other servers on the state.
    pub fn counters(&self) -> &SharingCounters {
        &self.0.counters
    }

    /// Creates a run of `dag` and drives it in the background; returns its id. Blocks on the store
    /// (call it from `spawn_blocking` in async code). Fails when a param does not fit, the DAG
    /// has `max_active_runs` runs going, or the store fails.
    pub fn start(&self, dag: Arc<Dag>, request: RunRequest) -> Result<String, EngineError> {
        let (events, rx) = EventSink::channel();
        let handle = self
            .0
            .engine
            .start(dag.clone(), request, events, &self.0.shutdown)?;
        Ok(self.follow(&dag, handle, rx))
    }

    /// Clears task instances of an ended run and drives it again here (see [`Engine::clear`]).
    pub fn clear(&self, run_id: &str, req: &ClearRequest) -> Result<RepairPlan, EngineError> {
        let (events, rx) = EventSink::channel();
        let repaired = self.0.engine.clear(run_id, req, events, &self.0.shutdown)?;
        Ok(self.follow_repaired(repaired, rx))
    }

    /// Marks a task instance of an ended run and drives it again here (see [`Engine::mark`]).
    pub fn mark(
        &self,
        run_id: &str,
        task_id: &str,
        state: TaskState,
        reason: Option<String>,
    ) -> Result<RepairPlan, EngineError> {
        let (events, rx) = EventSink::channel();
        let repaired =
            self.0
                .engine
                .mark(run_id, task_id, state, reason, events, &self.0.shutdown)?;
        Ok(self.follow_repaired(repaired, rx))
    }

    /// Takes over an interrupted run and drives it here (see [`Engine::resume`]).
    pub fn resume(&self, run_id: &str) -> Result<RepairPlan, EngineError> {
        let (events, rx) = EventSink::channel();
        let repaired = self.0.engine.resume(run_id, events, &self.0.shutdown)?;
        Ok(self.follow_repaired(repaired, rx))
    }

    /// Follows a repaired run; returns what the repair reset.
    fn follow_repaired(
        &self,
        repaired: Repaired,
        rx: tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
    ) -> RepairPlan {
        let Repaired { plan, handle, dag } = repaired;
        self.follow(&dag, handle, rx);
        plan
    }

    /// Keeps a run's entry and follows its events until it ends; returns its id.
    fn follow(
        &self,
        dag: &Dag,
        handle: RunHandle,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
    ) -> String {
        let run_id = handle.run_id().to_owned();
        self.lock().insert(
            run_id.clone(),
            Entry {
                canceller: handle.canceller(),
                live: LiveRun {
                    dag_id: dag.id.clone(),
                    run_id: run_id.clone(),
                    tasks: BTreeMap::new(),
                },
            },
        );
        let this = self.clone();
        let id = run_id.clone();
        self.0.tracker.spawn(async move {
            while let Some(event) = rx.recv().await {
                if matches!(event, RunEvent::RunFinished { .. }) {
                    break;
                }
                this.note(&id, event);
            }
            if let Err(error) = handle.wait().await {
                tracing::error!(run_id = %id, %error, "A run's driver failed");
            }
            this.lock().remove(&id);
            this.0.finished.notify_waiters();
        });
        run_id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note(&self, run_id: &str, event: RunEvent) {
        let mut runs = self.lock();
        let Some(entry) = runs.get_mut(run_id) else {
            return;
        };
        match event {
            RunEvent::Progress {
                task_id,
                done,
                total,
                unit,
            } => {
                let task = entry.live.tasks.entry(task_id).or_default();
                task.done = done;
                task.total = total;
                task.unit = unit;
            }
            RunEvent::Point {
                task_id,
                series: name,
                unit,
                at_ms,
                value,
            } => {
                let task = entry.live.tasks.entry(task_id).or_default();
                series::record(&mut task.series, &name, &unit, at_ms, value);
            }
            RunEvent::TaskState { .. } | RunEvent::RunFinished { .. } => {}
        }
    }

    /// What a run driven here reported so far; `None` for runs not driven by this process (or
    /// already finished).
    pub fn live(&self, run_id: &str) -> Option<LiveRun> {
        self.lock().get(run_id).map(|e| e.live.clone())
    }

    /// Whether this process drives the run.
    pub fn drives(&self, run_id: &str) -> bool {
        self.lock().contains_key(run_id)
    }

    /// Cancels a run driven here; returns false when it is not.
    pub fn cancel(&self, run_id: &str, reason: &str) -> bool {
        match self.lock().get(run_id) {
            Some(e) => {
                e.canceller.cancel(reason);
                true
            }
            None => false,
        }
    }

    /// The runs this process drives now.
    pub fn driven_runs(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Stops driving one run without ending it (see [`RunCanceller::leave_resumable`]): another
    /// server took it over. Returns false when it is not driven here.
    pub fn abandon(&self, run_id: &str) -> bool {
        match self.lock().get(run_id) {
            Some(e) => {
                e.canceller.leave_resumable();
                true
            }
            None => false,
        }
    }

    /// How many runs this process drives now.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    /// Completes when one of the runs driven here ends.
    pub async fn run_finished(&self) {
        self.0.finished.notified().await;
    }

    /// Stops driving every run without ending it (see [`RunCanceller::leave_resumable`]) and
    /// waits up to `deadline` for their tasks to stop; the next `serve` resumes them. Returns
    /// whether all stopped in time.
    pub async fn leave_resumable(&self, deadline: Duration) -> bool {
        for entry in self.lock().values() {
            entry.canceller.leave_resumable();
        }
        self.0.tracker.close();
        tokio::time::timeout(deadline, self.0.tracker.wait())
            .await
            .is_ok()
    }

    /// Cancels every run with `reason` and waits up to `deadline` for them to stop (their tasks'
    /// processes killed); returns whether all stopped in time.
    pub async fn shutdown(&self, reason: &str, deadline: Duration) -> bool {
        for entry in self.lock().values() {
            entry.canceller.cancel(reason);
        }
        self.0.shutdown.cancel();
        self.0.tracker.close();
        tokio::time::timeout(deadline, self.0.tracker.wait())
            .await
            .is_ok()
    }
}
