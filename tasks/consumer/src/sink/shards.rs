//! The ClickHouse servers the consumer writes to: one server, or the shards of a cluster. Each
//! Kafka partition belongs to one shard (`partition % shards`, shards in the order given), and
//! its rows and its offset records are written there, together, by direct inserts into the
//! shard's local tables; a `Distributed` table over them is for reading only. A start-up check
//! refuses a shard list that would move a partition with offset records to another shard.
//!
//! Why not inserts through the `Distributed` table: those are queued on the receiving server and
//! sent to the shards in the background, so an acknowledged insert is not yet in the shard's
//! table, and the offset record written after it could claim rows that a crash then loses.

use std::collections::{BTreeMap, BTreeSet};

use velostream_common::clickhouse::Server;

use super::offsets::incarnation_of;
use super::schema::{LAYOUT_TABLE, OFFSETS_TABLE};

/// The shard of `partition` among `shards` shards.
pub fn shard_of(partition: i32, shards: usize) -> usize {
    partition.rem_euclid(shards.max(1) as i32) as usize
}

/// The servers, in shard order (one for an unsharded ClickHouse).
#[derive(Debug, Clone)]
pub struct Shards {
    servers: Vec<Server>,
    urls: Vec<String>,
}

impl Shards {
    /// Shards `servers`, reached at `urls` (for messages), in this order.
    pub fn new(servers: Vec<Server>, urls: Vec<String>) -> Self {
        assert!(!servers.is_empty() && servers.len() == urls.len());
        Self { servers, urls }
    }

    /// How many shards.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there is more than one server.
    pub fn is_sharded(&self) -> bool {
        self.servers.len() > 1
    }

    /// Always false: there is at least one server.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The shard that holds `partition`'s rows and offset records.
    pub fn of(&self, partition: i32) -> usize {
        shard_of(partition, self.len())
    }

    /// Shard `i`'s server.
    pub fn server(&self, i: usize) -> &Server {
        &self.servers[i]
    }

    /// Shard `i`'s URL.
    pub fn url(&self, i: usize) -> &str {
        &self.urls[i]
    }

    /// Every shard's server, in order.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// `items` grouped by the shard of the partition `partition_of` gives, shards in order,
    /// each group in the order of `items`.
    pub fn split<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        partition_of: impl Fn(&T) -> i32,
    ) -> BTreeMap<usize, Vec<T>> {
        let mut groups: BTreeMap<usize, Vec<T>> = BTreeMap::new();
        for item in items {
            groups
                .entry(self.of(partition_of(&item)))
                .or_default()
                .push(item);
        }
        groups
    }
}

/// The shard list does not fit what the shards hold.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// ClickHouse could not be asked.
    #[error("reading the shard layout from {url}: {source}")]
    ClickHouse {
        /// The shard's URL.
        url: String,
        /// What it said.
        #[source]
        source: clickhouse::error::Error,
    },
    /// The shards hold records that another shard list wrote.
    #[error(
        "the ClickHouse servers do not fit the shard list given ({shards} shard(s): {urls}; set by --clickhouse-shards, or --clickhouse-url alone for one) for table {table} and topic {topic:?}: {problems}. Each Kafka partition's rows and offset records live on shard `partition % shards`, so changing the number or the order of the shards would move partitions that have rows to a shard without their offset records (they would be read again from the start and stored twice across shards). Start the consumer with the shard list that wrote them (in the same order), or load into new tables (--table) or a new database"
    )]
    Moved {
        /// The target table.
        table: String,
        /// The topic.
        topic: String,
        /// How many shards were given.
        shards: usize,
        /// The URLs given.
        urls: String,
        /// What does not fit.
        problems: String,
    },
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Placed {
    topic: String,
    kafka_partition: i32,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Layout {
    shard_count: u32,
    shard_index: u32,
}

#[derive(Debug, clickhouse::Row, serde::Serialize)]
struct LayoutRow<'a> {
    target_table: &'a str,
    topic: &'a str,
    shard_count: u32,
    shard_index: u32,
}

