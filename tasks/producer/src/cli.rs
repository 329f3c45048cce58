//! Command-line interface: flags with environment fallbacks, parsed by clap, then turned into the
//! library's configurations in a second step ([`ProduceArgs::config`]) that validates what clap
//! cannot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::encode::{EncodeOptions, RecordFormat};
use crate::generate::{FileCompression, GenerateConfig, Layout};
use crate::input::SchemaCheck;
use crate::kafka::{Compression, DeliveryConfig};
use crate::pipeline::ProduceConfig;
use crate::report::ProgressMode;

/// Streams Parquet rows into a Kafka topic, one JSON object (or protobuf message) per row.
///
/// Each message is one row: keys are the Parquet column names exactly as in the file, timestamps
/// are UTC strings `YYYY-MM-DD HH:MM:SS[.ffffff]`, nulls are null. With `--format protobuf` each
/// message is a `TaxiTrip` of proto/taxi_trip.proto instead (timestamps in whole seconds). Messages are keyed by the
/// value of one column (`--key-column`, PULocationID by default), so all trips from one pickup
/// zone land in one partition in file order.
///
/// Every input is checked before anything is sent. The run ends once every message is
/// acknowledged; it prints `::velostream:: {"output": {"rows": N, ...}}` on stdout.
///
/// Exit codes: 0 all rows delivered; 1 nothing sent (bad input, broker unreachable, missing
/// topic) or a file failed while being read; 2 bad command line; 3 some rows failed (count in the
/// output line and on stderr); 4 stopped by a signal; 5 the broker acknowledged rows the topic
/// does not hold (it grew by less than was acknowledged: a broker that lost acknowledged messages).
#[derive(Debug, Parser)]
#[command(
    name = "velostream-producer",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// What to do; producing is the default.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Producing options (when no subcommand is given).
    #[command(flatten)]
    pub produce: Option<ProduceArgs>,
}

impl Cli {
    /// Parses the process's command line (see [`Cli::parse_args`]).
    pub fn parse_env() -> Self {
        Self::parse_args(std::env::args_os())
    }

    /// Parses a command line. A subcommand is parsed on its own: producing options can come from
    /// the environment (the orchestrator passes `KAFKA_BROKERS`), and clap would count them as
    /// given and then require the other producing arguments of `velostream-producer fetch` too.
    pub fn parse_args<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let first = args.get(1).and_then(|a| a.to_str()).unwrap_or_default();
        if <Command as clap::Subcommand>::has_subcommand(first) {
            let sub = SubcommandOnly::parse_from(args);
            return Self {
                command: Some(sub.command),
                produce: None,
            };
        }
        Self::parse_from(args)
    }
}

/// A command line that starts with a subcommand.
#[derive(Debug, Parser)]
#[command(name = "velostream-producer", version)]
struct SubcommandOnly {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream Parquet rows into a topic (the default).
    Produce(Box<ProduceArgs>),
    /// Write synthetic taxi-trip Parquet of any size, for benchmarks.
    Generate(GenerateArgs),
    /// Check inputs and print their files, rows and schemas, without sending anything.
    Inspect(InspectArgs),
    /// Download NYC TLC yellow-taxi months into a cache (resumed, checked, fetched only once).
    Fetch(FetchArgs),
}

