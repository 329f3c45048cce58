//! Prometheus metrics, all named `velostream_consumer_*`: rows consumed, inserted and
//! dead-lettered, batches, insert latency and failures, per-partition lag, backpressure.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::record::ErrorKind;

/// Labels of a per-partition metric.
pub type PartitionLabels = Vec<(&'static str, String)>;
/// Labels of the dead-letter counter.
pub type ReasonLabels = Vec<(&'static str, &'static str)>;

/// Every metric of the consumer, cheap to clone (the metrics are shared handles).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Messages read from Kafka (rows and bad records).
    pub rows_consumed: Counter,
    /// Rows ClickHouse acknowledged.
    pub rows_inserted: Counter,
    /// Bad records delivered to the dead-letter topic, by reason.
    pub rows_dead_lettered: Family<ReasonLabels, Counter>,
    /// Batches fully handled (inserted, dead letters delivered, offsets recorded).
    pub batches: Counter,
    /// Rows per inserted batch.
    pub batch_rows: Histogram,
    /// Seconds per successful insert.
    pub insert_duration: Histogram,
    /// Inserts (or offset records) that failed and were retried.
    pub insert_failures: Counter,
    /// Per partition: the broker's high watermark minus the next offset not yet in ClickHouse.
    pub partition_lag: Family<PartitionLabels, Gauge>,
    /// The sum of `partition_lag` over this member's partitions.
    pub lag: Gauge,
    /// 1 while fetching is paused because ClickHouse has not taken the previous batch yet.
    pub fetch_paused: Gauge,
    /// Rows of the batch being inserted (0 when the inserter is idle).
    pub inflight_rows: Gauge,
    /// Partitions assigned to this member.
    pub assigned_partitions: Gauge,
    /// Rebalances seen (assignments).
    pub rebalances: Counter<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("velostream_consumer");
        let m = Self {
            rows_consumed: Counter::default(),
            rows_inserted: Counter::default(),
            rows_dead_lettered: Family::default(),
            batches: Counter::default(),
            batch_rows: Histogram::new(exponential_buckets(1000.0, 4.0, 8)),
            insert_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            insert_failures: Counter::default(),
            partition_lag: Family::default(),
            fetch_paused: Gauge::default(),
            lag: Gauge::default(),
            inflight_rows: Gauge::default(),
            assigned_partitions: Gauge::default(),
            rebalances: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "rows_consumed",
            "Messages read from Kafka, rows and bad records",
            m.rows_consumed.clone(),
        );
        registry.register(
            "rows_inserted",
            "Rows ClickHouse acknowledged",
            m.rows_inserted.clone(),
        );
        registry.register(
            "rows_dead_lettered",
            "Bad records delivered to the dead-letter topic",
            m.rows_dead_lettered.clone(),
        );
        for kind in ErrorKind::ALL {
            // Export zeros from the start, so a dashboard shows the series before the first one.
            let _ = m
                .rows_dead_lettered
                .get_or_create(&vec![("reason", kind.as_str())]);
        }
        registry.register(
            "batches",
            "Batches inserted with their offsets recorded",
            m.batches.clone(),
        );
        registry.register(
            "batch_rows",
            "Rows per inserted batch",
            m.batch_rows.clone(),
        );
        registry.register(
            "insert_duration_seconds",
            "Duration of successful inserts",
            m.insert_duration.clone(),
        );
        registry.register(
            "insert_failures",
            "Failed inserts or offset records, each retried",
            m.insert_failures.clone(),
        );
        registry.register(
            "lag",
            "Messages in this member's partitions not yet in ClickHouse (the sum of partition_lag); -1 while unknown (the broker cannot be read)",
            m.lag.clone(),
        );
        registry.register(
            "partition_lag",
            "High watermark minus the next offset not yet in ClickHouse, per partition",
            m.partition_lag.clone(),
        );
        registry.register(
            "fetch_paused",
            "1 while fetching is paused because ClickHouse is behind",
            m.fetch_paused.clone(),
        );
        registry.register(
            "inflight_rows",
            "Rows of the batch being inserted",
            m.inflight_rows.clone(),
        );
        registry.register(
            "assigned_partitions",
            "Partitions assigned to this member",
            m.assigned_partitions.clone(),
        );
        registry.register(
            "rebalances",
            "Partition assignments received",
            m.rebalances.clone(),
        );
        Self { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Labels of `partition` of `topic`.
    pub fn partition_labels(topic: &str, partition: i32) -> PartitionLabels {
        vec![
            ("topic", topic.to_string()),
            ("partition", partition.to_string()),
        ]
    }

    /// Total rows dead-lettered so far.
    pub fn dead_lettered_total(&self) -> u64 {
        ErrorKind::ALL
            .iter()
            .map(|k| {
                self.rows_dead_lettered
                    .get_or_create(&vec![("reason", k.as_str())])
                    .get()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_the_prefix() {
        let m = Metrics::new();
        m.rows_inserted.inc_by(5);
        m.partition_lag
            .get_or_create(&Metrics::partition_labels("taxi", 3))
            .set(7);
        let text = m.render();
        for name in [
            "velostream_consumer_rows_consumed_total 0",
            "velostream_consumer_rows_inserted_total 5",
            "velostream_consumer_rows_dead_lettered_total{reason=\"not_json\"} 0",
            "velostream_consumer_batches_total",
            "velostream_consumer_insert_duration_seconds_bucket",
            "velostream_consumer_partition_lag{topic=\"taxi\",partition=\"3\"} 7",
            "velostream_consumer_fetch_paused 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert_eq!(m.dead_lettered_total(), 0);
    }
}
