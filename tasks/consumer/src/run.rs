//! One consumer run, wired together: the HTTP endpoint, ClickHouse (connect to every shard,
//! create the tables, check the shard layout),
//! the inserter task, the ingest thread, and the shutdown sequence (stop fetching, flush,
//! commit, leave the group) bounded by the grace period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use tokio_util::sync::CancellationToken;

use crate::kafka::consumer_config;
use crate::kafka::context::IngestContext;
use crate::kafka::dead_letter::DeadLetterProducer;
use crate::kafka::ingest::{self, Ingest, IngestConsumer, IngestOutcome};
use crate::observe::{Health, Metrics, Summary, http, series};
use crate::progress::Handoff;
use crate::settings::{Settings, SettingsError};
use crate::sink::retry::{Backoff, is_permanent};
use crate::sink::shards::LayoutError;
use crate::sink::{OffsetStore, Shards, WriteError, Writer, inserter, schema};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The settings cannot work.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The HTTP endpoint could not listen.
    #[error("cannot listen on {addr} for /health and /metrics: {source}; pick another --http-addr")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// ClickHouse refused to create the tables.
    #[error("cannot create the tables in ClickHouse: {0}")]
    Schema(#[source] clickhouse::error::Error),
    /// The table exists with other columns.
    #[error(transparent)]
    Table(#[from] schema::SchemaError),
    /// The shard list would move partitions that have rows to other shards.
    #[error(transparent)]
    Shards(#[from] LayoutError),
    /// A Kafka client could not be created or subscribed.
    #[error("Kafka: {0}; check KAFKA_BROKERS and the consumer properties")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A batch could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The broker no longer holds what the consumer was reading (see ARCHITECTURE.md, "Exactly
    /// once", broker faults).
    #[error("broker fault: {0}")]
    BrokerFault(String),
    /// Shutdown did not finish flushing.
    #[error("shutdown incomplete: {0}")]
    Incomplete(String),
    /// The ingest thread died.
    #[error("the ingest thread panicked; nothing after the last committed batch was lost")]
    Panicked,
}

/// A consumer, before and while it runs: its metrics and health are readable from outside
/// (the bench and tests watch them).
#[derive(Debug)]
pub struct Consumer {
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Consumer {
    /// A consumer with `settings` (validated by [`Consumer::run`]).
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
        }
    }

    /// Its metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Its readiness.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Runs until `stop` is cancelled (SIGTERM), then flushes, commits and returns what it did.
    /// Fails if a batch cannot be written for good, or if flushing does not finish within the
    /// grace period (nothing is committed for rows not inserted).
    pub async fn run(self, stop: CancellationToken) -> Result<Summary, RunError> {
        let started = Instant::now();
        let s = &self.settings;
        s.validate()?;
        let http_stop = CancellationToken::new();
        let _http_guard = http_stop.clone().drop_guard();
        if let Some(addr) = s.http_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Http { addr, source })?;
            let app = http::app(self.health.clone(), self.metrics.clone());
            tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "Serving /health and /metrics");
            tokio::spawn(http::serve(listener, app, http_stop.clone()));
        }

        let Some(shards) = connect(s, &stop).await? else {
            return Ok(self.summary(None, None, started));
        };
        for server in shards.servers() {
            schema::verify_table(server, &s.table).await?;
        }
        shards.check_layout(&s.table, &s.topic).await?;
        self.health.set_clickhouse_ready();
        tracing::info!(
            version = %shards.server(0).version,
            shards = shards.len(),
            table = %s.table,
            memory_bound_mb = s.memory_bound_bytes() / (1 << 20),
            format = s.format.as_str(),
            "ClickHouse ready"
        );

        let series_stop = http_stop.child_token();
        let series = tokio::spawn(series::report(
            self.metrics.clone(),
            s.series_interval,
            series_stop.clone(),
        ));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let handoff = Arc::new(Handoff::new(tx));
        let offsets = OffsetStore::new(Arc::new(shards), &s.table, &s.topic, &s.group);
        let kafka_config = velostream_common::kafka::client_config(&s.brokers);
        let dead_letters =
            DeadLetterProducer::new(kafka_config.clone(), &s.dead_letter_topic, &s.topic)?;
        dead_letters.ensure_topic(&kafka_config).await;
        let writer = Writer::new(
            &s.table,
            offsets.clone(),
            dead_letters,
            self.metrics.clone(),
            s.insert_timeout,
            s.max_backoff,
        );
        let abort = CancellationToken::new();
        let inserter = tokio::spawn(inserter::run(
            writer,
            rx,
            handoff.clone(),
            self.metrics.clone(),
            abort.clone(),
            stop.clone(),
        ));
        let ingest = Arc::new(Ingest::new(
            &s.topic,
            s.batch_rows,
            s.batch_time,
            s.revoke_timeout,
            s.insert_timeout.min(Duration::from_secs(30)),
            s.max_backoff,
            handoff,
            offsets,
            tokio::runtime::Handle::current(),
            self.health.clone(),
            self.metrics.clone(),
            stop.clone(),
            &s.brokers,
            s.on_topic_reset,
            s.format,
        ));
        let ingest_done = spawn_ingest(s, ingest, s.shutdown_grace)?;

        // The grace period starts at the stop request; past it the writer stops retrying.
        let grace = s.shutdown_grace;
        let deadline_abort = abort.clone();
        let stop_watch = stop.clone();
        tokio::spawn(async move {
            stop_watch.cancelled().await;
            tokio::time::sleep(grace).await;
            deadline_abort.cancel();
        });

        let outcome = ingest_done.await.map_err(|_| RunError::Panicked)??;
        // Every batch was written or abandoned; the ingest side has hung up, so this returns.
        abort.cancel();
        let written = inserter.await.map_err(|_| RunError::Panicked)?;
        let last_write = match written {
            Ok(last) => last,
            Err(WriteError::Aborted { .. })
                if outcome.problem.is_some() || outcome.fault.is_some() =>
            {
                None
            }
            Err(err) => return Err(err.into()),
        };
        // The last points, after the last insert: the lag left behind.
        series_stop.cancel();
        let _ = series.await;
        if let Some(fault) = outcome.fault.clone() {
            return Err(RunError::BrokerFault(fault));
        }
        if let Some(problem) = outcome.problem.clone() {
            return Err(RunError::Incomplete(problem));
        }
        Ok(self.summary(Some(&outcome), last_write, started))
    }

    fn summary(
        &self,
        outcome: Option<&IngestOutcome>,
        last_write: Option<Instant>,
        started: Instant,
    ) -> Summary {
        let m = &self.metrics;
        let active = match (outcome.and_then(|o| o.first_message), last_write) {
            (Some(first), Some(last)) if last > first => last - first,
            _ => Duration::ZERO,
        };
        Summary {
            rows_consumed: m.rows_consumed.get(),
            rows_inserted: m.rows_inserted.get(),
            rows_dead_lettered: m.dead_lettered_total(),
            batches: m.batches.get(),
            ..Summary::default()
        }
        .with_times(active, started.elapsed())
    }
}

