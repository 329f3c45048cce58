//! The embedded default [`Store`]: one SQLite file in WAL mode. Several processes (an
//! `orchestrator run` next to `orchestrator serve`) can share it: every write is one `BEGIN
//! IMMEDIATE` transaction and waits for the lock (`busy_timeout`) instead of failing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{
    DagVersion, NewNotification, NewRun, NotificationRecord, NotificationUpdate, Owner,
    ProcessRecord, Repair, RunAction, RunFilter, RunNotes, RunRecord, RunState, ServerLease, Store,
    StoreError, TaskInstance, TaskTry, TaskUpdate, rules,
};

/// How long a write waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    dag_id       TEXT NOT NULL,
    dag_file     TEXT,
    trigger      TEXT NOT NULL,
    state        TEXT NOT NULL,
    logical_date TEXT NOT NULL,
    params       TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    ended_at     TEXT,
    note         TEXT,
    owner_host   TEXT NOT NULL,
    owner_pid    INTEGER NOT NULL,
    owner_start  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_dag ON runs (dag_id, started_at);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state);
CREATE TABLE IF NOT EXISTS task_instances (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    task_id     TEXT NOT NULL,
    ord         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    try_number  INTEGER NOT NULL DEFAULT 0,
    started_at  TEXT,
    ended_at    TEXT,
    exit_code   INTEGER,
    error       TEXT,
    outputs     TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, task_id)
);
CREATE TABLE IF NOT EXISTS task_tries (
    run_id      TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    try_number  INTEGER NOT NULL,
    state       TEXT NOT NULL,
    started_at  TEXT,
    ended_at    TEXT,
    exit_code   INTEGER,
    error       TEXT,
    outputs     TEXT NOT NULL DEFAULT '{}',
    log_path    TEXT,
    PRIMARY KEY (run_id, task_id, try_number)
);
CREATE TABLE IF NOT EXISTS processes (
    run_id      TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL,
    host        TEXT NOT NULL,
    PRIMARY KEY (run_id, pid)
);
CREATE TABLE IF NOT EXISTS dag_flags (
    dag_id      TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0
);
-- DAG versions: the text each run ran, once per distinct text (hash = SHA-256 of the text).
CREATE TABLE IF NOT EXISTS dag_versions (
    hash        TEXT PRIMARY KEY,
    dag_id      TEXT NOT NULL,
    text        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS run_dag_versions (
    run_id      TEXT PRIMARY KEY REFERENCES runs (run_id),
    hash        TEXT NOT NULL REFERENCES dag_versions (hash)
);
-- Repairs of runs (clear, mark, resume), their history.
CREATE TABLE IF NOT EXISTS run_actions (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    tasks       TEXT NOT NULL,
    state       TEXT,
    from_state  TEXT NOT NULL,
    reason      TEXT,
    by_host     TEXT NOT NULL,
    by_pid      INTEGER NOT NULL,
    by_start    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS run_actions_by_run ON run_actions (run_id, seq);
CREATE TABLE IF NOT EXISTS run_notes (
    run_id      TEXT PRIMARY KEY REFERENCES runs (run_id),
    text        TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
";

/// The deliveries of notifications (`[[dag.notify]]`), apart from the tables above so that it
/// only ever adds to a database.
const NOTIFICATIONS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notifications (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT NOT NULL,
    dag_id       TEXT NOT NULL,
    event        TEXT NOT NULL,
    target_index INTEGER NOT NULL,
    target       TEXT NOT NULL,
    format       TEXT NOT NULL,
    summary      TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    detail       TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_by_run ON notifications (run_id, id);
";

/// The leases of serving processes (`orchestrator serve`), apart from the tables above so that it
/// only ever adds to a database. A SQLite file lives on one host, where a dead server is seen at
/// once by its pid; the lease is kept alike on every backend.
const LEASES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS server_leases (
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    start_ticks  INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    renewed_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    PRIMARY KEY (host, pid, start_ticks)
);
";

const LEASE_COLUMNS: &str = "host, pid, start_ticks, started_at, renewed_at, expires_at";

fn lease_from_row(row: &Row<'_>, now: DateTime<Utc>) -> rusqlite::Result<ServerLease> {
    let time = |i| -> rusqlite::Result<DateTime<Utc>> {
        parse_ts(Some(row.get(i)?))?.ok_or(rusqlite::Error::InvalidColumnIndex(i))
    };
    let expires_at = time(5)?;
    Ok(ServerLease {
        owner: Owner {
            host: row.get(0)?,
            pid: row.get(1)?,
            start_ticks: row.get::<_, i64>(2)? as u64,
        },
        started_at: time(3)?,
        renewed_at: time(4)?,
        expires_at,
        expired: rules::lease_expired(expires_at, now),
    })
}

/// A [`Store`] in a SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and its parent directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let err = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // Several processes may open a brand-new file at once: switching it to WAL and creating the
        // schema can report SQLITE_BUSY without waiting (SQLite's deadlock avoidance), so retry.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::prepare(&conn) {
                Ok(()) => break,
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(err(e)),
            }
        }
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// Pragmas and schema, on every open.
    fn prepare(conn: &Connection) -> rusqlite::Result<()> {
        // WAL lets readers (the web UI) go on while a run writes; NORMAL sync is durable across
        // process crashes, which is what we guard against (a power cut may lose the last writes).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(NOTIFICATIONS_SCHEMA)?;
        conn.execute_batch(LEASES_SCHEMA)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Runs `f` in an immediate (write-locking) transaction.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }
}

/// Timestamps are stored as fixed-width RFC 3339 UTC text, so they sort as text.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: Option<String>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
    })
    .transpose()
}

