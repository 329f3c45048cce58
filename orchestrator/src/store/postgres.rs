//! The server-database [`Store`]: PostgreSQL (`--state postgres://...`), for state shared by
//! processes on several hosts. Like [`SqliteStore`](super::SqliteStore) it only persists: every
//! change loads the records inside one transaction, applies [`rules`] and writes them back.
//!
//! Concurrency. Transactions run at READ COMMITTED with explicit locks, so that each keeps the
//! guarantee SQLite's single writer gives: a change to a run locks its row (`FOR UPDATE`), and
//! whatever decides between runs of one DAG (admission under `max_active_runs`, a slot held by a
//! running run, a resume swapping a dead owner for a live one) first takes a transaction-scoped
//! advisory lock on the DAG, so two processes never both admit a run over the limit, run one
//! slot twice or take one run over. A deadlock or serialization failure is retried.
//!
//! Schema. [`MIGRATIONS`] is a versioned list; opening the store applies the ones a database
//! lacks in one transaction (under an advisory lock, so processes starting together migrate
//! once) and records each in `velostream_schema`. A database newer than this program is refused.
//!
//! Driver. `tokio-postgres`, on a small runtime the store owns. The [`Store`] trait is synchronous
//! and callers reach it from runtime threads too (the engine creates runs inside async code, as
//! it may with SQLite): the blocking `postgres` crate would panic there ("cannot start a runtime
//! from within a runtime"). Here the connection task runs on the store's own thread, and each
//! statement's future is awaited with `futures::executor::block_on`, which works on any thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::executor::block_on;
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement, Transaction};

use super::{
    DagVersion, NewNotification, NewRun, NotificationRecord, NotificationUpdate, Owner,
    ProcessRecord, Repair, RunAction, RunFilter, RunNotes, RunRecord, RunState, ServerLease,
    StateCounts, Store, StoreError, TaskInstance, TaskTry, TaskUpdate, Trigger, rules,
};

/// One step of the schema.
pub struct Migration {
    /// Its number; applied in order, each once.
    pub version: i32,
    /// What it does.
    pub description: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// The schema, step by step. Append new steps; never edit one that has shipped.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "runs, task instances, tries, processes, DAG flags and versions, repairs, notes, notifications",
        sql: "
CREATE TABLE runs (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    run_id       TEXT PRIMARY KEY,
    dag_id       TEXT NOT NULL,
    dag_file     TEXT,
    trigger      TEXT NOT NULL,
    state        TEXT NOT NULL,
    logical_date TIMESTAMPTZ NOT NULL,
    params       TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    ended_at     TIMESTAMPTZ,
    note         TEXT,
    owner_host   TEXT NOT NULL,
    owner_pid    BIGINT NOT NULL,
    owner_start  BIGINT NOT NULL
);
CREATE INDEX runs_by_dag ON runs (dag_id, started_at);
CREATE INDEX runs_by_state ON runs (state);
CREATE INDEX runs_newest_first ON runs (started_at DESC, seq DESC);
CREATE TABLE task_instances (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    task_id     TEXT NOT NULL,
    ord         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    try_number  BIGINT NOT NULL DEFAULT 0,
    started_at  TIMESTAMPTZ,
    ended_at    TIMESTAMPTZ,
    exit_code   INTEGER,
    error       TEXT,
    outputs     TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, task_id)
);
CREATE TABLE task_tries (
    run_id      TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    try_number  BIGINT NOT NULL,
    state       TEXT NOT NULL,
    started_at  TIMESTAMPTZ,
    ended_at    TIMESTAMPTZ,
    exit_code   INTEGER,
    error       TEXT,
    outputs     TEXT NOT NULL DEFAULT '{}',
    log_path    TEXT,
    PRIMARY KEY (run_id, task_id, try_number)
);
CREATE TABLE processes (
    run_id      TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    start_ticks BIGINT NOT NULL,
    host        TEXT NOT NULL,
    PRIMARY KEY (run_id, pid)
);
CREATE TABLE dag_flags (
    dag_id      TEXT PRIMARY KEY,
    paused      BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE dag_versions (
    hash        TEXT PRIMARY KEY,
    dag_id      TEXT NOT NULL,
    text        TEXT NOT NULL
);
CREATE TABLE run_dag_versions (
    run_id      TEXT PRIMARY KEY REFERENCES runs (run_id),
    hash        TEXT NOT NULL REFERENCES dag_versions (hash)
);
CREATE TABLE run_actions (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    at          TIMESTAMPTZ NOT NULL,
    kind        TEXT NOT NULL,
    tasks       TEXT NOT NULL,
    state       TEXT,
    from_state  TEXT NOT NULL,
    reason      TEXT,
    by_host     TEXT NOT NULL,
    by_pid      BIGINT NOT NULL,
    by_start    BIGINT NOT NULL
);
CREATE INDEX run_actions_by_run ON run_actions (run_id, seq);
CREATE TABLE run_notes (
    run_id      TEXT PRIMARY KEY REFERENCES runs (run_id),
    text        TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE TABLE notifications (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       TEXT NOT NULL,
    dag_id       TEXT NOT NULL,
    event        TEXT NOT NULL,
    target_index BIGINT NOT NULL,
    target       TEXT NOT NULL,
    format       TEXT NOT NULL,
    summary      TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    detail       TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX notifications_by_run ON notifications (run_id, id);
",
    },
    Migration {
        version: 2,
        description: "one scheduled run per schedule slot; server leases",
        sql: "
CREATE UNIQUE INDEX runs_one_scheduled_run_per_slot ON runs (dag_id, logical_date)
    WHERE trigger = 'scheduled';
CREATE TABLE server_leases (
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    start_ticks  BIGINT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    renewed_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (host, pid, start_ticks)
);
",
    },
];

/// The table that records which [`MIGRATIONS`] a database has.
const SCHEMA_TABLE: &str = "velostream_schema";

/// How often a transaction that lost a deadlock or serialization conflict is tried.
const ATTEMPTS: u32 = 5;

/// How long connecting may take when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// A [`Store`] in a PostgreSQL database.
pub struct PostgresStore {
    /// The URL without its password, for messages.
    url: String,
    config: tokio_postgres::Config,
    /// Drives the connection; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    /// One connection, opened again if the server closed it; calls take turns, as with SQLite.
    conn: Mutex<Option<Conn>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Close the connection, then let the runtime go without blocking: the store may be
        // dropped on an async task, where a blocking runtime shutdown would panic.
        self.conn.get_mut().map(Option::take).ok();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether `state` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(state: &str) -> bool {
    state.starts_with("postgres://") || state.starts_with("postgresql://")
}

/// `url` without its password.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "postgres://(unparsable URL)".to_owned(),
    }
}

