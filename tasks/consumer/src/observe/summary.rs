//! The final summary line on stdout, in the `::velostream::` protocol of ARCHITECTURE.md, which
//! the orchestrator turns into the task's outputs.

use std::time::Duration;

use serde::Serialize;
use velostream_common::protocol::Message;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Messages read from Kafka.
    pub rows_consumed: u64,
    /// Rows ClickHouse acknowledged.
    pub rows_inserted: u64,
    /// Bad records delivered to the dead-letter topic.
    pub rows_dead_lettered: u64,
    /// Batches inserted.
    pub batches: u64,
    /// Seconds from the first message read to the last batch acknowledged.
    pub active_secs: f64,
    /// `rows_inserted / active_secs`: the ingestion rate while there was work.
    pub rows_per_sec: f64,
    /// Seconds the process ran.
    pub uptime_secs: f64,
    /// CPU seconds (user + system, every thread) the process spent: with `rows_inserted`, what a
    /// row costs.
    pub cpu_secs: f64,
}

impl Summary {
    /// Fills in the rates from the counts and durations.
    pub fn with_times(mut self, active: Duration, uptime: Duration) -> Self {
        self.active_secs = round3(active.as_secs_f64());
        self.uptime_secs = round3(uptime.as_secs_f64());
        self.cpu_secs = round3(velostream_common::process::own_cpu_seconds());
        self.rows_per_sec = if active.is_zero() {
            0.0
        } else {
            (self.rows_inserted as f64 / active.as_secs_f64()).round()
        };
        self
    }

    /// `::velostream:: {"output": {...}}`.
    pub fn line(&self) -> String {
        let outputs = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        Message::Output(outputs).to_line()
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use velostream_common::protocol::{Line, parse_line};

    #[test]
    fn the_line_follows_the_protocol() {
        let s = Summary {
            rows_consumed: 10,
            rows_inserted: 8,
            rows_dead_lettered: 2,
            batches: 1,
            ..Summary::default()
        }
        .with_times(Duration::from_secs(2), Duration::from_secs(5));
        let Line::Messages(messages) = parse_line(&s.line()) else {
            panic!("not a protocol line: {}", s.line())
        };
        let [Message::Output(output)] = messages.as_slice() else {
            panic!("not one output: {messages:?}")
        };
        assert_eq!(output["rows_inserted"], 8);
        assert_eq!(output["rows_dead_lettered"], 2);
        assert_eq!(output["rows_per_sec"], 4.0);
        assert!(output["cpu_secs"].as_f64().is_some_and(|s| s >= 0.0));
    }
}
