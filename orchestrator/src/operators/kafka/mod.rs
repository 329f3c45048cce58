//! The Kafka task kinds: `kafka.create_topic` and `kafka.delete_topic` (topic administration) and
//! `kafka.wait_lag` (a sensor that waits until a consumer group has caught up with a topic).
//!
//! Every kind talks to the brokers of the DAG's `[connections]` through
//! `velostream_common::kafka::client_config`, and turns an unreachable broker into an error that
//! names it.

pub mod lag;
pub mod topic;
pub mod wait_lag;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use serde::{Deserialize, Serialize};

use crate::operators::OperatorError;

pub use lag::{LagProbe, LagReading, PartitionLag};
pub use topic::{
    ConfigValue, CreateOutcome, CreateTopic, DeleteOutcome, DeleteTopic, IfExists, IfMissing,
};
pub use wait_lag::{LagOutcome, WaitLag};

/// What went wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No broker answered.
    #[error(
        "Kafka broker(s) at {brokers} did not answer within {timeout:?} ({source}); is the broker running (`infrastructure/local/velostream-local up`) and are the DAG's `connections.kafka.brokers` right?"
    )]
    Unreachable {
        /// The bootstrap servers we tried.
        brokers: String,
        /// How long we waited.
        timeout: Duration,
        /// What librdkafka said.
        #[source]
        source: Box<KafkaError>,
    },
    /// The client could not even be created (a bad librdkafka property, usually from a
    /// `VELOSTREAM_KAFKA_*` override).
    #[error(
        "creating a Kafka client for {brokers}: {source}; check the VELOSTREAM_KAFKA_* variables"
    )]
    Client {
        /// The bootstrap servers.
        brokers: String,
        /// What librdkafka said.
        #[source]
        source: Box<KafkaError>,
    },
    /// A broker refused an operation on a topic.
    #[error("{operation} of topic {topic:?} on {brokers} failed: {code}")]
    Refused {
        /// `creation`, `deletion`...
        operation: &'static str,
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// A request failed in the client (timeout, transport) rather than on the broker.
    #[error("{operation} of topic {topic:?} on {brokers} failed: {source}")]
    Request {
        /// `creation`, `deletion`, `reading committed offsets`...
        operation: &'static str,
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// What librdkafka said.
        #[source]
        source: Box<KafkaError>,
    },
    /// The topic exists and the task was told to fail in that case.
    #[error(
        "topic {topic:?} already exists on {brokers} (if_exists = \"fail\"); set if_exists = \"keep\" to reuse it or \"recreate\" to start empty"
    )]
    TopicExists {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
    /// The topic does not exist.
    #[error("topic {topic:?} does not exist on {brokers}{hint}")]
    TopicMissing {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// What the user can do about it.
        hint: &'static str,
    },
    /// A topic change did not become visible in the cluster's metadata in time.
    #[error(
        "topic {topic:?} on {brokers}: {what} within {waited:?}; the broker may be overloaded, raise the task's `timeout`"
    )]
    NotSettled {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// What we waited for, e.g. `still listed after deletion`.
        what: &'static str,
        /// How long we waited.
        waited: Duration,
    },
    /// No Fetch response told us a partition's high watermark in time.
    #[error(
        "reading the lag of group {group:?} on topic {topic:?}: {brokers} sent no Fetch response with a high watermark for {detail} within {waited:?}; is the broker up and the partition's leader alive?"
    )]
    NoWatermark {
        /// The topic.
        topic: String,
        /// The consumer group.
        group: String,
        /// The bootstrap servers.
        brokers: String,
        /// How long we waited.
        waited: Duration,
        /// The partitions without one, and what the client said meanwhile.
        detail: Box<str>,
    },
    /// A topic the sensor had seen is gone: the broker lost its data or the topic was deleted.
    #[error(
        "topic {topic:?} disappeared from {brokers} (it had {partitions} partition(s), high watermarks {high_watermarks:?} at the last reading): the broker lost its data (a broker with memory storage restarted?) or the topic was deleted; the rows it held cannot be read any more, so the lag cannot be computed. Produce the data again into a new topic (or recreate it and start the consumer with --on-topic-reset=start-over)"
    )]
    TopicVanished {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// How many partitions it had.
        partitions: usize,
        /// Partition -> high watermark at the last good reading.
        high_watermarks: std::collections::BTreeMap<i32, i64>,
    },
    /// A partition's high watermark went backwards between two readings.
    #[error(
        "the high watermark of topic {topic:?} went backwards on {brokers} ({moves}): messages the group may not have read are gone (the topic was recreated, or the broker lost its data); the lag of what is left would say nothing about what was lost. Produce the data again, or start the consumer with --on-topic-reset=start-over to load the new topic"
    )]
    WatermarkBackwards {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// `partition p: from a to b` for each partition that moved back.
        moves: String,
    },
    /// A field's value is unusable (a template that did not render to a number).
    #[error("`{field}` is {value:?}, which is not a number")]
    NotANumber {
        /// The field.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// The task was cancelled (run cancelled or task timeout).
    #[error("cancelled")]
    Cancelled,
}

/// The task-level error for a Kafka failure: cancellation stays cancellation, the rest keeps its
/// message (which names the brokers and says what to do).
pub(crate) fn operator_error(error: Error) -> OperatorError {
    match error {
        Error::Cancelled => OperatorError::Cancelled,
        other => OperatorError::failed(other),
    }
}

/// A number field that may also be written as a template rendering to one:
/// `partitions = 6` or `partitions = "{{ params.partitions }}"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Num<T> {
    /// Written as a number.
    Value(T),
    /// Written as text: a template before rendering, digits after.
    Text(String),
}

impl<T: FromStr + Copy> Num<T> {
    /// The number if known: `Ok(None)` for a template not rendered yet, `Err` for other text.
    pub fn known(&self) -> Result<Option<T>, String> {
        match self {
            Self::Value(v) => Ok(Some(*v)),
            Self::Text(t) if t.contains("{{") => Ok(None),
            Self::Text(t) => t
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("{t:?} is not a number")),
        }
    }

    /// The number, once templates are rendered.
    pub fn get(&self, field: &'static str) -> Result<T, Error> {
        match self.known() {
            Ok(Some(v)) => Ok(v),
            _ => Err(Error::NotANumber {
                field,
                value: match self {
                    Self::Text(t) => t.clone(),
                    Self::Value(_) => String::new(),
                },
            }),
        }
    }
}

impl<T> From<T> for Num<T> {
    fn from(v: T) -> Self {
        Self::Value(v)
    }
}

impl<T: fmt::Display> fmt::Display for Num<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(v) => v.fmt(f),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// Load-time check of a number field: text must be a template or a number, and the number at
/// least `min`.
pub(crate) fn num_problems<T: FromStr + Copy + PartialOrd + fmt::Display>(
    field: &'static str,
    value: &Num<T>,
    min: T,
    what: &str,
) -> Vec<crate::operators::ConfigProblem> {
    match value.known() {
        Ok(Some(v)) if v < min => vec![crate::operators::ConfigProblem::field(
            field,
            format!("`{field}` is {v}; {what}"),
        )],
        Ok(_) => Vec::new(),
        Err(e) => vec![crate::operators::ConfigProblem::field(
            field,
            format!(
                "`{field}` {e}; write a number or a template such as \"{{{{ params.{field} }}}}\""
            ),
        )],
    }
}
