//! `{{ ... }}` templates in task fields. An expression is a dotted path or a quoted string:
//!
//! | expression | value |
//! |---|---|
//! | `params.<name>` | a DAG param (default or override) |
//! | `run_id`, `dag.id`, `task.id`, `try_number` | who is running |
//! | `logical_date`, `ts` | the logical date, RFC 3339 |
//! | `ds`, `ds_nodash` | the logical date as `2024-01-31` / `20240131` |
//! | `data_interval_start`, `data_interval_end` | the run's data interval, RFC 3339 |
//! | `prev_ds`, `next_ds` | the previous and next slot as `2024-01-31` (`ds` without a schedule) |
//! | `format(...)`, `add_days(...)`, `yyyymm(...)`... | typed date helpers, see [`super::dates`] |
//! | `dag_dir` | the DAG file's directory |
//! | `conn.kafka.brokers`, `conn.clickhouse.{url,user,password,database}` | the connections |
//! | `tasks.<id>.output.<key>` | an output of an upstream task (like Airflow's XCom) |
//! | `replica` | in a `process.spawn` task, the number of the program started (0 to `replicas - 1`) |
//! | `"text"` | the text itself (`{{ "{{" }}` writes a literal `{{`) |
//!
//! Templates are parsed and their names checked when the DAG loads ([`TemplatedValue`] keeps a
//! task's parsed templates); they are rendered just before a try runs. `replica` is the one
//! exception: rendering leaves it as [`REPLICA`], which process.spawn fills in for each program it
//! starts ([`fill_replica`]), so a param's value may hold it too.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::operators::Connections;

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Expr { expr: Expr, offset: usize },
}

/// One `{{ ... }}` expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// `a.b.c`.
    Path(Vec<String>),
    /// `"text"`.
    Literal(String),
    /// A date helper call, e.g. `format(data_interval_start, "%Y-%m")`, with its text.
    Call(super::dates::Node, String),
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => f.write_str(&p.join(".")),
            Self::Literal(s) => write!(f, "{s:?}"),
            Self::Call(_, text) => f.write_str(text),
        }
    }
}

/// A template that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// Byte offset in the template text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// A template that cannot be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("template {{{{ {expr} }}}}: {message}")]
pub struct RenderError {
    /// The expression.
    pub expr: String,
    /// What is wrong.
    pub message: String,
}

/// Whether `s` contains template syntax at all (the fast path skips rendering otherwise).
pub fn has_template(s: &str) -> bool {
    s.contains("{{")
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut base = 0;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let inner_start = start + 2;
            let (expr, len) =
                parse_expr(&rest[inner_start..]).map_err(|(off, message)| ParseError {
                    offset: base + inner_start + off,
                    message,
                })?;
            parts.push(Part::Expr {
                expr,
                offset: base + start,
            });
            let consumed = inner_start + len;
            base += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The expressions with their byte offsets.
    pub fn exprs(&self) -> impl Iterator<Item = (&Expr, usize)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr { expr, offset } => Some((expr, *offset)),
            Part::Text(_) => None,
        })
    }

    /// Renders with `scope`.
    pub fn render(&self, scope: &Scope<'_>) -> Result<String, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr { expr, .. } => match scope.eval(expr)? {
                    Value::String(s) => out.push_str(&s),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(out)
    }
}

/// Parses the inside of `{{ ... }}` up to and including `}}`; returns the expression and the
/// number of bytes consumed.
fn parse_expr(s: &str) -> Result<(Expr, usize), (usize, String)> {
    let trimmed = s.trim_start();
    let lead = s.len() - trimmed.len();
    if let Some(body) = trimmed.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        loop {
            match chars.next() {
                None => return Err((lead, "unterminated string literal".into())),
                Some((_, '\\')) => match chars.next() {
                    Some((_, c)) => value.push(c),
                    None => return Err((lead, "unterminated string literal".into())),
                },
                Some((i, '"')) => {
                    let after = lead + 1 + i + 1;
                    let tail = &s[after..];
                    let t = tail.trim_start();
                    return match t.strip_prefix("}}") {
                        Some(_) => Ok((Expr::Literal(value), after + (tail.len() - t.len()) + 2)),
                        None => Err((after, "expected `}}` after the string".into())),
                    };
                }
                Some((_, c)) => value.push(c),
            }
        }
    }
    let Some(end) = s.find("}}") else {
        return Err((0, "`{{` without a closing `}}`".into()));
    };
    let body = s[..end].trim();
    if body.is_empty() {
        return Err((0, "empty `{{ }}`".into()));
    }
    if body.contains('(') {
        let node = super::dates::parse(body).map_err(|(off, m)| (lead + off, m))?;
        return Ok((Expr::Call(node, body.to_owned()), end + 2));
    }
    let mut path = Vec::new();
    for seg in body.split('.') {
        if seg.is_empty()
            || !seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err((
                lead,
                format!(
                    "`{body}` is not a dotted name like `params.x` or `tasks.load.output.rows` (filters and expressions are not supported)"
                ),
            ));
        }
        path.push(seg.to_owned());
    }
    Ok((Expr::Path(path), end + 2))
}

