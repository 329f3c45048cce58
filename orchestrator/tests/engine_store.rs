//! The `Store` contract, checked on every implementation (in-memory, SQLite, and PostgreSQL on a
//! server the harness starts): run creation with unique ids and `max_active_runs`, task and try
//! updates, process records, recovery of runs whose owner died; repairs (clear, mark, resume), run
//! notes and DAG versions; random update sequences that must leave every backend with the same
//! records; concurrent writers on one SQLite file and on one PostgreSQL database (admission,
//! resume races, schedule slot claims); several servers on one state (each slot claimed once,
//! server leases and the liveness read from them); PostgreSQL's migrations and its connection
//! surviving a server restart.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use orchestrator::store::{
    DeliveryState, Liveness, MIGRATIONS, MemoryStore, NewNotification, NewRun, NotificationUpdate,
    Owner, PostgresStore, ProcessRecord, Repair, RepairKind, RunFilter, RunState, SqliteStore,
    Store, StoreError, TaskState, TaskUpdate, Trigger, current_owner, rules,
};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::json;
use velostream_testkit::Postgres;

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
        dag_text: None,
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
    let recovered = store
        .fail_orphaned_runs(None, &|o| o.pid != dead.pid)
        .unwrap();
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
    assert!(
        store
            .fail_orphaned_runs(None, &|_| true)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.run(&r1.run_id).unwrap().unwrap().state,
        RunState::Running
    );
    store.forget_process(&orphan.run_id, 1).unwrap();
}

#[test]
fn every_backend_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    for (name, store) in backends(dir.path(), &pg) {
        eprintln!("contract: {name}");
        contract(store.as_ref());
    }
}

/// Several servers on one state: a scheduled run is its slot's claim (refused again in any state,
/// while other triggers may rerun the slot once it is free); server leases are renewed, ended and
/// read with whether they ran out, and a run whose owner elsewhere let its lease run out can be
/// taken over, while one whose owner's lease runs cannot.
fn sharing_contract(store: &dyn Store) {
    let slot = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let scheduled = |owner: Owner| {
        let mut run = new_run("shared", owner, Some(5));
        run.run_id = "scheduled__shared".into();
        run.trigger = Trigger::Scheduled;
        run.logical_date = slot;
        run
    };
    let first = store.create_run(&scheduled(current_owner())).unwrap();
    let refused = |store: &dyn Store| match store.create_run(&scheduled(current_owner())) {
        Err(StoreError::SlotClaimed { dag_id, run_id, .. }) => assert_eq!(
            (dag_id.as_str(), run_id.as_str()),
            ("shared", first.run_id.as_str())
        ),
        other => panic!("a second scheduled run of the slot: {other:?}"),
    };
    refused(store);
    store
        .finish_run(&first.run_id, RunState::Success, None)
        .unwrap();
    refused(store);
    let mut backfill = scheduled(current_owner());
    backfill.trigger = Trigger::Backfill;
    backfill.run_id = "backfill__shared".into();
    store.create_run(&backfill).unwrap();
    let mut next = scheduled(current_owner());
    next.logical_date = slot + chrono::Duration::seconds(2);
    store.create_run(&next).unwrap();

    // Leases.
    let elsewhere = Owner {
        host: "server-elsewhere.invalid".into(),
        pid: 77,
        start_ticks: 1234,
    };
    let minute = std::time::Duration::from_secs(60);
    assert!(
        !store.renew_lease(&elsewhere, minute).unwrap(),
        "a first lease"
    );
    assert!(
        !store.renew_lease(&elsewhere, minute).unwrap(),
        "renewed in time"
    );
    let leases = store.leases().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].owner, elsewhere);
    assert!(!leases[0].expired && leases[0].expires_at > leases[0].renewed_at);
    let short = Owner {
        pid: 78,
        ..elsewhere.clone()
    };
    store
        .renew_lease(&short, std::time::Duration::ZERO)
        .unwrap();
    let expired: Vec<_> = store
        .leases()
        .unwrap()
        .into_iter()
        .map(|l| (l.owner.pid, l.expired))
        .collect();
    assert_eq!(expired, [(77, false), (78, true)]);
    assert!(
        store.renew_lease(&short, minute).unwrap(),
        "a lease that ran out"
    );

    // A run owned elsewhere: taken over only once its owner's lease ran out.
    let orphan = store
        .create_run(&new_run("shared_owned", elsewhere.clone(), None))
        .unwrap();
    let resume = repair(RepairKind::Resume, &[], &current_owner());
    let live = Liveness::read(store).unwrap();
    assert!(live.is_alive(&elsewhere));
    assert!(matches!(
        store.repair_run(&orphan.run_id, &resume, &|o| live.is_alive(o)),
        Err(StoreError::NotRepairable { .. })
    ));
    store.end_lease(&elsewhere).unwrap();
    let live = Liveness::read(store).unwrap();
    assert!(!live.is_alive(&elsewhere) && live.lease_expired(&elsewhere));
    let taken = store
        .repair_run(&orphan.run_id, &resume, &|o| live.is_alive(o))
        .unwrap();
    assert_eq!(taken.owner, current_owner());
}

