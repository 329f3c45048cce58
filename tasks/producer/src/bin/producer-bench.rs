//! `producer-bench`: how fast the producer is, against baselines measured in the same run.
//!
//! ```text
//! cargo run --release -p velostream-producer --bin producer-bench -- --rows 10000000
//! ```
//!
//! Phases (each broker phase gets a fresh broker from the test harness unless `--brokers` is
//! given, because the local broker keeps every message in memory):
//! 1. decode only: Parquet -> Arrow record batches, one thread, no broker;
//! 2. encode only: Arrow -> JSON rows from batches already in memory;
//! 3. decode + encode as the pipeline's reader thread does it, chunks discarded;
//! 4. baseline A: a plain rdkafka flood of 200-byte messages (the issue's reference);
//! 5. baseline B: a plain rdkafka flood of the very messages we send (the sample's rows as JSON,
//!    encoded before timing starts, same keys);
//! 6. ours: the real pipeline, the sample repeated to `--rows`;
//! 7. the same three in the protobuf record format (`encodepb`, `floodpb`, `ourspb`): encode
//!    only, a plain flood of the sample's rows as `TaxiTrip` messages, and the pipeline with
//!    `--format protobuf`. Their names start with `protobuf`.
//!
//! Both floods and ours use the same producer settings (idempotent, acks=all, lz4 unless told
//! otherwise). Prints rows/s and MB/s of each, and our ratio to the baselines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use velostream_producer::encode::{EncodeOptions, EncodedRows, Encoder, RecordFormat};
use velostream_producer::input::{self, SchemaCheck};
use velostream_producer::kafka::{Compression, DeliveryConfig};
use velostream_producer::pipeline::{self, ProduceConfig, Reader};
use velostream_producer::stats::Stats;

