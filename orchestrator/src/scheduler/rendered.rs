//! Run-time checks of a templated task: once its `{{ ... }}` are rendered, the kind's own
//! validation (the one the loader runs on literal values) runs again on the final values, so
//! `--param partitions=0` is refused with the message a literal `partitions = 0` gets at load time.

use crate::dag::Dag;
use crate::operators::{Operator, TaskKind, ValidateContext};

/// Checks a rendered kind with the load-time rules; the error lists every problem, each worded as
/// the loader words it (`task `<id>`: ...`).
pub(super) fn check(
    dag: &Dag,
    task_id: &str,
    kind: &TaskKind,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    let task_ids: Vec<String> = dag.tasks.iter().map(|t| t.id.to_string()).collect();
    let ctx = ValidateContext {
        task_id,
        dag_dir: &dag.dir,
        task_ids: &task_ids,
        params,
    };
    let problems = kind.validate(&ctx);
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("task `{task_id}`: {}", p.message))
        .collect();
    Err(format!(
        "{} (after templating; fix the params or outputs it was rendered from)",
        lines.join("; ")
    ))
}
