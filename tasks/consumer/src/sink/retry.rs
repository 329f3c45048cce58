//! Retrying with exponential backoff, and telling a ClickHouse error worth retrying (server down,
//! slow, overloaded) from one that will fail forever (no such table, wrong password).

use std::time::Duration;

/// Doubling delays from 100 ms up to a maximum.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at 100 ms (or `max` if smaller).
    pub fn new(max: Duration) -> Self {
        Self {
            next: Duration::from_millis(100).min(max),
            max,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// ClickHouse error codes that no retry fixes: the table or a column is missing or different,
/// the user cannot write, a setting is unknown.
const PERMANENT_CODES: &[u32] = &[
    16,  // NO_SUCH_COLUMN_IN_TABLE
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    60,  // UNKNOWN_TABLE
    81,  // UNKNOWN_DATABASE
    115, // UNKNOWN_SETTING
    164, // READONLY
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    194, // REQUIRED_PASSWORD
    195, // IP_ADDRESS_NOT_ALLOWED
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

/// The `Code: N.` of a ClickHouse exception message.
pub fn exception_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Whether retrying `err` is pointless.
pub fn is_permanent(err: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error as E;
    match err {
        E::BadResponse(message) => {
            exception_code(message).is_some_and(|code| PERMANENT_CODES.contains(&code))
        }
        E::SchemaMismatch(_) | E::InvalidParams(_) | E::Unsupported(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn classifies_clickhouse_errors() {
        let missing = "Code: 60. DB::Exception: Table default.nope doesn't exist.";
        assert_eq!(exception_code(missing), Some(60));
        assert!(is_permanent(&clickhouse::error::Error::BadResponse(
            missing.into()
        )));
        let busy = "Code: 252. DB::Exception: Too many parts (300).";
        assert!(!is_permanent(&clickhouse::error::Error::BadResponse(
            busy.into()
        )));
        assert!(!is_permanent(&clickhouse::error::Error::TimedOut));
        assert_eq!(exception_code("no code here"), None);
    }
}
