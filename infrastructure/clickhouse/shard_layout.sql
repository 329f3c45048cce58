-- Which shard of how many each server is for velostream-consumer, per target table and topic,
-- written by a consumer started with --clickhouse-shards (tasks/consumer/src/sink/shards.rs).
-- Each Kafka partition's rows and offset records live on shard `partition % shard_count`; a
-- consumer started with a shard list of another length or order finds the layout recorded here
-- (and offset records on the wrong shard) and refuses to start, rather than read partitions
-- again from the start on a shard that does not hold their records.
-- Valid on ClickHouse 18.16 and on modern releases.
CREATE TABLE IF NOT EXISTS velostream_shard_layout
(
    target_table String,
    topic        String,
    shard_count  UInt32,
    shard_index  UInt32,
    recorded_at  DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree()
ORDER BY (target_table, topic, shard_count, shard_index)