/// Where a template's names are checked at load time.
pub struct CheckScope<'a> {
    /// Param names.
    pub params: &'a serde_json::Map<String, Value>,
    /// Every task id.
    pub task_exists: &'a dyn Fn(&str) -> bool,
    /// Whether a task is upstream (an ancestor) of the task being checked.
    pub is_upstream: &'a dyn Fn(&str) -> bool,
    /// Whether the task starts replicas of a program (process.spawn), where `replica` has a value.
    pub replicas: bool,
}

/// What `{{ replica }}` renders to before process.spawn fills it in for each program it starts.
pub const REPLICA: &str = "{{ replica }}";

/// `text` with every [`REPLICA`] replaced by the replica's number.
pub fn fill_replica(text: &str, replica: u32) -> String {
    text.replace(REPLICA, &replica.to_string())
}

/// How a run variable is rendered.
type Render = fn(&Scope<'_>) -> Value;

/// The variables that are values of the run, each with how it is rendered. Checking, rendering
/// and the list in error messages all read this one table.
const VARIABLES: &[(&str, Render)] = &[
    ("run_id", |s| s.run_id.into()),
    ("dag.id", |s| s.dag_id.into()),
    ("task.id", |s| s.task_id.into()),
    ("try_number", |s| s.try_number.into()),
    ("logical_date", |s| rfc3339(s.logical_date)),
    ("ts", |s| rfc3339(s.logical_date)),
    ("ds", |s| {
        s.logical_date.format("%Y-%m-%d").to_string().into()
    }),
    ("ds_nodash", |s| {
        s.logical_date.format("%Y%m%d").to_string().into()
    }),
    ("data_interval_start", |s| {
        rfc3339(s.dates().data_interval.0)
    }),
    ("data_interval_end", |s| rfc3339(s.dates().data_interval.1)),
    ("prev_ds", |s| {
        s.dates()
            .data_interval
            .0
            .format("%Y-%m-%d")
            .to_string()
            .into()
    }),
    ("next_ds", |s| {
        let end = s.dates().data_interval.1;
        let next = s
            .schedule
            .and_then(|sch| sch.next_after(end))
            .unwrap_or(s.logical_date);
        next.format("%Y-%m-%d").to_string().into()
    }),
    ("dag_dir", |s| s.dag_dir.display().to_string().into()),
    ("conn.kafka.brokers", |s| {
        s.connections.kafka.brokers.as_str().into()
    }),
    ("conn.clickhouse.url", |s| {
        s.connections.clickhouse.url.as_str().into()
    }),
    ("conn.clickhouse.user", |s| {
        s.connections.clickhouse.user.as_str().into()
    }),
    ("conn.clickhouse.password", |s| {
        s.connections.clickhouse.password.as_str().into()
    }),
    ("conn.clickhouse.database", |s| {
        s.connections.clickhouse.database.as_str().into()
    }),
    // Known only when process.spawn starts each program: left for it to fill in.
    ("replica", |_| REPLICA.into()),
];

/// Every form a template may use, for error messages.
fn known() -> String {
    let mut forms = vec!["params.<name>", "tasks.<upstream id>.output.<key>"];
    forms.extend(VARIABLES.iter().map(|(name, _)| *name));
    forms.push("format(...)/add_days(...)/add_months(...)/yyyymm(...) and the other date helpers");
    forms.join(", ")
}

/// The renderer of a run variable, when `path` names one.
fn variable(path: &[&str]) -> Option<Render> {
    VARIABLES
        .iter()
        .find(|(name, _)| name.split('.').eq(path.iter().copied()))
        .map(|(_, render)| *render)
}

fn rfc3339(t: DateTime<Utc>) -> Value {
    t.to_rfc3339_opts(SecondsFormat::Secs, true).into()
}

/// A template expression that names something that will not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// `params.<name>` of an undeclared param.
    #[error(
        "unknown param `{name}` in `{{{{ {expr} }}}}`; declare it under [dag.params] (known: {known})"
    )]
    UnknownParam {
        /// The expression.
        expr: String,
        /// The param.
        name: String,
        /// The declared params, or `none`.
        known: String,
    },
    /// `tasks.<id>...` of a task that is not in the DAG.
    #[error("`{{{{ {expr} }}}}` names task `{id}`, which does not exist")]
    NoSuchTask {
        /// The expression.
        expr: String,
        /// The task.
        id: String,
    },
    /// `tasks.<id>...` of a task that is not upstream.
    #[error(
        "`{{{{ {expr} }}}}` reads an output of `{id}`, which is not upstream of this task; add it to depends_on"
    )]
    NotUpstream {
        /// The expression.
        expr: String,
        /// The task.
        id: String,
    },
    /// `tasks...` without `.<id>.output.<key>`.
    #[error("`{{{{ {0} }}}}` should look like `tasks.<id>.output.<key>`")]
    BadTaskPath(String),
    /// A date helper called wrongly.
    #[error("`{{{{ {expr} }}}}`: {message}")]
    Helper {
        /// The expression.
        expr: String,
        /// What is wrong.
        message: String,
    },
    /// `replica` outside a task that starts replicas.
    #[error(
        "`{{{{ {0} }}}}` has a value only in a process.spawn task (the number of each program it starts)"
    )]
    NotReplicated(String),
    /// Anything else.
    #[error("unknown template variable `{0}`; known: {known}", known = known())]
    UnknownVariable(String),
}

