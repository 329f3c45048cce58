//! Where runs live: DAG runs, task instances and each try (state, start/end, exit status, outputs,
//! log path), the processes tasks spawned, and each notification's delivery. [`Store`] is the
//! contract; [`SqliteStore`] is the embedded default (safe for several processes on one file),
//! [`PostgresStore`] keeps state in a server database (`--state postgres://...`) shared by
//! processes on several hosts, and [`MemoryStore`] serves tests.
//! What a change does to the records is decided once, in [`rules`]; a backend only persists.
//!
//! The trait is synchronous on purpose: SQLite calls take microseconds, and a server database can
//! implement it with a blocking client. Async callers that may wait on a lock (a web handler) should
//! call it through `tokio::task::spawn_blocking`.

mod location;
mod memory;
mod model;
mod notification;
mod owner;
mod postgres;
pub mod rules;
mod sqlite;

pub use location::{StateFiles, StateLocation, URL_STATE_LOG_DIR, try_log_path};
pub use memory::MemoryStore;
pub use model::{
    DagVersion, NewRun, Owner, ProcessRecord, Repair, RepairKind, RunAction, RunFilter, RunNotes,
    RunRecord, RunState, ServerLease, TaskInstance, TaskState, TaskTry, TaskUpdate, Trigger,
};
pub use notification::{DeliveryState, NewNotification, NotificationRecord, NotificationUpdate};
pub use owner::{Liveness, current_owner, is_alive, process_start_ticks};
pub use postgres::{MIGRATIONS, Migration, PostgresStore, is_postgres_url, redact};
pub use sqlite::SqliteStore;

/// Errors of a [`Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("state database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL database failed (or could not be reached).
    #[error("state database {url}: {detail}")]
    Postgres {
        /// The database's URL, without its password.
        url: String,
        /// The SQLSTATE, when the server answered with an error.
        code: Option<String>,
        /// What the driver and the server said.
        detail: String,
    },
    /// A `--state postgres://...` URL that cannot be read.
    #[error(
        "state URL {url}: {why}; expected postgres://USER:PASSWORD@HOST:PORT/DATABASE (libpq's URL form)"
    )]
    BadStateUrl {
        /// The URL, without its password.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The database's schema is newer than this program knows.
    #[error(
        "state database {url} has schema version {found}, newer than this orchestrator knows ({known}); run the orchestrator that migrated it, or a newer one"
    )]
    SchemaTooNew {
        /// The database's URL, without its password.
        url: String,
        /// The database's version.
        found: i32,
        /// The last version this program knows.
        known: i32,
    },
    /// The state directory could not be created.
    #[error(
        "creating the state directory {path}: {source}; pass another --state path or set VELOSTREAM_STATE"
    )]
    Io {
        /// The directory.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The DAG already has `max_active_runs` runs going.
    #[error(
        "DAG {dag_id} already has {active} active run(s) (max_active_runs = {max}); wait for them to finish or raise max_active_runs"
    )]
    TooManyActiveRuns {
        /// The DAG.
        dag_id: String,
        /// Runs in state `running`.
        active: u32,
        /// The limit.
        max: u32,
    },
    /// A run of the DAG with the same logical date (schedule slot) is running: a slot never runs
    /// twice at once, whoever starts it (the cron scheduler, a backfill, a manual run).
    #[error(
        "DAG {dag_id} already has run {run_id} running for the logical date {logical_date}; a slot never runs twice at once: wait for it to finish"
    )]
    SlotBusy {
        /// The DAG.
        dag_id: String,
        /// The slot, RFC 3339.
        logical_date: String,
        /// The run holding it.
        run_id: String,
    },
    /// A schedule slot (DAG and logical date) already has its scheduled run, running or ended:
    /// each slot fires once, however many servers schedule the DAG. (A backfill or a clear
    /// reruns a slot; the cron scheduler never does.)
    #[error(
        "DAG {dag_id}'s schedule slot {logical_date} was already claimed by run {run_id}; each slot fires once"
    )]
    SlotClaimed {
        /// The DAG.
        dag_id: String,
        /// The slot, RFC 3339.
        logical_date: String,
        /// The scheduled run that claimed it.
        run_id: String,
    },
    /// No run has this id.
    #[error("no run {0}; `orchestrator runs` lists them")]
    NoSuchRun(String),
    /// The run has no such task.
    #[error("run {run_id} has no task {task_id}; `orchestrator runs {run_id}` lists its tasks")]
    NoSuchTask {
        /// The run.
        run_id: String,
        /// The task named.
        task_id: String,
    },
    /// A clear, mark or resume does not fit the run's state.
    #[error("cannot change run {run_id}: {why}")]
    NotRepairable {
        /// The run.
        run_id: String,
        /// Why, and what to do.
        why: String,
    },
    /// No notification delivery has this id.
    #[error("no notification delivery {0}")]
    NoSuchNotification(i64),
    /// A stored value could not be read back (a newer or damaged database).
    #[error("state database holds an unreadable {what}: {value:?}")]
    Corrupt {
        /// What was read.
        what: &'static str,
        /// The value.
        value: String,
    },
}

