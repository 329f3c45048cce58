//! `orchestrator pause DAG` and `orchestrator unpause DAG`: set the flag the cron scheduler of
//! `orchestrator serve` reads (it looks again within a second).

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::StateFiles;
use crate::store::{SqliteStore, Store};

/// `orchestrator pause` / `unpause`.
#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// The DAG id.
    pub dag: String,
}

/// Pauses (`paused = true`) or unpauses a DAG's schedule in the state database.
pub fn pause(files: &StateFiles, args: &PauseArgs, paused: bool) -> anyhow::Result<ExitCode> {
    let store = SqliteStore::open(&files.db)
        .with_context(|| format!("opening the state database {}", files.db.display()))?;
    store
        .set_paused(&args.dag, paused)
        .with_context(|| format!("pausing or unpausing DAG {}", args.dag))?;
    println!(
        "DAG {} {} (in {}); a running `orchestrator serve` on this state file sees it within a second",
        args.dag,
        if paused { "paused" } else { "unpaused" },
        files.db.display()
    );
    Ok(ExitCode::SUCCESS)
}
