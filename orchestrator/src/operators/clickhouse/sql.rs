//! `clickhouse.sql`: runs statements, inline or from a `.sql` file, one after the other; the last
//! result set (if small) becomes the task's outputs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::session::{Rows, Session};
use super::{
    Scalar, bind, common_problems, default_connect_timeout, default_max_execution_time, split,
};
use crate::operators::{ConfigProblem, Operator, OperatorError, TaskContext, ValidateContext};

fn default_max_output_rows() -> usize {
    100
}

/// Fields of a `clickhouse.sql` task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSql {
    /// Statements separated by `;`. Exactly one of `sql` and `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// A `.sql` file of statements separated by `;`, relative to the DAG file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Values of `{name:Type}` placeholders in the SQL, quoted for their type
    /// (`{table:Identifier}` accepts only plain names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bind: BTreeMap<String, Scalar>,
    /// Settings sent with every statement, those the server does not know left out (logged).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, Scalar>,
    /// Database to run in instead of the connection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Server-side time limit of each statement (humantime, default `5m`).
    #[serde(default = "default_max_execution_time", with = "humantime_serde")]
    pub max_execution_time: Duration,
    /// How long to wait for the server to answer the first request (humantime, default `10s`).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How many rows of the last result become the `rows` output (default 100).
    #[serde(default = "default_max_output_rows")]
    pub max_output_rows: usize,
}

impl ClickHouseSql {
    /// Problems a DAG author can fix, found when the DAG loads (`dag_dir` resolves `file`).
    pub fn problems(&self, dag_dir: &Path) -> Vec<ConfigProblem> {
        let mut problems = common_problems(
            "sql",
            self.sql.as_deref(),
            &self.bind,
            self.database.as_deref(),
            self.max_execution_time,
        );
        match (&self.sql, &self.file) {
            (None, None) => problems.push(ConfigProblem::task(
                "a clickhouse.sql task needs `sql` (statements) or `file` (a .sql file)",
            )),
            (Some(_), Some(_)) => problems.push(ConfigProblem::field(
                "file",
                "give either `sql` or `file`, not both",
            )),
            (None, Some(file)) if !file.contains("{{") => {
                let path = dag_dir.join(file);
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        for mut p in super::sql_problems("file", &text, &self.bind) {
                            p.message = format!("{} ({})", p.message, path.display());
                            problems.push(p);
                        }
                    }
                    Err(e) => problems.push(ConfigProblem::field(
                        "file",
                        format!("cannot read `file` {}: {e}", path.display()),
                    )),
                }
            }
            _ => {}
        }
        problems
    }

    /// The SQL text and a name for it in messages.
    fn source(&self, ctx: &TaskContext) -> Result<(String, String), OperatorError> {
        match (&self.sql, &self.file) {
            (Some(sql), None) => Ok((sql.clone(), "sql".to_owned())),
            (None, Some(file)) => {
                let path = ctx.resolve_path(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    OperatorError::failed(format!("cannot read {}: {e}", path.display()))
                })?;
                Ok((text, path.display().to_string()))
            }
            _ => Err(OperatorError::failed(
                "a clickhouse.sql task needs exactly one of `sql` and `file`",
            )),
        }
    }
}

/// The first line of a statement, shortened, for the log.
pub(crate) fn summary(sql: &str) -> String {
    let first = sql
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut s: String = first.chars().take(100).collect();
    if s.len() < first.len() || sql.trim().lines().count() > 1 {
        s.push_str(" ...");
    }
    s
}

/// Logs the first rows of a result as tab-separated lines.
pub(crate) fn log_rows(ctx: &TaskContext, rows: &Rows, limit: usize) {
    let header: Vec<&str> = rows.columns.iter().map(|c| c.name.as_str()).collect();
    ctx.log(header.join("\t"));
    for row in rows.data.iter().take(limit) {
        let cells: Vec<String> = row
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        ctx.log(cells.join("\t"));
    }
    if rows.data.len() > limit {
        ctx.log(format!("... {} more row(s)", rows.data.len() - limit));
    }
}

