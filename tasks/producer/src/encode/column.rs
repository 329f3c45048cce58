//! One Arrow column as JSON values: the type is resolved once per file ([`Kind`]); for each batch
//! the column's values are viewed as a typed slice ([`View`]), and each value is formatted
//! straight into the output at its place in the row ([`Kind::write`]), through the fixed-size
//! window writers of [`super::slot`]. Values that do not fit a window take a slow path.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericStringArray, RecordBatch, StringViewArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::ArrowPrimitiveType;
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};

/// Arrow's half float.
type F16 = <Float16Type as ArrowPrimitiveType>::Native;

use super::number::{write_decimal, write_f32, write_f64};
use super::slot::{SLOT, Slot, put_bytes, put_f64_cents, put_i64, put_u64};
use super::text::write_str;
use super::time::{TimestampFormatter, put_date_quoted, write_date};

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
    /// Double floats. Many taxi amounts repeat row after row (taxes, surcharges, fees, counts),
    /// so the last value formatted is remembered: its bits, and where its text is in the output
    /// and how long it is.
    Float64(Box<FloatCache>),
    /// Decimal numbers with this scale.
    Decimal128(i8),
    /// `string` (32-bit offsets).
    Utf8,
    /// `large_string` (64-bit offsets), as 2024+ TLC files have.
    LargeUtf8,
    /// `string_view`.
    Utf8View,
    /// A dictionary of strings, decoded to plain strings batch by batch.
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
            DataType::Float64 => Self::Float64(Box::default()),
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

    /// Forgets output positions remembered from an earlier output buffer.
    pub fn reset(&mut self) {
        if let Self::Float64(cache) = self {
            cache.last = None;
        }
    }

    /// Writes value `row` of `view` at `pos` in `data` and returns the new end. `data` must hold
    /// at least one [`SLOT`] past `pos`; a longer value grows it, keeping `slack` bytes after it
    /// for the rest of the row. Timestamps are moved by their formatter's shift.
    #[inline]
    pub fn write(
        &mut self,
        view: &View<'_>,
        row: usize,
        data: &mut Vec<u8>,
        pos: usize,
        slack: usize,
        scratch: &mut Vec<u8>,
    ) -> usize {
        // A short value formatted into the window at `pos`, or the slow path through `scratch`.
        macro_rules! short_or_long {
            ($short:expr, $long:expr) => {{
                match $short(window(data, pos)) {
                    Some(len) => pos + len,
                    None => {
                        scratch.clear();
                        $long(&mut *scratch);
                        put_long(data, pos, scratch, slack)
                    }
                }
            }};
        }
        match (self, view) {
            (_, View::Null) => put_null(data, pos),
            (_, View::Bool(a)) => {
                let w = window(data, pos);
                if a.value(row) {
                    w[..4].copy_from_slice(b"true");
                    pos + 4
                } else {
                    w[..5].copy_from_slice(b"false");
                    pos + 5
                }
            }
            (_, View::I8(v)) => pos + put_i64(window(data, pos), i64::from(v[row])),
            (_, View::I16(v)) => pos + put_i64(window(data, pos), i64::from(v[row])),
            (_, View::I32(v)) => pos + put_i64(window(data, pos), i64::from(v[row])),
            (_, View::I64(v)) => pos + put_i64(window(data, pos), v[row]),
            (_, View::U8(v)) => pos + put_i64(window(data, pos), i64::from(v[row])),
            (_, View::U16(v)) => pos + put_i64(window(data, pos), i64::from(v[row])),
            (_, View::U32(v)) => pos + put_i64(window(data, pos), i64::from(v[row])),
            (_, View::U64(v)) => put_u64(window(data, pos), 0, v[row]) + pos,
            (_, View::F16(v)) => {
                let x = v[row].to_f32();
                short_or_long!(|w| short_f32(w, x), |b: &mut Vec<u8>| write_f32(b, x))
            }
            (_, View::F32(v)) => {
                let x = v[row];
                short_or_long!(|w| short_f32(w, x), |b: &mut Vec<u8>| write_f32(b, x))
            }
            (Self::Float64(cache), View::F64(v)) => {
                let x = v[row];
                let bits = x.to_bits();
                if let Some((b, at, len)) = cache.last
                    && b == bits
                {
                    // The same text as at `at`, in an earlier row: copy its window.
                    let prev: Slot = data[at..at + SLOT]
                        .try_into()
                        .unwrap_or_else(|_| unreachable!("a window is SLOT bytes"));
                    *window(data, pos) = prev;
                    return pos + len;
                }
                let slot = FloatCache::slot(bits);
                let entry = &mut cache.entries[slot];
                if entry.len > 0 && entry.bits == bits {
                    let len = entry.len as usize;
                    let w = window(data, pos);
                    w[..FLOAT_TEXT].copy_from_slice(&entry.text);
                    cache.last = Some((bits, pos, len));
                    return pos + len;
                }
                let end = short_or_long!(|w| short_f64(w, x), |b: &mut Vec<u8>| write_f64(b, x));
                let len = end - pos;
                if len <= FLOAT_TEXT {
                    cache.last = Some((bits, pos, len));
                    let entry = &mut cache.entries[slot];
                    entry.bits = bits;
                    entry.len = len as u8;
                    entry.text.copy_from_slice(&data[pos..pos + FLOAT_TEXT]);
                }
                end
            }
            (_, View::F64(v)) => {
                let x = v[row];
                short_or_long!(|w| short_f64(w, x), |b: &mut Vec<u8>| write_f64(b, x))
            }
            (Self::Decimal128(scale), View::Dec(v)) => {
                let (x, scale) = (v[row], *scale);
                scratch.clear();
                write_decimal(scratch, x, scale);
                put_long(data, pos, scratch, slack)
            }
            (_, View::Dec(v)) => {
                scratch.clear();
                write_decimal(scratch, v[row], 0);
                put_long(data, pos, scratch, slack)
            }
            (_, View::Str(a)) => {
                let s = a.value(row);
                short_or_long!(|w| short_string(w, s), |b: &mut Vec<u8>| write_str(b, s))
            }
            (_, View::LargeStr(a)) => {
                let s = a.value(row);
                short_or_long!(|w| short_string(w, s), |b: &mut Vec<u8>| write_str(b, s))
            }
            (_, View::StrView(a)) => {
                let s = a.value(row);
                short_or_long!(|w| short_string(w, s), |b: &mut Vec<u8>| write_str(b, s))
            }
            (Self::Timestamp(f), View::Ts(v)) => {
                let x = v[row].saturating_add(f.shift_units());
                match f.put_quoted(window(data, pos), x) {
                    Some(len) => pos + len,
                    None => {
                        scratch.clear();
                        scratch.push(b'"');
                        f.write(scratch, x);
                        scratch.push(b'"');
                        put_long(data, pos, scratch, slack)
                    }
                }
            }
            (_, View::Ts(v)) => {
                // A timestamp view always comes with a timestamp kind; stay total anyway.
                pos + put_i64(window(data, pos), v[row])
            }
            (_, View::Date32(v)) => {
                let days = i64::from(v[row]);
                short_or_long!(|w| put_date_quoted(w, days), |b: &mut Vec<u8>| quoted_date(
                    b, days
                ))
            }
            (_, View::Date64(v)) => {
                let days = v[row].div_euclid(86_400_000);
                short_or_long!(|w| put_date_quoted(w, days), |b: &mut Vec<u8>| quoted_date(
                    b, days
                ))
            }
        }
    }
}

