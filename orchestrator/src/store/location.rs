//! Where state lives: the database, the `logs/` directory beside it, and the layout of the try
//! logs inside it. The CLI and `orchestrator serve` both open state through [`StateFiles`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{SqliteStore, Store, StoreError};

/// The state database and the logs directory beside it.
#[derive(Clone, Debug)]
pub struct StateFiles {
    /// The SQLite database.
    pub db: PathBuf,
}

impl StateFiles {
    /// State at `db`.
    pub fn new(db: PathBuf) -> Self {
        Self { db }
    }

    /// `<dir of db>/logs`.
    pub fn log_dir(&self) -> PathBuf {
        self.db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("logs")
    }

    /// Opens (creating if needed) the store.
    pub fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(Arc::new(SqliteStore::open(&self.db)?))
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
}
