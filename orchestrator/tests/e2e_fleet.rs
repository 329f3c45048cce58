//! End to end: the benchmark DAG with a fleet of three consumers in one group
//! (`--param consumers=3`), run by the `orchestrator` binary against a fresh broker and
//! ClickHouse. One consumer is SIGKILLed while rows flow; the group rebalances its partitions to
//! the other two, the lag still drains to 0, the table holds exactly the rows produced, the stop
//! task names the dead replica, and no process of the run is left.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use orchestrator::store::{RunFilter, SqliteStore, Store, TaskState};
use velostream_testkit::{Infra, free_port_block, repo_root, taxi_sample, wait_for};

/// Rows the producer sends: the 100k-row sample 6 times, enough to kill a consumer mid-stream.
const ROWS: u64 = 600_000;
const PARTITIONS: u32 = 6;

/// The workspace binaries the DAG spawns, next to the orchestrator binary under test.
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

/// `127.0.0.1:NNNN` such that `NNNN0`, `NNNN1` and `NNNN2` are free: the replicas' HTTP ports
/// are this prefix followed by `{{ replica }}`.
/// The test's topic.
const TOPIC: &str = "fleet-taxi";

/// `velostream_consumer_assigned_partitions` of the consumer serving `addr`, once it answers and
/// once it reads this test's topic (ports picked the same way by another test's fleet may answer
/// for a moment before this run's consumers take them).
fn assigned(addr: &str) -> Option<u64> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    if !body.contains(&format!("topic=\"{TOPIC}\"")) {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix("velostream_consumer_assigned_partitions "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The pid of the velostream program with `arg` among its arguments.
fn pid_with_arg(arg: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let ours = String::from_utf8_lossy(args.first()?).contains("velostream-consumer");
            (ours && args.contains(&arg.as_bytes()))
                .then(|| entry.file_name().to_str()?.parse().ok())
                .flatten()
        })
}