/// Bytes of a cached float's text (longer texts are not cached).
const FLOAT_TEXT: usize = 24;

/// Recently formatted doubles of one column: the last one (its text is in the output), and a
/// small direct-mapped table of texts. Taxi amounts take few distinct values (fares, tips and
/// totals cluster on round figures), so most rows copy a cached text instead of formatting.
#[derive(Debug, Clone)]
pub struct FloatCache {
    last: Option<(u64, usize, usize)>,
    entries: [FloatText; FloatCache::SIZE],
}

#[derive(Debug, Clone, Copy, Default)]
struct FloatText {
    bits: u64,
    /// 0 for an empty entry.
    len: u8,
    text: [u8; FLOAT_TEXT],
}

impl Default for FloatCache {
    fn default() -> Self {
        Self {
            last: None,
            entries: [FloatText::default(); FloatCache::SIZE],
        }
    }
}

impl FloatCache {
    const SIZE: usize = 1024;

    #[inline(always)]
    fn slot(bits: u64) -> usize {
        (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize
    }
}

/// A column's values in one batch, typed once so that writing a value is an index.
#[derive(Debug)]
pub enum View<'a> {
    /// Every value null.
    Null,
    /// Booleans.
    Bool(&'a BooleanArray),
    /// Integers.
    I8(&'a [i8]),
    /// Integers.
    I16(&'a [i16]),
    /// Integers.
    I32(&'a [i32]),
    /// Integers.
    I64(&'a [i64]),
    /// Integers.
    U8(&'a [u8]),
    /// Integers.
    U16(&'a [u16]),
    /// Integers.
    U32(&'a [u32]),
    /// Integers.
    U64(&'a [u64]),
    /// Half floats.
    F16(&'a [F16]),
    /// Floats.
    F32(&'a [f32]),
    /// Doubles.
    F64(&'a [f64]),
    /// Decimals (unscaled).
    Dec(&'a [i128]),
    /// Strings.
    Str(&'a GenericStringArray<i32>),
    /// Large strings.
    LargeStr(&'a GenericStringArray<i64>),
    /// String views.
    StrView(&'a StringViewArray),
    /// Timestamps in their unit.
    Ts(&'a [i64]),
    /// Days.
    Date32(&'a [i32]),
    /// Milliseconds.
    Date64(&'a [i64]),
}

impl<'a> View<'a> {
    /// Views `array` (a dictionary must have been decoded by [`decode_dictionaries`]).
    pub fn of(array: &'a ArrayRef) -> Self {
        match array.data_type() {
            DataType::Boolean => Self::Bool(array.as_boolean()),
            DataType::Int8 => Self::I8(array.as_primitive::<Int8Type>().values()),
            DataType::Int16 => Self::I16(array.as_primitive::<Int16Type>().values()),
            DataType::Int32 => Self::I32(array.as_primitive::<Int32Type>().values()),
            DataType::Int64 => Self::I64(array.as_primitive::<Int64Type>().values()),
            DataType::UInt8 => Self::U8(array.as_primitive::<UInt8Type>().values()),
            DataType::UInt16 => Self::U16(array.as_primitive::<UInt16Type>().values()),
            DataType::UInt32 => Self::U32(array.as_primitive::<UInt32Type>().values()),
            DataType::UInt64 => Self::U64(array.as_primitive::<UInt64Type>().values()),
            DataType::Float16 => Self::F16(array.as_primitive::<Float16Type>().values()),
            DataType::Float32 => Self::F32(array.as_primitive::<Float32Type>().values()),
            DataType::Float64 => Self::F64(array.as_primitive::<Float64Type>().values()),
            DataType::Decimal128(..) => Self::Dec(array.as_primitive::<Decimal128Type>().values()),
            DataType::Utf8 => Self::Str(array.as_string::<i32>()),
            DataType::LargeUtf8 => Self::LargeStr(array.as_string::<i64>()),
            DataType::Utf8View => Self::StrView(array.as_string_view()),
            DataType::Timestamp(TimeUnit::Second, _) => {
                Self::Ts(array.as_primitive::<TimestampSecondType>().values())
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                Self::Ts(array.as_primitive::<TimestampMillisecondType>().values())
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Self::Ts(array.as_primitive::<TimestampMicrosecondType>().values())
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                Self::Ts(array.as_primitive::<TimestampNanosecondType>().values())
            }
            DataType::Date32 => Self::Date32(array.as_primitive::<Date32Type>().values()),
            DataType::Date64 => Self::Date64(array.as_primitive::<Date64Type>().values()),
            // Null, and anything [`Kind::for_type`] refused (never reached).
            _ => Self::Null,
        }
    }
}

/// The nulls of `array` when it has any.
pub fn nulls_of(array: &ArrayRef) -> Option<&NullBuffer> {
    array.nulls().filter(|n| n.null_count() > 0)
}

/// Replaces dictionary-encoded string columns of `batch` with plain strings (rare in TLC data).
pub fn decode_dictionaries(batch: &RecordBatch) -> Vec<ArrayRef> {
    batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Dictionary(..) => {
                arrow::compute::cast(c, &DataType::Utf8).unwrap_or_else(|_| {
                    // A dictionary of strings always casts; keep the row count regardless.
                    arrow::array::new_null_array(&DataType::Null, c.len())
                })
            }
            _ => c.clone(),
        })
        .collect()
}

/// The fixed-size window at `pos` (the caller keeps a slot of room past every position).
#[inline(always)]
pub fn window(data: &mut [u8], pos: usize) -> &mut Slot {
    (&mut data[pos..pos + SLOT])
        .try_into()
        .unwrap_or_else(|_| unreachable!("a window is SLOT bytes"))
}

#[inline(always)]
fn put_null(data: &mut [u8], pos: usize) -> usize {
    window(data, pos)[..4].copy_from_slice(b"null");
    pos + 4
}

/// Writes `null` for value `row` when the column has a null there.
#[inline(always)]
pub fn write_null_if(
    nulls: Option<&NullBuffer>,
    row: usize,
    data: &mut [u8],
    pos: usize,
) -> Option<usize> {
    match nulls {
        Some(n) if n.is_null(row) => Some(put_null(data, pos)),
        _ => None,
    }
}

/// Copies a value longer than a window to `pos`, growing `data` to keep `slack` bytes after it.
#[inline(never)]
fn put_long(data: &mut Vec<u8>, pos: usize, bytes: &[u8], slack: usize) -> usize {
    let end = pos + bytes.len();
    if data.len() < end + slack {
        data.resize(end + slack, 0);
    }
    data[pos..end].copy_from_slice(bytes);
    end
}

#[inline]
fn short_f64(slot: &mut Slot, v: f64) -> Option<usize> {
    if !v.is_finite() {
        put_bytes(slot, b"null")
    } else {
        put_f64_cents(slot, v)
            .or_else(|| put_bytes(slot, ryu::Buffer::new().format_finite(v).as_bytes()))
    }
}

#[inline]
fn short_f32(slot: &mut Slot, v: f32) -> Option<usize> {
    if v.is_finite() {
        put_bytes(slot, ryu::Buffer::new().format_finite(v).as_bytes())
    } else {
        put_bytes(slot, b"null")
    }
}

fn quoted_date(b: &mut Vec<u8>, days: i64) {
    b.push(b'"');
    write_date(b, days);
    b.push(b'"');
}

/// A short string without characters to escape, quoted, in a slot.
#[inline]
fn short_string(slot: &mut Slot, s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    if bytes.len() + 2 > SLOT - 1 || bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        return None;
    }
    slot[0] = b'"';
    // Byte by byte: flags and codes are a few bytes, not worth a `memcpy` call.
    for (d, &b) in slot[1..].iter_mut().zip(bytes) {
        *d = b;
    }
    slot[bytes.len() + 1] = b'"';
    Some(bytes.len() + 2)
}
