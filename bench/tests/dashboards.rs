//! The Grafana dashboards against the metrics our programs really serve: a fresh broker and
//! ClickHouse, the producer streaming the taxi sample, the consumer draining it and `orchestrator
//! serve` over a state file with a finished run; their `/metrics` are scraped and every dashboard
//! query must name only what they export. Also: the metrics are documented in
//! observability/README.md, and provisioning, Prometheus and Docker Compose agree.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Proc, program, scrape, wait_for};
use velostream_bench::dashboards::{self, DATASOURCE_UID, Dashboard};
use velostream_bench::exposition::Exposition;
use velostream_testkit::{Infra, free_port, repo_root, taxi_sample};

fn observability() -> PathBuf {
    repo_root().join("observability")
}

/// What the three programs export, scraped from their real endpoints.
struct Exported {
    producer: Exposition,
    consumer: Exposition,
    orchestrator: Exposition,
}

impl Exported {
    fn series_names(&self) -> BTreeSet<String> {
        let mut all = self.producer.series_names();
        all.extend(self.consumer.series_names());
        all.extend(self.orchestrator.series_names());
        all
    }

    fn families(&self) -> BTreeSet<String> {
        [&self.producer, &self.consumer, &self.orchestrator]
            .iter()
            .flat_map(|e| e.families.keys().cloned())
            .collect()
    }
}

fn scrape_every_program(infra: &Infra, scratch: &std::path::Path) -> Exported {
    let topic = "dash-taxi";

    // The producer, long enough to be scraped mid-run: the sample repeated 1,000 times.
    let producer_addr = format!("127.0.0.1:{}", free_port());
    let mut producer = Proc::spawn(
        "velostream-producer",
        Command::new(program("velostream-producer"))
            .args(["--brokers", &infra.kafka.bootstrap, "--topic", topic])
            .args(["--create-topic", "--partitions", "3", "--repeat", "1000"])
            .args(["--progress", "none", "--metrics-addr", &producer_addr])
            .arg(taxi_sample()),
        scratch,
    );
    let producer_text = wait_for(
        "the producer to deliver rows",
        Duration::from_secs(60),
        || {
            let text = scrape(&producer_addr)?;
            let e = Exposition::parse(&text).ok()?;
            (e.sum("velostream_producer_rows_total")? > 0.0).then_some(text)
        },
    );

    // The consumer, until it has inserted rows (so per-partition series exist).
    let consumer_addr = format!("127.0.0.1:{}", free_port());
    let mut consumer = Proc::spawn(
        "velostream-consumer",
        Command::new(program("velostream-consumer"))
            .args(["--brokers", &infra.kafka.bootstrap, "--topic", topic])
            .args(["--group", "dash", "--table", "dash_trips"])
            .args(["--batch-rows", "100000", "--http-addr", &consumer_addr])
            .env("CLICKHOUSE_URL", &infra.clickhouse.http_url)
            .env("CLICKHOUSE_USER", infra.clickhouse.user)
            .env("CLICKHOUSE_PASSWORD", infra.clickhouse.password),
        scratch,
    );
    let consumer_text = wait_for(
        "the consumer to insert rows",
        Duration::from_secs(120),
        || {
            let text = scrape(&consumer_addr)?;
            let e = Exposition::parse(&text).ok()?;
            (e.sum("velostream_consumer_rows_inserted_total")? > 0.0
                && e.sum("velostream_consumer_partition_lag").is_some())
            .then_some(text)
        },
    );
    producer.stop();
    consumer.stop();

    // The orchestrator: a finished run in the state file, then serve over it.
    let state = scratch.join("state.db");
    let run = Command::new(program("orchestrator"))
        .arg("run")
        .arg(repo_root().join("dags/examples/hello.toml"))
        .args(["--no-progress", "--param", "rows=10"])
        .arg("--state")
        .arg(&state)
        .current_dir(scratch)
        .output()
        .unwrap();
    assert!(run.status.success(), "orchestrator run hello: {run:?}");
    let serve_addr = format!("127.0.0.1:{}", free_port());
    let mut serve = Proc::spawn(
        "orchestrator-serve",
        Command::new(program("orchestrator"))
            .args(["serve", "--no-cron", "--bind", &serve_addr])
            .arg("--dags")
            .arg(repo_root().join("dags"))
            .arg("--state")
            .arg(&state)
            .current_dir(scratch),
        scratch,
    );
    let orchestrator_text = wait_for(
        "orchestrator serve to count the run",
        Duration::from_secs(60),
        || {
            let text = scrape(&serve_addr)?;
            let e = Exposition::parse(&text).ok()?;
            (e.sum("velostream_orchestrator_runs")? > 0.0).then_some(text)
        },
    );
    serve.stop();

    Exported {
        producer: Exposition::parse(&producer_text).unwrap(),
        consumer: Exposition::parse(&consumer_text).unwrap(),
        orchestrator: Exposition::parse(&orchestrator_text).unwrap(),
    }
}

