//! The HTML pages and their live fragments. Each page embeds its fragment, and the page's script
//! re-fetches the fragment (`/fragments/...`) every second while something on it runs (every
//! five seconds otherwise, so runs started by the CLI show up), so only what changes is redrawn.
//! Everything is rendered through [`render`].

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use chrono::Utc;
use serde::Deserialize;

use super::error::WebError;
use super::state::AppState;
use super::svg::{self, Chart, Gantt, Graph};
use super::view::{self, DagInfo, RunDetail, RunInfo, TaskInfo, enc};
use crate::cron::DagFileError;
use crate::dag::Dag;
use crate::store::{NotificationRecord, RunState, TaskState};

/// Runs shown in the DAG page's grid.
const GRID_RUNS: usize = 25;
/// Runs shown as squares in the DAG list.
const LIST_RUNS: usize = 12;

/// Renders a template: the one place pages become HTML.
pub fn render(t: &impl Template) -> Result<Html<String>, WebError> {
    t.render()
        .map(Html)
        .map_err(|e| WebError::internal(format!("rendering the page: {e}")).page())
}

async fn page<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&AppState) -> Result<T, WebError> + Send + 'static,
) -> Result<T, WebError> {
    state.blocking(f).await.map_err(WebError::page)
}

// ---- The DAG list -------------------------------------------------------------------------

/// The live part of the DAG list.
#[derive(Template)]
#[template(path = "dags_live.html")]
pub struct DagsLive {
    dags: Vec<DagInfo>,
    errors: Vec<DagFileError>,
    active: bool,
    csrf: String,
    catchup: String,
}

#[derive(Template)]
#[template(path = "dags.html")]
struct DagsPage {
    csrf: String,
    live: DagsLive,
}

fn dags_live(state: &AppState) -> Result<DagsLive, WebError> {
    let (dags, errors) = view::dags(state, LIST_RUNS)?;
    Ok(DagsLive {
        active: dags.iter().any(DagInfo::active),
        dags,
        errors,
        csrf: state.security().csrf_token.clone(),
        catchup: format!("{:?}", state.cron().policy()).to_lowercase(),
    })
}

/// `GET /`.
pub async fn dags(State(state): State<AppState>) -> Result<Html<String>, WebError> {
    let live = page(&state, dags_live).await?;
    render(&DagsPage {
        csrf: state.security().csrf_token.clone(),
        live,
    })
}

/// `GET /fragments/dags`.
pub async fn dags_fragment(State(state): State<AppState>) -> Result<Html<String>, WebError> {
    render(&page(&state, dags_live).await?)
}

// ---- One DAG ------------------------------------------------------------------------------

/// A column of the grid: one run.
pub struct GridRun {
    run: RunInfo,
    /// State per task id.
    states: HashMap<String, TaskState>,
}

impl GridRun {
    fn cell(&self, task_id: &str) -> String {
        self.states
            .get(task_id)
            .map_or_else(|| "none".to_owned(), |s| s.as_str().to_owned())
    }

    fn log_url(&self, task_id: &str) -> String {
        format!("/runs/{}/tasks/{}/log", enc(&self.run.run_id), enc(task_id))
    }
}

/// The live part of a DAG's page: the graph (of the selected run), the grid, the runs.
#[derive(Template)]
#[template(path = "dag_live.html")]
pub struct DagLive {
    dag: DagInfo,
    graph: Graph,
    graph_run: Option<RunInfo>,
    grid: Vec<GridRun>,
    active: bool,
    csrf: String,
    /// The server's backfills of this DAG, newest first.
    backfills: Vec<crate::cron::backfill::BackfillStatus>,
    /// Its newest runs with the trigger `backfill`.
    backfill_runs: Vec<RunInfo>,
}

/// A param field of the trigger form.
pub struct ParamField {
    name: String,
    value: String,
    kind: &'static str,
}

#[derive(Template)]
#[template(path = "dag.html")]
struct DagPage {
    csrf: String,
    dag_id: String,
    fragment: String,
    params: Vec<ParamField>,
    live: DagLive,
}

/// `?run=` selects the run drawn in the graph.
#[derive(Debug, Default, Deserialize)]
pub struct DagQuery {
    run: Option<String>,
}

