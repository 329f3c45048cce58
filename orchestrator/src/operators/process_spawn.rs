//! `process.spawn`: starts a long-running program in the background (the consumer) and succeeds
//! once it is ready (an HTTP health URL answers, or a line of its output contains some text),
//! leaving it running. The run owns it: process.stop stops it, and the engine stops whatever is
//! still registered when the run ends or is cancelled.
//!
//! The program's output goes to this task's log while it starts and runs. When a process.stop
//! task stops it, the output from then on (the consumer's last flush, its final
//! `::velostream::` outputs) goes to the stop task instead, so those outputs are readable
//! downstream as `{{ tasks.<stop task>.output.<key> }}`; the time series the program reported
//! (the consumer's lag and rows per second) move to the stop task whole, points so far included.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::http::{Probe, url_problems};
use super::{ConfigProblem, Operator, OperatorError, TaskContext, ValidateContext};
use crate::process::{Child, LineSink, Message, ProcessSpec};

/// Lines of output kept to explain a program that died or never became ready.
const TAIL_LINES: usize = 20;

fn default_ready_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_ready_interval() -> Duration {
    Duration::from_millis(200)
}

/// How process.spawn decides that the program is ready. Every check given must pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// A URL polled until it answers with a 2xx status (e.g. `http://127.0.0.1:9100/health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Text that a line of the program's output (stdout or stderr) must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_line: Option<String>,
    /// Give up (stopping the program) after this long (humantime, default `30s`).
    #[serde(default = "default_ready_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Time between two HTTP polls (humantime, default `200ms`).
    #[serde(default = "default_ready_interval", with = "humantime_serde")]
    pub interval: Duration,
}

/// Fields of a `process.spawn` task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpawn {
    /// The program: a path (relative to the DAG file's directory) or a bare name looked up next to
    /// the orchestrator executable, then in PATH.
    pub program: String,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables (the orchestrator's environment and the connections'
    /// `KAFKA_BROKERS`/`CLICKHOUSE_*` are passed too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the DAG file's directory; default: the orchestrator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// When the program counts as ready; without it, as soon as it has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Readiness>,
}

/// Where a background program's output goes, switchable from the spawn task to the stop task.
struct Route {
    target: Mutex<TaskContext>,
    ready_line: Option<String>,
    ready: watch::Sender<bool>,
    tail: Mutex<VecDeque<String>>,
}

impl Route {
    fn target(&self) -> TaskContext {
        self.target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

impl LineSink for Route {
    fn log(&self, line: &str) {
        self.target().log(line);
        {
            let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
        if let Some(wanted) = &self.ready_line
            && line.contains(wanted.as_str())
        {
            self.ready.send_replace(true);
        }
    }

    fn message(&self, message: Message) {
        self.target().message(message);
    }
}

type RouteKey = (String, String);

/// The routes of running background programs, by (run id, spawn task id).
fn routes() -> &'static Mutex<HashMap<RouteKey, Weak<Route>>> {
    static ROUTES: OnceLock<Mutex<HashMap<RouteKey, Weak<Route>>>> = OnceLock::new();
    ROUTES.get_or_init(Default::default)
}

fn remember(ctx: &TaskContext, route: &Arc<Route>) {
    let mut map = routes().lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, r| r.strong_count() > 0);
    map.insert(
        (ctx.run_id().to_owned(), ctx.task_id().to_owned()),
        Arc::downgrade(route),
    );
}

/// Sends the further output of the program started by `spawn_task` in `to`'s run to `to`
/// (its log, outputs and progress). Returns whether the program's output was still flowing.
pub(crate) fn redirect_output(spawn_task: &str, to: &TaskContext) -> bool {
    let route = routes()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&(to.run_id().to_owned(), spawn_task.to_owned()))
        .and_then(|r| r.upgrade());
    match route {
        Some(route) => {
            let mut target = route.target.lock().unwrap_or_else(|p| p.into_inner());
            // The series the program reported so far go along: the stop task keeps them whole.
            to.adopt_series(&target);
            *target = to.clone();
            true
        }
        None => false,
    }
}

