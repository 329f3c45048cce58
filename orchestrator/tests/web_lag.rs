//! The run page's lag chart against a real broker: while a `kafka.wait_lag` sensor driven by the
//! server runs, its checks show up live (from its series points); once it finishes, the chart is
//! drawn from the `lag` series the sensor recorded in its outputs.

mod web_common;

use std::time::Duration;

use axum::http::StatusCode;
use orchestrator::store::RunState;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use velostream_testkit::Kafka;
use web_common::Env;

const MESSAGES: i64 = 300;

fn produce(brokers: &str, topic: &str) {
    let producer: BaseProducer = velostream_common::kafka::client_config(brokers)
        .create()
        .expect("a producer");
    for i in 0..MESSAGES {
        let payload = format!("{{\"i\":{i}}}");
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(&payload),
            )
            .expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("flushed");
}

fn commit(consumer: &BaseConsumer, topic: &str, offset: i64) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).expect("committed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lag_chart_is_live_while_the_sensor_runs_and_recorded_after() {
    let broker = Kafka::start();
    let dag = format!(
        r#"
[dag]
id = "drain"

[connections.kafka]
brokers = "{brokers}"

[[task]]
id = "topic"
kind = "kafka.create_topic"
topic = "rides"
partitions = 1

[[task]]
id = "wait"
kind = "kafka.wait_lag"
depends_on = ["topic"]
group = "loaders"
topic = "rides"
interval = "200ms"
timeout = "60s"
"#,
        brokers = broker.bootstrap
    );
    // The topic exists with a backlog before the run: its create_topic task keeps it.
    let admin: AdminClient<DefaultClientContext> =
        velostream_common::kafka::client_config(&broker.bootstrap)
            .create()
            .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new("rides", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let brokers = broker.bootstrap.clone();
    tokio::task::spawn_blocking(move || produce(&brokers, "rides"))
        .await
        .unwrap();
    let env = Env::new(&[("drain.toml", &dag)]);
    let (status, v) = env.post_json("/api/dags/drain/runs", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_owned();

    // While the sensor runs, its checks are charted live.
    let task_url = format!("/api/runs/{}/tasks/wait", web_common::enc(&run_id));
    let live = velostream_testkit::wait_for_async(
        "two live lag points",
        Duration::from_secs(30),
        || async {
            let task = env.get_json(&task_url).await;
            let points = task["live"]["series"]["lag"]["points"]
                .as_array()
                .map_or(0, Vec::len);
            (task["state"] == "running" && points >= 2).then_some(task)
        },
    )
    .await;
    assert!(
        live["live"]["series"]["lag"]["points"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p[1].as_i64() == Some(MESSAGES)),
        "{live}"
    );
    let (_, fragment) = env
        .get(&format!("/fragments/runs/{}", web_common::enc(&run_id)))
        .await;
    assert!(
        fragment.contains("<polyline class=\"series\""),
        "{fragment}"
    );
    assert!(fragment.contains("lag of <code>wait</code>"));
    assert!(fragment.contains("data-active=\"true\""));

    // Drain the backlog in three commits.
    let consumer: BaseConsumer = velostream_common::kafka::client_config(&broker.bootstrap)
        .set("group.id", "loaders")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    for offset in [100, 200] {
        commit(&consumer, "rides", offset);
        // The sensor's next check sees the smaller backlog.
        let lag = MESSAGES - offset;
        velostream_testkit::wait_for_async(
            &format!("a live lag point of {lag}"),
            Duration::from_secs(30),
            || async {
                let task = env.get_json(&task_url).await;
                task["live"]["series"]["lag"]["points"]
                    .as_array()
                    .and_then(|p| p.last())
                    .is_some_and(|p| p[1].as_i64() == Some(lag))
                    .then_some(())
            },
        )
        .await;
    }
    commit(&consumer, "rides", MESSAGES);
    assert_eq!(env.wait_run(&run_id).await, RunState::Success);

    // Afterwards the chart comes from the recorded series.
    let task = env
        .get_json(&format!(
            "/api/runs/{}/tasks/wait",
            web_common::enc(&run_id)
        ))
        .await;
    assert_eq!(task["outputs"]["peak_lag"], MESSAGES);
    assert_eq!(task["outputs"]["lag"], 0);
    let recorded = task["outputs"]["series"]["lag"]["points"]
        .as_array()
        .unwrap();
    assert!(recorded.len() >= 4, "{task}");
    let (_, page) = env
        .get(&format!("/runs/{}", web_common::enc(&run_id)))
        .await;
    assert!(
        page.contains(&format!(
            "(messages: peak {MESSAGES}, last 0, {} points)",
            recorded.len()
        )),
        "{page}"
    );
}