/// Measures the producer against a plain rdkafka flood on the local broker.
#[derive(Debug, Parser)]
struct Args {
    /// Rows (messages) per phase.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Parquet file to repeat (default: the NYC taxi sample).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Use this broker instead of starting a fresh one per phase.
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Partitions of each phase's topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Compression of message batches.
    #[arg(long, value_enum, default_value_t = Compression::Lz4)]
    compression: Compression,
    /// linger.ms of our phases (default: the producer's).
    #[arg(long, value_parser = humantime::parse_duration)]
    linger: Option<Duration>,
    /// batch.num.messages of our phases (default: the producer's).
    #[arg(long)]
    batch_messages: Option<u64>,
    /// batch.size (bytes) of our phases (default: the producer's).
    #[arg(long)]
    batch_bytes: Option<u64>,
    /// Extra librdkafka properties for all phases (KEY=VALUE, repeatable).
    #[arg(long = "producer-property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Size of the reference flood's messages.
    #[arg(long, default_value_t = 200)]
    flood_bytes: usize,
    /// Only the phases without a broker (decode, encode).
    #[arg(long)]
    no_broker: bool,
    /// Run only these phases (decode, encode, read, flood200, flood, floodtuned, ours, encodepb,
    /// floodpb, ourspb); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Rounds of the broker phases (alternating); medians are compared.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Also write the figures to this file as JSON (velostream-bench reads it).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

/// A message of a flood: key and payload.
type Message = (Option<Vec<u8>>, Vec<u8>);

/// One measured phase.
struct Figure {
    name: &'static str,
    rows: u64,
    bytes: u64,
    seconds: f64,
    /// CPU seconds of this process during the phase (other processes share the machine).
    cpu_seconds: f64,
}

/// CPU time of this process so far (all threads).
fn process_cpu_seconds() -> f64 {
    velostream_common::process::own_cpu_seconds()
}

impl Figure {
    fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.seconds
    }

    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }

    fn print(&self) {
        println!(
            "{:<34} {:>10} rows {:>7.2} s {:>10.0} rows/s {:>7.1} MB/s   cpu {:>6.2} s ({:>9.0} rows per cpu-s)",
            self.name,
            self.rows,
            self.seconds,
            self.rows_per_sec(),
            self.mb_per_sec(),
            self.cpu_seconds,
            self.rows as f64 / self.cpu_seconds.max(0.01),
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let path = args
        .file
        .clone()
        .unwrap_or_else(velostream_testkit::taxi_sample);
    let key = EncodeOptions {
        key_column: Some("PULocationID".into()),
        time_shift_secs: 0,
        format: RecordFormat::Json,
    };
    let key_pb = EncodeOptions {
        format: RecordFormat::Protobuf,
        ..key.clone()
    };
    let file = input::open(&path, SchemaCheck::Any, &key)
        .with_context(|| format!("opening {}", path.display()))?;
    let want = |phase: &str| args.only.is_empty() || args.only.iter().any(|p| p == phase);
    println!(
        "producer-bench: {} ({} rows/pass), {} rows per phase, {} partitions, {:?}, our linger {:?}",
        path.display(),
        file.rows,
        args.rows,
        args.partitions,
        args.compression,
        args.linger.unwrap_or(DeliveryConfig::new("", "").linger)
    );
    let mut figures = Vec::new();

    if want("decode") {
        figures.push(timed_cpu(|| decode_only(&file, args.rows))?);
        figures.last().map(Figure::print);
    }
    if want("encode") {
        figures.push(timed_cpu(|| encode_only(&file, &key, args.rows))?);
        figures.last().map(Figure::print);
    }
    if want("encodepb") {
        figures.push(timed_cpu(|| encode_only(&file, &key_pb, args.rows))?);
        figures.last().map(Figure::print);
    }
    if want("read") {
        figures.push(timed_cpu(|| Ok(decode_and_encode(&file, &key, args.rows)))?);
        figures.last().map(Figure::print);
    }
    if !args.no_broker {
        // Broker phases alternate over the rounds, so that load from elsewhere on the machine
        // hits baselines and ours alike; medians are compared.
        let flood200 = vec![(None, vec![b'x'; args.flood_bytes])];
        let ours_messages = if want("flood") || want("floodtuned") {
            encode_sample(&file, &key)?
        } else {
            Vec::new()
        };
        let protobuf_messages = if want("floodpb") {
            encode_sample(&file, &key_pb)?
        } else {
            Vec::new()
        };
        for round in 1..=args.rounds {
            println!("round {round} of {}", args.rounds);
            if want("flood200") {
                let fig = with_broker(&args, "flood200", Settings::Plain, |config| {
                    flood(
                        config,
                        &flood200,
                        args.rows,
                        "baseline A: plain flood, 200 B",
                    )
                })?;
                fig.print();
                figures.push(fig);
            }
            if want("flood") {
                let fig = with_broker(&args, "flood", Settings::Plain, |config| {
                    flood(
                        config,
                        &ours_messages,
                        args.rows,
                        "baseline B: plain flood, ours",
                    )
                })?;
                fig.print();
                figures.push(fig);
            }
            if want("floodtuned") {
                let fig = with_broker(&args, "floodtuned", Settings::Ours, |config| {
                    flood(
                        config,
                        &ours_messages,
                        args.rows,
                        "baseline C: tuned flood, ours",
                    )
                })?;
                fig.print();
                figures.push(fig);
            }
            if want("ours") {
                let fig = with_broker(&args, "ours", Settings::Ours, |config| {
                    ours(config, &path, file.rows, args.rows, RecordFormat::Json)
                })?;
                fig.print();
                figures.push(fig);
            }
            if want("floodpb") {
                let fig = with_broker(&args, "floodpb", Settings::Plain, |config| {
                    flood(
                        config,
                        &protobuf_messages,
                        args.rows,
                        "protobuf baseline B: plain flood",
                    )
                })?;
                fig.print();
                figures.push(fig);
            }
            if want("ourspb") {
                let fig = with_broker(&args, "ourspb", Settings::Ours, |config| {
                    ours(config, &path, file.rows, args.rows, RecordFormat::Protobuf)
                })?;
                fig.print();
                figures.push(fig);
            }
        }
    }

    let medians: Vec<(&str, f64, f64)> = [
        "baseline A",
        "baseline B",
        "baseline C",
        "ours",
        "protobuf baseline B",
        "protobuf ours",
    ]
    .into_iter()
    .filter_map(|name| median(&figures, name).map(|(rows, mb)| (name, rows, mb)))
    .collect();
    if args.rounds > 1 && !medians.is_empty() {
        println!("medians over {} rounds:", args.rounds);
        for (name, rows, mb) in &medians {
            println!("  {name:<12} {rows:>10.0} rows/s {mb:>7.1} MB/s");
        }
    }
    if let Some((ours_rows, ours_mb)) = median(&figures, "ours") {
        for base in ["baseline A", "baseline B", "baseline C"] {
            if let Some((rows, mb)) = median(&figures, base) {
                println!(
                    "ours / {base}: {:.1}% of rows/s, {:.1}% of MB/s",
                    100.0 * ours_rows / rows,
                    100.0 * ours_mb / mb
                );
            }
        }
    }
    if let (Some((pb, _)), Some((json, _))) =
        (median(&figures, "protobuf ours"), median(&figures, "ours"))
    {
        println!("ours protobuf / ours JSON: {:.2}x rows/s", pb / json);
        if let Some((flood, _)) = median(&figures, "protobuf baseline B") {
            println!(
                "ours protobuf / protobuf baseline B: {:.1}% of rows/s",
                100.0 * pb / flood
            );
        }
    }
    if let Some(path) = &args.json {
        write_json(path, file.rows, &figures)?;
    }
    Ok(())
}

/// The figures as JSON: `{"rows_per_pass": n, "phases": [{"name", "rows", "bytes", "seconds",
/// "cpu_seconds", "rows_per_sec", "mb_per_sec"}]}`.
fn write_json(
    path: &std::path::Path,
    rows_per_pass: u64,
    figures: &[Figure],
) -> anyhow::Result<()> {
    let phases: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name,
                "rows": f.rows,
                "bytes": f.bytes,
                "seconds": f.seconds,
                "cpu_seconds": f.cpu_seconds,
                "rows_per_sec": f.rows_per_sec(),
                "mb_per_sec": f.mb_per_sec(),
            })
        })
        .collect();
    let doc = serde_json::json!({ "rows_per_pass": rows_per_pass, "phases": phases });
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The median rows/s and MB/s of the phases whose name starts with `name`.
fn median(figures: &[Figure], name: &str) -> Option<(f64, f64)> {
    let mut runs: Vec<&Figure> = figures
        .iter()
        .filter(|f| f.name.starts_with(name))
        .collect();
    if runs.is_empty() {
        return None;
    }
    runs.sort_by(|a, b| a.rows_per_sec().total_cmp(&b.rows_per_sec()));
    let m = runs[runs.len() / 2];
    Some((m.rows_per_sec(), m.mb_per_sec()))
}

