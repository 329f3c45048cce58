//! Calendar formatting for timestamps and dates: `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC, the form
//! ClickHouse's `DateTime`/`DateTime64` parse, written straight into a byte buffer.

use arrow::datatypes::TimeUnit;

use super::slot::{DIGITS2, Slot, put2};

const SECONDS_PER_DAY: i64 = 86_400;

/// Appends the two digits of `n % 100`.
fn push2(out: &mut Vec<u8>, n: u32) {
    let i = (n as usize % 100) * 2;
    out.extend_from_slice(&DIGITS2[i..i + 2]);
}

/// `(year, month, day)` of a day count since 1970-01-01 (proleptic Gregorian), after Howard
/// Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Writes `YYYY-MM-DD` for a day count since the epoch. Years outside 0..=9999 are written in
/// full (with a sign when negative), which no ClickHouse type accepts but loses nothing.
pub fn write_date(out: &mut Vec<u8>, days: i64) {
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        push2(out, (y / 100) as u32);
        push2(out, (y % 100) as u32);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(y).as_bytes());
    }
    out.push(b'-');
    push2(out, m);
    out.push(b'-');
    push2(out, d);
}

/// Formats timestamps of one unit, remembering the last day's `YYYY-MM-DD ` so that runs of rows
/// on the same day (the common case: files are sorted by time, roughly) skip the calendar maths.
#[derive(Debug, Clone)]
pub struct TimestampFormatter {
    per_second: i64,
    /// Sub-second units per microsecond (ns: 1000), or 0 when the unit is coarser than 1 µs.
    per_micro: i64,
    /// Microseconds per sub-second unit (ms: 1000), used when the unit is coarser than 1 µs.
    micros_per_unit: i64,
    cached_day: i64,
    cached_prefix: [u8; SLOT_PREFIX],
    shift_units: i64,
}

/// `YYYY-MM-DD ` is 11 bytes.
const SLOT_PREFIX: usize = 11;

impl TimestampFormatter {
    /// A formatter for values counted in `unit` since 1970-01-01 00:00:00 UTC.
    pub fn new(unit: TimeUnit) -> Self {
        let (per_second, per_micro, micros_per_unit) = match unit {
            TimeUnit::Second => (1, 0, 0),
            TimeUnit::Millisecond => (1_000, 0, 1_000),
            TimeUnit::Microsecond => (1_000_000, 1, 1),
            TimeUnit::Nanosecond => (1_000_000_000, 1_000, 1),
        };
        Self {
            per_second,
            per_micro,
            micros_per_unit,
            cached_day: i64::MIN,
            cached_prefix: [0; SLOT_PREFIX],
            shift_units: 0,
        }
    }

    /// Moves every value by `secs` seconds from now on (see [`TimestampFormatter::shift_units`]).
    pub fn set_shift_secs(&mut self, secs: i64) {
        self.shift_units = secs.saturating_mul(self.per_second);
    }

    /// The shift to add to values, in their unit; the caller adds it (the formatters write the
    /// value they are given).
    pub fn shift_units(&self) -> i64 {
        self.shift_units
    }

    /// How many units make one second.
    pub fn units_per_second(&self) -> i64 {
        self.per_second
    }

    /// Writes `value` quoted, `"YYYY-MM-DD HH:MM:SS[.ffffff]"`, into a slot; `None` when the year
    /// has not four digits (the caller then takes the slow path, [`TimestampFormatter::write`]).
    #[inline]
    pub fn put_quoted(&mut self, slot: &mut Slot, value: i64) -> Option<usize> {
        // One instance per unit, so that every division is by a constant (a multiplication),
        // not a hardware divide per value.
        match self.per_second {
            1 => self.put_quoted_in::<1>(slot, value),
            1_000 => self.put_quoted_in::<1_000>(slot, value),
            1_000_000 => self.put_quoted_in::<1_000_000>(slot, value),
            _ => self.put_quoted_in::<1_000_000_000>(slot, value),
        }
    }

    #[inline(always)]
    fn put_quoted_in<const PER_SECOND: i64>(
        &mut self,
        slot: &mut Slot,
        value: i64,
    ) -> Option<usize> {
        let secs = value.div_euclid(PER_SECOND);
        let sub = value.rem_euclid(PER_SECOND);
        let day = secs.div_euclid(SECONDS_PER_DAY);
        if day != self.cached_day {
            let (y, m, d) = civil_from_days(day);
            if !(0..=9999).contains(&y) {
                return None;
            }
            let mut tmp: Slot = [0; super::slot::SLOT];
            put2(&mut tmp, 0, (y / 100) as u32);
            put2(&mut tmp, 2, (y % 100) as u32);
            tmp[4] = b'-';
            put2(&mut tmp, 5, m);
            tmp[7] = b'-';
            put2(&mut tmp, 8, d);
            tmp[10] = b' ';
            self.cached_prefix.copy_from_slice(&tmp[..SLOT_PREFIX]);
            self.cached_day = day;
        }
        let sod = secs.rem_euclid(SECONDS_PER_DAY) as u32;
        slot[0] = b'"';
        slot[1..12].copy_from_slice(&self.cached_prefix);
        put2(slot, 12, sod / 3600);
        slot[14] = b':';
        put2(slot, 15, sod / 60 % 60);
        slot[17] = b':';
        put2(slot, 18, sod % 60);
        // sub < PER_SECOND <= 10^9, so sub * 10^6 fits; truncates below a microsecond.
        let micros = (sub * 1_000_000 / PER_SECOND) as u32;
        if micros == 0 {
            slot[20] = b'"';
            return Some(21);
        }
        slot[20] = b'.';
        put2(slot, 21, micros / 10_000);
        put2(slot, 23, micros / 100 % 100);
        put2(slot, 25, micros % 100);
        slot[27] = b'"';
        Some(28)
    }

