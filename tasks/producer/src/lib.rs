//! velostream's producer: reads Parquet files (NYC TLC taxi trips, or any table) as Arrow record
//! batches and streams every row into a Kafka topic as one JSON object per message.
//!
//! The flow is one way: [`input`] finds and checks the files, [`encode`] turns record batches
//! into JSON rows, [`pipeline`] runs a decode+encode thread beside the sending thread, [`kafka`]
//! delivers with an idempotent producer and counts acknowledgements in [`stats`], and [`report`]
//! tells the orchestrator (`::velostream::` lines on stdout) and a person (a progress bar) how it
//! goes, while [`metrics`] serves the same counters to Prometheus; [`verify`] checks afterwards
//! that the topic grew by what the broker acknowledged. [`generate`] writes synthetic
//! taxi Parquet files for benchmarks; [`fetch`] downloads real TLC months; [`cli`] is the command line of the binary.

pub mod cli;
pub mod encode;
pub mod fetch;
pub mod generate;
pub mod input;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod shutdown;
pub mod stats;
pub mod verify;
