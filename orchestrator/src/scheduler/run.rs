//! The driver of one DAG run: a single tokio task that owns every task instance's state, queues
//! tasks as their trigger rules are met, retries failed tries after their delay, and decides the
//! run's state from its leaves. Tries run concurrently in a `JoinSet`, bounded by semaphores.
//! A driver starts from a new run (every task pending) or from the stored instances of a run
//! that was cleared, marked or taken over: finished tasks keep their states and outputs, pending
//! ones are decided, and tasks up for retry (interrupted tries) are retried per their policy.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::attempt::{Attempt, AttemptResult, Outcome};
use super::rendered;
use super::rules::{Decision, UpstreamCounts, decide_counts};
use super::watch::{Limit, RunWatch, timeout_note};
use super::writer::StoreWriter;
use super::{EngineSettings, RunOutcome, TaskSummary};
use crate::dag::Dag;
use crate::dag::template::{Scope, TemplatedValue};
use crate::events::{EventSink, RunEvent};
use crate::operators::{Secrets, TaskContext, TaskKind};
use crate::process::ProcessRegistry;
use crate::store::{RunState, Store, TaskInstance, TaskState, TaskUpdate, try_log_path};

/// Counts task `i`'s final state in its downstream tasks and queues them for a decision.
fn propagate(dag: &Dag, i: usize, tasks: &mut [TaskRun], ready: &mut Vec<usize>) {
    let state = tasks[i].state;
    for &d in &dag.tasks[i].downstream {
        tasks[d].upstream.add(state);
        ready.push(d);
    }
}

/// What the driver's `JoinSet` yields.
enum Msg {
    Attempt(AttemptResult),
    RetryDue(usize),
}

pub(crate) struct RunDriver {
    pub dag: Arc<Dag>,
    pub run_id: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub logical_date: DateTime<Utc>,
    pub store: Arc<dyn Store>,
    pub writer: StoreWriter,
    pub events: EventSink,
    pub settings: EngineSettings,
    pub global_slots: Option<Arc<Semaphore>>,
    pub token: CancellationToken,
    pub cancel_reason: Arc<Mutex<Option<String>>>,
    /// Its time bounds and notifications.
    pub watch: RunWatch,
    /// The stored instances to start from; `None` for a new run.
    pub stored: Option<Vec<TaskInstance>>,
    /// Fired to stop driving without ending the run (a server going down that leaves its runs
    /// resumable): tries are stopped like on cancel, nothing more is recorded, the run stays
    /// `running` for the next server (or `orchestrator resume`) to take over.
    pub detach: CancellationToken,
}

struct TaskRun {
    state: TaskState,
    /// Its upstream tasks' outcomes so far.
    upstream: UpstreamCounts,
    tries: u32,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    error: Option<String>,
}

/// Outputs of the tasks that succeeded, by task id (what templates read).
type Outputs = HashMap<String, serde_json::Map<String, serde_json::Value>>;

/// The mutable state of a run while it is driven.
struct Progress {
    tasks: Vec<TaskRun>,
    outputs: Outputs,
    /// Tasks whose trigger rule should be looked at again.
    ready: Vec<usize>,
    /// Tries and retry timers in flight.
    set: JoinSet<Msg>,
    processes: Arc<ProcessRegistry>,
    run_slots: Arc<Semaphore>,
    cancelled: bool,
    /// For a run driven from stored states: each task's ancestors. A task whose direct upstream
    /// tasks were kept may have an ancestor that runs again (a consumer started again below a
    /// kept producer): it waits until every ancestor is finished, as in a new run.
    ancestors: Option<Vec<Vec<usize>>>,
    /// Tasks whose trigger rule is met but an ancestor is not finished yet.
    blocked: Vec<usize>,
}

impl Progress {
    /// Counts task `i`'s final state in its downstream tasks and queues them for a decision.
    fn propagate(&mut self, dag: &Dag, i: usize) {
        propagate(dag, i, &mut self.tasks, &mut self.ready);
        self.ready.append(&mut self.blocked);
    }

    /// Whether task `i` must wait for an ancestor that is not finished.
    fn waits_on_ancestor(&self, i: usize) -> bool {
        self.ancestors
            .as_ref()
            .is_some_and(|anc| anc[i].iter().any(|&a| !self.tasks[a].state.is_finished()))
    }
}

/// Every task's ancestors (the tasks are in topological order).
fn ancestors(dag: &Dag) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::with_capacity(dag.tasks.len());
    for t in &dag.tasks {
        let mut mine: Vec<usize> = t.upstream.clone();
        for &u in &t.upstream {
            mine.extend_from_slice(&out[u]);
        }
        mine.sort_unstable();
        mine.dedup();
        out.push(mine);
    }
    out
}

