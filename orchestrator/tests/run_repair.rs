//! Repairing runs with the `orchestrator` binary: a failed run cleared (dry run first) and driven
//! to success with the DAG version it ran, its kept outputs read by templates, its
//! `process.spawn`/`process.stop` pair run again so no background process is left or stopped by
//! a stranger; a task marked by hand; run notes; and `orchestrator resume` of a run whose
//! orchestrator was killed with SIGKILL.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{process_gone, read_pids};
use orchestrator::store::{
    RepairKind, RunFilter, RunRecord, RunState, SqliteStore, Store, TaskState, rules,
};

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");

fn cli(state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--no-progress")
        .env("VELOSTREAM_STATE", state)
        .env_remove("RUST_LOG")
        .output()
        .expect("running the orchestrator binary")
}

fn plain(state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("VELOSTREAM_STATE", state)
        .env_remove("RUST_LOG")
        .output()
        .expect("running the orchestrator binary")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn only_run(state: &Path) -> RunRecord {
    let store = SqliteStore::open(state).unwrap();
    let runs = store.runs(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn instance(state: &Path, run_id: &str, task: &str) -> orchestrator::store::TaskInstance {
    SqliteStore::open(state)
        .unwrap()
        .task_instances(run_id)
        .unwrap()
        .into_iter()
        .find(|t| t.task_id == task)
        .unwrap()
}

/// A DAG whose `check` fails until `<dir>/fixed` exists, between a background server and the
/// task that stops it; `report` reads `setup`'s output.
fn pipeline(dir: &Path, report: &str) -> PathBuf {
    let d = dir.display();
    let text = format!(
        r#"
[dag]
id = "repair"

[[task]]
id = "setup"
kind = "command"
shell = "echo '::velostream:: {{\"output\": {{\"token\": \"'$$'\"}}}}'"

[[task]]
id = "server"
kind = "process.spawn"
depends_on = ["setup"]
program = "sh"
args = ["-c", "echo $$ >> {d}/server.pids; echo ready; exec sleep 300"]
ready = {{ log_line = "ready", timeout = "10s" }}

[[task]]
id = "check"
kind = "command"
depends_on = ["server"]
shell = "test -f {d}/fixed || {{ echo 'not fixed yet' >&2; exit 1; }}"

[[task]]
id = "stop"
kind = "process.stop"
depends_on = ["check"]
trigger_rule = "all_done"
task = "server"
grace = "5s"

[[task]]
id = "report"
kind = "command"
depends_on = ["check", "stop"]
shell = "{report}"
"#
    );
    let path = dir.join("repair.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const REPORT: &str =
    r#"echo '::velostream:: {\"output\": {\"token\": \"{{ tasks.setup.output.token }}\"}}'"#;

#[test]
fn a_failed_run_is_cleared_and_succeeds_with_its_own_dag_version() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let dag = pipeline(tmp.path(), REPORT);

    let out = cli(&state, &["run", dag.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = only_run(&state);
    let run_id = run.run_id.as_str();
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(
        instance(&state, run_id, "report").state,
        TaskState::UpstreamFailed
    );
    let first_server = read_pids(&tmp.path().join("server.pids"), 1)[0];
    assert!(
        process_gone(first_server),
        "the run left its server running"
    );
    let token = instance(&state, run_id, "setup").outputs["token"].clone();

    // The DAG file changes after the run: the repair runs the version the run ran.
    let hash = run
        .dag_hash
        .clone()
        .expect("the run stores its DAG version");
    pipeline(tmp.path(), "exit 3");

    let out = cli(&state, &["clear", run_id, "check", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    for row in [
        "server  success",
        "check   failed",
        "stop    success",
        "report  upstream_failed",
    ] {
        assert!(listed.contains(row), "{row:?} missing:\n{listed}");
    }
    assert!(listed.contains("process.spawn/stop pair"), "{listed}");
    assert!(!listed.contains("setup"), "{listed}");
    assert_eq!(
        only_run(&state).state,
        RunState::Failed,
        "a dry run changes nothing"
    );

    std::fs::write(tmp.path().join("fixed"), "").unwrap();
    let out = cli(&state, &["clear", run_id, "check"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("Run {run_id} success")),
        "{stdout}"
    );

    let run = only_run(&state);
    assert_eq!(
        (run.state, run.dag_hash.as_deref()),
        (RunState::Success, Some(hash.as_str()))
    );
    // Kept: setup ran once, and report read its kept output.
    let setup = instance(&state, run_id, "setup");
    assert_eq!(setup.try_number, 1);
    assert_eq!(instance(&state, run_id, "report").outputs["token"], token);
    // New tries: check's second, the server started again and stopped by the stop task.
    assert_eq!(instance(&state, run_id, "check").try_number, 2);
    assert_eq!(instance(&state, run_id, "stop").try_number, 2);
    let servers = read_pids(&tmp.path().join("server.pids"), 2);
    assert_ne!(servers[0], servers[1]);
    assert!(
        process_gone(servers[1]),
        "the repaired run left its server running"
    );
    let store = SqliteStore::open(&state).unwrap();
    let stop_tries = store.tries(run_id, "stop").unwrap();
    assert_eq!(stop_tries[1].state, TaskState::Success, "{stop_tries:?}");
    assert_eq!(
        store.tries(run_id, "check").unwrap()[0].state,
        TaskState::Failed,
        "the first try is kept"
    );
    // check (below the kept setup... and the rerun server) waited for the server to be up again.
    let server_again = &store.tries(run_id, "server").unwrap()[1];
    let check_again = &store.tries(run_id, "check").unwrap()[1];
    assert!(
        check_again.started_at >= server_again.ended_at,
        "check started before its server was ready: {check_again:?} {server_again:?}"
    );
    let actions = store.run_actions(run_id).unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].kind, RepairKind::Clear);
    assert_eq!(actions[0].tasks, ["server", "check", "stop", "report"]);
    assert_eq!(
        rules::dag_hash(&store.dag_version(&hash).unwrap().unwrap().text),
        hash
    );

    // A clear of a running or unknown run, or of an unknown task, says why.
    let out = cli(&state, &["clear", run_id, "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no task \"nope\""), "{}", text(&out));
    let out = cli(&state, &["clear", run_id, "--failed"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("no task of the run failed"),
        "{}",
        text(&out)
    );

    // Mark by hand: the leaf failed with a reason, the run is failed again.
    let out = cli(
        &state,
        &[
            "mark",
            run_id,
            "report",
            "failed",
            "--reason",
            "numbers look wrong",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = instance(&state, run_id, "report");
    assert_eq!(
        (report.state, report.error.as_deref()),
        (
            TaskState::Failed,
            Some("marked failed by hand: numbers look wrong")
        )
    );
    assert_eq!(only_run(&state).state, RunState::Failed);
    let out = cli(
        &state,
        &[
            "mark",
            run_id,
            "report",
            "success",
            "--reason",
            "checked by hand",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(only_run(&state).state, RunState::Success);

    // Notes.
    let out = plain(
        &state,
        &["notes", run_id, "--set", "03:00 failure: bad upstream file"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = plain(&state, &["notes", run_id]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "03:00 failure: bad upstream file"
    );
    let out = plain(&state, &["runs", "--run", run_id]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&hash[..12]), "{shown}");
    assert!(shown.contains("03:00 failure"), "{shown}");
    assert!(shown.contains("mark"), "{shown}");
}

#[test]
fn a_killed_run_is_resumed_with_its_interrupted_try_retried_and_its_server_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let d = tmp.path().display();
    let dag = tmp.path().join("resume.toml");
    std::fs::write(
        &dag,
        format!(
            r#"
[dag]
id = "resume"

[[task]]
id = "server"
kind = "process.spawn"
program = "sh"
args = ["-c", "echo $$ >> {d}/server.pids; echo ready; exec sleep 300"]
ready = {{ log_line = "ready", timeout = "10s" }}

[[task]]
id = "work"
kind = "command"
depends_on = ["server"]
retries = 1
retry_delay = "100ms"
shell = "if [ -f {d}/worked ]; then exit 0; fi; touch {d}/worked; echo $$ > {d}/work.pid; exec sleep 300"

[[task]]
id = "stop"
kind = "process.stop"
depends_on = ["work"]
task = "server"
"#
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", dag.to_str().unwrap(), "--no-progress"])
        .env("VELOSTREAM_STATE", &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let work = read_pids(&tmp.path().join("work.pid"), 1)[0];
    let first_server = read_pids(&tmp.path().join("server.pids"), 1)[0];
    child.kill().unwrap(); // SIGKILL: the run is left `running`, its owner dead.
    child.wait().unwrap();
    let run = only_run(&state);
    assert_eq!(run.state, RunState::Running);

    let out = cli(&state, &["resume", &run.run_id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(process_gone(work) && process_gone(first_server));
    let run = only_run(&state);
    assert_eq!(run.state, RunState::Success);
    let store = SqliteStore::open(&state).unwrap();
    let tries = store.tries(&run.run_id, "work").unwrap();
    assert_eq!(
        tries.iter().map(|t| t.state).collect::<Vec<_>>(),
        [TaskState::Failed, TaskState::Success]
    );
    assert_eq!(tries[0].error.as_deref(), Some(rules::INTERRUPTED));
    // The server the run still needed was started again, and stopped by its stop task.
    let servers = read_pids(&tmp.path().join("server.pids"), 2);
    assert!(process_gone(servers[1]));
    assert_eq!(store.tries(&run.run_id, "server").unwrap().len(), 2);
    assert_eq!(
        store.run_actions(&run.run_id).unwrap()[0].kind,
        RepairKind::Resume
    );

    // An ended run is not resumed.
    let out = cli(&state, &["resume", &run.run_id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("`orchestrator clear` reruns tasks"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_cleared_task_below_a_kept_one_waits_for_its_restarted_server() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let d = tmp.path().display();
    let dag = tmp.path().join("gap.toml");
    std::fs::write(
        &dag,
        format!(
            r#"
[dag]
id = "gap"

[[task]]
id = "server"
kind = "process.spawn"
program = "sh"
args = ["-c", "sleep 0.3; echo ready; exec sleep 300"]
ready = {{ log_line = "ready", timeout = "10s" }}

[[task]]
id = "load"
kind = "noop"
depends_on = ["server"]

[[task]]
id = "check"
kind = "command"
depends_on = ["load"]
shell = "test -f {d}/fixed"

[[task]]
id = "stop"
kind = "process.stop"
depends_on = ["check"]
trigger_rule = "all_done"
task = "server"

[[task]]
id = "report"
kind = "noop"
depends_on = ["check", "stop"]
"#
        ),
    )
    .unwrap();
    let out = cli(&state, &["run", dag.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    std::fs::write(tmp.path().join("fixed"), "").unwrap();
    let run_id = only_run(&state).run_id;
    let out = cli(&state, &["clear", &run_id, "check"]);
    assert!(out.status.success(), "{}", text(&out));
    let store = SqliteStore::open(&state).unwrap();
    // load was kept, but check waited until the server it runs beside was ready again.
    assert_eq!(store.tries(&run_id, "load").unwrap().len(), 1);
    let server = &store.tries(&run_id, "server").unwrap()[1];
    let check = &store.tries(&run_id, "check").unwrap()[1];
    assert!(
        check.started_at >= server.ended_at,
        "check started before the server was ready: {check:?} {server:?}"
    );
}
