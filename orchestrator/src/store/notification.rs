//! The record of one notification delivery (a run's event sent to one `[[dag.notify]]` entry):
//! created `sending`, updated after every attempt, ended `delivered` or `gave_up` with why. The
//! rule of an update is written once here and applied by every backend.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::model::UnknownState;

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Being sent, or waiting to be sent again after a failed attempt.
    Sending,
    /// The receiver answered 2xx.
    Delivered,
    /// No more attempts: the receiver refused it, the attempts ran out, or the orchestrator
    /// stopped first; `detail` says which.
    GaveUp,
}

impl DeliveryState {
    /// The name used in the database, the API and the UI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sending => "sending",
            Self::Delivered => "delivered",
            Self::GaveUp => "gave_up",
        }
    }

    /// Whether no attempt follows.
    pub fn is_final(self) -> bool {
        self != Self::Sending
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Sending, Self::Delivered, Self::GaveUp]
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A delivery to record, before its first attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    /// The run it is about.
    pub run_id: String,
    /// The run's DAG.
    pub dag_id: String,
    /// The event (`failure`, `success`, `retry`, `deadline_miss`, `recovered`).
    pub event: String,
    /// The `[[dag.notify]]` entry, from 1.
    pub target_index: u32,
    /// The entry's URL without path and query (they may hold a secret).
    pub target: String,
    /// `json` or `slack`.
    pub format: String,
    /// A one-line summary of the message.
    pub summary: String,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
}

/// A stored delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotificationRecord {
    /// Unique, increasing in creation order.
    pub id: i64,
    /// The run.
    pub run_id: String,
    /// The DAG.
    pub dag_id: String,
    /// The event.
    pub event: String,
    /// The `[[dag.notify]]` entry, from 1.
    pub target_index: u32,
    /// The URL without path and query.
    pub target: String,
    /// `json` or `slack`.
    pub format: String,
    /// A one-line summary of the message.
    pub summary: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last answer or error (`HTTP 200 OK`, `HTTP 500 ...: body`, `connection refused`...)
    /// and, once it gave up, why.
    pub detail: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// The last change.
    pub updated_at: DateTime<Utc>,
}

/// What an attempt (or giving up) changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationUpdate {
    /// The new state.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// The answer or error, and why it gave up.
    pub detail: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

impl NotificationRecord {
    /// The record of a delivery just queued under `id`.
    pub fn new(id: i64, n: &NewNotification) -> Self {
        Self {
            id,
            run_id: n.run_id.clone(),
            dag_id: n.dag_id.clone(),
            event: n.event.clone(),
            target_index: n.target_index,
            target: n.target.clone(),
            format: n.format.clone(),
            summary: n.summary.clone(),
            state: DeliveryState::Sending,
            attempts: 0,
            detail: None,
            created_at: n.created_at,
            updated_at: n.created_at,
        }
    }

    /// Applies an update; a final state is kept (a late update of a delivery that ended does not
    /// reopen it) and the attempt count never goes back.
    pub fn apply(&mut self, u: &NotificationUpdate) {
        if self.state.is_final() {
            return;
        }
        self.state = u.state;
        self.attempts = self.attempts.max(u.attempts);
        if u.detail.is_some() {
            self.detail.clone_from(&u.detail);
        }
        self.updated_at = u.at;
    }
}
