//! Shared helpers of the consumer's integration tests: real servers from `velostream_testkit`,
//! topics filled with the real TLC sample encoded by `fixture`, the consumer binary started and
//! stopped like the DAG does (flags, `/health`, SIGTERM, SIGKILL), and the checks the DAG makes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use velostream_common::kafka::client_config;
use velostream_common::protocol::{Line, Message, parse_line};
use velostream_consumer::fixture::{KeyCase, encode_parquet};
use velostream_testkit::{ClickHouse, Kafka};

/// The real sample, encoded once per test process.
pub fn sample() -> &'static [Vec<u8>] {
    static ROWS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    ROWS.get_or_init(|| {
        encode_parquet(&velostream_testkit::taxi_sample(), KeyCase::AsIs)
            .expect("encoding the TLC sample")
    })
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(kafka: &Kafka, topic: &str, partitions: i32) {
    let admin: AdminClient<_> = client_config(&kafka.bootstrap).create().unwrap();
    let results = admin
        .create_topics(
            [&NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// Deletes `topic` and waits until the broker no longer lists it.
pub async fn delete_topic(kafka: &Kafka, topic: &str) {
    let admin: AdminClient<_> = client_config(&kafka.bootstrap).create().unwrap();
    let results = admin
        .delete_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let metadata: BaseConsumer = client_config(&kafka.bootstrap).create().unwrap();
    wait_for(
        "the deleted topic to leave the metadata",
        Duration::from_secs(30),
        || {
            let m = metadata.fetch_metadata(None, Duration::from_secs(5)).ok()?;
            (!m.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none()))
            .then_some(())
        },
    );
}

/// The high watermark of each of `topic`'s first `partitions` partitions, from Fetch responses.
pub fn high_watermarks(kafka: &Kafka, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let starts = (0..partitions).map(|p| (p, 0)).collect();
    velostream_common::kafka::watermarks::fetch_watermarks(
        &kafka.bootstrap,
        topic,
        &starts,
        Duration::from_secs(30),
    )
    .unwrap()
    .high
}

/// ClickHouse's offset records of `table`: (topic as recorded, partition) -> next offset.
pub fn offset_records(ch: &ClickHouse, table: &str) -> BTreeMap<(String, i32), i64> {
    ch.query(&format!(
        "SELECT topic, kafka_partition, max(next_offset) FROM velostream_consumer_offsets \
         WHERE target_table = '{table}' GROUP BY topic, kafka_partition ORDER BY topic, kafka_partition"
    ))
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        ((f[0].to_string(), f[1].parse().unwrap()), f[2].parse().unwrap())
    })
    .collect()
}

/// An idempotent producer like the real one.
pub fn producer(kafka: &Kafka) -> FutureProducer {
    producer_for(&kafka.bootstrap)
}

/// An idempotent producer like the real one, for `bootstrap`.
pub fn producer_for(bootstrap: &str) -> FutureProducer {
    client_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.kbytes", "262144")
        .create()
        .unwrap()
}

/// Produces `payloads` round-robin over `partitions` partitions (message `i` to `i % partitions`)
/// and returns how many went to each partition.
pub async fn produce(
    kafka: &Kafka,
    topic: &str,
    partitions: i32,
    payloads: impl IntoIterator<Item = Vec<u8>>,
) -> BTreeMap<i32, i64> {
    produce_to(&kafka.bootstrap, topic, partitions, payloads).await
}

/// [`produce`] by bootstrap address (for a task that outlives a borrow of the broker).
pub async fn produce_to(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    payloads: impl IntoIterator<Item = Vec<u8>>,
) -> BTreeMap<i32, i64> {
    produce_with(&producer_for(bootstrap), topic, partitions, payloads).await
}

