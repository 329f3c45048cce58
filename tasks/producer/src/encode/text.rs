//! JSON string escaping into a byte buffer, with a fast path for strings that need none (almost
//! every value in practice: flags like `N`, zone names).

/// For each byte, the escape it needs: 0 for none, `u` for `\u00XX`, else the letter after `\`.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `s` as a quoted JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_escaped(out, s.as_bytes());
    out.push(b'"');
}

/// Writes the escaped content of a string (no quotes). `bytes` must be UTF-8; multi-byte
/// characters pass through unchanged, as JSON allows.
pub fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if esc == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.push(b'\\');
            out.push(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_requires_and_nothing_else() {
        let cases = [
            "N",
            "",
            "a \"quoted\" \\ back",
            "line\nbreak\ttab\r\u{8}\u{c}",
            "\u{1}\u{1f}",
            "ünïcödé ✓ 🚕",
            "</script>",
        ];
        for s in cases {
            let mut out = Vec::new();
            write_str(&mut out, s);
            let text = String::from_utf8(out).unwrap();
            let back: String = serde_json::from_str(&text).unwrap();
            assert_eq!(back, s, "{text}");
        }
        let mut out = Vec::new();
        write_str(&mut out, "\u{1}");
        assert_eq!(out, b"\"\\u0001\"");
    }
}
