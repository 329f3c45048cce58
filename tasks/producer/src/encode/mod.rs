//! Arrow record batches -> one message per row: a JSON object (the default format, this module)
//! or a protobuf `TaxiTrip` ([`protobuf`], `--format protobuf`); [`Encoder`] is either.
//!
//! The contract with the consumer: keys are the column names exactly as in the file; integers
//! are JSON integers, floats JSON numbers (NaN and infinities become `null`), strings strings,
//! nulls `null`, timestamps of any unit (with or without time zone) UTC strings
//! `"YYYY-MM-DD HH:MM:SS"` with a `.ffffff` fraction only when it is not zero, dates
//! `"YYYY-MM-DD"`.
//!
//! Encoding reads the Arrow columns directly: each column's type is resolved once per file and
//! its values are viewed as a typed slice once per batch ([`column`](mod@column)); each row is
//! then written straight into the output buffer, the precomputed `"name":` prefix and every
//! value through fixed-size windows ([`slot`]) that compile to a few vector moves and table
//! lookups. No intermediate buffer, no per-row allocation, no `serde_json::Value`.

pub mod column;
pub mod number;
pub mod protobuf;
pub mod slot;
pub mod text;
pub mod time;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};

use column::{Kind, View, decode_dictionaries, nulls_of, window, write_null_if};
use slot::{SLOT, Slot};

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
    /// A column the protobuf message has no field for.
    #[error(
        "column(s) {columns} have no field in the protobuf message TaxiTrip (proto/taxi_trip.proto), which carries the TLC taxi trip layout only: send this file with --format json"
    )]
    NoProtobufField {
        /// The columns, comma-separated.
        columns: String,
    },
    /// Fields without a NULL that the file has no column for.
    #[error(
        "the protobuf message TaxiTrip needs column(s) {columns}, which the file lacks (only its optional fields may be missing)"
    )]
    ProtobufMissing {
        /// The fields, comma-separated.
        columns: String,
    },
    /// A column whose type does not fit its protobuf field.
    #[error(
        "column `{column}` has type {data_type}, which the protobuf field `{field}` cannot carry"
    )]
    ProtobufType {
        /// Column name.
        column: String,
        /// Its Arrow type.
        data_type: DataType,
        /// The field.
        field: &'static str,
    },
    /// A value its protobuf field cannot hold.
    #[error(
        "column `{column}`, row {row} of the batch being encoded: the value {reason}; send the file with --format json to have the consumer dead-letter such rows"
    )]
    ProtobufValue {
        /// Column name.
        column: String,
        /// Row within the record batch.
        row: usize,
        /// What is wrong with it.
        reason: String,
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
    /// The record format of the messages.
    pub format: RecordFormat,
}

/// How each row is written into its message (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RecordFormat {
    /// A JSON object keyed by the column names (any columns).
    #[default]
    Json,
    /// A `TaxiTrip` protobuf message (`proto/taxi_trip.proto`; the taxi trip layout only), which
    /// ClickHouse reads natively as `ProtobufSingle`.
    Protobuf,
}

impl RecordFormat {
    /// The name as `--format` takes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Protobuf => "protobuf",
        }
    }
}

/// The encoder of [`EncodeOptions::format`].
#[derive(Debug)]
pub enum Encoder {
    /// JSON objects.
    Json(RowEncoder),
    /// Protobuf messages (boxed: its reused message is large).
    Protobuf(Box<protobuf::ProtobufEncoder>),
}

impl Encoder {
    /// An encoder for batches of `schema` in the chosen format.
    pub fn new(schema: &Schema, options: &EncodeOptions) -> Result<Self, EncodeError> {
        Ok(match options.format {
            RecordFormat::Json => Self::Json(RowEncoder::new(schema, options)?),
            RecordFormat::Protobuf => {
                Self::Protobuf(Box::new(protobuf::ProtobufEncoder::new(schema, options)?))
            }
        })
    }

    /// Appends every row of `batch` to `out`; only protobuf can fail (a value its field cannot
    /// hold).
    pub fn encode(
        &mut self,
        batch: &RecordBatch,
        out: &mut EncodedRows,
    ) -> Result<(), EncodeError> {
        match self {
            Self::Json(e) => {
                e.encode(batch, out);
                Ok(())
            }
            Self::Protobuf(e) => e.encode(batch, out),
        }
    }
}

struct Column {
    kind: Kind,
    /// `"name":`, with a leading comma for every column but the first.
    prefix: Vec<u8>,
    /// The prefix padded to a slot, for constant-size copies (when it fits one).
    prefix_slot: Option<Slot>,
}