/// [`produce`] with a given producer (one producer across a broker restart keeps its producer id
/// and sequence numbers, as a running producer process does).
pub async fn produce_with(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    payloads: impl IntoIterator<Item = Vec<u8>>,
) -> BTreeMap<i32, i64> {
    let mut counts = BTreeMap::new();
    let mut pending = Vec::new();
    for (i, payload) in payloads.into_iter().enumerate() {
        let partition = (i % partitions as usize) as i32;
        *counts.entry(partition).or_insert(0i64) += 1;
        let key = format!("k{i}");
        let producer = producer.clone();
        let topic = topic.to_string();
        pending.push(async move {
            producer
                .send(
                    FutureRecord::to(&topic)
                        .partition(partition)
                        .key(&key)
                        .payload(&payload),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|(e, _)| e)
        });
        if pending.len() >= 20_000 {
            for r in futures::future::join_all(std::mem::take(&mut pending)).await {
                r.unwrap();
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        r.unwrap();
    }
    counts
}

/// The sample repeated until `rows` messages.
pub fn sample_rows(rows: usize) -> impl Iterator<Item = Vec<u8>> {
    sample().iter().cycle().take(rows).cloned()
}

/// The group's committed offsets on `topic` (missing partitions have none).
pub fn committed(kafka: &Kafka, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = client_config(&kafka.bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

#[allow(unused_imports)] // Not every test binary waits.
pub use velostream_testkit::wait_for;

/// `SELECT count() FROM table FINAL`, the validation query; 0 while the table does not exist.
pub fn count_final(ch: &ClickHouse, table: &str) -> u64 {
    ch.try_query(&format!("SELECT count() FROM {table} FINAL"))
        .ok()
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or(0)
}

/// Rows with distinct (partition, offset): what FINAL must equal.
pub fn distinct_rows(ch: &ClickHouse, table: &str) -> u64 {
    ch.query_u64(&format!(
        "SELECT uniqExact(_topic, _partition, _offset) FROM {table}"
    ))
}

/// A consumer process started like the DAG starts it.
pub struct ConsumerProcess {
    pub child: Child,
    pub http: String,
    pub log: PathBuf,
    stdout: Option<std::thread::JoinHandle<Vec<String>>>,
}

/// Flags of a consumer process.
pub struct ConsumerArgs<'a> {
    pub kafka: &'a Kafka,
    pub ch: &'a ClickHouse,
    pub topic: &'a str,
    pub group: &'a str,
    pub table: &'a str,
    pub batch_rows: usize,
    pub batch_ms: u64,
    pub extra: Vec<String>,
}

impl<'a> ConsumerArgs<'a> {
    pub fn new(kafka: &'a Kafka, ch: &'a ClickHouse, topic: &'a str, table: &'a str) -> Self {
        Self {
            kafka,
            ch,
            topic,
            group: "test-group",
            table,
            batch_rows: 20_000,
            batch_ms: 200,
            extra: Vec::new(),
        }
    }
}

impl ConsumerProcess {
    /// Starts `velostream-consumer`; its stderr goes to a log file in the temp dir.
    pub fn start(args: &ConsumerArgs<'_>) -> Self {
        let port = velostream_testkit::free_port();
        let http = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!(
            "velostream-consumer-test-{}-{port}.log",
            std::process::id()
        ));
        let stderr = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_velostream-consumer"))
            .args([
                "--topic", args.topic, "--group", args.group, "--table", args.table,
            ])
            .args(["--batch-rows", &args.batch_rows.to_string()])
            .args(["--batch-ms", &args.batch_ms.to_string()])
            .args(["--http-addr", &http])
            .args(&args.extra)
            .env("KAFKA_BROKERS", &args.kafka.bootstrap)
            .env("CLICKHOUSE_URL", &args.ch.http_url)
            .env("CLICKHOUSE_USER", args.ch.user)
            .env("CLICKHOUSE_PASSWORD", args.ch.password)
            .env("RUST_LOG", "info,velostream_consumer=debug,librdkafka=warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect()
        });
        Self {
            child,
            http,
            log,
            stdout: Some(reader),
        }
    }

    /// GET `path` on the consumer's HTTP endpoint: (status, body). Plain HTTP/1.0 over a
    /// socket, so it works from sync and async tests alike.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.http).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.http).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// Waits until `/health` says ready, like the DAG's readiness check.
    pub fn wait_ready(&mut self) {
        let log = self.log.clone();
        wait_for(
            "the consumer's /health to turn 200",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "the consumer exited ({status}) before it was ready:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                matches!(self.get("/health"), Some((200, _))).then_some(())
            },
        );
    }

    /// A metric's value from `/metrics` (the first sample whose line starts with `name`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// SIGTERM, then waits for the exit: (exit code, stdout lines).
    pub fn terminate(mut self, timeout: Duration) -> (Option<i32>, Vec<String>) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the consumer did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let lines = self.stdout.take().unwrap().join().unwrap();
        (status.code(), lines)
    }

    /// Waits until the process exits by itself: (exit status, stdout lines).
    pub fn wait_exit(mut self, timeout: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let child = &mut self.child;
        let status = wait_for("the consumer to exit by itself", timeout, || {
            child.try_wait().unwrap()
        });
        let lines = self.stdout.take().unwrap().join().unwrap();
        (status, lines)
    }

    /// SIGKILL: no flush, no commit, no goodbye.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `output` object of the `::velostream::` summary line (series points come before it).
pub fn summary(lines: &[String]) -> serde_json::Value {
    lines
        .iter()
        .find_map(|l| match parse_line(l) {
            Line::Messages(m) => m.into_iter().find_map(|m| match m {
                Message::Output(o) => Some(serde_json::Value::Object(o)),
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no ::velostream:: output line in stdout: {lines:?}"))
}
