//! `clickhouse.assert`: runs a query returning one value and compares it with an expected one, a
//! literal or an upstream output (`"{{ tasks.produce.output.rows }}"`); a failure shows both and
//! the difference.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::session::Session;
use super::sql::summary;
use super::{Scalar, bind, common_problems, default_connect_timeout, default_max_execution_time};
use crate::operators::{ConfigProblem, Operator, OperatorError, TaskContext, ValidateContext};

/// How the actual value is compared with the expected one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// Equal (numbers within `tolerance`).
    #[default]
    Eq,
    /// Not equal.
    Ne,
    /// Actual < expected.
    Lt,
    /// Actual <= expected.
    Le,
    /// Actual > expected.
    Gt,
    /// Actual >= expected.
    Ge,
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        })
    }
}

/// Fields of a `clickhouse.assert` task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseAssert {
    /// A query whose first row's first column is the actual value.
    pub query: String,
    /// The expected value: a literal or a template such as `"{{ tasks.produce.output.rows }}"`.
    pub expected: Scalar,
    /// `eq` (default), `ne`, `lt`, `le`, `gt` or `ge`: `actual <compare> expected`.
    #[serde(default)]
    pub compare: Compare,
    /// For numbers compared with `eq`/`ne`: how far apart they may be and still count as equal
    /// (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Values of `{name:Type}` placeholders in `query`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bind: BTreeMap<String, Scalar>,
    /// Settings sent with the query, those the server does not know left out (logged).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, Scalar>,
    /// Database to run in instead of the connection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Server-side time limit of the query (humantime, default `5m`).
    #[serde(default = "default_max_execution_time", with = "humantime_serde")]
    pub max_execution_time: Duration,
    /// How long to wait for the server to answer the first request (humantime, default `10s`).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

/// A value as compared: a number when it reads as one, text otherwise.
#[derive(Clone, Debug, PartialEq)]
enum Comparable {
    Int(i128),
    Float(f64),
    Text(String),
}

impl Comparable {
    fn from_text(s: &str) -> Self {
        let t = s.trim();
        if let Ok(i) = t.parse::<i128>() {
            Self::Int(i)
        } else if let Ok(x) = t.parse::<f64>()
            && x.is_finite()
        {
            Self::Float(x)
        } else {
            Self::Text(s.to_owned())
        }
    }

    fn from_json(v: &Value) -> Self {
        match v {
            Value::String(s) => Self::from_text(s),
            Value::Number(n) => n
                .as_i64()
                .map(|i| Self::Int(i.into()))
                .or_else(|| n.as_u64().map(|u| Self::Int(u.into())))
                .or_else(|| n.as_f64().map(Self::Float))
                .unwrap_or_else(|| Self::Text(n.to_string())),
            Value::Bool(b) => Self::Int((*b).into()),
            Value::Null => Self::Text("NULL".into()),
            other => Self::Text(other.to_string()),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Int(i) => Some(*i as f64),
            Self::Float(x) => Some(*x),
            Self::Text(_) => None,
        }
    }
}

impl fmt::Display for Comparable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// How a comparison came out.
#[derive(Debug, PartialEq)]
struct Verdict {
    holds: bool,
    /// `actual - expected` for numbers.
    difference: Option<Value>,
}

fn judge(actual: &Comparable, expected: &Comparable, compare: Compare, tolerance: f64) -> Verdict {
    let difference = match (actual, expected) {
        (Comparable::Int(a), Comparable::Int(e)) => Some(Value::from((a - e) as i64)),
        (a, e) => match (a.as_f64(), e.as_f64()) {
            (Some(a), Some(e)) => Some(Value::from(a - e)),
            _ => None,
        },
    };
    let ordering = match (actual, expected) {
        (Comparable::Int(a), Comparable::Int(e)) => Some(a.cmp(e)),
        (Comparable::Text(a), Comparable::Text(e)) => Some(a.cmp(e)),
        (a, e) => match (a.as_f64(), e.as_f64()) {
            (Some(a), Some(e)) => a.partial_cmp(&e),
            // A number against text: compare as text.
            _ => Some(a.to_string().cmp(&e.to_string())),
        },
    };
    let close = match (actual.as_f64(), expected.as_f64()) {
        (Some(a), Some(e)) => (a - e).abs() <= tolerance,
        _ => ordering == Some(Ordering::Equal),
    };
    let holds = match compare {
        Compare::Eq => close,
        Compare::Ne => !close,
        Compare::Lt => ordering == Some(Ordering::Less),
        Compare::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
        Compare::Gt => ordering == Some(Ordering::Greater),
        Compare::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
    };
    Verdict { holds, difference }
}

impl ClickHouseAssert {
    /// Problems a DAG author can fix, found when the DAG loads.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = common_problems(
            "query",
            Some(&self.query),
            &self.bind,
            self.database.as_deref(),
            self.max_execution_time,
        );
        if self.query.trim().is_empty() {
            problems.push(ConfigProblem::field("query", "`query` is empty"));
        } else if !self.query.contains("{{")
            && super::split::split(&self.query).is_ok_and(|s| s.len() > 1)
        {
            problems.push(ConfigProblem::field(
                "query",
                "`query` holds several statements; an assertion runs one query",
            ));
        }
        if let Some(t) = self.tolerance
            && !(t.is_finite() && t >= 0.0)
        {
            problems.push(ConfigProblem::field(
                "tolerance",
                "`tolerance` must be a number >= 0",
            ));
        }
        problems
    }
}