fn conversion(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn parse_map(s: String) -> rusqlite::Result<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_str(&s).map_err(conversion)
}

fn json(map: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::Value::Object(map.clone()).to_string()
}

const RUN_COLUMNS: &str = "run_id, dag_id, dag_file, trigger, state, logical_date, params, started_at, ended_at, note, owner_host, owner_pid, owner_start";

/// [`RUN_COLUMNS`] and the run's DAG version, for `SELECT ... FROM runs`.
const RUN_SELECT: &str = "run_id, dag_id, dag_file, trigger, state, logical_date, params, started_at, ended_at, note, owner_host, owner_pid, owner_start,
    (SELECT hash FROM run_dag_versions v WHERE v.run_id = runs.run_id)";

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        run_id: row.get(0)?,
        dag_id: row.get(1)?,
        dag_file: row.get::<_, Option<String>>(2)?.map(PathBuf::from),
        trigger: row.get::<_, String>(3)?.parse().map_err(conversion)?,
        state: row.get::<_, String>(4)?.parse().map_err(conversion)?,
        logical_date: parse_ts(row.get(5)?)?.unwrap_or_default(),
        params: parse_map(row.get(6)?)?,
        started_at: parse_ts(row.get(7)?)?.unwrap_or_default(),
        ended_at: parse_ts(row.get(8)?)?,
        note: row.get(9)?,
        owner: Owner {
            host: row.get(10)?,
            pid: row.get(11)?,
            start_ticks: row.get::<_, i64>(12)? as u64,
        },
        dag_hash: row.get(13)?,
    })
}

/// Every row of a query (a cached statement), mapped by `row`.
fn select<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    c.prepare_cached(sql)?.query_map(params, row)?.collect()
}

const NOTIFICATION_COLUMNS: &str = "id, run_id, dag_id, event, target_index, target, format, summary, state, attempts, detail, created_at, updated_at";

fn notification_from_row(row: &Row<'_>) -> rusqlite::Result<NotificationRecord> {
    Ok(NotificationRecord {
        id: row.get(0)?,
        run_id: row.get(1)?,
        dag_id: row.get(2)?,
        event: row.get(3)?,
        target_index: row.get(4)?,
        target: row.get(5)?,
        format: row.get(6)?,
        summary: row.get(7)?,
        state: row.get::<_, String>(8)?.parse().map_err(conversion)?,
        attempts: row.get(9)?,
        detail: row.get(10)?,
        created_at: parse_ts(row.get(11)?)?.unwrap_or_default(),
        updated_at: parse_ts(row.get(12)?)?.unwrap_or_default(),
    })
}

