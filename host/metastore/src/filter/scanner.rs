//! The tokenizer of containerd's filter language (`filters/scanner.go`),
//! reproduced rune for rune so that the same inputs are accepted and the same
//! positions reported. Positions are byte offsets into the filter string.

use std::sync::LazyLock;

use regex::Regex;

/// One step of input: a character, the end, or a character the language
/// refuses outright (NUL, U+FFFD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ch {
    Char(char),
    Eof,
    Illegal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Token {
    Eof,
    Quoted,
    Value,
    Field,
    Separator,
    Operator,
    Illegal,
    /// A character that starts no token where it stands.
    Other(char),
}

pub(super) struct Scanner<'a> {
    input: &'a str,
    /// Start of the current character.
    pub pos: usize,
    /// End of the current character: where the next one starts.
    pub ppos: usize,
    /// After an operator, the next token is a value.
    value: bool,
    /// The first problem met (sticky, as in containerd).
    pub err: &'static str,
}

impl<'a> Scanner<'a> {
    pub fn new(input: &'a str) -> Self {
        Scanner { input, pos: 0, ppos: 0, value: false, err: "" }
    }

    pub fn next(&mut self) -> Ch {
        if self.pos >= self.input.len() {
            return Ch::Eof;
        }
        self.pos = self.ppos;
        let Some(c) = self.input[self.ppos..].chars().next() else {
            return Ch::Eof;
        };
        self.ppos += c.len_utf8();
        match c {
            // Go decodes bad UTF-8 to U+FFFD and cannot tell the two apart.
            '\u{FFFD}' => {
                self.error("rune error");
                Ch::Illegal
            }
            '\0' => {
                self.error("unexpected null");
                Ch::Illegal
            }
            c => Ch::Char(c),
        }
    }

    pub fn peek(&mut self) -> Ch {
        let (pos, ppos) = (self.pos, self.ppos);
        let ch = self.next();
        self.pos = pos;
        self.ppos = ppos;
        ch
    }

    /// The next token: its start, kind and text.
    pub fn scan(&mut self) -> (usize, Token, &'a str) {
        let mut ch = self.next();
        let mut pos = self.pos;
        while let Ch::Char(c) = ch {
            if is_quote(c) {
                let ok = self.scan_quoted(c);
                let text = &self.input[pos..self.ppos];
                return (pos, if ok { Token::Quoted } else { Token::Illegal }, text);
            }
            if is_separator(c) {
                self.value = false;
                return (pos, Token::Separator, &self.input[pos..self.ppos]);
            }
            if is_operator(c) {
                self.scan_while(is_operator);
                self.value = true;
                return (pos, Token::Operator, &self.input[pos..self.ppos]);
            }
            if c.is_whitespace() {
                ch = self.next();
                pos = self.pos;
                continue;
            }
            if self.value {
                self.scan_while(is_value_char);
                self.value = false;
                return (pos, Token::Value, &self.input[pos..self.ppos]);
            }
            if is_field_char(c) {
                self.scan_while(is_field_char);
                return (pos, Token::Field, &self.input[pos..self.ppos]);
            }
            break;
        }
        let token = match ch {
            Ch::Eof => Token::Eof,
            Ch::Illegal => Token::Illegal,
            Ch::Char(c) => Token::Other(c),
        };
        (self.pos, token, "")
    }

    fn scan_while(&mut self, accept: impl Fn(char) -> bool) {
        while let Ch::Char(c) = self.peek() {
            if !accept(c) {
                break;
            }
            self.next();
        }
    }

    /// Consumes a quoted literal up to its closing `quote`; false if it is
    /// unterminated or holds a bad escape.
    fn scan_quoted(&mut self, quote: char) -> bool {
        let mut illegal = false;
        let mut ch = self.next();
        while ch != Ch::Char(quote) {
            match ch {
                Ch::Char('\n') | Ch::Eof | Ch::Illegal => {
                    self.error("quoted literal not terminated");
                    return false;
                }
                Ch::Char('\\') => {
                    let (after, legal) = self.scan_escape(quote);
                    ch = after;
                    illegal |= !legal;
                }
                Ch::Char(_) => ch = self.next(),
            }
        }
        !illegal
    }

