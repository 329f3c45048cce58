//! One Arrow column encoded as JSON values: the type is resolved once per file ([`Kind`]), then
//! each chunk of rows is written by a loop specialised for that type into fixed-size slots
//! ([`Values`], see [`super::slot`]), values too long for a slot spilling to a side buffer.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type,
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};

use super::number::{write_decimal, write_f32, write_f64};
use super::slot::{SLOT, Slot, put_bytes, put_f64_cents, put_i64, put_u64};
use super::text::write_str;
use super::time::{TimestampFormatter, put_date_quoted, write_date};

/// Marks a value that did not fit its slot and sits in [`Values::spill`].
const SPILLED: u8 = u8::MAX;

/// The encoded values of one column for one chunk of rows.
#[derive(Debug, Default)]
pub struct Values {
    /// `SLOT` bytes per row; a value occupies the start of its slot.
    slots: Vec<u8>,
    /// Length of each row's value, or [`SPILLED`].
    lens: Vec<u8>,
    /// Values longer than a slot, back to back.
    spill: Vec<u8>,
    /// `(start, end)` in `spill` of each spilled value, in row order.
    spills: Vec<(usize, usize)>,
}

impl Values {
    /// Prepares for `rows` values; keeps the memory.
    fn reset(&mut self, rows: usize) {
        if self.slots.len() < rows * SLOT {
            self.slots.resize(rows * SLOT, 0);
        }
        self.lens.clear();
        self.spill.clear();
        self.spills.clear();
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Total bytes of all values.
    pub fn total_bytes(&self) -> usize {
        let short: usize = self
            .lens
            .iter()
            .filter(|&&l| l != SPILLED)
            .map(|&l| l as usize)
            .sum();
        short + self.spill.len()
    }

    /// Row `row`'s slot and length, or `None` when it spilled (see [`Values::spilled`]).
    #[inline]
    pub fn slot(&self, row: usize) -> Option<(&Slot, usize)> {
        let len = self.lens[row];
        if len == SPILLED {
            return None;
        }
        let start = row * SLOT;
        let slot = self.slots[start..start + SLOT]
            .try_into()
            .unwrap_or_else(|_| unreachable!("a slot is SLOT bytes"));
        Some((slot, len as usize))
    }

    /// The `n`-th spilled value.
    #[inline]
    pub fn spilled(&self, n: usize) -> &[u8] {
        let (start, end) = self.spills[n];
        &self.spill[start..end]
    }

    /// The value of `row` as bytes (slow: finds its spill index by counting).
    pub fn value(&self, row: usize) -> &[u8] {
        match self.slot(row) {
            Some((slot, len)) => &slot[..len],
            None => {
                let n = self.lens[..row].iter().filter(|&&l| l == SPILLED).count();
                self.spilled(n)
            }
        }
    }

    /// Writes the next value: `short` formats into the slot and returns the length, or `None`
    /// when the value is too long; then `long` appends it to the spill buffer.
    #[inline]
    fn push(
        &mut self,
        short: impl FnOnce(&mut Slot) -> Option<usize>,
        long: impl FnOnce(&mut Vec<u8>),
    ) {
        let row = self.lens.len();
        let start = row * SLOT;
        let slot: &mut Slot = (&mut self.slots[start..start + SLOT])
            .try_into()
            .unwrap_or_else(|_| unreachable!("a slot is SLOT bytes"));
        match short(slot) {
            Some(len) if len < SLOT => self.lens.push(len as u8),
            _ => {
                let start = self.spill.len();
                long(&mut self.spill);
                self.spills.push((start, self.spill.len()));
                self.lens.push(SPILLED);
            }
        }
    }

    /// Writes the next value as a copy of the value of `row` (which must not have spilled).
    #[inline]
    fn repeat(&mut self, row: usize) {
        let next = self.lens.len();
        // Through a local array: a constant-size copy, not a `memmove` call.
        let src: Slot = self.slots[row * SLOT..(row + 1) * SLOT]
            .try_into()
            .unwrap_or_else(|_| unreachable!("a slot is SLOT bytes"));
        let dst: &mut Slot = (&mut self.slots[next * SLOT..(next + 1) * SLOT])
            .try_into()
            .unwrap_or_else(|_| unreachable!("a slot is SLOT bytes"));
        *dst = src;
        self.lens.push(self.lens[row]);
    }

    /// Writes a short constant (`null`, `true`, `false`).
    #[inline]
    fn push_const<const N: usize>(&mut self, text: &'static [u8; N]) {
        self.push(
            |s| {
                let dst: &mut [u8; N] = (&mut s[..N])
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("N bytes"));
                *dst = *text;
                Some(N)
            },
            |v| v.extend_from_slice(text),
        );
    }
}

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

    /// Encodes every value of `array` into `out` (reset first). Timestamps are moved by
    /// `shift_secs` seconds.
    pub fn encode(&mut self, array: &ArrayRef, shift_secs: i64, out: &mut Values) {
        out.reset(array.len());
        match self {
            Self::Null => {
                for _ in 0..array.len() {
                    out.push_const(b"null");
                }
            }
            Self::Bool => {
                let arr = array.as_boolean();
                for i in 0..arr.len() {
                    match (arr.is_valid(i), arr.value(i)) {
                        (false, _) => out.push_const(b"null"),
                        (true, true) => out.push_const(b"true"),
                        (true, false) => out.push_const(b"false"),
                    }
                }
            }
            Self::Int8 => ints::<Int8Type>(array, out, i64::from),
            Self::Int16 => ints::<Int16Type>(array, out, i64::from),
            Self::Int32 => ints::<Int32Type>(array, out, i64::from),
            Self::Int64 => ints::<Int64Type>(array, out, |v| v),
            Self::UInt8 => ints::<UInt8Type>(array, out, i64::from),
            Self::UInt16 => ints::<UInt16Type>(array, out, i64::from),
            Self::UInt32 => ints::<UInt32Type>(array, out, i64::from),
            Self::UInt64 => primitive::<UInt64Type>(
                array,
                out,
                |s, v| Some(put_u64(s, 0, v)),
                |b, v| {
                    b.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
                },
            ),
            Self::Float16 => primitive::<Float16Type>(
                array,
                out,
                |s, v| short_f32(s, v.to_f32()),
                |b, v| write_f32(b, v.to_f32()),
            ),
            Self::Float32 => primitive::<Float32Type>(array, out, short_f32, write_f32),
            Self::Float64 => floats(array, out),
            Self::Decimal128(scale) => {
                let scale = *scale;
                primitive::<Decimal128Type>(
                    array,
                    out,
                    |_, _| None,
                    |b, v| {
                        write_decimal(b, v, scale);
                    },
                );
            }
            Self::Utf8 => strings(array.as_string::<i32>().iter(), out),
            Self::LargeUtf8 => strings(array.as_string::<i64>().iter(), out),
            Self::Utf8View => strings(array.as_string_view().iter(), out),
            Self::DictionaryUtf8 => match arrow::compute::cast(array, &DataType::Utf8) {
                Ok(plain) => strings(plain.as_string::<i32>().iter(), out),
                // A dictionary of strings always casts to strings; keep the row count regardless.
                Err(_) => (0..array.len()).for_each(|_| out.push_const(b"null")),
            },
            Self::Timestamp(formatter) => {
                let shift = shift_secs.saturating_mul(formatter.units_per_second());
                match array.data_type() {
                    DataType::Timestamp(TimeUnit::Second, _) => {
                        timestamps::<TimestampSecondType>(array, out, formatter, shift);
                    }
                    DataType::Timestamp(TimeUnit::Millisecond, _) => {
                        timestamps::<TimestampMillisecondType>(array, out, formatter, shift);
                    }
                    DataType::Timestamp(TimeUnit::Microsecond, _) => {
                        timestamps::<TimestampMicrosecondType>(array, out, formatter, shift);
                    }
                    _ => timestamps::<TimestampNanosecondType>(array, out, formatter, shift),
                }
            }
            Self::Date32 | Self::Date64 => dates(array, out),
        }
    }
}

