//! The `Store` contract, checked on both implementations (SQLite and in-memory): run creation with
//! unique ids and `max_active_runs`, task and try updates, process records, recovery of runs whose
//! owner died; and concurrent writers on one SQLite file.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use orchestrator::store::{
    MemoryStore, NewRun, Owner, ProcessRecord, RunFilter, RunState, SqliteStore, Store, StoreError,
    TaskState, TaskUpdate, Trigger, current_owner,
};
use serde_json::json;

fn new_run(dag: &str, owner: Owner, max: Option<u32>) -> NewRun {
    NewRun {
        run_id: format!("manual__{dag}"),
        dag_id: dag.into(),
        dag_file: Some(PathBuf::from("/dags/x.toml")),
        trigger: Trigger::Manual,
        logical_date: Utc::now(),
        params: json!({"n": 1}).as_object().unwrap().clone(),
        task_ids: vec!["a".into(), "b".into()],
        owner,
        max_active_runs: max,
        started_at: Utc::now(),
    }
}

fn upd(task: &str, try_number: u32, state: TaskState) -> TaskUpdate {
    TaskUpdate {
        task_id: task.into(),
        try_number,
        state: Some(state),
        at: Some(Utc::now()),
        ..Default::default()
    }
}

fn contract(store: &dyn Store) {
    let me = current_owner();
    // Ids are made unique; max_active_runs counts running runs of the DAG.
    let r1 = store
        .create_run(&new_run("d", me.clone(), Some(2)))
        .unwrap();
    let r2 = store
        .create_run(&new_run("d", me.clone(), Some(2)))
        .unwrap();
    assert_eq!(r2.run_id, format!("{}.2", r1.run_id));
    assert!(matches!(
        store.create_run(&new_run("d", me.clone(), Some(2))),
        Err(StoreError::TooManyActiveRuns {
            active: 2,
            max: 2,
            ..
        })
    ));
    store
        .finish_run(&r2.run_id, RunState::Success, None)
        .unwrap();
    let r3 = store
        .create_run(&new_run("d", me.clone(), Some(2)))
        .unwrap();
    assert_eq!(r3.run_id, format!("{}.3", r1.run_id));
    assert!(matches!(
        store.finish_run("nope", RunState::Failed, None),
        Err(StoreError::NoSuchRun(_))
    ));

    // Task instances start pending, in order; tries are kept apart.
    let tis = store.task_instances(&r1.run_id).unwrap();
    assert_eq!(
        tis.iter()
            .map(|t| (t.task_id.as_str(), t.state))
            .collect::<Vec<_>>(),
        [("a", TaskState::Pending), ("b", TaskState::Pending)]
    );
    store
        .update_task(&r1.run_id, &upd("a", 0, TaskState::Queued))
        .unwrap();
    let mut running = upd("a", 1, TaskState::Running);
    running.log_path = Some(PathBuf::from("/logs/a/try-1.log"));
    store.update_task(&r1.run_id, &running).unwrap();
    let mut failed = upd("a", 1, TaskState::UpForRetry);
    failed.error = Some("boom".into());
    failed.exit_code = Some(3);
    store
        .update_tasks(&[
            (r1.run_id.clone(), failed),
            (r1.run_id.clone(), upd("a", 2, TaskState::Running)),
        ])
        .unwrap();
    let mut ok = upd("a", 2, TaskState::Success);
    ok.outputs = Some(json!({"rows": 5}).as_object().unwrap().clone());
    ok.exit_code = Some(0);
    store.update_task(&r1.run_id, &ok).unwrap();
    store
        .update_task(&r1.run_id, &upd("b", 0, TaskState::Skipped))
        .unwrap();
    let tis = store.task_instances(&r1.run_id).unwrap();
    let a = &tis[0];
    assert_eq!(
        (a.state, a.try_number, a.exit_code, a.error.as_deref()),
        (TaskState::Success, 2, Some(0), None)
    );
    assert_eq!(a.outputs["rows"], json!(5));
    assert!(a.started_at.is_some() && a.ended_at.is_some());
    assert_eq!(tis[1].state, TaskState::Skipped);
    let tries = store.tries(&r1.run_id, "a").unwrap();
    assert_eq!(tries.len(), 2);
    assert_eq!(
        (
            tries[0].state,
            tries[0].exit_code,
            tries[0].error.as_deref()
        ),
        (TaskState::UpForRetry, Some(3), Some("boom"))
    );
    assert_eq!(tries[0].log_path, Some(PathBuf::from("/logs/a/try-1.log")));
    assert_eq!(
        (tries[1].state, tries[1].outputs["rows"].clone()),
        (TaskState::Success, json!(5))
    );
    assert!(
        store
            .update_task("nope", &upd("a", 0, TaskState::Queued))
            .is_err()
    );

    // Listing.
    let all = store.runs(&RunFilter::default()).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        store
            .runs(&RunFilter {
                state: Some(RunState::Success),
                ..Default::default()
            })
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .runs(&RunFilter {
                limit: 1,
                ..Default::default()
            })
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .runs(&RunFilter {
                dag_id: Some("other".into()),
                ..Default::default()
            })
            .unwrap()
            .is_empty()
    );
    let got = store.run(&r1.run_id).unwrap().unwrap();
    assert_eq!(
        (got.params["n"].clone(), got.dag_file.clone()),
        (json!(1), Some(PathBuf::from("/dags/x.toml")))
    );

    // Recovery: a run whose owner is dead is failed, with its processes handed back.
    let dead = Owner {
        pid: 4_000_000,
        ..me.clone()
    };
    let orphan = store.create_run(&new_run("o", dead.clone(), None)).unwrap();
    store
        .update_task(&orphan.run_id, &upd("a", 1, TaskState::Running))
        .unwrap();
    let proc_ = ProcessRecord {
        run_id: orphan.run_id.clone(),
        task_id: "a".into(),
        pid: 4_000_001,
        start_ticks: 7,
        host: me.host.clone(),
    };
    store.record_process(&proc_).unwrap();
    assert_eq!(
        store.processes(&orphan.run_id).unwrap(),
        std::slice::from_ref(&proc_)
    );
    let recovered = store.fail_orphaned_runs(&|o| o.pid != dead.pid).unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].0.run_id, orphan.run_id);
    assert_eq!(recovered[0].1, [proc_]);
    let run = store.run(&orphan.run_id).unwrap().unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert!(run.note.unwrap().contains("pid 4000000"));
    let tis = store.task_instances(&orphan.run_id).unwrap();
    assert_eq!(
        (tis[0].state, tis[1].state),
        (TaskState::Failed, TaskState::Skipped)
    );
    assert_eq!(
        store.tries(&orphan.run_id, "a").unwrap()[0].state,
        TaskState::Failed
    );
    assert!(store.processes(&orphan.run_id).unwrap().is_empty());
    // Live owners' runs are left alone.
    assert!(store.fail_orphaned_runs(&|_| true).unwrap().is_empty());
    assert_eq!(
        store.run(&r1.run_id).unwrap().unwrap().state,
        RunState::Running
    );
    store.forget_process(&orphan.run_id, 1).unwrap();
}

