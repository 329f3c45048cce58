//! The DAG model: a TOML file ([`load`], [`parse_str`]) becomes a validated [`Dag`] (tasks in
//! topological order with their upstream/downstream indices, retry policies, templates checked),
//! or a [`LoadError`] listing every problem with its line and column. See `docs/dag-format.md`.

pub mod crontab;
pub mod dates;
mod env;
mod graph;
mod load;
pub mod notify;
mod spec;
pub mod template;
pub mod timezone;

pub use env::{InterpolateError, interpolate};
pub use graph::{render_dot, render_text};
pub use load::{Diagnostic, LoadError, load, parse_as_file, parse_str, parse_str_with_env};
pub use notify::{NotifyEvent, NotifyFormat, NotifyTarget, RunRules};
pub use spec::{Dag, ParamError, RetryPolicy, Schedule, Task, TriggerRule};
