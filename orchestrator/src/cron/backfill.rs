//! Backfill: one run per schedule slot in a past range, oldest first, at most N at once, with
//! the trigger `backfill`. [`plan`] decides what happens to each slot (run, run again, skip) from
//! the runs the store has; [`execute`] starts the runs through the [`Launcher`] and follows them
//! until all end or the backfill is cancelled (its running runs are then cancelled too).
//! [`Backfills`] keeps the backfills a server drives, for the UI and the API.
//!
//! A slot never runs twice at once: the store refuses a run while another run of the DAG with the
//! same logical date is running ([`StoreError::SlotBusy`]), whoever started it (the cron
//! scheduler, another backfill); such a slot is reported as `running elsewhere` and skipped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::launcher::Launcher;
use super::policy::slots_between;
use crate::dag::Dag;
use crate::scheduler::{EngineError, RunRequest};
use crate::store::{RunFilter, RunState, Store, StoreError, Trigger};

/// At most this many slots in one backfill.
pub const MAX_SLOTS: usize = 10_000;

/// Which slots that already ran are run again.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Reprocess {
    /// Only slots without a finished run (the default).
    #[default]
    None,
    /// Also slots whose latest run failed.
    Failed,
    /// Every slot, even those that succeeded.
    All,
}

impl std::str::FromStr for Reprocess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "" => Ok(Self::None),
            "failed" => Ok(Self::Failed),
            "all" => Ok(Self::All),
            other => Err(format!(
                "unknown reprocess {other:?}; write none, failed or all"
            )),
        }
    }
}

/// A `--from`/`--to` that is not a date.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a date; write 2026-03-01 or 2026-03-01T09:00:00+01:00")]
pub struct BadDate(pub String);

/// Reads a range bound: RFC 3339, or a date in `tz` (its first instant, or with `end_of_day`
/// its last, so `--to 2026-03-31` takes in the whole day).
pub fn parse_date(s: &str, tz: chrono_tz::Tz, end_of_day: bool) -> Result<DateTime<Utc>, BadDate> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| BadDate(s.to_owned()))?;
    let next = day.succ_opt().ok_or_else(|| BadDate(s.to_owned()))?;
    let midnight = |d: chrono::NaiveDate| {
        crate::dag::timezone::slot_instant(tz, d.and_time(chrono::NaiveTime::MIN))
    };
    Ok(if end_of_day {
        midnight(next) - chrono::Duration::nanoseconds(1)
    } else {
        midnight(day)
    })
}

/// What a backfill does with one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// No run yet: run it.
    Run,
    /// It ran before; `--reprocess` says run it again.
    Rerun,
    /// It already succeeded.
    SkipSucceeded,
    /// It failed before (`--reprocess failed` or `all` would run it again).
    SkipFailed,
    /// A run of it is running now.
    SkipRunning,
}

impl Action {
    /// Whether the backfill starts a run for the slot.
    pub fn runs(self) -> bool {
        matches!(self, Self::Run | Self::Rerun)
    }

    /// In words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Rerun => "run again",
            Self::SkipSucceeded => "skip: already succeeded",
            Self::SkipFailed => "skip: failed before (--reprocess failed runs it again)",
            Self::SkipRunning => "skip: running now",
        }
    }
}

/// One slot of a backfill.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedSlot {
    /// The slot (the run's logical date).
    pub logical_date: DateTime<Utc>,
    /// Its data interval's start (the previous slot).
    pub data_interval_start: DateTime<Utc>,
    /// What happens to it.
    pub action: Action,
    /// The latest existing run of the slot, with its state.
    pub existing: Option<(String, RunState)>,
}

/// A backfill that cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The DAG has no schedule.
    #[error("DAG {0} has no schedule, so it has no slots to backfill; add `schedule` under [dag]")]
    NoSchedule(String),
    /// `from` after `to`.
    #[error("the range is empty: --from {from} is after --to {to}")]
    EmptyRange {
        /// Start.
        from: DateTime<Utc>,
        /// End.
        to: DateTime<Utc>,
    },
    /// Too many slots.
    #[error(
        "the range holds more than {MAX_SLOTS} slots of the schedule; backfill a shorter range at a time"
    )]
    TooManySlots,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The slots of `dag` with logical dates in `[from, to]`, oldest first, and what to do with each.
