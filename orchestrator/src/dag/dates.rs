//! Typed date helpers of templates, so an incremental load needs no shell:
//! `{{ format(data_interval_start, "%Y-%m-%d %H:%M:%S") }}`, `{{ yyyymm(add_months(logical_date, -1)) }}`.
//! A call is parsed and its names, arities and argument types are checked when the DAG loads;
//! it is evaluated when a try renders its fields.
//!
//! | helper | gives |
//! |---|---|
//! | `format(DATE, "strftime")` | text, in the DAG's time zone (`%z` adds the offset) |
//! | `date(DATE)` | `2026-03-01`, in the DAG's zone |
//! | `add_days(DATE, N)`, `add_months(DATE, N)` | a date N calendar days or months later (N may be negative; same wall-clock time in the DAG's zone; the 31st plus a month is the month's last day) |
//! | `add_hours(DATE, N)` | a date N hours later |
//! | `yyyymm(DATE)`, `yyyymmdd(DATE)` | the number `202603` / `20260301` (ClickHouse's `toYYYYMM`), in the DAG's zone |
//! | `unix(DATE)` | seconds since 1970 (for `toDateTime(...)`) |
//!
//! DATE is `logical_date`, `data_interval_start`, `data_interval_end` or a helper giving a date; N
//! is a whole number; a date rendered by itself is RFC 3339 in UTC.

use chrono::{DateTime, Months, SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::Value;

/// A helper call or one of its arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A date variable.
    Var(String),
    /// A whole number.
    Int(i64),
    /// A string literal.
    Str(String),
    /// `name(args)`.
    Call(String, Vec<Node>),
}

/// What a node evaluates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// An instant.
    Date,
    /// A whole number.
    Int,
    /// Text.
    Str,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Self::Date => "a date",
            Self::Int => "a whole number",
            Self::Str => "a string",
        }
    }
}

/// The date variables.
pub const DATE_VARS: &[&str] = &["logical_date", "data_interval_start", "data_interval_end"];

/// Name, argument types, result.
const HELPERS: &[(&str, &[Type], Type)] = &[
    ("format", &[Type::Date, Type::Str], Type::Str),
    ("date", &[Type::Date], Type::Str),
    ("add_days", &[Type::Date, Type::Int], Type::Date),
    ("add_months", &[Type::Date, Type::Int], Type::Date),
    ("add_hours", &[Type::Date, Type::Int], Type::Date),
    ("yyyymm", &[Type::Date], Type::Int),
    ("yyyymmdd", &[Type::Date], Type::Int),
    ("unix", &[Type::Date], Type::Int),
];

fn helper_names() -> String {
    HELPERS
        .iter()
        .map(|(n, _, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a helper call (the inside of `{{ }}`); errors carry a byte offset into `text`.
pub fn parse(text: &str) -> Result<Node, (usize, String)> {
    let mut p = Parser { text, pos: 0 };
    let node = p.node()?;
    p.skip_ws();
    if p.pos != text.len() {
        return Err((
            p.pos,
            format!("unexpected {:?} after the call", &text[p.pos..]),
        ));
    }
    Ok(node)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn node(&mut self) -> Result<Node, (usize, String)> {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        let start = self.pos;
        if let Some(body) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = body.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => break,
                    },
                    '"' => {
                        self.pos += 1 + i + 1;
                        return Ok(Node::Str(value));
                    }
                    c => value.push(c),
                }
            }
            return Err((start, "unterminated string literal".into()));
        }
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        let word = &rest[..len];
        if word.is_empty() {
            return Err((
                start,
                "expected a date variable, a number, a \"string\" or a helper call".into(),
            ));
        }
        self.pos += len;
        if let Ok(n) = word.parse::<i64>() {
            return Ok(Node::Int(n));
        }
        self.skip_ws();
        if !self.text[self.pos..].starts_with('(') {
            return Ok(Node::Var(word.to_owned()));
        }
        self.pos += 1;
        let mut args = Vec::new();
        loop {
            self.skip_ws();
            if self.text[self.pos..].starts_with(')') && args.is_empty() {
                self.pos += 1;
                break;
            }
            args.push(self.node()?);
            self.skip_ws();
            match self.text[self.pos..].chars().next() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    break;
                }
                _ => {
                    return Err((
                        self.pos,
                        format!("expected `,` or `)` in the arguments of {word}(...)"),
                    ));
                }
            }
        }
        Ok(Node::Call(word.to_owned(), args))
    }
}

