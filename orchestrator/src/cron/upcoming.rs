//! The next fire times of a DAG's schedule with their data intervals, in the DAG's zone and in
//! UTC: what `orchestrator next`, the DAG page and the API show (Airflow's
//! `dags next-execution`).

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::dag::Schedule;

/// One upcoming slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Upcoming {
    /// When the run starts (its logical date), UTC.
    pub fire_at: DateTime<Utc>,
    /// The same in the DAG's zone, e.g. `Mon 2026-03-30 09:00:00 CEST (+02:00)`.
    pub fire_at_local: String,
    /// The data interval's start (the previous slot), UTC.
    pub data_interval_start: DateTime<Utc>,
    /// The data interval's end (this slot), UTC.
    pub data_interval_end: DateTime<Utc>,
}

/// The first `count` slots of `schedule` strictly after `after`.
pub fn upcoming(schedule: &Schedule, after: DateTime<Utc>, count: usize) -> Vec<Upcoming> {
    let mut out = Vec::with_capacity(count);
    let mut cursor = after;
    let mut prev = schedule.prev_before(after + chrono::Duration::seconds(1));
    while out.len() < count {
        let Some(at) = schedule.next_after(cursor) else {
            break;
        };
        out.push(Upcoming {
            fire_at: at,
            fire_at_local: local(at, schedule.timezone),
            data_interval_start: prev.filter(|p| *p < at).unwrap_or(at),
            data_interval_end: at,
        });
        prev = Some(at);
        cursor = at;
    }
    out
}

/// `t` in `tz` with the weekday, zone abbreviation and offset: `Mon 2026-03-30 09:00:00 CEST (+02:00)`.
pub fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%a %Y-%m-%d %H:%M:%S %Z (%:z)")
        .to_string()
}

/// `t` in UTC, RFC 3339 to the second.
pub fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_with_the_interval_since_the_previous_one() {
        let s = Schedule::parse("0 9 * * 1-5")
            .unwrap()
            .in_timezone(chrono_tz::Europe::Paris);
        let after = DateTime::parse_from_rfc3339("2026-03-26T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let u = upcoming(&s, after, 3);
        let got: Vec<(String, String, String)> = u
            .iter()
            .map(|u| {
                (
                    u.fire_at_local.clone(),
                    utc(u.data_interval_start),
                    utc(u.data_interval_end),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "Fri 2026-03-27 09:00:00 CET (+01:00)".to_owned(),
                    "2026-03-26T08:00:00Z".to_owned(),
                    "2026-03-27T08:00:00Z".to_owned()
                ),
                (
                    "Mon 2026-03-30 09:00:00 CEST (+02:00)".to_owned(),
                    "2026-03-27T08:00:00Z".to_owned(),
                    "2026-03-30T07:00:00Z".to_owned()
                ),
                (
                    "Tue 2026-03-31 09:00:00 CEST (+02:00)".to_owned(),
                    "2026-03-30T07:00:00Z".to_owned(),
                    "2026-03-31T07:00:00Z".to_owned()
                ),
            ]
        );
    }
}