#[test]
fn three_consumers_one_killed_mid_run_rebalance_and_leave_the_exact_count() {
    pipeline_binaries_present();
    let infra = Infra::start();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state.db");
    let prefix = free_port_block(3);
    let addr = |replica: u32| format!("{prefix}{replica}");
    let table = "fleet_trips";
    let params = [
        "local_infra=false".to_string(),
        format!("input={}", taxi_sample().display()),
        format!("repeat={}", ROWS / 100_000),
        "consumers=3".into(),
        format!("consumer_http={prefix}{{{{ replica }}}}"),
        format!("topic={TOPIC}"),
        format!("table={table}"),
        "group=fleet-group".into(),
        format!("partitions={PARTITIONS}"),
        // Small batches: rows reach ClickHouse steadily while the consumer is killed.
        "batch_rows=10000".into(),
        "batch_ms=100".into(),
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    cmd.arg("run")
        .arg(repo_root().join("dags/velostream_benchmark.toml"))
        .arg("--no-progress")
        .arg("--state")
        .arg(&state);
    for p in &params {
        cmd.args(["--param", p]);
    }
    let stdout = std::fs::File::create(scratch.path().join("run.out")).unwrap();
    let mut orchestrator = cmd
        .env("KAFKA_BROKERS", &infra.kafka.bootstrap)
        .env("CLICKHOUSE_URL", &infra.clickhouse.http_url)
        .env("CLICKHOUSE_USER", infra.clickhouse.user)
        .env("CLICKHOUSE_PASSWORD", infra.clickhouse.password)
        .env("CLICKHOUSE_DATABASE", "default")
        .current_dir(scratch.path())
        .stdout(stdout.try_clone().unwrap())
        .stderr(stdout)
        .spawn()
        .unwrap();
    // None until the run has created the table.
    let count_final = || {
        infra
            .clickhouse
            .try_query(&format!(
                "SELECT count() FROM {table} FINAL SETTINGS max_threads = 1"
            ))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    };

    // All three own partitions of the group and rows are flowing: kill replica 1.
    let owned = wait_for(
        "three consumers sharing the partitions while rows flow",
        Duration::from_secs(60),
        || {
            let owned: Vec<u64> = (0..3).map(|r| assigned(&addr(r))).collect::<Option<_>>()?;
            let flowing = count_final().is_some_and(|n| n > 0);
            (owned.iter().all(|&n| n > 0)
                && owned.iter().sum::<u64>() == u64::from(PARTITIONS)
                && flowing)
                .then_some(owned)
        },
    );
    let victim = pid_with_arg(&addr(1)).expect("replica 1's process");
    let rows_before_kill = count_final().unwrap();
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    assert!(
        rows_before_kill < ROWS,
        "every row was in before the kill; the test needs more rows"
    );

    // The group rebalances: the two left own every partition.
    let survivors = wait_for(
        "the two survivors to own every partition",
        Duration::from_secs(60),
        || {
            let (a, c) = (assigned(&addr(0))?, assigned(&addr(2))?);
            (a + c == u64::from(PARTITIONS)).then_some((a, c))
        },
    );
    let status = wait_for("the run to end", Duration::from_secs(120), || {
        orchestrator.try_wait().unwrap()
    });
    let log = std::fs::read_to_string(scratch.path().join("run.out")).unwrap();
    assert!(
        !status.success(),
        "a killed consumer fails the stop task, so the run: {log}"
    );

    let store = SqliteStore::open(&state).unwrap();
    let run = store.runs(&RunFilter::default()).unwrap().remove(0);
    let tasks = store.task_instances(&run.run_id).unwrap();
    let task = |id: &str| tasks.iter().find(|t| t.task_id == id).unwrap();
    for id in ["start_consumer", "produce", "wait_lag_zero"] {
        assert_eq!(task(id).state, TaskState::Success, "{id}: {log}");
    }
    let stop = task("stop_consumer");
    assert_eq!(stop.state, TaskState::Failed);
    let error = stop.error.clone().unwrap_or_default();
    assert!(
        error.contains("replica 1 (pid")
            && error.contains("had already died before process.stop: killed by SIGKILL"),
        "{error}"
    );
    // A failed try keeps its outputs (the task instance keeps only a success's).
    let stop_try = store
        .tries(&run.run_id, "stop_consumer")
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        stop_try.outputs.get("exit_codes"),
        Some(&serde_json::json!([0, 137, 0])),
        "{:?}",
        stop_try.outputs
    );
    let by_replica = stop_try.outputs["by_replica"].as_array().unwrap();
    let inserted = |r: usize| by_replica[r]["rows_inserted"].as_u64().unwrap_or(0);
    assert!(inserted(0) > 0 && inserted(2) > 0, "{by_replica:?}");
    assert!(
        by_replica[1].as_object().unwrap().is_empty(),
        "the killed one reported nothing"
    );
    assert_eq!(task("validate_count").state, TaskState::UpstreamFailed);

    // Exactly the rows produced: none lost with the killed consumer, none twice.
    let produced = task("produce").outputs["rows"].as_u64().unwrap();
    assert_eq!(produced, ROWS);
    assert_eq!(count_final(), Some(ROWS));
    assert_eq!(
        infra.clickhouse.query_u64(&format!(
            "SELECT uniqExact(_partition, _offset) FROM {table}"
        )),
        ROWS
    );
    // No process of the run is left, and none is recorded.
    for r in 0..3 {
        assert_eq!(pid_with_arg(&addr(r)), None, "replica {r} left running");
    }
    assert!(store.processes(&run.run_id).unwrap().is_empty());
    eprintln!(
        "fleet: partitions owned {owned:?} before the kill; {rows_before_kill} of {ROWS} rows in when replica 1 was killed; \
         survivors then owned {survivors:?}; rows inserted by the survivors' summaries {} + {} (rows read twice around the \
         rebalance included); count() FINAL {ROWS}",
        inserted(0),
        inserted(2)
    );
}
