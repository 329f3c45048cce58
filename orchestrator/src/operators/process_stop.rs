//! `process.stop`: stops the program a process.spawn task started, by that task's id (every
//! replica of a fleet, all at once): SIGTERM to its process group, up to a grace period for a
//! clean exit (the consumer flushes its last batch and commits), then SIGKILL. It fails, saying
//! how, if a program had died earlier, exited non-zero, or had to be killed; the others are
//! stopped all the same.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::process_spawn::redirect_output;
use super::{ConfigProblem, Operator, OperatorError, TaskContext, ValidateContext};
use crate::process::{Child, ExitInfo};

fn default_grace() -> Duration {
    Duration::from_secs(30)
}

/// Fields of a `process.stop` task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessStop {
    /// The id of the process.spawn task whose program to stop (it must be upstream of this task).
    pub task: String,
    /// How long to wait after SIGTERM for the program to exit before SIGKILL (humantime,
    /// default `30s`).
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace: Duration,
}

/// Whether an exit after our SIGTERM is a clean stop: exit code 0, or death by that SIGTERM (a
/// program without a handler).
fn clean(exit: &ExitInfo) -> bool {
    exit.success() || exit.signal == Some(Signal::SIGTERM as i32)
}

impl ProcessStop {
    /// Problems a DAG author can fix, found when the DAG loads.
    pub fn problems(&self, ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.task == ctx.task_id {
            problems.push(ConfigProblem::field(
                "task",
                "`task` names this task itself; name the process.spawn task to stop",
            ));
        }
        if self.grace.is_zero() {
            problems.push(ConfigProblem::field(
                "grace",
                "`grace` must be longer than 0s: give the program time to exit cleanly",
            ));
        }
        problems
    }
}

impl Operator for ProcessStop {
    fn validate(&self, ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        self.problems(ctx)
    }

    fn referenced_tasks(&self) -> Vec<&str> {
        vec![self.task.as_str()]
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        let Some(children) = ctx.processes().take(&self.task) else {
            return Err(OperatorError::failed(format!(
                "task {} has no running process in this run: it did not start one (did it succeed?) or another task already stopped it",
                self.task
            )));
        };
        // Output from now on (the last flush, final outputs) belongs to this task.
        redirect_output(&self.task, ctx);
        let fleet = children.len() > 1;
        let stops = children.into_iter().enumerate().map(|(replica, child)| {
            let label = |pid: u32, program: &str| match fleet {
                true => format!(
                    "{program} replica {replica} (pid {pid}) of task {}",
                    self.task
                ),
                false => format!("{program} (pid {pid}) of task {}", self.task),
            };
            let label = label(child.pid(), &child.program().display().to_string());
            self.stop_one(ctx, child, label)
        });
        let stopped = futures::future::join_all(stops).await;
        let mut failures = Vec::new();
        let mut exit_codes = Vec::new();
        let (mut killed, mut took) = (false, Duration::ZERO);
        for result in stopped {
            match result {
                Ok(stop) => {
                    exit_codes.push(stop.exit.exit_code());
                    killed |= stop.killed;
                    took = took.max(stop.took);
                    if let Some(failure) = stop.failure {
                        failures.push(failure);
                    }
                }
                Err(OperatorError::Cancelled) => return Err(OperatorError::Cancelled),
                Err(error) => failures.push(error.to_string()),
            }
        }
        let exit_code = exit_codes.iter().copied().find(|&c| c != 0).unwrap_or(0);
        ctx.set_exit_code(exit_code);
        ctx.set_output("exit_code", exit_code);
        if fleet {
            ctx.set_output("exit_codes", exit_codes);
        }
        ctx.set_output("stop_ms", took.as_millis() as u64);
        ctx.set_output("killed", killed);
        match failures.len() {
            0 => Ok(()),
            _ => Err(OperatorError::failed(failures.join("; "))),
        }
    }
}

/// How one program stopped.
struct Stopped {
    exit: ExitInfo,
    killed: bool,
    took: Duration,
    /// Why it counts as a failure, if it does.
    failure: Option<String>,
}

impl ProcessStop {
    /// Stops one program (`label` names it in messages): SIGTERM, `grace`, SIGKILL.
    async fn stop_one(
        &self,
        ctx: &TaskContext,
        mut child: Child,
        label: String,
    ) -> Result<Stopped, OperatorError> {
        if let Some(exit) = child.try_finish().await? {
            let failure = if exit.success() {
                ctx.log(format!("{label} had already exited cleanly"));
                None
            } else {
                Some(format!(
                    "{label} had already died before process.stop: {exit}"
                ))
            };
            return Ok(Stopped {
                exit,
                killed: false,
                took: Duration::ZERO,
                failure,
            });
        }
        ctx.log(format!(
            "Sending SIGTERM to {label}; waiting up to {} for it to exit",
            humantime::format_duration(self.grace)
        ));
        let started = Instant::now();
        child.signal_group(Signal::SIGTERM);
        let waited = tokio::select! {
            biased;
            () = ctx.cancelled() => None,
            r = tokio::time::timeout(self.grace, child.wait()) => Some(r),
        };
        let (exit, killed) = match waited {
            Some(Ok(exit)) => (exit?, false),
            Some(Err(_)) => {
                ctx.log(format!(
                    "{label} did not exit within {}; sending SIGKILL",
                    humantime::format_duration(self.grace)
                ));
                child.signal_group(Signal::SIGKILL);
                (child.wait().await?, true)
            }
            None => {
                child.signal_group(Signal::SIGKILL);
                let exit = child.wait().await?;
                ctx.log(format!("Cancelled; killed {label}: {exit}"));
                return Err(OperatorError::Cancelled);
            }
        };
        let took = started.elapsed();
        let failure = if killed {
            Some(format!(
                "{label} ignored SIGTERM for {} and was killed with SIGKILL; it may have lost unflushed work",
                humantime::format_duration(self.grace)
            ))
        } else if !clean(&exit) {
            Some(format!("{label} stopped with {exit} after SIGTERM"))
        } else {
            ctx.log(format!(
                "{label} stopped after {:.3}s: {}",
                took.as_secs_f64(),
                if exit.success() {
                    exit.to_string()
                } else {
                    format!("{exit} (it has no SIGTERM handler)")
                }
            ));
            None
        };
        Ok(Stopped {
            exit,
            killed,
            took,
            failure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_and_are_checked() {
        let spec: ProcessStop = toml::from_str("task = \"consumer\"").unwrap();
        assert_eq!(spec.grace, Duration::from_secs(30));
        assert_eq!(spec.referenced_tasks(), ["consumer"]);
        let params = serde_json::Map::new();
        let ids = vec!["stop".to_owned()];
        let vctx = ValidateContext {
            task_id: "stop",
            dag_dir: std::path::Path::new("."),
            task_ids: &ids,
            params: &params,
        };
        let spec: ProcessStop = toml::from_str("task = \"stop\"\ngrace = \"0s\"").unwrap();
        assert_eq!(spec.problems(&vctx).len(), 2);
        assert!(toml::from_str::<ProcessStop>("task = \"x\"\nsignal = \"INT\"").is_err());
    }

    #[test]
    fn a_sigterm_death_or_exit_zero_is_clean() {
        assert!(clean(&ExitInfo {
            code: Some(0),
            signal: None
        }));
        assert!(clean(&ExitInfo {
            code: None,
            signal: Some(15)
        }));
        assert!(!clean(&ExitInfo {
            code: Some(1),
            signal: None
        }));
        assert!(!clean(&ExitInfo {
            code: None,
            signal: Some(9)
        }));
    }
}
