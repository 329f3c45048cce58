//! Stage two of loading: the checks across sections. The `[dag]` fields, task ids (unique, well
//! formed), dependencies (existing, acyclic), and per task: the tasks its kind refers to, its
//! templates, and the kind's own validation.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::Value;
use toml::Spanned;
use toml::de::DeValue;

use super::problems::Problems;
use super::raw::{RawDag, RawTask};
use crate::dag::graph;
use chrono_tz::Tz;

use crate::dag::spec::Schedule;
use crate::dag::template::{self, CheckScope, Template};
use crate::dag::timezone;
use crate::operators::{Operator, TaskKind, ValidateContext};

/// Whether `s` is a valid DAG id: letters, digits, `_`, `-`, `.` (not first).
fn is_id(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Whether `s` is a valid task id or param name: letters, digits, `_`, `-`.
fn is_task_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Checks the `[dag]` fields; returns the schedule, evaluated in the DAG's time zone, and the zone.
pub(super) fn dag_fields(
    dag: Option<&RawDag>,
    problems: &mut Problems<'_>,
) -> (Option<Schedule>, Tz) {
    let Some(d) = dag else {
        return (None, chrono_tz::UTC);
    };
    if let Some(p) = &d.params {
        for name in p.get_ref().keys().filter(|k| !is_task_id(k)) {
            problems.at(
                Some(p.span()),
                format!("param name `{name}` must use only letters, digits, `_` and `-` (it is written as {{{{ params.{name} }}}})"),
            );
        }
    }
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
    let timezone = d.timezone.as_ref().map_or(Some(chrono_tz::UTC), |z| {
        timezone::parse(z.get_ref())
            .map_err(|m| problems.at(Some(z.span()), m))
            .ok()
    });
    let timezone = timezone.unwrap_or(chrono_tz::UTC);
    let schedule = d.schedule.as_ref().and_then(|s| {
        Schedule::parse(s.get_ref())
            .map_err(|e| problems.at(Some(s.span()), e.to_string()))
            .ok()
    });
    (schedule.map(|s| s.in_timezone(timezone)), timezone)
}

/// The tasks as a graph: ids to positions, and each task's upstream positions.
pub(super) struct Graph {
    /// Task id -> position in the file.
    pub index: HashMap<String, usize>,
    /// Every task id, in file order.
    pub ids: Vec<String>,
    /// Upstream positions per task.
    pub upstream: Vec<Vec<usize>>,
    /// Each task's rank in the topological order (see [`graph::is_ancestor`]).
    pub rank: Vec<usize>,
}

/// Checks ids and dependencies, and reports every cycle with its edges.
pub(super) fn graph(tasks: &[RawTask<'_>], problems: &mut Problems<'_>) -> Graph {
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, t) in tasks.iter().enumerate() {
        let Some(id) = t.id() else { continue };
        let name = id.get_ref();
        if !is_task_id(name) {
            problems.at(
                Some(id.span()),
                format!("task id {name:?} must be letters, digits, `_` and `-`"),
            );
        }
        if let Some(&first) = index.get(name) {
            let first_line = tasks[first]
                .id()
                .map_or(0, |f| problems.line_of(f.span().start));
            problems.at(
                Some(id.span()),
                format!("duplicate task id `{name}` (first defined on line {first_line})"),
            );
        } else {
            index.insert(name.clone(), i);
        }
    }
    let ids = tasks
        .iter()
        .filter_map(|t| t.id().map(|id| id.get_ref().clone()))
        .collect();
    let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (i, t) in tasks.iter().enumerate() {
        let Some(c) = &t.identity else { continue };
        // A set, not `contains` on the list: a join of thousands of tasks stays linear.
        let mut listed = HashSet::new();
        for dep in &c.depends_on {
            match index.get(dep.get_ref()) {
                Some(&u) if listed.insert(u) => upstream[i].push(u),
                Some(_) => {}
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
    let id_of = |i: usize| tasks[i].id().map_or("?", |id| id.get_ref().as_str());
    for cycle in graph::cycles(&upstream) {
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
        problems.at(
            tasks[cycle[0]].id().map(Spanned::span),
            format!(
                "dependency cycle among tasks {}: {}",
                members.join(", "),
                edges.join("; ")
            ),
        );
    }
    let rank = graph::ranks(&upstream);
    Graph {
        index,
        ids,
        upstream,
        rank,
    }
}

/// Per-task semantic checks: referenced tasks, templates, the kind's own validation.
pub(super) fn tasks(
    tasks: &[RawTask<'_>],
    g: &Graph,
    params: &serde_json::Map<String, Value>,
    dir: &Path,
    problems: &mut Problems<'_>,
) {
    for (i, t) in tasks.iter().enumerate() {
        let (Some(id), Some(kind)) = (t.id(), &t.kind) else {
            continue;
        };
        let id = id.get_ref();
        // Asked only for the tasks this one refers to: computing every task's ancestors up front
        // made validation quadratic in the number of tasks.
        let task_exists = |other: &str| g.index.contains_key(other);
        let is_upstream = |other: &str| {
            g.index
                .get(other)
                .is_some_and(|&u| graph::is_ancestor(&g.upstream, &g.rank, u, i))
        };
        for r in kind.referenced_tasks() {
            if !task_exists(r) {
                problems.at(
                    Some(t.span.clone()),
                    format!("task `{id}` refers to task `{r}`, which does not exist"),
                );
            } else if !is_upstream(r) {
                problems.at(
                    Some(t.span.clone()),
                    format!(
                        "task `{id}` refers to task `{r}`, which is not upstream of it; add `{r}` to depends_on"
                    ),
                );
            }
        }
        let scope = CheckScope {
            params,
            task_exists: &task_exists,
            is_upstream: &is_upstream,
            replicas: matches!(kind, TaskKind::ProcessSpawn(_)),
        };
        for (_, value) in t.kind_fields.iter() {
            templates(value, &scope, problems);
        }
        let vctx = ValidateContext {
            task_id: id,
            dag_dir: dir,
            task_ids: &g.ids,
            params,
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
                .or_else(|| t.id().map(Spanned::span));
            problems.at(span, format!("task `{id}`: {}", p.message));
        }
    }
}

/// Parses every template in a value and checks the names it uses.
fn templates(value: &Spanned<DeValue<'_>>, scope: &CheckScope<'_>, problems: &mut Problems<'_>) {
    match value.get_ref() {
        DeValue::String(s) if template::has_template(s) => match Template::parse(s) {
            Err(e) => problems.at(
                Some(value.span()),
                format!("bad template {s:?}: {}", e.message),
            ),
            Ok(t) => {
                for (expr, _) in t.exprs() {
                    if let Err(e) = template::check(expr, scope) {
                        problems.at(Some(value.span()), e.to_string());
                    }
                }
            }
        },
        DeValue::Array(items) => {
            for v in items.iter() {
                templates(v, scope, problems);
            }
        }
        DeValue::Table(t) => {
            for (_, v) in t.iter() {
                templates(v, scope, problems);
            }
        }
        _ => {}
    }
}
