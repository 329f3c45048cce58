//! The store writer: task state changes go through a channel to one thread that writes whatever
//! queued up in a single transaction, so the scheduler never waits for the database and SQLite
//! commits once per batch instead of once per change. A run flushes it before recording its end.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, TaskUpdate};

/// Most updates written in one transaction.
const MAX_BATCH: usize = 4096;

enum Op {
    Update(String, TaskUpdate),
    Flush(oneshot::Sender<()>),
}

/// A handle to the writer thread; the thread ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub(crate) struct StoreWriter {
    tx: mpsc::UnboundedSender<Op>,
}

impl StoreWriter {
    /// Starts the writer thread for `store`.
    pub(crate) fn spawn(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let spawned = std::thread::Builder::new()
            .name("velostream-store-writer".into())
            .spawn(move || write_loop(store.as_ref(), rx));
        if let Err(error) = spawned {
            // Without the thread every send fails and updates are dropped: say so loudly.
            tracing::error!(%error, "Cannot start the state store writer thread");
        }
        Self { tx }
    }

    /// Queues an update.
    pub(crate) fn update(&self, run_id: &str, update: TaskUpdate) {
        if self.tx.send(Op::Update(run_id.to_owned(), update)).is_err() {
            tracing::error!(
                run_id,
                "The state store writer is gone; a task state was not recorded"
            );
        }
    }

    /// Waits until everything queued before this call is written.
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Op::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

fn write_loop(store: &dyn Store, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut batch: Vec<(String, TaskUpdate)> = Vec::new();
    let mut flushes = Vec::new();
    while let Some(op) = rx.blocking_recv() {
        let mut next = Some(op);
        while let Some(op) = next.take() {
            match op {
                Op::Update(run_id, u) => batch.push((run_id, u)),
                Op::Flush(done) => flushes.push(done),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() && store.update_tasks(&batch).is_err() {
            // One bad update must not lose the batch: write them one by one, logging failures.
            for (run_id, u) in &batch {
                if let Err(error) = store.update_task(run_id, u) {
                    tracing::error!(run_id, task_id = %u.task_id, %error, "Cannot record a task state");
                }
            }
        }
        batch.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}
