//! The UI in a real browser: headless Chromium driven through chromedriver (WebDriver, with
//! fantoccini) clicks the trigger button of the example DAG, sees the run appear and succeed
//! without reloading the page, opens the run, triggers again with params from the DAG page's
//! form, follows a task log, toggles the pause switch, starts a backfill from the DAG page's form and
//! watches its progress, and saves screenshots of both pages
//! (`target/screenshots/`; `VELOSTREAM_UPDATE_SCREENSHOTS=1` refreshes the README's pictures in
//! `docs/screenshots/`). A run whose `[[dag.notify]]` webhook (a real local receiver) refuses the
//! first attempt shows on its page the delivery retried, then delivered.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`,
//! or `infrastructure/local/velostream-local install`); fails with that hint when they are
//! missing. `VELOSTREAM_CHROMIUM` and `VELOSTREAM_CHROMEDRIVER` point elsewhere.

mod receiver;
mod web_common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use web_common::Env;

/// A task that writes a line every 150 ms for a couple of seconds.
const TICKER: &str = r#"
[dag]
id = "ticker"

[[task]]
id = "tick"
kind = "command"
shell = "for i in $(seq 1 15); do echo tick $i; sleep 0.15; done"
"#;

const INSTALL_HINT: &str = "the browser test needs Debian's chromium and chromium-driver: run `apt-get install -y chromium chromium-driver` (or `infrastructure/local/velostream-local install`), or set VELOSTREAM_CHROMIUM and VELOSTREAM_CHROMEDRIVER";

fn find(env: &str, names: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{env}={} does not exist; {INSTALL_HINT}",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([
        PathBuf::from("/usr/bin"),
        PathBuf::from("/usr/lib/chromium"),
    ]) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("{} not found; {INSTALL_HINT}", names.join(" or "));
}

/// chromedriver in its own process group, killed with everything it started on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(chromedriver: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; {INSTALL_HINT}",
                    chromedriver.display()
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
                "--window-size=1280,1000",
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot start headless Chromium through chromedriver: {e}; {INSTALL_HINT}")
        })
}

/// Waits up to `secs` for an element matching `css`.
async fn wait_css(c: &Client, css: &str, secs: u64) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(secs))
        .every(Duration::from_millis(50))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            let source = c.source().await.unwrap_or_default();
            panic!("no element {css} within {secs} s ({e}); page:\n{source}");
        }
    }
}

