//! velostream's consumer: drains a Kafka consumer group of JSON taxi rows into ClickHouse in
//! large RowBinary batches, exactly once as `SELECT count() FROM <table> FINAL` sees it.
//!
//! Data flows one way: `kafka::ingest` (poll, `record::decode`, fill a `batch::Batch`) ->
//! `progress::Handoff` (one batch outstanding: backpressure) -> `sink::inserter` (insert,
//! dead letters, offset records in ClickHouse) -> back to the group as commits. `run` wires it
//! up; `observe` serves `/health`, `/metrics` and prints the summary. See the "Exactly once"
//! section of ARCHITECTURE.md for why it cannot lose or double-count rows.

pub mod batch;
pub mod cli;
#[cfg(feature = "bench")]
pub mod fixture;
pub mod kafka;
pub mod observe;
pub mod progress;
pub mod record;
pub mod run;
pub mod settings;
pub mod sink;

pub use run::{Consumer, RunError};
pub use settings::Settings;
