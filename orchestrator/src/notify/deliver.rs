//! Delivery: each message POSTed to each `[[dag.notify]]` target that wants it, in the
//! background, retried with exponential backoff (backon's policy, with jitter) while the failure
//! may pass (connection errors, timeouts, 408, 429, 5xx), every attempt recorded in the store. A
//! delivery never blocks or fails its run; [`Notifier::drain`] waits for the ones in flight with a
//! bound, then records the rest as given up.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::message::{self, Message, Occasion};
use crate::dag::{Dag, NotifyTarget};
use crate::store::{
    DeliveryState, NewNotification, NotificationRecord, NotificationUpdate, Store, StoreError,
};

/// How notifications are delivered.
#[derive(Clone, Debug)]
pub struct NotifySettings {
    /// The base URL of `orchestrator serve` as users reach it (`serve --public-url`): messages
    /// link to the run's page under it. `None`: messages carry no link.
    pub public_url: Option<reqwest::Url>,
    /// Attempts per delivery, the first included.
    pub attempts: usize,
    /// Delay before the second attempt; it doubles for each further one.
    pub min_delay: Duration,
    /// Upper bound of the delay between attempts.
    pub max_delay: Duration,
    /// Time limit of one attempt (connect, send, answer).
    pub request_timeout: Duration,
}

impl Default for NotifySettings {
    /// 5 attempts over about 15 s (1, 2, 4, 8 s apart, with jitter), 10 s each at most.
    fn default() -> Self {
        Self {
            public_url: None,
            attempts: 5,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl NotifySettings {
    /// Sets the public URL; its path is made to end in `/` so that run pages go below it.
    pub fn with_public_url(mut self, url: Option<reqwest::Url>) -> Self {
        self.public_url = url.map(|mut u| {
            if !u.path().ends_with('/') {
                let path = format!("{}/", u.path());
                u.set_path(&path);
            }
            u
        });
        self
    }
}

/// The labels of [`Notifier::outcomes`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The event.
    pub event: String,
    /// `delivered` or `gave_up`.
    pub state: String,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    outcomes: Family<OutcomeLabels, Counter>,
    client: reqwest::Client,
    settings: NotifySettings,
    tracker: TaskTracker,
    /// Fired by [`Notifier::drain`] when its bound passes: deliveries in flight give up.
    stop: CancellationToken,
}

/// Sends notifications in the background; cheap to clone.
#[derive(Clone, Debug)]
pub struct Notifier(Arc<Inner>);

/// How one attempt went.
struct Attempt {
    /// `HTTP 200 OK`, `HTTP 500 ...: body`, `connection refused`...
    detail: String,
    delivered: bool,
    /// Whether another attempt may go better.
    transient: bool,
}

impl Notifier {
    /// A notifier recording deliveries in `store`.
    pub fn new(store: Arc<dyn Store>, settings: NotifySettings) -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!(
                "velostream-orchestrator/",
                env!("CARGO_PKG_VERSION")
            ))
            .timeout(settings.request_timeout)
            .build()
            .unwrap_or_default();
        Self(Arc::new(Inner {
            store,
            outcomes: Family::default(),
            client,
            settings,
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
        }))
    }

    /// The settings.
    pub fn settings(&self) -> &NotifySettings {
        &self.0.settings
    }

    /// Deliveries that ended in this process, per event and final state (`/metrics` exports it
    /// as `velostream_orchestrator_notifications_total`).
    pub fn outcomes(&self) -> &Family<OutcomeLabels, Counter> {
        &self.0.outcomes
    }

    /// Stops the deliveries in flight now (a second Ctrl-C): they are recorded as given up.
    pub fn abandon(&self) {
        self.0.stop.cancel();
    }

    /// Deliveries (and message preparations) in flight.
    pub fn in_flight(&self) -> usize {
        self.0.tracker.len()
    }

    /// Tells the DAG's targets about `occasion` of run `run_id`, in the background: the messages
    /// are written from the store, each target gets the first one whose event it wants. Returns
    /// at once; does nothing when the DAG has no `[[dag.notify]]`.
    pub fn notify(&self, dag: &Arc<Dag>, run_id: &str, occasion: Occasion) {
        if dag.run_rules.notify.is_empty() {
            return;
        }
        let this = self.clone();
        let dag = dag.clone();
        let run_id = run_id.to_owned();
        self.0.tracker.spawn(async move {
            let store = this.0.store.clone();
            let public_url = this.0.settings.public_url.clone();
            let id = run_id.clone();
            let prepared = tokio::task::spawn_blocking(move || {
                message::facts(store.as_ref(), &id, &occasion, public_url.as_ref())
            })
            .await;
            let messages = match prepared {
                Ok(Ok(m)) => m,
                Ok(Err(error)) => {
                    tracing::error!(run_id, %error, "Cannot read the run to notify about it");
                    return;
                }
                Err(error) => {
                    tracing::error!(run_id, %error, "Preparing a notification failed");
                    return;
                }
            };
            for target in &dag.run_rules.notify {
                if let Some(m) = messages.iter().find(|m| target.wants(m.event)) {
                    let (this, target, m) = (this.clone(), target.clone(), m.clone());
                    this.0
                        .tracker
                        .clone()
                        .spawn(async move { this.deliver(&target, &m).await });
                }
            }
        });
    }

