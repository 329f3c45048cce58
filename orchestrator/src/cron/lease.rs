//! Several servers on one state: each `orchestrator serve` holds a lease in the store, renewed
//! every heartbeat, and takes over (resumes) the running runs of servers that died, whether seen
//! by their lease running out or, on this host, by their pid being gone. The store's atomic owner
//! swap ([`Store::repair_run`](crate::store::Store::repair_run)) lets only one survivor take a run;
//! the slot claim of [`Store::create_run`](crate::store::Store::create_run) lets only one fire a
//! schedule slot.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use super::Launcher;
use crate::scheduler::{EngineError, RepairPlan};
use crate::store::{Owner, RunRecord, StoreError, current_owner};

/// How often a server renews its lease and looks for runs of dead servers, and how long a lease
/// runs unless renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// How often the lease is renewed (and dead servers' runs looked for).
    pub heartbeat: Duration,
    /// How long after its last renewal a server is taken for dead by servers on other hosts.
    pub lease: Duration,
}

impl Default for LeaseSettings {
    /// A heartbeat every 5 s and a 30 s lease (Airflow's scheduler heartbeat and health check
    /// threshold are 5 s and 30 s too): a server is taken for dead after six missed heartbeats.
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            lease: Duration::from_secs(30),
        }
    }
}

/// What a server counts of the work it shares with others (exported on `/metrics`).
#[derive(Clone, Debug, Default)]
pub struct SharingCounters {
    /// Schedule slots this server claimed (it started their runs).
    pub slots_claimed: Counter,
    /// Schedule slots it found claimed by another server.
    pub slots_claimed_elsewhere: Counter,
    /// Runs of dead servers (or of a dead earlier start of this one) it took over.
    pub runs_picked_up: Counter,
}

/// A run taken over from a dead owner.
#[derive(Debug)]
pub struct PickedUp {
    /// The run as it was found, with its dead owner.
    pub run: RunRecord,
    /// Whether the owner was a server whose lease ran out (else a process gone from this host).
    pub lease_expired: bool,
    /// What the resume reset.
    pub plan: RepairPlan,
}

/// A run of a dead owner that could not be resumed (its DAG version unreadable, the store
/// failing).
#[derive(Debug)]
pub struct NotPickedUp {
    /// The run, with its dead owner.
    pub run: RunRecord,
    /// Why.
    pub error: EngineError,
}

/// The lease of this server and the pick-up of dead servers' runs.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    launcher: Launcher,
    settings: LeaseSettings,
    me: Owner,
}

impl Heartbeat {
    /// The heartbeat of this process over the launcher's store.
    pub fn new(launcher: Launcher, settings: LeaseSettings) -> Self {
        Self {
            launcher,
            settings,
            me: current_owner(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> LeaseSettings {
        self.settings
    }

    /// Renews the lease (blocking); returns whether it had run out since the last renewal.
    pub fn renew(&self) -> Result<bool, StoreError> {
        self.launcher
            .engine()
            .store()
            .renew_lease(&self.me, self.settings.lease)
    }

    /// Ends the lease (a server stopping, its runs left resumable): others pick them up at once.
    pub fn end(&self) -> Result<(), StoreError> {
        self.launcher.engine().store().end_lease(&self.me)
    }

    /// Takes over every running run whose owner is dead and drives it here (blocking). A run
    /// another server takes first is left to it; a run that cannot be resumed is returned with
    /// the error (the caller closes it with [`close_unresumable`](Self::close_unresumable)).
    pub fn pick_up(&self) -> Result<Vec<Result<PickedUp, NotPickedUp>>, StoreError> {
        let engine = self.launcher.engine();
        let live = engine.liveness()?;
        let mut out = Vec::new();
        for run in engine.interrupted_runs()? {
            let lease_expired = live.lease_expired(&run.owner);
            match self.launcher.resume(&run.run_id) {
                Ok(plan) => {
                    self.launcher.counters().runs_picked_up.inc();
                    tracing::info!(
                        run_id = %run.run_id,
                        dag_id = %run.dag_id,
                        dead_server = %format_args!("{}:{}", run.owner.host, run.owner.pid),
                        lease_expired,
                        restarted = ?plan.task_ids(),
                        "Picked up run {} from dead server {} (pid {})",
                        run.run_id,
                        run.owner.host,
                        run.owner.pid,
                    );
                    out.push(Ok(PickedUp {
                        run,
                        lease_expired,
                        plan,
                    }));
                }
                // Another server took it between the look and the swap: it is that server's.
                Err(EngineError::Store(StoreError::NotRepairable { .. })) => {
                    tracing::debug!(run_id = %run.run_id, "Another server picked the run up first");
                }
                Err(error) => out.push(Err(NotPickedUp { run, error })),
            }
        }
        Ok(out)
    }

    /// Renews the lease and picks up dead servers' runs every heartbeat until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.heartbeat) => {}
            }
            let this = self.clone();
            let beat = tokio::task::spawn_blocking(move || this.beat()).await;
            if let Err(error) = beat {
                tracing::error!(%error, "The heartbeat task failed");
            }
        }
    }

    /// One heartbeat (blocking).
    fn beat(&self) {
        match self.renew() {
            Ok(false) => {}
            Ok(true) => {
                tracing::error!(
                    lease = ?self.settings.lease,
                    "This server's lease ran out before it could renew it (the state database was out of reach, or the server stalled); other servers may have taken its runs over"
                );
                self.give_up_runs_taken_over();
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot renew this server's lease; retrying at the next heartbeat");
                return;
            }
        }
        match self.pick_up() {
            Ok(picked) => {
                let mut owners = Vec::new();
                for NotPickedUp { run, error } in picked.into_iter().filter_map(Result::err) {
                    tracing::warn!(run_id = %run.run_id, %error, "Cannot pick up the run of a dead server; closing it as failed");
                    owners.push(run.owner);
                }
                if let Err(error) = self.close_unresumable(&owners) {
                    tracing::warn!(%error, "Cannot close runs of dead servers");
                }
            }
            Err(error) => tracing::warn!(%error, "Cannot look for runs of dead servers"),
        }
    }

    /// Closes as failed the running runs of `owners` (dead, whose runs [`pick_up`](Self::pick_up)
    /// could not resume), killing what their tasks left on this host (blocking).
    pub fn close_unresumable(&self, owners: &[Owner]) -> Result<Vec<RunRecord>, StoreError> {
        self.launcher.engine().recover_runs_of(owners)
    }

    /// Stops driving the runs whose stored owner is no longer this server (taken over while its
    /// lease had run out), leaving them to their new owner.
    fn give_up_runs_taken_over(&self) {
        let store = self.launcher.engine().store();
        for run_id in self.launcher.driven_runs() {
            match store.run(&run_id) {
                Ok(Some(run)) if run.owner != self.me => {
                    tracing::warn!(run_id, new_owner = %format_args!("{}:{}", run.owner.host, run.owner.pid), "Another server took the run over: no longer driving it here");
                    self.launcher.abandon(&run_id);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(run_id, %error, "Cannot read the run's owner");
                }
            }
        }
    }
}
