//! Telling people about runs: `[[dag.notify]]` webhooks. [`message`] writes what happened (the
//! run, its failed tasks with their error and log tail, a link to its page) as our JSON document
//! or a Slack message; [`Notifier`] delivers it in the background with retries and records every
//! delivery in the store, where the run page and the API show it. The scheduler calls
//! [`Notifier::notify`]; front ends call [`Notifier::drain`] before they exit.

mod deliver;
pub mod message;

pub use deliver::{Notifier, NotifySettings, OutcomeLabels};
pub use message::{Message, Occasion, RetryFacts, TaskFacts};