    /// After a backslash: consumes the escape; returns the character after it.
    fn scan_escape(&mut self, quote: char) -> (Ch, bool) {
        let ch = self.next();
        match ch {
            Ch::Char('a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\') => (self.next(), true),
            Ch::Char(c) if c == quote => (self.next(), true),
            Ch::Char('0'..='7') => self.scan_digits(ch, 8, 3),
            Ch::Char('x') => {
                let first = self.next();
                self.scan_digits(first, 16, 2)
            }
            Ch::Char('u') => {
                let first = self.next();
                self.scan_digits(first, 16, 4)
            }
            Ch::Char('U') => {
                let first = self.next();
                self.scan_digits(first, 16, 8)
            }
            _ => {
                self.error("illegal escape sequence");
                (ch, false)
            }
        }
    }

    fn scan_digits(&mut self, mut ch: Ch, base: u32, mut n: u32) -> (Ch, bool) {
        while n > 0 && digit_value(ch) < base {
            ch = self.next();
            n -= 1;
        }
        if n > 0 {
            self.error("illegal numeric escape sequence");
            return (ch, false);
        }
        (ch, true)
    }

    fn error(&mut self, msg: &'static str) {
        if self.err.is_empty() {
            self.err = msg;
        }
    }
}

fn digit_value(ch: Ch) -> u32 {
    match ch {
        Ch::Char(c) => c.to_digit(16).unwrap_or(16),
        _ => 16,
    }
}

fn is_field_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn is_operator(c: char) -> bool {
    matches!(c, '=' | '!' | '~')
}

fn is_quote(c: char) -> bool {
    matches!(c, '/' | '|' | '"')
}

fn is_separator(c: char) -> bool {
    matches!(c, ',' | '.')
}

/// Go's `isValueRune`: a graphic character (Unicode categories L, M, N, P,
/// S, Zs) that is neither a space nor a comma.
fn is_value_char(c: char) -> bool {
    if c == ',' || c.is_whitespace() {
        return false;
    }
    if c.is_ascii() {
        return c.is_ascii_graphic();
    }
    static GRAPHIC: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^[\p{L}\p{M}\p{N}\p{P}\p{S}\p{Zs}]$").expect("a valid class")
    });
    let mut buf = [0u8; 4];
    GRAPHIC.is_match(c.encode_utf8(&mut buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: &str) -> Vec<(usize, Token, String)> {
        let mut s = Scanner::new(input);
        let mut out = Vec::new();
        loop {
            let (pos, tok, text) = s.scan();
            out.push((pos, tok, text.to_owned()));
            if matches!(tok, Token::Eof | Token::Illegal) {
                return out;
            }
        }
    }

    #[test]
    fn tokenizes_a_remote_snapshot_lookup() {
        let got = tokens(r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="sha256:def""#);
        let kinds: Vec<Token> = got.iter().map(|t| t.1).collect();
        use Token::*;
        assert_eq!(
            kinds,
            [Field, Separator, Quoted, Operator, Value, Separator, Field, Operator, Quoted, Eof]
        );
        assert_eq!(got[4].2, "sha256:abc");
        assert_eq!(got[2].0, 7);
    }

    #[test]
    fn a_value_may_hold_operators_and_dots_but_not_commas_or_spaces() {
        let got = tokens("a==b=c.d!e,f");
        assert_eq!(got[2], (3, Token::Value, "b=c.d!e".into()));
        let got = tokens("a== x y");
        assert_eq!(got[2], (4, Token::Value, "x".into()));
        assert_eq!(got[3], (6, Token::Field, "y".into()));
    }

    #[test]
    fn illegal_characters_and_quotes() {
        let got = tokens("a\0");
        assert_eq!(got.last().unwrap().1, Token::Illegal);
        let mut s = Scanner::new(r#""abc"#);
        assert_eq!(s.scan().1, Token::Illegal);
        assert_eq!(s.err, "quoted literal not terminated");
        let mut s = Scanner::new(r"/\d/");
        assert_eq!(s.scan().1, Token::Illegal);
        assert_eq!(s.err, "illegal escape sequence");
        let mut s = Scanner::new(r#""\x4""#);
        assert_eq!(s.scan().1, Token::Illegal);
        assert_eq!(s.err, "illegal numeric escape sequence");
        let mut s = Scanner::new(r#""\x41\u00e9\101\"""#);
        assert_eq!(s.scan().1, Token::Quoted);
    }

    #[test]
    fn value_characters_follow_go() {
        for c in ['a', '9', ':', '/', 'é', '中', '€', '\u{0301}'] {
            assert!(is_value_char(c), "{c:?}");
        }
        for c in [',', ' ', '\t', '\u{a0}', '\u{1}', '\u{200b}', '\u{e000}', '\u{2028}'] {
            assert!(!is_value_char(c), "{c:?}");
        }
    }
}
