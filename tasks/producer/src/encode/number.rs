//! Numbers as JSON into a growable buffer (the slow path and the reference for [`super::slot`]):
//! integers through `itoa`, floats through the exact two-decimal fast path or `ryu`; non-finite
//! floats become `null`, decimals keep their scale.

use super::slot::{SLOT, put_f64_cents};

/// Writes an `f64` as a JSON number that parses back to the same value, or `null` when it is NaN
/// or infinite.
///
/// Values that are exactly `n / 100` for an integer `n` below 2^53 are written as `I.F` with one
/// or two decimals (`1.0`, `2.5`, `14.35`): parsing that decimal text yields the correctly
/// rounded value of `n / 100`, which is what the division produced, so the round trip is exact.
/// Everything else goes through `ryu` (shortest round-trip form).
pub fn write_f64(out: &mut Vec<u8>, x: f64) {
    if !x.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let mut slot = [0u8; SLOT];
    match put_f64_cents(&mut slot, x) {
        Some(n) => out.extend_from_slice(&slot[..n]),
        None => out.extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes()),
    }
}

/// Writes an `f32` in its own shortest form (`0.1`, not `0.10000000149011612`), `null` when not
/// finite.
pub fn write_f32(out: &mut Vec<u8>, x: f32) {
    if x.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Writes an integer.
pub fn write_int<I: itoa::Integer>(out: &mut Vec<u8>, v: I) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Writes a decimal stored as `unscaled * 10^-scale` as a JSON number (`12.30` for 1230 at scale
/// 2). A negative scale multiplies (`1230` at scale -1 is `12300`).
pub fn write_decimal(out: &mut Vec<u8>, unscaled: i128, scale: i8) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(unscaled.unsigned_abs()).as_bytes();
    if unscaled < 0 {
        out.push(b'-');
    }
    if scale <= 0 {
        out.extend_from_slice(digits);
        if unscaled != 0 {
            out.extend(std::iter::repeat_n(b'0', scale.unsigned_abs() as usize));
        }
        return;
    }
    let scale = scale as usize;
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f64) -> String {
        let mut out = Vec::new();
        write_f64(&mut out, x);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn money_and_whole_values_take_the_short_path() {
        assert_eq!(f(0.0), "0.0");
        assert_eq!(f(1.0), "1.0");
        assert_eq!(f(2.5), "2.5");
        assert_eq!(f(14.35), "14.35");
        assert_eq!(f(0.97), "0.97");
        assert_eq!(f(-3.05), "-3.05");
        assert_eq!(f(-0.5), "-0.5");
        assert_eq!(f(-0.0), "-0.0");
        assert_eq!(f(1e15), "1000000000000000.0");
    }

    #[test]
    fn other_values_round_trip_through_ryu() {
        assert_eq!(f(0.125), "0.125");
        assert_eq!(f(1e300), "1e300");
        assert_eq!(f(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(f(f64::NAN), "null");
        assert_eq!(f(f64::INFINITY), "null");
        assert_eq!(f(f64::NEG_INFINITY), "null");
    }

    #[test]
    fn every_output_parses_back_to_the_same_value() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..200_000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let x = match i % 4 {
                0 => (state >> 40) as f64 / 100.0,
                1 => -((state >> 44) as f64) / 100.0,
                2 => f64::from_bits(state),
                _ => (state >> 11) as f64 * 1e-3,
            };
            if !x.is_finite() {
                continue;
            }
            let text = f(x);
            let back: f64 = text.parse().unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x:?} written as {text}");
            serde_json::from_str::<serde_json::Value>(&text).unwrap();
        }
    }

    #[test]
    fn f32_is_shortest_in_its_own_precision() {
        let mut out = Vec::new();
        write_f32(&mut out, 0.1);
        out.push(b' ');
        write_f32(&mut out, f32::NAN);
        assert_eq!(out, b"0.1 null");
    }

    #[test]
    fn decimals_keep_their_scale() {
        let d = |v: i128, s: i8| {
            let mut out = Vec::new();
            write_decimal(&mut out, v, s);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(d(1230, 2), "12.30");
        assert_eq!(d(-5, 3), "-0.005");
        assert_eq!(d(0, 2), "0.00");
        assert_eq!(d(7, 0), "7");
        assert_eq!(d(123, -2), "12300");
        assert_eq!(d(0, -2), "0");
    }
}
