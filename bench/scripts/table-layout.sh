#!/bin/bash
# Each layout: RowBinary insert of the same 3M rows over HTTP (3 rounds, best), bytes on disk after
# OPTIMIZE FINAL, and two queries (best of 3).
set -e
URL="http://127.0.0.1:${PORT:-18200}/?user=velostream&password=velostream"
Q() { curl -sS "$URL" --data-binary "$1"; }
ENG="ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(tpep_pickup_datetime) ORDER BY (_topic, _partition, _offset)"
BASE="VendorID UInt8, TS1, TS2, passenger_count Nullable(UInt8), trip_distance FLT, RatecodeID Nullable(UInt8), store_and_fwd_flag FLAG, PULocationID UInt16, DOLocationID UInt16, payment_type UInt8, fare_amount FLT, extra FLT, mta_tax FLT, tip_amount FLT, tolls_amount FLT, improvement_surcharge FLT, total_amount FLT, congestion_surcharge Nullable(Float64), airport_fee Nullable(Float64), cbd_congestion_fee Nullable(Float64), _topic TOPIC, _partition Int32, _offset Int64 OFFC"
mk() { # name ts flag topic flt offc
  local c="$BASE"
  c="${c//TS1/tpep_pickup_datetime $2}"; c="${c//TS2/tpep_dropoff_datetime $2}"
  c="${c//FLAG/$3}"; c="${c//TOPIC/$4}"; c="${c//FLT/$5}"; c="${c//OFFC/$6}"
  Q "DROP TABLE IF EXISTS $1"; Q "CREATE TABLE $1 ($c) $ENG"
}
mk A "DateTime" "Nullable(String)" "String" "Float64" ""
mk B "DateTime" "LowCardinality(Nullable(String))" "LowCardinality(String)" "Float64" ""
mk C "DateTime CODEC(Delta, ZSTD(1))" "LowCardinality(Nullable(String))" "LowCardinality(String)" "Float64 CODEC(ZSTD(1))" "CODEC(Delta, ZSTD(1))"
mk E "DateTime CODEC(Delta, ZSTD(1))" "Nullable(String)" "String" "Float64" "CODEC(Delta, ZSTD(1))"
mk D "DateTime64(6)" "LowCardinality(Nullable(String))" "LowCardinality(String)" "Float64" ""
for t in ${TABLES:-A B C D}; do
  Q "INSERT INTO $t SELECT * FROM src"
  Q "SELECT * FROM $t FORMAT RowBinary" > $t.rowbinary
done
for round in 1 2 3; do for t in ${TABLES:-A B C D}; do
  Q "TRUNCATE TABLE $t"
  s=$(date +%s.%N)
  curl -sS "$URL&query=INSERT%20INTO%20$t%20FORMAT%20RowBinary" --data-binary @$t.rowbinary
  e=$(date +%s.%N)
  echo "insert $t round $round $(echo "$e - $s" | bc) s"
done; done
for t in ${TABLES:-A B C D}; do
  Q "OPTIMIZE TABLE $t FINAL"
  bytes=$(Q "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND table = '$t' AND database = currentDatabase()")
  best1=99; best2=99
  for i in 1 2 3; do
    s=$(date +%s.%N); Q "SELECT toStartOfDay(tpep_pickup_datetime) d, count(), avg(total_amount), sum(tip_amount) FROM $t GROUP BY d ORDER BY d FORMAT Null"; e=$(date +%s.%N); q1=$(echo "$e - $s" | bc)
    s=$(date +%s.%N); Q "SELECT store_and_fwd_flag, payment_type, count(), avg(trip_distance) FROM $t FINAL GROUP BY 1, 2 FORMAT Null"; e=$(date +%s.%N); q2=$(echo "$e - $s" | bc)
    best1=$(echo "if ($q1 < $best1) $q1 else $best1" | bc); best2=$(echo "if ($q2 < $best2) $q2 else $best2" | bc)
  done
  echo "layout $t bytes_on_disk $bytes rowbinary_bytes $(stat -c %s $t.rowbinary) q_by_day $best1 q_final_groupby $best2"
done
Q "SELECT version()"
uptime
