//! What `orchestrator serve` runs besides the web UI: the folder of DAG files ([`DagFolder`],
//! reloaded when files change), the runs this process drives ([`Launcher`]: started by the cron
//! scheduler or the UI, with their live progress) and the cron scheduler itself
//! ([`CronScheduler`]: fires each DAG's schedule, respects `max_active_runs` and pauses, and
//! applies the catch-up policy of [`policy`] to slots missed while the server was down),
//! [`backfill`]s of past slots, and the [`lease`] that lets several servers share one state (each
//! slot fired once, the runs of a dead server picked up by another).

pub mod backfill;
mod dags;
mod launcher;
pub mod lease;
pub mod policy;
mod scheduler;
pub mod upcoming;

pub use dags::{DagFileError, DagFolder, DagFolderError, LoadedDags};
pub use launcher::{Launcher, LiveRun, LiveTask};
pub use lease::{Heartbeat, LeaseSettings, NotPickedUp, PickedUp, SharingCounters};
pub use policy::CatchUp;
pub use scheduler::{Clock, CronScheduler, DagSchedule};
