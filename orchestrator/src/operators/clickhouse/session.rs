//! Running statements on any supported ClickHouse version: detect `SELECT version()` and the
//! settings the server knows (an unknown setting is a hard error on every version), send each
//! statement over HTTP with `max_execution_time` and a query id, read small results as
//! `JSONCompact` (which 18.16 and 24.x+ both speak), and kill the query on the server when the
//! task is cancelled or times out (a client that goes away does not stop a query there).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use velostream_common::clickhouse::{ClickHouseConfig, Version};

use super::Scalar;
use super::bind::quote_string;

/// Results larger than this are not kept (a task output is meant to be small).
pub const MAX_RESULT_BYTES: usize = 16 << 20;

/// How long the client waits beyond `max_execution_time` for the server's own timeout error.
const CLIENT_SLACK: Duration = Duration::from_secs(5);

/// What went wrong talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server did not answer.
    #[error(
        "ClickHouse at {url} is unreachable ({source}); is the server running (`infrastructure/local/velostream-local up`) and is the DAG's `connections.clickhouse.url` right?"
    )]
    Unreachable {
        /// The server's URL.
        url: String,
        /// What the client said.
        #[source]
        source: Box<clickhouse::error::Error>,
    },
    /// The server accepted the connection but did not answer (overloaded, frozen).
    #[error(
        "ClickHouse at {url} did not answer within {waited:?}; is it overloaded? Raise the task's `connect_timeout` if it is just slow"
    )]
    NoAnswer {
        /// The server's URL.
        url: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The version could not be read.
    #[error(transparent)]
    Connect(#[from] Box<velostream_common::clickhouse::Error>),
    /// The server rejected a statement.
    #[error("ClickHouse {version} rejected the statement: {message}")]
    Rejected {
        /// The server's version.
        version: Version,
        /// The server's message (`Code: 62, e.displayText() = DB::Exception: Syntax error...`).
        message: String,
    },
    /// No answer within `max_execution_time` (plus slack): the query was killed.
    #[error(
        "no answer within {limit:?} (max_execution_time); the query was killed on the server. Raise the task's `max_execution_time` if it needs longer"
    )]
    TimedOut {
        /// The limit.
        limit: Duration,
    },
    /// The result is too big for a task output.
    #[error(
        "the result is larger than {} MiB; a task output should be small: aggregate, add a LIMIT, or write it to a table with INSERT ... SELECT",
        MAX_RESULT_BYTES >> 20
    )]
    TooLarge,
    /// The response could not be read.
    #[error("ClickHouse sent a response we cannot read ({why}): {snippet}")]
    BadResponse {
        /// What is wrong.
        why: String,
        /// The start of the response.
        snippet: String,
    },
    /// The task was cancelled; the query was killed on the server.
    #[error("cancelled")]
    Cancelled,
}

/// A result's column.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its ClickHouse type.
    #[serde(rename = "type")]
    pub ty: String,
}

/// Rows a statement returned.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    /// The columns.
    pub columns: Vec<Column>,
    /// The rows, values as JSON (64-bit integers as numbers).
    pub data: Vec<Vec<Value>>,
}

impl Rows {
    /// The single value of a one-row, one-column result.
    pub fn scalar(&self) -> Option<&Value> {
        match (self.columns.len(), self.data.as_slice()) {
            (1, [row]) => row.first(),
            _ => None,
        }
    }

    /// The first `limit` rows as objects `{column: value}`.
    pub fn objects(&self, limit: usize) -> Vec<Value> {
        self.data
            .iter()
            .take(limit)
            .map(|row| {
                Value::Object(
                    self.columns
                        .iter()
                        .zip(row)
                        .map(|(c, v)| (c.name.clone(), v.clone()))
                        .collect(),
                )
            })
            .collect()
    }
}

#[derive(Deserialize)]
struct JsonCompact {
    meta: Vec<Column>,
    data: Vec<Vec<Value>>,
}

/// A connection to one server, with what it can do.
pub struct Session {
    config: ClickHouseConfig,
    client: clickhouse::Client,
    version: Version,
    known_settings: BTreeSet<String>,
}

