//! Which task instances a repair of a run sends back to `pending`: a clear's chosen tasks (and
//! with `downstream`, everything below them), the tasks whose state was only a consequence of
//! theirs (`skipped`, `upstream_failed` below them: decided again), and the `process.spawn` /
//! `process.stop` pairs that must run together. Pure functions of the DAG and the stored states;
//! the store's rules then apply the plan to the records.
//!
//! Background processes never outlive the driver that started them (a run's `process.spawn`
//! children are stopped when its driver ends, and killed at recovery when it died), so when a
//! repaired run is driven again no process of an earlier drive is alive. Hence the pair rule:
//! - clearing a `process.stop` clears the `process.spawn` it names (its process is gone: a new
//!   one is started, and it is the one the stop stops);
//! - clearing a `process.spawn` clears every `process.stop` naming it (the new process is stopped
//!   by the DAG, with its final outputs, not only at the end of the run);
//! - a `process.spawn` that succeeded is run again when a task that runs while its process lives
//!   (a task below it and not below a stop naming it, the stops included) will run again.
//!
//! A stop thus only ever stops the process its own run's spawn started in the same drive, and
//! whatever is still running when the run ends is stopped then.

use std::collections::{BTreeSet, VecDeque};

use serde::Serialize;

use crate::dag::Dag;
use crate::operators::TaskKind;
use crate::store::{TaskInstance, TaskState};

/// What to clear.
#[derive(Clone, Debug, Default)]
pub struct ClearRequest {
    /// Task ids named (none with `failed`: every failed task).
    pub tasks: Vec<String>,
    /// Everything downstream of the chosen tasks too.
    pub downstream: bool,
    /// Only tasks whose state is `failed` or `upstream_failed`.
    pub failed: bool,
}

/// Why a task instance goes back to `pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Named (or failed, with `--failed`).
    Chosen,
    /// Downstream of a chosen task (`--downstream`).
    Downstream,
    /// `skipped` or `upstream_failed` below a task that runs again: decided again.
    Redecided,
    /// The other half of a `process.spawn` / `process.stop` pair, or a spawn whose process a
    /// task that runs again needs.
    Process,
}

/// One task instance a repair sends back to `pending`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedTask {
    /// The task.
    pub task_id: String,
    /// Its state now.
    pub state: TaskState,
    /// Why it goes back.
    pub reason: Reason,
}

/// The task instances a repair resets, in the DAG's topological order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepairPlan {
    /// The tasks.
    pub tasks: Vec<PlannedTask>,
}

impl RepairPlan {
    /// The task ids.
    pub fn task_ids(&self) -> Vec<String> {
        self.tasks.iter().map(|t| t.task_id.clone()).collect()
    }
}

/// Errors of a clear request.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A named task is not in the run's DAG.
    #[error("the run's DAG has no task {0:?}; its tasks: {1}")]
    UnknownTask(String, String),
    /// Nothing was named.
    #[error("name the tasks to clear, or pass --failed to clear the failed ones")]
    NothingNamed,
    /// Nothing matched.
    #[error("nothing to clear: {0}")]
    Nothing(String),
}

/// The stored state of each task of `dag` (a task the run does not know is `pending`).
pub fn states(dag: &Dag, instances: &[TaskInstance]) -> Vec<TaskState> {
    dag.tasks
        .iter()
        .map(|t| {
            instances
                .iter()
                .find(|ti| ti.task_id == t.id)
                .map_or(TaskState::Pending, |ti| ti.state)
        })
        .collect()
}

/// The plan of a clear.
pub fn plan_clear(
    dag: &Dag,
    instances: &[TaskInstance],
    req: &ClearRequest,
) -> Result<RepairPlan, PlanError> {
    let states = states(dag, instances);
    let mut reasons: Vec<Option<Reason>> = vec![None; dag.tasks.len()];
    for id in &req.tasks {
        let i = dag.index_of(id).ok_or_else(|| {
            let ids: Vec<&str> = dag.tasks.iter().map(|t| t.id.as_str()).collect();
            PlanError::UnknownTask(id.clone(), ids.join(", "))
        })?;
        reasons[i] = Some(Reason::Chosen);
    }
    let is_failed = |s: TaskState| matches!(s, TaskState::Failed | TaskState::UpstreamFailed);
    if req.failed {
        if req.tasks.is_empty() {
            for (i, s) in states.iter().enumerate() {
                if is_failed(*s) {
                    reasons[i] = Some(Reason::Chosen);
                }
            }
        } else {
            for (i, s) in states.iter().enumerate() {
                if !is_failed(*s) {
                    reasons[i] = None;
                }
            }
        }
    } else if req.tasks.is_empty() {
        return Err(PlanError::NothingNamed);
    }
    if reasons.iter().all(Option::is_none) {
        return Err(PlanError::Nothing(if req.failed {
            "no task of the run failed".into()
        } else {
            "no task chosen".into()
        }));
    }
    if req.downstream {
        let chosen: Vec<usize> = (0..reasons.len())
            .filter(|&i| reasons[i].is_some())
            .collect();
        for i in descendants(dag, &chosen) {
            reasons[i].get_or_insert(Reason::Downstream);
        }
    }
    close(dag, &states, &mut reasons);
    Ok(plan(dag, &states, &reasons))
}

