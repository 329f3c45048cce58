//! The cron dialect of `schedule`: crontab's (man 5 crontab, as in Vixie cron, cronie and
//! Airflow), evaluated with the `cron` crate. The crate speaks Quartz (weekdays 1-7 from Sunday,
//! day-of-month AND day-of-week), so each field is parsed and checked here with crontab's rules,
//! expanded to the set of values it means, and handed to the crate as explicit lists:
//!
//! - weekdays are `0`-`7` (`0` and `7` are Sunday) or `SUN`-`SAT`; months `1`-`12` or `JAN`-`DEC`;
//!   names are case-insensitive and may bound ranges (`MON-FRI`);
//! - an item is `*`, `N`, `A-B`, `*/S`, `A-B/S` or `A/S` (from `A` to the field's maximum);
//!   items are joined by `,`;
//! - when both day-of-month and day-of-week are restricted (neither starts with `*`), a day
//!   matches if EITHER matches: the schedule is evaluated as the earlier of two crate schedules,
//!   one per field; otherwise both must match (a field starting with `*` matches every day);
//! - `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`;
//! - 5 fields (minute hour day-of-month month day-of-week), 6 (seconds first) or 7 (seconds
//!   first, years `1970`-`2099` last), with the same rules in every form.
//!
//! Times here are naive wall-clock times; [`super::timezone`] maps them to instants.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{NaiveDateTime, TimeZone, Utc};

/// An expression that is not valid crontab.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CrontabError {
    /// Byte offset of the faulty part in the expression.
    pub offset: usize,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// A parsed crontab expression.
#[derive(Clone, Debug)]
pub struct Crontab {
    eval: Eval,
}

#[derive(Clone, Debug)]
enum Eval {
    /// Day-of-month AND day-of-week (at least one of them starts with `*`).
    All(Box<cron::Schedule>),
    /// Day-of-month OR day-of-week: the earlier of the two.
    Either(Box<cron::Schedule>, Box<cron::Schedule>),
}

/// What one field may hold.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};
const YEAR: FieldSpec = FieldSpec {
    name: "year",
    min: 1970,
    max: 2099,
    names: &[],
};

/// One field as written and what it means.
struct Field {
    values: BTreeSet<u32>,
    /// Starts with `*` (crontab's test for "unrestricted" in the day-of-month/day-of-week rule).
    star: bool,
    full: bool,
}

const HINT: &str = "write 5 fields (minute hour day-of-month month day-of-week, e.g. \"*/15 * * * *\" or \"0 9 * * MON-FRI\"), 6 or 7 (seconds first, years last), or @hourly, @daily, @weekly, @monthly, @yearly";

impl FromStr for Crontab {
    type Err = CrontabError;

    fn from_str(expr: &str) -> Result<Self, CrontabError> {
        let lead = expr.len() - expr.trim_start().len();
        let trimmed = expr.trim();
        if let Some(name) = trimmed.strip_prefix('@') {
            let fields = match name.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                "reboot" => {
                    return Err(CrontabError {
                        offset: lead,
                        message: "@reboot is not a schedule here; trigger the DAG with `orchestrator run` instead".into(),
                    });
                }
                _ => {
                    return Err(CrontabError {
                        offset: lead,
                        message: format!("unknown macro @{name}; {HINT}"),
                    });
                }
            };
            return Self::from_str(fields).map_err(|e| CrontabError { offset: lead, ..e });
        }
        // (offset, text) of each field.
        let mut parts = Vec::new();
        let mut rest = expr;
        let mut base = 0;
        loop {
            let skipped = rest.len() - rest.trim_start().len();
            base += skipped;
            rest = &rest[skipped..];
            if rest.is_empty() {
                break;
            }
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            parts.push((base, &rest[..end]));
            base += end;
            rest = &rest[end..];
        }
        let specs: &[&FieldSpec] = match parts.len() {
            5 => &[&MINUTE, &HOUR, &DAY_OF_MONTH, &MONTH, &DAY_OF_WEEK],
            6 => &[&SECOND, &MINUTE, &HOUR, &DAY_OF_MONTH, &MONTH, &DAY_OF_WEEK],
            7 => &[
                &SECOND,
                &MINUTE,
                &HOUR,
                &DAY_OF_MONTH,
                &MONTH,
                &DAY_OF_WEEK,
                &YEAR,
            ],
            n => {
                return Err(CrontabError {
                    offset: lead,
                    message: format!("{n} fields; {HINT}"),
                });
            }
        };
        let mut fields = Vec::with_capacity(7);
        if parts.len() == 5 {
            fields.push(Field {
                values: BTreeSet::from([0]),
                star: false,
                full: false,
            });
        }
        for ((offset, text), spec) in parts.iter().zip(specs) {
            fields.push(parse_field(text, spec).map_err(|message| CrontabError {
                offset: *offset,
                message,
            })?);
        }
        if fields.len() == 6 {
            fields.push(Field {
                values: BTreeSet::new(),
                star: true,
                full: true,
            });
        }
        // Crontab's Sunday is 0 or 7; the crate's is 1 (Monday 2 ... Saturday 7).
        let dow = &mut fields[5];
        if dow.values.remove(&7) {
            dow.values.insert(0);
        }
        dow.values = dow.values.iter().map(|d| d + 1).collect();
        dow.full = dow.values.len() == 7;
        let [sec, min, hour, dom, month, dow, year] = &fields[..] else {
            unreachable!("seven fields");
        };
        let build = |dom: &str, dow: &str| {
            let text = format!(
                "{} {} {} {dom} {} {dow} {}",
                list(sec),
                list(min),
                list(hour),
                list(month),
                list(year)
            );
            cron::Schedule::from_str(&text)
                .map(Box::new)
                .map_err(|e| CrontabError {
                    offset: lead,
                    message: format!("the cron crate refused {text:?} ({e}); please report this"),
                })
        };
        let eval = if !dom.star && !dow.star {
            Eval::Either(build(&list(dom), "*")?, build("*", &list(dow))?)
        } else {
            Eval::All(build(&list(dom), &list(dow))?)
        };
        let crontab = Self { eval };
        if crontab.next_after(before_the_first_year()).is_none() {
            return Err(CrontabError {
                offset: lead,
                message: "the schedule never fires (no such date, e.g. 30 February); check day-of-month and month".into(),
            });
        }
        Ok(crontab)
    }
}

