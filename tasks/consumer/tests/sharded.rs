//! Exactly once on a sharded ClickHouse: two servers of the selected lane as the two shards of one
//! cluster, a `Distributed` table over their shard-local tables
//! (`infrastructure/clickhouse/taxi_trips_distributed.sql`), the consumer given both shards
//! (`--clickhouse-shards`) and killed with SIGKILL several times mid-stream and restarted, the
//! rest drained by two consumers in one group. In the end `count() FINAL` over the `Distributed`
//! table is exactly the rows produced, each shard holds exactly the partitions mapped to it
//! (`partition % 2`) with their offset records at the partitions' ends, and a consumer given the
//! shards in another order, or one server alone, refuses to start. Runs on both lanes (26.9 and
//! 18.16 both serve as shards).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use velostream_testkit::{ClickHouse, ClickHouseCluster, Kafka, repo_root};

const ROWS: usize = 200_000;
const PARTITIONS: i32 = 4;
const SHARDS: usize = 2;

/// `SELECT uniqExact(...)` of a shard's local table; 0 while the consumer has not created it.
fn shard_rows(shard: &ClickHouse, table: &str) -> u64 {
    shard
        .try_query(&format!(
            "SELECT uniqExact(_topic, _partition, _offset) FROM {table}"
        ))
        .ok()
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or(0)
}

/// The rows of the whole cluster: the sum over the shards' local tables.
fn cluster_rows(cluster: &ClickHouseCluster, table: &str) -> u64 {
    cluster.shards.iter().map(|s| shard_rows(s, table)).sum()
}

/// `taxi_trips_distributed.sql` for `table`, its `Distributed` table named `all`.
fn distributed_ddl(table: &str, all: &str) -> String {
    let ddl = std::fs::read_to_string(
        repo_root().join("infrastructure/clickhouse/taxi_trips_distributed.sql"),
    )
    .unwrap();
    ddl.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("taxi_trips_all", all)
        .replace("taxi_trips", table)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_on_two_shards_leaves_exactly_the_produced_rows_on_the_right_shards() {
    let kafka = Kafka::start();
    let cluster = ClickHouseCluster::start(SHARDS);
    let (topic, table, all) = ("taxi-sharded", "trips_sharded", "trips_sharded_all");
    create_topic(&kafka, topic, PARTITIONS).await;
    let produced = produce(&kafka, topic, PARTITIONS, sample_rows(ROWS)).await;

    let mut args = ConsumerArgs::new(&kafka, &cluster.shards[0], topic, table);
    args.batch_rows = 4_000;
    args.batch_ms = 50;
    args.extra = vec!["--clickhouse-shards".into(), cluster.urls()];
    let mut kills = 0;
    let mut seen_mid_stream = Vec::new();
    let mut last = 0;
    while kills < 5 {
        let mut consumer = ConsumerProcess::start(&args);
        consumer.wait_ready();
        let target = last + 15_000;
        let now = wait_for("progress before the kill", Duration::from_secs(120), || {
            let n = cluster_rows(&cluster, table);
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
        last = cluster_rows(&cluster, table);
    }
    assert!(
        kills >= 3,
        "the consumer finished before it could be killed 3 times (at {seen_mid_stream:?}); make batches smaller"
    );

    // The Distributed table over the shard-local tables the consumer created, on both servers.
    for shard in &cluster.shards {
        shard.query(&distributed_ddl(table, all));
    }
    // Two members drain the rest: the group splits the partitions between them (a rebalance,
    // each member reading each of its partitions' records from the partition's shard).
    let mut first = ConsumerProcess::start(&args);
    first.wait_ready();
    let mut second = ConsumerProcess::start(&args);
    second.wait_ready();
    wait_for(
        "every row after the restarts",
        Duration::from_secs(180),
        || (count_final(&cluster.shards[0], all) >= ROWS as u64).then_some(()),
    );
    for consumer in [first, second] {
        let (code, _) = consumer.terminate(Duration::from_secs(30));
        assert_eq!(code, Some(0));
    }

    // Over the cluster, asked of either server.
    for shard in &cluster.shards {
        assert_eq!(
            count_final(shard, all),
            ROWS as u64,
            "count() FINAL over the Distributed table after {kills} kills"
        );
        assert_eq!(distinct_rows(shard, all), ROWS as u64);
    }
    // Each shard: exactly its partitions, each whole (offsets 0..n), and their offset records at
    // the partitions' ends.
    let ends = high_watermarks(&kafka, topic, PARTITIONS);
    assert_eq!(ends, produced);
    let mut report = Vec::new();
    for (i, shard) in cluster.shards.iter().enumerate() {
        let mine: BTreeMap<i32, i64> = produced
            .iter()
            .filter(|(p, _)| **p as usize % SHARDS == i)
            .map(|(p, n)| (*p, *n))
            .collect();
        let per_partition = shard.query(&format!(
            "SELECT _partition, count(), min(_offset), max(_offset) FROM {table} FINAL \
             GROUP BY _partition ORDER BY _partition"
        ));
        let expected: String = mine
            .iter()
            .map(|(p, n)| format!("{p}\t{n}\t0\t{}\n", n - 1))
            .collect();
        assert_eq!(
            per_partition,
            expected,
            "shard {} holds its partitions",
            i + 1
        );
        let records: BTreeMap<i32, i64> = offset_records(shard, table)
            .into_iter()
            .map(|((t, p), n)| {
                assert_eq!(t, topic);
                (p, n)
            })
            .collect();
        assert_eq!(records, mine, "shard {}'s offset records", i + 1);
        let final_count = count_final(shard, table);
        let raw = shard.query_u64(&format!("SELECT count() FROM {table}"));
        assert_eq!(final_count, mine.values().sum::<i64>() as u64);
        report.push(format!(
            "shard {} ({}): partitions {:?}, count() FINAL {final_count}, raw {raw}, offset records {records:?}",
            i + 1,
            shard.lane,
            mine.keys().collect::<Vec<_>>()
        ));
    }
    eprintln!(
        "{kills} kills at {seen_mid_stream:?} rows; count() FINAL over {all}: {}; distinct identities: {}\n{}",
        count_final(&cluster.shards[0], all),
        distinct_rows(&cluster.shards[0], all),
        report.join("\n")
    );
    assert_eq!(
        committed(&kafka, "test-group", topic, PARTITIONS),
        produced,
        "the group's commits reach the end after the clean stop"
    );

    // A shard list that would move partitions is refused before anything is read: the shards in
    // the other order, and the first server alone.
    let reversed: Vec<&str> = cluster
        .shards
        .iter()
        .rev()
        .map(|s| s.http_url.as_str())
        .collect();
    let mut swapped = ConsumerArgs::new(&kafka, &cluster.shards[0], topic, table);
    swapped.extra = vec!["--clickhouse-shards".into(), reversed.join(",")];
    let alone = ConsumerArgs::new(&kafka, &cluster.shards[0], topic, table);
    for (what, args, needle) in [
        (
            "reversed",
            &swapped,
            "has offset records of partitions [0, 2]",
        ),
        ("one server", &alone, "was written as shard 1 of 2"),
    ] {
        let consumer = ConsumerProcess::start(args);
        let log_path = consumer.log.clone();
        let (status, _) = consumer.wait_exit(Duration::from_secs(60));
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(status.code(), Some(1), "{what}: {log}");
        for needle in [needle, "do not fit the shard list given", "the same order"] {
            assert!(log.contains(needle), "{what}: {needle:?} not in:\n{log}");
        }
        eprintln!("{what}: refused");
    }
    assert_eq!(count_final(&cluster.shards[1], all), ROWS as u64);
}
