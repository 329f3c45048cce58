//! The store's rules, written once: what an update does to a task instance and its try, when a
//! run is admitted and which id it gets, how a run whose orchestrator died is closed, what a
//! repair (clear, mark, resume) does to a run and its instances, how a DAG version is named. Every backend
//! loads the records, applies these pure functions inside its transaction and persists the result,
//! so a new backend adds persistence, never a copy of the rules.

use chrono::{DateTime, Utc};

use sha2::{Digest, Sha256};

use super::{
    NewRun, Owner, Repair, RepairKind, RunAction, RunRecord, RunState, ServerLease, StoreError,
    TaskInstance, TaskState, TaskTry, TaskUpdate, Trigger,
};

/// The error recorded on tries and task instances that were running when their orchestrator died.
pub const INTERRUPTED: &str = "interrupted: the orchestrator stopped";

/// How the note of a run closed after its orchestrator died begins (such a run can be resumed).
pub const INTERRUPTED_RUN: &str = "interrupted: its orchestrator";

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

/// Refuses a scheduled run of a slot that already has one (`claimed_by`, in any state): the
/// scheduled run is the slot's claim, made in the transaction that creates it, so however many
/// servers fire a schedule, each slot fires once. Runs not started by the cron scheduler claim
/// nothing.
pub fn slot_unclaimed(run: &NewRun, claimed_by: Option<&str>) -> Result<(), StoreError> {
    match claimed_by {
        Some(holder) if run.trigger == Trigger::Scheduled => Err(StoreError::SlotClaimed {
            dag_id: run.dag_id.clone(),
            logical_date: run
                .logical_date
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            run_id: holder.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// A server's lease renewed at `now` for `lease`, from its `previous` record if any, and whether
/// that previous lease had run out (the server was taken for dead meanwhile).
pub fn renew_lease(
    owner: &Owner,
    previous: Option<&ServerLease>,
    now: DateTime<Utc>,
    lease: std::time::Duration,
) -> (ServerLease, bool) {
    let lost = previous.is_some_and(|p| lease_expired(p.expires_at, now));
    let expires_at = chrono::Duration::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (
        ServerLease {
            owner: owner.clone(),
            started_at: previous.map_or(now, |p| p.started_at),
            renewed_at: now,
            expires_at,
            expired: false,
        },
        lost,
    )
}

/// Whether a lease running until `expires_at` has run out at `now`.
pub fn lease_expired(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    expires_at <= now
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
        dag_hash: run.dag_text.as_deref().map(dag_hash),
    }
}

/// The name of a DAG version: the SHA-256 of its text, hex.
pub fn dag_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `repair` may be applied to `run`: a clear or a mark needs a run that has ended (a
/// running run is its driver's to change), a resume needs a run whose orchestrator died.
pub fn check_repair(
    run: &RunRecord,
    kind: RepairKind,
    owner_alive: &dyn Fn(&Owner) -> bool,
) -> Result<(), StoreError> {
    let refuse = |why: String| {
        Err(StoreError::NotRepairable {
            run_id: run.run_id.clone(),
            why,
        })
    };
    let orphaned = run.is_orphaned(owner_alive);
    let closed = run.was_closed_orphaned();
    match kind {
        RepairKind::Clear | RepairKind::Mark if orphaned => refuse(format!(
            "it was interrupted (its orchestrator, pid {} on {}, died); `orchestrator resume {}` continues it",
            run.owner.pid, run.owner.host, run.run_id
        )),
        RepairKind::Clear | RepairKind::Mark if run.state == RunState::Running => refuse(format!(
            "it is running (driven by pid {} on {}); wait for it to end or cancel it",
            run.owner.pid, run.owner.host
        )),
        RepairKind::Resume if !orphaned && !closed => refuse(if run.state == RunState::Running {
            format!(
                "it is running, driven by pid {} on {}",
                run.owner.pid, run.owner.host
            )
        } else {
            format!(
                "it ended ({}); `orchestrator clear` reruns tasks of an ended run",
                run.state
            )
        }),
        _ => Ok(()),
    }
}

/// Applies `r` to a run, its task instances and its tries that were running, after
/// [`check_repair`]: a resume closes the running tries as failed ([`INTERRUPTED`]) and puts
/// their instances up for retry (the driver retries them per their policy, or fails them);
/// `reset` instances go back to `pending` ([`TaskInstance::clear`]); a mark sets its instance's
/// state; the run is running again, owned by `r.owner`, until its driver decides its state.
/// Returns the history entry to keep.
/// `slot_holder` is another running run of the same DAG and logical date, if any: a clear or mark
/// would run the slot twice at once, so it is refused as a new run would be ([`slot_free`]).
pub fn repair(
    run: &mut RunRecord,
    instances: &mut [TaskInstance],
    running_tries: &mut [TaskTry],
    r: &Repair,
    owner_alive: &dyn Fn(&Owner) -> bool,
    slot_holder: Option<&str>,
) -> Result<RunAction, StoreError> {
    check_repair(run, r.kind, owner_alive)?;
    if let Some(holder) = slot_holder.filter(|h| *h != run.run_id) {
        return Err(StoreError::SlotBusy {
            dag_id: run.dag_id.clone(),
            logical_date: run
                .logical_date
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            run_id: holder.to_owned(),
        });
    }
    let closed = run.was_closed_orphaned();
    let named = r.reset.iter().chain(r.mark.iter().map(|(t, _)| t));
    for task_id in named {
        if !instances.iter().any(|ti| ti.task_id == *task_id) {
            return Err(StoreError::NoSuchTask {
                run_id: run.run_id.clone(),
                task_id: task_id.clone(),
            });
        }
    }
    if let Some((task_id, state)) = &r.mark
        && !matches!(state, TaskState::Success | TaskState::Failed)
    {
        return Err(StoreError::NotRepairable {
            run_id: run.run_id.clone(),
            why: format!("task {task_id} can be marked success or failed, not {state}"),
        });
    }
    if r.kind == RepairKind::Resume {
        for t in running_tries.iter_mut() {
            t.close_orphaned(r.at);
        }
        for ti in instances.iter_mut() {
            ti.interrupt(closed);
        }
    }
    for ti in instances.iter_mut() {
        if r.reset.contains(&ti.task_id) {
            ti.clear();
        }
        if let Some((task_id, state)) = &r.mark
            && *task_id == ti.task_id
        {
            ti.mark(*state, r.reason.as_deref(), r.at);
        }
    }
    let from_state = if r.kind == RepairKind::Resume && !closed {
        RunState::Running
    } else {
        run.state
    };
    run.reopen(r.owner.clone());
    let mut tasks = r.reset.clone();
    tasks.extend(r.mark.iter().map(|(t, _)| t.clone()));
    Ok(RunAction {
        run_id: run.run_id.clone(),
        at: r.at,
        kind: r.kind,
        tasks,
        state: r.mark.as_ref().map(|(_, s)| *s),
        from_state,
        reason: r.reason.clone(),
        by: r.owner.clone(),
    })
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

    /// Running again under `owner` (a repair): no end, no note of how it ended.
    pub fn reopen(&mut self, owner: Owner) {
        self.state = RunState::Running;
        self.ended_at = None;
        self.note = None;
        self.owner = owner;
    }

    /// Whether this run was closed because its orchestrator died (and was not repaired since).
    pub fn was_closed_orphaned(&self) -> bool {
        self.state == RunState::Failed
            && self
                .note
                .as_deref()
                .is_some_and(|n| n.starts_with(INTERRUPTED_RUN))
    }

    /// Whether this run is running and its owner is gone (per `owner_alive`).
    pub fn is_orphaned(&self, owner_alive: &dyn Fn(&Owner) -> bool) -> bool {
        self.state == RunState::Running && !owner_alive(&self.owner)
    }

    /// Closes a run whose orchestrator died: failed, ended `now`, with a note naming the owner.
    pub fn close_orphaned(&mut self, now: DateTime<Utc>) {
        let note = format!(
            "{INTERRUPTED_RUN} (pid {} on {}) stopped without finishing it; `orchestrator resume {}` continues it",
            self.owner.pid, self.owner.host, self.run_id
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

    /// Back to `pending` for a new try (a clear): its tries stay, `try_number` counts on from them;
    /// its outputs, error and times of the old tries are gone from the instance.
    pub fn clear(&mut self) {
        self.state = TaskState::Pending;
        self.started_at = None;
        self.ended_at = None;
        self.exit_code = None;
        self.error = None;
        self.outputs.clear();
    }

    /// An instance of a run taken over after its orchestrator died: a running (or retrying) one
    /// is up for retry with [`INTERRUPTED`] as its error (the driver retries it if its policy
    /// allows, else fails it), a queued one is pending again (its trigger rule is decided again).
    /// When the run had been `closed` as orphaned ([`close_orphaned`](Self::close_orphaned)), its
    /// interrupted instances are failed with [`INTERRUPTED`] and those it never started are
    /// skipped without a try: they are taken back the same way.
    pub fn interrupt(&mut self, closed: bool) {
        match self.state {
            TaskState::Running | TaskState::UpForRetry => {
                self.state = TaskState::UpForRetry;
                self.error = Some(INTERRUPTED.to_owned());
            }
            TaskState::Failed if closed && self.error.as_deref() == Some(INTERRUPTED) => {
                self.state = TaskState::UpForRetry;
                self.ended_at = None;
            }
            TaskState::Skipped if closed && self.try_number == 0 => {
                self.state = TaskState::Pending;
                self.ended_at = None;
            }
            TaskState::Queued => self.state = TaskState::Pending,
            _ => {}
        }
    }

    /// Set by hand to `state` (success or failed) at `at`: a success keeps no error, a failure
    /// says it was marked and why; outputs stay as the last success left them.
    pub fn mark(&mut self, state: TaskState, reason: Option<&str>, at: DateTime<Utc>) {
        self.state = state;
        self.ended_at = Some(at);
        self.error = (state == TaskState::Failed).then(|| match reason {
            Some(reason) => format!("marked failed by hand: {reason}"),
            None => "marked failed by hand".to_owned(),
        });
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
