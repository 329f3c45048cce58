//! Arrow record batches -> one JSON object per row, the message format of the pipeline.
//!
//! The contract with the consumer: keys are the column names exactly as in the file; integers
//! are JSON integers, floats JSON numbers (NaN and infinities become `null`), strings strings,
//! nulls `null`, timestamps of any unit (with or without time zone) UTC strings
//! `"YYYY-MM-DD HH:MM:SS"` with a `.ffffff` fraction only when it is not zero, dates
//! `"YYYY-MM-DD"`.
//!
//! Encoding is column-wise: each column of a chunk of rows is written by a loop specialised for
//! its type into fixed-size slots ([`column`], [`slot`]), then rows are stitched together from
//! the slots and the precomputed `"name":` prefixes with constant-size copies. No per-row
//! allocation, no `serde_json::Value`.

pub mod column;
pub mod number;
pub mod slot;
pub mod text;
pub mod time;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};

use column::{Kind, Values};
use slot::{SLOT, Slot};

/// Rows encoded per pass over the columns: small enough that the slots of a chunk (32 bytes per
/// value) stay in the CPU cache while rows are stitched together.
const CHUNK_ROWS: usize = 1024;

/// A column the encoder cannot write.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The column's Arrow type has no JSON form here.
    #[error(
        "column `{column}` has type {data_type}, which has no JSON encoding here (supported: integers, floats, decimals, booleans, strings, timestamps, dates)"
    )]
    UnsupportedType {
        /// Column name.
        column: String,
        /// Its Arrow type.
        data_type: DataType,
    },
    /// The key column is not in the file.
    #[error("the key column `{column}` is not in the file (its columns: {available})")]
    MissingKeyColumn {
        /// The requested key column.
        column: String,
        /// The file's column names, comma-separated.
        available: String,
    },
}

/// Choices that change what the messages contain.
#[derive(Debug, Clone, Default)]
pub struct EncodeOptions {
    /// The column whose value keys each message (matched case-insensitively), or `None` for
    /// messages without a key.
    pub key_column: Option<String>,
    /// Seconds added to every timestamp column (used to keep repeated passes over a file
    /// distinct).
    pub time_shift_secs: i64,
}

struct Column {
    kind: Kind,
    /// `"name":`, with a leading comma for every column but the first.
    prefix: Vec<u8>,
    /// The prefix padded to a slot, for constant-size copies (when it fits one).
    prefix_slot: Option<Slot>,
    values: Values,
}

/// Encodes the batches of one file (one schema) into [`EncodedRows`].
pub struct RowEncoder {
    columns: Vec<Column>,
    key: Option<usize>,
    shift_secs: i64,
    spill_next: Vec<usize>,
}

impl std::fmt::Debug for RowEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowEncoder")
            .field("columns", &self.columns.len())
            .field("key", &self.key)
            .finish()
    }
}

