//! A batch: the messages read since the last flush, as decoded rows and dead letters, with the
//! contiguous offset range it covers on each partition. The unit of insert, of the offset record
//! in ClickHouse and of the Kafka commit.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use crate::record::rowbinary::{self, TYPICAL_ROW_BYTES};
use crate::record::{DecodeError, Trip};

/// Memory one buffered row takes (its RowBinary encoding), for the stated memory bound.
pub const BYTES_PER_ROW: usize = TYPICAL_ROW_BYTES;

/// Offsets `[first, next)` read from one partition into a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first offset in the batch.
    pub first: i64,
    /// One past the last offset in the batch: where the partition continues.
    pub next: i64,
}

/// A message that is not a taxi row, on its way to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The message key, as it came.
    pub key: Option<Vec<u8>>,
    /// The message value, as it came.
    pub payload: Option<Vec<u8>>,
    /// Why it was refused.
    pub error: DecodeError,
}

/// What a batch holds of one Kafka partition.
#[derive(Debug, Default)]
pub struct PartitionRows {
    /// The offsets covered (rows and dead letters).
    pub span: Option<Span>,
    /// Rows encoded in `bytes`.
    pub rows: usize,
    /// The rows in RowBinary, in offset order: already the table's sort order.
    pub bytes: Vec<u8>,
}

/// Rows and dead letters read since the last flush.
#[derive(Debug)]
pub struct Batch {
    /// Sequence number within this process, for logs.
    pub seq: u64,
    /// Rows and offsets per partition.
    pub partitions: BTreeMap<i32, PartitionRows>,
    /// Rows in all partitions.
    pub rows: usize,
    /// Bad messages.
    pub dead_letters: Vec<DeadLetter>,
    /// When the first message arrived.
    pub started: Option<Instant>,
    /// Emptied buffers of an earlier batch, for partitions as they appear.
    spare: Vec<Vec<u8>>,
}

impl Batch {
    /// An empty batch.
    pub fn new(seq: u64) -> Self {
        Self::with_buffers(seq, Vec::new())
    }

    /// An empty batch that reuses `buffers` (emptied) before allocating.
    pub fn with_buffers(seq: u64, buffers: Vec<Vec<u8>>) -> Self {
        Self {
            seq,
            partitions: BTreeMap::new(),
            rows: 0,
            dead_letters: Vec::new(),
            started: None,
            spare: buffers,
        }
    }

    /// Messages in the batch (rows and dead letters).
    pub fn messages(&self) -> usize {
        self.rows + self.dead_letters.len()
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Bytes of encoded rows.
    pub fn bytes(&self) -> usize {
        self.partitions.values().map(|p| p.bytes.len()).sum()
    }

    /// Where each partition continues after this batch.
    pub fn spans(&self) -> impl Iterator<Item = (i32, Span)> + '_ {
        self.partitions
            .iter()
            .filter_map(|(p, rows)| rows.span.map(|s| (*p, s)))
    }

