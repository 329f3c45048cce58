//! Writes one batch for good: inserts its rows (RowBinary through the clickhouse crate),
//! delivers its dead letters, then records its offsets in ClickHouse, each step retried with
//! backoff until it succeeds, fails for good, or the caller aborts. Only then is the batch done;
//! nothing about it is committed anywhere before. With a sharded ClickHouse the rows of each
//! shard's partitions are one insert into that shard's table, and each shard's offset records
//! are written there once every shard has its rows.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::offsets::OffsetStore;
use super::retry::{Backoff, is_permanent};
use crate::batch::Batch;
use crate::kafka::dead_letter::DeadLetterProducer;
use crate::observe::Metrics;
use crate::record::rowbinary;

/// Bytes per chunk streamed to ClickHouse.
const SEND_CHUNK: usize = 1 << 20;

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// ClickHouse refused in a way no retry fixes.
    #[error(
        "{step} failed for good at {url}: {source}; check that table {table} has the columns of infrastructure/clickhouse/taxi_trips.sql and that the ClickHouse user may write to it"
    )]
    Permanent {
        /// What was being done.
        step: &'static str,
        /// The server (the shard) that refused.
        url: String,
        /// The table.
        table: String,
        /// ClickHouse's error.
        #[source]
        source: clickhouse::error::Error,
    },
    /// The caller gave up (shutdown deadline) while ClickHouse or Kafka was still failing.
    #[error("gave up on batch {seq} ({rows} rows) at shutdown: {last_error}")]
    Aborted {
        /// The batch.
        seq: u64,
        /// Its rows.
        rows: usize,
        /// The last error seen, if any.
        last_error: String,
    },
}

/// Writes batches into one table (on every shard).
#[derive(Debug)]
pub struct Writer {
    table: String,
    offsets: OffsetStore,
    dead_letters: DeadLetterProducer,
    metrics: Arc<Metrics>,
    attempt_timeout: Duration,
    max_backoff: Duration,
}

impl Writer {
    /// A writer of rows into `table` on the shards of `offsets`, which names the topic
    /// (incarnation) they come from.
    pub fn new(
        table: &str,
        offsets: OffsetStore,
        dead_letters: DeadLetterProducer,
        metrics: Arc<Metrics>,
        attempt_timeout: Duration,
        max_backoff: Duration,
    ) -> Self {
        Self {
            table: table.to_string(),
            offsets,
            dead_letters,
            metrics,
            attempt_timeout,
            max_backoff,
        }
    }

    /// Inserts the rows, delivers the dead letters, records the offsets.
    pub async fn write(&self, batch: &Batch, abort: &CancellationToken) -> Result<(), WriteError> {
        let shards = self.offsets.shards();
        if batch.rows > 0 {
            let started = Instant::now();
            let by_shard = shards.split(batch.partitions.keys().copied(), |p| *p);
            for (shard, partitions) in &by_shard {
                if partitions.iter().all(|p| batch.partitions[p].rows == 0) {
                    continue;
                }
                self.retry(batch, "insert", *shard, abort, || {
                    self.insert_rows(batch, *shard, partitions)
                })
                .await?;
            }
            self.metrics
                .insert_duration
                .observe(started.elapsed().as_secs_f64());
            self.metrics.rows_inserted.inc_by(batch.rows as u64);
            self.metrics.batch_rows.observe(batch.rows as f64);
        }
        if !batch.dead_letters.is_empty() {
            self.deliver_dead_letters(batch, abort).await?;
        }
        let positions = shards.split(batch.spans().map(|(p, s)| (p, s.next)), |(p, _)| *p);
        for (shard, positions) in &positions {
            self.retry(batch, "record offsets", *shard, abort, || {
                self.offsets.save(*shard, positions)
            })
            .await?;
        }
        self.metrics.batches.inc();
        Ok(())
    }

    /// One `INSERT ... FORMAT RowBinary` into `shard` of the batch's rows of `partitions` (that
    /// shard's): each partition's rows in offset order, partitions in order, so ClickHouse gets
    /// input already sorted by the table's key (which costs it about half as much as unsorted
    /// input).
    async fn insert_rows(
        &self,
        batch: &Batch,
        shard: usize,
        partitions: &[i32],
    ) -> Result<(), clickhouse::error::Error> {
        let server = self.offsets.shards().server(shard);
        let sql = format!(
            "INSERT INTO {} ({}) FORMAT RowBinary",
            self.table,
            rowbinary::column_list()
        );
        let mut insert = server.client.insert_formatted_with(sql);
        if server.version.has_insert_deduplication_token() {
            insert = insert.with_setting(
                "insert_deduplication_token",
                dedup_token(batch, &self.offsets.identity(), partitions),
            );
        }
        if server.version.is_modern() {
            // A batch of odd TLC rows can span many months; never refuse it for that.
            insert = insert.with_setting("max_partitions_per_insert_block", "0");
        }
        for rows in partitions.iter().map(|p| &batch.partitions[p]) {
            for chunk in rows.bytes.chunks(SEND_CHUNK) {
                insert.send(Bytes::copy_from_slice(chunk)).await?;
            }
        }
        insert.end().await
    }

