//! Backfill: the plan (which slots run, run again or are skipped under each `--reprocess`), runs
//! oldest first within `--max-active-runs` with the trigger `backfill`, cancelling a whole
//! backfill, a slot never running twice at once beside the cron scheduler and a second backfill
//! (the store's rule, tested on both stores), the command line (dry run, a real backfill, Ctrl-C),
//! and the API and DAG page (form, dry run, start, progress, cancel, runs filtered by trigger).

mod web_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use orchestrator::cron::backfill::{self, Action, Reprocess};
use orchestrator::cron::{CatchUp, CronScheduler, DagFolder, Launcher};
use orchestrator::scheduler::{Engine, EngineSettings};
use orchestrator::store::{
    MemoryStore, NewRun, RunFilter, RunRecord, RunState, SqliteStore, Store, StoreError, Trigger,
    current_owner,
};
use tokio_util::sync::CancellationToken;
use web_common::Env;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A daily DAG at 06:00 UTC whose one task sleeps `secs`.
fn daily(id: &str, secs: &str) -> String {
    format!(
        "[dag]\nid = \"{id}\"\nschedule = \"0 6 * * *\"\n\n[[task]]\nid = \"t\"\nkind = \"command\"\nshell = \"sleep {secs}\"\n"
    )
}

fn new_run(dag_id: &str, at: &str, trigger: Trigger) -> NewRun {
    NewRun {
        run_id: format!("{}__{at}", trigger.as_str()),
        dag_id: dag_id.into(),
        dag_file: None,
        trigger,
        logical_date: utc(at),
        params: serde_json::Map::new(),
        task_ids: vec!["t".into()],
        owner: current_owner(),
        max_active_runs: None,
        started_at: Utc::now(),
        dag_text: None,
    }
}

