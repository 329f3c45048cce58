//! The metric names a PromQL expression selects, so a dashboard check can tell a query that names
//! a metric we do not export. A small scanner, not a parser: it skips strings, label matchers,
//! range and subquery brackets, Grafana variables, numbers and durations, then keeps every
//! identifier that is not a function call, an aggregation, a keyword or a label name of a
//! `by (...)`/`without (...)`/`on (...)`/`ignoring (...)`/`group_left (...)`/`group_right (...)`
//! clause.

/// Aggregation operators: `sum by (le) (...)` has no `(` right after `sum`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords whose parenthesised list that follows holds label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords and binary operators spelled as words.
const KEYWORDS: &[&str] = &[
    "bool", "and", "or", "unless", "offset", "atan2", "inf", "nan",
];

/// Problems that make a PromQL expression unreadable to the scanner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromqlError {
    /// A string, `{`, `[` or `(` is never closed.
    #[error("unbalanced {what} starting at byte {at} of `{expr}`: close it")]
    Unbalanced {
        /// What is open.
        what: &'static str,
        /// Where it opened.
        at: usize,
        /// The expression.
        expr: String,
    },
}

/// The metric names `expr` selects, in order of appearance, each once.
pub fn metric_names(expr: &str) -> Result<Vec<String>, PromqlError> {
    let bytes = expr.as_bytes();
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_string(expr, i)?,
            b'{' => i = skip_group(expr, i, b'{', b'}', "label matcher `{`")?,
            b'[' => i = skip_group(expr, i, b'[', b']', "range `[`")?,
            b'$' => {
                // Grafana variables: $name, ${name}, $__rate_interval.
                i += 1;
                if bytes.get(i) == Some(&b'{') {
                    i = skip_group(expr, i, b'{', b'}', "variable `${`")?;
                } else {
                    while i < bytes.len() && is_ident_char(bytes[i]) {
                        i += 1;
                    }
                }
            }
            b'0'..=b'9' | b'.' => {
                // Numbers, durations (5m), exponents (1e3), hex.
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < bytes.len() && is_ident_char(bytes[i]) {
                    i += 1;
                }
                let ident = &expr[start..i];
                let next = next_non_space(bytes, i);
                let lower = ident.to_ascii_lowercase();
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    if let Some(open) = next.filter(|&j| bytes[j] == b'(') {
                        i = skip_group(expr, open, b'(', b')', "label list `(`")?;
                    }
                } else if next.is_some_and(|j| bytes[j] == b'(')
                    || AGGREGATIONS.contains(&lower.as_str())
                    || KEYWORDS.contains(&lower.as_str())
                {
                    // A function call, an aggregation or a keyword.
                } else if !names.iter().any(|n| n == ident) {
                    names.push(ident.to_string());
                }
            }
            _ => i += 1,
        }
    }
    Ok(names)
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn next_non_space(bytes: &[u8], mut i: usize) -> Option<usize> {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    (i < bytes.len()).then_some(i)
}

/// Index just past the string that starts at `start` (backslash escapes in `"` and `'` strings).
fn skip_string(expr: &str, start: usize) -> Result<usize, PromqlError> {
    let bytes = expr.as_bytes();
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote != b'`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(PromqlError::Unbalanced {
        what: "string",
        at: start,
        expr: expr.to_string(),
    })
}

/// Index just past the `close` matching the `open` at `start`, skipping strings inside.
fn skip_group(
    expr: &str,
    start: usize,
    open: u8,
    close: u8,
    what: &'static str,
) -> Result<usize, PromqlError> {
    let bytes = expr.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(expr, i)?;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(PromqlError::Unbalanced {
        what,
        at: start,
        expr: expr.to_string(),
    })
}

