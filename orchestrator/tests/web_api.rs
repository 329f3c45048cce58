//! The JSON API and the security rules, through tower's `oneshot` against the real router over a
//! SQLite state: trigger with params (validated), runs and task logs, pause, cancel,
//! max_active_runs, runs started elsewhere (the CLI) on the same state file, metrics, CSRF,
//! origin and host checks, the token, POST-only state changes and log path containment.

mod web_common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use orchestrator::events::EventSink;
use orchestrator::scheduler::{Engine, EngineSettings, RunRequest};
use orchestrator::store::{RunState, SqliteStore, Store, TaskUpdate};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use web_common::Env;

pub const GREET: &str = r#"
[dag]
id = "greet"
description = "Says <b>hi</b> & <script>alert('x')</script>"
max_active_runs = 2

[dag.params]
rows = 10
name = "world"

[[task]]
id = "hello"
kind = "command"
shell = "echo 'hello {{ params.name }}'; echo '::velostream:: {\"output\": {\"rows\": {{ params.rows }}}}'"

[[task]]
id = "after"
kind = "noop"
depends_on = ["hello"]
outputs = { series = { lag = { unit = "messages", points = [[1700000000000, 50], [1700000001000, 20], [1700000002000, 0]] } }, html = "<img src=x onerror=alert(1)>" }
"#;

pub const SLOW: &str = r#"
[dag]
id = "slow"
max_active_runs = 1

[[task]]
id = "wait"
kind = "sleep"
duration = "30s"
"#;

