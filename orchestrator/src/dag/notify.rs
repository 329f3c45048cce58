//! What a DAG says about operating its runs: `[[dag.notify]]` webhooks (which events, where, in
//! which format) and the run's time bounds (`run_timeout`, `deadline`). The loader builds these
//! (`load/limits.rs`); the scheduler and the notifier read them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What happened to a run that a `[[dag.notify]]` entry can ask to be told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// The run ended failed (a leaf failed, it was cancelled, or it passed `run_timeout`).
    Failure,
    /// The run ended successfully.
    Success,
    /// A task's try failed and another try follows after the retry delay.
    Retry,
    /// The run was not done at its `deadline`.
    DeadlineMiss,
    /// The run ended successfully and the DAG's previous finished run had failed.
    Recovered,
}

impl NotifyEvent {
    /// Every event, in the order the docs list them.
    pub const ALL: [NotifyEvent; 5] = [
        Self::Failure,
        Self::Success,
        Self::Retry,
        Self::DeadlineMiss,
        Self::Recovered,
    ];

    /// The name used in DAG files, messages and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failure => "failure",
            Self::Success => "success",
            Self::Retry => "retry",
            Self::DeadlineMiss => "deadline_miss",
            Self::Recovered => "recovered",
        }
    }
}

impl fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event name that is not one of [`NotifyEvent::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown notify event {0:?}")]
pub struct UnknownEvent(pub String);

impl FromStr for NotifyEvent {
    type Err = UnknownEvent;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownEvent(s.to_owned()))
    }
}

/// How a notification's body is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyFormat {
    /// Our JSON document (docs/dag-format.md, "Notifications").
    #[default]
    Json,
    /// A Slack incoming-webhook message (`text` and `blocks`), which Mattermost, Rocket.Chat and
    /// Discord's `/slack` endpoints accept too.
    Slack,
}

impl NotifyFormat {
    /// The name used in DAG files and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Slack => "slack",
        }
    }
}

/// One `[[dag.notify]]` entry, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyTarget {
    /// Its position among the DAG's entries, from 1 (names it where the URL must not be shown).
    pub index: usize,
    /// The events it wants, without duplicates, in [`NotifyEvent::ALL`] order.
    pub on: Vec<NotifyEvent>,
    /// Where the message is POSTed (http or https, `${ENV}` interpolated).
    pub url: reqwest::Url,
    /// The body's format.
    pub format: NotifyFormat,
}

impl NotifyTarget {
    /// Whether it wants `event`.
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.on.contains(&event)
    }

    /// The URL without its path and query, which often hold the webhook's secret (Slack's and
    /// Discord's do): what logs, the store and the UI show.
    pub fn redacted_url(&self) -> String {
        let u = &self.url;
        let host = u.host_str().unwrap_or("?");
        match u.port() {
            Some(port) => format!("{}://{host}:{port}/…", u.scheme()),
            None => format!("{}://{host}/…", u.scheme()),
        }
    }
}

/// How a DAG's runs are operated: time bounds and notifications.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunRules {
    /// `[dag] run_timeout`: a run still going this long after its start is cancelled.
    pub run_timeout: Option<Duration>,
    /// `[dag] deadline`: a run not done this long after its start (a scheduled run: after its
    /// slot) is reported with `deadline_miss`.
    pub deadline: Option<Duration>,
    /// `[[dag.notify]]`, in file order.
    pub notify: Vec<NotifyTarget>,
}