/// The plan of a mark: the tasks below `marked` decided again, and the process pairs they need.
pub fn plan_mark(dag: &Dag, instances: &[TaskInstance], marked: usize) -> RepairPlan {
    let states = states(dag, instances);
    let mut reasons: Vec<Option<Reason>> = vec![None; dag.tasks.len()];
    redecide(dag, &states, &[marked], &mut reasons);
    close(dag, &states, &mut reasons);
    reasons[marked] = None;
    plan(dag, &states, &reasons)
}

/// The plan of a resume: the `process.spawn` tasks whose process is gone while the run still
/// needs it (with their stops).
pub fn plan_resume(dag: &Dag, instances: &[TaskInstance]) -> RepairPlan {
    let states = states(dag, instances);
    let mut reasons: Vec<Option<Reason>> = vec![None; dag.tasks.len()];
    close(dag, &states, &mut reasons);
    plan(dag, &states, &reasons)
}

fn plan(dag: &Dag, states: &[TaskState], reasons: &[Option<Reason>]) -> RepairPlan {
    RepairPlan {
        tasks: reasons
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.map(|reason| PlannedTask {
                    task_id: dag.tasks[i].id.clone(),
                    state: states[i],
                    reason,
                })
            })
            .collect(),
    }
}

/// Every task below `from` (not `from` itself), in no particular order.
fn descendants(dag: &Dag, from: &[usize]) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<usize> = from.iter().copied().collect();
    while let Some(i) = queue.pop_front() {
        for &d in &dag.tasks[i].downstream {
            if seen.insert(d) {
                queue.push_back(d);
            }
        }
    }
    seen
}

/// Adds the `skipped` and `upstream_failed` tasks below `from`: their state was decided from
/// outcomes that are about to change.
fn redecide(dag: &Dag, states: &[TaskState], from: &[usize], reasons: &mut [Option<Reason>]) {
    for i in descendants(dag, from) {
        if matches!(states[i], TaskState::Skipped | TaskState::UpstreamFailed) {
            reasons[i].get_or_insert(Reason::Redecided);
        }
    }
}

/// The process.spawn task a process.stop task names.
fn stop_target(dag: &Dag, i: usize) -> Option<usize> {
    match &dag.tasks[i].kind {
        TaskKind::ProcessStop(stop) => dag.index_of(&stop.task),
        _ => None,
    }
}

/// The stops naming spawn `s`.
fn stops_of(dag: &Dag, s: usize) -> Vec<usize> {
    (0..dag.tasks.len())
        .filter(|&i| stop_target(dag, i) == Some(s))
        .collect()
}

/// The tasks that run while spawn `s`'s process lives: below it, not below one of its stops;
/// the stops included.
fn users(dag: &Dag, s: usize) -> BTreeSet<usize> {
    let stops = stops_of(dag, s);
    let after_stops = descendants(dag, &stops);
    descendants(dag, &[s])
        .into_iter()
        .filter(|i| !after_stops.contains(i))
        .collect()
}