/// The crate's notation for a set: `*` for every value, else the values joined by `,`.
fn list(field: &Field) -> String {
    if field.full {
        return "*".into();
    }
    let v: Vec<String> = field.values.iter().map(u32::to_string).collect();
    v.join(",")
}

fn parse_field(text: &str, spec: &FieldSpec) -> Result<Field, String> {
    let mut values = BTreeSet::new();
    for item in text.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => {
                let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!(
                        "{} field {text:?}: step {s:?} must be a whole number above 0",
                        spec.name
                    )
                })?;
                (b, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if base == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = base.split_once('-') {
            let (a, b) = (value(a, text, spec)?, value(b, text, spec)?);
            if a > b {
                return Err(format!(
                    "{} field {text:?}: range {base:?} runs backwards; write it low-high (wrap-around ranges are not crontab), or as two items joined by ','",
                    spec.name
                ));
            }
            (a, b)
        } else {
            let a = value(base, text, spec)?;
            (a, if step.is_some() { spec.max } else { a })
        };
        values.extend((lo..=hi).step_by(step.unwrap_or(1) as usize));
    }
    let full = (spec.min..=spec.max).all(|v| values.contains(&v));
    Ok(Field {
        values,
        star: text.starts_with('*'),
        full,
    })
}

fn value(s: &str, text: &str, spec: &FieldSpec) -> Result<u32, String> {
    if let Ok(v) = s.parse::<u32>() {
        if (spec.min..=spec.max).contains(&v) {
            return Ok(v);
        }
        let sunday = if spec.names.len() == 7 {
            " (0 and 7 are Sunday)"
        } else {
            ""
        };
        return Err(format!(
            "{} field {text:?}: {v} is out of range {}-{}{sunday}",
            spec.name, spec.min, spec.max
        ));
    }
    if let Some(i) = spec.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + if spec.names.len() == 12 { 1 } else { 0 });
    }
    let quartz = if s.contains(['?', 'L', 'W', '#']) {
        " (`?`, `L`, `W` and `#` are Quartz syntax, not crontab)"
    } else {
        ""
    };
    let names = if spec.names.is_empty() {
        String::new()
    } else {
        format!(" or {}-{}", spec.names[0], spec.names[spec.names.len() - 1])
    };
    Err(format!(
        "{} field {text:?}: {s:?} is not a value; write {}-{}{names}, `*`, a range A-B or a step */N{quartz}",
        spec.name, spec.min, spec.max
    ))
}

