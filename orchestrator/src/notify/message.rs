//! What a notification says: the facts of a run read from the store (its state, note, failed
//! tasks with their error and the last lines of their log, a link to its page), written as our
//! JSON document or as a Slack message.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::dag::{NotifyEvent, NotifyFormat};
use crate::store::{RunFilter, RunRecord, RunState, Store, StoreError, TaskState};

/// Lines of a failed task's log a message carries.
pub const LOG_TAIL_LINES: usize = 20;
/// Bytes read from the end of a log to find them.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// Longest text of one Slack block (Slack refuses a section over 3,000 characters).
const SLACK_BLOCK_CHARS: usize = 2_900;

/// A task as a message shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskFacts {
    /// The task.
    pub task_id: String,
    /// Its state (`failed`, or `up_for_retry` in a `retry` message).
    pub state: TaskState,
    /// Its last try.
    pub try_number: u32,
    /// The last try's error.
    pub error: Option<String>,
    /// The last lines of the last try's log.
    pub log_tail: Vec<String>,
    /// The log's page, when the orchestrator's public URL is known.
    pub log_url: Option<String>,
    /// The log file (read for `log_tail`; not sent).
    #[serde(skip)]
    pub log_path: Option<PathBuf>,
}

/// A retry, for a `retry` message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryFacts {
    /// The task whose try failed.
    pub task_id: String,
    /// The try that failed.
    pub try_number: u32,
    /// Tries it may make in all.
    pub max_tries: u32,
    /// Seconds until the next try.
    pub delay_seconds: f64,
}

/// Why a message is sent, with what only the driver knows.
#[derive(Clone, Debug, PartialEq)]
pub enum Occasion {
    /// The run ended (failure, success or recovered, decided from the store).
    Finished,
    /// A try failed and the task will be tried again.
    Retry {
        /// The task, as the driver knows it (the store may not have its last try yet).
        task: TaskFacts,
        /// When the next try starts.
        retry: RetryFacts,
    },
    /// The run was not done at its deadline.
    DeadlineMiss {
        /// The deadline that passed.
        deadline: DateTime<Utc>,
    },
}

/// A message about a run, before it is written in a target's format.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    /// The event.
    pub event: NotifyEvent,
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
    /// The run's state when the message was written.
    pub state: RunState,
    /// What started the run.
    pub trigger: String,
    /// The run's logical date.
    pub logical_date: DateTime<Utc>,
    /// The run's start.
    pub started_at: DateTime<Utc>,
    /// The run's end, once it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended so (`cancelled by SIGINT`, `timed out: ...`).
    pub note: Option<String>,
    /// One line saying what happened.
    pub summary: String,
    /// The run's page, when the orchestrator's public URL is known (`serve --public-url`).
    pub url: Option<String>,
    /// The failed tasks (in a `retry` message: the task that will be retried).
    pub failed_tasks: Vec<TaskFacts>,
    /// The retry, in a `retry` message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryFacts>,
    /// The deadline that passed, in a `deadline_miss` message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// The DAG's previous finished run, which failed, in a `recovered` message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_run_id: Option<String>,
}

