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
//! 2. starts a fresh consumer that joins no group, `assign`s every partition at the group's
//!    committed offset (0 without one), and polls with `statistics.interval.ms` set until
//!    librdkafka's statistics show a `hi_offset` for every partition. A fresh client has no
//!    `hi_offset` until a Fetch response of its own sets it, so a value seen there is never a
//!    leftover from an older reading. Explicit offsets spare a ListOffsets round trip, which takes
//!    about 500 ms on the local broker (a reading takes about 150 ms).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;

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
    offsets: BaseConsumer,
}

/// Per partition, from a Fetch response.
struct Watermarks {
    /// High watermark (log end offset).
    high: BTreeMap<i32, i64>,
    /// Log start offset.
    low: BTreeMap<i32, i64>,
}

/// Keeps the latest statistics a client emitted.
#[derive(Default)]
struct StatsContext {
    latest: Mutex<Option<Statistics>>,
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(statistics);
        }
    }
}

impl ConsumerContext for StatsContext {}

/// Throwaway group ids of watermark probes differ per probe and reading.
static PROBE_SEQ: AtomicU64 = AtomicU64::new(0);

/// How often the watermark probe's client emits statistics.
const STATS_INTERVAL_MS: &str = "50";

impl LagProbe {
    /// A probe of `group`'s lag on `topic`; `timeout` bounds each broker request and each reading.
    pub fn new(brokers: &str, group: &str, topic: &str, timeout: Duration) -> Result<Self, Error> {
        let mut config = velostream_common::kafka::client_config(brokers);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("allow.auto.create.topics", "false");
        let offsets = config.create().map_err(|source| Error::Client {
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
                hint: "; create it upstream with a kafka.create_topic task",
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
        let seq = PROBE_SEQ.fetch_add(1, Ordering::Relaxed);
        let mut config = velostream_common::kafka::client_config(&self.brokers);
        config
            // `assign` needs a group id; this one is never joined nor committed to.
            .set(
                "group.id",
                format!("velostream-lag-probe-{}-{seq}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // A start offset below the log start (retention) resets to the end; the Fetch answer
            // that says so carries the watermark already.
            .set("auto.offset.reset", "latest")
            .set("allow.auto.create.topics", "false")
            .set("statistics.interval.ms", STATS_INTERVAL_MS)
            .set("fetch.wait.max.ms", "100")
            // Only the watermark matters: fetch as little as the broker allows.
            .set("fetch.message.max.bytes", "65536")
            .set("fetch.max.bytes", "1048576")
            .set("queued.max.messages.kbytes", "1024");
        let probe: BaseConsumer<StatsContext> = config
            .create_with_context(StatsContext::default())
            .map_err(|source| Error::Client {
                brokers: self.brokers.clone(),
                source: Box::new(source),
            })?;
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            let start = committed.get(&p).copied().unwrap_or(0);
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(start))
                .map_err(|source| Error::Client {
                    brokers: self.brokers.clone(),
                    source: Box::new(source),
                })?;
        }
        probe.assign(&tpl).map_err(|source| Error::Request {
            operation: "probing the high watermarks",
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            source: Box::new(source),
        })?;
        let deadline = Instant::now() + self.timeout;
        loop {
            // Messages are only the vehicle of the watermark: drop them. Errors (a broker hiccup)
            // surface as the deadline below if they persist.
            let _ = probe.poll(Duration::from_millis(20));
            let found = probe
                .context()
                .latest
                .lock()
                .ok()
                .and_then(|stats| stats.as_ref().and_then(|s| self.read_stats(s, partitions)));
            if let Some(found) = found {
                // Closed here, on this blocking thread, rather than on a detached one: a librdkafka
                // handle still being destroyed while the process exits has crashed (SIGSEGV).
                drop(probe);
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(Error::NoWatermark {
                    topic: self.topic.clone(),
                    group: self.group.clone(),
                    brokers: self.brokers.clone(),
                    waited: self.timeout,
                });
            }
        }
    }

    /// High and low watermarks from statistics, once every partition has a high one.
    fn read_stats(&self, stats: &Statistics, partitions: &[i32]) -> Option<Watermarks> {
        let topic = stats.topics.get(&self.topic)?;
        let mut high = BTreeMap::new();
        let mut low = BTreeMap::new();
        for &p in partitions {
            let part = topic.partitions.get(&p)?;
            if part.hi_offset < 0 {
                return None;
            }
            high.insert(p, part.hi_offset);
            low.insert(p, part.lo_offset);
        }
        Some(Watermarks { high, low })
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
