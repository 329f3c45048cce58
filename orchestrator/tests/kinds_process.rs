//! process.spawn and process.stop with real programs: readiness by log line and by HTTP, a
//! program that crashes before it is ready, one that is never ready, one that ignores SIGTERM, one
//! that died earlier, outputs printed while stopping, and fleets (`replicas`).

use std::sync::Arc;
use std::time::Duration;

use orchestrator::operators::{Operator, OperatorError, TaskContext, TaskKind};
use orchestrator::process::ProcessRegistry;
use serde_json::json;

fn kind(json: serde_json::Value) -> TaskKind {
    serde_json::from_value(json).expect("a valid task kind")
}

/// Contexts of one run sharing its process registry.
struct Run {
    id: String,
    processes: Arc<ProcessRegistry>,
}

impl Run {
    fn new(id: &str) -> Self {
        Self {
            id: id.into(),
            processes: Arc::new(ProcessRegistry::new()),
        }
    }

    fn ctx(&self, task_id: &str) -> TaskContext {
        TaskContext::builder("kinds", self.id.clone(), task_id)
            .processes(self.processes.clone())
            .kill_grace(Duration::from_secs(2))
            .build()
    }
}

fn failure(err: OperatorError) -> String {
    match err {
        OperatorError::Failed(message) => message,
        other => panic!("expected a failure message, got {other:?}"),
    }
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z'
        })
        .unwrap_or(false)
}

async fn until(mut condition: impl FnMut() -> bool) {
    for _ in 0..400 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met within 10s");
}

