//! Telling the orchestrator and people how a run goes: `::velostream::` lines on stdout (the
//! contract in ARCHITECTURE.md: `progress` every second, `output` at the end), or an indicatif
//! bar on a terminal, and a rows/s log line now and then.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use velostream_common::protocol::{self, Message};

use crate::pipeline::Summary;
use crate::stats::Stats;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stdout is a terminal, `::velostream::` progress lines otherwise.
    Auto,
    /// `::velostream::` progress lines on stdout.
    Lines,
    /// An indicatif bar on stderr.
    Bar,
    /// Nothing but the final output line (and logs).
    None,
}

impl ProgressMode {
    pub(crate) fn resolve(self) -> Self {
        match self {
            Self::Auto if std::io::stdout().is_terminal() => Self::Bar,
            Self::Auto => Self::Lines,
            other => other,
        }
    }
}

/// Prints outputs as one `::velostream:: {"output": ...}` line on stdout.
pub fn emit_output(outputs: Value) {
    if let Value::Object(map) = outputs {
        Message::Output(map).emit();
    }
}

/// The outputs of a run, for its final `output` line.
pub fn output_value(summary: &Summary, topic: &str) -> Value {
    json!({
        "rows": summary.delivered,
        "rows_per_sec": (summary.rows_per_sec() * 10.0).round() / 10.0,
        "bytes": summary.bytes,
        "failed": summary.failed,
        "planned": summary.planned,
        "files": summary.files,
        "seconds": (summary.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        // CPU seconds (user + system, every thread) of the whole process: with `rows`, what a row
        // costs.
        "cpu_secs": (velostream_common::process::own_cpu_seconds() * 1000.0).round() / 1000.0,
        "topic": topic,
    })
}

/// A thread showing progress until [`Progress::finish`].
#[derive(Debug)]
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts reporting `stats` against `total` rows.
    pub fn start(mode: ProgressMode, stats: Stats, total: u64) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let mode = mode.resolve();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || report(mode, &stats, total, &flag))
            .ok();
        Self { done, thread }
    }

    /// Stops reporting, after a last update.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

fn report(mode: ProgressMode, stats: &Stats, total: u64, done: &AtomicBool) {
    let bar = (mode == ProgressMode::Bar).then(|| {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows {per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let tick = if bar.is_some() {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    };
    let start = Instant::now();
    let mut last_line = Instant::now();
    let mut last_rows = 0u64;
    let mut last_log = (Instant::now(), 0u64);
    loop {
        let finished = done.load(Ordering::Relaxed);
        let delivered = stats.delivered.get();
        if let Some(bar) = &bar {
            bar.set_position(delivered);
        } else if mode == ProgressMode::Lines && (last_line.elapsed() >= tick || finished) {
            Message::Progress(protocol::Progress {
                done: delivered,
                total: Some(total),
                unit: Some("rows".into()),
            })
            .emit();
            // Rows per second since the last line: the run page charts it beside the lag.
            let secs = last_line.elapsed().as_secs_f64();
            if secs > 0.0 && !finished {
                Message::Point(protocol::Point {
                    series: "rows_per_sec".into(),
                    unit: "rows/s".into(),
                    value: ((delivered - last_rows) as f64 / secs).round() as i64,
                    at_ms: None,
                })
                .emit();
            }
            last_rows = delivered;
            last_line = Instant::now();
        }
        if bar.is_none() && last_log.0.elapsed() >= Duration::from_secs(10) {
            let rate = (delivered - last_log.1) as f64 / last_log.0.elapsed().as_secs_f64();
            tracing::info!(
                delivered,
                total,
                failed = stats.failed.get(),
                rows_per_sec = rate.round(),
                elapsed_s = start.elapsed().as_secs(),
                "Progress"
            );
            last_log = (Instant::now(), delivered);
        }
        if finished {
            break;
        }
        // Sleep in short steps so that finishing is prompt.
        let until = Instant::now() + tick;
        while Instant::now() < until && !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
}