/// Checks that an expression names something that will exist.
pub fn check(expr: &Expr, scope: &CheckScope<'_>) -> Result<(), CheckError> {
    let path = match expr {
        Expr::Path(path) => path,
        Expr::Call(node, _) => {
            return super::dates::check(node)
                .map(|_| ())
                .map_err(|message| CheckError::Helper {
                    expr: expr.to_string(),
                    message,
                });
        }
        Expr::Literal(_) => return Ok(()),
    };
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["params", name, ..] => {
            if scope.params.contains_key(*name) {
                Ok(())
            } else {
                let known: Vec<&str> = scope.params.keys().map(String::as_str).collect();
                Err(CheckError::UnknownParam {
                    expr: expr.to_string(),
                    name: (*name).to_owned(),
                    known: if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    },
                })
            }
        }
        ["tasks", id, "output", _, ..] => {
            if !(scope.task_exists)(id) {
                Err(CheckError::NoSuchTask {
                    expr: expr.to_string(),
                    id: (*id).to_owned(),
                })
            } else if !(scope.is_upstream)(id) {
                Err(CheckError::NotUpstream {
                    expr: expr.to_string(),
                    id: (*id).to_owned(),
                })
            } else {
                Ok(())
            }
        }
        ["tasks", ..] => Err(CheckError::BadTaskPath(expr.to_string())),
        ["replica"] if !scope.replicas => Err(CheckError::NotReplicated(expr.to_string())),
        p if variable(p).is_some() => Ok(()),
        _ => Err(CheckError::UnknownVariable(expr.to_string())),
    }
}

/// Values templates render from.
#[derive(Debug)]
pub struct Scope<'a> {
    /// Effective params.
    pub params: &'a serde_json::Map<String, Value>,
    /// The run.
    pub run_id: &'a str,
    /// The DAG.
    pub dag_id: &'a str,
    /// The task.
    pub task_id: &'a str,
    /// The try.
    pub try_number: u32,
    /// The logical date.
    pub logical_date: DateTime<Utc>,
    /// The DAG's schedule (it gives the data interval and the previous and next slots).
    pub schedule: Option<&'a crate::dag::Schedule>,
    /// The DAG's time zone (date helpers work in it).
    pub timezone: chrono_tz::Tz,
    /// The DAG file's directory.
    pub dag_dir: &'a Path,
    /// The connections.
    pub connections: &'a Connections,
    /// Outputs of finished tasks.
    pub outputs: &'a HashMap<String, serde_json::Map<String, Value>>,
}

