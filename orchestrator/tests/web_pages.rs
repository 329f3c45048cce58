//! The HTML pages and their live fragments: what each shows (graph, grid, Gantt bars, lag chart,
//! outputs, logs, progress), that everything from DAG files and tasks is escaped, and that a
//! page says when something on it runs (so its script polls every second).

mod web_common;

use axum::http::StatusCode;
use orchestrator::store::RunState;
use serde_json::json;
use web_common::Env;

const SHOWCASE: &str = r#"
[dag]
id = "showcase"
description = "Escapes <script>alert('dag')</script>"
schedule = "0 3 * * *"

[dag.params]
label = "\"><script>alert('param')</script>"

[[task]]
id = "extract"
kind = "command"
shell = "echo '<b>not bold</b>'; echo '::velostream:: {\"output\": {\"rows\": 3}}'"

[[task]]
id = "sensor"
kind = "noop"
depends_on = ["extract"]
outputs = { series = { lag = { unit = "messages", points = [[1700000000000, 900], [1700000001000, 400], [1700000002000, 0]] } }, note = "<img src=x onerror=alert(1)>" }

[[task]]
id = "load"
kind = "noop"
depends_on = ["extract"]

[[task]]
id = "report"
kind = "noop"
depends_on = ["sensor", "load"]
"#;

const PROGRESS: &str = r#"
[dag]
id = "progress"

[[task]]
id = "long"
kind = "command"
shell = "echo '::velostream:: {\"progress\": {\"done\": 5, \"total\": 10, \"unit\": \"rows\"}}'; sleep 30"
"#;