fn dag_live(
    state: &AppState,
    dag_id: &str,
    selected: Option<&str>,
) -> Result<(DagLive, Arc<Dag>), WebError> {
    let (info, dag) = view::dag(state, dag_id, GRID_RUNS)?;
    let store = state.store();
    let mut grid = Vec::new();
    for run in info.recent_runs.iter().rev() {
        let states = store
            .task_instances(&run.run_id)?
            .into_iter()
            .map(|t| (t.task_id, t.state))
            .collect();
        grid.push(GridRun {
            run: run.clone(),
            states,
        });
    }
    let graph_run = match selected {
        Some(id) => grid.iter().find(|g| g.run.run_id == id),
        None => grid.last(),
    };
    let states = graph_run.map(|g| g.states.clone()).unwrap_or_default();
    let run_for_links = graph_run.map(|g| g.run.run_id.clone());
    let graph = svg::graph(&dag, &states, |task| {
        run_for_links
            .as_ref()
            .map(|r| format!("/runs/{}/tasks/{}/log", enc(r), enc(task)))
    });
    let backfill_runs = view::runs(
        state,
        &crate::store::RunFilter {
            dag_id: Some(dag.id.clone()),
            trigger: Some(crate::store::Trigger::Backfill),
            limit: GRID_RUNS,
            ..Default::default()
        },
    )?;
    let live = DagLive {
        backfills: state.backfills().list(Some(&dag.id)),
        backfill_runs,
        active: info.active(),
        graph_run: graph_run.map(|g| g.run.clone()),
        dag: info,
        graph,
        grid,
        csrf: state.security().csrf_token.clone(),
    };
    Ok((live, dag))
}

fn fragment_url(dag_id: &str, selected: Option<&str>) -> String {
    match selected {
        Some(run) => format!("/fragments/dags/{}?run={}", enc(dag_id), enc(run)),
        None => format!("/fragments/dags/{}", enc(dag_id)),
    }
}

