//! Each program alone, what a row costs it in CPU and where that CPU goes: `velostream-producer`
//! fills a topic of a fresh broker, then `velostream-consumer` drains it into a fresh table of the
//! benchmark's ClickHouse. Each time, the programs' own CPU seconds (their summaries'
//! `cpu_secs`), the broker's and ClickHouse's (from `/proc`, over the program's lifetime), and a
//! `perf` profile of every process taking part. The same figures for the benchmark DAG come from
//! the pipeline phase.

use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use velostream_common::clickhouse::ClickHouseConfig;
use velostream_common::protocol::{Line, Message, parse_line};

use super::Context;
use crate::cpu::{self, CpuRun, ProcessCpu, Profile, Profiler};
use crate::error::BenchError;
use crate::exposition::Exposition;
use crate::{exec, http};

const TOPIC: &str = "bench-cpu";
const TABLE: &str = "bench_cpu_trips";

/// The phase's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpuFigures {
    /// The producer filling the topic alone: the producer's and the broker's CPU.
    pub producer_alone: CpuRun,
    /// The consumer draining it alone: the consumer's, the broker's and ClickHouse's CPU.
    pub consumer_alone: CpuRun,
    /// Every process's profile, producer run first.
    pub profiles: Vec<Profile>,
    /// Why there are no profiles, if there are none.
    pub no_profile: Option<String>,
}

