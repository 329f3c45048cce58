//! Running the programs a benchmark measures: output to a log file in the work folder, and on
//! failure an error that quotes the log's end.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::error::BenchError;

/// How many log lines a failure quotes.
const TAIL_LINES: usize = 30;

/// Starts `cmd` with stdout and stderr appended to `log`.
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child, BenchError> {
    let program = describe(cmd);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| BenchError::Io {
            action: "creating the log",
            path: log.to_path_buf(),
            source,
        })?;
    let err = file.try_clone().map_err(|source| BenchError::Io {
        action: "opening the log",
        path: log.to_path_buf(),
        source,
    })?;
    tracing::debug!(%program, log = %log.display(), "Starting");
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|source| BenchError::Spawn { program, source })
}

/// Runs `cmd` to completion with its output in `log`; fails unless it exits 0.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<(), BenchError> {
    let mut child = spawn_logged(cmd, log)?;
    let status = child.wait().map_err(|source| BenchError::Spawn {
        program: describe(cmd),
        source,
    })?;
    check_status(cmd, status, log)
}

/// An error unless `status` is success.
pub fn check_status(
    cmd: &Command,
    status: std::process::ExitStatus,
    log: &Path,
) -> Result<(), BenchError> {
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Failed {
            program: describe(cmd),
            status: status.to_string(),
            tail: tail(log),
        })
    }
}

/// The program and its arguments, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last lines of `log`.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Runs `cmd` to completion with stdout in `stdout` and stderr in `log`; fails unless it exits 0.
pub fn run_logged_split(cmd: &mut Command, stdout: &Path, log: &Path) -> Result<(), BenchError> {
    let program = describe(cmd);
    let create = |path: &Path| {
        std::fs::File::create(path).map_err(|source| BenchError::Io {
            action: "creating",
            path: path.to_path_buf(),
            source,
        })
    };
    let out = create(stdout)?;
    let err = create(log)?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|source| BenchError::Spawn { program, source })?;
    check_status(cmd, status, log)
}
