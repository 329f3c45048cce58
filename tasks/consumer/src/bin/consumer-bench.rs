//! `consumer-bench`: rows/s from a pre-filled topic of taxi rows into ClickHouse, for our consumer
//! and two baselines measured in the same run on the same servers:
//!
//! - ceiling: a raw insert of the same rows already decoded in memory, in 1M-row inserts (the
//!   machine's ceiling for ClickHouse ingestion; `--ceiling-insert-rows`);
//! - plain: a consumer that inserts each poll's messages in small batches and commits after each,
//!   the way the reference Python consumer did;
//! - Kafka engine (modern servers only): ClickHouse's own `Kafka` table plus a materialized view
//!   into the same table layout, the peer many users pick instead of a consumer program.
//!
//! Ours and the Kafka engine run twice: on a topic of JSON records and on a topic of the same rows
//! as protobuf `TaxiTrip` messages (`proto/taxi_trip.proto`; `--skip-protobuf` to leave it out).
//! With `--clickhouse-url`, the server's format schema directory must hold `taxi_trip.proto`
//! for the protobuf Kafka engine.
//!
//! ```text
//! cargo run --release -p velostream-consumer --bin consumer-bench -- --rows 10000000
//! ```
//!
//! Starts its own broker and ClickHouse (velostream-testkit) unless `--brokers` and
//! `--clickhouse-url` are given. Prints a table and a `::velostream::` output line.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;
use velostream_common::clickhouse::{ClickHouseConfig, Server};
use velostream_common::kafka::client_config;
use velostream_consumer::fixture::{KeyCase, encode_parquet, to_protobuf};
use velostream_consumer::kafka::fetch_queue::{FetchQueue, Fetched};
use velostream_consumer::record::RecordFormat;
use velostream_consumer::record::rowbinary::COLUMNS;
use velostream_consumer::record::{Record, TaxiRow, decode};
use velostream_consumer::sink::schema;
use velostream_consumer::{Consumer as VeloConsumer, Settings};

/// Measures our consumer against a raw-insert ceiling and a small-batch consumer.
#[derive(Debug, Parser)]
#[command(name = "consumer-bench", about, long_about = None)]
struct Args {
    /// Rows in the pre-filled topic (the sample repeated).
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Our consumer's --batch-rows (its default).
    #[arg(long, default_value_t = 500_000)]
    batch_rows: usize,
    /// Rows per insert of the ceiling: large, so the ceiling is the best the server does.
    #[arg(long, default_value_t = 1_000_000)]
    ceiling_insert_rows: usize,
    /// Our consumer's --batch-ms.
    #[arg(long, default_value_t = 1000)]
    batch_ms: u64,
    /// Messages per insert of the plain consumer (one poll's worth).
    #[arg(long, default_value_t = 10_000)]
    plain_batch: usize,
    /// Rows the plain consumer reads (it is slow); default: all.
    #[arg(long)]
    plain_rows: Option<usize>,
    /// Skip the plain-consumer baseline.
    #[arg(long)]
    skip_plain: bool,
    /// Skip the ClickHouse Kafka-engine peer (it runs only on servers 22.1+ anyway).
    #[arg(long)]
    skip_kafka_engine: bool,
    /// Consumers of the Kafka-engine peer (`kafka_num_consumers`, at most the partitions).
    #[arg(long, default_value_t = 1)]
    kafka_engine_consumers: usize,
    /// Skip the protobuf runs (ours and the Kafka engine on a topic of protobuf records).
    #[arg(long)]
    skip_protobuf: bool,
    /// Skip the fetch-only and ceiling runs (to profile ours alone).
    #[arg(long)]
    only_ours: bool,
    /// Skip the memory runs (peak RSS of the consumer binary under a backlog and a frozen
    /// ClickHouse).
    #[arg(long)]
    skip_memory: bool,
    /// Rows the memory runs read (at most `--rows`): enough that the prefetch queue stays full.
    #[arg(long, default_value_t = 3_000_000)]
    memory_rows: usize,
    /// How long the frozen-ClickHouse memory run freezes the server (SIGSTOP), after the first
    /// insert (needs the bench's own ClickHouse).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    freeze: Duration,
    /// Extra librdkafka property for our consumer and the fetch-only run, key=value (repeatable).
    #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
    consumer_properties: Vec<String>,
    /// Use this broker instead of starting one.
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Use this ClickHouse instead of starting one.
    #[arg(long, env = "CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    /// The TLC Parquet file to take rows from [default: the repository's 100k-row sample].
    #[arg(long)]
    sample: Option<std::path::PathBuf>,
}

struct Servers {
    brokers: String,
    clickhouse: ClickHouseConfig,
    kafka: Option<velostream_testkit::Kafka>,
    ch: Option<velostream_testkit::ClickHouse>,
}

