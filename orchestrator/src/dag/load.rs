//! Reading a DAG file: TOML with spans -> raw sections -> a validated [`Dag`], or every problem at
//! once with `file:line:column`.
//!
//! The `[[task]]` tables are split by hand into the common fields (id, kind, depends_on, retries,
//! timeout, trigger rule...) and the kind's own fields, because serde's `flatten` would disable
//! `deny_unknown_fields`. Both halves are deserialized from toml's spanned `DeTable`, so serde
//! errors keep the position of the offending key or value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};
use velostream_common::clickhouse::ClickHouseConfig;

use super::graph;
use super::spec::{Dag, RetryPolicy, Schedule, Task, TriggerRule};
use super::template::{self, CheckScope, Template};
use crate::operators::{Connections, KafkaConnection, Operator, TaskKind, ValidateContext};

/// Fields every task has; everything else in a `[[task]]` table belongs to its kind.
const COMMON_KEYS: &[&str] = &[
    "id",
    "kind",
    "description",
    "depends_on",
    "retries",
    "retry_delay",
    "retry_exponential_backoff",
    "max_retry_delay",
    "timeout",
    "trigger_rule",
];

/// Fields of `[dag]`.
const DAG_KEYS: &[&str] = &[
    "id",
    "description",
    "schedule",
    "timezone",
    "catchup",
    "params",
    "max_active_runs",
    "max_active_tasks",
    "defaults",
];

/// Default `max_active_runs` (Airflow's default is 16 too).
const DEFAULT_MAX_ACTIVE_RUNS: u32 = 16;
/// Default `max_active_tasks`.
const DEFAULT_MAX_ACTIVE_TASKS: usize = 16;

/// The `[dag]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDag {
    /// Unique id: letters, digits, `_`, `-`, `.`.
    id: Spanned<String>,
    /// What the DAG does.
    #[serde(default)]
    description: Option<String>,
    /// Cron schedule for `orchestrator serve`.
    #[serde(default)]
    schedule: Option<Spanned<String>>,
    /// IANA time zone the schedule is evaluated in (default UTC).
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    /// Run every missed slot (true) or only the latest (false); default: the server's `--catchup`.
    #[serde(default)]
    catchup: Option<bool>,
    /// Params and their defaults.
    #[serde(default)]
    params: Option<Spanned<BTreeMap<String, Value>>>,
    /// Runs allowed at once.
    #[serde(default)]
    max_active_runs: Option<Spanned<u32>>,
    /// Tasks of one run allowed at once.
    #[serde(default)]
    max_active_tasks: Option<Spanned<usize>>,
}

/// `[dag.defaults]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    /// Tries after the first.
    #[serde(default)]
    retries: Option<u32>,
    /// Delay before the first retry.
    #[serde(default, with = "humantime_serde")]
    retry_delay: Option<Duration>,
    /// Double the delay for each further retry.
    #[serde(default)]
    retry_exponential_backoff: Option<bool>,
    /// Upper bound of the retry delay.
    #[serde(default, with = "humantime_serde")]
    max_retry_delay: Option<Duration>,
    /// Per-try time limit.
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
}

/// `[connections]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnections {
    /// `[connections.kafka]`.
    #[serde(default)]
    kafka: Option<RawKafka>,
    /// `[connections.clickhouse]`.
    #[serde(default)]
    clickhouse: Option<RawClickHouse>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    /// Bootstrap servers.
    #[serde(default)]
    brokers: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClickHouse {
    /// HTTP URL.
    #[serde(default)]
    url: Option<Spanned<String>>,
    /// User.
    #[serde(default)]
    user: Option<Spanned<String>>,
    /// Password.
    #[serde(default)]
    password: Option<Spanned<String>>,
    /// Database.
    #[serde(default)]
    database: Option<Spanned<String>>,
}

/// The common half of a `[[task]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskCommon {
    /// Unique id.
    id: Spanned<String>,
    /// The kind (checked when the other half is read).
    #[allow(dead_code)]
    kind: Spanned<String>,
    /// What it is for.
    #[serde(default)]
    description: Option<String>,
    /// Upstream task ids.
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    /// Tries after the first.
    #[serde(default)]
    retries: Option<u32>,
    /// Delay before the first retry.
    #[serde(default, with = "humantime_serde")]
    retry_delay: Option<Duration>,
    /// Double the delay for each further retry.
    #[serde(default)]
    retry_exponential_backoff: Option<bool>,
    /// Upper bound of the retry delay.
    #[serde(default, with = "humantime_serde")]
    max_retry_delay: Option<Duration>,
    /// Per-try time limit.
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    /// When the task runs given its upstream states.
    #[serde(default)]
    trigger_rule: Option<TriggerRule>,
}

