//! Helpers shared by the engine tests: load a DAG from text, run it on an in-memory store, and
//! check that processes are gone.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator::dag::{Dag, parse_str_with_env};
use orchestrator::events::{EventSink, RunEvent};
use orchestrator::scheduler::{Engine, EngineSettings, RunOutcome, RunRequest};
use orchestrator::store::{MemoryStore, Store, TaskState};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

/// A validated DAG from TOML text (no environment variables).
pub fn dag(text: &str) -> Arc<Dag> {
    match parse_str_with_env(text, "test.toml", &|_| None) {
        Ok(d) => Arc::new(d),
        Err(e) => panic!("test DAG is invalid:\n{e}"),
    }
}

/// An engine on a fresh in-memory store, logging under `logs`.
pub fn engine(logs: &Path) -> (Engine, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let mut settings = EngineSettings::new(logs);
    settings.kill_grace = Duration::from_millis(500);
    (Engine::new(store.clone(), settings), store)
}

/// Runs `text` to the end on a fresh in-memory store.
pub async fn run(text: &str) -> (RunOutcome, Arc<MemoryStore>, tempfile::TempDir) {
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
    (outcome, store, logs)
}

/// The final state of `task` in `outcome`.
pub fn state(outcome: &RunOutcome, task: &str) -> TaskState {
    outcome
        .tasks
        .iter()
        .find(|t| t.task_id == task)
        .unwrap_or_else(|| panic!("no task {task}"))
        .state
}

/// Waits for the first event matching `pred`.
pub async fn wait_for(
    rx: &mut UnboundedReceiver<RunEvent>,
    pred: impl Fn(&RunEvent) -> bool,
) -> RunEvent {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("no event within 30 s")
            .expect("event channel closed");
        if pred(&ev) {
            return ev;
        }
    }
}

/// Whether `pid` is gone (or a zombie waiting for init to reap it), waiting up to 10 s.
pub fn process_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) => {
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next());
                if state == Some("Z") || state == Some("X") {
                    return true;
                }
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a file of whitespace-separated pids, waiting until it has `n` of them.
pub fn read_pids(path: &Path, n: usize) -> Vec<u32> {
    let what = format!("{n} pids in {}", path.display());
    velostream_testkit::wait_for(&what, Duration::from_secs(30), || {
        let text = std::fs::read_to_string(path).ok()?;
        let pids: Vec<u32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        (pids.len() >= n).then_some(pids)
    })
}

/// Sanity check that a store agrees with an outcome.
pub fn store_matches(store: &dyn Store, outcome: &RunOutcome) {
    let run = store.run(&outcome.run_id).unwrap().unwrap();
    assert_eq!(run.state, outcome.state);
    for ti in store.task_instances(&outcome.run_id).unwrap() {
        assert_eq!(
            ti.state,
            state(outcome, &ti.task_id),
            "stored state of {}",
            ti.task_id
        );
    }
}
