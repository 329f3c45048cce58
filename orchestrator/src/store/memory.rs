//! An in-memory [`Store`] for tests and benchmarks: the rules of [`rules`](super::rules) kept in
//! plain collections, nothing on disk.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::Utc;

use super::{
    DagVersion, NewNotification, NewRun, NotificationRecord, NotificationUpdate, Owner,
    ProcessRecord, Repair, RunAction, RunFilter, RunNotes, RunRecord, RunState, ServerLease, Store,
    StoreError, TaskInstance, TaskState, TaskTry, TaskUpdate, Trigger, rules,
};

#[derive(Debug, Default)]
struct Inner {
    /// Runs in creation order.
    runs: Vec<RunRecord>,
    /// Task instances per run, in creation order.
    tasks: HashMap<String, Vec<TaskInstance>>,
    /// Tries per (run, task).
    tries: HashMap<(String, String), Vec<TaskTry>>,
    processes: Vec<ProcessRecord>,
    /// DAGs whose schedule is paused.
    paused: std::collections::BTreeSet<String>,
    /// Repairs, in the order applied.
    actions: Vec<RunAction>,
    /// Notes per run.
    notes: HashMap<String, RunNotes>,
    /// DAG versions by hash.
    versions: HashMap<String, DagVersion>,
    /// Notification deliveries, in creation order (id = position + 1).
    notifications: Vec<NotificationRecord>,
    /// Server leases, in the order the servers first took one.
    leases: Vec<ServerLease>,
}

impl Inner {
    /// Applies one update whose task instance exists.
    fn apply(&mut self, run_id: &str, u: &TaskUpdate) {
        if let Some(ti) = self
            .tasks
            .get_mut(run_id)
            .and_then(|ts| ts.iter_mut().find(|t| t.task_id == u.task_id))
        {
            ti.apply(u);
        }
        if u.try_number > 0 {
            let tries = self
                .tries
                .entry((run_id.to_owned(), u.task_id.clone()))
                .or_default();
            let idx = tries.iter().position(|t| t.try_number == u.try_number);
            let current = idx.map(|i| tries[i].clone());
            match (TaskTry::updated(run_id, current, u), idx) {
                (Some(t), Some(i)) => tries[i] = t,
                (Some(t), None) => {
                    // First try first, whatever order the tries were recorded in.
                    let at = tries.partition_point(|x| x.try_number < t.try_number);
                    tries.insert(at, t);
                }
                (None, _) => {}
            }
        }
    }
}

