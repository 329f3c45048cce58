//! Where state lives: the database (a SQLite file, or a PostgreSQL database named by a URL), the
//! directory of try logs, and the layout of the logs inside it. The CLI and `orchestrator serve`
//! both open state through [`StateFiles`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{PostgresStore, SqliteStore, Store, StoreError, is_postgres_url, redact};

/// The log directory of a state that is a URL, unless `--logs` says otherwise: the same place as
/// the default SQLite file's logs, relative to the working directory.
pub const URL_STATE_LOG_DIR: &str = ".velostream/logs";

/// Which database holds the runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateLocation {
    /// A SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL database: `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    Postgres(String),
}

/// The state database and the directory of try logs.
#[derive(Clone, Debug)]
pub struct StateFiles {
    /// The database.
    pub location: StateLocation,
    /// Where try logs go, when set apart from the default (see [`StateFiles::log_dir`]).
    logs: Option<PathBuf>,
}

impl StateFiles {
    /// State in the SQLite file `db`.
    pub fn new(db: PathBuf) -> Self {
        Self {
            location: StateLocation::Sqlite(db),
            logs: None,
        }
    }

    /// State named as `--state` names it: a `postgres://` or `postgresql://` URL, else a path.
    pub fn parse(state: &str) -> Self {
        Self {
            location: if is_postgres_url(state) {
                StateLocation::Postgres(state.to_owned())
            } else {
                StateLocation::Sqlite(PathBuf::from(state))
            },
            logs: None,
        }
    }

    /// Try logs under `dir` instead of the default.
    pub fn with_log_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.logs = dir;
        self
    }

    /// Where try logs go: the directory set with [`with_log_dir`](Self::with_log_dir) (`--logs`),
    /// else `<dir of the SQLite file>/logs`, else (a URL) [`URL_STATE_LOG_DIR`]. With a URL the
    /// directory is made absolute, as the tries record it: the database is shared by processes
    /// that run in other working directories.
    pub fn log_dir(&self) -> PathBuf {
        match (&self.location, &self.logs) {
            (StateLocation::Sqlite(_), Some(dir)) => dir.clone(),
            (StateLocation::Sqlite(db), None) => db
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join("logs"),
            (StateLocation::Postgres(_), dir) => {
                let dir = dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(URL_STATE_LOG_DIR));
                std::path::absolute(&dir).unwrap_or(dir)
            }
        }
    }

    /// Opens (creating if needed: the SQLite file, or the PostgreSQL schema) the store.
    pub fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match &self.location {
            StateLocation::Sqlite(db) => Arc::new(SqliteStore::open(db)?),
            StateLocation::Postgres(url) => Arc::new(PostgresStore::open(url)?),
        })
    }
}

/// The SQLite file's path, or the URL without its password.
impl std::fmt::Display for StateFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            StateLocation::Sqlite(db) => write!(f, "{}", db.display()),
            StateLocation::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// The log file of one try: `<log_dir>/<dag>/<run>/<task>/try-<n>.log`.
pub fn try_log_path(
    log_dir: &Path,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    try_number: u32,
) -> PathBuf {
    log_dir
        .join(dag_id)
        .join(run_id)
        .join(task_id)
        .join(format!("try-{try_number}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_live_beside_the_database() {
        let files = StateFiles::new(PathBuf::from("/var/velostream/state.db"));
        assert_eq!(files.log_dir(), Path::new("/var/velostream/logs"));
        assert_eq!(
            StateFiles::new(PathBuf::from("state.db")).log_dir(),
            Path::new("./logs")
        );
        assert_eq!(
            try_log_path(&files.log_dir(), "d", "r", "t", 2),
            Path::new("/var/velostream/logs/d/r/t/try-2.log")
        );
    }

    #[test]
    fn a_url_state_keeps_logs_in_the_working_directory_unless_told() {
        let files = StateFiles::parse("postgres://v:secret@db:5432/velostream");
        assert!(matches!(files.location, StateLocation::Postgres(_)));
        assert_eq!(
            files.log_dir(),
            std::env::current_dir().unwrap().join(URL_STATE_LOG_DIR)
        );
        assert_eq!(files.to_string(), "postgres://v:***@db:5432/velostream");
        let files = files.with_log_dir(Some(PathBuf::from("/shared/logs")));
        assert_eq!(files.log_dir(), Path::new("/shared/logs"));
        let files = StateFiles::parse("state/x.db");
        assert_eq!(
            files.location,
            StateLocation::Sqlite(PathBuf::from("state/x.db"))
        );
        assert_eq!(files.log_dir(), Path::new("state/logs"));
    }
}
