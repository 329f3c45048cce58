//! The `orchestrator` command line: `run`, `validate`, `graph`, `next`, `backfill`, `runs`, `logs`,
//! `clear`, `mark`, `resume`, `notes`, `serve`, `pause` and `unpause`. All parsing lives here; each command is a function over the
//! library (`serve` hands its options to [`crate::web`]), so `main.rs` only sets up logging.

mod backfill;
mod commands;
mod next;
mod progress;
mod repair;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use backfill::BackfillArgs;
pub use commands::{logs, pause, run, runs};
pub use next::NextArgs;
pub use repair::{ClearArgs, MarkArgs, MarkState, NotesArgs, ResumeArgs};

use crate::store::StateFiles;
use crate::web::ServeOptions;

/// Default state database, relative to the working directory.
pub const DEFAULT_STATE: &str = ".velostream/state.db";

/// velostream's DAG runner: run TOML DAGs with retries, timeouts and state, like Airflow.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version, about, long_about = None)]
pub struct Cli {
    /// The state database (runs, tries, outputs): a SQLite file (logs go to a `logs/` directory
    /// beside it), or a PostgreSQL database as postgres://USER:PASSWORD@HOST:PORT/DATABASE (logs
    /// go to .velostream/logs, or --logs).
    #[arg(long, global = true, env = "VELOSTREAM_STATE", default_value = DEFAULT_STATE)]
    pub state: String,

    /// Where try logs go, instead of the default beside the SQLite file (or .velostream/logs
    /// when --state is a URL). Commands that read logs (`logs`, `serve`) must see the same
    /// directory as the ones that ran the tasks.
    #[arg(long, global = true, env = "VELOSTREAM_LOGS")]
    pub logs: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a DAG now, showing progress; exits 0 only if the run succeeded.
    Run(RunArgs),
    /// Check DAG files strictly and report every problem with file:line:column.
    Validate(ValidateArgs),
    /// Print a DAG's tasks and dependencies as text and/or Graphviz DOT.
    Graph(GraphArgs),
    /// Print the next fire times of a DAG's schedule with their data intervals, in the DAG's
    /// time zone and UTC.
    Next(NextArgs),
    /// Run a DAG once per schedule slot in a past range (oldest first), or list the slots with
    /// --dry-run.
    Backfill(BackfillArgs),
    /// List past and current runs, newest first (or one run's tasks with --run).
    Runs(RunsArgs),
    /// Print the log of one try of a task.
    Logs(LogsArgs),
    /// Run tasks of an ended run again as new tries (with --downstream, everything below them;
    /// --failed, the failed ones), keeping the other tasks' states and outputs; --dry-run lists
    /// them. Drives the run to its end here.
    Clear(ClearArgs),
    /// Set a task instance of an ended run to success or failed by hand, with a reason; the tasks
    /// below it are decided again and the run driven to its end here.
    Mark(MarkArgs),
    /// Take over a run whose orchestrator died (interrupted tries count as failed tries) and
    /// drive it to its end here.
    Resume(ResumeArgs),
    /// Print a run's notes, or replace them with --set.
    Notes(NotesArgs),
    /// Serve the web UI and JSON API, and fire each DAG's cron schedule, until Ctrl-C.
    Serve(ServeArgs),
    /// Pause a DAG's schedule (`serve` stops starting its scheduled runs).
    Pause(PauseArgs),
    /// Unpause a DAG's schedule.
    Unpause(PauseArgs),
}

/// `orchestrator run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The DAG file.
    pub file: PathBuf,
    /// Override a param: `--param rows=1000` (repeatable).
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub params: Vec<(String, String)>,
    /// The run's logical date (RFC 3339); default: now.
    #[arg(long, value_name = "RFC3339")]
    pub logical_date: Option<chrono::DateTime<chrono::Utc>>,
    /// Do not draw progress bars (state changes are still printed).
    #[arg(long)]
    pub no_progress: bool,
    /// Grace between SIGTERM and SIGKILL when stopping a task's processes.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub kill_grace: std::time::Duration,
    /// The base URL of `orchestrator serve` on this state file, as users reach it: notifications
    /// (`[[dag.notify]]`) link to the run's page under it.
    #[arg(long, env = "VELOSTREAM_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<reqwest::Url>,
}

/// `orchestrator validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// DAG files, or folders: every `*.toml` under a folder, recursively (as `serve --dags`).
    #[arg(required = true, value_name = "PATH")]
    pub files: Vec<PathBuf>,
}

/// Output format of `orchestrator graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Text, then DOT.
    Both,
    /// An indented list of tasks with their upstream tasks.
    Text,
    /// Graphviz DOT (`| dot -Tsvg > dag.svg`).
    Dot,
}

/// `orchestrator graph`.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The DAG file.
    pub file: PathBuf,
    /// What to print.
    #[arg(long, value_enum, default_value_t = GraphFormat::Both)]
    pub format: GraphFormat,
}

