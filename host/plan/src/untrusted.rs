//! Text a policy wrote (a declared error, its stdout/stderr, a filesystem
//! type echoed in a refusal), made fit for a gRPC status, a log line or the
//! harness's report: control characters (and the Unicode marks that reorder
//! a line on a terminal) are escaped, and the result is capped at
//! [`MAX_POLICY_TEXT`] bytes. A policy is untrusted: without this a 40 MB
//! message becomes a 40 MB status, and an ESC sequence or a newline in it
//! forges terminal output or log lines. Every such string passes through
//! [`untrusted`] once, where it enters the host.

use std::fmt::Write as _;

/// Bytes of escaped text kept of one string from a policy.
pub const MAX_POLICY_TEXT: usize = 1024;

/// `text` with control and bidirectional-format characters escaped
/// (`\n`, `\t`, `\u{1b}`, ...) and cut at [`MAX_POLICY_TEXT`] bytes, a cut
/// saying so and how long the original was: `... (truncated, N bytes)`.
pub fn untrusted(text: &str) -> String {
    // Most messages are short and plain: no work beyond one scan.
    if text.len() <= MAX_POLICY_TEXT && !text.chars().any(needs_escape) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len().min(MAX_POLICY_TEXT) + 32);
    let mut piece = String::new();
    for ch in text.chars() {
        piece.clear();
        push_escaped(&mut piece, ch);
        if out.len() + piece.len() > MAX_POLICY_TEXT {
            let _ = write!(out, "... (truncated, {} bytes)", text.len());
            return out;
        }
        out.push_str(&piece);
    }
    out
}

/// [`untrusted`], but keeping the end of `text` (where a panic message is):
/// `(truncated, N bytes) ...` then the last [`MAX_POLICY_TEXT`] escaped bytes.
pub fn untrusted_tail(text: &str) -> String {
    if text.len() <= MAX_POLICY_TEXT && !text.chars().any(needs_escape) {
        return text.to_owned();
    }
    let mut pieces: Vec<String> = Vec::new();
    let mut kept = 0;
    let mut piece = String::new();
    for ch in text.chars().rev() {
        piece.clear();
        push_escaped(&mut piece, ch);
        if kept + piece.len() > MAX_POLICY_TEXT {
            let mut out = format!("(truncated, {} bytes) ...", text.len());
            out.extend(pieces.iter().rev().map(String::as_str));
            return out;
        }
        kept += piece.len();
        pieces.push(piece.clone());
    }
    pieces.iter().rev().map(String::as_str).collect()
}

/// Characters that must not reach a terminal or a log line as they are:
/// C0/C1 controls (newlines, ESC, DEL) and the invisible marks that
/// reorder or hide text (bidi overrides, zero-width, BOM).
fn needs_escape(ch: char) -> bool {
    ch.is_control()
        || matches!(ch, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn push_escaped(out: &mut String, ch: char) {
    match ch {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_short_text_is_unchanged() {
        assert_eq!(
            untrusted("unsupported: no overlay on this host"),
            "unsupported: no overlay on this host"
        );
        assert_eq!(untrusted("é ü 字 \"quoted\""), "é ü 字 \"quoted\"");
    }

    #[test]
    fn controls_and_bidi_marks_are_escaped() {
        assert_eq!(
            untrusted("a\nb\r\tc\u{1b}[31mred\u{7f}\u{9b}\u{202e}gnp.exe\0"),
            "a\\nb\\r\\tc\\u{1b}[31mred\\u{7f}\\u{9b}\\u{202e}gnp.exe\\u{0}"
        );
    }

    #[test]
    fn long_text_is_cut_and_says_how_long_it_was() {
        let text = "x".repeat(40 << 20);
        let out = untrusted(&text);
        assert_eq!(out, format!("{}... (truncated, {} bytes)", "x".repeat(1024), 40 << 20));
    }

    #[test]
    fn the_tail_keeps_the_end() {
        let text = format!("{}\u{1b}[31mpanicked: boom", "y".repeat(5000));
        let out = untrusted_tail(&text);
        assert!(out.starts_with(&format!("(truncated, {} bytes) ...yyy", text.len())), "{out}");
        assert!(out.ends_with("yyy\\u{1b}[31mpanicked: boom"), "{out}");
        assert_eq!(out.len(), "(truncated, 5019 bytes) ...".len() + MAX_POLICY_TEXT);
        assert_eq!(untrusted_tail("short\n"), "short\\n");
    }

    #[test]
    fn the_cap_counts_escaped_bytes_and_never_splits_a_character() {
        let out = untrusted(&"\u{1b}".repeat(1000));
        let kept = out.split("...").next().unwrap();
        assert!(kept.len() <= MAX_POLICY_TEXT, "{}", kept.len());
        assert_eq!(kept, "\\u{1b}".repeat(MAX_POLICY_TEXT / 6));
        assert!(out.ends_with("... (truncated, 1000 bytes)"), "{out}");
        let out = untrusted(&"字".repeat(1000));
        assert!(out.starts_with(&"字".repeat(341)) && out.ends_with("(truncated, 3000 bytes)"));
    }
}
