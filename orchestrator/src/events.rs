//! Live events of a run (task state changes, progress, the run's end), sent to whoever watches it:
//! the terminal progress display of `orchestrator run`, and later the web UI.

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::store::{RunState, TaskState};

/// Something that happened in a run.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEvent {
    /// A task instance moved to a new state.
    TaskState {
        /// The task.
        task_id: String,
        /// Its new state.
        state: TaskState,
        /// The try the state belongs to (0 before the first try).
        try_number: u32,
        /// When it happened.
        at: DateTime<Utc>,
        /// Why, for failures (the error message).
        message: Option<String>,
    },
    /// A running task reported progress (`::velostream:: {"progress": ...}` or `ctx.set_progress`).
    Progress {
        /// The task.
        task_id: String,
        /// Units done so far.
        done: u64,
        /// Units in total, when known.
        total: Option<u64>,
        /// What is counted (`rows`, `bytes`...).
        unit: Option<String>,
    },
    /// A running task recorded a point of one of its time series
    /// ([`TaskContext::record_point`](crate::operators::TaskContext::record_point)).
    Point {
        /// The task.
        task_id: String,
        /// The series' name.
        series: String,
        /// Its unit.
        unit: String,
        /// When, in Unix milliseconds.
        at_ms: i64,
        /// The value.
        value: i64,
    },
    /// The run finished.
    RunFinished {
        /// Its final state.
        state: RunState,
    },
}

/// Where events go: nowhere, or an unbounded channel (events are small and a run is finite).
#[derive(Clone, Debug, Default)]
pub struct EventSink(Option<mpsc::UnboundedSender<RunEvent>>);

impl EventSink {
    /// A sink that drops every event.
    pub fn none() -> Self {
        Self(None)
    }

    /// A sink and the receiver that gets its events.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<RunEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(Some(tx)), rx)
    }

    /// Sends an event; a receiver that went away is not an error.
    pub fn send(&self, event: RunEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}
