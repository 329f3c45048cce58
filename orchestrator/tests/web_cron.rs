//! The cron scheduler of `orchestrator serve`: fast schedules on tokio's paused clock (every
//! slot fires once; max_active_runs holds slots back and the newest wins; pauses drop slots), the
//! catch-up policy after downtime (latest only, or every slot with --catchup), a real-time
//! schedule through the running server, and the `pause`/`unpause`/`serve` command lines.

mod web_common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orchestrator::cron::{CatchUp, CronScheduler, DagFolder, Launcher};
use orchestrator::scheduler::{Engine, EngineSettings};
use orchestrator::store::{
    MemoryStore, NewRun, RunFilter, RunRecord, RunState, Store, Trigger, current_owner,
};
use tokio_util::sync::CancellationToken;

struct Cron {
    _dir: tempfile::TempDir,
    store: Arc<MemoryStore>,
    scheduler: Arc<CronScheduler>,
    token: CancellationToken,
}

/// A scheduler over one DAG file on tokio's clock.
fn cron(dag: &str, policy: CatchUp, store: Arc<MemoryStore>) -> Cron {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    std::fs::write(dir.path().join("dags/d.toml"), dag).unwrap();
    let folder = Arc::new(DagFolder::open(dir.path().join("dags")).unwrap());
    let mut settings = EngineSettings::new(dir.path().join("logs"));
    settings.kill_grace = Duration::from_millis(200);
    let token = CancellationToken::new();
    let launcher = Launcher::new(Engine::new(store.clone(), settings), token.clone());
    let scheduler = Arc::new(CronScheduler::with_clock(
        folder,
        launcher,
        policy,
        CronScheduler::tokio_clock(),
    ));
    Cron {
        _dir: dir,
        store,
        scheduler,
        token,
    }
}

impl Cron {
    /// Runs the scheduler for `d` of (virtual) time.
    async fn run_for(&self, d: Duration) {
        let s = self.scheduler.clone();
        let token = self.token.child_token();
        let handle = tokio::spawn({
            let token = token.clone();
            async move { s.run(token).await }
        });
        tokio::time::sleep(d).await;
        token.cancel();
        handle.await.unwrap();
    }

    /// Waits (up to 10 s of real time, without moving tokio's clock) until no run is running:
    /// runs record their states through a writer thread that paused time does not wait for.
    async fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let running = self.store.runs(&RunFilter {
                state: Some(RunState::Running),
                ..RunFilter::default()
            });
            if running.unwrap().is_empty() {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "runs still running");
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Scheduled runs, oldest slot first.
    fn scheduled(&self) -> Vec<RunRecord> {
        let mut runs: Vec<RunRecord> = self
            .store
            .runs(&RunFilter::default())
            .unwrap()
            .into_iter()
            .filter(|r| r.trigger == Trigger::Scheduled)
            .collect();
        runs.sort_by_key(|r| r.logical_date);
        runs
    }
}

fn every_second(extra: &str) -> String {
    format!(
        "[dag]\nid = \"fast\"\nschedule = \"*/1 * * * * *\"\n{extra}\n\n[[task]]\nid = \"t\"\nkind = \"noop\"\n"
    )
}

