//! The orchestrator with its state in PostgreSQL, end to end: `orchestrator run` of a small DAG
//! with `--state postgres://...` against a server the harness starts, then `runs`, `logs`, `notes`
//! and `clear` reading and changing it from other processes (and other working directories);
//! the try logs in `.velostream/logs` of the run's working directory, or `--logs`; and
//! `orchestrator serve` on the same database running a run triggered through its API.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use velostream_testkit::{Postgres, free_port, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");

/// The orchestrator in `cwd` with `args`, the state given by `VELOSTREAM_STATE` unless the args
/// say `--state`.
fn cli(cwd: &Path, state: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("VELOSTREAM_STATE", state)
        .env_remove("VELOSTREAM_LOGS")
        .env_remove("RUST_LOG")
        .output()
        .expect("running the orchestrator binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

const DAG: &str = r#"
[dag]
id = "pg_state"
description = "Two shell tasks, an output passed on, a log line each"

[[task]]
id = "count"
kind = "command"
shell = "echo 'counting in {{ run_id }}'; echo '::velostream:: {\"output\": {\"rows\": 42}}'"

[[task]]
id = "report"
kind = "command"
depends_on = ["count"]
shell = "echo 'the count said {{ tasks.count.output.rows }} rows'"
"#;

/// The run id `orchestrator run` printed ("Run RUN_ID of DAG ...").
fn run_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Run ")?.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in:\n{stdout}"))
        .to_owned()
}

#[test]
fn a_dag_run_with_postgres_state_is_read_back_by_other_processes() {
    let pg = Postgres::start();
    let url = pg.create_database("orchestrator");
    let work = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let dag = work.path().join("pg_state.toml");
    std::fs::write(&dag, DAG).unwrap();
    let dag = dag.to_str().unwrap();

    // The run: state by --state (the env names a file that must not be used).
    let decoy = work.path().join("decoy.db");
    let out = cli(
        work.path(),
        decoy.to_str().unwrap(),
        &["--state", &url, "run", dag, "--no-progress"],
    );
    let stdout = ok(&out);
    let run = run_id(&stdout);
    let logs: PathBuf = work.path().join(".velostream/logs");
    assert!(
        stdout.contains(&logs.join("pg_state").join(&run).display().to_string()),
        "{stdout}"
    );
    assert!(
        !decoy.exists(),
        "a SQLite file was created beside the URL state"
    );
    assert!(
        !work.path().join(".velostream/state.db").exists(),
        "the default SQLite file was used"
    );
    // Messages never show the password.
    assert!(
        !text(&out.stderr).contains(":velostream@") && !stdout.contains(":velostream@"),
        "{stdout}{}",
        text(&out.stderr)
    );

    // The records are in PostgreSQL.
    assert_eq!(
        pg.psql(
            "orchestrator",
            &format!("SELECT state FROM runs WHERE run_id = '{run}'")
        )
        .trim(),
        "success"
    );
    assert_eq!(
        pg.psql(
            "orchestrator",
            &format!(
                "SELECT string_agg(task_id || '=' || state, ',' ORDER BY ord) FROM task_instances WHERE run_id = '{run}'"
            )
        )
        .trim(),
        "count=success,report=success"
    );

    // Another process in another directory reads it back: the state by VELOSTREAM_STATE.
    let listed = ok(&cli(elsewhere.path(), &url, &["runs"]));
    assert!(
        listed.contains(&run) && listed.contains("success"),
        "{listed}"
    );
    let tasks = ok(&cli(elsewhere.path(), &url, &["runs", "--run", &run]));
    assert!(
        tasks.contains("count") && tasks.contains("report"),
        "{tasks}"
    );
    // The logs are files under the run's working directory, recorded with absolute paths.
    let log = ok(&cli(elsewhere.path(), &url, &["logs", &run, "count"]));
    assert!(log.contains(&format!("counting in {run}")), "{log}");
    let log = ok(&cli(elsewhere.path(), &url, &["logs", &run, "report"]));
    assert!(log.contains("the count said 42 rows"), "{log}");
    assert!(
        logs.join("pg_state")
            .join(&run)
            .join("report/try-1.log")
            .is_file()
    );

    // Notes and a repair through the URL state: the clear reruns `report` as try 2.
    ok(&cli(
        elsewhere.path(),
        &url,
        &["notes", &run, "--set", "checked against PostgreSQL"],
    ));
    let cleared = ok(&cli(
        work.path(),
        &url,
        &["clear", &run, "report", "--no-progress"],
    ));
    assert!(cleared.contains("success"), "{cleared}");
    let shown = ok(&cli(elsewhere.path(), &url, &["runs", "--run", &run]));
    assert!(shown.contains("checked against PostgreSQL"), "{shown}");
    assert_eq!(
        pg.psql(
            "orchestrator",
            &format!(
                "SELECT max(try_number) || ' ' || count(*) FROM task_tries WHERE run_id = '{run}' AND task_id = 'report'"
            )
        )
        .trim(),
        "2 2"
    );
    let log = ok(&cli(
        elsewhere.path(),
        &url,
        &["logs", &run, "report", "--try", "2"],
    ));
    assert!(log.contains("the count said 42 rows"), "{log}");

    // --logs puts them elsewhere.
    let shared = elsewhere.path().join("shared-logs");
    let out = ok(&cli(
        work.path(),
        &url,
        &[
            "--logs",
            shared.to_str().unwrap(),
            "run",
            dag,
            "--no-progress",
        ],
    ));
    let second = run_id(&out);
    assert!(
        shared
            .join("pg_state")
            .join(&second)
            .join("count/try-1.log")
            .is_file()
    );
    let log = ok(&cli(elsewhere.path(), &url, &["logs", &second, "count"]));
    assert!(log.contains(&format!("counting in {second}")), "{log}");
}

