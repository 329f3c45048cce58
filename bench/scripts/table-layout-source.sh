#!/bin/bash
# Fills `src` with 3M TLC rows (the 100k sample 30 times, shifted timestamps) on a running ClickHouse
# 26.x (PORT, default 18200); then run table-layout.sh. See docs/table-layout.md.
set -e
URL="http://127.0.0.1:${PORT:-18200}/?user=velostream&password=velostream"
Q() { curl -sS "$URL" --data-binary "$1"; }
P=/work/shared/data/nyc-taxi/yellow_tripdata_2023-01_100k.parquet
COLS_A="VendorID UInt8, tpep_pickup_datetime DateTime, tpep_dropoff_datetime DateTime, passenger_count Nullable(UInt8), trip_distance Float64, RatecodeID Nullable(UInt8), store_and_fwd_flag Nullable(String), PULocationID UInt16, DOLocationID UInt16, payment_type UInt8, fare_amount Float64, extra Float64, mta_tax Float64, tip_amount Float64, tolls_amount Float64, improvement_surcharge Float64, total_amount Float64, congestion_surcharge Nullable(Float64), airport_fee Nullable(Float64), cbd_congestion_fee Nullable(Float64), _topic String, _partition Int32, _offset Int64"
ENG="ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(tpep_pickup_datetime) ORDER BY (_topic, _partition, _offset)"
Q "DROP TABLE IF EXISTS src"
Q "CREATE TABLE src ($COLS_A) $ENG"
Q "INSERT INTO src SELECT ifNull(VendorID,0), toDateTime(tpep_pickup_datetime) + p*7, toDateTime(tpep_dropoff_datetime) + p*7, passenger_count, ifNull(trip_distance,0), RatecodeID, store_and_fwd_flag, ifNull(PULocationID,0), ifNull(DOLocationID,0), ifNull(payment_type,0), ifNull(fare_amount,0), ifNull(extra,0), ifNull(mta_tax,0), ifNull(tip_amount,0), ifNull(tolls_amount,0), ifNull(improvement_surcharge,0), ifNull(total_amount,0), congestion_surcharge, airport_fee, NULL, 'taxi-trips', toInt32(rn % 6), toInt64(intDiv(rn, 6)) FROM (SELECT *, p, rowNumberInAllBlocks() AS rn FROM file('$P') ARRAY JOIN range(${PASSES:-30}) AS p) SETTINGS max_threads=1"
Q "SELECT count() FROM src"
