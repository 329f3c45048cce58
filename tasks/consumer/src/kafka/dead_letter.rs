//! The dead-letter topic: bad records go there as they came (same key and value), with why and
//! where from in headers, so they can be inspected and replayed. Delivered idempotently and
//! awaited before the batch's offsets are recorded, so a crash never loses one (it may repeat
//! one: dead letters are at-least-once).

use std::time::Duration;

use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::Producer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use velostream_common::kafka::events::QuietContext;

use crate::batch::DeadLetter;

/// Header with the decoder's message.
pub const HEADER_ERROR: &str = "velostream.error";
/// Header with the class of error (`not_json`, `not_protobuf`, `wrong_type`, `missing_field`).
pub const HEADER_ERROR_KIND: &str = "velostream.error.kind";
/// Header with the source topic.
pub const HEADER_TOPIC: &str = "velostream.source.topic";
/// Header with the source partition, in decimal.
pub const HEADER_PARTITION: &str = "velostream.source.partition";
/// Header with the source offset, in decimal.
pub const HEADER_OFFSET: &str = "velostream.source.offset";

/// Sends dead letters to one topic.
pub struct DeadLetterProducer {
    producer: FutureProducer<QuietContext>,
    topic: String,
    source_topic: String,
}

impl std::fmt::Debug for DeadLetterProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterProducer")
            .field("topic", &self.topic)
            .finish()
    }
}

impl DeadLetterProducer {
    /// An idempotent producer (acks=all) for `topic`, carrying records of `source_topic`.
    pub fn new(
        mut config: ClientConfig,
        topic: &str,
        source_topic: &str,
    ) -> Result<Self, KafkaError> {
        let producer = config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create_with_context(QuietContext)?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            source_topic: source_topic.to_string(),
        })
    }

    /// Creates the dead-letter topic if the cluster does not have it (one partition, the
    /// broker's default replication), so the first bad record does not stall its batch. A
    /// failure is only logged: delivery retries until the topic exists.
    pub async fn ensure_topic(&self, config: &ClientConfig) {
        let exists = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .map(|m| {
                m.topics().iter().any(|t| {
                    t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty()
                })
            });
        if matches!(exists, Ok(true)) {
            return;
        }
        let admin: AdminClient<QuietContext> = match config.create_with_context(QuietContext) {
            Ok(admin) => admin,
            Err(err) => {
                tracing::warn!(topic = %self.topic, error = %err, "Cannot check the dead-letter topic");
                return;
            }
        };
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for replication in [TopicReplication::Fixed(-1), TopicReplication::Fixed(1)] {
            let topic = NewTopic::new(&self.topic, 1, replication);
            match admin.create_topics([&topic], &options).await {
                Ok(results) => match results.into_iter().next() {
                    Some(Ok(_)) => {
                        tracing::info!(topic = %self.topic, "Created the dead-letter topic");
                        return;
                    }
                    Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => return,
                    Some(Err((_, code))) => {
                        tracing::debug!(topic = %self.topic, error = %code, "Creating the dead-letter topic failed");
                    }
                    None => {}
                },
                Err(err) => {
                    tracing::debug!(topic = %self.topic, error = %err, "Creating the dead-letter topic failed");
                }
            }
        }
        tracing::warn!(topic = %self.topic, "The dead-letter topic does not exist and could not be created; bad records will wait for it");
    }

    /// Sends `letters` and waits for every delivery. Returns the indexes that failed, with the
    /// last error, so the caller can retry just those.
    pub async fn deliver(&self, letters: &[&DeadLetter]) -> Result<(), (Vec<usize>, KafkaError)> {
        let sends = letters.iter().map(|letter| {
            let partition = letter.partition.to_string();
            let offset = letter.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: HEADER_ERROR,
                    value: Some(letter.error.message.as_str()),
                })
                .insert(Header {
                    key: HEADER_ERROR_KIND,
                    value: Some(letter.error.kind.as_str()),
                })
                .insert(Header {
                    key: HEADER_TOPIC,
                    value: Some(self.source_topic.as_str()),
                })
                .insert(Header {
                    key: HEADER_PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: HEADER_OFFSET,
                    value: Some(offset.as_str()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(key) = &letter.key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = &letter.payload {
                record = record.payload(payload.as_slice());
            }
            self.producer.send(record, Duration::from_secs(30))
        });
        let results = join_all(sends).await;
        let mut failed = Vec::new();
        let mut last = None;
        for (i, result) in results.into_iter().enumerate() {
            if let Err((err, _)) = result {
                failed.push(i);
                last = Some(err);
            }
        }
        match last {
            None => Ok(()),
            Some(err) => Err((failed, err)),
        }
    }
}
