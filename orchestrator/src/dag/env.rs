//! `${NAME}` and `${NAME:-default}` interpolation of environment variables in `[connections]`.

/// Replaces `${NAME}` and `${NAME:-default}` in `s` using `lookup`; `$$` is a literal `$`.
/// A variable that is unset (or empty) takes its default; one without a default is an error.
pub fn interpolate(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
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
                .ok_or_else(|| format!("`${{` without a closing `}}` in {s:?}"))?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{inner}}}` is not `${{NAME}}` or `${{NAME:-default}}`"
                ));
            }
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set and `${{{name}}}` has no default; set it or write `${{{name}:-default}}`"
                    ));
                }
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
                .contains("MISSING is not set")
        );
        assert!(interpolate("${HOST", &env).is_err());
        assert!(interpolate("${a b}", &env).is_err());
        assert_eq!(interpolate("${EMPTY:-}", &env).unwrap(), "");
    }
}
