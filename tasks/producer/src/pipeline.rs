//! One producer run: check every input, connect, then decode+encode on a reader thread while the
//! calling thread enqueues messages, and wait for every delivery.
//!
//! The machine this runs on has two cores: one reads Parquet and writes JSON, the other hands
//! messages to librdkafka (whose own threads compress and send). Encoded chunks travel through a
//! small bounded channel and their buffers come back through another, so memory stays bounded
//! (a few chunks of 8192 rows) and nothing is allocated per row.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use crate::encode::{EncodeError, EncodeOptions, EncodedRows, Encoder};
use crate::input::{self, InputError, InputErrors, InputFile, SchemaCheck};
use crate::kafka::{DeliveryConfig, Sender, SetupError};
use crate::stats::Stats;

/// Rows per message chunk passed from the reader to the sender.
const CHUNK_ROWS: usize = 8192;
/// Chunks in flight between the threads (plus one being filled and one being sent).
const CHANNEL_CHUNKS: usize = 4;

/// What to send and how.
#[derive(Debug, Clone)]
pub struct ProduceConfig {
    /// Files, directories or globs.
    pub inputs: Vec<String>,
    /// Which columns the files must have.
    pub schema: SchemaCheck,
    /// The key column (the time shift is set per pass).
    pub encode: EncodeOptions,
    /// Passes over the inputs.
    pub repeat: u64,
    /// Stop after this many rows.
    pub limit: Option<u64>,
    /// Pass `k` (from 0) moves every timestamp by `k` times this, so repeated rows stay distinct.
    pub repeat_shift: Duration,
    /// Rows per decoded record batch.
    pub read_batch_rows: usize,
    /// With several passes, keep decoded batches in memory up to this many bytes (about the
    /// files' uncompressed size) and decode each file once; 0 decodes on every pass.
    pub cache_bytes: u64,
    /// Where and how to deliver.
    pub delivery: DeliveryConfig,
}

/// The checked inputs and how many rows the run will send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The files, checked.
    pub files: Vec<InputFile>,
    /// Rows of one pass over all files.
    pub rows_per_pass: u64,
    /// Rows the run sends: passes times rows, capped by the limit.
    pub total_rows: u64,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// Some input is unusable; nothing was sent.
    #[error(transparent)]
    Input(#[from] InputErrors),
    /// Kafka is not usable; nothing was sent.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The reader thread could not start.
    #[error("cannot start the reader thread: {0}")]
    Thread(std::io::Error),
}

/// How a run ended.
#[derive(Debug)]
pub struct Summary {
    /// Rows planned.
    pub planned: u64,
    /// Rows acknowledged by the broker.
    pub delivered: u64,
    /// Rows that failed.
    pub failed: u64,
    /// JSON bytes acknowledged.
    pub bytes: u64,
    /// From the first message to the last acknowledgement.
    pub elapsed: Duration,
    /// Files read.
    pub files: usize,
    /// Stopped early by a signal.
    pub interrupted: bool,
    /// A file failed while being read (after sending began).
    pub read_error: Option<InputError>,
    /// The first delivery error.
    pub first_error: Option<String>,
}

