//! Offset records in ClickHouse, the source of truth for where each partition continues: one row
//! per partition per batch, written only after ClickHouse acknowledged the batch's rows. A
//! partition's next offset is the maximum recorded for it.

use std::collections::BTreeMap;

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use super::schema::OFFSETS_TABLE;

#[derive(Debug, Row, Serialize)]
struct OffsetRow<'a> {
    target_table: &'a str,
    topic: &'a str,
    kafka_partition: i32,
    next_offset: u64,
    group_id: &'a str,
}

#[derive(Debug, Row, Deserialize)]
struct Position {
    kafka_partition: i32,
    next_offset: u64,
}

/// Reads and writes the offset records of one table and topic.
#[derive(Debug, Clone)]
pub struct OffsetStore {
    client: Client,
    table: String,
    topic: String,
    group: String,
}

impl OffsetStore {
    /// The records of `table` fed from `topic`; `group` is kept for the record only.
    pub fn new(client: Client, table: &str, topic: &str, group: &str) -> Self {
        Self {
            client,
            table: table.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
        }
    }

    /// The next offset of every partition that has a record.
    pub async fn load(&self) -> Result<BTreeMap<i32, i64>, clickhouse::error::Error> {
        let rows: Vec<Position> = self
            .client
            .query(&format!(
                "SELECT kafka_partition, max(next_offset) AS next_offset FROM {OFFSETS_TABLE} \
                 WHERE target_table = ? AND topic = ? GROUP BY kafka_partition"
            ))
            .bind(self.table.as_str())
            .bind(self.topic.as_str())
            .fetch_all()
            .await?;
        Ok(rows
            .into_iter()
            .map(|p| (p.kafka_partition, p.next_offset as i64))
            .collect())
    }

    /// Records that every offset before `next` of each partition is in the table.
    pub async fn save(&self, positions: &[(i32, i64)]) -> Result<(), clickhouse::error::Error> {
        let mut insert = self.client.insert::<OffsetRow<'_>>(OFFSETS_TABLE).await?;
        for &(partition, next) in positions {
            insert
                .write(&OffsetRow {
                    target_table: &self.table,
                    topic: &self.topic,
                    kafka_partition: partition,
                    next_offset: next.max(0) as u64,
                    group_id: &self.group,
                })
                .await?;
        }
        insert.end().await
    }
}
