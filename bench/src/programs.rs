//! Finding the programs the benchmark runs: the workspace binaries sit beside this one (cargo puts
//! them side by side), as ARCHITECTURE.md's "Programs are found" contract says.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::BenchError;

/// The folder of workspace binaries.
#[derive(Debug, Clone)]
pub struct Programs {
    dir: PathBuf,
}

/// Every program a full benchmark runs.
pub const ALL: &[&str] = &[
    "orchestrator",
    "velostream-producer",
    "velostream-consumer",
    "producer-bench",
    "consumer-bench",
];

impl Programs {
    /// The programs in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The programs beside the running executable.
    pub fn beside_current_exe() -> Result<Self, BenchError> {
        let exe = std::env::current_exe().map_err(|source| BenchError::Io {
            action: "finding the path of",
            path: "the running executable".into(),
            source,
        })?;
        Ok(Self::in_dir(exe.parent().unwrap_or(Path::new("."))))
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cargo profile they were built with (`release`, `debug`...): the folder's name.
    pub fn profile(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The path of `name`, which must exist.
    pub fn path(&self, name: &str) -> Result<PathBuf, BenchError> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(BenchError::MissingProgram {
                name: name.to_string(),
                dir: self.dir.clone(),
            })
        }
    }

    /// Checks that every program in `names` is built, naming all that are missing at once.
    pub fn check(&self, names: &[&str]) -> Result<(), BenchError> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !self.dir.join(n).is_file())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(BenchError::MissingProgram {
                name: missing.join(", "),
                dir: self.dir.clone(),
            })
        }
    }

    /// Builds the workspace binaries with their folder's profile (`cargo build --bins`, cargo
    /// from `$CARGO` when run by cargo), so a benchmark never measures stale programs.
    pub fn build(&self, repo: &Path) -> Result<(), BenchError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(repo).args([
            "build",
            "--bins",
            "-p",
            "orchestrator",
            "-p",
            "velostream-producer",
            "-p",
            "velostream-consumer",
            "--features",
            "velostream-producer/bench,velostream-consumer/bench",
        ]);
        match self.profile().as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let status = cmd.status().map_err(|source| BenchError::Spawn {
            program: cargo.to_string_lossy().into_owned(),
            source,
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(BenchError::Failed {
                program: crate::exec::describe(&cmd),
                status: status.to_string(),
                tail: "fix the build, or pass --no-build to measure the binaries already built"
                    .into(),
            })
        }
    }
}
