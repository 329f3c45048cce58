//! Reaching ClickHouse on every server we support: Debian's 18.16 (no RowBinaryWithNamesAndTypes,
//! no DateTime64, no `insert_deduplication_token`) and modern 24.x+. Connect once with
//! [`ClickHouseConfig::connect`], which detects `SELECT version()` and configures the client for it.

use std::fmt;

use clickhouse::Client;
use serde::{Deserialize, Serialize};

/// Environment variables read by [`ClickHouseConfig::from_env`].
pub const URL_ENV: &str = "CLICKHOUSE_URL";
/// User name variable.
pub const USER_ENV: &str = "CLICKHOUSE_USER";
/// Password variable.
pub const PASSWORD_ENV: &str = "CLICKHOUSE_PASSWORD";
/// Database variable.
pub const DATABASE_ENV: &str = "CLICKHOUSE_DATABASE";
/// Wire compression variable, read by [`ClickHouseConfig::connect`]: see [`WireCompression`].
pub const COMPRESSION_ENV: &str = "CLICKHOUSE_COMPRESSION";

/// Whether requests and responses are LZ4-compressed between us and a modern server (18.16 gets
/// none: its compressed responses confuse the client).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WireCompression {
    /// LZ4 unless the server is on this host (`localhost`, `127.0.0.0/8`, `::1`): over loopback
    /// compression only costs CPU at both ends (the consumer's insert spent 15% of its CPU in it,
    /// docs/BENCHMARKS.md's profiles), over a network it saves bandwidth.
    #[default]
    Auto,
    /// Always LZ4.
    Lz4,
    /// Never.
    None,
}

impl WireCompression {
    /// From `CLICKHOUSE_COMPRESSION` (`auto`, `lz4` or `none`; `auto` when unset).
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var(COMPRESSION_ENV) {
            Ok(value) => value.parse(),
            Err(_) => Ok(Self::Auto),
        }
    }

    /// Whether a server at `url` gets LZ4.
    pub fn lz4_for(self, url: &str) -> bool {
        match self {
            Self::Auto => !is_loopback(url),
            Self::Lz4 => true,
            Self::None => false,
        }
    }
}

impl std::str::FromStr for WireCompression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Self::Auto),
            "lz4" => Ok(Self::Lz4),
            "none" => Ok(Self::None),
            _ => Err(Error::BadCompression(s.to_string())),
        }
    }
}

/// Whether the host of `url` (`http://HOST:PORT/...`) is this machine.
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Where ClickHouse is and who we are there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// User name.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password.
    #[serde(default = "default_password")]
    pub password: String,
    /// Database the queries run in.
    #[serde(default = "default_database")]
    pub database: String,
}

fn default_user() -> String {
    "velostream".into()
}
fn default_password() -> String {
    "velostream".into()
}
fn default_database() -> String {
    "default".into()
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            user: default_user(),
            password: default_password(),
            database: default_database(),
        }
    }
}

/// Errors reaching or querying ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server did not answer or refused the query.
    #[error(
        "ClickHouse at {url}: {source}; is the server running (`infrastructure/local/velostream-local up`) and are CLICKHOUSE_URL/USER/PASSWORD right?"
    )]
    Unreachable {
        /// The server's URL.
        url: String,
        /// What the client said.
        #[source]
        source: clickhouse::error::Error,
    },
    /// `CLICKHOUSE_COMPRESSION` holds something else than `auto`, `lz4` or `none`.
    #[error(
        "{COMPRESSION_ENV}={0:?} is not a wire compression: use auto (the default), lz4 or none"
    )]
    BadCompression(String),
    /// `SELECT version()` returned something we cannot parse.
    #[error("ClickHouse at {url} reported an unparseable version {version:?}")]
    BadVersion {
        /// The server's URL.
        url: String,
        /// What it said.
        version: String,
    },
}

impl ClickHouseConfig {
    /// Settings from `CLICKHOUSE_URL`, `CLICKHOUSE_USER`, `CLICKHOUSE_PASSWORD`, `CLICKHOUSE_DATABASE`,
    /// each falling back to the native setup's default.
    pub fn from_env() -> Self {
        let d = Self::default();
        let var = |k: &str, default: String| std::env::var(k).unwrap_or(default);
        Self {
            url: var(URL_ENV, d.url),
            user: var(USER_ENV, d.user),
            password: var(PASSWORD_ENV, d.password),
            database: var(DATABASE_ENV, d.database),
        }
    }

    /// A client that works on any server version, without knowing it: no validation (18.16 lacks
    /// RowBinaryWithNamesAndTypes), no compression (18.16's compressed responses confuse the client).
    pub fn plain_client(&self) -> Client {
        Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_database(&self.database)
            .with_validation(false)
            .with_compression(clickhouse::Compression::None)
    }

