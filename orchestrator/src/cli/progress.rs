//! Live progress of `orchestrator run`: a line per task state change, a progress bar per task that
//! reports progress, and an overall bar of finished tasks (bars only on a terminal).

use std::collections::HashMap;
use std::time::Duration;

use chrono::Local;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::dag::Dag;
use crate::events::RunEvent;
use crate::store::TaskState;

/// The terminal display of one run.
pub struct Display {
    mp: MultiProgress,
    overall: ProgressBar,
    bars: HashMap<String, ProgressBar>,
    id_width: usize,
    done: u64,
}

impl Display {
    /// A display for `dag`; `bars` false (or stderr not a terminal) prints lines only.
    pub fn new(dag: &Dag, bars: bool) -> Self {
        let target = if bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let mp = MultiProgress::with_draw_target(target);
        let overall = mp.add(ProgressBar::new(dag.tasks.len() as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} tasks finished {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        overall.enable_steady_tick(Duration::from_millis(200));
        Self {
            mp,
            overall,
            bars: HashMap::new(),
            id_width: dag.tasks.iter().map(|t| t.id.len()).max().unwrap_or(4),
            done: 0,
        }
    }

    /// Shows events until the run finishes.
    pub async fn show(mut self, mut rx: UnboundedReceiver<RunEvent>) {
        while let Some(event) = rx.recv().await {
            if self.handle(event) {
                break;
            }
        }
        self.overall.finish_and_clear();
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
    }

    fn println(&self, line: String) {
        self.mp.suspend(|| println!("{line}"));
    }

    /// Returns true when the run finished.
    fn handle(&mut self, event: RunEvent) -> bool {
        match event {
            RunEvent::TaskState {
                task_id,
                state,
                try_number,
                at,
                message,
            } => {
                let mut line = format!(
                    "{}  {:w$}  {}",
                    at.with_timezone(&Local).format("%H:%M:%S%.3f"),
                    task_id,
                    state,
                    w = self.id_width
                );
                if try_number > 0 && matches!(state, TaskState::Running) {
                    line.push_str(&format!(" (try {try_number})"));
                }
                if let Some(m) = message {
                    line.push_str(&format!(": {m}"));
                }
                self.println(line);
                if state.is_finished() {
                    self.done += 1;
                    self.overall.set_position(self.done);
                    if let Some(bar) = self.bars.remove(&task_id) {
                        bar.finish_and_clear();
                    }
                }
                false
            }
            RunEvent::Progress {
                task_id,
                done,
                total,
                unit,
            } => {
                let bar = self.bars.entry(task_id.clone()).or_insert_with(|| {
                    let bar = self
                        .mp
                        .insert_before(&self.overall, ProgressBar::new(total.unwrap_or(0)));
                    let template = if total.is_some() {
                        "  {prefix} [{bar:30}] {human_pos}/{human_len} {msg} ({per_sec}, eta {eta})"
                    } else {
                        "  {prefix} {spinner} {human_pos} {msg} ({per_sec})"
                    };
                    bar.set_style(
                        ProgressStyle::with_template(template)
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(task_id.clone());
                    bar
                });
                if let Some(t) = total {
                    bar.set_length(t);
                }
                bar.set_position(done);
                if let Some(u) = unit {
                    bar.set_message(u);
                }
                false
            }
            // Series are charted by the web UI; the terminal shows progress bars.
            RunEvent::Point { .. } => false,
            RunEvent::RunFinished { .. } => true,
        }
    }
}