/// Checks names, arities, argument types and formats; returns the result type.
pub fn check(node: &Node) -> Result<Type, String> {
    match node {
        Node::Int(_) => Ok(Type::Int),
        Node::Str(_) => Ok(Type::Str),
        Node::Var(v) if DATE_VARS.contains(&v.as_str()) => Ok(Type::Date),
        Node::Var(v) => Err(format!(
            "`{v}` is not a date; helpers take {}",
            DATE_VARS.join(", ")
        )),
        Node::Call(name, args) => {
            let Some((_, want, out)) = HELPERS.iter().find(|(n, _, _)| n == name) else {
                return Err(format!(
                    "unknown helper `{name}(...)`; known: {}",
                    helper_names()
                ));
            };
            if args.len() != want.len() {
                return Err(format!(
                    "{name}(...) takes {} argument(s) ({}), not {}",
                    want.len(),
                    want.iter().map(|t| t.name()).collect::<Vec<_>>().join(", "),
                    args.len()
                ));
            }
            for (i, (arg, want)) in args.iter().zip(want.iter()).enumerate() {
                let got = check(arg)?;
                if got != *want {
                    return Err(format!(
                        "argument {} of {name}(...) must be {}, not {}",
                        i + 1,
                        want.name(),
                        got.name()
                    ));
                }
            }
            if let (Some(Node::Str(fmt)), "format") = (args.get(1), name.as_str()) {
                let bad = chrono::format::StrftimeItems::new(fmt)
                    .any(|item| matches!(item, chrono::format::Item::Error));
                if bad {
                    return Err(format!(
                        "format(...): {fmt:?} is not a valid strftime format (e.g. \"%Y-%m-%d %H:%M:%S\")"
                    ));
                }
            }
            Ok(*out)
        }
    }
}

/// The dates a run's helpers see.
#[derive(Clone, Copy, Debug)]
pub struct Dates {
    /// The logical date.
    pub logical_date: DateTime<Utc>,
    /// The data interval.
    pub data_interval: (DateTime<Utc>, DateTime<Utc>),
    /// The DAG's time zone.
    pub timezone: Tz,
}

enum Val {
    Date(DateTime<Utc>),
    Int(i64),
    Str(String),
}

/// Evaluates a checked call.
pub fn eval(node: &Node, dates: &Dates) -> Result<Value, String> {
    Ok(match eval_val(node, dates)? {
        Val::Date(d) => Value::String(d.to_rfc3339_opts(SecondsFormat::Secs, true)),
        Val::Int(n) => Value::from(n),
        Val::Str(s) => Value::String(s),
    })
}