fn whole_seconds(runs: &[RunRecord]) -> Vec<i64> {
    runs.iter().map(|r| r.logical_date.timestamp()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_fast_schedule_fires_every_slot_once() {
    let c = cron(
        &every_second(""),
        CatchUp::Latest,
        Arc::new(MemoryStore::new()),
    );
    c.run_for(Duration::from_millis(5_500)).await;
    c.settle().await;
    let runs = c.scheduled();
    assert!((5..=6).contains(&runs.len()), "{} runs", runs.len());
    let secs = whole_seconds(&runs);
    assert!(
        secs.windows(2).all(|w| w[1] == w[0] + 1),
        "one run per second: {secs:?}"
    );
    for r in &runs {
        assert_eq!(
            r.logical_date.timestamp_subsec_millis(),
            0,
            "logical date is the slot"
        );
        assert!(r.run_id.starts_with("scheduled__"), "{}", r.run_id);
        assert_eq!(r.state, RunState::Success);
    }
}

/// Real time: how long runs take matters here, and the runs' store writer thread does not follow
/// tokio's paused clock.
#[tokio::test(flavor = "multi_thread")]
async fn max_active_runs_holds_slots_back_and_only_the_newest_runs() {
    let dag = "[dag]\nid = \"slow\"\nschedule = \"*/1 * * * * *\"\nmax_active_runs = 1\n\n[[task]]\nid = \"t\"\nkind = \"sleep\"\nduration = \"2500ms\"\n";
    let c = Arc::new(cron(dag, CatchUp::Latest, Arc::new(MemoryStore::new())));
    // Watch the store while the scheduler runs: never two runs at once.
    let watcher = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..75 {
                let running = c
                    .store
                    .runs(&RunFilter {
                        state: Some(RunState::Running),
                        ..RunFilter::default()
                    })
                    .unwrap()
                    .len();
                most = most.max(running);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            most
        })
    };
    c.run_for(Duration::from_millis(7_500)).await;
    assert_eq!(watcher.await.unwrap(), 1, "at most one run at a time");
    let runs = c.scheduled();
    let secs = whole_seconds(&runs);
    // 7 slots pass; each run takes 2.5 s, so 2 or 3 run and the slots in between are skipped.
    assert!((2..=3).contains(&runs.len()), "{secs:?}");
    assert!(secs.windows(2).all(|w| w[1] > w[0]), "{secs:?}");
    assert!(
        secs.windows(2).any(|w| w[1] - w[0] >= 2),
        "held-back slots coalesce: {secs:?}"
    );
}

/// A store whose DAG `id` last ran on schedule at `at`.
fn store_with_last_run(id: &str, at: DateTime<Utc>) -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    let run = store
        .create_run(&NewRun {
            run_id: "scheduled__before".into(),
            dag_id: id.into(),
            dag_file: None,
            trigger: Trigger::Scheduled,
            logical_date: at,
            params: Default::default(),
            task_ids: vec!["t".into()],
            owner: current_owner(),
            max_active_runs: None,
            started_at: at,
            dag_text: None,
        })
        .unwrap();
    store
        .finish_run(&run.run_id, RunState::Success, None)
        .unwrap();
    store
}

/// One second after the minute ten minutes ago: ten minute slots have passed since.
fn ten_minutes_ago() -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    DateTime::from_timestamp(now - now % 60 - 600 + 1, 0).unwrap()
}

const EVERY_MINUTE: &str =
    "[dag]\nid = \"minutely\"\nschedule = \"* * * * *\"\n\n[[task]]\nid = \"t\"\nkind = \"noop\"\n";

#[tokio::test(start_paused = true)]
async fn after_downtime_only_the_latest_missed_slot_runs_by_default() {
    let down_since = ten_minutes_ago();
    let c = cron(
        EVERY_MINUTE,
        CatchUp::Latest,
        store_with_last_run("minutely", down_since),
    );
    c.run_for(Duration::from_millis(500)).await;
    let new: Vec<RunRecord> = c
        .scheduled()
        .into_iter()
        .filter(|r| r.run_id != "scheduled__before")
        .collect();
    assert_eq!(new.len(), 1, "one catch-up run, not ten");
    let now = Utc::now();
    let slot = new[0].logical_date;
    assert_eq!(slot.timestamp() % 60, 0);
    assert!(
        slot <= now && now - slot < chrono::Duration::seconds(61),
        "the latest slot: {slot}"
    );
}

#[tokio::test(start_paused = true)]
async fn with_catchup_every_missed_slot_runs_in_order() {
    let down_since = ten_minutes_ago();
    let c = cron(
        EVERY_MINUTE,
        CatchUp::All,
        store_with_last_run("minutely", down_since),
    );
    c.run_for(Duration::from_millis(500)).await;
    let new: Vec<RunRecord> = c
        .scheduled()
        .into_iter()
        .filter(|r| r.run_id != "scheduled__before")
        .collect();
    // 10 missed minutes, 11 if the clock crossed a minute during the test.
    assert!(
        (10..=11).contains(&new.len()),
        "every missed minute: {}",
        new.len()
    );
    let mins: Vec<i64> = new
        .iter()
        .map(|r| r.logical_date.timestamp() / 60)
        .collect();
    assert!(mins.windows(2).all(|w| w[1] == w[0] + 1), "{mins:?}");
    assert!(new[0].logical_date > down_since);
    // Started oldest first.
    assert!(new.windows(2).all(|w| w[0].started_at <= w[1].started_at));
}

