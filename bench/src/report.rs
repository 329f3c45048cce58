//! The benchmark's result ([`Report`]) and its rendering as `docs/BENCHMARKS.md`: every figure of
//! ours beside its baseline from the same run and the ratio, the estimate for 44M rows, the
//! machine, the versions and the date.

mod cpu;

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::machine::{Machine, Versions};
use crate::phases::Rate;
use crate::phases::consumer::ConsumerFigures;
use crate::phases::cpu::CpuFigures;
use crate::phases::fleet::FleetFigures;
use crate::phases::overhead::OverheadFigures;
use crate::phases::pipeline::PipelineFigures;
use crate::phases::producer::ProducerFigures;

/// Rows of the reference run the estimate is for.
pub const REFERENCE_ROWS: u64 = 44_000_000;

/// How a benchmark was run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Rows per measurement.
    pub rows: u64,
    /// Partitions of every topic.
    pub partitions: u32,
    /// Rows per ClickHouse insert of our consumer.
    pub batch_rows: u64,
    /// The Parquet input.
    pub input: String,
    /// The cargo profile of the measured binaries.
    pub profile: String,
    /// Where the servers came from.
    pub servers: String,
    /// The command line that produced the report.
    pub command: String,
    /// A free-text note (e.g. what else ran on the machine).
    pub note: Option<String>,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// When it started.
    pub date: DateTime<Utc>,
    /// How it ran.
    pub settings: Settings,
    /// The machine.
    pub machine: Machine,
    /// Load averages when it ended.
    pub load_at_end: [f64; 3],
    /// Versions.
    pub versions: Versions,
    /// The producer against its flood baseline.
    pub producer: Option<ProducerFigures>,
    /// The consumer against its insert and small-batch baselines.
    pub consumer: Option<ConsumerFigures>,
    /// The consumer phase again on the other ClickHouse lanes of the run (`--clickhouse-lanes`).
    #[serde(default)]
    pub consumer_other_lanes: Vec<ConsumerFigures>,
    /// The orchestrator's overhead per task against direct spawns.
    pub overhead: Option<OverheadFigures>,
    /// The benchmark DAG end to end.
    pub pipeline: Option<PipelineFigures>,
    /// The benchmark DAG again on a durable broker (Tansu on a local S3 server).
    #[serde(default)]
    pub durable_pipeline: Option<PipelineFigures>,
    /// The benchmark DAG again with protobuf records.
    #[serde(default)]
    pub protobuf_pipeline: Option<PipelineFigures>,
    /// The benchmark DAG again at other sizes (`--also-pipeline-rows`).
    pub extra_pipelines: Vec<PipelineFigures>,
    /// The producer and the consumer alone: CPU per row of every process, and profiles.
    #[serde(default)]
    pub cpu: Option<CpuFigures>,
    /// 1, 2 and 3 consumers in one group on the same partitions.
    #[serde(default)]
    pub fleet: Option<FleetFigures>,
    /// Seconds the whole benchmark took.
    pub total_seconds: f64,
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(r: f64) -> String {
    if r.is_finite() {
        thousands(r.round() as u64)
    } else {
        "n/a".into()
    }
}

/// `a / b` as a factor, e.g. `0.52x`.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

/// `ours / base` as a percentage.
fn percent(ours: f64, base: f64) -> String {
    if base > 0.0 && ours.is_finite() {
        let p = 100.0 * ours / base;
        if p > 0.0 && p < 0.01 {
            "<0.01%".into()
        } else if p.abs() < 1.0 && p != 0.0 {
            format!("{p:.2}%")
        } else {
            format!("{p:.0}%")
        }
    } else {
        "n/a".into()
    }
}

/// `ours / base` as a factor.
fn times(ours: f64, base: f64) -> String {
    if base > 0.0 && ours.is_finite() {
        format!("{:.2}x", ours / base)
    } else {
        "n/a".into()
    }
}

