//! The compact binary encoding of a [`Record`] as the value of the records
//! table (the key, being the table's key, is not repeated).
//!
//! Layout (format 1): tag byte `1`, then in order: id (varint), kind (byte),
//! parent (optional string), created and updated (zigzag varint seconds, varint
//! nanoseconds), usage (flag byte, then zigzag size and inodes), content
//! (optional string), labels (varint count, then length-prefixed key and value
//! each). An optional string is a varint of `len + 1`, `0` meaning none.
//! Hand-written because it sits on every hot path: a Stat decodes one record,
//! a List decodes them all.

use std::collections::BTreeMap;

use crate::record::{Kind, Record, Timestamp, Usage};

const FORMAT: u8 = 1;

pub(crate) fn encode(rec: &Record) -> Vec<u8> {
    let labels_len: usize = rec.labels.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
    let mut out = Vec::with_capacity(48 + labels_len + rec.parent.as_ref().map_or(0, String::len));
    out.push(FORMAT);
    put_varint(&mut out, rec.id);
    out.push(kind_byte(rec.kind));
    put_opt_str(&mut out, rec.parent.as_deref());
    put_timestamp(&mut out, rec.created);
    put_timestamp(&mut out, rec.updated);
    match rec.usage {
        None => out.push(0),
        Some(u) => {
            out.push(1);
            put_varint(&mut out, zigzag(u.size));
            put_varint(&mut out, zigzag(u.inodes));
        }
    }
    put_opt_str(&mut out, rec.content.as_deref());
    put_varint(&mut out, rec.labels.len() as u64);
    for (k, v) in &rec.labels {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }
    out
}

/// Decodes a record stored under `name`. The error says what was malformed;
/// the caller adds which key.
pub(crate) fn decode(name: &str, bytes: &[u8]) -> Result<Record, &'static str> {
    let mut r = Reader { bytes };
    if r.byte()? != FORMAT {
        return Err("unknown record format");
    }
    let id = r.varint()?;
    let kind = match r.byte()? {
        1 => Kind::View,
        2 => Kind::Active,
        3 => Kind::Committed,
        _ => return Err("unknown kind"),
    };
    let parent = r.opt_str()?;
    let created = r.timestamp()?;
    let updated = r.timestamp()?;
    let usage = match r.byte()? {
        0 => None,
        1 => Some(Usage { size: unzigzag(r.varint()?), inodes: unzigzag(r.varint()?) }),
        _ => return Err("bad usage flag"),
    };
    let content = r.opt_str()?;
    let count = r.varint()?;
    let mut labels = BTreeMap::new();
    for _ in 0..count {
        let k = r.str()?;
        let v = r.str()?;
        labels.insert(k, v);
    }
    if !r.bytes.is_empty() {
        return Err("trailing bytes");
    }
    Ok(Record { id, name: name.to_owned(), kind, parent, labels, created, updated, usage, content })
}

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::View => 1,
        Kind::Active => 2,
        Kind::Committed => 3,
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            put_varint(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

fn put_timestamp(out: &mut Vec<u8>, t: Timestamp) {
    put_varint(out, zigzag(t.secs));
    put_varint(out, t.nanos.into());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, &'static str> {
        let (&b, rest) = self.bytes.split_first().ok_or("truncated")?;
        self.bytes = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return Err("varint overflows 64 bits");
                }
                return Ok(v);
            }
        }
        Err("varint too long")
    }

    fn take(&mut self, len: u64) -> Result<&[u8], &'static str> {
        let len = usize::try_from(len).map_err(|_| "length out of range")?;
        if len > self.bytes.len() {
            return Err("truncated");
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn str(&mut self) -> Result<String, &'static str> {
        let len = self.varint()?;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| "string is not UTF-8")
    }

    fn opt_str(&mut self) -> Result<Option<String>, &'static str> {
        match self.varint()? {
            0 => Ok(None),
            n => {
                let raw = self.take(n - 1)?;
                String::from_utf8(raw.to_vec()).map(Some).map_err(|_| "string is not UTF-8")
            }
        }
    }

    fn timestamp(&mut self) -> Result<Timestamp, &'static str> {
        let secs = unzigzag(self.varint()?);
        let nanos = u32::try_from(self.varint()?).map_err(|_| "nanoseconds out of range")?;
        if nanos >= 1_000_000_000 {
            return Err("nanoseconds out of range");
        }
        Ok(Timestamp { secs, nanos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            id: 300,
            name: "k8s.io/1/extract-1 sha256:abc".into(),
            kind: Kind::Committed,
            parent: Some("sha256:parent".into()),
            labels: [
                ("containerd.io/snapshot.ref".to_string(), "sha256:x".to_string()),
                ("é".into(), "ü".into()),
            ]
            .into_iter()
            .collect(),
            created: Timestamp { secs: 1_700_000_000, nanos: 999_999_999 },
            updated: Timestamp { secs: -3, nanos: 1 },
            usage: Some(Usage { size: -1, inodes: i64::MAX }),
            content: Some("fs".into()),
        }
    }

    #[test]
    fn round_trips() {
        let rec = sample();
        assert_eq!(decode(&rec.name, &encode(&rec)).unwrap(), rec);
        let bare = Record {
            id: u64::MAX,
            kind: Kind::View,
            parent: None,
            labels: BTreeMap::new(),
            usage: None,
            content: None,
            ..sample()
        };
        assert_eq!(decode(&bare.name, &encode(&bare)).unwrap(), bare);
        let empty_parent = Record { parent: Some(String::new()), ..sample() };
        assert_eq!(decode("k", &encode(&empty_parent)).unwrap().parent, Some(String::new()));
    }

    #[test]
    fn zigzag_covers_the_extremes() {
        for v in [0, 1, -1, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            assert!(decode("k", &bytes[..len]).is_err(), "prefix of {len} bytes decoded");
        }
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                let _ = decode("k", &bad);
            }
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode("k", &trailing), Err("trailing bytes"));
        assert_eq!(
            decode("k", &[FORMAT, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err("varint overflows 64 bits")
        );
    }
}
