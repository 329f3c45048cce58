//! The real 100k-row TLC sample through the consumer binary into ClickHouse, started and stopped
//! the way the DAG does it: every row lands once, with the values it had in the Parquet file, the
//! group's commits reach the end of every partition, and the summary line reports the rows.

mod common;

use std::time::Duration;

use common::*;
use velostream_consumer::record::{Record, TaxiRow, decode};
use velostream_testkit::{ClickHouse, Kafka, Lane};

#[tokio::test(flavor = "multi_thread")]
async fn the_real_sample_lands_once_with_its_values() {
    let kafka = Kafka::start();
    let ch = ClickHouse::start();
    let (topic, table, partitions) = ("taxi", "taxi_trips", 4);
    create_topic(&kafka, topic, partitions).await;

    let mut args = ConsumerArgs::new(&kafka, &ch, topic, table);
    args.batch_rows = 30_000;
    let mut consumer = ConsumerProcess::start(&args);
    consumer.wait_ready();
    let produced = produce(&kafka, topic, partitions, sample().iter().cloned()).await;
    let total: i64 = produced.values().sum();
    assert_eq!(total, 100_000);

    wait_for("all rows in ClickHouse", Duration::from_secs(120), || {
        (count_final(&ch, table) == 100_000).then_some(())
    });
    // Commits are progress markers, but the DAG's lag sensor reads them: they reach the end.
    wait_for(
        "commits at the end of every partition",
        Duration::from_secs(30),
        || (committed(&kafka, "test-group", topic, partitions) == produced).then_some(()),
    );
    assert_eq!(
        consumer.metric("velostream_consumer_rows_inserted_total"),
        Some(100_000.0)
    );
    assert_eq!(
        consumer.metric("velostream_consumer_fetch_paused"),
        Some(0.0)
    );
    let (_, metrics) = consumer.get("/metrics").unwrap();
    for p in 0..partitions {
        let lag = format!("velostream_consumer_partition_lag{{topic=\"taxi\",partition=\"{p}\"}}");
        assert!(metrics.contains(&lag), "{lag} missing from\n{metrics}");
    }

    // The steadily growing columns carry delta codecs where the server has codecs (not 18.16).
    let codecs = ch.query(&format!("SHOW CREATE TABLE {table}"));
    match ch.lane {
        Lane::Modern => assert_eq!(codecs.matches("CODEC(Delta(").count(), 3, "{codecs}"),
        Lane::Legacy => assert!(!codecs.contains("CODEC"), "{codecs}"),
    }

    // The values are the Parquet file's: aggregate what the consumer stored and what decoding
    // the same messages locally gives.
    let trips: Vec<_> = sample().iter().map(|r| decode(r).unwrap()).collect();
    let local_total: f64 = trips.iter().map(|t| t.total_amount).sum();
    let local_passengers: u64 = trips
        .iter()
        .filter_map(|t| t.passenger_count.map(u64::from))
        .sum();
    let local_pickups: u64 = trips.iter().map(|t| u64::from(t.pickup)).sum();
    let row = ch.query(&format!(
        "SELECT count(), sum(passenger_count), sum(toUInt64(tpep_pickup_datetime)), \
         round(sum(total_amount), 2), countIf(store_and_fwd_flag = 'Y'), countIf(isNull(cbd_congestion_fee)), \
         uniqExact(toYYYYMM(tpep_pickup_datetime)) FROM {table} FINAL"
    ));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[0], "100000");
    assert_eq!(cols[1], local_passengers.to_string());
    assert_eq!(cols[2], local_pickups.to_string());
    assert_eq!(
        cols[3].parse::<f64>().unwrap(),
        (local_total * 100.0).round() / 100.0
    );
    assert_eq!(cols[4], "560");
    assert_eq!(cols[5], "100000");
    assert_eq!(
        cols[6], "3",
        "the sample has pickups in three months: {row}"
    );
    assert_eq!(
        ch.query("SELECT tpep_pickup_datetime, total_amount FROM taxi_trips WHERE _partition = 0 AND _offset = 0")
            .trim(),
        "2023-01-01 00:32:10\t14.3"
    );

    // The consumer writes RowBinary bytes itself: the same rows written through the clickhouse
    // crate's typed `Insert<TaxiRow>` must be identical, column for column.
    let server = velostream_common::clickhouse::ClickHouseConfig {
        url: ch.http_url.clone(),
        ..Default::default()
    }
    .connect()
    .await
    .unwrap();
    velostream_consumer::sink::schema::ensure_tables(&server, "typed")
        .await
        .unwrap();
    let mut insert = server.client.insert::<TaxiRow<'_>>("typed").await.unwrap();
    for (i, trip) in trips.iter().enumerate() {
        let record = Record {
            partition: (i % 4) as i32,
            offset: (i / 4) as i64,
            trip: trip.clone(),
        };
        insert.write(&TaxiRow::new(topic, &record)).await.unwrap();
    }
    insert.end().await.unwrap();
    let columns = velostream_consumer::record::rowbinary::column_list();
    let digest = |t: &str| {
        ch.query(&format!(
            "SELECT count(), sum(cityHash64({columns})) FROM {t}"
        ))
    };
    assert_eq!(digest(table), digest("typed"));

    let (code, stdout) = consumer.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let out = summary(&stdout);
    assert_eq!(out["rows_inserted"], 100_000);
    assert_eq!(out["rows_consumed"], 100_000);
    assert_eq!(out["rows_dead_lettered"], 0);
    assert!(out["rows_per_sec"].as_f64().unwrap() > 0.0, "{out}");
    assert_eq!(count_final(&ch, table), 100_000);
}
