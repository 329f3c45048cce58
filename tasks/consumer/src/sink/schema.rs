//! The tables, created if missing from the DDL in `infrastructure/clickhouse/` (the same files
//! a DAG's `clickhouse.sql` task can run), with the server-specific extras: the insert
//! deduplication window and the column codecs on servers that have them.

use velostream_common::clickhouse::Server;

use crate::record::rowbinary;

/// `infrastructure/clickhouse/taxi_trips.sql`: the taxi table, named `taxi_trips` there.
pub const TAXI_TRIPS_DDL: &str =
    include_str!("../../../../infrastructure/clickhouse/taxi_trips.sql");
/// `infrastructure/clickhouse/consumer_offsets.sql`: the offset records.
pub const OFFSETS_DDL: &str =
    include_str!("../../../../infrastructure/clickhouse/consumer_offsets.sql");
/// The offsets table's name.
pub const OFFSETS_TABLE: &str = "velostream_consumer_offsets";
/// `infrastructure/clickhouse/shard_layout.sql`: which shard of how many each server is.
pub const LAYOUT_DDL: &str = include_str!("../../../../infrastructure/clickhouse/shard_layout.sql");
/// The shard layout table's name.
pub const LAYOUT_TABLE: &str = "velostream_shard_layout";

const TAXI_CREATE: &str = "CREATE TABLE IF NOT EXISTS taxi_trips";

/// The statement of a DDL file without its comment lines (the HTTP interface takes one statement).
fn statement(ddl: &str) -> String {
    ddl.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The columns stored with `CODEC(Delta, ZSTD(1))` where the server has codecs: the timestamps and
/// the offset grow steadily, so their deltas are tiny. Measured on 26.9 with 3M TLC rows (see
/// docs/table-layout.md): 55.3 MB on disk -> 34.2 MB, insert and query times equal
/// within noise. The float columns are left to LZ4: ZSTD halves them too but makes scans slower.
pub const DELTA_ZSTD_COLUMNS: [&str; 3] =
    ["tpep_pickup_datetime", "tpep_dropoff_datetime", "_offset"];

/// The `ALTER TABLE` that gives `table` the codecs of [`DELTA_ZSTD_COLUMNS`] (idempotent; new
/// parts only, so existing tables pick it up as they merge).
pub fn codecs_ddl(table: &str) -> String {
    let clauses: Vec<String> = DELTA_ZSTD_COLUMNS
        .iter()
        .map(|c| format!("MODIFY COLUMN {c} CODEC(Delta, ZSTD(1))"))
        .collect();
    format!("ALTER TABLE {table} {}", clauses.join(", "))
}

/// The taxi table's `CREATE TABLE IF NOT EXISTS` for `table` (a plain identifier).
pub fn taxi_table_ddl(table: &str) -> String {
    statement(TAXI_TRIPS_DDL).replacen(
        TAXI_CREATE,
        &format!("CREATE TABLE IF NOT EXISTS {table}"),
        1,
    )
}

/// Creates the offsets table and `table` if they do not exist and, on servers that deduplicate
/// inserts into plain MergeTree tables (20.9+), turns that on for `table`, so a retried batch
/// with the same `insert_deduplication_token` is not stored twice; on servers with codecs (20.1+)
/// it also gives the steadily growing columns delta codecs ([`codecs_ddl`]).
pub async fn ensure_tables(server: &Server, table: &str) -> Result<(), clickhouse::error::Error> {
    server
        .client
        .query(&statement(OFFSETS_DDL))
        .execute()
        .await?;
    server
        .client
        .query(&taxi_table_ddl(table))
        .execute()
        .await?;
    if server.version.has_non_replicated_dedup() {
        let alter = format!(
            "ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = 1000"
        );
        if let Err(err) = server.client.query(&alter).execute().await {
            tracing::warn!(table, error = %err, "Could not enable insert deduplication; FINAL still removes duplicates");
        }
    }
    if server.version.has_column_codecs()
        && let Err(err) = server.client.query(&codecs_ddl(table)).execute().await
    {
        tracing::warn!(table, error = %err, "Could not set the column codecs; the table works without them");
    }
    Ok(())
}

/// The table's columns differ from what the consumer writes.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// ClickHouse could not be asked.
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::error::Error),
    /// Columns are missing or have other types.
    #[error(
        "table {table} does not have the columns the consumer writes ({problems}); create it from infrastructure/clickhouse/taxi_trips.sql or pick another --table"
    )]
    Mismatch {
        /// The table.
        table: String,
        /// What differs.
        problems: String,
    },
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct ColumnType {
    name: String,
    #[serde(rename = "type")]
    ty: String,
}

/// Creates the shard layout table if it does not exist (shards of a sharded ClickHouse only).
pub async fn ensure_layout_table(server: &Server) -> Result<(), clickhouse::error::Error> {
    server.client.query(&statement(LAYOUT_DDL)).execute().await
}

/// Checks that `table` has every column of [`rowbinary::COLUMNS`] with exactly that type:
/// RowBinary is positional and untyped, so a different table would get garbage, not an error.
pub async fn verify_table(server: &Server, table: &str) -> Result<(), SchemaError> {
    let columns: Vec<ColumnType> = server
        .client
        .query("SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = ?")
        .bind(table)
        .fetch_all()
        .await?;
    let problems: Vec<String> = rowbinary::COLUMNS
        .iter()
        .filter_map(
            |(name, ty)| match columns.iter().find(|c| c.name == *name) {
                None => Some(format!("{name} missing")),
                Some(c) if c.ty != *ty => Some(format!("{name} is {} instead of {ty}", c.ty)),
                Some(_) => None,
            },
        )
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Mismatch {
            table: table.to_string(),
            problems: problems.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_files_have_the_expected_shape() {
        let ddl = taxi_table_ddl("trips_2");
        assert!(
            ddl.starts_with("CREATE TABLE IF NOT EXISTS trips_2\n"),
            "{ddl}"
        );
        assert!(!ddl.contains("--") && !ddl.contains("taxi_trips"));
        for column in [
            "_topic",
            "_partition",
            "_offset",
            "cbd_congestion_fee",
            "Airport_fee",
        ] {
            assert!(
                ddl.to_lowercase().contains(&column.to_lowercase()),
                "{column} missing"
            );
        }
        assert!(ddl.contains("ORDER BY (_topic, _partition, _offset)"));
        assert!(!ddl.contains("DateTime64") && !ddl.contains("LowCardinality"));
        let offsets = statement(OFFSETS_DDL);
        assert!(offsets.starts_with(&format!("CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE}")));
        let layout = statement(LAYOUT_DDL);
        assert!(layout.starts_with(&format!("CREATE TABLE IF NOT EXISTS {LAYOUT_TABLE}")));
    }
}
