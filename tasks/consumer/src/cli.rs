//! Command-line flags (each with an environment fallback) of `velostream-consumer`, turned into
//! [`Settings`]. The orchestrator's DAGs pass these.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use velostream_common::clickhouse::{
    ClickHouseConfig, DATABASE_ENV, PASSWORD_ENV, URL_ENV, USER_ENV,
};
use velostream_common::kafka::{BROKERS_ENV, DEFAULT_BROKERS};

use crate::settings::{RecordFormat, Settings, SettingsError, TopicReset, parse_property};

/// Drains a Kafka consumer group of taxi rows (JSON or protobuf) into ClickHouse, in large batches, exactly
/// once as `SELECT count() FROM <table> FINAL` sees it. Stops cleanly on SIGTERM: flushes the
/// current batch, commits, exits 0.
#[derive(Debug, Parser)]
#[command(name = "velostream-consumer", version, about, long_about = None)]
pub struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = BROKERS_ENV, default_value = DEFAULT_BROKERS)]
    pub brokers: String,
    /// The topic to drain.
    #[arg(long, env = "VELOSTREAM_TOPIC", default_value = "taxi-trips")]
    pub topic: String,
    /// The consumer group.
    #[arg(long, env = "VELOSTREAM_GROUP", default_value = "velostream-consumer")]
    pub group: String,
    /// The ClickHouse table (created from infrastructure/clickhouse/taxi_trips.sql if missing).
    #[arg(long, env = "VELOSTREAM_TABLE", default_value = "taxi_trips")]
    pub table: String,
    /// Where bad records go, with the error and their source in headers [default: TOPIC.dead-letter].
    #[arg(long, env = "VELOSTREAM_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Flush a batch at this many messages (ClickHouse likes 100k and more).
    #[arg(long, env = "VELOSTREAM_BATCH_ROWS", default_value_t = 500_000)]
    pub batch_rows: usize,
    /// Flush a non-empty batch this many ms after its first message, once the previous insert is done.
    #[arg(long, env = "VELOSTREAM_BATCH_MS", default_value_t = 1000)]
    pub batch_ms: u64,
    /// Print the lag and rows/s series for the orchestrator's run page this often when stdout is
    /// not a terminal ("0s": never).
    #[arg(long, env = "VELOSTREAM_SERIES_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub series_interval: Duration,
    /// Serve /health (readiness) and /metrics (Prometheus) here; "off" to serve nothing.
    #[arg(long, env = "VELOSTREAM_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    pub http_addr: String,
    /// ClickHouse HTTP URL.
    #[arg(long, env = URL_ENV, default_value = "http://127.0.0.1:8123")]
    pub clickhouse_url: String,
    /// A sharded ClickHouse: every shard's HTTP URL, comma-separated, in the cluster's shard
    /// order (used instead of --clickhouse-url). Kafka partition p's rows and offset records go to
    /// shard p % N, by direct inserts into its local table. Keep the list's length and order for
    /// as long as the table has rows: the consumer refuses to start with a list that would move
    /// a partition to another shard.
    #[arg(
        long,
        env = "CLICKHOUSE_SHARDS",
        value_delimiter = ',',
        value_name = "URL,URL..."
    )]
    pub clickhouse_shards: Vec<String>,
    /// ClickHouse user.
    #[arg(long, env = USER_ENV, default_value = "velostream")]
    pub clickhouse_user: String,
    /// ClickHouse password.
    #[arg(long, env = PASSWORD_ENV, default_value = "velostream", hide_env_values = true)]
    pub clickhouse_password: String,
    /// ClickHouse database.
    #[arg(long, env = DATABASE_ENV, default_value = "default")]
    pub clickhouse_database: String,
    /// Group session timeout; the local broker admits a member after about half of it.
    #[arg(long, env = "VELOSTREAM_SESSION_TIMEOUT", default_value = "6s", value_parser = humantime::parse_duration)]
    pub session_timeout: Duration,
    /// Bound on librdkafka's prefetch queue, in KiB (part of the memory bound).
    #[arg(long, env = "VELOSTREAM_FETCH_QUEUE_KBYTES", default_value_t = 65_536)]
    pub fetch_queue_kbytes: u32,
    /// How long one insert may take before it is abandoned and retried.
    #[arg(long, env = "VELOSTREAM_INSERT_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub insert_timeout: Duration,
    /// Longest pause between retries while ClickHouse is down.
    #[arg(long, env = "VELOSTREAM_MAX_BACKOFF", default_value = "10s", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,
    /// After SIGTERM, how long flushing and committing may take before exiting non-zero.
    #[arg(long, env = "VELOSTREAM_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// On a rebalance, how long a revoked partition's rows may take to reach ClickHouse.
    #[arg(long, env = "VELOSTREAM_REVOKE_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub revoke_timeout: Duration,
    /// When ClickHouse's offset records do not fit the topic (an offset beyond a partition's end
    /// or before its start: the topic was recreated, or the broker lost its data): `fail` reads
    /// nothing and exits non-zero saying so; `start-over` loads the topic from its start as a new
    /// incarnation whose rows are stored with `_topic` = `TOPIC#N`, so they cannot collide with
    /// the old rows.
    #[arg(long, env = "VELOSTREAM_ON_TOPIC_RESET", value_enum, default_value_t = TopicReset::Fail)]
    pub on_topic_reset: TopicReset,
    /// The topic's record format: `json`, `protobuf` (a `TaxiTrip` of proto/taxi_trip.proto per
    /// record), or `auto`, which tells them apart per record by its first byte. A record that does
    /// not decode goes to the dead-letter topic with the reason.
    #[arg(long, env = "VELOSTREAM_FORMAT", value_enum, default_value_t = RecordFormat::Auto)]
    pub format: RecordFormat,
    /// Extra librdkafka consumer property, key=value (repeatable).
    #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
    pub consumer_properties: Vec<String>,
    /// Log as JSON lines (for log shippers).
    #[arg(long, env = "VELOSTREAM_LOG_JSON")]
    pub log_json: bool,
}

