//! The redo log: what makes a write durable at the cost of one small write
//! and one flush (`<root>/metadata.redo`).
//!
//! A redb commit with fsync writes 8 to 9 scattered pages (the tables'
//! B-tree pages, the table tree, the freed-page tree, the header) and then
//! flushes; on a disk that costs about as much as bolt's two flushes. So
//! write transactions commit to redb *without* fsync, and each appends the
//! rows it changed, as one entry, to this log; the writer that ends a group
//! (see `group_commit`) flushes the log, which makes every entry before it
//! durable. Every [`LOG_BYTES`] of entries, and at a clean close, a
//! *checkpoint* commits redb with fsync, storing the last entry's sequence
//! number in the meta table (`redo_applied`), and the log starts again at
//! its beginning.
//!
//! At open, redb is back at its last durable commit (it drops commits made
//! without fsync that a crash interrupted), or somewhere after it; the
//! entries after `redo_applied` are applied again in order. An entry holds
//! the rows' new values (puts and deletes), not the operation, so applying
//! entries `a..=b` to any state between checkpoint `a - 1` and entry `b`
//! gives the state after `b`: replay needs no record of how far redb got.
//!
//! The file is made at its full size and filled with zeros when it is
//! created, so appending to it never changes its size or its extents, and a
//! flush writes data only (no journal commit for a size change). Each entry
//! starts on a 4 KiB boundary, so a write torn by a power loss never touches
//! an earlier entry's blocks. An entry: magic, payload length, sequence
//! number, CRC-32 of the log id, sequence number and payload, payload.
//! Reading stops at the first entry that is not the next sequence number
//! with a good checksum: zeros, a torn write, or an entry left from before
//! the last checkpoint or the last open (whose number is lower: each open
//! goes on numbering past every number the file can hold).

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::WriteTransaction;

use crate::error::Error;
use crate::tables::{CHILDREN, IDS, META, RECORDS};

/// The log's file name inside a snapshotter root.
pub const FILE_NAME: &str = "metadata.redo";

/// The log's size: 512 entries of one block (most are; an entry holding a
/// record with megabytes of labels takes more).
pub(crate) const LOG_BYTES: u64 = 2 << 20;
const BLOCK: u64 = 4096;
/// The most entries the file holds.
pub(crate) const MAX_ENTRIES: u64 = LOG_BYTES / BLOCK;
const MAGIC: u32 = u32::from_le_bytes(*b"WSRL");
const HEADER: usize = 20;

/// One row changed by a write transaction, with its new value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    PutRecord(String, Vec<u8>),
    DeleteRecord(String),
    PutId(u64, u64, String),
    DeleteId(u64),
    PutChild(u64, u64),
    DeleteChild(u64, u64),
    PutMeta(String, u64),
}

/// The log file and where the next entry goes. Entries are written with
/// the write lock held; the flush ([`file`](Self::file)) needs no lock.
pub(crate) struct RedoLog {
    file: Arc<File>,
    path: PathBuf,
    /// Where the next entry starts (a multiple of [`BLOCK`]).
    end: u64,
    /// The sequence number of the last entry written (or of the checkpoint).
    last_seq: u64,
    /// The metastore's log id (in its meta table): a log left by another
    /// database (its file deleted and made again) fails every checksum.
    log_id: u64,
    /// A write or flush failed: an entry may be missing, and one after the
    /// gap would never be read. Nothing more is written until a checkpoint.
    broken: bool,
}

impl RedoLog {
    /// Opens `<root>/metadata.redo`, creating it (full size, zeros, 0600)
    /// if missing or short.
    pub fn open(root: &Path) -> Result<RedoLog, Error> {
        let path = root.join(FILE_NAME);
        let io = |what: &str, e: std::io::Error| {
            Error::Storage(format!("redo log {}: cannot {what}: {e}", path.display()))
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| io("open it", e))?;
        let meta = file.metadata().map_err(|e| io("stat it", e))?;
        if !meta.is_file() {
            return Err(Error::Storage(format!("redo log {}: not a regular file", path.display())));
        }
        if meta.len() < LOG_BYTES {
            fill(&file, &path, meta.len()).map_err(|e| io("fill it with zeros", e))?;
        }
        Ok(RedoLog { file: Arc::new(file), path, end: 0, last_seq: 0, log_id: 0, broken: false })
    }

