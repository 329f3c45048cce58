//! The pipeline kinds inside DAG files: their field checks at load time point into the file
//! (line:column), and a whole DAG of them runs against a real broker and ClickHouse, with
//! templated outputs between tasks and a background program owned by the run.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::dag::parse_str_with_env;
use orchestrator::events::EventSink;
use orchestrator::scheduler::{Engine, EngineSettings, RunRequest};
use orchestrator::store::{MemoryStore, RunState, Store, TaskState};
use tokio_util::sync::CancellationToken;
use velostream_testkit::Infra;

#[test]
fn bad_fields_of_every_kind_are_reported_at_their_line_and_column() {
    let text = r#"
[dag]
id = "bad"

[[task]]
id = "topic"
kind = "kafka.create_topic"
topic = "trips"
partitions = 0

[[task]]
id = "no_topic"
kind = "kafka.create_topic"
partitions = 3

[[task]]
id = "lag"
kind = "kafka.wait_lag"
group = "loader"
topic = "bad topic!"

[[task]]
id = "sql"
kind = "clickhouse.sql"
sql = "SELECT count() FROM {table:Identifier}"

[[task]]
id = "check"
kind = "clickhouse.assert"
query = "SELECT 1"

[[task]]
id = "spawn"
kind = "process.spawn"
program = "velostream-consumer"
ready = { timeout = "5s" }

[[task]]
id = "stop"
kind = "process.stop"
task = "ghost"

[[task]]
id = "stop_unrelated"
kind = "process.stop"
task = "spawn"

[[task]]
id = "health"
kind = "http.check"
url = "ftp://127.0.0.1/health"
"#;
    let err = parse_str_with_env(text, "bad.toml", &|_| None).expect_err("the DAG is invalid");
    let report = err.to_string();
    eprintln!("{report}");
    let expect = [
        "bad.toml:9:14: task `topic`: `partitions` is 0; a topic needs at least 1 partition",
        "bad.toml:11:1: missing field `topic`",
        "bad.toml:20:9: task `lag`: `topic` \"bad topic!\" contains ' '",
        "bad.toml:25:7: task `sql`: `sql` line 1: {table:Identifier} has no value; add `table` to the task's `bind` table",
        "missing field `expected`",
        "bad.toml:36:9: task `spawn`: `ready` needs `http` (a health URL) and/or `log_line`",
        "task `stop` refers to task `ghost`, which does not exist",
        "task `stop_unrelated` refers to task `spawn`, which is not upstream of it; add `spawn` to depends_on",
        "bad.toml:51:7: task `health`: `url` \"ftp://127.0.0.1/health\" uses ftp:",
    ];
    for e in expect {
        assert!(report.contains(e), "missing {e:?} in:\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_dag_runs_end_to_end_against_real_servers() {
    let infra = Infra::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("schema.sql"),
        "CREATE TABLE IF NOT EXISTS {table:Identifier} (id UInt64, zone String) ENGINE = MergeTree ORDER BY id;\n\
         INSERT INTO {table:Identifier} SELECT number, toString(number % 7) FROM system.numbers LIMIT {rows:UInt64};\n\
         SELECT count() FROM {table:Identifier};\n",
    )
    .unwrap();
    let text = format!(
        r#"
[dag]
id = "pipeline"

[dag.params]
table = "trips"
rows = 1234
partitions = 3

[connections.kafka]
brokers = "{brokers}"

[connections.clickhouse]
url = "{url}"

[[task]]
id = "topic"
kind = "kafka.create_topic"
# A run id holds `:`, which Kafka topic names may not: use the logical date instead.
topic = "trips-{{{{ unix(logical_date) }}}}"
partitions = "{{{{ params.partitions }}}}"
if_exists = "recreate"

[[task]]
id = "schema"
kind = "clickhouse.sql"
file = "schema.sql"
bind = {{ table = "{{{{ params.table }}}}", rows = "{{{{ params.rows }}}}" }}

[[task]]
id = "count_matches"
kind = "clickhouse.assert"
depends_on = ["schema"]
query = "SELECT count() FROM {{table:Identifier}}"
bind = {{ table = "{{{{ params.table }}}}" }}
expected = "{{{{ tasks.schema.output.value }}}}"

[[task]]
id = "consumer"
kind = "process.spawn"
depends_on = ["topic"]
program = "sh"
args = ["-c", "trap 'echo \"::velostream:: {{\\\"output\\\": {{\\\"rows\\\": 1234}}}}\"; exit 0' TERM; echo consumer for $KAFKA_BROKERS; echo ready; while true; do sleep 0.05; done"]
ready = {{ log_line = "ready", timeout = "10s" }}

[[task]]
id = "bystander"
kind = "process.spawn"
depends_on = ["topic"]
program = "sleep"
args = ["1000"]

[[task]]
id = "drained"
kind = "kafka.wait_lag"
depends_on = ["consumer"]
group = "loader"
topic = "{{{{ tasks.topic.output.topic }}}}"
interval = "100ms"
timeout = "30s"

[[task]]
id = "stop_consumer"
kind = "process.stop"
depends_on = ["drained"]
task = "consumer"
grace = "10s"

[[task]]
id = "rows_match"
kind = "clickhouse.assert"
depends_on = ["stop_consumer", "count_matches"]
query = "SELECT count() FROM {{table:Identifier}}"
bind = {{ table = "{{{{ params.table }}}}" }}
expected = "{{{{ tasks.stop_consumer.output.rows }}}}"

[[task]]
id = "drop_topic"
kind = "kafka.delete_topic"
depends_on = ["rows_match"]
trigger_rule = "all_done"
topic = "{{{{ tasks.topic.output.topic }}}}"
"#,
        brokers = infra.kafka.bootstrap,
        url = infra.clickhouse.http_url,
    );
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, &text).unwrap();
    let dag = Arc::new(orchestrator::dag::load(&path).unwrap_or_else(|e| panic!("{e}")));

    let store = Arc::new(MemoryStore::new());
    let mut settings = EngineSettings::new(dir.path().join("logs"));
    settings.kill_grace = Duration::from_secs(2);
    let engine = Engine::new(store.clone(), settings);
    let outcome = engine
        .run(
            dag,
            RunRequest::default(),
            EventSink::none(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    for t in &outcome.tasks {
        eprintln!("{} {:?} {:?}", t.task_id, t.state, t.error);
    }
    assert_eq!(outcome.state, RunState::Success);
    assert!(outcome.tasks.iter().all(|t| t.state == TaskState::Success));

    let tasks = store.task_instances(&outcome.run_id).unwrap();
    let out = |id: &str| {
        tasks
            .iter()
            .find(|t| t.task_id == id)
            .unwrap()
            .outputs
            .clone()
    };
    assert_eq!(out("schema")["value"], 1234);
    assert_eq!(out("topic")["partitions"], 3);
    assert_eq!(out("drained")["lag"], 0);
    assert_eq!(out("rows_match")["actual"], 1234);
    assert_eq!(out("drop_topic")["deleted"], true);
    // The run owned the program nobody stopped: it is gone with the run.
    let pid = out("bystander")["pid"].as_u64().unwrap();
    let gone = (0..200).any(|_| {
        let dead = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
            .unwrap_or(true);
        if !dead {
            std::thread::sleep(Duration::from_millis(50));
        }
        dead
    });
    assert!(gone, "the bystander process outlived its run");
}

/// The `[[task]]` snippets of the "Pipeline task kinds" section of docs/dag-format.md, loaded as
/// one DAG with the `produce` task and params they refer to.
#[test]
fn the_documented_pipeline_snippets_load_as_one_dag() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dag-format.md"),
    )
    .unwrap();
    let section = doc
        .split("## Pipeline task kinds\n")
        .nth(1)
        .expect("docs/dag-format.md has a \"Pipeline task kinds\" section");
    let section = section.split("\n## ").next().unwrap();
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(blocks.len() >= 8, "{} snippets", blocks.len());
    let text = format!(
        "[dag]\nid = \"doc\"\n\n[dag.params]\ntable = \"taxi_trips\"\ntoken = \"t\"\nconsumers = 1\n\
         consumer_http = \"127.0.0.1:946{{{{ replica }}}}\"\n\n\
         [[task]]\nid = \"produce\"\nkind = \"noop\"\n\n{}",
        blocks.join("\n")
    );
    // Relative paths in the snippets are written for a DAG in dags/; tests run in orchestrator/,
    // a sibling, so `../infrastructure/...` resolves the same.
    let dag = orchestrator::dag::parse_str_with_env(&text, "doc.toml", &|_| None);
    if let Err(e) = &dag {
        panic!("the documented snippets do not load:\n{e}\n\n{text}");
    }
}