    /// One message to one target: recorded, attempted until delivered, refused, out of
    /// attempts or stopped, each attempt's outcome recorded.
    async fn deliver(&self, target: &NotifyTarget, m: &Message) {
        let new = NewNotification {
            run_id: m.run_id.clone(),
            dag_id: m.dag_id.clone(),
            event: m.event.as_str().to_owned(),
            target_index: target.index as u32,
            target: target.redacted_url(),
            format: target.format.as_str().to_owned(),
            summary: m.summary.clone(),
            created_at: Utc::now(),
        };
        let record = self.store(move |s| s.add_notification(&new)).await;
        let Some(record) = record else { return };
        let body = message::body(m, target.format);
        let settings = &self.0.settings;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(settings.min_delay)
            .with_max_delay(settings.max_delay)
            .with_max_times(settings.attempts.saturating_sub(1))
            .with_jitter()
            .build();
        let mut attempts = 0u32;
        // The previous attempt's answer, kept in a delivery's detail.
        let mut before: Option<String> = None;
        loop {
            attempts += 1;
            let outcome = tokio::select! {
                biased;
                () = self.0.stop.cancelled() => None,
                a = self.attempt(target, &body) => Some(a),
            };
            let Some(a) = outcome else {
                self.give_up(
                    &record,
                    target,
                    attempts - 1,
                    "the orchestrator stopped before it was delivered".into(),
                )
                .await;
                return;
            };
            if a.delivered {
                tracing::info!(run_id = %m.run_id, event = %m.event, target = %target.redacted_url(), attempts, "Notification delivered");
                let detail = match before {
                    Some(b) => format!("{}; the attempt before: {b}", a.detail),
                    None => a.detail,
                };
                self.update(&record, DeliveryState::Delivered, attempts, detail)
                    .await;
                return;
            }
            before = Some(a.detail.clone());
            let next = if a.transient { delays.next() } else { None };
            let Some(delay) = next else {
                let why = if a.transient {
                    format!("{}; gave up after {attempts} attempt(s)", a.detail)
                } else {
                    format!("{}; not retried: the receiver refused it", a.detail)
                };
                self.give_up(&record, target, attempts, why).await;
                return;
            };
            tracing::info!(run_id = %m.run_id, event = %m.event, target = %target.redacted_url(), attempts, detail = %a.detail, ?delay, "Notification not delivered yet; retrying");
            self.update(
                &record,
                DeliveryState::Sending,
                attempts,
                format!(
                    "{}; attempt {} in {}",
                    a.detail,
                    attempts + 1,
                    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                ),
            )
            .await;
            tokio::select! {
                () = self.0.stop.cancelled() => {
                    self.give_up(&record, target, attempts, format!("{}; the orchestrator stopped before the next attempt", a.detail)).await;
                    return;
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// POSTs the body once.
    async fn attempt(&self, target: &NotifyTarget, body: &serde_json::Value) -> Attempt {
        match self
            .0
            .client
            .post(target.url.clone())
            .json(body)
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    return Attempt {
                        detail: format!("HTTP {status}"),
                        delivered: true,
                        transient: false,
                    };
                }
                let text = resp.text().await.unwrap_or_default();
                let text: String = text.trim().chars().take(200).collect();
                Attempt {
                    detail: if text.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        format!("HTTP {status}: {text}")
                    },
                    delivered: false,
                    transient: status.is_server_error()
                        || status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::REQUEST_TIMEOUT,
                }
            }
            Err(e) => Attempt {
                detail: error_chain(e),
                delivered: false,
                transient: true,
            },
        }
    }

    async fn give_up(
        &self,
        record: &NotificationRecord,
        target: &NotifyTarget,
        attempts: u32,
        why: String,
    ) {
        tracing::warn!(run_id = %record.run_id, event = %record.event, target = %target.redacted_url(), attempts, why, "Gave up a notification");
        self.update(record, DeliveryState::GaveUp, attempts, why)
            .await;
    }

    async fn update(
        &self,
        record: &NotificationRecord,
        state: DeliveryState,
        attempts: u32,
        detail: String,
    ) {
        let id = record.id;
        if state.is_final() {
            self.0
                .outcomes
                .get_or_create(&OutcomeLabels {
                    event: record.event.clone(),
                    state: state.as_str().to_owned(),
                })
                .inc();
        }
        let u = NotificationUpdate {
            state,
            attempts,
            detail: Some(detail),
            at: Utc::now(),
        };
        self.store(move |s| s.update_notification(id, &u)).await;
    }

    /// Runs a store call on the blocking pool; a failure is logged (a delivery goes on).
    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Option<T> {
        let store = self.0.store.clone();
        match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(error)) => {
                tracing::error!(%error, "Cannot record a notification delivery");
                None
            }
            Err(error) => {
                tracing::error!(%error, "Recording a notification delivery failed");
                None
            }
        }
    }

    /// Waits up to `grace` for the deliveries in flight; then the rest stop and are recorded as
    /// given up. Returns whether all ended within `grace`. Call it before the process exits.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.0.tracker.close();
        let done = tokio::time::timeout(grace, self.0.tracker.wait())
            .await
            .is_ok();
        if !done {
            self.0.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.0.tracker.wait()).await;
        }
        self.0.tracker.reopen();
        done
    }
}

/// A request error and its causes, without the URL (it may hold the webhook's secret).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}
