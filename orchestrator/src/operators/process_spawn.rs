//! `process.spawn`: starts a long-running program in the background (the consumer) and succeeds
//! once it is ready (an HTTP health URL answers, or a line of its output contains some text),
//! leaving it running. With `replicas = N` it starts N copies at once (a consumer fleet), each with
//! `{{ replica }}` filled in with its number, and succeeds once every one is ready. The run owns
//! them: process.stop stops them all, and the engine stops whatever is still registered when the
//! run ends or is cancelled.
//!
//! The program's output goes to this task's log while it starts and runs. When a process.stop
//! task stops it, the output from then on (the consumer's last flush, its final
//! `::velostream::` outputs) goes to the stop task instead, so those outputs are readable
//! downstream as `{{ tasks.<stop task>.output.<key> }}`; the time series the program reported
//! (the consumer's lag and rows per second) move to the stop task whole, points so far included.
//! A fleet's outputs are kept per replica under `by_replica`, and its numbers summed over the
//! replicas under their own keys; each replica's series is named `<series> (replica <n>)`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::http::{Probe, url_problems};
use super::kafka::{Num, num_problems};
use super::{ConfigProblem, Operator, OperatorError, TaskContext, ValidateContext};
use crate::dag::template::{REPLICA, fill_replica};
use crate::process::{Child, LineSink, Message, ProcessSpec};

/// Most replicas one task may start.
pub const MAX_REPLICAS: u32 = 64;

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
    /// How many copies to start (default 1), each with `{{ replica }}` (0 to N-1) filled in its
    /// args, env, cwd and readiness checks; a number, or a template rendering to one.
    #[serde(default = "one_replica", skip_serializing_if = "is_one_replica")]
    pub replicas: Num<u32>,
}

fn one_replica() -> Num<u32> {
    Num::Value(1)
}

fn is_one_replica(n: &Num<u32>) -> bool {
    *n == Num::Value(1)
}

/// The outputs of a fleet's replicas so far, shared by their routes.
#[derive(Default)]
struct Fleet {
    outputs: Mutex<Vec<serde_json::Map<String, Value>>>,
}

impl Fleet {
    fn new(replicas: u32) -> Self {
        Self {
            outputs: Mutex::new(vec![serde_json::Map::new(); replicas as usize]),
        }
    }

    /// Adds `replica`'s new outputs; returns the task outputs to set: `by_replica` (every
    /// replica's outputs, in order) and, for each new key, the sum over the replicas when every
    /// value of it is a number, else the new value.
    fn merge(
        &self,
        replica: u32,
        new: serde_json::Map<String, Value>,
    ) -> serde_json::Map<String, Value> {
        let mut all = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = serde_json::Map::new();
        for (key, value) in new {
            all[replica as usize].insert(key.clone(), value.clone());
            let values: Vec<&Value> = all.iter().filter_map(|o| o.get(&key)).collect();
            let total = if values.iter().all(|v| v.is_number()) {
                if values.iter().all(|v| v.is_u64()) {
                    Value::from(values.iter().filter_map(|v| v.as_u64()).sum::<u64>())
                } else if values.iter().all(|v| v.is_i64()) {
                    Value::from(values.iter().filter_map(|v| v.as_i64()).sum::<i64>())
                } else {
                    Value::from(values.iter().filter_map(|v| v.as_f64()).sum::<f64>())
                }
            } else {
                value
            };
            out.insert(key, total);
        }
        out.insert(
            "by_replica".into(),
            Value::Array(all.iter().cloned().map(Value::Object).collect()),
        );
        out
    }
}

/// Where a background program's output goes, switchable from the spawn task to the stop task.
struct Route {
    target: Mutex<TaskContext>,
    /// The replica's number and its fleet, when the task starts more than one.
    fleet: Option<(u32, Arc<Fleet>)>,
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
        let Some((replica, fleet)) = &self.fleet else {
            self.target().message(message);
            return;
        };
        match message {
            Message::Output(outputs) => {
                let target = self.target();
                for (key, value) in fleet.merge(*replica, outputs) {
                    target.set_output(key, value);
                }
            }
            Message::Point(mut point) => {
                point.series = format!("{} (replica {replica})", point.series);
                self.target().message(Message::Point(point));
            }
            other => self.target().message(other),
        }
    }
}

type RouteKey = (String, String);

