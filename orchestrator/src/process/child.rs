//! Spawning and stopping one supervised program: its own process group, `PR_SET_PDEATHSIG`, piped
//! output fed to a [`LineSink`], and group-wide signals.
// `pre_exec` is unsafe: the closure runs between fork and exec. See the SAFETY comment in `spawn`.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

use super::{Line, Message, parse_line};
use super::{LineSink, ProcessError, resolve_program};
use crate::store::process_start_ticks;

/// How long output readers may keep going after the process group is gone (a grandchild that
/// left the group may hold the pipe open).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct ProcessSpec {
    /// Program: a path (relative to `base_dir`) or a bare name (see [`resolve_program`]).
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment variables (the orchestrator's environment is inherited).
    pub env: BTreeMap<String, String>,
    /// Working directory (relative to `base_dir`); default: the orchestrator's.
    pub cwd: Option<PathBuf>,
    /// Where relative paths are resolved: the DAG file's directory.
    pub base_dir: PathBuf,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal, if one killed it.
    pub signal: Option<i32>,
}

impl ExitInfo {
    fn from_status(status: ExitStatus) -> Self {
        Self {
            code: status.code(),
            signal: status.signal(),
        }
    }

    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn exit_code(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => match Signal::try_from(s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

type ReapHook = Box<dyn FnOnce(u32) + Send>;

/// A running supervised program, leader of its own process group.
///
/// Dropping it without waiting kills the whole group (SIGKILL).
pub struct Child {
    program: PathBuf,
    pid: u32,
    child: tokio::process::Child,
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitInfo>,
    on_reaped: Option<ReapHook>,
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("program", &self.program)
            .field("pid", &self.pid)
            .field("exit", &self.exit)
            .finish()
    }
}

/// Starts `spec` in a new process group, output lines going to `sink`.
pub fn spawn(spec: &ProcessSpec, sink: Arc<dyn LineSink>) -> Result<Child, ProcessError> {
    let program = resolve_program(&spec.program, &spec.base_dir)?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(spec.base_dir.join(cwd));
    }
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed (another thread of the parent may have held the allocator's lock at the
    // fork). It calls prctl(2) and getppid(2), which are, and reports failure as a raw OS error
    // (`io::Error::from(Errno)` is `from_raw_os_error`: no allocation, unlike `io::Error::other`);
    // it touches no memory shared with the parent.
    // PR_SET_PDEATHSIG makes the kernel SIGKILL the child when the orchestrator thread that forked
    // it dies (tokio worker threads live as long as the runtime); the getppid check closes the race
    // where the orchestrator died before prctl ran (ESRCH: the parent is gone).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ProcessError::NotFound {
            program: program.display().to_string(),
            searched: "the given path".into(),
        },
        _ => ProcessError::Spawn {
            program: program.clone(),
            source,
        },
    })?;
    let pid = child.id().unwrap_or(0);
    let mut readers = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(out, sink.clone(), true)));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(err, sink, false)));
    }
    tracing::debug!(pid, program = %program.display(), "Spawned process");
    Ok(Child {
        program,
        pid,
        child,
        readers,
        exit: None,
        on_reaped: None,
    })
}

async fn read_lines(stream: impl AsyncRead + Unpin, sink: Arc<dyn LineSink>, protocol: bool) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let line = String::from_utf8_lossy(&buf);
        if !protocol {
            sink.log_stderr(&line);
            continue;
        }
        match parse_line(&line) {
            Line::Log => sink.log(&line),
            Line::Messages(messages) => {
                // Outputs are worth a line in the log; progress and points would flood it.
                if messages.iter().any(|m| matches!(m, Message::Output(_))) {
                    sink.log(&line);
                }
                for m in messages {
                    sink.message(m);
                }
            }
            Line::Malformed(err) => {
                sink.log(&line);
                sink.log(&format!(
                    "warning: the line above starts with ::velostream:: but is not valid JSON ({err}); ignored"
                ));
            }
        }
    }
}

impl Child {
    /// The process id, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The resolved program.
    pub fn program(&self) -> &std::path::Path {
        &self.program
    }

    /// How it ended, once it has.
    pub fn exit(&self) -> Option<ExitInfo> {
        self.exit
    }

    /// Calls `hook(pid)` once the process has been reaped (to forget it in the store).
    pub fn on_reaped(&mut self, hook: impl FnOnce(u32) + Send + 'static) {
        self.on_reaped = Some(Box::new(hook));
    }

    /// Sends `signal` to the whole process group.
    pub fn signal_group(&self, signal: Signal) {
        if self.exit.is_none() || signal == Signal::SIGKILL {
            let _ = killpg(Pid::from_raw(self.pid as i32), signal);
        }
    }

    /// Waits for the program to exit, kills whatever it left running in its group, and waits for
    /// its output to be read. Cancel-safe: dropping the future leaves the process running.
    pub async fn wait(&mut self) -> Result<ExitInfo, ProcessError> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        let status = self
            .child
            .wait()
            .await
            .map_err(|source| ProcessError::Wait {
                pid: self.pid,
                source,
            })?;
        Ok(self.finish(status).await)
    }

    /// Whether it has exited, without waiting (reaping it if so).
    pub async fn try_finish(&mut self) -> Result<Option<ExitInfo>, ProcessError> {
        if let Some(exit) = self.exit {
            return Ok(Some(exit));
        }
        match self.child.try_wait() {
            Ok(Some(status)) => Ok(Some(self.finish(status).await)),
            Ok(None) => Ok(None),
            Err(source) => Err(ProcessError::Wait {
                pid: self.pid,
                source,
            }),
        }
    }

    /// Stops the whole group: SIGTERM, up to `grace` for the leader to exit, then SIGKILL.
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitInfo, ProcessError> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        self.signal_group(Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::debug!(pid = self.pid, "Process ignored SIGTERM, killing its group");
                self.signal_group(Signal::SIGKILL);
                self.child.wait().await
            }
        }
        .map_err(|source| ProcessError::Wait {
            pid: self.pid,
            source,
        })?;
        Ok(self.finish(status).await)
    }

    async fn finish(&mut self, status: ExitStatus) -> ExitInfo {
        // The leader is gone; whatever it started in its group goes with it.
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        for reader in &mut self.readers {
            if tokio::time::timeout(DRAIN_TIMEOUT, &mut *reader)
                .await
                .is_err()
            {
                reader.abort();
            }
        }
        self.readers.clear();
        let exit = ExitInfo::from_status(status);
        self.exit = Some(exit);
        if let Some(hook) = self.on_reaped.take() {
            hook(self.pid);
        }
        tracing::debug!(pid = self.pid, %exit, "Process finished");
        exit
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            for reader in &self.readers {
                reader.abort();
            }
        }
    }
}

/// Kills (SIGKILL) what is left of a process group recorded by a previous orchestrator that died:
/// the group is killed if its leader `pid` still runs with the recorded start time, or if the leader
/// is gone but members remain (the kernel does not reuse a pid while a group still carries it).
/// Returns whether a group was signalled.
pub fn kill_leftover_group(pid: u32, start_ticks: u64) -> bool {
    let group_exists = match process_start_ticks(pid) {
        Some(ticks) => ticks == start_ticks,
        None => group_has_members(pid),
    };
    group_exists && killpg(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok()
}

fn group_has_members(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // Fields after the command name: state, ppid, pgrp.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(pgid)
        })
}
