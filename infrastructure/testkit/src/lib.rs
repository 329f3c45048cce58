//! Test harness shared by every integration test: starts a fresh ClickHouse server, a fresh
//! Kafka-compatible broker (Tansu) or a fresh PostgreSQL server (the orchestrator's server-database
//! state) on free ports in a temp dir, waits until they answer, and stops them by PID when
//! dropped, also when the test panics.
//!
//! ClickHouse comes in two lanes ([`Lane`]): modern (26.9, the default) and legacy (Debian's
//! 18.16), chosen by `VELOSTREAM_CLICKHOUSE=modern|legacy` as everywhere else in the project.
//! [`ClickHouseCluster`] starts several servers of one lane as the shards of one cluster
//! (`remote_servers` in each one's config), for `Distributed` tables.
//! The broker comes in two storage modes ([`Storage`]): memory (the default) and durable (on a
//! local S3 server, s3rver, in the broker's temp dir), chosen by `VELOSTREAM_KAFKA_STORAGE` or by
//! a test that needs one ([`Kafka::start_with`]).
//!
//! It never skips: a missing binary panics with the command that installs it. Servers are also
//! started with `PR_SET_PDEATHSIG`, so a test process killed outright takes them down with it.
//! Ports come from [`free_port`], which another process may take before the server binds them: a
//! server is ready only once the listening sockets on its ports are its own, and a start that loses
//! a port is retried on fresh ports.
//!
//! ```no_run
//! let infra = velostream_testkit::Infra::start();
//! println!("{} {}", infra.kafka.bootstrap, infra.clickhouse.http_url);
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod wait;
pub use wait::{wait_for, wait_for_async};

/// The command that installs PostgreSQL 15 (and the other servers the tests need).
pub const INSTALL_TESTS_HINT: &str = "run `infrastructure/local/velostream-local install --for-tests` (as root) from the repository root";

/// The command that installs every server binary the harness needs.
pub const INSTALL_HINT: &str =
    "run `infrastructure/local/velostream-local install` (as root) from the repository root";

/// The ClickHouse user the native setup and the DAGs use (see `infrastructure/local/clickhouse/users.xml`).
pub const CLICKHOUSE_USER: &str = "velostream";
/// The password of [`CLICKHOUSE_USER`].
pub const CLICKHOUSE_PASSWORD: &str = "velostream";

/// The environment variable that selects the ClickHouse lane.
pub const LANE_ENV: &str = "VELOSTREAM_CLICKHOUSE";

/// Which ClickHouse the harness starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// ClickHouse 26.9 from the pinned chdb-core wheel, served by `infrastructure/local/clickhouse-modern`.
    Modern,
    /// Debian's `clickhouse-server` 18.16.
    Legacy,
}

impl Lane {
    /// The lane named by `VELOSTREAM_CLICKHOUSE` (`modern`, the default, or `legacy`).
    ///
    /// Panics on any other value, so a typo never runs the wrong lane silently.
    pub fn from_env() -> Self {
        match std::env::var(LANE_ENV) {
            Err(std::env::VarError::NotPresent) => Self::Modern,
            Ok(v) => Self::parse(&v).unwrap_or_else(|| {
                panic!("{LANE_ENV}={v:?}: expected `modern` (ClickHouse 26.9, the default) or `legacy` (Debian's 18.16)")
            }),
            Err(e) => panic!("{LANE_ENV}: {e}"),
        }
    }

    /// `modern` or `legacy` (an empty value means the default, modern).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "" | "modern" => Some(Self::Modern),
            "legacy" => Some(Self::Legacy),
            _ => None,
        }
    }

    /// The lane's name, as `VELOSTREAM_CLICKHOUSE` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Modern => "modern",
            Self::Legacy => "legacy",
        }
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The environment variable that selects the broker's storage.
pub const STORAGE_ENV: &str = "VELOSTREAM_KAFKA_STORAGE";

/// Where the broker keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Tansu's memory engine: fast; a broker that stops forgets every topic, message and group.
    Memory,
    /// Tansu's S3 engine on a local s3rver whose files live in the broker's temp dir: topics,
    /// messages and groups survive a SIGKILL of the broker ([`Kafka::restart`]).
    Durable,
}

impl Storage {
    /// The mode named by `VELOSTREAM_KAFKA_STORAGE` (`memory`, the default, or `durable`).
    ///
    /// Panics on any other value.
    pub fn from_env() -> Self {
        match std::env::var(STORAGE_ENV) {
            Err(std::env::VarError::NotPresent) => Self::Memory,
            Ok(v) => Self::parse(&v).unwrap_or_else(|| {
                panic!("{STORAGE_ENV}={v:?}: expected `memory` (the default) or `durable`")
            }),
            Err(e) => panic!("{STORAGE_ENV}: {e}"),
        }
    }