fn slot_is_never_run_twice_at_once(store: &dyn Store) {
    let first = store
        .create_run(&new_run("d", "2026-01-01T06:00:00Z", Trigger::Scheduled))
        .unwrap();
    let err = store
        .create_run(&new_run("d", "2026-01-01T06:00:00Z", Trigger::Backfill))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::SlotBusy { run_id, .. } if *run_id == first.run_id),
        "{err}"
    );
    assert!(
        err.to_string().contains("never runs twice at once"),
        "{err}"
    );
    // Another slot, or another DAG's same slot, is free.
    store
        .create_run(&new_run("d", "2026-01-02T06:00:00Z", Trigger::Backfill))
        .unwrap();
    store
        .create_run(&new_run("e", "2026-01-01T06:00:00Z", Trigger::Backfill))
        .unwrap();
    // Once the first ends, the slot may run again; runs are filtered by trigger.
    store
        .finish_run(&first.run_id, RunState::Failed, None)
        .unwrap();
    store
        .create_run(&new_run("d", "2026-01-01T06:00:00Z", Trigger::Backfill))
        .unwrap();
    let backfills = store
        .runs(&RunFilter {
            dag_id: Some("d".into()),
            trigger: Some(Trigger::Backfill),
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(backfills.len(), 2);
    assert!(backfills.iter().all(|r| r.trigger == Trigger::Backfill));
}

#[test]
fn both_stores_refuse_a_second_run_of_a_running_slot() {
    slot_is_never_run_twice_at_once(&MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    slot_is_never_run_twice_at_once(&SqliteStore::open(dir.path().join("state.db")).unwrap());
}

struct Setup {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    dag: Arc<orchestrator::dag::Dag>,
}

fn setup(text: &str, store: Arc<dyn Store>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    let file = dir.path().join("dags/d.toml");
    std::fs::write(&file, text).unwrap();
    let dag = Arc::new(orchestrator::dag::load(&file).unwrap());
    Setup { dir, store, dag }
}

impl Setup {
    fn launcher(&self, token: &CancellationToken) -> Launcher {
        let mut settings = EngineSettings::new(self.dir.path().join("logs"));
        settings.kill_grace = Duration::from_millis(200);
        Launcher::new(Engine::new(self.store.clone(), settings), token.clone())
    }

    fn runs(&self, trigger: Trigger) -> Vec<RunRecord> {
        let mut runs: Vec<RunRecord> = self
            .store
            .runs(&RunFilter {
                trigger: Some(trigger),
                ..RunFilter::default()
            })
            .unwrap();
        runs.sort_by_key(|r| (r.logical_date, r.started_at));
        runs
    }
}

/// The largest number of runs whose [started, ended] overlap.
fn max_overlap(runs: &[RunRecord]) -> usize {
    let mut edges: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for r in runs {
        edges.push((r.started_at, 1));
        edges.push((r.ended_at.expect("finished"), -1));
    }
    edges.sort();
    let (mut now, mut max) = (0, 0);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

#[tokio::test]
async fn plan_then_run_oldest_first_within_the_limit() {
    let s = setup(&daily("d", "0.3"), Arc::new(MemoryStore::new()));
    // 2 March succeeded, 3 March failed before.
    for (at, state) in [
        ("2026-03-02T06:00:00Z", RunState::Success),
        ("2026-03-03T06:00:00Z", RunState::Failed),
    ] {
        let r = s
            .store
            .create_run(&new_run("d", at, Trigger::Scheduled))
            .unwrap();
        s.store.finish_run(&r.run_id, state, None).unwrap();
    }
    let (from, to) = (utc("2026-03-01T00:00:00Z"), utc("2026-03-06T23:59:59Z"));
    let actions = |r: Reprocess| -> Vec<Action> {
        backfill::plan(&s.dag, s.store.as_ref(), from, to, r)
            .unwrap()
            .iter()
            .map(|p| p.action)
            .collect()
    };
    use Action::*;
    assert_eq!(
        actions(Reprocess::None),
        [Run, SkipSucceeded, SkipFailed, Run, Run, Run]
    );
    assert_eq!(
        actions(Reprocess::Failed),
        [Run, SkipSucceeded, Rerun, Run, Run, Run]
    );
    assert_eq!(actions(Reprocess::All), [Run, Rerun, Rerun, Run, Run, Run]);
    let plan = backfill::plan(&s.dag, s.store.as_ref(), from, to, Reprocess::Failed).unwrap();
    assert_eq!(plan[0].logical_date, utc("2026-03-01T06:00:00Z"));
    assert_eq!(plan[0].data_interval_start, utc("2026-02-28T06:00:00Z"));
    assert_eq!(plan[2].existing.as_ref().unwrap().1, RunState::Failed);
    assert!(backfill::plan(&s.dag, s.store.as_ref(), to, from, Reprocess::None).is_err());

    let token = CancellationToken::new();
    let launcher = s.launcher(&token);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let report = {
        let seen = seen.clone();
        move |p: &backfill::Progress| seen.lock().unwrap().push(p.clone())
    };
    let done = backfill::execute(&launcher, s.dag.clone(), &plan, 2, &token, &report).await;
    assert!(done.finished && !done.cancel_requested);
    assert_eq!((done.succeeded, done.failed, done.skipped), (5, 0, 1));
    assert!(seen.lock().unwrap().iter().all(|p| p.running <= 2));
    let runs = s.runs(Trigger::Backfill);
    let dates: Vec<String> = runs
        .iter()
        .map(|r| r.logical_date.format("%d").to_string())
        .collect();
    assert_eq!(dates, ["01", "03", "04", "05", "06"]);
    assert!(runs.iter().all(|r| r.state == RunState::Success));
    assert!(runs.iter().all(|r| r.run_id.starts_with("backfill__")));
    assert!(max_overlap(&runs) <= 2, "at most 2 at once");
    // Oldest first: each run started no later than the next slot's.
    assert!(runs.windows(2).all(|w| w[0].started_at <= w[1].started_at));
}

#[tokio::test]
async fn cancelling_a_backfill_cancels_its_runs_and_starts_no_more() {
    let s = setup(&daily("d", "30"), Arc::new(MemoryStore::new()));
    let plan = backfill::plan(
        &s.dag,
        s.store.as_ref(),
        utc("2026-03-01T00:00:00Z"),
        utc("2026-03-05T23:00:00Z"),
        Reprocess::None,
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let launcher = s.launcher(&shutdown);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (launcher, dag, cancel) = (launcher.clone(), s.dag.clone(), cancel.clone());
        async move { backfill::execute(&launcher, dag, &plan, 2, &cancel, &|_| {}).await }
    });
    // Wait until both allowed runs are going, then cancel the whole backfill.
    velostream_testkit::wait_for_async(
        "both allowed runs to start",
        Duration::from_secs(20),
        || async { (launcher.active() >= 2).then_some(()) },
    )
    .await;
    cancel.cancel();
    let done = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the backfill stops")
        .unwrap();
    assert!(done.cancel_requested && done.finished);
    assert_eq!((done.succeeded, done.cancelled, done.failed), (0, 5, 0));
    let runs = s.runs(Trigger::Backfill);
    assert_eq!(runs.len(), 2, "no further slot started");
    for r in runs {
        assert_eq!(r.state, RunState::Failed);
        assert!(
            r.note
                .as_deref()
                .unwrap_or("")
                .contains("backfill was cancelled"),
            "{:?}",
            r.note
        );
    }
}

#[tokio::test]
async fn a_slot_never_runs_twice_at_once_beside_cron_and_a_second_backfill() {
    // Every 2 seconds, each run takes 0.5 s; cron fires the same slots the backfills run.
    let text = "[dag]\nid = \"d\"\nschedule = \"*/2 * * * * *\"\n\n[[task]]\nid = \"t\"\nkind = \"command\"\nshell = \"sleep 0.5\"\n";
    let s = setup(text, Arc::new(MemoryStore::new()));
    let token = CancellationToken::new();
    let now = Utc::now();
    let (from, to) = (
        now - chrono::Duration::seconds(6),
        now + chrono::Duration::seconds(6),
    );
    let folder = Arc::new(DagFolder::open(s.dir.path().join("dags")).unwrap());
    let cron = Arc::new(CronScheduler::new(
        folder,
        s.launcher(&token),
        CatchUp::Latest,
    ));
    let cron_task = tokio::spawn({
        let (cron, token) = (cron.clone(), token.clone());
        async move { cron.run(token).await }
    });
    let backfills: Vec<_> = (0..2)
        .map(|_| {
            let launcher = s.launcher(&token);
            let (dag, store) = (s.dag.clone(), s.store.clone());
            let cancel = CancellationToken::new();
            tokio::spawn(async move {
                // Both backfills plan before either starts, so both mean to run every slot.
                let plan = backfill::plan(&dag, store.as_ref(), from, to, Reprocess::All).unwrap();
                // Wait for the future slots to come due, so cron and backfills race on them.
                let mut refused = 0;
                for chunk in plan.chunks(1) {
                    let due = chunk[0].logical_date;
                    while Utc::now() < due {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let p =
                        backfill::execute(&launcher, dag.clone(), chunk, 4, &cancel, &|_| {}).await;
                    // With --reprocess all, a skip is a slot found running elsewhere.
                    refused += p.skipped;
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for b in backfills {
        refused += b.await.unwrap();
    }
    token.cancel();
    cron_task.await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let all = loop {
        let all = s.store.runs(&RunFilter::default()).unwrap();
        if all.iter().all(|r| r.state != RunState::Running) {
            break all;
        }
        assert!(std::time::Instant::now() < deadline, "runs still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut by_slot: BTreeMap<DateTime<Utc>, Vec<RunRecord>> = BTreeMap::new();
    for r in all {
        by_slot.entry(r.logical_date).or_default().push(r);
    }
    for (slot, runs) in &by_slot {
        assert_eq!(
            max_overlap(runs),
            1,
            "slot {slot} ran twice at once: {runs:#?}"
        );
    }
    assert!(by_slot.len() >= 6, "{} slots", by_slot.len());
    assert!(refused > 0, "no start was refused: the test proved nothing");
}

fn orchestrator(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(args)
        .current_dir(cwd)
        .env_remove("VELOSTREAM_STATE")
        .output()
        .unwrap()
}

#[test]
fn the_command_line_plans_runs_and_cancels_backfills() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[dag]\nid = \"paris\"\nschedule = \"0 9 * * 1-5\"\ntimezone = \"Europe/Paris\"\n\n[[task]]\nid = \"t\"\nkind = \"noop\"\n";
    std::fs::write(dir.path().join("paris.toml"), text).unwrap();
    let args = [
        "backfill",
        "paris.toml",
        "--from",
        "2026-03-26",
        "--to",
        "2026-03-31",
        "--max-active-runs",
        "2",
        "--no-progress",
    ];
    let out = orchestrator(&[&args[..], &["--dry-run"]].concat(), dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Thursday 26 to Tuesday 31 March: four weekdays, across the change to summer time.
    assert!(
        stdout.contains("Thu 2026-03-26 09:00:00 CET (+01:00)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Mon 2026-03-30 09:00:00 CEST (+02:00)  2026-03-30T07:00:00Z"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Dry run: 4 slot(s) of DAG paris"),
        "{stdout}"
    );
    assert!(stdout.contains("4 would run, 0 skipped"), "{stdout}");

    let out = orchestrator(&args, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "Backfill finished: 4 succeeded, 0 failed, 0 cancelled, 0 skipped of 4 slot(s)"
        ),
        "{stdout}"
    );
    let store = SqliteStore::open(dir.path().join(".velostream/state.db")).unwrap();
    let runs = store
        .runs(&RunFilter {
            trigger: Some(Trigger::Backfill),
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(runs.len(), 4);
    // Again: every slot already succeeded and is skipped.
    let out = orchestrator(&args, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 succeeded, 0 failed, 0 cancelled, 4 skipped"),
        "{stdout}"
    );

    // Ctrl-C cancels the whole backfill and its running run.
    let slow = "[dag]\nid = \"slow\"\nschedule = \"@daily\"\n\n[[task]]\nid = \"t\"\nkind = \"command\"\nshell = \"sleep 60\"\n";
    std::fs::write(dir.path().join("slow.toml"), slow).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args([
            "backfill",
            "slow.toml",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-03",
            "--no-progress",
        ])
        .current_dir(dir.path())
        .env_remove("VELOSTREAM_STATE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let running = store
            .runs(&RunFilter {
                dag_id: Some("slow".into()),
                state: Some(RunState::Running),
                ..RunFilter::default()
            })
            .unwrap();
        if !running.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backfill's run did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("Backfill cancelled: 0 succeeded, 0 failed, 3 cancelled"),
        "{stdout}"
    );
    let slow_runs = store
        .runs(&RunFilter {
            dag_id: Some("slow".into()),
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(slow_runs.len(), 1);
    assert_eq!(slow_runs[0].state, RunState::Failed);
}

#[tokio::test]
async fn the_api_and_the_dag_page_plan_start_show_and_cancel_backfills() {
    let env = Env::new(&[
        ("d.toml", &daily("d", "0.1")),
        ("slow.toml", &daily("slow", "60")),
    ]);
    let (status, page) = env.get("/dags/d").await;
    assert_eq!(status, axum::http::StatusCode::OK);
    assert!(
        page.contains("action=\"/api/dags/d/backfills\""),
        "the backfill form"
    );
    assert!(page.contains("Next fire times"), "the upcoming table");

    let (status, body) = env
        .post_json(
            "/api/dags/d/backfills",
            serde_json::json!({"from": "2026-03-01", "to": "2026-03-03", "dry_run": true}),
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::OK, "{body}");
    assert_eq!(body["slots"].as_array().unwrap().len(), 3);
    assert_eq!(body["slots"][0]["action"], "run");
    assert!(
        env.state
            .store()
            .runs(&RunFilter::default())
            .unwrap()
            .is_empty()
    );

    let (status, body) = env
        .post_json(
            "/api/dags/d/backfills",
            serde_json::json!({"from": "2026-03-01", "to": "2026-03-03", "max_active_runs": "2"}),
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::ACCEPTED, "{body}");
    let id = body["backfill_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = env.get_json("/api/dags/d/backfills").await;
        let p = &list["backfills"][0]["progress"];
        if p["finished"] == true {
            assert_eq!(p["succeeded"], 3, "{list}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs = env.get_json("/api/runs?trigger=backfill").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 3, "{runs}");
    assert!(
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["trigger"] == "backfill")
    );
    let newest = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|r| r["logical_date"].as_str().unwrap().to_owned())
        .unwrap();
    assert_eq!(
        newest["logical_date_local"],
        "Tue 2026-03-03 06:00:00 UTC (+00:00)"
    );
    assert_eq!(
        newest["data_interval"],
        serde_json::json!(["2026-03-02T06:00:00Z", "2026-03-03T06:00:00Z"])
    );
    assert_eq!(
        env.get_json("/api/runs?trigger=scheduled").await["runs"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (status, _) = env.get("/api/runs?trigger=nope").await;
    assert_eq!(status, axum::http::StatusCode::BAD_REQUEST);
    let (_, page) = env.get("/fragments/dags/d").await;
    assert!(
        page.contains(&id) && page.contains("3/3 done: 3 succeeded"),
        "{page}"
    );
    assert!(page.contains("backfill-runs"), "{page}");

    // A slow backfill is cancelled from the API: its run is cancelled too.
    let (status, body) = env
        .post_json(
            "/api/dags/slow/backfills",
            serde_json::json!({"from": "2026-03-01", "to": "2026-03-02"}),
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::ACCEPTED, "{body}");
    let slow = body["backfill_id"].as_str().unwrap().to_owned();
    velostream_testkit::wait_for_async(
        "the backfill's first run",
        Duration::from_secs(30),
        || async { (env.state.launcher().active() > 0).then_some(()) },
    )
    .await;
    let (status, body) = env
        .post_json(
            &format!("/api/backfills/{slow}/cancel"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::ACCEPTED, "{body}");
    loop {
        let list = env.get_json("/api/backfills").await;
        let b = list["backfills"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == slow.as_str())
            .unwrap()
            .clone();
        if b["progress"]["finished"] == true {
            assert_eq!(b["progress"]["cancelled"], 2, "{b}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = env
        .post_json("/api/backfills/nope/cancel", serde_json::json!({}))
        .await;
    assert_eq!(status, axum::http::StatusCode::NOT_FOUND);
    let next = env
        .get_json("/api/dags/d/next?count=2&after=2026-03-01T07:00:00Z")
        .await;
    assert_eq!(next["next"][0]["fire_at"], "2026-03-02T06:00:00Z", "{next}");
    assert_eq!(
        next["next"][0]["data_interval_start"],
        "2026-03-01T06:00:00Z"
    );
    env.shutdown.cancel();
}
