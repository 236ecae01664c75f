//! Decoding a quoted literal as containerd does (`filters/quote.go`: Go's
//! `strconv.Unquote`, with `/` and `|` also allowed as double quotes). The
//! scanner only ever quotes with `"`, `/` or `|`, so Go's single-quoted and
//! backquoted forms are left out.
//! The result is bytes: `\x..` and octal escapes may produce bytes that are
//! not UTF-8, which then simply match nothing (as in Go).

/// The literal `s`, quotes included, decoded; `None` on a syntax error.
pub(super) fn unquote(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let (&quote, _) = bytes.split_first()?;
    if bytes.len() < 2 || bytes[bytes.len() - 1] != quote {
        return None;
    }
    let inner = &s[1..s.len() - 1];
    if !matches!(quote, b'"' | b'|' | b'/') || inner.contains('\n') {
        return None;
    }
    if !inner.contains('\\') && !inner.as_bytes().contains(&quote) {
        return Some(inner.as_bytes().to_vec());
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut rest = inner;
    while !rest.is_empty() {
        rest = unquote_char(rest, quote, &mut out)?;
    }
    Some(out)
}

/// Decodes the first (possibly escaped) character of `s` into `out`;
/// returns the rest.
fn unquote_char<'a>(s: &'a str, quote: u8, out: &mut Vec<u8>) -> Option<&'a str> {
    let bytes = s.as_bytes();
    let c = bytes[0];
    if c == quote {
        return None;
    }
    if c != b'\\' {
        let ch = s.chars().next()?;
        let len = ch.len_utf8();
        out.extend_from_slice(&bytes[..len]);
        return Some(&s[len..]);
    }
    let (&escape, _) = bytes.get(1..)?.split_first()?;
    if !escape.is_ascii() {
        return None; // no escape starts with a non-ASCII character
    }
    let rest = &s[2..];
    let simple = match escape {
        b'a' => Some(0x07),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(0x0b),
        b'\\' => Some(b'\\'),
        b'\'' | b'"' | b'|' | b'/' if escape == quote => Some(escape),
        _ => None,
    };
    if let Some(byte) = simple {
        out.push(byte);
        return Some(rest);
    }
    match escape {
        b'x' | b'u' | b'U' => {
            let digits = match escape {
                b'x' => 2,
                b'u' => 4,
                _ => 8,
            };
            let hex = rest.get(..digits)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let value = u32::from_str_radix(hex, 16).ok()?;
            if escape == b'x' {
                out.push(value as u8); // one byte, UTF-8 or not
            } else {
                if value > 0x10FFFF {
                    return None;
                }
                // Go encodes a surrogate as U+FFFD.
                let ch = char::from_u32(value).unwrap_or('\u{FFFD}');
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            }
            Some(&rest[digits..])
        }
        b'0'..=b'7' => {
            let more = rest.get(..2)?;
            if !more.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return None;
            }
            let value =
                more.bytes().fold(u32::from(escape - b'0'), |v, b| (v << 3) | u32::from(b - b'0'));
            if value > 255 {
                return None;
            }
            out.push(value as u8);
            Some(&rest[2..])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_go() {
        let ok: &[(&str, &[u8])] = &[
            (r#""""#, b""),
            (r#""plain""#, b"plain"),
            (r#""a\"b\\c""#, b"a\"b\\c"),
            (r#""\a\b\f\n\r\t\v""#, b"\x07\x08\x0c\n\r\t\x0b"),
            (r#""\x41\101\u00e9\U0001F600""#, "AAé😀".as_bytes()),
            (r#""\xff""#, b"\xff"),
            (r#""\377""#, b"\xff"),
            (r#""\ud800""#, "\u{FFFD}".as_bytes()),
            (r"/a\/b/", b"a/b"),
            (r"|a\|b|", b"a|b"),
            (r#"/a"b/"#, b"a\"b"),
            ("\"é\"", "é".as_bytes()),
        ];
        for (input, want) in ok {
            assert_eq!(unquote(input).as_deref(), Some(*want), "{input}");
        }
        let bad = [
            r#"""#,
            r#""abc"#,
            r#""a\"#,
            r#""\q""#,
            r#""\/""#,
            r"/\|/",
            r#""\400""#,
            r#""\x4""#,
            r#""\u12""#,
            r#""\U00110000""#,
            "\"a\nb\"",
            r#""a"b""#,
            "'x'",
            "`x`",
            "x",
            "",
            "\"\\é\"",
        ];
        for input in bad {
            assert_eq!(unquote(input), None, "{input}");
        }
    }
}
