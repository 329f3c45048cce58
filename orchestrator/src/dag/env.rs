//! `${NAME}` and `${NAME:-default}` interpolation of environment variables in `[connections]`.

/// A `${...}` reference that cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    /// `${` without `}`.
    #[error("`${{` without a closing `}}` in {0:?}")]
    Unclosed(String),
    /// Something between the braces that is not a name (with an optional default).
    #[error("`${{{0}}}` is not `${{NAME}}` or `${{NAME:-default}}`")]
    BadName(String),
    /// An unset variable without a default.
    #[error(
        "environment variable {0} is not set and `${{{0}}}` has no default; set it or write `${{{0}:-default}}`"
    )]
    Unset(String),
}

/// Replaces `${NAME}` and `${NAME:-default}` in `s` using `lookup`; `$$` is a literal `$`.
/// A variable that is unset (or empty) takes its default; one without a default is an error.
pub fn interpolate(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| InterpolateError::Unclosed(s.to_owned()))?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(InterpolateError::BadName(inner.to_owned()));
            }
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(InterpolateError::Unset(name.to_owned())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_defaults_and_escapes() {
        let env = |k: &str| (k == "HOST").then(|| "ch.local".to_owned());
        assert_eq!(
            interpolate("http://${HOST}:${PORT:-8123}/$$x$", &env).unwrap(),
            "http://ch.local:8123/$x$"
        );
        assert!(
            interpolate("${MISSING}", &env)
                .unwrap_err()
                .to_string()
                .contains("MISSING is not set")
        );
        assert!(interpolate("${HOST", &env).is_err());
        assert!(interpolate("${a b}", &env).is_err());
        assert_eq!(interpolate("${EMPTY:-}", &env).unwrap(), "");
    }
}
