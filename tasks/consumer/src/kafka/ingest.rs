//! The ingest loop, on its own thread: serves the consumer's events, takes messages in batches
//! from the partitions' forwarded fetch queues (`fetch_queue`), decodes each into the batch being
//! filled (or a dead letter), and hands full or old-enough batches to the inserter.
//!
//! Backpressure: one batch is inserted while the next fills. When the next is full and the
//! inserter is still busy, every assigned partition is paused (the loop keeps polling, so the
//! member stays in its group) and resumed once the batch is handed over. Memory is thus bounded
//! by two batches plus librdkafka's prefetch queue (`Settings::memory_bound_bytes`).
//!
//! Rebalances are handled here too (the callbacks run inside `poll`, on this thread): a revoked
//! partition's rows are flushed to ClickHouse before the partition goes, and an assigned
//! partition starts where ClickHouse's offset records say, not where the group's commits do.
//!
//! Broker faults (see ARCHITECTURE.md, "Exactly once"): before reading, the offset records are
//! checked against the partitions' watermarks from Fetch responses; a record beyond a partition's
//! end or before its start means the topic is not the one the records were made from (recreated,
//! or emptied by a broker that lost its data). By default the consumer then reads nothing and
//! stops with an error saying so; `--on-topic-reset=start-over` starts a new incarnation instead
//! (`sink::offsets`). While running, a high watermark that falls below what ClickHouse has, or
//! goes backwards, or the topic disappearing while ClickHouse has rows of it, stops the consumer
//! with an error (exit 1). While the broker cannot be reached the lag is unknown: the
//! per-partition series are withdrawn and the total is -1, never a reassuring 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use velostream_common::kafka::events::EventLog;
use velostream_common::kafka::watermarks::{Watermarks, fetch_watermarks};

use super::context::IngestContext;
use super::fetch_queue::{FetchQueue, Fetched};
use crate::batch::{Batch, DeadLetter};
use crate::observe::{Health, Metrics};
use crate::progress::Handoff;
use crate::record::RecordFormat;
use crate::record::format::decode;
use crate::settings::TopicReset;
use crate::sink::OffsetStore;
use crate::sink::offsets::{Records, identity_topic};
use crate::sink::retry::Backoff;

/// The consumer this module drives.
pub type IngestConsumer = BaseConsumer<IngestContext>;

/// What the ingest loop and the rebalance callbacks share.
#[derive(Debug)]
pub struct Ingest {
    /// The topic.
    pub topic: String,
    /// The record format of the topic.
    pub format: RecordFormat,
    /// Flush at this many messages.
    pub batch_rows: usize,
    /// Flush a non-empty batch this long after its first message.
    pub batch_time: Duration,
    /// Bound on flushing a revoked partition's rows.
    pub revoke_timeout: Duration,
    /// Bound on one ClickHouse lookup of the offsets.
    pub lookup_timeout: Duration,
    /// Longest pause between lookup retries.
    pub max_backoff: Duration,
    /// To the inserter.
    pub handoff: Arc<Handoff>,
    /// Where partitions continue.
    pub offsets: OffsetStore,
    /// For the ClickHouse lookups made from the rebalance callback.
    pub runtime: tokio::runtime::Handle,
    /// Readiness.
    pub health: Arc<Health>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Graceful shutdown requested.
    pub stop: CancellationToken,
    /// Kafka bootstrap servers (for the watermark check before reading).
    pub brokers: String,
    /// What to do when the offset records do not fit the topic.
    pub on_topic_reset: TopicReset,
    state: Mutex<State>,
    /// The low and high watermark of each partition from librdkafka's last statistics.
    watermarks: Mutex<HashMap<i32, (i64, i64)>>,
    /// Per partition: the highest high watermark seen, and how many statistics reports in a
    /// row showed it lower than that or than what ClickHouse has.
    regressions: Mutex<HashMap<i32, (i64, u32)>>,
    /// Why the loop must stop (a broker fault the consumer cannot go on from), once set.
    fault: Mutex<Option<String>>,
    /// The broker cannot be reached (or a partition has no leader): the lag is unknown.
    unreadable: std::sync::atomic::AtomicBool,
    /// Per partition, the furthest ClickHouse has got in this topic as far as this process knows
    /// (so a topic that vanishes after a revoke is still known to have had rows).
    had_rows: Mutex<std::collections::BTreeMap<i32, i64>>,
}

