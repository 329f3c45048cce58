//! Reading a DAG file: TOML with spans -> raw sections ([`raw`]) -> checks across them
//! ([`checks`]) -> a validated [`Dag`] ([`build`]), or every problem at once with
//! `file:line:column` ([`problems`]).

mod build;
mod checks;
mod connections;
mod problems;
mod raw;
mod run_rules;

use std::path::{Path, PathBuf};

use toml::de::DeTable;

pub use problems::{Diagnostic, LoadError};

use super::spec::Dag;
use problems::Problems;

/// Reads and validates the DAG file at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<Dag, LoadError> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| LoadError::whole_file(&origin, format!("cannot read the DAG file: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| problems::not_utf8(&origin, &e))?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let env = |k: &str| std::env::var(k).ok();
    parse(&text, &origin, Some(abs.clone()), dir, &env)
}

/// Validates DAG text; `origin` names it in messages. Relative paths resolve against the current
/// directory; `${ENV}` comes from the process environment.
pub fn parse_str(text: &str, origin: &str) -> Result<Dag, LoadError> {
    let env = |k: &str| std::env::var(k).ok();
    let dir = std::env::current_dir().unwrap_or_default();
    parse(text, origin, None, dir, &env)
}

/// Validates DAG text as if it were the file at `file` (relative paths resolve against the
/// file's directory): a stored DAG version, run again by a clear or a resume.
pub fn parse_as_file(text: &str, file: &Path) -> Result<Dag, LoadError> {
    let origin = file.display().to_string();
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let env = |k: &str| std::env::var(k).ok();
    parse(text, &origin, Some(file.to_path_buf()), dir, &env)
}

/// Like [`parse_str`] with an explicit environment for `${ENV:-default}` (tests).
pub fn parse_str_with_env(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Dag, LoadError> {
    parse(text, origin, None, PathBuf::from("."), env)
}

/// The stages, one after the other; every stage reports all it finds before the DAG is refused.
fn parse(
    text: &str,
    origin: &str,
    file: Option<PathBuf>,
    dir: PathBuf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Dag, LoadError> {
    let mut problems = Problems::new(text);
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in &syntax {
            problems.toml(e, None);
        }
        return Err(problems.into_error(origin));
    }
    let root_span = root.span();
    let mut sections = raw::read_sections(root.into_inner(), root_span, &mut problems);
    let connections = connections::build(
        std::mem::take(&mut sections.connections),
        env,
        &mut problems,
    );
    let params = raw::params(sections.dag.as_ref());
    let (schedule, timezone) = checks::dag_fields(sections.dag.as_ref(), &mut problems);
    let run_rules = run_rules::check(sections.dag.as_ref(), env, &mut problems);
    let graph = checks::graph(&sections.tasks, &mut problems);
    checks::tasks(&sections.tasks, &graph, &params, &dir, &mut problems);
    if !problems.is_empty() {
        return Err(problems.into_error(origin));
    }
    let checked = build::Checked {
        graph,
        schedule,
        timezone,
        params,
        connections,
        run_rules,
        file,
        dir,
        source: text.into(),
    };
    match build::dag(sections, checked, &mut problems) {
        Some(dag) if problems.is_empty() => Ok(dag),
        _ => Err(problems.into_error(origin)),
    }
}