async fn finished_run(env: &Env) -> String {
    let (status, v) = env.post_json("/api/dags/showcase/runs", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    assert_eq!(env.wait_run(&run_id).await, RunState::Success);
    run_id
}

/// No raw markup from DAG files or task output reaches a page.
fn assert_escaped(page: &str) {
    assert!(
        !page.contains("<script>alert"),
        "unescaped script in:\n{page}"
    );
    assert!(!page.contains("<img src=x"), "unescaped img in:\n{page}");
    assert!(
        !page.contains("<b>not bold</b>"),
        "unescaped task output in:\n{page}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dag_list_shows_schedules_runs_and_actions_escaped() {
    let env = Env::new(&[("showcase.toml", SHOWCASE)]);
    let run_id = finished_run(&env).await;
    let (status, page) = env.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert_escaped(&page);
    assert!(
        page.contains("&lt;script&gt;alert(&#39;dag&#39;)&lt;/script&gt;")
            || page.contains("&#60;script&#62;"),
        "{page}"
    );
    assert!(page.contains("<code>0 3 * * *</code>"));
    assert!(page.contains(&format!("data-run=\"{run_id}\" data-state=\"success\"")));
    assert!(page.contains("action=\"/api/dags/showcase/runs\""));
    assert!(page.contains("action=\"/api/dags/showcase/pause\""));
    assert!(page.contains(&format!("name=\"csrf_token\" value=\"{}\"", env.csrf())));
    assert!(page.contains("data-src=\"/fragments/dags\""));
    let (status, fragment) = env.get("/fragments/dags").await;
    assert_eq!(status, StatusCode::OK);
    assert!(fragment.starts_with("<div class=\"live-root\" data-active=\"false\">"));
    assert!(!fragment.contains("<html"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dag_page_draws_the_graph_and_the_grid() {
    let env = Env::new(&[("showcase.toml", SHOWCASE)]);
    let first = finished_run(&env).await;
    let second = finished_run(&env).await;
    let (status, page) = env.get("/dags/showcase").await;
    assert_eq!(status, StatusCode::OK);
    assert_escaped(&page);
    // The graph: one node per task, coloured by the latest run, and one arrow per dependency.
    for task in ["extract", "sensor", "load", "report"] {
        assert!(
            page.contains(&format!(
                "<g class=\"node s-success\" data-task=\"{task}\" data-state=\"success\">"
            )),
            "{task}"
        );
    }
    assert_eq!(page.matches("class=\"edge\"").count(), 4);
    assert!(page.contains(&format!(
        "of run <a href=\"/runs/{}\">{second}</a>",
        web_common::enc(&second)
    )));
    // The grid: a column per run, a row per task.
    assert_eq!(page.matches("class=\"cell s-success\"").count(), 8);
    assert!(
        page.find(&first) < page.find(&format!("data-run=\"{second}\"")),
        "oldest run first"
    );
    // The trigger form offers the params, escaped.
    assert!(page.contains("name=\"params.label\""));
    // Selecting an older run draws it.
    let (_, page) = env
        .get(&format!("/dags/showcase?run={}", web_common::enc(&first)))
        .await;
    assert!(page.contains(&format!(
        "of run <a href=\"/runs/{}\">{first}</a>",
        web_common::enc(&first)
    )));
    assert!(page.contains(&format!(
        "data-src=\"/fragments/dags/showcase?run={}\"",
        web_common::enc(&first)
    )));
    let (status, _) = env.get("/dags/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_run_page_has_tasks_timeline_lag_chart_and_outputs() {
    let env = Env::new(&[("showcase.toml", SHOWCASE)]);
    let run_id = finished_run(&env).await;
    let (status, page) = env
        .get(&format!("/runs/{}", web_common::enc(&run_id)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_escaped(&page);
    assert!(page.contains("id=\"run-state\" data-state=\"success\""));
    for task in ["extract", "sensor", "load", "report"] {
        assert!(
            page.contains(&format!("<tr data-task=\"{task}\" data-state=\"success\">")),
            "{task}"
        );
    }
    assert_eq!(
        page.matches("class=\"bar s-success\"").count(),
        4,
        "a Gantt bar per task"
    );
    assert!(
        page.contains("<polyline class=\"series\" points=\"70,30 435,119 800,190\"/>"),
        "{page}"
    );
    assert!(page.contains("messages: peak 900, last 0, 3 points"));
    assert!(
        page.contains("&quot;rows&quot;: 3") || page.contains("&#34;rows&#34;: 3"),
        "{page}"
    );
    assert!(page.contains("(lag: charted below)"));
    assert!(
        !page.contains("Cancel run"),
        "a finished run cannot be cancelled"
    );
    let (status, _) = env.get("/runs/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_page_shows_the_try_escaped() {
    let env = Env::new(&[("showcase.toml", SHOWCASE)]);
    let run_id = finished_run(&env).await;
    let (status, page) = env
        .get(&format!(
            "/runs/{}/tasks/extract/log",
            web_common::enc(&run_id)
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_escaped(&page);
    assert!(
        page.contains("&lt;b&gt;not bold&lt;/b&gt;") || page.contains("&#60;b&#62;not bold"),
        "{page}"
    );
    assert!(page.contains("data-running=\"false\""));
    assert!(page.contains(&format!(
        "data-src=\"/api/runs/{}/tasks/extract/log?try=1\"",
        web_common::enc(&run_id)
    )));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_run_shows_progress_marks_pages_active_and_can_be_cancelled() {
    let env = Env::new(&[("progress.toml", PROGRESS)]);
    let (_, v) = env.post_json("/api/dags/progress/runs", json!({})).await;
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    let path = format!("/fragments/runs/{}", web_common::enc(&run_id));
    // The task reports progress as soon as it starts.
    let fragment = velostream_testkit::wait_for_async(
        "progress on the run page",
        std::time::Duration::from_secs(20),
        || async {
            let (_, fragment) = env.get(&path).await;
            fragment.contains("<progress").then_some(fragment)
        },
    )
    .await;
    assert!(
        fragment.contains(
            "<progress value=\"5\" max=\"10\"></progress> <span class=\"small\">5 / 10 rows</span>"
        ),
        "{fragment}"
    );
    assert!(fragment.contains("data-active=\"true\""));
    assert!(fragment.contains("Cancel run"));
    let (_, list) = env.get("/fragments/dags").await;
    assert!(list.contains("data-active=\"true\""));
    assert!(list.contains("data-state=\"running\""));
    let (_, log) = env
        .get(&format!(
            "/runs/{}/tasks/long/log",
            web_common::enc(&run_id)
        ))
        .await;
    assert!(log.contains("data-running=\"true\""));
    let (status, _) = env
        .post_json(
            &format!("/api/runs/{}/cancel", web_common::enc(&run_id)),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(env.wait_run(&run_id).await, RunState::Failed);
    let (_, fragment) = env.get(&path).await;
    assert!(fragment.contains("data-active=\"false\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn static_files_are_served_and_nothing_else() {
    let env = Env::new(&[]);
    let (status, js) = env.get("/static/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(js.contains("X-CSRF-Token"));
    let (status, css) = env.get("/static/app.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(css.contains(".s-success"));
    assert_eq!(env.get("/static/other.js").await.0, StatusCode::NOT_FOUND);
    let (status, page) = env.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("No DAGs loaded"));
}
