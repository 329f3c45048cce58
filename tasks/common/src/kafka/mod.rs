//! Kafka client settings shared by every velostream program: bootstrap servers and the
//! `librdkafka` properties that make clients behave on both Apache Kafka and the local broker;
//! librdkafka's events said once per episode (`events`); partitions' watermarks read from Fetch
//! responses (`watermarks`).

pub mod events;
pub mod watermarks;

use rdkafka::ClientConfig;

/// Environment variable naming the bootstrap servers (`host:port[,host:port...]`).
pub const BROKERS_ENV: &str = "KAFKA_BROKERS";
/// Default bootstrap servers: the native broker started by `velostream-local up`.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// Prefix of environment variables passed through to librdkafka: `VELOSTREAM_KAFKA_SOCKET_TIMEOUT_MS=5000`
/// sets `socket.timeout.ms=5000`.
pub const PASSTHROUGH_PREFIX: &str = "VELOSTREAM_KAFKA_";

/// A librdkafka config for `brokers` with our defaults, then any `VELOSTREAM_KAFKA_*` overrides.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // The local broker and a fresh Docker Kafka advertise one node: fail fast when it is down
        // instead of retrying silently for minutes.
        .set("socket.connection.setup.timeout.ms", "10000")
        .set("log_level", "4");
    apply_env_overrides(&mut config, std::env::vars());
    config
}

/// Variables with the passthrough prefix that belong to `velostream-local`, not to librdkafka: the
/// broker's port and its storage mode (`VELOSTREAM_KAFKA_STORAGE=memory|durable`).
pub const NOT_PASSED_THROUGH: [&str; 2] = ["PORT", "STORAGE"];

/// Applies `VELOSTREAM_KAFKA_FOO_BAR=v` as `foo.bar=v` (the [`NOT_PASSED_THROUGH`] ones excluded).
pub fn apply_env_overrides(
    config: &mut ClientConfig,
    vars: impl Iterator<Item = (String, String)>,
) {
    for (key, value) in vars {
        if let Some(rest) = key.strip_prefix(PASSTHROUGH_PREFIX) {
            if NOT_PASSED_THROUGH.contains(&rest) {
                continue;
            }
            config.set(rest.to_ascii_lowercase().replace('_', "."), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_become_dotted_properties() {
        let mut config = ClientConfig::new();
        let vars = [
            (
                "VELOSTREAM_KAFKA_SOCKET_TIMEOUT_MS".to_string(),
                "5000".to_string(),
            ),
            ("VELOSTREAM_KAFKA_PORT".to_string(), "9093".to_string()),
            (
                "VELOSTREAM_KAFKA_STORAGE".to_string(),
                "durable".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        apply_env_overrides(&mut config, vars.into_iter());
        assert_eq!(config.get("socket.timeout.ms"), Some("5000"));
        assert_eq!(config.get("port"), None);
        assert_eq!(config.config_map().len(), 1);
    }
}
