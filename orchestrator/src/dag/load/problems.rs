//! What goes wrong while loading: problems collected with byte spans during every stage, turned
//! into a [`LoadError`] with `file:line:column` at the end.

use std::fmt;
use std::ops::Range;

/// One problem found while loading, with its position when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column (in characters).
    pub column: Option<usize>,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A DAG file that cannot be used, with every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The file (or origin name given to [`parse_str`](super::parse_str)).
    pub origin: String,
    /// The problems, in file order.
    pub problems: Vec<Diagnostic>,
}

impl LoadError {
    /// An error without a position (the file cannot be read at all).
    pub fn whole_file(origin: &str, message: String) -> Self {
        Self {
            origin: origin.to_owned(),
            problems: vec![Diagnostic {
                line: None,
                column: None,
                message,
            }],
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (p.line, p.column) {
                (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.origin, p.message)?,
                _ => write!(f, "{}: {}", self.origin, p.message)?,
            }
        }
        Ok(())
    }
}

/// A DAG file that is not UTF-8 text, with the line and column where the first bad byte is.
pub(super) fn not_utf8(origin: &str, e: &std::string::FromUtf8Error) -> LoadError {
    let bytes = e.as_bytes();
    let at = e.utf8_error().valid_up_to();
    // Everything before the bad byte is valid UTF-8.
    let before = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
    let (line, column) = line_col(before, before.len());
    LoadError {
        origin: origin.to_owned(),
        problems: vec![Diagnostic {
            line: Some(line),
            column: Some(column),
            message: format!(
                "the file is not UTF-8 text (byte 0x{:02x} at offset {at}); TOML files are UTF-8: save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
                bytes[at]
            ),
        }],
    }
}

/// Collects problems with byte spans, converted to line:column at the end.
pub(super) struct Problems<'t> {
    text: &'t str,
    /// Where each line starts, so a position costs a binary search, not a scan of the text
    /// (every task's line is looked up: a scan each made loading quadratic).
    line_starts: Vec<usize>,
    list: Vec<(Option<Range<usize>>, String)>,
}

impl<'t> Problems<'t> {
    /// No problems yet, in `text`.
    pub(super) fn new(text: &'t str) -> Self {
        Self {
            text,
            line_starts: line_starts(text),
            list: Vec::new(),
        }
    }

    /// Whether any problem was found.
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A problem at `span` (or of the whole file).
    pub(super) fn at(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.list.push((span, message.into()));
    }

    /// A TOML or serde error, at its own span or else at `fallback`.
    pub(super) fn toml(&mut self, e: &toml::de::Error, fallback: Option<Range<usize>>) {
        let mut message = e.message().trim().to_owned();
        if message.ends_with("expected a duration") {
            message.push_str(" such as \"500ms\", \"30s\", \"2m\" or \"1h 30m\"");
        }
        self.at(e.span().or(fallback), message);
    }

    /// The 1-based line of a byte offset.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        line_col_in(self.text, &self.line_starts, offset).0
    }

    /// The problems in file order, with positions.
    pub(super) fn into_error(mut self, origin: &str) -> LoadError {
        self.list
            .sort_by_key(|(span, _)| span.as_ref().map_or(usize::MAX, |s| s.start));
        self.list.dedup();
        let text = self.text;
        let starts = &self.line_starts;
        LoadError {
            origin: origin.to_owned(),
            problems: self
                .list
                .into_iter()
                .map(|(span, message)| {
                    let (line, column) = match span {
                        Some(s) => {
                            let (l, c) = line_col_in(text, starts, s.start);
                            (Some(l), Some(c))
                        }
                        None => (None, None),
                    };
                    Diagnostic {
                        line,
                        column,
                        message,
                    }
                })
                .collect(),
        }
    }
}

/// The byte offset where each line of `text` starts.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// The 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    line_col_in(text, &line_starts(text), offset)
}

/// [`line_col`] with the line starts computed once.
fn line_col_in(text: &str, starts: &[usize], offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    // Lines starting at or before the offset; the first always does.
    let line = starts.partition_point(|&s| s <= offset).max(1);
    let line_start = starts[line - 1];
    (line, text[line_start..offset].chars().count() + 1)
}
