//! Test harness shared by every integration test: starts a fresh ClickHouse server and a fresh
//! Kafka-compatible broker (Tansu) on free ports in a temp dir, waits until they answer, and stops
//! them by PID when dropped, also when the test panics.
//!
//! It never skips: a missing binary panics with the command that installs it. Servers are also
//! started with `PR_SET_PDEATHSIG`, so a test process killed outright takes them down with it.
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

/// The command that installs every server binary the harness needs.
pub const INSTALL_HINT: &str =
    "run `infrastructure/local/velostream-local install` (as root) from the repository root";

/// The ClickHouse user the native setup and the DAGs use (see `infrastructure/local/clickhouse/users.xml`).
pub const CLICKHOUSE_USER: &str = "velostream";
/// The password of [`CLICKHOUSE_USER`].
pub const CLICKHOUSE_PASSWORD: &str = "velostream";

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
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
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
    name: &'static str,
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
        Self {
            name,
            child: Some(child),
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Panics with the log's tail if the process has already exited.
    fn assert_alive(&mut self, log: &Path) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "{} exited during start-up ({status}); log {}:\n{}",
                self.name,
                log.display(),
                tail(log)
            );
        }
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

fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
    mut alive: impl FnMut(),
) {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return;
        }
        alive();
        assert!(
            Instant::now() < deadline,
            "{what} not ready within {timeout:?}"
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

/// Path of `clickhouse-server`: `$VELOSTREAM_CLICKHOUSE_SERVER`, `/usr/sbin/clickhouse-server`, then PATH.
pub fn clickhouse_binary() -> PathBuf {
    find_binary(
        "VELOSTREAM_CLICKHOUSE_SERVER",
        &[PathBuf::from("/usr/sbin/clickhouse-server")],
        "clickhouse-server",
    )
}

/// A Kafka-compatible broker (Tansu, in-memory storage) on a free port.
pub struct Kafka {
    /// `host:port` to pass as `bootstrap.servers`.
    pub bootstrap: String,
    /// The port the broker listens on.
    pub port: u16,
    guard: Guard,
    log: PathBuf,
    _dir: TempDir,
}

impl Kafka {
    /// Starts a broker and waits until it accepts connections.
    pub fn start() -> Self {
        let binary = tansu_binary();
        let dir = tempfile::Builder::new()
            .prefix("velostream-kafka-")
            .tempdir()
            .expect("creating a temp dir");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut cmd = Command::new(&binary);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .current_dir(dir.path());
        let log = dir.path().join("broker.log");
        let mut guard = Guard::spawn("tansu", cmd, &log);
        wait_until(
            "the Kafka broker",
            Duration::from_secs(30),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || guard.assert_alive(&log),
        );
        Self {
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            guard,
            log,
            _dir: dir,
        }
    }

    /// The broker's PID.
    pub fn pid(&self) -> Option<u32> {
        self.guard.pid()
    }

    /// Stops the broker now (SIGKILL). The in-memory engine loses every message.
    pub fn kill(&mut self) {
        self.guard
            .stop(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5));
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A ClickHouse server with our config on free ports and its own data dir.
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
    guard: Guard,
    dir: TempDir,
}

impl ClickHouse {
    /// Starts a server and waits until `/ping` answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("velostream-clickhouse-")
            .tempdir()
            .expect("creating a temp dir");
        let (http_port, tcp_port) = (free_port(), free_port());
        let guard = Self::spawn(dir.path(), http_port, tcp_port);
        let mut ch = Self {
            http_url: format!("http://127.0.0.1:{http_port}"),
            http_port,
            tcp_port,
            user: CLICKHOUSE_USER,
            password: CLICKHOUSE_PASSWORD,
            guard,
            dir,
        };
        ch.wait_ready();
        ch
    }

    fn spawn(dir: &Path, http_port: u16, tcp_port: u16) -> Guard {
        let binary = clickhouse_binary();
        let config = repo_root().join("infrastructure/local/clickhouse/config.xml");
        let d = dir.display();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config-file={}", config.display()))
            .arg("--")
            .arg(format!("--path={d}/data/"))
            .arg(format!("--tmp_path={d}/tmp/"))
            .arg(format!("--user_files_path={d}/user_files/"))
            .arg(format!("--format_schema_path={d}/format_schemas/"))
            .arg(format!("--http_port={http_port}"))
            .arg(format!("--tcp_port={tcp_port}"))
            .arg(format!("--logger.log={d}/server.log"))
            .arg(format!("--logger.errorlog={d}/server.err.log"))
            .current_dir(dir);
        Guard::spawn("clickhouse-server", cmd, &dir.join("stdout.log"))
    }

    fn wait_ready(&mut self) {
        let port = self.http_port;
        let log = self.dir.path().join("server.err.log");
        let guard = &mut self.guard;
        wait_until(
            "ClickHouse",
            Duration::from_secs(60),
            || matches!(http(port, "GET", "/ping", ""), Ok((200, body)) if body.starts_with("Ok.")),
            || guard.assert_alive(&log),
        );
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
    pub fn restart(&mut self) {
        self.kill();
        self.guard = Self::spawn(self.dir.path(), self.http_port, self.tcp_port);
        self.wait_ready();
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