    /// The entries of log `log_id` after sequence number `applied`, in
    /// order, up to the first that is missing, torn or stale.
    pub fn entries_after(
        &self,
        log_id: u64,
        applied: u64,
    ) -> Result<Vec<(u64, Vec<Change>)>, Error> {
        let mut bytes = vec![0u8; LOG_BYTES as usize];
        read_full(&self.file, &mut bytes).map_err(|e| {
            Error::Storage(format!("redo log {}: cannot read it: {e}", self.path.display()))
        })?;
        let mut out = Vec::new();
        let mut at = 0usize;
        let mut want = applied + 1;
        while let Some((seq, payload)) = entry_at(&bytes, at, log_id) {
            if seq != want {
                break;
            }
            let changes = decode(payload).map_err(|why| {
                Error::Storage(format!(
                    "redo log {}: entry {seq} has a good checksum but {why}",
                    self.path.display()
                ))
            })?;
            out.push((seq, changes));
            at += blocks(HEADER + payload.len()) as usize;
            want += 1;
        }
        Ok(out)
    }

    /// Starts writing log `log_id` at the file's beginning, after entry (or
    /// checkpoint) `last_seq`.
    pub fn restart(&mut self, log_id: u64, last_seq: u64) {
        self.end = 0;
        self.log_id = log_id;
        self.last_seq = last_seq;
        self.broken = false;
    }

