//! SIGTERM, the way the DAG's `process.stop` ends the consumer: it stops fetching, flushes the
//! batch it was filling (which would otherwise wait for more rows), commits, leaves the group and
//! exits 0, printing its summary line.

mod common;

use std::time::Duration;

use common::*;
use velostream_common::protocol::{Line, Message, parse_line};
use velostream_testkit::{ClickHouse, Kafka};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_flushes_the_current_batch_commits_and_exits_zero() {
    let kafka = Kafka::start();
    let ch = ClickHouse::start();
    let (topic, table, partitions) = ("taxi-term", "trips_term", 3);
    create_topic(&kafka, topic, partitions).await;

    // A batch that neither fills (1M rows) nor ages (10 minutes) on its own.
    let mut args = ConsumerArgs::new(&kafka, &ch, topic, table);
    args.batch_rows = 1_000_000;
    args.batch_ms = 600_000;
    let mut consumer = ConsumerProcess::start(&args);
    consumer.wait_ready();
    let produced = produce(&kafka, topic, partitions, sample_rows(50_000)).await;
    wait_for("every message read", Duration::from_secs(60), || {
        (consumer.metric("velostream_consumer_rows_consumed_total")? == 50_000.0).then_some(())
    });
    assert_eq!(
        count_final(&ch, table),
        0,
        "nothing is inserted before the flush"
    );
    assert!(committed(&kafka, "test-group", topic, partitions).is_empty());
    wait_for("the lag to count them", Duration::from_secs(30), || {
        (consumer.metric("velostream_consumer_lag")? == 50_000.0).then_some(())
    });

    let (code, stdout) = consumer.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert_eq!(count_final(&ch, table), 50_000);
    assert_eq!(committed(&kafka, "test-group", topic, partitions), produced);
    let out = summary(&stdout);
    assert_eq!(out["rows_inserted"], 50_000);
    assert_eq!(out["batches"], 1);
    // The run page's lag series ends with what the consumer left behind: nothing.
    let lag: Vec<i64> = stdout
        .iter()
        .filter_map(|l| match parse_line(l) {
            Line::Messages(m) => Some(m),
            _ => None,
        })
        .flatten()
        .filter_map(|m| match m {
            Message::Point(p) if p.series == "lag" => Some(p.value),
            _ => None,
        })
        .collect();
    assert_eq!(lag.last(), Some(&0), "{lag:?}");
}

/// With ClickHouse gone, the flush cannot finish: the consumer gives up at the end of the grace
/// period, exits non-zero and commits nothing, so a restart reads the rows again.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_clickhouse_down_exits_nonzero_without_committing() {
    let kafka = Kafka::start();
    let mut ch = ClickHouse::start();
    let (topic, table) = ("taxi-term-down", "trips_term_down");
    create_topic(&kafka, topic, 1).await;
    let mut args = ConsumerArgs::new(&kafka, &ch, topic, table);
    args.batch_rows = 1_000_000;
    args.batch_ms = 600_000;
    args.extra = vec!["--shutdown-grace".into(), "3s".into()];
    let mut consumer = ConsumerProcess::start(&args);
    consumer.wait_ready();
    produce(&kafka, topic, 1, sample_rows(5_000)).await;
    wait_for("every message read", Duration::from_secs(60), || {
        (consumer.metric("velostream_consumer_rows_consumed_total")? == 5_000.0).then_some(())
    });
    ch.kill();
    let (code, stdout) = consumer.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(1));
    // No summary claims rows that are not in ClickHouse (series points may come before).
    assert!(
        stdout
            .iter()
            .all(|l| !l.starts_with("::velostream:: {\"output\"")),
        "{stdout:?}"
    );
    assert!(committed(&kafka, "test-group", topic, 1).is_empty());
    ch.restart();
    assert_eq!(count_final(&ch, table), 0);
}
