//! After producing: did the topic grow by what the broker acknowledged? A broker that acknowledges
//! messages and then does not store them is silent loss no delivery report shows; Tansu's S3
//! engine does that to messages sent while it was down (ARCHITECTURE.md, the broker's quirks). The
//! high watermarks are read from Fetch responses before and after the run
//! (`velostream_common::kafka::watermarks`); other producers writing at the same time only make the
//! topic grow more, so a shortfall is always loss (or a topic deleted under the run).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use velostream_common::kafka::events::QuietContext;
use velostream_common::kafka::watermarks::fetch_watermarks;

/// Each partition's high watermark (log end offset).
pub type LogEnds = BTreeMap<i32, i64>;

/// The high watermark of every partition of `topic`, from Fetch responses.
pub fn log_ends(brokers: &str, topic: &str, timeout: Duration) -> Result<LogEnds, String> {
    let client: BaseConsumer<QuietContext> = velostream_common::kafka::client_config(brokers)
        .create_with_context(QuietContext)
        .map_err(|e| e.to_string())?;
    let metadata = client
        .fetch_metadata(None, timeout)
        .map_err(|e| e.to_string())?;
    let starts: BTreeMap<i32, i64> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .ok_or_else(|| format!("topic {topic:?} is not in the broker's metadata"))?
        .partitions()
        .iter()
        .map(|p| (p.id(), 0))
        .collect();
    drop(client);
    fetch_watermarks(brokers, topic, &starts, timeout)
        .map(|w| w.high)
        .map_err(|e| e.to_string())
}

/// What the broker kept of `acknowledged` messages: `Err` with the shortfall said for people when
/// the partitions grew by less.
pub fn check_growth(
    topic: &str,
    before: &LogEnds,
    after: &LogEnds,
    acknowledged: u64,
) -> Result<u64, String> {
    let grown: i64 = after
        .iter()
        .map(|(p, &end)| end - before.get(p).copied().unwrap_or(0))
        .sum();
    let grown = grown.max(0) as u64;
    if grown >= acknowledged {
        return Ok(grown);
    }
    Err(format!(
        "the broker acknowledged {acknowledged} rows but topic {topic:?} grew by only {grown} \
         (high watermarks before {before:?}, after {after:?}): {} acknowledged rows are not in the \
         log. The broker dropped messages it had acknowledged (Tansu's S3 engine does this to \
         messages sent while it was down, see ARCHITECTURE.md), or the topic was recreated during \
         the run. Produce the data again",
        acknowledged - grown
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_that_grew_less_than_acknowledged_is_loss() {
        let before = BTreeMap::from([(0, 100), (1, 50)]);
        let after = BTreeMap::from([(0, 150), (1, 100)]);
        assert_eq!(check_growth("t", &before, &after, 100), Ok(100));
        // Another producer wrote too: more growth is fine.
        assert_eq!(check_growth("t", &before, &after, 60), Ok(100));
        let err = check_growth("t", &before, &after, 130).unwrap_err();
        assert!(err.contains("acknowledged 130 rows"), "{err}");
        assert!(err.contains("grew by only 100"), "{err}");
        assert!(
            err.contains("30 acknowledged rows are not in the log"),
            "{err}"
        );
        // A partition the run created counts from 0.
        assert_eq!(
            check_growth("t", &BTreeMap::new(), &BTreeMap::from([(0, 7)]), 7),
            Ok(7)
        );
    }
}
