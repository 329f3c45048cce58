//! What a running task gets: who it is (dag, run, task, try, logical date), where it is (the DAG's
//! directory, the connections), where it writes (its try's log, outputs, progress), when to stop
//! (a cancellation token fired on timeout or run cancel) and the run's background processes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use velostream_common::clickhouse::ClickHouseConfig;

use super::OperatorError;
use super::error_tail::ErrorTail;
use super::secrets::Secrets;
use crate::events::{EventSink, RunEvent};
use crate::process::{self, Child, LineSink, Message, ProcessRegistry, ProcessSpec};
use crate::series::{self, SeriesMap};
use crate::store::{ProcessRecord, Store, current_owner, process_start_ticks};

/// Default grace between SIGTERM and SIGKILL when stopping a process group.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Where the DAG's Kafka brokers are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KafkaConnection {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
}

/// A DAG's `[connections]`, after `${ENV:-default}` interpolation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connections {
    /// Kafka.
    pub kafka: KafkaConnection,
    /// ClickHouse.
    pub clickhouse: ClickHouseConfig,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            kafka: KafkaConnection {
                brokers: velostream_common::kafka::DEFAULT_BROKERS.into(),
            },
            clickhouse: ClickHouseConfig::default(),
        }
    }
}

impl Connections {
    /// A librdkafka config for the DAG's brokers with velostream's defaults.
    pub fn kafka_client_config(&self) -> rdkafka::ClientConfig {
        velostream_common::kafka::client_config(&self.kafka.brokers)
    }

    /// Environment variables a task program gets, so the producer and consumer find the same
    /// servers as the DAG: `KAFKA_BROKERS`, `CLICKHOUSE_URL`, `_USER`, `_PASSWORD`, `_DATABASE`.
    pub fn env(&self) -> [(&'static str, &str); 5] {
        use velostream_common::clickhouse as ch;
        [
            (
                velostream_common::kafka::BROKERS_ENV,
                self.kafka.brokers.as_str(),
            ),
            (ch::URL_ENV, self.clickhouse.url.as_str()),
            (ch::USER_ENV, self.clickhouse.user.as_str()),
            (ch::PASSWORD_ENV, self.clickhouse.password.as_str()),
            (ch::DATABASE_ENV, self.clickhouse.database.as_str()),
        ]
    }
}

/// A try's log: a file opened on the first line (noop tasks create none), or memory in tests.
#[derive(Debug)]
struct TaskLog {
    path: Option<PathBuf>,
    /// Masked out of every line before it is written.
    secrets: Secrets,
    file: Mutex<Option<File>>,
    memory: Mutex<Vec<String>>,
}

impl TaskLog {
    fn write(&self, line: &str) {
        let line = &*self.secrets.mask(line);
        let Some(path) = &self.path else {
            self.memory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line.to_owned());
            return;
        };
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(f) => *file = Some(f),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "Cannot open task log");
                    return;
                }
            }
        }
        if let Some(f) = file.as_mut() {
            // One write per line, so a reader (`orchestrator logs`) never sees half a line.
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            let _ = f.write_all(&buf);
        }
    }
}

#[derive(Debug)]
struct Inner {
    dag_id: String,
    run_id: String,
    task_id: String,
    try_number: u32,
    logical_date: DateTime<Utc>,
    dag_dir: PathBuf,
    connections: Arc<Connections>,
    cancel: CancellationToken,
    processes: Arc<ProcessRegistry>,
    log: TaskLog,
    outputs: Mutex<serde_json::Map<String, serde_json::Value>>,
    series: Mutex<SeriesMap>,
    /// Whether [`TaskContext::outputs`] includes the series (not for a background program's).
    series_in_outputs: std::sync::atomic::AtomicBool,
    exit_code: Mutex<Option<i32>>,
    events: EventSink,
    store: Option<Arc<dyn Store>>,
    kill_grace: Duration,
    error_tail: ErrorTail,
}

/// What an operator gets while it runs. Cheap to clone (one `Arc`); clones share outputs and log.
#[derive(Clone, Debug)]
pub struct TaskContext {
    inner: Arc<Inner>,
}