#[test]
fn a_bad_or_unreachable_state_url_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://velostream:secret@127.0.0.1:{port}/state");
    let out = cli(tmp.path(), &url, &["runs"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("opening the state database postgres://velostream:***@127.0.0.1")
            && !err.contains("secret"),
        "{err}"
    );
    let out = cli(
        tmp.path(),
        "postgres://velostream@127.0.0.1:notaport/x",
        &["runs"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"),
        "{err}"
    );
}

/// `orchestrator serve` (killed on drop) and a blocking client of its API.
struct Serve {
    child: std::process::Child,
    base: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

const TOKEN: &str = "postgres-state-token";

impl Serve {
    fn start(cwd: &Path, dags: &Path, url: &str) -> Self {
        let port = free_port();
        let child = Command::new(BIN)
            .args(["serve", "--no-cron", "--token", TOKEN])
            .arg("--dags")
            .arg(dags)
            .args(["--state", url, "--bind", &format!("127.0.0.1:{port}")])
            .current_dir(cwd)
            .env_remove("VELOSTREAM_STATE")
            .env_remove("VELOSTREAM_LOGS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(cwd.join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        let serve = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: reqwest::Client::new(),
        };
        wait_for("serve to answer", Duration::from_secs(30), || {
            serve.get("/api/health").ok()
        });
        serve
    }

    fn get(&self, path: &str) -> Result<Value, String> {
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

    fn post(&self, path: &str) -> Value {
        self.rt.block_on(async {
            let r = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let v: Value = r.json().await.unwrap();
            assert!(status.is_success(), "POST {path}: {status} {v}");
            v
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_on_postgres_state_runs_what_its_api_triggers_and_sees_cli_runs() {
    let pg = Postgres::start();
    let url = pg.create_database("served");
    let work = tempfile::tempdir().unwrap();
    let dags = work.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::write(dags.join("pg_state.toml"), DAG).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();

    // A run from the CLI first, in another directory.
    let cli_run = run_id(&ok(&cli(
        elsewhere.path(),
        &url,
        &[
            "run",
            dags.join("pg_state.toml").to_str().unwrap(),
            "--no-progress",
        ],
    )));

    let serve = Serve::start(work.path(), &dags, &url);
    let run = serve.post("/api/dags/pg_state/runs")["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let detail = wait_for("the served run to end", Duration::from_secs(60), || {
        let r = serve.get(&format!("/api/runs/{run}")).ok()?;
        (r["run"]["state"] != "running").then_some(r)
    });
    assert_eq!(detail["run"]["state"], "success", "{detail:#}");
    // The server sees the CLI's run; the CLI sees the server's, with its log.
    let cli_detail = serve.get(&format!("/api/runs/{cli_run}")).unwrap();
    assert_eq!(cli_detail["run"]["state"], "success", "{cli_detail:#}");
    let listed = ok(&cli(elsewhere.path(), &url, &["runs"]));
    assert!(
        listed.contains(&run) && listed.contains(&cli_run),
        "{listed}"
    );
    let log = ok(&cli(elsewhere.path(), &url, &["logs", &run, "report"]));
    assert!(log.contains("the count said 42 rows"), "{log}");
    assert!(
        work.path()
            .join(".velostream/logs/pg_state")
            .join(&run)
            .join("report/try-1.log")
            .is_file()
    );
    assert_eq!(
        pg.psql(
            "served",
            "SELECT count(*) FROM runs WHERE state = 'success'"
        )
        .trim(),
        "2"
    );
}