impl Scope<'_> {
    /// The run's dates for the helpers.
    fn dates(&self) -> super::dates::Dates {
        super::dates::Dates {
            logical_date: self.logical_date,
            data_interval: self
                .schedule
                .map_or((self.logical_date, self.logical_date), |s| {
                    s.data_interval(self.logical_date)
                }),
            timezone: self.timezone,
        }
    }

    fn eval(&self, expr: &Expr) -> Result<Value, RenderError> {
        let path = match expr {
            Expr::Literal(s) => return Ok(Value::String(s.clone())),
            Expr::Call(node, text) => {
                return super::dates::eval(node, &self.dates()).map_err(|message| RenderError {
                    expr: text.clone(),
                    message,
                });
            }
            Expr::Path(p) => p,
        };
        let err = |message: String| RenderError {
            expr: expr.to_string(),
            message,
        };
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["params", name, rest @ ..] => {
                let v = self
                    .params
                    .get(*name)
                    .ok_or_else(|| err(format!("no param `{name}`")))?;
                dig(v, rest)
                    .ok_or_else(|| err(format!("param `{name}` has no `{}`", rest.join("."))))
            }
            ["tasks", id, "output", key, rest @ ..] => {
                let outputs = self.outputs.get(*id).ok_or_else(|| {
                    err(format!(
                        "task `{id}` has no outputs (it did not succeed in this run)"
                    ))
                })?;
                let v = outputs.get(*key).ok_or_else(|| {
                    let known: Vec<&str> = outputs.keys().map(String::as_str).collect();
                    err(format!(
                        "task `{id}` did not set output `{key}` (it set: {})",
                        if known.is_empty() {
                            "nothing".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ))
                })?;
                dig(v, rest)
                    .ok_or_else(|| err(format!("output `{key}` has no `{}`", rest.join("."))))
            }
            p => variable(p)
                .map(|render| render(self))
                .ok_or_else(|| err("unknown template variable".into())),
        }
    }
}

