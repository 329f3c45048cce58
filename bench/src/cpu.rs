//! CPU per row, per process: what the producer, the broker, the consumer and ClickHouse each
//! spend on a million rows (from `/proc` and the programs' own summaries), and where a program's
//! CPU goes (a `perf record` sampling profile attached to its pid, summarized as its top frames).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};
use velostream_common::process::cpu_seconds;

/// CPU seconds each process spent on one piece of work; `None` where a process was not
/// measured (a server given on the command line has no pid here) or took no part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessCpu {
    /// `velostream-producer` (its own summary's `cpu_secs`).
    pub producer: Option<f64>,
    /// The Kafka broker.
    pub broker: Option<f64>,
    /// `velostream-consumer` (its own summary's `cpu_secs`).
    pub consumer: Option<f64>,
    /// The ClickHouse server.
    pub clickhouse: Option<f64>,
}

impl ProcessCpu {
    /// Every measured process's CPU seconds, summed.
    pub fn total(&self) -> f64 {
        self.each().iter().filter_map(|(_, s)| *s).sum()
    }

    /// (name, CPU seconds) in pipeline order.
    pub fn each(&self) -> [(&'static str, Option<f64>); 4] {
        [
            ("producer", self.producer),
            ("broker", self.broker),
            ("consumer", self.consumer),
            ("ClickHouse", self.clickhouse),
        ]
    }
}

/// One piece of work's CPU: the processes' seconds, the rows, the wall-clock window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuRun {
    /// Rows the work moved.
    pub rows: u64,
    /// The wall-clock seconds the CPU seconds were counted over.
    pub wall_seconds: f64,
    /// Each process's CPU seconds.
    pub cpu: ProcessCpu,
}

impl CpuRun {
    /// CPU seconds per million rows of `seconds`.
    pub fn per_million(&self, seconds: f64) -> f64 {
        if self.rows == 0 {
            f64::NAN
        } else {
            seconds * 1e6 / self.rows as f64
        }
    }

    /// Cores kept busy on average: all CPU seconds over the wall-clock window.
    pub fn cores_busy(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            self.cpu.total() / self.wall_seconds
        } else {
            f64::NAN
        }
    }
}

/// A running process's CPU from a starting point.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    pid: u32,
    start: f64,
}

impl Meter {
    /// Starts counting `pid`'s CPU now; `None` if there is no such process.
    pub fn start(pid: u32) -> Option<Self> {
        Some(Self {
            pid,
            start: cpu_seconds(pid)?,
        })
    }

    /// CPU seconds spent since [`Meter::start`]; `None` if the process is gone.
    pub fn seconds(&self) -> Option<f64> {
        Some(cpu_seconds(self.pid)? - self.start)
    }
}

/// [`Meter::start`] for an optional pid.
pub fn meter(pid: Option<u32>) -> Option<Meter> {
    pid.and_then(Meter::start)
}

/// One frame of a sampling profile: its share of the process's samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Percent of the samples with this frame on top (self time).
    pub percent: f64,
    /// The binary or library it is in.
    pub object: String,
    /// The function.
    pub symbol: String,
}

/// A process's profile summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Which process (`producer`, `broker`, `consumer`, `ClickHouse`).
    pub process: String,
    /// What it was doing (e.g. `alone, 2,000,000 rows`).
    pub during: String,
    /// Samples taken.
    pub samples: u64,
    /// The frames with the most self time, most first.
    pub frames: Vec<Frame>,
    /// Self time summed by component (a Rust crate, a C library, the kernel), most first.
    #[serde(default)]
    pub components: Vec<(String, f64)>,
}

/// Sampling frequency: low enough to cost the profiled process ~1%.
const FREQUENCY_HZ: &str = "499";
/// Frames kept per profile.
const TOP_FRAMES: usize = 8;

/// Whether `perf` runs here (Debian's `linux-perf`); the reason if not.
pub fn perf_available() -> Result<(), String> {
    match Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`perf --version` exited with {s}")),
        Err(e) => Err(format!(
            "`perf` cannot run ({e}): install Debian's linux-perf for the profiles"
        )),
    }
}

