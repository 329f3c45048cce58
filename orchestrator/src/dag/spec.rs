//! The validated DAG: what the scheduler runs. Built only by the loader, so every `Dag` is acyclic,
//! its dependencies exist, and its templates name known params and upstream tasks.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::template::TemplatedValue;
use crate::operators::{Connections, TaskKind};

/// When a task runs, given its upstream tasks' states (as in Airflow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream succeeded (a skipped upstream skips it, a failed one marks it upstream_failed).
    #[default]
    AllSuccess,
    /// Every upstream finished, whatever its state: cleanup tasks.
    AllDone,
    /// Every upstream failed (or upstream_failed); otherwise it is skipped.
    AllFailed,
    /// As soon as one upstream succeeded; upstream_failed if none did.
    OneSuccess,
    /// As soon as one upstream failed; skipped if none did.
    OneFailed,
    /// Every upstream finished and none failed (skipped ones are fine).
    NoneFailed,
}

impl TriggerRule {
    /// The name used in DAG files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllSuccess => "all_success",
            Self::AllDone => "all_done",
            Self::AllFailed => "all_failed",
            Self::OneSuccess => "one_success",
            Self::OneFailed => "one_failed",
            Self::NoneFailed => "none_failed",
        }
    }
}

/// How a task is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first.
    pub retries: u32,
    /// Delay before the first retry.
    pub delay: Duration,
    /// Double the delay for every further retry.
    pub exponential_backoff: bool,
    /// Upper bound of the delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 0,
            delay: Duration::from_secs(10),
            exponential_backoff: false,
            max_delay: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// The delay before try `next_try` (2 for the first retry): `delay`, or `delay * 2^(n-2)`
    /// with exponential backoff, at most `max_delay`.
    pub fn delay_before(&self, next_try: u32) -> Duration {
        let base = self.delay.min(self.max_delay);
        if !self.exponential_backoff || next_try <= 2 {
            return base;
        }
        let factor = 1u32.checked_shl(next_try - 2).unwrap_or(u32::MAX);
        base.checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// A cron schedule in a time zone: crontab's dialect (5 fields, or 6 and 7 with seconds and
/// years, or `@daily`...; see [`super::crontab`]) evaluated in the DAG's zone with the
/// daylight-saving rule of [`super::timezone`].
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The expression as written.
    pub expr: String,
    /// The zone its wall-clock times are in (UTC unless `[dag] timezone` says otherwise).
    pub timezone: chrono_tz::Tz,
    crontab: super::crontab::Crontab,
}

impl Schedule {
    /// Parses a cron expression, in UTC.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let crontab = expr.parse().map_err(|e: super::crontab::CrontabError| {
            format!("bad cron expression {expr:?}: {e}")
        })?;
        Ok(Self {
            expr: expr.to_owned(),
            timezone: chrono_tz::UTC,
            crontab,
        })
    }

    /// The same schedule in `timezone`.
    pub fn in_timezone(self, timezone: chrono_tz::Tz) -> Self {
        Self { timezone, ..self }
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        super::timezone::next_after(&self.crontab, self.timezone, t)
    }

    /// The last slot strictly before `t`.
    pub fn prev_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        super::timezone::prev_before(&self.crontab, self.timezone, t)
    }

    /// The data interval `[start, end)` of a run with logical date `t`: it ends at the latest
    /// slot at or before `t` (the slot itself for a scheduled or backfill run) and starts at the
    /// slot before that, as in Airflow.
    pub fn data_interval(&self, t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let whole = t - chrono::Duration::nanoseconds(t.timestamp_subsec_nanos().into());
        let end = self
            .prev_before(whole + chrono::Duration::seconds(1))
            .unwrap_or(t);
        let start = self.prev_before(end).unwrap_or(end);
        (start, end)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr && self.timezone == other.timezone
    }
}

/// One validated task.
#[derive(Clone, Debug)]
pub struct Task {
    /// Unique id.
    pub id: String,
    /// What it is for.
    pub description: Option<String>,
    /// What it does.
    pub kind: TaskKind,
    /// Upstream task ids as written.
    pub depends_on: Vec<String>,
    /// When it runs.
    pub trigger_rule: TriggerRule,
    /// Retries.
    pub retry: RetryPolicy,
    /// Per-try limit; the try is cancelled (its processes killed) when reached.
    pub timeout: Option<Duration>,
    /// Indices (in [`Dag::tasks`]) of its direct upstream tasks.
    pub upstream: Vec<usize>,
    /// Indices of its direct downstream tasks.
    pub downstream: Vec<usize>,
    /// Its kind config as JSON with its templates parsed, when any string of it holds one: each
    /// try renders it and reads the kind back from it.
    pub templates: Option<TemplatedValue>,
    /// 1-based line of the task in its file.
    pub line: usize,
}

