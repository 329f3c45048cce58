//! `kafka.create_topic` and `kafka.delete_topic`: make a topic exist with the partitions,
//! replication factor and config a pipeline needs, or make it go away, and wait until the cluster's
//! metadata agrees so the next task (a producer, a consumer) finds it in the expected state.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Error, Num, num_problems};
use crate::operators::{ConfigProblem, Operator, OperatorError, TaskContext, ValidateContext};

/// Broker operations and metadata waits get this long unless the task says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn one() -> Num<i32> {
    Num::Value(1)
}

fn yes() -> bool {
    true
}

/// What `kafka.create_topic` does when the topic already exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfExists {
    /// Leave it as it is (its partitions and messages too); the task succeeds.
    #[default]
    Keep,
    /// Fail the task.
    Fail,
    /// Delete it, wait until it is gone, and create it afresh (empty).
    Recreate,
}

/// What `kafka.delete_topic` does when the topic does not exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfMissing {
    /// Succeed: the topic is gone either way.
    #[default]
    Ignore,
    /// Fail the task.
    Fail,
}

/// A topic config value: TOML strings, integers, floats and booleans are all accepted and sent to
/// the broker as text (`retention.ms = 3600000` or `"3600000"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// Sent as is.
    Text(String),
    /// Sent in decimal.
    Integer(i64),
    /// Sent in decimal.
    Float(f64),
    /// Sent as `true`/`false`.
    Bool(bool),
}

impl fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Fields of a `kafka.create_topic` task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// The topic's name (letters, digits, `.`, `_`, `-`; at most 249 characters).
    pub topic: String,
    /// Number of partitions, at least 1 (a number, or a template rendering to one).
    pub partitions: Num<i32>,
    /// Replication factor, at least 1 (1 on a single broker such as the local one).
    #[serde(default = "one")]
    pub replication_factor: Num<i32>,
    /// Topic config entries sent with the creation, e.g. `{ "retention.ms" = 3600000 }`.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// What to do when the topic already exists: `keep` (default), `fail` or `recreate`.
    #[serde(default)]
    pub if_exists: IfExists,
    /// How long to wait for the broker: for each request, and for a deletion or creation to show in
    /// the cluster's metadata (humantime, default `30s`).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// Fields of a `kafka.delete_topic` task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteTopic {
    /// The topic to delete.
    pub topic: String,
    /// What to do when the topic does not exist: `ignore` (default) or `fail`.
    #[serde(default)]
    pub if_missing: IfMissing,
    /// Wait until the topic has left the cluster's metadata before succeeding (default `true`).
    #[serde(default = "yes")]
    pub wait: bool,
    /// How long to wait for the broker, and for the deletion to show (humantime, default `30s`).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// What `kafka.create_topic` found and did; becomes the task's outputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreateOutcome {
    /// The topic.
    pub topic: String,
    /// Its partition count now.
    pub partitions: usize,
    /// Whether this task created it (false when an existing topic was kept).
    pub created: bool,
    /// Whether an existing topic was deleted first.
    pub recreated: bool,
}

/// What `kafka.delete_topic` did; becomes the task's outputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeleteOutcome {
    /// The topic.
    pub topic: String,
    /// Whether it existed and was deleted.
    pub deleted: bool,
}

/// Checks a topic name the way the broker will, unless it is still a template.
pub(crate) fn topic_name_problems(field: &str, name: &str) -> Vec<ConfigProblem> {
    if name.contains("{{") {
        return Vec::new();
    }
    let problem = if name.is_empty() {
        "is empty: name the topic".to_owned()
    } else if name == "." || name == ".." {
        format!("cannot be {name:?}")
    } else if name.len() > 249 {
        format!(
            "is {} characters long; Kafka allows at most 249",
            name.len()
        )
    } else if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        format!(
            "{name:?} contains {bad:?}; Kafka topic names use only letters, digits, '.', '_' and '-'"
        )
    } else {
        return Vec::new();
    };
    vec![ConfigProblem::field(field, format!("`{field}` {problem}"))]
}

fn timeout_problems(timeout: Duration) -> Vec<ConfigProblem> {
    if timeout.is_zero() {
        vec![ConfigProblem::field(
            "timeout",
            "`timeout` must be longer than 0s",
        )]
    } else {
        Vec::new()
    }
}