    /// `memory` or `durable` (empty means memory).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "" | "memory" => Some(Self::Memory),
            "durable" => Some(Self::Durable),
            _ => None,
        }
    }

    /// The mode's name, as `VELOSTREAM_KAFKA_STORAGE` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Durable => "durable",
        }
    }
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the testkit crate lives in <repo>/infrastructure/testkit")
}

/// The real NYC TLC sample (100,000 rows of January 2023) that ships with the repository in
/// `data/nyc-taxi/` (see `data/README.md`).
///
/// Override with `VELOSTREAM_TAXI_SAMPLE`. Panics with a clear message if the file is missing.
pub fn taxi_sample() -> PathBuf {
    let path = std::env::var_os("VELOSTREAM_TAXI_SAMPLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("data/nyc-taxi/yellow_tripdata_2023-01_100k.parquet"));
    assert!(
        path.is_file(),
        "the NYC taxi sample is missing at {}: set VELOSTREAM_TAXI_SAMPLE to a TLC yellow-taxi Parquet file",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (bound, read and released; the caller starts a server on it).
///
/// Another process may take the port before the caller binds it: servers of this harness check that
/// they own their ports and start again on fresh ones if not.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

/// `127.0.0.1:NNNN` such that the `n` (at most 10) ports `NNNN0` to `NNNN{n-1}` are free, for a
/// fleet of programs listening on `{{ replica }}`-numbered ports (`process.spawn` with `replicas`).
///
/// The block lies below the kernel's ephemeral range (`ip_local_port_range`), where the outgoing
/// connections of every other test take their local ports, and its start varies with each call
/// (the ephemeral port the kernel hands out), so concurrent tests seldom meet; the ports are
/// checked free but not held, as with [`free_port`].
pub fn free_port_block(n: u16) -> String {
    assert!((1..=10).contains(&n), "a block holds 1 to 10 ports");
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Blocks from port 10000 up to the ephemeral range.
    let blocks = (ephemeral_start / 10).saturating_sub(1000).max(1);
    for _ in 0..200 {
        let base = 1000 + free_port() % blocks;
        if (0..n).all(|r| TcpListener::bind(("127.0.0.1", base * 10 + r)).is_ok()) {
            return format!("127.0.0.1:{base}");
        }
    }
    panic!("no {n} consecutive free ports below {ephemeral_start}");
}

/// A fresh ClickHouse server and Kafka-compatible broker, stopped when dropped.
pub struct Infra {
    /// The broker.
    pub kafka: Kafka,
    /// The ClickHouse server.
    pub clickhouse: ClickHouse,
}

impl Infra {
    /// Starts both servers and waits until they answer.
    pub fn start() -> Self {
        Self {
            kafka: Kafka::start(),
            clickhouse: ClickHouse::start(),
        }
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
struct Guard {
    child: Option<Child>,
}

impl Guard {
    fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Self {
        let out = std::fs::File::create(log).expect("creating a server log file in the temp dir");
        let err = out.try_clone().expect("cloning a log file handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        set_parent_death_signal(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {name} ({:?}) failed: {e}; {INSTALL_HINT}",
                cmd.get_program()
            )
        });
        Self { child: Some(child) }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has already exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn stop(&mut self, signal: nix::sys::signal::Signal, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5));
    }
}

#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A start attempt lost one of its ports to another process; a retry on fresh ports fixes it.
#[derive(Debug)]
struct PortLost(String);

/// How often a server is started on fresh ports before the harness gives up.
const START_ATTEMPTS: usize = 5;

/// Runs `attempt` (which picks its own free ports) until it does not lose a port.
fn start_on_free_ports<T>(what: &str, mut attempt: impl FnMut() -> Result<T, PortLost>) -> T {
    let mut lost = Vec::new();
    for _ in 0..START_ATTEMPTS {
        match attempt() {
            Ok(started) => return started,
            Err(PortLost(why)) => lost.push(why),
        }
    }
    panic!("{what} lost its ports to other processes {START_ATTEMPTS} times in a row: {lost:?}")
}

/// Who listens on 127.0.0.1:`port` (any address), as far as process `pid` is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortOwner {
    Nobody,
    Us,
    Other,
}

/// The inodes of the sockets listening on `port`, from `/proc/net/tcp` and `/proc/net/tcp6`.
fn listening_inodes(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(&"0A"), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if local_port == Some(port) {
                inodes.push((*inode).to_string());
            }
        }
    }
    inodes
}

fn port_owner(pid: u32, port: u16) -> PortOwner {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return PortOwner::Nobody;
    }
    let ours = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            t.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_string)
        })
        .any(|inode| inodes.contains(&inode));
    if ours {
        PortOwner::Us
    } else {
        PortOwner::Other
    }
}

fn says_address_in_use(logs: &[PathBuf]) -> bool {
    logs.iter().any(|log| {
        std::fs::read_to_string(log).is_ok_and(|t| {
            t.contains("Address already in use")
                || t.contains("AddrInUse")
                || t.contains("address in use")
        })
    })
}