#[test]
fn every_backend_shares_slots_and_leases_alike() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    for (name, store) in backends(dir.path(), &pg) {
        eprintln!("sharing contract: {name}");
        sharing_contract(store.as_ref());
    }
}

fn repair(kind: RepairKind, reset: &[&str], owner: &Owner) -> Repair {
    Repair {
        kind,
        reset: reset.iter().map(|s| s.to_string()).collect(),
        mark: None,
        reason: None,
        owner: owner.clone(),
        at: Utc::now(),
    }
}

/// Clear, mark and resume, notes and DAG versions: the same records on every backend.
fn repair_contract(store: &dyn Store) {
    let me = current_owner();
    let dead = Owner {
        host: me.host.clone(),
        pid: 4_000_000,
        start_ticks: 1,
    };
    let alive = |o: &Owner| o.pid != dead.pid;
    let mut new = new_run("rep", me.clone(), None);
    new.dag_text = Some("[dag]\nid = \"rep\"\n".into());
    let run = store.create_run(&new).unwrap();
    // The DAG version is stored once, by its hash.
    let hash = run.dag_hash.clone().unwrap();
    assert_eq!(hash, rules::dag_hash(new.dag_text.as_deref().unwrap()));
    assert_eq!(
        store.run(&run.run_id).unwrap().unwrap().dag_hash,
        Some(hash.clone())
    );
    let version = store.dag_version(&hash).unwrap().unwrap();
    assert_eq!(
        (version.dag_id.as_str(), version.text.as_str()),
        ("rep", new.dag_text.as_deref().unwrap())
    );
    assert!(store.dag_version("nope").unwrap().is_none());

    // A running run is its driver's: no clear, no mark; no resume of a live owner's run.
    let clear_a = repair(RepairKind::Clear, &["a"], &me);
    assert!(matches!(
        store.repair_run(&run.run_id, &clear_a, &alive),
        Err(StoreError::NotRepairable { .. })
    ));
    assert!(matches!(
        store.repair_run(&run.run_id, &repair(RepairKind::Resume, &[], &me), &alive),
        Err(StoreError::NotRepairable { .. })
    ));
    let mut done = upd("a", 1, TaskState::Running);
    store.update_task(&run.run_id, &done).unwrap();
    done = upd("a", 1, TaskState::Failed);
    done.error = Some("boom".into());
    store.update_task(&run.run_id, &done).unwrap();
    store
        .update_task(&run.run_id, &upd("b", 0, TaskState::UpstreamFailed))
        .unwrap();
    store
        .finish_run(&run.run_id, RunState::Failed, Some("a failed"))
        .unwrap();

    // Clear: back to pending, the try count kept, the run running again under the new owner.
    assert!(matches!(
        store.repair_run(
            &run.run_id,
            &repair(RepairKind::Clear, &["zz"], &me),
            &alive
        ),
        Err(StoreError::NoSuchTask { .. })
    ));
    assert!(matches!(
        store.repair_run("nope", &clear_a, &alive),
        Err(StoreError::NoSuchRun(_))
    ));
    let cleared = store
        .repair_run(
            &run.run_id,
            &repair(RepairKind::Clear, &["a", "b"], &me),
            &alive,
        )
        .unwrap();
    assert_eq!(
        (cleared.state, cleared.ended_at, cleared.note.as_deref()),
        (RunState::Running, None, None)
    );
    let tis = store.task_instances(&run.run_id).unwrap();
    assert_eq!(
        (tis[0].state, tis[0].try_number, tis[0].error.as_deref()),
        (TaskState::Pending, 1, None)
    );
    assert_eq!(tis[1].state, TaskState::Pending);
    assert_eq!(
        store.tries(&run.run_id, "a").unwrap().len(),
        1,
        "old tries stay"
    );

    // Its driver dies in try 2 of a: a resume closes the try and puts a up for retry.
    store
        .update_task(&run.run_id, &upd("a", 2, TaskState::Running))
        .unwrap();
    store
        .finish_run(&run.run_id, RunState::Running, None)
        .unwrap();
    let mut taken = repair(RepairKind::Resume, &[], &dead);
    assert!(
        matches!(
            store.repair_run(&run.run_id, &taken, &alive),
            Err(StoreError::NotRepairable { .. })
        ),
        "the owner is alive"
    );
    // Pretend the current owner died: a resume by `dead`... is refused to a live owner above,
    // so run it as the dead owner's run taken over by `me`.
    let as_dead = |o: &Owner| o.pid != me.pid && o.pid != dead.pid;
    taken.owner = me.clone();
    let resumed = store.repair_run(&run.run_id, &taken, &as_dead).unwrap();
    assert_eq!(
        (resumed.state, resumed.owner.pid),
        (RunState::Running, me.pid)
    );
    let a = &store.task_instances(&run.run_id).unwrap()[0];
    assert_eq!(
        (a.state, a.error.as_deref()),
        (TaskState::UpForRetry, Some(rules::INTERRUPTED))
    );
    let tries = store.tries(&run.run_id, "a").unwrap();
    assert_eq!(
        (tries[1].state, tries[1].error.as_deref()),
        (TaskState::Failed, Some(rules::INTERRUPTED))
    );

    // A run closed as orphaned can be resumed too: failed-interrupted and never-started tasks
    // are taken back.
    let mut other = new_run("rep2", dead.clone(), None);
    other.run_id = "manual__rep2".into();
    let orphan = store.create_run(&other).unwrap();
    store
        .update_task(&orphan.run_id, &upd("a", 1, TaskState::Running))
        .unwrap();
    let closed = store
        .fail_orphaned_runs(None, &|o: &Owner| o.pid != dead.pid)
        .unwrap();
    assert!(closed.iter().any(|(r, _)| r.run_id == orphan.run_id));
    let r = store.run(&orphan.run_id).unwrap().unwrap();
    assert!(r.was_closed_orphaned(), "{:?}", r.note);
    store
        .repair_run(
            &orphan.run_id,
            &repair(RepairKind::Resume, &[], &me),
            &alive,
        )
        .unwrap();
    let tis = store.task_instances(&orphan.run_id).unwrap();
    assert_eq!(
        (tis[0].state, tis[1].state),
        (TaskState::UpForRetry, TaskState::Pending)
    );

    // Mark: success clears the error, failed says why; only success or failed.
    store
        .finish_run(&orphan.run_id, RunState::Failed, None)
        .unwrap();
    let mut mark = repair(RepairKind::Mark, &["b"], &me);
    mark.mark = Some(("a".into(), TaskState::Skipped));
    assert!(matches!(
        store.repair_run(&orphan.run_id, &mark, &alive),
        Err(StoreError::NotRepairable { .. })
    ));
    mark.mark = Some(("a".into(), TaskState::Failed));
    mark.reason = Some("the data was bad".into());
    store.repair_run(&orphan.run_id, &mark, &alive).unwrap();
    let a = &store.task_instances(&orphan.run_id).unwrap()[0];
    assert_eq!(
        (a.state, a.error.as_deref()),
        (
            TaskState::Failed,
            Some("marked failed by hand: the data was bad")
        )
    );
    // History, oldest first.
    let kinds: Vec<RepairKind> = store
        .run_actions(&run.run_id)
        .unwrap()
        .iter()
        .map(|a| a.kind)
        .collect();
    assert_eq!(kinds, [RepairKind::Clear, RepairKind::Resume]);
    let actions = store.run_actions(&orphan.run_id).unwrap();
    assert_eq!(actions[1].state, Some(TaskState::Failed));
    assert_eq!(actions[1].tasks, ["b", "a"]);
    assert_eq!(actions[1].reason.as_deref(), Some("the data was bad"));

    // A slot never runs twice at once: no clear while another run of the same slot runs.
    let mut twin = new_run("rep3", me.clone(), None);
    twin.run_id = "manual__rep3".into();
    let first = store.create_run(&twin).unwrap();
    store
        .finish_run(&first.run_id, RunState::Failed, None)
        .unwrap();
    let second = store.create_run(&twin).unwrap();
    assert!(matches!(
        store.repair_run(&first.run_id, &repair(RepairKind::Clear, &["a"], &me), &alive),
        Err(StoreError::SlotBusy { run_id, .. }) if run_id == second.run_id
    ));
    store
        .finish_run(&second.run_id, RunState::Success, None)
        .unwrap();
    store
        .repair_run(
            &first.run_id,
            &repair(RepairKind::Clear, &["a"], &me),
            &alive,
        )
        .unwrap();

    // Notes: none, then replaced.
    assert!(store.run_notes(&run.run_id).unwrap().is_none());
    store
        .set_run_notes(&run.run_id, "first", Utc::now())
        .unwrap();
    store
        .set_run_notes(&run.run_id, "second", Utc::now())
        .unwrap();
    assert_eq!(
        store.run_notes(&run.run_id).unwrap().unwrap().text,
        "second"
    );
    assert!(matches!(
        store.set_run_notes("nope", "x", Utc::now()),
        Err(StoreError::NoSuchRun(_))
    ));
}