/// `orchestrator runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Only this DAG's runs.
    pub dag: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Show the task instances of this run instead of the list.
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
}

/// `orchestrator logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The run id (see `orchestrator runs`).
    pub run: String,
    /// The task id.
    pub task: String,
    /// The try number; default: the last try.
    #[arg(long = "try", value_name = "N")]
    pub try_number: Option<u32>,
}

/// `orchestrator serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The folder of DAG files (`*.toml`, searched recursively), reloaded when files change.
    #[arg(long, env = "VELOSTREAM_DAGS", default_value = "dags")]
    pub dags: PathBuf,

    /// Where to listen. Loopback by default; any other address needs --token (or
    /// --allow-unauthenticated).
    #[arg(long, env = "VELOSTREAM_BIND", default_value = "127.0.0.1:8080")]
    pub bind: std::net::SocketAddr,

    /// Require this token: `Authorization: Bearer <token>` for API clients, or HTTP basic auth
    /// with any user name and the token as password for browsers.
    #[arg(long, env = "VELOSTREAM_UI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Serve a non-loopback address without a token (anyone who can reach it can run DAGs).
    #[arg(long)]
    pub allow_unauthenticated: bool,

    /// Run every schedule slot missed while the server was down, oldest first (default: only the
    /// most recent one). See docs/api.md, "Catch-up policy".
    #[arg(long, env = "VELOSTREAM_CATCHUP")]
    pub catchup: bool,

    /// Serve the UI and API only: do not fire schedules.
    #[arg(long)]
    pub no_cron: bool,

    /// Grace between SIGTERM and SIGKILL when stopping a task's processes.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub kill_grace: std::time::Duration,

    /// Tasks running at once across all runs of this server (default: only per-DAG limits).
    #[arg(long, value_name = "N")]
    pub max_parallel_tasks: Option<usize>,

    /// On SIGINT/SIGTERM, cancel the runs this server drives (they end failed) instead of
    /// leaving them resumable for the next start.
    #[arg(long, env = "VELOSTREAM_CANCEL_RUNS_ON_EXIT")]
    pub cancel_runs_on_exit: bool,

    /// The base URL users reach this server at (behind a proxy, another host name):
    /// notifications (`[[dag.notify]]`) link to run pages under it. Default: http://BIND, unless
    /// it binds all addresses (then messages carry no link).
    #[arg(long, env = "VELOSTREAM_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<reqwest::Url>,

    /// How often this server renews its lease on the state and looks for runs of dead servers
    /// to pick up (several servers may share one PostgreSQL state).
    #[arg(long, env = "VELOSTREAM_HEARTBEAT", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub heartbeat: std::time::Duration,

    /// How long after this server's last heartbeat servers on other hosts take it for dead and
    /// pick up its runs (on one host a dead server is seen at once by its pid). Longer than
    /// --heartbeat.
    #[arg(long, env = "VELOSTREAM_LEASE", value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: std::time::Duration,
}

impl From<ServeArgs> for ServeOptions {
    fn from(a: ServeArgs) -> Self {
        Self {
            dags: a.dags,
            bind: a.bind,
            token: a.token,
            allow_unauthenticated: a.allow_unauthenticated,
            catchup: a.catchup,
            no_cron: a.no_cron,
            kill_grace: a.kill_grace,
            max_parallel_tasks: a.max_parallel_tasks,
            cancel_runs_on_exit: a.cancel_runs_on_exit,
            public_url: a.public_url,
            lease: crate::cron::LeaseSettings {
                heartbeat: a.heartbeat,
                lease: a.lease,
            },
        }
    }
}

/// `orchestrator pause` / `unpause`.
#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// The DAG id.
    pub dag: String,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Runs the parsed command line; prints errors with their causes and returns the exit code.
pub fn main(cli: Cli) -> ExitCode {
    let files = StateFiles::parse(&cli.state).with_log_dir(cli.logs);
    let result = match cli.command {
        Command::Run(args) => run(&files, args),
        Command::Validate(args) => Ok(commands::validate(&args)),
        Command::Graph(args) => commands::graph(&args).map(|()| ExitCode::SUCCESS),
        Command::Next(args) => next::next(&args).map(|()| ExitCode::SUCCESS),
        Command::Backfill(args) => backfill::backfill(&files, &args),
        Command::Runs(args) => runs(&files, &args).map(|()| ExitCode::SUCCESS),
        Command::Logs(args) => logs(&files, &args).map(|()| ExitCode::SUCCESS),
        Command::Clear(args) => repair::clear(&files, args),
        Command::Mark(args) => repair::mark(&files, args),
        Command::Resume(args) => repair::resume(&files, args),
        Command::Notes(args) => repair::notes(&files, &args),
        Command::Serve(args) => crate::web::serve(&files, args.into()),
        Command::Pause(args) => pause(&files, &args, true),
        Command::Unpause(args) => pause(&files, &args, false),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}
