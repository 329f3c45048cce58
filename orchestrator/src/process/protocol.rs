//! The stdout line protocol of task programs: `::velostream:: {"output": {...}}` and
//! `::velostream:: {"progress": {"done": n, "total": m, "unit": "rows"}}`; every other line is log.

use serde::Deserialize;

/// The prefix of a protocol line.
pub const PREFIX: &str = "::velostream::";

/// Progress reported by a task.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Progress {
    /// Units done.
    pub done: u64,
    /// Units in total, when known.
    #[serde(default)]
    pub total: Option<u64>,
    /// What is counted.
    #[serde(default)]
    pub unit: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    output: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    progress: Option<Progress>,
}

/// What one line of a task program's output means.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    /// Plain log text.
    Log,
    /// A protocol message: outputs to merge and/or progress.
    Message {
        /// Outputs (later keys win).
        output: serde_json::Map<String, serde_json::Value>,
        /// Progress.
        progress: Option<Progress>,
    },
    /// A line with the prefix whose JSON we could not read (logged with a warning).
    Malformed(String),
}

/// Classifies a line (without its newline).
pub fn parse_line(line: &str) -> Line {
    let Some(rest) = line.trim_start().strip_prefix(PREFIX) else {
        return Line::Log;
    };
    match serde_json::from_str::<Message>(rest.trim()) {
        Ok(m) => Line::Message {
            output: m.output.unwrap_or_default(),
            progress: m.progress,
        },
        Err(e) => Line::Malformed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outputs_progress_and_log_lines_are_told_apart() {
        assert_eq!(parse_line("hello"), Line::Log);
        let Line::Message { output, progress } =
            parse_line(r#"::velostream:: {"output": {"rows": 100000, "rate": 5.5}}"#)
        else {
            panic!("not a message")
        };
        assert_eq!(output["rows"], json!(100000));
        assert_eq!(progress, None);
        let Line::Message { progress, .. } =
            parse_line(r#"::velostream:: {"progress": {"done": 5, "total": 10, "unit": "rows"}}"#)
        else {
            panic!("not a message")
        };
        assert_eq!(
            progress,
            Some(Progress {
                done: 5,
                total: Some(10),
                unit: Some("rows".into())
            })
        );
        assert!(matches!(
            parse_line("::velostream:: {oops"),
            Line::Malformed(_)
        ));
    }
}
