//! Helpers shared by the producer's integration tests: running the binary, writing small Parquet
//! files, reading a topic back from the beginning.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

/// The producer binary cargo built for these tests.
pub fn producer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_velostream-producer"));
    // Keep the tests independent of the developer's environment.
    for var in [
        "KAFKA_BROKERS",
        "VELOSTREAM_TOPIC",
        "VELOSTREAM_INPUT",
        "VELOSTREAM_REPEAT",
        "VELOSTREAM_LIMIT",
        "VELOSTREAM_PRODUCER_PROPERTIES",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Runs a command and returns its output, printing stderr when the test fails later.
pub fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().expect("running velostream-producer");
    eprintln!(
        "--- stderr of {cmd:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The `::velostream::` lines of stdout, parsed.
pub fn velostream_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("::velostream:: "))
        .map(|l| serde_json::from_str(l).expect("a ::velostream:: line is JSON"))
        .collect()
}

/// The final `output` object.
pub fn output_of(stdout: &[u8]) -> Value {
    velostream_lines(stdout)
        .into_iter()
        .rev()
        .find_map(|v| v.get("output").cloned())
        .unwrap_or_else(|| {
            panic!(
                "no output line in stdout:\n{}",
                String::from_utf8_lossy(stdout)
            )
        })
}

/// Writes `batch` to a Parquet file at `path`.
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// Creates `topic` with `partitions` partitions.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = velostream_common::kafka::client_config(bootstrap)
        .create()
        .unwrap();
    let results = futures::executor::block_on(admin.create_topics(
        [&NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(1),
        )],
        &AdminOptions::new(),
    ))
    .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// Sends one message and waits for its acknowledgement.
pub fn send_marker(bootstrap: &str, topic: &str, payload: &str) {
    let producer: BaseProducer = velostream_common::kafka::client_config(bootstrap)
        .create()
        .unwrap();
    producer
        .send(BaseRecord::<str, str>::to(topic).payload(payload))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Reads messages of every partition of `topic` from the beginning until `count` arrived (then 2 s
/// more, to catch extras) or `timeout` passed. No consumer group (assignment), so no join delay.
pub fn consume(
    bootstrap: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let consumer: BaseConsumer = velostream_common::kafka::client_config(bootstrap)
        .set("group.id", "velostream-producer-tests")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut deadline = Instant::now() + timeout;
    let mut messages = Vec::with_capacity(count);
    let mut settling = false;
    while Instant::now() < deadline {
        if messages.len() >= count && !settling {
            // Keep reading a little longer: more messages than expected is a failure too.
            settling = true;
            deadline = Instant::now() + Duration::from_secs(2);
        }
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            messages.push((
                message.key().map(<[u8]>::to_vec),
                message.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    messages
}
