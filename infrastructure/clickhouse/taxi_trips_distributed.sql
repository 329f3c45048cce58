-- A sharded ClickHouse: the whole of taxi_trips across the shards of cluster `velostream`
-- (`remote_servers` in every server's config), for reading. Run it on each server you query,
-- after taxi_trips exists there (the consumer creates it on every shard it is given). Count with:
--
--     SELECT count() FROM taxi_trips_all FINAL
--
-- FINAL runs on each shard; it is exact because velostream-consumer (--clickhouse-shards) writes
-- all rows of one Kafka partition, and so every copy of a row, to one shard: partition % shards.
-- The consumer never inserts through this table: a Distributed insert reaches the shards later,
-- in the background, so the offset records could get ahead of the rows (ARCHITECTURE.md,
-- "Exactly once"). The sharding key `_partition` sends a row inserted here by hand to the same
-- shard as the consumer would (shards of equal weight, in the same order).
-- Valid on ClickHouse 18.16 and on modern releases.
CREATE TABLE IF NOT EXISTS taxi_trips_all AS taxi_trips
ENGINE = Distributed(velostream, currentDatabase(), taxi_trips, _partition)
