//! Secret values a task must not reveal: the ClickHouse connection's password and the values of
//! params whose names say they are secret (`password`, `secret`, `token`, `api_key`,
//! `private_key`, `credential`, as Airflow treats sensitive names). Every line of a try's log,
//! every output and every error message passes through [`Secrets::mask`] before it is written, so
//! the store, the log files and whatever shows them (CLI, API, pages) only ever hold `***`.

use std::borrow::Cow;

use serde_json::Value;

use super::Connections;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Values shorter than this are not masked: masking `1` or `abc` would garble every line.
const MIN_LEN: usize = 4;

/// The documented default password of the local setup (`velostream`), public in the README:
/// masking it would turn every `velostream-producer` in a log into `***-producer`.
const PUBLIC_DEFAULT: &str = "velostream";

/// Whether a param (or variable) name says its value is secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "credential",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// The secret values of one run, longest first (so a secret containing another is masked whole).
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// The given values, minus the too short and the public default.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.chars().count() >= MIN_LEN && v != PUBLIC_DEFAULT)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self { values }
    }

    /// A run's secrets: the ClickHouse password and the values of params with secret names.
    pub fn for_run(connections: &Connections, params: &serde_json::Map<String, Value>) -> Self {
        let from_params = params
            .iter()
            .filter(|(name, _)| is_secret_name(name))
            .map(|(_, v)| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        Self::new(std::iter::once(connections.clickhouse.password.clone()).chain(from_params))
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = Cow::Owned(out.replace(v.as_str(), MASK));
            }
        }
        out
    }

    /// `value` with every string in it masked.
    pub fn mask_value(&self, value: Value) -> Value {
        if self.values.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.mask(&s).into_owned()),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.mask_value(v)).collect())
            }
            Value::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k, self.mask_value(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_long_secrets_whole_and_leaves_the_public_default() {
        let s = Secrets::new([
            "hunter2-s3cret".into(),
            "s3cret".into(),
            "ab".into(),
            "velostream".into(),
        ]);
        assert_eq!(s.mask("pw=hunter2-s3cret; s3cret; ab"), "pw=***; ***; ab");
        assert_eq!(s.mask("velostream-producer"), "velostream-producer");
        assert_eq!(
            s.mask_value(serde_json::json!({"a": ["x s3cret"], "n": 3})),
            serde_json::json!({"a": ["x ***"], "n": 3})
        );
        assert!(
            is_secret_name("API_TOKEN") && is_secret_name("db_password") && !is_secret_name("rows")
        );
    }
}