/// Seconds, with a unit that fits.
pub fn duration(s: f64) -> String {
    if !s.is_finite() {
        "n/a".into()
    } else if s < 0.001 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        let whole = s.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

fn gib(bytes: u64) -> String {
    if bytes < 1 << 30 {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    }
}

impl Report {
    /// The end-to-end baseline: the flood and the raw insert of the same rows, one after the other.
    fn e2e_baseline(&self) -> Option<(f64, f64)> {
        let p = self.producer.as_ref()?;
        let c = self.consumer.as_ref()?;
        let rows = self
            .pipeline
            .as_ref()
            .map_or(self.settings.rows, |r| r.rows_produced);
        Some((p.flood.seconds_for(rows), c.raw_insert.seconds_for(rows)))
    }

    /// The estimated time of a 44M-row run, with how it was derived.
    pub fn estimate_reference(&self) -> Option<Estimate> {
        estimate_for(self.pipeline.as_ref()?)
    }

    /// `docs/BENCHMARKS.md`.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        self.write_markdown(&mut md);
        md
    }

    fn write_markdown(&self, md: &mut String) {
        let s = &self.settings;
        let rows = thousands(s.rows);
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Generated by `velostream-bench` on {} (UTC); do not edit by hand, run it again:\n\n```text\n{}\n```\n",
            self.date.format("%Y-%m-%d %H:%M"),
            s.command
        );
        let _ = writeln!(
            md,
            "Every figure of ours stands beside its baseline measured **in the same run, on the same machine**, \
             and the ratio. {rows} rows of the real NYC taxi sample (`{}`, repeated with shifted timestamps), \
             {} partitions, {} rows per ClickHouse insert, {} binaries, {}. The whole benchmark took {}.\n",
            s.input,
            s.partitions,
            thousands(s.batch_rows),
            s.profile,
            s.servers,
            duration(self.total_seconds)
        );
        if let Some(note) = &s.note {
            let _ = writeln!(md, "> {note}\n");
        }
        // A run of the fleet phase alone has no summary figures nor details to show.
        let measured = self.producer.is_some()
            || self.consumer.is_some()
            || self.pipeline.is_some()
            || self.overhead.is_some();
        if measured {
            self.write_summary(md);
        }
        self.write_goals(md);
        self.write_lanes(md);
        self.write_formats(md);
        self.write_estimate(md);
        self.write_cpu(md);
        self.write_storage(md);
        self.write_sizes(md);
        self.write_fleet(md);
        self.write_machine(md);
        if measured {
            self.write_details(md);
        }
        let _ = writeln!(md, "## How each figure is measured\n");
        let _ = writeln!(md, "{}", METHOD.trim());
    }

    fn write_summary(&self, md: &mut String) {
        let _ = writeln!(md, "## Summary ({} rows)\n", thousands(self.settings.rows));
        let _ = writeln!(md, "| Figure | velostream | Baseline (same run) | Ratio |");
        let _ = writeln!(md, "|---|---:|---|---:|");
        let run = self.pipeline.as_ref();
        if let Some(p) = &self.producer {
            let flood = p.flood.rows_per_sec();
            let base = format!("plain rdkafka flood of the same messages: {}", rate(flood));
            if let Some(run) = run {
                let ours = run.producer.rows_per_sec();
                let _ = writeln!(
                    md,
                    "| Producer rows/s, in the pipeline | {} | {base} | {} |",
                    rate(ours),
                    percent(ours, flood)
                );
            }
            let ours = p.alone.rows_per_sec();
            let _ = writeln!(
                md,
                "| Producer rows/s, alone | {} | {base} | {} |",
                rate(ours),
                percent(ours, flood)
            );
            if let Some(tuned) = &p.flood_tuned {
                let _ = writeln!(
                    md,
                    "| | | the same flood with our client settings: {} | {} |",
                    rate(tuned.rows_per_sec()),
                    percent(ours, tuned.rows_per_sec())
                );
            }
        }
        if let Some(c) = &self.consumer {
            let raw = c.raw_insert.rows_per_sec();
            let small = c.small_batch.rows_per_sec();
            let mut line = |what: &str, ours: f64| {
                let _ = writeln!(
                    md,
                    "| Consumer rows/s, {what} | {} | raw ClickHouse insert of the same rows from memory: {} | {} |",
                    rate(ours),
                    rate(raw),
                    percent(ours, raw)
                );
                let _ = writeln!(
                    md,
                    "| | | small-batch consumer (insert and commit each poll's messages, up to {} per insert): {} | {} |",
                    c.small_batch_rows_per_insert
                        .map_or("?".into(), |r| thousands(r.round() as u64)),
                    rate(small),
                    times(ours, small)
                );
            };
            if let Some(run) = run {
                line("in the pipeline", run.consumer.rows_per_sec());
            }
            line("alone (pre-filled topic)", c.alone.rows_per_sec());
            if let Some(engine) = &c.kafka_engine {
                let _ = writeln!(
                    md,
                    "| | | peer: ClickHouse's Kafka engine + materialized view into the same table layout: {} | {} |",
                    rate(engine.rows_per_sec()),
                    times(c.alone.rows_per_sec(), engine.rows_per_sec())
                );
            }
            if let Some(m) = &c.memory {
                let mib = |b: u64| format!("{:.0} MiB", b as f64 / f64::from(1 << 20));
                let peak = m
                    .frozen_bytes
                    .map_or(m.backlog_bytes, |f| f.max(m.backlog_bytes));
                let _ = writeln!(
                    md,
                    "| Consumer peak memory (RSS) | {} reading a {}-row backlog{} | the bound it states (`memory_bound_mb`, ARCHITECTURE.md): {} | {} |",
                    mib(m.backlog_bytes),
                    thousands(m.rows),
                    m.frozen_bytes.map_or(String::new(), |f| format!(
                        "; {} with ClickHouse frozen {}",
                        mib(f),
                        duration(m.freeze_secs)
                    )),
                    mib(m.bound_bytes),
                    percent(peak as f64, m.bound_bytes as f64)
                );
            }
        }
        if let Some(run) = run {
            match self.e2e_baseline() {
                Some((flood, insert)) => {
                    let _ = writeln!(
                        md,
                        "| End-to-end time, first row produced to lag 0 | {} | flood then raw insert of the same rows, one after the other: {} + {} = {} | {} |",
                        duration(run.data_seconds),
                        duration(flood),
                        duration(insert),
                        duration(flood + insert),
                        times(run.data_seconds, flood + insert)
                    );
                }
                None => {
                    let _ = writeln!(
                        md,
                        "| End-to-end time, first row produced to lag 0 | {} | (baselines not run) | |",
                        duration(run.data_seconds)
                    );
                }
            }
            let _ = writeln!(
                md,
                "| Whole DAG run, provisioning to validated count | {} | the data moving alone (row above): {} | {} |",
                duration(run.run_seconds),
                duration(run.data_seconds),
                times(run.run_seconds, run.data_seconds)
            );
            let _ = writeln!(
                md,
                "| Peak consumer lag | {} rows | a consumer that starts after the producer: {} rows | {} |",
                thousands(run.peak_lag_sensor),
                thousands(run.rows_produced),
                percent(run.peak_lag_sensor as f64, run.rows_produced as f64)
            );
        }
        if let Some(o) = &self.overhead {
            let _ = writeln!(
                md,
                "| Orchestrator overhead per task: a chain of {} `noop` tasks (scheduler and SQLite store) | {} | the cheapest real task, spawning `true` from a plain loop: {} | {} |",
                thousands(o.noop_tasks as u64),
                duration(o.noop_per_task),
                duration(o.direct_spawn),
                percent(o.noop_per_task, o.direct_spawn)
            );
            let _ = writeln!(
                md,
                "| Orchestrator time per `command` task running `true` (a chain of {}) | {} | spawning `true` from a plain loop: {} | {} |",
                o.command_tasks,
                duration(o.command_per_task),
                duration(o.direct_spawn),
                times(o.command_per_task, o.direct_spawn)
            );
        }
        if let Some(run) = run {
            let _ = writeln!(
                md,
                "| Scheduler gap per task in the benchmark DAG (upstream end to start) | mean {}, max {} | the tasks' own work: {} in all | {} |",
                duration(run.mean_gap()),
                duration(run.max_gap()),
                duration(run.tasks.iter().map(|t| t.seconds).sum()),
                percent(
                    run.tasks.iter().filter_map(|t| t.gap).sum(),
                    run.tasks.iter().map(|t| t.seconds).sum()
                )
            );
            let _ = writeln!(
                md,
                "\nRows produced {}, rows in ClickHouse (`count() FINAL`) {}, dead-lettered {}.\n",
                thousands(run.rows_produced),
                thousands(run.rows_in_clickhouse),
                thousands(run.rows_dead_lettered)
            );
        } else {
            let _ = writeln!(md);
        }
    }

    fn write_estimate(&self, md: &mut String) {
        let Some(e) = self.estimate_reference() else {
            return;
        };
        let run = self.pipeline.as_ref();
        let _ = writeln!(md, "## How long 44M rows take\n");
        let _ = writeln!(
            md,
            "Estimated from this run's measured rates (the reference Airflow run moved 44M rows): \
             the data moving scales with the rows, the rest of the DAG (provisioning, consumer start, \
             stop, validation: {}) does not.\n",
            duration(run.map_or(0.0, PipelineFigures::fixed_seconds))
        );
        let _ = writeln!(md, "| | 44,000,000 rows |");
        let _ = writeln!(md, "|---|---:|");
        let _ = writeln!(
            md,
            "| Data moving (first row produced to lag 0), scaled from this run | {} |",
            duration(e.data_seconds)
        );
        let _ = writeln!(
            md,
            "| **Whole DAG run** | **{}** |",
            duration(e.total_seconds)
        );
        let _ = writeln!(
            md,
            "| Lower bound: the slower of producer and consumer at their pipeline rates | {} |",
            duration(e.slowest_stage_seconds)
        );
        if let Some(rss) = e.broker_rss {
            let _ = writeln!(
                md,
                "| Local broker memory (it keeps every message in memory): empty broker plus this run's growth, scaled | {} of {} |",
                gib(rss),
                gib(self.machine.memory_bytes)
            );
        }
        let _ = writeln!(md);
        if let Some(measured) = self
            .extra_pipelines
            .iter()
            .find(|p| p.rows_produced == REFERENCE_ROWS)
        {
            let _ = writeln!(
                md,
                "Measured in the same benchmark, a run of the DAG at 44,000,000 rows took **{}** \
                 ({} from the first row produced to lag 0; the estimate above said {}).\n",
                duration(measured.run_seconds),
                duration(measured.data_seconds),
                duration(e.total_seconds)
            );
        }
    }

    /// The fleet sizes side by side, each against one consumer, with where the CPU went.
    fn write_fleet(&self, md: &mut String) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        let _ = writeln!(md, "## A consumer fleet on the same partitions\n");
        let _ = writeln!(
            md,
            "One topic ({} partitions) filled once, then drained by `bench/dags/consumer_fleet.toml` with 1, 2 and 3 \
             `velostream-consumer` processes in one group (`process.spawn` with `replicas`), each time into a fresh \
             table with a fresh group, {} rows per insert. Rows/s is the rows in ClickHouse over the fleet's active \
             window (the longest of its consumers' first-message-to-last-insert times); *ready to lag 0* adds the \
             group forming and rebalancing. CPU is per row, over the whole DAG run ({} cores here).\n",
            fleet.partitions,
            thousands(fleet.batch_rows),
            self.machine.cores
        );
        let _ = writeln!(
            md,
            "| consumers | rows/s | vs 1 consumer | active window | ready to lag 0 | rows read | consumers' CPU µs/row | ClickHouse CPU µs/row | broker CPU µs/row | rows in ClickHouse |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let one = fleet.runs.first().map(|r| r.rows_per_sec());
        let per_row = |cpu: Option<f64>, rows: u64| match cpu {
            Some(c) if rows > 0 => format!("{:.2}", c * 1e6 / rows as f64),
            _ => "n/a".into(),
        };
        for r in &fleet.runs {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.consumers,
                rate(r.rows_per_sec()),
                match one {
                    Some(one) if one > 0.0 => format!("{:.2}x", r.rows_per_sec() / one),
                    _ => "n/a".into(),
                },
                duration(r.active_seconds),
                duration(r.drain_seconds),
                thousands(r.rows_read),
                per_row(Some(r.cpu.consumers), r.rows),
                per_row(r.cpu.clickhouse, r.rows),
                per_row(r.cpu.broker, r.rows),
                thousands(r.rows)
            );
        }
        let _ = writeln!(md);
    }

    /// The pipeline on the memory broker against the same DAG on a durable one, same run.
    fn write_storage(&self, md: &mut String) {
        let (Some(memory), Some(durable)) = (&self.pipeline, &self.durable_pipeline) else {
            return;
        };
        let _ = writeln!(
            md,
            "## The broker's storage: durable against memory
"
        );
        let _ = writeln!(
            md,
            "The benchmark DAG at the same size on a fresh broker of each kind: Tansu's memory engine \
             (the headline figures above; it forgets everything when it stops) and its S3 engine on \
             a local s3rver (`VELOSTREAM_KAFKA_STORAGE=durable`; messages survive a broker crash, \
             every produce is a file written by s3rver). The ratio is durable / memory.\n"
        );
        let _ = writeln!(
            md,
            "| figure | memory broker | durable broker | durable / memory |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|");
        let rows = [
            (
                "Producer rows/s, in the pipeline",
                memory.producer.rows_per_sec(),
                durable.producer.rows_per_sec(),
            ),
            (
                "Consumer rows/s, in the pipeline",
                memory.consumer.rows_per_sec(),
                durable.consumer.rows_per_sec(),
            ),
        ];
        for (figure, m, d) in rows {
            let _ = writeln!(
                md,
                "| {figure} | {} | {} | {} |",
                rate(m),
                rate(d),
                ratio(d, m)
            );
        }
        let _ = writeln!(
            md,
            "| First row produced to lag 0 | {} | {} | {} |",
            duration(memory.data_seconds),
            duration(durable.data_seconds),
            ratio(durable.data_seconds, memory.data_seconds)
        );
        let _ = writeln!(
            md,
            "| Rows in ClickHouse (FINAL) | {} | {} | |\n",
            thousands(memory.rows_in_clickhouse),
            thousands(durable.rows_in_clickhouse)
        );
    }

    fn write_sizes(&self, md: &mut String) {
        if self.extra_pipelines.is_empty() {
            return;
        }
        let _ = writeln!(md, "## The pipeline at other sizes\n");
        let _ = writeln!(
            md,
            "The benchmark DAG again, after the phases above, on a fresh broker each time.\n"
        );
        let _ = writeln!(
            md,
            "| rows | whole DAG run | first row to lag 0 | producer rows/s | consumer rows/s | peak lag | rows in ClickHouse |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
        for p in self.pipeline.iter().chain(&self.extra_pipelines) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                thousands(p.rows_produced),
                duration(p.run_seconds),
                duration(p.data_seconds),
                rate(p.producer.rows_per_sec()),
                rate(p.consumer.rows_per_sec()),
                thousands(p.peak_lag_sensor),
                thousands(p.rows_in_clickhouse)
            );
        }
        let _ = writeln!(md);
    }

    /// The raw-insert ceiling and our consumer's share of it on each ClickHouse lane of the run.
    fn write_lanes(&self, md: &mut String) {
        let Some(first) = &self.consumer else {
            return;
        };
        if self.consumer_other_lanes.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "## ClickHouse lanes: the raw-insert ceiling and our share
"
        );
        let _ = writeln!(
            md,
            "The consumer phase on a fresh server of each lane, one after the other in this run (same topic size, same binaries).
"
        );
        let _ = writeln!(
            md,
            "| lane | ClickHouse | raw insert from memory (ceiling), rows/s | velostream-consumer alone, rows/s | ours / ceiling |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|");
        for c in std::iter::once(first).chain(&self.consumer_other_lanes) {
            let (raw, ours) = (c.raw_insert.rows_per_sec(), c.alone.rows_per_sec());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                c.lane.as_deref().unwrap_or("given server"),
                c.clickhouse_version.as_deref().unwrap_or("?"),
                rate(raw),
                rate(ours),
                percent(ours, raw)
            );
        }
        let _ = writeln!(md);
    }

    /// JSON against protobuf records (`proto/taxi_trip.proto`): the producer and the consumer alone
    /// and ClickHouse's Kafka engine, each on the same rows in both formats in this run.
    fn write_formats(&self, md: &mut String) {
        let producer = self.producer.as_ref();
        let consumer = self.consumer.as_ref();
        let pb = consumer.and_then(|c| c.protobuf);
        let producer_pb = producer.and_then(|p| p.alone_protobuf);
        if pb.is_none() && producer_pb.is_none() {
            return;
        }
        let _ = writeln!(
            md,
            "## Record formats: JSON and protobuf
"
        );
        let _ = writeln!(
            md,
            "The same rows as JSON objects and as protobuf `TaxiTrip` messages (`proto/taxi_trip.proto`, \
             `--format protobuf`), measured one after the other in this run.\n"
        );
        let _ = writeln!(md, "| what | JSON | protobuf | protobuf / JSON |");
        let _ = writeln!(md, "|---|---:|---:|---:|");
        let mut row = |what: &str, json: Option<f64>, proto: Option<f64>, unit: &str| {
            if let (Some(j), Some(p)) = (json, proto) {
                let _ = writeln!(
                    md,
                    "| {what} | {}{unit} | {}{unit} | {} |",
                    rate(j),
                    rate(p),
                    times(p, j)
                );
            }
        };
        row(
            "producer alone, rows/s",
            producer.map(|p| p.alone.rows_per_sec()),
            producer_pb.map(|r| r.rows_per_sec()),
            "",
        );
        row(
            "plain flood of the same messages (producer baseline), rows/s",
            producer.map(|p| p.flood.rows_per_sec()),
            producer
                .and_then(|p| p.flood_protobuf)
                .map(|r| r.rows_per_sec()),
            "",
        );
        if let Some(pb) = pb {
            row(
                "record size, bytes",
                Some(pb.json_bytes_per_row as f64),
                Some(pb.protobuf_bytes_per_row as f64),
                "",
            );
            row(
                "consumer: decode alone (one thread), rows/s",
                Some(pb.decode_json),
                Some(pb.decode_protobuf),
                "",
            );
            row(
                "consumer alone, rows/s",
                consumer.map(|c| c.alone.rows_per_sec()),
                Some(pb.alone.rows_per_sec()),
                "",
            );
            row(
                "peer: ClickHouse Kafka engine, rows/s",
                consumer
                    .and_then(|c| c.kafka_engine)
                    .map(|r| r.rows_per_sec()),
                pb.kafka_engine.map(|r| r.rows_per_sec()),
                "",
            );
            if let Some(c) = consumer {
                let _ = writeln!(
                    md,
                    "\nConsumer alone on protobuf against the raw-insert ceiling: {}.",
                    percent(pb.alone.rows_per_sec(), c.raw_insert.rows_per_sec())
                );
            }
        }
        if let Some((p, pb)) = producer.zip(producer_pb)
            && let Some(flood) = p.flood_protobuf
        {
            let _ = writeln!(
                md,
                "\nProducer alone on protobuf against the plain flood of its messages: {} (JSON: {}).",
                percent(pb.rows_per_sec(), flood.rows_per_sec()),
                percent(p.alone.rows_per_sec(), p.flood.rows_per_sec())
            );
        }
        let _ = writeln!(md);
    }

    fn write_machine(&self, md: &mut String) {
        let m = &self.machine;
        let v = &self.versions;
        let _ = writeln!(md, "## Machine and versions\n");
        let _ = writeln!(md, "| | |");
        let _ = writeln!(md, "|---|---|");
        let _ = writeln!(
            md,
            "| Date | {} UTC |",
            self.date.format("%Y-%m-%d %H:%M:%S")
        );
        let _ = writeln!(md, "| CPU | {} cores (nproc), {} |", m.cores, m.cpu_model);
        let _ = writeln!(md, "| Memory | {} |", gib(m.memory_bytes));
        let _ = writeln!(md, "| Kernel | Linux {} |", m.kernel);
        let _ = writeln!(
            md,
            "| Load average (1/5/15 min) | {:.2} / {:.2} / {:.2} at start, {:.2} / {:.2} / {:.2} at end |",
            m.load_at_start[0],
            m.load_at_start[1],
            m.load_at_start[2],
            self.load_at_end[0],
            self.load_at_end[1],
            self.load_at_end[2]
        );
        match &v.clickhouse_lane {
            Some(lane) => {
                let _ = writeln!(md, "| ClickHouse | {} ({lane} lane) |", v.clickhouse);
            }
            None => {
                let _ = writeln!(md, "| ClickHouse | {} |", v.clickhouse);
            }
        }
        let _ = writeln!(md, "| Broker | {} |", v.broker);
        let _ = writeln!(md, "| librdkafka | {} |", v.librdkafka);
        let _ = writeln!(md, "| Rust | {} |", v.rustc);
        let _ = writeln!(md, "| velostream | {} |", v.velostream);
        let _ = writeln!(md);
    }

    fn write_details(&self, md: &mut String) {
        let _ = writeln!(md, "## Details\n");
        let line = |md: &mut String, name: &str, r: &Rate| {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} |",
                thousands(r.rows),
                duration(r.seconds),
                rate(r.rows_per_sec()),
                if r.bytes > 0 {
                    format!("{:.1}", r.mb_per_sec())
                } else {
                    "".into()
                },
                r.cpu_seconds.map_or(String::new(), duration)
            );
        };
        let header = |md: &mut String, title: &str| {
            let _ = writeln!(md, "### {title}\n");
            let _ = writeln!(
                md,
                "| | rows | time | rows/s | MB/s | CPU of the measuring process |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
        };
        if let Some(p) = &self.producer {
            header(
                md,
                &format!(
                    "Producer (median of {} rounds, phases alternating, a fresh broker each)",
                    p.rounds
                ),
            );
            if let Some(f) = &p.flood200 {
                line(md, "Reference: plain rdkafka flood, 200-byte messages", f);
            }
            line(md, "Baseline: plain rdkafka flood, our messages", &p.flood);
            if let Some(f) = &p.flood_tuned {
                line(
                    md,
                    "The same flood with velostream-producer's client settings",
                    f,
                );
            }
            line(md, "velostream-producer alone", &p.alone);
            if let Some(run) = &self.pipeline {
                line(
                    md,
                    "velostream-producer in the pipeline (consumer and ClickHouse busy too)",
                    &run.producer,
                );
            }
            let _ = writeln!(md);
        }
        if let Some(c) = &self.consumer {
            header(md, "Consumer");
            line(
                md,
                "Ceiling: raw ClickHouse insert of the rows from memory",
                &c.raw_insert,
            );
            line(md, "Baseline: small-batch consumer", &c.small_batch);
            line(
                md,
                "velostream-consumer alone, from a pre-filled topic",
                &c.alone,
            );
            if let Some(f) = &c.fetch_only {
                line(
                    md,
                    "Reference: reading the topic alone, no decode, no insert",
                    f,
                );
            }
            if let Some(run) = &self.pipeline {
                line(
                    md,
                    "velostream-consumer in the pipeline (active time)",
                    &run.consumer,
                );
            }
            let _ = writeln!(md);
        }
        if let Some(run) = &self.pipeline {
            let _ = writeln!(md, "### The benchmark DAG run `{}`\n", run.run_id);
            let _ = writeln!(
                md,
                "| task | starts at | duration | gap after its upstreams |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|");
            for t in &run.tasks {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    t.id,
                    duration(t.start),
                    duration(t.seconds),
                    t.gap.map_or("(root)".into(), duration)
                );
            }
            let _ = writeln!(md);
            let mut facts = Vec::new();
            if let Some(p) = run.peak_lag_metrics {
                facts.push(format!(
                    "peak lag in the consumer's own metrics {} rows",
                    thousands(p)
                ));
            }
            if let Some(i) = run.inserts {
                facts.push(format!("{} inserts", thousands(i)));
            }
            if let Some(b) = run.mean_batch_rows {
                facts.push(format!(
                    "{} rows per insert on average",
                    thousands(b.round() as u64)
                ));
            }
            if let Some(s) = run.mean_insert_seconds {
                facts.push(format!("mean insert latency {}", duration(s)));
            }
            if let Some(b) = run.broker_peak_rss {
                facts.push(format!("broker peak memory {}", gib(b)));
            }
            if !facts.is_empty() {
                let _ = writeln!(
                    md,
                    "Scraped from `/metrics` during the run: {}.\n",
                    facts.join(", ")
                );
            }
        }
        if let Some(o) = &self.overhead {
            let _ = writeln!(
                md,
                "### Orchestrator overhead (median of {} rounds, alternating)\n",
                o.rounds
            );
            let _ = writeln!(md, "| | tasks | per task |");
            let _ = writeln!(md, "|---|---:|---:|");
            let _ = writeln!(
                md,
                "| `command` chain running `true`, first start to last end | {} | {} |",
                o.command_tasks,
                duration(o.command_per_task)
            );
            let _ = writeln!(
                md,
                "| of which inside the task (spawn, wait, log), as stored | | {} |",
                duration(o.command_task_mean)
            );
            let _ = writeln!(
                md,
                "| of which between tasks (end to next start) | | {} |",
                duration(o.command_gap_mean)
            );
            let _ = writeln!(
                md,
                "| Baseline: spawn and wait `true` from a plain loop | {} | {} |",
                o.command_tasks,
                duration(o.direct_spawn)
            );
            let _ = writeln!(
                md,
                "| Difference, `command` task minus plain spawn (within the noise of a spawn when near 0) | | {}{} |",
                if o.overhead_per_task() < 0.0 { "-" } else { "" },
                duration(o.overhead_per_task().abs())
            );
            let _ = writeln!(
                md,
                "| `noop` chain, first start to last end (scheduler and SQLite store only) | {} | {} |",
                o.noop_tasks,
                duration(o.noop_per_task)
            );
            let _ = writeln!(md);
        }
    }
}

