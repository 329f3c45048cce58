-- NYC TLC yellow-taxi trips as velostream-consumer writes them. Valid on ClickHouse 18.16 (Debian)
-- and on modern releases (24.x+): DateTime rather than DateTime64 (TLC timestamps are whole
-- seconds), no LowCardinality (experimental behind a flag on 18.16; a Y/N column compresses to
-- nothing anyway), Nullable exactly where TLC files have nulls or lack the column in some years.
--
-- Exactly once: every row carries its Kafka coordinates, and the sorting key (_topic, _partition,
-- _offset) is the row's identity. A row inserted twice (a retry after a timeout, a crash between
-- the insert and the offset record) is collapsed by ReplacingMergeTree when parts merge, and
-- immediately by FINAL. Both copies of a row have the same pickup month, so they always meet in
-- the same partition (OPTIMIZE and FINAL only merge within a partition). Count with:
--
--     SELECT count() FROM taxi_trips FINAL
--
-- The consumer runs this statement with the table name replaced by its --table.
CREATE TABLE IF NOT EXISTS taxi_trips
(
    VendorID              UInt8,
    tpep_pickup_datetime  DateTime,
    tpep_dropoff_datetime DateTime,
    passenger_count       Nullable(UInt8),
    trip_distance         Float64,
    RatecodeID            Nullable(UInt8),
    store_and_fwd_flag    Nullable(String),
    PULocationID          UInt16,
    DOLocationID          UInt16,
    payment_type          UInt8,
    fare_amount           Float64,
    extra                 Float64,
    mta_tax               Float64,
    tip_amount            Float64,
    tolls_amount          Float64,
    improvement_surcharge Float64,
    total_amount          Float64,
    congestion_surcharge  Nullable(Float64),
    airport_fee           Nullable(Float64),
    cbd_congestion_fee    Nullable(Float64),
    _topic                String,
    _partition            Int32,
    _offset               Int64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(tpep_pickup_datetime)
ORDER BY (_topic, _partition, _offset)
