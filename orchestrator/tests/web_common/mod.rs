//! Helpers of the web and cron tests: a temp folder with DAG files and a SQLite state, the app
//! over it, and requests through tower's `oneshot`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use orchestrator::cron::{CatchUp, DagFolder};
use orchestrator::scheduler::EngineSettings;
use orchestrator::store::{RunState, SqliteStore, Store};
use orchestrator::web::{AppState, SecurityConfig, app};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A temp dir holding `dags/`, `state.db` and `logs/`, and the app over them.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub shutdown: CancellationToken,
}

impl Env {
    /// DAG files (name, text) in a fresh folder, served on loopback without a token.
    pub fn new(files: &[(&str, &str)]) -> Self {
        Self::with_security(files, None)
    }

    /// Like [`Env::new`] with a required token.
    pub fn with_security(files: &[(&str, &str)], token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dags = dir.path().join("dags");
        std::fs::create_dir(&dags).unwrap();
        for (name, text) in files {
            std::fs::write(dags.join(name), text).unwrap();
        }
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("state.db")).unwrap());
        let mut settings = EngineSettings::new(&logs);
        settings.kill_grace = Duration::from_millis(500);
        let shutdown = CancellationToken::new();
        let state = AppState::new(
            store,
            settings,
            Arc::new(DagFolder::open(&dags).unwrap()),
            SecurityConfig::for_bind("127.0.0.1:0".parse().unwrap(), token.map(str::to_owned)),
            CatchUp::Latest,
            shutdown.clone(),
        );
        Self {
            dir,
            state,
            shutdown,
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub fn dags(&self) -> PathBuf {
        self.dir.path().join("dags")
    }

    pub fn csrf(&self) -> String {
        self.state.security().csrf_token.clone()
    }

    /// Sends a request through the router.
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
            .await
            .unwrap();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    /// `GET path` (as a browser on 127.0.0.1 would send it).
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let (s, _, b) = self
            .send(
                Request::get(path)
                    .header(header::HOST, "127.0.0.1:8080")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        (s, b)
    }

    /// `GET path` parsed as JSON (asserting 200).
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let (s, b) = self.get(path).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {b}");
        serde_json::from_str(&b).unwrap()
    }

    /// `POST path` with a JSON body and the CSRF header, as the UI's script sends it.
    pub async fn post_json(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let (s, _, b) = self
            .send(
                Request::post(path)
                    .header(header::HOST, "127.0.0.1:8080")
                    .header(header::ORIGIN, "http://127.0.0.1:8080")
                    .header(header::CONTENT_TYPE, "application/json")
                    .header("x-csrf-token", self.csrf())
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await;
        (
            s,
            serde_json::from_str(&b).unwrap_or(serde_json::Value::String(b)),
        )
    }

    /// Waits until `run_id` finishes in the store, returning its state.
    pub async fn wait_run(&self, run_id: &str) -> RunState {
        wait_run(self.state.store().as_ref(), run_id).await
    }
}

/// Waits (up to 60 s) until the run finishes.
pub async fn wait_run(store: &dyn Store, run_id: &str) -> RunState {
    let what = format!("run {run_id} to finish");
    velostream_testkit::wait_for_async(&what, Duration::from_secs(60), || async {
        let run = store.run(run_id).unwrap().expect("run exists");
        (run.state != RunState::Running).then_some(run.state)
    })
    .await
}

/// Writes a DAG file into `dir`.
pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[allow(unused_imports)] // Not every test binary builds URLs.
pub use orchestrator::web::enc;