impl RowEncoder {
    /// An encoder for batches of `schema`. Fails if a column has a type without JSON form or the
    /// key column is missing.
    pub fn new(schema: &Schema, options: &EncodeOptions) -> Result<Self, EncodeError> {
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (i, field) in schema.fields().iter().enumerate() {
            let kind =
                Kind::for_type(field.data_type()).ok_or_else(|| EncodeError::UnsupportedType {
                    column: field.name().clone(),
                    data_type: field.data_type().clone(),
                })?;
            let mut prefix = Vec::with_capacity(field.name().len() + 4);
            if i > 0 {
                prefix.push(b',');
            }
            text::write_str(&mut prefix, field.name());
            prefix.push(b':');
            let prefix_slot = (prefix.len() <= SLOT).then(|| {
                let mut slot = [0u8; SLOT];
                slot[..prefix.len()].copy_from_slice(&prefix);
                slot
            });
            columns.push(Column {
                kind,
                prefix,
                prefix_slot,
                values: Values::default(),
            });
        }
        let key = match &options.key_column {
            None => None,
            Some(name) => Some(find_column(schema, name).ok_or_else(|| {
                EncodeError::MissingKeyColumn {
                    column: name.clone(),
                    available: schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?),
        };
        Ok(Self {
            columns,
            key,
            shift_secs: options.time_shift_secs,
            spill_next: Vec::new(),
        })
    }

    /// Sets the shift added to timestamps from now on (each repeated pass over a file has its own).
    pub fn set_time_shift_secs(&mut self, secs: i64) {
        self.shift_secs = secs;
    }

    /// Appends every row of `batch` to `out`. The batch must have the schema given to
    /// [`RowEncoder::new`].
    pub fn encode(&mut self, batch: &RecordBatch, out: &mut EncodedRows) {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = CHUNK_ROWS.min(batch.num_rows() - offset);
            self.encode_chunk(&batch.slice(offset, len), out);
            offset += len;
        }
    }

    fn encode_chunk(&mut self, batch: &RecordBatch, out: &mut EncodedRows) {
        let rows = batch.num_rows();
        let mut total = 2 * rows;
        for (column, array) in self.columns.iter_mut().zip(batch.columns()) {
            column
                .kind
                .encode(array, self.shift_secs, &mut column.values);
            total += column.values.total_bytes() + column.prefix.len() * rows;
        }

        // Room for every byte, plus a slot of slack for the constant-size over-copies.
        let mut pos = out.len_bytes;
        let needed = pos + total + SLOT;
        if out.data.len() < needed {
            out.data.resize(needed, 0);
        }
        let data = &mut out.data[..];
        // Per column, the next spilled value to take.
        self.spill_next.clear();
        self.spill_next.resize(self.columns.len(), 0);
        out.ends.reserve(rows);
        for row in 0..rows {
            data[pos] = b'{';
            pos += 1;
            for (c, column) in self.columns.iter().enumerate() {
                match &column.prefix_slot {
                    Some(prefix) => copy_slot(data, pos, prefix),
                    None => data[pos..pos + column.prefix.len()].copy_from_slice(&column.prefix),
                }
                pos += column.prefix.len();
                match column.values.slot(row) {
                    Some((slot, len)) => {
                        copy_slot(data, pos, slot);
                        pos += len;
                    }
                    None => {
                        let value = column.values.spilled(self.spill_next[c]);
                        self.spill_next[c] += 1;
                        data[pos..pos + value.len()].copy_from_slice(value);
                        pos += value.len();
                    }
                }
            }
            data[pos] = b'}';
            pos += 1;
            out.ends.push(pos);
        }
        out.len_bytes = pos;

        if let Some(key) = self.key {
            let column = &self.columns[key];
            let array = batch.column(key);
            let quoted = usize::from(column.kind.is_string());
            for row in 0..rows {
                if array.is_valid(row) {
                    let value = column.values.value(row);
                    out.keys
                        .extend_from_slice(&value[quoted..value.len() - quoted]);
                    out.key_valid.push(true);
                } else {
                    out.key_valid.push(false);
                }
                out.key_ends.push(out.keys.len());
            }
        }
    }
}

/// Copies a whole slot to `data[pos..]` (a constant-size copy the compiler turns into a couple of
/// vector moves); only the value's real length counts, the rest is overwritten next.
#[inline]
fn copy_slot(data: &mut [u8], pos: usize, slot: &Slot) {
    let dst: &mut Slot = (&mut data[pos..pos + SLOT])
        .try_into()
        .unwrap_or_else(|_| unreachable!("a slot is SLOT bytes"));
    *dst = *slot;
}

/// Finds a column by name: the exact name first, then ignoring ASCII case.
pub fn find_column(schema: &Schema, name: &str) -> Option<usize> {
    let fields = schema.fields();
    fields.iter().position(|f| f.name() == name).or_else(|| {
        fields
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(name))
    })
}

/// Encoded rows, ready to send: the JSON of every row back to back, and each row's key.
#[derive(Debug, Default)]
pub struct EncodedRows {
    /// Row bytes in `data[..len_bytes]`; the rest is scratch kept between uses (no re-zeroing).
    data: Vec<u8>,
    len_bytes: usize,
    ends: Vec<usize>,
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    key_valid: Vec<bool>,
}

impl EncodedRows {
    /// Empties the rows, keeping the memory for reuse.
    pub fn clear(&mut self) {
        self.len_bytes = 0;
        self.ends.clear();
        self.keys.clear();
        self.key_ends.clear();
        self.key_valid.clear();
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total JSON bytes of all rows.
    pub fn bytes(&self) -> usize {
        self.len_bytes
    }

    /// The JSON object of row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// The key of row `i`: `None` when there is no key column or its value is null.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        if !*self.key_valid.get(i)? {
            return None;
        }
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
        Some(&self.keys[start..self.key_ends[i]])
    }

    /// Iterates over `(key, json)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (Option<&[u8]>, &[u8])> {
        (0..self.len()).map(|i| (self.key(i), self.row(i)))
    }
}

#[cfg(test)]
mod tests;
