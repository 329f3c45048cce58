//! Stage three of loading, once nothing is wrong: the [`Dag`] with its tasks in topological order,
//! each with its resolved retry policy, time limit and upstream/downstream positions.

use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;

use super::checks::Graph;
use super::problems::Problems;
use super::raw::{RawTask, Sections};
use crate::dag::graph;
use crate::dag::spec::{Dag, RetryPolicy, Schedule, Task};
use crate::dag::template::{self, TemplatedValue};
use crate::operators::Connections;
use toml::de::DeValue;

/// Default `max_active_runs` (Airflow's default is 16 too).
const DEFAULT_MAX_ACTIVE_RUNS: u32 = 16;
/// Default `max_active_tasks`.
const DEFAULT_MAX_ACTIVE_TASKS: usize = 16;

/// What the checks produced besides the sections.
pub(super) struct Checked {
    pub graph: Graph,
    pub schedule: Option<Schedule>,
    pub timezone: chrono_tz::Tz,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub connections: Connections,
    pub run_rules: crate::dag::notify::RunRules,
    pub file: Option<PathBuf>,
    pub dir: PathBuf,
    pub source: Arc<str>,
}

/// Builds the DAG from sections that passed every check; `None` when a part is missing (which
/// the checks have reported).
pub(super) fn dag(s: Sections<'_>, c: Checked, problems: &mut Problems<'_>) -> Option<Dag> {
    let raw_dag = s.dag?;
    let order = graph::topo_order(&c.graph.upstream);
    let mut new_index = vec![0; s.tasks.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut slots: Vec<Option<RawTask<'_>>> = s.tasks.into_iter().map(Some).collect();
    let mut tasks = Vec::with_capacity(order.len());
    for &old in &order {
        let Some(RawTask {
            span,
            identity: Some(identity),
            attrs: Some(attrs),
            policy: Some(policy),
            kind: Some(kind),
            kind_fields,
        }) = slots[old].take()
        else {
            continue;
        };
        let policy = policy.or(s.defaults.as_ref());
        let retry = RetryPolicy {
            retries: policy.retries.unwrap_or(0),
            delay: policy.retry_delay.unwrap_or(RetryPolicy::default().delay),
            exponential_backoff: policy.retry_exponential_backoff.unwrap_or(false),
            max_delay: policy
                .max_retry_delay
                .unwrap_or(RetryPolicy::default().max_delay),
        };
        // Only a kind whose own fields hold a template is rendered per try.
        let templates = if kind_fields
            .iter()
            .any(|(_, v)| value_has_template(v.get_ref()))
        {
            match serde_json::to_value(&kind)
                .map_err(|e| e.to_string())
                .and_then(|v| TemplatedValue::parse(v).map_err(|e| e.message))
            {
                Ok(t) => t,
                Err(message) => {
                    problems.at(
                        Some(span.clone()),
                        format!(
                            "task `{}`: cannot prepare its templates: {message}",
                            identity.id.get_ref()
                        ),
                    );
                    continue;
                }
            }
        } else {
            None
        };
        tasks.push(Task {
            id: identity.id.into_inner(),
            description: attrs.description,
            kind,
            depends_on: identity
                .depends_on
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            trigger_rule: attrs.trigger_rule.unwrap_or_default(),
            retry,
            timeout: policy.timeout,
            upstream: c.graph.upstream[old]
                .iter()
                .map(|&u| new_index[u])
                .collect(),
            downstream: Vec::new(),
            templates,
            line: problems.line_of(span.start),
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
    Some(Dag {
        id: raw_dag.id.into_inner(),
        description: raw_dag.description,
        schedule: c.schedule,
        timezone: c.timezone,
        catchup: raw_dag.catchup,
        params: c.params,
        max_active_runs: raw_dag
            .max_active_runs
            .map_or(DEFAULT_MAX_ACTIVE_RUNS, Spanned::into_inner),
        max_active_tasks: raw_dag
            .max_active_tasks
            .map_or(DEFAULT_MAX_ACTIVE_TASKS, Spanned::into_inner),
        connections: Arc::new(c.connections),
        run_rules: c.run_rules,
        tasks,
        file: c.file,
        dir: c.dir,
        source: c.source,
        index,
    })
}

/// Whether a value holds a template anywhere (the task is then rendered before each try).
fn value_has_template(v: &DeValue<'_>) -> bool {
    match v {
        DeValue::String(s) => template::has_template(s),
        DeValue::Array(items) => items.iter().any(|v| value_has_template(v.get_ref())),
        DeValue::Table(t) => t.iter().any(|(_, v)| value_has_template(v.get_ref())),
        _ => false,
    }
}
