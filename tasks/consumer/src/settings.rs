//! What a consumer run needs to know, validated: endpoints, names, batching, limits. The binary
//! builds it from flags and environment (`cli`); tests and the bench build it directly.

use std::net::SocketAddr;
use std::time::Duration;

use velostream_common::clickhouse::ClickHouseConfig;

pub use crate::record::RecordFormat;

/// The consumer's memory beside its prefetch queue and batches, rounded up: 85 MiB measured with
/// a 1 MiB queue and 10,000-row batches (ARCHITECTURE.md, "Backpressure and the memory bound").
pub const BASE_MEMORY_BYTES: u64 = 128 << 20;

/// Settings of one consumer process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Where ClickHouse is.
    pub clickhouse: ClickHouseConfig,
    /// A sharded ClickHouse: every shard's HTTP URL, in shard order (partition `p`'s rows and
    /// offset records go to shard `p % len`), with `clickhouse`'s user, password and database.
    /// Empty: the one server of `clickhouse`.
    pub shards: Vec<String>,
    /// The topic to drain.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// The target table (created from `infrastructure/clickhouse/taxi_trips.sql` if missing).
    pub table: String,
    /// Where bad records go.
    pub dead_letter_topic: String,
    /// Flush a batch at this many messages.
    pub batch_rows: usize,
    /// Flush a non-empty batch this long after its first message, if the previous insert is done.
    pub batch_time: Duration,
    /// `/health` and `/metrics`; `None` serves nothing.
    pub http_addr: Option<SocketAddr>,
    /// The group session timeout (`session.timeout.ms`). The local broker lets a member join
    /// only after about half of it, so keep it short.
    pub session_timeout: Duration,
    /// librdkafka's bound on prefetched messages (`queued.max.messages.kbytes`).
    pub fetch_queue_kbytes: u32,
    /// How long one insert may take before it is abandoned and retried.
    pub insert_timeout: Duration,
    /// Longest pause between retries of a failed insert.
    pub max_backoff: Duration,
    /// After SIGTERM: how long flushing and committing may take before the process gives up.
    pub shutdown_grace: Duration,
    /// How often the lag and rows/s series go to stdout for the orchestrator (zero: never).
    pub series_interval: Duration,
    /// How long a revoked partition's last rows may take to reach ClickHouse before the
    /// rebalance goes on without them (the next owner then reads them again; FINAL dedups).
    pub revoke_timeout: Duration,
    /// Extra librdkafka consumer properties.
    pub consumer_properties: Vec<(String, String)>,
    /// What to do when the topic no longer holds what ClickHouse's offset records say was read
    /// from it (recreated under the same name, or emptied by a broker that lost its data).
    pub on_topic_reset: TopicReset,
    /// The topic's record format: JSON, protobuf, or either told apart per record.
    pub format: RecordFormat,
}

/// What the consumer does when ClickHouse's offset records do not fit the topic: a record beyond a
/// partition's high watermark or before its log start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TopicReset {
    /// Read nothing and exit non-zero with an error naming the topic, the partitions, the
    /// recorded and the actual offsets, and what to do.
    #[default]
    Fail,
    /// Start a new incarnation of the topic: read every partition from its start, storing rows
    /// with `_topic` = `TOPIC#N` (N = 2, 3...), which no Kafka topic name can equal ('#' is not
    /// allowed in one), so their identities cannot collide with the old incarnation's rows. Only
    /// before the first row is read; a reset noticed while running still stops the consumer.
    StartOver,
}

/// Settings that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A table name ClickHouse would need quoting for.
    #[error("table name {0:?} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")]
    BadTable(String),
    /// An empty name.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A zero batch size.
    #[error("--batch-rows must be at least 1")]
    ZeroBatch,
    /// The dead-letter topic is the source topic: bad records would come back forever.
    #[error("the dead-letter topic must differ from the source topic {0:?}")]
    DeadLetterLoop(String),
    /// An address that does not parse.
    #[error("--http-addr {0:?} is not host:port (e.g. 127.0.0.1:9464) or \"off\"")]
    BadAddr(String),
    /// A shard list with an empty or repeated URL.
    #[error("--clickhouse-shards {0:?}: every shard needs a URL of its own")]
    BadShards(String),
    /// A `key=value` property without `=`.
    #[error("consumer property {0:?} is not key=value")]
    BadProperty(String),
}

/// Whether `name` is a plain ClickHouse identifier.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `key=value`.
pub fn parse_property(text: &str) -> Result<(String, String), SettingsError> {
    text.split_once('=')
        .filter(|(k, _)| !k.trim().is_empty())
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| SettingsError::BadProperty(text.to_string()))
}

