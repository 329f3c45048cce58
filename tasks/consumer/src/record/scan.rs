//! The fast path of decoding: a strict scanner for the flat JSON objects the producer writes
//! (scalar values, no escapes in keys), about three times faster than serde_json's generic
//! deserializer. Anything it is not sure about (escapes, nested values, a value of the wrong
//! type, bad syntax) makes it give up, and the serde path decodes the message instead and
//! explains what is wrong with it. Both paths agree on every message the scanner accepts
//! (property-tested in `decode`).

use super::decode::{FIELDS, Field, Partial};
use super::timestamp::parse_datetime_bytes;
use super::trip::Flag;

/// A scalar as scanned.
enum Scalar<'a> {
    Null,
    Int(i64),
    Float(f64),
    /// The raw bytes between the quotes: no escapes, not yet checked for UTF-8.
    Str(&'a [u8]),
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.pos) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }

    /// A string without escapes or control characters; the opening quote is next. The bytes
    /// are not checked for UTF-8: callers that keep them as text do.
    #[inline]
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.pos;
        let rest = self.b.get(start..)?;
        let len = special_byte(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        self.pos = start + len + 1;
        Some(&rest[..len])
    }

    /// The next key, if it is spelled exactly like the field at `hint` (the common case, with
    /// no scanning or case folding), else `None` and nothing consumed.
    #[inline]
    fn expected_key(&mut self, hint: usize) -> Option<Field> {
        let (field, name) = FIELDS.get(hint)?;
        let n = name.len();
        let end = self.pos + 1 + n;
        if self.b.get(self.pos) == Some(&b'"')
            && self.b.get(end) == Some(&b'"')
            && same_bytes(&self.b[self.pos + 1..end], name.as_bytes())
        {
            self.pos = end + 1;
            Some(*field)
        } else {
            None
        }
    }

    /// A timestamp value `"YYYY-MM-DD HH:MM:SS"` parsed in place (no fraction); `None` and
    /// nothing consumed for anything else.
    #[inline]
    fn plain_timestamp(&mut self) -> Option<u32> {
        let end = self.pos + 20;
        if self.b.get(self.pos) != Some(&b'"') || self.b.get(end) != Some(&b'"') {
            return None;
        }
        let seconds = parse_datetime_bytes(&self.b[self.pos + 1..end]).ok()?;
        self.pos = end + 1;
        Some(seconds)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.pos..self.pos + word.len())? == word {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    /// A JSON number, strictly by the grammar.
    #[inline(always)]
    fn number(&mut self) -> Option<Scalar<'a>> {
        let start = self.pos;
        let negative = self.eat(b'-').is_some();
        let mut mantissa: u64 = 0;
        let int_digits = match self.peek()? {
            b'0' => {
                self.pos += 1;
                1
            }
            b'1'..=b'9' => self.digits(&mut mantissa),
            _ => return None,
        };
        let mut fraction_digits = 0;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            fraction_digits = self.digits(&mut mantissa);
            if fraction_digits == 0 {
                return None;
            }
        }
        let mut exponent = false;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            exponent = true;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits(&mut 0) == 0 {
                return None;
            }
        }
        let digits = int_digits + fraction_digits;
        if fraction_digits == 0 && !exponent {
            if digits > 18 {
                return self.float_slow(start);
            }
            let v = mantissa as i64;
            return Some(Scalar::Int(if negative { -v } else { v }));
        }
        if exponent || digits > 15 {
            return self.float_slow(start);
        }
        // Clinger's fast path: the mantissa (< 10^15) and the power of ten are exact doubles, so
        // one IEEE division rounds correctly, exactly as `str::parse` would.
        // `as i64` first: a signed conversion is one instruction, and mantissa < 10^15.
        let v = mantissa as i64 as f64 / POW10[fraction_digits];
        Some(Scalar::Float(if negative { -v } else { v }))
    }

    fn float_slow(&self, start: usize) -> Option<Scalar<'a>> {
        let text = std::str::from_utf8(&self.b[start..self.pos]).ok()?;
        let v: f64 = text.parse().ok()?;
        v.is_finite().then_some(Scalar::Float(v))
    }

    /// Digits, accumulated into `value` (wrapping; callers only use it when there are few).
    #[inline]
    fn digits(&mut self, value: &mut u64) -> usize {
        let start = self.pos;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            *value = value.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            self.pos += 1;
        }
        self.pos - start
    }

    #[inline(always)]
    fn scalar(&mut self) -> Option<Scalar<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Scalar::Str),
            b'n' => self.literal(b"null").map(|()| Scalar::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// Skips the value of an unknown key: scalars only (a nested value gives up).
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            _ => match self.scalar()? {
                Scalar::Str(text) => std::str::from_utf8(text).ok().map(drop),
                _ => Some(()),
            },
        }
    }
}

/// `a == b` for slices of equal length, eight bytes at a time (short keys: no `memcmp` call).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let word = |s: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(s);
        u64::from_le_bytes(w)
    };
    let mut i = 0;
    while i + 8 <= a.len() {
        if word(&a[i..i + 8]) != word(&b[i..i + 8]) {
            return false;
        }
        i += 8;
    }
    a[i..].iter().zip(&b[i..]).all(|(x, y)| x == y)
}

