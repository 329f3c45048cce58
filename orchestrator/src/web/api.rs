//! The JSON API (documented in `docs/api.md`): everything the UI shows and does. State changes
//! are POSTs that accept JSON or a form; a plain form post from a browser without script (it
//! accepts `text/html`) is answered with a redirect instead of JSON.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::WebError;
use super::state::AppState;
use super::view::{self, enc};
use crate::scheduler::RunRequest;
use crate::store::{RunFilter, RunState, Trigger};

/// Fields of a POST body, from JSON (an object) or a form.
#[derive(Debug, Default)]
pub struct Submitted {
    fields: Map<String, Value>,
    html: bool,
}

impl<S: Send + Sync> FromRequest<S> for Submitted {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let html = wants_html(req.headers());
        let (parts, body) = req.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| WebError::bad_request(format!("unreadable body: {e}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self {
                fields: Map::new(),
                html,
            });
        }
        if content_type.starts_with("application/json") {
            return match serde_json::from_slice(&bytes) {
                Ok(Value::Object(fields)) => Ok(Self { fields, html }),
                Ok(_) => Err(WebError::bad_request("the JSON body must be an object")),
                Err(e) => Err(WebError::bad_request(format!("malformed JSON body: {e}"))),
            };
        }
        if content_type.starts_with("application/x-www-form-urlencoded") {
            let axum::Form(pairs) = axum::Form::<Vec<(String, String)>>::from_request(
                Request::from_parts(parts, bytes.into()),
                state,
            )
            .await
            .map_err(|e| WebError::bad_request(format!("malformed form: {e}")))?;
            let mut fields = Map::new();
            let mut params = Map::new();
            for (k, v) in pairs {
                match k.strip_prefix("params.") {
                    Some(name) => {
                        params.insert(name.to_owned(), Value::String(v));
                    }
                    None => {
                        fields.insert(k, Value::String(v));
                    }
                }
            }
            if !params.is_empty() {
                fields.insert("params".into(), Value::Object(params));
            }
            return Ok(Self { fields, html });
        }
        Err(WebError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json or application/x-www-form-urlencoded",
        ))
    }
}

impl Submitted {
    /// One field of the body.
    pub(super) fn field(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// Whether a browser posted a plain form.
    pub(super) fn is_html(&self) -> bool {
        self.html
    }

    /// A local path to go back to after a form post (`next` field), or `fallback`.
    fn next(&self, fallback: String) -> String {
        self.fields
            .get("next")
            .and_then(Value::as_str)
            .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
            .map_or(fallback, str::to_owned)
    }
}

/// Whether the client is a browser posting a plain form (it wants a page back).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Answers a state change: JSON with `status`, or a redirect for a plain form post.
pub(super) fn answer(input: &Submitted, status: StatusCode, body: Value, go: String) -> Response {
    if input.html {
        Redirect::to(&input.next(go)).into_response()
    } else {
        (status, Json(body)).into_response()
    }
}

/// `?recent=N`.
#[derive(Debug, Deserialize)]
pub struct RecentQuery {
    recent: Option<usize>,
}

/// `GET /api`: what there is.
pub async fn index() -> Json<Value> {
    Json(json!({
        "endpoints": [
            "GET /api/health",
            "GET /api/csrf",
            "GET /api/dags?recent=N",
            "GET /api/dags/{dag_id}?recent=N",
            "GET /api/dags/{dag_id}/runs?limit=N&state=S&trigger=T",
            "GET /api/dags/{dag_id}/next?count=N&after=T",
            "GET /api/dags/{dag_id}/backfills",
            "POST /api/dags/{dag_id}/backfills",
            "GET /api/backfills",
            "POST /api/backfills/{backfill_id}/cancel",
            "POST /api/dags/{dag_id}/runs",
            "POST /api/runs/{run_id}/clear",
            "POST /api/runs/{run_id}/tasks/{task_id}/mark",
            "POST /api/runs/{run_id}/resume",
            "POST /api/runs/{run_id}/notes",
            "GET /api/runs/{run_id}/dag",
            "POST /api/dags/{dag_id}/pause",
            "POST /api/dags/{dag_id}/unpause",
            "GET /api/runs?dag=D&state=S&trigger=T&limit=N",
            "GET /api/runs/{run_id}",
            "GET /api/runs/{run_id}/notifications",
            "POST /api/runs/{run_id}/cancel",
            "GET /api/runs/{run_id}/tasks/{task_id}",
            "GET /api/runs/{run_id}/tasks/{task_id}/log?try=N&offset=B&limit=B",
            "GET /metrics"
        ],
        "docs": "docs/api.md"
    }))
}

/// `GET /api/health`.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "ok": true,
        "runs_driven": state.launcher().active(),
        "dags": state.folder().snapshot().dags.len(),
    }))
}

