//! Fixed-size windows: a value is written into the 32-byte window of the output that starts
//! where it goes (the output always keeps a window of room past the end), so that copies are of
//! a constant 32 bytes (two vector moves, no `memcpy` call) and the position then advances by
//! the real length. Values longer than a window (long strings, escapes, decimals) take a slow
//! path.
//!
//! The writers here format straight into a window with table lookups: no intermediate buffer.

/// Bytes per slot. Every taxi value fits: the longest is a quoted timestamp with a fraction (28).
pub const SLOT: usize = 32;

/// One value's bytes.
pub type Slot = [u8; SLOT];

/// Two ASCII digits for every number below 100.
pub const DIGITS2: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes the two digits of `n % 100` at `at`.
#[inline]
pub fn put2(slot: &mut Slot, at: usize, n: u32) {
    let i = (n as usize % 100) * 2;
    slot[at] = DIGITS2[i];
    slot[at + 1] = DIGITS2[i + 1];
}

/// Decimal digits of `n`.
#[inline]
fn digit_count(n: u64) -> usize {
    match n.checked_ilog10() {
        Some(l) => l as usize + 1,
        None => 1,
    }
}

/// Writes `n` at `at` (at most 20 digits, so `at` must be at most 12); returns the end.
#[inline(always)]
pub fn put_u64(slot: &mut Slot, at: usize, n: u64) -> usize {
    // Ids, counts and the integer part of amounts are small: straight-line paths for them.
    if n < 10 {
        slot[at] = b'0' + n as u8;
        at + 1
    } else if n < 100 {
        put2(slot, at, n as u32);
        at + 2
    } else if n < 1000 {
        slot[at] = b'0' + (n / 100) as u8;
        put2(slot, at + 1, (n % 100) as u32);
        at + 3
    } else {
        put_u64_long(slot, at, n)
    }
}

#[inline(never)]
fn put_u64_long(slot: &mut Slot, at: usize, mut n: u64) -> usize {
    let end = at + digit_count(n);
    let mut i = end;
    while n >= 100 {
        let r = (n % 100) as u32;
        n /= 100;
        i -= 2;
        put2(slot, i, r);
    }
    if n >= 10 {
        put2(slot, i - 2, n as u32);
    } else {
        slot[i - 1] = b'0' + n as u8;
    }
    end
}

/// Writes `n` with its sign at 0; returns the length.
#[inline]
pub fn put_i64(slot: &mut Slot, n: i64) -> usize {
    if n < 0 {
        slot[0] = b'-';
        put_u64(slot, 1, n.unsigned_abs())
    } else {
        put_u64(slot, 0, n as u64)
    }
}

/// Writes an `f64` that is exactly `n / 100` for an integer `n` below 2^53 as `I.F` (one or two
/// decimals), returning the length, or `None` for other values (the caller falls back to `ryu`).
///
/// Parsing that decimal text yields the correctly rounded value of `n / 100`, which is what the
/// division produced, so the round trip is exact.
#[inline]
pub fn put_f64_cents(slot: &mut Slot, x: f64) -> Option<usize> {
    let scaled = x * 100.0;
    // Round half away from zero without calling libm (`round` is not inlined on baseline x86-64).
    let bias = if scaled < 0.0 { -0.5 } else { 0.5 };
    let cents = (scaled + bias) as i64;
    if !(cents.unsigned_abs() < (1u64 << 53) && cents as f64 / 100.0 == x) {
        return None;
    }
    let mut at = 0;
    if x.is_sign_negative() {
        slot[0] = b'-';
        at = 1;
    }
    let cents = cents.unsigned_abs();
    at = put_u64(slot, at, cents / 100);
    let frac = (cents % 100) as u8;
    slot[at] = b'.';
    slot[at + 1] = b'0' + frac / 10;
    if frac.is_multiple_of(10) {
        Some(at + 2)
    } else {
        slot[at + 2] = b'0' + frac % 10;
        Some(at + 3)
    }
}

/// Copies `bytes` into the start of `slot` if they fit.
#[inline]
pub fn put_bytes(slot: &mut Slot, bytes: &[u8]) -> Option<usize> {
    let dst = slot.get_mut(..bytes.len())?;
    dst.copy_from_slice(bytes);
    Some(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Slot) -> usize) -> String {
        let mut slot = [0u8; SLOT];
        let n = f(&mut slot);
        String::from_utf8(slot[..n].to_vec()).unwrap()
    }

    #[test]
    fn integers_match_std() {
        let mut cases = vec![
            0i64,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            i64::MAX,
            i64::MIN,
            -1,
            -10,
        ];
        let mut x = 1i64;
        for _ in 0..18 {
            x *= 10;
            cases.extend([x - 1, x, x + 1, -x]);
        }
        for n in cases {
            assert_eq!(text(|s| put_i64(s, n)), n.to_string());
        }
        assert_eq!(text(|s| put_u64(s, 0, u64::MAX)), u64::MAX.to_string());
    }

    #[test]
    fn cents_fast_path_matches_the_vec_writer_and_round_trips() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut fast = 0;
        for i in 0..300_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = match i % 3 {
                0 => (state >> 44) as f64 / 100.0 - 1000.0,
                1 => f64::from_bits(state),
                _ => (state >> 20) as f64 / 100.0,
            };
            if !x.is_finite() {
                continue;
            }
            let mut slot = [0u8; SLOT];
            if let Some(n) = put_f64_cents(&mut slot, x) {
                fast += 1;
                let s = std::str::from_utf8(&slot[..n]).unwrap();
                assert_eq!(
                    s.parse::<f64>().unwrap().to_bits(),
                    x.to_bits(),
                    "{x:?} as {s}"
                );
                let mut v = Vec::new();
                crate::encode::number::write_f64(&mut v, x);
                assert_eq!(s.as_bytes(), v, "{x:?}");
            }
        }
        assert!(fast > 150_000, "{fast}");
        assert_eq!(text(|s| put_f64_cents(s, -0.0).unwrap()), "-0.0");
        assert_eq!(text(|s| put_f64_cents(s, 14.3).unwrap()), "14.3");
        assert_eq!(text(|s| put_f64_cents(s, -3.05).unwrap()), "-3.05");
        assert!(put_f64_cents(&mut [0; SLOT], 0.125).is_none());
        assert!(put_f64_cents(&mut [0; SLOT], 1e300).is_none());
    }
}
