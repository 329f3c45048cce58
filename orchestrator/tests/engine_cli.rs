//! The `orchestrator` binary end to end: validate, graph, run (exit codes, summary), runs, logs,
//! SIGTERM cancelling a run, two processes sharing one state file, and `kill -9` mid-run: the run
//! stays interrupted (resumable) until the next run of its DAG closes it and kills what it left.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{process_gone, read_pids};
use orchestrator::store::{RunFilter, RunState, SqliteStore, Store, TaskState};

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cli(state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("VELOSTREAM_STATE", state)
        .env_remove("RUST_LOG")
        .output()
        .expect("running the orchestrator binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn validate_reports_problems_with_positions_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let good = repo().join("dags/examples/hello.toml");
    let out = cli(&state, &["validate", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (DAG hello, 5 tasks)"));

    let bad = write(
        tmp.path(),
        "bad.toml",
        "[dag]\nid = \"x\"\n[[task]]\nid = \"a\"\nkind = \"noop\"\ndepends_on = [\"b\"]\n[[task]]\nid = \"b\"\nkind = \"noop\"\ndepends_on = [\"a\"]\n",
    );
    let out = cli(
        &state,
        &["validate", good.to_str().unwrap(), bad.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:4:6: dependency cycle among tasks a, b",
            bad.display()
        )),
        "{err}"
    );
    assert!(err.contains("1 of 2 file(s) invalid"), "{err}");
}

#[test]
fn validate_accepts_folders_recursively_as_serve_does() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let dags = tmp.path().join("dags");
    std::fs::create_dir_all(dags.join("nested/deeper")).unwrap();
    let dag = |id: &str| format!("[dag]\nid = \"{id}\"\n[[task]]\nid = \"t\"\nkind = \"noop\"\n");
    write(&dags, "a.toml", &dag("a"));
    write(&dags.join("nested/deeper"), "b.toml", &dag("b"));
    write(&dags, "notes.txt", "not a DAG");
    let out = cli(&state, &["validate", dags.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("a.toml: ok (DAG a, 1 tasks)"), "{stdout}");
    assert!(stdout.contains("b.toml: ok (DAG b, 1 tasks)"), "{stdout}");

    // A bad file deep down and a duplicate id fail the folder, each named.
    let bad = write(&dags.join("nested"), "bad.toml", "[dag]\nid = 3\n");
    write(&dags.join("nested"), "dup.toml", &dag("a"));
    let out = cli(&state, &["validate", dags.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:2:", bad.display())), "{err}");
    assert!(err.contains("DAG id \"a\" is already defined in"), "{err}");
    assert!(err.contains("2 of 4 file(s) invalid"), "{err}");

    // The repository's own folder of DAGs validates as one.
    let out = cli(&state, &["validate", repo().join("dags").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn graph_prints_text_and_dot() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = repo().join("dags/examples/hello.toml");
    let out = cli(
        &tmp.path().join("s.db"),
        &["graph", hello.to_str().unwrap()],
    );
    assert!(out.status.success());
    let s = text(&out.stdout);
    assert!(
        s.contains("check_total  command  <- count_a, count_b"),
        "{s}"
    );
    assert!(
        s.contains("cleanup      command  <- check_total  [all_done]"),
        "{s}"
    );
    assert!(
        s.contains("digraph \"hello\" {") && s.contains("\"count_a\" -> \"check_total\";"),
        "{s}"
    );
    let dot = cli(
        &tmp.path().join("s.db"),
        &["graph", "--format", "dot", hello.to_str().unwrap()],
    );
    assert!(text(&dot.stdout).starts_with("digraph"));
}

#[test]
fn the_example_dag_runs_and_its_history_and_logs_are_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state/state.db");
    let hello = repo().join("dags/examples/hello.toml");
    let out = cli(
        &state,
        &[
            "run",
            hello.to_str().unwrap(),
            "--param",
            "rows=80",
            "--no-progress",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("check_total  up_for_retry"), "{stdout}");
    assert!(
        stdout.contains("TASK         STATE    TRIES  DURATION"),
        "{stdout}"
    );
    assert!(stdout.contains("check_total  success  2"), "{stdout}");

    let store = SqliteStore::open(&state).unwrap();
    let runs = store.runs(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 1);
    let run_id = runs[0].run_id.clone();
    assert_eq!(runs[0].state, RunState::Success);
    let tis = store.task_instances(&run_id).unwrap();
    let total = tis.iter().find(|t| t.task_id == "check_total").unwrap();
    assert_eq!(total.outputs["total"], serde_json::json!(120));

    let out = cli(&state, &["runs", "hello"]);
    assert!(text(&out.stdout).contains(&run_id));
    let out = cli(&state, &["runs", "--run", &run_id]);
    assert!(
        text(&out.stdout).contains("{\"exit_code\":0,\"total\":120}"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&state, &["logs", &run_id, "check_total", "--try", "1"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("first try fails on purpose"));
    let out = cli(&state, &["logs", &run_id, "check_total"]);
    assert!(text(&out.stdout).contains("total rows: 120"));
    let out = cli(&state, &["logs", &run_id, "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("has no task nope"));
}

#[test]
fn a_failed_run_exits_1_and_a_bad_param_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let dag = write(
        tmp.path(),
        "fail.toml",
        "[dag]\nid = \"fail\"\n[dag.params]\nn = 1\n[[task]]\nid = \"a\"\nkind = \"command\"\nshell = \"exit 4\"\n",
    );
    let out = cli(&state, &["run", dag.to_str().unwrap(), "--no-progress"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("a: the shell command failed with exit code 4"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&state, &["run", dag.to_str().unwrap(), "-p", "n=lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("param \"n\" expects an integer"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_failed_run_says_why_in_the_summary_and_in_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let dag = write(
        tmp.path(),
        "why.toml",
        "[dag]\nid = \"why\"\n[[task]]\nid = \"load\"\nkind = \"command\"\nshell = \"echo starting >&2; echo 'error: trips.parquet is empty (0 bytes)' >&2; exit 1\"\n",
    );
    let out = cli(&state, &["run", dag.to_str().unwrap(), "--no-progress"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("load: the shell command failed with exit code 1; last error output: error: trips.parquet is empty (0 bytes)"),
        "{stdout}"
    );
    let store = SqliteStore::open(&state).unwrap();
    let run_id = store.runs(&RunFilter::default()).unwrap()[0].run_id.clone();
    let out = cli(&state, &["runs", "--run", &run_id]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("trips.parquet is empty (0 bytes)"),
        "{stdout}"
    );
}

/// A DAG whose task starts a grandchild that ignores SIGTERM and writes both pids to `pids`.
fn tree_dag(dir: &Path, id: &str, extra: &str) -> (PathBuf, PathBuf) {
    let pids = dir.join(format!("{id}.pids"));
    let dag = write(
        dir,
        &format!("{id}.toml"),
        &format!(
            "[dag]\nid = \"{id}\"\n{extra}\n[[task]]\nid = \"tree\"\nkind = \"command\"\nshell = \"(trap '' TERM; exec sleep 300) & echo $! $$ > {}; wait\"\n\n[[task]]\nid = \"after\"\nkind = \"noop\"\ndepends_on = [\"tree\"]\n",
            pids.display()
        ),
    );
    (dag, pids)
}

fn spawn_run(state: &Path, dag: &Path) -> std::process::Child {
    Command::new(BIN)
        .args([
            "run",
            dag.to_str().unwrap(),
            "--no-progress",
            "--kill-grace",
            "300ms",
        ])
        .env("VELOSTREAM_STATE", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn sigterm_cancels_the_run_and_kills_its_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let (dag, pids) = tree_dag(tmp.path(), "term", "");
    let child = spawn_run(&state, &dag);
    let pids = read_pids(&pids, 2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("SIGTERM: cancelling the run"));
    for pid in pids {
        assert!(
            process_gone(pid),
            "process {pid} survived SIGTERM of the orchestrator"
        );
    }
    let store = SqliteStore::open(&state).unwrap();
    let run = &store.runs(&RunFilter::default()).unwrap()[0];
    assert_eq!(
        (run.state, run.note.as_deref()),
        (RunState::Failed, Some("cancelled by SIGTERM"))
    );
    let tis = store.task_instances(&run.run_id).unwrap();
    assert_eq!(tis[0].state, TaskState::Failed);
    assert_eq!(tis[1].state, TaskState::Skipped);
}

#[test]
fn kill_9_mid_run_leaves_it_interrupted_until_a_resume_or_the_next_run_of_its_dag() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let (dag, pids) = tree_dag(tmp.path(), "crash", "");
    let mut child = spawn_run(&state, &dag);
    let pids = read_pids(&pids, 2);
    let (grandchild, shell) = (pids[0], pids[1]);
    child.kill().unwrap(); // SIGKILL: no cleanup code runs.
    child.wait().unwrap();
    // The shell dies with its parent (PR_SET_PDEATHSIG); the grandchild is still there until a
    // new orchestrator takes the run over.
    assert!(
        process_gone(shell),
        "the task's shell outlived the orchestrator"
    );
    assert!(
        std::fs::metadata(format!("/proc/{grandchild}")).is_ok(),
        "grandchild gone too early"
    );
    let run_id = {
        let store = SqliteStore::open(&state).unwrap();
        let run = &store.runs(&RunFilter::default()).unwrap()[0];
        assert_eq!(run.state, RunState::Running);
        assert_eq!(store.processes(&run.run_id).unwrap().len(), 1);
        run.run_id.clone()
    };

    // Listing changes nothing: the run shows as interrupted, resumable.
    let out = cli(&state, &["runs"]);
    assert!(out.status.success());
    let listed = text(&out.stdout);
    assert!(listed.contains("interrupted"), "{listed}");
    assert!(listed.contains("orchestrator resume"), "{listed}");
    assert_eq!(
        SqliteStore::open(&state)
            .unwrap()
            .run(&run_id)
            .unwrap()
            .unwrap()
            .state,
        RunState::Running
    );

    // The next `orchestrator run` of the same DAG closes it (so it does not hold the DAG's
    // max_active_runs) and kills what it left, before it starts its own run (refused here by a
    // bad param, so that the tree task does not run again).
    let out = cli(
        &state,
        &[
            "run",
            dag.to_str().unwrap(),
            "--no-progress",
            "--param",
            "nope=1",
        ],
    );
    assert!(
        text(&out.stderr).contains("was interrupted"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        process_gone(grandchild),
        "the grandchild survived the restart"
    );

    let store = SqliteStore::open(&state).unwrap();
    let run = store.run(&run_id).unwrap().unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert!(run.note.as_deref().unwrap().starts_with("interrupted"));
    assert!(run.note.as_deref().unwrap().contains("orchestrator resume"));
    let tis = store.task_instances(&run.run_id).unwrap();
    assert_eq!(
        (tis[0].state, tis[1].state),
        (TaskState::Failed, TaskState::Skipped)
    );
    let tries = store.tries(&run.run_id, "tree").unwrap();
    assert_eq!(tries[0].state, TaskState::Failed);
    assert!(store.processes(&run.run_id).unwrap().is_empty());
    let check: String = rusqlite::Connection::open(&state)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // A second start finds nothing more to recover.
    assert!(!text(&cli(&state, &["runs"]).stderr).contains("interrupted"));
    // A resume takes it back: the interrupted try was its last (no retries), so the run ends
    // failed again, its downstream task decided again.
    let out = cli(&state, &["resume", &run_id, "--no-progress"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let tis = store.task_instances(&run_id).unwrap();
    assert_eq!(
        (tis[0].state, tis[1].state),
        (TaskState::Failed, TaskState::UpstreamFailed)
    );
}

#[test]
fn two_orchestrators_share_one_state_file() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let wide = |id: &str| {
        let mut body = format!("[dag]\nid = \"{id}\"\nmax_active_tasks = 8\n");
        for i in 0..60 {
            body.push_str(&format!(
                "[[task]]\nid = \"t{i}\"\nkind = \"command\"\nshell = \"echo {i}\"\n"
            ));
        }
        write(tmp.path(), &format!("{id}.toml"), &body)
    };
    let (a, b) = (wide("one"), wide("two"));
    let pa = spawn_run(&state, &a);
    let pb = spawn_run(&state, &b);
    let (oa, ob) = (
        pa.wait_with_output().unwrap(),
        pb.wait_with_output().unwrap(),
    );
    assert!(oa.status.success(), "{}", text(&oa.stderr));
    assert!(ob.status.success(), "{}", text(&ob.stderr));
    let store = SqliteStore::open(&state).unwrap();
    let runs = store.runs(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert_eq!(run.state, RunState::Success);
        let tis = store.task_instances(&run.run_id).unwrap();
        assert_eq!(tis.len(), 60);
        assert!(
            tis.iter()
                .all(|t| t.state == TaskState::Success && t.try_number == 1)
        );
    }
}

#[test]
fn max_active_runs_refuses_a_second_run() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let (dag, pids) = tree_dag(tmp.path(), "single", "max_active_runs = 1");
    let first = spawn_run(&state, &dag);
    let _ = read_pids(&pids, 2);
    let out = cli(&state, &["run", dag.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already has 1 active run(s) (max_active_runs = 1)"),
        "{}",
        text(&out.stderr)
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// The DAGs in docs/dag-format.md: the complete example is `dags/examples/hello.toml` verbatim
/// (run above), the broken one fails exactly as the page shows, and every other one loads.
#[test]
fn the_documented_examples_are_true() {
    let doc = std::fs::read_to_string(repo().join("docs/dag-format.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    let hello = std::fs::read_to_string(repo().join("dags/examples/hello.toml")).unwrap();
    assert!(
        blocks.contains(&hello.as_str()),
        "the page's complete example differs from hello.toml"
    );
    let shown: Vec<&str> = doc
        .split("$ orchestrator validate broken.toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("broken.toml:"))
        .collect();
    let mut checked = 0;
    for block in blocks.iter().filter(|b| b.contains("[dag]")) {
        match orchestrator::dag::parse_str(block, "broken.toml") {
            Ok(_) => checked += 1,
            Err(e) => {
                assert!(
                    block.contains("id = \"broken\""),
                    "a documented DAG is invalid:\n{e}"
                );
                assert_eq!(e.to_string().lines().collect::<Vec<_>>(), shown);
                checked += 1;
            }
        }
    }
    assert!(checked >= 2);
}