impl CreateTopic {
    /// Problems a DAG author can fix, found when the DAG loads.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = topic_name_problems("topic", &self.topic);
        problems.extend(num_problems(
            "partitions",
            &self.partitions,
            1,
            "a topic needs at least 1 partition",
        ));
        problems.extend(num_problems(
            "replication_factor",
            &self.replication_factor,
            1,
            "it must be at least 1",
        ));
        if let Some(key) = self.config.keys().find(|k| k.trim().is_empty()) {
            problems.push(ConfigProblem::field(
                "config",
                format!("`config` has an empty key {key:?}"),
            ));
        }
        problems.extend(timeout_problems(self.timeout));
        problems
    }

    /// Makes the topic exist as asked. `log` receives a line per step for the task log.
    pub async fn run(
        &self,
        brokers: &str,
        cancel: &CancellationToken,
        log: &mut (dyn FnMut(String) + Send),
    ) -> Result<CreateOutcome, Error> {
        let wanted_partitions = self.partitions.get("partitions")?;
        let replication_factor = self.replication_factor.get("replication_factor")?;
        let admin = Admin::new(brokers, self.timeout)?;
        let existing = cancellable(cancel, admin.partitions(&self.topic)).await?;
        let mut recreated = false;
        if let Some(partitions) = existing {
            match self.if_exists {
                IfExists::Keep => {
                    log(format!(
                        "Topic {} already exists with {partitions} partition(s); keeping it (if_exists = \"keep\")",
                        self.topic
                    ));
                    if partitions != wanted_partitions as usize {
                        log(format!(
                            "Topic {} has {partitions} partition(s), not the {} asked for; use if_exists = \"recreate\" to change that",
                            self.topic, wanted_partitions
                        ));
                    }
                    return Ok(CreateOutcome {
                        topic: self.topic.clone(),
                        partitions,
                        created: false,
                        recreated: false,
                    });
                }
                IfExists::Fail => {
                    return Err(Error::TopicExists {
                        topic: self.topic.clone(),
                        brokers: brokers.into(),
                    });
                }
                IfExists::Recreate => {
                    log(format!(
                        "Topic {} exists with {partitions} partition(s); deleting it (if_exists = \"recreate\")",
                        self.topic
                    ));
                    cancellable(cancel, admin.delete(&self.topic)).await?;
                    cancellable(
                        cancel,
                        admin.wait_until(
                            &self.topic,
                            |p| p.is_none(),
                            "still listed after deletion",
                        ),
                    )
                    .await?;
                    log(format!("Topic {} is gone", self.topic));
                    recreated = true;
                }
            }
        }
        let config: Vec<(String, String)> = self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let created = cancellable(
            cancel,
            admin.create(
                &self.topic,
                wanted_partitions,
                replication_factor,
                &config,
                recreated,
            ),
        )
        .await?;
        if !created {
            // Someone else created it between our look and our request: that is `keep`'s case.
            if self.if_exists == IfExists::Fail {
                return Err(Error::TopicExists {
                    topic: self.topic.clone(),
                    brokers: brokers.into(),
                });
            }
            log(format!(
                "Topic {} was created concurrently by another client; keeping it",
                self.topic
            ));
        }
        let wanted = wanted_partitions as usize;
        let partitions = cancellable(
            cancel,
            admin.wait_until(
                &self.topic,
                |p| p.is_some_and(|n| !created || n == wanted),
                "not listed with all its partitions after creation",
            ),
        )
        .await?
        .unwrap_or(wanted);
        log(format!(
            "Topic {} {} with {partitions} partition(s), replication factor {}{}",
            self.topic,
            if recreated {
                "recreated"
            } else if created {
                "created"
            } else {
                "exists"
            },
            replication_factor,
            if config.is_empty() {
                String::new()
            } else {
                let entries: Vec<String> = config.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(", config {}", entries.join(", "))
            }
        ));
        Ok(CreateOutcome {
            topic: self.topic.clone(),
            partitions,
            created,
            recreated,
        })
    }
}

