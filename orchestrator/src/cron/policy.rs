//! The catch-up policy: which schedule slots to run, given the last slot a DAG ran and the time
//! now. Pure functions, so the rules are tested apart from any clock.
//!
//! - A DAG that never ran on schedule starts with the first slot after the server starts: there
//!   is no backfill of history.
//! - Slots missed while the server was down (or while a run held `max_active_runs`) are not run
//!   one after another by default ([`CatchUp::Latest`]): only the most recent missed slot runs, once.
//!   This is Airflow's `catchup = False`.
//! - With [`CatchUp::All`] (`orchestrator serve --catchup`, or `[dag] catchup = true` for one DAG), every missed slot runs, oldest first,
//!   as `max_active_runs` allows; at most [`MAX_CATCHUP_SLOTS`] are kept (the oldest are dropped).
//! - Slots that pass while a DAG is paused are dropped under both policies: unpausing does not
//!   replay them.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use crate::dag::Schedule;

/// At most this many missed slots wait to be caught up per DAG.
pub const MAX_CATCHUP_SLOTS: usize = 1000;

/// What to do with schedule slots that were missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Run only the most recent missed slot (the default).
    #[default]
    Latest,
    /// Run every missed slot, oldest first.
    All,
}

/// The slots of `schedule` in `(after, until]`, oldest first; at most `cap` of the most recent
/// ones, with how many older ones were left out.
pub fn slots_between(
    schedule: &Schedule,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    cap: usize,
) -> (VecDeque<DateTime<Utc>>, u64) {
    let mut slots = VecDeque::new();
    let mut dropped = 0;
    let mut cursor = after;
    while let Some(next) = schedule.next_after(cursor) {
        if next > until {
            break;
        }
        if slots.len() == cap {
            slots.pop_front();
            dropped += 1;
        }
        slots.push_back(next);
        cursor = next;
    }
    (slots, dropped)
}

/// The most recent slots of `schedule` in `(after, until]` (at most `cap`), oldest first, and
/// whether older slots in that range were left out. Unlike [`slots_between`] it does not walk a
/// long gap slot by slot (a `*/1 * * * * *` schedule down for a year has 31 million): it looks
/// back from `until` over growing windows.
pub fn recent_slots(
    schedule: &Schedule,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    cap: usize,
) -> (VecDeque<DateTime<Utc>>, bool) {
    if until <= after {
        return (VecDeque::new(), false);
    }
    let mut window = chrono::Duration::minutes(1);
    loop {
        let lo = until
            .checked_sub_signed(window)
            .map_or(after, |lo| lo.max(after));
        let (slots, dropped) = slots_between(schedule, lo, until, cap);
        if slots.len() >= cap || lo == after {
            let truncated = dropped > 0 || (lo > after && slots.len() >= cap);
            return (slots, truncated);
        }
        window = window * 8;
    }
}

/// Adds newly due slots to the queue of slots waiting to run and applies the policy: `Latest`
/// keeps only the newest slot, `All` keeps them all (up to [`MAX_CATCHUP_SLOTS`]). Returns how
/// many slots were dropped.
pub fn enqueue(
    pending: &mut VecDeque<DateTime<Utc>>,
    due: impl IntoIterator<Item = DateTime<Utc>>,
    policy: CatchUp,
) -> u64 {
    pending.extend(due);
    let keep = match policy {
        CatchUp::Latest => 1,
        CatchUp::All => MAX_CATCHUP_SLOTS,
    };
    let mut dropped = 0;
    while pending.len() > keep {
        pending.pop_front();
        dropped += 1;
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn slots_between_are_exclusive_of_the_start_and_inclusive_of_the_end() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let (slots, dropped) = slots_between(
            &s,
            t("2024-01-01T10:00:00Z"),
            t("2024-01-01T11:00:00Z"),
            100,
        );
        let got: Vec<String> = slots
            .iter()
            .map(|d| d.format("%H:%M").to_string())
            .collect();
        assert_eq!(got, ["10:15", "10:30", "10:45", "11:00"]);
        assert_eq!(dropped, 0);
        let (slots, dropped) =
            slots_between(&s, t("2024-01-01T10:00:00Z"), t("2024-01-02T10:00:00Z"), 3);
        assert_eq!(dropped, 93);
        assert_eq!(slots.back().copied(), Some(t("2024-01-02T10:00:00Z")));
    }

    #[test]
    fn latest_keeps_one_slot_and_all_keeps_every_slot() {
        let slots = [t("2024-01-01T10:00:00Z"), t("2024-01-01T10:01:00Z")];
        let mut q = VecDeque::new();
        assert_eq!(enqueue(&mut q, slots, CatchUp::Latest), 1);
        assert_eq!(q, [slots[1]]);
        let mut q = VecDeque::new();
        assert_eq!(enqueue(&mut q, slots, CatchUp::All), 0);
        assert_eq!(q, slots);
    }

    #[test]
    fn recent_slots_look_back_without_walking_the_whole_gap() {
        let s = Schedule::parse("*/1 * * * * *").unwrap();
        let until = t("2025-01-01T00:00:00Z");
        let (slots, truncated) = recent_slots(&s, t("2020-01-01T00:00:00Z"), until, 3);
        assert!(truncated);
        assert_eq!(
            Vec::from(slots),
            [
                t("2024-12-31T23:59:58Z"),
                t("2024-12-31T23:59:59Z"),
                t("2025-01-01T00:00:00Z")
            ]
        );
        let daily = Schedule::parse("@daily").unwrap();
        let (slots, truncated) = recent_slots(
            &daily,
            t("2024-12-29T12:00:00Z"),
            t("2025-01-01T12:00:00Z"),
            10,
        );
        assert!(!truncated);
        assert_eq!(slots.len(), 3);
        assert!(recent_slots(&daily, until, until, 10).0.is_empty());
    }

    proptest! {
        /// Whatever was missed, `Latest` never queues more than one run and it is the newest slot;
        /// `All` queues every slot in order, within the cap.
        #[test]
        fn policies_bound_the_runs(minutes in 0u32..5000, every in 1u32..30) {
            let s = Schedule::parse(&format!("*/{every} * * * *")).unwrap();
            let start = t("2024-01-01T00:00:00Z");
            let end = start + chrono::Duration::minutes(minutes.into());
            let (slots, _) = slots_between(&s, start, end, MAX_CATCHUP_SLOTS);
            let mut latest = VecDeque::new();
            enqueue(&mut latest, slots.clone(), CatchUp::Latest);
            prop_assert!(latest.len() <= 1);
            prop_assert_eq!(latest.back(), slots.back());
            let mut all = VecDeque::new();
            enqueue(&mut all, slots.clone(), CatchUp::All);
            prop_assert!(all.len() <= MAX_CATCHUP_SLOTS);
            prop_assert!(all.iter().zip(all.iter().skip(1)).all(|(a, b)| a < b));
            prop_assert!(all.iter().all(|d| *d > start && *d <= end));
            let (recent, _) = recent_slots(&s, start, end, MAX_CATCHUP_SLOTS);
            prop_assert_eq!(recent, slots);
        }
    }
}