impl RunDriver {
    /// Drives the run to its end: start what is ready, wait for a try, a retry timer or the
    /// cancel token, repeat; then stop leftover processes and record the run's state.
    pub(crate) async fn drive(mut self) -> RunOutcome {
        let mut p = self.progress();
        tracing::info!(dag_id = %self.dag.id, run_id = %self.run_id, tasks = p.tasks.len(), resumed = self.stored.is_some(), "Run started");
        self.stored = None;
        self.retry_interrupted(&mut p);
        loop {
            self.start_ready(&mut p);
            if p.set.is_empty() {
                break;
            }
            let msg = tokio::select! {
                biased;
                () = self.detach.cancelled() => return self.detach_from(p).await,
                () = self.token.cancelled(), if !p.cancelled => {
                    self.on_cancel(&mut p);
                    continue;
                }
                limit = self.watch.next_limit(), if self.watch.armed() => {
                    self.on_limit(&p, limit);
                    continue;
                }
                joined = p.set.join_next() => match joined {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        // Attempts catch operator panics; a join error means the runtime is going away.
                        tracing::error!(run_id = %self.run_id, error = %e, "A task try was lost");
                        continue;
                    }
                    None => break,
                },
            };
            match msg {
                Msg::RetryDue(i) => self.on_retry_due(&mut p, i),
                Msg::Attempt(r) => self.on_attempt(&mut p, r),
            }
        }
        self.finish(p).await
    }

    /// Every task pending, the roots ready; or, from stored instances, their states, tries and
    /// outputs, the finished ones counted in their downstream tasks, the pending ones ready.
    fn progress(&self) -> Progress {
        let n = self.dag.tasks.len();
        let stored = |i: usize| {
            self.stored
                .as_ref()?
                .iter()
                .find(|ti| ti.task_id == self.dag.tasks[i].id)
        };
        let mut tasks: Vec<TaskRun> = (0..n)
            .map(|i| {
                let ti = stored(i);
                TaskRun {
                    state: match ti.map(|t| t.state) {
                        // A driver never starts with a try in flight: the store's resume rule
                        // turned those into up_for_retry, and queued ones into pending.
                        Some(TaskState::Running) => TaskState::UpForRetry,
                        Some(TaskState::Queued) | None => TaskState::Pending,
                        Some(state) => state,
                    },
                    upstream: UpstreamCounts::new(self.dag.tasks[i].upstream.len()),
                    tries: ti.map_or(0, |t| t.try_number),
                    started_at: ti.and_then(|t| t.started_at),
                    ended_at: ti.and_then(|t| t.ended_at),
                    error: ti.and_then(|t| t.error.clone()),
                }
            })
            .collect();
        let mut outputs = HashMap::new();
        let mut ready = Vec::new();
        for i in 0..n {
            if let Some(ti) = stored(i).filter(|t| t.state == TaskState::Success) {
                outputs.insert(ti.task_id.clone(), ti.outputs.clone());
            }
            if tasks[i].state.is_finished() {
                let mut none = Vec::new();
                propagate(&self.dag, i, &mut tasks, &mut none);
            }
        }
        for (i, t) in tasks.iter().enumerate() {
            if t.state == TaskState::Pending {
                ready.push(i);
            }
        }
        // Decided in topological order: `ready` is a stack.
        ready.reverse();
        Progress {
            tasks,
            outputs,
            ready,
            set: JoinSet::new(),
            processes: Arc::new(ProcessRegistry::new()),
            run_slots: Arc::new(Semaphore::new(self.dag.max_active_tasks.max(1))),
            cancelled: false,
            ancestors: self.stored.is_some().then(|| ancestors(&self.dag)),
            blocked: Vec::new(),
        }
    }

    /// Tasks whose try was interrupted (a run taken over): retried after their delay if their
    /// policy allows another try, else failed.
    fn retry_interrupted(&self, p: &mut Progress) {
        for i in 0..p.tasks.len() {
            if p.tasks[i].state != TaskState::UpForRetry {
                continue;
            }
            let task = &self.dag.tasks[i];
            let tries = p.tasks[i].tries;
            if tries <= task.retry.retries {
                tracing::info!(run_id = %self.run_id, task_id = %task.id, try_number = tries + 1, "Retrying an interrupted try");
                self.schedule_retry(p, i, task.retry.delay_before(tries + 1));
            } else {
                let message = p.tasks[i]
                    .error
                    .clone()
                    .unwrap_or_else(|| crate::store::rules::INTERRUPTED.to_owned());
                p.tasks[i].ended_at = Some(Utc::now());
                self.set_state(&mut p.tasks[i], i, TaskState::Failed, 0, Some(message));
                p.propagate(&self.dag, i);
            }
        }
    }

    /// Starts try `i` again after `delay` (or at once when the run is cancelled meanwhile).
    fn schedule_retry(&self, p: &mut Progress, i: usize, delay: Duration) {
        let token = self.token.clone();
        p.set.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = token.cancelled() => {}
            }
            Msg::RetryDue(i)
        });
    }

    /// Stops driving, leaving the run resumable: its tries are stopped (their process groups
    /// killed) and its background processes stopped, but nothing of it is recorded as ended; the
    /// stored states stay as they were (tries `running`), so a resume counts them interrupted.
    async fn detach_from(self, mut p: Progress) -> RunOutcome {
        tracing::info!(run_id = %self.run_id, "Leaving the run resumable, stopping its tasks");
        // Tries report to this loop, which records nothing more: their stored state stays `running`.
        self.token.cancel();
        while p.set.join_next().await.is_some() {}
        for (task_id, result) in p.processes.stop_all(self.settings.kill_grace).await {
            if let Err(error) = result {
                tracing::warn!(run_id = %self.run_id, task_id, %error, "Cannot stop a background process");
            }
        }
        self.writer.flush().await;
        RunOutcome {
            run_id: self.run_id.clone(),
            dag_id: self.dag.id.clone(),
            state: RunState::Running,
            note: Some("left resumable: its orchestrator stopped".into()),
            tasks: Vec::new(),
        }
    }

    /// Starts (or resolves) every task decided since the last event.
    fn start_ready(&self, p: &mut Progress) {
        while let Some(i) = p.ready.pop() {
            if p.tasks[i].state != TaskState::Pending {
                continue;
            }
            match decide_counts(self.dag.tasks[i].trigger_rule, p.tasks[i].upstream) {
                Decision::Wait => {}
                Decision::Run if p.waits_on_ancestor(i) => p.blocked.push(i),
                Decision::Run => {
                    self.set_state(&mut p.tasks[i], i, TaskState::Queued, 0, None);
                    if !self.start_try(i, p) {
                        p.propagate(&self.dag, i);
                    }
                }
                Decision::Skip => {
                    self.set_state(&mut p.tasks[i], i, TaskState::Skipped, 0, None);
                    p.propagate(&self.dag, i);
                }
                Decision::UpstreamFailed => {
                    self.set_state(&mut p.tasks[i], i, TaskState::UpstreamFailed, 0, None);
                    p.propagate(&self.dag, i);
                }
            }
        }
    }

    /// The run was cancelled: tasks not started are skipped; running tries stop through their
    /// child tokens and come back as failed attempts.
    fn on_cancel(&self, p: &mut Progress) {
        p.cancelled = true;
        tracing::info!(run_id = %self.run_id, "Run cancelled, stopping its tasks");
        for (i, t) in p.tasks.iter_mut().enumerate() {
            if t.state == TaskState::Pending {
                self.set_state(t, i, TaskState::Skipped, 0, None);
            }
        }
    }

    /// A time bound passed: `run_timeout` cancels the run (the note says why), a `deadline`
    /// is reported.
    fn on_limit(&self, p: &Progress, limit: Limit) {
        match limit {
            Limit::Timeout(d) if !p.cancelled => {
                tracing::warn!(dag_id = %self.dag.id, run_id = %self.run_id, run_timeout = %humantime::format_duration(d), "Run timed out, cancelling it");
                self.cancel_reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| timeout_note(d));
                self.token.cancel();
            }
            Limit::Timeout(_) => {}
            Limit::DeadlineMiss(at) => self.watch.deadline_missed(at),
        }
    }

    /// A retry delay has passed: start the next try, unless the run was cancelled meanwhile.
    fn on_retry_due(&self, p: &mut Progress, i: usize) {
        if p.cancelled {
            const MESSAGE: &str = "cancelled while waiting to retry";
            p.tasks[i].ended_at = Some(Utc::now());
            p.tasks[i].error = Some(MESSAGE.into());
            self.set_state(
                &mut p.tasks[i],
                i,
                TaskState::Failed,
                0,
                Some(MESSAGE.into()),
            );
            p.propagate(&self.dag, i);
        } else if !self.start_try(i, p) {
            p.propagate(&self.dag, i);
        }
    }

    /// A try ended: record it, then propagate its outcome or schedule the retry.
    fn on_attempt(&self, p: &mut Progress, r: AttemptResult) {
        let i = r.index;
        let task = &self.dag.tasks[i];
        if r.started_at.is_none() {
            self.set_state(&mut p.tasks[i], i, TaskState::Skipped, 0, None);
            return;
        }
        p.tasks[i].ended_at = Some(r.ended_at);
        let update = |state, error: Option<String>| TaskUpdate {
            task_id: task.id.clone(),
            try_number: r.try_number,
            state: Some(state),
            at: Some(r.ended_at),
            exit_code: r.exit_code,
            error,
            outputs: Some(r.outputs.clone()),
            log_path: None,
        };
        match r.outcome {
            Outcome::Skipped(message) => {
                self.record(update(TaskState::Skipped, Some(message.clone())));
                self.note_state(
                    &mut p.tasks[i],
                    i,
                    TaskState::Skipped,
                    r.try_number,
                    Some(message),
                );
                p.propagate(&self.dag, i);
            }
            Outcome::Success => {
                self.record(update(TaskState::Success, None));
                p.outputs.insert(task.id.clone(), r.outputs.clone());
                p.tasks[i].error = None;
                self.note_state(&mut p.tasks[i], i, TaskState::Success, r.try_number, None);
                p.propagate(&self.dag, i);
            }
            Outcome::Failed(message) => {
                let retry = !p.cancelled && r.try_number <= task.retry.retries;
                let state = if retry {
                    TaskState::UpForRetry
                } else {
                    TaskState::Failed
                };
                tracing::info!(run_id = %self.run_id, task_id = %task.id, try_number = r.try_number, error = %message, retry, "Task try failed");
                self.record(update(state, Some(message.clone())));
                p.tasks[i].error = Some(message.clone());
                self.note_state(&mut p.tasks[i], i, state, r.try_number, Some(message));
                if retry {
                    let delay = task.retry.delay_before(r.try_number + 1);
                    self.watch.retrying(
                        &task.id,
                        r.try_number,
                        p.tasks[i].error.as_deref().unwrap_or_default(),
                        self.log_path(&task.id, r.try_number),
                        task.retry.retries + 1,
                        delay,
                    );
                    self.schedule_retry(p, i, delay);
                } else {
                    p.propagate(&self.dag, i);
                }
            }
        }
    }

    /// Stops the background processes still registered, skips what was never decided, and
    /// records the run's state, decided by its leaves.
    async fn finish(self, mut p: Progress) -> RunOutcome {
        // Background processes still registered (process.spawn without process.stop) go now.
        for (task_id, result) in p.processes.stop_all(self.settings.kill_grace).await {
            match result {
                Ok(exit) => {
                    tracing::info!(run_id = %self.run_id, task_id, %exit, "Stopped a background process at the end of the run")
                }
                Err(error) => {
                    tracing::warn!(run_id = %self.run_id, task_id, %error, "Cannot stop a background process")
                }
            }
        }
        // Anything still undecided (only possible after cancel) is skipped.
        for (i, t) in p.tasks.iter_mut().enumerate() {
            if !t.state.is_finished() {
                self.set_state(t, i, TaskState::Skipped, 0, None);
            }
        }
        let leaves_ok = self
            .dag
            .leaves()
            .all(|i| matches!(p.tasks[i].state, TaskState::Success | TaskState::Skipped));
        let state = if p.cancelled || !leaves_ok {
            RunState::Failed
        } else {
            RunState::Success
        };
        let note = p.cancelled.then(|| {
            self.cancel_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| "cancelled".into())
        });
        self.writer.flush().await;
        if let Err(error) = self.store.finish_run(&self.run_id, state, note.as_deref()) {
            tracing::error!(run_id = %self.run_id, %error, "Cannot record the end of the run");
        }
        self.watch.finished();
        self.events.send(RunEvent::RunFinished { state });
        tracing::info!(dag_id = %self.dag.id, run_id = %self.run_id, state = %state, "Run finished");
        RunOutcome {
            run_id: self.run_id.clone(),
            dag_id: self.dag.id.clone(),
            state,
            note,
            tasks: self
                .dag
                .tasks
                .iter()
                .zip(&p.tasks)
                .map(|(t, r)| TaskSummary {
                    task_id: t.id.clone(),
                    state: r.state,
                    tries: r.tries,
                    started_at: r.started_at,
                    ended_at: r.ended_at,
                    error: r.error.clone(),
                })
                .collect(),
        }
    }

    /// Renders the task's templates and spawns its next try. Returns false when the templates
    /// cannot be rendered: the task is then failed (no retry: it would fail the same way).
    fn start_try(&self, i: usize, p: &mut Progress) -> bool {
        let task = &self.dag.tasks[i];
        let run = &mut p.tasks[i];
        run.tries += 1;
        let try_number = run.tries;
        if run.started_at.is_none() {
            run.started_at = Some(Utc::now());
        }
        let kind = if let Some(templates) = &task.templates {
            match self
                .render(task.id.as_str(), try_number, templates, &p.outputs)
                .and_then(|k| {
                    rendered::check(&self.dag, task.id.as_str(), &k, &self.params).map(|()| k)
                }) {
                Ok(k) => k,
                Err(message) => {
                    let at = Utc::now();
                    run.ended_at = Some(at);
                    run.error = Some(message.clone());
                    // A template that cannot be rendered will not render on a retry either.
                    self.record(TaskUpdate {
                        task_id: task.id.clone(),
                        try_number,
                        state: Some(TaskState::Running),
                        at: Some(at),
                        ..Default::default()
                    });
                    self.record(TaskUpdate {
                        task_id: task.id.clone(),
                        try_number,
                        state: Some(TaskState::Failed),
                        at: Some(at),
                        error: Some(message.clone()),
                        ..Default::default()
                    });
                    self.note_state(run, i, TaskState::Failed, try_number, Some(message));
                    return false;
                }
            }
        } else {
            task.kind.clone()
        };
        let log_path = self.log_path(&task.id, try_number);
        let ctx_builder =
            TaskContext::builder(self.dag.id.clone(), self.run_id.clone(), task.id.clone())
                .try_number(try_number)
                .logical_date(self.logical_date)
                .dag_dir(self.dag.dir.clone())
                .connections(self.dag.connections.clone())
                .processes(p.processes.clone())
                .events(self.events.clone())
                .store(self.store.clone())
                .kill_grace(self.settings.kill_grace)
                .secrets(Secrets::for_run(&self.dag.connections, &self.params));
        let attempt = Attempt {
            index: i,
            task_id: task.id.clone(),
            try_number,
            kind,
            timeout: task.timeout,
            ctx_builder,
            token: self.token.child_token(),
            run_slots: p.run_slots.clone(),
            global_slots: self.global_slots.clone(),
            writer: self.writer.clone(),
            run_id: self.run_id.clone(),
            events: self.events.clone(),
            log_path,
            stop_grace: self.settings.kill_grace + Duration::from_secs(5),
        };
        p.set
            .spawn(async move { Msg::Attempt(attempt.run().await) });
        true
    }

    fn render(
        &self,
        task_id: &str,
        try_number: u32,
        templates: &TemplatedValue,
        outputs: &Outputs,
    ) -> Result<TaskKind, String> {
        let scope = Scope {
            params: &self.params,
            run_id: &self.run_id,
            dag_id: &self.dag.id,
            task_id,
            try_number,
            logical_date: self.logical_date,
            schedule: self.dag.schedule.as_ref(),
            timezone: self.dag.timezone,
            dag_dir: &self.dag.dir,
            connections: &self.dag.connections,
            outputs,
        };
        let value = templates.render(&scope).map_err(|e| e.to_string())?;
        serde_json::from_value(value)
            .map_err(|e| format!("the task's fields are invalid after templating: {e}"))
    }

    fn log_path(&self, task_id: &str, try_number: u32) -> PathBuf {
        try_log_path(
            &self.settings.log_dir,
            &self.dag.id,
            &self.run_id,
            task_id,
            try_number,
        )
    }

    fn record(&self, update: TaskUpdate) {
        self.writer.update(&self.run_id, update);
    }

    /// Records a state change outside any try (queued, skipped, upstream_failed) and announces it.
    fn set_state(
        &self,
        run: &mut TaskRun,
        i: usize,
        state: TaskState,
        try_number: u32,
        message: Option<String>,
    ) {
        let at = Utc::now();
        if state.is_finished() {
            run.ended_at.get_or_insert(at);
        }
        self.record(TaskUpdate {
            task_id: self.dag.tasks[i].id.clone(),
            try_number,
            state: Some(state),
            at: Some(at),
            error: message.clone(),
            ..Default::default()
        });
        self.note_state(run, i, state, try_number, message);
    }

    /// Updates the in-memory state and announces it (the store was written by the caller).
    fn note_state(
        &self,
        run: &mut TaskRun,
        i: usize,
        state: TaskState,
        try_number: u32,
        message: Option<String>,
    ) {
        run.state = state;
        self.events.send(RunEvent::TaskState {
            task_id: self.dag.tasks[i].id.clone(),
            state,
            try_number,
            at: Utc::now(),
            message,
        });
    }
}
