//! Execution: retries with exponential backoff (tokio's paused time), timeouts and cancellation
//! killing whole process trees, templating with upstream outputs, logs of each try.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{dag, engine, process_gone, read_pids, run, state, wait_for};
use orchestrator::events::{EventSink, RunEvent};
use orchestrator::operators::TaskContext;
use orchestrator::process::{ProcessRegistry, ProcessSpec};
use orchestrator::scheduler::RunRequest;
use orchestrator::store::{RunState, Store, TaskState};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test(start_paused = true)]
async fn retries_wait_with_exponential_backoff_up_to_the_cap() {
    let start = tokio::time::Instant::now();
    let (outcome, store, _logs) = run(r#"
[dag]
id = "retries"

[dag.defaults]
retry_delay = "10s"
retry_exponential_backoff = true
max_retry_delay = "25s"

[[task]]
id = "flaky"
kind = "noop"
fail_tries = 3
retries = 4

[[task]]
id = "doomed"
kind = "noop"
fail = true
retries = 1
retry_exponential_backoff = false
retry_delay = "1s"
"#)
    .await;
    // Delays before tries 2, 3, 4: 10 s, 20 s, then 40 s capped at 25 s.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(55) && elapsed < Duration::from_secs(56),
        "virtual time {elapsed:?}"
    );
    assert_eq!(state(&outcome, "flaky"), TaskState::Success);
    let tries = store.tries(&outcome.run_id, "flaky").unwrap();
    let states: Vec<TaskState> = tries.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [
            TaskState::UpForRetry,
            TaskState::UpForRetry,
            TaskState::UpForRetry,
            TaskState::Success
        ]
    );
    assert_eq!(state(&outcome, "doomed"), TaskState::Failed);
    assert_eq!(store.tries(&outcome.run_id, "doomed").unwrap().len(), 2);
    let ti = store.task_instances(&outcome.run_id).unwrap();
    let flaky = ti.iter().find(|t| t.task_id == "flaky").unwrap();
    assert_eq!((flaky.try_number, flaky.error.as_deref()), (4, None));
    assert_eq!(outcome.state, RunState::Failed);
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    // The shell starts a grandchild that ignores SIGTERM, so only the group SIGKILL ends it.
    let text = format!(
        r#"
[dag]
id = "timeout"

[[task]]
id = "slow"
kind = "command"
timeout = "1s"
retries = 0
shell = "(trap '' TERM; exec sleep 300) & echo $! $$ > {pids}; wait"

[[task]]
id = "after"
kind = "noop"
depends_on = ["slow"]
"#,
        pids = pids.display()
    );
    let (outcome, store, _logs) = run(&text).await;
    assert_eq!(state(&outcome, "slow"), TaskState::Failed);
    assert_eq!(state(&outcome, "after"), TaskState::UpstreamFailed);
    let slow = &store.tries(&outcome.run_id, "slow").unwrap()[0];
    assert!(
        slow.error
            .as_deref()
            .unwrap()
            .contains("timed out after 1s"),
        "{slow:?}"
    );
    for pid in read_pids(&pids, 2) {
        assert!(process_gone(pid), "process {pid} survived the timeout");
    }
    assert!(
        store.processes(&outcome.run_id).unwrap().is_empty(),
        "reaped processes are forgotten"
    );
}

