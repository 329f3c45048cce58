//! The cron scheduler of `orchestrator serve`: one loop that wakes at the next slot of any DAG
//! (and at least every second, to see pauses set from the CLI, reload changed DAG files and retry
//! slots held back by `max_active_runs`), and starts scheduled runs through the [`Launcher`] with
//! the slot as their logical date. See [`super::policy`] for which missed slots run.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::dags::DagFolder;
use super::launcher::Launcher;
use super::policy::{self, CatchUp, MAX_CATCHUP_SLOTS};
use crate::dag::Dag;
use crate::scheduler::{EngineError, RunRequest};
use crate::store::{StoreError, Trigger};

/// Where the scheduler reads the time: the wall clock in production; in tests a clock that
/// follows tokio's (pausable) time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The schedule of one DAG as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DagSchedule {
    /// The cron expression.
    pub schedule: String,
    /// Whether the schedule is paused.
    pub paused: bool,
    /// The next slot that will fire (none while paused).
    pub next_run: Option<DateTime<Utc>>,
    /// Slots due but held back because the DAG has `max_active_runs` runs going.
    pub waiting: usize,
    /// Slots that came due while the DAG was paused and were dropped, since the server started.
    pub skipped_while_paused: u64,
}

struct DagCron {
    expr: String,
    /// The newest slot already handled (run, queued or dropped).
    cursor: DateTime<Utc>,
    pending: VecDeque<DateTime<Utc>>,
    /// Slots dropped because the DAG was paused.
    skipped_while_paused: u64,
}

/// Fires DAG schedules; see the module doc.
pub struct CronScheduler {
    folder: Arc<DagFolder>,
    launcher: Launcher,
    policy: CatchUp,
    clock: Clock,
    poll: Duration,
    wake: Notify,
    published: Mutex<BTreeMap<String, DagSchedule>>,
}

