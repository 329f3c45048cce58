//! Stage one of loading: the spanned TOML table split into its sections and each read into a raw
//! struct, every problem reported with its span and none hiding another.
//!
//! A `[[task]]` table is split by key into its identity (`id`, `depends_on`, read leniently so a
//! task with other mistakes still takes part in the graph checks), its attributes, its retry and
//! timeout policy (the same struct as `[dag.defaults]`) and the kind's own fields, because serde's
//! `flatten` would disable `deny_unknown_fields`. Each part is read once, straight from toml's
//! spanned `DeTable`, so serde errors keep the position of the offending key or value. The key
//! lists are the structs' own field names, so a new field needs no second list.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use serde_aux::serde_introspection::serde_introspect;
use serde_json::Value;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};

use super::connections::RawConnections;
use super::problems::Problems;
use crate::dag::spec::TriggerRule;
use crate::operators::TaskKind;

/// The `[dag]` table (without `[dag.defaults]`, read on its own).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDag {
    /// Unique id: letters, digits, `_`, `-`, `.`.
    pub id: Spanned<String>,
    /// What the DAG does.
    #[serde(default)]
    pub description: Option<String>,
    /// Cron schedule for `orchestrator serve`.
    #[serde(default)]
    pub schedule: Option<Spanned<String>>,
    /// IANA time zone the schedule is evaluated in (default UTC).
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// Run every missed slot (true) or only the latest (false); default: the server's `--catchup`.
    #[serde(default)]
    pub catchup: Option<bool>,
    /// Params and their defaults.
    #[serde(default)]
    pub params: Option<Spanned<BTreeMap<String, Value>>>,
    /// Runs allowed at once.
    #[serde(default)]
    pub max_active_runs: Option<Spanned<u32>>,
    /// Tasks of one run allowed at once.
    #[serde(default)]
    pub max_active_tasks: Option<Spanned<usize>>,
    /// Cancel a run still going this long after its start (a duration).
    #[serde(default)]
    pub run_timeout: Option<Spanned<String>>,
    /// Notify `deadline_miss` when a run is not done this long after its start (a scheduled
    /// run: after its slot).
    #[serde(default)]
    pub deadline: Option<Spanned<String>>,
    /// `[[dag.notify]]`: webhooks told about runs.
    #[serde(default)]
    pub notify: Vec<Spanned<RawNotify>>,
}

/// One `[[dag.notify]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    /// The events: `failure`, `success`, `retry`, `deadline_miss`, `recovered`.
    pub on: Spanned<Vec<Spanned<String>>>,
    /// Where the message is POSTed (`${ENV:-default}` interpolated).
    pub url: Spanned<String>,
    /// `json` (default) or `slack`.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
}

/// Retries and time limit: `[dag.defaults]`, and the same fields of a `[[task]]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    /// Tries after the first.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Delay before the first retry.
    #[serde(default, with = "humantime_serde")]
    pub retry_delay: Option<Duration>,
    /// Double the delay for each further retry.
    #[serde(default)]
    pub retry_exponential_backoff: Option<bool>,
    /// Upper bound of the retry delay.
    #[serde(default, with = "humantime_serde")]
    pub max_retry_delay: Option<Duration>,
    /// Per-try time limit.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

impl RawPolicy {
    /// This policy, with `defaults` filling what it leaves out.
    pub fn or(self, defaults: Option<&RawPolicy>) -> RawPolicy {
        let d = defaults.cloned().unwrap_or_default();
        RawPolicy {
            retries: self.retries.or(d.retries),
            retry_delay: self.retry_delay.or(d.retry_delay),
            retry_exponential_backoff: self
                .retry_exponential_backoff
                .or(d.retry_exponential_backoff),
            max_retry_delay: self.max_retry_delay.or(d.max_retry_delay),
            timeout: self.timeout.or(d.timeout),
        }
    }
}

/// What the graph checks need of a task.
#[derive(Debug, Deserialize)]
pub(super) struct RawTaskIdentity {
    /// Unique id.
    pub id: Spanned<String>,
    /// Upstream task ids.
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
}

/// A task's attributes besides its identity and policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTaskAttrs {
    /// The kind (its name is read with the kind's fields).
    #[allow(dead_code)]
    pub kind: Spanned<String>,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// When the task runs given its upstream states.
    #[serde(default)]
    pub trigger_rule: Option<TriggerRule>,
}

/// One `[[task]]`, each part `None` where it could not be read (the problem is reported).
pub(super) struct RawTask<'i> {
    /// The whole table.
    pub span: Range<usize>,
    pub identity: Option<RawTaskIdentity>,
    pub attrs: Option<RawTaskAttrs>,
    pub policy: Option<RawPolicy>,
    pub kind: Option<TaskKind>,
    /// The kind's own fields, for template checks and the positions of its problems.
    pub kind_fields: DeTable<'i>,
}

impl RawTask<'_> {
    /// The task id, when the identity was read.
    pub fn id(&self) -> Option<&Spanned<String>> {
        self.identity.as_ref().map(|c| &c.id)
    }
}

/// The sections of a DAG file, each read.
pub(super) struct Sections<'i> {
    pub dag: Option<RawDag>,
    pub defaults: Option<RawPolicy>,
    pub connections: RawConnections,
    pub tasks: Vec<RawTask<'i>>,
}