#[tokio::test]
async fn cancelling_a_run_stops_running_tasks_and_skips_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    let text = format!(
        r#"
[dag]
id = "cancel"
max_active_tasks = 2

[[task]]
id = "long"
kind = "command"
shell = "(trap '' TERM; exec sleep 300) & echo $! $$ > {pids}; wait"

[[task]]
id = "nap"
kind = "sleep"
duration = "5m"

[[task]]
id = "waiting_for_a_slot"
kind = "noop"

[[task]]
id = "downstream"
kind = "noop"
depends_on = ["long"]
"#,
        pids = pids.display()
    );
    let logs = tempfile::tempdir().unwrap();
    let (engine, store) = engine(logs.path());
    let (events, mut rx) = EventSink::channel();
    let handle = engine
        .start(
            dag(&text),
            RunRequest::default(),
            events,
            &CancellationToken::new(),
        )
        .unwrap();
    wait_for(&mut rx, |e| {
        matches!(e, RunEvent::TaskState { task_id, state: TaskState::Running, .. } if task_id == "long")
    })
    .await;
    let pids = tokio::task::spawn_blocking(move || read_pids(&pids, 2))
        .await
        .unwrap();
    assert_eq!(
        store.processes(handle.run_id()).unwrap().len(),
        1,
        "the shell is recorded"
    );
    handle.cancel("cancelled by the test");
    let outcome = handle.wait().await.unwrap();
    assert_eq!(outcome.state, RunState::Failed);
    assert_eq!(outcome.note.as_deref(), Some("cancelled by the test"));
    assert_eq!(state(&outcome, "long"), TaskState::Failed);
    assert_eq!(state(&outcome, "nap"), TaskState::Failed);
    assert_eq!(state(&outcome, "downstream"), TaskState::Skipped);
    // Either never started (skipped) or had already finished before the cancel.
    assert!(matches!(
        state(&outcome, "waiting_for_a_slot"),
        TaskState::Skipped | TaskState::Success
    ));
    let long = outcome.tasks.iter().find(|t| t.task_id == "long").unwrap();
    assert!(
        long.error.as_deref().unwrap().contains("cancelled"),
        "{long:?}"
    );
    for pid in pids {
        assert!(process_gone(pid), "process {pid} survived the cancel");
    }
    let run = store.run(&outcome.run_id).unwrap().unwrap();
    assert_eq!(
        (run.state, run.note.as_deref()),
        (RunState::Failed, Some("cancelled by the test"))
    );
    assert!(store.processes(&outcome.run_id).unwrap().is_empty());
}