/// Waits until the server in `guard` listens on every one of `ports` itself and `answers()`.
///
/// Returns [`PortLost`] (after killing the server) when another process holds one of its ports or
/// it exits saying the address is in use; panics with the logs' tails on any other early exit or
/// when `timeout` passes.
fn wait_ready(
    what: &str,
    guard: &mut Guard,
    logs: &[PathBuf],
    ports: &[u16],
    timeout: Duration,
    mut answers: impl FnMut() -> bool,
) -> Result<(), PortLost> {
    let pid = guard.pid().expect("a server that was just spawned");
    let deadline = Instant::now() + timeout;
    let tails = || {
        logs.iter()
            .map(|l| format!("log {}:\n{}", l.display(), tail(l)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    loop {
        if let Some(status) = guard.exited() {
            if says_address_in_use(logs) {
                return Err(PortLost(format!(
                    "{what} exited: address in use ({ports:?})"
                )));
            }
            panic!("{what} exited during start-up ({status}); {}", tails());
        }
        let owners: Vec<PortOwner> = ports.iter().map(|&p| port_owner(pid, p)).collect();
        if let Some(i) = owners.iter().position(|o| *o == PortOwner::Other) {
            guard.stop(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5));
            return Err(PortLost(format!(
                "port {} taken by another process",
                ports[i]
            )));
        }
        if owners.iter().all(|o| *o == PortOwner::Us) && answers() {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready within {timeout:?}; {}",
            tails()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn find_binary(env: &str, candidates: &[PathBuf], on_path: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return found.clone();
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(on_path);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("{on_path} not found (looked at ${env}, {candidates:?} and PATH): {INSTALL_HINT}");
}

/// Path of the Tansu broker binary: `$VELOSTREAM_TANSU`, `$VELOSTREAM_HOME/bin/tansu`,
/// `<repo>/.velostream/bin/tansu`, then `tansu` on PATH.
pub fn tansu_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("VELOSTREAM_HOME") {
        candidates.push(PathBuf::from(home).join("bin/tansu"));
    }
    candidates.push(repo_root().join(".velostream/bin/tansu"));
    find_binary("VELOSTREAM_TANSU", &candidates, "tansu")
}

/// Path of s3rver's entry script (run with `node`), the durable broker's S3 server:
/// `$VELOSTREAM_S3RVER`, `$VELOSTREAM_HOME/lib/s3rver/...`, then `<repo>/.velostream/lib/s3rver/...`.
pub fn s3rver_script() -> PathBuf {
    const SCRIPT: &str = "lib/s3rver/node_modules/s3rver/bin/s3rver.js";
    if let Some(path) = std::env::var_os("VELOSTREAM_S3RVER") {
        return PathBuf::from(path);
    }
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("VELOSTREAM_HOME") {
        candidates.push(PathBuf::from(home).join(SCRIPT));
    }
    candidates.push(repo_root().join(".velostream").join(SCRIPT));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("s3rver (the durable broker's S3 server) not found in {candidates:?}: {INSTALL_HINT}"))
}

/// Path of `clickhouse-server`: `$VELOSTREAM_CLICKHOUSE_SERVER`, `/usr/sbin/clickhouse-server`, then PATH.
pub fn clickhouse_binary() -> PathBuf {
    find_binary(
        "VELOSTREAM_CLICKHOUSE_SERVER",
        &[PathBuf::from("/usr/sbin/clickhouse-server")],
        "clickhouse-server",
    )
}

/// The directory holding ClickHouse 26.9's `_chdb.abi3.so` (the modern lane):
/// `$VELOSTREAM_CHDB_LIB`, `$VELOSTREAM_HOME/lib/chdb-core/chdb`, then `<repo>/.velostream/lib/chdb-core/chdb`.
pub fn chdb_library() -> PathBuf {
    if let Some(dir) = std::env::var_os("VELOSTREAM_CHDB_LIB") {
        return PathBuf::from(dir);
    }
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("VELOSTREAM_HOME") {
        candidates.push(PathBuf::from(home).join("lib/chdb-core/chdb"));
    }
    candidates.push(repo_root().join(".velostream/lib/chdb-core/chdb"));
    candidates
        .iter()
        .find(|d| d.join("_chdb.abi3.so").is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!("ClickHouse 26.9 (_chdb.abi3.so) not found in {candidates:?}: {INSTALL_HINT}, or set VELOSTREAM_CLICKHOUSE=legacy")
        })
}

/// The folder of the pinned `kubernetes-validate` and its dependencies (run as
/// `PYTHONPATH=<it> python3 -m kubernetes_validate`): `$VELOSTREAM_HOME/lib/kubernetes-validate`,
/// then `<repo>/.velostream/lib/kubernetes-validate`.
pub fn kubernetes_validate_dir() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("VELOSTREAM_HOME") {
        candidates.push(PathBuf::from(home).join("lib/kubernetes-validate"));
    }
    candidates.push(repo_root().join(".velostream/lib/kubernetes-validate"));
    candidates
        .iter()
        .find(|d| d.join("kubernetes_validate").is_dir())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "kubernetes-validate not found in {candidates:?}: run `infrastructure/local/velostream-local install --for-tests` from the repository root"
            )
        })
}