/// Options of a producing run.
#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    /// Parquet files, directories (their *.parquet files) or globs (quote them).
    #[arg(env = "VELOSTREAM_INPUT", value_delimiter = ',', required = true)]
    pub inputs: Vec<String>,

    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = velostream_common::kafka::DEFAULT_BROKERS)]
    pub brokers: String,

    /// Destination topic.
    #[arg(long, env = "VELOSTREAM_TOPIC")]
    pub topic: String,

    /// Create the topic when it does not exist (with --partitions partitions).
    #[arg(long, env = "VELOSTREAM_CREATE_TOPIC")]
    pub create_topic: bool,

    /// Partitions of a topic created by --create-topic.
    #[arg(long, default_value_t = 6, env = "VELOSTREAM_PARTITIONS")]
    pub partitions: i32,

    /// Replication factor of a topic created by --create-topic.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,

    /// Record format of the messages: `json` (one object per row, any columns) or `protobuf`
    /// (one `TaxiTrip` message of proto/taxi_trip.proto per row, the taxi trip layout only;
    /// ClickHouse reads it natively as `ProtobufSingle`).
    #[arg(long, value_enum, default_value_t = RecordFormat::Json, env = "VELOSTREAM_FORMAT")]
    pub format: RecordFormat,

    /// Column whose value keys each message (matched ignoring case; null values send no key).
    #[arg(long, default_value = "PULocationID", env = "VELOSTREAM_KEY_COLUMN")]
    pub key_column: String,

    /// Send messages without a key (spread over partitions by librdkafka's sticky partitioner).
    #[arg(long, conflicts_with = "key_column")]
    pub no_key: bool,

    /// Which schema inputs must have: the TLC yellow-taxi columns, or anything.
    #[arg(long, value_enum, default_value_t = SchemaCheck::Taxi, env = "VELOSTREAM_SCHEMA")]
    pub schema: SchemaCheck,

    /// Passes over the inputs (to produce large volumes from a sample).
    #[arg(long, default_value_t = 1, env = "VELOSTREAM_REPEAT")]
    pub repeat: u64,

    /// Stop after this many rows (0: no limit).
    #[arg(long, env = "VELOSTREAM_LIMIT")]
    pub limit: Option<u64>,

    /// Pass k (from 0) moves every timestamp by k times this, so rows of different passes
    /// differ; 0s sends exact copies.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub repeat_shift: Duration,

    /// Rows per decoded Parquet record batch.
    #[arg(long, default_value_t = 65_536)]
    pub read_batch_rows: usize,

    /// With --repeat, decode each file once and keep it in memory when the inputs' uncompressed
    /// size is at most this many MiB (0: decode on every pass).
    #[arg(long, default_value_t = 512)]
    pub cache_mib: u64,

    /// Compression of message batches.
    #[arg(long, value_enum, default_value_t = Compression::Lz4, env = "VELOSTREAM_COMPRESSION")]
    pub compression: Compression,

    /// How long a batch may wait to fill (linger.ms).
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration, env = "VELOSTREAM_LINGER")]
    pub linger: Duration,

    /// Maximum bytes per partition batch (batch.size).
    #[arg(long, default_value_t = 1_000_000, env = "VELOSTREAM_BATCH_BYTES")]
    pub batch_bytes: u64,

    /// Maximum messages per partition batch (batch.num.messages).
    #[arg(long, default_value_t = 10_000, env = "VELOSTREAM_BATCH_MESSAGES")]
    pub batch_messages: u64,

    /// Acknowledgements to wait for: all, 1 or 0 (1 and 0 need --no-idempotence).
    #[arg(long, default_value = "all", value_parser = ["all", "-1", "1", "0"])]
    pub acks: String,

    /// Turn the idempotent producer off (it is on by default).
    #[arg(long)]
    pub no_idempotence: bool,

    /// How long one message may take to be acknowledged, retries included (message.timeout.ms).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub message_timeout: Duration,

    /// How long to wait for the brokers when starting.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// A librdkafka producer property, applied last (repeatable): `--producer-property
    /// queue.buffering.max.kbytes=2097152`.
    #[arg(long = "producer-property", value_name = "KEY=VALUE", value_parser = parse_property,
          env = "VELOSTREAM_PRODUCER_PROPERTIES", value_delimiter = ',')]
    pub producer_properties: Vec<(String, String)>,

    /// Progress display: a bar on a terminal, `::velostream::` progress lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto, env = "VELOSTREAM_PROGRESS")]
    pub progress: ProgressMode,

    /// Serve Prometheus metrics on this address (`/metrics`), e.g. 127.0.0.1:9464.
    #[arg(long, env = "VELOSTREAM_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// A flag combination clap cannot rule out.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// Idempotence needs all acknowledgements.
    #[error("--acks {0} needs --no-idempotence (an idempotent producer requires acks=all)")]
    AcksWithIdempotence(String),
    /// Zero passes or partitions.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl ProduceArgs {
    /// The library configuration, after checks clap cannot make.
    pub fn config(&self) -> Result<ProduceConfig, ArgsError> {
        let idempotence = !self.no_idempotence;
        if idempotence && !matches!(self.acks.as_str(), "all" | "-1") {
            return Err(ArgsError::AcksWithIdempotence(self.acks.clone()));
        }
        if self.repeat == 0 {
            return Err(ArgsError::Zero("--repeat"));
        }
        if self.read_batch_rows == 0 {
            return Err(ArgsError::Zero("--read-batch-rows"));
        }
        if self.create_topic && self.partitions < 1 {
            return Err(ArgsError::Zero("--partitions"));
        }
        let mut delivery = DeliveryConfig::new(&self.brokers, &self.topic);
        delivery.idempotence = idempotence;
        delivery.acks = self.acks.clone();
        delivery.compression = self.compression;
        delivery.linger = self.linger;
        delivery.batch_bytes = self.batch_bytes;
        delivery.batch_messages = self.batch_messages;
        delivery.message_timeout = self.message_timeout;
        delivery.connect_timeout = self.connect_timeout;
        delivery.create_partitions = self.create_topic.then_some(self.partitions);
        delivery.replication = self.replication_factor;
        delivery.properties = self.producer_properties.clone();
        Ok(ProduceConfig {
            inputs: self.inputs.clone(),
            schema: self.schema,
            encode: EncodeOptions {
                key_column: (!self.no_key).then(|| self.key_column.clone()),
                time_shift_secs: 0,
                format: self.format,
            },
            repeat: self.repeat,
            limit: self.limit.filter(|&n| n > 0),
            repeat_shift: self.repeat_shift,
            read_batch_rows: self.read_batch_rows,
            cache_bytes: self.cache_mib.saturating_mul(1 << 20),
            delivery,
        })
    }
}

