//! Reading SQL text the way ClickHouse does, enough to split a script into statements (the HTTP
//! interface takes one per request) and to find `{name:Type}` placeholders outside string literals,
//! quoted identifiers and comments.

use std::ops::Range;

/// What a stretch of SQL text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// Keywords, names, numbers, operators, whitespace.
    Code,
    /// A string literal `'...'` or a quoted identifier `"..."` / `` `...` ``, quotes included.
    Quoted,
    /// `-- ...` up to the end of the line, or `/* ... */`.
    Comment,
    /// A `;` ending a statement.
    Semicolon,
}

/// SQL that cannot be read: an unterminated quote or comment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what} is never closed")]
pub struct LexError {
    /// Where the unterminated element starts (1-based).
    pub line: usize,
    /// `string literal '...'`, `comment /* ... */`...
    pub what: &'static str,
}

/// Splits `sql` into tokens (consecutive code characters form one token).
pub fn tokens(sql: &str) -> Result<Vec<(Token, Range<usize>)>, LexError> {
    let bytes = sql.as_bytes();
    let mut out: Vec<(Token, Range<usize>)> = Vec::new();
    let mut push = |token: Token, range: Range<usize>| {
        if let Some((Token::Code, last)) = out.last_mut()
            && token == Token::Code
            && last.end == range.start
        {
            last.end = range.end;
            return;
        }
        out.push((token, range));
    };
    let line_at = |pos: usize| sql[..pos].matches('\n').count() + 1;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(LexError {
                                line: line_at(start),
                                what: match quote {
                                    b'\'' => "string literal '...'",
                                    b'"' => "quoted identifier \"...\"",
                                    _ => "quoted identifier `...`",
                                },
                            });
                        }
                        Some(b'\\') => i += 2,
                        Some(&c) if c == quote => {
                            i += 1;
                            // A doubled quote is an escaped quote: the literal goes on.
                            if bytes.get(i) == Some(&quote) {
                                i += 1;
                            } else {
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
                push(Token::Quoted, start..i.min(bytes.len()));
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
                push(Token::Comment, start..i);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let Some(end) = sql[i + 2..].find("*/") else {
                    return Err(LexError {
                        line: line_at(start),
                        what: "comment /* ... */",
                    });
                };
                i = i + 2 + end + 2;
                push(Token::Comment, start..i);
            }
            b';' => {
                i += 1;
                push(Token::Semicolon, start..i);
            }
            _ => {
                // Advance one character (not byte) so ranges stay on char boundaries.
                i += sql[i..].chars().next().map_or(1, char::len_utf8);
                push(Token::Code, start..i);
            }
        }
    }
    Ok(out)
}

/// One statement of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The statement without its `;`, trimmed.
    pub text: String,
    /// The 1-based line it starts on.
    pub line: usize,
}

/// Splits a script at top-level `;`. Statements with nothing but comments and whitespace are left
/// out.
pub fn split(sql: &str) -> Result<Vec<Statement>, LexError> {
    let mut statements = Vec::new();
    let mut current: Option<Range<usize>> = None;
    let mut substantive = false;
    let mut finish = |range: Option<Range<usize>>, substantive: bool| {
        if let Some(r) = range
            && substantive
        {
            let raw = &sql[r.clone()];
            let lead = raw.len() - raw.trim_start().len();
            statements.push(Statement {
                text: raw.trim().to_owned(),
                line: sql[..r.start + lead].matches('\n').count() + 1,
            });
        }
    };
    for (token, range) in tokens(sql)? {
        match token {
            Token::Semicolon => {
                finish(current.take(), substantive);
                substantive = false;
            }
            _ => {
                if token == Token::Quoted
                    || (token == Token::Code && !sql[range.clone()].trim().is_empty())
                {
                    substantive = true;
                }
                current = Some(match current {
                    Some(c) => c.start..range.end,
                    None => range,
                });
            }
        }
    }
    finish(current, substantive);
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(sql: &str) -> Vec<String> {
        split(sql).unwrap().into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let sql = "CREATE TABLE t (s String DEFAULT ';') ENGINE = Memory;\n\
                   -- a comment; with a semicolon\n\
                   INSERT INTO t VALUES ('it''s; fine'), ('back\\\\slash\\'; quote');\n\
                   /* block; comment */ SELECT `we;ird`, \"col;umn\" FROM t";
        assert_eq!(
            texts(sql),
            [
                "CREATE TABLE t (s String DEFAULT ';') ENGINE = Memory",
                "-- a comment; with a semicolon\nINSERT INTO t VALUES ('it''s; fine'), ('back\\\\slash\\'; quote')",
                "/* block; comment */ SELECT `we;ird`, \"col;umn\" FROM t",
            ]
        );
    }

    #[test]
    fn empty_statements_and_comment_only_tails_are_dropped() {
        assert_eq!(texts(";;  ;\n-- only a comment\n"), Vec::<String>::new());
        assert_eq!(texts("SELECT 1;\n-- trailing note"), ["SELECT 1"]);
        assert_eq!(texts(""), Vec::<String>::new());
    }

    #[test]
    fn statements_know_their_line() {
        let statements = split("\n\nSELECT 1;\n\n  SELECT\n 2;").unwrap();
        assert_eq!(statements[0].line, 3);
        assert_eq!(statements[1].line, 5);
    }

    #[test]
    fn unterminated_quotes_and_comments_are_reported_with_their_line() {
        let err = split("SELECT 1;\nSELECT 'oops").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().contains("string literal"), "{err}");
        assert_eq!(split("/* x").unwrap_err().what, "comment /* ... */");
        assert_eq!(split("SELECT `x").unwrap_err().line, 1);
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_every_non_comment_character(sql in "\\PC{0,200}") {
            if let Ok(statements) = split(&sql) {
                for s in statements {
                    prop_assert!(!s.text.is_empty());
                    prop_assert!(s.line >= 1);
                }
            }
        }

        #[test]
        fn joining_simple_statements_splits_back(parts in proptest::collection::vec("[a-z0-9 ,()'=]{1,20}", 1..6)) {
            // Balanced quotes only: drop parts with an odd number of quotes.
            let parts: Vec<String> = parts
                .into_iter()
                .filter(|p| p.matches('\'').count() % 2 == 0 && !p.trim().is_empty())
                .map(|p| p.trim().to_owned())
                .collect();
            let sql = parts.join(";\n");
            prop_assert_eq!(texts(&sql), parts);
        }
    }
}