/// Statistics reports in a row that must show a partition's high watermark below what ClickHouse
/// has (or below an earlier one) before the consumer stops: right after an assignment librdkafka
/// may still show a watermark from before it, until its first Fetch response.
const REGRESSION_REPORTS: u32 = 3;

/// Bound on the watermark check made before reading.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a full batch waits for the inserter before the partitions are paused outright.
/// Shorter waits just stop polling, which keeps librdkafka's prefetched messages (pausing
/// discards them).
pub const HOLD_BEFORE_PAUSE: Duration = Duration::from_secs(5);

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Poll for messages.
    Poll,
    /// Do not take messages: a full batch waits for the inserter.
    Hold,
}

#[derive(Debug)]
struct State {
    current: Batch,
    next_seq: u64,
    /// Next offset expected per assigned partition (-1: wherever the partition starts).
    positions: HashMap<i32, i64>,
    paused: bool,
    /// Since when a full batch has been waiting for the inserter.
    held_since: Option<Instant>,
    first_message: Option<Instant>,
    /// Where assigned partitions' messages are read in batches, while the loop runs.
    fetch: Option<Arc<FetchQueue>>,
    /// The `_topic` rows are stored with: the topic, or `TOPIC#N` for incarnation N >= 2.
    row_topic: String,
}

/// Most messages taken from librdkafka at once.
const FETCH_BATCH: usize = 8192;

/// How the loop ended.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestOutcome {
    /// Everything read was inserted and committed.
    pub clean: bool,
    /// When the first message was read.
    pub first_message: Option<Instant>,
    /// Why not clean: what shutdown could not finish.
    pub problem: Option<String>,
    /// Why not clean: the broker fault that stopped the loop.
    pub fault: Option<String>,
}

