//! What watches a run from outside its tasks: its time bounds (`[dag] run_timeout` cancels it,
//! `[dag] deadline` reports `deadline_miss` once) and its notifications (retries, its end). The
//! run driver asks [`RunWatch::next_limit`] in its loop and calls the hooks; everything else
//! (which targets, messages, delivery) lives in [`crate::notify`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::dag::Dag;
use crate::notify::{Notifier, Occasion, RetryFacts, TaskFacts};
use crate::store::{TaskState, Trigger};

/// A time bound that passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `run_timeout` passed: cancel the run.
    Timeout(Duration),
    /// `deadline` passed while the run goes on.
    DeadlineMiss(DateTime<Utc>),
}

/// One bound: when it passes, and whether it already did.
#[derive(Debug)]
struct Bound {
    at: Instant,
    fired: AtomicBool,
}

impl Bound {
    /// A bound at wall-clock time `at` (already passed: fires at once).
    fn at(at: DateTime<Utc>) -> Self {
        // At most a year ahead: a bound that far is never reached, and Instant must not overflow.
        let left = (at - Utc::now())
            .to_std()
            .unwrap_or_default()
            .min(Duration::from_secs(365 * 24 * 3600));
        Self {
            at: Instant::now() + left,
            fired: AtomicBool::new(false),
        }
    }

    fn pending(&self) -> Option<Instant> {
        (!self.fired.load(Ordering::Relaxed)).then_some(self.at)
    }
}

/// The time bounds and notifications of one run.
#[derive(Debug)]
pub(crate) struct RunWatch {
    dag: Arc<Dag>,
    run_id: String,
    notifier: Notifier,
    timeout: Option<(Bound, Duration)>,
    deadline: Option<(Bound, DateTime<Utc>)>,
}

impl RunWatch {
    /// The watch of a run started at `started_at`: the deadline counts from the schedule slot
    /// (the logical date) for a scheduled run, from the start for any other.
    pub(crate) fn new(
        dag: Arc<Dag>,
        run_id: String,
        notifier: Notifier,
        trigger: Trigger,
        logical_date: DateTime<Utc>,
        started_at: DateTime<Utc>,
    ) -> Self {
        let rules = &dag.run_rules;
        let timeout = rules
            .run_timeout
            .map(|d| (Bound::at(after(started_at, d)), d));
        let from = if trigger == Trigger::Scheduled {
            logical_date
        } else {
            started_at
        };
        let deadline = rules.deadline.map(|d| {
            let at = after(from, d);
            (Bound::at(at), at)
        });
        Self {
            dag,
            run_id,
            notifier,
            timeout,
            deadline,
        }
    }

    /// Whether a bound has yet to pass (the driver waits on [`next_limit`](Self::next_limit)
    /// only then).
    pub(crate) fn armed(&self) -> bool {
        self.timeout
            .as_ref()
            .is_some_and(|(b, _)| b.pending().is_some())
            || self
                .deadline
                .as_ref()
                .is_some_and(|(b, _)| b.pending().is_some())
    }

    /// Completes when the next bound passes, and marks it passed; pending forever when none is
    /// left.
    pub(crate) async fn next_limit(&self) -> Limit {
        let timeout = self
            .timeout
            .as_ref()
            .and_then(|(b, d)| b.pending().map(|at| (at, b, Limit::Timeout(*d))));
        let deadline = self
            .deadline
            .as_ref()
            .and_then(|(b, at)| b.pending().map(|i| (i, b, Limit::DeadlineMiss(*at))));
        let next = [timeout, deadline]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _, _)| *at);
        match next {
            Some((at, bound, limit)) => {
                tokio::time::sleep_until(at).await;
                bound.fired.store(true, Ordering::Relaxed);
                limit
            }
            None => std::future::pending().await,
        }
    }

    /// The run missed its deadline: tell who wants `deadline_miss`.
    pub(crate) fn deadline_missed(&self, deadline: DateTime<Utc>) {
        tracing::warn!(dag_id = %self.dag.id, run_id = %self.run_id, %deadline, "Run missed its deadline");
        self.notifier
            .notify(&self.dag, &self.run_id, Occasion::DeadlineMiss { deadline });
    }

    /// Try `try_number` of `task_id` failed with `error` (its log at `log_path`) and another
    /// follows after `delay`: tell who wants `retry`.
    pub(crate) fn retrying(
        &self,
        task_id: &str,
        try_number: u32,
        error: &str,
        log_path: PathBuf,
        max_tries: u32,
        delay: Duration,
    ) {
        if self.dag.run_rules.notify.is_empty() {
            return;
        }
        let task = TaskFacts {
            task_id: task_id.to_owned(),
            state: TaskState::UpForRetry,
            try_number,
            error: Some(error.to_owned()),
            log_tail: Vec::new(),
            log_url: None,
            log_path: Some(log_path),
        };
        let retry = RetryFacts {
            task_id: task_id.to_owned(),
            try_number,
            max_tries,
            delay_seconds: delay.as_secs_f64(),
        };
        self.notifier
            .notify(&self.dag, &self.run_id, Occasion::Retry { task, retry });
    }

    /// The run's end is recorded: tell who wants `failure`, `success` or `recovered`.
    pub(crate) fn finished(&self) {
        self.notifier
            .notify(&self.dag, &self.run_id, Occasion::Finished);
    }
}

/// `t + d`, saturating.
fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Why a run is cancelled when its `run_timeout` passes (its note).
pub(crate) fn timeout_note(d: Duration) -> String {
    format!(
        "timed out: the run took longer than run_timeout = {}",
        humantime::format_duration(d)
    )
}
