//! The `::velostream::` stdout line protocol between task programs and the orchestrator, written
//! and read through one type: a program prints [`Message`]s with [`Message::emit`], the
//! orchestrator reads each line with [`parse_line`]. Every line without the prefix is log.
//!
//! ```text
//! ::velostream:: {"output": {"rows": 100000, "rows_per_sec": 512345.2}}
//! ::velostream:: {"progress": {"done": 50000, "total": 100000, "unit": "rows"}}
//! ::velostream:: {"point": {"series": "rows_per_sec", "unit": "rows/s", "value": 812000}}
//! ```
//!
//! A line may also carry several keys at once (`{"output": ..., "progress": ...}`), which programs
//! in other languages find convenient; [`parse_line`] returns each as its own message.

use std::io::Write;

use serde::{Deserialize, Serialize};

/// The prefix of a protocol line.
pub const PREFIX: &str = "::velostream::";

/// Outputs of a task: readable downstream as `{{ tasks.<id>.output.<key> }}`.
pub type Outputs = serde_json::Map<String, serde_json::Value>;

/// Progress of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Units done.
    pub done: u64,
    /// Units in total, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// What is counted (`rows`, `bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A point of a time series the orchestrator charts on the run page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The series' name (`rows_per_sec`).
    pub series: String,
    /// Its unit (`rows/s`).
    pub unit: String,
    /// The value.
    pub value: i64,
    /// When, in Unix milliseconds; the time the line is read when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
}

/// One protocol message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Outputs to merge into the task's (later keys win).
    Output(Outputs),
    /// Progress, for the progress bar of the CLI and the UI.
    Progress(Progress),
    /// A point of a time series.
    Point(Point),
}

impl Message {
    /// The line for this message, prefix included, without a newline.
    pub fn to_line(&self) -> String {
        // A message of plain maps, strings and numbers always serialises.
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{PREFIX} {json}")
    }

    /// Prints the line on stdout and flushes it, so the orchestrator sees it at once.
    pub fn emit(&self) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.to_line());
        let _ = out.flush();
    }
}

/// What one line of a task program's output means.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    /// Plain log text.
    Log,
    /// Protocol messages, in the order `output`, `progress`, `point`.
    Messages(Vec<Message>),
    /// A line with the prefix whose JSON could not be read: the reason, for a warning in the log.
    Malformed(String),
}

/// The wire form: any of the keys, each optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    output: Option<Outputs>,
    #[serde(default)]
    progress: Option<Progress>,
    #[serde(default)]
    point: Option<Point>,
}

/// Classifies a line (without its newline).
pub fn parse_line(line: &str) -> Line {
    let Some(rest) = line.trim_start().strip_prefix(PREFIX) else {
        return Line::Log;
    };
    match serde_json::from_str::<Wire>(rest.trim()) {
        Ok(w) => {
            let messages: Vec<Message> = [
                w.output.map(Message::Output),
                w.progress.map(Message::Progress),
                w.point.map(Message::Point),
            ]
            .into_iter()
            .flatten()
            .collect();
            if messages.is_empty() {
                Line::Malformed("no `output`, `progress` or `point` key".into())
            } else {
                Line::Messages(messages)
            }
        }
        Err(e) => Line::Malformed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_message_round_trips_through_its_line() {
        let messages = [
            Message::Output(
                json!({"rows": 100000, "rate": 5.5})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            Message::Progress(Progress {
                done: 5,
                total: Some(10),
                unit: Some("rows".into()),
            }),
            Message::Progress(Progress {
                done: 5,
                total: None,
                unit: None,
            }),
            Message::Point(Point {
                series: "rows_per_sec".into(),
                unit: "rows/s".into(),
                value: 812_000,
                at_ms: Some(1_700_000_000_000),
            }),
        ];
        for m in messages {
            let line = m.to_line();
            assert_eq!(parse_line(&line), Line::Messages(vec![m]), "{line}");
        }
    }

    #[test]
    fn log_lines_combined_lines_and_malformed_lines_are_told_apart() {
        assert_eq!(parse_line("hello"), Line::Log);
        let Line::Messages(m) =
            parse_line(r#"::velostream:: {"output": {"rows": 3}, "progress": {"done": 3}}"#)
        else {
            panic!("not a message")
        };
        assert_eq!(m.len(), 2);
        assert!(matches!(
            parse_line("::velostream:: {oops"),
            Line::Malformed(_)
        ));
        assert!(matches!(
            parse_line(r#"::velostream:: {"outputs": {}}"#),
            Line::Malformed(_)
        ));
        assert!(matches!(
            parse_line("::velostream:: {}"),
            Line::Malformed(_)
        ));
    }
}
