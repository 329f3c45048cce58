//! Backfills and upcoming fire times over HTTP (documented in `docs/api.md`): start a backfill
//! of a DAG (or plan it with `dry_run`), list the server's backfills with their progress, cancel
//! one; the DAG's next fire times as `orchestrator next` prints them.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{Submitted, answer};
use super::error::WebError;
use super::state::AppState;
use super::view::enc;
use crate::cron::backfill::{self, BackfillError, Reprocess};

fn text(input: &Submitted, key: &str) -> Option<String> {
    match input.field(key)? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.trim().to_owned()),
        other => Some(other.to_string()),
    }
}

fn no_dag(dag_id: &str) -> WebError {
    WebError::not_found(format!(
        "no DAG {dag_id}; GET /api/dags lists the loaded DAGs"
    ))
}

/// `POST /api/dags/{dag_id}/backfills`: `from`, `to` (RFC 3339, or a date in the DAG's zone;
/// `to` is inclusive), `reprocess` (`none`, `failed`, `all`), `max_active_runs` (default 1),
/// `dry_run` (the plan only). Answers the plan (dry run, 200) or the backfill's id (202).
pub async fn start(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
    input: Submitted,
) -> Result<Response, WebError> {
    let html = input.is_html();
    let result = start_inner(&state, &dag_id, &input).await;
    match result {
        Ok((status, body)) => {
            let go = format!("/dags/{}", enc(&dag_id));
            Ok(answer(&input, status, body, go))
        }
        Err(e) if html => Err(e.page()),
        Err(e) => Err(e),
    }
}

async fn start_inner(
    state: &AppState,
    dag_id: &str,
    input: &Submitted,
) -> Result<(StatusCode, Value), WebError> {
    let dag = state.folder().get(dag_id).ok_or_else(|| no_dag(dag_id))?;
    let date = |key: &str, end: bool| {
        let s = text(input, key)
            .ok_or_else(|| WebError::bad_request(format!("`{key}` is required (a date)")))?;
        backfill::parse_date(&s, dag.timezone, end)
            .map_err(|e| WebError::bad_request(format!("`{key}`: {e}")))
    };
    let (from, to) = (date("from", false)?, date("to", true)?);
    let reprocess: Reprocess = text(input, "reprocess")
        .unwrap_or_default()
        .parse()
        .map_err(WebError::bad_request)?;
    let max_active = match text(input, "max_active_runs") {
        None => 1,
        Some(n) => n.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            WebError::bad_request(format!(
                "`max_active_runs` {n:?} must be a whole number >= 1"
            ))
        })?,
    };
    let dry_run = matches!(
        text(input, "dry_run").as_deref(),
        Some("true" | "on" | "1" | "yes")
    );
    let d = dag.clone();
    let slots = state
        .blocking(move |s| {
            backfill::plan(&d, s.store().as_ref(), from, to, reprocess).map_err(|e| match e {
                BackfillError::Store(e) => WebError::from(e),
                other => WebError::bad_request(other.to_string()),
            })
        })
        .await?;
    let runs = slots.iter().filter(|s| s.action.runs()).count();
    let summary = format!(
        "{} slot(s) from {} to {}: {runs} to run, {} skipped",
        slots.len(),
        from.to_rfc3339(),
        to.to_rfc3339(),
        slots.len() - runs
    );
    if dry_run {
        return Ok((
            StatusCode::OK,
            json!({ "dag_id": dag_id, "dry_run": true, "summary": summary, "slots": slots }),
        ));
    }
    let id = state.backfills().start(
        state.launcher(),
        dag,
        slots,
        (from, to, reprocess, max_active),
        state.shutdown_token(),
    );
    tracing::info!(dag_id, backfill = %id, %summary, "Backfill started from the web");
    Ok((
        StatusCode::ACCEPTED,
        json!({ "dag_id": dag_id, "backfill_id": id, "summary": summary }),
    ))
}

/// `GET /api/backfills`: the server's backfills, newest first, with their progress.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "backfills": state.backfills().list(None) }))
}

/// `GET /api/dags/{dag_id}/backfills`.
pub async fn list_dag(State(state): State<AppState>, Path(dag_id): Path<String>) -> Json<Value> {
    Json(json!({ "backfills": state.backfills().list(Some(&dag_id)) }))
}

/// `POST /api/backfills/{backfill_id}/cancel`: no further slot starts, running runs are cancelled.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    input: Submitted,
) -> Result<Response, WebError> {
    if !state.backfills().cancel(&id) {
        return Err(WebError::not_found(format!(
            "no backfill {id}; GET /api/backfills lists them"
        )));
    }
    let dag = state
        .backfills()
        .list(None)
        .into_iter()
        .find(|b| b.id == id)
        .map(|b| b.dag_id)
        .unwrap_or_default();
    tracing::info!(backfill = %id, "Backfill cancelled from the web");
    Ok(answer(
        &input,
        StatusCode::ACCEPTED,
        json!({ "backfill_id": id, "cancelling": true }),
        format!("/dags/{}", enc(&dag)),
    ))
}

/// `?count=&after=`.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    count: Option<usize>,
    after: Option<DateTime<Utc>>,
}

/// `GET /api/dags/{dag_id}/next`: the next fire times with their data intervals.
pub async fn next(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
    Query(q): Query<NextQuery>,
) -> Result<Json<Value>, WebError> {
    let dag = state.folder().get(&dag_id).ok_or_else(|| no_dag(&dag_id))?;
    let schedule = dag
        .schedule
        .as_ref()
        .ok_or_else(|| WebError::bad_request(format!("DAG {dag_id} has no schedule")))?;
    let after = q.after.unwrap_or_else(Utc::now);
    let slots = crate::cron::upcoming::upcoming(schedule, after, q.count.unwrap_or(5).min(1000));
    Ok(Json(json!({
        "dag_id": dag_id,
        "schedule": schedule.expr,
        "timezone": dag.timezone.name(),
        "after": after,
        "next": slots,
    })))
}