impl Settings {
    /// Defaults for everything but the names, which the caller sets.
    pub fn new(brokers: &str, clickhouse: ClickHouseConfig, topic: &str, group: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            clickhouse,
            shards: Vec::new(),
            topic: topic.to_string(),
            group: group.to_string(),
            table: "taxi_trips".into(),
            dead_letter_topic: format!("{topic}.dead-letter"),
            batch_rows: 500_000,
            batch_time: Duration::from_millis(1000),
            http_addr: None,
            session_timeout: Duration::from_millis(6000),
            fetch_queue_kbytes: 65_536,
            insert_timeout: Duration::from_secs(120),
            max_backoff: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(25),
            series_interval: Duration::from_secs(1),
            revoke_timeout: Duration::from_secs(15),
            consumer_properties: Vec::new(),
            on_topic_reset: TopicReset::Fail,
            format: RecordFormat::Auto,
        }
    }

    /// Checks what can be checked without a server.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (what, value) in [
            ("--topic", &self.topic),
            ("--group", &self.group),
            ("--dead-letter-topic", &self.dead_letter_topic),
            ("KAFKA_BROKERS", &self.brokers),
        ] {
            if value.trim().is_empty() {
                return Err(SettingsError::Empty(what));
            }
        }
        if !is_identifier(&self.table) {
            return Err(SettingsError::BadTable(self.table.clone()));
        }
        if self.batch_rows == 0 {
            return Err(SettingsError::ZeroBatch);
        }
        if self.dead_letter_topic == self.topic {
            return Err(SettingsError::DeadLetterLoop(self.topic.clone()));
        }
        let mut urls: Vec<&str> = self.shards.iter().map(|u| u.trim()).collect();
        urls.sort_unstable();
        urls.dedup();
        if urls.len() != self.shards.len() || urls.iter().any(|u| u.is_empty()) {
            return Err(SettingsError::BadShards(self.shards.join(",")));
        }
        Ok(())
    }

    /// The ClickHouse servers, in shard order: each of [`Settings::shards`] with the connection
    /// settings of [`Settings::clickhouse`], or that one server when unsharded.
    pub fn clickhouse_servers(&self) -> Vec<ClickHouseConfig> {
        if self.shards.is_empty() {
            return vec![self.clickhouse.clone()];
        }
        self.shards
            .iter()
            .map(|url| ClickHouseConfig {
                url: url.trim().to_string(),
                ..self.clickhouse.clone()
            })
            .collect()
    }

    /// The most memory the consumer holds (its peak RSS), as stated in ARCHITECTURE.md and
    /// measured by `consumer-bench` under a backlog and a frozen ClickHouse:
    ///
    /// - [`BASE_MEMORY_BYTES`]: the process, librdkafka's threads and the fetch responses it is
    ///   receiving, the dead-letter producer, the 8,192 messages being decoded;
    /// - librdkafka's prefetch queue, twice `fetch_queue_kbytes`: librdkafka counts message
    ///   payloads against it and keeps about as much again per message of its own (~340 bytes
    ///   per ~420-byte TLC message);
    /// - three batches of encoded rows ([`crate::batch::BYTES_PER_ROW`] each): one being
    ///   inserted, one filling, and what the allocator keeps of the blocks left behind as their
    ///   buffers grew.
    pub fn memory_bound_bytes(&self) -> u64 {
        BASE_MEMORY_BYTES
            + 2 * u64::from(self.fetch_queue_kbytes) * 1024
            + 3 * self.batch_rows as u64 * crate::batch::BYTES_PER_ROW as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_properties() {
        assert!(is_identifier("taxi_trips") && is_identifier("_t1"));
        assert!(!is_identifier("1t") && !is_identifier("t-1") && !is_identifier("db.t"));
        assert!(!is_identifier("") && !is_identifier("t; DROP TABLE x"));
        assert_eq!(
            parse_property("fetch.min.bytes=1").unwrap(),
            ("fetch.min.bytes".into(), "1".into())
        );
        assert!(parse_property("nonsense").is_err() && parse_property("=1").is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = Settings::new("b:1", ClickHouseConfig::default(), "taxi", "g");
        ok.validate().unwrap();
        let mut s = ok.clone();
        s.table = "bad-name".into();
        assert!(s.validate().unwrap_err().to_string().contains("bad-name"));
        let mut s = ok.clone();
        s.dead_letter_topic = "taxi".into();
        assert!(matches!(
            s.validate(),
            Err(SettingsError::DeadLetterLoop(_))
        ));
        let mut s = ok.clone();
        s.batch_rows = 0;
        assert!(matches!(s.validate(), Err(SettingsError::ZeroBatch)));
        let mut s = ok.clone();
        s.shards = vec!["http://a:8123".into(), " http://a:8123".into()];
        assert!(matches!(s.validate(), Err(SettingsError::BadShards(_))));
        s.shards = vec!["http://a:8123".into(), "http://b:8123".into()];
        s.validate().unwrap();
        let urls: Vec<String> = s.clickhouse_servers().into_iter().map(|c| c.url).collect();
        assert_eq!(urls, ["http://a:8123", "http://b:8123"]);
        assert_eq!(
            ok.clickhouse_servers(),
            std::slice::from_ref(&ok.clickhouse)
        );
    }
}
