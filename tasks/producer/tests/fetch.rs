//! `velostream-producer fetch` against a local HTTP server that serves TLC-named files: months in
//! parallel and then from the cache, a connection cut midway and resumed with a Range request, a
//! truncated cached file fetched again, a month the server does not have, and no server at all.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use velostream_producer::fetch::{self, FetchConfig, FetchError, parse_months};
use velostream_producer::report::ProgressMode;

/// The month whose first download is cut halfway.
const CUT: &str = "yellow_tripdata_2023-03.parquet";

#[derive(Default)]
struct Server {
    file: Vec<u8>,
    requests: AtomicUsize,
    ranges: Mutex<Vec<String>>,
    cut_done: AtomicUsize,
}

async fn serve(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let known = ["2023-01", "2023-02", "2023-03"]
        .iter()
        .any(|m| name == format!("yellow_tripdata_{m}.parquet"));
    if !known {
        return StatusCode::NOT_FOUND.into_response();
    }
    let len = s.file.len();
    let start = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(range) => {
            s.ranges.lock().unwrap().push(range.to_owned());
            range
                .trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse::<usize>()
                .unwrap()
        }
        None => 0,
    };
    let body = s.file[start..].to_vec();
    if name == CUT && s.cut_done.fetch_add(1, Ordering::SeqCst) == 0 {
        // Announce the whole file, send half of it, then break the connection.
        let half = Bytes::from(body[..body.len() / 2].to_vec());
        let stream = futures::stream::iter(vec![
            Ok(half),
            Err(std::io::Error::other("connection cut by the test server")),
        ]);
        return Response::builder()
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let mut response = Response::builder().header(header::CONTENT_LENGTH, body.len());
    if start > 0 {
        response = response.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", len - 1),
        );
    }
    response.body(Body::from(body)).unwrap()
}

/// A server on a free port; its base URL.
async fn start() -> (Arc<Server>, String) {
    let server = Arc::new(Server {
        file: std::fs::read(velostream_testkit::taxi_sample()).unwrap(),
        ..Server::default()
    });
    let app = axum::Router::new()
        .route("/trip-data/{name}", axum::routing::get(serve))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/trip-data", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (server, url)
}

fn config(base_url: &str, cache: &std::path::Path) -> FetchConfig {
    FetchConfig {
        base_url: base_url.to_owned(),
        cache_dir: cache.to_path_buf(),
        parallel: 2,
        attempts: 3,
        timeout: Duration::from_secs(10),
        progress: ProgressMode::None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn months_download_in_parallel_and_then_come_from_the_cache() {
    let (server, url) = start().await;
    let cache = tempfile::tempdir().unwrap();
    let months = parse_months("2023-01..2023-02").unwrap();
    let fetched = fetch::fetch(&months, &config(&url, cache.path()))
        .await
        .unwrap();
    assert_eq!(fetched.len(), 2);
    for f in &fetched {
        assert!(f.downloaded, "{f:?}");
        assert_eq!(f.rows, 100_000);
        assert_eq!(std::fs::read(&f.path).unwrap(), server.file);
    }
    let asked = server.requests.load(Ordering::SeqCst);
    let again = fetch::fetch(&months, &config(&url, cache.path()))
        .await
        .unwrap();
    assert!(again.iter().all(|f| !f.downloaded));
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        asked,
        "nothing asked again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_resumed_with_a_range_request() {
    let (server, url) = start().await;
    let cache = tempfile::tempdir().unwrap();
    let fetched = fetch::fetch(
        &parse_months("2023-03").unwrap(),
        &config(&url, cache.path()),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&fetched[0].path).unwrap(), server.file);
    let ranges = server.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    let from: usize = ranges[0]
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from > 0 && from < server.file.len(), "{ranges:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_in_the_cache_is_fetched_again() {
    let (server, url) = start().await;
    let cache = tempfile::tempdir().unwrap();
    let path = cache.path().join("yellow_tripdata_2023-01.parquet");
    std::fs::write(&path, &server.file[..server.file.len() / 3]).unwrap();
    let fetched = fetch::fetch(
        &parse_months("2023-01").unwrap(),
        &config(&url, cache.path()),
    )
    .await
    .unwrap();
    assert!(fetched[0].downloaded);
    assert_eq!(std::fs::read(&path).unwrap(), server.file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_the_server_does_not_have_is_named() {
    let (_server, url) = start().await;
    let cache = tempfile::tempdir().unwrap();
    let err = fetch::fetch(
        &parse_months("2023-04").unwrap(),
        &config(&url, cache.path()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchError::NoSuchMonth { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("month 2023-04 does not exist"),
        "{message}"
    );
    assert!(message.contains("HTTP 404"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let url = format!(
        "http://127.0.0.1:{}/trip-data",
        velostream_testkit::free_port()
    );
    let err = fetch::fetch(
        &parse_months("2023-01").unwrap(),
        &config(&url, cache.path()),
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("are we offline?"), "{message}");
    assert!(
        message.contains(&cache.path().display().to_string()),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_links_the_months_into_a_directory_and_reports_them() {
    let (_server, url) = start().await;
    let cache = tempfile::tempdir().unwrap();
    let into = cache.path().join("run");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_velostream-producer"))
        .args([
            "fetch",
            "2023-01..2023-02",
            "--base-url",
            &url,
            "--progress",
            "lines",
        ])
        // As the orchestrator runs it: the connections in the environment.
        .env("KAFKA_BROKERS", "127.0.0.1:9092")
        .arg("--cache-dir")
        .arg(cache.path())
        .arg("--into")
        .arg(&into)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let output = stdout
        .lines()
        .find_map(|l| l.strip_prefix("::velostream:: {\"output\":"))
        .unwrap_or_else(|| panic!("no output line: {stdout}"));
    assert!(output.contains("\"months\":2"), "{output}");
    assert!(output.contains("\"rows\":200000"), "{output}");
    assert!(
        stdout.contains("\"unit\":\"bytes\""),
        "progress lines: {stdout}"
    );
    let mut linked: Vec<String> = std::fs::read_dir(&into)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    linked.sort();
    assert_eq!(
        linked,
        [
            "yellow_tripdata_2023-01.parquet",
            "yellow_tripdata_2023-02.parquet"
        ]
    );
}