/// A consumer-like program: ready after a moment, flushes and reports on SIGTERM.
const GRACEFUL: &str = r#"trap 'echo flushing last batch; echo "::velostream:: {\"output\": {\"rows\": 42}}"; exit 0' TERM;
echo starting; sleep 0.2; echo "consumer ready";
while true; do sleep 0.05; done"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_ready_by_log_line_runs_until_stopped_and_its_last_outputs_go_to_the_stop_task() {
    let run = Run::new("graceful");
    let spawn = run.ctx("consumer");
    kind(json!({"process.spawn": {
        "program": "sh", "args": ["-c", GRACEFUL],
        "ready": {"log_line": "consumer ready", "timeout": "10s"},
    }}))
    .execute(&spawn)
    .await
    .unwrap();
    let pid = spawn.outputs()["pid"].as_u64().unwrap();
    assert!(
        alive(pid),
        "the program keeps running after the task succeeded"
    );
    assert!(run.processes.contains("consumer"));
    assert!(spawn.memory_log().iter().any(|l| l == "starting"));

    let stop = run.ctx("stop");
    kind(json!({"process.stop": {"task": "consumer", "grace": "10s"}}))
        .execute(&stop)
        .await
        .unwrap();
    assert!(!alive(pid));
    assert!(!run.processes.contains("consumer"));
    let out = stop.outputs();
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["killed"], false);
    assert_eq!(
        out["rows"], 42,
        "outputs printed while stopping belong to the stop task"
    );
    assert!(
        stop.memory_log().iter().any(|l| l == "flushing last batch"),
        "{:?}",
        stop.memory_log()
    );

    let err = kind(json!({"process.stop": {"task": "consumer"}}))
        .execute(&run.ctx("stop-again"))
        .await
        .unwrap_err();
    assert!(failure(err).contains("has no running process in this run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_ready_by_http_health_check() {
    let run = Run::new("http");
    let port = velostream_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("health"), "ok").unwrap();
    let spawn = run.ctx("server");
    kind(json!({"process.spawn": {
        "program": "python3",
        "args": ["-u", "-m", "http.server", port.to_string(), "--bind", "127.0.0.1", "--directory", dir.path()],
        "ready": {"http": format!("http://127.0.0.1:{port}/health"), "timeout": "20s", "interval": "50ms"},
    }}))
    .execute(&spawn)
    .await
    .unwrap();
    assert!(
        spawn
            .memory_log()
            .iter()
            .any(|l| l.contains("is ready after"))
    );
    kind(json!({"http.check": {"url": format!("http://127.0.0.1:{port}/health"), "body_contains": "ok"}}))
        .execute(&run.ctx("check"))
        .await
        .unwrap();

    // python's http.server has no SIGTERM handler: dying by that SIGTERM is a clean stop.
    let stop = run.ctx("stop");
    kind(json!({"process.stop": {"task": "server"}}))
        .execute(&stop)
        .await
        .unwrap();
    assert_eq!(stop.outputs()["exit_code"], 128 + 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_crashes_before_it_is_ready_fails_the_task_with_its_output() {
    let run = Run::new("crash");
    let ctx = run.ctx("consumer");
    let err = kind(json!({"process.spawn": {
        "program": "sh", "args": ["-c", "echo 'loading config'; echo 'error: KAFKA_BROKERS is empty' >&2; exit 3"],
        "ready": {"log_line": "consumer ready", "timeout": "30s"},
    }}))
    .execute(&ctx)
    .await
    .unwrap_err();
    let message = failure(err);
    assert!(
        message.contains("exited with exit code 3 before it was ready"),
        "{message}"
    );
    assert!(
        message.contains("error: KAFKA_BROKERS is empty"),
        "{message}"
    );
    assert!(!run.processes.contains("consumer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_never_ready_is_stopped_at_the_timeout() {
    let run = Run::new("slow");
    let ctx = run.ctx("consumer");
    let port = velostream_testkit::free_port();
    let err = kind(json!({"process.spawn": {
        "program": "sh", "args": ["-c", "echo waiting for godot; exec sleep 1000"],
        "ready": {"http": format!("http://127.0.0.1:{port}/health"), "timeout": "1s", "interval": "100ms"},
    }}))
    .execute(&ctx)
    .await
    .unwrap_err();
    let message = failure(err);
    assert!(message.contains("was not ready within 1s"), "{message}");
    assert!(message.contains("no response"), "{message}");
    assert!(message.contains("waiting for godot"), "{message}");
    // The program's own output may be logged before the line that names its pid.
    let log = ctx.memory_log();
    let started = log.iter().find(|l| l.contains("(pid ")).unwrap();
    let pid: u64 = started
        .rsplit("pid ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    assert!(!alive(pid), "the program was stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_ignores_sigterm_is_killed_and_the_stop_fails() {
    let run = Run::new("stubborn");
    let spawn = run.ctx("consumer");
    kind(json!({"process.spawn": {
        "program": "sh", "args": ["-c", "trap '' TERM; echo ready; while true; do sleep 0.05; done"],
        "ready": {"log_line": "ready"},
    }}))
    .execute(&spawn)
    .await
    .unwrap();
    let pid = spawn.outputs()["pid"].as_u64().unwrap();
    let stop = run.ctx("stop");
    let err = kind(json!({"process.stop": {"task": "consumer", "grace": "1s"}}))
        .execute(&stop)
        .await
        .unwrap_err();
    let message = failure(err);
    assert!(
        message.contains("ignored SIGTERM for 1s and was killed with SIGKILL"),
        "{message}"
    );
    assert_eq!(stop.outputs()["killed"], true);
    assert_eq!(stop.outputs()["exit_code"], 128 + 9);
    assert!(!alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_died_earlier_or_exits_non_zero_fails_the_stop() {
    let run = Run::new("dying");
    let spawn = run.ctx("consumer");
    kind(json!({"process.spawn": {
        "program": "sh", "args": ["-c", "echo ready; sleep 0.2; exit 7"],
        "ready": {"log_line": "ready"},
    }}))
    .execute(&spawn)
    .await
    .unwrap();
    let pid = spawn.outputs()["pid"].as_u64().unwrap();
    until(|| !alive(pid)).await;
    let err = kind(json!({"process.stop": {"task": "consumer"}}))
        .execute(&run.ctx("stop"))
        .await
        .unwrap_err();
    let message = failure(err);
    assert!(
        message.contains("had already died before process.stop: exit code 7"),
        "{message}"
    );

    let spawn = run.ctx("consumer2");
    kind(json!({"process.spawn": {
        "program": "sh", "args": ["-c", "trap 'exit 4' TERM; echo ready; while true; do sleep 0.05; done"],
        "ready": {"log_line": "ready"},
    }}))
    .execute(&spawn)
    .await
    .unwrap();
    let err = kind(json!({"process.stop": {"task": "consumer2"}}))
        .execute(&run.ctx("stop2"))
        .await
        .unwrap_err();
    assert!(failure(err).contains("stopped with exit code 4 after SIGTERM"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_without_readiness_check_is_ready_once_started_and_dies_with_the_run() {
    let run = Run::new("plain");
    let spawn = run.ctx("sleeper");
    kind(json!({"process.spawn": {"program": "sleep", "args": ["1000"]}}))
        .execute(&spawn)
        .await
        .unwrap();
    let pid = spawn.outputs()["pid"].as_u64().unwrap();
    assert!(alive(pid));
    // What the engine does when a run ends with processes still registered.
    let stopped = run.processes.stop_all(Duration::from_secs(2)).await;
    assert_eq!(stopped.len(), 1);
    assert!(!alive(pid));

    let err = kind(json!({"process.spawn": {"program": "no-such-program-velostream"}}))
        .execute(&run.ctx("missing"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_spawn_while_it_starts_stops_the_program() {
    let run = Run::new("cancel");
    let ctx = run.ctx("consumer");
    let task = kind(json!({"process.spawn": {
        "program": "sh", "args": ["-c", "echo booting; exec sleep 1000"],
        "ready": {"log_line": "never printed", "timeout": "10m"},
    }}));
    let canceller = async {
        until(|| ctx.memory_log().iter().any(|l| l == "booting")).await;
        ctx.cancel_token().cancel();
    };
    let (result, ()) = tokio::join!(task.execute(&ctx), canceller);
    assert!(
        matches!(result, Err(OperatorError::Cancelled)),
        "{result:?}"
    );
    let log = ctx.memory_log();
    let started = log.iter().find(|l| l.contains("(pid ")).unwrap();
    let pid: u64 = started
        .rsplit("pid ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    assert!(!alive(pid));
    assert!(!run.processes.contains("consumer"));
}

/// A fleet member: `$1` is its replica number; ready once it says so, reports rows on SIGTERM.
const REPLICA: &str = r#"trap 'echo "::velostream:: {\"output\": {\"rows\": $((($1 + 1) * 10)), \"name\": \"r$1\"}}"; exit 0' TERM;
echo "replica $1 ready"; while true; do sleep 0.05; done"#;

/// The pids of a fleet's programs, from the spawn task's `Started ... replica N (pid P)` lines.
fn started_pids(ctx: &TaskContext) -> Vec<u64> {
    ctx.memory_log()
        .iter()
        .filter_map(|l| l.strip_prefix("Started "))
        .filter_map(|l| l.rsplit_once("(pid ")?.1.strip_suffix(')')?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_start_with_their_number_are_each_ready_and_all_stop_with_summed_outputs() {
    let run = Run::new("fleet");
    let spawn = run.ctx("consumers");
    kind(json!({"process.spawn": {
        "program": "sh", "args": ["-c", REPLICA, "sh", "{{ replica }}"],
        "env": {"NAME": "consumer-{{ replica }}"},
        "ready": {"log_line": "replica {{ replica }} ready", "timeout": "10s"},
        "replicas": "3",
    }}))
    .execute(&spawn)
    .await
    .unwrap();
    let out = spawn.outputs();
    let pids: Vec<u64> = out["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 3);
    assert_eq!(out["pid"].as_u64(), Some(pids[0]));
    assert_eq!(out["replicas"], 3);
    assert!(pids.iter().all(|&p| alive(p)));
    for r in 0..3 {
        assert!(
            spawn.memory_log().contains(&format!("replica {r} ready")),
            "{:?}",
            spawn.memory_log()
        );
    }
    assert!(
        spawn
            .memory_log()
            .iter()
            .any(|l| l.starts_with("All 3 replicas are ready after")),
        "{:?}",
        spawn.memory_log()
    );

    let stop = run.ctx("stop");
    kind(json!({"process.stop": {"task": "consumers", "grace": "10s"}}))
        .execute(&stop)
        .await
        .unwrap();
    assert!(pids.iter().all(|&p| !alive(p)));
    assert!(!run.processes.contains("consumers"));
    let out = stop.outputs();
    assert_eq!(out["exit_codes"], json!([0, 0, 0]));
    assert_eq!(out["rows"], 60, "numbers are summed over the replicas");
    let by_replica = out["by_replica"].as_array().unwrap();
    assert_eq!(by_replica.len(), 3);
    for (r, o) in by_replica.iter().enumerate() {
        assert_eq!(o["name"], format!("r{r}"));
        assert_eq!(o["rows"], (r as u64 + 1) * 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_dies_before_it_is_ready_fails_the_spawn_and_stops_the_others() {
    let run = Run::new("fleet-crash");
    let spawn = run.ctx("consumers");
    let err = kind(json!({"process.spawn": {
        "program": "sh",
        "args": ["-c", "if [ $1 = 1 ]; then echo broken config; exit 3; fi; echo booting; exec sleep 1000", "sh", "{{ replica }}"],
        "ready": {"log_line": "never printed", "timeout": "20s"},
        "replicas": 3,
    }}))
    .execute(&spawn)
    .await
    .unwrap_err();
    let message = failure(err);
    assert!(
        message.contains("replica 1 (pid") && message.contains("exited with exit code 3"),
        "{message}"
    );
    assert!(message.contains("broken config"), "{message}");
    let pids = started_pids(&spawn);
    assert_eq!(pids.len(), 3, "{:?}", spawn.memory_log());
    assert!(
        pids.iter().all(|&p| !alive(p)),
        "no replica outlives a failed start"
    );
    assert!(!run.processes.contains("consumers"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_left_running_dies_with_the_run_and_a_bad_fleet_is_refused() {
    let run = Run::new("fleet-end");
    let spawn = run.ctx("sleepers");
    kind(json!({"process.spawn": {"program": "sleep", "args": ["1000"], "replicas": 2}}))
        .execute(&spawn)
        .await
        .unwrap();
    let pids = started_pids(&spawn);
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| alive(p)));
    // What the engine does when a run ends with processes still registered.
    let stopped = run.processes.stop_all(Duration::from_secs(2)).await;
    assert_eq!(stopped.len(), 2);
    assert!(pids.iter().all(|&p| !alive(p)));

    let TaskKind::ProcessSpawn(spec) = kind(json!({"process.spawn": {
        "program": "c", "replicas": 3, "ready": {"http": "http://127.0.0.1:9464/health"},
    }})) else {
        unreachable!()
    };
    let problems = spec.problems();
    assert!(
        problems[0]
            .message
            .contains("is the same for each of the 3 replicas"),
        "{problems:?}"
    );
    let TaskKind::ProcessSpawn(spec) = kind(json!({"process.spawn": {
        "program": "c", "replicas": 0,
    }})) else {
        unreachable!()
    };
    assert!(spec.problems()[0].message.contains("`replicas` is 0"));
}