#[test]
fn the_memory_store_keeps_the_contract() {
    contract(&MemoryStore::new());
}

#[test]
fn the_sqlite_store_keeps_the_contract_and_survives_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deep/dir/state.db");
    contract(&SqliteStore::open(&path).unwrap());
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.runs(&RunFilter::default()).unwrap().len(), 4);
}

#[test]
fn concurrent_writers_on_one_sqlite_file_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.db");
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                // Each thread has its own connection, as separate processes would.
                let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
                for i in 0..25 {
                    let mut run = new_run(&format!("dag{w}"), current_owner(), None);
                    run.run_id = format!("w{w}-{i}");
                    let r = store.create_run(&run).unwrap();
                    for t in ["a", "b"] {
                        store
                            .update_task(&r.run_id, &upd(t, 1, TaskState::Running))
                            .unwrap();
                        store
                            .update_task(&r.run_id, &upd(t, 1, TaskState::Success))
                            .unwrap();
                    }
                    store
                        .finish_run(&r.run_id, RunState::Success, None)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let runs = store.runs(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 100);
    for r in runs {
        assert_eq!(r.state, RunState::Success);
        assert!(
            store
                .task_instances(&r.run_id)
                .unwrap()
                .iter()
                .all(|t| t.state == TaskState::Success)
        );
    }
}
