//! The last lines a task's programs wrote to stderr, kept so that a failed try can say why it
//! failed wherever the failure is shown (CLI summary, `runs --run`, run page, API) instead of only
//! "failed with exit code 1", with the reason left in the try log.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many stderr lines are kept.
const KEPT: usize = 20;
/// How many lines the summary shows at most.
const SHOWN: usize = 3;
/// A kept line is cut to this many characters.
const LINE_CHARS: usize = 300;

/// A bounded tail of stderr lines.
#[derive(Debug, Default)]
pub(crate) struct ErrorTail {
    lines: Mutex<VecDeque<String>>,
}

impl ErrorTail {
    /// Keeps `line` (without ANSI escapes, cut to a sane length); forgets the oldest past the bound.
    pub(crate) fn push(&self, line: &str) {
        let mut clean = strip_ansi(line).trim().to_owned();
        if clean.is_empty() {
            return;
        }
        if clean.chars().count() > LINE_CHARS {
            clean = clean.chars().take(LINE_CHARS).collect::<String>() + "...";
        }
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == KEPT {
            lines.pop_front();
        }
        lines.push_back(clean);
    }

    /// The lines that say why: the last few that look like errors (`error`, `panicked`, `fatal`),
    /// else the last few lines; `None` when the programs wrote nothing to stderr.
    pub(crate) fn summary(&self) -> Option<String> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let is_error = |l: &&String| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("panicked") || l.contains("fatal")
        };
        let mut chosen: Vec<&String> = lines.iter().rev().filter(is_error).take(SHOWN).collect();
        if chosen.is_empty() {
            chosen = lines.iter().rev().take(SHOWN).collect();
        }
        if chosen.is_empty() {
            return None;
        }
        chosen.reverse();
        Some(
            chosen
                .into_iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" | "),
        )
    }
}

/// `s` without ANSI escape sequences (CSI `ESC [ ... final` and two-byte `ESC x`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next_if_eq(&'[').is_some() {
            // Parameters and intermediates, then one final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_error_lines_without_colours() {
        let tail = ErrorTail::default();
        assert_eq!(tail.summary(), None);
        tail.push("\u{1b}[2m2026-01-01\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m starting");
        assert_eq!(tail.summary().as_deref(), Some("2026-01-01  INFO starting"));
        tail.push("\u{1b}[31mERROR\u{1b}[0m cannot open x.parquet");
        tail.push("error: x.parquet is empty (0 bytes)");
        tail.push("   ");
        assert_eq!(
            tail.summary().as_deref(),
            Some("ERROR cannot open x.parquet | error: x.parquet is empty (0 bytes)")
        );
        for i in 0..50 {
            tail.push(&format!("error {i}"));
        }
        assert_eq!(
            tail.summary().as_deref(),
            Some("error 47 | error 48 | error 49")
        );
    }
}
