//! Inputs the producer must refuse before sending anything (a missing required column, a
//! truncated file, a file that is not Parquet: each message names the file), and inputs it must
//! take: directories, globs and files of several TLC years in one run.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;
use velostream_producer::encode::EncodeOptions;
use velostream_producer::generate::{FileCompression, GenerateConfig, Layout, generate};
use velostream_producer::input::{self, SchemaCheck};
use velostream_testkit::{Kafka, taxi_sample};

fn generated(dir: &Path, name: &str, layout: Layout, rows: u64) -> PathBuf {
    let path = dir.join(name);
    let config = GenerateConfig {
        rows,
        layout,
        seed: rows,
        row_group_rows: 10_000,
        compression: FileCompression::Snappy,
    };
    generate(&path, &config).unwrap();
    path
}

/// A taxi file without `tpep_pickup_datetime`.
fn missing_column(dir: &Path) -> PathBuf {
    let full = generated(dir, "full.parquet", Layout::Y2024, 100);
    let file = input::open(&full, SchemaCheck::Taxi, &EncodeOptions::default()).unwrap();
    let batch = file.reader(1000).unwrap().next().unwrap().unwrap();
    let keep: Vec<usize> = (0..batch.num_columns()).filter(|&i| i != 1).collect();
    let path = dir.join("no_pickup.parquet");
    write_parquet(&path, &batch.project(&keep).unwrap());
    path
}

/// The first half of the real sample.
fn truncated(dir: &Path) -> PathBuf {
    let bytes = std::fs::read(taxi_sample()).unwrap();
    let path = dir.join("cut.parquet");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    path
}

/// A CSV file with a .parquet name.
fn not_parquet(dir: &Path) -> PathBuf {
    let path = dir.join("trips.parquet");
    std::fs::write(
        &path,
        "VendorID,tpep_pickup_datetime\n1,2023-01-01 00:00:00\n",
    )
    .unwrap();
    path
}

fn problem(path: &Path) -> String {
    input::open(path, SchemaCheck::Taxi, &EncodeOptions::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn each_bad_file_is_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        problem(&missing_column(dir.path()))
            .starts_with("missing required column tpep_pickup_datetime (the file has: VendorID, tpep_dropoff_datetime"),
        "{}",
        problem(&missing_column(dir.path()))
    );
    assert_eq!(
        problem(&truncated(dir.path())),
        format!(
            "truncated Parquet file: it starts like Parquet but has no footer ({} bytes); copy or download it again",
            std::fs::metadata(taxi_sample()).unwrap().len() / 2
        )
    );
    assert_eq!(
        problem(&not_parquet(dir.path())),
        "not a Parquet file (it does not start or end with the `PAR1` magic bytes)"
    );
    let empty = dir.path().join("empty.parquet");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        problem(&empty),
        "the file is empty (0 bytes); nothing to send: give a Parquet file with rows"
    );
}

#[test]
fn bad_inputs_fail_before_anything_is_sent_naming_every_file() {
    let kafka = Kafka::start();
    create_topic(&kafka.bootstrap, "guarded", 1);
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        missing_column(dir.path()),
        truncated(dir.path()),
        not_parquet(dir.path()),
    ];
    let output = run(producer()
        .args(["--brokers", &kafka.bootstrap, "--topic", "guarded"])
        // The good file first: it must not be sent either.
        .arg(taxi_sample())
        .args(&bad));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("3 problems with the inputs"), "{stderr}");
    for (path, what) in bad.iter().zip([
        "missing required column tpep_pickup_datetime",
        "truncated Parquet file",
        "not a Parquet file",
    ]) {
        assert!(
            stderr.contains(&format!("{}: {what}", path.display())),
            "{what} for {}: {stderr}",
            path.display()
        );
    }
    assert!(velostream_lines(&output.stdout).is_empty());

    // Nothing was sent: the first message in the topic is one we send now.
    send_marker(&kafka.bootstrap, "guarded", "marker");
    let messages = consume(&kafka.bootstrap, "guarded", 1, Duration::from_secs(60));
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].1, b"marker");
}