impl DeleteTopic {
    /// Problems a DAG author can fix, found when the DAG loads.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = topic_name_problems("topic", &self.topic);
        problems.extend(timeout_problems(self.timeout));
        problems
    }

    /// Deletes the topic. `log` receives a line per step for the task log.
    pub async fn run(
        &self,
        brokers: &str,
        cancel: &CancellationToken,
        log: &mut (dyn FnMut(String) + Send),
    ) -> Result<DeleteOutcome, Error> {
        let admin = Admin::new(brokers, self.timeout)?;
        let existing = cancellable(cancel, admin.partitions(&self.topic)).await?;
        let deleted = match existing {
            None => false,
            Some(_) => cancellable(cancel, admin.delete(&self.topic)).await?,
        };
        if !deleted {
            if self.if_missing == IfMissing::Fail {
                return Err(Error::TopicMissing {
                    topic: self.topic.clone(),
                    brokers: brokers.into(),
                    hint: " (if_missing = \"fail\")",
                });
            }
            log(format!(
                "Topic {} does not exist; nothing to delete",
                self.topic
            ));
            return Ok(DeleteOutcome {
                topic: self.topic.clone(),
                deleted: false,
            });
        }
        if self.wait {
            cancellable(
                cancel,
                admin.wait_until(&self.topic, |p| p.is_none(), "still listed after deletion"),
            )
            .await?;
        }
        log(format!("Topic {} deleted", self.topic));
        Ok(DeleteOutcome {
            topic: self.topic.clone(),
            deleted: true,
        })
    }
}

impl Operator for CreateTopic {
    fn validate(&self, _ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        self.problems()
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        let brokers = ctx.connections().kafka.brokers.clone();
        let mut log = |line: String| ctx.log(line);
        let outcome = self.run(&brokers, ctx.cancel_token(), &mut log).await;
        ctx.set_outputs_from(&outcome.map_err(super::operator_error)?);
        Ok(())
    }
}

impl Operator for DeleteTopic {
    fn validate(&self, _ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        self.problems()
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        let brokers = ctx.connections().kafka.brokers.clone();
        let mut log = |line: String| ctx.log(line);
        let outcome = self.run(&brokers, ctx.cancel_token(), &mut log).await;
        ctx.set_outputs_from(&outcome.map_err(super::operator_error)?);
        Ok(())
    }
}

/// Runs `work` unless `cancel` fires first.
pub(crate) async fn cancellable<T>(
    cancel: &CancellationToken,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(Error::Cancelled),
        result = work => result,
    }
}

/// An admin client bound to one cluster, with the timeout every request gets.
pub(crate) struct Admin {
    client: Arc<AdminClient<DefaultClientContext>>,
    brokers: String,
    timeout: Duration,
}

/// How often metadata is polled while waiting for a topic change to show.
const SETTLE_POLL: Duration = Duration::from_millis(100);

impl Admin {
    pub(crate) fn new(brokers: &str, timeout: Duration) -> Result<Self, Error> {
        let mut config = velostream_common::kafka::client_config(brokers);
        // Asking about a topic must never create it on brokers with auto-creation on.
        config.set("allow.auto.create.topics", "false");
        let client = config.create().map_err(|source| Error::Client {
            brokers: brokers.into(),
            source: Box::new(source),
        })?;
        Ok(Self {
            client: Arc::new(client),
            brokers: brokers.into(),
            timeout,
        })
    }

