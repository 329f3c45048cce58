//! The one router: pages, fragments, static files, the JSON API and `/metrics`, behind
//! [`security::guard`](super::security::guard).

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use super::state::AppState;
use super::{api, assets, backfill, pages, repair, security};

/// The whole web app over `state`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::dags))
        .route("/dags/{dag_id}", get(pages::dag))
        .route("/runs/{run_id}", get(pages::run))
        .route("/runs/{run_id}/tasks/{task_id}/log", get(pages::log))
        .route("/fragments/dags", get(pages::dags_fragment))
        .route("/fragments/dags/{dag_id}", get(pages::dag_fragment))
        .route("/fragments/runs/{run_id}", get(pages::run_fragment))
        .route("/static/{file}", get(assets::file))
        .route("/metrics", get(api::metrics))
        .route("/api", get(api::index))
        .route("/api/health", get(api::health))
        .route("/api/csrf", get(api::csrf))
        .route("/api/dags", get(api::dags))
        .route("/api/dags/{dag_id}", get(api::dag))
        .route(
            "/api/dags/{dag_id}/runs",
            get(api::dag_runs).post(api::trigger),
        )
        .route("/api/dags/{dag_id}/pause", post(api::pause))
        .route("/api/dags/{dag_id}/unpause", post(api::unpause))
        .route("/api/dags/{dag_id}/next", get(backfill::next))
        .route(
            "/api/dags/{dag_id}/backfills",
            get(backfill::list_dag).post(backfill::start),
        )
        .route("/api/backfills", get(backfill::list))
        .route(
            "/api/backfills/{backfill_id}/cancel",
            post(backfill::cancel),
        )
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{run_id}", get(api::run))
        .route("/api/runs/{run_id}/notifications", get(api::notifications))
        .route("/api/runs/{run_id}/cancel", post(api::cancel))
        .route("/api/runs/{run_id}/clear", post(repair::clear))
        .route("/api/runs/{run_id}/resume", post(repair::resume))
        .route("/api/runs/{run_id}/notes", post(repair::notes))
        .route("/api/runs/{run_id}/dag", get(repair::dag))
        .route(
            "/api/runs/{run_id}/tasks/{task_id}/mark",
            post(repair::mark),
        )
        .route("/api/runs/{run_id}/tasks/{task_id}", get(api::task))
        .route("/api/runs/{run_id}/tasks/{task_id}/log", get(api::log))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> super::error::WebError {
    super::error::WebError::not_found(format!("nothing at {}", uri.path()))
}
