//! Delivery to Kafka: the producer configuration (idempotent, `acks=all`, lz4 by default), a
//! check that the brokers answer and the topic exists before anything is read, and a sender that
//! enqueues without blocking, polls when librdkafka's queue is full, and counts every
//! acknowledgement and failure in a delivery callback (no future per message).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::stats::Stats;

/// Compression codecs librdkafka offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4: cheap on CPU, the default.
    Lz4,
    /// Zstandard: smaller, more CPU.
    Zstd,
    /// Snappy.
    Snappy,
    /// Gzip.
    Gzip,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
            Self::Snappy => "snappy",
            Self::Gzip => "gzip",
        }
    }
}

/// How messages are delivered.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Destination topic.
    pub topic: String,
    /// Idempotent producer (`enable.idempotence`), which needs `acks=all`.
    pub idempotence: bool,
    /// `acks`: `all`, `1` or `0`.
    pub acks: String,
    /// `compression.type`.
    pub compression: Compression,
    /// `linger.ms`: how long a batch waits to fill.
    pub linger: Duration,
    /// `batch.size`: bytes per partition batch.
    pub batch_bytes: u64,
    /// `batch.num.messages`: messages per partition batch.
    pub batch_messages: u64,
    /// `message.timeout.ms`: how long a message may take to be acknowledged, retries included.
    pub message_timeout: Duration,
    /// How long to wait for the brokers to answer a metadata request before giving up.
    pub connect_timeout: Duration,
    /// Create the topic when it does not exist, with this many partitions.
    pub create_partitions: Option<i32>,
    /// Replication factor of a created topic.
    pub replication: i32,
    /// librdkafka properties applied last (`--producer-property k=v`).
    pub properties: Vec<(String, String)>,
}

impl DeliveryConfig {
    /// Defaults for `topic` on `brokers`: idempotent, acks=all, lz4, 20 ms linger, 1 MB batches.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            idempotence: true,
            acks: "all".into(),
            compression: Compression::Lz4,
            linger: Duration::from_millis(20),
            batch_bytes: 1_000_000,
            batch_messages: 10_000,
            message_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            create_partitions: None,
            replication: 1,
            properties: Vec::new(),
        }
    }

    /// The librdkafka configuration: [`velostream_common::kafka::client_config`], our delivery
    /// settings, then the passthrough properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = velostream_common::kafka::client_config(&self.brokers);
        config
            .set("enable.idempotence", self.idempotence.to_string())
            .set("acks", &self.acks)
            .set("compression.type", self.compression.as_str())
            .set("linger.ms", self.linger.as_millis().to_string())
            .set("batch.size", self.batch_bytes.to_string())
            .set("batch.num.messages", self.batch_messages.to_string())
            .set(
                "message.timeout.ms",
                self.message_timeout.as_millis().to_string(),
            )
            // librdkafka's default queue (100,000 messages) keeps queued messages in the CPU
            // caches until they are compressed; a deeper queue only costs memory and cache
            // misses. `send` polls while it is full.
            ;
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }
}

/// Why the producer could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// librdkafka refused the configuration.
    #[error("invalid Kafka producer configuration: {0}")]
    Config(KafkaError),
    /// No broker answered.
    #[error(
        "cannot reach the Kafka brokers at {brokers} within {timeout:?}: {error}; is the broker running (`velostream-local up`) and KAFKA_BROKERS right?"
    )]
    Unreachable {
        /// Bootstrap servers.
        brokers: String,
        /// How long we waited.
        timeout: Duration,
        /// The client's error.
        error: KafkaError,
    },
    /// The topic is missing and may not be created.
    #[error(
        "topic `{topic}` does not exist on {brokers}: create it first (e.g. the DAG's kafka.create_topic task) or pass --create-topic"
    )]
    NoTopic {
        /// The topic.
        topic: String,
        /// Bootstrap servers.
        brokers: String,
    },
    /// Creating the topic failed.
    #[error("creating topic `{topic}` failed: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// Counts acknowledgements and failures as librdkafka reports them.
///
/// Reports arrive only inside `poll`, on the sending thread, so acknowledgements are counted in
/// plain single-writer cells (no locked instruction per message) and published to [`Stats`]
/// after each poll (`DeliveryCounter::publish`).
pub struct DeliveryCounter {
    stats: Stats,
    rows: AtomicU64,
    bytes: AtomicU64,
}

/// Adds `n` to a counter only one thread writes.
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

impl DeliveryCounter {
    /// Moves the acknowledgements counted since the last call into [`Stats`].
    fn publish(&self) {
        let rows = self.rows.swap(0, Ordering::Relaxed);
        if rows > 0 {
            self.stats.delivered.inc_by(rows);
            self.stats
                .bytes
                .inc_by(self.bytes.swap(0, Ordering::Relaxed));
        }
    }
}

impl ClientContext for DeliveryCounter {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "Kafka client error");
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                bump(&self.rows, 1);
                bump(&self.bytes, message.payload_len() as u64);
            }
            Err((error, _)) => self.stats.fail(|| error.to_string()),
        }
    }
}

