//! Safe substitution of values into SQL: `{name:Type}` placeholders (ClickHouse's own query
//! parameter syntax) are replaced, client side so it works on 18.16 too, by a task's `bind`
//! values, quoted for their type. `{table:Identifier}` becomes `` `trips` `` only if the value is
//! a plain name (`^[A-Za-z_][A-Za-z0-9_]*$`, or `db.table` of two such names), so a templated table
//! name can never smuggle SQL in; `{day:String}` becomes a quoted, escaped literal; numbers must
//! parse as their type. Placeholders inside string literals, quoted identifiers and comments are
//! left alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Scalar;
use super::split::{LexError, Token, tokens};

/// Why a placeholder could not be filled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The SQL cannot be read.
    #[error(transparent)]
    Lex(#[from] LexError),
    /// A placeholder names a value `bind` does not have.
    #[error("line {line}: {{{name}:{ty}}} has no value; add `{name}` to the task's `bind` table")]
    Missing {
        /// Line of the placeholder.
        line: usize,
        /// The name.
        name: String,
        /// The type.
        ty: String,
    },
    /// The value does not fit the type.
    #[error("line {line}: {{{name}:{ty}}} cannot take {value:?}: {why}")]
    Invalid {
        /// Line of the placeholder.
        line: usize,
        /// The name.
        name: String,
        /// The type.
        ty: String,
        /// The value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// An unsupported placeholder type.
    #[error(
        "line {line}: {{{name}:{ty}}} has an unsupported type; use Identifier, String, Int8..Int64, UInt8..UInt64, Float32 or Float64"
    )]
    UnknownType {
        /// Line of the placeholder.
        line: usize,
        /// The name.
        name: String,
        /// The type.
        ty: String,
    },
}

/// A placeholder found in SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placeholder {
    /// The name.
    pub name: String,
    /// The type as written.
    pub ty: String,
    /// The 1-based line.
    pub line: usize,
}

/// Finds the `{name:Type}` placeholders of `sql` (outside quotes and comments).
pub fn placeholders(sql: &str) -> Result<Vec<Placeholder>, LexError> {
    let mut found = Vec::new();
    for (token, range) in tokens(sql)? {
        if token != Token::Code {
            continue;
        }
        let code = &sql[range.clone()];
        let mut from = 0;
        while let Some(open) = code[from..].find('{') {
            let at = from + open;
            match parse_placeholder(&code[at..]) {
                Some((name, ty, len)) => {
                    found.push(Placeholder {
                        name: name.to_owned(),
                        ty: ty.to_owned(),
                        line: sql[..range.start + at].matches('\n').count() + 1,
                    });
                    from = at + len;
                }
                None => from = at + 1,
            }
        }
    }
    Ok(found)
}

