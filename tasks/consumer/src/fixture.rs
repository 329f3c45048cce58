//! Test and benchmark fixtures: encodes the rows of a TLC Parquet file into the wire format the
//! producer writes (one JSON object per row, column names as in the file, timestamps as UTC
//! `"YYYY-MM-DD HH:MM:SS[.ffffff]"`, nulls as `null`), without depending on the producer crate.
//!
//! The integration tests and `consumer-bench` use it to fill topics with the real 100k-row sample.

use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::record::timestamp::format_datetime;

/// Errors reading a Parquet file for a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The file cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not readable Parquet.
    #[error("cannot read Parquet file {path}: {source}")]
    Parquet {
        /// The file.
        path: String,
        /// What the reader said.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A batch failed to decode.
    #[error("cannot decode a record batch of {path}: {source}")]
    Arrow {
        /// The file.
        path: String,
        /// What the reader said.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// A column type the encoder does not know.
    #[error(
        "column {column} of {path} has type {data_type}, which the fixture encoder does not handle"
    )]
    Type {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// Its type.
        data_type: DataType,
    },
}

/// How keys are spelled in the encoded objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyCase {
    /// As in the Parquet file (`VendorID`, `airport_fee`).
    #[default]
    AsIs,
    /// All lower-case, as in some copies of TLC data found in the wild.
    Lower,
}

/// The same rows as `TaxiTrip` protobuf messages (the producer's `--format protobuf`): each JSON
/// row decoded by the consumer and written back as its message.
pub fn to_protobuf(json_rows: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, crate::record::DecodeError> {
    json_rows
        .iter()
        .map(|row| crate::record::decode(row).map(|trip| crate::record::protobuf::encode(&trip)))
        .collect()
}

/// Reads every row of `path` and returns one JSON object per row.
pub fn encode_parquet(path: &Path, case: KeyCase) -> Result<Vec<Vec<u8>>, FixtureError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| FixtureError::Open {
        path: name.clone(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|source| FixtureError::Parquet {
            path: name.clone(),
            source,
        })?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|source| FixtureError::Arrow {
            path: name.clone(),
            source,
        })?;
        encode_batch(&batch, case, &name, &mut rows)?;
    }
    Ok(rows)
}

fn encode_batch(
    batch: &RecordBatch,
    case: KeyCase,
    path: &str,
    rows: &mut Vec<Vec<u8>>,
) -> Result<(), FixtureError> {
    let schema = batch.schema();
    let keys: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let name = match case {
                KeyCase::AsIs => f.name().clone(),
                KeyCase::Lower => f.name().to_ascii_lowercase(),
            };
            serde_json::to_string(&name).unwrap_or_default()
        })
        .collect();
    for column in batch.columns() {
        if !supported(column.data_type()) {
            let index = batch
                .columns()
                .iter()
                .position(|c| std::ptr::eq(c, column))
                .unwrap_or(0);
            return Err(FixtureError::Type {
                path: path.to_string(),
                column: schema.field(index).name().clone(),
                data_type: column.data_type().clone(),
            });
        }
    }
    let mut text = String::with_capacity(512);
    for row in 0..batch.num_rows() {
        text.clear();
        text.push('{');
        for (i, column) in batch.columns().iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&keys[i]);
            text.push(':');
            encode_value(column.as_ref(), row, &mut text);
        }
        text.push('}');
        rows.push(text.as_bytes().to_vec());
    }
    Ok(())
}

fn supported(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Boolean
            | DataType::Timestamp(_, _)
    )
}

fn push_float(value: f64, out: &mut String) {
    if value.is_finite() {
        // serde_json writes the shortest representation that reads back exactly.
        out.push_str(&serde_json::to_string(&value).unwrap_or_else(|_| "null".into()));
    } else {
        out.push_str("null");
    }
}

fn push_str(value: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
}

fn encode_value(column: &dyn Array, row: usize, out: &mut String) {
    if column.is_null(row) {
        out.push_str("null");
        return;
    }
    macro_rules! int {
        ($t:ty) => {
            out.push_str(&column.as_primitive::<$t>().value(row).to_string())
        };
    }
    match column.data_type() {
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => push_float(
            f64::from(column.as_primitive::<Float32Type>().value(row)),
            out,
        ),
        DataType::Float64 => push_float(column.as_primitive::<Float64Type>().value(row), out),
        DataType::Utf8 => push_str(column.as_string::<i32>().value(row), out),
        DataType::LargeUtf8 => push_str(column.as_string::<i64>().value(row), out),
        DataType::Utf8View => push_str(column.as_string_view().value(row), out),
        DataType::Boolean => out.push_str(if column.as_boolean().value(row) {
            "true"
        } else {
            "false"
        }),
        DataType::Timestamp(unit, _) => {
            use arrow::datatypes::{
                TimestampMicrosecondType as Us, TimestampMillisecondType as Ms,
                TimestampNanosecondType as Ns, TimestampSecondType as S,
            };
            let (seconds, micros) = match unit {
                TimeUnit::Second => (column.as_primitive::<S>().value(row), 0),
                TimeUnit::Millisecond => {
                    let v = column.as_primitive::<Ms>().value(row);
                    (v.div_euclid(1000), v.rem_euclid(1000) * 1000)
                }
                TimeUnit::Microsecond => {
                    let v = column.as_primitive::<Us>().value(row);
                    (v.div_euclid(1_000_000), v.rem_euclid(1_000_000))
                }
                TimeUnit::Nanosecond => {
                    let v = column.as_primitive::<Ns>().value(row);
                    (
                        v.div_euclid(1_000_000_000),
                        v.rem_euclid(1_000_000_000) / 1000,
                    )
                }
            };
            out.push('"');
            format_datetime(seconds, micros as u32, out);
            out.push('"');
        }
        // `supported` filtered every other type out before the first row.
        _ => out.push_str("null"),
    }
}