#[tokio::test]
async fn templates_see_params_and_upstream_outputs() {
    let text = r#"
[dag]
id = "templ"

[dag.params]
n = 7
name = "taxi"

[[task]]
id = "produce"
kind = "command"
shell = "echo 'producing'; echo '::velostream:: {\"output\": {\"rows\": 42, \"meta\": {\"topic\": \"{{ params.name }}\"}}}'"

[[task]]
id = "validate"
kind = "noop"
depends_on = ["produce"]
outputs = { seen = "{{ tasks.produce.output.rows }}", topic = "{{ tasks.produce.output.meta.topic }}", label = "{{ dag.id }}/{{ params.n }}/{{ run_id }}" }

[[task]]
id = "check"
kind = "command"
depends_on = ["validate"]
shell = "test '{{ tasks.produce.output.rows }}' = 42 && test '{{ tasks.validate.output.label }}' = 'templ/9/{{ run_id }}'"

[[task]]
id = "missing"
kind = "noop"
depends_on = ["produce"]
outputs = { x = "{{ tasks.produce.output.nope }}" }
"#;
    let logs = tempfile::tempdir().unwrap();
    let (engine, store) = engine(logs.path());
    let request = RunRequest {
        params: BTreeMap::from([("n".to_owned(), "9".to_owned())]),
        ..Default::default()
    };
    let outcome = engine
        .run(
            dag(text),
            request,
            EventSink::none(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(state(&outcome, "check"), TaskState::Success, "{outcome:#?}");
    let ti = store.task_instances(&outcome.run_id).unwrap();
    let get = |id: &str| ti.iter().find(|t| t.task_id == id).unwrap().clone();
    assert_eq!(get("produce").outputs["rows"], json!(42));
    assert_eq!(get("produce").exit_code, Some(0));
    let v = get("validate").outputs;
    assert_eq!(v["seen"], json!("42"));
    assert_eq!(v["topic"], json!("taxi"));
    assert_eq!(v["label"], json!(format!("templ/9/{}", outcome.run_id)));
    let missing = get("missing");
    assert_eq!(missing.state, TaskState::Failed);
    assert!(missing.error.unwrap().contains("did not set output `nope`"));
    let run = store.run(&outcome.run_id).unwrap().unwrap();
    assert_eq!(run.params["n"], json!(9));
    // The producer's log has its plain lines.
    let tries = store.tries(&outcome.run_id, "produce").unwrap();
    let log = std::fs::read_to_string(tries[0].log_path.as_ref().unwrap()).unwrap();
    assert!(log.starts_with("producing\n"), "{log}");
}

#[tokio::test]
async fn each_try_keeps_its_own_log_and_exit_code() {
    let (outcome, store, _logs) = run(r#"
[dag]
id = "logs"

[[task]]
id = "flaky"
kind = "command"
retries = 1
retry_delay = "10ms"
shell = "echo try {{ try_number }}; echo oops >&2; [ {{ try_number }} -ge 2 ] || exit 7"
"#)
    .await;
    assert_eq!(outcome.state, RunState::Success);
    let tries = store.tries(&outcome.run_id, "flaky").unwrap();
    assert_eq!(tries.len(), 2);
    assert_eq!(tries[0].exit_code, Some(7));
    assert_eq!(tries[1].exit_code, Some(0));
    let first = std::fs::read_to_string(tries[0].log_path.as_ref().unwrap()).unwrap();
    let second = std::fs::read_to_string(tries[1].log_path.as_ref().unwrap()).unwrap();
    assert!(
        first.contains("try 1\n") && first.contains("oops\n") && first.contains("exit code 7"),
        "{first}"
    );
    assert!(
        second.contains("try 2\n") && !second.contains("try 1"),
        "{second}"
    );
}

#[tokio::test]
async fn registered_background_processes_are_stopped_with_their_group() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    let registry = Arc::new(ProcessRegistry::new());
    let ctx = TaskContext::builder("d", "r", "server")
        .processes(registry.clone())
        .kill_grace(Duration::from_millis(200))
        .build();
    let child = ctx
        .spawn(ProcessSpec {
            program: "sh".into(),
            args: vec![
                "-c".into(),
                format!(
                    "(trap '' TERM; exec sleep 300) & echo $! $$ > {}; echo ready; wait",
                    pids.display()
                ),
            ],
            ..Default::default()
        })
        .unwrap();
    registry.register("server", vec![child]).unwrap();
    assert!(
        registry
            .register(
                "server",
                vec![
                    ctx.spawn(ProcessSpec {
                        program: "true".into(),
                        ..Default::default()
                    })
                    .unwrap()
                ]
            )
            .is_err()
    );
    let pids = tokio::task::spawn_blocking(move || read_pids(&pids, 2))
        .await
        .unwrap();
    let stopped = registry.stop_all(Duration::from_millis(200)).await;
    assert_eq!(stopped.len(), 1);
    assert!(registry.task_ids().is_empty());
    for pid in pids {
        assert!(process_gone(pid), "process {pid} survived stop_all");
    }
    assert!(ctx.memory_log().contains(&"ready".to_owned()));
}

#[tokio::test]
async fn command_env_carries_connections_and_identity() {
    let (outcome, store, _logs) = run(
        r#"
[dag]
id = "envs"

[connections.kafka]
brokers = "${NOPE_NOT_SET:-10.0.0.1:9092}"

[[task]]
id = "show"
kind = "command"
program = "sh"
args = ["-c", "echo \"::velostream:: {\\\"output\\\": {\\\"b\\\": \\\"$KAFKA_BROKERS\\\", \\\"t\\\": \\\"$VELOSTREAM_TASK_ID\\\", \\\"x\\\": \\\"$EXTRA\\\"}}\""]
env = { EXTRA = "{{ dag.id }}" }
"#,
    )
    .await;
    assert_eq!(outcome.state, RunState::Success, "{outcome:#?}");
    let ti = store.task_instances(&outcome.run_id).unwrap();
    assert_eq!(ti[0].outputs["b"], json!("10.0.0.1:9092"));
    assert_eq!(ti[0].outputs["t"], json!("show"));
    assert_eq!(ti[0].outputs["x"], json!("envs"));
}

#[tokio::test]
async fn rendered_values_are_checked_with_the_load_time_rules() {
    // A literal `partitions = 0` is refused by the loader; the same value from a param must be
    // refused when the task runs, with the same message, before the broker is asked anything.
    let text = r#"
[dag]
id = "rendered"

[dag.params]
partitions = 3

[[task]]
id = "topic"
kind = "kafka.create_topic"
topic = "t"
partitions = "{{ params.partitions }}"
timeout = "2s"
retries = 2
"#;
    let literal = text.replace("\"{{ params.partitions }}\"", "0");
    let load_error = orchestrator::dag::parse_str(&literal, "literal.toml")
        .unwrap_err()
        .to_string();
    let rule = "task `topic`: `partitions` is 0; a topic needs at least 1 partition";
    assert!(load_error.contains(rule), "{load_error}");

    let logs = tempfile::tempdir().unwrap();
    let (engine, store) = engine(logs.path());
    let request = RunRequest {
        params: BTreeMap::from([("partitions".to_owned(), "0".to_owned())]),
        ..Default::default()
    };
    let outcome = engine
        .run(
            dag(text),
            request,
            EventSink::none(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(state(&outcome, "topic"), TaskState::Failed, "{outcome:#?}");
    let ti = store.task_instances(&outcome.run_id).unwrap();
    let topic = ti.iter().find(|t| t.task_id == "topic").unwrap();
    let error = topic.error.clone().unwrap();
    assert!(error.contains(rule), "{error}");
    // Not retried: the same values would fail the same way.
    assert_eq!(store.tries(&outcome.run_id, "topic").unwrap().len(), 1);
}

#[tokio::test]
async fn secrets_are_masked_in_logs_outputs_and_errors() {
    let text = r#"
[dag]
id = "secrets"

[dag.params]
api_token = "tok-0123456789"

[connections.clickhouse]
password = "hunter2-s3cret"

[[task]]
id = "leak"
kind = "command"
shell = """
echo "pw={{ conn.clickhouse.password }} env=$CLICKHOUSE_PASSWORD token={{ params.api_token }}"
echo "error: login with {{ conn.clickhouse.password }} refused" >&2
exit 1
"""

[[task]]
id = "outputs"
kind = "command"
shell = """echo '::velostream:: {"output": {"pw": "{{ conn.clickhouse.password }}", "nested": ["{{ params.api_token }}"]}}'"""
"#;
    let logs = tempfile::tempdir().unwrap();
    let (engine, store) = engine(logs.path());
    let outcome = engine
        .run(
            dag(text),
            RunRequest::default(),
            EventSink::none(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(state(&outcome, "leak"), TaskState::Failed, "{outcome:#?}");
    let ti = store.task_instances(&outcome.run_id).unwrap();
    let leak = ti.iter().find(|t| t.task_id == "leak").unwrap();
    let tries = store.tries(&outcome.run_id, "leak").unwrap();
    let log = std::fs::read_to_string(tries[0].log_path.as_ref().unwrap()).unwrap();
    let error = leak.error.clone().unwrap();
    let out = ti.iter().find(|t| t.task_id == "outputs").unwrap();
    assert_eq!(out.state, TaskState::Success);
    let outputs = serde_json::Value::Object(out.outputs.clone()).to_string();
    for (what, text) in [("log", &log), ("error", &error), ("outputs", &outputs)] {
        for secret in ["hunter2-s3cret", "tok-0123456789"] {
            assert!(!text.contains(secret), "{secret} in the {what}: {text}");
        }
    }
    assert!(log.contains("pw=*** env=*** token=***"), "{log}");
    assert!(error.contains("error: login with *** refused"), "{error}");
    assert_eq!(out.outputs["pw"], json!("***"));
    assert_eq!(out.outputs["nested"], json!(["***"]));
}
