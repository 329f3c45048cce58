//! The ClickHouse side: the tables (DDL from `infrastructure/clickhouse/`), the offset records
//! that are the source of truth for where each partition continues, and the writer that inserts
//! a batch, delivers its dead letters and records its offsets, retrying with backoff until
//! ClickHouse takes it; with a sharded ClickHouse, each partition's rows and records go to its
//! shard (`shards`).

pub mod inserter;
pub mod offsets;
pub mod retry;
pub mod schema;
pub mod shards;
pub mod writer;

pub use offsets::OffsetStore;
pub use shards::Shards;
pub use writer::{WriteError, Writer};
