//! `http.check`: an HTTP request with an expected status (and optionally body text), for health
//! checks, retried until it passes if asked. The same probe is process.spawn's HTTP readiness
//! check.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, Operator, OperatorError, TaskContext, ValidateContext};

fn default_method() -> String {
    "GET".into()
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

/// The bytes of a response body kept for the message and the `body` output.
const BODY_KEEP: usize = 4096;

/// One status code or a list of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusSet {
    /// One code.
    One(u16),
    /// Any of these codes.
    Any(Vec<u16>),
}

impl StatusSet {
    fn contains(&self, status: u16) -> bool {
        match self {
            Self::One(s) => *s == status,
            Self::Any(list) => list.contains(&status),
        }
    }

    fn codes(&self) -> Vec<u16> {
        match self {
            Self::One(s) => vec![*s],
            Self::Any(list) => list.clone(),
        }
    }

    fn describe(&self) -> String {
        let codes: Vec<String> = self.codes().iter().map(u16::to_string).collect();
        codes.join(" or ")
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        Self::One(200)
    }
}

/// Fields of an `http.check` task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// The URL to request (`http://` or `https://`).
    pub url: String,
    /// The method (default `GET`).
    #[serde(default = "default_method")]
    pub method: String,
    /// The status code expected, or a list of accepted ones (default 200).
    #[serde(default)]
    pub expected_status: StatusSet,
    /// Text the response body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// Request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Time limit of each request (humantime, default `10s`).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Keep trying until the check passes or this long has passed (humantime; default: one try).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_for: Option<Duration>,
    /// Time between tries with `retry_for` (humantime, default `1s`).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
}

/// A passed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    /// The status.
    pub status: u16,
    /// The start of the body.
    pub body: String,
}

/// Why a probe did not pass.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// No response (refused, reset, timed out, DNS).
    #[error("{method} {url}: no response ({why})")]
    NoResponse {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// What happened.
        why: String,
    },
    /// A response with another status.
    #[error("{method} {url} answered {status}, expected {expected}; body: {body:?}")]
    Status {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The status received.
        status: u16,
        /// What was expected.
        expected: String,
        /// The start of the body.
        body: String,
    },
    /// The body lacks the expected text.
    #[error("{method} {url} answered {status} without {wanted:?} in its body: {body:?}")]
    Body {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The text wanted.
        wanted: String,
        /// The start of the body.
        body: String,
    },
}

/// One HTTP probe: what to request and what counts as passing.
#[derive(Clone, Debug)]
pub struct Probe {
    client: reqwest::Client,
    method: reqwest::Method,
    url: String,
    headers: BTreeMap<String, String>,
    body: Option<String>,
    /// `None`: any 2xx.
    expected: Option<StatusSet>,
    body_contains: Option<String>,
}

impl Probe {
    /// A GET of `url` that passes on any 2xx status.
    pub fn get(url: &str, request_timeout: Duration) -> Result<Self, OperatorError> {
        Self::new(
            "GET",
            url,
            BTreeMap::new(),
            None,
            None,
            None,
            request_timeout,
        )
    }