const PROCESS_COLUMNS: &str = "run_id, task_id, pid, start_ticks, host";

/// Writes a run's state, end, note and owner back.
fn save_run_state(tx: &rusqlite::Transaction<'_>, run: &RunRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE runs SET state = ?2, ended_at = ?3, note = ?4, owner_host = ?5, owner_pid = ?6,
            owner_start = ?7 WHERE run_id = ?1",
    )?
    .execute(params![
        run.run_id,
        run.state.as_str(),
        run.ended_at.map(ts),
        run.note,
        run.owner.host,
        run.owner.pid,
        run.owner.start_ticks as i64,
    ])?;
    Ok(())
}

const ACTION_COLUMNS: &str =
    "run_id, at, kind, tasks, state, reason, by_host, by_pid, by_start, from_state";

fn action_from_row(row: &Row<'_>) -> rusqlite::Result<RunAction> {
    Ok(RunAction {
        run_id: row.get(0)?,
        at: parse_ts(row.get(1)?)?.unwrap_or_default(),
        kind: row.get::<_, String>(2)?.parse().map_err(conversion)?,
        tasks: serde_json::from_str(&row.get::<_, String>(3)?).map_err(conversion)?,
        state: row
            .get::<_, Option<String>>(4)?
            .map(|s| s.parse())
            .transpose()
            .map_err(conversion)?,
        reason: row.get(5)?,
        by: Owner {
            host: row.get(6)?,
            pid: row.get(7)?,
            start_ticks: row.get::<_, i64>(8)? as u64,
        },
        from_state: row.get::<_, String>(9)?.parse().map_err(conversion)?,
    })
}

fn process_from_row(row: &Row<'_>) -> rusqlite::Result<ProcessRecord> {
    Ok(ProcessRecord {
        run_id: row.get(0)?,
        task_id: row.get(1)?,
        pid: row.get(2)?,
        start_ticks: row.get::<_, i64>(3)? as u64,
        host: row.get(4)?,
    })
}

const INSTANCE_COLUMNS: &str =
    "run_id, task_id, state, try_number, started_at, ended_at, exit_code, error, outputs";

fn instance_from_row(row: &Row<'_>) -> rusqlite::Result<TaskInstance> {
    Ok(TaskInstance {
        run_id: row.get(0)?,
        task_id: row.get(1)?,
        state: row.get::<_, String>(2)?.parse().map_err(conversion)?,
        try_number: row.get(3)?,
        started_at: parse_ts(row.get(4)?)?,
        ended_at: parse_ts(row.get(5)?)?,
        exit_code: row.get(6)?,
        error: row.get(7)?,
        outputs: parse_map(row.get(8)?)?,
    })
}

const TRY_COLUMNS: &str =
    "run_id, task_id, try_number, state, started_at, ended_at, exit_code, error, outputs, log_path";

fn try_from_row(row: &Row<'_>) -> rusqlite::Result<TaskTry> {
    Ok(TaskTry {
        run_id: row.get(0)?,
        task_id: row.get(1)?,
        try_number: row.get(2)?,
        state: row.get::<_, String>(3)?.parse().map_err(conversion)?,
        started_at: parse_ts(row.get(4)?)?,
        ended_at: parse_ts(row.get(5)?)?,
        exit_code: row.get(6)?,
        error: row.get(7)?,
        outputs: parse_map(row.get(8)?)?,
        log_path: row.get::<_, Option<String>>(9)?.map(PathBuf::from),
    })
}