/// Connects to ClickHouse (every shard) and creates the tables, retrying while a server is
/// unreachable; `None` if `stop` came first.
async fn connect(s: &Settings, stop: &CancellationToken) -> Result<Option<Shards>, RunError> {
    let mut backoff = Backoff::new(s.max_backoff);
    let configs = s.clickhouse_servers();
    let sharded = configs.len() > 1;
    loop {
        let attempt = async {
            let mut servers = Vec::new();
            for config in &configs {
                // The error names the server's URL.
                let server = config.connect().await.map_err(|e| e.to_string())?;
                let ensured = match schema::ensure_tables(&server, &s.table).await {
                    Ok(()) if sharded => schema::ensure_layout_table(&server).await,
                    other => other,
                };
                match ensured {
                    Ok(()) => servers.push(server),
                    Err(err) if is_permanent(&err) => return Ok(Err(err)),
                    Err(err) => return Err(format!("{}: {err}", config.url)),
                }
            }
            let urls = configs.iter().map(|c| c.url.clone()).collect();
            Ok(Ok(Shards::new(servers, urls)))
        };
        let result = tokio::select! {
            () = stop.cancelled() => return Ok(None),
            r = tokio::time::timeout(s.insert_timeout, attempt) => r,
        };
        let err = match result {
            Ok(Ok(Ok(shards))) => return Ok(Some(shards)),
            Ok(Ok(Err(permanent))) => return Err(RunError::Schema(permanent)),
            Ok(Err(err)) => err,
            Err(_) => format!("no answer within {:?}", s.insert_timeout),
        };
        let delay = backoff.next_delay();
        tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "ClickHouse not ready, retrying");
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Starts the ingest thread, which owns the consumer (so its close, and the revoke callback
/// that comes with it, runs there too).
fn spawn_ingest(
    s: &Settings,
    ingest: Arc<Ingest>,
    grace: Duration,
) -> Result<tokio::sync::oneshot::Receiver<Result<IngestOutcome, RunError>>, RunError> {
    let config = consumer_config(s);
    let topic = s.topic.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let stop = ingest.stop.clone();
    std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || {
            let result = (|| {
                let consumer: IngestConsumer =
                    config.create_with_context(IngestContext::new(ingest.clone()))?;
                consumer.subscribe(&[&topic])?;
                tracing::info!(topic = %topic, "Subscribed; waiting for the group to assign partitions");
                let outcome = ingest::run(&consumer, &ingest, grace);
                drop(consumer);
                Ok(outcome)
            })();
            if result.is_err() {
                stop.cancel();
            }
            let _ = done_tx.send(result);
        })
        .map_err(|e| RunError::Incomplete(format!("cannot start the ingest thread: {e}")))?;
    Ok(done_rx)
}
