//! Measuring a consumer group's lag on a topic the way `kafka-consumer-groups --describe` reports it
//! on Apache Kafka (per partition: high watermark minus the group's committed offset), on brokers
//! whose ListOffsets answer can be stale.
//!
//! The local broker (Tansu) answers ListOffsets(latest) with a high watermark that lags behind the
//! log (measured: 285,886 while 300,000 messages were there), so a sensor built on it would read 0
//! too early. Fetch responses carry the true high watermark on every broker, so each reading:
//!
//! 1. reads the group's committed offsets (OffsetFetch), *first*, so the watermark read after them
//!    can only be newer and the lag can only be over-, never under-stated;
//! 2. reads the watermarks from Fetch responses of a fresh client that starts every partition at
//!    the group's committed offset (0 without one): `velostream_common::kafka::watermarks`.
//!    Explicit offsets spare a ListOffsets round trip, which takes about 500 ms on the local broker
//!    (a reading takes about 150 ms).
//!
//! librdkafka's errors and log lines go through `velostream_common::kafka::events`, said once per
//! episode, not on every reconnect attempt of every reading's client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use velostream_common::kafka::events::QuietContext;
use velostream_common::kafka::watermarks::{WatermarkError, Watermarks, fetch_watermarks};

use super::Error;

/// One partition's lag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// Partition id.
    pub partition: i32,
    /// The high watermark (log end offset) from a Fetch response.
    pub high_watermark: i64,
    /// The group's committed offset, if it committed one.
    pub committed: Option<i64>,
    /// `high_watermark - committed`; with nothing committed (or a commit beyond the end, left by
    /// an older topic of the same name), every message still in the partition
    /// (`high_watermark - log start offset`).
    pub lag: i64,
}

/// A lag measurement of a group on a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LagReading {
    /// When the reading completed, in milliseconds since the Unix epoch.
    pub unix_ms: i64,
    /// The sum of the partitions' lags.
    pub total: i64,
    /// Per partition, in partition order.
    pub partitions: Vec<PartitionLag>,
}

impl LagReading {
    /// The largest lag of any partition.
    pub fn max_partition_lag(&self) -> i64 {
        self.partitions.iter().map(|p| p.lag).max().unwrap_or(0)
    }
}

/// Reads a group's lag on a topic; keep one per sensor and call [`LagProbe::read`] per check.
pub struct LagProbe {
    inner: Arc<Inner>,
}

struct Inner {
    brokers: String,
    group: String,
    topic: String,
    timeout: Duration,
    /// A client with the group's id that never subscribes (so it never joins the group) and never
    /// commits: it only reads the group's committed offsets.
    offsets: BaseConsumer<QuietContext>,
}

impl LagProbe {
    /// A probe of `group`'s lag on `topic`; `timeout` bounds each broker request and each reading.
    pub fn new(brokers: &str, group: &str, topic: &str, timeout: Duration) -> Result<Self, Error> {
        let mut config = velostream_common::kafka::client_config(brokers);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("allow.auto.create.topics", "false");
        let offsets = config
            .create_with_context(QuietContext)
            .map_err(|source| Error::Client {
                brokers: brokers.into(),
                source: Box::new(source),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                brokers: brokers.into(),
                group: group.into(),
                topic: topic.into(),
                timeout,
                offsets,
            }),
        })
    }

    /// Measures the lag now (blocking work runs on tokio's blocking pool).
    pub async fn read(&self) -> Result<LagReading, Error> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.read())
            .await
            .expect("a lag reading does not panic")
    }
}

impl Inner {
    fn unreachable(&self, source: KafkaError) -> Error {
        Error::Unreachable {
            brokers: self.brokers.clone(),
            timeout: self.timeout,
            source: Box::new(source),
        }
    }

    fn read(&self) -> Result<LagReading, Error> {
        let partitions = self.partition_ids()?;
        let committed = self.committed(&partitions)?;
        let Watermarks { high, low } = self.watermarks(&partitions, &committed)?;
        let events = velostream_common::kafka::events::EventLog::global();
        if events.troubled() {
            events.recovered();
        }
        let partitions: Vec<PartitionLag> = partitions
            .iter()
            .map(|&p| {
                let high_watermark = high[&p];
                let committed = committed.get(&p).copied();
                let log_start = low.get(&p).copied().unwrap_or(0).max(0);
                // A commit beyond the end belongs to an older topic of the same name (deleted and
                // recreated): the group has read nothing of this one.
                let base = committed
                    .filter(|&c| c <= high_watermark)
                    .unwrap_or(log_start);
                PartitionLag {
                    partition: p,
                    high_watermark,
                    committed,
                    lag: (high_watermark - base).max(0),
                }
            })
            .collect();
        Ok(LagReading {
            unix_ms: unix_ms(),
            total: partitions.iter().map(|p| p.lag).sum(),
            partitions,
        })
    }

    /// The topic's partition ids, from metadata for every topic (asking for one topic by name may
    /// auto-create it).
    fn partition_ids(&self) -> Result<Vec<i32>, Error> {
        let metadata = self
            .offsets
            .fetch_metadata(None, self.timeout)
            .map_err(|e| self.unreachable(e))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic && t.error().is_none())
            .ok_or_else(|| Error::TopicMissing {
                topic: self.topic.clone(),
                brokers: self.brokers.clone(),
                hint: "; create it upstream with a kafka.create_topic task (if one did, the broker lost it since: a broker with memory storage forgets every topic when it restarts)",
            })?;
        let mut ids: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The group's committed offset per partition (partitions without one are absent).
    fn committed(&self, partitions: &[i32]) -> Result<BTreeMap<i32, i64>, Error> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = self
            .offsets
            .committed_offsets(tpl, self.timeout)
            .map_err(|source| Error::Request {
                operation: "reading the committed offsets",
                topic: self.topic.clone(),
                brokers: self.brokers.clone(),
                source: Box::new(source),
            })?;
        Ok(committed
            .elements_for_topic(&self.topic)
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }

    /// High and low watermarks per partition, from Fetch responses of a fresh client that starts
    /// fetching at the committed offsets.
    fn watermarks(
        &self,
        partitions: &[i32],
        committed: &BTreeMap<i32, i64>,
    ) -> Result<Watermarks, Error> {
        let starts: BTreeMap<i32, i64> = partitions
            .iter()
            .map(|&p| (p, committed.get(&p).copied().unwrap_or(0)))
            .collect();
        fetch_watermarks(&self.brokers, &self.topic, &starts, self.timeout).map_err(|e| match e {
            WatermarkError::Client(source) => Error::Client {
                brokers: self.brokers.clone(),
                source: Box::new(source),
            },
            WatermarkError::Timeout {
                missing,
                waited,
                errors,
            } => Error::NoWatermark {
                topic: self.topic.clone(),
                group: self.group.clone(),
                brokers: self.brokers.clone(),
                waited,
                detail: if errors.is_empty() {
                    format!("partition(s) {missing:?}")
                } else {
                    format!(
                        "partition(s) {missing:?} (the client said: {})",
                        errors.join("; ")
                    )
                }
                .into(),
            },
        })
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