    fn new(
        method: &str,
        url: &str,
        headers: BTreeMap<String, String>,
        body: Option<String>,
        expected: Option<StatusSet>,
        body_contains: Option<String>,
        request_timeout: Duration,
    ) -> Result<Self, OperatorError> {
        let method = reqwest::Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|e| OperatorError::failed(format!("bad HTTP method {method:?}: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout)
            .build()
            .map_err(|e| OperatorError::other("creating an HTTP client", e))?;
        Ok(Self {
            client,
            method,
            url: url.to_owned(),
            headers,
            body,
            expected,
            body_contains,
        })
    }

    /// Requests once.
    pub async fn check(&self) -> Result<Passed, ProbeError> {
        let mut request = self.client.request(self.method.clone(), &self.url);
        for (k, v) in &self.headers {
            request = request.header(k, v);
        }
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let no_response = |e: reqwest::Error| ProbeError::NoResponse {
            method: self.method.to_string(),
            url: self.url.clone(),
            why: error_chain(&e),
        };
        let response = request.send().await.map_err(no_response)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(no_response)?;
        let body: String = text.chars().take(BODY_KEEP).collect();
        let status_ok = match &self.expected {
            Some(set) => set.contains(status),
            None => (200..300).contains(&status),
        };
        if !status_ok {
            return Err(ProbeError::Status {
                method: self.method.to_string(),
                url: self.url.clone(),
                status,
                expected: self
                    .expected
                    .as_ref()
                    .map_or_else(|| "2xx".to_owned(), StatusSet::describe),
                body,
            });
        }
        if let Some(wanted) = &self.body_contains
            && !text.contains(wanted.as_str())
        {
            return Err(ProbeError::Body {
                method: self.method.to_string(),
                url: self.url.clone(),
                status,
                wanted: wanted.clone(),
                body,
            });
        }
        Ok(Passed { status, body })
    }
}

/// `error: cause: cause`, as reqwest hides the useful part (connection refused) in sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

/// Checks a URL at load time (unless it is still a template).
pub(crate) fn url_problems(field: &str, url: &str) -> Vec<ConfigProblem> {
    if url.contains("{{") {
        return Vec::new();
    }
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Vec::new(),
        Ok(u) => vec![ConfigProblem::field(
            field,
            format!(
                "`{field}` {url:?} uses {}:, not http: or https:",
                u.scheme()
            ),
        )],
        Err(e) => vec![ConfigProblem::field(
            field,
            format!("`{field}` {url:?} is not a URL: {e}"),
        )],
    }
}

impl HttpCheck {
    /// Problems a DAG author can fix, found when the DAG loads.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = url_problems("url", &self.url);
        if reqwest::Method::from_bytes(self.method.trim().to_ascii_uppercase().as_bytes()).is_err()
        {
            problems.push(ConfigProblem::field(
                "method",
                format!("`method` {:?} is not an HTTP method", self.method),
            ));
        }
        let codes = self.expected_status.codes();
        if codes.is_empty() || codes.iter().any(|c| !(100..=599).contains(c)) {
            problems.push(ConfigProblem::field(
                "expected_status",
                "`expected_status` takes HTTP status codes (100-599)",
            ));
        }
        for (field, value) in [
            ("request_timeout", Some(self.request_timeout)),
            ("interval", Some(self.interval)),
            ("retry_for", self.retry_for),
        ] {
            if value.is_some_and(|v| v.is_zero()) {
                problems.push(ConfigProblem::field(
                    field,
                    format!("`{field}` must be longer than 0s"),
                ));
            }
        }
        problems
    }
}

impl Operator for HttpCheck {
    fn validate(&self, _ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        self.problems()
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        let probe = Probe::new(
            &self.method,
            &self.url,
            self.headers.clone(),
            self.body.clone(),
            Some(self.expected_status.clone()),
            self.body_contains.clone(),
            self.request_timeout,
        )?;
        let started = Instant::now();
        let deadline = self.retry_for.map(|d| tokio::time::Instant::now() + d);
        let mut attempts = 0u64;
        loop {
            attempts += 1;
            let result = tokio::select! {
                biased;
                () = ctx.cancelled() => return Err(OperatorError::Cancelled),
                r = probe.check() => r,
            };
            match result {
                Ok(passed) => {
                    ctx.log(format!(
                        "{} {} answered {} (attempt {attempts})",
                        probe.method, self.url, passed.status
                    ));
                    ctx.set_output("status", passed.status);
                    ctx.set_output("attempts", attempts);
                    ctx.set_output("elapsed_ms", started.elapsed().as_millis() as u64);
                    ctx.set_output("body", passed.body);
                    return Ok(());
                }
                Err(e) => {
                    let next = tokio::time::Instant::now() + self.interval;
                    if deadline.is_none_or(|d| next > d) {
                        ctx.set_output("attempts", attempts);
                        let waited = if attempts > 1 {
                            format!(
                                " after {attempts} attempts in {}",
                                humantime::format_duration(Duration::from_secs(
                                    started.elapsed().as_secs()
                                ))
                            )
                        } else {
                            String::new()
                        };
                        return Err(OperatorError::failed(format!(
                            "http.check failed{waited}: {e}"
                        )));
                    }
                    ctx.log(format!("Attempt {attempts}: {e}; retrying"));
                    tokio::select! {
                        biased;
                        () = ctx.cancelled() => return Err(OperatorError::Cancelled),
                        () = tokio::time::sleep_until(next) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_with_defaults_and_are_checked() {
        let spec: HttpCheck = toml::from_str("url = \"http://127.0.0.1:9100/health\"").unwrap();
        assert_eq!(spec.method, "GET");
        assert_eq!(spec.expected_status, StatusSet::One(200));
        assert!(spec.problems().is_empty());
        let spec: HttpCheck = toml::from_str(
            "url = \"ftp://x\"\nmethod = \"GE T\"\nexpected_status = [200, 999]\nretry_for = \"0s\"",
        )
        .unwrap();
        let fields: Vec<_> = spec
            .problems()
            .into_iter()
            .filter_map(|p| p.field)
            .collect();
        assert_eq!(fields, ["url", "method", "expected_status", "retry_for"]);
        assert!(toml::from_str::<HttpCheck>("url = \"http://x\"\nstatus = 200").is_err());
        assert!(url_problems("url", "not a url").len() == 1);
        assert!(url_problems("url", "{{ params.url }}").is_empty());
    }
}