#[test]
fn every_dashboard_query_names_a_metric_our_programs_export() {
    let infra = Infra::start();
    let scratch = tempfile::tempdir().unwrap();
    let exported = scrape_every_program(&infra, scratch.path());
    let names = exported.series_names();

    // The scrape saw what the issue asks each program for.
    for name in [
        "velostream_producer_rows_total",
        "velostream_producer_bytes_total",
        "velostream_producer_errors_total",
        "velostream_consumer_rows_consumed_total",
        "velostream_consumer_rows_inserted_total",
        "velostream_consumer_rows_dead_lettered_total",
        "velostream_consumer_insert_duration_seconds_bucket",
        "velostream_consumer_batch_rows_bucket",
        "velostream_consumer_partition_lag",
        "velostream_orchestrator_runs",
        "velostream_orchestrator_task_instances",
        "velostream_orchestrator_task_duration_seconds_bucket",
        "velostream_orchestrator_scheduling_delay_seconds_bucket",
    ] {
        assert!(names.contains(name), "{name} is not exported: {names:#?}");
    }
    assert!(
        names.iter().all(|n| n.starts_with("velostream_")),
        "a metric without the velostream_ prefix: {names:#?}"
    );

    let boards = dashboards::load_dir(&observability().join("grafana/dashboards")).unwrap();
    assert!(
        boards.len() >= 2,
        "expected the pipeline and orchestrator dashboards"
    );
    let problems = dashboards::check(&boards, &names);
    assert!(
        problems.is_empty(),
        "dashboard problems:\n{}",
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The panels the issue names exist and query what they say.
    let panel_queries = |title: &str| -> Vec<String> {
        boards
            .iter()
            .flat_map(Dashboard::panels)
            .filter(|p| p["title"].as_str().is_some_and(|t| t.starts_with(title)))
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t["expr"].as_str().map(String::from))
            .collect()
    };
    for (title, metric) in [
        ("Producer throughput", "velostream_producer_rows_total"),
        ("Consumer lag", "velostream_consumer_partition_lag"),
        ("Total records", "velostream_consumer_rows_inserted_total"),
        (
            "Insert latency",
            "velostream_consumer_insert_duration_seconds_bucket",
        ),
        ("Task timeline", "velostream_orchestrator_task_instances"),
    ] {
        let queries = panel_queries(title);
        assert!(
            queries.iter().any(|q| q.contains(metric)),
            "no panel titled {title:?} queries {metric}: {queries:?}"
        );
    }

    // A dashboard naming a metric that does not exist fails the same check.
    let mut broken = boards[0].clone();
    broken.json["panels"][1]["targets"][0]["expr"] =
        "sum(rate(velostream_consumer_rows_inserted[5m]))".into();
    let problems = dashboards::check(&[broken], &names);
    assert!(
        problems.iter().any(|p| p
            .message
            .contains("names velostream_consumer_rows_inserted,")),
        "{problems:#?}"
    );

    // Every exported family is documented.
    let readme = std::fs::read_to_string(observability().join("README.md")).unwrap();
    for family in exported.families() {
        assert!(
            readme.contains(&format!("`{family}`")),
            "{family} is exported but not documented in observability/README.md"
        );
    }
}

#[test]
fn provisioning_prometheus_and_docker_compose_agree() {
    let read = |p: &str| std::fs::read_to_string(repo_root().join(p)).unwrap();
    let compose = read("infrastructure/docker-compose.yml");
    for mount in [
        "../observability/prometheus.yml:/etc/prometheus/prometheus.yml",
        "../observability/grafana/provisioning:/etc/grafana/provisioning",
        "../observability/grafana/dashboards:/var/lib/grafana/dashboards",
        "--web.listen-address=127.0.0.1:9090",
    ] {
        assert!(compose.contains(mount), "docker-compose.yml lacks {mount}");
    }
    let datasource = read("observability/grafana/provisioning/datasources/prometheus.yml");
    assert!(datasource.contains(&format!("uid: {DATASOURCE_UID}")));
    assert!(datasource.contains("url: http://127.0.0.1:9090"));
    let provider = read("observability/grafana/provisioning/dashboards/velostream.yml");
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));

    // Prometheus scrapes the programs where they listen by default.
    let prometheus = read("observability/prometheus.yml");
    let help = |prog: &str, args: &[&str]| {
        let out = Command::new(program(prog))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(help("velostream-consumer", &[]).contains("127.0.0.1:9464"));
    assert!(help("orchestrator", &["serve"]).contains("127.0.0.1:8080"));
    for target in ["127.0.0.1:9464", "127.0.0.1:8080", "127.0.0.1:9465"] {
        assert!(
            prometheus.contains(&format!("\"{target}\"")),
            "prometheus.yml does not scrape {target}"
        );
    }
    assert!(read("observability/README.md").contains("VELOSTREAM_METRICS_ADDR=127.0.0.1:9465"));
}
