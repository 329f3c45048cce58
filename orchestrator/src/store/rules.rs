//! The store's rules, written once: what an update does to a task instance and its try, when a
//! run is admitted and which id it gets, how a run whose orchestrator died is closed. Every backend
//! loads the records, applies these pure functions inside its transaction and persists the result,
//! so a new backend adds persistence, never a copy of the rules.

use chrono::{DateTime, Utc};

use super::{
    NewRun, Owner, RunRecord, RunState, StoreError, TaskInstance, TaskState, TaskTry, TaskUpdate,
};

/// The error recorded on tries and task instances that were running when their orchestrator died.
pub const INTERRUPTED: &str = "interrupted: the orchestrator stopped";

/// Refuses a new run of `dag_id` when it already has `active` running runs and its limit is `max`.
pub fn admit(dag_id: &str, active: u32, max: Option<u32>) -> Result<(), StoreError> {
    match max {
        Some(max) if active >= max => Err(StoreError::TooManyActiveRuns {
            dag_id: dag_id.to_owned(),
            active,
            max,
        }),
        _ => Ok(()),
    }
}

/// Refuses a new run of a slot (DAG and logical date) that a running run already holds, so that
/// the cron scheduler, a backfill and a manual run never run the same slot twice at once.
pub fn slot_free(run: &NewRun, holder: Option<&str>) -> Result<(), StoreError> {
    match holder {
        Some(holder) => Err(StoreError::SlotBusy {
            dag_id: run.dag_id.clone(),
            logical_date: run
                .logical_date
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            run_id: holder.to_owned(),
        }),
        None => Ok(()),
    }
}

/// The first of `proposed`, `proposed.2`, `proposed.3`... for which `taken` says no.
pub fn unique_run_id<E>(
    proposed: &str,
    mut taken: impl FnMut(&str) -> Result<bool, E>,
) -> Result<String, E> {
    let mut run_id = proposed.to_owned();
    let mut n = 1;
    while taken(&run_id)? {
        n += 1;
        run_id = format!("{proposed}.{n}");
    }
    Ok(run_id)
}

/// The record of a run just created under `run_id`.
pub fn new_run_record(run: &NewRun, run_id: String) -> RunRecord {
    RunRecord {
        run_id,
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
    }
}

/// The pending instances of a run just created, in the run's task order.
pub fn new_task_instances(run: &NewRun, run_id: &str) -> Vec<TaskInstance> {
    run.task_ids
        .iter()
        .map(|task_id| TaskInstance::pending(run_id, task_id))
        .collect()
}

impl RunRecord {
    /// Sets the run's state: a final state stamps `ended_at` with `now`, `Running` clears it; a
    /// `note` replaces the old one, `None` keeps it.
    pub fn finish(&mut self, state: RunState, note: Option<&str>, now: DateTime<Utc>) {
        self.state = state;
        self.ended_at = (state != RunState::Running).then_some(now);
        if let Some(note) = note {
            self.note = Some(note.to_owned());
        }
    }

    /// Whether this run is running and its owner is gone (per `owner_alive`).
    pub fn is_orphaned(&self, owner_alive: &dyn Fn(&Owner) -> bool) -> bool {
        self.state == RunState::Running && !owner_alive(&self.owner)
    }

    /// Closes a run whose orchestrator died: failed, ended `now`, with a note naming the owner.
    pub fn close_orphaned(&mut self, now: DateTime<Utc>) {
        let note = format!(
            "interrupted: its orchestrator (pid {} on {}) stopped without finishing it",
            self.owner.pid, self.owner.host
        );
        self.finish(RunState::Failed, Some(&note), now);
    }
}

impl TaskInstance {
    /// An instance of a run just created: pending, never tried.
    pub fn pending(run_id: &str, task_id: &str) -> Self {
        TaskInstance {
            run_id: run_id.to_owned(),
            task_id: task_id.to_owned(),
            state: TaskState::Pending,
            try_number: 0,
            started_at: None,
            ended_at: None,
            exit_code: None,
            error: None,
            outputs: Default::default(),
        }
    }

    /// Applies an update that carries a state (an update without one changes no instance):
    /// the try number only grows; the first `running` stamps `started_at`; a final state stamps
    /// `ended_at` (and any other clears it); an exit code replaces the last one; an error is kept
    /// for failed states and cleared by success; outputs are kept only from a success.
    pub fn apply(&mut self, u: &TaskUpdate) {
        let Some(state) = u.state else { return };
        self.state = state;
        self.try_number = self.try_number.max(u.try_number);
        if state == TaskState::Running && self.started_at.is_none() {
            self.started_at = u.at;
        }
        self.ended_at = if state.is_finished() { u.at } else { None };
        if u.exit_code.is_some() {
            self.exit_code = u.exit_code;
        }
        match state {
            TaskState::Failed | TaskState::UpForRetry | TaskState::UpstreamFailed
                if u.error.is_some() =>
            {
                self.error.clone_from(&u.error);
            }
            TaskState::Success => {
                self.error = None;
                if let Some(outputs) = &u.outputs {
                    self.outputs.clone_from(outputs);
                }
            }
            _ => {}
        }
    }

