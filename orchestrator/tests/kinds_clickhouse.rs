//! The ClickHouse task kinds against a real server: statements inline and from a file with bound
//! identifiers, results as outputs, settings the server does not know, bad SQL, a server that is
//! down, the server-side time limit, cancellation killing the query, and assertions (also over a
//! two-shard cluster's `Distributed` table).

mod kinds_common;

use std::time::Duration;

use kinds_common::{connections, context};
use orchestrator::operators::{Operator, OperatorError, TaskContext, TaskKind};
use serde_json::json;
use velostream_testkit::{CLUSTER_NAME, ClickHouse, ClickHouseCluster, Lane};

fn kind(json: serde_json::Value) -> TaskKind {
    serde_json::from_value(json).expect("a valid task kind")
}

fn ctx_for(ch: &ClickHouse) -> TaskContext {
    context("sql", connections("127.0.0.1:1", &ch.http_url))
}

fn failure(err: OperatorError) -> String {
    match err {
        OperatorError::Failed(message) => message,
        other => panic!("expected a failure message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_run_in_order_and_the_last_result_becomes_outputs() {
    let ch = ClickHouse::start();
    let ctx = ctx_for(&ch);
    kind(json!({"clickhouse.sql": {
        "sql": "CREATE TABLE trips (id UInt64, zone LowCardinality(String), fare Float64) ENGINE = MergeTree ORDER BY id;\n\
                -- a comment; with a semicolon\n\
                INSERT INTO trips VALUES (1, 'JFK', 52.5), (2, 'Midtown; East', 9.25), (18446744073709551615, 'it''s', 0);\n\
                SELECT zone, count() AS n, max(id) AS top FROM trips GROUP BY zone ORDER BY zone;",
    }}))
    .execute(&ctx)
    .await
    .unwrap();
    let out = ctx.outputs();
    assert_eq!(out["statements"], 3);
    assert_eq!(out["row_count"], 3);
    assert_eq!(out["columns"], json!(["zone", "n", "top"]));
    assert_eq!(out["rows"][0], json!({"zone": "JFK", "n": 1, "top": 1}));
    assert_eq!(
        out["rows"][2]["top"],
        json!(u64::MAX),
        "64-bit integers come back as numbers"
    );
    assert!(out.get("value").is_none());
    let log = ctx.memory_log().join("\n");
    assert!(
        log.contains("Connected to ClickHouse 18.16") || log.contains("Connected to ClickHouse"),
        "{log}"
    );
    assert!(log.contains("Statement 2/3 (sql line 2)"), "{log}");

    let ctx = ctx_for(&ch);
    kind(json!({"clickhouse.sql": {"sql": "SELECT count() FROM trips"}}))
        .execute(&ctx)
        .await
        .unwrap();
    assert_eq!(ctx.outputs()["value"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_file_with_bound_identifiers_runs_relative_to_the_dag() {
    let ch = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sql")).unwrap();
    std::fs::write(
        dir.path().join("sql/setup.sql"),
        "CREATE DATABASE IF NOT EXISTS {db:Identifier};\n\
         CREATE TABLE IF NOT EXISTS {db:Identifier}.{table:Identifier} (day String, n UInt32)\n\
             ENGINE = MergeTree ORDER BY day;\n\
         INSERT INTO {db:Identifier}.{table:Identifier} VALUES ({day:String}, {n:UInt32});\n\
         SELECT n FROM {qualified:Identifier} WHERE day = {day:String};\n",
    )
    .unwrap();
    let ctx = TaskContext::builder("kinds", "run-1", "setup")
        .connections(connections("127.0.0.1:1", &ch.http_url))
        .dag_dir(dir.path())
        .build();
    let task = kind(json!({"clickhouse.sql": {
        "file": "sql/setup.sql",
        "bind": {"db": "pipeline", "table": "daily", "qualified": "pipeline.daily", "day": "2023-01-01'); DROP TABLE x; --", "n": 7},
    }}));
    task.execute(&ctx).await.unwrap();
    assert_eq!(ctx.outputs()["value"], 7);
    assert_eq!(
        ch.query("SELECT day FROM pipeline.daily").trim(),
        "2023-01-01\\'); DROP TABLE x; --"
    );

    // An identifier that is not a plain name never reaches the server.
    let ctx = TaskContext::builder("kinds", "run-1", "setup")
        .connections(connections("127.0.0.1:1", &ch.http_url))
        .dag_dir(dir.path())
        .build();
    let err = kind(json!({"clickhouse.sql": {
        "file": "sql/setup.sql",
        "bind": {"db": "pipeline; DROP DATABASE system", "table": "daily", "qualified": "x", "day": "d", "n": 1},
    }}))
    .execute(&ctx)
    .await
    .unwrap_err();
    let message = failure(err);
    assert!(
        message.contains("sql/setup.sql: line 1: {db:Identifier} cannot take"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sql_names_the_statement_and_shows_the_server_message() {
    let ch = ClickHouse::start();
    let ctx = ctx_for(&ch);
    let err = kind(json!({"clickhouse.sql": {
        "sql": "SELECT 1;\n\nSELEKT oops FROM nowhere;\nSELECT 3",
    }}))
    .execute(&ctx)
    .await
    .unwrap_err();
    let message = failure(err);
    let version = match ch.lane {
        Lane::Modern => "26.9",
        Lane::Legacy => "18.16",
    };
    assert!(
        message.starts_with(&format!(
            "statement 2/3 (sql line 3) failed: ClickHouse {version}"
        )),
        "{message}"
    );
    assert!(message.contains("Syntax error"), "{message}");
    assert!(!ctx.memory_log().iter().any(|l| l.contains("Statement 3/3")));

    let err = kind(json!({"clickhouse.sql": {"sql": "SELECT * FROM missing_table"}}))
        .execute(&ctx_for(&ch))
        .await
        .unwrap_err();
    let message = failure(err);
    assert!(
        message.contains("missing_table")
            && (message.contains("doesn't exist") || message.contains("UNKNOWN_TABLE")),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_named() {
    let mut ch = ClickHouse::start();
    ch.kill();
    let err = kind(json!({"clickhouse.sql": {"sql": "SELECT 1"}}))
        .execute(&ctx_for(&ch))
        .await
        .unwrap_err();
    let message = failure(err);
    assert!(message.contains(&ch.http_url), "{message}");
    assert!(message.contains("is the server running"), "{message}");

    let err = kind(json!({"clickhouse.assert": {"query": "SELECT 1", "expected": 1}}))
        .execute(&ctx_for(&ch))
        .await
        .unwrap_err();
    assert!(failure(err).contains(&ch.http_url));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_settings_the_server_knows_are_sent() {
    let ch = ClickHouse::start();
    let ctx = ctx_for(&ch);
    kind(json!({"clickhouse.sql": {
        "sql": "SELECT value FROM system.settings WHERE name = 'max_threads'",
        "settings": {"max_threads": 3, "a_setting_from_the_future": 1},
    }}))
    .execute(&ctx)
    .await
    .unwrap();
    assert_eq!(ctx.outputs()["value"], "3");
    let log = ctx.memory_log().join("\n");
    assert!(
        log.contains("Not sending setting(s) a_setting_from_the_future"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_execution_time_stops_a_long_query_on_the_server() {
    let ch = ClickHouse::start();
    let err = kind(json!({"clickhouse.sql": {
        "sql": "SELECT count() FROM (SELECT number FROM system.numbers LIMIT 100000000000)",
        "max_execution_time": "1s",
    }}))
    .execute(&ctx_for(&ch))
    .await
    .unwrap_err();
    let message = failure(err);
    assert!(message.contains("Timeout exceeded"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_task_kills_the_query_on_the_server() {
    let ch = ClickHouse::start();
    let ctx = ctx_for(&ch);
    let task = kind(json!({"clickhouse.sql": {
        "sql": "SELECT count() FROM (SELECT number FROM system.numbers LIMIT 100000000000)",
        "max_execution_time": "10m",
    }}));
    let running = "SELECT count() FROM system.processes WHERE query_id LIKE 'velostream-%' AND query LIKE '%system.numbers%'";
    let watcher = async {
        while ch.query_u64(running) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ctx.cancel_token().cancel();
    };
    let (result, ()) = tokio::join!(task.execute(&ctx), watcher);
    assert!(
        matches!(result, Err(OperatorError::Cancelled)),
        "{result:?}"
    );
    // KILL QUERY ... ASYNC: the server stops it shortly after.
    let mut left = ch.query_u64(running);
    for _ in 0..200 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = ch.query_u64(running);
    }
    assert_eq!(left, 0, "the query still runs on the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertions_compare_with_an_expected_value_and_show_the_difference() {
    let ch = ClickHouse::start();
    ch.query("CREATE TABLE t (n UInt64) ENGINE = Memory");
    ch.query("INSERT INTO t SELECT number FROM system.numbers LIMIT 99998");

    let ctx = ctx_for(&ch);
    let err = kind(json!({"clickhouse.assert": {
        "query": "SELECT count() FROM {table:Identifier}",
        "bind": {"table": "t"},
        "expected": "100000",
    }}))
    .execute(&ctx)
    .await
    .unwrap_err();
    let message = failure(err);
    assert_eq!(
        message,
        "assertion failed: `SELECT count() FROM `t`` returned 99998, expected == 100000 (difference -2)"
    );
    assert_eq!(ctx.outputs()["difference"], -2);

    let ctx = ctx_for(&ch);
    kind(json!({"clickhouse.assert": {
        "query": "SELECT count() FROM t", "expected": 100000, "tolerance": 5,
    }}))
    .execute(&ctx)
    .await
    .unwrap();
    assert_eq!(ctx.outputs()["actual"], 99998);

    kind(json!({"clickhouse.assert": {"query": "SELECT max(n) FROM t", "expected": 1000, "compare": "gt"}}))
        .execute(&ctx_for(&ch))
        .await
        .unwrap();
    kind(json!({"clickhouse.assert": {"query": "SELECT 'ok'", "expected": "ok"}}))
        .execute(&ctx_for(&ch))
        .await
        .unwrap();
    let err = kind(
        json!({"clickhouse.assert": {"query": "SELECT n FROM t WHERE n > 1e9", "expected": 1}}),
    )
    .execute(&ctx_for(&ch))
    .await
    .unwrap_err();
    assert!(failure(err).contains("returned no rows"));
    let err = kind(json!({"clickhouse.assert": {"query": "SELECT nope FROM t", "expected": 1}}))
        .execute(&ctx_for(&ch))
        .await
        .unwrap_err();
    assert!(failure(err).contains("the assertion's query failed"));
}

/// `clickhouse.assert` counts over a sharded ClickHouse by querying the `Distributed` table (on
/// any shard): `FINAL` runs on each shard, which is exact when every copy of a row is on one shard,
/// as the sharded consumer writes them. Duplicates on each shard, and the local table alone is
/// only part of the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertions_over_a_distributed_table_count_the_whole_cluster() {
    let cluster = ClickHouseCluster::start(2);
    for shard in &cluster.shards {
        kind(json!({"clickhouse.sql": {"sql": format!(
            "CREATE TABLE trips (_partition Int32, _offset Int64) ENGINE = ReplacingMergeTree() \
             ORDER BY (_partition, _offset);\n\
             CREATE TABLE trips_all AS trips ENGINE = Distributed({CLUSTER_NAME}, currentDatabase(), trips, _partition)"
        )}}))
        .execute(&ctx_for(shard))
        .await
        .unwrap();
    }
    // Partitions 0 and 2 on shard 1, 1 on shard 2; every row of partition 0 and 1 written twice.
    let (one, two) = (&cluster.shards[0], &cluster.shards[1]);
    for _ in 0..2 {
        one.query("INSERT INTO trips SELECT 0, number FROM numbers(1000)");
        two.query("INSERT INTO trips SELECT 1, number FROM numbers(700)");
    }
    one.query("INSERT INTO trips SELECT 2, number FROM numbers(300)");
    for shard in &cluster.shards {
        let ctx = ctx_for(shard);
        kind(json!({"clickhouse.assert": {
            "query": "SELECT count() FROM {table:Identifier} FINAL",
            "bind": {"table": "trips_all"},
            "expected": 2000,
        }}))
        .execute(&ctx)
        .await
        .unwrap();
        assert_eq!(ctx.outputs()["actual"], 2000);
    }
    let err = kind(json!({"clickhouse.assert": {
        "query": "SELECT count() FROM trips FINAL", "expected": 2000,
    }}))
    .execute(&ctx_for(two))
    .await
    .unwrap_err();
    assert!(failure(err).contains("returned 700, expected == 2000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_times_out_instead_of_hanging() {
    let ch = ClickHouse::start();
    ch.pause();
    let err = kind(json!({"clickhouse.sql": {"sql": "SELECT 1", "connect_timeout": "1s"}}))
        .execute(&ctx_for(&ch))
        .await
        .unwrap_err();
    ch.resume();
    let message = failure(err);
    assert!(message.contains("did not answer within 1s"), "{message}");
    assert!(message.contains(&ch.http_url), "{message}");
}