    /// Detects the server's version and returns a client configured for it, with LZ4 on the
    /// wire as `CLICKHOUSE_COMPRESSION` says ([`WireCompression`]).
    pub async fn connect(&self) -> Result<Server, Error> {
        self.connect_with(WireCompression::from_env()?).await
    }

    /// [`ClickHouseConfig::connect`] with the wire compression given.
    pub async fn connect_with(&self, compression: WireCompression) -> Result<Server, Error> {
        let client = self.plain_client();
        let raw: String = client
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(|source| Error::Unreachable {
                url: self.url.clone(),
                source,
            })?;
        let version = Version::parse(&raw).ok_or_else(|| Error::BadVersion {
            url: self.url.clone(),
            version: raw.clone(),
        })?;
        let client = if version.is_modern() {
            let client = client.with_validation(true);
            if compression.lz4_for(&self.url) {
                client.with_compression(clickhouse::Compression::Lz4)
            } else {
                client
            }
        } else {
            client
        };
        Ok(Server { client, version })
    }
}

/// A connected server: the client and what the server can do.
#[derive(Clone)]
pub struct Server {
    /// A client configured for this server version.
    pub client: Client,
    /// The server's version.
    pub version: Version,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("version", &self.version)
            .finish()
    }
}

/// A ClickHouse server version, `major.minor.patch` (the build number is ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    /// Year-like major version (18, 24, 25...).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl Version {
    /// Parses `18.16.1` or `24.8.4.13`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.').map(|p| p.parse::<u32>().ok());
        Some(Self {
            major: parts.next()??,
            minor: parts.next().flatten().unwrap_or(0),
            patch: parts.next().flatten().unwrap_or(0),
        })
    }

    const fn at_least(self, major: u32, minor: u32) -> bool {
        self.major > major || (self.major == major && self.minor >= minor)
    }

    /// Servers new enough for RowBinaryWithNamesAndTypes validation and LZ4 responses (22.1+).
    pub const fn is_modern(self) -> bool {
        self.at_least(22, 1)
    }

    /// `DateTime64` exists (20.1+).
    pub const fn has_datetime64(self) -> bool {
        self.at_least(20, 1)
    }

    /// The `insert_deduplication_token` setting exists (22.2+).
    pub const fn has_insert_deduplication_token(self) -> bool {
        self.at_least(22, 2)
    }

    /// `LowCardinality` works without `allow_experimental_low_cardinality_type` (19.9+).
    pub const fn has_stable_low_cardinality(self) -> bool {
        self.at_least(19, 9)
    }

    /// Column compression codecs (`CODEC(Delta, ZSTD(1))`): 19.x brought them; we rely on them
    /// from 20.1, and 18.16 has none.
    pub const fn has_column_codecs(self) -> bool {
        self.at_least(20, 1)
    }

    /// `max_execution_time` and `max_insert_block_size` exist on every supported version;
    /// `non_replicated_deduplication_window` (dedup of plain MergeTree inserts) needs 20.9+.
    pub const fn has_non_replicated_dedup(self) -> bool {
        self.at_least(20, 9)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_goes_over_a_network_not_over_loopback_unless_asked() {
        for url in [
            "http://127.0.0.1:8123",
            "http://localhost:8123/",
            "https://user:pw@127.0.0.2:8443/?x=1",
            "http://[::1]:8123",
        ] {
            assert!(!WireCompression::Auto.lz4_for(url), "{url}");
            assert!(WireCompression::Lz4.lz4_for(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:8123",
            "https://ch.example.com",
            "http://[fe80::1]:8123",
        ] {
            assert!(WireCompression::Auto.lz4_for(url), "{url}");
            assert!(!WireCompression::None.lz4_for(url), "{url}");
        }
        assert_eq!(
            "LZ4".parse::<WireCompression>().unwrap(),
            WireCompression::Lz4
        );
        assert_eq!(
            "none".parse::<WireCompression>().unwrap(),
            WireCompression::None
        );
        let err = "zstd".parse::<WireCompression>().unwrap_err().to_string();
        assert!(
            err.contains("CLICKHOUSE_COMPRESSION=\"zstd\"") && err.contains("auto"),
            "{err}"
        );
    }

    #[test]
    fn parses_versions_of_old_and_new_servers() {
        let old = Version::parse("18.16.1").unwrap();
        assert_eq!(old.to_string(), "18.16.1");
        assert!(!old.is_modern() && !old.has_datetime64() && !old.has_insert_deduplication_token());
        assert!(!old.has_column_codecs());
        assert!(Version::parse("26.9.2.1").unwrap().has_column_codecs());
        let new = Version::parse("24.8.4.13\n").unwrap();
        assert!(new.is_modern() && new.has_datetime64() && new.has_insert_deduplication_token());
        assert_eq!(Version::parse("25").unwrap().major, 25);
        assert_eq!(Version::parse("garbage"), None);
        assert_eq!(Version::parse(""), None);
    }
}
