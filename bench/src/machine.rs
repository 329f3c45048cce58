//! The machine and the versions a benchmark ran on: cores, memory, CPU model, load, kernel, the
//! Rust compiler, librdkafka, the broker and ClickHouse, and the commit of this repository.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs this process may use (`nproc`).
    pub cores: usize,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory in bytes (MemTotal).
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// Load averages (1, 5, 15 min) when the benchmark started.
    pub load_at_start: [f64; 3],
}

impl Machine {
    /// Reads the machine's facts from /proc (blank where unreadable).
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().find_map(|l| {
                    l.strip_prefix("MemTotal:")
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
            })
            .map_or(0, |kb| kb * 1024);
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_bytes,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            load_at_start: load_average(),
        }
    }
}

/// The 1, 5 and 15 minute load averages (zeros where unreadable).
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// Resident memory of process `pid` in bytes (VmRSS), if it is alive.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    })
}

/// The versions of what the benchmark ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Versions {
    /// `SELECT version()` of the ClickHouse server.
    pub clickhouse: String,
    /// The lane of the fresh ClickHouse servers (`modern`, `legacy`); `None` for a given server.
    #[serde(default)]
    pub clickhouse_lane: Option<String>,
    /// The broker (`tansu --version`, or the endpoint given).
    pub broker: String,
    /// librdkafka, linked into the producer and consumer.
    pub librdkafka: String,
    /// `rustc -V`.
    pub rustc: String,
    /// This repository's commit (`git describe`), with a note when the tree had changes.
    pub velostream: String,
}

/// librdkafka's version string.
pub fn librdkafka_version() -> String {
    rdkafka::util::get_rdkafka_version().1
}

/// `rustc -V` (of `$RUSTC` when set).
pub fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    first_line_of(Command::new(rustc).arg("-V")).unwrap_or_else(|| "unknown".into())
}

/// The first line `program --version` prints.
pub fn program_version(program: &Path) -> String {
    first_line_of(Command::new(program).arg("--version")).unwrap_or_else(|| "unknown".into())
}

/// `git describe --always --dirty` of `repo`, plus the commit date.
pub fn git_version(repo: &Path) -> String {
    let describe = first_line_of(Command::new("git").arg("-C").arg(repo).args([
        "describe",
        "--always",
        "--dirty=+uncommitted-changes",
    ]));
    let date =
        first_line_of(
            Command::new("git")
                .arg("-C")
                .arg(repo)
                .args(["log", "-1", "--format=%cs"]),
        );
    match (describe, date) {
        (Some(d), Some(t)) => format!("{d} ({t})"),
        (Some(d), None) => d,
        _ => "unknown (not a git checkout)".into(),
    }
}

fn first_line_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok().filter(|o| o.status.success())?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_is_described() {
        let m = Machine::detect();
        assert!(m.cores >= 1);
        assert!(m.memory_bytes > 0, "{m:?}");
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        assert!(rustc_version().starts_with("rustc "));
        assert!(!librdkafka_version().is_empty());
    }
}
