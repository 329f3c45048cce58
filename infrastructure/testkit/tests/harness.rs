//! The harness against the real servers: ClickHouse of the lane `VELOSTREAM_CLICKHOUSE` selects
//! (`make test` runs this on both lanes), restarts with its data, and the list of test binaries the
//! legacy lane runs again covers every test that starts ClickHouse.

use std::path::Path;

use velostream_testkit::{
    CLUSTER_NAME, ClickHouse, ClickHouseCluster, Kafka, Lane, Postgres, repo_root,
};

#[test]
fn clickhouse_of_the_selected_lane_keeps_its_data_across_a_clean_stop_and_a_kill() {
    let lane = Lane::from_env();
    let mut ch = ClickHouse::start();
    assert_eq!(ch.lane, lane);
    let version = ch.version();
    let expected = match lane {
        Lane::Modern => "26.",
        Lane::Legacy => "18.",
    };
    assert!(
        version.starts_with(expected),
        "{lane} lane runs ClickHouse {version}"
    );
    eprintln!("ClickHouse lane {lane}: {version}");

    ch.query("CREATE TABLE t (id UInt64) ENGINE = MergeTree ORDER BY id");
    ch.query("INSERT INTO t SELECT number FROM numbers(1000)");
    let pid = ch.pid().unwrap();
    ch.terminate(); // SIGTERM: a clean stop
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the server outlived SIGTERM"
    );
    ch.restart();
    assert_eq!(ch.query_u64("SELECT count() FROM t"), 1000);
    ch.query("INSERT INTO t SELECT number FROM numbers(1000, 500)");
    ch.kill(); // SIGKILL: a crash
    ch.restart();
    assert_eq!(ch.query_u64("SELECT count() FROM t"), 1500);
    // Both listeners are ours: the native port answers the native protocol's HTTP hint.
    assert!(std::net::TcpStream::connect(("127.0.0.1", ch.tcp_port)).is_ok());
}

/// Two shards of the selected lane form one cluster: a `Distributed` table on either reads both,
/// and `FINAL` through it collapses duplicates within each shard (one identity lives on one shard);
/// a row inserted through it reaches the shard its sharding key names.
#[test]
fn two_shards_form_a_cluster_a_distributed_table_reads_whole() {
    let lane = Lane::from_env();
    let mut cluster = ClickHouseCluster::start(2);
    for (i, shard) in cluster.shards.iter().enumerate() {
        assert_eq!(shard.lane, lane);
        let listed = shard.query(&format!(
            "SELECT shard_num, port FROM system.clusters WHERE cluster = '{CLUSTER_NAME}' ORDER BY shard_num"
        ));
        let expected: String = cluster
            .shards
            .iter()
            .enumerate()
            .map(|(n, s)| format!("{}\t{}\n", n + 1, s.tcp_port))
            .collect();
        assert_eq!(listed, expected, "shard {i} knows the cluster");
        shard.query("CREATE TABLE t (k UInt64, v String) ENGINE = ReplacingMergeTree ORDER BY k");
        shard.query(&format!(
            "CREATE TABLE t_all AS t ENGINE = Distributed({CLUSTER_NAME}, currentDatabase(), t, k)"
        ));
    }
    // Keys 0..1000 on shard 1, 1000..1500 on shard 2; 0..100 written twice (separate inserts).
    let (one, two) = (&cluster.shards[0], &cluster.shards[1]);
    one.query("INSERT INTO t SELECT number, 'a' FROM numbers(1000)");
    one.query("INSERT INTO t SELECT number, 'a' FROM numbers(100)");
    two.query("INSERT INTO t SELECT number, 'b' FROM numbers(1000, 500)");
    for shard in &cluster.shards {
        assert_eq!(shard.query_u64("SELECT count() FROM t_all FINAL"), 1500);
        assert_eq!(shard.query_u64("SELECT count() FROM t_all"), 1600);
    }
    // An insert through the Distributed table goes to shard `k % 2 + 1` (equal weights), later.
    one.query("INSERT INTO t_all SELECT number, 'd' FROM numbers(2000, 4)");
    for (shard, keys) in [(one, "2000,2002"), (two, "2001,2003")] {
        velostream_testkit::wait_for(
            "rows inserted through the Distributed table to reach their shard",
            std::time::Duration::from_secs(30),
            || {
                let got = shard.query("SELECT arrayStringConcat(groupArray(toString(k)), ',') FROM (SELECT k FROM t WHERE v = 'd' ORDER BY k)");
                (got.trim() == keys).then_some(())
            },
        );
    }
    // A shard killed and restarted keeps its place in the cluster.
    cluster.shards[1].kill();
    cluster.shards[1].restart();
    assert_eq!(
        cluster.shards[0].query_u64("SELECT count() FROM t_all FINAL"),
        1504
    );
}

