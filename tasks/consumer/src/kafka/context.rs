//! The librdkafka callbacks of our consumer: rebalances (assign from ClickHouse's offset
//! records, flush before revoke), statistics (per-partition lag, broker state) and errors (said
//! once per episode).

use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;

use super::ingest::Ingest;

/// The context given to the consumer.
#[derive(Debug, Clone)]
pub struct IngestContext {
    ingest: Arc<Ingest>,
}

impl IngestContext {
    /// Callbacks acting on `ingest`.
    pub fn new(ingest: Arc<Ingest>) -> Self {
        Self { ingest }
    }
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.ingest.on_stats(&statistics);
    }

    /// Said once per episode: while the broker is down librdkafka repeats these every few ms.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        velostream_common::kafka::events::EventLog::global().log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.ingest.on_client_error(&error, reason);
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.ingest.on_assign(consumer, tpl, cooperative);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.ingest.on_revoke(consumer, tpl);
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "Unassigning partitions failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "Rebalance failed; giving up the assignment");
                let _ = consumer.unassign();
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(err) = result {
            tracing::debug!(error = %err, "Kafka commit failed (progress marker only)");
        }
    }
}