/// The routes of running background programs (one per replica), by (run id, spawn task id).
fn routes() -> &'static Mutex<HashMap<RouteKey, Vec<Weak<Route>>>> {
    static ROUTES: OnceLock<Mutex<HashMap<RouteKey, Vec<Weak<Route>>>>> = OnceLock::new();
    ROUTES.get_or_init(Default::default)
}

fn remember(ctx: &TaskContext, routes_of_task: &[Arc<Route>]) {
    let mut map = routes().lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, rs| rs.iter().any(|r| r.strong_count() > 0));
    map.insert(
        (ctx.run_id().to_owned(), ctx.task_id().to_owned()),
        routes_of_task.iter().map(Arc::downgrade).collect(),
    );
}

/// Sends the further output of the programs started by `spawn_task` in `to`'s run to `to`
/// (its log, outputs and progress). Returns whether any program's output was still flowing.
pub(crate) fn redirect_output(spawn_task: &str, to: &TaskContext) -> bool {
    let taken = routes()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&(to.run_id().to_owned(), spawn_task.to_owned()))
        .unwrap_or_default();
    let mut flowing = false;
    let mut adopted = false;
    for route in taken.iter().filter_map(Weak::upgrade) {
        let mut target = route.target.lock().unwrap_or_else(|p| p.into_inner());
        // The series the programs reported so far go along (the replicas share the spawn task's
        // context, so once): the stop task keeps them whole.
        if !adopted {
            to.adopt_series(&target);
            adopted = true;
        }
        *target = to.clone();
        flowing = true;
    }
    flowing
}

impl ProcessSpawn {
    /// Problems a DAG author can fix, found when the DAG loads.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.program.trim().is_empty() {
            problems.push(ConfigProblem::field("program", "`program` is empty"));
        }
        problems.extend(num_problems(
            "replicas",
            &self.replicas,
            1,
            "start at least 1 program",
        ));
        if let Ok(Some(n)) = self.replicas.known() {
            if n > MAX_REPLICAS {
                problems.push(ConfigProblem::field(
                    "replicas",
                    format!("`replicas` is {n}; at most {MAX_REPLICAS} programs per task"),
                ));
            }
            // Every replica polling one URL would check one of them N times (and the others'
            // ports would clash): the URL must differ by replica. A template other than
            // `{{ replica }}` may still render to one that does; it is checked again rendered.
            if let Some(url) = self.ready.as_ref().and_then(|r| r.http.as_deref())
                && n > 1
                && !url.contains("{{")
            {
                problems.push(ConfigProblem::field(
                    "ready",
                    format!(
                        "`ready.http` {url:?} is the same for each of the {n} replicas; put `{REPLICA}` in it (and in the port the program listens on)"
                    ),
                ));
            }
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

/// One started program of the task: replica `replica` (always 0 without `replicas`).
struct Started {
    replica: u32,
    child: Child,
    route: Arc<Route>,
    ready_line: watch::Receiver<bool>,
    ready: Option<Readiness>,
    /// `program (pid N)`, or `program replica R (pid N)` in a fleet, for messages.
    label: String,
}

impl ProcessSpawn {
    /// The program, args, env and cwd of replica `replica`.
    fn spec(&self, replica: u32) -> ProcessSpec {
        ProcessSpec {
            program: self.program.clone(),
            args: self.args.iter().map(|a| fill_replica(a, replica)).collect(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), fill_replica(v, replica)))
                .collect(),
            cwd: self
                .cwd
                .as_ref()
                .map(|c| PathBuf::from(fill_replica(c, replica))),
            base_dir: PathBuf::new(),
        }
    }

    /// The readiness checks of replica `replica`.
    fn readiness(&self, replica: u32) -> Option<Readiness> {
        self.ready.as_ref().map(|r| Readiness {
            http: r.http.as_deref().map(|u| fill_replica(u, replica)),
            log_line: r.log_line.as_deref().map(|l| fill_replica(l, replica)),
            ..r.clone()
        })
    }

    /// Waits until `s` is ready: fails if it exits first or is not ready within the timeout.
    async fn replica_ready(&self, s: &mut Started) -> Result<(), OperatorError> {
        let Some(ready) = s.ready.clone() else {
            return Ok(());
        };
        let last_error = Mutex::new(String::new());
        let line_seen = s.ready_line.clone();
        tokio::select! {
            exit = s.child.wait() => Err(match exit {
                Ok(exit) => OperatorError::failed(format!(
                    "{} exited with {exit} before it was ready.{}",
                    s.label,
                    tail_text(&s.route)
                )),
                Err(e) => e.into(),
            }),
            r = tokio::time::timeout(ready.timeout, self.wait_ready(&ready, line_seen, &last_error)) => match r {
                Ok(r) => r,
                Err(_) => Err(OperatorError::failed(format!(
                    "{} was not ready within {} ({}); stopped it.{}",
                    s.label,
                    humantime::format_duration(ready.timeout),
                    last_error.lock().unwrap_or_else(|p| p.into_inner()),
                    tail_text(&s.route)
                ))),
            },
        }
    }
}

