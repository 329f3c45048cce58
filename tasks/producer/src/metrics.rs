//! The optional Prometheus endpoint (`--metrics-addr`): `GET /metrics` in the text format, served
//! by axum on a small runtime of its own so the producing threads never wait on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// The router: `/metrics` renders `registry`.
pub fn app(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(registry)
}

async fn render(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics failed: {e}"),
        ),
    }
}

/// A running metrics server; stopped when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    /// Where it listens (the real port when 0 was asked for).
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` now (so a taken port fails before producing) and serves on a thread.
    pub fn start(addr: SocketAddr, registry: Registry) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = app(Arc::new(registry));
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let served = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => axum::serve(listener, app)
                            .with_graceful_shutdown(async {
                                let _ = stopped.await;
                            })
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(error) = served {
                        tracing::warn!(%error, "Metrics server stopped");
                    }
                });
            })?;
        tracing::info!(%addr, "Serving Prometheus metrics on /metrics");
        Ok(Self {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::stats::Stats;

    #[test]
    fn serves_the_run_counters() {
        let stats = Stats::default();
        let mut registry = Registry::default();
        stats.register(&mut registry);
        stats.delivered.inc_by(42);
        stats.bytes.inc_by(4200);
        stats.fail(|| "boom".into());
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), registry).unwrap();

        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        assert!(
            response.contains("velostream_producer_rows_total 42"),
            "{response}"
        );
        assert!(response.contains("velostream_producer_bytes_total 4200"));
        assert!(response.contains("velostream_producer_errors_total 1"));
        assert_eq!(stats.first_error().as_deref(), Some("boom"));
    }
}
