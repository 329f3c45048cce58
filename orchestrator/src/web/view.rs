//! The data the API returns and the pages show, read from the store, the DAG folder and the runs
//! this process drives. Blocking: call through [`AppState::blocking`].

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::WebError;
use super::state::AppState;
use crate::cron::{DagFileError, LiveTask};
use crate::dag::Dag;
use crate::series::{self, Series};
use crate::store::{
    Liveness, NotificationRecord, RunFilter, RunRecord, RunState, TaskInstance, TaskState, TaskTry,
    Trigger,
};

/// Largest log chunk one request returns.
pub const MAX_LOG_CHUNK: u64 = 1024 * 1024;
/// Default log chunk.
pub const DEFAULT_LOG_CHUNK: u64 = 256 * 1024;

/// What a path segment keeps as is: RFC 3986's unreserved characters `A-Z a-z 0-9 - . _ ~`.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a path segment (everything but `A-Z a-z 0-9 - . _ ~`).
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// A time as the UI shows it: `2024-01-31 10:07:03 UTC`, or `-`.
pub fn fmt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// Seconds as the UI shows them: `850ms`, `12.3s`, `4m 05s`, `2h 03m`.
pub fn fmt_secs(secs: Option<f64>) -> String {
    let Some(s) = secs else {
        return "-".into();
    };
    if s < 1.0 {
        format!("{}ms", (s * 1000.0).round() as u64)
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h {:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

fn secs_between(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<f64> {
    Some(((b? - a?).num_milliseconds().max(0)) as f64 / 1000.0)
}

/// A task of a DAG as declared.
#[derive(Clone, Debug, Serialize)]
pub struct TaskSpec {
    /// Id.
    pub task_id: String,
    /// Kind (`command`, `kafka.wait_lag`...).
    pub kind: String,
    /// What it is for.
    pub description: Option<String>,
    /// Direct upstream task ids.
    pub upstream: Vec<String>,
    /// Trigger rule.
    pub trigger_rule: String,
    /// Tries after the first.
    pub retries: u32,
    /// Per-try time limit.
    pub timeout: Option<String>,
}

/// A run, as listed.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    /// Id.
    pub run_id: String,
    /// DAG.
    pub dag_id: String,
    /// State.
    pub state: RunState,
    /// What started it.
    pub trigger: Trigger,
    /// Logical date.
    pub logical_date: DateTime<Utc>,
    /// The logical date in the DAG's time zone (when the DAG is loaded).
    pub logical_date_local: Option<String>,
    /// The run's data interval `[start, end)` (when the DAG is loaded).
    pub data_interval: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds from start to end (or to now while running).
    pub duration_seconds: Option<f64>,
    /// Why it ended so.
    pub note: Option<String>,
    /// Effective params.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Whether this server drives it (it can cancel it).
    pub driven_here: bool,
    /// The process that drives it (or drove it last): a server or CLI command, its host and pid.
    pub owner: crate::store::Owner,
    /// Its page.
    pub url: String,
    /// SHA-256 of the DAG text it ran (`GET /api/runs/{run_id}/dag` has the text).
    pub dag_hash: Option<String>,
    /// Running, but its orchestrator died: `POST /api/runs/{run_id}/resume` takes it over.
    pub interrupted: bool,
}

impl RunInfo {
    fn new(r: RunRecord, state: &AppState, live: &Liveness, now: DateTime<Utc>) -> Self {
        let driven_here = state.launcher().drives(&r.run_id);
        let end = r.ended_at.or((r.state == RunState::Running).then_some(now));
        let dag = state.folder().get(&r.dag_id);
        Self {
            interrupted: r.is_orphaned(&|o| live.is_alive(o)),
            dag_hash: r.dag_hash.clone(),
            logical_date_local: dag
                .as_ref()
                .map(|d| crate::cron::upcoming::local(r.logical_date, d.timezone)),
            data_interval: dag.as_ref().map(|d| d.data_interval(r.logical_date)),
            url: format!("/runs/{}", enc(&r.run_id)),
            duration_seconds: secs_between(Some(r.started_at), end),
            run_id: r.run_id,
            dag_id: r.dag_id,
            state: r.state,
            trigger: r.trigger,
            logical_date: r.logical_date,
            started_at: r.started_at,
            ended_at: r.ended_at,
            note: r.note,
            params: r.params,
            driven_here,
            owner: r.owner,
        }
    }

    /// Start, formatted.
    pub fn started(&self) -> String {
        fmt_time(Some(self.started_at))
    }

    /// Logical date, formatted.
    pub fn logical(&self) -> String {
        match &self.logical_date_local {
            Some(local) if !local.ends_with("UTC (+00:00)") => {
                format!("{} ({local})", fmt_time(Some(self.logical_date)))
            }
            _ => fmt_time(Some(self.logical_date)),
        }
    }

    /// Duration, formatted.
    pub fn duration(&self) -> String {
        fmt_secs(self.duration_seconds)
    }

    /// The params as JSON text.
    pub fn params_text(&self) -> String {
        serde_json::Value::Object(self.params.clone()).to_string()
    }

    /// Its DAG's page.
    pub fn dag_url(&self) -> String {
        format!("/dags/{}", enc(&self.dag_id))
    }
}

/// A DAG with its schedule state and recent runs.
#[derive(Clone, Debug, Serialize)]
pub struct DagInfo {
    /// Id.
    pub dag_id: String,
    /// What it does.
    pub description: Option<String>,
    /// Its file.
    pub file: Option<String>,
    /// Cron expression.
    pub schedule: Option<String>,
    /// The IANA zone its schedule is evaluated in.
    pub timezone: String,
    /// The next fire times (from the scheduler's next run, or from now) with their data intervals.
    pub upcoming: Vec<crate::cron::upcoming::Upcoming>,
    /// Whether its schedule is paused.
    pub paused: bool,
    /// The next slot the scheduler will fire.
    pub next_run: Option<DateTime<Utc>>,
    /// Slots held back by `max_active_runs`.
    pub waiting_slots: usize,
    /// Slots dropped while the DAG was paused (since the server started).
    pub skipped_while_paused: u64,
    /// Runs allowed at once.
    pub max_active_runs: u32,
    /// Tasks of one run allowed at once.
    pub max_active_tasks: usize,
    /// Params and their defaults.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Tasks in topological order.
    pub tasks: Vec<TaskSpec>,
    /// Newest runs first.
    pub recent_runs: Vec<RunInfo>,
    /// Its page.
    pub url: String,
}

impl DagInfo {
    /// Next run, formatted.
    pub fn next(&self) -> String {
        if self.paused {
            "paused".into()
        } else if self.schedule.is_none() {
            "-".into()
        } else {
            fmt_time(self.next_run)
        }
    }

    /// The next run in the DAG's zone, when it is not UTC.
    pub fn next_local(&self) -> Option<String> {
        let tz: chrono_tz::Tz = self.timezone.parse().ok()?;
        (tz != chrono_tz::UTC && !self.paused)
            .then(|| self.next_run.map(|t| crate::cron::upcoming::local(t, tz)))
            .flatten()
    }

    /// An upcoming slot's data interval in the DAG's zone.
    pub fn interval(&self, u: &crate::cron::upcoming::Upcoming) -> String {
        let tz: chrono_tz::Tz = self.timezone.parse().unwrap_or(chrono_tz::UTC);
        let f = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string();
        format!("[{}, {})", f(u.data_interval_start), f(u.data_interval_end))
    }

    /// Whether any of its recent runs is running.
    pub fn active(&self) -> bool {
        self.recent_runs
            .iter()
            .any(|r| r.state == RunState::Running)
    }

    /// The recent runs oldest first (squares read left to right).
    pub fn squares(&self) -> Vec<&RunInfo> {
        self.recent_runs.iter().rev().collect()
    }

    /// Path segment of the id.
    pub fn id_enc(&self) -> String {
        enc(&self.dag_id)
    }
}

/// One try of a task.
#[derive(Clone, Debug, Serialize)]
pub struct TryInfo {
    /// 1-based.
    pub try_number: u32,
    /// State.
    pub state: TaskState,
    /// Start.
    pub started_at: Option<DateTime<Utc>>,
    /// End.
    pub ended_at: Option<DateTime<Utc>>,
    /// Exit status.
    pub exit_code: Option<i32>,
    /// Error.
    pub error: Option<String>,
    /// Outputs.
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// Its log page.
    pub log_url: String,
}

/// A task instance of a run with its tries.
#[derive(Clone, Debug, Serialize)]
pub struct TaskInfo {
    /// Task id.
    pub task_id: String,
    /// Kind, when the DAG is loaded.
    pub kind: Option<String>,
    /// State.
    pub state: TaskState,
    /// Tries so far.
    pub try_number: u32,
    /// Start of the first try.
    pub started_at: Option<DateTime<Utc>>,
    /// End of the last try.
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds from start to end (or now while running).
    pub duration_seconds: Option<f64>,
    /// Exit status of the last try.
    pub exit_code: Option<i32>,
    /// Error of the last failed try.
    pub error: Option<String>,
    /// Outputs (of the successful try, else of the last try).
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// Every try.
    pub tries: Vec<TryInfo>,
    /// Live progress, for runs this server drives.
    pub live: Option<LiveTask>,
    /// The last try's log page.
    pub log_url: String,
}

impl TaskInfo {
    /// Start, formatted.
    pub fn started(&self) -> String {
        fmt_time(self.started_at)
    }

    /// Duration, formatted.
    pub fn duration(&self) -> String {
        fmt_secs(self.duration_seconds)
    }

    /// Outputs as indented JSON, or empty.
    pub fn outputs_text(&self) -> String {
        if self.outputs.is_empty() {
            return String::new();
        }
        // Time series are drawn as charts; their points would drown the table.
        let mut shown = self.outputs.clone();
        if let Some(serde_json::Value::Object(map)) = shown.get(series::OUTPUT_KEY) {
            let names: Vec<&str> = map.keys().map(String::as_str).collect();
            shown.insert(
                series::OUTPUT_KEY.into(),
                format!("({}: charted below)", names.join(", ")).into(),
            );
        }
        serde_json::to_string_pretty(&serde_json::Value::Object(shown)).unwrap_or_default()
    }

    /// Progress as `done / total unit`, when running and reported.
    pub fn progress(&self) -> Option<(u64, u64, String)> {
        let live = self.live.as_ref()?;
        if self.state != TaskState::Running {
            return None;
        }
        let total = live.total.unwrap_or(0).max(live.done);
        let label = match (&live.total, &live.unit) {
            (Some(t), Some(u)) => format!("{} / {t} {u}", live.done),
            (Some(t), None) => format!("{} / {t}", live.done),
            (None, Some(u)) => format!("{} {u}", live.done),
            (None, None) => live.done.to_string(),
        };
        Some((live.done, total.max(1), label))
    }

    /// The time series to chart: while the run is driven here, the live ones of a running task,
    /// or of a finished task whose background program still reports (a `process.spawn`'s
    /// consumer) when they hold more than its recorded outputs; else the recorded ones.
    pub fn series(&self) -> Vec<Series> {
        let stored = series::from_outputs(&self.outputs);
        if let Some(live) = &self.live
            && !live.series.is_empty()
        {
            let points =
                |s: &mut dyn Iterator<Item = &Series>| -> usize { s.map(|s| s.points.len()).sum() };
            if self.state == TaskState::Running
                || points(&mut live.series.values()) > points(&mut stored.iter())
            {
                return live.series.values().cloned().collect();
            }
        }
        stored
    }
}

/// A run with its task instances.
#[derive(Clone, Debug, Serialize)]
pub struct RunDetail {
    /// The run.
    pub run: RunInfo,
    /// Its tasks in topological order.
    pub tasks: Vec<TaskInfo>,
    /// What people wrote about it.
    pub notes: Option<crate::store::RunNotes>,
    /// Its repairs (clear, mark, resume), oldest first.
    pub history: Vec<crate::store::RunAction>,
    /// Its notification deliveries (`[[dag.notify]]`), oldest first.
    pub notifications: Vec<NotificationRecord>,
}

fn task_spec(dag: &Dag) -> Vec<TaskSpec> {
    dag.tasks
        .iter()
        .map(|t| TaskSpec {
            task_id: t.id.clone(),
            kind: t.kind.name().into(),
            description: t.description.clone(),
            upstream: t.depends_on.clone(),
            trigger_rule: t.trigger_rule.as_str().into(),
            retries: t.retry.retries,
            timeout: t.timeout.map(|d| humantime::format_duration(d).to_string()),
        })
        .collect()
}

/// Every loaded DAG with `recent` recent runs each, and the files that do not load.
pub fn dags(
    state: &AppState,
    recent: usize,
) -> Result<(Vec<DagInfo>, Vec<DagFileError>), WebError> {
    let loaded = state.folder().snapshot();
    let paused = state.store().paused_dags()?;
    let schedules = state.cron().schedules();
    let now = Utc::now();
    let mut out = Vec::with_capacity(loaded.dags.len());
    for dag in loaded.dags.values() {
        out.push(dag_info(state, dag, &paused, &schedules, recent, now)?);
    }
    Ok((out, loaded.errors.clone()))
}

/// One DAG by id.
pub fn dag(state: &AppState, dag_id: &str, recent: usize) -> Result<(DagInfo, Arc<Dag>), WebError> {
    let dag = state.folder().get(dag_id).ok_or_else(|| {
        WebError::not_found(format!(
            "no DAG {dag_id} in {}; GET /api/dags lists the loaded DAGs",
            state.folder().root().display()
        ))
    })?;
    let paused = state.store().paused_dags()?;
    let info = dag_info(
        state,
        &dag,
        &paused,
        &state.cron().schedules(),
        recent,
        Utc::now(),
    )?;
    Ok((info, dag))
}

/// How many upcoming fire times a DAG shows.
const UPCOMING: usize = 5;

fn dag_info(
    state: &AppState,
    dag: &Dag,
    paused: &std::collections::BTreeSet<String>,
    schedules: &BTreeMap<String, crate::cron::DagSchedule>,
    recent: usize,
    now: DateTime<Utc>,
) -> Result<DagInfo, WebError> {
    let runs = state.store().runs(&RunFilter {
        dag_id: Some(dag.id.clone()),
        state: None,
        trigger: None,
        limit: recent,
    })?;
    let sched = schedules.get(&dag.id);
    let is_paused = paused.contains(&dag.id);
    Ok(DagInfo {
        dag_id: dag.id.clone(),
        description: dag.description.clone(),
        file: dag.file.as_ref().map(|p| p.display().to_string()),
        schedule: dag.schedule.as_ref().map(|s| s.expr.clone()),
        timezone: dag.timezone.name().to_owned(),
        upcoming: dag.schedule.as_ref().map_or_else(Vec::new, |s| {
            // From just before the scheduler's next slot (so it is the first), else from now.
            let from = sched
                .and_then(|s| s.next_run)
                .map_or(now, |n| n - chrono::Duration::seconds(1));
            crate::cron::upcoming::upcoming(s, from, UPCOMING)
        }),
        paused: is_paused,
        next_run: sched.and_then(|s| s.next_run).filter(|_| !is_paused),
        waiting_slots: sched.map_or(0, |s| s.waiting),
        skipped_while_paused: sched.map_or(0, |s| s.skipped_while_paused),
        max_active_runs: dag.max_active_runs,
        max_active_tasks: dag.max_active_tasks,
        params: dag.params.clone(),
        tasks: task_spec(dag),
        recent_runs: {
            let live = Liveness::read(state.store().as_ref())?;
            runs.into_iter()
                .map(|r| RunInfo::new(r, state, &live, now))
                .collect()
        },
        url: format!("/dags/{}", enc(&dag.id)),
    })
}

/// Runs, newest first.
pub fn runs(state: &AppState, filter: &RunFilter) -> Result<Vec<RunInfo>, WebError> {
    let now = Utc::now();
    let live = Liveness::read(state.store().as_ref())?;
    Ok(state
        .store()
        .runs(filter)?
        .into_iter()
        .map(|r| RunInfo::new(r, state, &live, now))
        .collect())
}

fn log_url(run_id: &str, task_id: &str, try_number: Option<u32>) -> String {
    let base = format!("/runs/{}/tasks/{}/log", enc(run_id), enc(task_id));
    match try_number {
        Some(n) => format!("{base}?try={n}"),
        None => base,
    }
}

/// One run with its task instances and tries.
pub fn run(state: &AppState, run_id: &str) -> Result<RunDetail, WebError> {
    let store = state.store();
    let record = store.run(run_id)?.ok_or_else(|| {
        WebError::not_found(format!("no run {run_id}; GET /api/runs lists the runs"))
    })?;
    let dag = state.folder().get(&record.dag_id);
    let live = state.launcher().live(run_id);
    let now = Utc::now();
    let mut tasks = Vec::new();
    for ti in store.task_instances(run_id)? {
        let tries = store.tries(run_id, &ti.task_id)?;
        tasks.push(task_info(ti, tries, dag.as_deref(), live.as_ref(), now));
    }
    Ok(RunDetail {
        run: RunInfo::new(record, state, &Liveness::read(store.as_ref())?, now),
        tasks,
        notes: store.run_notes(run_id)?,
        history: store.run_actions(run_id)?,
        notifications: store.notifications(run_id)?,
    })
}

fn task_info(
    ti: TaskInstance,
    tries: Vec<TaskTry>,
    dag: Option<&Dag>,
    live: Option<&crate::cron::LiveRun>,
    now: DateTime<Utc>,
) -> TaskInfo {
    let end = ti
        .ended_at
        .or((ti.state == TaskState::Running).then_some(now));
    let outputs = if ti.outputs.is_empty() {
        tries.last().map(|t| t.outputs.clone()).unwrap_or_default()
    } else {
        ti.outputs.clone()
    };
    TaskInfo {
        kind: dag
            .and_then(|d| d.task(&ti.task_id))
            .map(|t| t.kind.name().to_owned()),
        duration_seconds: secs_between(ti.started_at, end),
        log_url: log_url(&ti.run_id, &ti.task_id, None),
        tries: tries
            .into_iter()
            .map(|t| TryInfo {
                log_url: log_url(&t.run_id, &t.task_id, Some(t.try_number)),
                try_number: t.try_number,
                state: t.state,
                started_at: t.started_at,
                ended_at: t.ended_at,
                exit_code: t.exit_code,
                error: t.error,
                outputs: t.outputs,
            })
            .collect(),
        live: live.and_then(|l| l.tasks.get(&ti.task_id).cloned()),
        task_id: ti.task_id,
        state: ti.state,
        try_number: ti.try_number,
        started_at: ti.started_at,
        ended_at: ti.ended_at,
        exit_code: ti.exit_code,
        error: ti.error,
        outputs,
    }
}

/// A piece of a try's log.
#[derive(Clone, Debug, Serialize)]
pub struct LogChunk {
    /// The run.
    pub run_id: String,
    /// The task.
    pub task_id: String,
    /// The try.
    pub try_number: u32,
    /// Every try of the task, for a chooser.
    pub tries: Vec<u32>,
    /// Where the text starts (bytes).
    pub offset: u64,
    /// Where to ask next.
    pub next_offset: u64,
    /// The log file's size now.
    pub size: u64,
    /// The text (whole lines; invalid UTF-8 replaced).
    pub text: String,
    /// Whether the try still runs (more lines may come).
    pub running: bool,
}

/// Reads up to `limit` bytes of a try's log from `offset`. The file is the one the store
/// recorded for that try, and must lie inside the log directory.
pub fn log(
    state: &AppState,
    run_id: &str,
    task_id: &str,
    try_number: Option<u32>,
    offset: u64,
    limit: u64,
) -> Result<LogChunk, WebError> {
    let store = state.store();
    if store.run(run_id)?.is_none() {
        return Err(WebError::not_found(format!("no run {run_id}")));
    }
    let tries = store.tries(run_id, task_id)?;
    if tries.is_empty() {
        let known = store.task_instances(run_id)?;
        if !known.iter().any(|t| t.task_id == task_id) {
            return Err(WebError::not_found(format!(
                "run {run_id} has no task {task_id}"
            )));
        }
        return Ok(LogChunk {
            run_id: run_id.into(),
            task_id: task_id.into(),
            try_number: 0,
            tries: Vec::new(),
            offset: 0,
            next_offset: 0,
            size: 0,
            text: String::new(),
            running: known
                .iter()
                .any(|t| t.task_id == task_id && !t.state.is_finished()),
        });
    }
    let chosen = match try_number {
        None => tries.last(),
        Some(n) => tries.iter().find(|t| t.try_number == n),
    }
    .ok_or_else(|| {
        WebError::not_found(format!(
            "task {task_id} of run {run_id} has tries 1 to {}",
            tries.len()
        ))
    })?;
    let running = chosen.state == TaskState::Running;
    let mut chunk = LogChunk {
        run_id: run_id.into(),
        task_id: task_id.into(),
        try_number: chosen.try_number,
        tries: tries.iter().map(|t| t.try_number).collect(),
        offset,
        next_offset: offset,
        size: 0,
        text: String::new(),
        running,
    };
    let Some(path) = &chosen.log_path else {
        return Ok(chunk);
    };
    let mut file = match open_inside(state.log_dir(), path)? {
        Some(f) => f,
        None => return Ok(chunk),
    };
    let size = file
        .metadata()
        .map_err(|e| WebError::internal(format!("reading the log: {e}")))?
        .len();
    chunk.size = size;
    let offset = offset.min(size);
    chunk.offset = offset;
    let limit = limit.clamp(1, MAX_LOG_CHUNK);
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| WebError::internal(format!("reading the log: {e}")))?;
    let mut buf = Vec::new();
    file.take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| WebError::internal(format!("reading the log: {e}")))?;
    // Hand out whole lines only (a line being written, or cut by the limit, comes next time),
    // unless one line is longer than the limit.
    if let Some(last_newline) = buf.iter().rposition(|&b| b == b'\n') {
        buf.truncate(last_newline + 1);
    } else if (buf.len() as u64) < limit {
        buf.clear();
    }
    chunk.next_offset = offset + buf.len() as u64;
    chunk.text = String::from_utf8_lossy(&buf).into_owned();
    Ok(chunk)
}

/// Opens `path` if it exists and resolves to a file inside `dir`; `None` if it does not exist.
fn open_inside(dir: &Path, path: &Path) -> Result<Option<std::fs::File>, WebError> {
    let real = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(WebError::internal(format!("reading the log: {e}"))),
    };
    let root = std::fs::canonicalize(dir)
        .map_err(|e| WebError::internal(format!("the log directory {}: {e}", dir.display())))?;
    if !real.starts_with(&root) || !real.is_file() {
        return Err(WebError::forbidden(format!(
            "the recorded log file is outside the log directory {}",
            dir.display()
        )));
    }
    std::fs::File::open(&real)
        .map(Some)
        .map_err(|e| WebError::internal(format!("reading the log: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_encodes() {
        assert_eq!(
            enc("manual__2024-01-01T00:00:00.000Z"),
            "manual__2024-01-01T00%3A00%3A00.000Z"
        );
        assert_eq!(enc("a/../b"), "a%2F..%2Fb");
        assert_eq!(fmt_secs(Some(0.25)), "250ms");
        assert_eq!(fmt_secs(Some(12.34)), "12.3s");
        assert_eq!(fmt_secs(Some(245.0)), "4m 05s");
        assert_eq!(fmt_secs(Some(7380.0)), "2h 03m");
        assert_eq!(fmt_secs(None), "-");
    }

    #[test]
    fn logs_are_read_only_inside_the_log_directory() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::fs::write(logs.join("ok.log"), "a\n").unwrap();
        std::fs::write(dir.path().join("secret"), "no\n").unwrap();
        assert!(open_inside(&logs, &logs.join("ok.log")).unwrap().is_some());
        assert!(
            open_inside(&logs, &logs.join("missing.log"))
                .unwrap()
                .is_none()
        );
        assert!(open_inside(&logs, &logs.join("../secret")).is_err());
        std::os::unix::fs::symlink(dir.path().join("secret"), logs.join("link.log")).unwrap();
        assert!(open_inside(&logs, &logs.join("link.log")).is_err());
    }
}
