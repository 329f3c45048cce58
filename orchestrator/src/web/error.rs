//! Errors of handlers, answered as JSON (`{"error": "..."}`) by the API and as a page by the UI.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::scheduler::EngineError;
use crate::store::StoreError;

/// A request that cannot be served, with the status and a message saying what to do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WebError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    /// Answer with an HTML page instead of JSON.
    pub html: bool,
}

impl WebError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            html: false,
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The same error answered as an HTML page.
    pub fn page(mut self) -> Self {
        self.html = true;
        self
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchRun(_) | StoreError::NoSuchTask { .. } => {
                Self::not_found(e.to_string())
            }
            StoreError::TooManyActiveRuns { .. }
            | StoreError::SlotBusy { .. }
            | StoreError::NotRepairable { .. } => Self::new(StatusCode::CONFLICT, e.to_string()),
            _ => Self::internal(e.to_string()),
        }
    }
}

impl From<EngineError> for WebError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Params(p) => Self::bad_request(p.to_string()),
            EngineError::Store(s) => s.into(),
            EngineError::Plan(p) => Self::bad_request(p.to_string()),
            EngineError::Driver(_) | EngineError::RunDag { .. } => Self::internal(e.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for WebError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(format!("a background task failed: {e}"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "Request failed");
        }
        if self.html {
            let page = ErrorPage {
                status: self.status.as_u16(),
                reason: self.status.canonical_reason().unwrap_or("Error"),
                message: &self.message,
            };
            match page.render() {
                Ok(body) => (self.status, Html(body)).into_response(),
                Err(_) => (self.status, self.message).into_response(),
            }
        } else {
            (
                self.status,
                axum::Json(serde_json::json!({ "error": self.message })),
            )
                .into_response()
        }
    }
}
