//! Child-process supervision shared by the `command` and `process.*` kinds: a program runs in its
//! own process group with `PR_SET_PDEATHSIG`, its stdout/stderr lines go to the task log (lines
//! `::velostream:: {json}` carry outputs and progress, see ARCHITECTURE.md), and stopping it
//! signals the whole group, so no grandchild outlives its task.
//!
//! [`ProcessRegistry`] holds a run's background processes (process.spawn registers, process.stop
//! takes); the engine stops whatever is left when the run ends.

mod child;
mod registry;
mod resolve;

pub use child::{Child, ExitInfo, ProcessSpec, kill_leftover_group, spawn};
pub use registry::ProcessRegistry;
pub use resolve::resolve_program;
pub use velostream_common::protocol::{Line, Message, Progress, parse_line};

use std::path::PathBuf;

/// Receives what a supervised process prints.
pub trait LineSink: Send + Sync + 'static {
    /// A log line (stdout or stderr), without its newline.
    fn log(&self, line: &str);
    /// A message of a `::velostream::` line (output, progress or a series point).
    fn message(&self, message: Message);
    /// A line the program wrote to stderr; logged like any other line unless the sink keeps more.
    fn log_stderr(&self, line: &str) {
        self.log(line);
    }
}

/// Errors supervising a process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be found.
    #[error(
        "program {program:?} not found (looked in {searched}); give a path, put it on PATH, or build it with `cargo build --workspace`"
    )]
    NotFound {
        /// The name given.
        program: String,
        /// Where we looked.
        searched: String,
    },
    /// The program could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The resolved program.
        program: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the process failed.
    #[error("waiting for process {pid}: {source}")]
    Wait {
        /// The process.
        pid: u32,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A task id already has a registered background process.
    #[error("task {0} already has a registered process; stop it first")]
    AlreadyRegistered(String),
}