/// A statement's parameters.
type Params<'a> = [&'a (dyn ToSql + Sync)];

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db?...`, as libpq
    /// reads it) and brings its schema up to date.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let shown = redact(url);
        let mut config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| StoreError::BadStateUrl {
                    url: shown.clone(),
                    why: e.to_string(),
                })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("velostream-orchestrator");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("velostream-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Postgres {
                url: shown.clone(),
                code: None,
                detail: format!("starting the thread of its connection: {e}"),
            })?;
        let store = Self {
            url: shown,
            config,
            runtime: Some(runtime),
            conn: Mutex::new(None),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The URL, without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema version of the database (the last of [`MIGRATIONS`] once opened).
    pub fn schema_version(&self) -> Result<i32, StoreError> {
        self.read(|q| {
            Ok(q.one(
                &format!("SELECT COALESCE(MAX(version), 0) FROM {SCHEMA_TABLE}"),
                &[],
            )?
            .get(0))
        })
    }

    fn err(&self, e: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres {
            url: self.url.clone(),
            code: e.code().map(|c| c.code().to_owned()),
            detail: chain(&e),
        }
    }

    /// The connection, opened (again) if there is none or the server closed it.
    fn conn(&self) -> Result<MutexGuard<'_, Option<Conn>>, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = None;
            let config = self.config.clone();
            let url = self.url.clone();
            let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
            let connecting = runtime.spawn(async move {
                let (client, connection) = config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::warn!(url, %error, "The PostgreSQL state connection closed");
                    }
                });
                Ok::<_, tokio_postgres::Error>(client)
            });
            let client = block_on(connecting)
                .expect("connecting to PostgreSQL panicked")
                .map_err(|e| self.err(e))?;
            *guard = Some(Conn {
                client,
                statements: HashMap::new(),
            });
        }
        Ok(guard)
    }

    /// Runs `f` in a transaction and commits; a deadlock or serialization failure runs it again.
    fn write<T>(
        &self,
        mut f: impl FnMut(&Q<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut attempt = 1;
        loop {
            let mut guard = self.conn()?;
            let Conn { client, statements } = guard.as_mut().expect("connected");
            let tx = block_on(client.transaction()).map_err(|e| self.err(e))?;
            let q = Q {
                target: Target::Tx(tx),
                statements: RefCell::new(statements),
                store: self,
            };
            let out = f(&q).and_then(|v| q.commit().map(|()| v));
            match out {
                Err(StoreError::Postgres { code: Some(c), .. })
                    if attempt < ATTEMPTS && retryable(&c) =>
                {
                    attempt += 1;
                    tracing::debug!(code = c, attempt, "Retrying a PostgreSQL state transaction");
                }
                other => return other,
            }
        }
    }

    /// Runs `f` on the connection outside a transaction (single statements; reads).
    fn read<T>(&self, f: impl FnOnce(&Q<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut guard = self.conn()?;
        let Conn { client, statements } = guard.as_mut().expect("connected");
        f(&Q {
            target: Target::Client(client),
            statements: RefCell::new(statements),
            store: self,
        })
    }

    /// Applies the [`MIGRATIONS`] the database lacks, in one transaction.
    fn migrate(&self) -> Result<(), StoreError> {
        self.write(|q| {
            q.exec(
                "SELECT pg_advisory_xact_lock($1)",
                &[&lock_key("schema", "")],
            )?;
            q.batch(&format!(
                "CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (
                    version     INTEGER PRIMARY KEY,
                    description TEXT NOT NULL,
                    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
                )"
            ))?;
            let current: i32 = q
                .one(
                    &format!("SELECT COALESCE(MAX(version), 0) FROM {SCHEMA_TABLE}"),
                    &[],
                )?
                .get(0);
            let known = MIGRATIONS.last().map_or(0, |m| m.version);
            if current > known {
                return Err(StoreError::SchemaTooNew {
                    url: self.url.clone(),
                    found: current,
                    known,
                });
            }
            for m in MIGRATIONS.iter().filter(|m| m.version > current) {
                tracing::info!(
                    version = m.version,
                    description = m.description,
                    "Migrating the PostgreSQL state"
                );
                q.batch(m.sql)?;
                q.exec(
                    &format!("INSERT INTO {SCHEMA_TABLE} (version, description) VALUES ($1, $2)"),
                    &[&m.version, &m.description],
                )?;
            }
            Ok(())
        })
    }
}

/// An error and its causes, `: `-separated (tokio-postgres says only "db error" on its own).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn retryable(code: &str) -> bool {
    code == SqlState::T_R_SERIALIZATION_FAILURE.code()
        || code == SqlState::T_R_DEADLOCK_DETECTED.code()
}

/// The key of a transaction-scoped advisory lock on `name` of `kind`: 64 bits of its SHA-256.
fn lock_key(kind: &str, name: &str) -> i64 {
    let digest = Sha256::digest(format!("velostream.{kind}\0{name}").as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

enum Target<'a> {
    Client(&'a Client),
    Tx(Transaction<'a>),
}

/// Statements on a connection or in a transaction, each awaited to completion on the calling
/// thread, prepared once per connection.
struct Q<'a> {
    target: Target<'a>,
    statements: RefCell<&'a mut HashMap<String, Statement>>,
    store: &'a PostgresStore,
}

impl Q<'_> {
    fn prepare(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = match &self.target {
            Target::Client(c) => block_on(c.prepare(sql))?,
            Target::Tx(t) => block_on(t.prepare(sql))?,
        };
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StoreError> {
        let run = || {
            let s = self.prepare(sql)?;
            match &self.target {
                Target::Client(c) => block_on(c.query(&s, params)),
                Target::Tx(t) => block_on(t.query(&s, params)),
            }
        };
        run().map_err(|e| self.store.err(e))
    }

    fn opt(&self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    fn one(&self, sql: &str, params: &Params<'_>) -> Result<Row, StoreError> {
        let rows = self.query(sql, params)?;
        rows.into_iter().next().ok_or_else(|| StoreError::Corrupt {
            what: "answer (no row where one was due)",
            value: sql.to_owned(),
        })
    }

    fn exec(&self, sql: &str, params: &Params<'_>) -> Result<u64, StoreError> {
        let run = || {
            let s = self.prepare(sql)?;
            match &self.target {
                Target::Client(c) => block_on(c.execute(&s, params)),
                Target::Tx(t) => block_on(t.execute(&s, params)),
            }
        };
        run().map_err(|e| self.store.err(e))
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        match &self.target {
            Target::Client(c) => block_on(c.batch_execute(sql)),
            Target::Tx(t) => block_on(t.batch_execute(sql)),
        }
        .map_err(|e| self.store.err(e))
    }

    fn commit(self) -> Result<(), StoreError> {
        match self.target {
            Target::Client(_) => Ok(()),
            Target::Tx(t) => block_on(t.commit()).map_err(|e| self.store.err(e)),
        }
    }

    /// Waits for the advisory lock on the DAG `dag_id`, held until the transaction ends.
    fn lock_dag(&self, dag_id: &str) -> Result<(), StoreError> {
        self.exec(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key("dag", dag_id)],
        )
        .map(drop)
    }
}

fn corrupt(what: &'static str, value: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        value: value.to_string(),
    }
}

fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r Row,
    idx: usize,
    what: &'static str,
) -> Result<T, StoreError> {
    row.try_get(idx).map_err(|e| corrupt(what, chain(&e)))
}

fn parse<T: std::str::FromStr>(s: String, what: &'static str) -> Result<T, StoreError> {
    s.parse().map_err(|_| corrupt(what, s))
}

fn u32_of(v: i64, what: &'static str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(what, v))
}

fn parse_map(s: String) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    serde_json::from_str(&s).map_err(|_| corrupt("JSON object", s))
}

fn json(map: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::Value::Object(map.clone()).to_string()
}

const RUN_COLUMNS: &str = "run_id, dag_id, dag_file, trigger, state, logical_date, params, started_at, ended_at, note, owner_host, owner_pid, owner_start";

/// [`RUN_COLUMNS`] and the run's DAG version, for `SELECT ... FROM runs`.
const RUN_SELECT: &str = "run_id, dag_id, dag_file, trigger, state, logical_date, params, started_at, ended_at, note, owner_host, owner_pid, owner_start,
    (SELECT hash FROM run_dag_versions v WHERE v.run_id = runs.run_id)";

fn run_from_row(row: &Row) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        run_id: get(row, 0, "run id")?,
        dag_id: get(row, 1, "DAG id")?,
        dag_file: get::<Option<String>>(row, 2, "DAG file")?.map(PathBuf::from),
        trigger: parse(get(row, 3, "trigger")?, "trigger")?,
        state: parse(get(row, 4, "run state")?, "run state")?,
        logical_date: get(row, 5, "logical date")?,
        params: parse_map(get(row, 6, "params")?)?,
        started_at: get(row, 7, "run start")?,
        ended_at: get(row, 8, "run end")?,
        note: get(row, 9, "run note")?,
        owner: Owner {
            host: get(row, 10, "owner host")?,
            pid: u32_of(get(row, 11, "owner pid")?, "owner pid")?,
            start_ticks: get::<i64>(row, 12, "owner start")? as u64,
        },
        dag_hash: get(row, 13, "DAG hash")?,
    })
}

const INSTANCE_COLUMNS: &str =
    "run_id, task_id, state, try_number, started_at, ended_at, exit_code, error, outputs";

fn instance_from_row(row: &Row) -> Result<TaskInstance, StoreError> {
    Ok(TaskInstance {
        run_id: get(row, 0, "run id")?,
        task_id: get(row, 1, "task id")?,
        state: parse(get(row, 2, "task state")?, "task state")?,
        try_number: u32_of(get(row, 3, "try number")?, "try number")?,
        started_at: get(row, 4, "task start")?,
        ended_at: get(row, 5, "task end")?,
        exit_code: get(row, 6, "exit code")?,
        error: get(row, 7, "error")?,
        outputs: parse_map(get(row, 8, "outputs")?)?,
    })
}

const TRY_COLUMNS: &str =
    "run_id, task_id, try_number, state, started_at, ended_at, exit_code, error, outputs, log_path";

fn try_from_row(row: &Row) -> Result<TaskTry, StoreError> {
    Ok(TaskTry {
        run_id: get(row, 0, "run id")?,
        task_id: get(row, 1, "task id")?,
        try_number: u32_of(get(row, 2, "try number")?, "try number")?,
        state: parse(get(row, 3, "try state")?, "try state")?,
        started_at: get(row, 4, "try start")?,
        ended_at: get(row, 5, "try end")?,
        exit_code: get(row, 6, "exit code")?,
        error: get(row, 7, "error")?,
        outputs: parse_map(get(row, 8, "outputs")?)?,
        log_path: get::<Option<String>>(row, 9, "log path")?.map(PathBuf::from),
    })
}

const PROCESS_COLUMNS: &str = "run_id, task_id, pid, start_ticks, host";

fn process_from_row(row: &Row) -> Result<ProcessRecord, StoreError> {
    Ok(ProcessRecord {
        run_id: get(row, 0, "run id")?,
        task_id: get(row, 1, "task id")?,
        pid: u32_of(get(row, 2, "pid")?, "pid")?,
        start_ticks: get::<i64>(row, 3, "start ticks")? as u64,
        host: get(row, 4, "host")?,
    })
}

const ACTION_COLUMNS: &str =
    "run_id, at, kind, tasks, state, reason, by_host, by_pid, by_start, from_state";

fn action_from_row(row: &Row) -> Result<RunAction, StoreError> {
    let tasks: String = get(row, 3, "repaired tasks")?;
    Ok(RunAction {
        run_id: get(row, 0, "run id")?,
        at: get(row, 1, "repair time")?,
        kind: parse(get(row, 2, "repair kind")?, "repair kind")?,
        tasks: serde_json::from_str(&tasks).map_err(|_| corrupt("repaired tasks", &tasks))?,
        state: get::<Option<String>>(row, 4, "marked state")?
            .map(|s| parse(s, "marked state"))
            .transpose()?,
        reason: get(row, 5, "reason")?,
        by: Owner {
            host: get(row, 6, "repairer host")?,
            pid: u32_of(get(row, 7, "repairer pid")?, "repairer pid")?,
            start_ticks: get::<i64>(row, 8, "repairer start")? as u64,
        },
        from_state: parse(get(row, 9, "run state")?, "run state")?,
    })
}

const NOTIFICATION_COLUMNS: &str = "id, run_id, dag_id, event, target_index, target, format, summary, state, attempts, detail, created_at, updated_at";

fn notification_from_row(row: &Row) -> Result<NotificationRecord, StoreError> {
    Ok(NotificationRecord {
        id: get(row, 0, "notification id")?,
        run_id: get(row, 1, "run id")?,
        dag_id: get(row, 2, "DAG id")?,
        event: get(row, 3, "event")?,
        target_index: u32_of(get(row, 4, "target index")?, "target index")?,
        target: get(row, 5, "target")?,
        format: get(row, 6, "format")?,
        summary: get(row, 7, "summary")?,
        state: parse(get(row, 8, "delivery state")?, "delivery state")?,
        attempts: u32_of(get(row, 9, "attempts")?, "attempts")?,
        detail: get(row, 10, "detail")?,
        created_at: get(row, 11, "created")?,
        updated_at: get(row, 12, "updated")?,
    })
}

fn rows<T>(
    rows: Vec<Row>,
    f: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}

/// The run, locked for the rest of the transaction.
fn lock_run(q: &Q<'_>, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
    q.opt(
        &format!("SELECT {RUN_SELECT} FROM runs WHERE run_id = $1 FOR UPDATE OF runs"),
        &[&run_id],
    )?
    .as_ref()
    .map(run_from_row)
    .transpose()
}

/// Writes a run's state, end, note and owner back.
fn save_run_state(q: &Q<'_>, run: &RunRecord) -> Result<(), StoreError> {
    q.exec(
        "UPDATE runs SET state = $2, ended_at = $3, note = $4, owner_host = $5, owner_pid = $6,
            owner_start = $7 WHERE run_id = $1",
        &[
            &run.run_id,
            &run.state.as_str(),
            &run.ended_at,
            &run.note,
            &run.owner.host,
            &i64::from(run.owner.pid),
            &(run.owner.start_ticks as i64),
        ],
    )
    .map(drop)
}

/// Writes a task instance's mutable fields back.
fn save_instance(q: &Q<'_>, ti: &TaskInstance) -> Result<(), StoreError> {
    q.exec(
        "UPDATE task_instances SET state = $3, try_number = $4, started_at = $5, ended_at = $6,
            exit_code = $7, error = $8, outputs = $9
         WHERE run_id = $1 AND task_id = $2",
        &[
            &ti.run_id,
            &ti.task_id,
            &ti.state.as_str(),
            &i64::from(ti.try_number),
            &ti.started_at,
            &ti.ended_at,
            &ti.exit_code,
            &ti.error,
            &json(&ti.outputs),
        ],
    )
    .map(drop)
}

/// Inserts or replaces a try.
fn save_try(q: &Q<'_>, t: &TaskTry) -> Result<(), StoreError> {
    q.exec(
        &format!(
            "INSERT INTO task_tries ({TRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (run_id, task_id, try_number) DO UPDATE SET state = excluded.state,
                started_at = excluded.started_at, ended_at = excluded.ended_at,
                exit_code = excluded.exit_code, error = excluded.error,
                outputs = excluded.outputs, log_path = excluded.log_path"
        ),
        &[
            &t.run_id,
            &t.task_id,
            &i64::from(t.try_number),
            &t.state.as_str(),
            &t.started_at,
            &t.ended_at,
            &t.exit_code,
            &t.error,
            &json(&t.outputs),
            &t.log_path.as_ref().map(|p| p.display().to_string()),
        ],
    )
    .map(drop)
}

/// Applies one task update inside a transaction: load (locked), [`rules`], save. An unknown run
/// or task is [`StoreError::NoSuchRun`].
fn apply_update(q: &Q<'_>, run_id: &str, u: &TaskUpdate) -> Result<(), StoreError> {
    let Some(row) = q.opt(
        &format!(
            "SELECT {INSTANCE_COLUMNS} FROM task_instances WHERE run_id = $1 AND task_id = $2 FOR UPDATE"
        ),
        &[&run_id, &u.task_id],
    )?
    else {
        return Err(StoreError::NoSuchRun(format!(
            "{run_id} (task {})",
            u.task_id
        )));
    };
    let mut ti = instance_from_row(&row)?;
    if u.state.is_some() {
        ti.apply(u);
        save_instance(q, &ti)?;
    }
    if u.try_number > 0 {
        let current = q
            .opt(
                &format!(
                    "SELECT {TRY_COLUMNS} FROM task_tries WHERE run_id = $1 AND task_id = $2 AND try_number = $3 FOR UPDATE"
                ),
                &[&run_id, &u.task_id, &i64::from(u.try_number)],
            )?
            .as_ref()
            .map(try_from_row)
            .transpose()?;
        if let Some(t) = TaskTry::updated(run_id, current, u) {
            save_try(q, &t)?;
        }
    }
    Ok(())
}

/// The running run of the DAG holding `logical_date`, other than `except`.
fn slot_holder(
    q: &Q<'_>,
    dag_id: &str,
    logical_date: DateTime<Utc>,
    except: &str,
) -> Result<Option<String>, StoreError> {
    Ok(q
        .opt(
            "SELECT run_id FROM runs WHERE dag_id = $1 AND logical_date = $2 AND state = 'running' AND run_id != $3 LIMIT 1",
            &[&dag_id, &logical_date, &except],
        )?
        .map(|r| r.get(0)))
}

const LEASE_COLUMNS: &str = "host, pid, start_ticks, started_at, renewed_at, expires_at";

fn lease_from_row(row: &Row, now: DateTime<Utc>) -> Result<ServerLease, StoreError> {
    let expires_at = get(row, 5, "lease end")?;
    Ok(ServerLease {
        owner: Owner {
            host: get(row, 0, "server host")?,
            pid: u32_of(get(row, 1, "server pid")?, "server pid")?,
            start_ticks: get::<i64>(row, 2, "server start")? as u64,
        },
        started_at: get(row, 3, "server start time")?,
        renewed_at: get(row, 4, "lease renewal")?,
        expires_at,
        expired: rules::lease_expired(expires_at, now),
    })
}

/// Creates a run (see [`Store::create_run`]) inside a transaction.
fn insert_run(q: &Q<'_>, run: &NewRun) -> Result<RunRecord, StoreError> {
    // Admission, the slot and the id are decided under the DAG's lock (and the proposed
    // id's, which another DAG could propose too).
    q.lock_dag(&run.dag_id)?;
    q.exec(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key("run", &run.run_id)],
    )?;
    let active: i64 = q
        .one(
            "SELECT COUNT(*) FROM runs WHERE dag_id = $1 AND state = 'running'",
            &[&run.dag_id],
        )?
        .get(0);
    // The slot's claim: checked under the DAG's lock, and the unique index
    // `runs_one_scheduled_run_per_slot` holds it whatever else writes to the database.
    let claim: Option<String> = q
        .opt(
            "SELECT run_id FROM runs WHERE dag_id = $1 AND logical_date = $2 AND trigger = 'scheduled' LIMIT 1",
            &[&run.dag_id, &run.logical_date],
        )?
        .map(|r| r.get(0));
    rules::slot_unclaimed(run, claim.as_deref())?;
    rules::admit(
        &run.dag_id,
        u32_of(active, "run count")?,
        run.max_active_runs,
    )?;
    let holder = slot_holder(q, &run.dag_id, run.logical_date, "")?;
    rules::slot_free(run, holder.as_deref())?;
    let run_id = rules::unique_run_id(&run.run_id, |id| {
        q.opt("SELECT 1 FROM runs WHERE run_id = $1", &[&id])
            .map(|r| r.is_some())
    })?;
    q.exec(
        &format!("INSERT INTO runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, NULL, NULL, $8, $9, $10)"),
        &[
            &run_id,
            &run.dag_id,
            &run.dag_file.as_ref().map(|p| p.display().to_string()),
            &run.trigger.as_str(),
            &run.logical_date,
            &json(&run.params),
            &run.started_at,
            &run.owner.host,
            &i64::from(run.owner.pid),
            &(run.owner.start_ticks as i64),
        ],
    )?;
    for (ord, ti) in rules::new_task_instances(run, &run_id).iter().enumerate() {
        let ord = i32::try_from(ord).map_err(|_| corrupt("task count", ord))?;
        q.exec(
            "INSERT INTO task_instances (run_id, task_id, ord, state) VALUES ($1, $2, $3, $4)",
            &[&run_id, &ti.task_id, &ord, &ti.state.as_str()],
        )?;
    }
    let record = rules::new_run_record(run, run_id);
    if let (Some(text), Some(hash)) = (&run.dag_text, &record.dag_hash) {
        q.exec(
            "INSERT INTO dag_versions (hash, dag_id, text) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING",
            &[hash, &run.dag_id, text],
        )?;
        q.exec(
            "INSERT INTO run_dag_versions (run_id, hash) VALUES ($1, $2)",
            &[&record.run_id, hash],
        )?;
    }
    Ok(record)
}

impl Store for PostgresStore {
    fn create_run(&self, run: &NewRun) -> Result<RunRecord, StoreError> {
        self.write(|q| insert_run(q, run)).map_err(|e| match e {
            StoreError::Postgres {
                code: Some(c),
                detail,
                ..
            } if c == SqlState::UNIQUE_VIOLATION.code()
                && detail.contains("runs_one_scheduled_run_per_slot") =>
            {
                StoreError::SlotClaimed {
                    dag_id: run.dag_id.clone(),
                    logical_date: run
                        .logical_date
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    run_id: "another scheduled run".to_owned(),
                }
            }
            e => e,
        })
    }

    fn finish_run(
        &self,
        run_id: &str,
        state: RunState,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(|q| {
            let mut run =
                lock_run(q, run_id)?.ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
            run.finish(state, note, Utc::now());
            save_run_state(q, &run)
        })
    }

    fn update_task(&self, run_id: &str, u: &TaskUpdate) -> Result<(), StoreError> {
        self.write(|q| apply_update(q, run_id, u))
    }

    fn update_tasks(&self, updates: &[(String, TaskUpdate)]) -> Result<(), StoreError> {
        // One transaction for the batch: one commit instead of one per update.
        self.write(|q| {
            for (run_id, u) in updates {
                apply_update(q, run_id, u)?;
            }
            Ok(())
        })
    }

    fn record_process(&self, p: &ProcessRecord) -> Result<(), StoreError> {
        self.read(|q| {
            q.exec(
                "INSERT INTO processes (run_id, task_id, pid, start_ticks, host) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (run_id, pid) DO UPDATE SET task_id = excluded.task_id,
                    start_ticks = excluded.start_ticks, host = excluded.host",
                &[&p.run_id, &p.task_id, &i64::from(p.pid), &(p.start_ticks as i64), &p.host],
            )
            .map(drop)
        })
    }

    fn forget_process(&self, run_id: &str, pid: u32) -> Result<(), StoreError> {
        self.read(|q| {
            q.exec(
                "DELETE FROM processes WHERE run_id = $1 AND pid = $2",
                &[&run_id, &i64::from(pid)],
            )
            .map(drop)
        })
    }

    fn processes(&self, run_id: &str) -> Result<Vec<ProcessRecord>, StoreError> {
        self.read(|q| {
            rows(
                q.query(
                    &format!(
                        "SELECT {PROCESS_COLUMNS} FROM processes WHERE run_id = $1 ORDER BY pid"
                    ),
                    &[&run_id],
                )?,
                process_from_row,
            )
        })
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.read(|q| {
            q.opt(
                &format!("SELECT {RUN_SELECT} FROM runs WHERE run_id = $1"),
                &[&run_id],
            )?
            .as_ref()
            .map(run_from_row)
            .transpose()
        })
    }

    fn runs(&self, f: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.read(|q| {
            let limit = (f.limit > 0).then(|| i64::try_from(f.limit).unwrap_or(i64::MAX));
            rows(
                q.query(
                    &format!(
                        "SELECT {RUN_SELECT} FROM runs
                         WHERE ($1::text IS NULL OR dag_id = $1) AND ($2::text IS NULL OR state = $2)
                           AND ($4::text IS NULL OR trigger = $4)
                         ORDER BY started_at DESC, seq DESC LIMIT $3"
                    ),
                    &[
                        &f.dag_id,
                        &f.state.map(RunState::as_str),
                        &limit,
                        &f.trigger.map(Trigger::as_str),
                    ],
                )?,
                run_from_row,
            )
        })
    }

    fn task_instances(&self, run_id: &str) -> Result<Vec<TaskInstance>, StoreError> {
        self.read(|q| {
            rows(
                q.query(
                    &format!(
                        "SELECT {INSTANCE_COLUMNS} FROM task_instances WHERE run_id = $1 ORDER BY ord"
                    ),
                    &[&run_id],
                )?,
                instance_from_row,
            )
        })
    }

    fn tries(&self, run_id: &str, task_id: &str) -> Result<Vec<TaskTry>, StoreError> {
        self.read(|q| {
            rows(
                q.query(
                    &format!("SELECT {TRY_COLUMNS} FROM task_tries WHERE run_id = $1 AND task_id = $2 ORDER BY try_number"),
                    &[&run_id, &task_id],
                )?,
                try_from_row,
            )
        })
    }

    fn fail_orphaned_runs(
        &self,
        dag_id: Option<&str>,
        owner_alive: &dyn Fn(&Owner) -> bool,
    ) -> Result<Vec<(RunRecord, Vec<ProcessRecord>)>, StoreError> {
        self.write(|q| {
            // Locked in one order, so two processes closing runs at once never deadlock.
            let running = rows(
                q.query(
                    &format!(
                        "SELECT {RUN_SELECT} FROM runs WHERE state = 'running' AND ($1::text IS NULL OR dag_id = $1)
                         ORDER BY run_id FOR UPDATE OF runs"
                    ),
                    &[&dag_id],
                )?,
                run_from_row,
            )?;
            let now = Utc::now();
            let mut out = Vec::new();
            for mut run in running.into_iter().filter(|r| r.is_orphaned(owner_alive)) {
                run.close_orphaned(now);
                save_run_state(q, &run)?;
                let instances = rows(
                    q.query(
                        &format!("SELECT {INSTANCE_COLUMNS} FROM task_instances WHERE run_id = $1 ORDER BY ord FOR UPDATE"),
                        &[&run.run_id],
                    )?,
                    instance_from_row,
                )?;
                for mut ti in instances {
                    if ti.close_orphaned(now) {
                        save_instance(q, &ti)?;
                    }
                }
                let tries = rows(
                    q.query(
                        &format!("SELECT {TRY_COLUMNS} FROM task_tries WHERE run_id = $1 FOR UPDATE"),
                        &[&run.run_id],
                    )?,
                    try_from_row,
                )?;
                for mut t in tries {
                    if t.close_orphaned(now) {
                        save_try(q, &t)?;
                    }
                }
                let mut procs = rows(
                    q.query(
                        &format!("DELETE FROM processes WHERE run_id = $1 RETURNING {PROCESS_COLUMNS}"),
                        &[&run.run_id],
                    )?,
                    process_from_row,
                )?;
                procs.sort_by_key(|p| p.pid);
                out.push((run, procs));
            }
            Ok(out)
        })
    }

    fn repair_run(
        &self,
        run_id: &str,
        repair: &Repair,
        owner_alive: &dyn Fn(&Owner) -> bool,
    ) -> Result<RunRecord, StoreError> {
        self.write(|q| {
            // The DAG's lock first (the slot check looks at its other runs), then the run's row:
            // two processes resuming one run take turns, and the second sees the first's owner.
            let dag_id: Option<String> = q
                .opt("SELECT dag_id FROM runs WHERE run_id = $1", &[&run_id])?
                .map(|r| r.get(0));
            let dag_id = dag_id.ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
            q.lock_dag(&dag_id)?;
            let mut run =
                lock_run(q, run_id)?.ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
            let mut instances = rows(
                q.query(
                    &format!("SELECT {INSTANCE_COLUMNS} FROM task_instances WHERE run_id = $1 ORDER BY ord FOR UPDATE"),
                    &[&run_id],
                )?,
                instance_from_row,
            )?;
            let mut running = rows(
                q.query(
                    &format!("SELECT {TRY_COLUMNS} FROM task_tries WHERE run_id = $1 AND state = 'running' FOR UPDATE"),
                    &[&run_id],
                )?,
                try_from_row,
            )?;
            let holder = slot_holder(q, &run.dag_id, run.logical_date, &run.run_id)?;
            let action = rules::repair(
                &mut run,
                &mut instances,
                &mut running,
                repair,
                owner_alive,
                holder.as_deref(),
            )?;
            save_run_state(q, &run)?;
            for ti in &instances {
                save_instance(q, ti)?;
            }
            for t in &running {
                save_try(q, t)?;
            }
            q.exec("DELETE FROM processes WHERE run_id = $1", &[&run_id])?;
            q.exec(
                &format!("INSERT INTO run_actions ({ACTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
                &[
                    &action.run_id,
                    &action.at,
                    &action.kind.as_str(),
                    &serde_json::to_string(&action.tasks).unwrap_or_default(),
                    &action.state.map(|s| s.as_str()),
                    &action.reason,
                    &action.by.host,
                    &i64::from(action.by.pid),
                    &(action.by.start_ticks as i64),
                    &action.from_state.as_str(),
                ],
            )?;
            Ok(run)
        })
    }

    fn run_actions(&self, run_id: &str) -> Result<Vec<RunAction>, StoreError> {
        self.read(|q| {
            rows(
                q.query(
                    &format!(
                        "SELECT {ACTION_COLUMNS} FROM run_actions WHERE run_id = $1 ORDER BY seq"
                    ),
                    &[&run_id],
                )?,
                action_from_row,
            )
        })
    }

    fn set_run_notes(&self, run_id: &str, text: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(|q| {
            if q.opt("SELECT 1 FROM runs WHERE run_id = $1", &[&run_id])?.is_none() {
                return Err(StoreError::NoSuchRun(run_id.to_owned()));
            }
            q.exec(
                "INSERT INTO run_notes (run_id, text, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (run_id) DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at",
                &[&run_id, &text, &at],
            )
            .map(drop)
        })
    }

    fn run_notes(&self, run_id: &str) -> Result<Option<RunNotes>, StoreError> {
        self.read(|q| {
            q.opt(
                "SELECT text, updated_at FROM run_notes WHERE run_id = $1",
                &[&run_id],
            )?
            .map(|r| {
                Ok(RunNotes {
                    text: get(&r, 0, "notes")?,
                    updated_at: get(&r, 1, "notes time")?,
                })
            })
            .transpose()
        })
    }

    fn dag_version(&self, hash: &str) -> Result<Option<DagVersion>, StoreError> {
        self.read(|q| {
            q.opt(
                "SELECT hash, dag_id, text FROM dag_versions WHERE hash = $1",
                &[&hash],
            )?
            .map(|r| {
                Ok(DagVersion {
                    hash: get(&r, 0, "DAG hash")?,
                    dag_id: get(&r, 1, "DAG id")?,
                    text: get(&r, 2, "DAG text")?,
                })
            })
            .transpose()
        })
    }

    fn set_paused(&self, dag_id: &str, paused: bool) -> Result<(), StoreError> {
        self.read(|q| {
            q.exec(
                "INSERT INTO dag_flags (dag_id, paused) VALUES ($1, $2)
                 ON CONFLICT (dag_id) DO UPDATE SET paused = excluded.paused",
                &[&dag_id, &paused],
            )
            .map(drop)
        })
    }

    fn renew_lease(&self, owner: &Owner, lease: Duration) -> Result<bool, StoreError> {
        self.write(|q| {
            // The database's clock, so that servers whose clocks disagree agree on leases.
            let now: DateTime<Utc> = q.one("SELECT now()", &[])?.get(0);
            let previous = q
                .opt(
                    &format!("SELECT {LEASE_COLUMNS} FROM server_leases WHERE host = $1 AND pid = $2 AND start_ticks = $3 FOR UPDATE"),
                    &[&owner.host, &i64::from(owner.pid), &(owner.start_ticks as i64)],
                )?
                .as_ref()
                .map(|r| lease_from_row(r, now))
                .transpose()?;
            let (l, lost) = rules::renew_lease(owner, previous.as_ref(), now, lease);
            q.exec(
                &format!(
                    "INSERT INTO server_leases ({LEASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (host, pid, start_ticks) DO UPDATE SET renewed_at = excluded.renewed_at,
                        expires_at = excluded.expires_at"
                ),
                &[
                    &owner.host,
                    &i64::from(owner.pid),
                    &(owner.start_ticks as i64),
                    &l.started_at,
                    &l.renewed_at,
                    &l.expires_at,
                ],
            )?;
            Ok(lost)
        })
    }

    fn end_lease(&self, owner: &Owner) -> Result<(), StoreError> {
        self.read(|q| {
            q.exec(
                "UPDATE server_leases SET expires_at = LEAST(expires_at, now())
                 WHERE host = $1 AND pid = $2 AND start_ticks = $3",
                &[
                    &owner.host,
                    &i64::from(owner.pid),
                    &(owner.start_ticks as i64),
                ],
            )
            .map(drop)
        })
    }

    fn leases(&self) -> Result<Vec<ServerLease>, StoreError> {
        self.write(|q| {
            let now: DateTime<Utc> = q.one("SELECT now()", &[])?.get(0);
            rows(
                q.query(
                    &format!("SELECT {LEASE_COLUMNS} FROM server_leases ORDER BY started_at"),
                    &[],
                )?,
                |r| lease_from_row(r, now),
            )
        })
    }

    fn paused_dags(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        self.read(|q| {
            q.query("SELECT dag_id FROM dag_flags WHERE paused", &[])?
                .iter()
                .map(|r| get(r, 0, "DAG id"))
                .collect()
        })
    }

    fn add_notification(&self, n: &NewNotification) -> Result<NotificationRecord, StoreError> {
        self.read(|q| {
            let record = NotificationRecord::new(0, n);
            let id: i64 = q
                .one(
                    "INSERT INTO notifications (run_id, dag_id, event, target_index, target, format, summary, state, attempts, detail, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
                    &[
                        &record.run_id,
                        &record.dag_id,
                        &record.event,
                        &i64::from(record.target_index),
                        &record.target,
                        &record.format,
                        &record.summary,
                        &record.state.as_str(),
                        &i64::from(record.attempts),
                        &record.detail,
                        &record.created_at,
                        &record.updated_at,
                    ],
                )?
                .get(0);
            Ok(NotificationRecord { id, ..record })
        })
    }

    fn update_notification(&self, id: i64, u: &NotificationUpdate) -> Result<(), StoreError> {
        self.write(|q| {
            let mut record = q
                .opt(
                    &format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1 FOR UPDATE"),
                    &[&id],
                )?
                .as_ref()
                .map(notification_from_row)
                .transpose()?
                .ok_or(StoreError::NoSuchNotification(id))?;
            record.apply(u);
            q.exec(
                "UPDATE notifications SET state = $2, attempts = $3, detail = $4, updated_at = $5 WHERE id = $1",
                &[
                    &id,
                    &record.state.as_str(),
                    &i64::from(record.attempts),
                    &record.detail,
                    &record.updated_at,
                ],
            )
            .map(drop)
        })
    }

    fn notifications(&self, run_id: &str) -> Result<Vec<NotificationRecord>, StoreError> {
        self.read(|q| {
            rows(
                q.query(
                    &format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE run_id = $1 ORDER BY id"),
                    &[&run_id],
                )?,
                notification_from_row,
            )
        })
    }

    fn latest_logical_date(
        &self,
        dag_id: &str,
        trigger: Trigger,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(|q| {
            get(
                &q.one(
                    "SELECT MAX(logical_date) FROM runs WHERE dag_id = $1 AND trigger = $2",
                    &[&dag_id, &trigger.as_str()],
                )?,
                0,
                "logical date",
            )
        })
    }

    fn state_counts(&self) -> Result<StateCounts, StoreError> {
        self.read(|q| {
            let mut counts = StateCounts::default();
            for r in q.query(
                "SELECT dag_id, state, COUNT(*) FROM runs GROUP BY dag_id, state",
                &[],
            )? {
                let state = parse(get(&r, 1, "run state")?, "run state")?;
                let n: i64 = get(&r, 2, "count")?;
                counts.runs.insert((get(&r, 0, "DAG id")?, state), n as u64);
            }
            for r in q.query(
                "SELECT state, COUNT(*) FROM task_instances GROUP BY state",
                &[],
            )? {
                let state = parse(get(&r, 0, "task state")?, "task state")?;
                let n: i64 = get(&r, 1, "count")?;
                counts.task_instances.insert(state, n as u64);
            }
            Ok(counts)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_apart_from_paths_and_shown_without_passwords() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("postgresql://u@h/db"));
        assert!(!is_postgres_url(".velostream/state.db"));
        assert!(!is_postgres_url("postgres.db"));
        assert_eq!(
            redact("postgres://u:secret@h:5432/db?sslmode=disable"),
            "postgres://u:***@h:5432/db?sslmode=disable"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn lock_keys_differ_by_kind_and_name_and_are_stable() {
        assert_ne!(lock_key("dag", "a"), lock_key("dag", "b"));
        assert_ne!(lock_key("dag", "a"), lock_key("run", "a"));
        assert_eq!(lock_key("dag", "a"), lock_key("dag", "a"));
    }

    #[test]
    fn migrations_are_numbered_in_order_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.description);
        }
    }
}
