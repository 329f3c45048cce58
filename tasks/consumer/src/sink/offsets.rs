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
//!
//! With a sharded ClickHouse each partition's records live on the partition's shard
//! ([`Shards::of`]), beside its rows: they are read from there and written there.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::schema::OFFSETS_TABLE;
use super::shards::Shards;

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
    shards: Arc<Shards>,
    table: String,
    topic: String,
    group: String,
    /// The incarnation this process reads, fixed at its first assignment.
    incarnation: Arc<OnceLock<u32>>,
}

impl OffsetStore {
    /// The records of `table` fed from `topic`, on `shards`; `group` is kept for the record only.
    pub fn new(shards: Arc<Shards>, table: &str, topic: &str, group: &str) -> Self {
        Self {
            shards,
            table: table.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
            incarnation: Arc::default(),
        }
    }

    /// Every incarnation's next offsets of every partition that has a record, each partition's
    /// read from its shard. A record on another shard fails the lookup (it is retried, and
    /// logged, so the partition is never read from the start beside its records): the start-up
    /// check ([`Shards::check_layout`]) refuses such a shard list, so only a peer started with
    /// another list while this one ran can leave one.
    pub async fn load(&self) -> Result<Records, clickhouse::error::Error> {
        let mut records = Records {
            latest: 1,
            ..Records::default()
        };
        for (shard, server) in self.shards.servers().iter().enumerate() {
            let rows: Vec<Position> = server
                .client
                .query(&format!(
                    "SELECT topic, kafka_partition, max(next_offset) AS next_offset FROM {OFFSETS_TABLE} \
                     WHERE target_table = ? GROUP BY topic, kafka_partition"
                ))
                .bind(self.table.as_str())
                .fetch_all()
                .await?;
            self.add(&mut records, shard, rows)?;
        }
        Ok(records)
    }

    fn add(
        &self,
        records: &mut Records,
        shard: usize,
        rows: Vec<Position>,
    ) -> Result<(), clickhouse::error::Error> {
        for p in rows {
            let Some(n) = incarnation_of(&self.topic, &p.topic) else {
                continue;
            };
            if self.shards.of(p.kafka_partition) != shard {
                return Err(clickhouse::error::Error::Custom(format!(
                    "shard {} ({}) holds offset records of partition {}, which maps to shard {}: \
                     a consumer with another --clickhouse-shards list wrote them; stop it",
                    shard + 1,
                    self.shards.url(shard),
                    p.kafka_partition,
                    self.shards.of(p.kafka_partition) + 1
                )));
            }
            records.latest = records.latest.max(n);
            records
                .by_incarnation
                .entry(n)
                .or_default()
                .insert(p.kafka_partition, p.next_offset as i64);
        }
        Ok(())
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

    /// The shards the records live on.
    pub fn shards(&self) -> &Shards {
        &self.shards
    }

    /// Records that every offset before `next` of each partition is in the table; every
    /// partition of `positions` must belong to `shard`.
    pub async fn save(
        &self,
        shard: usize,
        positions: &[(i32, i64)],
    ) -> Result<(), clickhouse::error::Error> {
        debug_assert!(positions.iter().all(|(p, _)| self.shards.of(*p) == shard));
        let identity = self.identity();
        let mut insert = self
            .shards
            .server(shard)
            .client
            .insert::<OffsetRow<'_>>(OFFSETS_TABLE)
            .await?;
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