impl TaskContext {
    /// A builder with test-friendly defaults: try 1, now, the current directory, default
    /// connections, an in-memory log, a fresh token and registry, no store.
    pub fn builder(
        dag_id: impl Into<String>,
        run_id: impl Into<String>,
        task_id: impl Into<String>,
    ) -> TaskContextBuilder {
        TaskContextBuilder {
            dag_id: dag_id.into(),
            run_id: run_id.into(),
            task_id: task_id.into(),
            try_number: 1,
            logical_date: Utc::now(),
            dag_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            connections: Arc::new(Connections::default()),
            cancel: CancellationToken::new(),
            processes: Arc::new(ProcessRegistry::new()),
            log_path: None,
            events: EventSink::none(),
            store: None,
            kill_grace: DEFAULT_KILL_GRACE,
            secrets: Secrets::default(),
        }
    }

    /// The DAG's id.
    pub fn dag_id(&self) -> &str {
        &self.inner.dag_id
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.inner.task_id
    }

    /// The try number, 1 for the first try.
    pub fn try_number(&self) -> u32 {
        self.inner.try_number
    }

    /// The run's logical date.
    pub fn logical_date(&self) -> DateTime<Utc> {
        self.inner.logical_date
    }

    /// The DAG file's directory: resolve relative paths (SQL files...) against it.
    pub fn dag_dir(&self) -> &Path {
        &self.inner.dag_dir
    }

