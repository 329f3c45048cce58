//! End to end with "real months": `dags/velostream_tlc_months.toml` run by the `orchestrator`
//! binary fetches two months from a local HTTP server that serves TLC-named files (the real
//! sample under each month's name), loads them through a fresh broker and ClickHouse from the
//! test harness, checks the exact count and reports month by month; a second run takes both
//! months from the cache.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use velostream_testkit::{Infra, free_port, repo_root, taxi_sample};

/// Serves the sample as `yellow_tripdata_2023-01.parquet` and `..._2023-02.parquet`, counting
/// downloads; returns the base URL.
fn file_server(downloads: Arc<AtomicUsize>) -> String {
    let sample = Arc::new(std::fs::read(taxi_sample()).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/trip-data", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new()
                .route(
                    "/trip-data/{name}",
                    axum::routing::get(
                        |State((sample, downloads)): State<(Arc<Vec<u8>>, Arc<AtomicUsize>)>,
                         Path(name): Path<String>| async move {
                            if name.starts_with("yellow_tripdata_2023-0") {
                                downloads.fetch_add(1, Ordering::SeqCst);
                                sample.as_ref().clone().into_response()
                            } else {
                                StatusCode::NOT_FOUND.into_response()
                            }
                        },
                    ),
                )
                .with_state((sample, downloads));
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}

#[test]
fn the_tlc_dag_fetches_months_once_and_loads_them_exactly() {
    let infra = Infra::start();
    let scratch = tempfile::tempdir().unwrap();
    let downloads = Arc::new(AtomicUsize::new(0));
    let base_url = file_server(downloads.clone());
    let state = scratch.path().join("state.db");
    for attempt in 1..=2 {
        let out = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .arg("run")
            .arg(repo_root().join("dags/velostream_tlc_months.toml"))
            .arg("--state")
            .arg(&state)
            .args([
                "--param",
                "local_infra=false",
                "--param",
                "months=2023-01..2023-02",
            ])
            .args(["--param", &format!("tlc_base_url={base_url}")])
            .args(["--param", "topic=e2e-tlc", "--param", "table=e2e_tlc"])
            .args([
                "--param",
                &format!("consumer_http=127.0.0.1:{}", free_port()),
            ])
            .env("KAFKA_BROKERS", &infra.kafka.bootstrap)
            .env("CLICKHOUSE_URL", &infra.clickhouse.http_url)
            .env("CLICKHOUSE_USER", infra.clickhouse.user)
            .env("CLICKHOUSE_PASSWORD", infra.clickhouse.password)
            .env("CLICKHOUSE_DATABASE", "default")
            .current_dir(scratch.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {attempt}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            infra
                .clickhouse
                .query_u64("SELECT count() FROM e2e_tlc FINAL"),
            200_000,
            "run {attempt}"
        );
        let logs = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["runs", "velostream_tlc_months", "--limit", "1", "--state"])
            .arg(&state)
            .output()
            .unwrap();
        let runs = String::from_utf8_lossy(&logs.stdout).into_owned();
        let run_id = runs
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no run listed:\n{runs}"));
        let report = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["logs", run_id, "report", "--state"])
            .arg(&state)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&report.stdout);
        assert!(
            report.contains("rows per month         2023-01 100000 rows, 2023-02 100000 rows"),
            "{report}"
        );
        assert!(report.contains("rows in ClickHouse     200000"), "{report}");
        let cached = if attempt == 1 { 0 } else { 2 };
        assert!(
            report.contains(&format!("{cached} from the cache")),
            "run {attempt}: {report}"
        );
        // Both months were downloaded once, by the first run.
        assert_eq!(downloads.load(Ordering::SeqCst), 2, "run {attempt}");
    }
}
