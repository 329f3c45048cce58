//! Helpers shared by the pipeline-kind tests: task contexts pointed at the test's servers, and
//! small Kafka producers and committers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use orchestrator::operators::{Connections, KafkaConnection, TaskContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use velostream_common::clickhouse::ClickHouseConfig;

/// Connections to the given broker and ClickHouse URL (the harness's user and password).
pub fn connections(brokers: &str, clickhouse_url: &str) -> Arc<Connections> {
    Arc::new(Connections {
        kafka: KafkaConnection {
            brokers: brokers.into(),
        },
        clickhouse: ClickHouseConfig {
            url: clickhouse_url.into(),
            user: velostream_testkit::CLICKHOUSE_USER.into(),
            password: velostream_testkit::CLICKHOUSE_PASSWORD.into(),
            database: "default".into(),
        },
    })
}

/// A task context for `task_id` with an in-memory log.
pub fn context(task_id: &str, connections: Arc<Connections>) -> TaskContext {
    TaskContext::builder("kinds", "run-1", task_id)
        .connections(connections)
        .build()
}

/// A broker address nothing listens on.
pub fn dead_broker() -> String {
    format!("127.0.0.1:{}", velostream_testkit::free_port())
}

/// Produces `per_partition` small JSON messages to every partition of `topic`.
pub fn produce(brokers: &str, topic: &str, partitions: i32, per_partition: usize) {
    let producer: BaseProducer = velostream_common::kafka::client_config(brokers)
        .set("linger.ms", "5")
        .create()
        .expect("creating a producer");
    for p in 0..partitions {
        for i in 0..per_partition {
            let payload = format!("{{\"p\":{p},\"i\":{i}}}");
            loop {
                match producer.send(
                    BaseRecord::<(), _>::to(topic)
                        .partition(p)
                        .payload(&payload),
                ) {
                    Ok(()) => break,
                    Err((e, _)) => {
                        assert_eq!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                            "{e}"
                        );
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("flushing the producer");
}

/// Commits `offsets[p]` for partition p of `topic` as `group`, without joining the group.
pub fn commit(brokers: &str, group: &str, topic: &str, offsets: &[i64]) {
    let consumer: BaseConsumer = velostream_common::kafka::client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating a consumer");
    let mut tpl = TopicPartitionList::new();
    for (p, &o) in offsets.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(o))
            .expect("a valid offset");
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .expect("committing offsets");
}
