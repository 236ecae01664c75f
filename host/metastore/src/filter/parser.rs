//! The grammar of one filter string (`filters/parser.go`):
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath (operator value)?
//! fieldpath := field ("." field)*
//! field     := quoted | [A-Za-z0-9_]+
//! operator  := "==" | "!=" | "~="
//! value     := quoted | [^\s,]+
//! ```
//!
//! Field paths may only be quoted with `"`; a value after `~=` may also be
//! quoted with `/.../` or `|...|`.

use super::scanner::{Ch, Scanner, Token};
use super::unquote::unquote;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Operator {
    Present,
    Equal,
    NotEqual,
    Matches,
}

/// One `<fieldpath><op><value>` as written, quotes decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RawSelector {
    pub path: Vec<Vec<u8>>,
    pub operator: Operator,
    pub value: Vec<u8>,
    /// Where the value starts, for errors found after parsing.
    pub value_pos: usize,
}

/// A parse failure: where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ParseError {
    pub pos: usize,
    pub message: String,
}

type Result<T> = std::result::Result<T, ParseError>;

/// Parses a non-empty filter string into the selectors it ANDs together.
pub(super) fn parse(input: &str) -> Result<Vec<RawSelector>> {
    Parser { scanner: Scanner::new(input) }.selectors()
}

struct Parser<'a> {
    scanner: Scanner<'a>,
}

fn err<T>(pos: usize, message: impl Into<String>) -> Result<T> {
    Err(ParseError { pos, message: message.into() })
}

impl Parser<'_> {
    fn selectors(&mut self) -> Result<Vec<RawSelector>> {
        let mut selectors = vec![self.selector()?];
        loop {
            match self.scanner.peek() {
                Ch::Char(',') => {
                    let (pos, token, _) = self.scanner.scan();
                    if token != Token::Separator {
                        return err(pos, "expected a separator");
                    }
                    selectors.push(self.selector()?);
                }
                Ch::Eof => return Ok(selectors),
                other => {
                    let shown = match other {
                        Ch::Char(c) => format!("{c:?}"),
                        _ => "an illegal character".to_owned(),
                    };
                    return err(
                        self.scanner.ppos,
                        format!("unexpected input {shown}: expected \",\" or the end"),
                    );
                }
            }
        }
    }

    fn selector(&mut self) -> Result<RawSelector> {
        let path = self.fieldpath()?;
        if matches!(self.scanner.peek(), Ch::Char(',') | Ch::Eof) {
            return Ok(RawSelector {
                path,
                operator: Operator::Present,
                value: Vec::new(),
                value_pos: 0,
            });
        }
        let operator = self.operator()?;
        let (value_pos, value) = self.value(operator == Operator::Matches)?;
        Ok(RawSelector { path, operator, value, value_pos })
    }

    fn fieldpath(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut path = vec![self.field()?];
        while self.scanner.peek() == Ch::Char('.') {
            let (pos, token, _) = self.scanner.scan();
            if token != Token::Separator {
                return err(pos, "expected a field separator (\".\")");
            }
            path.push(self.field()?);
        }
        Ok(path)
    }

    fn field(&mut self) -> Result<Vec<u8>> {
        let (pos, token, text) = self.scanner.scan();
        match token {
            Token::Field => Ok(text.as_bytes().to_vec()),
            Token::Quoted => self.unquote(pos, text, false),
            Token::Illegal => self.illegal(pos),
            _ => err(pos, "expected a field name or a quoted field"),
        }
    }

    fn operator(&mut self) -> Result<Operator> {
        let (pos, token, text) = self.scanner.scan();
        match token {
            Token::Operator => match text {
                "==" => Ok(Operator::Equal),
                "!=" => Ok(Operator::NotEqual),
                "~=" => Ok(Operator::Matches),
                _ => err(
                    pos,
                    format!("unsupported operator {text:?}: expected \"==\", \"!=\" or \"~=\""),
                ),
            },
            Token::Illegal => self.illegal(pos),
            _ => err(pos, "expected an operator (\"==\", \"!=\" or \"~=\")"),
        }
    }

    fn value(&mut self, allow_alt_quotes: bool) -> Result<(usize, Vec<u8>)> {
        let (pos, token, text) = self.scanner.scan();
        match token {
            Token::Value | Token::Field => Ok((pos, text.as_bytes().to_vec())),
            Token::Quoted => Ok((pos, self.unquote(pos, text, allow_alt_quotes)?)),
            Token::Illegal => self.illegal(pos),
            _ => err(pos, "expected a value or a quoted value"),
        }
    }

    /// The scanner refused the input at `pos`; it says why.
    fn illegal<T>(&self, pos: usize) -> Result<T> {
        let why = if self.scanner.err.is_empty() { "illegal input" } else { self.scanner.err };
        err(pos, why)
    }

    fn unquote(&self, pos: usize, text: &str, allow_alt_quotes: bool) -> Result<Vec<u8>> {
        if !allow_alt_quotes && !text.starts_with('"') {
            return err(
                pos,
                "invalid quote: only \"...\" quotes here (/.../ and |...| only after ~=)",
            );
        }
        unquote(text).map_or_else(|| err(pos, "bad quoted string"), Ok)
    }
}