impl Summary {
    /// Acknowledged rows per second.
    pub fn rows_per_sec(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Whether every planned row was delivered.
    pub fn is_complete(&self) -> bool {
        self.failed == 0
            && !self.interrupted
            && self.read_error.is_none()
            && self.delivered == self.planned
    }
}

/// Finds and checks every input; all problems are reported together. Nothing is sent.
pub fn plan(config: &ProduceConfig) -> Result<Plan, InputErrors> {
    let paths = input::resolve(&config.inputs)?;
    let files = input::open_all(&paths, config.schema, &config.encode)?;
    let rows_per_pass: u64 = files.iter().map(|f| f.rows).sum();
    let mut total_rows = rows_per_pass.saturating_mul(config.repeat);
    if let Some(limit) = config.limit {
        total_rows = total_rows.min(limit);
    }
    Ok(Plan {
        files,
        rows_per_pass,
        total_rows,
    })
}

/// Checks that the brokers answer and the topic exists, and creates the producer counting into
/// `stats`. Nothing is sent.
pub fn connect(config: &ProduceConfig, stats: &Stats) -> Result<Sender, SetupError> {
    Sender::connect(&config.delivery, stats.clone())
}

/// Sends the planned rows through `sender` (from [`connect`] with the same `stats`). `stop` ends
/// the run early (a signal): reading stops, what was enqueued is still awaited.
pub fn run(
    config: &ProduceConfig,
    plan: &Plan,
    mut sender: Sender,
    stats: &Stats,
    stop: &Arc<AtomicBool>,
) -> Result<Summary, ProduceError> {
    stats.total.set(plan.total_rows as i64);
    tracing::info!(
        files = plan.files.len(),
        rows = plan.total_rows,
        topic = %config.delivery.topic,
        brokers = %config.delivery.brokers,
        "Producing"
    );

    let start = Instant::now();
    let (chunks_tx, chunks_rx) = mpsc::sync_channel(CHANNEL_CHUNKS);
    let (pool_tx, pool_rx) = mpsc::channel();
    let reader = Reader {
        files: plan.files.clone(),
        passes: config.repeat,
        limit: plan.total_rows,
        shift_secs: config.repeat_shift.as_secs() as i64,
        batch_rows: config.read_batch_rows,
        cache_bytes: config.cache_bytes,
        encode: config.encode.clone(),
        stop: Arc::clone(stop),
    };
    let reader = std::thread::Builder::new()
        .name("parquet-reader".into())
        .spawn(move || reader.run(&chunks_tx, &pool_rx))
        .map_err(ProduceError::Thread)?;

    let mut read_error = None;
    for chunk in chunks_rx.iter() {
        match chunk {
            Ok(rows) => {
                for (key, payload) in rows.iter() {
                    sender.send(key, payload);
                }
                // The reader may have finished; a closed pool just drops the buffer.
                let _ = pool_tx.send(rows);
            }
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // A failed delivery fails the run: stop reading and let what is enqueued settle rather
        // than push every remaining row into a broker that drops them.
        if stats.failed.get() > 0 {
            tracing::error!(
                error = stats.first_error().unwrap_or_default(),
                "A message failed; no more rows are read"
            );
            break;
        }
    }
    drop(chunks_rx);
    let _ = reader.join();

    let wait = config.delivery.message_timeout + Duration::from_secs(30);
    let left = sender.flush(wait);
    if left > 0 {
        tracing::error!(
            in_flight = left,
            "Messages still unacknowledged after {wait:?}"
        );
        stats.failed.inc_by(left as u64);
    }
    let elapsed = start.elapsed();
    Ok(Summary {
        planned: plan.total_rows,
        delivered: stats.delivered.get(),
        failed: stats.failed.get(),
        bytes: stats.bytes.get(),
        elapsed,
        files: plan.files.len(),
        interrupted: stop.load(Ordering::Relaxed),
        read_error,
        first_error: stats.first_error(),
    })
}

/// The decode+encode side: passes over the files, chunks of encoded rows out.
pub struct Reader {
    /// The files, in order.
    pub files: Vec<InputFile>,
    /// Passes over all files.
    pub passes: u64,
    /// Rows to produce at most.
    pub limit: u64,
    /// Seconds added to timestamps per pass.
    pub shift_secs: i64,
    /// Rows per decoded batch.
    pub batch_rows: usize,
    /// Decode each file once and keep its batches for later passes when all files fit in this
    /// many (uncompressed) bytes.
    pub cache_bytes: u64,
    /// Key column.
    pub encode: EncodeOptions,
    /// Set to stop early.
    pub stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("files", &self.files.len())
            .field("passes", &self.passes)
            .field("limit", &self.limit)
            .finish()
    }
}

type Chunk = Result<EncodedRows, InputError>;

impl Reader {
    /// Reads until done, the limit, `stop`, or the receiver hanging up. Errors are sent on.
    pub fn run(self, out: &mpsc::SyncSender<Chunk>, pool: &mpsc::Receiver<EncodedRows>) {
        if let Err(e) = self.read(out, pool) {
            let _ = out.send(Err(e));
        }
    }

