//! An in-memory [`Store`] for tests and benchmarks: the same semantics as SQLite, nothing on disk.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::Utc;

use super::{
    NewRun, Owner, ProcessRecord, RunFilter, RunRecord, RunState, Store, StoreError, TaskInstance,
    TaskState, TaskTry, TaskUpdate,
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
        if let Some(max) = run.max_active_runs {
            let active = inner
                .runs
                .iter()
                .filter(|r| r.dag_id == run.dag_id && r.state == RunState::Running)
                .count() as u32;
            if active >= max {
                return Err(StoreError::TooManyActiveRuns {
                    dag_id: run.dag_id.clone(),
                    active,
                    max,
                });
            }
        }
        if let Some(holder) = inner.runs.iter().find(|r| {
            r.dag_id == run.dag_id
                && r.logical_date == run.logical_date
                && r.state == RunState::Running
        }) {
            return Err(StoreError::SlotBusy {
                dag_id: run.dag_id.clone(),
                logical_date: run.logical_date.to_rfc3339(),
                run_id: holder.run_id.clone(),
            });
        }
        let mut run_id = run.run_id.clone();
        let mut n = 1;
        while inner.runs.iter().any(|r| r.run_id == run_id) {
            n += 1;
            run_id = format!("{}.{n}", run.run_id);
        }
        let record = RunRecord {
            run_id: run_id.clone(),
            dag_id: run.dag_id.clone(),
            dag_file: run.dag_file.clone(),
            trigger: run.trigger,
            state: RunState::Running,
            logical_date: run.logical_date,
            params: run.params.clone(),
            started_at: run.started_at,
            ended_at: None,
            note: None,
            owner: run.owner.clone(),
        };
        inner.runs.push(record.clone());
        let tasks = run
            .task_ids
            .iter()
            .map(|task_id| TaskInstance {
                run_id: run_id.clone(),
                task_id: task_id.clone(),
                state: TaskState::Pending,
                try_number: 0,
                started_at: None,
                ended_at: None,
                exit_code: None,
                error: None,
                outputs: Default::default(),
            })
            .collect();
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
        run.state = state;
        run.ended_at = (state != RunState::Running).then(Utc::now);
        if let Some(note) = note {
            run.note = Some(note.to_owned());
        }
        Ok(())
    }

    fn update_task(&self, run_id: &str, u: &TaskUpdate) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let ti = inner
            .tasks
            .get_mut(run_id)
            .and_then(|ts| ts.iter_mut().find(|t| t.task_id == u.task_id))
            .ok_or_else(|| StoreError::NoSuchRun(format!("{run_id} (task {})", u.task_id)))?;
        if let Some(state) = u.state {
            ti.state = state;
            ti.try_number = ti.try_number.max(u.try_number);
            if state == TaskState::Running && ti.started_at.is_none() {
                ti.started_at = u.at;
            }
            ti.ended_at = if state.is_finished() { u.at } else { None };
            if u.exit_code.is_some() {
                ti.exit_code = u.exit_code;
            }
            if matches!(
                state,
                TaskState::Failed | TaskState::UpForRetry | TaskState::UpstreamFailed
            ) && u.error.is_some()
            {
                ti.error = u.error.clone();
            }
            if state == TaskState::Success {
                ti.error = None;
                if let Some(o) = &u.outputs {
                    ti.outputs = o.clone();
                }
            }
            if u.try_number > 0 {
                let tries = inner
                    .tries
                    .entry((run_id.to_owned(), u.task_id.clone()))
                    .or_default();
                let idx = match tries.iter().position(|t| t.try_number == u.try_number) {
                    Some(i) => i,
                    None => {
                        tries.push(TaskTry {
                            run_id: run_id.to_owned(),
                            task_id: u.task_id.clone(),
                            try_number: u.try_number,
                            state,
                            started_at: u.at,
                            ended_at: None,
                            exit_code: None,
                            error: None,
                            outputs: Default::default(),
                            log_path: None,
                        });
                        tries.len() - 1
                    }
                };
                let t = &mut tries[idx];
                t.state = state;
                if state.is_finished() || state == TaskState::UpForRetry {
                    t.ended_at = u.at;
                }
                if u.exit_code.is_some() {
                    t.exit_code = u.exit_code;
                }
                if u.error.is_some() {
                    t.error = u.error.clone();
                }
                if let Some(o) = &u.outputs {
                    t.outputs = o.clone();
                }
            }
        }
        if let (Some(path), true) = (&u.log_path, u.try_number > 0)
            && let Some(t) = inner
                .tries
                .get_mut(&(run_id.to_owned(), u.task_id.clone()))
                .and_then(|ts| ts.iter_mut().find(|t| t.try_number == u.try_number))
        {
            t.log_path = Some(path.clone());
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
        owner_alive: &dyn Fn(&Owner) -> bool,
    ) -> Result<Vec<(RunRecord, Vec<ProcessRecord>)>, StoreError> {
        let mut inner = self.lock();
        let now = Utc::now();
        let mut out = Vec::new();
        let orphaned: Vec<usize> = (0..inner.runs.len())
            .filter(|&i| {
                inner.runs[i].state == RunState::Running && !owner_alive(&inner.runs[i].owner)
            })
            .collect();
        for i in orphaned {
            let note = format!(
                "interrupted: its orchestrator (pid {} on {}) stopped without finishing it",
                inner.runs[i].owner.pid, inner.runs[i].owner.host
            );
            let run_id = inner.runs[i].run_id.clone();
            {
                let run = &mut inner.runs[i];
                run.state = RunState::Failed;
                run.ended_at = Some(now);
                run.note = Some(note);
            }
            for ti in inner.tasks.get_mut(&run_id).into_iter().flatten() {
                match ti.state {
                    TaskState::Running | TaskState::UpForRetry => {
                        ti.state = TaskState::Failed;
                        ti.ended_at = Some(now);
                        ti.error = Some("interrupted: the orchestrator stopped".into());
                    }
                    TaskState::Pending | TaskState::Queued => {
                        ti.state = TaskState::Skipped;
                        ti.ended_at = Some(now);
                    }
                    _ => {}
                }
            }
            for ((r, _), tries) in inner.tries.iter_mut() {
                if *r == run_id {
                    for t in tries.iter_mut().filter(|t| t.state == TaskState::Running) {
                        t.state = TaskState::Failed;
                        t.ended_at = Some(now);
                        t.error = Some("interrupted: the orchestrator stopped".into());
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
}