/// A Kafka-compatible broker (Tansu) on a free port, with the [`Storage`] it was started with.
pub struct Kafka {
    /// `host:port` to pass as `bootstrap.servers`.
    pub bootstrap: String,
    /// The port the broker listens on.
    pub port: u16,
    /// Where it keeps its messages.
    pub storage: Storage,
    guard: Guard,
    /// The durable mode's S3 server and its port.
    s3: Option<(Guard, u16)>,
    log: PathBuf,
    dir: TempDir,
}

/// The bucket the durable broker keeps its data in.
const S3_BUCKET: &str = "tansu";

impl Kafka {
    /// Starts a broker with the storage `VELOSTREAM_KAFKA_STORAGE` selects (memory by default)
    /// and waits until it accepts connections on its own port.
    pub fn start() -> Self {
        Self::start_with(Storage::from_env())
    }

    /// Starts a broker with `storage` (for durable, its S3 server first) and waits until it
    /// accepts connections on its own port.
    pub fn start_with(storage: Storage) -> Self {
        start_on_free_ports("the Kafka broker", || {
            let dir = tempfile::Builder::new()
                .prefix(&format!("velostream-kafka-{storage}-"))
                .tempdir()
                .expect("creating a temp dir");
            let s3 = match storage {
                Storage::Memory => None,
                Storage::Durable => Some(Self::start_s3(dir.path())?),
            };
            let port = free_port();
            let s3_port = s3.as_ref().map(|(_, p)| *p);
            let log = dir.path().join("broker.log");
            let mut guard = Self::spawn(dir.path(), port, s3_port, &log);
            Self::wait_ready(&mut guard, &log, port)?;
            Ok(Self {
                bootstrap: format!("127.0.0.1:{port}"),
                port,
                storage,
                guard,
                s3,
                log,
                dir,
            })
        })
    }

    fn start_s3(dir: &Path) -> Result<(Guard, u16), PortLost> {
        let data = dir.join("s3");
        std::fs::create_dir_all(&data).expect("creating the S3 data dir");
        let port = free_port();
        let mut cmd = Command::new("node");
        cmd.arg(s3rver_script())
            .arg("-d")
            .arg(&data)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "--silent",
                "--no-vhost-buckets",
                "--configure-bucket",
                S3_BUCKET,
            ])
            .current_dir(dir);
        let log = dir.join("s3rver.log");
        let mut guard = Guard::spawn("s3rver (node)", cmd, &log);
        wait_ready(
            "the durable broker's S3 server",
            &mut guard,
            std::slice::from_ref(&log),
            &[port],
            Duration::from_secs(30),
            || {
                matches!(
                    http(port, "GET", &format!("/{S3_BUCKET}"), ""),
                    Ok((200, _))
                )
            },
        )?;
        Ok((guard, port))
    }

    fn spawn(dir: &Path, port: u16, s3_port: Option<u16>, log: &Path) -> Guard {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut cmd = Command::new(tansu_binary());
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .current_dir(dir);
        match s3_port {
            None => {
                cmd.args(["--storage-engine", "memory://tansu/"]);
            }
            Some(s3) => {
                cmd.args(["--storage-engine", &format!("s3://{S3_BUCKET}/")])
                    .env("AWS_ACCESS_KEY_ID", "S3RVER")
                    .env("AWS_SECRET_ACCESS_KEY", "S3RVER")
                    .env("AWS_DEFAULT_REGION", "us-east-1")
                    .env("AWS_ENDPOINT", format!("http://127.0.0.1:{s3}"))
                    .env("AWS_ALLOW_HTTP", "true");
            }
        }
        // Appended to, so a restarted broker's log follows the killed one's.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("opening the broker log");
        let err = out.try_clone().expect("cloning a log file handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        set_parent_death_signal(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting tansu ({:?}) failed: {e}; {INSTALL_HINT}",
                cmd.get_program()
            )
        });
        Guard { child: Some(child) }
    }

    fn wait_ready(guard: &mut Guard, log: &Path, port: u16) -> Result<(), PortLost> {
        wait_ready(
            "the Kafka broker",
            guard,
            &[log.to_path_buf()],
            &[port],
            Duration::from_secs(30),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        )
    }

    /// The broker's PID.
    pub fn pid(&self) -> Option<u32> {
        self.guard.pid()
    }

    /// Stops the broker now (SIGKILL). The memory engine loses every message; the durable one
    /// keeps what it acknowledged (its S3 server keeps running).
    pub fn kill(&mut self) {
        self.guard
            .stop(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5));
    }

    /// Starts the broker again on the same port (and, in durable mode, the same S3 server and
    /// data) after [`Kafka::kill`]; kills it first if it still runs. A memory broker comes back
    /// empty: no topics, no messages, no groups.
    ///
    /// Panics if another process took the port meanwhile (its clients know only this one).
    pub fn restart(&mut self) {
        self.kill();
        let s3_port = self.s3.as_ref().map(|(_, p)| *p);
        self.guard = Self::spawn(self.dir.path(), self.port, s3_port, &self.log);
        if let Err(PortLost(why)) = Self::wait_ready(&mut self.guard, &self.log, self.port) {
            panic!("the Kafka broker could not restart on its port: {why}");
        }
    }

    /// The broker's log so far (of every start).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A ClickHouse server of the selected [`Lane`] with our config on free ports and its own data dir.
