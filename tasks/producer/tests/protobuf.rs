//! The binary record format end to end, against real servers: the producer binary writes the real
//! 100k-row TLC sample once as JSON and once as protobuf (`--format protobuf`); the consumer
//! (in-process, `--format auto`) loads each topic into its own table; both tables hold the same
//! rows, value for value, at the same Kafka partitions and offsets. On the modern lane ClickHouse
//! itself reads the protobuf topic too (its Kafka engine, `ProtobufSingle` with
//! `proto/taxi_trip.proto`), into the same rows; on the legacy lane (18.16), which has no
//! Protobuf format, the test checks that the server refuses it, so the lane's limit stays known.

mod common;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use velostream_common::clickhouse::ClickHouseConfig;
use velostream_common::proto::{CLICKHOUSE_FORMAT, CLICKHOUSE_SCHEMA};
use velostream_consumer::record::RecordFormat;
use velostream_consumer::record::rowbinary::COLUMNS;
use velostream_consumer::sink::schema::taxi_table_ddl;
use velostream_consumer::{Consumer, Settings};
use velostream_testkit::{ClickHouse, Kafka, Lane, wait_for, wait_for_async};

const ROWS: u64 = 100_000;
const PARTITIONS: i32 = 3;

/// Every column but `_topic`, with -0.0 read as 0.0 (a plain protobuf field cannot carry -0.0).
const ROW_TEXT: &str = "toString(tuple(VendorID, tpep_pickup_datetime, tpep_dropoff_datetime, \
    passenger_count, trip_distance + 0, RatecodeID, store_and_fwd_flag, PULocationID, \
    DOLocationID, payment_type, fare_amount + 0, extra + 0, mta_tax + 0, tip_amount + 0, \
    tolls_amount + 0, improvement_surcharge + 0, total_amount + 0, congestion_surcharge, \
    airport_fee, cbd_congestion_fee, _partition, _offset))";

/// Rows and an order-independent digest of their values.
fn digest(ch: &ClickHouse, table: &str) -> String {
    ch.query(&format!(
        "SELECT count(), sum(cityHash64({ROW_TEXT})) FROM {table} FINAL"
    ))
    .trim()
    .to_string()
}

fn produce(kafka: &Kafka, topic: &str, format: &str) {
    let output = common::run(
        common::producer()
            .arg(velostream_testkit::taxi_sample())
            .args(["--brokers", &kafka.bootstrap, "--topic", topic])
            .args(["--create-topic", "--partitions", &PARTITIONS.to_string()])
            .args(["--format", format, "--progress", "lines"]),
    );
    assert!(output.status.success(), "producer --format {format} failed");
    let out = common::output_of(&output.stdout);
    assert_eq!(out["rows"], ROWS, "{out}");
}

async fn consume(kafka: &Kafka, ch: &ClickHouse, topic: &str, table: &str) {
    let config = ClickHouseConfig {
        url: ch.http_url.clone(),
        user: ch.user.into(),
        password: ch.password.into(),
        database: "default".into(),
    };
    let mut settings = Settings::new(&kafka.bootstrap, config, topic, &format!("g-{topic}"));
    settings.table = table.into();
    settings.format = RecordFormat::Auto;
    settings.batch_rows = 50_000;
    settings.series_interval = Duration::ZERO;
    let consumer = Consumer::new(settings);
    let metrics = consumer.metrics();
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    wait_for_async(
        &format!("the consumer of {topic} inserting {ROWS} rows"),
        Duration::from_secs(180),
        || {
            assert!(!run.is_finished(), "the consumer of {topic} stopped early");
            let done = metrics.rows_inserted.get() >= ROWS;
            async move { done.then_some(()) }
        },
    )
    .await;
    stop.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.rows_inserted, ROWS);
    assert_eq!(summary.rows_dead_lettered, 0);
}

/// ClickHouse's Kafka engine reads the protobuf topic into `table` (the taxi layout).
fn clickhouse_reads(ch: &ClickHouse, kafka: &Kafka, topic: &str, table: &str) {
    ch.query(&taxi_table_ddl(table));
    // The message's fields are the table's columns but the Kafka coordinates.
    let fields = COLUMNS.iter().filter(|(name, _)| !name.starts_with('_'));
    let columns: Vec<String> = fields.clone().map(|(n, ty)| format!("{n} {ty}")).collect();
    let names: Vec<&str> = fields.map(|(n, _)| *n).collect();
    ch.query(&format!(
        "CREATE TABLE {table}_queue ({}) ENGINE = Kafka SETTINGS \
         kafka_broker_list = '{}', kafka_topic_list = '{topic}', kafka_group_name = 'ch-{topic}', \
         kafka_format = '{CLICKHOUSE_FORMAT}', kafka_schema = '{CLICKHOUSE_SCHEMA}'",
        columns.join(", "),
        kafka.bootstrap
    ));
    ch.query(&format!(
        "CREATE MATERIALIZED VIEW {table}_mv TO {table} AS SELECT {}, _topic, \
         toInt32(_partition) AS _partition, toInt64(_offset) AS _offset FROM {table}_queue",
        names.join(", ")
    ));
    // The broker admits the engine's group member only after half its session timeout (45 s).
    wait_for(
        "ClickHouse's Kafka engine storing every row",
        Duration::from_secs(240),
        || (ch.query_u64(&format!("SELECT count() FROM {table}")) >= ROWS).then_some(()),
    );
    ch.query(&format!("DROP TABLE {table}_mv"));
    ch.query(&format!("DROP TABLE {table}_queue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_records_load_the_same_rows_as_json_through_our_consumer_and_clickhouse() {
    let kafka = Kafka::start();
    let ch = ClickHouse::start();
    produce(&kafka, "trips-json", "json");
    produce(&kafka, "trips-proto", "protobuf");
    consume(&kafka, &ch, "trips-json", "from_json").await;
    consume(&kafka, &ch, "trips-proto", "from_proto").await;

    let json = digest(&ch, "from_json");
    assert!(json.starts_with(&format!("{ROWS}\t")), "{json}");
    assert_eq!(
        digest(&ch, "from_proto"),
        json,
        "same rows, same values, same offsets"
    );
    // Not a digest of nothing: the rows carry values.
    assert!(ch.query_u64("SELECT countIf(store_and_fwd_flag = 'Y') FROM from_proto") > 0);

    match ch.lane {
        Lane::Modern => {
            clickhouse_reads(&ch, &kafka, "trips-proto", "by_clickhouse");
            assert_eq!(
                digest(&ch, "by_clickhouse"),
                json,
                "ClickHouse reads the same rows"
            );
        }
        Lane::Legacy => {
            let err = ch
                .try_query("SELECT 1 AS VendorID FORMAT Protobuf")
                .unwrap_err();
            assert!(err.to_string().contains("Unknown format"), "{err}");
        }
    }
}
