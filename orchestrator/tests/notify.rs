//! Operating runs, against a real local webhook receiver: `[[dag.notify]]` (load errors with
//! positions, the JSON and Slack messages, which events reach which target, `recovered`, retries
//! of a delivery with backoff and giving up, every outcome in the store), `[dag] run_timeout`
//! (the run cancelled, its processes gone, the note saying why) and `[dag] deadline` (reported
//! once, the run goes on), and `orchestrator run` waiting for its deliveries before it exits.

mod common;
mod receiver;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use orchestrator::dag::parse_str_with_env;
use orchestrator::events::EventSink;
use orchestrator::notify::NotifySettings;
use orchestrator::scheduler::{Engine, EngineSettings, RunOutcome, RunRequest};
use orchestrator::store::{
    DeliveryState, NotificationRecord, RunState, SqliteStore, Store, Trigger,
};
use receiver::Receiver;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const PUBLIC_URL: &str = "http://velostream.example:8080/ui";

/// An engine on a SQLite state in `dir`, delivering fast (50 ms first backoff, 3 attempts,
/// 2 s per attempt) and linking to [`PUBLIC_URL`].
fn engine(dir: &Path) -> (Engine, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open(dir.join("state.db")).unwrap());
    let mut settings = EngineSettings::new(dir.join("logs"));
    settings.kill_grace = Duration::from_millis(500);
    settings.notify = NotifySettings {
        attempts: 3,
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        ..NotifySettings::default()
    }
    .with_public_url(Some(PUBLIC_URL.parse().unwrap()));
    (Engine::new(store.clone(), settings), store)
}

async fn run(engine: &Engine, text: &str, request: RunRequest) -> RunOutcome {
    engine
        .run(
            common::dag(text),
            request,
            EventSink::none(),
            &CancellationToken::new(),
        )
        .await
        .unwrap()
}

/// Waits for every delivery in flight, then returns the run's delivery records.
async fn delivered(engine: &Engine, store: &dyn Store, run_id: &str) -> Vec<NotificationRecord> {
    assert!(
        engine.notifier().drain(Duration::from_secs(30)).await,
        "deliveries did not end in 30 s"
    );
    store.notifications(run_id).unwrap()
}