/// Runs the producer, then the consumer, alone at `ctx.rows`; `clickhouse_pid` is the fresh
/// server's (none for a given server: its CPU is not measured).
pub fn run(
    ctx: &Context,
    clickhouse: &ClickHouseConfig,
    clickhouse_pid: Option<u32>,
    profile: bool,
) -> Result<CpuFigures, BenchError> {
    let producer = ctx.programs.path("velostream-producer")?;
    let consumer = ctx.programs.path("velostream-consumer")?;
    let broker = ctx.brokers.is_none().then(velostream_testkit::Kafka::start);
    let brokers = ctx
        .brokers
        .clone()
        .or_else(|| broker.as_ref().map(|b| b.bootstrap.clone()))
        .unwrap_or_default();
    let broker_pid = broker.as_ref().and_then(|b| b.pid());
    let no_profile = if profile {
        cpu::perf_available().err()
    } else {
        Some("not asked for (--no-profile)".into())
    };
    let profiling = no_profile.is_none();
    let mut profiles = Vec::new();
    let during = |what: &str| format!("{what} alone, {} rows", crate::report::thousands(ctx.rows));

    // The producer.
    tracing::info!(rows = ctx.rows, "CPU: the producer alone");
    let mut cmd = Command::new(&producer);
    cmd.arg("--brokers")
        .arg(&brokers)
        .args(["--topic", TOPIC, "--create-topic"])
        .arg("--partitions")
        .arg(ctx.partitions.to_string())
        .arg("--repeat")
        .arg(ctx.rows.max(1).to_string())
        .arg("--limit")
        .arg(ctx.rows.to_string())
        .args(["--progress", "none"])
        .arg(&ctx.input);
    let stdout = ctx.work.join("cpu-producer.out");
    let log = ctx.work.join("cpu-producer.log");
    let broker_meter = cpu::meter(broker_pid);
    let started = Instant::now();
    let mut program = Program::start(&mut cmd, "producer", &stdout, &log, ctx, profiling)?;
    let mut attached = Vec::new();
    if profiling {
        attached.extend(broker_pid.and_then(|p| Profiler::attach(p, "broker", &ctx.work)));
    }
    let status = program.wait(&cmd)?;
    // The producer's own profile first, then the broker's during its run.
    attached.splice(0..0, program.profiler());
    let wall_seconds = started.elapsed().as_secs_f64();
    let broker_seconds = broker_meter.and_then(|m| m.seconds());
    profiles.extend(
        attached
            .into_iter()
            .filter_map(|p| p.finish(&during("producer"))),
    );
    exec::check_status(&cmd, status, &log)?;
    let produced = outputs(&stdout, "velostream-producer")?;
    let producer_alone = CpuRun {
        rows: field(&produced, "rows") as u64,
        wall_seconds,
        cpu: ProcessCpu {
            producer: Some(field(&produced, "cpu_secs")),
            broker: broker_seconds,
            ..ProcessCpu::default()
        },
    };

    // The consumer.
    tracing::info!(rows = producer_alone.rows, "CPU: the consumer alone");
    let http_addr = format!("127.0.0.1:{}", velostream_testkit::free_port());
    let mut cmd = Command::new(&consumer);
    cmd.args(["--topic", TOPIC, "--group", TABLE, "--table", TABLE])
        .arg("--batch-rows")
        .arg(ctx.batch_rows.to_string())
        .args(["--http-addr", &http_addr, "--series-interval", "0s"])
        .env("KAFKA_BROKERS", &brokers)
        .env("CLICKHOUSE_URL", &clickhouse.url)
        .env("CLICKHOUSE_USER", &clickhouse.user)
        .env("CLICKHOUSE_PASSWORD", &clickhouse.password)
        .env("CLICKHOUSE_DATABASE", &clickhouse.database);
    let stdout = ctx.work.join("cpu-consumer.out");
    let log = ctx.work.join("cpu-consumer.log");
    let broker_meter = cpu::meter(broker_pid);
    let clickhouse_meter = cpu::meter(clickhouse_pid);
    let started = Instant::now();
    let mut program = Program::start(&mut cmd, "consumer", &stdout, &log, ctx, profiling)?;
    let mut attached = Vec::new();
    if profiling {
        attached.extend(broker_pid.and_then(|p| Profiler::attach(p, "broker", &ctx.work)));
        attached.extend(clickhouse_pid.and_then(|p| Profiler::attach(p, "ClickHouse", &ctx.work)));
    }
    let rows = producer_alone.rows;
    let deadline = Instant::now() + Duration::from_secs(300 + rows / 20_000);
    loop {
        if let Some(status) = program
            .child()
            .try_wait()
            .map_err(|source| BenchError::Spawn {
                program: exec::describe(&cmd),
                source,
            })?
        {
            exec::check_status(&cmd, status, &log)?;
            return Err(BenchError::Results {
                program: "velostream-consumer".into(),
                path: log,
                message: "it exited before inserting every row".into(),
            });
        }
        let inserted = http::get(&http_addr, "/metrics", Duration::from_secs(1))
            .ok()
            .and_then(|(_, body)| Exposition::parse(&body).ok())
            .and_then(|e| e.sum("velostream_consumer_rows_inserted_total"))
            .unwrap_or(0.0) as u64;
        if inserted >= rows {
            break;
        }
        if Instant::now() > deadline {
            let _ = program.child().kill();
            return Err(BenchError::Results {
                program: "velostream-consumer".into(),
                path: log,
                message: format!("it inserted {inserted} of {rows} rows by the deadline"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(program.pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = program.wait(&cmd)?;
    // The consumer's own profile first, then the servers' during its run.
    attached.splice(0..0, program.profiler());
    let wall_seconds = started.elapsed().as_secs_f64();
    let broker_seconds = broker_meter.and_then(|m| m.seconds());
    let clickhouse_seconds = clickhouse_meter.and_then(|m| m.seconds());
    profiles.extend(
        attached
            .into_iter()
            .filter_map(|p| p.finish(&during("consumer"))),
    );
    exec::check_status(&cmd, status, &log)?;
    let consumed = outputs(&stdout, "velostream-consumer")?;
    let counted = clickhouse_u64(clickhouse, &format!("SELECT count() FROM {TABLE} FINAL"))?;
    clickhouse_u64(clickhouse, &format!("DROP TABLE {TABLE}"))?;
    if counted != rows {
        return Err(BenchError::Results {
            program: "velostream-consumer".into(),
            path: log,
            message: format!("{TABLE} holds {counted} rows (FINAL) where {rows} were produced"),
        });
    }
    let consumer_alone = CpuRun {
        rows: field(&consumed, "rows_inserted") as u64,
        wall_seconds,
        cpu: ProcessCpu {
            broker: broker_seconds,
            consumer: Some(field(&consumed, "cpu_secs")),
            clickhouse: clickhouse_seconds,
            ..ProcessCpu::default()
        },
    };
    Ok(CpuFigures {
        producer_alone,
        consumer_alone,
        profiles,
        no_profile,
    })
}

/// A program of the phase, run under `perf record` when profiling.
struct Program {
    /// The program itself, or perf running it.
    running: Running,
    /// The program's own pid (perf's child when profiling).
    pid: u32,
}

enum Running {
    Plain(std::process::Child),
    Profiled(Profiler),
}

impl Program {
    /// Starts `cmd` with stdout (the summary line) in `stdout` and stderr in `log`.
    fn start(
        cmd: &mut Command,
        name: &str,
        stdout: &std::path::Path,
        log: &std::path::Path,
        ctx: &Context,
        profiling: bool,
    ) -> Result<Self, BenchError> {
        let create = |path: &std::path::Path| {
            std::fs::File::create(path).map_err(|source| BenchError::Io {
                action: "creating",
                path: path.to_path_buf(),
                source,
            })
        };
        cmd.env("RUST_LOG", "info");
        let mut wrapped = profiling.then(|| Profiler::wrap(cmd, name, &ctx.work));
        let run = match &mut wrapped {
            Some((_, perf)) => perf,
            None => cmd,
        };
        let child = run
            .stdin(std::process::Stdio::null())
            .stdout(create(stdout)?)
            .stderr(create(log)?)
            .spawn()
            .map_err(|source| BenchError::Spawn {
                program: exec::describe(run),
                source,
            })?;
        let Some((data, _)) = wrapped else {
            return Ok(Self {
                pid: child.id(),
                running: Running::Plain(child),
            });
        };
        let profiler = Profiler::running(child, data, name);
        let pid = profiler.program_pid().ok_or_else(|| BenchError::Results {
            program: name.into(),
            path: log.to_path_buf(),
            message: "perf record did not start it".into(),
        })?;
        Ok(Self {
            pid,
            running: Running::Profiled(profiler),
        })
    }

    /// The process to wait for: the program, or perf running it (perf exits with its status).
    fn child(&mut self) -> &mut std::process::Child {
        match &mut self.running {
            Running::Plain(child) => child,
            Running::Profiled(profiler) => profiler.child(),
        }
    }

    /// Waits for the program to exit.
    fn wait(&mut self, cmd: &Command) -> Result<std::process::ExitStatus, BenchError> {
        self.child().wait().map_err(|source| BenchError::Spawn {
            program: exec::describe(cmd),
            source,
        })
    }

    /// Its profile's recorder, when profiled.
    fn profiler(self) -> Option<Profiler> {
        match self.running {
            Running::Plain(_) => None,
            Running::Profiled(profiler) => Some(profiler),
        }
    }
}

/// The outputs of the program's `::velostream::` output line.
fn outputs(
    stdout: &std::path::Path,
    program: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, BenchError> {
    let text = std::fs::read_to_string(stdout).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|l| match parse_line(l) {
            Line::Messages(messages) => messages.into_iter().rev().find_map(|m| match m {
                Message::Output(o) => Some(o),
                _ => None,
            }),
            _ => None,
        })
        .ok_or_else(|| BenchError::Results {
            program: program.into(),
            path: stdout.to_path_buf(),
            message: "no `::velostream::` output line".into(),
        })
}

fn field(outputs: &serde_json::Map<String, serde_json::Value>, key: &str) -> f64 {
    outputs
        .get(key)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0)
}

/// Runs `sql` and reads one number back (0 for a statement without a result).
fn clickhouse_u64(config: &ClickHouseConfig, sql: &str) -> Result<u64, BenchError> {
    let query = config.plain_client().query(sql);
    if sql.trim_start().to_uppercase().starts_with("SELECT") {
        super::clickhouse_request(config, query.fetch_one::<u64>())
    } else {
        super::clickhouse_request(config, query.execute()).map(|()| 0)
    }
    .map_err(|e| match e {
        BenchError::ClickHouse { url, message } => BenchError::ClickHouse {
            url,
            message: format!("{sql}: {message}"),
        },
        other => other,
    })
}
