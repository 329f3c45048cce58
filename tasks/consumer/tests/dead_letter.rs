//! Bad records (not JSON, not protobuf, wrong types, missing required fields, in either record
//! format) go to the dead-letter topic as they came, with the error and their source partition
//! and offset in headers; they are counted, and the good rows around them on the same partition
//! (JSON and protobuf records mixed, the consumer's default `--format auto`) still land.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use velostream_common::kafka::client_config;
use velostream_consumer::kafka::dead_letter::{
    HEADER_ERROR, HEADER_ERROR_KIND, HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC,
};
use velostream_testkit::{ClickHouse, Kafka};

/// Bad messages and the kind each must be dead-lettered as.
fn bad_records() -> Vec<(Vec<u8>, &'static str)> {
    let good = String::from_utf8(sample()[0].clone()).unwrap();
    vec![
        (b"this is not json".to_vec(), "not_json"),
        (good.as_bytes()[..good.len() / 2].to_vec(), "not_json"),
        (Vec::new(), "not_json"),
        (
            good.replace("\"fare_amount\":9.3", "\"fare_amount\":\"nine\"")
                .into_bytes(),
            "wrong_type",
        ),
        (
            good.replace("\"VendorID\":2", "\"VendorID\":-1")
                .into_bytes(),
            "wrong_type",
        ),
        (
            good.replace("2023-01-01 00:32:10", "not a time")
                .into_bytes(),
            "wrong_type",
        ),
        (
            good.replace("\"tpep_pickup_datetime\":\"2023-01-01 00:32:10\",", "")
                .into_bytes(),
            "missing_field",
        ),
        (
            good.replace("\"total_amount\":14.3", "\"total_amount\":null")
                .into_bytes(),
            "missing_field",
        ),
        // Protobuf: VendorID (field 1) then a byte that starts no valid field.
        (vec![0x08, 0x02, 0xff], "not_protobuf"),
        (protobuf(&good, |m| m.vendor_id = 300), "wrong_type"),
        (
            protobuf(&good, |m| m.tpep_dropoff_datetime = None),
            "missing_field",
        ),
    ]
}

/// The row of the JSON record `json` as a protobuf record, changed by `change`.
fn protobuf(json: &str, change: impl FnOnce(&mut velostream_common::proto::TaxiTrip)) -> Vec<u8> {
    let trip = velostream_consumer::record::decode(json.as_bytes()).unwrap();
    let mut message = velostream_consumer::record::protobuf::to_message(&trip);
    change(&mut message);
    prost::Message::encode_to_vec(&message)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_go_to_the_dead_letter_topic_and_do_not_block_their_partition() {
    let kafka = Kafka::start();
    let ch = ClickHouse::start();
    let (topic, dlq, table) = ("taxi-dlq", "taxi-dlq.dead-letter", "trips_dlq");
    // The dead-letter topic is not created here: the consumer creates it when it is missing.
    create_topic(&kafka, topic, 1).await;

    // One partition: 1,000 good rows, then every bad record each followed by 100 good rows.
    let bad = bad_records();
    let mut messages = Vec::new();
    let mut good_rows = sample().iter().cloned();
    let mut expected_bad = BTreeMap::new();
    messages.extend(good_rows.by_ref().take(1_000));
    // Good protobuf records among the JSON ones: the default `--format auto` reads both.
    let json: Vec<Vec<u8>> = good_rows.by_ref().take(500).collect();
    messages.extend(velostream_consumer::fixture::to_protobuf(&json).unwrap());
    for (payload, kind) in &bad {
        expected_bad.insert(messages.len() as i64, (payload.clone(), *kind));
        messages.push(payload.clone());
        messages.extend(good_rows.by_ref().take(100));
    }
    let good_count = messages.len() - bad.len();
    produce(&kafka, topic, 1, messages).await;

    let mut consumer = ConsumerProcess::start(&ConsumerArgs::new(&kafka, &ch, topic, table));
    consumer.wait_ready();
    wait_for("the good rows", Duration::from_secs(120), || {
        (count_final(&ch, table) == good_count as u64).then_some(())
    });
    // The last good rows come after the last bad record: the partition was not blocked.
    let max_offset = ch.query_u64(&format!("SELECT max(_offset) FROM {table}"));
    assert_eq!(max_offset, (good_count + bad.len() - 1) as u64);

    // Every bad record is on the dead-letter topic, byte for byte, with its story in headers.
    let reader: BaseConsumer = client_config(&kafka.bootstrap)
        .set("group.id", "dlq-reader")
        .create()
        .unwrap();
    let metadata = reader
        .fetch_metadata(Some(dlq), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(dlq, p.id(), Offset::Beginning)
            .unwrap();
    }
    assert!(
        tpl.count() > 0,
        "the consumer created the dead-letter topic"
    );
    reader.assign(&tpl).unwrap();
    let mut seen = BTreeMap::new();
    wait_for("the dead letters", Duration::from_secs(60), || {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            let headers = m.headers().expect("dead letters carry headers");
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8(v.to_vec()).unwrap())
                    .unwrap_or_else(|| panic!("header {name} missing"))
            };
            assert_eq!(header(HEADER_TOPIC), topic);
            assert_eq!(header(HEADER_PARTITION), "0");
            assert!(!header(HEADER_ERROR).is_empty());
            let offset: i64 = header(HEADER_OFFSET).parse().unwrap();
            let value = m.payload().unwrap_or_default().to_vec();
            seen.insert(
                offset,
                (value, header(HEADER_ERROR_KIND), header(HEADER_ERROR)),
            );
        }
        (seen.len() >= bad.len()).then_some(())
    });
    assert_eq!(seen.len(), bad.len());
    for (offset, (payload, kind)) in &expected_bad {
        let (got, got_kind, error) = &seen[offset];
        assert_eq!(got, payload, "payload of offset {offset}");
        assert_eq!(got_kind, kind, "kind of offset {offset}: {error}");
    }
    let (_, error) = seen
        .values()
        .map(|(_, k, e)| (k, e))
        .find(|(k, _)| k.as_str() == "missing_field")
        .unwrap();
    assert!(
        error.contains("tpep_pickup_datetime") || error.contains("total_amount"),
        "{error}"
    );

    assert_eq!(
        consumer.metric("velostream_consumer_rows_dead_lettered_total{reason=\"not_json\"}"),
        Some(3.0)
    );
    assert_eq!(
        consumer.metric("velostream_consumer_rows_dead_lettered_total{reason=\"wrong_type\"}"),
        Some(4.0)
    );
    assert_eq!(
        consumer.metric("velostream_consumer_rows_dead_lettered_total{reason=\"missing_field\"}"),
        Some(3.0)
    );
    assert_eq!(
        consumer.metric("velostream_consumer_rows_dead_lettered_total{reason=\"not_protobuf\"}"),
        Some(1.0)
    );
    let (code, stdout) = consumer.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let out = summary(&stdout);
    assert_eq!(out["rows_dead_lettered"], bad.len() as u64);
    assert_eq!(out["rows_inserted"], good_count as u64);
    assert_eq!(out["rows_consumed"], (good_count + bad.len()) as u64);
    // The group's commit covers the bad records too.
    assert_eq!(
        committed(&kafka, "test-group", topic, 1),
        BTreeMap::from([(0, (good_count + bad.len()) as i64)])
    );
}
