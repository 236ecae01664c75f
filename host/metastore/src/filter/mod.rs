//! containerd's filter language, as List takes it (`filters/` and the
//! snapshot adaptor of `snapshots/storage/bolt.go`).
//!
//! A filter is `<fieldpath>[<op><value>]` selectors joined by `,` (AND);
//! several filter strings are ORed; none (or an empty one) matches all.
//! Operators: `==`, `!=`, `~=` (regular expression, unanchored), none for
//! presence. Fields: `name`, `parent`, `kind` (`active`, `view`,
//! `committed`), `labels.<key>` (the key is the rest of the path joined by
//! `.`, so `labels.a.b` is label `a.b`). Field names and values may be
//! quoted (`labels."containerd.io/gc.root"`, `parent!=""`); unquoted values
//! run to the next `,` or space, so `==sha256:abc` needs no quotes.
//!
//! As in containerd: `name`, `parent` and `kind` are always present (an
//! absent parent reads as `""`); `!=` and `~=` see an absent label as `""`;
//! unknown fields are absent. One difference: an invalid regular expression
//! is an error here (containerd quietly matches nothing with it), and `~=`
//! uses Rust's `regex` syntax, which is RE2's as Go's is, except that `\d`,
//! `\w`, `\s` also match non-ASCII characters.

mod parser;
mod scanner;
mod unquote;

use std::fmt;

use regex::{Regex, RegexBuilder};

use crate::record::{Kind, Record};
use parser::{Operator, RawSelector};

/// A compiled filter; [`Filter::default`] matches everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Any of these conjunctions; `None`: match all.
    any: Option<Vec<Vec<Selector>>>,
}

#[derive(Clone, Debug)]
struct Selector {
    field: Field,
    test: Test,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Parent,
    Kind,
    /// `None`: a key that is not UTF-8, which no label can have.
    Label(Option<String>),
    Unknown,
}

#[derive(Clone, Debug)]
enum Test {
    Present,
    Equal(Vec<u8>),
    NotEqual(Vec<u8>),
    Matches(Regex),
}

/// A filter that does not parse: which one, where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    /// Index of the bad filter among those given.
    pub index: usize,
    /// The bad filter (cut if very long).
    pub filter: String,
    /// Byte offset of the problem in the filter.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid filter {:?}: at offset {}: {}", self.filter, self.offset, self.message)
    }
}

impl std::error::Error for FilterError {}

/// Regular expressions come from the wire: bound what compiling one may cost.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// How deeply a `~=` expression may nest (groups, repetitions). The regex
/// crate's default (250) is safe in release builds, but its parser recurses
/// per level: a debug build overflowed a 2 MiB stack (an abort of the whole
/// daemon) from about 150 levels, with `a+++...` (found by the
/// filter_parser fuzzer). Filters never need more than a few.
const REGEX_NEST_LIMIT: u32 = 64;
/// Show at most this much of a bad filter in an error.
const SHOWN_FILTER_MAX: usize = 512;

/// Parses List's filters: ORed, each a `,`-separated AND of selectors.
/// Every filter must parse, even when an empty one already matches all.
pub fn parse_filters(filters: &[String]) -> Result<Filter, FilterError> {
    let mut any = Vec::with_capacity(filters.len());
    let mut everything = filters.is_empty();
    for (index, filter) in filters.iter().enumerate() {
        let compiled = compile(filter).map_err(|(offset, message)| FilterError {
            index,
            filter: shown(filter),
            offset,
            message,
        })?;
        match compiled {
            None => everything = true,
            Some(selectors) => any.push(selectors),
        }
    }
    Ok(Filter { any: (!everything).then_some(any) })
}

/// One filter string: `None` for the empty string (match all).
fn compile(filter: &str) -> Result<Option<Vec<Selector>>, (usize, String)> {
    if filter.is_empty() {
        return Ok(None);
    }
    let raw = parser::parse(filter).map_err(|e| (e.pos, e.message))?;
    raw.into_iter().map(selector).collect::<Result<_, _>>().map(Some)
}

fn selector(raw: RawSelector) -> Result<Selector, (usize, String)> {
    let field = match raw.path[0].as_slice() {
        b"name" => Field::Name,
        b"parent" => Field::Parent,
        b"kind" => Field::Kind,
        b"labels" => Field::Label(String::from_utf8(raw.path[1..].join(&b'.')).ok()),
        _ => Field::Unknown,
    };
    let test = match raw.operator {
        Operator::Present => Test::Present,
        Operator::Equal => Test::Equal(raw.value),
        Operator::NotEqual => Test::NotEqual(raw.value),
        Operator::Matches => {
            let pattern = std::str::from_utf8(&raw.value)
                .map_err(|_| (raw.value_pos, "regular expression is not valid UTF-8".to_owned()))?;
            let regex = RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .nest_limit(REGEX_NEST_LIMIT)
                .build()
                .map_err(|e| (raw.value_pos, format!("invalid regular expression: {e}")))?;
            Test::Matches(regex)
        }
    };
    Ok(Selector { field, test })
}

fn shown(filter: &str) -> String {
    if filter.len() <= SHOWN_FILTER_MAX {
        return filter.to_owned();
    }
    let mut end = SHOWN_FILTER_MAX;
    while !filter.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &filter[..end])
}

impl Filter {
    /// A filter that matches every record.
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Whether this filter lets every record through.
    pub fn matches_everything(&self) -> bool {
        self.any.is_none()
    }

    pub fn matches(&self, rec: &Record) -> bool {
        match &self.any {
            None => true,
            Some(any) => any.iter().any(|all| all.iter().all(|s| s.matches(rec))),
        }
    }
}

impl Selector {
    fn matches(&self, rec: &Record) -> bool {
        let value = self.field.value(rec);
        match &self.test {
            Test::Present => value.is_some(),
            Test::Equal(want) => value.is_some_and(|v| v.as_bytes() == want.as_slice()),
            Test::NotEqual(want) => value.unwrap_or("").as_bytes() != want.as_slice(),
            Test::Matches(regex) => regex.is_match(value.unwrap_or("")),
        }
    }
}

impl Field {
    /// The field's value in `rec`, `None` when absent.
    fn value<'r>(&self, rec: &'r Record) -> Option<&'r str> {
        match self {
            Field::Name => Some(&rec.name),
            Field::Parent => Some(rec.parent.as_deref().unwrap_or("")),
            Field::Kind => Some(match rec.kind {
                Kind::Active => "active",
                Kind::View => "view",
                Kind::Committed => "committed",
            }),
            Field::Label(Some(key)) => rec.labels.get(key).map(String::as_str),
            Field::Label(None) | Field::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests;
