//! Runs survive a restart of `orchestrator serve`: SIGKILL in the middle of the benchmark DAG
//! (real broker, ClickHouse, producer and consumer) and a new `serve` on the same state finishes
//! the run with the exact count; SIGTERM leaves a run resumable for the next start, and
//! `--cancel-runs-on-exit` cancels it instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use orchestrator::store::{RunState, SqliteStore, Store, TaskState, rules};
use serde_json::{Value, json};
use velostream_testkit::{Infra, free_port, repo_root, taxi_sample, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");
const TOKEN: &str = "restart-test-token";

/// One `orchestrator serve` process and a client of its API.
struct Serve {
    child: Child,
    base: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Serve {
    fn start(
        dags: &Path,
        state: &Path,
        scratch: &Path,
        env: &[(&str, String)],
        extra: &[&str],
    ) -> Self {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--no-cron", "--token", TOKEN, "--kill-grace", "2s"])
            .arg("--dags")
            .arg(dags)
            .arg("--state")
            .arg(state)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(extra)
            .current_dir(scratch)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.join(format!("serve-{port}.log"))).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let serve = Self {
            child: cmd.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: reqwest::Client::new(),
        };
        wait_for("serve to answer", Duration::from_secs(30), || {
            serve.try_get("/api/health").ok()
        });
        serve
    }

    fn try_get(&self, path: &str) -> Result<Value, String> {
        self.rt.block_on(async {
            let r = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(TOKEN)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("HTTP {}", r.status()));
            }
            r.json::<Value>().await.map_err(|e| e.to_string())
        })
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.rt.block_on(async {
            let r = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let v: Value = r.json().await.unwrap();
            assert!(status.is_success(), "POST {path}: {status} {v}");
            v
        })
    }

    fn task<'a>(run: &'a Value, task: &str) -> &'a Value {
        run["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["task_id"] == task)
            .unwrap_or_else(|| panic!("no task {task} in {run}"))
    }

    /// Waits until `pred` holds for the run's detail.
    fn wait_run(
        &self,
        run_id: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(what, timeout, || {
            let run = self.try_get(&format!("/api/runs/{run_id}")).ok()?;
            pred(&run).then_some(run)
        })
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        wait_for("serve to exit", Duration::from_secs(30), || {
            self.child.try_wait().unwrap()
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn state_of(run: &Value, task: &str) -> String {
    Serve::task(run, task)["state"].as_str().unwrap().to_owned()
}

/// No velostream program whose command line names `marker` is left.
fn no_pipeline_process_left(marker: &str) {
    wait_for(
        "the pipeline's processes to be gone",
        Duration::from_secs(10),
        || {
            let mut left = Vec::new();
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                let zombie = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    == Some("Z");
                if text.contains(marker) && text.contains("velostream-") && !zombie {
                    left.push(text);
                }
            }
            left.is_empty().then_some(())
        },
    );
}

#[test]
fn kill_9_of_serve_mid_benchmark_then_a_restart_finishes_the_run_with_the_exact_count() {
    let infra = Infra::start();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state.db");
    let dags = repo_root().join("dags");
    let env = [
        ("KAFKA_BROKERS", infra.kafka.bootstrap.clone()),
        ("CLICKHOUSE_URL", infra.clickhouse.http_url.clone()),
        ("CLICKHOUSE_USER", infra.clickhouse.user.to_owned()),
        ("CLICKHOUSE_PASSWORD", infra.clickhouse.password.to_owned()),
        ("CLICKHOUSE_DATABASE", "default".to_owned()),
    ];
    let consumer_http = format!("127.0.0.1:{}", free_port());
    let serve = Serve::start(&dags, &state, scratch.path(), &env, &[]);
    let started = serve.post(
        "/api/dags/velostream_benchmark/runs",
        json!({ "params": {
            "local_infra": false,
            "input": taxi_sample().display().to_string(),
            "rows": 20000,
            "topic": "restart-taxi",
            "table": "restart_trips",
            "consumer_http": consumer_http,
        }}),
    );
    let run_id = started["run_id"].as_str().unwrap().to_owned();

    // Freeze the consumer as soon as it is up, so the lag cannot reach 0 before the kill.
    let run = serve.wait_run(
        &run_id,
        "the consumer to be ready",
        Duration::from_secs(60),
        |r| state_of(r, "start_consumer") == "success",
    );
    let consumer = Serve::task(&run, "start_consumer")["outputs"]["pid"]
        .as_i64()
        .unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(consumer),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let run = serve.wait_run(
        &run_id,
        "the lag sensor to wait",
        Duration::from_secs(60),
        |r| state_of(r, "wait_lag_zero") == "running",
    );
    let rows = Serve::task(&run, "produce")["outputs"]["rows"]
        .as_u64()
        .unwrap();
    assert_eq!(rows, 20_000);
    let before = run["run"]["dag_hash"].as_str().unwrap().to_owned();

    serve.kill_9(); // the frozen consumer dies with it (PR_SET_PDEATHSIG)
    {
        let store = SqliteStore::open(&state).unwrap();
        let stored = store.run(&run_id).unwrap().unwrap();
        assert_eq!(
            stored.state,
            RunState::Running,
            "a killed server leaves its run running"
        );
    }

    // A new server takes the run over: the sensor's interrupted try is retried, the consumer is
    // started again and drains the rest from its offset records.
    let serve = Serve::start(&dags, &state, scratch.path(), &env, &[]);
    let run = serve.wait_run(
        &run_id,
        "the resumed run to end",
        Duration::from_secs(120),
        |r| r["run"]["state"] != "running",
    );
    assert_eq!(run["run"]["state"], "success", "{run:#}");
    assert_eq!(run["run"]["dag_hash"], before.as_str());
    assert_eq!(
        infra
            .clickhouse
            .query_u64("SELECT count() FROM restart_trips FINAL"),
        rows,
        "every produced row exactly once"
    );
    assert_eq!(
        Serve::task(&run, "validate_count")["outputs"]["actual"].as_u64(),
        Some(rows)
    );
    assert_eq!(
        Serve::task(&run, "produce")["try_number"],
        1,
        "the producer ran once"
    );
    assert_eq!(Serve::task(&run, "start_consumer")["try_number"], 2);
    let sensor = Serve::task(&run, "wait_lag_zero");
    assert_eq!(sensor["try_number"], 2);
    assert_eq!(sensor["tries"][0]["error"], rules::INTERRUPTED);
    assert_eq!(run["history"][0]["kind"], "resume");
    no_pipeline_process_left(&consumer_http);
    assert!(serve.terminate().success());
}

/// A DAG whose `work` task runs until it is interrupted the first time, and succeeds after.
fn slow_dag(dir: &Path) -> PathBuf {
    let dags = dir.join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let d = dir.display();
    std::fs::write(
        dags.join("slow.toml"),
        format!(
            r#"
[dag]
id = "slow"

[[task]]
id = "work"
kind = "command"
retries = 1
retry_delay = "100ms"
shell = "if [ -f {d}/worked ]; then exit 0; fi; touch {d}/worked; exec sleep 300"

[[task]]
id = "after"
kind = "noop"
depends_on = ["work"]
"#
        ),
    )
    .unwrap();
    dags
}

#[test]
fn sigterm_leaves_runs_resumable_unless_told_to_cancel_them() {
    for cancel in [false, true] {
        let scratch = tempfile::tempdir().unwrap();
        let state = scratch.path().join("state.db");
        let dags = slow_dag(scratch.path());
        let extra: &[&str] = if cancel {
            &["--cancel-runs-on-exit"]
        } else {
            &[]
        };
        let serve = Serve::start(&dags, &state, scratch.path(), &[], extra);
        let run_id = serve.post("/api/dags/slow/runs", json!({}))["run_id"]
            .as_str()
            .unwrap()
            .to_owned();
        serve.wait_run(&run_id, "work to run", Duration::from_secs(30), |r| {
            state_of(r, "work") == "running"
        });
        // Its first try is under way (it marked itself), so the retry after the restart succeeds.
        wait_for("work's first try to start", Duration::from_secs(30), || {
            scratch.path().join("worked").exists().then_some(())
        });
        assert!(serve.terminate().success());
        let store = SqliteStore::open(&state).unwrap();
        let stored = store.run(&run_id).unwrap().unwrap();
        if cancel {
            assert_eq!(stored.state, RunState::Failed);
            assert_eq!(
                stored.note.as_deref(),
                Some("cancelled: the server shut down")
            );
            continue;
        }
        assert_eq!(stored.state, RunState::Running, "left resumable");
        assert_eq!(
            store.tries(&run_id, "work").unwrap()[0].state,
            TaskState::Running
        );
        drop(store);
        let serve = Serve::start(&dags, &state, scratch.path(), &[], &[]);
        let run = serve.wait_run(
            &run_id,
            "the resumed run to end",
            Duration::from_secs(30),
            |r| r["run"]["state"] != "running",
        );
        assert_eq!(run["run"]["state"], "success", "{run:#}");
        assert_eq!(Serve::task(&run, "work")["try_number"], 2);
        assert!(serve.terminate().success());
    }
}