/// One problem found while loading, with its position when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column (in characters).
    pub column: Option<usize>,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A DAG file that cannot be used, with every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The file (or origin name given to [`parse_str`]).
    pub origin: String,
    /// The problems, in file order.
    pub problems: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (p.line, p.column) {
                (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.origin, p.message)?,
                _ => write!(f, "{}: {}", self.origin, p.message)?,
            }
        }
        Ok(())
    }
}

/// Collects problems with byte spans, converted to line:column at the end.
struct Problems<'t> {
    text: &'t str,
    list: Vec<(Option<Range<usize>>, String)>,
}

impl<'t> Problems<'t> {
    fn at(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.list.push((span, message.into()));
    }

    fn toml(&mut self, e: &toml::de::Error, fallback: Option<Range<usize>>) {
        let mut message = e.message().trim().to_owned();
        if message.ends_with("expected a duration") {
            message.push_str(" such as \"500ms\", \"30s\", \"2m\" or \"1h 30m\"");
        }
        self.at(e.span().or(fallback), message);
    }

    fn into_error(mut self, origin: &str) -> LoadError {
        self.list
            .sort_by_key(|(span, _)| span.as_ref().map_or(usize::MAX, |s| s.start));
        self.list.dedup();
        let text = self.text;
        LoadError {
            origin: origin.to_owned(),
            problems: self
                .list
                .into_iter()
                .map(|(span, message)| {
                    let (line, column) = match span {
                        Some(s) => {
                            let (l, c) = line_col(text, s.start);
                            (Some(l), Some(c))
                        }
                        None => (None, None),
                    };
                    Diagnostic {
                        line,
                        column,
                        message,
                    }
                })
                .collect(),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

/// Reads and validates the DAG file at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<Dag, LoadError> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| LoadError {
        origin: origin.clone(),
        problems: vec![Diagnostic {
            line: None,
            column: None,
            message: format!("cannot read the DAG file: {e}"),
        }],
    })?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let env = |k: &str| std::env::var(k).ok();
    parse(&text, &origin, Some(abs.clone()), dir, &env)
}

/// Validates DAG text; `origin` names it in messages. Relative paths resolve against the current
/// directory; `${ENV}` comes from the process environment.
pub fn parse_str(text: &str, origin: &str) -> Result<Dag, LoadError> {
    let env = |k: &str| std::env::var(k).ok();
    let dir = std::env::current_dir().unwrap_or_default();
    parse(text, origin, None, dir, &env)
}