fn env() -> Env {
    Env::new(&[
        ("greet.toml", GREET),
        ("slow.toml", SLOW),
        ("broken.toml", "[dag]\nid = 7\n"),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn dags_are_listed_with_their_tasks_params_and_load_errors() {
    let env = env();
    let v = env.get_json("/api/dags").await;
    let ids: Vec<&str> = v["dags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dag_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["greet", "slow"]);
    assert_eq!(v["errors"].as_array().unwrap().len(), 1);
    assert!(
        v["errors"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("broken.toml")
    );
    assert_eq!(v["catchup"], "latest");
    let greet = env.get_json("/api/dags/greet").await;
    assert_eq!(greet["params"], json!({"rows": 10, "name": "world"}));
    assert_eq!(greet["tasks"][1]["task_id"], "after");
    assert_eq!(greet["tasks"][1]["upstream"], json!(["hello"]));
    assert_eq!(greet["paused"], false);
    let (status, body) = env.get("/api/dags/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no DAG nope"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_triggered_run_succeeds_with_params_and_its_tasks_and_log_are_served() {
    let env = env();
    let (status, v) = env
        .post_json(
            "/api/dags/greet/runs",
            json!({"params": {"rows": 42, "name": "velo"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    assert!(v["url"].as_str().unwrap().starts_with("/runs/manual__"));
    assert_eq!(env.wait_run(&run_id).await, RunState::Success);

    let path = format!("/api/runs/{}", web_common::enc(&run_id));
    let run = env.get_json(&path).await;
    assert_eq!(run["run"]["state"], "success");
    assert_eq!(run["run"]["params"], json!({"rows": 42, "name": "velo"}));
    assert_eq!(run["tasks"][0]["task_id"], "hello");
    assert_eq!(run["tasks"][0]["outputs"]["rows"], 42);
    assert_eq!(run["tasks"][0]["tries"][0]["state"], "success");
    let task = env.get_json(&format!("{path}/tasks/after")).await;
    assert_eq!(task["state"], "success");

    let log = env.get_json(&format!("{path}/tasks/hello/log")).await;
    assert_eq!(log["try_number"], 1);
    assert_eq!(log["running"], false);
    assert!(
        log["text"].as_str().unwrap().contains("hello velo"),
        "{log}"
    );
    // Following from the end returns nothing new.
    let next = log["next_offset"].as_u64().unwrap();
    let tail = env
        .get_json(&format!("{path}/tasks/hello/log?offset={next}"))
        .await;
    assert_eq!(tail["text"], "");
    assert_eq!(tail["next_offset"], next);
    let (status, _) = env.get(&format!("{path}/tasks/hello/log?try=9")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = env.get(&format!("{path}/tasks/nope/log")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let listed = env.get_json("/api/runs?dag=greet&state=success").await;
    assert_eq!(listed["runs"][0]["run_id"], run_id.as_str());
    let listed = env.get_json("/api/dags/greet/runs?limit=1").await;
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1);
    let (status, body) = env.get("/api/runs?state=bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn params_are_validated_against_the_dag() {
    let env = env();
    let (status, v) = env
        .post_json("/api/dags/greet/runs", json!({"params": {"rows": "many"}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("expects an integer"),
        "{v}"
    );
    let (status, v) = env
        .post_json("/api/dags/greet/runs", json!({"params": {"colour": "red"}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("unknown param"),
        "{v}"
    );
    let (status, v) = env
        .post_json("/api/dags/greet/runs", json!({"logical_date": "yesterday"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, _) = env.post_json("/api/dags/nope/runs", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        env.state
            .store()
            .runs(&Default::default())
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_active_runs_refuses_a_second_run_and_cancel_stops_the_first() {
    let env = env();
    let (status, v) = env.post_json("/api/dags/slow/runs", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    let (status, v) = env.post_json("/api/dags/slow/runs", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        v["error"].as_str().unwrap().contains("max_active_runs"),
        "{v}"
    );
    let enc = web_common::enc(&run_id);
    let run = env.get_json(&format!("/api/runs/{enc}")).await;
    assert_eq!(run["run"]["driven_here"], true);
    let (status, v) = env
        .post_json(&format!("/api/runs/{enc}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(env.wait_run(&run_id).await, RunState::Failed);
    let run = env.state.store().run(&run_id).unwrap().unwrap();
    assert_eq!(run.note.as_deref(), Some("cancelled from the web UI"));
    let (status, v) = env
        .post_json(&format!("/api/runs/{enc}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        v["error"].as_str().unwrap().contains("already finished"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_and_unpause_are_stored_and_shown() {
    let env = env();
    let (status, v) = env.post_json("/api/dags/greet/pause", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"dag_id": "greet", "paused": true}));
    assert!(env.state.store().paused_dags().unwrap().contains("greet"));
    assert_eq!(env.get_json("/api/dags/greet").await["paused"], true);
    let (_, page) = env.get("/").await;
    assert!(
        page.contains("/api/dags/greet/unpause"),
        "the toggle offers to unpause"
    );
    let (status, _) = env.post_json("/api/dags/greet/unpause", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(env.state.store().paused_dags().unwrap().is_empty());
    let (status, _) = env.post_json("/api/dags/nope/pause", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_started_by_another_process_on_the_same_state_file_appear() {
    let env = env();
    // What `orchestrator run` does: its own store handle and engine on the same file.
    let cli_store: Arc<dyn Store> = Arc::new(SqliteStore::open(env.db()).unwrap());
    let engine = Engine::new(cli_store.clone(), EngineSettings::new(env.logs()));
    let dag = env.state.folder().get("greet").unwrap();
    let outcome = engine
        .run(
            dag,
            RunRequest {
                params: BTreeMap::from([("name".to_owned(), "cli".to_owned())]),
                ..RunRequest::default()
            },
            EventSink::none(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.state, RunState::Success);
    let runs = env.get_json("/api/runs").await;
    assert_eq!(runs["runs"][0]["run_id"], outcome.run_id.as_str());
    assert_eq!(runs["runs"][0]["driven_here"], false);
    let (status, page) = env.get("/dags/greet").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&outcome.run_id));
    let enc = web_common::enc(&outcome.run_id);
    let log = env
        .get_json(&format!("/api/runs/{enc}/tasks/hello/log"))
        .await;
    assert!(log["text"].as_str().unwrap().contains("hello cli"));
    // Not ours to cancel.
    let (status, _) = env
        .post_json(&format!("/api/runs/{enc}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_runs_and_observe_durations_and_delays() {
    let env = env();
    let metrics = env.state.metrics().clone();
    metrics.observe(env.state.store().as_ref()).unwrap();
    let (_, v) = env.post_json("/api/dags/greet/runs", json!({})).await;
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    env.wait_run(&run_id).await;
    metrics.observe(env.state.store().as_ref()).unwrap();
    let (status, _, text) = env
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("velostream_orchestrator_runs{dag=\"greet\",state=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("velostream_orchestrator_runs{dag=\"slow\",state=\"running\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("velostream_orchestrator_task_instances{state=\"success\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("velostream_orchestrator_task_duration_seconds_count 2"),
        "{text}"
    );
    assert!(
        text.contains("velostream_orchestrator_scheduling_delay_seconds_count 0"),
        "{text}"
    );
}

// ---- Security ------------------------------------------------------------------------------

fn post(path: &str) -> axum::http::request::Builder {
    Request::post(path).header(header::HOST, "127.0.0.1:8080")
}

#[tokio::test(flavor = "multi_thread")]
async fn posts_need_the_csrf_token_and_a_same_origin() {
    let env = env();
    let csrf = env.csrf();
    let no_token = post("/api/dags/greet/pause")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, body) = env.send(no_token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let wrong = post("/api/dags/greet/pause")
        .header("x-csrf-token", "0000")
        .body(Body::empty())
        .unwrap();
    assert_eq!(env.send(wrong).await.0, StatusCode::FORBIDDEN);
    let cross_site = post("/api/dags/greet/pause")
        .header("x-csrf-token", &csrf)
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = env.send(cross_site).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("cross-site"), "{body}");
    let cross_referer = post("/api/dags/greet/pause")
        .header("x-csrf-token", &csrf)
        .header(header::REFERER, "https://evil.example/page")
        .body(Body::empty())
        .unwrap();
    assert_eq!(env.send(cross_referer).await.0, StatusCode::FORBIDDEN);
    assert!(
        env.state.store().paused_dags().unwrap().is_empty(),
        "nothing was paused"
    );

    // A plain form post from our own page (no script): token in the form, redirect back.
    let form = post("/api/dags/greet/pause")
        .header(header::ORIGIN, "http://127.0.0.1:8080")
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf_token={csrf}&next=%2F")))
        .unwrap();
    let (status, headers, _) = env.send(form).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/");
    assert!(env.state.store().paused_dags().unwrap().contains("greet"));
    // `next` must be a local path.
    let form = post("/api/dags/greet/unpause")
        .header(header::ACCEPT, "text/html")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "csrf_token={csrf}&next=%2F%2Fevil.example"
        )))
        .unwrap();
    let (status, headers, _) = env.send(form).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dags/greet");
    // A form trigger with params lands on the new run's page.
    let form = post("/api/dags/greet/runs")
        .header(header::ACCEPT, "text/html")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "csrf_token={csrf}&params.rows=7&logical_date="
        )))
        .unwrap();
    let (status, headers, _) = env.send(form).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = headers[header::LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with("/runs/manual__"), "{location}");
    let runs = env.state.store().runs(&Default::default()).unwrap();
    assert_eq!(runs[0].params["rows"], 7);
    env.wait_run(&runs[0].run_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_changes_are_post_only() {
    let env = env();
    for (method, path) in [
        ("GET", "/api/dags/greet/pause"),
        ("GET", "/api/dags/greet/unpause"),
        ("GET", "/api/runs/x/cancel"),
        ("DELETE", "/api/dags/greet/runs"),
        ("PUT", "/api/dags/greet/pause"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("x-csrf-token", env.csrf())
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            env.send(req).await.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_servers_answer_only_to_loopback_host_names() {
    let env = env();
    for host in ["evil.example", "evil.example:8080", "10.0.0.1:8080"] {
        let req = Request::get("/api/dags")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        assert_eq!(env.send(req).await.0, StatusCode::FORBIDDEN, "{host}");
    }
    for host in ["localhost:8080", "127.0.0.1", "[::1]:8080"] {
        let req = Request::get("/api/dags")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        assert_eq!(env.send(req).await.0, StatusCode::OK, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_required_as_bearer_or_basic_auth_password() {
    let env = Env::with_security(&[("greet.toml", GREET)], Some("s3cret"));
    let (status, headers, _) = env
        .send(Request::get("/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let bearer = Request::get("/api/dags")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(env.send(bearer).await.0, StatusCode::OK);
    // "anyone:s3cret"
    let basic = Request::get("/")
        .header(header::AUTHORIZATION, "Basic YW55b25lOnMzY3JldA==")
        .body(Body::empty())
        .unwrap();
    assert_eq!(env.send(basic).await.0, StatusCode::OK);
    let wrong = Request::get("/metrics")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(env.send(wrong).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_served_only_from_the_log_directory() {
    let env = env();
    let (_, v) = env.post_json("/api/dags/greet/runs", json!({})).await;
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    env.wait_run(&run_id).await;
    let enc = web_common::enc(&run_id);
    // A traversal attempt in the task id is just an unknown task.
    let (status, _) = env
        .get(&format!(
            "/api/runs/{enc}/tasks/..%2F..%2F..%2Fetc%2Fpasswd/log"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = env.get("/static/..%2Fweb%2Fmod.rs").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A log path in the store that points outside the log directory is refused.
    let outside = env.dir.path().join("secret.txt");
    std::fs::write(&outside, "top secret\n").unwrap();
    env.state
        .store()
        .update_task(
            &run_id,
            &TaskUpdate {
                task_id: "hello".into(),
                try_number: 1,
                log_path: Some(outside),
                ..TaskUpdate::default()
            },
        )
        .unwrap();
    let (status, body) = env.get(&format!("/api/runs/{enc}/tasks/hello/log")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!body.contains("top secret"));
    let (status, page) = env.get(&format!("/runs/{enc}/tasks/hello/log")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!page.contains("top secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_carry_a_strict_content_security_policy() {
    let env = env();
    let (_, headers, _) = env
        .send(Request::get("/").body(Body::empty()).unwrap())
        .await;
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let csrf = env.get_json("/api/csrf").await;
    assert_eq!(csrf["token"], env.csrf().as_str());
    let (status, _) = env.get("/no/such/page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_token_without_cookies_needs_no_csrf_token() {
    let env = Env::with_security(&[("greet.toml", GREET)], Some("s3cret"));
    // A script: the bearer token, no cookie, no CSRF token.
    let machine = post("/api/dags/greet/runs")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"params": {"rows": 3}}"#))
        .unwrap();
    let (status, _, body) = env.send(machine).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        env.wait_run(v["run_id"].as_str().unwrap()).await,
        RunState::Success
    );

    // Browser sessions keep the check: basic auth (browsers resend it by themselves), or a
    // bearer header alongside cookies.
    let basic = post("/api/dags/greet/pause")
        .header(header::AUTHORIZATION, "Basic YW55b25lOnMzY3JldA==")
        .body(Body::empty())
        .unwrap();
    assert_eq!(env.send(basic).await.0, StatusCode::FORBIDDEN);
    let with_cookie = post("/api/dags/greet/pause")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .header(header::COOKIE, "session=1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(env.send(with_cookie).await.0, StatusCode::FORBIDDEN);
    // A wrong bearer token is still refused, and a cross-site origin still is.
    let wrong = post("/api/dags/greet/pause")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(env.send(wrong).await.0, StatusCode::UNAUTHORIZED);
    let cross_site = post("/api/dags/greet/pause")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(env.send(cross_site).await.0, StatusCode::FORBIDDEN);
    assert!(env.state.store().paused_dags().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_says_why_in_the_api_and_on_its_page() {
    const FAILS: &str = r#"
[dag]
id = "fails"

[[task]]
id = "load"
kind = "command"
shell = "echo 'reading data.parquet' >&2; echo 'error: data.parquet is empty (0 bytes); give a Parquet file with rows' >&2; exit 1"
"#;
    let env = Env::new(&[("fails.toml", FAILS)]);
    let (status, v) = env.post_json("/api/dags/fails/runs", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    assert_eq!(env.wait_run(&run_id).await, RunState::Failed);
    let why = "error: data.parquet is empty (0 bytes); give a Parquet file with rows";
    let path = format!("/api/runs/{}", web_common::enc(&run_id));
    let run = env.get_json(&path).await;
    let error = run["tasks"][0]["error"].as_str().unwrap();
    assert!(error.contains("exit code 1"), "{error}");
    assert!(error.contains(why), "{error}");
    let (status, page) = env
        .get(&format!("/runs/{}", web_common::enc(&run_id)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("data.parquet is empty (0 bytes)"), "{page}");
}
