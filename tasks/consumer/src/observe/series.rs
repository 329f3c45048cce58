//! Time series for the orchestrator's run page: every `interval` the consumer prints
//! `::velostream:: {"point": ...}` lines with its lag (messages in its partitions not yet in
//! ClickHouse) and the rows per second ClickHouse acknowledged since the last point, so the run
//! page shows the backlog build up while the producer runs and drain to 0.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use velostream_common::protocol::{Message, Point};

use super::Metrics;

/// Reports the series until `stop` fires, then once more (the lag the consumer leaves behind);
/// nothing when `interval` is zero or stdout is a terminal (a person reads the logs and
/// `/metrics` instead).
pub async fn report(metrics: Arc<Metrics>, interval: Duration, stop: CancellationToken) {
    if interval.is_zero() || std::io::stdout().is_terminal() {
        return;
    }
    let mut last = (Instant::now(), metrics.rows_inserted.get());
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let rows = metrics.rows_inserted.get();
        let secs = last.0.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            ((rows - last.1) as f64 / secs).round() as i64
        } else {
            0
        };
        last = (Instant::now(), rows);
        for point in points(metrics.lag.get(), rate) {
            // A negative lag means unknown (the broker cannot be read): no point, a gap.
            if point.series == "lag" && point.value < 0 {
                continue;
            }
            Message::Point(point).emit();
        }
        if stopping {
            return;
        }
    }
}

/// The points of one report.
fn points(lag: i64, rows_per_sec: i64) -> [Point; 2] {
    [
        Point {
            series: "lag".into(),
            unit: "messages".into(),
            value: lag,
            at_ms: None,
        },
        Point {
            series: "rows_per_sec".into(),
            unit: "rows/s".into(),
            value: rows_per_sec,
            at_ms: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use velostream_common::protocol::{Line, parse_line};

    #[test]
    fn each_report_is_a_lag_and_a_rate_point() {
        let lines: Vec<String> = points(1200, 500)
            .into_iter()
            .map(|p| Message::Point(p).to_line())
            .collect();
        let Line::Messages(m) = parse_line(&lines[0]) else {
            panic!("{lines:?}")
        };
        assert!(matches!(&m[0], Message::Point(p) if p.series == "lag" && p.value == 1200));
        assert!(lines[1].contains("\"rows_per_sec\""));
    }
}