fn eval_val(node: &Node, dates: &Dates) -> Result<Val, String> {
    let tz = dates.timezone;
    let date = |n: &Node| match eval_val(n, dates)? {
        Val::Date(d) => Ok(d),
        _ => Err("expected a date".to_owned()),
    };
    let int = |n: &Node| match eval_val(n, dates)? {
        Val::Int(i) => Ok(i),
        _ => Err("expected a whole number".to_owned()),
    };
    // Calendar arithmetic on the wall clock of the DAG's zone, mapped back as schedule slots are.
    let shift =
        |d: DateTime<Utc>, f: &dyn Fn(chrono::NaiveDateTime) -> Option<chrono::NaiveDateTime>| {
            f(d.with_timezone(&tz).naive_local())
                .map(|w| super::timezone::slot_instant(tz, w))
                .ok_or_else(|| "the date is out of range".to_owned())
        };
    Ok(match node {
        Node::Int(n) => Val::Int(*n),
        Node::Str(s) => Val::Str(s.clone()),
        Node::Var(v) => Val::Date(match v.as_str() {
            "logical_date" => dates.logical_date,
            "data_interval_start" => dates.data_interval.0,
            "data_interval_end" => dates.data_interval.1,
            other => return Err(format!("`{other}` is not a date")),
        }),
        Node::Call(name, args) => match (name.as_str(), args.as_slice()) {
            ("format", [d, f]) => {
                let Val::Str(f) = eval_val(f, dates)? else {
                    return Err("expected a format".into());
                };
                Val::Str(date(d)?.with_timezone(&tz).format(&f).to_string())
            }
            ("date", [d]) => Val::Str(date(d)?.with_timezone(&tz).format("%Y-%m-%d").to_string()),
            ("add_days", [d, n]) => {
                let n = int(n)?;
                Val::Date(shift(date(d)?, &|w| {
                    w.checked_add_signed(TimeDelta::try_days(n)?)
                })?)
            }
            ("add_months", [d, n]) => {
                let n = int(n)?;
                let months = Months::new(u32::try_from(n.unsigned_abs()).unwrap_or(u32::MAX));
                Val::Date(shift(date(d)?, &|w| {
                    if n >= 0 {
                        w.checked_add_months(months)
                    } else {
                        w.checked_sub_months(months)
                    }
                })?)
            }
            ("add_hours", [d, n]) => Val::Date(
                TimeDelta::try_hours(int(n)?)
                    .and_then(|h| date(d).ok()?.checked_add_signed(h))
                    .ok_or("the date is out of range")?,
            ),
            ("yyyymm", [d]) => Val::Int(
                date(d)?
                    .with_timezone(&tz)
                    .format("%Y%m")
                    .to_string()
                    .parse()
                    .unwrap_or_default(),
            ),
            ("yyyymmdd", [d]) => Val::Int(
                date(d)?
                    .with_timezone(&tz)
                    .format("%Y%m%d")
                    .to_string()
                    .parse()
                    .unwrap_or_default(),
            ),
            ("unix", [d]) => Val::Int(date(d)?.timestamp()),
            _ => return Err(format!("unknown helper `{name}(...)`")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn run(text: &str, tz: Tz) -> Value {
        let node = parse(text).unwrap();
        check(&node).unwrap();
        let dates = Dates {
            logical_date: utc("2026-03-31T22:00:00Z"),
            data_interval: (utc("2026-02-28T23:00:00Z"), utc("2026-03-31T22:00:00Z")),
            timezone: tz,
        };
        eval(&node, &dates).unwrap()
    }

    #[test]
    fn helpers_work_in_the_dags_zone() {
        let paris = chrono_tz::Europe::Paris;
        // Midnight, 1 March in Paris is 23:00 UTC the day before.
        assert_eq!(run("date(data_interval_start)", paris), "2026-03-01");
        assert_eq!(
            run("date(data_interval_start)", chrono_tz::UTC),
            "2026-02-28"
        );
        assert_eq!(run("yyyymm(data_interval_start)", paris), 202603);
        assert_eq!(run("yyyymmdd(data_interval_end)", paris), 20260401);
        assert_eq!(
            run(
                "format(data_interval_start, \"%Y-%m-%d %H:%M:%S %z\")",
                paris
            ),
            "2026-03-01 00:00:00 +0100"
        );
        // Calendar arithmetic keeps the wall-clock time across the change to summer time.
        assert_eq!(
            run("add_days(data_interval_start, 29)", paris),
            "2026-03-29T22:00:00Z"
        );
        assert_eq!(
            run("yyyymm(add_months(data_interval_start, -1))", paris),
            202602
        );
        assert_eq!(
            run("add_months(logical_date, 1)", paris),
            "2026-04-30T22:00:00Z",
            "1 April plus a month is 1 May, midnight in Paris"
        );
        assert_eq!(
            run("add_hours(data_interval_end, -2)", paris),
            "2026-03-31T20:00:00Z"
        );
        assert_eq!(run("unix(data_interval_end)", paris), 1_774_994_400);
        assert_eq!(run("data_interval_end", paris), "2026-03-31T22:00:00Z");
    }

    #[test]
    fn names_arities_types_and_formats_are_checked() {
        let c = |t: &str| check(&parse(t).unwrap()).unwrap_err();
        assert!(c("fromat(ds, \"%Y\")").contains("unknown helper `fromat"));
        assert!(c("format(data_interval_start)").contains("takes 2 argument(s)"));
        assert!(c("add_days(data_interval_start, \"1\")").contains("must be a whole number"));
        assert!(c("yyyymm(ds)").contains("`ds` is not a date"));
        assert!(c("format(logical_date, \"%Q\")").contains("not a valid strftime"));
        assert!(parse("add_days(logical_date 1)").is_err());
        assert!(parse("date(logical_date) x").is_err());
        assert!(parse("format(logical_date, \"%Y)").is_err());
    }
}