impl Shards {
    /// Checks that every partition of `topic` (any incarnation) recorded in `table`'s offset
    /// records is on its shard, and that no shard was told a different shard list before (the
    /// layout each shard records, `velostream_shard_layout`: this catches a shard removed from the
    /// list, whose partitions would otherwise start over on the others). Then records the layout
    /// on every shard. An unsharded consumer writes no layout but still checks one left by a
    /// sharded run (a cluster reduced to one server).
    pub async fn check_layout(&self, table: &str, topic: &str) -> Result<(), LayoutError> {
        let mut problems = Vec::new();
        for (i, server) in self.servers.iter().enumerate() {
            let url = self.url(i);
            let err = |source| LayoutError::ClickHouse {
                url: url.to_string(),
                source,
            };
            let placed: Vec<Placed> = server
                .client
                .query(&format!(
                    "SELECT DISTINCT topic, kafka_partition FROM {OFFSETS_TABLE} WHERE target_table = ?"
                ))
                .bind(table)
                .fetch_all()
                .await
                .map_err(err)?;
            let misplaced: BTreeSet<i32> = placed
                .iter()
                .filter(|p| {
                    incarnation_of(topic, &p.topic).is_some() && self.of(p.kafka_partition) != i
                })
                .map(|p| p.kafka_partition)
                .collect();
            let misplaced: Vec<i32> = misplaced.into_iter().collect();
            if !misplaced.is_empty() {
                problems.push(format!(
                    "shard {} ({url}) has offset records of partitions {misplaced:?}, which the list maps to other shards",
                    i + 1
                ));
            }
            let has_layout_table: u8 = server
                .client
                .query("SELECT toUInt8(count()) FROM system.tables WHERE database = currentDatabase() AND name = ?")
                .bind(LAYOUT_TABLE)
                .fetch_one()
                .await
                .map_err(err)?;
            if has_layout_table == 0 {
                continue;
            }
            let layouts: Vec<Layout> = server
                .client
                .query(&format!(
                    "SELECT DISTINCT shard_count, shard_index FROM {LAYOUT_TABLE} WHERE target_table = ? AND topic = ?"
                ))
                .bind(table)
                .bind(topic)
                .fetch_all()
                .await
                .map_err(err)?;
            for l in layouts {
                if l.shard_count as usize != self.len() || l.shard_index as usize != i {
                    problems.push(format!(
                        "shard {} ({url}) was written as shard {} of {}",
                        i + 1,
                        l.shard_index + 1,
                        l.shard_count
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(LayoutError::Moved {
                table: table.to_string(),
                topic: topic.to_string(),
                shards: self.len(),
                urls: self.urls.join(","),
                problems: problems.join("; "),
            });
        }
        if self.is_sharded() {
            for (i, server) in self.servers.iter().enumerate() {
                let err = |source| LayoutError::ClickHouse {
                    url: self.url(i).to_string(),
                    source,
                };
                let mut insert = server
                    .client
                    .insert::<LayoutRow<'_>>(LAYOUT_TABLE)
                    .await
                    .map_err(err)?;
                insert
                    .write(&LayoutRow {
                        target_table: table,
                        topic,
                        shard_count: self.len() as u32,
                        shard_index: i as u32,
                    })
                    .await
                    .map_err(err)?;
                insert.end().await.map_err(err)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_map_to_shards_round_robin() {
        assert_eq!(
            (0..6).map(|p| shard_of(p, 2)).collect::<Vec<_>>(),
            [0, 1, 0, 1, 0, 1]
        );
        assert_eq!(
            (0..4).map(|p| shard_of(p, 3)).collect::<Vec<_>>(),
            [0, 1, 2, 0]
        );
        assert!((0..10).all(|p| shard_of(p, 1) == 0));
    }
}
