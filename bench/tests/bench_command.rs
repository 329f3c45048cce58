//! `velostream-bench` end to end at a small size: every phase runs against fresh servers from the
//! test harness (producer-bench, consumer-bench, the orchestrator's task chains, the benchmark DAG)
//! and the report has every figure beside its baseline and a ratio, the 44M estimate, the machine
//! and the versions. Figures are checked for what they count (rows), never for speed.

mod common;

use std::process::Command;

use common::{program, programs_dir};
use serde_json::Value;

const ROWS: u64 = 100_000;

/// The line of the summary table whose first cell is `figure`.
fn summary_row<'a>(md: &'a str, figure: &str) -> &'a str {
    md.lines()
        .find(|l| l.starts_with(&format!("| {figure} |")))
        .unwrap_or_else(|| panic!("no summary row {figure:?} in\n{md}"))
}

/// The cells of a table row.
fn cells(row: &str) -> Vec<&str> {
    row.trim_matches('|').split('|').map(str::trim).collect()
}

#[test]
fn the_bench_command_measures_every_phase_beside_its_baseline() {
    for name in [
        "orchestrator",
        "velostream-producer",
        "velostream-consumer",
        "producer-bench",
        "consumer-bench",
    ] {
        program(name);
    }
    let scratch = tempfile::tempdir().unwrap();
    let md_path = scratch.path().join("BENCHMARKS.md");
    let json_path = scratch.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_velostream-bench"))
        .args(["--rows", &ROWS.to_string(), "--no-build"])
        .args(["--partitions", "3", "--batch-rows", "50000"])
        .args(["--command-tasks", "20", "--noop-tasks", "100"])
        .args(["--small-batch-rows", "20000", "--producer-rounds", "1"])
        .args(["--memory-freeze", "2s"])
        .args(["--note", "integration test run"])
        .arg("--output")
        .arg(&md_path)
        .arg("--json")
        .arg(&json_path)
        .arg("--work-dir")
        .arg(scratch.path().join("work"))
        .env_remove("KAFKA_BROKERS")
        .env_remove("CLICKHOUSE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "velostream-bench failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(&md_path).unwrap();
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();

    // The pipeline moved exactly the rows, validated by the DAG's count.
    let pipeline = &report["pipeline"];
    assert_eq!(pipeline["rows_produced"], ROWS, "{pipeline:#}");
    assert_eq!(pipeline["broker_storage"], "memory");
    // The same DAG on a durable broker, beside it.
    let durable = &report["durable_pipeline"];
    assert_eq!(durable["broker_storage"], "durable", "{durable:#}");
    assert_eq!(durable["rows_produced"], ROWS, "{durable:#}");
    assert_eq!(durable["rows_in_clickhouse"], ROWS, "{durable:#}");
    assert_eq!(pipeline["rows_in_clickhouse"], ROWS);
    assert_eq!(pipeline["rows_dead_lettered"], 0);
    assert_eq!(pipeline["consumer"]["rows"], ROWS);
    assert!(pipeline["peak_lag_sensor"].as_u64().unwrap() <= ROWS);
    let tasks: Vec<&str> = pipeline["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    for task in [
        "produce",
        "wait_lag_zero",
        "stop_consumer",
        "validate_count",
    ] {
        assert!(tasks.contains(&task), "{task} missing from {tasks:?}");
    }
    // The scraper saw the consumer's metrics during the run.
    assert!(pipeline["inserts"].as_u64().unwrap() >= 1, "{pipeline:#}");

    // Each baseline ran at the same size.
    assert_eq!(report["producer"]["flood"]["rows"], ROWS);
    assert_eq!(report["producer"]["alone"]["rows"], ROWS);
    assert_eq!(report["consumer"]["raw_insert"]["rows"], ROWS);
    assert_eq!(report["consumer"]["alone"]["rows"], ROWS);
    assert_eq!(report["consumer"]["small_batch"]["rows"], 20_000);
    // Both record formats, on the same rows.
    assert_eq!(report["producer"]["alone_protobuf"]["rows"], ROWS);
    assert_eq!(report["producer"]["flood_protobuf"]["rows"], ROWS);
    let protobuf = &report["consumer"]["protobuf"];
    assert_eq!(protobuf["alone"]["rows"], ROWS, "{protobuf:#}");
    assert!(protobuf["protobuf_bytes_per_row"].as_u64().unwrap() > 0);
    // The consumer binary's peak memory, with and without a frozen ClickHouse.
    let memory = &report["consumer"]["memory"];
    assert_eq!(memory["rows"], ROWS, "{memory:#}");
    assert!(memory["backlog_bytes"].as_u64().unwrap() > 0);
    assert!(memory["frozen_bytes"].as_u64().unwrap() > 0);
    assert!(memory["bound_bytes"].as_u64().unwrap() > 0);
    assert_eq!(report["overhead"]["command_tasks"], 20);
    assert_eq!(report["overhead"]["noop_tasks"], 100);
    for rate in [
        &report["producer"]["flood"],
        &report["producer"]["alone"],
        &report["consumer"]["raw_insert"],
        &report["consumer"]["small_batch"],
        &report["consumer"]["alone"],
        &pipeline["producer"],
        &pipeline["consumer"],
        &durable["producer"],
        &durable["consumer"],
    ] {
        assert!(rate["seconds"].as_f64().unwrap() > 0.0, "{rate}");
    }

    // CPU per row: every process's seconds in the DAG run and alone, and a profile of each
    // process alone (perf is installed by `velostream-local install --for-tests`).
    let cpu_of = |run: &serde_json::Value, process: &str| {
        run["cpu"][process]
            .as_f64()
            .unwrap_or_else(|| panic!("no {process} CPU in {run:#}"))
    };
    let dag_cpu = &pipeline["cpu"];
    assert_eq!(dag_cpu["rows"], ROWS, "{dag_cpu:#}");
    for process in ["producer", "broker", "consumer", "clickhouse"] {
        assert!(cpu_of(dag_cpu, process) > 0.0, "{process}: {dag_cpu:#}");
    }
    let alone = &report["cpu"];
    assert_eq!(alone["producer_alone"]["rows"], ROWS, "{alone:#}");
    assert_eq!(alone["consumer_alone"]["rows"], ROWS, "{alone:#}");
    assert!(cpu_of(&alone["producer_alone"], "producer") > 0.0);
    assert!(cpu_of(&alone["producer_alone"], "broker") > 0.0);
    for process in ["consumer", "broker", "clickhouse"] {
        assert!(cpu_of(&alone["consumer_alone"], process) > 0.0, "{alone:#}");
    }
    assert_eq!(alone["no_profile"], serde_json::Value::Null, "{alone:#}");
    let profiled: Vec<&str> = alone["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["frames"].as_array().unwrap().is_empty())
        .map(|p| p["process"].as_str().unwrap())
        .collect();
    assert_eq!(
        profiled,
        ["producer", "broker", "consumer", "broker", "ClickHouse"],
        "{alone:#}"
    );
    assert!(md.contains("## CPU per row"), "{md}");
    assert!(md.contains("### Where the CPU goes"), "{md}");
    assert!(md.contains("## Goals"), "{md}");
    // The DAG ran again with protobuf records: exactly the rows, its CPU and its goals beside JSON's.
    let protobuf = &report["protobuf_pipeline"];
    assert_eq!(protobuf["format"], "protobuf", "{protobuf:#}");
    assert_eq!(protobuf["rows_in_clickhouse"], ROWS, "{protobuf:#}");
    assert!(cpu_of(&protobuf["cpu"], "consumer") > 0.0, "{protobuf:#}");
    assert_eq!(pipeline["format"], "json");
    for row in [
        "| The same with protobuf records |",
        "| 44,000,000 rows under 90.0 s (stretch: 60.0 s), protobuf records |",
        "benchmark DAG, protobuf records (",
    ] {
        assert!(md.contains(row), "{row:?} missing from\n{md}");
    }

    // The fleet drained the same filled topic with 1, 2 and 3 consumers, exactly each time.
    let fleet = report["fleet"]["runs"].as_array().unwrap();
    assert_eq!(fleet.len(), 3, "{fleet:?}");
    for (i, run) in fleet.iter().enumerate() {
        assert_eq!(run["consumers"], i as u64 + 1, "{run:#}");
        assert_eq!(run["rows"], ROWS, "{run:#}");
        assert_eq!(run["rows_inserted"].as_array().unwrap().len(), i + 1);
        assert!(run["active_seconds"].as_f64().unwrap() > 0.0, "{run:#}");
        assert!(run["cpu"]["consumers"].as_f64().unwrap() > 0.0, "{run:#}");
    }
    assert!(
        md.contains("## A consumer fleet on the same partitions"),
        "{md}"
    );
    // The durable broker's row stands beside the memory broker's, with the ratio.
    let storage = md
        .split("## The broker's storage: durable against memory")
        .nth(1)
        .unwrap_or_else(|| panic!("no storage section in\n{md}"));
    for figure in [
        "Producer rows/s, in the pipeline",
        "Consumer rows/s, in the pipeline",
        "First row produced to lag 0",
    ] {
        let row = cells(summary_row(storage, figure));
        assert_eq!(row.len(), 4, "{row:?}");
        assert!(row[3].ends_with('x'), "no ratio in {row:?}");
    }

    // Every summary figure stands beside a baseline and a ratio.
    for figure in [
        "Producer rows/s, in the pipeline",
        "Producer rows/s, alone",
        "Consumer rows/s, in the pipeline",
        "Consumer rows/s, alone (pre-filled topic)",
        "End-to-end time, first row produced to lag 0",
        "Peak consumer lag",
        "Consumer peak memory (RSS)",
        "Orchestrator time per `command` task running `true` (a chain of 20)",
        "Orchestrator overhead per task: a chain of 100 `noop` tasks (scheduler and SQLite store)",
    ] {
        let row = cells(summary_row(&md, figure));
        assert_eq!(row.len(), 4, "{row:?}");
        assert!(!row[1].is_empty() && row[1] != "n/a", "{row:?}");
        assert!(row[2].contains(':'), "no baseline in {row:?}");
        assert!(
            row[3].ends_with('%') || row[3].ends_with('x'),
            "no ratio in {row:?}"
        );
    }
    for section in [
        "## Record formats: JSON and protobuf",
        "| consumer alone, rows/s |",
        "## How long 44M rows take",
        "| **Whole DAG run** |",
        "## Machine and versions",
        match velostream_testkit::Lane::from_env() {
            velostream_testkit::Lane::Modern => "| ClickHouse | 26.",
            velostream_testkit::Lane::Legacy => "| ClickHouse | 18.",
        },
        "| Broker | tansu",
        "| Rust | rustc ",
        "| librdkafka | ",
        "> integration test run",
        "### The benchmark DAG run",
    ] {
        assert!(md.contains(section), "{section:?} missing from\n{md}");
    }
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        md.contains(&format!("| CPU | {cores} cores (nproc)")),
        "{md}"
    );

    // The saved figures render the same report again, without measuring.
    let again = scratch.path().join("AGAIN.md");
    let out = Command::new(env!("CARGO_BIN_EXE_velostream-bench"))
        .arg("--render")
        .arg(&json_path)
        .arg("--output")
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&again).unwrap(), md);
}

#[test]
fn a_missing_program_is_named_with_the_command_that_builds_it() {
    // The bench binary alone in a folder: its siblings are missing.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("velostream-bench");
    std::fs::copy(env!("CARGO_BIN_EXE_velostream-bench"), &exe).unwrap();
    let out = Command::new(&exe)
        .args([
            "--rows",
            "1000",
            "--no-build",
            "--only",
            "overhead,pipeline",
        ])
        .arg("--output")
        .arg(dir.path().join("never.md"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "missing from {}: orchestrator, velostream-producer, velostream-consumer;",
            dir.path().display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("cargo build --release --workspace --bins"),
        "{stderr}"
    );
    assert!(!dir.path().join("never.md").exists());
    // The real folder has them (so the other tests are not fooled by this one).
    assert!(programs_dir().join("orchestrator").is_file());
}
