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

/// Decides `rule` over the upstream states (an empty slice, a root task, always runs).
pub fn decide(rule: TriggerRule, upstream: &[TaskState]) -> Decision {
    let total = upstream.len();
    if total == 0 {
        return Decision::Run;
    }
    let (mut success, mut failed, mut skipped) = (0, 0, 0);
    for s in upstream {
        match s {
            TaskState::Success => success += 1,
            TaskState::Failed | TaskState::UpstreamFailed => failed += 1,
            TaskState::Skipped => skipped += 1,
            _ => {}
        }
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
    use Decision::*;
    use TaskState::*;
    use TriggerRule::*;

    #[test]
    fn each_rule_decides_as_airflow_does() {
        let cases: &[(TriggerRule, &[TaskState], Decision)] = &[
            (AllSuccess, &[], Run),
            (AllSuccess, &[Success, Success], Run),
            (AllSuccess, &[Success, Running], Wait),
            (AllSuccess, &[Running, Failed], UpstreamFailed),
            (AllSuccess, &[Success, UpstreamFailed], UpstreamFailed),
            (AllSuccess, &[Success, Skipped], Skip),
            (AllDone, &[Success, Running], Wait),
            (AllDone, &[Failed, Skipped, UpstreamFailed], Run),
            (AllFailed, &[Failed, UpstreamFailed], Run),
            (AllFailed, &[Failed, Running], Wait),
            (AllFailed, &[Failed, Success], Skip),
            (OneSuccess, &[Running, Success], Run),
            (OneSuccess, &[Running, Failed], Wait),
            (OneSuccess, &[Failed, Failed], UpstreamFailed),
            (OneSuccess, &[Skipped, Skipped], Skip),
            (OneFailed, &[Running, Failed], Run),
            (OneFailed, &[Running, Success], Wait),
            (OneFailed, &[Success, Skipped], Skip),
            (NoneFailed, &[Success, Skipped], Run),
            (NoneFailed, &[Success, Running], Wait),
            (NoneFailed, &[Success, Failed], UpstreamFailed),
            (NoneFailed, &[UpForRetry, Success], Wait),
        ];
        for (rule, ups, want) in cases {
            assert_eq!(decide(*rule, ups), *want, "{rule:?} over {ups:?}");
        }
    }
}