/// Like [`parse_str`] with an explicit environment for `${ENV:-default}` (tests).
pub fn parse_str_with_env(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Dag, LoadError> {
    parse(text, origin, None, PathBuf::from("."), env)
}

/// The fields of a task the graph checks need, read leniently so that a task whose other
/// common fields are wrong still takes part in duplicate, dependency and cycle checks.
#[derive(Debug, Deserialize)]
struct RawTaskIdentity {
    id: Spanned<String>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
}

struct RawTask<'i> {
    span: Range<usize>,
    identity: Option<RawTaskIdentity>,
    common: Option<RawTaskCommon>,
    kind: Option<TaskKind>,
    kind_fields: DeTable<'i>,
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn is_task_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

fn deserialize<'i, T: Deserialize<'i>>(
    value: DeValue<'i>,
    span: Range<usize>,
) -> Result<T, toml::de::Error> {
    T::deserialize(ValueDeserializer::from(Spanned::new(span, value)))
}

fn parse(
    text: &str,
    origin: &str,
    file: Option<PathBuf>,
    dir: PathBuf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Dag, LoadError> {
    let mut problems = Problems {
        text,
        list: Vec::new(),
    };
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in &syntax {
            problems.toml(e, None);
        }
        return Err(problems.into_error(origin));
    }
    let root_span = root.span();
    let mut dag_section = None;
    let mut conn_section = None;
    let mut task_values = Vec::new();
    for (key, value) in root.into_inner() {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "dag" => dag_section = Some(value),
            "connections" => conn_section = Some(value),
            "task" => match value.get_ref() {
                DeValue::Array(items) => task_values.extend(items.iter().cloned()),
                _ => problems.at(
                    Some(value.span()),
                    "`task` must be an array of tables: write each task as [[task]]",
                ),
            },
            other => problems.at(
                Some(key_span),
                format!(
                    "unknown section `{other}`; a DAG file has [dag], [connections] and [[task]]"
                ),
            ),
        }
    }

    // [dag]
    let mut defaults: Option<RawDefaults> = None;
    let raw_dag: Option<RawDag> = match dag_section {
        None => {
            problems.at(Some(0..0), "missing [dag] section (with at least `id`)");
            None
        }
        Some(v) => {
            let span = v.span();
            let value = match v.into_inner() {
                DeValue::Table(t) => {
                    // [dag.defaults] is read on its own, so its problems do not hide the rest.
                    let mut rest = DeTable::new();
                    for (k, d) in strip_unknown(t, DAG_KEYS, "[dag]", &mut problems) {
                        if k.get_ref().as_ref() == "defaults" {
                            let dspan = d.span();
                            defaults = deserialize(d.into_inner(), dspan.clone())
                                .map_err(|e| problems.toml(&e, Some(dspan)))
                                .ok();
                        } else {
                            rest.insert(k, d);
                        }
                    }
                    DeValue::Table(rest)
                }
                other => other,
            };
            deserialize(value, span.clone())
                .map_err(|e| problems.toml(&e, Some(span)))
                .ok()
        }
    };

    // [connections]
    let raw_conn: RawConnections = match conn_section {
        None => RawConnections::default(),
        Some(v) => {
            let span = v.span();
            deserialize(v.into_inner(), span.clone())
                .map_err(|e| problems.toml(&e, Some(span)))
                .unwrap_or_default()
        }
    };
    let connections = build_connections(raw_conn, env, &mut problems);

    // [[task]]
    if task_values.is_empty() {
        problems.at(
            Some(root_span.end..root_span.end),
            "the DAG has no tasks: add [[task]] tables",
        );
    }
    let mut raw_tasks: Vec<RawTask<'_>> = Vec::with_capacity(task_values.len());
    for value in task_values {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            problems.at(Some(span), "each [[task]] must be a table");
            continue;
        };
        raw_tasks.push(read_task(table, span, &mut problems));
    }

    let params: serde_json::Map<String, Value> = raw_dag
        .as_ref()
        .and_then(|d| d.params.as_ref())
        .map(|p| {
            p.get_ref()
                .iter()
                .map(|(k, v)| (k.clone(), toml_datetimes_as_strings(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    if let Some(p) = raw_dag.as_ref().and_then(|d| d.params.as_ref()) {
        for name in p.get_ref().keys().filter(|k| !is_task_id(k)) {
            problems.at(
                Some(p.span()),
                format!("param name `{name}` must use only letters, digits, `_` and `-` (it is written as {{{{ params.{name} }}}})"),
            );
        }
    }
    let timezone =
        raw_dag
            .as_ref()
            .and_then(|d| d.timezone.as_ref())
            .map_or(Some(chrono_tz::UTC), |z| {
                super::timezone::parse(z.get_ref())
                    .map_err(|m| problems.at(Some(z.span()), m))
                    .ok()
            });
    let schedule = raw_dag
        .as_ref()
        .and_then(|d| d.schedule.as_ref())
        .and_then(|s| {
            Schedule::parse(s.get_ref())
                .map_err(|m| problems.at(Some(s.span()), m))
                .ok()
        })
        .map(|s| s.in_timezone(timezone.unwrap_or(chrono_tz::UTC)));
    if let Some(d) = &raw_dag {
        if !is_id(d.id.get_ref()) {
            problems.at(
                Some(d.id.span()),
                format!(
                    "DAG id {:?} must be letters, digits, `_`, `-` and `.` (not first)",
                    d.id.get_ref()
                ),
            );
        }
        if let Some(m) = &d.max_active_runs
            && *m.get_ref() == 0
        {
            problems.at(Some(m.span()), "max_active_runs must be at least 1");
        }
        if let Some(m) = &d.max_active_tasks
            && *m.get_ref() == 0
        {
            problems.at(Some(m.span()), "max_active_tasks must be at least 1");
        }
    }

    // Task ids: unique and well formed.
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, t) in raw_tasks.iter().enumerate() {
        let Some(c) = &t.identity else { continue };
        let id = c.id.get_ref();
        if !is_task_id(id) {
            problems.at(
                Some(c.id.span()),
                format!("task id {id:?} must be letters, digits, `_` and `-`"),
            );
        }
        if let Some(&first) = index.get(id) {
            let first_line = raw_tasks[first]
                .identity
                .as_ref()
                .map_or(0, |f| line_col(text, f.id.span().start).0);
            problems.at(
                Some(c.id.span()),
                format!("duplicate task id `{id}` (first defined on line {first_line})"),
            );
        } else {
            index.insert(id.clone(), i);
        }
    }
    let task_ids: Vec<String> = raw_tasks
        .iter()
        .filter_map(|t| t.identity.as_ref().map(|c| c.id.get_ref().clone()))
        .collect();

    // Dependencies.
    let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); raw_tasks.len()];
    for (i, t) in raw_tasks.iter().enumerate() {
        let Some(c) = &t.identity else { continue };
        for dep in &c.depends_on {
            match index.get(dep.get_ref()) {
                Some(&u) => {
                    if !upstream[i].contains(&u) {
                        upstream[i].push(u);
                    }
                }
                None => problems.at(
                    Some(dep.span()),
                    format!(
                        "task `{}` depends on `{}`, which is not a task of this DAG",
                        c.id.get_ref(),
                        dep.get_ref()
                    ),
                ),
            }
        }
    }
    let id_of = |i: usize| {
        raw_tasks[i]
            .identity
            .as_ref()
            .map_or("?", |c| c.id.get_ref().as_str())
    };
    let cycles = graph::cycles(&upstream);
    for cycle in &cycles {
        let members: Vec<&str> = cycle.iter().map(|&i| id_of(i)).collect();
        let edges: Vec<String> = cycle
            .iter()
            .map(|&i| {
                let ups: Vec<&str> = upstream[i]
                    .iter()
                    .filter(|u| cycle.contains(u))
                    .map(|&u| id_of(u))
                    .collect();
                format!("{} depends on {}", id_of(i), ups.join(" and "))
            })
            .collect();
        let span = raw_tasks[cycle[0]].identity.as_ref().map(|c| c.id.span());
        problems.at(
            span,
            format!(
                "dependency cycle among tasks {}: {}",
                members.join(", "),
                edges.join("; ")
            ),
        );
    }

    // Per-task semantic checks: referenced tasks, templates, the kind's own validation.
    for (i, t) in raw_tasks.iter().enumerate() {
        let (Some(c), Some(kind)) = (&t.identity, &t.kind) else {
            continue;
        };
        let ancestors = graph::ancestors(&upstream, i);
        let task_exists = |id: &str| index.contains_key(id);
        let is_upstream = |id: &str| {
            index
                .get(id)
                .is_some_and(|u| ancestors.contains(u) && *u != i)
        };
        for r in kind.referenced_tasks() {
            if !task_exists(r) {
                problems.at(
                    Some(t.span.clone()),
                    format!(
                        "task `{}` refers to task `{r}`, which does not exist",
                        c.id.get_ref()
                    ),
                );
            } else if !is_upstream(r) {
                problems.at(
                    Some(t.span.clone()),
                    format!(
                        "task `{}` refers to task `{r}`, which is not upstream of it; add `{r}` to depends_on",
                        c.id.get_ref()
                    ),
                );
            }
        }
        let scope = CheckScope {
            params: &params,
            task_exists: &task_exists,
            is_upstream: &is_upstream,
        };
        for (_, value) in t.kind_fields.iter() {
            check_templates(value, &scope, &mut problems);
        }
        let vctx = ValidateContext {
            task_id: c.id.get_ref(),
            dag_dir: &dir,
            task_ids: &task_ids,
            params: &params,
        };
        for p in kind.validate(&vctx) {
            let span = p
                .field
                .as_deref()
                .and_then(|f| {
                    t.kind_fields
                        .iter()
                        .find(|(k, _)| k.get_ref().as_ref() == f)
                        .map(|(_, v)| v.span())
                })
                .unwrap_or_else(|| c.id.span());
            problems.at(
                Some(span),
                format!("task `{}`: {}", c.id.get_ref(), p.message),
            );
        }
    }

    if !problems.list.is_empty() {
        return Err(problems.into_error(origin));
    }
    let Some(raw_dag) = raw_dag else {
        return Err(problems.into_error(origin));
    };

    // Everything checked: build the DAG in topological order.
    let order = graph::topo_order(&upstream);
    let mut new_index = vec![0; raw_tasks.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut slots: Vec<Option<RawTask<'_>>> = raw_tasks.into_iter().map(Some).collect();
    let mut tasks = Vec::with_capacity(order.len());
    for &old in &order {
        let Some(RawTask {
            span,
            identity: _,
            common: Some(c),
            kind: Some(kind),
            kind_fields,
        }) = slots[old].take()
        else {
            continue;
        };
        let d = defaults.as_ref();
        let retry = RetryPolicy {
            retries: c.retries.or(d.and_then(|d| d.retries)).unwrap_or(0),
            delay: c
                .retry_delay
                .or(d.and_then(|d| d.retry_delay))
                .unwrap_or(RetryPolicy::default().delay),
            exponential_backoff: c
                .retry_exponential_backoff
                .or(d.and_then(|d| d.retry_exponential_backoff))
                .unwrap_or(false),
            max_delay: c
                .max_retry_delay
                .or(d.and_then(|d| d.max_retry_delay))
                .unwrap_or(RetryPolicy::default().max_delay),
        };
        let templated = kind_fields
            .iter()
            .any(|(_, v)| value_has_template(v.get_ref()));
        tasks.push(Task {
            id: c.id.get_ref().clone(),
            description: c.description,
            kind,
            depends_on: c.depends_on.iter().map(|d| d.get_ref().clone()).collect(),
            trigger_rule: c.trigger_rule.unwrap_or_default(),
            retry,
            timeout: c.timeout.or(d.and_then(|d| d.timeout)),
            upstream: upstream[old].iter().map(|&u| new_index[u]).collect(),
            downstream: Vec::new(),
            templated,
            line: line_col(text, span.start).0,
        });
    }
    for i in 0..tasks.len() {
        for u in tasks[i].upstream.clone() {
            tasks[u].downstream.push(i);
        }
    }
    let index = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    Ok(Dag {
        id: raw_dag.id.into_inner(),
        description: raw_dag.description,
        schedule,
        timezone: timezone.unwrap_or(chrono_tz::UTC),
        catchup: raw_dag.catchup,
        params,
        max_active_runs: raw_dag
            .max_active_runs
            .map_or(DEFAULT_MAX_ACTIVE_RUNS, Spanned::into_inner),
        max_active_tasks: raw_dag
            .max_active_tasks
            .map_or(DEFAULT_MAX_ACTIVE_TASKS, Spanned::into_inner),
        connections: Arc::new(connections),
        tasks,
        file,
        dir,
        index,
    })
}

/// Splits one `[[task]]` table and deserializes both halves.
fn read_task<'i>(
    table: DeTable<'i>,
    span: Range<usize>,
    problems: &mut Problems<'_>,
) -> RawTask<'i> {
    let mut common_fields = DeTable::new();
    let mut kind_fields = DeTable::new();
    let mut kind_name: Option<(String, Range<usize>)> = None;
    for (k, v) in table {
        if k.get_ref().as_ref() == "kind"
            && let DeValue::String(s) = v.get_ref()
        {
            kind_name = Some((s.to_string(), v.span()));
        }
        if COMMON_KEYS.contains(&k.get_ref().as_ref()) {
            common_fields.insert(k, v);
        } else {
            kind_fields.insert(k, v);
        }
    }
    let identity: Option<RawTaskIdentity> =
        deserialize(DeValue::Table(common_fields.clone()), span.clone())
            .map_err(|e| problems.toml(&e, Some(span.clone())))
            .ok();
    let common: Option<RawTaskCommon> = deserialize(DeValue::Table(common_fields), span.clone())
        .map_err(|e| problems.toml(&e, Some(span.clone())))
        .ok();
    // The kind half is read as serde's externally tagged enum `{ "<kind>": { fields } }`, which
    // deserializes the variant's struct straight from the spanned table.
    let kind = kind_name.and_then(|(name, name_span)| {
        let mut wrapper = DeTable::new();
        wrapper.insert(
            Spanned::new(name_span, DeString::Owned(name)),
            Spanned::new(span.clone(), DeValue::Table(kind_fields.clone())),
        );
        deserialize::<TaskKind>(DeValue::Table(wrapper), span.clone())
            .map_err(|e| problems.toml(&e, Some(span.clone())))
            .ok()
    });
    RawTask {
        span,
        identity,
        common,
        kind,
        kind_fields,
    }
}

