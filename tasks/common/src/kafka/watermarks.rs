//! Partitions' watermarks as Fetch responses state them, on brokers whose ListOffsets answer can be
//! stale (the local broker's high watermark from ListOffsets(latest) lags behind the log, and more
//! so with its S3 engine). A fresh client that joins no group `assign`s the partitions at given
//! offsets and polls with `statistics.interval.ms` set until librdkafka's statistics show a
//! `hi_offset` for every partition. A fresh client has no `hi_offset` until a Fetch response of its
//! own sets it, so a value seen there is never a leftover from an older reading. Used by the lag
//! sensor (each reading) and by the consumer (to check ClickHouse's offset records against the
//! topic before it reads).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use super::events::EventLog;

/// Per partition, from a Fetch response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Watermarks {
    /// High watermark (log end offset).
    pub high: BTreeMap<i32, i64>,
    /// Log start offset (0 where librdkafka does not know it).
    pub low: BTreeMap<i32, i64>,
}

/// Why the watermarks could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    /// The client could not be created or assigned.
    #[error("{0}")]
    Client(#[source] KafkaError),
    /// No Fetch response gave every partition's high watermark in time.
    #[error("no Fetch response with a high watermark for partition(s) {missing:?} within {waited:?}{}", seen_errors(.errors))]
    Timeout {
        /// The partitions without one.
        missing: Vec<i32>,
        /// How long we waited.
        waited: Duration,
        /// What the client reported meanwhile (distinct errors), e.g. an unknown topic or
        /// partition, or every broker down.
        errors: Vec<String>,
    },
}

fn seen_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!("; the client said: {}", errors.join("; "))
    }
}

/// Keeps the latest statistics and the distinct errors a probe client emitted.
#[derive(Default)]
struct ProbeContext {
    latest: Mutex<Option<Statistics>>,
    errors: Mutex<Vec<String>>,
}

impl ProbeContext {
    fn note(&self, error: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if !errors.contains(&error) && errors.len() < 8 {
            errors.push(error);
        }
    }
}

impl ClientContext for ProbeContext {
    fn stats(&self, statistics: Statistics) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(statistics);
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        EventLog::global().log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note(format!("{error} ({reason})"));
        EventLog::global().error(&error, reason);
    }
}

impl ConsumerContext for ProbeContext {}

/// Throwaway group ids of probes differ per probe.
static PROBE_SEQ: AtomicU64 = AtomicU64::new(0);

/// How often the probe's client emits statistics.
const STATS_INTERVAL_MS: &str = "50";

/// Reads the watermarks of `topic`'s partitions (the keys of `starts`) from Fetch responses of a
/// fresh client that starts fetching each at its value in `starts` (so the answer costs no
/// ListOffsets round trip), within `timeout`.
pub fn fetch_watermarks(
    brokers: &str,
    topic: &str,
    starts: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<Watermarks, WatermarkError> {
    let seq = PROBE_SEQ.fetch_add(1, Ordering::Relaxed);
    let mut config = super::client_config(brokers);
    config
        // `assign` needs a group id; this one is never joined nor committed to.
        .set(
            "group.id",
            format!("velostream-watermarks-{}-{seq}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // A start offset out of range resets to the end; the Fetch answer that says so carries
        // the watermark already.
        .set("auto.offset.reset", "latest")
        .set("allow.auto.create.topics", "false")
        .set("statistics.interval.ms", STATS_INTERVAL_MS)
        .set("fetch.wait.max.ms", "100")
        // Only the watermark matters: fetch as little as the broker allows.
        .set("fetch.message.max.bytes", "65536")
        .set("fetch.max.bytes", "1048576")
        .set("queued.max.messages.kbytes", "1024");
    let probe: BaseConsumer<ProbeContext> = config
        .create_with_context(ProbeContext::default())
        .map_err(WatermarkError::Client)?;
    let mut tpl = TopicPartitionList::new();
    for (&p, &start) in starts {
        tpl.add_partition_offset(topic, p, Offset::Offset(start.max(0)))
            .map_err(WatermarkError::Client)?;
    }
    probe.assign(&tpl).map_err(WatermarkError::Client)?;
    let deadline = Instant::now() + timeout;
    loop {
        // Messages are only the vehicle of the watermark: drop them; errors are kept to say why
        // no watermark came, if none does.
        if let Some(Err(err)) = probe.poll(Duration::from_millis(20)) {
            probe.context().note(err.to_string());
        }
        let stats = probe.context().latest.lock().ok().and_then(|s| s.clone());
        let found = stats.as_ref().map(|s| read_stats(s, topic, starts));
        if let Some(Ok(found)) = found {
            // Closed here, on the caller's thread, rather than on a detached one: a librdkafka
            // handle still being destroyed while the process exits has crashed (SIGSEGV).
            drop(probe);
            return Ok(found);
        }
        if Instant::now() >= deadline {
            let missing = match found {
                Some(Err(missing)) => missing,
                _ => starts.keys().copied().collect(),
            };
            let errors = probe
                .context()
                .errors
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            drop(probe);
            return Err(WatermarkError::Timeout {
                missing,
                waited: timeout,
                errors,
            });
        }
    }
}

/// High and low watermarks from statistics once every partition has a high one, else the
/// partitions still without one.
fn read_stats(
    stats: &Statistics,
    topic: &str,
    starts: &BTreeMap<i32, i64>,
) -> Result<Watermarks, Vec<i32>> {
    let mut found = Watermarks::default();
    let mut missing = Vec::new();
    let parts = stats.topics.get(topic).map(|t| &t.partitions);
    for &p in starts.keys() {
        match parts.and_then(|parts| parts.get(&p)) {
            Some(part) if part.hi_offset >= 0 => {
                found.high.insert(p, part.hi_offset);
                found.low.insert(p, part.lo_offset.max(0));
            }
            _ => missing.push(p),
        }
    }
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(missing)
    }
}
