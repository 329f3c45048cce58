//! One Arrow column encoded as JSON values: the type is resolved once per file ([`Kind`]), then
//! each chunk of rows is written by a loop specialised for that type into a reusable buffer, with
//! the end offset of every value.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type,
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};

use super::number::{write_decimal, write_f32, write_f64, write_int};
use super::text::write_str;
use super::time::{TimestampFormatter, write_date};

/// How a column's values are written. Resolved from the Arrow type once per file.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A column of the Null type: every value is `null`.
    Null,
    /// `true`/`false`.
    Bool,
    /// Signed integers.
    Int8,
    /// Signed integers.
    Int16,
    /// Signed integers.
    Int32,
    /// Signed integers.
    Int64,
    /// Unsigned integers.
    UInt8,
    /// Unsigned integers.
    UInt16,
    /// Unsigned integers.
    UInt32,
    /// Unsigned integers.
    UInt64,
    /// Half floats, written through `f32`.
    Float16,
    /// Single floats in their shortest form.
    Float32,
    /// Double floats.
    Float64,
    /// Decimal numbers with this scale.
    Decimal128(i8),
    /// `string` (32-bit offsets).
    Utf8,
    /// `large_string` (64-bit offsets), as 2024+ TLC files have.
    LargeUtf8,
    /// `string_view`.
    Utf8View,
    /// A dictionary of strings, decoded to plain strings chunk by chunk.
    DictionaryUtf8,
    /// Timestamps of any unit, with or without a time zone: the stored value is UTC.
    Timestamp(TimestampFormatter),
    /// Days since the epoch.
    Date32,
    /// Milliseconds since the epoch, written as a date.
    Date64,
}

