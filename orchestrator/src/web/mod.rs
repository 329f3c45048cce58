//! `orchestrator serve`: the web UI, its JSON API and `/metrics`, over the same store as the CLI,
//! with the cron scheduler of [`crate::cron`] in the same process.
//!
//! One [`app`] builds the router from an [`AppState`]; pages are askama templates (in
//! `orchestrator/templates/`) rendered through one wrapper, refreshed in place by a small script
//! that polls their live fragments; every action the UI takes is a JSON API call (`docs/api.md`).
//! [`security`] holds the rules: loopback bind by default, optional token, POST-only state
//! changes with an origin check and a CSRF token, HTML escaping, logs served only from the log
//! directory.

mod api;
mod assets;
mod backfill;
mod config;
mod error;
mod metrics;
mod pages;
mod repair;
mod router;
pub mod security;
mod server;
mod state;
mod svg;
mod view;

pub use config::ServeOptions;
pub use error::WebError;
pub use metrics::Metrics;
pub use router::app;
pub use security::SecurityConfig;
pub use server::{OnExit, serve, serve_on, serve_with};
pub use state::AppState;
pub use view::enc;