#[test]
fn bad_notify_entries_and_durations_are_load_errors_with_positions() {
    let text = r#"[dag]
id = "d"
run_timeout = "soon"
deadline = "0s"

[[dag.notify]]
on = ["failed", "success", "deadline"]
url = "ftp://example.com/hook"

[[dag.notify]]
on = []
url = "${HOOK_URL}"
format = "xml"

[[task]]
id = "a"
kind = "noop"
"#;
    let err = parse_str_with_env(text, "d.toml", &|_| None)
        .unwrap_err()
        .to_string();
    let expected = [
        r#"d.toml:3:15: run_timeout "soon" is not a duration"#,
        "d.toml:4:12: deadline must be longer than 0s",
        "d.toml:7:7: unknown notify event `failed` (did you mean `failure`?); `on` takes `failure`, `success`, `retry`, `deadline_miss`, `recovered`",
        "d.toml:7:28: unknown notify event `deadline` (did you mean `deadline_miss`?)",
        r#"d.toml:8:7: notify url "ftp://example.com/hook" has scheme `ftp`; webhooks are http or https"#,
        "d.toml:11:6: `on` lists no events",
        "d.toml:12:7: notify url: environment variable HOOK_URL is not set",
        "d.toml:13:10: unknown notify format `xml`; use `json` (the default) or `slack`",
    ];
    for e in expected {
        assert!(err.contains(e), "missing {e:?} in:\n{err}");
    }

    let bounds = "[dag]\nid = \"d\"\nrun_timeout = \"1m\"\ndeadline = \"2m\"\n[[task]]\nid = \"a\"\nkind = \"noop\"\n";
    let err = parse_str_with_env(bounds, "d.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("d.toml:4:12: deadline (2m) is not before run_timeout (1m)"),
        "{err}"
    );

    let good = "[dag]\nid = \"d\"\nrun_timeout = \"2h\"\ndeadline = \"45m\"\n[[dag.notify]]\non = [\"failure\", \"recovered\", \"failure\"]\nurl = \"${HOOK:-https://hooks.slack.com/services/T0/B0/secret}\"\nformat = \"slack\"\n[[task]]\nid = \"a\"\nkind = \"noop\"\n";
    let dag = parse_str_with_env(good, "d.toml", &|_| None).unwrap();
    let rules = &dag.run_rules;
    assert_eq!(rules.run_timeout, Some(Duration::from_secs(7200)));
    assert_eq!(rules.deadline, Some(Duration::from_secs(2700)));
    assert_eq!(rules.notify.len(), 1);
    assert_eq!(
        rules.notify[0]
            .on
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>(),
        ["failure", "recovered"]
    );
    assert_eq!(rules.notify[0].redacted_url(), "https://hooks.slack.com/…");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_posts_its_failed_task_error_and_log_tail_with_a_link() {
    let hooks = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path());
    let text = format!(
        r#"[dag]
id = "nightly"

[[dag.notify]]
on = ["failure", "success"]
url = "{}"

[[task]]
id = "produce"
kind = "command"
shell = "echo produced 40000000 rows"

[[task]]
id = "count"
kind = "command"
depends_on = ["produce"]
shell = "echo checking the count; echo 'expected 40000000 rows, found 39999000' >&2; exit 3"

[[task]]
id = "report"
kind = "command"
depends_on = ["count"]
shell = "echo never"
"#,
        hooks.url("ops")
    );
    let outcome = run(&engine, &text, RunRequest::default()).await;
    assert_eq!(outcome.state, RunState::Failed);

    let got = hooks.wait_for("ops", 1).await;
    let m = &got[0];
    println!(
        "The webhook received:\n{}",
        serde_json::to_string_pretty(&m.body).unwrap()
    );
    assert_eq!(m.content_type, "application/json");
    let b = &m.body;
    assert_eq!(b["event"], "failure");
    assert_eq!(b["dag_id"], "nightly");
    assert_eq!(b["run_id"], outcome.run_id.as_str());
    assert_eq!(b["state"], "failed");
    assert_eq!(b["trigger"], "manual");
    assert_eq!(
        b["url"].as_str().unwrap(),
        format!("{PUBLIC_URL}/runs/{}", outcome.run_id)
    );
    let failed = b["failed_tasks"].as_array().unwrap();
    assert_eq!(
        failed.len(),
        1,
        "only count failed (report is upstream_failed): {b:#}"
    );
    let t = &failed[0];
    assert_eq!(t["task_id"], "count");
    assert_eq!(t["state"], "failed");
    assert_eq!(t["try_number"], 1);
    let error = t["error"].as_str().unwrap();
    assert!(
        error.contains("expected 40000000 rows, found 39999000"),
        "{error}"
    );
    let tail: Vec<&str> = t["log_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        tail.iter().any(|l| l.contains("checking the count")),
        "{tail:?}"
    );
    assert!(
        t["log_url"]
            .as_str()
            .unwrap()
            .ends_with("/tasks/count/log?try=1"),
        "{t:#}"
    );
    assert!(
        b["summary"]
            .as_str()
            .unwrap()
            .contains(": task count failed: "),
        "{b:#}"
    );

    let records = delivered(&engine, store.as_ref(), &outcome.run_id).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(
        (r.event.as_str(), r.state, r.attempts, r.detail.as_deref()),
        ("failure", DeliveryState::Delivered, 1, Some("HTTP 200 OK"))
    );
    assert_eq!(r.target, format!("{}/…", hooks.base()));
    assert_eq!(r.format, "json");
    assert_eq!(
        hooks.received_by("ops").len(),
        1,
        "success is not sent for a failed run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_are_retried_with_backoff_and_give_up_with_why_without_holding_the_run() {
    let hooks = Receiver::start().await;
    hooks.answer("flaky", &[500, 503]);
    hooks.answer("gone", &[404]);
    hooks.answer("slow", &[0, 0, 0]);
    // A port nobody listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path());
    let mut settings = engine.settings().clone();
    settings.notify.request_timeout = Duration::from_millis(300);
    let engine = Engine::new(store.clone(), settings);
    let text = format!(
        r#"[dag]
id = "d"

[[dag.notify]]
on = ["success"]
url = "{}"

[[dag.notify]]
on = ["success"]
url = "{}"

[[dag.notify]]
on = ["success"]
url = "{}"

[[dag.notify]]
on = ["success"]
url = "{closed_url}"

[[task]]
id = "a"
kind = "noop"
"#,
        hooks.url("flaky"),
        hooks.url("gone"),
        hooks.url("slow"),
    );
    let outcome = run(&engine, &text, RunRequest::default()).await;
    // The run ended while its deliveries go on: they never hold it up.
    assert_eq!(outcome.state, RunState::Success);
    assert!(engine.notifier().in_flight() > 0);

    let records = delivered(&engine, store.as_ref(), &outcome.run_id).await;
    let by_index = |i: u32| records.iter().find(|r| r.target_index == i).unwrap();
    let flaky = by_index(1);
    assert_eq!(flaky.state, DeliveryState::Delivered, "{flaky:#?}");
    assert_eq!(flaky.attempts, 3);
    assert_eq!(
        flaky.detail.as_deref(),
        Some("HTTP 200 OK; the attempt before: HTTP 503 Service Unavailable")
    );
    assert_eq!(hooks.received_by("flaky").len(), 3);

    let gone = by_index(2);
    assert_eq!(gone.state, DeliveryState::GaveUp);
    assert_eq!(gone.attempts, 1);
    assert_eq!(
        gone.detail.as_deref(),
        Some("HTTP 404 Not Found; not retried: the receiver refused it")
    );

    let slow = by_index(3);
    assert_eq!(slow.state, DeliveryState::GaveUp);
    assert_eq!(slow.attempts, 3);
    assert_eq!(
        slow.detail.as_deref(),
        Some("timed out; gave up after 3 attempt(s)")
    );

    let refused = by_index(4);
    assert_eq!(refused.state, DeliveryState::GaveUp);
    assert_eq!(refused.attempts, 3);
    let detail = refused.detail.as_deref().unwrap();
    assert!(
        detail.contains("Connection refused") && detail.ends_with("gave up after 3 attempt(s)"),
        "{detail}"
    );
    assert!(
        !detail.contains("127.0.0.1"),
        "the URL is left out: {detail}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recovered_follows_a_failed_run_and_slack_messages_are_slack_shaped() {
    let hooks = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path());
    let text = format!(
        r#"[dag]
id = "d"

[dag.params]
fail = false

[[dag.notify]]
on = ["recovered", "success"]
url = "{}"
format = "slack"

[[dag.notify]]
on = ["success"]
url = "{}"

[[dag.notify]]
on = ["failure"]
url = "{}"
format = "slack"

[[task]]
id = "check"
kind = "command"
shell = "echo 'row count <mismatch> & more'; test {{{{ params.fail }}}} = false"
"#,
        hooks.url("recovered"),
        hooks.url("success"),
        hooks.url("failure"),
    );
    let with_fail = |fail: bool| RunRequest {
        params: [("fail".to_owned(), fail.to_string())].into(),
        ..RunRequest::default()
    };
    let first = run(&engine, &text, with_fail(false)).await;
    let failed = run(&engine, &text, with_fail(true)).await;
    let recovered = run(&engine, &text, with_fail(false)).await;
    let again = run(&engine, &text, with_fail(false)).await;
    assert_eq!(
        [first.state, failed.state, recovered.state, again.state],
        [
            RunState::Success,
            RunState::Failed,
            RunState::Success,
            RunState::Success
        ]
    );

    let got = hooks.wait_for("recovered", 3).await;
    let kinds: Vec<(&str, bool)> = got
        .iter()
        .map(|r| {
            let text = r.body["text"].as_str().unwrap();
            let run = [&first, &recovered, &again]
                .into_iter()
                .find(|o| text.contains(&o.run_id))
                .map(|o| o.run_id.as_str())
                .unwrap();
            (run, text.contains("the previous run"))
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (first.run_id.as_str(), false),
            (recovered.run_id.as_str(), true),
            (again.run_id.as_str(), false)
        ],
        "one message per success, `recovered` only after the failed run: {got:#?}"
    );
    let slack = &got[1].body;
    let text = slack["text"].as_str().unwrap();
    assert!(text.starts_with(":white_check_mark: DAG d run "), "{text}");
    assert!(
        text.contains(&format!("the previous run {} had failed", failed.run_id)),
        "{text}"
    );
    assert!(text.contains("|Open the run>"), "{text}");
    assert_eq!(slack["blocks"][0]["type"], "section");

    let failure = &hooks.wait_for("failure", 1).await[0].body;
    let blocks = failure["blocks"].as_array().unwrap();
    assert!(
        failure["text"]
            .as_str()
            .unwrap()
            .starts_with(":x: DAG d run ")
    );
    let task_block = blocks[1]["text"]["text"].as_str().unwrap();
    assert!(
        task_block.starts_with("*Task `check`* (failed, try 1)"),
        "{task_block}"
    );
    assert!(
        task_block.contains("row count &lt;mismatch&gt; &amp; more"),
        "log lines are escaped for mrkdwn: {task_block}"
    );
    assert_eq!(blocks.last().unwrap()["type"], "context");

    assert_eq!(hooks.wait_for("success", 3).await.len(), 3);
    let records = delivered(&engine, store.as_ref(), &recovered.run_id).await;
    let events: Vec<(&str, u32)> = records
        .iter()
        .map(|r| (r.event.as_str(), r.target_index))
        .collect();
    assert_eq!(events.len(), 2);
    assert!(
        events.contains(&("recovered", 1)) && events.contains(&("success", 2)),
        "{events:?}"
    );
    assert_eq!(hooks.received_by("failure").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_is_notified_before_the_failure() {
    let hooks = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (engine, _store) = engine(dir.path());
    let text = format!(
        r#"[dag]
id = "d"

[[dag.notify]]
on = ["retry", "failure"]
url = "{}"

[[task]]
id = "flaky"
kind = "command"
shell = "echo 'try {{{{ try_number }}}}' >&2; exit 1"
retries = 1
retry_delay = "100ms"
"#,
        hooks.url("ops")
    );
    let outcome = run(&engine, &text, RunRequest::default()).await;
    assert_eq!(outcome.state, RunState::Failed);
    let got = hooks.wait_for("ops", 2).await;
    let retry = got.iter().find(|r| r.body["event"] == "retry").unwrap();
    let b = &retry.body;
    assert_eq!(b["state"], "running");
    assert_eq!(b["retry"]["task_id"], "flaky");
    assert_eq!(b["retry"]["try_number"], 1);
    assert_eq!(b["retry"]["max_tries"], 2);
    assert_eq!(b["failed_tasks"][0]["state"], "up_for_retry");
    assert_eq!(b["failed_tasks"][0]["log_tail"][0], "try 1");
    assert!(
        b["summary"]
            .as_str()
            .unwrap()
            .contains("task flaky failed try 1 of 2, retrying in 100ms"),
        "{b:#}"
    );
    let failure = got.iter().find(|r| r.body["event"] == "failure").unwrap();
    assert_eq!(failure.body["failed_tasks"][0]["try_number"], 2);
    assert_eq!(failure.body["failed_tasks"][0]["log_tail"][0], "try 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_timeout_cancels_the_run_stops_its_processes_and_notifies_why() {
    let hooks = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path());
    let pid_file = dir.path().join("pid");
    let text = format!(
        r#"[dag]
id = "d"
run_timeout = "1s"

[[dag.notify]]
on = ["failure"]
url = "{}"

[[task]]
id = "stuck"
kind = "command"
shell = "echo $$ > {}; exec sleep 60"

[[task]]
id = "after"
kind = "noop"
depends_on = ["stuck"]
"#,
        hooks.url("ops"),
        pid_file.display()
    );
    let outcome = run(&engine, &text, RunRequest::default()).await;
    assert_eq!(outcome.state, RunState::Failed);
    let note = "timed out: the run took longer than run_timeout = 1s";
    assert_eq!(outcome.note.as_deref(), Some(note));
    assert_eq!(
        store.run(&outcome.run_id).unwrap().unwrap().note.as_deref(),
        Some(note)
    );
    let pid = common::read_pids(&pid_file, 1)[0];
    assert!(
        common::process_gone(pid),
        "the task's process {pid} still runs"
    );
    let body = &hooks.wait_for("ops", 1).await[0].body;
    assert_eq!(body["event"], "failure");
    assert_eq!(body["note"], note);
    assert!(body["summary"].as_str().unwrap().contains(note), "{body:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missed_deadline_is_notified_once_and_the_run_goes_on() {
    let hooks = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path());
    let text = |deadline: &str| {
        format!(
            r#"[dag]
id = "d"
deadline = "{deadline}"

[[dag.notify]]
on = ["deadline_miss", "success"]
url = "{}"

[[task]]
id = "slow"
kind = "command"
shell = "sleep 1.5"
"#,
            hooks.url("ops")
        )
    };
    let outcome = run(&engine, &text("300ms"), RunRequest::default()).await;
    assert_eq!(outcome.state, RunState::Success);
    assert_eq!(outcome.note, None);
    let got = hooks.wait_for("ops", 2).await;
    let events: Vec<&Value> = got.iter().map(|r| &r.body["event"]).collect();
    assert_eq!(events, ["deadline_miss", "success"]);
    let miss = &got[0].body;
    assert_eq!(miss["state"], "running");
    let started = store.run(&outcome.run_id).unwrap().unwrap().started_at;
    let deadline: chrono::DateTime<Utc> = miss["deadline"].as_str().unwrap().parse().unwrap();
    let off = (deadline - (started + chrono::Duration::milliseconds(300))).abs();
    assert!(
        off < chrono::Duration::milliseconds(1),
        "deadline {deadline}, start {started}"
    );

    // A scheduled run's deadline counts from its slot: one an hour old is missed at once.
    let slot = Utc::now() - chrono::Duration::hours(1);
    let scheduled = run(
        &engine,
        &text("30m"),
        RunRequest {
            logical_date: Some(slot),
            trigger: Trigger::Scheduled,
            ..RunRequest::default()
        },
    )
    .await;
    assert_eq!(scheduled.state, RunState::Success);
    let got = hooks.wait_for("ops", 4).await;
    let miss = got
        .iter()
        .find(|r| {
            r.body["event"] == "deadline_miss" && r.body["run_id"] == scheduled.run_id.as_str()
        })
        .unwrap();
    let deadline: chrono::DateTime<Utc> = miss.body["deadline"].as_str().unwrap().parse().unwrap();
    let off = (deadline - (slot + chrono::Duration::minutes(30))).abs();
    assert!(
        off < chrono::Duration::milliseconds(1),
        "deadline {deadline}, slot {slot}"
    );
    let records = delivered(&engine, store.as_ref(), &scheduled.run_id).await;
    assert_eq!(records.len(), 2, "{records:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn orchestrator_run_waits_for_its_deliveries_and_prints_them() {
    let hooks = Receiver::start().await;
    hooks.answer("ops", &[502]);
    let dir = tempfile::tempdir().unwrap();
    let dag = dir.path().join("d.toml");
    std::fs::write(
        &dag,
        format!(
            r#"[dag]
id = "cli_notify"

[[dag.notify]]
on = ["failure"]
url = "{}"

[[task]]
id = "boom"
kind = "command"
shell = "echo 'disk full' >&2; exit 2"
"#,
            hooks.url("ops")
        ),
    )
    .unwrap();
    let state = dir.path().join("state.db");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--state")
        .arg(&state)
        .args(["run", "--no-progress", "--public-url", "http://ui.example/"])
        .arg(&dag)
        .env_remove("VELOSTREAM_PUBLIC_URL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // The command returned only after the retried delivery: both attempts reached the receiver.
    let got = hooks.received_by("ops");
    assert_eq!(got.len(), 2, "{stdout}");
    assert!(
        got[1].body["url"]
            .as_str()
            .unwrap()
            .starts_with("http://ui.example/runs/manual__"),
        "{:#}",
        got[1].body
    );
    let line = format!(
        "Notified failure to #1 {}/… (json): delivered after 2 attempt(s): HTTP 200 OK; the attempt before: HTTP 502 Bad Gateway",
        hooks.base()
    );
    assert!(stdout.contains(&line), "{stdout}");
    // The run's history shows the same.
    let run_id = got[1].body["run_id"].as_str().unwrap();
    let history = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--state")
        .arg(&state)
        .args(["runs", "--run", run_id])
        .output()
        .await
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains(&line), "{history}");
}
