//! Trigger rules end to end: each rule over succeeding, failing and skipped upstream tasks, and the
//! run's state following its leaves.

mod common;

use common::{run, state, store_matches};
use orchestrator::store::{RunState, Store, TaskState};

/// Two upstream tasks (`ok` succeeds, `bad` fails) and one downstream task per rule over both.
const RULES_DAG: &str = r#"
[dag]
id = "rules"

[[task]]
id = "ok"
kind = "noop"

[[task]]
id = "bad"
kind = "noop"
fail = true

[[task]]
id = "all_success"
kind = "noop"
depends_on = ["ok", "bad"]

[[task]]
id = "all_done"
kind = "noop"
depends_on = ["ok", "bad"]
trigger_rule = "all_done"

[[task]]
id = "all_failed"
kind = "noop"
depends_on = ["ok", "bad"]
trigger_rule = "all_failed"

[[task]]
id = "one_success"
kind = "noop"
depends_on = ["ok", "bad"]
trigger_rule = "one_success"

[[task]]
id = "one_failed"
kind = "noop"
depends_on = ["ok", "bad"]
trigger_rule = "one_failed"

[[task]]
id = "none_failed"
kind = "noop"
depends_on = ["ok", "bad"]
trigger_rule = "none_failed"

[[task]]
id = "only_failed"
kind = "noop"
depends_on = ["bad"]
trigger_rule = "all_failed"

[[task]]
id = "after_upstream_failed"
kind = "noop"
depends_on = ["all_success"]
"#;

#[tokio::test]
async fn each_trigger_rule_over_a_success_and_a_failure() {
    let (outcome, store, _logs) = run(RULES_DAG).await;
    let expect = [
        ("ok", TaskState::Success),
        ("bad", TaskState::Failed),
        ("all_success", TaskState::UpstreamFailed),
        ("all_done", TaskState::Success),
        ("all_failed", TaskState::Skipped),
        ("one_success", TaskState::Success),
        ("one_failed", TaskState::Success),
        ("none_failed", TaskState::UpstreamFailed),
        ("only_failed", TaskState::Success),
        ("after_upstream_failed", TaskState::UpstreamFailed),
    ];
    for (task, want) in expect {
        assert_eq!(state(&outcome, task), want, "task {task}");
    }
    // Leaves include upstream_failed ones: the run failed.
    assert_eq!(outcome.state, RunState::Failed);
    store_matches(store.as_ref(), &outcome);
    let bad = store.tries(&outcome.run_id, "bad").unwrap();
    assert_eq!(bad.len(), 1);
    assert!(bad[0].error.as_deref().unwrap().contains("fail = true"));
}

#[tokio::test]
async fn skipped_upstream_skips_all_success_but_not_none_failed() {
    let (outcome, _store, _logs) = run(r#"
[dag]
id = "skips"

[[task]]
id = "ok"
kind = "noop"

[[task]]
id = "skipped"
kind = "noop"
depends_on = ["ok"]
trigger_rule = "one_failed"

[[task]]
id = "strict"
kind = "noop"
depends_on = ["ok", "skipped"]

[[task]]
id = "lenient"
kind = "noop"
depends_on = ["ok", "skipped"]
trigger_rule = "none_failed"

[[task]]
id = "all_skipped"
kind = "noop"
depends_on = ["skipped"]
trigger_rule = "one_success"
"#)
    .await;
    assert_eq!(state(&outcome, "skipped"), TaskState::Skipped);
    assert_eq!(state(&outcome, "strict"), TaskState::Skipped);
    assert_eq!(state(&outcome, "lenient"), TaskState::Success);
    assert_eq!(state(&outcome, "all_skipped"), TaskState::Skipped);
    // Every leaf succeeded or was skipped.
    assert_eq!(outcome.state, RunState::Success);
}

#[tokio::test]
async fn a_cleanup_task_runs_after_a_failure_and_a_watcher_fails_the_run() {
    let (outcome, _store, _logs) = run(r#"
[dag]
id = "cleanup"

[[task]]
id = "work"
kind = "noop"
fail = true

[[task]]
id = "cleanup"
kind = "noop"
depends_on = ["work"]
trigger_rule = "all_done"
"#)
    .await;
    assert_eq!(state(&outcome, "cleanup"), TaskState::Success);
    // As in Airflow, the run follows its leaves: the only leaf (cleanup) succeeded.
    assert_eq!(outcome.state, RunState::Success);

    let (outcome, _store, _logs) = run(r#"
[dag]
id = "cleanup_and_watcher"

[[task]]
id = "work"
kind = "noop"
fail = true

[[task]]
id = "cleanup"
kind = "noop"
depends_on = ["work"]
trigger_rule = "all_done"

[[task]]
id = "watcher"
kind = "noop"
depends_on = ["work"]
trigger_rule = "one_failed"
fail = true
"#)
    .await;
    assert_eq!(state(&outcome, "cleanup"), TaskState::Success);
    assert_eq!(state(&outcome, "watcher"), TaskState::Failed);
    assert_eq!(outcome.state, RunState::Failed);
}

#[tokio::test]
async fn independent_tasks_run_in_parallel_up_to_max_active_tasks() {
    // Four 300 ms sleeps with max_active_tasks = 2 take two rounds; the join waits for all.
    let (outcome, store, _logs) = run(r#"
[dag]
id = "parallel"
max_active_tasks = 2

[[task]]
id = "a"
kind = "sleep"
duration = "300ms"

[[task]]
id = "b"
kind = "sleep"
duration = "300ms"

[[task]]
id = "c"
kind = "sleep"
duration = "300ms"

[[task]]
id = "d"
kind = "sleep"
duration = "300ms"

[[task]]
id = "join"
kind = "noop"
depends_on = ["a", "b", "c", "d"]
"#)
    .await;
    assert_eq!(outcome.state, RunState::Success);
    // At no point were more than two sleeps running: check overlapping [start, end] intervals.
    let tis = store.task_instances(&outcome.run_id).unwrap();
    let sleeps: Vec<_> = tis.iter().filter(|t| t.task_id != "join").collect();
    for t in &sleeps {
        let at = t.started_at.unwrap();
        let running = sleeps
            .iter()
            .filter(|o| o.started_at.unwrap() <= at && o.ended_at.unwrap() > at)
            .count();
        assert!(running <= 2, "{running} tasks running at once at {at}");
    }
    let join = tis.iter().find(|t| t.task_id == "join").unwrap();
    assert!(
        sleeps
            .iter()
            .all(|s| s.ended_at.unwrap() <= join.started_at.unwrap())
    );
}