/// A validated DAG.
#[derive(Clone, Debug)]
pub struct Dag {
    /// Unique id.
    pub id: String,
    /// What it does.
    pub description: Option<String>,
    /// When the cron scheduler starts it.
    pub schedule: Option<Schedule>,
    /// The zone of its schedule and of the times the UI shows for it (UTC by default).
    pub timezone: chrono_tz::Tz,
    /// `[dag] catchup`: whether missed slots all run; `None` follows the server's `--catchup`.
    pub catchup: Option<bool>,
    /// Params with their defaults.
    pub params: serde_json::Map<String, Value>,
    /// Runs of this DAG allowed at once.
    pub max_active_runs: u32,
    /// Tasks of one run allowed to run at once.
    pub max_active_tasks: usize,
    /// Connections after `${ENV:-default}` interpolation.
    pub connections: Arc<Connections>,
    /// `run_timeout`, `deadline` and `[[dag.notify]]`: how its runs are bounded and reported.
    pub run_rules: super::notify::RunRules,
    /// Tasks in topological order (ties in file order).
    pub tasks: Vec<Task>,
    /// The DAG file, if loaded from one.
    pub file: Option<PathBuf>,
    /// The DAG file's directory (relative paths resolve against it).
    pub dir: PathBuf,
    /// The text it was read from (stored with each run as its DAG version).
    pub source: Arc<str>,
    pub(crate) index: HashMap<String, usize>,
}

/// A param override that does not fit.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// Not declared.
    #[error("unknown param {name:?}; the DAG declares: {known}")]
    Unknown {
        /// The name given.
        name: String,
        /// Declared names.
        known: String,
    },
    /// Not of the default's type.
    #[error("param {name:?} expects {expected} (its default is {default}), got {value:?}")]
    BadValue {
        /// The param.
        name: String,
        /// The type.
        expected: &'static str,
        /// Its default.
        default: String,
        /// The value given.
        value: String,
    },
}

impl Dag {
    /// A task by id.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.index.get(id).map(|&i| &self.tasks[i])
    }

    /// A task's index in [`tasks`](Self::tasks).
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The data interval `[start, end)` of a run with logical date `t`: see
    /// [`Schedule::data_interval`]; a DAG without a schedule has the empty interval `[t, t)`.
    pub fn data_interval(&self, t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        self.schedule
            .as_ref()
            .map_or((t, t), |s| s.data_interval(t))
    }

    /// Tasks without downstream tasks: their states decide the run's.
    pub fn leaves(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.tasks.len()).filter(|&i| self.tasks[i].downstream.is_empty())
    }

    /// The params with `overrides` (from `--param k=v` or the UI) applied; each value is read as
    /// its default's type (integer, float, boolean, string; JSON for arrays and tables).
    pub fn resolve_params(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<serde_json::Map<String, Value>, ParamError> {
        let mut params = self.params.clone();
        for (name, raw) in overrides {
            let Some(default) = self.params.get(name) else {
                let known: Vec<&str> = self.params.keys().map(String::as_str).collect();
                return Err(ParamError::Unknown {
                    name: name.clone(),
                    known: if known.is_empty() {
                        "no params".into()
                    } else {
                        known.join(", ")
                    },
                });
            };
            let bad = |expected| ParamError::BadValue {
                name: name.clone(),
                expected,
                default: default.to_string(),
                value: raw.clone(),
            };
            let value = match default {
                Value::String(_) => Value::String(raw.clone()),
                Value::Bool(_) => {
                    Value::Bool(raw.trim().parse().map_err(|_| bad("true or false"))?)
                }
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    Value::from(raw.trim().parse::<i64>().map_err(|_| bad("an integer"))?)
                }
                Value::Number(_) => serde_json::Number::from_f64(
                    raw.trim().parse::<f64>().map_err(|_| bad("a number"))?,
                )
                .map(Value::Number)
                .ok_or_else(|| bad("a finite number"))?,
                Value::Array(_) => {
                    let v: Value = serde_json::from_str(raw).map_err(|_| bad("a JSON array"))?;
                    if !v.is_array() {
                        return Err(bad("a JSON array"));
                    }
                    v
                }
                Value::Object(_) => {
                    let v: Value = serde_json::from_str(raw).map_err(|_| bad("a JSON object"))?;
                    if !v.is_object() {
                        return Err(bad("a JSON object"));
                    }
                    v
                }
                Value::Null => {
                    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
                }
            };
            params.insert(name.clone(), value);
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            retries: 5,
            delay: Duration::from_secs(1),
            exponential_backoff: true,
            max_delay: Duration::from_secs(5),
        };
        let d: Vec<u64> = (2..=7).map(|n| p.delay_before(n).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 5, 5, 5]);
        assert_eq!(p.delay_before(200), Duration::from_secs(5));
        let flat = RetryPolicy {
            exponential_backoff: false,
            ..p
        };
        assert_eq!(flat.delay_before(6), Duration::from_secs(1));
    }

    #[test]
    fn cron_accepts_five_six_fields_and_macros() {
        let t = DateTime::parse_from_rfc3339("2024-01-31T10:07:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(
            s.next_after(t).unwrap().to_rfc3339(),
            "2024-01-31T10:15:00+00:00"
        );
        assert!(Schedule::parse("0 0 * * * *").is_ok());
        assert!(Schedule::parse("@daily").is_ok());
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("every day").is_err());
    }
}