    /// The topic's partition count, or `None` if the cluster does not list it. Asks for every
    /// topic's metadata: asking for one by name can auto-create it on some brokers.
    pub(crate) async fn partitions(&self, topic: &str) -> Result<Option<usize>, Error> {
        let client = Arc::clone(&self.client);
        let timeout = self.timeout;
        let name = topic.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            client
                .inner()
                .fetch_metadata(None, timeout)
                .map(|metadata| {
                    metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == name && t.error().is_none())
                        .map(|t| t.partitions().len())
                })
        })
        .await
        .expect("the metadata fetch does not panic");
        result.map_err(|source| Error::Unreachable {
            brokers: self.brokers.clone(),
            timeout,
            source: Box::new(source),
        })
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// Creates the topic; `Ok(false)` if it already existed. Right after a deletion the broker may
    /// still report the old topic: then the creation is retried until the timeout.
    async fn create(
        &self,
        topic: &str,
        partitions: i32,
        replication: i32,
        config: &[(String, String)],
        just_deleted: bool,
    ) -> Result<bool, Error> {
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        for (k, v) in config {
            new = new.set(k, v);
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let results = self
                .client
                .create_topics([&new], &self.options())
                .await
                .map_err(|source| self.request_error("creation", topic, source))?;
            match results.into_iter().next() {
                Some(Ok(_)) | None => return Ok(true),
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists)))
                    if just_deleted && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(SETTLE_POLL).await;
                }
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) if !just_deleted => {
                    return Ok(false);
                }
                Some(Err((_, code))) => {
                    return Err(Error::Refused {
                        operation: "creation",
                        topic: topic.into(),
                        brokers: self.brokers.clone(),
                        code,
                    });
                }
            }
        }
    }

    /// Deletes the topic; `Ok(false)` if it did not exist.
    async fn delete(&self, topic: &str) -> Result<bool, Error> {
        let results = self
            .client
            .delete_topics(&[topic], &self.options())
            .await
            .map_err(|source| self.request_error("deletion", topic, source))?;
        match results.into_iter().next() {
            Some(Ok(_)) | None => Ok(true),
            Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) => Ok(false),
            Some(Err((_, code))) => Err(Error::Refused {
                operation: "deletion",
                topic: topic.into(),
                brokers: self.brokers.clone(),
                code,
            }),
        }
    }

    /// Polls metadata until `done(partition count)` holds, for at most the timeout; returns the
    /// last partition count seen.
    async fn wait_until(
        &self,
        topic: &str,
        done: impl Fn(Option<usize>) -> bool,
        what: &'static str,
    ) -> Result<Option<usize>, Error> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let partitions = self.partitions(topic).await?;
            if done(partitions) {
                return Ok(partitions);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NotSettled {
                    topic: topic.into(),
                    brokers: self.brokers.clone(),
                    what,
                    waited: self.timeout,
                });
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    fn request_error(
        &self,
        operation: &'static str,
        topic: &str,
        source: rdkafka::error::KafkaError,
    ) -> Error {
        match source.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure,
            ) => Error::Unreachable {
                brokers: self.brokers.clone(),
                timeout: self.timeout,
                source: Box::new(source),
            },
            _ => Error::Request {
                operation,
                topic: topic.into(),
                brokers: self.brokers.clone(),
                source: Box::new(source),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(toml_text: &str) -> Result<CreateTopic, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn create_topic_fields_parse_with_defaults() {
        let spec = create(
            r#"
            topic = "trips"
            partitions = 6
            config = { "retention.ms" = 3600000, "cleanup.policy" = "delete" }
            "#,
        )
        .unwrap();
        assert_eq!(spec.replication_factor, Num::Value(1));
        assert_eq!(spec.if_exists, IfExists::Keep);
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
        assert_eq!(spec.config["retention.ms"].to_string(), "3600000");
        assert!(spec.problems().is_empty());
    }

    #[test]
    fn create_topic_rejects_unknown_fields_and_bad_values() {
        assert!(create("topic = \"t\"\npartitions = 1\npartition = 2").is_err());
        assert!(create("topic = \"t\"\npartitions = 1\nif_exists = \"replace\"").is_err());
        let spec = create("topic = \"bad name!\"\npartitions = 0\nreplication_factor = 0").unwrap();
        let problems = spec.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(problems[0].field.as_deref(), Some("topic"));
        assert!(problems[0].message.contains("' '"), "{problems:?}");
        assert!(problems[1].message.contains("at least 1 partition"));
        assert_eq!(problems[2].field.as_deref(), Some("replication_factor"));
    }

    #[test]
    fn templated_topic_names_and_numbers_are_checked_after_rendering() {
        let spec =
            create("topic = \"{{ params.topic }}\"\npartitions = \"{{ params.n }}\"").unwrap();
        assert!(spec.problems().is_empty());
        assert!(spec.partitions.get("partitions").is_err());
        let rendered = create("topic = \"t\"\npartitions = \"12\"").unwrap();
        assert_eq!(rendered.partitions.get("partitions").unwrap(), 12);
        let bad = create("topic = \"t\"\npartitions = \"twelve\"").unwrap();
        assert!(
            bad.problems()[0].message.contains("not a number"),
            "{:?}",
            bad.problems()
        );
        assert_eq!(topic_name_problems("topic", "").len(), 1);
        assert_eq!(topic_name_problems("topic", &"a".repeat(250)).len(), 1);
        assert!(topic_name_problems("topic", "taxi.trips_v1-x").is_empty());
    }

    #[test]
    fn delete_topic_fields_parse() {
        let spec: DeleteTopic = toml::from_str("topic = \"t\"\nif_missing = \"fail\"").unwrap();
        assert!(spec.wait);
        assert_eq!(spec.if_missing, IfMissing::Fail);
        assert!(toml::from_str::<DeleteTopic>("topic = \"t\"\nwait = 3").is_err());
    }
}
