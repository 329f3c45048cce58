//! Two consumers in one group: a second member joining moves partitions away from the first, and
//! the first leaving (SIGTERM) moves them back. Rows flushed on revoke and read again by the new
//! owner must not be lost or counted twice.

mod common;

use std::time::Duration;

use common::*;
use velostream_testkit::{ClickHouse, Kafka};

const ROWS: usize = 300_000;

#[tokio::test(flavor = "multi_thread")]
async fn partitions_moving_between_two_consumers_leave_exactly_the_produced_rows() {
    let kafka = Kafka::start();
    let ch = ClickHouse::start();
    let (topic, table, partitions) = ("taxi-rebalance", "trips_rebalance", 6);
    create_topic(&kafka, topic, partitions).await;
    let produced = produce(&kafka, topic, partitions, sample_rows(ROWS)).await;

    let mut args = ConsumerArgs::new(&kafka, &ch, topic, table);
    args.batch_rows = 5_000;
    args.batch_ms = 50;
    let mut a = ConsumerProcess::start(&args);
    a.wait_ready();
    wait_for("A to make progress", Duration::from_secs(60), || {
        (distinct_rows(&ch, table) >= 30_000).then_some(())
    });

    // B joins: the group rebalances and A gives up some partitions mid-stream.
    let mut b = ConsumerProcess::start(&args);
    b.wait_ready();
    let assigned = |c: &ConsumerProcess| c.metric("velostream_consumer_assigned_partitions");
    wait_for(
        "both members to own partitions",
        Duration::from_secs(60),
        || {
            let (pa, pb) = (assigned(&a)?, assigned(&b)?);
            (pa > 0.0 && pb > 0.0 && pa + pb == f64::from(partitions)).then_some(())
        },
    );
    let before_a_leaves = distinct_rows(&ch, table);
    assert!(
        before_a_leaves < ROWS as u64,
        "everything was inserted before the rebalance; the test needs more rows"
    );

    // A leaves cleanly: its partitions move to B.
    let (code, stdout) = a.terminate(Duration::from_secs(60));
    assert_eq!(code, Some(0));
    let a_rows = summary(&stdout)["rows_inserted"].as_u64().unwrap();
    wait_for("B to own every partition", Duration::from_secs(60), || {
        (assigned(&b)? == f64::from(partitions)).then_some(())
    });
    wait_for("every row", Duration::from_secs(180), || {
        (count_final(&ch, table) >= ROWS as u64).then_some(())
    });
    let (code, stdout) = b.terminate(Duration::from_secs(60));
    assert_eq!(code, Some(0));
    let b_rows = summary(&stdout)["rows_inserted"].as_u64().unwrap();

    assert!(a_rows > 0 && b_rows > 0, "A inserted {a_rows}, B {b_rows}");
    assert_eq!(count_final(&ch, table), ROWS as u64);
    assert_eq!(distinct_rows(&ch, table), ROWS as u64);
    for (p, n) in &produced {
        let row = ch.query(&format!(
            "SELECT count(), min(_offset), max(_offset) FROM {table} FINAL WHERE _partition = {p}"
        ));
        assert_eq!(row.trim(), format!("{n}\t0\t{}", n - 1), "partition {p}");
    }
    eprintln!(
        "A inserted {a_rows}, B {b_rows} (sum {} for {ROWS} rows; the excess was read twice around the rebalances)",
        a_rows + b_rows
    );
    assert_eq!(committed(&kafka, "test-group", topic, partitions), produced);
}