static QUERY_SEQ: AtomicU64 = AtomicU64::new(0);

impl Session {
    /// Connects (detecting the version and known settings), optionally in another database,
    /// giving up after `timeout` or when `cancel` fires.
    pub async fn open(
        config: &ClickHouseConfig,
        database: Option<&str>,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Self, Error> {
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Error::Cancelled),
            r = tokio::time::timeout(timeout, Self::open_now(config, database)) => {
                r.unwrap_or_else(|_| Err(Error::NoAnswer { url: config.url.clone(), waited: timeout }))
            }
        }
    }

    async fn open_now(config: &ClickHouseConfig, database: Option<&str>) -> Result<Self, Error> {
        let mut config = config.clone();
        if let Some(db) = database {
            config.database = db.to_owned();
        }
        let server = config.connect().await.map_err(|e| match e {
            velostream_common::clickhouse::Error::Unreachable { url, source } => {
                Error::Unreachable {
                    url,
                    source: Box::new(source),
                }
            }
            other => Error::Connect(Box::new(other)),
        })?;
        // The plain client (no validation, no compression) reads JSONCompact on every version.
        let client = config.plain_client();
        let mut session = Self {
            config,
            client,
            version: server.version,
            known_settings: BTreeSet::new(),
        };
        let names = session
            .fetch(
                "SELECT name FROM system.settings",
                &[],
                Duration::from_secs(30),
                &CancellationToken::new(),
            )
            .await?;
        session.known_settings = names
            .map(|rows| {
                rows.data
                    .into_iter()
                    .filter_map(|row| row.into_iter().next()?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(session)
    }

    /// The server's version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether the server knows a setting.
    pub fn knows_setting(&self, name: &str) -> bool {
        self.known_settings.contains(name)
    }

    /// The settings to send: `max_execution_time`, what this server version needs to accept
    /// the DDL our pipelines use, and the task's own `requested` ones it knows. Returns them and
    /// the names of requested settings left out because the server does not know them.
    pub fn settings(
        &self,
        requested: &BTreeMap<String, Scalar>,
        max_execution_time: Duration,
    ) -> (Vec<(String, String)>, Vec<String>) {
        let mut send = BTreeMap::new();
        send.insert(
            "max_execution_time".to_owned(),
            max_execution_time.as_secs().max(1).to_string(),
        );
        // 18.x-19.8 reject LowCardinality columns without this; later versions dropped it.
        if !self.version.has_stable_low_cardinality()
            && self.knows_setting("allow_experimental_low_cardinality_type")
        {
            send.insert(
                "allow_experimental_low_cardinality_type".to_owned(),
                "1".to_owned(),
            );
        }
        let mut skipped = Vec::new();
        for (name, value) in requested {
            if self.knows_setting(name) {
                send.insert(name.clone(), value.to_string());
            } else {
                skipped.push(name.clone());
            }
        }
        (send.into_iter().collect(), skipped)
    }

    /// Runs one statement; `Ok(None)` when it returns no rows (DDL, INSERT). Cancelling or
    /// exceeding `max_execution_time` kills the query on the server.
    pub async fn fetch(
        &self,
        sql: &str,
        settings: &[(String, String)],
        max_execution_time: Duration,
        cancel: &CancellationToken,
    ) -> Result<Option<Rows>, Error> {
        let query_id = format!(
            "velostream-{}-{}-{}",
            std::process::id(),
            QUERY_SEQ.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0)
        );
        let mut query = self
            .client
            .query_raw(sql)
            .with_setting("query_id", query_id.clone());
        for (name, value) in settings {
            query = query.with_setting(name.clone(), value.clone());
        }
        let read = async {
            let mut cursor = query
                .fetch_bytes("JSONCompact")
                .map_err(|e| self.client_error(e))?;
            let mut body = Vec::new();
            while let Some(chunk) = cursor.next().await.map_err(|e| self.client_error(e))? {
                if body.len() + chunk.len() > MAX_RESULT_BYTES {
                    return Err(Error::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        let limit = max_execution_time + CLIENT_SLACK;
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Error::Cancelled),
            r = tokio::time::timeout(limit, read) => r.unwrap_or(Err(Error::TimedOut { limit: max_execution_time })),
        };
        let body = match outcome {
            Ok(body) => body,
            Err(e @ (Error::Cancelled | Error::TimedOut { .. } | Error::TooLarge)) => {
                self.kill(&query_id).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        parse_body(&body)
    }

    /// Kills a query by id, best effort (the server may be what is failing).
    async fn kill(&self, query_id: &str) {
        let sql = format!(
            "KILL QUERY WHERE query_id = {} ASYNC",
            quote_string(query_id)
        );
        let kill = self.client.query_raw(&sql).fetch_bytes("JSONCompact");
        let done = async {
            let mut cursor = kill.ok()?;
            while cursor.next().await.ok()?.is_some() {}
            Some(())
        };
        if tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            tracing::warn!(query_id, url = %self.config.url, "Could not kill a ClickHouse query");
        }
    }

    fn client_error(&self, error: clickhouse::error::Error) -> Error {
        match error {
            clickhouse::error::Error::BadResponse(message) => Error::Rejected {
                version: self.version,
                message: message.trim().to_owned(),
            },
            other => Error::Unreachable {
                url: self.config.url.clone(),
                source: Box::new(other),
            },
        }
    }
}

/// Reads a `JSONCompact` body; empty means no result set.
fn parse_body(body: &[u8]) -> Result<Option<Rows>, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: JsonCompact = serde_json::from_slice(body).map_err(|e| Error::BadResponse {
        why: e.to_string(),
        snippet: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    })?;
    let mut rows = Rows {
        columns: parsed.meta,
        data: parsed.data,
    };
    // JSON formats quote 64-bit integers by default; give them back as numbers.
    for (i, column) in rows.columns.iter().enumerate() {
        let base = base_type(&column.ty);
        if !matches!(base, "Int64" | "UInt64") {
            continue;
        }
        for row in &mut rows.data {
            if let Some(cell) = row.get_mut(i)
                && let Value::String(s) = cell
            {
                if let Ok(n) = s.parse::<i64>() {
                    *cell = Value::from(n);
                } else if let Ok(n) = s.parse::<u64>() {
                    *cell = Value::from(n);
                }
            }
        }
    }
    Ok(Some(rows))
}

/// `Nullable(LowCardinality(UInt64))` -> `UInt64`.
fn base_type(ty: &str) -> &str {
    let mut t = ty.trim();
    for wrapper in ["Nullable(", "LowCardinality("] {
        if let Some(inner) = t.strip_prefix(wrapper).and_then(|r| r.strip_suffix(')')) {
            t = inner;
        }
    }
    for wrapper in ["Nullable(", "LowCardinality("] {
        if let Some(inner) = t.strip_prefix(wrapper).and_then(|r| r.strip_suffix(')')) {
            t = inner;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_compact_bodies_become_rows_with_numeric_64_bit_integers() {
        let body = br#"{"meta":[{"name":"n","type":"UInt64"},{"name":"s","type":"String"},{"name":"m","type":"Nullable(Int64)"}],
            "data":[["100000","x",null],["18446744073709551615","y","-5"]],"rows":2,"statistics":{}}"#;
        let rows = parse_body(body).unwrap().unwrap();
        assert_eq!(rows.data[0][0], Value::from(100_000));
        assert_eq!(rows.data[1][0], Value::from(u64::MAX));
        assert_eq!(rows.data[1][2], Value::from(-5));
        assert_eq!(rows.data[0][1], Value::from("x"));
        assert_eq!(rows.scalar(), None);
        assert_eq!(rows.objects(1)[0]["s"], "x");
        assert_eq!(parse_body(b"\n").unwrap(), None);
        assert!(parse_body(b"garbage").is_err());
    }

    #[test]
    fn base_types_unwrap_nullable_and_low_cardinality() {
        assert_eq!(base_type("Nullable(LowCardinality(UInt64))"), "UInt64");
        assert_eq!(base_type("LowCardinality(Nullable(String))"), "String");
        assert_eq!(base_type("Int64"), "Int64");
    }
}
