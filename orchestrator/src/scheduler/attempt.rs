//! One try of one task: wait for a slot, render nothing (the driver did), run the operator under
//! its timeout and the run's cancellation, and report how it went.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::writer::StoreWriter;
use crate::events::{EventSink, RunEvent};
use crate::operators::{Operator, OperatorError, TaskContext, TaskKind};
use crate::store::{TaskState, TaskUpdate};

/// Everything one try needs, prepared by the driver.
pub(crate) struct Attempt {
    pub index: usize,
    pub task_id: String,
    pub try_number: u32,
    pub kind: TaskKind,
    pub timeout: Option<Duration>,
    pub ctx_builder: crate::operators::TaskContextBuilder,
    pub token: CancellationToken,
    pub run_slots: Arc<Semaphore>,
    pub global_slots: Option<Arc<Semaphore>>,
    pub writer: StoreWriter,
    pub run_id: String,
    pub events: EventSink,
    pub log_path: PathBuf,
    /// How long an operator may take to stop after its token fired before it is abandoned.
    pub stop_grace: Duration,
}

/// How a try ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The operator succeeded.
    Success,
    /// The operator failed (or timed out, or was cancelled), with why.
    Failed(String),
    /// The operator asked to be skipped (a sensor's `soft_fail`), with why.
    Skipped(String),
}

/// How a try went.
#[derive(Debug)]
pub(crate) struct AttemptResult {
    pub index: usize,
    pub try_number: u32,
    /// `None` when the run was cancelled before the try got a slot.
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

impl Attempt {
    pub(crate) async fn run(self) -> AttemptResult {
        let not_started = |index, try_number| AttemptResult {
            index,
            try_number,
            started_at: None,
            ended_at: Utc::now(),
            outcome: Outcome::Failed("cancelled before it started".into()),
            exit_code: None,
            outputs: Default::default(),
        };
        // Slots: this run's, then the engine's. Give up waiting when the run is cancelled.
        let _run_permit = tokio::select! {
            p = self.run_slots.clone().acquire_owned() => p.ok(),
            () = self.token.cancelled() => None,
        };
        if _run_permit.is_none() {
            return not_started(self.index, self.try_number);
        }
        let _global_permit = match &self.global_slots {
            Some(g) => {
                let p = tokio::select! {
                    p = g.clone().acquire_owned() => p.ok(),
                    () = self.token.cancelled() => None,
                };
                if p.is_none() {
                    return not_started(self.index, self.try_number);
                }
                p
            }
            None => None,
        };
        if self.token.is_cancelled() {
            return not_started(self.index, self.try_number);
        }

        let started_at = Utc::now();
        let update = TaskUpdate {
            task_id: self.task_id.clone(),
            try_number: self.try_number,
            state: Some(TaskState::Running),
            at: Some(started_at),
            log_path: Some(self.log_path.clone()),
            ..Default::default()
        };
        self.writer.update(&self.run_id, update);
        self.events.send(RunEvent::TaskState {
            task_id: self.task_id.clone(),
            state: TaskState::Running,
            try_number: self.try_number,
            at: started_at,
            message: None,
        });
        tracing::debug!(run_id = %self.run_id, task_id = %self.task_id, try_number = self.try_number, "Task try started");

        let ctx: TaskContext = self
            .ctx_builder
            .cancel(self.token.clone())
            .log_path(self.log_path.clone())
            .build();
        let mut outcome =
            run_operator(&self.kind, &ctx, &self.token, self.timeout, self.stop_grace).await;
        if let Outcome::Failed(message) = &mut outcome
            && let Some(tail) = ctx.error_tail()
        {
            // Say why where the failure is shown, not only in the try log.
            message.push_str("; last error output: ");
            message.push_str(&tail);
        }
        if let Outcome::Failed(message) | Outcome::Skipped(message) = &mut outcome {
            *message = ctx.mask(message).into_owned();
        }
        match &outcome {
            Outcome::Failed(message) => {
                ctx.log(format!(
                    "[velostream] try {} failed: {message}",
                    self.try_number
                ));
            }
            Outcome::Skipped(message) => {
                ctx.log(format!(
                    "[velostream] try {} skipped: {message}",
                    self.try_number
                ));
            }
            Outcome::Success => {}
        }
        AttemptResult {
            index: self.index,
            try_number: self.try_number,
            started_at: Some(started_at),
            ended_at: Utc::now(),
            outcome,
            exit_code: ctx.exit_code(),
            outputs: ctx.outputs(),
        }
    }
}

/// Runs the operator until it returns, its timeout fires, or the run is cancelled; in the latter
/// cases the token is fired and the operator gets `stop_grace` to clean up (kill its processes)
/// before it is dropped.
async fn run_operator(
    kind: &TaskKind,
    ctx: &TaskContext,
    token: &CancellationToken,
    timeout: Option<Duration>,
    stop_grace: Duration,
) -> Outcome {
    let exec = AssertUnwindSafe(kind.execute(ctx)).catch_unwind();
    tokio::pin!(exec);
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let reason = tokio::select! {
        r = &mut exec => return flatten(r),
        () = deadline => {
            let t = timeout.map(humantime::format_duration).map(|d| d.to_string()).unwrap_or_default();
            ctx.log(format!("[velostream] timed out after {t}; stopping the task"));
            token.cancel();
            format!("timed out after {t}")
        }
        () = token.cancelled() => "cancelled: the run was cancelled".to_owned(),
    };
    match tokio::time::timeout(stop_grace, &mut exec).await {
        Ok(Err(_)) => Outcome::Failed(format!("{reason} (the operator panicked while stopping)")),
        Ok(Ok(_)) => Outcome::Failed(reason),
        Err(_) => {
            ctx.log(format!(
                "[velostream] the operator did not stop within {}; abandoned",
                humantime::format_duration(stop_grace)
            ));
            Outcome::Failed(format!("{reason} (the operator did not stop in time)"))
        }
    }
}

fn flatten(r: Result<Result<(), OperatorError>, Box<dyn std::any::Any + Send>>) -> Outcome {
    match r {
        Ok(Ok(())) => Outcome::Success,
        Ok(Err(OperatorError::Skipped(why))) => Outcome::Skipped(why),
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Outcome::Failed(format!("the operator panicked: {msg}"))
        }
    }
}