/// CPU seconds used so far by a process (user + system), from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

/// CPU used by ClickHouse, the broker and this process during a phase.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    clickhouse: f64,
    broker: f64,
    us: f64,
}

impl Servers {
    fn cpu(&self) -> Cpu {
        Cpu {
            clickhouse: self.ch.as_ref().and_then(|c| c.pid()).map_or(0.0, cpu_secs),
            broker: self
                .kafka
                .as_ref()
                .and_then(|k| k.pid())
                .map_or(0.0, cpu_secs),
            us: cpu_secs(std::process::id()),
        }
    }

    /// CPU seconds per million rows since `before`, as "ClickHouse / broker / bench process".
    fn cpu_per_million(&self, before: Cpu, rows: usize) -> String {
        let now = self.cpu();
        let m = rows as f64 / 1e6;
        format!(
            "{:.2} / {:.2} / {:.2}",
            (now.clickhouse - before.clickhouse) / m,
            (now.broker - before.broker) / m,
            (now.us - before.us) / m
        )
    }
}

fn servers(args: &Args) -> Servers {
    let (brokers, kafka) = match &args.brokers {
        Some(b) => (b.clone(), None),
        None => {
            let k = velostream_testkit::Kafka::start();
            (k.bootstrap.clone(), Some(k))
        }
    };
    let (clickhouse, ch) = match &args.clickhouse_url {
        Some(url) => (
            ClickHouseConfig {
                url: url.clone(),
                ..ClickHouseConfig::from_env()
            },
            None,
        ),
        None => {
            let c = velostream_testkit::ClickHouse::start();
            (
                ClickHouseConfig {
                    url: c.http_url.clone(),
                    ..ClickHouseConfig::default()
                },
                Some(c),
            )
        }
    };
    Servers {
        brokers,
        clickhouse,
        kafka,
        ch,
    }
}

fn properties(args: &Args) -> anyhow::Result<Vec<(String, String)>> {
    Ok(args
        .consumer_properties
        .iter()
        .map(|p| velostream_consumer::settings::parse_property(p))
        .collect::<Result<_, _>>()?)
}

#[derive(Default)]
struct CountingContext {
    failed: AtomicU64,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Fills `topic` with `rows` messages, the sample repeated, round-robin over the partitions.
fn fill(
    brokers: &str,
    topic: &str,
    partitions: i32,
    sample: &[Vec<u8>],
    rows: usize,
) -> anyhow::Result<Duration> {
    let producer: ThreadedProducer<CountingContext> = client_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(CountingContext::default())?;
    let started = Instant::now();
    for i in 0..rows {
        let payload = &sample[i % sample.len()];
        let key = (i as u64).to_le_bytes();
        let mut record = BaseRecord::to(topic)
            .partition((i % partitions as usize) as i32)
            .key(&key[..])
            .payload(payload.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e).context("producing the benchmark topic"),
            }
        }
        if i % 1_000_000 == 999_999 {
            eprintln!("  filled {} rows", i + 1);
        }
    }
    producer.flush(Duration::from_secs(300))?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} messages were not delivered while filling the topic");
    }
    Ok(started.elapsed())
}