/// The messages `occasion` calls for, from the run's record in the store (none when it is not
/// there). A finished run yields `failure`, or `success` preceded by `recovered` when the DAG's
/// previous finished run failed (see [`previous_failed_run`]); a target takes the first it wants.
pub fn facts(
    store: &dyn Store,
    run_id: &str,
    occasion: &Occasion,
    public_url: Option<&reqwest::Url>,
) -> Result<Vec<Message>, StoreError> {
    let Some(run) = store.run(run_id)? else {
        return Ok(Vec::new());
    };
    let link = |segments: &[&str], query: Option<String>| {
        public_url.map(|base| {
            let mut url = base.clone();
            if let Ok(mut path) = url.path_segments_mut() {
                path.pop_if_empty().extend(segments);
            }
            url.set_query(query.as_deref());
            url.to_string()
        })
    };
    let url = link(&["runs", run_id], None);
    let mut failed = Vec::new();
    for ti in store.task_instances(run_id)? {
        if ti.state != TaskState::Failed {
            continue;
        }
        let tries = store.tries(run_id, &ti.task_id)?;
        let last = tries.last();
        failed.push(TaskFacts {
            log_url: link(
                &["runs", run_id, "tasks", &ti.task_id, "log"],
                Some(format!("try={}", ti.try_number)),
            ),
            log_path: last.and_then(|t| t.log_path.clone()),
            error: ti
                .error
                .clone()
                .or_else(|| last.and_then(|t| t.error.clone())),
            task_id: ti.task_id,
            state: ti.state,
            try_number: ti.try_number,
            log_tail: Vec::new(),
        });
    }
    let base = |event: NotifyEvent, failed_tasks: Vec<TaskFacts>| Message {
        event,
        dag_id: run.dag_id.clone(),
        run_id: run.run_id.clone(),
        state: run.state,
        trigger: run.trigger.as_str().to_owned(),
        logical_date: run.logical_date,
        started_at: run.started_at,
        ended_at: run.ended_at,
        note: run.note.clone(),
        summary: String::new(),
        url: url.clone(),
        failed_tasks,
        retry: None,
        deadline: None,
        previous_run_id: None,
    };
    let mut messages = match occasion {
        Occasion::Finished if run.state == RunState::Failed => {
            vec![base(NotifyEvent::Failure, failed)]
        }
        Occasion::Finished if run.state == RunState::Success => {
            // Recovered first: a target that wants both gets the more specific one only.
            let mut out = Vec::new();
            if let Some(previous) = previous_failed_run(store, &run)? {
                let mut m = base(NotifyEvent::Recovered, Vec::new());
                m.previous_run_id = Some(previous.run_id);
                out.push(m);
            }
            out.push(base(NotifyEvent::Success, Vec::new()));
            out
        }
        Occasion::Finished => Vec::new(),
        Occasion::Retry { task, retry } => {
            let mut task = task.clone();
            task.log_url = link(
                &["runs", run_id, "tasks", &task.task_id, "log"],
                Some(format!("try={}", task.try_number)),
            );
            let mut m = base(NotifyEvent::Retry, vec![task]);
            m.retry = Some(retry.clone());
            vec![m]
        }
        Occasion::DeadlineMiss { deadline } => {
            let mut m = base(NotifyEvent::DeadlineMiss, failed);
            m.deadline = Some(*deadline);
            vec![m]
        }
    };
    for m in &mut messages {
        for t in &mut m.failed_tasks {
            t.log_tail = t.log_path.as_deref().map(log_tail).unwrap_or_default();
        }
        m.summary = summary(m);
    }
    Ok(messages)
}

/// The DAG's run that finished last before `run` ended, when it failed: what makes `run`'s
/// success a recovery. Runs still going are not looked at; `run` itself counts with its end
/// before its last repair (a run that failed, was cleared and succeeded has recovered).
pub fn previous_failed_run(
    store: &dyn Store,
    run: &RunRecord,
) -> Result<Option<RunRecord>, StoreError> {
    let runs = store.runs(&RunFilter {
        dag_id: Some(run.dag_id.clone()),
        state: None,
        trigger: None,
        limit: 100,
    })?;
    let before = run.ended_at.unwrap_or_else(Utc::now);
    let own_end = store
        .run_actions(&run.run_id)?
        .into_iter()
        .rev()
        .find(|a| a.from_state != RunState::Running)
        .map(|a| {
            let mut earlier = run.clone();
            (earlier.state, earlier.ended_at) = (a.from_state, Some(a.at));
            earlier
        });
    Ok(runs
        .into_iter()
        .filter(|r| r.run_id != run.run_id && r.state != RunState::Running)
        .chain(own_end)
        .filter(|r| r.ended_at.is_some_and(|e| e <= before))
        .max_by_key(|r| r.ended_at)
        .filter(|r| r.state == RunState::Failed))
}

/// The last [`LOG_TAIL_LINES`] lines of a log file (none when it cannot be read).
pub fn log_tail(path: &Path) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(LOG_TAIL_BYTES);
    if file.seek(SeekFrom::Start(from)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if from > 0 && !lines.is_empty() {
        // The first line read is cut.
        lines.remove(0);
    }
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[skip..].iter().map(|l| (*l).to_owned()).collect()
}