    async fn retry<F, Fut>(
        &self,
        batch: &Batch,
        step: &'static str,
        shard: usize,
        abort: &CancellationToken,
        mut attempt: F,
    ) -> Result<(), WriteError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), clickhouse::error::Error>>,
    {
        let mut backoff = Backoff::new(self.max_backoff);
        let mut last_error = String::new();
        loop {
            let outcome = tokio::select! {
                biased;
                () = abort.cancelled() => None,
                r = tokio::time::timeout(self.attempt_timeout, attempt()) => Some(r),
            };
            let err = match outcome {
                None => return Err(self.aborted(batch, last_error)),
                Some(Ok(Ok(()))) => return Ok(()),
                Some(Ok(Err(err))) if is_permanent(&err) => {
                    return Err(WriteError::Permanent {
                        step,
                        url: self.offsets.shards().url(shard).to_string(),
                        table: self.table.clone(),
                        source: err,
                    });
                }
                Some(Ok(Err(err))) => err.to_string(),
                Some(Err(_)) => format!("no answer within {:?}", self.attempt_timeout),
            };
            self.metrics.insert_failures.inc();
            let delay = backoff.next_delay();
            tracing::warn!(
                batch = batch.seq,
                rows = batch.rows,
                step,
                url = self.offsets.shards().url(shard),
                error = %err,
                retry_in_ms = delay.as_millis() as u64,
                "ClickHouse failed, retrying"
            );
            last_error = err;
            tokio::select! {
                () = abort.cancelled() => return Err(self.aborted(batch, last_error)),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn aborted(&self, batch: &Batch, last_error: String) -> WriteError {
        WriteError::Aborted {
            seq: batch.seq,
            rows: batch.rows,
            last_error,
        }
    }

    async fn deliver_dead_letters(
        &self,
        batch: &Batch,
        abort: &CancellationToken,
    ) -> Result<(), WriteError> {
        let mut pending: Vec<_> = batch.dead_letters.iter().collect();
        let mut backoff = Backoff::new(self.max_backoff);
        loop {
            let result = tokio::select! {
                () = abort.cancelled() => return Err(self.aborted(batch, "dead-letter delivery".into())),
                r = self.dead_letters.deliver(&pending) => r,
            };
            let failed = match result {
                Ok(()) => Vec::new(),
                Err((failed, err)) => {
                    tracing::warn!(batch = batch.seq, failed = failed.len(), error = %err, "Dead-letter delivery failed, retrying");
                    failed
                }
            };
            for (i, letter) in pending.iter().enumerate() {
                if !failed.contains(&i) {
                    self.metrics
                        .rows_dead_lettered
                        .get_or_create(&vec![("reason", letter.error.kind.as_str())])
                        .inc();
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            pending = failed.into_iter().map(|i| pending[i]).collect();
            tokio::select! {
                () = abort.cancelled() => return Err(self.aborted(batch, "dead-letter delivery".into())),
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
}

/// The `insert_deduplication_token` of the rows of `partitions` of `batch` (one shard's): the
/// topic and those partitions' spans, so a retry of the same insert is recognised. For all of a
/// batch's partitions it is [`Batch::dedup_token`].
fn dedup_token(batch: &Batch, topic: &str, partitions: &[i32]) -> String {
    let mut token = String::from(topic);
    for (p, s) in batch.spans().filter(|(p, _)| partitions.contains(p)) {
        let _ = write!(token, "/{p}:{}-{}", s.first, s.next);
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shards_token_names_its_partitions_only() {
        let trip = crate::record::decode(br#"{"VendorID":1,"tpep_pickup_datetime":"2023-01-01 00:00:00","tpep_dropoff_datetime":"2023-01-01 00:10:00","trip_distance":1,"PULocationID":1,"DOLocationID":2,"payment_type":1,"fare_amount":1,"extra":0,"mta_tax":0,"tip_amount":0,"tolls_amount":0,"improvement_surcharge":0,"total_amount":1}"#).unwrap();
        let mut b = Batch::new(1);
        for (p, o) in [(0, 10), (1, 5), (2, 7), (0, 11)] {
            b.push_row("taxi", p, o, &trip);
        }
        assert_eq!(dedup_token(&b, "taxi", &[0, 2]), "taxi/0:10-12/2:7-8");
        assert_eq!(dedup_token(&b, "taxi", &[1]), "taxi/1:5-6");
        assert_eq!(dedup_token(&b, "taxi", &[0, 1, 2]), b.dedup_token("taxi"));
    }
}
