//! `kafka.wait_lag`: a sensor that checks a consumer group's lag on a topic every interval until
//! every partition's lag is at most a threshold (0 by default), recording the lag over time for
//! the UI's chart and the peak as outputs.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::lag::{LagProbe, LagReading, PartitionLag};
use super::topic::topic_name_problems;
use super::{Error, Num, num_problems};
use crate::operators::{ConfigProblem, Operator, OperatorError, TaskContext, ValidateContext};

fn zero() -> Num<u64> {
    Num::Value(0)
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Fields of a `kafka.wait_lag` task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitLag {
    /// The consumer group whose committed offsets are compared with the topic's end.
    pub group: String,
    /// The topic the group consumes.
    pub topic: String,
    /// The sensor succeeds once every partition's lag is at most this many messages (default 0).
    #[serde(default = "zero")]
    pub max_lag: Num<u64>,
    /// Time between two checks (humantime, default `1s`).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Give up after this long (humantime, default `10m`): the task fails, or is skipped with
    /// `soft_fail`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// When the lag is still above `max_lag` at `timeout`, mark the task skipped instead of failed
    /// (default `false`).
    #[serde(default)]
    pub soft_fail: bool,
    /// Bound on each broker request of a check (humantime, default `10s`).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

/// How a sensor run ended, with what it saw; becomes the task's outputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LagOutcome {
    /// Whether every partition's lag reached `max_lag` or less.
    pub caught_up: bool,
    /// The total lag at the last check.
    pub lag: i64,
    /// The highest total lag seen.
    pub peak_lag: i64,
    /// How many checks ran.
    pub checks: u64,
    /// Per partition at the last check.
    pub partitions: Vec<PartitionLag>,
}

impl WaitLag {
    /// Problems a DAG author can fix, found when the DAG loads.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = topic_name_problems("topic", &self.topic);
        problems.extend(num_problems(
            "max_lag",
            &self.max_lag,
            0,
            "it must be at least 0",
        ));
        if self.group.trim().is_empty() {
            problems.push(ConfigProblem::field(
                "group",
                "`group` is empty: name the consumer group to watch",
            ));
        }
        for (field, value) in [
            ("interval", self.interval),
            ("timeout", self.timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                problems.push(ConfigProblem::field(
                    field,
                    format!("`{field}` must be longer than 0s"),
                ));
            }
        }
        if self.interval > self.timeout && !self.timeout.is_zero() {
            problems.push(ConfigProblem::field(
                "interval",
                format!(
                    "`interval` ({}) is longer than `timeout` ({}): the sensor would check only once",
                    humantime::format_duration(self.interval),
                    humantime::format_duration(self.timeout)
                ),
            ));
        }
        problems
    }

    /// Checks until the group has caught up, the sensor's timeout passes (`Ok` with
    /// `caught_up: false`), a check fails, or `cancel` fires. `on_check` sees every reading and the
    /// peak so far (for the log and the progress bar).
    pub async fn run(
        &self,
        brokers: &str,
        cancel: &CancellationToken,
        on_check: &mut (dyn FnMut(&LagReading, i64) + Send),
    ) -> Result<LagOutcome, Error> {
        self.run_with(brokers, cancel, on_check, &mut |_| {}).await
    }

    /// [`WaitLag::run`], saying through `on_trouble` (once per episode, not per check) when the lag
    /// cannot be computed for a while and when it can again.
    ///
    /// A broker that was reachable and stops answering (a restart) is waited for until the
    /// sensor's timeout, without recording any lag meanwhile (the lag is unknown, not 0); a failure
    /// at the first check fails at once (a wrong address, a missing topic). Data that vanished
    /// fails at once: the topic disappeared after a reading saw it, or a partition's high
    /// watermark went backwards (the topic was recreated, or the broker lost its data).
    pub async fn run_with(
        &self,
        brokers: &str,
        cancel: &CancellationToken,
        on_check: &mut (dyn FnMut(&LagReading, i64) + Send),
        on_trouble: &mut (dyn FnMut(&str) + Send),
    ) -> Result<LagOutcome, Error> {
        let max_lag = self.max_lag.get("max_lag")?;
        let probe = LagProbe::new(brokers, &self.group, &self.topic, self.request_timeout)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut outcome = LagOutcome {
            caught_up: false,
            lag: 0,
            peak_lag: 0,
            checks: 0,
            partitions: Vec::new(),
        };
        let mut last: Option<LagReading> = None;
        let mut trouble: Option<(tokio::time::Instant, Error)> = None;
        loop {
            let next = tokio::time::Instant::now() + self.interval;
            let reading = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Error::Cancelled),
                reading = probe.read() => reading,
            };
            outcome.checks += 1;
            match reading {
                Ok(reading) => {
                    if let Some(previous) = &last {
                        check_forward(&self.topic, brokers, previous, &reading)?;
                    }
                    if let Some((since, _)) = trouble.take() {
                        on_trouble(&format!(
                            "The lag can be computed again after {:.1}s",
                            since.elapsed().as_secs_f64()
                        ));
                    }
                    outcome.lag = reading.total;
                    outcome.peak_lag = outcome.peak_lag.max(reading.total);
                    on_check(&reading, outcome.peak_lag);
                    let caught_up = reading.max_partition_lag() <= max_lag as i64;
                    outcome.partitions = reading.partitions.clone();
                    last = Some(reading);
                    if caught_up {
                        outcome.caught_up = true;
                        return Ok(outcome);
                    }
                }
                Err(Error::TopicMissing { topic, brokers, .. }) if last.is_some() => {
                    let previous = last
                        .as_ref()
                        .map(|r| r.partitions.as_slice())
                        .unwrap_or(&[]);
                    return Err(Error::TopicVanished {
                        topic,
                        brokers,
                        partitions: previous.len(),
                        high_watermarks: previous
                            .iter()
                            .map(|p| (p.partition, p.high_watermark))
                            .collect(),
                    });
                }
                Err(
                    err @ (Error::Unreachable { .. }
                    | Error::NoWatermark { .. }
                    | Error::Request { .. }),
                ) if last.is_some() => {
                    if trouble.is_none() {
                        on_trouble(&format!(
                            "The lag cannot be computed: {err}; retrying every {} until the timeout, recording no lag meanwhile (it is unknown, not 0)",
                            humantime::format_duration(self.interval)
                        ));
                        trouble = Some((tokio::time::Instant::now(), err));
                    } else if let Some((since, _)) = trouble.take() {
                        trouble = Some((since, err));
                    }
                }
                Err(err) => return Err(err),
            }
            if tokio::time::Instant::now() >= deadline {
                if let Some((since, err)) = trouble {
                    tracing::debug!(since = ?since, "Sensor timed out while the lag could not be computed");
                    return Err(err);
                }
                return Ok(outcome);
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Error::Cancelled),
                () = tokio::time::sleep_until(next.min(deadline)) => {}
            }
        }
    }
}