impl Operator for ClickHouseAssert {
    fn validate(&self, _ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        self.problems()
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        let query = bind::bind(&self.query, &self.bind)
            .map_err(|e| OperatorError::failed(format!("query: {e}")))?;
        let query = query.trim().trim_end_matches(';').trim().to_owned();
        let config = &ctx.connections().clickhouse;
        let session = Session::open(
            config,
            self.database.as_deref(),
            self.connect_timeout,
            ctx.cancel_token(),
        )
        .await
        .map_err(|e| super::operator_error("connecting", e))?;
        let (settings, skipped) = session.settings(&self.settings, self.max_execution_time);
        if !skipped.is_empty() {
            ctx.log(format!(
                "Not sending setting(s) {} : ClickHouse {} does not know them",
                skipped.join(", "),
                session.version()
            ));
        }
        ctx.log(format!(
            "ClickHouse {}: {}",
            session.version(),
            summary(&query)
        ));
        let rows = session
            .fetch(
                &query,
                &settings,
                self.max_execution_time,
                ctx.cancel_token(),
            )
            .await
            .map_err(|e| super::operator_error("the assertion's query failed", e))?;
        let Some(actual) = rows
            .as_ref()
            .and_then(|r| r.data.first())
            .and_then(|row| row.first())
        else {
            return Err(OperatorError::failed(format!(
                "assertion failed: `{}` returned no rows, expected a value {} {}",
                summary(&query),
                self.compare,
                self.expected
            )));
        };
        let actual_cmp = Comparable::from_json(actual);
        let expected_cmp = match &self.expected {
            Scalar::Text(s) => Comparable::from_text(s),
            Scalar::Integer(i) => Comparable::Int((*i).into()),
            Scalar::Float(x) => Comparable::Float(*x),
            Scalar::Bool(b) => Comparable::Int((*b).into()),
        };
        let verdict = judge(
            &actual_cmp,
            &expected_cmp,
            self.compare,
            self.tolerance.unwrap_or(0.0),
        );
        ctx.set_output("actual", actual.clone());
        ctx.set_output(
            "expected",
            serde_json::to_value(&self.expected).unwrap_or_default(),
        );
        if let Some(d) = &verdict.difference {
            ctx.set_output("difference", d.clone());
        }
        let difference = verdict
            .difference
            .as_ref()
            .map(|d| format!(" (difference {d})"))
            .unwrap_or_default();
        let tolerance = self
            .tolerance
            .filter(|t| *t > 0.0)
            .map(|t| format!(" within {t}"))
            .unwrap_or_default();
        if verdict.holds {
            ctx.log(format!(
                "Assertion holds: {actual_cmp} {} {expected_cmp}{tolerance}{difference}",
                self.compare
            ));
            Ok(())
        } else {
            Err(OperatorError::failed(format!(
                "assertion failed: `{}` returned {actual_cmp}, expected {} {expected_cmp}{tolerance}{difference}",
                summary(&query),
                self.compare
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(actual: Value, expected: &str, compare: Compare, tolerance: f64) -> Verdict {
        judge(
            &Comparable::from_json(&actual),
            &Comparable::from_text(expected),
            compare,
            tolerance,
        )
    }

    #[test]
    fn numbers_compare_as_numbers_with_a_difference() {
        let v = verdict(Value::from(99_998), "100000", Compare::Eq, 0.0);
        assert!(!v.holds);
        assert_eq!(v.difference, Some(Value::from(-2)));
        assert!(verdict(Value::from(99_998), "100000", Compare::Eq, 2.0).holds);
        assert!(verdict(Value::from("100000"), "100000", Compare::Eq, 0.0).holds);
        assert!(verdict(Value::from(1.5), "1.25", Compare::Gt, 0.0).holds);
        assert!(verdict(Value::from(3), "3", Compare::Ge, 0.0).holds);
        assert!(!verdict(Value::from(3), "3", Compare::Lt, 0.0).holds);
        assert!(verdict(Value::from(3), "4", Compare::Ne, 0.0).holds);
        // Numeric, not lexical: "10" > "9".
        assert!(verdict(Value::from(10), "9", Compare::Gt, 0.0).holds);
    }

    #[test]
    fn text_compares_as_text() {
        let v = verdict(Value::from("ok"), "ok", Compare::Eq, 0.0);
        assert!(v.holds && v.difference.is_none());
        assert!(!verdict(Value::from("ok"), "ko", Compare::Eq, 0.0).holds);
    }

    #[test]
    fn fields_parse_and_are_checked() {
        let spec: ClickHouseAssert =
            toml::from_str("query = \"SELECT count() FROM t\"\nexpected = 100000").unwrap();
        assert!(spec.problems().is_empty());
        assert_eq!(spec.compare, Compare::Eq);
        let spec: ClickHouseAssert = toml::from_str(
            "query = \"SELECT 1; SELECT 2\"\nexpected = \"{{ tasks.p.output.rows }}\"\ntolerance = -1.0\ncompare = \"ge\"",
        )
        .unwrap();
        assert_eq!(spec.problems().len(), 2, "{:?}", spec.problems());
        assert!(toml::from_str::<ClickHouseAssert>("query = \"SELECT 1\"").is_err());
        assert!(
            toml::from_str::<ClickHouseAssert>("query = \"x\"\nexpected = 1\ncompare = \"approx\"")
                .is_err()
        );
    }
}