pub struct ClickHouse {
    /// Base URL of the HTTP interface, e.g. `http://127.0.0.1:41234`.
    pub http_url: String,
    /// HTTP port.
    pub http_port: u16,
    /// Native protocol port.
    pub tcp_port: u16,
    /// User with a password (see [`CLICKHOUSE_USER`]).
    pub user: &'static str,
    /// Its password.
    pub password: &'static str,
    /// Which ClickHouse this is.
    pub lane: Lane,
    guard: Guard,
    dir: TempDir,
}

impl ClickHouse {
    /// Starts a server of the lane `VELOSTREAM_CLICKHOUSE` selects (modern by default) and waits
    /// until `/ping` answers.
    pub fn start() -> Self {
        Self::start_lane(Lane::from_env())
    }

    /// Starts a server of `lane` and waits until it listens on its own ports and `/ping` answers.
    pub fn start_lane(lane: Lane) -> Self {
        start_on_free_ports("ClickHouse", || {
            let dir = tempfile::Builder::new()
                .prefix(&format!("velostream-clickhouse-{lane}-"))
                .tempdir()
                .expect("creating a temp dir");
            let (http_port, tcp_port) = (free_port(), free_port());
            let guard = Self::spawn(lane, dir.path(), http_port, tcp_port);
            let mut ch = Self {
                http_url: format!("http://127.0.0.1:{http_port}"),
                http_port,
                tcp_port,
                user: CLICKHOUSE_USER,
                password: CLICKHOUSE_PASSWORD,
                lane,
                guard,
                dir,
            };
            ch.wait_ready()?;
            Ok(ch)
        })
    }

    fn spawn(lane: Lane, dir: &Path, http_port: u16, tcp_port: u16) -> Guard {
        let d = dir.display();
        // A shard of a cluster has the cluster's definition in its dir (see ClickHouseCluster).
        let cluster = dir.join(CLUSTER_CONFIG);
        let cluster = cluster.is_file().then_some(cluster);
        let cmd = match lane {
            Lane::Legacy => {
                let config = match &cluster {
                    Some(cluster) => legacy_config_with(dir, cluster),
                    None => repo_root().join("infrastructure/local/clickhouse/config.xml"),
                };
                let mut cmd = Command::new(clickhouse_binary());
                cmd.arg(format!("--config-file={}", config.display()))
                    .arg("--")
                    .arg(format!("--path={d}/data/"))
                    .arg(format!("--tmp_path={d}/tmp/"))
                    .arg(format!("--user_files_path={d}/user_files/"))
                    .arg(format!("--format_schema_path={d}/format_schemas/"))
                    .arg(format!("--http_port={http_port}"))
                    .arg(format!("--tcp_port={tcp_port}"))
                    .arg(format!("--logger.log={d}/server.log"))
                    .arg(format!("--logger.errorlog={d}/server.err.log"));
                cmd
            }
            Lane::Modern => {
                let mut cmd = Command::new("python3");
                cmd.arg(repo_root().join("infrastructure/local/clickhouse-modern"))
                    .arg("--lib")
                    .arg(chdb_library())
                    .arg("--dir")
                    .arg(dir)
                    .arg("--http-port")
                    .arg(http_port.to_string())
                    .arg("--tcp-port")
                    .arg(tcp_port.to_string());
                if let Some(cluster) = &cluster {
                    cmd.arg("--extra-config").arg(cluster);
                }
                cmd
            }
        };
        let mut cmd = cmd;
        cmd.current_dir(dir);
        let name = match lane {
            Lane::Legacy => "clickhouse-server (legacy lane)",
            Lane::Modern => "clickhouse-modern (modern lane)",
        };
        Guard::spawn(name, cmd, &dir.join("stdout.log"))
    }

    fn wait_ready(&mut self) -> Result<(), PortLost> {
        let port = self.http_port;
        let d = self.dir.path();
        let logs = [d.join("stdout.log"), d.join("server.err.log")];
        wait_ready(
            &format!("ClickHouse ({} lane)", self.lane),
            &mut self.guard,
            &logs,
            &[self.http_port, self.tcp_port],
            Duration::from_secs(90),
            || matches!(http(port, "GET", "/ping", ""), Ok((200, body)) if body.starts_with("Ok.")),
        )
    }