impl Args {
    /// The settings these flags describe.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        let clickhouse = ClickHouseConfig {
            url: self.clickhouse_url.clone(),
            user: self.clickhouse_user.clone(),
            password: self.clickhouse_password.clone(),
            database: self.clickhouse_database.clone(),
        };
        let mut s = Settings::new(&self.brokers, clickhouse, &self.topic, &self.group);
        s.shards = self.clickhouse_shards.clone();
        s.table = self.table.clone();
        if let Some(dlq) = &self.dead_letter_topic {
            s.dead_letter_topic = dlq.clone();
        }
        s.batch_rows = self.batch_rows;
        s.batch_time = Duration::from_millis(self.batch_ms);
        s.http_addr = match self.http_addr.as_str() {
            "off" | "" => None,
            addr => Some(
                addr.parse::<SocketAddr>()
                    .map_err(|_| SettingsError::BadAddr(addr.to_string()))?,
            ),
        };
        s.session_timeout = self.session_timeout;
        s.fetch_queue_kbytes = self.fetch_queue_kbytes;
        s.insert_timeout = self.insert_timeout;
        s.max_backoff = self.max_backoff;
        s.shutdown_grace = self.shutdown_grace;
        s.series_interval = self.series_interval;
        s.revoke_timeout = self.revoke_timeout;
        s.on_topic_reset = self.on_topic_reset;
        s.format = self.format;
        s.consumer_properties = self
            .consumer_properties
            .iter()
            .map(|p| parse_property(p))
            .collect::<Result<_, _>>()?;
        s.validate()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_settings() {
        let args = Args::try_parse_from([
            "velostream-consumer",
            "--topic",
            "trips",
            "--batch-rows",
            "1000",
            "--batch-ms",
            "250",
            "--http-addr",
            "127.0.0.1:0",
            "--consumer-property",
            "fetch.min.bytes=1",
        ])
        .unwrap();
        let s = args.settings().unwrap();
        assert_eq!(s.topic, "trips");
        assert_eq!(s.dead_letter_topic, "trips.dead-letter");
        assert_eq!(
            (s.batch_rows, s.batch_time),
            (1000, Duration::from_millis(250))
        );
        assert_eq!(s.http_addr.unwrap().ip().to_string(), "127.0.0.1");
        assert_eq!(
            s.consumer_properties,
            [("fetch.min.bytes".to_string(), "1".to_string())]
        );
        assert!(s.shards.is_empty());
        let args = Args::try_parse_from([
            "velostream-consumer",
            "--clickhouse-shards",
            "http://a:8123,http://b:8123",
        ])
        .unwrap();
        assert_eq!(
            args.settings().unwrap().shards,
            ["http://a:8123", "http://b:8123"]
        );
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let args = Args::try_parse_from(["velostream-consumer", "--http-addr", "nowhere"]).unwrap();
        assert!(args.settings().unwrap_err().to_string().contains("nowhere"));
        let args = Args::try_parse_from(["velostream-consumer", "--table", "a.b"]).unwrap();
        assert!(args.settings().unwrap_err().to_string().contains("a.b"));
    }
}
