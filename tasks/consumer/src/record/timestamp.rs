//! UTC timestamps of the wire format (`"YYYY-MM-DD HH:MM:SS"`, optional `.ffffff`) to and from
//! the seconds since the Unix epoch that a ClickHouse `DateTime` column stores.
//!
//! Hand-written rather than chrono: the consumer parses two of these per row, millions of rows per
//! second, and the format is fixed.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

/// Why a timestamp string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Not `YYYY-MM-DD HH:MM:SS` with an optional fraction.
    #[error("expected a UTC timestamp \"YYYY-MM-DD HH:MM:SS[.ffffff]\"")]
    Format,
    /// A field is out of its range (month 13, 25 o'clock, February 30th...).
    #[error("the date or time is not a valid calendar value")]
    Calendar,
    /// Before 1970 or after 2105: a ClickHouse `DateTime` cannot hold it.
    #[error("outside the range of a ClickHouse DateTime (1970-01-01 to 2105-12-31)")]
    Range,
}

fn digits<const N: usize>(bytes: &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for &b in bytes.get(..N)? {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value * 10 + u32::from(d);
    }
    Some(value)
}

const fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `"YYYY-MM-DD HH:MM:SS"` (a `T` instead of the space, a `.fraction` of up to nine digits
/// and a trailing `Z` are accepted too) into seconds since the epoch. The fraction is dropped: a
/// `DateTime` column has whole seconds, and so does TLC data.
pub fn parse_datetime(text: &str) -> Result<u32, TimestampError> {
    parse_datetime_bytes(text.as_bytes())
}

/// [`parse_datetime`] of raw bytes (the decoder's fast path has not checked them for UTF-8).
pub fn parse_datetime_bytes(b: &[u8]) -> Result<u32, TimestampError> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T') {
        return Err(TimestampError::Format);
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(TimestampError::Format);
    }
    let rest = &b[19..];
    let rest = rest.strip_suffix(b"Z").unwrap_or(rest);
    if let Some(fraction) = rest.strip_prefix(b".") {
        if fraction.is_empty() || fraction.len() > 9 || !fraction.iter().all(u8::is_ascii_digit) {
            return Err(TimestampError::Format);
        }
    } else if !rest.is_empty() {
        return Err(TimestampError::Format);
    }
    let two = |at: usize| digits::<2>(&b[at..at + 2]).ok_or(TimestampError::Format);
    let days = date_days(&b[..10])?;
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    if hour > 23 || minute > 59 || second > 59 {
        return Err(TimestampError::Calendar);
    }
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    // ClickHouse's DateTime is a UInt32, but dates after 2105 are not representable by its
    // functions either; refuse them rather than store a value that reads back as garbage.
    if !(0..=days_from_civil(2106, 1, 1) * 86_400 - 1).contains(&seconds) {
        return Err(TimestampError::Range);
    }
    Ok(seconds as u32)
}

std::thread_local! {
    /// The last date parsed on this thread: consecutive rows (and a row's pickup and dropoff)
    /// mostly share it.
    static LAST_DATE: std::cell::Cell<([u8; 10], i64)> =
        const { std::cell::Cell::new(([0; 10], i64::MIN)) };
}

/// Days since the epoch of `YYYY-MM-DD` (separators already checked).
fn date_days(date: &[u8]) -> Result<i64, TimestampError> {
    let mut key = [0u8; 10];
    key.copy_from_slice(date);
    let (last, days) = LAST_DATE.with(std::cell::Cell::get);
    if last == key && days != i64::MIN {
        return Ok(days);
    }
    let year = i64::from(digits::<4>(&date[0..4]).ok_or(TimestampError::Format)?);
    let month = digits::<2>(&date[5..7]).ok_or(TimestampError::Format)?;
    let day = digits::<2>(&date[8..10]).ok_or(TimestampError::Format)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError::Calendar);
    }
    let days = days_from_civil(year, month, day);
    LAST_DATE.with(|c| c.set((key, days)));
    Ok(days)
}

/// Formats seconds since the epoch as `"YYYY-MM-DD HH:MM:SS"`, plus `.ffffff` when `micros` is
/// non-zero (the wire format the producer writes).
pub fn format_datetime(seconds: i64, micros: u32, out: &mut String) {
    use std::fmt::Write;
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if micros != 0 {
        let _ = write!(out, ".{micros:06}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_wire_format_and_its_variants() {
        assert_eq!(parse_datetime("1970-01-01 00:00:00"), Ok(0));
        assert_eq!(parse_datetime("2023-01-01 00:32:10"), Ok(1_672_533_130));
        assert_eq!(parse_datetime("2023-01-01T00:32:10"), Ok(1_672_533_130));
        assert_eq!(
            parse_datetime("2023-01-01 00:32:10.250000"),
            Ok(1_672_533_130)
        );
        assert_eq!(parse_datetime("2023-01-01T00:32:10.5Z"), Ok(1_672_533_130));
        assert_eq!(parse_datetime("2024-02-29 23:59:59"), Ok(1_709_251_199));
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        use TimestampError::*;
        for (text, err) in [
            ("", Format),
            ("2023-01-01", Format),
            ("2023/01/01 00:00:00", Format),
            ("2023-01-01 00:00:0x", Format),
            ("2023-01-01 00:00:00.", Format),
            ("2023-01-01 00:00:00 +01:00", Format),
            ("2023-13-01 00:00:00", Calendar),
            ("2023-02-29 00:00:00", Calendar),
            ("2023-01-01 24:00:00", Calendar),
            ("1969-12-31 23:59:59", Range),
            ("2200-01-01 00:00:00", Range),
        ] {
            assert_eq!(parse_datetime(text), Err(err), "{text:?}");
        }
    }

    #[test]
    fn formatting_round_trips_through_parsing() {
        for seconds in [
            0i64,
            1_672_533_130,
            1_709_251_199,
            4_102_444_799,
            951_782_400,
        ] {
            let mut text = String::new();
            format_datetime(seconds, 0, &mut text);
            assert_eq!(i64::from(parse_datetime(&text).unwrap()), seconds, "{text}");
        }
        let mut text = String::new();
        format_datetime(1_672_533_130, 42, &mut text);
        assert_eq!(text, "2023-01-01 00:32:10.000042");
    }
}