/// Writes a task instance's mutable fields back.
fn save_instance(tx: &rusqlite::Transaction<'_>, ti: &TaskInstance) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE task_instances SET state = ?3, try_number = ?4, started_at = ?5, ended_at = ?6,
            exit_code = ?7, error = ?8, outputs = ?9
         WHERE run_id = ?1 AND task_id = ?2",
    )?
    .execute(params![
        ti.run_id,
        ti.task_id,
        ti.state.as_str(),
        ti.try_number,
        ti.started_at.map(ts),
        ti.ended_at.map(ts),
        ti.exit_code,
        ti.error,
        json(&ti.outputs),
    ])?;
    Ok(())
}

/// Inserts or replaces a try.
fn save_try(tx: &rusqlite::Transaction<'_>, t: &TaskTry) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO task_tries ({TRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![
        t.run_id,
        t.task_id,
        t.try_number,
        t.state.as_str(),
        t.started_at.map(ts),
        t.ended_at.map(ts),
        t.exit_code,
        t.error,
        json(&t.outputs),
        t.log_path.as_ref().map(|p| p.display().to_string()),
    ])?;
    Ok(())
}

/// Applies one task update inside a write transaction: load, [`rules`], save.
fn apply_update(
    tx: &rusqlite::Transaction<'_>,
    run_id: &str,
    u: &TaskUpdate,
) -> rusqlite::Result<bool> {
    let Some(mut ti) = tx
        .prepare_cached(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM task_instances WHERE run_id = ?1 AND task_id = ?2"
        ))?
        .query_row(params![run_id, u.task_id], instance_from_row)
        .optional()?
    else {
        return Ok(false);
    };
    if u.state.is_some() {
        ti.apply(u);
        save_instance(tx, &ti)?;
    }
    if u.try_number > 0 {
        let current = tx
            .prepare_cached(&format!(
                "SELECT {TRY_COLUMNS} FROM task_tries WHERE run_id = ?1 AND task_id = ?2 AND try_number = ?3"
            ))?
            .query_row(params![run_id, u.task_id, u.try_number], try_from_row)
            .optional()?;
        if let Some(t) = TaskTry::updated(run_id, current, u) {
            save_try(tx, &t)?;
        }
    }
    Ok(true)
}

/// [`apply_update`], with an unknown run or task reported as [`StoreError::NoSuchRun`].
fn apply_checked(
    tx: &rusqlite::Transaction<'_>,
    run_id: &str,
    u: &TaskUpdate,
    err: &dyn Fn(rusqlite::Error) -> StoreError,
) -> Result<(), StoreError> {
    match apply_update(tx, run_id, u) {
        Ok(true) => Ok(()),
        Ok(false) => Err(StoreError::NoSuchRun(format!(
            "{run_id} (task {})",
            u.task_id
        ))),
        Err(e) => Err(err(e)),
    }
}

