//! librdkafka's errors and log lines, said once per episode rather than on every reconnect
//! attempt: while a broker is down librdkafka reports `AllBrokersDown` and "Connect ... failed"
//! about every 50 ms per client (and a sensor makes a client per reading), which buries the one
//! line that matters. The first event of a kind is logged at once; repeats within
//! [`REPEAT_EVERY`] are counted and said with the next one; [`EventLog::recovered`] ends the
//! episode with one line saying how long it lasted.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

/// A repeated event is said again at most this often, with the count of its repeats.
pub const REPEAT_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Episode {
    first: Instant,
    last_said: Instant,
    repeats: u64,
}

/// Which events were said, per kind, since the last recovery.
#[derive(Debug, Default)]
pub struct EventLog {
    episodes: Mutex<HashMap<String, Episode>>,
}

/// The kind of a log line: its facility and its text without digits (ports, counts, times differ
/// from one reconnect attempt to the next).
fn kind_of(fac: &str, message: &str) -> String {
    let text: String = message
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .take(80)
        .collect();
    format!("{fac}: {text}")
}

impl EventLog {
    /// The log shared by the clients of this process that come and go (one per sensor reading).
    pub fn global() -> &'static EventLog {
        static LOG: OnceLock<EventLog> = OnceLock::new();
        LOG.get_or_init(EventLog::default)
    }

    /// Whether an event of `kind` is to be said now; `Some(repeats since it was last said)`.
    pub fn should_say(&self, kind: &str) -> Option<u64> {
        let mut episodes = self.episodes.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match episodes.get_mut(kind) {
            None => {
                episodes.insert(
                    kind.to_string(),
                    Episode {
                        first: now,
                        last_said: now,
                        repeats: 0,
                    },
                );
                Some(0)
            }
            Some(e) if now.duration_since(e.last_said) >= REPEAT_EVERY => {
                let repeats = std::mem::take(&mut e.repeats);
                e.last_said = now;
                Some(repeats)
            }
            Some(e) => {
                e.repeats += 1;
                None
            }
        }
    }

    /// A client error (`AllBrokersDown`, a transport failure...), logged once per episode.
    pub fn error(&self, error: &KafkaError, reason: &str) {
        let kind = format!("{:?}", error.rdkafka_error_code());
        if let Some(repeats) = self.should_say(&kind) {
            tracing::warn!(error = %error, reason, repeats, "Kafka client error (said once; repeats are counted)");
        }
    }

    /// A librdkafka log line at warning level or worse, logged once per episode of its kind.
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let quiet = matches!(
            level,
            RDKafkaLogLevel::Debug | RDKafkaLogLevel::Info | RDKafkaLogLevel::Notice
        );
        if quiet {
            tracing::debug!(target: "librdkafka", fac, "{message}");
            return;
        }
        if let Some(repeats) = self.should_say(&kind_of(fac, message)) {
            tracing::warn!(target: "librdkafka", fac, repeats, "{message}");
        }
    }

    /// Whether any episode is open (an error was said and not yet recovered from).
    pub fn troubled(&self) -> bool {
        !self
            .episodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The broker answers again: ends every episode, saying how long the longest lasted.
    pub fn recovered(&self) {
        let mut episodes = self.episodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = episodes.values().map(|e| e.first).min() {
            let repeats: u64 = episodes.values().map(|e| e.repeats).sum();
            tracing::info!(
                after_ms = first.elapsed().as_millis() as u64,
                repeats_not_said = repeats,
                "Kafka broker reachable again"
            );
        }
        episodes.clear();
    }
}

/// A client context that says librdkafka's errors and log lines through [`EventLog::global`].
#[derive(Debug, Default, Clone, Copy)]
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        EventLog::global().log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        EventLog::global().error(&error, reason);
    }
}

impl ConsumerContext for QuietContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_event_is_said_once_and_counted() {
        let log = EventLog::default();
        let kind = kind_of(
            "FAIL",
            "127.0.0.1:4000/1: Connect to ipv4#127.0.0.1:4000 failed",
        );
        assert_eq!(
            kind,
            kind_of(
                "FAIL",
                "127.0.0.1:4001/1: Connect to ipv4#127.0.0.1:4001 failed"
            )
        );
        assert_eq!(log.should_say(&kind), Some(0));
        for _ in 0..100 {
            assert_eq!(log.should_say(&kind), None);
        }
        assert!(log.troubled());
        assert_eq!(log.should_say("other"), Some(0));
        log.recovered();
        assert!(!log.troubled());
        assert_eq!(log.should_say(&kind), Some(0));
    }
}
