//! The benchmark's errors: each says which step failed and what to do about it.

use std::path::PathBuf;

/// What can stop a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Programs the benchmark runs are not built.
    #[error(
        "missing from {}: {name}; build them with `cargo build --release --workspace --bins` (velostream-bench does unless --no-build)",
        dir.display()
    )]
    MissingProgram {
        /// The programs, comma-separated.
        name: String,
        /// Where they were looked for.
        dir: PathBuf,
    },
    /// A program could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A program ended with a failure.
    #[error("{program} failed ({status}); the end of its output:\n{tail}")]
    Failed {
        /// The program and its arguments.
        program: String,
        /// How it ended.
        status: String,
        /// Its last output lines.
        tail: String,
    },
    /// A program's machine-readable output could not be read.
    #[error("reading the results of {program} from {path}: {message}")]
    Results {
        /// The program.
        program: String,
        /// The file it wrote.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The benchmark DAG's run did not succeed.
    #[error("the benchmark DAG run {run_id} ended {state}: {detail}; see `orchestrator logs {run_id} <task> --state {}`", state_db.display())]
    RunFailed {
        /// The run.
        run_id: String,
        /// Its final state.
        state: String,
        /// The tasks that did not succeed.
        detail: String,
        /// The state database that holds its logs.
        state_db: PathBuf,
    },
    /// The orchestrator's state database could not be read.
    #[error("reading the orchestrator's state: {0}")]
    Store(#[from] orchestrator::store::StoreError),
    /// A file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// ClickHouse did not answer.
    #[error("asking ClickHouse at {url}: {message}")]
    ClickHouse {
        /// The server.
        url: String,
        /// What went wrong.
        message: String,
    },
}