/// Encodes the batches of one file (one schema) into [`EncodedRows`].
pub struct RowEncoder {
    columns: Vec<Column>,
    key: Option<usize>,
    shift_secs: i64,
    /// Upper bound of a row's bytes when every value fits a window, plus a window of slack.
    row_room: usize,
    scratch: Vec<u8>,
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
        let row_room = 2 + SLOT + columns.iter().map(|c| c.prefix.len() + SLOT).sum::<usize>();
        let mut encoder = Self {
            columns,
            key,
            shift_secs: 0,
            row_room,
            scratch: Vec::new(),
        };
        encoder.set_time_shift_secs(options.time_shift_secs);
        Ok(encoder)
    }

    /// Sets the shift added to timestamps from now on (each repeated pass over a file has its own).
    pub fn set_time_shift_secs(&mut self, secs: i64) {
        self.shift_secs = secs;
        for column in &mut self.columns {
            if let Kind::Timestamp(f) = &mut column.kind {
                f.set_shift_secs(secs);
            }
        }
    }

    /// Appends every row of `batch` to `out`. The batch must have the schema given to
    /// [`RowEncoder::new`].
    pub fn encode(&mut self, batch: &RecordBatch, out: &mut EncodedRows) {
        let decoded;
        let arrays = if batch
            .columns()
            .iter()
            .any(|c| matches!(c.data_type(), arrow::datatypes::DataType::Dictionary(..)))
        {
            decoded = decode_dictionaries(batch);
            decoded.as_slice()
        } else {
            batch.columns()
        };
        let views: Vec<(View<'_>, _)> = arrays.iter().map(|a| (View::of(a), nulls_of(a))).collect();
        for column in &mut self.columns {
            // Remembered positions refer to the buffer the last batch went to.
            column.kind.reset();
        }
        let rows = batch.num_rows();
        let quoted = self
            .key
            .map(|k| usize::from(self.columns[k].kind.is_string()));
        out.ends.reserve(rows);
        out.keys_apart = false;
        let mut pos = out.len_bytes;
        for row in 0..rows {
            if out.data.len() < pos + self.row_room {
                let grown = (pos + self.row_room).max(out.data.len() * 2);
                out.data.resize(grown, 0);
            }
            out.data[pos] = b'{';
            pos += 1;
            for (c, column) in self.columns.iter_mut().enumerate() {
                match &column.prefix_slot {
                    Some(prefix) => *window(&mut out.data, pos) = *prefix,
                    None => {
                        out.data[pos..pos + column.prefix.len()].copy_from_slice(&column.prefix)
                    }
                }
                pos += column.prefix.len();
                let (view, nulls) = &views[c];
                let start = pos;
                pos = match write_null_if(*nulls, row, &mut out.data, pos) {
                    Some(end) => end,
                    None => column.kind.write(
                        view,
                        row,
                        &mut out.data,
                        pos,
                        self.row_room,
                        &mut self.scratch,
                    ),
                };
                if self.key == Some(c) {
                    if pos - start == 4 && nulls.is_some_and(|n| n.is_null(row)) {
                        out.keys.push(None);
                    } else {
                        let q = quoted.unwrap_or(0);
                        out.keys.push(Some((start + q, pos - q)));
                    }
                }
            }
            out.data[pos] = b'}';
            pos += 1;
            out.ends.push(pos);
        }
        out.len_bytes = pos;
    }
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

/// Encoded rows, ready to send: the messages of every row back to back, and each row's key (for
/// JSON a range of the row's own bytes, the key column's value; for protobuf a range of
/// `key_data`, the same text).
#[derive(Debug, Default)]
pub struct EncodedRows {
    /// Row bytes in `data[..len_bytes]`; the rest is scratch kept between uses (no re-zeroing).
    data: Vec<u8>,
    len_bytes: usize,
    /// End of each row in `data`.
    ends: Vec<usize>,
    /// Each row's key as a range of `data` (or `key_data`), `None` when null; empty without a key
    /// column.
    keys: Vec<Option<(usize, usize)>>,
    /// Key texts, when the messages do not contain them (protobuf).
    key_data: Vec<u8>,
    /// Whether `keys` are ranges of `key_data`.
    keys_apart: bool,
}

impl EncodedRows {
    /// Empties the rows, keeping the memory for reuse.
    pub fn clear(&mut self) {
        self.len_bytes = 0;
        self.ends.clear();
        self.keys.clear();
        self.key_data.clear();
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total message bytes of all rows.
    pub fn bytes(&self) -> usize {
        self.len_bytes
    }

    /// The message of row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// The key of row `i`: `None` when there is no key column or its value is null.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        let (start, end) = (*self.keys.get(i)?)?;
        Some(if self.keys_apart {
            &self.key_data[start..end]
        } else {
            &self.data[start..end]
        })
    }

    /// Iterates over `(key, message)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (Option<&[u8]>, &[u8])> {
        (0..self.len()).map(|i| (self.key(i), self.row(i)))
    }
}

#[cfg(test)]
mod tests;
