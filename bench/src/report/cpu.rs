//! The report's CPU-per-row section (each process's CPU seconds per million rows in the DAG run
//! and each program alone, and where each program's CPU goes) and the goals the pipeline is held
//! to, each against its baseline from the same run.

use std::fmt::Write as _;

use super::{REFERENCE_ROWS, Report, duration, estimate_for, percent, thousands, times};
use crate::cpu::CpuRun;

/// The data moving in the DAG at or below doing the same work in sequence: at most this ratio.
const SEQUENTIAL_GOAL: f64 = 1.0;
/// The consumer alone against the raw insert ceiling: at least this share.
const CONSUMER_GOAL: f64 = 0.8;
/// The 44M-row estimate: under this many seconds (the stretch: [`REFERENCE_STRETCH`]).
const REFERENCE_GOAL: f64 = 90.0;
const REFERENCE_STRETCH: f64 = 60.0;

impl Report {
    /// CPU seconds per million rows of each process, in the DAG run and alone; then the profiles.
    pub(super) fn write_cpu(&self, md: &mut String) {
        let dag = self.pipeline.as_ref().and_then(|p| p.cpu);
        let dag_protobuf = self.protobuf_pipeline.as_ref().and_then(|p| p.cpu);
        let cpu = self.cpu.as_ref();
        if dag.is_none() && cpu.is_none() {
            return;
        }
        let columns: Vec<(&str, CpuRun)> = [
            ("benchmark DAG", dag),
            ("benchmark DAG, protobuf records", dag_protobuf),
            ("producer alone", cpu.map(|c| c.producer_alone)),
            ("consumer alone", cpu.map(|c| c.consumer_alone)),
        ]
        .into_iter()
        .filter_map(|(name, run)| Some((name, run?)))
        .collect();
        let _ = writeln!(md, "## CPU per row\n");
        let _ = writeln!(
            md,
            "CPU seconds (user + system, every thread) per million rows, each process: the producer's \
             and the consumer's from their own summaries (`cpu_secs`), the broker's and ClickHouse's \
             from `/proc` over the same window. In the DAG run the four processes share the machine's \
             {} cores; alone, a program runs with only the servers it needs. Load average at the \
             end of the benchmark: {:.2} {:.2} {:.2}.\n",
            self.machine.cores, self.load_at_end[0], self.load_at_end[1], self.load_at_end[2]
        );
        let _ = write!(md, "| CPU-s per million rows |");
        for (name, run) in &columns {
            let _ = write!(md, " {name} ({} rows) |", thousands(run.rows));
        }
        let _ = writeln!(md);
        let _ = writeln!(md, "|---|{}", "---:|".repeat(columns.len()));
        let names = columns
            .first()
            .map(|(_, r)| r.cpu.each().map(|(n, _)| n))
            .unwrap_or_default();
        for (i, name) in names.iter().enumerate() {
            let _ = write!(md, "| {name} |");
            for (_, run) in &columns {
                let cell = run.cpu.each()[i]
                    .1
                    .map_or(String::new(), |s| format!("{:.2}", run.per_million(s)));
                let _ = write!(md, " {cell} |");
            }
            let _ = writeln!(md);
        }
        let _ = write!(md, "| **all measured** |");
        for (_, run) in &columns {
            let _ = write!(md, " **{:.2}** |", run.per_million(run.cpu.total()));
        }
        let _ = writeln!(md);
        let _ = write!(md, "| wall-clock window |");
        for (_, run) in &columns {
            let _ = write!(md, " {} |", duration(run.wall_seconds));
        }
        let _ = writeln!(md);
        let _ = write!(md, "| cores busy (CPU s / wall s) |");
        for (_, run) in &columns {
            let _ = write!(md, " {:.2} |", run.cores_busy());
        }
        let _ = writeln!(md, "\n");
        if let Some(p) = &self.producer
            && let Some(flood_cpu) = p.flood.cpu_seconds
            && p.flood.rows > 0
        {
            let flood = flood_cpu * 1e6 / p.flood.rows as f64;
            let alone = cpu
                .and_then(|c| {
                    let run = c.producer_alone;
                    Some(run.per_million(run.cpu.producer?))
                })
                .map_or(String::new(), |ours| {
                    format!(
                        "; the producer alone above spends {ours:.2}, {} of it",
                        times(ours, flood)
                    )
                });
            let _ = writeln!(
                md,
                "Baseline: the plain rdkafka flood of the same messages (producer phase) spends {flood:.2} \
                 CPU-s per million rows in its own process{alone}.\n"
            );
        }
        let Some(cpu) = cpu else {
            return;
        };
        let _ = writeln!(md, "### Where the CPU goes\n");
        if let Some(why) = &cpu.no_profile {
            let _ = writeln!(md, "No profiles in this run: {why}.\n");
            return;
        }
        let _ = writeln!(
            md,
            "A `perf record` sampling profile (499 Hz) of each process during the runs alone; the \
             functions with the most self time.\n"
        );
        for profile in &cpu.profiles {
            let _ = writeln!(
                md,
                "**{}** ({}; {} samples)\n",
                profile.process,
                profile.during,
                thousands(profile.samples)
            );
            if !profile.components.is_empty() {
                let parts: Vec<String> = profile
                    .components
                    .iter()
                    .map(|(c, p)| format!("`{c}` {p:.0}%"))
                    .collect();
                let _ = writeln!(md, "By component: {}.\n", parts.join(", "));
            }
            let _ = writeln!(md, "| self | in | function |");
            let _ = writeln!(md, "|---:|---|---|");
            for f in &profile.frames {
                let _ = writeln!(
                    md,
                    "| {:.1}% | `{}` | `{}` |",
                    f.percent,
                    f.object,
                    f.symbol.replace('|', "\\|")
                );
            }
            let _ = writeln!(md);
        }
    }

