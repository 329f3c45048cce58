-- Where velostream-consumer has got to: for each target table, topic and Kafka partition, the
-- next offset not yet in the table. This, not the Kafka group's committed offsets, is the source
-- of truth: a row is written here only after ClickHouse acknowledged the insert of every row
-- before that offset, and on every partition assignment the consumer seeks to
--
--     SELECT kafka_partition, max(next_offset) FROM velostream_consumer_offsets
--     WHERE target_table = 'taxi_trips' AND topic = 'taxi' GROUP BY kafka_partition
--
-- Append-only (one row per inserted batch and partition); ReplacingMergeTree keeps the highest
-- next_offset per key as parts merge, and the query takes max() so unmerged parts do not matter.
-- Valid on ClickHouse 18.16 and on modern releases.
CREATE TABLE IF NOT EXISTS velostream_consumer_offsets
(
    target_table    String,
    topic           String,
    kafka_partition Int32,
    next_offset     UInt64,
    group_id        String,
    updated_at      DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (target_table, topic, kafka_partition)