    fn read(
        &self,
        out: &mpsc::SyncSender<Chunk>,
        pool: &mpsc::Receiver<EncodedRows>,
    ) -> Result<(), InputError> {
        let size: u64 = self.files.iter().map(InputFile::uncompressed_bytes).sum();
        let cache = self.passes > 1 && size <= self.cache_bytes;
        if cache {
            tracing::debug!(bytes = size, "Decoding each file once for all passes");
        }
        let mut cached: Vec<Vec<RecordBatch>> = vec![Vec::new(); self.files.len()];
        let mut sink = ChunkSink {
            out,
            pool,
            left: self.limit,
            stop: &self.stop,
        };
        for pass in 0..self.passes {
            for (i, file) in self.files.iter().enumerate() {
                let mut options = self.encode.clone();
                options.time_shift_secs = self.shift_secs.saturating_mul(pass as i64);
                let mut encoder =
                    Encoder::new(&file.schema, &options).map_err(|e| file.error(e.into()))?;
                if cache && pass > 0 {
                    for batch in &cached[i] {
                        if !sink
                            .send(&mut encoder, batch)
                            .map_err(|e| file.error(e.into()))?
                        {
                            return Ok(());
                        }
                    }
                    continue;
                }
                for batch in file.reader(self.batch_rows)? {
                    let batch = batch.map_err(|e| file.error(input::Problem::Decode(e)))?;
                    if !sink
                        .send(&mut encoder, &batch)
                        .map_err(|e| file.error(e.into()))?
                    {
                        return Ok(());
                    }
                    if cache {
                        cached[i].push(batch);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Where the reader's encoded chunks go, and how many rows may still go.
struct ChunkSink<'a> {
    out: &'a mpsc::SyncSender<Chunk>,
    pool: &'a mpsc::Receiver<EncodedRows>,
    left: u64,
    stop: &'a AtomicBool,
}

impl ChunkSink<'_> {
    /// Encodes `batch` in chunks and sends them; `false` when reading should end (limit reached,
    /// stopped, or the receiver gone), an error when a value cannot be encoded.
    fn send(&mut self, encoder: &mut Encoder, batch: &RecordBatch) -> Result<bool, EncodeError> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.left == 0 || self.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let len = CHUNK_ROWS
                .min(batch.num_rows() - offset)
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            let mut rows = self.pool.try_recv().unwrap_or_default();
            rows.clear();
            encoder.encode(&batch.slice(offset, len), &mut rows)?;
            if self.out.send(Ok(rows)).is_err() {
                return Ok(false);
            }
            offset += len;
            self.left -= len as u64;
        }
        Ok(self.left > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{FileCompression, GenerateConfig, Layout, generate};

    fn sample(dir: &std::path::Path, rows: u64) -> InputFile {
        let path = dir.join("g.parquet");
        let config = GenerateConfig {
            rows,
            layout: Layout::Y2024,
            seed: 1,
            row_group_rows: 3_000,
            compression: FileCompression::Snappy,
        };
        generate(&path, &config).unwrap();
        input::open(&path, SchemaCheck::Taxi, &EncodeOptions::default()).unwrap()
    }

    fn read_all(reader: Reader) -> Vec<serde_json::Value> {
        let (tx, rx) = mpsc::sync_channel(2);
        let (_pool_tx, pool_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || reader.run(&tx, &pool_rx));
        let mut rows = Vec::new();
        for chunk in rx.iter() {
            for (_, row) in chunk.unwrap().iter() {
                rows.push(serde_json::from_slice(row).unwrap());
            }
        }
        thread.join().unwrap();
        rows
    }

    #[test]
    fn passes_shift_timestamps_and_the_limit_cuts_mid_pass() {
        let dir = tempfile::tempdir().unwrap();
        let file = sample(dir.path(), 10_000);
        let reader = |cache_bytes| Reader {
            files: vec![file.clone()],
            passes: 3,
            limit: 25_000,
            shift_secs: 1,
            batch_rows: 4_000,
            cache_bytes,
            encode: EncodeOptions::default(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let rows = read_all(reader(0));
        assert_eq!(rows.len(), 25_000);
        assert_eq!(read_all(reader(u64::MAX)), rows, "decoded once, same rows");
        let pickup = |i: usize| {
            rows[i]["tpep_pickup_datetime"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let plus = |s: &str, secs: i64| {
            let base = s.split(':').next_back().unwrap().parse::<i64>().unwrap();
            (base + secs) % 60
        };
        for (i, k) in [(10_000, 1), (20_000, 2)] {
            let (a, b) = (pickup(0), pickup(i));
            assert_eq!(
                plus(&a, k),
                b.split(':').next_back().unwrap().parse::<i64>().unwrap(),
                "pass {k}: {a} vs {b}"
            );
            let mut first = rows[0].clone();
            let mut other = rows[i].clone();
            for key in ["tpep_pickup_datetime", "tpep_dropoff_datetime"] {
                first[key] = serde_json::Value::Null;
                other[key] = serde_json::Value::Null;
            }
            assert_eq!(first, other, "only timestamps differ between passes");
        }
    }

    #[test]
    fn stop_ends_reading_early() {
        let dir = tempfile::tempdir().unwrap();
        let file = sample(dir.path(), 10_000);
        let stop = Arc::new(AtomicBool::new(true));
        let rows = read_all(Reader {
            files: vec![file],
            passes: 100,
            limit: u64::MAX,
            shift_secs: 0,
            batch_rows: 4_000,
            cache_bytes: 0,
            encode: EncodeOptions::default(),
            stop,
        });
        assert!(rows.is_empty());
    }
}
