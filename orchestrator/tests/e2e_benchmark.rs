//! End to end: the product's DAGs (`dags/velostream_benchmark.toml`, `dags/velostream_lag_demo.toml`)
//! run by the `orchestrator` binary against a fresh broker and ClickHouse from the test harness,
//! with the real NYC-taxi sample, the real producer and the real consumer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use velostream_testkit::{Infra, free_port, repo_root, taxi_sample};

/// The workspace binaries the DAGs spawn, next to the orchestrator binary under test.
fn pipeline_binaries_present() {
    let dir = Path::new(env!("CARGO_BIN_EXE_orchestrator"))
        .parent()
        .unwrap()
        .to_path_buf();
    for name in ["velostream-producer", "velostream-consumer"] {
        assert!(
            dir.join(name).is_file(),
            "{name} is not built in {}: run `cargo build --workspace --bins` first (`make test` does)",
            dir.display()
        );
    }
}

struct Run {
    output: Output,
    state: PathBuf,
    /// `127.0.0.1:port` of the run's consumer, which names it on its command line.
    consumer_http: String,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn explain(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.output.status.code(),
            self.stdout(),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    /// `orchestrator <args> --state <this run's state>`.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(args)
            .arg("--state")
            .arg(&self.state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "orchestrator {args:?} failed: {out:?}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The final state of `task`, from `orchestrator runs`' latest run's task table.
    fn task_state(&self, task: &str) -> String {
        let table = self.stdout();
        let row = table
            .lines()
            .rev()
            .find(|l| l.split_whitespace().next() == Some(task))
            .unwrap_or_else(|| panic!("no row for {task} in the summary:\n{table}"));
        row.split_whitespace().nth(1).unwrap().to_owned()
    }
}

/// Runs `dag` against `infra` with extra `--param`s, the consumer's HTTP server on a free port.
fn run_dag(infra: &Infra, dag: &str, params: &[String], scratch: &Path) -> Run {
    let state = scratch.join("state.db");
    let consumer_http = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    cmd.arg("run")
        .arg(repo_root().join("dags").join(dag))
        .arg("--state")
        .arg(&state)
        .args(["--param", "local_infra=false"])
        .args(["--param", &format!("input={}", taxi_sample().display())])
        .args(["--param", &format!("consumer_http={consumer_http}")]);
    for p in params {
        cmd.args(["--param", p]);
    }
    cmd.env("KAFKA_BROKERS", &infra.kafka.bootstrap)
        .env("CLICKHOUSE_URL", &infra.clickhouse.http_url)
        .env("CLICKHOUSE_USER", infra.clickhouse.user)
        .env("CLICKHOUSE_PASSWORD", infra.clickhouse.password)
        .env("CLICKHOUSE_DATABASE", "default")
        .current_dir(scratch);
    Run {
        output: cmd.output().unwrap(),
        state,
        consumer_http,
    }
}

/// No process of the run is left: no velostream program whose command line names `marker`.
fn no_pipeline_process_left(marker: &str) {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(marker) && text.contains("velostream-") {
            left.push(text);
        }
    }
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}

#[test]
fn benchmark_dag_moves_the_sample_exactly_once_and_twice_in_a_row() {
    pipeline_binaries_present();
    let infra = Infra::start();
    let scratch = tempfile::tempdir().unwrap();
    let topic = "e2e-taxi";
    let params = [format!("topic={topic}"), "table=e2e_trips".to_string()];
    // Another pipeline's offset records in the same database: a run for e2e_trips must leave them.
    let offsets_ddl: Vec<&str> =
        include_str!("../../infrastructure/clickhouse/consumer_offsets.sql")
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect();
    infra.clickhouse.query(&offsets_ddl.join("\n"));
    infra.clickhouse.query(
        "INSERT INTO velostream_consumer_offsets (target_table, topic, kafka_partition, next_offset, group_id) \
         VALUES ('other_trips', 'other-topic', 0, 4242, 'other-group')",
    );

    // The second run writes protobuf records (the DAG's `format` param); the consumer tells them
    // apart by itself.
    for (attempt, format) in [(1, "json"), (2, "protobuf")] {
        let mut params = params.to_vec();
        params.push(format!("format={format}"));
        let run = run_dag(&infra, "velostream_benchmark.toml", &params, scratch.path());
        assert!(
            run.output.status.success(),
            "run {attempt}: {}",
            run.explain()
        );
        for task in [
            "create_topic",
            "start_consumer",
            "produce",
            "wait_lag_zero",
            "stop_consumer",
            "validate_count",
            "report",
        ] {
            assert_eq!(run.task_state(task), "success", "run {attempt}: {task}");
        }
        // Exactly the sample, none lost, none twice, after a re-provisioning second run too.
        assert_eq!(
            infra
                .clickhouse
                .query_u64("SELECT count() FROM e2e_trips FINAL"),
            100_000
        );
        assert_eq!(
            infra.clickhouse.query_u64("SELECT count() FROM e2e_trips"),
            100_000,
            "no duplicate even before merges"
        );
        // The report's figures came from the producer, ClickHouse and the sensor.
        let runs = run.cli(&["runs", "velostream_benchmark"]);
        let run_id = runs
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no run listed:\n{runs}"))
            .to_owned();
        assert!(runs.lines().nth(1).unwrap().contains("success"), "{runs}");
        let report = run.cli(&["logs", &run_id, "report"]);
        assert!(report.contains("rows produced          100000"), "{report}");
        assert!(report.contains("rows in ClickHouse     100000"), "{report}");
        assert!(report.contains("peak consumer lag"), "{report}");
        no_pipeline_process_left(&run.consumer_http);
        // Only this pipeline's state was touched: the other's offsets stay, and no table but
        // the one asked for was created.
        assert_eq!(
            infra.clickhouse.query_u64(
                "SELECT max(next_offset) FROM velostream_consumer_offsets WHERE target_table = 'other_trips'"
            ),
            4242,
            "run {attempt}"
        );
        assert_eq!(
            infra
                .clickhouse
                .query_u64("SELECT count() FROM system.tables WHERE name = 'taxi_trips'"),
            0,
            "run {attempt}"
        );
    }
    // The sample's first trip made it through with its values.
    let first = infra.clickhouse.query(
        "SELECT VendorID, toString(tpep_pickup_datetime), PULocationID FROM e2e_trips FINAL \
         ORDER BY tpep_pickup_datetime, _partition, _offset LIMIT 1",
    );
    assert!(first.starts_with(['1', '2']), "{first}");
}

#[test]
fn a_failing_producer_still_stops_the_consumer_and_fails_the_run() {
    pipeline_binaries_present();
    let infra = Infra::start();
    let scratch = tempfile::tempdir().unwrap();
    let missing = scratch.path().join("no-such-file.parquet");
    let mut run = run_dag(
        &infra,
        "velostream_benchmark.toml",
        &["topic=e2e-fail".into(), "table=e2e_fail".into()],
        scratch.path(),
    );
    assert!(run.output.status.success(), "{}", run.explain());
    // Now the same DAG with an input that does not exist: the producer fails.
    run = {
        let state = run.state.clone();
        let r = run_dag(
            &infra,
            "velostream_benchmark.toml",
            &[
                "topic=e2e-fail".into(),
                "table=e2e_fail".into(),
                format!("input={}", missing.display()),
            ],
            scratch.path(),
        );
        assert_eq!(r.state, state, "both runs share one state file");
        r
    };
    assert!(!run.output.status.success(), "{}", run.explain());
    assert_eq!(run.task_state("produce"), "failed");
    assert_eq!(run.task_state("wait_lag_zero"), "upstream_failed");
    assert_eq!(
        run.task_state("stop_consumer"),
        "success",
        "the cleanup runs"
    );
    assert_eq!(run.task_state("validate_count"), "upstream_failed");
    let produce_log = {
        let runs = run.cli(&["runs", "velostream_benchmark"]);
        let failed = runs
            .lines()
            .find(|l| l.contains("failed"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no failed run:\n{runs}"))
            .to_owned();
        run.cli(&["logs", &failed, "produce"])
    };
    assert!(
        produce_log.contains("no-such-file.parquet"),
        "the producer names the missing file: {produce_log}"
    );
    no_pipeline_process_left(&run.consumer_http);
}

#[test]
fn lag_demo_builds_up_lag_and_drains_it() {
    pipeline_binaries_present();
    let infra = Infra::start();
    let scratch = tempfile::tempdir().unwrap();
    let run = run_dag(
        &infra,
        "velostream_lag_demo.toml",
        &["repeat=3".into(), "consumer_delay=2".into()],
        scratch.path(),
    );
    assert!(run.output.status.success(), "{}", run.explain());
    assert_eq!(
        infra
            .clickhouse
            .query_u64("SELECT count() FROM taxi_trips_lag FINAL"),
        300_000
    );
    let runs = run.cli(&["runs", "velostream_lag_demo"]);
    let run_id = runs
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let report = run.cli(&["logs", &run_id, "report"]);
    let peak: u64 = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("peak consumer lag"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak lag in the report:\n{report}"));
    assert!(
        peak > 150_000,
        "the late consumer let lag build up to most of the 300,000 rows, got {peak}:\n{report}"
    );
}