fn dig(v: &Value, rest: &[&str]) -> Option<Value> {
    let mut v = v;
    for k in rest {
        v = match v {
            Value::Object(m) => m.get(*k)?,
            Value::Array(a) => a.get(k.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v.clone())
}

/// A step from a value to one inside it.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A value (a task's fields as JSON) whose template strings were parsed once, when the DAG
/// loaded; each try renders them without parsing again.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplatedValue {
    value: Value,
    /// Where each template string is, and the template.
    templates: Vec<(Vec<Step>, Template)>,
}

impl TemplatedValue {
    /// Parses every template string inside `value`; `None` when it holds none.
    pub fn parse(value: Value) -> Result<Option<Self>, ParseError> {
        let mut templates = Vec::new();
        collect(&value, &mut Vec::new(), &mut templates)?;
        Ok((!templates.is_empty()).then_some(Self { value, templates }))
    }

    /// The value with every template rendered with `scope`.
    pub fn render(&self, scope: &Scope<'_>) -> Result<Value, RenderError> {
        let mut out = self.value.clone();
        for (path, template) in &self.templates {
            let mut v = &mut out;
            for step in path {
                v = match (step, v) {
                    (Step::Key(k), Value::Object(m)) => m.get_mut(k),
                    (Step::Index(i), Value::Array(a)) => a.get_mut(*i),
                    _ => None,
                }
                .expect("a template's path was taken from this value");
            }
            *v = Value::String(template.render(scope)?);
        }
        Ok(out)
    }
}

fn collect(
    v: &Value,
    path: &mut Vec<Step>,
    out: &mut Vec<(Vec<Step>, Template)>,
) -> Result<(), ParseError> {
    match v {
        Value::String(s) if has_template(s) => out.push((path.clone(), Template::parse(s)?)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                collect(item, path, out)?;
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                path.push(Step::Key(k.clone()));
                collect(item, path, out)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope_with<'a>(
        params: &'a serde_json::Map<String, Value>,
        outputs: &'a HashMap<String, serde_json::Map<String, Value>>,
        conns: &'a Connections,
    ) -> Scope<'a> {
        Scope {
            params,
            run_id: "manual__x",
            dag_id: "d",
            task_id: "t",
            try_number: 2,
            logical_date: DateTime::parse_from_rfc3339("2024-01-31T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            schedule: None,
            timezone: chrono_tz::UTC,
            dag_dir: Path::new("/dags"),
            connections: conns,
            outputs,
        }
    }

    #[test]
    fn renders_params_dates_literals_and_upstream_outputs() {
        let params = json!({"topic": "taxi", "n": 5})
            .as_object()
            .unwrap()
            .clone();
        let mut outputs = HashMap::new();
        outputs.insert(
            "produce".to_owned(),
            json!({"rows": 100000, "meta": {"a": [1, 2]}})
                .as_object()
                .unwrap()
                .clone(),
        );
        let conns = Connections::default();
        let scope = scope_with(&params, &outputs, &conns);
        let t = Template::parse(
            "{{params.topic}}-{{ params.n }} {{ ds }} {{ ds_nodash }} {{ tasks.produce.output.rows }} {{ tasks.produce.output.meta.a.1 }} {{ \"{{\" }} {{ try_number }} {{ dag.id }}/{{ run_id }}",
        )
        .unwrap();
        assert_eq!(
            t.render(&scope).unwrap(),
            "taxi-5 2024-01-31 20240131 100000 2 {{ 2 d/manual__x"
        );
        let err = Template::parse("{{ tasks.produce.output.nope }}")
            .unwrap()
            .render(&scope)
            .unwrap_err();
        assert!(
            err.to_string().contains("did not set output `nope`"),
            "{err}"
        );
    }

    #[test]
    fn a_templated_value_renders_each_template_where_it_stands() {
        let params = json!({"topic": "taxi"}).as_object().unwrap().clone();
        let (outputs, conns) = (HashMap::new(), Connections::default());
        let scope = scope_with(&params, &outputs, &conns);
        let fields =
            json!({"topic": "{{ params.topic }}", "args": ["-n", "{{ try_number }}"], "n": 3});
        let t = TemplatedValue::parse(fields).unwrap().unwrap();
        assert_eq!(
            t.render(&scope).unwrap(),
            json!({"topic": "taxi", "args": ["-n", "2"], "n": 3})
        );
        assert!(
            TemplatedValue::parse(json!({"plain": 1}))
                .unwrap()
                .is_none()
        );
        assert!(TemplatedValue::parse(json!("{{ oops")).is_err());
    }

    #[test]
    fn parse_errors_point_into_the_text() {
        let e = Template::parse("abc {{ params.x").unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(Template::parse("{{ a + b }}").is_err());
        assert!(Template::parse("{{ }}").is_err());
        assert!(Template::parse("{{ \"open }}").is_err());
        assert_eq!(Template::parse("plain").unwrap().exprs().count(), 0);
    }

    #[test]
    fn check_names_params_and_upstream_tasks() {
        let params = json!({"topic": "taxi"}).as_object().unwrap().clone();
        let scope = CheckScope {
            params: &params,
            task_exists: &|t| t == "a" || t == "b",
            is_upstream: &|t| t == "a",
            replicas: false,
        };
        let c = |s: &str| {
            let t = Template::parse(s).unwrap();
            let (e, _) = t.exprs().next().unwrap();
            check(e, &scope)
        };
        assert!(c("{{ params.topic }}").is_ok());
        assert!(
            c("{{ params.nope }}")
                .unwrap_err()
                .to_string()
                .contains("unknown param `nope`")
        );
        assert!(c("{{ tasks.a.output.rows }}").is_ok());
        assert!(
            c("{{ tasks.b.output.rows }}")
                .unwrap_err()
                .to_string()
                .contains("not upstream")
        );
        assert!(
            c("{{ tasks.z.output.rows }}")
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        assert!(
            c("{{ whatever }}")
                .unwrap_err()
                .to_string()
                .contains("unknown template variable")
        );
        assert!(c("{{ conn.clickhouse.url }}").is_ok());
        assert!(
            c("{{ replica }}")
                .unwrap_err()
                .to_string()
                .contains("only in a process.spawn task")
        );
    }

    #[test]
    fn replica_is_left_for_process_spawn_to_fill_in() {
        let params = json!({"http": "127.0.0.1:946{{ replica }}"})
            .as_object()
            .unwrap()
            .clone();
        let (outputs, conns) = (HashMap::new(), Connections::default());
        let scope = scope_with(&params, &outputs, &conns);
        let t = TemplatedValue::parse(json!(["--id", "c-{{replica}}", "{{ params.http }}"]))
            .unwrap()
            .unwrap();
        let rendered = t.render(&scope).unwrap();
        assert_eq!(
            rendered,
            json!(["--id", "c-{{ replica }}", "127.0.0.1:946{{ replica }}"])
        );
        assert_eq!(fill_replica(rendered[1].as_str().unwrap(), 2), "c-2");
        assert_eq!(
            fill_replica(rendered[2].as_str().unwrap(), 2),
            "127.0.0.1:9462"
        );
    }
}