/// Runs `phase` against `--brokers`, or a fresh broker started for it, on a fresh topic.
fn with_broker(
    args: &Args,
    name: &str,
    settings: Settings,
    phase: impl FnOnce(&DeliveryConfig) -> anyhow::Result<Figure>,
) -> anyhow::Result<Figure> {
    let broker = args
        .brokers
        .is_none()
        .then(velostream_testkit::Kafka::start);
    let brokers = args
        .brokers
        .clone()
        .or_else(|| broker.as_ref().map(|b| b.bootstrap.clone()))
        .unwrap_or_default();
    let topic = format!(
        "bench-{name}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let mut config = DeliveryConfig::new(brokers, topic);
    config.compression = args.compression;
    config.create_partitions = Some(args.partitions);
    config.message_timeout = Duration::from_secs(120);
    match settings {
        Settings::Plain => {
            // librdkafka's own defaults for everything but acks, idempotence and compression.
            config.properties = PLAIN_DEFAULTS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
        Settings::Ours => {
            config.linger = args.linger.unwrap_or(config.linger);
            config.batch_messages = args.batch_messages.unwrap_or(config.batch_messages);
            config.batch_bytes = args.batch_bytes.unwrap_or(config.batch_bytes);
        }
    }
    config.properties.extend(args.properties.iter().cloned());
    velostream_producer::kafka::ensure_topic(&config)?;
    let figure = timed_cpu(|| phase(&config));
    drop(broker);
    figure
}

/// Which producer settings a phase uses.
#[derive(Debug, Clone, Copy)]
enum Settings {
    /// A plain rdkafka producer: acks=all, idempotent, the chosen compression, all else default.
    Plain,
    /// velostream-producer's settings.
    Ours,
}

/// librdkafka's defaults of the settings velostream-producer changes.
const PLAIN_DEFAULTS: &[(&str, &str)] = &[
    ("linger.ms", "5"),
    ("batch.size", "1000000"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "100000"),
    ("queue.buffering.max.kbytes", "1048576"),
];

/// Runs a phase and records this process's CPU time during it.
fn timed_cpu(phase: impl FnOnce() -> anyhow::Result<Figure>) -> anyhow::Result<Figure> {
    let before = process_cpu_seconds();
    let mut figure = phase()?;
    figure.cpu_seconds = process_cpu_seconds() - before;
    Ok(figure)
}

fn decode_only(file: &input::InputFile, rows: u64) -> anyhow::Result<Figure> {
    let start = Instant::now();
    let (mut done, mut bytes) = (0u64, 0u64);
    while done < rows {
        for batch in file.reader(65_536)? {
            let batch = batch?;
            done += batch.num_rows() as u64;
            bytes += batch.get_array_memory_size() as u64;
            if done >= rows {
                break;
            }
        }
    }
    Ok(Figure {
        name: "decode only (Parquet -> Arrow)",
        rows: done,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: 0.0,
    })
}

fn encode_only(file: &input::InputFile, key: &EncodeOptions, rows: u64) -> anyhow::Result<Figure> {
    let batches = file.reader(65_536)?.collect::<Result<Vec<_>, _>>()?;
    let mut encoder = Encoder::new(&file.schema, key)?;
    let mut out = EncodedRows::default();
    let start = Instant::now();
    let (mut done, mut bytes) = (0u64, 0u64);
    'outer: loop {
        for batch in &batches {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let len = 8192.min(batch.num_rows() - offset);
                out.clear();
                encoder.encode(&batch.slice(offset, len), &mut out)?;
                done += out.len() as u64;
                bytes += out.bytes() as u64;
                offset += len;
                if done >= rows {
                    break 'outer;
                }
            }
        }
    }
    Ok(Figure {
        name: match key.format {
            RecordFormat::Json => "encode only (Arrow -> JSON)",
            RecordFormat::Protobuf => "protobuf encode only (Arrow -> protobuf)",
        },
        rows: done,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: 0.0,
    })
}