#[test]
fn every_backend_repairs_runs_alike() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    for (name, store) in backends(dir.path(), &pg) {
        eprintln!("repair contract: {name}");
        repair_contract(store.as_ref());
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
    let pg = Postgres::start();
    for (name, store) in backends(dir.path(), &pg) {
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

/// Every backend under test, fresh (a new SQLite file in `dir`, a new database on `pg`). A new
/// backend is added here and inherits every contract test.
fn backends(dir: &std::path::Path, pg: &Postgres) -> Vec<(&'static str, Box<dyn Store>)> {
    vec![
        ("memory", Box::new(MemoryStore::new())),
        (
            "sqlite",
            Box::new(SqliteStore::open(dir.join("state.db")).unwrap()),
        ),
        (
            "postgres",
            Box::new(PostgresStore::open(&pg.fresh_database()).unwrap()),
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

/// The rules live in one place: any sequence of updates (single or batched, valid or naming a
/// missing task) leaves every backend with the same instances and tries, then the same result of
/// closing the run as orphaned, of resuming it, and of clearing any tasks of it. (A runner rather
/// than `proptest!`, so that one PostgreSQL server serves every case.)
#[test]
fn random_update_sequences_give_every_backend_the_same_records() {
    let pg = Postgres::start();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    });
    let strategy = (
        prop::collection::vec((any_update(), any::<bool>()), 1..40),
        prop::sample::subsequence(vec!["a", "b", "zz"], 0..=3),
    );
    let result = runner.run(&strategy, |(updates, clear)| {
        same_records_everywhere(&pg, &updates, &clear)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn same_records_everywhere(
    pg: &Postgres,
    updates: &[((String, TaskUpdate), bool)],
    clear: &[&str],
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let dead = Owner {
        pid: 4_000_000,
        ..current_owner()
    };
    let mut seen: Vec<(&str, Vec<String>, String)> = Vec::new();
    for (name, store) in backends(dir.path(), pg) {
        let mut proposed = new_run("p", dead.clone(), None);
        let created = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        (proposed.logical_date, proposed.started_at) = (created, created);
        let run = store.create_run(&proposed).unwrap();
        let mut results = Vec::new();
        let mut batch = Vec::new();
        for ((_, u), flush) in updates {
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
        let closed = store
            .fail_orphaned_runs(None, &|o| o.pid != dead.pid)
            .unwrap();
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
        // Resumed by a new owner, ended again, then cleared: the same records everywhere.
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let me = current_owner();
        let fix = |kind, reset: &[&str]| Repair {
            kind,
            reset: reset.iter().map(|s| s.to_string()).collect(),
            mark: None,
            reason: None,
            owner: me.clone(),
            at,
        };
        let resumed = store.repair_run(&run.run_id, &fix(RepairKind::Resume, &[]), &|o| {
            o.pid != dead.pid
        });
        snap += &format!(
            "{:?}\n",
            resumed
                .map(|r| (r.state, r.owner.pid))
                .map_err(|e| e.to_string())
        );
        store
            .finish_run(&run.run_id, RunState::Failed, None)
            .unwrap();
        let cleared = store.repair_run(&run.run_id, &fix(RepairKind::Clear, clear), &|_| true);
        snap += &format!(
            "{:?}\n",
            cleared.map(|r| r.state).map_err(|e| e.to_string())
        );
        for ti in store.task_instances(&run.run_id).unwrap() {
            snap += &format!(
                "{:?} {:?} {} {:?} {:?}\n",
                ti.task_id, ti.state, ti.try_number, ti.error, ti.outputs
            );
        }
        for t in ["a", "b"] {
            for tr in store.tries(&run.run_id, t).unwrap() {
                snap += &format!("{t} {} {:?} {:?}\n", tr.try_number, tr.state, tr.error);
            }
        }
        let actions: Vec<_> = store
            .run_actions(&run.run_id)
            .unwrap()
            .into_iter()
            .map(|a| (a.kind, a.tasks))
            .collect();
        snap += &format!("{actions:?}\n");
        seen.push((name, results, snap));
    }
    for w in seen.windows(2) {
        prop_assert_eq!(&w[0].1, &w[1].1, "results differ: {} vs {}", w[0].0, w[1].0);
        prop_assert_eq!(&w[0].2, &w[1].2, "records differ: {} vs {}", w[0].0, w[1].0);
    }
    Ok(())
}

#[test]
fn the_postgres_store_migrates_once_survives_reopening_and_refuses_a_newer_schema() {
    let pg = Postgres::start();
    let url = pg.fresh_database();
    // Processes starting together on a new database migrate it once.
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::open(&url).map(|s| s.schema_version()))
        })
        .collect();
    for o in opened {
        let version = o.join().unwrap().unwrap().unwrap();
        assert_eq!(version, MIGRATIONS.last().unwrap().version);
    }
    let db = url.rsplit('/').next().unwrap();
    assert_eq!(
        pg.psql(
            db,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM velostream_schema"
        )
        .trim(),
        (1..=MIGRATIONS.len())
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    contract(&PostgresStore::open(&url).unwrap());
    let reopened = PostgresStore::open(&url).unwrap();
    assert_eq!(reopened.runs(&RunFilter::default()).unwrap().len(), 4);
    // The store's messages never show the password.
    assert!(!format!("{reopened:?}").contains(":velostream@"));

    pg.psql(
        db,
        "INSERT INTO velostream_schema (version, description) VALUES (999, 'from the future')",
    );
    let err = PostgresStore::open(&url).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );
    // A server that does not answer is a clear error naming the URL without its password.
    let refused = format!("postgres://velostream:secret@127.0.0.1:{}/x", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let err = PostgresStore::open(&refused).unwrap_err().to_string();
    assert!(
        err.contains("velostream:***@127.0.0.1") && !err.contains("secret"),
        "{err}"
    );
}

#[test]
fn concurrent_processes_on_one_postgres_database_admit_and_resume_exactly_once() {
    let pg = Postgres::start();
    let url = pg.fresh_database();
    let stores: Vec<Arc<dyn Store>> = (0..4)
        .map(|_| Arc::new(PostgresStore::open(&url).unwrap()) as Arc<dyn Store>)
        .collect();
    let barrier = Arc::new(std::sync::Barrier::new(stores.len()));
    let logical_date = Utc::now();

    // max_active_runs = 1: of four processes starting a run of the DAG at once, one gets it.
    let results: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut run = new_run("limited", current_owner(), Some(1));
                run.run_id = format!("limited-{i}");
                barrier.wait();
                store.create_run(&run)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().all(|r| match r {
        Ok(_) => true,
        Err(StoreError::TooManyActiveRuns {
            active: 1, max: 1, ..
        }) => true,
        Err(_) => false,
    }));

    // One slot: four processes starting the same logical date at once, one runs it.
    let results: Vec<_> = stores
        .iter()
        .map(|store| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut run = new_run("slot", current_owner(), None);
                run.logical_date = logical_date;
                barrier.wait();
                store.create_run(&run)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );

    // One schedule slot: four servers claim it at once, one fires it, the others are told which
    // run claimed it.
    let slot = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let results: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut run = new_run("claimed", current_owner(), None);
                run.run_id = format!("scheduled-{i}");
                run.trigger = Trigger::Scheduled;
                run.logical_date = slot;
                barrier.wait();
                store.create_run(&run)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let winner: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winner.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(
                e,
                StoreError::SlotClaimed { run_id, .. } if *run_id == winner[0].run_id
            )),
        "{results:?}"
    );

    // A run whose owner died: four processes resume it at once; one takes it over, the others
    // are told it is running, driven by the winner.
    let dead = Owner {
        pid: 4_000_000,
        ..current_owner()
    };
    let orphan = stores[0]
        .create_run(&new_run("orphan", dead.clone(), None))
        .unwrap();
    stores[0]
        .update_task(&orphan.run_id, &upd("a", 1, TaskState::Running))
        .unwrap();
    let results: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let (store, barrier, run_id) = (store.clone(), barrier.clone(), orphan.run_id.clone());
            let dead_pid = dead.pid;
            std::thread::spawn(move || {
                // Four distinct live owners; only the dead one is dead.
                let me = Owner {
                    pid: 5_000_000 + i as u32,
                    ..current_owner()
                };
                barrier.wait();
                store.repair_run(&run_id, &repair(RepairKind::Resume, &[], &me), &|o| {
                    o.pid != dead_pid
                })
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::NotRepairable { .. })),
        "{results:?}"
    );
    let run = stores[1].run(&orphan.run_id).unwrap().unwrap();
    assert_eq!(run.owner, winners[0].owner);
    assert_eq!(stores[2].run_actions(&orphan.run_id).unwrap().len(), 1);
    let tries = stores[3].tries(&orphan.run_id, "a").unwrap();
    assert_eq!(
        (tries.len(), tries[0].state),
        (1, TaskState::Failed),
        "the interrupted try is closed once"
    );

    // Concurrent writers lose nothing.
    let threads: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(w, store)| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let mut run = new_run(&format!("dag{w}"), current_owner(), None);
                    run.run_id = format!("w{w}-{i}");
                    let r = store.create_run(&run).unwrap();
                    store
                        .update_tasks(&[
                            (r.run_id.clone(), upd("a", 1, TaskState::Running)),
                            (r.run_id.clone(), upd("b", 1, TaskState::Running)),
                        ])
                        .unwrap();
                    for t in ["a", "b"] {
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
    let done = stores[0]
        .runs(&RunFilter {
            state: Some(RunState::Success),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(done.len(), 40);
    let counts = stores[1].state_counts().unwrap();
    assert_eq!(counts.runs[&("dag0".to_owned(), RunState::Success)], 10);
}

#[test]
fn the_postgres_store_connects_again_after_the_server_restarts() {
    let mut pg = Postgres::start();
    let url = pg.fresh_database();
    let store = PostgresStore::open(&url).unwrap();
    let run = store
        .create_run(&new_run("d", current_owner(), None))
        .unwrap();
    let old_pid = pg.pid();
    pg.restart();
    assert_ne!(pg.pid(), old_pid, "the server did not restart");
    // The server closed the old connection; the next call opens a new one.
    store
        .update_task(&run.run_id, &upd("a", 1, TaskState::Running))
        .unwrap();
    assert_eq!(
        store.task_instances(&run.run_id).unwrap()[0].state,
        TaskState::Running
    );
}