/// Enqueues messages for one topic and counts their fate in [`Stats`].
pub struct Sender {
    producer: BaseProducer<DeliveryCounter>,
    topic: String,
    stats: Stats,
    since_poll: u32,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("topic", &self.topic)
            .finish()
    }
}

/// Sends between polls of the delivery queue when nothing blocks.
const POLL_EVERY: u32 = 2048;

/// How long one wait for room in a full client queue serves delivery reports. rdkafka's
/// `BaseProducer::poll` loops until its deadline, and asks librdkafka for the rest in whole
/// milliseconds: the last millisecond of every wait is a busy loop of non-blocking polls and clock
/// reads. With 1 ms waits that loop took a third to a half of the producer's CPU (a `perf` profile
/// with call graphs); with 10 ms waits the producer spent 15-20% less CPU per row at the same rate
/// (2M rows, three alternating runs of 1, 3 and 10 ms on fresh brokers), and the queue still holds
/// far more than 10 ms of sends.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);

impl Sender {
    /// Creates the producer, checks that the brokers answer and the topic exists (creating it
    /// when configured to).
    pub fn connect(config: &DeliveryConfig, stats: Stats) -> Result<Self, SetupError> {
        ensure_topic(config)?;
        let producer: BaseProducer<DeliveryCounter> = config
            .client_config()
            .create_with_context(DeliveryCounter {
                stats: stats.clone(),
                rows: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
            })
            .map_err(SetupError::Config)?;
        Ok(Self {
            producer,
            topic: config.topic.clone(),
            stats,
            since_poll: 0,
        })
    }

    /// Enqueues one message; waits (serving delivery reports) while the client's queue is full.
    /// A message that cannot be enqueued for another reason counts as failed.
    pub fn send(&mut self, key: Option<&[u8]>, payload: &[u8]) {
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.since_poll += 1;
                    if self.since_poll >= POLL_EVERY {
                        poll_and_publish(
                            &self.producer,
                            &self.stats,
                            &mut self.since_poll,
                            Duration::ZERO,
                        );
                    }
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    poll_and_publish(
                        &self.producer,
                        &self.stats,
                        &mut self.since_poll,
                        QUEUE_FULL_WAIT,
                    );
                }
                Err((error, _)) => {
                    self.stats.fail(|| error.to_string());
                    return;
                }
            }
        }
    }

    fn poll_for(&mut self, timeout: Duration) {
        poll_and_publish(&self.producer, &self.stats, &mut self.since_poll, timeout);
    }

    /// Serves pending delivery reports without waiting.
    pub fn poll(&mut self) {
        self.poll_for(Duration::ZERO);
    }

    /// Waits until every enqueued message is acknowledged or failed, at most `timeout`. Returns
    /// how many are still in flight (0 when all are settled).
    pub fn flush(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll_for(Duration::from_millis(50));
            let in_flight = self.producer.in_flight_count();
            if in_flight == 0 || Instant::now() >= deadline {
                return in_flight;
            }
        }
    }

    /// Messages enqueued and not yet settled.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

/// Serves delivery reports for `timeout`, then publishes the counts (`enqueued` sends since the
/// last call, and the acknowledgements) to `stats`.
fn poll_and_publish(
    producer: &BaseProducer<DeliveryCounter>,
    stats: &Stats,
    enqueued: &mut u32,
    timeout: Duration,
) {
    producer.poll(timeout);
    stats.enqueued.inc_by(u64::from(*enqueued));
    *enqueued = 0;
    producer.context().publish();
}

/// Checks that the brokers answer and the topic exists; creates it when configured to.
pub fn ensure_topic(config: &DeliveryConfig) -> Result<(), SetupError> {
    let probe: BaseProducer = velostream_common::kafka::client_config(&config.brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(SetupError::Config)?;
    let unreachable = |error| SetupError::Unreachable {
        brokers: config.brokers.clone(),
        timeout: config.connect_timeout,
        error,
    };
    let metadata = probe
        .client()
        .fetch_metadata(Some(&config.topic), config.connect_timeout)
        .map_err(unreachable)?;
    let exists = metadata
        .topics()
        .iter()
        .any(|t| t.name() == config.topic && t.error().is_none() && !t.partitions().is_empty());
    if exists {
        return Ok(());
    }
    let Some(partitions) = config.create_partitions else {
        return Err(SetupError::NoTopic {
            topic: config.topic.clone(),
            brokers: config.brokers.clone(),
        });
    };
    let admin: AdminClient<DefaultClientContext> =
        velostream_common::kafka::client_config(&config.brokers)
            .create()
            .map_err(SetupError::Config)?;
    let topic = NewTopic::new(
        &config.topic,
        partitions,
        TopicReplication::Fixed(config.replication),
    );
    let options = AdminOptions::new().operation_timeout(Some(config.connect_timeout));
    let results = futures::executor::block_on(admin.create_topics([&topic], &options))
        .map_err(unreachable)?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic = %config.topic, partitions, "Created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(SetupError::CreateTopic {
                    topic: config.topic.clone(),
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}
