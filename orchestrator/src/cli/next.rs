//! `orchestrator next DAG_FILE [--count N] [--after TIME]`: the next fire times of a DAG's
//! schedule with their data intervals, in the DAG's zone and in UTC.

use std::path::PathBuf;

use anyhow::bail;
use chrono::{DateTime, Utc};

use super::table;
use crate::cron::upcoming::{self, local, utc};
use crate::dag;

/// `orchestrator next`.
#[derive(Debug, clap::Args)]
pub struct NextArgs {
    /// The DAG file.
    pub file: PathBuf,
    /// How many fire times.
    #[arg(long, short = 'n', default_value_t = 5)]
    pub count: usize,
    /// Start after this time (RFC 3339, e.g. 2026-03-26T12:00:00Z); default: now.
    #[arg(long, value_name = "RFC3339")]
    pub after: Option<DateTime<Utc>>,
}

/// Prints the table; fails when the file does not load or has no schedule.
pub fn next(args: &NextArgs) -> anyhow::Result<()> {
    print!("{}", render(args, Utc::now())?);
    Ok(())
}

/// The text `next` prints, with `now` as the default `--after`.
pub fn render(args: &NextArgs, now: DateTime<Utc>) -> anyhow::Result<String> {
    let dag = dag::load(&args.file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(schedule) = &dag.schedule else {
        bail!(
            "DAG {} ({}) has no schedule; add `schedule = \"...\"` under [dag]",
            dag.id,
            args.file.display()
        );
    };
    let after = args.after.unwrap_or(now);
    let tz = schedule.timezone;
    let slots = upcoming::upcoming(schedule, after, args.count);
    let mut out = format!(
        "DAG {}: schedule {:?} in {}, after {} ({})\n",
        dag.id,
        schedule.expr,
        tz.name(),
        local(after, tz),
        utc(after)
    );
    let zone = tz.name();
    let header = [
        "#".to_owned(),
        format!("FIRES AT ({zone})"),
        "FIRES AT (UTC)".to_owned(),
        format!("DATA INTERVAL ({zone})"),
    ];
    let rows: Vec<Vec<String>> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                (i + 1).to_string(),
                s.fire_at_local.clone(),
                utc(s.fire_at),
                format!(
                    "[{}, {})",
                    short(s.data_interval_start, tz),
                    short(s.data_interval_end, tz)
                ),
            ]
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    out.push_str(&table::render(&header, &rows));
    if slots.len() < args.count {
        out.push_str("(the schedule fires no more after these)\n");
    }
    Ok(out)
}

fn short(t: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}
