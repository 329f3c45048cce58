//! Integration tests of the foundation against real servers started by the harness: a topic on the
//! broker, produce and consume in a consumer group, a ClickHouse table written and read.

use std::time::Duration;

use clickhouse::Row;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use velostream_common::clickhouse::{ClickHouseConfig, WireCompression};
use velostream_common::kafka::client_config;
use velostream_testkit::{ClickHouse, Kafka};

#[tokio::test]
async fn broker_creates_topic_and_serves_a_consumer_group() {
    let kafka = Kafka::start();
    let admin: AdminClient<_> = client_config(&kafka.bootstrap).create().unwrap();
    let topic = NewTopic::new("foundation", 3, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let producer: FutureProducer = client_config(&kafka.bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for i in 0..30u32 {
        let payload = format!("message {i}");
        let key = i.to_string();
        producer
            .send(
                FutureRecord::to("foundation").key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let consumer: StreamConsumer = client_config(&kafka.bootstrap)
        .set("group.id", "foundation-group")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&["foundation"]).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 30 {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .expect("30 messages within 60 s")
            .unwrap();
        let text = std::str::from_utf8(message.payload().unwrap())
            .unwrap()
            .to_string();
        seen.insert(text);
        consumer.commit_message(&message, CommitMode::Sync).unwrap();
    }
    assert_eq!(seen.len(), 30);
    assert!(seen.contains("message 0") && seen.contains("message 29"));
}

#[derive(Debug, Row, Serialize, Deserialize, PartialEq)]
struct Trip {
    id: u64,
    fare: f64,
    zone: String,
}

#[tokio::test]
async fn clickhouse_table_is_written_and_read() {
    written_and_read(WireCompression::Auto).await;
}

/// LZ4 on the wire (what a server on another host gets by default) works too.
#[tokio::test]
async fn clickhouse_table_is_written_and_read_with_lz4_on_the_wire() {
    written_and_read(WireCompression::Lz4).await;
}

async fn written_and_read(compression: WireCompression) {
    let ch = ClickHouse::start();
    let config = ClickHouseConfig {
        url: ch.http_url.clone(),
        ..ClickHouseConfig::default()
    };
    let server = config.connect_with(compression).await.unwrap();
    assert!(server.version.major >= 18, "{:?}", server.version);
    server
        .client
        .query("CREATE TABLE trips (id UInt64, fare Float64, zone String) ENGINE = MergeTree ORDER BY id")
        .execute()
        .await
        .unwrap();
    let mut insert = server.client.insert::<Trip>("trips").await.unwrap();
    for id in 0..1000u64 {
        insert
            .write(&Trip {
                id,
                fare: id as f64 / 2.0,
                zone: format!("zone-{}", id % 7),
            })
            .await
            .unwrap();
    }
    insert.end().await.unwrap();

    assert_eq!(ch.query_u64("SELECT count() FROM trips"), 1000);
    let rows: Vec<Trip> = server
        .client
        .query("SELECT id, fare, zone FROM trips WHERE id < 3 ORDER BY id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[2],
        Trip {
            id: 2,
            fare: 1.0,
            zone: "zone-2".into()
        }
    );
}

#[tokio::test]
async fn clickhouse_down_names_the_server() {
    let config = ClickHouseConfig {
        url: format!("http://127.0.0.1:{}", velostream_testkit::free_port()),
        ..ClickHouseConfig::default()
    };
    let err = config.connect().await.unwrap_err().to_string();
    assert!(
        err.contains(&config.url) && err.contains("velostream-local up"),
        "{err}"
    );
}