/// Stops every program of `started` that still runs, all at once (a failed or cancelled start
/// leaves nothing behind).
async fn stop_started(ctx: &TaskContext, started: &mut [Started]) -> Result<(), OperatorError> {
    let grace = ctx.kill_grace();
    let stops = started
        .iter_mut()
        .filter(|s| s.child.exit().is_none())
        .map(|s| async move {
            let exit = s.child.terminate(grace).await?;
            ctx.log(format!("Stopped {}: {exit}", s.label));
            Ok::<(), OperatorError>(())
        });
    futures::future::try_join_all(stops).await.map(|_| ())
}

impl Operator for ProcessSpawn {
    fn validate(&self, _ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        self.problems()
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        let replicas = match self.replicas.known() {
            Ok(Some(n)) if (1..=MAX_REPLICAS).contains(&n) => n,
            _ => {
                return Err(OperatorError::failed(format!(
                    "`replicas` is {:?}; expected a number from 1 to {MAX_REPLICAS}",
                    self.replicas.to_string()
                )));
            }
        };
        let fleet = (replicas > 1).then(|| Arc::new(Fleet::new(replicas)));
        let started_at = Instant::now();
        let mut started: Vec<Started> = Vec::with_capacity(replicas as usize);
        for replica in 0..replicas {
            let ready = self.readiness(replica);
            let (ready_tx, ready_rx) = watch::channel(false);
            let route = Arc::new(Route {
                target: Mutex::new(ctx.clone()),
                fleet: fleet.as_ref().map(|f| (replica, f.clone())),
                ready_line: ready.as_ref().and_then(|r| r.log_line.clone()),
                ready: ready_tx,
                tail: Mutex::new(VecDeque::new()),
            });
            let child = match ctx.spawn_with_sink(self.spec(replica), route.clone()) {
                Ok(child) => child,
                Err(error) => {
                    stop_started(ctx, &mut started).await?;
                    return Err(error);
                }
            };
            let pid = child.pid();
            let program = child.program().display().to_string();
            let label = match fleet {
                Some(_) => format!("{program} replica {replica} (pid {pid})"),
                None => format!("{program} (pid {pid})"),
            };
            ctx.log(format!("Started {label}"));
            started.push(Started {
                replica,
                child,
                route,
                ready_line: ready_rx,
                ready,
                label,
            });
        }

        if self.ready.is_some() {
            let outcome = {
                let all_ready = futures::future::try_join_all(
                    started.iter_mut().map(|s| self.replica_ready(s)),
                );
                tokio::select! {
                    biased;
                    () = ctx.cancelled() => Err(OperatorError::Cancelled),
                    r = all_ready => r.map(|_| ()),
                }
            };
            if let Err(error) = outcome {
                stop_started(ctx, &mut started).await?;
                return Err(error);
            }
            let what = match fleet {
                Some(_) => format!("All {replicas} replicas are"),
                None => format!("{} is", started[0].label),
            };
            ctx.log(format!(
                "{what} ready after {:.3}s",
                started_at.elapsed().as_secs_f64()
            ));
        }

        let pids: Vec<u32> = started.iter().map(|s| s.child.pid()).collect();
        ctx.set_output("pid", pids[0]);
        ctx.set_output("program", started[0].child.program().display().to_string());
        ctx.set_output("ready_ms", started_at.elapsed().as_millis() as u64);
        if fleet.is_some() {
            ctx.set_output("pids", pids);
            ctx.set_output("replicas", replicas);
        }
        // The program's series go on after this task: they are shown live here while the run
        // goes, and kept by the process.stop task that takes them over.
        ctx.keep_series_out_of_outputs();
        let routes: Vec<Arc<Route>> = started.iter().map(|s| s.route.clone()).collect();
        remember(ctx, &routes);
        debug_assert!(
            started
                .iter()
                .enumerate()
                .all(|(i, s)| s.replica == i as u32)
        );
        ctx.processes().register(
            ctx.task_id(),
            started.into_iter().map(|s| s.child).collect(),
        )?;
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
