//! The Kafka side: the consumer (its configuration, the ingest loop and the rebalance and
//! statistics callbacks) and the dead-letter producer.

pub mod context;
pub mod dead_letter;
pub mod fetch_queue;
pub mod ingest;

use rdkafka::ClientConfig;

use crate::settings::Settings;

/// The consumer's librdkafka configuration: manual commits (they are progress markers; where
/// a partition continues comes from ClickHouse), a short session so the local broker lets it
/// join quickly, a bounded prefetch queue, statistics every second for the lag metric; then
/// the user's `--consumer-property` overrides.
pub fn consumer_config(settings: &Settings) -> ClientConfig {
    let mut config = velostream_common::kafka::client_config(&settings.brokers);
    let session_ms = settings.session_timeout.as_millis().max(1000);
    config
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A fetch position out of range (a record beyond a recreated topic's end, or messages
        // deleted before they were read) is a broker fault to report, never a silent jump to
        // the start, whose rows would collide with the old ones' identities.
        .set("auto.offset.reset", "error")
        .set("session.timeout.ms", session_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_ms / 12).max(100).to_string(),
        )
        .set(
            "queued.max.messages.kbytes",
            settings.fetch_queue_kbytes.to_string(),
        )
        .set("queued.min.messages", "1000000")
        // When the prefetch queue is full librdkafka waits this long before fetching again; the
        // default (1 s) idles the consumer most of the time once decoding is the slower side.
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "8388608")
        .set("statistics.interval.ms", "1000")
        // A subscribed topic created after the consumer started is noticed within seconds,
        // not librdkafka's default five minutes.
        .set("topic.metadata.refresh.interval.ms", "5000");
    for (key, value) in &settings.consumer_properties {
        config.set(key, value);
    }
    config
}