    /// The server's PID, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.guard.pid()
    }

    /// Stops the server now (SIGKILL), keeping its data dir and ports for [`ClickHouse::restart`].
    pub fn kill(&mut self) {
        self.guard
            .stop(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5));
    }

    /// Freezes the server (SIGSTOP): connections hang, as with an overloaded server.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGSTOP,
            );
        }
    }

    /// Resumes a server frozen by [`ClickHouse::pause`].
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }

    /// Starts the server again on the same ports and data after [`ClickHouse::kill`].
    ///
    /// Panics if another process took one of the ports meanwhile (its clients know only these).
    pub fn restart(&mut self) {
        self.kill();
        self.guard = Self::spawn(self.lane, self.dir.path(), self.http_port, self.tcp_port);
        if let Err(PortLost(why)) = self.wait_ready() {
            panic!("ClickHouse could not restart on its ports: {why}");
        }
    }

    /// Stops the server the way an operator does (SIGTERM) and waits until it exits (up to 60 s,
    /// then SIGKILL), keeping its data dir and ports for [`ClickHouse::restart`].
    pub fn terminate(&mut self) {
        self.guard
            .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    }

    /// `SELECT version()`.
    pub fn version(&self) -> String {
        self.query("SELECT version()").trim().to_string()
    }

    /// Runs a statement over HTTP as [`CLICKHOUSE_USER`] and returns the response body
    /// (TabSeparated). Panics with the server's message if it fails.
    pub fn query(&self, sql: &str) -> String {
        match self.try_query(sql) {
            Ok(body) => body,
            Err(e) => panic!("ClickHouse query failed: {e}\nquery: {sql}"),
        }
    }

    /// Like [`ClickHouse::query`] but returns the error instead of panicking.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        let path = format!("/?user={}&password={}", self.user, self.password);
        match http(self.http_port, "POST", &path, sql) {
            Ok((200, body)) => Ok(body),
            Ok((status, body)) => Err(format!("HTTP {status}: {}", body.trim())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Runs a query returning one number (e.g. `SELECT count() FROM t`).
    pub fn query_u64(&self, sql: &str) -> u64 {
        let body = self.query(sql);
        body.trim()
            .parse()
            .unwrap_or_else(|e| panic!("expected a number from {sql:?}, got {body:?}: {e}"))
    }

    /// The server's data and log directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The name of the cluster a [`ClickHouseCluster`] defines in its servers' `remote_servers`.
pub const CLUSTER_NAME: &str = "velostream";

/// The file in a shard's dir that holds the cluster's definition (`<remote_servers>`).
const CLUSTER_CONFIG: &str = "cluster.xml";

/// The `<remote_servers>` config defining cluster [`CLUSTER_NAME`]: one shard per native port, in
/// order, each reached as [`CLICKHOUSE_USER`] (valid on 18.16 and 26.x alike).
pub fn cluster_config(tcp_ports: &[u16]) -> String {
    let shards: String = tcp_ports
        .iter()
        .map(|port| {
            format!(
                "            <shard><replica><host>127.0.0.1</host><port>{port}</port>\
                 <user>{CLICKHOUSE_USER}</user><password>{CLICKHOUSE_PASSWORD}</password>\
                 </replica></shard>\n"
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\"?>\n<yandex>\n    <remote_servers>\n        <{CLUSTER_NAME}>\n{shards}        </{CLUSTER_NAME}>\n    </remote_servers>\n</yandex>\n"
    )
}

/// The legacy server's config for a shard: `infrastructure/local/clickhouse/config.xml` with the
/// cluster's `<remote_servers>` added, written into `dir` (18.16 takes nested elements from a
/// config file only, not from command-line overrides).
fn legacy_config_with(dir: &Path, cluster: &Path) -> PathBuf {
    let local = repo_root().join("infrastructure/local/clickhouse");
    let base = std::fs::read_to_string(local.join("config.xml")).expect("reading config.xml");
    let cluster = std::fs::read_to_string(cluster).expect("reading the cluster config");
    let remote = &cluster[cluster.find("<remote_servers>").expect("remote_servers")
        ..cluster.find("</remote_servers>").expect("remote_servers") + "</remote_servers>".len()];
    let users = local.join("users.xml");
    let config = base
        .replace(
            "<users_config>users.xml</users_config>",
            &format!("<users_config>{}</users_config>", users.display()),
        )
        .replace("</yandex>", &format!("    {remote}\n</yandex>"));
    let path = dir.join("config.xml");
    std::fs::write(&path, config).expect("writing the shard's config");
    path
}

/// Shards of one ClickHouse cluster ([`CLUSTER_NAME`]): servers of one [`Lane`], each on its own
/// free ports and data dir, each with the cluster in its config (`remote_servers`, every server
/// knowing every shard, so a `Distributed` table on any of them reads all). Stopped when dropped.
pub struct ClickHouseCluster {
    /// The shards, in the cluster's order (shard `i` is `shard_num` `i + 1` in `system.clusters`).
    pub shards: Vec<ClickHouse>,
}

impl ClickHouseCluster {
    /// `n` shards of the lane `VELOSTREAM_CLICKHOUSE` selects.
    pub fn start(n: usize) -> Self {
        Self::start_lane(Lane::from_env(), n)
    }

    /// `n` shards of `lane`, started together (the config names every shard's port, so all ports
    /// are chosen first; a shard that loses its port restarts the whole cluster on fresh ports).
    pub fn start_lane(lane: Lane, n: usize) -> Self {
        assert!(n >= 1, "a cluster has at least one shard");
        start_on_free_ports("ClickHouse cluster", || {
            let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
            let config = cluster_config(&ports.iter().map(|p| p.1).collect::<Vec<_>>());
            let mut shards: Vec<ClickHouse> = ports
                .iter()
                .enumerate()
                .map(|(i, &(http_port, tcp_port))| {
                    let dir = tempfile::Builder::new()
                        .prefix(&format!("velostream-clickhouse-{lane}-shard{}-", i + 1))
                        .tempdir()
                        .expect("creating a temp dir");
                    std::fs::write(dir.path().join(CLUSTER_CONFIG), &config)
                        .expect("writing the cluster config");
                    let guard = ClickHouse::spawn(lane, dir.path(), http_port, tcp_port);
                    ClickHouse {
                        http_url: format!("http://127.0.0.1:{http_port}"),
                        http_port,
                        tcp_port,
                        user: CLICKHOUSE_USER,
                        password: CLICKHOUSE_PASSWORD,
                        lane,
                        guard,
                        dir,
                    }
                })
                .collect();
            for shard in &mut shards {
                shard.wait_ready()?;
            }
            Ok(Self { shards })
        })
    }

    /// The shards' HTTP URLs, in order, comma-separated (the consumer's `--clickhouse-shards`).
    pub fn urls(&self) -> String {
        self.shards
            .iter()
            .map(|s| s.http_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The directory of PostgreSQL's server programs (`initdb`, `postgres`, `psql`, `pg_isready`):
/// `$VELOSTREAM_POSTGRES_BIN`, else Debian's `/usr/lib/postgresql/15/bin`.
pub fn postgres_bin_dir() -> PathBuf {
    let dir = std::env::var_os("VELOSTREAM_POSTGRES_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    assert!(
        dir.join("initdb").is_file() && dir.join("postgres").is_file(),
        "PostgreSQL 15 not found in {} (initdb, postgres): {INSTALL_TESTS_HINT}, or set VELOSTREAM_POSTGRES_BIN",
        dir.display()
    );
    dir
}

/// The PostgreSQL user and password of [`Postgres`].
pub const POSTGRES_USER: &str = "velostream";

/// A PostgreSQL server in its own fresh data dir (`initdb`), listening on 127.0.0.1 on a free
/// port, password authentication over TCP, durability off (fsync) for speed. Stopped by PID
/// (fast shutdown, then SIGKILL) when dropped; never the system's cluster or service.
///
/// PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
/// `postgres` user that Debian's package creates, and owns its temp dir.
pub struct Postgres {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// `postgres://velostream:velostream@127.0.0.1:PORT/velostream`.
    pub url: String,
    guard: Guard,
    bin: PathBuf,
    run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    databases: std::sync::atomic::AtomicU32,
    dir: TempDir,
}

impl Postgres {
    /// Initialises a data dir, starts the server, waits until it accepts connections, and creates
    /// the database `velostream`.
    pub fn start() -> Self {
        let bin = postgres_bin_dir();
        let run_as = Self::run_as();
        let dir = tempfile::Builder::new()
            .prefix("velostream-postgres-")
            .tempdir()
            .expect("creating a temp dir");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("password");
        std::fs::write(&pwfile, POSTGRES_USER).expect("writing the password file");
        if let Some((uid, gid)) = run_as {
            for p in [dir.path(), &pwfile] {
                nix::unistd::chown(p, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("giving {} to the postgres user: {e}", p.display()));
            }
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", POSTGRES_USER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        Self::as_user(&mut initdb, run_as);
        let out = initdb
            .output()
            .unwrap_or_else(|e| panic!("running initdb failed: {e}; {INSTALL_TESTS_HINT}"));
        assert!(
            out.status.success(),
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (port, guard) = start_on_free_ports("PostgreSQL", || {
            let port = free_port();
            Ok((port, Self::spawn(&bin, dir.path(), port, run_as)?))
        });
        let pg = Self {
            port,
            url: Self::url_of(port, "velostream"),
            guard,
            bin,
            run_as,
            databases: std::sync::atomic::AtomicU32::new(0),
            dir,
        };
        pg.create_database("velostream");
        pg
    }

    /// Starts `postgres` on the data in `dir` on `port` and waits until it accepts connections.
    fn spawn(
        bin: &Path,
        dir: &Path,
        port: u16,
        run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    ) -> Result<Guard, PortLost> {
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            // Its socket in its own dir, not the system's /var/run/postgresql.
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .current_dir(dir);
        Self::as_user(&mut cmd, run_as);
        // The log file is created here, by us; the server writes through the inherited fd.
        let log = dir.join("postgres.log");
        let mut guard = Guard::spawn("postgres", cmd, &log);
        let ready = bin.join("pg_isready");
        wait_ready(
            "PostgreSQL",
            &mut guard,
            std::slice::from_ref(&log),
            &[port],
            Duration::from_secs(60),
            || {
                Command::new(&ready)
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
            },
        )?;
        Ok(guard)
    }

    /// Stops the server (fast shutdown: its clients are disconnected) and starts it again on the
    /// same port and data. Panics if another process took the port meanwhile.
    pub fn restart(&mut self) {
        self.guard
            .stop(nix::sys::signal::Signal::SIGINT, Duration::from_secs(10));
        match Self::spawn(&self.bin, self.dir.path(), self.port, self.run_as) {
            Ok(guard) => self.guard = guard,
            Err(PortLost(why)) => panic!("PostgreSQL could not restart on its port: {why}"),
        }
    }

    /// The uid and gid to run the server as: the `postgres` user when we are root, else nobody
    /// else (ourselves).
    fn run_as() -> Option<(nix::unistd::Uid, nix::unistd::Gid)> {
        if !nix::unistd::Uid::effective().is_root() {
            return None;
        }
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!("PostgreSQL refuses to run as root and there is no `postgres` user (Debian's postgresql package creates it): {INSTALL_TESTS_HINT}")
            });
        Some((user.uid, user.gid))
    }

    fn as_user(cmd: &mut Command, run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>) {
        use std::os::unix::process::CommandExt;
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
    }

    fn url_of(port: u16, database: &str) -> String {
        format!("postgres://{POSTGRES_USER}:{POSTGRES_USER}@127.0.0.1:{port}/{database}")
    }

    /// Runs SQL with `psql` as [`POSTGRES_USER`] in `database` and returns its unaligned output;
    /// panics with psql's message if it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", POSTGRES_USER, "-d", database, "-c", sql])
            .env("PGPASSWORD", POSTGRES_USER)
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql failed ({}): {}\nSQL: {sql}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates the database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        Self::url_of(self.port, name)
    }

    /// Creates a database no one used yet (`fresh_1`, `fresh_2`...) and returns its URL.
    pub fn fresh_database(&self) -> String {
        let n = self
            .databases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.create_database(&format!("fresh_{n}"))
    }

    /// The server's PID.
    pub fn pid(&self) -> Option<u32> {
        self.guard.pid()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown (clients disconnected, a clean stop); the guard SIGKILLs after the grace.
        self.guard
            .stop(nix::sys::signal::Signal::SIGINT, Duration::from_secs(10));
    }
}

/// A minimal HTTP/1.0 request to 127.0.0.1:`port`, enough for the harness (no dependencies, sync).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {head:?}")))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> Guard {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let dir = std::env::temp_dir().join(format!("velostream-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Guard::spawn("sleep", cmd, &dir.join("sleep.log"))
    }

    #[test]
    fn a_port_held_by_another_process_is_lost_not_mistaken_for_ready() {
        // The race of `free_port`: someone else listens on the port before our server binds it,
        // and answers as if it were ours.
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let mut guard = sleeper();
        let pid = guard.pid().unwrap();
        assert_eq!(port_owner(pid, port), PortOwner::Other);
        assert_eq!(port_owner(std::process::id(), port), PortOwner::Us);
        let lost = wait_ready(
            "a server",
            &mut guard,
            &[],
            &[port],
            Duration::from_secs(5),
            || true,
        );
        let Err(PortLost(why)) = lost else {
            panic!("a port held by another process was taken as ready")
        };
        assert!(why.contains(&port.to_string()), "{why}");
        assert!(
            guard.child.is_none(),
            "the server on a lost port was not stopped"
        );
    }

    #[test]
    fn an_exit_saying_address_in_use_is_lost_and_the_start_retried() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'bind: Address already in use' >&2; exit 1"]);
        let mut guard = Guard::spawn("sh", cmd, &log);
        let lost = wait_ready(
            "a server",
            &mut guard,
            std::slice::from_ref(&log),
            &[free_port()],
            Duration::from_secs(10),
            || false,
        );
        assert!(lost.is_err(), "{lost:?}");

        let mut attempts = 0;
        let started = start_on_free_ports("a server", || {
            attempts += 1;
            if attempts < 3 {
                Err(PortLost("taken".into()))
            } else {
                Ok(attempts)
            }
        });
        assert_eq!(started, 3);
    }

    #[test]
    fn lanes_are_named_as_the_environment_variable_spells_them() {
        assert_eq!(Lane::parse("modern"), Some(Lane::Modern));
        assert_eq!(Lane::parse(""), Some(Lane::Modern));
        assert_eq!(Lane::parse("legacy"), Some(Lane::Legacy));
        assert_eq!(Lane::parse("26"), None);
        assert_eq!(Lane::Legacy.to_string(), "legacy");
    }
}