/// A [`Store`] held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemoryStore {
    fn create_run(&self, run: &NewRun) -> Result<RunRecord, StoreError> {
        let mut inner = self.lock();
        let active = inner
            .runs
            .iter()
            .filter(|r| r.dag_id == run.dag_id && r.state == RunState::Running)
            .count() as u32;
        let claim = inner.runs.iter().find(|r| {
            r.dag_id == run.dag_id
                && r.logical_date == run.logical_date
                && r.trigger == Trigger::Scheduled
        });
        rules::slot_unclaimed(run, claim.map(|r| r.run_id.as_str()))?;
        rules::admit(&run.dag_id, active, run.max_active_runs)?;
        let holder = inner.runs.iter().find(|r| {
            r.dag_id == run.dag_id
                && r.logical_date == run.logical_date
                && r.state == RunState::Running
        });
        rules::slot_free(run, holder.map(|r| r.run_id.as_str()))?;
        let run_id = rules::unique_run_id::<StoreError>(&run.run_id, |id| {
            Ok(inner.runs.iter().any(|r| r.run_id == id))
        })?;
        let record = rules::new_run_record(run, run_id.clone());
        if let (Some(text), Some(hash)) = (&run.dag_text, &record.dag_hash) {
            inner
                .versions
                .entry(hash.clone())
                .or_insert_with(|| DagVersion {
                    hash: hash.clone(),
                    dag_id: run.dag_id.clone(),
                    text: text.clone(),
                });
        }
        inner.runs.push(record.clone());
        let tasks = rules::new_task_instances(run, &run_id);
        inner.tasks.insert(run_id, tasks);
        Ok(record)
    }

    fn finish_run(
        &self,
        run_id: &str,
        state: RunState,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let run = inner
            .runs
            .iter_mut()
            .find(|r| r.run_id == run_id)
            .ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
        run.finish(state, note, Utc::now());
        Ok(())
    }

    fn update_task(&self, run_id: &str, u: &TaskUpdate) -> Result<(), StoreError> {
        self.update_tasks(&[(run_id.to_owned(), u.clone())])
    }

    fn update_tasks(&self, updates: &[(String, TaskUpdate)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        // All or nothing, like a transaction: every task must exist before any is changed.
        if let Some((run_id, u)) = updates.iter().find(|(run_id, u)| {
            !inner
                .tasks
                .get(run_id)
                .is_some_and(|ts| ts.iter().any(|t| t.task_id == u.task_id))
        }) {
            return Err(StoreError::NoSuchRun(format!(
                "{run_id} (task {})",
                u.task_id
            )));
        }
        for (run_id, u) in updates {
            inner.apply(run_id, u);
        }
        Ok(())
    }

    fn record_process(&self, p: &ProcessRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner
            .processes
            .retain(|q| !(q.run_id == p.run_id && q.pid == p.pid));
        inner.processes.push(p.clone());
        Ok(())
    }

    fn forget_process(&self, run_id: &str, pid: u32) -> Result<(), StoreError> {
        self.lock()
            .processes
            .retain(|q| !(q.run_id == run_id && q.pid == pid));
        Ok(())
    }

    fn processes(&self, run_id: &str) -> Result<Vec<ProcessRecord>, StoreError> {
        let mut out: Vec<_> = self
            .lock()
            .processes
            .iter()
            .filter(|p| p.run_id == run_id)
            .cloned()
            .collect();
        out.sort_by_key(|p| p.pid);
        Ok(out)
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(self
            .lock()
            .runs
            .iter()
            .find(|r| r.run_id == run_id)
            .cloned())
    }

    fn runs(&self, f: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let inner = self.lock();
        let mut out: Vec<RunRecord> = inner
            .runs
            .iter()
            .rev()
            .filter(|r| f.dag_id.as_ref().is_none_or(|d| *d == r.dag_id))
            .filter(|r| f.state.is_none_or(|s| s == r.state))
            .filter(|r| f.trigger.is_none_or(|t| t == r.trigger))
            .cloned()
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.started_at));
        if f.limit > 0 {
            out.truncate(f.limit);
        }
        Ok(out)
    }

    fn task_instances(&self, run_id: &str) -> Result<Vec<TaskInstance>, StoreError> {
        Ok(self.lock().tasks.get(run_id).cloned().unwrap_or_default())
    }

    fn tries(&self, run_id: &str, task_id: &str) -> Result<Vec<TaskTry>, StoreError> {
        Ok(self
            .lock()
            .tries
            .get(&(run_id.to_owned(), task_id.to_owned()))
            .cloned()
            .unwrap_or_default())
    }

    fn fail_orphaned_runs(
        &self,
        dag_id: Option<&str>,
        owner_alive: &dyn Fn(&Owner) -> bool,
    ) -> Result<Vec<(RunRecord, Vec<ProcessRecord>)>, StoreError> {
        let mut inner = self.lock();
        let now = Utc::now();
        let mut out = Vec::new();
        let orphaned: Vec<usize> = (0..inner.runs.len())
            .filter(|&i| {
                inner.runs[i].is_orphaned(owner_alive)
                    && dag_id.is_none_or(|d| inner.runs[i].dag_id == d)
            })
            .collect();
        for i in orphaned {
            inner.runs[i].close_orphaned(now);
            let run_id = inner.runs[i].run_id.clone();
            for ti in inner.tasks.get_mut(&run_id).into_iter().flatten() {
                ti.close_orphaned(now);
            }
            for ((r, _), tries) in inner.tries.iter_mut() {
                if *r == run_id {
                    for t in tries.iter_mut() {
                        t.close_orphaned(now);
                    }
                }
            }
            let (procs, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.processes)
                .into_iter()
                .partition(|p| p.run_id == run_id);
            inner.processes = rest;
            out.push((inner.runs[i].clone(), procs));
        }
        Ok(out)
    }

    fn repair_run(
        &self,
        run_id: &str,
        repair: &Repair,
        owner_alive: &dyn Fn(&Owner) -> bool,
    ) -> Result<RunRecord, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let i = inner
            .runs
            .iter()
            .position(|r| r.run_id == run_id)
            .ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
        // Work on copies: all or nothing, like a transaction.
        let mut run = inner.runs[i].clone();
        let mut instances = inner.tasks.get(run_id).cloned().unwrap_or_default();
        let mut running: Vec<TaskTry> = inner
            .tries
            .iter()
            .filter(|((r, _), _)| r == run_id)
            .flat_map(|(_, ts)| ts.iter().filter(|t| t.state == TaskState::Running))
            .cloned()
            .collect();
        let holder = inner
            .runs
            .iter()
            .find(|r| {
                r.dag_id == run.dag_id
                    && r.logical_date == run.logical_date
                    && r.state == RunState::Running
                    && r.run_id != run.run_id
            })
            .map(|r| r.run_id.clone());
        let action = rules::repair(
            &mut run,
            &mut instances,
            &mut running,
            repair,
            owner_alive,
            holder.as_deref(),
        )?;
        for t in running {
            if let Some(slot) = inner
                .tries
                .get_mut(&(run_id.to_owned(), t.task_id.clone()))
                .and_then(|ts| ts.iter_mut().find(|x| x.try_number == t.try_number))
            {
                *slot = t;
            }
        }
        inner.tasks.insert(run_id.to_owned(), instances);
        inner.processes.retain(|p| p.run_id != run_id);
        inner.actions.push(action);
        inner.runs[i] = run.clone();
        Ok(run)
    }

    fn run_actions(&self, run_id: &str) -> Result<Vec<RunAction>, StoreError> {
        Ok(self
            .lock()
            .actions
            .iter()
            .filter(|a| a.run_id == run_id)
            .cloned()
            .collect())
    }

    fn set_run_notes(
        &self,
        run_id: &str,
        text: &str,
        at: chrono::DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !inner.runs.iter().any(|r| r.run_id == run_id) {
            return Err(StoreError::NoSuchRun(run_id.to_owned()));
        }
        inner.notes.insert(
            run_id.to_owned(),
            RunNotes {
                text: text.to_owned(),
                updated_at: at,
            },
        );
        Ok(())
    }

    fn run_notes(&self, run_id: &str) -> Result<Option<RunNotes>, StoreError> {
        Ok(self.lock().notes.get(run_id).cloned())
    }

    fn dag_version(&self, hash: &str) -> Result<Option<DagVersion>, StoreError> {
        Ok(self.lock().versions.get(hash).cloned())
    }

    fn set_paused(&self, dag_id: &str, paused: bool) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if paused {
            inner.paused.insert(dag_id.to_owned());
        } else {
            inner.paused.remove(dag_id);
        }
        Ok(())
    }

    fn paused_dags(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        Ok(self.lock().paused.clone())
    }

    fn renew_lease(&self, owner: &Owner, lease: std::time::Duration) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let i = inner.leases.iter().position(|l| l.owner == *owner);
        let (renewed, lost) =
            rules::renew_lease(owner, i.map(|i| &inner.leases[i]), Utc::now(), lease);
        match i {
            Some(i) => inner.leases[i] = renewed,
            None => inner.leases.push(renewed),
        }
        Ok(lost)
    }

    fn end_lease(&self, owner: &Owner) -> Result<(), StoreError> {
        let now = Utc::now();
        for l in self.lock().leases.iter_mut().filter(|l| l.owner == *owner) {
            l.expires_at = l.expires_at.min(now);
        }
        Ok(())
    }

    fn leases(&self) -> Result<Vec<ServerLease>, StoreError> {
        let now = Utc::now();
        Ok(self
            .lock()
            .leases
            .iter()
            .map(|l| ServerLease {
                expired: rules::lease_expired(l.expires_at, now),
                ..l.clone()
            })
            .collect())
    }

    fn add_notification(&self, n: &NewNotification) -> Result<NotificationRecord, StoreError> {
        let mut inner = self.lock();
        let record = NotificationRecord::new(inner.notifications.len() as i64 + 1, n);
        inner.notifications.push(record.clone());
        Ok(record)
    }

    fn update_notification(&self, id: i64, u: &NotificationUpdate) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let record = usize::try_from(id - 1)
            .ok()
            .and_then(|i| inner.notifications.get_mut(i))
            .ok_or(StoreError::NoSuchNotification(id))?;
        record.apply(u);
        Ok(())
    }

    fn notifications(&self, run_id: &str) -> Result<Vec<NotificationRecord>, StoreError> {
        Ok(self
            .lock()
            .notifications
            .iter()
            .filter(|n| n.run_id == run_id)
            .cloned()
            .collect())
    }
}