/// `perf record` of one process until [`Profiler::finish`]: attached to a running server, or
/// running a program it starts (which follows the threads the program creates; attaching to a
/// just-started program misses them).
#[derive(Debug)]
pub struct Profiler {
    process: String,
    data: PathBuf,
    perf: Child,
}

impl Profiler {
    fn record(process: &str, work: &Path) -> (PathBuf, Command) {
        let data = work.join(format!(
            "perf-{}.data",
            process.to_lowercase().replace(' ', "-")
        ));
        let mut perf = Command::new("perf");
        perf.args(["record", "--quiet", "-F", FREQUENCY_HZ, "-o"])
            .arg(&data);
        (data, perf)
    }

    /// Starts sampling the running process `pid` into `work/perf-<name>.data`; `None` (with a
    /// warning) if perf cannot start.
    pub fn attach(pid: u32, process: &str, work: &Path) -> Option<Self> {
        let (data, mut perf) = Self::record(process, work);
        let log = std::fs::File::create(data.with_extension("log")).ok()?;
        let perf = perf
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        match perf {
            Ok(perf) => Some(Self {
                process: process.to_string(),
                data,
                perf,
            }),
            Err(error) => {
                tracing::warn!(%error, process, "perf record did not start; no profile");
                None
            }
        }
    }

    /// `cmd` run under `perf record` (its arguments, environment and directory kept); the caller
    /// sets its stdio and spawns it, then hands the child to [`Profiler::running`].
    pub fn wrap(cmd: &Command, process: &str, work: &Path) -> (PathBuf, Command) {
        let (data, mut perf) = Self::record(process, work);
        perf.arg("--").arg(cmd.get_program()).args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => perf.env(key, v),
                None => perf.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            perf.current_dir(dir);
        }
        (data, perf)
    }

    /// The profiler of a [`Profiler::wrap`]ped command that was spawned as `perf`.
    pub fn running(perf: Child, data: PathBuf, process: &str) -> Self {
        Self {
            process: process.to_string(),
            data,
            perf,
        }
    }

    /// The pid of the program a wrapped perf started (its only child), waiting up to 10 s for it.
    pub fn program_pid(&self) -> Option<u32> {
        let children = format!("/proc/{0}/task/{0}/children", self.perf.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Some(pid) = std::fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
            {
                return Some(pid);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        None
    }

    /// The perf process (a wrapped program's exit is its exit).
    pub fn child(&mut self) -> &mut Child {
        &mut self.perf
    }

    /// Stops sampling (SIGINT, as perf expects; it ends by itself when its process exits) and
    /// summarizes the profile; `None` (with a warning) if perf recorded nothing readable.
    pub fn finish(mut self, during: &str) -> Option<Profile> {
        if matches!(self.perf.try_wait(), Ok(None)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.perf.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let _ = self.perf.wait();
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,sym",
                "--percent-limit",
                "0.01",
                "-i",
            ])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output();
        let text = match report {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            Ok(out) => {
                tracing::warn!(process = %self.process, status = %out.status, data = %self.data.display(), "perf report failed; no profile");
                return None;
            }
            Err(error) => {
                tracing::warn!(%error, process = %self.process, "perf report did not run; no profile");
                return None;
            }
        };
        let (samples, frames) = parse_report(&text);
        Some(Profile {
            process: self.process,
            during: during.to_string(),
            samples,
            components: components(&frames),
            frames: frames.into_iter().take(TOP_FRAMES).collect(),
        })
    }
}

/// Self time summed by component, the [`TOP_FRAMES`] largest, most first.
fn components(frames: &[Frame]) -> Vec<(String, f64)> {
    let mut sums: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for f in frames {
        *sums.entry(component(f)).or_default() += f.percent;
    }
    let mut sums: Vec<(String, f64)> = sums
        .into_iter()
        .map(|(c, p)| (c, (p * 10.0).round() / 10.0))
        .collect();
    sums.sort_by(|a, b| b.1.total_cmp(&a.1));
    sums.truncate(TOP_FRAMES);
    sums
}