/// Index of the first `"`, `\\` or control character, eight bytes at a time.
#[inline]
fn special_byte(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // A byte is zero in `v` iff ... ; `v - ONES & !v & HIGHS` flags zero bytes (and may flag
        // a byte above a real hit, which is harmless: we only want the first).
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
        // Bytes below 0x20: flag bytes whose value minus 0x20 borrows.
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        let hits = zero(quote) | zero(backslash) | control;
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| i + p)
}

const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

fn float(s: Scalar<'_>) -> Option<Option<f64>> {
    match s {
        Scalar::Null => Some(None),
        Scalar::Int(v) => Some(Some(v as f64)),
        Scalar::Float(v) => Some(Some(v)),
        Scalar::Str(_) => None,
    }
}

fn int<T: TryFrom<i64>>(s: Scalar<'_>) -> Option<Option<T>> {
    match s {
        Scalar::Null => Some(None),
        Scalar::Int(v) => T::try_from(v).ok().map(Some),
        Scalar::Float(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => {
            T::try_from(v as i64).ok().map(Some)
        }
        Scalar::Float(_) | Scalar::Str(_) => None,
    }
}

fn timestamp(s: Scalar<'_>) -> Option<Option<u32>> {
    match s {
        Scalar::Null => Some(None),
        Scalar::Str(text) => parse_datetime_bytes(text).ok().map(Some),
        Scalar::Int(_) | Scalar::Float(_) => None,
    }
}

fn flag(s: Scalar<'_>) -> Option<Option<Flag>> {
    match s {
        Scalar::Null => Some(None),
        Scalar::Str(b"Y") => Some(Some(Flag::Y)),
        Scalar::Str(b"N") => Some(Some(Flag::N)),
        Scalar::Str(text) => std::str::from_utf8(text).ok().map(|t| Some(Flag::parse(t))),
        Scalar::Int(_) | Scalar::Float(_) => None,
    }
}

/// Scans a flat JSON object; `None` when the serde path must decide.
pub(crate) fn scan(payload: &[u8]) -> Option<Partial> {
    let mut s = Scanner { b: payload, pos: 0 };
    let mut p = Partial::default();
    let mut hint = 0;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.eat(b'}').is_none() {
        loop {
            let field = match s.expected_key(hint) {
                Some(field) => Some(field),
                None => {
                    let key = s.string()?;
                    let field = Field::lookup(key);
                    if field.is_none() {
                        std::str::from_utf8(key).ok()?;
                    }
                    field
                }
            };
            s.ws();
            s.eat(b':')?;
            s.ws();
            match field {
                None => s.skip()?,
                Some(Field::Pickup) if let Some(t) = s.plain_timestamp() => {
                    hint = Field::Pickup as usize + 1;
                    p.pickup = Some(t);
                }
                Some(Field::Dropoff) if let Some(t) = s.plain_timestamp() => {
                    hint = Field::Dropoff as usize + 1;
                    p.dropoff = Some(t);
                }
                Some(field) => {
                    hint = field as usize + 1;
                    let v = s.scalar()?;
                    match field {
                        Field::VendorId => p.vendor_id = int(v)?,
                        Field::Pickup => p.pickup = timestamp(v)?,
                        Field::Dropoff => p.dropoff = timestamp(v)?,
                        Field::PassengerCount => p.passenger_count = int(v)?,
                        Field::TripDistance => p.trip_distance = float(v)?,
                        Field::RatecodeId => p.ratecode_id = int(v)?,
                        Field::StoreAndFwdFlag => p.store_and_fwd_flag = flag(v)?,
                        Field::PuLocationId => p.pu_location_id = int(v)?,
                        Field::DoLocationId => p.do_location_id = int(v)?,
                        Field::PaymentType => p.payment_type = int(v)?,
                        Field::FareAmount => p.fare_amount = float(v)?,
                        Field::Extra => p.extra = float(v)?,
                        Field::MtaTax => p.mta_tax = float(v)?,
                        Field::TipAmount => p.tip_amount = float(v)?,
                        Field::TollsAmount => p.tolls_amount = float(v)?,
                        Field::ImprovementSurcharge => p.improvement_surcharge = float(v)?,
                        Field::TotalAmount => p.total_amount = float(v)?,
                        Field::CongestionSurcharge => p.congestion_surcharge = float(v)?,
                        Field::AirportFee => p.airport_fee = float(v)?,
                        Field::CbdCongestionFee => p.cbd_congestion_fee = float(v)?,
                    }
                }
            }
            s.ws();
            match s.peek()? {
                b',' => {
                    s.pos += 1;
                    s.ws();
                }
                b'}' => {
                    s.pos += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    s.ws();
    (s.pos == payload.len()).then_some(p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn scans_sample_row() {
        let row = br#"{"VendorID":2,"tpep_pickup_datetime":"2023-01-01 00:32:10","tpep_dropoff_datetime":"2023-01-01 00:40:36","passenger_count":1.0,"trip_distance":0.97,"RatecodeID":1.0,"store_and_fwd_flag":"N","PULocationID":161,"DOLocationID":141,"payment_type":2,"fare_amount":9.3,"extra":1.0,"mta_tax":0.5,"tip_amount":0.0,"tolls_amount":0.0,"improvement_surcharge":1.0,"total_amount":14.3,"congestion_surcharge":2.5,"airport_fee":0.0}"#;
        assert!(super::scan(row).is_some());
    }
}