    /// Closes an instance whose orchestrator died: a running (or retrying) one failed, one not yet
    /// started skipped, a finished one untouched. Returns whether it changed.
    pub fn close_orphaned(&mut self, now: DateTime<Utc>) -> bool {
        match self.state {
            TaskState::Running | TaskState::UpForRetry => {
                self.state = TaskState::Failed;
                self.error = Some(INTERRUPTED.to_owned());
            }
            TaskState::Pending | TaskState::Queued => self.state = TaskState::Skipped,
            _ => return false,
        }
        self.ended_at = Some(now);
        true
    }
}

impl TaskTry {
    /// Applies an update to try `u.try_number` of a task instance, creating the try (started at
    /// `u.at`) when `current` is `None`. Returns `None` when the update touches no try: try number
    /// 0 (a state change before any try, such as `queued` or `skipped`), or a log path for a try
    /// that does not exist.
    pub fn updated(run_id: &str, current: Option<TaskTry>, u: &TaskUpdate) -> Option<TaskTry> {
        if u.try_number == 0 {
            return None;
        }
        let mut t = match (current, u.state) {
            (Some(t), _) => t,
            (None, Some(state)) => TaskTry {
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
            },
            (None, None) => return None,
        };
        if let Some(state) = u.state {
            t.state = state;
            if state.is_finished() || state == TaskState::UpForRetry {
                t.ended_at = u.at;
            }
            if u.exit_code.is_some() {
                t.exit_code = u.exit_code;
            }
            if u.error.is_some() {
                t.error.clone_from(&u.error);
            }
            if let Some(outputs) = &u.outputs {
                t.outputs.clone_from(outputs);
            }
        }
        if let Some(path) = &u.log_path {
            t.log_path = Some(path.clone());
        }
        Some(t)
    }

    /// Closes a try that was running when its orchestrator died. Returns whether it changed.
    pub fn close_orphaned(&mut self, now: DateTime<Utc>) -> bool {
        if self.state != TaskState::Running {
            return false;
        }
        self.state = TaskState::Failed;
        self.ended_at = Some(now);
        self.error = Some(INTERRUPTED.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(try_number: u32, state: TaskState) -> TaskUpdate {
        TaskUpdate {
            task_id: "a".into(),
            try_number,
            state: Some(state),
            at: Some(Utc::now()),
            ..Default::default()
        }
    }

    #[test]
    fn success_clears_the_error_and_keeps_outputs_only_from_success() {
        let mut ti = TaskInstance::pending("r", "a");
        let mut failed = upd(1, TaskState::UpForRetry);
        failed.error = Some("boom".into());
        failed.outputs = Some(serde_json::json!({"x": 1}).as_object().unwrap().clone());
        ti.apply(&failed);
        assert_eq!(ti.error.as_deref(), Some("boom"));
        assert!(ti.outputs.is_empty() && ti.ended_at.is_none());
        let mut ok = upd(2, TaskState::Success);
        ok.outputs = Some(serde_json::json!({"x": 2}).as_object().unwrap().clone());
        ti.apply(&ok);
        assert_eq!((ti.error.as_deref(), ti.try_number), (None, 2));
        assert_eq!(ti.outputs["x"], 2);
        assert!(ti.ended_at.is_some());
    }

    #[test]
    fn an_up_for_retry_try_is_ended_but_its_instance_is_not() {
        let t = TaskTry::updated("r", None, &upd(1, TaskState::Running)).unwrap();
        assert!(t.ended_at.is_none());
        let t = TaskTry::updated("r", Some(t), &upd(1, TaskState::UpForRetry)).unwrap();
        assert!(t.ended_at.is_some());
        assert!(TaskTry::updated("r", None, &upd(0, TaskState::Queued)).is_none());
    }

    #[test]
    fn run_ids_get_the_first_free_suffix() {
        let taken = ["m", "m.2"];
        let id = unique_run_id::<()>("m", |id| Ok(taken.contains(&id))).unwrap();
        assert_eq!(id, "m.3");
        assert!(admit("d", 2, Some(2)).is_err());
        assert!(admit("d", 1, Some(2)).is_ok() && admit("d", 9, None).is_ok());
    }
}
