//! What the consumer tells the outside world while it runs: Prometheus metrics, the health
//! endpoint the DAG's readiness check polls, the time series for the run page, and the final
//! summary line on stdout.

pub mod health;
pub mod http;
pub mod metrics;
pub mod series;
pub mod summary;

pub use health::Health;
pub use metrics::Metrics;
pub use summary::Summary;