#[test]
fn missing_paths_and_empty_globs_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.parquet");
    let glob = format!("{}/*.parquet", dir.path().display());
    let output = run(producer()
        .args(["--topic", "t", "--brokers", "127.0.0.1:1"])
        .arg(&missing)
        .arg(&glob));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}: no such file or directory", missing.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("`{glob}` matches no Parquet file")),
        "{stderr}"
    );
    // Stderr is a pipe here (a DAG's log): no colour codes, and the error is said once.
    assert!(!stderr.contains('\u{1b}'), "ANSI escapes in {stderr:?}");
    assert_eq!(
        stderr.matches("no such file or directory").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn a_directory_and_a_glob_of_several_tlc_years_go_out_in_one_run() {
    let kafka = Kafka::start();
    let dir = tempfile::tempdir().unwrap();
    let years = dir.path().join("years");
    std::fs::create_dir(&years).unwrap();
    generated(&years, "a_2023.parquet", Layout::Y2023, 3_000);
    generated(&years, "b_2024.parquet", Layout::Y2024, 2_000);
    generated(&years, "c_2025.parquet", Layout::Y2025, 1_000);
    std::fs::write(years.join("README.txt"), "not an input").unwrap();
    // A lower-cased 2024 copy, elsewhere, named by a glob.
    let lower = dir.path().join("lower");
    std::fs::create_dir(&lower).unwrap();
    let src = generated(&lower, "src.tmp", Layout::Y2024, 500);
    let file = input::open(&src, SchemaCheck::Taxi, &EncodeOptions::default()).unwrap();
    let batch = file.reader(1000).unwrap().next().unwrap().unwrap();
    let fields: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_name(f.name().to_lowercase()))
        .collect();
    let lowered = arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        batch.columns().to_vec(),
    )
    .unwrap();
    write_parquet(&lower.join("yellow_lower.parquet"), &lowered);

    let output = run(producer()
        .args([
            "--brokers",
            &kafka.bootstrap,
            "--topic",
            "years",
            "--create-topic",
        ])
        .arg(&years)
        .arg(format!("{}/yellow_*.parquet", lower.display())));
    assert!(output.status.success(), "exit {:?}", output.status);
    let out = output_of(&output.stdout);
    assert_eq!(out["rows"], 6_500);
    assert_eq!(out["files"], 4);

    let messages = consume(&kafka.bootstrap, "years", 6_500, Duration::from_secs(60));
    assert_eq!(messages.len(), 6_500);
    let rows: Vec<Value> = messages
        .iter()
        .map(|(_, p)| serde_json::from_slice(p).unwrap())
        .collect();
    let with = |key: &str| rows.iter().filter(|v| v.get(key).is_some()).count();
    assert_eq!(
        with("airport_fee"),
        3_500,
        "2023 spelling, and the lower-cased copy"
    );
    assert_eq!(with("Airport_fee"), 3_000, "2024 and 2025 spelling");
    assert_eq!(with("cbd_congestion_fee"), 1_000, "2025 only");
    assert_eq!(
        with("pulocationid"),
        500,
        "lower-cased copy keeps its names"
    );
    // Keys come from PULocationID whatever its case or integer width.
    for ((key, _), v) in messages.iter().zip(&rows) {
        let id = v
            .get("PULocationID")
            .or_else(|| v.get("pulocationid"))
            .unwrap();
        assert_eq!(key.as_deref(), Some(id.to_string().as_bytes()));
    }
    // 2024+ passenger counts are integers (or null), 2023's are floats.
    assert!(
        rows.iter()
            .any(|v| v.get("cbd_congestion_fee").is_some() && v["passenger_count"].is_i64())
    );
    assert!(
        rows.iter()
            .any(|v| v.get("cbd_congestion_fee").is_some() && v["passenger_count"].is_null())
    );
    assert!(
        rows.iter()
            .any(|v| v.get("airport_fee").is_some() && v["passenger_count"].is_f64())
    );
}
