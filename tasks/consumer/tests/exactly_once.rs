//! Exactly once as the validation query sees it: the consumer is killed with SIGKILL several
//! times mid-stream (no flush, no commit, inserts cut off half-way) and restarted; in the end
//! `SELECT count() FROM t FINAL` is exactly the number of rows produced, and every produced
//! (partition, offset) is there.

mod common;

use std::time::Duration;

use common::*;
use velostream_testkit::{ClickHouse, Kafka};

const ROWS: usize = 300_000;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_and_restart_leaves_exactly_the_produced_rows() {
    let kafka = Kafka::start();
    let ch = ClickHouse::start();
    let (topic, table, partitions) = ("taxi-kill", "trips_kill", 3);
    create_topic(&kafka, topic, partitions).await;
    let produced = produce(&kafka, topic, partitions, sample_rows(ROWS)).await;

    // Small batches and a short flush interval: many inserts, so kills land between an insert
    // and its offset record, mid-insert, and mid-batch.
    let mut args = ConsumerArgs::new(&kafka, &ch, topic, table);
    args.batch_rows = 4_000;
    args.batch_ms = 50;
    let mut kills = 0;
    let mut seen_mid_stream = Vec::new();
    let mut last = 0;
    while kills < 5 {
        let mut consumer = ConsumerProcess::start(&args);
        consumer.wait_ready();
        // Let it make some progress past what the previous run left, then pull the plug.
        let target = last + 20_000;
        let now = wait_for("progress before the kill", Duration::from_secs(120), || {
            let n = distinct_rows(&ch, table);
            (n >= target.min(ROWS as u64)).then_some(n)
        });
        if now >= ROWS as u64 {
            break;
        }
        // A varying extra moment, so the kills land at different points of the insert cycle.
        std::thread::sleep(Duration::from_millis(37 * kills as u64 % 150));
        consumer.kill9();
        kills += 1;
        seen_mid_stream.push(now);
        last = distinct_rows(&ch, table);
    }
    assert!(
        kills >= 3,
        "the consumer finished before it could be killed 3 times (at {seen_mid_stream:?}); make batches smaller"
    );

    // The last run drains the rest and stops cleanly.
    let mut consumer = ConsumerProcess::start(&args);
    consumer.wait_ready();
    wait_for(
        "every row after the restarts",
        Duration::from_secs(180),
        || (count_final(&ch, table) >= ROWS as u64).then_some(()),
    );
    let (code, _) = consumer.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));

    assert_eq!(
        count_final(&ch, table),
        ROWS as u64,
        "FINAL count after {kills} kills"
    );
    assert_eq!(distinct_rows(&ch, table), ROWS as u64);
    // Each partition holds exactly offsets 0..n: none lost, none invented.
    for (p, n) in &produced {
        let row = ch.query(&format!(
            "SELECT count(), min(_offset), max(_offset) FROM {table} FINAL WHERE _partition = {p}"
        ));
        assert_eq!(row.trim(), format!("{n}\t0\t{}", n - 1), "partition {p}");
    }
    // Duplicates may exist before merges (that is what FINAL is for); report them.
    let raw = ch.query_u64(&format!("SELECT count() FROM {table}"));
    eprintln!("{kills} kills at {seen_mid_stream:?} rows; raw count before merges {raw}");
    assert_eq!(
        committed(&kafka, "test-group", topic, partitions),
        produced,
        "the group's commits reach the end after the clean stop"
    );
}

/// The crash the offset records cannot prevent: rows inserted, the process killed before their
/// offsets were recorded. Simulated by inserting the first rows of a partition directly; the
/// consumer reads them again (ClickHouse's records do not cover them) and FINAL counts them once.
#[tokio::test(flavor = "multi_thread")]
async fn rows_inserted_but_not_recorded_are_read_again_and_counted_once() {
    use velostream_common::clickhouse::ClickHouseConfig;
    use velostream_consumer::record::{Record, TaxiRow, decode};

    let kafka = Kafka::start();
    let ch = ClickHouse::start();
    let (topic, table, partitions) = ("taxi-dup", "trips_dup", 2);
    create_topic(&kafka, topic, partitions).await;
    let produced = produce(&kafka, topic, partitions, sample_rows(20_000)).await;

    // What a killed predecessor left: partition 0's first 3,000 rows, no offset record.
    let server = ClickHouseConfig {
        url: ch.http_url.clone(),
        ..ClickHouseConfig::default()
    }
    .connect()
    .await
    .unwrap();
    velostream_consumer::sink::schema::ensure_tables(&server, table)
        .await
        .unwrap();
    let mut insert = server.client.insert::<TaxiRow<'_>>(table).await.unwrap();
    // Round-robin production: partition 0 holds messages 0, 2, 4...
    for (offset, payload) in sample().iter().step_by(2).take(3_000).enumerate() {
        let record = Record {
            partition: 0,
            offset: offset as i64,
            trip: decode(payload).unwrap(),
        };
        insert.write(&TaxiRow::new(topic, &record)).await.unwrap();
    }
    insert.end().await.unwrap();
    assert_eq!(count_final(&ch, table), 3_000);

    let mut consumer = ConsumerProcess::start(&ConsumerArgs::new(&kafka, &ch, topic, table));
    consumer.wait_ready();
    wait_for("every row", Duration::from_secs(120), || {
        (count_final(&ch, table) >= 20_000).then_some(())
    });
    let (code, stdout) = consumer.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert_eq!(
        summary(&stdout)["rows_inserted"],
        20_000,
        "it read partition 0 from the start"
    );
    assert_eq!(count_final(&ch, table), 20_000);
    assert_eq!(distinct_rows(&ch, table), 20_000);
    // The duplicates exist until merged away; OPTIMIZE ... FINAL merges them for good.
    ch.query(&format!("OPTIMIZE TABLE {table} FINAL"));
    assert_eq!(
        ch.query_u64(&format!("SELECT count() FROM {table}")),
        20_000
    );
    assert_eq!(committed(&kafka, "test-group", topic, partitions), produced);
}