/// Storage of runs, task instances, tries and spawned processes.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Creates a run in state `running` with a `pending` instance of every task in `run.task_ids`,
    /// in one transaction. Fails with [`StoreError::SlotClaimed`] when the run is
    /// [`Trigger::Scheduled`] and the slot already has a scheduled run (in any state: the claim
    /// and the run are one record, so two servers never both fire a slot), with
    /// [`StoreError::TooManyActiveRuns`] when the DAG already has `run.max_active_runs` running
    /// runs, and with [`StoreError::SlotBusy`] when a run of the DAG with the same logical date is
    /// running. `run.run_id` is made unique by appending `.2`, `.3`...
    fn create_run(&self, run: &NewRun) -> Result<RunRecord, StoreError>;

    /// Sets a run's state (and end time and note when finished).
    fn finish_run(
        &self,
        run_id: &str,
        state: RunState,
        note: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Records a task instance's new state; `try_number` > 0 also creates or updates that try.
    fn update_task(&self, run_id: &str, update: &TaskUpdate) -> Result<(), StoreError>;

    /// Records several updates, of one or more runs, in order (one transaction where the backend
    /// has them; the scheduler's writer batches what queued up while the last batch was written).
    fn update_tasks(&self, updates: &[(String, TaskUpdate)]) -> Result<(), StoreError> {
        for (run_id, u) in updates {
            self.update_task(run_id, u)?;
        }
        Ok(())
    }

    /// Records a process spawned by a task, so a later start can kill it if this process dies.
    fn record_process(&self, process: &ProcessRecord) -> Result<(), StoreError>;

    /// Forgets a process once it has been reaped.
    fn forget_process(&self, run_id: &str, pid: u32) -> Result<(), StoreError>;

    /// Processes recorded for a run and not yet forgotten.
    fn processes(&self, run_id: &str) -> Result<Vec<ProcessRecord>, StoreError>;

    /// One run.
    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError>;

    /// Runs, newest first.
    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError>;

    /// The task instances of a run, in the order they were created (the DAG's topological order).
    fn task_instances(&self, run_id: &str) -> Result<Vec<TaskInstance>, StoreError>;

    /// The tries of one task instance, first try first.
    fn tries(&self, run_id: &str, task_id: &str) -> Result<Vec<TaskTry>, StoreError>;

    /// Marks every `running` run (of `dag_id`, or of every DAG) whose owner is dead (per
    /// `owner_alive`) as failed, its unfinished task instances failed (running) or skipped (not
    /// started), and returns those runs with the processes they had recorded, for the caller to
    /// kill. One transaction. Such a run can still be resumed ([`Store::repair_run`]).
    fn fail_orphaned_runs(
        &self,
        dag_id: Option<&str>,
        owner_alive: &dyn Fn(&Owner) -> bool,
    ) -> Result<Vec<(RunRecord, Vec<ProcessRecord>)>, StoreError>;

    /// Applies a repair (clear, mark, resume) to a run in one transaction, per
    /// [`rules::repair`]: checks that it fits the run's state (a resume needs a run whose owner is
    /// dead per `owner_alive`, and makes `repair.owner` its owner atomically, so two processes
    /// never both take a run over), changes the instances, forgets the run's recorded processes
    /// (a resume's caller has killed them), keeps the history entry, and returns the run.
    fn repair_run(
        &self,
        run_id: &str,
        repair: &Repair,
        owner_alive: &dyn Fn(&Owner) -> bool,
    ) -> Result<RunRecord, StoreError>;

    /// A run's repairs, oldest first.
    fn run_actions(&self, run_id: &str) -> Result<Vec<RunAction>, StoreError>;

    /// Replaces a run's notes.
    fn set_run_notes(
        &self,
        run_id: &str,
        text: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError>;

    /// A run's notes, if any were written.
    fn run_notes(&self, run_id: &str) -> Result<Option<RunNotes>, StoreError>;

    /// A DAG version by its hash (see [`RunRecord::dag_hash`]).
    fn dag_version(&self, hash: &str) -> Result<Option<DagVersion>, StoreError>;

    /// Pauses (`true`) or unpauses a DAG's schedule: `orchestrator pause`, the web UI's toggle.
    fn set_paused(&self, dag_id: &str, paused: bool) -> Result<(), StoreError>;

    /// The DAGs whose schedule is paused.
    fn paused_dags(&self) -> Result<std::collections::BTreeSet<String>, StoreError>;

    /// Records a notification delivery about to be attempted; returns its record (state
    /// `sending`, a new increasing id).
    fn add_notification(&self, n: &NewNotification) -> Result<NotificationRecord, StoreError>;

    /// Records an attempt's outcome per [`NotificationRecord::apply`]; an unknown id is
    /// [`StoreError::NoSuchNotification`].
    fn update_notification(&self, id: i64, u: &NotificationUpdate) -> Result<(), StoreError>;

    /// A run's notification deliveries, oldest first.
    fn notifications(&self, run_id: &str) -> Result<Vec<NotificationRecord>, StoreError>;

    /// Renews the lease of `owner`, a serving process, until `lease` from now (the database's
    /// clock where there is one), creating it on the first call. Returns whether the previous
    /// lease had run out before this renewal: other servers may have taken its runs over.
    fn renew_lease(&self, owner: &Owner, lease: std::time::Duration) -> Result<bool, StoreError>;

    /// Ends the lease of `owner` now (a server stopping): other servers may take over the runs it
    /// left resumable at once.
    fn end_lease(&self, owner: &Owner) -> Result<(), StoreError>;

    /// Every server lease, oldest first, with whether it has run out.
    fn leases(&self) -> Result<Vec<ServerLease>, StoreError>;

    /// The latest logical date of the DAG's runs started by `trigger` (the cron scheduler uses it
    /// to find the slots it missed).
    fn latest_logical_date(
        &self,
        dag_id: &str,
        trigger: Trigger,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        Ok(self
            .runs(&RunFilter {
                dag_id: Some(dag_id.to_owned()),
                state: None,
                trigger: None,
                limit: 0,
            })?
            .into_iter()
            .filter(|r| r.trigger == trigger)
            .map(|r| r.logical_date)
            .max())
    }

    /// How many runs there are per (DAG, state) and task instances per state (for metrics).
    fn state_counts(&self) -> Result<StateCounts, StoreError> {
        let mut counts = StateCounts::default();
        for run in self.runs(&RunFilter::default())? {
            *counts
                .runs
                .entry((run.dag_id.clone(), run.state))
                .or_default() += 1;
            for ti in self.task_instances(&run.run_id)? {
                *counts.task_instances.entry(ti.state).or_default() += 1;
            }
        }
        Ok(counts)
    }
}

/// Counts of runs and task instances by state, see [`Store::state_counts`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Runs per (DAG, state).
    pub runs: std::collections::HashMap<(String, RunState), u64>,
    /// Task instances per state.
    pub task_instances: std::collections::HashMap<TaskState, u64>,
}