impl std::fmt::Debug for CronScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronScheduler")
            .field("root", &self.folder.root())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl CronScheduler {
    /// A scheduler of the DAGs in `folder` on the wall clock.
    pub fn new(folder: Arc<DagFolder>, launcher: Launcher, policy: CatchUp) -> Self {
        Self::with_clock(folder, launcher, policy, Arc::new(Utc::now))
    }

    /// A scheduler reading the time from `clock`.
    pub fn with_clock(
        folder: Arc<DagFolder>,
        launcher: Launcher,
        policy: CatchUp,
        clock: Clock,
    ) -> Self {
        Self {
            folder,
            launcher,
            policy,
            clock,
            poll: Duration::from_secs(1),
            wake: Notify::new(),
            published: Mutex::new(BTreeMap::new()),
        }
    }

    /// Looks at least this often (default 1 s) for pauses, changed files and held-back slots.
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// A clock that starts at `start` and then follows tokio's time, so tests can run schedules
    /// across a given date (a daylight-saving change) with `tokio::time::pause()`.
    pub fn tokio_clock_from(start: DateTime<Utc>) -> Clock {
        let begin = tokio::time::Instant::now();
        Arc::new(move || start + chrono::Duration::from_std(begin.elapsed()).unwrap_or_default())
    }

    /// A clock that starts at the wall clock's time and then follows tokio's time, so tests can
    /// run schedules with `tokio::time::pause()`.
    pub fn tokio_clock() -> Clock {
        let wall = Utc::now();
        let start = tokio::time::Instant::now();
        Arc::new(move || wall + chrono::Duration::from_std(start.elapsed()).unwrap_or_default())
    }

    /// The catch-up policy.
    pub fn policy(&self) -> CatchUp {
        self.policy
    }

    /// The schedules as of the last tick, by DAG id (DAGs without a schedule are absent).
    pub fn schedules(&self) -> BTreeMap<String, DagSchedule> {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes the loop look again now (after a pause or unpause).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until `shutdown` fires.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut state: BTreeMap<String, DagCron> = BTreeMap::new();
        tracing::info!(policy = ?self.policy, root = %self.folder.root().display(), "Cron scheduler started");
        loop {
            let wait = self.tick(&mut state).await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
                () = self.launcher.run_finished() => {}
            }
        }
        tracing::info!("Cron scheduler stopped");
    }

    /// One look at every DAG: start what is due, publish the schedules, return how long to sleep.
    async fn tick(&self, state: &mut BTreeMap<String, DagCron>) -> Duration {
        let folder = self.folder.clone();
        let store = self.launcher.engine().store().clone();
        let looked = tokio::task::spawn_blocking(move || {
            if let Err(error) = folder.reload_if_changed() {
                tracing::warn!(%error, "Cannot reload the DAG files");
            }
            (folder.snapshot(), store.paused_dags())
        })
        .await;
        let (loaded, paused) = match looked {
            Ok((loaded, Ok(paused))) => (loaded, paused),
            Ok((_, Err(error))) => {
                tracing::warn!(%error, "Cannot read paused DAGs; retrying");
                return self.poll;
            }
            Err(error) => {
                tracing::error!(%error, "The DAG reload task failed");
                return self.poll;
            }
        };
        let now = (self.clock)();
        let mut published = BTreeMap::new();
        let mut wait = self.poll;
        state.retain(|id, _| loaded.dags.get(id).is_some_and(|d| d.schedule.is_some()));
        for (id, dag) in &loaded.dags {
            let Some(schedule) = &dag.schedule else {
                continue;
            };
            if state.get(id).is_none_or(|s| s.expr != schedule.expr) {
                match self.first_cursor(id, now).await {
                    Ok(cursor) => {
                        state.insert(
                            id.clone(),
                            DagCron {
                                expr: schedule.expr.clone(),
                                cursor,
                                pending: VecDeque::new(),
                                skipped_while_paused: 0,
                            },
                        );
                    }
                    Err(error) => {
                        tracing::warn!(dag_id = %id, %error, "Cannot read the DAG's last scheduled run; retrying");
                        continue;
                    }
                }
            }
            let Some(cron) = state.get_mut(id) else {
                continue;
            };
            let is_paused = paused.contains(id);
            self.advance(dag, cron, now, is_paused).await;
            let next_run = if is_paused {
                None
            } else {
                schedule.next_after(cron.cursor)
            };
            if let Some(next) = next_run {
                let until = (next - now).to_std().unwrap_or_default();
                wait = wait.min(until);
            }
            published.insert(
                id.clone(),
                DagSchedule {
                    schedule: schedule.expr.clone(),
                    paused: is_paused,
                    next_run,
                    waiting: cron.pending.len(),
                    skipped_while_paused: cron.skipped_while_paused,
                },
            );
        }
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = published;
        // Never spin: a slot due "now" is handled by the next tick a moment later.
        wait.max(Duration::from_millis(5))
    }

    /// Where a DAG's schedule starts: after its latest scheduled run, or now if it never ran.
    async fn first_cursor(
        &self,
        dag_id: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        let store = self.launcher.engine().store().clone();
        let id = dag_id.to_owned();
        let last =
            tokio::task::spawn_blocking(move || store.latest_logical_date(&id, Trigger::Scheduled))
                .await
                .map_err(|e| StoreError::Corrupt {
                    what: "latest scheduled run (the lookup task failed)",
                    value: e.to_string(),
                })??;
        Ok(match last {
            Some(last) if last < now => last,
            _ => now,
        })
    }

    /// Queues the DAG's due slots per the policy and starts what `max_active_runs` allows.
    async fn advance(&self, dag: &Arc<Dag>, cron: &mut DagCron, now: DateTime<Utc>, paused: bool) {
        let Some(schedule) = &dag.schedule else {
            return;
        };
        let (due, truncated) = policy::recent_slots(schedule, cron.cursor, now, MAX_CATCHUP_SLOTS);
        if let Some(last) = due.back() {
            cron.cursor = *last;
        }
        if paused {
            if !due.is_empty() || !cron.pending.is_empty() {
                tracing::info!(dag_id = %dag.id, slots = due.len() + cron.pending.len(), "Dropped slots of a paused DAG");
            }
            cron.skipped_while_paused += (due.len() + cron.pending.len()) as u64;
            cron.pending.clear();
            return;
        }
        // `[dag] catchup` wins over the server's `--catchup`.
        let policy = match dag.catchup {
            Some(true) => CatchUp::All,
            Some(false) => CatchUp::Latest,
            None => self.policy,
        };
        let dropped = policy::enqueue(&mut cron.pending, due, policy);
        if dropped > 0 || truncated {
            tracing::info!(dag_id = %dag.id, dropped, older_dropped = truncated, policy = ?policy, "Skipped missed schedule slots (catch-up policy)");
        }
        while let Some(slot) = cron.pending.front().copied() {
            let launcher = self.launcher.clone();
            let d = dag.clone();
            let started = tokio::task::spawn_blocking(move || {
                launcher.start(
                    d,
                    RunRequest {
                        params: BTreeMap::new(),
                        logical_date: Some(slot),
                        trigger: Trigger::Scheduled,
                    },
                )
            })
            .await;
            match started {
                Ok(Ok(run_id)) => {
                    cron.pending.pop_front();
                    self.launcher.counters().slots_claimed.inc();
                    tracing::info!(dag_id = %dag.id, %run_id, slot = %slot, "Started a scheduled run");
                }
                Ok(Err(EngineError::Store(StoreError::SlotClaimed { run_id, .. }))) => {
                    cron.pending.pop_front();
                    self.launcher.counters().slots_claimed_elsewhere.inc();
                    tracing::debug!(dag_id = %dag.id, slot = %slot, %run_id, "Scheduled slot already claimed (by another server on the state)");
                }
                Ok(Err(EngineError::Store(StoreError::TooManyActiveRuns { .. }))) => break,
                Ok(Err(EngineError::Store(StoreError::SlotBusy { run_id, .. }))) => {
                    cron.pending.pop_front();
                    tracing::info!(dag_id = %dag.id, slot = %slot, holder = %run_id, "Scheduled slot skipped: a run of it (a backfill's) is running");
                }
                Ok(Err(error)) => {
                    cron.pending.pop_front();
                    tracing::error!(dag_id = %dag.id, slot = %slot, %error, "Cannot start a scheduled run; slot dropped");
                }
                Err(error) => {
                    tracing::error!(dag_id = %dag.id, %error, "The run start task failed");
                    break;
                }
            }
        }
    }
}