/// What a frame belongs to: the crate of a Rust path, librdkafka and its bundled C libraries by
/// their prefixes, the kernel, else the binary or library it is in.
fn component(frame: &Frame) -> String {
    let symbol = frame.symbol.trim_start_matches('<');
    if frame.object.starts_with("[kernel") {
        return "kernel".into();
    }
    if symbol.starts_with("rd_kafka") || symbol.starts_with("rd_") {
        return "librdkafka".into();
    }
    if symbol.starts_with("LZ4") {
        return "lz4 (C, in librdkafka)".into();
    }
    if symbol.starts_with("ZSTD") || symbol.starts_with("HUF_") {
        return "zstd (C)".into();
    }
    if let Some((krate, _)) = symbol.split_once("::")
        && !krate.is_empty()
        && krate.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return krate.into();
    }
    frame.object.clone()
}

/// The sample count and the frames of `perf report --stdio --no-children --sort dso,sym`.
fn parse_report(text: &str) -> (u64, Vec<Frame>) {
    let samples = text
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("# Samples: ")?;
            let n = rest.split_whitespace().next()?;
            // perf abbreviates large counts: "12K".
            match n.strip_suffix('K') {
                Some(k) => k.parse::<u64>().ok().map(|k| k * 1000),
                None => n.parse().ok(),
            }
        })
        .unwrap_or(0);
    let frames = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.trim();
            let (percent, rest) = l.split_once('%')?;
            let percent: f64 = percent.trim().parse().ok()?;
            let rest = rest.trim_start();
            let (object, rest) = rest.split_once(char::is_whitespace)?;
            let symbol = rest
                .trim_start()
                .trim_start_matches("[.]")
                .trim_start_matches("[k]")
                .trim();
            Some(Frame {
                percent,
                object: object.to_string(),
                symbol: shorten(symbol),
            })
        })
        .collect();
    (samples, frames)
}

/// A symbol short enough for a table: Rust's hash suffix dropped, long paths cut in the middle.
fn shorten(symbol: &str) -> String {
    let symbol = match symbol.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head
        }
        _ => symbol,
    };
    const MAX: usize = 100;
    if symbol.chars().count() <= MAX {
        return symbol.to_string();
    }
    let head: String = symbol.chars().take(MAX / 2).collect();
    let tail: String = symbol
        .chars()
        .rev()
        .take(MAX / 2 - 1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perf_report_gives_its_samples_and_top_frames() {
        let text = "\
# To display the perf.data header info, please use --header/--header-only options.
#
# Total Lost Samples: 0
#
# Samples: 12K of event 'cpu-clock:ppp'
# Event count (approx.): 462925848
#
# Overhead  Shared Object        Symbol
# ........  ...................  ......
#
    21.50%  velostream-consumer  [.] velostream_consumer::record::scan::Scanner::next::h0123456789abcdef
     7.79%  libc.so.6            [.] __memmove_avx_unaligned_erms
     2.00%  [kernel.kallsyms]    [k] copy_user_generic_string
";
        let (samples, frames) = parse_report(text);
        assert_eq!(samples, 12_000);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].percent, 21.5);
        assert_eq!(frames[0].object, "velostream-consumer");
        assert_eq!(
            frames[0].symbol,
            "velostream_consumer::record::scan::Scanner::next"
        );
        assert_eq!(frames[2].symbol, "copy_user_generic_string");
        assert_eq!(
            components(&frames),
            [
                ("velostream_consumer".to_string(), 21.5),
                ("libc.so.6".to_string(), 7.8),
                ("kernel".to_string(), 2.0)
            ]
        );
    }

    #[test]
    fn cpu_per_million_rows_and_cores_busy() {
        let run = CpuRun {
            rows: 2_000_000,
            wall_seconds: 4.0,
            cpu: ProcessCpu {
                producer: Some(2.0),
                broker: Some(1.0),
                consumer: Some(3.0),
                clickhouse: None,
            },
        };
        assert_eq!(run.cpu.total(), 6.0);
        assert_eq!(run.per_million(3.0), 1.5);
        assert_eq!(run.cores_busy(), 1.5);
        assert!(CpuRun::default().per_million(1.0).is_nan());
    }

    #[test]
    fn long_symbols_are_cut_in_the_middle() {
        let long = format!("a::{}::z", "b".repeat(300));
        let short = shorten(&long);
        assert_eq!(short.chars().count(), 100);
        assert!(short.starts_with("a::") && short.ends_with("::z"));
    }
}
