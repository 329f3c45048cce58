//! The `Store` contract, checked on every implementation (SQLite and in-memory): run creation with
//! unique ids and `max_active_runs`, task and try updates, process records, recovery of runs whose
//! owner died; random update sequences that must leave every backend with the same records; and
//! concurrent writers on one SQLite file.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use orchestrator::store::{
    DeliveryState, MemoryStore, NewNotification, NewRun, NotificationUpdate, Owner, ProcessRecord,
    RunFilter, RunState, SqliteStore, Store, StoreError, TaskState, TaskUpdate, Trigger,
    current_owner,
};
use proptest::prelude::*;
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
fn every_backend_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    for (name, store) in backends(dir.path()) {
        eprintln!("contract: {name}");
        contract(store.as_ref());
    }
}

#[test]
fn the_sqlite_store_keeps_the_contract_and_survives_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deep/dir/state.db");
    contract(&SqliteStore::open(&path).unwrap());
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.runs(&RunFilter::default()).unwrap().len(), 4);
}

/// Notification deliveries: created `sending` with increasing ids, updated per attempt, a final
/// state kept against late updates, listed per run oldest first.
fn notifications_contract(store: &dyn Store) {
    // Whole seconds: SQLite keeps microseconds.
    let t0 = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let new = |run_id: &str, event: &str| NewNotification {
        run_id: run_id.into(),
        dag_id: "d".into(),
        event: event.into(),
        target_index: 1,
        target: "https://hooks.example/…".into(),
        format: "json".into(),
        summary: format!("DAG d run {run_id}: {event}"),
        created_at: t0,
    };
    let a = store.add_notification(&new("r1", "retry")).unwrap();
    let b = store.add_notification(&new("r2", "failure")).unwrap();
    let c = store.add_notification(&new("r1", "failure")).unwrap();
    assert!(a.id < b.id && b.id < c.id);
    assert_eq!(
        (a.state, a.attempts, a.detail.clone()),
        (DeliveryState::Sending, 0, None)
    );
    let at = |secs| t0 + chrono::Duration::seconds(secs);
    let update = |state, attempts, detail: &str, secs| NotificationUpdate {
        state,
        attempts,
        detail: Some(detail.into()),
        at: at(secs),
    };
    store
        .update_notification(
            a.id,
            &update(DeliveryState::Sending, 1, "HTTP 500; attempt 2 in 1s", 1),
        )
        .unwrap();
    store
        .update_notification(a.id, &update(DeliveryState::Delivered, 2, "HTTP 200 OK", 2))
        .unwrap();
    // A late update does not reopen a delivery that ended.
    store
        .update_notification(a.id, &update(DeliveryState::GaveUp, 3, "late", 3))
        .unwrap();
    store
        .update_notification(
            c.id,
            &update(DeliveryState::GaveUp, 1, "HTTP 404; not retried", 1),
        )
        .unwrap();
    assert!(matches!(
        store.update_notification(c.id + 100, &update(DeliveryState::Delivered, 1, "x", 1)),
        Err(StoreError::NoSuchNotification(_))
    ));
    let r1 = store.notifications("r1").unwrap();
    assert_eq!(
        r1.iter()
            .map(|n| (
                n.event.as_str(),
                n.state,
                n.attempts,
                n.detail.as_deref(),
                n.updated_at
            ))
            .collect::<Vec<_>>(),
        [
            (
                "retry",
                DeliveryState::Delivered,
                2,
                Some("HTTP 200 OK"),
                at(2)
            ),
            (
                "failure",
                DeliveryState::GaveUp,
                1,
                Some("HTTP 404; not retried"),
                at(1)
            ),
        ]
    );
    assert_eq!(r1[0].summary, "DAG d run r1: retry");
    assert_eq!(store.notifications("r2").unwrap(), [b]);
    assert!(store.notifications("none").unwrap().is_empty());
}