/// Reads the sections of a parsed file; unknown sections and keys are reported and skipped.
pub(super) fn read_sections<'i>(
    root: DeTable<'i>,
    root_span: Range<usize>,
    problems: &mut Problems<'_>,
) -> Sections<'i> {
    let mut dag_section = None;
    let mut conn_section = None;
    let mut task_values = Vec::new();
    for (key, value) in root {
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
    let (dag, defaults) = match dag_section {
        None => {
            problems.at(Some(0..0), "missing [dag] section (with at least `id`)");
            (None, None)
        }
        Some(v) => read_dag(v, problems),
    };
    let connections = conn_section
        .and_then(|v| read(v, problems))
        .unwrap_or_default();
    if task_values.is_empty() {
        problems.at(
            Some(root_span.end..root_span.end),
            "the DAG has no tasks: add [[task]] tables",
        );
    }
    let mut tasks = Vec::with_capacity(task_values.len());
    for value in task_values {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            problems.at(Some(span), "each [[task]] must be a table");
            continue;
        };
        tasks.push(read_task(table, span, problems));
    }
    Sections {
        dag,
        defaults,
        connections,
        tasks,
    }
}

/// `[dag]` and its `[dag.defaults]`, read apart so that problems of one do not hide the other's.
fn read_dag(
    v: Spanned<DeValue<'_>>,
    problems: &mut Problems<'_>,
) -> (Option<RawDag>, Option<RawPolicy>) {
    let span = v.span();
    let mut defaults = None;
    let value = match v.into_inner() {
        DeValue::Table(t) => {
            let mut known = serde_introspect::<RawDag>().to_vec();
            known.push("defaults");
            let mut rest = DeTable::new();
            for (k, d) in strip_unknown(t, &known, "[dag]", problems) {
                if k.get_ref().as_ref() == "defaults" {
                    defaults = read(d, problems);
                } else {
                    rest.insert(k, d);
                }
            }
            DeValue::Table(rest)
        }
        other => other,
    };
    (read(Spanned::new(span, value), problems), defaults)
}

/// Splits one `[[task]]` table and reads each part.
fn read_task<'i>(
    table: DeTable<'i>,
    span: Range<usize>,
    problems: &mut Problems<'_>,
) -> RawTask<'i> {
    let identity_keys = serde_introspect::<RawTaskIdentity>();
    let attr_keys = serde_introspect::<RawTaskAttrs>();
    let policy_keys = serde_introspect::<RawPolicy>();
    let (mut identity, mut attrs, mut policy, mut kind_fields) = (
        DeTable::new(),
        DeTable::new(),
        DeTable::new(),
        DeTable::new(),
    );
    let mut kind_name: Option<(String, Range<usize>)> = None;
    for (k, v) in table {
        let key = k.get_ref().as_ref();
        if key == "kind"
            && let DeValue::String(s) = v.get_ref()
        {
            kind_name = Some((s.to_string(), v.span()));
        }
        let part = if identity_keys.contains(&key) {
            &mut identity
        } else if attr_keys.contains(&key) {
            &mut attrs
        } else if policy_keys.contains(&key) {
            &mut policy
        } else {
            &mut kind_fields
        };
        part.insert(k, v);
    }
    let part = |table: DeTable<'i>| Spanned::new(span.clone(), DeValue::Table(table));
    let identity = read(part(identity), problems);
    let attrs = read(part(attrs), problems);
    let policy = read(part(policy), problems);
    // The kind half is read as serde's externally tagged enum `{ "<kind>": { fields } }`, which
    // deserializes the variant's struct straight from the spanned table.
    let kind = kind_name.and_then(|(name, name_span)| {
        let mut wrapper = DeTable::new();
        wrapper.insert(
            Spanned::new(name_span, DeString::Owned(name)),
            Spanned::new(span.clone(), DeValue::Table(kind_fields.clone())),
        );
        read::<TaskKind>(
            Spanned::new(span.clone(), DeValue::Table(wrapper)),
            problems,
        )
    });
    RawTask {
        span,
        identity,
        attrs,
        policy,
        kind,
        kind_fields,
    }
}

/// Deserializes a spanned value; a problem (at the value when serde gives no span) yields `None`.
fn read<'i, T: Deserialize<'i>>(
    value: Spanned<DeValue<'i>>,
    problems: &mut Problems<'_>,
) -> Option<T> {
    let span = value.span();
    T::deserialize(ValueDeserializer::from(value))
        .map_err(|e| problems.toml(&e, Some(span)))
        .ok()
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

/// The DAG's params as JSON (TOML datetimes become their text).
pub(super) fn params(dag: Option<&RawDag>) -> serde_json::Map<String, Value> {
    dag.and_then(|d| d.params.as_ref())
        .map(|p| {
            p.get_ref()
                .iter()
                .map(|(k, v)| (k.clone(), toml_datetimes_as_strings(v.clone())))
                .collect()
        })
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_lists_are_the_fields() {
        assert_eq!(serde_introspect::<RawTaskIdentity>(), ["id", "depends_on"]);
        assert_eq!(
            serde_introspect::<RawPolicy>(),
            [
                "retries",
                "retry_delay",
                "retry_exponential_backoff",
                "max_retry_delay",
                "timeout"
            ]
        );
        assert!(serde_introspect::<RawDag>().contains(&"max_active_tasks"));
        assert_eq!(serde_introspect::<RawNotify>(), ["on", "url", "format"]);
    }
}