#[tokio::test(start_paused = true)]
async fn a_paused_dag_does_not_run_and_unpausing_does_not_replay() {
    let store = Arc::new(MemoryStore::new());
    store.set_paused("fast", true).unwrap();
    let c = cron(&every_second(""), CatchUp::All, store);
    c.run_for(Duration::from_millis(3_500)).await;
    assert!(c.scheduled().is_empty());
    let published = c.scheduler.schedules();
    assert!(published["fast"].paused);
    assert_eq!(published["fast"].next_run, None);
    let unpaused_at = CronScheduler::tokio_clock()();
    c.store.set_paused("fast", false).unwrap();
    c.run_for(Duration::from_millis(2_500)).await;
    let runs = c.scheduled();
    assert!((2..=3).contains(&runs.len()), "{:?}", whole_seconds(&runs));
    assert!(
        runs.iter()
            .all(|r| r.logical_date + chrono::Duration::seconds(1) >= unpaused_at),
        "no slot from the paused time ran"
    );
    assert!(c.scheduler.schedules()["fast"].next_run.is_some());
}

// ---- Real time, through the server ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_server_fires_a_fast_schedule_and_stops_when_paused() {
    let env = web_common::Env::new(&[("fast.toml", &every_second("max_active_runs = 1"))]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(orchestrator::web::serve_on(
        listener,
        env.state.clone(),
        true,
        Duration::from_millis(500),
    ));
    let http = reqwest::Client::new();
    let scheduled = || async {
        let v: serde_json::Value = http
            .get(format!("{base}/api/runs?dag=fast&limit=1000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["trigger"] == "scheduled")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while scheduled().await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule did not fire 3 times in 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dag: serde_json::Value = http
        .get(format!("{base}/api/dags/fast"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(dag["next_run"].is_string(), "{dag}");
    // Pause through the API, as the UI's toggle does.
    let paused = http
        .post(format!("{base}/api/dags/fast/pause"))
        .header("x-csrf-token", env.csrf())
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    // Wait until the scheduler has seen the pause (a tick published it), then until it has let
    // two slots go by while paused: no run may appear meanwhile.
    let dag_state = || async {
        let v: serde_json::Value = http
            .get(format!("{base}/api/dags/fast"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v
    };
    let skipped = velostream_testkit::wait_for_async(
        "the scheduler to see the pause",
        Duration::from_secs(15),
        || async {
            let v = dag_state().await;
            (v["paused"] == true && v["skipped_while_paused"].is_u64())
                .then(|| v["skipped_while_paused"].as_u64().unwrap_or(0))
        },
    )
    .await;
    let after_pause = scheduled().await;
    velostream_testkit::wait_for_async(
        "two slots to pass while paused",
        Duration::from_secs(15),
        || async {
            let v = dag_state().await;
            (v["skipped_while_paused"].as_u64().unwrap_or(0) >= skipped + 2).then_some(())
        },
    )
    .await;
    assert_eq!(
        scheduled().await,
        after_pause,
        "no scheduled runs while paused"
    );
    env.shutdown.cancel();
    server.await.unwrap().unwrap();
    let store = env.state.store();
    assert!(
        store
            .runs(&RunFilter {
                state: Some(RunState::Running),
                ..RunFilter::default()
            })
            .unwrap()
            .is_empty(),
        "shutdown drained every run"
    );
}

// ---- The command line -------------------------------------------------------------------------

#[test]
fn pause_and_unpause_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let orchestrator = env!("CARGO_BIN_EXE_orchestrator");
    let out = std::process::Command::new(orchestrator)
        .arg("--state")
        .arg(&db)
        .args(["pause", "hello"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("DAG hello paused"));
    let store = orchestrator::store::SqliteStore::open(&db).unwrap();
    assert!(store.paused_dags().unwrap().contains("hello"));
    let out = std::process::Command::new(orchestrator)
        .arg("--state")
        .arg(&db)
        .args(["unpause", "hello"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(store.paused_dags().unwrap().is_empty());
}

#[test]
fn serve_refuses_a_public_bind_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .args(["serve", "--bind", "0.0.0.0:0", "--dags"])
        .arg(dir.path())
        .env_remove("VELOSTREAM_UI_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve 0.0.0.0:0 without a token"),
        "{err}"
    );
}