#[test]
fn every_backend_keeps_the_notification_contract() {
    let dir = tempfile::tempdir().unwrap();
    for (name, store) in backends(dir.path()) {
        eprintln!("notifications: {name}");
        notifications_contract(store.as_ref());
    }
    // What SQLite recorded survives reopening.
    let reopened = SqliteStore::open(dir.path().join("state.db")).unwrap();
    assert_eq!(reopened.notifications("r1").unwrap().len(), 2);
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

/// Every backend under test, fresh. A new backend is added here and inherits every contract test.
fn backends(dir: &std::path::Path) -> Vec<(&'static str, Box<dyn Store>)> {
    vec![
        ("memory", Box::new(MemoryStore::new())),
        (
            "sqlite",
            Box::new(SqliteStore::open(dir.join("state.db")).unwrap()),
        ),
    ]
}

/// One random update: a task (`zz` does not exist), a try, and any subset of the fields.
fn any_update() -> impl Strategy<Value = (String, TaskUpdate)> {
    let state = prop::option::of(prop::sample::select(TaskState::ALL.to_vec()));
    (
        prop::sample::select(vec!["a", "b", "zz"]),
        0u32..4,
        state,
        prop::option::of(-2i32..3),
        prop::option::of(prop::sample::select(vec!["boom", "bang"])),
        prop::option::of(0i64..3),
        prop::option::of(0u32..3),
        0i64..1_000_000,
    )
        .prop_map(|(task, try_number, state, exit, error, out, log, at)| {
            let at = chrono::DateTime::from_timestamp(1_700_000_000 + at, 0).unwrap();
            (
                task.to_owned(),
                TaskUpdate {
                    task_id: task.into(),
                    try_number,
                    state,
                    at: Some(at),
                    exit_code: exit,
                    error: error.map(str::to_owned),
                    outputs: out.map(|n| json!({ "n": n }).as_object().unwrap().clone()),
                    log_path: log.map(|n| PathBuf::from(format!("/logs/try-{n}.log"))),
                },
            )
        })
}

/// What a backend holds for the run, as comparable text.
fn snapshot(store: &dyn Store, run_id: &str) -> String {
    let mut out = format!("{:?}\n", store.task_instances(run_id).unwrap());
    for t in ["a", "b"] {
        out += &format!("{:?}\n", store.tries(run_id, t).unwrap());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The rules live in one place: any sequence of updates (single or batched, valid or naming a
    /// missing task) leaves every backend with the same instances and tries, then the same
    /// result of closing the run as orphaned.
    #[test]
    fn random_update_sequences_give_every_backend_the_same_records(
        updates in prop::collection::vec((any_update(), any::<bool>()), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let dead = Owner { pid: 4_000_000, ..current_owner() };
        let mut seen: Vec<(&str, Vec<String>, String)> = Vec::new();
        for (name, store) in backends(dir.path()) {
            let mut proposed = new_run("p", dead.clone(), None);
            let created = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
            (proposed.logical_date, proposed.started_at) = (created, created);
            let run = store.create_run(&proposed).unwrap();
            let mut results = Vec::new();
            let mut batch = Vec::new();
            for ((_, u), flush) in &updates {
                batch.push((run.run_id.clone(), u.clone()));
                if *flush {
                    let r = if batch.len() == 1 {
                        store.update_task(&run.run_id, &batch[0].1)
                    } else {
                        store.update_tasks(&batch)
                    };
                    results.push(format!("{:?}", r.map_err(|e| e.to_string())));
                    batch.clear();
                }
            }
            let mut snap = snapshot(store.as_ref(), &run.run_id);
            let closed = store.fail_orphaned_runs(&|o| o.pid != dead.pid).unwrap();
            prop_assert_eq!(closed.len(), 1);
            let mut closed_run = closed[0].0.clone();
            closed_run.ended_at = None;
            snap += &format!("{closed_run:?}\n");
            // Closing stamps "now", which differs between backends by design: compare the rest.
            for ti in store.task_instances(&run.run_id).unwrap() {
                snap += &format!("{:?} {:?} {:?}\n", ti.task_id, ti.state, ti.error);
            }
            for t in ["a", "b"] {
                for tr in store.tries(&run.run_id, t).unwrap() {
                    snap += &format!("{t} {} {:?} {:?}\n", tr.try_number, tr.state, tr.error);
                }
            }
            seen.push((name, results, snap));
        }
        for w in seen.windows(2) {
            prop_assert_eq!(&w[0].1, &w[1].1, "results differ: {} vs {}", w[0].0, w[1].0);
            prop_assert_eq!(&w[0].2, &w[1].2, "records differ: {} vs {}", w[0].0, w[1].0);
        }
    }
}
