//! The driver of one DAG run: a single tokio task that owns every task instance's state, queues
//! tasks as their trigger rules are met, retries failed tries after their delay, and decides the
//! run's state from its leaves. Tries run concurrently in a `JoinSet`, bounded by semaphores.

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
use crate::store::{RunState, Store, TaskState, TaskUpdate, try_log_path};

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
}

impl Progress {
    /// Counts task `i`'s final state in its downstream tasks and queues them for a decision.
    fn propagate(&mut self, dag: &Dag, i: usize) {
        propagate(dag, i, &mut self.tasks, &mut self.ready);
    }
}

impl RunDriver {
    /// Drives the run to its end: start what is ready, wait for a try, a retry timer or the
    /// cancel token, repeat; then stop leftover processes and record the run's state.
    pub(crate) async fn drive(self) -> RunOutcome {
        let mut p = self.progress();
        tracing::info!(dag_id = %self.dag.id, run_id = %self.run_id, tasks = p.tasks.len(), "Run started");
        loop {
            self.start_ready(&mut p);
            if p.set.is_empty() {
                break;
            }
            let msg = tokio::select! {
                biased;
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

    /// Every task pending, the roots ready.
    fn progress(&self) -> Progress {
        let n = self.dag.tasks.len();
        Progress {
            tasks: (0..n)
                .map(|i| TaskRun {
                    state: TaskState::Pending,
                    upstream: UpstreamCounts::new(self.dag.tasks[i].upstream.len()),
                    tries: 0,
                    started_at: None,
                    ended_at: None,
                    error: None,
                })
                .collect(),
            outputs: HashMap::new(),
            ready: (0..n)
                .filter(|&i| self.dag.tasks[i].upstream.is_empty())
                .collect(),
            set: JoinSet::new(),
            processes: Arc::new(ProcessRegistry::new()),
            run_slots: Arc::new(Semaphore::new(self.dag.max_active_tasks.max(1))),
            cancelled: false,
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
                    let token = self.token.clone();
                    p.set.spawn(async move {
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = token.cancelled() => {}
                        }
                        Msg::RetryDue(i)
                    });
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
