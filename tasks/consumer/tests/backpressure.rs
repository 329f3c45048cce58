//! Backpressure: while ClickHouse is frozen (SIGSTOP) or down (SIGKILL, then restarted on its
//! data), the consumer pauses fetching instead of buffering the topic, retries the insert with
//! backoff, commits nothing it has not inserted, and resumes when ClickHouse is back, losing
//! nothing and counting nothing twice.

mod common;

use std::time::Duration;

use common::*;
use velostream_testkit::{ClickHouse, Kafka};

const BATCH_ROWS: usize = 10_000;

/// The offsets recorded in ClickHouse, summed over partitions.
fn recorded_offsets(ch: &ClickHouse, topic: &str) -> u64 {
    ch.query_u64(&format!(
        "SELECT sum(n) FROM (SELECT max(next_offset) AS n FROM velostream_consumer_offsets \
         WHERE topic = '{topic}' GROUP BY kafka_partition)"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_or_dead_clickhouse_pauses_fetching_and_nothing_is_lost() {
    let kafka = Kafka::start();
    let mut ch = ClickHouse::start();
    let (topic, table, partitions) = ("taxi-bp", "trips_bp", 2);
    create_topic(&kafka, topic, partitions).await;

    let mut args = ConsumerArgs::new(&kafka, &ch, topic, table);
    args.batch_rows = BATCH_ROWS;
    args.batch_ms = 100;
    args.extra = ["--insert-timeout", "2s", "--max-backoff", "1s"]
        .into_iter()
        .chain(["--fetch-queue-kbytes", "4096"])
        .map(String::from)
        .collect();
    let mut consumer = ConsumerProcess::start(&args);
    consumer.wait_ready();
    let mut total = 20_000;
    produce(&kafka, topic, partitions, sample_rows(total)).await;
    // The rows and their offset records (written after the rows) are in.
    wait_for("the first rows", Duration::from_secs(60), || {
        (count_final(&ch, table) == total as u64 && recorded_offsets(&ch, topic) == total as u64)
            .then_some(())
    });
    let rss_idle = consumer.rss_bytes();

    // Frozen ClickHouse: connections hang, inserts time out and are retried.
    ch.pause();
    produce(&kafka, topic, partitions, sample_rows(300_000)).await;
    total += 300_000;
    wait_for("fetching to pause", Duration::from_secs(60), || {
        (consumer.metric("velostream_consumer_fetch_paused")? == 1.0).then_some(())
    });
    let consumed = consumer
        .metric("velostream_consumer_rows_consumed_total")
        .unwrap();
    // Give fetching every chance to go on: wait until the consumer has retried the insert once
    // more (an insert timeout plus a backoff, about as long as the old fixed 3 s), then look again.
    let failures = consumer
        .metric("velostream_consumer_insert_failures_total")
        .unwrap_or(0.0);
    wait_for("one more insert retry", Duration::from_secs(60), || {
        (consumer.metric("velostream_consumer_insert_failures_total")? >= failures + 1.0)
            .then_some(())
    });
    let consumed_later = consumer
        .metric("velostream_consumer_rows_consumed_total")
        .unwrap();
    assert_eq!(consumed, consumed_later, "fetching went on while paused");
    // Read but not inserted: the batch being retried and the full one waiting, no more.
    let held = consumed as usize - 20_000;
    assert!(
        held <= 2 * BATCH_ROWS + 4096,
        "{held} rows held while ClickHouse is frozen"
    );
    let rss_paused = consumer.rss_bytes();
    assert!(
        consumer
            .metric("velostream_consumer_insert_failures_total")
            .unwrap()
            >= 1.0
    );
    // Nothing is committed for rows not inserted: neither in Kafka nor in ClickHouse's records.
    let kafka_committed: i64 = committed(&kafka, "test-group", topic, partitions)
        .values()
        .sum();
    assert!(kafka_committed <= 20_000, "{kafka_committed} committed");

    ch.resume();
    assert_eq!(recorded_offsets(&ch, topic), 20_000);
    wait_for(
        "every row after the resume",
        Duration::from_secs(120),
        || (count_final(&ch, table) == total as u64).then_some(()),
    );
    assert_eq!(
        consumer.metric("velostream_consumer_fetch_paused"),
        Some(0.0)
    );

    // Dead ClickHouse: killed outright, restarted on the same data and ports.
    ch.kill();
    produce(&kafka, topic, partitions, sample_rows(50_000)).await;
    total += 50_000;
    let failures = consumer
        .metric("velostream_consumer_insert_failures_total")
        .unwrap();
    wait_for(
        "inserts to fail while ClickHouse is down",
        Duration::from_secs(60),
        || (consumer.metric("velostream_consumer_insert_failures_total")? > failures).then_some(()),
    );
    ch.restart();
    wait_for(
        "every row after the restart",
        Duration::from_secs(120),
        || (count_final(&ch, table) == total as u64).then_some(()),
    );

    let (code, stdout) = consumer.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert_eq!(count_final(&ch, table), total as u64);
    assert_eq!(distinct_rows(&ch, table), total as u64);
    assert_eq!(recorded_offsets(&ch, topic), total as u64);
    let committed: i64 = committed(&kafka, "test-group", topic, partitions)
        .values()
        .sum();
    assert_eq!(committed, total as i64);
    let out = summary(&stdout);
    assert!(out["rows_inserted"].as_u64().unwrap() >= total as u64);
    eprintln!(
        "RSS idle {} MB, while paused with 300k rows waiting {} MB",
        rss_idle >> 20,
        rss_paused >> 20
    );
    // The bound the consumer states for these settings holds.
    let mut settings =
        velostream_consumer::Settings::new("unused:1", Default::default(), topic, "g");
    settings.batch_rows = BATCH_ROWS;
    settings.fetch_queue_kbytes = 4096;
    let bound = settings.memory_bound_bytes();
    assert!(
        rss_paused <= bound,
        "RSS {} MB while paused (idle {} MB) is over the stated bound of {} MB",
        rss_paused >> 20,
        rss_idle >> 20,
        bound >> 20
    );
}