/// Closes `reasons` under the rules: tasks below anything reset are decided again, process
/// pairs go together, a spawn whose process a rerun task needs runs again. To a fixed point.
fn close(dag: &Dag, states: &[TaskState], reasons: &mut [Option<Reason>]) {
    loop {
        let before = reasons.iter().filter(|r| r.is_some()).count();
        let reset: Vec<usize> = (0..reasons.len())
            .filter(|&i| reasons[i].is_some())
            .collect();
        redecide(dag, states, &reset, reasons);
        for i in 0..dag.tasks.len() {
            let runs_again = |j: usize| reasons[j].is_some() || !states[j].is_finished();
            match &dag.tasks[i].kind {
                TaskKind::ProcessSpawn(_) => {
                    if reasons[i].is_some() {
                        for stop in stops_of(dag, i) {
                            reasons[stop].get_or_insert(Reason::Process);
                        }
                    } else if states[i] == TaskState::Success
                        && users(dag, i).into_iter().any(runs_again)
                    {
                        reasons[i] = Some(Reason::Process);
                    }
                }
                TaskKind::ProcessStop(_) if reasons[i].is_some() => {
                    if let Some(s) = stop_target(dag, i) {
                        reasons[s].get_or_insert(Reason::Process);
                    }
                }
                _ => {}
            }
        }
        if reasons.iter().filter(|r| r.is_some()).count() == before {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BENCH: &str = r#"
[dag]
id = "d"
[[task]]
id = "setup"
kind = "noop"
[[task]]
id = "spawn"
kind = "process.spawn"
depends_on = ["setup"]
program = "sleep"
args = ["60"]
[[task]]
id = "produce"
kind = "noop"
depends_on = ["spawn"]
[[task]]
id = "wait"
kind = "noop"
depends_on = ["produce"]
[[task]]
id = "stop"
kind = "process.stop"
depends_on = ["wait"]
trigger_rule = "all_done"
task = "spawn"
[[task]]
id = "validate"
kind = "noop"
depends_on = ["wait", "stop"]
[[task]]
id = "report"
kind = "noop"
depends_on = ["validate"]
"#;

    fn dag() -> Dag {
        crate::dag::parse_str(BENCH, "bench.toml").unwrap()
    }

    fn instances(dag: &Dag, states: &[(&str, TaskState)]) -> Vec<TaskInstance> {
        dag.tasks
            .iter()
            .map(|t| {
                let mut ti = TaskInstance::pending("r", &t.id);
                ti.state = states
                    .iter()
                    .find(|(id, _)| *id == t.id)
                    .map_or(TaskState::Success, |(_, s)| *s);
                ti
            })
            .collect()
    }

    fn ids(plan: &RepairPlan) -> Vec<&str> {
        plan.tasks.iter().map(|t| t.task_id.as_str()).collect()
    }

    #[test]
    fn clearing_a_failed_check_redecides_what_it_failed_and_touches_no_process() {
        let dag = dag();
        let ti = instances(
            &dag,
            &[
                ("validate", TaskState::Failed),
                ("report", TaskState::UpstreamFailed),
            ],
        );
        let req = ClearRequest {
            failed: true,
            ..Default::default()
        };
        let plan = plan_clear(&dag, &ti, &req).unwrap();
        assert_eq!(ids(&plan), ["validate", "report"]);
        assert_eq!(plan.tasks[0].reason, Reason::Chosen);
    }

    #[test]
    fn clearing_inside_a_process_pair_runs_the_pair_again() {
        let dag = dag();
        let ti = instances(
            &dag,
            &[
                ("wait", TaskState::Failed),
                ("validate", TaskState::UpstreamFailed),
                ("report", TaskState::UpstreamFailed),
            ],
        );
        let req = ClearRequest {
            tasks: vec!["wait".into()],
            ..Default::default()
        };
        let plan = plan_clear(&dag, &ti, &req).unwrap();
        assert_eq!(
            ids(&plan),
            ["spawn", "wait", "stop", "validate", "report"],
            "{plan:?}"
        );
        // A stop alone brings its spawn; a spawn alone brings its stop.
        for alone in ["stop", "spawn"] {
            let req = ClearRequest {
                tasks: vec![alone.into()],
                ..Default::default()
            };
            let plan = plan_clear(&dag, &instances(&dag, &[]), &req).unwrap();
            assert_eq!(ids(&plan), ["spawn", "stop"], "{alone}: {plan:?}");
        }
    }

    #[test]
    fn downstream_takes_everything_below() {
        let dag = dag();
        let req = ClearRequest {
            tasks: vec!["produce".into()],
            downstream: true,
            ..Default::default()
        };
        let plan = plan_clear(&dag, &instances(&dag, &[]), &req).unwrap();
        assert_eq!(
            ids(&plan),
            ["spawn", "produce", "wait", "stop", "validate", "report"]
        );
        let err = plan_clear(
            &dag,
            &instances(&dag, &[]),
            &ClearRequest {
                tasks: vec!["nope".into()],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("no task \"nope\""), "{err}");
        assert!(plan_clear(&dag, &instances(&dag, &[]), &ClearRequest::default()).is_err());
    }

    #[test]
    fn a_resume_restarts_a_process_still_needed_and_no_other() {
        let dag = dag();
        let mid = instances(
            &dag,
            &[
                ("wait", TaskState::Running),
                ("stop", TaskState::Pending),
                ("validate", TaskState::Pending),
                ("report", TaskState::Pending),
            ],
        );
        assert_eq!(ids(&plan_resume(&dag, &mid)), ["spawn", "stop"]);
        let after_stop = instances(
            &dag,
            &[
                ("validate", TaskState::Running),
                ("report", TaskState::Pending),
            ],
        );
        assert!(plan_resume(&dag, &after_stop).tasks.is_empty());
    }

    #[test]
    fn a_mark_redecides_below_the_marked_task() {
        let dag = dag();
        let ti = instances(
            &dag,
            &[
                ("validate", TaskState::Failed),
                ("report", TaskState::UpstreamFailed),
            ],
        );
        let i = dag.index_of("validate").unwrap();
        assert_eq!(ids(&plan_mark(&dag, &ti, i)), ["report"]);
    }
}
