//! Schedules that mean what users write: the cron scheduler in a DAG's time zone on tokio's
//! paused clock across both daylight-saving changes (a skipped slot runs once at the change, a
//! repeated one once), `[dag] catchup` over the server's default, `orchestrator next` as printed
//! by the binary, load errors for zones, crontab fields and date helpers (file:line:column), and
//! the data-interval variables and helpers rendered in a real run, and the zone and next fire
//! times on the DAG pages and in the API.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orchestrator::cron::{CatchUp, CronScheduler, DagFolder, Launcher};
use orchestrator::scheduler::{Engine, EngineSettings};
use orchestrator::store::{
    MemoryStore, NewRun, RunFilter, RunState, Store, Trigger, current_owner,
};
use tokio_util::sync::CancellationToken;

mod web_common;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn dag(id: &str, dag_lines: &str) -> String {
    format!("[dag]\nid = \"{id}\"\n{dag_lines}\n\n[[task]]\nid = \"t\"\nkind = \"noop\"\n")
}

/// Runs a scheduler over `files` from `start` for `span` of paused time; returns each DAG's
/// scheduled logical dates, oldest first.
async fn schedule(
    files: &[(&str, String)],
    policy: CatchUp,
    store: Arc<MemoryStore>,
    start: &str,
    span: Duration,
) -> BTreeMap<String, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join("dags").join(name), text).unwrap();
    }
    let folder = Arc::new(DagFolder::open(dir.path().join("dags")).unwrap());
    let token = CancellationToken::new();
    let settings = EngineSettings::new(dir.path().join("logs"));
    let launcher = Launcher::new(Engine::new(store.clone(), settings), token.clone());
    let scheduler = Arc::new(
        CronScheduler::with_clock(
            folder,
            launcher,
            policy,
            CronScheduler::tokio_clock_from(utc(start)),
        )
        .with_poll(Duration::from_secs(600)),
    );
    let handle = tokio::spawn({
        let (s, token) = (scheduler.clone(), token.clone());
        async move { s.run(token).await }
    });
    tokio::time::sleep(span).await;
    token.cancel();
    handle.await.unwrap();
    // Runs record their end through a writer thread that paused time does not wait for.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let runs = loop {
        let runs = store.runs(&RunFilter::default()).unwrap();
        if runs.iter().all(|r| r.state != RunState::Running) {
            break runs;
        }
        assert!(std::time::Instant::now() < deadline, "runs still running");
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.trigger == Trigger::Scheduled) {
        assert_eq!(r.state, RunState::Success, "{r:?}");
        out.entry(r.dag_id.clone())
            .or_default()
            .push(r.logical_date.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn paris_dags() -> Vec<(&'static str, String)> {
    vec![
        (
            "daily.toml",
            dag(
                "daily",
                "schedule = \"30 2 * * *\"\ntimezone = \"Europe/Paris\"",
            ),
        ),
        (
            "half.toml",
            dag(
                "half",
                "schedule = \"*/30 * * * *\"\ntimezone = \"Europe/Paris\"",
            ),
        ),
    ]
}

#[tokio::test(start_paused = true)]
async fn spring_forward_runs_a_skipped_slot_once_at_the_change() {
    // Paris, 2026-03-29: at 02:00 CET (01:00 UTC) clocks jump to 03:00 CEST.
    let got = schedule(
        &paris_dags(),
        CatchUp::Latest,
        Arc::new(MemoryStore::new()),
        "2026-03-28T23:10:00Z",
        Duration::from_secs(2 * 3600 + 25 * 60),
    )
    .await;
    // 02:30 does not exist that night: it runs at the change.
    assert_eq!(got["daily"], ["2026-03-29T01:00:00Z"]);
    // 00:30, 01:00, 01:30 CET; 02:00 and 02:30 are skipped and make one run with 03:00 CEST.
    assert_eq!(
        got["half"],
        [
            "2026-03-28T23:30:00Z",
            "2026-03-29T00:00:00Z",
            "2026-03-29T00:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn fall_back_runs_a_repeated_slot_once() {
    // Paris, 2026-10-25: at 03:00 CEST (01:00 UTC) clocks go back to 02:00 CET.
    let got = schedule(
        &paris_dags(),
        CatchUp::Latest,
        Arc::new(MemoryStore::new()),
        "2026-10-24T23:10:00Z",
        Duration::from_secs(2 * 3600 + 55 * 60),
    )
    .await;
    // 02:30 happens twice: it runs the first time only.
    assert_eq!(got["daily"], ["2026-10-25T00:30:00Z"]);
    // 01:30, 02:00, 02:30 CEST, (02:00 and 02:30 CET again: not run), 03:00 CET.
    assert_eq!(
        got["half"],
        [
            "2026-10-24T23:30:00Z",
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T02:00:00Z"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn dag_catchup_overrides_the_servers_default() {
    // Both DAGs last ran on schedule an hour before the server starts.
    let seeded = || {
        let store = Arc::new(MemoryStore::new());
        for id in ["all", "latest"] {
            let run = store
                .create_run(&NewRun {
                    run_id: format!("scheduled__{id}"),
                    dag_id: id.into(),
                    dag_file: None,
                    trigger: Trigger::Scheduled,
                    logical_date: utc("2026-06-01T11:00:00Z"),
                    params: serde_json::Map::new(),
                    task_ids: vec!["t".into()],
                    owner: current_owner(),
                    max_active_runs: None,
                    started_at: utc("2026-06-01T11:00:00Z"),
                    dag_text: None,
                })
                .unwrap();
            store
                .finish_run(&run.run_id, RunState::Success, None)
                .unwrap();
        }
        store
    };
    let files = vec![
        (
            "all.toml",
            dag("all", "schedule = \"*/15 * * * *\"\ncatchup = true"),
        ),
        (
            "latest.toml",
            dag("latest", "schedule = \"*/15 * * * *\"\ncatchup = false"),
        ),
    ];
    // The server says "latest only" and then "all"; each DAG's own setting wins both times.
    for policy in [CatchUp::Latest, CatchUp::All] {
        let got = schedule(
            &files,
            policy,
            seeded(),
            "2026-06-01T12:05:00Z",
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(
            got["all"][1..],
            [
                "2026-06-01T11:15:00Z",
                "2026-06-01T11:30:00Z",
                "2026-06-01T11:45:00Z",
                "2026-06-01T12:00:00Z"
            ],
            "{policy:?}"
        );
        assert_eq!(got["latest"][1..], ["2026-06-01T12:00:00Z"], "{policy:?}");
    }
}

fn orchestrator(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(args)
        .current_dir(cwd)
        .env_remove("VELOSTREAM_STATE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn next_prints_fire_times_with_intervals_in_the_dags_zone_and_utc() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("weekdays.toml"),
        dag(
            "weekdays",
            "schedule = \"0 9 * * 1-5\"\ntimezone = \"Europe/Paris\"",
        ),
    )
    .unwrap();
    let (ok, out, err) = orchestrator(
        &[
            "next",
            "weekdays.toml",
            "--count",
            "3",
            "--after",
            "2026-03-26T12:00:00Z",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "DAG weekdays: schedule \"0 9 * * 1-5\" in Europe/Paris, after Thu 2026-03-26 13:00:00 CET (+01:00) (2026-03-26T12:00:00Z)"
    );
    assert!(lines[1].starts_with("#  FIRES AT (Europe/Paris)"), "{out}");
    assert!(
        lines[2].contains("Fri 2026-03-27 09:00:00 CET (+01:00)"),
        "{out}"
    );
    assert!(lines[2].contains("2026-03-27T08:00:00Z"), "{out}");
    assert!(
        lines[2].contains("[2026-03-26 09:00 CET, 2026-03-27 09:00 CET)"),
        "{out}"
    );
    assert!(
        lines[3].contains("Mon 2026-03-30 09:00:00 CEST (+02:00)"),
        "{out}"
    );
    assert!(lines[3].contains("2026-03-30T07:00:00Z"), "{out}");
    assert!(
        lines[3].contains("[2026-03-27 09:00 CET, 2026-03-30 09:00 CEST)"),
        "{out}"
    );
    assert!(lines[4].contains("Tue 2026-03-31 09:00:00 CEST"), "{out}");
    assert_eq!(lines.len(), 5, "{out}");

    std::fs::write(dir.path().join("manual.toml"), dag("manual", "")).unwrap();
    let (ok, _, err) = orchestrator(&["next", "manual.toml"], dir.path());
    assert!(!ok);
    assert!(err.contains("has no schedule"), "{err}");
}

#[test]
fn zones_crontab_fields_and_helpers_are_checked_at_load_with_file_line_column() {
    let text = "[dag]\nid = \"bad\"\nschedule = \"0 9 * * 8\"\ntimezone = \"Europe/Pariss\"\n\n[[task]]\nid = \"t\"\nkind = \"command\"\nshell = \"echo {{ yyyymm(ds) }} {{ fromat(logical_date, \\\"%Y\\\") }}\"\n";
    let e = orchestrator::dag::parse_str(text, "dags/bad.toml").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("dags/bad.toml:3:12")
            && msg.contains("day-of-week field \"8\": 8 is out of range 0-7 (0 and 7 are Sunday)"),
        "{msg}"
    );
    assert!(
        msg.contains("dags/bad.toml:4:12")
            && msg.contains("unknown time zone \"Europe/Pariss\"; did you mean \"Europe/Paris\""),
        "{msg}"
    );
    assert!(msg.contains("`ds` is not a date"), "{msg}");
    assert!(msg.contains("unknown helper `fromat(...)`"), "{msg}");
    assert!(msg.contains("dags/bad.toml:9:"), "{msg}");
    // `catchup` must be a boolean.
    let e = orchestrator::dag::parse_str(
        &dag("c", "schedule = \"@daily\"\ncatchup = \"yes\""),
        "c.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("c.toml:4:"), "{e}");
}

#[test]
fn a_run_renders_its_data_interval_and_date_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[dag]
id = "monthly"
schedule = "0 0 1 * *"
timezone = "Europe/Paris"

[[task]]
id = "show"
kind = "command"
shell = "printf '%s\n' '{{ data_interval_start }}' '{{ data_interval_end }}' '{{ prev_ds }}' '{{ next_ds }}' '{{ yyyymm(data_interval_start) }}' '{{ format(data_interval_start, \"%Y-%m-%d %H:%M:%S\") }}' '{{ date(add_days(data_interval_end, -1)) }}' '{{ unix(data_interval_start) }}' > out.txt"
"#;
    std::fs::write(dir.path().join("monthly.toml"), text).unwrap();
    // A manual run on 15 March covers the last complete month: February, in Paris.
    let (ok, out, err) = orchestrator(
        &[
            "run",
            "monthly.toml",
            "--no-progress",
            "--logical-date",
            "2026-03-15T10:00:00Z",
        ],
        dir.path(),
    );
    assert!(ok, "{out}\n{err}");
    let got = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        [
            "2026-01-31T23:00:00Z",
            "2026-02-28T23:00:00Z",
            "2026-01-31",
            "2026-03-31",
            "202602",
            "2026-02-01 00:00:00",
            "2026-02-28",
            "1769900400"
        ]
    );
}

#[tokio::test]
async fn the_ui_and_api_show_the_dags_zone_and_its_next_fire_times() {
    let env = web_common::Env::new(&[(
        "paris.toml",
        &dag(
            "paris",
            "schedule = \"0 9 * * 1-5\"\ntimezone = \"Europe/Paris\"",
        ),
    )]);
    let info = env.get_json("/api/dags/paris").await;
    assert_eq!(info["timezone"], "Europe/Paris");
    let upcoming = info["upcoming"].as_array().unwrap();
    assert_eq!(upcoming.len(), 5, "{info}");
    for u in upcoming {
        let at: DateTime<Utc> = u["fire_at"].as_str().unwrap().parse().unwrap();
        let local = u["fire_at_local"].as_str().unwrap();
        assert!(local.contains(" 09:00:00 CE"), "{local}");
        assert!(
            !local.starts_with("Sat") && !local.starts_with("Sun"),
            "{local}"
        );
        assert!(at > Utc::now());
        assert_eq!(u["data_interval_end"], u["fire_at"]);
    }
    let next = env
        .get_json("/api/dags/paris/next?count=2&after=2026-03-27T12:00:00Z")
        .await;
    assert_eq!(next["next"][0]["fire_at"], "2026-03-30T07:00:00Z", "{next}");
    assert_eq!(
        next["next"][0]["data_interval_start"],
        "2026-03-27T08:00:00Z"
    );
    let (_, page) = env.get("/dags/paris").await;
    assert!(
        page.contains("<dd class=\"timezone\">Europe/Paris</dd>"),
        "{page}"
    );
    assert!(page.contains("Fires at (Europe/Paris)"), "{page}");
    let (_, list) = env.get("/fragments/dags").await;
    assert!(list.contains("Europe/Paris"), "{list}");
}