/// The estimated time of a 44M-row run of the DAG from `run`'s measured rates.
fn estimate_for(run: &PipelineFigures) -> Option<Estimate> {
    if run.rows_produced == 0 || run.data_seconds <= 0.0 {
        return None;
    }
    let scale = REFERENCE_ROWS as f64 / run.rows_produced as f64;
    let data = run.data_seconds * scale;
    let slowest_stage = run
        .producer
        .seconds_for(REFERENCE_ROWS)
        .max(run.consumer.seconds_for(REFERENCE_ROWS));
    Some(Estimate {
        data_seconds: data,
        total_seconds: data + run.fixed_seconds(),
        slowest_stage_seconds: slowest_stage,
        // The empty broker's memory stays; what the messages take grows with them.
        broker_rss: run.broker_peak_rss.map(|peak| {
            let idle = run.broker_idle_rss.unwrap_or(0).min(peak);
            idle + ((peak - idle) as f64 * scale).round() as u64
        }),
    })
}

/// The 44M-row estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// First row produced to lag 0.
    pub data_seconds: f64,
    /// The whole DAG run.
    pub total_seconds: f64,
    /// 44M rows at the slower of the producer's and the consumer's pipeline rates.
    pub slowest_stage_seconds: f64,
    /// The local broker's memory, scaled.
    pub broker_rss: Option<u64>,
}

