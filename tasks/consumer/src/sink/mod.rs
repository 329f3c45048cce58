//! The ClickHouse side: the tables (DDL from `infrastructure/clickhouse/`), the offset records
//! that are the source of truth for where each partition continues, and the writer that inserts
//! a batch, delivers its dead letters and records its offsets, retrying with backoff until
//! ClickHouse takes it.

pub mod inserter;
pub mod offsets;
pub mod retry;
pub mod schema;
pub mod writer;

pub use offsets::OffsetStore;
pub use writer::{WriteError, Writer};
