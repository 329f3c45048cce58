//! The `[dag]` keys that say how runs are operated: `run_timeout`, `deadline` and each
//! `[[dag.notify]]` entry (its events, its URL after `${ENV}` interpolation, its format), checked
//! with every problem at its own position.

use std::time::Duration;

use toml::Spanned;

use super::problems::Problems;
use super::raw::{RawDag, RawNotify};
use crate::dag::notify::{NotifyEvent, NotifyFormat, NotifyTarget, RunRules};

/// Checks and builds the run rules of `dag` (nothing when `[dag]` could not be read).
pub(super) fn check(
    dag: Option<&RawDag>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems<'_>,
) -> RunRules {
    let Some(d) = dag else {
        return RunRules::default();
    };
    let run_timeout = d
        .run_timeout
        .as_ref()
        .and_then(|v| duration("run_timeout", v, problems));
    let deadline = d
        .deadline
        .as_ref()
        .and_then(|v| duration("deadline", v, problems));
    if let (Some(t), Some(dl), Some(span)) = (run_timeout, deadline, d.deadline.as_ref())
        && dl >= t
    {
        problems.at(
            Some(span.span()),
            format!(
                "deadline ({}) is not before run_timeout ({}): the run is cancelled before its deadline could pass; shorten the deadline or drop it",
                humantime::format_duration(dl),
                humantime::format_duration(t)
            ),
        );
    }
    let notify = d
        .notify
        .iter()
        .enumerate()
        .filter_map(|(i, n)| target(i + 1, n, env, problems))
        .collect();
    RunRules {
        run_timeout,
        deadline,
        notify,
    }
}

/// A positive duration such as "45m".
fn duration(key: &str, v: &Spanned<String>, problems: &mut Problems<'_>) -> Option<Duration> {
    match humantime::parse_duration(v.get_ref().trim()) {
        Ok(d) if d.is_zero() => {
            problems.at(
                Some(v.span()),
                format!("{key} must be longer than 0s; leave it out for no limit"),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            problems.at(
                Some(v.span()),
                format!(
                    "{key} {:?} is not a duration ({e}); write e.g. \"30s\", \"45m\" or \"2h\"",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

/// One `[[dag.notify]]` entry, or `None` after reporting what is wrong with it.
fn target(
    index: usize,
    n: &Spanned<RawNotify>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems<'_>,
) -> Option<NotifyTarget> {
    let raw = n.get_ref();
    let mut ok = true;
    let mut on = Vec::new();
    for name in raw.on.get_ref() {
        match name.get_ref().parse::<NotifyEvent>() {
            Ok(e) => on.push(e),
            Err(_) => {
                ok = false;
                problems.at(Some(name.span()), unknown_event(name.get_ref()));
            }
        }
    }
    if raw.on.get_ref().is_empty() {
        ok = false;
        problems.at(
            Some(raw.on.span()),
            format!("`on` lists no events; list some of {}", event_list()),
        );
    }
    on.sort();
    on.dedup();
    let url = match crate::dag::env::interpolate(raw.url.get_ref(), env) {
        Err(e) => {
            problems.at(Some(raw.url.span()), format!("notify url: {e}"));
            None
        }
        Ok(text) => parse_url(&text)
            .map_err(|why| {
                problems.at(
                    Some(raw.url.span()),
                    format!(
                        "notify url {:?} {why}; write an http(s) URL such as \"https://hooks.slack.com/services/...\" or \"${{SLACK_WEBHOOK_URL}}\"",
                        raw.url.get_ref()
                    ),
                );
            })
            .ok(),
    };
    let format = match raw.format.as_ref().map(|f| (f, f.get_ref().as_str())) {
        None | Some((_, "json")) => NotifyFormat::Json,
        Some((_, "slack")) => NotifyFormat::Slack,
        Some((f, other)) => {
            ok = false;
            problems.at(
                Some(f.span()),
                format!("unknown notify format `{other}`; use `json` (the default) or `slack`"),
            );
            NotifyFormat::Json
        }
    };
    Some(NotifyTarget {
        index,
        on,
        url: url.filter(|_| ok)?,
        format,
    })
}

/// An absolute http or https URL with a host.
fn parse_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "has scheme `{}`; webhooks are http or https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(url)
}

fn event_list() -> String {
    NotifyEvent::ALL
        .iter()
        .map(|e| format!("`{e}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "unknown event", with the closest known name when one is close.
fn unknown_event(name: &str) -> String {
    let closest = NotifyEvent::ALL
        .iter()
        .map(|e| (strsim::jaro_winkler(name, e.as_str()), e))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, e)| format!(" (did you mean `{e}`?)"))
        .unwrap_or_default();
    format!(
        "unknown notify event `{name}`{closest}; `on` takes {}",
        event_list()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert!(parse_url("https://hooks.slack.com/services/T/B/X").is_ok());
        assert!(parse_url("http://127.0.0.1:9/hook").is_ok());
        assert!(
            parse_url("ftp://example.com/x")
                .unwrap_err()
                .contains("scheme")
        );
        assert!(
            parse_url("hooks.slack.com/x")
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(parse_url("http://").is_err());
    }

    #[test]
    fn unknown_events_suggest_the_closest() {
        assert!(unknown_event("failed").contains("did you mean `failure`"));
        assert!(unknown_event("deadline").contains("did you mean `deadline_miss`"));
        assert!(!unknown_event("zzz").contains("did you mean"));
    }
}