    /// `path` resolved against [`dag_dir`](Self::dag_dir) unless absolute.
    pub fn resolve_path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.inner.dag_dir.join(path)
    }

    /// The DAG's connections.
    pub fn connections(&self) -> &Connections {
        &self.inner.connections
    }

    /// Appends a line to this try's log.
    pub fn log(&self, line: impl AsRef<str>) {
        self.inner.log.write(line.as_ref());
    }

    /// The last lines this try's programs wrote to stderr that say why it failed (see
    /// `operators::error_tail`), joined on one line; `None` if they wrote nothing there.
    pub fn error_tail(&self) -> Option<String> {
        self.inner.error_tail.summary()
    }

    /// The log file of this try, if it goes to a file.
    pub fn log_path(&self) -> Option<&Path> {
        self.inner.log.path.as_deref()
    }

    /// Lines logged so far when the log is in memory (contexts built without a log path).
    pub fn memory_log(&self) -> Vec<String> {
        self.inner
            .log
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets an output, readable downstream as `{{ tasks.<id>.output.<key> }}`. Later values win.
    pub fn set_output(&self, key: impl Into<String>, value: impl Into<serde_json::Value>) {
        self.inner
            .outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.into(), self.inner.log.secrets.mask_value(value.into()));
    }

    /// `text` with this run's secrets (see [`Secrets`]) replaced by `***`.
    pub fn mask<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        self.inner.log.secrets.mask(text)
    }

    /// Sets every field of `outcome` (a struct serialized as a JSON object) as an output.
    pub fn set_outputs_from(&self, outcome: &impl Serialize) {
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(outcome) {
            for (key, value) in fields {
                self.set_output(key, value);
            }
        }
    }

    /// The outputs set so far, with the recorded time series under [`series::OUTPUT_KEY`].
    pub fn outputs(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut outputs = self
            .inner
            .outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let series = self.inner.series.lock().unwrap_or_else(|p| p.into_inner());
        let keep = self
            .inner
            .series_in_outputs
            .load(std::sync::atomic::Ordering::Relaxed);
        if keep && !series.is_empty() {
            outputs.insert(series::OUTPUT_KEY.into(), series::to_output(&series));
        }
        outputs
    }

    /// Leaves the series out of this try's outputs: they belong to a background program that
    /// outlives the task (they still go out live, and to whoever takes them over).
    pub fn keep_series_out_of_outputs(&self) {
        self.inner
            .series_in_outputs
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes over the time series `other` recorded (a background program's, when a process.stop
    /// task takes over its output); points recorded here already stay.
    pub fn adopt_series(&self, other: &TaskContext) {
        if Arc::ptr_eq(&self.inner, &other.inner) {
            return;
        }
        let theirs = other
            .inner
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut mine = self.inner.series.lock().unwrap_or_else(|p| p.into_inner());
        for (name, mut s) in theirs {
            if let Some(own) = mine.remove(&name) {
                s.points.extend(own.points);
            }
            mine.insert(name, s);
        }
    }

    /// Records a point of the time series `name` (charted on the run page, live while the task
    /// runs and from its outputs afterwards; bounded by thinning, see [`series::MAX_POINTS`]).
    pub fn record_point(&self, name: &str, unit: &str, at_ms: i64, value: i64) {
        series::record(
            &mut self.inner.series.lock().unwrap_or_else(|p| p.into_inner()),
            name,
            unit,
            at_ms,
            value,
        );
        self.inner.events.send(RunEvent::Point {
            task_id: self.inner.task_id.clone(),
            series: name.to_owned(),
            unit: unit.to_owned(),
            at_ms,
            value,
        });
    }

    /// Records the exit status of the try's program (stored with the try).
    pub fn set_exit_code(&self, code: i32) {
        *self
            .inner
            .exit_code
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(code);
    }

    /// The exit status recorded with [`set_exit_code`](Self::set_exit_code).
    pub fn exit_code(&self) -> Option<i32> {
        *self
            .inner
            .exit_code
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Reports progress (drives the progress bar of `orchestrator run` and the UI).
    pub fn set_progress(&self, done: u64, total: Option<u64>, unit: Option<&str>) {
        self.inner.events.send(RunEvent::Progress {
            task_id: self.inner.task_id.clone(),
            done,
            total,
            unit: unit.map(str::to_owned),
        });
    }

    /// The token fired on timeout or run cancel.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Completes when the task must stop (timeout or run cancel): `select!` on it.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.inner.cancel.cancelled()
    }

    /// Whether the task must stop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// The run's background processes (process.spawn registers, process.stop takes).
    pub fn processes(&self) -> &ProcessRegistry {
        &self.inner.processes
    }

    /// How long to wait between SIGTERM and SIGKILL when stopping a process group.
    pub fn kill_grace(&self) -> Duration {
        self.inner.kill_grace
    }

    /// Starts a supervised program (own process group, dies with the orchestrator) whose output
    /// goes to this try's log and whose `::velostream::` lines set outputs and progress. Relative
    /// paths resolve against the DAG's directory; the program also gets the connections
    /// (`KAFKA_BROKERS`, `CLICKHOUSE_*`) and `VELOSTREAM_DAG_ID`, `_RUN_ID`, `_TASK_ID`,
    /// `_TRY_NUMBER` unless `spec.env` sets them. The pid is recorded in the store until reaped.
    pub fn spawn(&self, spec: ProcessSpec) -> Result<Child, OperatorError> {
        self.spawn_with_sink(spec, Arc::new(self.clone()))
    }

    /// Like [`spawn`](Self::spawn), with the program's output going to `sink` instead of this
    /// context (process.spawn watches it for a readiness line and can hand it to process.stop).
    pub fn spawn_with_sink(
        &self,
        mut spec: ProcessSpec,
        sink: Arc<dyn LineSink>,
    ) -> Result<Child, OperatorError> {
        if spec.base_dir.as_os_str().is_empty() {
            spec.base_dir = self.inner.dag_dir.clone();
        }
        let mut env: BTreeMap<String, String> = self
            .inner
            .connections
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        env.insert("VELOSTREAM_DAG_ID".into(), self.inner.dag_id.clone());
        env.insert("VELOSTREAM_RUN_ID".into(), self.inner.run_id.clone());
        env.insert("VELOSTREAM_TASK_ID".into(), self.inner.task_id.clone());
        env.insert(
            "VELOSTREAM_TRY_NUMBER".into(),
            self.inner.try_number.to_string(),
        );
        env.append(&mut spec.env);
        spec.env = env;
        let mut child = process::spawn(&spec, sink)?;
        if let Some(store) = &self.inner.store {
            let pid = child.pid();
            let record = ProcessRecord {
                run_id: self.inner.run_id.clone(),
                task_id: self.inner.task_id.clone(),
                pid,
                start_ticks: process_start_ticks(pid).unwrap_or(0),
                host: current_owner().host,
            };
            if let Err(error) = store.record_process(&record) {
                tracing::warn!(pid, %error, "Cannot record a spawned process in the state store");
            }
            let store = store.clone();
            let run_id = self.inner.run_id.clone();
            child.on_reaped(move |pid| {
                if let Err(error) = store.forget_process(&run_id, pid) {
                    tracing::warn!(pid, %error, "Cannot forget a reaped process in the state store");
                }
            });
        }
        Ok(child)
    }
}

impl LineSink for TaskContext {
    fn log(&self, line: &str) {
        self.inner.log.write(line);
    }

    fn log_stderr(&self, line: &str) {
        self.inner.log.write(line);
        self.inner
            .error_tail
            .push(&self.inner.log.secrets.mask(line));
    }

    fn message(&self, message: Message) {
        match message {
            Message::Output(outputs) => {
                for (key, value) in outputs {
                    self.set_output(key, value);
                }
            }
            Message::Progress(p) => self.set_progress(p.done, p.total, p.unit.as_deref()),
            Message::Point(p) => self.record_point(
                &p.series,
                &p.unit,
                p.at_ms.unwrap_or_else(|| Utc::now().timestamp_millis()),
                p.value,
            ),
        }
    }
}

/// Builds a [`TaskContext`]; the scheduler sets everything, tests what they need.
#[derive(Debug)]
pub struct TaskContextBuilder {
    dag_id: String,
    run_id: String,
    task_id: String,
    try_number: u32,
    logical_date: DateTime<Utc>,
    dag_dir: PathBuf,
    connections: Arc<Connections>,
    cancel: CancellationToken,
    processes: Arc<ProcessRegistry>,
    log_path: Option<PathBuf>,
    events: EventSink,
    store: Option<Arc<dyn Store>>,
    kill_grace: Duration,
    secrets: Secrets,
}

impl TaskContextBuilder {
    /// The try number (1-based).
    pub fn try_number(mut self, n: u32) -> Self {
        self.try_number = n;
        self
    }

    /// The logical date.
    pub fn logical_date(mut self, d: DateTime<Utc>) -> Self {
        self.logical_date = d;
        self
    }

    /// The DAG file's directory.
    pub fn dag_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dag_dir = dir.into();
        self
    }

    /// The connections.
    pub fn connections(mut self, c: Arc<Connections>) -> Self {
        self.connections = c;
        self
    }

    /// The cancellation token.
    pub fn cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// The run's process registry.
    pub fn processes(mut self, registry: Arc<ProcessRegistry>) -> Self {
        self.processes = registry;
        self
    }

    /// Log to this file (created with its directories on the first line).
    pub fn log_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_path = Some(path.into());
        self
    }

    /// Where progress events go.
    pub fn events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }

    /// Record spawned processes in this store.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Grace between SIGTERM and SIGKILL.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Values masked out of the log, the outputs and the error (default: none).
    pub fn secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// The context.
    pub fn build(self) -> TaskContext {
        TaskContext {
            inner: Arc::new(Inner {
                dag_id: self.dag_id,
                run_id: self.run_id,
                task_id: self.task_id,
                try_number: self.try_number,
                logical_date: self.logical_date,
                dag_dir: self.dag_dir,
                connections: self.connections,
                cancel: self.cancel,
                processes: self.processes,
                log: TaskLog {
                    path: self.log_path,
                    secrets: self.secrets,
                    file: Mutex::new(None),
                    memory: Mutex::new(Vec::new()),
                },
                outputs: Mutex::new(serde_json::Map::new()),
                series: Mutex::new(SeriesMap::new()),
                series_in_outputs: std::sync::atomic::AtomicBool::new(true),
                exit_code: Mutex::new(None),
                events: self.events,
                store: self.store,
                kill_grace: self.kill_grace,
                error_tail: ErrorTail::default(),
            }),
        }
    }
}
