//! Trigger rules: given the states of a task's upstream tasks, run it, wait, skip it, or mark it
//! upstream_failed. Decisions are taken as early as they are certain, as Airflow does.

use crate::dag::TriggerRule;
use crate::store::TaskState;

/// What to do with a pending task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not decidable yet.
    Wait,
    /// Queue it.
    Run,
    /// Mark it skipped.
    Skip,
    /// Mark it upstream_failed.
    UpstreamFailed,
}

/// Finished upstream tasks of one task, by outcome; kept up to date as upstream tasks finish, so
/// a decision costs O(1) however many upstream tasks there are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    /// Upstream tasks in all.
    pub total: usize,
    /// Succeeded.
    pub success: usize,
    /// Failed or upstream_failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
}

impl UpstreamCounts {
    /// Counts for `total` upstream tasks, none finished.
    pub fn new(total: usize) -> Self {
        Self {
            total,
            ..Self::default()
        }
    }

    /// Counts an upstream task that reached `state` (non-final states are ignored).
    pub fn add(&mut self, state: TaskState) {
        match state {
            TaskState::Success => self.success += 1,
            TaskState::Failed | TaskState::UpstreamFailed => self.failed += 1,
            TaskState::Skipped => self.skipped += 1,
            _ => {}
        }
    }
}

/// Decides `rule` over the upstream states (an empty slice, a root task, always runs).
pub fn decide(rule: TriggerRule, upstream: &[TaskState]) -> Decision {
    let mut counts = UpstreamCounts::new(upstream.len());
    for &s in upstream {
        counts.add(s);
    }
    decide_counts(rule, counts)
}

/// Decides `rule` over counts of finished upstream tasks.
pub fn decide_counts(rule: TriggerRule, c: UpstreamCounts) -> Decision {
    let UpstreamCounts {
        total,
        success,
        failed,
        skipped,
    } = c;
    if total == 0 {
        return Decision::Run;
    }
    let done = success + failed + skipped;
    match rule {
        TriggerRule::AllSuccess => {
            if failed > 0 {
                Decision::UpstreamFailed
            } else if skipped > 0 {
                Decision::Skip
            } else if success == total {
                Decision::Run
            } else {
                Decision::Wait
            }
        }
        TriggerRule::AllFailed => {
            if success > 0 || skipped > 0 {
                Decision::Skip
            } else if failed == total {
                Decision::Run
            } else {
                Decision::Wait
            }
        }
        TriggerRule::AllDone => {
            if done == total {
                Decision::Run
            } else {
                Decision::Wait
            }
        }
        TriggerRule::OneSuccess => {
            if success > 0 {
                Decision::Run
            } else if done < total {
                Decision::Wait
            } else if skipped == total {
                Decision::Skip
            } else {
                Decision::UpstreamFailed
            }
        }
        TriggerRule::OneFailed => {
            if failed > 0 {
                Decision::Run
            } else if done < total {
                Decision::Wait
            } else {
                Decision::Skip
            }
        }
        TriggerRule::NoneFailed => {
            if failed > 0 {
                Decision::UpstreamFailed
            } else if done == total {
                Decision::Run
            } else {
                Decision::Wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{Run, Skip, Wait};
    use TaskState::{Failed, Running, Skipped, Success, UpForRetry};
    use TriggerRule::*;

    /// The decision (not the state) named upstream_failed.
    const UF: Decision = Decision::UpstreamFailed;
    const UPF: TaskState = TaskState::UpstreamFailed;

    #[test]
    fn each_rule_decides_as_airflow_does() {
        let cases: &[(TriggerRule, &[TaskState], Decision)] = &[
            (AllSuccess, &[], Run),
            (AllSuccess, &[Success, Success], Run),
            (AllSuccess, &[Success, Running], Wait),
            (AllSuccess, &[Running, Failed], UF),
            (AllSuccess, &[Success, UPF], UF),
            (AllSuccess, &[Success, Skipped], Skip),
            (AllDone, &[Success, Running], Wait),
            (AllDone, &[Failed, Skipped, UPF], Run),
            (AllFailed, &[Failed, UPF], Run),
            (AllFailed, &[Failed, Running], Wait),
            (AllFailed, &[Failed, Success], Skip),
            (OneSuccess, &[Running, Success], Run),
            (OneSuccess, &[Running, Failed], Wait),
            (OneSuccess, &[Failed, Failed], UF),
            (OneSuccess, &[Skipped, Skipped], Skip),
            (OneFailed, &[Running, Failed], Run),
            (OneFailed, &[Running, Success], Wait),
            (OneFailed, &[Success, Skipped], Skip),
            (NoneFailed, &[Success, Skipped], Run),
            (NoneFailed, &[Success, Running], Wait),
            (NoneFailed, &[Success, Failed], UF),
            (NoneFailed, &[UpForRetry, Success], Wait),
        ];
        for (rule, ups, want) in cases {
            assert_eq!(decide(*rule, ups), *want, "{rule:?} over {ups:?}");
        }
    }
}
