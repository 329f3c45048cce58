//! A batch: the messages read since the last flush, as decoded rows and dead letters, with the
//! contiguous offset range it covers on each partition. The unit of insert, of the offset record
//! in ClickHouse and of the Kafka commit.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use crate::record::{DecodeError, Record, Trip};

/// Memory one buffered row takes ([`Record`] in a `Vec`), for the stated memory bound.
pub const BYTES_PER_ROW: usize = std::mem::size_of::<Record>();

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

/// Rows and dead letters read since the last flush.
#[derive(Debug)]
pub struct Batch {
    /// Sequence number within this process, for logs.
    pub seq: u64,
    /// Decoded rows, in offset order per partition.
    pub records: Vec<Record>,
    /// Bad messages.
    pub dead_letters: Vec<DeadLetter>,
    /// What the batch covers on each partition.
    pub spans: BTreeMap<i32, Span>,
    /// When the first message arrived.
    pub started: Option<Instant>,
}

impl Batch {
    /// An empty batch with room for `capacity` rows.
    pub fn with_capacity(seq: u64, capacity: usize) -> Self {
        Self {
            seq,
            records: Vec::with_capacity(capacity),
            dead_letters: Vec::new(),
            spans: BTreeMap::new(),
            started: None,
        }
    }

    /// An empty batch reusing `records`' allocation.
    pub fn with_records(seq: u64, mut records: Vec<Record>) -> Self {
        records.clear();
        Self {
            records,
            ..Self::with_capacity(seq, 0)
        }
    }

    /// Messages in the batch (rows and dead letters).
    pub fn messages(&self) -> usize {
        self.records.len() + self.dead_letters.len()
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn cover(&mut self, partition: i32, offset: i64) {
        self.started.get_or_insert_with(Instant::now);
        self.spans
            .entry(partition)
            .and_modify(|s| s.next = offset + 1)
            .or_insert(Span {
                first: offset,
                next: offset + 1,
            });
    }

    /// Adds a decoded row.
    pub fn push_row(&mut self, partition: i32, offset: i64, trip: Trip) {
        self.cover(partition, offset);
        self.records.push(Record {
            partition,
            offset,
            trip,
        });
    }

    /// Adds a bad message.
    pub fn push_dead_letter(&mut self, letter: DeadLetter) {
        self.cover(letter.partition, letter.offset);
        self.dead_letters.push(letter);
    }

    /// Moves the rows and dead letters of `partitions` into a new batch (for a rebalance that
    /// revokes only some partitions).
    pub fn split_off(&mut self, seq: u64, partitions: &[i32]) -> Batch {
        let mut out = Batch::with_capacity(seq, 0);
        out.started = self.started;
        let take = |p: &i32| partitions.contains(p);
        let (moved, kept): (Vec<_>, Vec<_>) =
            self.records.drain(..).partition(|r| take(&r.partition));
        self.records = kept;
        out.records = moved;
        let (moved, kept): (Vec<_>, Vec<_>) = self
            .dead_letters
            .drain(..)
            .partition(|d| take(&d.partition));
        self.dead_letters = kept;
        out.dead_letters = moved;
        for p in partitions {
            if let Some(span) = self.spans.remove(p) {
                out.spans.insert(*p, span);
            }
        }
        if self.spans.is_empty() {
            self.started = None;
        }
        out
    }

    /// The order to insert the rows in: by partition, then offset (the table's sorting key),
    /// as indexes into `records`. Rows of a partition arrive in offset order, interleaved with
    /// other partitions in fetch-sized chunks; a counting sort by partition is enough, and
    /// ClickHouse then has sorted input, which costs it half as much to insert.
    pub fn insert_order(&self) -> Vec<u32> {
        let buckets: Vec<i32> = self.spans.keys().copied().collect();
        let bucket = |p: i32| buckets.binary_search(&p).unwrap_or(0);
        let mut starts = vec![0usize; buckets.len() + 1];
        for r in &self.records {
            starts[bucket(r.partition) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut order = vec![0u32; self.records.len()];
        for (i, r) in self.records.iter().enumerate() {
            let slot = &mut starts[bucket(r.partition)];
            order[*slot] = i as u32;
            *slot += 1;
        }
        order
    }

    /// The `insert_deduplication_token` of this batch on servers that have it: its topic and
    /// spans, so a retry of the same batch is recognised.
    pub fn dedup_token(&self, topic: &str) -> String {
        let mut token = String::from(topic);
        for (p, s) in &self.spans {
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
        let mut b = Batch::with_capacity(1, 4);
        assert!(b.is_empty() && b.started.is_none());
        b.push_row(0, 10, trip());
        b.push_row(2, 5, trip());
        b.push_row(0, 11, trip());
        b.push_dead_letter(DeadLetter {
            partition: 0,
            offset: 12,
            key: None,
            payload: Some(b"x".to_vec()),
            error: crate::record::decode(b"x").unwrap_err(),
        });
        assert_eq!(b.messages(), 4);
        assert_eq!(
            b.spans[&0],
            Span {
                first: 10,
                next: 13
            }
        );
        assert_eq!(b.spans[&2], Span { first: 5, next: 6 });
        assert_eq!(b.dedup_token("taxi"), "taxi/0:10-13/2:5-6");
        assert_eq!(b.dead_letters[0].error.kind, ErrorKind::NotJson);

        let order: Vec<(i32, i64)> = b
            .insert_order()
            .iter()
            .map(|&i| {
                (
                    b.records[i as usize].partition,
                    b.records[i as usize].offset,
                )
            })
            .collect();
        assert_eq!(order, [(0, 10), (0, 11), (2, 5)]);

        let moved = b.split_off(2, &[0]);
        assert_eq!((moved.records.len(), moved.dead_letters.len()), (2, 1));
        assert_eq!(moved.spans.keys().collect::<Vec<_>>(), [&0]);
        assert_eq!((b.records.len(), b.dead_letters.len()), (1, 0));
        assert_eq!(b.spans.keys().collect::<Vec<_>>(), [&2]);
    }
}