/// One line saying what happened.
fn summary(m: &Message) -> String {
    let run = format!("DAG {} run {}", m.dag_id, m.run_id);
    let took = m
        .ended_at
        .map(|e| {
            let d = (e - m.started_at).to_std().unwrap_or_default();
            let shown = if d < Duration::from_secs(1) {
                Duration::from_millis(d.as_millis() as u64)
            } else {
                Duration::from_secs(d.as_secs())
            };
            humantime::format_duration(shown).to_string()
        })
        .unwrap_or_default();
    let first_failure = m.failed_tasks.first().map(|t| match &t.error {
        Some(e) => format!("task {} failed: {}", t.task_id, first_line(e)),
        None => format!("task {} failed", t.task_id),
    });
    match m.event {
        NotifyEvent::Failure => {
            let mut s = format!("{run} failed after {took}");
            if let Some(note) = &m.note {
                s.push_str(&format!(" ({note})"));
            }
            match (first_failure, m.failed_tasks.len()) {
                (Some(f), 1) => s.push_str(&format!(": {f}")),
                (Some(f), n) => s.push_str(&format!(": {f} (and {} more)", n - 1)),
                (None, _) => {}
            }
            s
        }
        NotifyEvent::Success => format!("{run} succeeded in {took}"),
        NotifyEvent::Recovered if m.previous_run_id.as_deref() == Some(m.run_id.as_str()) => {
            format!("{run} succeeded in {took} after its repair; it had failed")
        }
        NotifyEvent::Recovered => format!(
            "{run} succeeded in {took}; the previous run {} had failed",
            m.previous_run_id.as_deref().unwrap_or("?")
        ),
        NotifyEvent::Retry => {
            let (task, r) = (m.failed_tasks.first(), m.retry.as_ref());
            format!(
                "{run}: task {} failed try {} of {}, retrying in {}{}",
                r.map_or("?", |r| r.task_id.as_str()),
                r.map_or(0, |r| r.try_number),
                r.map_or(0, |r| r.max_tries),
                humantime::format_duration(Duration::from_millis(
                    r.map_or(0, |r| (r.delay_seconds * 1000.0) as u64)
                )),
                task.and_then(|t| t.error.as_deref())
                    .map(|e| format!(": {}", first_line(e)))
                    .unwrap_or_default()
            )
        }
        NotifyEvent::DeadlineMiss => format!(
            "{run} is not done by its deadline ({}); still {}",
            m.deadline
                .map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_default(),
            m.state
        ),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The body sent to a target of `format`.
pub fn body(m: &Message, format: NotifyFormat) -> Value {
    match format {
        NotifyFormat::Json => serde_json::to_value(m).unwrap_or(Value::Null),
        NotifyFormat::Slack => slack(m),
    }
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, the cut marked.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A Slack incoming-webhook message: `text` (notifications, clients without blocks) and
/// `blocks` (the run, each failed task with its error and log tail, a link to the run).
fn slack(m: &Message) -> Value {
    let icon = match m.event {
        NotifyEvent::Failure => ":x:",
        NotifyEvent::Success | NotifyEvent::Recovered => ":white_check_mark:",
        NotifyEvent::Retry => ":repeat:",
        NotifyEvent::DeadlineMiss => ":alarm_clock:",
    };
    let link = m
        .url
        .as_deref()
        .map(|u| format!(" <{u}|Open the run>"))
        .unwrap_or_default();
    let text = format!("{icon} {}{link}", esc(&m.summary));
    let mut blocks = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": clip(&text, SLACK_BLOCK_CHARS) }
    })];
    for t in &m.failed_tasks {
        let mut s = format!(
            "*Task `{}`* ({}, try {})",
            esc(&t.task_id),
            t.state,
            t.try_number
        );
        if let Some(e) = &t.error {
            s.push_str(&format!("\n{}", esc(e)));
        }
        if !t.log_tail.is_empty() {
            s.push_str(&format!("\n```{}```", esc(&t.log_tail.join("\n"))));
        }
        if let Some(u) = &t.log_url {
            s.push_str(&format!("\n<{u}|Full log>"));
        }
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": clip(&s, SLACK_BLOCK_CHARS) }
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{
            "type": "mrkdwn",
            "text": format!(
                "DAG `{}` · run `{}` · {} · logical date {}",
                esc(&m.dag_id),
                esc(&m.run_id),
                m.trigger,
                m.logical_date.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        }]
    }));
    json!({ "text": text, "blocks": blocks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_tail_is_the_last_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("try-1.log");
        let text: String = (1..=5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, format!("{text}\n\n")).unwrap();
        let tail = log_tail(&path);
        assert_eq!(tail.len(), LOG_TAIL_LINES);
        assert_eq!(tail.last().unwrap(), "line 5000");
        assert_eq!(tail[0], "line 4981");
        assert!(log_tail(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn slack_text_is_escaped_and_clipped() {
        assert_eq!(esc("a <b> & c"), "a &lt;b&gt; &amp; c");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
