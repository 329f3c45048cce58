//! The Kafka task kinds against a real broker: topic creation in its three `if_exists` modes,
//! deletion, an unreachable broker, and the lag sensor.

mod kinds_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kinds_common::{commit, connections, context, dead_broker, produce};
use orchestrator::operators::kafka::{
    self, ConfigValue, CreateTopic, DeleteTopic, Error, IfExists, IfMissing, WaitLag,
};
use orchestrator::operators::{Operator, OperatorError, TaskKind};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use velostream_testkit::Kafka;

fn create(topic: &str, partitions: i32, if_exists: IfExists) -> CreateTopic {
    CreateTopic {
        topic: topic.into(),
        partitions: partitions.into(),
        replication_factor: 1.into(),
        config: Default::default(),
        if_exists,
        timeout: Duration::from_secs(20),
    }
}

fn no_log() -> impl FnMut(String) + Send {
    |line| eprintln!("task log: {line}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topic_keeps_fails_or_recreates_an_existing_topic() {
    let broker = Kafka::start();
    let cancel = CancellationToken::new();
    let mut log = no_log();

    let first = create("trips", 3, IfExists::Keep)
        .run(&broker.bootstrap, &cancel, &mut log)
        .await
        .unwrap();
    assert!(first.created && !first.recreated);
    assert_eq!(first.partitions, 3);
    produce(&broker.bootstrap, "trips", 3, 10);

    let kept = create("trips", 5, IfExists::Keep)
        .run(&broker.bootstrap, &cancel, &mut log)
        .await
        .unwrap();
    assert!(!kept.created);
    assert_eq!(kept.partitions, 3, "keep leaves the existing topic alone");

    let err = create("trips", 3, IfExists::Fail)
        .run(&broker.bootstrap, &cancel, &mut log)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TopicExists { .. }), "{err}");
    assert!(err.to_string().contains("\"trips\""), "{err}");

    let recreated = create("trips", 6, IfExists::Recreate)
        .run(&broker.bootstrap, &cancel, &mut log)
        .await
        .unwrap();
    assert!(recreated.created && recreated.recreated);
    assert_eq!(recreated.partitions, 6);

    let deleted = DeleteTopic {
        topic: "trips".into(),
        if_missing: IfMissing::Fail,
        wait: true,
        timeout: Duration::from_secs(20),
    }
    .run(&broker.bootstrap, &cancel, &mut log)
    .await
    .unwrap();
    assert!(deleted.deleted);
    let again = DeleteTopic {
        topic: "trips".into(),
        if_missing: IfMissing::Ignore,
        wait: true,
        timeout: Duration::from_secs(20),
    }
    .run(&broker.bootstrap, &cancel, &mut log)
    .await
    .unwrap();
    assert!(!again.deleted);
    let err = DeleteTopic {
        topic: "trips".into(),
        if_missing: IfMissing::Fail,
        wait: true,
        timeout: Duration::from_secs(20),
    }
    .run(&broker.bootstrap, &cancel, &mut log)
    .await
    .unwrap_err();
    assert!(matches!(err, Error::TopicMissing { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topic_sends_config_entries() {
    let broker = Kafka::start();
    let mut spec = create("configured", 2, IfExists::Fail);
    spec.config
        .insert("retention.ms".into(), ConfigValue::Integer(3_600_000));
    spec.config
        .insert("cleanup.policy".into(), ConfigValue::Text("delete".into()));
    let outcome = spec
        .run(&broker.bootstrap, &CancellationToken::new(), &mut no_log())
        .await
        .unwrap();
    assert!(outcome.created);
    assert_eq!(outcome.partitions, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_named_in_the_error() {
    let brokers = dead_broker();
    let mut spec = create("t", 1, IfExists::Keep);
    spec.timeout = Duration::from_secs(3);
    let err = spec
        .run(&brokers, &CancellationToken::new(), &mut no_log())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&brokers), "{err}");

    let err = DeleteTopic {
        topic: "t".into(),
        if_missing: IfMissing::Ignore,
        wait: true,
        timeout: Duration::from_secs(3),
    }
    .run(&brokers, &CancellationToken::new(), &mut no_log())
    .await
    .unwrap_err();
    assert!(err.to_string().contains(&brokers), "{err}");

    let err = WaitLag {
        group: "g".into(),
        topic: "t".into(),
        max_lag: 0.into(),
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(10),
        soft_fail: false,
        request_timeout: Duration::from_secs(3),
    }
    .run(&brokers, &CancellationToken::new(), &mut |_, _| {})
    .await
    .unwrap_err();
    assert!(err.to_string().contains(&brokers), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_high_watermark_minus_committed_per_partition() {
    let broker = Kafka::start();
    let cancel = CancellationToken::new();
    create("lagged", 3, IfExists::Fail)
        .run(&broker.bootstrap, &cancel, &mut no_log())
        .await
        .unwrap();
    produce(&broker.bootstrap, "lagged", 3, 20_000);
    commit(&broker.bootstrap, "readers", "lagged", &[20_000, 5_000, 0]);

    let probe = kafka::LagProbe::new(
        &broker.bootstrap,
        "readers",
        "lagged",
        Duration::from_secs(10),
    )
    .unwrap();
    let reading = probe.read().await.unwrap();
    let lags: Vec<(i64, Option<i64>, i64)> = reading
        .partitions
        .iter()
        .map(|p| (p.high_watermark, p.committed, p.lag))
        .collect();
    assert_eq!(
        lags,
        [
            (20_000, Some(20_000), 0),
            (20_000, Some(5_000), 15_000),
            (20_000, Some(0), 20_000)
        ]
    );
    assert_eq!(reading.total, 35_000);

    // A group that never committed lags by every message in the topic.
    let fresh = kafka::LagProbe::new(
        &broker.bootstrap,
        "nobody",
        "lagged",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(fresh.read().await.unwrap().total, 60_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sensor_waits_until_the_last_message_is_committed() {
    let broker = Kafka::start();
    let brokers = broker.bootstrap.clone();
    let cancel = CancellationToken::new();
    create("orders", 2, IfExists::Fail)
        .run(&brokers, &cancel, &mut no_log())
        .await
        .unwrap();
    produce(&brokers, "orders", 2, 500);

    // A real group member consumes all but the last message and commits.
    let consumer: BaseConsumer = velostream_common::kafka::client_config(&brokers)
        .set("group.id", "loaders")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    let mut held_back = None;
    let mut seen = 0;
    while seen < 1000 {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                seen += 1;
                if seen == 1000 {
                    held_back = Some((m.partition(), m.offset()));
                } else {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(
                        "orders",
                        m.partition(),
                        Offset::Offset(m.offset() + 1),
                    )
                    .unwrap();
                    if seen % 100 == 0 || seen == 999 {
                        consumer.commit(&tpl, CommitMode::Sync).unwrap();
                    } else {
                        consumer.commit(&tpl, CommitMode::Async).unwrap();
                    }
                }
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    let (last_partition, last_offset) = held_back.unwrap();

    let final_committed = Arc::new(AtomicBool::new(false));
    let sensor = WaitLag {
        group: "loaders".into(),
        topic: "orders".into(),
        max_lag: 0.into(),
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(60),
        soft_fail: false,
        request_timeout: Duration::from_secs(10),
    };
    let flag = Arc::clone(&final_committed);
    let readings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen_readings = Arc::clone(&readings);
    let task = tokio::spawn({
        let brokers = brokers.clone();
        let cancel = cancel.clone();
        async move {
            sensor
                .run(&brokers, &cancel, &mut |reading, _peak| {
                    if reading.total == 0 {
                        assert!(
                            flag.load(Ordering::SeqCst),
                            "lag read 0 before the last message was committed: {reading:?}"
                        );
                    }
                    seen_readings.lock().unwrap().push(reading.total);
                })
                .await
        }
    });
    // Let the sensor see the lag of 1 a few times, then commit the last message.
    while readings.lock().unwrap().len() < 3 {
        consumer.poll(Duration::from_millis(100));
    }
    final_committed.store(true, Ordering::SeqCst);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("orders", last_partition, Offset::Offset(last_offset + 1))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();

    let outcome = task.await.unwrap().unwrap();
    assert!(outcome.caught_up);
    assert_eq!(outcome.lag, 0);
    assert_eq!(outcome.peak_lag, 1);
    let readings = readings.lock().unwrap().clone();
    assert!(readings[..3].iter().all(|&l| l == 1), "{readings:?}");
    assert_eq!(outcome.checks as usize, readings.len());
    assert_eq!(*readings.last().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_that_never_reaches_zero_times_out() {
    let broker = Kafka::start();
    let cancel = CancellationToken::new();
    create("stuck", 1, IfExists::Fail)
        .run(&broker.bootstrap, &cancel, &mut no_log())
        .await
        .unwrap();
    produce(&broker.bootstrap, "stuck", 1, 100);
    commit(&broker.bootstrap, "slow", "stuck", &[40]);
    let outcome = WaitLag {
        group: "slow".into(),
        topic: "stuck".into(),
        max_lag: 10.into(),
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        soft_fail: false,
        request_timeout: Duration::from_secs(10),
    }
    .run(&broker.bootstrap, &cancel, &mut |_, _| {})
    .await
    .unwrap();
    assert!(!outcome.caught_up);
    assert_eq!(outcome.lag, 60);
    assert_eq!(outcome.peak_lag, 60);
    assert!(outcome.checks >= 2, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kinds_run_as_tasks_and_set_outputs() {
    let broker = Kafka::start();
    let conns = connections(&broker.bootstrap, "http://127.0.0.1:1");
    let kind = |json: serde_json::Value| -> TaskKind { serde_json::from_value(json).unwrap() };

    let ctx = context("create", conns.clone());
    kind(serde_json::json!({"kafka.create_topic": {"topic": "rides", "partitions": 2}}))
        .execute(&ctx)
        .await
        .unwrap();
    assert_eq!(ctx.outputs()["partitions"], 2);
    assert_eq!(ctx.outputs()["created"], true);
    assert!(
        ctx.memory_log().iter().any(|l| l.contains("rides created")),
        "{:?}",
        ctx.memory_log()
    );

    produce(&broker.bootstrap, "rides", 2, 50);
    commit(&broker.bootstrap, "etl", "rides", &[50, 50]);
    let ctx = context("wait", conns.clone());
    kind(serde_json::json!({"kafka.wait_lag": {"group": "etl", "topic": "rides", "interval": "100ms", "timeout": "30s"}}))
        .execute(&ctx)
        .await
        .unwrap();
    let out = ctx.outputs();
    assert_eq!(out["lag"], 0);
    assert_eq!(out["peak_lag"], 0);
    assert_eq!(out["caught_up"], true);
    assert_eq!(out["series"]["lag"]["points"].as_array().unwrap().len(), 1);
    assert_eq!(out["series"]["lag"]["unit"], "messages");
    assert_eq!(out["partitions"][1]["high_watermark"], 50);

    // soft_fail: a lag that stays above the threshold skips the task instead of failing it.
    commit(&broker.bootstrap, "etl", "rides", &[10, 50]);
    let ctx = context("wait", conns.clone());
    let err = kind(serde_json::json!({"kafka.wait_lag": {
        "group": "etl", "topic": "rides", "interval": "100ms", "timeout": "500ms", "soft_fail": true
    }}))
    .execute(&ctx)
    .await
    .unwrap_err();
    let OperatorError::Skipped(message) = err else {
        panic!("expected a skip, got {err}")
    };
    assert!(message.contains("partition 0 lags 40"), "{message}");
    assert_eq!(ctx.outputs()["peak_lag"], 40);
    assert!(
        ctx.outputs()["series"]["lag"]["points"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );

    let ctx = context("drop", conns);
    kind(serde_json::json!({"kafka.delete_topic": {"topic": "rides"}}))
        .execute(&ctx)
        .await
        .unwrap();
    assert_eq!(ctx.outputs()["deleted"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_sensor_stops_promptly() {
    let broker = Kafka::start();
    create("idle", 1, IfExists::Fail)
        .run(&broker.bootstrap, &CancellationToken::new(), &mut no_log())
        .await
        .unwrap();
    produce(&broker.bootstrap, "idle", 1, 5);
    let cancel = CancellationToken::new();
    let sensor = WaitLag {
        group: "never".into(),
        topic: "idle".into(),
        max_lag: 0.into(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(3600),
        soft_fail: false,
        request_timeout: Duration::from_secs(10),
    };
    let trigger = cancel.clone();
    let mut checks = 0;
    let err = sensor
        .run(&broker.bootstrap, &cancel, &mut |_, _| {
            checks += 1;
            if checks == 2 {
                trigger.cancel();
            }
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_stays_right_when_list_offsets_is_stale() {
    // On the local broker ListOffsets(latest) lags behind the log right after a burst of
    // messages. A group committed at that stale end still has messages to read: the sensor must
    // see them, not 0.
    let broker = Kafka::start();
    create("burst", 1, IfExists::Fail)
        .run(&broker.bootstrap, &CancellationToken::new(), &mut no_log())
        .await
        .unwrap();
    let produced = 200_000;
    produce(&broker.bootstrap, "burst", 1, produced);
    let client: BaseConsumer = velostream_common::kafka::client_config(&broker.bootstrap)
        .create()
        .unwrap();
    let (_, listed) = client
        .fetch_watermarks("burst", 0, Duration::from_secs(10))
        .unwrap();
    eprintln!("ListOffsets(latest) says {listed} after {produced} messages");
    commit(&broker.bootstrap, "stale", "burst", &[listed]);
    let probe =
        kafka::LagProbe::new(&broker.bootstrap, "stale", "burst", Duration::from_secs(10)).unwrap();
    let reading = probe.read().await.unwrap();
    assert_eq!(reading.partitions[0].high_watermark, produced as i64);
    assert_eq!(reading.total, produced as i64 - listed);
}

/// A running sensor and what it said: the lag of every reading, and its trouble lines.
struct Watched {
    readings: Arc<std::sync::Mutex<Vec<i64>>>,
    troubles: Arc<std::sync::Mutex<Vec<String>>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<kafka::LagOutcome, Error>>,
}

fn watch(brokers: &str, topic: &str) -> Watched {
    let readings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let troubles = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (brokers, topic, readings, troubles, cancel) = (
            brokers.to_string(),
            topic.to_string(),
            readings.clone(),
            troubles.clone(),
            cancel.clone(),
        );
        async move {
            WaitLag {
                group: "nobody".into(),
                topic,
                max_lag: 0.into(),
                interval: Duration::from_millis(200),
                timeout: Duration::from_secs(50),
                soft_fail: false,
                request_timeout: Duration::from_secs(2),
            }
            .run_with(
                &brokers,
                &cancel,
                &mut |r, _| readings.lock().unwrap().push(r.total),
                &mut |t| troubles.lock().unwrap().push(t.to_string()),
            )
            .await
        }
    });
    Watched {
        readings,
        troubles,
        cancel,
        task,
    }
}

impl Watched {
    fn readings(&self) -> Vec<i64> {
        self.readings.lock().unwrap().clone()
    }

    fn troubles(&self) -> Vec<String> {
        self.troubles.lock().unwrap().clone()
    }
}

/// A durable broker killed and restarted under the sensor is ridden out and said once ("cannot be
/// computed", then "computed again"), with no lag recorded meanwhile (unknown, not 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sensor_rides_out_a_broker_restart_saying_so_once() {
    let mut broker = Kafka::start_with(velostream_testkit::Storage::Durable);
    create("faulty", 2, IfExists::Fail)
        .run(&broker.bootstrap, &CancellationToken::new(), &mut no_log())
        .await
        .unwrap();
    produce(&broker.bootstrap, "faulty", 2, 50);
    let w = watch(&broker.bootstrap, "faulty");
    velostream_testkit::wait_for("two readings", Duration::from_secs(20), || {
        (w.readings().len() >= 2).then_some(())
    });
    broker.kill();
    velostream_testkit::wait_for("the sensor to say so", Duration::from_secs(20), || {
        (!w.troubles().is_empty()).then_some(())
    });
    // Many more checks fail while the broker is down; none is said again.
    let failed_at = std::time::Instant::now();
    velostream_testkit::wait_for("more failed checks", Duration::from_secs(20), || {
        (failed_at.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    assert_eq!(w.troubles().len(), 1, "{:?}", w.troubles());
    let during = w.readings().len();
    broker.restart();
    velostream_testkit::wait_for("the sensor to read again", Duration::from_secs(30), || {
        (w.troubles().len() >= 2 && w.readings().len() > during).then_some(())
    });
    w.cancel.cancel();
    let troubles = w.troubles();
    let readings = w.readings();
    assert!(matches!(w.task.await.unwrap(), Err(Error::Cancelled)));
    assert!(troubles[0].contains("cannot be computed"), "{troubles:?}");
    assert!(troubles[0].contains("not 0"), "{troubles:?}");
    assert!(troubles[1].contains("computed again"), "{troubles:?}");
    // 50 messages in each of the 2 partitions, nothing committed: every reading says 100.
    assert!(
        readings.iter().all(|&lag| lag == 100),
        "a reading other than the true lag: {readings:?}"
    );
}

/// A memory broker restarted under the sensor has lost the topic: the sensor fails at once,
/// saying the topic disappeared and what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sensor_fails_at_once_when_the_topic_vanishes() {
    let mut broker = Kafka::start_with(velostream_testkit::Storage::Memory);
    create("fleeting", 2, IfExists::Fail)
        .run(&broker.bootstrap, &CancellationToken::new(), &mut no_log())
        .await
        .unwrap();
    produce(&broker.bootstrap, "fleeting", 2, 50);
    let w = watch(&broker.bootstrap, "fleeting");
    velostream_testkit::wait_for("two readings", Duration::from_secs(20), || {
        (w.readings().len() >= 2).then_some(())
    });
    broker.restart();
    let err = tokio::time::timeout(Duration::from_secs(30), w.task)
        .await
        .expect("the sensor to fail within 30 s")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::TopicVanished { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("\"fleeting\" disappeared"), "{text}");
    assert!(text.contains("2 partition(s)"), "{text}");
    assert!(text.contains("{0: 50, 1: 50}"), "{text}");
}