/// `GET /api/csrf`: the token POSTs must carry.
pub async fn csrf(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "token": state.security().csrf_token,
        "header": super::security::CSRF_HEADER,
        "field": super::security::CSRF_FIELD,
    }))
}

/// `GET /api/dags`.
pub async fn dags(
    State(state): State<AppState>,
    Query(q): Query<RecentQuery>,
) -> Result<Json<Value>, WebError> {
    let recent = q.recent.unwrap_or(10).min(1000);
    let (dags, errors) = state.blocking(move |s| view::dags(s, recent)).await?;
    Ok(Json(json!({
        "dags": dags,
        "errors": errors,
        "catchup": state.cron().policy(),
    })))
}

/// `GET /api/dags/{dag_id}`.
pub async fn dag(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
    Query(q): Query<RecentQuery>,
) -> Result<Json<view::DagInfo>, WebError> {
    let recent = q.recent.unwrap_or(25).min(1000);
    let (info, _) = state
        .blocking(move |s| view::dag(s, &dag_id, recent))
        .await?;
    Ok(Json(info))
}

/// `?dag=&state=&limit=`.
#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    dag: Option<String>,
    state: Option<String>,
    trigger: Option<String>,
    limit: Option<usize>,
}

fn run_filter(dag: Option<String>, q: &RunsQuery) -> Result<RunFilter, WebError> {
    let state = q
        .state
        .as_deref()
        .map(|s| {
            s.parse::<RunState>().map_err(|_| {
                WebError::bad_request(format!(
                    "unknown run state {s:?}: use running, success or failed"
                ))
            })
        })
        .transpose()?;
    let trigger = q
        .trigger
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<Trigger>().map_err(|_| {
                WebError::bad_request(format!(
                    "unknown trigger {t:?}: use manual, scheduled or backfill"
                ))
            })
        })
        .transpose()?;
    Ok(RunFilter {
        dag_id: dag.or_else(|| q.dag.clone()),
        state,
        trigger,
        limit: q.limit.unwrap_or(50).clamp(1, 1000),
    })
}

/// `GET /api/runs`.
pub async fn runs(
    State(state): State<AppState>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, WebError> {
    let filter = run_filter(None, &q)?;
    let runs = state.blocking(move |s| view::runs(s, &filter)).await?;
    Ok(Json(json!({ "runs": runs })))
}

/// `GET /api/dags/{dag_id}/runs`.
pub async fn dag_runs(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, WebError> {
    let filter = run_filter(Some(dag_id), &q)?;
    let runs = state.blocking(move |s| view::runs(s, &filter)).await?;
    Ok(Json(json!({ "runs": runs })))
}

/// `POST /api/dags/{dag_id}/runs`: starts a run; `params` (object) override the DAG's params
/// and are checked against their types; `logical_date` (RFC 3339) is optional.
pub async fn trigger(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
    input: Submitted,
) -> Result<Response, WebError> {
    let html = input.html;
    let result = trigger_run(&state, &dag_id, &input).await;
    let run_id = match result {
        Ok(id) => id,
        Err(e) if html => return Err(e.page()),
        Err(e) => return Err(e),
    };
    let url = format!("/runs/{}", enc(&run_id));
    tracing::info!(dag_id, run_id, "Run triggered from the web");
    Ok(answer(
        &input,
        StatusCode::CREATED,
        json!({ "run_id": run_id, "dag_id": dag_id, "url": url }),
        url.clone(),
    ))
}

async fn trigger_run(
    state: &AppState,
    dag_id: &str,
    input: &Submitted,
) -> Result<String, WebError> {
    let dag = state.folder().get(dag_id).ok_or_else(|| {
        WebError::not_found(format!(
            "no DAG {dag_id}; GET /api/dags lists the loaded DAGs"
        ))
    })?;
    let mut params = BTreeMap::new();
    match input.fields.get("params") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (k, v) in given {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                params.insert(k.clone(), text);
            }
        }
        Some(_) => return Err(WebError::bad_request("`params` must be an object")),
    }
    let logical_date = match input.fields.get("logical_date") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(
            DateTime::parse_from_rfc3339(s.trim())
                .map_err(|e| {
                    WebError::bad_request(format!(
                        "logical_date {s:?} is not RFC 3339 (e.g. 2024-01-31T10:00:00Z): {e}"
                    ))
                })?
                .with_timezone(&Utc),
        ),
        Some(_) => return Err(WebError::bad_request("`logical_date` must be a string")),
    };
    let request = RunRequest {
        params,
        logical_date,
        trigger: Trigger::Manual,
    };
    state
        .blocking(move |s| s.launcher().start(dag, request).map_err(WebError::from))
        .await
}