impl Ingest {
    /// Shared state for a loop over `topic`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topic: &str,
        batch_rows: usize,
        batch_time: Duration,
        revoke_timeout: Duration,
        lookup_timeout: Duration,
        max_backoff: Duration,
        handoff: Arc<Handoff>,
        offsets: OffsetStore,
        runtime: tokio::runtime::Handle,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        brokers: &str,
        on_topic_reset: TopicReset,
        format: RecordFormat,
    ) -> Self {
        Self {
            format,
            brokers: brokers.to_string(),
            on_topic_reset,
            regressions: Mutex::default(),
            fault: Mutex::default(),
            unreadable: std::sync::atomic::AtomicBool::new(false),
            had_rows: Mutex::default(),
            topic: topic.to_string(),
            batch_rows,
            batch_time,
            revoke_timeout,
            lookup_timeout,
            max_backoff,
            handoff,
            offsets,
            runtime,
            health,
            metrics,
            stop,
            state: Mutex::new(State {
                current: Batch::new(1),
                next_seq: 2,
                positions: HashMap::new(),
                paused: false,
                held_since: None,
                first_message: None,
                fetch: None,
                row_topic: topic.to_string(),
            }),
            watermarks: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_current(&self, state: &mut State) -> Batch {
        let seq = state.next_seq;
        state.next_seq += 1;
        let next = Batch::with_buffers(seq, self.handoff.take_spare());
        std::mem::replace(&mut state.current, next)
    }

    /// Adds one message to the batch being filled.
    fn accept(
        &self,
        state: &mut State,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) {
        match state.positions.get_mut(&partition) {
            // Not ours (any more): a late message of a revoked partition.
            None => return,
            // Already read: a stale fetch from before a seek.
            Some(next) if *next >= 0 && offset < *next => return,
            Some(next) => *next = offset + 1,
        }
        if state.first_message.is_none() {
            state.first_message = Some(Instant::now());
        }
        self.metrics.rows_consumed.inc();
        match decode(self.format, payload.unwrap_or_default()) {
            Ok(trip) => {
                let State {
                    current, row_topic, ..
                } = state;
                current.push_row(row_topic, partition, offset, &trip)
            }
            Err(error) => {
                tracing::debug!(partition, offset, error = %error, "Bad record, dead-lettering it");
                state.current.push_dead_letter(DeadLetter {
                    partition,
                    offset,
                    key: key.map(<[u8]>::to_vec),
                    payload: payload.map(<[u8]>::to_vec),
                    error,
                });
            }
        }
    }

    /// Hands the batch over when it is full or old enough and the inserter is free. A full
    /// batch that cannot be handed over is held: the loop stops taking messages (librdkafka's
    /// bounded prefetch queue fills and fetching stops), and if that lasts longer than
    /// [`HOLD_BEFORE_PAUSE`] the partitions are paused outright, so the loop can go back to
    /// polling (rebalances, statistics, group membership) without receiving messages.
    fn maybe_flush(&self, consumer: &IngestConsumer, state: &mut State) -> Flow {
        let full = state.current.messages() >= self.batch_rows;
        let aged = state
            .current
            .started
            .is_some_and(|t| t.elapsed() >= self.batch_time);
        if !(full || aged) {
            return Flow::Poll;
        }
        if self.handoff.idle() {
            let batch = self.take_current(state);
            self.metrics.inflight_rows.set(batch.rows as i64);
            if let Err(batch) = self.handoff.try_send(batch) {
                // The inserter is gone (it failed); keep the rows, the loop is about to stop.
                state.current = batch;
                return Flow::Poll;
            }
            if state.held_since.take().is_some() {
                self.metrics.fetch_paused.set(0);
            }
            if state.paused {
                self.set_paused(consumer, state, false);
            }
            return Flow::Poll;
        }
        if !full {
            // Old enough but the inserter is busy: keep filling, the batch just gets bigger.
            return Flow::Poll;
        }
        let since = *state.held_since.get_or_insert_with(|| {
            self.metrics.fetch_paused.set(1);
            tracing::debug!("Batch full while the previous insert runs: holding");
            Instant::now()
        });
        if !state.paused && since.elapsed() >= HOLD_BEFORE_PAUSE {
            self.set_paused(consumer, state, true);
        }
        if state.paused { Flow::Poll } else { Flow::Hold }
    }

    fn set_paused(&self, consumer: &IngestConsumer, state: &mut State, paused: bool) {
        let assignment = match consumer.assignment() {
            Ok(a) => a,
            Err(err) => {
                tracing::warn!(error = %err, "Cannot read the assignment to pause or resume it");
                return;
            }
        };
        let result = if paused {
            consumer.pause(&assignment)
        } else {
            consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                state.paused = paused;
                tracing::debug!(
                    paused,
                    partitions = assignment.count(),
                    "Fetching paused or resumed"
                );
            }
            Err(err) => tracing::warn!(paused, error = %err, "Pause or resume failed"),
        }
    }

    /// Commits where ClickHouse has got to, if that moved: a progress marker for lag tools and
    /// the DAG's lag sensor (ClickHouse's offset records decide where partitions continue).
    fn commit_progress(&self, consumer: &IngestConsumer, mode: CommitMode) {
        let Some(acked) = self.handoff.take_commit() else {
            return;
        };
        self.commit(consumer, &acked, mode);
        self.update_lag();
    }

    fn commit(
        &self,
        consumer: &IngestConsumer,
        positions: &std::collections::BTreeMap<i32, i64>,
        mode: CommitMode,
    ) {
        let mut tpl = TopicPartitionList::new();
        for (&p, &next) in positions {
            if next >= 0 {
                let _ = tpl.add_partition_offset(&self.topic, p, Offset::Offset(next));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(err) = consumer.commit(&tpl, mode) {
            tracing::debug!(error = %err, "Kafka commit failed (progress marker only)");
        }
    }

    /// Partitions were assigned: look up where ClickHouse has got to (retrying until it
    /// answers or shutdown), start each partition there, and assign.
    pub(super) fn on_assign(
        &self,
        consumer: &IngestConsumer,
        tpl: &mut TopicPartitionList,
        cooperative: bool,
    ) {
        self.metrics.rebalances.inc();
        let take_nothing = || {
            if !cooperative {
                let _ = consumer.assign(&TopicPartitionList::new());
            }
        };
        if self.fault().is_some() {
            take_nothing();
            return;
        }
        let records = match self.lookup_offsets() {
            Some(records) => records,
            None => {
                // Shutting down before ClickHouse answered: take nothing.
                take_nothing();
                return;
            }
        };
        let ours: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        let Some((incarnation, known)) = self.choose_incarnation(&records, &ours) else {
            take_nothing();
            return;
        };
        self.note_rows(&known);
        let mut state = self.lock();
        state.row_topic = identity_topic(&self.topic, incarnation);
        let mut started = Vec::new();
        for mut elem in tpl.elements() {
            let p = elem.partition();
            let next = if elem.topic() == self.topic {
                known.get(&p).copied().filter(|&n| n > 0)
            } else {
                None
            };
            let offset = next.map_or(Offset::Beginning, Offset::Offset);
            if let Err(err) = elem.set_offset(offset) {
                tracing::warn!(partition = p, error = %err, "Cannot set the start offset");
            }
            state.positions.insert(p, next.unwrap_or(-1));
            self.handoff.start(p, next.unwrap_or(-1));
            // Before the assignment: from its first fetch on, the partition's messages go to
            // the batch queue (see fetch_queue for why the order matters).
            if let Some(fetch) = &state.fetch
                && elem.topic() == self.topic
                && !fetch.route(consumer, &self.topic, p)
            {
                tracing::debug!(
                    partition = p,
                    "Partition not routed to the batch queue; reading it message by message"
                );
            }
            started.push((p, next));
        }
        let assigned = if cooperative {
            consumer.incremental_assign(tpl)
        } else {
            consumer.assign(tpl)
        };
        if let Err(err) = assigned {
            tracing::error!(error = %err, "Assigning partitions failed");
        }
        if state.paused && tpl.count() > 0 {
            let _ = consumer.pause(tpl);
        }
        drop(state);
        let committed: std::collections::BTreeMap<i32, i64> = started
            .iter()
            .filter_map(|(p, n)| n.map(|n| (*p, n)))
            .collect();
        // Catch the group's commits up with ClickHouse at once: after a crash between the insert
        // and the commit there may be nothing left to read, so no later commit would.
        self.commit(consumer, &committed, CommitMode::Async);
        self.metrics.assigned_partitions.set(started.len() as i64);
        self.health.set_joined();
        if ours.is_empty() && !self.rows_had().is_empty() {
            self.check_topic_exists(consumer, &self.rows_had());
        }
        tracing::info!(
            partitions = ?started.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            from_clickhouse = ?committed,
            incarnation,
            "Partitions assigned; each starts after the last offset ClickHouse has"
        );
    }

    /// Which incarnation of the topic to read and where its partitions continue: the one this
    /// process already reads, else the latest recorded, checked against the partitions'
    /// watermarks. `None` when the records do not fit the topic and the consumer must stop.
    fn choose_incarnation(
        &self,
        records: &Records,
        ours: &[i32],
    ) -> Option<(u32, std::collections::BTreeMap<i32, i64>)> {
        let fixed = self.offsets.incarnation();
        let n = fixed.unwrap_or(records.latest);
        let known = records.of(n);
        let starts: std::collections::BTreeMap<i32, i64> = ours
            .iter()
            .filter_map(|p| known.get(p).map(|&next| (*p, next)))
            .filter(|&(_, next)| next > 0)
            .collect();
        if starts.is_empty() {
            return Some((self.offsets.fix_incarnation(n), known));
        }
        let watermarks = match fetch_watermarks(&self.brokers, &self.topic, &starts, CHECK_TIMEOUT)
        {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(error = %err, "Cannot check ClickHouse's offset records against the topic's watermarks before reading; checking them while reading instead");
                return Some((self.offsets.fix_incarnation(n), known));
            }
        };
        let misfits = misfits(&starts, &watermarks);
        if misfits.is_empty() {
            return Some((self.offsets.fix_incarnation(n), known));
        }
        match (self.on_topic_reset, fixed) {
            (TopicReset::StartOver, None) => {
                let next = self.offsets.fix_incarnation(n + 1);
                tracing::warn!(
                    topic = %self.topic,
                    partitions = %misfits.join("; "),
                    incarnation = next,
                    row_topic = %identity_topic(&self.topic, next),
                    "The topic is not the one ClickHouse's offset records were made from (recreated, or emptied by a broker that lost its data); --on-topic-reset=start-over: reading it from the start as a new incarnation, its rows stored with this _topic so they cannot collide with the old rows"
                );
                Some((next, std::collections::BTreeMap::new()))
            }
            _ => {
                self.set_fault(format!(
                    "topic {topic:?} does not hold what ClickHouse's offset records (table {table}, incarnation {n}) say was read from it: {parts}. The topic was deleted and created again under the same name, or the broker lost its data (a broker with memory storage restarted). Nothing was read. To load the topic as it is now as a new incarnation (rows stored with _topic = {new:?}, which cannot collide with the {table} rows already there), start the consumer with --on-topic-reset=start-over; to keep the old rows apart, use another --table",
                    topic = self.topic,
                    table = self.offsets_table(),
                    parts = misfits.join("; "),
                    new = identity_topic(&self.topic, n + 1),
                ));
                None
            }
        }
    }

    fn offsets_table(&self) -> &str {
        self.offsets.table()
    }

    /// No partition of the topic was assigned while ClickHouse has rows of it: if the topic is
    /// gone from the broker, those rows' source vanished and the consumer stops.
    fn check_topic_exists(
        &self,
        consumer: &IngestConsumer,
        known: &std::collections::BTreeMap<i32, i64>,
    ) {
        let Ok(metadata) = consumer.fetch_metadata(None, CHECK_TIMEOUT) else {
            return;
        };
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            self.topic_vanished(known);
        }
    }

    fn topic_vanished(&self, known: &std::collections::BTreeMap<i32, i64>) {
        self.set_fault(format!(
            "topic {:?} disappeared from the broker while ClickHouse has rows of it (table {}, next offsets {known:?}): the broker lost its data (a broker with memory storage restarted?) or the topic was deleted. What was not yet read is lost; produce it again, then start the consumer with --on-topic-reset=start-over",
            self.topic,
            self.offsets_table(),
        ));
    }

    /// Records why the loop must stop, once (the first reason wins), and logs it once.
    pub(super) fn set_fault(&self, why: String) {
        let mut fault = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        if fault.is_none() {
            tracing::error!(topic = %self.topic, "{why}");
            *fault = Some(why);
        }
    }

    /// Why the loop must stop, if it must.
    pub fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A consumer error from `poll`: a vanished topic is a fault when ClickHouse has rows of it;
    /// the rest is said once per episode.
    pub(super) fn on_consumer_error(&self, err: &KafkaError) {
        let vanished = matches!(
            err.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::UnknownPartition
            )
        );
        if err.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) {
            self.set_fault(format!(
                "a fetch position on topic {:?} is out of range ({err}): the broker no longer has the offset ClickHouse's records continue from (the topic was recreated, or messages were deleted before they were read). Nothing more is read. To load the topic as it is now as a new incarnation, start the consumer again with --on-topic-reset=start-over",
                self.topic
            ));
            return;
        }
        self.note_rows(&self.handoff.acked());
        let had = self.rows_had();
        if vanished && !had.is_empty() {
            self.topic_vanished(&had);
            return;
        }
        EventLog::global().error(err, "consumer");
    }

    /// A client-level error (librdkafka's error callback): the broker cannot be reached.
    pub(super) fn on_client_error(&self, err: &KafkaError, reason: &str) {
        if matches!(
            err.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::Resolve
            )
        ) {
            self.set_unreadable(true);
        }
        EventLog::global().error(err, reason);
    }

    /// Remembers how far ClickHouse has got per partition (positive offsets only).
    fn note_rows(&self, next: &std::collections::BTreeMap<i32, i64>) {
        let mut had = self.had_rows.lock().unwrap_or_else(|e| e.into_inner());
        for (&p, &n) in next {
            if n > 0 {
                let e = had.entry(p).or_insert(n);
                *e = (*e).max(n);
            }
        }
    }

    fn rows_had(&self) -> std::collections::BTreeMap<i32, i64> {
        self.had_rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_unreadable(&self, unreadable: bool) {
        let was = self
            .unreadable
            .swap(unreadable, std::sync::atomic::Ordering::SeqCst);
        if was != unreadable {
            self.health.set_broker_reachable(!unreadable);
            if unreadable {
                tracing::warn!(topic = %self.topic, "The broker cannot be reached: the lag is unknown until it answers again (reported as -1, per-partition series withdrawn)");
            } else {
                EventLog::global().recovered();
            }
            self.update_lag();
        }
    }

    fn lookup_offsets(&self) -> Option<Records> {
        let mut backoff = Backoff::new(self.max_backoff);
        loop {
            let attempt = self.runtime.block_on(async {
                tokio::time::timeout(self.lookup_timeout, self.offsets.load()).await
            });
            let err = match attempt {
                Ok(Ok(known)) => return Some(known),
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {:?}", self.lookup_timeout),
            };
            let delay = backoff.next_delay();
            tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "Cannot read the offset records from ClickHouse, retrying");
            let deadline = Instant::now() + delay;
            while Instant::now() < deadline {
                if self.stop.is_cancelled() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20).min(delay));
            }
        }
    }

    /// Partitions are being revoked: their buffered rows go to ClickHouse (bounded by
    /// `revoke_timeout`) so the next owner, which starts from ClickHouse's offset records,
    /// does not read them again.
    pub(super) fn on_revoke(&self, consumer: &IngestConsumer, tpl: &TopicPartitionList) {
        let partitions: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        let mut state = self.lock();
        let deadline = Instant::now() + self.revoke_timeout;
        let seq = state.next_seq;
        state.next_seq += 1;
        let batch = state.current.split_off(seq, &partitions);
        if !batch.is_empty() && !self.stop.is_cancelled() {
            let rows = batch.rows;
            if let Err(batch) = self.handoff.send_blocking(batch, deadline) {
                tracing::warn!(
                    rows = batch.rows,
                    "ClickHouse did not take the revoked partitions' rows in time; the next owner reads them again and FINAL removes any duplicate"
                );
            } else {
                tracing::info!(rows, partitions = ?partitions, "Flushing revoked partitions");
            }
        }
        if !self.stop.is_cancelled() && !self.handoff.wait_idle(deadline) {
            tracing::warn!(
                "Rows of revoked partitions still being inserted; the next owner may read them again"
            );
        }
        self.commit_progress(consumer, CommitMode::Sync);
        self.note_rows(&self.handoff.acked());
        for p in &partitions {
            state.positions.remove(p);
            self.handoff.forget(*p);
            self.watermarks().remove(p);
            self.regressions().remove(p);
            self.metrics
                .partition_lag
                .remove(&Metrics::partition_labels(&self.topic, *p));
        }
        if state.positions.is_empty() {
            state.paused = false;
        }
        if state.current.messages() < self.batch_rows && state.held_since.take().is_some() {
            self.metrics.fetch_paused.set(0);
        }
        self.metrics
            .assigned_partitions
            .set(state.positions.len() as i64);
        tracing::info!(partitions = ?partitions, "Partitions revoked");
    }

    /// Keeps each partition's watermarks from librdkafka's statistics (the high watermark comes
    /// from Fetch responses, right on every broker) and updates the lag with them; notices a
    /// broker that cannot be reached and a high watermark that went backwards.
    pub(super) fn on_stats(&self, stats: &rdkafka::Statistics) {
        let down = stats
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state != "UP");
        let known_broker = stats.brokers.values().any(|b| b.nodeid >= 0);
        if down {
            self.set_unreadable(true);
        } else if known_broker {
            self.set_unreadable(false);
        }
        let Some(topic) = stats.topics.get(&self.topic) else {
            self.update_lag();
            return;
        };
        let acked = self.handoff.acked();
        let mut watermarks = self.watermarks();
        let mut regressions = self.regressions();
        let mut gone = Vec::new();
        for (p, part) in &topic.partitions {
            if part.hi_offset < 0 || !acked.contains_key(p) {
                continue;
            }
            watermarks.insert(*p, (part.lo_offset.max(0), part.hi_offset));
            let has = acked.get(p).copied().unwrap_or(-1);
            let entry = regressions.entry(*p).or_insert((part.hi_offset, 0));
            let below = part.hi_offset < entry.0 || part.hi_offset < has;
            if below {
                entry.1 += 1;
                if entry.1 >= REGRESSION_REPORTS {
                    gone.push(format!(
                        "partition {p}: high watermark now {} (it was {}; ClickHouse has up to {has})",
                        part.hi_offset, entry.0
                    ));
                }
            } else {
                *entry = (part.hi_offset, 0);
            }
        }
        drop(regressions);
        drop(watermarks);
        if !gone.is_empty() {
            gone.sort();
            self.set_fault(format!(
                "the high watermark of topic {:?} went backwards while reading ({}): messages are gone from the broker (the topic was recreated, or the broker lost its data). Nothing more is read; what ClickHouse acknowledged is recorded. To load the topic as it is now as a new incarnation, start the consumer again with --on-topic-reset=start-over",
                self.topic,
                gone.join("; ")
            ));
        }
        self.update_lag();
    }

    fn regressions(&self) -> MutexGuard<'_, HashMap<i32, (i64, u32)>> {
        self.regressions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watermarks(&self) -> MutexGuard<'_, HashMap<i32, (i64, i64)>> {
        self.watermarks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Per-partition lag: the last known high watermark minus the next offset not yet in
    /// ClickHouse. Updated on every statistics report and whenever ClickHouse acknowledges rows,
    /// so the last value a stopping consumer reports is what it left behind. While the broker
    /// cannot be read the lag is unknown: the per-partition series are withdrawn and the total is
    /// -1 (never 0).
    fn update_lag(&self) {
        let acked = self.handoff.acked();
        if self.unreadable.load(std::sync::atomic::Ordering::SeqCst) || self.fault().is_some() {
            for p in acked.keys() {
                self.metrics
                    .partition_lag
                    .remove(&Metrics::partition_labels(&self.topic, *p));
            }
            self.metrics.lag.set(-1);
            return;
        }
        let watermarks = self.watermarks();
        let mut total = 0;
        for (p, &next) in &acked {
            let Some(&(lo, hi)) = watermarks.get(p) else {
                continue;
            };
            let lag = (hi - if next > 0 { next } else { lo }).max(0);
            total += lag;
            self.metrics
                .partition_lag
                .get_or_create(&Metrics::partition_labels(&self.topic, *p))
                .set(lag);
        }
        self.metrics.lag.set(total);
    }
}