impl Store for SqliteStore {
    fn create_run(&self, run: &NewRun) -> Result<RunRecord, StoreError> {
        self.write(|tx| {
            let e = |source| self.err(source);
            let active: u32 = tx
                .query_row(
                    "SELECT COUNT(*) FROM runs WHERE dag_id = ?1 AND state = 'running'",
                    [&run.dag_id],
                    |r| r.get(0),
                )
                .map_err(e)?;
            // One writer at a time (BEGIN IMMEDIATE): the claim's check and the insert below are
            // one step for every process on the file.
            let claim: Option<String> = tx
                .query_row(
                    "SELECT run_id FROM runs WHERE dag_id = ?1 AND logical_date = ?2 AND trigger = 'scheduled' LIMIT 1",
                    params![run.dag_id, ts(run.logical_date)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(e)?;
            rules::slot_unclaimed(run, claim.as_deref())?;
            rules::admit(&run.dag_id, active, run.max_active_runs)?;
            let holder: Option<String> = tx
                .query_row(
                    "SELECT run_id FROM runs WHERE dag_id = ?1 AND logical_date = ?2 AND state = 'running'",
                    params![run.dag_id, ts(run.logical_date)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(e)?;
            rules::slot_free(run, holder.as_deref())?;
            let run_id = rules::unique_run_id(&run.run_id, |id| {
                tx.query_row("SELECT 1 FROM runs WHERE run_id = ?1", [id], |_| Ok(()))
                    .optional()
                    .map(|found| found.is_some())
            })
            .map_err(e)?;
            tx.execute(
                &format!("INSERT INTO runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, NULL, NULL, ?8, ?9, ?10)"),
                params![
                    run_id,
                    run.dag_id,
                    run.dag_file.as_ref().map(|p| p.display().to_string()),
                    run.trigger.as_str(),
                    ts(run.logical_date),
                    json(&run.params),
                    ts(run.started_at),
                    run.owner.host,
                    run.owner.pid,
                    run.owner.start_ticks as i64,
                ],
            )
            .map_err(e)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO task_instances (run_id, task_id, ord, state) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(e)?;
            for (ord, ti) in rules::new_task_instances(run, &run_id).iter().enumerate() {
                insert
                    .execute(params![run_id, ti.task_id, ord as i64, ti.state.as_str()])
                    .map_err(e)?;
            }
            let record = rules::new_run_record(run, run_id);
            if let (Some(text), Some(hash)) = (&run.dag_text, &record.dag_hash) {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO dag_versions (hash, dag_id, text) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![hash, run.dag_id, text]))
                .map_err(e)?;
                tx.prepare_cached("INSERT INTO run_dag_versions (run_id, hash) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute(params![record.run_id, hash]))
                    .map_err(e)?;
            }
            Ok(record)
        })
    }

    fn finish_run(
        &self,
        run_id: &str,
        state: RunState,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let e = |source| self.err(source);
            let mut run = tx
                .query_row(
                    &format!("SELECT {RUN_SELECT} FROM runs WHERE run_id = ?1"),
                    [run_id],
                    run_from_row,
                )
                .optional()
                .map_err(e)?
                .ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
            run.finish(state, note, Utc::now());
            save_run_state(tx, &run).map_err(e)
        })
    }

    fn update_task(&self, run_id: &str, u: &TaskUpdate) -> Result<(), StoreError> {
        self.write(|tx| apply_checked(tx, run_id, u, &|e| self.err(e)))
    }

    fn update_tasks(&self, updates: &[(String, TaskUpdate)]) -> Result<(), StoreError> {
        // One transaction for the batch: one WAL commit instead of one per update.
        self.write(|tx| {
            for (run_id, u) in updates {
                apply_checked(tx, run_id, u, &|e| self.err(e))?;
            }
            Ok(())
        })
    }

    fn record_process(&self, p: &ProcessRecord) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO processes (run_id, task_id, pid, start_ticks, host) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![p.run_id, p.task_id, p.pid, p.start_ticks as i64, p.host]))
            .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    fn forget_process(&self, run_id: &str, pid: u32) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM processes WHERE run_id = ?1 AND pid = ?2")
                .and_then(|mut s| s.execute(params![run_id, pid]))
                .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    fn processes(&self, run_id: &str) -> Result<Vec<ProcessRecord>, StoreError> {
        self.read(|c| {
            select(
                c,
                &format!("SELECT {PROCESS_COLUMNS} FROM processes WHERE run_id = ?1 ORDER BY pid"),
                [run_id],
                process_from_row,
            )
            .map_err(|e| self.err(e))
        })
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {RUN_SELECT} FROM runs WHERE run_id = ?1"),
                [run_id],
                run_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
        })
    }

    fn runs(&self, f: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.read(|c| {
            let limit = if f.limit == 0 { -1 } else { f.limit as i64 };
            select(
                c,
                &format!(
                    "SELECT {RUN_SELECT} FROM runs
                     WHERE (?1 IS NULL OR dag_id = ?1) AND (?2 IS NULL OR state = ?2)
                       AND (?4 IS NULL OR trigger = ?4)
                     ORDER BY started_at DESC, rowid DESC LIMIT ?3"
                ),
                params![
                    f.dag_id,
                    f.state.map(RunState::as_str),
                    limit,
                    f.trigger.map(super::Trigger::as_str)
                ],
                run_from_row,
            )
            .map_err(|e| self.err(e))
        })
    }

    fn task_instances(&self, run_id: &str) -> Result<Vec<TaskInstance>, StoreError> {
        self.read(|c| {
            select(
                c,
                &format!(
                    "SELECT {INSTANCE_COLUMNS} FROM task_instances WHERE run_id = ?1 ORDER BY ord"
                ),
                [run_id],
                instance_from_row,
            )
            .map_err(|e| self.err(e))
        })
    }

    fn tries(&self, run_id: &str, task_id: &str) -> Result<Vec<TaskTry>, StoreError> {
        self.read(|c| {
            select(
                c,
                &format!("SELECT {TRY_COLUMNS} FROM task_tries WHERE run_id = ?1 AND task_id = ?2 ORDER BY try_number"),
                [run_id, task_id],
                try_from_row,
            )
            .map_err(|e| self.err(e))
        })
    }

    fn fail_orphaned_runs(
        &self,
        dag_id: Option<&str>,
        owner_alive: &dyn Fn(&Owner) -> bool,
    ) -> Result<Vec<(RunRecord, Vec<ProcessRecord>)>, StoreError> {
        self.write(|tx| {
            let e = |source| self.err(source);
            let running = select(
                tx,
                &format!(
                    "SELECT {RUN_SELECT} FROM runs WHERE state = 'running' AND (?1 IS NULL OR dag_id = ?1)"
                ),
                [dag_id],
                run_from_row,
            )
            .map_err(e)?;
            let now = Utc::now();
            let mut out = Vec::new();
            for mut run in running.into_iter().filter(|r| r.is_orphaned(owner_alive)) {
                run.close_orphaned(now);
                save_run_state(tx, &run).map_err(e)?;
                let of_run = |table: &str, columns: &str| {
                    format!("SELECT {columns} FROM {table} WHERE run_id = ?1")
                };
                let instances = select(
                    tx,
                    &of_run("task_instances", INSTANCE_COLUMNS),
                    [&run.run_id],
                    instance_from_row,
                )
                .map_err(e)?;
                for mut ti in instances {
                    if ti.close_orphaned(now) {
                        save_instance(tx, &ti).map_err(e)?;
                    }
                }
                let tries = select(
                    tx,
                    &of_run("task_tries", TRY_COLUMNS),
                    [&run.run_id],
                    try_from_row,
                )
                .map_err(e)?;
                for mut t in tries {
                    if t.close_orphaned(now) {
                        save_try(tx, &t).map_err(e)?;
                    }
                }
                let procs = select(
                    tx,
                    &of_run("processes", PROCESS_COLUMNS),
                    [&run.run_id],
                    process_from_row,
                )
                .map_err(e)?;
                tx.execute("DELETE FROM processes WHERE run_id = ?1", [&run.run_id])
                    .map_err(e)?;
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
        self.write(|tx| {
            let e = |source| self.err(source);
            let mut run = tx
                .query_row(
                    &format!("SELECT {RUN_SELECT} FROM runs WHERE run_id = ?1"),
                    [run_id],
                    run_from_row,
                )
                .optional()
                .map_err(e)?
                .ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
            let mut instances = select(
                tx,
                &format!(
                    "SELECT {INSTANCE_COLUMNS} FROM task_instances WHERE run_id = ?1 ORDER BY ord"
                ),
                [run_id],
                instance_from_row,
            )
            .map_err(e)?;
            let mut running = select(
                tx,
                &format!(
                    "SELECT {TRY_COLUMNS} FROM task_tries WHERE run_id = ?1 AND state = 'running'"
                ),
                [run_id],
                try_from_row,
            )
            .map_err(e)?;
            let holder: Option<String> = tx
                .query_row(
                    "SELECT run_id FROM runs WHERE dag_id = ?1 AND logical_date = ?2 AND state = 'running' AND run_id != ?3",
                    params![run.dag_id, ts(run.logical_date), run.run_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(e)?;
            let action = rules::repair(
                &mut run,
                &mut instances,
                &mut running,
                repair,
                owner_alive,
                holder.as_deref(),
            )?;
            save_run_state(tx, &run).map_err(e)?;
            for ti in &instances {
                save_instance(tx, ti).map_err(e)?;
            }
            for t in &running {
                save_try(tx, t).map_err(e)?;
            }
            tx.execute("DELETE FROM processes WHERE run_id = ?1", [run_id])
                .map_err(e)?;
            tx.execute(
                &format!("INSERT INTO run_actions ({ACTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    action.run_id,
                    ts(action.at),
                    action.kind.as_str(),
                    serde_json::to_string(&action.tasks).unwrap_or_default(),
                    action.state.map(|s| s.as_str()),
                    action.reason,
                    action.by.host,
                    action.by.pid,
                    action.by.start_ticks as i64,
                    action.from_state.as_str(),
                ],
            )
            .map_err(e)?;
            Ok(run)
        })
    }

    fn run_actions(&self, run_id: &str) -> Result<Vec<RunAction>, StoreError> {
        self.read(|c| {
            select(
                c,
                &format!("SELECT {ACTION_COLUMNS} FROM run_actions WHERE run_id = ?1 ORDER BY seq"),
                [run_id],
                action_from_row,
            )
            .map_err(|e| self.err(e))
        })
    }

    fn set_run_notes(&self, run_id: &str, text: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(|tx| {
            let e = |source| self.err(source);
            let exists = tx
                .query_row("SELECT 1 FROM runs WHERE run_id = ?1", [run_id], |_| Ok(()))
                .optional()
                .map_err(e)?
                .is_some();
            if !exists {
                return Err(StoreError::NoSuchRun(run_id.to_owned()));
            }
            tx.execute(
                "INSERT INTO run_notes (run_id, text, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id) DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at",
                params![run_id, text, ts(at)],
            )
            .map_err(e)?;
            Ok(())
        })
    }

    fn run_notes(&self, run_id: &str) -> Result<Option<RunNotes>, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT text, updated_at FROM run_notes WHERE run_id = ?1",
                [run_id],
                |r| {
                    Ok(RunNotes {
                        text: r.get(0)?,
                        updated_at: parse_ts(r.get(1)?)?.unwrap_or_default(),
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
        })
    }

    fn dag_version(&self, hash: &str) -> Result<Option<DagVersion>, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT hash, dag_id, text FROM dag_versions WHERE hash = ?1",
                [hash],
                |r| {
                    Ok(DagVersion {
                        hash: r.get(0)?,
                        dag_id: r.get(1)?,
                        text: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
        })
    }

    fn set_paused(&self, dag_id: &str, paused: bool) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO dag_flags (dag_id, paused) VALUES (?1, ?2)
                 ON CONFLICT (dag_id) DO UPDATE SET paused = excluded.paused",
                params![dag_id, paused],
            )
            .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    fn renew_lease(&self, owner: &Owner, lease: Duration) -> Result<bool, StoreError> {
        self.write(|tx| {
            let now = Utc::now();
            let previous = tx
                .query_row(
                    &format!("SELECT {LEASE_COLUMNS} FROM server_leases WHERE host = ?1 AND pid = ?2 AND start_ticks = ?3"),
                    params![owner.host, owner.pid, owner.start_ticks as i64],
                    |r| lease_from_row(r, now),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            let (l, lost) = rules::renew_lease(owner, previous.as_ref(), now, lease);
            tx.execute(
                &format!("INSERT OR REPLACE INTO server_leases ({LEASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    owner.host,
                    owner.pid,
                    owner.start_ticks as i64,
                    ts(l.started_at),
                    ts(l.renewed_at),
                    ts(l.expires_at)
                ],
            )
            .map_err(|e| self.err(e))?;
            Ok(lost)
        })
    }

    fn end_lease(&self, owner: &Owner) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE server_leases SET expires_at = min(expires_at, ?4) WHERE host = ?1 AND pid = ?2 AND start_ticks = ?3",
                params![owner.host, owner.pid, owner.start_ticks as i64, ts(Utc::now())],
            )
            .map(drop)
            .map_err(|e| self.err(e))
        })
    }

    fn leases(&self) -> Result<Vec<ServerLease>, StoreError> {
        let now = Utc::now();
        self.read(|c| {
            select(
                c,
                &format!("SELECT {LEASE_COLUMNS} FROM server_leases ORDER BY started_at"),
                [],
                |r| lease_from_row(r, now),
            )
            .map_err(|e| self.err(e))
        })
    }

    fn paused_dags(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        self.read(|c| {
            select(
                c,
                "SELECT dag_id FROM dag_flags WHERE paused != 0",
                [],
                |r| r.get(0),
            )
            .map(|ids: Vec<String>| ids.into_iter().collect())
            .map_err(|e| self.err(e))
        })
    }

    fn latest_logical_date(
        &self,
        dag_id: &str,
        trigger: super::Trigger,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(|c| {
            let latest: Option<String> = c
                .query_row(
                    "SELECT MAX(logical_date) FROM runs WHERE dag_id = ?1 AND trigger = ?2",
                    params![dag_id, trigger.as_str()],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            parse_ts(latest).map_err(|e| self.err(e))
        })
    }

    fn add_notification(&self, n: &NewNotification) -> Result<NotificationRecord, StoreError> {
        self.write(|tx| {
            let e = |source| self.err(source);
            let record = NotificationRecord::new(0, n);
            tx.prepare_cached(
                "INSERT INTO notifications (run_id, dag_id, event, target_index, target, format, summary, state, attempts, detail, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    record.run_id,
                    record.dag_id,
                    record.event,
                    record.target_index,
                    record.target,
                    record.format,
                    record.summary,
                    record.state.as_str(),
                    record.attempts,
                    record.detail,
                    ts(record.created_at),
                    ts(record.updated_at),
                ])
            })
            .map_err(e)?;
            Ok(NotificationRecord {
                id: tx.last_insert_rowid(),
                ..record
            })
        })
    }

    fn update_notification(&self, id: i64, u: &NotificationUpdate) -> Result<(), StoreError> {
        self.write(|tx| {
            let e = |source| self.err(source);
            let mut record = tx
                .prepare_cached(&format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = ?1"
                ))
                .and_then(|mut s| s.query_row([id], notification_from_row).optional())
                .map_err(e)?
                .ok_or(StoreError::NoSuchNotification(id))?;
            record.apply(u);
            tx.prepare_cached(
                "UPDATE notifications SET state = ?2, attempts = ?3, detail = ?4, updated_at = ?5 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    record.state.as_str(),
                    record.attempts,
                    record.detail,
                    ts(record.updated_at)
                ])
            })
            .map_err(e)?;
            Ok(())
        })
    }

    fn notifications(&self, run_id: &str) -> Result<Vec<NotificationRecord>, StoreError> {
        self.read(|c| {
            select(
                c,
                &format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE run_id = ?1 ORDER BY id"
                ),
                [run_id],
                notification_from_row,
            )
            .map_err(|e| self.err(e))
        })
    }

    fn state_counts(&self) -> Result<super::StateCounts, StoreError> {
        self.read(|c| {
            let e = |source| self.err(source);
            let mut counts = super::StateCounts::default();
            let runs: Vec<(String, String, u64)> = select(
                c,
                "SELECT dag_id, state, COUNT(*) FROM runs GROUP BY dag_id, state",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)),
            )
            .map_err(e)?;
            for (dag, state, n) in runs {
                let state = state.parse().map_err(|_| StoreError::Corrupt {
                    what: "run state",
                    value: state,
                })?;
                counts.runs.insert((dag, state), n);
            }
            let tasks: Vec<(String, u64)> = select(
                c,
                "SELECT state, COUNT(*) FROM task_instances GROUP BY state",
                [],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(e)?;
            for (state, n) in tasks {
                let state = state.parse().map_err(|_| StoreError::Corrupt {
                    what: "task state",
                    value: state,
                })?;
                counts.task_instances.insert(state, n);
            }
            Ok(counts)
        })
    }
}