#[test]
fn servers_started_at_once_each_get_their_own_ports() {
    let servers: Vec<Kafka> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(Kafka::start)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = servers.iter().map(|k| k.port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), servers.len());
}

/// The test binaries `make test` runs again on the legacy lane, from `.config/nextest.toml`.
fn legacy_lane_binaries() -> Vec<String> {
    let config = std::fs::read_to_string(repo_root().join(".config/nextest.toml")).unwrap();
    let (_, profile) = config
        .split_once("[profile.clickhouse-legacy]")
        .expect("the clickhouse-legacy profile in .config/nextest.toml");
    let filter = profile
        .lines()
        .skip_while(|l| !l.starts_with("default-filter"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<String>();
    filter
        .split("binary_id(")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(id, _)| id.to_string()))
        .collect()
}

#[test]
fn every_test_that_starts_clickhouse_runs_on_the_legacy_lane_too() {
    let root = repo_root();
    let listed = legacy_lane_binaries();
    assert!(!listed.is_empty());
    // (package, directory of its integration tests)
    let crates = [
        ("orchestrator", "orchestrator"),
        ("velostream-consumer", "tasks/consumer"),
        ("velostream-producer", "tasks/producer"),
        ("velostream-common", "tasks/common"),
        ("velostream-bench", "bench"),
        ("velostream-testkit", "infrastructure/testkit"),
    ];
    let mut missing = Vec::new();
    for (package, dir) in crates {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join("tests")) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let starts_clickhouse = [
                "ClickHouse::start",
                "ClickHouseCluster::start",
                "Infra::start",
                "velostream-bench\")",
            ]
            .iter()
            .any(|p| text.contains(p));
            let id = format!("{package}::{}", path.file_stem().unwrap().to_string_lossy());
            if starts_clickhouse && !listed.contains(&id) {
                missing.push(id);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "these test binaries start ClickHouse but the legacy lane would skip them: add \
         binary_id(...) for each to [profile.clickhouse-legacy] in .config/nextest.toml: {missing:?}"
    );
}

#[test]
fn postgres_starts_fresh_on_loopback_and_is_gone_when_dropped() {
    let pg = Postgres::start();
    let version = pg.psql("velostream", "SHOW server_version");
    assert!(version.trim().starts_with("15."), "PostgreSQL {version}");
    assert_eq!(
        pg.psql("velostream", "SHOW listen_addresses").trim(),
        "127.0.0.1"
    );
    // A fresh data dir: only the databases initdb and the harness made.
    let url = pg.fresh_database();
    assert!(url.ends_with("/fresh_1"), "{url}");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE NOT datistemplate"
        )
        .trim(),
        "fresh_1,postgres,velostream"
    );
    pg.psql(
        "fresh_1",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)",
    );
    assert_eq!(pg.psql("fresh_1", "SELECT count(*) FROM t").trim(), "2");
    let pid = pg.pid().unwrap();
    drop(pg);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the PostgreSQL server outlived its harness"
    );
}
