//! `[connections]`: the Kafka and ClickHouse endpoints of a DAG, each value interpolated with
//! `${VAR:-default}`, missing ones taken from the same environment variables the programs read.

use serde::Deserialize;
use toml::Spanned;
use velostream_common::clickhouse::ClickHouseConfig;

use super::problems::Problems;
use crate::operators::{Connections, KafkaConnection};

/// `[connections]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnections {
    /// `[connections.kafka]`.
    #[serde(default)]
    kafka: Option<RawKafka>,
    /// `[connections.clickhouse]`.
    #[serde(default)]
    clickhouse: Option<RawClickHouse>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    /// Bootstrap servers.
    #[serde(default)]
    brokers: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClickHouse {
    /// HTTP URL.
    #[serde(default)]
    url: Option<Spanned<String>>,
    /// User.
    #[serde(default)]
    user: Option<Spanned<String>>,
    /// Password.
    #[serde(default)]
    password: Option<Spanned<String>>,
    /// Database.
    #[serde(default)]
    database: Option<Spanned<String>>,
}

/// The connections, with `${VAR}` references resolved through `env`.
pub(super) fn build(
    raw: RawConnections,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems<'_>,
) -> Connections {
    let mut get = |v: Option<Spanned<String>>, fallback: &str| -> String {
        let (text, span) = match v {
            Some(s) => {
                let span = s.span();
                (s.into_inner(), Some(span))
            }
            None => (fallback.to_owned(), None),
        };
        crate::dag::env::interpolate(&text, env).unwrap_or_else(|e| {
            problems.at(span, e.to_string());
            String::new()
        })
    };
    let d = ClickHouseConfig::default();
    let k = raw.kafka.unwrap_or_default();
    let c = raw.clickhouse.unwrap_or_default();
    use velostream_common::{clickhouse as ch, kafka};
    Connections {
        kafka: KafkaConnection {
            brokers: get(
                k.brokers,
                &format!("${{{}:-{}}}", kafka::BROKERS_ENV, kafka::DEFAULT_BROKERS),
            ),
        },
        clickhouse: ClickHouseConfig {
            url: get(c.url, &format!("${{{}:-{}}}", ch::URL_ENV, d.url)),
            user: get(c.user, &format!("${{{}:-{}}}", ch::USER_ENV, d.user)),
            password: get(
                c.password,
                &format!("${{{}:-{}}}", ch::PASSWORD_ENV, d.password),
            ),
            database: get(
                c.database,
                &format!("${{{}:-{}}}", ch::DATABASE_ENV, d.database),
            ),
        },
    }
}