/// Fails when a partition's high watermark is below the one of the previous reading: the
/// messages in between are gone.
fn check_forward(
    topic: &str,
    brokers: &str,
    previous: &LagReading,
    now: &LagReading,
) -> Result<(), Error> {
    let moves: Vec<String> = now
        .partitions
        .iter()
        .filter_map(|p| {
            let before = previous
                .partitions
                .iter()
                .find(|q| q.partition == p.partition)?;
            (p.high_watermark < before.high_watermark).then(|| {
                format!(
                    "partition {}: from {} to {}",
                    p.partition, before.high_watermark, p.high_watermark
                )
            })
        })
        .collect();
    if moves.is_empty() {
        Ok(())
    } else {
        Err(Error::WatermarkBackwards {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
            moves: moves.join(", "),
        })
    }
}

impl Operator for WaitLag {
    fn validate(&self, _ctx: &ValidateContext<'_>) -> Vec<ConfigProblem> {
        self.problems()
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), OperatorError> {
        let max_lag = self.max_lag.get("max_lag").map_err(super::operator_error)?;
        let brokers = ctx.connections().kafka.brokers.clone();
        ctx.log(format!(
            "Waiting until group {} lags at most {} message(s) per partition on topic {} (checking every {}, for up to {})",
            self.group,
            self.max_lag,
            self.topic,
            humantime::format_duration(self.interval),
            humantime::format_duration(self.timeout)
        ));
        let mut on_check = |reading: &LagReading, peak: i64| {
            let parts: Vec<String> = reading
                .partitions
                .iter()
                .map(|p| format!("{}:{}", p.partition, p.lag))
                .collect();
            ctx.log(format!(
                "Lag {} (partition:lag {})",
                reading.total,
                parts.join(" ")
            ));
            ctx.record_point("lag", "messages", reading.unix_ms, reading.total);
            // The bar fills as the backlog drains: done = peak - current.
            ctx.set_progress(
                (peak - reading.total).max(0) as u64,
                Some(peak.max(0) as u64),
                Some("messages"),
            );
        };
        let mut on_trouble = |what: &str| ctx.log(what);
        let outcome = self
            .run_with(&brokers, ctx.cancel_token(), &mut on_check, &mut on_trouble)
            .await
            .map_err(super::operator_error)?;
        ctx.set_outputs_from(&outcome);
        if outcome.caught_up {
            ctx.log(format!(
                "Group {} caught up on {} after {} check(s); peak lag {}",
                self.group, self.topic, outcome.checks, outcome.peak_lag
            ));
            return Ok(());
        }
        let worst = outcome
            .partitions
            .iter()
            .filter(|p| p.lag > max_lag as i64)
            .map(|p| {
                format!(
                    "partition {} lags {} (high watermark {}, committed {})",
                    p.partition,
                    p.lag,
                    p.high_watermark,
                    p.committed
                        .map_or_else(|| "nothing".to_owned(), |c| c.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let message = format!(
            "group {} still lags {} message(s) on topic {} after {} (max_lag {}): {worst}; is the consumer running and committing?",
            self.group,
            outcome.lag,
            self.topic,
            humantime::format_duration(self.timeout),
            self.max_lag
        );
        if self.soft_fail {
            Err(OperatorError::Skipped(message))
        } else {
            Err(OperatorError::failed(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(high: &[i64]) -> LagReading {
        LagReading {
            unix_ms: 0,
            total: 0,
            partitions: high
                .iter()
                .enumerate()
                .map(|(p, &h)| PartitionLag {
                    partition: p as i32,
                    high_watermark: h,
                    committed: None,
                    lag: h,
                })
                .collect(),
        }
    }

    #[test]
    fn a_high_watermark_going_backwards_is_named() {
        assert!(check_forward("t", "b:1", &reading(&[5, 7]), &reading(&[5, 9])).is_ok());
        let err = check_forward("t", "b:1", &reading(&[5, 7]), &reading(&[5, 2])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("partition 1: from 7 to 2"), "{text}");
        assert!(text.contains("went backwards"), "{text}");
    }

    #[test]
    fn fields_parse_with_defaults_and_are_checked() {
        let spec: WaitLag = toml::from_str("group = \"g\"\ntopic = \"t\"").unwrap();
        assert_eq!(spec.max_lag, Num::Value(0));
        assert_eq!(spec.interval, Duration::from_secs(1));
        assert!(!spec.soft_fail);
        assert!(spec.problems().is_empty());
        let bad: WaitLag =
            toml::from_str("group = \"\"\ntopic = \"t\"\ninterval = \"1m\"\ntimeout = \"10s\"")
                .unwrap();
        let problems = bad.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(toml::from_str::<WaitLag>("group = \"g\"\ntopic = \"t\"\nlag = 1").is_err());
        assert!(
            toml::from_str::<WaitLag>("group = \"g\"\ntopic = \"t\"\ninterval = \"soon\"").is_err()
        );
    }
}