    pub fn log_id(&self) -> u64 {
        self.log_id
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Writes `changes` as the next entry (not flushed). `Ok(false)`: it
    /// does not fit in what is left of the log, or the log is broken;
    /// checkpoint instead.
    pub fn append(&mut self, changes: &[Change]) -> Result<bool, Error> {
        let payload = encode(changes);
        let size = blocks(HEADER + payload.len());
        if self.broken || self.end + size > LOG_BYTES {
            return Ok(false);
        }
        let seq = self.last_seq + 1;
        let mut entry = Vec::with_capacity(size as usize);
        entry.extend_from_slice(&MAGIC.to_le_bytes());
        entry.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        entry.extend_from_slice(&seq.to_le_bytes());
        entry.extend_from_slice(&checksum(self.log_id, seq, &payload).to_le_bytes());
        entry.extend_from_slice(&payload);
        // Whole blocks: the zeros behind the entry keep a stale entry's
        // header from lining up right after it.
        entry.resize(size as usize, 0);
        // The number is used even if the write fails: a checkpoint then
        // covers it, and the entry after it never follows a gap.
        self.last_seq = seq;
        if let Err(e) = self.file.write_all_at(&entry, self.end) {
            self.broken = true;
            return Err(Error::Storage(format!(
                "redo log {}: cannot write entry {seq}: {e}",
                self.path.display()
            )));
        }
        self.end += size;
        Ok(true)
    }

    /// The file, to flush (fdatasync: its size and extents never change)
    /// without the write lock.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Whether nothing may be appended until a checkpoint.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// A flush failed (the kernel may have dropped written pages): nothing
    /// more is appended until a checkpoint.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Whether entries were written since the last checkpoint.
    pub fn has_entries(&self) -> bool {
        self.end > 0
    }
}

/// Applies `changes` in `txn` (replay).
pub(crate) fn apply(txn: &WriteTransaction, changes: &[Change]) -> Result<(), Error> {
    let mut records = txn.open_table(RECORDS)?;
    let mut ids = txn.open_table(IDS)?;
    let mut children = txn.open_table(CHILDREN)?;
    let mut meta = txn.open_table(META)?;
    for change in changes {
        match change {
            Change::PutRecord(key, value) => drop(records.insert(key.as_str(), value.as_slice())?),
            Change::DeleteRecord(key) => drop(records.remove(key.as_str())?),
            Change::PutId(id, parent, key) => drop(ids.insert(*id, (*parent, key.as_str()))?),
            Change::DeleteId(id) => drop(ids.remove(*id)?),
            Change::PutChild(parent, child) => drop(children.insert((*parent, *child), ())?),
            Change::DeleteChild(parent, child) => drop(children.remove((*parent, *child))?),
            Change::PutMeta(key, value) => drop(meta.insert(key.as_str(), *value)?),
        }
    }
    Ok(())
}

/// Zeros from `from` to the log's full size, flushed with the file's size
/// and its directory entry.
fn fill(file: &File, path: &Path, from: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 256 << 10];
    let mut at = from;
    while at < LOG_BYTES {
        let n = zeros.len().min((LOG_BYTES - at) as usize);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `n` bytes rounded up to whole blocks.
fn blocks(n: usize) -> u64 {
    (n as u64).div_ceil(BLOCK) * BLOCK
}

fn checksum(log_id: u64, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&log_id.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The entry at `at` if its header and checksum are good: (seq, payload).
fn entry_at(bytes: &[u8], at: usize, log_id: u64) -> Option<(u64, &[u8])> {
    let header = bytes.get(at..at + HEADER)?;
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
    if word(0) != MAGIC {
        return None;
    }
    let len = word(4) as usize;
    let seq = u64::from_le_bytes(header[8..16].try_into().unwrap());
    let payload = bytes.get(at + HEADER..(at + HEADER).checked_add(len)?)?;
    (checksum(log_id, seq, payload) == word(16)).then_some((seq, payload))
}

fn read_full(file: &File, buf: &mut [u8]) -> std::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match file.read_at(&mut buf[at..], at as u64) {
            Ok(0) => break, // shorter than expected: the rest stays zeros
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// The payload: a change count, then per change a tag byte and its fields
// (u64 little endian; strings and bytes as a u32 length and the bytes).

fn encode(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    for change in changes {
        let mut put = |tag: u8, nums: &[u64], bytes: &[&[u8]]| {
            out.push(tag);
            for n in nums {
                out.extend_from_slice(&n.to_le_bytes());
            }
            for b in bytes {
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
        };
        match change {
            Change::PutRecord(k, v) => put(1, &[], &[k.as_bytes(), v]),
            Change::DeleteRecord(k) => put(2, &[], &[k.as_bytes()]),
            Change::PutId(id, parent, k) => put(3, &[*id, *parent], &[k.as_bytes()]),
            Change::DeleteId(id) => put(4, &[*id], &[]),
            Change::PutChild(p, c) => put(5, &[*p, *c], &[]),
            Change::DeleteChild(p, c) => put(6, &[*p, *c], &[]),
            Change::PutMeta(k, v) => put(7, &[*v], &[k.as_bytes()]),
        }
    }
    out
}

fn decode(mut bytes: &[u8]) -> Result<Vec<Change>, &'static str> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
        if bytes.len() < n {
            return Err("is cut short");
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    fn u32_(b: &mut &[u8]) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(take(b, 4)?.try_into().unwrap()))
    }
    fn u64_(b: &mut &[u8]) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(take(b, 8)?.try_into().unwrap()))
    }
    fn bytes_(b: &mut &[u8]) -> Result<Vec<u8>, &'static str> {
        let n = u32_(b)? as usize;
        Ok(take(b, n)?.to_vec())
    }
    fn string(b: &mut &[u8]) -> Result<String, &'static str> {
        String::from_utf8(bytes_(b)?).map_err(|_| "holds a key that is not UTF-8")
    }
    let b = &mut bytes;
    let count = u32_(b)?;
    let mut changes = Vec::new();
    for _ in 0..count {
        let tag = take(b, 1)?[0];
        changes.push(match tag {
            1 => {
                let key = string(b)?;
                Change::PutRecord(key, bytes_(b)?)
            }
            2 => Change::DeleteRecord(string(b)?),
            3 => {
                let (id, parent) = (u64_(b)?, u64_(b)?);
                Change::PutId(id, parent, string(b)?)
            }
            4 => Change::DeleteId(u64_(b)?),
            5 => Change::PutChild(u64_(b)?, u64_(b)?),
            6 => Change::DeleteChild(u64_(b)?, u64_(b)?),
            7 => {
                let value = u64_(b)?;
                Change::PutMeta(string(b)?, value)
            }
            _ => return Err("holds an unknown change"),
        });
    }
    if !b.is_empty() {
        return Err("has bytes after its last change");
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: u64 = 0x5eed;

    /// A new log in a temp dir, written as log `LOG` from sequence 0.
    fn fresh() -> (tempfile::TempDir, RedoLog) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RedoLog::open(dir.path()).unwrap();
        log.restart(LOG, 0);
        (dir, log)
    }

    fn sample() -> Vec<Change> {
        vec![
            Change::PutRecord("k".into(), vec![1, 2, 3]),
            Change::DeleteRecord("old".into()),
            Change::PutId(7, 3, "k".into()),
            Change::DeleteId(5),
            Change::PutChild(3, 7),
            Change::DeleteChild(3, 5),
            Change::PutMeta("next_id".into(), 1031),
        ]
    }

    #[test]
    fn entries_round_trip_and_stop_at_the_first_gap() {
        let (dir, mut log) = fresh();
        assert_eq!(std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(), LOG_BYTES);
        log.restart(LOG, 10);
        assert!(log.append(&sample()).unwrap());
        assert!(log.append(&[Change::DeleteId(9)]).unwrap());
        log.file().sync_data().unwrap();
        let entries = log.entries_after(LOG, 10).unwrap();
        assert_eq!(entries, vec![(11, sample()), (12, vec![Change::DeleteId(9)])]);
        assert_eq!(log.entries_after(LOG, 11).unwrap(), vec![], "entry 11 is not the 12 wanted");

        // A checkpoint at 12, then one new entry over the first block: the
        // stale entry 12 behind it is not read as entry 14.
        log.restart(LOG, 12);
        assert!(log.append(&[Change::PutChild(1, 2)]).unwrap());
        assert_eq!(log.entries_after(LOG, 12).unwrap(), vec![(13, vec![Change::PutChild(1, 2)])]);
    }

    #[test]
    fn a_torn_entry_ends_the_log() {
        let (dir, mut log) = fresh();
        log.append(&sample()).unwrap();
        log.append(&sample()).unwrap();
        // The second entry's payload damaged, as a torn write leaves it.
        log.file.write_all_at(&[0xff], BLOCK + HEADER as u64 + 3).unwrap();
        let reopened = RedoLog::open(dir.path()).unwrap();
        assert_eq!(reopened.entries_after(LOG, 0).unwrap(), vec![(1, sample())]);
    }

    #[test]
    fn an_entry_that_does_not_fit_asks_for_a_checkpoint() {
        let (_dir, mut log) = fresh();
        let big = vec![Change::PutRecord("k".into(), vec![7; LOG_BYTES as usize])];
        assert!(!log.append(&big).unwrap());
        assert_eq!(log.last_seq(), 0, "no number used");
        let fits = (LOG_BYTES / BLOCK) as usize;
        for _ in 0..fits {
            assert!(log.append(&[Change::DeleteId(1)]).unwrap());
        }
        assert!(!log.append(&[Change::DeleteId(1)]).unwrap(), "full");
        assert_eq!(log.entries_after(LOG, 0).unwrap().len(), fits);
    }

    #[test]
    fn a_short_file_is_filled_and_garbage_is_refused_by_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"WSRL garbage").unwrap();
        let log = RedoLog::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(), LOG_BYTES);
        assert_eq!(log.entries_after(LOG, 0).unwrap(), vec![]);
    }

    /// Another database's log (its file deleted and made again) is not read.
    #[test]
    fn entries_of_another_log_id_are_not_read() {
        let (_dir, mut log) = fresh();
        log.append(&sample()).unwrap();
        assert_eq!(log.entries_after(LOG, 0).unwrap().len(), 1);
        assert_eq!(log.entries_after(LOG + 1, 0).unwrap(), vec![]);
    }

    /// After a failed write nothing is appended until a checkpoint restarts
    /// the log, so no entry ever follows a gap.
    #[test]
    fn a_broken_log_takes_no_entry_until_it_restarts() {
        let (_dir, mut log) = fresh();
        log.mark_broken();
        assert!(!log.append(&sample()).unwrap());
        log.restart(LOG, 4);
        assert!(log.append(&sample()).unwrap());
        assert_eq!(log.entries_after(LOG, 4).unwrap(), vec![(5, sample())]);
    }
}
