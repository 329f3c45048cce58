//! Schedules in a DAG's time zone (`[dag] timezone`, an IANA name from the tz database that
//! `chrono-tz` compiles in). A crontab names wall-clock times; this module turns them into
//! instants with the rule cron daemons (Vixie cron, cronie) follow when the clocks change:
//!
//! - a slot in the hour skipped when clocks go forward runs once, at the instant of the change
//!   (several skipped slots, and a slot right at the change, make one run);
//! - a slot in the hour repeated when clocks go back runs once, at its first occurrence.
//!
//! So every wall-clock slot maps to exactly one instant and the instants never go backwards.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::crontab::Crontab;

/// Parses an IANA zone name (`Europe/Paris`, `UTC`); a wrong one gets the nearest names.
pub fn parse(name: &str) -> Result<Tz, String> {
    if let Ok(tz) = name.parse::<Tz>() {
        return Ok(tz);
    }
    let wanted = name.trim().to_ascii_lowercase().replace(' ', "_");
    let mut scored: Vec<(f64, &str)> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| {
            let full = tz.name();
            let lower = full.to_ascii_lowercase();
            let city = lower.rsplit('/').next().unwrap_or(&lower);
            let score = strsim::jaro_winkler(&wanted, &lower)
                .max(strsim::jaro_winkler(&wanted, city) - 0.01);
            (score, full)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    // The best name, and the runners-up that score nearly as well.
    let best = scored.first().map_or(0.0, |(s, _)| *s);
    let near: Vec<&str> = scored
        .iter()
        .take(3)
        .filter(|(s, _)| *s > 0.7 && *s >= best - 0.02)
        .map(|(_, n)| *n)
        .collect();
    let hint = match near.as_slice() {
        [] => String::new(),
        [one] => format!("did you mean {one:?}? "),
        many => format!(
            "did you mean {}? ",
            many.iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    };
    Err(format!(
        "unknown time zone {name:?}; {hint}write an IANA name such as \"Europe/Paris\", \"America/New_York\" or \"UTC\""
    ))
}

/// The instant a wall-clock slot runs at (see the module doc for the daylight-saving rule).
pub fn slot_instant(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(d) | LocalResult::Ambiguous(d, _) => d.with_timezone(&Utc),
        LocalResult::None => end_of_gap(tz, wall),
    }
}

/// The UTC offset in seconds at an instant.
fn offset_at(tz: Tz, t: NaiveDateTime) -> i64 {
    i64::from(tz.offset_from_utc_datetime(&t).fix().local_minus_utc())
}

/// The largest UTC offset around `t` (a day either side): a wall-clock time more than this
/// after `t`'s UTC time is an instant after `t`.
fn max_offset_near(tz: Tz, t: NaiveDateTime) -> i64 {
    [t - Duration::days(1), t, t + Duration::days(1)]
        .into_iter()
        .map(|u| offset_at(tz, u))
        .max()
        .unwrap_or(0)
}

/// The instant clocks jumped over `wall` (which does not exist in `tz`): the first instant whose
/// wall-clock time is at or after it.
fn end_of_gap(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    let offsets = [
        offset_at(tz, wall - Duration::days(1)),
        offset_at(tz, wall + Duration::days(1)),
    ];
    let (lo_off, hi_off) = (offsets[0].min(offsets[1]), offsets[0].max(offsets[1]));
    let mut lo = (wall - Duration::seconds(hi_off)).and_utc().timestamp();
    let mut hi = (wall - Duration::seconds(lo_off)).and_utc().timestamp();
    let local = |secs: i64| {
        let u = DateTime::from_timestamp(secs, 0).unwrap_or_default();
        u.with_timezone(&tz).naive_local()
    };
    // Invariant: local(lo) < wall <= local(hi).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local(mid) >= wall {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap_or_default()
}

/// The first slot of `crontab` in `tz` strictly after `t`.
pub fn next_after(crontab: &Crontab, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Every wall-clock time up to `t`'s own maps to an instant at or before `t`.
    let mut cursor = t.with_timezone(&tz).naive_local();
    loop {
        let wall = crontab.next_after(cursor)?;
        let at = slot_instant(tz, wall);
        if at > t {
            return Some(at);
        }
        cursor = wall;
    }
}

/// The last slot of `crontab` in `tz` strictly before `t`.
pub fn prev_before(crontab: &Crontab, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let utc = t.naive_utc();
    let mut cursor = utc + Duration::seconds(max_offset_near(tz, utc) + 1);
    loop {
        let wall = crontab.prev_before(cursor)?;
        let at = slot_instant(tz, wall);
        if at < t {
            return Some(at);
        }
        cursor = wall;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn slots(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        let c: Crontab = expr.parse().unwrap();
        let tz = parse(tz).unwrap();
        let mut t = utc(after);
        (0..n)
            .map(|_| {
                t = next_after(&c, tz, t).unwrap();
                t.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn names_are_checked_with_a_suggestion() {
        assert_eq!(parse("Europe/Paris").unwrap(), chrono_tz::Europe::Paris);
        assert_eq!(parse("UTC").unwrap(), chrono_tz::UTC);
        let e = parse("Europe/Pariss").unwrap_err();
        assert!(e.contains("did you mean \"Europe/Paris\"? "), "{e}");
        let e = parse("europe/paris").unwrap_err();
        assert!(e.contains("\"Europe/Paris\""), "{e}");
        let e = parse("Paris").unwrap_err();
        assert!(e.contains("\"Europe/Paris\""), "{e}");
        assert!(parse("+02:00").unwrap_err().contains("IANA name"));
    }

    #[test]
    fn a_slot_in_the_skipped_hour_runs_once_at_the_change() {
        // Paris, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
        assert_eq!(
            slots("30 2 * * *", "Europe/Paris", "2026-03-28T00:00:00Z", 3),
            [
                "2026-03-28T01:30:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T00:30:00+00:00"
            ]
        );
        // Four skipped slots and the one at 03:00 make one run.
        assert_eq!(
            slots("*/15 * * * *", "Europe/Paris", "2026-03-29T00:40:00Z", 4),
            [
                "2026-03-29T00:45:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-29T01:15:00+00:00",
                "2026-03-29T01:30:00+00:00"
            ]
        );
    }

    #[test]
    fn a_slot_in_the_repeated_hour_runs_once() {
        // Paris, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens twice.
        assert_eq!(
            slots("30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
        // Asked during the second 02:xx, the next slot is after it.
        assert_eq!(
            slots("30 2 * * *", "Europe/Paris", "2026-10-25T01:10:00Z", 1),
            ["2026-10-26T01:30:00+00:00"]
        );
        assert_eq!(
            slots("0 * * * *", "Europe/Paris", "2026-10-24T23:30:00Z", 3),
            [
                "2026-10-25T00:00:00+00:00",
                "2026-10-25T02:00:00+00:00",
                "2026-10-25T03:00:00+00:00"
            ]
        );
    }

    #[test]
    fn previous_slots_mirror_next_slots_across_both_changes() {
        let c: Crontab = "*/30 * * * *".parse().unwrap();
        let tz = chrono_tz::Europe::Paris;
        for start in ["2026-03-28T20:00:00Z", "2026-10-24T20:00:00Z"] {
            let mut t = utc(start);
            for _ in 0..20 {
                let n = next_after(&c, tz, t).unwrap();
                assert_eq!(prev_before(&c, tz, n + Duration::seconds(1)), Some(n));
                assert!(prev_before(&c, tz, n).unwrap() < n);
                assert_eq!(next_after(&c, tz, prev_before(&c, tz, n).unwrap()), Some(n));
                t = n;
            }
        }
    }

    #[test]
    fn weekdays_at_nine_in_paris_follow_summer_time() {
        assert_eq!(
            slots("0 9 * * 1-5", "Europe/Paris", "2026-03-26T12:00:00Z", 3),
            [
                "2026-03-27T08:00:00+00:00",
                "2026-03-30T07:00:00+00:00",
                "2026-03-31T07:00:00+00:00"
            ]
        );
    }
}
