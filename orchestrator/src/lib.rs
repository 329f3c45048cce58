//! velostream's DAG engine: TOML DAG files become validated graphs ([`dag`]), a tokio scheduler runs
//! their tasks in dependency order with trigger rules, retries, timeouts and cancellation
//! ([`scheduler`]), each task kind is an [`operators::Operator`], child processes are supervised so
//! none outlives its run ([`process`]), and every run, try, output and log path is kept in a
//! [`store::Store`] (SQLite by default); [`notify`] tells webhooks about runs. The `orchestrator`
//! binary is a thin shell over [`cli`].
//!
//! Data flows one way: `dag` -> `scheduler` -> `operators` -> `process` / `store`, and the front ends
//! sit on top: [`cli`], and `orchestrator serve` ([`web`]: UI, JSON API, metrics) with its cron
//! scheduler ([`cron`]).

pub mod cli;
pub mod cron;
pub mod dag;
pub mod events;
pub mod notify;
pub mod operators;
pub mod process;
pub mod scheduler;
pub mod series;
pub mod store;
pub mod web;
