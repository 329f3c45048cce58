//! Waiting for a condition in tests, never sleeping and hoping: poll until the check passes, or
//! fail naming what did not happen within the timeout.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Some`, and returns that; panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// [`wait_for`] for async checks: polls `check` on the caller's runtime (real time, so it also
/// works while tokio's clock is paused).
pub async fn wait_for_async<T, F>(what: &str, timeout: Duration, mut check: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        // Real time: a paused tokio clock would never wake a tokio sleep here.
        tokio::task::spawn_blocking(|| std::thread::sleep(POLL))
            .await
            .expect("the polling sleep panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value_and_fails_naming_what_it_waited_for() {
        let mut n = 0;
        assert_eq!(
            wait_for("n to reach 3", Duration::from_secs(5), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            3
        );
        let failed = std::panic::catch_unwind(|| {
            wait_for::<()>("nothing", Duration::from_millis(120), || None)
        })
        .unwrap_err();
        let message = failed.downcast_ref::<String>().unwrap();
        assert!(message.contains("waiting for nothing"), "{message}");
    }
}
