//! A batch whose insert times out is sent again with the same `insert_deduplication_token`. When
//! the first attempt lands after all (the server was only frozen), a modern ClickHouse (22.2+,
//! with `non_replicated_deduplication_window`) drops the retry itself: `count()` without `FINAL`
//! is exact. On 18.16, which has no token, the duplicate is stored and `FINAL` removes it. The test
//! runs on the lane `VELOSTREAM_CLICKHOUSE` selects and asserts what that lane promises.

mod common;

use std::time::Duration;

use common::*;
use velostream_testkit::{ClickHouse, Kafka, Lane};

const ROWS: usize = 1_000;

/// Blocks the server dropped as duplicates of earlier inserts (`system.events`).
fn duplicated_blocks(ch: &ClickHouse) -> u64 {
    ch.query_u64(
        "SELECT toUInt64(sum(value)) FROM system.events WHERE event = 'DuplicatedInsertedBlocks'",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_batch_counts_once_dropped_by_the_server_on_a_modern_clickhouse() {
    let kafka = Kafka::start();
    let ch = ClickHouse::start();
    let (topic, table) = ("taxi-retry", "trips_retry");
    create_topic(&kafka, topic, 1).await;

    let mut args = ConsumerArgs::new(&kafka, &ch, topic, table);
    // One small batch: its whole request fits in the socket buffers of a frozen server, which
    // reads it, and inserts it, once it runs again.
    args.batch_rows = ROWS;
    args.batch_ms = 100;
    args.extra = ["--insert-timeout", "2s", "--max-backoff", "1s"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut consumer = ConsumerProcess::start(&args);
    consumer.wait_ready();
    let before = duplicated_blocks(&ch);

    ch.pause();
    produce(&kafka, topic, 1, sample_rows(ROWS)).await;
    wait_for(
        "an insert to time out and be retried",
        Duration::from_secs(60),
        || (consumer.metric("velostream_consumer_insert_failures_total")? >= 2.0).then_some(()),
    );
    ch.resume();
    wait_for("the batch", Duration::from_secs(60), || {
        (count_final(&ch, table) == ROWS as u64).then_some(())
    });
    let (code, _) = consumer.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));

    let stored = ch.query_u64(&format!("SELECT count() FROM {table}"));
    assert_eq!(count_final(&ch, table), ROWS as u64);
    assert_eq!(distinct_rows(&ch, table), ROWS as u64);
    match ch.lane {
        Lane::Modern => {
            // The server saw the batch more than once and kept one copy.
            let dropped = duplicated_blocks(&ch) - before;
            assert!(
                dropped >= 1,
                "no insert was dropped as a duplicate: the test did not retry a landed batch"
            );
            assert_eq!(stored, ROWS as u64, "count() without FINAL");
        }
        Lane::Legacy => {
            // No token on 18.16: every attempt that landed is stored, FINAL keeps one.
            assert!(stored >= ROWS as u64, "{stored} rows stored");
            eprintln!("legacy lane: {stored} rows stored for {ROWS}, FINAL exact");
        }
    }
}
