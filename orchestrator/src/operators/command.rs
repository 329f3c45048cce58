//! The `command` kind: runs a program (or a `sh -c` line) to completion in its own process group;
//! the task succeeds iff it exits 0. Outputs come from `::velostream::` lines, plus `exit_code`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, Operator, OperatorError, TaskContext, ValidateContext};
use crate::process::ProcessSpec;

/// Fields of a `command` task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program: a path (relative to the DAG file's directory) or a bare name looked up next to
    /// the orchestrator executable, then in PATH. Exactly one of `program` and `shell`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Arguments of `program`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// A shell command line run with `/bin/sh -c`, instead of `program` and `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Extra environment variables (the orchestrator's environment and the connections'
    /// `KAFKA_BROKERS`/`CLICKHOUSE_*` are passed too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the DAG file's directory; default: the orchestrator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

impl CommandConfig {
    fn spec(&self) -> Result<ProcessSpec, OperatorError> {
        let (program, args) = match (&self.program, &self.shell) {
            (Some(p), None) => (p.clone(), self.args.clone()),
            (None, Some(line)) => ("/bin/sh".to_owned(), vec!["-c".to_owned(), line.clone()]),
            _ => {
                return Err(OperatorError::failed(
                    "a command task needs exactly one of `program` and `shell`",
                ));
            }
        };
        Ok(ProcessSpec {
            program,
            args,
            env: self.env.clone(),
            cwd: self.cwd.as_ref().map(PathBuf::from),
            base_dir: PathBuf::new(),
        })
    }
}

/// The longest single argument or environment string Linux passes to a program
/// (`MAX_ARG_STRLEN`, 32 pages), terminating NUL included: anything longer fails at start with
/// "Argument list too long".
pub const MAX_ARG_BYTES: usize = 32 * 4096;

/// Arguments (the `shell` line is one) and environment entries too long for the OS: caught when
/// the DAG loads, and after templating when the task runs, rather than as E2BIG at start.
fn argument_problems(c: &CommandConfig) -> Vec<ConfigProblem> {
    let too_long = |field: &str, what: String, len: usize| {
        ConfigProblem::field(
            field,
            format!(
                "{what} is {len} bytes; the OS passes at most {} bytes as one argument or environment variable: put the script in a file and run it (program = \"/bin/sh\", args = [\"script.sh\"]), or pass large data in a file",
                MAX_ARG_BYTES - 1
            ),
        )
    };
    let mut problems = Vec::new();
    if let Some(line) = &c.shell
        && line.len() >= MAX_ARG_BYTES
    {
        problems.push(too_long("shell", "`shell`".into(), line.len()));
    }
    for (i, a) in c.args.iter().enumerate() {
        if a.len() >= MAX_ARG_BYTES {
            problems.push(too_long("args", format!("`args[{i}]`"), a.len()));
        }
    }
    for (k, v) in &c.env {
        // `KEY=value` is one string.
        if k.len() + 1 + v.len() >= MAX_ARG_BYTES {
            problems.push(too_long("env", format!("`env.{k}`"), k.len() + 1 + v.len()));
        }
    }
    problems
}

impl Operator for CommandConfig {
    fn validate(&self, _ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        match (&self.program, &self.shell) {
            (None, None) => problems.push(ConfigProblem::task(
                "a command task needs `program` (with `args`) or `shell`",
            )),
            (Some(_), Some(_)) => problems.push(ConfigProblem::field(
                "shell",
                "give either `program` (with `args`) or `shell`, not both",
            )),
            (None, Some(_)) if !self.args.is_empty() => problems.push(ConfigProblem::field(
                "args",
                "`args` goes with `program`; with `shell`, put the arguments in the command line",
            )),
            _ => {}
        }
        if self.program.as_deref().is_some_and(|p| p.trim().is_empty()) {
            problems.push(ConfigProblem::field("program", "must not be empty"));
        }
        problems.extend(argument_problems(self));
        problems
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        let spec = self.spec()?;
        let mut child = ctx.spawn(spec)?;
        let program = self
            .program
            .clone()
            .unwrap_or_else(|| "the shell command".to_owned());
        tokio::select! {
            exit = child.wait() => {
                let exit = exit?;
                ctx.set_exit_code(exit.exit_code());
                ctx.set_output("exit_code", exit.exit_code());
                if exit.success() {
                    Ok(())
                } else {
                    Err(OperatorError::Exit { program, exit })
                }
            }
            () = ctx.cancelled() => {
                let exit = child.terminate(ctx.kill_grace()).await?;
                ctx.set_exit_code(exit.exit_code());
                ctx.log(format!("[velostream] stopped {program} ({exit})"));
                Err(OperatorError::Cancelled)
            }
        }
    }
}