pub fn plan(
    dag: &Dag,
    store: &dyn Store,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    reprocess: Reprocess,
) -> Result<Vec<PlannedSlot>, BackfillError> {
    let schedule = dag
        .schedule
        .as_ref()
        .ok_or_else(|| BackfillError::NoSchedule(dag.id.clone()))?;
    if from > to {
        return Err(BackfillError::EmptyRange { from, to });
    }
    let (slots, dropped) = slots_between(
        schedule,
        from - chrono::Duration::nanoseconds(1),
        to,
        MAX_SLOTS + 1,
    );
    if dropped > 0 || slots.len() > MAX_SLOTS {
        return Err(BackfillError::TooManySlots);
    }
    // The latest run of each logical date (runs come newest first).
    let mut latest: HashMap<DateTime<Utc>, (String, RunState)> = HashMap::new();
    for r in store.runs(&RunFilter {
        dag_id: Some(dag.id.clone()),
        ..RunFilter::default()
    })? {
        latest
            .entry(r.logical_date)
            .or_insert((r.run_id.clone(), r.state));
    }
    Ok(slots
        .into_iter()
        .map(|slot| {
            let existing = latest.get(&slot).cloned();
            let action = match (&existing, reprocess) {
                (None, _) => Action::Run,
                (Some((_, RunState::Running)), _) => Action::SkipRunning,
                (Some(_), Reprocess::All) => Action::Rerun,
                (Some((_, RunState::Success)), _) => Action::SkipSucceeded,
                (Some(_), Reprocess::Failed) => Action::Rerun,
                (Some(_), Reprocess::None) => Action::SkipFailed,
            };
            PlannedSlot {
                logical_date: slot,
                data_interval_start: schedule.prev_before(slot).unwrap_or(slot),
                action,
                existing,
            }
        })
        .collect())
}

/// How a backfill is going.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Progress {
    /// Slots in the range.
    pub total: usize,
    /// Slots skipped (see the plan, and slots found running elsewhere).
    pub skipped: usize,
    /// Runs that succeeded.
    pub succeeded: usize,
    /// Runs that failed (or could not start).
    pub failed: usize,
    /// Runs cancelled.
    pub cancelled: usize,
    /// Runs going now.
    pub running: usize,
    /// Runs started so far, oldest slot first.
    pub run_ids: Vec<String>,
    /// Whether the backfill was cancelled.
    pub cancel_requested: bool,
    /// Whether it is over.
    pub finished: bool,
}

impl Progress {
    /// Slots dealt with (skipped or run to the end).
    pub fn done(&self) -> usize {
        self.skipped + self.succeeded + self.failed + self.cancelled
    }
}