impl Kind {
    /// The writer for `data_type`, or `None` when the type has no JSON form here (binary, lists,
    /// structs, intervals...).
    pub fn for_type(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Null => Self::Null,
            DataType::Boolean => Self::Bool,
            DataType::Int8 => Self::Int8,
            DataType::Int16 => Self::Int16,
            DataType::Int32 => Self::Int32,
            DataType::Int64 => Self::Int64,
            DataType::UInt8 => Self::UInt8,
            DataType::UInt16 => Self::UInt16,
            DataType::UInt32 => Self::UInt32,
            DataType::UInt64 => Self::UInt64,
            DataType::Float16 => Self::Float16,
            DataType::Float32 => Self::Float32,
            DataType::Float64 => Self::Float64,
            DataType::Decimal128(_, scale) => Self::Decimal128(*scale),
            DataType::Utf8 => Self::Utf8,
            DataType::LargeUtf8 => Self::LargeUtf8,
            DataType::Utf8View => Self::Utf8View,
            DataType::Dictionary(_, value)
                if matches!(
                    value.as_ref(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) =>
            {
                Self::DictionaryUtf8
            }
            DataType::Timestamp(unit, _) => Self::Timestamp(TimestampFormatter::new(*unit)),
            DataType::Date32 => Self::Date32,
            DataType::Date64 => Self::Date64,
            _ => return None,
        })
    }

    /// Whether values are JSON strings (their key form drops the quotes).
    pub fn is_string(&self) -> bool {
        matches!(
            self,
            Self::Utf8 | Self::LargeUtf8 | Self::Utf8View | Self::DictionaryUtf8
        )
    }

    /// Appends the JSON text of every value of `array` to `values`, and each value's end offset
    /// to `ends`. Timestamps are moved by `shift_secs` seconds.
    pub fn encode(
        &mut self,
        array: &ArrayRef,
        shift_secs: i64,
        values: &mut Vec<u8>,
        ends: &mut Vec<u32>,
    ) {
        let out = Sink { values, ends };
        match self {
            Self::Null => {
                let mut out = out;
                for _ in 0..array.len() {
                    out.values.extend_from_slice(b"null");
                    out.end();
                }
            }
            Self::Bool => {
                let arr = array.as_boolean();
                let mut out = out;
                for i in 0..arr.len() {
                    if arr.is_null(i) {
                        out.values.extend_from_slice(b"null");
                    } else if arr.value(i) {
                        out.values.extend_from_slice(b"true");
                    } else {
                        out.values.extend_from_slice(b"false");
                    }
                    out.end();
                }
            }
            Self::Int8 => primitive::<Int8Type>(array, out, write_int),
            Self::Int16 => primitive::<Int16Type>(array, out, write_int),
            Self::Int32 => primitive::<Int32Type>(array, out, write_int),
            Self::Int64 => primitive::<Int64Type>(array, out, write_int),
            Self::UInt8 => primitive::<UInt8Type>(array, out, write_int),
            Self::UInt16 => primitive::<UInt16Type>(array, out, write_int),
            Self::UInt32 => primitive::<UInt32Type>(array, out, write_int),
            Self::UInt64 => primitive::<UInt64Type>(array, out, write_int),
            Self::Float16 => {
                primitive::<Float16Type>(array, out, |b, v| write_f32(b, v.to_f32()));
            }
            Self::Float32 => primitive::<Float32Type>(array, out, write_f32),
            Self::Float64 => primitive::<Float64Type>(array, out, write_f64),
            Self::Decimal128(scale) => {
                let scale = *scale;
                primitive::<Decimal128Type>(array, out, |b, v| write_decimal(b, v, scale));
            }
            Self::Utf8 => strings(array.as_string::<i32>().iter(), out),
            Self::LargeUtf8 => strings(array.as_string::<i64>().iter(), out),
            Self::Utf8View => strings(array.as_string_view().iter(), out),
            Self::DictionaryUtf8 => {
                // Rare in TLC data; decode the dictionary for this chunk and write plain strings.
                match arrow::compute::cast(array, &DataType::Utf8) {
                    Ok(plain) => strings(plain.as_string::<i32>().iter(), out),
                    Err(_) => {
                        // A dictionary of strings always casts to strings; keep the row count
                        // right regardless.
                        let mut out = out;
                        for _ in 0..array.len() {
                            out.values.extend_from_slice(b"null");
                            out.end();
                        }
                    }
                }
            }
            Self::Timestamp(formatter) => {
                let shift = shift_secs.saturating_mul(formatter.units_per_second());
                let write = |b: &mut Vec<u8>, v: i64| {
                    b.push(b'"');
                    formatter.write(b, v.saturating_add(shift));
                    b.push(b'"');
                };
                match array.data_type() {
                    DataType::Timestamp(TimeUnit::Second, _) => {
                        primitive::<TimestampSecondType>(array, out, write);
                    }
                    DataType::Timestamp(TimeUnit::Millisecond, _) => {
                        primitive::<TimestampMillisecondType>(array, out, write);
                    }
                    DataType::Timestamp(TimeUnit::Microsecond, _) => {
                        primitive::<TimestampMicrosecondType>(array, out, write);
                    }
                    _ => primitive::<TimestampNanosecondType>(array, out, write),
                }
            }
            Self::Date32 => {
                primitive::<Date32Type>(array, out, |b, v| {
                    b.push(b'"');
                    write_date(b, i64::from(v));
                    b.push(b'"');
                });
            }
            Self::Date64 => primitive::<Date64Type>(array, out, |b, v| {
                b.push(b'"');
                write_date(b, v.div_euclid(86_400_000));
                b.push(b'"');
            }),
        }
    }
}

/// Where one column's values go.
struct Sink<'a> {
    values: &'a mut Vec<u8>,
    ends: &'a mut Vec<u32>,
}

impl Sink<'_> {
    #[inline]
    fn end(&mut self) {
        self.ends.push(self.values.len() as u32);
    }
}

/// The loop for primitive columns, with a separate path for columns without nulls.
#[inline]
fn primitive<T: ArrowPrimitiveType>(
    array: &ArrayRef,
    mut out: Sink<'_>,
    mut write: impl FnMut(&mut Vec<u8>, T::Native),
) {
    let arr = array.as_primitive::<T>();
    match arr.nulls().filter(|n| n.null_count() > 0) {
        None => {
            for &v in arr.values().iter() {
                write(out.values, v);
                out.end();
            }
        }
        Some(nulls) => {
            for (i, &v) in arr.values().iter().enumerate() {
                if nulls.is_null(i) {
                    out.values.extend_from_slice(b"null");
                } else {
                    write(out.values, v);
                }
                out.end();
            }
        }
    }
}

fn strings<'a>(iter: impl Iterator<Item = Option<&'a str>>, mut out: Sink<'_>) {
    for value in iter {
        match value {
            Some(s) => write_str(out.values, s),
            None => out.values.extend_from_slice(b"null"),
        }
        out.end();
    }
}
