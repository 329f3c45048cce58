//! The `noop` and `sleep` kinds: tasks that do nothing (or wait), optionally failing or setting
//! outputs. For tests, joins and placeholders.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Operator, OperatorError, TaskContext};

/// Fields of a `noop` task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopConfig {
    /// Fail every try (to exercise trigger rules).
    #[serde(default, skip_serializing_if = "is_false")]
    pub fail: bool,
    /// Fail this many first tries, then succeed (to exercise retries).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fail_tries: u32,
    /// Outputs to set (strings are templated), e.g. `outputs = { rows = 5 }`.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

/// Fields of a `sleep` task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepConfig {
    /// How long to wait, e.g. `"30s"`, `"2m"`.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Fail after waiting.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fail: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl NoopConfig {
    fn finish(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        for (k, v) in &self.outputs {
            ctx.set_output(k.clone(), v.clone());
        }
        if self.fail {
            return Err(OperatorError::failed(
                "noop task configured with fail = true",
            ));
        }
        if ctx.try_number() <= self.fail_tries {
            return Err(OperatorError::failed(format!(
                "noop task configured to fail its first {} tries (this is try {})",
                self.fail_tries,
                ctx.try_number()
            )));
        }
        Ok(())
    }
}

impl Operator for NoopConfig {
    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        self.finish(ctx)
    }
}

impl Operator for SleepConfig {
    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        tokio::select! {
            () = tokio::time::sleep(self.duration) => {}
            () = ctx.cancelled() => return Err(OperatorError::Cancelled),
        }
        if self.fail {
            return Err(OperatorError::failed(
                "sleep task configured with fail = true",
            ));
        }
        Ok(())
    }
}