const METHOD: &str = r#"
- **Producer, in the pipeline**: the `produce` task of `dags/velostream_benchmark.toml`, run by
  `orchestrator run` with the consumer draining the topic at the same time; rows/s from the
  producer's own summary (rows acknowledged by the broker over its run time).
- **Producer, alone** and its **baseline**: `producer-bench` on a fresh broker per phase, the
  phases alternating over rounds (the median round counts): our pipeline (Parquet decode, JSON
  encode, idempotent `acks=all` lz4 producer), and a plain rdkafka `BaseProducer` flooding the very
  messages we send (the sample's rows as JSON, encoded before the clock starts, same keys;
  idempotent, `acks=all`, lz4, librdkafka's defaults otherwise), also with our client settings
  (batch size, linger, queue depth). The 200-byte flood is the issue's reference.
- **Consumer, in the pipeline**: the consumer's summary when the DAG stops it: rows inserted over
  its active time (first message read to last insert acknowledged).
- **Consumer, alone** and its **baselines**: `consumer-bench` from a topic pre-filled with the
  same rows: the ceiling is a raw ClickHouse insert (RowBinary, large batches) of the rows already
  decoded in memory; the baseline is a plain consumer that inserts each poll's messages, the way
  the reference Python consumer did.
- **Peer: ClickHouse's Kafka engine** (modern servers): in the same `consumer-bench`, a `Kafka`
  table (JSONEachRow, the topic's JSON as it is, `kafka_max_block_size` = our batch rows,
  `kafka_flush_interval_ms` = our batch time) and a materialized view converting into the same
  table layout our consumer writes (`_topic`, `_partition`, `_offset` from the engine's virtual
  columns); rows/s from the first rows stored to the last, the count checked exact. The broker
  admits a group member only after half of `session.timeout.ms` (the engine's librdkafka default,
  45 s): that wait is outside the rate, as the group join is outside ours.
- **ClickHouse lanes**: with `--clickhouse-lanes modern,legacy` the consumer phase runs on a fresh
  server of each lane, one after the other; the first lane serves every other phase.
  `VELOSTREAM_CLICKHOUSE` picks the lane when the option is not given.
- **End-to-end time**: from the `produce` task's start to the `wait_lag_zero` sensor seeing lag 0
  (it polls every 500 ms). Its baseline is what a produce-then-load approach with the fastest
  pieces would take: the flood and the raw insert of the same rows, one after the other.
- **Peak lag**: the highest total lag the `wait_lag_zero` sensor saw (high watermark from Fetch,
  committed offsets of the group); against the rows produced, which is the peak lag of a consumer
  that starts only after the producer ends.
- **Orchestrator overhead per task**: generated chains run by `orchestrator run` (SQLite state,
  per-try logs, process groups), first task's start to last task's end over the tasks: 1,000
  `noop` tasks measure what the orchestrator itself adds to every task (scheduling, state writes);
  `command` tasks running `true` add a real process per task, beside the same number of spawns of
  `true` from a plain loop. Chains and loops alternate over three rounds; medians count. The
  scheduler gap of the benchmark DAG is each task's start minus its last upstream's end, from the
  state database.
- **CPU per row**: CPU seconds (user + system, all threads) per million rows of each process. The
  producer and the consumer count their own (`cpu_secs` in their summaries, from `/proc/self/stat`
  at exit); the broker's and ClickHouse's are the growth of their `/proc/<pid>/stat` times over the
  window (the whole DAG run; a program's lifetime alone), so their background work in that window
  (ClickHouse's merges) counts too. Alone: the `cpu` phase runs `velostream-producer` filling a
  topic of a fresh broker, then `velostream-consumer` draining it into a fresh table (count
  checked exact). **Profiles**: `perf record -F 499` running each program (so every thread it
  starts is sampled) and attached to the broker and ClickHouse meanwhile; self time per function,
  and summed per component (a Rust crate, librdkafka, the kernel). ClickHouse's and Tansu's
  binaries carry no symbols: their frames are addresses.
- **Goals**: each against its baseline in this run: the data moving in the DAG against the flood
  and the raw insert one after the other; the consumer alone against the raw insert; the 44M-row
  estimate against 90 s.
- The machine is shared: other engineers' builds may run during a benchmark (see the load average).
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{CpuRun, Frame, ProcessCpu, Profile};
    use crate::phases::consumer::{ConsumerMemory, ConsumerProtobuf};
    use crate::phases::pipeline::TaskTiming;

    fn rate(rows: u64, seconds: f64) -> Rate {
        Rate {
            rows,
            bytes: rows * 400,
            seconds,
            cpu_seconds: Some(seconds),
        }
    }

    fn report() -> Report {
        Report {
            date: DateTime::parse_from_rfc3339("2026-11-22T05:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            settings: Settings {
                rows: 10_000_000,
                partitions: 6,
                batch_rows: 500_000,
                input: "sample.parquet".into(),
                profile: "release".into(),
                servers: "fresh servers".into(),
                command: "velostream-bench --rows 10000000".into(),
                note: Some("shared machine".into()),
            },
            machine: Machine {
                cores: 2,
                cpu_model: "cpu".into(),
                memory_bytes: 24 << 30,
                kernel: "6.1".into(),
                load_at_start: [1.0, 1.0, 1.0],
            },
            load_at_end: [2.0, 1.5, 1.0],
            versions: Versions {
                clickhouse: "18.16.1".into(),
                ..Versions::default()
            },
            producer: Some(ProducerFigures {
                flood: rate(10_000_000, 10.0),
                flood200: None,
                flood_tuned: None,
                alone: rate(10_000_000, 12.5),
                alone_protobuf: Some(rate(10_000_000, 10.0)),
                flood_protobuf: Some(rate(10_000_000, 8.0)),
                rows_per_pass: 100_000,
                rounds: 3,
            }),
            consumer: Some(ConsumerFigures {
                raw_insert: rate(10_000_000, 8.0),
                small_batch: rate(2_000_000, 10.0),
                alone: rate(10_000_000, 10.0),
                fetch_only: None,
                small_batch_rows_per_insert: Some(5000.0),
                kafka_engine: Some(rate(10_000_000, 20.0)),
                lane: Some("modern".into()),
                clickhouse_version: Some("26.9.2.1".into()),
                memory: Some(ConsumerMemory {
                    rows: 3_000_000,
                    backlog_bytes: 300 << 20,
                    frozen_bytes: Some(320 << 20),
                    freeze_secs: 20.0,
                    bound_bytes: 400 << 20,
                }),
                protobuf: Some(ConsumerProtobuf {
                    alone: rate(10_000_000, 8.0),
                    kafka_engine: Some(rate(10_000_000, 10.0)),
                    decode_json: 2_000_000.0,
                    decode_protobuf: 5_000_000.0,
                    json_bytes_per_row: 400,
                    protobuf_bytes_per_row: 120,
                }),
            }),
            consumer_other_lanes: vec![ConsumerFigures {
                raw_insert: rate(10_000_000, 10.0),
                small_batch: rate(2_000_000, 10.0),
                alone: rate(10_000_000, 12.5),
                fetch_only: None,
                small_batch_rows_per_insert: Some(5000.0),
                kafka_engine: None,
                lane: Some("legacy".into()),
                clickhouse_version: Some("18.16.1".into()),
                memory: None,
                protobuf: None,
            }],
            overhead: Some(OverheadFigures {
                command_tasks: 200,
                command_per_task: 0.004,
                command_task_mean: 0.003,
                command_gap_mean: 0.001,
                direct_spawn: 0.001,
                noop_tasks: 1000,
                noop_per_task: 0.0002,
                rounds: 3,
            }),
            pipeline: Some(PipelineFigures {
                run_id: "r1".into(),
                rows_produced: 10_000_000,
                rows_in_clickhouse: 10_000_000,
                rows_dead_lettered: 0,
                producer: rate(10_000_000, 20.0),
                consumer: rate(10_000_000, 20.0),
                data_seconds: 22.0,
                run_seconds: 30.0,
                peak_lag_sensor: 1_000_000,
                peak_lag_metrics: Some(900_000),
                mean_insert_seconds: Some(0.4),
                mean_batch_rows: Some(500_000.0),
                inserts: Some(20),
                tasks: vec![
                    TaskTiming {
                        id: "infra_up".into(),
                        start: 0.0,
                        seconds: 0.01,
                        gap: None,
                    },
                    TaskTiming {
                        id: "produce".into(),
                        start: 4.0,
                        seconds: 20.0,
                        gap: Some(0.002),
                    },
                ],
                broker_peak_rss: Some(4 << 30),
                broker_idle_rss: Some(1 << 30),
                broker_storage: "memory".into(),
                format: "json".into(),
                cpu: Some(CpuRun {
                    rows: 10_000_000,
                    wall_seconds: 30.0,
                    cpu: ProcessCpu {
                        producer: Some(15.0),
                        broker: Some(5.0),
                        consumer: Some(20.0),
                        clickhouse: Some(12.0),
                    },
                }),
            }),
            durable_pipeline: None,
            protobuf_pipeline: None,
            extra_pipelines: Vec::new(),
            cpu: Some(CpuFigures {
                producer_alone: CpuRun {
                    rows: 10_000_000,
                    wall_seconds: 12.0,
                    cpu: ProcessCpu {
                        producer: Some(12.0),
                        broker: Some(4.0),
                        ..ProcessCpu::default()
                    },
                },
                consumer_alone: CpuRun {
                    rows: 10_000_000,
                    wall_seconds: 11.0,
                    cpu: ProcessCpu {
                        broker: Some(2.0),
                        consumer: Some(16.0),
                        clickhouse: Some(10.0),
                        ..ProcessCpu::default()
                    },
                },
                profiles: vec![Profile {
                    process: "consumer".into(),
                    during: "consumer alone, 10,000,000 rows".into(),
                    samples: 5000,
                    components: vec![("velostream_consumer".into(), 21.5)],
                    frames: vec![Frame {
                        percent: 21.5,
                        object: "velostream-consumer".into(),
                        symbol: "velostream_consumer::record::scan::next".into(),
                    }],
                }],
                no_profile: None,
            }),
            fleet: None,
            total_seconds: 300.0,
        }
    }

    #[test]
    fn cpu_per_row_stands_per_process_in_the_dag_and_alone_with_profiles_and_goals() {
        let md = report().markdown();
        for want in [
            "| CPU-s per million rows | benchmark DAG (10,000,000 rows) | producer alone (10,000,000 rows) | consumer alone (10,000,000 rows) |",
            "| producer | 1.50 | 1.20 |  |",
            "| consumer | 2.00 |  | 1.60 |",
            "| ClickHouse | 1.20 |  | 1.00 |",
            "| **all measured** | **5.20** | **1.60** | **2.80** |",
            "| cores busy (CPU s / wall s) | 1.73 | 1.33 | 2.55 |",
            // The flood spent 10 CPU-s on 10M rows in the fixture.
            "spends 1.00 CPU-s per million rows in its own process; the producer alone above spends 1.20, 1.20x of it",
            "**consumer** (consumer alone, 10,000,000 rows; 5,000 samples)",
            "By component: `velostream_consumer` 22%.",
            "| 21.5% | `velostream-consumer` | `velostream_consumer::record::scan::next` |",
            "| Data moving in the DAG (first row produced to lag 0) at or below doing it in sequence | 22.0 s | flood then raw insert: 18.0 s | 1.22x | **no** |",
            "| Consumer alone at 80% or more of the raw insert | 1,000,000 rows/s | raw insert: 1,250,000 rows/s | 80% | yes |",
        ] {
            assert!(md.contains(want), "{want:?} missing from\n{md}");
        }
    }

    #[test]
    fn every_figure_stands_beside_its_baseline_and_ratio() {
        let md = report().markdown();
        for want in [
            "| Producer rows/s, in the pipeline | 500,000 | plain rdkafka flood of the same messages: 1,000,000 | 50% |",
            "| Producer rows/s, alone | 800,000 |",
            "| Consumer rows/s, in the pipeline | 500,000 | raw ClickHouse insert of the same rows from memory: 1,250,000 | 40% |",
            "small-batch consumer (insert and commit each poll's messages, up to 5,000 per insert): 200,000 | 2.50x |",
            "| End-to-end time, first row produced to lag 0 | 22.0 s | flood then raw insert of the same rows, one after the other: 10.0 s + 8.0 s = 18.0 s | 1.22x |",
            "| Peak consumer lag | 1,000,000 rows | a consumer that starts after the producer: 10,000,000 rows | 10% |",
            "| Orchestrator time per `command` task running `true` (a chain of 200) | 4.0 ms | spawning `true` from a plain loop: 1.0 ms | 4.00x |",
            "| Orchestrator overhead per task: a chain of 1,000 `noop` tasks (scheduler and SQLite store) | 200 µs | the cheapest real task, spawning `true` from a plain loop: 1.0 ms | 20% |",
            "| Difference, `command` task minus plain spawn (within the noise of a spawn when near 0) | | 3.0 ms |",
            "| CPU | 2 cores (nproc), cpu |",
            "| ClickHouse | 18.16.1 |",
            "| modern | 26.9.2.1 | 1,250,000 | 1,000,000 | 80% |",
            "peer: ClickHouse's Kafka engine + materialized view into the same table layout: 500,000 | 2.00x |",
            "| Consumer peak memory (RSS) | 300 MiB reading a 3,000,000-row backlog; 320 MiB with ClickHouse frozen 20.0 s | the bound it states (`memory_bound_mb`, ARCHITECTURE.md): 400 MiB | 80% |",
            "| legacy | 18.16.1 | 1,000,000 | 800,000 | 80% |",
            "| Date | 2026-11-22 05:00:00 UTC |",
            "> shared machine",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
    }

    #[test]
    fn json_and_protobuf_stand_side_by_side() {
        let md = report().markdown();
        for want in [
            "## Record formats: JSON and protobuf",
            "| producer alone, rows/s | 800,000 | 1,000,000 | 1.25x |",
            "| plain flood of the same messages (producer baseline), rows/s | 1,000,000 | 1,250,000 | 1.25x |",
            "| record size, bytes | 400 | 120 | 0.30x |",
            "| consumer: decode alone (one thread), rows/s | 2,000,000 | 5,000,000 | 2.50x |",
            "| consumer alone, rows/s | 1,000,000 | 1,250,000 | 1.25x |",
            "| peer: ClickHouse Kafka engine, rows/s | 500,000 | 1,000,000 | 2.00x |",
            "Consumer alone on protobuf against the raw-insert ceiling: 100%.",
            "Producer alone on protobuf against the plain flood of its messages: 80% (JSON: 80%).",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
        let mut json_only = report();
        json_only.producer.as_mut().unwrap().alone_protobuf = None;
        json_only.consumer.as_mut().unwrap().protobuf = None;
        assert!(!json_only.markdown().contains("Record formats"));
    }

    #[test]
    fn the_44m_estimate_scales_the_data_time_and_keeps_the_fixed_part() {
        let e = report().estimate_reference().unwrap();
        assert!((e.data_seconds - 22.0 * 4.4).abs() < 1e-9);
        assert!((e.total_seconds - (22.0 * 4.4 + 8.0)).abs() < 1e-9);
        assert!((e.slowest_stage_seconds - 88.0).abs() < 1e-9);
        assert_eq!(
            e.broker_rss,
            Some((1u64 << 30) + (4.4 * (3u64 << 30) as f64).round() as u64)
        );
        let md = report().markdown();
        assert!(md.contains("| **Whole DAG run** | **104.8 s** |"), "{md}");
    }

    #[test]
    fn a_measured_44m_run_stands_beside_the_estimate() {
        let mut r = report();
        let mut big = r.pipeline.clone().unwrap();
        big.rows_produced = REFERENCE_ROWS;
        big.rows_in_clickhouse = REFERENCE_ROWS;
        big.run_seconds = 130.0;
        big.data_seconds = 120.0;
        r.extra_pipelines.push(big);
        let md = r.markdown();
        assert!(
            md.contains("a run of the DAG at 44,000,000 rows took **2 min 10 s** (2 min 0 s from"),
            "{md}"
        );
        assert!(
            md.contains("| 44,000,000 | 2 min 10 s | 2 min 0 s |"),
            "{md}"
        );
        assert!(md.contains("| 10,000,000 | 30.0 s | 22.0 s |"), "{md}");
    }

    #[test]
    fn a_report_survives_its_json_for_rendering_again() {
        let r = report();
        let json = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.markdown(), r.markdown());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(44_000_000), "44,000,000");
        assert_eq!(duration(0.0005), "500 µs");
        assert_eq!(duration(0.25), "250.0 ms");
        assert_eq!(duration(125.0), "2 min 5 s");
        assert_eq!(duration(f64::NAN), "n/a");
        assert_eq!(percent(1.0, 400.0), "0.25%");
        assert_eq!(percent(1.0, 100_000.0), "<0.01%");
        assert_eq!(percent(1.0, 4.0), "25%");
        assert_eq!(gib(512 << 20), "512 MiB");
        assert_eq!(gib(3 << 29), "1.5 GiB");
    }

    #[test]
    fn missing_phases_leave_their_rows_out() {
        let mut r = report();
        r.consumer = None;
        r.producer = None;
        let md = r.markdown();
        assert!(md.contains("(baselines not run)"));
        assert!(!md.contains("Producer rows/s"));
    }
}
