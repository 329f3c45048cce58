//! Counters of a run, shared by the sending thread, the delivery callback, the progress reporter
//! and the Prometheus endpoint. They are Prometheus counters (atomics), so `/metrics` reads the
//! same numbers the final summary prints.

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The run's counters. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Rows handed to the Kafka client.
    pub enqueued: Counter,
    /// Rows the broker acknowledged.
    pub delivered: Counter,
    /// JSON bytes of the acknowledged rows.
    pub bytes: Counter,
    /// Rows that failed (enqueue or delivery).
    pub failed: Counter,
    /// Rows the run will send in total.
    pub total: Gauge,
    first_error: Arc<Mutex<Option<String>>>,
}

impl Stats {
    /// Registers the counters as `velostream_producer_*`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("velostream_producer");
        sub.register(
            "rows_enqueued",
            "Rows handed to the Kafka client",
            self.enqueued.clone(),
        );
        sub.register(
            "rows",
            "Rows acknowledged by the broker",
            self.delivered.clone(),
        );
        sub.register(
            "bytes",
            "JSON bytes of the rows acknowledged by the broker",
            self.bytes.clone(),
        );
        sub.register(
            "errors",
            "Rows that could not be enqueued or delivered",
            self.failed.clone(),
        );
        sub.register(
            "rows_planned",
            "Rows this run sends in total",
            self.total.clone(),
        );
    }

    /// Counts a failed row and remembers the first error's text.
    pub fn fail(&self, error: impl FnOnce() -> String) {
        if self.failed.inc() == 0
            && let Ok(mut first) = self.first_error.lock()
        {
            first.get_or_insert_with(error);
        }
    }

    /// The first failure's message, if any row failed.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }
}
