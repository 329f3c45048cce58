//! The handoff between the ingest thread and the inserter task: at most one batch outstanding
//! (being inserted) while the next one fills, which bounds memory and is what pauses fetching
//! when ClickHouse falls behind. Also where the inserter reports what is safely in ClickHouse,
//! for the Kafka commits and the lag metric.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::batch::Batch;

#[derive(Debug, Default)]
struct State {
    sent: u64,
    done: u64,
    /// Next offset not yet in ClickHouse, per assigned partition.
    acked: BTreeMap<i32, i64>,
    /// `acked` changed since the last commit.
    dirty: bool,
    /// The inserter stopped for good.
    failed: Option<String>,
    /// The last written batch's buffers, emptied, for the next batch (no fresh allocation and
    /// page faults per batch).
    spare: Vec<Vec<u8>>,
}

/// Shared between the ingest thread (sends, waits) and the inserter (finishes).
#[derive(Debug)]
pub struct Handoff {
    state: Mutex<State>,
    changed: Condvar,
    tx: UnboundedSender<Batch>,
}

impl Handoff {
    /// A handoff feeding `tx`, the inserter's queue.
    pub fn new(tx: UnboundedSender<Batch>) -> Self {
        Self {
            state: Mutex::default(),
            changed: Condvar::new(),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the previous batch is done, so the next may be sent.
    pub fn idle(&self) -> bool {
        let s = self.lock();
        s.sent == s.done
    }

    /// Sends `batch` if nothing is outstanding, else gives it back.
    pub fn try_send(&self, batch: Batch) -> Result<(), Batch> {
        let mut s = self.lock();
        if s.sent != s.done || s.failed.is_some() {
            return Err(batch);
        }
        match self.tx.send(batch) {
            Ok(()) => {
                s.sent += 1;
                Ok(())
            }
            Err(e) => Err(e.0),
        }
    }

    /// Waits until nothing is outstanding, or `deadline`; false on timeout or failure.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let mut s = self.lock();
        loop {
            if s.failed.is_some() {
                return false;
            }
            if s.sent == s.done {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Waits (until `deadline`) for room, then sends; gives the batch back on timeout.
    pub fn send_blocking(&self, batch: Batch, deadline: Instant) -> Result<(), Batch> {
        if !self.wait_idle(deadline) {
            return Err(batch);
        }
        self.try_send(batch)
    }

    /// The inserter wrote `batch`: its partitions continue after it.
    pub fn finish(&self, batch: Batch) {
        let mut s = self.lock();
        s.done += 1;
        for (p, span) in batch.spans() {
            if let Some(next) = s.acked.get_mut(&p) {
                *next = (*next).max(span.next);
                s.dirty = true;
            }
        }
        s.spare = batch.into_buffers();
        drop(s);
        self.changed.notify_all();
    }

    /// Empty buffers left by the last written batch.
    pub fn take_spare(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.lock().spare)
    }

    /// The inserter stopped for good.
    pub fn fail(&self, error: String) {
        let mut s = self.lock();
        s.done += 1;
        s.failed = Some(error);
        drop(s);
        self.changed.notify_all();
    }

    /// Why the inserter stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// A partition was assigned, continuing at `next` (what ClickHouse has; -1 if it has
    /// nothing, which is never committed).
    pub fn start(&self, partition: i32, next: i64) {
        self.lock().acked.insert(partition, next);
    }

    /// A partition was revoked.
    pub fn forget(&self, partition: i32) {
        self.lock().acked.remove(&partition);
    }

    /// Where each assigned partition continues, if that changed since the last call.
    pub fn take_commit(&self) -> Option<BTreeMap<i32, i64>> {
        let mut s = self.lock();
        if !s.dirty {
            return None;
        }
        s.dirty = false;
        Some(s.acked.clone())
    }

    /// Where each assigned partition continues.
    pub fn acked(&self) -> BTreeMap<i32, i64> {
        self.lock().acked.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_batch_outstanding_at_a_time() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let h = Handoff::new(tx);
        h.start(0, 5);
        let trip = crate::record::decode(br#"{"VendorID":1,"tpep_pickup_datetime":"2023-01-01 00:00:00","tpep_dropoff_datetime":"2023-01-01 00:10:00","trip_distance":1,"PULocationID":1,"DOLocationID":2,"payment_type":1,"fare_amount":1,"extra":0,"mta_tax":0,"tip_amount":0,"tolls_amount":0,"improvement_surcharge":0,"total_amount":1}"#).unwrap();
        let mut b = Batch::new(1);
        b.push_row("t", 0, 5, &trip);
        b.push_row("t", 0, 8, &trip);
        b.push_row("t", 7, 0, &trip);
        assert!(h.try_send(b).is_ok());
        let second = h.try_send(Batch::new(2)).unwrap_err();
        assert!(!h.wait_idle(Instant::now() + Duration::from_millis(10)));
        let got = rx.try_recv().unwrap();
        h.finish(got);
        assert_eq!(h.take_spare().len(), 2);
        assert!(h.take_spare().is_empty());
        assert!(h.idle());
        // Partition 7 is not assigned here: not acked, not committed.
        assert_eq!(h.take_commit().unwrap(), BTreeMap::from([(0, 9)]));
        assert_eq!(h.take_commit(), None);
        assert!(h.send_blocking(second, Instant::now()).is_ok());
        h.fail("boom".into());
        assert!(!h.wait_idle(Instant::now() + Duration::from_secs(5)));
        assert_eq!(h.failure().as_deref(), Some("boom"));
    }
}