/// The metric names of a Grafana variable query: `label_values(metric, label)` names `metric`,
/// `label_values(label)` and `label_names()` name none, `query_result(expr)` names `expr`'s;
/// anything else is read as PromQL.
pub fn variable_metric_names(query: &str) -> Result<Vec<String>, PromqlError> {
    let q = query.trim();
    let inner = |prefix: &str| {
        q.strip_prefix(prefix)
            .and_then(|rest| rest.trim_start().strip_prefix('('))
            .and_then(|rest| rest.trim_end().strip_suffix(')'))
    };
    if let Some(args) = inner("label_values") {
        // The selector is everything before the last top-level comma; a lone argument is a label.
        return match last_top_level_comma(args) {
            Some(comma) => metric_names(&args[..comma]),
            None => Ok(Vec::new()),
        };
    }
    if inner("label_names").is_some() {
        return Ok(Vec::new());
    }
    if let Some(expr) = inner("query_result") {
        return metric_names(expr);
    }
    metric_names(q)
}

fn last_top_level_comma(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut in_string = None;
    let mut last = None;
    for (i, c) in s.char_indices() {
        match (in_string, c) {
            (Some(q), c) if c == q => in_string = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => in_string = Some(c),
            (None, '(' | '{' | '[') => depth += 1,
            (None, ')' | '}' | ']') => depth -= 1,
            (None, ',') if depth == 0 => last = Some(i),
            _ => {}
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).unwrap()
    }

    #[test]
    fn plain_selectors_and_matchers() {
        assert_eq!(
            names("velostream_consumer_fetch_paused"),
            ["velostream_consumer_fetch_paused"]
        );
        assert_eq!(
            names(r#"velostream_orchestrator_runs{dag=~"$dag", state="running"}"#),
            ["velostream_orchestrator_runs"]
        );
    }

    #[test]
    fn functions_aggregations_and_label_lists_are_not_metrics() {
        let expr = "histogram_quantile(0.95, sum by (le, job) (rate(velostream_consumer_insert_duration_seconds_bucket[$__rate_interval])))";
        assert_eq!(
            names(expr),
            ["velostream_consumer_insert_duration_seconds_bucket"]
        );
        let expr = "sum without(instance) (velostream_a) / on (job) group_left(dag) velostream_b";
        assert_eq!(names(expr), ["velostream_a", "velostream_b"]);
        assert_eq!(
            names("sum(rate(x_total[5m] offset 1h)) * 60 > bool 2"),
            ["x_total"]
        );
        assert_eq!(
            names("max_over_time(velostream_x[1m:10s])"),
            ["velostream_x"]
        );
    }

    #[test]
    fn strings_and_variables_hide_their_words() {
        let expr =
            r#"label_replace(up{job="velostream consumer"}, "dst", "$1 x", "src", "(.*) rows")"#;
        assert_eq!(names(expr), ["up"]);
        assert_eq!(names("velostream_x[${window}]"), ["velostream_x"]);
    }

    #[test]
    fn each_name_once_in_order() {
        assert_eq!(names("b / a + b"), ["b", "a"]);
    }

    #[test]
    fn unbalanced_input_is_an_error_not_a_guess() {
        assert!(matches!(
            metric_names(r#"velostream_x{a="b}"#),
            Err(PromqlError::Unbalanced { .. })
        ));
        assert!(matches!(
            metric_names("sum(rate(x[5m)"),
            Err(PromqlError::Unbalanced { .. })
        ));
        assert!(matches!(
            metric_names("sum by (le (x)"),
            Err(PromqlError::Unbalanced { .. })
        ));
    }

    #[test]
    fn grafana_variable_queries() {
        assert_eq!(
            variable_metric_names("label_values(velostream_orchestrator_runs, dag)").unwrap(),
            ["velostream_orchestrator_runs"]
        );
        assert_eq!(
            variable_metric_names(r#"label_values(velostream_x{a="1,2"}, dag)"#).unwrap(),
            ["velostream_x"]
        );
        assert!(
            variable_metric_names("label_values(dag)")
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            variable_metric_names("query_result(topk(3, velostream_y))").unwrap(),
            ["velostream_y"]
        );
    }
}