/// Options of `generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// File to write.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Rows to write.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Which year's column layout to use.
    #[arg(long, value_enum, default_value = "2023")]
    pub layout: Layout,
    /// Random seed (same seed, same file).
    #[arg(long, default_value_t = 2023)]
    pub seed: u64,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 1_048_576)]
    pub row_group_rows: usize,
    /// Parquet compression.
    #[arg(long, value_enum, default_value_t = FileCompression::Snappy)]
    pub compression: FileCompression,
}

impl GenerateArgs {
    /// The library configuration.
    pub fn config(&self) -> GenerateConfig {
        GenerateConfig {
            rows: self.rows,
            layout: self.layout,
            seed: self.seed,
            row_group_rows: self.row_group_rows,
            compression: self.compression,
        }
    }
}

/// Options of `inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// Parquet files, directories or globs.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Which schema inputs must have.
    #[arg(long, value_enum, default_value_t = SchemaCheck::Taxi)]
    pub schema: SchemaCheck,
}

/// `velostream-producer fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Months: `2023-01`, `2023-01..2024-02` (both included), or a comma-separated list.
    pub months: String,
    /// Where the trip-record files are published; each month is `<URL>/yellow_tripdata_YYYY-MM.parquet`.
    #[arg(long, env = "VELOSTREAM_TLC_BASE_URL", default_value = crate::fetch::DEFAULT_BASE_URL)]
    pub base_url: String,
    /// The cache directory (created if missing).
    #[arg(long, env = "VELOSTREAM_TLC_CACHE", default_value = ".velostream/tlc")]
    pub cache_dir: PathBuf,
    /// Also link the requested months into this directory (its other *.parquet files removed
    /// first), to give one producer run exactly these months as input.
    #[arg(long, value_name = "DIR")]
    pub into: Option<PathBuf>,
    /// Downloads at once.
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,
    /// Attempts per file; each one after a cut connection resumes where the last stopped.
    #[arg(long, default_value_t = 5)]
    pub attempts: usize,
    /// Time limit to connect, and between two pieces of a download.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Progress display: a bar per file on a terminal, `::velostream::` lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("velostream-producer").chain(args.iter().copied()))
    }

    #[test]
    fn produce_is_the_default_command() {
        let cli = parse(&[
            "--topic",
            "t",
            "a.parquet",
            "--repeat",
            "3",
            "--producer-property",
            "linger.ms=5",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let config = cli.produce.unwrap().config().unwrap();
        assert_eq!(config.inputs, ["a.parquet"]);
        assert_eq!(config.repeat, 3);
        assert_eq!(config.encode.key_column.as_deref(), Some("PULocationID"));
        assert_eq!(
            config.delivery.properties,
            [("linger.ms".to_string(), "5".to_string())]
        );
        let rd = config.delivery.client_config();
        assert_eq!(rd.get("enable.idempotence"), Some("true"));
        assert_eq!(rd.get("acks"), Some("all"));
        assert_eq!(rd.get("compression.type"), Some("lz4"));
        assert_eq!(rd.get("linger.ms"), Some("5"), "passthrough wins");
    }

    #[test]
    fn subcommands_parse() {
        let cli = parse(&[
            "generate",
            "-o",
            "x.parquet",
            "--rows",
            "10",
            "--layout",
            "2025",
        ])
        .unwrap();
        let Some(Command::Generate(g)) = cli.command else {
            panic!("not generate")
        };
        assert_eq!(g.config().layout, Layout::Y2025);
        let cli = parse(&[
            "produce",
            "--topic",
            "t",
            "--no-key",
            "--compression",
            "zstd",
            "d/",
        ])
        .unwrap();
        let Some(Command::Produce(p)) = cli.command else {
            panic!("not produce")
        };
        let config = p.config().unwrap();
        assert_eq!(config.encode.key_column, None);
        assert_eq!(
            config.delivery.client_config().get("compression.type"),
            Some("zstd")
        );
    }

    #[test]
    fn bad_combinations_are_refused() {
        let cli = parse(&["--topic", "t", "--acks", "1", "a"]).unwrap();
        assert_eq!(
            cli.produce.unwrap().config().unwrap_err().to_string(),
            "--acks 1 needs --no-idempotence (an idempotent producer requires acks=all)"
        );
        assert!(parse(&["--topic", "t", "--producer-property", "novalue", "a"]).is_err());
        assert!(
            parse(&["--topic", "t", "--repeat", "0", "a"])
                .unwrap()
                .produce
                .unwrap()
                .config()
                .is_err()
        );
    }
}