    #[inline]
    fn cover(&mut self, partition: i32, offset: i64) -> &mut PartitionRows {
        self.started.get_or_insert_with(Instant::now);
        let spare = &mut self.spare;
        let rows = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionRows {
                bytes: spare.pop().unwrap_or_default(),
                ..PartitionRows::default()
            });
        match &mut rows.span {
            Some(span) => span.next = offset + 1,
            None => {
                rows.span = Some(Span {
                    first: offset,
                    next: offset + 1,
                })
            }
        }
        rows
    }

    /// Adds a decoded row, read from `topic`.
    #[inline]
    pub fn push_row(&mut self, topic: &str, partition: i32, offset: i64, trip: &Trip) {
        let rows = self.cover(partition, offset);
        rowbinary::encode(trip, topic, partition, offset, &mut rows.bytes);
        rows.rows += 1;
        self.rows += 1;
    }

    /// Adds a bad message.
    pub fn push_dead_letter(&mut self, letter: DeadLetter) {
        self.cover(letter.partition, letter.offset);
        self.dead_letters.push(letter);
    }

    /// Moves the rows and dead letters of `partitions` into a new batch (for a rebalance that
    /// revokes only some partitions).
    pub fn split_off(&mut self, seq: u64, partitions: &[i32]) -> Batch {
        let mut out = Batch::new(seq);
        out.started = self.started;
        for p in partitions {
            if let Some(rows) = self.partitions.remove(p) {
                self.rows -= rows.rows;
                out.rows += rows.rows;
                out.partitions.insert(*p, rows);
            }
        }
        let (moved, kept): (Vec<_>, Vec<_>) = self
            .dead_letters
            .drain(..)
            .partition(|d| partitions.contains(&d.partition));
        self.dead_letters = kept;
        out.dead_letters = moved;
        if self.partitions.is_empty() {
            self.started = None;
        }
        out
    }

    /// Empties the batch and returns its buffers, for the next one.
    pub fn into_buffers(self) -> Vec<Vec<u8>> {
        let mut buffers = self.spare;
        for (_, mut rows) in self.partitions {
            rows.bytes.clear();
            buffers.push(rows.bytes);
        }
        buffers
    }

    /// The `insert_deduplication_token` of this batch on servers that have it: its topic and
    /// spans, so a retry of the same batch is recognised.
    pub fn dedup_token(&self, topic: &str) -> String {
        let mut token = String::from(topic);
        for (p, s) in self.spans() {
            let _ = write!(token, "/{p}:{}-{}", s.first, s.next);
        }
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ErrorKind;

    fn trip() -> Trip {
        crate::record::decode(br#"{"VendorID":1,"tpep_pickup_datetime":"2023-01-01 00:00:00","tpep_dropoff_datetime":"2023-01-01 00:10:00","trip_distance":1,"PULocationID":1,"DOLocationID":2,"payment_type":1,"fare_amount":1,"extra":0,"mta_tax":0,"tip_amount":0,"tolls_amount":0,"improvement_surcharge":0,"total_amount":1}"#).unwrap()
    }

    #[test]
    fn spans_cover_rows_and_dead_letters() {
        let mut b = Batch::new(1);
        assert!(b.is_empty() && b.started.is_none());
        b.push_row("taxi", 0, 10, &trip());
        b.push_row("taxi", 2, 5, &trip());
        b.push_row("taxi", 0, 11, &trip());
        b.push_dead_letter(DeadLetter {
            partition: 0,
            offset: 12,
            key: None,
            payload: Some(b"x".to_vec()),
            error: crate::record::decode(b"x").unwrap_err(),
        });
        assert_eq!((b.messages(), b.rows), (4, 3));
        let spans: Vec<_> = b.spans().collect();
        assert_eq!(
            spans,
            [
                (
                    0,
                    Span {
                        first: 10,
                        next: 13
                    }
                ),
                (2, Span { first: 5, next: 6 })
            ]
        );
        assert_eq!(b.partitions[&0].rows, 2);
        assert_eq!(
            b.partitions[&0].bytes.len(),
            2 * b.partitions[&2].bytes.len()
        );
        assert_eq!(b.dedup_token("taxi"), "taxi/0:10-13/2:5-6");
        assert_eq!(b.dead_letters[0].error.kind, ErrorKind::NotJson);

        let moved = b.split_off(2, &[0]);
        assert_eq!((moved.rows, moved.dead_letters.len()), (2, 1));
        assert_eq!(moved.partitions.keys().collect::<Vec<_>>(), [&0]);
        assert_eq!((b.rows, b.dead_letters.len()), (1, 0));
        assert_eq!(b.partitions.keys().collect::<Vec<_>>(), [&2]);

        let buffers = moved.into_buffers();
        assert_eq!(buffers.len(), 1);
        assert!(buffers[0].is_empty() && buffers[0].capacity() > 0);
        let mut reused = Batch::with_buffers(3, buffers);
        reused.push_row("taxi", 4, 0, &trip());
        assert!(reused.partitions[&4].bytes.capacity() >= 2 * reused.partitions[&4].bytes.len());
    }
}