/// Where a screenshot goes: `target/screenshots/` on every run, so a test run leaves the work
/// tree clean; `docs/screenshots/` (the README's pictures) with `VELOSTREAM_UPDATE_SCREENSHOTS=1`.
fn screenshot_path(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = if std::env::var_os("VELOSTREAM_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        root.join("docs/screenshots")
    } else {
        root.join("target/screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_a_run_in_the_browser_and_watch_it_succeed() {
    let chromium = find("VELOSTREAM_CHROMIUM", &["chromium", "chromium-browser"]);
    let chromedriver = find("VELOSTREAM_CHROMEDRIVER", &["chromedriver"]);
    let hello = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dags/examples/hello.toml"),
    )
    .unwrap();
    // Daily instead of every 30 minutes, so the cron cannot add a run in the middle of the test.
    assert!(hello.contains("schedule = \"*/30 * * * *\""));
    let hello = hello.replace("schedule = \"*/30 * * * *\"", "schedule = \"@daily\"");
    let env = Env::new(&[("hello.toml", &hello), ("ticker.toml", TICKER)]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(orchestrator::web::serve_on(
        listener,
        env.state.clone(),
        true,
        Duration::from_millis(500),
    ));
    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, &chromium, profile.path()).await;

    // The DAG list: click Trigger, the run shows up without a reload.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_css(&c, "#dag-hello button.trigger", 10)
        .await
        .click()
        .await
        .unwrap();
    let clicked = Instant::now();
    let flash = wait_css(&c, "#flash.ok", 5).await;
    assert!(flash.text().await.unwrap().contains("Started run manual__"));
    let square = wait_css(&c, "#dag-hello .sq[data-state]", 10).await;
    eprintln!(
        "run shown in the list {:?} after the click",
        clicked.elapsed()
    );
    let run_id = square.attr("data-run").await.unwrap().unwrap();
    let done = wait_css(
        &c,
        &format!("#dag-hello .sq[data-run=\"{run_id}\"][data-state=\"success\"]"),
        60,
    )
    .await;
    eprintln!(
        "run shown as succeeded {:?} after the click",
        clicked.elapsed()
    );

    // Its page: every task succeeded, check_total on its second try.
    done.click().await.unwrap();
    wait_css(&c, "#run-state[data-state=\"success\"]", 20).await;
    for task in ["prepare", "count_a", "count_b", "check_total", "cleanup"] {
        wait_css(
            &c,
            &format!("tr[data-task=\"{task}\"][data-state=\"success\"]"),
            5,
        )
        .await;
    }
    let row = c
        .find(Locator::Css("tr[data-task=\"check_total\"]"))
        .await
        .unwrap();
    assert!(
        row.text().await.unwrap().contains("#2"),
        "check_total retried once"
    );
    assert_eq!(
        c.find_all(Locator::Css("svg.gantt rect.bar"))
            .await
            .unwrap()
            .len(),
        5
    );
    std::fs::write(screenshot_path("run.png"), c.screenshot().await.unwrap()).unwrap();

    // The DAG page: trigger again with a param from the form.
    c.goto(&format!("{base}/dags/hello")).await.unwrap();
    let rows = wait_css(&c, "input[name=\"params.rows\"]", 10).await;
    rows.clear().await.unwrap();
    rows.send_keys("600").await.unwrap();
    c.find(Locator::Css(".trigger-form button.trigger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flash = wait_css(&c, "#flash.ok", 5).await;
    let text = flash.text().await.unwrap();
    let second = text
        .trim_start_matches("Started run ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    wait_css(
        &c,
        &format!("table.grid .sq[data-run=\"{second}\"][data-state=\"success\"]"),
        60,
    )
    .await;
    let cells = c
        .find_all(Locator::Css("table.grid a.cell.s-success"))
        .await
        .unwrap();
    assert_eq!(cells.len(), 10, "two runs of five tasks in the grid");
    let nodes = c
        .find_all(Locator::Css("svg.graph g.node[data-state=\"success\"]"))
        .await
        .unwrap();
    assert_eq!(nodes.len(), 5, "the graph is coloured by the latest run");

    // Pause and unpause with the toggle.
    let toggle = "form[action=\"/api/dags/hello/pause\"] button.toggle";
    wait_css(&c, toggle, 5).await.click().await.unwrap();
    wait_css(
        &c,
        "form[action=\"/api/dags/hello/unpause\"] button.toggle",
        10,
    )
    .await
    .click()
    .await
    .unwrap();
    wait_css(&c, toggle, 10).await;
    assert!(env.state.store().paused_dags().unwrap().is_empty());
    let run = env.state.store().run(&second).unwrap().unwrap();
    assert_eq!(run.params["rows"], 600);
    c.execute("document.getElementById('flash').textContent = ''", vec![])
        .await
        .unwrap();
    std::fs::write(screenshot_path("ui.png"), c.screenshot().await.unwrap()).unwrap();

    // The log of check_total's second try: total = 600 / 2 + 600.
    c.goto(&format!(
        "{base}/runs/{}/tasks/check_total/log",
        web_common::enc(&second)
    ))
    .await
    .unwrap();
    let log = wait_css(&c, "#log", 10).await;
    assert!(log.text().await.unwrap().contains("total rows: 900"));

    // A running task's log is followed: lines written after the page loaded appear.
    let (_, v) = env.post_json("/api/dags/ticker/runs", json!({})).await;
    let ticker = v["run_id"].as_str().unwrap().to_owned();
    c.goto(&format!(
        "{base}/runs/{}/tasks/tick/log",
        web_common::enc(&ticker)
    ))
    .await
    .unwrap();
    let log = wait_css(&c, "#log[data-running=\"true\"]", 10).await;
    let followed = Instant::now();
    let deadline = followed + Duration::from_secs(30);
    while !log.text().await.unwrap().contains("tick 15") {
        assert!(
            Instant::now() < deadline,
            "the log was not followed: {}",
            log.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = wait_css(&c, "#log-status", 5).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.text().await.unwrap() != "try finished" {
        assert!(Instant::now() < deadline, "the follower did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = log.text().await.unwrap();
    assert_eq!(text.matches("tick ").count(), 15, "each line once: {text}");

    // A backfill from the DAG page's form: two daily slots, shown with their progress.
    c.goto(&format!("{base}/dags/hello")).await.unwrap();
    assert!(
        wait_css(&c, "table.upcoming", 5)
            .await
            .text()
            .await
            .unwrap()
            .contains("UTC"),
        "the next fire times"
    );
    wait_css(&c, ".backfill-form input[name=\"from\"]", 5)
        .await
        .send_keys("2026-03-01")
        .await
        .unwrap();
    c.find(Locator::Css(".backfill-form input[name=\"to\"]"))
        .await
        .unwrap()
        .send_keys("2026-03-02")
        .await
        .unwrap();
    // First a dry run: the slots and what would happen to each, nothing started.
    let dry = ".backfill-form input[name=\"dry_run\"]";
    c.find(Locator::Css(dry))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css(".backfill-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flash = wait_css(&c, "#flash.ok", 5).await.text().await.unwrap();
    assert!(
        flash.starts_with("Dry run: 2 slot(s)")
            && flash.contains("2026-03-01T00:00:00Z run; 2026-03-02T00:00:00Z run"),
        "{flash}"
    );
    c.execute("document.getElementById('flash').className = ''", vec![])
        .await
        .unwrap();
    c.find(Locator::Css(dry))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css(".backfill-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flash = wait_css(&c, "#flash.ok", 5).await.text().await.unwrap();
    assert!(
        flash.starts_with("Started backfill hello__backfill__1"),
        "{flash}"
    );
    // The live fragment is redrawn every second: look the cell up again each time.
    let cell = "tr[data-backfill=\"hello__backfill__1\"] .backfill-progress";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = match c.find(Locator::Css(cell)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains("(finished)") {
            assert!(text.contains("2/2 done: 2 succeeded"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backfill did not finish: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let backfill_runs = env
        .state
        .store()
        .runs(&orchestrator::store::RunFilter {
            trigger: Some(orchestrator::store::Trigger::Backfill),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(backfill_runs.len(), 2);
    assert!(
        backfill_runs
            .iter()
            .all(|r| r.state == orchestrator::store::RunState::Success)
    );
    wait_css(&c, "table.backfill-runs tr[data-run]", 10).await;

    c.close().await.unwrap();
    env.shutdown.cancel();
    server.await.unwrap().unwrap();
    drop(driver);
}

/// A run that fails, with a webhook that answers 503 once and then 200.
fn failing_dag(hook: &str) -> String {
    format!(
        r#"[dag]
id = "nightly"

[[dag.notify]]
on = ["failure"]
url = "{hook}"

[[task]]
id = "count"
kind = "command"
shell = "echo 'expected 100000 rows, found 99000' >&2; exit 1"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivered_webhook_shows_on_the_run_page() {
    let chromium = find("VELOSTREAM_CHROMIUM", &["chromium", "chromium-browser"]);
    let chromedriver = find("VELOSTREAM_CHROMEDRIVER", &["chromedriver"]);
    let hooks = receiver::Receiver::start().await;
    hooks.answer("ops", &[503]);
    let env = Env::new(&[("nightly.toml", &failing_dag(&hooks.url("ops")))]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(orchestrator::web::serve_on(
        listener,
        env.state.clone(),
        false,
        Duration::from_millis(500),
    ));
    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, &chromium, profile.path()).await;

    // Trigger from the DAG list and open the run from the flash message's run id.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_css(&c, "#dag-nightly button.trigger", 10)
        .await
        .click()
        .await
        .unwrap();
    let flash = wait_css(&c, "#flash.ok", 5).await.text().await.unwrap();
    let run_id = flash
        .trim_start_matches("Started run ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    c.goto(&format!("{base}/runs/{run_id}")).await.unwrap();
    wait_css(&c, "#run-state[data-state=\"failed\"]", 30).await;

    // The page follows the delivery: first refused with 503 and retried, then delivered.
    let row = wait_css(
        &c,
        "table.notifications tr[data-event=\"failure\"][data-state=\"delivered\"]",
        30,
    )
    .await;
    let text = row.text().await.unwrap();
    assert!(
        text.contains("HTTP 200 OK; the attempt before: HTTP 503 Service Unavailable"),
        "{text}"
    );
    assert!(text.contains(&format!("#1 {}/…", hooks.base())), "{text}");
    assert!(text.contains("task count failed"), "{text}");
    let attempts = c
        .find(Locator::Css(
            "table.notifications tr[data-state=\"delivered\"] td:nth-child(4)",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(attempts, "2");
    std::fs::write(
        screenshot_path("run-notifications.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();

    // What the receiver got, and what the API says.
    let got = hooks.received_by("ops");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body["run_id"], run_id.as_str());
    assert_eq!(got[1].body["failed_tasks"][0]["task_id"], "count");
    let api = env
        .get_json(&format!("/api/runs/{run_id}/notifications"))
        .await;
    assert_eq!(api["notifications"][0]["state"], "delivered");
    assert_eq!(api["notifications"][0]["attempts"], 2);
    let detail = env.get_json(&format!("/api/runs/{run_id}")).await;
    assert_eq!(detail["notifications"][0]["event"], "failure");
    let (_, metrics) = env.get("/metrics").await;
    assert!(
        metrics.contains(
            "velostream_orchestrator_notifications_total{event=\"failure\",state=\"delivered\"} 1"
        ),
        "{metrics}"
    );

    c.close().await.unwrap();
    env.shutdown.cancel();
    server.await.unwrap().unwrap();
    drop(driver);
}

/// The benchmark DAG of the product, pointed at `infra` and at the repository by absolute paths.
fn benchmark_dag(infra: &velostream_testkit::Infra) -> String {
    let root = velostream_testkit::repo_root();
    let dag = std::fs::read_to_string(root.join("dags/velostream_benchmark.toml")).unwrap();
    let ch = &infra.clickhouse;
    dag.replace(
        "\"../infrastructure/",
        &format!("\"{}/infrastructure/", root.display()),
    )
    .replace("${KAFKA_BROKERS:-127.0.0.1:9092}", &infra.kafka.bootstrap)
    .replace("${CLICKHOUSE_URL:-http://127.0.0.1:8123}", &ch.http_url)
    .replace("${CLICKHOUSE_USER:-velostream}", ch.user)
    .replace("${CLICKHOUSE_PASSWORD:-velostream}", ch.password)
}

/// The spike story: the benchmark DAG against real servers, triggered from the UI's API; its run
/// page charts the producer's rows per second and the consumer's lag rising while the producer
/// runs and falling to 0, kept after the run (`target/screenshots/run-benchmark.png`).
#[tokio::test(flavor = "multi_thread")]
async fn the_benchmark_run_page_charts_lag_rising_and_draining() {
    let chromium = find("VELOSTREAM_CHROMIUM", &["chromium", "chromium-browser"]);
    let chromedriver = find("VELOSTREAM_CHROMEDRIVER", &["chromedriver"]);
    let infra = velostream_testkit::Infra::start();
    let env = Env::new(&[("velostream_benchmark.toml", &benchmark_dag(&infra))]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(orchestrator::web::serve_on(
        listener,
        env.state.clone(),
        false,
        Duration::from_millis(500),
    ));
    let consumer_http = format!("127.0.0.1:{}", velostream_testkit::free_port());
    let (status, v) = env
        .post_json(
            "/api/dags/velostream_benchmark/runs",
            json!({"params": {
                "local_infra": false,
                "repeat": 2,
                "topic": "spike",
                "table": "spike_trips",
                "consumer_http": consumer_http,
                "input": velostream_testkit::taxi_sample().display().to_string(),
            }}),
        )
        .await;
    assert!(status.is_success(), "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        env.wait_run(&run_id).await,
        orchestrator::store::RunState::Success,
        "{}",
        env.get_json(&format!("/api/runs/{}", web_common::enc(&run_id)))
            .await
    );

    // The consumer's series moved to the stop task whole: lag rose above 0 and ended at 0.
    let stop = env
        .get_json(&format!(
            "/api/runs/{}/tasks/stop_consumer",
            web_common::enc(&run_id)
        ))
        .await;
    let lag = stop["outputs"]["series"]["lag"]["points"]
        .as_array()
        .unwrap_or_else(|| panic!("no lag series: {stop}"));
    let values: Vec<i64> = lag.iter().map(|p| p[1].as_i64().unwrap()).collect();
    let peak = values.iter().copied().max().unwrap();
    assert!(peak > 0, "the lag never rose: {values:?}");
    assert_eq!(values.last(), Some(&0), "the lag did not drain: {values:?}");
    let produce = env
        .get_json(&format!(
            "/api/runs/{}/tasks/produce",
            web_common::enc(&run_id)
        ))
        .await;
    let rate = &produce["outputs"]["series"]["rows_per_sec"]["points"];
    eprintln!(
        "consumer lag peak {peak} over {} points; producer rows/s points {}",
        values.len(),
        rate.as_array().map_or(0, Vec::len)
    );

    // The run page draws them.
    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, &chromium, profile.path()).await;
    c.goto(&format!("{base}/runs/{}", web_common::enc(&run_id)))
        .await
        .unwrap();
    wait_css(&c, "#run-state[data-state=\"success\"]", 20).await;
    let page = c.source().await.unwrap();
    assert!(page.contains("lag of <code>stop_consumer</code>"), "{page}");
    assert!(
        page.contains(&format!("messages: peak {peak}, last 0")),
        "{page}"
    );
    wait_css(&c, "svg.chart polyline.series", 5).await;
    // The charts are below the task table and the timeline: show them.
    c.execute(
        "[...document.querySelectorAll('h2')].find(h => h.textContent.includes('stop_consumer')).scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    let png = c.screenshot().await.unwrap();
    let path = screenshot_path("run-benchmark.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    c.close().await.unwrap();
    env.shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// A pipeline whose `check` fails until a file exists; `report` reads `extract`'s output.
fn flaky_dag(dir: &Path) -> String {
    format!(
        r#"
[dag]
id = "flaky"

[[task]]
id = "extract"
kind = "command"
shell = "echo '::velostream:: {{\"output\": {{\"rows\": 42}}}}'"

[[task]]
id = "check"
kind = "command"
depends_on = ["extract"]
shell = "test -f {}/fixed || {{ echo 'input not fixed yet' >&2; exit 1; }}"

[[task]]
id = "report"
kind = "command"
depends_on = ["check"]
shell = "echo '::velostream:: {{\"output\": {{\"rows\": {{{{ tasks.extract.output.rows }}}}}}}}'"
"#,
        dir.display()
    )
}

/// The bad night repaired from the run page: a run fails, the DAG file has changed since (the
/// page shows the diff), the user clicks "clear ↓" on the failed task; the run goes back to
/// running and succeeds without a reload, the other tasks kept; notes are saved in place.
#[tokio::test(flavor = "multi_thread")]
async fn clear_a_failed_task_from_the_run_page_and_watch_the_run_succeed() {
    let chromium = find("VELOSTREAM_CHROMIUM", &["chromium", "chromium-browser"]);
    let chromedriver = find("VELOSTREAM_CHROMEDRIVER", &["chromedriver"]);
    let scratch = tempfile::tempdir().unwrap();
    let text = flaky_dag(scratch.path());
    let env = Env::new(&[("flaky.toml", &text)]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(orchestrator::web::serve_on(
        listener,
        env.state.clone(),
        false,
        Duration::from_millis(500),
    ));
    let (status, v) = env.post_json("/api/dags/flaky/runs", json!({})).await;
    assert!(status.is_success(), "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        env.wait_run(&run_id).await,
        orchestrator::store::RunState::Failed
    );
    // Fixed overnight; the DAG file gained a comment since the run.
    std::fs::write(scratch.path().join("fixed"), "").unwrap();
    std::fs::write(
        env.dags().join("flaky.toml"),
        format!("# edited after the run\n{text}"),
    )
    .unwrap();

    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, &chromium, profile.path()).await;
    c.goto(&format!("{base}/runs/{}", web_common::enc(&run_id)))
        .await
        .unwrap();
    wait_css(&c, "#run-state[data-state=\"failed\"]", 10).await;
    let diff = wait_css(&c, "#dag-diff pre.diff", 5).await;
    let diff = diff.text().await.unwrap();
    assert!(diff.contains("+# edited after the run"), "{diff}");
    wait_css(&c, "#clear-failed button", 5).await;

    wait_css(&c, "tr[data-task=\"check\"] button.js-clear-downstream", 5)
        .await
        .click()
        .await
        .unwrap();
    let flash = wait_css(&c, "#flash.ok", 10).await;
    let said = flash.text().await.unwrap();
    assert!(said.contains(&format!("Cleared run {run_id}")), "{said}");
    assert!(said.contains("check, report"), "{said}");
    wait_css(&c, "#run-state[data-state=\"success\"]", 20).await;
    let tries = wait_css(&c, "tr[data-task=\"check\"] td:nth-child(3)", 5)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(tries.trim(), "2", "check ran a second try");
    wait_css(&c, "ul.history li", 5).await;

    let store = env.state.store();
    let tis = store.task_instances(&run_id).unwrap();
    let get = |id: &str| tis.iter().find(|t| t.task_id == id).unwrap();
    assert_eq!(get("extract").try_number, 1, "extract kept, not rerun");
    assert_eq!(
        get("report").outputs["rows"],
        42,
        "report read the kept output"
    );

    // Notes, saved in place.
    let notes = wait_css(&c, "#notes-form textarea", 5).await;
    notes
        .send_keys("check failed at 03:00: input file late; cleared after the fix")
        .await
        .unwrap();
    wait_css(&c, "#notes-form button", 5)
        .await
        .click()
        .await
        .unwrap();
    velostream_testkit::wait_for_async(
        "the notes to be saved",
        Duration::from_secs(10),
        || async {
            store
                .run_notes(&run_id)
                .unwrap()
                .filter(|n| n.text.contains("input file late"))
        },
    )
    .await;
    std::fs::write(
        screenshot_path("run-cleared.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    c.close().await.unwrap();
    env.shutdown.cancel();
    let _ = server.await;
    drop(driver);
}
