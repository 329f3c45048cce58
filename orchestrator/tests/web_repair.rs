//! The repair API over the app (tower `oneshot`): clear with a dry run and its refusals, mark
//! with a required reason, notes, resume refused for a run that was not interrupted, and the DAG
//! version of a run (its hash in every run listing, its text and the diff to the file now); a
//! run that failed and was cleared into success notifies `recovered` to a real local receiver.

mod receiver;
mod web_common;

use axum::http::StatusCode;
use orchestrator::store::RunState;
use serde_json::json;
use web_common::{Env, enc};

const DAG: &str = r#"
[dag]
id = "two"

[[task]]
id = "a"
kind = "noop"

[[task]]
id = "b"
kind = "command"
depends_on = ["a"]
shell = "exit 1"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn clear_mark_notes_and_versions_through_the_api() {
    let env = Env::new(&[("two.toml", DAG)]);
    let (s, v) = env.post_json("/api/dags/two/runs", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    let url = format!("/api/runs/{}", enc(&run_id));
    assert_eq!(env.wait_run(&run_id).await, RunState::Failed);

    // Every listing carries the DAG hash; the version endpoint has the text and no diff yet.
    let listed = env.get_json("/api/runs").await;
    let hash = listed["runs"][0]["dag_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    let version = env.get_json(&format!("{url}/dag")).await;
    assert_eq!(
        (version["hash"].as_str(), version["same"].as_bool()),
        (Some(hash.as_str()), Some(true))
    );
    assert_eq!(version["text"], DAG);
    std::fs::write(env.dags().join("two.toml"), DAG.replace("exit 1", "exit 0")).unwrap();
    let version = env.get_json(&format!("{url}/dag")).await;
    assert_eq!(version["same"], false);
    let diff = version["diff"].as_str().unwrap();
    assert!(
        diff.contains("-shell = \"exit 1\"\n+shell = \"exit 0\""),
        "{diff}"
    );

    // Dry run: what would run again, nothing changed.
    let (s, v) = env
        .post_json(
            &format!("{url}/clear"),
            json!({"failed": true, "dry_run": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["tasks"],
        json!([{"task_id": "b", "state": "failed", "reason": "chosen"}])
    );
    assert_eq!(env.get_json(&url).await["run"]["state"], "failed");
    // Refusals say why.
    let (s, v) = env
        .post_json(&format!("{url}/clear"), json!({"tasks": ["zz"]}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("no task \"zz\""),
        "{v}"
    );
    let (s, v) = env.post_json(&format!("{url}/clear"), json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = env
        .post_json("/api/runs/nope/clear", json!({"failed": true}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = env.post_json(&format!("{url}/resume"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("orchestrator clear"),
        "{v}"
    );

    // A clear runs the run's own version (b still fails: `exit 1`), as a second try.
    let (s, v) = env
        .post_json(&format!("{url}/clear"), json!({"tasks": ["b"]}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(env.wait_run(&run_id).await, RunState::Failed);
    let detail = env.get_json(&url).await;
    assert_eq!(detail["tasks"][1]["try_number"], 2);
    assert_eq!(detail["tasks"][0]["try_number"], 1);
    assert_eq!(detail["run"]["dag_hash"], hash.as_str());

    // Mark needs a reason; then the run is recomputed.
    let mark = format!("{url}/tasks/b/mark");
    let (s, v) = env.post_json(&mark, json!({"state": "success"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = env
        .post_json(&mark, json!({"state": "skipped", "reason": "x"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = env
        .post_json(
            &mark,
            json!({"state": "success", "reason": "verified by hand"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(env.wait_run(&run_id).await, RunState::Success);
    let detail = env.get_json(&url).await;
    let kinds: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["clear", "mark"]);
    assert_eq!(detail["history"][1]["reason"], "verified by hand");

    // Notes.
    let (s, v) = env
        .post_json(&format!("{url}/notes"), json!({"text": "flaky b"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(env.get_json(&url).await["notes"]["text"], "flaky b");
    let page = env.get(&format!("/runs/{}", enc(&run_id))).await.1;
    assert!(
        page.contains("flaky b") && page.contains("id=\"dag-diff\""),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_cleared_into_success_notifies_recovered() {
    let hooks = receiver::Receiver::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let dag = format!(
        r#"[dag]
id = "night"

[[dag.notify]]
on = ["failure", "recovered"]
url = "{}"

[[task]]
id = "count"
kind = "command"
shell = "test -f {}/fixed || {{ echo 'expected 40000000 rows, found 39999000' >&2; exit 3; }}"
"#,
        hooks.url("ops"),
        scratch.path().display()
    );
    let env = Env::new(&[("night.toml", &dag)]);
    let (s, v) = env.post_json("/api/dags/night/runs", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    assert_eq!(env.wait_run(&run_id).await, RunState::Failed);
    let got = hooks.wait_for("ops", 1).await;
    assert_eq!(got[0].body["event"], "failure");

    std::fs::write(scratch.path().join("fixed"), "").unwrap();
    let url = format!("/api/runs/{}/clear", enc(&run_id));
    let (s, v) = env.post_json(&url, json!({"failed": true})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(env.wait_run(&run_id).await, RunState::Success);
    let got = hooks.wait_for("ops", 2).await;
    let b = &got[1].body;
    assert_eq!(b["event"], "recovered", "{b:#}");
    assert_eq!(b["run_id"], run_id.as_str());
    assert_eq!(b["previous_run_id"], run_id.as_str());
    assert!(
        b["summary"].as_str().unwrap().contains("after its repair"),
        "{b:#}"
    );
}