/// The partitions whose recorded next offset does not fit the topic's watermarks, said for people.
fn misfits(starts: &std::collections::BTreeMap<i32, i64>, w: &Watermarks) -> Vec<String> {
    starts
        .iter()
        .filter_map(|(&p, &next)| {
            let hi = *w.high.get(&p)?;
            let lo = w.low.get(&p).copied().unwrap_or(0);
            if next > hi {
                Some(format!(
                    "partition {p}: ClickHouse has rows up to offset {next} but the partition ends at {hi} (log start {lo})"
                ))
            } else if next < lo {
                Some(format!(
                    "partition {p}: ClickHouse has rows up to offset {next} but the partition starts at {lo} (ends at {hi}): offsets {next}..{lo} are gone unread"
                ))
            } else {
                None
            }
        })
        .collect()
}

/// Runs the loop until `ingest.stop` is cancelled, then flushes what was read and commits,
/// within `grace`.
///
/// Each turn serves the consumer queue first (rebalances, statistics, errors, and messages of
/// any partition not routed to the batch queue), then takes up to a batch's remaining room of
/// messages from the batch queue, waiting at most `poll_timeout` when there are none.
pub fn run(consumer: &IngestConsumer, ingest: &Ingest, grace: Duration) -> IngestOutcome {
    let poll_timeout =
        Duration::from_millis(100).min(ingest.batch_time.max(Duration::from_millis(1)));
    let fetch = Arc::new(FetchQueue::new(consumer));
    ingest.lock().fetch = Some(fetch.clone());
    // The queue and the messages must go before the consumer, also when unwinding.
    let _release = ReleaseFetchQueue(ingest);
    let mut fetched = Fetched::with_capacity(FETCH_BATCH);
    let mut flow = Flow::Poll;
    while !ingest.stop.is_cancelled() && ingest.fault().is_none() {
        if flow == Flow::Hold {
            ingest
                .handoff
                .wait_idle(Instant::now() + Duration::from_millis(50));
            flow = ingest.maybe_flush(consumer, &mut ingest.lock());
            ingest.commit_progress(consumer, CommitMode::Async);
            continue;
        }
        // Never hold the state lock across `poll`: rebalance callbacks run inside it and lock it.
        let mut served = 0;
        while let Some(item) = consumer.poll(Duration::ZERO) {
            match item {
                Ok(m) => {
                    let mut state = ingest.lock();
                    ingest.accept(&mut state, m.partition(), m.offset(), m.key(), m.payload());
                }
                Err(err) => ingest.on_consumer_error(&err),
            }
            served += 1;
            if served >= FETCH_BATCH {
                break;
            }
        }
        let room = ingest
            .batch_rows
            .saturating_sub(ingest.lock().current.messages())
            .clamp(1, FETCH_BATCH);
        let wait = if served > 0 {
            Duration::ZERO
        } else {
            poll_timeout
        };
        if fetch.take(&mut fetched, room, Duration::ZERO) == 0 && !wait.is_zero() {
            fetch.take(&mut fetched, room, wait);
        }
        if fetched.iter().next().is_some() {
            let mut state = ingest.lock();
            for m in fetched.iter() {
                match m.error() {
                    None => {
                        ingest.accept(&mut state, m.partition(), m.offset(), m.key(), m.payload())
                    }
                    Some(err) => ingest.on_consumer_error(&err),
                }
            }
            drop(state);
            fetched.clear();
        }
        flow = ingest.maybe_flush(consumer, &mut ingest.lock());
        ingest.commit_progress(consumer, CommitMode::Async);
    }
    drop(fetched);
    shutdown(consumer, ingest, grace)
}