impl ProcessSpawn {
    /// Problems a DAG author can fix, found when the DAG loads.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.program.trim().is_empty() {
            problems.push(ConfigProblem::field("program", "`program` is empty"));
        }
        if let Some(ready) = &self.ready {
            if ready.http.is_none() && ready.log_line.is_none() {
                problems.push(ConfigProblem::field(
                    "ready",
                    "`ready` needs `http` (a health URL) and/or `log_line` (text of an output line)",
                ));
            }
            if let Some(url) = &ready.http {
                for mut p in url_problems("http", url) {
                    p.field = Some("ready".into());
                    p.message = format!("ready.{}", p.message.trim_start_matches('`'));
                    problems.push(p);
                }
            }
            if ready.log_line.as_deref().is_some_and(str::is_empty) {
                problems.push(ConfigProblem::field(
                    "ready",
                    "`ready.log_line` is empty: every line would match",
                ));
            }
            if ready.timeout.is_zero() || ready.interval.is_zero() {
                problems.push(ConfigProblem::field(
                    "ready",
                    "`ready.timeout` and `ready.interval` must be longer than 0s",
                ));
            }
        }
        problems
    }

    /// Waits until every readiness check passes. Never returns an error: a check that keeps
    /// failing is cut short by the caller's timeout; `last_error` says why it was not ready.
    async fn wait_ready(
        &self,
        ready: &Readiness,
        mut line_seen: watch::Receiver<bool>,
        last_error: &Mutex<String>,
    ) -> Result<(), OperatorError> {
        if let Some(wanted) = &ready.log_line {
            *last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                format!("no output line contained {wanted:?}");
            // The sender lives in the route as long as the program's output flows.
            if line_seen.wait_for(|seen| *seen).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        if let Some(url) = &ready.http {
            let probe = Probe::get(url, ready.interval.max(Duration::from_secs(1)))?;
            loop {
                match probe.check().await {
                    Ok(_) => break,
                    Err(e) => {
                        *last_error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
                        tokio::time::sleep(ready.interval).await;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The last lines of output, for an error message.
fn tail_text(route: &Route) -> String {
    let tail = route.tail();
    if tail.is_empty() {
        " It printed nothing.".to_owned()
    } else {
        format!(" Its last output:\n  {}", tail.join("\n  "))
    }
}

impl Operator for ProcessSpawn {
    fn validate(&self, _ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        self.problems()
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        let (ready_tx, ready_rx) = watch::channel(false);
        let route = Arc::new(Route {
            target: Mutex::new(ctx.clone()),
            ready_line: self.ready.as_ref().and_then(|r| r.log_line.clone()),
            ready: ready_tx,
            tail: Mutex::new(VecDeque::new()),
        });
        let spec = ProcessSpec {
            program: self.program.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            cwd: self.cwd.as_ref().map(PathBuf::from),
            base_dir: PathBuf::new(),
        };
        let started = Instant::now();
        let mut child: Child = ctx.spawn_with_sink(spec, route.clone())?;
        let pid = child.pid();
        let program = child.program().display().to_string();
        ctx.log(format!("Started {program} (pid {pid})"));

        if let Some(ready) = &self.ready {
            let last_error = Mutex::new(String::new());
            let outcome = tokio::select! {
                biased;
                () = ctx.cancelled() => Err(None),
                exit = child.wait() => Err(Some(match exit {
                    Ok(exit) => OperatorError::failed(format!(
                        "{program} (pid {pid}) exited with {exit} before it was ready.{}",
                        tail_text(&route)
                    )),
                    Err(e) => e.into(),
                })),
                r = tokio::time::timeout(ready.timeout, self.wait_ready(ready, ready_rx, &last_error)) => match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(Some(e)),
                    Err(_) => Err(Some(OperatorError::failed(format!(
                        "{program} (pid {pid}) was not ready within {} ({}); stopped it.{}",
                        humantime::format_duration(ready.timeout),
                        last_error.lock().unwrap_or_else(|p| p.into_inner()),
                        tail_text(&route)
                    )))),
                },
            };
            if let Err(error) = outcome {
                if child.exit().is_none() {
                    let exit = child.terminate(ctx.kill_grace()).await?;
                    ctx.log(format!("Stopped {program} (pid {pid}): {exit}"));
                }
                return Err(error.unwrap_or(OperatorError::Cancelled));
            }
            ctx.log(format!(
                "{program} (pid {pid}) is ready after {:.3}s",
                started.elapsed().as_secs_f64()
            ));
        }

        ctx.set_output("pid", pid);
        ctx.set_output("program", program.clone());
        ctx.set_output("ready_ms", started.elapsed().as_millis() as u64);
        // The program's series go on after this task: they are shown live here while the run
        // goes, and kept by the process.stop task that takes them over.
        ctx.keep_series_out_of_outputs();
        remember(ctx, &route);
        ctx.processes().register(ctx.task_id(), child)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_and_are_checked() {
        let spec: ProcessSpawn = toml::from_str(
            "program = \"velostream-consumer\"\nargs = [\"--topic\", \"trips\"]\nready = { http = \"http://127.0.0.1:9100/health\", timeout = \"1m\" }",
        )
        .unwrap();
        assert!(spec.problems().is_empty());
        assert_eq!(
            spec.ready.as_ref().unwrap().interval,
            Duration::from_millis(200)
        );
        let spec: ProcessSpawn =
            toml::from_str("program = \"\"\nready = { timeout = \"0s\" }").unwrap();
        assert_eq!(spec.problems().len(), 3, "{:?}", spec.problems());
        let spec: ProcessSpawn =
            toml::from_str("program = \"x\"\nready = { http = \"nope\" }").unwrap();
        assert!(
            spec.problems()[0].message.starts_with("ready.http"),
            "{:?}",
            spec.problems()
        );
        assert!(
            toml::from_str::<ProcessSpawn>("program = \"x\"\nready = { url = \"http://x\" }")
                .is_err()
        );
    }
}
