//! http.check against a real HTTP server: expected statuses, body text, a service that comes up
//! late (retry_for), one that is down, and methods with headers and bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use orchestrator::operators::{Operator, OperatorError, TaskContext, TaskKind};
use serde_json::json;

fn kind(json: serde_json::Value) -> TaskKind {
    serde_json::from_value(json).expect("a valid task kind")
}

fn ctx() -> TaskContext {
    TaskContext::builder("kinds", "run-1", "check").build()
}

fn failure(err: OperatorError) -> String {
    match err {
        OperatorError::Failed(message) => message,
        other => panic!("expected a failure message, got {other:?}"),
    }
}

/// Serves `/health` (200 "ok"), `/down` (503), `/warming` (503 for the first 3 requests, then
/// 200) and `POST /echo` (the body back, 201 if the `x-token` header is right) on a free port.
async fn server() -> String {
    let hits = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance") }),
        )
        .route(
            "/warming",
            get(move || {
                let hits = hits.clone();
                async move {
                    if hits.fetch_add(1, Ordering::SeqCst) < 3 {
                        (StatusCode::SERVICE_UNAVAILABLE, "warming up")
                    } else {
                        (StatusCode::OK, "ready")
                    }
                }
            }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                if headers.get("x-token").is_some_and(|v| v == "secret") {
                    (StatusCode::CREATED, body)
                } else {
                    (StatusCode::UNAUTHORIZED, String::new())
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_healthy_service_passes_and_its_answer_becomes_outputs() {
    let base = server().await;
    let ctx = ctx();
    kind(json!({"http.check": {"url": format!("{base}/health"), "body_contains": "ok"}}))
        .execute(&ctx)
        .await
        .unwrap();
    assert_eq!(ctx.outputs()["status"], 200);
    assert_eq!(ctx.outputs()["body"], "ok");
    assert_eq!(ctx.outputs()["attempts"], 1);
}

#[tokio::test]
async fn an_unexpected_status_or_body_fails_with_what_came_back() {
    let base = server().await;
    let err = kind(json!({"http.check": {"url": format!("{base}/down")}}))
        .execute(&ctx())
        .await
        .unwrap_err();
    let message = failure(err);
    assert!(message.contains("answered 503, expected 200"), "{message}");
    assert!(message.contains("maintenance"), "{message}");

    kind(json!({"http.check": {"url": format!("{base}/down"), "expected_status": [500, 503]}}))
        .execute(&ctx())
        .await
        .unwrap();

    let err =
        kind(json!({"http.check": {"url": format!("{base}/health"), "body_contains": "green"}}))
            .execute(&ctx())
            .await
            .unwrap_err();
    assert!(failure(err).contains("without \"green\" in its body"));
}

#[tokio::test]
async fn retry_for_waits_for_a_service_that_comes_up_late() {
    let base = server().await;
    let ctx = ctx();
    kind(json!({"http.check": {"url": format!("{base}/warming"), "retry_for": "30s", "interval": "50ms"}}))
        .execute(&ctx)
        .await
        .unwrap();
    assert_eq!(ctx.outputs()["attempts"], 4);
    assert_eq!(ctx.outputs()["body"], "ready");

    let err = kind(json!({"http.check": {"url": format!("{base}/down"), "retry_for": "300ms", "interval": "100ms"}}))
        .execute(&ctx)
        .await
        .unwrap_err();
    assert!(failure(err).contains("attempts"));
}

#[tokio::test]
async fn a_service_that_is_down_is_named() {
    let url = format!(
        "http://127.0.0.1:{}/health",
        velostream_testkit::free_port()
    );
    let err = kind(json!({"http.check": {"url": url}}))
        .execute(&ctx())
        .await
        .unwrap_err();
    let message = failure(err);
    assert!(
        message.contains(&url) && message.contains("no response"),
        "{message}"
    );
    assert!(message.to_lowercase().contains("connect"), "{message}");
}

#[tokio::test]
async fn methods_headers_and_bodies_are_sent() {
    let base = server().await;
    let ctx = ctx();
    kind(json!({"http.check": {
        "url": format!("{base}/echo"), "method": "post", "expected_status": 201,
        "headers": {"x-token": "secret"}, "body": "{\"ping\":1}", "body_contains": "ping",
    }}))
    .execute(&ctx)
    .await
    .unwrap();
    assert_eq!(ctx.outputs()["body"], "{\"ping\":1}");
    let err = kind(json!({"http.check": {"url": format!("{base}/echo"), "method": "POST", "expected_status": 201}}))
        .execute(&TaskContext::builder("kinds", "run-1", "check").build())
        .await
        .unwrap_err();
    assert!(failure(err).contains("answered 401"));
}