    /// Writes `value` as `YYYY-MM-DD HH:MM:SS`, then `.ffffff` when the microseconds are not zero
    /// (finer parts are truncated: ClickHouse keeps at most microseconds in practice).
    pub fn write(&mut self, out: &mut Vec<u8>, value: i64) {
        let secs = value.div_euclid(self.per_second);
        let sub = value.rem_euclid(self.per_second);
        let micros = match self.per_micro {
            0 => sub * self.micros_per_unit,
            1 => sub,
            n => sub / n,
        };
        let day = secs.div_euclid(SECONDS_PER_DAY);
        let sod = secs.rem_euclid(SECONDS_PER_DAY) as u32;
        if day == self.cached_day {
            out.extend_from_slice(&self.cached_prefix);
        } else {
            let start = out.len();
            write_date(out, day);
            out.push(b' ');
            // Only cache the fixed-width form; odd years are formatted every time.
            if out.len() - start == 11 {
                self.cached_prefix.copy_from_slice(&out[start..]);
                self.cached_day = day;
            }
        }
        push2(out, sod / 3600);
        out.push(b':');
        push2(out, sod / 60 % 60);
        out.push(b':');
        push2(out, sod % 60);
        if micros != 0 {
            let micros = micros as u32;
            out.push(b'.');
            push2(out, micros / 10_000);
            push2(out, micros / 100 % 100);
            push2(out, micros % 100);
        }
    }
}

/// Writes `"YYYY-MM-DD"` (quoted) for a day count into a slot, or returns `None` when the year
/// has not four digits (the caller then takes the slow path).
pub fn put_date_quoted(slot: &mut Slot, days: i64) -> Option<usize> {
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    slot[0] = b'"';
    put2(slot, 1, (y / 100) as u32);
    put2(slot, 3, (y % 100) as u32);
    slot[5] = b'-';
    put2(slot, 6, m);
    slot[8] = b'-';
    put2(slot, 9, d);
    slot[11] = b'"';
    Some(12)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(unit: TimeUnit, v: i64) -> String {
        let mut out = Vec::new();
        TimestampFormatter::new(unit).write(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_unit_formats_whole_seconds_without_fraction() {
        // 2023-01-01 00:32:10 UTC
        let s = 1_672_533_130;
        assert_eq!(ts(TimeUnit::Second, s), "2023-01-01 00:32:10");
        assert_eq!(ts(TimeUnit::Millisecond, s * 1_000), "2023-01-01 00:32:10");
        assert_eq!(
            ts(TimeUnit::Microsecond, s * 1_000_000),
            "2023-01-01 00:32:10"
        );
        assert_eq!(
            ts(TimeUnit::Nanosecond, s * 1_000_000_000),
            "2023-01-01 00:32:10"
        );
    }

    #[test]
    fn fractions_are_microseconds() {
        let s = 1_672_533_130;
        assert_eq!(
            ts(TimeUnit::Millisecond, s * 1_000 + 5),
            "2023-01-01 00:32:10.005000"
        );
        assert_eq!(
            ts(TimeUnit::Microsecond, s * 1_000_000 + 123_456),
            "2023-01-01 00:32:10.123456"
        );
        assert_eq!(
            ts(TimeUnit::Nanosecond, s * 1_000_000_000 + 123_456_789),
            "2023-01-01 00:32:10.123456"
        );
        // Sub-microsecond parts alone are dropped.
        assert_eq!(
            ts(TimeUnit::Nanosecond, s * 1_000_000_000 + 999),
            "2023-01-01 00:32:10"
        );
    }

    #[test]
    fn before_the_epoch_and_leap_days() {
        assert_eq!(ts(TimeUnit::Second, -1), "1969-12-31 23:59:59");
        assert_eq!(ts(TimeUnit::Microsecond, -1), "1969-12-31 23:59:59.999999");
        assert_eq!(ts(TimeUnit::Second, 951_782_400), "2000-02-29 00:00:00");
        assert_eq!(ts(TimeUnit::Second, 4_107_542_399), "2100-02-28 23:59:59");
    }

    #[test]
    fn the_day_cache_follows_day_changes() {
        let mut f = TimestampFormatter::new(TimeUnit::Second);
        let mut out = Vec::new();
        for v in [86_399, 86_400, 86_399, 0] {
            f.write(&mut out, v);
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01 23:59:59|1970-01-02 00:00:00|1970-01-01 23:59:59|1970-01-01 00:00:00|"
        );
    }

    #[test]
    fn calendar_matches_a_day_by_day_walk() {
        // Walk 1900-01-01 .. 2200-01-01 and compare with a naive calendar.
        let mut days = -25_567; // 1900-01-01
        let (mut y, mut m, mut d) = (1900i64, 1u32, 1u32);
        while y < 2200 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            days += 1;
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn dates() {
        let mut out = Vec::new();
        write_date(&mut out, 19_358);
        assert_eq!(out, b"2023-01-01");
        out.clear();
        write_date(&mut out, -719_529); // year -1
        assert_eq!(out, b"-1-12-31");
    }
}
