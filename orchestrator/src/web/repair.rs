//! Repairing runs from the UI and the API: clear (with a dry run), mark a task instance, resume
//! an interrupted run, edit the run's notes, and the DAG version a run ran with its diff against
//! the current file. The runs are driven again by this server's launcher.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};

use super::api::{Submitted, answer};
use super::error::WebError;
use super::state::AppState;
use super::view::enc;
use crate::scheduler::{ClearRequest, RepairPlan};
use crate::store::TaskState;

/// A boolean field: JSON `true`, or a form's checkbox (`on`, `true`, `1`).
fn flag(input: &Submitted, key: &str) -> bool {
    match input.field(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "on" | "true" | "1" | "yes"),
        _ => false,
    }
}

/// A list of task ids: a JSON array, or a form's text (comma or space separated).
fn task_list(input: &Submitted) -> Result<Vec<String>, WebError> {
    match input.field("tasks") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| WebError::bad_request("`tasks` must be an array of task ids"))
            })
            .collect(),
        Some(Value::String(s)) => Ok(s
            .split([',', ' '])
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(_) => Err(WebError::bad_request(
            "`tasks` must be an array of task ids",
        )),
    }
}

fn text_field(input: &Submitted, key: &str) -> Option<String> {
    input
        .field(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn plan_json(plan: &RepairPlan) -> Value {
    json!(plan.tasks)
}

/// Answers an error as a page for a form post, as JSON otherwise.
fn fail(input: &Submitted, e: WebError) -> WebError {
    if input.is_html() { e.page() } else { e }
}

/// `POST /api/runs/{run_id}/clear`: `tasks` (ids), `downstream`, `failed`, `dry_run`.
pub async fn clear(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    input: Submitted,
) -> Result<Response, WebError> {
    let req = ClearRequest {
        tasks: task_list(&input).map_err(|e| fail(&input, e))?,
        downstream: flag(&input, "downstream"),
        failed: flag(&input, "failed"),
    };
    let dry_run = flag(&input, "dry_run");
    let id = run_id.clone();
    let plan = state
        .blocking(move |s| {
            let launcher = s.launcher();
            if dry_run {
                launcher.engine().plan_clear(&id, &req)
            } else {
                launcher.clear(&id, &req)
            }
            .map_err(WebError::from)
        })
        .await
        .map_err(|e| fail(&input, e))?;
    if !dry_run {
        tracing::info!(run_id, tasks = ?plan.task_ids(), "Run cleared from the web");
    }
    Ok(answer(
        &input,
        if dry_run {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        },
        json!({
            "run_id": run_id,
            "dry_run": dry_run,
            "tasks": plan_json(&plan),
            "message": format!(
                "{} run {run_id}: {} task instance(s) {}: {}",
                if dry_run { "Dry run: clearing" } else { "Cleared" },
                plan.tasks.len(),
                if dry_run { "would run again" } else { "run again" },
                plan.task_ids().join(", ")
            ),
        }),
        format!("/runs/{}", enc(&run_id)),
    ))
}

/// `POST /api/runs/{run_id}/tasks/{task_id}/mark`: `state` (`success` or `failed`), `reason`.
pub async fn mark(
    State(state): State<AppState>,
    Path((run_id, task_id)): Path<(String, String)>,
    input: Submitted,
) -> Result<Response, WebError> {
    let to = match input.field("state").and_then(Value::as_str) {
        Some("success") => TaskState::Success,
        Some("failed") => TaskState::Failed,
        other => {
            return Err(fail(
                &input,
                WebError::bad_request(format!(
                    "`state` must be \"success\" or \"failed\", got {other:?}"
                )),
            ));
        }
    };
    let Some(reason) = text_field(&input, "reason") else {
        return Err(fail(
            &input,
            WebError::bad_request("say why in `reason`: it is kept in the run's history"),
        ));
    };
    let (id, task) = (run_id.clone(), task_id.clone());
    let plan = state
        .blocking(move |s| {
            s.launcher()
                .mark(&id, &task, to, Some(reason))
                .map_err(WebError::from)
        })
        .await
        .map_err(|e| fail(&input, e))?;
    tracing::info!(run_id, task_id, state = %to, "Task instance marked from the web");
    Ok(answer(
        &input,
        StatusCode::ACCEPTED,
        json!({
            "run_id": run_id,
            "task_id": task_id,
            "state": to,
            "tasks": plan_json(&plan),
            "message": format!("Marked {task_id} of run {run_id} {to}"),
        }),
        format!("/runs/{}", enc(&run_id)),
    ))
}

/// `POST /api/runs/{run_id}/resume`: takes over a run whose orchestrator died.
pub async fn resume(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    input: Submitted,
) -> Result<Response, WebError> {
    let id = run_id.clone();
    let plan = state
        .blocking(move |s| s.launcher().resume(&id).map_err(WebError::from))
        .await
        .map_err(|e| fail(&input, e))?;
    tracing::info!(run_id, "Run resumed from the web");
    Ok(answer(
        &input,
        StatusCode::ACCEPTED,
        json!({
            "run_id": run_id,
            "tasks": plan_json(&plan),
            "message": format!("Resumed run {run_id}"),
        }),
        format!("/runs/{}", enc(&run_id)),
    ))
}

/// `POST /api/runs/{run_id}/notes`: `text` replaces the run's notes.
pub async fn notes(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    input: Submitted,
) -> Result<Response, WebError> {
    let text = match input.field("text") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => {
            return Err(fail(
                &input,
                WebError::bad_request("`text` must be a string"),
            ));
        }
    };
    let (id, body) = (run_id.clone(), text.clone());
    state
        .blocking(move |s| {
            s.store()
                .set_run_notes(&id, &body, chrono::Utc::now())
                .map_err(WebError::from)
        })
        .await
        .map_err(|e| fail(&input, e))?;
    Ok(answer(
        &input,
        StatusCode::OK,
        json!({ "run_id": run_id, "notes": text, "message": "Notes saved" }),
        format!("/runs/{}", enc(&run_id)),
    ))
}

/// The DAG version a run ran, and how the current file differs from it.
#[derive(Clone, Debug, Serialize)]
pub struct RunDagVersion {
    /// SHA-256 of the text the run ran.
    pub hash: String,
    /// That text.
    pub text: String,
    /// The DAG file now, if it can be read.
    pub current_file: Option<String>,
    /// SHA-256 of the file now.
    pub current_hash: Option<String>,
    /// Whether the file still holds the text the run ran.
    pub same: bool,
    /// A unified diff from the run's version to the file now (empty when the same).
    pub diff: String,
}

/// The DAG version of a run with its diff to the current file; `None` for runs stored before
/// versions were kept.
pub fn dag_version(state: &AppState, run_id: &str) -> Result<Option<RunDagVersion>, WebError> {
    let run = state
        .store()
        .run(run_id)?
        .ok_or_else(|| WebError::not_found(format!("no run {run_id}")))?;
    let Some(hash) = run.dag_hash else {
        return Ok(None);
    };
    let Some(version) = state.store().dag_version(&hash)? else {
        return Ok(None);
    };
    let current = run
        .dag_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok());
    let current_hash = current.as_deref().map(crate::store::rules::dag_hash);
    let same = current_hash.as_deref() == Some(hash.as_str());
    let diff = match &current {
        Some(now) if !same => similar::TextDiff::from_lines(&version.text, now)
            .unified_diff()
            .context_radius(3)
            .header(
                &format!("run {run_id} ({})", &hash[..12]),
                &format!(
                    "{} now",
                    run.dag_file
                        .as_ref()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default()
                ),
            )
            .to_string(),
        _ => String::new(),
    };
    Ok(Some(RunDagVersion {
        hash,
        text: version.text,
        current_file: run.dag_file.map(|f| f.display().to_string()),
        current_hash,
        same,
        diff,
    }))
}

/// `GET /api/runs/{run_id}/dag`: the DAG text the run ran (its hash) and its diff to the file now.
pub async fn dag(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<RunDagVersion>, WebError> {
    let id = run_id.clone();
    state
        .blocking(move |s| dag_version(s, &id))
        .await?
        .map(Json)
        .ok_or_else(|| {
            WebError::not_found(format!(
                "run {run_id} was stored before DAG versions were kept"
            ))
        })
}
