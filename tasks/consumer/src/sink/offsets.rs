//! Offset records in ClickHouse, the source of truth for where each partition continues: one row
//! per partition per batch, written only after ClickHouse acknowledged the batch's rows. A
//! partition's next offset is the maximum recorded for it.
//!
//! A topic can be deleted and created again under the same name (or emptied by a broker that lost
//! its data): its offsets start again at 0, and the new messages' `(_topic, _partition, _offset)`
//! would equal old rows' identities. Each life of a topic is therefore an *incarnation*: the first
//! is recorded and stored under the topic's name, incarnation N >= 2 under `TOPIC#N` (in the
//! records' `topic` and the rows' `_topic`; '#' cannot occur in a Kafka topic name, so no real
//! topic's rows can have that identity). The consumer continues the latest incarnation recorded
//! for its table, and starts the next one only when told to (`--on-topic-reset=start-over`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

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
    topic: String,
    kafka_partition: i32,
    next_offset: u64,
}

/// How incarnation `n` of `topic` is named in the offset records and the rows' `_topic`.
pub fn identity_topic(topic: &str, n: u32) -> String {
    if n <= 1 {
        topic.to_string()
    } else {
        format!("{topic}#{n}")
    }
}

/// Which incarnation of `topic` a recorded topic name is, if it is one of `topic`'s.
pub fn incarnation_of(topic: &str, recorded: &str) -> Option<u32> {
    if recorded == topic {
        return Some(1);
    }
    recorded
        .strip_prefix(topic)?
        .strip_prefix('#')?
        .parse()
        .ok()
        .filter(|&n| n >= 2)
}

/// What the offset records say about a table's topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    /// The latest incarnation recorded (1 when there is no record at all).
    pub latest: u32,
    /// Per incarnation, the next offset of every partition that has a record.
    pub by_incarnation: BTreeMap<u32, BTreeMap<i32, i64>>,
}

impl Records {
    /// The next offsets recorded for incarnation `n` (empty if none).
    pub fn of(&self, n: u32) -> BTreeMap<i32, i64> {
        self.by_incarnation.get(&n).cloned().unwrap_or_default()
    }
}

/// Reads and writes the offset records of one table and topic.
#[derive(Debug, Clone)]
pub struct OffsetStore {
    client: Client,
    table: String,
    topic: String,
    group: String,
    /// The incarnation this process reads, fixed at its first assignment.
    incarnation: Arc<OnceLock<u32>>,
}

impl OffsetStore {
    /// The records of `table` fed from `topic`; `group` is kept for the record only.
    pub fn new(client: Client, table: &str, topic: &str, group: &str) -> Self {
        Self {
            client,
            table: table.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
            incarnation: Arc::default(),
        }
    }

    /// Every incarnation's next offsets of every partition that has a record.
    pub async fn load(&self) -> Result<Records, clickhouse::error::Error> {
        let rows: Vec<Position> = self
            .client
            .query(&format!(
                "SELECT topic, kafka_partition, max(next_offset) AS next_offset FROM {OFFSETS_TABLE} \
                 WHERE target_table = ? GROUP BY topic, kafka_partition"
            ))
            .bind(self.table.as_str())
            .fetch_all()
            .await?;
        let mut records = Records {
            latest: 1,
            ..Records::default()
        };
        for p in rows {
            let Some(n) = incarnation_of(&self.topic, &p.topic) else {
                continue;
            };
            records.latest = records.latest.max(n);
            records
                .by_incarnation
                .entry(n)
                .or_default()
                .insert(p.kafka_partition, p.next_offset as i64);
        }
        Ok(records)
    }

    /// The target table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Fixes the incarnation this process reads and writes (the first call wins); returns it.
    pub fn fix_incarnation(&self, n: u32) -> u32 {
        *self.incarnation.get_or_init(|| n)
    }

    /// The incarnation this process reads, once fixed.
    pub fn incarnation(&self) -> Option<u32> {
        self.incarnation.get().copied()
    }

    /// The topic name rows and records carry: the topic's, or `TOPIC#N` for incarnation N >= 2.
    pub fn identity(&self) -> String {
        identity_topic(&self.topic, self.incarnation().unwrap_or(1))
    }

    /// Records that every offset before `next` of each partition is in the table.
    pub async fn save(&self, positions: &[(i32, i64)]) -> Result<(), clickhouse::error::Error> {
        let identity = self.identity();
        let mut insert = self.client.insert::<OffsetRow<'_>>(OFFSETS_TABLE).await?;
        for &(partition, next) in positions {
            insert
                .write(&OffsetRow {
                    target_table: &self.table,
                    topic: &identity,
                    kafka_partition: partition,
                    next_offset: next.max(0) as u64,
                    group_id: &self.group,
                })
                .await?;
        }
        insert.end().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_are_named_so_no_real_topic_can_match() {
        assert_eq!(identity_topic("taxi", 1), "taxi");
        assert_eq!(identity_topic("taxi", 3), "taxi#3");
        assert_eq!(incarnation_of("taxi", "taxi"), Some(1));
        assert_eq!(incarnation_of("taxi", "taxi#2"), Some(2));
        assert_eq!(incarnation_of("taxi", "taxi#1"), None);
        assert_eq!(incarnation_of("taxi", "taxi-2"), None);
        assert_eq!(incarnation_of("taxi", "taxis"), None);
        assert_eq!(incarnation_of("taxi", "taxi#x"), None);
    }
}