fn decode_and_encode(file: &input::InputFile, key: &EncodeOptions, rows: u64) -> Figure {
    let reader = Reader {
        files: vec![file.clone()],
        passes: rows.div_ceil(file.rows.max(1)),
        limit: rows,
        shift_secs: 1,
        batch_rows: 65_536,
        cache_bytes: 0,
        encode: key.clone(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    let (pool_tx, pool_rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    let thread = std::thread::spawn(move || reader.run(&tx, &pool_rx));
    let (mut done, mut bytes) = (0u64, 0u64);
    for chunk in rx.iter().flatten() {
        done += chunk.len() as u64;
        bytes += chunk.bytes() as u64;
        let _ = pool_tx.send(chunk);
    }
    let _ = thread.join();
    Figure {
        name: "decode + encode (reader thread)",
        rows: done,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: 0.0,
    }
}

/// The sample's rows as we send them: (key, message).
fn encode_sample(file: &input::InputFile, key: &EncodeOptions) -> anyhow::Result<Vec<Message>> {
    let mut encoder = Encoder::new(&file.schema, key)?;
    let mut out = EncodedRows::default();
    for batch in file.reader(65_536)? {
        encoder.encode(&batch?, &mut out)?;
    }
    Ok(out
        .iter()
        .map(|(k, v)| (k.map(<[u8]>::to_vec), v.to_vec()))
        .collect())
}

/// Counts deliveries, nothing else: the plain flood's callback.
struct Count {
    ok: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

impl ClientContext for Count {}

impl ProducerContext for Count {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.bytes
                    .fetch_add(m.payload_len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A plain rdkafka flood: `rows` sends cycling over `messages` in a tight loop, polling when the
/// queue is full, then a flush.
fn flood(
    config: &DeliveryConfig,
    messages: &[Message],
    rows: u64,
    name: &'static str,
) -> anyhow::Result<Figure> {
    let producer: BaseProducer<Count> = config.client_config().create_with_context(Count {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    })?;
    let start = Instant::now();
    let mut sent = 0u64;
    'outer: loop {
        for (key, payload) in messages {
            if sent == rows {
                break 'outer;
            }
            let mut record = BaseRecord::<[u8], [u8]>::to(&config.topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(1));
                    }
                    Err((e, _)) => anyhow::bail!("flood send failed: {e}"),
                }
            }
            sent += 1;
            if sent.is_multiple_of(2048) {
                producer.poll(Duration::ZERO);
            }
        }
    }
    while producer.in_flight_count() > 0 {
        producer.poll(Duration::from_millis(50));
    }
    let seconds = start.elapsed().as_secs_f64();
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} flood messages failed");
    Ok(Figure {
        name,
        rows: ctx.ok.load(Ordering::Relaxed),
        bytes: ctx.bytes.load(Ordering::Relaxed),
        seconds,
        cpu_seconds: 0.0,
    })
}

/// The real pipeline: the file repeated to `rows`.
fn ours(
    config: &DeliveryConfig,
    path: &std::path::Path,
    rows_per_pass: u64,
    rows: u64,
    format: RecordFormat,
) -> anyhow::Result<Figure> {
    let produce = ProduceConfig {
        inputs: vec![path.display().to_string()],
        schema: SchemaCheck::Any,
        encode: EncodeOptions {
            key_column: Some("PULocationID".into()),
            time_shift_secs: 0,
            format,
        },
        repeat: rows.div_ceil(rows_per_pass.max(1)),
        limit: Some(rows),
        repeat_shift: Duration::from_secs(1),
        read_batch_rows: 65_536,
        cache_bytes: 512 << 20,
        delivery: config.clone(),
    };
    let plan = pipeline::plan(&produce)?;
    let stats = Stats::default();
    let sender = pipeline::connect(&produce, &stats)?;
    let summary = pipeline::run(
        &produce,
        &plan,
        sender,
        &stats,
        &Arc::new(AtomicBool::new(false)),
    )?;
    anyhow::ensure!(summary.is_complete(), "our run was incomplete: {summary:?}");
    Ok(Figure {
        name: match format {
            RecordFormat::Json => "ours: velostream-producer pipeline",
            RecordFormat::Protobuf => "protobuf ours: velostream-producer pipeline",
        },
        rows: summary.delivered,
        bytes: summary.bytes,
        seconds: summary.elapsed.as_secs_f64(),
        cpu_seconds: 0.0,
    })
}
