//! Where in a TOML file something is: byte offsets to `line:column`, a
//! span to the dotted key that holds it, and a key path back to its span.
//! Used so every complaint about a case file names file, line and key.

use std::ops::Range;

use toml_edit::{Document, Item, Table, Value};

/// One step of a key path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPart {
    Key(String),
    Index(usize),
}

/// A key path such as `case[2].expect.layout`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<KeyPart>);

impl KeyPath {
    pub fn key(mut self, key: &str) -> Self {
        self.0.push(KeyPart::Key(key.to_string()));
        self
    }

    pub fn index(mut self, index: usize) -> Self {
        self.0.push(KeyPart::Index(index));
        self
    }
}

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, part) in self.0.iter().enumerate() {
            match part {
                KeyPart::Key(k) if i == 0 => write!(f, "{k}")?,
                KeyPart::Key(k) => write!(f, ".{k}")?,
                KeyPart::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

fn contains(outer: &Option<Range<usize>>, inner: &Range<usize>) -> bool {
    outer.as_ref().is_some_and(|o| o.start <= inner.start && inner.end <= o.end.max(o.start + 1))
}

/// The innermost key path whose key or value covers `span`.
pub fn path_at(doc: &Document<String>, span: &Range<usize>) -> KeyPath {
    let mut path = KeyPath::default();
    in_table(doc.as_table(), span, &mut path);
    path
}

fn in_table(table: &Table, span: &Range<usize>, path: &mut KeyPath) -> bool {
    for (key, item) in table.iter() {
        let key_span = table.key(key).and_then(|k| k.span());
        path.0.push(KeyPart::Key(key.to_string()));
        if in_item(item, span, path) || contains(&key_span, span) {
            return true;
        }
        path.0.pop();
    }
    false
}

fn in_item(item: &Item, span: &Range<usize>, path: &mut KeyPath) -> bool {
    match item {
        Item::None => false,
        Item::Value(v) => in_value(v, span, path),
        Item::Table(t) => in_table(t, span, path) || contains(&t.span(), span),
        Item::ArrayOfTables(tables) => {
            for (i, t) in tables.iter().enumerate() {
                path.0.push(KeyPart::Index(i));
                if in_table(t, span, path) || contains(&t.span(), span) {
                    return true;
                }
                path.0.pop();
            }
            false
        }
    }
}

fn in_value(value: &Value, span: &Range<usize>, path: &mut KeyPath) -> bool {
    match value {
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.0.push(KeyPart::Index(i));
                if in_value(v, span, path) {
                    return true;
                }
                path.0.pop();
            }
            contains(&a.span(), span)
        }
        Value::InlineTable(t) => {
            for (key, v) in t.iter() {
                let key_span = t.key(key).and_then(|k| k.span());
                path.0.push(KeyPart::Key(key.to_string()));
                if in_value(v, span, path) || contains(&key_span, span) {
                    return true;
                }
                path.0.pop();
            }
            contains(&t.span(), span)
        }
        other => contains(&other.span(), span),
    }
}

/// The span of the item at `path` (its key where it has one), or of the
/// nearest enclosing item that has a span.
pub fn span_of(doc: &Document<String>, path: &KeyPath) -> Option<Range<usize>> {
    let mut best = None;
    let mut item: Option<Either> = Some(Either::Item(doc.as_item()));
    for part in &path.0 {
        let Some(current) = item.take() else { break };
        let (next, key_span) = current.child(part);
        if let Some(span) = key_span.or_else(|| next.as_ref().and_then(Either::span)) {
            best = Some(span);
        }
        item = next;
    }
    best
}

/// A node of the document: arrays of tables hold tables, arrays and
/// inline tables hold values.
enum Either<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Either<'a> {
    fn span(&self) -> Option<Range<usize>> {
        match self {
            Either::Item(i) => i.span(),
            Either::Table(t) => t.span(),
            Either::Value(v) => v.span(),
        }
    }

    /// The child at `part` and the span of its key, if it has one.
    fn child(self, part: &KeyPart) -> (Option<Either<'a>>, Option<Range<usize>>) {
        match (self, part) {
            (Either::Item(Item::Table(t)) | Either::Table(t), KeyPart::Key(k)) => {
                (t.get(k).map(Either::Item), t.key(k).and_then(|k| k.span()))
            }
            (Either::Item(Item::ArrayOfTables(a)), KeyPart::Index(n)) => {
                (a.get(*n).map(Either::Table), a.get(*n).and_then(|t| t.span()))
            }
            (Either::Item(Item::Value(v)), part) => Either::Value(v).child(part),
            (Either::Value(Value::InlineTable(t)), KeyPart::Key(k)) => {
                (t.get(k).map(Either::Value), t.key(k).and_then(|k| k.span()))
            }
            (Either::Value(Value::Array(a)), KeyPart::Index(n)) => {
                (a.get(*n).map(Either::Value), None)
            }
            _ => (None, None),
        }
    }
}