/// (a) The ceiling: the same rows, decoded in memory, inserted in `insert_rows`-row inserts.
async fn ceiling(
    server: &Server,
    table: &str,
    sample: &[Record],
    rows: usize,
    insert_rows: usize,
) -> anyhow::Result<f64> {
    schema::ensure_tables(server, table).await?;
    let started = Instant::now();
    let mut done = 0;
    while done < rows {
        let n = insert_rows.min(rows - done);
        let mut insert = server.client.insert::<TaxiRow<'_>>(table).await?;
        for i in done..done + n {
            let mut record = sample[i % sample.len()].clone();
            record.partition = 0;
            record.offset = i as i64;
            insert.write(&TaxiRow::new("ceiling", &record)).await?;
        }
        insert.end().await?;
        done += n;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// The TLC fields as the JSON messages carry them, for the Kafka engine's table.
const KAFKA_ENGINE_COLUMNS: &str = "VendorID Nullable(Int64), \
    tpep_pickup_datetime DateTime64(6), tpep_dropoff_datetime DateTime64(6), \
    passenger_count Nullable(Float64), trip_distance Nullable(Float64), RatecodeID Nullable(Float64), \
    store_and_fwd_flag Nullable(String), PULocationID Nullable(Int64), DOLocationID Nullable(Int64), \
    payment_type Nullable(Int64), fare_amount Nullable(Float64), extra Nullable(Float64), \
    mta_tax Nullable(Float64), tip_amount Nullable(Float64), tolls_amount Nullable(Float64), \
    improvement_surcharge Nullable(Float64), total_amount Nullable(Float64), \
    congestion_surcharge Nullable(Float64), airport_fee Nullable(Float64), \
    cbd_congestion_fee Nullable(Float64)";

/// The materialized view's conversion into the taxi table's types, as our decoder converts.
const KAFKA_ENGINE_SELECT: &str = "toUInt8(ifNull(VendorID, 0)) AS VendorID, \
    toDateTime(tpep_pickup_datetime) AS tpep_pickup_datetime, \
    toDateTime(tpep_dropoff_datetime) AS tpep_dropoff_datetime, \
    CAST(passenger_count AS Nullable(UInt8)) AS passenger_count, \
    ifNull(trip_distance, 0) AS trip_distance, CAST(RatecodeID AS Nullable(UInt8)) AS RatecodeID, \
    store_and_fwd_flag, toUInt16(ifNull(PULocationID, 0)) AS PULocationID, \
    toUInt16(ifNull(DOLocationID, 0)) AS DOLocationID, toUInt8(ifNull(payment_type, 0)) AS payment_type, \
    ifNull(fare_amount, 0) AS fare_amount, ifNull(extra, 0) AS extra, ifNull(mta_tax, 0) AS mta_tax, \
    ifNull(tip_amount, 0) AS tip_amount, ifNull(tolls_amount, 0) AS tolls_amount, \
    ifNull(improvement_surcharge, 0) AS improvement_surcharge, ifNull(total_amount, 0) AS total_amount, \
    congestion_surcharge, airport_fee, cbd_congestion_fee, \
    _topic, toInt32(_partition) AS _partition, toInt64(_offset) AS _offset";

/// (e) The peer: ClickHouse's Kafka engine and a materialized view into `table` (the taxi layout)
/// read the whole topic. Returns rows/s from the first rows in the table to the last, and over the
/// wall time including the engine's group join. Fails unless the count is exact.
async fn kafka_engine(
    args: &Args,
    server: &Server,
    brokers: &str,
    topic: &str,
    table: &str,
    protobuf: bool,
) -> anyhow::Result<(f64, f64)> {
    schema::ensure_tables(server, table).await?;
    let queue = format!("{table}_queue");
    let view = format!("{table}_mv");
    let exec = |sql: String| async move {
        server
            .client
            .query(&sql)
            .execute()
            .await
            .with_context(|| format!("running {sql}"))
    };
    // The local broker admits a group member only after half the session timeout (the engine's
    // librdkafka default, 45 s, set only in the server config's <kafka> section): the first rows
    // land after ~25 s, a wait kept out of the rate, as the group join is out of ours.
    // JSON: loose types and the conversions our decoder makes. Protobuf: the message's fields are
    // the table's columns, typed by the schema, so the view only adds the Kafka coordinates.
    let fields = COLUMNS.iter().filter(|(name, _)| !name.starts_with('_'));
    let (columns, format, select, group) = if protobuf {
        (
            fields
                .clone()
                .map(|(n, t)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", "),
            format!(
                "kafka_format = '{}', kafka_schema = '{}'",
                velostream_common::proto::CLICKHOUSE_FORMAT,
                velostream_common::proto::CLICKHOUSE_SCHEMA
            ),
            format!(
                "{}, _topic, toInt32(_partition) AS _partition, toInt64(_offset) AS _offset",
                fields.map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
            "bench-kafka-engine-protobuf",
        )
    } else {
        (
            KAFKA_ENGINE_COLUMNS.to_string(),
            "kafka_format = 'JSONEachRow', input_format_skip_unknown_fields = 1".to_string(),
            KAFKA_ENGINE_SELECT.to_string(),
            "bench-kafka-engine",
        )
    };
    exec(format!(
        "CREATE TABLE {queue} ({columns}) ENGINE = Kafka SETTINGS \
         kafka_broker_list = '{brokers}', kafka_topic_list = '{topic}', \
         kafka_group_name = '{group}', {format}, \
         kafka_num_consumers = {}, kafka_max_block_size = {}, kafka_flush_interval_ms = {}, \
         kafka_thread_per_consumer = 1",
        args.kafka_engine_consumers.max(1),
        args.batch_rows,
        args.batch_ms,
    ))
    .await?;
    let started = Instant::now();
    exec(format!(
        "CREATE MATERIALIZED VIEW {view} TO {table} AS SELECT {select} FROM {queue}"
    ))
    .await?;
    let count = |sql: String| async move {
        server
            .client
            .query(&sql)
            .fetch_one::<u64>()
            .await
            .with_context(|| format!("running {sql}"))
    };
    let mut first: Option<(Instant, u64)> = None;
    let mut last_report = Instant::now();
    let deadline = Duration::from_secs(600 + args.rows as u64 / 10_000);
    let done = loop {
        let n = count(format!("SELECT count() FROM {table}")).await?;
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if n >= args.rows as u64 {
            break Instant::now();
        }
        if started.elapsed() > deadline {
            bail!(
                "the Kafka engine stored {n} of {} rows within {deadline:?}",
                args.rows
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  Kafka engine: {n} rows stored");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    exec(format!("DROP TABLE {view}")).await?;
    exec(format!("DROP TABLE {queue}")).await?;
    let stored = count(format!("SELECT count() FROM {table}")).await?;
    let distinct = count(format!("SELECT count() FROM {table} FINAL")).await?;
    if distinct != args.rows as u64 {
        bail!(
            "the Kafka engine's table holds {distinct} distinct rows, expected {}",
            args.rows
        );
    }
    if stored != distinct {
        eprintln!("  Kafka engine stored {stored} rows for {distinct} (duplicates)");
    }
    let (t0, n0) = first.unwrap_or((started, 0));
    let rate = (args.rows as u64 - n0) as f64 / done.duration_since(t0).as_secs_f64().max(1e-9);
    let wall = args.rows as f64 / done.duration_since(started).as_secs_f64();
    Ok((rate, wall))
}

/// (b) Our consumer, in-process with the settings the binary would get.
async fn ours(args: &Args, s: &Servers, topic: &str, table: &str) -> anyhow::Result<(f64, f64)> {
    let mut settings = Settings::new(&s.brokers, s.clickhouse.clone(), topic, "bench-ours");
    settings.table = table.to_string();
    settings.batch_rows = args.batch_rows;
    settings.batch_time = Duration::from_millis(args.batch_ms);
    settings.consumer_properties = properties(args)?;
    // No series lines among the bench's own output.
    settings.series_interval = Duration::ZERO;
    let consumer = VeloConsumer::new(settings);
    let metrics = consumer.metrics();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn(consumer.run(stop.clone()));
    let mut last_report = Instant::now();
    while metrics.rows_inserted.get() < args.rows as u64 {
        if run.is_finished() {
            bail!("our consumer stopped early");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  ours: {} rows inserted", metrics.rows_inserted.get());
            last_report = Instant::now();
        }
    }
    let wall = started.elapsed();
    stop.cancel();
    let summary = run.await??;
    if summary.rows_inserted != args.rows as u64 {
        bail!(
            "our consumer inserted {} rows, expected {}",
            summary.rows_inserted,
            args.rows
        );
    }
    Ok((summary.rows_per_sec, args.rows as f64 / wall.as_secs_f64()))
}

/// Peak memory of the consumer binary (the process a DAG runs), in bytes.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// Reading a backlog at full speed.
    backlog: u64,
    /// The same, with ClickHouse frozen for `--freeze` after the first insert.
    frozen: Option<u64>,
    /// What `Settings::memory_bound_bytes` states for these settings.
    bound: u64,
}

/// (f) Memory: the `velostream-consumer` binary beside this one reads `--memory-rows` of the
/// topic with its default settings (and our `--batch-rows`), once at full speed and once with
/// ClickHouse frozen (SIGSTOP) for `--freeze` after its first insert; its peak RSS (`VmHWM`) each
/// time. Both runs must leave exactly the rows they read.
async fn memory(args: &Args, s: &Servers, server: &Server, topic: &str) -> anyhow::Result<Memory> {
    let rows = args.memory_rows.min(args.rows);
    let backlog = memory_run(args, s, server, topic, "bench_memory", rows, None).await?;
    let frozen = match &s.ch {
        Some(ch) => Some(
            memory_run(
                args,
                s,
                server,
                topic,
                "bench_memory_frozen",
                rows,
                Some((ch, args.freeze)),
            )
            .await?,
        ),
        None => {
            eprintln!(
                "  frozen ClickHouse: not measured on a given server (it is not ours to freeze)"
            );
            None
        }
    };
    let mut settings = Settings::new(&s.brokers, s.clickhouse.clone(), topic, "bench-memory");
    settings.batch_rows = args.batch_rows;
    Ok(Memory {
        backlog,
        frozen,
        bound: settings.memory_bound_bytes(),
    })
}

/// One memory run: peak RSS in bytes.
async fn memory_run(
    args: &Args,
    s: &Servers,
    server: &Server,
    topic: &str,
    table: &str,
    rows: usize,
    freeze: Option<(&velostream_testkit::ClickHouse, Duration)>,
) -> anyhow::Result<u64> {
    let program = std::env::current_exe()?.with_file_name("velostream-consumer");
    if !program.is_file() {
        bail!(
            "{} is missing: build it beside consumer-bench (cargo build --release -p velostream-consumer --bins --all-features)",
            program.display()
        );
    }
    let http = format!("127.0.0.1:{}", velostream_testkit::free_port());
    let mut child = tokio::process::Command::new(&program)
        .args(["--topic", topic, "--group", table, "--table", table])
        .args(["--batch-rows", &args.batch_rows.to_string()])
        .args(["--batch-ms", &args.batch_ms.to_string()])
        .args(["--http-addr", &http, "--series-interval", "0s"])
        .args(
            args.consumer_properties
                .iter()
                .flat_map(|p| ["--consumer-property", p.as_str()]),
        )
        .env("KAFKA_BROKERS", &s.brokers)
        .env("CLICKHOUSE_URL", &s.clickhouse.url)
        .env("CLICKHOUSE_USER", &s.clickhouse.user)
        .env("CLICKHOUSE_PASSWORD", &s.clickhouse.password)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let pid = child.id().context("the consumer exited at once")?;
    schema::ensure_tables(server, table).await?;
    let metric = |name: &'static str| {
        let http = http.clone();
        async move { scrape(&http, name).await.unwrap_or(0.0) as u64 }
    };
    let deadline =
        Instant::now() + Duration::from_secs(300) + Duration::from_secs(rows as u64 / 20_000);
    let mut frozen = freeze;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the consumer exited early ({status}); run it alone to see why");
        }
        let inserted = metric("velostream_consumer_rows_inserted_total").await;
        if inserted >= rows as u64 {
            break;
        }
        if let Some((ch, how_long)) = frozen
            && metric("velostream_consumer_batches_total").await >= 1
        {
            eprintln!("  ClickHouse frozen for {how_long:?} after the first insert...");
            ch.pause();
            tokio::time::sleep(how_long).await;
            ch.resume();
            frozen = None;
        }
        if Instant::now() > deadline {
            bail!("the consumer inserted {inserted} of {rows} rows by the deadline");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = peak_rss(pid).context("reading the consumer's peak RSS")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
    if !status.success() {
        bail!("the consumer stopped with {status}");
    }
    let counted: u64 = server
        .client
        .query(&format!("SELECT count() FROM {table} FINAL"))
        .fetch_one()
        .await?;
    server
        .client
        .query(&format!("DROP TABLE {table}"))
        .execute()
        .await?;
    if counted < rows as u64 {
        bail!("{table} holds {counted} rows (FINAL), expected at least {rows}");
    }
    Ok(peak)
}

/// A Prometheus sample of the consumer's `/metrics` (unlabelled `name`).
async fn scrape(http: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The peak resident set of `pid` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// (c) The plain consumer: each poll's messages (up to `plain_batch`), decoded, inserted and
/// committed before the next poll.
async fn plain(
    args: &Args,
    s: &Servers,
    server: &Server,
    topic: &str,
    table: &str,
    rows: usize,
) -> anyhow::Result<f64> {
    schema::ensure_tables(server, table).await?;
    let consumer: BaseConsumer = client_config(&s.brokers)
        .set("group.id", "bench-plain")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut done = 0;
    let mut first = None;
    while done < rows {
        // One "poll": up to plain_batch messages, or what arrives within 100 ms.
        let mut batch = Vec::with_capacity(args.plain_batch);
        let poll_deadline = Instant::now() + Duration::from_millis(100);
        while batch.len() < args.plain_batch.min(rows - done) && Instant::now() < poll_deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(10)) {
                let m = m?;
                first.get_or_insert_with(Instant::now);
                let trip = decode(m.payload().unwrap_or_default())?;
                batch.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    trip,
                });
            }
        }
        if batch.is_empty() {
            continue;
        }
        let mut insert = server.client.insert::<TaxiRow<'_>>(table).await?;
        for r in &batch {
            insert.write(&TaxiRow::new(topic, r)).await?;
        }
        insert.end().await?;
        consumer.commit_consumer_state(CommitMode::Sync)?;
        done += batch.len();
    }
    let elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
    Ok(rows as f64 / elapsed.as_secs_f64())
}

/// Reading the topic and nothing else: how fast the broker serves it to one consumer.
/// Uses the same librdkafka settings as our consumer.
fn fetch_only(args: &Args, s: &Servers, topic: &str, rows: usize) -> anyhow::Result<f64> {
    let mut settings = Settings::new(&s.brokers, s.clickhouse.clone(), topic, "bench-fetch");
    settings.session_timeout = Duration::from_secs(6);
    settings.consumer_properties = properties(args)?;
    let consumer: BaseConsumer = velostream_consumer::kafka::consumer_config(&settings).create()?;
    // Read the way our consumer reads: every partition routed to one batch queue, then assigned.
    let queue = FetchQueue::new(&consumer);
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.partitions {
        if !queue.route(&consumer, topic, p) {
            bail!("partition {p} of {topic} could not be routed to the batch queue");
        }
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut fetched = Fetched::with_capacity(8192);
    let mut done = 0;
    let mut bytes = 0;
    let mut first = None;
    while done < rows {
        let _ = consumer.poll(Duration::ZERO);
        if queue.take(&mut fetched, 8192, Duration::from_millis(10)) > 0 {
            first.get_or_insert_with(Instant::now);
            for m in fetched.iter() {
                if let Some(err) = m.error() {
                    bail!("reading the benchmark topic: {err}");
                }
                bytes += m.payload().map_or(0, <[u8]>::len);
                done += 1;
            }
        }
    }
    let elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
    drop(fetched);
    drop(queue);
    eprintln!("  {} MB of JSON", bytes >> 20);
    Ok(rows as f64 / elapsed.as_secs_f64())
}

async fn settle(server: &Server) {
    // Let background merges of the previous run finish, so each run starts from a quiet server.
    for _ in 0..600 {
        let merges: u64 = server
            .client
            .query("SELECT count() FROM system.merges")
            .fetch_one()
            .await
            .unwrap_or(0);
        if merges == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rows per second one thread decodes `sample` (five passes), in `format`.
fn decoding_rate(sample: &[Vec<u8>], format: RecordFormat) -> f64 {
    let started = Instant::now();
    let mut decoded = 0usize;
    for _ in 0..5 {
        decoded += sample
            .iter()
            .filter(|p| velostream_consumer::record::format::decode(format, p).is_ok())
            .count();
    }
    decoded as f64 / started.elapsed().as_secs_f64()
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<_> = client_config(brokers).create()?;
    admin
        .create_topics(
            [&NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let s = servers(&args);
    let sample_path = args
        .sample
        .clone()
        .unwrap_or_else(velostream_testkit::taxi_sample);
    let sample = encode_parquet(&sample_path, KeyCase::AsIs)?;
    let records: Vec<Record> = sample
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(Record {
                partition: 0,
                offset: i as i64,
                trip: decode(p)?,
            })
        })
        .collect::<Result<_, velostream_consumer::record::DecodeError>>()?;
    let bytes: usize = sample.iter().map(Vec::len).sum();
    eprintln!(
        "sample: {} rows from {}, {} bytes of JSON per row on average",
        sample.len(),
        sample_path.display(),
        bytes / sample.len()
    );
    let decode_rate = decoding_rate(&sample, RecordFormat::Json);
    let protobuf_sample = to_protobuf(&sample)?;
    let protobuf_bytes: usize = protobuf_sample.iter().map(Vec::len).sum();
    let protobuf_decode_rate = decoding_rate(&protobuf_sample, RecordFormat::Protobuf);
    eprintln!(
        "  as protobuf: {} bytes per row on average",
        protobuf_bytes / sample.len()
    );

    let topic = format!("bench-{}", std::process::id());
    create_topic(&s.brokers, &topic, args.partitions).await?;
    eprintln!(
        "filling topic {topic} with {} rows in {} partitions...",
        args.rows, args.partitions
    );
    let fill_time = fill(&s.brokers, &topic, args.partitions, &sample, args.rows)?;
    eprintln!(
        "  filled in {:.1}s ({:.0} rows/s)",
        fill_time.as_secs_f64(),
        args.rows as f64 / fill_time.as_secs_f64()
    );

    let mut lines: Vec<(String, f64, String)> = Vec::new();
    lines.push((
        "decode alone (JSON -> row, one thread, no I/O)".into(),
        decode_rate,
        String::new(),
    ));
    lines.push((
        "decode alone (protobuf -> row, one thread, no I/O)".into(),
        protobuf_decode_rate,
        String::new(),
    ));

    let server = s.clickhouse.connect().await?;
    let (mut fetch_rate, mut ceiling_rate) = (f64::NAN, f64::NAN);
    if !args.only_ours {
        eprintln!("(d) fetch only: one consumer reading the topic, nothing else...");
        let cpu = s.cpu();
        fetch_rate = fetch_only(&args, &s, &topic, args.rows)?;
        eprintln!("  {fetch_rate:.0} rows/s");
        lines.push((
            "(d) fetch only: read the topic, no decode, no insert".into(),
            fetch_rate,
            s.cpu_per_million(cpu, args.rows),
        ));

        eprintln!(
            "(a) ceiling: ClickHouse {}, raw inserts of {} decoded rows from memory...",
            server.version, args.rows
        );
        let cpu = s.cpu();
        ceiling_rate = ceiling(
            &server,
            "bench_ceiling",
            &records,
            args.rows,
            args.ceiling_insert_rows,
        )
        .await?;
        eprintln!("  {ceiling_rate:.0} rows/s");
        lines.push((
            format!(
                "(a) ceiling: raw insert from memory, {}-row inserts",
                args.ceiling_insert_rows
            ),
            ceiling_rate,
            s.cpu_per_million(cpu, args.rows),
        ));
        server
            .client
            .query("DROP TABLE bench_ceiling")
            .execute()
            .await?;
        settle(&server).await;
    }

    eprintln!(
        "ours: velostream-consumer, batch {} rows / {} ms...",
        args.batch_rows, args.batch_ms
    );
    let cpu = s.cpu();
    let (ours_rate, ours_wall) = ours(&args, &s, &topic, "bench_ours").await?;
    let ours_cpu = s.cpu_per_million(cpu, args.rows);
    let counted: u64 = server
        .client
        .query("SELECT count() FROM bench_ours FINAL")
        .fetch_one()
        .await?;
    if counted != args.rows as u64 {
        bail!(
            "bench_ours holds {counted} rows (FINAL), expected {}",
            args.rows
        );
    }
    eprintln!(
        "  {ours_rate:.0} rows/s from first message to last insert ({ours_wall:.0} rows/s including joining the group)"
    );
    lines.push((
        "ours: velostream-consumer, first message to last insert".into(),
        ours_rate,
        ours_cpu,
    ));
    lines.push((
        "ours, wall time including the group join (~3 s)".into(),
        ours_wall,
        String::new(),
    ));
    server
        .client
        .query("DROP TABLE bench_ours")
        .execute()
        .await?;
    settle(&server).await;

    let memory = if args.skip_memory {
        None
    } else {
        eprintln!(
            "(f) memory: velostream-consumer reading {} rows, then again with ClickHouse frozen {:?}...",
            args.memory_rows.min(args.rows),
            args.freeze
        );
        let m = memory(&args, &s, &server, &topic).await?;
        settle(&server).await;
        Some(m)
    };

    let plain_rate = if args.skip_plain {
        None
    } else {
        let rows = args.plain_rows.unwrap_or(args.rows).min(args.rows);
        eprintln!(
            "(b) plain: {} messages per poll, insert + commit per poll, {rows} rows...",
            args.plain_batch
        );
        let cpu = s.cpu();
        let rate = plain(&args, &s, &server, &topic, "bench_plain", rows).await?;
        eprintln!("  {rate:.0} rows/s");
        lines.push((
            format!(
                "(b) plain: {}-message insert + commit per poll",
                args.plain_batch
            ),
            rate,
            s.cpu_per_million(cpu, rows),
        ));
        Some(rate)
    };

    let mut kafka_engine_rate = None;
    if args.skip_kafka_engine {
        eprintln!("(e) Kafka engine: skipped (--skip-kafka-engine)");
    } else if !server.version.is_modern() {
        eprintln!(
            "(e) Kafka engine: not measured on ClickHouse {} (the peer is measured on 22.1+)",
            server.version
        );
    } else {
        eprintln!(
            "(e) ClickHouse Kafka engine + materialized view, {} consumer(s), {} rows per block...",
            args.kafka_engine_consumers, args.batch_rows
        );
        let cpu = s.cpu();
        let (rate, wall) = kafka_engine(
            &args,
            &server,
            &s.brokers,
            &topic,
            "bench_kafka_engine",
            false,
        )
        .await?;
        eprintln!(
            "  {rate:.0} rows/s from the first rows stored to the last ({wall:.0} rows/s including the group join)"
        );
        lines.push((
            "(e) ClickHouse Kafka engine + materialized view".into(),
            rate,
            s.cpu_per_million(cpu, args.rows),
        ));
        server
            .client
            .query("DROP TABLE bench_kafka_engine")
            .execute()
            .await?;
        kafka_engine_rate = Some(rate);
    }

    let (mut ours_protobuf_rate, mut kafka_engine_protobuf_rate) = (None, None);
    if args.skip_protobuf {
        eprintln!("protobuf: skipped (--skip-protobuf)");
    } else {
        let pb_topic = format!("{topic}-protobuf");
        create_topic(&s.brokers, &pb_topic, args.partitions).await?;
        eprintln!("filling topic {pb_topic} with the same rows as protobuf...");
        let fill_time = fill(
            &s.brokers,
            &pb_topic,
            args.partitions,
            &protobuf_sample,
            args.rows,
        )?;
        eprintln!("  filled in {:.1}s", fill_time.as_secs_f64());
        eprintln!("ours on protobuf records...");
        let cpu = s.cpu();
        let (rate, wall) = ours(&args, &s, &pb_topic, "bench_ours_protobuf").await?;
        let cpu = s.cpu_per_million(cpu, args.rows);
        let counted: u64 = server
            .client
            .query("SELECT count() FROM bench_ours_protobuf FINAL")
            .fetch_one()
            .await?;
        if counted != args.rows as u64 {
            bail!(
                "bench_ours_protobuf holds {counted} rows (FINAL), expected {}",
                args.rows
            );
        }
        eprintln!("  {rate:.0} rows/s ({wall:.0} rows/s including joining the group)");
        lines.push((
            "ours on protobuf records, first message to last insert".into(),
            rate,
            cpu,
        ));
        ours_protobuf_rate = Some(rate);
        server
            .client
            .query("DROP TABLE bench_ours_protobuf")
            .execute()
            .await?;
        settle(&server).await;
        if !args.skip_kafka_engine && server.version.is_modern() {
            eprintln!("(e) ClickHouse Kafka engine on protobuf records (ProtobufSingle)...");
            let cpu = s.cpu();
            let (rate, _) = kafka_engine(
                &args,
                &server,
                &s.brokers,
                &pb_topic,
                "bench_kafka_engine_protobuf",
                true,
            )
            .await?;
            eprintln!("  {rate:.0} rows/s from the first rows stored to the last");
            lines.push((
                "(e) ClickHouse Kafka engine on protobuf (ProtobufSingle)".into(),
                rate,
                s.cpu_per_million(cpu, args.rows),
            ));
            server
                .client
                .query("DROP TABLE bench_kafka_engine_protobuf")
                .execute()
                .await?;
            kafka_engine_protobuf_rate = Some(rate);
        }
    }

    println!();
    println!(
        "consumer-bench: {} rows of NYC taxi JSON ({} bytes/row), {} partitions, ClickHouse {}, {} CPUs",
        args.rows,
        bytes / sample.len(),
        args.partitions,
        server.version,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "{:<58} {:>11} {:>8}  CPU s per 1M rows: ClickHouse / broker / bench",
        "run", "rows/s", "ours is"
    );
    for (name, rate, cpu) in &lines {
        println!(
            "{name:<58} {rate:>11.0} {:>7.0}%  {cpu}",
            100.0 * ours_rate / rate
        );
    }
    let mb = |b: u64| b as f64 / f64::from(1 << 20);
    if let Some(m) = memory {
        println!();
        println!(
            "peak RSS of velostream-consumer: {:.0} MiB reading a backlog{}; stated bound {:.0} MiB",
            mb(m.backlog),
            m.frozen
                .map(|f| format!(
                    ", {:.0} MiB with ClickHouse frozen {:?}",
                    mb(f),
                    args.freeze
                ))
                .unwrap_or_default(),
            mb(m.bound)
        );
    }
    println!();
    println!("ours / ceiling = {:.1}%", 100.0 * ours_rate / ceiling_rate);
    if let Some(p) = plain_rate {
        println!("ours / plain   = {:.1}x", ours_rate / p);
    }
    let output = serde_json::json!({
        "rows": args.rows,
        "ceiling_rows_per_sec": ceiling_rate.round(),
        "ours_rows_per_sec": ours_rate.round(),
        "plain_rows_per_sec": plain_rate.map(f64::round),
        "fetch_only_rows_per_sec": fetch_rate.round(),
        "ours_vs_ceiling": (ours_rate / ceiling_rate * 1000.0).round() / 1000.0,
        "clickhouse_version": server.version.to_string(),
        "kafka_engine_rows_per_sec": kafka_engine_rate.map(f64::round),
        "decode_json_rows_per_sec": decode_rate.round(),
        "decode_protobuf_rows_per_sec": protobuf_decode_rate.round(),
        "json_bytes_per_row": bytes / sample.len(),
        "protobuf_bytes_per_row": protobuf_bytes / sample.len(),
        "ours_protobuf_rows_per_sec": ours_protobuf_rate.map(f64::round),
        "kafka_engine_protobuf_rows_per_sec": kafka_engine_protobuf_rate.map(f64::round),
        "memory_backlog_bytes": memory.map(|m| m.backlog),
        "memory_frozen_bytes": memory.and_then(|m| m.frozen),
        "memory_bound_bytes": memory.map(|m| m.bound),
        "memory_rows": memory.map(|_| args.memory_rows.min(args.rows)),
        "memory_freeze_secs": memory.map(|_| args.freeze.as_secs_f64()),
    });
    if let serde_json::Value::Object(map) = output {
        velostream_common::protocol::Message::Output(map).emit();
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("consumer-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consumer-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