/// `{name:Type}` at the start of `s`: the name, the type and the length consumed.
fn parse_placeholder(s: &str) -> Option<(&str, &str, usize)> {
    let close = s.find('}')?;
    let inner = &s[1..close];
    let (name, ty) = inner.split_once(':')?;
    let (name, ty) = (name.trim(), ty.trim());
    (is_name(name) && !ty.is_empty() && ty.chars().all(|c| c.is_ascii_alphanumeric())).then_some((
        name,
        ty,
        close + 1,
    ))
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`.
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replaces every placeholder of `sql` with its quoted `values` entry.
pub fn bind(sql: &str, values: &BTreeMap<String, Scalar>) -> Result<String, BindError> {
    let mut out = String::with_capacity(sql.len());
    for (token, range) in tokens(sql)? {
        let text = &sql[range.clone()];
        if token != Token::Code {
            out.push_str(text);
            continue;
        }
        let mut from = 0;
        while let Some(open) = text[from..].find('{') {
            let at = from + open;
            out.push_str(&text[from..at]);
            match parse_placeholder(&text[at..]) {
                Some((name, ty, len)) => {
                    let line = sql[..range.start + at].matches('\n').count() + 1;
                    let value = values.get(name).ok_or_else(|| BindError::Missing {
                        line,
                        name: name.into(),
                        ty: ty.into(),
                    })?;
                    out.push_str(&render(name, ty, value, line)?);
                    from = at + len;
                }
                None => {
                    out.push('{');
                    from = at + 1;
                }
            }
        }
        out.push_str(&text[from..]);
    }
    Ok(out)
}

/// Checks a placeholder's type without a value (load time).
pub fn known_type(ty: &str) -> bool {
    matches!(
        ty,
        "Identifier"
            | "String"
            | "Int8"
            | "Int16"
            | "Int32"
            | "Int64"
            | "UInt8"
            | "UInt16"
            | "UInt32"
            | "UInt64"
            | "Float32"
            | "Float64"
    )
}

fn render(name: &str, ty: &str, value: &Scalar, line: usize) -> Result<String, BindError> {
    let text = value.to_string();
    let invalid = |why: String| BindError::Invalid {
        line,
        name: name.into(),
        ty: ty.into(),
        value: text.clone(),
        why,
    };
    match ty {
        "Identifier" => {
            let parts: Vec<&str> = text.split('.').collect();
            if parts.len() > 2 || !parts.iter().all(|p| is_name(p)) {
                return Err(invalid(
                    "an identifier is a name of letters, digits and '_' not starting with a digit (or db.name)"
                        .into(),
                ));
            }
            Ok(parts
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join("."))
        }
        "String" => Ok(quote_string(&text)),
        "Int8" | "Int16" | "Int32" | "Int64" | "UInt8" | "UInt16" | "UInt32" | "UInt64" => {
            let n: i128 = text
                .trim()
                .parse()
                .map_err(|_| invalid("not an integer".into()))?;
            let (lo, hi): (i128, i128) = match ty {
                "Int8" => (i8::MIN.into(), i8::MAX.into()),
                "Int16" => (i16::MIN.into(), i16::MAX.into()),
                "Int32" => (i32::MIN.into(), i32::MAX.into()),
                "Int64" => (i64::MIN.into(), i64::MAX.into()),
                "UInt8" => (0, u8::MAX.into()),
                "UInt16" => (0, u16::MAX.into()),
                "UInt32" => (0, u32::MAX.into()),
                _ => (0, u64::MAX.into()),
            };
            if n < lo || n > hi {
                return Err(invalid(format!("out of range {lo}..={hi}")));
            }
            Ok(n.to_string())
        }
        "Float32" | "Float64" => {
            let x: f64 = text
                .trim()
                .parse()
                .map_err(|_| invalid("not a number".into()))?;
            if !x.is_finite() {
                return Err(invalid("not a finite number".into()));
            }
            Ok(format!("{x:?}"))
        }
        _ => Err(BindError::UnknownType {
            line,
            name: name.into(),
            ty: ty.into(),
        }),
    }
}

/// A ClickHouse string literal: single quotes, with `\` and `'` escaped.
pub fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, Scalar)]) -> BTreeMap<String, Scalar> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn binds_identifiers_strings_and_numbers() {
        let v = values(&[
            ("table", Scalar::Text("trips".into())),
            ("qualified", Scalar::Text("analytics.trips".into())),
            ("day", Scalar::Text("2023-01-01' OR 1=1 --".into())),
            ("rows", Scalar::Text("100000".into())),
            ("ratio", Scalar::Float(0.5)),
        ]);
        let sql = "SELECT count() FROM {table:Identifier} JOIN {qualified:Identifier} \
                   WHERE day = {day:String} AND n = {rows:UInt64} AND r < { ratio : Float64 } \
                   AND s = '{table:Identifier}' -- {table:Identifier}";
        assert_eq!(
            bind(sql, &v).unwrap(),
            "SELECT count() FROM `trips` JOIN `analytics`.`trips` \
             WHERE day = '2023-01-01\\' OR 1=1 --' AND n = 100000 AND r < 0.5 \
             AND s = '{table:Identifier}' -- {table:Identifier}"
        );
    }

    #[test]
    fn rejects_identifiers_that_are_not_plain_names() {
        for bad in [
            "trips; DROP TABLE x",
            "`trips`",
            "1abc",
            "",
            "a.b.c",
            "tr ips",
        ] {
            let v = values(&[("t", Scalar::Text(bad.into()))]);
            let err = bind("SELECT * FROM {t:Identifier}", &v).unwrap_err();
            assert!(matches!(err, BindError::Invalid { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn missing_values_types_and_ranges_are_errors_with_lines() {
        let err = bind("SELECT 1\nFROM {t:Identifier}", &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: {t:Identifier} has no value; add `t` to the task's `bind` table"
        );
        let v = values(&[("n", Scalar::Integer(-1))]);
        assert!(bind("SELECT {n:UInt8}", &v).is_err());
        assert!(bind("SELECT {n:Date}", &v).is_err());
        assert_eq!(bind("SELECT {n:Int8}", &v).unwrap(), "SELECT -1");
    }

    #[test]
    fn leaves_other_braces_alone_and_lists_placeholders() {
        let sql = "SELECT {not a placeholder}, {x:UInt8}, '{y:String}'";
        let found = placeholders(sql).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].name.as_str(), found[0].ty.as_str()),
            ("x", "UInt8")
        );
        let v = values(&[("x", Scalar::Integer(7))]);
        assert_eq!(
            bind(sql, &v).unwrap(),
            "SELECT {not a placeholder}, 7, '{y:String}'"
        );
    }

    #[test]
    fn quotes_strings_with_every_special_character_escaped() {
        assert_eq!(quote_string("a'b\\c\nd"), "'a\\'b\\\\c\\nd'");
    }
}
