//! Helpers of the bench crate's integration tests: the workspace programs, child processes that
//! are stopped on drop, scraping `/metrics`, waiting for a condition.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The folder of the workspace binaries (beside this crate's own binary).
pub fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_velostream-bench"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A workspace binary, which must be built.
pub fn program(name: &str) -> PathBuf {
    let path = programs_dir().join(name);
    assert!(
        path.is_file(),
        "{name} is not built in {}: run `cargo build --workspace --bins` first (`make test` does)",
        programs_dir().display()
    );
    path
}

/// A child process with its output in `<scratch>/<name>.log`, SIGTERMed then killed on drop.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, scratch: &Path) -> Self {
        let log = scratch.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after 30 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} ignored SIGTERM for 30 s; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() && std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log());
            if let Some(child) = self.child.as_mut() {
                let _ = child.kill();
            }
        }
        self.stop();
    }
}

/// The body of `GET http://{addr}/metrics`, if it answers 200.
pub fn scrape(addr: &str) -> Option<String> {
    match velostream_bench::http::get(addr, "/metrics", Duration::from_secs(2)) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

#[allow(unused_imports)] // Not every test binary waits.
pub use velostream_testkit::wait_for;