/// `GET /dags/{dag_id}`.
pub async fn dag(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
    Query(q): Query<DagQuery>,
) -> Result<Html<String>, WebError> {
    let id = dag_id.clone();
    let selected = q.run.clone();
    let (live, dag) = page(&state, move |s| dag_live(s, &id, selected.as_deref())).await?;
    let params = dag
        .params
        .iter()
        .map(|(name, default)| ParamField {
            name: name.clone(),
            value: match default {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            kind: match default {
                serde_json::Value::Bool(_) => "boolean",
                serde_json::Value::Number(n) if n.is_f64() => "number",
                serde_json::Value::Number(_) => "integer",
                serde_json::Value::String(_) => "string",
                _ => "JSON",
            },
        })
        .collect();
    render(&DagPage {
        csrf: state.security().csrf_token.clone(),
        fragment: fragment_url(&dag_id, q.run.as_deref()),
        dag_id,
        params,
        live,
    })
}

/// `GET /fragments/dags/{dag_id}`.
pub async fn dag_fragment(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
    Query(q): Query<DagQuery>,
) -> Result<Html<String>, WebError> {
    let (live, _) = page(&state, move |s| dag_live(s, &dag_id, q.run.as_deref())).await?;
    render(&live)
}

// ---- One run ------------------------------------------------------------------------------

/// The live part of a run's page.
#[derive(Template)]
#[template(path = "run_live.html")]
pub struct RunLive {
    run: RunInfo,
    tasks: Vec<TaskInfo>,
    /// Some task failed (the "clear failed" button).
    failed: bool,
    /// Its repairs.
    history: Vec<crate::store::RunAction>,
    notifications: Vec<NotificationRecord>,
    /// A notification is still being delivered (the page refreshes as often as while running).
    sending: bool,
    gantt: Gantt,
    charts: Vec<Chart>,
    active: bool,
    csrf: String,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    csrf: String,
    run_id: String,
    dag_id: String,
    dag_url: String,
    fragment: String,
    live: RunLive,
    /// The run's notes (edited in place, outside the live fragment).
    notes: String,
    /// Its task ids, for the mark form.
    task_ids: Vec<String>,
    /// The DAG version it ran, with the diff to the file now.
    version: Option<super::repair::RunDagVersion>,
}

fn run_live(state: &AppState, run_id: &str) -> Result<RunLive, WebError> {
    let RunDetail {
        run,
        tasks,
        notes: _,
        history,
        notifications,
    } = view::run(state, run_id)?;
    let gantt = svg::gantt(run.started_at, &tasks, Utc::now());
    let charts = tasks
        .iter()
        .flat_map(|t| {
            t.series()
                .iter()
                .filter_map(|s| svg::chart(&t.task_id, s))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(RunLive {
        active: run.state == RunState::Running,
        failed: tasks
            .iter()
            .any(|t| matches!(t.state, TaskState::Failed | TaskState::UpstreamFailed)),
        history,
        sending: notifications.iter().any(|n| !n.state.is_final()),
        run,
        tasks,
        notifications,
        gantt,
        charts,
        csrf: state.security().csrf_token.clone(),
    })
}

/// `GET /runs/{run_id}`.
pub async fn run(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Html<String>, WebError> {
    let id = run_id.clone();
    let (live, notes, version) = page(&state, move |s| {
        let notes = s
            .store()
            .run_notes(&id)?
            .map(|n| n.text)
            .unwrap_or_default();
        Ok((
            run_live(s, &id)?,
            notes,
            super::repair::dag_version(s, &id)?,
        ))
    })
    .await?;
    render(&RunPage {
        task_ids: live.tasks.iter().map(|t| t.task_id.clone()).collect(),
        notes,
        version,
        csrf: state.security().csrf_token.clone(),
        dag_id: live.run.dag_id.clone(),
        dag_url: live.run.dag_url(),
        fragment: format!("/fragments/runs/{}", enc(&run_id)),
        run_id,
        live,
    })
}

/// `GET /fragments/runs/{run_id}`.
pub async fn run_fragment(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Html<String>, WebError> {
    render(&page(&state, move |s| run_live(s, &run_id)).await?)
}

// ---- A task's log -------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "log.html")]
struct LogPage {
    csrf: String,
    run_id: String,
    run_url: String,
    dag_id: String,
    dag_url: String,
    task_id: String,
    chunk: view::LogChunk,
    tries: Vec<(u32, String)>,
    api_url: String,
    state: String,
}

/// `?try=N`.
#[derive(Debug, Default, Deserialize)]
pub struct TryQuery {
    #[serde(rename = "try")]
    try_number: Option<u32>,
}

/// `GET /runs/{run_id}/tasks/{task_id}/log`: the log of one try, followed while it runs.
pub async fn log(
    State(state): State<AppState>,
    Path((run_id, task_id)): Path<(String, String)>,
    Query(q): Query<TryQuery>,
) -> Result<Html<String>, WebError> {
    let (rid, tid) = (run_id.clone(), task_id.clone());
    let (chunk, detail) = page(&state, move |s| {
        // The last megabyte now; the script follows from there.
        let head = view::log(s, &rid, &tid, q.try_number, 0, 0)?;
        let start = head.size.saturating_sub(view::MAX_LOG_CHUNK);
        let chunk = view::log(s, &rid, &tid, q.try_number, start, view::MAX_LOG_CHUNK)?;
        Ok((chunk, view::run(s, &rid)?))
    })
    .await?;
    let task_state = detail
        .tasks
        .iter()
        .find(|t| t.task_id == task_id)
        .map_or_else(|| "none".to_owned(), |t| t.state.as_str().to_owned());
    let base = format!("/runs/{}/tasks/{}/log", enc(&run_id), enc(&task_id));
    render(&LogPage {
        csrf: state.security().csrf_token.clone(),
        run_url: format!("/runs/{}", enc(&run_id)),
        dag_id: detail.run.dag_id.clone(),
        dag_url: detail.run.dag_url(),
        tries: chunk
            .tries
            .iter()
            .map(|n| (*n, format!("{base}?try={n}")))
            .collect(),
        api_url: if chunk.try_number > 0 {
            format!(
                "/api/runs/{}/tasks/{}/log?try={}",
                enc(&run_id),
                enc(&task_id),
                chunk.try_number
            )
        } else {
            format!("/api/runs/{}/tasks/{}/log", enc(&run_id), enc(&task_id))
        },
        state: task_state,
        run_id,
        task_id,
        chunk,
    })
}
