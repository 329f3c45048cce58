//! Code shared by velostream's orchestrator, producer and consumer: how to reach ClickHouse (with
//! server-version detection, since Debian ships 18.16 and Docker users run 24.x+) and Kafka, and
//! the `::velostream::` line protocol programs use to talk to the orchestrator.

pub mod clickhouse;
pub mod kafka;
pub mod process;
pub mod proto;
pub mod protocol;