impl Crontab {
    /// The first wall-clock time strictly after `t` that the expression names.
    pub fn next_after(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let at = Utc.from_utc_datetime(&t);
        let next = |s: &cron::Schedule| s.after(&at).next().map(|d| d.naive_utc());
        match &self.eval {
            Eval::All(s) => next(s),
            Eval::Either(a, b) => match (next(a), next(b)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// The last wall-clock time strictly before `t` that the expression names.
    pub fn prev_before(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let at = Utc.from_utc_datetime(&t);
        let prev = |s: &cron::Schedule| s.after(&at).next_back().map(|d| d.naive_utc());
        match &self.eval {
            Eval::All(s) => prev(s),
            Eval::Either(a, b) => match (prev(a), prev(b)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// Just before the first year the crate knows (1970).
fn before_the_first_year() -> NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(1969, 12, 31)
        .unwrap_or(chrono::NaiveDate::MIN)
        .and_time(chrono::NaiveTime::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    /// The next `n` times after `from`, formatted with the weekday.
    fn next(expr: &str, from: &str, n: usize) -> Vec<String> {
        let c: Crontab = expr.parse().unwrap();
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = c.next_after(t).unwrap();
                t.format("%a %Y-%m-%d %H:%M:%S").to_string()
            })
            .collect()
    }

    fn err(expr: &str) -> CrontabError {
        expr.parse::<Crontab>().unwrap_err()
    }

    // 2026-11-29 is a Sunday.
    const SUNDAY: &str = "2026-11-29 10:00:00";

    #[test]
    fn monday_is_one_and_sunday_is_zero_or_seven() {
        assert_eq!(
            next("0 9 * * 1", SUNDAY, 2),
            ["Mon 2026-11-30 09:00:00", "Mon 2026-12-07 09:00:00"]
        );
        assert_eq!(next("0 0 * * 0", SUNDAY, 1), ["Sun 2026-12-06 00:00:00"]);
        assert_eq!(next("0 0 * * 7", SUNDAY, 1), ["Sun 2026-12-06 00:00:00"]);
        assert_eq!(next("0 0 * * SUN", SUNDAY, 1), ["Sun 2026-12-06 00:00:00"]);
        assert_eq!(next("0 0 * * sun", SUNDAY, 1), ["Sun 2026-12-06 00:00:00"]);
        assert_eq!(
            next("0 0 * * 5-7", SUNDAY, 3),
            [
                "Fri 2026-12-04 00:00:00",
                "Sat 2026-12-05 00:00:00",
                "Sun 2026-12-06 00:00:00"
            ]
        );
        assert_eq!(next("0 0 * * 0-7", SUNDAY, 7).len(), 7, "0-7 is every day");
    }

    #[test]
    fn weekdays_by_number_and_by_name() {
        let want = [
            "Mon 2026-11-30 09:00:00",
            "Tue 2026-12-01 09:00:00",
            "Wed 2026-12-02 09:00:00",
            "Thu 2026-12-03 09:00:00",
            "Fri 2026-12-04 09:00:00",
            "Mon 2026-12-07 09:00:00",
        ];
        assert_eq!(next("0 9 * * 1-5", SUNDAY, 6), want);
        assert_eq!(next("0 9 * * MON-FRI", SUNDAY, 6), want);
        assert_eq!(next("0 9 * * mon,tue,wed,thu,fri", SUNDAY, 6), want);
        assert_eq!(
            next("0 9 * * SAT,SUN", SUNDAY, 3),
            [
                "Sat 2026-12-05 09:00:00",
                "Sun 2026-12-06 09:00:00",
                "Sat 2026-12-12 09:00:00"
            ]
        );
    }

    #[test]
    fn month_names_and_steps_in_every_field() {
        assert_eq!(
            next("0 0 1 JAN,jul *", SUNDAY, 2),
            ["Fri 2027-01-01 00:00:00", "Thu 2027-07-01 00:00:00"]
        );
        assert_eq!(
            next("0 0 1 MAR-MAY *", SUNDAY, 3),
            [
                "Mon 2027-03-01 00:00:00",
                "Thu 2027-04-01 00:00:00",
                "Sat 2027-05-01 00:00:00"
            ]
        );
        assert_eq!(
            next("*/20 * * * *", SUNDAY, 3),
            [
                "Sun 2026-11-29 10:20:00",
                "Sun 2026-11-29 10:40:00",
                "Sun 2026-11-29 11:00:00"
            ]
        );
        assert_eq!(
            next("0 */8 * * *", SUNDAY, 3),
            [
                "Sun 2026-11-29 16:00:00",
                "Mon 2026-11-30 00:00:00",
                "Mon 2026-11-30 08:00:00"
            ]
        );
        // Day-of-month steps start at 1.
        assert_eq!(
            next("0 0 */10 * *", SUNDAY, 4),
            [
                "Tue 2026-12-01 00:00:00",
                "Fri 2026-12-11 00:00:00",
                "Mon 2026-12-21 00:00:00",
                "Thu 2026-12-31 00:00:00"
            ]
        );
        // Month steps start at January.
        assert_eq!(
            next("0 0 1 */4 *", SUNDAY, 3),
            [
                "Fri 2027-01-01 00:00:00",
                "Sat 2027-05-01 00:00:00",
                "Wed 2027-09-01 00:00:00"
            ]
        );
        // Day-of-week steps run over 0-7: */3 is Sunday, Wednesday, Saturday.
        assert_eq!(
            next("0 0 * * */3", SUNDAY, 3),
            [
                "Wed 2026-12-02 00:00:00",
                "Sat 2026-12-05 00:00:00",
                "Sun 2026-12-06 00:00:00"
            ]
        );
        assert_eq!(
            next("10-30/10 9 * * *", SUNDAY, 3),
            [
                "Mon 2026-11-30 09:10:00",
                "Mon 2026-11-30 09:20:00",
                "Mon 2026-11-30 09:30:00"
            ]
        );
        assert_eq!(
            next("50/5 9 * * *", SUNDAY, 3),
            [
                "Mon 2026-11-30 09:50:00",
                "Mon 2026-11-30 09:55:00",
                "Tue 2026-12-01 09:50:00"
            ]
        );
        assert_eq!(
            next("*/20 0 0 1 1 * 2030-2031", SUNDAY, 4),
            [
                "Tue 2030-01-01 00:00:00",
                "Tue 2030-01-01 00:00:20",
                "Tue 2030-01-01 00:00:40",
                "Wed 2031-01-01 00:00:00"
            ]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // The 13th, and every Friday.
        assert_eq!(
            next("0 0 13 * FRI", SUNDAY, 4),
            [
                "Fri 2026-12-04 00:00:00",
                "Fri 2026-12-11 00:00:00",
                "Sun 2026-12-13 00:00:00",
                "Fri 2026-12-18 00:00:00"
            ]
        );
        // A field starting with `*` is unrestricted: both must match (`*/2` days that are Mondays).
        assert_eq!(
            next("0 0 */2 * 1", SUNDAY, 2),
            ["Mon 2026-12-07 00:00:00", "Mon 2026-12-21 00:00:00"]
        );
        let c: Crontab = "0 0 13 * FRI".parse().unwrap();
        assert_eq!(
            c.prev_before(at("2026-12-13 00:00:00")),
            Some(at("2026-12-11 00:00:00"))
        );
    }

    #[test]
    fn macros_and_the_six_and_seven_field_forms() {
        assert_eq!(next("@weekly", SUNDAY, 1), ["Sun 2026-12-06 00:00:00"]);
        assert_eq!(next("@daily", SUNDAY, 1), ["Mon 2026-11-30 00:00:00"]);
        assert_eq!(next("@midnight", SUNDAY, 1), ["Mon 2026-11-30 00:00:00"]);
        assert_eq!(next("@hourly", SUNDAY, 1), ["Sun 2026-11-29 11:00:00"]);
        assert_eq!(next("@monthly", SUNDAY, 1), ["Tue 2026-12-01 00:00:00"]);
        assert_eq!(next("@yearly", SUNDAY, 1), ["Fri 2027-01-01 00:00:00"]);
        assert_eq!(next("@annually", SUNDAY, 1), ["Fri 2027-01-01 00:00:00"]);
        // Six fields: seconds first, weekdays as in crontab.
        assert_eq!(next("30 0 9 * * 1", SUNDAY, 1), ["Mon 2026-11-30 09:00:30"]);
        // Seven: years last.
        assert_eq!(
            next("0 0 9 * * MON 2027", SUNDAY, 1),
            ["Mon 2027-01-04 09:00:00"]
        );
        let c: Crontab = "0 9 * * 1".parse().unwrap();
        assert_eq!(
            c.prev_before(at("2026-11-30 09:00:00")),
            Some(at("2026-11-23 09:00:00"))
        );
    }

    #[test]
    fn errors_say_which_field_and_what_to_write() {
        let e = err("0 9 * * 8");
        assert_eq!(e.offset, 8);
        assert!(e.message.contains("day-of-week"), "{e}");
        assert!(e.message.contains("out of range 0-7"), "{e}");
        assert!(err("61 * * * *").message.contains("minute"));
        assert_eq!(err("0 24 * * *").offset, 2);
        assert!(err("0 0 0 * *").message.contains("day-of-month"));
        assert!(err("0 0 * 13 *").message.contains("month"));
        assert!(err("0 0 * FOO *").message.contains("JAN-DEC"));
        assert!(err("0 0 ? * MON").message.contains("Quartz"));
        assert!(err("0 0 L * *").message.contains("Quartz"));
        assert!(err("0 0 * * FRI-MON").message.contains("backwards"));
        assert!(err("*/0 * * * *").message.contains("above 0"));
        assert!(err("every day").message.contains("2 fields"));
        assert!(err("* * * *").message.contains("4 fields"));
        assert!(err("@fortnightly").message.contains("unknown macro"));
        assert!(err("@reboot").message.contains("orchestrator run"));
        assert!(err("0 0 30 2 *").message.contains("never fires"));
        assert!(err("0 0 0 1 1 * 1900").message.contains("year"));
    }
}
