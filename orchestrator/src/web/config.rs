//! What `orchestrator serve` is told: where the DAGs are, where to listen, who may call, how
//! to schedule.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How `orchestrator serve` runs (the command line fills it in, see `cli::ServeArgs`).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The folder of DAG files (`*.toml`, searched recursively), reloaded when files change.
    pub dags: PathBuf,

    /// Where to listen. Loopback by default; any other address needs --token (or
    /// --allow-unauthenticated).
    pub bind: SocketAddr,

    /// Require this token: `Authorization: Bearer <token>` for API clients, or HTTP basic auth
    /// with any user name and the token as password for browsers.
    pub token: Option<String>,

    /// Serve a non-loopback address without a token (anyone who can reach it can run DAGs).
    pub allow_unauthenticated: bool,

    /// Run every schedule slot missed while the server was down, oldest first (default: only the
    /// most recent one). See docs/api.md, "Catch-up policy".
    pub catchup: bool,

    /// Serve the UI and API only: do not fire schedules.
    pub no_cron: bool,

    /// Grace between SIGTERM and SIGKILL when stopping a task's processes.
    pub kill_grace: Duration,

    /// Tasks running at once across all runs of this server (default: only per-DAG limits).
    pub max_parallel_tasks: Option<usize>,

    /// On SIGINT/SIGTERM, cancel the runs this server drives instead of leaving them resumable
    /// (the next start resumes them).
    pub cancel_runs_on_exit: bool,

    /// The base URL users reach the server at; notifications link to run pages under it.
    /// `None`: `http://<bind>`, unless the bind address is unspecified (0.0.0.0, ::).
    pub public_url: Option<reqwest::Url>,

    /// The server's lease on the state: how often it is renewed, and after how long without a
    /// renewal other servers take this one for dead and pick up its runs.
    pub lease: crate::cron::LeaseSettings,
}

impl ServeOptions {
    /// The URL notifications link to: [`public_url`](Self::public_url), or the bind address.
    pub fn link_base(&self) -> Option<reqwest::Url> {
        self.public_url.clone().or_else(|| {
            (!self.bind.ip().is_unspecified())
                .then(|| reqwest::Url::parse(&format!("http://{}/", self.bind)).ok())
                .flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(bind: &str, public_url: Option<&str>) -> ServeOptions {
        ServeOptions {
            dags: PathBuf::from("dags"),
            bind: bind.parse().unwrap(),
            token: None,
            allow_unauthenticated: false,
            catchup: false,
            no_cron: false,
            kill_grace: Duration::from_secs(5),
            max_parallel_tasks: None,
            cancel_runs_on_exit: false,
            public_url: public_url.map(|u| u.parse().unwrap()),
            lease: Default::default(),
        }
    }

    #[test]
    fn links_go_under_the_public_url_or_the_bind_address() {
        let link = |bind, public| options(bind, public).link_base().map(|u| u.to_string());
        assert_eq!(
            link("127.0.0.1:8080", None).as_deref(),
            Some("http://127.0.0.1:8080/")
        );
        assert_eq!(
            link("0.0.0.0:8080", Some("https://ops.example/velostream")).as_deref(),
            Some("https://ops.example/velostream")
        );
        assert_eq!(link("0.0.0.0:8080", None), None);
        assert_eq!(link("[::]:8080", None), None);
    }
}
