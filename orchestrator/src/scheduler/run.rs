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
use super::rules::{Decision, UpstreamCounts, decide_counts};
use super::writer::StoreWriter;
use super::{EngineSettings, RunOutcome, TaskSummary};
use crate::dag::Dag;
use crate::dag::template::{Scope, render_value};
use crate::events::{EventSink, RunEvent};
use crate::operators::{TaskContext, TaskKind};
use crate::process::ProcessRegistry;
use crate::store::{RunState, Store, TaskState, TaskUpdate};

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

impl RunDriver {
    pub(crate) async fn drive(self) -> RunOutcome {
        let n = self.dag.tasks.len();
        let mut tasks: Vec<TaskRun> = (0..n)
            .map(|i| TaskRun {
                state: TaskState::Pending,
                upstream: UpstreamCounts::new(self.dag.tasks[i].upstream.len()),
                tries: 0,
                started_at: None,
                ended_at: None,
                error: None,
            })
            .collect();
        let mut outputs: HashMap<String, serde_json::Map<String, serde_json::Value>> =
            HashMap::new();
        let processes = Arc::new(ProcessRegistry::new());
        let run_slots = Arc::new(Semaphore::new(self.dag.max_active_tasks.max(1)));
        let mut set: JoinSet<Msg> = JoinSet::new();
        let mut cancelled = false;

        tracing::info!(dag_id = %self.dag.id, run_id = %self.run_id, tasks = n, "Run started");
        let mut ready: Vec<usize> = (0..n)
            .filter(|&i| self.dag.tasks[i].upstream.is_empty())
            .collect();
        loop {
            // Start (or resolve) everything decided since the last event.
            while let Some(i) = ready.pop() {
                if tasks[i].state != TaskState::Pending {
                    continue;
                }
                match decide_counts(self.dag.tasks[i].trigger_rule, tasks[i].upstream) {
                    Decision::Wait => {}
                    Decision::Run => {
                        self.set_state(&mut tasks[i], i, TaskState::Queued, 0, None);
                        if !self.start_try(
                            i,
                            &mut tasks[i],
                            &outputs,
                            &processes,
                            &run_slots,
                            &mut set,
                        ) {
                            propagate(&self.dag, i, &mut tasks, &mut ready);
                        }
                    }
                    Decision::Skip => {
                        self.set_state(&mut tasks[i], i, TaskState::Skipped, 0, None);
                        propagate(&self.dag, i, &mut tasks, &mut ready);
                    }
                    Decision::UpstreamFailed => {
                        self.set_state(&mut tasks[i], i, TaskState::UpstreamFailed, 0, None);
                        propagate(&self.dag, i, &mut tasks, &mut ready);
                    }
                }
            }
            if set.is_empty() {
                break;
            }
            let msg = tokio::select! {
                biased;
                () = self.token.cancelled(), if !cancelled => {
                    cancelled = true;
                    tracing::info!(run_id = %self.run_id, "Run cancelled, stopping its tasks");
                    for (i, t) in tasks.iter_mut().enumerate() {
                        if t.state == TaskState::Pending {
                            self.set_state(t, i, TaskState::Skipped, 0, None);
                        }
                    }
                    continue;
                }
                joined = set.join_next() => match joined {
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
                Msg::RetryDue(i) => {
                    if cancelled {
                        let at = Utc::now();
                        tasks[i].ended_at = Some(at);
                        tasks[i].error = Some("cancelled while waiting to retry".into());
                        self.set_state(
                            &mut tasks[i],
                            i,
                            TaskState::Failed,
                            0,
                            Some("cancelled while waiting to retry".into()),
                        );
                        propagate(&self.dag, i, &mut tasks, &mut ready);
                    } else if !self.start_try(
                        i,
                        &mut tasks[i],
                        &outputs,
                        &processes,
                        &run_slots,
                        &mut set,
                    ) {
                        propagate(&self.dag, i, &mut tasks, &mut ready);
                    }
                }
                Msg::Attempt(r) => {
                    let i = r.index;
                    let task = &self.dag.tasks[i];
                    if r.started_at.is_none() {
                        self.set_state(&mut tasks[i], i, TaskState::Skipped, 0, None);
                        continue;
                    }
                    tasks[i].ended_at = Some(r.ended_at);
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
                                &mut tasks[i],
                                i,
                                TaskState::Skipped,
                                r.try_number,
                                Some(message),
                            );
                            propagate(&self.dag, i, &mut tasks, &mut ready);
                        }
                        Outcome::Success => {
                            self.record(update(TaskState::Success, None));
                            outputs.insert(task.id.clone(), r.outputs.clone());
                            tasks[i].error = None;
                            self.note_state(
                                &mut tasks[i],
                                i,
                                TaskState::Success,
                                r.try_number,
                                None,
                            );
                            propagate(&self.dag, i, &mut tasks, &mut ready);
                        }
                        Outcome::Failed(message) => {
                            let retry = !cancelled && r.try_number <= task.retry.retries;
                            let state = if retry {
                                TaskState::UpForRetry
                            } else {
                                TaskState::Failed
                            };
                            tracing::info!(run_id = %self.run_id, task_id = %task.id, try_number = r.try_number, error = %message, retry, "Task try failed");
                            self.record(update(state, Some(message.clone())));
                            tasks[i].error = Some(message.clone());
                            self.note_state(&mut tasks[i], i, state, r.try_number, Some(message));
                            if retry {
                                let delay = task.retry.delay_before(r.try_number + 1);
                                let token = self.token.clone();
                                set.spawn(async move {
                                    tokio::select! {
                                        () = tokio::time::sleep(delay) => {}
                                        () = token.cancelled() => {}
                                    }
                                    Msg::RetryDue(i)
                                });
                            } else {
                                propagate(&self.dag, i, &mut tasks, &mut ready);
                            }
                        }
                    }
                }
            }
        }

        // Background processes still registered (process.spawn without process.stop) go now.
        for (task_id, result) in processes.stop_all(self.settings.kill_grace).await {
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
        for (i, t) in tasks.iter_mut().enumerate() {
            if !t.state.is_finished() {
                self.set_state(t, i, TaskState::Skipped, 0, None);
            }
        }

        let leaves_ok = self
            .dag
            .leaves()
            .all(|i| matches!(tasks[i].state, TaskState::Success | TaskState::Skipped));
        let state = if cancelled || !leaves_ok {
            RunState::Failed
        } else {
            RunState::Success
        };
        let note = if cancelled {
            Some(
                self.cancel_reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| "cancelled".into()),
            )
        } else {
            None
        };
        self.writer.flush().await;
        if let Err(error) = self.store.finish_run(&self.run_id, state, note.as_deref()) {
            tracing::error!(run_id = %self.run_id, %error, "Cannot record the end of the run");
        }
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
                .zip(&tasks)
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
    fn start_try(
        &self,
        i: usize,
        run: &mut TaskRun,
        outputs: &HashMap<String, serde_json::Map<String, serde_json::Value>>,
        processes: &Arc<ProcessRegistry>,
        run_slots: &Arc<Semaphore>,
        set: &mut JoinSet<Msg>,
    ) -> bool {
        let task = &self.dag.tasks[i];
        run.tries += 1;
        let try_number = run.tries;
        if run.started_at.is_none() {
            run.started_at = Some(Utc::now());
        }
        let kind = if task.templated {
            match self.render(task.id.as_str(), try_number, &task.kind, outputs) {
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
                .processes(processes.clone())
                .events(self.events.clone())
                .store(self.store.clone())
                .kill_grace(self.settings.kill_grace);
        let attempt = Attempt {
            index: i,
            task_id: task.id.clone(),
            try_number,
            kind,
            timeout: task.timeout,
            ctx_builder,
            token: self.token.child_token(),
            run_slots: run_slots.clone(),
            global_slots: self.global_slots.clone(),
            writer: self.writer.clone(),
            run_id: self.run_id.clone(),
            events: self.events.clone(),
            log_path,
            stop_grace: self.settings.kill_grace + Duration::from_secs(5),
        };
        set.spawn(async move { Msg::Attempt(attempt.run().await) });
        true
    }

    fn render(
        &self,
        task_id: &str,
        try_number: u32,
        kind: &TaskKind,
        outputs: &HashMap<String, serde_json::Map<String, serde_json::Value>>,
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
        let mut value = serde_json::to_value(kind)
            .map_err(|e| format!("cannot template the task's fields: {e}"))?;
        render_value(&mut value, &scope).map_err(|e| e.to_string())?;
        serde_json::from_value(value)
            .map_err(|e| format!("the task's fields are invalid after templating: {e}"))
    }

    fn log_path(&self, task_id: &str, try_number: u32) -> PathBuf {
        self.settings
            .log_dir
            .join(&self.dag.id)
            .join(&self.run_id)
            .join(task_id)
            .join(format!("try-{try_number}.log"))
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