/// Removes (and reports) keys not in `known`, so one misspelt key does not hide the section's
/// other problems.
fn strip_unknown<'i>(
    table: DeTable<'i>,
    known: &[&str],
    section: &str,
    problems: &mut Problems<'_>,
) -> DeTable<'i> {
    let mut kept = DeTable::new();
    for (k, v) in table {
        if known.contains(&k.get_ref().as_ref()) {
            kept.insert(k, v);
        } else {
            problems.at(
                Some(k.span()),
                format!(
                    "unknown field `{}` in {section}, expected one of {}",
                    k.get_ref(),
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    kept
}

fn build_connections(
    raw: RawConnections,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems<'_>,
) -> Connections {
    let mut get = |v: Option<Spanned<String>>, fallback: &str| -> String {
        let (text, span) = match v {
            Some(s) => {
                let span = s.span();
                (s.into_inner(), Some(span))
            }
            None => (fallback.to_owned(), None),
        };
        super::env::interpolate(&text, env).unwrap_or_else(|m| {
            problems.at(span, m);
            String::new()
        })
    };
    let d = ClickHouseConfig::default();
    let k = raw.kafka.unwrap_or_default();
    let c = raw.clickhouse.unwrap_or_default();
    use velostream_common::{clickhouse as ch, kafka};
    Connections {
        kafka: KafkaConnection {
            brokers: get(
                k.brokers,
                &format!("${{{}:-{}}}", kafka::BROKERS_ENV, kafka::DEFAULT_BROKERS),
            ),
        },
        clickhouse: ClickHouseConfig {
            url: get(c.url, &format!("${{{}:-{}}}", ch::URL_ENV, d.url)),
            user: get(c.user, &format!("${{{}:-{}}}", ch::USER_ENV, d.user)),
            password: get(
                c.password,
                &format!("${{{}:-{}}}", ch::PASSWORD_ENV, d.password),
            ),
            database: get(
                c.database,
                &format!("${{{}:-{}}}", ch::DATABASE_ENV, d.database),
            ),
        },
    }
}

fn check_templates(
    value: &Spanned<DeValue<'_>>,
    scope: &CheckScope<'_>,
    problems: &mut Problems<'_>,
) {
    match value.get_ref() {
        DeValue::String(s) if template::has_template(s) => match Template::parse(s) {
            Err(e) => problems.at(
                Some(value.span()),
                format!("bad template {s:?}: {}", e.message),
            ),
            Ok(t) => {
                for (expr, _) in t.exprs() {
                    if let Err(m) = template::check(expr, scope) {
                        problems.at(Some(value.span()), m);
                    }
                }
            }
        },
        DeValue::Array(items) => {
            for v in items.iter() {
                check_templates(v, scope, problems);
            }
        }
        DeValue::Table(t) => {
            for (_, v) in t.iter() {
                check_templates(v, scope, problems);
            }
        }
        _ => {}
    }
}

fn value_has_template(v: &DeValue<'_>) -> bool {
    match v {
        DeValue::String(s) => template::has_template(s),
        DeValue::Array(items) => items.iter().any(|v| value_has_template(v.get_ref())),
        DeValue::Table(t) => t.iter().any(|(_, v)| value_has_template(v.get_ref())),
        _ => false,
    }
}

/// TOML datetimes arrive in serde as a private single-key table; params want them as strings.
fn toml_datetimes_as_strings(v: Value) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("$__toml_private_datetime") => {
            m.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null)
        }
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, toml_datetimes_as_strings(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(toml_datetimes_as_strings).collect()),
        other => other,
    }
}
