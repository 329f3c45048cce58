//! The inserter task: takes batches from the ingest thread one at a time and writes each for
//! good (rows, dead letters, offset records) before telling the handoff it is done.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::writer::{WriteError, Writer};
use crate::batch::Batch;
use crate::observe::Metrics;
use crate::progress::Handoff;

/// Writes batches until the ingest side hangs up. On a permanent failure (or `abort`, the
/// shutdown deadline) it reports the failure to the handoff, requests shutdown through `stop`
/// and returns the error. Returns, with when the last batch was written, once the queue is
/// closed or `abort` is cancelled while idle.
pub async fn run(
    writer: Writer,
    mut batches: UnboundedReceiver<Batch>,
    handoff: Arc<Handoff>,
    metrics: Arc<Metrics>,
    abort: CancellationToken,
    stop: CancellationToken,
) -> Result<Option<Instant>, WriteError> {
    let mut last_write = None;
    loop {
        let batch = tokio::select! {
            biased;
            batch = batches.recv() => batch,
            // The ingest side is done and nothing is queued: finished.
            () = abort.cancelled() => None,
        };
        let Some(batch) = batch else { break };
        tracing::debug!(
            batch = batch.seq,
            rows = batch.rows,
            bytes = batch.bytes(),
            dead_letters = batch.dead_letters.len(),
            "Writing batch"
        );
        match writer.write(&batch, &abort).await {
            Ok(()) => {
                tracing::debug!(batch = batch.seq, "Batch written");
                handoff.finish(batch);
                metrics.inflight_rows.set(0);
                last_write = Some(Instant::now());
            }
            Err(err) => {
                handoff.fail(format!("{err:#}"));
                stop.cancel();
                return Err(err);
            }
        }
    }
    Ok(last_write)
}
