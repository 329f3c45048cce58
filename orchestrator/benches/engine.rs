//! Scheduling overhead benchmark (not a test): 1,000 noop tasks in a wide shape (a root, 998
//! parallel tasks, a join) and a deep shape (a chain of 1,000), on the in-memory and the SQLite
//! store. Prints tasks/s and the delay from an upstream task's end to its downstream task's start.
//!
//! `cargo bench -p orchestrator --bench engine [-- --tasks 1000 --reps 5]`

use std::sync::Arc;
use std::time::Instant;

use orchestrator::dag::{Dag, parse_str_with_env};
use orchestrator::events::EventSink;
use orchestrator::scheduler::{Engine, EngineSettings, RunRequest};
use orchestrator::store::{MemoryStore, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug)]
enum Shape {
    Wide,
    Deep,
}

fn dag_text(shape: Shape, n: usize) -> String {
    let mut s = format!(
        "[dag]\nid = \"bench_{}\"\nmax_active_runs = 100\nmax_active_tasks = {}\n",
        match shape {
            Shape::Wide => "wide",
            Shape::Deep => "deep",
        },
        n
    );
    for i in 0..n {
        s.push_str(&format!("[[task]]\nid = \"t{i}\"\nkind = \"noop\"\n"));
        let deps: Vec<String> = match shape {
            Shape::Deep if i > 0 => vec![format!("t{}", i - 1)],
            Shape::Wide if i == n - 1 => (1..n - 1).map(|j| format!("t{j}")).collect(),
            Shape::Wide if i > 0 => vec!["t0".into()],
            _ => vec![],
        };
        if !deps.is_empty() {
            s.push_str(&format!(
                "depends_on = [{}]\n",
                deps.iter()
                    .map(|d| format!("\"{d}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    s
}

struct Measure {
    wall_s: f64,
    /// Upstream end -> downstream start, per dependency edge whose downstream has one upstream.
    edge_delays_us: Vec<f64>,
    /// Wide shape: the root's end -> the last of the parallel tasks started.
    fan_out_us: f64,
    /// Wide shape: the last parallel task's end -> the join's start.
    fan_in_us: f64,
}

async fn once(engine: &Engine, dag: Arc<Dag>) -> Measure {
    let started = Instant::now();
    let outcome = engine
        .run(
            dag.clone(),
            RunRequest::default(),
            EventSink::none(),
            &CancellationToken::new(),
        )
        .await
        .expect("run");
    let wall_s = started.elapsed().as_secs_f64();
    assert_eq!(outcome.state, orchestrator::store::RunState::Success);
    let tis = engine
        .store()
        .task_instances(&outcome.run_id)
        .expect("tasks");
    let by_id: std::collections::HashMap<&str, _> =
        tis.iter().map(|t| (t.task_id.as_str(), t)).collect();
    let us = |d: chrono::TimeDelta| d.num_nanoseconds().unwrap_or(0) as f64 / 1000.0;
    let mut m = Measure {
        wall_s,
        edge_delays_us: Vec::new(),
        fan_out_us: 0.0,
        fan_in_us: 0.0,
    };
    for task in &dag.tasks {
        if task.upstream.is_empty() {
            continue;
        }
        let ready = task
            .upstream
            .iter()
            .filter_map(|&u| by_id[dag.tasks[u].id.as_str()].ended_at)
            .max()
            .expect("upstream end");
        let start = by_id[task.id.as_str()].started_at.expect("start");
        if task.upstream.len() == 1 {
            m.edge_delays_us.push(us(start - ready));
        } else {
            m.fan_in_us = us(start - ready);
        }
    }
    if let Some(root_end) = by_id["t0"].ended_at {
        let last_start = dag.tasks[1..dag.tasks.len() - 1]
            .iter()
            .filter_map(|t| by_id[t.id.as_str()].started_at)
            .max()
            .unwrap_or(root_end);
        m.fan_out_us = us(last_start - root_end);
    }
    m
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mut tasks = 1000usize;
    let mut reps = 5usize;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--tasks" => {
                tasks = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .expect("--tasks N");
                i += 1;
            }
            "--reps" => {
                reps = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .expect("--reps N");
                i += 1;
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let logs = tempfile::tempdir().expect("temp dir");
    println!("{tasks} noop tasks per run, {reps} timed runs after one warm-up; medians over runs");
    for store_name in ["memory", "sqlite"] {
        for shape in [Shape::Wide, Shape::Deep] {
            let db_dir = tempfile::tempdir().expect("temp dir");
            let store: Arc<dyn Store> = match store_name {
                "memory" => Arc::new(MemoryStore::new()),
                _ => Arc::new(SqliteStore::open(db_dir.path().join("state.db")).expect("sqlite")),
            };
            let engine = Engine::new(store, EngineSettings::new(logs.path()));
            let dag = Arc::new(
                parse_str_with_env(&dag_text(shape, tasks), "bench.toml", &|_| None).expect("dag"),
            );
            runtime.block_on(once(&engine, dag.clone()));
            let runs: Vec<Measure> = (0..reps)
                .map(|_| runtime.block_on(once(&engine, dag.clone())))
                .collect();
            let median = |f: &dyn Fn(&Measure) -> f64| {
                let mut v: Vec<f64> = runs.iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                pct(&v, 0.5)
            };
            let wall = median(&|m| m.wall_s);
            let mut edges: Vec<f64> = runs
                .iter()
                .flat_map(|m| m.edge_delays_us.iter().copied())
                .collect();
            edges.sort_by(f64::total_cmp);
            let name = format!("{}/{store_name}", format!("{shape:?}").to_lowercase());
            let head = format!(
                "{name:<13} {:>7.0} tasks/s  {:>6.1} us/task  {:>7.1} ms/run",
                tasks as f64 / wall,
                wall * 1e6 / tasks as f64,
                wall * 1e3
            );
            match shape {
                Shape::Wide => println!(
                    "{head}  root end -> all {} started: {:.1} ms; last end -> join start: {:.1} us",
                    tasks - 2,
                    median(&|m| m.fan_out_us) / 1000.0,
                    median(&|m| m.fan_in_us)
                ),
                Shape::Deep => println!(
                    "{head}  upstream end -> downstream start: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
                    pct(&edges, 0.5),
                    pct(&edges, 0.99),
                    edges.last().copied().unwrap_or(0.0)
                ),
            }
        }
    }
}
