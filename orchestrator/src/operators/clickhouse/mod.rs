//! The ClickHouse task kinds: `clickhouse.sql` (run statements inline or from a `.sql` file, small
//! results become outputs) and `clickhouse.assert` (compare a query's value with an expected one,
//! e.g. the producer's row count).
//!
//! Both work on Debian's ClickHouse 18.16 and on 24.x+ ([`session`] detects the version and the
//! settings the server knows), bound every statement with `max_execution_time`, and fill
//! `{name:Type}` placeholders from a `bind` table with values quoted for their type ([`bind`]).

pub mod assert;
pub mod bind;
pub mod session;
pub mod split;
pub mod sql;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use assert::{ClickHouseAssert, Compare};
pub use session::{Error, Rows, Session};
pub use sql::ClickHouseSql;

use crate::operators::{ConfigProblem, OperatorError};

/// A scalar value from the DAG file: TOML strings, integers, floats and booleans (templates render
/// to strings, so `"{{ tasks.produce.output.rows }}"` is a `Text`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// Text.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean (sent as 1/0 in settings).
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => f.write_str(if *b { "1" } else { "0" }),
        }
    }
}

pub(crate) fn default_max_execution_time() -> Duration {
    Duration::from_secs(300)
}

pub(crate) fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Checks shared by both kinds: the database name, the time limit, placeholders in `sql` against
/// `bind`.
pub(crate) fn common_problems(
    sql_field: &str,
    sql: Option<&str>,
    bind: &BTreeMap<String, Scalar>,
    database: Option<&str>,
    max_execution_time: Duration,
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    if let Some(db) = database
        && !db.contains("{{")
        && !bind::is_name(db)
    {
        problems.push(ConfigProblem::field(
            "database",
            format!("`database` {db:?} is not a plain name (letters, digits, '_')"),
        ));
    }
    if max_execution_time < Duration::from_secs(1) {
        problems.push(ConfigProblem::field(
            "max_execution_time",
            "`max_execution_time` must be at least 1s (ClickHouse counts whole seconds)",
        ));
    }
    if let Some(sql) = sql {
        problems.extend(sql_problems(sql_field, sql, bind));
    }
    problems
}

/// Unreadable SQL, and placeholders without a `bind` value or with an unknown type.
pub(crate) fn sql_problems(
    field: &str,
    sql: &str,
    bind: &BTreeMap<String, Scalar>,
) -> Vec<ConfigProblem> {
    if sql.contains("{{") {
        // Engine templates render first; the text is checked when the task runs.
        return Vec::new();
    }
    let mut problems = Vec::new();
    if let Err(e) = split::split(sql) {
        problems.push(ConfigProblem::field(field, format!("`{field}`: {e}")));
        return problems;
    }
    match bind::placeholders(sql) {
        Ok(found) => {
            for p in found {
                if !bind::known_type(&p.ty) {
                    problems.push(ConfigProblem::field(
                        field,
                        format!(
                            "`{field}` line {}: {{{}:{}}} has an unsupported type; use Identifier, String, Int8..Int64, UInt8..UInt64, Float32 or Float64",
                            p.line, p.name, p.ty
                        ),
                    ));
                } else if !bind.contains_key(&p.name) {
                    problems.push(ConfigProblem::field(
                        field,
                        format!(
                            "`{field}` line {}: {{{}:{}}} has no value; add `{}` to the task's `bind` table",
                            p.line, p.name, p.ty, p.name
                        ),
                    ));
                }
            }
        }
        Err(e) => problems.push(ConfigProblem::field(field, format!("`{field}`: {e}"))),
    }
    problems
}

/// The task-level error for a ClickHouse failure.
pub(crate) fn operator_error(context: impl fmt::Display, error: Error) -> OperatorError {
    match error {
        Error::Cancelled => OperatorError::Cancelled,
        other => OperatorError::failed(format!("{context}: {other}")),
    }
}