/// Takes the batch queue out of the shared state when the loop ends, however it ends.
struct ReleaseFetchQueue<'a>(&'a Ingest);

impl Drop for ReleaseFetchQueue<'_> {
    fn drop(&mut self) {
        self.0.lock().fetch = None;
    }
}

fn shutdown(consumer: &IngestConsumer, ingest: &Ingest, grace: Duration) -> IngestOutcome {
    let deadline = Instant::now() + grace;
    ingest.health.set_stopping();
    let mut state = ingest.lock();
    let first_message = state.first_message;
    let mut batch = ingest.take_current(&mut state);
    drop(state);
    let mut problem = ingest.handoff.failure();
    if ingest.fault().is_some() {
        // Rows read after the fault may belong to what replaced the old topic: insert none of
        // them (nothing was recorded for them; a later run reads them again).
        if !batch.is_empty() {
            tracing::info!(
                messages = batch.messages(),
                "Not inserting the batch being filled when the broker fault was noticed"
            );
        }
        batch = Batch::new(0);
    }
    let rows = batch.rows;
    if !batch.is_empty() {
        tracing::info!(
            rows,
            messages = batch.messages(),
            "Stopping: flushing the last batch"
        );
        if let Err(batch) = ingest.handoff.send_blocking(batch, deadline) {
            problem.get_or_insert_with(|| {
                format!(
                    "{} rows not inserted within the shutdown grace period; nothing was committed for them",
                    batch.messages()
                )
            });
        }
    }
    if !ingest.handoff.wait_idle(deadline) {
        problem.get_or_insert_with(|| {
            "the last batch was not inserted within the shutdown grace period; nothing was committed for it".into()
        });
    }
    let acked = ingest.handoff.acked();
    ingest.commit(consumer, &acked, CommitMode::Sync);
    ingest.update_lag();
    if let Some(failure) = ingest.handoff.failure() {
        problem = Some(failure);
    }
    let fault = ingest.fault();
    IngestOutcome {
        clean: problem.is_none() && fault.is_none(),
        first_message,
        problem,
        fault,
    }
}