    /// The pipeline's goals, each measured against its baseline in this run.
    pub(super) fn write_goals(&self, md: &mut String) {
        let mut rows = Vec::new();
        if let (Some(run), Some((flood, insert))) = (&self.pipeline, self.e2e_baseline()) {
            let sequential = flood + insert;
            rows.push(format!(
                "| Data moving in the DAG (first row produced to lag 0) at or below doing it in sequence | {} | flood then raw insert: {} | {} | {} |",
                duration(run.data_seconds),
                duration(sequential),
                times(run.data_seconds, sequential),
                met(run.data_seconds <= sequential * SEQUENTIAL_GOAL)
            ));
        }
        if let (Some(run), Some(p), Some(c)) =
            (&self.protobuf_pipeline, &self.producer, &self.consumer)
            && let Some(flood) = p.flood_protobuf
        {
            let sequential =
                flood.seconds_for(run.rows_produced) + c.raw_insert.seconds_for(run.rows_produced);
            rows.push(format!(
                "| The same with protobuf records | {} | protobuf flood then raw insert: {} | {} | {} |",
                duration(run.data_seconds),
                duration(sequential),
                times(run.data_seconds, sequential),
                met(run.data_seconds <= sequential * SEQUENTIAL_GOAL)
            ));
        }
        if let Some(c) = &self.consumer {
            let (ours, raw) = (c.alone.rows_per_sec(), c.raw_insert.rows_per_sec());
            rows.push(format!(
                "| Consumer alone at {:.0}% or more of the raw insert | {} rows/s | raw insert: {} rows/s | {} | {} |",
                CONSUMER_GOAL * 100.0,
                thousands(ours.round() as u64),
                thousands(raw.round() as u64),
                percent(ours, raw),
                met(ours >= raw * CONSUMER_GOAL)
            ));
            if let Some(pb) = c.protobuf {
                let ours = pb.alone.rows_per_sec();
                rows.push(format!(
                    "| The same with protobuf records | {} rows/s | raw insert: {} rows/s | {} | {} |",
                    thousands(ours.round() as u64),
                    thousands(raw.round() as u64),
                    percent(ours, raw),
                    met(ours >= raw * CONSUMER_GOAL)
                ));
            }
        }
        let runs = [
            ("", &self.pipeline),
            (", protobuf records", &self.protobuf_pipeline),
        ];
        for (what, run) in runs {
            let Some(e) = run.as_ref().and_then(estimate_for) else {
                continue;
            };
            rows.push(format!(
                "| {} rows under {} (stretch: {}){what} | {} | {} | {} | {} |",
                thousands(REFERENCE_ROWS),
                duration(REFERENCE_GOAL),
                duration(REFERENCE_STRETCH),
                duration(e.total_seconds),
                duration(REFERENCE_GOAL),
                times(e.total_seconds, REFERENCE_GOAL),
                if e.total_seconds <= REFERENCE_STRETCH {
                    "yes, and the stretch"
                } else {
                    met(e.total_seconds <= REFERENCE_GOAL)
                }
            ));
        }
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(md, "## Goals\n");
        let _ = writeln!(
            md,
            "| Goal | Measured | Baseline (same run) | Ratio | Met |"
        );
        let _ = writeln!(md, "|---|---:|---|---:|---|");
        for row in rows {
            let _ = writeln!(md, "{row}");
        }
        let _ = writeln!(md);
    }
}

fn met(yes: bool) -> &'static str {
    if yes { "yes" } else { "**no**" }
}
