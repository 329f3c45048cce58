//! The HTTP endpoint: `GET /health` (200 when ready, 503 before, a JSON body either way) for the
//! DAG's readiness check, and `GET /metrics` in Prometheus text format.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::{Health, Metrics};

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// The router.
pub fn app(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/health", get(health_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState { health, metrics })
}

async fn health_handler(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.health.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report))
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Serves `app` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_path(app: Router, path: &str) -> (StatusCode, String) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_turns_ready_and_metrics_render() {
        let health = Arc::new(Health::default());
        let metrics = Arc::new(Metrics::new());
        let router = app(health.clone(), metrics.clone());
        let (status, body) = get_path(router.clone(), "/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"ready\":false"), "{body}");
        health.set_clickhouse_ready();
        health.set_joined();
        let (status, body) = get_path(router.clone(), "/health").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        metrics.rows_inserted.inc_by(3);
        let (status, body) = get_path(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("velostream_consumer_rows_inserted_total 3"),
            "{body}"
        );
    }
}
