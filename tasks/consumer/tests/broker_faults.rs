//! Broker faults against real processes (ARCHITECTURE.md, "Exactly once", the broker rows):
//! a durable broker SIGKILLed and restarted while the consumer is part-way through a topic loses
//! nothing and duplicates nothing (and takes new messages after the restart); a
//! topic recreated under the same name stops the consumer with an error that says what to do, and
//! `--on-topic-reset=start-over` loads it as a new incarnation whose rows cannot collide with the
//! old ones; a topic that vanishes under a running consumer (a memory broker restarted) makes it
//! exit non-zero, saying so once.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use velostream_testkit::{ClickHouse, Kafka, Storage};

/// Lines of a consumer log about the broker being unreachable (librdkafka's and ours).
fn outage_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("AllBrokersDown")
                || l.contains("Connection refused")
                || l.contains("Kafka client error")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_durable_broker_killed_and_restarted_mid_pipeline_loses_nothing_and_duplicates_nothing() {
    const FIRST: usize = 60_000;
    const AFTER: usize = 10_000;
    let mut kafka = Kafka::start_with(Storage::Durable);
    let ch = ClickHouse::start();
    let (topic, table, partitions) = ("taxi-durable", "trips_durable", 2);
    create_topic(&kafka, topic, partitions).await;
    produce(&kafka, topic, partitions, sample_rows(FIRST)).await;
    // Small batches, so the kill lands while the consumer is part-way through the topic.
    let mut args = ConsumerArgs::new(&kafka, &ch, topic, table);
    args.batch_rows = 2_000;
    args.batch_ms = 50;
    let mut consumer = ConsumerProcess::start(&args);
    consumer.wait_ready();
    let at_kill = wait_for(
        "the consumer part-way through the topic",
        Duration::from_secs(60),
        || {
            let n = count_final(&ch, table);
            (n >= 4_000).then_some(n)
        },
    );
    kafka.kill();
    assert!(
        at_kill < FIRST as u64,
        "the consumer finished before the kill; make batches smaller"
    );
    // While the broker is down the lag is unknown: -1, never 0, and no per-partition series.
    wait_for(
        "the consumer to report its lag as unknown",
        Duration::from_secs(30),
        || (consumer.metric("velostream_consumer_lag ") == Some(-1.0)).then_some(()),
    );
    let (_, metrics) = consumer.get("/metrics").unwrap();
    assert!(
        !metrics.contains("velostream_consumer_partition_lag{"),
        "a partition's lag was reported while the broker was down:\n{metrics}"
    );
    let (status, health) = consumer.get("/health").unwrap();
    assert!(
        status == 200 && health.contains("\"broker_reachable\":false"),
        "{status} {health}"
    );
    // Down a while longer, so librdkafka retries many times (every 50-100 ms): said once.
    let down = std::time::Instant::now();
    wait_for("three seconds of outage", Duration::from_secs(10), || {
        (down.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    kafka.restart();
    // The broker kept every acknowledged message, and takes new ones.
    let high = high_watermarks(&kafka, topic, partitions);
    assert_eq!(high.values().sum::<i64>(), FIRST as i64, "{high:?}");
    produce(&kafka, topic, partitions, sample_rows(AFTER)).await;
    let rows = (FIRST + AFTER) as u64;
    wait_for(
        "every row after the broker restart",
        Duration::from_secs(120),
        || (count_final(&ch, table) >= rows).then_some(()),
    );
    let high = high_watermarks(&kafka, topic, partitions);
    assert_eq!(high.values().sum::<i64>(), rows as i64, "{high:?}");
    wait_for("the lag known again", Duration::from_secs(30), || {
        (consumer.metric("velostream_consumer_lag ") == Some(0.0)).then_some(())
    });
    let (_, health) = consumer.get("/health").unwrap();
    assert!(health.contains("\"broker_reachable\":true"), "{health}");
    let log = consumer.log_text();
    let (code, _) = consumer.terminate(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");
    // Nothing lost, nothing twice, and the offset records say so too.
    assert_eq!(count_final(&ch, table), rows);
    assert_eq!(distinct_rows(&ch, table), rows);
    let want: BTreeMap<(String, i32), i64> = high
        .iter()
        .map(|(&p, &h)| ((topic.to_string(), p), h))
        .collect();
    assert_eq!(offset_records(&ch, table), want);
    let said = outage_lines(&log);
    assert!(
        (1..=6).contains(&said),
        "the outage was said {said} times, not once per kind:\n{log}"
    );
    assert!(log.contains("Kafka broker reachable again"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_topic_stops_the_consumer_and_start_over_loads_it_as_a_new_incarnation() {
    let kafka = Kafka::start();
    let ch = ClickHouse::start();
    let (topic, table, partitions) = ("taxi-again", "trips_again", 2);
    create_topic(&kafka, topic, partitions).await;
    produce(&kafka, topic, partitions, sample_rows(6_000)).await;
    let args = ConsumerArgs::new(&kafka, &ch, topic, table);
    let mut consumer = ConsumerProcess::start(&args);
    consumer.wait_ready();
    wait_for("the old topic's rows", Duration::from_secs(60), || {
        (count_final(&ch, table) == 6_000).then_some(())
    });
    assert_eq!(consumer.terminate(Duration::from_secs(30)).0, Some(0));

    // The topic is deleted and created again, with fewer messages than were read from the old one.
    delete_topic(&kafka, topic).await;
    create_topic(&kafka, topic, partitions).await;
    produce(&kafka, topic, partitions, sample_rows(2_000)).await;

    // By default: nothing read, exit 1, and an error naming the topic, partitions, offsets and
    // what to do.
    let consumer = ConsumerProcess::start(&args);
    let log_path = consumer.log.clone();
    let (status, _) = consumer.wait_exit(Duration::from_secs(60));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    for needle in [
        "\"taxi-again\"",
        "partition 0: ClickHouse has rows up to offset 3000 but the partition ends at 1000",
        "partition 1: ClickHouse has rows up to offset 3000 but the partition ends at 1000",
        "--on-topic-reset=start-over",
        "taxi-again#2",
    ] {
        assert!(log.contains(needle), "{needle:?} not in the error:\n{log}");
    }
    assert_eq!(count_final(&ch, table), 6_000);

    // start-over: the new topic from its start, as incarnation 2.
    let mut again = ConsumerArgs::new(&kafka, &ch, topic, table);
    again.extra = vec!["--on-topic-reset".into(), "start-over".into()];
    let mut consumer = ConsumerProcess::start(&again);
    consumer.wait_ready();
    wait_for("the new topic's rows", Duration::from_secs(60), || {
        (count_final(&ch, table) == 8_000).then_some(())
    });
    // Past the old incarnation's offsets: identities (_topic, _partition, _offset) that would
    // equal old rows' if they were stored under the topic's own name.
    produce(&kafka, topic, partitions, sample_rows(6_000)).await;
    wait_for(
        "the new topic's later rows",
        Duration::from_secs(60),
        || (count_final(&ch, table) == 14_000).then_some(()),
    );
    assert_eq!(consumer.terminate(Duration::from_secs(30)).0, Some(0));
    // A restart without the option continues incarnation 2: nothing read twice, nothing lost.
    let mut consumer = ConsumerProcess::start(&args);
    consumer.wait_ready();
    produce(&kafka, topic, partitions, sample_rows(1_000)).await;
    wait_for(
        "rows produced after the restart",
        Duration::from_secs(60),
        || (count_final(&ch, table) == 15_000).then_some(()),
    );
    assert_eq!(consumer.terminate(Duration::from_secs(30)).0, Some(0));
    assert_eq!(count_final(&ch, table), 15_000);
    assert_eq!(distinct_rows(&ch, table), 15_000);
    let by_topic = ch.query(&format!(
        "SELECT _topic, count() FROM {table} FINAL GROUP BY _topic ORDER BY _topic"
    ));
    assert_eq!(by_topic, "taxi-again\t6000\ntaxi-again#2\t9000\n");
    let records = offset_records(&ch, table);
    let want: BTreeMap<(String, i32), i64> = [
        (("taxi-again".to_string(), 0), 3_000),
        (("taxi-again".to_string(), 1), 3_000),
        (("taxi-again#2".to_string(), 0), 4_500),
        (("taxi-again#2".to_string(), 1), 4_500),
    ]
    .into();
    assert_eq!(records, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_that_vanishes_under_a_running_consumer_makes_it_exit_non_zero_saying_so_once() {
    let mut kafka = Kafka::start_with(Storage::Memory);
    let ch = ClickHouse::start();
    let (topic, table, partitions) = ("taxi-gone", "trips_gone", 2);
    create_topic(&kafka, topic, partitions).await;
    produce(&kafka, topic, partitions, sample_rows(4_000)).await;
    let mut consumer = ConsumerProcess::start(&ConsumerArgs::new(&kafka, &ch, topic, table));
    consumer.wait_ready();
    wait_for("the rows", Duration::from_secs(60), || {
        (count_final(&ch, table) == 4_000).then_some(())
    });
    // The memory broker restarts: every topic, message and group is gone.
    kafka.restart();
    let log_path = consumer.log.clone();
    let (status, _) = consumer.wait_exit(Duration::from_secs(45));
    let log = std::fs::read_to_string(&log_path).unwrap();
    // Nothing the consumer acknowledged is lost, whichever way it ends.
    assert_eq!(count_final(&ch, table), 4_000);
    // librdkafka 2.12.1 sometimes crashes (SIGSEGV on its own thread, in its metadata cache) when
    // a topic it knows disappears from the local broker (ARCHITECTURE.md, the broker's quirks):
    // the process still ends non-zero, but cannot say why. Everything else must say it, once.
    use std::os::unix::process::ExitStatusExt;
    if status.signal() == Some(nix::sys::signal::Signal::SIGSEGV as i32) {
        eprintln!("the consumer died in librdkafka (SIGSEGV) before it could say why:\n{log}");
        return;
    }
    assert_eq!(status.code(), Some(1), "{status:?}\n{log}");
    assert!(
        log.contains("disappeared from the broker") || log.contains("went backwards"),
        "the error does not say the topic's data vanished:\n{log}"
    );
    assert!(log.contains("taxi-gone"), "{log}");
    // Once by the ingest loop when it notices, once more as the exit error (log and stderr).
    let said = log
        .lines()
        .filter(|l| l.contains("disappeared from the broker") || l.contains("went backwards"))
        .count();
    assert!(
        (1..=3).contains(&said),
        "the fault was said {said} times:\n{log}"
    );
    assert_eq!(count_final(&ch, table), 4_000);
}