/// Runs the planned slots that need a run, oldest first, at most `max_active` at once, until all
/// end or `cancel` fires; calls `report` after every change. Blocking store calls are made on
/// tokio's blocking pool.
pub async fn execute(
    launcher: &Launcher,
    dag: Arc<Dag>,
    slots: &[PlannedSlot],
    max_active: usize,
    cancel: &CancellationToken,
    report: &(dyn Fn(&Progress) + Send + Sync),
) -> Progress {
    let max_active = max_active.max(1);
    let mut progress = Progress {
        total: slots.len(),
        skipped: slots.iter().filter(|s| !s.action.runs()).count(),
        ..Progress::default()
    };
    let mut queue: VecDeque<DateTime<Utc>> = slots
        .iter()
        .filter(|s| s.action.runs())
        .map(|s| s.logical_date)
        .collect();
    let mut active: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    report(&progress);
    loop {
        if cancel.is_cancelled() && !progress.cancel_requested {
            progress.cancel_requested = true;
            progress.cancelled += queue.len();
            queue.clear();
            for run_id in active.keys() {
                launcher.cancel(run_id, "the backfill was cancelled");
            }
            report(&progress);
        }
        // Start what the limit allows.
        while active.len() < max_active {
            let Some(slot) = queue.pop_front() else {
                break;
            };
            let l = launcher.clone();
            let d = dag.clone();
            let started = tokio::task::spawn_blocking(move || {
                l.start(
                    d,
                    RunRequest {
                        params: BTreeMap::new(),
                        logical_date: Some(slot),
                        trigger: Trigger::Backfill,
                    },
                )
            })
            .await;
            match started {
                Ok(Ok(run_id)) => {
                    tracing::info!(dag_id = %dag.id, %run_id, slot = %slot, "Started a backfill run");
                    progress.run_ids.push(run_id.clone());
                    active.insert(run_id, slot);
                }
                Ok(Err(EngineError::Store(StoreError::SlotBusy { run_id, .. }))) => {
                    tracing::info!(dag_id = %dag.id, slot = %slot, holder = %run_id, "Backfill slot skipped: it is running elsewhere");
                    progress.skipped += 1;
                }
                Ok(Err(EngineError::Store(StoreError::TooManyActiveRuns { .. }))) => {
                    // The DAG's own max_active_runs is reached (cron runs count): wait for one.
                    queue.push_front(slot);
                    break;
                }
                Ok(Err(error)) => {
                    tracing::error!(dag_id = %dag.id, slot = %slot, %error, "Cannot start a backfill run");
                    progress.failed += 1;
                }
                Err(error) => {
                    tracing::error!(dag_id = %dag.id, %error, "The backfill's start task failed");
                    progress.failed += 1;
                }
            }
        }
        progress.running = active.len();
        report(&progress);
        if active.is_empty() && queue.is_empty() {
            break;
        }
        tokio::select! {
            () = launcher.run_finished() => {}
            () = cancel.cancelled(), if !progress.cancel_requested => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        // Runs this launcher no longer drives have ended: read how.
        let ended: Vec<String> = active
            .keys()
            .filter(|id| !launcher.drives(id))
            .cloned()
            .collect();
        for run_id in ended {
            active.remove(&run_id);
            let store = launcher.engine().store().clone();
            let id = run_id.clone();
            let state = tokio::task::spawn_blocking(move || store.run(&id))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .map(|r| r.state);
            match state {
                Some(RunState::Success) => progress.succeeded += 1,
                // A cancelled run ends failed (with a note): count it as cancelled when we asked.
                _ if progress.cancel_requested => progress.cancelled += 1,
                _ => progress.failed += 1,
            }
        }
    }
    progress.running = 0;
    progress.finished = true;
    report(&progress);
    progress
}

/// A backfill a server drives.
#[derive(Clone, Debug, Serialize)]
pub struct BackfillStatus {
    /// Its id (`<dag>__backfill__<n>`).
    pub id: String,
    /// The DAG.
    pub dag_id: String,
    /// First slot asked for.
    pub from: DateTime<Utc>,
    /// Last slot asked for.
    pub to: DateTime<Utc>,
    /// Which slots run again.
    pub reprocess: Reprocess,
    /// Runs at once.
    pub max_active_runs: usize,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How it goes.
    pub progress: Progress,
}

#[derive(Debug)]
struct Entry {
    status: BackfillStatus,
    cancel: CancellationToken,
}

/// The backfills of a server, newest first; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Backfills(Arc<Mutex<Vec<Entry>>>);

impl Backfills {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts running `slots` in the background on `launcher`; returns the backfill's id.
    pub fn start(
        &self,
        launcher: &Launcher,
        dag: Arc<Dag>,
        slots: Vec<PlannedSlot>,
        (from, to, reprocess, max_active_runs): (DateTime<Utc>, DateTime<Utc>, Reprocess, usize),
        shutdown: &CancellationToken,
    ) -> String {
        let cancel = shutdown.child_token();
        let mut all = self.lock();
        let id = format!("{}__backfill__{}", dag.id, all.len() + 1);
        all.insert(
            0,
            Entry {
                status: BackfillStatus {
                    id: id.clone(),
                    dag_id: dag.id.clone(),
                    from,
                    to,
                    reprocess,
                    max_active_runs,
                    started_at: Utc::now(),
                    progress: Progress::default(),
                },
                cancel: cancel.clone(),
            },
        );
        drop(all);
        let this = self.clone();
        let launcher = launcher.clone();
        let bid = id.clone();
        tokio::spawn(async move {
            let report = |p: &Progress| {
                if let Some(e) = this.lock().iter_mut().find(|e| e.status.id == bid) {
                    e.status.progress = p.clone();
                }
            };
            let done = execute(&launcher, dag, &slots, max_active_runs, &cancel, &report).await;
            tracing::info!(backfill = %bid, succeeded = done.succeeded, failed = done.failed, skipped = done.skipped, cancelled = done.cancelled, "Backfill finished");
        });
        id
    }

    /// Every backfill, newest first (of one DAG if given).
    pub fn list(&self, dag_id: Option<&str>) -> Vec<BackfillStatus> {
        self.lock()
            .iter()
            .filter(|e| dag_id.is_none_or(|d| e.status.dag_id == d))
            .map(|e| e.status.clone())
            .collect()
    }

    /// Cancels a backfill (its running runs are cancelled, no further slot starts); false when
    /// there is no such backfill.
    pub fn cancel(&self, id: &str) -> bool {
        match self.lock().iter().find(|e| e.status.id == id) {
            Some(e) => {
                e.cancel.cancel();
                true
            }
            None => false,
        }
    }
}
