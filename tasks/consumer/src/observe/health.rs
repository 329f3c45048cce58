//! Readiness as the DAG's health check sees it: ready once ClickHouse answered and this member
//! has joined its group (received an assignment, possibly empty), until shutdown begins. It also
//! says whether the broker can be reached right now (informational: an outage the consumer rides
//! out does not make it unready).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shared readiness flags.
#[derive(Debug, Default)]
pub struct Health {
    clickhouse: AtomicBool,
    joined: AtomicBool,
    stopping: AtomicBool,
    assignments: AtomicU64,
    broker_down: AtomicBool,
}

/// A snapshot for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HealthReport {
    /// Whether the DAG may consider the consumer started.
    pub ready: bool,
    /// ClickHouse answered at start-up and the tables exist.
    pub clickhouse: bool,
    /// The group gave this member an assignment.
    pub joined_group: bool,
    /// Shutdown has begun.
    pub stopping: bool,
    /// Assignments received so far (rebalances).
    pub assignments: u64,
    /// The broker answers (false during an outage: the lag is unknown then).
    pub broker_reachable: bool,
}

impl Health {
    /// ClickHouse answered and the tables exist.
    pub fn set_clickhouse_ready(&self) {
        self.clickhouse.store(true, Ordering::SeqCst);
    }

    /// The group assigned partitions (possibly none) to this member.
    pub fn set_joined(&self) {
        self.joined.store(true, Ordering::SeqCst);
        self.assignments.fetch_add(1, Ordering::SeqCst);
    }

    /// Shutdown has begun: no longer ready.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The broker stopped or started answering.
    pub fn set_broker_reachable(&self, reachable: bool) {
        self.broker_down.store(!reachable, Ordering::SeqCst);
    }

    /// The current state.
    pub fn report(&self) -> HealthReport {
        let clickhouse = self.clickhouse.load(Ordering::SeqCst);
        let joined_group = self.joined.load(Ordering::SeqCst);
        let stopping = self.stopping.load(Ordering::SeqCst);
        HealthReport {
            ready: clickhouse && joined_group && !stopping,
            clickhouse,
            joined_group,
            stopping,
            assignments: self.assignments.load(Ordering::SeqCst),
            broker_reachable: !self.broker_down.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_clickhouse_and_the_group() {
        let h = Health::default();
        assert!(!h.report().ready);
        h.set_joined();
        assert!(!h.report().ready);
        h.set_clickhouse_ready();
        assert!(h.report().ready);
        h.set_broker_reachable(false);
        assert!(h.report().ready && !h.report().broker_reachable);
        h.set_broker_reachable(true);
        h.set_stopping();
        assert!(!h.report().ready);
        assert_eq!(h.report().assignments, 1);
    }
}