impl Operator for ClickHouseSql {
    fn validate(&self, ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        self.problems(ctx.dag_dir)
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        let (text, origin) = self.source(ctx)?;
        let bound = bind::bind(&text, &self.bind)
            .map_err(|e| OperatorError::failed(format!("{origin}: {e}")))?;
        let statements =
            split::split(&bound).map_err(|e| OperatorError::failed(format!("{origin}: {e}")))?;
        if statements.is_empty() {
            return Err(OperatorError::failed(format!(
                "{origin} holds no statement"
            )));
        }
        let config = &ctx.connections().clickhouse;
        let session = Session::open(
            config,
            self.database.as_deref(),
            self.connect_timeout,
            ctx.cancel_token(),
        )
        .await
        .map_err(|e| super::operator_error("connecting", e))?;
        ctx.log(format!(
            "Connected to ClickHouse {} at {} (database {})",
            session.version(),
            config.url,
            self.database.as_deref().unwrap_or(&config.database)
        ));
        let (settings, skipped) = session.settings(&self.settings, self.max_execution_time);
        if !skipped.is_empty() {
            ctx.log(format!(
                "Not sending setting(s) {} : ClickHouse {} does not know them",
                skipped.join(", "),
                session.version()
            ));
        }
        let total = statements.len();
        let mut last: Option<Rows> = None;
        for (i, statement) in statements.iter().enumerate() {
            ctx.log(format!(
                "Statement {}/{total} ({origin} line {}): {}",
                i + 1,
                statement.line,
                summary(&statement.text)
            ));
            let started = std::time::Instant::now();
            let rows = session
                .fetch(
                    &statement.text,
                    &settings,
                    self.max_execution_time,
                    ctx.cancel_token(),
                )
                .await
                .map_err(|e| {
                    super::operator_error(
                        format_args!(
                            "statement {}/{total} ({origin} line {}) failed",
                            i + 1,
                            statement.line
                        ),
                        e,
                    )
                })?;
            let elapsed = started.elapsed();
            match &rows {
                Some(r) => ctx.log(format!(
                    "  {} row(s) in {:.3}s",
                    r.data.len(),
                    elapsed.as_secs_f64()
                )),
                None => ctx.log(format!("  done in {:.3}s", elapsed.as_secs_f64())),
            }
            if rows.is_some() {
                last = rows;
            }
            ctx.set_progress((i + 1) as u64, Some(total as u64), Some("statements"));
        }
        ctx.set_output("statements", total);
        if let Some(rows) = last {
            log_rows(ctx, &rows, 20);
            ctx.set_output("row_count", rows.data.len());
            ctx.set_output(
                "columns",
                rows.columns
                    .iter()
                    .map(|c| Value::from(c.name.clone()))
                    .collect::<Vec<_>>(),
            );
            ctx.set_output("rows", rows.objects(self.max_output_rows));
            if let Some(value) = rows.scalar() {
                ctx.set_output("value", value.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> ClickHouseSql {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn fields_parse_and_are_checked() {
        let ok = spec("sql = \"SELECT count() FROM {t:Identifier}\"\nbind = { t = \"trips\" }");
        assert!(ok.problems(Path::new(".")).is_empty());
        assert_eq!(ok.max_execution_time, Duration::from_secs(300));

        let missing = spec("sql = \"SELECT {n:UInt64} FROM {t:Identifier}\"\nbind = { n = 1 }");
        let problems = missing.problems(Path::new("."));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("add `t`"), "{problems:?}");

        let neither = spec("database = \"bad-name\"\nmax_execution_time = \"0s\"");
        let problems = neither.problems(Path::new("."));
        assert_eq!(problems.len(), 3, "{problems:?}");

        let both = spec("sql = \"SELECT 1\"\nfile = \"x.sql\"");
        assert_eq!(
            both.problems(Path::new("."))[0].field.as_deref(),
            Some("file")
        );

        let unreadable = spec("file = \"does/not/exist.sql\"");
        let problems = unreadable.problems(Path::new("/nonexistent"));
        assert!(problems[0].message.contains("cannot read"), "{problems:?}");

        let unterminated = spec("sql = \"SELECT 'oops\"");
        assert!(
            unterminated.problems(Path::new("."))[0]
                .message
                .contains("never closed")
        );

        assert!(toml::from_str::<ClickHouseSql>("sql = \"SELECT 1\"\nquery = \"x\"").is_err());
    }

    #[test]
    fn summaries_are_one_short_line() {
        assert_eq!(summary("\n  SELECT 1"), "SELECT 1");
        assert_eq!(summary("CREATE TABLE t\n(x UInt8)"), "CREATE TABLE t ...");
    }
}