async fn set_paused(
    state: AppState,
    dag_id: String,
    input: Submitted,
    paused: bool,
) -> Result<Response, WebError> {
    let html = input.html;
    let id = dag_id.clone();
    let done = state
        .blocking(move |s| {
            if s.folder().get(&id).is_none() {
                return Err(WebError::not_found(format!(
                    "no DAG {id}; GET /api/dags lists the loaded DAGs"
                )));
            }
            s.store().set_paused(&id, paused).map_err(WebError::from)
        })
        .await;
    if let Err(e) = done {
        return Err(if html { e.page() } else { e });
    }
    state.cron().wake();
    tracing::info!(
        dag_id,
        paused,
        "DAG schedule paused or unpaused from the web"
    );
    Ok(answer(
        &input,
        StatusCode::OK,
        json!({ "dag_id": dag_id, "paused": paused }),
        format!("/dags/{}", enc(&dag_id)),
    ))
}

/// `POST /api/dags/{dag_id}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
    input: Submitted,
) -> Result<Response, WebError> {
    set_paused(state, dag_id, input, true).await
}

/// `POST /api/dags/{dag_id}/unpause`.
pub async fn unpause(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
    input: Submitted,
) -> Result<Response, WebError> {
    set_paused(state, dag_id, input, false).await
}

/// `GET /api/runs/{run_id}`.
pub async fn run(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<view::RunDetail>, WebError> {
    Ok(Json(state.blocking(move |s| view::run(s, &run_id)).await?))
}

/// `GET /api/runs/{run_id}/notifications`: the run's notification deliveries, oldest first.
pub async fn notifications(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, WebError> {
    let list = state
        .blocking(move |s| {
            if s.store().run(&run_id)?.is_none() {
                return Err(WebError::not_found(format!(
                    "no run {run_id}; GET /api/runs lists the runs"
                )));
            }
            Ok(s.store().notifications(&run_id)?)
        })
        .await?;
    Ok(Json(json!({ "notifications": list })))
}

/// `POST /api/runs/{run_id}/cancel`: cancels a run this server drives.
pub async fn cancel(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    input: Submitted,
) -> Result<Response, WebError> {
    let html = input.html;
    let url = format!("/runs/{}", enc(&run_id));
    // The store decides whether the run is over: the launcher forgets a run a moment after it
    // is recorded as finished.
    let id = run_id.clone();
    let record = state
        .blocking(move |s| s.store().run(&id).map_err(WebError::from))
        .await?;
    let e = match record {
        None => WebError::not_found(format!("no run {run_id}")),
        Some(r) if r.state != RunState::Running => WebError::new(
            StatusCode::CONFLICT,
            format!("run {run_id} already finished ({})", r.state),
        ),
        Some(_)
            if state
                .launcher()
                .cancel(&run_id, "cancelled from the web UI") =>
        {
            tracing::info!(run_id, "Run cancelled from the web");
            return Ok(answer(
                &input,
                StatusCode::ACCEPTED,
                json!({ "run_id": run_id, "cancelling": true }),
                url,
            ));
        }
        Some(r) => WebError::new(
            StatusCode::CONFLICT,
            format!(
                "run {run_id} is driven by another orchestrator process (pid {} on {}); stop it there (Ctrl-C)",
                r.owner.pid, r.owner.host
            ),
        ),
    };
    Err(if html { e.page() } else { e })
}

/// `GET /api/runs/{run_id}/tasks/{task_id}`.
pub async fn task(
    State(state): State<AppState>,
    Path((run_id, task_id)): Path<(String, String)>,
) -> Result<Json<view::TaskInfo>, WebError> {
    let detail = state.blocking(move |s| view::run(s, &run_id)).await?;
    detail
        .tasks
        .into_iter()
        .find(|t| t.task_id == task_id)
        .map(Json)
        .ok_or_else(|| {
            WebError::not_found(format!("run {} has no task {task_id}", detail.run.run_id))
        })
}

/// `?try=&offset=&limit=`.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    #[serde(rename = "try")]
    try_number: Option<u32>,
    offset: Option<u64>,
    limit: Option<u64>,
}

/// `GET /api/runs/{run_id}/tasks/{task_id}/log`: a chunk of a try's log from `offset`.
pub async fn log(
    State(state): State<AppState>,
    Path((run_id, task_id)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Json<view::LogChunk>, WebError> {
    let chunk = state
        .blocking(move |s| {
            view::log(
                s,
                &run_id,
                &task_id,
                q.try_number,
                q.offset.unwrap_or(0),
                q.limit.unwrap_or(view::DEFAULT_LOG_CHUNK),
            )
        })
        .await?;
    Ok(Json(chunk))
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, WebError> {
    let body = state
        .blocking(|s| {
            let counts = s.store().state_counts()?;
            let dags: Vec<String> = s.folder().snapshot().dags.keys().cloned().collect();
            s.metrics().set_counts(&counts, &dags);
            s.metrics()
                .encode()
                .map_err(|e| WebError::internal(format!("encoding metrics: {e}")))
        })
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
