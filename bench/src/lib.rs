//! velostream-bench: the benchmark command that runs the pipeline at a given size beside its
//! baselines, measured in the same run, and writes `docs/BENCHMARKS.md` ([`run`], [`report`]);
//! and the checks that keep the Grafana dashboards true to the metrics our programs export
//! ([`dashboards`], [`promql`], [`exposition`]).

pub mod cpu;
pub mod dashboards;
pub mod error;
pub mod exec;
pub mod exposition;
pub mod http;
pub mod machine;
pub mod phases;
pub mod programs;
pub mod promql;
pub mod report;
pub mod run;

pub use error::BenchError;
