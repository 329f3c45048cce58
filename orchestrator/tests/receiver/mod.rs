//! A real local webhook receiver for the notification tests: an HTTP server on a free loopback
//! port that records every POST (path, content type, JSON body) and answers each with the next
//! scripted status (200 once the script is used up; 0 means "answer nothing for 30 s").
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use tokio::sync::Notify;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// The path's last segment (`/hook/NAME` -> `NAME`).
    pub name: String,
    /// The request's content type.
    pub content_type: String,
    /// The body, parsed as JSON.
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Shared {
    got: Mutex<Vec<Received>>,
    /// Statuses to answer, per name.
    script: Mutex<HashMap<String, VecDeque<u16>>>,
    changed: Notify,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let status = shared
        .script
        .lock()
        .unwrap()
        .get_mut(&name)
        .and_then(VecDeque::pop_front)
        .unwrap_or(200);
    shared.got.lock().unwrap().push(Received {
        name,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    });
    shared.changed.notify_waiters();
    if status == 0 {
        // Never answers: the client's timeout decides.
        return std::future::pending().await;
    }
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    /// Starts listening on 127.0.0.1, port 0.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/hook/{name}", post(hook))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, shared, task }
    }

    /// The URL of the hook `name`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/hook/{name}", self.base)
    }

    /// The `http://host:port` the receiver listens on.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The next requests to `name` get these statuses, in order.
    pub fn answer(&self, name: &str, statuses: &[u16]) {
        self.shared
            .script
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .extend(statuses);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.got.lock().unwrap().clone()
    }

    /// What `name` received so far.
    pub fn received_by(&self, name: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.name == name)
            .collect()
    }

    /// Waits (up to 30 s) until `name` received `n` requests; returns them.
    pub async fn wait_for(&self, name: &str, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let changed = self.shared.changed.notified();
            let got = self.received_by(name);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "hook {name} received {} request(s) in 30 s, expected {n}: {got:#?}",
                    got.len()
                );
            }
        }
    }
}