/// The loop for primitive columns: `short` formats into the slot (or gives up with `None`),
/// `long` appends to the spill buffer. Nulls are `null`.
#[inline]
fn primitive<T: ArrowPrimitiveType>(
    array: &ArrayRef,
    out: &mut Values,
    mut short: impl FnMut(&mut Slot, T::Native) -> Option<usize>,
    mut long: impl FnMut(&mut Vec<u8>, T::Native),
) {
    let arr = array.as_primitive::<T>();
    match arr.nulls().filter(|n| n.null_count() > 0) {
        None => {
            for &v in arr.values().iter() {
                out.push(|s| short(s, v), |b| long(b, v));
            }
        }
        Some(nulls) => {
            for (i, &v) in arr.values().iter().enumerate() {
                if nulls.is_null(i) {
                    out.push_const(b"null");
                } else {
                    out.push(|s| short(s, v), |b| long(b, v));
                }
            }
        }
    }
}

/// Doubles. Many taxi amounts repeat row after row (taxes, surcharges, fees, counts), so a value
/// equal to the last one formatted is copied from its slot instead of formatted again.
fn floats(array: &ArrayRef, out: &mut Values) {
    let arr = array.as_primitive::<Float64Type>();
    let nulls = arr.nulls().filter(|n| n.null_count() > 0);
    let mut last: Option<(u64, usize)> = None;
    for (i, &v) in arr.values().iter().enumerate() {
        if nulls.is_some_and(|n| n.is_null(i)) {
            out.push_const(b"null");
            continue;
        }
        let bits = v.to_bits();
        match last {
            Some((b, row)) if b == bits => out.repeat(row),
            _ => {
                let row = out.len();
                out.push(|s| short_f64(s, v), |b| write_f64(b, v));
                if out.lens[row] != SPILLED {
                    last = Some((bits, row));
                }
            }
        }
    }
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

/// Integers up to 64 bits (signed) always fit a slot.
#[inline]
fn ints<T: ArrowPrimitiveType>(
    array: &ArrayRef,
    out: &mut Values,
    widen: impl Fn(T::Native) -> i64,
) {
    primitive::<T>(
        array,
        out,
        |s, v| Some(put_i64(s, widen(v))),
        |b, v| b.extend_from_slice(itoa::Buffer::new().format(widen(v)).as_bytes()),
    );
}

#[inline]
fn timestamps<T: ArrowPrimitiveType<Native = i64>>(
    array: &ArrayRef,
    out: &mut Values,
    formatter: &mut TimestampFormatter,
    shift: i64,
) {
    // Two closures need the formatter; the slow path clones it (it only holds a cache).
    let mut slow = formatter.clone();
    primitive::<T>(
        array,
        out,
        |s, v| formatter.put_quoted(s, v.saturating_add(shift)),
        |b, v| {
            b.push(b'"');
            slow.write(b, v.saturating_add(shift));
            b.push(b'"');
        },
    );
}

fn dates(array: &ArrayRef, out: &mut Values) {
    match array.data_type() {
        DataType::Date32 => primitive::<Date32Type>(
            array,
            out,
            |s, v| put_date_quoted(s, i64::from(v)),
            |b, v| quoted_date(b, i64::from(v)),
        ),
        _ => primitive::<Date64Type>(
            array,
            out,
            |s, v| put_date_quoted(s, v.div_euclid(86_400_000)),
            |b, v| quoted_date(b, v.div_euclid(86_400_000)),
        ),
    }
}

fn quoted_date(b: &mut Vec<u8>, days: i64) {
    b.push(b'"');
    write_date(b, days);
    b.push(b'"');
}

fn strings<'a>(iter: impl Iterator<Item = Option<&'a str>>, out: &mut Values) {
    for value in iter {
        match value {
            Some(s) => out.push(|slot| short_string(slot, s), |b| write_str(b, s)),
            None => out.push_const(b"null"),
        }
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
