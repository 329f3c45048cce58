//! The `orchestrator serve` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `orchestrator serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The folder of DAG files (`*.toml`, searched recursively), reloaded when files change.
    #[arg(long, env = "VELOSTREAM_DAGS", default_value = "dags")]
    pub dags: PathBuf,

    /// Where to listen. Loopback by default; any other address needs --token (or
    /// --allow-unauthenticated).
    #[arg(long, env = "VELOSTREAM_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Require this token: `Authorization: Bearer <token>` for API clients, or HTTP basic auth
    /// with any user name and the token as password for browsers.
    #[arg(long, env = "VELOSTREAM_UI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Serve a non-loopback address without a token (anyone who can reach it can run DAGs).
    #[arg(long)]
    pub allow_unauthenticated: bool,

    /// Run every schedule slot missed while the server was down, oldest first (default: only the
    /// most recent one). See docs/api.md, "Catch-up policy".
    #[arg(long, env = "VELOSTREAM_CATCHUP")]
    pub catchup: bool,

    /// Serve the UI and API only: do not fire schedules.
    #[arg(long)]
    pub no_cron: bool,

    /// Grace between SIGTERM and SIGKILL when stopping a task's processes.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub kill_grace: Duration,

    /// Tasks running at once across all runs of this server (default: only per-DAG limits).
    #[arg(long, value_name = "N")]
    pub max_parallel_tasks: Option<usize>,
}
